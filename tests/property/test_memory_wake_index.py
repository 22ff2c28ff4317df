"""InMemoryStorage's wake-up index (a calendar queue of hourly buckets) and its pruning of
event ids, the outbox and the activity log, against plain reference models: random moves,
set-asides, erasures, rolled-back transactions and claims, compared with sorting every
wake-up; claims, deliveries and activities at instants that need not increase, pruned as lists
filtered by instant."""

from __future__ import annotations

import gc
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cjo.channels.base import DeliveryResult, Message
from cjo.runtime.state import Activity, CustomerState
from cjo.storage.base import PruneResult, Retention
from cjo.storage.memory import InMemoryStorage, _Wakes

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
# Instants in other offsets fall in the same hourly buckets as their UTC equivalents.
ZONES = (UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-3)))

customers = st.sampled_from(["a", "b", "c", "d", "e", "f", "customer-10", "customer-9"])
# Minutes over a few hours, with ties and hour boundaries likely.
instants = st.builds(
    lambda minutes, zone: (T0 + minutes * MINUTE).astimezone(zone),
    st.one_of(st.sampled_from([0, 59, 60, 61, 119, 120]), st.integers(-30, 300)),
    st.sampled_from(ZONES),
)
wakes = st.one_of(st.none(), instants)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("save"), customers, wakes),
        st.tuples(st.just("batch"), st.lists(st.tuples(customers, wakes), max_size=4)),
        st.tuples(st.just("aside"), customers),
        st.tuples(st.just("erase"), customers),
        st.tuples(st.just("rollback"), customers, wakes),
        st.tuples(st.just("claim"), instants, st.integers(0, 4), st.integers(0, 30)),
        st.tuples(st.just("next"),),
    ),
    max_size=60,
)


@dataclass
class Model:
    """What the index must answer, computed the slow way."""

    wake: dict[str, datetime | None] = field(default_factory=dict)  # stored records
    aside: set[str] = field(default_factory=set)
    leases: dict[str, datetime] = field(default_factory=dict)

    def queued(self) -> list[tuple[datetime, str]]:
        return sorted(
            (w, cid) for cid, w in self.wake.items() if w is not None and cid not in self.aside
        )

    def save(self, cid: str, wake_at: datetime | None) -> None:
        self.wake[cid] = wake_at
        self.aside.discard(cid)  # a save in a later transaction ends a set-aside
        self.leases.pop(cid, None)

    def claim(self, now: datetime, limit: int, lease: timedelta) -> list[tuple[str, datetime]]:
        out: list[tuple[str, datetime]] = []
        for w, cid in self.queued():
            if w > now or len(out) >= limit:
                break
            held = self.leases.get(cid)
            if held is not None and held > now:
                continue
            self.leases[cid] = now + lease
            out.append((cid, w))
        return out


def _state(storage: InMemoryStorage, cid: str, wake_at: datetime | None) -> CustomerState:
    with storage.customer(cid, T0) as session:
        state = session.load()
    state = state or CustomerState(cid, T0)
    state.timers = {} if wake_at is None else {"t": wake_at}
    return state


def _save(storage: InMemoryStorage, cid: str, wake_at: datetime | None) -> None:
    state = _state(storage, cid, wake_at)
    with storage.customer(cid, T0) as session:
        session.save(state, (), ())


def _save_and_fail(storage: InMemoryStorage, state: CustomerState) -> None:
    with storage.customer(state.customer_id, T0) as session:
        session.save(state, (), ())
        raise RuntimeError("rolled back")


def _check_sorted_front(wakes: _Wakes) -> None:
    """The bucket kept sorted holds exactly that bucket's entries, in order."""
    key = wakes._sorted_key
    if key is not None:
        bucket = wakes._buckets[key]
        assert wakes._sorted[wakes._pos:] == sorted((w, c) for c, w in bucket.items())
    assert wakes._keys == sorted(wakes._buckets)
    assert all(wakes._buckets.values())


