"""A journey report tells the messages sent (written to the outbox) that did not go out after
all: withheld at dispatch, or failed for good (dead letters), at their journey and step."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from cjo import (
    Channel,
    ContentItem,
    DeliveryResult,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    Message,
    RecordingChannel,
    Send,
    Storage,
    Topic,
    Variant,
    Wait,
)
from cjo.analytics import JourneyReport, format_table, journey_report

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_ids = itertools.count()


class _Scripted(Channel):
    """Delivers, save to the customers in ``failing``: the result given for each."""

    def __init__(self, **failing: DeliveryResult) -> None:
        self.failing = failing
        self.delivered: list[str] = []

    def send(self, message: Message) -> DeliveryResult:
        result = self.failing.get(message.customer_id)
        if result is not None:
            return result
        self.delivered.append(message.customer_id)
        return DeliveryResult("delivered")


def _journey() -> Journey:
    # Two sends, so the report must put each count at its own step.
    return Journey("promo", trigger=EventTrigger("go"), entry="hello", steps={
        "hello": Send("c", "sms", next="pause"),
        "pause": Wait(timedelta(days=1), next="again"),
        "again": Send("c", "sms"),
    })


def _engine(storage: Storage, channel: Channel, **options: Any) -> tuple[Engine, ManualClock]:
    clock = ManualClock(T0)
    engine = Engine(storage=storage, channels={"sms": channel}, clock=clock, **options)
    engine.publish(
        content=[ContentItem("c", (Variant("sms", {"text": "hi"}),), topic="promo")],
        topics=[Topic("promo")], journeys=[_journey()],
    )
    return engine, clock


def _go(engine: Engine, customer: str) -> None:
    engine.handle_event(Event(customer_id=customer, name="go", timestamp=engine.clock.now(),
                              event_id=f"e{next(_ids)}"))


def _report(engine: Engine) -> JourneyReport:
    return journey_report(engine.storage, _journey())


def _counts(report: JourneyReport) -> dict[str, tuple[int, int, int]]:
    return {row.step_id: (row.sent_total, row.withheld, row.delivery_failed)
            for row in report.steps if row.kind == "send"}


def test_a_message_withheld_at_dispatch_is_reported_at_its_step(storage: Storage) -> None:
    engine, _ = _engine(storage, RecordingChannel(), dispatch="deferred")
    for customer in ("ann", "bob", "cy"):
        _go(engine, customer)
    engine.set_consent("ann", topic="promo", subscribed=False)  # after the write, before dispatch
    engine.block_channel("bob", "sms", reason="STOP")
    assert engine.dispatch_pending() == 1

    report = _report(engine)
    # ``sent`` keeps counting what was written; two of those never went out.
    assert report.sent == {"sms": 3}
    assert (report.withheld, report.delivery_failed) == (2, 0)
    assert _counts(report) == {"hello": (3, 2, 0), "again": (0, 0, 0)}
    lines = format_table([report]).splitlines()
    assert "withheld 2" in lines[1]
    assert lines[2].split() == ["step", "kind", "reached", "waiting", "sent:sms", "withheld",
                                "timeouts", "exited", "converted", "completed"]
    assert lines[4].split()[:6] == ["hello", "send", "3", "-", "3", "2"]


def test_a_permanent_failure_is_reported_as_failed_at_its_step(storage: Storage) -> None:
    channel = _Scripted()
    engine, clock = _engine(storage, channel)
    for customer in ("ann", "bob", "cy"):
        _go(engine, customer)
    # Ann's address is dead (logged as ``unreachable``); Bob's failure is the sender's.
    channel.failing.update(ann=DeliveryResult.permanent("no such number"),
                           bob=DeliveryResult.permanent("bad sender id", unreachable=False))
    clock.advance(days=1)
    engine.run_due()  # "again" is sent, and fails for two of them

    assert sorted((d.message.customer_id, d.message.step_id) for d in engine.dead_letters()) \
        == [("ann", "again"), ("bob", "again")]
    report = _report(engine)
    assert (report.sent, report.withheld, report.delivery_failed) == ({"sms": 6}, 0, 2)
    assert _counts(report) == {"hello": (3, 0, 0), "again": (3, 0, 2)}
    activities = engine.activities(T0, T0 + timedelta(days=30), customer_id="bob")
    assert [(a.kind, a.step_id, a.detail) for a in activities if a.kind == "dead_letter"] == [
        ("dead_letter", "again", "permanent failure")]


def test_exhausted_retries_are_reported_as_failed(storage: Storage) -> None:
    channel = _Scripted(ann=DeliveryResult.transient("503"))
    engine, clock = _engine(storage, channel, max_delivery_attempts=3)
    _go(engine, "ann")
    _go(engine, "bob")
    for _ in range(3):
        clock.advance(hours=1)
        engine.dispatch_pending()
    (dead,) = engine.dead_letters()
    assert (dead.attempts, dead.message.step_id) == (3, "hello")

    report = _report(engine)
    assert (report.sent, report.withheld, report.delivery_failed) == ({"sms": 2}, 0, 1)
    assert _counts(report)["hello"] == (2, 0, 1)
    activities = engine.activities(T0, T0 + timedelta(days=30), customer_id="ann")
    assert [(a.kind, a.step_id, a.detail) for a in activities if a.kind == "dead_letter"] == [
        ("dead_letter", "hello", "retries exhausted")]
    lines = format_table([report]).splitlines()
    assert "delivery failed 1" in lines[1] and "withheld" not in lines[1]
    assert lines[2].split()[4:6] == ["sent:sms", "failed"]

    # Retried and delivered: it failed no longer.
    channel.failing.clear()
    assert engine.retry_dead_letter(dead.key)
    assert _report(engine).delivery_failed == 0
    assert engine.dispatch_pending() == 1
    assert channel.delivered == ["bob", "ann"]
    assert _counts(_report(engine))["hello"] == (2, 0, 0)


def test_a_retried_dead_letter_that_fails_again_counts_once(storage: Storage) -> None:
    channel = _Scripted(ann=DeliveryResult.permanent("bad sender id", unreachable=False))
    engine, _ = _engine(storage, channel)
    _go(engine, "ann")
    (dead,) = engine.dead_letters()
    assert engine.retry_dead_letter(dead.key)
    assert engine.dispatch_pending() == 1
    assert len(engine.dead_letters()) == 1
    assert _counts(_report(engine))["hello"] == (1, 0, 1)


def test_a_report_where_every_message_went_out_keeps_its_layout(storage: Storage) -> None:
    engine, _ = _engine(storage, RecordingChannel())
    _go(engine, "ann")
    report = _report(engine)
    assert (report.withheld, report.delivery_failed) == (0, 0)
    lines = format_table([report]).splitlines()
    assert "withheld" not in lines[1] and "failed" not in lines[1]
    assert lines[2].split() == ["step", "kind", "reached", "waiting", "sent:sms", "timeouts",
                                "exited", "converted", "completed"]
