"""Events that change consent, and delivery feedback from providers.

Consent events (properties in brackets are optional):

- ``subscribed`` / ``unsubscribed`` [``topic``, ``channel``]: a subscription statement; without
  ``topic`` it is about every topic (all marketing), without ``channel`` about every channel.
- ``channel_blocked`` ``channel`` [``reason``] / ``channel_unblocked`` ``channel``: a channel
  block ("STOP" to SMS, a hard bounce reported elsewhere); nothing goes out on a blocked
  channel, transactional messages included.

Feedback events carry ``message_id`` (the message's ``idempotency_key``) and optionally
``channel``: ``message_delivered``, ``opened``, ``clicked`` [``url``], ``bounced`` [``type``:
``hard`` or ``soft`` (default)], ``complained``, and ``unsubscribed`` [``topic``]. Each is
written to the activity log with the journey, version, enrollment and step of the message it
names, and the channel, content and topic of the message as sent (a fallback channel, an
offer's content): the engine reads them from the outbox (``sent_messages``) and hands them to
the decider (``Decider.sent``). A message pruned from the outbox is taken to have gone
out on the event's ``channel``, else the Send step's, with the step's content.

A hard bounce blocks the channel (``mark_unreachable``, which a message that failed
permanently goes through too: ``record_permanent_failure``, after which the engine has the
Send step's next channel take over: ``Decider.fail_over``); a complaint unsubscribes the
customer from all marketing on it; an unsubscribe without ``topic`` but with a ``message_id``
unsubscribes from that message's topic (from all marketing on its channel when it has none).

Before anything of it is stored, the engine refuses an event of either kind whose ``channel``
names no known channel, and a statement naming an undeclared topic (``check_delivery_event``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from cjo.delivery.consent import (
    block,
    block_address,
    check_channel,
    check_topic,
    no_address,
    send_topic,
    set_consent,
    unblock,
)
from cjo.errors import InvalidEventError
from cjo.model.events import Event
from cjo.model.steps import Send
from cjo.runtime.ids import id_part, origin_key
from cjo.runtime.state import Activity, ActivityKind

if TYPE_CHECKING:
    from datetime import datetime

    from cjo.channels.base import Message
    from cjo.model.policies import Topic
    from cjo.runtime.core import Decider
    from cjo.storage.base import Storage

__all__ = [
    "CONSENT_EVENTS",
    "DELIVERY_EVENTS",
    "FEEDBACK_EVENTS",
    "PERMANENT_FAILURE",
    "RETRIES_EXHAUSTED",
    "STATEMENT_EVENTS",
    "LinkedMessage",
    "apply_delivery_event",
    "check_delivery_event",
    "locate_message",
    "mark_unreachable",
    "message_activity",
    "record_dead_letter",
    "record_dead_letter_retried",
    "record_permanent_failure",
    "sent_messages",
]

FEEDBACK_EVENTS = frozenset({
    "message_delivered", "opened", "clicked", "bounced", "complained", "unsubscribed",
})
CONSENT_EVENTS = frozenset({"subscribed", "unsubscribed", "channel_blocked", "channel_unblocked"})
#: The events that make a subscription statement (about their ``topic``, when they name one).
STATEMENT_EVENTS = frozenset({"subscribed", "unsubscribed"})
#: Every event name the delivery policies read, whatever journeys are published.
DELIVERY_EVENTS = FEEDBACK_EVENTS | CONSENT_EVENTS

# The tail of an enrollment id: the entry number, the entry instant in hexadecimal, and the
# count of erasures at that instant when there is one (``cjo.runtime.ids.enrollment_id_for``).
_ENTRY_TAIL = re.compile(r"(?:^|:)\d+\.[0-9a-f]+(?:\.\d+)?$")

_BLOCK_EVENTS = frozenset({"channel_blocked", "channel_unblocked"})
# The properties that name something, by event (the others: ``channel`` and ``message_id``).
_NAMES = {
    "subscribed": ("topic", "channel"),
    "unsubscribed": ("topic", "channel", "message_id"),
    "channel_blocked": ("channel", "reason"),
    "channel_unblocked": ("channel",),
}

LinkedMessage = tuple[str, int, str, str, Send]  # journey, version, enrollment, step, step def



def sent_messages(storage: Storage, items: Iterable[object]) -> dict[str, Message]:
    """The outbox messages that the feedback events among ``items`` name (one read per such
    event; other items cost a test), whoever's they are: the decision core reads no storage,
    so the engine looks them up beforehand and hands them to the deciders (``Decider.sent``),
    which read only those of their own enrollments (``locate_message``)."""
    found: dict[str, Message] = {}
    for item in items:
        if not isinstance(item, Event) or item.name not in FEEDBACK_EVENTS:
            continue
        key = _text(item.properties.get("message_id"))
        entry = storage.outbox_entry(key) if key is not None else None
        # Another customer's message may be one an identity merge made this customer's: the
        # decider takes it only if it holds the message's enrollment (``locate_message``).
        if entry is not None:
            found[entry.message.idempotency_key] = entry.message
    return found


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def locate_message(d: Decider, message_id: str) -> LinkedMessage | None:
    """The journey, version, enrollment and Send step of one of this customer's messages,
    from its idempotency key ``<enrollment id>:<step id>:<attempt>``."""
    # A failover's key is its original's and the channel (``failover_key``): the same step.
    head, _, attempt = origin_key(message_id).rpartition(":")
    if not attempt.isdigit():
        return None
    held = {e.id: (e.journey_id, e.version) for e in d.state.enrollments}
    held.update((x.id, (x.journey_id, x.version)) for x in d.state.ended)
    # An enrollment an identity merge moved here keeps its id, which names the anonymous
    # customer: its messages are this customer's now.
    for enrollment_id, (jid, version) in held.items():
        if head.startswith(enrollment_id + ":"):
            step_id = head[len(enrollment_id) + 1:]
            journey = d.registry.version(jid, version)
            step = None if journey is None else journey.steps.get(step_id)
            if isinstance(step, Send):
                return jid, version, enrollment_id, step_id, step
    versions = {enrollment_id: version for enrollment_id, (_, version) in held.items()}
    found: list[tuple[bool, int, int, int, LinkedMessage]] = []
    customer = id_part(d.customer_id)
    # Retired versions too: feedback on a message comes long after its send.
    for (jid, version), journey in d.registry.versions():
        prefix = f"{id_part(jid)}:{customer}:"
        if not head.startswith(prefix):
            # Ids made before ids were escaped hold the journey and customer ids as they are.
            prefix = f"{jid}:{d.customer_id}:"
            if not head.startswith(prefix):
                continue
        for step_id, step in journey.steps.items():
            if not isinstance(step, Send) or not head.endswith(f":{step_id}"):
                continue
            enrollment_id = head[: -len(step_id) - 1]
            if not _ENTRY_TAIL.search(enrollment_id[len(prefix):]):
                continue
            # Ids may contain ':', so several may fit: prefer the version the record knows for
            # the enrollment, then the longest journey id, then the newest version.
            found.append((versions.get(enrollment_id) == version, len(jid), version, len(found),
                          (jid, version, enrollment_id, step_id, step)))
    return max(found)[4] if found else None


def check_delivery_event(
    topics: Mapping[str, Topic], channels: Collection[str], event: Event, where: str = ""
) -> None:
    """Refuse, before anything of it is stored, an event of the delivery policies that names
    what no message can have: a ``subscribed`` or ``unsubscribed`` event whose ``topic`` the
    published ``topics`` do not declare (``UnknownTopicError``), and any whose ``channel`` is
    not one of the known ``channels`` (``UnknownChannelError``): registered, or named by the
    published definitions."""
    props = event.properties
    name = event.name
    # A value that is not a name would be read as left out, widening a statement to every
    # topic or channel: refused, as ``set_consent`` and ``block_channel`` refuse it.
    for key in _NAMES.get(name, ("channel", "message_id")):
        value = props.get(key)
        if value is None and key == "channel" and name in _BLOCK_EVENTS:
            raise InvalidEventError(
                f"{where}{name!r} event: property 'channel' must be a non-empty string (the "
                "channel to block or unblock), got none"
            )
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidEventError(
                f"{where}{name!r} event: property {key!r} must be a non-empty string, got "
                f"{value!r}"
            )
    if name == "bounced" and props.get("type") not in _BOUNCE_TYPES:
        # "HARD" or "permanent" read as soft would leave the address in use.
        raise InvalidEventError(
            f"{where}'bounced' event: property 'type' must be 'hard' or 'soft' (the default), "
            f"got {props['type']!r}"
        )
    if name in STATEMENT_EVENTS:
        check_topic(topics, _text(props.get("topic")), where)
    check_channel(channels, _text(props.get("channel")), where)


#: A bounce's ``type``; None (left out) is soft.
_BOUNCE_TYPES = ("hard", "soft", None)


def apply_delivery_event(d: Decider, event: Event, now: datetime) -> None:
    """Apply a consent or feedback event to the customer's record (and activity log)."""
    name = event.name
    props = event.properties
    channel = _text(props.get("channel"))
    topic = _text(props.get("topic"))
    message_id = _text(props.get("message_id"))
    linked = locate_message(d, message_id) if message_id is not None else None
    # The outbox's message, when it is this customer's (``linked`` says it is).
    message = d.sent.get(message_id) if linked is not None and message_id is not None else None
    # The channel the message went out on (a subscription statement keeps the event's own).
    sent_on = channel
    content: tuple[str, int | None] | None = None
    if linked is not None:
        sent_on, content_id, version = _as_sent(message, linked[4], channel)
        content = (content_id, version)
        if name == "unsubscribed" and topic is None:
            topic = send_topic(d.registry, linked[4], content_id)
            if topic is None:
                channel = sent_on  # a message of no topic: all marketing on its channel
    state = d.state
    # A statement is the customer's word at the instant they said it (a delayed event's own
    # timestamp, never later than now), so the most recent one wins whatever the arrival order.
    said = min(event.timestamp, now)
    if name in {"subscribed", "unsubscribed"}:
        set_consent(state, topic, channel, name == "subscribed", said)
    elif name == "channel_blocked" and channel is not None:
        block(state, channel, _text(props.get("reason")) or "blocked")
    elif name == "channel_unblocked" and channel is not None:
        unblock(state, channel)
    elif name == "bounced" and sent_on is not None and props.get("type") == "hard":
        mark_unreachable(d, sent_on, "hard bounce", now, message)
    elif name == "complained" and sent_on is not None:
        set_consent(state, None, sent_on, False, said)
    d.touch()
    if linked is not None and content is not None and name in FEEDBACK_EVENTS:
        jid, version, enrollment_id, step_id, _ = linked
        detail = {
            "bounced": "hard" if props.get("type") == "hard" else "soft",
            "clicked": _text(props.get("url")),
            "unsubscribed": topic or "*",
        }.get(name)
        d.activities.append(Activity(
            now, d.customer_id, enrollment_id, jid, version, step_id, name, detail, sent_on,
            content[0], content[1],
        ))


