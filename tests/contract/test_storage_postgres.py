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
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cjo import DeliveryResult, Engine, Event, ManualClock, Message, Profile, RecordingChannel
from cjo.errors import ConflictError, SchemaError, StorageError
from cjo.runtime.state import Activity, Changes, Enrollment, PastEntry

if os.environ.get("CI", "").strip().lower() == "true":
    import psycopg  # under CI a missing driver must fail, not skip
else:
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (cjo[postgres])")

from cjo.storage.base import Storage
from cjo.storage.postgres import SCHEMA_VERSION, PostgresStorage
from cjo.testing import StorageContract

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
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


def enrollment(
    customer: str = "c1", number: int = 1, *, journey: str = "j", at: datetime = T0,
    wake_at: datetime | None = None, status: str = "active", key: str | None = None,
) -> Enrollment:
    return Enrollment(
        id=f"{journey}:{customer}:{number}", journey_id=journey, version=1, customer_id=customer,
        entered_at=at, step_id="wait", step_entered_at=at, status=status,  # type: ignore[arg-type]
        instance_key=key, wake_at=wake_at, context={"item": "shoes", "n": 2},
        ended_at=None if status == "active" else at,
    )


def message(customer: str = "c1", key: str = "k1", at: datetime = T0) -> Message:
    return Message(
        idempotency_key=key, customer_id=customer, channel="email", content_id="hello",
        fields={"subject": "Hi", "body": "Hello"}, journey_id="j", journey_version=1,
        step_id="send", enrollment_id=f"j:{customer}:1", created_at=at,
        recipient={"zeta": 1, "alpha": 2},
    )


def activity(customer: str = "c1", kind: str = "step", detail: str | None = None) -> Activity:
    return Activity("j", 1, "wait", kind, detail, f"j:{customer}:1", customer, T0)


def write(
    storage: PostgresStorage, customer: str, *enrollments: Enrollment,
    profile: Profile | None = None, messages: tuple[Message, ...] = (),
    activities: tuple[Activity, ...] = (), now: datetime = T0,
) -> None:
    changes = Changes(customer, profile=profile, messages=list(messages),
                      activities=list(activities))
    for e in enrollments:
        changes.touch(e)
    with storage.customer(customer, now) as session:
        session.apply(changes)


# --- round trips ---------------------------------------------------------------------------


def test_records_round_trip_with_aware_utc_datetimes(make_storage: StorageFactory) -> None:
    # A session time zone far from UTC: values must still come back as aware UTC.
    storage = make_storage(connect_kwargs={"options": "-c TimeZone=Asia/Kolkata"})
    paris = timezone(timedelta(hours=1))
    e = enrollment(wake_at=T0 + timedelta(hours=4))
    profile = Profile("c1", {"zeta": 1, "alpha": {"b": 2, "a": [1, "x"]}}, "Europe/Paris", "fr")
    write(storage, "c1", e, profile=profile, messages=(message(),),
          now=T0.astimezone(paris))

    assert storage.get_profile("c1") == profile
    # Key order survives (it reaches templates and channel payloads).
    assert list(storage.get_profile("c1").attributes) == ["zeta", "alpha"]  # type: ignore[union-attr]
    assert storage.get_enrollments("c1") == [e]
    with storage.customer("c1", T0) as session:
        assert session.load_profile() == profile
        assert session.load_active() == [e]
        assert session.history("j", None) == [PastEntry(T0, None)]
    entry = storage.outbox_entry("k1")
    assert entry is not None
    assert entry.message == message()
    assert list(entry.message.recipient) == ["zeta", "alpha"]
    assert (entry.status, entry.attempts, entry.last_error) == ("pending", 0, None)
    assert entry.available_at == T0 + storage.dispatch_lease
    assert entry.available_at.tzinfo is UTC or entry.available_at.utcoffset() == timedelta(0)
    assert storage.next_wake_at() == T0 + timedelta(hours=4)
    assert storage.next_wake_at().tzinfo is not None  # type: ignore[union-attr]
    assert storage.get_profile("nobody") is None
    assert storage.get_enrollments("nobody") == []
    assert storage.outbox_entry("nothing") is None


