"""Definitions of the wrong shape are refused with their place; conditions have no truth value;
instance keys are text or whole numbers, from a trigger that can supply them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

import attrs
import pytest

from cjo import (
    ApiTrigger,
    AttributeTrigger,
    Category,
    ContentBlock,
    ContentItem,
    ControlGroup,
    Engine,
    Event,
    EventTrigger,
    Exit,
    ExitCriterion,
    FrequencyCap,
    InactivityTrigger,
    Journey,
    JourneyPause,
    Jump,
    ManualClock,
    Offer,
    QuietHours,
    RecordingChannel,
    ReentryPolicy,
    ScheduleTrigger,
    Segment,
    SegmentTrigger,
    Send,
    Taxonomy,
    Topic,
    Variant,
    VersionChange,
    Wait,
    WaitForEvent,
    WaitUntil,
    attr,
    bucket,
    ctx,
    in_segment,
    prop,
)
from cjo.errors import DefinitionError, Problem, UsageError
from cjo.limits import MAX_ID_LENGTH
from cjo.model.definitions import Definitions
from cjo.model.triggers import Trigger
from cjo.validation import validate_definitions

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
HOUR = timedelta(hours=1)
J = "journey 'j' v1"
NOTE = ContentItem("note", variants=(Variant("email", {"subject": "S", "text": "t"}),))


def engine() -> Engine:
    return Engine(channels={"email": RecordingChannel()}, clock=ManualClock(T0))


def refused(*journeys: Journey, content: tuple[ContentItem, ...] = (NOTE,)) -> list[Problem]:
    e = engine()
    with pytest.raises(DefinitionError) as caught:
        e.publish(journeys=list(journeys), content=list(content))
    assert e.definitions.journeys == ()  # nothing was published
    return list(caught.value.problems)


def one_step(step: Any, **fields: Any) -> Journey:
    return Journey("j", trigger=EventTrigger("x"), entry="a", steps={"a": step}, **fields)


# --- wrongly typed fields ----------------------------------------------------------------------


@pytest.mark.parametrize(("step", "message"), [
    (Wait(3600), "duration must be a duration (timedelta), got 3600"),  # type: ignore[arg-type]
    (Wait("4h"), "duration must be a duration (timedelta), got '4h'"),  # type: ignore[arg-type]
    (Wait(None), "duration must be a duration (timedelta), got None"),  # type: ignore[arg-type]
    (WaitForEvent("y", None), "timeout must be a duration (timedelta), got None"),  # type: ignore[arg-type]
    (Send("note", "email", transactional=1), "transactional must be True or False, got 1"),  # type: ignore[arg-type]
])
def test_a_wrongly_typed_step_field_is_a_problem_at_its_step(step: Any, message: str) -> None:
    assert refused(one_step(step)) == [Problem(f"{J} / step 'a'", message)]


@pytest.mark.parametrize(("fields", "starts"), [
    ({"steps": [Send("note", "email")]}, "steps must be a mapping of a string to one of Send"),
    ({"steps": None}, "steps must be a mapping"),
    ({"trigger": None}, "trigger must be one of EventTrigger, ApiTrigger"),
    ({"trigger": "x"}, "trigger must be one of EventTrigger, ApiTrigger"),
    ({"exit_criteria": ExitCriterion("x", event="y")},
     "exit_criteria must be a tuple of ExitCriterion, got ExitCriterion"),
])
def test_a_wrongly_typed_journey_field_is_a_problem_at_its_journey(
    fields: dict[str, Any], starts: str
) -> None:
    base: dict[str, Any] = {"trigger": EventTrigger("x"), "steps": {"a": Send("note", "email")}}
    (problem,) = refused(Journey("j", entry="a", **{**base, **fields}))
    assert problem.location == J
    assert problem.message.startswith(starts)


def test_a_wrongly_typed_content_field_is_a_problem_at_its_variant() -> None:
    item = ContentItem("n2", variants=(Variant("email", {"subject": 3, "text": "t"}),))
    assert refused(content=(NOTE, item)) == [
        Problem("content 'n2' / variant 'email'", "fields['subject'] must be a string, got 3")
    ]


def test_a_wrong_type_deep_inside_is_found() -> None:
    journey = one_step(Send("note", "email"), reentry=ReentryPolicy("after_cooldown", HOUR * 2,
                                                                   instance_key=5))  # type: ignore[arg-type]
    assert refused(journey) == [
        Problem(f"{J} / reentry", "instance_key must be a string (or None), got 5")
    ]


def test_validate_definitions_refuses_what_is_not_definitions() -> None:
    assert validate_definitions([]) == [  # type: ignore[arg-type]
        Problem("definitions", "expected a cjo.Definitions, got list")
    ]
    with pytest.raises(UsageError, match="limits must be a cjo\\.Limits"):
        validate_definitions(Definitions(), limits="x")  # type: ignore[arg-type]


def test_wait_until_an_impossible_time_is_reported_at_its_step() -> None:
    (problem,) = refused(one_step(WaitUntil("25:00")))
    assert problem == Problem(f"{J} / step 'a'",
                              "at must be a time of day: 'HH:MM' or a datetime.time, got '25:00'")


def test_well_typed_definitions_still_publish() -> None:
    e = engine()
    e.publish(journeys=[one_step(Wait(HOUR), exit_criteria=[ExitCriterion("x", event="y")])],
              content=[NOTE])
    assert [j.id for j in e.definitions.journeys] == ["j"]


# --- shape and meaning in one pass --------------------------------------------------------------


def test_a_wrong_type_in_one_journey_and_a_problem_of_meaning_in_another_are_both_reported() -> None:
    other = Journey("k", trigger=EventTrigger("x"), entry="a",
                    steps={"a": Send("note", "email", next="nowhere")})
    expected = [
        Problem(f"{J} / step 'a'", "duration must be a duration (timedelta), got 3600"),
        Problem("journey 'k' v1 / step 'a'", "next refers to missing step 'nowhere'"),
    ]
    bad = one_step(Wait(3600))  # type: ignore[arg-type]
    assert validate_definitions(Definitions(journeys=(bad, other), content=(NOTE,))) == expected
    assert refused(bad, other) == expected


def test_problems_of_shape_come_first_in_the_order_definitions_are_written() -> None:
    # (a journey declares its steps before its trigger)
    journey = Journey("j", trigger=EventTrigger(5), entry="a", steps={  # type: ignore[arg-type]
        "a": Wait(3600, next="b"), "b": Wait("4h"),  # type: ignore[arg-type]
    })
    unknown = Journey("k", trigger=EventTrigger("x"), entry="zz", steps={"a": Exit()})
    defs = Definitions(journeys=(journey, unknown),
                       segments=(Segment("s", attr("a") == 1, name=3),))  # type: ignore[arg-type]
    assert validate_definitions(defs) == [
        Problem(f"{J} / step 'a'", "duration must be a duration (timedelta), got 3600"),
        Problem(f"{J} / step 'b'", "duration must be a duration (timedelta), got '4h'"),
        Problem(f"{J} / trigger", "event must be a string, got 5"),
        Problem("segment 's'", "name must be a string, got 3"),
        Problem("journey 'k' v1", "entry step 'zz' does not exist"),
    ]


def sends(*steps: Send | Jump, **fields: Any) -> Journey:
    """A journey "k" running ``steps`` one after another."""
    last = len(steps) - 1
    return Journey("k", trigger=EventTrigger("x"), entry="s0", steps={
        f"s{i}": step if i == last or isinstance(step, Jump) else attrs.evolve(step, next=f"s{i + 1}")
        for i, step in enumerate(steps)
    }, **fields)


SMS_ONLY = ContentItem("text", variants=(Variant("sms", {"text": 5}),))

#: Definitions holding one wrong type, with others that name them: only the wrong type is a
#: problem (the definition holding it exists; nothing else about it is relied on).
LEFT_OUT = {
    "content item": Definitions(
        journeys=(sends(Send("text", "email"), Send("note", "email", offers=("o",))),),
        content=(NOTE, SMS_ONLY), offers=(Offer("o", "text"),),
    ),
    "segment": Definitions(
        journeys=(sends(Send("note", "email"), audience=in_segment("vip"),
                        exit_criteria=(ExitCriterion("left", segment="vip"),)),),
        segments=(Segment("vip", attr("a") == 1, name=3),),  # type: ignore[arg-type]
        content=(NOTE,),
    ),
    "segments, as a whole": Definitions(
        journeys=(sends(Send("note", "email"), audience=in_segment("vip")),),
        segments=Segment("vip", attr("a") == 1),  # type: ignore[arg-type]
        content=(NOTE,),
    ),
    "offer": Definitions(
        journeys=(sends(Send("note", "email", offers=("o",))),),
        content=(NOTE,), offers=(Offer("o", "note", priority="high"),),  # type: ignore[arg-type]
    ),
    "topic": Definitions(
        journeys=(sends(Send("note", "email", topic="news")),),
        content=(attrs.evolve(NOTE, topic="news"),), topics=(Topic("news", name=5),),  # type: ignore[arg-type]
    ),
    "block": Definitions(
        content=(attrs.evolve(NOTE, variants=(
            Variant("email", {"subject": "S", "text": "{% include 'footer' %}"}),
        )),),
        blocks=(ContentBlock("footer", 5), ContentBlock("sign", "{% include 'footer' %}")),  # type: ignore[arg-type]
    ),
    "journey": Definitions(
        journeys=(one_step(Wait(3600)), sends(Jump("j"))),  # type: ignore[arg-type]
        quiet_hours=(QuietHours("night", time(22), time(7), journeys=("j",)),),
        paused=(JourneyPause("j", T0),),
    ),
    "journey version": Definitions(
        journeys=(one_step(Wait(HOUR)), Journey("j", version=2, trigger=EventTrigger("x"),
                                                entry="a", steps={"a": Wait(3600)})),  # type: ignore[arg-type]
        version_changes=(VersionChange("j", 1, 2, "migrate", {"a": "nowhere"}),),
    ),
    "taxonomy": Definitions(
        journeys=(sends(Send("note", "email"), tags=("promo",)),),
        content=(NOTE,), taxonomy=Taxonomy((Category("promo", name=None),)),  # type: ignore[arg-type]
        caps=(FrequencyCap("weekly", 3, per=timedelta(days=7), tag="promo"),),
    ),
}


@pytest.mark.parametrize("name", LEFT_OUT)
def test_what_names_a_definition_left_out_for_its_shape_is_not_refused_for_it(name: str) -> None:
    defs = LEFT_OUT[name]
    # A problem of meaning elsewhere: the others are checked in the same pass.
    elsewhere = Journey("m", trigger=EventTrigger("x"), entry="zz", steps={"a": Exit()})
    defs = attrs.evolve(defs, journeys=(*defs.journeys, elsewhere))
    shape, *others = validate_definitions(defs, channels=("email", "sms"))
    assert " must be " in shape.message
    assert others == [Problem("journey 'm' v1", "entry step 'zz' does not exist")]


def test_a_definition_left_out_whose_id_is_not_text_may_be_what_any_reference_means() -> None:
    defs = Definitions(segments=(Segment(5, attr("a") == 1),  # type: ignore[arg-type]
                                 Segment("s", in_segment("vip") & in_segment("gold"))),
                       journeys=(sends(Send("note", "email"), audience=in_segment("vip")),),
                       content=(NOTE, "note"))
    assert validate_definitions(defs) == [
        Problem("segment 0", "id must be a string, got 5"),
        Problem("definitions", "content[1] must be ContentItem, got 'note'"),
    ]


@pytest.mark.parametrize(("unread", "problems"), [
    ({}, ["segment 'vip' does not exist", "content 'text' does not exist"]),
    ({"content": ({"id": "text", "variants": 5},)}, ["segment 'vip' does not exist"]),
    ({"content": ({"id": "other"},), "segments": None}, ["content 'text' does not exist"]),
    ({"content": ({"variants": []},), "segments": ({"id": "vip"},)}, []),
])
def test_definitions_that_could_not_be_read_are_named_like_those_left_out(
    unread: dict[str, Any], problems: list[str]
) -> None:
    defs = Definitions(journeys=(sends(Send("text", "email"), audience=in_segment("vip")),))
    assert [p.message for p in validate_definitions(defs, unread=unread)] == problems


def test_ids_are_counted_twice_even_when_one_definition_is_left_out() -> None:
    defs = Definitions(segments=(Segment("s", attr("a") == 1),
                                 Segment("s", attr("a") == 2, name=3)))  # type: ignore[arg-type]
    assert validate_definitions(defs) == [
        Problem("segment 's'", "name must be a string, got 3"),
        Problem("segment 's'", "defined 2 times; segment ids must be unique"),
    ]


def test_publish_refuses_an_id_that_is_not_text_with_every_other_problem() -> None:
    e = engine()
    with pytest.raises(DefinitionError) as caught:
        e.publish(segments=[Segment(["vip"], attr("a") == 1),  # type: ignore[arg-type]
                            Segment("s", in_segment("s"))])
    assert caught.value.problems == (  # (merged by id, an id that is not text comes last)
        Problem("segment 1", "id must be a string, got list"),
        Problem("segment 's'", "refers to itself through in_segment: 's' -> 's'"),
    )


def test_publish_refuses_a_control_group_of_the_wrong_shape_after_one_is_published() -> None:
    e = engine()
    e.publish(control_group=ControlGroup(10, "salt"))
    with pytest.raises(DefinitionError) as caught:
        e.publish(control_group=ControlGroup("5", "salt"))  # type: ignore[arg-type]
    assert caught.value.problems == (
        Problem("control_group", "percent must be a number, got '5'"),
    )


def test_publish_refuses_a_taxonomy_of_the_wrong_type_even_when_it_is_false() -> None:
    with pytest.raises(DefinitionError) as caught:
        engine().publish(Definitions(taxonomy=0))  # type: ignore[arg-type]
    assert caught.value.problems == (
        Problem("definitions", "taxonomy must be Taxonomy (or None), got 0"),
    )


# --- condition builders ------------------------------------------------------------------------


@pytest.mark.parametrize("combine", [
    lambda a, b: a and b,
    lambda a, b: a or b,
    lambda a, b: not a,
    lambda a, b: bool(a),
])
def test_a_condition_has_no_truth_value(combine: Callable[[Any, Any], Any]) -> None:
    with pytest.raises(DefinitionError, match="combine conditions with &"):
        combine(attr("a") == 1, attr("b") == 2)


@pytest.mark.parametrize(("write", "hint"), [
    (lambda: prop("cart_id") in ctx("carts"),
     r"prop\('cart_id'\).is_in\(ctx\('carts'\)\) or ctx\('carts'\).contains\("),
    (lambda: "A" in ctx("carts"), r"\.is_in\(ctx\('carts'\)\)"),
    (lambda: ctx("cart")["id"], r"write ctx\('cart.id'\)"),
    (lambda: attr("address")["city"], r"write attr\('address.city'\)"),
    (lambda: ctx("cart")[0], r"a field has no items"),
    (lambda: ctx("cart_id") in ["A", "B"], r"ctx\('cart_id'\).is_in\(\[\.\.\.\]\)"),
    (lambda: ctx("cart").id, r"ctx\('cart'\).id: .* write ctx\('cart.id'\)"),
    (lambda: prop("total") + 5, r"prop\('total'\) cannot be computed"),
    (lambda: 5 * prop("total"), r"prop\('total'\) cannot be computed"),
    (lambda: -attr("score"), r"attr\('score'\) cannot be computed"),
    (lambda: bucket("hero", 10) < 5, r"bucket\('hero', 10\) is not a number.*\.below\(n\)"),
    (lambda: bucket("hero") == 5, r"bucket\('hero', 100\) is not a number"),
], ids=["field in field", "value in field", "field[key]", "attr[key]", "field[0]",
        "field in list", "field.name", "field + value", "value * field", "-field",
        "bucket < n", "bucket == n"])
def test_python_in_and_items_on_a_field_are_refused_naming_the_builder(
    write: Callable[[], Any], hint: str
) -> None:
    # Python makes `x in y` a truth value and has no condition for `y[key]`, `y.key`, `y + 1`
    # or a bucket compared as a number: each is a DefinitionError saying what to write, not a
    # bare TypeError or AttributeError (or, for `bucket(...) == 5`, a silent False).
    with pytest.raises(DefinitionError, match=hint):
        write()


@pytest.mark.parametrize("combine", [
    lambda f, c: f and c,
    lambda f, c: f or c,
    lambda f, c: not f,
    lambda f, c: f & c,
    lambda f, c: c & f,
    lambda f, c: f | c,
    lambda f, c: c | f,
    lambda f, c: ~f,
    lambda f, c: True & f,
], ids=["and", "or", "not", "&", "& on the right", "|", "| on the right", "~", "bool &"])
def test_a_field_is_a_value_not_a_condition(combine: Callable[[Any, Any], Any]) -> None:
    # `attr("vip") and cond` would otherwise be `cond` alone, silently.
    with pytest.raises(DefinitionError, match=(
        r"attr\('vip'\) is a value, not a condition: compare it \(such as attr\('vip'\) == "
        r"True\) or test it with .exists\(\)"
    )):
        combine(attr("vip"), prop("total") >= 50)


def test_a_field_compared_or_tested_still_combines() -> None:
    combined = (attr("vip") == True) & attr("email").exists() | ~(attr("total") >= 50)  # noqa: E712
    assert validate_definitions(Definitions(segments=(Segment("s", combined),))) == []


def test_a_field_path_must_be_text() -> None:
    with pytest.raises(DefinitionError, match="must be a string"):
        prop(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("values", ["abc", None, 5, {"a": 1}])
def test_is_in_needs_a_collection_of_values(values: Any) -> None:
    with pytest.raises(DefinitionError, match="needs a list of values"):
        prop("a").is_in(values)
    with pytest.raises(DefinitionError, match="needs a list of values"):
        prop("a").not_in(values)
    assert prop("a").is_in(["x", "y"]).value == ("x", "y")


@pytest.mark.parametrize("field", ["changed_to", "changed_from"])
@pytest.mark.parametrize(("values", "got"), [("pro", "'pro'"), (5, "5"), ({"pro": 1}, "dict")])
def test_an_attribute_trigger_needs_a_collection_of_values(
    field: str, values: Any, got: str
) -> None:
    # A bare string is not read as its characters (changed_to="pro" would never see "pro").
    trigger = AttributeTrigger("plan", **{field: values})
    journey = Journey("up", trigger=trigger, entry="w", steps={"w": Wait(HOUR)})
    assert [str(p) for p in validate_definitions(Definitions(journeys=(journey,)))] == [
        f"journey 'up' v1 / trigger: {field} must be a tuple of any value (or None), got {got}"
    ]
    assert getattr(AttributeTrigger("plan", **{field: ["pro"]}), field) == ("pro",)


# --- instance keys -----------------------------------------------------------------------------


def keyed(trigger: Trigger) -> Journey:
    return Journey("cart", trigger=trigger, entry="w", steps={"w": Wait(HOUR)},
                   reentry=ReentryPolicy.after_exit(instance_key="cart_id"))


def keyed_engine() -> Engine:
    e = engine()
    e.publish(journeys=[keyed(EventTrigger("added"))])
    return e


def added(e: Engine, event_id: str, cart_id: Any) -> Any:
    return e.handle_event(Event("ann", "added", T0, {"cart_id": cart_id}, event_id=event_id))


def test_an_int_and_a_str_with_the_same_text_name_one_instance() -> None:
    e = keyed_engine()
    assert len(added(e, "e1", 5).entered) == 1
    outcome = added(e, "e2", "5")
    assert outcome.entered == ()
    assert [x.instance_key for x in e.enrollments("ann")] == ["5"]


@pytest.mark.parametrize(("value", "got"), [
    ([1], "a list"),
    (1.5, "a float"),
    (True, "a bool"),
    ("k" * (MAX_ID_LENGTH + 1), f"{MAX_ID_LENGTH + 1} characters"),
    ("", "0 characters"),
])
def test_an_unusable_instance_key_enters_no_one_and_says_why(value: Any, got: str) -> None:
    e = keyed_engine()
    outcome = added(e, "e1", value)
    assert outcome.entered == ()
    (refusal,) = outcome.not_entered
    assert refusal.journey_id == "cart"
    assert refusal.reason == (f"instance key 'cart_id' must be a string of 1 to {MAX_ID_LENGTH} "
                              f"characters or a whole number, got {got}")
    assert e.enrollments("ann") == []


@pytest.mark.parametrize("value", [" ", "\t\n "])
def test_a_blank_instance_key_is_refused_like_a_missing_one(value: str) -> None:
    """Ids may not be only whitespace; a key is part of enrollment ids."""
    e = keyed_engine()
    outcome = added(e, "e1", value)
    assert outcome.entered == ()
    (refusal,) = outcome.not_entered
    assert (refusal.journey_id, refusal.reason) == (
        "cart", "instance key 'cart_id' is blank (only whitespace)")
    assert e.enrollments("ann") == []
    assert len(added(e, "e2", " A ").entered) == 1  # spaces around text are kept as given


def test_a_key_at_the_id_length_limit_enters() -> None:
    e = keyed_engine()
    assert len(added(e, "e1", "k" * MAX_ID_LENGTH).entered) == 1


@pytest.mark.parametrize("trigger", [
    InactivityTrigger("x", after=HOUR),
    AttributeTrigger("plan"),
    SegmentTrigger("vip"),
    ScheduleTrigger("0 9 * * *"),
])
def test_a_keyed_journey_needs_a_trigger_that_supplies_the_key(trigger: Trigger) -> None:
    problems = validate_definitions(Definitions(journeys=(keyed(trigger),)))
    assert [p for p in problems if "instance_key" in p.message] == [Problem(
        "journey 'cart' v1 / reentry",
        f"instance_key 'cart_id' is never supplied by the trigger: entries by this trigger "
        f"(kind {trigger.kind!r}) hold {', '.join(trigger.context_keys or ()) or 'nothing'} in "
        "their context, so no one would enter; key instances on an event or API trigger",
    )]


@pytest.mark.parametrize("trigger", [EventTrigger("added"), ApiTrigger()])
def test_event_and_api_triggers_supply_keys(trigger: Trigger) -> None:
    assert validate_definitions(Definitions(journeys=(keyed(trigger),))) == []


def test_an_attribute_trigger_keyed_on_what_it_supplies_is_valid() -> None:
    journey = Journey("cart", trigger=AttributeTrigger("plan"), entry="w",
                      steps={"w": Wait(HOUR)},
                      reentry=ReentryPolicy.after_exit(instance_key="new_value"))
    assert validate_definitions(Definitions(journeys=(journey,))) == []

