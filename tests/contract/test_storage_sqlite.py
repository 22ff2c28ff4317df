"""The storage contract on SQLiteStorage (file, URL and private in-memory databases), and what
only SQLite has: URLs, pragmas, the schema version and its migrations, error translation."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cjo.errors import ConflictError, SchemaError, StorageError
from cjo.model.events import Profile
from cjo.runtime.state import Changes, Enrollment
from cjo.storage import sqlite as sqlite_module
from cjo.storage.base import Storage
from cjo.storage.sqlite import SCHEMA_VERSION, SQLiteStorage
from cjo.testing import StorageContract

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _connections(storage: Storage) -> int:
    assert isinstance(storage, SQLiteStorage)
    return 0 if storage._conn is None else 1


class TestSQLiteFile(StorageContract):
    supports_concurrency = True

    def make_storage(self) -> Storage:
        return SQLiteStorage(self.tmp_path / "cjo.db")

    def reopen(self, storage: Storage) -> Storage:
        return SQLiteStorage(self.tmp_path / "cjo.db")

    def open_connections(self, storage: Storage) -> int:
        return _connections(storage)


class TestSQLiteURL(TestSQLiteFile):
    def make_storage(self) -> Storage:
        return SQLiteStorage(f"sqlite:///{self.tmp_path / 'cjo.db'}")


class TestSQLiteMemory(StorageContract):
    supports_concurrency = True  # threads share the one connection, under its lock

    def make_storage(self) -> Storage:
        return SQLiteStorage(":memory:")

    def open_connections(self, storage: Storage) -> int:
        return _connections(storage)


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
        assert conn.isolation_level is None  # autocommit; transactions are explicit
    assert not (tmp_path / "p.db-wal").exists(), "the last close checkpoints the WAL away"


# --- schema ----------------------------------------------------------------------------------


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_schema_version_is_recorded_and_reopening_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with SQLiteStorage(path) as storage, storage.customer("c1", T0) as session:
        session.claim_event("e1")
        session.apply(Changes("c1", profile=Profile("c1", {"n": 1})))
    for _ in range(2):
        with SQLiteStorage(path) as storage:
            assert storage.get_profile("c1") == Profile("c1", {"n": 1})
            with storage.customer("c1", T0) as session:
                assert session.claim_event("e1") is False
    conn = _raw(path)
    try:
        assert conn.execute("SELECT version FROM cjo_schema").fetchall() == [(SCHEMA_VERSION,)]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"cjo_schema", "events", "profiles", "enrollments", "outbox", "activity",
                "settings"} <= tables
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

    def v2(conn: sqlite3.Connection) -> None:
        calls.append(1)
        conn.execute("CREATE TABLE extra (x INTEGER)")

    monkeypatch.setattr(sqlite_module, "MIGRATIONS", [*sqlite_module.MIGRATIONS, v2,
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


def test_datetimes_are_integer_microseconds(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    e = Enrollment("j:c1:1", "j", 1, "c1", T0, step_id="w", step_entered_at=T0,
                   wake_at=T0 + timedelta(microseconds=1))
    with SQLiteStorage(path) as storage, storage.customer("c1", T0) as session:
        session.apply(Changes("c1", enrollments={e.id: e}))
    conn = _raw(path)
    try:
        row = conn.execute("SELECT entered_at, wake_at FROM enrollments").fetchone()
    finally:
        conn.close()
    micros = int(T0.timestamp()) * 1_000_000
    assert row == (micros, micros + 1)


# --- errors and transactions -----------------------------------------------------------------


def test_using_a_closed_storage_is_a_storage_error() -> None:
    storage = SQLiteStorage(":memory:")
    storage.close()
    with pytest.raises(StorageError, match="closed"):
        storage.get_setting("x")
    with pytest.raises(StorageError, match="closed"), storage.customer("c1", T0):
        pass


def test_a_session_used_after_its_transaction_is_refused() -> None:
    with SQLiteStorage(":memory:") as storage:
        with storage.customer("c1", T0) as session:
            pass
        with pytest.raises(StorageError, match="after its transaction"):
            session.load_active()


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


def test_a_writer_held_too_long_is_a_conflict(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    with SQLiteStorage(path, busy_timeout=timedelta(milliseconds=50)) as storage:
        blocker = _raw(path)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(ConflictError), storage.customer("c1", T0):
                pass
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e1")


def test_a_batch_session_reads_what_it_applied() -> None:
    # Batches prefetch; what a session applies must not be hidden behind that prefetch.
    e = Enrollment("j:c1:1", "j", 1, "c1", T0, step_id="w", step_entered_at=T0)
    with SQLiteStorage(":memory:") as storage, storage.batch(["c1", "c2"], T0) as sessions:
        assert sessions["c1"].load_active() == []
        assert sessions["c1"].load_profile() is None
        sessions["c1"].apply(Changes("c1", enrollments={e.id: e}, profile=Profile("c1")))
        assert sessions["c1"].load_active() == [e]
        assert sessions["c1"].load_profile() == Profile("c1")
        assert sessions["c2"].load_active() == []


def test_reading_inside_a_transaction_from_the_same_thread_does_not_hang() -> None:
    with SQLiteStorage(":memory:") as storage:
        with storage.customer("c1", T0) as session:
            session.apply(Changes("c1", profile=Profile("c1")))
            # Answers at once (writes are buffered until commit, so it sees none yet).
            assert storage.get_profile("c1") is None
            assert session.load_profile() == Profile("c1")  # the session sees its own writes
        assert storage.get_profile("c1") == Profile("c1")


def test_one_storage_shared_by_threads_on_different_customers(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    with SQLiteStorage(tmp_path / "th.db") as storage:

        def work(customer: str) -> None:
            try:
                for i in range(50):
                    with storage.customer(customer, T0) as session:
                        assert session.claim_event(f"{customer}-{i}")
                        session.apply(Changes(customer, profile=Profile(customer, {"n": i})))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(f"c{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert [storage.get_profile(f"c{i}") for i in range(4)] == [
            Profile(f"c{i}", {"n": 49}) for i in range(4)
        ]
