"""What a step or trigger kind is: one class that knows everything about its kind.

A step kind declares its labelled successors, whether it waits, its validation, what it
compiles once at publish time, and how it runs (on arrival, on its wake-up, on an event while
it waits). Validation, the registry and the decider dispatch through these objects, so a new
kind is its model class (in the ``Step`` or ``Trigger`` union), one module here listed in the
tables, and its tests: see docs/kinds.md.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, cast

from cjo.conditions import Condition
from cjo.errors import Problem
from cjo.limits import Limits
from cjo.model.offers import Offer

if TYPE_CHECKING:
    from cjo.model.events import Event
    from cjo.model.journey import Journey
    from cjo.runtime.core import Decider
    from cjo.runtime.registry import CompiledJourney
    from cjo.runtime.state import Enrollment

__all__ = ["HALT", "Checker", "Halt", "Next", "StepKind", "TriggerKind"]

S = TypeVar("S")


class Halt:
    """Returned by a step that stops the run: the enrollment now waits, or has ended."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "HALT"


HALT = Halt()

#: What running a step gives: the next step id, None to complete the journey, or HALT.
Next = str | None | Halt


class Checker(Protocol):
    """What validation offers a kind's ``check``: the definitions around the step, the limits,
    and the checks every kind shares (each returns the problems it found)."""

    # The ids a step may name: every definition of the kind, those left out of the checks for
    # a field of the wrong type included (they exist; nothing else about them is relied on).
    @property
    def segment_ids(self) -> Collection[str]: ...
    @property
    def journey_ids(self) -> Collection[str]: ...
    @property
    def content_ids(self) -> Collection[str]: ...
    @property
    def offer_ids(self) -> Collection[str]: ...
    @property
    def channels(self) -> Collection[str] | None: ...
    @property
    def actions(self) -> Collection[str] | None: ...
    @property
    def limits(self) -> Limits: ...
    @property
    def offers(self) -> Mapping[str, Offer]:
        """The offers checked, by id (not those left out for their shape)."""
        ...

    def has_variant(self, content_id: str, channel: str, name: str | None = None) -> bool:
        """Whether the item has a variant for the channel (named ``name``; None: unnamed).
        True for an item left out for its shape: which variants it has is not known."""
        ...

    def condition(
        self, condition: Condition, where: str, *, used_in: str, scopes: tuple[str, ...]
    ) -> list[Problem]: ...

    def wait(
        self, value: timedelta, name: str, where: str, journey: Journey | None
    ) -> list[Problem]:
        """A waiting duration: positive, within the minimum wait and the maximum duration,
        and no longer than the journey's lifetime (when given)."""
        ...

    def identifier(self, value: object, what: str, where: str) -> list[Problem]: ...

    def text(self, texts: Iterable[tuple[str, object]], where: str) -> list[Problem]: ...

    def reason(self, value: object, what: str, where: str) -> list[Problem]:
        """A reason an enrollment ends with: text, and not empty or only whitespace."""
        ...

    def values(
        self, values: Mapping[str, Any], what: str, item: str, where: str
    ) -> list[Problem]:
        """Values that end up in profiles: what events may carry (``what`` names the whole,
        ``item`` one of them)."""
        ...


class StepKind(Generic[S]):
    """Base of every step kind. Subclasses set ``step_type`` and override what applies."""

    step_type: ClassVar[type[Any]]
    #: A waiting step stops the run and is resumed by a wake-up or an event; a loop of
    #: non-waiting steps would never yield, so validation refuses one.
    waits: ClassVar[bool] = False

    def successors(self, step: S) -> list[tuple[str, str | None]]:
        """Each step id this step can lead to, labelled with the field it comes from."""
        return []

    def check(self, step: S, where: str, journey: Journey, checker: Checker) -> list[Problem]:
        """Problems with this step's own fields (the graph is checked elsewhere)."""
        return []

    def refers_back(self, step: S) -> list[tuple[str, str]]:
        """Each earlier step this step names, labelled with the field naming it: validation
        checks that it exists and that some path leads from it to this step."""
        return []

    def compile(self, step: S) -> Any:
        """Whatever the step needs precomputed (compiled conditions...); kept per generation."""
        return None

    def watches(self, step: S) -> Iterable[str]:
        """Event names this step reacts to while an enrollment waits on it."""
        return ()

    def run(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step_id: str, step: S,
        compiled: Any, at: datetime,
    ) -> Next:
        """The enrollment arrives at the step at ``at``."""
        raise NotImplementedError

    def wake(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step: S, compiled: Any,
        at: datetime,
    ) -> Next:
        """The enrollment's wake-up on this step is due at ``at``."""
        # A step that does not wait has a wake-up only when a new version migrated a waiting
        # enrollment onto it: it runs then, as if reached at the kept instant (halting would
        # leave the enrollment active with nothing to wake it).
        return HALT if self.waits else e.step_id

    def on_event(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step: S, compiled: Any,
        event: Event, scope: Any, at: datetime,
    ) -> Next:
        """An event the step watches arrived while the enrollment waits on it."""
        return HALT


class TriggerKind(Generic[S]):
    """Base of every trigger kind: how customers enter a journey."""

    trigger_type: ClassVar[type[Any]]

    def check(self, trigger: S, where: str, journey: Journey, checker: Checker) -> list[Problem]:
        return []

    def compile(self, trigger: S) -> Any:
        return None

    def entry_events(self, trigger: S) -> Iterable[str]:
        """Event names that may start the journey (indexed by the registry)."""
        return ()

    def watched_events(self, trigger: S) -> Iterable[str]:
        """Event names the trigger must see for every customer (not only to start)."""
        return ()

    def watched_attributes(self, trigger: S) -> Iterable[str]:
        """Profile attributes whose changes the trigger must see (indexed by the registry)."""
        return ()

    def on_event(
        self, d: Decider, cj: CompiledJourney, trigger: S, compiled: Any, event: Event,
        now: datetime,
    ) -> None:
        """An event of the customer arrived (one of ``entry_events`` or ``watched_events``)."""

    def on_change(
        self, d: Decider, cj: CompiledJourney, trigger: S, compiled: Any, attribute: str,
        old: Any, new: Any, at: datetime,
    ) -> None:
        """A profile attribute of ``watched_attributes`` changed from ``old`` to ``new`` (None
        when it had or has no value), by the host or by a step."""

    def arm(
        self, d: Decider, cj: CompiledJourney, trigger: S, compiled: Any, now: datetime
    ) -> None:
        """Make sure the customer's timers for this trigger are set (each transaction)."""

    def arm_all(
        self, d: Decider, journeys: Sequence[CompiledJourney], now: datetime
    ) -> None:
        """``arm`` for each of ``journeys`` (all of this kind, in the registry's order): a kind
        may skip, in one loop, the journeys whose timers are set already (every input of every
        customer arms every such journey, however many a programme has)."""
        for cj in journeys:
            self.arm(d, cj, cast(S, cj.journey.trigger), cj.trigger_compiled, now)

    def on_timer(
        self, d: Decider, cj: CompiledJourney, trigger: S, compiled: Any, at: datetime
    ) -> None:
        """This trigger's customer timer is due at ``at``."""
