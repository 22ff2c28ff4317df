"""SQLite files shared by several processes: a write lock held past the busy timeout, and the
write-ahead log a long reader made grow."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cjo import ConflictError, Engine, ManualClock, ProfileUpdate
from cjo.storage import sqlite as sqlite_module
from cjo.storage.sqlite import WAL_SIZE_LIMIT, SQLiteStorage

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

# Another process takes the database's write lock and keeps it until its stdin closes.
_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.read()
"""


def test_a_write_lock_held_past_the_busy_timeout_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    storage = SQLiteStorage(path, busy_timeout=timedelta(milliseconds=200))
    engine = Engine(storage=storage, clock=ManualClock(T0))
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(ConflictError) as raised:
            engine.identify("ann", {"plan": "pro"})
        message = str(raised.value)
        assert message.startswith(f"SQLite {str(path)!r}: customer transaction: begin "
                                  "transaction: the database stayed locked by another writer "
                                  "for longer than busy_timeout (0.2 s)")
        assert "safe to retry" in message
        assert "give SQLiteStorage a longer busy_timeout= or have fewer processes write" in message

        with pytest.raises(ConflictError, match=r"^item #0: .*busy_timeout \(0.2 s\)"):
            engine.handle_events([ProfileUpdate("bob", {"plan": "pro"})])
        # A database at the current schema opens without the write lock: reads go on.
        with SQLiteStorage(path, busy_timeout=timedelta(0)) as reader:
            assert reader.peek("bob") is None and reader.definitions_generation() == 0
    finally:
        holder.communicate("")
    engine.identify("ann", {"plan": "pro"})  # the lock released: the retry goes through
    assert storage.peek("ann") is not None
    storage.close()


def test_every_connection_limits_the_write_ahead_log(tmp_path: Path) -> None:
    path = tmp_path / "cjo.db"
    storages = [SQLiteStorage(path), SQLiteStorage(path), SQLiteStorage(":memory:")]
    try:
        for storage in storages:
            limit = storage._connection().execute("PRAGMA journal_size_limit").fetchone()
            assert limit == (WAL_SIZE_LIMIT,), storage
    finally:
        for storage in storages:
            storage.close()


def test_the_log_a_long_reader_made_grow_is_cut_back_after_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader holds a snapshot while a writer keeps writing: no checkpoint can finish, and
    the log grows. Once the reader is gone, a checkpoint and the next write cut it back to the
    limit (SQLite alone would keep it at its largest)."""
    limit = 64 * 1024
    monkeypatch.setattr(sqlite_module, "WAL_SIZE_LIMIT", limit)
    path = tmp_path / "cjo.db"
    wal = Path(f"{path}-wal")
    storage = SQLiteStorage(path)
    try:
        engine = Engine(storage=storage, clock=ManualClock(T0))
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM customers").fetchone()  # holds its snapshot
        engine.handle_events([ProfileUpdate(f"c{i}", {"bio": "x" * 500}) for i in range(2000)])
        storage._connection().execute("PRAGMA wal_checkpoint(PASSIVE)")
        grown = os.path.getsize(wal)
        assert grown > 4 * limit
        reader.execute("COMMIT")
        reader.close()
        storage._connection().execute("PRAGMA wal_checkpoint(PASSIVE)")
        engine.identify("ann", {"plan": "pro"})  # the writer starts the log over, and cuts it
        assert os.path.getsize(wal) <= limit
    finally:
        storage.close()
