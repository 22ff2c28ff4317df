"""A real process killed (``os._exit``, no cleanup) inside a SQLite transaction.

The child runs the workload on a database file and dies inside storage call N, after that call
did its writes but before the transaction commits. Afterwards the file must pass SQLite's
integrity check, hold exactly what a clean rollback at the same point leaves (row for row),
and a restarted engine replaying the workload must end where a run without a crash ends, with
every message delivered exactly once.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from cjo.storage.sqlite import SQLiteStorage
from tests.faults.crashing import CrashingStorage, SimulatedCrash
from tests.faults.scenario import World, child_main, recover, run, snapshot

KILLED = 77
TABLES = ("customers", "events", "outbox", "activity", "activity_totals", "definitions",
          "settings", "cjo_schema")


def _baseline(tmp: Path) -> tuple[list[str], object, set[str]]:
    storage = CrashingStorage(SQLiteStorage(tmp / "baseline.db"))
    try:
        world = World.new(storage)
        engine, clock = world.engine()
        run(engine, clock)
        calls = list(storage.calls)
        recover(engine, clock)
        keys = set(world.deliveries())
        return calls, snapshot(storage.inner, keys), keys
    finally:
        storage.close()


def _points(calls: list[str]) -> dict[str, tuple[int, bool]]:
    """Named crash points, found in the clean run's sequence of calls: the call to die in, and
    whether to die later, inside that call's commit (after the rows are written)."""
    batch = calls.index("batch.enter")
    saves_in_batch = [n for n in range(batch, len(calls)) if calls[n] == "save"]
    sending = next(  # a save whose transaction wrote a message (a reminder from run_due)
        n for n in range(len(calls) - 3)
        if calls[n] == "save" and calls[n + 1].endswith(".commit")
        and calls[n + 2].endswith(".exit") and calls[n + 3] == "complete_outbox_many"
    )
    return {
        # 1-based call numbers
        "mid-batch save": (saves_in_batch[4] + 1, False),
        "save that queues a message": (sending + 1, False),
        "just before commit": (sending + 2, False),
        "inside commit, rows written": (sending + 2, True),
    }


def _rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in TABLES}
    finally:
        conn.close()


def _rolled_back_at(tmp: Path, n: int) -> Path:
    """The database a clean, in-process rollback at call ``n`` leaves."""
    path = tmp / f"rollback{n}.db"
    storage = CrashingStorage(SQLiteStorage(path), n)
    engine, clock = World.new(storage).engine()
    with pytest.raises(SimulatedCrash):
        run(engine, clock)
    storage.close()
    return path


@pytest.mark.parametrize("point", ["mid-batch save", "save that queues a message",
                                   "just before commit", "inside commit, rows written"])
def test_killed_mid_transaction_then_replay(tmp_path: Path, point: str) -> None:
    calls, expected, expected_keys = _baseline(tmp_path)
    n, in_commit = _points(calls)[point]
    path, ledger = tmp_path / "killed.db", tmp_path / "ledger.txt"
    ledger.touch()

    # spawn, not fork: a clean interpreter, as a real second process would be.
    child = multiprocessing.get_context("spawn").Process(
        target=child_main, args=(str(path), n, str(ledger), KILLED, in_commit)
    )
    child.start()
    child.join(120)
    assert child.exitcode == KILLED, f"the child did not die where it was meant to ({point})"

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    assert _rows(path) == _rows(_rolled_back_at(tmp_path, n)), (
        "the killed transaction left something behind"
    )

    # Restart: a new process replays everything, then a later worker recovers.
    storage = SQLiteStorage(path)
    try:
        world = World.new(storage, ledger)
        engine, clock = world.engine()
        run(engine, clock)
        recover(engine, clock)
        assert snapshot(storage, expected_keys) == expected
    finally:
        storage.close()
    delivered = Counter(ledger.read_text().split())
    assert set(delivered) == expected_keys
    assert set(delivered.values()) == {1}, "nothing was delivered twice"
