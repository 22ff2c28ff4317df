"""Trigger kinds: an event, an explicit API call, a customer's inactivity, and a change of a
profile attribute."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from cjo.conditions import CompiledCondition, compile_condition, holds_value
from cjo.errors import Problem
from cjo.frozen import thaw
from cjo.model.events import PROFILE_FIELD_ATTRIBUTES, not_read_here
from cjo.model.triggers import ApiTrigger, AttributeTrigger, EventTrigger, InactivityTrigger
from cjo.runtime.kinds.base import Checker, TriggerKind

if TYPE_CHECKING:
    from cjo.model.events import Event
    from cjo.model.journey import Journey
    from cjo.runtime.core import Decider
    from cjo.runtime.registry import CompiledJourney
    from cjo.runtime.state import CustomerState

__all__ = [
    "ApiTriggerKind",
    "AttributeTriggerKind",
    "EventTriggerKind",
    "InactivityTriggerKind",
    "merge_quiet_spells",
    "timer_name",
]

_TRIGGER_SCOPES: tuple[str, ...] = ("profile", "event")


def timer_name(journey_id: str) -> str:
    """The name of a journey trigger's customer timer."""
    return f"trigger:{journey_id}"


def _check_event_and_where(
    trigger: EventTrigger | InactivityTrigger, where: str, checker: Checker
) -> list[Problem]:
    problems = checker.identifier(trigger.event, "event name", where)
    if trigger.where is not None:
        problems += checker.condition(trigger.where, where, used_in="a trigger",
                                      scopes=_TRIGGER_SCOPES)
    return problems


def _compile_where(trigger: EventTrigger | InactivityTrigger) -> CompiledCondition | None:
    return compile_condition(trigger.where) if trigger.where is not None else None


def _matches(
    d: Decider, trigger: EventTrigger | InactivityTrigger, compiled: Any, event: Event
) -> bool:
    return event.name == trigger.event and (
        compiled is None or bool(compiled(d.scope(event.properties, {})))
    )


class EventTriggerKind(TriggerKind[EventTrigger]):
    trigger_type = EventTrigger

    def check(
        self, trigger: EventTrigger, where: str, journey: Journey, checker: Checker
    ) -> list[Problem]:
        return _check_event_and_where(trigger, where, checker)

    def compile(self, trigger: EventTrigger) -> CompiledCondition | None:
        return _compile_where(trigger)

    def entry_events(self, trigger: EventTrigger) -> Iterable[str]:
        return (trigger.event,)

    def on_event(
        self, d: Decider, cj: CompiledJourney, trigger: EventTrigger, compiled: Any,
        event: Event, now: datetime,
    ) -> None:
        if _matches(d, trigger, compiled, event):
            d.offer_entry(cj, event.properties, event.event_id, now)


class ApiTriggerKind(TriggerKind[ApiTrigger]):
    trigger_type = ApiTrigger


class _Names:
    """The record keys of one journey's inactivity trigger, interned: every record holds them,
    and one shared string each keeps records small."""

    __slots__ = ("fired", "seen", "since", "timer")

    def __init__(self, journey_id: str) -> None:
        self.seen = sys.intern(f"seen:{journey_id}")
        self.since = sys.intern(f"since:{journey_id}")
        self.fired = sys.intern(f"fired:{journey_id}")
        self.timer = sys.intern(timer_name(journey_id))


