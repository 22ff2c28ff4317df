"""Checks of what a host passes to ``Engine``: its constructor and its public methods.

Each check runs once per host call, before any transaction, and raises a cjo error naming the
argument and what was given: ``UsageError`` for options and arguments out of range,
``InvalidEventError`` for ids and stored values (as events and profile updates do),
``ClockError`` for instants, ``DefinitionError`` for what ``publish`` is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from cjo.channels.base import Channel, is_async
from cjo.clock import Clock, ensure_span
from cjo.content.channels import CHANNEL_TYPES
from cjo.delivery.consent import ANY
from cjo.described import given, redacted, short
from cjo.errors import ClockError, DefinitionError, Problem, UsageError
from cjo.limits import Limits
from cjo.model.definitions import Definitions
from cjo.model.events import check_id
from cjo.storage.base import Retention, Storage
from cjo.timezones import is_zone
from cjo.validation import duplicate_ids

__all__ = [
    "activity_window",
    "attribute_names",
    "callable_or_none",
    "check_channels",
    "check_consent",
    "check_decision_options",
    "check_delivery",
    "check_engine_options",
    "clock_reading",
    "count",
    "definitions_of",
    "ids_of",
    "refuse_duplicates",
]

T = TypeVar("T")



# --- instants ----------------------------------------------------------------------------------


def clock_reading(clock: Clock, now: object) -> datetime:
    """``now``, the clock's reading in UTC, or ``ClockError`` naming the clock when it is not
    an aware datetime (a naive one would be read in the machine's zone by some storages and fail
    in others). In UTC because durations added to an instant of a zone with daylight saving
    time would count wall time (a 24-hour wait lasting 23 hours)."""
    if isinstance(now, datetime) and now.utcoffset() is not None:
        return now.astimezone(UTC)
    got = (f"a naive one ({now.isoformat()}): give it a tzinfo, e.g. datetime.now(UTC)"
           if isinstance(now, datetime) else given(now))
    raise ClockError(
        f"{type(clock).__name__}.now() must return a timezone-aware datetime, got {got}"
    )


# --- the constructor ---------------------------------------------------------------------------


def check_engine_options(
    *,
    storage: object,
    clock: object,
    mappings: Mapping[str, object],
    counts: Mapping[str, tuple[object, int]],
    spans: Mapping[str, tuple[object, bool]],
    render: object,
    limits: object,
    retention: object,
) -> None:
    """Refuse engine options that would fail later, or quietly do something else.

    ``mappings``: name -> a value that must be a mapping or None; ``counts``: name -> (value,
    least accepted int); ``spans``: name -> (value, whether zero is accepted)."""
    _check_storage(storage)
    if clock is not None and not _is_clock(clock):
        raise UsageError(
            "clock must be a cjo Clock (SystemClock, ManualClock, or a subclass with now()), "
            f"got {given(clock)}"
        )
    for name, value in mappings.items():
        if value is not None and not isinstance(value, Mapping):
            raise UsageError(f"{name} must be a mapping (a dict) or None, got {given(value)}")
    for name, (value, least) in counts.items():
        count(value, name, least)
    for name, (value, zero) in spans.items():
        if not isinstance(value, timedelta) or value < timedelta(0) or (
            not zero and not value
        ):
            kind = "a non-negative" if zero else "a positive"
            raise UsageError(f"{name} must be {kind} timedelta, got {given(value)}")
    flag(render, "render")
    for name, value, cls in (("limits", limits, Limits), ("retention", retention, Retention)):
        if value is not None and not isinstance(value, cls):
            raise UsageError(f"{name} must be a cjo {cls.__name__} or None, got {given(value)}")


def check_channels(channels: Mapping[Any, Any]) -> None:
    """Each channel registered under an id, as a cjo ``Channel`` (its ``channel_type`` and
    ``send`` are read later, when nothing could say which option was wrong)."""
    for name, channel in channels.items():
        check_id(name, "channel name")
        if name == ANY:
            # Consent statements and unsubscribes on channel '*' are about every channel.
            raise UsageError(f"channel name {ANY!r} stands for every channel in consent "
                             "statements; register the channel under another name")
        if not isinstance(channel, Channel):
            hint = (
                "; a function is an action: register it with Engine(actions=...)"
                if callable(channel) else ""
            )
            raise UsageError(
                f"channel {name!r} must be a cjo Channel (a subclass with send(message) -> "
                f"DeliveryResult), got {given(channel)}{hint}"
            )
        if is_async(channel.send):
            raise UsageError(
                f"channel {name!r}: send is a coroutine function (async def), which cjo calls "
                "without awaiting: every message would fail; make send a plain method"
            )
        ctype = channel.channel_type
        if ctype is not None and (not isinstance(ctype, str) or ctype not in CHANNEL_TYPES):
            # Else read as free-form: content for it would never be checked for its fields.
            raise UsageError(
                f"channel {name!r}: channel_type must be a channel type "
                f"({', '.join(sorted(CHANNEL_TYPES))}) or None, got {ctype!r}"
            )


def flag(value: object, what: str) -> bool:
    """``value`` if it is a bool, else ``UsageError``: a truthy string such as "no" would
    silently mean yes."""
    if not isinstance(value, bool):
        raise UsageError(f"{what} must be True or False, got {given(value)}")
    return value


def count(value: object, what: str, least: int = 1) -> int:
    """``value`` if it is an int (not a bool) of at least ``least``, else ``UsageError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UsageError(f"{what} must be an int >= {least}, got {given(value)}")
    return value


