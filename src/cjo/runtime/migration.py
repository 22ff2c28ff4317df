"""The messages an enrollment made, as the engagement waits of its current version name them.

A Send step's latest message is the one whose idempotency key ``message_key`` derives from
the enrollment id, the step id and its count of passes (``Enrollment.visits``). A migration to
a new version (``VersionChange.migrate``) may rename a Send step or merge several into one: the
new step's count of passes says nothing of the messages the old steps made, so the migration
carries their keys onto it (``Enrollment.carried_sends``), and they stand for its latest pass
until it makes another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from cjo.model.steps import Send
from cjo.runtime.ids import message_key

if TYPE_CHECKING:
    from cjo.model.journey import Journey
    from cjo.runtime.state import CarriedSend, Enrollment

__all__ = ["carry_sends", "latest_message_keys"]


def latest_message_keys(e: Enrollment, step_id: str) -> tuple[str, ...]:
    """The keys of the messages ``e``'s latest pass of Send step ``step_id`` stands for: the
    key of that pass, or the messages a migration carried onto the step if it has not been
    passed since (several when Send steps were merged). None before the step is reached."""
    passes = e.visits.get(step_id)
    carried = e.carried_sends
    if carried is not None:
        kept = carried.get(step_id)
        if kept is not None and kept[0] == (passes or 0):
            return kept[1]
    if passes is None:
        return ()
    return (message_key(e.id, step_id, passes),)


def carry_sends(
    e: Enrollment, old: Journey, new: Journey, steps: Mapping[str, str]
) -> None:
    """Carry the latest messages of ``old``'s Send steps onto the Send steps of ``new`` that
    ``steps`` (the migration's map; a step left out keeps its id) moves them to. Kept only
    where they differ from what the new step's own passes name, so an enrollment whose Send
    steps kept their ids carries nothing.

    An enrollment moved from its current step onto another that is a Send step starts a
    pass of it (the message it sends there is a new one, and must not take the key of one
    the step sent before): that pass is the step's latest, and nothing is carried onto it."""
    current = e.step_id
    moved_onto = None if current is None else steps.get(current, current)
    if moved_onto == current or not isinstance(new.steps.get(moved_onto or ""), Send):
        moved_onto = None
    made: dict[str, list[str]] = {}
    for step_id, step in old.steps.items():
        if not isinstance(step, Send):
            continue
        target = steps.get(step_id, step_id)
        if not isinstance(new.steps.get(target), Send):
            continue  # no engagement wait can name it
        keys = made.setdefault(target, [])
        keys.extend(k for k in latest_message_keys(e, step_id) if k not in keys)
    carried: dict[str, CarriedSend] = {}
    visits = e.visits
    for step_id, step in new.steps.items():
        if not isinstance(step, Send) or step_id == moved_onto:
            continue
        carried_keys = tuple(made.get(step_id, ()))
        passes = visits.get(step_id)
        own = () if passes is None else (message_key(e.id, step_id, passes),)
        # A step of the old version's id that no Send was moved onto: its passes were another
        # step's, whose messages are not this one's.
        if carried_keys != own:
            carried[step_id] = (passes or 0, carried_keys)
    e.carried_sends = carried or None
    if moved_onto is not None:
        visits[moved_onto] = visits.get(moved_onto, 0) + 1
