"""The decision core: what happens to one customer when an input arrives or time passes.

A ``Decider`` is a pure function in object form: given the compiled definitions of one
generation (``Registry``), the customer's record (``CustomerState``) and ``now``, each entry
point changes the record in place and accumulates the transaction's effects (outbox messages and
activity-log entries) and an ``Outcome`` for the caller. It reads nothing else, does no I/O,
never reads the clock (but for the renderer's ``Limits.render_timeout`` backstop, which fails a
render that runs too long), and calls nothing back in storage. Everything else here is
deterministic.

Step and trigger behaviour lives in ``cjo.runtime.kinds``; this module holds what every kind
shares: entering (audience, re-entry, instance keys), stepping, ending, exits, goals, sends.
"""

from __future__ import annotations

from bisect import insort_right
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import attrs

from cjo.channels.base import Message
from cjo.content.render import NOW_KEY, ZONE_KEY
from cjo.delivery.caps import give_back
from cjo.delivery.consent import readdressed
from cjo.delivery.feedback import DELIVERY_EVENTS, apply_delivery_event
from cjo.delivery.gate import gate
from cjo.delivery.gate import record as record_send
from cjo.errors import RenderError
from cjo.limits import MAX_ID_LENGTH
from cjo.model.content import ContentItem, Variant
from cjo.model.events import Event, Profile, ProfileUpdate
from cjo.model.governance import CONTROL_DETAIL, VersionChange, in_control_group
from cjo.model.journey import ReentryPolicy
from cjo.model.offers import Offer
from cjo.model.steps import Send
from cjo.outcome import Ended, Entered, GoalReached, NotEntered, OutcomeBuilder, StepRun
from cjo.runtime.arbitration import kept_out
from cjo.runtime.ids import enrollment_id_for, failover_key, message_key
from cjo.runtime.kinds import Halt, split_fraction
from cjo.runtime.migration import carry_sends
from cjo.runtime.options import DEFAULT_OPTIONS, DEFAULT_RECIPIENT_ATTRIBUTES, DecisionOptions
from cjo.runtime.registry import CompiledJourney, Registry
from cjo.runtime.sending import (
    choose_content,
    count_offer,
    log_offer,
    render_failed,
    render_fields,
    send_failed,
)
from cjo.runtime.state import (
    ACTIVE,
    HELD,
    NO_ENTRIES,
    Activity,
    ActivityKind,
    CustomerState,
    EndedEnrollment,
    EndStatus,
    Enrollment,
    EntryHistory,
    merge_attributes,
    own_values,
)
from cjo.segments.membership import MERGED_AWAY, SEGMENT_TIMER
from cjo.timezones import customer_zone

__all__ = [
    "DEFAULT_RECIPIENT_ATTRIBUTES",
    "SENT_BEFORE_MERGE",
    "Decider",
    "entries_kept",
    "failover_channels",
    "new_state",
    "reentry_allows",
    "split_fraction",
]

#: Why a Send is skipped whose pass the anonymous customer's enrollment made before an identity
#: merge ended it (``Enrollment.merged_passes``): the message went out then.
SENT_BEFORE_MERGE = "sent before a merge"

_EMPTY: Mapping[str, Any] = {}
_NO_MESSAGES: Mapping[str, Message] = {}
_TRIGGER_TIMER = "trigger:"
_NO_HISTORY = EntryHistory.of(0)
# The re-entry rules whose keyed histories outlive their instances for a while (a guard does
# too): each keyed entry drops the ones spent since. After_exit drops them as they end, never
# keeps them for good, so neither needs the scan.
_TIMED_MODES = frozenset({"after_cooldown", "at_most"})
# Sorts before any instant: what happens at an instant before everything else due then.
_FIRST = datetime.min.replace(tzinfo=UTC)



def new_state(customer_id: str, now: datetime) -> CustomerState:
    """The record of a customer seen for the first time at ``now``."""
    return CustomerState(customer_id, now)


class _Scope:
    """What conditions read; segment memberships are computed on demand and cached.

    ``now`` is the instant being decided and ``entered_at`` the enrollment's entry (None where
    there is no enrollment); ``zone`` is the customer's time zone, for dates without one.
    History conditions read ``record`` (its tracks) at ``now``."""

    __slots__ = (
        "_decider", "_enrollment", "_seg_cache", "_segments", "context", "entered_at", "event",
        "now", "profile", "record",
    )

    def __init__(
        self,
        profile: Mapping[str, Any],
        event: Mapping[str, Any],
        context: Mapping[str, Any],
        segments: Mapping[str, Any],
        now: datetime | None = None,
        enrollment: Enrollment | None = None,
        decider: Decider | None = None,
        record: CustomerState | None = None,
    ) -> None:
        self.profile = profile
        self.event = event
        self.context = context
        self._segments = segments
        self._seg_cache: dict[str, bool] | None = None
        self.now = now
        self.entered_at = enrollment.entered_at if enrollment is not None else None
        self._enrollment = enrollment
        self._decider = decider
        self.record = record

    @property
    def zone(self) -> ZoneInfo:
        d = self._decider
        if d is None:
            return customer_zone(None)
        e = self._enrollment
        return d.zone(d.registry.journeys.get((e.journey_id, e.version)) if e else None)

    def in_segment(self, segment_id: str) -> bool:
        cache = self._seg_cache
        if cache is None:
            cache = self._seg_cache = {}
        hit = cache.get(segment_id)
        if hit is None:
            test = self._segments.get(segment_id)
            # Segments read the profile only: evaluate them on a profile-only scope.
            profile_only = _Scope(self.profile, _EMPTY, _EMPTY, self._segments, self.now,
                                  None, self._decider, self.record)
            hit = bool(test(profile_only)) if test else False
            cache[segment_id] = hit
        return hit


