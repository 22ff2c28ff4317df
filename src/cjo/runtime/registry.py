"""Published definitions of one generation, compiled once: conditions become closures, kinds
are looked up, events are indexed, and content templates are parsed on first use."""

from __future__ import annotations

import sys
from collections.abc import Container, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from cjo.conditions import CompiledCondition, compile_condition
from cjo.content.memo import MemoRenderer
from cjo.content.offers import CompiledOffer
from cjo.content.render import Renderer
from cjo.delivery.feedback import DELIVERY_EVENTS
from cjo.delivery.gate import NO_POLICIES, DeliveryPolicies
from cjo.limits import DEFAULT_LIMITS, Limits
from cjo.model.content import ContentItem, Variant
from cjo.model.definitions import Definitions
from cjo.model.governance import ControlGroup, JourneyPause, VersionChange
from cjo.model.journey import Journey
from cjo.runtime.kinds import StepKind, TriggerKind, step_kind, trigger_kind
from cjo.runtime.state import RecordView
from cjo.segments.membership import SegmentPlan
from cjo.validation import channels_named

__all__ = ["CompiledJourney", "CompiledStep", "Registry"]


#: Before every publish: the instant of versions whose publish instant is not recorded.
_BEGINNING = datetime.min.replace(tzinfo=UTC)


def _maybe(condition: Any) -> CompiledCondition | None:
    return compile_condition(condition) if condition is not None else None


@attrs.frozen(slots=True)
class CompiledStep:
    kind: StepKind[Any]
    step: Any
    compiled: Any


@attrs.define(slots=True)
class CompiledJourney:
    journey: Journey
    trigger: TriggerKind[Any]
    trigger_compiled: Any
    audience: CompiledCondition | None
    goal_where: CompiledCondition | None
    exit_by_event: dict[str, list[tuple[str, CompiledCondition | None]]]
    exit_conditions: list[tuple[str, CompiledCondition]]
    steps: dict[str, CompiledStep]
    # Events that matter to a customer already enrolled (waits, exits, goal).
    watched_events: frozenset[str]
    # Whether any event at all may matter to an enrolled customer (condition exits).
    any_event: bool
    # The entry-history key without an instance key, shared by every record that holds it.
    history_key: tuple[str, None]

    @classmethod
    def compile(cls, journey: Journey) -> CompiledJourney:
        exit_by_event: dict[str, list[tuple[str, CompiledCondition | None]]] = {}
        exit_conditions: list[tuple[str, CompiledCondition]] = []
        for crit in journey.exit_criteria:
            if crit.segment is not None:
                continue  # a membership change: the segment plan handles it
            if crit.event is not None:
                exit_by_event.setdefault(crit.event, []).append((crit.name, _maybe(crit.where)))
            elif crit.where is not None:
                exit_conditions.append((crit.name, compile_condition(crit.where)))
        watched = set(exit_by_event)
        if journey.goal is not None:
            watched.add(journey.goal.event)
        steps: dict[str, CompiledStep] = {}
        for step_id, step in journey.steps.items():
            kind = step_kind(step)
            steps[step_id] = CompiledStep(kind, step, kind.compile(step))
            watched.update(kind.watches(step))
        tkind = trigger_kind(journey.trigger)
        return cls(
            journey=journey,
            trigger=tkind,
            trigger_compiled=tkind.compile(journey.trigger),
            audience=_maybe(journey.audience),
            goal_where=_maybe(journey.goal.where) if journey.goal is not None else None,
            exit_by_event=exit_by_event,
            exit_conditions=exit_conditions,
            steps=steps,
            watched_events=frozenset(watched),
            any_event=bool(exit_conditions),
            history_key=(sys.intern(journey.id), None),
        )


class _EveryEvent:
    """Contains every event name: the relevant events when any event may matter."""

    def __contains__(self, name: object) -> bool:
        return True


EVERY_EVENT: Container[str] = _EveryEvent()
# Profiles may carry any locale string: the remembered variant choices are bounded.
_MAX_VARIANT_CHOICES = 10_000


