"""A channel that prints each message: for demos and local development."""

from __future__ import annotations

import sys
from typing import TextIO

from cjo.channels.base import Channel, DeliveryResult, Message

__all__ = ["ConsoleChannel"]


class ConsoleChannel(Channel):
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def send(self, message: Message) -> DeliveryResult:
        stream = self._stream or sys.stdout
        fields = ", ".join(f"{k}={v!r}" for k, v in message.fields.items())
        stream.write(
            f"[{message.created_at.isoformat()}] {message.channel} -> {message.customer_id}: "
            f"{fields} ({message.journey_id}/{message.step_id})\n"
        )
        return DeliveryResult("delivered", provider_id=message.idempotency_key)
