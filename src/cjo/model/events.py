"""Events and profiles: what customers do, and what is known about them.

Everything an event or profile update carries is checked when it is constructed, before any
storage sees it, so that every storage adapter stores the same value and none fails later on
something another accepted.

Accepted values (event properties, profile attributes, and anything nested in them):

- ``str`` (no NUL character, no lone surrogate: valid UTF-8 once encoded);
- ``int`` within ±(2**63 - 1), and ``bool``;
- ``float``, finite only (NaN and infinity are refused);
- ``None``;
- timezone-aware ``datetime`` (stored as UTC, to the microsecond);
- ``list`` (or ``tuple``, stored as a list) and ``dict`` with ``str`` keys of these, nested at
  most ``MAX_VALUE_DEPTH`` (16) levels, never containing themselves, and at most
  ``MAX_VALUES`` (100,000) values in one event or profile update, all levels together, holding
  at most ``MAX_TEXT`` (1,000,000) characters of text, names and values together.

Subclasses of ``str``, ``int`` and ``float`` (such as ``enum.StrEnum`` members) are stored as
the plain value. ``Decimal`` is refused (a JSON column cannot keep it a Decimal, so it would
come back as something else on some adapters): pass a ``float``, or a ``str`` for exact amounts.
Anything else (``bytes``, ``set``, ``date``, objects) raises ``InvalidEventError`` naming the
property path.

Ids (``customer_id``, ``event_id``, the event ``name``, and a profile update's ``timezone`` and
``locale``) are strings of 1 to ``MAX_ID_LENGTH`` (256) characters, not only whitespace, with no
NUL character and no lone surrogate.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import attrs

from cjo.described import short
from cjo.errors import InvalidEventError
from cjo.limits import (
    MAX_ID_LENGTH,
    MAX_INT,
    MAX_TEXT,
    MAX_TIMESTAMP,
    MAX_VALUE_DEPTH,
    MAX_VALUES,
    MIN_TIMESTAMP,
    TIMESTAMP_RANGE,
)
from cjo.model.content import LOCALE_PROBLEM, normal_locale
from cjo.timezones import is_zone

__all__ = [
    "INSTANT_TAG",
    "Event",
    "Profile",
    "ProfileUpdate",
    "check_id",
    "check_value",
    "check_values",
    "text_problem",
]

# Lone surrogates cannot be encoded as UTF-8 (every SQL driver refuses them); PostgreSQL text
# and jsonb refuse NUL. Refusing both here makes every adapter accept the same strings.
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")

_MIN_INT = -MAX_INT



def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored alike everywhere, or None when it can."""
    if text.isascii() and "\x00" not in text:  # isascii is O(1) in CPython
        return None
    match = _BAD_CHAR.search(text)
    if match is None:
        return None
    if match.group() == "\x00":
        return f"contains a NUL character at position {match.start()}"
    return (
        f"contains a lone surrogate (U+{ord(match.group()):04X}) at position {match.start()}, "
        "which is not valid Unicode text"
    )


# --- ids ---------------------------------------------------------------------------------------


def check_id(value: object, what: str) -> str:
    """``value`` if it is a valid id, else ``InvalidEventError`` naming ``what``.

    Valid: a string of 1 to ``MAX_ID_LENGTH`` characters, not only whitespace, with no NUL and
    no lone surrogate. A ``str`` subclass is returned as a plain ``str``.
    """
    if (
        type(value) is str
        and 0 < len(value) <= MAX_ID_LENGTH
        and value.isascii()
        and "\x00" not in value
        and not value.isspace()
    ):
        return value  # the common case, in a handful of C calls
    if not isinstance(value, str):
        raise InvalidEventError(f"{what} must be a non-empty string, got {short(value)}")
    text = str.__str__(value)  # a plain str, even from a subclass with its own __str__
    if not text:
        raise InvalidEventError(f"{what} must be a non-empty string, got ''")
    if text.isspace():
        raise InvalidEventError(f"{what} must not be only whitespace, got {text!r}")
    if len(text) > MAX_ID_LENGTH:
        raise InvalidEventError(
            f"{what} is {len(text)} characters long; ids are at most {MAX_ID_LENGTH}"
        )
    problem = text_problem(text)
    if problem is not None:
        raise InvalidEventError(f"{what} {problem}")
    return text


# attrs converters must be named functions for mypy to follow them. Their parameter types are
# the constructors' (what a host's type checker holds a call to); each still checks its value
# at run time, for callers that are not type-checked (JSON, a host's untyped code).


def _customer_id(value: str) -> str:
    return check_id(value, "customer_id")


def _event_name(value: str) -> str:
    return check_id(value, "event name")


def _event_id(value: str | None) -> str:
    if value is None:  # as when left out (a JSON null, a host's optional id): cjo makes one
        return _new_event_id()
    return check_id(value, "event_id")


