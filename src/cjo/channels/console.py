"""A channel that prints each message: for demos and local development."""

from __future__ import annotations

import sys
import threading
from typing import Protocol

from cjo.channels.base import Channel, DeliveryResult, Message

__all__ = ["ConsoleChannel", "TextStream"]


#: Held by every console channel while it writes: they mostly share one stream (stdout), and a
#: stream a host gives need not be safe to write from several threads at once.
_WRITING = threading.Lock()


class TextStream(Protocol):
    """What ``ConsoleChannel`` writes to: anything with ``write(str)`` (a file, ``sys.stderr``,
    ``io.StringIO``, a logger's adapter)."""

    def write(self, text: str, /) -> object: ...


class ConsoleChannel(Channel):
    """Writes one line per message to ``stream`` (default: ``sys.stdout`` at each send).

    Safe to share between threads, with or without the GIL: a line is written whole, under a
    lock every console channel holds while it writes, so lines never interleave."""

    def __init__(self, stream: TextStream | None = None) -> None:
        self._stream = stream

    def send(self, message: Message) -> DeliveryResult:
        fields = ", ".join(f"{k}={v!r}" for k, v in message.fields.items())
        line = (
            f"[{message.created_at.isoformat()}] {message.channel} -> {message.customer_id}: "
            f"{fields} ({message.journey_id}/{message.step_id})\n"
        )
        with _WRITING:
            (self._stream or sys.stdout).write(line)
        return DeliveryResult("delivered", provider_id=message.idempotency_key)
