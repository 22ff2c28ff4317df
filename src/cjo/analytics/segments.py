"""Segment sizes over time, from the committed memberships and the activity log.

Every membership change is logged (``segment_entered`` / ``segment_exited``, the segment id as
detail, at the instant it happened), so the size at an earlier instant is today's count less
the changes logged since: no snapshot is kept and nothing is scanned but the log's window. The
log is pruned after ``Retention.activity`` (400 days by default): instants older than that are
not known.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

import attrs

from cjo.errors import UsageError
from cjo.segments.membership import ENTERED, EXITED
from cjo.storage.base import Storage

__all__ = ["SegmentSize", "format_segment_sizes", "segment_sizes", "size_instants"]

# Changes are stamped with the instant decided, at most the engine's now: a little past it
# covers a worker whose clock runs slightly ahead.
_AHEAD = timedelta(days=1)


@attrs.frozen(slots=True)
class SegmentSize:
    """How many customers were in the segment at ``at`` (changes at ``at`` included)."""

    at: datetime
    size: int


def size_instants(start: datetime, end: datetime, every: timedelta) -> list[datetime]:
    """``start``, ``start + every``... up to ``end`` included."""
    if every <= timedelta(0):
        raise UsageError(f"every must be a positive duration, got {every}")
    if end < start:
        raise UsageError(f"end {end.isoformat()} is before start {start.isoformat()}")
    out: list[datetime] = []
    at = start
    while at <= end:
        out.append(at)
        at += every
    return out


def segment_sizes(
    storage: Storage, segment_ids: Sequence[str], instants: Iterable[datetime], now: datetime
) -> dict[str, list[SegmentSize]]:
    """The size of each segment at each of ``instants`` (at most ``now``), by segment id."""
    points = sorted(instants)
    if not points:
        return {sid: [] for sid in segment_ids}
    if points[-1] > now:
        raise UsageError(f"instant {points[-1].isoformat()} is after now ({now.isoformat()})")
    wanted = set(segment_ids)
    # Net change per segment logged after each instant, walking the log once.
    changes: dict[str, list[tuple[datetime, int]]] = {sid: [] for sid in segment_ids}
    for a in storage.activities(points[0], now + _AHEAD, journey_id=""):
        if a.detail in wanted and a.kind in (ENTERED, EXITED):
            changes[a.detail].append((a.at, 1 if a.kind == ENTERED else -1))
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
        out[sid] = sizes[::-1]
    return out


def format_segment_sizes(sizes: Mapping[str, Sequence[SegmentSize]]) -> str:
    """A fixed-width table: one row per instant, one column per segment."""
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
