"""Real-time segment membership: what each published segment reads, which segments an input
can change, when time alone can change one, and what follows a change.

A ``SegmentPlan`` is compiled once per definitions generation (``Registry.plan``). The decision
core calls it in the customer's transaction:

- ``on_event``: profile rules update attributes, the event is counted into the tracks that
  read it, and the segments that read a changed track or attribute are evaluated again, all
  before journeys react to the event;
- ``on_profile``: after attributes change (``identify``, an UpdateProfile step);
- ``on_timer``: at the one customer timer (``SEGMENT_TIMER``) set to the earliest instant a
  time-relative condition can change (a count crossing its bound as events leave its window, a
  quiet spell reaching its length), the segments whose condition changes then are evaluated
  again at exactly that instant;
- ``sync``: when the definitions changed since the record was last evaluated (or the record is
  new), every segment is evaluated again. Before an event or a profile change, ``prepare``
  only brings the tracks up to date, and ``settle`` evaluates every segment once the input is
  applied: one input changes a membership once, judged on the state it leaves.

Each change is stored in ``CustomerState.segments``, logged as a ``segment_entered`` or
``segment_exited`` activity (detail: the segment id) at its instant, ends enrollments whose exit
criterion names it, and starts journeys whose ``SegmentTrigger`` names it.

An erasure first takes the customer out of every segment (``leave_every_segment``): the exits
are logged at the erasure instant, so segment sizes read from the log stop counting the
customer there.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from graphlib import TopologicalSorter
from typing import TYPE_CHECKING, Any, Final

import attrs

from cjo.conditions import (
    Compare,
    CompareFields,
    CompareTime,
    CompiledCondition,
    Condition,
    Exists,
    InSegment,
    Ref,
    compile_condition,
    walk,
)
from cjo.model.definitions import Definitions
from cjo.model.triggers import SegmentTrigger
from cjo.runtime.state import Activity, ActivityKind, CustomerState, Track
from cjo.segments.history import (
    Aggregate,
    FirstPerformed,
    Inactive,
    LastPerformed,
    ListHas,
    NextChange,
    Performed,
    TextMatch,
    change_clock,
    clock_key,
)
from cjo.segments.rules import ProfileRule, apply_updates
from cjo.segments.tracking import TrackSpec, plan_tracks, stream_key

if TYPE_CHECKING:
    from cjo.model.events import Event
    from cjo.runtime.core import Decider
    from cjo.runtime.registry import CompiledJourney

__all__ = [
    "ENTERED", "EXITED", "MERGED_AWAY", "SEGMENT_TIMER", "SegmentPlan", "leave_every_segment",
    "take_over_segments",
]

#: The customer timer of time-relative segments.
SEGMENT_TIMER: Final = "segments"
#: The mark (``CustomerState.marks``, the instant of the merge) on the record an identity merge
#: emptied: it stands for no one, so it is in no segment (a sweep of every record, at a publish
#: or ``refresh_segments``, evaluates none for it) until an input of its own comes.
MERGED_AWAY: Final = "merged_away"
ENTERED: Final = "segment_entered"
EXITED: Final = "segment_exited"
#: How deeply membership changes may cascade within one input (a journey started by a change
#: updates the profile, which changes another segment, ...): past it, changes are still
#: recorded but start and end no journeys, so two journeys cannot feed each other forever.
MAX_CASCADE: Final = 8

_EMPTY: Mapping[str, Any] = {}
_TIMED: Final = (Performed, Aggregate, FirstPerformed, LastPerformed, Inactive)
_MICROSECOND: Final = timedelta(microseconds=1)


class _EventScope:
    """What an event filter reads: the event's properties only."""

    __slots__ = ("event",)
    profile: Mapping[str, Any] = _EMPTY
    context: Mapping[str, Any] = _EMPTY

    def __init__(self, event: Mapping[str, Any]) -> None:
        self.event = event

    def in_segment(self, segment_id: str) -> bool:
        return False


@attrs.define(slots=True)
class _Reads:
    """What one segment's truth depends on."""

    tracks: frozenset[str]
    attributes: frozenset[str]
    any_attribute: bool
    segments: frozenset[str]
    #: (node, track key) of the nodes whose truth changes with time.
    timed: tuple[tuple[Condition, str], ...]
    #: Whether it compares a field with now() (its truth moves with time, but no timer follows
    #: it: it is evaluated when something else makes cjo look).
    reads_now: bool = False


