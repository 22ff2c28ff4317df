"""A bound on a whole send, for the channels that talk to a server over a socket.

Client libraries time each read out, not a reply: a server that sends its reply a byte at a
time, each well within the read timeout, holds the send for as long as it likes. A send must end
within half the dispatch lease, or another worker claims the messages of the batch and sends them
again; so once the channel's timeout has passed, its sockets are shut down, which ends any read
or write blocked on them at once.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from contextlib import suppress
from types import TracebackType

__all__ = ["Deadline"]


class Deadline:
    """``with Deadline(seconds) as deadline:`` shuts down every socket given to
    ``deadline.watch`` once ``seconds`` have passed, unless the block ended (or ``end()`` was
    called) first; ``deadline.passed`` says whether it did."""

    def __init__(self, seconds: float) -> None:
        self.passed = False
        self._ended = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def watch(self, sockets: Iterable[socket.socket]) -> None:
        with self._lock:
            self._sockets.extend(sockets)
            if self.passed:  # given too late: cut at once
                self._shut(self._sockets)

    def _cut(self) -> None:
        with self._lock:
            if self._ended:  # the timer fired as the send ended: its sockets may be reused
                return
            self.passed = True
            self._shut(self._sockets)

    def end(self) -> None:
        """Stops the deadline: once this returns, no socket is shut down by it."""
        with self._lock:  # waits for a cut under way
            self._ended = True
        self._timer.cancel()

    @staticmethod
    def _shut(sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            with suppress(OSError):  # closed already
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.end()
