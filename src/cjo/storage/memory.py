"""In-memory storage: tests, simulations and back-tests. Not durable.

Records are kept as objects (no encoding), one ``KeptRecord`` per customer, updated in place by
each commit; a session hands out a copy of it, so that a rolled-back transaction leaves nothing
behind. Due customers sit in a calendar queue of hourly buckets (``_Wakes``). The outbox and
the activity log are kept as flat tuples of plain values, which the garbage collector stops
tracking (see ``KeptRecord`` for why that matters).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import operator
import threading
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from sortedcontainers import SortedList

from cjo.channels.base import DeliveryResult, Message
from cjo.clock import EPOCH, ensure_aware
from cjo.errors import ConflictError, StorageError, UsageError
from cjo.runtime.state import Activity, CustomerState, KeptRecord
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
)
from cjo.storage.erasure import (
    counted_detail,
    erased_detail,
    names_schedule_claim,
    pseudonymiser,
)

__all__ = ["InMemoryStorage"]

_CountKey = tuple[str, int, str | None, str, str | None]

#: An activity-log entry as kept: a plain tuple of the ``Activity`` fields, in field order.
#: The garbage collector stops tracking a tuple of strings, numbers and instants, so a long log
#: costs full collections nothing (an ``Activity`` object is tracked for as long as it lives).
_LogRow = tuple[Any, ...]
_log_row = operator.attrgetter(*(a.name for a in attrs.fields(Activity)))
#: What the activity counts are keyed by (``_log_row``'s items 3 to 7).
_count_key = operator.attrgetter("journey_id", "version", "step_id", "kind", "detail")
#: The same key, read from a log row.
_row_count_key = operator.itemgetter(3, 4, 5, 6, 7)
#: Activities counted in bulk once this many wait: one C loop over thousands of entries costs
#: about a third less than counting each transaction's few in Python.
_COUNT_EVERY = 4096


def _hour(at: datetime) -> int:
    """The wake-up bucket of an instant: its hour since the POSIX epoch."""
    if at.tzinfo is UTC:
        # Most instants are in UTC: their calendar fields give the hour at half the cost.
        return at.toordinal() * 24 + at.hour - _EPOCH_HOURS
    return (at - EPOCH) // _HOUR  # exact, and floored before the epoch too


#: An outbox entry as kept: one flat tuple of the message's fields in order (each mapping as a
#: flat tuple of its keys, then its values), then status, attempts, available at, last error
#: and whether available at ends a lease (``OutboxEntry.leased``). Plain and flat because the
#: garbage collector stops tracking such a tuple (it keeps tracking one that holds a dict, and
#: untracks nested tuples one level per pass): messages kept for the retention period do not
#: join the long-lived objects its full passes walk.
_OutboxRow = tuple[Any, ...]
_MESSAGE_FIELDS = tuple(a.name for a in attrs.fields(Message))
_MESSAGE_MAPPINGS = tuple(_MESSAGE_FIELDS.index(n) for n in ("fields", "recipient", "context"))
_MESSAGE_CUSTOMER = _MESSAGE_FIELDS.index("customer_id")
_MESSAGE_CHANNEL = _MESSAGE_FIELDS.index("channel")
_STATUS = len(_MESSAGE_FIELDS)
_ATTEMPTS, _AVAILABLE, _ERROR, _LEASED = _STATUS + 1, _STATUS + 2, _STATUS + 3, _STATUS + 4


def _outbox_row(m: Message, available: datetime) -> _OutboxRow:
    """A new pending entry, leased to its writer until ``available`` (field by field, in
    ``Message``'s order: one per message sent)."""
    fields, recipient, context = m.fields, m.recipient, m.context
    return (
        m.idempotency_key, m.customer_id, m.channel, m.content_id, (*fields, *fields.values()),
        m.journey_id, m.journey_version, m.step_id, m.enrollment_id, m.created_at,
        m.transactional, m.locale, (*recipient, *recipient.values()) if recipient else (),
        m.content_version, m.variant, m.offer_id,
        (*context, *context.values()) if context else (), "pending", 0, available, None, True,
    )


def _changed(
    row: _OutboxRow, status: OutboxStatus, attempts: int, available: datetime,
    error: str | None, leased: bool = False,
) -> _OutboxRow:
    return (*row[:_STATUS], status, attempts, available, error, leased)


def _message(row: _OutboxRow) -> Message:
    values = list(row[:_STATUS])
    for i in _MESSAGE_MAPPINGS:
        flat = values[i]
        half = len(flat) // 2
        values[i] = dict(zip(flat[:half], flat[half:], strict=True))
    return Message(*values)


def _entry(row: _OutboxRow) -> OutboxEntry:
    return OutboxEntry(_message(row), row[_STATUS], row[_ATTEMPTS], row[_AVAILABLE], row[_ERROR],
                       row[_LEASED])


_EPOCH_HOURS = datetime(1970, 1, 1).toordinal() * 24
_HOUR = timedelta(hours=1)


class _Wakes:
    """The wake-up index: a calendar queue. Each customer with a wake-up sits in the bucket of
    the hour their ``wake_at`` falls in (customer id -> wake_at: a dict of string keys takes
    less than a set, and less than half a sorted list's (wake_at, id) entry), so a move costs
    a few dict operations where a sorted list's remove and add cost about twice as much.

    Order is needed only at the front: the bucket being read is sorted by (wake_at, customer
    id) and kept sorted as customers move in and out of it, until another bucket is read, so a
    burst of thousands of due customers is sorted once, not once per claim. Customers leave it
    mostly from the front (claimed, then committed), which only moves ``_pos``."""

    __slots__ = ("_buckets", "_keys", "_pos", "_sorted", "_sorted_key")

    def __init__(self) -> None:
        self._buckets: dict[int, dict[str, datetime]] = {}
        self._keys: list[int] = []  # the buckets' keys, in order (one per hour holding any)
        # The bucket kept sorted: ``_sorted[_pos:]`` holds exactly its entries.
        self._sorted_key: int | None = None
        self._sorted: list[tuple[datetime, str]] = []
        self._pos = 0

    def __len__(self) -> int:
        return sum(map(len, self._buckets.values()))

    def move(self, customer_id: str, old: datetime | None, new: datetime | None) -> None:
        """The customer's wake-up went from ``old`` to ``new`` (None: none)."""
        if new is None:
            if old is not None:
                self._leave(customer_id, old, None)
            return
        key = _hour(new)
        if old is not None:
            self._leave(customer_id, old, key)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = {}
            bisect.insort(self._keys, key)
        bucket[customer_id] = new
        if key == self._sorted_key:
            self._insort((new, customer_id))

    def _leave(self, customer_id: str, old: datetime, new_key: int | None) -> None:
        """Out of ``old``'s place; out of its bucket too unless ``new_key`` is the same."""
        key = _hour(old)
        if key == self._sorted_key:
            self._unsort((old, customer_id))
        if key == new_key:
            return
        bucket = self._buckets[key]
        del bucket[customer_id]
        if not bucket:
            del self._buckets[key]
            del self._keys[bisect.bisect_left(self._keys, key)]
            if key == self._sorted_key:
                self._sorted_key, self._sorted, self._pos = None, [], 0

    def _unsort(self, entry: tuple[datetime, str]) -> None:
        entries, pos = self._sorted, self._pos
        if entries[pos] != entry:
            del entries[bisect.bisect_left(entries, entry, pos)]
        elif pos >= 64 and 2 * pos >= len(entries):
            del entries[: pos + 1]  # the dropped front is as long as what follows: amortised
            self._pos = 0
        else:
            self._pos = pos + 1

    def _insort(self, entry: tuple[datetime, str]) -> None:
        entries, pos = self._sorted, self._pos
        i = bisect.bisect_left(entries, entry, pos)
        if i == pos and pos:
            self._pos = pos = pos - 1
            entries[pos] = entry
        else:
            entries.insert(i, entry)

    def _ordered(self, key: int) -> list[tuple[datetime, str]]:
        """The entries of bucket ``key`` in order, from ``_pos`` on (it becomes the one kept
        sorted)."""
        if key != self._sorted_key:
            entries = sorted([(at, cid) for cid, at in self._buckets[key].items()])
            self._sorted_key, self._sorted, self._pos = key, entries, 0
        return self._sorted

    def compact(self) -> None:
        """Drop the sorted entries already read past: they may name a customer being erased."""
        del self._sorted[: self._pos]
        self._pos = 0

    def first(self) -> datetime | None:
        if not self._keys:
            return None
        entries = self._ordered(self._keys[0])
        return entries[self._pos][0]

    def due(self, now: datetime) -> Iterator[tuple[datetime, str]]:
        """(wake_at, customer id) of every wake-up due by ``now``, earliest first."""
        last = _hour(now)
        for key in self._keys:
            if key > last:
                return
            entries = self._ordered(key)
            for i in range(self._pos, len(entries)):
                entry = entries[i]
                if entry[0] > now:
                    return
                yield entry


def _in_order(
    instants: Iterable[datetime], newest: datetime | None, late: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """Follow a list kept in the order things were written, by instants mostly growing:
    ``newest`` is the latest instant so far, ``late`` the earliest of those written after a
    later one (None: none), each updated with ``instants``, written next. Pruning drops the
    front up to the first instant to keep, and looks further only when ``late`` is older
    than the cut, which is rare (a clock that went back, a worker firing overdue wake-ups
    at their own instants, threads committing out of order)."""
    for at in instants:
        if newest is None or at >= newest:
            newest = at
        elif late is None or at < late:
            late = at
    return newest, late


class _EventIds:
    """Claimed event ids, in the order they were claimed, so that pruning costs what it
    removes (a dict pruned from its front is scanned over its deleted slots each time).

    The order is a list linked through the dict's values (each id -> the id claimed after it),
    so it costs the ids nothing more; the instants they were claimed at are kept once per run
    of ids claimed at the same instant, with the run's first id."""

    __slots__ = ("_head", "_late", "_newest", "_next", "_starts", "_tail", "_times")

    def __init__(self) -> None:
        self._next: dict[str, str | None] = {}
        self._head: str | None = None  # the oldest id
        self._tail: str | None = None  # the newest id
        self._times: deque[datetime] = deque()  # each run's instant
        self._starts: deque[str] = deque()  # each run's first id
        # The runs' instants as ``_in_order`` follows them.
        self._newest: datetime | None = None
        self._late: datetime | None = None

    def __len__(self) -> int:
        return len(self._next)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._next

    def add(self, event_ids: Iterable[str], now: datetime) -> None:
        """Claimed by one transaction at ``now`` (none of them claimed before)."""
        order = list(event_ids)
        if not order:
            return
        tail = self._tail
        if tail is None:
            self._head = order[0]
        else:
            self._next[tail] = order[0]
        if tail is None or now != self._times[-1]:
            self._times.append(now)
            self._starts.append(order[0])
            # ``_in_order`` inlined: this runs for nearly every transaction.
            if self._newest is None or now >= self._newest:
                self._newest = now
            elif self._late is None or now < self._late:
                self._late = now
        self._next.update(itertools.pairwise(order))
        self._next[order[-1]] = None
        self._tail = order[-1]

    def discard(self, forget: Callable[[str], bool]) -> None:
        """Forget the ids ``forget`` picks, wherever they are (a scan: erasures are rare)."""
        if not any(map(forget, self._next)):
            return
        started = dict(zip(self._starts, self._times, strict=True))
        runs: list[tuple[datetime, list[str]]] = []
        event_id = self._head
        while event_id is not None:
            if event_id in started:
                runs.append((started[event_id], []))
            if not forget(event_id):
                runs[-1][1].append(event_id)
            event_id = self._next[event_id]
        self._next, self._head, self._tail = {}, None, None
        self._times, self._starts = deque(), deque()
        self._newest = self._late = None
        for at, kept in runs:
            self.add(kept, at)

    def prune(self, before: datetime) -> int:
        """Forget the ids claimed before ``before``: the runs at the front up to the first to
        keep, then any claimed later at an earlier instant (rare: the whole list is walked)."""
        times, starts = self._times, self._starts
        while times and times[0] < before:
            times.popleft()
            starts.popleft()
        keep = starts[0] if starts else None
        nxt, head = self._next, self._head
        removed = 0
        while head is not None and head != keep:
            head = nxt.pop(head)
            removed += 1
        self._head = head
        if head is None:
            self._tail = None
            self._newest = self._late = None
        elif self._late is not None and self._late < before:
            removed += self._prune_late(before)
        return removed

    def _prune_late(self, before: datetime) -> int:
        """Forget the runs claimed before ``before`` wherever they are, and work out again
        which runs are late."""
        nxt = self._next
        runs = list(zip(self._times, self._starts, strict=True))
        ends = [start for _at, start in runs[1:]] + [None]
        self._times, self._starts = deque(), deque()
        self._head = self._tail = self._newest = self._late = None
        removed = 0
        for (at, start), end in zip(runs, ends, strict=True):
            ids: list[str] = []
            event_id: str | None = start
            while event_id is not None and event_id != end:
                ids.append(event_id)
                event_id = nxt[event_id]
            if at < before:
                for event_id in ids:
                    del nxt[event_id]
                removed += len(ids)
                continue
            if self._tail is None:
                self._head = ids[0]
            else:
                nxt[self._tail] = ids[0]
            nxt[ids[-1]] = None
            self._tail = ids[-1]
            self._times.append(at)
            self._starts.append(ids[0])
        self._newest, self._late = _in_order(self._times, None, None)
        return removed


class _Txn:
    """One transaction, a context manager (a class costs less than a generator's): the storage
    lock is held from enter to exit, and a clean exit commits. Its sessions share the claimed
    event ids and the writes to commit; a batch is handed them all."""

    __slots__ = ("aside", "customer_ids", "event_ids", "latest", "now", "open", "store", "writes")

    def __init__(
        self, store: InMemoryStorage, now: datetime, customer_ids: Iterable[str] = ()
    ) -> None:
        self.store = store
        # Checked before the lock is taken: a naive instant would be kept, and fail later
        # comparisons with the aware ones around it. An instant in UTC (the usual one) passes
        # without a call: this runs for every transaction (so do claim_due's and
        # complete_outbox_many's checks for every worker pass).
        self.now = now if type(now) is datetime and now.tzinfo is UTC else ensure_aware(now, "now")
        self.customer_ids = customer_ids
        self.event_ids: set[str] = set()
        self.aside: dict[str, str] = {}
        self.writes: list[tuple[CustomerState, Sequence[Message], Sequence[Activity]]] = []
        # The last state each customer saved in this transaction (what a later load sees).
        self.latest: dict[str, CustomerState] = {}
        self.open = True

    def __enter__(self) -> dict[str, _Session]:
        self.store._lock.acquire()
        # Not kept here: sessions point to their transaction, and a cycle would keep the
        # transaction's writes alive until the garbage collector's next pass.
        return {cid: _Session(self.store, self, cid) for cid in self.customer_ids}

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self.open = False
        try:
            if exc_type is None:
                self.store._commit_txn(self)
        finally:
            self.store._lock.release()


class _Session(CustomerSession):
    __slots__ = ("_store", "_txn", "customer_id")

    def __init__(self, store: InMemoryStorage, txn: _Txn, customer_id: str) -> None:
        self._store = store
        self._txn = txn
        self.customer_id = customer_id

    def _check(self) -> None:
        if not self._txn.open:
            raise StorageError("a customer session was used after its transaction ended")

    # ``_check`` inline in the three calls below (the test first, the call only to raise):
    # each runs once or more per customer transaction.

    def claim_event(self, event_id: str) -> bool:
        txn = self._txn
        if not txn.open:
            self._check()
        if event_id in self._store._events or event_id in txn.event_ids:
            return False
        txn.event_ids.add(event_id)
        return True

    def load(self) -> CustomerState | None:
        txn = self._txn
        if not txn.open:
            self._check()
        latest = txn.latest.get(self.customer_id)
        if latest is not None:
            return latest.copy()
        kept = self._store._records.get(self.customer_id)
        return None if kept is None else kept.state()

    def save(
        self, state: CustomerState, messages: Sequence[Message], activities: Sequence[Activity]
    ) -> None:
        txn = self._txn
        if not txn.open:
            self._check()
        self.check_owner(state)
        txn.writes.append((state, messages, activities))
        txn.latest[state.customer_id] = state

    def set_aside(self, reason: str) -> None:
        self._check()
        self._txn.aside[self.customer_id] = reason


class InMemoryStorage(Storage):
    """Everything in dictionaries; wake-ups in a calendar queue. Thread-safe, one writer at a time.

    ``keep_activity`` False keeps only the activity counts, not the log itself (back-tests
    that need only the report). ``keep_outbox`` False records no message at all: for
    back-tests whose channels count what they are given and never fail (nothing to retry,
    nothing to read back)."""

    def __init__(self, *, keep_activity: bool = True, keep_outbox: bool = True) -> None:
        self._lock = threading.RLock()
        self._keep_activity = keep_activity
        self._keep_outbox = keep_outbox
        self._events = _EventIds()
        self._records: dict[str, KeptRecord] = {}
        # The records' ids in order, for walks (segment refreshes, resumes): built when a walk
        # needs it and dropped when a customer is created or erased, since walks are rare and
        # an always-kept sorted index costs every record about 60 bytes.
        self._ids: list[str] | None = None
        self._aside: dict[str, tuple[str, datetime]] = {}  # customer id -> (reason, when)
        self._wakes = _Wakes()
        self._wake_leases: dict[str, datetime] = {}
        # key -> the entry as a flat tuple (``_OutboxRow``), replaced on change; ``_message``
        # and ``_entry`` rebuild the records on request.
        self._outbox: dict[str, _OutboxRow] = {}
        self._outbox_done: deque[tuple[datetime, str]] = deque()
        self._done_order: tuple[datetime | None, datetime | None] = (None, None)  # _in_order
        # Pending messages by channel: channel -> key -> a number that grows with the order
        # they became pending (each dict is in that order), so a claim reads only the channels
        # it asks for, however many messages of other channels wait, and merges them by that
        # number (oldest first). A channel's dict is kept once made (channels are few).
        self._pending: dict[str, dict[str, int]] = {}
        self._pending_order = itertools.count()
        # Channels whose dict a retried dead letter put out of order (sorted at the next claim).
        self._unsorted: set[str] = set()
        # key -> when it became a dead letter, and its number in ``_pending``: a retry takes
        # its place back (oldest first is the order messages were written in, as in SQL).
        self._dead: dict[str, tuple[datetime, int | None]] = {}
        self._settings: dict[str, str] = {}
        self._log: deque[_LogRow] = deque()
        # Which rows of the log are late (``_prune_log``): the place of its first row among all
        # rows it ever kept, the newest instant and each late row's hour with the greatest
        # place of one, up to its newest ``_log_unordered`` rows, looked at only by pruning.
        self._log_base = 0
        self._log_newest: datetime | None = None
        self._log_late: dict[int, int] = {}
        self._log_unordered = 0
        self._counts: Counter[_CountKey] = Counter()
        # Committed activities not yet in ``_counts`` (``_count_pending``): with the log kept,
        # how many of its newest rows; without, their count keys (tuples of plain values, which
        # the garbage collector stops tracking at once, where the activities themselves would
        # live long enough to join its long-lived objects).
        self._uncounted_rows = 0
        self._uncounted: list[_CountKey] = []
        # The newest payloads of the definitions log (prune keeps ``Retention.definitions``),
        # and the newest generation's number.
        self._definitions: list[str] = []
        self._generation = 0
        self._members: dict[str, SortedList] = {}  # segment id -> customer ids

    # --- customer transactions -----------------------------------------------------------------

    @contextmanager
    def customer(self, customer_id: str, now: datetime) -> Iterator[CustomerSession]:
        txn = _Txn(self, now)
        with txn:
            yield _Session(self, txn, customer_id)

    def batch(
        self, customer_ids: Sequence[str], now: datetime, *, claims: Sequence[tuple[str, str]] = ()
    ) -> _Txn:
        return _Txn(self, now, sorted(set(customer_ids)))

    def _commit_txn(self, txn: _Txn) -> None:
        """What a transaction wrote, made the stored state (the lock is held)."""
        now = txn.now
        if txn.event_ids:
            self._events.add(txn.event_ids, now)
        for cid, reason in txn.aside.items():
            if cid not in self._records and cid not in txn.latest:
                continue  # no record to keep aside (as a database's UPDATE finds no row)
            self._set_wake(cid, self._queued(cid), None)
            self._aside[cid] = (reason, now)
        for state, messages, activities in txn.writes:
            self._commit(state, messages, activities, now, state.customer_id in txn.aside)

    def _commit(
        self, state: CustomerState, messages: Sequence[Message],
        activities: Sequence[Activity], now: datetime, set_aside: bool = False,
    ) -> None:
        cid = state.customer_id
        state.revision += 1
        previous = self._records.get(cid)
        aside = cid in self._aside
        old = None if previous is None or aside else previous.wake_at  # ``_queued``, inline
        if aside and not set_aside:
            # Saved by a later transaction than the one that set it aside: readable again.
            del self._aside[cid]
            aside = False
        if previous is None:
            self._ids = None
        # Segments are rare fields: a record without any has none (and costs no look-up).
        if (state._rare is not None and state.segments) or (
            previous is not None and previous._rare is not None and previous.segments
        ):
            self._index_members(cid, previous.segments if previous is not None else {},
                                state.segments)
        # The session's state was a copy (or a new object) and the engine drops it after
        # commit: the kept record takes its values as they are.
        if previous is None:
            previous = self._records[cid] = KeptRecord(state)
        else:
            previous.keep(state)
        self._set_wake(cid, old, None if aside else previous.wake_at)
        if messages and self._keep_outbox:
            available = now + self.dispatch_lease
            outbox = self._outbox
            for message in messages:
                key = message.idempotency_key
                if key in outbox:
                    continue
                outbox[key] = _outbox_row(message, available)
                self._add_pending(key, message.channel)
        if activities:
            if self._keep_activity:
                self._log.extend(map(_log_row, activities))
                self._uncounted_rows += len(activities)
                self._log_unordered += len(activities)
            else:
                self._uncounted.extend(map(_count_key, activities))
            if self._uncounted_rows + len(self._uncounted) >= _COUNT_EVERY:
                self._count_pending()

    def _count_pending(self) -> None:
        """Add the committed activities not yet counted to the counts (the lock is held)."""
        if self._uncounted:
            self._counts.update(self._uncounted)
            self._uncounted = []
        if self._uncounted_rows:
            newest = itertools.islice(reversed(self._log), self._uncounted_rows)
            self._counts.update(map(_row_count_key, newest))
            self._uncounted_rows = 0

    def _queued(self, customer_id: str) -> datetime | None:
        """The customer's place in the wake-up index: the kept record's ``wake_at`` unless
        set aside (no second index to keep per customer: only a commit changes a kept record,
        and it moves the customer in the index with it)."""
        if customer_id in self._aside:
            return None
        kept = self._records.get(customer_id)
        return None if kept is None else kept.wake_at

    def _set_wake(
        self, customer_id: str, old: datetime | None, wake_at: datetime | None
    ) -> None:
        self._wake_leases.pop(customer_id, None)
        if old != wake_at:
            self._wakes.move(customer_id, old, wake_at)

    def peek(self, customer_id: str) -> CustomerState | None:
        # Under the lock: a commit updates the kept record in place.
        with self._lock:
            kept = self._records.get(customer_id)
            return None if kept is None else kept.state()

    def add_claims(self, claims: Iterable[tuple[datetime, str]]) -> None:
        """Record event ids as claimed, each at its instant (in order, none claimed here
        before): what a back-test, which de-duplicates its inputs itself, remembers at its
        end."""
        with self._lock:
            for at, group in itertools.groupby(claims, key=operator.itemgetter(0)):
                self._events.add([event_id for _at, event_id in group], at)

    def kept(self, customer_id: str) -> KeptRecord | None:
        """The kept record itself, to read only, without a copy or the lock: for a reader
        that no commit can run beside (a back-test on its own storage)."""
        return self._records.get(customer_id)

    def peek_many(self, customer_ids: Sequence[str]) -> dict[str, CustomerState]:
        with self._lock:
            records = self._records
            return {cid: records[cid].state() for cid in customer_ids if cid in records}

    # --- wake-ups ------------------------------------------------------------------------------

    def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[DueCustomer]:
        if type(now) is not datetime or now.tzinfo is not UTC:
            now = ensure_aware(now, "now")
        out: list[DueCustomer] = []
        with self._lock:
            leases = self._wake_leases
            for wake_at, cid in self._wakes.due(now):
                if len(out) >= limit:
                    break
                held = leases.get(cid)
                if held is not None and held > now:
                    continue
                leases[cid] = now + lease
                out.append(DueCustomer(cid, wake_at))
        return out

    @contextmanager
    def due_batch(
        self, now: datetime, limit: int, lease: timedelta, *, due: datetime | None = None
    ) -> Iterator[Mapping[str, CustomerSession]]:
        # One lock for claim and work: nothing else can run in between, so no lease is needed
        # beyond the one claim_due writes (it keeps a set-aside or unknown-version customer
        # from being claimed again by the next pass).
        with self._lock:
            now, by = claim_instants(now, due)
            claimed = self.claim_due(by, limit, lease + (now - by))
            if not claimed:
                yield {}
                return
            with _Txn(self, now, [d.customer_id for d in claimed]) as sessions:
                yield sessions

    def next_wake_at(self) -> datetime | None:
        with self._lock:
            return self._wakes.first()

    # --- outbox --------------------------------------------------------------------------------

    def next_outbox_at(self) -> datetime | None:
        """When the earliest pending outbox message can next be claimed (None: none pending):
        where a back-test's worker retries a delivery. A scan of the pending messages, which
        with inline dispatch are only the retries."""
        with self._lock:
            outbox = self._outbox
            return min((outbox[key][_AVAILABLE] for keys in self._pending.values()
                        for key in keys), default=None)

    def _add_pending(self, key: str, channel: str, place: int | None = None) -> None:
        keys = self._pending.get(channel)
        if keys is None:
            keys = self._pending[channel] = {}
        if place is None:
            place = next(self._pending_order)
        elif keys and place < next(reversed(keys.values())):
            self._unsorted.add(channel)
        keys[key] = place

    def claim_outbox(
        self, now: datetime, limit: int, lease: timedelta, *,
        channels: Collection[str] | None = None,
    ) -> list[Message]:
        now = ensure_aware(now, "now")
        wanted = channel_filter(channels)
        out: list[Message] = []
        with self._lock:
            pending = self._pending
            if self._unsorted:
                for channel in self._unsorted:
                    pending[channel] = dict(sorted(pending[channel].items(),
                                                   key=operator.itemgetter(1)))
                self._unsorted.clear()
            found = [pending[c] for c in (pending if wanted is None else wanted) if c in pending]
            if len(found) == 1:
                keys: Iterable[str] = found[0]
            else:  # oldest first across channels
                keys = (key for key, _ in heapq.merge(
                    *(ordered.items() for ordered in found), key=operator.itemgetter(1)
                ))
            for key in keys:
                if len(out) >= limit:
                    break
                row = self._outbox[key]
                if row[_AVAILABLE] <= now:
                    self._outbox[key] = _changed(
                        row, row[_STATUS], row[_ATTEMPTS], now + lease, row[_ERROR], True
                    )
                    out.append(_message(row))
        return out

    def complete_outbox(
        self, key: str, result: DeliveryResult, now: datetime, retry_at: datetime | None = None
    ) -> None:
        self.complete_outbox_many([Delivery(key, result, retry_at)], now)

    def complete_outbox_many(self, deliveries: Sequence[Delivery], now: datetime) -> None:
        if type(now) is not datetime or now.tzinfo is not UTC:
            now = ensure_aware(now, "now")
        # One lock for the lot, and each delivery's status as it is (no Delivery rebuilt).
        with self._lock:
            outbox, pending = self._outbox, self._pending
            for d in deliveries:
                row = outbox.get(d.key)
                if row is None or row[_STATUS] != "pending":
                    continue
                status = d.outbox_status
                outbox[d.key] = _changed(
                    row, status, row[_ATTEMPTS] + 1, d.retry_at or now, d.result.error
                )
                if status == "delivered":
                    pending[row[_MESSAGE_CHANNEL]].pop(d.key, None)
                    self._finished(d.key, now)
                elif status == "dead":
                    self._dead[d.key] = (now, pending[row[_MESSAGE_CHANNEL]].pop(d.key, None))

    def outbox_entry(self, key: str) -> OutboxEntry | None:
        with self._lock:
            row = self._outbox.get(key)
            return None if row is None else _entry(row)

    def customer_outbox(self, customer_id: str) -> list[OutboxEntry]:
        with self._lock:
            # A scan: an export is rare, and the outbox is bounded by retention.
            return [_entry(row) for row in self._outbox.values()
                    if row[_MESSAGE_CUSTOMER] == customer_id]

    def pending_by_channel(self) -> dict[str, int]:
        with self._lock:
            return {channel: len(keys) for channel, keys in self._pending.items() if keys}

    def defer_outbox(self, key: str, until: datetime, now: datetime) -> None:
        until = ensure_aware(until, "until")
        with self._lock:
            row = self._outbox.get(key)
            if row is not None and row[_STATUS] == "pending":
                self._outbox[key] = _changed(row, "pending", row[_ATTEMPTS], until, row[_ERROR])

    def release_outbox(self, keys: Sequence[str], now: datetime) -> None:
        now = ensure_aware(now, "now")
        with self._lock:
            for key in keys:
                row = self._outbox.get(key)
                if row is not None and row[_STATUS] == "pending" and now < row[_AVAILABLE]:
                    self._outbox[key] = _changed(row, "pending", row[_ATTEMPTS], now, row[_ERROR])

    # --- dead letters --------------------------------------------------------------------------

    def dead_letters(
        self,
        limit: int,
        *,
        after: tuple[datetime, str] | None = None,
        newest_first: bool = True,
    ) -> list[DeadLetter]:
        if after is not None:
            after = (ensure_aware(after[0], "after"), after[1])
        with self._lock:
            order = sorted(((at, key) for key, (at, _) in self._dead.items()),
                           reverse=newest_first)
            if after is not None:
                order = [k for k in order if (k < after if newest_first else k > after)]
            out: list[DeadLetter] = []
            for at, key in order[:limit]:
                row = self._outbox[key]
                out.append(DeadLetter(_message(row), row[_ATTEMPTS], row[_ERROR], at))
            return out

    def retry_dead_letter(self, key: str, now: datetime) -> bool:
        now = ensure_aware(now, "now")
        with self._lock:
            dead = self._dead.pop(key, None)
            if dead is None:
                return False
            row = self._outbox[key]
            self._outbox[key] = _changed(row, "pending", 0, now, row[_ERROR], False)
            self._add_pending(key, row[_MESSAGE_CHANNEL], dead[1])
            return True

    def discard_dead_letter(self, key: str, now: datetime) -> bool:
        now = ensure_aware(now, "now")
        with self._lock:
            if self._dead.pop(key, None) is None:
                return False
            row = self._outbox[key]
            self._outbox[key] = _changed(
                row, "discarded", row[_ATTEMPTS], row[_AVAILABLE], row[_ERROR], row[_LEASED]
            )
            self._finished(key, now)
            return True

    def _finished(self, key: str, now: datetime) -> None:
        """The message ``key`` was delivered or discarded at ``now``: pruned after it."""
        self._outbox_done.append((now, key))
        self._done_order = _in_order((now,), *self._done_order)

    # --- set-aside records ---------------------------------------------------------------------

    def records_set_aside(self, limit: int, *, after: str | None = None) -> list[SetAsideRecord]:
        with self._lock:
            ids = sorted(cid for cid in self._aside if after is None or cid > after)[:limit]
            return [SetAsideRecord(cid, *self._aside[cid]) for cid in ids]

    # --- definitions ---------------------------------------------------------------------------

    def definitions_generation(self) -> int:
        return self._generation

    def load_definitions(self) -> tuple[int, str] | None:
        with self._lock:
            if not self._definitions:
                return None
            return self._generation, self._definitions[-1]

    def append_definitions(self, expected_generation: int, payload: str) -> int:
        with self._lock:
            current = self._generation
            if current != expected_generation:
                raise ConflictError(
                    f"definitions generation {current} was published since generation "
                    f"{expected_generation} was read: reload and publish again"
                )
            self._definitions.append(payload)
            self._generation = current + 1
            return current + 1

    # --- queries -------------------------------------------------------------------------------

    def activities(
        self,
        start: datetime,
        end: datetime,
        *,
        journey_id: str | None = None,
        customer_id: str | None = None,
    ) -> list[Activity]:
        start, end = ensure_aware(start, "start"), ensure_aware(end, "end")
        if not self._keep_activity:
            # An empty answer would read as "nothing happened".
            raise UsageError(
                "the activity log was not kept (InMemoryStorage(keep_activity=False)), only "
                "its counts: run the back-test with keep_activity=True to read it"
            )
        with self._lock:
            # Row positions: 0 at, 1 customer, 3 journey (the Activity field order).
            return [
                Activity(*row) for row in self._log
                if start <= row[0] < end
                and (journey_id is None or row[3] == journey_id)
                and (customer_id is None or row[1] == customer_id)
            ]

    def activity_counts(self, journey_id: str) -> list[ActivityCount]:
        with self._lock:
            self._count_pending()
            # Counted as written (fast, in bulk); the instant a detail names is left out here,
            # and for good when the entry is pruned (``_counted_blank``).
            counts: Counter[_CountKey] = Counter()
            for (jid, version, step, kind, detail), n in self._counts.items():
                if jid == journey_id:
                    counts[(jid, version, step, kind, counted_detail(kind, detail))] += n
            return sorted((ActivityCount(*key, n) for key, n in counts.items()),
                          key=count_order)

    def active_counts(self, journey_id: str) -> dict[tuple[int, str | None], int]:
        return self._enrollment_counts(journey_id, held=False)

    def held_counts(self, journey_id: str) -> dict[tuple[int, str | None], int]:
        return self._enrollment_counts(journey_id, held=True)

    def _enrollment_counts(
        self, journey_id: str, *, held: bool
    ) -> dict[tuple[int, str | None], int]:
        """Active enrollments in the journey per (version, step): all, or those ``held``."""
        out: Counter[tuple[int, str | None]] = Counter()
        with self._lock:
            for kept in self._records.values():
                for e in kept.enrollments:
                    if e.journey_id == journey_id and (not held or e.held_at is not None):
                        out[(e.version, e.step_id)] += 1
        return dict(out)

    def enrolled_customers(
        self, journey_id: str, *, after: str | None = None, limit: int = 500
    ) -> list[str]:
        found: list[str] = []
        with self._lock:
            records, aside = self._records, self._aside
            for cid in self._ids_after(after):
                if cid not in aside and any(
                    e.journey_id == journey_id for e in records[cid].enrollments
                ):
                    found.append(cid)
                    if len(found) >= limit:
                        break
        return found

    def _ids_after(self, after: str | None) -> Iterator[str]:
        """Stored customer ids in order, after ``after`` (a walk of the sorted ids)."""
        ids = self._ids
        if ids is None:
            ids = self._ids = sorted(self._records)
        start = 0 if after is None else bisect.bisect_right(ids, after)
        return (ids[i] for i in range(start, len(ids)))

    def get_setting(self, key: str) -> str | None:
        with self._lock:
            return self._settings.get(key)

    def put_setting(self, key: str, value: str) -> None:
        with self._lock:
            self._settings[key] = value

    def _index_members(
        self, customer_id: str, before: Mapping[str, datetime], after: Mapping[str, datetime]
    ) -> None:
        for sid in before.keys() - after.keys():
            members = self._members[sid]
            members.remove(customer_id)
            if not members:
                del self._members[sid]
        for sid in after.keys() - before.keys():
            self._members.setdefault(sid, SortedList()).add(customer_id)

    def customer_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        with self._lock:
            return list(itertools.islice(self._ids_after(after), limit))

    def segment_members(
        self, segment_id: str, *, after: str | None = None, limit: int = 1000
    ) -> list[str]:
        with self._lock:
            members = self._members.get(segment_id)
            if not members:
                return []
            start = 0 if after is None else members.bisect_right(after)
            return list(members.islice(start, start + limit))

    def segment_count(self, segment_id: str) -> int:
        with self._lock:
            return len(self._members.get(segment_id, ()))

    def erase_customer(self, customer_id: str) -> None:
        with self._lock:
            self._set_wake(customer_id, self._queued(customer_id), None)
            self._wakes.compact()
            self._events.discard(lambda event_id: names_schedule_claim(event_id, customer_id))
            erased = self._records.get(customer_id)
            if erased is not None:
                self._index_members(customer_id, erased.segments, {})
                self._ids = None
            self._records.pop(customer_id, None)
            self._aside.pop(customer_id, None)
            keys = {k for k, v in self._outbox.items() if v[_MESSAGE_CUSTOMER] == customer_id}
            for key in keys:
                row = self._outbox.pop(key)
                if row[_STATUS] == "pending":
                    self._pending[row[_MESSAGE_CHANNEL]].pop(key, None)
                self._dead.pop(key, None)
            if keys:  # the keys name the customer: not kept for pruning either
                self._outbox_done = deque(d for d in self._outbox_done if d[1] not in keys)
                self._done_order = _in_order((at for at, _key in self._outbox_done), None, None)
            if any(row[1] == customer_id for row in self._log):
                rename = pseudonymiser()
                # The newest ``_uncounted_rows`` rows are counted later, as they are then.
                counted = len(self._log) - self._uncounted_rows
                self._log = deque(
                    row if row[1] != customer_id else self._erased_row(row, rename, n < counted)
                    for n, row in enumerate(self._log)
                )

    def _erased_row(
        self, row: _LogRow, rename: Callable[[str], str], counted: bool
    ) -> _LogRow:
        """An erased customer's log row (see ``cjo.storage.erasure``); the count of a counted
        one follows a blanked detail, as the SQL adapters' counts (read from the log) do."""
        at, _cid, enrollment_id, jid, version, step, kind, detail, *rest = row
        kept = erased_detail(kind, detail)
        if counted and kept != detail:
            self._count_as(row, kept)
        return (at, "", rename(enrollment_id), jid, version, step, kind, kept, *rest)

    def _count_as(self, row: _LogRow, detail: str | None) -> None:
        """A counted log row is now counted under ``detail`` (the lock is held)."""
        counts, key = self._counts, _row_count_key(row)
        counts[key] -= 1
        if counts[key] <= 0:
            del counts[key]
        counts[(*key[:4], detail)] += 1

    def prune(self, now: datetime, retention: Retention) -> PruneResult:
        # Everything here is kept in the order it was written, which is (nearly) time order:
        # each prune drops from the front and stops at the first entry to keep, so it costs
        # what it removes, not what is kept. Entries written after a later one are dropped
        # too (``_in_order`` says when one is old enough: then the whole list is walked).
        now = ensure_aware(now, "now")
        with self._lock:
            self._count_pending()  # the log's newest rows may be pruned: count them first
            events = self._events.prune(now - retention.event_ids)
            old = max(0, len(self._definitions) - retention.definitions)
            del self._definitions[:old]
            return PruneResult(events, self._prune_outbox(now - retention.outbox),
                               self._prune_log(now - retention.activity), old)

    def _prune_outbox(self, before: datetime) -> int:
        done, gone = self._outbox_done, []
        while done and done[0][0] < before:
            gone.append(done.popleft()[1])
        if not done:
            self._done_order = (None, None)
        elif (late := self._done_order[1]) is not None and late < before:
            gone.extend(key for at, key in done if at < before)
            self._outbox_done = done = deque(entry for entry in done if entry[0] >= before)
            self._done_order = _in_order((at for at, _key in done), None, None)
        outbox = 0
        for key in gone:
            row = self._outbox.get(key)
            if row is not None and row[_STATUS] in ("delivered", "discarded"):
                del self._outbox[key]
                outbox += 1
        return outbox

    def _prune_log(self, before: datetime) -> int:
        """Drop the log's rows older than ``before`` (counted first: ``_count_pending``).

        The log is in commit order, and mostly in time order; a row stamped before one written
        ahead of it (a wake-up fired at its own instant after a later event, a late worker's)
        is noted by the hour of its instant, with the greatest place a late row of that hour
        has. Pruning drops the front up to the first row to keep, then looks through the rows
        up to the last late one of an hour at or before the cut (minutes of rows, as wake-ups
        are late by minutes): it costs what it removes, not the whole log."""
        log = self._log
        base, late = self._log_base, self._log_late
        if self._log_unordered:
            newest = self._log_newest
            rows = list(itertools.islice(reversed(log), self._log_unordered))
            first = base + len(log) - len(rows)
            for place, row in enumerate(reversed(rows), first):
                at = row[0]
                if newest is None or at >= newest:
                    newest = at
                else:
                    late[_hour(at)] = place  # places grow: the last is the greatest
            self._log_newest, self._log_unordered = newest, 0
        removed = 0
        while log and log[0][0] < before:
            self._counted_blank(log.popleft())
            removed += 1
        base += removed
        if not log:
            late.clear()
            self._log_newest = None
        elif late:
            cut = _hour(before)
            older = [hour for hour in late if hour <= cut]
            reach = max((late[hour] for hour in older), default=base - 1) - base + 1
            if reach > 0:
                prefix = [log.popleft() for _ in range(min(reach, len(log)))]
                kept = []
                for row in prefix:
                    if row[0] >= before:
                        kept.append(row)
                    else:
                        self._counted_blank(row)
                log.extendleft(reversed(kept))
                removed += len(prefix) - len(kept)
                base += len(prefix) - len(kept)
                # The kept rows moved towards the front: a late one among them is now at a
                # place up to the prefix's end, whatever place was noted for it.
                end = base + len(kept) - 1
                for hour, place in late.items():
                    if place < end:
                        late[hour] = end
            for hour in older:
                if hour < cut or late[hour] < base:
                    del late[hour]
        self._log_base = base
        return removed

    def _counted_blank(self, row: _LogRow) -> None:
        """A pruned row's count goes on without its free text or the instant its detail names
        (see ``cjo.storage.erasure``)."""
        kept = counted_detail(row[6], erased_detail(row[6], row[7]))
        if kept != row[7]:
            self._count_as(row, kept)

