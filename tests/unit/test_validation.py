"""validate_definitions: one test per check, each pinning the location and the message."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import attrs
import pytest

from cjo import Engine, FrequencyCap, ManualClock, RecordingChannel, ResumeRule, VersionChange
from cjo.conditions import And, Compare, Condition, Ref, attr, ctx, in_segment, prop
from cjo.errors import DefinitionError, Problem
from cjo.model.content import ContentItem, Variant
from cjo.model.definitions import Definitions
from cjo.model.journey import ExitCriterion, Goal, Journey, ReentryPolicy
from cjo.model.segments import Segment
from cjo.model.steps import (
    Branch,
    Case,
    Exit,
    Send,
    Split,
    SplitPath,
    Step,
    UpdateProfile,
    Wait,
    WaitForEvent,
)
from cjo.model.taxonomy import Category, Taxonomy
from cjo.model.triggers import EventTrigger
from cjo.validation import validate_definitions

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
CHANNELS = ("email", "sms")
J = "journey 'j' v1"  # the location of the small journeys built by journey()


def abandoned_cart() -> Definitions:
    """A realistic, valid set of definitions that uses every kind of step."""
    cart = Journey(
        id="cart",
        name="Abandoned cart",
        entry="wait",
        trigger=EventTrigger("cart_abandoned", where=prop("total") > 0),
        audience=attr("email").exists() & ~in_segment("unsubscribed"),
        reentry=ReentryPolicy.after_cooldown(DAY, instance_key="cart_id"),
        exit_criteria=(
            ExitCriterion("purchased", event="order_completed"),
            ExitCriterion("unsubscribed", where=attr("unsubscribed") == True),  # noqa: E712
        ),
        goal=Goal("order_completed", within=timedelta(days=7)),
        max_lifetime=timedelta(days=14),
        timezone="Europe/Paris",
        tags=("lifecycle/recovery",),
        steps={
            "wait": Wait(HOUR, next="watch"),
            "watch": WaitForEvent(
                "cart_updated", timeout=4 * HOUR, on_event="wait", on_timeout="branch",
                where=prop("items") > 0,
            ),
            "branch": Branch(
                (
                    Case(in_segment("unsubscribed"), "stop"),
                    Case((ctx("total") >= 100) & (attr("plan") == "pro"), "vip_email"),
                ),
                default="email",
            ),
            "vip_email": Send("cart_vip", "email", next="split", tags=("channel/email",)),
            "email": Send("cart_reminder", "email", next="split"),
            "split": Split((SplitPath("sms", 0.5, "sms"), SplitPath("control", 0.5))),
            "sms": Send("cart_reminder", "sms", next="mark"),
            "mark": UpdateProfile(set={"cart_reminded": True}, unset=("cart_stale",)),
            "stop": Exit("unsubscribed"),
        },
    )
    return Definitions(
        journeys=(cart,),
        segments=(
            Segment("unsubscribed", attr("unsubscribed") == True),  # noqa: E712
            Segment("big_spenders", (attr("ltv") >= 1000) & ~in_segment("unsubscribed"),
                    tags=("value",)),
        ),
        content=(
            ContentItem("cart_reminder", (
                Variant("email", {"subject": "You left {{ event.items }} items",
                                  "text": "{% if profile.name %}Hi {{ profile.name }}{% endif %}"}),
                Variant("email", {"subject": "Votre panier", "text": "Bonjour"}, locale="fr"),
                Variant("sms", {"text": "Your cart: {{ event.url | default: 'shop' }}"}),
            ), tags=("lifecycle",)),
            ContentItem("cart_vip", (Variant("email", {"subject": "A gift", "text": "..."}),)),
        ),
        taxonomy=Taxonomy((
            Category("lifecycle", children=(Category("recovery"),)),
            Category("channel", children=(Category("email"), Category("sms"))),
            Category("value"),
        )),
    )


def journey(steps: Mapping[str, Step], entry: str = "a", **fields: Any) -> Journey:
    return Journey(id="j", entry=entry, steps=steps, **fields)


def definitions(*journeys: Journey, **fields: Any) -> Definitions:
    """Definitions around small journeys: content 'c' has an email variant; segment 's' exists."""
    base: dict[str, Any] = {
        "segments": (Segment("s", attr("x") == 1),),
        "content": (ContentItem("c", (Variant("email", {"subject": "hi", "text": "hi"}),)),),
    }
    return Definitions(journeys=journeys, **{**base, **fields})


def problems_of(
    *journeys: Journey, channels: tuple[str, ...] | None = CHANNELS, **fields: Any
) -> list[Problem]:
    return validate_definitions(definitions(*journeys, **fields), channels=channels)


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, problems
    return problems[0]


def with_cart(**changes: Any) -> Definitions:
    valid = abandoned_cart()
    return attrs.evolve(valid, journeys=(attrs.evolve(valid.journeys[0], **changes),))


# --- the whole ---------------------------------------------------------------------------------


def test_a_valid_abandoned_cart_has_no_problems() -> None:
    assert validate_definitions(abandoned_cart(), channels=CHANNELS) == []
    assert validate_definitions(abandoned_cart()) == []


def test_empty_definitions_are_valid() -> None:
    assert validate_definitions(Definitions()) == []


def test_three_distinct_mistakes_give_exactly_three_problems() -> None:
    valid = abandoned_cart()
    cart = valid.journeys[0]
    steps = {**cart.steps, "sms": Send("cart_vip", "sms", next="mark")}
    broken = attrs.evolve(
        valid,
        journeys=(attrs.evolve(cart, steps=steps),),
        segments=(*valid.segments, Segment("recent", prop("days") < 3)),
        content=(*valid.content, ContentItem("promo", (Variant("email", {"subject": "{{ x", "text": "t"}),))),
    )
    problems = validate_definitions(broken, channels=CHANNELS)
    assert [p.location for p in problems] == [
        "journey 'cart' v1 / step 'sms'",
        "segment 'recent'",
        "content 'promo' / variant email",
    ]
    assert problems[0].message == "content 'cart_vip' has no variant for channel 'sms'"
    assert "event.days cannot be used in a segment" in problems[1].message
    assert "field 'subject' is not a valid Liquid template" in problems[2].message


def test_a_dangling_reference_also_reports_what_it_cut_off() -> None:
    valid = abandoned_cart()
    cart = valid.journeys[0]
    steps = {**cart.steps, "wait": Wait(HOUR, next="wach")}
    broken = attrs.evolve(valid, journeys=(attrs.evolve(cart, steps=steps),))
    problems = validate_definitions(broken)
    assert problems[0] == Problem("journey 'cart' v1 / step 'wait'",
                                  "next refers to missing step 'wach'")
    unreachable = [p.location.rpartition(" / ")[2] for p in problems[1:]]
    assert unreachable == [f"step {s!r}" for s in cart.steps if s != "wait"]
    assert all("unreachable" in p.message for p in problems[1:])


def test_three_mistakes_that_do_not_cascade_give_exactly_three_problems() -> None:
    broken = with_cart(version=0, timezone="Mars/Olympus", goal=Goal("order", within=-HOUR))
    problems = validate_definitions(broken, channels=CHANNELS)
    assert problems == [
        Problem("journey 'cart' v0", "version must be 1 or more, got 0"),
        Problem("journey 'cart' v0 / goal", "within must be positive, got -1h"),
        Problem("journey 'cart' v0",
                "timezone 'Mars/Olympus' is not a known IANA time zone"),
    ]


# --- duplicates --------------------------------------------------------------------------------


def test_duplicate_journey_id_and_version() -> None:
    valid = abandoned_cart()
    cart = valid.journeys[0]
    twice = attrs.evolve(valid, journeys=(cart, cart, attrs.evolve(cart, version=2)))
    problem = only(validate_definitions(twice))
    assert problem.location == "journey 'cart' v1"
    assert "defined 2 times" in problem.message
    assert "(id, version) must be unique" in problem.message


def test_duplicate_segment_id() -> None:
    valid = abandoned_cart()
    twice = attrs.evolve(valid, segments=(*valid.segments, Segment("big_spenders", attr("x") > 1)))
    problem = only(validate_definitions(twice))
    assert problem == Problem("segment 'big_spenders'",
                              "defined 2 times; segment ids must be unique")


def test_duplicate_content_id() -> None:
    valid = abandoned_cart()
    twice = attrs.evolve(valid, content=(*valid.content, valid.content[1]))
    problem = only(validate_definitions(twice))
    assert problem == Problem("content 'cart_vip'", "defined 2 times; content ids must be unique")


# --- journey graph -----------------------------------------------------------------------------


def test_entry_step_must_exist() -> None:
    problem = only(problems_of(journey({"a": Exit()}, entry="start")))
    assert problem == Problem(J, "entry step 'start' does not exist")


@pytest.mark.parametrize(
    ("step", "label"),
    [
        (Send("c", "email", next="ghost"), "next"),
        (Wait(HOUR, next="ghost"), "next"),
        (WaitForEvent("e", HOUR, on_event="ghost"), "on_event"),
        (WaitForEvent("e", HOUR, on_timeout="ghost"), "on_timeout"),
        (Branch((Case(attr("x") == 1), Case(attr("x") == 2, "ghost"))), "case 2"),
        (Branch((Case(attr("x") == 1),), default="ghost"), "default"),
        (Split((SplitPath("A", 1.0), SplitPath("B", 1.0, "ghost"))), "path 'B'"),
        (UpdateProfile(set={"x": 1}, next="ghost"), "next"),
    ],
)
def test_dangling_reference_names_its_step_and_the_missing_id(step: Step, label: str) -> None:
    problem = only(problems_of(journey({"a": step})))
    assert problem == Problem(f"{J} / step 'a'", f"{label} refers to missing step 'ghost'")


def test_unreachable_step() -> None:
    steps: dict[str, Step] = {
        "a": Wait(HOUR, next="b"), "b": Exit(), "orphan": Send("c", "email", next="b")
    }
    problem = only(problems_of(journey(steps)))
    assert problem.location == f"{J} / step 'orphan'"
    assert "unreachable" in problem.message
    assert "entry step 'a'" in problem.message


def test_loop_without_a_wait_is_an_infinite_loop() -> None:
    steps: dict[str, Step] = {
        "a": Wait(HOUR, next="b"),
        "b": Send("c", "email", next="d"),
        "d": UpdateProfile(next="e"),
        "e": Branch((Case(attr("x") == 1, "b"),), default="f"),
        "f": Split((SplitPath("A", 1.0, "b"),)),
    }
    problem = only(problems_of(journey(steps)))
    assert problem.location == f"{J} / step 'b'"
    assert "loop without a wait: 'b' -> 'd' -> 'e' -> 'b' would repeat forever" in problem.message


def test_step_leading_straight_back_to_itself_is_an_infinite_loop() -> None:
    problem = only(problems_of(journey({"a": Branch((Case(attr("x") == 1, "a"),))})))
    assert problem.location == f"{J} / step 'a'"
    assert "'a' -> 'a'" in problem.message


def test_loop_through_a_wait_is_fine() -> None:
    steps: dict[str, Step] = {
        "a": Send("c", "email", next="w"),
        "w": Wait(DAY, next="x"),
        "x": WaitForEvent("e", HOUR, on_event="a", on_timeout="a"),
    }
    assert problems_of(journey(steps)) == []


# --- steps -------------------------------------------------------------------------------------


def test_send_content_must_exist() -> None:
    problem = only(problems_of(journey({"a": Send("nope", "email")})))
    assert problem == Problem(f"{J} / step 'a'", "content 'nope' does not exist")


def test_send_content_needs_a_variant_for_the_channel() -> None:
    problem = only(problems_of(journey({"a": Send("c", "sms")})))
    assert problem == Problem(f"{J} / step 'a'", "content 'c' has no variant for channel 'sms'")


def test_send_channel_must_be_registered_when_channels_are_given() -> None:
    content = (ContentItem("c", (Variant("push", {"title": "hi", "body": "hi"}),)),)
    j = journey({"a": Send("c", "push")})
    problem = only(problems_of(j, content=content))
    assert problem.location == f"{J} / step 'a'"
    assert "channel 'push' is not registered" in problem.message
    assert "email, sms" in problem.message
    assert problems_of(j, content=content, channels=None) == []


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (Wait(timedelta(0)), "duration must be positive, got 0s"),
        (Wait(-HOUR), "duration must be positive, got -1h"),
        (WaitForEvent("e", timedelta(0)), "timeout must be positive, got 0s"),
        (WaitForEvent("e", timedelta(seconds=-90)), "timeout must be positive, got -1m30s"),
    ],
)
def test_wait_durations_must_be_positive(step: Step, message: str) -> None:
    assert only(problems_of(journey({"a": step}))) == Problem(f"{J} / step 'a'", message)


def test_split_needs_a_path() -> None:
    problem = only(problems_of(journey({"a": Split(())})))
    assert problem == Problem(f"{J} / step 'a'", "a split needs at least one path")


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan")])
def test_split_weights_must_be_positive(weight: float) -> None:
    problem = only(problems_of(journey({"a": Split((SplitPath("A", 1), SplitPath("B", weight)))})))
    assert problem.location == f"{J} / step 'a'"
    assert f"path 'B' has weight {weight}; weights must be positive" in problem.message


def test_split_path_names_must_be_unique() -> None:
    problem = only(problems_of(journey({"a": Split((SplitPath("A", 1), SplitPath("A", 2)))})))
    assert problem == Problem(
        f"{J} / step 'a'", "path name 'A' is used 2 times; path names must be unique"
    )


def test_branch_needs_a_case() -> None:
    problem = only(problems_of(journey({"a": Branch((), default=None)})))
    assert problem == Problem(f"{J} / step 'a'", "a branch needs at least one case")


# --- journey fields ----------------------------------------------------------------------------


def test_version_must_be_at_least_one() -> None:
    problem = only(problems_of(journey({"a": Exit()}, version=0)))
    assert problem == Problem("journey 'j' v0", "version must be 1 or more, got 0")


def test_ids_must_not_be_empty() -> None:
    j = Journey(id="", entry="", steps={"": Exit()})
    problems = validate_definitions(Definitions(
        journeys=(j,),
        segments=(Segment("", attr("x") == 1),),
        content=(ContentItem("", (Variant("note", {}),)),),
    ))
    assert problems == [
        Problem("journey '' v1", "journey id must not be empty"),
        Problem("journey '' v1 / step ''", "step id must not be empty"),
        Problem("segment ''", "segment id must not be empty"),
        Problem("content ''", "content id must not be empty"),
    ]


@pytest.mark.parametrize(
    ("policy", "messages"),
    [
        (ReentryPolicy("after_cooldown"), ["mode 'after_cooldown' needs a positive cooldown"]),
        (ReentryPolicy.after_cooldown(timedelta(0)),
         ["mode 'after_cooldown' needs a positive cooldown"]),
        (ReentryPolicy.at_most(0, per=DAY), ["mode 'at_most' needs a limit of 1 or more"]),
        (ReentryPolicy("at_most", limit=2), ["mode 'at_most' needs a positive per window"]),
        (ReentryPolicy("at_most"), ["mode 'at_most' needs a limit of 1 or more",
                                    "mode 'at_most' needs a positive per window"]),
        (ReentryPolicy("never", cooldown=DAY),
         ["cooldown only applies to mode 'after_cooldown', not 'never'"]),
        (ReentryPolicy("after_exit", limit=1, per=DAY),
         ["limit only applies to mode 'at_most', not 'after_exit'",
          "per only applies to mode 'at_most', not 'after_exit'"]),
        (ReentryPolicy("at_most", limit=1, per=DAY, cooldown=DAY),
         ["cooldown only applies to mode 'after_cooldown', not 'at_most'"]),
        (ReentryPolicy("sometimes"),  # type: ignore[arg-type]
         ["unknown mode 'sometimes'; expected one of never, after_exit, after_cooldown, at_most"]),
    ],
)
def test_reentry_parameters_must_match_the_mode(
    policy: ReentryPolicy, messages: list[str]
) -> None:
    problems = problems_of(journey({"a": Exit()}, reentry=policy))
    assert problems == [Problem(f"{J} / reentry", m) for m in messages]


def test_valid_reentry_policies() -> None:
    for policy in (
        ReentryPolicy.never(), ReentryPolicy.after_exit(instance_key="k"),
        ReentryPolicy.after_cooldown(HOUR), ReentryPolicy.at_most(3, per=DAY),
    ):
        assert problems_of(journey({"a": Exit()}, reentry=policy)) == []


def test_goal_within_must_be_positive() -> None:
    problem = only(problems_of(journey({"a": Exit()}, goal=Goal("buy", within=timedelta(0)))))
    assert problem == Problem(f"{J} / goal", "within must be positive, got 0s")


def test_max_lifetime_must_be_positive() -> None:
    problem = only(problems_of(journey({"a": Exit()}, max_lifetime=-DAY)))
    assert problem == Problem(J, "max_lifetime must be positive, got -1d")


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (Wait(timedelta(days=2)), "duration 2d is longer than the journey's max_lifetime 1d12h"),
        (WaitForEvent("e", timedelta(days=3)),
         "timeout 3d is longer than the journey's max_lifetime 1d12h"),
    ],
)
def test_a_wait_longer_than_max_lifetime(step: Step, message: str) -> None:
    problem = only(problems_of(journey({"a": step}, max_lifetime=timedelta(hours=36))))
    assert problem.location == f"{J} / step 'a'"
    assert message in problem.message


def test_a_wait_as_long_as_max_lifetime_is_refused() -> None:
    problem = only(problems_of(journey({"a": Wait(DAY)}, max_lifetime=DAY)))
    assert "duration 1d is as long as the journey's max_lifetime 1d" in problem.message


def test_exit_criterion_needs_an_event_or_a_where() -> None:
    criteria = (ExitCriterion("bought", event="order"), ExitCriterion("vague"),
                ExitCriterion("rich", where=attr("ltv") > 100))
    problem = only(problems_of(journey({"a": Exit()}, exit_criteria=criteria)))
    assert problem == Problem(f"{J} / exit criterion 'vague'",
                              "needs an event, a where condition, or both")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "utc", "", "../etc/passwd"])
def test_timezone_must_be_a_known_iana_zone(zone: str) -> None:
    problem = only(problems_of(journey({"a": Exit()}, timezone=zone)))
    assert problem == Problem(J, f"timezone {zone!r} is not a known IANA time zone")


def test_known_timezones_are_fine() -> None:
    for zone in ("UTC", "Europe/Paris", "America/New_York"):
        assert problems_of(journey({"a": Exit()}, timezone=zone)) == []


# --- conditions --------------------------------------------------------------------------------


def test_in_segment_must_name_a_known_segment() -> None:
    problem = only(problems_of(journey({"a": Exit()}, audience=in_segment("s") | in_segment("x"))))
    assert problem == Problem(f"{J} / audience", "segment 'x' does not exist")


def test_compare_op_must_be_known() -> None:
    bad = Compare(Ref("profile", "x"), "like", "a%")  # type: ignore[arg-type]
    problem = only(problems_of(journey({"a": Exit()}, audience=And((attr("y") == 1, bad)))))
    assert problem.location == f"{J} / audience"
    assert "unknown operator 'like' on profile.x" in problem.message
    assert "eq, ne, lt, le, gt, ge, in, not_in, contains" in problem.message


@pytest.mark.parametrize("op", ["in", "not_in"])
def test_membership_needs_a_list(op: str) -> None:
    bad = Compare(Ref("profile", "plan"), op, "pro")  # type: ignore[arg-type]
    problem = only(problems_of(journey({"a": Exit()}, audience=bad)))
    assert problem == Problem(
        f"{J} / audience", f"operator {op!r} on profile.plan needs a list of values, got 'pro'"
    )
    fine = Compare(Ref("profile", "plan"), op, ("pro", "team"))  # type: ignore[arg-type]
    assert problems_of(journey({"a": Exit()}, audience=fine)) == []


def test_unknown_scope_in_a_reference() -> None:
    bad = Compare(Ref("session", "x"), "eq", 1)  # type: ignore[arg-type]
    problem = only(problems_of(journey({"a": Exit()}, audience=bad)))
    assert problem.location == f"{J} / audience"
    assert "unknown scope 'session'" in problem.message


def test_a_bare_field_is_not_a_condition() -> None:
    forgot_the_comparison: Any = attr("vip")  # instead of attr("vip") == True
    audience = And((forgot_the_comparison,))
    problem = only(problems_of(journey({"a": Exit()}, audience=audience)))
    assert problem.location == f"{J} / audience"
    assert problem.message.startswith("conditions[0] must be a condition (a comparison such as")
    assert problem.message.endswith("got Field")


@pytest.mark.parametrize(
    "condition", [prop("total") > 1, ctx("total") > 1, ~(attr("a") == 1) & prop("b").exists()]
)
def test_segment_conditions_may_only_use_profile(condition: Condition) -> None:
    problem = only(problems_of(segments=(Segment("s", condition),)))
    assert problem.location == "segment 's'"
    assert "cannot be used in a segment: only profile values are available" in problem.message


@pytest.mark.parametrize("condition", [prop("total") > 1, ctx("total") > 1])
def test_audience_may_only_use_profile(condition: Condition) -> None:
    problem = only(problems_of(journey({"a": Exit()}, audience=condition)))
    assert problem.location == f"{J} / audience"
    assert "cannot be used in an audience: only profile values" in problem.message


def where_fields(where: Condition) -> dict[str, dict[str, Any]]:
    """Each place that sees profile and event, holding ``where``, with its location suffix."""
    return {
        " / trigger": {"trigger": EventTrigger("e", where=where)},
        " / exit criterion 'x'": {"exit_criteria": (ExitCriterion("x", where=where),)},
        " / goal": {"goal": Goal("e", where=where)},
    }


def test_trigger_conditions_may_use_profile_and_event_but_not_context() -> None:
    fine = where_fields((attr("a") == 1) & (prop("b") == 2))[" / trigger"]
    assert problems_of(journey({"a": Exit()}, **fine)) == []
    bad = where_fields((attr("a") == 1) & (ctx("b") == 2))[" / trigger"]
    problem = only(problems_of(journey({"a": Exit()}, **bad)))
    assert problem.location == J + " / trigger"
    assert "context.b cannot be used" in problem.message
    assert "only profile and event values are available" in problem.message


@pytest.mark.parametrize("place", [" / exit criterion 'x'", " / goal"])
def test_exit_and_goal_conditions_may_read_the_enrollment_context(place: str) -> None:
    # A keyed instance matches its own key: prop("cart_id") == ctx("cart_id").
    fine = where_fields((attr("a") == 1) & (prop("b") == ctx("b")))[place]
    assert problems_of(journey({"a": Exit()}, **fine)) == []


def test_wait_for_event_condition_may_read_profile_event_and_context() -> None:
    fine = WaitForEvent("e", HOUR, where=(attr("a") == 1) & (prop("b") == ctx("b")))
    assert problems_of(journey({"a": fine})) == []


def test_a_comparison_with_a_field_as_its_value_is_a_definition_problem() -> None:
    from cjo.conditions import Compare

    bad = WaitForEvent("e", HOUR, where=Compare(prop("b").ref, "eq", ctx("b")))
    problem = only(problems_of(journey({"a": bad})))
    assert "which is not a value" in problem.message


def test_branch_conditions_may_use_profile_and_context_and_are_checked_per_case() -> None:
    fine = Branch((Case((attr("a") == 1) & (ctx("c") == 3) & (ctx("received.e.b") == 2)),))
    assert problems_of(journey({"a": fine})) == []
    bad = Branch((Case(attr("a") == 1), Case(in_segment("nope"))))
    problem = only(problems_of(journey({"a": bad})))
    assert problem == Problem(f"{J} / step 'a' / case 2", "segment 'nope' does not exist")


def test_branch_conditions_may_not_read_an_event() -> None:
    # A branch runs after entry or a wait, with no event of its own: prop() there would read
    # nothing, and every case on it would silently be false.
    bad = Branch((Case(prop("total_points") >= 1000),))
    problem = only(problems_of(journey({"a": bad})))
    assert problem.location == f"{J} / step 'a' / case 1"
    assert problem.message == (
        "event.total_points cannot be used in a branch: only profile and context values are "
        "available there (the trigger event's properties are in the context: "
        "ctx('total_points'); an event a WaitForEvent received is under "
        "ctx('received.<event>.<property>'))"
    )


def test_segment_referring_to_itself() -> None:
    problem = only(problems_of(segments=(Segment("s", (attr("x") == 1) | in_segment("s")),)))
    assert problem == Problem("segment 's'", "refers to itself through in_segment: 's' -> 's'")


def test_segments_referring_to_themselves_indirectly() -> None:
    segments = (
        Segment("a", in_segment("b")),
        Segment("b", ~in_segment("c")),
        Segment("c", in_segment("a") & (attr("x") == 1)),
        Segment("d", in_segment("a")),  # uses the loop but is not part of it
    )
    problems = problems_of(segments=segments)
    assert problems == [
        Problem("segment 'a'", "refers to itself through in_segment: 'a' -> 'b' -> 'c' -> 'a'"),
        Problem("segment 'b'", "refers to itself through in_segment: 'b' -> 'c' -> 'a' -> 'b'"),
        Problem("segment 'c'", "refers to itself through in_segment: 'c' -> 'a' -> 'b' -> 'c'"),
    ]


# --- content -----------------------------------------------------------------------------------


def test_content_fields_must_parse_as_liquid() -> None:
    item = ContentItem("welcome", (
        Variant("email", {"subject": "Hi {{ profile.name }", "text": "fine"}),
        Variant("email", {"subject": "Salut", "text": "{% if x %}open"}, locale="fr"),
    ))
    problems = problems_of(content=(item,))
    assert [p.location for p in problems] == [
        "content 'welcome' / variant email",
        "content 'welcome' / variant email (fr)",
    ]
    assert problems[0].message.startswith("field 'subject' is not a valid Liquid template: ")
    assert "expected '}}'" in problems[0].message
    assert "\n" not in problems[0].message
    assert problems[1].message.startswith("field 'text' is not a valid Liquid template: ")
    assert "endif" in problems[1].message


def test_content_needs_variants() -> None:
    problem = only(problems_of(content=(ContentItem("empty", ()),)))
    assert problem == Problem("content 'empty'", "has no variants")


def test_content_variants_must_differ_in_channel_or_locale() -> None:
    item = ContentItem("w", (
        Variant("note", {}), Variant("note", {}, locale="fr"), Variant("chat", {}),
        Variant("note", {}, locale="fr"), Variant("note", {}, locale="fr", name="B"),
    ))
    problem = only(problems_of(content=(item,)))
    assert problem == Problem(
        "content 'w' / variant note (fr)", "defined 2 times for the same channel, locale and name"
    )


# --- tags --------------------------------------------------------------------------------------


def test_tags_must_come_from_the_taxonomy() -> None:
    valid = abandoned_cart()
    cart = valid.journeys[0]
    steps = {**cart.steps, "email": attrs.evolve(cart.steps["email"], tags=("channel/fax",))}
    broken = attrs.evolve(
        valid,
        journeys=(attrs.evolve(cart, steps=steps, tags=("lifecycle", "recovery")),),
        segments=(attrs.evolve(valid.segments[0], tags=("value/high",)), valid.segments[1]),
        content=(valid.content[0], attrs.evolve(valid.content[1], tags=("vip",))),
    )
    assert validate_definitions(broken) == [
        Problem("journey 'cart' v1", "tag 'recovery' is not in the taxonomy"),
        Problem("journey 'cart' v1 / step 'email'", "tag 'channel/fax' is not in the taxonomy"),
        Problem("segment 'unsubscribed'", "tag 'value/high' is not in the taxonomy"),
        Problem("content 'cart_vip'", "tag 'vip' is not in the taxonomy"),
    ]


def test_tags_without_a_taxonomy_are_reported_where_used() -> None:
    no_taxonomy = attrs.evolve(abandoned_cart(), taxonomy=None)
    assert validate_definitions(no_taxonomy) == [
        Problem("journey 'cart' v1", "tag 'lifecycle/recovery' used but no taxonomy is published"),
        Problem("journey 'cart' v1 / step 'vip_email'",
                "tag 'channel/email' used but no taxonomy is published"),
        Problem("segment 'big_spenders'", "tag 'value' used but no taxonomy is published"),
        Problem("content 'cart_reminder'", "tag 'lifecycle' used but no taxonomy is published"),
    ]


def test_no_tags_and_no_taxonomy_is_fine() -> None:
    assert problems_of(journey({"a": Exit()})) == []


def _migrating() -> tuple[Journey, Journey, Engine]:
    """v1 of journey "o" published on an engine, and a v2 whose steps are all new."""
    v1 = Journey(id="o", version=1, trigger=EventTrigger("go"), entry="wait",
                 steps={"wait": Wait(DAY, next="bye"), "bye": Exit("done")})
    v2 = Journey(id="o", version=2, trigger=EventTrigger("go"), entry="pause",
                 steps={"pause": Wait(DAY, next="end"), "end": Exit("done")})
    engine = Engine(clock=ManualClock())
    engine.publish(journeys=[v1])
    return v1, v2, engine


def test_a_migration_map_problem_is_named_once_and_precisely() -> None:
    v1, v2, engine = _migrating()
    where = "journey 'o': running customers"
    with pytest.raises(DefinitionError) as info:
        engine.publish(journeys=[v2], running={"o": VersionChange.migrate({"wait": "pause"})})
    assert [str(p) for p in info.value.problems] == [
        f"{where}: the migration from v1 to v2 does not map step(s) 'bye'"]
    with pytest.raises(DefinitionError) as info:  # every step mapped, one to a step v2 lacks
        engine.publish(journeys=[v2], running={
            "o": VersionChange.migrate({"wait": "pause", "bye": "gone"})})
    assert [str(p) for p in info.value.problems] == [
        f"{where}: the migration maps to step(s) 'gone', which v2 does not have"]
    # Stored or loaded definitions are held to the same words by validation alone.
    change = VersionChange("o", 1, 2, "migrate", {"wait": "pause"})
    assert [str(p) for p in validate_definitions(
        Definitions(journeys=(v1, v2), version_changes=(change,)))] == [
        f"{where}: the migration from v1 to v2 does not map step(s) 'bye'"]


def test_a_goal_named_control_is_refused() -> None:
    # The log tells the control group's conversions by the detail "control": a goal of that
    # name would count every customer's conversion as the control group's in reports.
    journey = Journey(id="j", trigger=EventTrigger("go"), entry="w", steps={"w": Wait(DAY)},
                      goal=Goal("purchased", name="control"))
    assert [str(p) for p in validate_definitions(Definitions(journeys=(journey,)))] == [
        "journey 'j' v1 / goal: the goal name 'control' is taken: the activity log marks the "
        "control group's conversions with it; name the goal otherwise",
    ]


def test_a_migration_map_naming_a_step_the_old_version_lacks_is_refused() -> None:
    """A misspelt old step would pass unnoticed, and the step it meant stay unmapped."""
    _, v2, engine = _migrating()
    with pytest.raises(DefinitionError) as info:
        engine.publish(journeys=[v2], running={
            "o": VersionChange.migrate({"wait": "pause", "bye": "end", "wiat": "pause"})})
    assert [str(p) for p in info.value.problems] == [
        "journey 'o': running customers: the migration maps step(s) 'wiat', which v1 does "
        "not have"]
    assert engine.publish(journeys=[v2], running={
        "o": VersionChange.migrate({"wait": "pause", "bye": "end"})}) == 2


@pytest.mark.parametrize(("steps", "message"), [
    (None, "steps must be a mapping of a string to a string, got None"),
    ("wait", "steps must be a mapping of a string to a string, got 'wait'"),
    ({"wait": 5, "bye": "end"}, "steps['wait'] must be a string, got 5"),
])
def test_a_migration_map_of_the_wrong_shape_is_refused_naming_the_journey(
    steps: object, message: str
) -> None:
    """Given as publish(running={"o": ...}), it is named as the journey's running customers."""
    _, v2, engine = _migrating()
    with pytest.raises(DefinitionError) as info:
        engine.publish(journeys=[v2], running={
            "o": VersionChange.migrate(steps)})  # type: ignore[arg-type]
    assert [str(p) for p in info.value.problems] == [
        f"journey 'o': running customers: {message}"]


