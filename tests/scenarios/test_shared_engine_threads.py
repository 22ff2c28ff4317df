"""One Engine shared by a web application's threads: publishing and picking up definitions.

Each test starts its threads together at a barrier; what is asserted holds for every
interleaving (the definitions lock makes it so), never for a lucky one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cjo import (
    ContentItem,
    Engine,
    Enrollment,
    Event,
    EventTrigger,
    ExitCriterion,
    Journey,
    ManualClock,
    RecordingChannel,
    Variant,
    Wait,
    attr,
)
from cjo.errors import ConflictError
from cjo.runtime.registry import Registry
from cjo.storage.base import Storage
from cjo.storage.memory import InMemoryStorage
from tests.helpers import SIMPLE_CONTENT, T0, Factory, together

THREADS = 8


def item(name: str) -> ContentItem:
    return ContentItem(name, (Variant("email", {"subject": name, "text": name}),))


def engine_on(storage: Storage) -> Engine:
    return Engine(storage, channels={"email": RecordingChannel()}, clock=ManualClock(T0))


def count_conflicts(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The compare-and-set conflicts ``storage.append_definitions`` raises, as they happen."""
    conflicts: list[int] = []
    append = storage.append_definitions

    def counted(expected: int, payload: str) -> int:
        try:
            return append(expected, payload)
        except ConflictError:
            conflicts.append(expected)
            raise

    monkeypatch.setattr(storage, "append_definitions", counted)
    return conflicts


