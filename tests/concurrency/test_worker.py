"""cjo.worker.run_worker: the loop that fires due wake-ups and retries deliveries."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cjo import (
    ContentItem,
    DeliveryResult,
    Engine,
    Event,
    EventTrigger,
    InMemoryStorage,
    Journey,
    ManualClock,
    Message,
    RecordingChannel,
    Send,
    Variant,
    Wait,
)
from cjo.errors import ConflictError, UsageError
from cjo.storage.base import Storage
from cjo.worker import WorkerStats, run_worker

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def journey() -> Journey:
    return Journey(
        id="nudge", trigger=EventTrigger("signed_up"), entry="wait",
        steps={"wait": Wait(timedelta(hours=1), next="send"), "send": Send("hi", "email")},
    )


CONTENT = ContentItem("hi", (Variant("email", {"subject": "Hi", "text": "Hi"}),))


def engine_on(storage: object, clock: ManualClock, channel: object) -> Engine:
    engine = Engine(storage, channels={"email": channel}, clock=clock)  # type: ignore[arg-type,dict-item]
    engine.publish(journeys=[journey()], content=[CONTENT])
    return engine


def sign_up(engine: Engine, customers: int) -> None:
    now = engine.clock.now()
    engine.handle_events(
        Event(customer_id=f"c{i}", name="signed_up", timestamp=now, event_id=f"e{i}")
        for i in range(customers)
    )


def test_fires_due_wakeups_then_stops_after_max_iterations() -> None:
    clock = ManualClock(T0)
    channel = RecordingChannel()
    engine = engine_on(None, clock, channel)
    sign_up(engine, 3)
    clock.advance(hours=2)
    stats = run_worker(engine, poll_interval=60, max_iterations=2)
    # The first pass did the work; the second found nothing and returned without waiting.
    assert stats == WorkerStats(iterations=2, steps=3, messages=3, ended=3)
    assert sorted(m.customer_id for m in channel.messages) == ["c0", "c1", "c2"]
    assert [m.created_at for m in channel.messages] == [T0 + timedelta(hours=1)] * 3


def test_idle_passes_wait_poll_interval() -> None:
    engine = engine_on(None, ManualClock(T0), RecordingChannel())
    started = time.monotonic()
    stats = run_worker(engine, poll_interval=0.05, max_iterations=3)
    assert stats.iterations == 3
    assert stats.idle_waits == 2  # never after the last pass
    assert 0.09 < time.monotonic() - started < 2


def test_a_set_stop_ends_the_wait_at_once() -> None:
    engine = engine_on(None, ManualClock(T0), RecordingChannel())
    stop = threading.Event()
    result: list[WorkerStats] = []
    thread = threading.Thread(target=lambda: result.append(
        run_worker(engine, stop=stop, poll_interval=30)
    ))
    started = time.monotonic()
    thread.start()
    time.sleep(0.1)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 5
    assert result[0].iterations >= 1
    assert result[0].idle_waits == result[0].iterations


def test_an_already_set_stop_does_nothing() -> None:
    stop = threading.Event()
    stop.set()
    engine = engine_on(None, ManualClock(T0), RecordingChannel())
    assert run_worker(engine, stop=stop) == WorkerStats()
    assert run_worker(engine, max_iterations=0) == WorkerStats()


def test_failed_deliveries_are_retried_by_the_loop() -> None:
    class FailOnce(RecordingChannel):
        failed = False

        def send(self, message: Message) -> DeliveryResult:
            if not self.failed:
                self.failed = True
                return DeliveryResult("transient", error="try later")
            return super().send(message)

    clock = ManualClock(T0)
    channel = FailOnce()
    engine = engine_on(None, clock, channel)
    sign_up(engine, 1)
    clock.advance(hours=1)
    first = run_worker(engine, max_iterations=1)
    assert (first.messages, first.dispatched, channel.messages) == (1, 0, [])
    clock.advance(minutes=1)  # the engine's first retry is a minute later
    second = run_worker(engine, max_iterations=1)
    assert second.dispatched == 1
    assert [m.customer_id for m in channel.messages] == ["c0"]


def test_storage_errors_are_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    class Flaky(InMemoryStorage):
        failures = 2

        def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list:  # type: ignore[type-arg]
            if self.failures:
                self.failures -= 1
                raise ConflictError("busy")
            return super().claim_due(now, limit, lease)

    clock = ManualClock(T0)
    channel = RecordingChannel()
    engine = engine_on(Flaky(), clock, channel)
    sign_up(engine, 1)
    clock.advance(hours=1)
    stats = run_worker(engine, poll_interval=0, max_iterations=4)
    assert (stats.errors, stats.messages) == (2, 1)
    assert len(channel.messages) == 1
    assert "cjo worker pass failed" in caplog.text


class _Waits:
    """A stop that is never set and records the waits asked of it."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def is_set(self) -> bool:
        return False

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return False