# --- reasons -----------------------------------------------------------------------------------
# An enrollment ends with its reason (as Engine.remove_from_journey's does): a blank one would
# say nothing in the log, so it is refused like a blank removal reason.


@pytest.mark.parametrize("reason", ["", " \t"])
def test_a_blank_exit_step_reason_is_refused(reason: str) -> None:
    problem = only(problems_of(journey({"a": Exit(reason)})))
    assert problem == Problem(
        f"{J} / step 'a'", f"the reason must not be empty or only whitespace, got {reason!r}")


@pytest.mark.parametrize("name", ["", "  "])
def test_a_blank_exit_criterion_name_is_refused(name: str) -> None:
    criteria = (ExitCriterion(name, event="order"),)
    problem = only(problems_of(journey({"a": Exit()}, exit_criteria=criteria)))
    assert problem == Problem(
        f"{J} / exit criterion {name!r}",
        f"the name must not be empty or only whitespace, got {name!r}")


@pytest.mark.parametrize("reason", ["", "\n"])
def test_a_blank_eject_reason_is_refused_at_publish_and_in_stored_definitions(
    reason: str,
) -> None:
    v1 = Journey(id="o", version=1, trigger=EventTrigger("go"), entry="w", steps={"w": Wait(DAY)})
    v2 = attrs.evolve(v1, version=2)
    message = (f"journey 'o': running customers: the eject reason must not be empty or only "
               f"whitespace, got {reason!r}")
    engine = Engine(clock=ManualClock())
    engine.publish(journeys=[v1])
    with pytest.raises(DefinitionError) as info:
        engine.publish(journeys=[v2], running={"o": VersionChange.eject(reason)})
    assert [str(p) for p in info.value.problems] == [message]
    assert engine.publish(journeys=[v2], running={"o": VersionChange.eject("replaced")}) == 2
    change = VersionChange("o", 1, 2, "eject", reason=reason)
    assert [str(p) for p in validate_definitions(
        Definitions(journeys=(v1, v2), version_changes=(change,)))] == [message]
    # A drain or a migration ends no one with the reason: it is not read.
    drain = VersionChange("o", 1, 2, "drain", reason=reason)
    assert validate_definitions(Definitions(journeys=(v1, v2), version_changes=(drain,))) == []


