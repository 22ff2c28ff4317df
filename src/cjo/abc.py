"""Everything an adapter author needs, in one place.

A storage adapter subclasses :class:`Storage` (and :class:`CustomerSession`) and persists
:class:`CustomerState` records, outbox :class:`Message`\\ s and :class:`Activity` entries; a
channel adapter subclasses :class:`Channel` and returns a :class:`DeliveryResult`; a clock
subclasses :class:`Clock`. Run ``cjo.testing.StorageContract`` against a storage adapter: it
checks everything the engine relies on.

The erasure rule every adapter applies (``erase_customer``, and the counts ``prune`` keeps) is
here too, from ``cjo.storage.erasure``; so are the errors an adapter raises (``StorageError``,
``CorruptRecordError``, ``ConflictError``, ``CommitOutcomeUnknownError``); so is
``membership_changes``, for adapters that keep segment memberships in a table of their own,
``count_order``, the order of ``activity_counts``, and ``activity_row`` /
``activity_from_row``, an activity-log entry as column values and back.
"""

from cjo.channels.base import Channel, DeliveryResult, DeliveryStatus, Message
from cjo.clock import Clock, ensure_aware
from cjo.errors import CommitOutcomeUnknownError, ConflictError, CorruptRecordError, StorageError
from cjo.runtime.state import (
    RECORD_LAYOUT,
    Activity,
    CustomerState,
    EndedEnrollment,
    Enrollment,
    EnrollmentStatus,
    EntryHistory,
)
from cjo.storage.base import (
    ActivityCount,
    CustomerSession,
    DeadLetter,
    Delivery,
    DueCustomer,
    OutboxEntry,
    OutboxStatus,
    PruneResult,
    Retention,
    SetAsideRecord,
    Storage,
    channel_filter,
    count_order,
    membership_changes,
)
from cjo.storage.codec import (
    activity_from_row,
    activity_row,
    decode_message,
    decode_state,
    encode_message,
    encode_state,
)
from cjo.storage.erasure import (
    FREE_TEXT_KINDS,
    KEPT_DETAILS,
    KEPT_DETAILS_SQL,
    SCHEDULE_CLAIM_END,
    SCHEDULE_CLAIM_PREFIX,
    counted_detail,
    counted_detail_sql,
    erased_detail,
    names_schedule_claim,
    pseudonymiser,
)

__all__ = [
    "FREE_TEXT_KINDS",
    "KEPT_DETAILS",
    "KEPT_DETAILS_SQL",
    "RECORD_LAYOUT",
    "SCHEDULE_CLAIM_END",
    "SCHEDULE_CLAIM_PREFIX",
    "Activity",
    "ActivityCount",
    "Channel",
    "Clock",
    "CommitOutcomeUnknownError",
    "ConflictError",
    "CorruptRecordError",
    "CustomerSession",
    "CustomerState",
    "DeadLetter",
    "Delivery",
    "DeliveryResult",
    "DeliveryStatus",
    "DueCustomer",
    "EndedEnrollment",
    "Enrollment",
    "EnrollmentStatus",
    "EntryHistory",
    "Message",
    "OutboxEntry",
    "OutboxStatus",
    "PruneResult",
    "Retention",
    "SetAsideRecord",
    "Storage",
    "StorageError",
    "activity_from_row",
    "activity_row",
    "channel_filter",
    "count_order",
    "counted_detail",
    "counted_detail_sql",
    "decode_message",
    "decode_state",
    "encode_message",
    "encode_state",
    "ensure_aware",
    "erased_detail",
    "membership_changes",
    "names_schedule_claim",
    "pseudonymiser",
]
