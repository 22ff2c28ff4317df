"""Start worker processes that move through simulated time together, and collect what they
report. Imported by the multi-worker tests; it imports no test framework."""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Callable
from typing import Any


def run_processes(
    target: Callable[..., None], count: int, args: tuple[Any, ...], *, timeout: float = 240,
) -> list[tuple[Any, ...]]:
    """Run ``target(index, count, *args, barrier, results)`` in ``count`` spawned processes
    sharing one ``multiprocessing.Barrier`` (for the time slices). Each puts one tuple on
    ``results``: its index, a traceback (None when it succeeded), then what it reports.
    Returns the tuples in index order; raises AssertionError if a process failed, exited
    badly or did not report within ``timeout`` seconds."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(count)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=target, args=(i, count, *args, barrier, results),
                    name=f"cjo-worker-{i}")
        for i in range(count)
    ]
    for p in processes:
        p.start()
    collected: list[tuple[Any, ...]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(collected) < count:
            try:
                collected.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(
                    f"workers did not finish in time; got {len(collected)} results"
                ) from None
    finally:
        for p in processes:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
        results.close()
        results.join_thread()
    failures = [tb for _, tb, *_ in collected if tb]
    assert not failures, "a worker failed:\n" + "\n".join(failures)
    assert [p.exitcode for p in processes] == [0] * count
    return sorted(collected, key=lambda r: r[0])