def test_load_active_returns_independent_copies(storage: PostgresStorage) -> None:
    write(storage, "c1", enrollment(number=2), enrollment(number=1),
          enrollment(number=3, status="completed"))
    with storage.customer("c1", T0) as session:
        first = session.load_active()
        assert [e.id for e in first] == ["j:c1:1", "j:c1:2"]
        first[0].context["item"] = "changed"
        assert session.load_active()[0].context["item"] == "shoes"


def test_history_covers_every_version_and_status_oldest_first(storage: PostgresStorage) -> None:
    write(storage, "c1", enrollment(number=1, status="completed", at=T0))
    later = T0 + timedelta(days=1)
    write(storage, "c1", enrollment(number=2, at=later))
    write(storage, "c1", enrollment(number=3, at=later, key="cart-1"))
    write(storage, "c1", enrollment(number=1, journey="other"))
    write(storage, "c2", enrollment("c2"))
    with storage.customer("c1", later) as session:
        assert session.history("j", None) == [PastEntry(T0, T0), PastEntry(later, None)]
        assert session.history("j", "cart-1") == [PastEntry(later, None)]
        assert session.history("j", "cart-2") == []
        assert session.history("missing", None) == []


def test_upsert_keeps_entry_order_and_updates_in_place(storage: PostgresStorage) -> None:
    e1, e2 = enrollment(number=1), enrollment(number=2)
    write(storage, "c1", e1, e2)
    e1.status = "completed"
    e1.ended_at = T0 + timedelta(hours=1)
    e1.step_id = "done"
    write(storage, "c1", e1)
    assert storage.get_enrollments("c1") == [e1, e2]
    assert storage.active_counts("j") == {(1, "wait"): 1}


# --- transactions ------------------------------------------------------------------------


def test_event_claims_are_unique_and_roll_back(storage: PostgresStorage) -> None:
    with storage.customer("c1", T0) as session:
        assert session.claim_event("e1")
        assert not session.claim_event("e1")  # twice in one transaction
    with storage.customer("c1", T0) as session:
        assert not session.claim_event("e1")  # after commit
    def claim_then_fail() -> None:
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e2")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        claim_then_fail()
    with storage.customer("c1", T0) as session:
        assert session.claim_event("e2")  # the failed transaction kept nothing


def test_a_session_used_after_its_transaction_is_refused(storage: PostgresStorage) -> None:
    with storage.customer("c1", T0) as session:
        pass
    with pytest.raises(StorageError, match="after its transaction"):
        session.claim_event("e1")
    with pytest.raises(StorageError, match="after its transaction"):
        session.load_active()
    with pytest.raises(StorageError, match="after its transaction"):
        session.apply(Changes("c1"))


def test_an_error_rolls_back_everything_and_propagates_unchanged(
    storage: PostgresStorage,
) -> None:
    class BoomError(Exception):
        pass

    def write_then_fail() -> None:
        with storage.batch(["c1", "c2"], T0) as sessions:
            sessions["c1"].apply(Changes("c1", profile=Profile("c1", {"a": 1}),
                                         messages=[message()], activities=[activity()]))
            sessions["c2"].apply(Changes("c2", enrollments={"j:c2:1": enrollment("c2")}))
            raise BoomError

    with pytest.raises(BoomError):
        write_then_fail()
    assert storage.get_profile("c1") is None
    assert storage.get_enrollments("c2") == []
    assert storage.outbox_entry("k1") is None
    assert storage.activity_counts("j") == []


