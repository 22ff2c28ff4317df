"""Random hostile input: values, ids and definitions JSON.

- Any JSON-like value (NaN, huge integers, nested and self-referencing containers, odd strings,
  Decimals, naive datetimes...) given as an event property or a profile attribute is either
  accepted, as the plain value the rules below say, or refused with ``InvalidEventError``;
  never another exception.
- Any definitions JSON, well-formed or mangled, given to ``loads_definitions`` (or read one
  definition at a time, as ``cjo validate`` reads a file) and then ``validate_definitions``,
  either passes or raises ``DefinitionError``; never another exception, and each example within the hypothesis deadline. Definitions that pass come back
  the same through JSON text, as a restarted engine reads them.

The rules are written out again here, independently of ``cjo.model.events``, as the oracle.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cjo import Event, ProfileUpdate, dumps_definitions, loads_definitions, validate_definitions
from cjo.errors import DefinitionError, InvalidEventError
from cjo.serialization import dump_definitions, loads_definitions_in_parts
from tests.property.strategies import definitions

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
MAX_INT = 2**63 - 1
MAX_DEPTH = 16
MAX_ID = 256


class Plan(enum.StrEnum):
    PRO = "pro"


class Level(enum.IntEnum):
    GOLD = 3


# --- hostile values ----------------------------------------------------------------------------

odd_characters = st.characters() | st.sampled_from(
    ["\x00", "\ud800", "\udbff", "\udc00", "\udfff", " ", "\t", "\n", "\u2028", "é", "🙂"]
)
odd_text = st.text(odd_characters, max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([MAX_INT, -MAX_INT, MAX_INT + 1, -MAX_INT - 1, 2**64, -(10**40)]),
    st.floats(),  # NaN and both infinities included
    odd_text,
    st.decimals(),
    st.binary(max_size=4),
    st.datetimes(timezones=st.none() | st.timezones()),
    st.dates(),
    st.sampled_from([Plan.PRO, Level.GOLD, object(), {1, 2}, frozenset({"a"})]),
)
keys = odd_text | st.integers(-3, 3)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(keys, inner, max_size=3),
    )


values: st.SearchStrategy[Any] = st.recursive(scalars, _containers, max_leaves=10)


@st.composite
def deep_values(draw: st.DrawFn) -> Any:
    """A value wrapped in lists and dicts up to past the nesting limit."""
    value = draw(values)
    for _ in range(draw(st.integers(0, MAX_DEPTH + 3))):
        value = [value] if draw(st.booleans()) else {"k": value}
    return value


@st.composite
def self_referencing(draw: st.DrawFn) -> Any:
    """A container that holds itself somewhere inside."""
    outer: Any = draw(st.sampled_from(["list", "dict"]))
    root: Any = [] if outer == "list" else {}
    holder = root
    for _ in range(draw(st.integers(0, 3))):
        child: Any = {} if draw(st.booleans()) else []
        if isinstance(holder, list):
            holder.append(child)
        else:
            holder["x"] = child
        holder = child
    if isinstance(holder, list):
        holder.append(root)
    else:
        holder["loop"] = root
    return root


any_values = st.one_of(values, deep_values(), self_referencing())


def plain(value: object, depth: int = 0, path: tuple[int, ...] = ()) -> object:
    """The oracle: ``value`` as cjo must store it, or ValueError when it must be refused."""
    if id(value) in path:
        raise ValueError("contains itself")
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        text = str.__str__(value)
        if "\x00" in text or any(0xD800 <= ord(c) <= 0xDFFF for c in text):
            raise ValueError("text")
        return text
    if isinstance(value, int):
        if abs(int(value)) > MAX_INT:
            raise ValueError("int")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("float")
        return float(value)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive")
        return value.astimezone(UTC)
    if isinstance(value, list | tuple | Mapping):
        if depth >= MAX_DEPTH:
            raise ValueError("deep")
        inner = (*path, id(value))
        if isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ValueError("key")
                out[plain(key)] = plain(item, depth + 1, inner)
            return out
        return [plain(item, depth + 1, inner) for item in value]
    raise ValueError(type(value).__name__)


def same(stored: object, expected: object) -> bool:
    """Equal, and of the same types all the way down (1 == 1.0 == True would hide a change)."""
    if type(stored) is not type(expected):
        return False
    if isinstance(expected, dict):
        assert isinstance(stored, dict)
        return stored.keys() == expected.keys() and all(
            same(stored[k], expected[k]) for k in expected
        )
    if isinstance(expected, list):
        assert isinstance(stored, list)
        return len(stored) == len(expected) and all(map(same, stored, expected))
    if isinstance(expected, datetime):
        assert isinstance(stored, datetime)
        return stored == expected and stored.tzinfo is UTC
    return stored == expected


VALUES = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])


@VALUES
@given(any_values)
def test_a_property_is_accepted_as_its_plain_value_or_refused(value: object) -> None:
    try:
        expected: object = plain(value)
    except ValueError:
        expected = ValueError
    try:
        event = Event("c1", "checkout", T0, {"v": value})
    except InvalidEventError:
        assert expected is ValueError, f"refused, but the rules accept {value!r}"
        return
    assert expected is not ValueError, f"accepted, but the rules refuse {value!r}"
    assert same(event.properties["v"], expected)
    # tests/property/test_value_round_trips.py stores accepted values on every adapter.
    if not _has_datetime(expected):
        assert same(json.loads(json.dumps(expected, allow_nan=False)), expected)


@VALUES
@given(any_values)
def test_an_attribute_is_accepted_as_its_plain_value_or_refused(value: object) -> None:
    try:
        expected: object = plain(value)
    except ValueError:
        expected = ValueError
    try:
        update = ProfileUpdate("c1", {"a": value})
    except InvalidEventError:
        assert expected is ValueError, f"refused, but the rules accept {value!r}"
        return
    assert expected is not ValueError, f"accepted, but the rules refuse {value!r}"
    assert same(update.attributes["a"], expected)
    # tests/property/test_value_round_trips.py stores accepted values on every adapter.


@VALUES
@given(st.dictionaries(keys, values, max_size=4))
def test_a_whole_mapping_of_properties_is_accepted_or_refused(properties: dict[Any, Any]) -> None:
    try:
        expected: object = plain(properties)
    except ValueError:
        expected = ValueError
    try:
        event = Event("c1", "checkout", T0, properties)
    except InvalidEventError:
        assert expected is ValueError
        return
    assert same(dict(event.properties), expected)


def _has_datetime(value: object) -> bool:
    if isinstance(value, datetime):
        return True
    if isinstance(value, dict):
        return any(_has_datetime(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_datetime(v) for v in value)
    return False


def valid_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID
        and not value.isspace()
        and "\x00" not in value
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    )


ids = st.one_of(
    odd_text,
    st.text(odd_characters, min_size=250, max_size=260),
    st.integers(),
    st.none(),
    st.just(Plan.PRO),
)


@VALUES
@given(ids, ids, ids)
def test_ids_are_accepted_exactly_when_valid(customer_id: Any, name: Any, event_id: Any) -> None:
    # An event_id of None asks for a generated one, as leaving it out does.
    valid_event_id = event_id is None or valid_id(event_id)
    try:
        event = Event(customer_id, name, T0, event_id=event_id)
    except InvalidEventError:
        assert not (valid_id(customer_id) and valid_id(name) and valid_event_id)
        return
    assert valid_id(customer_id) and valid_id(name) and valid_event_id
    assert type(event.customer_id) is str and event.customer_id == customer_id
    assert valid_id(event.event_id)


# --- hostile definitions JSON ------------------------------------------------------------------

TEMPLATES = [
    "{% for i in (1..1000000000000) %}{% endfor %}",
    '{% assign s = "xy" %}{% for i in (1..64) %}{% assign s = s | append: s %}{% endfor %}',
    "{% for i in (1..profile.n) %}{{ i }}{% endfor %}",
    "{{ (1..100000000000) | join: ',' }}",
    "{% if %}",
    "Hi {{ profile.name }}",
]


def _deep_condition(depth: int) -> dict[str, Any]:
    condition: dict[str, Any] = {"kind": "exists", "ref": "profile.x"}
    for i in range(depth):
        condition = ({"kind": "not", "condition": condition} if i % 2
                     else {"kind": "and", "conditions": [condition]})
    return condition


def _is_json(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


replacements = st.one_of(
    st.sampled_from([
        float("nan"), float("inf"), -float("inf"), 2**31, 2**40, 2**63, 2**70, -1, 0, 1e308,
        "", " ", "\x00", "\ud800", "x" * 300, "999999999d", "1s", "0s", "-5m", [], {},
        {"kind": "nope"}, {"kind": "wait"}, {"kind": "not"}, True, None,
        *TEMPLATES,
    ]),
    st.integers(0, 45).map(_deep_condition),  # past the depth limit, short of recursion trouble
    odd_text,
    st.integers(),
    st.floats(),
    values.filter(_is_json),
)


def _positions(data: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) place in a JSON document, found iteratively."""
    out: list[tuple[Any, Any]] = []
    stack = [data]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            out.append((node, key))
            if isinstance(child, dict | list):
                stack.append(child)
    return out


