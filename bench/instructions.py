"""Count the CPU instructions one pass of the shop workload takes, under valgrind's callgrind.

Wall and CPU times on a shared machine swing by ±20% between runs, more than most single
optimisations change. Instruction counts do not: the same code, workload and hash seed give
the same count to within about 0.02%, whatever else the machine is doing. They are not time
(cache misses and memory traffic are not counted), so compare like with like, and confirm a
gain in seconds on the reference run.

    python bench/instructions.py --pass backtest --customers 3000
    python bench/instructions.py --pass memory --customers 3000 --src ../other-checkout

Each pass runs twice under callgrind: once only generating the workload, once generating it
and running the pass; the difference is the pass's count. ``--src`` points at another
checkout's root (its ``src`` is imported instead of this one's) to compare two versions of
cjo on the same bench code. About 30x slower than a normal run: 3,000 customers take a
minute or two.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
PASSES = ("memory", "backtest")


def run_inner(src: Path, customers: int, what: str) -> None:
    """Inside valgrind: generate the workload, then run the pass (unless ``what`` is gen)."""
    sys.path.insert(0, str(src / "src"))
    sys.path.insert(0, str(HERE))
    from bench_engine import run_backtest, run_cjo

    from cjo import InMemoryStorage
    from cjo.demo import shop_workload

    events = list(shop_workload(customers, 30, 1))
    if what == "memory":
        run_cjo("memory", InMemoryStorage(), events, batch=True, days=30,
                tick=timedelta(minutes=5))
    elif what == "backtest":
        run_backtest("backtest", events, days=30)


def count(src: Path, customers: int, what: str) -> int:
    # Compiled modules for both trees, so that neither count includes compiling.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src / "src"), str(HERE)],
                   check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ, PYTHONHASHSEED="0")
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, __file__, "--inner", what, "--customers", str(customers),
         "--src", str(src)],
        env=env, capture_output=True, text=True, check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{done.stderr}")
    return int(found.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pass", dest="what", choices=PASSES, default="backtest")
    p.add_argument("--customers", type=int, default=3000)
    p.add_argument("--src", type=Path, default=HERE.parent,
                   help="root of the checkout whose cjo is measured (default: this one)")
    p.add_argument("--inner", choices=(*PASSES, "gen"), help=argparse.SUPPRESS)
    args = p.parse_args()
    src = args.src.resolve()
    if args.inner:
        run_inner(src, args.customers, args.inner)
        return
    generating = count(src, args.customers, "gen")
    total = count(src, args.customers, args.what)
    print(f"{args.what}, {args.customers:,} customers, cjo from {src}: "
          f"{(total - generating) / 1e6:,.1f} M instructions "
          f"(workload generation, {generating / 1e6:,.1f} M, subtracted)")


if __name__ == "__main__":
    main()