def test_batch_commits_every_customer_together(storage: PostgresStorage) -> None:
    with storage.batch(["c2", "c1", "c2"], T0) as sessions:
        assert sorted(sessions) == ["c1", "c2"]
        for cid, session in sessions.items():
            assert session.customer_id == cid
            assert session.claim_event(f"e-{cid}")
            changes = Changes(cid, profile=Profile(cid, {"n": cid}))
            changes.touch(enrollment(cid))
            session.apply(changes)
    assert storage.get_profile("c1") == Profile("c1", {"n": "c1"})
    assert [e.id for e in storage.get_enrollments("c2")] == ["j:c2:1"]
    with storage.batch(["c1", "c2", "c3"], T0) as sessions:
        assert sessions["c1"].load_profile() == Profile("c1", {"n": "c1"})
        assert [e.id for e in sessions["c2"].load_active()] == ["j:c2:1"]
        assert sessions["c3"].load_profile() is None
        assert sessions["c3"].load_active() == []


def test_one_customer_at_a_time(storage: PostgresStorage) -> None:
    """A second transaction for a customer waits for the first, then sees what it wrote; other
    customers do not wait."""
    inside, release = threading.Event(), threading.Event()
    seen: list[object] = []

    def first() -> None:
        with storage.customer("c1", T0) as session:
            session.apply(Changes("c1", profile=Profile("c1", {"v": 1})))
            inside.set()
            release.wait(10)

    def second() -> None:
        with storage.customer("c1", T0) as session:
            seen.append(session.load_profile())

    t1 = threading.Thread(target=first)
    t1.start()
    assert inside.wait(10)
    t2 = threading.Thread(target=second)
    t2.start()
    # Another customer goes straight through while c1 is held.
    with storage.customer("c2", T0) as session:
        assert session.load_profile() is None
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
                with storage.batch(ids, T0) as sessions:
                    for cid, session in sessions.items():
                        session.apply(Changes(cid, activities=[activity(cid)]))
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


def test_round_trips_per_batch_do_not_grow_with_customers(
    postgres_dsn: str, postgres_schema: str, tmp_path: Path,
) -> None:
    """Locks and prefetch share one round trip, writes and COMMIT another; only event claims
    (and the first history lookup) wait for an answer in between. Counted on the wire, in
    libpq's protocol trace."""
    from psycopg_pool import ConnectionPool

    customers = [f"c{i:02}" for i in range(20)]
    path = tmp_path / "trace.txt"
    with ConnectionPool(postgres_dsn, min_size=1, max_size=1, open=True,
                        kwargs={"autocommit": True}) as pool, path.open("w") as trace:
        storage = PostgresStorage(pool=pool, schema=postgres_schema)
        for cid in customers:
            write(storage, cid, enrollment(cid), profile=Profile(cid, {}))
        with pool.connection() as conn:  # the only connection: the one the batch will use
            conn.pgconn.trace(trace.fileno())
        with storage.batch(customers, T0) as sessions:
            for cid, session in sessions.items():
                assert session.load_profile() == Profile(cid, {})
                assert len(session.load_active()) == 1
                assert session.history("j", None) == [PastEntry(T0, None)]
                assert session.claim_event(f"e-{cid}")
                changes = Changes(cid, profile=Profile(cid, {"seen": True}),
                                  messages=[message(cid, key=f"k-{cid}")],
                                  activities=[activity(cid), activity(cid)])
                changes.touch(enrollment(cid, 2))
                session.apply(changes)
        with pool.connection() as conn:
            conn.pgconn.untrace()  # flushes libpq's buffer
        storage.close()
    # A round trip is the client sending, then reading what the server sent back.
    directions = [line.split("\t")[1] for line in path.read_text().splitlines()]
    round_trips = sum(1 for a, b in itertools.pairwise(directions) if (a, b) == ("F", "B"))
    # BEGIN, locks and both prefetches | 20 claims | the history | writes and COMMIT
    assert len(customers) < round_trips <= len(customers) + 3, round_trips


# --- wake-ups ------------------------------------------------------------------------------