class InactivityTriggerKind(TriggerKind[InactivityTrigger]):
    """Keeps up to three marks per journey in the customer record (the last qualifying event's
    timestamp; the instant the trigger first knew the customer, when that is not the record's
    creation; the basis it last fired for) and one customer timer."""

    trigger_type = InactivityTrigger

    def check(
        self, trigger: InactivityTrigger, where: str, journey: Journey, checker: Checker
    ) -> list[Problem]:
        # A quiet spell is a wait: the same bounds apply (but not the journey's lifetime, which
        # starts only once the trigger fires).
        return _check_event_and_where(trigger, where, checker) + checker.wait(
            trigger.after, "after", where, None
        )

    def compile(self, trigger: InactivityTrigger) -> CompiledCondition | None:
        return _compile_where(trigger)

    def watched_events(self, trigger: InactivityTrigger) -> Iterable[str]:
        return (trigger.event,)

    @staticmethod
    def _names(cj: CompiledJourney) -> _Names:
        names = _NAMES.get(cj.journey.id)
        if names is None:
            names = _NAMES[cj.journey.id] = _Names(cj.journey.id)
        return names

    def on_event(
        self, d: Decider, cj: CompiledJourney, trigger: InactivityTrigger, compiled: Any,
        event: Event, now: datetime,
    ) -> None:
        if not _matches(d, trigger, compiled, event):
            return
        names = self._names(cj)
        marks = d.state.marks
        seen = marks.get(names.seen)
        # Windows and inactivity count by the event's own timestamp; a late event never moves
        # the instant backwards.
        if seen is not None and seen >= event.timestamp:
            return
        marks[names.seen] = event.timestamp
        fired = marks.get(names.fired)
        if fired is not None and event.timestamp < fired + trigger.after:
            # A late event stamped before the trigger last fired: that firing fell inside the
            # quiet spell this event starts, which must not fire a second time.
            marks[names.fired] = event.timestamp
            d.state.timers.pop(names.timer, None)
        else:
            d.state.timers[names.timer] = event.timestamp + trigger.after
        d.touch()

    def arm(
        self, d: Decider, cj: CompiledJourney, trigger: InactivityTrigger, compiled: Any,
        now: datetime,
    ) -> None:
        names = self._names(cj)
        state = d.state
        if names.timer in state.timers:
            return
        marks = state.marks
        basis = marks.get(names.seen) or marks.get(names.since)
        if basis is None:
            # The quiet spell starts when the trigger first knows the customer: at creation
            # for customers who arrive after the journey was published (then nothing need be
            # stored: the record knows its creation); at their next input for earlier ones
            # (what they did before is unknown: never fire in the past).
            if names.fired in marks or now == state.created_at:
                basis = state.created_at
            else:
                basis = marks[names.since] = now
                d.touch()
        if marks.get(names.fired) == basis:
            return  # already fired for this quiet spell
        state.timers[names.timer] = basis + trigger.after
        d.touch()

    def arm_all(
        self, d: Decider, journeys: Sequence[CompiledJourney], now: datetime
    ) -> None:
        state = d.state
        timers = state.timers
        marks = state.marks
        created = state.created_at
        get = _NAMES.get
        for cj in journeys:
            names = get(cj.journey.id) or self._names(cj)
            if names.timer in timers:
                continue  # the quiet spell is timed already
            # Fired for its quiet spell already (``arm`` would find the same basis and return):
            # where most customers of a programme's many quiet journeys are between inputs.
            fired = marks.get(names.fired) if marks else None
            if fired is not None and fired == (
                marks.get(names.seen) or marks.get(names.since) or created
            ):
                continue
            self.arm(d, cj, cast(InactivityTrigger, cj.journey.trigger), cj.trigger_compiled,
                     now)

    def on_timer(
        self, d: Decider, cj: CompiledJourney, trigger: InactivityTrigger, compiled: Any,
        at: datetime,
    ) -> None:
        names = self._names(cj)
        state = d.state
        marks = state.marks
        marks[names.fired] = marks.get(names.seen) or marks.get(names.since) or state.created_at
        d.consider_entry(cj, {}, None, at)


_NAMES: dict[str, _Names] = {}

_MARK_PREFIXES = ("seen:", "since:", "fired:")
_TIMER_PREFIX = timer_name("")


