"""The storage contract on SQLiteStorage (file, URL and private in-memory databases), and what
only SQLite has: URLs, pragmas, the schema version and its migrations, error translation."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

from cjo.channels.base import Message
from cjo.errors import ConflictError, CorruptRecordError, SchemaError, StorageError
from cjo.model.events import Profile
from cjo.runtime.state import Activity, CustomerState, Enrollment
from cjo.storage import codec
from cjo.storage import sqlite as sqlite_module
from cjo.storage.base import ActivityCount, Retention, SetAsideRecord, Storage
from cjo.storage.codec import encode_state
from cjo.storage.sqlite import SCHEMA_VERSION, SQLiteStorage
from cjo.testing import StorageContract
from tests.helpers import sqlite_at_schema

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def _message(key: str) -> Message:
    return Message(
        idempotency_key=key, customer_id="c1", channel="email", content_id="hello",
        fields={"subject": "Hi"}, journey_id="j", journey_version=1, step_id="send",
        enrollment_id="j:c1:1", created_at=T0,
    )


def _connections(storage: Storage) -> int:
    assert isinstance(storage, SQLiteStorage)
    return 0 if storage._conn is None else 1


def _corrupt(storage: Storage, customer_id: str, data: str = '{"v": 1, "created": ') -> None:
    assert isinstance(storage, SQLiteStorage)
    conn = storage._conn
    assert conn is not None
    changed = conn.execute(
        "UPDATE customers SET data = ? WHERE customer_id = ?", (data, customer_id)
    ).rowcount
    assert changed == 1


class TestSQLiteFile(StorageContract):
    supports_concurrency = True

    def make_storage(self) -> Storage:
        return SQLiteStorage(self.tmp_path / "cjo.db")

    def reopen(self, storage: Storage) -> Storage:
        return SQLiteStorage(self.tmp_path / "cjo.db")

    def open_connections(self, storage: Storage) -> int:
        return _connections(storage)

    def corrupt_record(self, storage: Storage, customer_id: str) -> None:
        _corrupt(storage, customer_id)


class TestSQLiteURL(TestSQLiteFile):
    def make_storage(self) -> Storage:
        return SQLiteStorage(f"sqlite:///{self.tmp_path / 'cjo.db'}")


class TestSQLiteMemory(StorageContract):
    supports_concurrency = True  # threads share the one connection, under its lock

    def make_storage(self) -> Storage:
        return SQLiteStorage(":memory:")

    def open_connections(self, storage: Storage) -> int:
        return _connections(storage)

    def corrupt_record(self, storage: Storage, customer_id: str) -> None:
        _corrupt(storage, customer_id)


# --- opening ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [":memory:", "sqlite:///:memory:", "sqlite://"])
def test_private_in_memory_databases(name: str) -> None:
    with SQLiteStorage(name) as one, SQLiteStorage(name) as two:
        one.put_setting("k", "v")
        assert two.get_setting("k") is None


def test_url_with_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with SQLiteStorage("sqlite:///sub.db") as storage:
        storage.put_setting("k", "v")
    with SQLiteStorage(tmp_path / "sub.db") as storage:
        assert storage.get_setting("k") == "v"


def test_url_with_an_absolute_path(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    with SQLiteStorage(f"sqlite:///{path}") as storage:  # sqlite:////tmp/.../abs.db
        storage.put_setting("k", "v")
    with SQLiteStorage(str(path)) as storage:
        assert storage.get_setting("k") == "v"


@pytest.mark.parametrize("bad", ["", "sqlite:", "sqlite:///", "sqlite://host/x.db",
                                 "sqlite:///x.db?mode=ro"])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(StorageError):
        SQLiteStorage(bad)


def test_open_storage_url_helper_opens_sqlite(tmp_path: Path) -> None:
    from cjo.storage.url import open_storage

    with open_storage(f"sqlite:///{tmp_path / 'x.db'}") as storage:
        assert isinstance(storage, SQLiteStorage)


def test_unopenable_path_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="open"):
        SQLiteStorage(tmp_path / "missing-dir" / "x.db")


def test_a_file_that_is_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError):
        SQLiteStorage(path)


def test_pragmas_of_a_file_database(tmp_path: Path) -> None:
    with SQLiteStorage(tmp_path / "p.db", busy_timeout=timedelta(seconds=7)) as storage:
        conn = storage._conn
        assert conn is not None
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (7000,)
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (10000,)
        assert conn.isolation_level is None  # autocommit; transactions are explicit
    assert not (tmp_path / "p.db-wal").exists(), "the last close checkpoints the WAL away"


# --- schema ----------------------------------------------------------------------------------


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_schema_version_is_recorded_and_reopening_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    state = CustomerState("c1", T0, profile=Profile("c1", {"n": 1}))
    with SQLiteStorage(path) as storage, storage.customer("c1", T0) as session:
        session.claim_event("e1")
        session.save(state, (), ())
    for _ in range(2):
        with SQLiteStorage(path) as storage:
            peeked = storage.peek("c1")
            assert peeked is not None
            assert peeked.profile == Profile("c1", {"n": 1})
            with storage.customer("c1", T0) as session:
                assert session.claim_event("e1") is False
    conn = _raw(path)
    try:
        assert conn.execute("SELECT version FROM cjo_schema").fetchall() == [(SCHEMA_VERSION,)]
        assert _tables(conn) == {"cjo_schema", "customers", "events", "outbox", "activity",
                                 "activity_totals", "definitions", "settings",
                                 "segment_members"}
    finally:
        conn.close()


def test_schema_version_is_eight() -> None:
    assert SCHEMA_VERSION == 8


def test_messages_written_before_version_8_are_read_as_not_leased(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v7.db"
    # Rows as version 7 wrote them (and an older process still running after the upgrade).
    insert = ("INSERT INTO outbox (key, customer_id, created_at, available_at, status, data) "
              "VALUES (?, 'c1', ?, ?, 'pending', ?)")
    with sqlite_at_schema(path, 7, monkeypatch) as old:
        old._connection().execute(insert, ("k-old", codec.us(T0), codec.us(T0 + MINUTE),
                                           codec.encode(_message("k-old"))))
    with SQLiteStorage(path) as storage:
        storage._connection().execute(insert, (
            "k-late", codec.us(T0 + MINUTE), codec.us(T0 + MINUTE),
            codec.encode(_message("k-late")),
        ))
        assert [(e.message.idempotency_key, e.leased)
                for e in storage.customer_outbox("c1")] == [("k-old", False), ("k-late", False)]
        now = T0 + storage.dispatch_lease
        assert [m.idempotency_key for m in storage.claim_outbox(now, 10, MINUTE)] == [
            "k-old", "k-late"
        ]
        assert all(e.sending(now) for e in storage.customer_outbox("c1"))


def test_a_record_set_aside_by_version_6_is_listed_without_an_instant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v6.db"
    with sqlite_at_schema(path, 6, monkeypatch) as old:
        # Rows as version 6 wrote them: a record set aside has its reason only.
        for cid, aside in (("c1", "old"), ("c2", None)):
            old._connection().execute(
                "INSERT INTO customers (customer_id, aside, revision, data) VALUES (?, ?, 1, ?)",
                (cid, aside, encode_state(CustomerState(cid, T0))),
            )
    with SQLiteStorage(path) as storage:
        assert storage.records_set_aside(10) == [SetAsideRecord("c1", "old", None)]
        with storage.customer("c2", T0 + MINUTE) as session:
            session.set_aside("new")
        assert storage.records_set_aside(10) == [
            SetAsideRecord("c1", "old", None), SetAsideRecord("c2", "new", T0 + MINUTE)
        ]
        plan = storage._connection().execute(
            "EXPLAIN QUERY PLAN " + sqlite_module._ASIDE_PAGE, ("", 10)
        ).fetchall()
        assert "customers_aside" in str(plan), "the set-aside rows are read by their index"


def test_a_version_5_database_gets_its_pending_messages_indexed_by_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v5.db"
    email, sms = _message("k-e"), attrs.evolve(_message("k-s"), channel="sms")
    with sqlite_at_schema(path, 5, monkeypatch) as old:
        # Rows as version 5 wrote them, leased to their writer.
        for n, m in enumerate((email, sms)):
            old._connection().execute(
                "INSERT INTO outbox (key, customer_id, created_at, available_at, status, data) "
                "VALUES (?, 'c1', ?, ?, 'pending', ?)",
                (m.idempotency_key, codec.us(T0) + n, codec.us(T0 + old.dispatch_lease),
                 codec.encode(m)),
            )
    with SQLiteStorage(path) as storage:
        # An older process, still running during the upgrade, writes a row as it always did.
        late = attrs.evolve(_message("k-late"), channel="sms")
        storage._connection().execute(
            "INSERT INTO outbox (key, customer_id, created_at, available_at, status, data) "
            "VALUES ('k-late', 'c1', ?, ?, 'pending', ?)",
            (codec.us(T0 + MINUTE), codec.us(T0), codec.encode(late)),
        )
        now = T0 + storage.dispatch_lease
        assert storage.pending_by_channel() == {"email": 1, "sms": 2}
        assert storage.claim_outbox(now, 10, MINUTE, channels=["sms"]) == [sms, late]
        assert storage.claim_outbox(now, 10, MINUTE) == [email]


@pytest.mark.parametrize("channels", [None, ["sms"], ["email", "push", "sms"]])
def test_claims_read_pending_messages_through_their_index(
    tmp_path: Path, channels: list[str] | None
) -> None:
    with SQLiteStorage(tmp_path / "plan.db") as storage:
        query = sqlite_module._CLAIM_OUTBOX if channels is None else sqlite_module._CLAIM_OUTBOX_OF
        args = (0, 10, 0) if channels is None else (0, 10, 0, json.dumps(channels))
        plan = [row[3] for row in storage._connection().execute(
            "EXPLAIN QUERY PLAN " + query, args
        )]
        reads = [step for step in plan if " outbox " in f" {step} "]
        # By key (the update) and through the partial index of pending messages: never a
        # scan of the whole table, whatever the channels.
        assert any("USING INDEX outbox_pending" in step for step in reads), plan
        assert not any(step == "SCAN outbox" for step in reads), plan
        if channels is not None:
            assert any("outbox_pending (<expr>=?" in step for step in reads), plan


def test_a_version_2_database_gets_dead_letters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v2.db"
    with sqlite_at_schema(path, 2, monkeypatch):
        pass
    conn = _raw(path)
    try:
        # Messages that failed for good, as version 2 kept them.
        for key, status, done in (("f", "failed", 5), ("r", "rejected", 7), ("d", "delivered", 9)):
            conn.execute(
                "INSERT INTO outbox (key, customer_id, created_at, available_at, status, attempts, "
                "last_error, done_at, data) VALUES (?, 'c1', 0, 0, ?, 2, 'boom', ?, ?)",
                (key, status, done, codec.encode(_message(key))),
            )
    finally:
        conn.close()
    with SQLiteStorage(path) as storage:
        dead = storage.dead_letters(10)
        assert [(d.key, d.attempts, d.last_error, codec.us(d.dead_at)) for d in dead] == [
            ("r", 2, "boom", 7), ("f", 2, "boom", 5)
        ]
        assert storage.prune(codec.dt(10), Retention(outbox=timedelta(0))).outbox == 1
        assert len(storage.dead_letters(10)) == 2, "dead letters are not pruned"


def test_a_version_1_database_is_migrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "v1.db"
    with sqlite_at_schema(path, 1, monkeypatch):
        pass
    conn = _raw(path)
    try:
        assert conn.execute("SELECT version FROM cjo_schema").fetchone() == (1,)
        # What a version-1 cjo left behind.
        conn.execute("INSERT INTO events VALUES ('e1')")
        conn.execute("INSERT INTO profiles VALUES ('c1', '{}')")
        conn.execute(
            "INSERT INTO enrollments (id, customer_id, journey_id, version, status, entered_at, "
            "wake_at, data) VALUES ('j:c1:1', 'c1', 'j', 1, 'active', 0, 1, '{}')"
        )
        conn.execute("INSERT INTO outbox (key, customer_id, created_at, available_at, status, "
                     "data) VALUES ('k', 'c1', 0, 0, 'pending', '{}')")
        conn.execute("INSERT INTO activity VALUES ('j', 1, NULL, 'entered', NULL, 'c1', 0)")
        conn.execute("INSERT INTO settings VALUES ('host', 'kept')")
    finally:
        conn.close()

    with caplog.at_level("WARNING", logger="cjo.storage.sqlite"), SQLiteStorage(path) as storage:
        (said,) = [r.getMessage() for r in caplog.records if "version 1" in r.getMessage()]
        assert "dropped" in said and "publish the definitions again" in said
        assert storage.get_setting("host") == "kept"
        assert storage.peek("c1") is None
        assert storage.next_wake_at() is None
        assert storage.claim_outbox(T0, 10, MINUTE) == []
        assert storage.activity_counts("j") == []
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e1") is True, "version 1's data is not carried over"
            session.save(CustomerState("c1", T0), (), ())
        assert storage.peek("c1") == CustomerState("c1", T0, revision=1)
    conn = _raw(path)
    try:
        assert conn.execute("SELECT version FROM cjo_schema").fetchone() == (SCHEMA_VERSION,)
        assert "enrollments" not in _tables(conn)
        assert "profiles" not in _tables(conn)
    finally:
        conn.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SQLiteStorage(path).close()
    conn = _raw(path)
    conn.execute("UPDATE cjo_schema SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(SchemaError, match="newer"):
        SQLiteStorage(path)


def test_a_damaged_schema_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.db"
    SQLiteStorage(path).close()
    conn = _raw(path)
    conn.execute("INSERT INTO cjo_schema (version) VALUES (1)")
    conn.close()
    with pytest.raises(SchemaError):
        SQLiteStorage(path)


def test_migrations_run_forward_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.db"
    with SQLiteStorage(path) as storage:
        storage.put_setting("kept", "yes")
    calls: list[int] = []

    def v3(conn: sqlite3.Connection) -> None:
        calls.append(1)
        conn.execute("CREATE TABLE extra (x INTEGER)")

    monkeypatch.setattr(sqlite_module, "MIGRATIONS", [*sqlite_module.MIGRATIONS, v3,
                                                      ["CREATE INDEX extra_x ON extra (x)"]])
    for _ in range(2):
        with SQLiteStorage(path) as storage:
            assert storage.get_setting("kept") == "yes"
    assert calls == [1]
    conn = _raw(path)
    try:
        assert conn.execute("SELECT version FROM cjo_schema").fetchone() == (SCHEMA_VERSION + 2,)
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'extra_x'").fetchone()
    finally:
        conn.close()


def test_a_failed_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.db"
    SQLiteStorage(path).close()
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", [
        *sqlite_module.MIGRATIONS, ["CREATE TABLE half (x)", "THIS IS NOT SQL"]
    ])
    with pytest.raises(StorageError):
        SQLiteStorage(path)
    conn = _raw(path)
    try:
        assert conn.execute("SELECT version FROM cjo_schema").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchone() is None
    finally:
        conn.close()


# --- storage format --------------------------------------------------------------------------


def test_instants_are_integer_microseconds(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    tick = timedelta(microseconds=1)
    e = Enrollment("j:c1:1", "j", 1, "c1", T0, step_id="w", step_entered_at=T0,
                   wake_at=T0 + tick)
    activity = Activity(T0 + 2 * tick, "c1", e.id, "j", 1, "w", "step")
    with SQLiteStorage(path) as storage, storage.customer("c1", T0 + 3 * tick) as session:
        session.claim_event("e1")
        session.save(CustomerState("c1", T0, enrollments=[e]), (), [activity])
    micros = int(T0.timestamp()) * 1_000_000
    conn = _raw(path)
    try:
        assert conn.execute("SELECT wake_at, revision FROM customers").fetchone() == (
            micros + 1, 1
        )
        assert conn.execute("SELECT at FROM activity").fetchone() == (micros + 2,)
        assert conn.execute("SELECT seen_at FROM events").fetchone() == (micros + 3,)
        (data,) = conn.execute("SELECT data FROM customers").fetchone()
    finally:
        conn.close()
    record = json.loads(data)
    assert (record["cid"], record["rev"], record["created"]) == ("c1", 1, micros)


# --- records that cannot be read, and records from a newer cjo --------------------------------


@pytest.mark.parametrize("data", ["", "not json", "[1, 2]", '"text"', "{}",
                                  '{"v": 1, "created": "yesterday"}',
                                  '{"v": "two", "created": 0}',
                                  '{"v": 1, "created": 0, "enr": [{"id": "x"}]}',
                                  # Read later by every send and local time: a locale or
                                  # time zone that is not text would stop a worker there.
                                  '{"v": 1, "created": 0, "profile": {"a": {}, "loc": 5}}',
                                  '{"v": 1, "created": 0, "profile": {"a": {}, "tz": [1]}}'])
def test_undecodable_records_raise_corrupt_record_error(data: str) -> None:
    with SQLiteStorage(":memory:") as storage:
        with storage.customer("c1", T0) as session:
            session.save(CustomerState("c1", T0, timers={"t": T0}), (), ())
        _corrupt(storage, "c1", data)
        with pytest.raises(CorruptRecordError, match="'c1'"), \
                storage.customer("c1", T0) as session:
            session.load()
        with pytest.raises(CorruptRecordError, match="'c1'"):
            storage.peek("c1")
        assert storage.peek_many(["c1"]) == {}
        # Reports go on around it.
        assert storage.active_counts("j") == {}
        with storage.due_batch(T0, 10, MINUTE) as sessions:
            assert list(sessions) == ["c1"]
            sessions["c1"].set_aside("cannot be decoded")
        conn = storage._conn
        assert conn is not None
        assert conn.execute("SELECT aside, data FROM customers").fetchone() == (
            "cannot be decoded", data
        )
        assert storage.next_wake_at() is None


def test_a_record_written_by_a_newer_cjo(tmp_path: Path) -> None:
    # A layout this cjo does not know yet, with fields it does not know: read as far as it is
    # understood; written back with the unknown fields untouched.
    with SQLiteStorage(tmp_path / "n.db") as storage:
        with storage.customer("c1", T0) as session:
            session.save(CustomerState("c1", T0), (), ())
        newer = {"v": 99, "cid": "c1", "created": 0, "rev": 5,
                 "profile": {"a": {"n": 1}, "tz": "UTC"},
                 "wallet": {"points": 10, "since": {"$dt": 1}}, "segments": ["vip"]}
        _corrupt(storage, "c1", json.dumps(newer))
        with storage.customer("c1", T0) as session:
            state = session.load()
            assert state is not None
            assert state.revision == 5
            assert state.profile == Profile("c1", {"n": 1}, timezone="UTC")
            assert set(state.extra) == {"wallet", "segments", "v"}  # "v": its layout
            state.profile = Profile("c1", {"n": 2}, timezone="UTC")
            session.save(state, (), ())
        conn = storage._conn
        assert conn is not None
        (data,) = conn.execute("SELECT data FROM customers").fetchone()
    written = json.loads(data)
    assert written["v"] == 99
    assert written["wallet"] == {"points": 10, "since": {"$dt": 1}}
    assert written["segments"] == ["vip"]
    assert written["profile"]["a"] == {"n": 2}
    assert written["rev"] == 6


def test_active_counts_read_the_records_enrollments(tmp_path: Path) -> None:
    enrollments = [Enrollment(f"j:c1:{i}", "j", 1, "c1", T0, step_id="s") for i in range(3)]
    with SQLiteStorage(tmp_path / "a.db") as storage:
        with storage.batch(["c1", "c2"], T0) as sessions:
            sessions["c1"].save(CustomerState("c1", T0, enrollments=enrollments), (), ())
            # Mentions the journey id without being enrolled in it.
            sessions["c2"].save(CustomerState("c2", T0, profile=Profile("c2", {"x": "j"})),
                                (), ())
        assert storage.active_counts("j") == {(1, "s"): 3}
        assert json.loads(encode_state(CustomerState("c1", T0, enrollments=enrollments[:1])))[
            "enr"
        ][0]["j"] == "j", "the query reads codec's layout"


# --- errors and transactions -----------------------------------------------------------------


def test_using_a_closed_storage_is_a_storage_error() -> None:
    storage = SQLiteStorage(":memory:")
    storage.close()
    with pytest.raises(StorageError, match="closed"):
        storage.get_setting("x")
    with pytest.raises(StorageError, match="closed"):
        storage.peek("c1")
    with pytest.raises(StorageError, match="closed"), storage.customer("c1", T0):
        pass
    with pytest.raises(StorageError, match="closed"), storage.due_batch(T0, 1, MINUTE):
        pass


def test_sqlite_errors_inside_a_session_roll_back_and_are_translated(tmp_path: Path) -> None:
    with SQLiteStorage(tmp_path / "e.db") as storage:
        conn = storage._conn
        assert conn is not None
        conn.execute("CREATE TRIGGER no_x BEFORE INSERT ON events WHEN NEW.event_id = 'x' "
                     "BEGIN SELECT RAISE(ABORT, 'x is refused'); END")

        def claim_a_refused_id() -> None:
            with storage.customer("c1", T0) as session:
                assert session.claim_event("fine")
                session.claim_event("x")

        with pytest.raises(StorageError, match="claim_event failed: x is refused"):
            claim_a_refused_id()
        assert not conn.in_transaction
        with storage.customer("c1", T0) as session:
            assert session.claim_event("fine"), "the failed transaction was rolled back"


def test_errors_while_flushing_roll_back_and_are_translated(tmp_path: Path) -> None:
    with SQLiteStorage(tmp_path / "f.db") as storage:
        conn = storage._conn
        assert conn is not None
        conn.execute("CREATE TRIGGER no_bad BEFORE INSERT ON activity WHEN NEW.kind = 'bad' "
                     "BEGIN SELECT RAISE(ABORT, 'bad activity'); END")
        bad = Activity(T0, "c1", "e", "j", 1, None, "bad")

        def save_a_refused_activity() -> None:
            with storage.customer("c1", T0) as session:
                assert session.claim_event("e1")
                session.save(CustomerState("c1", T0), (), [bad])

        with pytest.raises(StorageError, match="bad activity"):
            save_a_refused_activity()
        assert not conn.in_transaction
        assert storage.peek("c1") is None
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e1")


def test_a_writer_held_too_long_is_a_conflict(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    with SQLiteStorage(path, busy_timeout=timedelta(milliseconds=50)) as storage:
        blocker = _raw(path)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(ConflictError), storage.customer("c1", T0):
                pass
            with pytest.raises(ConflictError):
                storage.append_definitions(0, "x")
            with pytest.raises(ConflictError):
                storage.claim_due(T0, 10, MINUTE)
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e1")


def test_opening_a_new_database_another_connection_writes_waits_for_it(tmp_path: Path) -> None:
    """Processes started together on a new file: switching it to WAL needs the database to
    itself, and SQLite refuses that at once, busy timeout or not, while another connection
    writes. Before, the open failed at once with ``ConflictError``; it now waits (up to the
    busy timeout) like every other write."""
    path = tmp_path / "new.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("CREATE TABLE host_table (x INTEGER)")  # not yet WAL: a rollback journal
    opened: list[object] = []

    def open_it() -> None:
        try:
            with SQLiteStorage(path, busy_timeout=timedelta(seconds=20)) as storage:
                opened.append(storage.definitions_generation())
        except Exception as exc:
            opened.append(exc)

    opener = threading.Thread(target=open_it)
    opener.start()
    opener.join(0.3)  # refused by now, before the fix; waiting, after
    writer.execute("COMMIT")
    writer.close()
    opener.join(20)
    assert opened == [0]
    with SQLiteStorage(path) as storage:
        assert storage._connection().execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_opening_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("CREATE TABLE host_table (x INTEGER)")
    try:
        with pytest.raises(ConflictError, match="stayed locked"):
            SQLiteStorage(path, busy_timeout=timedelta(milliseconds=50))
    finally:
        writer.close()


def test_opening_a_current_database_does_not_wait_for_a_writer(tmp_path: Path) -> None:
    """An operator's read (``cjo report``) or a restarted worker opens the file while another
    process is in a long write: a database at this schema needs nothing written to open."""
    path = tmp_path / "busy.db"
    with SQLiteStorage(path) as storage:
        storage.put_setting("kept", "yes")
    blocker = _raw(path)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        blocker.execute("INSERT INTO settings (key, value) VALUES ('other', 'x')")
        with SQLiteStorage(path, busy_timeout=timedelta(milliseconds=50)) as storage:
            assert storage.get_setting("kept") == "yes"
            assert storage.dead_letters(10) == []
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()


def test_an_idle_due_batch_does_not_take_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "idle.db"
    with SQLiteStorage(path, busy_timeout=timedelta(milliseconds=50)) as storage:
        blocker = _raw(path)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with storage.due_batch(T0, 10, MINUTE) as sessions:
                assert dict(sessions) == {}
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()


def test_reading_inside_a_transaction_from_the_same_thread_does_not_hang() -> None:
    with SQLiteStorage(":memory:") as storage:
        with storage.customer("c1", T0) as session:
            session.save(CustomerState("c1", T0), (), ())
            # Answers at once (writes are buffered until commit, so it sees none yet).
            assert storage.peek("c1") is None
            assert session.load() is not None  # the session sees its own writes
        assert storage.peek("c1") is not None


def test_one_storage_shared_by_threads_on_different_customers(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    with SQLiteStorage(tmp_path / "th.db") as storage:

        def work(customer: str) -> None:
            try:
                for i in range(50):
                    with storage.customer(customer, T0) as session:
                        assert session.claim_event(f"{customer}-{i}")
                        session.save(CustomerState(customer, T0,
                                                   profile=Profile(customer, {"n": i})), (), ())
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(f"c{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for i in range(4):
            state = storage.peek(f"c{i}")
            assert state is not None
            assert state.profile == Profile(f"c{i}", {"n": 49})


# --- the activity log's order key ------------------------------------------------------------


def test_activity_ranges_are_exact_whatever_the_order_of_appending(tmp_path: Path) -> None:
    tick = timedelta(microseconds=1)
    second = timedelta(seconds=1)
    at_times = (
        [T0] * 1500  # more entries in one microsecond than the order key has room for
        + [T0 + tick, T0 + second]
        + [T0 - timedelta(hours=1)] * 3  # a process whose clock is behind
        + [T0 + 2 * second, T0 + second, T0 + 3 * second]
    )
    entries = [Activity(at, "c1", f"e{i}", "j", 1, None, "step", str(i))
               for i, at in enumerate(at_times)]
    with SQLiteStorage(tmp_path / "order.db") as storage:
        # Appended over several transactions, a few entries each.
        for i in range(0, len(entries), 7):
            with storage.customer("c1", T0) as session:
                session.save(CustomerState("c1", T0), (), entries[i:i + 7])
        bounds = sorted({*at_times, T0 - timedelta(days=1), T0 + timedelta(days=1),
                         T0 + tick + tick})
        for start in bounds:
            for end in bounds:
                expected = [a for a in entries if start <= a.at < end]
                assert storage.activities(start, end) == expected, (start, end)
        conn = storage._conn
        assert conn is not None
        late = conn.execute(
            "SELECT COUNT(*) FROM activity INDEXED BY activity_late WHERE (seq >> 10) != at"
        ).fetchone()[0]
        assert 0 < late < len(entries) // 2, "only entries out of order are indexed"
        remaining = list(entries)
        for cutoff in bounds:
            pruned = [a for a in remaining if a.at < cutoff]
            result = storage.prune(cutoff + timedelta(days=400), Retention())
            assert result.activity == len(pruned), cutoff
            remaining = [a for a in remaining if a.at >= cutoff]
            assert storage.activities(T0 - timedelta(days=9), T0 + timedelta(days=9)) == remaining
        assert storage.activity_counts("j") == [
            ActivityCount("j", 1, None, "step", str(i), 1)
            for i in sorted(range(len(entries)), key=str)
        ]


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_deleted_or_replaced_while_open_is_refused(
    tmp_path: Path, how: str
) -> None:
    # SQLite goes on writing into the unlinked file, and every commit is lost when it closes.
    path = tmp_path / "gone.db"
    with SQLiteStorage(path) as storage:
        with storage.customer("c1", T0) as session:
            session.save(CustomerState("c1", T0), (), ())
        if how == "deleted":
            path.unlink()
        else:
            with SQLiteStorage(tmp_path / "other.db"):
                pass
            (tmp_path / "other.db").replace(path)
        with (pytest.raises(StorageError, match="deleted or replaced"),
              storage.customer("c2", T0) as session):
            session.save(CustomerState("c2", T0), (), ())
        with pytest.raises(StorageError, match="deleted or replaced"):
            storage.put_setting("k", "v")
        with pytest.raises(StorageError, match="deleted or replaced"):
            storage.peek("c1")
