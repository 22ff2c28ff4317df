"""Time zones: which zone a customer's calendar is in, and local wall times as instants.

Every calendar rule of cjo (a wait until 09:00, quiet hours, a cap per calendar day) goes
through here, so they all agree on two things:

- the zone: the customer's profile, then the journey's, then the engine's default, then UTC
  (a name that is not a known IANA zone is skipped, never an error at decision time);
- DST: a wall time that does not exist (02:30 on a spring-forward night) moves forward to the
  first instant after the gap (03:00); one that happens twice (autumn) takes its first
  occurrence. A time of day that never comes on a day (a day the zone skips) has no occurrence
  that day.

Dates and datetimes read from profiles and events (``read_moment``, ``instant_of``,
``wall_time_of``) follow one rule too: an aware datetime is that instant; a naive datetime or
an ISO string without an offset is a wall time in the customer's zone; a date alone is the
start of that day (local midnight) there.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "UTC_ZONE",
    "WEEKDAYS",
    "customer_zone",
    "instant_of",
    "is_zone",
    "localize",
    "next_wall_time",
    "read_moment",
    "wall_time_of",
    "weekday_numbers",
    "zone_or_none",
]

UTC_ZONE = ZoneInfo("UTC")
_SECOND = timedelta(seconds=1)

#: Weekday names as definitions write them, Monday first (``date.weekday()`` order).
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# The longest ISO 8601 date-time worth parsing ("2026-05-10T09:00:00.000000+05:30" is 32).
_MAX_ISO_LENGTH = 40


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
    """Whether ``name`` is a known IANA zone, as a new profile, journey or engine zone must be.

    Files of the zone database that are not zone names are refused: ``localtime`` is the
    machine's own setting (workers set differently would disagree), ``right/`` zones count
    leap seconds (27 s off), ``posix/`` ones copy the plain names."""
    if name == "localtime" or name.startswith(("right/", "posix/")):
        return False
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
    time in ``zone`` is ``wall``, on one of ``weekdays`` (Monday is 0) when given.

    A day whose ``wall`` falls in a gap that runs into the next day (Pacific/Apia skipped 30
    December 2011) has no occurrence: moved to the gap's end it would land on the next day,
    which has its own, and a daily wait would fire twice that day."""
    start: date = after.astimezone(zone).date()
    for offset in range(-1, 15):  # two weeks: a skipped day may be the only one
        day = start + timedelta(days=offset)
        if weekdays and day.weekday() not in weekdays:
            continue
        candidate = localize(datetime.combine(day, wall), zone)
        if candidate > after or (inclusive and candidate == after):
            if candidate.astimezone(zone).date() != day:
                continue
            return candidate
    raise ValueError("weekdays must name at least one day from 0 (Monday) to 6 (Sunday)")


def weekday_numbers(names: Collection[str]) -> frozenset[int]:
    """The ``date.weekday()`` numbers of weekday names such as ``("mon", "fri")``; raises
    ``ValueError`` for a name that is not one of ``WEEKDAYS``."""
    numbers: set[int] = set()
    for name in names:
        if name not in WEEKDAYS:
            raise ValueError(f"unknown weekday {name!r}; expected one of {', '.join(WEEKDAYS)}")
        numbers.add(WEEKDAYS.index(name))
    return frozenset(numbers)


def read_moment(value: object) -> datetime | date | None:
    """A datetime or a date read from a stored value: a ``datetime``, a ``date``, or an ISO 8601
    string (``"2026-05-10"``, ``"2026-05-10T09:00"``, ``"2026-05-10T07:00:00Z"``,
    ``"2026-05-10T09:00+02:00"``). None for anything else."""
    if isinstance(value, datetime | date):
        return value
    if not isinstance(value, str) or not 10 <= len(value) <= _MAX_ISO_LENGTH:
        return None
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def wall_time_of(value: datetime | date, zone: ZoneInfo) -> datetime:
    """The naive local wall time of ``value`` in ``zone`` (a date is its local midnight)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value
        return value.astimezone(zone).replace(tzinfo=None)
    return datetime.combine(value, time())


def instant_of(value: datetime | date, zone: ZoneInfo) -> datetime:
    """The UTC instant of ``value``: an aware datetime is itself; a naive one is a wall time in
    ``zone``; a date is its local midnight in ``zone`` (by the DST rules above)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return localize(wall_time_of(value, zone), zone)
