"""Benchmark cjo on the demo shop's workload against a hand-written baseline.

    python bench/bench_engine.py --customers 100000 --days 30        # the reference run
    python bench/bench_engine.py --quick                             # a smoke run, seconds
    python bench/bench_engine.py --quick --storage memory,sqlite:///tmp/b.db,postgresql://...

See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import multiprocessing
import os
import platform
import pstats
import resource
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
from baseline import RELEVANT, ShopBaseline

import cjo
from cjo import Engine, Event, InMemoryStorage, ManualClock, ProfileUpdate
from cjo.analytics import journey_report
from cjo.demo import (
    DEMO_START,
    profile_from_signup,
    run_simulation,
    shop_channels,
    shop_definitions,
    shop_workload,
)
from cjo.errors import StorageError
from cjo.runtime.core import Decider
from cjo.storage.base import Storage
from cjo.storage.url import open_storage, redact_url, storage_kind

RESULTS = Path(__file__).resolve().parent / "results"


# --- measurements --------------------------------------------------------------------------------


@dataclass
class Run:
    """One pass of one implementation over one workload."""

    name: str
    events: int
    relevant: int
    seconds: float  # wall time of the whole pass
    handle_seconds: float  # identify + handle_events / handle_event
    due_seconds: float  # run_due (every tick, also when nothing is due)
    wakeups: int  # wake-ups fired by run_due (all wake-ups fired, when not due_only)
    sent: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)  # journey.status -> count
    maxrss_delta_mib: float | None = None
    workers: int = 1
    due_only: bool = True  # wakeups counts only those run_due fired


    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def relevant_per_s(self) -> float:
        return self.relevant / self.seconds if self.seconds else 0.0

    @property
    def wakeups_per_s(self) -> float:
        if not self.due_only:
            return 0.0  # some wake-ups fired outside run_due: no rate to give
        return self.wakeups / self.due_seconds if self.due_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(events_per_s=self.events_per_s, relevant_per_s=self.relevant_per_s,
                   wakeups_per_s=self.wakeups_per_s)
        return out


def maxrss_mib() -> float:
    # Linux reports KiB, macOS bytes.
    raw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return raw / 1024 / (1024 if sys.platform == "darwin" else 1)


@contextmanager
def count_wakeups(*, due_only: bool = True) -> Iterator[Callable[[], int]]:
    """Count the wake-ups ``run_due`` fires, whatever the adapter: every one goes through the
    decision core, as ``Decider._wake`` (an enrollment's wait, timeout or lifetime) or
    ``Decider._fire_timer`` (a customer timer: the inactivity trigger). They and
    ``Engine.run_due`` are patched on their classes for the duration (so engines made inside,
    such as a back-test's, count too), then restored. Wake-ups fired by an event's catch-up are
    counted only when not ``due_only``."""
    fired = [0]
    inside = [False]
    original_wake = Decider._wake
    original_fire = Decider._fire_timer
    original_run_due = Engine.run_due

    def wake(self: Decider, enrollment: Any) -> None:
        if inside[0] or not due_only:
            fired[0] += 1
        original_wake(self, enrollment)

    def fire_timer(self: Decider, name: str) -> None:
        if inside[0] or not due_only:
            fired[0] += 1
        original_fire(self, name)

    def run_due(self: Engine, now: datetime | None = None) -> Any:
        inside[0] = True
        try:
            return original_run_due(self, now)
        finally:
            inside[0] = False

    Decider._wake = wake  # type: ignore[method-assign]
    Decider._fire_timer = fire_timer  # type: ignore[method-assign]
    Engine.run_due = run_due  # type: ignore[method-assign]
    try:
        yield lambda: fired[0]
    finally:
        Decider._wake = original_wake  # type: ignore[method-assign]
        Decider._fire_timer = original_fire  # type: ignore[method-assign]
        Engine.run_due = original_run_due  # type: ignore[method-assign]


def run_cjo(name: str, storage: Storage, events: Sequence[Event], *, batch: bool,
            days: float, tick: timedelta, measure_rss: bool = False) -> Run:
    clock = ManualClock(DEMO_START)
    channels = shop_channels()
    engine = Engine(storage, channels=dict(channels), clock=clock)
    engine.publish(shop_definitions())
    gc.collect()
    rss_before = maxrss_mib()
    with count_wakeups() as fired:
        began = time.perf_counter()
        stats = run_simulation(engine, clock, events, tick=tick, batch=batch,
                               until=DEMO_START + timedelta(days=days))
        seconds = time.perf_counter() - began
        wakeups = fired()
    rss_delta = maxrss_mib() - rss_before if measure_rss else None
    outcomes: dict[str, int] = {}
    for journey in shop_definitions().journeys:
        r = journey_report(storage, journey)
        outcomes.update({
            f"{journey.id}.entered": r.entered, f"{journey.id}.active": r.active,
            f"{journey.id}.completed": r.completed, f"{journey.id}.converted": r.converted,
            f"{journey.id}.exited": r.exited_total,
        })
    return Run(
        name=name, events=stats.events, relevant=_relevant(events), seconds=seconds,
        handle_seconds=stats.handle_seconds, due_seconds=stats.due_seconds, wakeups=wakeups,
        sent={k: ch.sent for k, ch in sorted(channels.items())}, outcomes=outcomes,
        maxrss_delta_mib=rss_delta,
    )


def run_baseline(name: str, events: Sequence[Event], *, days: float, tick: timedelta) -> Run:
    baseline = ShopBaseline()
    began = time.perf_counter()
    stats = baseline.run(events, DEMO_START, DEMO_START + timedelta(days=days), tick)
    seconds = time.perf_counter() - began
    journeys = {"welcome": ("welcome", baseline.welcome),
                "cart": ("abandoned_cart", baseline.cart),
                "win_back": ("win_back", baseline.win_back)}
    outcomes: dict[str, int] = {}
    for short, (jid, active) in journeys.items():
        outcomes[f"{jid}.entered"] = stats.entered[short]
        outcomes[f"{jid}.active"] = len(active)
        for status in ("completed", "converted", "exited"):
            outcomes[f"{jid}.{status}"] = stats.ended[(short, status)]
    return Run(
        name=name, events=stats.events, relevant=_relevant(events), seconds=seconds,
        handle_seconds=stats.handle_seconds, due_seconds=stats.due_seconds,
        wakeups=stats.wakeups, sent=dict(sorted(stats.sent.items())), outcomes=outcomes,
    )


def run_backtest(name: str, events: Sequence[Event], *, days: float) -> Run | None:
    """The same events through ``cjo.simulate.backtest`` (None where cjo has none): each event
    decided at its own timestamp rather than at the end of a tick, so its sends and outcomes
    may differ a little from the tick-by-tick runs; a throughput figure, not an oracle. It
    fires many wake-ups in its own catch-ups rather than through ``run_due``: all are counted."""
    try:
        from cjo.simulate import backtest
    except ImportError:
        return None

    def inputs() -> Iterator[Event | ProfileUpdate]:
        for event in events:
            if event.name == "signed_up":
                # Applied at the instant of the next input: its sign-up.
                yield profile_from_signup(event)
            yield event

    gc.collect()
    with count_wakeups(due_only=False) as fired:
        began = time.perf_counter()
        result = backtest(shop_definitions(), inputs(), start=DEMO_START,
                          until=DEMO_START + timedelta(days=days))
        seconds = time.perf_counter() - began
        wakeups = fired()
    outcomes: dict[str, int] = {}
    for jid, r in result.reports.items():
        outcomes.update({
            f"{jid}.entered": r.entered, f"{jid}.active": r.active,
            f"{jid}.completed": r.completed, f"{jid}.converted": r.converted,
            f"{jid}.exited": r.exited_total,
        })
    return Run(
        name=name, events=result.events, relevant=_relevant(events), seconds=seconds,
        handle_seconds=seconds - result.due_seconds, due_seconds=result.due_seconds,
        wakeups=wakeups, sent=dict(result.messages), outcomes=outcomes, due_only=False,
    )


def _relevant(events: Sequence[Event]) -> int:
    return sum(1 for e in events if e.name in RELEVANT)


def traced_peak_mib(fn: Callable[[], object]) -> float:
    """Peak bytes allocated while ``fn`` runs (tracemalloc; slows the run, so never timed)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


# What the in-memory adapter keeps, by part, as its attributes (this measures that adapter's
# internals on purpose: a dict emptied by deletions keeps its table, so only replacing the
# containers frees everything). Dropped in this order: see state_memory.
STATE_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("event ids", ("_events",)),
    ("outbox", ("_outbox", "_outbox_done", "_pending")),
    ("activity log", ("_log",)),
    ("customer records", ("_records", "_ids", "_wakes", "_wake_leases", "_aside", "_members")),
)


@dataclass
class StateMemory:
    """What the engine's in-memory state holds at the end of a pass, in traced bytes."""

    customers: int  # customer records
    enrollments: int  # active enrollments in them
    waiting: int  # customers with a wake-up pending
    items: dict[str, int]  # part -> entries (records, event ids, outbox messages, log entries)
    bytes: dict[str, int]  # part -> bytes freed by dropping it
    sent: dict[str, int]
    retention: dict[str, str]

    def per_item(self, part: str) -> float:
        n = self.items.get(part, 0)
        return self.bytes.get(part, 0) / n if n else 0.0


def _traced_now() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def state_memory(customers: int, days: float, seed: int, tick: timedelta) -> StateMemory:
    """Run the full workload once more, untimed, under tracemalloc, then drop the in-memory
    storage's parts one by one and measure what each drop frees.

    The workload's raw events are generated before tracing starts and its ``Event`` objects are
    created (traced) as the simulation reads them, so what the engine keeps of them (ids,
    timestamps, properties) is counted and what it does not keep is freed. Event ids, the
    outbox and the activity log are dropped first; the records go last, so objects they share
    with the log or the outbox (customer and enrollment ids, instants) count as theirs.
    """
    stream = shop_workload(customers, days, seed)
    gc.collect()
    tracemalloc.start()
    try:
        clock = ManualClock(DEMO_START)
        channels = shop_channels()
        storage = InMemoryStorage()
        engine = Engine(storage, channels=dict(channels), clock=clock)
        engine.publish(shop_definitions())
        run_simulation(engine, clock, stream, tick=tick,
                       until=DEMO_START + timedelta(days=days))
        del stream
        records = storage._records
        result = StateMemory(
            customers=len(records),
            enrollments=sum(len(r.enrollments) for r in records.values()),
            waiting=len(storage._wakes),
            items={"event ids": len(storage._events), "outbox": len(storage._outbox),
                   "activity log": len(storage._log), "customer records": len(records)},
            bytes={},
            sent={k: ch.sent for k, ch in sorted(channels.items())},
            retention={k: str(v) for k, v in attrs.asdict(engine.retention).items()}
            | {"prune_every": str(engine.prune_every)},
        )
        del records
        before = _traced_now()
        for part, names in STATE_PARTS:
            for name in names:
                setattr(storage, name, type(getattr(storage, name))())
            after = _traced_now()
            result.bytes[part] = before - after
            before = after
        return result
    finally:
        tracemalloc.stop()


def subset(events: Sequence[Event], every: int) -> list[Event]:
    """The events of one customer in ``every``: a smaller shop with whole customer stories."""
    return [e for e in events if int(e.customer_id[1:]) % every == 0]


# --- SQL storages --------------------------------------------------------------------------------


class StorageTarget:
    """Opens a fresh, empty database for each run, so runs never see each other's customers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.kind = storage_kind(url)
        self._made: list[Any] = []
        self._tag = f"{os.getpid()}_{int(time.time())}"

    def open(self, mode: str) -> Storage:
        if self.kind == "memory":
            return InMemoryStorage()
        if self.kind == "sqlite":
            path = self._sqlite_path(mode)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            self._made.append(path)
            return open_storage(f"sqlite:///{path}")
        from cjo.storage.postgres import PostgresStorage

        schema = f"cjo_bench_{self._tag}_{mode}"
        self._made.append(schema)
        return PostgresStorage(self.url, schema=schema)

    def _sqlite_path(self, mode: str) -> str:
        # sqlite:///x.db -> x.<mode>.db beside it: the bench owns (and deletes) these files.
        raw = self.url.split("://", 1)[1]
        raw = raw[1:] if raw.startswith("/") else raw  # sqlite:///rel, sqlite:////abs
        path = Path(raw)
        return str(path.with_name(f"{path.stem}.{mode}{path.suffix or '.db'}"))

    def cleanup(self, keep: bool) -> None:
        if keep or not self._made:
            return
        if self.kind == "sqlite":
            for path in self._made:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
        elif self.kind == "postgresql":
            import psycopg
            from psycopg import sql

            with psycopg.connect(self.url, autocommit=True) as conn:
                for schema in self._made:
                    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                        sql.Identifier(schema)))
        self._made.clear()


# Filled in before forking so that workers inherit the events instead of unpickling them.
_WORKER_EVENTS: list[Event] = []


def _worker(index: int, workers: int, url: str, schema: str, days: float, tick_s: float,
            barrier: Any, results: Any) -> None:
    from cjo.storage.postgres import PostgresStorage

    mine = [e for e in _WORKER_EVENTS if int(e.customer_id[1:]) % workers == index]
    storage = PostgresStorage(url, schema=schema, max_size=2)
    try:
        barrier.wait()
        run = run_cjo(f"worker {index}", storage, mine, batch=True, days=days,
                      tick=timedelta(seconds=tick_s))
        results.put(run.as_dict())
    finally:
        storage.close()


def run_postgres_workers(target: StorageTarget, events: list[Event], workers: int, days: float,
                         tick: timedelta) -> Run:
    """N processes, each its own engine and PostgresStorage, on disjoint customers of one
    schema, started together. Events/s is all events over the slowest worker's wall time."""
    from cjo.storage.postgres import PostgresStorage

    # Create the schema once up front so the workers do not all race to migrate it.
    PostgresStorage(target.url, schema=(schema := f"cjo_bench_{target._tag}_workers")).close()
    target._made.append(schema)
    _WORKER_EVENTS[:] = events
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(workers + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(i, workers, target.url, schema, days,
                                          tick.total_seconds(), barrier, results))
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    began = time.perf_counter()
    parts = [results.get() for _ in procs]
    seconds = time.perf_counter() - began
    for p in procs:
        p.join()
    _WORKER_EVENTS.clear()
    sent: Counter[str] = Counter()
    for part in parts:
        sent.update(part["sent"])
    return Run(
        name=f"postgresql x{workers} workers", events=sum(p["events"] for p in parts),
        relevant=sum(p["relevant"] for p in parts), seconds=seconds,
        handle_seconds=max(p["handle_seconds"] for p in parts),
        due_seconds=max(p["due_seconds"] for p in parts),
        wakeups=sum(p["wakeups"] for p in parts), sent=dict(sorted(sent.items())),
        workers=workers,
    )


# --- printing ------------------------------------------------------------------------------------


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_rows(runs: list[Run], reference: Run | None) -> list[list[str]]:
    rows = [["run", "events", "seconds", "events/s", "relevant/s", "x baseline", "wake-ups",
             "due s", "wake-ups/s"]]
    for r in runs:
        ratio = f"{r.events_per_s / reference.events_per_s:.3f}" if reference else "-"
        rows.append([r.name, f"{r.events:,}", f"{r.seconds:.2f}", f"{r.events_per_s:,.0f}",
                     f"{r.relevant_per_s:,.0f}", ratio, f"{r.wakeups:,}",
                     f"{r.due_seconds:.2f}",
                     f"{r.wakeups_per_s:,.0f}" if r.due_only else "-"])
    return rows


def sends_rows(runs: list[Run]) -> list[list[str]]:
    channels = sorted({c for r in runs for c in r.sent})
    rows = [["sends", *channels, "total"]]
    for r in runs:
        rows.append([r.name, *(f"{r.sent.get(c, 0):,}" for c in channels),
                     f"{sum(r.sent.values()):,}"])
    return rows


def agreement(a: Run, b: Run) -> str:
    parts = []
    for channel in sorted(set(a.sent) | set(b.sent)):
        x, y = a.sent.get(channel, 0), b.sent.get(channel, 0)
        diff = (x - y) / y if y else 0.0
        parts.append(f"{channel} {diff:+.3%}")
    return ", ".join(parts)


# --- main ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--customers", type=int, default=100_000)
    p.add_argument("--days", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tick", type=float, default=5.0, help="simulated minutes per tick")
    p.add_argument("--quick", action="store_true",
                   help="smoke size: 3,000 customers, 21 days (long enough for the 14-day "
                        "win-back), 300 storage customers")
    p.add_argument("--single-every", type=int, default=10,
                   help="one-event-at-a-time runs use one customer in N (default 10)")
    p.add_argument("--storage", default="memory",
                   help="comma-separated storage URLs to compare with the in-memory engine")
    p.add_argument("--storage-customers", type=int, default=2_000,
                   help="customers of the (smaller) workload used for storage comparisons")
    p.add_argument("--workers", type=int, default=0,
                   help="also run N worker processes on a postgresql storage")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--backtest", action="store_true",
                   help="also time cjo.simulate.backtest on the full workload")
    p.add_argument("--no-tracemalloc", action="store_true",
                   help="skip the (untimed) tracemalloc passes: the peak on the subset and the "
                        "engine state per customer")
    p.add_argument("--no-state-memory", action="store_true",
                   help="skip the (untimed) full-size pass measuring engine state per customer")
    p.add_argument("--keep", action="store_true", help="keep SQL databases / schemas")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also profile cjo (cProfile, batches, on the subset): print the top N")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        args.customers, args.days, args.storage_customers = 3_000, 21.0, 300
    tick = timedelta(minutes=args.tick)
    urls = [u.strip() for u in args.storage.split(",") if u.strip()]
    for url in urls:
        try:
            storage_kind(url)
        except StorageError as exc:
            p.error(str(exc))
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cjo": cjo.__version__, "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, {platform.system()}",
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }

    memory_phase(args, tick, report)
    gc.collect()

    # (c) other storages, as ratios to the in-memory engine on the same smaller workload.
    sql_urls = [u for u in urls if storage_kind(u) != "memory"]
    if sql_urls or args.workers:
        report["storages"] = compare_storages(args, sql_urls, tick)

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"bench-{stamp}-{args.customers}c-{args.days:g}d.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nresults written to {path}")
    return 0


