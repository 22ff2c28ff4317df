"""The customer records a SQL adapter committed last, kept decoded, so that loading one of them
again costs a copy rather than a decode.

Decoding a record's JSON (building its profile, enrollments and histories) is the largest part
of a one-event SQLite transaction after the database's own work (see bench/README.md). A
customer's events tend to come close together, and a process that committed a record usually
reads it back next, so each adapter keeps, per customer, the text it committed and the record
it encoded it from.

A cached record is used only when the text read from the database inside the transaction is
exactly the text cached: what another process (or another adapter on the same database) wrote
since is read and decoded as usual, so the cache never serves a stale record, and no
invalidation is needed for correctness. That rests on two rules:

- a record decoded from a text equals the record the text was encoded from (values are
  normalised on the way in to what storage gives back: ``cjo.model.events``), which the test
  suite checks on every hit;
- a saved record is not changed afterwards (``CustomerSession.save``): the cache keeps the
  object itself, and hands out copies.

Bounded: the ``size`` most recently committed customers; the oldest write goes first.

Each customer's entry is updated in place by later commits (``KeptRecord``, as the in-memory
adapter keeps its records): records replaced at every commit would each live long enough to
reach the garbage collector's oldest generation, and its full passes took most of what the
cache saved.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Final

from cjo.errors import UsageError
from cjo.runtime.state import CustomerState, KeptRecord

__all__ = ["DEFAULT_RECORD_CACHE", "RecordCache"]

#: Customers whose committed records an adapter keeps decoded, unless told otherwise: a few
#: megabytes (a record of the demo shop is about 1.5 KB decoded, its text a few hundred bytes).
DEFAULT_RECORD_CACHE: Final = 4096


class _Entry:
    """One customer's cached record: the stored text, the record, the stored revision."""

    __slots__ = ("kept", "revision", "text")

    def __init__(self, text: str, state: CustomerState, revision: int) -> None:
        self.text = text
        self.kept = KeptRecord(state)
        self.revision = revision


class RecordCache:
    """Committed records by customer id, each with the text stored for it and its revision."""

    __slots__ = ("_entries", "_lock", "size")

    def __init__(self, size: int = DEFAULT_RECORD_CACHE) -> None:
        if type(size) is not int or size < 0:
            raise UsageError(f"record_cache must be a whole number of records >= 0, got {size!r}")
        self.size = size
        self._entries: dict[str, _Entry] = {}
        # Writers of a pooled adapter commit from several threads, and a commit updates an
        # entry in place: a copy is taken under the lock too.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, customer_id: str, text: str) -> CustomerState | None:
        """A copy of the record cached for ``customer_id`` if ``text`` (as just read from the
        database) is the text cached with it; else None (decode ``text``)."""
        with self._lock:
            entry = self._entries.get(customer_id)
            if entry is None or entry.text != text:
                return None
            state = entry.kept.state()
            state.revision = entry.revision
        return state

    def put(self, written: Iterable[tuple[str, str, CustomerState, int]]) -> None:
        """After a commit: (customer id, stored text, the record it was encoded from, the
        revision stored) for each record the transaction wrote."""
        if not self.size:
            return
        entries = self._entries
        with self._lock:
            for customer_id, text, state, revision in written:
                # Popped first, so that the newest write is last in order: eviction takes the
                # customer written longest ago.
                entry = entries.pop(customer_id, None)
                # A record holding fields of a newer cjo (a rolling upgrade) keeps some of
                # them only while their place exists (an enrollment's, while it is active):
                # decoded each time rather than kept, until the upgrade is done.
                if state._rare is not None and state.extra:
                    continue
                if entry is None:
                    entry = _Entry(text, state, revision)
                else:
                    entry.text, entry.revision = text, revision
                    entry.kept.keep(state)
                entries[customer_id] = entry
            while len(entries) > self.size:
                del entries[next(iter(entries))]

    def drop(self, customer_id: str) -> None:
        """Forget a customer (erased): not needed for correctness, but frees the memory."""
        with self._lock:
            self._entries.pop(customer_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
