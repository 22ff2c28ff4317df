"""PostgresStorage against a real server: the storage contract, then what only this adapter
has (pipelined transactions, advisory locks, SKIP LOCKED claims, migrations, pools).

Needs ``CJO_TEST_POSTGRES_DSN`` (skipped without it, failed without it under ``CI=true``).
Every test gets a fresh schema, dropped at the end.
"""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
from psycopg.conninfo import conninfo_to_dict

from cjo.channels.base import DeliveryResult, Message
from cjo.errors import ConflictError, CorruptRecordError, SchemaError, StorageError
from cjo.model.events import Profile
from cjo.runtime.state import Activity, CustomerState, EndedEnrollment, Enrollment, EntryHistory
from cjo.storage.base import Delivery, Retention, SetAsideRecord, Storage

if os.environ.get("CI", "").strip().lower() == "true":
    import psycopg  # under CI a missing driver must fail, not skip
else:
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (cjo[postgres])")

from cjo.storage.codec import encode, encode_state
from cjo.storage.postgres import _MIGRATIONS, SCHEMA_VERSION, PostgresStorage
from cjo.testing import StorageContract

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
REPO = Path(__file__).resolve().parents[2]

StorageFactory = Callable[..., PostgresStorage]


@pytest.fixture
def make_storage(postgres_dsn: str, postgres_schema: str) -> Iterator[StorageFactory]:
    """Storages on this test's schema; all are closed at the end."""
    made: list[PostgresStorage] = []

    def make(**kwargs: Any) -> PostgresStorage:
        kwargs.setdefault("schema", postgres_schema)
        kwargs.setdefault("max_size", 4)
        storage = PostgresStorage(postgres_dsn, **kwargs)
        made.append(storage)
        return storage

    yield make
    for storage in made:
        storage.close()


@pytest.fixture
def storage(make_storage: StorageFactory) -> PostgresStorage:
    return make_storage()


class TestPostgresStorage(StorageContract):
    supports_concurrency = True

    @pytest.fixture(autouse=True)
    def _database(self, postgres_dsn: str, postgres_schema: str) -> None:
        # Autouse: runs before the contract's ``storage`` fixture calls make_storage().
        self.dsn, self.schema = postgres_dsn, postgres_schema
        self.application_name = f"cjo-contract-{uuid.uuid4().hex[:8]}"

    def make_storage(self) -> Storage:
        return PostgresStorage(self.dsn, schema=self.schema, max_size=4,
                               application_name=self.application_name)

    def reopen(self, storage: Storage) -> Storage:
        return self.make_storage()

    def open_connections(self, storage: Storage) -> int:
        assert isinstance(storage, PostgresStorage)
        if storage._closed:
            return _wait_for_connections(self.dsn, self.application_name, 0)
        return _connections(self.dsn, self.application_name)

    def corrupt_record(self, storage: Storage, customer_id: str) -> None:
        corrupt(self.dsn, self.schema, customer_id)


