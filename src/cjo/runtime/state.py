"""Runtime state: enrollments, the records the core emits, and the changes a session applies."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import attrs

from cjo.channels.base import Message
from cjo.model.events import Profile

__all__ = [
    "ACTIVE",
    "TERMINAL_STATUSES",
    "Activity",
    "Changes",
    "Enrollment",
    "EnrollmentStatus",
    "PastEntry",
]

EnrollmentStatus = Literal[
    "active", "completed", "exited", "converted", "expired", "removed", "ejected"
]
ACTIVE: EnrollmentStatus = "active"
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"completed", "exited", "converted", "expired", "removed", "ejected"}
)


@attrs.define(slots=True, eq=True)
class Enrollment:
    """One customer's run through one journey version.

    ``wake_at`` is the next moment the engine must look at it again (end of a wait, a
    wait-for-event timeout, or the journey's maximum lifetime), stored as an absolute UTC
    instant when the wait starts.
    """

    id: str
    journey_id: str
    version: int
    customer_id: str
    entered_at: datetime
    step_id: str | None = None
    step_entered_at: datetime | None = None
    status: EnrollmentStatus = ACTIVE
    instance_key: str | None = None
    wake_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    converted_at: datetime | None = None
    trigger_event_id: str | None = None
    context: dict[str, Any] = attrs.field(factory=dict)
    visits: dict[str, int] = attrs.field(factory=dict)
    paths: dict[str, str] = attrs.field(factory=dict)

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def copy(self) -> Enrollment:
        """A copy whose mutable fields are independent of this one."""
        # Written out rather than attrs.evolve: this runs for every loaded enrollment.
        return Enrollment(
            self.id, self.journey_id, self.version, self.customer_id, self.entered_at,
            self.step_id, self.step_entered_at, self.status, self.instance_key, self.wake_at,
            self.expires_at, self.ended_at, self.end_reason, self.converted_at,
            self.trigger_event_id, dict(self.context), dict(self.visits), dict(self.paths),
        )

    def wake_order(self) -> tuple[datetime, datetime, str]:
        """Deterministic order of wake-ups due at the same instant: when the wait began, then id."""
        assert self.wake_at is not None
        return (self.wake_at, self.step_entered_at or self.entered_at, self.id)


@attrs.frozen(slots=True)
class PastEntry:
    """What re-entry rules need to know of an earlier enrollment in the same journey."""

    entered_at: datetime
    ended_at: datetime | None


@attrs.frozen(slots=True)
class Activity:
    """One thing that happened in a journey, kept for measurement.

    ``kind`` is one of: entered, step, sent, send_failed, timeout, event_received, goal,
    completed, exited, converted, expired, removed, ejected. ``detail`` qualifies it (the
    channel of a send, the criterion of an exit, the path of a split).
    """

    journey_id: str
    version: int
    step_id: str | None
    kind: str
    detail: str | None
    enrollment_id: str
    customer_id: str
    at: datetime


@attrs.define(slots=True)
class Changes:
    """Everything one customer transaction writes. Storage applies it atomically."""

    customer_id: str
    enrollments: dict[str, Enrollment] = attrs.field(factory=dict)
    new_enrollments: set[str] = attrs.field(factory=set)
    profile: Profile | None = None
    messages: list[Message] = attrs.field(factory=list)
    activities: list[Activity] = attrs.field(factory=list)

    def touch(self, enrollment: Enrollment) -> None:
        self.enrollments[enrollment.id] = enrollment

    @property
    def empty(self) -> bool:
        return not (self.enrollments or self.profile or self.messages or self.activities)


def merge_attributes(current: Mapping[str, Any], set_: Mapping[str, Any],
                     unset: tuple[str, ...] = ()) -> dict[str, Any]:
    merged = dict(current)
    merged.update(set_)
    for name in unset:
        merged.pop(name, None)
    return merged
