"""Loading and dumping definitions: every kind of step, trigger and condition, and the errors."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cjo.conditions import (
    And,
    CompareTime,
    Condition,
    Exists,
    InSegment,
    Not,
    Or,
    Ref,
    attr,
    in_segment,
    prop,
)
from cjo.errors import DefinitionError, Problem
from cjo.model.content import ContentItem, Variant
from cjo.model.definitions import Definitions
from cjo.model.journey import ExitCriterion, Goal, Journey, ReentryPolicy
from cjo.model.segments import Segment
from cjo.model.steps import (
    STEP_TYPES,
    Action,
    AudiencePath,
    AudiencePaths,
    Branch,
    Case,
    Exit,
    Jump,
    Send,
    Split,
    SplitPath,
    Step,
    UpdateProfile,
    Wait,
    WaitForEvent,
    WaitSinceEntry,
    WaitUntil,
    WaitUntilDate,
)
from cjo.model.taxonomy import Category, Taxonomy
from cjo.model.triggers import (
    TRIGGER_TYPES,
    ApiTrigger,
    AttributeTrigger,
    EventTrigger,
    InactivityTrigger,
    ScheduleTrigger,
    SegmentTrigger,
    Trigger,
)
from cjo.segments.history import Performed
from cjo.serialization import (
    dump_definitions,
    dumps_definitions,
    dumps_stored_definitions,
    load_definitions,
    load_definitions_in_parts,
    loads_definitions,
    loads_definitions_in_parts,
    parse_duration,
)

HOUR = timedelta(hours=1)
STEP_KINDS = ", ".join(sorted(t.kind for t in STEP_TYPES))


def journey_data(**fields: Any) -> dict[str, Any]:
    """The JSON of a one-step journey, with ``fields`` overriding the defaults."""
    return {"id": "j", "entry": "a", "steps": {"a": {"kind": "exit"}}, **fields}


def load_journey(**fields: Any) -> Journey:
    return load_definitions({"journeys": [journey_data(**fields)]}).journeys[0]


def dump_journey(journey: Journey) -> dict[str, Any]:
    data: dict[str, Any] = dump_definitions(Definitions(journeys=(journey,)))["journeys"][0]
    return data


def problems(data: Any) -> list[Problem]:
    with pytest.raises(DefinitionError) as caught:
        load_definitions(data)
    return list(caught.value.problems)


def only_problem(data: Any) -> Problem:
    found = problems(data)
    assert len(found) == 1, found
    return found[0]


# --- steps -------------------------------------------------------------------------------------


STEP_CASES: list[tuple[Step, dict[str, Any]]] = [
    (
        Send("welcome", "email", next="b", transactional=True, tags=("t",), topic="news",
             fallbacks=("sms",), when_capped="defer"),
        {"kind": "send", "content": "welcome", "channel": "email", "next": "b",
         "transactional": True, "tags": ["t"], "topic": "news", "fallbacks": ["sms"],
         "when_capped": "defer", "variant": None, "offers": [], "on_render_error": "skip"},
    ),
    (
        Wait(timedelta(hours=4), next="b"),
        {"kind": "wait", "duration": 14400, "next": "b", "tags": []},
    ),
    (
        WaitForEvent("order", timedelta(days=1), on_event="b", on_timeout=None,
                     where=prop("total") > 10),
        {"kind": "wait_for_event", "event": "order", "timeout": 86400, "on_event": "b",
         "on_timeout": None,
         "where": {"kind": "compare", "ref": "event.total", "op": "gt", "value": 10},
         "tags": [], "of_send": None},
    ),
    (
        Branch((Case(in_segment("vip"), "b"), Case(attr("x").exists())), default="c"),
        {"kind": "branch",
         "cases": [{"condition": {"kind": "in_segment", "segment": "vip"}, "next": "b"},
                   {"condition": {"kind": "exists", "ref": "profile.x"}, "next": None}],
         "default": "c", "tags": []},
    ),
    (
        Split((SplitPath("A", 0.25, "b"), SplitPath("B", 0.75))),
        {"kind": "split", "paths": [{"name": "A", "weight": 0.25, "next": "b"},
                                    {"name": "B", "weight": 0.75, "next": None}],
         "tags": []},
    ),
    (
        UpdateProfile(set={"stage": "won", "score": {"n": [1, 2]}}, unset=("lead",), next="b"),
        {"kind": "update_profile", "set": {"stage": "won", "score": {"n": [1, 2]}},
         "unset": ["lead"], "next": "b", "tags": []},
    ),
    (Exit("bought"), {"kind": "exit", "reason": "bought", "tags": []}),
    (
        WaitUntil("09:30", weekdays=("mon", "fri"), next="b"),
        {"kind": "wait_until", "at": "09:30", "weekdays": ["mon", "fri"], "next": "b",
         "tags": []},
    ),
    (
        WaitUntilDate(attr("renews_on"), days=-1, offset=-2 * HOUR, at="09:00", next="b",
                      on_past="c"),
        {"kind": "wait_until_date", "date": "profile.renews_on", "days": -1, "offset": -7200,
         "at": "09:00", "next": "b", "on_past": "c", "on_missing": None, "tags": []},
    ),
    (
        WaitSinceEntry(timedelta(days=3), next="b"),
        {"kind": "wait_since_entry", "duration": 259200, "next": "b", "tags": []},
    ),
    (
        AudiencePaths((AudiencePath("vip", "b"),), default="c"),
        {"kind": "audience_paths", "paths": [{"segment": "vip", "next": "b"}], "default": "c",
         "tags": []},
    ),
    (
        Jump("other", end_current=False, next="b"),
        {"kind": "jump", "journey": "other", "end_current": False, "next": "b", "tags": []},
    ),
    (
        Action("crm_task", {"title": "Call {{ profile.name }}"}, next="b", on_failure="skip"),
        {"kind": "action", "action": "crm_task", "params": {"title": "Call {{ profile.name }}"},
         "next": "b", "on_failure": "skip", "tags": []},
    ),
]


@pytest.mark.parametrize(("step", "data"), STEP_CASES, ids=[s.kind for s, _ in STEP_CASES])
def test_every_step_kind_dumps_and_loads(step: Step, data: dict[str, Any]) -> None:
    journey = Journey("j", "a", {"a": step})
    assert dump_journey(journey)["steps"]["a"] == data
    assert load_journey(steps={"a": data}).steps["a"] == step


def test_step_defaults_may_be_left_out() -> None:
    assert load_journey(steps={"a": {"kind": "send", "content": "c", "channel": "sms"}}).steps == {
        "a": Send("c", "sms")
    }
    assert load_journey(steps={"a": {"kind": "exit"}}).steps == {"a": Exit()}


# --- triggers ----------------------------------------------------------------------------------


TRIGGER_CASES: list[tuple[Trigger, dict[str, Any]]] = [
    (ApiTrigger(), {"kind": "api"}),
    (EventTrigger("signed_up"), {"kind": "event", "event": "signed_up", "where": None}),
    (
        EventTrigger("cart", where=prop("cart.total") >= 50),
        {"kind": "event", "event": "cart",
         "where": {"kind": "compare", "ref": "event.cart.total", "op": "ge", "value": 50}},
    ),
    (
        InactivityTrigger("purchased", after=timedelta(days=14)),
        {"kind": "inactivity", "event": "purchased", "after": 1209600, "where": None},
    ),
    (
        AttributeTrigger("plan", changed_to=["pro"]),
        {"kind": "attribute", "attribute": "plan", "changed_to": ["pro"], "changed_from": None,
         "where": None},
    ),
    (SegmentTrigger("vip", "exit"), {"kind": "segment", "segment": "vip", "on": "exit"}),
    (
        ScheduleTrigger("0 9 * * MON", timezone="Europe/Paris", segment="vip"),
        {"kind": "schedule", "cron": "0 9 * * MON", "timezone": "Europe/Paris",
         "segment": "vip"},
    ),
]


@pytest.mark.parametrize(
    ("trigger", "data"), TRIGGER_CASES, ids=[t.kind for t, _ in TRIGGER_CASES]
)
def test_every_trigger_kind_dumps_and_loads(trigger: Trigger, data: dict[str, Any]) -> None:
    assert dump_journey(Journey("j", "a", {"a": Exit()}, trigger=trigger))["trigger"] == data
    assert load_journey(trigger=data).trigger == trigger


def test_trigger_defaults_to_api() -> None:
    assert load_journey().trigger == ApiTrigger()


# --- conditions --------------------------------------------------------------------------------

PLAN = {"kind": "compare", "ref": "profile.plan", "op": "eq", "value": "pro"}


@pytest.mark.parametrize(
    ("condition", "data"),
    [
        (attr("plan") == "pro", PLAN),
        (attr("tier").is_in(["a", "b"]),
         {"kind": "compare", "ref": "profile.tier", "op": "in", "value": ["a", "b"]}),
        (Exists(Ref("profile", "email")), {"kind": "exists", "ref": "profile.email"}),
        (InSegment("vip"), {"kind": "in_segment", "segment": "vip"}),
        (Not(attr("plan") == "pro"), {"kind": "not", "condition": PLAN}),
        (And((attr("plan") == "pro", InSegment("vip"))),
         {"kind": "and", "conditions": [PLAN, {"kind": "in_segment", "segment": "vip"}]}),
        (Or(()), {"kind": "or", "conditions": []}),
        (Or((Not(And((attr("plan") == "pro",))),)),
         {"kind": "or", "conditions": [
             {"kind": "not", "condition": {"kind": "and", "conditions": [PLAN]}}]}),
    ],
)
def test_every_condition_kind_dumps_and_loads(condition: Condition, data: dict[str, Any]) -> None:
    segment = Segment("s", condition)
    dumped = dump_definitions(Definitions(segments=(segment,)))
    assert dumped["segments"][0]["condition"] == data
    assert load_definitions({"segments": [{"id": "s", "condition": data}]}).segments == (segment,)


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("profile.plan", Ref("profile", "plan")),
        ("event.cart.total", Ref("event", "cart.total")),
        ("context.cart_id", Ref("context", "cart_id")),
    ],
)
def test_references_are_scope_dot_path(text: str, ref: Ref) -> None:
    data = {"kind": "exists", "ref": text}
    loaded = load_definitions({"segments": [{"id": "s", "condition": data}]})
    assert loaded.segments[0].condition == Exists(ref)


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4h", timedelta(hours=4)),
        ("1d12h", timedelta(days=1, hours=12)),
        (90, timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("90s", timedelta(seconds=90)),
        ("1w", timedelta(weeks=1)),
        ("1d 4h 30m", timedelta(days=1, hours=4, minutes=30)),
        ("1.5h", timedelta(minutes=90)),
        (2.5, timedelta(seconds=2.5)),
        (timedelta(hours=2), timedelta(hours=2)),
    ],
)
def test_durations_read_from_seconds_or_strings(text: Any, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    step = load_journey(steps={"a": {"kind": "wait", "duration": text}}).steps["a"]
    assert step == Wait(expected)


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [(timedelta(hours=4), 14400), (timedelta(seconds=1.5), 1.5), (timedelta(0), 0)],
)
def test_durations_are_written_as_seconds(duration: timedelta, seconds: float) -> None:
    dumped = dump_journey(Journey("j", "a", {"a": Wait(duration)}))["steps"]["a"]["duration"]
    assert dumped == seconds
    assert type(dumped) is type(seconds)


@pytest.mark.parametrize("bad", ["", "4x", "h", "1h4d", "-", "--1h", "- 1h", "1h-", "4 hours",
                                 True, None, [1]])
def test_bad_durations_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e20, 10**30,
                                 "99999999999999999999d"])
def test_a_duration_out_of_range_says_so_at_its_location(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"not a duration: .* \(a duration is finite, at most"):
        parse_duration(bad)
    text = json.dumps({"journeys": [journey_data(steps={"w": {"kind": "wait", "duration": 0}})]})
    text = text.replace('"duration": 0', f'"duration": {json.dumps(bad)}')
    with pytest.raises(DefinitionError) as caught:
        loads_definitions(text)
    (problem,) = caught.value.problems
    assert problem.location == "$.journeys[0].steps['w'].duration"
    assert problem.message.startswith("not a duration: ")
    assert "unknown error" not in problem.message


def test_a_bad_duration_names_its_location() -> None:
    data = {"journeys": [journey_data(steps={"w": {"kind": "wait", "duration": "4 hours"}})]}
    problem = only_problem(data)
    assert problem.location == "$.journeys[0].steps['w'].duration"
    assert "not a duration: '4 hours'" in problem.message


@pytest.mark.parametrize(("text", "seconds"), [("-2h", -7200), ("-1d12h", -129600), (" -30m", -1800)])
def test_a_negative_duration_may_be_written_as_a_string_as_it_is_dumped(
    text: str, seconds: int
) -> None:
    # An offset before its base (a WaitUntilDate two hours before, a date 30 days ago) is
    # negative; it reads from "-2h" as "2h" reads for one after.
    assert parse_duration(text) == timedelta(seconds=seconds)
    step = {"kind": "wait_until_date", "date": "profile.renews_on", "offset": text}
    journey = load_journey(steps={"a": step})
    assert journey.steps["a"] == WaitUntilDate(Ref("profile", "renews_on"),
                                                offset=timedelta(seconds=seconds))
    assert dump_journey(journey)["steps"]["a"]["offset"] == seconds
    condition = {"kind": "compare_time", "ref": "profile.signed_up_at", "op": "lt",
                 "offset": text}
    segment = load_definitions({"segments": [{"id": "s", "condition": condition}]}).segments[0]
    assert segment.condition == CompareTime(Ref("profile", "signed_up_at"), "lt",
                                            offset=timedelta(seconds=seconds))


@pytest.mark.parametrize(("text", "at"), [
    ("2026-05-10T09:00:00+00:00", datetime(2026, 5, 10, 9, tzinfo=UTC)),
    ("2026-05-10T09:00:00Z", datetime(2026, 5, 10, 9, tzinfo=UTC)),
    ("2026-05-10T11:00:00+02:00", datetime(2026, 5, 10, 9, tzinfo=UTC)),
])
def test_instants_read_from_iso_8601_text(text: str, at: datetime) -> None:
    condition = {"kind": "performed", "event": "buy", "op": "ge", "count": 1, "since": text}
    segment = load_definitions({"segments": [{"id": "s", "condition": condition}]}).segments[0]
    assert segment.condition == Performed("buy", op="ge", count=1, since=at)


@pytest.mark.parametrize("bad", ["last year", 1778403600, True, {"$dt": 1}, ["2026-05-10"]])
def test_a_bad_instant_says_how_to_write_one_at_its_location(bad: Any) -> None:
    condition = {"kind": "performed", "event": "buy", "op": "ge", "count": 1, "since": bad}
    problem = only_problem({"segments": [{"id": "s", "condition": condition}]})
    assert problem.location == "$.segments[0].condition.since"
    assert problem.message == (
        f"not a date and time: {bad!r} (use ISO 8601 with an offset, such as "
        "'2026-05-10T09:00:00+00:00')"
    )


# --- errors ------------------------------------------------------------------------------------


def test_an_unknown_step_kind_says_so_and_lists_the_known_kinds() -> None:
    problem = only_problem({"journeys": [journey_data(steps={"a": {"kind": "sleep"}})]})
    assert problem == Problem(
        "$.journeys[0].steps['a']", f"unknown step kind 'sleep'; expected one of {STEP_KINDS}"
    )


def test_a_step_without_a_kind() -> None:
    problem = only_problem({"journeys": [journey_data(steps={"a": {"reason": "x"}})]})
    assert problem == Problem(
        "$.journeys[0].steps['a']", f"step has no 'kind'; expected one of {STEP_KINDS}"
    )


def test_a_step_that_is_not_an_object() -> None:
    problem = only_problem({"journeys": [journey_data(steps={"a": "exit"})]})
    assert problem.location == "$.journeys[0].steps['a']"
    assert "must be an object with a 'kind'" in problem.message


def test_an_unknown_trigger_kind() -> None:
    problem = only_problem({"journeys": [journey_data(trigger={"kind": "cron"})]})
    assert problem == Problem(
        "$.journeys[0].trigger",
        "unknown trigger kind 'cron'; expected one of "
        + ", ".join(sorted(t.kind for t in TRIGGER_TYPES)),  # type: ignore[attr-defined]
    )


def test_an_unknown_condition_kind_deep_in_a_tree() -> None:
    condition = {"kind": "and", "conditions": [PLAN, {"kind": "not", "condition": {"kind": "xor"}}]}
    problem = only_problem({"journeys": [journey_data(audience=condition)]})
    assert problem.location == "$.journeys[0].audience.conditions[1].condition"
    assert problem.message.startswith("unknown condition kind 'xor'; expected one of ")
    assert "and, bucket, compare, compare_fields" in problem.message


def test_an_unknown_operator() -> None:
    audience = {**PLAN, "op": "like"}
    problem = only_problem({"journeys": [journey_data(audience=audience)]})
    assert problem.location == "$.journeys[0].audience.op"
    assert problem.message.startswith("'like' is not one of 'eq', 'ne', 'lt'")


def test_a_bad_reference() -> None:
    problem = only_problem({"segments": [{"id": "s", "condition": {**PLAN, "ref": "user.plan"}}]})
    assert problem.location == "$.segments[0].condition.ref"
    assert "not a reference: 'user.plan'" in problem.message


def test_an_unknown_reentry_mode() -> None:
    problem = only_problem({"journeys": [journey_data(reentry={"mode": "often"})]})
    assert problem.location == "$.journeys[0].reentry.mode"
    assert "'often' is not one of 'never', 'after_exit'" in problem.message


def test_extra_and_missing_fields() -> None:
    found = problems({"journeys": [{"id": "j", "steps": {}, "colour": "red"}], "flows": []})
    assert Problem("$.journeys[0]", "extra fields found (colour)") in found
    assert Problem("$", "extra fields found (flows)") in found
    found = problems({"journeys": [{"id": "j", "steps": {}}]})
    assert found == [Problem("$.journeys[0].entry", "required field missing")]


def test_a_misspelt_key_names_the_field_it_is_likely_to_be() -> None:
    step = {"kind": "send", "content": "c", "chanel": "email"}
    found = problems({
        "jurneys": [],
        "journeys": [journey_data(steps={"a": step}, prority=2, colour="red")],
        "segments": [{"id": "s", "condition": PLAN, "nmae": "S", "xyzzy": 1}],
    })
    assert Problem("$", "extra fields found (jurneys); did you mean 'journeys'?") in found
    assert Problem(
        "$.journeys[0]", "extra fields found (colour, prority); did you mean 'priority' for 'prority'?"
    ) in found
    assert Problem(
        "$.journeys[0].steps['a']", "extra fields found (chanel); did you mean 'channel'?"
    ) in found
    assert Problem(
        "$.segments[0]", "extra fields found (nmae, xyzzy); did you mean 'name' for 'nmae'?"
    ) in found


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("version", "2", "expected an integer, got '2'"),
        ("version", True, "expected an integer, got True"),
        ("name", 5, "expected a string, got 5"),
        ("steps", [], "expected an object"),
        ("tags", 3, "expected a list"),
        ("tags", "vip", "expected a list, got 'vip'"),  # not the letters v, i, p
    ],
)
def test_values_of_the_wrong_type_are_not_coerced(field: str, value: Any, message: str) -> None:
    problem = only_problem({"journeys": [journey_data(**{field: value})]})
    assert problem == Problem(f"$.journeys[0].{field}", message)


def test_booleans_are_not_coerced_from_strings() -> None:
    step = {"kind": "send", "content": "c", "channel": "email", "transactional": "no"}
    problem = only_problem({"journeys": [journey_data(steps={"a": step})]})
    assert problem == Problem(
        "$.journeys[0].steps['a'].transactional", "expected true or false, got 'no'"
    )


def test_split_weights_may_be_written_as_integers() -> None:
    step = {"kind": "split", "paths": [{"name": "A", "weight": 1}]}
    assert load_journey(steps={"a": step}).steps["a"] == Split((SplitPath("A", 1.0),))


@pytest.mark.parametrize("where", ["journey", "control_group"])
def test_a_number_too_large_for_a_float_is_refused_by_name(where: str) -> None:
    # float(10**400) overflows: the problem read "unknown error (int too large to convert
    # to float)".
    if where == "journey":
        step = {"kind": "split", "paths": [{"name": "A", "weight": 10**400}]}
        data: dict[str, Any] = {"journeys": [journey_data(steps={"a": step})]}
        location = "$.journeys[0].steps['a'].paths[0].weight"
    else:
        data, location = {"control_group": {"percent": -(10**400)}}, "$.control_group.percent"
    assert only_problem(data) == Problem(
        location, "expected a number, got an integer too large for one (at most about 1.8e+308)"
    )


@pytest.mark.parametrize("value", [0, 1.5, True])
def test_a_value_where_a_list_or_null_belongs_is_refused_in_json_words(value: Any) -> None:
    # cattrs said "invalid value for type, expected tuple[typing.Any, ...] | None".
    trigger = {"kind": "attribute", "attribute": "plan", "changed_to": value}
    problem = only_problem({"journeys": [journey_data(trigger=trigger)]})
    assert problem == Problem("$.journeys[0].trigger.changed_to", "expected a list or null")


def test_definitions_must_be_an_object() -> None:
    assert only_problem([]) == Problem("$", "expected an object of definitions")


def test_three_mistakes_in_one_journey_are_reported_together() -> None:
    text = json.dumps({"journeys": [{
        "id": "cart",
        "entry": "wait",
        "steps": {
            "wait": {"kind": "wait", "duration": "soon", "next": "email"},
            "email": {"kind": "mail", "content": "c", "channel": "email"},
            "branch": {"kind": "branch", "cases": [
                {"condition": {"kind": "compare", "ref": "profile.plan", "op": "is",
                               "value": "pro"}}]},
        },
    }]})
    with pytest.raises(DefinitionError) as caught:
        loads_definitions(text)
    found = caught.value.problems
    assert [p.location for p in found] == [
        "$.journeys[0].steps['wait'].duration",
        "$.journeys[0].steps['email']",
        "$.journeys[0].steps['branch'].cases[0].condition.op",
    ]
    assert "not a duration: 'soon'" in found[0].message
    assert "unknown step kind 'mail'" in found[1].message
    assert "'is' is not one of" in found[2].message
    assert str(caught.value).startswith("3 problems in definitions:\n")


def test_definitions_read_in_parts_keep_every_one_that_can_be_read() -> None:
    bad_journey = journey_data(id="bad", entry=5)
    data = {
        "journeys": [journey_data(), bad_journey, 3],
        "segments": [{"id": "s", "condition": {"kind": "exists", "ref": "profile.a"}}],
        "taxonomy": {"categories": 5},
        "content": 5,
        "extra": 1,
    }
    parts = load_definitions_in_parts(data)
    assert parts.definitions == Definitions(
        journeys=(load_journey(),), segments=(Segment("s", attr("a").exists()),),
    )
    assert parts.unread == {"journeys": (bad_journey, 3), "taxonomy": None, "content": None}
    # The problems are those of reading the whole at once.
    assert list(parts.problems) == problems(data) == [
        Problem("$.journeys[1].entry", "expected a string, got 5"),
        Problem("$.journeys[2]", "invalid value for type, expected Journey"),
        Problem("$.content", "expected a list"),
        Problem("$.taxonomy.categories", "expected a list"),
        Problem("$", "extra fields found (extra)"),
    ]


@pytest.mark.parametrize("text", ["{", '{"journeys": [}', "", "journeys: []"])
def test_invalid_json_is_a_definition_error(text: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        loads_definitions(text)
    (problem,) = caught.value.problems
    assert problem.location.startswith("line ")
    assert problem.message.startswith("invalid JSON: ")


@pytest.mark.parametrize("where", ["max_concurrent_journeys", "value"])
def test_an_integer_too_long_to_read_is_a_definition_error_at_its_line(where: str) -> None:
    digits = "9" * (sys.get_int_max_str_digits() + 1)
    condition = {"kind": "compare", "ref": "profile.a", "op": "eq", "value": 0}
    text = json.dumps({"segments": [{"id": "s", "condition": condition}],
                       "max_concurrent_journeys": 1}, indent=2)
    text = text.replace('"value": 0' if where == "value" else '"max_concurrent_journeys": 1',
                        f'"value": {digits}' if where == "value"
                        else f'"max_concurrent_journeys": -{digits}')
    line = next(i for i, row in enumerate(text.splitlines(), 1) if digits in row)
    for load in (loads_definitions, loads_definitions_in_parts):
        with pytest.raises(DefinitionError) as caught:
            load(text)
        assert [str(p) for p in caught.value.problems] == [
            f"line {line}: a number of {len(digits):,} digits; at most "
            f"{len(digits) - 1:,} are read"
        ]


@pytest.mark.parametrize("text", ["[]", "3", '"definitions"', "null"])
def test_json_that_is_not_an_object_is_a_definition_error(text: str) -> None:
    with pytest.raises(DefinitionError, match="expected a JSON object of definitions"):
        loads_definitions(text)


# --- whole definitions -------------------------------------------------------------------------


def full_definitions() -> Definitions:
    cart = Journey(
        id="cart",
        name="Abandoned cart",
        version=3,
        entry="wait",
        trigger=EventTrigger("cart_abandoned", where=prop("total") > 0),
        audience=attr("email").exists() & ~in_segment("unsubscribed"),
        reentry=ReentryPolicy.at_most(2, per=timedelta(days=30), instance_key="cart_id"),
        exit_criteria=(ExitCriterion("bought", event="order", where=prop("total") > 0),),
        goal=Goal("order", where=prop("total") >= 10, within=timedelta(days=7),
                  exit_on_goal=False, name="recovered"),
        max_lifetime=timedelta(days=14),
        timezone="Europe/Paris",
        tags=("lifecycle",),
        steps={
            "wait": Wait(HOUR, next="email"),
            "email": Send("cart", "email", tags=("lifecycle",)),
        },
    )
    return Definitions(
        journeys=(cart, Journey("welcome", "a", {"a": Exit()},
                                reentry=ReentryPolicy.after_cooldown(timedelta(days=1)))),
        segments=(Segment("unsubscribed", attr("unsubscribed") == True, name="Opted out"),),  # noqa: E712
        content=(ContentItem("cart", (
            Variant("email", {"subject": "Your cart", "text": "{{ event.total }}"}),
            Variant("email", {"subject": "Votre panier", "text": "Bonjour"}, locale="fr"),
        ), name="Cart reminder", tags=("lifecycle",)),),
        taxonomy=Taxonomy((Category("lifecycle", "Lifecycle", (Category("onboarding"),)),)),
    )


def test_full_definitions_round_trip() -> None:
    definitions = full_definitions()
    assert load_definitions(dump_definitions(definitions)) == definitions
    assert loads_definitions(dumps_definitions(definitions)) == definitions
    assert loads_definitions(dumps_definitions(definitions, indent=None)) == definitions


@pytest.mark.parametrize("dump", [dump_definitions, dumps_definitions, dumps_stored_definitions])
@pytest.mark.parametrize(("given", "named"), [
    ([1], "list [1]"), (None, "NoneType None"), ({"journeys": []}, "dict {'journeys': []}"),
    ([Definitions()], "list [Definitions("),
])
def test_dumping_what_is_not_definitions_is_refused(
    dump: Any, given: object, named: str,
) -> None:
    # The converter wrote whatever it was given: dumps_definitions([1]) was "[1]".
    with pytest.raises(DefinitionError) as raised:
        dump(given)
    [problem] = raised.value.problems
    assert problem.location == dump.__name__
    assert problem.message.startswith(f"expected a cjo.Definitions, got {named}")


@pytest.mark.parametrize("dump", [dump_definitions, dumps_definitions, dumps_stored_definitions])
def test_dumping_definitions_that_hold_something_else_names_each_place(dump: Any) -> None:
    journey = full_definitions().journeys[0]
    # attrs does not check field types: Definitions(journeys=[j, 1]) builds, and the converter
    # failed deep inside with "'int' object has no attribute 'id'".
    with pytest.raises(DefinitionError) as raised:
        dump(Definitions(journeys=[journey, 1], segments=journey,  # type: ignore[arg-type]
                         content=("welcome",), taxonomy="t",  # type: ignore[arg-type]
                         max_concurrent_journeys="3"))  # type: ignore[arg-type]
    problems = [str(p) for p in raised.value.problems]
    assert problems[0] == "Definitions.journeys[1]: expected a Journey, got int 1"
    assert problems[1].startswith(  # the journey's repr, shortened
        "Definitions.segments: expected a list or tuple of Segment, got Journey Journey(id=")
    assert len(problems[1]) < 200
    assert problems[2:] == [
        "Definitions.content[0]: expected a ContentItem, got str 'welcome'",
        "Definitions.taxonomy: expected Taxonomy or None, got str 't'",
        "Definitions.max_concurrent_journeys: expected int or None, got str '3'",
    ]
    # Lists where tuples are declared are definitions all the same.
    assert dump(Definitions(journeys=[journey]))


def test_dump_is_plain_json() -> None:
    data = dump_definitions(full_definitions())
    assert json.loads(json.dumps(data)) == data
    journey = data["journeys"][0]
    assert journey["reentry"] == {"mode": "at_most", "cooldown": None, "limit": 2,
                                  "per": 2592000, "instance_key": "cart_id", "guard": None}
    assert journey["goal"]["within"] == 604800
    assert journey["max_lifetime"] == 1209600
    assert data["taxonomy"] == {"categories": [
        {"id": "lifecycle", "name": "Lifecycle",
         "children": [{"id": "onboarding", "name": "", "children": []}]}]}


def test_empty_definitions_load_from_an_empty_object() -> None:
    assert load_definitions({}) == Definitions()


def test_a_key_written_twice_in_one_object_is_refused_not_overwritten() -> None:
    text = json.dumps({"journeys": [{
        "id": "welcome", "trigger": {"kind": "event", "event": "signed_up"}, "entry": "mail",
        "steps": {"mail": {"kind": "send", "content": "hello", "channel": "email"}},
    }]}).replace('"entry": "mail"', '"entry": "mail", "entry": "wait"')
    with pytest.raises(DefinitionError, match="key 'entry' appears twice in one object"):
        loads_definitions(text)
    assert loads_definitions(text.replace(', "entry": "wait"', "")).journeys[0].entry == "mail"


def test_every_key_written_twice_is_named_with_the_path_of_its_object() -> None:
    text = json.dumps({"journeys": [{
        "id": "welcome", "trigger": {"kind": "event", "event": "signed_up"}, "entry": "mail",
        "steps": {"mail": {"kind": "send", "content": "hello", "channel": "email"}},
    }], "content": [{"id": "hello", "variants": [
        {"channel": "email", "fields": {"subject": "Hi", "text": "Hello"}}]}]})
    text = text.replace('"mail": {', '"mail": {"kind": "wait", "duration": 60}, "mail": {')
    text = text.replace('"subject": "Hi"', '"subject": "Hi", "subject": "Hey"')
    with pytest.raises(DefinitionError) as caught:
        loads_definitions(text)
    assert [str(p) for p in caught.value.problems] == [
        "$.journeys[0].steps: key 'mail' appears twice in one object (JSON would keep only "
        "the last)",
        "$.content[0].variants[0].fields: key 'subject' appears twice in one object (JSON "
        "would keep only the last)",
    ]


def test_json_read_as_bytes_loads_as_text_does() -> None:
    text = dumps_definitions(Definitions(segments=(Segment("s", attr("a") == 1),)))
    assert loads_definitions(text.encode()) == loads_definitions(text)
    assert loads_definitions_in_parts(text.encode()).definitions == loads_definitions(text)


def test_text_read_from_a_file_that_starts_with_a_bom_loads_as_the_bytes_do(tmp_path: Any) -> None:
    # Editors on Windows may write a byte order mark; read_text() keeps it as U+FEFF.
    text = dumps_definitions(Definitions(segments=(Segment("s", attr("a") == 1),)))
    path = tmp_path / "definitions.json"
    path.write_text(text, encoding="utf-8-sig")
    assert path.read_text(encoding="utf-8").startswith("\ufeff")
    expected = loads_definitions(text)
    assert loads_definitions(path.read_bytes()) == expected
    assert loads_definitions(path.read_text(encoding="utf-8")) == expected
    assert loads_definitions_in_parts(path.read_text(encoding="utf-8")).definitions == expected


@pytest.mark.parametrize(("given", "message"), [
    (None, "loads_definitions: expected JSON text (a str or UTF-8 bytes), got NoneType"),
    ({"segments": []}, "loads_definitions: expected JSON text (a str or UTF-8 bytes), got dict; "
                       "data already parsed goes to load_definitions"),
    (b"\xff{}", "loads_definitions: the bytes are not UTF-8 text"),
])
def test_what_is_not_json_text_is_refused_by_name(given: object, message: str) -> None:
    with pytest.raises(DefinitionError) as info:
        loads_definitions(given)  # type: ignore[arg-type]
    assert [str(p) for p in info.value.problems] == [message]
