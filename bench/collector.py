"""Time the in-memory pass of the shop workload and what Python's garbage collector takes of it.

    python bench/collector.py --customers 100000                  # this checkout
    python bench/collector.py --customers 100000 --src ../other   # another checkout's cjo
    python bench/collector.py --customers 100000 --no-collector   # the pass with it off

The collector's time is measured with ``gc.callbacks`` (from each collection's start to its
end), by generation. Run two checkouts one after the other, in fresh processes, several times
in alternating order: on a shared machine the noise between runs minutes apart is larger than
most changes, and pairs are what can be compared.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=100_000)
    p.add_argument("--days", type=float, default=30.0)
    p.add_argument("--src", type=Path, default=HERE.parent,
                   help="root of the checkout whose cjo is measured (default: this one)")
    p.add_argument("--no-collector", action="store_true",
                   help="turn the collector off for the pass (what the rest costs)")
    args = p.parse_args()
    sys.path.insert(0, str(args.src.resolve() / "src"))
    from datetime import timedelta

    from cjo import Engine, InMemoryStorage, ManualClock
    from cjo.demo import (
        DEMO_START,
        run_simulation,
        shop_channels,
        shop_definitions,
        shop_workload,
    )

    events = list(shop_workload(args.customers, args.days, 1))
    spent = [0.0, 0.0, 0.0]
    count = [0, 0, 0]
    started = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            generation = info["generation"]
            spent[generation] += time.perf_counter() - started[0]
            count[generation] += 1

    clock = ManualClock(DEMO_START)
    channels = shop_channels()
    engine = Engine(InMemoryStorage(), channels=dict(channels), clock=clock)
    engine.publish(shop_definitions())
    gc.collect()
    if args.no_collector:
        gc.disable()
    gc.callbacks.append(timed)
    began, cpu = time.perf_counter(), time.process_time()
    run_simulation(engine, clock, events, until=DEMO_START + timedelta(days=args.days))
    total, cpu = time.perf_counter() - began, time.process_time() - cpu
    gc.callbacks.remove(timed)
    gc.enable()
    sent = {name: ch.sent for name, ch in sorted(channels.items())}
    in_collector = sum(spent)
    print(f"cjo from {args.src.resolve()}: {total:.2f} s (CPU {cpu:.2f} s), in the collector "
          f"{in_collector:.2f} s ({in_collector / total:.1%}): "
          + ", ".join(f"generation {g} {count[g]} x {spent[g]:.2f} s" for g in range(3))
          + f"; sends {sent}")


if __name__ == "__main__":
    main()
