"""Ways of driving the engine that must decide the same: a back-test and a live engine, groups and
single events, a worker on time and a worker that comes only at the end.

Each property runs random valid journeys (``journeys.py``) over random streams for a few
customers and compares what the channels received (every field of every message) and each
customer's record (all but ``revision``, which counts writes), and the journey reports.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

import attrs
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from cjo import simulate
from cjo.analytics.report import journey_report
from cjo.channels.recording import RecordingChannel
from cjo.clock import ManualClock
from cjo.conditions import attr
from cjo.engine import Engine
from cjo.errors import UsageError
from cjo.limits import DEFAULT_LIMITS, Limits
from cjo.model.definitions import Definitions
from cjo.model.events import Event, ProfileUpdate
from cjo.model.governance import in_control_group
from cjo.model.journey import ExitCriterion, Goal, Journey, ReentryPolicy
from cjo.model.steps import Send, Wait, WaitForEvent
from cjo.model.triggers import EventTrigger, InactivityTrigger
from cjo.scheduling import next_schedule_run
from cjo.simulate import (
    BacktestInput,
    BacktestResult,
    Identify,
    OperatorChange,
    PauseJourney,
    Publish,
    Withdraw,
    backtest,
)
from cjo.storage.memory import InMemoryStorage
from tests.property.journeys import (
    CHANNELS,
    CONTENT,
    CUSTOMERS,
    SEGMENTS,
    T0,
    Input,
    definitions,
    grouped_streams,
    streams,
)

#: Past every instant a stream and its waits reach.
END = T0 + timedelta(days=30)

SETTINGS = settings(max_examples=int(os.environ.get("CJO_PROPERTY_EXAMPLES", "75")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# A worker that never comes late has no storm to hold back; one that comes only at the end
# would meet the catch-up limit, which is a deliberate difference (tested elsewhere).
NO_CATCH_UP_LIMIT = attrs.evolve(DEFAULT_LIMITS, max_messages_per_catch_up=10**9)


def new_engine(defs: Definitions, *, render: bool = True, limits: Limits = DEFAULT_LIMITS,
               **options: Any) -> tuple[Engine, ManualClock]:
    clock = ManualClock(T0)
    channels = {name: RecordingChannel() for name in CHANNELS}
    engine = Engine(InMemoryStorage(), channels, clock, render=render, limits=limits, **options)
    engine.publish(defs)
    return engine, clock


def on_time(engine: Engine, clock: ManualClock, at: datetime, *, before: bool = False) -> None:
    """Move to ``at`` with a worker that fires every wake-up, and runs every schedule
    occurrence, at its own instant (``before``: only those before ``at``)."""
    previous = None
    while True:
        due = [t for t in (engine.storage.next_wake_at(), next_schedule_run(engine))
               if t is not None and (t < at if before else t <= at)]
        if not due:
            break
        wake = min(due)
        assert wake != previous, "a due wake-up was not fired"
        clock.set(wake)
        engine.run_due(wake)
        previous = wake
    clock.set(at)


def apply(engine: Engine, update: ProfileUpdate) -> None:
    engine.identify(update.customer_id, update.attributes, unset=update.unset,
                    timezone=update.timezone, locale=update.locale)


def live(defs: Definitions, stream: Sequence[BacktestInput], *, render: bool = True,
         worker: str = "on_time", limits: Limits = DEFAULT_LIMITS,
         **options: Any) -> Engine:
    """A live engine with its clock set to each input's instant before it is handled.

    ``worker``: ``on_time`` fires every wake-up at its instant (before an operator's change,
    those before its instant); ``before_input`` calls ``run_due(t)`` before the input at
    ``t``; ``at_end`` calls ``run_due`` once, at the end. ``options``: more engine options.
    """
    engine, clock = new_engine(defs, render=render, limits=limits, **options)
    drive(engine, clock, stream, worker)
    return engine


def drive(engine: Engine, clock: ManualClock, stream: Sequence[BacktestInput],
          worker: str = "on_time") -> None:
    """Feed ``stream`` to ``engine`` as ``live`` does, with ``worker`` coming as it says."""

    def move_before(at: datetime) -> None:
        on_time(engine, clock, at, before=True)

    last = play(engine, stream, lambda at: arrive(engine, clock, at, worker),
                move_before if worker == "on_time" else None)
    if last is not None:
        settle(engine, clock, last, worker)


def drive_groups(engine: Engine, clock: ManualClock,
                 groups: Sequence[tuple[datetime, Sequence[Event | ProfileUpdate]]],
                 worker: str = "on_time") -> None:
    """Hand each group to ``handle_events`` at its instant, ``worker`` coming as in ``live``."""
    for at, items in groups:
        arrive(engine, clock, at, worker)
        engine.handle_events(items)
    if groups:
        settle(engine, clock, groups[-1][0], worker)


def arrive(engine: Engine, clock: ManualClock, at: datetime, worker: str) -> None:
    """Move to ``at``, the instant of the next input, with ``worker`` coming as it says."""
    if worker == "on_time":
        on_time(engine, clock, at)
    else:
        clock.set(at)
        if worker == "before_input":
            engine.run_due(at)


def settle(engine: Engine, clock: ManualClock, last: datetime, worker: str) -> None:
    """After the last input (at ``last``): what the worker has still to fire by then."""
    if worker == "on_time":
        on_time(engine, clock, last)
    else:
        engine.run_due(last)


def merge(engine: Engine, merge: Identify) -> None:
    """An identity merge, made live at the clock's now, as a host makes it at a log-in."""
    engine.identify(merge.customer_id, merge.attributes, unset=merge.unset,
                    timezone=merge.timezone, locale=merge.locale,
                    anonymous_id=merge.anonymous_id)