def _sql(dsn: str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """A statement on a connection of its own (autocommit); its rows, if any."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(statement, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def record(
    customer: str = "c1", *, wake_at: datetime | None = None, journey: str = "j",
    step: str | None = "wait", attributes: dict[str, Any] | None = None,
) -> CustomerState:
    state = CustomerState(customer, T0, profile=Profile(customer, attributes or {}))
    state.enrollments.append(Enrollment(
        id=f"{journey}:{customer}:1", journey_id=journey, version=1, customer_id=customer,
        entered_at=T0, step_id=step, step_entered_at=T0, wake_at=wake_at,
        context={"item": "shoes", "n": 2},
    ))
    return state


def message(customer: str = "c1", key: str = "k1", at: datetime = T0) -> Message:
    return Message(
        idempotency_key=key, customer_id=customer, channel="email", content_id="hello",
        fields={"subject": "Hi", "body": "Hello"}, journey_id="j", journey_version=1,
        step_id="send", enrollment_id=f"j:{customer}:1", created_at=at,
        recipient={"zeta": 1, "alpha": 2},
    )


def activity(customer: str = "c1", kind: str = "step", detail: str | None = None,
             at: datetime = T0, journey: str = "j") -> Activity:
    return Activity(at, customer, f"{journey}:{customer}:1", journey, 1, "wait", kind, detail)


def save(
    storage: PostgresStorage, state: CustomerState, *, messages: Sequence[Message] = (),
    activities: Sequence[Activity] = (), now: datetime = T0,
) -> None:
    with storage.customer(state.customer_id, now) as session:
        session.save(state, messages, activities)


def load(storage: PostgresStorage, customer: str, now: datetime = T0) -> CustomerState | None:
    with storage.customer(customer, now) as session:
        return session.load()


def corrupt(dsn: str, schema: str, customer: str, data: str = "{not json") -> None:
    _sql(dsn, f'UPDATE "{schema}".customers SET data = %s WHERE customer_id = %s',
         [data, customer])


# --- the customer record -------------------------------------------------------------------


def test_records_round_trip_with_aware_utc_datetimes(make_storage: StorageFactory) -> None:
    # A session time zone far from UTC: values must still come back as aware UTC, to the
    # microsecond.
    storage = make_storage(connect_kwargs={"options": "-c TimeZone=Asia/Kolkata"})
    paris = timezone(timedelta(hours=1))
    odd = T0 + timedelta(microseconds=123_457)
    state = record(wake_at=odd + 4 * H, attributes={"zeta": 1, "alpha": {"b": 2, "a": [1, "x"]},
                                                    "seen": odd.astimezone(paris)})
    state.ended = (EndedEnrollment("j:c1:0", "j", 1, T0 - H, odd, "completed"),)
    state.history[("j", None)] = EntryHistory(2, (T0 - H, T0), odd)
    state.timers["inactive"] = odd + 48 * H
    state.marks["last_seen"] = odd
    state.extra = {"from_a_newer_cjo": {"kept": [1, 2]}}
    save(storage, state, messages=(message(),), now=odd.astimezone(paris))

    got = load(storage, "c1")
    assert got is not None
    assert got.revision == 1
    state.revision = 1
    assert got == state
    assert got.profile is not None
    # Key order survives (it reaches templates and channel payloads).
    assert list(got.profile.attributes) == ["zeta", "alpha", "seen"]
    assert got.profile.attributes["seen"] == odd
    assert got.enrollments[0].wake_at == odd + 4 * H
    assert got.enrollments[0].wake_at.tzinfo is not None  # type: ignore[union-attr]
    assert storage.peek("c1") == state
    assert storage.next_wake_at() == odd + 4 * H
    assert storage.next_wake_at().utcoffset() == timedelta(0)  # type: ignore[union-attr]
    entry = storage.outbox_entry("k1")
    assert entry is not None
    assert entry.message == message()
    assert list(entry.message.recipient) == ["zeta", "alpha"]
    assert (entry.status, entry.attempts, entry.last_error) == ("pending", 0, None)
    assert entry.available_at == odd + storage.dispatch_lease
    assert entry.available_at.utcoffset() == timedelta(0)
    assert load(storage, "nobody") is None
    assert storage.peek("nobody") is None
    assert storage.outbox_entry("nothing") is None


# --- transactions ------------------------------------------------------------------------


def test_announced_claims_answer_as_if_claimed_one_by_one(storage: PostgresStorage) -> None:
    with storage.customer("c1", T0) as session:
        assert session.claim_event("old")
    claims = [("c1", "e1"), ("c2", "e2"), ("c1", "old"), ("c2", "e1"), ("c1", "e3")]
    with storage.batch(["c1", "c2"], T0, claims=claims) as sessions:
        assert sessions["c1"].claim_event("e1")
        assert sessions["c2"].claim_event("e2")
        assert not sessions["c1"].claim_event("old")  # handled before
        assert not sessions["c2"].claim_event("e1")  # handled earlier in this transaction
        assert sessions["c2"].claim_event("unannounced")
        assert not sessions["c1"].claim_event("unannounced")
        # "e3" was announced but never claimed: it must not be kept as handled.
    with storage.batch(["c1"], T0, claims=[("c1", "e3"), ("c1", "e1")]) as sessions:
        assert sessions["c1"].claim_event("e3")
        assert not sessions["c1"].claim_event("e1")
        assert not sessions["c1"].claim_event("e2")
        assert not sessions["c1"].claim_event("unannounced")


def test_one_customer_at_a_time(storage: PostgresStorage) -> None:
    """A second transaction for a customer waits for the first, then sees what it wrote; other
    customers do not wait."""
    inside, release = threading.Event(), threading.Event()
    seen: list[object] = []

    def first() -> None:
        with storage.customer("c1", T0) as session:
            session.save(record(attributes={"v": 1}), [], [])
            inside.set()
            release.wait(10)

    def second() -> None:
        with storage.customer("c1", T0) as session:
            state = session.load()
            seen.append(state.profile if state else None)

    t1 = threading.Thread(target=first)
    t1.start()
    assert inside.wait(10)
    t2 = threading.Thread(target=second)
    t2.start()
    # Another customer goes straight through while c1 is held.
    with storage.customer("c2", T0) as session:
        assert session.load() is None
    time.sleep(0.2)
    assert seen == []  # still waiting for c1's lock
    release.set()
    t1.join(10)
    t2.join(10)
    assert seen == [Profile("c1", {"v": 1})]


def test_overlapping_batches_do_not_deadlock(make_storage: StorageFactory) -> None:
    storage = make_storage(max_size=8)
    customers = [f"c{i}" for i in range(12)]
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        order = customers[seed:] + customers[:seed]
        try:
            for round_ in range(15):
                ids = list(reversed(order)) if round_ % 2 else order
                claims = [(cid, f"e-{seed}-{round_}-{cid}") for cid in ids]
                with storage.batch(ids, T0, claims=claims) as sessions:
                    for cid, session in sessions.items():
                        assert session.claim_event(f"e-{seed}-{round_}-{cid}")
                        state = session.load() or record(cid)
                        session.save(state, [], [activity(cid)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    (count,) = storage.activity_counts("j")
    assert count.count == 6 * 15 * 12
    # Every write was seen by the next one: revisions count them all.
    assert {storage.peek(cid).revision for cid in customers} == {6 * 15}  # type: ignore[union-attr]


def _round_trips(path: Path) -> int:
    # A round trip is the client sending, then reading what the server sent back.
    directions = [line.split("\t")[1] for line in path.read_text().splitlines()]
    return sum(1 for a, b in itertools.pairwise(directions) if (a, b) == ("F", "B"))


@pytest.fixture
def traced(postgres_dsn: str, postgres_schema: str, tmp_path: Path) -> Iterator[
    tuple[PostgresStorage, Callable[[], Trace]]
]:
    """A storage on a one-connection pool whose wire traffic can be traced."""
    from psycopg_pool import ConnectionPool

    with ConnectionPool(postgres_dsn, min_size=1, max_size=1, open=True,
                        kwargs={"autocommit": True}) as pool:
        storage = PostgresStorage(pool=pool, schema=postgres_schema)

        def trace() -> Trace:
            return Trace(pool, tmp_path / f"trace-{uuid.uuid4().hex}.txt")

        yield storage, trace
        storage.close()


class Trace:
    """libpq's protocol trace of the pool's only connection, while the block runs."""

    def __init__(self, pool: Any, path: Path) -> None:
        self.pool, self.path = pool, path
        self.round_trips = 0

    def __enter__(self) -> Trace:
        self._file = self.path.open("w")
        with self.pool.connection() as conn:
            conn.pgconn.trace(self._file.fileno())
        return self

    def __exit__(self, *exc: object) -> None:
        with self.pool.connection() as conn:
            conn.pgconn.untrace()  # flushes libpq's buffer
        self._file.close()
        self.round_trips = _round_trips(self.path)


def test_round_trips_per_batch_do_not_grow_with_customers(traced: Any) -> None:
    """BEGIN, locks, announced event claims and the records share one round trip; the writes
    and COMMIT another. Counted on the wire, in libpq's protocol trace."""
    storage, trace = traced
    # Enough batches for psycopg to prepare the statements (after 5 runs): still two.
    for round_, n in enumerate((1, 20, 200, 20, 20, 20, 20, 20)):
        customers = [f"c{round_}-{i:03}" for i in range(n)]
        with storage.batch(customers, T0) as sessions:
            for cid, session in sessions.items():
                session.save(record(cid), [], [])
        with trace() as t, storage.batch(
            customers, T0, claims=[(cid, f"e-{cid}") for cid in customers]
        ) as sessions:
            for cid, session in sessions.items():
                assert session.claim_event(f"e-{cid}")
                state = session.load()
                assert state is not None
                state.timers["t"] = T0 + H
                session.save(state, [message(cid, key=f"k-{cid}")],
                             [activity(cid), activity(cid, "sent")])
                if cid.endswith("7"):
                    session.set_aside("test")
        assert t.round_trips == 2, (n, t.round_trips)
        assert storage.peek(customers[0]).timers == {"t": T0 + H}  # type: ignore[union-attr]


def test_round_trips_of_a_due_batch(traced: Any) -> None:
    storage, trace = traced
    customers = [f"c{i:03}" for i in range(50)]
    with storage.batch(customers, T0) as sessions:
        for cid, session in sessions.items():
            session.save(record(cid, wake_at=T0), [], [])
    with trace() as t, storage.due_batch(T0, 100, H) as sessions:
        assert list(sessions) == customers
        for session in sessions.values():
            state = session.load()
            assert state is not None
            state.enrollments[0].wake_at = None
            session.save(state, [message(session.customer_id, key=session.customer_id)], [])
    assert t.round_trips == 2
    with trace() as t, storage.due_batch(T0, 100, H) as sessions:
        assert sessions == {}
    assert t.round_trips == 2


# --- wake-ups ------------------------------------------------------------------------------


def test_claim_due_order_limit_and_lease(storage: PostgresStorage) -> None:
    # Same wake instant: by customer id (bytewise, as Python sorts).
    for cid, wake in (("c", T0 + H), ("a", T0 + H), ("d", T0 + 2 * H), ("B", T0 + H)):
        save(storage, record(cid, wake_at=wake))
    save(storage, record("none"))  # nothing to wake
    lease = timedelta(minutes=5)
    assert storage.claim_due(T0, 10, lease) == []
    first = storage.claim_due(T0 + 2 * H, 2, lease)
    assert [(d.customer_id, d.wake_at) for d in first] == [("B", T0 + H), ("a", T0 + H)]
    rest = storage.claim_due(T0 + 2 * H, 10, lease)
    assert [d.customer_id for d in rest] == ["c", "d"]
    assert storage.claim_due(T0 + 2 * H, 10, lease) == []  # all leased
    assert storage.next_wake_at() == T0 + H  # leased wake-ups still count
    # Saving a record ends its lease; other leases run out on their own.
    save(storage, load(storage, "a"))  # type: ignore[arg-type]
    assert [d.customer_id for d in storage.claim_due(T0 + 2 * H, 10, lease)] == ["a"]
    later = T0 + 2 * H + lease  # a lease ending at ``now`` has run out
    assert [d.customer_id for d in storage.claim_due(later, 10, lease)] == ["B", "a", "c", "d"]


def test_due_batch_claims_locks_and_leases(storage: PostgresStorage) -> None:
    for i in range(5):
        save(storage, record(f"c{i}", wake_at=T0 + i * H))
    lease = timedelta(minutes=5)
    with storage.due_batch(T0 + 3 * H, 2, lease) as sessions:
        assert list(sessions) == ["c0", "c1"]
        state = sessions["c0"].load()
        assert state is not None and state.wake_at == T0
        state.enrollments[0].wake_at = T0 + 10 * H
        sessions["c0"].save(state, [], [])
        # c1 is not saved (say, a version this engine does not know): its lease stays.
    with storage.due_batch(T0 + 3 * H, 10, lease) as sessions:
        assert list(sessions) == ["c2", "c3"]
    with storage.due_batch(T0 + 3 * H, 10, lease) as sessions:
        assert sessions == {}
    with storage.due_batch(T0 + 3 * H + lease, 10, lease) as sessions:
        assert list(sessions) == ["c1", "c2", "c3"]
    assert storage.next_wake_at() == T0 + H

    def fail() -> None:
        with storage.due_batch(T0 + 4 * H + 2 * lease, 10, lease) as sessions:
            assert list(sessions) == ["c1", "c2", "c3", "c4"]
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail()
    # Rolled back with the work: claimable again at once.
    assert len(storage.claim_due(T0 + 4 * H + 2 * lease, 10, lease)) == 4


def test_concurrent_due_batches_share_out_due_customers(make_storage: StorageFactory) -> None:
    writer = make_storage()
    customers = [f"c{i:03}" for i in range(300)]
    with writer.batch(customers, T0) as sessions:
        for i, (cid, session) in enumerate(sessions.items()):
            session.save(record(cid, wake_at=T0 + timedelta(seconds=i % 7)), [], [])
    workers = [make_storage(max_size=2) for _ in range(4)]
    got: list[list[str]] = [[] for _ in workers]
    errors: list[BaseException] = []
    start = threading.Barrier(len(workers))

    def work(i: int) -> None:
        start.wait()
        try:
            while True:
                with workers[i].due_batch(T0 + timedelta(minutes=1), 7, H) as sessions:
                    if not sessions:
                        return
                    for cid, session in sessions.items():
                        state = session.load()
                        assert state is not None and state.wake_at is not None
                        state.enrollments[0].wake_at = None
                        session.save(state, [], [])
                        got[i].append(cid)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    everything = [cid for ids in got for cid in ids]
    assert sorted(everything) == customers  # each exactly once
    assert sum(1 for ids in got if ids) > 1  # shared out, not taken by one
    assert writer.next_wake_at() is None


def test_a_due_batch_never_deadlocks_with_a_customer_transaction(
    make_storage: StorageFactory,
) -> None:
    """An event transaction holds a due customer's lock; a due batch running meanwhile leaves
    that customer for later instead of waiting (while holding row locks the event transaction
    will need)."""
    storage = make_storage(max_size=4)
    for cid in ("a", "b"):
        save(storage, record(cid, wake_at=T0))
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def event_transaction() -> None:
        try:
            with storage.customer("a", T0) as session:
                state = session.load()
                holding.set()
                release.wait(10)
                assert state is not None
                state.timers["t"] = T0 + 5 * H
                session.save(state, [], [])
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=event_transaction)
    thread.start()
    assert holding.wait(10)
    with storage.due_batch(T0, 10, H) as sessions:
        assert list(sessions) == ["b"]
        release.set()  # the event transaction now writes "a" while this one is open
        time.sleep(0.2)
        for session in sessions.values():
            session.save(record(session.customer_id), [], [])
    thread.join(10)
    assert errors == []
    assert storage.peek("a").timers == {"t": T0 + 5 * H}  # type: ignore[union-attr]
    assert [d.customer_id for d in storage.claim_due(T0, 10, H)] == ["a"]