@pytest.mark.parametrize(("step", "name", "what"), [
    (UpdateProfile(set={"timezone": "Europe/Paris"}), "timezone", "time zone"),
    (UpdateProfile(unset=("timezone",)), "timezone", "time zone"),
    (UpdateProfile(set={"locale": "fr"}), "locale", "locale"),
])
def test_a_definition_cannot_write_the_profiles_own_fields(
    step: UpdateProfile, name: str, what: str
) -> None:
    # A host's profile update reads attributes "timezone" and "locale" as the profile's own
    # fields; a step or a profile rule writing them would keep a plain attribute that calendar
    # waits and translations never read.
    from cjo.segments.rules import ProfileRule, copy

    says = (f"attribute {name!r} is the profile's {what}, which only the host sets "
            f"(identify({name}=...) or a profile update): it cannot be set or unset here")
    problems = validate_definitions(definitions(journey({"a": step})))
    assert says in [p.message for p in problems], problems
    rule = ProfileRule("r", "moved", (copy(name, prop="x"),))
    problems = validate_definitions(attrs.evolve(definitions(journey({"a": Exit()})),
                                                 profile_rules=(rule,)))
    assert [p.message for p in problems if "profile's" in p.message] == [says]


def _chain(length: int, depth: int = 1, name: str = "s") -> tuple[Segment, ...]:
    """Segments s0..s{length-1}, each reading the one before at ``depth`` levels of and/or."""
    segments = [Segment(f"{name}0", attr("x") == 1)]
    for i in range(1, length):
        condition: Condition = in_segment(f"{name}{i - 1}")
        for _ in range(depth - 1):
            condition = And((condition, attr("y") == 1))
        segments.append(Segment(f"{name}{i}", condition))
    return tuple(segments)


