"""Segment sizes over time, from the committed memberships and the activity log.

Every membership change is logged (``segment_entered`` / ``segment_exited``, the segment id as
detail, at the instant it happened), so the size at an earlier instant is today's count less
the changes logged since: no snapshot is kept and nothing is scanned but the log's window.
An erased customer's changes stay in the log, anonymous, and still count (forwards, since they
are no longer in today's count) up to their erasure, which logs their exit from every segment
they were in (``leave_every_segment``). A membership change belongs to no enrollment, so its
blank enrollment id gets no pseudonym: erased customers' changes cannot be told apart, and are
counted together. The log is pruned after ``Retention.activity`` (400 days by
default): an instant older than that is refused (``UsageError``).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

import attrs

from cjo.clock import ensure_span
from cjo.errors import UsageError
from cjo.segments.membership import ENTERED, EXITED
from cjo.storage.base import Retention, Storage

__all__ = [
    "MAX_SIZE_INSTANTS", "SegmentSize", "format_segment_sizes", "segment_sizes", "size_instants",
]

# Changes are stamped with the instant decided, at most the engine's now: a little past it
# covers a worker whose clock runs slightly ahead.
_AHEAD = timedelta(days=1)
_RETENTION = Retention().activity
#: The most instants one size report may ask for: a year every five minutes (the report holds a
#: figure per segment and instant, so a tiny ``every`` must not fill memory).
MAX_SIZE_INSTANTS = 105_120


@attrs.frozen(slots=True)
class SegmentSize:
    """How many customers were in the segment at ``at`` (changes at ``at`` included)."""

    at: datetime
    size: int


def size_instants(start: datetime, end: datetime, every: timedelta) -> list[datetime]:
    """``start``, ``start + every``... up to ``end`` included."""
    if not isinstance(every, timedelta) or every <= timedelta(0):
        raise UsageError(f"every must be a positive duration (a timedelta), got {every!r:.80}")
    start, end = ensure_span(start, end)
    count = (end - start) // every + 1
    if count > MAX_SIZE_INSTANTS:
        raise UsageError(
            f"every {every} from {start.isoformat()} to {end.isoformat()} makes {count:,} "
            f"instants, more than {MAX_SIZE_INSTANTS:,}: choose a longer every or a shorter span"
        )
    out: list[datetime] = []
    at = start
    while at <= end:
        out.append(at)
        at += every
    return out


def segment_id_list(segment_ids: Iterable[str]) -> tuple[str, ...]:
    """``segment_ids`` as a tuple, read once (a generator would be empty the second time)."""
    if isinstance(segment_ids, str) or not isinstance(segment_ids, Iterable):
        # A bare id would be read letter by letter: "no segment 'f' has been published".
        raise UsageError(
            f"segment_ids must be a list of segment ids, got {type(segment_ids).__name__} "
            f"{segment_ids!r:.80}"
        )
    return tuple(segment_ids)


def segment_sizes(
    storage: Storage, segment_ids: Iterable[str], instants: Iterable[datetime], now: datetime,
    retention: timedelta = _RETENTION,
) -> dict[str, list[SegmentSize]]:
    """The size of each segment at each of ``instants`` (at most ``now``), by segment id.

    ``retention`` is how long the activity log is kept (``Retention.activity``): an instant
    older than ``now - retention`` raises ``UsageError`` naming the earliest one there is an
    answer for, since the changes after it may have been pruned."""
    segment_ids = segment_id_list(segment_ids)
    points = sorted(instants)
    if not points:
        return {sid: [] for sid in segment_ids}
    if points[-1] > now:
        raise UsageError(f"instant {points[-1].isoformat()} is after now ({now.isoformat()})")
    earliest = now - retention
    if points[0] < earliest:
        raise UsageError(
            f"instant {points[0].isoformat()} is older than the activity log is kept "
            f"({retention}): segment sizes are known from {earliest.isoformat()} on"
        )
    wanted = set(segment_ids)
    # Live members' changes logged after the first instant (undone from today's count), and
    # erased customers' changes since the log's start (counted forwards).
    changes: dict[str, list[tuple[datetime, int]]] = {sid: [] for sid in segment_ids}
    erased: dict[str, list[tuple[datetime, int]]] = {sid: [] for sid in segment_ids}
    logged = itertools.chain(
        storage.activities(earliest, points[0], journey_id="", customer_id=""),
        storage.activities(points[0], now + _AHEAD, journey_id=""),
    )
    for a in logged:
        if a.detail not in wanted or a.kind not in (ENTERED, EXITED):
            continue
        (changes if a.customer_id else erased)[a.detail].append(
            (a.at, 1 if a.kind == ENTERED else -1))
    out: dict[str, list[SegmentSize]] = {}
    for sid in segment_ids:
        size = storage.segment_count(sid)
        later = sorted(changes[sid], reverse=True)
        sizes: list[SegmentSize] = []
        i = 0
        for at in reversed(points):  # undo, newest first, the changes after each instant
            while i < len(later) and later[i][0] > at:
                size -= later[i][1]
                i += 1
            sizes.append(SegmentSize(at, size))
        sizes.reverse()
        out[sid] = _with_erased(sizes, erased[sid])
    return out


def _with_erased(
    sizes: list[SegmentSize], erased: list[tuple[datetime, int]]
) -> list[SegmentSize]:
    """``sizes`` plus the erased customers who were members at each instant. Their changes
    (an entry +1, an exit -1) cannot be told apart by customer, so they are summed: the
    members at an instant are those who were members before the log's start, plus the
    entries less the exits logged by then. Those before the log's start are the fewest that
    keep every sum from going below zero; since each erasure logs the customer's exits, that
    is exactly how many of their first logged changes are exits."""
    if not sizes or not erased:
        return sizes
    net: dict[datetime, int] = {}
    for at, change in erased:
        net[at] = net.get(at, 0) + change
    when = sorted(net)
    running = list(itertools.accumulate(net[at] for at in when))
    before = max(0, -min(running))
    added = [before + (running[last - 1] if (last := bisect.bisect_right(when, s.at)) else 0)
             for s in sizes]
    return [SegmentSize(s.at, s.size + n) for s, n in zip(sizes, added, strict=True)]


def format_segment_sizes(sizes: Mapping[str, Sequence[SegmentSize]]) -> str:
    """A fixed-width table: one row per instant, one column per segment."""
    if not isinstance(sizes, Mapping) or not all(
        isinstance(column, Sequence) and all(isinstance(s, SegmentSize) for s in column)
        for column in sizes.values()
    ):
        raise UsageError(
            f"format_segment_sizes takes what segment_sizes returns (segment id to a list of "
            f"SegmentSize), got {type(sizes).__name__} {sizes!r:.60}"
        )
    segment_ids = list(sizes)
    instants = [s.at for s in next(iter(sizes.values()), [])]
    header = ["at", *segment_ids]
    rows = [[f"{at:%Y-%m-%d %H:%M}", *(f"{sizes[sid][i].size:,}" for sid in segment_ids)]
            for i, at in enumerate(instants)]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if c else cell.ljust(w)
                       for c, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in [header, *rows]]
    return "\n".join(lines) + "\n"
