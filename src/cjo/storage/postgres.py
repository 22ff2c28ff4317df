"""PostgreSQL storage: many engine processes, on many machines, sharing one database.

Install with ``pip install 'cjo[postgres]'`` (psycopg 3 and psycopg-pool). Only this module
imports psycopg, so ``import cjo`` works without it.

One row per customer (``customers``) holds the encoded record (``cjo.storage.codec``) and,
beside it, what the database must see: ``wake_at`` (indexed, for due claims), the lease of a
due claim, and whether the record was set aside. How it keeps several workers correct:

- **One customer at a time.** ``batch()`` runs one transaction that first takes a
  transaction-scoped advisory lock per customer (a 64-bit hash of schema and customer id,
  computed by the server), in ascending key order so two batches never deadlock. Everything
  read afterwards (READ COMMITTED: a fresh snapshot per statement) includes what the previous
  holder committed.
- **Duplicates.** ``events.event_id`` is the primary key; a claim is ``INSERT ... ON CONFLICT
  DO NOTHING``. Event ids announced by the caller are claimed together, in sorted order (two
  transactions never wait on each other's ids in opposite orders).
- **Wake-ups and outbox.** Due customers and pending messages are claimed with ``FOR UPDATE
  SKIP LOCKED`` and a lease (a timestamp column), so workers never wait for each other and a
  crashed worker's claims come back once the lease runs out. ``due_batch`` claims and locks in
  one statement: it only *tries* the advisory locks, so it never waits for a customer while
  holding row locks (which could deadlock with an event transaction); a busy customer is left
  for the next pass.
- **Few round trips.** Transactions run in pipeline mode: ``BEGIN``, the locks, the event
  claims and the read of every record go in one round trip; the writes (one statement per
  table, however many rows) go with the ``COMMIT`` in another. Only a ``claim_event`` of an id
  that was not announced waits for an answer in between. A batch of N customers holds N
  advisory locks: with big batches and many workers, size the server's
  ``max_locks_per_transaction`` to match.
- **Activity** is append-only and counted on read; ``prune`` folds the entries it drops into
  ``activity_totals`` in the same statement, so counts never lose them. (Counters updated in
  place on every write would be one hot row every worker queues on.)

Tables live in their own schema (``cjo`` by default) with forward migrations recorded in
``schema_version``; migrating runs under an advisory lock, so processes starting together take
turns. A database migrated by a newer cjo raises ``SchemaError``.

Datetimes are stored as ``timestamptz`` (microseconds) or as integer microseconds inside
records, and always come back as aware UTC datetimes. The adapter never reads the clock: every
instant it writes is given by the engine.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final, LiteralString, ParamSpec, TypeVar

from cjo.errors import missing_extra

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg import sql
    from psycopg.conninfo import conninfo_attempts, conninfo_to_dict
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # the driver is an extra: say which one instead of its module name
    raise missing_extra("PostgresStorage", "psycopg 3 and psycopg-pool", "postgres", exc) from exc

from cjo.channels.base import DeliveryResult, Message
from cjo.clock import ensure_aware
from cjo.errors import (
    CommitOutcomeUnknownError,
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
    decode_message,
    decode_state,
    encode_message,
    encode_state,
    enrolled_page,
    journey_needles,
)
from cjo.storage.erasure import (
    FREE_TEXT_KINDS,
    KEPT_DETAILS_SQL,
    SCHEDULE_CLAIM_END,
    SCHEDULE_CLAIM_PREFIX,
    counted_detail_sql,
    pseudonymiser,
)
from cjo.storage.record_cache import DEFAULT_RECORD_CACHE, RecordCache

__all__ = [
    "REACHABILITY_CHECK_AFTER", "RECONNECT_ATTEMPTS", "SCHEMA_VERSION", "PostgresStorage",
    "check_connection", "holds_schema",
]

P = ParamSpec("P")
R = TypeVar("R")

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# Forward migrations, applied in order; ``{s}`` is the schema. Never edit a released entry:
# append a new one (databases already migrated will not run an edited step again).
_MIGRATIONS: tuple[tuple[LiteralString, ...], ...] = (
    # 1: one row per enrollment and per profile (replaced by 2).
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
    # 2: one record per customer, definitions by generation. While cjo is 0.x, the data of
    # layout 1 is dropped, not converted (enrollments, profiles, handled event ids, outbox,
    # activity): publish the definitions again after upgrading. Settings are kept.
    (
        "DROP TABLE {s}.enrollments, {s}.profiles, {s}.events, {s}.outbox, {s}.activity",
        # Ids sort bytewise (COLLATE "C"), as Python sorts str: due customers with the same
        # wake-up are then claimed in the order the in-memory adapter uses, whatever the
        # database locale. ``data`` is text, not json: the adapter encodes and decodes it, the
        # server never looks inside, and key order must survive (jsonb would re-order it).
        """CREATE TABLE {s}.customers (
            customer_id text COLLATE "C" PRIMARY KEY,
            wake_at timestamptz,
            lease_until timestamptz,
            aside text,
            revision bigint NOT NULL,
            data text NOT NULL
        )""",
        "CREATE INDEX customers_due ON {s}.customers (wake_at, customer_id)"
        " WHERE wake_at IS NOT NULL AND aside IS NULL",
        """CREATE TABLE {s}.events (
            event_id text COLLATE "C" PRIMARY KEY,
            seen_at timestamptz NOT NULL
        )""",
        "CREATE INDEX events_seen ON {s}.events (seen_at)",
        # ``json`` keeps the key order of message fields and recipients (channel payloads).
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
            done_at timestamptz,
            data json NOT NULL
        )""",
        "CREATE INDEX outbox_pending ON {s}.outbox (available_at) WHERE status = 'pending'",
        "CREATE INDEX outbox_done ON {s}.outbox (done_at) WHERE done_at IS NOT NULL",
        "CREATE INDEX outbox_customer ON {s}.outbox (customer_id)",
        # ``seq`` is the append order (several entries of one transaction share ``at``).
        """CREATE TABLE {s}.activity (
            seq bigint GENERATED ALWAYS AS IDENTITY,
            at timestamptz NOT NULL,
            customer_id text COLLATE "C",
            enrollment_id text NOT NULL,
            journey_id text NOT NULL,
            version integer NOT NULL,
            step_id text,
            kind text NOT NULL,
            detail text,
            channel text,
            content_id text,
            content_version integer
        )""",
        "CREATE INDEX activity_journey ON {s}.activity (journey_id)",
        "CREATE INDEX activity_customer ON {s}.activity (customer_id)",
        # Entries are appended roughly in time order: a BRIN index costs next to nothing to
        # maintain and serves pruning and time-range reads.
        "CREATE INDEX activity_at ON {s}.activity USING brin (at)",
        # What prune dropped, counted (no unique key: NULL steps and details would need
        # NULLS NOT DISTINCT, PostgreSQL 15+; prune re-aggregates the table instead).
        """CREATE TABLE {s}.activity_totals (
            journey_id text NOT NULL,
            version integer NOT NULL,
            step_id text,
            kind text NOT NULL,
            detail text,
            count bigint NOT NULL
        )""",
        "CREATE INDEX activity_totals_journey ON {s}.activity_totals (journey_id)",
        """CREATE TABLE {s}.definitions (
            generation bigint PRIMARY KEY,
            data text NOT NULL
        )""",
    ),
    # 3: dead letters. A message that failed for good was ``failed`` or ``rejected`` with a
    # ``done_at`` (pruned with delivered ones); it is now ``dead`` with a ``dead_at`` and no
    # ``done_at``, kept until the host retries or discards it.
    (
        "ALTER TABLE {s}.outbox ADD COLUMN dead_at timestamptz",
        "ALTER TABLE {s}.outbox DROP CONSTRAINT outbox_status_check",
        "UPDATE {s}.outbox SET status = 'dead', dead_at = done_at, done_at = NULL"
        " WHERE status IN ('failed', 'rejected')",
        "ALTER TABLE {s}.outbox ADD CONSTRAINT outbox_status_check"
        " CHECK (status IN ('pending', 'delivered', 'dead', 'discarded'))",
        "CREATE INDEX outbox_dead ON {s}.outbox (dead_at, key) WHERE status = 'dead'",
    ),
    # 4: segment memberships, one row per (segment, customer), written with each record, so
    # that members are listed and counted with an index.
    (
        """CREATE TABLE {s}.segment_members (
            segment_id text COLLATE "C" NOT NULL,
            customer_id text COLLATE "C" NOT NULL,
            entered_at timestamptz NOT NULL,
            PRIMARY KEY (segment_id, customer_id)
        )""",
        "CREATE INDEX segment_members_customer ON {s}.segment_members (customer_id)",
    ),
    # 5: pending messages indexed by channel, then availability, so that a process claims only
    # the messages of channels it has (``claim_outbox(channels=...)``) without reading those of
    # other channels. The channel is read from the stored message (an index on an expression,
    # not a column): no table rewrite, and a process of an older cjo, still writing during a
    # rolling upgrade, writes rows this index covers all the same.
    (
        "DROP INDEX {s}.outbox_pending",
        "CREATE INDEX outbox_pending ON {s}.outbox ((data ->> 'channel'), available_at)"
        " WHERE status = 'pending'",
    ),
    # 6: the instant a record was set aside, beside its reason (no table rewrite: a column
    # without a default), and an index of the records set aside (a few rows: the operator lists
    # them without reading every customer). A record set aside before has no instant (NULL).
    (
        "ALTER TABLE {s}.customers ADD COLUMN aside_at timestamptz",
        "CREATE INDEX customers_aside ON {s}.customers (customer_id) WHERE aside IS NOT NULL",
    ),
    # 7: whether a pending message's ``available_at`` ends a lease (its writer's, or a
    # claim's) rather than a retry's back-off: an identity merge leaves a message a process
    # may be sending to it (``OutboxEntry.leased``). A constant default: no table rewrite;
    # rows of before are read as not leased.
    ("ALTER TABLE {s}.outbox ADD COLUMN leased boolean NOT NULL DEFAULT false",),
)