def test_concurrent_claimers_share_out_due_customers(make_storage: StorageFactory) -> None:
    writer = make_storage()
    with writer.batch([f"c{i:03}" for i in range(300)], T0) as sessions:
        for i, (cid, session) in enumerate(sessions.items()):
            session.save(record(cid, wake_at=T0 + timedelta(seconds=i % 7)), [], [])
    claimers = [make_storage(max_size=2) for _ in range(4)]
    got: list[list[str]] = [[] for _ in claimers]
    start = threading.Barrier(len(claimers))

    def claim(i: int) -> None:
        start.wait()
        while batch := claimers[i].claim_due(T0 + timedelta(minutes=1), 7, H):
            got[i].extend(d.customer_id for d in batch)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(claimers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = [cid for ids in got for cid in ids]
    assert len(everything) == 300
    assert len(set(everything)) == 300  # each claimed exactly once


# --- records that cannot be read -----------------------------------------------------------


def test_a_corrupt_record_is_named_kept_and_set_aside(
    storage: PostgresStorage, postgres_dsn: str, postgres_schema: str,
) -> None:
    save(storage, record("bad", wake_at=T0))
    save(storage, record("good", wake_at=T0 + H))
    corrupt(postgres_dsn, postgres_schema, "bad")
    with pytest.raises(CorruptRecordError, match="'bad'"):
        storage.peek("bad")
    with storage.due_batch(T0 + H, 10, timedelta(minutes=1)) as sessions:
        assert list(sessions) == ["bad", "good"]
        with pytest.raises(CorruptRecordError) as info:
            sessions["bad"].load()
        assert info.value.customer_id == "bad"
        sessions["bad"].set_aside(str(info.value))
        good = sessions["good"].load()
        assert good is not None
        sessions["good"].save(good, [], [])
    # Kept as it was, never claimed again, not counted as a pending wake-up.
    assert _sql(postgres_dsn, f'SELECT data, aside IS NOT NULL FROM "{postgres_schema}".customers'
                f" WHERE customer_id = 'bad'") == [("{not json", True)]
    later = T0 + 100 * H
    assert [d.customer_id for d in storage.claim_due(later, 10, H)] == ["good"]
    assert storage.next_wake_at() == T0 + H
    assert storage.active_counts("j") == {(1, "wait"): 1}  # the unreadable one is left out
    storage.erase_customer("bad")
    assert _sql(postgres_dsn, f'SELECT count(*) FROM "{postgres_schema}".customers') == [(1,)]


def test_a_record_from_a_newer_layout_is_read_as_far_as_understood(
    storage: PostgresStorage, postgres_dsn: str, postgres_schema: str,
) -> None:
    save(storage, record())
    (data,) = _sql(postgres_dsn, f'SELECT data FROM "{postgres_schema}".customers')[0]
    corrupt(postgres_dsn, postgres_schema, "c1", data[:-1] + ',"v":99,"future":[1]}')
    got = load(storage, "c1")
    assert got is not None
    assert got.extra == {"future": [1], "v": 99}  # its layout, written back as it was
    save(storage, got)
    written = _sql(postgres_dsn, f'SELECT data FROM "{postgres_schema}".customers')[0][0]
    assert '"future":[1]' in written and '"v":99' in written


def test_peek_many_reads_committed_records_in_one_round_trip(
    traced: Any, postgres_dsn: str, postgres_schema: str,
) -> None:
    storage, trace = traced
    save(storage, record("a"))
    save(storage, record("bad"))
    corrupt(postgres_dsn, postgres_schema, "bad")
    with trace() as t:
        got = storage.peek_many(["a", "bad", "unknown", "a"])
    assert t.round_trips == 1
    assert got == {"a": storage.peek("a")}
    assert storage.peek_many([]) == {}


# --- outbox --------------------------------------------------------------------------------


def test_complete_outbox_many(storage: PostgresStorage) -> None:
    save(storage, record(), messages=tuple(message(key=f"k{i}") for i in range(4)))
    now = T0 + H
    retry = now + H
    storage.complete_outbox_many([
        Delivery("k0", DeliveryResult("delivered")),
        Delivery("k1", DeliveryResult("transient", error="later"), retry),
        Delivery("k2", DeliveryResult("permanent", error="no")),
        Delivery("unknown", DeliveryResult("delivered")),
    ], now)
    got = {k: storage.outbox_entry(k) for k in ("k0", "k1", "k2", "k3")}
    assert {k: (e.status, e.attempts, e.available_at, e.last_error)  # type: ignore[union-attr]
            for k, e in got.items()} == {
        "k0": ("delivered", 1, now, None),
        "k1": ("pending", 1, retry, "later"),
        "k2": ("dead", 1, now, "no"),
        "k3": ("pending", 0, T0 + storage.dispatch_lease, None),
    }
    # A key twice: applied in order, each seeing the one before.
    storage.complete_outbox_many([
        Delivery("k3", DeliveryResult("transient", error="1"), retry),
        Delivery("k3", DeliveryResult("delivered")),
        Delivery("k3", DeliveryResult("transient", error="ignored")),
    ], now)
    entry = storage.outbox_entry("k3")
    assert entry is not None and (entry.status, entry.attempts) == ("delivered", 2)
    storage.complete_outbox_many([], now)


# --- definitions ---------------------------------------------------------------------------


def test_concurrent_publishers_never_lose_each_other(make_storage: StorageFactory) -> None:
    publishers = [make_storage(max_size=1) for _ in range(4)]
    won: list[int] = []
    start = threading.Barrier(len(publishers))

    def publish(i: int) -> None:
        start.wait()
        for n in range(10):
            while True:  # reload, retry: what an engine does on ConflictError
                try:
                    won.append(publishers[i].append_definitions(
                        publishers[i].definitions_generation(), f"{i}-{n}"
                    ))
                    break
                except ConflictError:
                    continue

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(len(publishers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(won) == list(range(1, 41))


# --- reporting, retention, erasure, settings -----------------------------------------------


def test_prune_keeps_counting_what_it_drops(storage: PostgresStorage) -> None:
    old = T0 - timedelta(days=500)
    save(storage, record("c1"), activities=(activity(at=old), activity(at=old, kind="sent")),
         messages=(message(key="done"), message(key="pending")), now=old)
    with storage.customer("c1", old) as session:
        assert session.claim_event("e-old")
    storage.complete_outbox("done", DeliveryResult("delivered"), old)
    save(storage, record("c2"), activities=(activity("c2"), activity("c2", detail="x")))
    with storage.customer("c2", T0) as session:
        assert session.claim_event("e-new")
    before = storage.activity_counts("j")

    assert storage.prune(T0, Retention()).activity == 2
    assert storage.prune(T0, Retention()).activity == 0  # the first prune took them already
    assert storage.activity_counts("j") == before
    assert storage.activities(old, T0 + H) == [activity("c2"), activity("c2", detail="x")]
    assert storage.outbox_entry("done") is None
    assert storage.outbox_entry("pending") is not None  # pending messages are never pruned
    with storage.batch(["c1"], T0) as sessions:
        assert sessions["c1"].claim_event("e-old")  # forgotten: handled again
        assert not sessions["c1"].claim_event("e-new")
    # Pruned again later, the totals stay one row per key and keep counting.
    save(storage, record("c3"), activities=(activity("c3", at=old),), now=old)
    assert storage.prune(T0, Retention()).activity == 1
    after = {(c.step_id, c.kind, c.detail): c.count for c in storage.activity_counts("j")}
    assert after == {("wait", "step", None): 3, ("wait", "sent", None): 1,
                     ("wait", "step", "x"): 1}


def test_active_counts(storage: PostgresStorage) -> None:
    save(storage, record("c1"))
    save(storage, record("c2"))
    ended = record("c3")
    ended.ended = (EndedEnrollment("j:c3:0", "j", 1, T0, T0, "completed"),)
    ended.enrollments[0].version, ended.enrollments[0].step_id = 2, None
    save(storage, ended)
    save(storage, record("c4", journey="other"))
    save(storage, record('q"uo\\te\u00e9', journey='j"\u00e9'))
    assert storage.active_counts("j") == {(1, "wait"): 2, (2, None): 1}
    assert storage.active_counts('j"\u00e9') == {(1, "wait"): 1}
    assert storage.active_counts("none") == {}


def test_settings(storage: PostgresStorage) -> None:
    assert storage.get_setting("cursor") is None
    storage.put_setting("cursor", "1")
    storage.put_setting("cursor", "2")
    assert storage.get_setting("cursor") == "2"


# --- schema --------------------------------------------------------------------------------


def test_tables_live_in_the_configured_schema(postgres_dsn: str, postgres_schema: str,
                                              make_storage: StorageFactory) -> None:
    make_storage()
    tables = {r[0] for r in _sql(
        postgres_dsn,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
        [postgres_schema],
    )}
    versions = [r[0] for r in _sql(
        postgres_dsn, f'SELECT version FROM "{postgres_schema}".schema_version ORDER BY version'
    )]
    assert tables == {"schema_version", "customers", "events", "outbox", "activity",
                      "activity_totals", "definitions", "settings", "segment_members"}
    assert versions == list(range(1, SCHEMA_VERSION + 1))


@pytest.mark.parametrize("published_again", [False, True])
def test_a_schema_dropped_and_made_again_while_open_is_refused(
    postgres_dsn: str, postgres_schema: str, make_storage: StorageFactory, published_again: bool
) -> None:
    # A tenant's schema dropped and provisioned again (by another process) numbers its
    # definitions from generation 1 again: a handle opened before must not let its engine
    # run the old definitions as if they were the new ones (the same generation number).
    from cjo import ContentItem, Engine, Event, EventTrigger, Journey, ManualClock, Send, Variant
    from cjo.channels.recording import RecordingChannel

    def definitions(text: str) -> dict[str, Any]:
        return {"journeys": [Journey(id="hello", trigger=EventTrigger("signed_up"),
                                     entry="send", steps={"send": Send("hi", "email")})],
                "content": [ContentItem("hi", (Variant("email", {"subject": text, "text": text}),))]}

    clock = ManualClock(T0)
    old = Engine(make_storage(), {"email": RecordingChannel()}, clock)
    old.publish(**definitions("the old tenant's"))
    _sql(postgres_dsn, f'DROP SCHEMA "{postgres_schema}" CASCADE')
    new = Engine(make_storage(), {"email": RecordingChannel()}, clock)
    if published_again:
        new.publish(**definitions("the new tenant's"))
    with pytest.raises(StorageError, match="made again"):
        old.handle_event(Event("ann", "signed_up", T0, event_id="e1"))
    with pytest.raises(StorageError, match="made again"):
        old.storage.definitions_generation()
    with pytest.raises(StorageError, match="made again"):
        old.storage.load_definitions()
    assert new.generation == (1 if published_again else 0)


def test_a_database_of_the_first_layout_is_migrated(
    postgres_dsn: str, postgres_schema: str, make_storage: StorageFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from psycopg import sql

    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(postgres_schema)))
        conn.execute(sql.SQL("CREATE TABLE {}.schema_version (version integer PRIMARY KEY)")
                     .format(sql.Identifier(postgres_schema)))
        for statement in _MIGRATIONS[0]:
            conn.execute(sql.SQL(statement).format(s=sql.Identifier(postgres_schema)))
        conn.execute(sql.SQL("INSERT INTO {}.schema_version VALUES (1)")
                     .format(sql.Identifier(postgres_schema)))
        conn.execute(sql.SQL("INSERT INTO {}.settings VALUES ('cursor', '7')")
                     .format(sql.Identifier(postgres_schema)))
    with caplog.at_level("WARNING", logger="cjo.storage.postgres"):
        storage = make_storage()
    (said,) = [r.getMessage() for r in caplog.records if "version 1" in r.getMessage()]
    assert said.startswith(f"schema {postgres_schema} has cjo's schema version 1"), said
    assert "dropped" in said
    assert storage.migrate() == SCHEMA_VERSION
    assert storage.get_setting("cursor") == "7"  # settings survive
    save(storage, record(wake_at=T0))
    assert [d.customer_id for d in storage.claim_due(T0, 10, H)] == ["c1"]


def _schema_at(conn: Any, schema: Any, version: int) -> None:
    """Create ``schema`` as the adapter's migrations 1 to ``version`` left it."""
    from psycopg import sql

    conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
    conn.execute(sql.SQL("CREATE TABLE {}.schema_version (version integer PRIMARY KEY)")
                 .format(schema))
    for number in range(1, version + 1):
        for statement in _MIGRATIONS[number - 1]:
            conn.execute(sql.SQL(statement).format(s=schema))
        conn.execute(sql.SQL("INSERT INTO {}.schema_version VALUES (%s)").format(schema),
                     [number])


def test_messages_that_failed_for_good_become_dead_letters_on_migration(
    postgres_dsn: str, postgres_schema: str, make_storage: StorageFactory,
) -> None:
    from psycopg import sql

    schema = sql.Identifier(postgres_schema)
    with psycopg.connect(postgres_dsn) as conn:
        _schema_at(conn, schema, 2)
        for key, status, done in (("f", "failed", T0), ("r", "rejected", T0 + H),
                                  ("d", "delivered", T0)):
            conn.execute(
                sql.SQL("INSERT INTO {}.outbox (key, customer_id, created_at, available_at,"
                        " status, attempts, last_error, done_at, data)"
                        " VALUES (%s, 'c1', %s, %s, %s, 3, 'boom', %s, %s::json)").format(schema),
                [key, T0, T0, status, done, encode(message(key=key))],
            )
    storage = make_storage()
    dead = storage.dead_letters(10)
    assert [(d.key, d.attempts, d.last_error, d.dead_at) for d in dead] == [
        ("r", 3, "boom", T0 + H), ("f", 3, "boom", T0)
    ]
    assert storage.prune(T0 + 30 * H, Retention(outbox=H)).outbox == 1
    assert len(storage.dead_letters(10)) == 2, "dead letters are not pruned"


def test_pending_messages_are_indexed_by_channel_on_migration(
    postgres_dsn: str, postgres_schema: str, make_storage: StorageFactory,
) -> None:
    from psycopg import sql

    schema = sql.Identifier(postgres_schema)
    email, sms = message(key="k-e"), attrs.evolve(message(key="k-s"), channel="sms")
    with psycopg.connect(postgres_dsn) as conn:
        _schema_at(conn, schema, 4)
        # Written by version 4 (and by an older process still running after the upgrade).
        for n, m in enumerate((email, sms)):
            conn.execute(
                sql.SQL("INSERT INTO {}.outbox (key, customer_id, created_at, available_at, data)"
                        " VALUES (%s, 'c1', %s, %s, %s::json)").format(schema),
                [m.idempotency_key, T0 + n * H, T0, encode(m)],
            )
    storage = make_storage()
    assert storage.pending_by_channel() == {"email": 1, "sms": 1}
    assert storage.claim_outbox(T0, 10, H, channels=["sms"]) == [sms]
    assert storage.claim_outbox(T0, 10, H) == [email]


def test_a_record_set_aside_before_version_6_is_listed_without_an_instant(
    postgres_dsn: str, postgres_schema: str, make_storage: StorageFactory,
) -> None:
    from psycopg import sql

    schema = sql.Identifier(postgres_schema)
    with psycopg.connect(postgres_dsn) as conn:
        _schema_at(conn, schema, 5)
        # What version 5 wrote for a record set aside: the reason only.
        for cid, aside in (("c1", "old"), ("c2", None)):
            conn.execute(
                sql.SQL("INSERT INTO {}.customers (customer_id, wake_at, aside, revision, data)"
                        " VALUES (%s, %s, %s, 1, %s)").format(schema),
                [cid, T0, aside, encode_state(record(cid, wake_at=T0))],
            )
    storage = make_storage()
    assert storage.records_set_aside(10) == [SetAsideRecord("c1", "old", None)]
    assert [d.customer_id for d in storage.claim_due(T0, 10, H)] == ["c2"]
    with storage.customer("c2", T0 + H) as session:
        session.set_aside("new")
    assert storage.records_set_aside(10) == [
        SetAsideRecord("c1", "old", None), SetAsideRecord("c2", "new", T0 + H)
    ]


def test_messages_written_before_version_7_are_read_as_not_leased(
    postgres_dsn: str, postgres_schema: str, make_storage: StorageFactory,
) -> None:
    from psycopg import sql

    schema = sql.Identifier(postgres_schema)
    old, late = message(key="k-old"), message(key="k-late")
    with psycopg.connect(postgres_dsn) as conn:
        _schema_at(conn, schema, 6)
        conn.execute(
            sql.SQL("INSERT INTO {}.outbox (key, customer_id, created_at, available_at, data)"
                    " VALUES (%s, 'c1', %s, %s, %s::json)").format(schema),
            [old.idempotency_key, T0, T0 + H, encode(old)],
        )
    storage = make_storage()
    # An older process, still running after the upgrade, writes a row as it always did.
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {}.outbox (key, customer_id, created_at, available_at, data)"
                    " VALUES (%s, 'c1', %s, %s, %s::json)").format(schema),
            [late.idempotency_key, T0 + H, T0 + H, encode(late)],
        )
    assert [(e.message.idempotency_key, e.leased) for e in storage.customer_outbox("c1")] == [
        ("k-old", False), ("k-late", False)
    ]
    assert storage.claim_outbox(T0 + H, 10, H) == [old, late]
    assert all(e.sending(T0 + H) for e in storage.customer_outbox("c1"))


