"""A schedule occurrence enters its customers at the occurrence, as a wake-up fires at its own
instant: a worker late by minutes or hours sends and waits as one on time and as
``run_until`` do, on every storage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cjo import (
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    RecordingChannel,
    ScheduleTrigger,
    Send,
    Variant,
    Wait,
    WaitUntil,
)
from cjo.storage.memory import InMemoryStorage
from cjo.testing import run_until
from tests.helpers import Factory

PARIS = ZoneInfo("Europe/Paris")
# Paris moves to summer time on Sunday 29 March 2026 at 02:00: the first occurrence below
# (Sunday 09:00) is the first one after the change.
SATURDAY = datetime(2026, 3, 28, 12, 0, tzinfo=PARIS)
SUNDAY_9 = datetime(2026, 3, 29, 9, 0, tzinfo=PARIS)
END = datetime(2026, 4, 2, 12, 0, tzinfo=PARIS)
CONTENT = [ContentItem(cid, variants=(Variant("email", {"subject": cid, "text": cid}),))
           for cid in ("first", "second", "third")]


def _journey() -> Journey:
    return Journey(
        id="sunday", trigger=ScheduleTrigger("0 9 * * SUN", "Europe/Paris"), entry="first",
        steps={"first": Send("first", "email", next="rest"),
               "rest": Wait(timedelta(hours=5), next="second"),
               "second": Send("second", "email", next="monday"),
               "monday": WaitUntil("09:00", next="third"),
               "third": Send("third", "email")},
    )


def _engine(storage: object) -> tuple[Engine, ManualClock, RecordingChannel]:
    clock, email = ManualClock(SATURDAY), RecordingChannel()
    engine = Engine(storage, {"email": email}, clock)  # type: ignore[arg-type]
    engine.publish(journeys=[_journey()], content=CONTENT)
    engine.identify("ann", {"email": "ann@example.com"}, timezone="Europe/Paris")
    return engine, clock, email


def _sends(email: RecordingChannel) -> list[tuple[str, str]]:
    return [(m.fields["text"], m.created_at.astimezone(PARIS).isoformat())
            for m in email.messages]


EXPECTED = [("first", "2026-03-29T09:00:00+02:00"), ("second", "2026-03-29T14:00:00+02:00"),
            ("third", "2026-03-30T09:00:00+02:00")]


@pytest.mark.parametrize("late", [timedelta(0), timedelta(minutes=3), timedelta(hours=2),
                                  timedelta(hours=7)])
def test_a_late_worker_enters_and_sends_as_one_on_time(
    storage_factory: Factory, late: timedelta
) -> None:
    engine, clock, email = _engine(storage_factory())
    clock.set(SUNDAY_9 + late)
    engine.run_due()
    entered = engine.customer_state("ann")
    assert entered is not None
    assert [e.entered_at for e in entered.enrollments] == [SUNDAY_9]
    assert entered.enrollments[0].entered_at.tzinfo is UTC
    clock.set(END)
    engine.run_due()
    assert _sends(email) == EXPECTED
    # Kept in UTC, as every instant the engine stores: the schedule's zone names the
    # occurrence (``scheduled_at``) only.
    assert {m.created_at.tzinfo for m in email.messages} == {UTC}
    assert {a.at.tzinfo for a in engine.activities(SATURDAY, END)} == {UTC}

    # A back-test on a storage of its own (the factory's handles share one database).
    back, _, back_email = _engine(InMemoryStorage())
    run_until(back, END)
    assert _sends(back_email) == EXPECTED
    live, tested = engine.customer_state("ann"), back.customer_state("ann")
    assert live is not None and tested is not None
    assert live.ended == tested.ended and live.history == tested.history


def test_the_wait_for_the_schedules_own_wall_time_ends_that_day(
    storage_factory: Factory,
) -> None:
    monday_9 = datetime(2026, 3, 30, 9, 0, tzinfo=PARIS)
    clock, email = ManualClock(SATURDAY), RecordingChannel()
    engine = Engine(storage_factory(), {"email": email}, clock)
    engine.publish(journeys=[Journey(
        id="monday", trigger=ScheduleTrigger("0 9 * * MON", "Europe/Paris"), entry="wait",
        steps={"wait": WaitUntil("09:00", next="third"), "third": Send("third", "email")},
    )], content=CONTENT)
    engine.identify("ann", {"email": "ann@example.com"}, timezone="Europe/Paris")
    clock.set(monday_9 + timedelta(minutes=1))  # a worker a minute late
    engine.run_due()
    assert _sends(email) == [("third", "2026-03-30T09:00:00+02:00")]


def test_a_customer_decided_after_the_occurrence_enters_no_earlier(
    storage_factory: Factory,
) -> None:
    engine, clock, email = _engine(storage_factory())
    engine.publish(journeys=[_journey(), Journey(
        id="browse", trigger=EventTrigger("browse"), entry="mail",
        steps={"mail": Send("second", "email")},
    )], content=CONTENT)
    browsed = SUNDAY_9 + timedelta(minutes=20)
    clock.set(browsed)
    engine.handle_event(Event("ann", "browse", browsed, event_id="b1"))  # before any worker's pass
    clock.set(SUNDAY_9 + timedelta(hours=1))
    engine.run_due()
    state = engine.customer_state("ann")
    assert state is not None
    assert [(e.journey_id, e.entered_at) for e in state.enrollments] == [("sunday", browsed)]
    assert _sends(email) == [("second", "2026-03-29T09:20:00+02:00"),
                             ("first", "2026-03-29T09:20:00+02:00")]
    clock.set(END)
    engine.run_due()
    assert _sends(email)[2:] == [("second", "2026-03-29T14:20:00+02:00"),
                                 ("third", "2026-03-30T09:00:00+02:00")]