class Decider:
    """Decides for one customer. ``state`` is changed in place; ``dirty`` says whether it must
    be written back; ``messages`` and ``activities`` are the transaction's effects."""

    __slots__ = (
        "activities",
        "cascade",
        "catching_up",
        "caught_up_messages",
        "customer_id",
        "deciding",
        "dirty",
        "entered_now",
        "gathered",
        "gathering",
        "jumps",
        "keep_ended",
        "limits",
        "messages",
        "now",
        "options",
        "outcome",
        "passed",
        "pending_changes",
        "recipient_attributes",
        "registry",
        "render",
        "sent",
        "skipping",
        "state",
        "waiting",
    )

    def __init__(
        self,
        registry: Registry,
        state: CustomerState,
        options: DecisionOptions = DEFAULT_OPTIONS,
        *,
        outcome: OutcomeBuilder | None = None,
    ) -> None:
        self.registry = registry
        self.customer_id = state.customer_id
        self.options = options
        # Copied out of options: read on hot paths.
        self.limits = options.limits
        self.render = options.render
        self.keep_ended = options.keep_ended
        self.recipient_attributes: Sequence[str] = options.recipient_attributes
        self.catching_up = False
        self.caught_up_messages = 0
        # The journey resumed under the ``skip`` rule whose held wake-up is running: its sends
        # are skipped (``paused``); a journey it jumps into was not paused, and sends.
        self.skipping: str | None = None
        # Journeys entered for the input being decided: arbitration counts them even when
        # they ended at once, so one input never lets two journeys of a group in.
        self.entered_now: tuple[CompiledJourney, ...] = ()
        # While an event or a profile change is given to the enrollments and the triggers,
        # the entries offered (by triggers, by jumps) are gathered (None until the first), then
        # considered highest priority first, whatever offered them (``offer_entry``); those
        # still to be considered are ``waiting`` meanwhile.
        self.gathering = False
        self.gathered: list[_Offer] | None = None
        # The event whose segment changes are being applied (``goal_before_exit``).
        self.deciding: Event | None = None
        self.waiting: list[_Offer] | None = None
        self.jumps = 0  # journeys entered by Jump steps for the input being decided
        self.cascade = 0  # how deeply segment changes cascade (see cjo.segments.membership)
        # The outbox messages the feedback events being decided name, or the failovers of a
        # failed message already written (``fail_over``), by idempotency key: the engine reads
        # them beforehand (``cjo.delivery.feedback.sent_messages``, ``Engine``).
        self.sent: Mapping[str, Message] = _NO_MESSAGES
        self.state = state
        self.dirty = state.revision == 0  # a new record is always written
        # The shared empty list until the first send (``add_message``): most decisions send
        # nothing.
        self.messages: list[Message] = NO_ENTRIES
        self.activities: list[Activity] = []
        # The instant being decided: what conditions read as now().
        self.now: datetime | None = None
        # Calendar waits that let an enrollment through at an instant, in this decision: one
        # reached again at that same instant (a daily loop) waits for the next occurrence.
        # (None until the first: most deciders never need it, and each container a decider
        # makes lives until its transaction commits, which counts towards the next young
        # collection.)
        self.passed: set[tuple[str, str, datetime]] | None = None
        # Profile attribute changes (name, old, new) not yet shown to attribute triggers (None
        # while there is none, as ``passed``).
        self.pending_changes: list[tuple[str, Any, Any]] | None = None
        # Deciders of one call may share one builder: what they do is reported together.
        self.outcome = outcome if outcome is not None else OutcomeBuilder()

    def add_message(self, message: Message) -> None:
        """A message for the outbox (and the outcome)."""
        messages = self.messages
        if messages is NO_ENTRIES:
            messages = self.messages = []
        messages.append(message)
        self.outcome.messages.append(message)

    @property
    def profile(self) -> Profile:
        p = self.state.profile
        return p if p is not None else Profile(self.state.customer_id)

    def touch(self) -> None:
        self.dirty = True

    # --- entry points ------------------------------------------------------------------------

    def catch_up(self, now: datetime, *, settle: bool = True, worker: bool = False) -> bool:
        """Fire every wake-up of this customer due by ``now``, earliest first: enrollment waits,
        timeouts and lifetimes, customer timers, the releases of pauses that ended, and the
        version changes of newer publishes. Each happens at its own instant, so a late worker
        still times the following steps from the schedule, and the outcome does not depend on
        when the worker came.

        The timers of triggers that keep them (an inactivity trigger published after the
        customer was created) are armed at the first wake-up fired (at its instant: a worker
        on time opens a transaction then), and at ``now`` for the input that follows, unless
        ``worker`` says none does (a worker's ``run_due``: it arms at the wake-ups only, as a
        worker on time would).

        A record evaluated against other segment definitions (or a new one) then has every
        segment evaluated; with ``settle`` False, when an input follows at ``now``, that is
        left to the input (returns True), so it judges the state the input leaves."""
        self.now = now
        registry = self.registry
        state = self.state
        # A customer with nothing scheduled has nothing to fire, release or change.
        if state.enrollments or state.timers:
            self._fire_all_due(now)
        if not worker and registry.armed:
            self._arm_for_input(now)
        if settle:
            registry.plan.sync(self, now)
            return False
        # An input follows: a record a merge emptied is somebody's again (its segments are
        # evaluated with the input, as a new customer's are).
        if state.marks and MERGED_AWAY in state.marks:
            del state.marks[MERGED_AWAY]
            self.touch()
        return registry.plan.prepare(self, now)

    def _arm_for_input(self, now: datetime) -> None:
        """Arm, at ``now``, the instant of an input, the timers of the triggers that keep them
        (after ``catch_up(now, worker=True)``); one already past (its basis long gone) fires
        at once."""
        self._arm(now)
        timers = self.state.timers
        if timers and min(timers.values()) <= now:
            self._fire_all_due(now)

    def _arm(self, at: datetime) -> None:
        """Arm the timers of the triggers in force at ``at`` (``Registry.armed_at``)."""
        for kind, armed in self.registry.armed_at(at):
            kind.arm_all(self, armed, at)

    def _fire_all_due(self, now: datetime) -> None:
        self.catching_up, self.caught_up_messages = True, 0
        try:
            self._fire_due(now, self.registry.journeys, self.state)
        finally:
            self.catching_up = False
            self.now = now

    def _fire_due(
        self, now: datetime, journeys: Mapping[tuple[str, int], CompiledJourney],
        state: CustomerState,
    ) -> None:
        # None unless some publish moves or ends running customers: most runs have none.
        changes = self.registry.version_changes or None
        # Whether the catch-up limit counts each instant's sends apart (see DecisionOptions).
        per_instant = self.options.worker_on_time
        last: datetime | None = None
        # Triggers that keep timers are armed at the customer's first wake-up, at its own
        # instant, as a worker on time arms them in the transaction it opens then, however
        # late this worker is (``armed_to``: the instant they were armed at, None: not yet);
        # again at a later wake-up only for journeys published since.
        registry = self.registry
        armed_from = (
            registry.armed_from if registry.armed or registry.armed_history else None
        )
        armed_to: datetime | None = None
        while True:
            best: tuple[datetime, datetime, int, str] | None = None
            target: Enrollment | str | None = None
            for e in state.enrollments:
                w = e.wake_at
                if e.held_at is not None:  # held by a pause: due again when it ended
                    released = self._released_at(e, now)
                    if released is not None and (w is None or released < w):
                        w = released
                # An enrollment whose journey version this engine does not know is left as it
                # is, wake-up included, until a process that knows it comes along.
                if w is not None and w <= now and (e.journey_id, e.version) in journeys:
                    order = (w, e.step_entered_at or e.entered_at, 0, e.id)
                    if best is None or order < best:
                        best, target = order, e
                if changes is not None:
                    at = self._change_at(e, changes)
                    # A change first among what happens at its instant: the wake-ups due
                    # then run on the new version.
                    if at is not None and at <= now and (
                        best is None or (at, _FIRST, -1, e.id) < best
                    ):
                        best, target = (at, _FIRST, -1, e.id), e
            for name, w in state.timers.items():
                if w <= now:
                    order = (w, w, 1, self._timer_rank(name))
                    if best is None or order < best:
                        best, target = order, name
            if target is None or best is None:
                return
            at = best[0]
            if armed_from is not None and best[2] >= 0 and (
                armed_to is None or (armed_to < armed_from and armed_to < at)
            ):
                # A wake-up (a change of version is not one: it happens at the customer's
                # next transaction, timed at the publish instant).
                self._arm(at)
                armed_to = at
            if per_instant and at != last:
                self.caught_up_messages, last = 0, at
            self.now = at
            # Each wake-up is an input of its own, as a worker on time decides it: what an
            # earlier one of this catch-up entered does not count against its entries.
            self.entered_now = ()
            self.jumps = 0
            if isinstance(target, str):
                self._fire_timer(target)
            elif best[2] < 0:
                self._change_version(target, at)
            elif target.held_at is not None and (
                target.expires_at is None or at < target.expires_at
            ):
                self._release(target, at)
            else:
                self._wake(target)
            self.attribute_changes(at)

    def on_event(self, event: Event, now: datetime, *, caught_up: bool = False) -> None:
        """Decide ``event`` at ``now``, after catching up, unless the caller says it just did
        (``catch_up(now, worker=True)`` and nothing else since: catching up again would find
        nothing)."""
        # Segments left to this event (``catch_up``) are evaluated once it is applied.
        pending = False if caught_up else self.catch_up(now, settle=False, worker=True)
        self.entered_now = ()
        self.jumps = 0
        state = self.state
        # Only an event that matters to the customer opens a transaction (callers skip the
        # others; one let in because a wake-up was due may prove to be one once caught up):
        # only such an event is an input that arms the triggers.
        if self.registry.armed and self.registry.matters_to(state, event.name):
            self._arm_for_input(now)
        decided = state.decided_at
        stamped = event.timestamp
        # An event nothing of the customer reads is not late. Callers skip such events before
        # deciding; one let in because a wake-up was due may prove to be one once caught up.
        if decided is not None and stamped < decided and self.registry.matters_to(
            state, event.name
        ):
            self.dirty = True
            self.activities.append(Activity(
                now, self.customer_id, "", "", 0, None, "late_event",
                f"{event.name} stamped {stamped.isoformat()}, after {decided.isoformat()}",
            ))
            if self.options.late_events == "ignore":
                if event.name in DELIVERY_EVENTS:
                    # Journeys ignore it, but an opt-out, a block or a bounce is the
                    # customer's word whenever it arrives: it always reaches the record.
                    apply_delivery_event(self, event, now)
                if pending:
                    self.registry.plan.settle(self, now)
                return
        # Whether this event itself changed anything (not the wake-ups caught up before it,
        # which a worker may or may not have fired already): only then does it count as
        # decided, so the mark does not depend on worker timing.
        dirty_before, self.dirty = self.dirty, False
        self._on_event(event, now, pending)
        if self.dirty and (decided is None or stamped > decided):
            state.decided_at = stamped
        self.dirty = self.dirty or dirty_before

    def _on_event(self, event: Event, now: datetime, pending: bool = False) -> None:
        # The journeys this event qualifies the customer for (by its name, by the segments it
        # makes them enter or leave, by the attributes its profile rules change) are gathered,
        # and entered once the event has been given to the enrollments: so the event that
        # starts an enrollment is not also used by it, and the highest priority enters first.
        self.gathering = True
        try:
            # Profile rules, tracks and segment memberships first: journeys react to the result.
            # The segment exits this causes let the event reach the goal first.
            self.deciding = event
            try:
                self.registry.plan.on_event(self, event, now, pending)
            finally:
                self.deciding = None
            name = event.name
            if name in DELIVERY_EVENTS:
                # Consent changes first: a journey this event starts already sees them.
                apply_delivery_event(self, event, now)
            enrollments = self.state.enrollments
            if enrollments:
                if len(enrollments) > 1:
                    enrollments = sorted(enrollments, key=lambda e: (e.entered_at, e.id))
                else:
                    enrollments = list(enrollments)  # reacting may end it, which removes it
                for enrollment in enrollments:
                    if enrollment.active:
                        self._react(enrollment, event, now)
            for cj in self.registry.triggers_by_event.get(name, ()):
                cj.trigger.on_event(self, cj, cj.journey.trigger, cj.trigger_compiled, event,
                                    now)
            budget = self.attribute_changes(now)  # gathered too: the changes made so far
        except BaseException:
            self.gathering, self.gathered = False, None
            raise
        self._enter_gathered(now)
        self.attribute_changes(now, budget)  # the changes the entries made

    def start(
        self, cj: CompiledJourney, context: Mapping[str, Any], now: datetime,
        segment: str | None = None, *, skip_sends: bool = False, explain: bool = False,
    ) -> Enrollment | None:
        """An explicit start through the API: audience and re-entry rules still apply. With
        ``segment`` (a schedule's), only a customer still in it once caught up enters: the
        stored membership read to find them may predate a change due by ``now``. With
        ``skip_sends`` (a schedule occurrence a pause held, resumed by ``skip``), the sends
        the entry reaches before its first wait are skipped, as a held wake-up's are. With
        ``explain`` (a host's start), a refusal by the audience or the re-entry rules is said
        in ``not_entered`` too."""
        self.catch_up(now)
        if segment is not None and segment not in self.state.segments:
            return None
        self.entered_now = ()
        self.jumps = 0
        self.skipping = cj.journey.id if skip_sends else None
        try:
            enrollment = self.consider_entry(cj, context, None, now, explain=explain)
        finally:
            self.skipping = None
        self.attribute_changes(now)
        return enrollment

    def update_profile(self, update: ProfileUpdate, now: datetime) -> None:
        pending = self.catch_up(now, settle=False)  # segments judged after the update
        self.entered_now = ()
        self.jumps = 0
        # As for an event: the journeys the change qualifies the customer for (by segment, by
        # attribute) enter once the enrollments' exit conditions have seen it, by priority.
        self.gathering = True
        try:
            p = self.profile
            attributes = merge_attributes(p.attributes, update.attributes, update.unset)
            self.set_profile(Profile(
                p.customer_id,
                attributes,
                update.timezone if update.timezone is not None
                else None if update.unset and update.clears("timezone") else p.timezone,
                update.locale if update.locale is not None
                else None if update.unset and update.clears("locale") else p.locale,
            ))
            self.registry.plan.on_profile(self, _changed(p.attributes, attributes), now,
                                          pending)
            for enrollment in sorted(self.state.enrollments,
                                     key=lambda e: (e.entered_at, e.id)):
                if enrollment.active:
                    self._check_condition_exits(enrollment, _EMPTY, now)
            budget = self.attribute_changes(now)
        except BaseException:
            self.gathering, self.gathered = False, None
            raise
        self._enter_gathered(now)
        self.attribute_changes(now, budget)

    def end_enrollment(
        self, enrollment_id: str, status: EndStatus, reason: str, now: datetime
    ) -> None:
        """End one active enrollment (if it still is) with ``status`` and ``reason``."""
        self.catch_up(now)
        for enrollment in list(self.state.enrollments):
            if enrollment.id == enrollment_id:
                self.end(enrollment, status, reason, now)

    def remove(self, journey_id: str | None, reason: str, now: datetime) -> None:
        """End active enrollments (all, or one journey's) as ``removed`` by the host."""
        self.now = now
        for enrollment in list(self.state.enrollments):
            if journey_id is None or enrollment.journey_id == journey_id:
                self.end(enrollment, "removed", reason, now)

    # --- timers ------------------------------------------------------------------------------

    def _timer_rank(self, name: str) -> str:
        """Timers due at one instant fire in journey priority order (then name), as triggers
        of one event do."""
        if not self.registry.any_priority:
            return name  # every rank would be the same prefix and the name: the name decides
        if name.startswith(_TRIGGER_TIMER):
            cj = self.registry.latest.get(name[len(_TRIGGER_TIMER):])
            if cj is not None and cj.journey.priority:
                # Zero-padded, inverted priority: a higher priority sorts first.
                return f"{_TRIGGER_TIMER}{2**31 - cj.journey.priority:011d}:{name}"
        return f"{_TRIGGER_TIMER}{2**31:011d}:{name}"

    def _fire_timer(self, name: str) -> None:
        at = self.state.timers.pop(name)
        self.dirty = True
        if name.startswith(_TRIGGER_TIMER):
            # The version that was the newest at the timer's instant, however late it fires.
            cj = self.registry.latest_at(name[len(_TRIGGER_TIMER):], at)
            if cj is not None:
                cj.trigger.on_timer(self, cj, cj.journey.trigger, cj.trigger_compiled, at)
        elif name == SEGMENT_TIMER:
            self.registry.plan.on_timer(self, at)
        # A timer nothing claims any more (its journey changed trigger) is dropped.

    # --- reacting to events ------------------------------------------------------------------

    def _react(self, enrollment: Enrollment, event: Event, now: datetime) -> None:
        cj = self.registry.journeys.get((enrollment.journey_id, enrollment.version))
        if cj is None:
            return
        name = event.name
        if name not in cj.watched_events and not cj.any_event:
            return
        journey = cj.journey
        scope = self.scope(event.properties, enrollment.context, enrollment)
        if self._reach_goal(cj, enrollment, name, scope, now):
            return
        for criterion, where in cj.exit_by_event.get(name, ()):
            if where is None or where(scope):
                self.end(enrollment, "exited", criterion, now)
                return
        if self._check_condition_exits(enrollment, event.properties, now, cj):
            return
        step_id = enrollment.step_id
        registry = self.registry
        if step_id is None or enrollment.held_at is not None or (
            registry.pauses and registry.pause_at(journey.id, now) is not None
        ):
            return  # a paused journey's exits and goal work; its steps wait for the resume
        cs = cj.steps.get(step_id)
        if cs is None:
            return
        nxt = cs.kind.on_event(self, cj, enrollment, cs.step, cs.compiled, event, scope, now)
        if not isinstance(nxt, Halt):
            # Leaving the waiting step: its timeout must not stay set for the steps after it
            # (whatever the kind did), as a wake-up is cleared before ``wake``.
            enrollment.wake_at = None
            self._advance(cj, enrollment, nxt, now)

    def _reach_goal(
        self, cj: CompiledJourney, enrollment: Enrollment, name: str, scope: _Scope,
        now: datetime,
    ) -> bool:
        """Count the goal if the event ``name`` (read through ``scope``) reaches it; whether
        that ended the enrollment."""
        goal = cj.journey.goal
        if (
            goal is not None
            and name == goal.event
            and enrollment.converted_at is None
            and (goal.within is None or now - enrollment.entered_at <= goal.within)
            and (cj.goal_where is None or cj.goal_where(scope))
        ):
            enrollment.converted_at = now
            self.dirty = True
            # A control-group conversion is told apart in the log, so reports can compare:
            # by the group of the entry, as the entry was counted.
            control = enrollment.control
            if control is None:
                control = in_control_group(self.customer_id, self.registry.control_group)
            self.activity(enrollment, "goal", CONTROL_DETAIL if control else goal.name, now)
            self.outcome.goals.append(GoalReached(
                cj.journey.id, enrollment.id, self.customer_id, goal.name, now
            ))
            if goal.exit_on_goal:
                self.end(enrollment, "converted", goal.name, now)
                return True
        return False

    def goal_before_exit(self, enrollment: Enrollment, now: datetime) -> bool:
        """Before a segment change the event being decided caused ends ``enrollment``: count
        the goal that event reaches, as it is counted before an exit criterion on the event
        itself; whether that ended the enrollment."""
        event = self.deciding
        if event is None:
            return False
        cj = self.registry.journeys.get((enrollment.journey_id, enrollment.version))
        if cj is None or cj.journey.goal is None or cj.journey.goal.event != event.name:
            return False
        scope = self.scope(event.properties, enrollment.context, enrollment)
        return self._reach_goal(cj, enrollment, event.name, scope, now)

    def _check_condition_exits(
        self,
        enrollment: Enrollment,
        event_props: Mapping[str, Any],
        now: datetime,
        cj: CompiledJourney | None = None,
    ) -> bool:
        cj = cj or self.registry.journeys.get((enrollment.journey_id, enrollment.version))
        if cj is None or not cj.exit_conditions:
            return False
        scope = self.scope(event_props, enrollment.context, enrollment)
        for criterion, where in cj.exit_conditions:
            if where(scope):
                self.end(enrollment, "exited", criterion, now)
                return True
        return False

    # --- entering ----------------------------------------------------------------------------

    def offer_entry(
        self, cj: CompiledJourney, data: Mapping[str, Any], trigger_event_id: str | None,
        now: datetime, jumped: Activity | None = None,
    ) -> None:
        """An entry into ``cj`` (a trigger's, or a jump's: ``jumped`` is the log entry of the
        Jump step of an enrollment that goes on, which says so if the entry is refused). While
        an input is being decided (``gathering``), it is kept for ``_enter_gathered``; while
        the input's entries are considered, it waits its turn behind those of higher priority;
        otherwise it is considered at once (``consider_entry``)."""
        offer = _Offer(cj, data, trigger_event_id, jumped)
        if self.gathering:
            gathered = self.gathered
            if gathered is None:
                gathered = self.gathered = []
            gathered.append(offer)
            return
        waiting = self.waiting
        if waiting and _rank(waiting[0]) < _rank(offer):
            # After those of its rank already waiting: one journey's entries keep their order.
            insort_right(waiting, offer, key=_rank)
            return
        self._consider(offer, now)

    def _consider(self, offer: _Offer, now: datetime) -> None:
        entered = self.consider_entry(offer.cj, offer.data, offer.trigger_event_id, now)
        if entered is None and offer.jumped is not None:
            # Logged at the Jump step, in its place (the enrollment may have ended since):
            # the refusal is said there.
            offer.jumped.detail = f"{offer.cj.journey.id}: not entered"

    def _enter_gathered(self, now: datetime) -> None:
        """Stop gathering, and consider the entries gathered highest priority first (ties:
        journey id), so the highest enters and keeps the others out, whatever offered it. The
        entries these cause (jumps, segment and attribute changes) join those still waiting:
        one that comes first enters at once, the others wait their turn."""
        self.gathering = False
        gathered = self.gathered
        if gathered is None:
            return
        self.gathered = None
        if len(gathered) > 1:
            # Stable: entries of one journey (an attribute changed twice) keep their order.
            gathered.sort(key=_rank)
        self.waiting = gathered
        try:
            while gathered:
                self._consider(gathered.pop(0), now)
        finally:
            self.waiting = None

    def consider_entry(
        self, cj: CompiledJourney, data: Mapping[str, Any], trigger_event_id: str | None,
        now: datetime, *, explain: bool = False,
    ) -> Enrollment | None:
        """Enter ``cj`` with ``data`` as context if the audience and re-entry rules allow.
        Refusals across journeys and of instance keys are said in ``not_entered``; with
        ``explain``, those of the audience and re-entry rules too (a trigger's are not: every
        event a customer in the journey sends again would list one)."""
        self.now = now
        if cj.audience is not None and not cj.audience(self.scope(data, _EMPTY)):
            if explain:
                self.outcome.not_entered.append(NotEntered(
                    cj.journey.id, self.customer_id, "the audience does not match", now,
                ))
            return None
        key_name = cj.journey.reentry.instance_key
        key: str | None = None
        if key_name is not None:
            value = data.get(key_name)
            if value is None:
                # The input cannot name an instance. Said, so that an entry asked for (an
                # explicit start) is not taken for one the re-entry rules refused.
                self.outcome.not_entered.append(NotEntered(
                    cj.journey.id, self.customer_id, f"instance key {key_name!r} is missing", now,
                ))
                return None
            # A key is text or a whole number (5 and "5" name one instance): a list or a float
            # names no instance reliably, and a key longer than an id would swell every id.
            # isspace stops at the first other character: cheap for any real key.
            if type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and not value.isspace():
                key = value
            elif isinstance(value, int) and not isinstance(value, bool):
                key = str(value)
            elif isinstance(value, str) and value.isspace():
                # Names no instance, as ids may not be only whitespace: refused as a missing key.
                self.outcome.not_entered.append(NotEntered(
                    cj.journey.id, self.customer_id,
                    f"instance key {key_name!r} is blank (only whitespace)", now,
                ))
                return None
            else:
                got = (f"{len(value)} characters" if isinstance(value, str)
                       else f"a {type(value).__name__}")
                self.outcome.not_entered.append(NotEntered(
                    cj.journey.id, self.customer_id,
                    f"instance key {key_name!r} must be a string of 1 to {MAX_ID_LENGTH} "
                    f"characters or a whole number, got {got}", now,
                ))
                return None
        if not self._may_enter(cj, key, now):
            if explain:
                self.outcome.not_entered.append(NotEntered(
                    cj.journey.id, self.customer_id, self._reentry_refusal(cj, key), now,
                ))
            return None
        if key is not None:
            jid = cj.journey.id
            active = sum(1 for e in self.state.enrollments if e.journey_id == jid)
            limit = self.limits.max_instances_per_journey
            if active >= limit:
                self.outcome.not_entered.append(NotEntered(
                    jid, self.customer_id,
                    f"{active} instances of the journey are active already; the limit is "
                    f"{limit} (Limits.max_instances_per_journey)", now,
                ))
                return None
        registry = self.registry
        if registry.pauses or registry.any_group or registry.max_concurrent is not None:
            reason = self._arbitrate(cj, now)
            if reason is not None:
                journey = cj.journey
                self.outcome.not_entered.append(
                    NotEntered(journey.id, self.customer_id, reason, now)
                )
                # Logged too (these refusals only: the others repeat for every event of a
                # customer already inside), so the log explains entries fewer than triggers.
                self.dirty = True
                self.activities.append(Activity(
                    now, self.customer_id, "", journey.id, journey.version, None,
                    "not_entered", reason,
                ))
                return None
        return self._enter(cj, key, own_values(data), trigger_event_id, now)

    def _arbitrate(self, cj: CompiledJourney, now: datetime) -> str | None:
        """What keeps the customer out of ``cj`` at ``now`` across journeys, if anything.
        Journeys one input qualifies for are considered in priority order, so the highest
        enters first and keeps the others out."""
        registry = self.registry
        jid = cj.journey.id
        if registry.pauses and registry.pause_at(jid, now) is not None:
            return "paused"
        # The journeys the customer is in, and those this input entered (even if done).
        inside = [
            c for c in (registry.journeys.get((e.journey_id, e.version))
                        for e in self.state.enrollments)
            if c is not None
        ]
        inside.extend(self.entered_now)
        return kept_out(cj, inside, registry.max_concurrent)

    def _may_enter(self, cj: CompiledJourney, key: str | None, now: datetime) -> bool:
        jid = cj.journey.id
        # Never two enrollments of one journey (any version) for the same key at once.
        for e in self.state.enrollments:
            if e.journey_id == jid and e.instance_key == key:
                return False
        policy: ReentryPolicy = cj.journey.reentry
        if policy.mode == "after_exit" and policy.guard is None:
            return True
        # The history is part of this record, kept current by every entry and end in this
        # transaction: an enrollment that ended a moment ago (a wake-up, an exit on the very
        # trigger event, an earlier item of the same group) counts at once.
        h = self.state.history.get((jid, key))
        return h is None or reentry_allows(policy, h, now)

    def _reentry_refusal(self, cj: CompiledJourney, key: str | None) -> str:
        """Why ``_may_enter`` refused: the customer is in the journey (that instance), or the
        re-entry rule does not let them in again yet."""
        jid = cj.journey.id
        instance = "" if key is None else f" for instance {key!r}"
        if any(e.journey_id == jid and e.instance_key == key for e in self.state.enrollments):
            return f"already in the journey{instance}"
        policy = cj.journey.reentry
        guard = " and its duplicate guard" if policy.guard is not None else ""
        return f"the re-entry rule ({policy.mode}{guard}) does not allow it now{instance}"

    def _enter(
        self, cj: CompiledJourney, key: str | None, context: dict[str, Any],
        trigger_event_id: str | None, now: datetime,
    ) -> Enrollment:
        journey = cj.journey
        state = self.state
        hkey = cj.history_key if key is None else (journey.id, key)
        h = state.history.get(hkey) or _NO_HISTORY
        policy = journey.reentry
        keep = entries_kept(policy)
        recent: tuple[datetime, ...] = (*h.recent, now)[-keep:] if keep else ()
        if key is not None and (policy.guard is not None or policy.mode in _TIMED_MODES):
            _forget_spent(state, journey.id, policy, now)
        h = state.history[hkey] = EntryHistory.of(h.count + 1, recent, h.last_ended_at)
        number = h.count
        if key is not None:
            # A keyed instance's history may be dropped when it ends (after_exit), so its count
            # can start again: the journey's own entry count numbers keyed entries, so two
            # entries at one instant (a group, a jump) never share an id.
            j = state.history.get(cj.history_key) or _NO_HISTORY
            state.history[cj.history_key] = EntryHistory.of(
                j.count + 1, j.recent, j.last_ended_at
            )
            number = j.count + 1
        # Positional (id, journey, version, customer, entered, step, step entered, status,
        # key, wake, expires, ended, reason, converted, trigger event, context, visits, paths):
        # one per entry, and keywords cost more.
        # Only entries at the record's first instant can meet the ids of a customer erased
        # then (``CustomerState.erasures``): later ones have instants of their own.
        erasures = state.erasures if now == state.created_at else 0
        enrollment = Enrollment(
            enrollment_id_for(journey.id, self.customer_id, key, number, now, erasures),
            journey.id,
            journey.version, self.customer_id, now, None, None, ACTIVE, key, None,
            now + journey.max_lifetime if journey.max_lifetime else None, None, None, None,
            trigger_event_id, context, {}, {},
        )
        state.enrollments.append(enrollment)
        self.dirty = True
        self.entered_now += (cj,)
        control = in_control_group(self.customer_id, self.registry.control_group)
        if control:
            enrollment.control = True
        self.activity(enrollment, "entered", CONTROL_DETAIL if control else None, now)
        self.outcome.entered.append(
            Entered(journey.id, journey.version, enrollment.id, self.customer_id, now)
        )
        self._advance(cj, enrollment, journey.entry, now)
        return enrollment

    # --- stepping ----------------------------------------------------------------------------

    def _wake(self, enrollment: Enrollment) -> None:
        at = enrollment.wake_at
        assert at is not None
        cj = self.registry.journeys[(enrollment.journey_id, enrollment.version)]
        enrollment.wake_at = None
        self.dirty = True
        self.now = at
        if enrollment.expires_at is not None and at >= enrollment.expires_at:
            self.end(enrollment, "expired", "max lifetime", at)
            return
        registry = self.registry
        pause = registry.pause_at(enrollment.journey_id, at) if registry.pauses else None
        if pause is not None:
            self._hold(enrollment, pause.until, at)
            return
        cs = cj.steps.get(enrollment.step_id or "")
        if cs is None:
            return
        nxt = cs.kind.wake(self, cj, enrollment, cs.step, cs.compiled, at)
        if not isinstance(nxt, Halt):
            self._advance(cj, enrollment, nxt, at)

    def _advance(
        self, cj: CompiledJourney, enrollment: Enrollment, step_id: str | None, at: datetime
    ) -> None:
        """Run steps from ``step_id`` until the enrollment waits or ends."""
        steps = cj.steps
        self.dirty = True
        self.now = at
        journey_id = cj.journey.id
        customer_id = self.customer_id
        # Validation refuses longer runs without a wait; this guard only protects against
        # definitions that bypassed it. One more turn than the limit: completing takes one.
        for _ in range(self.limits.max_steps_per_advance + 1):
            if enrollment.status != ACTIVE:  # ``active``, inline: once per step run
                return
            if step_id is None:
                self.end(enrollment, "completed", None, at)
                return
            cs = steps[step_id]
            enrollment.step_id = step_id
            enrollment.step_entered_at = at
            enrollment.visits[step_id] = enrollment.visits.get(step_id, 0) + 1
            # Inline, every field given: one per step run, and defaults cost more to fill.
            self.activities.append(Activity(
                at, customer_id, enrollment.id, journey_id, enrollment.version, step_id, "step",
                None, None, None, None,
            ))
            outcome = self.outcome
            if outcome.record_steps:
                outcome.steps.append(StepRun(
                    journey_id, enrollment.id, customer_id, step_id, cs.step.kind, at
                ))
            nxt = cs.kind.run(self, cj, enrollment, step_id, cs.step, cs.compiled, at)
            if isinstance(nxt, Halt):
                return
            step_id = nxt
        self.end(enrollment, "exited", "step limit reached", at)

    def schedule(self, enrollment: Enrollment, wake: datetime) -> None:
        """Make ``enrollment`` wait until ``wake`` (never past its maximum lifetime)."""
        if enrollment.expires_at is not None and enrollment.expires_at < wake:
            wake = enrollment.expires_at
        enrollment.wake_at = wake

    def send(
        self, cj: CompiledJourney, enrollment: Enrollment, step_id: str, step: Send,
        at: datetime,
    ) -> bool:
        """Queue one message. Returns False when the enrollment ended instead (send-time
        validation: the audience and exit conditions are checked again right before sending)
        or now waits (a send deferred by delivery policies, see ``cjo.delivery.gate``, or a
        render to retry, ``cjo.runtime.sending``)."""
        if cj.audience is not None or cj.exit_conditions:
            scope = self.scope(_EMPTY, enrollment.context, enrollment)
            if cj.audience is not None and not cj.audience(scope):
                self.end(enrollment, "exited", "audience no longer matches", at)
                return False
            for criterion, where in cj.exit_conditions:
                if where(scope):
                    self.end(enrollment, "exited", criterion, at)
                    return False
        merged = enrollment.merged_passes
        if merged is not None and enrollment.visits.get(step_id, 0) <= merged.get(step_id, 0):
            self._left_out(enrollment, step, "send_skipped", SENT_BEFORE_MERGE, at)
            return True
        registry = self.registry
        if not step.transactional:
            if self.skipping == enrollment.journey_id:
                self._left_out(enrollment, step, "send_skipped", "paused", at)
                return True
            if registry.control_group is not None and in_control_group(
                self.customer_id, registry.control_group
            ):
                self._left_out(enrollment, step, "suppressed", CONTROL_DETAIL, at)
                return True
        content_id, offer = choose_content(self, enrollment, step, at)
        offer_id = offer.id if offer is not None else None
        item = registry.content.get(content_id)
        profile = self.profile
        # Delivery policies pick the channel (consent, fallbacks) and may drop or defer.
        channel_or_halt = (
            gate(self, cj, enrollment, step, item, at, offer) if item else step.channel
        )
        if channel_or_halt is None:
            return True
        if isinstance(channel_or_halt, Halt):
            return False
        channel = channel_or_halt
        variant = (
            registry.variant_for(item, channel, profile.locale, step.variant) if item else None
        )
        if item is None or variant is None:
            send_failed(self, enrollment, step, content_id, "no content variant", "skipped", at)
            return True
        if self.catching_up:
            # A worker that comes back late must not release a storm: past the limit, the
            # sends of one catch-up are skipped (and recorded) and the journey goes on.
            if self.caught_up_messages >= self.limits.max_messages_per_catch_up:
                self.activity(enrollment, "send_skipped", "catch-up limit", at,
                              channel=channel, content_id=item.id,
                              content_version=item.version)
                return True
            self.caught_up_messages += 1
        try:
            fields = self._fields(enrollment, item, variant, channel, at)
        except RenderError as exc:
            return render_failed(self, enrollment, step, item, exc, at)
        # Logged only now: a send skipped or retried to render chooses again, and each offer
        # entry stands for a message.
        log_offer(self, enrollment, step, offer_id, at)
        self._write(None, cj, enrollment, step_id, step, item, variant, channel, fields, at,
                    offer)
        if offer_id is not None:
            count_offer(self, offer_id, at)
        return True

    def _write(
        self, failed: Message | None, cj: CompiledJourney, enrollment: Enrollment,
        step_id: str, step: Send, item: ContentItem, variant: Variant, channel: str,
        fields: dict[str, str], at: datetime, offer: Offer | None,
    ) -> None:
        """Write the message of a send (taking over from ``failed``, if given) to the outbox,
        log it as ``sent`` and count it in the send ledger."""
        outcome = self.outcome
        if outcome.record_messages:
            attrs_ = self.profile.attributes
            recipient = {}  # a loop, not a comprehension: no function to build per send
            for k in self.recipient_attributes:
                if k in attrs_:
                    recipient[k] = attrs_[k]
            key = (
                message_key(enrollment.id, step_id, enrollment.visits.get(step_id, 1))
                if failed is None else failover_key(failed.idempotency_key, channel)
            )
            # Kept only while a later channel may take over (rendered with it, after the
            # enrollment may have ended): the outbox carries no context for most messages.
            context = (
                dict(enrollment.context) if enrollment.context and step.fallbacks
                and channel != step.fallbacks[-1] else _EMPTY
            )
            # Positional: one message per send, and keywords cost more.
            message = Message(
                key, self.customer_id, channel, item.id, fields, enrollment.journey_id,
                enrollment.version, step_id, enrollment.id, at, step.transactional,
                variant.locale, recipient, item.version, variant.name,
                offer.id if offer is not None else None, context,
            )
            self.add_message(message)
        else:
            sent = outcome.sent
            sent[channel] = sent.get(channel, 0) + 1
        self.activities.append(Activity(
            at, self.customer_id, enrollment.id, enrollment.journey_id, enrollment.version,
            enrollment.step_id, "sent", channel, channel, item.id, item.version,
        ))
        record_send(self, cj, step, item, channel, at, offer)

    def fail_over(self, failed: Message, reason: str, at: datetime) -> str | None:
        """``failed`` went nowhere, its customer unreachable on its channel (``reason``): the
        next of its Send step's channels after that one that the delivery policies allow
        takes over at once, with the same content (an offer's too), rendered for that channel
        with the context ``failed`` kept, by the rules of a send (``gate``, as a failover).
        It belongs to ``failed``'s step and enrollment, which it does not move, whatever became
        of them; logged as a fallback at the send: ``fallback`` (``reason``), then ``sent``,
        or ``suppressed``. Nothing when the step has no channel after it, or a failover of it
        is in the outbox already (``sent``: another worker, a retried dead letter). Returns why
        no failover could be decided, for the engine to log: the step's journey version is not
        one these definitions know."""
        registry = self.registry
        rest = failover_channels(registry, failed)
        if rest is None:
            return (f"journey {failed.journey_id!r} version {failed.journey_version} is not "
                    "known to this engine")
        if not rest or any(failover_key(failed.idempotency_key, ch) in self.sent
                           for ch in rest):
            return None
        cj = registry.compiled_version(failed.journey_id, failed.journey_version)
        assert cj is not None  # ``failover_channels`` found it
        step = cj.steps[failed.step_id].step
        assert isinstance(step, Send)  # ``failover_channels`` found its channels
        # The message's enrollment as it was when it sent, for what is logged (its step) and
        # rendered (its context): it may have moved on or ended since, and is not moved.
        enrollment = Enrollment(
            failed.enrollment_id, failed.journey_id, failed.journey_version, self.customer_id,
            failed.created_at, step_id=failed.step_id, context=dict(failed.context),
        )
        self.touch()
        self.activity(enrollment, "fallback", reason, at, channel=failed.channel,
                      content_id=failed.content_id, content_version=failed.content_version)
        step = attrs.evolve(step, channel=rest[0], fallbacks=rest[1:])
        item = registry.content.get(failed.content_id)
        compiled = registry.offers.get(failed.offer_id) if failed.offer_id is not None else None
        offer = compiled.offer if compiled is not None else None
        state = self.state
        sends = state.sends
        # The failover is the message the failed one was meant to be: it takes that one's
        # frequency cap slot, rather than being capped by it.
        if not failed.transactional and sends:
            give_back(state, failed.created_at, failed.channel)
        channel = (
            gate(self, cj, enrollment, step, item, at, offer, failover=True)
            if item is not None else None  # content is replaced by id, never removed
        )
        if item is None or not isinstance(channel, str):
            state.sends = sends
            return None
        variant = registry.variant_for(item, channel, self.profile.locale, step.variant)
        if variant is None:
            state.sends = sends
            self.activity(enrollment, "suppressed", f"no content variant for {channel}", at,
                          channel=channel, content_id=item.id, content_version=item.version)
            return None
        try:
            fields = self._fields(enrollment, item, variant, channel, at)
        except RenderError as exc:
            # Not the step's policy: retrying or exiting would move the enrollment.
            state.sends = sends
            send_failed(self, enrollment, step, item.id, str(exc), "skipped", at, item.version)
            return None
        self._write(failed, cj, enrollment, failed.step_id, step, item, variant, channel,
                    fields, at, offer)
        return None

    def _left_out(
        self, enrollment: Enrollment, step: Send, kind: ActivityKind, reason: str, at: datetime
    ) -> None:
        """Log a send left out before its content is chosen, naming the step's content at the
        version a send would take now, as a send's entry does."""
        item = self.registry.content.get(step.content)
        self.activity(enrollment, kind, reason, at, channel=step.channel,
                      content_id=step.content,
                      content_version=item.version if item is not None else None)

    def jump(self, enrollment: Enrollment, journey_id: str, at: datetime, *,
             end_current: bool) -> None:
        """A Jump step: enter ``journey_id`` with this enrollment's context."""
        target = self.registry.latest_at(journey_id, at)
        problem = (
            "no such journey" if target is None  # a process on older definitions may meet it
            else "jump limit reached" if self.jumps >= self.limits.max_jumps_per_input
            else None
        )
        if end_current:
            self.activity(enrollment, "jumped",
                          journey_id if problem is None else f"{journey_id}: {problem}", at)
            self.end(enrollment, "completed", f"jumped to {journey_id}", at)
        if target is not None and problem is None:
            self.jumps += 1
            jumped = None
            if not end_current:
                # Logged now, before whatever the enrollment does next; the entry, considered
                # later in priority order with the input's others (``offer_entry``), amends
                # it if refused.
                self.activity(enrollment, "jumped", journey_id, at)
                jumped = self.activities[-1]
            self.offer_entry(target, dict(enrollment.context), enrollment.trigger_event_id, at,
                             jumped)
        elif not end_current:
            self.activity(enrollment, "jumped", f"{journey_id}: {problem}", at)

    # --- pauses and new versions -------------------------------------------------------------

    def _hold(self, enrollment: Enrollment, until: datetime | None, at: datetime) -> None:
        """Hold a wake-up due at ``at`` while its journey is paused, until the resume (``until``,
        when the pause is over already: the record's wake-up index then knows it). Its
        lifetime still runs."""
        enrollment.held_at = at
        wake = until or HELD
        expires = enrollment.expires_at
        enrollment.wake_at = expires if expires is not None and expires < wake else wake
        self.activity(enrollment, "held", "paused", at)

    def _released_at(self, enrollment: Enrollment, now: datetime) -> datetime | None:
        """When a held enrollment's pause ended (None: it has not). A hold this engine knows no
        pause for (older than the pauses kept) is released now, unless the journey is paused."""
        held_at = enrollment.held_at
        assert held_at is not None
        registry = self.registry
        pause = registry.pause_at(enrollment.journey_id, held_at)
        if pause is not None:
            return pause.until
        return None if enrollment.journey_id in registry.paused else max(now, held_at)

    def _release(self, enrollment: Enrollment, at: datetime) -> None:
        """Run the wake-up held by a pause that ended at ``at``, by the journey's resume rule."""
        due = enrollment.held_at
        assert due is not None
        cj = self.registry.journeys[(enrollment.journey_id, enrollment.version)]
        late = "skip" if cj.journey.on_resume.skips(due, at) else "send_late"
        enrollment.held_at = None
        enrollment.wake_at = at
        self.activity(enrollment, "resumed", late, at)
        self.skipping = enrollment.journey_id if late == "skip" else None
        try:
            self._wake(enrollment)
        finally:
            self.skipping = None

    def _change_at(
        self, enrollment: Enrollment, changes: Mapping[tuple[str, int], VersionChange]
    ) -> datetime | None:
        """When a newer publish moves or ends ``enrollment`` (None: it does not, or this
        process does not know the version it moves to yet)."""
        change = changes.get((enrollment.journey_id, enrollment.version))
        if change is None or (
            change.mode != "eject"
            and (change.journey_id, change.to_version) not in self.registry.journeys
        ):
            return None
        return max(change.at or enrollment.entered_at, enrollment.entered_at)

    def _change_version(self, enrollment: Enrollment, at: datetime) -> None:
        """Move or end an enrollment whose version a newer publish migrated or ejected."""
        change = self.registry.version_changes[(enrollment.journey_id, enrollment.version)]
        if change.mode == "eject":
            self.end(enrollment, "ejected", change.reason, at)
            return
        from_version = enrollment.version
        journeys = self.registry.journeys
        old = self.registry.version(enrollment.journey_id, from_version)
        if old is not None:
            # Before the move: the messages are named by the old version's steps.
            carry_sends(enrollment, old,
                        journeys[(change.journey_id, change.to_version)].journey, change.steps)
        enrollment.version = change.to_version
        if enrollment.step_id is not None:
            enrollment.step_id = change.steps.get(enrollment.step_id, enrollment.step_id)
        self._relive(enrollment, at)
        self.dirty = True
        self.activity(enrollment, "migrated", f"v{from_version} to v{enrollment.version}", at)

    def _relive(self, enrollment: Enrollment, at: datetime) -> None:
        """Give a migrated enrollment its new version's maximum lifetime, from its entry. A
        wake-up already scheduled is kept, the end of the old lifetime included (what it cut
        short is not known any more); one past the new end comes forward to it, not before
        ``at``: an enrollment already that old expires at the migration."""
        lifetime = self.registry.journeys[
            (enrollment.journey_id, enrollment.version)
        ].journey.max_lifetime
        old, wake = enrollment.expires_at, enrollment.wake_at
        new = enrollment.entered_at + lifetime if lifetime else None
        if old is not None and wake is not None and wake >= old:
            new = old if new is None else min(old, new)
        enrollment.expires_at = new
        if new is not None and wake is not None and wake > new:
            enrollment.wake_at = max(new, at)

    # --- helpers -----------------------------------------------------------------------------

    def _fields(
        self, enrollment: Enrollment, item: ContentItem, variant: Variant, channel: str,
        at: datetime,
    ) -> dict[str, str]:
        """The rendered fields of a send (none when not rendering); ``RenderError`` if its
        templates fail."""
        if not self.render:
            return {}
        return render_fields(self, item, variant, channel, self.template_data(enrollment, at))

    def template_data(self, enrollment: Enrollment, at: datetime) -> dict[str, Any]:
        """What templates read: the profile, the enrollment's context (as ``event`` too: the
        trigger's properties), the customer id, the instant being decided (``'now' | date``)
        and the customer's time zone (``time_zone``)."""
        p = self.state.profile
        return {
            "profile": p.attributes if p is not None else _EMPTY,
            "event": enrollment.context,
            "context": enrollment.context,
            "customer_id": self.customer_id,
            NOW_KEY: at,
            # Resolved only by a template that asks (``time_zone``): most never do.
            ZONE_KEY: partial(self._enrollment_zone, enrollment),
        }

    def _enrollment_zone(self, enrollment: Enrollment) -> ZoneInfo:
        """The zone of the customer in ``enrollment``'s journey version (``zone``)."""
        return self.zone(self.registry.journeys.get((enrollment.journey_id, enrollment.version)))

    def end(
        self, enrollment: Enrollment, status: EndStatus, reason: str | None, at: datetime
    ) -> None:
        enrollment.status = status
        enrollment.ended_at = at
        enrollment.end_reason = reason
        enrollment.wake_at = None
        self.dirty = True
        state = self.state
        if enrollment in state.enrollments:
            state.enrollments.remove(enrollment)
        keep, ended = self.keep_ended, state.ended
        if keep > 0:
            state.ended = (*ended[max(0, len(ended) - keep + 1):], EndedEnrollment.of(enrollment))
        elif ended:
            state.ended = ()
        self._fold_history(enrollment, at)
        self.activity(enrollment, status, reason, at)
        self.outcome.ended.append(Ended(
            enrollment.journey_id, enrollment.id, self.customer_id, status, reason, at
        ))

    def _fold_history(self, enrollment: Enrollment, at: datetime) -> None:
        """Record the end in the entry history, dropping what no re-entry rule can read."""
        key = (enrollment.journey_id, enrollment.instance_key)
        history = self.state.history
        h = history.get(key)
        if h is None:
            return
        cj = self.registry.latest.get(enrollment.journey_id)
        if cj is not None and cj.journey.reentry.mode == "after_cooldown":
            # Only a cooldown reads when the last enrollment ended.
            history[key] = EntryHistory.of(h.count, h.recent, at)
        # Under after_exit no rule reads a keyed instance's history once it ended: drop it, or
        # one entry per cart would pile up forever. (The unkeyed entry stays: its count numbers
        # the enrollments; keyed ids stay unique without it, as they carry the entry instant.)
        # A guard reads it until the guard has passed: the next keyed entry drops it then.
        if (
            cj is not None and enrollment.instance_key is not None
            and cj.journey.reentry.mode == "after_exit"
        ):
            guard = cj.journey.reentry.guard
            if guard is None or not h.guards(guard, at):
                del history[key]

    def activity(
        self, enrollment: Enrollment, kind: ActivityKind, detail: str | None, at: datetime, *,
        channel: str | None = None, content_id: str | None = None,
        content_version: int | None = None,
    ) -> None:
        self.activities.append(Activity(
            at, self.customer_id, enrollment.id, enrollment.journey_id, enrollment.version,
            None if kind == "entered" else enrollment.step_id, kind, detail, channel,
            content_id, content_version,
        ))

    def set_profile(self, profile: Profile) -> None:
        watched = self.registry.triggers_by_attribute
        if watched:
            old = self.state.profile.attributes if self.state.profile is not None else _EMPTY
            new = profile.attributes
            for name in watched:
                # Absent and None are the same: no value. Writing the value it has is no change.
                before, after = old.get(name), new.get(name)
                if before != after or type(before) is not type(after):
                    if self.pending_changes is None:
                        self.pending_changes = []
                    self.pending_changes.append((name, before, after))
        state = self.state
        if state._rare is not None and state.blocked and self.options.contact_attributes:
            old_profile = state.profile
            readdressed(state, self.options.contact_attributes,
                        old_profile.attributes if old_profile is not None else _EMPTY,
                        profile.attributes)
        state.profile = profile
        self.dirty = True

    def attribute_changes(self, at: datetime, budget: int | None = None) -> int:
        """Show the profile changes made so far (by the host or by steps) to the journeys whose
        trigger watches the attribute, in the order they were made. Entering may change the
        profile again; a chain of changes stops after ``max_steps_per_advance`` of them in one
        input (``budget``: what an earlier call for the input left; returned)."""
        if budget is None:
            budget = self.limits.max_steps_per_advance
        pending = self.pending_changes
        if not pending:
            return budget
        by_attribute = self.registry.triggers_by_attribute
        while pending and budget > 0:
            budget -= 1
            name, old, new = pending.pop(0)
            for cj in by_attribute.get(name, ()):
                cj.trigger.on_change(
                    self, cj, cj.journey.trigger, cj.trigger_compiled, name, old, new, at
                )
        pending.clear()
        return budget

    def zone(self, cj: CompiledJourney | None = None) -> ZoneInfo:
        """The customer's time zone: the profile's, else the journey's, else the engine's
        default, else UTC."""
        p = self.state.profile
        return customer_zone(
            p.timezone if p is not None else None,
            cj.journey.timezone if cj is not None else None,
            self.options.default_timezone,
        )

    def change_profile(
        self, set_: Mapping[str, Any], unset: tuple[str, ...] = (), *, notify: bool = True
    ) -> None:
        """Change attributes; ``notify`` re-evaluates the segments that read them."""
        p = self.profile
        attributes = merge_attributes(p.attributes, set_, unset)
        self.set_profile(Profile(p.customer_id, attributes, p.timezone, p.locale))
        if notify and self.now is not None:
            self.registry.plan.on_profile(self, _changed(p.attributes, attributes),
                                          self.now)

    def scope(
        self, event: Mapping[str, Any], context: Mapping[str, Any],
        enrollment: Enrollment | None = None,
    ) -> _Scope:
        """What conditions read; with ``enrollment``, its entry instant (``entered_at()``)."""
        p = self.state.profile
        return _Scope(p.attributes if p is not None else _EMPTY, event, context,
                      self.registry.segments, self.now, enrollment, self, self.state)


