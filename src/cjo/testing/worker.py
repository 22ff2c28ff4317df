"""Moving a test's clock as a worker that is never late would see it."""

from __future__ import annotations

import functools
import operator
from datetime import datetime, timedelta

from cjo.clock import ManualClock, duration, ensure_aware
from cjo.engine import Engine
from cjo.errors import ClockError, UsageError
from cjo.limits import MAX_TIMESTAMP, MIN_TIMESTAMP, TIMESTAMP_RANGE
from cjo.outcome import Outcome
from cjo.scheduling import next_schedule_run
from cjo.simulate import fire_on_time

__all__ = ["advance", "run_until"]


def run_until(engine: Engine, until: datetime) -> Outcome:
    """Move the engine's ``ManualClock`` to ``until`` as a worker that is never late would:
    each wake-up fires, each schedule occurrence runs and each pending outbox message (a
    retry, a send held by quiet hours, deferred dispatch) is delivered at its own instant, in
    order, then the clock stands at ``until``. Returns what the wake-ups and schedules did, as
    one ``Outcome`` (deliveries change its ``delivery`` statuses only through the later
    calls).

    ``clock.advance(...)`` then ``engine.run_due()`` is a worker that comes late, once: each
    wake-up is decided for its own instant, but what is checked when a message goes out (quiet
    hours, a retry's back-off) is checked at the late instant, and a message the outbox holds
    waits for a ``dispatch_pending`` call."""
    clock = _manual(engine, "run_until")
    until = ensure_aware(until, "until")
    _check_range(until, "run_until")
    if until < clock.now():
        raise ClockError(
            f"run_until cannot go backwards from {clock.now().isoformat()} to "
            f"{until.isoformat()}"
        )
    outcomes: list[Outcome] = []

    def fire(at: datetime) -> None:
        outcomes.append(engine.run_due(at))

    while True:
        occurrence = next_schedule_run(engine)
        if occurrence is None or occurrence > until:
            break
        # What falls due before the occurrence first, then the occurrence at its instant.
        fire_on_time(engine, clock, occurrence, before=True, run_due=fire)
        clock.set(max(occurrence, clock.now()))
        fire(clock.now())
        if next_schedule_run(engine) == occurrence:
            break  # not run (a paused journey): the final pass decides it
    fire_on_time(engine, clock, until, run_due=fire)
    clock.set(until)
    fire(until)
    engine.dispatch_pending(until)
    return functools.reduce(operator.add, outcomes)


def advance(engine: Engine, delta: timedelta | None = None, **kwargs: float) -> Outcome:
    """``run_until`` the engine's clock plus ``delta`` (or ``timedelta(**kwargs)``), as
    ``ManualClock.advance`` takes them."""
    clock = _manual(engine, "advance")
    step = duration(delta, kwargs, "advance")
    try:
        until = clock.now() + step
    except OverflowError:  # as ManualClock.advance says it, not a bare OverflowError
        raise ClockError(
            f"advance cannot move {clock.now().isoformat()} by {step}: past the last instant a "
            "datetime holds"
        ) from None
    _check_range(until, "advance")
    return run_until(engine, until)


def _check_range(until: datetime, what: str) -> None:
    """``ClockError`` naming ``what`` for an instant the engine cannot run at, raised before
    the clock moves there (after, the clock would stand where no call can run)."""
    if not MIN_TIMESTAMP <= until < MAX_TIMESTAMP:
        raise ClockError(
            f"{what} cannot go to {until.isoformat()}: the engine works {TIMESTAMP_RANGE}, as "
            "event timestamps"
        )


def _manual(engine: Engine, what: str) -> ManualClock:
    """The engine's clock, which ``what`` moves: a ``ManualClock``, or ``UsageError``."""
    clock = engine.clock
    if not isinstance(clock, ManualClock):
        raise UsageError(
            f"{what} moves the engine's clock: it needs a ManualClock, not "
            f"{type(clock).__name__}"
        )
    return clock
