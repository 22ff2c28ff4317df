"""Triggers: what starts a journey for a customer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, ClassVar, Literal, get_args

import attrs

from cjo.conditions import Condition
from cjo.frozen import freeze, ordered

__all__ = [
    "ApiTrigger",
    "AttributeTrigger",
    "EventTrigger",
    "InactivityTrigger",
    "ScheduleTrigger",
    "SegmentTrigger",
    "Trigger",
]


@attrs.frozen
class EventTrigger:
    """Start when the customer sends ``event`` and ``where`` (if any) holds for it."""

    kind: ClassVar[str] = "event"
    #: The keys of an entry's context (None: the input's own, here the event's properties).
    context_keys: ClassVar[tuple[str, ...] | None] = None
    event: str
    where: Condition | None = None


@attrs.frozen
class ApiTrigger:
    """Start only through ``Engine.start_journey``."""

    kind: ClassVar[str] = "api"
    context_keys: ClassVar[tuple[str, ...] | None] = None  # the context given to start_journey


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
    context_keys: ClassVar[tuple[str, ...] | None] = ()
    event: str
    after: timedelta
    where: Condition | None = None


def _as_values(values: Any) -> Any:
    # A string is iterable, but changed_to="pro" never means ("p", "r", "o"): what is not a
    # collection of values is kept as given, for validation to refuse at its place.
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        return values
    return freeze(ordered(values))


@attrs.frozen
class AttributeTrigger:
    """Start when the profile attribute ``attribute`` changes value: by ``Engine.identify``, a
    ``ProfileUpdate``, or an ``UpdateProfile`` step.

    Only an actual change counts: writing the value the attribute already has does nothing, and
    no value (absent, or None) is one value. ``changed_to`` and ``changed_from`` (when given)
    list the new and old values that qualify (None stands for no value; compared as conditions
    compare: True is not 1); ``where`` reads the
    profile and the change as event properties: ``attribute``, ``old_value``, ``new_value``.
    The new enrollment's context holds the same three keys.
    """

    kind: ClassVar[str] = "attribute"
    context_keys: ClassVar[tuple[str, ...] | None] = ("attribute", "old_value", "new_value")
    attribute: str
    changed_to: tuple[Any, ...] | None = attrs.field(default=None, converter=_as_values)
    changed_from: tuple[Any, ...] | None = attrs.field(default=None, converter=_as_values)
    where: Condition | None = None


@attrs.frozen
class SegmentTrigger:
    """Start when the customer enters (``on="enter"``) or leaves (``on="exit"``) ``segment``,
    at the instant the membership changes (an event, a profile change, or time passing)."""

    kind: ClassVar[str] = "segment"
    context_keys: ClassVar[tuple[str, ...] | None] = ("segment",)
    segment: str
    on: Literal["enter", "exit"] = "enter"


@attrs.frozen
class ScheduleTrigger:
    """Start the journey for every member of ``segment`` (every customer when None) at each
    occurrence of the cron rule ``cron`` (``"0 9 * * MON"``: Mondays at 09:00), read in the
    zone ``timezone`` (when None, the journey's ``timezone``, else UTC; DST as cjo's calendar
    rules: a time in a spring gap moves forward, an ambiguous one takes its first occurrence,
    a day the zone skips has none).

    Each occurrence runs once, whichever worker's ``run_due`` notices it, and enters each
    customer at most once (re-entry rules and the journey's audience apply as for any entry);
    a missed occurrence older than the latest due one is skipped, not caught up. The
    enrollment's context holds ``scheduled_at`` (the occurrence, ISO 8601)."""

    kind: ClassVar[str] = "schedule"
    context_keys: ClassVar[tuple[str, ...] | None] = ("scheduled_at",)
    cron: str
    timezone: str | None = None
    segment: str | None = None


Trigger = (
    EventTrigger | ApiTrigger | InactivityTrigger | AttributeTrigger | SegmentTrigger
    | ScheduleTrigger
)
#: The classes of ``Trigger``, read from the union so that a new trigger class is listed once.
TRIGGER_TYPES: tuple[type[object], ...] = get_args(Trigger)
