"""Hostile and broken input, as a new user would send it: one test per finding.

Each finding was seen in a real run: a template that never returns, a definition that cannot be
loaded back, a value that differs by storage, an exception from outside ``cjo.errors``. These
tests cover the parts decided at publish and at intake (templates, definitions, event and
profile values, ids); the storage adapters and the decision core have their own.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import attrs
import pytest

from cjo import (
    ContentItem,
    Definitions,
    Event,
    Exit,
    Journey,
    ProfileUpdate,
    Send,
    Split,
    SplitPath,
    Variant,
    Wait,
    attr,
    loads_definitions,
    validate_definitions,
)
from cjo.conditions import Condition, Not
from cjo.content.render import Renderer
from cjo.errors import CjoError, DefinitionError, InvalidEventError, RenderLimitError
from cjo.limits import Limits
from tests.helpers import make_engine

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
LOOP = "{% for i in (1..1000000000000) %}{% endfor %}"
DOUBLING = ('{% assign s = "xy" %}{% for i in (1..64) %}{% assign s = s | append: s %}'
            "{% endfor %}{{ s }}")


def content(body: str, item_id: str = "promo") -> ContentItem:
    return ContentItem(item_id, (Variant("email", {"subject": "Hi", "text": body}),))


def send_journey(item_id: str = "promo", **kwargs: object) -> Journey:
    steps = {"send": Send(item_id, "email", next="end"), "end": Exit()}
    return Journey("j", "send", steps, **kwargs)  # type: ignore[arg-type]


def refused_at_publish(*journeys: Journey, items: tuple[ContentItem, ...] = ()) -> str:
    """Publish through an engine, as a host would; return the DefinitionError's text."""
    engine, _, _ = make_engine()
    with pytest.raises(DefinitionError) as caught:
        engine.publish(journeys=journeys, content=items or (content("Hi"),))
    return str(caught.value)


# --- templates without limits ------------------------------------------------------------------


@pytest.mark.parametrize("body", [LOOP, DOUBLING])
def test_a_template_that_would_never_return_is_refused_at_publish(body: str) -> None:
    started = time.perf_counter()
    text = refused_at_publish(send_journey(), items=(content(body),))
    assert time.perf_counter() - started < 2
    assert "content 'promo' / variant email" in text
    assert "field 'text' is over a template limit" in text


def test_a_loop_sized_by_customer_data_fails_that_one_send() -> None:
    # Publish cannot see it (the sample has no data); the render at send time stops it.
    body = "{% for i in (1..profile.n) %}x{% endfor %}"
    engine, _, channels = make_engine()
    engine.publish(journeys=[send_journey()], content=[content(body)])
    engine.identify("c1", {"n": 10**7})
    started = time.perf_counter()
    engine.start_journey("j", "c1")
    assert time.perf_counter() - started < 2
    assert channels["email"].messages == []
    renderer = Renderer()
    item = content(body)
    with pytest.raises(RenderLimitError, match="content 'promo' / email / field 'text'"):
        renderer.render(item, item.variants[0], {"profile": {"n": 10**7}})


# --- deep or huge definitions ------------------------------------------------------------------


def deep_condition(depth: int) -> Condition:
    condition: Condition = attr("x") == 1
    for _ in range(depth):
        condition = Not(condition)
    return condition


@pytest.mark.parametrize("depth", [450, 5_000])
def test_a_deeply_nested_condition_is_refused_at_publish(depth: int) -> None:
    text = refused_at_publish(send_journey(audience=deep_condition(depth)))
    assert "nest more than 32 levels" in text


def deep_condition_json(depth: int) -> str:
    # Written as text: json.dumps itself recurses once per level.
    condition = ('{"kind": "not", "condition": ' * depth
                 + '{"kind": "exists", "ref": "profile.x"}' + "}" * depth)
    return '{"segments": [{"id": "s", "condition": ' + condition + "}]}"


