"""Small builders shared by the tests."""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sortedcontainers import SortedList

from cjo import ContentItem, Engine, Event, ManualClock, RecordingChannel, Storage, Variant
from cjo.storage import sqlite as sqlite_module
from cjo.storage.sqlite import SQLiteStorage

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
_ids = itertools.count(1)

#: Makes handles on one shared database (the ``storage_factory`` fixture of scenario tests).
Factory = Callable[[], Storage]

SIMPLE_CONTENT = (
    ContentItem("hello", (
        Variant("email", {"subject": "Hello {{ profile.first_name | default: 'there' }}",
                          "text": "Hi"}),
        Variant("sms", {"text": "Hi"}),
        Variant("push", {"title": "Hey", "body": "Hey"}),
    )),
)


def ev(name: str, customer: str, at: datetime, **props: object) -> Event:
    return Event(customer_id=customer, name=name, timestamp=at, properties=props,
                 event_id=f"ev{next(_ids)}")


def event_with_id(name: str, customer: str, at: datetime, eid: str, **props: object) -> Event:
    """An event whose id the test chooses (duplicates, and ids read back)."""
    return Event(customer_id=customer, name=name, timestamp=at, properties=props, event_id=eid)


def make_engine(
    clock: ManualClock | None = None,
) -> tuple[Engine, ManualClock, dict[str, RecordingChannel]]:
    clock = clock or ManualClock(T0)
    channels = {name: RecordingChannel() for name in ("email", "sms", "push")}
    engine = Engine(channels=channels, clock=clock)  # type: ignore[arg-type]
    return engine, clock, channels


def together(count: int, work: Callable[[int], object]) -> list[object]:
    """Run ``work(i)`` in ``count`` threads released at once; their results (or errors)."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def run(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            results[i] = work(i)
        except Exception as exc:  # reported by the test, not lost in the thread
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    return results


@contextmanager
def sqlite_at_schema(
    path: Path, version: int, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SQLiteStorage]:
    """A SQLiteStorage on a new database at ``path`` made by an older cjo: only the first
    ``version`` migrations (an upgrade test then opens it with today's)."""
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_module, "MIGRATIONS", sqlite_module.MIGRATIONS[:version])
        with SQLiteStorage(path) as storage:
            yield storage


def drop_schema(dsn: str, schema: str) -> None:
    """Drop a PostgreSQL schema a test made (and everything in it)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def postgres_storage(dsn: str, prefix: str, **options: Any) -> Iterator[Any]:
    """A PostgresStorage on a schema of its own (named ``prefix`` and a random suffix), closed
    and dropped afterwards: one per example of a property."""
    from cjo.storage.postgres import PostgresStorage

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    storage = PostgresStorage(dsn, schema=schema, **options)
    try:
        yield storage
    finally:
        storage.close()
        drop_schema(dsn, schema)


_PLAIN = (int, float, bool, type(None), datetime, date, time, timedelta, Decimal, uuid.UUID)


def held_strings(
    value: Any, path: str = "", seen: set[int] | None = None
) -> Iterator[tuple[str, str]]:
    """(where, text) of every string held inside ``value``, to search for what must not be
    kept: containers, and the plain and slotted objects of cjo (and of these tests), walked
    through; JSON text as the strings it holds. Anything else (locks, connections, functions,
    Liquid's templates) is not cjo's data and is not walked."""
    if seen is None:
        seen = set()
    if isinstance(value, str):
        if value[:1] in ("{", "["):
            try:
                decoded = json.loads(value)
            except ValueError:
                pass
            else:
                yield from held_strings(decoded, path + "<json>", seen)
                return
        yield path, value
        return
    if isinstance(value, bytes | bytearray | memoryview):
        yield path, bytes(value).decode("utf-8", "replace")
        return
    if isinstance(value, _PLAIN) or id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, Mapping):
        for k, v in list(value.items()):
            yield from held_strings(k, f"{path}{{key}}", seen)
            yield from held_strings(v, f"{path}[{k!r}]", seen)
    elif isinstance(value, list | tuple | set | frozenset | deque | SortedList):
        for i, v in enumerate(list(value)):
            yield from held_strings(v, f"{path}[{i}]", seen)
    elif type(value).__module__.startswith(("cjo.", "tests.")):
        names: list[str] = list(getattr(value, "__dict__", {}))
        for klass in type(value).__mro__:
            slots = klass.__dict__.get("__slots__", ())
            names.extend([slots] if isinstance(slots, str) else slots)
        for name in dict.fromkeys(names):
            if name in ("__weakref__", "__dict__") or not hasattr(value, name):
                continue
            yield from held_strings(getattr(value, name), f"{path}.{name}", seen)


def held_by_engine(engine: Engine) -> dict[str, Any]:
    """What an engine keeps in memory, its storage object included (for ``held_strings``):
    not the host's channels, actions and clock."""
    host = {"channels", "actions", "_action_channels", "clock"}
    return {name: value for name, value in vars(engine).items() if name not in host}