def test_a_chain_of_segments_nesting_past_the_stack_is_refused_where_it_passes_the_limit() -> None:
    # 500 segments, each in_segment of the last, published and then made identify raise a bare
    # RecursionError; so did 15 segments of 32-level conditions chained.
    from cjo.validation import MAX_SEGMENT_NESTING

    for length, depth, where in ((500, 1, "s128"), (15, 32, "s4")):
        problems = validate_definitions(Definitions(segments=_chain(length, depth)))
        assert [p.location for p in problems] == [f"segment {where!r}"], problems
        assert problems[0].message.startswith(
            f"nests {MAX_SEGMENT_NESTING + 1} levels of conditions "
            "through the segments it reads with in_segment; the limit is 128"
        ), problems[0].message
    assert validate_definitions(Definitions(segments=_chain(128))) == []
    assert validate_definitions(Definitions(segments=_chain(4, 32))) == []
    # One segment as deep as the limits allow, reading none, is left to its own limit.
    assert validate_definitions(Definitions(segments=_chain(1))) == []


def test_segments_at_the_nesting_limit_evaluate_without_running_out_of_stack() -> None:
    engine = Engine(clock=ManualClock())
    engine.publish(segments=[*_chain(128), *_chain(4, 32, "d")])
    engine.identify("ann", {"x": 1, "y": 1})
    assert engine.in_segment("ann", "s127")
    assert engine.in_segment("ann", "d3")


