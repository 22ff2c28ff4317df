"""A channel that keeps what it is given: for tests and simulations."""

from __future__ import annotations

from cjo.channels.base import Channel, DeliveryResult, Message

__all__ = ["RecordingChannel"]


class RecordingChannel(Channel):
    """Keeps every message, and honours idempotency keys: a key seen before is not kept again."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.attempts = 0
        self._keys: set[str] = set()

    def send(self, message: Message) -> DeliveryResult:
        self.attempts += 1
        if message.idempotency_key not in self._keys:
            self._keys.add(message.idempotency_key)
            self.messages.append(message)
        return DeliveryResult("delivered", provider_id=message.idempotency_key)

    def for_customer(self, customer_id: str) -> list[Message]:
        return [m for m in self.messages if m.customer_id == customer_id]

    def clear(self) -> None:
        self.messages.clear()
        self._keys.clear()
        self.attempts = 0
