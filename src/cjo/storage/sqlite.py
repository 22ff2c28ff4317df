"""SQLite storage: the embedded, durable default. Standard library only.

One ``SQLiteStorage`` holds one connection, shared by threads under a lock; several processes
each open their own on the same file and serialise their writes with ``BEGIN IMMEDIATE`` (the
database-wide write lock, waited for up to ``busy_timeout``). Files use WAL, so readers never
block the writer, with ``synchronous=NORMAL``: a commit survives a crash of the process, and
only a power loss may drop the last few commits (never corrupt the file).

One row per customer holds the whole record as JSON (``cjo.storage.codec``), beside the columns
that are searched on: its wake-up, the lease of a worker that claimed it, and whether it was
set aside. Instants are INTEGER microseconds since the epoch (UTC): sortable and exact.

A customer transaction buffers its writes and flushes them at commit, one ``executemany`` per
table; a batch reads all of its records in one query.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar

from cjo.channels.base import DeliveryResult, Message
from cjo.clock import ensure_aware
from cjo.described import redacted
from cjo.errors import (
    ConflictError,
    CorruptRecordError,
    SchemaError,
    StorageError,
    UsageError,
)
from cjo.runtime.state import Activity, CustomerState
from cjo.storage.base import (
    ActivityCount,
    CustomerSession,
    DeadLetter,
    Delivery,
    DueCustomer,
    OutboxEntry,
    OutboxStatus,
    PruneResult,
    Retention,
    SetAsideRecord,
    Storage,
    channel_filter,
    claim_instants,
    count_order,
    membership_changes,
)
from cjo.storage.codec import (
    DROPPING_LAYOUT_1,
    activity_from_row,
    activity_row,
    decode_message,
    decode_state,
    dt,
    encode_message,
    encode_state,
    enrolled_page,
    journey_needles,
    us,
    value_dumps,
)
from cjo.storage.erasure import (
    FREE_TEXT_KINDS,
    KEPT_DETAILS_SQL,
    SCHEDULE_CLAIM_END,
    SCHEDULE_CLAIM_PREFIX,
    counted_detail_sql,
    erased_detail,
    pseudonymiser,
)
from cjo.storage.record_cache import DEFAULT_RECORD_CACHE, RecordCache

log = logging.getLogger(__name__)

#: How long emptying the write-ahead log after an erasure waits for readers, in ms.
_EMPTY_WAL_WAIT_MS: Final = 1000

__all__ = ["SCHEMA_VERSION", "WAL_SIZE_LIMIT", "SQLiteStorage", "holds_schema"]


_P = ParamSpec("_P")
_R = TypeVar("_R")


# --- errors ------------------------------------------------------------------------------------

_BUSY_CODES: Final = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _error(what: str, exc: sqlite3.Error, storage: SQLiteStorage | None = None) -> StorageError:
    code = getattr(exc, "sqlite_errorcode", None)
    where = f"SQLite {what}" if storage is None else f"SQLite {storage.database!r}: {what}"
    # Extended result codes keep the primary code in their low byte.
    if code is not None and code & 0xFF in _BUSY_CODES:
        # What to do about it, not only SQLite's own "database is locked": the host chooses
        # between waiting longer and writing from fewer places.
        waited = ("its busy_timeout" if storage is None
                  else f"busy_timeout ({storage._busy_ms / 1000:g} s)")
        return ConflictError(
            f"{where}: the database stayed locked by another writer for longer than {waited}, "
            "so this was rolled back and is safe to retry; if it recurs, give SQLiteStorage a "
            "longer busy_timeout= or have fewer processes write to the file at once "
            f"(SQLite: {exc})"
        )
    return StorageError(f"{where} failed: {exc}")


class _Translated:
    """The one place where driver errors become cjo's: ``sqlite3.Error`` raised inside is
    re-raised as ``StorageError`` (``ConflictError`` when the database stayed locked), naming
    the operation (and, for a lock, the file: a method's own storage, or ``storage``). A
    decorator on methods; a ``with`` block inside generators."""

    __slots__ = ("storage", "what")

    def __init__(self, what: str, storage: SQLiteStorage | None = None) -> None:
        self.what = what
        self.storage = storage

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, sqlite3.Error):
            raise _error(self.what, exc, self.storage) from exc

    def __call__(self, func: Callable[_P, _R]) -> Callable[_P, _R]:
        # A plain try (not contextlib.ContextDecorator, five times slower): session methods
        # run several times per event.
        what = self.what

        @functools.wraps(func)
        def translated(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return func(*args, **kwargs)
            except sqlite3.Error as exc:
                owner = args[0] if args and isinstance(args[0], SQLiteStorage) else None
                raise _error(what, exc, owner) from exc

        return translated


class _Phases:
    """The translations of one kind of transaction's begin and commit, made once."""

    __slots__ = ("begin", "commit")

    def __init__(self, what: str) -> None:
        self.begin = _Translated(f"{what}: begin transaction")
        self.commit = _Translated(f"{what}: commit")


_CUSTOMER: Final = _Phases("customer transaction")
_BATCH: Final = _Phases("batch")
_DUE_BATCH: Final = _Phases("due_batch")


# --- schema ------------------------------------------------------------------------------------

#: A migration is a sequence of SQL statements, or a function for changes SQL alone cannot make.
Migration = Sequence[str] | Callable[[sqlite3.Connection], None]

# Version 1: one row per enrollment (cjo before the customer record). Kept as it was: a
# migration, once released, never changes.
_V1: Final[tuple[str, ...]] = (
    "CREATE TABLE events (event_id TEXT PRIMARY KEY) WITHOUT ROWID",
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
    "CREATE INDEX outbox_customer ON outbox (customer_id)",
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

# Version 2: one record per customer. Version 1's per-enrollment rows are not converted (cjo is
# 0.x): upgrading drops their data (profiles, enrollments, handled event ids, the outbox and the
# activity log) and starts from empty tables; settings are kept.
_V2: Final[tuple[str, ...]] = (
    "DROP TABLE IF EXISTS enrollments",
    "DROP TABLE IF EXISTS profiles",
    "DROP TABLE IF EXISTS events",
    "DROP TABLE IF EXISTS outbox",
    "DROP TABLE IF EXISTS activity",
    # JSON columns are declared TEXT: a declared type "JSON" would get NUMERIC affinity.
    # A rowid table, not WITHOUT ROWID: records are often larger than the twentieth of a page
    # that WITHOUT ROWID tables are good at.
    """CREATE TABLE customers (
        customer_id TEXT PRIMARY KEY,
        wake_at INTEGER,
        lease_until INTEGER,
        aside TEXT,
        revision INTEGER NOT NULL,
        data TEXT NOT NULL
    )""",
    # Exactly the customers that can be claimed, in the order they are claimed.
    "CREATE INDEX customers_due ON customers (wake_at, customer_id) "
    "WHERE wake_at IS NOT NULL AND aside IS NULL",
    "CREATE TABLE events (event_id TEXT PRIMARY KEY, seen_at INTEGER NOT NULL) WITHOUT ROWID",
    # Dropped again by version 5 (an index page more per event).
    "CREATE INDEX events_seen ON events (seen_at)",
    """CREATE TABLE outbox (
        key TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        available_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        done_at INTEGER,
        data TEXT NOT NULL
    )""",
    "CREATE INDEX outbox_pending ON outbox (available_at) WHERE status = 'pending'",
    # Erasure must find a customer's messages without scanning every message ever sent.
    "CREATE INDEX outbox_customer ON outbox (customer_id)",
    "CREATE INDEX outbox_done ON outbox (done_at) WHERE done_at IS NOT NULL",
    # The activity log: append-only, aggregated on read (counters updated in place would
    # serialise every writer on a few hot rows).
    #
    # ``seq`` orders the log and finds a time range without an index on ``at`` (one costs about
    # a tenth of a one-event transaction, measured with bench/bench_sqlite_rmw.py: an index
    # page more to write at every commit). Each entry gets ``seq = max(at << 10, last seq +
    # 1)``: strictly growing (the order of appending), and equal to ``at << 10`` plus less than
    # 1024 whenever entries arrive in time order, the usual case (the engine's clock goes
    # forward; up to 1024 entries per microsecond). For those "in order" entries (``seq >> 10
    # = at``) a time range is a range of the primary key. The others (written by a process
    # whose clock is behind, or by a simulation replaying earlier times) are few and are what
    # ``activity_late`` indexes, by time. A range is both parts, exactly.
    # No index on journey or customer: reports by journey and erasures are rare and may scan.
    """CREATE TABLE activity (
        seq INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        customer_id TEXT NOT NULL,
        enrollment_id TEXT NOT NULL,
        journey_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        step_id TEXT,
        kind TEXT NOT NULL,
        detail TEXT,
        channel TEXT,
        content_id TEXT,
        content_version INTEGER
    )""",
    "CREATE INDEX activity_late ON activity (at) WHERE (seq >> 10) != at",
    # What prune() removed from the activity log, counted, so activity_counts keeps counting
    # it. ``grp`` is the group as a JSON array: a primary key that tells NULL from "".
    """CREATE TABLE activity_totals (
        grp TEXT PRIMARY KEY,
        journey_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        step_id TEXT,
        kind TEXT NOT NULL,
        detail TEXT,
        n INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX activity_totals_journey ON activity_totals (journey_id)",
    "CREATE TABLE definitions (generation INTEGER PRIMARY KEY, data TEXT NOT NULL)",
)

# Version 3: dead letters. A message that failed for good was ``failed`` or ``rejected`` with a
# ``done_at`` (pruned with delivered ones); it is now ``dead`` with a ``dead_at`` and no
# ``done_at``, kept until the host retries or discards it.
_V3: Final[tuple[str, ...]] = (
    "ALTER TABLE outbox ADD COLUMN dead_at INTEGER",
    "UPDATE outbox SET status = 'dead', dead_at = done_at, done_at = NULL "
    "WHERE status IN ('failed', 'rejected')",
    "CREATE INDEX outbox_dead ON outbox (dead_at, key) WHERE status = 'dead'",
)

# Version 4: segment memberships, one row per (segment, customer), written with each record,
# so that members are listed and counted with an index.
_V4: Final[tuple[str, ...]] = (
    """CREATE TABLE segment_members (
        segment_id TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        entered_at INTEGER NOT NULL,
        PRIMARY KEY (segment_id, customer_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX segment_members_customer ON segment_members (customer_id)",
)

# Version 5: handled event ids lose their index by age. Every page a transaction changes is
# one more WAL frame written at commit (measured with bench/bench_sqlite_rmw.py: about 7 us per
# 4 KiB page, a ninth of a one-event transaction then), and that index's page was one of four
# per event. prune() now finds old ids by walking the table in bounded slices, one short write
# transaction each, so it never holds the write lock for long (``_prune_event_ids``).
_V5: Final[tuple[str, ...]] = ("DROP INDEX IF EXISTS events_seen",)

# Version 6: pending messages indexed by channel, then availability, so that a process claims
# only the messages of channels it has (``claim_outbox(channels=...)``) without reading those
# of other channels. The channel is read from the stored message (an index on an expression,
# not a column): a process of an older cjo, still writing during a rolling upgrade, writes rows
# this index covers all the same. Its condition and expression are repeated word for word by
# the queries (``_PENDING_CHANNEL``), so that the planner uses it.
_V6: Final[tuple[str, ...]] = (
    "DROP INDEX IF EXISTS outbox_pending",
    "CREATE INDEX outbox_pending ON outbox (json_extract(data, '$.channel'), available_at) "
    "WHERE status = 'pending'",
)

# Version 7: the instant a record was set aside, beside its reason, and an index of the records
# set aside (a few rows: the operator lists them without reading every customer). A record set
# aside before this version has no instant (NULL): none was kept.
_V7: Final[tuple[str, ...]] = (
    "ALTER TABLE customers ADD COLUMN aside_at INTEGER",
    "CREATE INDEX customers_aside ON customers (customer_id) WHERE aside IS NOT NULL",
)

# Version 8: whether a pending message's ``available_at`` ends a lease (its writer's, or a
# claim's) rather than a retry's back-off: an identity merge leaves a message a process may be
# sending to it (``OutboxEntry.leased``). Rows of before are read as not leased.
_V8: Final[tuple[str, ...]] = (
    "ALTER TABLE outbox ADD COLUMN leased INTEGER NOT NULL DEFAULT 0",
)

#: Forward migrations; entry ``i`` takes the schema from version ``i`` to ``i + 1``. Append only.
MIGRATIONS: list[Migration] = [_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8]
SCHEMA_VERSION: Final = len(MIGRATIONS)


def _migrate(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> None:
    # A database at this schema already (every open but the first) needs nothing written:
    # read, so that opening it does not wait for the write lock of a process that is writing
    # (a worker's long transaction would hold up `cjo report` or a restarted worker, and
    # fail it past busy_timeout). A version read here can only grow: a newer schema is
    # refused below, and a process that had the file open keeps working beside it.
    try:
        rows = conn.execute("SELECT version FROM cjo_schema").fetchall()
    except sqlite3.OperationalError:
        rows = []  # no table yet: a new file
    if len(rows) == 1 and rows[0][0] == len(migrations):
        return
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
        if current == 1:
            log.warning(DROPPING_LAYOUT_1, "the database")
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

# json_each keeps the SQL text the same whatever the number of ids.
_CLAIM_EVENT = "INSERT OR IGNORE INTO events (event_id, seen_at) VALUES (?, ?)"
_CLAIM_EVENTS = (
    "INSERT OR IGNORE INTO events (event_id, seen_at) SELECT value, ? FROM json_each(?) "
    "RETURNING event_id"
)
_UNCLAIM_EVENTS = "DELETE FROM events WHERE event_id IN (SELECT value FROM json_each(?))"
_PEEK = "SELECT data FROM customers WHERE customer_id = ?"
_PEEK_MANY = (
    "SELECT customer_id, data FROM customers WHERE customer_id IN (SELECT value FROM json_each(?))"
)
_LOAD = "SELECT rowid, wake_at, aside IS NOT NULL, data FROM customers WHERE customer_id = ?"
_PREFETCH = (
    "SELECT customer_id, rowid, wake_at, aside IS NOT NULL, data FROM customers "
    "WHERE customer_id IN (SELECT value FROM json_each(?))"
)
# A record read in the transaction is written back by its rowid (one seek, not two), with an
# UPDATE that leaves ``wake_at`` alone when it did not change: then the due index is not
# rewritten (measured: that rewrite is about a sixth of a one-event transaction). Records not
# read are upserted.
_UPDATE = "UPDATE customers SET lease_until = NULL, revision = ?, data = ? WHERE rowid = ?"
_UPDATE_WAKE = (
    "UPDATE customers SET wake_at = ?, lease_until = NULL, revision = ?, data = ? "
    "WHERE rowid = ?"
)
# A save clears ``aside``: a record set aside and read back since (repaired) is readable again.
# Only for the rows read as set aside, so that the common save leaves the column, and the index
# of set-aside rows, alone (as it leaves ``wake_at`` alone when it did not change).
_UNASIDE = "UPDATE customers SET aside = NULL WHERE rowid = ?"
_SAVE = (
    "INSERT INTO customers (customer_id, wake_at, lease_until, aside, revision, data) "
    "VALUES (?, ?, NULL, NULL, ?, ?) "
    "ON CONFLICT (customer_id) DO UPDATE SET wake_at = excluded.wake_at, lease_until = NULL, "
    "aside = NULL, revision = excluded.revision, data = excluded.data"
)
# ``aside_at`` is written with ``aside`` and read only where ``aside`` is set: a save leaves it
# alone.
_SET_ASIDE = "UPDATE customers SET aside = ?, aside_at = ? WHERE customer_id = ?"
# ``customers_aside``'s condition repeated word for word, so that the planner uses it.
_ASIDE_PAGE = (
    "SELECT customer_id, aside, aside_at FROM customers "
    "WHERE aside IS NOT NULL AND customer_id > ? ORDER BY customer_id LIMIT ?"
)
_INSERT_OUTBOX = (
    "INSERT OR IGNORE INTO outbox (key, customer_id, created_at, available_at, status, data, "
    "leased) VALUES (?, ?, ?, ?, 'pending', ?, 1)"
)
# The last seq is one seek to the right edge of the table, whose page the insert writes anyway.
_INSERT_ACTIVITY = (
    "INSERT INTO activity (seq, at, customer_id, enrollment_id, journey_id, version, step_id, "
    "kind, detail, channel, content_id, content_version) VALUES ("
    "max(?1 << 10, (SELECT coalesce(max(seq), -1) + 1 FROM activity)), "
    "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
)
_ACTIVITY_COLUMNS = (
    "at, customer_id, enrollment_id, journey_id, version, step_id, kind, detail, channel, "
    "content_id, content_version"
)
# The entries of a time range [?1, ?2): the in-order ones by primary key (seq from ?3 to ?4,
# both included: ``_seq_range``), the others by ``activity_late`` (its condition written
# exactly as in the index, so the planner uses it). The seq range is computed in Python: a
# bound beyond about year 2255 shifted by SQLite's ``<<`` would overflow 64 bits and wrap,
# and the range would miss everything. It may be wider than the time range where a bound had
# to be clipped, so the in-order entries are checked against the instants too.
_IN_RANGE = (
    f"SELECT seq, {_ACTIVITY_COLUMNS} FROM activity "
    "WHERE seq >= ?3 AND seq <= ?4 AND (seq >> 10) = at AND at >= ?1 AND at < ?2 "
    f"UNION ALL SELECT seq, {_ACTIVITY_COLUMNS} FROM activity "
    "WHERE (seq >> 10) != at AND at >= ?1 AND at < ?2"
)
# The customers that can be claimed at ?1: due, not set aside, not leased (the partial index's
# own condition is repeated word for word, so that the planner uses it).
_DUE_WHERE = (
    "wake_at IS NOT NULL AND aside IS NULL AND wake_at <= ?1 "
    "AND (lease_until IS NULL OR lease_until <= ?1)"
)
_DUE = (
    f"SELECT customer_id, wake_at FROM customers WHERE {_DUE_WHERE} "
    "ORDER BY wake_at, customer_id LIMIT ?2"
)
_ANY_DUE = f"SELECT 1 FROM customers WHERE {_DUE_WHERE} LIMIT 1"
_DUE_WITH_DATA = (
    f"SELECT customer_id, rowid, wake_at, data FROM customers WHERE {_DUE_WHERE} "
    "ORDER BY wake_at, customer_id LIMIT ?2"
)
_CLAIM_DUE = (
    f"UPDATE customers SET lease_until = ?3 WHERE customer_id IN "
    f"(SELECT customer_id FROM ({_DUE})) RETURNING customer_id, wake_at"
)
_LEASE = (
    "UPDATE customers SET lease_until = ? WHERE customer_id IN (SELECT value FROM json_each(?))"
)
_NEXT_WAKE = "SELECT MIN(wake_at) FROM customers WHERE wake_at IS NOT NULL AND aside IS NULL"
_NEXT_OUTBOX = "SELECT MIN(available_at) FROM outbox WHERE status = 'pending'"
_CLAIM_OUTBOX = (
    "UPDATE outbox SET available_at = ?3, leased = 1 WHERE key IN (SELECT key FROM outbox "
    "WHERE status = 'pending' AND available_at <= ?1 ORDER BY created_at, rowid LIMIT ?2) "
    "RETURNING created_at, rowid, data"
)
#: A pending message's channel, as ``outbox_pending`` indexes it.
_PENDING_CHANNEL = "json_extract(data, '$.channel')"
# One range of ``outbox_pending`` per channel asked for (?4: a JSON array of names).
_CLAIM_OUTBOX_OF = (
    "UPDATE outbox SET available_at = ?3, leased = 1 WHERE key IN (SELECT key FROM outbox "
    f"WHERE status = 'pending' AND {_PENDING_CHANNEL} IN (SELECT value FROM json_each(?4)) "
    "AND available_at <= ?1 ORDER BY created_at, rowid LIMIT ?2) "
    "RETURNING created_at, rowid, data"
)
_PENDING_BY_CHANNEL = (
    f"SELECT {_PENDING_CHANNEL}, count(*) FROM outbox WHERE status = 'pending' GROUP BY 1"
)
_COMPLETE_OUTBOX = (
    "UPDATE outbox SET status = ?1, attempts = attempts + 1, available_at = ?2, leased = 0, "
    "last_error = ?3, done_at = CASE WHEN ?1 = 'delivered' THEN ?4 END, "
    "dead_at = CASE WHEN ?1 = 'dead' THEN ?4 END "
    "WHERE key = ?5 AND status = 'pending'"
)
_OUTBOX_ENTRY = (
    "SELECT data, status, attempts, available_at, last_error, leased FROM outbox WHERE key = ?"
)
_CUSTOMER_OUTBOX = (
    "SELECT data, status, attempts, available_at, last_error, leased FROM outbox "
    "WHERE customer_id = ? ORDER BY rowid"
)
_DEFER_OUTBOX = (
    "UPDATE outbox SET available_at = ?, leased = 0 WHERE key = ? AND status = 'pending'"
)
_RELEASE_OUTBOX = (
    "UPDATE outbox SET available_at = min(available_at, ?1), leased = 0 "
    "WHERE key IN (SELECT value FROM json_each(?2)) AND status = 'pending'"
)
# Pages by (dead_at, key), both ways; the condition repeats the partial index's own.
_DEAD_LETTERS = "SELECT data, attempts, last_error, dead_at FROM outbox WHERE status = 'dead' "
_DEAD_NEWEST = _DEAD_LETTERS + "ORDER BY dead_at DESC, key DESC LIMIT ?"
_DEAD_NEWEST_AFTER = (
    _DEAD_LETTERS + "AND (dead_at, key) < (?, ?) ORDER BY dead_at DESC, key DESC LIMIT ?"
)
_DEAD_OLDEST = _DEAD_LETTERS + "ORDER BY dead_at, key LIMIT ?"
_DEAD_OLDEST_AFTER = _DEAD_LETTERS + "AND (dead_at, key) > (?, ?) ORDER BY dead_at, key LIMIT ?"
_RETRY_DEAD = (
    "UPDATE outbox SET status = 'pending', attempts = 0, available_at = ?, dead_at = NULL, "
    "leased = 0 "
    "WHERE key = ? AND status = 'dead'"
)
_DISCARD_DEAD = (
    "UPDATE outbox SET status = 'discarded', done_at = ? WHERE key = ? AND status = 'dead'"
)
_GENERATION = "SELECT COALESCE(MAX(generation), 0) FROM definitions"
_LOAD_DEFINITIONS = "SELECT generation, data FROM definitions ORDER BY generation DESC LIMIT 1"
_APPEND_DEFINITIONS = "INSERT INTO definitions (generation, data) VALUES (?, ?)"
# All but the newest ?1 generations (the primary key's range).
_PRUNE_DEFINITIONS = (
    "DELETE FROM definitions WHERE generation <= (SELECT MAX(generation) FROM definitions) - ?1"
)
_ACTIVITIES = (
    f"SELECT {_ACTIVITY_COLUMNS} FROM ({_IN_RANGE}) "
    "WHERE (?5 IS NULL OR journey_id = ?5) AND (?6 IS NULL OR customer_id = ?6) ORDER BY seq"
)
# A detail is counted without the instant it names (see ``cjo.storage.erasure``).
_TIMELESS_DETAIL: Final = counted_detail_sql("instr")
_ACTIVITY_COUNTS = (
    "SELECT journey_id, version, step_id, kind, detail, SUM(n) FROM ("
    f"SELECT journey_id, version, step_id, kind, {_TIMELESS_DETAIL} AS detail, COUNT(*) AS n "
    "FROM activity WHERE journey_id = ?1 GROUP BY version, step_id, kind, 5 "
    "UNION ALL SELECT journey_id, version, step_id, kind, detail, n FROM activity_totals "
    "WHERE journey_id = ?1) "
    "GROUP BY version, step_id, kind, detail"
)
# The record's enrollments as codec's layout writes them ("enr": [{"j", "ver", "s"}, ...]).
# ``instr`` skips, before any JSON parsing, the records that do not name the journey at all
# (?2, ?3: the id as the codec writes it, ``journey_needles``; SQLite's ``json_quote`` escapes
# otherwise, and would miss an id with a character beyond ASCII); the CASEs keep a record or
# an element that is not what it should be from failing the query.
# Active enrollments in a journey per (version, step); ``{held}`` narrows them to the held
# ones (``hold``, their ``held_at``), and ``{narrow}`` passes over, by their text, the records
# that hold none before any JSON is read.
_ENROLLMENT_COUNTS = (
    "SELECT json_extract(e.value, '$.ver') AS version, json_extract(e.value, '$.s') AS step, "
    "COUNT(*) FROM customers AS c, "
    "json_each(CASE WHEN (instr(c.data, ?2) OR instr(c.data, ?3)){narrow} "
    "AND json_valid(c.data) THEN c.data END, '$.enr') AS e "
    "WHERE json_extract(CASE WHEN e.type = 'object' THEN e.value END, '$.j') = ?1{held} "
    "GROUP BY version, step"
)
_ACTIVE_COUNTS = _ENROLLMENT_COUNTS.format(narrow="", held="")
_HELD_COUNTS = _ENROLLMENT_COUNTS.format(
    narrow=""" AND instr(c.data, '"hold":')""",
    held=" AND json_extract(e.value, '$.hold') IS NOT NULL",
)
# A text search narrows the scan to records that mention the journey; decoding decides.
_ENROLLED_CANDIDATES = (
    "SELECT customer_id, data FROM customers WHERE customer_id > ? AND aside IS NULL "
    "AND (instr(data, ?) OR instr(data, ?)) ORDER BY customer_id LIMIT ?"
)
_GET_SETTING = "SELECT value FROM settings WHERE key = ?"
_PUT_SETTING = (
    "INSERT INTO settings (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_ERASE: Final = (
    "DELETE FROM customers WHERE customer_id = ?",
    # Every message, delivered ones too: they hold the recipient's address and content.
    "DELETE FROM outbox WHERE customer_id = ?",
    "DELETE FROM segment_members WHERE customer_id = ?",
)
# The claims of the customer's schedule entries (``cjo.storage.erasure``): a range of the key.
_ERASE_CLAIMS: Final = (
    "DELETE FROM events WHERE event_id >= ? AND event_id < ? AND substr(event_id, ?) = ?"
)
# The erased customer's activity entries (one scan: no index on the customer), then each made
# anonymous by its key (see ``cjo.storage.erasure``).
_ERASED_ACTIVITY = "SELECT seq, enrollment_id, kind, detail FROM activity WHERE customer_id = ?"
_ANONYMISE_ACTIVITY = (
    "UPDATE activity SET customer_id = '', enrollment_id = ?, detail = ? WHERE seq = ?"
)
_MEMBERS_LEAVE = "DELETE FROM segment_members WHERE segment_id = ? AND customer_id = ?"
_MEMBERS_CLEAR = "DELETE FROM segment_members WHERE customer_id = ?"
_MEMBERS_ENTER = (
    "INSERT INTO segment_members (segment_id, customer_id, entered_at) VALUES (?, ?, ?) "
    "ON CONFLICT (segment_id, customer_id) DO UPDATE SET entered_at = excluded.entered_at"
)
_MEMBERS_PAGE = (
    "SELECT customer_id FROM segment_members WHERE segment_id = ? AND customer_id > ? "
    "ORDER BY customer_id LIMIT ?"
)
_MEMBERS_COUNT = "SELECT count(*) FROM segment_members WHERE segment_id = ?"
_CUSTOMER_PAGE = (
    "SELECT customer_id FROM customers WHERE customer_id > ? ORDER BY customer_id LIMIT ?"
)
# Old event ids, one slice of the table at a time (no index by age: see version 5): the last
# id of the next ?2 ids from ?1 on, then the old ones up to it. The first slice starts at ""
# inclusive (an empty id is an id), the next ones after the previous slice's end.
_EVENTS_SLICE_END = tuple(
    "SELECT max(event_id) FROM (SELECT event_id FROM events "
    f"WHERE event_id {op} ? ORDER BY event_id LIMIT ?)" for op in (">=", ">")
)
_PRUNE_EVENTS = tuple(
    f"DELETE FROM events WHERE event_id {op} ? AND event_id <= ? AND seen_at < ?"
    for op in (">=", ">")
)
#: How many event ids, messages or activity entries one of prune()'s write transactions looks
#: at (a few milliseconds).
_PRUNE_SLICE: Final = 20_000
# The next ?2 old messages, oldest first (by ``outbox_done``).
_PRUNE_OUTBOX = (
    "DELETE FROM outbox WHERE rowid IN "
    "(SELECT rowid FROM outbox WHERE done_at < ?1 ORDER BY done_at LIMIT ?2)"
)
# The seq of the last of the next ?3 entries of the log in the seq range ?1..?2.
_ACTIVITY_SLICE_END = (
    "SELECT max(seq) FROM (SELECT seq FROM activity WHERE seq >= ?1 AND seq <= ?2 "
    "ORDER BY seq LIMIT ?3)"
)
# Everything before ?2 (?1 is the start of time: the range query's own text, reused).
# ``WHERE true`` keeps the upsert unambiguous to SQLite's parser.
# A free-text detail is counted as blank, and any other without the instant it names (see
# ``cjo.storage.erasure``).
_COUNTED_DETAIL: Final = (
    "CASE WHEN kind IN (" + ", ".join(f"'{k}'" for k in sorted(FREE_TEXT_KINDS))
    + f") AND NOT {KEPT_DETAILS_SQL} THEN NULL ELSE {_TIMELESS_DETAIL} END"
)
_FOLD_ACTIVITY = (
    "INSERT INTO activity_totals (grp, journey_id, version, step_id, kind, detail, n) "
    "SELECT json_array(journey_id, version, step_id, kind, detail), journey_id, version, "
    "step_id, kind, detail, COUNT(*) FROM (SELECT journey_id, version, step_id, kind, "
    f"{_COUNTED_DETAIL} AS detail FROM ({_IN_RANGE})) WHERE true "
    "GROUP BY journey_id, version, step_id, kind, detail "
    "ON CONFLICT (grp) DO UPDATE SET n = n + excluded.n"
)
# What the fold counted: the two parts of ``_IN_RANGE``, the in-order entries with its four
# parameters, the others with its first two.
_PRUNE_IN_ORDER: Final = (
    "DELETE FROM activity WHERE seq >= ?3 AND seq <= ?4 AND (seq >> 10) = at "
    "AND at >= ?1 AND at < ?2"
)
_PRUNE_LATE: Final = "DELETE FROM activity WHERE (seq >> 10) != at AND at >= ?1 AND at < ?2"
# Below any instant a datetime holds (year 1 is about -2**55.8 microseconds from 1970).
_START_OF_TIME: Final = -(2**62)
_SEQ_MIN: Final = -(2**63)
_SEQ_MAX: Final = 2**63 - 1


def _in_range(start_us: int, end_us: int) -> tuple[int, int, int, int]:
    """The parameters of ``_IN_RANGE`` for the instants [``start_us``, ``end_us``): the
    instants, then the seq range of the in-order entries among them, clipped to SQLite's
    integers (an in-order entry's seq is ``at << 10`` plus less than 1024)."""
    return (
        start_us, end_us,
        min(max(start_us << 10, _SEQ_MIN), _SEQ_MAX),
        min(max((end_us << 10) - 1, _SEQ_MIN), _SEQ_MAX),
    )


#: The page size of new databases (see ``SQLiteStorage.__init__``).
_PAGE_SIZE: Final = 2048

#: The size, in bytes, the write-ahead log is cut back to once a checkpoint has copied it into
#: the database. A reader holding an old snapshot keeps checkpoints from finishing, and under
#: steady writes the log then grows past its usual size (``wal_autocheckpoint`` pages); without
#: a limit SQLite keeps the file at the largest size it ever reached. Above the usual size, so
#: that a log that is merely busy is not cut and grown again at every checkpoint.
WAL_SIZE_LIMIT: Final = 64 * 1024 * 1024


# --- transactions ------------------------------------------------------------------------------

_NOT_FETCHED: Final = object()

#: A buffered record write: wake_at, revision, data.
_RecordRow = tuple[int | None, int, str]


class _Txn:
    """What the sessions of one transaction share: its cursor, the records read up front, the
    event ids claimed up front, and the writes buffered until commit."""

    __slots__ = (
        "activities",
        "announced",
        "aside",
        "cache",
        "cur",
        "dispatch_lease",
        "fresh",
        "members",
        "members_before",
        "messages",
        "now",
        "now_us",
        "open",
        "prefetched",
        "records",
        "states",
        "stored",
        "were_aside",
    )

    def __init__(
        self, cur: sqlite3.Cursor, now: datetime, dispatch_lease: timedelta, cache: RecordCache
    ) -> None:
        # One cursor for the transaction's statements: cheaper than a new one per statement
        # (what Connection.execute does).
        self.cur = cur
        self.now = now
        self.now_us = us(now)
        self.dispatch_lease = dispatch_lease
        self.open = True
        self.announced: frozenset[str] = frozenset()
        self.fresh: set[str] = set()
        # A batch's records as read at its start (None: no record); None: read when asked.
        self.prefetched: dict[str, str | None] | None = None
        # The rowid and stored wake_at of every record read in this transaction.
        self.stored: dict[str, tuple[int, int | None]] = {}
        # Customer id -> rowid of the records read while set aside (``_UNASIDE``).
        self.were_aside: dict[str, int] = {}
        self.records: dict[str, _RecordRow] = {}  # a second save of a customer replaces the first
        # The records saved, for the record cache once the transaction commits.
        self.states: dict[str, CustomerState] = {}
        self.cache = cache
        self.aside: dict[str, str] = {}
        self.messages: dict[str, tuple[Any, ...]] = {}  # the first message with a key wins
        self.activities: list[tuple[Any, ...]] = []
        # Segment memberships of the records as read, and as saved (to write only changes).
        self.members_before: dict[str, dict[str, datetime]] = {}
        self.members: dict[str, dict[str, datetime]] = {}

    def check(self) -> sqlite3.Cursor:
        if not self.open:
            raise StorageError("a customer session was used after its transaction ended")
        return self.cur

    def prefetch(self, customer_ids: list[str]) -> None:
        prefetched: dict[str, str | None] = dict.fromkeys(customer_ids)
        stored = self.stored
        for cid, rowid, wake_at, aside, data in self.cur.execute(
            _PREFETCH, (value_dumps(customer_ids),)
        ):
            prefetched[cid] = data
            stored[cid] = (rowid, wake_at)
            if aside:
                self.were_aside[cid] = rowid
        self.prefetched = prefetched

    def claim_up_front(self, claims: Sequence[tuple[str, str]]) -> None:
        """Claim every announced event id in one statement; claim_event hands them out."""
        ids = list(dict.fromkeys(eid for _, eid in claims))
        if not ids:
            return
        inserted = self.cur.execute(_CLAIM_EVENTS, (self.now_us, value_dumps(ids))).fetchall()
        self.announced = frozenset(ids)
        self.fresh = {r[0] for r in inserted}

    def flush(self) -> None:
        cur = self.cur
        if self.fresh:
            # Announced but never claimed by the caller: as if never claimed.
            cur.execute(_UNCLAIM_EVENTS, (value_dumps(sorted(self.fresh)),))
        records = self.records
        if len(records) == 1:  # one event per transaction: no lists to sort rows into
            ((cid, (wake_at, revision, data)),) = records.items()
            known = self.stored.get(cid)
            if known is None:
                cur.execute(_SAVE, (cid, wake_at, revision, data))
            elif known[1] == wake_at:
                cur.execute(_UPDATE, (revision, data, known[0]))
            else:
                cur.execute(_UPDATE_WAKE, (wake_at, revision, data, known[0]))
        elif records:
            stored = self.stored
            same: list[tuple[int, str, int]] = []
            moved: list[tuple[int | None, int, str, int]] = []
            new: list[tuple[str, int | None, int, str]] = []
            for cid, (wake_at, revision, data) in records.items():
                known = stored.get(cid)
                if known is None:
                    new.append((cid, wake_at, revision, data))
                elif known[1] == wake_at:
                    same.append((revision, data, known[0]))
                else:
                    moved.append((wake_at, revision, data, known[0]))
            _write_rows(cur, _UPDATE, same)
            _write_rows(cur, _UPDATE_WAKE, moved)
            _write_rows(cur, _SAVE, new)
        if self.were_aside:
            # Read while set aside, and saved: repaired. (Before ``aside`` below: one set aside
            # again in this transaction stays aside.)
            _write_rows(cur, _UNASIDE, [
                (rowid,) for cid, rowid in self.were_aside.items() if cid in records
            ])
        if self.members:
            self.flush_members()
        if self.aside:
            # After the records: a customer set aside and saved in one transaction stays aside.
            _write_rows(cur, _SET_ASIDE, [
                (why, self.now_us, cid) for cid, why in self.aside.items()
            ])
        if self.messages:
            _write_rows(cur, _INSERT_OUTBOX, list(self.messages.values()))
        if self.activities:
            _write_rows(cur, _INSERT_ACTIVITY, self.activities)


    def flush_members(self) -> None:
        left: list[tuple[str, str]] = []
        entered: list[tuple[str, str, int]] = []
        for cid, after in self.members.items():
            before = self.members_before.get(cid)
            if before is None:
                self.cur.execute(_MEMBERS_CLEAR, (cid,))
            gone, new = membership_changes(before, after)
            left.extend((sid, cid) for sid in gone)
            entered.extend((sid, cid, us(at)) for sid, at in new)
        _write_rows(self.cur, _MEMBERS_LEAVE, left)
        _write_rows(self.cur, _MEMBERS_ENTER, entered)


def _write_rows(cur: sqlite3.Cursor, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """One statement for every row; ``execute`` for a single one (cheaper than a one-row
    ``executemany``, the common case of one event per transaction)."""
    if len(rows) > 1:
        cur.executemany(sql, rows)
    elif rows:
        cur.execute(sql, rows[0])


class _Session(CustomerSession):
    __slots__ = ("_txn", "customer_id")

    def __init__(self, txn: _Txn, customer_id: str) -> None:
        self._txn = txn
        self.customer_id = customer_id

    # Session methods translate errors with their own try (not the decorator): they run once
    # or more per event.

    def claim_event(self, event_id: str) -> bool:
        txn = self._txn
        cur = txn.check()
        if event_id in txn.announced:
            if event_id in txn.fresh:
                txn.fresh.discard(event_id)
                return True
            return False  # handled before, or already handed out in this transaction
        try:
            return cur.execute(_CLAIM_EVENT, (event_id, txn.now_us)).rowcount == 1
        except sqlite3.Error as exc:
            raise _error("claim_event", exc) from exc

    def load(self) -> CustomerState | None:
        txn = self._txn
        cur = txn.check()
        cid = self.customer_id
        saved = txn.records.get(cid)
        text: Any
        if saved is not None:
            text = saved[2]  # what this transaction saved (the revision it will have)
        else:
            text = _NOT_FETCHED if txn.prefetched is None else txn.prefetched.get(cid, _NOT_FETCHED)
            if text is _NOT_FETCHED:
                try:
                    row = cur.execute(_LOAD, (cid,)).fetchone()
                except sqlite3.Error as exc:
                    raise _error("load", exc) from exc
                if row is None:
                    text = None
                else:
                    rowid, wake_at, aside, text = row
                    txn.stored[cid] = (rowid, wake_at)
                    if aside:
                        txn.were_aside[cid] = rowid
        # Decoded (or copied from the record cache) on every call: each caller gets its own
        # objects.
        state = None
        if text is not None:
            state = txn.cache.get(cid, text) if saved is None else None
            if state is None:
                state = decode_state(text, cid)
        if saved is None and cid not in txn.members_before:
            # ``_rare`` first: most records have no segments, and each read of one is a
            # descriptor call.
            txn.members_before[cid] = (
                dict(state.segments) if state is not None and state._rare is not None else {}
            )
        return state

    def save(
        self, state: CustomerState, messages: Sequence[Message], activities: Sequence[Activity]
    ) -> None:
        txn = self._txn
        txn.check()
        cid = self.customer_id
        if state.customer_id != cid:
            self.check_owner(state)  # raises
        revision = state.revision + 1
        wake_at = state.wake_at
        txn.records[cid] = (
            None if wake_at is None else us(wake_at), revision, encode_state(state, revision)
        )
        txn.states[cid] = state
        if (state._rare is not None and state.segments) or txn.members_before.get(cid):
            txn.members[cid] = dict(state.segments)
        else:
            txn.members.pop(cid, None)  # none before, none now: nothing to write
        if messages:
            now_us, buffered = txn.now_us, txn.messages
            available_us = us(txn.now + txn.dispatch_lease)
            for m in messages:
                key = m.idempotency_key
                if key not in buffered:
                    buffered[key] = (key, m.customer_id, now_us, available_us, encode_message(m))
        if activities:
            txn.activities += [activity_row(a) for a in activities]

    def set_aside(self, reason: str) -> None:
        self._txn.check()
        self._txn.aside[self.customer_id] = reason


class _CustomerTransaction:
    """``SQLiteStorage.customer``: one customer's transaction, as a context manager."""

    __slots__ = ("customer_id", "now", "storage", "txn")

    def __init__(self, storage: SQLiteStorage, customer_id: str, now: datetime) -> None:
        self.storage = storage
        self.customer_id = customer_id
        self.now = now
        self.txn: _Txn | None = None

    def __enter__(self) -> CustomerSession:
        if self.txn is not None:
            raise StorageError("a customer transaction cannot be entered twice")
        # No prefetch: the session reads its one record when asked.
        self.txn = txn = self.storage._begin(self.now, _CUSTOMER)
        return _Session(txn, self.customer_id)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        txn = self.txn
        assert txn is not None
        if exc_type is None:
            self.storage._end(txn, _CUSTOMER)
        else:
            self.storage._abort(txn)


# --- the adapter -------------------------------------------------------------------------------


def database_name(path_or_url: str | os.PathLike[str]) -> str:
    """The name to give ``sqlite3.connect``: a path, or ":memory:"."""
    text = os.fspath(path_or_url) if isinstance(path_or_url, str | os.PathLike) else None
    if not isinstance(text, str):
        raise UsageError(
            "SQLiteStorage takes a path, ':memory:' or a sqlite:/// URL, got "
            f"{type(path_or_url).__name__} {path_or_url!r:.80}"
        )
    if text.startswith("sqlite:"):
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute.db.
        if text in ("sqlite://", "sqlite:///:memory:", "sqlite://:memory:"):
            return ":memory:"
        if not text.startswith("sqlite:///") or len(text) == len("sqlite:///") or "?" in text:
            raise StorageError(
                f"bad SQLite URL {redacted(text)!r}: expected sqlite:///relative/path.db, "
                "sqlite:////absolute/path.db or sqlite:///:memory:"
            )
        text = text[len("sqlite:///"):]
    if not text:
        raise StorageError("no SQLite database path given (use ':memory:' for a private one)")
    return text


def holds_schema(path: str) -> bool:
    """Whether the SQLite file at ``path`` holds cjo's tables. Read only: opening a
    ``SQLiteStorage`` would create them (and the file)."""
    if not os.path.exists(path):
        return False
    with _Translated(f"open {path!r}"):
        uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            return conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cjo_schema'"
            ).fetchone() is not None


def _wal_mode(conn: sqlite3.Connection, timeout: float) -> str:
    """Switch ``conn``'s database to WAL and return the journal mode it is in. On a database
    not yet in WAL (a new file), the switch needs the database to itself, and SQLite refuses
    it at once, without waiting for the busy timeout, while another connection is writing (a
    process opening the same new file): retried here until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            left = deadline - time.monotonic()
            if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) not in _BUSY_CODES or left <= 0:
                raise
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)


def _rollback(conn: sqlite3.Connection) -> None:
    # Some errors (disk full, I/O) already ended the transaction; there is nothing to undo.
    if conn.in_transaction:
        # The original error is the one worth reporting, not a failed rollback.
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class SQLiteStorage(Storage):
    """Storage in one SQLite database: a file path, ``":memory:"``, or ``"sqlite:///path.db"``
    (``"sqlite:////absolute/path.db"``); ``database`` is the name it was opened with.

    The schema is created or migrated forward on open; a database written by a newer cjo
    raises ``SchemaError``. ``busy_timeout`` bounds how long a transaction waits for another
    process's write; past it the transaction fails with ``ConflictError`` (safe to retry).
    ``record_cache`` is how many customers' last committed records are kept decoded, so that
    reading one back skips decoding it (``cjo.storage.record_cache``; 0 keeps none).
    """

    def __init__(
        self,
        path_or_url: str | os.PathLike[str],
        *,
        busy_timeout: timedelta = timedelta(seconds=30),
        record_cache: int = DEFAULT_RECORD_CACHE,
    ) -> None:
        self.database = database_name(path_or_url)
        # Checked first: a bad size leaves no connection open.
        self._records = RecordCache(record_cache)
        if not isinstance(busy_timeout, timedelta) or busy_timeout < timedelta(0):
            raise UsageError(
                f"busy_timeout must be a timedelta of zero or more, got {busy_timeout!r:.80}"
            )
        self._lock = threading.RLock()  # re-entrant: a read inside a transaction must not hang
        timeout = busy_timeout.total_seconds()
        self._busy_ms = int(timeout * 1000)
        with _Translated("open", self):
            conn = sqlite3.connect(
                self.database, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
                # A new database gets 2 KiB pages rather than 4 KiB: a customer transaction
                # writes three or more pages (record, event id, activity entry), each a whole
                # WAL frame, and a frame's cost grows with its bytes (copied, checksummed,
                # written): about 2 us less per frame here, 5 to 7 us per event
                # (bench/bench_sqlite_rmw.py). Records up to about 2 KB (most: see
                # bench/README.md) still fit in their page; larger ones spill to overflow pages.
                # No effect on an existing database (it keeps its page size).
                conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
                if self.database != ":memory:":
                    mode = _wal_mode(conn, timeout)
                    if mode != "wal":
                        raise StorageError(f"SQLite {self.database!r} refused WAL mode ({mode})")
                conn.execute("PRAGMA synchronous = NORMAL")
                # What is deleted is overwritten, not left in free pages of the file: an
                # erasure must not leave the customer's bytes on disk. Many builds of SQLite
                # have it on already; not all.
                conn.execute("PRAGMA secure_delete = ON")
                # A checkpoint (two fsyncs) every 10,000 pages of WAL (about 20 MB of 2 KiB
                # pages) instead of SQLite's 1,000: a transaction writes a few pages, and at
                # the default the checkpoints' fsyncs took more wall time than everything else
                # a one-event transaction does (bench/bench_sqlite_rmw.py). Pages rewritten
                # between two checkpoints are copied once.
                conn.execute("PRAGMA wal_autocheckpoint = 10000")
                conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
                _migrate(conn, MIGRATIONS)
            except BaseException:
                conn.close()
                raise
        self._conn: sqlite3.Connection | None = conn
        # The file opened, by identity: SQLite goes on using a file deleted or replaced under
        # it, and what it writes there is lost when it closes (_check_file).
        self._file: tuple[str, int, int] | None = None
        if self.database != ":memory:":
            where = os.path.abspath(self.database)  # the process may change directory later
            found = os.stat(where)
            self._file = (where, found.st_ino, found.st_dev)
        # The one cursor of the customer transactions (they run one at a time, under the lock):
        # cheaper than a new cursor per transaction.
        self._cursor: sqlite3.Cursor | None = conn.cursor()

    def __repr__(self) -> str:
        return f"SQLiteStorage({self.database!r})"

    # --- plumbing ------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise StorageError(f"{self!r} is closed")
        self._check_file()
        return conn

    def _check_file(self) -> None:
        """``StorageError`` if the database file is no longer the one opened (deleted, or
        another moved over it): what would be written now could never be read again."""
        if self._file is None:
            return
        where, ino, dev = self._file
        try:
            found = os.stat(where)
        except OSError:
            found = None
        if found is None or found.st_ino != ino or found.st_dev != dev:
            raise StorageError(
                f"SQLite {self.database!r}: the database file was deleted or replaced since it "
                "was opened; nothing more is written to it: open the storage again"
            )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction outside the engine's customer transactions. Callers
        translate errors (they name the operation)."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    # A customer transaction: ``_begin`` (BEGIN IMMEDIATE, which locks the whole database: no
    # per-customer lock order to keep), then ``_end`` (buffered writes flushed, COMMIT) or
    # ``_abort`` (ROLLBACK). Plain methods rather than one more nested context manager: this
    # runs once per event.

    def _begin(self, now: datetime, what: _Phases) -> _Txn:
        now = ensure_aware(now, "now")  # before the lock: a bad instant leaves nothing to release
        self._lock.acquire()
        cur = self._cursor
        try:
            if cur is None:
                raise StorageError(f"{self!r} is closed")
            self._check_file()
            cur.execute("BEGIN IMMEDIATE")
            return _Txn(cur, now, self.dispatch_lease, self._records)
        except BaseException as exc:
            # Whatever failed after BEGIN, the write lock of the database and the storage's own
            # lock are released: otherwise every later writer would wait for them forever.
            try:
                if cur is not None:
                    _rollback(cur.connection)
            finally:
                self._lock.release()
            if isinstance(exc, sqlite3.Error):
                raise _error(what.begin.what, exc, self) from exc
            raise

    def _end(self, txn: _Txn, what: _Phases) -> None:
        cur = txn.cur
        try:
            txn.flush()
            cur.execute("COMMIT")
            if txn.records:
                states = txn.states
                txn.cache.put(
                    (cid, text, states[cid], revision)
                    for cid, (_, revision, text) in txn.records.items()
                )
        except sqlite3.Error as exc:
            _rollback(cur.connection)
            raise _error(what.commit.what, exc, self) from exc
        except BaseException:
            _rollback(cur.connection)
            raise
        finally:
            txn.open = False
            self._lock.release()

    def _abort(self, txn: _Txn) -> None:
        try:
            _rollback(txn.cur.connection)
        finally:
            txn.open = False
            self._lock.release()

    # --- customer transactions -----------------------------------------------------------------

    def customer(  # type: ignore[override]
        self, customer_id: str, now: datetime
    ) -> AbstractContextManager[CustomerSession]:
        # A class rather than @contextmanager (whose generator and wrapper cost about 0.6 us
        # per event, a fifth of the adapter's own Python then). Same behaviour: begin on entry;
        # commit on a normal exit, roll back on an exception. The base class declares a
        # @contextmanager, whose type callers only use as a context manager.
        return _CustomerTransaction(self, customer_id, now)

    @contextmanager
    def batch(
        self, customer_ids: Sequence[str], now: datetime, *, claims: Sequence[tuple[str, str]] = ()
    ) -> Iterator[Mapping[str, CustomerSession]]:
        ids = sorted(set(customer_ids))
        txn = self._begin(now, _BATCH)
        try:
            with _Translated("batch: read up front", self):
                txn.prefetch(ids)
                txn.claim_up_front(claims)
            yield {cid: _Session(txn, cid) for cid in ids}
        except BaseException:
            self._abort(txn)
            raise
        self._end(txn, _BATCH)

    @_Translated("peek")
    def peek(self, customer_id: str) -> CustomerState | None:
        with self._lock:
            row = self._connection().execute(_PEEK, (customer_id,)).fetchone()
        if row is None:
            return None
        return self._records.get(customer_id, row[0]) or decode_state(row[0], customer_id)

    @_Translated("peek_many")
    def peek_many(self, customer_ids: Sequence[str]) -> dict[str, CustomerState]:
        ids = list(dict.fromkeys(customer_ids))
        if not ids:
            return {}
        with self._lock:
            rows = self._connection().execute(_PEEK_MANY, (value_dumps(ids),)).fetchall()
        out: dict[str, CustomerState] = {}
        cached = self._records.get
        for cid, data in rows:
            with suppress(CorruptRecordError):  # left out (peek() raises for it)
                out[cid] = cached(cid, data) or decode_state(data, cid)
        return out

    # --- wake-ups ------------------------------------------------------------------------------

    @_Translated("claim_due")
    def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[DueCustomer]:
        now_us = us(ensure_aware(now, "now"))
        with self._lock:
            # One statement, its own transaction: pick, lease and return.
            rows = self._connection().execute(
                _CLAIM_DUE, (now_us, limit, us(now + lease))
            ).fetchall()
        rows.sort(key=lambda r: (r[1], r[0]))  # RETURNING keeps no order
        return [DueCustomer(cid, dt(at)) for cid, at in rows]

    @contextmanager
    def due_batch(
        self, now: datetime, limit: int, lease: timedelta, *, due: datetime | None = None
    ) -> Iterator[Mapping[str, CustomerSession]]:
        # Claim and work in one transaction (one commit, not two): BEGIN IMMEDIATE holds the
        # write lock throughout, and the due customers' records come with the claim. The lease
        # is still written, in the same transaction, so that a customer left as it was (a
        # journey version this engine does not know) is not claimed again by the next pass; a
        # crash rolls claim and work back together.
        now, by = claim_instants(now, due)
        by_us = us(by)
        with self._lock:
            with _Translated("due_batch: look", self):
                # An idle poll reads, without taking the write lock from other processes.
                idle = self._connection().execute(_ANY_DUE, (by_us,)).fetchone() is None
            if idle:
                yield {}
                return
            txn = self._begin(now, _DUE_BATCH)
            try:
                with _Translated("due_batch: claim", self):
                    rows = txn.cur.execute(_DUE_WITH_DATA, (by_us, limit)).fetchall()
                    if rows:
                        txn.cur.execute(
                            _LEASE, (us(now + lease), value_dumps([r[0] for r in rows]))
                        )
                txn.prefetched = {cid: data for cid, _, _, data in rows}
                txn.stored = {cid: (rowid, wake_at) for cid, rowid, wake_at, _ in rows}
                yield {cid: _Session(txn, cid) for cid, _, _, _ in rows}
            except BaseException:
                self._abort(txn)
                raise
            self._end(txn, _DUE_BATCH)

    @_Translated("next_wake_at")
    def next_wake_at(self) -> datetime | None:
        with self._lock:
            (value,) = self._connection().execute(_NEXT_WAKE).fetchone()
        return None if value is None else dt(value)

    # --- outbox --------------------------------------------------------------------------------

    @_Translated("next_outbox_at")
    def next_outbox_at(self) -> datetime | None:
        with self._lock:
            (value,) = self._connection().execute(_NEXT_OUTBOX).fetchone()
        return None if value is None else dt(value)

    @_Translated("claim_outbox")
    def claim_outbox(
        self, now: datetime, limit: int, lease: timedelta, *,
        channels: Collection[str] | None = None,
    ) -> list[Message]:
        now = ensure_aware(now, "now")
        wanted = channel_filter(channels)
        if wanted == ():
            return []
        args: tuple[Any, ...] = (us(now), limit, us(now + lease))
        with self._lock:
            rows = self._connection().execute(
                _CLAIM_OUTBOX if wanted is None else _CLAIM_OUTBOX_OF,
                args if wanted is None else (*args, value_dumps(list(wanted))),
            ).fetchall()
        rows.sort(key=lambda r: (r[0], r[1]))  # RETURNING keeps no order
        return [decode_message(data) for _, _, data in rows]

    @_Translated("pending_by_channel")
    def pending_by_channel(self) -> dict[str, int]:
        with self._lock:
            rows = self._connection().execute(_PENDING_BY_CHANNEL).fetchall()
        return dict(rows)

    def complete_outbox(
        self, key: str, result: DeliveryResult, now: datetime, retry_at: datetime | None = None
    ) -> None:
        self.complete_outbox_many([Delivery(key, result, retry_at)], now)

    @_Translated("complete_outbox")
    def complete_outbox_many(self, deliveries: Sequence[Delivery], now: datetime) -> None:
        now_us = us(ensure_aware(now, "now"))
        rows = [
            (
                d.outbox_status,
                now_us if d.retry_at is None else us(d.retry_at),
                d.result.error,
                now_us,
                d.key,
            )
            for d in deliveries
        ]
        if not rows:
            return
        with self._write() as conn:
            conn.executemany(_COMPLETE_OUTBOX, rows)

    @_Translated("outbox_entry")
    def outbox_entry(self, key: str) -> OutboxEntry | None:
        with self._lock:
            row = self._connection().execute(_OUTBOX_ENTRY, (key,)).fetchone()
        if row is None:
            return None
        data, status, attempts, available, error, leased = row
        status_: OutboxStatus = status
        return OutboxEntry(decode_message(data), status_, attempts, dt(available), error,
                           bool(leased))

    @_Translated("customer_outbox")
    def customer_outbox(self, customer_id: str) -> list[OutboxEntry]:
        with self._lock:
            rows = self._connection().execute(_CUSTOMER_OUTBOX, (customer_id,)).fetchall()
        return [
            OutboxEntry(decode_message(data), status, attempts, dt(available), error,
                        bool(leased))
            for data, status, attempts, available, error, leased in rows
        ]

    @_Translated("defer_outbox")
    def defer_outbox(self, key: str, until: datetime, now: datetime) -> None:
        until_us = us(ensure_aware(until, "until"))
        with self._write() as conn:
            conn.execute(_DEFER_OUTBOX, (until_us, key))

    @_Translated("release_outbox")
    def release_outbox(self, keys: Sequence[str], now: datetime) -> None:
        now_us = us(ensure_aware(now, "now"))
        if not keys:
            return
        with self._write() as conn:
            conn.execute(_RELEASE_OUTBOX, (now_us, value_dumps(list(keys))))

    # --- dead letters --------------------------------------------------------------------------

    @_Translated("dead_letters")
    def dead_letters(
        self,
        limit: int,
        *,
        after: tuple[datetime, str] | None = None,
        newest_first: bool = True,
    ) -> list[DeadLetter]:
        params: tuple[Any, ...]
        if after is None:
            sql = _DEAD_NEWEST if newest_first else _DEAD_OLDEST
            params = (limit,)
        else:
            sql = _DEAD_NEWEST_AFTER if newest_first else _DEAD_OLDEST_AFTER
            params = (us(ensure_aware(after[0], "after")), after[1], limit)
        with self._lock:
            rows = self._connection().execute(sql, params).fetchall()
        return [
            DeadLetter(decode_message(data), attempts, error, dt(dead_at))
            for data, attempts, error, dead_at in rows
        ]

    @_Translated("retry_dead_letter")
    def retry_dead_letter(self, key: str, now: datetime) -> bool:
        now_us = us(ensure_aware(now, "now"))
        with self._write() as conn:
            return conn.execute(_RETRY_DEAD, (now_us, key)).rowcount == 1

    @_Translated("discard_dead_letter")
    def discard_dead_letter(self, key: str, now: datetime) -> bool:
        now_us = us(ensure_aware(now, "now"))
        with self._write() as conn:
            return conn.execute(_DISCARD_DEAD, (now_us, key)).rowcount == 1

    # --- set-aside records ---------------------------------------------------------------------

    @_Translated("records_set_aside")
    def records_set_aside(self, limit: int, *, after: str | None = None) -> list[SetAsideRecord]:
        with self._lock:
            rows = self._connection().execute(
                _ASIDE_PAGE, (after or "", limit)
            ).fetchall()
        return [
            SetAsideRecord(cid, reason, None if at is None else dt(at))
            for cid, reason, at in rows
        ]

    # --- definitions ---------------------------------------------------------------------------

    @_Translated("definitions_generation")
    def definitions_generation(self) -> int:
        with self._lock:
            (generation,) = self._connection().execute(_GENERATION).fetchone()
        return int(generation)

    @_Translated("load_definitions")
    def load_definitions(self) -> tuple[int, str] | None:
        with self._lock:
            row = self._connection().execute(_LOAD_DEFINITIONS).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    @_Translated("append_definitions")
    def append_definitions(self, expected_generation: int, payload: str) -> int:
        with self._write() as conn:
            (current,) = conn.execute(_GENERATION).fetchone()
            if current != expected_generation:
                raise ConflictError(
                    f"definitions generation {current} was published since generation "
                    f"{expected_generation} was read: reload and publish again"
                )
            conn.execute(_APPEND_DEFINITIONS, (current + 1, payload))
        return int(current) + 1

    # --- queries -------------------------------------------------------------------------------

    @_Translated("activities")
    def activities(
        self,
        start: datetime,
        end: datetime,
        *,
        journey_id: str | None = None,
        customer_id: str | None = None,
    ) -> list[Activity]:
        span = _in_range(us(ensure_aware(start, "start")), us(ensure_aware(end, "end")))
        with self._lock:
            rows = self._connection().execute(
                _ACTIVITIES, (*span, journey_id, customer_id)
            ).fetchall()
        return [activity_from_row(row) for row in rows]

    @_Translated("activity_counts")
    def activity_counts(self, journey_id: str) -> list[ActivityCount]:
        with self._lock:
            rows = self._connection().execute(_ACTIVITY_COUNTS, (journey_id,)).fetchall()
        return sorted((ActivityCount(*row) for row in rows), key=count_order)

    @_Translated("enrolled_customers")
    def enrolled_customers(
        self, journey_id: str, *, after: str | None = None, limit: int = 500
    ) -> list[str]:
        needles = journey_needles(journey_id)

        def candidates(cursor: str) -> list[tuple[str, str]]:
            with self._lock:
                return self._connection().execute(
                    _ENROLLED_CANDIDATES, (cursor, *needles, limit)
                ).fetchall()

        return enrolled_page(candidates, journey_id, after, limit)

    @_Translated("active_counts")
    def active_counts(self, journey_id: str) -> dict[tuple[int, str | None], int]:
        with self._lock:
            rows = self._connection().execute(
                _ACTIVE_COUNTS, (journey_id, *journey_needles(journey_id))
            ).fetchall()
        return {(version, step): n for version, step, n in rows}

    @_Translated("held_counts")
    def held_counts(self, journey_id: str) -> dict[tuple[int, str | None], int]:
        with self._lock:
            rows = self._connection().execute(
                _HELD_COUNTS, (journey_id, *journey_needles(journey_id))
            ).fetchall()
        return {(version, step): n for version, step, n in rows}

    @_Translated("customer_ids")
    def customer_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        with self._lock:
            rows = self._connection().execute(_CUSTOMER_PAGE, (after or "", limit)).fetchall()
        return [row[0] for row in rows]

    @_Translated("segment_members")
    def segment_members(
        self, segment_id: str, *, after: str | None = None, limit: int = 1000
    ) -> list[str]:
        with self._lock:
            rows = self._connection().execute(
                _MEMBERS_PAGE, (segment_id, after or "", limit)
            ).fetchall()
        return [row[0] for row in rows]

    @_Translated("segment_count")
    def segment_count(self, segment_id: str) -> int:
        with self._lock:
            row = self._connection().execute(_MEMBERS_COUNT, (segment_id,)).fetchone()
        return int(row[0])

    @_Translated("erase_customer")
    def erase_customer(self, customer_id: str) -> None:
        with self._write() as conn:
            for statement in _ERASE:
                conn.execute(statement, (customer_id,))
            suffix = ":" + customer_id
            conn.execute(_ERASE_CLAIMS, (SCHEDULE_CLAIM_PREFIX, SCHEDULE_CLAIM_END,
                                         -len(suffix), suffix))
            rename = pseudonymiser()
            conn.executemany(_ANONYMISE_ACTIVITY, [
                (rename(enrollment_id), erased_detail(kind, detail), seq)
                for seq, enrollment_id, kind, detail
                in conn.execute(_ERASED_ACTIVITY, (customer_id,)).fetchall()
            ])
        # Once the row is gone: a transaction committed before it cannot put the record back.
        self._records.drop(customer_id)
        self._empty_wal()

    def _empty_wal(self) -> None:
        """Checkpoint and empty the write-ahead log: its frames hold the pages written before
        an erasure, the customer's rows in them, and a checkpoint copies them back but leaves
        them in the log file until later writes overwrite them. Waits (a second at most) for
        readers of older snapshots; if one outlasts it, the log is emptied later."""
        if self.database == ":memory:":
            return
        try:
            with self._lock:
                conn = self._connection()
                # Other writers wait while it waits for readers: for a second at most.
                conn.execute(f"PRAGMA busy_timeout = {min(self._busy_ms, _EMPTY_WAL_WAIT_MS)}")
                try:
                    busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                finally:
                    conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        except sqlite3.Error as exc:  # the erasure is committed: not an error of it
            log.warning("SQLite %r: emptying the write-ahead log after an erasure failed: %s",
                        self.database, exc)
            return
        if busy:
            log.warning("SQLite %r: the write-ahead log could not be emptied after an "
                        "erasure (a reader held it); it still holds the erased customer's "
                        "pages until it is checkpointed and overwritten", self.database)

    @_Translated("prune")
    def prune(self, now: datetime, retention: Retention) -> PruneResult:
        now = ensure_aware(now, "now")
        events = self._prune_event_ids(us(now - retention.event_ids))
        outbox = self._prune_outbox(us(now - retention.outbox))
        activity = self._prune_activity(us(now - retention.activity))
        with self._write() as conn:
            definitions = conn.execute(_PRUNE_DEFINITIONS, (retention.definitions,)).rowcount
        return PruneResult(events, outbox, activity, definitions)

    def _prune_outbox(self, before_us: int) -> int:
        """Drop the messages done before ``before_us``, a slice per write transaction (a prune
        after a long gap must not hold the write lock for seconds)."""
        removed = 0
        while True:
            with self._write() as conn:
                count = conn.execute(_PRUNE_OUTBOX, (before_us, _PRUNE_SLICE)).rowcount
            removed += count
            if count < _PRUNE_SLICE:
                return removed

    def _prune_activity(self, before_us: int) -> int:
        """Fold into the counts and drop the entries logged before ``before_us``, a span of
        time per write transaction, each folded and dropped together. A span ends after the
        instant of the last of the next slice of entries in seq order (with every in-order
        entry of that microsecond); the last one, at the cutoff."""
        removed = 0
        start = _START_OF_TIME
        while start < before_us:
            with self._write() as conn:
                (last,) = conn.execute(
                    _ACTIVITY_SLICE_END, (*_in_range(start, before_us)[2:], _PRUNE_SLICE)
                ).fetchone()
                # A seq in the range names an instant in it: the span is never empty.
                end = before_us if last is None else min((last >> 10) + 1, before_us)
                span = _in_range(start, end)
                conn.execute(_FOLD_ACTIVITY, span)
                removed += (conn.execute(_PRUNE_IN_ORDER, span).rowcount
                            + conn.execute(_PRUNE_LATE, span[:2]).rowcount)
            start = end
        return removed

    def _prune_event_ids(self, before_us: int) -> int:
        """Forget the event ids seen before ``before_us``: the table in key order, a slice per
        write transaction, so other writers (threads and processes) get the lock in between.
        Ids claimed meanwhile are newer than the cutoff, wherever they land."""
        removed = 0
        start, later = "", 0
        while True:
            with self._write() as conn:
                (end,) = conn.execute(_EVENTS_SLICE_END[later], (start, _PRUNE_SLICE)).fetchone()
                if end is None:
                    return removed
                removed += conn.execute(
                    _PRUNE_EVENTS[later], (start, end, before_us)
                ).rowcount
            start, later = end, 1

    @_Translated("get_setting")
    def get_setting(self, key: str) -> str | None:
        with self._lock:
            row = self._connection().execute(_GET_SETTING, (key,)).fetchone()
        return None if row is None else str(row[0])

    @_Translated("put_setting")
    def put_setting(self, key: str, value: str) -> None:
        with self._lock:
            # One statement in autocommit mode is its own transaction.
            self._connection().execute(_PUT_SETTING, (key, value))

    @_Translated("close")
    def close(self) -> None:
        with self._lock:
            conn, self._conn, self._cursor = self._conn, None, None
            if conn is not None:
                conn.close()
