"""Frequency caps: counted from the send ledger in the customer record.

The ledger (``CustomerState.sends``) holds one entry per marketing send: its instant, channel and
tags. It is read and written in the customer's transaction with the send itself, so two
journeys (or two workers) can never both take the last slot. An entry is kept only while some
cap it counts for can still see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from cjo.model.policies import FrequencyCap
from cjo.runtime.state import NO_ENTRIES, CustomerState, LedgerEntry
from cjo.timezones import localize, next_wall_time

__all__ = ["capped_by", "counts", "give_back", "record_send", "window_start"]

_MIDNIGHT = time(0)


def _tagged(tags: Sequence[str], tag: str) -> bool:
    prefix = tag + "/"
    return any(t == tag or t.startswith(prefix) for t in tags)


def counts(cap: FrequencyCap, channel: str, tags: Sequence[str]) -> bool:
    """Whether a send on ``channel`` with ``tags`` is counted (and capped) by ``cap``."""
    if cap.channel is not None and cap.channel != channel:
        return False
    return cap.tag is None or _tagged(tags, cap.tag)


def window_start(cap: FrequencyCap, now: datetime, zone: ZoneInfo) -> datetime:
    """Sends strictly after this instant count (rolling), or at or after it (calendar day)."""
    if cap.period == "calendar_day":
        return localize(datetime.combine(now.astimezone(zone).date(), _MIDNIGHT), zone)
    assert cap.per is not None  # validation requires it for a rolling cap
    return now - cap.per


def _in_window(cap: FrequencyCap, at: datetime, start: datetime) -> bool:
    # Rolling windows are half-open: a send exactly ``per`` old has left the window.
    return at >= start if cap.period == "calendar_day" else at > start


def _release(cap: FrequencyCap, inside: list[datetime], now: datetime, zone: ZoneInfo) -> datetime:
    """The first instant at which one more send fits under ``cap``."""
    if cap.period == "calendar_day":
        return next_wall_time(now, _MIDNIGHT, zone, inclusive=False)
    assert cap.per is not None
    # The oldest sends must leave the window until one slot is free.
    return sorted(inside)[len(inside) - cap.limit] + cap.per


def capped_by(
    caps: Sequence[FrequencyCap],
    ledger: Sequence[LedgerEntry],
    channel: str,
    tags: Sequence[str],
    now: datetime,
    zone: ZoneInfo,
) -> tuple[FrequencyCap, datetime] | None:
    """The first cap (in definition order) this send would exceed, and the first instant every
    exceeded cap allows it; None when it fits under all of them."""
    first: FrequencyCap | None = None
    release: datetime | None = None
    for cap in caps:
        if not counts(cap, channel, tags):
            continue
        start = window_start(cap, now, zone)
        inside = [at for at, ch, tg in ledger if _in_window(cap, at, start) and counts(cap, ch, tg)]
        if len(inside) < cap.limit:
            continue
        first = first or cap
        until = _release(cap, inside, now, zone)
        release = until if release is None or until > release else release
    if first is None or release is None:
        return None
    return first, release


# A calendar day is at most 25 hours (DST); keep its sends a little longer than that.
_DAY_HORIZON = timedelta(hours=26)


def record_send(
    state: CustomerState,
    caps: Sequence[FrequencyCap],
    channel: str,
    tags: tuple[str, ...],
    now: datetime,
) -> None:
    """Add a marketing send to the ledger and drop the entries no cap can count any more."""
    entries = [*state.sends, (now, channel, tags)] if any(
        counts(c, channel, tags) for c in caps
    ) else state.sends
    kept: list[LedgerEntry] = []
    for entry in entries:
        at, ch, tg = entry
        for cap in caps:
            horizon = cap.per if cap.period == "rolling" and cap.per else _DAY_HORIZON
            if at > now - horizon and counts(cap, ch, tg):
                kept.append(entry)
                break
    state.sends = kept or NO_ENTRIES


def give_back(state: CustomerState, at: datetime, channel: str) -> bool:
    """Free the cap slot of a marketing send decided at ``at`` on ``channel`` that never went
    out (withheld before its first attempt): the ledger entry it took no longer counts. A
    message attempted counts, delivered or not, as the providers' own caps count sends.
    Whether an entry was found (it may have been dropped as too old to count)."""
    sends = state.sends
    for i in range(len(sends) - 1, -1, -1):
        entry_at, entry_channel, _tags = sends[i]
        if entry_at == at and entry_channel == channel:
            state.sends = [*sends[:i], *sends[i + 1:]] or NO_ENTRIES
            return True
    return False
