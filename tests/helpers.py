"""Small builders shared by the tests."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

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