def make(engine: Engine, change: OperatorChange, at: datetime) -> None:
    """An operator's change, made live at ``at`` (the clock's now), and the worker on time
    that runs right after it: what falls due at ``at`` fires, a schedule occurrence at it (or
    the latest one a resumed journey missed) runs, segments a publish changed are evaluated."""
    if isinstance(change, Publish):
        engine.publish(change.definitions, running=change.running)
    elif isinstance(change, PauseJourney):
        engine.pause_journey(change.journey_id)
    elif isinstance(change, Withdraw):
        engine.withdraw(segments=change.segments, content=change.content, blocks=change.blocks,
                        offers=change.offers, topics=change.topics, caps=change.caps,
                        quiet_hours=change.quiet_hours, profile_rules=change.profile_rules)
    else:
        engine.resume_journey(change.journey_id)
    engine.run_due(at)


def play(engine: Engine, stream: Sequence[BacktestInput], move: Callable[[datetime], object],
         move_before: Callable[[datetime], object] | None = None) -> datetime | None:
    """Handle ``stream``, calling ``move(at)`` before each timed input; returns the last
    instant (None: no timed input). Bare profile updates take the next timed input's instant,
    or the last one's. An operator's change (``(at, Publish(...))``...) is made at its instant,
    after ``move_before(at)`` when given and no bare update takes its instant; an identity
    merge (``(at, Identify(...))``) after ``move(at)``, as an event."""
    floating: list[ProfileUpdate] = []
    last = None
    for item in stream:
        if isinstance(item, ProfileUpdate):
            floating.append(item)
            continue
        at = item.timestamp if isinstance(item, Event) else item[0]
        change = None if isinstance(item, Event) or isinstance(
            item[1], ProfileUpdate | Identify
        ) else item[1]
        if change is not None and move_before is not None and not floating:
            move_before(at)
        else:
            move(at)
        last = at
        for update in floating:
            apply(engine, update)
        floating = []
        if change is not None:
            make(engine, change, at)
        elif isinstance(item, Event):
            engine.handle_event(item)
        elif isinstance(item[1], Identify):
            merge(engine, item[1])
        else:
            assert isinstance(item[1], ProfileUpdate)
            apply(engine, item[1])
    if last is not None:
        for update in floating:
            apply(engine, update)
    return last