def _update_customer_id(value: str) -> str:
    return check_id(value, "profile update customer_id")


#: Attributes a profile update reads as the profile's own fields (``ProfileUpdate``), as Braze
#: reads its standard ``time_zone`` and ``language``: what each is called in messages.
PROFILE_FIELD_ATTRIBUTES: Mapping[str, str] = {"timezone": "time zone", "locale": "locale"}


def not_set_here(name: str) -> str:
    """Why a definition may not write attribute ``name`` (a ``PROFILE_FIELD_ATTRIBUTES`` one):
    it is a field of the profile, which only the host sets."""
    return (
        f"attribute {name!r} is the profile's {PROFILE_FIELD_ATTRIBUTES[name]}, which only the "
        f"host sets (identify({name}=...) or a profile update): it cannot be set or unset here"
    )


def not_read_here(name: str) -> str:
    """Why a condition or an attribute trigger may not read attribute ``name`` (a
    ``PROFILE_FIELD_ATTRIBUTES`` one): it is a field of the profile, never among its
    attributes, so it would never match."""
    return (
        f"attribute {name!r} is the profile's {PROFILE_FIELD_ATTRIBUTES[name]}, not one of its "
        "attributes: nothing here can read it (it would never match)"
    )


def _timezone(value: str | None) -> str | None:
    if value is None:
        return None
    name = check_id(value, "profile timezone")
    if not is_zone(name):
        # A typo would otherwise fall back to the default zone silently: a 09:00 wait would
        # wake the customer at another hour.
        raise InvalidEventError(f"profile timezone {name!r} is not a known IANA time zone")
    return name


def _locale(value: str | None) -> str | None:
    # Normalised once here, so that content lookups per send compare plain strings.
    if value is None:
        return None
    text = check_id(value, "profile locale")
    normal = normal_locale(text)
    if normal is None:
        raise InvalidEventError(f"profile locale {LOCALE_PROBLEM}, got {text!r}")
    return normal


# --- values ------------------------------------------------------------------------------------


class _RefusedError(Exception):
    """Raised inside the walk over a value; becomes an ``InvalidEventError`` at the top.

    The path to the offending value is collected while the exception unwinds (each container
    adds its key), so a walk that succeeds builds no path strings at all.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.keys: list[str | int] = []  # innermost first

    def error(self, label: str) -> InvalidEventError:
        path = ""
        for key in reversed(self.keys):
            path = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path
                                                                  else key)
        where = f"{label} {path!r}" if path else label
        return InvalidEventError(f"{where}{self.problem}")


class _Walk:
    """The state of checking one value tree: how many values and characters of text may still
    be visited, and which containers are open on the current path (to refuse one that holds
    itself)."""

    __slots__ = ("budget", "open", "text")

    def __init__(self, root: object) -> None:
        self.budget = MAX_VALUES
        self.text = MAX_TEXT
        self.open: set[int] = {id(root)}

    def spend_text(self, text: str) -> None:
        self.text -= len(text)
        if self.text < 0:
            raise _RefusedError(f": more than {MAX_TEXT} characters of text in one record")


def finite_number(value: object) -> bool:
    """Whether ``value`` is an int or a float (not a bool) that is finite as a float: NaN, the
    infinities and ints past the largest float are not (``math.isfinite`` would raise
    ``OverflowError`` on those ints)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_value(value: object, where: str) -> object:
    """``value`` as it will be stored, or ``InvalidEventError`` naming ``where``.

    Returns the value itself when it is already plain, otherwise a plain copy (a tuple becomes
    a list, a ``StrEnum`` member its ``str``, a datetime UTC).
    """
    try:
        return _plain(value, 0, _Walk(None))
    except _RefusedError as refused:
        raise refused.error(where) from None


#: How storage adapters tag an instant inside stored values (``cjo.storage.codec``).
INSTANT_TAG = "$dt"


def _plain(value: object, depth: int, walk: _Walk) -> object:
    # Recursion is bounded by MAX_VALUE_DEPTH and work by MAX_VALUES, and a container already
    # open on the path is refused: a value that holds itself is an error, not a RecursionError.
    walk.budget -= 1
    if walk.budget < 0:
        raise _RefusedError(f": more than {MAX_VALUES} values in one record")
    kind = type(value)
    if kind is str:
        problem = text_problem(value)  # type: ignore[arg-type]
        if problem is not None:
            raise _RefusedError(f" {problem}")
        walk.spend_text(value)  # type: ignore[arg-type]
        return value
    if kind is bool or value is None:
        return value
    if kind is int:
        if not _MIN_INT <= value <= MAX_INT:  # type: ignore[operator]
            raise _RefusedError(f" is {short(value)}, outside the stored integer range "
                           "±(2**63 - 1); pass a float or a str")
        return value
    if kind is float:
        if value - value != 0.0:  # type: ignore[operator]  # inf - inf and nan - nan are nan
            raise _RefusedError(f" is {value}; only finite numbers can be stored (not NaN or "
                           "infinity)")
        return value
    if kind is dict or kind is list or isinstance(value, list | tuple | Mapping):
        return _plain_container(value, depth, walk)  # type: ignore[arg-type]
    return _plain_other(value, depth, walk)


