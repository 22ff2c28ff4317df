"""Triggers: what starts a journey for a customer."""

from __future__ import annotations

from typing import ClassVar

import attrs

from cjo.conditions import Condition

__all__ = ["ApiTrigger", "EventTrigger", "Trigger"]


@attrs.frozen
class EventTrigger:
    """Start when the customer sends ``event`` and ``where`` (if any) holds for it."""

    kind: ClassVar[str] = "event"
    event: str
    where: Condition | None = None


@attrs.frozen
class ApiTrigger:
    """Start only through ``Engine.start_journey``."""

    kind: ClassVar[str] = "api"


Trigger = EventTrigger | ApiTrigger
