"""The schedule trigger kind: a journey started for a segment's members on a cron rule.

Nothing here runs per customer: occurrences are found and run by ``cjo.runtime.schedules``
(from ``Engine.run_due``), which enters each member through ``Decider.consider_entry``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from croniter import croniter

from cjo.errors import Problem
from cjo.model.triggers import ScheduleTrigger
from cjo.runtime.kinds.base import Checker, TriggerKind
from cjo.timezones import UTC_ZONE, is_zone, zone_or_none

if TYPE_CHECKING:
    from cjo.model.journey import Journey

__all__ = ["ScheduleTriggerKind", "latest_occurrence", "next_occurrence"]


class ScheduleTriggerKind(TriggerKind[ScheduleTrigger]):
    trigger_type = ScheduleTrigger

    def check(
        self, trigger: ScheduleTrigger, where: str, journey: Journey, checker: Checker
    ) -> list[Problem]:
        problems: list[Problem] = []
        cron = trigger.cron
        if not isinstance(cron, str) or not croniter.is_valid(cron) or (
            # croniter reads a sixth field as seconds (a rule running every second of a
            # minute) and a seventh as years; a rule here has the five fields of cron.
            not cron.strip().startswith("@") and len(cron.split()) != 5
        ):
            problems.append(Problem(where, (
                f"cron {cron!r} is not a cron rule (five fields: minute hour "
                "day-of-month month day-of-week, such as '0 9 * * MON')"
            )))
        elif draws(cron):
            problems.append(Problem(where, (
                f"cron {cron!r} draws a random field (R): it would be drawn anew at every "
                "pass of every worker, each finding another time; write the time itself"
            )))
        elif not occurs(cron):
            problems.append(Problem(where, (
                f"cron {cron!r} never occurs (a day none of its months has, such as the 30th "
                "of February)"
            )))
        if trigger.timezone is not None and not is_zone(trigger.timezone):
            problems.append(Problem(
                where, f"timezone {trigger.timezone!r} is not a known IANA time zone"
            ))
        if trigger.segment is not None and trigger.segment not in checker.segment_ids:
            problems.append(Problem(where, f"segment {trigger.segment!r} does not exist"))
        return problems


def occurs(cron: str) -> bool:
    """Whether the rule has an occurrence: croniter refuses to find one for a rule that never
    occurs (``0 9 30 2 *``), and would raise that at every run. A rule that ``draws`` a random
    field has none either: it runs nothing."""
    try:
        _rule(cron, _SOME_INSTANT).get_next(datetime)
    except ValueError:  # croniter's CroniterBadDateError
        return False
    return True


def draws(cron: str) -> bool:
    """Whether a field of the rule is random (croniter's ``R``, ``R(0-29)``, ``R/5``; no other
    field starts with an R). croniter draws it anew each time it reads the rule, so every pass
    of every worker would find another occurrence, and a daily rule would run several times a
    day."""
    return any(field[0] in "rR" for field in cron.split())


def _rule(cron: str, base: datetime) -> croniter:
    """croniter's reading of the rule from ``base``; ``ValueError`` for a rule that ``draws``
    (stored before validation refused such rules), which runs nothing."""
    if draws(cron):
        raise ValueError(f"cron {cron!r} draws a random field")
    return croniter(cron, base)


#: Where ``occurs`` looks from: any instant will do, a fixed one keeps validation repeatable.
_SOME_INSTANT = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def latest_occurrence(trigger: ScheduleTrigger, now: datetime) -> datetime:
    """The latest occurrence of the rule at or before ``now`` (an aware instant)."""
    zone = _zone(trigger)
    rule = _rule(trigger.cron, now.astimezone(zone))
    # croniter's previous occurrence is strictly before its base: step past ``now`` first.
    rule.get_next(datetime)
    while (found := _first_pass(rule.get_prev(datetime), zone, trigger.cron)) is None:
        pass
    return found


def next_occurrence(trigger: ScheduleTrigger, after: datetime) -> datetime:
    """The first occurrence of the rule strictly after ``after`` (an aware instant)."""
    zone = _zone(trigger)
    rule = _rule(trigger.cron, after.astimezone(zone))
    # From a base inside a repeated hour croniter may answer an earlier instant: skip it too.
    while (found := _first_pass(rule.get_next(datetime), zone, trigger.cron)) is None or (
        found <= after
    ):
        pass
    return found


def _zone(trigger: ScheduleTrigger) -> ZoneInfo:
    return zone_or_none(trigger.timezone) or UTC_ZONE


def _first_pass(found: datetime, zone: ZoneInfo, cron: str) -> datetime | None:
    """``found`` as a wall time in ``zone``, or None when it is the second pass of a wall time
    the clocks went back over (an ambiguous wall time runs at its first occurrence only), or
    the end of a gap that swallowed the rest of the occurrence's day (a day the zone skips:
    its time never came, and the next day has its own occurrence)."""
    # Through UTC, so the zone sets ``fold`` itself (croniter's own fold is not reliable).
    instant = found.astimezone(UTC)
    local = instant.astimezone(zone)
    if local.fold:
        return None
    wall = local.replace(tzinfo=None)
    if croniter.match(cron, wall):
        return local
    # Moved to the end of a gap: the occurrence it stands for is the rule's first wall time
    # after the wall clock's last reading before the gap.
    before = (instant - _MICROSECOND).astimezone(zone).replace(tzinfo=None)
    meant = croniter(cron, before).get_next(datetime)
    return local if meant.date() == wall.date() else None