def merge_quiet_spells(known: CustomerState, anonymous: CustomerState) -> set[str]:
    """Fold the anonymous customer's inactivity-trigger marks and timers into the known one's
    (an identity merge), and return the names of the anonymous marks and timers decided here.

    Per journey, the merged customer's quiet spell is the one that starts at the later last
    qualifying event; without one on the anonymous side, the known customer's own spell (from
    their creation, or the instant the trigger first knew them) with its timer and the basis
    it last fired for. Taking the later of two timers instead would fire late (an anonymous
    record created after the known customer's last purchase) or twice in one quiet spell."""
    journeys = {n.split(":", 1)[1] for n in anonymous.marks if n.startswith(_MARK_PREFIXES)}
    journeys.update(n[len(_TIMER_PREFIX):] for n in anonymous.timers
                    if n.startswith(_TIMER_PREFIX))
    k_marks, a_marks = known.marks, anonymous.marks
    for journey_id in journeys:
        names = _NAMES.get(journey_id) or _Names(journey_id)
        own = (names.seen, names.since, names.fired)
        k_seen, a_seen = k_marks.get(names.seen), a_marks.get(names.seen)
        known_has_spell = names.timer in known.timers or any(n in k_marks for n in own)
        if known_has_spell and (a_seen is None or (k_seen is not None and a_seen <= k_seen)):
            continue  # the known customer's spell goes on
        for name in (names.seen, names.fired):
            if name in a_marks:
                k_marks[name] = a_marks[name]
            else:
                k_marks.pop(name, None)
        if a_seen is None:
            # The anonymous spell goes on from where it began, not from the known creation.
            k_marks[names.since] = a_marks.get(names.since) or anonymous.created_at
        if names.timer in anonymous.timers:
            known.timers[names.timer] = anonymous.timers[names.timer]
        else:
            known.timers.pop(names.timer, None)
    return {n for n in (*a_marks, *anonymous.timers)
            if n.startswith((*_MARK_PREFIXES, _TIMER_PREFIX))}


class AttributeTriggerKind(TriggerKind[AttributeTrigger]):
    """Enters on an actual change of one profile attribute; the decider detects changes where
    the profile is written and hands them over in the order they were made."""

    trigger_type = AttributeTrigger

    def check(
        self, trigger: AttributeTrigger, where: str, journey: Journey, checker: Checker
    ) -> list[Problem]:
        problems = checker.identifier(trigger.attribute, "attribute", where)
        if trigger.attribute in PROFILE_FIELD_ATTRIBUTES:
            problems.append(Problem(where, not_read_here(trigger.attribute)))
        for name in ("changed_to", "changed_from"):
            values = getattr(trigger, name)
            if values is None:
                continue
            if not values:
                problems.append(Problem(where, f"{name} lists no values, so it never fires; "
                                               "leave it out to accept any value"))
            problems += checker.values({name: list(values)}, name, name, where)
        if trigger.where is not None:
            problems += checker.condition(trigger.where, where, used_in="a trigger",
                                          scopes=_TRIGGER_SCOPES)
        return problems

    def compile(self, trigger: AttributeTrigger) -> CompiledCondition | None:
        return compile_condition(trigger.where) if trigger.where is not None else None

    def watched_attributes(self, trigger: AttributeTrigger) -> Iterable[str]:
        return (trigger.attribute,)

    def on_change(
        self, d: Decider, cj: CompiledJourney, trigger: AttributeTrigger, compiled: Any,
        attribute: str, old: Any, new: Any, at: datetime,
    ) -> None:
        # Compared as conditions compare: True is not 1 (``in`` would take it for 1).
        # The listed values as plain data, as the profile's are: a list still matches.
        if trigger.changed_to is not None and not holds_value(thaw(trigger.changed_to), new):
            return
        if trigger.changed_from is not None and not holds_value(thaw(trigger.changed_from), old):
            return
        change = {"attribute": attribute, "old_value": old, "new_value": new}
        if compiled is not None:
            d.now = at
            if not compiled(d.scope(change, {})):
                return
        d.offer_entry(cj, change, None, at)
