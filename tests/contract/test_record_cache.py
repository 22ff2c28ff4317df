"""The SQL adapters' record cache (``cjo.storage.record_cache``): a record committed by this
adapter is read back without decoding, and never when the stored text is another one.

Every test of the suite also checks each cache hit against the decoded stored text
(``tests/conftest.py``); these check when the cache is and is not used."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cjo import Engine, Event, ManualClock, UsageError
from cjo.model.events import Profile
from cjo.runtime.state import CustomerState
from cjo.storage import codec
from cjo.storage.base import Storage
from cjo.storage.record_cache import RecordCache
from cjo.storage.sqlite import SQLiteStorage

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

Opener = Callable[..., Storage]


@pytest.fixture(params=["sqlite", "postgres"])
def open_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens handles on one database (each call a new handle, as another process has)."""
    made: list[Storage] = []
    if request.param == "sqlite":

        def make(**kwargs: Any) -> Storage:
            storage = SQLiteStorage(tmp_path / "cjo.db", **kwargs)
            made.append(storage)
            return storage

    else:
        if os.environ.get("CI", "").strip().lower() != "true":
            pytest.importorskip("psycopg", reason="psycopg is not installed (cjo[postgres])")
        from cjo.storage.postgres import PostgresStorage

        dsn = request.getfixturevalue("postgres_dsn")
        schema = request.getfixturevalue("postgres_schema")

        def make(**kwargs: Any) -> Storage:
            storage = PostgresStorage(dsn, schema=schema, max_size=2, **kwargs)
            made.append(storage)
            return storage

    yield make
    for storage in made:
        storage.close()  # type: ignore[attr-defined]


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The customers whose records the adapters decode, in order."""
    seen: list[str] = []
    real = codec.decode_state

    def counting(text: str | bytes, customer_id: str) -> CustomerState:
        seen.append(customer_id)
        return real(text, customer_id)

    for module in ("cjo.storage.sqlite", "cjo.storage.postgres"):
        with suppress(ImportError):  # no driver: only SQLite runs
            monkeypatch.setattr(f"{module}.decode_state", counting)
    return seen


def _write(storage: Storage, customer_id: str, plan: str, at: datetime = T0) -> None:
    with storage.customer(customer_id, at) as session:
        state = session.load() or CustomerState(customer_id, at)
        state.profile = Profile(customer_id, {"plan": plan})
        session.save(state, (), ())


def _plan(storage: Storage, customer_id: str) -> object:
    with storage.customer(customer_id, T0) as session:
        state = session.load()
    assert state is not None and state.profile is not None
    return state.profile.attributes["plan"]


def test_a_record_committed_here_is_read_back_without_decoding(
    open_storage: Opener, decodes: list[str]
) -> None:
    storage = open_storage()
    _write(storage, "c1", "free")
    decodes.clear()
    assert _plan(storage, "c1") == "free"
    assert storage.peek("c1") is not None
    assert storage.peek_many(["c1"])["c1"].revision == 1
    assert decodes == []


def test_each_load_is_its_own_copy_with_the_stored_revision(open_storage: Opener) -> None:
    storage = open_storage()
    _write(storage, "c1", "free")
    _write(storage, "c1", "pro")
    with storage.customer("c1", T0) as session:
        first = session.load()
        assert first is not None
        assert first.revision == 2
        first.enrollments.append(None)  # type: ignore[arg-type]  # changed, never saved
        first.profile = None
    assert _plan(storage, "c1") == "pro"


def test_a_record_another_handle_wrote_is_decoded_not_taken_from_the_cache(
    open_storage: Opener, decodes: list[str]
) -> None:
    mine, other = open_storage(), open_storage()
    _write(mine, "c1", "free")
    _write(other, "c1", "pro")  # another process, as far as ``mine`` knows
    decodes.clear()
    assert _plan(mine, "c1") == "pro"
    assert mine.peek("c1").profile.attributes["plan"] == "pro"  # type: ignore[union-attr]
    assert decodes == ["c1", "c1"]


def test_a_rolled_back_save_leaves_the_committed_record(open_storage: Opener) -> None:
    storage = open_storage()
    _write(storage, "c1", "free")

    def fail_after_saving() -> None:
        with storage.customer("c1", T0) as session:
            state = session.load()
            assert state is not None
            state.profile = Profile("c1", {"plan": "pro"})
            session.save(state, (), ())
            raise RuntimeError("the host failed")

    with pytest.raises(RuntimeError):
        fail_after_saving()
    assert _plan(storage, "c1") == "free"


def test_an_erased_customer_is_forgotten(open_storage: Opener) -> None:
    storage = open_storage()
    _write(storage, "c1", "free")
    storage.erase_customer("c1")
    assert storage.peek("c1") is None
    with storage.customer("c1", T0) as session:
        assert session.load() is None


def test_no_cache_decodes_every_load(open_storage: Opener, decodes: list[str]) -> None:
    storage = open_storage(record_cache=0)
    _write(storage, "c1", "free")
    decodes.clear()
    assert _plan(storage, "c1") == "free"
    assert decodes == ["c1"]


def test_the_cache_keeps_the_customers_written_last(
    open_storage: Opener, decodes: list[str]
) -> None:
    storage = open_storage(record_cache=2)
    for cid in ("c1", "c2", "c3"):
        _write(storage, cid, "free")
    _write(storage, "c2", "pro")  # written again: now the newest
    decodes.clear()
    for cid in ("c1", "c2", "c3"):
        _plan(storage, cid)
    assert decodes == ["c1"]


def test_an_engine_on_a_cached_record_decides_as_on_a_decoded_one(tmp_path: Path) -> None:
    from cjo.demo import shop_channels, shop_definitions

    outcomes = []
    for size in (0, 64):
        clock = ManualClock(T0)
        storage = SQLiteStorage(tmp_path / f"shop-{size}.db", record_cache=size)
        engine = Engine(storage, channels=dict(shop_channels()), clock=clock)
        engine.publish(shop_definitions())
        sent = []
        for n in range(3):
            at = T0 + timedelta(hours=12 * n)
            clock.set(at)
            cart = engine.handle_event(
                Event("c1", "added_to_cart", at, {"item": "shoes", "price": 10}, f"cart-{n}")
            )
            later = at + timedelta(hours=5)
            clock.set(later)
            due = engine.run_due()  # the reminder, by email
            bought = engine.handle_event(Event("c1", "purchased", later, {}, f"buy-{n}"))
            sent += [m.idempotency_key for o in (cart, due, bought) for m in o.messages]
        outcomes.append((sent, engine.customer_state("c1")))
        storage.close()
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0]  # something was sent


@pytest.mark.parametrize("size", [-1, 1.5, "10", True])
def test_a_bad_size_is_refused(size: object, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="record_cache"):
        SQLiteStorage(tmp_path / "cjo.db", record_cache=size)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="record_cache"):
        RecordCache(size)  # type: ignore[arg-type]
