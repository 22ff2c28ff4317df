"""Steps: the nodes of a journey graph. ``next=None`` means the enrollment completes there."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar

import attrs

from cjo.conditions import Condition

__all__ = [
    "AudiencePath",
    "AudiencePaths",
    "Branch",
    "Case",
    "Exit",
    "Jump",
    "Send",
    "Split",
    "SplitPath",
    "Step",
    "UpdateProfile",
    "Wait",
    "WaitForEvent",
]


@attrs.frozen
class Send:
    """Send content ``content`` on channel ``channel``."""

    kind: ClassVar[str] = "send"
    content: str
    channel: str
    next: str | None = None
    transactional: bool = False
    tags: tuple[str, ...] = ()


@attrs.frozen
class Wait:
    """Wait exactly ``duration`` (1 day is 86,400 s, whatever the calendar does)."""

    kind: ClassVar[str] = "wait"
    duration: timedelta
    next: str | None = None
    tags: tuple[str, ...] = ()


@attrs.frozen
class WaitForEvent:
    """Wait up to ``timeout`` for ``event`` (matching ``where``); go to ``on_event`` if it
    comes, to ``on_timeout`` if it does not."""

    kind: ClassVar[str] = "wait_for_event"
    event: str
    timeout: timedelta
    on_event: str | None = None
    on_timeout: str | None = None
    where: Condition | None = None
    tags: tuple[str, ...] = ()


@attrs.frozen
class Case:
    """One case of a Branch: go to ``next`` when ``condition`` holds."""

    condition: Condition
    next: str | None = None


@attrs.frozen
class Branch:
    """Take the first case whose condition holds, else ``default``."""

    kind: ClassVar[str] = "branch"
    cases: tuple[Case, ...]
    default: str | None = None
    tags: tuple[str, ...] = ()


@attrs.frozen
class SplitPath:
    """One path of a Split, taken by a ``weight`` share of customers."""

    name: str
    weight: float
    next: str | None = None


@attrs.frozen
class Split:
    """Send each customer down one path, chosen by a stable hash of (customer, journey, step)."""

    kind: ClassVar[str] = "split"
    paths: tuple[SplitPath, ...]
    tags: tuple[str, ...] = ()


@attrs.frozen
class UpdateProfile:
    """Set (and unset) profile attributes."""

    kind: ClassVar[str] = "update_profile"
    set: Mapping[str, Any] = attrs.field(factory=dict)
    unset: tuple[str, ...] = ()
    next: str | None = None
    tags: tuple[str, ...] = ()


@attrs.frozen
class Exit:
    """End the enrollment here as ``exited`` with ``reason``."""

    kind: ClassVar[str] = "exit"
    reason: str = "exit step"
    tags: tuple[str, ...] = ()


@attrs.frozen
class AudiencePath:
    """One path of AudiencePaths: customers in ``segment`` go to ``next``."""

    segment: str
    next: str | None = None


@attrs.frozen
class AudiencePaths:
    """Send each customer down the first path (in rank order) whose segment they are in, and
    everyone else to ``default``. The path taken is recorded (``"everyone else"`` for the
    default)."""

    kind: ClassVar[str] = "audience_paths"
    paths: tuple[AudiencePath, ...]
    default: str | None = None
    tags: tuple[str, ...] = ()


@attrs.frozen
class Jump:
    """Enter the customer into journey ``journey`` (its latest version, with this enrollment's
    context; its audience, re-entry and cross-journey rules apply). With ``end_current`` (the
    default) this enrollment ends as ``completed`` first; otherwise it goes on to ``next``."""

    kind: ClassVar[str] = "jump"
    journey: str
    end_current: bool = True
    next: str | None = None
    tags: tuple[str, ...] = ()


Step = (
    Send | Wait | WaitForEvent | Branch | Split | UpdateProfile | Exit | AudiencePaths | Jump
)
STEP_TYPES: tuple[type[Any], ...] = (
    Send, Wait, WaitForEvent, Branch, Split, UpdateProfile, Exit, AudiencePaths, Jump,
)