@pytest.fixture
def slow_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The generations ``Registry.build`` is asked for, from now on; each build takes a while,
    as the build of a large definition set does, so that threads overlap in it."""
    builds: list[int] = []
    build = Registry.build

    def slow_build(*args: Any, **kwargs: Any) -> Registry:
        builds.append(args[1])
        time.sleep(0.05)
        return build(*args, **kwargs)

    monkeypatch.setattr(Registry, "build", slow_build)
    return builds


def test_threads_of_one_engine_publish_in_turn(
    storage_factory: Factory, monkeypatch: pytest.MonkeyPatch, slow_builds: list[int]
) -> None:
    """Before, each thread raced the others for the compare-and-set, and one that lost ten
    times in a row failed with ``ConflictError``: its publish was lost."""
    storage = storage_factory()
    engine = engine_on(storage)
    engine.publish(content=SIMPLE_CONTENT)
    conflicts = count_conflicts(storage, monkeypatch)

    results = together(THREADS, lambda i: engine.publish(content=[item(f"item{i}")]))

    assert sorted(results) == list(range(2, THREADS + 2))  # type: ignore[type-var]
    assert conflicts == []
    names = {c.id for c in engine_on(storage_factory()).definitions.content}
    assert names >= {f"item{i}" for i in range(THREADS)}


def test_threads_build_a_generation_published_elsewhere_once(
    storage_factory: Factory, slow_builds: list[int]
) -> None:
    """A generation published by another process is built once for all the threads that see
    it, not once per thread (and none adopts an older generation over a newer one)."""
    engine = engine_on(storage_factory())
    engine.publish(content=SIMPLE_CONTENT)
    other = engine_on(storage_factory())
    other.publish(content=[item("news")])
    slow_builds.clear()

    seen = together(THREADS, lambda _: engine.generation)

    assert seen == [2] * THREADS
    assert slow_builds == [2]
    assert "news" in {c.id for c in engine.definitions.content}


@pytest.fixture
def locked_definitions(
    storage_factory: Factory, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Engine]:
    """An engine with one generation published, whose storage cannot write right now: another
    connection holds the lock (SQLite, PostgreSQL), or the adapter says so (memory)."""
    kind = request.node.callspec.params["storage_factory"]
    if kind == "memory":
        class Locked(InMemoryStorage):
            def append_definitions(self, expected_generation: int, payload: str) -> int:
                if self.definitions_generation():
                    raise ConflictError("the database stayed locked by another writer")
                return super().append_definitions(expected_generation, payload)

        engine = engine_on(Locked())
        engine.publish(content=SIMPLE_CONTENT)
        yield engine
    elif kind == "sqlite":
        import sqlite3

        from cjo.storage.sqlite import SQLiteStorage

        with SQLiteStorage(tmp_path / "locked.db",
                           busy_timeout=timedelta(milliseconds=50)) as storage:
            engine = engine_on(storage)
            engine.publish(content=SIMPLE_CONTENT)
            blocker = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                yield engine
            finally:
                blocker.close()
    else:
        import psycopg

        from cjo.storage.postgres import PostgresStorage

        dsn = request.getfixturevalue("postgres_dsn")
        schema = request.getfixturevalue("postgres_schema")
        with PostgresStorage(dsn, schema=schema, max_size=2,
                             connect_kwargs={"options": "-c lock_timeout=50"}) as storage:
            engine = engine_on(storage)
            engine.publish(content=SIMPLE_CONTENT)
            with psycopg.connect(dsn) as blocker:
                # Reads go on; an insert waits for the lock, past lock_timeout.
                blocker.execute(f'LOCK TABLE "{schema}".definitions IN EXCLUSIVE MODE')
                yield engine


def test_a_publish_the_storage_refuses_is_not_a_lost_race(locked_definitions: Engine) -> None:
    """Before, a lock timeout (a ``ConflictError`` of the storage) was taken for another
    process having published: the publish was tried ten times, each waiting the whole busy
    timeout, and then reported as lost ten races."""
    engine = locked_definitions
    started = time.monotonic()
    with pytest.raises(ConflictError, match="lock") as caught:
        engine.publish(content=[item("late")])
    assert "lost the race" not in str(caught.value)
    assert time.monotonic() - started < 5
    assert engine.generation == 1


def test_threads_and_their_worker_passes_end_as_one_thread_does(storage: Storage) -> None:
    """The multi-worker stream (tests/concurrency/workload.py) on ONE engine shared by threads:
    each moment's items are dealt round-robin to the threads (so one customer's items land on
    different threads, and re-deliveries of one event race each other), each thread also fires
    due wake-ups and dispatches the outbox while the others still handle theirs. Sends, their
    delivery records and every customer's record must equal one thread's on one in-memory
    engine."""
    from collections import Counter

    import attrs

    from tests.concurrency import workload

    seed, customers = 20260302, 80
    expected_engine, expected_channels = workload.reference(seed, customers)
    stream = workload.build_stream(seed, customers)
    slices = workload.by_slice(stream)
    clock = ManualClock(workload.T0)
    engine, channels = workload.make_engine(storage, clock, due_batch_size=4)
    moments = [workload.T0 + s * workload.SLICE for s, _ in slices] + [workload.END]
    # The barrier's action runs while every thread waits: the clock moves between calls only.
    barrier = threading.Barrier(THREADS, action=lambda: clock.set(moments.pop(0)))

    def thread(index: int) -> None:
        for k, (_, items) in enumerate(slices):
            barrier.wait(timeout=30)
            mine = [item for i, item in items if i % THREADS == index]
            if (k + index) % 2 and all(item.event is not None for item in mine):
                engine.handle_events([item.event for item in mine if item.event], batch_size=3)
            else:
                for item in mine:
                    workload.run_item(engine, item)
            engine.run_due()
            engine.dispatch_pending()
        barrier.wait(timeout=30)
        engine.run_due()
        engine.dispatch_pending()

    errors = together(THREADS, thread)

    assert errors == [None] * THREADS
    sent = Counter(s for c in channels.values() for s in c.delivered)
    assert [s for s, n in sent.items() if n > 1] == []
    assert sent == Counter(s for c in expected_channels.values() for s in c.delivered)
    assert Counter(s for c in channels.values() for s in c.failed) == Counter(
        s for c in expected_channels.values() for s in c.failed
    )
    for cid in sorted({item.customer_id for item in stream}):
        got, want = storage.peek(cid), expected_engine.storage.peek(cid)
        assert (got is None) == (want is None), cid
        if got is not None and want is not None:
            assert attrs.evolve(got, revision=0) == attrs.evolve(want, revision=0), cid
    for journey in ("abandoned_cart", "welcome"):
        assert storage.activity_counts(journey) == expected_engine.storage.activity_counts(
            journey
        )
    assert storage.next_wake_at() is None



def _exit_racing_entry(
    storage: Storage, monkeypatch: pytest.MonkeyPatch, call: Callable[[Engine], object]
) -> Enrollment:
    """``call`` (which ends the customer's enrollment) reads the clock at T0 and, before it
    takes the customer's lock, another thread moves the clock an hour on and enrolls the
    customer. The enrollment, as ``call`` left it."""
    reached, release = threading.Event(), threading.Event()

    def holding(opened: Callable[..., Any]) -> Callable[..., Any]:
        def held(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread().name == "held" and not reached.is_set():
                reached.set()
                release.wait(10)
            return opened(*args, **kwargs)

        return held

    for name in ("customer", "batch"):
        monkeypatch.setattr(storage, name, holding(getattr(storage, name)))
    clock = ManualClock(T0)
    engine = Engine(storage, channels={"email": RecordingChannel()}, clock=clock)
    engine.publish(
        journeys=[Journey("welcome", trigger=EventTrigger("signed_up"), entry="wait",
                          steps={"wait": Wait(timedelta(days=1))},
                          exit_criteria=(ExitCriterion("left", event="left"),
                                         ExitCriterion("vip", where=attr("tier") == "vip"))),
                  # So that "left" matters to ann before she is enrolled in "welcome" too.
                  Journey("goodbye", trigger=EventTrigger("left"), entry="wait",
                          steps={"wait": Wait(timedelta(days=1))})],
    )
    engine.identify("ann")
    engine.identify("anon-1")
    thread = threading.Thread(target=call, args=(engine,), name="held")
    thread.start()
    assert reached.wait(10)
    clock.advance(hours=1)
    engine.handle_event(Event(customer_id="ann", name="signed_up", timestamp=clock.now(),
                              event_id="ann-signup"))
    release.set()
    thread.join(10)
    assert not thread.is_alive()
    (enrollment,) = [e for e in engine.enrollments("ann") if e.journey_id == "welcome"]
    return enrollment


def _left(engine: Engine) -> object:
    return engine.handle_event(Event(customer_id="ann", name="left", timestamp=T0,
                                     event_id="ann-left"))


@pytest.mark.parametrize("call", [
    _left,
    lambda engine: engine.handle_events([Event(customer_id="ann", name="left", timestamp=T0,
                                               event_id="ann-left")]),
    lambda engine: engine.identify("ann", {"tier": "vip"}),
    lambda engine: engine.identify("ann", {"tier": "vip"}, anonymous_id="anon-1"),
    lambda engine: engine.set_consent("ann", subscribed=False),
], ids=["handle_event", "handle_events", "identify", "identify_merging", "set_consent"])
def test_a_call_that_read_the_clock_before_another_thread_enrolled_ends_after_the_entry(
    storage: Storage, monkeypatch: pytest.MonkeyPatch, call: Callable[[Engine], object]
) -> None:
    """Before, a customer's transaction decided at the clock's reading its call took before
    the customer's lock: an exit committed after another thread's entry was logged before it
    (here an hour before, the clock moved in between; microseconds with a system clock)."""
    enrollment = _exit_racing_entry(storage, monkeypatch, call)

    assert enrollment.entered_at == T0 + timedelta(hours=1)
    if enrollment.ended_at is not None:
        assert enrollment.ended_at == enrollment.entered_at
    state = storage.peek("ann")
    assert state is not None
    assert [at for _, at in state.consent.values()] in ([], [T0 + timedelta(hours=1)])
