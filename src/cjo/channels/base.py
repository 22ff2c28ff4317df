"""What a channel adapter implements, and the messages it receives."""

from __future__ import annotations

import abc
import inspect
import logging
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

import attrs

from cjo.errors import UsageError
from cjo.limits import MAX_DELIVERY_ERROR

__all__ = ["Channel", "DeliveryResult", "DeliveryStatus", "Message", "deliver", "is_async"]

log = logging.getLogger("cjo.channels")

#: ``delivered``: the provider accepted the message. ``transient``: it did not, but a later
#: attempt may succeed (a timeout, a 503, a full mailbox); the engine retries it with back-off.
#: ``permanent``: no attempt will ever succeed (no address, a 400, a rejected recipient); the
#: message becomes a dead letter at once.
DeliveryStatus = Literal["delivered", "transient", "permanent"]

_STATUSES = ("delivered", "transient", "permanent")


def _check_status(_result: object, _attribute: object, status: object) -> None:
    if status not in _STATUSES:
        raise UsageError(
            f"DeliveryResult status {status!r} is not one of {', '.join(_STATUSES)}"
        )


def _check_text(_result: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    # Stored as the message's last error by every storage: something else (an exception
    # object) could not be written, and the attempt would never be recorded.
    if value is not None and not isinstance(value, str):
        raise UsageError(
            f"DeliveryResult {attribute.name} must be a str or None, got "
            f"{type(value).__name__} {value!r:.80}"
        )


@attrs.frozen(slots=True)
class Message:
    """One message to deliver. ``idempotency_key`` is stable across retries and restarts:
    a channel that sees a key twice should deliver once."""

    idempotency_key: str
    customer_id: str
    channel: str
    content_id: str
    fields: Mapping[str, str]
    journey_id: str
    journey_version: int
    step_id: str
    enrollment_id: str
    created_at: datetime
    transactional: bool = False
    locale: str | None = None
    #: The contact attributes of the profile a channel needs (email, phone...), not the
    #: whole profile: see ``Engine(recipient_attributes=...)``.
    recipient: Mapping[str, Any] = attrs.field(factory=dict)
    content_version: int = 1
    #: The A/B variant sent (``Variant.name``), None for the unnamed one.
    variant: str | None = None
    #: The offer chosen, when the Send chose among offers (None: none, or the fallback).
    offer_id: str | None = None
    #: The enrollment's context it was rendered with, kept only when its Send step has
    #: channels to fail over to after this one: a failover is rendered with it, whatever
    #: became of the enrollment since (docs/delivery-policies.md).
    context: Mapping[str, Any] = attrs.field(factory=dict)


def _check_flag(_result: object, attribute: attrs.Attribute[bool], value: object) -> None:
    # A truthy "no" would block the customer's channel.
    if not isinstance(value, bool):
        raise UsageError(
            f"DeliveryResult {attribute.name} must be True or False, got "
            f"{type(value).__name__} {value!r:.80}"
        )


def _check_retry_after(
    result: DeliveryResult, _attribute: attrs.Attribute[timedelta | None], value: object
) -> None:
    if value is None:
        return
    if result.status != "transient":
        # Only a transient failure is tried again: on another status it would mean nothing.
        raise UsageError(
            f"DeliveryResult retry_after is for a transient failure, not {result.status}"
        )
    if not isinstance(value, timedelta):
        raise UsageError(
            f"DeliveryResult retry_after must be a timedelta or None, got "
            f"{type(value).__name__} {value!r:.80}"
        )
    if value < timedelta(0):
        raise UsageError(f"DeliveryResult retry_after must not be negative, got {value}")


@attrs.frozen(slots=True)
class DeliveryResult:
    """What a channel did with a message: ``delivered``, ``transient`` (may be retried) or
    ``permanent`` (never retried). ``error`` says why an attempt failed.

    ``unreachable`` (read for ``permanent`` only): the failure says the customer cannot be
    reached on this channel (a refused address, a dead device token), so the engine blocks
    the channel in their record, as a hard bounce does. False for a failure on the sending
    side (a refused login, rejected content, a wrong secret): the message is a dead letter,
    and the customer's address is not blamed.

    ``retry_after`` (``transient`` only): how long the provider asked to be left alone (an
    HTTP ``Retry-After``). The next attempt waits at least that long, however short the
    back-off would be (at most ``cjo.limits.MAX_RETRY_AFTER``)."""

    status: DeliveryStatus = attrs.field(default="delivered", validator=_check_status)
    provider_id: str | None = attrs.field(default=None, validator=_check_text)
    error: str | None = attrs.field(default=None, validator=_check_text)
    unreachable: bool = attrs.field(default=True, validator=_check_flag)
    retry_after: timedelta | None = attrs.field(default=None, validator=_check_retry_after)

    @property
    def ok(self) -> bool:
        return self.status == "delivered"

    @classmethod
    def transient(
        cls, error: str | None = None, *, retry_after: timedelta | None = None
    ) -> DeliveryResult:
        return cls("transient", error=_needed(error, "transient"), retry_after=retry_after)

    @classmethod
    def permanent(cls, error: str | None = None, *, unreachable: bool = True) -> DeliveryResult:
        return cls("permanent", error=_needed(error, "permanent"), unreachable=unreachable)


def _needed(error: str | None, status: str) -> str:
    # Said by cjo rather than as Python's missing-argument TypeError: a failure without its
    # error would leave the message's last error (and a blocked channel's reason) empty.
    if error is None:
        raise UsageError(
            f"DeliveryResult.{status}() needs error: the text saying why the attempt failed "
            "(kept as the message's last error)"
        )
    return error


class Channel(abc.ABC):
    """A delivery adapter (email, SMS, push, webhook...). Subclass it and implement ``send``.
    Check it with ``cjo.testing.ChannelContract``.

    ``channel_type`` (``"email"``, ``"sms"``, ``"push"``, ``"in_app"``, ``"webhook"``) says
    which fields content for it must have, whatever name it is registered under; None leaves
    it to the registered name (docs/content.md)."""

    channel_type: ClassVar[str | None] = None

    @abc.abstractmethod
    def send(self, message: Message) -> DeliveryResult:
        """Deliver ``message``. Return ``transient`` (or raise) for a problem a later attempt
        may not have, ``permanent`` for one it will. A plain method (cjo does not await it),
        which leaves ``message`` as it is: copy what the provider needs changed."""


def is_async(function: object) -> bool:
    """Whether calling ``function`` (a function, a method or an object with ``__call__``)
    returns a coroutine to await, rather than its result."""
    return inspect.iscoroutinefunction(function) or (
        callable(function) and inspect.iscoroutinefunction(type(function).__call__)
    )


def deliver(channel: Channel | None, message: Message) -> DeliveryResult:
    """One delivery attempt as the engine classifies it: a missing channel is permanent (and
    says nothing of the customer's address); an exception raised by the channel, or a result
    that is not a ``DeliveryResult``, is transient (a failing adapter must not lose the
    message)."""
    if channel is None:
        return DeliveryResult.permanent(f"no channel {message.channel!r}", unreachable=False)
    try:
        result = channel.send(message)
    except (KeyboardInterrupt, SystemExit):
        raise  # the process is asked to stop: the caller records what was sent before
    except BaseException as exc:
        # Retried like a provider's refusal, but it may be a bug in the adapter: the traceback
        # is the only place that says where. Not only ``Exception``: a library's timeout or
        # cancellation deriving from ``BaseException`` would otherwise end the whole batch,
        # leaving messages sent before it unrecorded (and so sent again).
        log.warning("channel %r raised while sending %s", message.channel,
                    message.idempotency_key, exc_info=True)
        try:
            text = str(exc)
        except BaseException:  # a broken __str__ must not end the batch either
            text = "<str() of the exception failed>"
        return DeliveryResult.transient(_clip(f"{type(exc).__name__}: {text}"))
    if not isinstance(result, DeliveryResult):
        try:
            shown = f"{result!r:.200}"
        except BaseException:  # a broken __repr__ must not end the batch, as a broken __str__
            shown = f"a {type(result).__name__} (its repr() failed)"
        return DeliveryResult.transient(_clip(f"channel returned {shown}, not a DeliveryResult"))
    error = result.error
    if (
        result.status not in _STATUSES or type(result.unreachable) is not bool
        or (error is not None and type(error) is not str)
        or (result.provider_id is not None and type(result.provider_id) is not str)
        or result.retry_after is not None  # rare: checked in full
    ):
        # Fields set past the constructor's checks (``object.__setattr__``) could not be
        # stored, or would be misread (a truthy "no" blocking the customer's channel). Tested
        # field by field first: the full check costs more than the rest of a delivery.
        try:
            attrs.validate(result)
        except UsageError as exc:
            return DeliveryResult.transient(
                _clip(f"channel returned an invalid DeliveryResult: {exc}")
            )
    if error is not None and (
        len(error) > MAX_DELIVERY_ERROR or not (error.isascii() and "\x00" not in error)
    ):
        clipped = _clip(error)
        if clipped != error:
            return attrs.evolve(result, error=clipped)
    return result


#: What no storage can keep in text (PostgreSQL refuses NUL, UTF-8 lone surrogates).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _clip(text: str) -> str:
    """``text`` as it can be stored: cut to ``MAX_DELIVERY_ERROR`` characters, a NUL or a
    lone surrogate (a provider's reply decoded with ``surrogateescape``) replaced by U+FFFD.
    Left as it was, recording the attempt would fail, and the message be sent again."""
    if not (text.isascii() and "\x00" not in text):
        text = _UNSTORABLE.sub("\ufffd", text)
    if len(text) <= MAX_DELIVERY_ERROR:
        return text
    return text[: MAX_DELIVERY_ERROR - 1] + "…"