def _as_sent(
    message: Message | None, step: Send, channel: str | None
) -> tuple[str, str, int | None]:
    """The channel, content id and content version a message of ``step`` went out with: the
    outbox's ``message`` when the engine found it (what it records wins over the event's
    ``channel``: a bounce must block the address that bounced), else the event's channel, or
    the step's, and the step's content (version unknown)."""
    if message is not None:
        return message.channel, message.content_id, message.content_version
    return channel or step.channel, step.content, None


def mark_unreachable(
    d: Decider, channel: str, reason: str, at: datetime, message: Message | None = None
) -> None:
    """The customer's address on ``channel`` is dead (a hard bounce, a permanent delivery
    failure): block the channel, so that sends on it are suppressed and fallbacks apply,
    until the host lifts it or the profile gets a new address (``readdressed``). A channel
    already blocked keeps the reason it was blocked for (a "STOP" stays a "STOP"). Nothing
    when ``message`` went to an address the profile has since replaced: the new one did not
    fail."""
    if message is not None and _readdressed_since(d, message, channel):
        return
    if block_address(d.state, channel, reason, at):
        d.touch()


def _readdressed_since(d: Decider, message: Message, channel: str) -> bool:
    """Whether the profile's address on ``channel`` differs from the one ``message`` carried
    (``Message.recipient``); False when either is not known."""
    attribute = d.options.contact_attributes.get(channel)
    if attribute is None or attribute not in message.recipient:
        return False
    current = d.profile.attributes.get(attribute)
    return not no_address(current) and current != message.recipient[attribute]


