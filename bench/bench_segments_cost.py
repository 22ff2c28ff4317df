"""The cost per event of real-time segments: 50 segments against none, on one event stream.

Builds one seeded stream (a profile per customer, then ``--events`` events each: page views
with a category, purchases with a total, logins, spread over ``--days``), and runs it twice in
this process, through ``handle_events`` batches and ``run_due`` per simulated hour, on an
``InMemoryStorage``: once with nothing published, once with 50 segments (25 on profile
attributes, 25 on event history: counts in rolling windows, sums, last-performed, inactivity).
Reports the wall time per event of each pass, their ratio, and the mean bytes of the stored
record (the JSON the SQL adapters write) per customer with and without the segments.

    PYTHONPATH=src python bench/bench_segments_cost.py                     # 100,000 customers
    PYTHONPATH=src python bench/bench_segments_cost.py --customers 10000   # a quick run
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from datetime import UTC, datetime, timedelta

from cjo import (
    Engine,
    Event,
    InMemoryStorage,
    ManualClock,
    ProfileUpdate,
    Segment,
    attr,
    inactive,
    last_performed,
    performed,
    prop,
    total,
)
from cjo.storage.codec import encode_state

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
CATEGORIES = ("shoes", "hats", "bags", "coats", "socks")
COUNTRIES = ("SE", "NO", "FR", "DE", "US", "JP")
TIERS = ("free", "basic", "pro", "gold")


def segments() -> list[Segment]:
    """25 attribute segments and 25 event-history segments."""
    out: list[Segment] = []
    for i in range(10):
        out.append(Segment(f"age_{i}", attr("age") >= 18 + 5 * i))
    for c in COUNTRIES:
        out.append(Segment(f"country_{c}", attr("country") == c))
    for t in TIERS:
        out.append(Segment(f"tier_{t}", attr("tier") == t))
    for i in range(5):
        out.append(Segment(f"spend_{i}", (attr("lifetime_spend") > 100 * i)
                           & (attr("country") != "US")))
    for i, c in enumerate(CATEGORIES):
        viewed = performed("view", where=prop("category") == c)
        out.append(Segment(f"views_{c}", viewed.at_least(2).within(days=7)))
        out.append(Segment(f"fan_{c}", viewed.at_least(5 + i)))
        out.append(Segment(f"browse_no_buy_{c}", viewed.at_least(1).within(days=3)
                           & performed("purchase").never().within(days=3)))
    for i in range(4):
        out.append(Segment(f"big_month_{i}", total("purchase", "total").within(days=30)
                           > 100 * (i + 1)))
        out.append(Segment(f"buyer_{i}", performed("purchase").at_least(i + 1).within(days=30)))
    out.append(Segment("recent_login", last_performed("login").within(days=7)))
    out.append(Segment("inactive_14d", inactive("purchase", days=14)))
    assert len(out) == 50, len(out)
    return out


def stream(customers: int, events: int, days: int, seed: int) -> list[list[Event | ProfileUpdate]]:
    """Items per simulated hour: the profiles first, then every customer's events."""
    rng = random.Random(seed)
    hours = days * 24
    ticks: list[list[Event | ProfileUpdate]] = [[] for _ in range(hours)]
    for c in range(customers):
        cid = f"customer-{c:06d}"
        ticks[0].append(ProfileUpdate(cid, {
            "age": rng.randint(16, 80), "country": rng.choice(COUNTRIES),
            "tier": rng.choice(TIERS), "lifetime_spend": rng.randint(0, 600),
        }))
        for n in range(events):
            hour = rng.randrange(hours)
            at = T0 + hour * HOUR + timedelta(seconds=rng.randrange(3600))
            roll = rng.random()
            if roll < 0.6:
                name, props = "view", {"category": rng.choice(CATEGORIES)}
            elif roll < 0.8:
                name, props = "purchase", {"total": rng.randint(5, 250)}
            else:
                name, props = "login", {}
            ticks[hour].append(Event(customer_id=cid, name=name, timestamp=at,
                                     properties=props, event_id=f"{cid}-{n}"))
    for tick in ticks[1:]:
        tick.sort(key=lambda i: i.timestamp if isinstance(i, Event) else T0)
    return ticks


def run(
    ticks: list[list[Event | ProfileUpdate]], with_segments: bool
) -> tuple[float, float, Engine]:
    """(seconds in handle_events, seconds in run_due, the engine)."""
    clock = ManualClock(T0)
    engine = Engine(InMemoryStorage(keep_activity=False), clock=clock)
    if with_segments:
        engine.publish(segments=segments())
    gc.collect()
    handling = due = 0.0
    for hour, items in enumerate(ticks):
        clock.set(T0 + (hour + 1) * HOUR)
        began = time.perf_counter()
        engine.handle_events(items)
        middle = time.perf_counter()
        engine.run_due()  # time-relative membership changes (windows, inactivity) fire here
        due += time.perf_counter() - middle
        handling += middle - began
    return handling, due, engine


def record_bytes(engine: Engine, customers: int) -> float:
    size = 0
    for c in range(customers):
        state = engine.customer_state(f"customer-{c:06d}")
        assert state is not None
        size += len(encode_state(state))
    return size / customers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10, help="events per customer")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    ticks = stream(args.customers, args.events, args.days, args.seed)
    items = sum(len(t) for t in ticks)
    print(f"{args.customers:,} customers, {items:,} items ({args.events} events each and a "
          f"profile), {args.days} days in hourly ticks")
    none_h, none_d, bare = run(ticks, with_segments=False)
    bare_bytes = record_bytes(bare, args.customers)
    del bare
    seg_h, seg_d, full = run(ticks, with_segments=True)
    full_bytes = record_bytes(full, args.customers)
    members = sum(full.segment_count(s.id) for s in segments()) / args.customers
    print(f"{'segments':>9} {'handle s':>9} {'run_due s':>10} {'us/item':>8} "
          f"{'record bytes':>13}")
    for count, h, d, size in ((0, none_h, none_d, bare_bytes), (50, seg_h, seg_d, full_bytes)):
        print(f"{count:>9} {h:>9.2f} {d:>10.2f} {(h + d) / items * 1e6:>8.1f} {size:>13,.0f}")
    none_s, seg_s = none_h + none_d, seg_h + seg_d
    print(f"ratio {seg_s / none_s:.1f}x; 50 segments add {(seg_s - none_s) / items * 1e6:.0f} us "
          f"per item and {full_bytes - bare_bytes:,.0f} bytes per customer "
          f"({members:.1f} memberships per customer)")

if __name__ == "__main__":
    main()
