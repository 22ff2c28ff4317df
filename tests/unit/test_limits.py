"""Limits: the Limits class, the nesting guards, template limits and definition limits."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import attrs
import pytest

from cjo.conditions import And, Condition, Not, attr, prop
from cjo.content.render import Renderer
from cjo.errors import CjoError, DefinitionError, Problem, RenderError, RenderLimitError, UsageError
from cjo.limits import (
    MAX_VERSION,
    Limits,
    check_json_nesting,
    check_nesting,
    json_nesting,
)
from cjo.model.content import ContentItem, Variant
from cjo.model.definitions import Definitions
from cjo.model.journey import Goal, Journey, ReentryPolicy
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
from cjo.model.triggers import EventTrigger
from cjo.validation import validate_definitions

HOUR = timedelta(hours=1)
CONTENT = ContentItem("c", (Variant("email", {"subject": "Hi {{ profile.name }}", "text": "Hi"}),))


def problems_of(*journeys: Journey, limits: Limits | None = None, **defs: object) -> list[Problem]:
    definitions = Definitions(journeys=journeys, content=(CONTENT,), **defs)  # type: ignore[arg-type]
    return validate_definitions(definitions, channels=("email",), limits=limits)


def journey(steps: dict[str, Step], entry: str = "a", **kwargs: object) -> Journey:
    return Journey("j", entry, steps, **kwargs)  # type: ignore[arg-type]


def messages(problems: list[Problem]) -> str:
    return "\n".join(str(p) for p in problems)


# --- the Limits class --------------------------------------------------------------------------


def test_defaults_are_the_documented_ones() -> None:
    limits = Limits()
    assert limits.min_wait == timedelta(minutes=1)
    assert limits.max_condition_depth == 32
    assert limits.max_steps_per_journey == 1_000
    assert limits.max_steps_per_advance == 100
    assert limits.max_duration == timedelta(days=3_650)
    assert limits.render_timeout == timedelta(seconds=1)


def test_limits_are_frozen_and_keyword_only() -> None:
    limits = Limits(max_steps_per_journey=5_000)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        limits.max_steps_per_journey = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        Limits(5)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_steps_per_journey": 0}, "max_steps_per_journey must be a positive integer"),
        ({"max_loop_iterations": True}, "max_loop_iterations must be a positive integer"),
        ({"min_wait": timedelta(0)}, "min_wait must be positive"),
        ({"min_wait": timedelta(days=4_000)}, "longer than max_duration"),
        ({"max_condition_depth": 32, "max_json_depth": 99}, "max_json_depth 99 leaves no room"),
        ({"max_json_depth": 500}, "recursion limit"),
        ({"max_condition_depth": 100}, "max_json_depth 236 is above 200"),
        ({"render_timeout": 5}, "render_timeout must be a timedelta"),
        ({"max_steps_per_journey": 1.5}, "max_steps_per_journey must be a positive integer"),
    ],
)
def test_limits_out_of_range_raise_usage_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Limits(**kwargs)  # type: ignore[arg-type]


def test_render_timeout_can_be_turned_off() -> None:
    assert Limits(render_timeout=None).render_timeout is None


@pytest.mark.parametrize("depth", [True, 0, -100, 2.5, "32"])
def test_a_bad_condition_depth_is_reported_alone(depth: object) -> None:
    """max_json_depth follows it by default: a depth derived from a bad one is not the
    user's mistake, and must not be reported as one."""
    with pytest.raises(UsageError) as info:
        Limits(max_condition_depth=depth)  # type: ignore[arg-type]
    assert str(info.value) == f"max_condition_depth must be a positive integer, got {depth!r}"


def test_json_depth_follows_condition_depth() -> None:
    assert Limits().max_json_depth == 100
    assert Limits(max_condition_depth=40).max_json_depth == 116


