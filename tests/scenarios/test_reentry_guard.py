"""The duplicate-trigger guard (``ReentryPolicy(..., guard=...)``), on every storage: a trigger
that comes too soon after the last entry starts nothing, even once that enrollment ended."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cjo import (
    ContentItem,
    Engine,
    EventTrigger,
    Journey,
    ManualClock,
    RecordingChannel,
    ReentryPolicy,
    Send,
    Variant,
    Wait,
)
from cjo.errors import DefinitionError
from cjo.model.definitions import Definitions
from cjo.serialization import dumps_definitions, loads_definitions
from tests.helpers import Factory
from tests.helpers import event_with_id as _event

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)




def _thanks(reentry: ReentryPolicy) -> Journey:
    # One send and done: the enrollment has ended before any duplicate arrives.
    return Journey("thanks", trigger=EventTrigger("ordered"), entry="mail",
                   steps={"mail": Send("note", "email")}, reentry=reentry)


def _engine(storage_factory: Factory, journey: Journey) -> tuple[Engine, ManualClock,
                                                                   RecordingChannel]:
    clock = ManualClock(T0)
    channel = RecordingChannel()
    engine = Engine(storage_factory(), channels={"email": channel}, clock=clock)
    engine.publish(journeys=[journey], content=[ContentItem("note", variants=(
        Variant("email", {"subject": "Thanks", "text": "Thank you"}),))])
    return engine, clock, channel


def test_a_duplicate_trigger_within_the_guard_sends_nothing_more(
    storage_factory: Factory,
) -> None:
    engine, clock, channel = _engine(
        storage_factory, _thanks(ReentryPolicy.after_exit(guard=5 * MINUTE)))
    first = engine.handle_event(_event("ordered", "c1", T0, "o1"))
    assert [e.status for e in first.ended] == ["completed"]
    clock.advance(timedelta(seconds=3))  # the same order, submitted twice
    assert engine.handle_event(_event("ordered", "c1", clock.now(), "o2")).entered == ()
    # In one group too, and for another customer nothing changes.
    clock.advance(MINUTE)
    out = engine.handle_events([_event("ordered", "c1", clock.now(), "o3"),
                                _event("ordered", "c2", clock.now(), "o4"),
                                _event("ordered", "c2", clock.now(), "o5")])
    assert [e.customer_id for e in out.entered] == ["c2"]
    # The window is half-open: exactly the guard after the entry, the trigger enters again.
    clock.set(T0 + 5 * MINUTE)
    assert [e.customer_id for e in
            engine.handle_event(_event("ordered", "c1", clock.now(), "o6")).entered] == ["c1"]
    assert [m.customer_id for m in channel.messages] == ["c1", "c2", "c1"]


def test_without_a_guard_the_duplicate_enters_again(storage_factory: Factory) -> None:
    engine, clock, channel = _engine(storage_factory, _thanks(ReentryPolicy.after_exit()))
    engine.handle_event(_event("ordered", "c1", T0, "o1"))
    clock.advance(timedelta(seconds=3))
    engine.handle_event(_event("ordered", "c1", clock.now(), "o2"))
    assert len(channel.messages) == 2


def test_the_guard_counts_from_the_last_entry_under_every_mode(
    storage_factory: Factory,
) -> None:
    journey = _thanks(ReentryPolicy.at_most(3, per=timedelta(days=1), guard=HOUR))
    engine, clock, channel = _engine(storage_factory, journey)
    for i in range(6):  # every 20 minutes: only one an hour gets in
        engine.handle_event(_event("ordered", "c1", clock.now(), f"o{i}"))
        clock.advance(20 * MINUTE)
    assert [m.created_at - T0 for m in channel.messages] == [timedelta(0), HOUR]


def test_keyed_instances_are_guarded_each_and_their_histories_do_not_pile_up(
    storage_factory: Factory,
) -> None:
    journey = Journey(
        "cart", trigger=EventTrigger("added_to_cart"), entry="wait",
        steps={"wait": Wait(MINUTE, next="mail"), "mail": Send("note", "email")},
        reentry=ReentryPolicy.after_exit(instance_key="cart_id", guard=HOUR),
    )
    engine, clock, channel = _engine(storage_factory, journey)
    engine.handle_event(_event("added_to_cart", "c1", T0, "a1", cart_id="A"))
    engine.handle_event(_event("added_to_cart", "c1", T0, "b1", cart_id="B"))
    clock.advance(10 * MINUTE)
    engine.run_due()  # both carts reminded, both instances ended
    out = engine.handle_events([_event("added_to_cart", "c1", clock.now(), "a2", cart_id="A"),
                                _event("added_to_cart", "c1", clock.now(), "c1", cart_id="C")])
    assert [e.enrollment_id.split(":")[2] for e in out.entered] == ["C"]
    clock.advance(2 * HOUR)
    engine.run_due()
    engine.handle_event(_event("added_to_cart", "c1", clock.now(), "d1", cart_id="D"))
    state = engine.customer_state("c1")
    assert state is not None
    # The ended carts whose guard has passed are forgotten; the one just entered is kept.
    assert sorted(k for j, k in state.history if j == "cart" and k is not None) == ["D"]
    clock.advance(10 * MINUTE)
    engine.run_due()
    assert sorted(m.enrollment_id.split(":")[2] for m in channel.messages) == [
        "A", "B", "C", "D"]


@pytest.mark.parametrize(("policy", "message"), [
    (ReentryPolicy("never", guard=MINUTE), "guard has no effect with mode 'never'"),
    # Every constructor takes a guard, so a guard given to never() is refused by cjo, by name.
    (ReentryPolicy.never(guard=MINUTE), "guard has no effect with mode 'never'"),
    (ReentryPolicy.after_exit(guard=timedelta(0)), "guard must be a positive duration"),
    (ReentryPolicy.after_exit(guard=timedelta(days=100_000)), "guard"),
])
def test_a_guard_that_cannot_work_is_refused_at_publish(
    policy: ReentryPolicy, message: str,
) -> None:
    engine = Engine(clock=ManualClock(T0), channels={"email": RecordingChannel()})
    with pytest.raises(DefinitionError, match=message) as raised:
        engine.publish(journeys=[_thanks(policy)], content=[ContentItem("note", variants=(
            Variant("email", {"subject": "Thanks", "text": "Thank you"}),))])
    assert "thanks" in str(raised.value) and "reentry" in str(raised.value)


def test_the_guard_round_trips_through_json() -> None:
    definitions = Definitions(journeys=(
        _thanks(ReentryPolicy.after_cooldown(HOUR, guard=5 * MINUTE)),))
    text = dumps_definitions(definitions)
    assert '"guard": 300' in text
    assert loads_definitions(text) == definitions


def test_the_guard_holds_across_processes(storage_factory: Factory) -> None:
    # The last entry instant is part of the stored record: another process (or a restart)
    # sees it.
    engine, clock, channel = _engine(
        storage_factory, _thanks(ReentryPolicy.after_exit(guard=5 * MINUTE)))
    engine.handle_event(_event("ordered", "c1", T0, "o1"))
    clock.advance(MINUTE)
    other = Engine(storage_factory(), channels={"email": channel}, clock=clock)
    assert other.handle_event(_event("ordered", "c1", clock.now(), "o2")).entered == ()
    clock.advance(5 * MINUTE)
    assert len(other.handle_event(_event("ordered", "c1", clock.now(), "o3")).entered) == 1
    assert len(channel.messages) == 2