def memory_phase(args: argparse.Namespace, tick: timedelta, report: dict[str, Any]) -> None:
    """The reference runs: cjo in memory and the baseline, on the full workload and a subset."""
    began = time.perf_counter()
    events = list(shop_workload(args.customers, args.days, args.seed))
    gen_s = time.perf_counter() - began
    names = Counter(e.name for e in events)
    print(f"workload: {args.customers:,} customers, {args.days:g} days, seed {args.seed}: "
          f"{len(events):,} events ({len(events) / max(args.customers, 1):.1f} per customer; "
          f"{sum(names[n] for n in RELEVANT):,} relevant to the journeys), "
          f"generated in {gen_s:.1f} s (not timed)")
    print("  " + ", ".join(f"{n} {c:,}" for n, c in names.most_common()))
    report["workload"] = {"events": len(events), "by_name": dict(names), "generate_s": gen_s}

    # (a) cjo in memory, batches, on the whole workload. First, so the RSS delta is its own.
    runs: list[Run] = []
    cjo_batch = run_cjo("cjo memory, batches", InMemoryStorage(), events, batch=True,
                        days=args.days, tick=tick, measure_rss=True)
    runs.append(cjo_batch)
    gc.collect()
    # (b) the hand-written baseline on the same events.
    base = None
    if not args.no_baseline:
        base = run_baseline("baseline (plain Python)", events, days=args.days, tick=tick)
        runs.insert(0, base)
    gc.collect()
    # (c) the back-test (each event at its own instant), where cjo has one.
    if args.backtest:
        bt = run_backtest("cjo backtest (no rendering)", events, days=args.days)
        if bt is None:
            print("  --backtest: this cjo has no cjo.simulate.backtest; skipped")
        else:
            runs.append(bt)
        gc.collect()
    # One event at a time, on a subset of whole customers (and both others on the same subset).
    small = subset(events, args.single_every)
    sub = f"1/{args.single_every} customers"
    sub_runs = [
        run_cjo(f"cjo memory, batches ({sub})", InMemoryStorage(), small, batch=True,
                days=args.days, tick=tick),
        run_cjo(f"cjo memory, single events ({sub})", InMemoryStorage(), small, batch=False,
                days=args.days, tick=tick),
    ]
    if base is not None:
        sub_runs.insert(0, run_baseline(f"baseline ({sub})", small, days=args.days, tick=tick))

    print()
    print(table(run_rows(runs, base)))
    print()
    print(table(run_rows(sub_runs, sub_runs[0] if base is not None else None)))
    print()
    print(table(sends_rows(runs)))
    if base is not None:
        print(f"  cjo vs baseline sends: {agreement(cjo_batch, base)}")
        differ = {k: (v, base.outcomes.get(k)) for k, v in cjo_batch.outcomes.items()
                  if base.outcomes.get(k) != v}
        print("  journey outcomes (entered, active, completed, converted, exited): "
              + ("identical" if not differ else f"differ (cjo, baseline): {differ}"))
        print("  wake-ups fired by the due phase: "
              + ("identical" if cjo_batch.wakeups == base.wakeups
                 else f"differ (cjo {cjo_batch.wakeups:,}, baseline {base.wakeups:,})"))
        speed = base.events_per_s / cjo_batch.events_per_s if cjo_batch.events_per_s else 0
        print(f"  the baseline is {speed:.1f}x faster than cjo in memory (whole pass, batches)")
    if any(not r.due_only for r in runs):
        print("  (the back-test decides each event at its own timestamp, not at its tick's end, "
              "so its sends may differ a little; its wake-ups count all it fired)")
    mem: dict[str, Any] = {"cjo_full_maxrss_delta_mib": cjo_batch.maxrss_delta_mib}
    print(f"\nmemory: cjo full run raised peak RSS by {cjo_batch.maxrss_delta_mib:,.0f} MiB "
          f"(ru_maxrss delta; includes the engine's state at the end: enrollments, outbox)")
    if not args.no_tracemalloc:
        mem["cjo_subset_tracemalloc_peak_mib"] = traced_peak_mib(lambda: run_cjo(
            "traced", InMemoryStorage(), small, batch=True, days=args.days, tick=tick))
        line = (f"memory: tracemalloc peak on {sub} ({len(small):,} events): "
                f"cjo {mem['cjo_subset_tracemalloc_peak_mib']:,.1f} MiB")
        if base is not None:
            mem["baseline_subset_tracemalloc_peak_mib"] = traced_peak_mib(
                lambda: run_baseline("traced", small, days=args.days, tick=tick))
            line += f", baseline {mem['baseline_subset_tracemalloc_peak_mib']:,.1f} MiB"
        print(line)
    if not (args.no_tracemalloc or args.no_state_memory):
        state = state_memory(args.customers, args.days, args.seed, tick)
        mem["state"] = {**asdict(state), "bytes_per_item": {
            part: state.per_item(part) for part in state.bytes}}
        print_state_memory(state, cjo_batch)
    report["runs"] = [r.as_dict() for r in runs]
    report["subset_runs"] = [r.as_dict() for r in sub_runs]
    report["memory"] = mem
    if args.profile:
        profile_run(small, args, tick)


