"""Condition nodes holding values of the wrong type: refused by validation, never a crash.

Conditions are attrs objects that do not check their own fields, so a host can build
``And(5)`` or ``Compare(None, "eq", 1)``. Random fields inside the conditions of generated
definitions (triggers' filters, audiences, exits, goals, segments, waits...) are given values of
other types; ``validate_definitions`` must return problems for them and never raise, and
``Engine.publish`` must refuse them with a ``DefinitionError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from datetime import timedelta

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cjo import Engine, EventTrigger, Exit, Journey, ManualClock, RecordingChannel
from cjo.conditions import And, Compare, CompareFields, CompareTime, Condition, Exists, Not, Ref
from cjo.errors import DefinitionError, Problem
from cjo.model.definitions import Definitions
from cjo.segments.history import Performed
from cjo.validation import validate_definitions
from tests.property.test_corrupted_definitions import (
    CHANNELS,
    SETTINGS,
    T0,
    Path,
    corrupt,
    definitions,
    wrong_values,
)


def places_in_conditions(value: object, path: Path = (), inside: bool = False) -> Iterator[Path]:
    """Every place under a condition node of ``value`` (the node's fields, their elements, and
    the fields of the references they hold)."""
    if attrs.has(type(value)):
        inside = inside or isinstance(value, Condition)
        for field in attrs.fields(type(value)):
            here = (*path, ("attr", field.name))
            if inside:
                yield here
            yield from places_in_conditions(getattr(value, field.name), here, inside)
    elif isinstance(value, tuple | list):
        for i, item in enumerate(value):
            here = (*path, ("item", i))
            if inside:
                yield here
            yield from places_in_conditions(item, here, inside)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from places_in_conditions(item, (*path, ("value", key)), inside)


@st.composite
def with_bad_conditions(draw: st.DrawFn) -> Definitions:
    defs = draw(definitions.filter(lambda d: any(places_in_conditions(d))))
    for _ in range(draw(st.integers(1, 3))):
        spots = list(places_in_conditions(defs))
        if not spots:
            break
        defs = corrupt(defs, draw(st.sampled_from(spots)), draw(wrong_values))
    return defs


@SETTINGS
@given(with_bad_conditions())
def test_validation_reports_conditions_of_the_wrong_shape_and_never_raises(
    defs: Definitions,
) -> None:
    problems = validate_definitions(defs, channels=CHANNELS)
    assert all(isinstance(p, Problem) and p.location and p.message for p in problems)
    assert validate_definitions(defs, channels=CHANNELS) == problems


@SETTINGS
@given(with_bad_conditions())
def test_publish_refuses_conditions_of_the_wrong_shape_with_a_definition_error(
    defs: Definitions,
) -> None:
    engine = Engine(channels={c: RecordingChannel() for c in CHANNELS}, clock=ManualClock(T0))
    with contextlib.suppress(DefinitionError):  # refused, or fine after all: never a crash
        engine.publish(attrs.evolve(defs, paused=(), version_changes=()))


def _journey(where: object) -> Journey:
    return Journey(id="j", trigger=EventTrigger("e", where=where),  # type: ignore[arg-type]
                   entry="s", steps={"s": Exit()})


@pytest.mark.parametrize(("where", "message"), [
    (And(5), "trigger / where: conditions must be a tuple of a condition"),  # type: ignore[arg-type]
    (Not(And(None)), "where / condition: conditions must be a tuple of a condition"),  # type: ignore[arg-type]
    (Compare(None, "eq", 1), "where: ref must be a reference (built with attr(), prop() or ctx()), "  # type: ignore[arg-type]
                             "got None"),
    (Compare(Ref("profile", 5), "eq", 1), "where / ref: path must be a string, got 5"),  # type: ignore[arg-type]
    (Compare(Ref("profile", "plan"), ["eq"], 1), "where: op must be"),  # type: ignore[arg-type]
    (Exists("profile.plan"), "where: ref must be a reference"),  # type: ignore[arg-type]
    (CompareFields(Ref("event", "id"), "eq", None), "where: right must be a reference"),  # type: ignore[arg-type]
    (CompareTime(Ref("profile", "d"), "lt", "now", 3600),  # type: ignore[arg-type]
     "where: offset must be a duration"),
    (And((Performed("bought", window=7),)),  # type: ignore[arg-type]
     "where / conditions 0: window must be a duration"),
    (Performed("bought", window=timedelta(days=7), count="3"), "where: count must be a whole"),  # type: ignore[arg-type]
])
def test_a_node_of_the_wrong_shape_is_named(where: object, message: str) -> None:
    problems = validate_definitions(Definitions(journeys=(_journey(where),)))
    assert any(message in f"{p.location}: {p.message}" for p in problems), problems
    engine = Engine(channels={}, clock=ManualClock(T0))
    with pytest.raises(DefinitionError, match="must be"):
        engine.publish(journeys=[_journey(where)])
