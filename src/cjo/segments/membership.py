"""Real-time segment membership: what each published segment reads, which segments an input
can change, when time alone can change one, and what follows a change.

A ``SegmentPlan`` is compiled once per definitions generation (``Registry.plan``). The decision
core calls it in the customer's transaction:

- ``on_event``: profile rules update attributes, the event is counted into the tracks that
  read it, and the segments that read a changed track or attribute are evaluated again, all
  before journeys react to the event;
- ``on_profile``: after attributes change (``identify``, an UpdateProfile step);
- ``on_timer``: at the one customer timer (``SEGMENT_TIMER``) set to the earliest instant a
  time-relative condition can change (an event leaving a window, a quiet spell reaching its
  length), the time-relative segments are evaluated again at exactly that instant;
- ``sync``: when the definitions changed since the record was last evaluated (or the record is
  new), every segment is evaluated again.

Each change is stored in ``CustomerState.segments``, logged as a ``segment_entered`` or
``segment_exited`` activity (detail: the segment id) at its instant, ends enrollments whose exit
criterion names it, and starts journeys whose ``SegmentTrigger`` names it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from graphlib import TopologicalSorter
from typing import TYPE_CHECKING, Any, Final

import attrs

from cjo.conditions import (
    Compare,
    CompareFields,
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
from cjo.runtime.state import Activity, CustomerState, Track
from cjo.segments.history import (
    Aggregate,
    FirstPerformed,
    Inactive,
    LastPerformed,
    ListHas,
    Performed,
    TextMatch,
    next_change,
)
from cjo.segments.rules import ProfileRule, apply_updates
from cjo.segments.tracking import TrackSpec, plan_tracks, stream_key

if TYPE_CHECKING:
    from cjo.model.events import Event
    from cjo.runtime.core import Decider
    from cjo.runtime.registry import CompiledJourney

__all__ = ["ENTERED", "EXITED", "SEGMENT_TIMER", "SegmentPlan"]

#: The customer timer of time-relative segments.
SEGMENT_TIMER: Final = "segments"
ENTERED: Final = "segment_entered"
EXITED: Final = "segment_exited"
#: How deeply membership changes may cascade within one input (a journey started by a change
#: updates the profile, which changes another segment, ...): past it, changes are still
#: recorded but start and end no journeys, so two journeys cannot feed each other forever.
MAX_CASCADE: Final = 8

_EMPTY: Mapping[str, Any] = {}
_TIMED: Final = (Performed, Aggregate, FirstPerformed, LastPerformed, Inactive)


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


def _reads(condition: Condition) -> _Reads:
    tracks: set[str] = set()
    names: set[str] = set()
    any_attribute = False
    segments: set[str] = set()
    timed: list[tuple[Condition, str]] = []
    for node in walk(condition):
        refs: tuple[Ref, ...] = ()
        if isinstance(node, Compare | Exists | TextMatch | ListHas):
            refs = (node.ref,)
        elif isinstance(node, CompareFields):
            refs = (node.left, node.right)
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
                  tuple(timed))


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
        return cls(
            tracks=tracks, tracks_by_event=by_event, rules_by_event=rules, order=order,
            compiled=dict(compiled), reads=reads, triggers=triggers, exits=exits,
            basis=_digest(definitions, tracks) if reads or tracks else "",
            events=frozenset(by_event) | frozenset(rules),
        )

    # --- entry points from the decision core ---------------------------------------------------

    def on_event(self, d: Decider, event: Event, now: datetime) -> None:
        name = event.name
        if name not in self.events:
            return
        self.sync(d, now)
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
        for spec in self.tracks_by_event.get(name, ()):
            if (spec.where is None or spec.where(scope)) and spec.record(
                state.tracks, props, event.timestamp, now
            ):
                changed_tracks.add(spec.key)
        if changed_tracks:
            d.touch()
        self.refresh(d, now, changed_tracks, changed_attrs)

    def on_profile(self, d: Decider, changed: set[str], at: datetime) -> None:
        if changed and self.order:
            self.sync(d, at)
            self.refresh(d, at, set(), changed)

    def on_timer(self, d: Decider, at: datetime) -> None:
        if not self.sync(d, at):
            self.refresh(d, at, set(), set(), timed=True)

    def sync(self, d: Decider, at: datetime) -> bool:
        """Evaluate every segment if the record was last evaluated against other definitions
        (or never); whether it did."""
        state = d.state
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
                state.tracks[spec.key] = _start(state, at)
        d.touch()
        gone = [sid for sid in state.segments if sid not in self.compiled]
        changes = [(sid, "exit") for sid in sorted(gone)]
        for sid in gone:
            del state.segments[sid]
            _log(d, sid, EXITED, at)
        changes += self._evaluate(d, at, set(self.order))
        self._arm(d, at)
        self._dispatch(d, changes, at)
        return True

    # --- evaluation ----------------------------------------------------------------------------

    def refresh(self, d: Decider, at: datetime, tracks: set[str], attributes: set[str], *,
                timed: bool = False) -> None:
        """Evaluate again the segments that read what changed, then follow the changes."""
        if not self.order:
            return
        wanted: set[str] = set()
        for sid, r in self.reads.items():
            if (
                (timed and r.timed)
                or (tracks and not tracks.isdisjoint(r.tracks))
                or (attributes and (r.any_attribute or not attributes.isdisjoint(r.attributes)))
            ):
                wanted.add(sid)
        for spec_key in tracks:
            track = d.state.tracks.get(spec_key)
            if track is not None:
                self.tracks[spec_key].prune(track, at)
        if timed:
            for key, track in d.state.tracks.items():
                spec = self.tracks.get(key)
                if spec is not None and spec.prune(track, at):
                    d.touch()
        changes = self._evaluate(d, at, wanted) if wanted else []
        if wanted or tracks or timed:
            self._arm(d, at)
        self._dispatch(d, changes, at)

    def _evaluate(self, d: Decider, at: datetime, wanted: set[str]) -> list[tuple[str, str]]:
        """Evaluate ``wanted`` segments (and those reading one that changed) at ``at``, in
        dependency order; store and log each change; return them in that order."""
        state = d.state
        previous, d.now = d.now, at
        try:
            scope = d.scope(_EMPTY, _EMPTY)
            changed: set[str] = set()
            out: list[tuple[str, str]] = []
            for sid in self.order:
                if sid not in wanted and changed.isdisjoint(self.reads[sid].segments):
                    continue
                now_in = bool(self.compiled[sid](scope))
                if now_in == (sid in state.segments):
                    continue
                changed.add(sid)
                if now_in:
                    state.segments[sid] = at
                    _log(d, sid, ENTERED, at)
                    out.append((sid, "enter"))
                else:
                    del state.segments[sid]
                    _log(d, sid, EXITED, at)
                    out.append((sid, "exit"))
                scope = d.scope(_EMPTY, _EMPTY)  # a fresh cache: a membership changed
            if out:
                d.touch()
            return out
        finally:
            d.now = previous

    def next_change(self, state: CustomerState, at: datetime) -> datetime | None:
        """The earliest instant after ``at`` when a time-relative segment can change."""
        best: datetime | None = None
        tracks = state.tracks
        for r in self.reads.values():
            for node, key in r.timed:
                t = next_change(node, tracks.get(key), at)
                if t is not None and (best is None or t < best):
                    best = t
        return best

    def _arm(self, d: Decider, at: datetime) -> None:
        timers = d.state.timers
        wake = self.next_change(d.state, at)
        if timers.get(SEGMENT_TIMER) != wake:
            if wake is None:
                timers.pop(SEGMENT_TIMER, None)
            else:
                timers[SEGMENT_TIMER] = wake
            d.touch()

    def _dispatch(self, d: Decider, changes: list[tuple[str, str]], at: datetime) -> None:
        """End the enrollments whose exit criterion names a change, then start the journeys
        whose trigger does."""
        if not changes or d.cascade >= MAX_CASCADE:
            return
        d.cascade += 1
        try:
            for change in changes:
                criteria = self.exits.get(change)
                if criteria:
                    for e in sorted(d.state.enrollments, key=lambda e: (e.entered_at, e.id)):
                        names = criteria.get((e.journey_id, e.version))
                        if names and e.active:
                            d.end(e, "exited", names[0], at)
                for cj in self.triggers.get(change, ()):
                    d.consider_entry(cj, {"segment": change[0]}, None, at)
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


def _start(state: CustomerState, at: datetime) -> Track:
    # A customer created now started being tracked at creation; one created earlier, whose
    # past is unknown, at this input.
    return Track(state.created_at if at == state.created_at else at)


def _log(d: Decider, segment_id: str, kind: str, at: datetime) -> None:
    d.activities.append(Activity(at, d.customer_id, "", "", 0, None, kind, segment_id))