def failover_channels(registry: Registry, message: Message) -> tuple[str, ...] | None:
    """The channels that may take over from ``message`` if it fails for good: those its Send
    step names after the one it went out on, in order (none for an action's call, or a
    channel the step no longer names); None when its journey version is not in
    ``registry``."""
    # A retired version's message may still be in the outbox (or a dead letter retried).
    cj = registry.compiled_version(message.journey_id, message.journey_version)
    if cj is None:
        return None
    cs = cj.steps.get(message.step_id)
    step = cs.step if cs is not None else None
    channels = (step.channel, *step.fallbacks) if isinstance(step, Send) else ()
    if message.channel not in channels:
        return ()
    return channels[channels.index(message.channel) + 1:]


class _Offer(NamedTuple):
    """An entry offered: into ``cj`` with ``data`` as context, by a trigger or by a jump
    (``jumped``: the log entry of the Jump step of an enrollment that goes on)."""

    cj: CompiledJourney
    data: Mapping[str, Any]
    trigger_event_id: str | None
    jumped: Activity | None


def _rank(offer: _Offer) -> tuple[int, str]:
    """Highest priority first, then journey id."""
    journey = offer.cj.journey
    return (-journey.priority, journey.id)


def entries_kept(policy: ReentryPolicy) -> int:
    """How many recent entry instants an entry history keeps under ``policy``: an at_most
    rule counts its last ``limit``, a duplicate guard reads the last one, nothing else any."""
    if policy.mode == "at_most":
        return policy.limit or 1
    return 1 if policy.guard is not None else 0


