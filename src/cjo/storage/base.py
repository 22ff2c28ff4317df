"""The storage interface: the engine's verbs, which every adapter implements.

The engine does all its work for one customer inside ``Storage.customer(...)``: one
transaction holding that customer's lock, so engines in several processes can share one
database. Inside it, the engine reads (``load_profile``, ``load_active``, ``history``), decides
without I/O, and writes everything at once with ``apply``. Leaving the block commits; an
exception rolls back and nothing of the transaction is kept.

Wake-ups (the ends of waits) are a column of the enrollment, not a separate timer row, so a
wake-up can never outlive or be lost apart from its enrollment. Messages go to an outbox in the
same transaction and are dispatched after commit.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from typing import Literal

import attrs

from cjo.channels.base import DeliveryResult, Message
from cjo.model.events import Profile
from cjo.runtime.state import Changes, Enrollment, PastEntry

__all__ = [
    "ActivityCount",
    "CustomerSession",
    "Delivery",
    "DueWakeup",
    "OutboxEntry",
    "OutboxStatus",
    "Storage",
]

OutboxStatus = Literal["pending", "delivered", "failed", "rejected"]


@attrs.frozen(slots=True)
class DueWakeup:
    """An enrollment whose wake-up is due, claimed for ``lease`` by one worker."""

    customer_id: str
    enrollment_id: str
    wake_at: datetime


@attrs.frozen(slots=True)
class Delivery:
    """The result of one delivery attempt; with ``retry_at`` the message stays pending."""

    key: str
    result: DeliveryResult
    retry_at: datetime | None = None


@attrs.frozen(slots=True)
class OutboxEntry:
    message: Message
    status: OutboxStatus
    attempts: int
    available_at: datetime
    last_error: str | None = None


@attrs.frozen(slots=True)
class ActivityCount:
    journey_id: str
    version: int
    step_id: str | None
    kind: str
    detail: str | None
    count: int


class CustomerSession(abc.ABC):
    """One customer's transaction. Everything it returns is the caller's to mutate."""

    customer_id: str

    @abc.abstractmethod
    def claim_event(self, event_id: str) -> bool:
        """Record ``event_id`` as handled. False if it was handled before (a duplicate)."""

    @abc.abstractmethod
    def load_profile(self) -> Profile | None: ...

    @abc.abstractmethod
    def load_active(self) -> list[Enrollment]:
        """The customer's active enrollments."""

    @abc.abstractmethod
    def history(self, journey_id: str, instance_key: str | None) -> list[PastEntry]:
        """Every enrollment (active or ended) of this customer in ``journey_id`` (any version)
        for ``instance_key``, oldest first."""

    @abc.abstractmethod
    def apply(self, changes: Changes) -> None:
        """Write changes: upsert enrollments (their wake-ups with them), save the profile,
        append activities, and add messages to the outbox, leased to this worker until
        ``dispatch_deadline`` so no other worker dispatches them first."""


class Storage(abc.ABC):
    """Subclass this to keep cjo's state in your own database. Run ``cjo.testing.StorageContract``
    against your adapter: it checks everything the engine relies on."""

    #: How long messages written by a transaction stay reserved for the worker that wrote them.
    dispatch_lease: timedelta = timedelta(seconds=60)

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
            yield sessions[customer_id]

    @abc.abstractmethod
    def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[DueWakeup]:
        """Up to ``limit`` wake-ups due by ``now`` (earliest first) that no other worker holds,
        each reserved for ``lease``. A wake-up whose lease ran out may be claimed again."""

    @contextmanager
    def due_batch(
        self, now: datetime, limit: int, lease: timedelta
    ) -> Iterator[Mapping[str, CustomerSession]]:
        """Claim up to ``limit`` due wake-ups and open one transaction for their customers
        (in order of their earliest due wake-up); an empty mapping when nothing is due.

        The default claims with ``claim_due`` (its lease protects the claim until the batch
        commits) and then opens ``batch``. An adapter whose transactions lock the whole
        database may claim inside the transaction instead, needing no lease at all."""
        due = self.claim_due(now, limit, lease)
        customers = list(dict.fromkeys(d.customer_id for d in due))
        if not customers:
            yield {}
            return
        with self.batch(customers, now) as sessions:
            yield {cid: sessions[cid] for cid in customers}

    @abc.abstractmethod
    def next_wake_at(self) -> datetime | None:
        """The earliest pending wake-up, leased or not (for simulations and worker sleeps)."""

    @abc.abstractmethod
    def claim_outbox(self, now: datetime, limit: int, lease: timedelta) -> list[Message]:
        """Pending messages available by ``now`` (oldest first), each reserved for ``lease``."""

    @abc.abstractmethod
    def complete_outbox(
        self, key: str, result: DeliveryResult, now: datetime, retry_at: datetime | None = None
    ) -> None:
        """Record a delivery attempt. With ``retry_at`` the message stays pending until then."""

    def complete_outbox_many(self, deliveries: Sequence[Delivery], now: datetime) -> None:
        """Record several delivery attempts at once (one transaction in SQL adapters)."""
        for d in deliveries:
            self.complete_outbox(d.key, d.result, now, d.retry_at)

    @abc.abstractmethod
    def outbox_entry(self, key: str) -> OutboxEntry | None: ...

    @abc.abstractmethod
    def get_profile(self, customer_id: str) -> Profile | None: ...

    @abc.abstractmethod
    def get_enrollments(self, customer_id: str) -> list[Enrollment]:
        """Every enrollment of the customer, active and ended, oldest first."""

    @abc.abstractmethod
    def activity_counts(self, journey_id: str) -> list[ActivityCount]: ...

    @abc.abstractmethod
    def active_counts(self, journey_id: str) -> dict[tuple[int, str | None], int]:
        """Active enrollments per (version, step)."""

    @abc.abstractmethod
    def erase_customer(self, customer_id: str) -> None:
        """Forget a customer: profile, enrollments, pending messages. Aggregated activity is kept
        without the customer's id."""

    @abc.abstractmethod
    def get_setting(self, key: str) -> str | None:
        """A small named value kept beside the data (simulation cursors, host bookkeeping)."""

    @abc.abstractmethod
    def put_setting(self, key: str, value: str) -> None: ...

    def close(self) -> None:  # noqa: B027  (optional hook: most adapters hold connections)
        """Release connections. The default does nothing."""

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
