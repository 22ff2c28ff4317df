"""``handle_events`` when its storage fails part-way through a stream: the error names the
first item not handled, every item before it was handled, and none from it on."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cjo import ConflictError, Engine, ManualClock, ProfileUpdate, StorageError
from cjo.storage.base import CustomerSession
from tests.faults.conftest import StorageFactory
from tests.faults.crashing import CrashingStorage

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
ITEMS = 35
BATCH = 10


class FailingAt(CrashingStorage):
    """Fails (``error``) the transaction that would write ``customer``'s items, as a database
    that went away or stayed locked would."""

    def __init__(self, inner: object, customer: str, error: StorageError) -> None:
        super().__init__(inner)  # type: ignore[arg-type]
        self.failing = customer
        self.error = error

    @contextmanager
    def batch(
        self, customer_ids: Sequence[str], now: datetime, *, claims: Sequence[tuple[str, str]] = ()
    ) -> Iterator[Mapping[str, CustomerSession]]:
        if self.failing in customer_ids:
            raise self.error
        with super().batch(customer_ids, now, claims=claims) as sessions:
            yield sessions


def _updates() -> list[ProfileUpdate]:
    return [ProfileUpdate(f"c{i}", {"n": i}) for i in range(ITEMS)]


@pytest.mark.parametrize("kind", [StorageError, ConflictError], ids=["gone", "locked"])
@pytest.mark.parametrize("failing", [0, 9, 10, 27])
def test_a_failed_group_names_the_first_item_not_handled(
    storage_factory: StorageFactory, tmp_path: Path, kind: type[StorageError], failing: int,
) -> None:
    error = kind("the database went away")
    storage = FailingAt(storage_factory.fresh(tmp_path), f"c{failing}", error)
    engine = Engine(storage=storage, clock=ManualClock(T0))
    try:
        first = failing // BATCH * BATCH  # the first item of the group that fails
        with pytest.raises(kind) as raised:
            engine.handle_events(_updates(), batch_size=BATCH)
        assert str(raised.value) == (
            f"item #{first}: not handled, nor any item after it (every item before it was): "
            "the database went away"
        )
        stored = {f"c{i}" for i in range(ITEMS) if storage.inner.peek(f"c{i}") is not None}
        assert stored == {f"c{i}" for i in range(first)}

        # The host retries from that item, once the storage is back.
        storage.failing = ""
        engine.handle_events(_updates()[first:], batch_size=BATCH)
        assert all(storage.inner.peek(f"c{i}") is not None for i in range(ITEMS))
    finally:
        storage.inner.close()


def test_a_refused_item_after_a_failed_group_still_names_the_group(
    storage_factory: StorageFactory, tmp_path: Path
) -> None:
    """The stream stops at a refused item, and the group before it cannot be written: the
    host must resume from that group's first item, not from the refused one."""
    storage = FailingAt(storage_factory.fresh(tmp_path), "c12",
                        StorageError("the database went away"))
    engine = Engine(storage=storage, clock=ManualClock(T0))
    try:
        items: list[object] = [*_updates()[:15], "not an item"]
        with pytest.raises(StorageError, match=r"^item #10: not handled"):
            engine.handle_events(items, batch_size=BATCH)  # type: ignore[arg-type]
    finally:
        storage.inner.close()
