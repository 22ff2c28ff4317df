"""The abandoned-cart journey, driven by a ManualClock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cjo import (
    Engine,
    Event,
    ManualClock,
    RecordingChannel,
)
from cjo.testing import CART_CONTENT, abandoned_cart_journey

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


cart_journey = abandoned_cart_journey
CONTENT = CART_CONTENT


@pytest.fixture
def world() -> tuple[Engine, ManualClock, RecordingChannel, RecordingChannel]:
    clock = ManualClock(T0)
    email, sms = RecordingChannel(), RecordingChannel()
    engine = Engine(channels={"email": email, "sms": sms}, clock=clock)
    engine.publish(journeys=[cart_journey()], content=[CONTENT])
    return engine, clock, email, sms


def event(name: str, customer: str, at: datetime, eid: str, **props: object) -> Event:
    return Event(customer_id=customer, name=name, timestamp=at, properties=props, event_id=eid)


def test_buyer_within_four_hours_gets_nothing(world):
    engine, clock, email, sms = world
    out = engine.handle_event(event("added_to_cart", "c1", clock.now(), "e1", item="shoes"))
    assert [e.journey_id for e in out.entered] == ["abandoned_cart"]
    clock.advance(hours=3)
    out = engine.handle_event(event("purchased", "c1", clock.now(), "e2"))
    assert [(e.status, e.reason) for e in out.ended] == [("converted", "goal")]
    clock.advance(days=3)
    engine.run_due()
    assert email.messages == [] and sms.messages == []
    (enrollment,) = engine.enrollments("c1")
    assert enrollment.status == "converted"


def test_non_buyer_gets_email_at_4h_and_sms_at_28h(world):
    engine, clock, email, sms = world
    engine.handle_event(event("added_to_cart", "c1", clock.now(), "e1", item="shoes"))
    clock.advance(hours=3, minutes=59)
    assert engine.run_due().messages == ()
    clock.advance(minutes=1)
    out = engine.run_due()
    assert [m.channel for m in out.messages] == ["email"]
    assert email.messages[0].created_at == T0 + timedelta(hours=4)
    assert email.messages[0].fields["text"] == "You left shoes behind."
    clock.advance(hours=23, minutes=59)
    assert engine.run_due().messages == ()
    clock.advance(minutes=1)
    engine.run_due()
    assert [m.created_at for m in sms.messages] == [T0 + timedelta(hours=28)]
    assert sms.messages[0].fields == {"text": "Still want shoes?"}
    (enrollment,) = engine.enrollments("c1")
    assert (enrollment.status, enrollment.ended_at) == ("completed", T0 + timedelta(hours=28))


def test_late_run_due_keeps_the_schedule(world):
    engine, clock, email, sms = world
    engine.handle_event(event("added_to_cart", "c1", clock.now(), "e1", item="shoes"))
    clock.advance(days=3)
    engine.run_due()
    assert [m.created_at for m in email.messages + sms.messages] == [
        T0 + timedelta(hours=4), T0 + timedelta(hours=28)
    ]


def test_opening_the_email_stops_the_sms(world):
    engine, clock, email, sms = world
    engine.handle_event(event("added_to_cart", "c1", clock.now(), "e1", item="hat"))
    clock.advance(hours=5)
    engine.run_due()
    engine.handle_event(event("email_opened", "c1", clock.now(), "e2"))
    clock.advance(days=2)
    engine.run_due()
    assert len(email.messages) == 1 and sms.messages == []


def test_second_add_to_cart_does_not_enroll_again(world):
    engine, clock, email, _ = world
    engine.handle_event(event("added_to_cart", "c1", clock.now(), "e1", item="a"))
    clock.advance(hours=1)
    out = engine.handle_event(event("added_to_cart", "c1", clock.now(), "e2", item="b"))
    assert out.entered == ()
    clock.advance(hours=4)
    engine.run_due()
    assert len(email.messages) == 1
    assert len(engine.enrollments("c1")) == 1


def test_replayed_event_id_sends_nothing_new(world):
    engine, clock, email, _ = world
    first = event("added_to_cart", "c1", clock.now(), "e1", item="a")
    engine.handle_event(first)
    clock.advance(hours=4)
    engine.run_due()
    assert len(email.messages) == 1
    replay = engine.handle_event(first)
    assert replay.duplicate and replay.nothing_happened
    clock.advance(hours=30)
    engine.run_due()
    assert len(email.messages) == 1
    assert len(engine.enrollments("c1")) == 1


def test_exit_interrupts_the_second_wait(world):
    engine, clock, _email, sms = world
    engine.handle_event(event("added_to_cart", "c1", clock.now(), "e1", item="a"))
    clock.advance(hours=6)
    engine.run_due()
    out = engine.handle_event(event("purchased", "c1", clock.now(), "e2"))
    assert out.ended[0].status == "converted"
    clock.advance(days=2)
    engine.run_due()
    assert sms.messages == []
