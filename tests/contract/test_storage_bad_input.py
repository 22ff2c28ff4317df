"""Bad input reaching the storage adapters through an engine: a clock that answers a naive
instant, values changed after validation that JSON cannot hold, and a SQLite transaction that
fails after it began. Each raises an error of cjo's, holds nothing and loses nothing stored."""

from __future__ import annotations

import math
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cjo import (
    Clock,
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    RecordingChannel,
    Send,
    Variant,
    Wait,
)
from cjo.clock import ensure_aware
from cjo.errors import ClockError, InvalidEventError, StorageError, UsageError
from cjo.storage import sqlite as sqlite_module
from cjo.storage.base import Storage
from cjo.storage.memory import InMemoryStorage
from cjo.storage.sqlite import SQLiteStorage
from cjo.storage.url import open_storage

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
NOTE = ContentItem("note", variants=(Variant("email", {"subject": "S", "text": "t"}),))
JOURNEY = Journey("j", trigger=EventTrigger("x"), entry="w",
                  steps={"w": Wait(HOUR, next="m"), "m": Send("note", "email")})


class _NaiveClock(Clock):
    """A host clock that forgot its time zone."""

    def now(self) -> datetime:
        return datetime(2026, 3, 2, 9, 0)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    made: Storage
    if request.param == "memory":
        made = InMemoryStorage()
    elif request.param == "sqlite":
        made = SQLiteStorage(tmp_path / "cjo.db")
    else:
        dsn = request.getfixturevalue("postgres_dsn")  # skips without a server or a driver
        from cjo.storage.postgres import PostgresStorage

        made = PostgresStorage(dsn, schema=request.getfixturevalue("postgres_schema"),
                               max_size=4)
    with made:
        yield made


def _engine(storage: Storage, clock: Clock | None = None) -> Engine:
    engine = Engine(storage=storage, channels={"email": RecordingChannel()},
                    clock=clock or ManualClock(T0))
    engine.publish(journeys=[JOURNEY], content=[NOTE])
    return engine


def _event(customer: str, **props: object) -> Event:
    return Event(customer, "x", T0, props, event_id=uuid.uuid4().hex)


def _in_another_thread(work: object) -> None:
    """Run ``work`` in a thread; fail (rather than hang) if it never finishes."""
    assert callable(work)
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(work()), daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert done, "a transaction in another thread never finished: something was left held"


# --- the instant every call is given -----------------------------------------------------------


