"""The ``cjo`` command: ``cjo demo`` runs the demo shop, ``cjo validate`` checks definitions,
``cjo backtest`` runs them over a JSON lines file of past events, ``cjo import`` loads profiles
from a CSV or JSON lines file; for operators of a durable
storage, ``cjo report`` prints its journey reports, ``cjo dead-letters`` lists, retries or
discards dead letters and ``cjo set-aside`` lists the customer records set aside."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from cjo import __version__
from cjo.analytics.report import format_table, journey_report, report_data
from cjo.clock import ManualClock
from cjo.demo import DEMO_START, shop_channels, shop_definitions, simulate_shop
from cjo.engine import Engine
from cjo.errors import CjoError, DefinitionError, InvalidEventError, StorageError, UsageError
from cjo.importing import ImportResult, read_csv, read_json_lines
from cjo.runtime.kinds.flow import launched_split_problems
from cjo.serialization import loads_definitions, loads_definitions_in_parts
from cjo.simulate import backtest
from cjo.storage.base import Storage
from cjo.storage.memory import InMemoryStorage
from cjo.storage.url import holds_cjo, open_storage, redact_url, sqlite_path, storage_kind
from cjo.streams import StreamInput, read_inputs
from cjo.validation import validate_definitions

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 invalid input, 2 usage error or a
    storage that cannot be opened or fails, 128 + the signal's number when SIGINT or SIGTERM
    stopped it)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    # SIGTERM (a service manager, a timeout) stops a command as Ctrl-C does: the transaction
    # under way rolls back, and the command says what it kept.
    handlers: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        _STOP.clear()

        def stop(signum: int, _frame: object) -> None:
            _STOP.append(signal.Signals(signum))
            raise KeyboardInterrupt

        # A signal the command was started ignoring stays ignored, as Python leaves it: a
        # shell script's background job ignores SIGINT, the Ctrl-C meant for the foreground.
        handlers = {signum: signal.signal(signum, stop)
                    for signum in (signal.SIGINT, signal.SIGTERM)
                    if signal.getsignal(signum) is not signal.SIG_IGN}
    try:
        status: int = args.run(args, sys.stdout, sys.stderr)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``cjo demo | head``): not an error worth a traceback. Point
        # stdout at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        # The shell's status for a command a signal ended.
        return 128 + (_STOP[0] if _STOP else signal.SIGINT)
    except StorageError as exc:
        # The storage failed under way (a read-only file, a lock held too long, a lost
        # connection): it names what failed, and its transaction rolled back.
        sys.stderr.write(f"cjo {args.command}: {exc}\n")
        return 2
    finally:
        if handlers:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            _STOP.clear()  # asked of this command: not of the next (run from any thread)
    return status


#: The signals that asked the running command to stop, first first. The interrupt a handler
#: raises can be lost (Python drops one raised while it runs a finaliser or a callback), so a
#: long command also looks here between its steps (``_stop_if_asked``).
_STOP: list[signal.Signals] = []


def _stop_if_asked() -> None:
    if _STOP:
        raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cjo", description="Customer journey orchestration inside your own application."
    )
    parser.add_argument("--version", action="version", version=f"cjo {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="simulate the demo shop and print its journey report",
        description="Simulate a small shop (a welcome series, an abandoned-cart reminder and a "
                    "win-back) with synthetic customers, then print what each journey step did. "
                    "On a durable storage a second run continues the simulation where it "
                    "stopped.",
    )
    demo.add_argument("--customers", type=_positive_int(_MAX_CUSTOMERS), default=3000,
                      help=f"new customers signing up during the period, at most "
                           f"{_MAX_CUSTOMERS:,} (default: 3000)")
    demo.add_argument("--days", type=_bounded(_MIN_DAYS, _MAX_DAYS), default=30.0,
                      help=f"days to simulate, {_MIN_DAYS:g} to {_MAX_DAYS:g} (default: 30)")
    demo.add_argument("--seed", type=int, default=1,
                      help="random seed; a resumed simulation keeps its first seed (default: 1)")
    demo.add_argument("--storage", default="memory", metavar="URL",
                      help="memory (the default: keeps nothing when the demo ends), "
                           "sqlite:///path.db or postgresql://... (add "
                           "?schema=NAME for a schema other than cjo)")
    demo.add_argument("--tick", type=_bounded(_MIN_TICK, _MAX_TICK), default=5.0,
                      metavar="MINUTES",
                      help=f"simulated minutes between engine polls, {_MIN_TICK:g} to "
                           f"{_MAX_TICK:g} (default: 5)")
    demo.add_argument("--one-by-one", action="store_true",
                      help="call handle_event per event instead of handle_events batches")
    demo.set_defaults(run=_demo)

    validate = commands.add_parser(
        "validate", help="check a JSON file of definitions",
        description="Load definitions from a JSON file and run the checks publish runs. "
                    "Prints OK, or every problem found (exit status 1).",
    )
    validate.add_argument("file", type=Path, metavar="FILE.json")
    validate.add_argument("--channels", metavar="NAMES",
                          help="comma-separated channels the host registers; when given, every "
                               "Send step must use one of them")
    validate.set_defaults(run=_validate)

    load = commands.add_parser(
        "import", help="create or update profiles from a CSV or JSON lines file",
        description="Import profiles from UTF-8 text: a CSV file with a header row (a "
                    "customer_id column, optional timezone and locale columns, every other "
                    "column an attribute, text unless typed as name:number, name:boolean or "
                    "name:datetime) or a JSON lines file (one object per line: "
                    "customer_id, attributes, timezone, locale). Bad records (a line that is "
                    "not UTF-8 among them) are listed with their line and the others imported; "
                    "exit status 1 when any was refused.",
    )
    load.add_argument("file", type=Path, metavar="FILE")
    load.add_argument("--storage", default="memory", metavar="URL",
                      help="memory (the default: a dry run that checks the file and keeps "
                           "nothing), sqlite:///path.db or postgresql://... (add "
                           "?schema=NAME for a schema other than cjo)")
    load.add_argument("--format", choices=("csv", "jsonl"),
                      help="the file's format (default: from its extension; .csv is CSV, "
                           "anything else JSON lines)")
    load.add_argument("--batch-size", type=_positive_int(), default=500, metavar="N",
                      help="records per transaction (default: 500)")
    load.add_argument("-v", "--verbose", action="store_true",
                      help="report progress on stderr after each transaction")
    load.set_defaults(run=_import)

    backtest = commands.add_parser(
        "backtest", help="run definitions over a JSON lines file of past events",
        description="Run the journeys of a JSON file of definitions over a stream of past "
                    "inputs (JSON lines, in time order: events, and profile updates with "
                    "\"type\": \"profile\"; see cjo.streams), each decided at its own "
                    "timestamp with every wake-up firing on time, in memory; nothing is sent. "
                    "Prints the totals and what each journey step did. Exit status 1 for "
                    "invalid definitions or an input that cannot be read (its line named).",
    )
    backtest.add_argument("definitions", type=Path, metavar="DEFINITIONS.json")
    backtest.add_argument("inputs", type=Path, metavar="INPUTS.jsonl")
    backtest.add_argument("--start", type=_instant_argument, metavar="INSTANT",
                          help="when the run begins, ISO 8601 with an offset (default: the "
                               "first input's timestamp)")
    backtest.add_argument("--until", type=_instant_argument, metavar="INSTANT",
                          help="when it ends: wake-ups due by then fire; later inputs are not "
                               "read (default: the last input's timestamp)")
    backtest.add_argument("--render", action="store_true",
                          help="render every message's content (slower; finds templates that "
                               "fail for some customers)")
    backtest.add_argument("--timezone", metavar="ZONE",
                          help="the zone of customers whose profile has none (the engine's "
                               "default_timezone; default: UTC)")
    backtest.add_argument("--timestamp-unit", choices=("s", "ms"), default="s",
                          help="the unit of timestamps given as JSON numbers: Unix epoch "
                               "seconds (s, the default) or milliseconds (ms); a number that "
                               "cannot be one in it is refused, its line named")
    backtest.add_argument("--json", action="store_true",
                          help="print the totals and the reports as one JSON object")
    backtest.set_defaults(run=_backtest)

    report = _operator_command(
        commands, "report", _report, "print the journey reports of a storage",
        "Print what each journey did (entries, steps, sends, exits, goals), from the activity "
        "log of a durable storage, for the journeys its stored definitions hold (or those "
        "named).",
    )
    report.add_argument("journeys", nargs="*", metavar="JOURNEY",
                        help="journey ids (default: every journey)")
    report.add_argument("--json", action="store_true",
                        help="print the reports as JSON (a list, one object per journey)")
    dead = _operator_command(
        commands, "dead-letters", _dead_letters,
        "list, retry or discard the messages that will not be sent",
        "List the dead letters of a durable storage (messages that failed permanently, or "
        "until their retries ran out), newest first; or put those named back in the outbox "
        "(--retry: the worker sends them, with the same idempotency key) or give up on them "
        "(--discard). Exit status 1 when a key names no dead letter.",
        listing=True,
    )
    action = dead.add_mutually_exclusive_group()
    action.add_argument("--retry", nargs="+", metavar="KEY", help="retry these dead letters")
    action.add_argument("--discard", nargs="+", metavar="KEY",
                        help="discard these dead letters")
    _operator_command(
        commands, "set-aside", _set_aside, "list the customer records set aside",
        "List the customer records of a durable storage that the worker set aside because "
        "they cannot be decoded (their wake-ups do not fire until the record is repaired), "
        "with the reason and when.",
        listing=True,
    )
    return parser


def _operator_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
    run: Callable[[argparse.Namespace, TextIO, TextIO], int], summary: str, description: str,
    *, listing: bool = False,
) -> argparse.ArgumentParser:
    """A command that reads (or acts on) the storage an engine runs on: ``--storage``, and
    ``--limit`` for one that lists."""
    parser = commands.add_parser(name, help=summary, description=description)
    parser.add_argument("--storage", required=True, metavar="URL",
                        help="sqlite:///path.db or postgresql://... (add ?schema=NAME for a "
                             "schema other than cjo)")
    if listing:
        parser.add_argument("--limit", type=_positive_int(), default=100, metavar="N",
                            help="list at most N (default: 100)")
    parser.set_defaults(run=run)
    return parser


def _positive_int(high: int | None = None) -> Callable[[str], int]:
    def number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,}, got {text}")
        return value

    return number


# The demo's bounds: the workload places events a second apart at the finest, and the simulated
# period must stay within what datetime can count (and a run within what a user can wait for).
_MIN_DAYS, _MAX_DAYS = 0.001, 3650.0
_MAX_CUSTOMERS = 1_000_000  # the workload of a period is built in memory
_MIN_TICK, _MAX_TICK = 0.02, 1440.0


def _bounded(low: float, high: float) -> Callable[[str], float]:
    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not low <= value <= high:  # also refuses nan and inf
            raise argparse.ArgumentTypeError(f"must be from {low:g} to {high:g}, got {text}")
        return value

    return number


def _instant_argument(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 date and time such as 2026-03-02T09:00:00Z, got {text!r}"
        ) from None
    if value.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset: add one (Z for UTC)")
    return value


# --- cjo demo ------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        storage = open_storage(args.storage)
    except StorageError as exc:
        err.write(f"cjo demo: {exc}\n")
        return 2
    with storage:
        clock = ManualClock(DEMO_START)
        channels = shop_channels()
        engine = Engine(storage, channels=dict(channels), clock=clock)
        definitions = shop_definitions()
        engine.publish(definitions)
        began = time.perf_counter()
        run = simulate_shop(
            engine, clock, customers=args.customers, days=args.days, seed=args.seed,
            tick=timedelta(minutes=args.tick), batch=not args.one_by_one,
        )
        wall = time.perf_counter() - began
        stats, cursor = run.stats, run.cursor
        if run.resumed and cursor.seed != args.seed:
            err.write(f"cjo demo: continuing the simulation of seed {cursor.seed} "
                      f"(--seed {args.seed} ignored)\n")
        out.write(
            f"cjo demo: simulated {_days(stats.until - stats.start)} of shop time, "
            f"{_when(stats.start)} to {_when(stats.until)} (seed {cursor.seed}, "
            f"storage {redact_url(args.storage)})\n"
        )
        if run.resumed:
            out.write(f"  continued a simulation begun {_when(cursor.start)}; "
                      f"period {cursor.periods}\n")
        out.write(
            f"  customers: {run.new_customers:,} new, {cursor.customers:,} in all; "
            f"events: {stats.events:,} ({cursor.events:,} in all); "
            f"profiles saved: {stats.profiles:,}\n"
        )
        sent = ", ".join(f"{name} {ch.sent:,}" for name, ch in sorted(channels.items()))
        out.write(f"  messages delivered this run: {sent}\n")
        rate = stats.events / wall if wall > 0 else 0.0
        out.write(f"  wall time: {wall:.2f} s ({rate:,.0f} events/s, including workload "
                  "generation)\n\n")
        reports = [journey_report(storage, journey) for journey in definitions.journeys]
        out.write(format_table(reports))
    return 0


def _days(span: timedelta) -> str:
    days = span / timedelta(days=1)
    return f"{days:g} day{'' if days == 1 else 's'}"


def _when(moment: object) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


# --- cjo validate --------------------------------------------------------------------------------


def _validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    path: Path = args.file
    text = _definitions_text("validate", path, err)
    if text is None:
        return 2
    channels = None
    if args.channels is not None:
        channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    try:
        # Each definition is read on its own: those that cannot be read are reported, and
        # every other one is validated in the same pass.
        parts = loads_definitions_in_parts(text)
    except DefinitionError as exc:  # not JSON, or not an object of definitions
        problems = list(exc.problems)
    else:
        definitions = parts.definitions
        problems = [*parts.problems, *validate_definitions(
            definitions, channels=channels, unread=parts.unread
        ), *launched_split_problems((), definitions.journeys)]  # as publishing them in order
    if problems:
        out.write(f"{path}: {_plural(len(problems), 'problem')}\n")
        for problem in problems:
            out.write(f"  - {problem}\n")
        return 1
    out.write(
        f"{path}: OK ({_plural(len(definitions.journeys), 'journey')}, "
        f"{_plural(len(definitions.segments), 'segment')}, "
        f"{_plural(len(definitions.content), 'content item')})\n"
    )
    return 0


def _definitions_text(command: str, path: Path, err: TextIO) -> str | None:
    """The text of a file of definitions, or None once why it cannot be read is written."""
    try:
        return path.read_text(encoding="utf-8-sig")  # editors on Windows may write a BOM
    except OSError as exc:
        err.write(f"cjo {command}: cannot read {path}: {exc.strerror or exc}\n")
    except UnicodeDecodeError as exc:
        err.write(f"cjo {command}: {path} is not UTF-8 text (byte {exc.start}): definitions "
                  "are JSON\n")
    return None


def _write_json(out: TextIO, data: object) -> None:
    out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


# --- cjo backtest --------------------------------------------------------------------------------


class _NoInputsError(Exception):
    """The inputs file held no input."""


def _not_empty(inputs: Iterator[StreamInput]) -> Iterator[StreamInput]:
    """``inputs``, raising ``_NoInputsError`` when there is none: an empty file is a wrong path or a
    failed export, which the back-test would otherwise run as reports of nothing, warning about
    a generator read twice. Lazy, so the options are still checked before the file is read."""
    first = next(inputs, None)
    if first is None:
        raise _NoInputsError
    yield first
    yield from inputs


def _backtest(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    text = _definitions_text("backtest", args.definitions, err)
    if text is None:
        return 2
    try:
        stream = args.inputs.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        err.write(f"cjo backtest: cannot read {args.inputs}: {exc.strerror or exc}\n")
        return 2
    options: dict[str, Any] = {}
    if args.timezone is not None:
        options["default_timezone"] = args.timezone
    with stream:
        try:
            definitions = loads_definitions(text)
            result = backtest(
                definitions,
                _not_empty(read_inputs(stream, in_order=True,
                                       timestamp_unit=args.timestamp_unit, start=args.start)),
                start=args.start,
                until=args.until, render=args.render, **options,
            )
        except DefinitionError as exc:
            # On stderr, as every other failure: stdout is the report (with --json, JSON only).
            err.write(f"cjo backtest: {args.definitions}: "
                      f"{_plural(len(exc.problems), 'problem')}\n")
            for problem in exc.problems:
                err.write(f"  - {problem}\n")
            return 1
        except InvalidEventError as exc:
            err.write(f"cjo backtest: {args.inputs}: {exc}\n")
            return 1
        except UsageError as exc:
            err.write(f"cjo backtest: {exc}\n")
            return 2
        except _NoInputsError:
            err.write(f"cjo backtest: {args.inputs}: no inputs (the file is empty or holds "
                      "only blank lines)\n")
            return 1
        except KeyboardInterrupt:
            # Said, as cjo import says what it kept: a run stopped short prints no report.
            err.write("cjo backtest: interrupted: no report (a back-test keeps nothing)\n")
            raise
    if args.json:
        _write_json(out, {
            "start": result.start.isoformat() if result.start is not None else None,
            "until": result.until.isoformat() if result.until is not None else None,
            "inputs": result.inputs, "events": result.events,
            "profile_updates": result.profile_updates, "merges": result.merges,
            "changes": result.changes, "messages": dict(result.messages),
            "entered": dict(result.entered), "ended": dict(result.ended),
            "goals": dict(result.goals),
            "reports": [report_data(r) for r in result.reports.values()],
            "wall_seconds": result.wall_seconds,
        })
        return 0
    span = (f" from {result.start.isoformat()} to {result.until.isoformat()}"
            if result.start is not None and result.until is not None else "")
    out.write(
        f"{_plural(result.inputs, 'input')} ({_plural(result.events, 'event')}, "
        f"{_plural(result.profile_updates, 'profile update')}){span} in "
        f"{result.wall_seconds:.2f} s\n"
    )
    sent = ", ".join(f"{channel} {n:,}" for channel, n in sorted(result.messages.items()))
    out.write(f"messages: {sent or 'none'}\n")
    if result.reports:
        out.write(result.table())
    return 0


# --- cjo import ----------------------------------------------------------------------------------


def _import(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    path: Path = args.file
    kind = args.format or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    try:
        # utf-8-sig: spreadsheets save CSV with a byte-order mark. Bytes that are not UTF-8
        # are kept (as lone surrogates) so the readers refuse their line and go on.
        stream = path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        err.write(f"cjo import: cannot read {path}: {exc.strerror or exc}\n")
        return 2
    try:
        storage = open_storage(args.storage)
    except StorageError as exc:
        stream.close()
        err.write(f"cjo import: {exc}\n")
        return 2
    # The line of each record of the current batch, and of each refused record, to name lines
    # in problems: only those are kept, so memory stays flat however long the file is.
    batch: dict[int, int] = {}
    lines: dict[int, int] = {}
    done_so_far = ImportResult()

    def records() -> Iterator[object]:
        rows = read_csv(stream) if kind == "csv" else read_json_lines(stream)
        for position, (line, record) in enumerate(rows, 1):
            batch[position] = line
            yield record

    def report(done: ImportResult) -> None:
        nonlocal done_so_far
        done_so_far = done
        _stop_if_asked()  # a batch committed since a stop was asked: none after it
        for problem in done.problems[len(lines):]:
            lines[problem.position] = batch[problem.position]
        batch.clear()
        if args.verbose:
            err.write(f"cjo import: {_plural(done.read, 'record')} read, {done.imported:,} "
                      "imported\n")

    with stream, storage:
        engine = Engine(storage)
        try:
            result = engine.import_profiles(
                records(), batch_size=args.batch_size, progress=report
            )
        except UsageError as exc:
            err.write(f"cjo import: {path}: {exc}\n")
            return 2
        except KeyboardInterrupt:
            err.write(f"cjo import: interrupted: {_kept(done_so_far, storage)}\n")
            raise
        except StorageError as exc:
            # A read-only file, a full disk, a lost connection: the failed transaction rolled
            # back, and the ones before it are kept.
            err.write(f"cjo import: {exc}: {_kept(done_so_far, storage)}\n")
            return 2
    # In memory nothing outlives the command: said, so that a forgotten --storage is not
    # taken for an import.
    kept = not isinstance(storage, InMemoryStorage)
    out.write(
        f"{path}: {_plural(result.imported, 'profile')} {'imported' if kept else 'checked'}, "
        f"{_plural(len(result.problems), 'record')} refused"
        + ("\n" if kept else " (a dry run: --storage memory keeps nothing)\n")
    )
    for problem in result.problems:
        out.write(f"  - line {lines[problem.position]}: {problem.reason}\n")
    return 1 if result.problems else 0


def _kept(done: ImportResult, storage: Storage) -> str:
    """What a stopped import kept: what the last progress report counted is committed (a batch
    may have committed since), and importing a profile again changes nothing."""
    verb = "checked" if isinstance(storage, InMemoryStorage) else "imported"
    return (f"at least {_plural(done.imported, 'profile')} {verb}, of the first "
            f"{_plural(done.read, 'record')} read; importing the file again is safe")


# --- operators: cjo report, cjo dead-letters, cjo set-aside ----------------------------------


def _stored(command: str, url: str, err: TextIO) -> Storage | None:
    """The durable storage ``url`` names, or None (said on ``err``): in memory there is
    nothing to read, and opening a database without cjo's tables (a SQLite file that does
    not exist, another application's, a mistyped PostgreSQL schema) would create them, which
    reads as a storage where nothing went wrong."""
    try:
        kind = storage_kind(url)
        path = sqlite_path(url.strip()) if kind == "sqlite" else None
        if kind == "memory" or (kind == "sqlite" and path is None):
            err.write(f"cjo {command}: --storage {url.strip()} holds nothing: give the URL of "
                      "the storage the engine runs on\n")
            return None
        if path is not None and not Path(path).exists():
            err.write(f"cjo {command}: no SQLite database at {path}\n")
            return None
        if not holds_cjo(url):
            err.write(f"cjo {command}: {redact_url(url)} holds no cjo storage: give the URL "
                      "of the storage the engine runs on\n")
            return None
        return open_storage(url)
    except StorageError as exc:
        err.write(f"cjo {command}: {exc}\n")
        return None


def _report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    storage = _stored("report", args.storage, err)
    if storage is None:
        return 2
    with storage:
        try:
            journeys = Engine(storage).definitions.journeys
        except CjoError as exc:
            err.write(f"cjo report: {exc}\n")
            return 2
        latest = {j.id: j for j in sorted(journeys, key=lambda j: j.version)}
        # A journey named twice is reported once: two tables would read as two journeys.
        named = list(dict.fromkeys(args.journeys))
        unknown = [jid for jid in named if jid not in latest]
        if unknown:
            err.write(f"cjo report: no journey {', '.join(map(repr, unknown))} is published "
                      f"(published: {', '.join(sorted(latest)) or 'none'})\n")
            return 2
        chosen = named or sorted(latest)
        reports = [journey_report(storage, latest[jid]) for jid in chosen]
        if args.json:
            _write_json(out, [report_data(r) for r in reports])
        elif not chosen:
            out.write("no journey is published\n")
        else:
            out.write(format_table(reports))
    return 0


def _dead_letters(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    storage = _stored("dead-letters", args.storage, err)
    if storage is None:
        return 2
    with storage:
        engine = Engine(storage)
        keys = args.retry or args.discard
        if keys:
            done, verb = (
                (engine.retry_dead_letter, "retried") if args.retry
                else (engine.discard_dead_letter, "discarded")
            )
            status = 0
            for key in keys:
                try:
                    found = done(key)
                except CjoError as exc:
                    err.write(f"cjo dead-letters: {key}: {exc}\n")
                    return 2
                if found:
                    out.write(f"{verb} {key}\n")
                else:
                    err.write(f"cjo dead-letters: no dead letter {key}\n")
                    status = 1
            return status
        letters = engine.dead_letters(limit=args.limit + 1)
        more = len(letters) > args.limit
        letters = letters[: args.limit]
        out.write(f"{_plural(len(letters), 'dead letter')}"
                  f"{' (the newest; more with a larger --limit)' if more else ''}\n")
        for letter in letters:
            m = letter.message
            where = f"{m.journey_id}/{m.step_id}" if m.journey_id else "no journey"
            out.write(
                f"  {letter.key}\n    customer {m.customer_id}, {m.channel}, {where}, dead "
                f"{_when(letter.dead_at)} after {_plural(letter.attempts, 'attempt')}: "
                f"{letter.last_error or 'no error given'}\n"
            )
    return 0


def _set_aside(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    storage = _stored("set-aside", args.storage, err)
    if storage is None:
        return 2
    with storage:
        try:
            records = Engine(storage).records_set_aside(limit=args.limit + 1)
        except CjoError as exc:
            err.write(f"cjo set-aside: {exc}\n")
            return 2
        more = len(records) > args.limit
        records = records[: args.limit]
        out.write(f"{_plural(len(records), 'record')} set aside"
                  f"{' (the first; more with a larger --limit)' if more else ''}\n")
        for record in records:
            when = _when(record.set_aside_at) if record.set_aside_at else "at an unknown time"
            out.write(f"  {record.customer_id}, {when}: {record.reason}\n")
    return 0
