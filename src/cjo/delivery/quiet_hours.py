"""Quiet hours: local hours in which marketing sends wait (or are dropped).

Every wall-clock computation goes through ``cjo.timezones``: a quiet period from 21:00 to 08:00
is 21:00 to 08:00 on the customer's clock on every day, whatever DST does (a start or end that
falls in a spring-forward gap moves to the first instant after it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from cjo.model.policies import QuietHours
from cjo.runtime.kinds.flow import split_fraction
from cjo.timezones import customer_zone, localize

if TYPE_CHECKING:
    from cjo.channels.base import Message
    from cjo.runtime.registry import Registry
    from cjo.runtime.state import CustomerState

__all__ = ["applies", "held_at_dispatch", "quiet_until", "release_at"]

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


def held_at_dispatch(
    registry: Registry, state: CustomerState | None, message: Message, now: datetime,
    default_timezone: str | None,
) -> tuple[QuietHours, datetime] | None:
    """The rule whose quiet period holds ``message`` when it is dispatched at ``now``, after
    it was written (a retry, a worker that comes late), and when it is released (as at the
    send, with the enrollment's share of ``spread``); None when it may go out."""
    rules = [q for q in registry.delivery.quiet_hours
             if applies(q, message.journey_id, message.channel, message.transactional)]
    if not rules:
        return None
    journey = registry.version(message.journey_id, message.journey_version)
    if journey is None and (latest := registry.latest.get(message.journey_id)) is not None:
        journey = latest.journey
    profile = state.profile if state is not None else None
    zone = customer_zone(profile.timezone if profile is not None else None,
                         journey.timezone if journey is not None else None, default_timezone)
    return release_at(rules, now, zone, message.enrollment_id)