@settings(max_examples=300, deadline=None)
@given(operations)
def test_the_index_answers_as_a_sorted_list_would(ops: list[tuple[Any, ...]]) -> None:
    storage = InMemoryStorage()
    model = Model()
    for op in ops:
        kind = op[0]
        if kind == "save":
            _, cid, wake_at = op
            _save(storage, cid, wake_at)
            model.save(cid, wake_at)
        elif kind == "batch":
            items: dict[str, datetime | None] = dict(op[1])
            states = [_state(storage, cid, w) for cid, w in items.items()]
            with storage.batch(list(items), T0) as sessions:
                for state in states:
                    sessions[state.customer_id].save(state, (), ())
            for cid, w in items.items():
                model.save(cid, w)
        elif kind == "aside":
            cid = op[1]
            with storage.customer(cid, T0) as session:
                session.set_aside("test")
            model.aside.add(cid)
            model.leases.pop(cid, None)
        elif kind == "erase":
            cid = op[1]
            storage.erase_customer(cid)
            model.wake.pop(cid, None)
            model.aside.discard(cid)
            model.leases.pop(cid, None)
        elif kind == "rollback":
            _, cid, wake_at = op
            with pytest.raises(RuntimeError, match="rolled back"):
                _save_and_fail(storage, _state(storage, cid, wake_at))
        elif kind == "claim":
            _, now, limit, lease_minutes = op
            lease = lease_minutes * MINUTE
            got = storage.claim_due(now, limit, lease)
            assert [(d.customer_id, d.wake_at) for d in got] == model.claim(now, limit, lease)
        else:
            queued = model.queued()
            assert storage.next_wake_at() == (queued[0][0] if queued else None)
        assert len(storage._wakes) == len(model.queued())
        _check_sorted_front(storage._wakes)


def test_a_burst_in_one_bucket_is_claimed_in_order_and_sorted_once() -> None:
    storage = InMemoryStorage()
    n = 20_000
    # One hour's bucket: thousands due at a few instants, ties broken by customer id.
    for i in range(n):
        _save(storage, f"c{(i * 7919) % n:05d}", T0 + (i % 3) * MINUTE)
    order = sorted((T0 + (i % 3) * MINUTE, f"c{(i * 7919) % n:05d}") for i in range(n))
    now = T0 + 10 * MINUTE
    claimed: list[tuple[datetime, str]] = []
    sorts = 0
    while True:
        sorted_list = storage._wakes._sorted
        due = storage.claim_due(now, 500, timedelta(minutes=5))
        sorts += storage._wakes._sorted is not sorted_list
        if not due:
            break
        claimed.extend((d.wake_at, d.customer_id) for d in due)
        # Each claimed customer commits a later wake-up (another bucket), in claim order.
        with storage.batch([d.customer_id for d in due], now) as sessions:
            for d in due:
                state = CustomerState(d.customer_id, T0)
                state.timers = {"t": T0 + timedelta(days=1)}
                sessions[d.customer_id].save(state, (), ())
        _check_sorted_front(storage._wakes)
    assert claimed == order
    assert sorts == 1
    assert storage.next_wake_at() == T0 + timedelta(days=1)
    assert len(storage._wakes) == n


