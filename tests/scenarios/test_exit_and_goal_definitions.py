"""Exit criteria and goals as definitions, on every storage: what a publish refuses, named by
journey and criterion, before any customer can end with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cjo import (
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    ExitCriterion,
    Goal,
    Journey,
    ManualClock,
    RecordingChannel,
    Send,
    Variant,
    Wait,
)
from cjo.errors import DefinitionError
from cjo.storage.base import Storage

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
NOTE = ContentItem("note", variants=(Variant("email", {"subject": "S", "text": "t"}),))


def _journey(**fields: object) -> Journey:
    return Journey("j", trigger=EventTrigger("signup"), entry="wait",
                   steps={"wait": Wait(HOUR, next="mail"), "mail": Send("note", "email")},
                   **fields)  # type: ignore[arg-type]


def _engine(storage: Storage) -> tuple[Engine, ManualClock]:
    clock = ManualClock(T0)
    return Engine(storage, channels={"email": RecordingChannel()}, clock=clock), clock


@pytest.mark.parametrize("name", ["", "   "])
def test_a_blank_goal_name_is_refused_as_any_blank_end_reason(
    storage: Storage, name: str
) -> None:
    # The goal's name is the reason a converted enrollment ends with, as an exit criterion's
    # name is an exited one's.
    engine, _ = _engine(storage)
    with pytest.raises(DefinitionError) as caught:
        engine.publish(journeys=[_journey(goal=Goal("purchased", name=name))], content=[NOTE])
    assert (f"journey 'j' v1 / goal: the goal name must not be empty or only whitespace, "
            f"got {name!r}") in str(caught.value)
    assert engine.definitions.journeys == ()


def test_a_named_goal_still_converts_with_its_name(storage: Storage) -> None:
    engine, clock = _engine(storage)
    engine.publish(journeys=[_journey(goal=Goal("purchased", name="bought"))], content=[NOTE])
    engine.handle_event(Event("c1", "signup", T0, {}, event_id="s1"))
    clock.advance(HOUR / 2)
    outcome = engine.handle_event(Event("c1", "purchased", clock.now(), {}, event_id="p1"))
    assert [(e.status, e.reason) for e in outcome.ended] == [("converted", "bought")]


@pytest.mark.parametrize(("on", "message"), [
    ("enter", "on='enter' goes with a segment criterion only (an event or where criterion "
              "has no membership to enter or leave)"),
    ("both", "on must be 'enter' or 'exit', got 'both'"),
])
def test_on_without_a_segment_is_refused_rather_than_ignored(
    storage: Storage, on: str, message: str
) -> None:
    engine, _ = _engine(storage)
    criterion = ExitCriterion("left", event="unsubscribed", on=on)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError) as caught:
        engine.publish(journeys=[_journey(exit_criteria=(criterion,))], content=[NOTE])
    assert f"journey 'j' v1 / exit criterion 'left': {message}" in str(caught.value)
    assert engine.definitions.journeys == ()