def load_and_validate(text: str) -> str:
    """What a restarted engine does with stored definitions: the problems, as text."""
    try:
        problems = validate_definitions(loads_definitions(text))
    except DefinitionError as exc:
        return str(exc)
    return "\n".join(str(p) for p in problems)


def test_a_condition_nested_past_the_limit_in_json_is_a_definition_error() -> None:
    assert "nest more than 32 levels" in load_and_validate(deep_condition_json(60))


# Loading checks nesting before parsing and before structuring, both of which recurse once
# per level: without that, 500 levels gave "unknown error (maximum recursion depth exceeded)",
# 5000 a raw RecursionError.
@pytest.mark.parametrize("depth", [500, 5_000])
def test_json_nested_hundreds_deep_is_a_clear_definition_error(depth: int) -> None:
    assert "definitions nest" in load_and_validate(deep_condition_json(depth))


def _chain(n: int) -> Definitions:
    steps: dict[str, object] = {}
    for i in range(n):
        following = f"s{i + 1}" if i < n - 1 else None
        steps[f"s{i}"] = (Send("promo", "email", next=following) if i % 2
                          else Wait(HOUR, next=following))
    journey = Journey("big", "s0", steps)
    return Definitions(journeys=(journey,), content=(content("Hi"),))


def _calls(fn: Callable[[], object]) -> int:
    """How many functions (Python and built-in) ``fn`` calls: a measure of work that the
    machine's load does not change, unlike seconds."""
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


def test_ten_thousand_steps_are_refused_and_validation_grows_linearly() -> None:
    problems = validate_definitions(_chain(10_000))
    assert [p.message for p in problems] == [
        "has 10000 steps; the limit is 1000 (split it into several journeys, or raise "
        "Limits.max_steps_per_journey)"
    ]
    # Within a raised limit, a journey three times as long costs about three times the work
    # (nine times, were validation quadratic in the steps).
    limits = Limits(max_steps_per_journey=10_000)
    small, large = _chain(1_000), _chain(3_000)
    assert validate_definitions(large, limits=limits) == []
    ratio = (_calls(lambda: validate_definitions(large, limits=limits))
             / _calls(lambda: validate_definitions(small, limits=limits)))
    assert ratio < 4, ratio


def test_a_long_chain_without_a_wait_is_refused_at_publish() -> None:
    steps: dict[str, object] = {f"s{i}": Send("promo", "email", next=f"s{i + 1}")
                                for i in range(150)}
    steps["s150"] = Exit()
    text = refused_at_publish(Journey("chain", "s0", steps))
    assert "151 steps run one after another without a wait" in text


# --- catch-up storms: waits too short to mean anything -----------------------------------------


@pytest.mark.parametrize("wait", [timedelta(seconds=1), timedelta(microseconds=1)])
def test_a_wait_shorter_than_a_minute_is_refused_at_publish(wait: timedelta) -> None:
    steps = {"a": Send("promo", "email", next="w"), "w": Wait(wait, next="a")}
    text = refused_at_publish(Journey("storm", "a", steps))
    assert "is shorter than the minimum wait 1m" in text


# --- values that differ by storage -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (Decimal("99.90"), "is a Decimal (Decimal('99.90')); pass a float, or a str"),
        (float("nan"), "is nan; only finite numbers can be stored"),
        (float("inf"), "is inf; only finite numbers can be stored"),
        (-float("inf"), "is -inf; only finite numbers can be stored"),
        (2**63, "outside the stored integer range"),
        ({1, 2}, "is a builtins.set, which cannot be stored"),
        (b"bytes", "is a builtins.bytes, which cannot be stored"),
        (datetime(2026, 1, 1), "is a naive datetime"),
        ([{"deep": [Decimal(1)]}], "event property 'total[0].deep[0]' is a Decimal"),
        # The shape storage keeps instants in: it would come back as an instant, or not at all.
        ({"$dt": 5}, 'is an object whose only key is "$dt"'),
        ([{"x": {"$dt": None}}], "event property 'total[0].x' is an object whose only key"),
    ],
)
def test_values_that_cannot_be_stored_alike_are_refused(value: object, message: str) -> None:
    with pytest.raises(InvalidEventError, match=re.escape(message)):
        Event("c1", "checkout", T0, {"total": value})
    with pytest.raises(InvalidEventError, match="profile attribute 'total"):
        ProfileUpdate("c1", {"total": value})


