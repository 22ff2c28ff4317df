"""A Storage wrapper that dies at its Nth call, and a channel that keeps a ledger of deliveries.

Every verb counts as a call, session verbs included, and each transaction counts three: its
start (``<kind>.enter``), the moment just before it commits (``<kind>.commit``: dying there
rolls it back) and the moment just after (``<kind>.exit``: committed, but the caller never got
to dispatch what it wrote). Dying "after" any other call is the same as dying before the next
one, so those points need no name of their own.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cjo.channels.base import Channel, DeliveryResult, Message
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
    Storage,
)

__all__ = ["CrashingStorage", "LedgerChannel", "SimulatedCrash"]


class SimulatedCrash(BaseException):
    """The process "died". A BaseException, like a KeyboardInterrupt: nothing may swallow it."""


class CrashingStorage(Storage):
    """Wraps ``inner``; at call number ``crash_at`` (1-based) calls ``die`` (by default: raise
    ``SimulatedCrash``). With ``die_after_call`` a verb runs first and the death follows, still
    inside the call: for a ``save`` that means half-way through an open transaction."""

    def __init__(
        self,
        inner: Storage,
        crash_at: int | None = None,
        *,
        die: Callable[[str], None] | None = None,
        die_after_call: bool = False,
    ) -> None:
        self.inner = inner
        self.crash_at = crash_at
        self.die_after_call = die_after_call
        self._die = die or _raise
        self.calls: list[str] = []
        self.crashed: tuple[str, tuple[Any, ...]] | None = None
        self.dispatch_lease = inner.dispatch_lease

    def tick(self, verb: str, *args: Any) -> bool:
        """Count a call; die now (or report that the call must die once done)."""
        self.calls.append(verb)
        if len(self.calls) != self.crash_at:
            return False
        self.crashed = (verb, args)
        if self.die_after_call and not verb.endswith((".enter", ".commit", ".exit")):
            return True
        self._die(f"simulated crash at call {self.crash_at}: {verb}")
        return False

    def _call(self, verb: str, fn: Callable[..., Any], *args: Any) -> Any:
        die_after = self.tick(verb, *args)
        result = fn(*args)
        if die_after:
            self._die(f"simulated crash inside call {self.crash_at}: {verb}")
        return result

    # --- transactions ----------------------------------------------------------------------------

    @contextmanager
    def customer(self, customer_id: str, now: datetime) -> Iterator[CustomerSession]:
        self.tick("customer.enter", customer_id)
        with self.inner.customer(customer_id, now) as session:
            yield _Session(self, session)
            self.tick("customer.commit", customer_id)  # raising here rolls the inner back
        self.tick("customer.exit", customer_id)

    @contextmanager
    def batch(
        self, customer_ids: Sequence[str], now: datetime, *, claims: Sequence[tuple[str, str]] = ()
    ) -> Iterator[Mapping[str, CustomerSession]]:
        self.tick("batch.enter", tuple(customer_ids))
        with self.inner.batch(customer_ids, now, claims=claims) as sessions:
            yield {cid: _Session(self, s) for cid, s in sessions.items()}
            self.tick("batch.commit", tuple(customer_ids))
        self.tick("batch.exit", tuple(customer_ids))

    @contextmanager
    def due_batch(
        self, now: datetime, limit: int, lease: timedelta, *, due: datetime | None = None
    ) -> Iterator[Mapping[str, CustomerSession]]:
        self.tick("due_batch.enter", (now,))
        with self.inner.due_batch(now, limit, lease, due=due) as sessions:
            yield {cid: _Session(self, s) for cid, s in sessions.items()}
            self.tick("due_batch.commit", tuple(sessions))
        self.tick("due_batch.exit", tuple(sessions))

    # --- everything else -------------------------------------------------------------------------

    def peek(self, customer_id: str) -> CustomerState | None:
        return self._call("peek", self.inner.peek, customer_id)  # type: ignore[no-any-return]

    def peek_many(self, customer_ids: Sequence[str]) -> dict[str, CustomerState]:
        return self._call("peek_many", self.inner.peek_many, customer_ids)  # type: ignore[no-any-return]

    def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[DueCustomer]:
        return self._call("claim_due", self.inner.claim_due, now, limit, lease)  # type: ignore[no-any-return]

    def next_wake_at(self) -> datetime | None:
        return self._call("next_wake_at", self.inner.next_wake_at)  # type: ignore[no-any-return]

    def claim_outbox(
        self, now: datetime, limit: int, lease: timedelta, *,
        channels: Collection[str] | None = None,
    ) -> list[Message]:
        return self._call("claim_outbox", functools.partial(self.inner.claim_outbox, channels=channels), now, limit, lease)  # type: ignore[no-any-return]

    def pending_by_channel(self) -> dict[str, int]:
        return self._call("pending_by_channel", self.inner.pending_by_channel)  # type: ignore[no-any-return]

    def complete_outbox(
        self, key: str, result: DeliveryResult, now: datetime, retry_at: datetime | None = None
    ) -> None:
        self._call("complete_outbox", self.inner.complete_outbox, key, result, now, retry_at)

    def complete_outbox_many(self, deliveries: Sequence[Delivery], now: datetime) -> None:
        self._call("complete_outbox_many", self.inner.complete_outbox_many, deliveries, now)

    def outbox_entry(self, key: str) -> OutboxEntry | None:
        return self._call("outbox_entry", self.inner.outbox_entry, key)  # type: ignore[no-any-return]

    def release_outbox(self, keys: Sequence[str], now: datetime) -> None:
        self._call("release_outbox", self.inner.release_outbox, keys, now)

    def dead_letters(
        self, limit: int, *, after: tuple[datetime, str] | None = None, newest_first: bool = True
    ) -> list[DeadLetter]:
        return self._call(  # type: ignore[no-any-return]
            "dead_letters",
            lambda: self.inner.dead_letters(limit, after=after, newest_first=newest_first),
        )

    def retry_dead_letter(self, key: str, now: datetime) -> bool:
        return self._call("retry_dead_letter", self.inner.retry_dead_letter, key, now)  # type: ignore[no-any-return]

    def discard_dead_letter(self, key: str, now: datetime) -> bool:
        return self._call("discard_dead_letter", self.inner.discard_dead_letter, key, now)  # type: ignore[no-any-return]

    def definitions_generation(self) -> int:
        return self._call("definitions_generation", self.inner.definitions_generation)  # type: ignore[no-any-return]

    def load_definitions(self) -> tuple[int, str] | None:
        return self._call("load_definitions", self.inner.load_definitions)  # type: ignore[no-any-return]

    def append_definitions(self, expected_generation: int, payload: str) -> int:
        return self._call("append_definitions", self.inner.append_definitions,  # type: ignore[no-any-return]
                          expected_generation, payload)

    def activities(
        self,
        start: datetime,
        end: datetime,
        *,
        journey_id: str | None = None,
        customer_id: str | None = None,
    ) -> list[Activity]:
        return self._call("activities", lambda: self.inner.activities(  # type: ignore[no-any-return]
            start, end, journey_id=journey_id, customer_id=customer_id))

    def activity_counts(self, journey_id: str) -> list[ActivityCount]:
        return self._call("activity_counts", self.inner.activity_counts, journey_id)  # type: ignore[no-any-return]

    def active_counts(self, journey_id: str) -> dict[tuple[int, str | None], int]:
        return self._call("active_counts", self.inner.active_counts, journey_id)  # type: ignore[no-any-return]

    def enrolled_customers(
        self, journey_id: str, *, after: str | None = None, limit: int = 500
    ) -> list[str]:
        return self._call(  # type: ignore[no-any-return]
            "enrolled_customers",
            lambda j: self.inner.enrolled_customers(j, after=after, limit=limit), journey_id,
        )

    def customer_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        return self.inner.customer_ids(after=after, limit=limit)

    def segment_members(
        self, segment_id: str, *, after: str | None = None, limit: int = 1000
    ) -> list[str]:
        return self.inner.segment_members(segment_id, after=after, limit=limit)

    def segment_count(self, segment_id: str) -> int:
        return self.inner.segment_count(segment_id)

    def customer_outbox(self, customer_id: str) -> list[OutboxEntry]:
        return self._call("customer_outbox", self.inner.customer_outbox, customer_id)  # type: ignore[no-any-return]

    def erase_customer(self, customer_id: str) -> None:
        self._call("erase_customer", self.inner.erase_customer, customer_id)

    def prune(self, now: datetime, retention: Retention) -> PruneResult:
        return self._call("prune", self.inner.prune, now, retention)  # type: ignore[no-any-return]

    def get_setting(self, key: str) -> str | None:
        return self._call("get_setting", self.inner.get_setting, key)  # type: ignore[no-any-return]

    def put_setting(self, key: str, value: str) -> None:
        self._call("put_setting", self.inner.put_setting, key, value)

    def close(self) -> None:
        self.inner.close()  # the harness's, not the engine's: not a crash point


class _Session(CustomerSession):
    def __init__(self, owner: CrashingStorage, inner: CustomerSession) -> None:
        self._owner = owner
        self._inner = inner
        self.customer_id = inner.customer_id

    def claim_event(self, event_id: str) -> bool:
        return self._owner._call("claim_event", self._inner.claim_event, event_id)  # type: ignore[no-any-return]

    def load(self) -> CustomerState | None:
        return self._owner._call("load", self._inner.load)  # type: ignore[no-any-return]

    def save(
        self, state: CustomerState, messages: Sequence[Message], activities: Sequence[Activity]
    ) -> None:
        self._owner._call("save", self._inner.save, state, messages, activities)

    def set_aside(self, reason: str) -> None:
        self._owner._call("set_aside", self._inner.set_aside, reason)


def _raise(why: str) -> None:
    raise SimulatedCrash(why)


class LedgerChannel(Channel):
    """A provider that delivers, counts deliveries per idempotency key, and (for keys
    ``flaky`` picks) fails the first attempt. With ``ledger`` it also appends each delivered
    key to that file, so deliveries made by a process that is later killed are not lost."""

    def __init__(
        self, flaky: Callable[[Message], bool] | None = None, ledger: Path | None = None
    ) -> None:
        self.delivered: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self._flaky = flaky
        self._ledger = ledger

    def send(self, message: Message) -> DeliveryResult:
        key = message.idempotency_key
        if self._flaky is not None and self._flaky(message) and not self.failed[key]:
            self.failed[key] += 1
            return DeliveryResult("transient", error="provider hiccup")
        self.delivered[key] += 1
        if self._ledger is not None:
            with self._ledger.open("a") as f:
                f.write(key + "\n")
        return DeliveryResult("delivered", provider_id=key)