def test_event_ids_pruned_by_the_instant_they_were_claimed_at() -> None:
    storage = InMemoryStorage()
    retention = Retention(event_ids=timedelta(hours=1))
    for hour in range(4):
        with storage.batch(["a", "b"], T0 + timedelta(hours=hour)) as sessions:
            for n in range(hour + 1):
                assert sessions["a"].claim_event(f"e{hour}-{n}")
            assert not sessions["b"].claim_event(f"e{hour}-0")
    assert len(storage._events) == 1 + 2 + 3 + 4
    # Ids claimed before 2 h ago go (hours 0 and 1: 3 ids); nothing is left to drop again.
    assert storage.prune(T0 + timedelta(hours=3), retention).event_ids == 3
    assert storage.prune(T0 + timedelta(hours=3), retention).event_ids == 0
    with storage.customer("a", T0) as session:
        assert session.claim_event("e0-0"), "a forgotten id can be claimed again"
        assert not session.claim_event("e2-0")
    # Claimed after later ones, at an earlier instant: pruned by that instant, as the SQL
    # adapters prune, not kept until the ones claimed before it go.
    assert storage.prune(T0 + timedelta(hours=3), retention).event_ids == 1
    with storage.customer("a", T0 + timedelta(hours=3)) as session:
        assert session.claim_event("e0-0")
        assert not session.claim_event("e3-3")
    assert storage.prune(T0 + timedelta(hours=10), retention).event_ids == 3 + 4 + 1
    assert len(storage._events) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            # A transaction claiming some ids at an instant (instants need not increase).
            st.tuples(
                st.just("claim"), st.integers(0, 6), st.lists(st.integers(0, 30), max_size=4)
            ),
            st.tuples(st.just("prune"), st.integers(0, 10), st.integers(1, 3)),
        ),
        max_size=40,
    )
)
def test_event_ids_pruned_as_a_list_of_claims_would(ops: list[tuple[Any, ...]]) -> None:
    storage = InMemoryStorage()
    claimed: list[tuple[datetime, str]] = []  # the reference
    for kind, hours, arg in ops:
        at = T0 + timedelta(hours=hours)
        if kind == "claim":
            with storage.customer("a", at) as session:
                for n in arg:
                    eid = f"e{n}"
                    expected = all(eid != e for _at, e in claimed)
                    assert session.claim_event(eid) == expected
                    if expected:
                        claimed.append((at, eid))
        else:
            before = at - timedelta(hours=arg)
            kept = [(t, e) for t, e in claimed if t >= before]
            assert storage.prune(at, Retention(event_ids=timedelta(hours=arg))).event_ids == (
                len(claimed) - len(kept))
            claimed = kept
        assert len(storage._events) == len(claimed)
        assert all(e in storage._events for _t, e in claimed)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            # Activities appended, and a message delivered, at instants that need not increase
            # (a worker firing overdue wake-ups at their own instants, a clock that went back).
            st.tuples(st.just("append"), st.lists(st.integers(0, 6), min_size=1, max_size=3)),
            st.tuples(st.just("deliver"), st.integers(0, 6)),
            st.tuples(st.just("erase"), st.sampled_from(["a", "b"])),
            st.tuples(st.just("prune"), st.integers(0, 10), st.integers(1, 3)),
        ),
        max_size=40,
    ),
    # One step of the instants: hours, or minutes that fall inside and across hours (late
    # rows are noted by hour).
    st.sampled_from([HOUR, timedelta(minutes=7), timedelta(minutes=25)]),
)
def test_the_log_and_outbox_pruned_as_lists_of_entries_would(
    ops: list[tuple[Any, ...]], step: timedelta
) -> None:
    storage = InMemoryStorage()
    log: list[Activity] = []  # the reference log, in append order
    delivered: dict[str, datetime] = {}  # the reference outbox: delivered message -> when
    appended = 0
    for n, (kind, *args) in enumerate(ops):
        customer = "ab"[n % 2]
        if kind == "append":
            entries = [Activity(T0 + h * step, customer, f"j:{customer}", "j", 1, "s",
                                "step", str(n)) for h in args[0]]
            key = f"m{n}"
            message = Message(key, customer, "email", "c", {}, "j", 1, "s", f"j:{customer}", T0)
            with storage.customer(customer, T0) as session:
                session.save(session.load() or CustomerState(customer, T0), [message], entries)
            log.extend(entries)
            appended += len(entries)
        elif kind == "deliver":
            at = T0 + args[0] * step
            key = next((m.idempotency_key for m in storage.claim_outbox(at + HOUR, 1, MINUTE)),
                       None)
            if key is not None:
                storage.complete_outbox(key, DeliveryResult(), at)
                delivered[key] = at
        elif kind == "erase":
            storage.erase_customer(args[0])
            log = [attrs.evolve(a, customer_id="", enrollment_id="erased")
                   if a.customer_id == args[0] else a for a in log]
            delivered = {k: at for k, at in delivered.items()
                         if storage.outbox_entry(k) is not None}
        else:
            now = T0 + args[0] * step
            before = now - args[1] * step
            kept_log = [a for a in log if a.at >= before]
            kept_outbox = {k: at for k, at in delivered.items() if at >= before}
            span = args[1] * step
            assert storage.prune(now, Retention(outbox=span, activity=span)) == PruneResult(
                outbox=len(delivered) - len(kept_outbox), activity=len(log) - len(kept_log))
            log, delivered = kept_log, kept_outbox
        got = storage.activities(T0 - HOUR, T0 + 9 * HOUR)
        assert [(a.at, a.customer_id, a.detail) for a in got] == [
            (a.at, a.customer_id, a.detail) for a in log]
        assert all(storage.outbox_entry(k) is not None for k in delivered)
        assert sum(c.count for c in storage.activity_counts("j")) == appended, "counts keep all"


