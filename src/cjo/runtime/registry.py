"""Published definitions, compiled once: conditions become closures, events get indexes."""

from __future__ import annotations

import bisect
from typing import Any

import attrs

from cjo.conditions import CompiledCondition, compile_condition
from cjo.model.content import ContentItem
from cjo.model.definitions import Definitions
from cjo.model.journey import Journey
from cjo.model.steps import Branch, Split, WaitForEvent
from cjo.model.triggers import EventTrigger

__all__ = ["CompiledJourney", "Registry"]


def _maybe(condition: Any) -> CompiledCondition | None:
    return compile_condition(condition) if condition is not None else None


@attrs.define(slots=True)
class CompiledJourney:
    journey: Journey
    trigger_where: CompiledCondition | None
    audience: CompiledCondition | None
    goal_where: CompiledCondition | None
    exit_by_event: dict[str, list[tuple[str, CompiledCondition | None]]]
    exit_conditions: list[tuple[str, CompiledCondition]]
    wait_where: dict[str, CompiledCondition | None]
    branch_cases: dict[str, list[tuple[CompiledCondition, str | None]]]
    split_table: dict[str, tuple[list[float], list[tuple[str, str | None]]]]
    # Events that matter to a customer already enrolled (waits, exits, goal).
    watched_events: frozenset[str]

    @classmethod
    def compile(cls, journey: Journey) -> CompiledJourney:
        exit_by_event: dict[str, list[tuple[str, CompiledCondition | None]]] = {}
        exit_conditions: list[tuple[str, CompiledCondition]] = []
        for crit in journey.exit_criteria:
            if crit.event is not None:
                exit_by_event.setdefault(crit.event, []).append((crit.name, _maybe(crit.where)))
            elif crit.where is not None:
                exit_conditions.append((crit.name, compile_condition(crit.where)))
        wait_where: dict[str, CompiledCondition | None] = {}
        branch_cases: dict[str, list[tuple[CompiledCondition, str | None]]] = {}
        split_table: dict[str, tuple[list[float], list[tuple[str, str | None]]]] = {}
        watched = set(exit_by_event)
        if journey.goal is not None:
            watched.add(journey.goal.event)
        for step_id, step in journey.steps.items():
            if isinstance(step, WaitForEvent):
                wait_where[step_id] = _maybe(step.where)
                watched.add(step.event)
            elif isinstance(step, Branch):
                branch_cases[step_id] = [
                    (compile_condition(c.condition), c.next) for c in step.cases
                ]
            elif isinstance(step, Split):
                total = sum(p.weight for p in step.paths)
                bounds: list[float] = []
                running = 0.0
                for p in step.paths:
                    running += p.weight / total
                    bounds.append(running)
                bounds[-1] = 1.0
                split_table[step_id] = (bounds, [(p.name, p.next) for p in step.paths])
        trigger = journey.trigger
        return cls(
            journey=journey,
            trigger_where=_maybe(trigger.where) if isinstance(trigger, EventTrigger) else None,
            audience=_maybe(journey.audience),
            goal_where=_maybe(journey.goal.where) if journey.goal else None,
            exit_by_event=exit_by_event,
            exit_conditions=exit_conditions,
            wait_where=wait_where,
            branch_cases=branch_cases,
            split_table=split_table,
            watched_events=frozenset(watched),
        )

    def split_path(self, step_id: str, fraction: float) -> tuple[str, str | None]:
        bounds, paths = self.split_table[step_id]
        return paths[min(bisect.bisect_right(bounds, fraction), len(paths) - 1)]


@attrs.define(slots=True)
class Registry:
    """Every published journey version, the latest version per id, segments and content."""

    journeys: dict[tuple[str, int], CompiledJourney] = attrs.field(factory=dict)
    latest: dict[str, CompiledJourney] = attrs.field(factory=dict)
    triggers_by_event: dict[str, list[CompiledJourney]] = attrs.field(factory=dict)
    watched_events: frozenset[str] = frozenset()
    has_condition_exits: bool = False
    segments: dict[str, CompiledCondition] = attrs.field(factory=dict)
    content: dict[str, ContentItem] = attrs.field(factory=dict)
    definitions: Definitions = attrs.field(factory=Definitions)

    @classmethod
    def build(cls, definitions: Definitions, previous: Registry | None = None) -> Registry:
        """Compile ``definitions``; earlier journey versions stay known so that customers already
        in them can finish (enrollments are pinned to their version)."""
        journeys: dict[tuple[str, int], CompiledJourney] = dict(
            previous.journeys if previous else {}
        )
        for journey in definitions.journeys:
            journeys[(journey.id, journey.version)] = CompiledJourney.compile(journey)
        latest: dict[str, CompiledJourney] = {}
        for (jid, version), cj in journeys.items():
            if jid not in latest or latest[jid].journey.version < version:
                latest[jid] = cj
        triggers: dict[str, list[CompiledJourney]] = {}
        for cj in sorted(latest.values(), key=lambda c: c.journey.id):
            trigger = cj.journey.trigger
            if isinstance(trigger, EventTrigger):
                triggers.setdefault(trigger.event, []).append(cj)
        watched: set[str] = set()
        for cj in journeys.values():
            watched |= cj.watched_events
        return cls(
            journeys=journeys,
            latest=latest,
            triggers_by_event=triggers,
            watched_events=frozenset(watched),
            has_condition_exits=any(cj.exit_conditions for cj in journeys.values()),
            segments={s.id: compile_condition(s.condition) for s in definitions.segments},
            content={c.id: c for c in definitions.content},
            definitions=definitions,
        )

    def is_relevant(self, event_name: str) -> bool:
        """Whether an event can change anything: start a journey, end a wait, exit or convert."""
        return (
            event_name in self.triggers_by_event
            or event_name in self.watched_events
            or self.has_condition_exits
        )
