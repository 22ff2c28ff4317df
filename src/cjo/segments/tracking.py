"""The bounded event aggregates a customer record keeps: which, for how long, and how an event
updates them.

Each history condition reads one stream: an event name, an optional filter on its properties,
and the numeric property it aggregates (if any). Conditions that read the same stream share one
``Track`` per customer. What a track keeps follows from every condition that reads it:

- lifetime figures (first and last timestamp, count, sum, minimum, maximum): a few numbers;
- for rolling windows, the (timestamp, value) of events inside the longest window that reads
  the stream, and no more than a count can need (``n + 1`` for "n times") when nothing sums
  them, else at most ``MAX_TRACKED_EVENTS``;
- for fixed date ranges, [count, sum, min, max] of the events stamped inside each range.

So a record grows with the number of conditions, never with the number of events.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

import attrs

from cjo.conditions import (
    EXTENSIONS,
    MISSING,
    And,
    CompiledCondition,
    Condition,
    Not,
    Or,
    compile_condition,
    lookup,
    walk,
)
from cjo.runtime.state import CustomerState, Track
from cjo.segments.history import (
    HISTORY_CONDITION_TYPES,
    Aggregate,
    Inactive,
    Performed,
    compile_extended,
    range_key,
    stream_of,
)

__all__ = ["MAX_TRACKED_EVENTS", "TrackSpec", "conditions_in", "plan_tracks", "stream_key"]

#: Most events one track keeps for the sums, averages, minimums and maximums of rolling windows.
#: Past it the oldest are dropped, so they see the newest this many. A count keeps ``n + 1``
#: (at most 1,001: validation caps ``n`` at 1,000), so it is exact.
MAX_TRACKED_EVENTS: Final = 1_000


def stream_key(node: Condition) -> str:
    """The record key of the track a history node reads: the event name, the property, and a
    digest of the filter's JSON (stable across processes and releases)."""
    stream = stream_of(node)
    if stream is None:
        raise TypeError(f"not a history condition: {node!r}")
    event, where, prop = stream
    key = event if prop is None else f"{event}|{prop}"
    if where is None:
        return key
    from cjo.serialization import converter  # noqa: PLC0415  (it imports this package's types)

    text = json.dumps(converter.unstructure(where, Condition), sort_keys=True,
                      separators=(",", ":"), default=str)
    return f"{key}#{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def _compile(node: Condition) -> CompiledCondition:
    return compile_extended(node, stream_key)


for _cls in HISTORY_CONDITION_TYPES:
    EXTENSIONS[_cls] = _compile


@attrs.define(slots=True)
class TrackSpec:
    """What one track keeps, from every condition that reads it."""

    key: str
    event: str
    where: CompiledCondition | None
    prop: str | None
    #: The longest rolling window that reads the track (None: no window reads it).
    horizon: timedelta | None = None
    #: How many recent events a count can need; None when an aggregate reads them all.
    keep: int | None = 0
    #: Fixed date ranges: key -> (since, until).
    ranges: dict[str, tuple[datetime | None, datetime | None]] = attrs.field(factory=dict)
    #: Whether an inactivity condition reads it (then tracking starts before any event).
    from_start: bool = False

    def absorb(self, node: Condition) -> None:
        window: timedelta | None = None
        if isinstance(node, Performed | Aggregate):
            window = node.window
            if window is None and (node.since is not None or node.until is not None):
                self.ranges[range_key(node.since, node.until)] = (node.since, node.until)
            if window is not None:
                if isinstance(node, Aggregate):
                    self.keep = None
                elif self.keep is not None:
                    self.keep = max(self.keep, node.count + 1)
        elif isinstance(node, Inactive):
            self.from_start = True
        if window is not None and (self.horizon is None or window > self.horizon):
            self.horizon = window

    def record(self, state: CustomerState, properties: Mapping[str, Any], ts: datetime,
               now: datetime) -> bool:
        """Count an event stamped ``ts`` (already known to match) in the record's track;
        whether anything changed."""
        value: float | None = None
        if self.prop is not None:
            found = lookup(properties, self.prop.split("."))
            if found is MISSING or isinstance(found, bool) or not isinstance(found, int | float):
                return False  # aggregates read numbers only
            value = found
        track = state.tracks.get(self.key)
        if track is None:
            track = state.own_tracks()[self.key] = Track(now)
        if track.first is None or ts < track.first:
            track.first = ts
        if track.last is None or ts > track.last:
            track.last = ts
        track.count += 1
        if value is not None:
            track.total += value
            track.low = value if track.low is None else min(track.low, value)
            track.high = value if track.high is None else max(track.high, value)
        for rkey, (since, until) in self.ranges.items():
            if (since is None or ts >= since) and (until is None or ts < until):
                acc = track.ranges.get(rkey)
                v = 0 if value is None else value
                if acc is None:
                    track.ranges[rkey] = [1, v, v, v]
                else:
                    acc[0] += 1
                    acc[1] += v
                    acc[2] = min(acc[2], v)
                    acc[3] = max(acc[3], v)
        if self.horizon is not None and ts > now - self.horizon:
            bisect.insort(track.recent, (ts, value), key=lambda e: e[0])
            self.prune(track, now)
        return True

    def prune(self, track: Track, now: datetime) -> bool:
        """Drop what no window can read any more at ``now`` or later; whether anything went."""
        recent = track.recent
        before = len(recent)
        if self.horizon is None:
            recent.clear()
            return before > 0
        if not recent:
            return False
        start = now - self.horizon
        drop = 0
        while drop < len(recent) and recent[drop][0] <= start:
            drop += 1
        # A count needs its n + 1 newest: fewer would read "more than 1000" as false for ever.
        cap = MAX_TRACKED_EVENTS if self.keep is None else self.keep
        drop = max(drop, len(recent) - cap)
        if drop:
            del recent[:drop]
        return drop > 0


def conditions_in(value: object) -> Iterator[Condition]:
    """Every condition node inside definitions (journeys, segments, rules), filters of history
    nodes included."""
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Condition):
            for node in walk(item):
                yield node
                if isinstance(node, Condition) and not isinstance(node, And | Or | Not):
                    stack.extend(getattr(node, name) for name in _nested(node))
        elif attrs.has(type(item)):
            stack.extend(getattr(item, f.name) for f in attrs.fields(type(item)))  # type: ignore[arg-type]
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _nested(node: Condition) -> Iterable[str]:
    return ("where",) if stream_of(node) is not None and node.where is not None else ()  # type: ignore[attr-defined]


def plan_tracks(definitions: object) -> dict[str, TrackSpec]:
    """The tracks the published definitions read, by key."""
    specs: dict[str, TrackSpec] = {}
    for node in conditions_in(definitions):
        stream = stream_of(node)
        if stream is None:
            continue
        key = stream_key(node)
        spec = specs.get(key)
        if spec is None:
            event, where, prop = stream
            spec = specs[key] = TrackSpec(
                key, event, compile_condition(where) if where is not None else None, prop
            )
        spec.absorb(node)
    return specs
