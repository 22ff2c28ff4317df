"""cjo.timezones against zoneinfo: every DST transition of five zones from 2020 to 2030.

For each transition the test takes wall times in and around the gap (spring) or the fold
(autumn), and 09:00, and checks ``next_wall_time`` and the ``WaitUntil`` step against a
reference computed from zoneinfo alone by brute force: a wall time that exists takes its first
occurrence; one in a gap moves to the transition instant (the first instant after the gap).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from cjo import Journey, WaitUntil
from cjo.runtime.core import Decider, new_state
from cjo.runtime.kinds import HALT, step_kind
from cjo.runtime.registry import CompiledJourney, Registry
from cjo.runtime.state import Enrollment
from cjo.timezones import (
    customer_zone,
    instant_of,
    localize,
    next_wall_time,
    read_moment,
    wall_time_of,
    weekday_numbers,
)

# Northern and southern hemispheres, a 30-minute shift (Lord Howe), changes at local midnight
# (Santiago: 00:00 does not exist on its spring-forward day).
ZONES = (
    "Europe/Paris", "America/New_York", "Australia/Sydney", "Australia/Lord_Howe",
    "America/Santiago",
)
START, END = datetime(2020, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def transitions(zone: ZoneInfo) -> Iterator[tuple[datetime, timedelta, timedelta]]:
    """(instant, offset before, offset after) of every change of UTC offset, to the second."""
    step = timedelta(hours=6)
    t = START
    offset = t.astimezone(zone).utcoffset()
    while t < END:
        nxt = t + step
        after = nxt.astimezone(zone).utcoffset()
        if after != offset:
            lo, hi = t, nxt  # offset(lo) == before, offset(hi) == after
            while hi - lo > SECOND:
                mid = lo + (hi - lo) / 2
                if mid.astimezone(zone).utcoffset() == offset:
                    lo = mid
                else:
                    hi = mid
            assert offset is not None and after is not None
            yield hi, offset, after
            offset = after
        t = nxt


def reference_localize(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The first instant whose wall time on ``day`` is ``wall``; in a gap, the gap's end."""
    local = datetime.combine(day, wall)
    found = [
        i for fold in (0, 1)
        if (i := local.replace(tzinfo=zone, fold=fold).astimezone(UTC))
        .astimezone(zone).replace(tzinfo=None) == local
    ]
    if found:
        return min(found)
    # A gap: scan minute by minute from before it to the first instant that reads later.
    t = local.replace(tzinfo=zone, fold=1).astimezone(UTC) - timedelta(hours=3)
    while t.astimezone(zone).replace(tzinfo=None) < local:
        t += timedelta(minutes=1)
    # Back to the exact second where the wall clock jumped past ``local``.
    while (t - SECOND).astimezone(zone).replace(tzinfo=None) >= local:
        t -= SECOND
    return t


def reference_next(after: datetime, wall: time, zone: ZoneInfo) -> datetime:
    day = after.astimezone(zone).date() - timedelta(days=1)
    while True:
        candidate = reference_localize(day, wall, zone)
        if candidate >= after:
            return candidate
        day += timedelta(days=1)


def walls_around(instant: datetime, before: timedelta, after: timedelta) -> list[time]:
    """Wall times at, inside and just around the gap or fold of a transition, and 09:00."""
    start = (instant + min(before, after)).replace(tzinfo=None)
    end = (instant + max(before, after)).replace(tzinfo=None)
    middle = start + (end - start) / 2
    points = [start - timedelta(minutes=1), start, middle, end - timedelta(minutes=1), end]
    return [*{p.time().replace(second=0, microsecond=0) for p in points}, time(9)]


def wait_until_run(zone_name: str, wall: time, at: datetime) -> datetime | None:
    """Where a WaitUntil step reached at ``at`` schedules the enrollment (None: goes on)."""
    step = WaitUntil(wall, next="after")
    journey = Journey("j", "w", {"w": step, "after": WaitUntil(wall)}, timezone=zone_name)
    decider = Decider(Registry(), new_state("c", at))
    enrollment = Enrollment("e", "j", 1, "c", at)
    enrollment.step_id = "w"
    result = step_kind(step).run(decider, CompiledJourney.compile(journey), enrollment, "w",
                                 step, step_kind(step).compile(step), at)
    if result is HALT:
        return enrollment.wake_at
    assert result == "after"
    return None


