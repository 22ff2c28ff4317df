"""The decision core: what happens to one customer when an event arrives or time passes.

A ``Decider`` works on one customer's state (profile and active enrollments) as loaded inside
the customer's storage transaction. It reads nothing else, does no I/O and never reads the
clock: it is given ``now``, and it accumulates ``Changes`` (for storage) and an ``Outcome``
(for the caller). Everything here is deterministic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from cjo.channels.base import Message
from cjo.content.render import Renderer
from cjo.errors import RenderError
from cjo.model.events import Event, Profile, ProfileUpdate
from cjo.model.journey import ReentryPolicy
from cjo.model.steps import Branch, Exit, Send, Split, UpdateProfile, Wait, WaitForEvent
from cjo.outcome import Ended, Entered, GoalReached, OutcomeBuilder, StepRun
from cjo.runtime.registry import CompiledJourney, Registry
from cjo.runtime.state import Activity, Changes, Enrollment, PastEntry, merge_attributes

__all__ = ["Decider", "HistoryLookup", "enrollment_id_for", "split_fraction"]

# A journey whose steps loop without ever waiting is rejected by validation; this guard only
# protects against definitions that bypassed it.
MAX_STEPS_PER_ADVANCE = 1000
_EMPTY: Mapping[str, Any] = {}

HistoryLookup = Callable[[str, "str | None"], list[PastEntry]]


def split_fraction(customer_id: str, journey_id: str, step_id: str) -> float:
    """A stable number in [0, 1) for (customer, journey, step): the same every run, every host."""
    digest = hashlib.blake2b(
        f"{journey_id}\x1f{step_id}\x1f{customer_id}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


def _base36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        value, rest = divmod(value, 36)
        out = digits[rest] + out
        if not value:
            return out


def enrollment_id_for(
    journey_id: str, customer_id: str, key: str | None, number: int, entered_at: datetime
) -> str:
    """Deterministic ids: replaying the same events yields the same ids and idempotency keys.

    The entry instant is part of the id: after ``erase_customer`` the entry count starts again,
    and a returning customer must not reuse an old id (providers de-duplicate on the keys
    built from it).
    """
    stamp = _base36(int(entered_at.timestamp() * 1_000_000))
    if key is None:
        return f"{journey_id}:{customer_id}:{number}.{stamp}"
    return f"{journey_id}:{customer_id}:{key}:{number}.{stamp}"


class _Scope:
    """What conditions read; segment memberships are computed on demand and cached."""

    __slots__ = ("_seg_cache", "_segments", "context", "event", "profile")

    def __init__(
        self,
        profile: Mapping[str, Any],
        event: Mapping[str, Any],
        context: Mapping[str, Any],
        segments: Mapping[str, Callable[[Any], bool]],
    ) -> None:
        self.profile = profile
        self.event = event
        self.context = context
        self._segments = segments
        self._seg_cache: dict[str, bool] | None = None

    def in_segment(self, segment_id: str) -> bool:
        cache = self._seg_cache
        if cache is None:
            cache = self._seg_cache = {}
        hit = cache.get(segment_id)
        if hit is None:
            test = self._segments.get(segment_id)
            # Segments read the profile only: evaluate them on a profile-only scope.
            profile_only = _Scope(self.profile, _EMPTY, _EMPTY, self._segments)
            hit = bool(test(profile_only)) if test else False
            cache[segment_id] = hit
        return hit


class Decider:
    """Decides for one customer inside one storage transaction."""

    def __init__(
        self,
        registry: Registry,
        renderer: Renderer,
        customer_id: str,
        profile: Profile | None,
        enrollments: list[Enrollment],
        history: HistoryLookup,
    ) -> None:
        self.registry = registry
        self.renderer = renderer
        self.customer_id = customer_id
        self.profile = profile or Profile(customer_id)
        self.active = [e for e in enrollments if e.active]
        self.history = history
        self.changes = Changes(customer_id)
        self.outcome = OutcomeBuilder()

    # --- entry points ------------------------------------------------------------------------

    def catch_up(self, now: datetime) -> None:
        """Fire every wake-up of this customer due by ``now``, earliest first. Each fires at its
        own due instant, so a late worker still times the following steps from the schedule."""
        journeys = self.registry.journeys
        while True:
            # An enrollment whose journey version this engine does not know is left as it is,
            # wake-up included, until a process that knows it comes along: never dropped.
            due = [
                e for e in self.active
                if e.wake_at is not None and e.wake_at <= now
                and (e.journey_id, e.version) in journeys
            ]
            if not due:
                return
            self._wake(min(due, key=Enrollment.wake_order))

    def on_event(self, event: Event, now: datetime) -> None:
        self.catch_up(now)
        name = event.name
        for enrollment in sorted(self.active, key=lambda e: (e.entered_at, e.id)):
            if enrollment.active:
                self._react(enrollment, event, now)
        for cj in self.registry.triggers_by_event.get(name, ()):
            self._consider_entry(cj, event, now)

    def start(
        self, cj: CompiledJourney, context: Mapping[str, Any], now: datetime
    ) -> Enrollment | None:
        """An explicit start through the API: audience and re-entry rules still apply."""
        self.catch_up(now)
        scope = self._scope(_EMPTY, context)
        if cj.audience is not None and not cj.audience(scope):
            return None
        key = self._instance_key(cj, context)
        if cj.journey.reentry.instance_key is not None and key is None:
            return None
        if not self._may_enter(cj, key, now):
            return None
        return self._enter(cj, key, dict(context), None, now)

    def update_profile(self, update: ProfileUpdate, now: datetime) -> None:
        self.catch_up(now)
        p = self.profile
        self._set_profile(Profile(
            p.customer_id,
            merge_attributes(p.attributes, update.attributes, update.unset),
            update.timezone if update.timezone is not None else p.timezone,
            update.locale if update.locale is not None else p.locale,
        ))
        for enrollment in sorted(self.active, key=lambda e: (e.entered_at, e.id)):
            if enrollment.active:
                self._check_condition_exits(enrollment, _EMPTY, now)

    def remove(self, journey_id: str | None, reason: str, now: datetime) -> None:
        """End active enrollments (all, or one journey's) as ``removed`` by the host."""
        for enrollment in list(self.active):
            if journey_id is None or enrollment.journey_id == journey_id:
                self._end(enrollment, "removed", reason, now)

    # --- reacting to events ------------------------------------------------------------------

    def _react(self, enrollment: Enrollment, event: Event, now: datetime) -> None:
        cj = self.registry.journeys.get((enrollment.journey_id, enrollment.version))
        if cj is None:
            return
        journey = cj.journey
        name = event.name
        if name not in cj.watched_events and not cj.exit_conditions:
            return
        scope = self._scope(event.properties, enrollment.context)
        goal = journey.goal
        if (
            goal is not None
            and name == goal.event
            and enrollment.converted_at is None
            and (goal.within is None or now - enrollment.entered_at <= goal.within)
            and (cj.goal_where is None or cj.goal_where(scope))
        ):
            enrollment.converted_at = now
            self.changes.touch(enrollment)
            self._activity(enrollment, "goal", goal.name, now)
            self.outcome.goals.append(GoalReached(
                journey.id, enrollment.id, self.customer_id, goal.name, now
            ))
            if goal.exit_on_goal:
                self._end(enrollment, "converted", goal.name, now)
                return
        for criterion, where in cj.exit_by_event.get(name, ()):
            if where is None or where(scope):
                self._end(enrollment, "exited", criterion, now)
                return
        if self._check_condition_exits(enrollment, event.properties, now, cj):
            return
        step_id = enrollment.step_id
        if step_id is None:
            return
        step = journey.steps.get(step_id)
        if isinstance(step, WaitForEvent) and step.event == name:
            where_wait = cj.wait_where.get(step_id)
            if where_wait is None or where_wait(scope):
                self._activity(enrollment, "event_received", name, now)
                self._advance(enrollment, step.on_event, now)

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
        scope = self._scope(event_props, enrollment.context)
        for criterion, where in cj.exit_conditions:
            if where(scope):
                self._end(enrollment, "exited", criterion, now)
                return True
        return False

    # --- entering ----------------------------------------------------------------------------

    def _consider_entry(self, cj: CompiledJourney, event: Event, now: datetime) -> None:
        scope = self._scope(event.properties, _EMPTY)
        if cj.trigger_where is not None and not cj.trigger_where(scope):
            return
        if cj.audience is not None and not cj.audience(scope):
            return
        key = self._instance_key(cj, event.properties)
        if cj.journey.reentry.instance_key is not None and key is None:
            return  # the event lacks the instance key: it cannot name an instance
        if self._may_enter(cj, key, now):
            self._enter(cj, key, dict(event.properties), event.event_id, now)

    @staticmethod
    def _instance_key(cj: CompiledJourney, data: Mapping[str, Any]) -> str | None:
        name = cj.journey.reentry.instance_key
        if name is None:
            return None
        value = data.get(name)
        return None if value is None else str(value)

    def _may_enter(self, cj: CompiledJourney, key: str | None, now: datetime) -> bool:
        jid = cj.journey.id
        # Never two enrollments of one journey (any version) for the same key at once.
        for e in self.active:
            if e.journey_id == jid and e.instance_key == key:
                return False
        policy: ReentryPolicy = cj.journey.reentry
        if policy.mode == "after_exit":
            return True
        past = self.history(jid, key) + [
            PastEntry(e.entered_at, e.ended_at) for e in self.changes.enrollments.values()
            if e.journey_id == jid and e.instance_key == key
            and e.id in self.changes.new_enrollments
        ]
        if policy.mode == "never":
            return not past
        if policy.mode == "after_cooldown":
            cooldown = policy.cooldown or timedelta(0)
            ends = [p.ended_at for p in past if p.ended_at is not None]
            return not ends or now - max(ends) >= cooldown
        # at_most: count entries in the rolling window
        window_start = now - (policy.per or timedelta(0))
        recent = sum(1 for p in past if p.entered_at > window_start)
        return recent < (policy.limit or 0)

    def _enter(
        self, cj: CompiledJourney, key: str | None, context: dict[str, Any],
        trigger_event_id: str | None, now: datetime,
    ) -> Enrollment:
        journey = cj.journey
        number = len(self.history(journey.id, key)) + 1 + sum(
            1 for eid in self.changes.new_enrollments
            if self.changes.enrollments[eid].journey_id == journey.id
            and self.changes.enrollments[eid].instance_key == key
        )
        enrollment = Enrollment(
            id=enrollment_id_for(journey.id, self.customer_id, key, number, now),
            journey_id=journey.id,
            version=journey.version,
            customer_id=self.customer_id,
            entered_at=now,
            instance_key=key,
            trigger_event_id=trigger_event_id,
            context=context,
            expires_at=now + journey.max_lifetime if journey.max_lifetime else None,
        )
        self.active.append(enrollment)
        self.changes.touch(enrollment)
        self.changes.new_enrollments.add(enrollment.id)
        self._activity(enrollment, "entered", None, now)
        self.outcome.entered.append(
            Entered(journey.id, journey.version, enrollment.id, self.customer_id, now)
        )
        self._advance(enrollment, journey.entry, now)
        return enrollment

    # --- stepping ----------------------------------------------------------------------------

    def _wake(self, enrollment: Enrollment) -> None:
        at = enrollment.wake_at
        assert at is not None
        cj = self.registry.journeys[(enrollment.journey_id, enrollment.version)]
        enrollment.wake_at = None
        self.changes.touch(enrollment)
        if enrollment.expires_at is not None and at >= enrollment.expires_at:
            self._end(enrollment, "expired", "max lifetime", at)
            return
        step = cj.journey.steps.get(enrollment.step_id or "")
        if isinstance(step, Wait):
            self._advance(enrollment, step.next, at)
        elif isinstance(step, WaitForEvent):
            self._activity(enrollment, "timeout", step.event, at)
            self._advance(enrollment, step.on_timeout, at)

    def _advance(self, enrollment: Enrollment, step_id: str | None, at: datetime) -> None:
        """Run steps from ``step_id`` until the enrollment waits or ends."""
        cj = self.registry.journeys[(enrollment.journey_id, enrollment.version)]
        steps = cj.journey.steps
        self.changes.touch(enrollment)
        for _ in range(MAX_STEPS_PER_ADVANCE):
            if not enrollment.active:
                return
            if step_id is None:
                self._end(enrollment, "completed", None, at)
                return
            step = steps[step_id]
            enrollment.step_id = step_id
            enrollment.step_entered_at = at
            enrollment.visits[step_id] = enrollment.visits.get(step_id, 0) + 1
            self._activity(enrollment, "step", None, at)
            self.outcome.steps.append(StepRun(
                cj.journey.id, enrollment.id, self.customer_id, step_id, step.kind, at
            ))
            if isinstance(step, Send):
                if not self._send(cj, enrollment, step_id, step, at):
                    return
                step_id = step.next
            elif isinstance(step, Wait | WaitForEvent):
                wake = at + (step.duration if isinstance(step, Wait) else step.timeout)
                if enrollment.expires_at is not None and enrollment.expires_at < wake:
                    wake = enrollment.expires_at
                enrollment.wake_at = wake
                return
            elif isinstance(step, Branch):
                scope = self._scope(_EMPTY, enrollment.context)
                step_id = step.default
                for test, target in cj.branch_cases[enrollment.step_id]:
                    if test(scope):
                        step_id = target
                        break
            elif isinstance(step, Split):
                name, step_id = cj.split_path(
                    enrollment.step_id, split_fraction(self.customer_id, cj.journey.id,
                                                       enrollment.step_id)
                )
                enrollment.paths[enrollment.step_id] = name
                self._activity(enrollment, "path", name, at)
            elif isinstance(step, UpdateProfile):
                p = self.profile
                self._set_profile(Profile(
                    p.customer_id, merge_attributes(p.attributes, step.set, step.unset),
                    p.timezone, p.locale,
                ))
                step_id = step.next
            elif isinstance(step, Exit):
                self._end(enrollment, "exited", step.reason, at)
                return
        self._end(enrollment, "exited", "step limit reached", at)

    def _send(
        self, cj: CompiledJourney, enrollment: Enrollment, step_id: str, step: Send,
        at: datetime,
    ) -> bool:
        """Queue one message. Returns False when the enrollment ended instead (send-time
        validation: the audience and exit conditions are checked again right before sending)."""
        scope = self._scope(_EMPTY, enrollment.context)
        if cj.audience is not None and not cj.audience(scope):
            self._end(enrollment, "exited", "audience no longer matches", at)
            return False
        for criterion, where in cj.exit_conditions:
            if where(scope):
                self._end(enrollment, "exited", criterion, at)
                return False
        item = self.registry.content.get(step.content)
        variant = item.variant_for(step.channel, self.profile.locale) if item else None
        if item is None or variant is None:
            self._activity(enrollment, "send_failed", "no content variant", at)
            return True
        data = {
            "profile": self.profile.attributes,
            "event": enrollment.context,
            "context": enrollment.context,
            "customer_id": self.customer_id,
        }
        try:
            fields = self.renderer.render(item, variant, data)
        except RenderError as exc:
            self._activity(enrollment, "send_failed", str(exc)[:200], at)
            return True
        attempt = enrollment.visits.get(step_id, 1)
        message = Message(
            idempotency_key=f"{enrollment.id}:{step_id}:{attempt}",
            customer_id=self.customer_id,
            channel=step.channel,
            content_id=item.id,
            fields=fields,
            journey_id=enrollment.journey_id,
            journey_version=enrollment.version,
            step_id=step_id,
            enrollment_id=enrollment.id,
            created_at=at,
            transactional=step.transactional,
            locale=variant.locale,
            recipient=dict(self.profile.attributes),
        )
        self.changes.messages.append(message)
        self.outcome.messages.append(message)
        self._activity(enrollment, "sent", step.channel, at)
        return True

    # --- helpers -----------------------------------------------------------------------------

    def _end(self, enrollment: Enrollment, status: str, reason: str | None, at: datetime) -> None:
        enrollment.status = status  # type: ignore[assignment]
        enrollment.ended_at = at
        enrollment.end_reason = reason
        enrollment.wake_at = None
        self.changes.touch(enrollment)
        if enrollment in self.active:
            self.active.remove(enrollment)
        self._activity(enrollment, status, reason, at)
        self.outcome.ended.append(Ended(
            enrollment.journey_id, enrollment.id, self.customer_id, status, reason, at
        ))

    def _activity(
        self, enrollment: Enrollment, kind: str, detail: str | None, at: datetime
    ) -> None:
        self.changes.activities.append(Activity(
            enrollment.journey_id, enrollment.version,
            None if kind in ("entered",) else enrollment.step_id,
            kind, detail, enrollment.id, self.customer_id, at,
        ))

    def _set_profile(self, profile: Profile) -> None:
        self.profile = profile
        self.changes.profile = profile

    def _scope(self, event: Mapping[str, Any], context: Mapping[str, Any]) -> _Scope:
        return _Scope(self.profile.attributes, event, context, self.registry.segments)
