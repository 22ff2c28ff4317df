"""SQLite storage: the embedded, durable default. Standard library only.

One ``SQLiteStorage`` holds one connection, shared by threads under a lock; several processes
each open their own on the same file and serialise their writes with ``BEGIN IMMEDIATE`` (the
database-wide write lock, waited for up to ``busy_timeout``). Files use WAL, so readers never
block the writer, with ``synchronous=NORMAL``: a commit survives a crash of the process, and
only a power loss may drop the last few commits (never corrupt the file).

Datetimes are stored as INTEGER microseconds since the epoch (UTC): sortable and compact.
Enrollments, profiles and messages are kept whole as JSON (the project's one converter, through
``cjo.storage.codec``); the columns beside the JSON exist only to be searched and sorted on.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Final

from cjo.channels.base import DeliveryResult, Message
from cjo.errors import ConflictError, SchemaError, StorageError
from cjo.model.events import Profile
from cjo.runtime.state import Changes, Enrollment, PastEntry
from cjo.storage.base import (
    ActivityCount,
    CustomerSession,
    Delivery,
    DueWakeup,
    OutboxEntry,
    OutboxStatus,
    Storage,
)
from cjo.storage.codec import encode, enrollment_from_json, message_from_json, profile_from_json

__all__ = ["SCHEMA_VERSION", "SQLiteStorage"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def _us(value: datetime) -> int:
    # Exact integer arithmetic: ``timestamp() * 1e6`` would round through a float.
    return (value - _EPOCH) // _MICROSECOND


def _us_or_none(value: datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // _MICROSECOND


def _dt(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


# --- schema ------------------------------------------------------------------------------------

#: A migration is a sequence of SQL statements, or a function for changes SQL alone cannot make.
Migration = Sequence[str] | Callable[[sqlite3.Connection], None]

_V1: Final[tuple[str, ...]] = (
    "CREATE TABLE events (event_id TEXT PRIMARY KEY) WITHOUT ROWID",
    # JSON columns are declared TEXT: a declared type "JSON" would get NUMERIC affinity.
    "CREATE TABLE profiles (customer_id TEXT PRIMARY KEY, data TEXT NOT NULL)",
    """CREATE TABLE enrollments (
        id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        journey_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        instance_key TEXT,
        status TEXT NOT NULL,
        step_id TEXT,
        entered_at INTEGER NOT NULL,
        step_entered_at INTEGER,
        ended_at INTEGER,
        wake_at INTEGER,
        wake_lease_until INTEGER,
        data TEXT NOT NULL
    )""",
    "CREATE INDEX enrollments_customer ON enrollments (customer_id, status)",
    # wake_at is set only on active enrollments, so this index holds exactly the live timers.
    "CREATE INDEX enrollments_wake ON enrollments (wake_at) WHERE wake_at IS NOT NULL",
    "CREATE INDEX enrollments_journey ON enrollments (journey_id, status)",
    """CREATE TABLE outbox (
        key TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        available_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        data TEXT NOT NULL
    )""",
    "CREATE INDEX outbox_pending ON outbox (status, available_at)",
    # Erasure must find a customer's messages without scanning every message ever sent.
    "CREATE INDEX outbox_customer ON outbox (customer_id)",
    # Append-only, aggregated on read: counters updated in place would serialise every writer
    # on a few hot rows. No index at all: each would cost every transaction several index
    # writes (measured: about a fifth of an event's time), for reports and erasures, which are
    # rare and may scan.
    """CREATE TABLE activity (
        journey_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        step_id TEXT,
        kind TEXT NOT NULL,
        detail TEXT,
        customer_id TEXT,
        at INTEGER NOT NULL
    )""",
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
)

#: Forward migrations; entry ``i`` takes the schema from version ``i`` to ``i + 1``. Append only.
MIGRATIONS: list[Migration] = [_V1]
SCHEMA_VERSION: Final = len(MIGRATIONS)


def _migrate(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> None:
    conn.execute("BEGIN IMMEDIATE")  # concurrent openers migrate one at a time
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS cjo_schema (version INTEGER NOT NULL)")
        rows = conn.execute("SELECT version FROM cjo_schema").fetchall()
        if len(rows) > 1:
            raise SchemaError(f"cjo_schema holds {len(rows)} rows; expected one")
        current = rows[0][0] if rows else 0
        if not isinstance(current, int) or current < 0:
            raise SchemaError(f"cjo_schema holds an invalid version {current!r}")
        if current > len(migrations):
            raise SchemaError(
                f"the database has schema version {current}, newer than this cjo knows "
                f"({len(migrations)}): upgrade cjo to open it"
            )
        if not rows:
            conn.execute("INSERT INTO cjo_schema (version) VALUES (0)")
        for version in range(current, len(migrations)):
            migration = migrations[version]
            if callable(migration):
                migration(conn)
            else:
                for statement in migration:
                    conn.execute(statement)
            conn.execute("UPDATE cjo_schema SET version = ?", (version + 1,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# --- statements (module constants: identical text is reused from sqlite3's statement cache) ----

_CLAIM_EVENT = "INSERT OR IGNORE INTO events (event_id) VALUES (?)"
_LOAD_PROFILE = "SELECT data FROM profiles WHERE customer_id = ?"
_LOAD_ACTIVE = (
    "SELECT data FROM enrollments WHERE customer_id = ? AND status = 'active' ORDER BY id"
)
# json_each keeps the SQL text the same whatever the number of customers in a batch.
_PREFETCH_ACTIVE = (
    "SELECT customer_id, data FROM enrollments WHERE status = 'active' AND customer_id IN "
    "(SELECT value FROM json_each(?)) ORDER BY id"
)
_PREFETCH_PROFILES = (
    "SELECT customer_id, data FROM profiles WHERE customer_id IN (SELECT value FROM json_each(?))"
)
_PREFETCH_HISTORY = (
    "SELECT customer_id, journey_id, instance_key, entered_at, ended_at FROM enrollments "
    "WHERE customer_id IN (SELECT value FROM json_each(?)) ORDER BY entered_at, rowid"
)
_SEEN_EVENTS = "SELECT event_id FROM events WHERE event_id IN (SELECT value FROM json_each(?))"
_UPSERT_ENROLLMENT = (
    "INSERT INTO enrollments (id, customer_id, journey_id, version, instance_key, status, "
    "step_id, entered_at, step_entered_at, ended_at, wake_at, wake_lease_until, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?) "
    "ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, "
    "journey_id = excluded.journey_id, version = excluded.version, "
    "instance_key = excluded.instance_key, status = excluded.status, "
    "step_id = excluded.step_id, entered_at = excluded.entered_at, "
    "step_entered_at = excluded.step_entered_at, ended_at = excluded.ended_at, "
    "wake_at = excluded.wake_at, wake_lease_until = NULL, data = excluded.data"
)
_UPSERT_PROFILE = (
    "INSERT INTO profiles (customer_id, data) VALUES (?, ?) "
    "ON CONFLICT (customer_id) DO UPDATE SET data = excluded.data"
)
_INSERT_OUTBOX = (
    "INSERT OR IGNORE INTO outbox (key, customer_id, created_at, available_at, status, data) "
    "VALUES (?, ?, ?, ?, 'pending', ?)"
)
_INSERT_ACTIVITY = (
    "INSERT INTO activity (journey_id, version, step_id, kind, detail, customer_id, at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_DUE_WAKEUPS = (
    "SELECT customer_id, id, wake_at FROM enrollments WHERE wake_at IS NOT NULL "
    "AND wake_at <= ? AND (wake_lease_until IS NULL OR wake_lease_until <= ?) "
    "ORDER BY wake_at, COALESCE(step_entered_at, entered_at), id LIMIT ?"
)
_LEASE_WAKEUP = "UPDATE enrollments SET wake_lease_until = ? WHERE id = ?"
_NEXT_WAKE = "SELECT MIN(wake_at) FROM enrollments WHERE wake_at IS NOT NULL"
_DUE_OUTBOX = (
    "SELECT key, data FROM outbox WHERE status = 'pending' AND available_at <= ? "
    "ORDER BY created_at, rowid LIMIT ?"
)
_LEASE_OUTBOX = "UPDATE outbox SET available_at = ? WHERE key = ?"
_COMPLETE_OUTBOX = (
    "UPDATE outbox SET status = ?, attempts = attempts + 1, available_at = ?, last_error = ? "
    "WHERE key = ? AND status = 'pending'"
)
_OUTBOX_ENTRY = "SELECT data, status, attempts, available_at, last_error FROM outbox WHERE key = ?"
_GET_ENROLLMENTS = "SELECT data FROM enrollments WHERE customer_id = ? ORDER BY entered_at, rowid"
_ACTIVITY_COUNTS = (
    "SELECT journey_id, version, step_id, kind, detail, COUNT(*) FROM activity "
    "WHERE journey_id = ? GROUP BY version, step_id, kind, detail "
    "ORDER BY version, step_id, kind, detail"
)
_ACTIVE_COUNTS = (
    "SELECT version, step_id, COUNT(*) FROM enrollments WHERE journey_id = ? "
    "AND status = 'active' GROUP BY version, step_id"
)
_GET_SETTING = "SELECT value FROM settings WHERE key = ?"
_PUT_SETTING = (
    "INSERT INTO settings (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_ERASE: Final = (
    "DELETE FROM profiles WHERE customer_id = ?",
    "DELETE FROM enrollments WHERE customer_id = ?",
    "DELETE FROM outbox WHERE customer_id = ?",
    "UPDATE activity SET customer_id = NULL WHERE customer_id = ?",
)

_BUSY_CODES: Final = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _error(what: str, exc: sqlite3.Error) -> StorageError:
    code = getattr(exc, "sqlite_errorcode", None)
    # Extended result codes keep the primary code in their low byte.
    if code is not None and code & 0xFF in _BUSY_CODES:
        return ConflictError(f"SQLite {what}: the database stayed locked by another writer: {exc}")
    return StorageError(f"SQLite {what} failed: {exc}")


def _enrollment_row(e: Enrollment) -> tuple[object, ...]:
    return (
        e.id, e.customer_id, e.journey_id, e.version, e.instance_key, e.status, e.step_id,
        _us(e.entered_at), _us_or_none(e.step_entered_at), _us_or_none(e.ended_at),
        # Only an active enrollment can wake up.
        _us(e.wake_at) if e.wake_at is not None and e.status == "active" else None,
        encode(e),
    )


class _Txn:
    """What the sessions of one transaction share: the connection, the prefetched rows, the
    event ids claimed up front, and the writes buffered until commit (one executemany per
    table, rather than one per customer)."""

    __slots__ = (
        "_history",
        "activities",
        "announced",
        "conn",
        "customer_ids",
        "dirty",
        "enrollments",
        "fresh",
        "messages",
        "now",
        "open",
        "profiles",
        "stale_history",
        "store",
    )

    def __init__(
        self, store: SQLiteStorage, conn: sqlite3.Connection, customer_ids: list[str],
        now: datetime,
    ) -> None:
        self.store = store
        self.conn = conn
        self.customer_ids = customer_ids
        self.now = now
        self.open = True
        self.dirty = False
        self.announced: frozenset[str] = frozenset()
        self.fresh: set[str] = set()
        self.enrollments: dict[str, tuple[object, ...]] = {}
        self.profiles: dict[str, tuple[object, ...]] = {}
        self.messages: dict[str, tuple[object, ...]] = {}
        self.activities: list[tuple[object, ...]] = []
        self._history: dict[str, list[tuple[str, str | None, int, int | None]]] | None = None
        # Customers who applied changes since the history was loaded.
        self.stale_history: set[str] = set()

    def check(self) -> sqlite3.Connection:
        if not self.open:
            raise StorageError("a customer session was used after its transaction ended")
        return self.conn

    def claim_up_front(self, claims: Sequence[tuple[str, str]]) -> None:
        """Claim every announced event id in two statements; claim_event hands them out."""
        ids = list(dict.fromkeys(eid for _, eid in claims))
        if not ids:
            return
        seen = {r[0] for r in self.conn.execute(_SEEN_EVENTS, (encode(ids),))}
        fresh = [eid for eid in ids if eid not in seen]
        self.conn.executemany(_CLAIM_EVENT, [(eid,) for eid in fresh])
        self.announced = frozenset(ids)
        self.fresh = set(fresh)

    def history(self, customer_id: str) -> list[tuple[str, str | None, int, int | None]]:
        if self._history is None or customer_id in self.stale_history:
            self.flush()
            self.stale_history.clear()
            # One query for the whole transaction, on first need (entries are rarer than
            # events); later calls filter in memory.
            history: dict[str, list[tuple[str, str | None, int, int | None]]] = {}
            for cid, jid, key, entered, ended in self.conn.execute(
                _PREFETCH_HISTORY, (encode(self.customer_ids),)
            ):
                history.setdefault(cid, []).append((jid, key, entered, ended))
            self._history = history
        return self._history.get(customer_id, [])

    def add(self, changes: Changes) -> None:
        now = _us(self.now)
        for e in changes.enrollments.values():
            self.enrollments[e.id] = _enrollment_row(e)  # a second write keeps the last value
        if changes.profile is not None:
            self.profiles[changes.customer_id] = (changes.customer_id, encode(changes.profile))
        if changes.messages:
            available = now + self.store.dispatch_lease // _MICROSECOND
            for m in changes.messages:
                # The first message with a key wins, as INSERT OR IGNORE would have it.
                if m.idempotency_key not in self.messages:
                    self.messages[m.idempotency_key] = (
                        m.idempotency_key, m.customer_id, now, available, encode(m)
                    )
        self.activities.extend(
            (a.journey_id, a.version, a.step_id, a.kind, a.detail, a.customer_id, _us(a.at))
            for a in changes.activities
        )
        self.stale_history.add(changes.customer_id)
        self.dirty = True

    def flush(self) -> None:
        if not self.dirty:
            return
        conn = self.conn
        for sql, rows in (
            (_UPSERT_ENROLLMENT, list(self.enrollments.values())),
            (_UPSERT_PROFILE, list(self.profiles.values())),
            (_INSERT_OUTBOX, list(self.messages.values())),
            (_INSERT_ACTIVITY, self.activities),
        ):
            if rows:
                conn.executemany(sql, rows)
        self.enrollments.clear()
        self.profiles.clear()
        self.messages.clear()
        self.activities = []
        self.dirty = False


class _Session(CustomerSession):
    __slots__ = ("_profile", "_rows", "_txn", "customer_id")

    def __init__(
        self,
        txn: _Txn,
        customer_id: str,
        rows: list[str] | None = None,
        profile: str | None = None,
    ) -> None:
        self._txn = txn
        self.customer_id = customer_id
        # A batch's prefetch (raw JSON). ``rows`` None: nothing prefetched, query when asked;
        # otherwise ``profile`` None means the customer has none.
        self._rows = rows
        self._profile = profile

    def _reading(self) -> sqlite3.Connection:
        """The connection; a read that goes to the database first flushes buffered writes, so
        a session sees what it applied. (Applying drops the session's prefetch.)"""
        txn = self._txn
        conn = txn.check()
        if self._rows is None and txn.dirty:
            txn.flush()
        return conn

    def claim_event(self, event_id: str) -> bool:
        txn = self._txn
        conn = txn.check()
        if event_id in txn.announced:
            if event_id in txn.fresh:
                txn.fresh.discard(event_id)
                return True
            return False  # handled before, or already handed out in this transaction
        try:
            return conn.execute(_CLAIM_EVENT, (event_id,)).rowcount == 1
        except sqlite3.Error as exc:
            raise _error("claim_event", exc) from exc

    def load_profile(self) -> Profile | None:
        try:
            conn = self._reading()
            text = self._profile
            if text is None:
                if self._rows is not None:
                    return None
                row = conn.execute(_LOAD_PROFILE, (self.customer_id,)).fetchone()
                if row is None:
                    return None
                text = row[0]
        except sqlite3.Error as exc:
            raise _error("load_profile", exc) from exc
        return profile_from_json(text)

    def load_active(self) -> list[Enrollment]:
        try:
            conn = self._reading()
            texts = self._rows
            if texts is None:
                texts = [r[0] for r in conn.execute(_LOAD_ACTIVE, (self.customer_id,))]
        except sqlite3.Error as exc:
            raise _error("load_active", exc) from exc
        # Decoded on every call, so each caller gets its own objects.
        return [enrollment_from_json(t) for t in texts]

    def history(self, journey_id: str, instance_key: str | None) -> list[PastEntry]:
        self._txn.check()
        try:
            rows = self._txn.history(self.customer_id)
        except sqlite3.Error as exc:
            raise _error("history", exc) from exc
        return [
            PastEntry(_dt(entered), None if ended is None else _dt(ended))
            for jid, key, entered, ended in rows
            if jid == journey_id and key == instance_key
        ]

    def apply(self, changes: Changes) -> None:
        self._txn.check()
        self._txn.add(changes)
        self._rows = self._profile = None  # the prefetch is stale now: read the database


def _database(path_or_url: str | os.PathLike[str]) -> str:
    """The name to give ``sqlite3.connect``: a path, or ":memory:"."""
    text = os.fspath(path_or_url)
    if text.startswith("sqlite:"):
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute.db.
        if text in ("sqlite://", "sqlite:///:memory:", "sqlite://:memory:"):
            return ":memory:"
        if not text.startswith("sqlite:///") or len(text) == len("sqlite:///") or "?" in text:
            raise StorageError(
                f"bad SQLite URL {text!r}: expected sqlite:///relative/path.db, "
                "sqlite:////absolute/path.db or sqlite:///:memory:"
            )
        text = text[len("sqlite:///"):]
    if not text:
        raise StorageError("no SQLite database path given (use ':memory:' for a private one)")
    return text


class SQLiteStorage(Storage):
    """Storage in one SQLite database: a file path, ``":memory:"``, or ``"sqlite:///path.db"``
    (``"sqlite:////absolute/path.db"``); ``database`` is the name it was opened with.

    The schema is created or migrated forward on open; a database written by a newer cjo
    raises ``SchemaError``. ``busy_timeout`` bounds how long a transaction waits for another
    process's write; past it the transaction fails with ``ConflictError`` (safe to retry).
    """

    def __init__(
        self,
        path_or_url: str | os.PathLike[str],
        *,
        busy_timeout: timedelta = timedelta(seconds=30),
    ) -> None:
        self.database = _database(path_or_url)
        self._lock = threading.RLock()  # re-entrant: a read inside a transaction must not hang
        timeout = busy_timeout.total_seconds()
        try:
            conn = sqlite3.connect(
                self.database, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise _error(f"open {self.database!r}", exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if self.database != ":memory:":
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    raise StorageError(f"SQLite {self.database!r} refused WAL mode ({mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            _migrate(conn, MIGRATIONS)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise _error(f"open {self.database!r}", exc) from exc
            raise
        self._conn: sqlite3.Connection | None = conn

    def __repr__(self) -> str:
        return f"SQLiteStorage({self.database!r})"

    # --- plumbing ------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise StorageError(f"{self!r} is closed")
        return conn

    @staticmethod
    def _begin(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _error("begin transaction", exc) from exc

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        # Some errors (disk full, I/O) already ended the transaction; there is nothing to undo.
        if conn.in_transaction:
            # The original error is the one worth reporting, not a failed rollback.
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    @classmethod
    def _commit(cls, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            cls._rollback(conn)
            raise _error("commit", exc) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction outside the engine's customer transactions."""
        with self._lock:
            conn = self._connection()
            self._begin(conn)
            try:
                yield conn
            except BaseException:
                self._rollback(conn)
                raise
            self._commit(conn)

    # --- customer transactions -----------------------------------------------------------------

    @contextmanager
    def customer(self, customer_id: str, now: datetime) -> Iterator[CustomerSession]:
        with self._transaction([customer_id], now) as txn:
            yield _Session(txn, customer_id)

    @contextmanager
    def batch(
        self, customer_ids: Sequence[str], now: datetime, *, claims: Sequence[tuple[str, str]] = ()
    ) -> Iterator[Mapping[str, CustomerSession]]:
        ids = sorted(set(customer_ids))
        with self._transaction(ids, now) as txn:
            try:
                rows, profiles = self._prefetch(txn.conn, ids)
                txn.claim_up_front(claims)
            except sqlite3.Error as exc:
                raise _error("batch prefetch", exc) from exc
            yield {
                cid: _Session(txn, cid, rows.get(cid, []), profiles.get(cid)) for cid in ids
            }

    @contextmanager
    def _transaction(self, customer_ids: list[str], now: datetime) -> Iterator[_Txn]:
        """BEGIN IMMEDIATE (it locks the whole database: no per-customer lock order to keep),
        buffered writes flushed before COMMIT, ROLLBACK on any error."""
        with self._lock:
            conn = self._connection()
            self._begin(conn)
            txn = _Txn(self, conn, customer_ids, now)
            try:
                yield txn
                try:
                    txn.flush()
                except sqlite3.Error as exc:
                    raise _error("apply", exc) from exc
            except BaseException:
                self._rollback(conn)
                raise
            finally:
                txn.open = False
            self._commit(conn)

    @staticmethod
    def _prefetch(
        conn: sqlite3.Connection, ids: list[str]
    ) -> tuple[dict[str, list[str]], dict[str, str]]:
        """Every active enrollment and profile of the batch's customers, in two queries."""
        key = encode(ids)
        rows: dict[str, list[str]] = {}
        for cid, data in conn.execute(_PREFETCH_ACTIVE, (key,)):
            rows.setdefault(cid, []).append(data)
        profiles = dict(conn.execute(_PREFETCH_PROFILES, (key,)).fetchall())
        return rows, profiles

    # --- wake-ups ------------------------------------------------------------------------------

    def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[DueWakeup]:
        now_us = _us(now)
        try:
            with self._write() as conn:
                rows = conn.execute(_DUE_WAKEUPS, (now_us, now_us, limit)).fetchall()
                if rows:
                    until = _us(now + lease)
                    conn.executemany(_LEASE_WAKEUP, [(until, eid) for _, eid, _ in rows])
        except sqlite3.Error as exc:
            raise _error("claim_due", exc) from exc
        return [DueWakeup(cid, eid, _dt(at)) for cid, eid, at in rows]

    @contextmanager
    def due_batch(
        self, now: datetime, limit: int, lease: timedelta
    ) -> Iterator[Mapping[str, CustomerSession]]:
        # Claim and work in one transaction (one commit, not two): BEGIN IMMEDIATE holds the
        # write lock throughout. The lease is still written, in the same transaction, so that a
        # wake-up left as it was (a journey version this engine does not know) is not claimed
        # again by the next pass; a crash rolls claim and work back together.
        now_us = _us(now)
        with self._transaction([], now) as txn:
            try:
                rows = txn.conn.execute(_DUE_WAKEUPS, (now_us, now_us, limit)).fetchall()
                if rows:
                    until = _us(now + lease)
                    txn.conn.executemany(_LEASE_WAKEUP, [(until, eid) for _, eid, _ in rows])
                customers = list(dict.fromkeys(cid for cid, _, _ in rows))
                txn.customer_ids = sorted(customers)
                prefetched, profiles = self._prefetch(txn.conn, txn.customer_ids)
            except sqlite3.Error as exc:
                raise _error("claim_due", exc) from exc
            yield {
                cid: _Session(txn, cid, prefetched.get(cid, []), profiles.get(cid))
                for cid in customers
            }

    def next_wake_at(self) -> datetime | None:
        with self._lock:
            try:
                (value,) = self._connection().execute(_NEXT_WAKE).fetchone()
            except sqlite3.Error as exc:
                raise _error("next_wake_at", exc) from exc
        return None if value is None else _dt(value)

    # --- outbox --------------------------------------------------------------------------------

    def claim_outbox(self, now: datetime, limit: int, lease: timedelta) -> list[Message]:
        try:
            with self._write() as conn:
                rows = conn.execute(_DUE_OUTBOX, (_us(now), limit)).fetchall()
                if rows:
                    until = _us(now + lease)
                    conn.executemany(_LEASE_OUTBOX, [(until, key) for key, _ in rows])
        except sqlite3.Error as exc:
            raise _error("claim_outbox", exc) from exc
        return [message_from_json(data) for _, data in rows]

    def complete_outbox(
        self, key: str, result: DeliveryResult, now: datetime, retry_at: datetime | None = None
    ) -> None:
        status: OutboxStatus = "pending" if retry_at is not None else result.status
        available = _us(retry_at if retry_at is not None else now)
        with self._lock:
            try:
                # One statement in autocommit mode is its own transaction.
                self._connection().execute(
                    _COMPLETE_OUTBOX, (status, available, result.error, key)
                )
            except sqlite3.Error as exc:
                raise _error("complete_outbox", exc) from exc

    def complete_outbox_many(self, deliveries: Sequence[Delivery], now: datetime) -> None:
        rows = [
            (
                "pending" if d.retry_at is not None else d.result.status,
                _us(d.retry_at if d.retry_at is not None else now),
                d.result.error,
                d.key,
            )
            for d in deliveries
        ]
        if not rows:
            return
        try:
            with self._write() as conn:
                conn.executemany(_COMPLETE_OUTBOX, rows)
        except sqlite3.Error as exc:
            raise _error("complete_outbox_many", exc) from exc

    def outbox_entry(self, key: str) -> OutboxEntry | None:
        with self._lock:
            try:
                row = self._connection().execute(_OUTBOX_ENTRY, (key,)).fetchone()
            except sqlite3.Error as exc:
                raise _error("outbox_entry", exc) from exc
        if row is None:
            return None
        data, status, attempts, available, error = row
        return OutboxEntry(message_from_json(data), status, attempts, _dt(available), error)

    # --- queries -------------------------------------------------------------------------------

    def get_profile(self, customer_id: str) -> Profile | None:
        with self._lock:
            try:
                row = self._connection().execute(_LOAD_PROFILE, (customer_id,)).fetchone()
            except sqlite3.Error as exc:
                raise _error("get_profile", exc) from exc
        return None if row is None else profile_from_json(row[0])

    def get_enrollments(self, customer_id: str) -> list[Enrollment]:
        with self._lock:
            try:
                rows = self._connection().execute(_GET_ENROLLMENTS, (customer_id,)).fetchall()
            except sqlite3.Error as exc:
                raise _error("get_enrollments", exc) from exc
        return [enrollment_from_json(r[0]) for r in rows]

    def activity_counts(self, journey_id: str) -> list[ActivityCount]:
        with self._lock:
            try:
                rows = self._connection().execute(_ACTIVITY_COUNTS, (journey_id,)).fetchall()
            except sqlite3.Error as exc:
                raise _error("activity_counts", exc) from exc
        return [ActivityCount(*row) for row in rows]

    def active_counts(self, journey_id: str) -> dict[tuple[int, str | None], int]:
        with self._lock:
            try:
                rows = self._connection().execute(_ACTIVE_COUNTS, (journey_id,)).fetchall()
            except sqlite3.Error as exc:
                raise _error("active_counts", exc) from exc
        return {(version, step): n for version, step, n in rows}

    def erase_customer(self, customer_id: str) -> None:
        try:
            with self._write() as conn:
                for statement in _ERASE:
                    conn.execute(statement, (customer_id,))
        except sqlite3.Error as exc:
            raise _error("erase_customer", exc) from exc

    def get_setting(self, key: str) -> str | None:
        with self._lock:
            try:
                row = self._connection().execute(_GET_SETTING, (key,)).fetchone()
            except sqlite3.Error as exc:
                raise _error("get_setting", exc) from exc
        return None if row is None else str(row[0])

    def put_setting(self, key: str, value: str) -> None:
        with self._lock:
            try:
                self._connection().execute(_PUT_SETTING, (key, value))
            except sqlite3.Error as exc:
                raise _error("put_setting", exc) from exc

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error as exc:
                    raise _error("close", exc) from exc
