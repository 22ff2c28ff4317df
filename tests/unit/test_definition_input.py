"""Definitions of the wrong shape are refused with their place; conditions have no truth value;
instance keys are text or whole numbers, from a trigger that can supply them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cjo import (
    ApiTrigger,
    AttributeTrigger,
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    ExitCriterion,
    InactivityTrigger,
    Journey,
    ManualClock,
    RecordingChannel,
    ReentryPolicy,
    ScheduleTrigger,
    SegmentTrigger,
    Send,
    Variant,
    Wait,
    WaitForEvent,
    WaitUntil,
    attr,
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
    item = ContentItem("n2", variants=(Variant("email", {"subject": 3, "text": "t"}),))  # type: ignore[dict-item]
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


def test_a_field_path_must_be_text() -> None:
    with pytest.raises(DefinitionError, match="must be a string"):
        prop(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("values", ["abc", None, 5, {"a": 1}])
def test_is_in_needs_a_collection_of_values(values: Any) -> None:
    with pytest.raises(DefinitionError, match="needs a list of values"):
        prop("a").is_in(values)
    with pytest.raises(DefinitionError, match="needs a list of values"):
        prop("a").not_in(values)
    assert prop("a").is_in(("x", "y")).value == ["x", "y"]


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