# --- nesting guards ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [[1], {"b": {}}]}', 4),
        ('{"a": "[[[[[[", "b": "}}}}"}', 1),  # brackets inside strings do not count
        (r'{"a": "\"[[[[\"", "b": [1]}', 2),  # nor after escaped quotes
    ],
)
def test_json_nesting(text: str, depth: int) -> None:
    assert json_nesting(text) == depth


def test_check_json_nesting_refuses_deep_text_quickly() -> None:
    text = "[" * 100_000 + "]" * 100_000
    started = time.perf_counter()
    with pytest.raises(DefinitionError, match="nest 100000 levels deep; the limit is 100"):
        check_json_nesting(text)
    assert time.perf_counter() - started < 1
    check_json_nesting("[" * 100 + "]" * 100)  # at the limit: fine


def test_check_nesting_refuses_deep_data_and_data_that_contains_itself() -> None:
    deep: list[object] = []
    for _ in range(5_000):
        deep = [deep]
    with pytest.raises(DefinitionError, match="at least 101 levels"):
        check_nesting({"journeys": deep})
    loop: dict[str, object] = {}
    loop["self"] = loop
    with pytest.raises(DefinitionError):
        check_nesting(loop)
    check_nesting({"journeys": [{"steps": {}}]})


def test_custom_json_depth() -> None:
    with pytest.raises(DefinitionError):
        check_json_nesting("[" * 150 + "]" * 150)
    check_json_nesting("[" * 150 + "]" * 150, Limits(max_json_depth=150))


# --- template limits ---------------------------------------------------------------------------


def item_with(source: str, field: str = "body") -> tuple[ContentItem, Variant]:
    item = ContentItem("promo", (Variant("email", {field: source}),))
    return item, item.variants[0]


def render(source: str, data: dict[str, object] | None = None,
           limits: Limits | None = None) -> str:
    item, variant = item_with(source)
    renderer = Renderer(limits) if limits is not None else Renderer()
    return renderer.render(item, variant, data or {})["body"]


DOUBLE = '{% assign s = "ab" %}{% for i in (1..60) %}{% assign s = s | append: s %}{% endfor %}'
TEN_K = "{% assign a = 'aaaaaaaaaa' %}{% for i in (1..14) %}{% assign a = a | append: a %}" \
        "{% endfor %}"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{% for i in (1..1000000000000) %}{% endfor %}", "range of 1000000000000 items"),
        (DOUBLE + "{{ s }}", "local namespace limit"),
        ("{% for a in (1..9000) %}{% endfor %}{% for b in (1..9000) %}{% endfor %}",
         "more than 10000 iterations in one render"),
        ("{% for a in (1..200) %}{% for b in (1..200) %}{% endfor %}{% endfor %}",
         "loop iteration limit"),
        ("{{ (1..30000000) | join: ',' }}", "range of 30000000 items"),
        ("{% if (1..100000000000) contains 'a' %}y{% endif %}", "range of 100000000000 items"),
        ("{% tablerow i in (1..100000000) %}{% endtablerow %}", "range of 100000000 items"),
        ("{% assign n = 99 %}{% for i in (1..30) %}{% assign n = n | times: n %}{% endfor %}",
         "too large for a template"),
        (TEN_K + "{{ a | replace: '', a }}", "replace: the result would be about"),
        (TEN_K + "{{ a | split: '' | join: a }}", "join: the result would be about"),
        ("{% for i in (1..9999) %}" + "x" * 200 + "{% endfor %}", "output stream limit"),
        ("{% capture c %}{% for i in (1..9999) %}" + "x" * 200 + "{% endfor %}{% endcapture %}",
         "limit"),
        ("{% for i in (1..profile.n) %}{% endfor %}", "range of 1000000000000 items"),
    ],
)
def test_templates_that_hit_a_limit_raise_render_limit_error(source: str, reason: str) -> None:
    started = time.perf_counter()
    with pytest.raises(RenderLimitError) as caught:
        render(source, {"profile": {"n": 10**12}})
    assert time.perf_counter() - started < 2
    error = caught.value
    assert isinstance(error, RenderError)
    assert isinstance(error, CjoError)
    assert str(error).startswith("content 'promo' / email / field 'body': ")
    assert reason in error.reason
    assert error.field == "body"