@attrs.define(slots=True)
class Registry:
    """Every published journey version (compiled, but for retired ones), the latest version per
    id, segments and content, as of one definitions ``generation``. A new generation builds a
    new registry (and renderer), so republished content renders at once."""

    generation: int = 0
    journeys: dict[tuple[str, int], CompiledJourney] = attrs.field(factory=dict)
    latest: dict[str, CompiledJourney] = attrs.field(factory=dict)
    # Event name -> journeys (latest versions) whose trigger reads it, in journey id order.
    triggers_by_event: dict[str, list[CompiledJourney]] = attrs.field(factory=dict)
    # Journeys (latest versions) whose trigger keeps customer timers, by trigger kind (in the
    # order of each kind's first journey; journeys in the order below).
    armed: list[tuple[TriggerKind[Any], tuple[CompiledJourney, ...]]] = attrs.field(
        factory=list
    )
    # The instant from which ``armed`` is what is in force (the latest publish of a version of
    # a journey whose trigger keeps timers, or that replaced one): before it, ``armed_at``.
    armed_from: datetime = _BEGINNING
    # Journey id -> (publish instant, compiled version) of each of its versions, newest first,
    # for the journeys that ``armed_at`` must look back through.
    armed_history: dict[str, tuple[tuple[datetime, CompiledJourney], ...]] = attrs.field(
        factory=dict
    )
    # Profile attribute -> journeys (latest versions) whose trigger watches its changes.
    triggers_by_attribute: dict[str, list[CompiledJourney]] = attrs.field(factory=dict)
    enrolled_events: frozenset[str] = frozenset()
    any_event_when_enrolled: bool = False
    segments: dict[str, CompiledCondition] = attrs.field(factory=dict)
    plan: SegmentPlan = attrs.field(factory=SegmentPlan)
    content: dict[str, ContentItem] = attrs.field(factory=dict)
    definitions: Definitions = attrs.field(factory=Definitions)
    renderer: MemoRenderer = attrs.field(factory=lambda: MemoRenderer(Renderer()))
    control_group: ControlGroup | None = None
    # Whether a journey starts on a schedule (run_due then looks for due occurrences).
    any_schedule: bool = False
    max_concurrent: int | None = None
    # Whether any journey has an exclusive group (else arbitration has nothing to check).
    any_group: bool = False
    # Whether any journey has a priority (else timers due at one instant go by name alone).
    any_priority: bool = False
    # Journey id -> its pause in force now (``until`` None).
    paused: dict[str, JourneyPause] = attrs.field(factory=dict)
    # Journey id -> its pauses, past and present, earliest first (empty: none ever paused, and
    # wake-ups need no look-up).
    pauses: dict[str, tuple[JourneyPause, ...]] = attrs.field(factory=dict)
    # (journey id, version) -> what a newer version does to customers inside it (a retired
    # version always has one: ``_version_changes``).
    version_changes: dict[tuple[str, int], VersionChange] = attrs.field(factory=dict)
    # (journey id, version) -> the definition of a retired version (not compiled).
    retired: dict[tuple[str, int], Journey] = attrs.field(factory=dict)
    # Journey id -> (publish instant, compiled version) of each of its versions, newest first
    # (``_version_history``; absent: ``latest`` is the answer at every instant).
    newer: dict[str, tuple[tuple[datetime, CompiledJourney], ...]] = attrs.field(factory=dict)
    delivery: DeliveryPolicies = NO_POLICIES
    #: The channels the definitions name (sends and their fallbacks, caps, quiet hours).
    channels: frozenset[str] = frozenset()
    offers: dict[str, CompiledOffer] = attrs.field(factory=dict)
    #: The event names that can change anything for some customer (``may_matter``).
    relevant_events: Container[str] = DELIVERY_EVENTS
    #: The event names that matter to every customer, enrolled or not: triggers' events,
    #: segments' inputs, the delivery policies' events.
    shared_events: frozenset[str] = DELIVERY_EVENTS
    # (content id, channel, locale, variant name) -> the variant chosen (None: none fits),
    # filled as sends ask; locales come from profiles, so it is bounded (``variant_for``).
    _variants: dict[tuple[str, str, str | None, str | None], Variant | None] = attrs.field(
        factory=dict, alias="_variants"
    )

    @classmethod
    def build(
        cls, definitions: Definitions, generation: int, limits: Limits = DEFAULT_LIMITS
    ) -> Registry:
        # Retired versions are kept as definitions only: no one is on them, and they may name
        # definitions withdrawn since.
        gone = definitions.retired_versions()
        journeys: dict[tuple[str, int], CompiledJourney] = {
            (j.id, j.version): CompiledJourney.compile(j) for j in definitions.journeys
            if (j.id, j.version) not in gone
        }
        retired = {(j.id, j.version): j for j in definitions.journeys
                   if (j.id, j.version) in gone}
        latest: dict[str, CompiledJourney] = {}
        for (jid, version), cj in journeys.items():
            if jid not in latest or latest[jid].journey.version < version:
                latest[jid] = cj
        triggers: dict[str, list[CompiledJourney]] = {}
        by_attribute: dict[str, list[CompiledJourney]] = {}
        # Highest priority first, then journey id: the order in which one input's journeys are
        # considered, so arbitration between them is deterministic.
        for cj in sorted(latest.values(), key=lambda c: (-c.journey.priority, c.journey.id)):
            for attribute in dict.fromkeys(cj.trigger.watched_attributes(cj.journey.trigger)):
                by_attribute.setdefault(attribute, []).append(cj)
            trigger = cj.journey.trigger
            names: Iterable[str] = (
                *cj.trigger.entry_events(trigger), *cj.trigger.watched_events(trigger)
            )
            for name in dict.fromkeys(names):
                triggers.setdefault(name, []).append(cj)
        enrolled: set[str] = set()
        for cj in journeys.values():
            enrolled |= cj.watched_events
        segments = {s.id: compile_condition(s.condition) for s in definitions.segments}
        plan = SegmentPlan.build(definitions, segments, latest, journeys)
        any_event = any(cj.any_event for cj in journeys.values())
        shared = frozenset(triggers) | plan.events | DELIVERY_EVENTS
        history = _version_history(definitions, journeys, retired)
        armed_history = {jid: versions for jid, versions in history.items()
                         if any(_arms(cj) for _, cj in versions)}
        return cls(
            generation=generation,
            journeys=journeys,
            latest=latest,
            triggers_by_event=triggers,
            armed=_by_arming_kind(latest.values()),
            armed_from=max((h[0][0] for h in armed_history.values()), default=_BEGINNING),
            armed_history=armed_history,
            triggers_by_attribute=by_attribute,
            enrolled_events=frozenset(enrolled),
            any_event_when_enrolled=any_event,
            segments=segments,
            plan=plan,
            content={c.id: c for c in definitions.content},
            definitions=definitions,
            renderer=MemoRenderer(Renderer(limits, {b.id: b.source for b in definitions.blocks})),
            control_group=definitions.control_group,
            any_schedule=any(cj.journey.trigger.kind == "schedule" for cj in latest.values()),
            max_concurrent=definitions.max_concurrent_journeys,
            any_group=any(cj.journey.exclusive_group for cj in journeys.values()),
            any_priority=any(cj.journey.priority for cj in latest.values()),
            paused={p.journey_id: p for p in definitions.paused if p.until is None},
            pauses=_pauses_by_journey(definitions.paused),
            version_changes=_version_changes(definitions, journeys),
            retired=retired,
            newer=history,
            delivery=DeliveryPolicies.of(definitions),
            channels=frozenset(channels_named(definitions)),
            offers={o.id: CompiledOffer.compile(o) for o in definitions.offers},
            # Any event at all, when a condition exit re-checks every event of an enrolled
            # customer; else starting, feeding a trigger, ending a wait, exiting, converting,
            # a segment's input, and the delivery policies' events (they concern everyone).
            relevant_events=EVERY_EVENT if any_event else shared | enrolled,
            shared_events=shared,
        )

    def variant_for(
        self, item: ContentItem, channel: str, locale: str | None, name: str | None
    ) -> Variant | None:
        """``item.variant_for``, remembered: every send asks, and the answer depends only on
        the definitions and these four values."""
        key = (item.id, channel, locale, name)
        variants = self._variants
        try:
            return variants[key]
        except KeyError:
            if len(variants) >= _MAX_VARIANT_CHOICES:
                variants.clear()
            variant = variants[key] = item.variant_for(channel, locale, name)
            return variant

    def versions(self) -> Iterator[tuple[tuple[str, int], Journey]]:
        """Every version's definition by (journey id, version), retired ones included: what
        names the step of a message any of them sent."""
        for key, cj in self.journeys.items():
            yield key, cj.journey
        yield from self.retired.items()

    def version(self, journey_id: str, version: int) -> Journey | None:
        """The definition of version ``version`` of ``journey_id``, retired or not."""
        key = (journey_id, version)
        cj = self.journeys.get(key)
        return cj.journey if cj is not None else self.retired.get(key)

    def compiled_version(self, journey_id: str, version: int) -> CompiledJourney | None:
        """The compiled version ``version`` of ``journey_id``, a retired one compiled on
        demand and not kept (a failover or a retry of a message it wrote before it was
        retired: rare); None when these definitions do not hold it."""
        key = (journey_id, version)
        cj = self.journeys.get(key)
        if cj is None and key in self.retired:
            return CompiledJourney.compile(self.retired[key])
        return cj

    def latest_at(self, journey_id: str, at: datetime) -> CompiledJourney | None:
        """The newest version of ``journey_id`` published by ``at``: what an entry decided at
        ``at`` takes (a timer fired late, a jump in a late wake-up), as a worker on time would
        have; None before its first version was published (a worker on time found no such
        journey then). Versions without a recorded publish instant count as published from the
        start."""
        history = self.newer.get(journey_id)
        if history is None:
            return self.latest.get(journey_id)
        for published, cj in history:
            if published <= at:
                return cj
        return None

    def armed_at(
        self, at: datetime
    ) -> list[tuple[TriggerKind[Any], tuple[CompiledJourney, ...]]]:
        """``armed`` as it was at ``at``: the journeys whose trigger keeps customer timers
        among the versions then the newest of their journeys, leaving out the journeys not yet
        published then. What a worker on time arms at a customer's wake-up, however late the
        wake-up fires."""
        if at >= self.armed_from:
            return self.armed
        then: list[CompiledJourney] = []
        for versions in self.armed_history.values():
            for published, cj in versions:
                if published <= at:
                    then.append(cj)
                    break
        then += [cj for jid, cj in self.latest.items() if jid not in self.armed_history]
        return _by_arming_kind(then)

    def pause_at(self, journey_id: str, at: datetime) -> JourneyPause | None:
        """The pause of ``journey_id`` in force at ``at``, if any (a few kept per journey)."""
        for pause in self.pauses.get(journey_id, ()):
            if pause.covers(at):
                return pause
        return None

    def may_matter(self, event_name: str) -> bool:
        """Whether an event can change anything for some customer: start a journey, feed a
        trigger, end a wait, exit or convert, feed a segment or a delivery policy."""
        return event_name in self.relevant_events

    def matters_to(
        self, state: RecordView | None, event_name: str, now: datetime | None = None
    ) -> bool:
        """Whether an event can change anything for this customer (their committed record at
        ``now``): a look-up, so that irrelevant events never open a transaction. Without
        ``now`` the caller has fired the customer's due wake-ups already."""
        if event_name in self.shared_events:
            return True
        if state is None:
            return False
        wake_at = state.wake_at if now is not None else None
        if now is not None and wake_at is not None and wake_at <= now:
            # A due wake-up fires before the event is judged (it may enrol the customer in a
            # journey that reads this event): the record as committed cannot tell.
            return True
        journeys = self.journeys
        changes = self.version_changes
        for e in state.enrollments:
            key = (e.journey_id, e.version)
            if changes and key in changes:
                return True  # the version it moves to may read the event
            cj = journeys.get(key)
            if cj is None:
                # A version published since these definitions were read (by another process):
                # the transaction finds out whether the event matters to it.
                return True
            if cj.any_event or event_name in cj.watched_events:
                return True
        return False


