"""Triggers: what starts a journey for a customer."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar, Literal

import attrs

from cjo.conditions import Condition

__all__ = ["ApiTrigger", "EventTrigger", "InactivityTrigger", "SegmentTrigger", "Trigger"]


@attrs.frozen
class EventTrigger:
    """Start when the customer sends ``event`` and ``where`` (if any) holds for it."""

    kind: ClassVar[str] = "event"
    event: str
    where: Condition | None = None


@attrs.frozen
class ApiTrigger:
    """Start only through ``Engine.start_journey``."""

    kind: ClassVar[str] = "api"


@attrs.frozen
class InactivityTrigger:
    """Start when the customer has not sent ``event`` (matching ``where``) for ``after``.

    It fires exactly ``after`` past the last qualifying event (by the event's own timestamp),
    or past the customer's creation when there is none; each qualifying event moves that
    instant. It fires once per quiet spell: the next qualifying event starts a new one.
    For customers created before the journey was published, what they did before is unknown:
    their quiet spell starts at their next input the engine handles.
    """

    kind: ClassVar[str] = "inactivity"
    event: str
    after: timedelta
    where: Condition | None = None


@attrs.frozen
class SegmentTrigger:
    """Start when the customer enters (``on="enter"``) or leaves (``on="exit"``) ``segment``,
    at the instant the membership changes (an event, a profile change, or time passing)."""

    kind: ClassVar[str] = "segment"
    segment: str
    on: Literal["enter", "exit"] = "enter"


Trigger = EventTrigger | ApiTrigger | InactivityTrigger | SegmentTrigger
TRIGGER_TYPES: tuple[type[object], ...] = (
    EventTrigger, ApiTrigger, InactivityTrigger, SegmentTrigger
)
