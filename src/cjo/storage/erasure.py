"""What an erased customer's activity-log entries keep: the same rule on every adapter.

An entry keeps what it counts (journey, version, step, kind, channel, content, instant) and
loses the customer: the customer id is blanked, the enrollment id (which names the customer)
is replaced by a pseudonym, and the details that are free text (a delivery error, a block
reason, a clicked URL, an identity merged with, a host's removal reason) or a past date read
from the profile are blanked, since they may hold an address or a birth date, save those cjo
writes itself (``KEPT_DETAILS``: the control group's).

The pseudonym is a salted hash of the enrollment id: one enrollment's entries keep one
pseudonym (journeys can still be followed through), and a fresh random salt per erasure,
never stored, means the pseudonym cannot be traced back to the customer id.

The counts that outlive pruning keep no free text either: a pruned entry's free-text detail
is counted as blank.

Counts leave out the instants some details name (``counted_detail``): a deferral's
``weekly: deferred to <instant>`` counts as ``weekly: deferred``, so the counts grow with the
definitions, not with every deferral ever made. The log keeps each detail whole.

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

from cjo.model.governance import CONTROL_DETAIL

__all__ = [
    "ERASED_PREFIX",
    "FREE_TEXT_KINDS",
    "KEPT_DETAILS",
    "KEPT_DETAILS_SQL",
    "SCHEDULE_CLAIM_END",
    "SCHEDULE_CLAIM_PREFIX",
    "TIMED_DETAILS",
    "counted_detail",
    "counted_detail_sql",
    "erased_detail",
    "names_schedule_claim",
    "pseudonymiser",
    "schedule_claim",
]

#: What every pseudonymous enrollment id starts with.
ERASED_PREFIX: Final = "erased:"

#: Activity kinds whose detail is free text from outside the definitions; ``date_past``'s
#: is an instant read from the customer's profile or context (a birth date).
FREE_TEXT_KINDS: Final = frozenset({
    "unreachable", "send_failed", "render_retry", "action_failed", "suppressed", "fallback",
    "withheld", "clicked", "merged", "merged_in", "removed", "date_past",
})

#: Details of free-text kinds that cjo writes itself and that name no one: kept, so the counts
#: still tell the control group's withheld sends apart (``JourneyReport.suppressed``).
KEPT_DETAILS: Final = frozenset({("suppressed", CONTROL_DETAIL)})

#: ``KEPT_DETAILS`` as an SQL condition over the columns ``kind`` and ``detail``.
KEPT_DETAILS_SQL: Final = "(" + " OR ".join(
    f"(kind = '{kind}' AND detail = '{detail}')" for kind, detail in sorted(KEPT_DETAILS)
) + ")"

#: What the event id of every schedule entry's claim starts with; every such id sorts before
#: ``SCHEDULE_CLAIM_END`` (the prefix with its last character's successor).
SCHEDULE_CLAIM_PREFIX: Final = "schedule:"
SCHEDULE_CLAIM_END: Final = "schedule;"


def pseudonymiser() -> Callable[[str], str]:
    """The pseudonym of an enrollment id for one erasure (a salt of its own)."""
    salt = secrets.token_bytes(16)

    def pseudonym(enrollment_id: str) -> str:
        if not enrollment_id:
            # An entry outside any enrollment (a late event, a refused entry): nothing to
            # hide, and blank is how readers tell such entries apart.
            return enrollment_id
        digest = hashlib.sha256(salt + enrollment_id.encode()).hexdigest()
        return ERASED_PREFIX + digest[:24]

    return pseudonym


#: Activity kinds whose detail names an instant, with the text the instant follows and what
#: the count keeps in its place: ``<rule>: deferred to <instant>`` is counted as
#: ``<rule>: deferred``, ``<event> stamped <instant>, after <instant>`` as ``<event>``. The
#: first occurrence of the text counts (as SQL's ``instr`` finds it).
TIMED_DETAILS: Final[dict[str, tuple[str, str]]] = {
    "capped": (": deferred to ", ": deferred"),
    "quiet_hours": (": deferred to ", ": deferred"),
    "late_event": (" stamped ", ""),
}
#: Activity kinds whose detail is an instant and nothing else (a date already past): counted
#: as blank.
_INSTANT_KINDS: Final = frozenset({"date_past"})


def counted_detail(kind: str, detail: str | None) -> str | None:
    """The detail an entry is counted under in ``activity_counts``: its own, less the instant
    it names (``TIMED_DETAILS``)."""
    if detail is None or kind in _INSTANT_KINDS:
        return None
    timed = TIMED_DETAILS.get(kind)
    if timed is None:
        return detail
    marker, kept = timed
    at = detail.find(marker)
    return detail if at < 0 else detail[:at] + kept


def counted_detail_sql(find: str) -> str:
    """``counted_detail`` as an SQL expression over the columns ``kind`` and ``detail``;
    ``find`` is the dialect's function that finds text in text, 1-based, 0 when absent
    (SQLite's ``instr``, PostgreSQL's ``strpos``)."""
    cases = [f"WHEN kind IN ({_sql_list(_INSTANT_KINDS)}) THEN NULL"]
    for marker, kept in sorted(set(TIMED_DETAILS.values())):
        kinds = {kind for kind, timed in TIMED_DETAILS.items() if timed == (marker, kept)}
        found = f"{find}(detail, '{marker}')"
        cases.append(f"WHEN kind IN ({_sql_list(kinds)}) AND {found} > 0 "
                     f"THEN substr(detail, 1, {found} - 1) || '{kept}'")
    return f"(CASE {' '.join(cases)} ELSE detail END)"


def _sql_list(words: frozenset[str] | set[str]) -> str:
    # Kinds and markers are cjo's own constants: plain text, no quote to escape.
    return ", ".join(f"'{word}'" for word in sorted(words))


def erased_detail(kind: str, detail: str | None) -> str | None:
    """The detail an erased customer's entry keeps; also the detail a pruned entry is counted
    under (the counts outlive the log, and no erasure can tell whose entry a count holds)."""
    return None if kind in FREE_TEXT_KINDS and (kind, detail) not in KEPT_DETAILS else detail


def schedule_claim(journey_id: str, occurrence: str, customer_id: str) -> str:
    """The event id a schedule entry claims: one per journey, occurrence and customer."""
    return f"{SCHEDULE_CLAIM_PREFIX}{journey_id}:{occurrence}:{customer_id}"


def names_schedule_claim(event_id: str, customer_id: str) -> bool:
    """Whether ``event_id`` is the claim of a schedule entry of ``customer_id``, so goes with
    them. Ids are not split (journey ids and customer ids may hold colons): the claims of a
    customer whose id ends in ``:<customer id>`` go too, which costs them at most an entry of
    an occurrence run again while it is still being run."""
    return event_id.startswith(SCHEDULE_CLAIM_PREFIX) and event_id.endswith(":" + customer_id)