def _plain_container(
    value: list[Any] | tuple[Any, ...] | Mapping[Any, Any], depth: int, walk: _Walk
) -> object:
    if depth >= MAX_VALUE_DEPTH:
        raise _RefusedError(f" nests more than {MAX_VALUE_DEPTH} levels of lists and objects")
    if id(value) in walk.open:
        raise _RefusedError(" contains itself")
    walk.open.add(id(value))
    out: dict[str, object] | list[object]
    if type(value) is dict or isinstance(value, Mapping):
        mapping: dict[str, object] = {}
        for key, item in value.items():
            # Plain ASCII keys, the common case, need no call.
            name = key if type(key) is str and key.isascii() and "\x00" not in key else _key(key)
            try:
                walk.spend_text(name)
                mapping[name] = _plain(item, depth + 1, walk)
            except _RefusedError as refused:
                refused.keys.append(name)
                raise
        if len(mapping) == 1 and INSTANT_TAG in mapping:
            # Stored records tag instants so: such an object would come back as an instant.
            raise _RefusedError(f' is an object whose only key is "{INSTANT_TAG}", the shape '
                                "storage keeps instants in; add another key or rename it")
        out = mapping
    else:
        items: list[object] = []
        for i, item in enumerate(value):
            try:
                items.append(_plain(item, depth + 1, walk))
            except _RefusedError as refused:
                refused.keys.append(i)
                raise
        out = items
    walk.open.discard(id(value))
    return out


def _key(key: object) -> str:
    if not isinstance(key, str):
        raise _RefusedError(f": names must be strings, got {short(key)}")
    text = key if type(key) is str else str.__str__(key)
    problem = text_problem(text)
    if problem is not None:
        raise _RefusedError(f": the name {text!r} {problem}")
    return text


def _plain_other(value: object, depth: int, walk: _Walk) -> object:
    """Values that are not exactly str, int, float, bool, None, list, tuple or a mapping."""
    if isinstance(value, str):
        return _plain(str.__str__(value), depth, walk)  # a StrEnum member: its text
    if isinstance(value, int):
        return _plain(int.__index__(value), depth, walk)  # an IntEnum member: its int
    if isinstance(value, float):
        return _plain(float.__float__(value), depth, walk)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise _RefusedError(f" is a naive datetime ({value.isoformat()}); pass a "
                           "timezone-aware one")
        try:
            utc = value.astimezone(UTC)
        except OverflowError:
            raise _RefusedError(f" is out of range once in UTC: {value}") from None
        # A plain datetime in UTC, whatever the subclass or zone: what a storage gives back.
        return datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second,
                        utc.microsecond, tzinfo=UTC)
    if isinstance(value, Decimal):
        raise _RefusedError(f" is a Decimal ({short(value)}); pass a float, or a str to keep "
                       "it exact (a Decimal would not come back the same from every storage)")
    cls = type(value)
    raise _RefusedError(f" is a {cls.__module__}.{cls.__qualname__}, which cannot be stored; use "
                   "str, int, float, bool, None, an aware datetime, or lists and dicts of them")


def check_values(value: object, plural: str, singular: str) -> Mapping[str, Any]:
    """A mapping of properties or attributes as it will be stored (``None`` gives ``{}``), or
    ``InvalidEventError``. ``plural`` and ``singular`` name them in messages ("event
    properties", "event property")."""
    if type(value) is dict and len(value) <= MAX_VALUES:
        # The common case, a flat dict of plain strings and numbers, is checked in this loop
        # without a call per item and returned as is; anything else takes the general path.
        text = 0
        for key, item in value.items():
            if type(key) is not str or not key.isascii() or "\x00" in key:
                break
            text += len(key)
            kind = type(item)
            if kind is str:
                text += len(item)
                if not item.isascii() or "\x00" in item:
                    break
            elif kind is int:
                if not _MIN_INT <= item <= MAX_INT:
                    break
            elif kind is float:
                if item - item != 0.0:  # not finite
                    break
            elif item is not None and kind is not bool:
                break
        else:
            if text <= MAX_TEXT:
                return value
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidEventError(f"{plural} must be a mapping, got {type(value).__name__}")
    walk = _Walk(value)
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise InvalidEventError(f"{singular} names must be strings, got {short(key)}")
        try:
            name = _key(key)
        except _RefusedError as refused:
            raise refused.error(plural) from None
        try:
            walk.spend_text(name)
            out[name] = _plain(item, 0, walk)
        except _RefusedError as refused:
            refused.keys.append(name)
            raise refused.error(singular) from None
    return out