def test_render_time_limit() -> None:
    busy = "{% for a in (1..9999) %}" + "{% if true %}{% endif %}" * 2_000 + "{% endfor %}"
    limits = Limits(render_timeout=timedelta(milliseconds=50))
    started = time.perf_counter()
    with pytest.raises(RenderLimitError, match="render time limit"):
        render(busy, limits=limits)
    assert time.perf_counter() - started < 1


def test_ordinary_templates_render_within_the_limits() -> None:
    source = ("Hi {{ profile.name | upcase }}: {% for i in (1..3) %}{{ i }}{% endfor %} "
              "{{ 'a,b' | split: ',' | join: '-' }} {{ 'hello' | replace: 'l', 'L' }} "
              "{{ 3 | times: 4 }}")
    out = render(source, {"profile": {"name": "ann"}}, Limits(render_timeout=None))
    assert out == "Hi ANN: 123 a-b heLLo 12"


def test_limits_are_configurable() -> None:
    limits = Limits(max_loop_iterations=5)
    assert render("{% for i in (1..5) %}{{ i }}{% endfor %}", limits=limits) == "12345"
    with pytest.raises(RenderLimitError):
        render("{% for i in (1..6) %}{{ i }}{% endfor %}", limits=limits)
    with pytest.raises(RenderLimitError, match="characters long; the limit is 10"):
        render("x" * 11, limits=Limits(max_template_length=10))
    with pytest.raises(RenderLimitError, match="output stream limit"):
        render("{% for i in (1..50) %}xx{% endfor %}", limits=Limits(max_render_output=99))


def test_other_render_failures_are_render_errors_naming_the_field() -> None:
    with pytest.raises(RenderError) as caught:
        render("{{ 1 | divided_by: 0 }}")
    assert not isinstance(caught.value, RenderLimitError)
    assert caught.value.field == "body"
    assert str(caught.value).startswith("content 'promo' / email / field 'body': ")


def test_republished_content_with_the_same_id_renders_its_new_fields() -> None:
    renderer = Renderer()
    first = ContentItem("welcome", (Variant("email", {"subject": "Hello {{ profile.name }}"}),))
    second = ContentItem("welcome", (Variant("email", {"subject": "Bye {{ profile.name }}"}),))
    data = {"profile": {"name": "ann"}}
    assert renderer.render(first, first.variants[0], data) == {"subject": "Hello ann"}
    assert renderer.render(second, second.variants[0], data) == {"subject": "Bye ann"}
    assert renderer.render(first, first.variants[0], data) == {"subject": "Hello ann"}


def test_check_refuses_templates_over_a_limit_on_the_sample() -> None:
    renderer = Renderer()
    item = ContentItem("promo", (Variant("email", {
        "subject": "Hi {{ profile.name }}",
        "body": "{% for i in (1..1000000000000) %}{% endfor %}",
        "footer": "{{ profile.total | divided_by: 0 }}",
        "broken": "{% if %}",
    }),))
    problems = renderer.problems(item, item.variants[0], {"profile": {"total": 5}})
    # The sample has no name (strict), the loop is over the limit, the division fails on the
    # sample's total, and the last field does not parse.
    assert [(type(p), p.field) for p in problems] == [
        (RenderError, "subject"), (RenderLimitError, "body"), (RenderError, "footer"),
        (RenderError, "broken"),
    ]
    with pytest.raises(RenderError, match="field 'subject'"):
        renderer.check(item, item.variants[0], {"profile": {}})
    fine = ContentItem("ok", (Variant("email", {"subject": "{{ profile.x | divided_by: 2 }}"}),))
    renderer.check(fine, fine.variants[0], {"profile": {"x": 4}})


