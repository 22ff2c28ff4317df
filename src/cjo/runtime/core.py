"""The decision core: what happens to one customer when an input arrives or time passes.

A ``Decider`` is a pure function in object form: given the compiled definitions of one
generation (``Registry``), the customer's record (``CustomerState``) and ``now``, each entry
point changes the record in place and accumulates the transaction's effects (outbox messages and
activity-log entries) and an ``Outcome`` for the caller. It reads nothing else, does no I/O,
never reads the clock, and calls nothing back in storage. Everything here is deterministic.

Step and trigger behaviour lives in ``cjo.runtime.kinds``; this module holds what every kind
shares: entering (audience, re-entry, instance keys), stepping, ending, exits, goals, sends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cjo.channels.base import Message
from cjo.errors import RenderError
from cjo.model.events import Event, Profile, ProfileUpdate
from cjo.model.journey import ReentryPolicy
from cjo.model.steps import Send
from cjo.outcome import Ended, Entered, GoalReached, OutcomeBuilder, StepRun
from cjo.runtime.kinds import Halt, split_fraction
from cjo.runtime.options import DEFAULT_OPTIONS, DEFAULT_RECIPIENT_ATTRIBUTES, DecisionOptions
from cjo.runtime.registry import CompiledJourney, Registry
from cjo.runtime.state import (
    ACTIVE,
    Activity,
    CustomerState,
    EndedEnrollment,
    Enrollment,
    EntryHistory,
    merge_attributes,
)
from cjo.segments.membership import SEGMENT_TIMER

__all__ = [
    "DEFAULT_RECIPIENT_ATTRIBUTES",
    "Decider",
    "enrollment_id_for",
    "new_state",
    "split_fraction",
]

_EMPTY: Mapping[str, Any] = {}
_TRIGGER_TIMER = "trigger:"
_NO_HISTORY = EntryHistory.of(0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)



def enrollment_id_for(
    journey_id: str, customer_id: str, key: str | None, number: int, entered_at: datetime
) -> str:
    """Deterministic ids: replaying the same events yields the same ids and idempotency keys.

    The entry instant is part of the id: after ``erase_customer`` the entry count starts again,
    and a returning customer must not reuse an old id (providers de-duplicate on the keys
    built from it).
    """
    # Microseconds since the epoch in hexadecimal: exact, and formatted in C.
    stamp = format((entered_at - _EPOCH) // _MICROSECOND, "x")
    if key is None:
        return f"{journey_id}:{customer_id}:{number}.{stamp}"
    return f"{journey_id}:{customer_id}:{key}:{number}.{stamp}"


def new_state(customer_id: str, now: datetime) -> CustomerState:
    """The record of a customer seen for the first time at ``now``."""
    return CustomerState(customer_id, now)


class _Scope:
    """What conditions read; segment memberships are computed on demand and cached. History
    conditions read ``record`` (its tracks) at the decision instant ``now``."""

    __slots__ = ("_seg_cache", "_segments", "context", "event", "now", "profile", "record")

    def __init__(
        self,
        profile: Mapping[str, Any],
        event: Mapping[str, Any],
        context: Mapping[str, Any],
        segments: Mapping[str, Any],
        record: CustomerState | None = None,
        now: datetime | None = None,
    ) -> None:
        self.profile = profile
        self.event = event
        self.context = context
        self._segments = segments
        self._seg_cache: dict[str, bool] | None = None
        self.record = record
        self.now = now

    def in_segment(self, segment_id: str) -> bool:
        cache = self._seg_cache
        if cache is None:
            cache = self._seg_cache = {}
        hit = cache.get(segment_id)
        if hit is None:
            test = self._segments.get(segment_id)
            # Segments read the profile only: evaluate them on a profile-only scope.
            profile_only = _Scope(self.profile, _EMPTY, _EMPTY, self._segments, self.record,
                                  self.now)
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
        "dirty",
        "instant",
        "keep_ended",
        "limits",
        "messages",
        "options",
        "outcome",
        "recipient_attributes",
        "registry",
        "render",
        "state",
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
        # The decision instant conditions are evaluated at (windows end there); entry points
        # set it, and each wake-up sets its own due instant.
        self.instant: datetime | None = None
        self.cascade = 0  # how deeply segment changes cascade (see cjo.segments.membership)
        self.state = state
        self.dirty = state.revision == 0  # a new record is always written
        self.messages: list[Message] = []
        self.activities: list[Activity] = []
        # Deciders of one call may share one builder: what they do is reported together.
        self.outcome = outcome if outcome is not None else OutcomeBuilder()

    @property
    def profile(self) -> Profile:
        p = self.state.profile
        return p if p is not None else Profile(self.state.customer_id)

    def touch(self) -> None:
        self.dirty = True

    # --- entry points ------------------------------------------------------------------------

    def catch_up(self, now: datetime) -> None:
        """Fire every wake-up of this customer due by ``now``, earliest first: enrollment waits,
        timeouts and lifetimes, and customer timers. Each fires at its own due instant, so a
        late worker still times the following steps from the schedule, and the outcome does
        not depend on when the worker came."""
        self.instant = now
        self._arm(now)
        journeys = self.registry.journeys
        state = self.state
        self.catching_up, self.caught_up_messages = True, 0
        try:
            self._fire_due(now, journeys, state)
        finally:
            self.catching_up = False
            self.instant = now
        self.registry.plan.sync(self, now)

    def _fire_due(
        self, now: datetime, journeys: Mapping[tuple[str, int], CompiledJourney],
        state: CustomerState,
    ) -> None:
        while True:
            best: tuple[datetime, datetime, int, str] | None = None
            target: Enrollment | str | None = None
            for e in state.enrollments:
                w = e.wake_at
                # An enrollment whose journey version this engine does not know is left as it
                # is, wake-up included, until a process that knows it comes along.
                if w is not None and w <= now and (e.journey_id, e.version) in journeys:
                    order = (w, e.step_entered_at or e.entered_at, 0, e.id)
                    if best is None or order < best:
                        best, target = order, e
            for name, w in state.timers.items():
                if w <= now:
                    order = (w, w, 1, name)
                    if best is None or order < best:
                        best, target = order, name
            if target is None or best is None:
                return
            self.instant = best[0]
            if isinstance(target, str):
                self._fire_timer(target)
            else:
                self._wake(target)

    def on_event(self, event: Event, now: datetime) -> None:
        self.catch_up(now)
        # Profile rules, tracks and segment memberships first: journeys react to the result.
        self.registry.plan.on_event(self, event, now)
        name = event.name
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
            cj.trigger.on_event(self, cj, cj.journey.trigger, cj.trigger_compiled, event, now)

    def start(
        self, cj: CompiledJourney, context: Mapping[str, Any], now: datetime
    ) -> Enrollment | None:
        """An explicit start through the API: audience and re-entry rules still apply."""
        self.catch_up(now)
        return self.consider_entry(cj, context, None, now)

    def update_profile(self, update: ProfileUpdate, now: datetime) -> None:
        self.catch_up(now)
        p = self.profile
        attributes = merge_attributes(p.attributes, update.attributes, update.unset)
        self.set_profile(Profile(
            p.customer_id,
            attributes,
            update.timezone if update.timezone is not None else p.timezone,
            update.locale if update.locale is not None else p.locale,
        ))
        self.registry.plan.on_profile(self, _changed(p.attributes, attributes), now)
        for enrollment in sorted(self.state.enrollments, key=lambda e: (e.entered_at, e.id)):
            if enrollment.active:
                self._check_condition_exits(enrollment, _EMPTY, now)

    def remove(self, journey_id: str | None, reason: str, now: datetime) -> None:
        """End active enrollments (all, or one journey's) as ``removed`` by the host."""
        for enrollment in list(self.state.enrollments):
            if journey_id is None or enrollment.journey_id == journey_id:
                self.end(enrollment, "removed", reason, now)

    # --- timers ------------------------------------------------------------------------------

    def _arm(self, now: datetime) -> None:
        for cj in self.registry.armed:
            cj.trigger.arm(self, cj, cj.journey.trigger, cj.trigger_compiled, now)

    def _fire_timer(self, name: str) -> None:
        at = self.state.timers.pop(name)
        self.dirty = True
        if name.startswith(_TRIGGER_TIMER):
            cj = self.registry.latest.get(name[len(_TRIGGER_TIMER):])
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
        scope = self.scope(event.properties, enrollment.context)
        goal = journey.goal
        if (
            goal is not None
            and name == goal.event
            and enrollment.converted_at is None
            and (goal.within is None or now - enrollment.entered_at <= goal.within)
            and (cj.goal_where is None or cj.goal_where(scope))
        ):
            enrollment.converted_at = now
            self.dirty = True
            self.activity(enrollment, "goal", goal.name, now)
            self.outcome.goals.append(GoalReached(
                journey.id, enrollment.id, self.customer_id, goal.name, now
            ))
            if goal.exit_on_goal:
                self.end(enrollment, "converted", goal.name, now)
                return
        for criterion, where in cj.exit_by_event.get(name, ()):
            if where is None or where(scope):
                self.end(enrollment, "exited", criterion, now)
                return
        if self._check_condition_exits(enrollment, event.properties, now, cj):
            return
        step_id = enrollment.step_id
        if step_id is None:
            return
        cs = cj.steps.get(step_id)
        if cs is None:
            return
        nxt = cs.kind.on_event(self, cj, enrollment, cs.step, cs.compiled, event, scope, now)
        if not isinstance(nxt, Halt):
            self._advance(cj, enrollment, nxt, now)

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
        scope = self.scope(event_props, enrollment.context)
        for criterion, where in cj.exit_conditions:
            if where(scope):
                self.end(enrollment, "exited", criterion, now)
                return True
        return False

    # --- entering ----------------------------------------------------------------------------

    def consider_entry(
        self, cj: CompiledJourney, data: Mapping[str, Any], trigger_event_id: str | None,
        now: datetime,
    ) -> Enrollment | None:
        """Enter ``cj`` with ``data`` as context if the audience and re-entry rules allow."""
        if cj.audience is not None and not cj.audience(self.scope(data, _EMPTY)):
            return None
        key_name = cj.journey.reentry.instance_key
        key: str | None = None
        if key_name is not None:
            value = data.get(key_name)
            if value is None:
                return None  # the input lacks the instance key: it cannot name an instance
            key = str(value)
        if not self._may_enter(cj, key, now):
            return None
        return self._enter(cj, key, dict(data), trigger_event_id, now)

    def _may_enter(self, cj: CompiledJourney, key: str | None, now: datetime) -> bool:
        jid = cj.journey.id
        # Never two enrollments of one journey (any version) for the same key at once.
        for e in self.state.enrollments:
            if e.journey_id == jid and e.instance_key == key:
                return False
        policy: ReentryPolicy = cj.journey.reentry
        if policy.mode == "after_exit":
            return True
        # The history is part of this record, kept current by every entry and end in this
        # transaction: an enrollment that ended a moment ago (a wake-up, an exit on the very
        # trigger event, an earlier item of the same group) counts at once.
        h = self.state.history.get((jid, key))
        if h is None:
            return True
        if policy.mode == "never":
            return h.count == 0
        if policy.mode == "after_cooldown":
            cooldown = policy.cooldown or timedelta(0)
            return h.last_ended_at is None or now - h.last_ended_at >= cooldown
        window_start = now - (policy.per or timedelta(0))
        recent = sum(1 for t in h.recent if t > window_start)
        return recent < (policy.limit or 0)

    def _enter(
        self, cj: CompiledJourney, key: str | None, context: dict[str, Any],
        trigger_event_id: str | None, now: datetime,
    ) -> Enrollment:
        journey = cj.journey
        state = self.state
        hkey = cj.history_key if key is None else (journey.id, key)
        h = state.history.get(hkey) or _NO_HISTORY
        policy = journey.reentry
        # Only an at_most rule counts entry instants, and only its last ``limit`` of them.
        recent = (*h.recent, now)[-(policy.limit or 1):] if policy.mode == "at_most" else ()
        h = state.history[hkey] = EntryHistory.of(h.count + 1, recent, h.last_ended_at)
        # Positional (id, journey, version, customer, entered, step, step entered, status,
        # key, wake, expires, ended, reason, converted, trigger event, context, visits, paths):
        # one per entry, and keywords cost more.
        enrollment = Enrollment(
            enrollment_id_for(journey.id, self.customer_id, key, h.count, now), journey.id,
            journey.version, self.customer_id, now, None, None, ACTIVE, key, None,
            now + journey.max_lifetime if journey.max_lifetime else None, None, None, None,
            trigger_event_id, context, {}, {},
        )
        state.enrollments.append(enrollment)
        self.dirty = True
        self.activity(enrollment, "entered", None, now)
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
        if enrollment.expires_at is not None and at >= enrollment.expires_at:
            self.end(enrollment, "expired", "max lifetime", at)
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
        journey_id = cj.journey.id
        customer_id = self.customer_id
        # Validation refuses longer runs without a wait; this guard only protects against
        # definitions that bypassed it. One more turn than the limit: completing takes one.
        for _ in range(self.limits.max_steps_per_advance + 1):
            if not enrollment.active:
                return
            if step_id is None:
                self.end(enrollment, "completed", None, at)
                return
            cs = steps[step_id]
            enrollment.step_id = step_id
            enrollment.step_entered_at = at
            enrollment.visits[step_id] = enrollment.visits.get(step_id, 0) + 1
            self.activities.append(Activity(  # inline: one per step run
                at, customer_id, enrollment.id, journey_id, enrollment.version, step_id, "step"
            ))
            self.outcome.steps.append(StepRun(
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
        validation: the audience and exit conditions are checked again right before sending)."""
        if cj.audience is not None or cj.exit_conditions:
            scope = self.scope(_EMPTY, enrollment.context)
            if cj.audience is not None and not cj.audience(scope):
                self.end(enrollment, "exited", "audience no longer matches", at)
                return False
            for criterion, where in cj.exit_conditions:
                if where(scope):
                    self.end(enrollment, "exited", criterion, at)
                    return False
        registry = self.registry
        item = registry.content.get(step.content)
        profile = self.profile
        variant = item.variant_for(step.channel, profile.locale) if item else None
        if item is None or variant is None:
            self.activity(enrollment, "send_failed", "no content variant", at,
                          channel=step.channel, content_id=step.content)
            return True
        if self.catching_up:
            # A worker that comes back late must not release a storm: past the limit, the
            # sends of one catch-up are skipped (and recorded) and the journey goes on.
            if self.caught_up_messages >= self.limits.max_messages_per_catch_up:
                self.activity(enrollment, "send_skipped", "catch-up limit", at,
                              channel=step.channel, content_id=item.id,
                              content_version=item.version)
                return True
            self.caught_up_messages += 1
        fields: dict[str, str] = {}
        if self.render:
            data = {
                "profile": profile.attributes,
                "event": enrollment.context,
                "context": enrollment.context,
                "customer_id": self.customer_id,
            }
            try:
                fields = registry.renderer.render(item, variant, data)
            except RenderError as exc:
                self.activity(enrollment, "send_failed", str(exc)[:200], at,
                              channel=step.channel, content_id=item.id,
                              content_version=item.version)
                return True
        attrs_ = profile.attributes
        recipient = {k: attrs_[k] for k in self.recipient_attributes if k in attrs_}
        attempt = enrollment.visits.get(step_id, 1)
        channel = step.channel
        customer_id = self.customer_id
        # Positional: one message per send, and keywords cost more.
        message = Message(
            f"{enrollment.id}:{step_id}:{attempt}", customer_id, channel, item.id, fields,
            enrollment.journey_id, enrollment.version, step_id, enrollment.id, at,
            step.transactional, variant.locale, recipient, item.version,
        )
        self.messages.append(message)
        self.outcome.messages.append(message)
        self.activities.append(Activity(
            at, customer_id, enrollment.id, enrollment.journey_id, enrollment.version,
            enrollment.step_id, "sent", channel, channel, item.id, item.version,
        ))
        return True

    # --- helpers -----------------------------------------------------------------------------

    def end(self, enrollment: Enrollment, status: str, reason: str | None, at: datetime) -> None:
        enrollment.status = status  # type: ignore[assignment]
        enrollment.ended_at = at
        enrollment.end_reason = reason
        enrollment.wake_at = None
        self.dirty = True
        state = self.state
        if enrollment in state.enrollments:
            state.enrollments.remove(enrollment)
        ended = state.ended
        ended.append(EndedEnrollment.of(enrollment))
        if len(ended) > self.keep_ended:
            del ended[: len(ended) - self.keep_ended]
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
        if (
            cj is not None and enrollment.instance_key is not None
            and cj.journey.reentry.mode == "after_exit"
        ):
            del history[key]

    def activity(
        self, enrollment: Enrollment, kind: str, detail: str | None, at: datetime, *,
        channel: str | None = None, content_id: str | None = None,
        content_version: int | None = None,
    ) -> None:
        self.activities.append(Activity(
            at, self.customer_id, enrollment.id, enrollment.journey_id, enrollment.version,
            None if kind == "entered" else enrollment.step_id, kind, detail, channel,
            content_id, content_version,
        ))

    def set_profile(self, profile: Profile) -> None:
        self.state.profile = profile
        self.dirty = True

    def change_profile(
        self, set_: Mapping[str, Any], unset: tuple[str, ...] = (), *, notify: bool = True
    ) -> None:
        """Change attributes; ``notify`` re-evaluates the segments that read them."""
        p = self.profile
        attributes = merge_attributes(p.attributes, set_, unset)
        self.set_profile(Profile(p.customer_id, attributes, p.timezone, p.locale))
        if notify and self.instant is not None:
            self.registry.plan.on_profile(self, _changed(p.attributes, attributes),
                                          self.instant)

    def scope(self, event: Mapping[str, Any], context: Mapping[str, Any]) -> _Scope:
        p = self.state.profile
        return _Scope(p.attributes if p is not None else _EMPTY, event, context,
                      self.registry.segments, self.state, self.instant)


def _changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> set[str]:
    """The attribute names whose value differs."""
    missing = object()
    return {
        k for k in before.keys() | after.keys() if before.get(k, missing) != after.get(k, missing)
    }