def _reads(condition: Condition) -> _Reads:
    tracks: set[str] = set()
    names: set[str] = set()
    any_attribute = False
    reads_now = False
    segments: set[str] = set()
    timed: list[tuple[Condition, str]] = []
    for node in walk(condition):
        refs: tuple[Ref, ...] = ()
        if isinstance(node, Compare | Exists | TextMatch | ListHas):
            refs = (node.ref,)
        elif isinstance(node, CompareFields):
            refs = (node.left, node.right)
        elif isinstance(node, CompareTime):
            reads_now = reads_now or node.base == "now"
        elif isinstance(node, InSegment):
            segments.add(node.segment)
        elif isinstance(node, _TIMED):
            key = stream_key(node)
            tracks.add(key)
            if _is_timed(node):
                timed.append((node, key))
        for ref in refs:
            if ref.scope == "profile":
                names.add(ref.path.split(".", 1)[0])
            else:
                any_attribute = True  # not expected in a segment; re-evaluate to be safe
    return _Reads(frozenset(tracks), frozenset(names), any_attribute, frozenset(segments),
                  tuple(timed), reads_now)


@attrs.frozen
class _Clock:
    """One time-relative input, shared by the timed nodes of one clock key: when it next
    changes, the track it reads, and the segments that read it."""

    next_change: NextChange
    key: str
    segments: frozenset[str]


def _clocks(reads: Mapping[str, _Reads], *, exact: bool) -> tuple[_Clock, ...]:
    groups: dict[tuple[str, tuple[str, timedelta | None]], tuple[list[Condition], set[str]]] = {}
    for sid, r in reads.items():
        for node, key in r.timed:
            nodes, sids = groups.setdefault((key, clock_key(node)), ([], set()))
            if node not in nodes:
                nodes.append(node)
            sids.add(sid)
    return tuple(_Clock(change_clock(nodes, exact=exact), key, frozenset(sids))
                 for (key, _), (nodes, sids) in groups.items())


def _index(pairs: Iterable[tuple[str, str]]) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for name, sid in pairs:
        out.setdefault(name, set()).add(sid)
    return {name: frozenset(sids) for name, sids in out.items()}


def _follows_now(reads: Mapping[str, _Reads], order: list[str]) -> frozenset[str]:
    """The segments whose truth can move with now() in a way no clock follows: those comparing
    a field with now(), and those reading such a segment (a segment is read live)."""
    out: set[str] = set()
    for sid in order:  # readers after what they read
        r = reads[sid]
        if r.reads_now or not r.segments.isdisjoint(out):
            out.add(sid)
    return frozenset(out)


def _is_timed(node: Condition) -> bool:
    if isinstance(node, Performed | Aggregate):
        return node.window is not None
    if isinstance(node, FirstPerformed | LastPerformed):
        return node.op == "within"
    return isinstance(node, Inactive)


def _digest(definitions: Definitions, tracks: Mapping[str, TrackSpec]) -> str:
    from cjo.serialization import converter  # noqa: PLC0415  (it imports this package's types)

    data = [converter.unstructure(s) for s in definitions.segments], sorted(tracks)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@attrs.define(slots=True)
