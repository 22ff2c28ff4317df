"""Clocks: where the engine reads the time of day (timeouts elsewhere read ``time.monotonic``)."""

from __future__ import annotations

import abc
import threading
from datetime import UTC, datetime, timedelta

from cjo.errors import ClockError, UsageError

__all__ = [
    "EPOCH", "MICROSECOND", "Clock", "ManualClock", "SystemClock", "ensure_aware", "ensure_span",
    "epoch_us",
]

#: The Unix epoch, in UTC: what instants are counted from where they are stored as numbers.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def epoch_us(value: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact: no float rounding)."""
    return (value - EPOCH) // MICROSECOND


def ensure_aware(value: object, what: str = "datetime") -> datetime:
    """``value`` in UTC, or ``ClockError`` for a naive datetime (its meaning depends on the
    machine), one out of range once in UTC, or anything that is not a datetime. O(1), and an
    instant already in UTC is returned as is: adapters call it once per call they are given an
    instant in, before they take a lock or open a transaction, so a bad instant is refused
    with nothing held."""
    if not isinstance(value, datetime):
        raise ClockError(
            f"{what} must be a timezone-aware datetime, got {type(value).__name__} {value!r:.80}"
        )
    tz = value.tzinfo
    if tz is UTC:
        return value
    if tz is None or tz.utcoffset(value) is None:
        raise ClockError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # datetime.min at +02:00 (an "everything since" bound) is before year 1 in UTC.
        raise ClockError(
            f"{what} {value.isoformat()} is outside the years 1 to 9999 once in UTC"
        ) from None


def ensure_span(start: object, end: object) -> tuple[datetime, datetime]:
    """``start`` and ``end`` in UTC (as ``ensure_aware``), or ``UsageError`` for an ``end``
    before ``start``: bounds given the wrong way round, which would read as an empty span."""
    start, end = ensure_aware(start, "start"), ensure_aware(end, "end")
    if end < start:
        raise UsageError(f"end {end.isoformat()} is before start {start.isoformat()}")
    return start, end


def duration(delta: object, kwargs: dict[str, float], what: str) -> timedelta:
    """The forward step ``delta`` or ``timedelta(**kwargs)`` names, or ``ClockError`` naming
    ``what`` for both, neither a timedelta nor a duration, or a negative one."""
    if delta is not None and kwargs:
        # One would be ignored: advance(timedelta(hours=1), minutes=30) is not 90 minutes.
        raise ClockError(f"{what} takes a timedelta or keyword arguments, not both")
    if delta is not None and not isinstance(delta, timedelta):
        raise ClockError(f"{what} needs a timedelta, got {type(delta).__name__} {delta!r:.80}")
    try:
        step = delta if delta is not None else timedelta(**kwargs)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ClockError(f"{what}: not a duration ({exc})") from None
    if step < timedelta(0):
        raise ClockError(f"{what} cannot advance by a negative amount ({step})")
    return step


class Clock(abc.ABC):
    """Tells the engine what time it is. ``now()`` returns an aware datetime (UTC, or any zone:
    the engine reads it in UTC); anything else makes the engine's call raise ``ClockError``
    naming the clock."""

    @abc.abstractmethod
    def now(self) -> datetime: ...


class SystemClock(Clock):
    """The real time, for production."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock(Clock):
    """A clock that only moves when told to: for tests, simulations and back-tests.

    Safe to share between threads, with or without the GIL (free-threaded CPython): ``set``
    and ``advance`` each move the clock in one step under the clock's lock, so concurrent
    advances all count and the clock never goes backwards; ``now`` takes no lock (it reads one
    reference to an immutable datetime, which the interpreter reads whole), so each thread
    sees the instants in the order the clock took them."""

    __slots__ = ("_lock", "_now")

    def __init__(self, start: datetime | None = None) -> None:
        default = datetime(2026, 1, 1, tzinfo=UTC)
        self._now = ensure_aware(start, "start") if start is not None else default
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        """Move to ``when``; moving backwards raises ``ClockError``."""
        when = ensure_aware(when, "when")
        with self._lock:  # compared with the instant it replaces, not an older one
            if when < self._now:
                raise ClockError(
                    f"ManualClock cannot go backwards from {self._now.isoformat()} "
                    f"to {when.isoformat()}"
                )
            self._now = when

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        """Move forward by ``delta`` (or ``timedelta(**kwargs)``) and return the new time (this
        call's, even if another thread moves the clock again at once)."""
        step = duration(delta, kwargs, "ManualClock.advance")
        with self._lock:  # read, add and write as one step: no concurrent advance is lost
            try:
                now = self._now = self._now + step
            except OverflowError:
                raise ClockError(
                    f"ManualClock cannot advance {self._now.isoformat()} by {step}: past the "
                    "last instant a datetime holds"
                ) from None
        return now