@st.composite
def mangled_definitions(draw: st.DrawFn) -> str:
    """Definitions dumped to JSON, then changed in a few random places."""
    data: Any = dump_definitions(draw(definitions))
    for _ in range(draw(st.integers(0, 4))):
        places = _positions(data)
        if not places:
            break
        container, key = draw(st.sampled_from(places))
        if isinstance(container, dict) and draw(st.integers(0, 9)) == 0:
            container[draw(odd_text)] = draw(replacements)  # an unknown key
        else:
            container[key] = draw(replacements)
    return json.dumps(data)  # NaN and Infinity are written as JSON's non-standard literals


documents = st.one_of(
    mangled_definitions(),
    mangled_definitions(),
    st.dictionaries(odd_text, replacements, max_size=4).map(json.dumps),
    st.sampled_from(["", "[]", "null", "{", '{"journeys": 5}', "NaN", '"x"']),
)

DEFINITIONS = settings(
    max_examples=200,
    deadline=timedelta(seconds=2),  # generous for a slow machine; the bad old cases never ended
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@DEFINITIONS
@given(documents)
def test_definitions_json_loads_and_validates_or_raises_definition_error(text: str) -> None:
    # As ``cjo validate`` reads a file: each definition on its own, the rest validated.
    try:
        parts = loads_definitions_in_parts(text)
    except DefinitionError:
        pass
    else:
        validate_definitions(parts.definitions, channels=("email", "sms", "push", "webhook"),
                             unread=parts.unread)
    try:
        loaded = loads_definitions(text)
        problems = validate_definitions(loaded, channels=("email", "sms", "push", "webhook"))
    except DefinitionError:
        return
    if problems:
        return
    # Valid definitions are what publish stores: a restarted engine reads the same back.
    again = loads_definitions(dumps_definitions(loaded))
    assert again == loaded
    assert validate_definitions(again, channels=("email", "sms", "push", "webhook")) == []
