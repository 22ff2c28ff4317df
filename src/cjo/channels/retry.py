"""When a transiently failed message is tried again: exponential back-off with jitter.

The jitter is derived from the idempotency key and the attempt number, not from a random
generator, so a run (a back-test, a test, a replay) is reproducible, while messages that
failed together (a provider outage) still spread out instead of retrying in one burst.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

__all__ = ["retry_delay"]

# 2**63 seconds overflows timedelta long before: stop doubling well short of it.
_MAX_DOUBLINGS = 60


def retry_delay(key: str, attempt: int, backoff: timedelta, max_delay: timedelta) -> timedelta:
    """The wait after failed attempt number ``attempt`` (1 for the first) of message ``key``:
    ``backoff * 2 ** (attempt - 1)``, capped at ``max_delay``, of which a share between none
    and half (fixed by key and attempt) is taken off. Never more than ``max_delay``, never
    less than half of the capped delay."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    doublings = min(attempt - 1, _MAX_DOUBLINGS)
    capped = min(backoff.total_seconds() * 2.0**doublings, max_delay.total_seconds())
    digest = hashlib.sha256(f"{attempt}:{key}".encode()).digest()
    share = int.from_bytes(digest[:8], "big") / 2.0**64  # in [0, 1)
    return timedelta(seconds=capped * (1.0 - share / 2.0))