def test_claim_due_order_limit_and_lease(make_storage: StorageFactory) -> None:
    storage = make_storage()
    h = timedelta(hours=1)
    # Same wake instant: earlier wait start first, then id (bytewise, as Python sorts).
    a = enrollment("a", wake_at=T0 + h, at=T0 - h)
    b = enrollment("B", wake_at=T0 + h, at=T0)
    c = enrollment("c", wake_at=T0 + h, at=T0)
    d = enrollment("d", wake_at=T0 + 2 * h)
    ended = enrollment("e", wake_at=T0, status="completed")
    for e in (c, a, d, b, ended):
        write(storage, e.customer_id, e)
    lease = timedelta(minutes=5)
    assert storage.claim_due(T0, 10, lease) == []
    first = storage.claim_due(T0 + 2 * h, 2, lease)
    assert [(w.customer_id, w.enrollment_id, w.wake_at) for w in first] == [
        ("a", "j:a:1", T0 + h), ("B", "j:B:1", T0 + h)
    ]
    rest = storage.claim_due(T0 + 2 * h, 10, lease)
    assert [w.customer_id for w in rest] == ["c", "d"]
    assert storage.claim_due(T0 + 2 * h, 10, lease) == []  # all leased
    assert storage.next_wake_at() == T0 + h  # leased wake-ups still count
    # Writing an enrollment ends its lease; other leases run out on their own.
    write(storage, "a", a)
    assert [w.customer_id for w in storage.claim_due(T0 + 2 * h, 10, lease)] == ["a"]
    later = T0 + 2 * h + lease  # a lease ending at ``now`` has run out
    assert [w.customer_id for w in storage.claim_due(later, 10, lease)] == ["a", "B", "c", "d"]


