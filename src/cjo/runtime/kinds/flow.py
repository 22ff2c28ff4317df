"""Branch, Split and Exit: steps that choose where an enrollment goes next, or end it."""

from __future__ import annotations

import bisect
import hashlib
import math
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cjo.conditions import CompiledCondition, compile_condition
from cjo.errors import Problem
from cjo.model.steps import Branch, Exit, Split
from cjo.runtime.kinds.base import HALT, Checker, Next, StepKind

if TYPE_CHECKING:
    from cjo.model.journey import Journey
    from cjo.runtime.core import Decider
    from cjo.runtime.registry import CompiledJourney
    from cjo.runtime.state import Enrollment

__all__ = ["BranchKind", "ExitKind", "SplitKind", "split_fraction"]

_EMPTY: dict[str, Any] = {}


class BranchKind(StepKind[Branch]):
    step_type = Branch

    def successors(self, step: Branch) -> list[tuple[str, str | None]]:
        cases: list[tuple[str, str | None]] = [
            (f"case {i}", case.next) for i, case in enumerate(step.cases, 1)
        ]
        return [*cases, ("default", step.default)]

    def check(self, step: Branch, where: str, journey: Journey, checker: Checker) -> list[Problem]:
        if not step.cases:
            return [Problem(where, "a branch needs at least one case")]
        limit = checker.limits.max_branches_per_step
        if len(step.cases) > limit:
            return [Problem(where, f"a branch has {len(step.cases)} cases; the limit is {limit}")]
        problems: list[Problem] = []
        for i, case in enumerate(step.cases, 1):
            problems += checker.condition(
                case.condition, f"{where} / case {i}", used_in="a branch",
                scopes=("profile", "event", "context"),
            )
        return problems

    def compile(self, step: Branch) -> list[tuple[CompiledCondition, str | None]]:
        return [(compile_condition(c.condition), c.next) for c in step.cases]

    def run(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step_id: str, step: Branch,
        compiled: Any, at: datetime,
    ) -> Next:
        scope = d.scope(_EMPTY, e.context, e)
        for test, target in compiled:
            if test(scope):
                return target  # type: ignore[no-any-return]
        return step.default


def split_fraction(customer_id: str, journey_id: str, step_id: str) -> float:
    """A stable number in [0, 1) for (customer, journey, step): the same every run, every host."""
    digest = hashlib.blake2b(
        f"{journey_id}\x1f{step_id}\x1f{customer_id}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


class SplitKind(StepKind[Split]):
    step_type = Split

    def successors(self, step: Split) -> list[tuple[str, str | None]]:
        return [(f"path {path.name!r}", path.next) for path in step.paths]

    def check(self, step: Split, where: str, journey: Journey, checker: Checker) -> list[Problem]:
        problems: list[Problem] = []
        if not step.paths:
            problems.append(Problem(where, "a split needs at least one path"))
        limit = checker.limits.max_branches_per_step
        if len(step.paths) > limit:
            return [Problem(where, f"a split has {len(step.paths)} paths; the limit is {limit}")]
        for path in step.paths:
            weight = path.weight
            if not isinstance(weight, int | float) or isinstance(weight, bool) or not weight > 0:
                # "not weight > 0" rather than "weight <= 0", so that NaN is refused too
                problems.append(Problem(
                    where, f"path {path.name!r} has weight {weight}; weights must be positive"
                ))
            elif not math.isfinite(weight):
                problems.append(Problem(
                    where, f"path {path.name!r} has weight {weight}; weights must be finite"
                ))
            problems += checker.identifier(path.name, "path name", where)
        if not problems and not math.isfinite(sum(float(p.weight) for p in step.paths)):
            problems.append(Problem(where, "the weights add up past the largest float; scale "
                                           "them down (only their ratios matter)"))
        for name, count in Counter(p.name for p in step.paths).items():
            if count > 1:
                problems.append(Problem(
                    where, f"path name {name!r} is used {count} times; path names must be unique"
                ))
        return problems

    def compile(self, step: Split) -> tuple[list[float], list[tuple[str, str | None]]]:
        total = sum(p.weight for p in step.paths)
        bounds: list[float] = []
        running = 0.0
        for p in step.paths:
            running += p.weight / total
            bounds.append(running)
        bounds[-1] = 1.0
        return bounds, [(p.name, p.next) for p in step.paths]

    def run(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step_id: str, step: Split,
        compiled: Any, at: datetime,
    ) -> Next:
        bounds, paths = compiled
        fraction = split_fraction(d.customer_id, cj.journey.id, step_id)
        name, target = paths[min(bisect.bisect_right(bounds, fraction), len(paths) - 1)]
        e.paths[step_id] = name
        d.activity(e, "path", name, at)
        return target  # type: ignore[no-any-return]


class ExitKind(StepKind[Exit]):
    step_type = Exit

    def check(self, step: Exit, where: str, journey: Journey, checker: Checker) -> list[Problem]:
        return checker.text([("the reason", step.reason)], where)

    def run(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step_id: str, step: Exit,
        compiled: Any, at: datetime,
    ) -> Next:
        d.end(e, "exited", step.reason, at)
        return HALT