def test_an_object_with_the_instant_tag_and_more_keys_is_kept_as_it_is() -> None:
    from cjo.abc import CustomerState
    from cjo.model.events import Profile
    from cjo.storage.codec import decode_state, encode_state

    update = ProfileUpdate("c1", {"meta": {"$dt": 5, "note": "x"}})
    state = CustomerState("c1", T0, profile=Profile("c1", dict(update.attributes)))
    assert decode_state(encode_state(state), "c1").profile == state.profile


def test_accepted_values_are_stored_as_plain_values() -> None:
    when = datetime(2026, 1, 1, 12, tzinfo=timezone_plus_two())
    event = Event("c1", "checkout", T0, {"items": ("a", "b"), "at": when, "n": 2**63 - 1})
    assert event.properties == {
        "items": ["a", "b"], "at": datetime(2026, 1, 1, 10, tzinfo=UTC), "n": 2**63 - 1,
    }
    assert event.properties["at"].tzinfo is UTC


def timezone_plus_two() -> object:
    from datetime import timezone

    return timezone(timedelta(hours=2))


# --- out-of-range definitions ------------------------------------------------------------------


@pytest.mark.parametrize("version", [2**40, 2**63])
def test_a_journey_version_past_a_32_bit_integer_is_refused(version: int) -> None:
    text = refused_at_publish(send_journey(version=version))
    assert "version must be a whole number from 1 to 2147483647" in text


def test_a_wait_of_a_billion_days_is_refused() -> None:
    steps = {"a": Wait(timedelta(days=999_999_999), next="b"), "b": Exit()}
    text = refused_at_publish(Journey("long", "a", steps))
    assert "is longer than the limit of 3650d" in text


def test_an_infinite_split_weight_is_refused() -> None:
    split = Split((SplitPath("a", float("inf"), "end"), SplitPath("b", 1.0, "end")))
    text = refused_at_publish(Journey("ab", "split", {"split": split, "end": Exit()}))
    assert "path 'a' has weight inf; weights must be finite" in text


# --- exceptions outside cjo.errors -------------------------------------------------------------


def test_a_lone_surrogate_in_an_id_is_an_invalid_event_error() -> None:
    with pytest.raises(InvalidEventError, match="lone surrogate"):
        Event("c\ud800", "checkout", T0)
    with pytest.raises(InvalidEventError, match="lone surrogate"):
        Event("c1", "checkout", T0, {"name": "\udfff"})


def test_a_property_dict_that_contains_itself_is_an_invalid_event_error() -> None:
    properties: dict[str, object] = {"a": 1}
    properties["self"] = properties
    with pytest.raises(InvalidEventError, match="contains itself"):
        Event("c1", "checkout", T0, properties)
    nested: list[object] = []
    nested.append(nested)
    with pytest.raises(InvalidEventError, match="contains itself"):
        ProfileUpdate("c1", {"list": nested})


def test_more_text_than_a_record_may_hold_is_an_invalid_event_error() -> None:
    from cjo.limits import MAX_TEXT

    # One 50 MB property, flat: what the fast path checks.
    with pytest.raises(InvalidEventError, match=f"more than {MAX_TEXT} characters of text"):
        Event("c1", "checkout", T0, {"note": "x" * 50_000_000})
    # Names count too, and text spread over many values and levels.
    many = {f"k{i:07d}" * 10: "y" * 100 for i in range(10_000)}
    with pytest.raises(InvalidEventError, match="characters of text"):
        Event("c1", "checkout", T0, many)
    with pytest.raises(InvalidEventError, match=r"profile attribute 'a\[1\]': more than"):
        ProfileUpdate("c1", {"a": [{"b": "z" * 600_000}, "\u00e9" * 600_000]})
    # Up to the limit, all of it is kept.
    name = "note"
    kept = Event("c1", "checkout", T0, {name: "x" * (MAX_TEXT - len(name))})
    assert len(kept.properties[name]) == MAX_TEXT - len(name)
    assert ProfileUpdate("c1", {"a": ["\u00e9" * (MAX_TEXT - 1)]}).attributes["a"][0]


