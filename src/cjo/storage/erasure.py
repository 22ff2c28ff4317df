"""What an erased customer's activity-log entries keep: the same rule on every adapter.

An entry keeps what it counts (journey, version, step, kind, channel, content, instant) and
loses the customer: the customer id is blanked, the enrollment id (which names the customer)
is replaced by a pseudonym, and the details that are free text (a delivery error, a block
reason, a clicked URL, an identity merged with) are blanked, since they may hold an address.

The pseudonym is a salted hash of the enrollment id: one enrollment's entries keep one
pseudonym (journeys can still be followed through), and a fresh random salt per erasure,
never stored, means the pseudonym cannot be traced back to the customer id.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from typing import Final

__all__ = ["ERASED_PREFIX", "FREE_TEXT_KINDS", "erased_detail", "pseudonymiser"]

#: What every pseudonymous enrollment id starts with.
ERASED_PREFIX: Final = "erased:"

#: Activity kinds whose detail is free text from outside the definitions.
FREE_TEXT_KINDS: Final = frozenset({
    "unreachable", "send_failed", "render_retry", "action_failed", "suppressed", "fallback",
    "clicked", "merged", "merged_in",
})


def pseudonymiser() -> Callable[[str], str]:
    """The pseudonym of an enrollment id for one erasure (a salt of its own)."""
    salt = secrets.token_bytes(16)

    def pseudonym(enrollment_id: str) -> str:
        digest = hashlib.sha256(salt + enrollment_id.encode()).hexdigest()
        return ERASED_PREFIX + digest[:24]

    return pseudonym


def erased_detail(kind: str, detail: str | None) -> str | None:
    """The detail an erased customer's entry keeps."""
    return None if kind in FREE_TEXT_KINDS else detail