class SegmentPlan:
    """Everything about segments, profile rules and tracks that one generation needs."""

    tracks: dict[str, TrackSpec] = attrs.field(factory=dict)
    tracks_by_event: dict[str, list[TrackSpec]] = attrs.field(factory=dict)
    rules_by_event: dict[str, list[tuple[ProfileRule, CompiledCondition | None]]] = attrs.field(
        factory=dict
    )
    #: Segment ids, each after the segments it reads.
    order: list[str] = attrs.field(factory=list)
    compiled: dict[str, CompiledCondition] = attrs.field(factory=dict)
    reads: dict[str, _Reads] = attrs.field(factory=dict)
    #: (segment, "enter"/"exit") -> journeys (latest versions) it starts, in id order.
    triggers: dict[tuple[str, str], list[CompiledJourney]] = attrs.field(factory=dict)
    #: (segment, "enter"/"exit") -> (journey id, version) -> exit criterion names.
    exits: dict[tuple[str, str], dict[tuple[str, int], list[str]]] = attrs.field(factory=dict)
    basis: str = ""
    #: Event names that rules or tracks read (they matter to every customer).
    events: frozenset[str] = frozenset()
    #: Each segment's position in ``order``.
    rank: dict[str, int] = attrs.field(factory=dict)
    #: Segment -> the segments whose condition reads it (``in_segment``).
    readers: dict[str, frozenset[str]] = attrs.field(factory=dict)
    #: Track key -> the segments reading it; attribute name -> the segments reading it.
    by_track: dict[str, frozenset[str]] = attrs.field(factory=dict)
    by_attribute: dict[str, frozenset[str]] = attrs.field(factory=dict)
    #: Segments that read a value outside the profile: any attribute change concerns them.
    any_attribute: frozenset[str] = frozenset()
    #: The distinct time-relative inputs of the segments, and those reading each track.
    clocks: tuple[_Clock, ...] = ()
    clocks_by_track: dict[str, tuple[_Clock, ...]] = attrs.field(factory=dict)
    #: Time-relative segments evaluated at every segment timer, due or not: they also compare
    #: a field with now() (directly or through a segment they read), which no clock follows.
    always_timed: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls, definitions: Definitions, compiled: Mapping[str, CompiledCondition],
        latest: Mapping[str, CompiledJourney], journeys: Mapping[tuple[str, int], Any],
    ) -> SegmentPlan:
        tracks = plan_tracks(definitions)
        by_event: dict[str, list[TrackSpec]] = {}
        for spec in tracks.values():
            by_event.setdefault(spec.event, []).append(spec)
        rules: dict[str, list[tuple[ProfileRule, CompiledCondition | None]]] = {}
        for rule in definitions.profile_rules:
            where = compile_condition(rule.where) if rule.where is not None else None
            rules.setdefault(rule.event, []).append((rule, where))
        reads = {s.id: _reads(s.condition) for s in definitions.segments}
        graph = {sid: r.segments for sid, r in reads.items()}
        order = [sid for sid in TopologicalSorter(graph).static_order() if sid in reads]
        triggers: dict[tuple[str, str], list[CompiledJourney]] = {}
        for jid in sorted(latest):
            trigger = latest[jid].journey.trigger
            if isinstance(trigger, SegmentTrigger):
                triggers.setdefault((trigger.segment, trigger.on), []).append(latest[jid])
        exits: dict[tuple[str, str], dict[tuple[str, int], list[str]]] = {}
        for key, cj in journeys.items():
            for crit in cj.journey.exit_criteria:
                if crit.segment is not None:
                    exits.setdefault((crit.segment, crit.on), {}).setdefault(key, []).append(
                        crit.name
                    )
        follows_now = _follows_now(reads, order)
        always_timed = frozenset(sid for sid in follows_now if reads[sid].timed)
        # Segments evaluated at every segment timer must keep being evaluated where they were
        # (each event leaving a window), not only where a count crosses its bound.
        clocks = _clocks(reads, exact=not always_timed)
        return cls(
            tracks=tracks, tracks_by_event=by_event, rules_by_event=rules, order=order,
            compiled=dict(compiled), reads=reads, triggers=triggers, exits=exits,
            basis=_digest(definitions, tracks) if reads or tracks else "",
            events=frozenset(by_event) | frozenset(rules),
            rank={sid: i for i, sid in enumerate(order)},
            readers=_index((read, sid) for sid, r in reads.items() for read in r.segments),
            by_track=_index((key, sid) for sid, r in reads.items() for key in r.tracks),
            by_attribute=_index((name, sid) for sid, r in reads.items()
                                for name in r.attributes),
            any_attribute=frozenset(sid for sid, r in reads.items() if r.any_attribute),
            clocks=clocks,
            clocks_by_track={key: tuple(c for c in clocks if c.key == key)
                             for key in {c.key for c in clocks}},
            always_timed=always_timed,
        )

    # --- entry points from the decision core ---------------------------------------------------

    def on_event(self, d: Decider, event: Event, now: datetime, pending: bool = False) -> None:
        """``pending``: ``prepare`` left every segment to be evaluated after this event."""
        name = event.name
        if name not in self.events:
            if pending:  # the event changes nothing a segment reads
                self.settle(d, now)
            return
        pending = self.prepare(d, now) or pending
        state = d.state
        props = event.properties
        scope = _EventScope(props)
        changed_attrs: set[str] = set()
        for rule, where in self.rules_by_event.get(name, ()):
            if where is not None and not where(scope):
                continue
            p = state.profile
            changes = apply_updates(rule.updates, p.attributes if p is not None else _EMPTY,
                                    props, event.timestamp)
            if changes:
                d.change_profile(changes, notify=False)
                changed_attrs.update(changes)
        changed_tracks: set[str] = set()
        # The earliest next change of the changed tracks' clocks before the event: with the
        # segment timer, it tells whether the clocks of other tracks need computing again.
        was: datetime | None = None
        # Without a timer no clock had a next change; pending, every clock is computed again.
        timer = not pending and SEGMENT_TIMER in state.timers
        for spec in self.tracks_by_event.get(name, ()):
            if spec.where is not None and not spec.where(scope):
                continue
            key = spec.key
            before = (self._next_change(self.clocks_by_track.get(key, ()), state.tracks, now)
                      if timer else None)
            if spec.record(state, props, event.timestamp, now):
                changed_tracks.add(key)
                if before is not None and (was is None or before < was):
                    was = before
        if changed_tracks:
            d.touch()
        if pending:
            self._prune(state.tracks, changed_tracks, now)
            self.settle(d, now)
        else:
            self.refresh(d, now, changed_tracks, changed_attrs, was=was)

    def on_profile(self, d: Decider, changed: set[str], at: datetime,
                   pending: bool = False) -> None:
        """After attributes changed; ``pending`` as for ``on_event``."""
        if pending or (changed and self.order and self.prepare(d, at)):
            self.settle(d, at)
        elif changed and self.order:
            self.refresh(d, at, set(), changed)

    def on_timer(self, d: Decider, at: datetime) -> None:
        if not self.sync(d, at):
            self.refresh(d, at, set(), set(), timed=True)

    def sync(self, d: Decider, at: datetime) -> bool:
        """Evaluate every segment if the record was last evaluated against other definitions
        (or never); whether it did."""
        if not self.prepare(d, at):
            return False
        self.settle(d, at)
        return True

    def prepare(self, d: Decider, at: datetime) -> bool:
        """The first half of ``sync``: if the record was last evaluated against other
        definitions (or never), bring its tracks to these and return True; ``settle`` must then
        evaluate every segment, once the input being decided at ``at`` is applied."""
        state = d.state
        if not self.basis and state._rare is None:
            return False  # no segment defined, and a record with none (nor tracks) to drop
        if state.marks and MERGED_AWAY in state.marks:
            return False  # no one's (``MERGED_AWAY``): in no segment, evaluated for nothing
        if state.segments_basis == self.basis or (
            not self.basis and not state.segments and not state.tracks
            and state.segments_basis is None
        ):
            return False
        state.segments_basis = self.basis or None
        for key in [k for k in state.tracks if k not in self.tracks]:
            del state.tracks[key]  # no condition reads it any more
        for spec in self.tracks.values():
            if spec.from_start and spec.key not in state.tracks:
                state.own_tracks()[spec.key] = _start(state, at)
        d.touch()
        return True

    def settle(self, d: Decider, at: datetime) -> None:
        """The second half of ``sync``: evaluate every segment at ``at`` and follow the
        changes. Called after the input, so one input changes a membership once, on the
        state it leaves (a new customer's first event or profile never enters a segment it
        leaves at once)."""
        state = d.state
        gone = [sid for sid in state.segments if sid not in self.compiled]
        changes = [(sid, "exit") for sid in sorted(gone)]
        for sid in gone:
            del state.segments[sid]
            _log(d, sid, EXITED, at)
        changes += self._evaluate(d, at, set(self.order))
        self._arm(d, self.next_change(state, at))
        self._dispatch(d, changes, at)

    # --- evaluation ----------------------------------------------------------------------------

    def refresh(self, d: Decider, at: datetime, tracks: set[str], attributes: set[str], *,
                timed: bool = False, was: datetime | None = None) -> None:
        """Evaluate again the segments that read what changed (at the segment timer: those
        whose time-relative input changes at ``at``), then follow the changes.

        ``was`` is the earliest instant the clocks of ``tracks`` would have changed before they
        did (None: never). The segment timer is always the earliest change of every clock, and
        a clock's next change stays put until it comes or its track changes: so the clocks of
        other tracks need computing again only when the timer was one of the changed ones."""
        if not self.order:
            return
        wanted: set[str] = set()
        by_track = self.by_track
        for key in tracks:
            read = by_track.get(key)
            if read:
                wanted |= read
        if attributes:
            wanted |= self.any_attribute
            by_attribute = self.by_attribute
            for name in attributes:
                read = by_attribute.get(name)
                if read:
                    wanted |= read
        state = d.state
        state_tracks = state.tracks
        self._prune(state_tracks, tracks, at)
        timed_state = self._timed(d, at, wanted) if timed else None
        changes = self._evaluate(d, at, wanted) if wanted else []
        if timed_state is not None:
            self._arm(d, self._wake_after(*timed_state, state_tracks, at))
        elif tracks:
            timer = state.timers.get(SEGMENT_TIMER)
            if timer is not None and (timer <= at or (was is not None and was <= timer)):
                self._arm(d, self.next_change(state, at))
            else:  # the other clocks' earliest change is the timer (None: none has one)
                clocks_by_track = self.clocks_by_track
                for key in tracks:
                    t = self._next_change(clocks_by_track.get(key, ()), state_tracks, at)
                    if t is not None and (timer is None or t < timer):
                        timer = t
                self._arm(d, timer)
        self._dispatch(d, changes, at)

    def _prune(self, state_tracks: Mapping[str, Track], keys: Iterable[str],
               at: datetime) -> None:
        """Drop from the tracks ``keys`` (changed by an event) what left their windows."""
        specs = self.tracks
        for key in keys:
            track = state_tracks.get(key)
            if track is not None:
                specs[key].prune(track, at)

    def _timed(self, d: Decider, at: datetime, wanted: set[str]
               ) -> tuple[list[datetime | None], set[str]]:
        """At the segment timer: add to ``wanted`` the segments reading a clock that changes
        at ``at`` (and those always evaluated there), prune every track; return each clock's
        next change as of just before ``at``, and the tracks pruning changed.

        Between inputs a clock's truth holds until its next change, and the timer is the
        earliest of them: a clock not changing at ``at`` keeps the truth its segments were
        evaluated with, and its next change."""
        just_before = at - _MICROSECOND  # instants are whole microseconds
        tracks = d.state.tracks
        wanted |= self.always_timed
        times = [c.next_change(tracks.get(c.key), just_before) for c in self.clocks]
        for clock, t in zip(self.clocks, times, strict=True):
            if t is not None and t <= at:
                wanted |= clock.segments
        pruned: set[str] = set()
        specs = self.tracks
        for key, track in tracks.items():
            spec = specs.get(key)
            if spec is not None and spec.prune(track, at):
                pruned.add(key)
        if pruned:
            d.touch()
        return times, pruned

    def _wake_after(self, times: list[datetime | None], pruned: set[str],
                    tracks: Mapping[str, Track], at: datetime) -> datetime | None:
        """The segment timer after a timed refresh: the clocks that changed at ``at`` or whose
        track was pruned are computed again, the others keep their next change."""
        best: datetime | None = None
        for clock, before in zip(self.clocks, times, strict=True):
            t = (clock.next_change(tracks.get(clock.key), at)
                 if (before is not None and before <= at) or clock.key in pruned else before)
            if t is not None and (best is None or t < best):
                best = t
        return best

    def _evaluate(self, d: Decider, at: datetime, wanted: set[str]) -> list[tuple[str, str]]:
        """Evaluate ``wanted`` segments (and those reading one that changed) at ``at``, in
        dependency order; store and log each change; return them in that order."""
        state = d.state
        members = state.segments
        compiled, order, rank, readers = self.compiled, self.order, self.rank, self.readers
        previous, d.now = d.now, at
        try:
            # One scope for the whole pass: ``in_segment`` evaluates the segment it names on the
            # record (it does not read the stored memberships), so its cache holds throughout.
            scope = d.scope(_EMPTY, _EMPTY)
            out: list[tuple[str, str]] = []
            # A sorted list is a heap; every segment (a new record, new definitions) is already
            # in order.
            queue = (list(range(len(order))) if len(wanted) == len(order)
                     else sorted(rank[sid] for sid in wanted))
            queued = set(queue) if readers else None
            while queue:
                sid = order[heapq.heappop(queue)]
                now_in = bool(compiled[sid](scope))
                if now_in == (sid in members):
                    continue
                if now_in:
                    members = state.own_segments()
                    members[sid] = at
                    _log(d, sid, ENTERED, at)
                    out.append((sid, "enter"))
                else:
                    del members[sid]
                    _log(d, sid, EXITED, at)
                    out.append((sid, "exit"))
                if queued is not None:
                    for reader in readers.get(sid, ()):
                        i = rank[reader]  # after ``sid`` in ``order``
                        if i not in queued:
                            queued.add(i)
                            heapq.heappush(queue, i)
            if out:
                d.touch()
            return out
        finally:
            d.now = previous

    def next_change(self, state: CustomerState, at: datetime) -> datetime | None:
        """The earliest instant after ``at`` when a time-relative segment can change."""
        return self._next_change(self.clocks, state.tracks, at)

    @staticmethod
    def _next_change(clocks: Iterable[_Clock], tracks: Mapping[str, Track],
                     at: datetime) -> datetime | None:
        best: datetime | None = None
        for clock in clocks:
            t = clock.next_change(tracks.get(clock.key), at)
            if t is not None and (best is None or t < best):
                best = t
        return best

    @staticmethod
    def _arm(d: Decider, wake: datetime | None) -> None:
        """Set the segment timer at ``wake`` (None: no timer)."""
        timers = d.state.timers
        if timers.get(SEGMENT_TIMER) != wake:
            if wake is None:
                timers.pop(SEGMENT_TIMER, None)
            else:
                timers[SEGMENT_TIMER] = wake
            d.touch()

    def _dispatch(self, d: Decider, changes: list[tuple[str, str]], at: datetime) -> None:
        """End the enrollments whose exit criterion names a change, then start the journeys
        whose trigger does: highest priority first (ties: journey id), as one input's journeys
        are, through ``Decider.offer_entry`` (which, while an input is being decided, enters
        them with that input's other journeys)."""
        if not changes or d.cascade >= MAX_CASCADE:
            return
        d.cascade += 1
        try:
            entries: list[tuple[CompiledJourney, str]] = []
            for change in changes:
                criteria = self.exits.get(change)
                if criteria:
                    for e in sorted(d.state.enrollments, key=lambda e: (e.entered_at, e.id)):
                        names = criteria.get((e.journey_id, e.version))
                        if names and e.active and not d.goal_before_exit(e, at):
                            d.end(e, "exited", names[0], at)
                entries.extend((cj, change[0]) for cj in self.triggers.get(change, ()))
            if len(entries) > 1:
                entries.sort(key=lambda x: (-x[0].journey.priority, x[0].journey.id))
            for cj, segment in entries:
                d.offer_entry(cj, {"segment": segment}, None, at)
        finally:
            d.cascade -= 1

    def is_member(self, d: Decider, segment_id: str, at: datetime) -> bool:
        """Whether the customer is in the segment at ``at`` (evaluated, not read)."""
        test = self.compiled.get(segment_id)
        if test is None:
            return False
        previous, d.now = d.now, at
        try:
            return bool(test(d.scope(_EMPTY, _EMPTY)))
        finally:
            d.now = previous


