"""The delivery gate: what the policies say about one send, decided right before it.

Order: the channel (consent, blocks and contact details, trying the fallbacks in turn), then
quiet hours on that channel, then frequency caps. A deferred send makes its enrollment wait on
the Send step; on the wake-up every rule is checked again (consent may have changed meanwhile).
Each decision is written to the activity log:

- ``fallback``: a channel passed over (the detail says why) before a later one was used;
- ``suppressed``: the last channel could not be used either; nothing is sent, the journey goes on;
- ``quiet_hours``: ``<rule>: deferred to <instant>`` or ``<rule>: skipped``;
- ``capped``: ``<cap>: skipped``, ``<cap>: deferred to <instant>`` or ``<cap>: exited`` (the
  enrollment then ends as ``exited`` with reason ``frequency cap <cap>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

import attrs

from cjo.delivery.caps import capped_by, record_send
from cjo.delivery.consent import consent_problem, no_address
from cjo.delivery.quiet_hours import applies, release_at
from cjo.model.content import ContentItem
from cjo.model.definitions import Definitions
from cjo.model.journey import Journey
from cjo.model.offers import Offer
from cjo.model.policies import FrequencyCap, QuietHours, Topic
from cjo.model.steps import Send
from cjo.runtime.kinds.base import HALT, Halt
from cjo.timezones import customer_zone

if TYPE_CHECKING:
    from cjo.runtime.core import Decider
    from cjo.runtime.registry import CompiledJourney
    from cjo.runtime.state import Enrollment

__all__ = ["NO_POLICIES", "DeliveryPolicies", "choose_channel", "gate", "record", "send_tags"]


@attrs.frozen(slots=True)
class DeliveryPolicies:
    """The published topics, caps and quiet hours of one definitions generation."""

    topics: Mapping[str, Topic] = attrs.field(factory=dict)
    caps: tuple[FrequencyCap, ...] = ()
    quiet_hours: tuple[QuietHours, ...] = ()

    @classmethod
    def of(cls, definitions: Definitions) -> DeliveryPolicies:
        return cls({t.id: t for t in definitions.topics}, definitions.caps,
                   definitions.quiet_hours)


NO_POLICIES = DeliveryPolicies()


def send_tags(
    step: Send, item: ContentItem, journey: Journey, offer: Offer | None = None
) -> tuple[str, ...]:
    """What a send is tagged with: the step's tags, its content's, the offer's it sends (if
    one) and its journey's."""
    offered = offer.tags if offer is not None else ()
    return tuple(dict.fromkeys((*step.tags, *item.tags, *offered, *journey.tags)))


def choose_channel(
    d: Decider, step: Send, item: ContentItem, contact: Mapping[str, str]
) -> tuple[str | None, list[tuple[str, str]]]:
    """The first of the step's channels the customer can be reached on (None if none), and
    each channel passed over with the reason."""
    state = d.state
    attributes = d.profile.attributes
    topic = step.topic if step.topic is not None else item.topic
    topics = d.registry.delivery.topics
    passed: list[tuple[str, str]] = []
    for channel in (step.channel, *step.fallbacks):
        problem = consent_problem(state, channel, topic, step.transactional, topics)
        if problem is None:
            needed = contact.get(channel)
            if needed is not None and no_address(attributes.get(needed)):
                problem = f"no {needed}"
        if problem is None:
            return channel, passed
        passed.append((channel, problem))
    return None, passed


def gate(
    d: Decider, cj: CompiledJourney, enrollment: Enrollment, step: Send, item: ContentItem,
    at: datetime, offer: Offer | None = None, *, failover: bool = False,
) -> str | Halt | None:
    """The channel to send on now; None when the send is dropped and the journey goes on;
    HALT when the enrollment now waits (deferred) or has ended (capped with ``exit``).

    ``failover``: the send takes over from a message that failed (``Decider.fail_over``), for
    an enrollment that may have moved on, so it never waits nor ends it: a cap skips it,
    whatever ``when_capped`` says, and quiet hours are left to its dispatch, which holds it in
    the outbox until they end (or withholds it: ``skip``), as it does a late message."""
    policies = d.registry.delivery
    contact = d.options.contact_attributes
    state = d.state
    # A record without the rarely set fields has no statements and blocks nothing: decided
    # without reading them (each is a descriptor call).
    if not (
        contact or policies.topics
        or (state._rare is not None and (state.blocked or state.consent))
    ):
        # Nothing can stand in the way of the step's own channel: the common case, decided
        # without looking at topics, statements or contact details.
        channel: str | None = step.channel
        passed: list[tuple[str, str]] = []
    else:
        channel, passed = choose_channel(d, step, item, contact)
    for i, (ch, reason) in enumerate(passed):
        last = channel is None and i == len(passed) - 1
        d.activity(enrollment, "suppressed" if last else "fallback", reason, at, channel=ch,
                   content_id=item.id, content_version=item.version)
    if channel is None:
        return None
    if not (policies.quiet_hours or (policies.caps and not step.transactional)):
        return channel
    profile = d.profile
    zone = customer_zone(profile.timezone, cj.journey.timezone, d.options.default_timezone)
    rules = [q for q in policies.quiet_hours
             if not failover and applies(q, cj.journey.id, channel, step.transactional)]
    quiet = release_at(rules, at, zone, enrollment.id) if rules else None
    if quiet is not None:
        rule, until = quiet
        if rule.action == "skip":
            d.activity(enrollment, "quiet_hours", f"{rule.id}: skipped", at, channel=channel,
                       content_id=item.id, content_version=item.version)
            return None
        d.activity(enrollment, "quiet_hours", f"{rule.id}: deferred to {until.isoformat()}",
                   at, channel=channel, content_id=item.id, content_version=item.version)
        d.schedule(enrollment, until)
        return HALT
    if step.transactional or not policies.caps:
        return channel
    tags = send_tags(step, item, cj.journey, offer)
    capped = capped_by(policies.caps, d.state.sends, channel, tags, at, zone)
    if capped is None:
        return channel
    cap, until = capped
    action = "skip" if failover else step.when_capped
    detail = f"{cap.id}: deferred to {until.isoformat()}" if action == "defer" else (
        f"{cap.id}: {'skipped' if action == 'skip' else 'exited'}"
    )
    d.activity(enrollment, "capped", detail, at, channel=channel, content_id=item.id,
               content_version=item.version)
    if action == "skip":
        return None
    if action == "defer":
        d.schedule(enrollment, until)
    else:
        d.end(enrollment, "exited", f"frequency cap {cap.id}", at)
    return HALT


def record(
    d: Decider, cj: CompiledJourney, step: Send, item: ContentItem, channel: str, at: datetime,
    offer: Offer | None = None,
) -> None:
    """Count a send that went out in the ledger (marketing sends, when caps exist)."""
    caps = d.registry.delivery.caps
    if caps and not step.transactional:
        record_send(d.state, caps, channel, send_tags(step, item, cj.journey, offer), at)
