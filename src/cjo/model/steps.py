"""Steps: the nodes of a journey graph. ``next=None`` means the enrollment completes there."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar, Literal

import attrs

from cjo.conditions import Condition

__all__ = [
    "Branch",
    "Case",
    "Exit",
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
    """Send content ``content`` on channel ``channel``.

    Delivery policies (docs/delivery-policies.md): ``topic`` is the subscription topic of a
    marketing send (else the content item's); ``fallbacks`` are the channels tried in order
    when the customer cannot be reached on ``channel``; ``when_capped`` is what a frequency cap
    does to it: ``skip`` (go on), ``defer`` (wait until the cap allows) or ``exit``.
    """

    kind: ClassVar[str] = "send"
    content: str
    channel: str
    next: str | None = None
    transactional: bool = False
    tags: tuple[str, ...] = ()
    topic: str | None = None
    fallbacks: tuple[str, ...] = ()
    when_capped: Literal["skip", "defer", "exit"] = "skip"


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


Step = Send | Wait | WaitForEvent | Branch | Split | UpdateProfile | Exit
STEP_TYPES: tuple[type[Any], ...] = (Send, Wait, WaitForEvent, Branch, Split, UpdateProfile, Exit)