# --- definition limits -------------------------------------------------------------------------


def nested(depth: int) -> Condition:
    condition: Condition = attr("x") == 1
    for i in range(depth - 1):
        condition = Not(condition) if i % 2 else And((condition, attr("y") == 2))
    return condition


def test_conditions_nest_at_most_the_limit() -> None:
    assert problems_of(segments=(Segment("s", nested(32)),)) == []
    problems = problems_of(segments=(Segment("s", nested(33)),))
    assert problems == [Problem(
        "segment 's'", "conditions nest more than 32 levels of and/or/not; flatten the "
        "condition or move part of it into a segment",
    )]
    assert problems_of(segments=(Segment("s", nested(40)),),
                       limits=Limits(max_condition_depth=40)) == []


def test_a_condition_thousands_deep_is_refused_quickly_without_recursion() -> None:
    started = time.perf_counter()
    problems = problems_of(segments=(Segment("s", nested(5_000)),))
    assert "nest more than 32 levels" in messages(problems)
    assert time.perf_counter() - started < 1


def test_conditions_have_at_most_the_limit_of_nodes() -> None:
    wide = And(tuple(attr(f"a{i}") == i for i in range(1_000)))
    assert "more than 1000 nodes" in messages(problems_of(segments=(Segment("s", wide),)))


def test_in_lists_are_bounded() -> None:
    audience = attr("zip").is_in(range(10_001))
    problems = problems_of(journey({"a": Exit()}, audience=audience))
    assert "lists 10001 values; the limit is 10000" in messages(problems)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "only finite numbers"),
        (float("inf"), "only finite numbers"),
        (2**64, "outside the stored integer range"),
        ("a\x00b", "NUL"),
        ({1, 2}, "cannot be stored"),
    ],
)
def test_condition_values_are_values_an_event_could_carry(value: object, message: str) -> None:
    problems = problems_of(journey({"a": Exit()}, audience=attr("x") == value))
    assert message in messages(problems)
    assert "the value compared with profile.x" in messages(problems)


def test_steps_per_journey() -> None:
    steps: dict[str, Step] = {f"s{i}": Wait(HOUR, next=f"s{i + 1}") for i in range(1_000)}
    steps["s1000"] = Exit()
    problems = problems_of(journey(steps, entry="s0"))
    assert problems == [Problem(
        "journey 'j' v1", "has 1001 steps; the limit is 1000 (split it into several journeys, "
        "or raise Limits.max_steps_per_journey)",
    )]
    assert problems_of(journey(steps, entry="s0"), limits=Limits(max_steps_per_journey=1001)) == []


def sends(count: int, then: Step | None = None) -> dict[str, Step]:
    steps: dict[str, Step] = {f"s{i}": Send("c", "email", next=f"s{i + 1}") for i in range(count)}
    steps[f"s{count}"] = then if then is not None else Exit()
    return steps


def test_runs_of_steps_without_a_wait_are_bounded() -> None:
    assert problems_of(journey(sends(99), entry="s0")) == []  # 99 sends and the exit: 100
    problems = problems_of(journey(sends(100), entry="s0"))
    assert problems == [Problem(
        "journey 'j' v1 / step 's0'",
        "101 steps run one after another without a wait ('s0' -> 's1' -> 's2' -> 's3' -> ...); "
        "the limit is 100: add a Wait, or split the journey",
    )]
    assert problems_of(journey(sends(100), entry="s0"),
                       limits=Limits(max_steps_per_advance=101)) == []


def test_a_wait_ends_a_run() -> None:
    steps = sends(60, Wait(HOUR, next="t0"))
    steps.update({f"t{i}": Send("c", "email", next=f"t{i + 1}") for i in range(60)})
    steps["t60"] = Exit()
    assert problems_of(journey(steps, entry="s0")) == []


