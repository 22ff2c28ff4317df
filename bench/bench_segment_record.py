"""Bytes per customer that segments over event history add to the customer record.

Publishes the usual segments ("high value": lifetime spend over 500 or 3 purchases in 30 days;
"inactive for 14 days"; "viewed shoes twice this week but did not buy"; average basket over a
quarter) with profile rules, sends each customer a seeded stream of views and purchases over
``--days``, and reports the size of the stored record (the JSON the SQL adapters write) as the
number of events grows: it must level off, since tracks keep only what the conditions read.

    PYTHONPATH=src python bench/bench_segment_record.py
    PYTHONPATH=src python bench/bench_segment_record.py --customers 200 --events 10,100,1000,5000
"""

from __future__ import annotations

import argparse
import random
from datetime import UTC, datetime, timedelta

from cjo import (
    Engine,
    Event,
    InMemoryStorage,
    ManualClock,
    ProfileRule,
    Segment,
    attr,
    average,
    inactive,
    performed,
    prop,
)
from cjo.segments.rules import add, increment, stamp
from cjo.storage.codec import encode_state

T0 = datetime(2026, 1, 1, tzinfo=UTC)

SEGMENTS = (
    Segment("high_value", (attr("lifetime_spend") > 500)
            | performed("purchase").at_least(3).within(days=30)),
    Segment("inactive_14d", inactive("purchase", days=14)),
    Segment("shoe_browser", performed("view", where=prop("category") == "shoes").at_least(2)
            .within(days=7) & performed("purchase").never().within(days=7)),
    Segment("big_baskets", average("purchase", "total").within(days=90) > 80),
)
RULES = (ProfileRule("purchases", "purchase", (
    stamp("last_purchase_at"), add("lifetime_spend", prop="total"), increment("orders"),
)),)


def measure(customers: int, events: int, days: int, seed: int) -> tuple[float, float, int]:
    """(mean record bytes with segments, mean without tracks and memberships, max recent)."""
    rng = random.Random(seed)
    clock = ManualClock(T0)
    engine = Engine(InMemoryStorage(keep_activity=False), clock=clock)
    engine.publish(segments=SEGMENTS, profile_rules=RULES)
    span = timedelta(days=days) / events
    ids = [f"customer-{c:06d}" for c in range(customers)]
    for cid in ids:
        engine.identify(cid, {"email": f"{cid}@example.com"})
    for i in range(events):
        at = T0 + i * span
        clock.set(at)
        for cid in ids:
            if rng.random() < 0.2:
                event = Event(customer_id=cid, name="purchase", timestamp=at,
                              properties={"total": rng.randint(5, 200)}, event_id=f"{cid}-{i}")
            else:
                event = Event(customer_id=cid, name="view", timestamp=at,
                              properties={"category": rng.choice(["shoes", "hats", "bags"])},
                              event_id=f"{cid}-{i}")
            engine.handle_event(event)
    total = bare = 0
    deepest = 0
    for c in range(customers):
        state = engine.customer_state(f"customer-{c:06d}")
        assert state is not None
        total += len(encode_state(state))
        deepest = max(deepest, *(len(t.recent) for t in state.tracks.values()))
        state.tracks, state.segments, state.segments_basis = {}, {}, None
        state.timers.pop("segments", None)
        bare += len(encode_state(state))
    return total / customers, bare / customers, deepest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--events", default="10,100,1000,4000",
                        help="events per customer, comma-separated")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(f"{'events/customer':>15} {'record bytes':>13} {'of which segments':>18} "
          f"{'longest kept window':>20}")
    for events in (int(n) for n in args.events.split(",")):
        full, bare, deepest = measure(args.customers, events, args.days, args.seed)
        print(f"{events:>15,} {full:>13,.0f} {full - bare:>18,.0f} {deepest:>20,}")


if __name__ == "__main__":
    main()