@pytest.mark.parametrize("zone_name", ZONES)
def test_next_wall_time_and_the_wait_match_zoneinfo_at_every_transition(zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    found = list(transitions(zone))
    assert len(found) >= 18, "every zone here changes offset twice a year (Santiago aside)"
    checked = 0
    for instant, before, after in found:
        for wall in walls_around(instant, before, after):
            for start in (instant - timedelta(days=1, minutes=7), instant - timedelta(hours=2),
                          instant, instant + timedelta(hours=1)):
                expected = reference_next(start, wall, zone)
                assert next_wall_time(start, wall, zone) == expected, (zone_name, start, wall)
                wake = wait_until_run(zone_name, wall, start)
                assert (wake or start) == expected, (zone_name, start, wall)
                checked += 1
            # The day of the transition itself, through localize.
            day = (instant + before).date()
            assert localize(datetime.combine(day, wall), zone) == reference_localize(
                day, wall, zone
            )
    assert checked > 0


@pytest.mark.parametrize("zone_name", ZONES)
def test_a_daily_0900_never_fires_twice_nor_at_another_hour(zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    for instant, _, _ in transitions(zone):
        t = instant - timedelta(days=3)
        fired = []
        for _ in range(7):
            t = next_wall_time(t, time(9), zone, inclusive=False)
            fired.append(t.astimezone(zone))
        assert all(f.time() == time(9) for f in fired), fired
        days = [f.date() for f in fired]
        assert days == [days[0] + timedelta(days=i) for i in range(7)], days  # one per day


def test_a_wall_time_in_a_spring_gap_moves_forward_and_an_autumn_one_takes_the_first() -> None:
    paris = ZoneInfo("Europe/Paris")
    # 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC); 2026-10-25: 03:00 CEST -> 02:00 CET.
    assert localize(datetime(2026, 3, 29, 2, 30), paris) == datetime(2026, 3, 29, 1, tzinfo=UTC)
    assert localize(datetime(2026, 10, 25, 2, 30), paris) == datetime(
        2026, 10, 25, 0, 30, tzinfo=UTC
    )


def test_weekdays_restrict_the_days() -> None:
    paris = ZoneInfo("Europe/Paris")
    friday_noon = datetime(2026, 3, 6, 11, tzinfo=UTC)  # 12:00 in Paris
    monday = next_wall_time(friday_noon, time(9), paris, weekday_numbers(["mon"]))
    assert monday == datetime(2026, 3, 9, 8, tzinfo=UTC)
    assert next_wall_time(friday_noon, time(13), paris, weekday_numbers(["fri"])) == datetime(
        2026, 3, 6, 12, tzinfo=UTC
    )


def test_weekday_names() -> None:
    assert weekday_numbers(["mon", "sun"]) == {0, 6}
    with pytest.raises(ValueError, match="unknown weekday 'monday'; expected one of mon, tue"):
        weekday_numbers(["monday"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-05-10", date(2026, 5, 10)),
        ("2026-05-10T09:00", datetime(2026, 5, 10, 9)),
        ("2026-05-10T07:00:00Z", datetime(2026, 5, 10, 7, tzinfo=UTC)),
        (datetime(2026, 5, 10, 7, tzinfo=UTC), datetime(2026, 5, 10, 7, tzinfo=UTC)),
        ("soon", None),
        ("2026-13-40", None),
        (20260510, None),
        ("2026-05-10T09:00" + " " * 100, None),
    ],
)
def test_read_moment(value: object, expected: object) -> None:
    assert read_moment(value) == expected


def test_instants_and_wall_times_of_dates_and_datetimes() -> None:
    ny = ZoneInfo("America/New_York")
    assert instant_of(date(2026, 5, 10), ny) == datetime(2026, 5, 10, 4, tzinfo=UTC)
    assert instant_of(datetime(2026, 5, 10, 9), ny) == datetime(2026, 5, 10, 13, tzinfo=UTC)
    aware = datetime(2026, 5, 10, 9, tzinfo=UTC)
    assert instant_of(aware, ny) == aware
    assert wall_time_of(aware, ny) == datetime(2026, 5, 10, 5)
    assert wall_time_of(date(2026, 5, 10), ny) == datetime(2026, 5, 10)


def test_the_zone_order_skips_unknown_names() -> None:
    assert customer_zone("Mars/Olympus", None, "Europe/Paris") == ZoneInfo("Europe/Paris")
    assert customer_zone(None, None, None) == ZoneInfo("UTC")


@pytest.mark.parametrize("name", ["localtime", "right/UTC", "posix/Europe/Paris"])
def test_a_zone_file_that_is_not_an_iana_name_is_refused_everywhere(name: str) -> None:
    # "localtime" is whatever zone the machine is set to: two workers on machines set
    # differently would wake the same customer at different hours. "right/" zones count leap
    # seconds (27 s off), "posix/" ones duplicate the plain names: none is an IANA zone name.
    from cjo import Engine, EventTrigger, InvalidEventError, ProfileUpdate, Send, UsageError
    from cjo.errors import DefinitionError

    with pytest.raises(InvalidEventError, match="not a known IANA time zone"):
        ProfileUpdate("ann", timezone=name)
    with pytest.raises(UsageError, match="not a known IANA time zone"):
        Engine(default_timezone=name)
    with pytest.raises(DefinitionError, match="not a known IANA time zone"):
        Engine().publish(journeys=[Journey("j", trigger=EventTrigger("go"), entry="s",
                                           steps={"s": Send("c", "email")}, timezone=name)])
