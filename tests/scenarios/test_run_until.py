"""``cjo.testing.run_until`` and ``advance``: a test's clock moved as a worker that is never
late would see it, agreeing with a back-test of the same stream, on every storage."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from cjo import (
    ContentItem,
    Definitions,
    DeliveryResult,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    Message,
    ProfileUpdate,
    QuietHours,
    RecordingChannel,
    ScheduleTrigger,
    Segment,
    Send,
    Variant,
    WaitForEvent,
    attr,
)
from cjo.errors import ClockError, UsageError
from cjo.simulate import backtest
from cjo.storage.base import Storage
from cjo.testing import advance, run_until

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # 19:00 in Sydney (UTC+11)
HOUR = timedelta(hours=1)
CART = Journey(
    "cart", "wait",
    {"wait": WaitForEvent("purchased", timeout=2 * HOUR, on_timeout="remind"),
     "remind": Send("reminder", "email")},
    trigger=EventTrigger("added_to_cart"),
)
REMINDER = ContentItem("reminder", variants=(Variant("email", {"subject": "Hi", "text": "x"}),))
NIGHT = QuietHours("night", time(21, 30), time(8))  # the reminder is due at 21:00 in Sydney
DEFINITIONS = Definitions(journeys=(CART,), content=(REMINDER,), quiet_hours=(NIGHT,))


def _engine(storage: Storage, email: RecordingChannel) -> Engine:
    engine = Engine(storage=storage, channels={"email": email}, clock=ManualClock(T0))
    engine.publish(DEFINITIONS)
    engine.identify("ann", {"email": "ann@example.com"}, timezone="Australia/Sydney")
    engine.handle_event(Event("ann", "added_to_cart", T0, event_id="e1"))
    return engine


def _backtest_sends() -> list[tuple[str, datetime]]:
    email = RecordingChannel()
    backtest(DEFINITIONS, [(T0, ProfileUpdate("ann", {"email": "ann@example.com"},
                                              timezone="Australia/Sydney")),
                           Event("ann", "added_to_cart", T0, event_id="e1")],
             channels={"email": email}, until=T0 + 2 * HOUR)
    return [(m.customer_id, m.created_at) for m in email.messages]


def test_run_until_fires_each_wake_up_at_its_instant_as_a_back_test_does(
    storage: Storage,
) -> None:
    email = RecordingChannel()
    engine = _engine(storage, email)
    outcome = run_until(engine, T0 + 2 * HOUR)
    # Due at 21:00 in Sydney, decided and delivered then: as the back-test, before the quiet
    # hours begin.
    assert [(m.customer_id, m.created_at) for m in email.messages] == _backtest_sends() == [
        ("ann", T0 + 2 * HOUR)]
    assert [m.step_id for m in outcome.messages] == ["remind"]
    assert engine.clock.now() == T0 + 2 * HOUR


def test_advance_then_run_due_is_a_late_worker(storage: Storage) -> None:
    # The one-call idiom comes later than the wake-up: the message is decided for its instant,
    # but goes out under the quiet hours of the late instant, and waits in the outbox.
    email = RecordingChannel()
    engine = _engine(storage, email)
    engine.clock.advance(hours=3)
    (message,) = engine.run_due().messages
    assert message.created_at == T0 + 2 * HOUR and email.messages == []
    assert engine.pending_by_channel() == {"email": 1}
    # advance, from here on, delivers it when the quiet hours end (08:00 in Sydney).
    advance(engine, hours=12)
    assert [m.idempotency_key for m in email.messages] == [message.idempotency_key]


class _FailsOnce(RecordingChannel):
    def __init__(self) -> None:
        super().__init__()
        self.tries: list[datetime] = []

    def send(self, message: Message) -> DeliveryResult:
        self.tries.append(message.created_at)
        if len(self.tries) == 1:
            return DeliveryResult("transient", error="busy", retry_after=timedelta(minutes=10))
        return super().send(message)


def test_advance_delivers_a_retry_at_its_instant(storage: Storage) -> None:
    email = _FailsOnce()
    engine = Engine(storage=storage, channels={"email": email}, clock=ManualClock(T0))
    engine.publish(journeys=[CART], content=[REMINDER])
    engine.identify("bob", {"email": "bob@example.com"})
    engine.handle_event(Event("bob", "added_to_cart", T0, event_id="e1"))
    advance(engine, hours=2, minutes=5)
    assert email.messages == [] and engine.pending_by_channel() == {"email": 1}
    advance(engine, minutes=5)
    assert len(email.messages) == 1
    dead = engine.dead_letters()
    assert dead == []


def test_run_until_runs_each_schedule_occurrence_at_its_instant(storage: Storage) -> None:
    daily = Journey("daily", "send", {"send": Send("reminder", "email")},
                    trigger=ScheduleTrigger("0 9 * * *", segment="all"))
    email = RecordingChannel()
    engine = Engine(storage=storage, channels={"email": email}, clock=ManualClock(T0))
    engine.publish(journeys=[daily], content=[REMINDER],
                   segments=[Segment("all", attr("email").exists())])
    engine.identify("cy", {"email": "cy@example.com"})
    run_until(engine, T0 + timedelta(days=3))
    assert [m.created_at.hour for m in email.messages] == [9, 9, 9]


def test_run_until_refuses_what_it_cannot_do(storage: Storage) -> None:
    engine = Engine(storage=storage, clock=ManualClock(T0))
    with pytest.raises(ClockError, match="cannot go backwards"):
        run_until(engine, T0 - HOUR)
    with pytest.raises(ClockError, match="advance needs a timedelta, got int 5"):
        advance(engine, 5)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="needs a ManualClock, not SystemClock"):
        run_until(Engine(storage=storage), T0)


def test_next_outbox_at(storage: Storage) -> None:
    email = RecordingChannel()
    engine = Engine(storage=storage, channels={"email": email}, clock=ManualClock(T0),
                    dispatch="deferred")
    engine.publish(journeys=[CART], content=[REMINDER])
    engine.identify("dee", {"email": "dee@example.com"})
    assert storage.next_outbox_at() is None
    engine.handle_event(Event("dee", "added_to_cart", T0, event_id="e1"))
    engine.clock.advance(hours=2)
    engine.run_due()
    assert storage.next_outbox_at() == T0 + 2 * HOUR
    engine.dispatch_pending()
    assert storage.next_outbox_at() is None