def _publish_instants(definitions: Definitions) -> dict[tuple[str, int], datetime]:
    """(journey id, version) -> the instant it was published, where recorded."""
    return {(p.journey_id, p.version): p.at for p in definitions.published}


def _newest_first(
    journeys: Mapping[tuple[str, int], CompiledJourney],
) -> dict[str, list[CompiledJourney]]:
    """Each journey id's compiled versions, newest first."""
    by_id: dict[str, list[CompiledJourney]] = {}
    for cj in journeys.values():
        by_id.setdefault(cj.journey.id, []).append(cj)
    for versions in by_id.values():
        versions.sort(key=lambda cj: -cj.journey.version)
    return by_id


def _version_history(
    definitions: Definitions, journeys: Mapping[tuple[str, int], CompiledJourney],
    retired: Mapping[tuple[str, int], Journey],
) -> dict[str, tuple[tuple[datetime, CompiledJourney], ...]]:
    """For each journey whose latest version has a recorded publish instant: every version
    with its publish instant (from the beginning of time when none is recorded, as for
    definitions stored before instants were), newest first (``Registry.latest_at``,
    ``Registry.armed_at``). A journey published once before instants were recorded is left
    out: its one version is the answer at every instant. A retired version's span goes to the
    oldest version published after it that is not retired: a late entry never lands on a
    version no one may be on."""
    published = _publish_instants(definitions)
    out: dict[str, tuple[tuple[datetime, CompiledJourney], ...]] = {}
    retired_by_id: dict[str, list[int]] = {}
    for jid, version in retired:
        retired_by_id.setdefault(jid, []).append(version)
    for jid, versions in _newest_first(journeys).items():
        spans = sorted(
            [(cj.journey.version, cj) for cj in versions]
            + [(v, None) for v in retired_by_id.get(jid, ())],
            key=lambda pair: -pair[0],
        )
        timed: list[tuple[datetime, CompiledJourney]] = []
        newer = versions[0]  # retired versions are never the latest (validation)
        for version, cj in spans:
            newer = cj or newer
            timed.append((published.get((jid, version), _BEGINNING), newer))
        if timed[0][0] > _BEGINNING:
            out[jid] = tuple(timed)
    return out


