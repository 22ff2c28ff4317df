"""Schedule triggers: journeys started for a segment's members at each occurrence of a cron
rule. ``Engine.run_due`` runs the occurrences that fell due; ``Engine.publish`` records where
a new schedule starts, so no occurrence before the publish is ever run (one at the publish
instant is).

Each occurrence runs once per customer whatever the number of workers: every entry claims the
id ``schedule:<journey>:<occurrence>:<customer>`` in the customer's transaction (as an event id
is claimed; ``cjo.storage.erasure.schedule_claim``, so that erasing the customer removes it),
and the occurrence is marked done once every page of members was walked. Two workers that
notice the same occurrence both walk the members; each customer still enters once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import attrs

from cjo.model.journey import Journey
from cjo.model.triggers import ScheduleTrigger
from cjo.outcome import OutcomeBuilder
from cjo.runtime.kinds.schedule import latest_occurrence, next_occurrence, occurs
from cjo.runtime.state import decided_until
from cjo.storage.base import page_of_ids
from cjo.storage.erasure import schedule_claim

if TYPE_CHECKING:
    from cjo.engine import Engine
    from cjo.runtime.core import Decider
    from cjo.runtime.registry import CompiledJourney, Registry

__all__ = [
    "due_occurrences", "mark_schedules", "next_schedule_run", "run_occurrence",
    "say_never_occurring",
]

log = logging.getLogger("cjo.scheduling")

_PAGE = 500
# An occurrence at the very instant of the publish is not before it: it runs.
_JUST_BEFORE = timedelta(microseconds=1)


def _setting(journey_id: str) -> str:
    return f"schedule:{journey_id}"


def _schedules(
    registry: Registry, *, paused: bool = False
) -> Iterator[tuple[CompiledJourney, ScheduleTrigger]]:
    """The latest version of every journey started by a schedule (paused ones if asked), with
    the rule in the zone it is read in."""
    for cj in registry.latest.values():
        trigger = _in_zone(cj.journey)
        running = paused or cj.journey.id not in registry.paused
        if trigger is not None and running:
            yield cj, trigger


def _in_zone(journey: Journey) -> ScheduleTrigger | None:
    """The journey's schedule, its zone filled in from the journey's ``timezone`` when it
    names none (UTC when neither does); None when a schedule does not start the journey."""
    trigger = journey.trigger
    if not isinstance(trigger, ScheduleTrigger):
        return None
    if trigger.timezone is None and journey.timezone is not None:
        return attrs.evolve(trigger, timezone=journey.timezone)
    return trigger


def _done(engine: Engine, journey_id: str) -> datetime | None:
    """The last occurrence of the journey's schedule run (or counted as run), if any."""
    done = engine.storage.get_setting(_setting(journey_id))
    return None if done is None else datetime.fromisoformat(done)


def mark_schedules(
    engine: Engine, registry: Registry, at: datetime, *, replace: bool = False
) -> None:
    """Count schedules from ``at``, as if published then: the latest occurrence strictly
    before it is recorded as done, so the first one run is the next (``at`` itself, if an
    occurrence). Only schedules not seen before, unless ``replace`` (a back-test without a
    start publishes before it knows its first instant, and counts from that instant once it
    does)."""
    for cj, trigger in _schedules(registry, paused=True):
        if not replace and _done(engine, cj.journey.id) is not None:
            continue
        try:
            latest_run = latest_occurrence(trigger, at - _JUST_BEFORE)
        except (OverflowError, ValueError):
            # No occurrence can precede ``at`` (a back-test publishing before its first
            # input): nothing is marked, and the first run counts from its own instant.
            continue
        engine.storage.put_setting(_setting(cj.journey.id), latest_run.isoformat())


def _rule_since(registry: Registry, journey_id: str, trigger: ScheduleTrigger) -> datetime | None:
    """When the journey's schedule took its rule: the publish instant of the oldest version in
    the newest run of versions with this cron rule and zone (None when none is recorded)."""
    since: datetime | None = None
    for at, cj in registry.newer.get(journey_id, ()):
        other = _in_zone(cj.journey)
        if not (other is not None and other.cron == trigger.cron
                and other.timezone == trigger.timezone):
            break
        since = at
    return since


def _counted_from(
    engine: Engine, registry: Registry, cj: CompiledJourney, trigger: ScheduleTrigger
) -> datetime | None:
    """The last occurrence counted as run: the one recorded, or, when the rule changed since
    (a new cron rule or zone, or a journey that became a schedule again), the new rule's last
    occurrence before that publish, which no worker may run."""
    done = _done(engine, cj.journey.id)
    if done is None:
        return None
    since = _rule_since(registry, cj.journey.id, trigger)
    if since is None or done >= since:
        return done
    try:
        return max(done, latest_occurrence(trigger, since - _JUST_BEFORE))
    except (OverflowError, ValueError):  # nothing precedes it (a back-test's first publish)
        return done


