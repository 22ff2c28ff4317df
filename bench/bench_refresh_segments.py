"""What ``Engine.refresh_segments`` costs per stored customer, on each storage adapter.

Stores ``--customers`` profiles (attributes only, imported with ``handle_events`` in groups),
publishes one new attribute segment, then times:

- **refresh**: ``refresh_segments()`` evaluating every customer against the new definitions
  (each one's record read, judged, written back with its membership, one transaction per
  group of ``--batch`` customers);
- **again**: a second ``refresh_segments()``, when every record is already evaluated against
  these definitions (the walk only reads and compares);

and reports milliseconds per customer, and the members the segment got (the same on every
adapter: a difference is a bug).

    PYTHONPATH=src python bench/bench_refresh_segments.py --customers 20000 \\
        --storage memory,sqlite:////tmp/cjo-refresh.db,postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from bench_engine import StorageTarget

from cjo import Engine, ManualClock, ProfileUpdate, Segment, attr

T0 = datetime(2026, 1, 1, tzinfo=UTC)
COUNTRIES = ("SE", "NO", "FR", "DE", "US", "JP")


def profiles(customers: int) -> list[ProfileUpdate]:
    return [
        ProfileUpdate(f"c{i:07d}", {"country": COUNTRIES[i % len(COUNTRIES)],
                                    "lifetime_spend": (i * 37) % 500})
        for i in range(customers)
    ]


def measure(url: str, customers: int, batch: int) -> dict[str, float]:
    target = StorageTarget(url)
    storage = target.open("refresh")
    try:
        engine = Engine(storage, clock=ManualClock(T0))
        engine.handle_events(profiles(customers))
        engine.publish(segments=[Segment("big_spenders", attr("lifetime_spend") > 400)])
        began = time.perf_counter()
        engine.refresh_segments(batch_size=batch)
        refresh = time.perf_counter() - began
        began = time.perf_counter()
        engine.refresh_segments(batch_size=batch)
        again = time.perf_counter() - began
        members = len(engine.segment_members("big_spenders"))
    finally:
        storage.close()
        target.cleanup(keep=False)
    return {"refresh_ms": refresh * 1000 / customers, "again_ms": again * 1000 / customers,
            "members": members}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--storage", default="memory,sqlite:////tmp/cjo-bench-refresh.db")
    args = p.parse_args()
    print(f"{args.customers:,} customers, one new attribute segment, groups of {args.batch}")
    print(f"{'storage':<50} {'refresh ms/customer':>20} {'again ms/customer':>18} {'members':>8}")
    for url in args.storage.split(","):
        r = measure(url, args.customers, args.batch)
        print(f"{url:<50} {r['refresh_ms']:>20.4f} {r['again_ms']:>18.4f} {r['members']:>8,}")


if __name__ == "__main__":
    main()
