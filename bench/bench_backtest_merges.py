"""Back-tests of the demo shop with frequent identity merges, against the same stream without.

The stream is the one ``bench_engine.py --backtest`` replays (the demo shop's events, each
sign-up's profile just before it), with an identity merge after every ``--every`` inputs: the
customer of the input before it is identified, merging in the customer of an input about half
that far back (a visitor with a history of their own), at that input's instant. Each checkout
given with ``--src`` runs in a process of its own, the checkouts taking turns for ``--rounds``
rounds; the best time of each is kept, and each result's totals are compared across checkouts.

    python bench/bench_backtest_merges.py --customers 20000 --src . --src ../main
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def measure(customers: int, days: float, seed: int, every: int) -> dict[str, Any]:
    """One back-test of the stream (with merges when ``every`` > 0), in this process."""
    import time
    from datetime import timedelta

    from cjo import Event, Identify
    from cjo.demo import DEMO_START, profile_from_signup, shop_definitions, shop_workload
    from cjo.simulate import BacktestInput, backtest

    stream: list[BacktestInput] = []
    events: list[Event] = []
    merges = 0
    for event in shop_workload(customers, days, seed):
        if event.name == "signed_up":
            stream.append(profile_from_signup(event))
        stream.append(event)
        events.append(event)
        if every and len(events) % every == 0:
            visitor = events[-every // 2].customer_id
            if visitor != event.customer_id:
                stream.append((event.timestamp, Identify(event.customer_id,
                                                          anonymous_id=visitor)))
                merges += 1
    del events
    began = time.perf_counter()
    result = backtest(shop_definitions(), stream, start=DEMO_START,
                      until=DEMO_START + timedelta(days=days))
    seconds = time.perf_counter() - began
    assert result.merges == merges
    return {"seconds": seconds, "inputs": result.inputs, "merges": result.merges,
            "totals": [result.messages, result.entered, result.ended, result.goals]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=20_000)
    p.add_argument("--days", type=float, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--every", type=int, default=300, help="inputs between two merges")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--src", type=Path, action="append",
                   help="a checkout whose cjo to time (repeatable; default: this one)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.customers, args.days, args.seed, args.every)))
        return 0
    checkouts = [s.resolve() for s in (args.src or [HERE.parent])]
    best: dict[tuple[Path, int], dict[str, Any]] = {}
    for _ in range(args.rounds):
        for src in checkouts:
            for every in (0, args.every):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", "--customers", str(args.customers),
                     "--days", str(args.days), "--seed", str(args.seed),
                     "--every", str(every)],
                    env={"PYTHONPATH": str(src / "src")}, check=True, capture_output=True,
                    text=True,
                )
                run = json.loads(out.stdout)
                old = best.get((src, every))
                if old is not None and old["totals"] != run["totals"]:
                    raise SystemExit(f"{src}: two rounds differ")
                if old is None or run["seconds"] < old["seconds"]:
                    best[(src, every)] = run
    for every in (0, args.every):
        totals = {json.dumps(best[(src, every)]["totals"]) for src in checkouts}
        same = "the same totals" if len(totals) == 1 else "DIFFERENT totals"
        for src in checkouts:
            run = best[(src, every)]
            print(f"{src}: {run['inputs']:,} inputs, {run['merges']:,} merges: "
                  f"{run['seconds']:.2f} s")
        print(f"  ({same} across checkouts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