def print_state_memory(state: StateMemory, timed: Run) -> None:
    print(f"\nengine state at the end of the full pass (a second, untimed pass under "
          f"tracemalloc; retention {state.retention}):")
    rows = [["part", "entries", "MiB", "bytes each"]]
    for part, size in state.bytes.items():
        rows.append([part, f"{state.items[part]:,}", f"{size / 2**20:,.1f}",
                     f"{state.per_item(part):,.0f}"])
    print(table(rows))
    print(f"  customer records: {state.per_item('customer records'):,.0f} bytes per customer "
          f"({state.customers:,} customers, {state.enrollments:,} active enrollments, "
          f"{state.waiting:,} with a wake-up pending); event ids, outbox and activity log are "
          "bounded by their retention windows, not by the number of customers")
    if state.sent != timed.sent:
        print(f"  WARNING: the traced pass sent {state.sent}, the timed pass {timed.sent}")


def profile_run(events: list[Event], args: argparse.Namespace, tick: timedelta) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    run_cjo("profiled", InMemoryStorage(), events, batch=True, days=args.days, tick=tick)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(args.profile)
    stats.sort_stats("cumulative").print_stats(args.profile)
    print(f"\ncProfile of cjo, batches, {len(events):,} events (profiling inflates times):")
    print(out.getvalue())


