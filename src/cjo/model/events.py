"""Events and profiles: what customers do, and what is known about them."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from cjo.errors import InvalidEventError

__all__ = ["Event", "Profile"]


def _nonempty_str(what: str) -> Any:
    def check(_inst: object, _att: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, str) or not value:
            raise InvalidEventError(f"event {what} must be a non-empty string, got {value!r}")

    return check


def _properties(value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidEventError(
            f"event properties must be a mapping, got {type(value).__name__}"
        )
    for key in value:
        if not isinstance(key, str):
            raise InvalidEventError(f"event property names must be strings, got {key!r}")
    return value


def _timestamp(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidEventError(f"event timestamp must be a datetime, got {value!r}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidEventError(
            f"event timestamp must be timezone-aware, got naive {value.isoformat()}"
        )
    return value.astimezone(UTC)


def _new_event_id() -> str:
    return uuid.uuid4().hex


@attrs.frozen(slots=True)
class Event:
    """Something a customer did. ``event_id`` de-duplicates: a repeated id changes nothing."""

    customer_id: str = attrs.field(validator=_nonempty_str("customer_id"))
    name: str = attrs.field(validator=_nonempty_str("name"))
    timestamp: datetime = attrs.field(converter=_timestamp)
    properties: Mapping[str, Any] = attrs.field(factory=dict, converter=_properties)
    event_id: str = attrs.field(factory=_new_event_id, validator=_nonempty_str("event_id"))


@attrs.frozen(slots=True)
class Profile:
    """The unified view of one customer.

    ``timezone`` (an IANA name) and ``locale`` drive calendar waits and content translations.
    """

    customer_id: str
    attributes: Mapping[str, Any] = attrs.field(factory=dict)
    timezone: str | None = None
    locale: str | None = None