#: The schema version this cjo writes; a database at a higher version is refused.
SCHEMA_VERSION = len(_MIGRATIONS)

# The advisory-lock key of a customer, computed by the server so that a claim statement can
# lock customers it has only just found. ``{prefix}`` (the schema) keeps two cjo schemas in one
# database from blocking each other.
_KEY: LiteralString = "hashtextextended({prefix} || {col}, 0)"

# A detail as it is counted: without the instant it names (see ``cjo.storage.erasure``).
_TIMELESS_DETAIL: Final = counted_detail_sql("strpos")

_QUERIES: dict[str, LiteralString] = {
    # Locks in ascending key order (the sorted subquery is not flattened; the aggregate
    # consumes it in order): every transaction locks in the same order, so none deadlock.
    "lock": "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT DISTINCT "
    + _KEY.replace("{col}", "c")
    + " AS k FROM unnest(%b::text[]) AS u (c) ORDER BY k) AS keys",
    "records": "SELECT customer_id, data FROM {s}.customers WHERE customer_id = ANY(%b::text[])",
    "claim_events": "INSERT INTO {s}.events (event_id, seen_at)"
    " SELECT e, %s FROM unnest(%b::text[]) AS u (e) ON CONFLICT DO NOTHING RETURNING event_id",
    "claim_event": "INSERT INTO {s}.events (event_id, seen_at) VALUES (%s, %s)"
    " ON CONFLICT DO NOTHING RETURNING 1",
    "unclaim_events": "DELETE FROM {s}.events WHERE event_id = ANY(%b::text[])",
    # Writes send one array per column and unnest them server-side: one statement per table
    # and transaction, however many rows. Arrays go in binary (``%b``): psycopg's text format
    # escapes every element with a regular expression, many times slower for records.
    # A save clears ``aside`` (a record set aside and read back since is readable again);
    # ``set_aside`` runs after it, so one set aside and saved in one transaction stays aside.
    # ``aside_at`` is written with ``aside`` and read only where ``aside`` is set: a save
    # leaves it alone.
    "save": "INSERT INTO {s}.customers (customer_id, wake_at, revision, data)"
    " SELECT * FROM unnest(%b::text[], %b::timestamptz[], %b::bigint[], %b::text[])"
    " ON CONFLICT (customer_id) DO UPDATE SET wake_at = EXCLUDED.wake_at, lease_until = NULL,"
    " aside = NULL, revision = EXCLUDED.revision, data = EXCLUDED.data",
    # Updates joined to arrays also name the keys with ``= ANY``, so that the planner looks
    # the rows up by primary key instead of hashing the whole table.
    "set_aside": "UPDATE {s}.customers AS r SET aside = u.reason, aside_at = %(now)s"
    " FROM unnest(%(ids)b::text[], %(reasons)b::text[]) AS u (cid, reason)"
    " WHERE r.customer_id = u.cid AND r.customer_id = ANY(%(ids)b::text[])",
    "insert_activity": "INSERT INTO {s}.activity (at, customer_id, enrollment_id, journey_id,"
    " version, step_id, kind, detail, channel, content_id, content_version)"
    " SELECT * FROM unnest(%b::timestamptz[], %b::text[], %b::text[], %b::text[], %b::int[],"
    " %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::int[])",
    "insert_outbox": "INSERT INTO {s}.outbox (key, customer_id, created_at, available_at, data,"
    " leased) SELECT k, c, %s, %s, d::json, true FROM unnest(%b::text[], %b::text[], %b::text[])"
    " AS u (k, c, d) ON CONFLICT (key) DO NOTHING",
    "peek": "SELECT data FROM {s}.customers WHERE customer_id = %s",
    # The locked, limited subquery runs once (an InitPlan, as an array: not ``IN``, which
    # may be re-planned as a join that runs it again), and the rows are then found by primary
    # key (a join would be free to scan the whole table).
    "claim_due": "UPDATE {s}.customers AS r SET lease_until = %(until)s"
    " WHERE r.customer_id = ANY(ARRAY(SELECT customer_id FROM {s}.customers"
    "   WHERE wake_at IS NOT NULL AND aside IS NULL AND wake_at <= %(now)s"
    "   AND (lease_until IS NULL OR lease_until <= %(now)s)"
    "   ORDER BY wake_at, customer_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED))"
    " RETURNING r.customer_id, r.wake_at",
    # The same claim, inside the transaction that works on the customers: the advisory locks
    # are only tried (never waited for while holding row locks), after the limit, and the
    # records come back with the claim. Rows locked here but left out stay untouched.
    "due_batch": "WITH due AS MATERIALIZED (SELECT customer_id FROM {s}.customers"
    "   WHERE wake_at IS NOT NULL AND aside IS NULL AND wake_at <= %(now)s"
    "   AND (lease_until IS NULL OR lease_until <= %(now)s)"
    "   ORDER BY wake_at, customer_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
    " UPDATE {s}.customers AS r SET lease_until = %(until)s"
    " WHERE r.customer_id = ANY(ARRAY(SELECT customer_id FROM due"
    "   WHERE pg_try_advisory_xact_lock("
    + _KEY.replace("{col}", "customer_id")
    + ")))"
    " RETURNING r.customer_id, r.wake_at, r.data",
    "next_wake_at": "SELECT min(wake_at) FROM {s}.customers"
    " WHERE wake_at IS NOT NULL AND aside IS NULL",
    "next_outbox_at": "SELECT min(available_at) FROM {s}.outbox WHERE status = 'pending'",
    "claim_outbox": "UPDATE {s}.outbox AS o SET available_at = %(until)s, leased = true"
    " WHERE o.key = ANY(ARRAY(SELECT key FROM {s}.outbox"
    "   WHERE status = 'pending' AND available_at <= %(now)s"
    "   ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED))"
    " RETURNING o.seq, o.data::text",
    # The same, for the channels asked for: one range of ``outbox_pending`` per channel (its
    # expression and condition repeated as the index has them, so that the planner uses it).
    "claim_outbox_of": "UPDATE {s}.outbox AS o SET available_at = %(until)s, leased = true"
    " WHERE o.key = ANY(ARRAY(SELECT key FROM {s}.outbox"
    "   WHERE status = 'pending' AND (data ->> 'channel') = ANY(%(channels)s::text[])"
    "   AND available_at <= %(now)s"
    "   ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED))"
    " RETURNING o.seq, o.data::text",
    "pending_by_channel": "SELECT (data ->> 'channel'), count(*) FROM {s}.outbox"
    " WHERE status = 'pending' GROUP BY 1",
    # ``done_at`` is when a message was delivered (pruned after it), ``dead_at`` when it
    # became a dead letter (never pruned). A compare-and-set on ``attempts`` (``%(n)s``: the
    # count before this attempt, as first read): a run again after a lost COMMIT changes
    # nothing the first run committed, nor a message another process recorded a result for
    # since (``complete_outbox_many``).
    "complete_outbox": "UPDATE {s}.outbox"
    " SET status = %(st)s, attempts = attempts + 1, available_at = %(av)s, last_error = %(err)s,"
    " leased = false,"
    " done_at = CASE WHEN %(st)s = 'delivered' THEN %(done)s::timestamptz END,"
    " dead_at = CASE WHEN %(st)s = 'dead' THEN %(done)s::timestamptz END"
    " WHERE key = %(k)s AND status = 'pending' AND attempts = %(n)s",
    "complete_outbox_many": "UPDATE {s}.outbox AS o SET status = u.st,"
    " attempts = o.attempts + 1, available_at = u.av, last_error = u.err, leased = false,"
    " done_at = CASE WHEN u.st = 'delivered' THEN u.done END,"
    " dead_at = CASE WHEN u.st = 'dead' THEN u.done END"
    " FROM unnest(%(st)b::text[], %(av)b::timestamptz[], %(err)b::text[],"
    " %(done)b::timestamptz[], %(keys)b::text[], %(n)b::int[]) AS u (st, av, err, done, k, n)"
    " WHERE o.key = u.k AND o.key = ANY(%(keys)b::text[]) AND o.status = 'pending'"
    " AND o.attempts = u.n",
    "outbox_entry": "SELECT data::text, status, attempts, available_at, last_error, leased"
    " FROM {s}.outbox WHERE key = %s",
    "customer_outbox": "SELECT data::text, status, attempts, available_at, last_error, leased"
    " FROM {s}.outbox WHERE customer_id = %s ORDER BY seq",
    "defer_outbox": "UPDATE {s}.outbox SET available_at = %s, leased = false"
    " WHERE key = %s AND status = 'pending'",
    "release_outbox": "UPDATE {s}.outbox SET available_at = least(available_at, %(now)s),"
    " leased = false"
    " WHERE key = ANY(%(keys)b::text[]) AND status = 'pending'",
    # Pages by (dead_at, key), both ways, on the partial index ``outbox_dead``.
    "dead_newest": "SELECT data::text, attempts, last_error, dead_at FROM {s}.outbox"
    " WHERE status = 'dead' AND (%(after)s::timestamptz IS NULL"
    "  OR (dead_at, key) < (%(after)s::timestamptz, %(key)s::text))"
    " ORDER BY dead_at DESC, key DESC LIMIT %(limit)s",
    "dead_oldest": "SELECT data::text, attempts, last_error, dead_at FROM {s}.outbox"
    " WHERE status = 'dead' AND (%(after)s::timestamptz IS NULL"
    "  OR (dead_at, key) > (%(after)s::timestamptz, %(key)s::text))"
    " ORDER BY dead_at, key LIMIT %(limit)s",
    # The attempts so far of the pending messages among some, locked in key order (two
    # calls recording results for the same messages never deadlock).
    "outbox_attempts": "SELECT key, attempts FROM {s}.outbox"
    " WHERE key = ANY(%b::text[]) AND status = 'pending' ORDER BY key FOR UPDATE",
    "retry_dead": "UPDATE {s}.outbox SET status = 'pending', attempts = 0, available_at = %s,"
    " dead_at = NULL, leased = false WHERE key = %s AND status = 'dead'",
    "discard_dead": "UPDATE {s}.outbox SET status = 'discarded', done_at = %s"
    " WHERE key = %s AND status = 'dead'",
    # With the table's identity (``_check_definitions_table``): the newest row, through the
    # primary key, as cheap as max(generation).
    "generation": "SELECT generation, tableoid FROM {s}.definitions"
    " ORDER BY generation DESC LIMIT 1",
    "load_definitions": "SELECT generation, data, tableoid FROM {s}.definitions"
    " ORDER BY generation DESC LIMIT 1",
    "definitions_at": "SELECT generation, data, tableoid FROM {s}.definitions"
    " WHERE generation = %s",
    # Compare-and-set in one statement: nothing is inserted unless the latest generation is
    # still the expected one; two publishers racing for the same number meet on the primary
    # key, and the second inserts nothing.
    "append_definitions": "INSERT INTO {s}.definitions (generation, data)"
    " SELECT %(next)s, %(data)s"
    " WHERE (SELECT coalesce(max(generation), 0) FROM {s}.definitions) = %(expected)s"
    " ON CONFLICT (generation) DO NOTHING RETURNING generation, tableoid",
    # A detail is counted without the instant it names (see ``cjo.storage.erasure``).
    "activity_counts": "SELECT version, step_id, kind, detail, sum(n)::bigint FROM ("
    f" SELECT version, step_id, kind, {_TIMELESS_DETAIL} AS detail, count(*) AS n"
    "  FROM {s}.activity WHERE journey_id = %(j)s GROUP BY version, step_id, kind, 4"
    " UNION ALL SELECT version, step_id, kind, detail, count FROM {s}.activity_totals"
    "  WHERE journey_id = %(j)s"
    ") AS t GROUP BY version, step_id, kind, detail",
    # A pre-filter only: every record with an enrollment of the journey contains its id as a
    # JSON string; the records found are decoded to count exactly. A window of the next ids
    # in key order, with the record only where it may match: filtered in the WHERE clause, the
    # planner reads and sorts every record after the cursor for each page (a walk quadratic
    # in the records that name the journey, ended enrollments included).
    "enrolled_candidates": "SELECT customer_id, CASE WHEN aside IS NULL AND"
    " (strpos(data, %s) > 0 OR strpos(data, %s) > 0) THEN data END FROM {s}.customers"
    " WHERE customer_id > %s ORDER BY customer_id LIMIT %s",
    "active_candidates": "SELECT customer_id, data FROM {s}.customers"
    " WHERE strpos(data, %s) > 0 OR strpos(data, %s) > 0",
    # Of those, the records that hold an enrollment held by a pause (``hold``: its held_at).
    "held_candidates": "SELECT customer_id, data FROM {s}.customers"
    """ WHERE (strpos(data, %s) > 0 OR strpos(data, %s) > 0) AND strpos(data, '"hold":') > 0""",
    "erase_lock": "SELECT pg_advisory_xact_lock(" + _KEY.replace("{col}", "%s") + ")",
    "erase_record": "DELETE FROM {s}.customers WHERE customer_id = %s",
    "erase_outbox": "DELETE FROM {s}.outbox WHERE customer_id = %s",
    "erased_enrollments": "SELECT DISTINCT enrollment_id FROM {s}.activity WHERE customer_id = %s",
    # Each enrollment id becomes its pseudonym (see ``cjo.storage.erasure``); the customer id
    # becomes "" as on the other adapters, so that asking for "" finds erased entries.
    "erase_activity": "UPDATE {s}.activity AS a SET customer_id = '', enrollment_id = r.new,"
    " detail = CASE WHEN a.kind = ANY(%s::text[])"
    f" AND NOT {KEPT_DETAILS_SQL}"
    " THEN NULL ELSE a.detail END"
    " FROM unnest(%s::text[], %s::text[]) AS r (old, new)"
    " WHERE a.customer_id = %s AND a.enrollment_id = r.old",
    "erase_members": "DELETE FROM {s}.segment_members WHERE customer_id = %s",
    # The claims of the customer's schedule entries (``cjo.storage.erasure``): a key range.
    "erase_claims": "DELETE FROM {s}.events WHERE event_id >= %s AND event_id < %s"
    " AND right(event_id, %s) = %s",
    "members_clear": "DELETE FROM {s}.segment_members WHERE customer_id = ANY(%b::text[])",
    "members_leave": "DELETE FROM {s}.segment_members AS m"
    " USING unnest(%b::text[], %b::text[]) AS u (sid, cid)"
    " WHERE m.segment_id = u.sid AND m.customer_id = u.cid",
    "members_enter": "INSERT INTO {s}.segment_members (segment_id, customer_id, entered_at)"
    " SELECT * FROM unnest(%b::text[], %b::text[], %b::timestamptz[])"
    " ON CONFLICT (segment_id, customer_id) DO UPDATE SET entered_at = EXCLUDED.entered_at",
    "members_page": "SELECT customer_id FROM {s}.segment_members"
    " WHERE segment_id = %s AND customer_id > %s ORDER BY customer_id LIMIT %s",
    "members_count": "SELECT count(*) FROM {s}.segment_members WHERE segment_id = %s",
    "aside_page": "SELECT customer_id, aside, aside_at FROM {s}.customers"
    " WHERE aside IS NOT NULL AND customer_id > %s ORDER BY customer_id LIMIT %s",
    "customer_page": "SELECT customer_id FROM {s}.customers WHERE customer_id > %s"
    " ORDER BY customer_id LIMIT %s",
    "prune_lock": "SELECT pg_advisory_xact_lock(%s)",
    "prune_events": "DELETE FROM {s}.events WHERE seen_at < %s",
    # All but the newest %s generations (the primary key's range).
    "prune_definitions": "DELETE FROM {s}.definitions WHERE generation <="
    " (SELECT max(generation) FROM {s}.definitions) - %s",
    "prune_outbox": "DELETE FROM {s}.outbox"
    " WHERE status IN ('delivered', 'discarded') AND done_at < %s",
    # Dropped entries are counted into the totals by the same statement: no instant in which
    # a reader could miss them.
    # A free-text detail is counted as blank (see ``cjo.storage.erasure``).
    "prune_activity": "WITH gone AS (DELETE FROM {s}.activity WHERE at < %s"
    "  RETURNING journey_id, version, step_id, kind,"
    f"  CASE WHEN kind = ANY(%s::text[]) AND NOT {KEPT_DETAILS_SQL} THEN NULL"
    f" ELSE {_TIMELESS_DETAIL} END AS detail),"
    " folded AS (INSERT INTO {s}.activity_totals"
    "  SELECT journey_id, version, step_id, kind, detail, count(*) FROM gone"
    "  GROUP BY journey_id, version, step_id, kind, detail RETURNING count)"
    " SELECT coalesce(sum(count), 0)::bigint FROM folded",
    # Keeps the totals at one row per counted key, however often prune runs.
    # ... and counts folded by an older cjo lose their instants too.
    "compact_totals": "WITH old AS (DELETE FROM {s}.activity_totals"
    f"  RETURNING journey_id, version, step_id, kind, {_TIMELESS_DETAIL} AS detail, count)"
    " INSERT INTO {s}.activity_totals SELECT journey_id, version, step_id, kind, detail,"
    "  sum(count)::bigint FROM old GROUP BY journey_id, version, step_id, kind, detail",
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
def _translated(where: str = "") -> Iterator[None]:
    """Driver errors as cjo's: conflicts (safe to retry) apart from every other failure. The
    one place where psycopg's exceptions are translated; the original is chained. ``where``
    names the storage (``_where``): the server's own words rarely do (a read-only server's
    "cannot execute INSERT in a read-only transaction")."""
    try:
        yield
    except (
        pg_errors.SerializationFailure, pg_errors.DeadlockDetected, pg_errors.LockNotAvailable,
    ) as exc:
        raise ConflictError(f"PostgreSQL{where}: {exc}") from exc
    except psycopg.Error as exc:  # includes psycopg_pool's PoolTimeout and PoolClosed
        raise StorageError(f"PostgreSQL{where}: {exc}") from exc


def _translating(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _translated(getattr(args[0], "_where", "") if args else ""):
            return fn(*args, **kwargs)

    return wrapper


def _where(schema: str, conninfo: str) -> str:
    """`` (schema S on HOST:PORT/DATABASE)`` for errors, from what the connection string sets
    (never its password); a part it leaves to libpq's defaults is left out."""
    params = _dsn_params(conninfo)
    host = params.get("host") or params.get("hostaddr") or ""
    port = params.get("port")
    target = f"{host}:{port}" if host and port else host
    database = params.get("dbname")
    if database:
        target = f"{target}/{database}"
    return f" (schema {schema} on {target})" if target else f" (schema {schema})"


log = logging.getLogger(__name__)

# SQLSTATEs of a session the server ended (its connection is gone, whatever the statement was):
# admin_shutdown (a restart, pg_terminate_backend), crash_shutdown, cannot_connect_now.
# Class 08, connection exceptions, too.
_SESSION_ENDED: Final = frozenset({"57P01", "57P02", "57P03"})

#: How many times in all a call runs when its connection turns out lost before it could commit
#: anything. The first loss has the pool check its idle connections, so a second attempt meets
#: a live one unless the server is still down.
RECONNECT_ATTEMPTS: Final = 3

#: Seconds a call waits for a pooled connection before it checks that the server can be reached
#: at all (a TCP connection, or one to its Unix socket, closed at once): a server that refuses
#: connections fails the call then rather than after the pool's whole ``timeout``, while a
#: reachable one (a busy pool) is waited for until the timeout. Also how long the answer of a
#: check stands for the calls that wait meanwhile.
REACHABILITY_CHECK_AFTER: Final = 1.0

# What a call whose commit was lost tells its caller (a customer transaction: ``_EVENTS_HINT``).
_CHECK_HINT: Final = "check before running it again"
# What a customer transaction whose commit was lost tells its caller.
_EVENTS_HINT: Final = (
    "handling the same events again is safe (an event id is handled once), and a due "
    "customer not committed is claimed again once its lease runs out"
)


def _lost(conn: psycopg.Connection[Any], exc: psycopg.Error) -> bool:
    """Whether ``exc`` says ``conn`` is gone (the server restarted, failed over or ended the
    session) rather than that a statement failed."""
    if conn.broken or conn.closed:
        return True
    state = exc.sqlstate or ""
    return state in _SESSION_ENDED or state.startswith("08")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _outcome_unknown(
    exc: psycopg.Error, what: str, hint: str
) -> CommitOutcomeUnknownError:
    reason = _first_line(exc)
    return CommitOutcomeUnknownError(
        f"PostgreSQL: the connection was lost while committing {what} ({reason}): whether it "
        f"was committed is unknown, so it was not run again; {hint}"
    )


@contextmanager
def _committing(
    conn: psycopg.Connection[Any], what: str, hint: str = _CHECK_HINT
) -> Iterator[None]:
    """Around what sends a COMMIT (or a statement that commits on its own) and waits for the
    answer: a connection lost there may have been lost after the server committed, so the
    call must not be run again as though nothing had happened. Other failures pass through."""
    try:
        yield
    except psycopg.Error as exc:
        if _lost(conn, exc):
            raise _outcome_unknown(exc, what, hint) from exc
        raise


@contextmanager
def _in_transaction(conn: psycopg.Connection[Any], what: str) -> Iterator[None]:
    """``conn.transaction()``, its COMMIT under ``_committing``: a connection lost before the
    block ended rolled it back (the error passes through, for ``_attempt`` to run it again)."""
    ended = False
    try:
        with conn.transaction():
            yield
            ended = True
    except psycopg.Error as exc:
        if ended and _lost(conn, exc):
            raise _outcome_unknown(exc, what, _CHECK_HINT) from exc
        raise


def _rollback_on_error(conn: psycopg.Connection[Any]) -> Callable[..., bool]:
    """An exit callback: roll back what a failed block began, before the connection goes back
    to the pool (which would roll it back too, but with a warning in the log)."""

    def exit_(exc_type: type[BaseException] | None, *_: object) -> bool:
        if exc_type is not None and not conn.broken:
            conn.rollback()  # a no-op when the server already ended the transaction
        return False

    return exit_


def _open_transaction(
    conn: psycopg.Connection[Any], stack: ExitStack
) -> tuple[ExitStack, psycopg.Pipeline | None]:
    """Begin a transaction on ``conn`` in pipeline mode (where libpq has it): ``BEGIN`` goes
    with the statements after it, in one round trip. Returns what ends the pipeline (entered on
    ``stack``, closed by ``_commit``) and the pipeline. A failure rolls back on ``stack``'s
    exit."""
    stack.push(_rollback_on_error(conn))  # exits run last first: after the pipeline's
    ends = stack.enter_context(ExitStack())
    pipeline = ends.enter_context(conn.pipeline()) if psycopg.Pipeline.is_supported() else None
    # BEGIN and COMMIT are sent by hand (every connection is in autocommit while cjo holds it:
    # ``_autocommit_while_held``): psycopg's transaction() would wait for each of them in a
    # round trip of its own.
    conn.execute("BEGIN")
    return ends, pipeline


def _commit(conn: psycopg.Connection[Any], ends: ExitStack, what: str, hint: str) -> None:
    """Commit what ``_open_transaction`` began and end its pipeline (which sends what is queued
    and waits for every answer), under ``_committing``."""
    with _committing(conn, what, hint):
        conn.execute("COMMIT")
        ends.close()


def _autocommit_while_held(conn: psycopg.Connection[Any], stack: ExitStack) -> None:
    """Put ``conn`` in autocommit until ``stack`` exits, when it is not (a pool the host passed
    in, of psycopg's default connections). Every call then commits where cjo's own pools commit,
    inside ``_attempt``: on a connection not in autocommit, the pool would commit a call's
    implicit transaction only as the connection went back, after the call's retries were
    over, and a connection lost there would fail the call (or, for delivery results, leave it
    unknown whether they were recorded). The connection goes back as it came."""
    if conn.autocommit:
        return
    conn.autocommit = True  # refused unless idle: a pool hands out idle connections

    def give_back() -> None:
        if conn.closed or conn.broken:
            return  # the pool discards it
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
            conn.autocommit = False
        except psycopg.Error:
            # Never hand the host's pool a connection in a mode it did not choose: closed, the
            # pool replaces it.
            conn.close()

    stack.callback(give_back)


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows as one list per column (the arrays an ``unnest`` statement takes)."""
    return [list(column) for column in zip(*rows, strict=True)]


class _Txn:
    """What the sessions of one transaction share: the connection, the records read when it
    began, the event ids claimed up front, and the writes buffered until commit."""

    __slots__ = (
        "_conn", "activity", "announced", "aside", "fresh", "members", "members_before", "now",
        "outbox", "records", "saved", "storage",
    )

    def __init__(
        self, storage: PostgresStorage, conn: psycopg.Connection[Any], now: datetime
    ) -> None:
        self.storage = storage
        self._conn: psycopg.Connection[Any] | None = conn
        self.now = now
        self.records: dict[str, str] = {}
        # Announced event ids, and those the up-front claim inserted and claim_event has not
        # handed out yet.
        self.announced: frozenset[str] = frozenset()
        self.fresh: set[str] = set()
        # customer id -> (state, wake_at, revision, encoded record); the last save wins.
        self.saved: dict[str, tuple[CustomerState, datetime | None, int, str]] = {}
        self.aside: dict[str, str] = {}
        self.activity: list[tuple[Any, ...]] = []
        self.outbox: dict[str, tuple[str, str, str]] = {}
        # Segment memberships of the records as read (to write only what a save changes).
        self.members_before: dict[str, dict[str, datetime]] = {}
        self.members: dict[str, dict[str, datetime]] = {}  # as saved; the last save wins

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            # The connection is back in the pool, perhaps serving someone else by now.
            raise StorageError("a customer session was used after its transaction ended")
        return self._conn

    def check_open(self) -> None:
        self.conn  # noqa: B018  (the property refuses a transaction that ended)

    def end(self) -> None:
        self._conn = None

    def begin(self, customer_ids: list[str], claims: Sequence[tuple[str, str]]) -> None:
        """Locks, up-front event claims and the records, pipelined: one round trip. Each read
        runs after the locks are granted and takes its own snapshot, so it sees what the
        previous holder committed."""
        q = self.storage._q
        conn = self.conn
        conn.execute(q["lock"], [customer_ids])
        claimed = None
        if claims:
            # Sorted: two transactions announcing the same ids insert them in the same order.
            announced = sorted({eid for _cid, eid in claims})
            self.announced = frozenset(announced)
            claimed = conn.execute(q["claim_events"], (self.now, announced))
        records = conn.execute(q["records"], [customer_ids])
        if claimed is not None:
            self.fresh = {eid for (eid,) in claimed.fetchall()}
        self.records = dict(records.fetchall())

    def claim_due(self, by: datetime, limit: int, until: datetime) -> list[str]:
        """Claim the customers due by ``by``, leased ``until``, lock them and read their
        records: one round trip. Returns their ids in order of wake-up."""
        cursor = self.conn.execute(
            self.storage._q["due_batch"], {"now": by, "until": until, "limit": limit}
        )
        rows = cursor.fetchall()
        # UPDATE ... RETURNING comes back in no particular order.
        rows.sort(key=lambda r: (r[1], r[0]))
        self.records = {cid: data for cid, _wake, data in rows}
        return [cid for cid, _wake, _data in rows]

    def flush(self) -> None:
        """Send the buffered writes, one statement per table (answers are not waited for)."""
        q = self.storage._q
        conn = self.conn
        if self.fresh:
            # Announced but never claimed by the caller: as if never claimed.
            conn.execute(q["unclaim_events"], [sorted(self.fresh)])
        if self.saved:
            conn.execute(q["save"], _columns([
                (cid, wake_at, revision, data)
                for cid, (_state, wake_at, revision, data) in self.saved.items()
            ]))
        if self.members:
            self.flush_members()
        if self.aside:
            conn.execute(q["set_aside"], {"ids": list(self.aside), "reasons": [
                *self.aside.values()
            ], "now": self.now})
        if self.activity:
            conn.execute(q["insert_activity"], _columns(self.activity))
        if self.outbox:
            now = self.now
            conn.execute(
                q["insert_outbox"],
                [now, now + self.storage.dispatch_lease, *_columns(list(self.outbox.values()))],
            )

    def flush_members(self) -> None:
        q = self.storage._q
        conn = self.conn
        unknown: list[str] = []
        left: list[tuple[str, str]] = []
        entered: list[tuple[str, str, datetime]] = []
        for cid, after in self.members.items():
            before = self.members_before.get(cid)
            if before is None:
                unknown.append(cid)
            gone, new = membership_changes(before, after)
            left.extend((sid, cid) for sid in gone)
            entered.extend((sid, cid, at) for sid, at in new)
        if unknown:
            conn.execute(q["members_clear"], [unknown])
        if left:
            conn.execute(q["members_leave"], _columns(left))
        if entered:
            conn.execute(q["members_enter"], _columns(entered))

    def committed(self) -> None:
        # As the reference adapter does: a saved record's revision counts the write once it
        # is committed.
        for state, _wake_at, revision, _data in self.saved.values():
            state.revision = revision
        if self.saved:
            self.storage._records.put(
                (cid, data, state, revision)
                for cid, (state, _wake_at, revision, data) in self.saved.items()
            )


class _Session(CustomerSession):
    __slots__ = ("_txn", "customer_id")

    def __init__(self, txn: _Txn, customer_id: str) -> None:
        self._txn = txn
        self.customer_id = customer_id

    @_translating
    def claim_event(self, event_id: str) -> bool:
        txn = self._txn
        conn = txn.conn
        if event_id in txn.announced:
            if event_id in txn.fresh:
                txn.fresh.discard(event_id)
                return True
            return False  # handled before, or already handed out in this transaction
        cursor = conn.execute(txn.storage._q["claim_event"], (event_id, txn.now))
        return cursor.fetchone() is not None

    def load(self) -> CustomerState | None:
        txn = self._txn
        txn.check_open()
        saved = txn.saved.get(self.customer_id)
        # Decoded (or copied from the record cache) on every call: the caller owns (and
        # changes) what it gets.
        text = saved[3] if saved is not None else txn.records.get(self.customer_id)
        state = None
        if text is not None:
            if saved is None:
                state = txn.storage._records.get(self.customer_id, text)
            if state is None:
                state = decode_state(text, self.customer_id)
        if saved is None and self.customer_id not in txn.members_before:
            txn.members_before[self.customer_id] = (
                dict(state.segments) if state is not None else {}
            )
        return state

    def save(
        self, state: CustomerState, messages: Sequence[Message], activities: Sequence[Activity]
    ) -> None:
        txn = self._txn
        txn.check_open()
        cid = self.customer_id
        self.check_owner(state)
        # Encoded now: the caller may go on changing its objects.
        revision = state.revision + 1
        data = encode_state(state, revision)
        txn.saved[cid] = (state, state.wake_at, revision, data)
        if state.segments or txn.members_before.get(cid):
            txn.members[cid] = dict(state.segments)
        else:
            txn.members.pop(cid, None)  # none before, none now: nothing to write
        rows = txn.activity
        for a in activities:
            rows.append((
                a.at, a.customer_id, a.enrollment_id, a.journey_id, a.version, a.step_id,
                a.kind, a.detail, a.channel, a.content_id, a.content_version,
            ))
        outbox = txn.outbox
        for m in messages:
            if m.idempotency_key not in outbox:  # the first message with a key wins
                outbox[m.idempotency_key] = (m.idempotency_key, m.customer_id, encode_message(m))

    def set_aside(self, reason: str) -> None:
        txn = self._txn
        txn.check_open()
        txn.aside[self.customer_id] = reason


def _dsn_params(dsn: str) -> dict[str, Any]:
    """The parameters ``dsn`` sets (none when libpq cannot read it: the pool reports that)."""
    try:
        return conninfo_to_dict(dsn)
    except psycopg.Error:
        return {}


def check_schema_name(schema: object) -> None:
    """``StorageError`` unless ``schema`` can name cjo's schema."""
    if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema):
        raise StorageError(
            f"invalid schema name {schema!r}: use letters, digits and underscores "
            "(at most 63, not starting with a digit)"
        )


def check_connection(
    dsn: str, timeout: float = 10.0, connect_kwargs: Mapping[str, Any] | None = None
) -> None:
    """Connect once (with ``connect_kwargs``) and hang up: raises ``StorageError`` with the
    server's reason (refused, unknown host, bad password, a DSN libpq cannot read) at once. A
    pool would instead retry in the background, logging each failure, until its ``timeout``,
    and then report only the wait."""
    _connect(dsn, timeout, connect_kwargs).close()


def _connect(
    dsn: str, timeout: float, connect_kwargs: Mapping[str, Any] | None
) -> psycopg.Connection[Any]:
    kwargs = {"connect_timeout": max(1, round(timeout)), **(connect_kwargs or {})}
    try:
        return psycopg.connect(dsn, **kwargs)
    except psycopg.Error as exc:
        raise StorageError(f"PostgreSQL: {_first_line(exc)}") from exc


@functools.cache
def _libpq_default_host() -> str:
    """Where libpq connects when nothing names a host: the Unix socket directory it was built
    with (``/var/run/postgresql`` on Debian, ``/tmp`` upstream), or ``localhost`` where it has
    no Unix sockets; "" if it does not say. Asked of libpq itself, with a connection to port 1
    begun and dropped at once: an empty host and address keep PGHOST, PGHOSTADDR and services
    out of it, and no server has a socket for that port, so nothing reaches one."""
    conn = psycopg.pq.PGconn.connect_start(b"host='' hostaddr='' port=1")
    try:
        return (conn.host or b"").decode(errors="replace")
    finally:
        conn.finish()


def _unreachable(pool: ConnectionPool[Any], timeout: float) -> str | None:
    """Why nothing accepts connections where ``pool`` connects (at any of its hosts, when it
    names several), else None; None too when this cannot tell where that is (a service file,
    an abstract socket). A DSN that names no host is checked at libpq's default (its socket
    directory). Each host is tried for a share of ``timeout`` with a bare TCP connection (or
    one to its Unix socket), closed before a byte is sent: PostgreSQL logs nothing for it."""
    conninfo = pool.conninfo() if callable(pool.conninfo) else pool.conninfo
    kwargs = pool.kwargs() if callable(pool.kwargs) else pool.kwargs or {}
    where = {k: kwargs[k] for k in ("host", "hostaddr", "port") if kwargs.get(k) is not None}
    try:
        given = conninfo_to_dict(conninfo or "", **where)
        hosts = conninfo_attempts(given)
    except psycopg.Error as exc:  # no host name resolves
        return f"PostgreSQL: the server is unreachable: {_first_line(exc)}"
    failures: list[str] = []
    for params in hosts:
        host = str(params.get("host") or os.environ.get("PGHOST") or "")
        address = str(params.get("hostaddr") or os.environ.get("PGHOSTADDR") or host)
        try:
            port = int(params.get("port") or os.environ.get("PGPORT") or 5432)
        except ValueError:
            return None  # a port list libpq reads and this does not: as the pool decides
        if not address:
            if given.get("service") or os.environ.get("PGSERVICE"):
                return None  # its service file may name a host: libpq reads it, this does not
            host = address = _libpq_default_host()
        if not address or address.startswith("@"):
            return None
        share = max(timeout / len(hosts), 0.1)
        try:
            if address.startswith("/"):
                named = os.path.join(address, f".s.PGSQL.{port}")
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.settimeout(share)
                    sock.connect(named)
            else:
                named = f"{host or address}:{port}"
                socket.create_connection((address, port), share).close()
        except OSError as exc:
            failures.append(f"{named} ({exc.strerror or exc})")
            continue
        return None
    return (
        f"PostgreSQL: the server is unreachable at {', '.join(failures)}, and the pool has no "
        "connection to it"
    )


def holds_schema(dsn: str, schema: str = "cjo", timeout: float = 10.0) -> bool:
    """Whether ``schema`` holds cjo's tables. Read only: a ``PostgresStorage`` would create
    them (and the schema). Connection failures raise as ``check_connection``'s do."""
    check_schema_name(schema)
    with _connect(dsn, timeout, None) as conn, _translated(_where(schema, dsn)):
        row = conn.execute(
            "SELECT to_regclass(format('%%I.schema_version', %s::text))", [schema]
        ).fetchone()
    return row is not None and row[0] is not None


def _check_pool_options(
    dsn: object, min_size: object, max_size: object, timeout: object, pool: object
) -> None:
    """``UsageError`` for options the pool would refuse with a bare error, or (a DSN that is
    not text) retry until its timeout runs out."""
    if pool is not None:
        return  # the host's pool: cjo neither configures nor opens it
    if not isinstance(dsn, str):
        raise UsageError(f"dsn must be a connection string, got {type(dsn).__name__}")
    sizes: list[int] = []
    for name, value, least in (("min_size", min_size, 0), ("max_size", max_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UsageError(f"{name} must be an int >= {least}, got {value!r}")
        sizes.append(value)
    if sizes[1] < sizes[0]:
        raise UsageError(f"max_size ({sizes[1]}) must be at least min_size ({sizes[0]})")
    if (
        isinstance(timeout, bool) or not isinstance(timeout, int | float)
        or not 0 < timeout < math.inf
    ):
        raise UsageError(f"timeout must be a positive number of seconds, got {timeout!r}")


class PostgresStorage(Storage):
    """Storage in PostgreSQL (psycopg 3 and a ``psycopg_pool.ConnectionPool``).

    ``dsn`` is a libpq connection string or URL. ``schema`` holds cjo's tables (created and
    migrated on construction). Pass ``pool`` to share a pool you own: cjo then neither
    configures nor closes it; a connection not in autocommit (psycopg's default) is put in
    autocommit while cjo holds it, and goes back as it came (cjo begins and commits its own
    transactions). ``timeout`` is how long a call waits for a free connection.
    Connections are tagged with ``application_name`` (visible in ``pg_stat_activity``): the
    one given, else the DSN's, else ``cjo``;
    ``connect_kwargs`` go to every connection (``{"prepare_threshold": None}`` behind
    PgBouncer in transaction mode, ``{"options": "-c lock_timeout=10s"}``...).
    ``record_cache`` is how many customers' last committed records are kept decoded, so that
    reading one back skips decoding it (``cjo.storage.record_cache``; 0 keeps none).

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
        application_name: str | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
        record_cache: int = DEFAULT_RECORD_CACHE,
    ) -> None:
        self._records = RecordCache(record_cache)
        _check_pool_options(dsn, min_size, max_size, timeout, pool)
        check_schema_name(schema)
        self.schema = schema
        # A host's pool may build its connection string per connection (a callable): then
        # only the schema is named.
        conninfo = dsn if pool is None else pool.conninfo
        self._where = _where(schema, conninfo if isinstance(conninfo, str) else "")
        prefix = sql.Literal(schema + "\x1f")
        self._q: dict[str, sql.Composed] = {
            name: sql.SQL(text).format(s=sql.Identifier(schema), prefix=prefix)
            for name, text in _QUERIES.items()
        }
        self._owns_pool = pool is None
        if pool is None:
            kwargs: dict[str, Any] = {"autocommit": True}
            if application_name is not None or "application_name" not in _dsn_params(dsn):
                # A keyword argument would override the DSN's own.
                kwargs["application_name"] = application_name or "cjo"
            kwargs.update(connect_kwargs or {})
            check_connection(dsn, timeout, kwargs)
            with _translated(self._where):
                pool = ConnectionPool(
                    dsn, min_size=min_size, max_size=max_size, kwargs=kwargs, timeout=timeout,
                    open=True, name=f"cjo-{schema}",
                )
        self._pool: ConnectionPool[Any] = pool
        self._closed = False
        # The last check that the server can be reached (``_check_reachable``).
        self._reach_lock = threading.Lock()
        self._reach_until = -math.inf
        self._unreachable: str | None = None
        # The table definitions were last read from (its oid), once it held any.
        self._definitions_table: int | None = None
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
        # Safe to run again on another connection when one is lost: it reads the version first
        # (after a lost COMMIT that went through, it then finds the schema migrated).
        return self._run(self._migrate)

    def _migrate(self, conn: psycopg.Connection[Any]) -> int:
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
        if found == 1:
            log.warning(DROPPING_LAYOUT_1, f"schema {self.schema}")
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

    # --- connections -------------------------------------------------------------------------

    def _attempt(
        self, unit: Callable[[psycopg.Connection[Any], ExitStack], R]
    ) -> tuple[R, ExitStack]:
        """Run ``unit`` on a pooled connection; where the connection turns out lost (the server
        restarted, failed over, ended the session) before ``unit`` could commit anything, run it
        again on another, up to ``RECONNECT_ATTEMPTS`` times in all. ``unit`` gets the
        connection and a stack to enter what must stay open with it; returns its result and
        that stack, which gives the connection back to the pool on exit.

        ``unit`` must commit nothing before it is done, or raise what it commits under
        ``_committing``, which is not run again, or be safe to run again whatever it
        committed. The connection is in autocommit (``_autocommit_while_held``), so what
        ``unit`` commits it commits inside this loop. A broken connection goes back to the
        pool, which closes it and opens another."""
        attempt = 1
        while True:
            conn: psycopg.Connection[Any] | None = None
            try:
                with ExitStack() as stack:
                    conn = self._pooled(stack)
                    _autocommit_while_held(conn, stack)
                    stack.push(self._check_pool_if_lost(conn))
                    return unit(conn, stack), stack.pop_all()
            except psycopg.Error as exc:
                # Not when no connection came (the pool's timeout already waited for one).
                if conn is None or attempt >= RECONNECT_ATTEMPTS or not _lost(conn, exc):
                    raise
            attempt += 1

    def _pooled(self, stack: ExitStack) -> psycopg.Connection[Any]:
        """A connection from the pool, entered on ``stack`` (whose exit gives it back). After
        ``REACHABILITY_CHECK_AFTER`` seconds without one, a server that cannot be reached
        fails the call with ``StorageError``; a reachable one is waited for until the pool's
        ``timeout``, as the pool would."""
        pool = self._pool
        first = min(pool.timeout, REACHABILITY_CHECK_AFTER)
        try:
            return stack.enter_context(pool.connection(first))
        except PoolTimeout:
            if first >= pool.timeout:
                raise
        self._check_reachable(pool.timeout - first)
        try:
            return stack.enter_context(pool.connection(pool.timeout - first))
        except PoolTimeout:
            # The wait in all, as the pool itself would say.
            raise PoolTimeout(f"couldn't get a connection after {pool.timeout:.2f} sec") from None

    def _check_reachable(self, timeout: float) -> None:
        """``StorageError`` naming the server's address (never the password) when nothing
        accepts connections there. One check at a time; its answer stands for
        ``REACHABILITY_CHECK_AFTER`` seconds, so that calls waiting together (a busy pool)
        cost the server one connection a second at most."""
        with self._reach_lock:
            now = time.monotonic()
            if now >= self._reach_until:
                self._unreachable = _unreachable(self._pool, timeout)
                self._reach_until = time.monotonic() + REACHABILITY_CHECK_AFTER
            unreachable = self._unreachable
        if unreachable is not None:
            raise StorageError(unreachable)

    def _check_pool_if_lost(self, conn: psycopg.Connection[Any]) -> Callable[..., bool]:
        """An exit callback: after a failure that lost ``conn``, have the pool check its idle
        connections (a round trip each) and replace the dead. A restart or failover ends every
        connection the pool holds, and each would otherwise fail once: neither another attempt
        nor the calls after this one meet them."""

        def exit_(exc_type: type[BaseException] | None, *_: object) -> bool:
            if exc_type is not None and (conn.broken or conn.closed) and not self._pool.closed:
                self._pool.check()
            return False

        return exit_

    def _run(self, unit: Callable[[psycopg.Connection[Any]], R]) -> R:
        """``_attempt`` for a unit that needs its connection only while it runs."""
        result, held = self._attempt(lambda conn, _stack: unit(conn))
        held.close()
        return result

    def _rows(self, query: sql.Composed, params: Any = None) -> list[Any]:
        """The rows of a statement that may run twice: a read, a claim (a claim whose answer
        was lost leases its rows until the lease runs out, no longer) or a write that does the
        same again."""
        return self._run(lambda conn: conn.execute(query, params).fetchall())

    def _row(self, query: sql.Composed, params: Any = None) -> Any:
        """``_rows``'s first row, or None."""
        return self._run(lambda conn: conn.execute(query, params).fetchone())

    def _write_once(
        self, what: str, unit: Callable[[psycopg.Connection[Any]], R], hint: str = _CHECK_HINT
    ) -> R:
        """Run ``unit``, a write that must not run twice, in a transaction of its own: ``BEGIN``
        and ``unit``'s statements go in one round trip, and their answers are awaited before
        the ``COMMIT`` is sent. A connection lost until then lost the transaction, so the call
        runs again on another (``_attempt``); one lost at the ``COMMIT`` raises
        ``CommitOutcomeUnknownError`` with ``hint``. Returns what ``unit`` returned (a
        cursor's rowcount is known by then)."""

        def once(conn: psycopg.Connection[Any], stack: ExitStack) -> R:
            ends, pipeline = _open_transaction(conn, stack)
            result = unit(conn)
            if pipeline is not None:
                pipeline.sync()
            _commit(conn, ends, what, hint)
            return result

        result, held = self._attempt(once)
        held.close()
        return result

    # --- customer transactions ---------------------------------------------------------------

    def _begin(
        self, conn: psycopg.Connection[Any], stack: ExitStack, now: datetime,
        start: Callable[[_Txn], R],
    ) -> tuple[_Txn, ExitStack, R]:
        """Open the pipeline and the transaction on ``conn`` and run ``start`` (the locks and
        reads, whose answers come in the first round trip). Nothing is committed yet, so a
        connection lost here is safe to try again (``_attempt``). Returns the transaction, what
        ends the pipeline (the commit closes it: the pipeline's Sync carries the COMMIT), and
        what ``start`` returned."""
        ends, _pipeline = _open_transaction(conn, stack)
        txn = _Txn(self, conn, now)
        stack.callback(txn.end)
        return txn, ends, start(txn)

    @contextmanager
    def _transaction(self, now: datetime, start: Callable[[_Txn], R]) -> Iterator[R]:
        """One pipelined transaction: ``BEGIN`` and ``start``'s statements (up to the first
        answer it needs) share a round trip; the buffered writes share the one of ``COMMIT``.
        Yields what ``start`` returned. The start runs again on another connection when the
        first was lost (``_attempt``); the caller's block never runs twice."""
        with _translated(self._where):
            (txn, pipeline, started), held = self._attempt(
                lambda conn, stack: self._begin(conn, stack, now, start)
            )
            with held:
                yield started
                # Reached only when the block raised nothing.
                txn.flush()  # a connection lost here lost the transaction: nothing committed
                _commit(txn.conn, pipeline, "a customer transaction", _EVENTS_HINT)
            txn.committed()

    @contextmanager
    def batch(
        self, customer_ids: Sequence[str], now: datetime, *, claims: Sequence[tuple[str, str]] = ()
    ) -> Iterator[Mapping[str, CustomerSession]]:
        now = ensure_aware(now, "now")
        ids = sorted(set(customer_ids))

        def start(txn: _Txn) -> Mapping[str, CustomerSession]:
            txn.begin(ids, claims)
            return {cid: _Session(txn, cid) for cid in ids}

        with self._transaction(now, start) as sessions:
            yield sessions

    @_translating
    def peek(self, customer_id: str) -> CustomerState | None:
        row = self._row(self._q["peek"], [customer_id])
        if row is None:
            return None
        return self._records.get(customer_id, row[0]) or decode_state(row[0], customer_id)

    @_translating
    def peek_many(self, customer_ids: Sequence[str]) -> dict[str, CustomerState]:
        """``peek`` for several customers in one round trip (a group's relevance check need
        not cost a round trip per event). Unknown and undecodable records are left out."""
        rows = self._rows(self._q["records"], [list(set(customer_ids))])
        out: dict[str, CustomerState] = {}
        cached = self._records.get
        for cid, data in rows:
            try:
                out[cid] = cached(cid, data) or decode_state(data, cid)
            except CorruptRecordError:
                continue
        return out

    # --- wake-ups ----------------------------------------------------------------------------

    @_translating
    def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[DueCustomer]:
        now = ensure_aware(now, "now")
        rows = self._rows(
            self._q["claim_due"], {"now": now, "until": now + lease, "limit": limit}
        )
        # UPDATE ... RETURNING comes back in no particular order.
        rows.sort(key=lambda r: (r[1], r[0]))
        return [DueCustomer(cid, _utc(wake_at)) for cid, wake_at in rows]

    @contextmanager
    def due_batch(
        self, now: datetime, limit: int, lease: timedelta, *, due: datetime | None = None
    ) -> Iterator[Mapping[str, CustomerSession]]:
        # Claimed and locked inside the transaction (two round trips in all). The lease is
        # committed with the work: a customer that was claimed but not saved (a wake-up this
        # engine cannot handle yet) is not claimed again before it runs out.
        now, by = claim_instants(now, due)

        def start(txn: _Txn) -> Mapping[str, CustomerSession]:
            ids = txn.claim_due(by, limit, now + lease)
            return {cid: _Session(txn, cid) for cid in ids}

        with self._transaction(now, start) as sessions:
            yield sessions

    @_translating
    def next_wake_at(self) -> datetime | None:
        row = self._row(self._q["next_wake_at"])
        return None if row is None else _utc_or_none(row[0])

    # --- outbox ------------------------------------------------------------------------------

    @_translating
    def next_outbox_at(self) -> datetime | None:
        row = self._row(self._q["next_outbox_at"])
        return None if row is None else _utc_or_none(row[0])

    @_translating
    def claim_outbox(
        self, now: datetime, limit: int, lease: timedelta, *,
        channels: Collection[str] | None = None,
    ) -> list[Message]:
        now = ensure_aware(now, "now")
        wanted = channel_filter(channels)
        if wanted == ():
            return []
        params: dict[str, Any] = {"now": now, "until": now + lease, "limit": limit}
        if wanted is not None:
            params["channels"] = list(wanted)
        rows = self._rows(self._q["claim_outbox" if wanted is None else "claim_outbox_of"], params)
        rows.sort(key=lambda r: r[0])
        return [decode_message(data) for _, data in rows]

    @_translating
    def pending_by_channel(self) -> dict[str, int]:
        rows = self._rows(self._q["pending_by_channel"])
        return {channel: int(n) for channel, n in rows}

    @_translating
    def complete_outbox(
        self, key: str, result: DeliveryResult, now: datetime, retry_at: datetime | None = None
    ) -> None:
        self.complete_outbox_many([Delivery(key, result, retry_at)], now)

    @_translating
    def complete_outbox_many(self, deliveries: Sequence[Delivery], now: datetime) -> None:
        now = ensure_aware(now, "now")
        if not deliveries:
            return
        rows = [
            (d.outbox_status, d.retry_at or now, d.result.error, now, d.key) for d in deliveries
        ]
        keys = sorted({key for *_, key in rows})
        # The attempts of each pending message as the first run to read them found them: a
        # run again after a lost COMMIT updates only the messages still at that count, so
        # what the first run committed (its answer lost) is not counted twice, however the
        # lease stands now (another process may have claimed the message since), and what it
        # did not commit is recorded, leased or not. A message another process recorded a
        # result for in between is left as that process left it.
        first: dict[str, int] | None = None

        def record(conn: psycopg.Connection[Any], stack: ExitStack) -> None:
            nonlocal first
            ends, pipeline = _open_transaction(conn, stack)
            # This commit need not wait for the disk: if the server loses it, the messages are
            # pending again and go out once more under the same idempotency keys, which
            # channels de-duplicate. A group then costs one flush (its own), not two.
            conn.execute("SET LOCAL synchronous_commit TO OFF")
            found = conn.execute(self._q["outbox_attempts"], [keys])
            if pipeline is not None:
                pipeline.sync()
            read = {key: int(n) for key, n in found.fetchall()}
            # Nothing of this call was sent before an answer to this read came: the first
            # read answered is the state before any of its writes.
            if first is None:
                first = read
            seen: dict[str, int] = {}
            todo: list[tuple[Any, ...]] = []
            for st, av, err, done, key in rows:
                if key not in first:
                    continue  # not pending (delivered, dead, unknown): as before
                # A key twice: each attempt follows the one before.
                n = first[key] + seen.get(key, 0)
                seen[key] = seen.get(key, 0) + 1
                todo.append((st, av, err, done, key, n))
            if todo:
                if len(seen) == len(todo):
                    columns = _columns(todo)
                    conn.execute(self._q["complete_outbox_many"], dict(zip(
                        ("st", "av", "err", "done", "keys", "n"), columns, strict=True
                    )))
                else:
                    # One joined UPDATE would apply only one attempt of a key.
                    with conn.cursor() as cur:
                        cur.executemany(self._q["complete_outbox"], [
                            {"st": st, "av": av, "err": err, "done": done, "k": k, "n": n}
                            for st, av, err, done, k, n in todo
                        ])
            # Not under ``_committing``: a connection lost at the COMMIT runs all of it again
            # (``_attempt``), the compare-and-set above making that safe.
            conn.execute("COMMIT")
            ends.close()

        _result, held = self._attempt(record)
        held.close()

    @_translating
    def outbox_entry(self, key: str) -> OutboxEntry | None:
        row = self._row(self._q["outbox_entry"], [key])
        if row is None:
            return None
        data, status, attempts, available_at, last_error, leased = row
        return OutboxEntry(decode_message(data), status, attempts, _utc(available_at),
                           last_error, leased)

    @_translating
    def customer_outbox(self, customer_id: str) -> list[OutboxEntry]:
        rows = self._rows(self._q["customer_outbox"], [customer_id])
        return [
            OutboxEntry(decode_message(data), status, attempts, _utc(available_at),
                        last_error, leased)
            for data, status, attempts, available_at, last_error, leased in rows
        ]

    @_translating
    def defer_outbox(self, key: str, until: datetime, now: datetime) -> None:
        until = ensure_aware(until, "until")
        self._run(lambda conn: conn.execute(self._q["defer_outbox"], [until, key]))

    @_translating
    def release_outbox(self, keys: Sequence[str], now: datetime) -> None:
        now = ensure_aware(now, "now")
        if not keys:
            return
        self._run(lambda conn: conn.execute(self._q["release_outbox"],
                                            {"now": now, "keys": list(keys)}))

    # --- dead letters ------------------------------------------------------------------------

    @_translating
    def dead_letters(
        self,
        limit: int,
        *,
        after: tuple[datetime, str] | None = None,
        newest_first: bool = True,
    ) -> list[DeadLetter]:
        params = {
            "after": None if after is None else ensure_aware(after[0], "after"),
            "key": None if after is None else after[1],
            "limit": limit,
        }
        query = self._q["dead_newest" if newest_first else "dead_oldest"]
        rows = self._rows(query, params)
        return [
            DeadLetter(decode_message(data), attempts, error, _utc(dead_at))
            for data, attempts, error, dead_at in rows
        ]

    @_translating
    def retry_dead_letter(self, key: str, now: datetime) -> bool:
        now = ensure_aware(now, "now")
        # Not run again after a lost COMMIT: a second run would answer False for a letter the
        # first one retried.
        return self._write_once("the retry of a dead letter", lambda conn: conn.execute(
            self._q["retry_dead"], [now, key]
        )).rowcount == 1

    @_translating
    def discard_dead_letter(self, key: str, now: datetime) -> bool:
        now = ensure_aware(now, "now")
        return self._write_once("the discarding of a dead letter", lambda conn: conn.execute(
            self._q["discard_dead"], [now, key]
        )).rowcount == 1

    # --- set-aside records -------------------------------------------------------------------

    @_translating
    def records_set_aside(self, limit: int, *, after: str | None = None) -> list[SetAsideRecord]:
        rows = self._rows(self._q["aside_page"], [after or "", limit])
        return [
            SetAsideRecord(cid, reason, None if at is None else _utc(at))
            for cid, reason, at in rows
        ]

    # --- definitions -------------------------------------------------------------------------

    @_translating
    def definitions_generation(self) -> int:
        row = self._row(self._q["generation"])
        self._check_definitions_table(None if row is None else row[-1])
        return int(row[0]) if row else 0

    @_translating
    def load_definitions(self) -> tuple[int, str] | None:
        row = self._row(self._q["load_definitions"])
        self._check_definitions_table(None if row is None else row[-1])
        return None if row is None else (int(row[0]), str(row[1]))

    def _check_definitions_table(self, table: int | None) -> None:
        """``StorageError`` if the definitions table is not the one this storage read or
        wrote definitions in before (``table``: the table of the newest row, None when it has
        none; prune always keeps one): the schema was dropped and made again (a tenant
        provisioned anew, a restore). Its generations start from 1 again, so an engine would
        take the new definitions of a generation it already ran for the old ones, and run
        those."""
        seen = self._definitions_table
        if seen is None:  # nothing read yet, or the table was empty: this is the table
            self._definitions_table = table
        elif table != seen:
            raise StorageError(
                f"PostgreSQL schema {self.schema!r}: its tables were dropped and made again "
                "since this storage read them; open the storage again"
            )

    @_translating
    def append_definitions(self, expected_generation: int, payload: str) -> int:
        params = {"next": expected_generation + 1, "data": payload,
                  "expected": expected_generation}

        def append(conn: psycopg.Connection[Any]) -> tuple[Any, Any]:
            row = conn.execute(self._q["append_definitions"], params).fetchone()
            if row is not None:
                return row, None
            return None, conn.execute(self._q["generation"]).fetchone()

        generation = expected_generation + 1
        hint = (f"load the definitions before publishing again (generation {generation} holds "
                "these if they were committed)")
        try:
            row, latest = self._write_once("the definitions", append, hint)
        except CommitOutcomeUnknownError as unknown:
            # Run again, the compare-and-set would refuse its own write if it was committed:
            # the generation it wrote says. Definitions another process wrote there, the same
            # to the byte, would do as well.
            try:
                stored = self._row(self._q["definitions_at"], [generation])
            except (psycopg.Error, StorageError):
                raise unknown from unknown.__cause__
            if stored is not None and stored[1] == payload:
                row, latest = (stored[0], stored[2]), None
            else:  # not committed: no write of this call is stored
                row, latest = self._write_once("the definitions", append, hint)
        if row is not None:
            self._check_definitions_table(row[1])
            return int(row[0])
        current = int(latest[0]) if latest else 0
        raise ConflictError(
            f"the latest definitions generation is {current}, not {expected_generation}: "
            "another process published since; reload and publish again"
        )

    # --- queries -----------------------------------------------------------------------------

    @_translating
    def activities(
        self,
        start: datetime,
        end: datetime,
        *,
        journey_id: str | None = None,
        customer_id: str | None = None,
    ) -> list[Activity]:
        start, end = ensure_aware(start, "start"), ensure_aware(end, "end")
        where = [sql.SQL("at >= %s AND at < %s")]
        params: list[Any] = [start, end]
        if journey_id is not None:
            where.append(sql.SQL("journey_id = %s"))
            params.append(journey_id)
        if customer_id is not None:
            where.append(sql.SQL("customer_id = %s"))
            params.append(customer_id)
        query = sql.SQL(
            "SELECT at, customer_id, enrollment_id, journey_id, version, step_id, kind, detail,"
            " channel, content_id, content_version FROM {s}.activity WHERE {where} ORDER BY seq"
        ).format(s=sql.Identifier(self.schema), where=sql.SQL(" AND ").join(where))
        rows = self._rows(query, params)
        # An erased customer's entries have lost the id (NULL): read back as "".
        return [
            Activity(_utc(at), cid or "", eid, jid, version, step, kind, detail, channel,
                     content, cver)
            for at, cid, eid, jid, version, step, kind, detail, channel, content, cver in rows
        ]

    @_translating
    def activity_counts(self, journey_id: str) -> list[ActivityCount]:
        rows = self._rows(self._q["activity_counts"], {"j": journey_id})
        return sorted((ActivityCount(journey_id, version, step, kind, detail, int(n))
                       for version, step, kind, detail, n in rows), key=count_order)

    @_translating
    def active_counts(self, journey_id: str) -> dict[tuple[int, str | None], int]:
        return self._enrollment_counts(journey_id, "active_candidates", held=False)

    @_translating
    def held_counts(self, journey_id: str) -> dict[tuple[int, str | None], int]:
        return self._enrollment_counts(journey_id, "held_candidates", held=True)

    def _enrollment_counts(
        self, journey_id: str, query: str, *, held: bool
    ) -> dict[tuple[int, str | None], int]:
        """Active enrollments in the journey per (version, step), all or those ``held``, from
        the records ``query`` finds by their text (decoding decides: a text cast to JSON in
        SQL would fail on a damaged record)."""
        needles = (json.dumps(journey_id), json.dumps(journey_id, ensure_ascii=False))

        def count(conn: psycopg.Connection[Any]) -> dict[tuple[int, str | None], int]:
            out: dict[tuple[int, str | None], int] = {}
            # A server-side cursor: the records are streamed, not all held at once.
            with conn.transaction(), conn.cursor(name="cjo_enrollment_counts") as cursor:
                cursor.itersize = 500
                cursor.execute(self._q[query], needles)
                for cid, data in cursor:
                    try:
                        state = decode_state(data, cid)
                    except CorruptRecordError:
                        continue  # set aside, or about to be: not counted
                    for e in state.enrollments:
                        if e.journey_id == journey_id and (not held or e.held_at is not None):
                            key = (e.version, e.step_id)
                            out[key] = out.get(key, 0) + 1
            return out

        return self._run(count)

    @_translating
    def enrolled_customers(
        self, journey_id: str, *, after: str | None = None, limit: int = 500
    ) -> list[str]:
        needles = journey_needles(journey_id)

        def candidates(cursor: str) -> list[tuple[str, str | None]]:
            return self._rows(self._q["enrolled_candidates"], (*needles, cursor, limit))

        return enrolled_page(candidates, journey_id, after, limit)

    # --- segments ------------------------------------------------------------------------------

    @_translating
    def customer_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        rows = self._rows(self._q["customer_page"], (after or "", limit))
        return [cid for (cid,) in rows]

    @_translating
    def segment_members(
        self, segment_id: str, *, after: str | None = None, limit: int = 1000
    ) -> list[str]:
        rows = self._rows(self._q["members_page"], (segment_id, after or "", limit))
        return [cid for (cid,) in rows]

    @_translating
    def segment_count(self, segment_id: str) -> int:
        row = self._row(self._q["members_count"], (segment_id,))
        return int(row[0]) if row else 0

    # --- customers, retention and settings ---------------------------------------------------

    @_translating
    def erase_customer(self, customer_id: str) -> None:
        q = self._q

        def erase(conn: psycopg.Connection[Any]) -> None:
            with _in_transaction(conn, "the erasure"):
                # Under the customer's lock, so no engine transaction writes the record back.
                conn.execute(q["erase_lock"], [customer_id])
                for name in ("erase_record", "erase_outbox", "erase_members"):
                    conn.execute(q[name], [customer_id])
                suffix = ":" + customer_id
                conn.execute(q["erase_claims"], [SCHEDULE_CLAIM_PREFIX, SCHEDULE_CLAIM_END,
                                                 len(suffix), suffix])
                rename = pseudonymiser()
                old = [row[0] for row in conn.execute(q["erased_enrollments"], [customer_id])]
                if old:
                    conn.execute(q["erase_activity"], [
                        sorted(FREE_TEXT_KINDS), old, [rename(e) for e in old], customer_id,
                    ])

        self._run(erase)
        # Once the row is gone: a transaction committed before it cannot put the record back.
        self._records.drop(customer_id)

    @_translating
    def prune(self, now: datetime, retention: Retention) -> PruneResult:
        now = ensure_aware(now, "now")
        q = self._q

        def prune(conn: psycopg.Connection[Any]) -> PruneResult:
            with _in_transaction(conn, "the pruning"):
                # Prunes take turns, so the totals are re-aggregated by one at a time.
                conn.execute(q["prune_lock"], [_lock_key("cjo-prune", self.schema)])
                events = conn.execute(q["prune_events"], [now - retention.event_ids]).rowcount
                outbox = conn.execute(q["prune_outbox"], [now - retention.outbox]).rowcount
                row = conn.execute(q["prune_activity"], [
                    now - retention.activity, sorted(FREE_TEXT_KINDS)
                ]).fetchone()
                activity = int(row[0]) if row else 0
                if activity:
                    conn.execute(q["compact_totals"])
                definitions = conn.execute(q["prune_definitions"],
                                           [retention.definitions]).rowcount
            return PruneResult(events, outbox, activity, definitions)

        return self._run(prune)

    @_translating
    def get_setting(self, key: str) -> str | None:
        row = self._row(self._q["get_setting"], [key])
        return None if row is None else str(row[0])

    @_translating
    def put_setting(self, key: str, value: str) -> None:
        self._run(lambda conn: conn.execute(self._q["put_setting"], (key, value)))

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
