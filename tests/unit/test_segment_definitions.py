"""History conditions, profile rules and segment triggers as definitions: builders, JSON,
validation, and what each compiles to."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cjo import (
    Definitions,
    ExitCriterion,
    Journey,
    ProfileRule,
    Segment,
    SegmentTrigger,
    Send,
    attr,
    bucket,
    ends_with,
    first_performed,
    has_any,
    in_segment,
    inactive,
    last_performed,
    matches,
    maximum,
    now,
    performed,
    prop,
    starts_with,
    total,
    validate_definitions,
)
from cjo.conditions import compile_condition
from cjo.errors import DefinitionError
from cjo.limits import MAX_PATTERN_LENGTH
from cjo.model.content import ContentItem, Variant
from cjo.segments.history import Aggregate, Performed, TextMatch
from cjo.segments.rules import AttributeUpdate, add, apply_updates, assign, copy, stamp
from cjo.segments.tracking import plan_tracks, stream_key
from cjo.serialization import dumps_definitions, loads_definitions

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _problems(*segments: Segment, **fields: Any) -> list[str]:
    defs = Definitions(segments=segments, **fields)
    return [f"{p.location}: {p.message}" for p in validate_definitions(defs)]


def test_builders_make_plain_data() -> None:
    c = performed("purchase", where=prop("total") > 10).at_least(3).within(days=30)
    assert c == Performed("purchase", prop("total") > 10, "ge", 3, window=30 * DAY)
    assert performed("x").between(T0, None) == Performed("x", since=T0)
    assert (total("purchase", "amount").within(days=7) > 500) == Aggregate(
        "purchase", "amount", "sum", "gt", 500, window=7 * DAY)
    assert starts_with(attr("email"), "a") == TextMatch(attr("email").ref, "prefix", "a")
    assert bucket("s").below(10).high == 10
    assert bucket("s").at_or_above(90).low == 90


def test_every_new_kind_round_trips_through_json_and_validates() -> None:
    segments = (
        Segment("a", performed("purchase").exactly(2).between(T0, T0 + DAY)
                & ~last_performed("login").within(days=3)),
        Segment("b", first_performed("signup").before(T0) | inactive("purchase", days=14)),
        Segment("c", (maximum("purchase", "amount") >= 100) & has_any(attr("tags"), ["x", 1])
                & matches(attr("email"), r"^a.*@b\.com$") & bucket("h").between(5, 10)),
    )
    rule = ProfileRule("r", "purchase", (stamp("last_at"), add("spend", prop="total"),
                                        AttributeUpdate.increment("orders"),
                                        copy("sku", prop="item.sku"), assign("buyer", True)),
                       where=prop("total") > 0)
    journey = Journey(id="j", trigger=SegmentTrigger("b", on="exit"), entry="s",
                      steps={"s": Send("n", "email")},
                      exit_criteria=(ExitCriterion("back", segment="b", on="enter"),))
    defs = Definitions(journeys=(journey,), segments=segments, profile_rules=(rule,),
                       content=(ContentItem("n", variants=(Variant("email", {"subject": "x", "text": "x"}),)),))
    assert loads_definitions(dumps_definitions(defs)) == defs
    assert validate_definitions(defs) == []


@pytest.mark.parametrize(("condition", "message"), [
    (matches(attr("e"), "("), "not a regular expression"),
    (matches(attr("e"), r"^(a+)+$"), "exponential time"),
    (matches(attr("e"), r"(x|xy)*z"), "exponential time"),
    (matches(attr("e"), r"((ab)*c)+"), "exponential time"),
    (matches(attr("e"), "a" * (MAX_PATTERN_LENGTH + 1)), f"the limit is {MAX_PATTERN_LENGTH}"),
    (starts_with(prop("e"), "a"), "cannot read event.e"),
    (Performed("x", window=DAY, since=T0), "not both"),
    (performed("x").between(T0 + DAY, T0), "must be before until"),
    (performed("x").at_least(-1), "0 or more"),
    (performed("x", where=performed("y")), "cannot read the customer's history"),
    (performed("x", where=attr("plan") == "pro"), "profile.plan cannot be used in an event filter"),
    # An event filter sees the event alone: these would never hold there.
    (performed("x", where=in_segment("s")), "in_segment('s') cannot be used in an event filter"),
    (total("x", "v", where=bucket("h").below(50)) > 1, "bucket('h') cannot be used in an event"),
    (performed("x", where=prop("at") < now()), "now() cannot be used in an event filter"),
    (last_performed("x").before(datetime(2026, 1, 1)), "timezone-aware"),
    (inactive("x", timedelta(0)), "must be positive"),
    (performed("x").within(days=4000), "longer than the limit"),
    (bucket("s").between(50, 200), "buckets must satisfy"),
    (ends_with(attr("e"), 5), "must be a string"),  # type: ignore[arg-type]
    (total("x", "v") > float("nan"), "finite number"),  # noqa: PLW0177
    (maximum("x", "v").within(days=1) <= float("inf"), "finite number"),
    (total("x", "v") >= 10**400, "finite number"),  # past the largest float
])
def test_bad_conditions_are_reported_with_their_segment(condition: Any, message: str) -> None:
    problems = _problems(Segment("s", condition))
    assert len(problems) == 1 and problems[0].startswith("segment 's'"), problems
    assert message in problems[0]


def test_a_profile_rule_filter_cannot_read_segments() -> None:
    rule = ProfileRule("r", "purchase", (stamp("at"),), where=in_segment("vip"))
    problems = _problems(Segment("vip", attr("plan") == "pro"), profile_rules=(rule,))
    assert problems == ["profile rule 'r': in_segment('vip') cannot be used in a profile rule: "
                        "it reads only the event's properties"]


def test_segment_triggers_exits_and_rules_are_checked() -> None:
    journey = Journey(id="j", trigger=SegmentTrigger("nope"), entry="s",
                      steps={"s": Send("n", "email")},
                      exit_criteria=(ExitCriterion("x", event="e", segment="gone"),))
    rules = (ProfileRule("r", "purchase", ()),
             ProfileRule("r", "purchase", (AttributeUpdate("a", "add"), copy("b", prop=""))))
    problems = _problems(journeys=(journey,), profile_rules=rules,
                         content=(ContentItem("n", variants=(Variant("email", {"subject": "x", "text": "x"}),)),))
    # Duplicate ids first, of every kind at once (as one publish call reports them).
    assert problems == [
        "profile rule 'r': defined 2 times; profile rule ids must be unique",
        "journey 'j' v1 / exit criterion 'x': a segment criterion takes no event or where",
        "journey 'j' v1 / exit criterion 'x': segment 'gone' does not exist",
        "journey 'j' v1 / trigger: segment 'nope' does not exist",
        "profile rule 'r': has no updates",
        "profile rule 'r': add to 'a' needs a prop or a finite number",
        "profile rule 'r': copy into 'b' needs a prop",
    ]


@pytest.mark.parametrize("build", [
    lambda: performed("purchase").within(days="30"),
    lambda: performed("purchase").at_least(2).within(hours=float("nan")),
    lambda: last_performed("purchase").within(days=10**12),
    lambda: first_performed("purchase").within(minutes=[5]),
    lambda: total("purchase", "amount").within(seconds="60"),
    lambda: inactive("purchase", days="14"),
], ids=["str days", "nan hours", "too many days", "list", "aggregate", "inactive"])
def test_a_window_that_is_not_a_number_of_days_is_a_definition_error(build: Any) -> None:
    with pytest.raises(DefinitionError, match=(
        "a window or quiet span is a number of days, hours, minutes or seconds"
    )):
        build()


@pytest.mark.parametrize(("build", "message"), [
    (lambda: starts_with("email", "a"), "starts_with reads a field such as attr('email'), got "
                                        "str 'email'"),
    (lambda: matches(None, "a"), "matches reads a field such as attr('email'), got None"),
    (lambda: has_any("tags", ["a"]), "has_any reads a field such as attr('tags'), got str"),
    (lambda: has_any(attr("tags"), 5), "has_any takes a list of values, got int 5"),
    (lambda: has_any(attr("tags"), "vip"), "has_any takes a list of values, got str 'vip'"),
], ids=["text field", "regex field", "list field", "not a list", "a string"])
def test_a_text_or_list_condition_on_something_else_is_a_definition_error(
    build: Any, message: str,
) -> None:
    with pytest.raises(DefinitionError, match=re.escape(message)):
        build()


@pytest.mark.parametrize("amount", [float("inf"), 10**400], ids=["inf", "past float"])
def test_a_profile_rule_adds_only_a_finite_number(amount: float) -> None:
    rules = (ProfileRule("r", "purchase", (add("a", amount),)),)
    assert _problems(profile_rules=rules) == [
        "profile rule 'r': add to 'a' needs a prop or a finite number"
    ]
    # A sum too large for a float leaves the attribute as it is: it could not be stored.
    assert apply_updates((add("a", prop="v"),), {"a": 1e308}, {"v": 1e308}, T0) == {}


def test_safe_patterns_pass_the_repetition_check() -> None:
    for pattern in (r"^[a-z]+@(acme|initech)\.com$", r"(ab)+", r"[(+]*x", r"\(a+\)+",
                    r"^\d{3}-\d{4}$", r"(a|b)?c"):
        assert _problems(Segment("s", matches(attr("e"), pattern))) == [], pattern


def test_profile_rule_updates() -> None:
    updates = (stamp("at"), add("spend", prop="total"), add("n", 1), copy("sku", prop="sku"),
               add("bad", prop="sku"), copy("missing", prop="nope"))
    assert apply_updates(updates, {"at": T0 + DAY, "spend": 10}, {"total": 5, "sku": "A"},
                         T0) == {"spend": 15, "n": 1, "sku": "A"}
    assert apply_updates(updates, {"at": T0, "spend": "x"}, {"total": 5}, T0 + DAY) == {
        "at": T0 + DAY, "n": 1
    }


def test_tracks_keep_only_what_conditions_read() -> None:
    shoes = prop("category") == "shoes"
    defs = Definitions(segments=(
        Segment("a", performed("view", where=shoes).at_least(2).within(days=7)),
        Segment("b", performed("view", where=shoes).at_least(5).within(days=3)),
        Segment("c", total("purchase", "amount").within(days=30) > 5),
        Segment("d", performed("purchase").between(T0, None)),
    ))
    specs = plan_tracks(defs)
    views = specs[stream_key(performed("view", where=shoes))]
    assert (views.horizon, views.keep) == (7 * DAY, 6)
    amounts = specs["purchase|amount"]
    assert (amounts.horizon, amounts.keep) == (30 * DAY, None)
    assert specs["purchase"].horizon is None and len(specs["purchase"].ranges) == 1
    assert stream_key(performed("view", where=shoes)).startswith("view#")
    # Outside a decision (no record at hand) history reads nothing.
    assert compile_condition(performed("x").never())(_Bare()) is False


class _Bare:
    profile: dict[str, Any] = {}
    event: dict[str, Any] = {}
    context: dict[str, Any] = {}

    def in_segment(self, segment_id: str) -> bool:
        return False
