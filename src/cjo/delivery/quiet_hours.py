"""Quiet hours: local hours in which marketing sends wait (or are dropped).

Every wall-clock computation goes through ``cjo.timezones``: a quiet period from 21:00 to 08:00
is 21:00 to 08:00 on the customer's clock on every day, whatever DST does (a start or end that
falls in a spring-forward gap moves to the first instant after it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from cjo.model.policies import QuietHours
from cjo.runtime.kinds.flow import split_fraction
from cjo.timezones import localize

__all__ = ["applies", "quiet_until", "release_at"]

_DAY = timedelta(days=1)


def applies(q: QuietHours, journey_id: str, channel: str, transactional: bool) -> bool:
    if transactional and not q.include_transactional:
        return False
    if q.journeys and journey_id not in q.journeys:
        return False
    return not q.channels or channel in q.channels


def quiet_until(q: QuietHours, at: datetime, zone: ZoneInfo) -> datetime | None:
    """When ``at`` falls in one of ``q``'s quiet periods, the instant that period ends."""
    today = at.astimezone(zone).date()
    wraps = q.end <= q.start  # e.g. 21:00 to 08:00: the period ends the next day
    # A period that began yesterday may still run (it wraps past midnight).
    for day in (today - _DAY, today):
        if q.weekdays and day.weekday() not in q.weekdays:
            continue
        start = localize(datetime.combine(day, q.start), zone)
        end = localize(datetime.combine(day + _DAY if wraps else day, q.end), zone)
        if start <= at < end:
            return end
    return None


def release_at(
    rules: Sequence[QuietHours], at: datetime, zone: ZoneInfo, enrollment_id: str,
) -> tuple[QuietHours, datetime] | None:
    """The first rule (in definition order) whose quiet period holds ``at``, and when the send
    is released: the end of the period plus this enrollment's stable share of ``spread``."""
    for q in rules:
        end = quiet_until(q, at, zone)
        if end is not None:
            # A stable share per enrollment, so released sends do not all leave at once.
            share = split_fraction(enrollment_id, "quiet_hours", q.id) if q.spread else 0.0
            return q, end + q.spread * share
    return None
