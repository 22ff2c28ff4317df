"""AudiencePaths (ranked segment paths) and Jump (into another journey)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cjo.errors import Problem
from cjo.model.steps import AudiencePaths, Jump
from cjo.runtime.kinds.base import HALT, Checker, Next, StepKind

if TYPE_CHECKING:
    from cjo.model.journey import Journey
    from cjo.runtime.core import Decider
    from cjo.runtime.registry import CompiledJourney
    from cjo.runtime.state import Enrollment

__all__ = ["EVERYONE_ELSE", "AudiencePathsKind", "JumpKind"]

#: The path name recorded for customers in none of the ranked segments.
EVERYONE_ELSE = "everyone else"
_EMPTY: dict[str, Any] = {}


class AudiencePathsKind(StepKind[AudiencePaths]):
    step_type = AudiencePaths

    def successors(self, step: AudiencePaths) -> list[tuple[str, str | None]]:
        ranked = [(f"segment {p.segment!r}", p.next) for p in step.paths]
        return [*ranked, (EVERYONE_ELSE, step.default)]

    def check(
        self, step: AudiencePaths, where: str, journey: Journey, checker: Checker
    ) -> list[Problem]:
        if not step.paths:
            return [Problem(where, "audience paths need at least one segment path")]
        limit = checker.limits.max_branches_per_step
        if len(step.paths) > limit:
            return [Problem(where, f"{len(step.paths)} audience paths; the limit is {limit}")]
        problems: list[Problem] = []
        for path in step.paths:
            found = checker.identifier(path.segment, "segment id", where)
            if not found and path.segment not in checker.segment_ids:
                found = [Problem(where, f"segment {path.segment!r} does not exist")]
            elif not found and path.segment == EVERYONE_ELSE:
                found = [Problem(where, (
                    f"segment {EVERYONE_ELSE!r} cannot be a path: the customers in none of the "
                    "segments are recorded under that name"
                ))]
            problems += found
        for segment, count in Counter(p.segment for p in step.paths).items():
            if count > 1:
                problems.append(Problem(
                    where, f"segment {segment!r} has {count} paths; only the first could be taken"
                ))
        return problems

    def run(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step_id: str, step: AudiencePaths,
        compiled: Any, at: datetime,
    ) -> Next:
        scope = d.scope(_EMPTY, e.context)
        for path in step.paths:
            if scope.in_segment(path.segment):
                e.paths[step_id] = path.segment
                d.activity(e, "path", path.segment, at)
                return path.next
        e.paths[step_id] = EVERYONE_ELSE
        d.activity(e, "path", EVERYONE_ELSE, at)
        return step.default


class JumpKind(StepKind[Jump]):
    step_type = Jump

    def successors(self, step: Jump) -> list[tuple[str, str | None]]:
        return [] if step.end_current else [("next", step.next)]

    def check(self, step: Jump, where: str, journey: Journey, checker: Checker) -> list[Problem]:
        problems = checker.identifier(step.journey, "journey id", where)
        if not problems and step.journey not in checker.journey_ids:
            problems.append(Problem(where, f"journey {step.journey!r} does not exist"))
        if step.end_current and step.next is not None:
            problems.append(Problem(
                where, "a jump that ends this journey has no next step (set end_current=False "
                "to go on here too)"
            ))
        return problems

    def run(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step_id: str, step: Jump,
        compiled: Any, at: datetime,
    ) -> Next:
        d.jump(e, step.journey, at, end_current=step.end_current)
        return HALT if step.end_current else step.next