@pytest.mark.parametrize(("name", "what"), [("timezone", "time zone"), ("locale", "locale")])
def test_a_condition_cannot_read_the_profiles_own_fields_as_attributes(
    name: str, what: str
) -> None:
    # They are never among the attributes: a segment or a trigger on them would never match.
    from cjo.model.triggers import AttributeTrigger

    says = (f"attribute {name!r} is the profile's {what}, not one of its attributes: nothing "
            "here can read it (it would never match)")
    problems = validate_definitions(definitions(
        journey({"a": Exit()}, trigger=AttributeTrigger(name)),
        segments=(Segment("s", attr("x") == 1), Segment("paris", attr(name) == "Europe/Paris"),
                  Segment("nested", attr(f"{name}.x").exists())),
    ))
    assert sorted(str(p) for p in problems) == sorted([
        f"journey 'j' v1 / trigger: {says}",
        f"segment 'paris': profile.{name}: {says}",
        f"segment 'nested': profile.{name}.x: {says}",
    ])
    assert validate_definitions(definitions(
        journey({"a": Exit()}, trigger=EventTrigger("go", where=prop(name) == "x")),
    )) == [], "an event's property of that name is just a property"


@pytest.mark.parametrize(("rule", "message"), [
    (ResumeRule("grace"),
     "late='grace' needs a grace period, such as ResumeRule('grace', timedelta(hours=4))"),
    (ResumeRule("skip", timedelta(hours=4)),
     "a grace period goes only with late='grace', not with 'skip'"),
])
def test_a_resume_rule_says_which_half_of_a_grace_is_missing(rule: ResumeRule,
                                                             message: str) -> None:
    journey = Journey(id="drip", trigger=EventTrigger("go"), entry="w", on_resume=rule,
                      steps={"w": Wait(timedelta(hours=1))})
    problems = validate_definitions(Definitions(journeys=(journey,)))
    assert [str(p) for p in problems] == [f"journey 'drip' v1 / on_resume: {message}"]


