"""Branch, Split and Exit: steps that choose where an enrollment goes next, or end it."""

from __future__ import annotations

import bisect
import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cjo.conditions import CompiledCondition, compile_condition
from cjo.errors import Problem
from cjo.model.events import finite_number
from cjo.model.journey import Journey
from cjo.model.steps import Branch, Exit, Split, SplitPath
from cjo.runtime.kinds.base import HALT, Checker, Next, StepKind

if TYPE_CHECKING:
    from cjo.runtime.core import Decider
    from cjo.runtime.registry import CompiledJourney
    from cjo.runtime.state import Enrollment

__all__ = ["BranchKind", "ExitKind", "SplitKind", "launched_split_problems", "split_fraction"]

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
                # No event: a branch runs after entry or a wait (``run`` reads none).
                scopes=("profile", "context"),
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
            elif not finite_number(weight):
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
        return _bounds(step), [(p.name, p.next) for p in step.paths]

    def run(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step_id: str, step: Split,
        compiled: Any, at: datetime,
    ) -> Next:
        bounds, paths = compiled
        recorded = e.paths.get(step_id)
        if recorded is not None:
            # Reached again: the enrollment stays in its arm, even once an identity merge has
            # moved it to a customer whose own hash falls elsewhere.
            for name, target in paths:
                if name == recorded:
                    d.activity(e, "path", name, at)
                    return target  # type: ignore[no-any-return]
        fraction = split_fraction(d.customer_id, cj.journey.id, step_id)
        name, target = paths[min(bisect.bisect_right(bounds, fraction), len(paths) - 1)]
        e.paths[step_id] = name
        d.activity(e, "path", name, at)
        return target  # type: ignore[no-any-return]


def _bounds(step: Split) -> list[float]:
    """Each path's upper bound in [0, 1]: a customer whose ``split_fraction`` is below it (and
    not below the one before) takes the path."""
    total = sum(p.weight for p in step.paths)
    bounds: list[float] = []
    running = 0.0
    for p in step.paths:
        running += p.weight / total
        bounds.append(running)
    bounds[-1] = 1.0
    return bounds


def _same_arms(
    first: tuple[tuple[str, float], ...], other: tuple[tuple[str, float], ...]
) -> bool:
    """The same names in the same order, at the same bounds up to float rounding: shares
    written as other numbers (70:20:10, 0.7:0.2:0.1) divide to bounds a few ulps apart, which
    moves no customer in practice (at most a 10**-12 share of them per bound)."""
    return len(first) == len(other) and all(
        name == other_name and math.isclose(bound, other_bound, rel_tol=0, abs_tol=1e-12)
        for (name, bound), (other_name, other_bound) in zip(first, other, strict=True)
    )


def _arms(step: object) -> tuple[tuple[str, float], ...] | None:
    """What decides each customer's arm at a split: its paths' names and upper bounds, in
    order. None for a step that is not a split of sound shape (validation reports those).
    Paths given as a list are held as a tuple (``cjo.frozen``), and so held to the same arms."""
    if not isinstance(step, Split) or not isinstance(step.paths, tuple) or not step.paths:
        return None
    for p in step.paths:
        if not isinstance(p, SplitPath) or not isinstance(p.name, str):
            return None
        w = p.weight
        if not finite_number(w) or not w > 0:
            return None
    if not math.isfinite(sum(float(p.weight) for p in step.paths)):
        return None
    return tuple(zip((p.name for p in step.paths), _bounds(step), strict=True))


def _describe(arms: tuple[tuple[str, float], ...]) -> str:
    shares, below = [], 0.0
    for name, bound in arms:
        shares.append(f"{name} {(bound - below) * 100:.4g}%")
        below = bound
    return ", ".join(shares)


def launched_split_problems(
    published: Iterable[Journey], journeys: Iterable[Journey]
) -> list[Problem]:
    """A new version of a journey keeps the arms of every split step an earlier version
    launched, under the same step id: the arm is a hash of (customer, journey, step), so other
    names, another order or other shares would move customers between arms (those who enter
    again, or reach the step again). The shares may be written as other numbers (1:1 or
    50:50); a split under a new step id is a new experiment."""
    launched: dict[tuple[str, str], tuple[int, tuple[tuple[str, float], ...]]] = {}

    def versions(items: Iterable[Journey]) -> list[Journey]:
        return sorted(
            (j for j in items if isinstance(j, Journey) and isinstance(j.id, str)
             and type(j.version) is int and isinstance(j.steps, Mapping)),
            key=lambda j: j.version,
        )

    known: set[tuple[str, int]] = set()
    for j in versions(published):
        known.add((j.id, j.version))
        for step_id, step in j.steps.items():
            arms = _arms(step)
            if arms is not None:
                launched.setdefault((j.id, step_id), (j.version, arms))
    problems: list[Problem] = []
    for j in versions(journeys):
        if (j.id, j.version) in known:
            continue  # published already: the same, or refused as a changed version
        for step_id, step in j.steps.items():
            arms = _arms(step)
            if arms is None:
                continue
            first = launched.setdefault((j.id, step_id), (j.version, arms))
            if not _same_arms(first[1], arms):
                problems.append(Problem(
                    f"journey {j.id!r} v{j.version} / step {step_id!r}",
                    f"the split was launched in v{first[0]} with arms {_describe(first[1])}; "
                    "changing its arms would move customers between them (keep its arms and "
                    "their shares, or put a new experiment under a new step id)",
                ))
    return problems


class ExitKind(StepKind[Exit]):
    step_type = Exit

    def check(self, step: Exit, where: str, journey: Journey, checker: Checker) -> list[Problem]:
        return checker.reason(step.reason, "the reason", where)

    def run(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step_id: str, step: Exit,
        compiled: Any, at: datetime,
    ) -> Next:
        d.end(e, "exited", step.reason, at)
        return HALT
