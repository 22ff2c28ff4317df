"""Wait (a fixed duration) and WaitForEvent (an event, or a timeout)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cjo.conditions import CompiledCondition, compile_condition
from cjo.errors import Problem
from cjo.model.steps import Send, Wait, WaitForEvent
from cjo.runtime.ids import origin_key
from cjo.runtime.kinds.base import HALT, Checker, Next, StepKind
from cjo.runtime.migration import latest_message_keys
from cjo.runtime.state import own_values

if TYPE_CHECKING:
    from cjo.model.events import Event
    from cjo.model.journey import Journey
    from cjo.runtime.core import Decider
    from cjo.runtime.registry import CompiledJourney
    from cjo.runtime.state import Enrollment

__all__ = ["RECEIVED", "WaitForEventKind", "WaitKind"]

#: The event property that names the message an event is about (as feedback events do).
MESSAGE_ID = "message_id"

#: The context key under which a WaitForEvent keeps the events it received, by name.
RECEIVED = "received"

# What a wait's condition may read: the profile, the awaited event, and the enrollment's own
# context (so a keyed journey's wait can match its own instance: prop("cart_id") ==
# ctx("cart_id")).
WAIT_SCOPES: tuple[str, ...] = ("profile", "event", "context")


class WaitKind(StepKind[Wait]):
    step_type = Wait
    waits = True

    def successors(self, step: Wait) -> list[tuple[str, str | None]]:
        return [("next", step.next)]

    def check(self, step: Wait, where: str, journey: Journey, checker: Checker) -> list[Problem]:
        return checker.wait(step.duration, "duration", where, journey)

    def run(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step_id: str, step: Wait,
        compiled: Any, at: datetime,
    ) -> Next:
        d.schedule(e, at + step.duration)
        return HALT

    def wake(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step: Wait, compiled: Any,
        at: datetime,
    ) -> Next:
        return step.next


class WaitForEventKind(StepKind[WaitForEvent]):
    step_type = WaitForEvent
    waits = True

    def successors(self, step: WaitForEvent) -> list[tuple[str, str | None]]:
        return [("on_event", step.on_event), ("on_timeout", step.on_timeout)]

    def check(
        self, step: WaitForEvent, where: str, journey: Journey, checker: Checker
    ) -> list[Problem]:
        problems = checker.wait(step.timeout, "timeout", where, journey)
        problems += checker.identifier(step.event, "event name", where)
        if step.where is not None:
            problems += checker.condition(
                step.where, where, used_in="a wait for an event", scopes=WAIT_SCOPES
            )
        of_send = step.of_send
        if of_send is not None and not isinstance(of_send, str):
            problems.append(Problem(
                where, f"of_send must be the id of a Send step of this journey, got {of_send!r}"
            ))
        elif of_send is not None and of_send in journey.steps:
            earlier = journey.steps[of_send]
            if not isinstance(earlier, Send):
                problems.append(Problem(
                    where, f"of_send refers to step {of_send!r}, a {earlier.kind} step, not a "
                           "Send: only a message sent earlier in the journey can be engaged with"
                ))
        return problems

    def refers_back(self, step: WaitForEvent) -> list[tuple[str, str]]:
        of_send = step.of_send
        return [("of_send", of_send)] if isinstance(of_send, str) else []

    def compile(self, step: WaitForEvent) -> CompiledCondition | None:
        return compile_condition(step.where) if step.where is not None else None

    def watches(self, step: WaitForEvent) -> Iterable[str]:
        return (step.event,)

    def run(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step_id: str, step: WaitForEvent,
        compiled: Any, at: datetime,
    ) -> Next:
        d.schedule(e, at + step.timeout)
        return HALT

    def wake(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step: WaitForEvent, compiled: Any,
        at: datetime,
    ) -> Next:
        d.activity(e, "timeout", step.event, at)
        return step.on_timeout

    def on_event(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step: WaitForEvent, compiled: Any,
        event: Event, scope: Any, at: datetime,
    ) -> Next:
        if event.name != step.event:
            return HALT
        of_send = step.of_send
        if of_send is not None and not _about_own_message(e, of_send, event):
            return HALT
        if compiled is not None and not compiled(scope):
            return HALT
        # What the wait received stays readable by later steps: ctx("received.<event>.<prop>")
        # in conditions, {{ context.received.<event>.<prop> }} in templates.
        received = e.context.get(RECEIVED)
        if not isinstance(received, dict):
            received = e.context[RECEIVED] = {}
        received[event.name] = own_values(event.properties)
        d.activity(e, "event_received", event.name, at)
        return step.on_event


def _about_own_message(e: Enrollment, send_step: str, event: Event) -> bool:
    """Whether ``event`` names the message ``e`` made on its latest pass of ``send_step``.

    The key is derived from what the record holds (the enrollment id and its count of passes,
    or what a migration carried onto the step: ``latest_message_keys``): a pass that sent
    nothing made no message, so no provider reports that key, and the message of an earlier
    pass has another."""
    message_id = event.properties.get(MESSAGE_ID)
    if not isinstance(message_id, str):
        return False
    # A failover of that message (another of the step's channels) is the step's message too.
    return origin_key(message_id) in latest_message_keys(e, send_step)