def reentry_allows(policy: ReentryPolicy, h: EntryHistory, at: datetime) -> bool:
    """Whether the re-entry rule ``policy`` lets a customer whose past entries (of the journey
    instance) are ``h`` enter at ``at``; being in the instance already is checked apart.

    ``h`` may hold entries after ``at``: an identity merge judges an anonymous enrollment by
    the known customer's history at the instant it began (``cjo.identity``). Each rule then
    holds for the entries on both sides of ``at``: ``never`` refuses any other entry, a
    cooldown refuses an enrollment that ended after ``at`` (it ran then, or began since), and
    ``at_most`` counts every rolling window that holds ``at``."""
    guard = policy.guard
    # A trigger this soon after the last entry is taken for a duplicate of its trigger.
    if guard is not None and h.guards(guard, at):
        return False
    mode = policy.mode
    if mode == "after_exit":
        return True
    if mode == "never":
        return h.count == 0
    if mode == "after_cooldown":
        cooldown = policy.cooldown or timedelta(0)
        return h.last_ended_at is None or at - h.last_ended_at >= cooldown
    per, limit = policy.per or timedelta(0), policy.limit or 0
    recent = h.recent
    if not recent or recent[-1] <= at:  # every entry before ``at``: one window, ending there
        window_start = at - per
        return sum(1 for t in recent if t > window_start) < limit
    times = sorted((*recent, at))
    return all(
        sum(1 for t in times if end - per < t <= end) <= limit
        for end in times if at <= end < at + per
    )