def test_failing_passes_back_off_and_a_good_pass_resets_the_wait() -> None:
    # A database that is down is not retried in a tight loop (poll_interval=0 made it one,
    # a traceback logged each time): the wait doubles with each failure in a row, up to a
    # bound, and is poll_interval again once a pass succeeds.
    from cjo.errors import StorageError
    from cjo.worker import MAX_FAILURE_WAIT

    class Down(InMemoryStorage):
        failures = 12

        def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list:  # type: ignore[type-arg]
            if self.failures:
                self.failures -= 1
                raise StorageError("connection refused")
            return super().claim_due(now, limit, lease)

    engine = engine_on(Down(), ManualClock(T0), RecordingChannel())
    stop = _Waits()
    stats = run_worker(engine, stop=stop, poll_interval=0, max_iterations=14)  # type: ignore[arg-type]
    assert stats.errors == 12
    assert stop.waits[:3] == [0.05, 0.1, 0.2]
    assert max(stop.waits) == MAX_FAILURE_WAIT == stop.waits[11]
    assert stop.waits[12] == 0   # a good pass: poll_interval again
    longer = _Waits()
    engine = engine_on(Down(), ManualClock(T0), RecordingChannel())
    run_worker(engine, stop=longer, poll_interval=60, max_iterations=3)  # type: ignore[arg-type]
    assert longer.waits == [60, 60]  # never shorter than poll_interval, nor past it when longer


def test_other_errors_propagate() -> None:
    class Broken(InMemoryStorage):
        def claim_outbox(
            self, now: datetime, limit: int, lease: timedelta, *,
            channels: Collection[str] | None = None,
        ) -> list[Message]:
            raise RuntimeError("bug")

    engine = engine_on(Broken(), ManualClock(T0), RecordingChannel())
    with pytest.raises(RuntimeError, match="bug"):
        run_worker(engine, max_iterations=1)


@pytest.mark.parametrize("kwargs", [{"poll_interval": -1}, {"max_iterations": -1}])
def test_bad_arguments(kwargs: dict[str, float]) -> None:
    engine = engine_on(None, ManualClock(T0), RecordingChannel())
    with pytest.raises(UsageError, match="must be >= 0"):
        run_worker(engine, **kwargs)  # type: ignore[arg-type]


@pytest.mark.postgres
def test_worker_threads_share_a_postgres_database(postgres_dsn: str, postgres_schema: str) -> None:
    """Two loops on two storage handles share out one backlog: each send happens once."""
    from cjo.storage.postgres import PostgresStorage

    clock = ManualClock(T0)
    storages = [PostgresStorage(postgres_dsn, schema=postgres_schema, max_size=2)
                for _ in range(3)]
    try:
        sign_up(engine_on(storages[0], clock, RecordingChannel()), 60)
        clock.advance(hours=2)
        channels = [RecordingChannel(), RecordingChannel()]
        engines = [engine_on(s, clock, c) for s, c in zip(storages[1:], channels, strict=True)]
        for engine in engines:
            engine.due_batch_size = 3  # so the two loops take turns
        stop = threading.Event()
        stats: list[WorkerStats] = []
        threads = [threading.Thread(target=lambda e=e: stats.append(
            run_worker(e, stop=stop, poll_interval=0.02)
        )) for e in engines]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while storages[0].next_wake_at() is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        for t in threads:
            t.join(10)
        keys = [m.idempotency_key for c in channels for m in c.messages]
        prefixes = sorted(f"{k.split('.')[0]}:{k.split(':', 3)[-1]}" for k in keys)
        assert prefixes == sorted(f"nudge:c{i}:1:send:1" for i in range(60))
        assert sum(s.messages for s in stats) == 60
        assert all(not t.is_alive() for t in threads)
    finally:
        for s in storages:
            s.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_a_pass_whose_dispatch_fails_still_counts_the_wake_ups_it_fired(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wake-ups committed (and their messages sent) before the pass's dispatch failed."""
    storage: Storage
    if kind == "memory":
        storage = InMemoryStorage()
    elif kind == "sqlite":
        from cjo.storage.sqlite import SQLiteStorage

        storage = SQLiteStorage(tmp_path / "cjo.db")
    else:
        from cjo.storage.postgres import PostgresStorage

        storage = PostgresStorage(
            request.getfixturevalue("postgres_dsn"),
            schema=request.getfixturevalue("postgres_schema"),
        )
    try:
        clock = ManualClock(T0)
        channel = RecordingChannel()
        engine = engine_on(storage, clock, channel)
        sign_up(engine, 2)
        clock.advance(hours=1)

        def busy(*args: object, **kwargs: object) -> list[Message]:
            raise ConflictError("busy")

        monkeypatch.setattr(storage, "claim_outbox", busy)
        stats = run_worker(engine, poll_interval=0, max_iterations=1)
        assert len(channel.messages) == 2  # sent inline by run_due, before the failure
        assert stats == WorkerStats(iterations=1, steps=2, messages=2, ended=2, errors=1)
    finally:
        storage.close()


def test_a_poll_interval_too_long_to_wait_is_refused_before_any_pass() -> None:
    clock = ManualClock(T0)
    channel = RecordingChannel()
    engine = engine_on(None, clock, channel)
    sign_up(engine, 1)
    clock.advance(hours=1)
    with pytest.raises(UsageError, match="poll_interval must be at most 9223372036 seconds"):
        run_worker(engine, poll_interval=1e10, max_iterations=2)
    assert channel.messages == []  # refused before the first pass