@pytest.mark.parametrize(("fields", "name"), [
    ({"goal": Goal("purchased", within=timedelta(seconds=14))}, "within"),
    ({"max_lifetime": timedelta(seconds=30)}, "max_lifetime"),
    ({"reentry": ReentryPolicy.after_cooldown(timedelta(seconds=7))}, "cooldown"),
    ({"reentry": ReentryPolicy.at_most(2, per=timedelta(seconds=7))}, "per"),
])
def test_a_window_of_seconds_is_refused_as_a_likely_unit_slip(
    fields: dict[str, Any], name: str
) -> None:
    # In JSON a bare number is seconds: "within": 14 meant as days gave a 14-second goal.
    problems = validate_definitions(definitions(journey({"a": Exit()}, **fields)))
    assert any(p.message.startswith(f"{name} ") and "a bare number is seconds" in p.message
               for p in problems), problems


def test_a_duplicate_guard_may_be_seconds() -> None:
    policy = ReentryPolicy.after_exit(guard=timedelta(seconds=5))
    assert validate_definitions(definitions(journey({"a": Exit()}, reentry=policy))) == []


def _counting_content_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from cjo import validation

    checked: list[str] = []
    check = validation._check_content

    def counting(item: ContentItem, *args: Any, **kwargs: Any) -> list[Problem]:
        checked.append(item.id)
        return check(item, *args, **kwargs)

    monkeypatch.setattr(validation, "_check_content", counting)
    return checked