def _forget_spent(state: CustomerState, journey_id: str, policy: ReentryPolicy,
                  now: datetime) -> None:
    """Drop the histories of a keyed journey's ended instances that its re-entry rule can no
    longer read (``_spent``): a customer's carts do not pile up in the record."""
    active = {e.instance_key for e in state.enrollments if e.journey_id == journey_id}
    history = state.history
    stale = [
        k for k, h in history.items()
        if k[0] == journey_id and k[1] is not None and k[1] not in active
        and _spent(policy, h, now)
    ]
    for k in stale:
        del history[k]


def _spent(policy: ReentryPolicy, h: EntryHistory, now: datetime) -> bool:
    """Whether the history ``h`` of an ended instance can keep no entry out under ``policy``,
    at ``now`` or later: having none would decide the same (``reentry_allows``)."""
    if policy.mode == "never" or (policy.guard is not None and h.guards(policy.guard, now)):
        return False
    if policy.mode == "after_cooldown":
        cooldown = policy.cooldown or timedelta(0)
        return h.last_ended_at is None or now - h.last_ended_at >= cooldown
    if policy.mode == "at_most":
        # Half-open window: an entry exactly ``per`` old has left it.
        return not h.recent or now - h.recent[-1] >= (policy.per or timedelta(0))
    return True


def _changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> set[str]:
    """The attribute names whose value differs."""
    if not before:
        return set(after)  # a first profile: every attribute it has is new
    missing = object()
    return {
        k for k in before.keys() | after.keys() if before.get(k, missing) != after.get(k, missing)
    }