class _UnwalkedLog(deque[Any]):
    """A log that refuses to be walked from its front: what pruning must not do in the steady
    state (it would cost the whole log at every prune)."""

    def __iter__(self) -> Any:
        raise AssertionError("the whole log was walked")


def test_pruning_a_log_with_late_rows_looks_only_near_the_cut() -> None:
    # Wake-ups fired at their own instants after later events: a row in three is stamped two
    # minutes before the rows written ahead of it, as in any engine with waits.
    storage = InMemoryStorage()
    retention = Retention(activity=12 * HOUR)
    state = CustomerState("c", T0)
    kept: list[datetime] = []
    for hour in range(48):
        now = T0 + hour * HOUR
        stamps = [now - 2 * MINUTE if i % 3 == 0 else now for i in range(30)]
        with storage.customer("c", now) as session:
            session.save(session.load() or state, [], [
                Activity(at, "c", "e", "j", 1, "s", "step") for at in stamps])
        kept.extend(stamps)
        storage._log = _UnwalkedLog(storage._log)
        storage.prune(now, retention)
        kept = [at for at in kept if at >= now - 12 * HOUR]
        assert [row[0] for row in reversed(storage._log)][::-1] == kept
        storage._log = deque(reversed(storage._log))  # a plain log again, in order
        storage._log.reverse()
        # One hour of late rows noted per hour kept, not one per hour since the start.
        assert len(storage._log_late) <= 14


def test_a_transaction_leaves_no_garbage_cycle() -> None:
    """A committed transaction is freed by reference counting, its writes with it, rather than
    waiting for the garbage collector (sessions point to their transaction, not back)."""
    storage = InMemoryStorage()
    _save(storage, "a", T0)
    state = _state(storage, "a", T0 + MINUTE)
    gc.collect()
    gc.disable()
    try:
        with storage.batch(["a", "b"], T0) as sessions:
            sessions["a"].save(state, (), ())
            assert sessions["b"].claim_event("e1")
        with storage.customer("b", T0) as session:
            session.load()
        with storage.due_batch(T0 + HOUR, 10, MINUTE) as sessions:
            assert list(sessions) == ["a"]
        del sessions, session, state
        assert gc.collect() == 0
    finally:
        gc.enable()


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9998, 12, 30),
                    timezones=st.sampled_from(ZONES)))
@example(datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC).astimezone(ZONES[1]))
def test_an_instant_falls_in_its_hour_whatever_its_offset(at: datetime) -> None:
    """The bucket is the floored hour since the epoch, the same for one instant in any offset
    (before the epoch too, where truncating a timestamp would round the wrong way)."""
    from cjo.storage.memory import _hour

    expected = (at - datetime(1970, 1, 1, tzinfo=UTC)) // HOUR
    assert _hour(at) == expected
    for zone in ZONES:
        assert _hour(at.astimezone(zone)) == expected