def test_republishing_a_journey_does_not_render_unchanged_content_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Rendering every template against a sample is most of a publish's work: with a thousand
    # content items, publishing one journey's new version re-rendered all of them (seconds).
    checked = _counting_content_checks(monkeypatch)
    items = [ContentItem(f"c{i}", (Variant("email", {"subject": "Hi {{ profile.name }}",
                                                     "text": "t"}),)) for i in range(3)]

    def journey(version: int) -> Journey:
        return Journey(id="j", version=version, trigger=EventTrigger("go"), entry="s",
                       steps={"s": Send("c0", "email")})

    engine = Engine(clock=ManualClock(), channels={"email": RecordingChannel()})
    engine.publish(journeys=[journey(1)], content=items)
    assert sorted(checked) == ["c0", "c1", "c2"]
    checked.clear()
    engine.publish(journeys=[journey(2)])
    assert checked == []
    # A changed item is checked again, and its problems refused.
    fields = {"subject": "{{ profile.name | nosuchfilter }}", "text": "t"}
    with pytest.raises(DefinitionError, match="nosuchfilter"):
        engine.publish(content=[ContentItem("c1", (Variant("email", fields),))])
    assert set(checked) == {"c1"}  # the new c1, and the stored one it is compared with


def test_content_edited_in_place_after_a_publish_is_checked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The item holds its own copy of the host's dict: editing the dict after the publish
    # changes nothing published, and the edited dict in an item is a change like any other.
    checked = _counting_content_checks(monkeypatch)
    fields = {"subject": "Hi", "text": "t"}
    engine = Engine(clock=ManualClock(), channels={"email": RecordingChannel()})
    item = ContentItem("c", (Variant("email", fields),))
    engine.publish(content=[item])
    fields["subject"] = "{{ profile.name | nosuchfilter }}"
    assert item.variants[0].fields["subject"] == "Hi"
    generation = engine.generation
    assert engine.publish(content=[item]) == generation  # the same item: no change
    with pytest.raises(DefinitionError, match="nosuchfilter"):
        engine.publish(content=[ContentItem("c", (Variant("email", fields),))])
    assert checked[0] == "c"
    assert checked[-2:] == ["c", "c"]  # the new item, and the stored one it is compared with


