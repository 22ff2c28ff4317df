"""Trigger kinds: an event, an explicit API call, and a customer's inactivity."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cjo.conditions import CompiledCondition, compile_condition
from cjo.errors import Problem
from cjo.model.triggers import ApiTrigger, EventTrigger, InactivityTrigger
from cjo.runtime.kinds.base import Checker, TriggerKind

if TYPE_CHECKING:
    from cjo.model.events import Event
    from cjo.model.journey import Journey
    from cjo.runtime.core import Decider
    from cjo.runtime.registry import CompiledJourney

__all__ = ["ApiTriggerKind", "EventTriggerKind", "InactivityTriggerKind", "timer_name"]

_TRIGGER_SCOPES: tuple[str, ...] = ("profile", "event")


def timer_name(journey_id: str) -> str:
    """The name of a journey trigger's customer timer."""
    return f"trigger:{journey_id}"


class EventTriggerKind(TriggerKind[EventTrigger]):
    trigger_type = EventTrigger

    def check(
        self, trigger: EventTrigger, where: str, journey: Journey, checker: Checker
    ) -> list[Problem]:
        problems = checker.identifier(trigger.event, "event name", where)
        if trigger.where is not None:
            problems += checker.condition(trigger.where, where, used_in="a trigger",
                                          scopes=_TRIGGER_SCOPES)
        return problems

    def compile(self, trigger: EventTrigger) -> CompiledCondition | None:
        return compile_condition(trigger.where) if trigger.where is not None else None

    def entry_events(self, trigger: EventTrigger) -> Iterable[str]:
        return (trigger.event,)

    def on_event(
        self, d: Decider, cj: CompiledJourney, trigger: EventTrigger, compiled: Any,
        event: Event, now: datetime,
    ) -> None:
        if event.name != trigger.event:
            return
        if compiled is not None and not compiled(d.scope(event.properties, {})):
            return
        d.consider_entry(cj, event.properties, event.event_id, now)


class ApiTriggerKind(TriggerKind[ApiTrigger]):
    trigger_type = ApiTrigger


class InactivityTriggerKind(TriggerKind[InactivityTrigger]):
    """Keeps marks per journey in the customer record (the last qualifying event's timestamp,
    the instant the trigger first knew the customer, the basis it last fired for) and one
    customer timer."""

    trigger_type = InactivityTrigger

    def check(
        self, trigger: InactivityTrigger, where: str, journey: Journey, checker: Checker
    ) -> list[Problem]:
        problems = checker.identifier(trigger.event, "event name", where)
        # A quiet spell is a wait: the same bounds apply (but not the journey's lifetime, which
        # starts only once the trigger fires).
        problems += checker.wait(trigger.after, "after", where, None)
        if trigger.where is not None:
            problems += checker.condition(trigger.where, where, used_in="a trigger",
                                          scopes=_TRIGGER_SCOPES)
        return problems

    def compile(self, trigger: InactivityTrigger) -> CompiledCondition | None:
        return compile_condition(trigger.where) if trigger.where is not None else None

    def watched_events(self, trigger: InactivityTrigger) -> Iterable[str]:
        return (trigger.event,)

    def on_event(
        self, d: Decider, cj: CompiledJourney, trigger: InactivityTrigger, compiled: Any,
        event: Event, now: datetime,
    ) -> None:
        if event.name != trigger.event:
            return
        if compiled is not None and not compiled(d.scope(event.properties, {})):
            return
        jid = cj.journey.id
        marks = d.state.marks
        seen = marks.get(f"seen:{jid}")
        # Windows and inactivity count by the event's own timestamp; a late event never moves
        # the instant backwards.
        if seen is not None and seen >= event.timestamp:
            return
        marks[f"seen:{jid}"] = event.timestamp
        d.state.timers[timer_name(jid)] = event.timestamp + trigger.after
        d.touch()

    def arm(
        self, d: Decider, cj: CompiledJourney, trigger: InactivityTrigger, compiled: Any,
        now: datetime,
    ) -> None:
        jid = cj.journey.id
        state = d.state
        name = timer_name(jid)
        if name in state.timers:
            return
        marks = state.marks
        basis = marks.get(f"seen:{jid}") or marks.get(f"since:{jid}")
        if basis is None:
            # The quiet spell starts when the trigger first knows the customer: at creation
            # for customers who arrive after the journey was published; at their next input
            # for earlier ones (what they did before is unknown: never fire in the past).
            basis = marks[f"since:{jid}"] = now
            d.touch()
        if marks.get(f"fired:{jid}") == basis:
            return  # already fired for this quiet spell
        state.timers[name] = basis + trigger.after
        d.touch()

    def on_timer(
        self, d: Decider, cj: CompiledJourney, trigger: InactivityTrigger, compiled: Any,
        at: datetime,
    ) -> None:
        jid = cj.journey.id
        state = d.state
        marks = state.marks
        marks[f"fired:{jid}"] = marks.get(f"seen:{jid}") or marks[f"since:{jid}"]
        d.consider_entry(cj, {}, None, at)
