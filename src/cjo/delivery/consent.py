"""Consent: may this customer receive this message on this channel?

The record keeps two things (``CustomerState.consent`` and ``CustomerState.blocked``):

- subscription statements: (topic or ``*``, channel or ``*``) -> (subscribed, instant). Of the
  statements that cover a send's (topic, channel), the most recent wins (on the same instant,
  the one said last). An opt-in topic needs a statement naming it: a broad "subscribe to
  everything" lifts broad opt-outs but does not opt anyone in to an opt-in topic.
- channel blocks (hard bounce, "STOP"): nothing at all goes out on a blocked channel, not even
  a transactional message.

Transactional sends pass subscription statements; marketing sends need them to allow.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from cjo.errors import UnknownChannelError, UnknownTopicError
from cjo.model.policies import Topic
from cjo.model.steps import Send
from cjo.runtime.state import ConsentKey, CustomerState

if TYPE_CHECKING:
    from cjo.channels.base import Message
    from cjo.runtime.registry import Registry

__all__ = [
    "ANY",
    "UNREACHABLE_MARK",
    "WITHHOLD_MARK",
    "block",
    "block_address",
    "check_channel",
    "check_topic",
    "consent_problem",
    "message_step",
    "no_address",
    "readdressed",
    "send_topic",
    "set_consent",
    "subscribed",
    "unblock",
    "withheld",
    "withhold_mark",
]

#: Stands for every topic or every channel in a consent statement.
ANY = "*"


def _covers(broad: ConsentKey, narrow: ConsentKey) -> bool:
    return broad[0] in (ANY, narrow[0]) and broad[1] in (ANY, narrow[1])


def set_consent(
    state: CustomerState, topic: str | None, channel: str | None, value: bool, at: datetime
) -> None:
    """Record that the customer subscribed (``value``) or unsubscribed at ``at``, to ``topic``
    (None: every topic) on ``channel`` (None: every channel)."""
    key = (topic or ANY, channel or ANY)
    consent = state.consent
    # A statement that arrives late (a delayed event) loses to a newer one covering it: it
    # could never win, so it is not kept. A newer broad "yes" does not cover one naming a
    # topic, which still decides an opt-in topic.
    if any(_covers(k, key) and when > at and not (yes and k[0] == ANY != key[0])
           for k, (yes, when) in consent.items()):
        return
    consent = state.own_consent()
    # Older statements this one covers can never win again: drop them, so the record stays
    # as small as what the customer said last. Save, under a broad "yes", those naming a
    # topic: the latest of them still decides an opt-in topic, which a broad "yes" does not.
    keep_named = value and key[0] == ANY
    for k in [k for k, (_, when) in consent.items()
              if _covers(key, k) and when <= at and not (keep_named and k[0] != ANY)]:
        del consent[k]
    consent[key] = (value, at)  # last in order: said last


def check_topic(topics: Mapping[str, Topic], topic: str | None, where: str = "") -> None:
    """Refuse a statement about ``topic`` unless ``topics`` (the published ones) declare it:
    no send can name another, so it would never apply. ``where`` prefixes the message."""
    if topic is not None and topic not in topics:
        raise UnknownTopicError(topic, topics, where)


def check_channel(known: Collection[str], channel: str | None, where: str = "") -> None:
    """Refuse a statement or a block about ``channel`` unless it is ``known`` (registered, or
    named by the published definitions): no message can go out on another, so it would never
    apply. ``where`` prefixes the message."""
    if channel is not None and channel not in known:
        raise UnknownChannelError(channel, known, where)


def subscribed(state: CustomerState, topic: str | None, channel: str, opt_in: bool) -> bool:
    """Whether a marketing send of ``topic`` (None: no topic) may go out on ``channel``."""
    return _deciding(state, topic, channel, opt_in)[0]


def _deciding(
    state: CustomerState, topic: str | None, channel: str, opt_in: bool
) -> tuple[bool, ConsentKey | None]:
    """``subscribed``, and the key of the statement that decides it (None: no statement
    does, the topic's default decides)."""
    consent = state.consent
    if not consent:
        return not opt_in, None
    # The record keeps statements in the order they were said: on the same instant, the one
    # said last wins.
    covering = [
        (when, i, value, key)
        for i, (key, (value, when)) in enumerate(consent.items())
        if key[0] in (ANY, topic) and key[1] in (ANY, channel)
    ]
    if not covering:
        return not opt_in, None
    _, _, value, key = max(covering)
    if value and opt_in and key[0] == ANY:
        # A broad "yes" lifts broad opt-outs, but only a statement naming an opt-in topic
        # opts the customer in to it.
        naming = [c for c in covering if c[3][0] != ANY]
        if not naming:
            return False, None
        _, _, value, key = max(naming)
    return value, key


#: The prefix of the mark (``CustomerState.marks``, with the instant) that says a channel's
#: block concerns the customer's address on it (a hard bounce, a permanent failure), not their
#: word: a new address lifts it (``readdressed``). Any other block or unblock drops the mark.
UNREACHABLE_MARK: Final = "unreachable:"


def block(state: CustomerState, channel: str, reason: str) -> None:
    state.own_blocked()[channel] = reason
    if state.marks:
        state.marks.pop(UNREACHABLE_MARK + channel, None)


def unblock(state: CustomerState, channel: str) -> bool:
    if channel not in state.blocked:
        return False
    del state.own_blocked()[channel]
    if state.marks:
        state.marks.pop(UNREACHABLE_MARK + channel, None)
    return True


def block_address(state: CustomerState, channel: str, reason: str, at: datetime) -> bool:
    """Block ``channel`` because the customer's address on it is dead (a hard bounce, a
    permanent failure), until the block is lifted or the address changes (``readdressed``).
    A channel already blocked keeps its reason (a "STOP" stays a "STOP"). Whether it blocked."""
    if channel in state.blocked:
        return False
    block(state, channel, reason)
    state.marks[UNREACHABLE_MARK + channel] = at
    return True


def readdressed(
    state: CustomerState, contact: Mapping[str, str], old: Mapping[str, Any],
    new: Mapping[str, Any],
) -> None:
    """Lift the blocks of a dead address (``block_address``) on the channels whose contact
    attribute (``contact``: channel -> attribute) the profile change from ``old`` to ``new``
    gave a new value: the new address has not bounced."""
    marks = state.marks
    if not marks:
        return
    for channel, attribute in contact.items():
        if UNREACHABLE_MARK + channel not in marks:
            continue
        after = new.get(attribute)
        if not no_address(after) and after != old.get(attribute):
            unblock(state, channel)


def no_address(value: object) -> bool:
    """Whether a contact detail reaches nobody: absent, or text that is empty or only
    whitespace (an email of "  " is no address)."""
    return value is None or (isinstance(value, str) and not value.strip())


def consent_problem(
    state: CustomerState,
    channel: str,
    topic: str | None,
    transactional: bool,
    topics: Mapping[str, Topic],
) -> str | None:
    """Why this send may not go out on ``channel`` for lack of consent, or None."""
    reason = state.blocked.get(channel)
    if reason is not None:
        return f"channel blocked: {reason}"
    if transactional:
        return None
    declared = topics.get(topic) if topic is not None else None
    opt_in = declared is not None and declared.default == "opt_in"
    allowed, key = _deciding(state, topic, channel, opt_in)
    if allowed:
        return None
    if key is None:  # no statement refuses: an opt-in topic nobody opted in to
        return f"no opt-in to {topic}"
    # Said as the statement that decides it was made: a topic's send stopped by an
    # unsubscribe from all marketing names that, not the topic (nor a missing opt-in, which
    # the unsubscribe may have replaced).
    what = "all marketing" if key == (ANY, ANY) else "marketing" if key[0] == ANY else key[0]
    return f"unsubscribed from {what}" + ("" if key[1] == ANY else f" on {key[1]}")


def message_step(registry: Registry, journey_id: str, version: int, step_id: str) -> Send | None:
    """The Send step that wrote a message, if its journey version is still known (retired
    or not)."""
    journey = registry.version(journey_id, version)
    step = journey.steps.get(step_id) if journey is not None else None
    return step if isinstance(step, Send) else None


def send_topic(registry: Registry, step: Send | None, content_id: str) -> str | None:
    """The topic of a send of ``content_id`` (the content actually sent: an offer's, say):
    the Send step's topic, else the content's."""
    if step is not None and step.topic is not None:
        return step.topic
    item = registry.content.get(content_id)
    return item.topic if item is not None else None


#: The prefix of the marks (``CustomerState.marks``) an identity merge leaves on the emptied
#: anonymous record for a message a process was sending at the merge that the merged record
#: stops: should it come back (its send failed, or its sender died), it is withheld.
WITHHOLD_MARK: Final = "withhold:"


def withhold_mark(message: Message) -> str:
    """The mark that withholds ``message`` should it come back (``WITHHOLD_MARK``)."""
    return WITHHOLD_MARK + message.idempotency_key


def withheld(registry: Registry, state: CustomerState, message: Message) -> str | None:
    """Why ``message``, written earlier, may no longer go out (a block, an unsubscribe since),
    or None. The same rule as at the send: a block stops everything, consent only marketing."""
    step = message_step(registry, message.journey_id, message.journey_version, message.step_id)
    return consent_problem(
        state, message.channel, send_topic(registry, step, message.content_id),
        message.transactional, registry.delivery.topics,
    )