def deliveries(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name, channel in engine.channels.items():
        assert isinstance(channel, RecordingChannel)
        messages = sorted(channel.messages, key=lambda m: m.idempotency_key)
        out[name] = [attrs.asdict(m) for m in messages]
    return out


def states(engine: Engine, customers: Iterable[str] = CUSTOMERS) -> dict[str, Any]:
    out = {}
    for cid in customers:
        state = engine.customer_state(cid)
        out[cid] = None if state is None else attrs.evolve(state, revision=0)
    return out


def assert_no_control_messages(engine: Engine, defs: Definitions) -> None:
    """Nothing (these journeys send nothing transactional) reaches the control group."""
    for channel in engine.channels.values():
        assert isinstance(channel, RecordingChannel)
        for m in channel.messages:
            assert not in_control_group(m.customer_id, defs.control_group), m


def reports(engine: Engine, defs: Definitions) -> list[Any]:
    return [journey_report(engine.storage, j) for j in defs.journeys]


def assert_same(a: Engine, b: Engine, defs: Definitions) -> None:
    assert_no_control_messages(a, defs)
    assert deliveries(a) == deliveries(b)
    assert states(a) == states(b)
    assert reports(a, defs) == reports(b, defs)


# --- (a) a back-test decides what a live engine decides ----------------------------------------


def _redelivered_id() -> tuple[Definitions, list[Input]]:
    """c0's wait for ``c`` times out at 08:01, when ``c`` arrives: the timeout fires first, so
    ``c`` then matters to no journey of theirs, its event id is not claimed, and ``a``
    (reusing that id) still starts j1."""
    waits = Journey(id="j0", entry="s0", steps={"s0": WaitForEvent("c", timedelta(minutes=1))},
                    trigger=EventTrigger("b"))
    sends = Journey(id="j1", entry="s0", steps={"s0": Send("m", "email")},
                    trigger=EventTrigger("a"))
    at = T0 + timedelta(minutes=1)
    return (
        Definitions(journeys=(waits, sends), segments=SEGMENTS, content=CONTENT),
        [Event("c0", "b", T0, {}, "e0"), Event("c0", "c", at, {}, "e1"),
         Event("c0", "a", at, {}, "e1")],
    )


# Engine options a back-test takes, as a live engine is given them: a default zone for the
# customers without one (calendar waits, schedules), a contact attribute that only some
# customers have (sends on SMS then skipped for the others), what a message carries, how many
# ended enrollments a record keeps.
engine_options: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries({}, optional={
    "default_timezone": st.sampled_from([None, "America/New_York", "Asia/Kolkata"]),
    "contact_attributes": st.sampled_from([None, {"sms": "tier"}]),
    "recipient_attributes": st.sampled_from([("tier",), ("tier", "n")]),
    "keep_ended": st.integers(0, 3),
})


@SETTINGS
@example(*_redelivered_id(), True, {})
@given(definitions(with_schedules=True), streams(reuse_ids=True), st.booleans(), engine_options)
def test_backtest_equals_a_live_engine_with_its_clock_at_each_input(
    defs: Definitions, stream: list[Input], render: bool, options: dict[str, Any]
) -> None:
    channels = {name: RecordingChannel() for name in CHANNELS}
    if stream and all(isinstance(item, ProfileUpdate) for item in stream):
        with pytest.raises(UsageError, match="no timestamped input"):
            backtest(defs, stream, channels=channels, **options)
        return
    result = backtest(defs, stream, channels=channels, render=render, **options)
    assert_same(result.engine, live(defs, stream, render=render, **options), defs)


@SETTINGS
@given(definitions(with_schedules=True), streams(reuse_ids=True), engine_options,
       st.sampled_from([1, 2, simulate.CUSTOMER_CHUNK]))
def test_backtest_on_its_own_channels_equals_a_live_engine(
    defs: Definitions, stream: list[Input], options: dict[str, Any], chunk: int
) -> None:
    # On its own counting channels a back-test decides a window customer by customer (in
    # transactions of ``chunk`` customers), unless two customers share an event id: the same
    # records, reports and counts, and each customer's log in the same order.
    assume(not stream or not all(isinstance(item, ProfileUpdate) for item in stream))
    with mock.patch.object(simulate, "CUSTOMER_CHUNK", chunk):
        result = backtest(defs, stream, render=True, keep_activity=True, **options)
    assert_counted_as_live(result, live(defs, stream, **options), defs)


def assert_counted_as_live(result: BacktestResult, engine: Engine, defs: Definitions) -> None:
    """A back-test on its own counting channels left what the live ``engine`` did: the same
    records, reports and counts of messages, and each customer's log in the same order."""
    assert states(result.engine) == states(engine)
    assert reports(result.engine, defs) == reports(engine, defs)
    sent = {name: len(ch.messages) for name, ch in engine.channels.items()
            if isinstance(ch, RecordingChannel) and ch.messages}
    assert result.messages == sent
    for cid in CUSTOMERS:
        assert [attrs.astuple(a) for a in result.engine.activities(T0, END, customer_id=cid)] == [
            attrs.astuple(a) for a in engine.storage.activities(T0, END, customer_id=cid)]


@SETTINGS
@given(definitions(with_schedules=True), streams())
def test_backtest_counts_match_its_outcomes(defs: Definitions, stream: list[Input]) -> None:
    assume(not stream or not all(isinstance(item, ProfileUpdate) for item in stream))
    channels = {name: RecordingChannel() for name in CHANNELS}
    result = backtest(defs, stream, channels=channels)
    sent = {name: len(ch.messages) for name, ch in channels.items() if ch.messages}
    assert result.messages == sent
    assert result.entered == {
        j.id: r.entered for j in defs.journeys if (r := result.reports[j.id]).entered
    }
    assert sum(result.goals.values()) == sum(r.converted for r in result.reports.values())
    assert result.inputs == len(stream)


# --- (b) a group of one instant decides what its events decide one by one --------------------


@SETTINGS
@given(definitions(), grouped_streams())
def test_handle_events_equals_handle_event_one_at_a_time(
    defs: Definitions, groups: list[tuple[datetime, list[Event | ProfileUpdate]]]
) -> None:
    grouped, clock_a = new_engine(defs)
    single, clock_b = new_engine(defs)
    drive_groups(grouped, clock_a, groups)
    for at, items in groups:
        on_time(single, clock_b, at)
        for item in items:
            if isinstance(item, Event):
                single.handle_event(item)
            else:
                apply(single, item)
    assert_same(grouped, single, defs)


# --- (c) when the worker comes changes nothing ---------------------------------------------------


@SETTINGS
@given(definitions(), streams())
def test_a_worker_before_each_input_decides_what_a_worker_on_time_decides(
    defs: Definitions, stream: list[Input]
) -> None:
    assert_same(live(defs, stream, worker="before_input", limits=NO_CATCH_UP_LIMIT),
                live(defs, stream, limits=NO_CATCH_UP_LIMIT), defs)


def _quiet_then(step: Wait, goal: Goal | None, exit_: tuple[ExitCriterion, ...]) -> Definitions:
    """An inactivity journey (10 quiet minutes after ``a``) that ``b`` can convert or exit."""
    journey = Journey(id="j0", entry="s0", steps={"s0": step},
                      trigger=InactivityTrigger("a", timedelta(minutes=10)), goal=goal,
                      exit_criteria=exit_, reentry=ReentryPolicy.never())
    return Definitions(journeys=(journey,), segments=SEGMENTS, content=CONTENT)


# The customer enters at 08:10 by a wake-up (the inactivity timer), and ``b`` then matters to
# them. A worker that has not fired the wake-up yet leaves it due in the record: the event must
# still reach the customer (a record with a due wake-up always opens a transaction, which fires
# the wake-up first), or it would be lost once the worker comes.
_A_THEN_B = [Event("c0", "a", T0, {}, "e0"),
             Event("c0", "b", T0 + timedelta(minutes=10), {}, "e1")]
_A_THEN_B_LATER = [Event("c0", "a", T0, {}, "e0"),
                   Event("c0", "b", T0 + timedelta(hours=1), {}, "e1")]


@SETTINGS
@example(_quiet_then(Wait(timedelta(minutes=1)), None,
                     (ExitCriterion("on_profile", None, attr("tier") != "silver"),)), _A_THEN_B)
@example(_quiet_then(Wait(timedelta(hours=6)), Goal("b"), ()), _A_THEN_B_LATER)
@given(definitions(), streams())
def test_a_worker_only_at_the_end_decides_what_a_worker_on_time_decides(
    defs: Definitions, stream: list[Input]
) -> None:
    assert_same(live(defs, stream, worker="at_end", limits=NO_CATCH_UP_LIMIT),
                live(defs, stream, limits=NO_CATCH_UP_LIMIT), defs)