def test_the_longest_branch_of_a_run_counts() -> None:
    steps: dict[str, Step] = {
        "a": Branch((Case(attr("x") == 1, "short"),), default="s0"),
        "short": Exit(),
        **sends(100),
    }
    assert "102 steps run one after another" in messages(problems_of(journey(steps)))


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (Wait(timedelta(seconds=59)), "duration 59s is shorter than the minimum wait 1m"),
        (Wait(timedelta(microseconds=1)), "shorter than the minimum wait 1m"),
        (WaitForEvent("e", timedelta(seconds=1)), "timeout 1s is shorter than the minimum wait"),
        (Wait(timedelta(days=3_651)), "duration 3651d is longer than the limit of 3650d"),
        (Wait(timedelta(days=999_999_999)), "is longer than the limit of 3650d"),
        (Wait(timedelta(0)), "duration must be positive, got 0s"),
    ],
)
def test_wait_durations_are_between_the_minimum_wait_and_the_maximum(
    step: Step, message: str
) -> None:
    assert message in messages(problems_of(journey({"a": step})))


def test_minimum_wait_is_configurable() -> None:
    limits = Limits(min_wait=timedelta(seconds=1))
    assert problems_of(journey({"a": Wait(timedelta(seconds=1))}), limits=limits) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": 0}, "version must be 1 or more, got 0"),
        ({"version": 2**31}, f"version must be a whole number from 1 to {MAX_VERSION}"),
        ({"version": 2**63}, "version must be a whole number"),
        ({"max_lifetime": timedelta(days=4_000)}, "max_lifetime 4000d is longer than the limit"),
        ({"goal": Goal("buy", within=timedelta(days=4_000))}, "within 4000d is longer"),
        ({"reentry": ReentryPolicy.after_cooldown(timedelta(days=5_000))}, "cooldown 5000d"),
        ({"reentry": ReentryPolicy.at_most(2**40, per=HOUR)}, "limit must be at most"),
        ({"trigger": EventTrigger("")}, "event name must not be empty"),
        ({"trigger": EventTrigger("   ")}, "event name must not be only whitespace"),
    ],
)
def test_journey_numbers_and_names_in_range(kwargs: dict[str, object], message: str) -> None:
    assert message in messages(problems_of(journey({"a": Exit()}, **kwargs)))


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ((1.0, float("inf")), "weight inf; weights must be finite"),
        ((1.0, float("nan")), "weight nan; weights must be positive"),
        ((1e308, 1e308), "the weights add up past the largest float"),
        ((1, 10**400), "weights must be finite"),
    ],
)
def test_split_weights_are_finite(weights: tuple[float, ...], message: str) -> None:
    paths = tuple(SplitPath(f"p{i}", w, "end") for i, w in enumerate(weights))
    steps: dict[str, Step] = {"a": Split(paths), "end": Exit()}
    assert message in messages(problems_of(journey(steps)))


def test_branches_and_paths_per_step() -> None:
    cases = tuple(Case(attr("x") == i, "end") for i in range(101))
    steps: dict[str, Step] = {"a": Branch(cases), "end": Exit()}
    assert "a branch has 101 cases; the limit is 100" in messages(problems_of(journey(steps)))
    paths = tuple(SplitPath(f"p{i}", 1.0, "end") for i in range(101))
    steps = {"a": Split(paths), "end": Exit()}
    assert "a split has 101 paths; the limit is 100" in messages(problems_of(journey(steps)))


def test_update_profile_sets_storable_values_and_at_most_the_limit() -> None:
    steps: dict[str, Step] = {"a": UpdateProfile(set={"score": float("nan")})}
    assert "attribute to set 'score' is nan" in messages(problems_of(journey(steps)))
    steps = {"a": UpdateProfile(set={f"a{i}": i for i in range(101)})}
    assert "sets and unsets 101 attributes; the limit is 100" in messages(
        problems_of(journey(steps))
    )