# --- keyed instances: what conditions cannot compare with ---------------------------------------


@pytest.mark.parametrize("listed", [ctx("cart_id"), Ref("context", "cart_id"), object()])
def test_a_list_condition_holds_only_values(listed: object) -> None:
    # has_any(prop("tags"), [ctx("tag")]) reads as a comparison with the context, but a list
    # condition's values are data: publishing one holding a field must be refused at its place,
    # not fail on storing the definitions.
    from cjo import has_any

    wait = WaitForEvent("purchased", HOUR, where=has_any(prop("tags"), ["a", listed]))
    found = only(problems_of(journey({"a": wait}), channels=None))
    assert found.location == f"{J} / step 'a'"
    assert "event.tags" in found.message and "cannot be stored" in found.message
    with pytest.raises(DefinitionError):
        Engine(clock=ManualClock()).publish(journeys=[journey({"a": wait})])


def test_a_list_condition_lists_a_bounded_number_of_values() -> None:
    from cjo import Limits, has_any

    wait = WaitForEvent("purchased", HOUR, where=has_any(prop("tags"), ["a", "b", "c"]))
    found = only(validate_definitions(definitions(journey({"a": wait})),
                                      limits=Limits(max_condition_values=2)))
    assert found.message == "has_any on event.tags lists 3 values; the limit is 2"


@pytest.mark.parametrize(("key", "why"), [
    ("cart.id", "ctx('cart.id') reads the path cart → id"),
    ("received", "a WaitForEvent keeps the events it received under ctx('received')"),
])
def test_an_instance_key_conditions_cannot_read_back_is_refused(key: str, why: str) -> None:
    # The key is read as one property of the entry's context; a wait, goal or exit compares
    # with it as ctx(key). A key that ctx() reads as something else would never match its own
    # instance, silently.
    keyed = journey({"a": WaitForEvent("purchased", HOUR, where=prop(key) == ctx(key))},
                    trigger=EventTrigger("added"),
                    reentry=ReentryPolicy.after_exit(instance_key=key))
    found = only(problems_of(keyed))
    assert found.location == f"{J} / reentry"
    assert f"instance_key {key!r}" in found.message and why in found.message
    with pytest.raises(DefinitionError, match="instance_key"):
        Engine(clock=ManualClock()).publish(journeys=[keyed])


@pytest.mark.parametrize("where", [
    prop("cart_id").is_in(["A", ctx("cart_id")]),
    prop("cart_id") == ["A", ctx("cart_id")],
])
def test_a_field_inside_a_compared_list_is_named_with_the_way_to_compare(where: Any) -> None:
    found = only(problems_of(journey({"a": WaitForEvent("purchased", HOUR, where=where)}),
                             channels=None))
    assert found.location == f"{J} / step 'a'"
    assert found.message.startswith("event.cart_id is compared with a list holding ctx('cart_id')"
                                    ", a field, not a value")


def test_a_frequency_cap_per_of_seconds_is_refused_as_a_likely_unit_slip() -> None:
    cap = FrequencyCap("weekly", 3, per=timedelta(seconds=7))
    problems = validate_definitions(Definitions(caps=(cap,)))
    assert [str(p) for p in problems] == [
        "frequency cap 'weekly': 'per' is shorter than the minimum wait (a bare number is "
        "seconds: write '7d' for days)"
    ]
    weekly = attrs.evolve(cap, per=timedelta(days=7))
    assert validate_definitions(Definitions(caps=(weekly,))) == []