def test_concurrent_claimers_share_out_due_wakeups(make_storage: StorageFactory) -> None:
    writer = make_storage()
    with writer.batch([f"c{i:03}" for i in range(300)], T0) as sessions:
        for i, (cid, session) in enumerate(sessions.items()):
            e = enrollment(cid, wake_at=T0 + timedelta(seconds=i % 7))
            session.apply(Changes(cid, enrollments={e.id: e}))
    claimers = [make_storage(max_size=2) for _ in range(4)]
    got: list[list[str]] = [[] for _ in claimers]
    start = threading.Barrier(len(claimers))

    def claim(i: int) -> None:
        start.wait()
        while batch := claimers[i].claim_due(T0 + timedelta(minutes=1), 7, timedelta(hours=1)):
            got[i].extend(w.enrollment_id for w in batch)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(claimers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = [eid for ids in got for eid in ids]
    assert len(everything) == 300
    assert len(set(everything)) == 300  # each claimed exactly once


# --- outbox --------------------------------------------------------------------------------


def test_outbox_lease_claim_and_completion(storage: PostgresStorage) -> None:
    lease = storage.dispatch_lease
    write(storage, "c1", messages=(message(key="k1"), message(key="k2")))
    write(storage, "c2", messages=(message("c2", key="k3"), message("c2", key="k1")),
          now=T0 + timedelta(seconds=1))
    # The writer dispatches; nobody else may until its lease runs out.
    assert storage.claim_outbox(T0 + lease - timedelta(seconds=1), 10, lease) == []
    claimed = storage.claim_outbox(T0 + lease, 10, timedelta(minutes=1))
    assert [m.idempotency_key for m in claimed] == ["k1", "k2"]
    assert claimed[0] == message(key="k1")  # the first write of a key wins
    now = T0 + lease + timedelta(seconds=1)
    assert [m.idempotency_key for m in storage.claim_outbox(now, 10, lease)] == ["k3"]
    assert storage.claim_outbox(now, 10, lease) == []  # all three are leased

    storage.complete_outbox("k1", DeliveryResult("delivered"), now)
    retry_at = now + timedelta(minutes=5)
    storage.complete_outbox("k2", DeliveryResult("failed", error="timeout"), now, retry_at)
    storage.complete_outbox("k3", DeliveryResult("rejected", error="bad address"), now)
    storage.complete_outbox("k1", DeliveryResult("failed"), now)  # no longer pending: ignored
    storage.complete_outbox("unknown", DeliveryResult("delivered"), now)

    entry = storage.outbox_entry("k1")
    assert entry is not None and (entry.status, entry.attempts) == ("delivered", 1)
    entry = storage.outbox_entry("k2")
    assert entry is not None
    assert (entry.status, entry.attempts, entry.available_at, entry.last_error) == (
        "pending", 1, retry_at, "timeout"
    )
    entry = storage.outbox_entry("k3")
    assert entry is not None and (entry.status, entry.last_error) == ("rejected", "bad address")
    assert storage.claim_outbox(retry_at - timedelta(seconds=1), 10, lease) == []
    assert [m.idempotency_key for m in storage.claim_outbox(retry_at, 10, lease)] == ["k2"]


def test_claim_outbox_respects_the_limit(storage: PostgresStorage) -> None:
    write(storage, "c1", messages=tuple(message(key=f"k{i:02}") for i in range(5)))
    later = T0 + storage.dispatch_lease
    first = storage.claim_outbox(later, 2, timedelta(minutes=1))
    second = storage.claim_outbox(later, 10, timedelta(minutes=1))
    assert [m.idempotency_key for m in first + second] == [f"k{i:02}" for i in range(5)]


# --- reporting, erasure, settings ----------------------------------------------------------


def test_activity_is_aggregated_on_read(storage: PostgresStorage) -> None:
    write(storage, "c1", activities=(activity(), activity(), activity(kind="sent", detail="email")))
    write(storage, "c2", activities=(activity("c2"), Activity("other", 1, None, "entered",
                                                              None, "o:c2:1", "c2", T0)))
    counts = storage.activity_counts("j")
    assert [(c.step_id, c.kind, c.detail, c.count) for c in counts] == [
        ("wait", "sent", "email", 1), ("wait", "step", None, 3)
    ]
    assert [c.kind for c in storage.activity_counts("other")] == ["entered"]
    assert storage.activity_counts("none") == []


def test_active_counts(storage: PostgresStorage) -> None:
    write(storage, "c1", enrollment("c1"), enrollment("c1", 2, status="exited"))
    write(storage, "c2", enrollment("c2"))
    e = enrollment("c3")
    e.version, e.step_id = 2, None
    write(storage, "c3", e)
    assert storage.active_counts("j") == {(1, "wait"): 2, (2, None): 1}
    assert storage.active_counts("none") == {}


def test_erase_customer(storage: PostgresStorage) -> None:
    write(storage, "c1", enrollment("c1", wake_at=T0), profile=Profile("c1", {"email": "x@y"}),
          messages=(message("c1"),), activities=(activity("c1"),))
    write(storage, "c2", enrollment("c2"), profile=Profile("c2"))
    with storage.customer("c1", T0) as session:
        assert session.claim_event("e1")
    storage.erase_customer("c1")
    assert storage.get_profile("c1") is None
    assert storage.get_enrollments("c1") == []
    assert storage.outbox_entry("k1") is None
    assert storage.next_wake_at() is None
    assert storage.claim_due(T0 + timedelta(days=1), 10, timedelta(minutes=1)) == []
    assert [c.count for c in storage.activity_counts("j")] == [1]  # kept, anonymous
    with storage.customer("c1", T0) as session:
        assert not session.claim_event("e1")  # a replay stays a no-op
    assert storage.get_profile("c2") == Profile("c2")


def test_settings(storage: PostgresStorage) -> None:
    assert storage.get_setting("cursor") is None
    storage.put_setting("cursor", "1")
    storage.put_setting("cursor", "2")
    assert storage.get_setting("cursor") == "2"


# --- schema --------------------------------------------------------------------------------


def test_tables_live_in_the_configured_schema(postgres_dsn: str, postgres_schema: str,
                                              make_storage: StorageFactory) -> None:
    make_storage()
    with psycopg.connect(postgres_dsn) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            [postgres_schema],
        )}
        versions = [r[0] for r in conn.execute(
            f'SELECT version FROM "{postgres_schema}".schema_version ORDER BY version'
        )]
    assert tables == {"schema_version", "events", "profiles", "enrollments", "outbox",
                      "activity", "settings"}
    assert versions == list(range(1, SCHEMA_VERSION + 1))


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
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            f'INSERT INTO "{postgres_schema}".schema_version VALUES (%s)', [SCHEMA_VERSION + 1]
        )
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


