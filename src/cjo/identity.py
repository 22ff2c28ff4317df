"""Identity merge: folding an anonymous customer's record into a known customer's.

``merge_into(known, anonymous, now)`` works on the two customers' deciders inside one storage
transaction (``Engine.identify(..., anonymous_id=...)`` opens it), without I/O:

- profile: the known customer's attribute values win on conflict; the known time zone and
  locale win, the anonymous ones fill a gap. What the anonymous profile fills in is not a
  change of an attribute: attribute triggers saw it change on the anonymous record;
- enrollments: an active enrollment of the anonymous customer in a journey instance (journey
  and instance key) the known one is not in moves over as it is (same id, so the idempotency
  keys of its sends are the same and a step already sent is never sent again; its wake-up is
  kept), unless the journey's re-entry rule would not have let the known customer in at the
  instant it began (judged on their own entry history): then it ends as ``merged``. Where
  both are in the instance, the known one's continues, knowing the Send passes the anonymous
  one made (``Enrollment.merged_passes``: it does not send them again), and the anonymous one
  ends as ``merged``. The rules across journeys then hold in the merged record: of two
  journeys of an exclusive group, and beyond ``max_concurrent_journeys``, the lower-priority
  journey's enrollments (either customer's) end as ``merged``;
- entry histories, offer counts, the send ledger and the kept ended enrollments are combined;
- tracks (event-history aggregates) are combined, then trimmed as the published conditions
  need; segment memberships are combined (the move logged: the anonymous customer exits, the
  known one enters what they were not in) and evaluated again afterwards (``Engine`` does it);
- consent: every statement of both is replayed in time order, so the most recent one wins;
  channel blocks of either customer stay (a block is never lifted by a merge), and one the
  customer or the host asked for ("STOP") stays one that no new address lifts;
- inactivity triggers: per journey, the quiet spell of the later last qualifying event goes
  on, else the known customer's own (``merge_quiet_spells``); other marks keep the later
  instant, other customer timers the later wake-up.

The anonymous record is emptied: it keeps no profile, enrollments, histories or memberships,
and counts as made at the merge (entries under its id at that instant get ids of their own).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final, TypeVar

from cjo.content.offers import sends_kept
from cjo.delivery.consent import UNREACHABLE_MARK, WITHHOLD_MARK, block, set_consent
from cjo.errors import UsageError
from cjo.model.events import Profile, check_id
from cjo.model.steps import Send
from cjo.runtime.arbitration import kept_out
from cjo.runtime.core import Decider, entries_kept, reentry_allows
from cjo.runtime.kinds.triggers import merge_quiet_spells
from cjo.runtime.state import (
    NO_ENTRIES,
    CustomerState,
    Enrollment,
    EntryHistory,
    OfferHistory,
    Track,
)
from cjo.segments.membership import MERGED_AWAY, SEGMENT_TIMER, take_over_segments

if TYPE_CHECKING:
    from cjo.runtime.registry import CompiledJourney, Registry

__all__ = ["MERGED", "anonymous_id_to_merge", "merge_into", "merged_profile"]

#: The end status of an enrollment a merge ends: an anonymous one whose journey instance the
#: known customer is already in, or one the rules across journeys leave out of the merged record.
MERGED: Final = "merged"

_C = TypeVar("_C", datetime, float)


def anonymous_id_to_merge(known_id: str, anonymous_id: object) -> str:
    """``anonymous_id`` as the id of a customer to merge into ``known_id``: a valid id (else
    ``InvalidEventError``), not ``known_id`` itself (else ``UsageError``)."""
    anonymous_id = check_id(anonymous_id, "anonymous_id")
    if anonymous_id == known_id:
        raise UsageError(f"cannot merge customer {known_id!r} into itself")
    return anonymous_id


def merge_into(known: Decider, anonymous: Decider, now: datetime) -> list[str]:
    """Move everything of ``anonymous`` into ``known`` (see the module docstring); returns the
    ids of the enrollments that moved. Both deciders must be caught up to ``now``. Segment
    memberships are left for the caller to evaluate again (the combined record may qualify for
    segments neither record was in, or leave some)."""
    k, a = known.state, anonymous.state
    registry = known.registry
    # One enrollment per journey and instance key, as at entry: another cart moves over.
    busy = {(e.journey_id, e.instance_key): e for e in k.enrollments if e.active}
    # Only what the anonymous record brings can break the rules across journeys.
    left_out = (
        _left_out(registry, [*k.enrollments, *a.enrollments])
        if any(e.active for e in a.enrollments) else {}
    )
    # The anonymous customer's entries do not name the known one: erasing the known customer
    # must leave no trace of their id, and these entries stay under the anonymous id. (The
    # link is in the known customer's own ``merged_in`` entries, which their erasure blanks.)
    merged = "merged into a known customer"
    for e in [e for e in k.enrollments if e.active and e.journey_id in left_out]:
        known.end(e, MERGED, f"merged with {a.customer_id}: {left_out[e.journey_id]}", now)
    moved: list[str] = []
    for e in sorted(a.enrollments, key=lambda e: (e.entered_at, e.id)):
        if not e.active:
            continue
        if e.journey_id in left_out:
            anonymous.end(e, MERGED, f"{merged}: {left_out[e.journey_id]}", now)
            continue
        going_on = busy.get((e.journey_id, e.instance_key))
        if going_on is not None:
            _carry_passes(registry, e, going_on)
            anonymous.end(e, MERGED, merged, now)
            continue
        # Judged on the known customer's own history: the anonymous one's comes in below.
        refused = _reentry_refused(registry, k, e)
        if refused is not None:
            anonymous.end(e, MERGED, f"{merged}: {refused}", now)
            continue
        a.enrollments.remove(e)
        e.customer_id = k.customer_id
        k.enrollments.append(e)
        moved.append(e.id)
        known.activity(e, "merged_in", a.customer_id, now)
    ended = sorted([*k.ended, *a.ended], key=lambda x: (x.ended_at, x.id))
    k.ended = tuple(ended[max(0, len(ended) - known.keep_ended):])
    for key, h in a.history.items():
        k.history[key] = _combine_history(registry, key[0], k.history.get(key), h)
    for offer, o in a.offers.items():
        mine = k.offers.get(offer)
        k.own_offers()[offer] = o if mine is None else OfferHistory(
            mine.count + o.count, _newest(mine.recent, o.recent, _offer_keep(registry, offer))
        )
    if a.sends:
        k.sends = list(heapq.merge(k.sends, a.sends, key=lambda s: s[0])) or NO_ENTRIES
    _merge_consent(k, a)
    _merge_blocks(k, a)
    for stream, t in a.tracks.items():
        mine_t = k.tracks.get(stream)
        k.own_tracks()[stream] = t.copy() if mine_t is None else _combine_track(mine_t, t)
    take_over_segments(known, anonymous, now)
    if a.decided_at is not None and (k.decided_at is None or a.decided_at > k.decided_at):
        k.decided_at = a.decided_at
    spells = merge_quiet_spells(k, a)
    for name, at in a.marks.items():
        if name.startswith((WITHHOLD_MARK, UNREACHABLE_MARK)) or name == MERGED_AWAY:
            # The anonymous record's messages: they stay with it (below); a record an earlier
            # merge emptied says so of itself only; and blocks were merged above.
            continue
        if name not in spells and (name not in k.marks or at > k.marks[name]):
            k.marks[name] = at
    for name, at in a.timers.items():
        if name != SEGMENT_TIMER and name not in spells and (
            name not in k.timers or at > k.timers[name]
        ):
            k.timers[name] = at
    if a.profile is not None:
        # Not ``set_profile``: what the anonymous profile fills in is no change of the person's
        # attributes (it changed, and attribute triggers saw it, on the anonymous record).
        k.profile = merged_profile(k.customer_id, k.profile, a.profile)
    known.touch()
    # The emptied record counts as made now, and its entries of this instant carry a count of
    # their own in their ids (``CustomerState.erasures``): the enrollments that moved keep the
    # ids they had here, and a new entry reusing one would share its sends' idempotency keys.
    used = a.erasures if a.created_at == now else 0
    empty = CustomerState(a.customer_id, now, a.revision, erasures=used + 1)
    # Messages an earlier merge left to their sender still stay withheld should they come back.
    empty.marks.update((n, at) for n, at in a.marks.items() if n.startswith(WITHHOLD_MARK))
    # No one's now: in no segment until an input of its own (``MERGED_AWAY``).
    empty.marks[MERGED_AWAY] = now
    anonymous.state = empty
    anonymous.touch()
    return moved


def _merge_blocks(k: CustomerState, a: CustomerState) -> None:
    """Keep every channel block of either customer (the known one's reason on a tie). A block
    stays one that a new address lifts (a bounce: ``UNREACHABLE_MARK``) only when both sides'
    blocks on the channel are: a "STOP" or a host's block on either side is the person's word,
    which no address change may lift."""
    for channel, reason in a.blocked.items():
        mark = UNREACHABLE_MARK + channel
        theirs = a.marks.get(mark)
        if channel not in k.blocked or (mark in k.marks and theirs is None):
            block(k, channel, reason)
            if theirs is not None:
                k.marks[mark] = theirs
        elif mark in k.marks and theirs is not None:
            k.marks[mark] = max(k.marks[mark], theirs)


def _reentry_refused(registry: Registry, k: CustomerState, e: Enrollment) -> str | None:
    """Why the known customer could not have entered the journey instance of the anonymous
    enrollment ``e`` at the instant it began, by the re-entry rule of its version and their
    own entry history (``reentry_allows``): moved over, it would take them through the journey
    again. None: they could have."""
    h = k.history.get((e.journey_id, e.instance_key))
    cj = registry.journeys.get((e.journey_id, e.version)) or registry.latest.get(e.journey_id)
    if h is None or cj is None:
        return None
    policy = cj.journey.reentry
    if reentry_allows(policy, h, e.entered_at):
        return None
    rule = "duplicate guard" if policy.mode == "after_exit" else policy.mode
    return f"the re-entry rule ({rule}) keeps the known customer out"


def _carry_passes(registry: Registry, ended: Enrollment, going_on: Enrollment) -> None:
    """Let ``going_on`` (the known customer's enrollment) know the passes of Send steps that
    ``ended`` (the anonymous one's, in the same journey instance) made: it does not make them
    again (``Decider.send``). A pass of the Send ``ended`` waits on (deferred by a delivery
    rule, or a render to retry) was not made: its message has not gone out."""
    cj = registry.journeys.get((ended.journey_id, ended.version))
    made = dict(ended.visits)
    if ended.step_id in made:
        made[ended.step_id] -= 1
    passes = dict(going_on.merged_passes or {})
    for source in (made, ended.merged_passes or {}):
        for step_id, n in source.items():
            # Steps of a version this process does not know are all kept: only a Send reads them.
            if n > passes.get(step_id, 0) and (
                cj is None or (step_id in cj.steps and isinstance(cj.steps[step_id].step, Send))
            ):
                passes[step_id] = n
    if passes:
        going_on.merged_passes = passes


def _left_out(registry: Registry, enrollments: Iterable[Enrollment]) -> dict[str, str]:
    """The journeys of the active ``enrollments`` that must end for the rules across journeys
    to hold in the merged record, each with why. As at entry, journeys go highest priority
    first (ties: journey id), so each exclusive group keeps its highest journey and only the
    first ``max_concurrent_journeys`` stay."""
    limit = registry.max_concurrent
    if not registry.any_group and limit is None:
        return {}
    inside: dict[str, CompiledJourney] = {}
    for e in enrollments:
        cj = registry.journeys.get((e.journey_id, e.version))
        if e.active and cj is not None:
            inside.setdefault(e.journey_id, cj)
    kept: list[CompiledJourney] = []
    out: dict[str, str] = {}
    for jid, cj in sorted(inside.items(), key=lambda item: (-item[1].journey.priority, item[0])):
        reason = kept_out(cj, kept, limit)
        if reason is None:
            kept.append(cj)
        else:
            out[jid] = reason
    return out


def merged_profile(customer_id: str, known: Profile | None, anonymous: Profile) -> Profile:
    """The known profile with the anonymous one's attributes it lacks (known values win)."""
    if known is None:
        return Profile(customer_id, dict(anonymous.attributes), anonymous.timezone,
                       anonymous.locale)
    return Profile(
        customer_id,
        {**anonymous.attributes, **known.attributes},
        known.timezone if known.timezone is not None else anonymous.timezone,
        known.locale if known.locale is not None else anonymous.locale,
    )


def _merge_consent(k: CustomerState, a: CustomerState) -> None:
    """Replay both customers' statements oldest first (the known one's last on a tie): the most
    recent statement covering a send decides it, as if one customer had said them all."""
    if not a.consent:
        return
    statements = [(when, 0, key, value) for key, (value, when) in a.consent.items()]
    statements += [(when, 1, key, value) for key, (value, when) in k.consent.items()]
    k.consent = {}
    for when, _side, (topic, channel), value in sorted(statements, key=lambda s: (s[0], s[1])):
        set_consent(k, topic, channel, value, when)


def _combine_history(
    registry: Registry, journey_id: str, mine: EntryHistory | None, other: EntryHistory
) -> EntryHistory:
    if mine is None:
        return other
    ended = [t for t in (mine.last_ended_at, other.last_ended_at) if t is not None]
    return EntryHistory.of(
        mine.count + other.count,
        _newest(mine.recent, other.recent, _entry_keep(registry, journey_id)),
        max(ended) if ended else None,
    )


def _entry_keep(registry: Registry, journey_id: str) -> int | None:
    """How many entry instants the journey's re-entry rule counts (as an entry keeps them);
    None for a journey not published."""
    cj = registry.latest.get(journey_id)
    return None if cj is None else entries_kept(cj.journey.reentry)


def _offer_keep(registry: Registry, offer_id: str) -> int | None:
    """How many send instants the offer's rolling cap counts (as a send keeps them); None for
    an offer not published."""
    compiled = registry.offers.get(offer_id)
    return None if compiled is None else sends_kept(compiled.offer)


def _newest(
    mine: Sequence[datetime], other: Sequence[datetime], keep: int | None
) -> tuple[datetime, ...]:
    """Both lists of instants in order, the newest ``keep`` of them (None: all). Not merely
    as many as the longer one kept: each side may hold fewer than the rule counts, and
    together they may hold all it counts (two sends in a "twice a week" cap)."""
    both = sorted([*mine, *other])
    if keep is None:
        return tuple(both)
    return tuple(both[-keep:]) if keep else ()


def _combine_track(mine: Track, other: Track) -> Track:
    out = mine.copy()
    out.since = min(mine.since, other.since)
    out.first = _least(mine.first, other.first)
    out.last = _greatest(mine.last, other.last)
    out.count = mine.count + other.count
    out.total = mine.total + other.total
    out.low = _least(mine.low, other.low)
    out.high = _greatest(mine.high, other.high)
    # Oldest first, as the tracks keep them; the caller trims them to what windows read.
    out.recent = list(heapq.merge(mine.recent, other.recent, key=lambda r: r[0]))
    for rkey, acc in other.ranges.items():
        have = out.ranges.get(rkey)
        out.ranges[rkey] = list(acc) if have is None else [
            have[0] + acc[0], have[1] + acc[1], min(have[2], acc[2]), max(have[3], acc[3]),
        ]
    return out


def _least(a: _C | None, b: _C | None) -> _C | None:
    return b if a is None else a if b is None else min(a, b)


def _greatest(a: _C | None, b: _C | None) -> _C | None:
    return b if a is None else a if b is None else max(a, b)
