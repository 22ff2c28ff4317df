"""Step and trigger kinds, one module per family, and the tables that dispatch to them.

Adding a kind: write its model class (``cjo.model.steps`` or ``cjo.model.triggers``, in the
``Step`` or ``Trigger`` union), a ``StepKind``/``TriggerKind`` subclass in a module here, and
list it below (docs/kinds.md). Validation, the registry and the decider find it through these
tables; the JSON converter through the union.
"""

from __future__ import annotations

from typing import Any

from cjo.runtime.kinds.action import ActionKind
from cjo.runtime.kinds.base import HALT, Checker, Halt, Next, StepKind, TriggerKind
from cjo.runtime.kinds.calendar import WaitSinceEntryKind, WaitUntilDateKind, WaitUntilKind
from cjo.runtime.kinds.flow import BranchKind, ExitKind, SplitKind, split_fraction
from cjo.runtime.kinds.messaging import SendKind
from cjo.runtime.kinds.profile import UpdateProfileKind
from cjo.runtime.kinds.routing import AudiencePathsKind, JumpKind
from cjo.runtime.kinds.schedule import ScheduleTriggerKind
from cjo.runtime.kinds.triggers import (
    ApiTriggerKind,
    AttributeTriggerKind,
    EventTriggerKind,
    InactivityTriggerKind,
    timer_name,
)
from cjo.runtime.kinds.waiting import WaitForEventKind, WaitKind
from cjo.segments.trigger import SegmentTriggerKind

__all__ = [
    "HALT",
    "STEP_KINDS",
    "TRIGGER_KINDS",
    "Checker",
    "Halt",
    "Next",
    "StepKind",
    "TriggerKind",
    "split_fraction",
    "step_kind",
    "timer_name",
    "trigger_kind",
]

STEP_KINDS: dict[type[Any], StepKind[Any]] = {
    k.step_type: k
    for k in (
        SendKind(), WaitKind(), WaitForEventKind(), BranchKind(), SplitKind(),
        UpdateProfileKind(), ExitKind(), WaitUntilKind(), WaitUntilDateKind(),
        WaitSinceEntryKind(), AudiencePathsKind(), JumpKind(),
        ActionKind(),
    )
}

TRIGGER_KINDS: dict[type[Any], TriggerKind[Any]] = {
    k.trigger_type: k
    for k in (
        EventTriggerKind(), ApiTriggerKind(), InactivityTriggerKind(), AttributeTriggerKind(),
        SegmentTriggerKind(), ScheduleTriggerKind(),
    )
}


def step_kind(step: object) -> StepKind[Any]:
    kind = STEP_KINDS.get(type(step))
    if kind is None:
        raise TypeError(
            f"{type(step).__name__} is not a step: no StepKind in STEP_KINDS "
            f"(cjo.runtime.kinds) runs it: {step!r:.80}"
        )
    return kind


def trigger_kind(trigger: object) -> TriggerKind[Any]:
    kind = TRIGGER_KINDS.get(type(trigger))
    if kind is None:
        raise TypeError(
            f"{type(trigger).__name__} is not a trigger: no TriggerKind in TRIGGER_KINDS "
            f"(cjo.runtime.kinds) runs it: {trigger!r:.80}"
        )
    return kind
