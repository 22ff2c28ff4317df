"""The segment trigger kind: a journey starts when a customer enters or leaves a segment.

Membership changes are found by ``cjo.segments.membership``, which starts the journeys whose
trigger names the change (through ``Decider.consider_entry``, so the audience and re-entry
rules apply); the journey's context holds ``segment``, the segment's id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cjo.errors import Problem
from cjo.model.triggers import SegmentTrigger
from cjo.runtime.kinds.base import Checker, TriggerKind

if TYPE_CHECKING:
    from cjo.model.journey import Journey

__all__ = ["SegmentTriggerKind"]


class SegmentTriggerKind(TriggerKind[SegmentTrigger]):
    trigger_type = SegmentTrigger

    def check(
        self, trigger: SegmentTrigger, where: str, journey: Journey, checker: Checker
    ) -> list[Problem]:
        problems: list[Problem] = []
        if trigger.segment not in checker.segment_ids:
            problems.append(Problem(where, f"segment {trigger.segment!r} does not exist"))
        if trigger.on not in ("enter", "exit"):
            problems.append(Problem(where, f"on must be 'enter' or 'exit', got {trigger.on!r}"))
        return problems
