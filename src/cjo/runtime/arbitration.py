"""The rules across journeys: exclusive groups and the concurrency limit.

One function, used where a customer enters a journey (``Decider._arbitrate``) and where two
records merge into one (``cjo.identity``), so both keep a customer out of a journey for the same
reasons, worded the same way."""

from __future__ import annotations

from collections.abc import Sequence

from cjo.runtime.registry import CompiledJourney


def kept_out(
    cj: CompiledJourney, inside: Sequence[CompiledJourney], limit: int | None
) -> str | None:
    """Why a customer in the journeys ``inside`` may not also be in ``cj``, or None."""
    jid = cj.journey.id
    group = cj.journey.exclusive_group
    if group is not None:
        for other in inside:
            if other.journey.id != jid and other.journey.exclusive_group == group:
                return f"exclusive group {group!r}: in journey {other.journey.id!r}"
    if limit is not None:
        current = {c.journey.id for c in inside}
        if jid not in current and len(current) >= limit:
            # Named, as a group's journey is: the customer may be in more than a limit
            # lowered since allows.
            names = ", ".join(repr(name) for name in sorted(current))
            return (f"concurrency limit: in {len(current)} journey"
                    f"{'' if len(current) == 1 else 's'} ({names}), at most {limit}")
    return None
