"""What a channel adapter implements, and the messages it receives."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal

import attrs

__all__ = ["Channel", "DeliveryResult", "DeliveryStatus", "Message"]

DeliveryStatus = Literal["delivered", "failed", "rejected"]


@attrs.frozen(slots=True)
class Message:
    """One message to deliver. ``idempotency_key`` is stable across retries and restarts:
    a channel that sees a key twice should deliver once."""

    idempotency_key: str
    customer_id: str
    channel: str
    content_id: str
    fields: Mapping[str, str]
    journey_id: str
    journey_version: int
    step_id: str
    enrollment_id: str
    created_at: datetime
    transactional: bool = False
    locale: str | None = None
    #: The contact attributes of the profile a channel needs (email, phone...), not the
    #: whole profile: see ``Engine(recipient_attributes=...)``.
    recipient: Mapping[str, Any] = attrs.field(factory=dict)
    content_version: int = 1
    #: The A/B variant sent (``Variant.name``), None for the unnamed one.
    variant: str | None = None
    #: The offer chosen, when the Send chose among offers (None: none, or the fallback).
    offer_id: str | None = None


@attrs.frozen(slots=True)
class DeliveryResult:
    """What a channel did with a message. ``failed`` may be retried; ``rejected`` will not."""

    status: DeliveryStatus = "delivered"
    provider_id: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "delivered"


class Channel(abc.ABC):
    """A delivery adapter (email, SMS, push, webhook...). Subclass it and implement ``send``.

    ``channel_type`` (``"email"``, ``"sms"``, ``"push"``, ``"in_app"``, ``"webhook"``) says
    which fields content for it must have, whatever name it is registered under; None leaves
    it to the registered name (docs/content.md)."""

    channel_type: ClassVar[str | None] = None

    @abc.abstractmethod
    def send(self, message: Message) -> DeliveryResult:
        """Deliver ``message``. Raise or return ``failed`` for a temporary problem."""
