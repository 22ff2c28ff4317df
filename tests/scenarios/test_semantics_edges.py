"""Edges of the documented semantics: schedules across a clock change and at the publish
instant, identity merge of keyed instances and across journeys, and waits as long as a
journey's lifetime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cjo import (
    ContentItem,
    Engine,
    Event,
    Journey,
    ManualClock,
    RecordingChannel,
    ReentryPolicy,
    ScheduleTrigger,
    Send,
    Variant,
    Wait,
    WaitForEvent,
    attr,
    ctx,
    prop,
)
from cjo.errors import DefinitionError
from cjo.model.triggers import EventTrigger
from cjo.runtime.kinds.schedule import latest_occurrence, next_occurrence
from cjo.simulate import backtest
from cjo.storage.base import Storage
from cjo.storage.memory import InMemoryStorage
from tests.helpers import Factory

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
NOTE = ContentItem("note", variants=(Variant("email", {
    "subject": "Hi", "text": "{{ context.scheduled_at | default: 'hello' }}",
}),))


def _engine(start: datetime, storage: Storage | None = None, **kw: object) -> tuple[
    Engine, ManualClock, RecordingChannel
]:
    clock, email = ManualClock(start), RecordingChannel()
    engine = Engine(storage or InMemoryStorage(), {"email": email}, clock, **kw)  # type: ignore[arg-type]
    return engine, clock, email


def _event(name: str, customer: str, at: datetime, event_id: str, **properties: object) -> Event:
    return Event(customer_id=customer, name=name, timestamp=at, properties=properties,
                 event_id=event_id)


def _scheduled(cron: str, zone: str | None = None) -> Journey:
    return Journey("s", trigger=ScheduleTrigger(cron, zone), entry="m",
                   steps={"m": Send("note", "email")},
                   reentry=ReentryPolicy.at_most(100, per=HOUR))


# --- schedules across the autumn clock change --------------------------------------------------

# The night the clocks go back in each zone: (zone, an instant some hours before, wall hour
# that repeats).
AUTUMN = [
    ("Europe/Paris", datetime(2026, 10, 24, 12, tzinfo=UTC), 2),
    ("America/New_York", datetime(2026, 10, 31, 12, tzinfo=UTC), 1),
]


def _run_every(engine: Engine, clock: ManualClock, hours: int, step: timedelta) -> None:
    end = clock.now() + timedelta(hours=hours)
    while clock.now() < end:
        clock.advance(step)
        engine.run_due()


def _local_runs(email: RecordingChannel, zone: str) -> list[str]:
    return [m.created_at.astimezone(ZoneInfo(zone)).strftime("%d %H:%M")
            for m in email.messages]


@pytest.mark.parametrize(("zone", "start", "hour"), AUTUMN)
def test_a_daily_schedule_at_a_repeated_wall_time_runs_once(
    zone: str, start: datetime, hour: int,
) -> None:
    engine, clock, email = _engine(start)
    engine.publish(journeys=[_scheduled(f"30 {hour} * * *", zone)], content=[NOTE])
    engine.identify("ann", {})
    _run_every(engine, clock, 30, 15 * MINUTE)
    (run,) = email.messages
    local = run.created_at.astimezone(ZoneInfo(zone))
    assert (local.hour, local.minute, local.fold) == (hour, 30, 0)  # the first pass


@pytest.mark.parametrize(("zone", "start", "hour"), AUTUMN)
def test_an_hourly_schedule_runs_once_per_wall_clock_hour_on_the_autumn_night(
    zone: str, start: datetime, hour: int,
) -> None:
    engine, clock, email = _engine(start)
    engine.publish(journeys=[_scheduled("30 * * * *", zone)], content=[NOTE])
    engine.identify("ann", {})
    _run_every(engine, clock, 24, 5 * MINUTE)
    runs = _local_runs(email, zone)
    # 24 hours of real time hold 24 half-past instants, one of them a repeated wall time.
    assert len(runs) == len(set(runs)) == 23
    assert sum(r.endswith(f"{hour:02d}:30") for r in runs) == 1


@pytest.mark.parametrize(("zone", "start", "hour"), AUTUMN)
def test_occurrences_skip_the_second_pass_of_a_repeated_wall_time(
    zone: str, start: datetime, hour: int,
) -> None:
    trigger = ScheduleTrigger("*/30 * * * *", zone)
    found, at = [], start
    for _ in range(48):
        at = next_occurrence(trigger, at)
        found.append(at.astimezone(UTC))  # UTC: arithmetic in a zone is wall-clock arithmetic
    assert found == sorted(set(found))
    walls = [f.astimezone(ZoneInfo(zone)).strftime("%d %H:%M") for f in found]
    assert len(walls) == len(set(walls))
    # Inside the repeated hour, the latest occurrence is still the first pass's.
    first_half = next(f for f in found if f.astimezone(ZoneInfo(zone)).hour == hour)
    second_pass = first_half + HOUR + 45 * MINUTE
    # (Compared in UTC: an ambiguous wall time never equals an instant of another zone.)
    latest = latest_occurrence(trigger, second_pass).astimezone(UTC)
    assert latest == first_half + 30 * MINUTE
    assert next_occurrence(trigger, latest).astimezone(UTC) == first_half + 2 * HOUR


def test_the_spring_gap_still_runs_at_its_end() -> None:
    engine, clock, email = _engine(datetime(2026, 3, 28, 12, tzinfo=UTC))
    engine.publish(journeys=[_scheduled("30 2 * * *", "Europe/Paris")], content=[NOTE])
    engine.identify("ann", {})
    _run_every(engine, clock, 30, 15 * MINUTE)
    assert _local_runs(email, "Europe/Paris") == ["29 03:00"]


# --- an occurrence at the publish instant -------------------------------------------------------


@pytest.mark.parametrize(("published", "runs"), [
    (T0 - MINUTE, [T0]), (T0, [T0]), (T0 + MINUTE, []),
])
def test_an_occurrence_at_the_publish_instant_runs(
    published: datetime, runs: list[datetime],
) -> None:
    engine, clock, email = _engine(published)
    engine.identify("ann", {})
    engine.publish(journeys=[_scheduled("0 9 * * *")], content=[NOTE])
    clock.set(T0 + 2 * MINUTE)
    engine.run_due()
    engine.run_due()
    assert [m.fields["text"] for m in email.messages] == [r.isoformat() for r in runs]


def test_a_backtest_from_an_occurrence_runs_it_as_a_live_publish_would() -> None:
    from cjo import Definitions, ProfileUpdate

    definitions = Definitions(journeys=(_scheduled("0 9 * * *"),), content=(NOTE,))
    inputs = [(T0, ProfileUpdate("ann", {"a": 1})), _event("x", "ann", T0 + DAY, "1")]
    # The occurrence at the start runs before the input stamped then: nobody is known yet.
    started = backtest(definitions, inputs, start=T0, until=T0 + DAY + HOUR)
    assert started.entered == {"s": 1}
    before = backtest(definitions, [(T0 - HOUR, ProfileUpdate("ann", {"a": 1})), *inputs[1:]],
                      start=T0 - HOUR, until=T0 + DAY + HOUR)
    assert before.entered == {"s": 2}


# --- identity merge ----------------------------------------------------------------------------


def test_a_merge_moves_the_keyed_instances_the_known_customer_lacks(
    storage_factory: Factory,
) -> None:
    same_cart = prop("cart_id") == ctx("cart_id")
    cart = Journey("cart", trigger=EventTrigger("add"), entry="w",
                   steps={"w": WaitForEvent("buy", timeout=4 * HOUR, on_timeout="m",
                                            where=same_cart),
                          "m": Send("note", "email")},
                   reentry=ReentryPolicy.after_exit(instance_key="cart_id"))
    engine, clock, email = _engine(T0, storage_factory())
    engine.publish(journeys=[cart], content=[NOTE])
    for n, (customer, cart_id) in enumerate(
        [("anon", "A"), ("ada", "B"), ("anon", "C"), ("ada", "C")]
    ):
        engine.handle_event(_event("add", customer, T0, str(n), cart_id=cart_id))
    clock.advance(HOUR)
    out = engine.identify("ada", {}, anonymous_id="anon")
    assert [(e.enrollment_id.split(":")[2], e.status) for e in out.ended] == [("C", "merged")]
    active = sorted(e.instance_key or "" for e in engine.enrollments("ada") if e.active)
    assert active == ["A", "B", "C"]
    clock.advance(4 * HOUR)
    engine.run_due()
    assert sorted(m.enrollment_id.split(":")[2] for m in email.messages) == ["A", "B", "C"]


def _promo(journey_id: str, trigger: str, priority: int, group: str | None = "promos") -> Journey:
    return Journey(journey_id, trigger=EventTrigger(trigger), entry="w", priority=priority,
                   exclusive_group=group,
                   steps={"w": Wait(DAY, next="m"), "m": Send("note", "email")})


@pytest.mark.parametrize(("anonymous_priority", "known_priority", "stays"), [
    (1, 2, "b"), (2, 1, "a"), (0, 0, "a"),   # a tie goes by journey id
])
def test_after_a_merge_an_exclusive_group_keeps_its_highest_priority_journey(
    storage_factory: Factory, anonymous_priority: int, known_priority: int, stays: str,
) -> None:
    engine, clock, email = _engine(T0, storage_factory())
    engine.publish(journeys=[_promo("a", "x", anonymous_priority),
                             _promo("b", "y", known_priority)], content=[NOTE])
    engine.handle_event(_event("x", "anon", T0, "1"))
    engine.handle_event(_event("y", "ada", T0, "2"))
    out = engine.identify("ada", {}, anonymous_id="anon")
    gone = "b" if stays == "a" else "a"
    assert [(e.journey_id, e.status) for e in out.ended] == [(gone, "merged")]
    (ended,) = out.ended
    assert ended.reason is not None
    assert f"exclusive group 'promos': in journey {stays!r}" in ended.reason
    assert [e.journey_id for e in engine.enrollments("ada") if e.active] == [stays]
    clock.advance(2 * DAY)
    engine.run_due()
    assert [m.journey_id for m in email.messages] == [stays]


def test_after_a_merge_the_concurrency_limit_holds() -> None:
    engine, _, _ = _engine(T0)
    engine.publish(journeys=[_promo("p", "p", 0, None), _promo("q", "q", 3, None),
                             _promo("r", "r", 1, None)],
                   content=[NOTE], max_concurrent_journeys=2)
    engine.handle_event(_event("p", "anon", T0, "1"))
    engine.handle_event(_event("q", "anon", T0, "2"))
    engine.handle_event(_event("r", "ada", T0, "3"))
    out = engine.identify("ada", {}, anonymous_id="anon")
    assert [(e.journey_id, e.status) for e in out.ended] == [("p", "merged")]
    assert sorted(e.journey_id for e in engine.enrollments("ada") if e.active) == ["q", "r"]


def test_a_merge_bringing_no_enrollment_ends_nothing() -> None:
    engine, _, _ = _engine(T0)
    engine.publish(journeys=[_promo("p", "p", 0, None), _promo("q", "q", 0, None)],
                   content=[NOTE])
    engine.handle_event(_event("p", "ada", T0, "1"))
    engine.handle_event(_event("q", "ada", T0, "2"))
    engine.identify("anon", {"seen": True})
    engine.publish(max_concurrent_journeys=1)  # tightened afterwards: nobody is taken out
    out = engine.identify("ada", {}, anonymous_id="anon")
    assert out.ended == ()
    assert sorted(e.journey_id for e in engine.enrollments("ada") if e.active) == ["p", "q"]


# --- waits and the journey's lifetime ----------------------------------------------------------


@pytest.mark.parametrize("step", [
    Wait(DAY, next="m"),
    WaitForEvent("buy", timeout=DAY, on_event="m", on_timeout="m"),
])
def test_a_wait_as_long_as_the_lifetime_is_refused(step: Wait | WaitForEvent) -> None:
    journey = Journey("j", trigger=EventTrigger("go"), entry="w", max_lifetime=DAY,
                      steps={"w": step, "m": Send("note", "email")})
    engine, _, _ = _engine(T0)
    with pytest.raises(DefinitionError) as raised:
        engine.publish(journeys=[journey], content=[NOTE])
    (problem,) = raised.value.problems
    assert problem.location == "journey 'j' v1 / step 'w'"
    assert "as long as the journey's max_lifetime 1d" in problem.message


def test_a_wait_shorter_than_the_lifetime_reaches_the_next_step() -> None:
    journey = Journey("j", trigger=EventTrigger("go"), entry="w", max_lifetime=DAY,
                      steps={"w": Wait(DAY - MINUTE, next="m"), "m": Send("note", "email")})
    engine, clock, email = _engine(T0)
    engine.publish(journeys=[journey], content=[NOTE])
    engine.handle_event(_event("go", "ann", T0, "1"))
    clock.advance(2 * DAY)
    engine.run_due()
    assert len(email.messages) == 1


def test_an_entry_without_its_instance_key_says_why_it_entered_no_one(
    storage: Storage,
) -> None:
    # start_journey is the host asking for an entry: one that silently does nothing cannot
    # be told from one the re-entry rules refused.
    cart = Journey("cart", trigger=EventTrigger("add"), entry="w", steps={"w": Wait(HOUR)},
                   reentry=ReentryPolicy.after_exit(instance_key="cart_id"))
    engine, _clock, _email = _engine(T0, storage)
    engine.publish(journeys=[cart])
    for outcome in (engine.start_journey("cart", "ada", {"item": "tent"}),
                    engine.start_journey("cart", "ada", {"cart_id": None}),
                    engine.handle_event(_event("add", "ada", T0, "a1", item="tent"))):
        assert outcome.entered == ()
        assert [(n.journey_id, n.reason) for n in outcome.not_entered] == [
            ("cart", "instance key 'cart_id' is missing")]
    assert engine.enrollments("ada") == []
    assert len(engine.start_journey("cart", "ada", {"cart_id": "A"}).entered) == 1



def test_a_refused_start_journey_says_why(storage_factory: Factory) -> None:
    # An explicit start is a request: one that enters no one says why, whatever kept them out.
    engine, clock, _ = _engine(T0, storage_factory())
    engine.publish(content=[NOTE], journeys=[
        Journey(id="api", entry="w", steps={"w": Wait(HOUR)},
                reentry=ReentryPolicy.after_cooldown(DAY)),
        Journey(id="vip", entry="w", steps={"w": Wait(HOUR)}, audience=attr("tier") == "gold"),
        Journey(id="cart", entry="w", steps={"w": Wait(HOUR)},
                reentry=ReentryPolicy(instance_key="cart_id")),
    ])
    engine.identify("ann", {"tier": "silver"})

    def refused(journey_id: str, **context: object) -> list[str]:
        out = engine.start_journey(journey_id, "ann", context)
        return [n.reason for n in out.not_entered if n.journey_id == journey_id]

    assert refused("api") == []                                    # entered
    assert refused("api") == ["already in the journey"]
    clock.advance(2 * HOUR)
    engine.run_due()                                               # done with it
    assert refused("api") == [
        "the re-entry rule (after_cooldown) does not allow it now"]
    clock.advance(DAY)
    assert refused("api") == []                                    # the cooldown has passed
    assert refused("vip") == ["the audience does not match"]
    assert refused("cart", cart_id="A") == []
    assert refused("cart", cart_id="A") == ["already in the journey for instance 'A'"]
    assert refused("cart", cart_id="B") == []
    # A trigger's refusals are not listed: every event of a customer already in would be.
    engine.publish(journeys=[Journey(id="go", trigger=EventTrigger("go"), entry="w",
                                     steps={"w": Wait(HOUR)})])
    engine.handle_event(_event("go", "ann", clock.now(), "g1"))
    assert engine.handle_event(_event("go", "ann", clock.now(), "g2")).not_entered == ()


def test_keyed_instances_of_customers_whose_ids_hold_colons_get_ids_of_their_own(
    storage: Storage,
) -> None:
    # Customer 'ann:x' with cart '1' and customer 'ann' with cart 'x:1', entered at one instant:
    # ids (and so idempotency keys) shared between them would let one message stand for both.
    cart = Journey("cart", trigger=EventTrigger("add"), entry="m", steps={"m": Send("note", "email")},
                   reentry=ReentryPolicy.after_exit(instance_key="cart_id"))
    engine, _clock, email = _engine(T0, storage)
    engine.publish(journeys=[cart], content=[NOTE])
    out = engine.handle_events([_event("add", "ann:x", T0, "a1", cart_id="1"),
                                _event("add", "ann", T0, "a2", cart_id="x:1"),
                                _event("add", "ann", T0, "a3", cart_id="x%3A1")])
    assert len({e.enrollment_id for e in out.entered}) == 3
    engine.run_due()
    assert sorted((m.customer_id, m.enrollment_id) for m in email.messages) == [
        ("ann", "cart:ann:x%253A1:2.64c06cfcb8400"),
        ("ann", "cart:ann:x%3A1:1.64c06cfcb8400"),
        ("ann:x", "cart:ann%3Ax:1:1.64c06cfcb8400"),
    ]
    # The key itself is kept as given.
    assert [e.instance_key for e in engine.enrollments("ann:x")] == ["1"]


def test_journeys_and_customers_whose_ids_hold_colons_get_enrollment_ids_of_their_own(
    storage: Storage,
) -> None:
    # Journey 'promo:vip' with customer 'ann' and journey 'promo' with customer 'vip:ann',
    # entered at one instant, once wrote the same enrollment id: their messages then shared an
    # idempotency key, and the outbox kept only one of them. So did two versions of a journey,
    # one keyed and one not, for customer 'ann:x' and customer 'ann' with key 'x'.
    def journey(jid: str, version: int = 1, key: str | None = None, on: str = "go") -> Journey:
        return Journey(jid, trigger=EventTrigger(on), entry="m", version=version,
                       steps={"m": Send("note", "email")},
                       reentry=ReentryPolicy.after_exit(instance_key=key))

    engine, _clock, email = _engine(T0, storage)
    engine.publish(journeys=[journey("promo:vip"), journey("promo")], content=[NOTE])
    out = engine.handle_events([_event("go", "ann", T0, "g1"), _event("go", "vip:ann", T0, "g2")])
    assert len({e.enrollment_id for e in out.entered}) == len(out.entered) == 4
    engine.run_due()
    assert sorted((m.journey_id, m.customer_id) for m in email.messages) == [
        ("promo", "ann"), ("promo", "vip:ann"), ("promo:vip", "ann"), ("promo:vip", "vip:ann")]

    engine.publish(journeys=[journey("x", on="come")])
    engine.handle_event(_event("come", "ann:k", T0, "h1"))
    engine.publish(journeys=[journey("x", 2, key="cart", on="come")])
    engine.handle_event(_event("come", "ann", T0, "h2", cart="k"))
    engine.run_due()
    assert len({m.idempotency_key for m in email.messages}) == len(email.messages) == 6