class _NoOffset(tzinfo):
    """A time zone that knows no offset: its datetimes are naive all the same."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None


@pytest.mark.parametrize("bad", [
    datetime(2026, 3, 2, 9), datetime(2026, 3, 2, 9, tzinfo=_NoOffset()), "2026-03-02", None,
    1_772_442_000.0,
])
def test_ensure_aware_refuses_whatever_is_not_an_aware_datetime(bad: object) -> None:
    with pytest.raises(ClockError, match="now"):
        ensure_aware(bad, "now")


def test_ensure_aware_gives_utc() -> None:
    assert ensure_aware(T0) is T0
    paris = T0.astimezone(timezone(timedelta(hours=1)))
    assert ensure_aware(paris) == T0
    assert ensure_aware(paris).tzinfo is UTC


def test_a_naive_clock_raises_clock_error_and_leaves_nothing_held(storage: Storage) -> None:
    good = _engine(storage)
    good.identify("kept", {"a": 1})
    with pytest.raises(ClockError, match="timezone-aware"):
        _engine(storage, _NaiveClock()).identify("c", {"a": 1})
    assert storage.peek("c") is None
    # The same storage, from another thread (whose lock would never come back if held).
    _in_another_thread(lambda: good.identify("d", {"a": 1}))
    assert good.customer_state("d") is not None
    state = good.customer_state("kept")
    assert state is not None
    assert state.profile is not None
    assert state.profile.attributes == {"a": 1}


def test_a_naive_clock_leaves_another_sqlite_connection_free(tmp_path: Path) -> None:
    with SQLiteStorage(tmp_path / "cjo.db") as storage:
        with pytest.raises(ClockError):
            _engine(storage, _NaiveClock()).identify("c", {"a": 1})
        other = sqlite3.connect(tmp_path / "cjo.db", timeout=1)
        try:
            other.execute("BEGIN IMMEDIATE")  # "database is locked" if the write lock was kept
            other.rollback()
        finally:
            other.close()


class _ZonedClock(Clock):
    """A host clock that answers in a named time zone with daylight saving time (as
    ``datetime.now(ZoneInfo(...))`` does): aware, but not in UTC."""

    def __init__(self, start: datetime) -> None:
        self.at = start

    def now(self) -> datetime:
        return self.at


def test_a_clock_in_a_zone_with_dst_keeps_durations_exact(storage: Storage) -> None:
    # Aware datetimes in one zoneinfo zone add durations in wall time: read as is, a 24-hour
    # wait started the day before the clocks go forward would last 23 hours.
    paris = ZoneInfo("Europe/Paris")
    clock = _ZonedClock(datetime(2026, 3, 28, 12, 0, tzinfo=paris))
    engine = Engine(storage=storage, channels={"email": RecordingChannel()}, clock=clock)
    day = Journey("day", trigger=EventTrigger("x"), entry="w",
                  steps={"w": Wait(24 * HOUR, next="m"), "m": Send("note", "email")})
    engine.publish(journeys=[day], content=[NOTE])
    engine.handle_event(Event("c", "x", clock.now(), event_id="e1"))
    state = engine.customer_state("c")
    assert state is not None
    assert state.wake_at == datetime(2026, 3, 29, 11, 0, tzinfo=UTC)  # 24 hours later
    assert state.wake_at.tzinfo is UTC
    assert all(a.at.tzinfo is UTC for a in engine.activities(T0, T0 + 400 * 24 * HOUR))
    clock.at = datetime(2026, 3, 29, 12, 59, tzinfo=paris)  # 10:59 UTC: not yet
    assert not engine.run_due().messages
    clock.at = datetime(2026, 3, 29, 13, 0, tzinfo=paris)
    assert len(engine.run_due().messages) == 1


# --- a SQLite transaction that fails after BEGIN -----------------------------------------------


class _BrokenTxnError(Exception):
    pass


def test_sqlite_releases_its_transaction_and_lock_when_starting_one_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cjo.db"
    with SQLiteStorage(path) as storage:
        engine = _engine(storage)
        engine.handle_event(_event("kept"))  # due in an hour: due_batch then begins

        def broken(*args: object) -> None:
            raise _BrokenTxnError

        with monkeypatch.context() as patch:
            patch.setattr(sqlite_module, "_Txn", broken)
            for open_ in (lambda: storage.customer("c", T0),
                          lambda: storage.batch(["c"], T0),
                          lambda: storage.due_batch(T0 + 2 * HOUR, 10, HOUR)):
                with pytest.raises(_BrokenTxnError), open_():
                    pass
        conn = storage._conn
        assert conn is not None
        assert not conn.in_transaction
        other = sqlite3.connect(path, timeout=1)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.rollback()
        finally:
            other.close()
        engine.identify("same", {"a": 2})  # the same handle and thread
        _in_another_thread(lambda: engine.identify("thread", {"a": 3}))
        assert storage.peek("kept") is not None
        assert storage.peek("thread") is not None


# --- values changed after validation -----------------------------------------------------------


def test_a_value_changed_after_validation_is_refused_by_sql_storage_and_nothing_is_lost(
    storage: Storage,
) -> None:
    engine = _engine(storage)
    engine.identify("c", {"a": 1})
    before = storage.peek("c")
    assert before is not None
    event = _event("c", n=2)
    event.properties["bad"] = math.nan  # after the event was built (and validated)
    if isinstance(storage, InMemoryStorage):
        # Records are kept as objects: nothing is encoded, nothing is refused.
        engine.handle_event(event)
        return
    with pytest.raises(StorageError, match=r"customer 'c'.*\['bad'\] = nan"):
        engine.handle_event(event)
    assert storage.peek("c") == before
    # Rolled back whole: the event id was not spent, so the event, mended, is handled.
    del event.properties["bad"]
    outcome = engine.handle_event(event)
    assert not outcome.duplicate
    assert len(outcome.entered) == 1
    after = storage.peek("c")
    assert after is not None
    assert after.revision == before.revision + 1


class _ForgetfulStorage(InMemoryStorage):
    """An adapter whose ``load_definitions`` loses what ``definitions_generation`` reports."""

    def load_definitions(self) -> tuple[int, str] | None:
        return None


def test_an_adapter_that_reports_a_generation_it_cannot_load_is_named() -> None:
    storage = _ForgetfulStorage()
    Engine(storage, clock=ManualClock(T0)).publish(journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="wait", steps={"wait": Wait(HOUR)})])
    # A second engine on the same storage would otherwise run with no definitions at all.
    other = Engine(storage, clock=ManualClock(T0))
    with pytest.raises(StorageError, match=r"_ForgetfulStorage.definitions_generation\(\) says "
                                           r"generation 1 is stored, but load_definitions"):
        other.handle_event(Event("c1", "go", T0, event_id="e1"))


class _EmptiedStorage(InMemoryStorage):
    """An adapter whose definitions are gone once ``emptied`` (its tables dropped and made
    again, a backup of before the first publish restored)."""

    emptied = False

    def definitions_generation(self) -> int:
        return 0 if self.emptied else super().definitions_generation()

    def load_definitions(self) -> tuple[int, str] | None:
        return None if self.emptied else super().load_definitions()


def test_an_engine_refuses_a_storage_emptied_of_the_definitions_it_ran() -> None:
    storage = _EmptiedStorage()
    engine = Engine(storage, clock=ManualClock(T0))
    engine.publish(journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="wait", steps={"wait": Wait(HOUR)})])
    engine.handle_event(Event("c1", "go", T0, event_id="e1"))
    storage.emptied = True
    # Going on with the definitions it had would enter customers into journeys the storage
    # no longer holds, unseen by every other process.
    with pytest.raises(StorageError, match=r"_EmptiedStorage holds no definitions, but this "
                                           r"engine ran generation 1 from it"):
        engine.handle_event(Event("c2", "go", T0, event_id="e2"))
    with pytest.raises(StorageError, match="holds no definitions"):
        engine.run_due()


@pytest.mark.parametrize(("make", "message"), [
    (lambda: SQLiteStorage(5), "SQLiteStorage takes a path, ':memory:' or a sqlite:/// URL, got "
                               "int 5"),
    (lambda: SQLiteStorage(None), "SQLiteStorage takes a path.*got NoneType"),
    (lambda: SQLiteStorage(":memory:", busy_timeout=30), "busy_timeout must be a timedelta of "
                                                         "zero or more, got 30"),
    (lambda: SQLiteStorage(":memory:", busy_timeout=-HOUR), "busy_timeout must be a timedelta"),
    (lambda: open_storage(5), "a storage URL is a string such as 'memory'.*got int"),
], ids=["sqlite int", "sqlite None", "busy_timeout seconds", "busy_timeout negative",
        "url int"])
def test_storage_options_of_the_wrong_kind_are_usage_errors(make: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        make()


@pytest.mark.parametrize(("options", "message"), [
    ({"dsn": 5}, "dsn must be a connection string, got int"),
    ({"max_size": 0}, "max_size must be an int >= 1, got 0"),
    ({"min_size": 4, "max_size": 2}, "max_size \\(2\\) must be at least min_size \\(4\\)"),
    ({"timeout": "30"}, "timeout must be a positive number of seconds"),
], ids=["dsn", "max_size", "min above max", "timeout"])
def test_postgres_pool_options_are_refused_before_connecting(
    options: dict[str, Any], message: str
) -> None:
    postgres = pytest.importorskip("cjo.storage.postgres")
    arguments: dict[str, Any] = {"dsn": "postgresql://nobody@127.0.0.1:1/none", **options}
    with pytest.raises(UsageError, match=message):  # at once: no pool tries to connect
        postgres.PostgresStorage(arguments.pop("dsn"), **arguments)


# --- the arguments of the engine's queries -----------------------------------------------------


@pytest.mark.parametrize("customer_id", [5, None, "", "a\x00b", "x" * 300],
                         ids=["int", "None", "empty", "NUL", "long"])
@pytest.mark.parametrize("query", ["profile", "enrollments", "customer_state"])
def test_a_customer_id_that_is_not_one_is_refused_alike_on_every_adapter(
    storage: Storage, query: str, customer_id: object
) -> None:
    # Checked by the engine, before the storage is asked: an adapter would otherwise answer
    # "never seen" or fail with its driver's words (PostgreSQL: "operator does not exist").
    engine = _engine(storage)
    with pytest.raises(InvalidEventError, match="customer_id"):
        getattr(engine, query)(customer_id)


@pytest.mark.parametrize("key", [5, None, ["k"], "k\x00", "", "  "],
                         ids=["int", "None", "list", "NUL", "empty", "blank"])
@pytest.mark.parametrize("verb", ["retry_dead_letter", "discard_dead_letter"])
def test_a_dead_letter_key_that_is_not_one_is_refused_alike_on_every_adapter(
    storage: Storage, verb: str, key: object
) -> None:
    engine = _engine(storage)
    with pytest.raises(UsageError, match="key must be"):
        getattr(engine, verb)(key)
    assert getattr(engine, verb)("no such key") is False
