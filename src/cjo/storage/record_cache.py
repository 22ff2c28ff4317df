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
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Final

from cjo.errors import UsageError
from cjo.runtime.state import CustomerState

__all__ = ["DEFAULT_RECORD_CACHE", "RecordCache"]

#: Customers whose committed records an adapter keeps decoded, unless told otherwise: a few
#: megabytes (a record of the demo shop is about 1.5 KB decoded, its text a few hundred bytes).
DEFAULT_RECORD_CACHE: Final = 4096


class RecordCache:
    """Committed records by customer id, each with the text stored for it and its revision."""

    __slots__ = ("_entries", "_lock", "size")

    def __init__(self, size: int = DEFAULT_RECORD_CACHE) -> None:
        if type(size) is not int or size < 0:
            raise UsageError(f"record_cache must be a whole number of records >= 0, got {size!r}")
        self.size = size
        self._entries: dict[str, tuple[str, CustomerState, int]] = {}
        # Writers of a pooled adapter commit from several threads; reads need no lock (one
        # dict look-up, and a cached record is never changed).
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, customer_id: str, text: str) -> CustomerState | None:
        """A copy of the record cached for ``customer_id`` if ``text`` (as just read from the
        database) is the text cached with it; else None (decode ``text``)."""
        entry = self._entries.get(customer_id)
        if entry is None or entry[0] != text:
            return None
        state = entry[1].copy()
        state.revision = entry[2]
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
                entries.pop(customer_id, None)
                # A record holding fields of a newer cjo (a rolling upgrade) keeps some of
                # them only while their place exists (an enrollment's, while it is active):
                # decoded each time rather than kept, until the upgrade is done.
                if state._rare is None or not state.extra:
                    entries[customer_id] = (text, state, revision)
            while len(entries) > self.size:
                del entries[next(iter(entries))]

    def drop(self, customer_id: str) -> None:
        """Forget a customer (erased): not needed for correctness, but frees the memory."""
        with self._lock:
            self._entries.pop(customer_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