def test_variants_and_fields_per_content() -> None:
    many_variants = ContentItem("m", tuple(Variant(f"ch{i}", {"x": "y"}) for i in range(101)))
    problems = validate_definitions(Definitions(content=(many_variants,)))
    assert problems == [Problem("content 'm'", "has 101 variants; the limit is 100")]
    many_fields = ContentItem("f", (Variant("note", {f"f{i}": "x" for i in range(51)}),))
    assert validate_definitions(Definitions(content=(many_fields,))) == [
        Problem("content 'f' / variant note", "has 51 fields; the limit is 50")
    ]


def test_templates_are_rendered_against_a_sample_at_publish() -> None:
    item = ContentItem("promo", (Variant("note", {
        "body": "{% for i in (1..1000000000000) %}{% endfor %}",
        "ok": "Hi {{ profile.name | upcase }}",
    }),))
    problems = validate_definitions(Definitions(content=(item,)))
    assert problems == [Problem(
        "content 'promo' / variant note",
        "field 'body' is over a template limit: range of 1000000000000 items is longer than "
        "the limit of 10000",
    )]


def test_ids_in_definitions_are_storable() -> None:
    steps: dict[str, Step] = {"a\x00": Exit(), "a": Wait(HOUR, next="a\x00")}
    problems = problems_of(journey(steps), Journey("x" * 300, "a", {"a": Exit()}))
    text = messages(problems)
    assert "step id contains a NUL character" in text
    assert "journey id is 300 characters long; ids are at most 256" in text
    # Long ids are cut short in locations, so messages stay readable.
    assert all(len(p.location) < 200 for p in problems)


def _validation_cpu_seconds(size: int) -> float:
    """CPU time (not wall time: the machine may be busy) to validate a chain and a loop of
    ``size`` steps, at and above the step limit; the fastest of three tries."""
    steps: dict[str, Step] = {
        f"s{i}": (Send("c", "email", next=f"s{i + 1}") if i % 2 else Wait(HOUR, next=f"s{i + 1}"))
        for i in range(size)
    }
    steps[f"s{size}"] = Exit()
    loop: dict[str, Step] = {f"s{i}": Send("c", "email", next=f"s{(i + 1) % size}")
                             for i in range(size)}
    raised = Limits(max_steps_per_journey=size + 1)
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for graph, expected in ((steps, ""), (loop, "loop without a wait")):
            problems = problems_of(journey(graph, entry="s0"))
            assert f"has {len(graph)} steps" in messages(problems)
            problems = problems_of(journey(graph, entry="s0"), limits=raised)
            assert expected in messages(problems)
        best = min(best, time.process_time() - started)
    return best


def test_validation_is_linear_in_the_size_of_the_definitions() -> None:
    # Eight times the steps: about eight times the work if linear, sixty-four if quadratic.
    # A ratio, measured in one process, so a slow or busy machine does not fail it.
    small, large = _validation_cpu_seconds(1_500), _validation_cpu_seconds(12_000)
    assert large < 24 * max(small, 1e-3)


def test_loaded_json_with_a_deep_condition_is_a_definition_error() -> None:
    condition: dict[str, object] = {"kind": "exists", "ref": "profile.x"}
    for _ in range(40):
        condition = {"kind": "not", "condition": condition}
    text = json.dumps({"segments": [{"id": "s", "condition": condition}]})
    from cjo.serialization import loads_definitions

    problems = validate_definitions(loads_definitions(text))
    assert "nest more than 32 levels" in messages(problems)
    with pytest.raises(DefinitionError):
        check_json_nesting("[" * 101 + "]" * 101)


def test_prop_values_are_checked_like_attr_values() -> None:
    trigger = EventTrigger("buy", where=prop("total") >= float("inf"))
    assert "only finite numbers" in messages(problems_of(journey({"a": Exit()}, trigger=trigger)))