def leave_every_segment(d: Decider, at: datetime) -> None:
    """Take the customer out of every segment they are in, logging each exit at ``at`` (in
    segment id order): done before an erasure, whose anonymous log entries would otherwise
    leave the customer a member forever. No exit criterion or trigger follows: the customer
    is going."""
    state = d.state
    if not state.segments:
        return
    for sid in sorted(state.segments):
        _log(d, sid, EXITED, at)
    state.segments = {}
    d.touch()


def take_over_segments(known: Decider, anonymous: Decider, at: datetime) -> None:
    """Move the anonymous customer's memberships into the known customer's (the earlier entry
    instant kept), logging each move at ``at``: the anonymous customer exits every segment,
    and the known one enters those they were not in. The segment sizes read from the log then
    count the person once, and each customer's log agrees with their memberships. No exit
    criterion or trigger follows: the memberships are the same person's."""
    k, a = known.state, anonymous.state
    for sid in sorted(a.segments):
        entered = a.segments[sid]
        if sid not in k.segments:
            _log(known, sid, ENTERED, at)
        if sid not in k.segments or entered < k.segments[sid]:
            k.own_segments()[sid] = entered
    leave_every_segment(anonymous, at)


def _start(state: CustomerState, at: datetime) -> Track:
    # A customer created now started being tracked at creation; one created earlier, whose
    # past is unknown, at this input.
    return Track(state.created_at if at == state.created_at else at)


def _log(d: Decider, segment_id: str, kind: ActivityKind, at: datetime) -> None:
    d.activities.append(Activity(at, d.customer_id, "", "", 0, None, kind, segment_id))

