"""Calendar waits: until a time of day (WaitUntil), until a date read from the profile or the
context (WaitUntilDate), and until a duration after entry (WaitSinceEntry).

Every instant is computed in the customer's time zone through ``cjo.timezones`` when the wait
starts, and stored as an absolute UTC instant (the enrollment's wake-up), so editing the step
later does not re-time customers already waiting.

Arriving exactly at the instant goes on at once. A calendar wait that let an enrollment
through at an instant and is reached again at that same instant (a daily loop: wait until
09:00, send, back to the wait) waits for the next occurrence instead, so it never fires twice.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from cjo.conditions import MISSING, Exists, Ref, lookup
from cjo.errors import Problem
from cjo.limits import MAX_TIMESTAMP, MIN_TIMESTAMP
from cjo.model.steps import WaitSinceEntry, WaitUntil, WaitUntilDate
from cjo.runtime.kinds.base import HALT, Checker, Next, StepKind
from cjo.timezones import instant_of, localize, next_wall_time, read_moment, wall_time_of
from cjo.timezones import weekday_numbers as _weekday_numbers

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from cjo.model.journey import Journey
    from cjo.runtime.core import Decider
    from cjo.runtime.registry import CompiledJourney
    from cjo.runtime.state import Enrollment

__all__ = ["WaitSinceEntryKind", "WaitUntilDateKind", "WaitUntilKind", "date_target"]

# A date wait reads values a step can see without an event: the profile and the context.
_DATE_SCOPES: tuple[str, ...] = ("profile", "context")


def _wall_time_problems(value: object, name: str, where: str) -> list[Problem]:
    if not isinstance(value, time):
        return [Problem(where, f"{name} must be a time of day such as '09:00', got {value!r}")]
    if value.tzinfo is not None:
        return [Problem(where, f"{name} {value.isoformat()} must not carry a zone: the wait "
                               "uses the customer's time zone")]
    return []


def _released(d: Decider, e: Enrollment, at: datetime) -> bool:
    passed = d.passed
    return passed is not None and (e.id, e.step_id or "", at) in passed


def _release(d: Decider, e: Enrollment, at: datetime) -> None:
    if d.passed is None:
        d.passed = set()
    d.passed.add((e.id, e.step_id or "", at))


class WaitUntilKind(StepKind[WaitUntil]):
    step_type = WaitUntil
    waits = True

    def successors(self, step: WaitUntil) -> list[tuple[str, str | None]]:
        return [("next", step.next)]

    def check(
        self, step: WaitUntil, where: str, journey: Journey, checker: Checker
    ) -> list[Problem]:
        problems = _wall_time_problems(step.at, "at", where)
        try:
            _weekday_numbers(step.weekdays)
        except (ValueError, TypeError) as exc:
            problems.append(Problem(where, str(exc)))
        return problems

    def compile(self, step: WaitUntil) -> frozenset[int] | None:
        return _weekday_numbers(step.weekdays) or None

    def run(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step_id: str, step: WaitUntil,
        compiled: Any, at: datetime,
    ) -> Next:
        target = next_wall_time(
            at, step.at, d.zone(cj), compiled, inclusive=not _released(d, e, at)
        )
        if target == at:
            _release(d, e, at)
            return step.next
        d.schedule(e, target)
        return HALT

    def wake(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step: WaitUntil, compiled: Any,
        at: datetime,
    ) -> Next:
        _release(d, e, at)
        return step.next


def date_target(
    moment: datetime | date, zone: ZoneInfo, *, days: int = 0,
    offset: timedelta = timedelta(0), at: time | None = None,
) -> datetime:
    """The instant a date wait ends: ``moment`` moved by ``days`` calendar days in ``zone``, at
    the wall time ``at`` that day when given, then by ``offset`` of exact time."""
    if days == 0 and at is None:
        base = instant_of(moment, zone)  # an aware instant stays exact (no fold is lost)
    else:
        wall = wall_time_of(moment, zone) + timedelta(days=days)  # naive: calendar days
        if at is not None:
            wall = datetime.combine(wall.date(), at)
        base = localize(wall, zone)
    return base + offset


class WaitUntilDateKind(StepKind[WaitUntilDate]):
    step_type = WaitUntilDate
    waits = True

    def successors(self, step: WaitUntilDate) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = [("next", step.next)]
        if step.on_past is not None:
            out.append(("on_past", step.on_past))
        if step.on_missing is not None:
            out.append(("on_missing", step.on_missing))
        return out

    def check(
        self, step: WaitUntilDate, where: str, journey: Journey, checker: Checker
    ) -> list[Problem]:
        if not isinstance(step.date, Ref):
            problems = [Problem(where, f"date must name a field, such as attr('renewal_date') "
                                       f"or 'profile.renewal_date', got {step.date!r}")]
        else:
            problems = checker.condition(
                Exists(step.date), where, used_in="a wait until a date", scopes=_DATE_SCOPES
            )
        limit = checker.limits.max_duration
        if isinstance(step.days, bool) or not isinstance(step.days, int):
            problems.append(Problem(where, f"days must be a whole number, got {step.days!r}"))
        elif abs(step.days) > limit.days:
            problems.append(Problem(where, f"days {step.days} is beyond the limit of "
                                           f"{limit.days} days either way"))
        if abs(step.offset) > limit:
            problems.append(Problem(where, f"offset {step.offset} is beyond the limit of "
                                           f"{limit} either way"))
        if step.at is not None:
            problems += _wall_time_problems(step.at, "at", where)
        return problems

    def run(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step_id: str,
        step: WaitUntilDate, compiled: Any, at: datetime,
    ) -> Next:
        ref = step.date
        source = d.profile.attributes if ref.scope == "profile" else e.context
        value = lookup(source, ref.path.split("."))
        moment = None if value is MISSING or value is None else read_moment(value)
        target: datetime | None = None
        if moment is not None:
            try:
                target = date_target(moment, d.zone(cj), days=step.days, offset=step.offset,
                                     at=step.at)
            except OverflowError:
                # Only dates near year 1 or 9999 overflow (days and offset are bounded by
                # ``max_duration``): the year tells which end.
                target = MAX_TIMESTAMP if moment.year > MAX_TIMESTAMP.year // 2 else None
        expires_at = e.expires_at
        if (target is not None and target >= MAX_TIMESTAMP
                and expires_at is not None and expires_at < MAX_TIMESTAMP):
            # Past every instant cjo keeps, so past any max_lifetime: the enrollment expires
            # at that age, as for any date beyond it (a "never ends" 9999-12-31 sends nothing).
            d.schedule(e, target)
            return HALT
        if target is None or not MIN_TIMESTAMP <= target < MAX_TIMESTAMP:
            if value is MISSING or value is None:
                state = "missing"
            else:
                state = "not a date" if moment is None else "out of range"
            d.activity(e, "date_missing", f"{ref} is {state}", at)
            return step.on_missing if step.on_missing is not None else step.next
        if target > at:
            d.schedule(e, target)
            return HALT
        if target == at and not _released(d, e, at):
            _release(d, e, at)
            return step.next
        d.activity(e, "date_past", target.isoformat(), at)
        return step.on_past if step.on_past is not None else step.next

    def wake(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step: WaitUntilDate,
        compiled: Any, at: datetime,
    ) -> Next:
        _release(d, e, at)
        return step.next


class WaitSinceEntryKind(StepKind[WaitSinceEntry]):
    step_type = WaitSinceEntry
    waits = True

    def successors(self, step: WaitSinceEntry) -> list[tuple[str, str | None]]:
        return [("next", step.next)]

    def check(
        self, step: WaitSinceEntry, where: str, journey: Journey, checker: Checker
    ) -> list[Problem]:
        return checker.wait(step.duration, "duration", where, journey)

    def run(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step_id: str,
        step: WaitSinceEntry, compiled: Any, at: datetime,
    ) -> Next:
        target = e.entered_at + step.duration
        if target > at:
            d.schedule(e, target)
            return HALT
        return step.next  # already past: go on at once

    def wake(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step: WaitSinceEntry,
        compiled: Any, at: datetime,
    ) -> Next:
        return step.next
