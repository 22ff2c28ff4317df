"""A step kind is found through ``STEP_KINDS`` alone: the graph checks, the registry and the
decider ask the table, never a list of classes of their own. A kind defined here,
put in the table for one test only, runs without any other module knowing it. (The ``Step``
union is the other place a class is listed, for the JSON converter and the check of field
types; ``tests/unit/test_kind_tables.py`` checks that every class of it is in each place.)"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import attrs
import pytest

from cjo import Event, EventTrigger, Journey, Send
from cjo.errors import Problem
from cjo.model.definitions import Definitions
from cjo.runtime.core import Decider, new_state
from cjo.runtime.kinds import HALT, STEP_KINDS, Next, StepKind, step_kind
from cjo.runtime.registry import Registry
from cjo.validation import _check_graph

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@attrs.frozen
class Hold:
    """Wait ``duration``, or until a ``poke`` event: then go on to ``next``."""

    kind: ClassVar[str] = "hold"
    duration: timedelta
    next: str | None = None
    tags: tuple[str, ...] = ()


@attrs.frozen
class Pass:
    """Go on to ``next`` at once (a step that does not wait)."""

    kind: ClassVar[str] = "pass"
    next: str | None = None
    tags: tuple[str, ...] = ()


class HoldKind(StepKind[Hold]):
    step_type = Hold
    waits = True

    def successors(self, step: Hold) -> list[tuple[str, str | None]]:
        return [("next", step.next)]

    def check(self, step: Hold, where: str, journey: Any, checker: Any) -> list[Problem]:
        return []

    def compile(self, step: Hold) -> str:
        return f"compiled {step.duration}"

    def watches(self, step: Hold) -> Iterable[str]:
        return ("poke",)

    def run(self, d: Any, cj: Any, e: Any, step_id: str, step: Hold, compiled: Any,
            at: datetime) -> Next:
        assert compiled == f"compiled {step.duration}"  # what compile made, passed back
        d.schedule(e, at + step.duration)
        return HALT

    def wake(self, d: Any, cj: Any, e: Any, step: Hold, compiled: Any, at: datetime) -> Next:
        d.activity(e, "timeout", "hold", at)
        return step.next

    def on_event(self, d: Any, cj: Any, e: Any, step: Hold, compiled: Any, event: Event,
                 scope: Any, at: datetime) -> Next:
        return step.next if event.name == "poke" else HALT


class PassKind(StepKind[Pass]):
    step_type = Pass

    def successors(self, step: Pass) -> list[tuple[str, str | None]]:
        return [("next", step.next)]

    def run(self, d: Any, cj: Any, e: Any, step_id: str, step: Pass, compiled: Any,
            at: datetime) -> Next:
        return step.next


@pytest.fixture(autouse=True)
def _kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    # setitem puts the table back as it was after each test.
    monkeypatch.setitem(STEP_KINDS, Hold, HoldKind())
    monkeypatch.setitem(STEP_KINDS, Pass, PassKind())


def _journey(steps: dict[str, Any], entry: str = "hold") -> Journey:
    return Journey("j", trigger=EventTrigger("go"), entry=entry, steps=steps)


def test_the_graph_checks_read_successors_and_waits_from_the_table() -> None:
    where = "journey 'j' v1"
    assert _check_graph(_journey({"hold": Hold(HOUR, next="hold")})) == []  # it waits
    assert _check_graph(_journey({"hold": Hold(HOUR, next="nope")})) == [
        Problem(f"{where} / step 'hold'", "next refers to missing step 'nope'"),
    ]
    assert _check_graph(_journey({"hold": Hold(HOUR), "lost": Pass()})) == [
        Problem(f"{where} / step 'lost'", "unreachable: no path leads here from the entry step "
                                           "'hold'"),
    ]
    assert _check_graph(_journey({"a": Pass(next="b"), "b": Pass(next="a")}, entry="a")) == [
        Problem(f"{where} / step 'a'", "loop without a wait: 'a' -> 'b' -> 'a' would repeat "
                                       "forever; add a Wait or WaitForEvent to it"),
    ]


def test_the_registry_and_the_decider_run_a_kind_of_the_table() -> None:
    journey = _journey({"hold": Hold(HOUR, next="pass"), "pass": Pass(next="hold2"),
                        "hold2": Hold(2 * HOUR, next="mail"),
                        "mail": Send("note", "email")})
    registry = Registry.build(Definitions(journeys=(journey,)), 1)
    compiled = registry.compiled_version("j", 1)
    assert compiled is not None and compiled.steps["hold"].compiled == "compiled 1:00:00"
    assert registry.may_matter("poke") and not registry.may_matter("other")  # what the kind watches opens a transaction

    decider = Decider(registry, new_state("ann", T0))
    decider.on_event(Event("ann", "go", T0, event_id="1"), T0)
    (enrollment,) = decider.state.enrollments
    assert (enrollment.step_id, enrollment.wake_at) == ("hold", T0 + HOUR)
    decider.catch_up(T0 + HOUR)  # woken by HoldKind.wake, on through Pass to the next hold
    assert (enrollment.step_id, enrollment.wake_at) == ("hold2", T0 + 3 * HOUR)
    decider.on_event(Event("ann", "poke", T0 + 2 * HOUR, event_id="2"), T0 + 2 * HOUR)
    # The poke moved it on at once, its wake-up cleared (the decider does that, not the kind).
    assert (enrollment.step_id, enrollment.status, enrollment.wake_at) == (
        "mail", "completed", None)
    assert [(a.kind, a.step_id) for a in decider.activities][:6] == [
        ("entered", None), ("step", "hold"), ("timeout", "hold"), ("step", "pass"),
        ("step", "hold2"), ("step", "mail"),
    ]
    assert step_kind(Hold(HOUR)).waits and not step_kind(Pass()).waits