def callable_or_none(value: object, what: str) -> None:
    """``UsageError`` unless ``value`` is None or callable (a callback such as ``progress``),
    before any work: a bad one found after the first batch would stop the call midway."""
    if value is not None and not callable(value):
        raise UsageError(f"{what} must be callable (or None), got {type(value).__name__}")


def _check_storage(storage: object) -> None:
    if storage is None or isinstance(storage, Storage):
        return
    hint = (
        "; to open one from a URL, use cjo.storage.url.open_storage(url)"
        if isinstance(storage, str) else ""
    )
    # A URL may carry the database password: shown redacted.
    shown = f"str {short(redacted(storage))}" if isinstance(storage, str) else given(storage)
    raise UsageError(
        "storage must be a cjo Storage (InMemoryStorage, SQLiteStorage, PostgresStorage), "
        f"got {shown}{hint}"
    )


def _is_clock(clock: object) -> bool:
    # A datetime has a callable now() too, which reads the machine's wall clock, naive.
    return isinstance(clock, Clock) or (
        not isinstance(clock, date | type) and callable(getattr(clock, "now", None))
    )


def attribute_names(value: object, what: str) -> tuple[str, ...]:
    """A collection of attribute names as a tuple; a bare str is refused (it is not read as
    its characters)."""
    if isinstance(value, str | Mapping) or not isinstance(value, Iterable):
        raise UsageError(f"{what} must be a list or tuple of attribute names, got {given(value)}")
    names = tuple(value)
    for name in names:
        if not isinstance(name, str) or not name:
            raise UsageError(f"{what} must hold non-empty strings, got {given(name)}")
    return names


def check_delivery(
    dispatch: object, attempts: object, backoff: object, max_delay: object
) -> None:
    if dispatch not in ("inline", "deferred"):
        raise UsageError(f"dispatch must be 'inline' or 'deferred', got {dispatch!r}")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise UsageError(f"max_delivery_attempts must be an int >= 1, got {attempts!r}")
    if not isinstance(backoff, timedelta) or backoff <= timedelta(0):
        raise UsageError(f"retry_backoff must be a positive timedelta, got {backoff!r}")
    if not isinstance(max_delay, timedelta) or max_delay < backoff:
        raise UsageError(
            f"max_retry_delay must be a timedelta >= retry_backoff, got {max_delay!r}"
        )


