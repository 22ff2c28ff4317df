"""PostgreSQL storage: many engine processes, on many machines, sharing one database.

Install with ``pip install 'cjo[postgres]'`` (psycopg 3 and psycopg-pool). Only this module
imports psycopg, so ``import cjo`` works without it.

How it keeps several workers correct:

- **One customer at a time.** ``customer()``/``batch()`` run one transaction that first takes a
  transaction-scoped advisory lock per customer (a 64-bit hash of schema and customer id), in
  ascending key order so two batches can never deadlock. Everything the engine reads afterwards
  (READ COMMITTED: a fresh snapshot per statement) includes what the previous holder committed.
- **Duplicates.** ``events.event_id`` is the primary key; a claim is ``INSERT ... ON CONFLICT
  DO NOTHING``.
- **Timers and outbox.** Due wake-ups and pending messages are claimed with ``FOR UPDATE SKIP
  LOCKED`` and a lease (a timestamp column), so workers never wait for each other and a crashed
  worker's claims come back once the lease runs out.
- **Few round trips.** The transaction runs in pipeline mode: ``BEGIN``, the locks and the
  prefetch of every profile and active enrollment of the batch go in one round trip; writes are
  buffered by ``apply`` and go with the ``COMMIT`` in another. Only ``claim_event`` (and the
  first ``history`` call of a batch) wait for an answer in between. A batch of N customers
  holds N advisory locks: with big batches and many workers, size the server's
  ``max_locks_per_transaction`` to match.
- **Activity** is append-only and aggregated on read: counters updated in place would be one hot
  row every worker queues on.

Tables live in their own schema (``cjo`` by default) with forward migrations recorded in
``schema_version``; migrating runs under an advisory lock, so processes starting together take
turns. A database migrated by a newer cjo raises ``SchemaError``.

Datetimes are stored as ``timestamptz`` and always come back as aware UTC datetimes. The adapter
never reads the clock: every instant it writes is given by the engine.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString, ParamSpec, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg_pool import ConnectionPool

from cjo.channels.base import DeliveryResult, Message
from cjo.clock import ensure_aware
from cjo.errors import ConflictError, SchemaError, StorageError
from cjo.model.events import Profile
from cjo.runtime.state import Changes, Enrollment, PastEntry
from cjo.storage.base import (
    ActivityCount,
    CustomerSession,
    Delivery,
    DueWakeup,
    OutboxEntry,
    Storage,
)
from cjo.storage.codec import (
    encode,
    enrollment_from_json,
    message_from_json,
    profile_from_json,
)

__all__ = ["SCHEMA_VERSION", "PostgresStorage"]

P = ParamSpec("P")
R = TypeVar("R")

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# Forward migrations, applied in order; ``{s}`` is the schema. Never edit a released entry:
# append a new one (databases already migrated will not run an edited step again).
# Records are kept as ``json``, not ``jsonb``: jsonb re-orders object keys, and profile
# attributes or message fields coming back in another order would make rendering and channel
# payloads differ from the other backends. cjo never queries inside the documents.
_MIGRATIONS: tuple[tuple[LiteralString, ...], ...] = (
    (
        """CREATE TABLE {s}.events (
            event_id text PRIMARY KEY,
            customer_id text COLLATE "C",
            claimed_at timestamptz NOT NULL
        )""",
        """CREATE TABLE {s}.profiles (
            customer_id text COLLATE "C" PRIMARY KEY,
            updated_at timestamptz NOT NULL,
            data json NOT NULL
        )""",
        # ids and customer ids sort bytewise (COLLATE "C"), as Python sorts str: tie-breaks
        # between wake-ups then agree with the in-memory adapter whatever the database locale.
        """CREATE TABLE {s}.enrollments (
            id text COLLATE "C" PRIMARY KEY,
            seq bigint GENERATED ALWAYS AS IDENTITY,
            customer_id text COLLATE "C" NOT NULL,
            journey_id text NOT NULL,
            version integer NOT NULL,
            instance_key text,
            status text NOT NULL CHECK (status IN (
                'active', 'completed', 'exited', 'converted', 'expired', 'removed', 'ejected')),
            step_id text,
            entered_at timestamptz NOT NULL,
            step_entered_at timestamptz NOT NULL,
            ended_at timestamptz,
            wake_at timestamptz,
            wake_lease_until timestamptz,
            data json NOT NULL
        )""",
        "CREATE INDEX enrollments_active_customer ON {s}.enrollments (customer_id)"
        " WHERE status = 'active'",
        "CREATE INDEX enrollments_customer ON {s}.enrollments (customer_id, journey_id)",
        "CREATE INDEX enrollments_due ON {s}.enrollments (wake_at, step_entered_at, id)"
        " WHERE status = 'active' AND wake_at IS NOT NULL",
        "CREATE INDEX enrollments_journey ON {s}.enrollments (journey_id, version, step_id)"
        " WHERE status = 'active'",
        """CREATE TABLE {s}.outbox (
            key text COLLATE "C" PRIMARY KEY,
            seq bigint GENERATED ALWAYS AS IDENTITY,
            customer_id text COLLATE "C" NOT NULL,
            created_at timestamptz NOT NULL,
            available_at timestamptz NOT NULL,
            status text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'delivered', 'failed', 'rejected')),
            attempts integer NOT NULL DEFAULT 0,
            last_error text,
            data json NOT NULL
        )""",
        "CREATE INDEX outbox_pending ON {s}.outbox (available_at) WHERE status = 'pending'",
        "CREATE INDEX outbox_customer ON {s}.outbox (customer_id)",
        """CREATE TABLE {s}.activity (
            journey_id text NOT NULL,
            version integer NOT NULL,
            step_id text,
            kind text NOT NULL,
            detail text,
            enrollment_id text,
            customer_id text COLLATE "C",
            at timestamptz NOT NULL
        )""",
        "CREATE INDEX activity_journey ON {s}.activity (journey_id)",
        "CREATE INDEX activity_customer ON {s}.activity (customer_id)",
        "CREATE TABLE {s}.settings (key text PRIMARY KEY, value text NOT NULL)",
    ),
)

#: The schema version this cjo writes; a database at a higher version is refused.
SCHEMA_VERSION = len(_MIGRATIONS)

_ENROLLMENT_COLUMNS: LiteralString = (
    "id, customer_id, journey_id, version, instance_key, status, step_id, entered_at,"
    " step_entered_at, ended_at, wake_at, data"
)

_QUERIES: dict[str, LiteralString] = {
    "lock": "SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k",
    "profiles": "SELECT customer_id, data::text FROM {s}.profiles WHERE customer_id = ANY(%s)",
    "active": "SELECT customer_id, id, data::text FROM {s}.enrollments"
    " WHERE customer_id = ANY(%s) AND status = 'active'",
    "history": "SELECT customer_id, journey_id, instance_key, entered_at, ended_at"
    " FROM {s}.enrollments WHERE customer_id = ANY(%s) ORDER BY seq",
    "claim_events": "INSERT INTO {s}.events (event_id, customer_id, claimed_at)"
    " SELECT e, c, %s FROM unnest(%s::text[], %s::text[]) AS u (e, c)"
    " ON CONFLICT DO NOTHING RETURNING event_id",
    "claim_event": "INSERT INTO {s}.events (event_id, customer_id, claimed_at)"
    " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
    # Batched writes send one array per column and unnest them server-side: one statement
    # per table and transaction, however many rows (executemany would send one per row).
    "upsert_enrollment": "INSERT INTO {s}.enrollments (" + _ENROLLMENT_COLUMNS + ")"
    " SELECT i, c, j, v, k, st, sp, ea, sea, ena, w, d::json FROM unnest("
    "%s::text[], %s::text[], %s::text[], %s::int[], %s::text[], %s::text[], %s::text[],"
    " %s::timestamptz[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[], %s::text[])"
    " AS u (i, c, j, v, k, st, sp, ea, sea, ena, w, d)"
    " ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, step_id = EXCLUDED.step_id,"
    " step_entered_at = EXCLUDED.step_entered_at, ended_at = EXCLUDED.ended_at,"
    " wake_at = EXCLUDED.wake_at, wake_lease_until = NULL, data = EXCLUDED.data",
    "upsert_profile": "INSERT INTO {s}.profiles (customer_id, updated_at, data)"
    " SELECT c, t, d::json FROM unnest(%s::text[], %s::timestamptz[], %s::text[]) AS u (c, t, d)"
    " ON CONFLICT (customer_id) DO UPDATE SET updated_at = EXCLUDED.updated_at,"
    " data = EXCLUDED.data",
    "insert_activity": "INSERT INTO {s}.activity"
    " (journey_id, version, step_id, kind, detail, enrollment_id, customer_id, at)"
    " SELECT * FROM unnest(%s::text[], %s::int[], %s::text[], %s::text[], %s::text[],"
    " %s::text[], %s::text[], %s::timestamptz[])",
    "insert_outbox": "INSERT INTO {s}.outbox (key, customer_id, created_at, available_at, data)"
    " SELECT k, c, t, a, d::json FROM unnest(%s::text[], %s::text[], %s::timestamptz[],"
    " %s::timestamptz[], %s::text[]) AS u (k, c, t, a, d) ON CONFLICT (key) DO NOTHING",
    # Join against a locked, limited subquery (not ``IN``) so the claim runs exactly once.
    "claim_due": "UPDATE {s}.enrollments AS e SET wake_lease_until = %(until)s"
    " FROM (SELECT id FROM {s}.enrollments"
    "   WHERE status = 'active' AND wake_at IS NOT NULL AND wake_at <= %(now)s"
    "   AND (wake_lease_until IS NULL OR wake_lease_until <= %(now)s)"
    "   ORDER BY wake_at, step_entered_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS due"
    " WHERE e.id = due.id"
    " RETURNING e.customer_id, e.id, e.wake_at, e.step_entered_at",
    "next_wake_at": "SELECT min(wake_at) FROM {s}.enrollments"
    " WHERE status = 'active' AND wake_at IS NOT NULL",
    "claim_outbox": "UPDATE {s}.outbox AS o SET available_at = %(until)s"
    " FROM (SELECT key FROM {s}.outbox WHERE status = 'pending' AND available_at <= %(now)s"
    "   ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS due"
    " WHERE o.key = due.key"
    " RETURNING o.seq, o.data::text",
    "complete_outbox": "UPDATE {s}.outbox"
    " SET status = %s, attempts = attempts + 1, available_at = %s, last_error = %s"
    " WHERE key = %s AND status = 'pending'",
    "outbox_entry": "SELECT data::text, status, attempts, available_at, last_error"
    " FROM {s}.outbox WHERE key = %s",
    "get_profile": "SELECT data::text FROM {s}.profiles WHERE customer_id = %s",
    "get_enrollments": "SELECT data::text FROM {s}.enrollments WHERE customer_id = %s"
    " ORDER BY seq",
    "activity_counts": "SELECT journey_id, version, step_id, kind, detail, count(*)"
    " FROM {s}.activity WHERE journey_id = %s GROUP BY journey_id, version, step_id, kind, detail",
    "active_counts": "SELECT version, step_id, count(*) FROM {s}.enrollments"
    " WHERE journey_id = %s AND status = 'active' GROUP BY version, step_id",
    "erase_profile": "DELETE FROM {s}.profiles WHERE customer_id = %s",
    "erase_enrollments": "DELETE FROM {s}.enrollments WHERE customer_id = %s",
    "erase_outbox": "DELETE FROM {s}.outbox WHERE customer_id = %s",
    "erase_activity": "UPDATE {s}.activity SET customer_id = NULL, enrollment_id = NULL"
    " WHERE customer_id = %s",
    # Event ids stay claimed (a replay must still be a no-op) but lose their owner.
    "erase_events": "UPDATE {s}.events SET customer_id = NULL WHERE customer_id = %s",
    "get_setting": "SELECT value FROM {s}.settings WHERE key = %s",
    "put_setting": "INSERT INTO {s}.settings (key, value) VALUES (%s, %s)"
    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
    "current_version": "SELECT coalesce(max(version), 0) FROM {s}.schema_version",
    "version_table": "CREATE TABLE IF NOT EXISTS {s}.schema_version"
    " (version integer PRIMARY KEY)",
    "record_version": "INSERT INTO {s}.schema_version (version) VALUES (%s)",
    "create_schema": "CREATE SCHEMA IF NOT EXISTS {s}",
}


def _lock_key(*parts: str) -> int:
    """A stable signed 64-bit advisory-lock key (Python's ``hash`` differs between processes)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _utc(value: datetime) -> datetime:
    # The server answers in the session's TimeZone; normalise so callers always see UTC.
    return value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


@contextmanager
def _translated() -> Iterator[None]:
    """Driver errors as cjo's: conflicts (safe to retry) apart from every other failure."""
    try:
        yield
    except (pg_errors.SerializationFailure, pg_errors.DeadlockDetected) as exc:
        raise ConflictError(f"PostgreSQL: {exc}") from exc
    except psycopg.Error as exc:  # includes psycopg_pool's PoolTimeout and PoolClosed
        raise StorageError(f"PostgreSQL: {exc}") from exc


def _translating(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _translated():
            return fn(*args, **kwargs)

    return wrapper


# (journey_id, instance_key, entered_at, ended_at) of one past or present enrollment.
_PastRow = tuple[str, str | None, datetime, datetime | None]


class _Batch:
    """State shared by the sessions of one transaction: the connection, the prefetched rows,
    and the writes buffered until commit."""

    def __init__(
        self, storage: PostgresStorage, conn: psycopg.Connection[Any], customer_ids: list[str],
        now: datetime, claims: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.storage = storage
        # Event ids announced by the caller, claimed up front in one statement; ``fresh`` is
        # what that statement inserted, handed out once each by claim_event.
        first: dict[str, str] = {}  # event id -> the customer it is first announced for
        for cid, eid in claims:
            first.setdefault(eid, cid)
        self._claims = list(first.items())
        self.announced: frozenset[str] = frozenset(first)
        self.fresh: set[str] = set()
        self._conn: psycopg.Connection[Any] | None = conn
        self.customer_ids = customer_ids
        self.now = now
        self.profiles: dict[str, Profile] = {}
        self.active: dict[str, list[tuple[str, str]]] = {}
        self.history: dict[str, list[_PastRow]] | None = None
        self.enrollment_rows: list[tuple[Any, ...]] = []
        self.profile_rows: list[tuple[Any, ...]] = []
        self.activity_rows: list[tuple[Any, ...]] = []
        self.outbox_rows: list[tuple[Any, ...]] = []

    @property
    def conn(self) -> psycopg.Connection[Any]:
        self.check_open()
        assert self._conn is not None
        return self._conn

    def check_open(self) -> None:
        if self._conn is None:
            # The connection is back in the pool, perhaps serving someone else by now.
            raise StorageError("a customer session was used after its transaction ended")

    def end(self) -> None:
        self._conn = None

    def prefetch(self) -> None:
        q = self.storage._q
        ids = self.customer_ids
        keys = sorted({self.storage._customer_lock_key(cid) for cid in ids})
        # Pipelined: the locks, then both reads, in one round trip. Each read runs after the
        # locks are granted and takes its own snapshot, so it sees the previous holder's commit.
        self.conn.execute(q["lock"], [keys])
        claimed = (
            self.conn.execute(q["claim_events"], (
                self.now, [eid for eid, _ in self._claims], [cid for _, cid in self._claims],
            ))
            if self._claims else None
        )
        profiles = self.conn.execute(q["profiles"], [ids])
        active = self.conn.execute(q["active"], [ids])
        if claimed is not None:
            self.fresh = {eid for (eid,) in claimed.fetchall()}
        for cid, data in profiles.fetchall():
            self.profiles[cid] = profile_from_json(data)
        for cid, eid, data in active.fetchall():
            self.active.setdefault(cid, []).append((eid, data))
        for rows in self.active.values():
            rows.sort()

    def load_history(self) -> dict[str, list[_PastRow]]:
        if self.history is None:
            # One query for every customer of the batch, on first need (entries are rarer
            # than events): later calls filter in memory.
            history: dict[str, list[_PastRow]] = {}
            cursor = self.conn.execute(self.storage._q["history"], [self.customer_ids])
            for cid, jid, key, entered, ended in cursor.fetchall():
                history.setdefault(cid, []).append((jid, key, _utc(entered), _utc_or_none(ended)))
            self.history = history
        return self.history

    def add(self, changes: Changes) -> None:
        """Encode now (the caller may keep mutating its objects) and write at commit."""
        now = self.now
        cid = changes.customer_id
        for e in changes.enrollments.values():
            self.enrollment_rows.append((
                e.id, e.customer_id, e.journey_id, e.version, e.instance_key, e.status,
                e.step_id, e.entered_at, e.step_entered_at or e.entered_at, e.ended_at,
                e.wake_at if e.active else None, encode(e),
            ))
        if changes.profile is not None:
            self.profile_rows.append((cid, now, encode(changes.profile)))
        for a in changes.activities:
            self.activity_rows.append((
                a.journey_id, a.version, a.step_id, a.kind, a.detail, a.enrollment_id,
                a.customer_id, a.at,
            ))
        available = now + self.storage.dispatch_lease
        for m in changes.messages:
            self.outbox_rows.append((m.idempotency_key, m.customer_id, now, available, encode(m)))

    def flush(self) -> None:
        q = self.storage._q
        # A row written twice in one transaction (a session that applied twice) keeps its
        # first place (``seq``: oldest first means first written) and its last value.
        enrollments = list({row[0]: row for row in self.enrollment_rows}.values())
        profiles = list({row[0]: row for row in self.profile_rows}.values())
        outbox: dict[str, tuple[Any, ...]] = {}
        for row in self.outbox_rows:
            outbox.setdefault(row[0], row)  # the first message with a key wins, as in SQL
        # Row locks cannot deadlock here: a customer's rows are only written under its lock.
        for name, rows in (
            ("upsert_enrollment", enrollments),
            ("upsert_profile", profiles),
            ("insert_activity", self.activity_rows),
            ("insert_outbox", list(outbox.values())),
        ):
            if rows:
                self.conn.execute(q[name], [list(column) for column in zip(*rows, strict=True)])


class _Session(CustomerSession):
    __slots__ = ("_batch", "customer_id")

    def __init__(self, batch: _Batch, customer_id: str) -> None:
        self._batch = batch
        self.customer_id = customer_id

    @_translating
    def claim_event(self, event_id: str) -> bool:
        batch = self._batch
        if event_id in batch.announced:
            batch.check_open()
            if event_id in batch.fresh:
                batch.fresh.discard(event_id)
                return True
            return False  # handled before, or already handed out in this transaction
        cursor = batch.conn.execute(
            batch.storage._q["claim_event"], (event_id, self.customer_id, batch.now)
        )
        return cursor.fetchone() is not None

    def load_profile(self) -> Profile | None:
        self._batch.check_open()
        return self._batch.profiles.get(self.customer_id)

    def load_active(self) -> list[Enrollment]:
        self._batch.check_open()
        # Decoded afresh on every call: the caller owns (and mutates) what it gets.
        rows = self._batch.active.get(self.customer_id, ())
        return [enrollment_from_json(data) for _, data in rows]

    @_translating
    def history(self, journey_id: str, instance_key: str | None) -> list[PastEntry]:
        rows = self._batch.load_history().get(self.customer_id, ())
        return [
            PastEntry(entered, ended)
            for jid, key, entered, ended in rows
            if jid == journey_id and key == instance_key
        ]

    def apply(self, changes: Changes) -> None:
        self._batch.check_open()
        self._batch.add(changes)


class PostgresStorage(Storage):
    """Storage in PostgreSQL (psycopg 3 and a ``psycopg_pool.ConnectionPool``).

    ``dsn`` is a libpq connection string or URL. ``schema`` holds cjo's tables (created and
    migrated on construction). Pass ``pool`` to share a pool you own: cjo then neither
    configures nor closes it. ``timeout`` is how long a call waits for a free connection.
    Connections are tagged with ``application_name`` (visible in ``pg_stat_activity``);
    ``connect_kwargs`` go to every connection (``{"prepare_threshold": None}`` behind
    PgBouncer in transaction mode, ``{"options": "-c lock_timeout=10s"}``...).

    Thread-safe. Make one per process, after any fork: connections cannot cross a fork.
    """

    def __init__(
        self,
        dsn: str = "",
        *,
        schema: str = "cjo",
        min_size: int = 1,
        max_size: int = 10,
        pool: ConnectionPool[Any] | None = None,
        timeout: float = 30.0,
        application_name: str = "cjo",
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise StorageError(
                f"invalid schema name {schema!r}: use letters, digits and underscores "
                "(at most 63, not starting with a digit)"
            )
        self.schema = schema
        self._q: dict[str, sql.Composed] = {
            name: sql.SQL(text).format(s=sql.Identifier(schema))
            for name, text in _QUERIES.items()
        }
        self._owns_pool = pool is None
        if pool is None:
            kwargs: dict[str, Any] = {"autocommit": True, "application_name": application_name}
            kwargs.update(connect_kwargs or {})
            with _translated():
                pool = ConnectionPool(
                    dsn, min_size=min_size, max_size=max_size, kwargs=kwargs, timeout=timeout,
                    open=True, name=f"cjo-{schema}",
                )
        self._pool: ConnectionPool[Any] = pool
        self._closed = False
        try:
            self.migrate()
        except BaseException:
            self.close()
            raise

    # --- schema ------------------------------------------------------------------------------

    @_translating
    def migrate(self) -> int:
        """Bring the schema up to ``SCHEMA_VERSION`` (done on construction; safe to repeat and
        to run from several processes at once). Returns the version found before migrating."""
        with self._pool.connection() as conn:
            with conn.transaction():
                found = self._schema_version(conn)
            if found == SCHEMA_VERSION:
                return found  # the common case: no lock, no DDL
            # Processes starting together take turns. A session lock, so the migration can run
            # in a transaction begun after the wait: a backend refreshes its catalog caches
            # only between transactions, and would otherwise miss the tables the previous
            # holder just created (and fail re-creating them).
            key = _lock_key("cjo-migrate", self.schema)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_lock(%s)", [key])
            try:
                with conn.transaction():
                    found = self._schema_version(conn)
                    self._apply_migrations(conn, found)
            finally:
                self._unlock(conn, key)
            return found

    def _apply_migrations(self, conn: psycopg.Connection[Any], found: int) -> None:
        q = self._q
        if found == 0:
            exists = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", [self.schema]
            ).fetchone()
            if exists is None:  # CREATE ... IF NOT EXISTS would still need the privilege
                conn.execute(q["create_schema"])
            conn.execute(q["version_table"])
        for number in range(found + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[number - 1]:
                conn.execute(sql.SQL(statement).format(s=sql.Identifier(self.schema)))
            conn.execute(q["record_version"], [number])

    @staticmethod
    def _unlock(conn: psycopg.Connection[Any], key: int) -> None:
        if conn.broken:
            return  # the server dropped the session, and its locks with it
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_unlock(%s)", [key])
        except psycopg.Error:
            # Never hand a connection still holding the lock back to the pool.
            conn.close()
            raise

    def _schema_version(self, conn: psycopg.Connection[Any]) -> int:
        table = conn.execute(
            "SELECT to_regclass(format('%%I.schema_version', %s::text))", [self.schema]
        ).fetchone()
        if table is None or table[0] is None:
            return 0
        row = conn.execute(self._q["current_version"]).fetchone()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise SchemaError(
                f"schema {self.schema!r} is at version {found}, newer than this cjo "
                f"understands ({SCHEMA_VERSION}): upgrade cjo"
            )
        return found

    # --- transactions ------------------------------------------------------------------------

    def _customer_lock_key(self, customer_id: str) -> int:
        # The schema is part of the key: two cjo schemas in one database never block each other.
        return _lock_key("cjo", self.schema, customer_id)

    @contextmanager
    def batch(
        self, customer_ids: Sequence[str], now: datetime, *, claims: Sequence[tuple[str, str]] = ()
    ) -> Iterator[Mapping[str, CustomerSession]]:
        now = ensure_aware(now, "now")
        ids = sorted(set(customer_ids))
        with _translated(), self._pool.connection() as conn:
            # BEGIN and COMMIT are sent by hand on autocommit connections (cjo's own): psycopg's
            # transaction() would wait for each of them in a round trip of its own.
            manual = conn.autocommit
            pipeline: AbstractContextManager[Any] = (
                conn.pipeline() if psycopg.Pipeline.is_supported() else nullcontext()
            )
            batch = _Batch(self, conn, ids, now, claims)
            try:
                with pipeline:
                    if manual:
                        conn.execute("BEGIN")
                    batch.prefetch()
                    yield {cid: _Session(batch, cid) for cid in ids}
                    # Reached only when the block raised nothing.
                    batch.flush()
                    if manual:
                        conn.execute("COMMIT")
                    else:
                        conn.commit()
            except BaseException:
                if not conn.broken:
                    conn.rollback()  # a no-op when the server already ended the transaction
                raise
            finally:
                batch.end()

    # --- wake-ups ----------------------------------------------------------------------------

    @_translating
    def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[DueWakeup]:
        now = ensure_aware(now, "now")
        with self._pool.connection() as conn:
            rows = conn.execute(
                self._q["claim_due"], {"now": now, "until": now + lease, "limit": limit}
            ).fetchall()
        # UPDATE ... RETURNING comes back in no particular order.
        rows.sort(key=lambda r: (r[2], r[3], r[1]))
        return [DueWakeup(cid, eid, _utc(wake_at)) for cid, eid, wake_at, _ in rows]

    @_translating
    def next_wake_at(self) -> datetime | None:
        with self._pool.connection() as conn:
            row = conn.execute(self._q["next_wake_at"]).fetchone()
        return None if row is None else _utc_or_none(row[0])

    # --- outbox ------------------------------------------------------------------------------

    @_translating
    def claim_outbox(self, now: datetime, limit: int, lease: timedelta) -> list[Message]:
        now = ensure_aware(now, "now")
        with self._pool.connection() as conn:
            rows = conn.execute(
                self._q["claim_outbox"], {"now": now, "until": now + lease, "limit": limit}
            ).fetchall()
        rows.sort(key=lambda r: r[0])
        return [message_from_json(data) for _, data in rows]

    @_translating
    def complete_outbox(
        self, key: str, result: DeliveryResult, now: datetime, retry_at: datetime | None = None
    ) -> None:
        now = ensure_aware(now, "now")
        status = "pending" if retry_at is not None else result.status
        with self._pool.connection() as conn:
            conn.execute(
                self._q["complete_outbox"], (status, retry_at or now, result.error, key)
            )

    @_translating
    def complete_outbox_many(self, deliveries: Sequence[Delivery], now: datetime) -> None:
        now = ensure_aware(now, "now")
        rows = [
            (
                "pending" if d.retry_at is not None else d.result.status,
                d.retry_at or now,
                d.result.error,
                d.key,
            )
            for d in deliveries
        ]
        if not rows:
            return
        with self._pool.connection() as conn, conn.cursor() as cur:
            # One transaction (the pool commits on leaving the block), pipelined statements.
            cur.executemany(self._q["complete_outbox"], rows)

    @_translating
    def outbox_entry(self, key: str) -> OutboxEntry | None:
        with self._pool.connection() as conn:
            row = conn.execute(self._q["outbox_entry"], [key]).fetchone()
        if row is None:
            return None
        data, status, attempts, available_at, last_error = row
        message = message_from_json(data)
        return OutboxEntry(message, status, attempts, _utc(available_at), last_error)

    # --- queries -----------------------------------------------------------------------------

    @_translating
    def get_profile(self, customer_id: str) -> Profile | None:
        with self._pool.connection() as conn:
            row = conn.execute(self._q["get_profile"], [customer_id]).fetchone()
        return None if row is None else profile_from_json(row[0])

    @_translating
    def get_enrollments(self, customer_id: str) -> list[Enrollment]:
        with self._pool.connection() as conn:
            rows = conn.execute(self._q["get_enrollments"], [customer_id]).fetchall()
        return [enrollment_from_json(data) for (data,) in rows]

    @_translating
    def activity_counts(self, journey_id: str) -> list[ActivityCount]:
        with self._pool.connection() as conn:
            rows = conn.execute(self._q["activity_counts"], [journey_id]).fetchall()
        # Sorted as the in-memory adapter sorts, so reports read the same on every backend.
        rows.sort(key=lambda r: tuple(map(str, r[:5])))
        return [ActivityCount(*row) for row in rows]

    @_translating
    def active_counts(self, journey_id: str) -> dict[tuple[int, str | None], int]:
        with self._pool.connection() as conn:
            rows = conn.execute(self._q["active_counts"], [journey_id]).fetchall()
        return {(version, step): n for version, step, n in rows}

    # --- customers and settings --------------------------------------------------------------

    @_translating
    def erase_customer(self, customer_id: str) -> None:
        q = self._q
        with self._pool.connection() as conn, conn.transaction():
            # Under the customer's lock, so no engine transaction writes them back half-way.
            conn.execute(q["lock"], [[self._customer_lock_key(customer_id)]])
            for name in (
                "erase_profile", "erase_enrollments", "erase_outbox", "erase_activity",
                "erase_events",
            ):
                conn.execute(q[name], [customer_id])

    @_translating
    def get_setting(self, key: str) -> str | None:
        with self._pool.connection() as conn:
            row = conn.execute(self._q["get_setting"], [key]).fetchone()
        return None if row is None else str(row[0])

    @_translating
    def put_setting(self, key: str, value: str) -> None:
        with self._pool.connection() as conn:
            conn.execute(self._q["put_setting"], (key, value))

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the pool (if cjo opened it); every connection is closed when this returns."""
        if self._closed:
            return
        self._closed = True
        if self._owns_pool:
            self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresStorage(schema={self.schema!r}, pool={self._pool.name!r})"
