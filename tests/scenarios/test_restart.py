"""A process restarts on the same SQLite file: published versions and waits survive it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cjo import (
    Definitions,
    Engine,
    EventTrigger,
    Journey,
    Send,
    SQLiteStorage,
    Wait,
    dumps_definitions,
)
from cjo.errors import DefinitionError
from tests.helpers import SIMPLE_CONTENT, T0, ev, make_engine


def v1() -> Journey:
    return Journey(id="j", trigger=EventTrigger("go"), entry="wait",
                   steps={"wait": Wait(timedelta(days=1), next="send"),
                          "send": Send("hello", "email")})


def v2() -> Journey:
    return Journey(id="j", version=2, trigger=EventTrigger("go"), entry="send",
                   steps={"send": Send("hello", "sms")})


def restarted(path, clock=None):
    _, clock, channels = make_engine(clock)
    return Engine(SQLiteStorage(path), channels=channels, clock=clock), clock, channels


def test_a_new_process_knows_every_version_published_before(tmp_path):
    path = tmp_path / "cjo.db"
    first, clock, _ = restarted(path)
    first.publish(journeys=[v1()], content=SIMPLE_CONTENT)
    first.handle_event(ev("go", "old", clock.now()))
    first.storage.close()

    # The new code ships only version 2; the customer inside version 1 still finishes it.
    second, clock, channels = restarted(path, clock)
    second.publish(journeys=[v2()], content=SIMPLE_CONTENT)
    second.handle_event(ev("go", "new", clock.now()))
    clock.advance(days=1)
    second.run_due()
    assert [m.customer_id for m in channels["email"].messages] == ["old"]
    assert [m.customer_id for m in channels["sms"].messages] == ["new"]
    assert [(e.version, e.status) for e in second.enrollments("old")] == [(1, "completed")]
    assert {(j.id, j.version) for j in second.definitions.journeys} == {("j", 1), ("j", 2)}
    second.storage.close()


def test_a_published_version_stays_immutable_across_processes(tmp_path):
    path = tmp_path / "cjo.db"
    first, _, _ = restarted(path)
    first.publish(journeys=[v1()], content=SIMPLE_CONTENT)
    first.storage.close()
    second, _, _ = restarted(path)
    changed = Journey(id="j", trigger=EventTrigger("go"), entry="send",
                      steps={"send": Send("hello", "sms")})
    with pytest.raises(DefinitionError, match="already published"):
        second.publish(journeys=[changed], content=SIMPLE_CONTENT)
    second.storage.close()


def test_a_worker_that_publishes_nothing_runs_every_published_journey(tmp_path):
    path = tmp_path / "cjo.db"
    first, clock, _ = restarted(path)
    first.publish(journeys=[v1()], content=SIMPLE_CONTENT)
    first.handle_event(ev("go", "c1", clock.now()))
    first.storage.close()

    worker, clock, channels = restarted(path, clock)
    clock.advance(days=1)
    worker.run_due()
    assert [m.customer_id for m in channels["email"].messages] == ["c1"]
    worker.storage.close()


def test_a_wait_of_an_unknown_version_is_kept_not_dropped(tmp_path, caplog):
    path = tmp_path / "cjo.db"
    first, clock, _ = restarted(path)
    first.publish(journeys=[v1()], content=SIMPLE_CONTENT)
    first.handle_event(ev("go", "c1", clock.now()))
    # As if the stored definitions had lost version 1 (say, written by a tool that dropped it).
    first.storage.append_definitions(first.generation, dumps_definitions(Definitions()))
    first.storage.close()

    blind, clock, channels = restarted(path, clock)
    clock.advance(days=2)
    with caplog.at_level("WARNING", logger="cjo.engine"):
        assert blind.run_due().nothing_happened
        clock.advance(minutes=10)  # the lease has run out: claimed again, not said again
        assert blind.run_due().nothing_happened
    said = [r.getMessage() for r in caplog.records if "do not hold" in r.getMessage()]
    assert len(said) == 1 and "'c1'" in said[0] and "version 1" in said[0]
    (waiting,) = blind.enrollments("c1")
    assert waiting.active
    assert waiting.wake_at == T0 + timedelta(days=1)

    # Once version 1 is published again, the wait fires at its scheduled instant.
    blind.publish(journeys=[v1()], content=SIMPLE_CONTENT)
    clock.advance(minutes=10)  # the blind pass's lease on the wake-up has run out
    blind.run_due()
    assert [m.created_at for m in channels["email"].messages] == [T0 + timedelta(days=1)]
    blind.storage.close()