def check_decision_options(
    default_timezone: object, late_events: object, contact_attributes: Mapping[Any, Any],
    channel_types: Mapping[Any, Any], scorers: Mapping[Any, Any],
) -> None:
    if default_timezone is not None and not (
        isinstance(default_timezone, str) and is_zone(default_timezone)
    ):
        raise UsageError(f"default_timezone {default_timezone!r} is not a known IANA time zone")
    if late_events not in ("decide", "ignore"):
        raise UsageError(f"late_events must be 'decide' or 'ignore', got {late_events!r}")
    for channel, attribute in contact_attributes.items():
        if not (isinstance(channel, str) and isinstance(attribute, str) and attribute):
            raise UsageError(
                f"contact_attributes maps channel names to profile attribute names; got "
                f"{channel!r}: {attribute!r}"
            )
    for channel, ctype in channel_types.items():
        if not isinstance(channel, str) or ctype not in CHANNEL_TYPES:
            known = ", ".join(sorted(CHANNEL_TYPES))
            raise UsageError(
                f"channel_types maps channel names to a channel type ({known}); got "
                f"{channel!r}: {ctype!r}"
            )
    for name, scorer in scorers.items():
        if not isinstance(name, str) or not callable(scorer):
            raise UsageError(f"scorers maps names to callables; got {name!r}: {scorer!r}")


# --- publish -----------------------------------------------------------------------------------


def definitions_of(cls: type[T], what: str, *collections: object) -> tuple[T, ...]:
    """The items of ``collections`` (a call's ``Definitions`` field and keyword), each checked
    to be a ``cls``; a single definition, a str or a mapping where a collection is expected is
    refused rather than iterated."""
    where = f"publish {what}"
    items: list[object] = []
    for collection in collections:
        if isinstance(collection, str | bytes | Mapping | cls) or not isinstance(
            collection, Iterable
        ):
            raise DefinitionError([Problem(where, (
                f"expected a list or tuple of {cls.__name__}, got {given(collection)}"
            ))])
        items.extend(collection)
    for i, item in enumerate(items):
        if not isinstance(item, cls):
            raise DefinitionError([Problem(f"{where}[{i}]", (
                f"expected a {cls.__name__}, got {given(item)}"
            ))])
    return tuple(items)  # type: ignore[arg-type]  # each item was checked just above


def ids_of(what: str, noun: str, collection: object) -> tuple[str, ...]:
    """The ids in ``collection``, read once, each checked to be a str (``DefinitionError``,
    located at ``what``); a single id where a collection is expected is refused rather than
    read letter by letter."""
    if isinstance(collection, str | bytes | Mapping) or not isinstance(collection, Iterable):
        raise DefinitionError([Problem(what, (
            f"expected a list of {noun} ids, got {given(collection)}"
        ))])
    ids = tuple(collection)
    for i, item in enumerate(ids):
        if not isinstance(item, str):
            raise DefinitionError([Problem(f"{what}[{i}]", (
                f"expected a {noun} id (a str), got {given(item)}"
            ))])
    return ids


def refuse_duplicates(incoming: Definitions) -> None:
    """What one ``publish`` call is given must not name an id twice: merging by id would keep
    only the last silently. The problems are those validation reports for a whole set."""
    problems = duplicate_ids(incoming)
    if problems:
        raise DefinitionError(problems)


# --- customer records --------------------------------------------------------------------------


def check_consent(subscribed: object, topic: object, channel: object) -> None:
    flag(subscribed, "subscribed")
    if topic is not None:
        check_id(topic, "consent topic")
    if channel is not None:
        check_id(channel, "consent channel")


def activity_window(
    start: object, end: object, journey_id: object, customer_id: object
) -> tuple[datetime, datetime]:
    """The bounds of an activity-log query in UTC, its filters checked."""
    if journey_id is not None:
        check_id(journey_id, "journey_id")
    if customer_id is not None:
        check_id(customer_id, "customer_id")
    return ensure_span(start, end)