def test_records_set_aside_are_read_through_their_index(
    storage: PostgresStorage, postgres_dsn: str
) -> None:
    from psycopg import sql

    with psycopg.connect(postgres_dsn) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(row[0] for row in conn.execute(
            sql.SQL("EXPLAIN ") + storage._q["aside_page"], ["", 10]
        ))
        conn.rollback()
    assert "customers_aside" in plan, plan


def test_a_walk_of_a_journeys_customers_reads_a_window_of_ids_per_page(
    storage: PostgresStorage, postgres_dsn: str
) -> None:
    # Filtered in the query, a page read and sorted every record after the cursor (a bitmap
    # scan), so resuming a journey was quadratic in the records naming it. The page is now a
    # window of the next ids in key order: an index scan that stops at the limit.
    from psycopg import sql

    with psycopg.connect(postgres_dsn) as conn:
        plan = "\n".join(row[0] for row in conn.execute(
            sql.SQL("EXPLAIN ") + storage._q["enrolled_candidates"],
            ['"j"', '"j"', "", 10],
        ))
        conn.rollback()
    assert "Index Scan using customers_pkey" in plan and "Sort" not in plan, plan


@pytest.mark.parametrize("channels", [None, ["sms"], ["email", "push", "sms"]])
def test_claims_can_read_pending_messages_through_their_index(
    storage: PostgresStorage, postgres_dsn: str, channels: list[str] | None
) -> None:
    from psycopg import sql

    query = storage._q["claim_outbox" if channels is None else "claim_outbox_of"]
    params: dict[str, Any] = {"now": T0, "until": T0 + H, "limit": 10, "channels": channels}
    with psycopg.connect(postgres_dsn) as conn:
        # A new table is too small for the planner to choose an index: forbid the scan.
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(row[0] for row in conn.execute(sql.SQL("EXPLAIN ") + query, params))
        conn.rollback()
    assert "outbox_pending" in plan, plan
    if channels is not None:
        assert "Index Cond: (((data ->> 'channel'::text)" in plan, plan


