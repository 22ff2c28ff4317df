"""SQLiteStorage against a minimal raw-SQL read-modify-write, one event per transaction.

What one event costs through the adapter (``customer()``: claim the event id, load the record,
save it with one activity-log entry) next to the least a hand-written program could do with the
same database settings (WAL, ``synchronous=NORMAL``): ``BEGIN IMMEDIATE``; ``SELECT`` the
customer's JSON; change it; ``UPDATE`` it; ``COMMIT``. Both run in one process on the same kind
of file over the same customers and the same record, taking turns block by block (``--block``
events each, alternating which goes first), so that load from other processes falls on both
alike. Reported: the best round of each side, the sum of each block's best time over the rounds
(the least disturbed figure), and the median of the rounds' own ratios.

    python bench/bench_sqlite_rmw.py                 # defaults: 20,000 events, 1,000 customers
    python bench/bench_sqlite_rmw.py --events 50000 --rounds 7
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
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


class StorageSide:
    """The adapter's side: one customer transaction per event."""

    def __init__(self, path: Path, customers: list[str], record_cache: int | None) -> None:
        self.storage = (
            SQLiteStorage(path) if record_cache is None
            else SQLiteStorage(path, record_cache=record_cache)
        )
        for cid in customers:
            with self.storage.customer(cid, T0) as session:
                session.save(record(cid), (), ())

    def run(self, customers: list[str], order: list[int], first: int) -> float:
        storage = self.storage
        start = time.perf_counter()
        for i, c in enumerate(order, first):
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

    def close(self) -> None:
        self.storage.close()


class RawSide:
    """The least a hand-written program does: BEGIN IMMEDIATE, SELECT, UPDATE, COMMIT."""

    def __init__(self, path: Path, customers: list[str]) -> None:
        self.conn = conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("CREATE TABLE customers (customer_id TEXT PRIMARY KEY, data TEXT NOT NULL)")
        conn.executemany("INSERT INTO customers VALUES (?, ?)",
                         [(cid, encode_state(record(cid))) for cid in customers])

    def run(self, customers: list[str], order: list[int], first: int) -> float:
        conn = self.conn
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

    def close(self) -> None:
        self.conn.close()


def run_round(
    tmp: Path, n: int, customers: list[str], order: list[int], block: int,
    record_cache: int | None = None,
) -> tuple[list[float], list[float]]:
    """Both sides over the same events, block by block, taking turns to go first: a burst of
    load from another process lands on both alike. Returns each side's time per block."""
    raw = RawSide(tmp / f"raw-{n}.db", customers)
    storage = StorageSide(tmp / f"cjo-{n}.db", customers, record_cache)
    raw_times: list[float] = []
    storage_times: list[float] = []
    try:
        for k, first in enumerate(range(0, len(order), block)):
            part = order[first:first + block]
            if k % 2 == 0:
                raw_times.append(raw.run(customers, part, first))
                storage_times.append(storage.run(customers, part, first))
            else:
                storage_times.append(storage.run(customers, part, first))
                raw_times.append(raw.run(customers, part, first))
    finally:
        raw.close()
        storage.close()
    return raw_times, storage_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block", type=int, default=1_000,
                        help="events per turn of each side within a round")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--record-cache", type=int, default=None, metavar="N",
                        help="SQLiteStorage(record_cache=N); 0 decodes every record it reads "
                             "(default: the adapter's own default)")
    args = parser.parse_args()

    customers = [f"c{i:06d}" for i in range(args.customers)]
    rng = random.Random(args.seed)
    order = [rng.randrange(args.customers) for _ in range(args.events)]
    rounds: list[tuple[list[float], list[float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            raw_times, storage_times = run_round(Path(tmp), n, customers, order, args.block,
                                                 args.record_cache)
            rounds.append((raw_times, storage_times))
            raw, storage = sum(raw_times), sum(storage_times)
            print(f"round {n + 1}: raw {args.events / raw:,.0f} ev/s, "
                  f"SQLiteStorage {args.events / storage:,.0f} ev/s, ratio {raw / storage:.2f}x")
    us = 1e6 / args.events
    best_raw = min(sum(r) for r, _ in rounds)
    best_storage = min(sum(s) for _, s in rounds)
    # Block k does the same work in every round: its least time is its least disturbed one.
    floor_raw = sum(min(r[k] for r, _ in rounds) for k in range(len(rounds[0][0])))
    floor_storage = sum(min(s[k] for _, s in rounds) for k in range(len(rounds[0][1])))
    ratios = sorted(sum(r) / sum(s) for r, s in rounds)
    print(f"best round:  raw {best_raw * us:.1f} us/event, SQLiteStorage "
          f"{best_storage * us:.1f} us/event, ratio {best_raw / best_storage:.2f}x")
    print(f"best blocks: raw {floor_raw * us:.1f} us/event, SQLiteStorage "
          f"{floor_storage * us:.1f} us/event, ratio {floor_raw / floor_storage:.2f}x")
    print(f"median of the rounds' ratios: {statistics.median(ratios):.2f}x "
          f"(from {ratios[0]:.2f}x to {ratios[-1]:.2f}x)")


if __name__ == "__main__":
    main()