def message_activity(
    at: datetime, customer_id: str, message: Message, kind: ActivityKind, detail: str | None
) -> Activity:
    """An activity-log entry about ``message``, against its journey, step, channel and content,
    logged on ``customer_id`` (the message's customer, or the known one it was merged into)."""
    return Activity(
        at, customer_id, message.enrollment_id, message.journey_id, message.journey_version,
        message.step_id, kind, detail, message.channel, message.content_id,
        message.content_version,
    )


def record_permanent_failure(
    d: Decider, message: Message, error: str | None, now: datetime
) -> str:
    """``message`` failed permanently: mark its channel unreachable for the customer, and log
    it as ``unreachable`` (detail: the reason) against the message's journey and step.
    Returns the reason (``permanent failure: <error>``)."""
    reason = f"permanent failure: {error}" if error else "permanent failure"
    mark_unreachable(d, message.channel, reason, now, message)
    d.touch()  # the activity is written even when the channel was blocked already
    d.activities.append(message_activity(now, d.customer_id, message, "unreachable", reason))
    return reason


#: ``dead_letter`` details: why a message that went to the channel failed for good.
PERMANENT_FAILURE: Final = "permanent failure"
RETRIES_EXHAUSTED: Final = "retries exhausted"


def record_dead_letter(d: Decider, message: Message, permanent: bool, now: datetime) -> None:
    """``message`` became a dead letter without blaming the customer's address (those are
    ``unreachable``): a failure on the sender's side, or transient failures until the retries
    ran out. Logged as ``dead_letter`` (detail: ``permanent failure`` or ``retries
    exhausted``; the error itself is the dead letter's) against its journey and step."""
    d.touch()
    d.activities.append(message_activity(
        now, d.customer_id, message, "dead_letter",
        PERMANENT_FAILURE if permanent else RETRIES_EXHAUSTED,
    ))


def record_dead_letter_retried(d: Decider, message: Message, now: datetime) -> None:
    """The host put the dead letter ``message`` back in the outbox: logged as
    ``dead_letter_retried``, so reports count it as failed no longer (it goes out, or fails
    and is logged again)."""
    d.touch()
    d.activities.append(message_activity(now, d.customer_id, message, "dead_letter_retried",
                                         None))
