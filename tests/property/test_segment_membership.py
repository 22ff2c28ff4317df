"""Incremental membership equals evaluation from scratch.

After any stream of events (some stamped late), profile changes and time passing, the
memberships the engine keeps up to date (only the segments that read what changed, timers at
the instants windows move) are exactly those a naive evaluation over the whole event history
gives, at every step, on the in-memory, SQLite and PostgreSQL adapters.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cjo import (
    Engine,
    Event,
    InMemoryStorage,
    ManualClock,
    Segment,
    SQLiteStorage,
    attr,
    in_segment,
    inactive,
    last_performed,
    performed,
    prop,
    total,
)
from cjo.segments.membership import SEGMENT_TIMER
from cjo.storage.base import Storage
from tests.helpers import postgres_storage

T0 = datetime(2026, 1, 5, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

SEGMENTS = (
    Segment("frequent", performed("purchase").at_least(3).within(days=5)),
    Segment("quiet", inactive("purchase", days=3)),
    Segment("spender", total("purchase", "amount").within(days=2) > 100),
    Segment("shoe_browser", performed("view", where=prop("category") == "shoes").exactly(2)
            .within(days=4) & performed("purchase").never().within(days=4)),
    Segment("recent", last_performed("purchase").within(hours=36)),
    Segment("vip_quiet", (attr("vip") == True) & in_segment("quiet")),  # noqa: E712
)

History = list[tuple[str, datetime, dict[str, Any]]]


def _naive(history: History, profile: dict[str, Any], created: datetime,
           now: datetime) -> set[str]:
    """Every segment computed from the whole event list, as its definition reads."""

    def stamps(name: str, window: timedelta,
               where: Callable[[dict[str, Any]], bool] | None = None,
               ) -> list[tuple[datetime, dict[str, Any]]]:
        return [(t, p) for n, t, p in history
                if n == name and t > now - window and (where is None or where(p))]

    purchases = [t for n, t, _ in history if n == "purchase"]
    out = set()
    if len(stamps("purchase", 5 * DAY)) >= 3:
        out.add("frequent")
    if now >= (max(purchases) if purchases else created) + 3 * DAY:
        out.add("quiet")
    amounts = [p["amount"] for _, p in stamps("purchase", 2 * DAY)
               if isinstance(p.get("amount"), int)]
    if amounts and sum(amounts) > 100:
        out.add("spender")
    shoes = stamps("view", 4 * DAY, lambda p: p.get("category") == "shoes")
    if len(shoes) == 2 and not stamps("purchase", 4 * DAY):
        out.add("shoe_browser")
    if purchases and max(purchases) > now - 36 * HOUR:
        out.add("recent")
    if profile.get("vip") is True and "quiet" in out:
        out.add("vip_quiet")
    return out


def _next_naive_change(history: History, profile: dict[str, Any], now: datetime,
                       members: set[str]) -> datetime | None:
    spans = (5 * DAY, 3 * DAY, 2 * DAY, 4 * DAY, 36 * HOUR)
    moments = {t + span for _, t, _ in history for span in spans} | {T0 + 3 * DAY}
    for at in sorted(m for m in moments if m > now):
        if _naive(history, profile, T0, at) != members:
            return at
    return None


LATENESS = st.sampled_from([0, 0, 12, 24]) | st.integers(0, 48)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("purchase"), LATENESS, st.integers(0, 120)),
        st.tuples(st.just("view"), LATENESS, st.sampled_from(["shoes", "hats"])),
        st.tuples(st.just("vip"), st.booleans()),
        # Mostly whole and half days, so that windows often end exactly at a check.
        st.tuples(st.just("wait"), st.sampled_from([1, 12, 24, 36, 48, 72]) | st.integers(1, 150)),
    ),
    min_size=1,
    max_size=25,
)


def _run(storage: Storage, ops: list[tuple[Any, ...]]) -> None:
    clock = ManualClock(T0)
    engine = Engine(storage, clock=clock)
    engine.publish(segments=SEGMENTS)
    engine.identify("c", {"vip": False})
    history: History = []
    profile: dict[str, Any] = {"vip": False}
    now = T0
    for i, op in enumerate(ops):
        kind = op[0]
        if kind == "wait":
            now += op[1] * HOUR
            clock.set(now)
            engine.run_due(now)
        elif kind == "vip":
            profile["vip"] = op[1]
            engine.identify("c", {"vip": op[1]})
        else:
            late = op[1] * HOUR  # stamped up to two days before it arrives
            props = {"amount": op[2]} if kind == "purchase" else {"category": op[2]}
            history.append((kind, now - late, props))
            engine.handle_event(Event(customer_id="c", name=kind, timestamp=now - late,
                                      properties=props, event_id=f"e{i}"))
        state = engine.customer_state("c")
        assert state is not None
        expected = _naive(history, profile, T0, now)
        assert set(state.segments) == expected, (i, op)
        # The segment timer comes no later than the next change a naive evaluation finds at
        # the instants windows can move (it may come earlier, where nothing changes).
        change = _next_naive_change(history, profile, now, expected)
        if change is not None:
            timer = state.timers.get(SEGMENT_TIMER)
            assert timer is not None and now < timer <= change, (i, op, timer, change)
        for segment in SEGMENTS:
            assert engine.in_segment("c", segment.id) == (segment.id in expected)


SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(steps)
def test_incremental_membership_equals_scratch_in_memory(ops: list[tuple[Any, ...]]) -> None:
    _run(InMemoryStorage(), ops)


@SETTINGS
@given(steps)
def test_incremental_membership_equals_scratch_on_sqlite(
    tmp_path_factory: Any, ops: list[tuple[Any, ...]]
) -> None:
    path = Path(tmp_path_factory.mktemp("seg")) / "cjo.db"
    storage = SQLiteStorage(path)
    try:
        _run(storage, ops)
    finally:
        storage.close()


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
def test_incremental_membership_equals_scratch_on_postgres(
    postgres_dsn: str, ops: list[tuple[Any, ...]]
) -> None:
    with postgres_storage(postgres_dsn, "cjo_seg") as storage:
        _run(storage, ops)
