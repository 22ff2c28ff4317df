"""Everything an adapter author needs, in one place.

A storage adapter subclasses :class:`Storage` (and :class:`CustomerSession`) and persists
:class:`CustomerState` records, outbox :class:`Message`\\ s and :class:`Activity` entries; a
channel adapter subclasses :class:`Channel` and returns a :class:`DeliveryResult`; a clock
subclasses :class:`Clock`. Run ``cjo.testing.StorageContract`` against a storage adapter: it
checks everything the engine relies on.
"""

from cjo.channels.base import Channel, DeliveryResult, DeliveryStatus, Message
from cjo.clock import Clock, ensure_aware
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
    Storage,
    channel_filter,
)
from cjo.storage.codec import decode_state, encode_state

__all__ = [
    "RECORD_LAYOUT",
    "Activity",
    "ActivityCount",
    "Channel",
    "Clock",
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
    "Storage",
    "channel_filter",
    "decode_state",
    "encode_state",
    "ensure_aware",
]