def test_a_non_string_customer_id_is_an_invalid_event_error() -> None:
    with pytest.raises(InvalidEventError, match="customer_id must be a non-empty string"):
        Event(42, "checkout", T0)  # type: ignore[arg-type]


# --- odd ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"customer_id": "c\x00"}, "customer_id contains a NUL character at position 1"),
        ({"event_id": "\x00"}, "event_id contains a NUL character"),
        ({"customer_id": "   "}, "customer_id must not be only whitespace"),
        ({"name": ""}, "event name must be a non-empty string"),
        ({"name": "\t"}, "event name must not be only whitespace"),
        ({"customer_id": "x" * 1_000_000}, "customer_id is 1000000 characters long; ids are "
                                            "at most 256"),
    ],
)
def test_odd_ids_are_refused_before_anything_is_stored(
    kwargs: dict[str, object], message: str
) -> None:
    base: dict[str, object] = {"customer_id": "c1", "name": "checkout", "timestamp": T0}
    base.update(kwargs)
    with pytest.raises(InvalidEventError, match=message):
        Event(**base)  # type: ignore[arg-type]


def test_an_event_id_of_none_generates_one_as_leaving_it_out_does() -> None:
    given = Event("c1", "checkout", T0, event_id=None)
    left_out = Event("c1", "checkout", T0)
    assert len(given.event_id) == len(left_out.event_id) == 32
    assert given.event_id != left_out.event_id
    # The generated id is kept: rebuilding the event from its fields (as from JSON) keeps it.
    assert Event(**attrs.asdict(given)) == given
    assert attrs.evolve(given, name="paid").event_id == given.event_id


def test_odd_ids_in_profile_updates_are_refused() -> None:
    for customer_id in ("", " ", "c\x00", "x" * 257, "\ud800"):
        with pytest.raises(InvalidEventError):
            ProfileUpdate(customer_id)
    with pytest.raises(InvalidEventError, match="profile timezone"):
        ProfileUpdate("c1", timezone="Europe/\x00Paris")


def test_an_id_of_256_characters_is_fine() -> None:
    assert Event("x" * 256, "checkout", T0).customer_id == "x" * 256


# --- one family of errors ----------------------------------------------------------------------


def test_every_refusal_here_is_a_cjo_error() -> None:
    for error in (DefinitionError, InvalidEventError, RenderLimitError):
        assert issubclass(error, CjoError)


# --- the cost of checking ----------------------------------------------------------------------


def test_checking_a_flat_event_costs_a_few_builtin_calls_per_property() -> None:
    # Every event's properties are checked at intake: a flat one must cost a few built-in
    # calls per property (type checks), not a walk in Python.
    from cjo.model.events import check_values

    properties = {"total": 99.9, "sku": "abc-123", "qty": 3, "currency": "EUR", "gift": False,
                  "note": None, "page": "/checkout", "ms": 1234}
    per_property = _calls(lambda: check_values(properties, "p", "p")) / len(properties)
    assert per_property <= 4, per_property


@pytest.mark.parametrize("at", [datetime(9000, 1, 1, tzinfo=UTC),
                                datetime(1899, 12, 31, 23, 59, tzinfo=UTC)])
def test_a_timestamp_out_of_range_is_refused_naming_the_bounds_exactly(at: datetime) -> None:
    """The range is half-open: 9000-01-01 itself is out, which "1900 to 9000" did not say."""
    with pytest.raises(InvalidEventError, match=re.escape(
        "outside the accepted range: from 1900-01-01 up to, not including, 9000-01-01 (UTC)"
    )):
        Event("c1", "x", at)
