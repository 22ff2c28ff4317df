"""UpdateProfile: set and unset profile attributes from inside a journey."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from cjo.model.steps import UpdateProfile
from cjo.runtime.kinds.base import Next, StepKind

if TYPE_CHECKING:
    from cjo.runtime.core import Decider
    from cjo.runtime.registry import CompiledJourney
    from cjo.runtime.state import Enrollment

__all__ = ["UpdateProfileKind"]


class UpdateProfileKind(StepKind[UpdateProfile]):
    step_type = UpdateProfile

    def successors(self, step: UpdateProfile) -> list[tuple[str, str | None]]:
        return [("next", step.next)]

    def run(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step_id: str, step: UpdateProfile,
        compiled: Any, at: datetime,
    ) -> Next:
        d.change_profile(step.set, step.unset)
        return step.next