def test_processes_starting_together_migrate_once(make_storage: StorageFactory) -> None:
    made: list[PostgresStorage] = []
    errors: list[BaseException] = []
    start = threading.Barrier(5)

    def open_one() -> None:
        start.wait()
        try:
            made.append(make_storage(min_size=0, max_size=1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(made) == 5
    assert made[0].migrate() == SCHEMA_VERSION  # nothing left to do


def test_a_newer_schema_is_refused(postgres_dsn: str, postgres_schema: str,
                                   make_storage: StorageFactory) -> None:
    make_storage().close()
    _sql(postgres_dsn, f'INSERT INTO "{postgres_schema}".schema_version VALUES (%s)',
         [SCHEMA_VERSION + 1])
    app = f"cjo-newer-{uuid.uuid4().hex[:8]}"
    with pytest.raises(SchemaError, match="newer"):
        make_storage(application_name=app)
    assert _wait_for_connections(postgres_dsn, app, 0) == 0  # the refused one closed its pool


def test_bad_arguments_and_unreachable_servers_raise_storage_errors(postgres_schema: str) -> None:
    with pytest.raises(StorageError, match="schema name"):
        PostgresStorage("postgresql://nobody@127.0.0.1:1/none", schema="bad-name; drop")
    with pytest.raises(StorageError):
        PostgresStorage(
            "postgresql://nobody@127.0.0.1:1/none", schema=postgres_schema, timeout=0.5,
            connect_kwargs={"connect_timeout": 1},
        )


@pytest.mark.parametrize(("dsn", "says"), [
    ("postgresql://nobody@127.0.0.1:1/none", "refused"),
    ("not a dsn", 'missing "=" after "not"'),
])
def test_a_server_that_cannot_be_reached_fails_at_once_with_its_reason(
    dsn: str, says: str, postgres_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The pool would retry in the background until its timeout (30 s), logging each attempt,
    # and then say only that it had waited.
    began = time.monotonic()
    with pytest.raises(StorageError, match=says):
        PostgresStorage(dsn, schema=postgres_schema)
    assert time.monotonic() - began < 10
    assert not [r for r in caplog.records if r.name.startswith("psycopg")]


def test_driver_errors_are_translated(storage: PostgresStorage) -> None:
    from cjo.storage.postgres import _translated

    for conflict in (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected,
                     psycopg.errors.LockNotAvailable):
        with pytest.raises(ConflictError), _translated():
            raise conflict("try again")
    # A real failure from the server, inside a customer transaction:
    with pytest.raises(StorageError) as info, storage.customer("c1", T0) as session:
        session.claim_event(secrets.token_hex(50_000))  # longer than an index entry may be
    assert isinstance(info.value.__cause__, psycopg.Error)
    with storage.customer("c1", T0) as session:  # the connection is usable again
        assert session.claim_event("e1")


def test_a_lock_timeout_is_a_conflict(make_storage: StorageFactory) -> None:
    impatient = make_storage(connect_kwargs={"options": "-c lock_timeout=100ms"})
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with impatient.customer("c1", T0):
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert inside.wait(10)
    try:
        with pytest.raises(ConflictError) as info, impatient.customer("c1", T0):
            pass
        assert isinstance(info.value.__cause__, psycopg.errors.LockNotAvailable)
    finally:
        release.set()
        thread.join(10)


def test_naive_datetimes_are_refused(storage: PostgresStorage) -> None:
    from cjo.errors import ClockError

    naive = datetime(2026, 1, 1)  # the point of the test
    with pytest.raises(ClockError):
        storage.claim_due(naive, 10, timedelta(minutes=1))
    with pytest.raises(ClockError), storage.customer("c1", naive):
        pass


# --- connections ---------------------------------------------------------------------------


def _connections(dsn: str, application_name: str) -> int:
    rows = _sql(dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                [application_name])
    return int(rows[0][0]) if rows else 0


def _wait_for_connections(dsn: str, application_name: str, expected: int) -> int:
    # A backend leaves pg_stat_activity a moment after its client disconnects.
    deadline = time.monotonic() + 5
    while (found := _connections(dsn, application_name)) != expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return found


def test_close_leaves_no_connection_open(postgres_dsn: str, make_storage: StorageFactory) -> None:
    app = f"cjo-close-{uuid.uuid4().hex[:8]}"
    storage = make_storage(application_name=app, min_size=2)
    save(storage, record())
    assert _connections(postgres_dsn, app) >= 1
    storage.close()
    storage.close()  # idempotent
    assert _wait_for_connections(postgres_dsn, app, 0) == 0
    with pytest.raises(StorageError):
        storage.peek("c1")


def test_the_dsn_names_the_connections_unless_told_otherwise(
    postgres_dsn: str, postgres_schema: str
) -> None:
    # Hosts tag their connections in the DSN (pg_stat_activity, pg_terminate_backend by
    # name); a default of "cjo" used to replace the DSN's own.
    app = f"shop-{uuid.uuid4().hex[:8]}"
    separator = "&" if "?" in postgres_dsn else "?"
    storage = PostgresStorage(f"{postgres_dsn}{separator}application_name={app}",
                              schema=postgres_schema)
    try:
        assert _connections(postgres_dsn, app) >= 1
    finally:
        storage.close()
    untagged = PostgresStorage(postgres_dsn, schema=postgres_schema, application_name=app)
    try:
        assert _connections(postgres_dsn, app) >= 1
    finally:
        untagged.close()


def test_a_pool_passed_in_is_not_closed(postgres_dsn: str, postgres_schema: str) -> None:
    from psycopg_pool import ConnectionPool

    with ConnectionPool(postgres_dsn, min_size=1, max_size=2, open=True) as pool:
        storage = PostgresStorage(pool=pool, schema=postgres_schema)
        save(storage, record())  # a pool of non-autocommit connections works too
        storage.close()
        assert not pool.closed
        again = PostgresStorage(pool=pool, schema=postgres_schema)
        assert load(again, "c1") is not None
        again.close()


# --- running without a server --------------------------------------------------------------


def test_import_cjo_does_not_import_psycopg() -> None:
    code = (
        "import sys, cjo, cjo.worker, cjo.storage;"
        "print([m for m in ('psycopg', 'psycopg_pool') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("ci", "expected"), [("", "skipped"), ("true", "error")])
def test_without_a_dsn_tests_skip_except_in_ci(ci: str, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CJO_TEST_POSTGRES_DSN", "CI")}
    env.update({"CI": ci, "PYTHONPATH": str(REPO / "src")})
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{Path(__file__).relative_to(REPO)}::test_settings"],
        check=False, capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )
    assert f"1 {expected}" in out.stdout, out.stdout + out.stderr
    assert (out.returncode == 0) == (expected == "skipped")
    assert "CJO_TEST_POSTGRES_DSN is not set" in out.stdout


def test_a_read_only_server_error_names_the_schema_and_the_server(
    make_storage: StorageFactory, postgres_dsn: str, postgres_schema: str
) -> None:
    """The server's words (a replica, a read-only default) say nothing of where: the error
    names the schema and the server the storage writes to (never the password)."""
    make_storage()  # creates the schema
    read_only = make_storage(connect_kwargs={"options": "-c default_transaction_read_only=on"})
    with pytest.raises(StorageError) as refused:
        save(read_only, record())
    said = str(refused.value)
    assert "read-only transaction" in said
    assert said.startswith(f"PostgreSQL (schema {postgres_schema} on "), said
    params = conninfo_to_dict(postgres_dsn)
    if params.get("host"):
        assert str(params["host"]) in said
    if params.get("password"):
        assert str(params["password"]) not in said
