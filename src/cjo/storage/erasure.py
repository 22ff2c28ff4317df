"""What an erased customer's activity-log entries keep: the same rule on every adapter.

An entry keeps what it counts (journey, version, step, kind, channel, content, instant) and
loses the customer: the customer id is blanked, the enrollment id (which names the customer)
is replaced by a pseudonym, and the details that are free text (a delivery error, a block
reason, a clicked URL, an identity merged with, a host's removal reason) are blanked, since they
may hold an address.

The pseudonym is a salted hash of the enrollment id: one enrollment's entries keep one
pseudonym (journeys can still be followed through), and a fresh random salt per erasure,
never stored, means the pseudonym cannot be traced back to the customer id.

The counts that outlive pruning keep no free text either: a pruned entry's free-text detail
is counted as blank.

Handled event ids are the host's, opaque, and stay until pruned, save those cjo made itself
that name the customer: the claims of their schedule entries
(``schedule:<journey>:<occurrence>:<customer>``, ``schedule_claim``), which go with them
(``names_schedule_claim`` tells them; adapters may narrow the search to ids from
``SCHEDULE_CLAIM_PREFIX`` up to ``SCHEDULE_CLAIM_END``).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from typing import Final

__all__ = [
    "ERASED_PREFIX",
    "FREE_TEXT_KINDS",
    "SCHEDULE_CLAIM_END",
    "SCHEDULE_CLAIM_PREFIX",
    "erased_detail",
    "names_schedule_claim",
    "pseudonymiser",
    "schedule_claim",
]

#: What every pseudonymous enrollment id starts with.
ERASED_PREFIX: Final = "erased:"

#: Activity kinds whose detail is free text from outside the definitions.
FREE_TEXT_KINDS: Final = frozenset({
    "unreachable", "send_failed", "render_retry", "action_failed", "suppressed", "fallback",
    "withheld", "clicked", "merged", "merged_in", "removed",
})

#: What the event id of every schedule entry's claim starts with; every such id sorts before
#: ``SCHEDULE_CLAIM_END`` (the prefix with its last character's successor).
SCHEDULE_CLAIM_PREFIX: Final = "schedule:"
SCHEDULE_CLAIM_END: Final = "schedule;"


def pseudonymiser() -> Callable[[str], str]:
    """The pseudonym of an enrollment id for one erasure (a salt of its own)."""
    salt = secrets.token_bytes(16)

    def pseudonym(enrollment_id: str) -> str:
        digest = hashlib.sha256(salt + enrollment_id.encode()).hexdigest()
        return ERASED_PREFIX + digest[:24]

    return pseudonym


def erased_detail(kind: str, detail: str | None) -> str | None:
    """The detail an erased customer's entry keeps; also the detail a pruned entry is counted
    under (the counts outlive the log, and no erasure can tell whose entry a count holds)."""
    return None if kind in FREE_TEXT_KINDS else detail


def schedule_claim(journey_id: str, occurrence: str, customer_id: str) -> str:
    """The event id a schedule entry claims: one per journey, occurrence and customer."""
    return f"{SCHEDULE_CLAIM_PREFIX}{journey_id}:{occurrence}:{customer_id}"


def names_schedule_claim(event_id: str, customer_id: str) -> bool:
    """Whether ``event_id`` is the claim of a schedule entry of ``customer_id``, so goes with
    them. Ids are not split (journey ids and customer ids may hold colons): the claims of a
    customer whose id ends in ``:<customer id>`` go too, which costs them at most an entry of
    an occurrence run again while it is still being run."""
    return event_id.startswith(SCHEDULE_CLAIM_PREFIX) and event_id.endswith(":" + customer_id)
