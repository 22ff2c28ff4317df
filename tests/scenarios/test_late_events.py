"""Order and lateness: an event stamped before the newest event already decided for its
customer is decided at now (default) or ignored, and recorded either way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest

from cjo import (
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    ExitCriterion,
    InactivityTrigger,
    Journey,
    ManualClock,
    RecordingChannel,
    Send,
    Storage,
    Topic,
    Variant,
    Wait,
    prop,
)
from tests.helpers import Factory

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
JOURNEY = Journey(
    id="cart", trigger=EventTrigger("added_to_cart"), entry="wait",
    exit_criteria=(ExitCriterion("bought", event="purchased"),),
    steps={"wait": Wait(4 * HOUR, next="nudge"), "nudge": Send("nudge", "email")},
)
CONTENT = (ContentItem("nudge", variants=(Variant("email", {"subject": "Note", "text": "Still there?"}),)),)


def _engine(late_events: str, storage: Storage | None = None
            ) -> tuple[Engine, ManualClock, RecordingChannel]:
    clock, email = ManualClock(T0), RecordingChannel()
    engine = Engine(storage, channels={"email": email}, clock=clock,
                    late_events=late_events)  # type: ignore[arg-type]
    engine.publish(journeys=[JOURNEY], content=CONTENT)
    return engine, clock, email


@pytest.mark.parametrize("rule", ["decide", "ignore"])
def test_a_late_event_follows_the_rule_and_is_recorded(
    rule: str, storage_factory: Factory
) -> None:
    engine, clock, email = _engine(rule, storage_factory())
    clock.set(T0 + 2 * HOUR)
    engine.handle_event(Event("ann", "added_to_cart", T0 + 2 * HOUR, {}, "e1"))
    # The purchase happened before the cart event, but arrives after it.
    out = engine.handle_event(Event("ann", "purchased", T0 + HOUR, {}, "e2"))
    log = engine.activities(T0, T0 + 10 * HOUR, customer_id="ann")
    late = [a for a in log if a.kind == "late_event"]
    assert len(late) == 1 and late[0].detail is not None
    assert late[0].detail.startswith("purchased stamped 2026-03-02T10:00:00+00:00")
    clock.advance(5 * HOUR)
    engine.run_due()
    if rule == "decide":
        assert [(e.status, e.reason) for e in out.ended] == [("exited", "bought")]
        assert email.messages == []
    else:
        assert out.ended == ()
        assert [m.content_id for m in email.messages] == ["nudge"]


@pytest.mark.parametrize("grouped", [False, True])
def test_ignored_late_opt_outs_and_blocks_still_reach_the_record(
    grouped: bool, storage_factory: Factory
) -> None:
    clock, email = ManualClock(T0), RecordingChannel()
    engine = Engine(storage_factory(), channels={"email": email}, clock=clock,
                    late_events="ignore")
    engine.publish(journeys=[JOURNEY], topics=[Topic("news")],
                   content=[attrs.evolve(CONTENT[0], topic="news")])
    clock.set(T0 + 2 * HOUR)
    engine.handle_event(Event("ann", "added_to_cart", T0 + 2 * HOUR, {}, "e1"))
    engine.handle_event(Event("bob", "added_to_cart", T0 + 2 * HOUR, {}, "e2"))
    # Said before the cart events, arriving after them: journeys ignore them, consent does not.
    late = [Event("ann", "unsubscribed", T0 + HOUR, {"topic": "news"}, "e3"),
            Event("bob", "channel_blocked", T0 + HOUR, {"channel": "email"}, "e4")]
    if grouped:
        engine.handle_events(late)
    else:
        for event in late:
            engine.handle_event(event)
    clock.advance(5 * HOUR)
    engine.run_due()
    assert email.messages == []
    assert [(a.customer_id, a.kind, a.detail) for a in engine.activities(T0, T0 + 10 * HOUR)
            if a.kind == "suppressed"] == [
        ("ann", "suppressed", "unsubscribed from news"),
        ("bob", "suppressed", "channel blocked: blocked"),
    ]


def test_only_events_that_changed_something_set_the_decided_instant() -> None:
    clock, email = ManualClock(T0 + 3 * HOUR), RecordingChannel()
    engine = Engine(channels={"email": email}, clock=clock)
    engine.publish(content=CONTENT, journeys=[attrs.evolve(
        JOURNEY, exit_criteria=(ExitCriterion("bought", "purchased", prop("sku") == "x"),),
    )])
    engine.handle_event(Event("ann", "added_to_cart", T0 + HOUR, {}, "e1"))
    # Read by the exit criterion, but changes nothing: not counted as decided.
    engine.handle_event(Event("ann", "purchased", T0 + 3 * HOUR, {"sku": "y"}, "e2"))
    out = engine.handle_event(Event("ann", "purchased", T0 + 2 * HOUR, {"sku": "x"}, "e3"))
    assert [e.reason for e in out.ended] == ["bought"]
    log = engine.activities(T0, T0 + 10 * HOUR)
    assert [a for a in log if a.kind == "late_event"] == []


@pytest.mark.parametrize("rule", ["decide", "ignore"])
def test_a_late_event_nothing_reads_is_not_logged_in_a_group_either(
    rule: str, storage_factory: Factory
) -> None:
    # "purchased" matters only to customers in the cart journey. Ann is not in it: alone, the
    # late purchase is skipped unseen; in a group after an event that changed Ann's record,
    # it reaches the decider, and must leave the same log.
    logs = []
    for group in (False, True):
        engine, clock, _ = _engine(rule, storage_factory())
        engine.publish(journeys=[Journey("visits", trigger=EventTrigger("visited"), entry="w",
                                         steps={"w": Wait(HOUR)})])
        clock.set(T0 + 2 * HOUR)
        cid = "bob" if group else "ann"  # one database for both runs: a customer each
        items = [Event(cid, "visited", T0 + 2 * HOUR, {}, f"v1-{cid}"),
                 Event(cid, "purchased", T0 + HOUR, {}, f"p1-{cid}")]  # before the visit
        if group:
            engine.handle_events(items)
        else:
            for item in items:
                engine.handle_event(item)
        logs.append([(a.kind, a.detail) for a in engine.activities(T0, T0 + 4 * HOUR,
                                                                   customer_id=cid)])
    assert logs[0] == logs[1] and ("entered", None) in logs[1]
    assert "late_event" not in [kind for kind, _ in logs[1]]


def test_an_event_nothing_reads_is_not_claimed_in_a_group_either(
    storage_factory: Factory,
) -> None:
    # Alone, an event that nothing of Ann's reads costs a look-up and its id is not claimed,
    # so the same event sent again once she is in the cart journey ends her wait. In a group
    # after an event that changed her record, it must not be claimed either.
    outcomes = []
    for group in (False, True):
        engine, clock, _ = _engine("decide", storage_factory())
        engine.publish(journeys=[Journey("visits", trigger=EventTrigger("visited"), entry="w",
                                         steps={"w": Wait(HOUR)})])
        cid = "bob" if group else "ann"  # one database for both runs: a customer each
        items = [Event(cid, "visited", T0, {}, f"v1-{cid}"),
                 Event(cid, "purchased", T0, {}, f"p1-{cid}")]
        if group:
            engine.handle_events(items)
        else:
            for item in items:
                engine.handle_event(item)
        engine.handle_event(Event(cid, "added_to_cart", T0, {}, f"c1-{cid}"))
        clock.set(T0 + HOUR)
        again = engine.handle_event(Event(cid, "purchased", T0 + HOUR, {}, f"p1-{cid}"))
        outcomes.append((again.duplicate, [(e.journey_id, e.reason) for e in again.ended]))
    assert outcomes[0] == outcomes[1] == (False, [("visits", None), ("cart", "bought")])


@pytest.mark.parametrize("worker_on_time", [True, False])
def test_a_late_purchase_stamped_before_the_win_back_fired_does_not_fire_it_again(
    worker_on_time: bool, storage_factory: Factory
) -> None:
    day = timedelta(days=1)
    clock, email = ManualClock(T0), RecordingChannel()
    engine = Engine(storage_factory(), channels={"email": email}, clock=clock)
    engine.publish(content=CONTENT, journeys=[Journey(
        "win_back", trigger=InactivityTrigger("purchased", after=14 * day), entry="mail",
        steps={"mail": Send("nudge", "email")})])
    engine.identify("ann", {"email": "ann@example.com"})
    if worker_on_time:
        clock.set(T0 + 14 * day)
        engine.run_due()
    clock.set(T0 + 20 * day)
    # Fired at +14 days (quiet since creation); a purchase of day 1 arrives only now. Ann has
    # been quiet since then: one quiet spell, one win-back.
    engine.handle_event(Event("ann", "purchased", T0 + day, {}, "p1"))
    clock.set(T0 + 60 * day)
    engine.run_due()
    assert [m.created_at for m in email.messages] == [T0 + 14 * day]
    # A purchase after the firing starts a new spell.
    clock.set(T0 + 70 * day)
    engine.handle_event(Event("ann", "purchased", T0 + 70 * day, {}, "p2"))
    clock.set(T0 + 90 * day)
    engine.run_due()
    assert [m.created_at for m in email.messages] == [T0 + 14 * day, T0 + 84 * day]