def compare_storages(args: argparse.Namespace, urls: list[str], tick: timedelta) -> list[Any]:
    events = list(shop_workload(args.storage_customers, args.days, args.seed))
    print(f"\nstorages: {args.storage_customers:,} customers, {len(events):,} events; "
          "ratios are to the in-memory engine on the same events")
    ref = {
        "batch": run_cjo("memory, batches", InMemoryStorage(), events, batch=True,
                         days=args.days, tick=tick),
        "single": run_cjo("memory, single events", InMemoryStorage(), events, batch=False,
                          days=args.days, tick=tick),
    }
    out: list[Any] = [{"url": "memory", **{m: r.as_dict() for m, r in ref.items()}}]
    rows = [["storage", "mode", "events/s", "x memory", "wake-ups/s", "x memory", "sends"]]
    for mode, r in ref.items():
        rows.append(["memory", mode, f"{r.events_per_s:,.0f}", "1", f"{r.wakeups_per_s:,.0f}",
                     "1", f"{sum(r.sent.values()):,}"])
    worker_url = next((u for u in urls if storage_kind(u) == "postgresql"), None)
    for url in urls:
        label = redact_url(url)
        try:
            target = StorageTarget(url)
            entry: dict[str, Any] = {"url": label}
            try:
                for mode in ("batch", "single"):
                    storage = target.open(mode)
                    try:
                        r = run_cjo(f"{label} {mode}", storage, events, batch=mode == "batch",
                                    days=args.days, tick=tick)
                    finally:
                        storage.close()
                    entry[mode] = r.as_dict()
                    rows.append([label, mode, f"{r.events_per_s:,.0f}",
                                 f"{r.events_per_s / ref[mode].events_per_s:.3f}",
                                 f"{r.wakeups_per_s:,.0f}",
                                 f"{r.wakeups_per_s / ref[mode].wakeups_per_s:.3f}"
                                 if ref[mode].wakeups_per_s else "-",
                                 f"{sum(r.sent.values()):,}"])
                if args.workers and url == worker_url:
                    w = run_postgres_workers(target, events, args.workers, args.days, tick)
                    entry["workers"] = w.as_dict()
                    rows.append([label, f"batch x{args.workers} procs",
                                 f"{w.events_per_s:,.0f}",
                                 f"{w.events_per_s / ref['batch'].events_per_s:.3f}",
                                 "-", "-", f"{sum(w.sent.values()):,}"])
            finally:
                target.cleanup(args.keep)
            out.append(entry)
        except (ImportError, StorageError) as exc:
            print(f"  skipping {label}: {exc}")
            out.append({"url": label, "skipped": str(exc)})
    if args.workers and worker_url is None:
        print("  --workers needs a postgresql:// URL in --storage; skipped")
    print(table(rows))
    return out


if __name__ == "__main__":
    sys.exit(main())