def test_driver_errors_are_translated(storage: PostgresStorage) -> None:
    from cjo.storage.postgres import _translated

    with pytest.raises(ConflictError), _translated():
        raise psycopg.errors.SerializationFailure("could not serialize")
    with pytest.raises(ConflictError), _translated():
        raise psycopg.errors.DeadlockDetected("deadlock")
    # A real failure from the server, inside a customer transaction:
    with pytest.raises(StorageError) as info, storage.customer("c1", T0) as session:
        session.claim_event(secrets.token_hex(50_000))  # longer than an index entry may be
    assert isinstance(info.value.__cause__, psycopg.Error)
    with storage.customer("c1", T0) as session:  # the connection is usable again
        assert session.claim_event("e1")


def test_naive_datetimes_are_refused(storage: PostgresStorage) -> None:
    from cjo.errors import ClockError

    with pytest.raises(ClockError):
        storage.claim_due(datetime(2026, 1, 1), 10, timedelta(minutes=1))


# --- connections ---------------------------------------------------------------------------


def _connections(dsn: str, application_name: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            [application_name],
        ).fetchone()
    return int(row[0]) if row else 0


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
    write(storage, "c1", enrollment())
    assert _connections(postgres_dsn, app) >= 1
    storage.close()
    storage.close()  # idempotent
    assert _wait_for_connections(postgres_dsn, app, 0) == 0
    with pytest.raises(StorageError):
        storage.get_profile("c1")


def test_a_pool_passed_in_is_not_closed(postgres_dsn: str, postgres_schema: str) -> None:
    from psycopg_pool import ConnectionPool

    with ConnectionPool(postgres_dsn, min_size=1, max_size=2, open=True) as pool:
        storage = PostgresStorage(pool=pool, schema=postgres_schema)
        write(storage, "c1", enrollment())
        storage.close()
        assert not pool.closed
        again = PostgresStorage(pool=pool, schema=postgres_schema)
        assert [e.id for e in again.get_enrollments("c1")] == ["j:c1:1"]
        again.close()


# --- the engine on PostgreSQL --------------------------------------------------------------


def test_engine_end_to_end(make_storage: StorageFactory) -> None:
    from cjo import ContentItem, EventTrigger, ExitCriterion, Journey, Send, Variant, WaitForEvent

    journey = Journey(
        id="cart", trigger=EventTrigger("added_to_cart"), entry="wait",
        steps={
            "wait": WaitForEvent("purchased", timeout=timedelta(hours=4), on_timeout="email"),
            "email": Send("reminder", "email"),
        },
        exit_criteria=(ExitCriterion("purchased", event="purchased"),),
    )
    content = ContentItem("reminder", (Variant("email", {"subject": "{{ event.item }}"}),))
    clock = ManualClock(T0)
    email = RecordingChannel()
    engine = Engine(make_storage(), channels={"email": email}, clock=clock)
    engine.publish(journeys=[journey], content=[content])

    def ev(name: str, customer: str, eid: str, **props: object) -> Event:
        return Event(customer_id=customer, name=name, timestamp=clock.now(),
                     properties=props, event_id=eid)

    out = engine.handle_events([ev("added_to_cart", f"c{i}", f"e{i}", item=f"i{i}")
                                for i in range(5)], batch_size=2)
    assert len(out.entered) == 5
    assert engine.handle_event(ev("added_to_cart", "c0", "e0")).duplicate
    clock.advance(hours=1)
    engine.handle_event(ev("purchased", "c1", "p1"))
    clock.advance(hours=3)
    due = engine.run_due()
    assert sorted(m.customer_id for m in due.messages) == ["c0", "c2", "c3", "c4"]
    assert sorted((m.customer_id, m.fields["subject"]) for m in email.messages) == [
        ("c0", "i0"), ("c2", "i2"), ("c3", "i3"), ("c4", "i4")
    ]
    assert [e.status for e in engine.enrollments("c1")] == ["exited"]
    assert [e.status for e in engine.enrollments("c0")] == ["completed"]
    assert engine.dispatch_pending(clock.advance(hours=1)) == 0  # all delivered already


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
