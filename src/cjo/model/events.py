"""Events and profiles: what customers do, and what is known about them."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from cjo.errors import InvalidEventError

__all__ = ["Event", "Profile", "ProfileUpdate"]


def _nonempty_str(what: str, record: str = "event") -> Any:
    def check(_inst: object, _att: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, str) or not value:
            raise InvalidEventError(f"{record} {what} must be a non-empty string, got {value!r}")

    return check


def _mapping(what: str, item: str) -> Any:
    def convert(value: object) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise InvalidEventError(f"{what} must be a mapping, got {type(value).__name__}")
        for key in value:
            if not isinstance(key, str):
                raise InvalidEventError(f"{item} names must be strings, got {key!r}")
        return value

    return convert


_event_properties = _mapping("event properties", "event property")
_profile_attributes = _mapping("profile attributes", "profile attribute")


def _properties(value: object) -> Mapping[str, Any]:
    result: Mapping[str, Any] = _event_properties(value)
    return result


def _attributes(value: object) -> Mapping[str, Any]:
    result: Mapping[str, Any] = _profile_attributes(value)
    return result


def _names(value: object) -> tuple[str, ...]:
    names = tuple(value) if isinstance(value, Iterable) and not isinstance(value, str) else None
    if names is None or not all(isinstance(n, str) for n in names):
        raise InvalidEventError(f"profile update unset must be attribute names, got {value!r}")
    return names


def _optional_str(what: str) -> Any:
    def check(_inst: object, _att: attrs.Attribute[Any], value: object) -> None:
        if value is not None and not isinstance(value, str):
            raise InvalidEventError(f"profile update {what} must be a string, got {value!r}")

    return check


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
class ProfileUpdate:
    """A change to a customer's profile: what ``Engine.identify`` does, as a record that
    ``Engine.handle_events`` takes in order with events (so profile changes share the group's
    transaction)."""

    customer_id: str = attrs.field(validator=_nonempty_str("customer_id", "profile update"))
    attributes: Mapping[str, Any] = attrs.field(factory=dict, converter=_attributes)
    unset: tuple[str, ...] = attrs.field(default=(), converter=_names)
    timezone: str | None = attrs.field(default=None, validator=_optional_str("timezone"))
    locale: str | None = attrs.field(default=None, validator=_optional_str("locale"))


@attrs.frozen(slots=True)
class Profile:
    """The unified view of one customer.

    ``timezone`` (an IANA name) and ``locale`` drive calendar waits and content translations.
    """

    customer_id: str
    attributes: Mapping[str, Any] = attrs.field(factory=dict)
    timezone: str | None = None
    locale: str | None = None
