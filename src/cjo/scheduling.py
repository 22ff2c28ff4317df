"""Schedule triggers: journeys started for a segment's members at each occurrence of a cron
rule. ``Engine.run_due`` runs the occurrences that fell due; ``Engine.publish`` records where
a new schedule starts, so no occurrence before the publish is ever run.

Each occurrence runs once per customer whatever the number of workers: every entry claims the
id ``schedule:<journey>:<occurrence>:<customer>`` in the customer's transaction (as an event id
is claimed), and the occurrence is marked done once every page of members was walked. Two
workers that notice the same occurrence both walk the members; each customer still enters once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from cjo.model.definitions import Definitions
from cjo.model.triggers import ScheduleTrigger
from cjo.outcome import OutcomeBuilder
from cjo.runtime.kinds.schedule import latest_occurrence, next_occurrence

if TYPE_CHECKING:
    from cjo.engine import Engine
    from cjo.runtime.registry import CompiledJourney

__all__ = ["mark_new_schedules", "next_schedule_run", "run_schedules", "start_schedules_at"]

_PAGE = 500


def _setting(journey_id: str) -> str:
    return f"schedule:{journey_id}"


def mark_new_schedules(engine: Engine, definitions: Definitions, now: datetime) -> None:
    """Record, for each schedule not seen before, the latest occurrence at or before the
    publish as already done: the first one run is the next."""
    storage = engine.storage
    latest: dict[str, int] = {}
    for j in definitions.journeys:
        latest[j.id] = max(latest.get(j.id, 0), j.version)
    for j in definitions.journeys:
        trigger = j.trigger
        if (
            isinstance(trigger, ScheduleTrigger) and j.version == latest[j.id]
            and storage.get_setting(_setting(j.id)) is None
        ):
            try:
                latest_run = latest_occurrence(trigger, now)
            except (OverflowError, ValueError):
                # No occurrence can precede ``now`` (a back-test publishing before its first
                # input): nothing is marked, and the first run counts from its own instant.
                continue
            storage.put_setting(_setting(j.id), latest_run.isoformat())


def start_schedules_at(engine: Engine, at: datetime) -> None:
    """Count every schedule from ``at``, as if published then: the latest occurrence at or
    before it is recorded as done, whatever was recorded before (a back-test without a start
    publishes before it knows its first instant)."""
    registry = engine._sync()
    for cj in registry.latest.values():
        trigger = cj.journey.trigger
        if isinstance(trigger, ScheduleTrigger):
            engine.storage.put_setting(
                _setting(cj.journey.id), latest_occurrence(trigger, at).isoformat()
            )


def next_schedule_run(engine: Engine) -> datetime | None:
    """The earliest occurrence, among the running schedules, after the last one each has run
    (None without schedules, or before any instant was recorded for them). Back-tests run
    each occurrence at its own instant with it."""
    registry = engine._sync()
    earliest: datetime | None = None
    for cj in registry.latest.values():
        trigger = cj.journey.trigger
        if not isinstance(trigger, ScheduleTrigger) or cj.journey.id in registry.paused:
            continue
        done = engine.storage.get_setting(_setting(cj.journey.id))
        if done is None:
            continue
        following = next_occurrence(trigger, datetime.fromisoformat(done))
        if earliest is None or following < earliest:
            earliest = following
    return earliest


def run_schedules(engine: Engine, now: datetime, builder: OutcomeBuilder) -> None:
    """Run every schedule occurrence due by ``now`` that is not done yet (the latest one only:
    older missed occurrences are skipped)."""
    registry = engine._sync()
    storage = engine.storage
    for cj in registry.latest.values():
        trigger = cj.journey.trigger
        if not isinstance(trigger, ScheduleTrigger) or cj.journey.id in registry.paused:
            continue
        key = _setting(cj.journey.id)
        done = storage.get_setting(key)
        occurrence = latest_occurrence(trigger, now)
        if done is None:
            storage.put_setting(key, occurrence.isoformat())  # published elsewhere: from now
            continue
        if occurrence <= datetime.fromisoformat(done):
            continue
        _run_occurrence(engine, cj, trigger, occurrence, now, builder)
        storage.put_setting(key, occurrence.isoformat())


def _run_occurrence(
    engine: Engine, cj: CompiledJourney, trigger: ScheduleTrigger, occurrence: datetime,
    now: datetime, builder: OutcomeBuilder,
) -> None:
    storage = engine.storage
    segment = trigger.segment
    pages: Callable[[str | None], list[str]] = (
        (lambda after: storage.segment_members(segment, after=after, limit=_PAGE))
        if segment is not None else (lambda after: storage.customer_ids(after=after, limit=_PAGE))
    )
    stamp = occurrence.isoformat()
    claim = f"schedule:{cj.journey.id}:{stamp}:"
    registry = engine._sync()
    after: str | None = None
    while page := pages(after):
        after = page[-1]
        with storage.batch(page, now) as sessions:
            # A customer this occurrence already entered (another worker) is left alone.
            fresh = [s for cid, s in sessions.items() if s.claim_event(claim + cid)]
            deciders = engine._decide_each(
                fresh, registry, now, builder,
                lambda decider: decider.start(cj, {"scheduled_at": stamp}, now),
            )
        engine._finish(deciders, now, builder)
