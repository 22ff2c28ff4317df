"""In-memory storage: tests, simulations and back-tests. Not durable."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta

import attrs
from sortedcontainers import SortedList

from cjo.channels.base import DeliveryResult, Message
from cjo.model.events import Profile
from cjo.runtime.state import Changes, Enrollment, PastEntry
from cjo.storage.base import (
    ActivityCount,
    CustomerSession,
    DueWakeup,
    OutboxEntry,
    OutboxStatus,
    Storage,
)

__all__ = ["InMemoryStorage"]

_WakeKey = tuple[datetime, datetime, str, str]


class _Session(CustomerSession):
    __slots__ = ("_changes", "_event_ids", "_store", "customer_id")

    def __init__(self, store: InMemoryStorage, customer_id: str, event_ids: set[str]) -> None:
        self._store = store
        self.customer_id = customer_id
        # Shared by every session of one transaction: event ids are unique across customers.
        self._event_ids = event_ids
        self._changes: list[Changes] = []

    def claim_event(self, event_id: str) -> bool:
        if event_id in self._store._events or event_id in self._event_ids:
            return False
        self._event_ids.add(event_id)
        return True

    def load_profile(self) -> Profile | None:
        return self._store._profiles.get(self.customer_id)

    def load_active(self) -> list[Enrollment]:
        store = self._store
        ids = store._active.get(self.customer_id)
        if not ids:
            return []
        return [store._enrollments[eid].copy() for eid in sorted(ids)]

    def history(self, journey_id: str, instance_key: str | None) -> list[PastEntry]:
        store = self._store
        return [
            PastEntry(e.entered_at, e.ended_at)
            for eid in store._by_customer.get(self.customer_id, ())
            if (e := store._enrollments[eid]).journey_id == journey_id
            and e.instance_key == instance_key
        ]

    def apply(self, changes: Changes) -> None:
        self._changes.append(changes)


class InMemoryStorage(Storage):
    """Everything in dictionaries; wake-ups in a sorted list. Thread-safe, one writer at a time."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._events: set[str] = set()
        self._profiles: dict[str, Profile] = {}
        self._enrollments: dict[str, Enrollment] = {}
        self._by_customer: dict[str, list[str]] = {}
        self._active: dict[str, set[str]] = {}
        self._wakes: SortedList = SortedList()
        self._wake_keys: dict[str, _WakeKey] = {}
        self._wake_leases: dict[str, datetime] = {}
        self._outbox: dict[str, OutboxEntry] = {}
        self._pending: dict[str, None] = {}  # keys of pending messages, in insertion order
        self._settings: dict[str, str] = {}
        self._activity: Counter[tuple[str, int, str | None, str, str | None]] = Counter()

    @contextmanager
    def customer(self, customer_id: str, now: datetime) -> Iterator[CustomerSession]:
        with self._lock:
            session = _Session(self, customer_id, set())
            yield session
            # Reached only when the block raised nothing: commit.
            self._events.update(session._event_ids)
            self._commit_session(session, now)

    @contextmanager
    def batch(
        self, customer_ids: Sequence[str], now: datetime, *, claims: Sequence[tuple[str, str]] = ()
    ) -> Iterator[Mapping[str, CustomerSession]]:
        with self._lock:
            claimed: set[str] = set()
            sessions = {cid: _Session(self, cid, claimed) for cid in sorted(set(customer_ids))}
            yield sessions
            self._events.update(claimed)
            for session in sessions.values():
                self._commit_session(session, now)

    def _commit_session(self, session: _Session, now: datetime) -> None:
        for changes in session._changes:
            self._commit(changes, now)

    def _commit(self, changes: Changes, now: datetime) -> None:
        cid = changes.customer_id
        if changes.profile is not None:
            self._profiles[cid] = changes.profile
        for eid, stored in changes.enrollments.items():
            # The session's enrollments were copies made by load_active (or new objects), and
            # the engine drops them after commit: store them as they are.
            if eid not in self._enrollments:
                self._by_customer.setdefault(cid, []).append(eid)
            self._enrollments[eid] = stored
            active = self._active.setdefault(cid, set())
            if stored.active:
                active.add(eid)
            else:
                active.discard(eid)
            self._set_wake(stored)
        available = now + self.dispatch_lease
        for message in changes.messages:
            key = message.idempotency_key
            if key in self._outbox:
                continue
            self._outbox[key] = OutboxEntry(message, "pending", 0, available)
            self._pending[key] = None
        for a in changes.activities:
            self._activity[(a.journey_id, a.version, a.step_id, a.kind, a.detail)] += 1

    def _set_wake(self, enrollment: Enrollment) -> None:
        eid = enrollment.id
        old = self._wake_keys.pop(eid, None)
        if old is not None:
            self._wakes.remove(old)
        self._wake_leases.pop(eid, None)
        if enrollment.active and enrollment.wake_at is not None:
            key = (*enrollment.wake_order(), enrollment.customer_id)
            self._wakes.add(key)
            self._wake_keys[eid] = key

    def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[DueWakeup]:
        out: list[DueWakeup] = []
        with self._lock:
            for wake_at, _started, eid, cid in self._wakes:
                if wake_at > now or len(out) >= limit:
                    break
                held = self._wake_leases.get(eid)
                if held is not None and held > now:
                    continue
                self._wake_leases[eid] = now + lease
                out.append(DueWakeup(cid, eid, wake_at))
        return out

    def next_wake_at(self) -> datetime | None:
        with self._lock:
            return self._wakes[0][0] if self._wakes else None

    def claim_outbox(self, now: datetime, limit: int, lease: timedelta) -> list[Message]:
        out: list[Message] = []
        with self._lock:
            for key in list(self._pending):
                if len(out) >= limit:
                    break
                entry = self._outbox[key]
                if entry.available_at <= now:
                    self._outbox[key] = OutboxEntry(
                        entry.message, "pending", entry.attempts, now + lease, entry.last_error
                    )
                    out.append(entry.message)
        return out

    def complete_outbox(
        self, key: str, result: DeliveryResult, now: datetime, retry_at: datetime | None = None
    ) -> None:
        with self._lock:
            entry = self._outbox.get(key)
            if entry is None or entry.status != "pending":
                return
            status: OutboxStatus = "pending" if retry_at is not None else result.status
            self._outbox[key] = OutboxEntry(
                entry.message, status, entry.attempts + 1, retry_at or now, result.error
            )
            if status != "pending":
                self._pending.pop(key, None)

    def outbox_entry(self, key: str) -> OutboxEntry | None:
        with self._lock:
            return self._outbox.get(key)

    def get_profile(self, customer_id: str) -> Profile | None:
        with self._lock:
            p = self._profiles.get(customer_id)
        # A copy for the host: mutating it must not change what is stored.
        return None if p is None else attrs.evolve(p, attributes=dict(p.attributes))

    def get_enrollments(self, customer_id: str) -> list[Enrollment]:
        with self._lock:
            return [self._enrollments[e].copy() for e in self._by_customer.get(customer_id, ())]

    def activity_counts(self, journey_id: str) -> list[ActivityCount]:
        with self._lock:
            return [
                ActivityCount(jid, version, step, kind, detail, n)
                for (jid, version, step, kind, detail), n in sorted(
                    self._activity.items(), key=lambda kv: tuple(map(str, kv[0]))
                )
                if jid == journey_id
            ]

    def active_counts(self, journey_id: str) -> dict[tuple[int, str | None], int]:
        out: Counter[tuple[int, str | None]] = Counter()
        with self._lock:
            for ids in self._active.values():
                for eid in ids:
                    e = self._enrollments[eid]
                    if e.journey_id == journey_id:
                        out[(e.version, e.step_id)] += 1
        return dict(out)

    def get_setting(self, key: str) -> str | None:
        with self._lock:
            return self._settings.get(key)

    def put_setting(self, key: str, value: str) -> None:
        with self._lock:
            self._settings[key] = value

    def erase_customer(self, customer_id: str) -> None:
        with self._lock:
            self._profiles.pop(customer_id, None)
            for eid in self._by_customer.pop(customer_id, []):
                enrollment = self._enrollments.pop(eid)
                enrollment.status = "removed"
                self._set_wake(enrollment)
            self._active.pop(customer_id, None)
            for key in [k for k, v in self._outbox.items() if v.message.customer_id == customer_id]:
                del self._outbox[key]
                self._pending.pop(key, None)
