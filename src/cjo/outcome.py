"""What one call to the engine did: returned by handle_event, handle_events, run_due,
start_journey, identify and the other calls that decide for customers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from cjo.channels.base import Message

__all__ = [
    "Ended", "Entered", "GoalReached", "NotEntered", "Outcome", "SendFailure", "StepRun",
]


@attrs.define(slots=True)
class Entered:
    journey_id: str
    version: int
    enrollment_id: str
    customer_id: str
    at: datetime


@attrs.define(slots=True)
class StepRun:
    """A step an enrollment ran (read-only; not frozen because one is built per step run)."""

    journey_id: str
    enrollment_id: str
    customer_id: str
    step_id: str
    kind: str
    at: datetime


@attrs.define(slots=True)
class Ended:
    """An enrollment reached a terminal state: completed, exited, converted, expired, removed."""

    journey_id: str
    enrollment_id: str
    customer_id: str
    status: str
    reason: str | None
    at: datetime


@attrs.frozen(slots=True)
class GoalReached:
    journey_id: str
    enrollment_id: str
    customer_id: str
    goal: str
    at: datetime


@attrs.frozen(slots=True)
class NotEntered:
    """A journey the customer qualified for but did not enter: ``reason`` says what kept them
    out (the journey is paused, an exclusive group, the concurrency limit, an instance key the
    input lacks; for ``Engine.start_journey``, the audience and the re-entry rules too)."""

    journey_id: str
    customer_id: str
    reason: str
    at: datetime


@attrs.frozen(slots=True)
class SendFailure:
    """A Send that could not send: no variant for the channel, or a template that failed to
    render. ``action`` is what the step's policy did: ``skipped`` (the journey went on),
    ``retrying`` (the step waits to render again) or ``exited`` (the enrollment ended)."""

    journey_id: str
    enrollment_id: str
    customer_id: str
    step_id: str
    content_id: str
    reason: str
    action: str
    at: datetime


@attrs.frozen(slots=True)
class Outcome:
    """Everything that happened. ``messages`` were committed to the outbox; ``delivery`` maps
    each one's idempotency key to where it stands after the call: ``delivered``, ``pending``
    (deferred dispatch, or a transient failure awaiting its retry), ``dead`` (a dead letter)
    or ``discarded`` (withheld before sending: a later item of the same ``handle_events``
    group blocked the channel or withdrew consent)."""

    event_id: str | None = None
    duplicate: bool = False
    entered: tuple[Entered, ...] = ()
    steps: tuple[StepRun, ...] = ()
    messages: tuple[Message, ...] = ()
    ended: tuple[Ended, ...] = ()
    goals: tuple[GoalReached, ...] = ()
    not_entered: tuple[NotEntered, ...] = ()
    delivery: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def pending(self) -> tuple[Message, ...]:
        """The messages left in the outbox for ``dispatch_pending`` (or the worker) to send."""
        return tuple(m for m in self.messages if self.delivery.get(m.idempotency_key) == "pending")
    failures: tuple[SendFailure, ...] = ()

    @property
    def exited(self) -> tuple[Ended, ...]:
        return tuple(e for e in self.ended if e.status == "exited")

    @property
    def converted(self) -> tuple[Ended, ...]:
        return tuple(e for e in self.ended if e.status == "converted")

    @property
    def nothing_happened(self) -> bool:
        return not (self.entered or self.steps or self.messages or self.ended or self.goals)

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome(
            event_id=self.event_id or other.event_id,
            duplicate=self.duplicate and other.duplicate,
            entered=self.entered + other.entered,
            steps=self.steps + other.steps,
            messages=self.messages + other.messages,
            ended=self.ended + other.ended,
            goals=self.goals + other.goals,
            not_entered=self.not_entered + other.not_entered,
            delivery={**self.delivery, **other.delivery},
            failures=self.failures + other.failures,
        )


@attrs.define(slots=True)
class OutcomeBuilder:
    """Mutable accumulator used while deciding; frozen into an Outcome at the end."""

    entered: list[Entered] = attrs.field(factory=list)
    steps: list[StepRun] = attrs.field(factory=list)
    messages: list[Message] = attrs.field(factory=list)
    ended: list[Ended] = attrs.field(factory=list)
    goals: list[GoalReached] = attrs.field(factory=list)
    not_entered: list[NotEntered] = attrs.field(factory=list)
    #: Idempotency key -> delivery status after this call (set by the engine after commit).
    delivery: dict[str, str] = attrs.field(factory=dict)
    failures: list[SendFailure] = attrs.field(factory=list)
    #: False leaves ``steps`` empty: for callers that only count what happened (back-tests),
    #: a record per step run is work for nothing.
    record_steps: bool = True
    #: False builds no ``Message`` at all: each send is counted per channel in ``sent``, and
    #: nothing goes to the outbox. Only for callers whose storage keeps no outbox and whose
    #: channels would only count (back-tests on their counting channels).
    record_messages: bool = True
    #: Sends per channel, when messages are not recorded.
    sent: dict[str, int] = attrs.field(factory=dict)

    def _lists(self) -> tuple[list[Any], ...]:
        return (self.entered, self.steps, self.messages, self.ended, self.goals,
                self.not_entered, self.failures)

    def mark(self) -> tuple[int, ...]:
        """Where the lists stand now, for ``rewind``."""
        return tuple(map(len, self._lists()))

    def rewind(self, mark: tuple[int, ...]) -> None:
        """Forget what was added to the lists since ``mark`` (a rolled-back attempt's)."""
        for items, at in zip(self._lists(), mark, strict=True):
            del items[at:]

    def absorb(self, other: OutcomeBuilder) -> None:
        self.entered.extend(other.entered)
        self.steps.extend(other.steps)
        self.messages.extend(other.messages)
        self.ended.extend(other.ended)
        self.goals.extend(other.goals)
        self.not_entered.extend(other.not_entered)
        self.delivery.update(other.delivery)
        self.failures.extend(other.failures)
        for channel, n in other.sent.items():
            self.sent[channel] = self.sent.get(channel, 0) + n

    def build(self, event_id: str | None = None, duplicate: bool = False) -> Outcome:
        return Outcome(
            event_id=event_id,
            duplicate=duplicate,
            entered=tuple(self.entered),
            steps=tuple(self.steps),
            messages=tuple(self.messages),
            ended=tuple(self.ended),
            goals=tuple(self.goals),
            not_entered=tuple(self.not_entered),
            delivery=dict(self.delivery),
            failures=tuple(self.failures),
        )
