"""Crash at every storage call, restart, replay everything: the end state is the clean run's.

For each crash point N: a fresh database, the workload until storage call N "kills the
process", then a new engine on the same database (a new adapter object for a durable one)
replays the whole workload from the start, and a later worker recovers (expired wake-up leases,
undispatched outbox). The database must then hold exactly what a run without a crash left, the
providers must have delivered exactly the expected messages, and a message may have been
delivered twice only when the crash fell between its delivery and ``complete_outbox``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.conftest import StorageFactory
from tests.faults.crashing import CrashingStorage, SimulatedCrash
from tests.faults.scenario import (
    CUSTOMERS,
    Snapshot,
    World,
    recover,
    run,
    snapshot,
)

EDGE = 25  # crash points always run at each end of the workload


def _baseline(factory: StorageFactory, tmp: Path) -> tuple[list[str], Snapshot, dict[str, int]]:
    tmp.mkdir()
    storage = CrashingStorage(factory.fresh(tmp))
    try:
        world = World.new(storage)
        engine, clock = world.engine()
        run(engine, clock)
        calls = list(storage.calls)
        recover(engine, clock)
        deliveries = world.deliveries()
        return calls, snapshot(storage.inner, set(deliveries)), deliveries
    finally:
        storage.close()


def crash_points(calls: list[str], budget: int) -> list[int]:
    """Every call if the budget allows (or CJO_FAULTS_ALL=1); else, in this order of priority,
    both ends of the run and the first call of every verb (always), the last call of every
    verb, and evenly spread points in between."""
    total = len(calls)
    if total <= budget or os.environ.get("CJO_FAULTS_ALL") == "1":
        return list(range(1, total + 1))
    edge = min(EDGE, budget // 5)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for n, verb in enumerate(calls, 1):
        first.setdefault(verb, n)
        last[verb] = n
    points = set(range(1, edge + 1)) | set(range(total - edge + 1, total + 1))
    points |= set(first.values())
    for n in sorted(set(last.values())):
        if len(points) >= budget:
            break
        points.add(n)
    spare = budget - len(points)
    if spare > 0:
        points |= {1 + (k * total) // spare for k in range(spare)}
    return sorted(points)


def test_the_clean_run_is_what_the_journey_promises(
    storage_factory: StorageFactory, tmp_path: Path
) -> None:
    calls, expected, deliveries = _baseline(storage_factory, tmp_path / "baseline")
    assert set(deliveries.values()) == {1}
    emails = {k for k in deliveries if k.endswith(":email:1")}
    sms = {k for k in deliveries if k.endswith(":sms:1")}
    assert len(emails) == 16  # 20, less 4 who bought within four hours
    assert len(sms) == 12  # 16, less 2 who opened the email and 2 who bought after it
    assert emails | sms == set(deliveries)
    assert set(expected.outbox.values()) == {"delivered"}
    assert expected.next_wake_at is None
    assert expected.active == {}
    statuses = {}
    for c in CUSTOMERS:
        record = expected.records[c]
        assert record is not None
        assert record.enrollments == []
        statuses[c] = [x.status for x in record.ended]
    assert sorted(s for (s,) in statuses.values()) == ["completed"] * 14 + ["converted"] * 6
    # The workload exercises every verb of a customer transaction and of delivery.
    assert {"batch.enter", "batch.commit", "batch.exit", "claim_event", "load", "save",
            "due_batch.enter", "due_batch.commit", "claim_outbox", "complete_outbox_many",
            "outbox_entry"} <= set(calls)


def test_crash_anywhere_then_replay_converges(
    storage_factory: StorageFactory, tmp_path: Path
) -> None:
    calls, expected, expected_deliveries = _baseline(storage_factory, tmp_path / "baseline")
    points = crash_points(calls, storage_factory.budget)
    assert {calls[n - 1] for n in points} == set(calls), "every verb is crashed at least once"
    failures: list[str] = []
    for n in points:
        problem = _crash_and_replay(storage_factory, tmp_path / f"crash{n}", n, expected,
                                    expected_deliveries)
        if problem:
            failures.append(f"crash at call {n} ({calls[n - 1]}): {problem}")
    assert not failures, f"{len(failures)} of {len(points)} crash points failed:\n" + "\n".join(
        failures[:10]
    )


def _crash_and_replay(
    factory: StorageFactory, tmp: Path, n: int, expected: Snapshot,
    expected_deliveries: dict[str, int],
) -> str | None:
    tmp.mkdir()
    storage = CrashingStorage(factory.fresh(tmp), crash_at=n)
    world = World.new(storage)
    try:
        engine, clock = world.engine()  # publishing reads and writes storage too
        run(engine, clock)
    except SimulatedCrash:
        pass
    else:
        storage.close()
        return "the workload finished without crashing"
    assert storage.crashed is not None
    # Delivered before the crash but not yet recorded as delivered: the only keys a provider
    # may legitimately see twice (it de-duplicates them by idempotency key).
    unrecorded = set()
    for key in world.deliveries():
        entry = storage.inner.outbox_entry(key)
        if entry is None or entry.status == "pending":
            unrecorded.add(key)

    restarted = factory.restart(storage.inner)
    try:
        engine, clock = world.engine(restarted)
        run(engine, clock)
        recover(engine, clock)
        got = snapshot(restarted, set(expected_deliveries))
    finally:
        restarted.close()

    if got != expected:
        diff = [f"{field}: {getattr(got, field)!r} != {getattr(expected, field)!r}"
                for field in ("records", "activity", "outbox", "next_wake_at", "active")
                if getattr(got, field) != getattr(expected, field)]
        return "final state differs: " + "; ".join(d[:400] for d in diff)
    deliveries = world.deliveries()
    if set(deliveries) != set(expected_deliveries):
        missing = set(expected_deliveries) - set(deliveries)
        unexpected = set(deliveries) - set(expected_deliveries)
        return f"deliveries differ: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
    twice = {key for key, count in deliveries.items() if count > 1}
    if max(deliveries.values()) > 2:
        return f"delivered more than twice: {deliveries}"
    if not twice <= unrecorded:
        return f"delivered twice: {sorted(twice - unrecorded)}"
    return None


@pytest.mark.parametrize(
    ("calls", "budget", "expected"),
    [
        (["a", "b", "c"], 10, [1, 2, 3]),
        (["x"] * 200, 60, None),
    ],
)
def test_crash_points_cover_the_ends_and_every_verb(
    calls: list[str], budget: int, expected: list[int] | None
) -> None:
    points = crash_points(calls, budget)
    if expected is not None:
        assert points == expected
    else:
        edge = budget // 5
        assert points[:edge] == list(range(1, edge + 1))
        assert points[-edge:] == list(range(201 - edge, 201))
        assert len(points) <= budget