def next_schedule_run(engine: Engine) -> datetime | None:
    """The earliest occurrence, among the running schedules, after the last one each has run
    (None without schedules, or before any instant was recorded for them). Back-tests run
    each occurrence at its own instant with it."""
    earliest: datetime | None = None
    registry = engine._sync()
    for cj, trigger in _schedules(registry):
        done = _counted_from(engine, registry, cj, trigger)
        if done is None:
            continue
        try:
            following = next_occurrence(trigger, done)
        except ValueError:  # a rule that never occurs, stored before validation refused it
            continue
        if earliest is None or following < earliest:
            earliest = following
    return earliest


def say_never_occurring(registry: Registry) -> None:
    """Log each schedule whose rule never occurs (stored before validation refused such
    rules: ``run_schedules`` passes it by), once per definitions an engine takes, rather than
    at every pass."""
    for cj, trigger in _schedules(registry, paused=True):
        if not occurs(trigger.cron):
            log.warning("schedule of journey %r never occurs: %r", cj.journey.id, trigger.cron)


def due_occurrences(
    engine: Engine, now: datetime
) -> list[tuple[datetime, CompiledJourney, ScheduleTrigger]]:
    """The schedule occurrences due by ``now`` that are not done yet (each schedule's latest
    one only: older missed occurrences are skipped), earliest first, for ``run_occurrence``,
    each in the schedule's zone (its claims and ``scheduled_at`` name it so). A schedule
    published by a process that marked nothing is counted from here instead."""
    registry = engine._sync()
    due: list[tuple[datetime, CompiledJourney, ScheduleTrigger]] = []
    for cj, trigger in _schedules(registry):
        done = _counted_from(engine, registry, cj, trigger)
        try:
            occurrence = latest_occurrence(trigger, now)
        except ValueError:
            # A rule that never occurs (stored before validation refused it): it runs
            # nothing, and must not stop the worker's pass for everyone else. Said once, when
            # the engine took the definitions (``say_never_occurring``), not at every pass.
            continue
        if done is None:
            engine.storage.put_setting(_setting(cj.journey.id), occurrence.isoformat())
        elif occurrence > done:
            due.append((occurrence, cj, trigger))
    due.sort(key=lambda d: (d[0], d[1].journey.id))
    return due


def run_occurrence(
    engine: Engine, cj: CompiledJourney, trigger: ScheduleTrigger, occurrence: datetime,
    now: datetime, builder: OutcomeBuilder,
) -> None:
    """Enter the members of the schedule at ``occurrence`` (a pass at ``now``, when the
    wake-ups due by the occurrence have fired), then mark it done. Each member is decided at
    the occurrence, as a wake-up is at its instant, so a late worker changes nothing; one
    whose record was decided later than that (an input of theirs handled since) at the
    latest instant it shows, so that their history keeps its order."""
    storage = engine.storage
    segment = trigger.segment
    pages: Callable[[str | None], list[str]] = (
        (lambda after: page_of_ids(storage, "segment_members", storage.segment_members(
            segment, after=after, limit=_PAGE), after))
        if segment is not None else (lambda after: page_of_ids(
            storage, "customer_ids", storage.customer_ids(after=after, limit=_PAGE), after))
    )
    stamp = occurrence.isoformat()
    journey_id = cj.journey.id
    registry = engine._sync()
    runs_from, skip_sends = _after_pause(registry, cj, occurrence)

    def enter(decider: Decider) -> None:
        at = min(now, max(runs_from, decided_until(decider.state)))
        decider.start(cj, {"scheduled_at": stamp}, at, segment, skip_sends=skip_sends)

    after: str | None = None
    while page := pages(after):
        after = page[-1]
        with storage.batch(page, now) as sessions:
            # A customer this occurrence already entered (another worker) is left alone.
            fresh = [s for cid, s in sessions.items()
                     if s.claim_event(schedule_claim(journey_id, stamp, cid))]
            deciders = engine._decide_each(fresh, registry, now, builder, enter)
        engine._finish(deciders, now, builder)
    storage.put_setting(_setting(journey_id), stamp)


def _after_pause(
    registry: Registry, cj: CompiledJourney, occurrence: datetime
) -> tuple[datetime, bool]:
    """When the occurrence runs from: itself, or the resume of a pause it fell inside (an
    entry inside a pause is refused; a worker on time runs it at the resume). And whether
    that pause's ``on_resume`` rule skips its sends: ``skip``, or ``grace`` when it was older
    than the grace at the resume (as a held wake-up is)."""
    pause = registry.pause_at(cj.journey.id, occurrence) if registry.pauses else None
    if pause is None or pause.until is None:
        # Decided in UTC, as every instant the engine stores: the zone is the stamp's alone.
        return occurrence.astimezone(UTC), False
    return pause.until.astimezone(UTC), cj.journey.on_resume.skips(occurrence, pause.until)