def _version_changes(
    definitions: Definitions, journeys: Mapping[tuple[str, int], CompiledJourney]
) -> dict[tuple[str, int], VersionChange]:
    """(journey id, version) -> what a newer version does to customers inside it. A record
    found on a retired version (restored from a backup, or entered by a process that had not
    yet read the newer version) goes by its version's migration when it leads to a version
    these definitions compile, else ends ``ejected``, at the retirement instant."""
    changes = {(c.journey_id, c.from_version): c
               for c in definitions.version_changes if c.mode != "drain"}
    latest: dict[str, int] = {}
    for jid, version in journeys:
        latest[jid] = max(version, latest.get(jid, version))
    for r in definitions.retired:
        key = (r.journey_id, r.version)
        change = changes.get(key)
        if change is not None and (
            change.mode == "eject" or (r.journey_id, change.to_version) in journeys
        ):
            continue
        changes[key] = VersionChange(
            r.journey_id, r.version, latest.get(r.journey_id, r.version), "eject",
            reason=f"version {r.version} retired", at=r.at,
        )
    return changes


def _arms(cj: CompiledJourney) -> bool:
    """Whether ``cj``'s trigger keeps customer timers (``TriggerKind.arm``)."""
    kind = type(cj.trigger)
    return kind.arm is not TriggerKind.arm or kind.arm_all is not TriggerKind.arm_all


def _by_arming_kind(
    latest: Iterable[CompiledJourney],
) -> list[tuple[TriggerKind[Any], tuple[CompiledJourney, ...]]]:
    """The journeys of ``latest`` whose trigger keeps customer timers, by trigger kind (in the
    order of each kind's first journey), highest priority first, then journey id."""
    by_kind: dict[type[TriggerKind[Any]], list[CompiledJourney]] = {}
    for cj in sorted(latest, key=lambda c: (-c.journey.priority, c.journey.id)):
        if _arms(cj):
            by_kind.setdefault(type(cj.trigger), []).append(cj)
    return [(cjs[0].trigger, tuple(cjs)) for cjs in by_kind.values()]


def _pauses_by_journey(pauses: Iterable[JourneyPause]) -> dict[str, tuple[JourneyPause, ...]]:
    by_journey: dict[str, list[JourneyPause]] = {}
    for pause in pauses:
        by_journey.setdefault(pause.journey_id, []).append(pause)
    return {jid: tuple(sorted(ps, key=lambda p: p.since)) for jid, ps in by_journey.items()}
