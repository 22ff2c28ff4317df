"""Operating the engine: the housekeeping the worker loop does on every storage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cjo import (
    ContentItem,
    Engine,
    EventTrigger,
    Journey,
    ManualClock,
    RecordingChannel,
    Retention,
    Send,
    Variant,
    Wait,
)
from cjo.errors import ConflictError, StorageError
from cjo.storage.base import Storage
from tests.helpers import Factory
from tests.helpers import event_with_id as _event

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def test_a_prune_that_failed_is_tried_again_by_the_next_pass(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock(T0)
    engine = Engine(storage, clock=clock, retention=Retention(), prune_every=timedelta(hours=1))
    engine.run_due()  # the first pass prunes, and starts the interval
    pruned: list[datetime] = []
    real_prune = storage.prune

    def prune(now: datetime, retention: Retention) -> object:
        pruned.append(now)
        if len(pruned) == 1:
            raise ConflictError("the database stayed locked")
        return real_prune(now, retention)

    monkeypatch.setattr(storage, "prune", prune)
    clock.advance(hours=1)
    with pytest.raises(ConflictError):
        engine.run_due()
    clock.advance(minutes=1)
    engine.run_due()  # not an hour after the failed prune: it is due still
    assert pruned == [T0 + timedelta(hours=1), T0 + timedelta(hours=1, minutes=1)]
    clock.advance(minutes=30)
    engine.run_due()  # an hour is timed from the prune that succeeded
    assert len(pruned) == 2


def test_a_process_that_lives_for_one_pass_prunes(storage_factory: Factory) -> None:
    """A job that builds an engine and calls ``run_due`` once (from cron, say) keeps storage
    bounded: an engine's first pass prunes what is past retention."""
    clock = ManualClock(T0)
    week = timedelta(days=7)
    retention = Retention(event_ids=week, outbox=week, activity=week)
    note = ContentItem("note", variants=(Variant("email", {"subject": "Hi", "text": "Hi"}),))
    web = Engine(storage_factory(), {"email": RecordingChannel()}, clock, retention=retention)
    web.publish(content=[note], journeys=[
        Journey("hello", trigger=EventTrigger("signed_up"), entry="m",
                steps={"m": Send("note", "email")})])
    web.handle_event(_event("signed_up", "ann", T0, "s1"))
    assert web.activities(T0, T0 + week)
    for day in (8, 9):  # a job each night, each its own process and engine
        clock.set(T0 + timedelta(days=day))
        job = Engine(storage_factory(), {"email": RecordingChannel()}, clock,
                     retention=retention)
        job.run_due()
    assert job.activities(T0, T0 + week) == []
    left = job.prune()  # the event id, the message and the log: gone already
    assert (left.event_ids, left.outbox, left.activity) == (0, 0, 0)


def _held_in_a_paused_drip(storage: Storage) -> tuple[Engine, RecordingChannel, ManualClock]:
    """Ann in a paused drip journey, her wake-up (due an hour after entry) held by the pause."""
    clock = ManualClock(T0)
    email = RecordingChannel()
    engine = Engine(storage, {"email": email}, clock)
    note = ContentItem("note", variants=(Variant("email", {"subject": "Hi", "text": "Hi"}),))
    engine.publish(content=[note], journeys=[
        Journey("drip", trigger=EventTrigger("signed_up"), entry="wait",
                steps={"wait": Wait(timedelta(hours=1), next="m"), "m": Send("note", "email")})])
    engine.handle_event(_event("signed_up", "ann", T0, "s1"))
    engine.pause_journey("drip")
    clock.advance(hours=2)
    engine.run_due()
    return engine, email, clock


def test_a_resume_whose_release_failed_releases_the_held_customers_at_the_next_pass(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held wake-ups are never claimed: a resume committed, but whose release of the held
    customers failed (the database went away), is released by the engine's next pass."""
    engine, email, clock = _held_in_a_paused_drip(storage)
    (held,) = engine.enrollments("ann")
    assert held.held_at == T0 + timedelta(hours=1)
    real_batch = storage.batch
    calls: list[object] = []

    def batch(*args: object, **kwargs: object) -> object:
        calls.append(args)
        if len(calls) == 1:
            raise StorageError("the database went away")
        return real_batch(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(storage, "batch", batch)
    with pytest.raises(StorageError, match="went away"):
        engine.resume_journey("drip")
    assert email.messages == []
    clock.advance(minutes=1)
    engine.run_due()  # what the worker loop does next
    assert [m.created_at for m in email.messages] == [T0 + timedelta(hours=2)]
    assert engine.enrollments("ann")[0].status == "completed"


def test_customers_a_cut_short_release_left_held_are_released_by_pausing_and_resuming_again(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine that resumed stopped before its release was done: a process started later
    does not know of the resume (its customers stay held), and a pause and a resume release
    them, as docs/semantics.md says."""
    engine, email, clock = _held_in_a_paused_drip(storage)
    real_batch = storage.batch

    def batch(*args: object, **kwargs: object) -> object:
        raise StorageError("the database went away")

    monkeypatch.setattr(storage, "batch", batch)
    with pytest.raises(StorageError, match="went away"):
        engine.resume_journey("drip")
    monkeypatch.setattr(storage, "batch", real_batch)
    del engine  # stopped for good before its next pass
    later = Engine(storage, {"email": email}, clock)
    clock.advance(minutes=1)
    later.run_due()
    assert email.messages == []
    assert later.enrollments("ann")[0].held_at == T0 + timedelta(hours=1)
    later.pause_journey("drip")
    later.resume_journey("drip")
    assert [m.customer_id for m in email.messages] == ["ann"]
    assert later.enrollments("ann")[0].status == "completed"
