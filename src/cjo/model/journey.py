"""Journeys: a versioned graph of steps with a trigger, entry rules, exit criteria and a goal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Literal

import attrs

from cjo.conditions import Condition
from cjo.frozen import FrozenDict, str_tuple, to_mapping, to_tuple
from cjo.model.governance import ResumeRule
from cjo.model.steps import Step
from cjo.model.triggers import ApiTrigger, Trigger

__all__ = ["ExitCriterion", "Goal", "Journey", "ReentryPolicy"]


# Converters typed with their fields' items (why: ``cjo.frozen.to_tuple``).


def _step_mapping(value: Mapping[str, Step]) -> FrozenDict[str, Step]:
    return to_mapping(value)


def _exit_criterion_tuple(value: Sequence[ExitCriterion]) -> tuple[ExitCriterion, ...]:
    return to_tuple(value)

ReentryMode = Literal["never", "after_exit", "after_cooldown", "at_most"]


@attrs.frozen
class ReentryPolicy:
    """When a customer may enter a journey again.

    - ``never``: once per customer, ever (across versions).
    - ``after_exit`` (default): again once the previous enrollment has ended.
    - ``after_cooldown``: again once ``cooldown`` has passed since the previous one ended.
    - ``at_most``: at most ``limit`` entries in any rolling ``per`` window (one at a time).

    ``instance_key`` names a trigger-event property (such as ``cart_id``): each value gets its own
    enrollment, and the rules above apply per value. Conditions compare with it as
    ``ctx("cart_id")``, so a dotted name (a nested path there) and ``received`` are refused.

    ``guard`` (any mode but ``never``) is the duplicate-trigger guard: a trigger that comes
    less than ``guard`` after the customer's last entry (for the same key) is taken for a
    duplicate of the one that entered and starts nothing, even when that enrollment has
    already ended: a form submitted twice, or a request retried with a new event id, does not
    start a second run.
    """

    mode: ReentryMode = "after_exit"
    cooldown: timedelta | None = None
    limit: int | None = None
    per: timedelta | None = None
    instance_key: str | None = None
    guard: timedelta | None = None

    @classmethod
    def never(
        cls, *, instance_key: str | None = None, guard: timedelta | None = None
    ) -> ReentryPolicy:
        # A guard is taken as every constructor takes one, for validation to refuse by name
        # (no one enters twice, so it could guard nothing).
        return cls("never", instance_key=instance_key, guard=guard)

    @classmethod
    def after_exit(
        cls, *, instance_key: str | None = None, guard: timedelta | None = None
    ) -> ReentryPolicy:
        return cls("after_exit", instance_key=instance_key, guard=guard)

    @classmethod
    def after_cooldown(
        cls, cooldown: timedelta, *, instance_key: str | None = None,
        guard: timedelta | None = None,
    ) -> ReentryPolicy:
        return cls("after_cooldown", cooldown=cooldown, instance_key=instance_key, guard=guard)

    @classmethod
    def at_most(
        cls, limit: int, *, per: timedelta, instance_key: str | None = None,
        guard: timedelta | None = None,
    ) -> ReentryPolicy:
        return cls("at_most", limit=limit, per=per, instance_key=instance_key, guard=guard)


@attrs.frozen
class ExitCriterion:
    """End the enrollment as ``exited`` when it matches, even in the middle of a wait.

    With ``event``: when the customer sends that event (and ``where`` holds for it).
    With ``segment``: when the customer leaves it (``on="exit"``) or enters it (``"enter"``).
    Otherwise: when ``where`` holds after any event of the customer. ``on`` goes with
    ``segment`` only.
    """

    name: str
    event: str | None = None
    where: Condition | None = None
    segment: str | None = None
    on: Literal["enter", "exit"] = "exit"


@attrs.frozen
class Goal:
    """The conversion a journey aims for: ``event`` within ``within`` of entry (any time if
    None). Counted once per enrollment; ``exit_on_goal`` ends the enrollment as ``converted``."""

    event: str
    where: Condition | None = None
    within: timedelta | None = None
    exit_on_goal: bool = True
    name: str = "goal"


@attrs.frozen
class Journey:
    """A journey definition. ``(id, version)`` names it; enrollments stay on their version."""

    id: str
    entry: str
    steps: Mapping[str, Step] = attrs.field(converter=_step_mapping)
    trigger: Trigger = attrs.field(factory=ApiTrigger)
    name: str = ""
    version: int = 1
    audience: Condition | None = None
    exit_criteria: tuple[ExitCriterion, ...] = attrs.field(
        default=(), converter=_exit_criterion_tuple
    )
    goal: Goal | None = None
    reentry: ReentryPolicy = attrs.field(factory=ReentryPolicy)
    max_lifetime: timedelta | None = None
    timezone: str | None = None
    tags: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    #: When one input qualifies a customer for several journeys that an exclusive group or the
    #: concurrency limit keeps apart, the highest priority enters (ties: journey id order).
    priority: int = 0
    #: Journeys sharing a group are mutually exclusive: a customer is in one at a time.
    exclusive_group: str | None = None
    #: What wake-ups that fell due while the journey was paused do on resume.
    on_resume: ResumeRule = attrs.field(factory=ResumeRule)
