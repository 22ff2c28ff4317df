"""The storage interface: the engine's verbs, which every adapter implements.

The unit of state is the customer record (``CustomerState``). The engine does all its work for
one customer inside a customer transaction (``Storage.batch`` / ``Storage.customer``), holding
that customer's lock so engines in several processes can share one database: it loads the
record once (``CustomerSession.load``), decides without I/O, and writes the record back whole
with the transaction's effects (``CustomerSession.save``: outbox messages and activity-log
entries). Leaving the block commits; an exception rolls back and nothing of it is kept.

Wake-ups are one instant per customer (``CustomerState.wake_at``: the earliest of its waits,
timeouts, lifetimes and customer timers), stored beside the record so due customers can be
claimed with an index. Definitions are kept as an append-only log of generations, written
with compare-and-set so concurrent publishers never lose each other's work.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from typing import Any, Literal, Self

import attrs

from cjo.channels.base import DeliveryResult, Message
from cjo.clock import ensure_aware
from cjo.errors import CorruptRecordError, StorageError, UsageError
from cjo.runtime.state import Activity, CustomerState

__all__ = [
    "ActivityCount",
    "CustomerSession",
    "DeadLetter",
    "Delivery",
    "DueCustomer",
    "OutboxEntry",
    "OutboxStatus",
    "PruneResult",
    "Retention",
    "SetAsideRecord",
    "Storage",
    "channel_filter",
    "claim_instants",
    "count_order",
    "ensure_aware",
    "membership_changes",
    "page_of_ids",
    "returned",
]

#: ``pending``: to be sent (now, or at ``available_at`` after a failed attempt);
#: ``delivered``; ``dead``: a dead letter (failed permanently, or transiently too many times),
#: kept until the host retries or discards it; ``discarded``: a dead letter the host gave up on,
#: pruned like a delivered message.
OutboxStatus = Literal["pending", "delivered", "dead", "discarded"]


@attrs.frozen(slots=True)
class DueCustomer:
    """A customer whose wake-up is due, claimed for a lease by one worker."""

    customer_id: str
    wake_at: datetime


@attrs.frozen(slots=True)
class Delivery:
    """The result of one delivery attempt; with ``retry_at`` the message stays pending."""

    key: str
    result: DeliveryResult
    retry_at: datetime | None = None

    @property
    def outbox_status(self) -> OutboxStatus:
        """What the message becomes: pending again (a retry is due), delivered, or dead."""
        if self.retry_at is not None:
            return "pending"
        return "delivered" if self.result.ok else "dead"


@attrs.frozen(slots=True)
class OutboxEntry:
    """One outbox message as stored. ``leased`` says that ``available_at`` is the end of a
    reservation (the writer's, for an inline send, or a ``claim_outbox``) rather than a
    retry's back-off: until then a process may be sending it. An identity merge leaves a
    message under a live lease to its sender (``Engine.identify``)."""

    message: Message
    status: OutboxStatus
    attempts: int
    available_at: datetime
    last_error: str | None = None
    leased: bool = False

    def sending(self, now: datetime) -> bool:
        """Whether a process may be sending the message at ``now``: pending, under a lease
        that has not run out."""
        return self.leased and self.status == "pending" and self.available_at > now


@attrs.frozen(slots=True)
class DeadLetter:
    """A message that will not be sent unless the host retries it: it failed permanently, or
    transiently ``attempts`` times. ``dead_at`` is when its last attempt failed."""

    message: Message
    attempts: int
    last_error: str | None
    dead_at: datetime

    @property
    def key(self) -> str:
        return self.message.idempotency_key

    @property
    def cursor(self) -> tuple[datetime, str]:
        """Where a page of dead letters ending with this one stops (for ``after=``)."""
        return (self.dead_at, self.message.idempotency_key)


@attrs.frozen(slots=True)
class SetAsideRecord:
    """A customer record the engine set aside (``CustomerSession.set_aside``): kept as it is and
    not claimed until a later transaction saves it. ``reason`` is what was given (for a record
    that cannot be decoded, the ``CorruptRecordError``'s text); ``set_aside_at`` is the instant
    of the transaction that set it aside, None for one set aside by a cjo that did not keep
    it."""

    customer_id: str
    reason: str
    set_aside_at: datetime | None


@attrs.frozen(slots=True)
class ActivityCount:
    journey_id: str
    version: int
    step_id: str | None
    kind: str
    detail: str | None
    count: int


def count_order(count: ActivityCount) -> tuple[int, bool, str, str, bool, str]:
    """Where ``count`` goes in ``activity_counts``: by version, step (None first), kind, then
    detail (None first), text compared by code point. Adapters sort with it rather than in
    SQL, whose collation differs from one database to another."""
    step, detail = count.step_id, count.detail
    return (count.version, step is not None, step or "", count.kind, detail is not None,
            detail or "")


@attrs.frozen(slots=True)
class Retention:
    """How long storage keeps what grows with the number of events.

    - ``event_ids``: handled event ids, for de-duplication. A repeat of an event older than
      this is handled again, so keep it longer than any redelivery your event source does.
    - ``outbox``: delivered messages and discarded dead letters; pending messages and dead
      letters are never pruned (a dead letter waits for the host to retry or discard it).
    - ``activity``: the activity log. ``activity_counts`` keeps counting pruned entries.
    - ``definitions``: how many generations of the definitions log are kept, the newest
      included (each publish, pause or resume appends the whole set: the newest holds every
      journey version; the ones before are history, such as a content item's earlier text).

    The first three are a ``timedelta`` from zero (keep nothing finished) to 100 years, the
    last a whole number from 1; anything else raises ``UsageError`` when built, not at the
    next prune.
    """

    event_ids: timedelta = timedelta(days=7)
    outbox: timedelta = timedelta(days=7)
    activity: timedelta = timedelta(days=400)
    definitions: int = 100

    def __attrs_post_init__(self) -> None:
        if type(self.definitions) is not int or self.definitions < 1:
            raise UsageError(
                f"Retention definitions must be a whole number of generations from 1, got "
                f"{self.definitions!r}"
            )
        # A negative span would prune every event id (duplicates handled again); a span
        # beyond any instant's reach would make prune overflow on every call.
        for name in ("event_ids", "outbox", "activity"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or not (
                timedelta(0) <= value <= _MAX_RETENTION
            ):
                raise UsageError(
                    f"Retention {name} must be a timedelta from 0 to {_MAX_RETENTION.days} days, "
                    f"got {value!r}"
                )


_MAX_RETENTION = timedelta(days=36_500)


@attrs.frozen(slots=True)
class PruneResult:
    event_ids: int = 0
    outbox: int = 0
    activity: int = 0
    definitions: int = 0


class CustomerSession(abc.ABC):
    """One customer's part of a transaction."""

    customer_id: str

    @abc.abstractmethod
    def claim_event(self, event_id: str) -> bool:
        """Record ``event_id`` as handled (event ids are global, not per customer). False if it
        was handled before, in this transaction or an earlier one still in the retention
        window (a duplicate)."""

    @abc.abstractmethod
    def load(self) -> CustomerState | None:
        """The customer's record, or None for a customer never seen. The object is the
        caller's to change. A stored record that cannot be decoded raises
        ``CorruptRecordError`` naming the customer."""

    @abc.abstractmethod
    def save(
        self, state: CustomerState, messages: Sequence[Message], activities: Sequence[Activity]
    ) -> None:
        """Write the record whole (its ``wake_at`` with it, any lease on it cleared, its
        ``revision`` incremented), append ``activities`` to the activity log, and add
        ``messages`` to the outbox (a key already there is ignored), leased to this writer
        until ``now + dispatch_lease`` so no other worker dispatches them first.

        The record is the storage's once saved: an adapter may keep the object itself after
        the commit (the in-memory adapter keeps it as the stored record, the SQL adapters in
        their record cache), so a caller does not change it afterwards (it saves again)."""

    def check_owner(self, state: CustomerState) -> None:
        """Refuse to save another customer's record through this session (for ``save``)."""
        if state.customer_id != self.customer_id:
            raise StorageError(
                f"a session of customer {self.customer_id!r} cannot save {state.customer_id!r}"
            )

    @abc.abstractmethod
    def set_aside(self, reason: str) -> None:
        """Keep the customer's stored record as it is but stop claiming it as due: for a
        record that cannot be decoded, so one bad record never stops a worker. A later
        transaction that saves the record (repaired, it was read back) ends this; a save in
        the same transaction does not."""



def claim_instants(now: datetime, due: datetime | None) -> tuple[datetime, datetime]:
    """``due_batch``'s two instants, checked: ``now``, the transaction's and the leases', and
    the instant to claim wake-ups by (``due``, default ``now``)."""
    now = ensure_aware(now, "now")
    return now, now if due is None else ensure_aware(due, "due")

class Storage(abc.ABC):
    """Subclass this to keep cjo's state in your own database. Run ``cjo.testing.StorageContract``
    against your adapter: it checks everything the engine relies on."""

    #: How long messages written by a transaction stay reserved for the worker that wrote them.
    dispatch_lease: timedelta = timedelta(seconds=60)

    # --- customer transactions -----------------------------------------------------------------

    @abc.abstractmethod
    def batch(
        self, customer_ids: Sequence[str], now: datetime, *, claims: Sequence[tuple[str, str]] = ()
    ) -> AbstractContextManager[Mapping[str, CustomerSession]]:
        """One transaction for several customers (group commit): their locks are taken in
        sorted order, so two batches never deadlock. Commit on exit, roll back on error.

        ``claims`` is a hint: the (customer id, event id) pairs the transaction is about to
        ``claim_event``, in order. An adapter may claim them all up front in one statement;
        ``claim_event`` must answer exactly as if each were claimed on its own, in order."""

    @contextmanager
    def customer(self, customer_id: str, now: datetime) -> Iterator[CustomerSession]:
        """One customer's transaction (taking its lock); commit on exit, roll back on error.
        Adapters may override this with a cheaper path."""
        with self.batch([customer_id], now) as sessions:
            yield _session(self, sessions, customer_id)

    @abc.abstractmethod
    def peek(self, customer_id: str) -> CustomerState | None:
        """The customer's record as last committed, read without a transaction or a customer
        lock (the engine uses it to skip events that cannot matter to this customer; the
        in-memory adapter holds its own lock for the read, as its commits update records in
        place). May be stale by the time it returns; never to be written back. None when
        unknown; ``CorruptRecordError`` (naming the customer) when it cannot be decoded, so
        that a damaged record is never taken for a customer never seen."""

    def peek_many(self, customer_ids: Sequence[str]) -> dict[str, CustomerState]:
        """``peek`` for several customers at once (one round trip in SQL adapters); customers
        unknown or undecodable are left out."""
        out: dict[str, CustomerState] = {}
        for cid in customer_ids:
            try:
                state = returned(self, "peek", self.peek(cid), (CustomerState, type(None)))
            except CorruptRecordError:
                continue
            if state is not None:
                out[cid] = state
        return out

    # --- wake-ups ------------------------------------------------------------------------------

    @abc.abstractmethod
    def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[DueCustomer]:
        """Up to ``limit`` customers whose ``wake_at`` is due by ``now`` (earliest first, then
        by customer id) that no other worker holds, each reserved for ``lease``. A claim whose
        lease ran out may be claimed again. Set-aside records are never claimed."""

    @contextmanager
    def due_batch(
        self, now: datetime, limit: int, lease: timedelta, *, due: datetime | None = None
    ) -> Iterator[Mapping[str, CustomerSession]]:
        """Claim up to ``limit`` customers due by ``due`` (default: ``now``; earlier for a pass
        that fires what fell due before a schedule occurrence) and open one transaction for
        them (in order of their wake-up); an empty mapping when nothing is due. The
        transaction and the leases are at ``now`` whatever ``due`` is.

        The default claims with ``claim_due`` (its lease protects the claim until the batch
        commits) and then opens ``batch``. An adapter whose transactions lock the whole
        database may claim inside the transaction instead."""
        now, by = claim_instants(now, due)
        # Leased until ``now + lease`` however early ``by`` is.
        claimed = returned(self, "claim_due", self.claim_due(by, limit, lease + (now - by)),
                           list, DueCustomer)
        customers = list(dict.fromkeys(d.customer_id for d in claimed))
        if not customers:
            yield {}
            return
        with self.batch(customers, now) as sessions:
            yield {cid: _session(self, sessions, cid) for cid in customers}

    @abc.abstractmethod
    def next_wake_at(self) -> datetime | None:
        """The earliest pending wake-up of any customer, leased or not (for simulations and
        worker sleeps)."""

    def next_outbox_at(self) -> datetime | None:
        """When the earliest pending outbox message can next be claimed, leased or not (None:
        none pending): a delivery's retry, a message held by quiet hours or written for
        deferred dispatch. For simulations and ``cjo.testing.run_until``, which deliver each at
        its own instant; an adapter that cannot tell returns None (the default), and those
        deliver such messages only at the instants they stop at for other reasons."""
        return None

    # --- outbox --------------------------------------------------------------------------------

    @abc.abstractmethod
    def claim_outbox(
        self, now: datetime, limit: int, lease: timedelta, *,
        channels: Collection[str] | None = None,
    ) -> list[Message]:
        """Pending messages available by ``now``, each reserved for ``lease`` (``available_at``
        its end, and ``OutboxEntry.leased`` set): oldest first, in the order they were written
        (a retry keeps its place, whatever its ``available_at``).

        With ``channels``, only messages of those channels (the engine's own: processes may
        have different channels); the others are left exactly as they are, for a process that
        has their channel. An empty collection claims nothing; None claims any channel. The
        filter is the adapter's to apply where it finds the messages (an index by channel), so
        messages of other channels waiting in large numbers never slow a claim down."""

    @abc.abstractmethod
    def pending_by_channel(self) -> dict[str, int]:
        """How many messages are pending (to be sent now or later, claimed or not) per
        channel; channels with none are left out. What the operator looks at to find messages
        no process claims: those of a channel no engine has (``claim_outbox`` never hands
        them out)."""

    @abc.abstractmethod
    def complete_outbox(
        self, key: str, result: DeliveryResult, now: datetime, retry_at: datetime | None = None
    ) -> None:
        """Record a delivery attempt, ending the message's lease (``OutboxEntry.leased``
        cleared). With ``retry_at`` the message stays pending until then."""

    def complete_outbox_many(self, deliveries: Sequence[Delivery], now: datetime) -> None:
        """Record several delivery attempts at once (one transaction in SQL adapters)."""
        now = ensure_aware(now, "now")
        for d in deliveries:
            self.complete_outbox(d.key, d.result, now, d.retry_at)

    @abc.abstractmethod
    def outbox_entry(self, key: str) -> OutboxEntry | None: ...

    @abc.abstractmethod
    def customer_outbox(self, customer_id: str) -> list[OutboxEntry]:
        """Every outbox message of one customer still held, whatever its status (pending,
        delivered, dead, discarded), in the order they were written: for a privacy export."""

    def defer_outbox(self, key: str, until: datetime, now: datetime) -> None:
        """Make the pending message ``key`` wait until ``until`` without an attempt: its lease
        ends, its attempts and last error stay (quiet hours hold a message a late dispatch
        finds). Nothing for a message that is not pending.

        Not abstract: the default records a transient attempt retried at ``until``, so an
        adapter written before it runs as it did (the attempt is counted)."""
        self.complete_outbox(key, DeliveryResult.transient("held by quiet hours"), now, until)

    @abc.abstractmethod
    def release_outbox(self, keys: Sequence[str], now: datetime) -> None:
        """End the writer's reservation of the pending messages among ``keys``: they become
        available to ``claim_outbox`` at ``now`` (the engine's deferred dispatch mode, where
        the writer does not send)."""

    # --- dead letters --------------------------------------------------------------------------

    @abc.abstractmethod
    def dead_letters(
        self,
        limit: int,
        *,
        after: tuple[datetime, str] | None = None,
        newest_first: bool = True,
    ) -> list[DeadLetter]:
        """Up to ``limit`` dead letters ordered by (``dead_at``, key), newest first unless
        ``newest_first`` is False; with ``after`` (a ``DeadLetter.cursor``), only those that
        come after it in that order (the next page)."""

    @abc.abstractmethod
    def retry_dead_letter(self, key: str, now: datetime) -> bool:
        """Make the dead letter ``key`` pending again, available at ``now``, with its attempts
        reset (its last error is kept until the next attempt); False if ``key`` is not a dead
        letter."""

    @abc.abstractmethod
    def discard_dead_letter(self, key: str, now: datetime) -> bool:
        """Give up on the dead letter ``key``: it becomes ``discarded`` at ``now`` and is
        pruned like a delivered message; False if ``key`` is not a dead letter."""

    # --- set-aside records ---------------------------------------------------------------------

    def records_set_aside(self, limit: int, *, after: str | None = None) -> list[SetAsideRecord]:
        """Up to ``limit`` customer records set aside, in customer id order, after ``after``
        (the last id of the previous page): what an operator repairs (or erases). An index of
        the set-aside rows keeps it from reading the others.

        Not abstract, so that an adapter written before it still works for everything else;
        the default raises ``StorageError`` naming the adapter."""
        raise StorageError(
            f"{type(self).__name__} does not implement records_set_aside: it cannot list the "
            "customer records it set aside"
        )

    # --- definitions ---------------------------------------------------------------------------

    @abc.abstractmethod
    def definitions_generation(self) -> int:
        """The latest definitions generation (0 when nothing was ever published): one cheap
        read, made before every transaction so engines notice a publish by another process."""

    @abc.abstractmethod
    def load_definitions(self) -> tuple[int, str] | None:
        """The latest generation and its definitions (JSON text), or None."""

    @abc.abstractmethod
    def append_definitions(self, expected_generation: int, payload: str) -> int:
        """Store ``payload`` as generation ``expected_generation + 1`` and return it, only if
        the latest generation is still ``expected_generation`` (compare-and-set); otherwise
        raise ``ConflictError`` (another process published first: reload, merge, retry)."""

    # --- queries -------------------------------------------------------------------------------

    @abc.abstractmethod
    def activities(
        self,
        start: datetime,
        end: datetime,
        *,
        journey_id: str | None = None,
        customer_id: str | None = None,
    ) -> list[Activity]:
        """Activity-log entries with ``start <= at < end`` (optionally of one journey or one
        customer), in the order they were appended."""

    @abc.abstractmethod
    def activity_counts(self, journey_id: str) -> list[ActivityCount]:
        """Every activity of a journey, counted by (version, step, kind, detail), pruned
        entries included; the detail as ``cjo.storage.erasure.counted_detail`` has it
        (without the instant it names), a pruned one's without its free text too. In
        ``count_order``, the same on every adapter."""

    @abc.abstractmethod
    def active_counts(self, journey_id: str) -> dict[tuple[int, str | None], int]:
        """Active enrollments per (version, step)."""

    def held_counts(self, journey_id: str) -> dict[tuple[int, str | None], int]:
        """Active enrollments in ``journey_id`` held by a pause (a wake-up fell due while the
        journey was paused, and has not run since), per (version, step). This default walks
        the journey's customers (``enrolled_customers``, ``peek_many``); adapters may count
        them in one query. Not a hot path: reports read it."""
        out: dict[tuple[int, str | None], int] = {}
        after: str | None = None
        while ids := page_of_ids(self, "enrolled_customers",
                                 self.enrolled_customers(journey_id, after=after), after):
            after = ids[-1]
            for state in self.peek_many(ids).values():
                for e in state.enrollments:
                    if e.journey_id == journey_id and e.held_at is not None:
                        key = (e.version, e.step_id)
                        out[key] = out.get(key, 0) + 1
        return out

    @abc.abstractmethod
    def enrolled_customers(
        self, journey_id: str, *, after: str | None = None, limit: int = 500
    ) -> list[str]:
        """Up to ``limit`` ids of customers with an active enrollment in ``journey_id``, in id
        order, after ``after``: one page of a walk over a journey's customers (resuming a
        paused journey wakes them). A scan of the records, not a hot path."""

    @abc.abstractmethod
    def customer_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        """Ids of the stored customers in id order: up to ``limit`` after ``after`` (the last id
        of the previous page). For sweeps such as ``Engine.refresh_segments``."""

    @abc.abstractmethod
    def segment_members(
        self, segment_id: str, *, after: str | None = None, limit: int = 1000
    ) -> list[str]:
        """Ids of the customers whose committed record is in the segment, in id order: up to
        ``limit`` of them after ``after`` (the last id of the previous page). SQL adapters keep
        an indexed table of memberships, written with each record."""

    @abc.abstractmethod
    def segment_count(self, segment_id: str) -> int:
        """How many customers' committed records are in the segment."""

    @abc.abstractmethod
    def erase_customer(self, customer_id: str) -> None:
        """Forget a customer: their record, their messages and the event ids claimed for their
        schedule entries; their activity-log entries lose the customer id, their enrollment
        ids and their free text (counts are kept). See ``cjo.storage.erasure``."""

    @abc.abstractmethod
    def prune(self, now: datetime, retention: Retention) -> PruneResult:
        """Drop what is older than ``retention`` allows: handled event ids, delivered messages
        and discarded dead letters (never pending messages or dead letters), activity-log
        entries (still counted, a free-text detail as blank: ``cjo.storage.erasure``), and
        generations of the definitions log beyond the newest ``retention.definitions`` (the
        generation numbers go on: ``definitions_generation`` is unchanged)."""

    @abc.abstractmethod
    def get_setting(self, key: str) -> str | None:
        """A small named value kept beside the data (simulation cursors, host bookkeeping)."""

    @abc.abstractmethod
    def put_setting(self, key: str, value: str) -> None: ...

    def close(self) -> None:  # noqa: B027  (optional hook: most adapters hold connections)
        """Release connections. The default does nothing."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def returned(
    storage: object, method: str, value: Any, kind: type[Any] | tuple[type[Any], ...],
    item: type[Any] | tuple[type[Any], ...] | None = None,
) -> Any:
    """``value``, as ``storage.method()`` returned it, if it is a ``kind`` (each of its items an
    ``item``); else ``StorageError`` naming the adapter's method and what it returned, rather
    than an ``AttributeError`` or ``TypeError`` deep inside the engine. ``None`` in ``kind``
    allows None."""
    if isinstance(value, kind):
        if item is None:
            return value
        wrong = [x for x in value if not isinstance(x, item)]
        if not wrong:
            return value
        what = f"{type(value).__name__} holding {type(wrong[0]).__name__} {wrong[0]!r:.80}"
    else:
        what = f"{type(value).__name__} {value!r:.80}"
    raise StorageError(
        f"{type(storage).__name__}.{method}() returned {what}, not {_names(kind, item)}"
    )


def page_of_ids(storage: object, method: str, page: Any, after: str | None) -> list[str]:
    """A page of customer ids as ``storage.method(after=after)`` returned it, checked before a
    walk goes on from its last id: a list of ``str`` in id order, each after ``after``. A page
    that is not (``after`` taken as inclusive, or ignored) would have the walk read it again
    forever; ``StorageError`` names the method instead."""
    ids: list[str] = returned(storage, method, page, list, str)
    previous = after
    for cid in ids:
        if previous is not None and not cid > previous:
            raise StorageError(
                f"{type(storage).__name__}.{method}(after={after!r:.80}) returned {cid!r:.80} "
                f"after {previous!r:.80}: a page holds only ids after `after`, in id order"
            )
        previous = cid
    return ids


def _names(kind: type | tuple[type, ...], item: type | tuple[type, ...] | None) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    text = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
    if item is not None:
        items = item if isinstance(item, tuple) else (item,)
        text += " of " + " or ".join(i.__name__ for i in items)
    return text


def _session(storage: Storage, sessions: object, customer_id: str) -> CustomerSession:
    """The session of ``customer_id`` in what ``storage.batch()`` yielded, checked."""
    if not isinstance(sessions, Mapping):
        raise StorageError(
            f"{type(storage).__name__}.batch() yielded {type(sessions).__name__}, not a "
            "mapping of customer id to CustomerSession"
        )
    session = sessions.get(customer_id)
    if not isinstance(session, CustomerSession):
        raise StorageError(
            f"{type(storage).__name__}.batch() yielded no CustomerSession for "
            f"{customer_id!r} (got {type(session).__name__})"
        )
    return session


def membership_changes(
    before: Mapping[str, datetime] | None, after: Mapping[str, datetime]
) -> tuple[list[str], list[tuple[str, datetime]]]:
    """What a save changes in a customer's segment memberships: the segments left, and the
    segments entered (or re-entered at another instant). ``before`` None (not known) rewrites
    them all; adapters delete the left ones first."""
    if before is None:
        return [], list(after.items())
    left = [sid for sid in before if sid not in after]
    entered = [(sid, at) for sid, at in after.items() if before.get(sid) != at]
    return left, entered


def channel_filter(channels: Collection[str] | None) -> tuple[str, ...] | None:
    """``claim_outbox``'s ``channels`` checked, as distinct names in order (None stays None):
    adapters call it before they take a lock. A ``str`` is refused (it would be read as its
    letters), and so is a name that is not a ``str``, with ``UsageError``."""
    if channels is None:
        return None
    if isinstance(channels, str) or not isinstance(channels, Collection):
        raise UsageError(
            f"channels must be a collection of channel names or None, got {channels!r:.80}"
        )
    for name in channels:
        if not isinstance(name, str):
            raise UsageError(f"a channel name must be a str, got {name!r:.80}")
    return tuple(sorted(set(channels)))