def _properties(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return check_values(value, "event properties", "event property")


def _attributes(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return check_values(value, "profile attributes", "profile attribute")


def _names(value: Iterable[str]) -> tuple[str, ...]:
    if type(value) is tuple and not value:
        return ()  # the usual case: nothing to unset
    names = tuple(value) if isinstance(value, Iterable) and not isinstance(value, str) else None
    if names is None or not all(isinstance(n, str) for n in names):
        raise InvalidEventError(
            f"profile update unset must be attribute names, got {short(value)}"
        )
    try:
        return tuple(_key(n) for n in names)
    except _RefusedError as refused:
        raise refused.error("profile update unset") from None


def _timestamp(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidEventError(f"event timestamp must be a datetime, got {short(value)}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidEventError(
            f"event timestamp must be timezone-aware, got naive {value.isoformat()}"
        )
    try:
        utc = value.astimezone(UTC)
    except OverflowError as exc:
        raise InvalidEventError(f"event timestamp {value} is out of range") from exc
    if not MIN_TIMESTAMP <= utc < MAX_TIMESTAMP:
        raise InvalidEventError(
            f"event timestamp {utc.isoformat()} is outside the accepted range: "
            f"{TIMESTAMP_RANGE}"
        )
    return utc


def _new_event_id() -> str:
    return uuid.uuid4().hex


@attrs.frozen(slots=True)
class Event:
    """Something a customer did. ``event_id`` de-duplicates: a repeated id changes nothing.

    Event ids are global, not per customer: a second event with the same ``event_id`` is a
    duplicate even when its customer differs. Let cjo generate one (leave ``event_id`` out, or
    pass None), or derive it from the source system's own unique id.
    """

    customer_id: str = attrs.field(converter=_customer_id)
    name: str = attrs.field(converter=_event_name)
    timestamp: datetime = attrs.field(converter=_timestamp)
    properties: Mapping[str, Any] = attrs.field(factory=dict, converter=_properties)
    event_id: str = attrs.field(factory=_new_event_id, converter=_event_id)


@attrs.frozen(slots=True)
class ProfileUpdate:
    """A change to a customer's profile: what ``Engine.identify`` does, as a record that
    ``Engine.handle_events`` takes in order with events (so profile changes share the group's
    transaction)."""

    customer_id: str = attrs.field(converter=_update_customer_id)
    attributes: Mapping[str, Any] = attrs.field(factory=dict, converter=_attributes)
    unset: tuple[str, ...] = attrs.field(default=(), converter=_names)
    timezone: str | None = attrs.field(default=None, converter=_timezone)
    locale: str | None = attrs.field(default=None, converter=_locale)

    def __attrs_post_init__(self) -> None:
        # Attributes named ``timezone`` and ``locale`` are the profile's zone and locale, as
        # Braze's time_zone and language are: kept as plain attributes, calendar waits and
        # translations would silently ignore them. Unsetting one (or giving it as None)
        # clears the field.
        given, unset = self.attributes, self.unset
        if "timezone" not in given and "locale" not in given and (
            not unset or ("timezone" not in unset and "locale" not in unset)
        ):
            return
        attributes = dict(given)
        cleared = [n for n in unset if n in PROFILE_FIELD_ATTRIBUTES]
        for name, what in PROFILE_FIELD_ATTRIBUTES.items():
            field = getattr(self, name)
            if name in attributes:
                convert = _timezone if name == "timezone" else _locale
                value = convert(attributes.pop(name))
                if value is None:
                    cleared.append(name)
                elif field is not None and value != field:
                    raise InvalidEventError(
                        f"profile update gives two {what}s: attribute {name!r} {value!r} and "
                        f"{name} {field!r}"
                    )
                else:
                    object.__setattr__(self, name, field := value)
            if name in cleared and field is not None:
                raise InvalidEventError(
                    f"profile update both sets and clears the {what}: {name} {field!r}"
                )
        object.__setattr__(self, "attributes", attributes)
        object.__setattr__(
            self, "unset",
            (*(n for n in unset if n not in PROFILE_FIELD_ATTRIBUTES), *dict.fromkeys(cleared)),
        )

    def clears(self, name: str) -> bool:
        """Whether the update clears the profile's ``timezone`` or ``locale`` (unset, or given
        as an attribute of no value)."""
        return name in self.unset


@attrs.frozen(slots=True, weakref_slot=False)
class Profile:
    """The unified view of one customer.

    ``timezone`` (an IANA name) and ``locale`` drive calendar waits and content translations.
    """

    customer_id: str
    attributes: Mapping[str, Any] = attrs.field(factory=dict)
    timezone: str | None = None
    locale: str | None = None
