"""UpdateProfile: set and unset profile attributes from inside a journey."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from cjo.errors import Problem
from cjo.model.events import PROFILE_FIELD_ATTRIBUTES, not_set_here
from cjo.model.steps import UpdateProfile
from cjo.runtime.kinds.base import Checker, Next, StepKind

if TYPE_CHECKING:
    from cjo.model.journey import Journey
    from cjo.runtime.core import Decider
    from cjo.runtime.registry import CompiledJourney
    from cjo.runtime.state import Enrollment

__all__ = ["UpdateProfileKind"]


class UpdateProfileKind(StepKind[UpdateProfile]):
    step_type = UpdateProfile

    def successors(self, step: UpdateProfile) -> list[tuple[str, str | None]]:
        return [("next", step.next)]

    def check(
        self, step: UpdateProfile, where: str, journey: Journey, checker: Checker
    ) -> list[Problem]:
        # The attributes it sets end up in profiles: the values events may carry.
        count = len(step.set) + len(step.unset)
        limit = checker.limits.max_attributes_per_update
        if count > limit:
            return [Problem(where, f"sets and unsets {count} attributes; the limit is {limit}")]
        problems = checker.values(step.set, "attributes to set", "attribute to set", where)
        problems += checker.text([("an attribute to unset", n) for n in step.unset], where)
        for name in PROFILE_FIELD_ATTRIBUTES:
            if name in step.set or name in step.unset:
                problems.append(Problem(where, not_set_here(name)))
        return problems

    def run(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step_id: str, step: UpdateProfile,
        compiled: Any, at: datetime,
    ) -> Next:
        d.change_profile(step.set, step.unset)
        return step.next
