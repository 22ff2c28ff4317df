"""Time zones: which zone a customer's calendar is in, and local wall times as instants.

Every calendar rule of cjo (a wait until 09:00, quiet hours, a cap per calendar day) goes
through here, so they all agree on two things:

- the zone: the customer's profile, then the journey's, then the engine's default, then UTC
  (a name that is not a known IANA zone is skipped, never an error at decision time);
- DST: a wall time that does not exist (02:30 on a spring-forward night) moves forward to the
  first instant after the gap (03:00); one that happens twice (autumn) takes its first
  occurrence.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["UTC_ZONE", "customer_zone", "is_zone", "localize", "next_wall_time", "zone_or_none"]

UTC_ZONE = ZoneInfo("UTC")
_SECOND = timedelta(seconds=1)


@functools.lru_cache(maxsize=4096)
def zone_or_none(name: str | None) -> ZoneInfo | None:
    """The zone called ``name``, or None when it is not a known IANA zone."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def is_zone(name: str) -> bool:
    return zone_or_none(name) is not None


def customer_zone(*names: str | None) -> ZoneInfo:
    """The first known zone among ``names`` (profile, journey, engine default), else UTC."""
    for name in names:
        z = zone_or_none(name)
        if z is not None:
            return z
    return UTC_ZONE


def localize(local: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of the naive wall time ``local`` in ``zone``, by the rules above."""
    first = local.replace(tzinfo=zone, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == local:
        return instant  # it exists (fold=0 is the first occurrence when it happens twice)
    # In a gap: fold=0 read it with the offset before the change, which lands after the gap;
    # fold=1 with the offset after it, which lands before. The change lies between.
    lo = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    hi = instant
    target = hi.astimezone(zone).utcoffset()
    while hi - lo > _SECOND:
        mid = (lo + (hi - lo) / 2).replace(microsecond=0)
        if mid <= lo:
            break
        if mid.astimezone(zone).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return hi


def next_wall_time(
    after: datetime,
    wall: time,
    zone: ZoneInfo,
    weekdays: Collection[int] | None = None,
    *,
    inclusive: bool = True,
) -> datetime:
    """The first instant at or after ``after`` (strictly after unless ``inclusive``) whose wall
    time in ``zone`` is ``wall``, on one of ``weekdays`` (Monday is 0) when given."""
    start: date = after.astimezone(zone).date()
    for offset in range(-1, 9):
        day = start + timedelta(days=offset)
        if weekdays and day.weekday() not in weekdays:
            continue
        candidate = localize(datetime.combine(day, wall), zone)
        if candidate > after or (inclusive and candidate == after):
            return candidate
    raise ValueError("weekdays must name at least one day from 0 (Monday) to 6 (Sunday)")
