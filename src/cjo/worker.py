"""The worker loop: fire due wake-ups and send the outbox until told to stop.

With ``Engine(dispatch="deferred")`` this loop is what sends messages: ``handle_event`` only
records them. In either mode it also sends retries whose back-off has passed and messages a
crashed process left behind.

Run one loop per process (or thread) beside the code that calls ``handle_event``; with
PostgreSQL storage, any number of them can share a database: wake-ups and messages are claimed
with leases, so each is handled by one worker at a time::

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run_worker(engine, stop=stop)

This is the one place cjo waits in real time; everything it decides is timed by the engine's
clock.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Protocol

import attrs

from cjo.engine import Engine
from cjo.errors import StorageError, UsageError

__all__ = ["MAX_FAILURE_WAIT", "StopSignal", "WorkerStats", "run_worker"]

log = logging.getLogger("cjo.worker")


@attrs.define
class WorkerStats:
    """What one ``run_worker`` call did."""

    #: Passes through the loop (one ``run_due`` and one ``dispatch_pending`` each).
    iterations: int = 0
    #: Steps run by due wake-ups.
    steps: int = 0
    #: Messages queued by due wake-ups (sent by ``run_due`` itself in inline mode, by the same
    #: pass's ``dispatch_pending`` in deferred mode).
    messages: int = 0
    #: Enrollments that ended on a wake-up.
    ended: int = 0
    #: Outbox messages delivery was attempted for by ``dispatch_pending`` (deferred messages,
    #: retries, left-overs).
    dispatched: int = 0
    #: Times the loop waited ``poll_interval``: it found nothing to do, or a pass failed.
    idle_waits: int = 0
    #: Passes that failed with a ``StorageError`` (logged, then retried after a wait).
    errors: int = 0


#: The longest wait between failing passes (unless ``poll_interval`` is longer), in seconds.
MAX_FAILURE_WAIT = 30.0
#: The first wait after a failing pass when ``poll_interval`` is 0: a database that is down
#: must not be retried in a tight loop, a traceback logged each time.
_FIRST_FAILURE_WAIT = 0.05


def _after_failures(failing: int, poll_interval: float) -> float:
    """How long to wait after ``failing`` passes failed in a row: doubling from
    ``poll_interval``, at most ``MAX_FAILURE_WAIT`` (or ``poll_interval`` if longer)."""
    first = max(poll_interval, _FIRST_FAILURE_WAIT)
    longest = max(poll_interval, MAX_FAILURE_WAIT)
    return min(first * 2.0 ** min(failing - 1, 64), longest)


class StopSignal(Protocol):
    """What tells a worker to stop: a ``threading.Event``, or a ``multiprocessing.Event`` for
    workers in processes (anything with these two methods)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


def run_worker(
    engine: Engine,
    *,
    stop: StopSignal | None = None,
    poll_interval: float = 1.0,
    max_iterations: int | None = None,
) -> WorkerStats:
    """Call ``engine.run_due()`` and ``engine.dispatch_pending()`` until ``stop`` is set (or
    ``max_iterations`` passes are done), waiting ``poll_interval`` seconds whenever a pass
    found nothing to do. Setting ``stop`` ends the wait at once.

    A ``StorageError`` (database unreachable, a conflict) is logged and the pass is retried
    after ``poll_interval``, doubled with each further failure in a row up to
    ``MAX_FAILURE_WAIT`` (or ``poll_interval`` if longer): work left undone stays due, and
    leases taken by the failed pass run out. Any other exception propagates.
    """
    if (
        isinstance(poll_interval, bool) or not isinstance(poll_interval, int | float)
        or not 0 <= poll_interval < math.inf  # refuses NaN too
    ):
        raise UsageError(f"poll_interval must be >= 0 (a number of seconds), got {poll_interval!r}")
    if poll_interval > threading.TIMEOUT_MAX:  # the longest wait threading.Event can do
        raise UsageError(
            f"poll_interval must be at most {threading.TIMEOUT_MAX:.0f} seconds, "
            f"got {poll_interval!r}"
        )
    if max_iterations is not None and (
        isinstance(max_iterations, bool) or not isinstance(max_iterations, int)
        or max_iterations < 0
    ):
        raise UsageError(f"max_iterations must be >= 0 (an int, or None), got {max_iterations!r}")
    if stop is not None and not (
        callable(getattr(stop, "is_set", None)) and callable(getattr(stop, "wait", None))
    ):
        raise UsageError(
            "stop must be a threading.Event, or have its is_set() and wait() (or be None), got "
            f"{type(stop).__name__}"
        )
    if stop is None:
        stop = threading.Event()
    stats = WorkerStats()
    failing = 0  # passes failed in a row
    while not stop.is_set():
        if max_iterations is not None and stats.iterations >= max_iterations:
            break
        stats.iterations += 1
        try:
            outcome = engine.run_due()
            # Counted before dispatching: what run_due committed stays done if dispatch fails.
            stats.steps += len(outcome.steps)
            stats.messages += len(outcome.messages)
            stats.ended += len(outcome.ended)
            dispatched = engine.dispatch_pending()
        except StorageError:
            failing += 1
            wait = _after_failures(failing, poll_interval)
            log.warning("cjo worker pass failed; retrying in %ss", wait, exc_info=True)
            stats.errors += 1
            busy = False
        else:
            failing = 0
            wait = poll_interval
            stats.dispatched += dispatched
            busy = dispatched > 0 or not outcome.nothing_happened
        if busy:
            continue  # more may be due already: a batch limit may have cut this pass short
        if max_iterations is not None and stats.iterations >= max_iterations:
            break  # no point waiting before returning
        stats.idle_waits += 1
        stop.wait(wait)
    return stats
