"""What the people running journeys see of entries refused across journeys and of customers a
pause holds, on every storage: ``not_entered`` in the activity log and the report, the
report's ``paused_since`` and ``held``, and held wake-ups shown as None."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from cjo import (
    ContentItem,
    Definitions,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    RecordingChannel,
    Send,
    Variant,
    Wait,
    attr,
)
from cjo.analytics.report import format_table, journey_report
from cjo.errors import UsageError
from cjo.export import EXPORT_FORMAT, upgrade_export
from cjo.simulate import PauseJourney, ResumeJourney, backtest
from tests.helpers import Factory

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
CONTENT = (ContentItem("a", variants=(Variant("email", {"subject": "Hi", "text": "A"}),)),)
_seq = iter(range(1_000_000))


def _ev(name: str, customer: str, at: datetime) -> Event:
    return Event(customer_id=customer, name=name, timestamp=at, event_id=f"e{next(_seq)}")


def _engine(factory: Factory) -> tuple[Engine, ManualClock]:
    clock = ManualClock(T0)
    return Engine(factory(), {"email": RecordingChannel()}, clock), clock


def _journey(jid: str, *, priority: int = 0, group: str | None = None,
             trigger: str = "signed_up", audience: bool = False) -> Journey:
    return Journey(
        id=jid, trigger=EventTrigger(trigger), entry="wait", priority=priority,
        exclusive_group=group, audience=attr("vip") == True if audience else None,  # noqa: E712
        steps={"wait": Wait(DAY, next="send"), "send": Send("a", "email")},
    )


def _refusals(engine: Engine, customer: str) -> list[tuple[str, str, int, str | None, str | None]]:
    return [(a.journey_id, a.enrollment_id, a.version, a.step_id, a.detail)
            for a in engine.activities(T0, T0 + 30 * DAY, customer_id=customer)
            if a.kind == "not_entered"]


def test_an_exclusive_group_refusal_is_logged_and_counted(storage_factory: Factory) -> None:
    engine, _ = _engine(storage_factory)
    low, high = _journey("promo_low", priority=1, group="promos"), _journey(
        "promo_high", priority=5, group="promos")
    engine.publish(content=CONTENT, journeys=[low, high])
    engine.handle_event(_ev("signed_up", "ann", T0))
    reason = "exclusive group 'promos': in journey 'promo_high'"
    assert _refusals(engine, "ann") == [("promo_low", "", 1, None, reason)]
    report = journey_report(engine.storage, low)
    assert (report.entered, report.not_entered) == (0, 1)
    assert journey_report(engine.storage, high).not_entered == 0
    assert "not entered 1" in format_table([report])


def test_a_concurrency_limit_refusal_names_the_journeys_the_customer_is_in(
    storage_factory: Factory,
) -> None:
    engine, clock = _engine(storage_factory)
    engine.publish(content=CONTENT, max_concurrent_journeys=2, journeys=[
        _journey("j1", trigger="visited"), _journey("j2", trigger="visited"), _journey("j3"),
    ])
    engine.handle_event(_ev("visited", "ann", T0))
    clock.set(T0 + HOUR)
    engine.handle_event(_ev("signed_up", "ann", T0 + HOUR))
    assert _refusals(engine, "ann") == [
        ("j3", "", 1, None, "concurrency limit: in 2 journeys ('j1', 'j2'), at most 2"),
    ]
    assert journey_report(engine.storage, _journey("j3")).not_entered == 1


def test_a_paused_journey_logs_each_entry_it_refuses(storage_factory: Factory) -> None:
    engine, clock = _engine(storage_factory)
    drip = _journey("drip")
    engine.publish(content=CONTENT, journeys=[drip])
    engine.pause_journey("drip")
    for customer in ("ann", "bob"):
        engine.handle_event(_ev("signed_up", customer, T0))
        assert _refusals(engine, customer) == [("drip", "", 1, None, "paused")]
    assert journey_report(engine.storage, drip).not_entered == 2
    clock.set(T0 + HOUR)
    engine.resume_journey("drip")
    engine.handle_event(_ev("signed_up", "cat", T0 + HOUR))
    report = journey_report(engine.storage, drip)
    assert (report.entered, report.not_entered) == (1, 2)


def test_audience_and_reentry_refusals_are_not_logged(storage_factory: Factory) -> None:
    engine, clock = _engine(storage_factory)
    vip, drip = _journey("vip", audience=True), _journey("drip")
    engine.publish(content=CONTENT, journeys=[vip, drip])
    engine.handle_event(_ev("signed_up", "ann", T0))  # not a vip; enters drip
    clock.set(T0 + HOUR)
    engine.handle_event(_ev("signed_up", "ann", T0 + HOUR))  # already in drip
    assert _refusals(engine, "ann") == []
    assert journey_report(engine.storage, vip).not_entered == 0
    assert journey_report(engine.storage, drip).not_entered == 0


def test_the_report_shows_a_pause_and_the_customers_it_holds(storage_factory: Factory) -> None:
    engine, clock = _engine(storage_factory)
    drip = _journey("drip")
    engine.publish(content=CONTENT, journeys=[drip])
    for customer in ("ann", "bob"):
        engine.handle_event(_ev("signed_up", customer, T0))
    report = journey_report(engine.storage, drip)
    assert (report.paused_since, report.held) == (None, 0)
    clock.set(T0 + HOUR)
    engine.pause_journey("drip")
    report = journey_report(engine.storage, drip)
    assert (report.paused_since, report.held, report.active) == (T0 + HOUR, 0, 2)
    clock.set(T0 + 2 * DAY)
    engine.run_due()  # both waits fall due inside the pause: held
    report = journey_report(engine.storage, drip)
    assert (report.paused_since, report.held, report.active) == (T0 + HOUR, 2, 2)
    summary = format_table([report]).splitlines()[1]
    assert f"paused since {(T0 + HOUR).isoformat()}, held 2" in summary
    clock.set(T0 + 3 * DAY)
    engine.resume_journey("drip")
    report = journey_report(engine.storage, drip)
    assert (report.paused_since, report.held, report.completed) == (None, 0, 2)


def test_a_held_wake_up_shows_no_instant(storage_factory: Factory) -> None:
    engine, clock = _engine(storage_factory)
    engine.publish(content=CONTENT, journeys=[_journey("drip")])
    engine.handle_event(_ev("signed_up", "ann", T0))
    clock.set(T0 + HOUR)
    engine.pause_journey("drip")
    clock.set(T0 + 2 * DAY)
    engine.run_due()
    [enrollment] = engine.enrollments("ann")
    assert (enrollment.wake_at, enrollment.held_at) == (None, T0 + DAY)
    state = engine.customer_state("ann")
    assert state is not None
    assert [(e.wake_at, e.held_at) for e in state.enrollments] == [(None, T0 + DAY)]
    assert state.wake_at is None
    [exported] = engine.export_customer("ann")["record"]["enrollments"]
    assert (exported["wake_at"], exported["held_at"]) == (None, (T0 + DAY).isoformat())
    # What the engine keeps is untouched: the resume still runs the held wake-up.
    clock.set(T0 + 3 * DAY)
    out = engine.resume_journey("drip")
    assert [m.content_id for m in out.messages] == ["a"]
    assert engine.export_customer("ann")["record"]["enrollments"][0]["held_at"] is None


def test_a_waiting_enrollment_still_shows_its_wake_up(storage_factory: Factory) -> None:
    engine, _ = _engine(storage_factory)
    engine.publish(content=CONTENT, journeys=[_journey("drip")])
    engine.handle_event(_ev("signed_up", "ann", T0))
    [enrollment] = engine.enrollments("ann")
    assert (enrollment.wake_at, enrollment.held_at) == (T0 + DAY, None)
    [exported] = engine.export_customer("ann")["record"]["enrollments"]
    assert (exported["wake_at"], exported["held_at"]) == ((T0 + DAY).isoformat(), None)


def test_a_backtest_logs_and_reports_refusals_and_holds() -> None:
    drip = _journey("drip")
    defs = Definitions(journeys=(drip,), content=CONTENT)
    stream = [
        _ev("signed_up", "ann", T0),
        (T0 + HOUR, PauseJourney("drip")),
        _ev("signed_up", "bob", T0 + 2 * HOUR),  # refused: paused
    ]
    result = backtest(defs, stream, until=T0 + 2 * DAY, keep_activity=True)
    report = result.reports["drip"]
    assert (report.entered, report.not_entered) == (1, 1)
    assert (report.paused_since, report.held) == (T0 + HOUR, 1)
    assert _refusals(result.engine, "bob") == [("drip", "", 1, None, "paused")]
    resumed = backtest(defs, [*stream, (T0 + 3 * DAY, ResumeJourney("drip"))],
                       keep_activity=True)
    report = resumed.reports["drip"]
    assert (report.not_entered, report.paused_since, report.held) == (1, None, 0)


def test_an_export_of_the_previous_format_reads_as_the_current_one(
    storage_factory: Factory,
) -> None:
    engine, clock = _engine(storage_factory)
    engine.publish(content=CONTENT, journeys=[_journey("drip")])
    engine.handle_event(_ev("signed_up", "ann", T0))
    clock.set(T0 + HOUR)
    engine.pause_journey("drip")
    clock.set(T0 + 2 * DAY)
    engine.run_due()
    current = engine.export_customer("ann")
    assert current["format"] == EXPORT_FORMAT == 4
    assert upgrade_export(current) == current
    # Format 3: no message context.
    three = {**copy.deepcopy(current), "format": 3, "messages": [{"idempotency_key": "k"}]}
    assert upgrade_export(three) == {**current, "messages": [
        {"idempotency_key": "k", "context": {}}]}
    # Format 2, as it was written: no held_at nor carried_sends, and the held wake-up in the
    # year 9000.
    older = copy.deepcopy(current)
    older["format"] = 2
    for e in older["record"]["enrollments"]:
        del e["held_at"], e["carried_sends"]
        e["wake_at"] = "9000-01-01T00:00:00+00:00"
    upgraded = upgrade_export(older)
    [held] = upgraded["record"]["enrollments"]
    assert (upgraded["format"], held["wake_at"], held["held_at"], held["carried_sends"]) == (
        4, None, None, {}
    )
    assert older["format"] == 2  # a copy: the export given is left as it was
    erased = {"format": 2, "customer_id": "x", "record": None, "messages": [], "activities": []}
    assert upgrade_export(erased) == {**erased, "format": 4}


@pytest.mark.parametrize("given", [{"format": 1}, {"format": 5}, {"format": "3"}, {}, [3]])
def test_an_export_of_an_unknown_format_is_refused(given: object) -> None:
    with pytest.raises(UsageError, match=r"^upgrade_export reads exports of format 2 to 4, got "):
        upgrade_export(given)  # type: ignore[arg-type]
