"""A channel that keeps what it is given: for tests and simulations."""

from __future__ import annotations

import threading

from cjo.channels.base import Channel, DeliveryResult, Message

__all__ = ["RecordingChannel"]


class RecordingChannel(Channel):
    """Keeps every message, and honours idempotency keys: a key seen before is not kept again.

    Safe to share between threads, with or without the GIL (free-threaded CPython), as an
    engine's dispatching threads share their channels: ``send``, ``clear`` and every read hold
    the channel's lock, so each attempt is counted, a key sent by several threads at once is
    kept once, and ``messages`` and ``for_customer`` return a list of their own, what was
    kept at one moment (changing it changes nothing kept: ``clear`` does)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[Message] = []
        self._attempts = 0
        self._keys: set[str] = set()

    def send(self, message: Message) -> DeliveryResult:
        key = message.idempotency_key
        with self._lock:  # count, look the key up and keep it as one step
            self._attempts += 1
            if key not in self._keys:
                self._keys.add(key)
                self._messages.append(message)
        return DeliveryResult("delivered", provider_id=key)

    @property
    def messages(self) -> list[Message]:
        """The messages kept, oldest first (a copy)."""
        with self._lock:
            return list(self._messages)

    @property
    def attempts(self) -> int:
        """How many times ``send`` was called, repeated keys included."""
        with self._lock:
            return self._attempts

    def for_customer(self, customer_id: str) -> list[Message]:
        with self._lock:
            return [m for m in self._messages if m.customer_id == customer_id]

    def clear(self) -> None:
        """Forget every message, key and attempt."""
        with self._lock:
            self._messages.clear()
            self._keys.clear()
            self._attempts = 0
