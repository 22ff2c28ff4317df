"""Definitions with fields of the wrong type: validation reports every problem in one pass.

Random fields of generated definitions, at any depth (not inside conditions), are given values
of other types (what a host can pass, since definitions do not check their own fields). Then:

- ``validate_definitions`` returns problems and never raises, the problems of shape first;
- once a single field is of the wrong type, every other problem reported was reported before
  the corruption: the definition holding it is left out of the checks of meaning, and nothing
  that names it is refused for it;
- ``Engine.publish`` refuses such definitions with a ``DefinitionError`` listing the same
  problems, never another exception (for what publish takes as given: not a list or its
  element as a whole, which it refuses on its own, nor a content item's version, which it
  assigns).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from cjo import Engine, ManualClock, RecordingChannel
from cjo.conditions import Condition
from cjo.errors import DefinitionError, Problem
from cjo.model.definitions import Definitions
from cjo.model.segments import Segment
from cjo.model.shapes import shape_problems
from cjo.model.steps import Exit
from cjo.validation import duplicate_ids, validate_definitions
from tests.property.journeys import definitions as running_definitions
from tests.property.strategies import definitions as well_formed_definitions

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
CHANNELS = ("email", "sms", "push", "webhook")

# Well-formed definitions (any field, names mostly unknown), and valid ones whose steps name the
# same few content items and segments (so corrupting those exercises what names them).
definitions = st.one_of(well_formed_definitions, running_definitions())

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Opaque:
    """A value of a class no definition declares."""

    def __repr__(self) -> str:
        return "Opaque()"


wrong_values = st.sampled_from([
    None, 0, -1, 2.5, float("nan"), True, "", "x", b"x", [], ["x"], [["x"]], {}, {"k": "v"},
    (), ("x", 1), {"x"}, timedelta(hours=1), T0, Opaque(), Exit(), Segment("s", None),  # type: ignore[arg-type]
])

#: A place in a definition: an attribute, an element of a tuple or list, a mapping's value or
#: one of its keys (replaced by another key, its value kept).
Step = tuple[str, Any]
Path = tuple[Step, ...]


def places(value: object, path: Path = ()) -> Iterator[Path]:
    """Every place under ``value`` a wrong value can be put (not inside conditions, whose
    nodes the checks of conditions read on their own)."""
    if isinstance(value, Condition):
        return
    if attrs.has(type(value)):
        for field in attrs.fields(type(value)):
            here = (*path, ("attr", field.name))
            yield here
            yield from places(getattr(value, field.name), here)
    elif isinstance(value, tuple | list):
        for i, item in enumerate(value):
            here = (*path, ("item", i))
            yield here
            yield from places(item, here)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield (*path, ("key", key))
            here = (*path, ("value", key))
            yield here
            yield from places(item, here)


def replaced(value: Any, path: Path, new: Any) -> Any:
    """``value`` with ``new`` at ``path``, rebuilt through the constructors (as a host builds
    definitions: converters run)."""
    if not path:
        return new
    (kind, key), rest = path[0], path[1:]
    if kind == "attr":
        return attrs.evolve(value, **{key: replaced(getattr(value, key), rest, new)})
    if kind == "item":
        items = list(value)
        items[key] = replaced(items[key], rest, new)
        return type(value)(items)
    out = copy.copy(dict(value))
    if kind == "key":
        item = out.pop(key)
        try:
            out[new] = item
        except TypeError:  # an unhashable value cannot be a key
            reject()
        return out
    out[key] = replaced(out[key], rest, new)
    return out


def corrupt(defs: Definitions, path: Path, value: object) -> Definitions:
    try:
        result = replaced(defs, path, value)
    except (TypeError, ValueError, DefinitionError):  # a constructor refused the value
        reject()
    assert isinstance(result, Definitions)
    return result


@st.composite
def corrupted(draw: st.DrawFn, *, times: int = 3) -> Definitions:
    defs = draw(definitions)
    for _ in range(draw(st.integers(1, times))):
        defs = corrupt(defs, draw(st.sampled_from(list(places(defs)))), draw(wrong_values))
    return defs


def shape_count(defs: Definitions) -> int:
    return len(shape_problems(defs, lambda *_: ""))


@SETTINGS
@given(corrupted())
def test_validation_reports_problems_of_corrupted_definitions_and_never_raises(
    defs: Definitions,
) -> None:
    problems = validate_definitions(defs, channels=CHANNELS)
    assert all(isinstance(p, Problem) and p.location and p.message for p in problems)
    assert len(problems) >= shape_count(defs)
    assert validate_definitions(defs, channels=CHANNELS) == problems  # a stable order


@SETTINGS
@given(definitions, st.data())
def test_one_wrong_field_adds_no_problem_of_meaning(defs: Definitions, data: st.DataObject) -> None:
    bad = corrupt(defs, data.draw(st.sampled_from(list(places(defs)))), data.draw(wrong_values))
    shapes = shape_count(bad)
    if not shapes:
        reject()  # the value was of an accepted type after all (a renamed id, say)
    before = validate_definitions(defs, channels=CHANNELS)
    after = validate_definitions(bad, channels=CHANNELS)
    assert shape_count(defs) == 0
    # Problems of shape come first; every one after them was already there.
    assert set(after[shapes:]) <= set(before)


def inside_an_element(defs: Definitions, path: Path) -> bool:
    """Whether ``path`` is a place ``publish`` takes as it is: inside a listed definition (not
    the list, nor its element as a whole, which publish refuses on its own), or one of the
    rules across journeys; not a content item's own version, which publish assigns."""
    (_, name), rest = path[0], path[1:]
    if name in ("paused", "version_changes", "published"):  # not what publish takes
        return False
    if name in ("taxonomy", "control_group", "max_concurrent_journeys"):
        return True
    return len(rest) > 1 and not (name == "content" and rest[1:] == (("attr", "version"),))


@SETTINGS
@given(definitions, st.data())
def test_publish_lists_the_problems_validation_finds(
    defs: Definitions, data: st.DataObject
) -> None:
    defs = attrs.evolve(defs, paused=(), version_changes=(),
                        content=tuple(attrs.evolve(c, version=1) for c in defs.content))
    if duplicate_ids(defs):
        reject()  # publish refuses duplicate ids before anything else
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(list(places(defs))).filter(
            lambda p: inside_an_element(defs, p)  # noqa: B023  # drawn before defs changes
        ))
        defs = corrupt(defs, path, data.draw(wrong_values))
    engine = Engine(channels={c: RecordingChannel() for c in CHANNELS}, clock=ManualClock(T0))
    expected = validate_definitions(  # with what the engine registers
        defs, channels=CHANNELS, actions=(), scorers=(),
        channel_types=engine.options.channel_types,
    )
    try:
        engine.publish(defs)
    except DefinitionError as exc:
        problems = list(exc.problems)
    else:
        problems = []
    # The same problems; a definition whose id is not text is merged last, so its place in a
    # list (which names it in locations) may differ.
    assert Counter(p.message for p in problems) == Counter(p.message for p in expected)
    if problems:
        assert engine.definitions == Definitions()  # nothing was published
