"""SQLiteStorage against a minimal raw-SQL read-modify-write, one event per transaction.

What one event costs through the adapter (``customer()``: claim the event id, load the record,
save it with one activity-log entry) next to the least a hand-written program could do with the
same database settings (WAL, ``synchronous=NORMAL``): ``BEGIN IMMEDIATE``; ``SELECT`` the
customer's JSON; change it; ``UPDATE`` it; ``COMMIT``. Both run in one process on the same kind
of file, alternately, over the same customers and the same record; the best of ``--rounds`` is
kept for each.

    python bench/bench_sqlite_rmw.py                 # defaults: 20,000 events, 1,000 customers
    python bench/bench_sqlite_rmw.py --events 50000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cjo.model.events import Profile
from cjo.runtime.state import Activity, CustomerState, Enrollment, EntryHistory
from cjo.storage.codec import encode_state
from cjo.storage.sqlite import SQLiteStorage

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def record(customer_id: str) -> CustomerState:
    """A small record: a profile, one waiting enrollment, one entry history."""
    return CustomerState(
        customer_id=customer_id,
        created_at=T0 - timedelta(days=3),
        profile=Profile(customer_id, {"first_name": "Ada", "plan": "pro", "visits": 0},
                        locale="en-GB"),
        enrollments=[Enrollment(
            f"cart:{customer_id}:1", "cart", 1, customer_id, T0, step_id="wait_purchase",
            step_entered_at=T0, wake_at=T0 + timedelta(hours=4),
            context={"item": "shoes", "price": 59.0},
        )],
        history={("cart", None): EntryHistory(1, [T0])},
    )


def run_storage(path: Path, customers: list[str], order: list[int]) -> float:
    storage = SQLiteStorage(path)
    try:
        for cid in customers:
            with storage.customer(cid, T0) as session:
                session.save(record(cid), (), ())
        start = time.perf_counter()
        for i, c in enumerate(order):
            cid = customers[c]
            now = T0 + timedelta(microseconds=i)
            with storage.customer(cid, now) as session:
                if not session.claim_event(f"e{i}"):
                    continue
                state = session.load()
                assert state is not None
                profile = state.profile
                assert profile is not None
                attributes = dict(profile.attributes)
                attributes["visits"] += 1
                state.profile = Profile(cid, attributes, profile.timezone, profile.locale)
                session.save(state, (), [
                    Activity(now, cid, f"cart:{cid}:1", "cart", 1, "wait_purchase",
                             "event_received", "page_viewed")
                ])
        return time.perf_counter() - start
    finally:
        storage.close()


def run_raw(path: Path, customers: list[str], order: list[int]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("CREATE TABLE customers (customer_id TEXT PRIMARY KEY, data TEXT NOT NULL)")
        conn.executemany("INSERT INTO customers VALUES (?, ?)",
                         [(cid, encode_state(record(cid))) for cid in customers])
        start = time.perf_counter()
        for c in order:
            cid = customers[c]
            conn.execute("BEGIN IMMEDIATE")
            (data,) = conn.execute(
                "SELECT data FROM customers WHERE customer_id = ?", (cid,)
            ).fetchone()
            value = json.loads(data)
            value["profile"]["a"]["visits"] += 1
            conn.execute("UPDATE customers SET data = ? WHERE customer_id = ?",
                         (json.dumps(value, separators=(",", ":")), cid))
            conn.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    customers = [f"c{i:06d}" for i in range(args.customers)]
    rng = random.Random(args.seed)
    order = [rng.randrange(args.customers) for _ in range(args.events)]
    best_storage = best_raw = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            raw = run_raw(Path(tmp) / f"raw-{n}.db", customers, order)
            storage = run_storage(Path(tmp) / f"cjo-{n}.db", customers, order)
            best_raw, best_storage = min(best_raw, raw), min(best_storage, storage)
            print(f"round {n + 1}: raw {args.events / raw:,.0f} ev/s, "
                  f"SQLiteStorage {args.events / storage:,.0f} ev/s")
    raw_rate, storage_rate = args.events / best_raw, args.events / best_storage
    print(f"best: raw read-modify-write {raw_rate:,.0f} events/s "
          f"({best_raw / args.events * 1e6:.1f} us/event)")
    print(f"best: SQLiteStorage         {storage_rate:,.0f} events/s "
          f"({best_storage / args.events * 1e6:.1f} us/event)")
    print(f"ratio SQLiteStorage / raw: {storage_rate / raw_rate:.2f}x")


if __name__ == "__main__":
    main()
