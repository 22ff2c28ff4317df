"""cjo's versions of Liquid's math filters and of ``date``: Liquid's result for every value they
can read, and a failed render for every value they cannot.

Liquid's standard filters are lenient: ``{{ "abc" | times: 1.1 }}`` renders ``0.0``, a missing
value or nil counts as 0, ``{{ "not a date" | date: "%Y" }}`` renders the text unchanged and a
missing value given to ``date`` renders nothing. In a message, each is a wrong text sent without
anyone knowing. These filters read:

- a number (``times``, ``plus``, ``minus``, ``divided_by``, ``modulo``, ``round``, ``ceil``,
  ``floor``, ``abs``, ``at_least``, ``at_most``, as input and as argument): an integer or a
  finite float (not a boolean), or text that Liquid reads as one (``"12.5"``, ``" 3 "``,
  ``"-2"``, ``"1e3"``);
- a date (``date``): a ``datetime`` or ``date``, a whole number of seconds since the epoch (or
  text of digits), or text Liquid reads as a date (``"2026-03-01"``, ``"March 1, 2026"``) but
  not other text that reads as a number (``"3.5"``, ``"-5"``: Liquid reads a date into them);
  ``'now'`` and ``'today'`` are the instant being decided (``NOW_KEY``), not the wall clock, and
  neither the machine's clock nor its time zone is read (Liquid's reading uses both). A zone in
  text is an offset (``+02:00``) or UTC (``UTC``, ``GMT``, ``Z``): a zone name alone
  (``EST``) has no offset to read and one followed by an offset (``UTC+02:00``) reads its sign
  reversed, so both are refused.

``date`` formats the moment itself (:func:`format_date`), in the moment's own offset: Python's
``strftime`` reads the machine's zone for ``%s`` and its locale for names, and Liquid's reading
keeps the last moments it read by equality, which holds across offsets (10:00+02:00 is 03:00-05:00),
so a moment rendered after an equal one in another zone got the first one's offset.

Anything else (text that does not read as one, nil, a boolean, a list, an object), and a math
result that overflows to infinity, raises :class:`FilterInputError`, naming the filter and what
it was given; the renderer reports it as
a ``RenderError`` naming the field. A missing value fails as it fails everywhere else in a
template (``profile.total is undefined``) unless ``default`` supplies one.

The math filters take no render context, so the fast rendering path (``cjo.content.memo``)
calls them as they are.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from dateutil import parser as date_parser
from dateutil.tz import tzoffset
from liquid import Environment, RenderContext
from liquid.builtin.filters import array as liquid_array
from liquid.builtin.filters import math as liquid_math
from liquid.builtin.filters.array import _Null
from liquid.exceptions import (
    FilterArgumentError,
    LiquidTypeError,
    LiquidValueError,
    ResourceLimitError,
    UndefinedError,
)
from liquid.filter import num_arg, sequence_filter, with_context
from liquid.stringify import to_liquid_string
from liquid.undefined import StrictUndefined, Undefined

from cjo.clock import EPOCH
from cjo.timezones import is_zone

__all__ = [
    "NOW_KEY", "ZONE_KEY", "FilterInputError", "format_date", "output_text",
    "register_strict_filters",
]

#: The key of the render data that holds the instant being decided: what ``'now' | date``
#: reads. No template path can spell it, so no template variable is shadowed.
NOW_KEY = "cjo:now"
#: The key of the render data that holds the customer's time zone (the profile's, else the
#: journey's, else the engine's default), as a ``tzinfo`` or a function of none that returns
#: one: what ``time_zone`` without an argument converts to. Absent (a host rendering on its
#: own): UTC.
ZONE_KEY = "cjo:zone"


class FilterInputError(LiquidTypeError):
    """A filter was given a value it cannot read: text that is not a number, nil, a list...

    A ``LiquidTypeError``: at publish, a field that fails so on a derived sample (where every
    variable is the text ``"1"``) is rendered again with numbers, as for a comparison. ``shape``
    says the value was nil, a list or an object: what a derived sample cannot know (``first`` of
    its text is nil, a variable whose keys are read is an object)."""

    def __init__(self, message: str, *, shape: bool = False) -> None:
        super().__init__(message, token=None)
        self.shape = shape


class _NumberTooLongError(ResourceLimitError):
    """Text of more digits than Liquid converts to a number."""


def _undefined(value: Undefined) -> UndefinedError:
    # The same error as the value's own when it is output: "profile.total is undefined".
    msg = value.msg if isinstance(value, StrictUndefined) else f"{value.name} is undefined"
    return UndefinedError(msg, token=value.token)


def _is_nil(value: object) -> bool:
    # ``map`` gives Liquid's own null for an item without the key.
    return value is None or isinstance(value, _Null)


def _kind(value: object) -> str:
    """What ``value`` is, in a template's terms."""
    if _is_nil(value):
        return "nil"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "empty text" if not value.strip() else "text"
    if isinstance(value, int | float):
        return "a number" if math.isfinite(value) else f"the number {value}"
    if isinstance(value, datetime):
        return "a datetime"
    if isinstance(value, date):
        return "a date"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple | range | set | frozenset):
        return "a list"
    return type(value).__name__


def _refused(name: str, expected: str, value: object, argument: bool) -> FilterInputError:
    role = " as its argument" if argument else ""
    got = _kind(value)
    if got == "text":
        got = f"text that does not read as {expected}"
    shape = _is_nil(value) or isinstance(value, Mapping | list | tuple | range)
    return FilterInputError(f"{name}: expected {expected}{role}, got {got}", shape=shape)


def _number(name: str, value: object, *, argument: bool = False) -> int | float:
    """``value`` as Liquid reads a number, or ``FilterInputError``."""
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return value  # the common case, first (bool is a subclass of int, not int)
    if isinstance(value, Undefined):
        raise _undefined(value)
    number: object = value
    if isinstance(value, str):
        try:
            number = num_arg(value)
        except FilterArgumentError:
            raise _refused(name, "a number", value, argument) from None
        except LiquidValueError as exc:  # past Liquid's limit of digits for a conversion
            raise _NumberTooLongError(f"{name}: text of {len(value)} characters is too long "
                                      "for a number", token=None) from exc
    # bool is an int to Python, not a number to a template; NaN and infinity are not numbers
    # a message should show (as text, "nan" or "inf" is more likely a name).
    if isinstance(number, bool) or not isinstance(number, int | float) or (
        isinstance(number, float) and not math.isfinite(number)
    ):
        raise _refused(name, "a number", value, argument)
    return number


def _strict_math(name: str, liquid_filter: Callable[..., Any]) -> Callable[..., Any]:
    """Liquid's ``liquid_filter``, given only numbers: anything else is refused first."""

    @functools.wraps(liquid_filter)
    def strict(value: object, *args: object, **kwargs: object) -> object:
        number = _number(name, value)
        if len(args) == 1:  # most take one argument: spare building a list
            result = liquid_filter(number, _number(name, args[0], argument=True), **kwargs)
        else:
            result = liquid_filter(number, *[_number(name, a, argument=True) for a in args],
                                   **kwargs)
        # Finite numbers in, but a product or sum may still overflow: "inf" is no amount.
        if type(result) is float and not math.isfinite(result):
            raise FilterInputError(f"{name}: the result is not a finite number ({result})")
        return result

    return strict


_MATH: Mapping[str, Callable[..., Any]] = {
    "abs": liquid_math.abs_,
    "at_least": liquid_math.at_least,
    "at_most": liquid_math.at_most,
    "ceil": liquid_math.ceil,
    "divided_by": liquid_math.divided_by,
    "floor": liquid_math.floor,
    "minus": liquid_math.minus,
    "modulo": liquid_math.modulo,
    "plus": liquid_math.plus,
    "round": liquid_math.round_,
    "times": liquid_math.times,
}


@sequence_filter
def _sum(sequence: list[object], key: object = None) -> object:
    """Liquid's ``sum``, given only numbers (nil counts nothing, as in Liquid): an item it
    cannot read is refused, naming the filter and the item, where Liquid's own raises an
    arithmetic error of Python's (a decimal signal, or an item that is not an object)."""
    keyed = key is not None and not isinstance(key, Undefined)
    for item in sequence:
        value = item
        if keyed:
            if not isinstance(item, Mapping):
                raise FilterInputError(f"sum: expected objects with {key!r}, got {_kind(item)}",
                                       shape=True)
            value = item.get(key)
        if not _is_nil(value):
            _number("sum", value)
    result = liquid_array.sum_(sequence, key)
    if type(result) is float and not math.isfinite(result):
        raise FilterInputError(f"sum: the result is not a finite number ({result})")
    return result


class _ZoneError(Exception):
    """Text names a time zone whose offset it does not say."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _zone(name: str | None, offset: int | None) -> tzinfo:
    """The zone dateutil read from text (a name, an offset in seconds, or neither): never the
    machine's, which dateutil gives a name the machine's zone has (``EST`` in New York)."""
    if name is None:
        # Without a zone, UTC; an offset keeps dateutil's own zone (``%Z`` renders nothing).
        return UTC if not offset else tzoffset(None, offset)
    if offset == 0:
        return UTC  # UTC, GMT, Z: dateutil gives them the offset 0
    raise _ZoneError(name)


# A zone name right after a time and followed by an offset ("10:00 UTC+02:00", "GMT+2"):
# dateutil reads the sign reversed, as a POSIX zone string means it.
_NAME_AND_OFFSET = re.compile(
    r"\d:\d\d(?::\d\d(?:[.,]\d+)?)?\s*(?:[AP]M\s*)?(?!(?:AM|PM)\b)"
    r"([A-Z]{1,5}\s*([+-]\s*\d[\d:]*))")


def _read_date(value: object, today: datetime) -> datetime | None:
    """``value`` as a date, or None. As Liquid reads it, but never by the machine's clock or
    time zone: a time stamp is UTC, naive text (and a naive datetime) is UTC, and what text
    leaves out (the year of ``"May 5"``, the day of ``"10:30"``) is taken from ``today``, the
    instant being decided. Text with a zone that has no offset to read raises
    ``FilterInputError``."""
    if isinstance(value, bool) or not isinstance(value, str | int | date):
        return None  # Liquid would read True as 1970-01-01, and fail on a list for its hash
    if isinstance(value, datetime):
        return value if value.utcoffset() is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    try:
        if isinstance(value, int) or value.isdigit():
            return datetime.fromtimestamp(int(value), UTC)
        if _numeric_text(value):
            return None
        named = _NAME_AND_OFFSET.search(value)
        if named is not None:
            written, offset = named.group(1), re.sub(r"\s", "", named.group(2))
            raise FilterInputError(
                f"date: {_shown(value)} names the zone {written!r}, whose offset reads with its "
                f"sign reversed; write the offset alone: {offset!r}")
        return date_parser.parse(value, default=today.replace(
            hour=0, minute=0, second=0, microsecond=0), tzinfos=_zone)
    except _ZoneError as exc:
        raise FilterInputError(f"date: {_shown(str(value))} names the zone {exc.name!r}, which "
                               "has no known offset; write the offset (-05:00) or UTC") from None
    except (ValueError, OverflowError, OSError):  # not a date, or past the years datetime holds
        return None


def _shown(text: str) -> str:
    # The value a message names, cut short: profile text may be long.
    return repr(text if len(text) <= 40 else f"{text[:37]}...")


def _numeric_text(value: str) -> bool:
    """Text that reads as a number other than a time stamp (``"3.5"``, ``"-5"``): the lenient
    date reading takes ``"3.5"`` for the 3rd (or 5th) of this month, a price for a date."""
    text = value.strip()
    if text.isdigit():
        return False  # a time stamp
    try:
        float(text)
    except ValueError:
        return False
    return True


# Names and composite directives as C's strftime writes them in the "C" locale, which Liquid's
# Ruby original writes too: the machine's locale never changes a message.
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_COMPOSITE = {
    "c": "%a %b %e %H:%M:%S %Y", "D": "%m/%d/%y", "F": "%Y-%m-%d", "r": "%I:%M:%S %p",
    "R": "%H:%M", "T": "%H:%M:%S", "x": "%m/%d/%y", "X": "%H:%M:%S",
}
_SECOND = timedelta(seconds=1)
# Each number directive: its value and its width and padding when no flag says otherwise.
_NUMBERS: Mapping[str, tuple[Callable[[datetime], int], int, str]] = {
    "C": (lambda m: m.year // 100, 2, "0"),
    "d": (lambda m: m.day, 2, "0"),
    "e": (lambda m: m.day, 2, " "),
    "f": (lambda m: m.microsecond, 6, "0"),
    "G": (lambda m: m.isocalendar()[0], 1, "0"),
    "g": (lambda m: m.isocalendar()[0] % 100, 2, "0"),
    "H": (lambda m: m.hour, 2, "0"),
    "I": (lambda m: (m.hour - 1) % 12 + 1, 2, "0"),
    "j": (lambda m: m.timetuple().tm_yday, 3, "0"),
    "k": (lambda m: m.hour, 2, " "),
    "L": (lambda m: m.microsecond // 1000, 3, "0"),
    "l": (lambda m: (m.hour - 1) % 12 + 1, 2, " "),
    "M": (lambda m: m.minute, 2, "0"),
    "m": (lambda m: m.month, 2, "0"),
    "N": (lambda m: m.microsecond * 1000, 9, "0"),
    "S": (lambda m: m.second, 2, "0"),
    # Seconds since 1970 of the moment itself (floored, as C's), not of its wall time read in
    # the machine's zone, as Python's strftime("%s") reads it.
    "s": (lambda m: (m - EPOCH) // _SECOND, 1, "0"),
    "U": (lambda m: (m.timetuple().tm_yday + 6 - (m.weekday() + 1) % 7) // 7, 2, "0"),
    "u": (lambda m: m.isoweekday(), 1, "0"),
    "V": (lambda m: m.isocalendar()[1], 2, "0"),
    "W": (lambda m: (m.timetuple().tm_yday + 6 - m.weekday()) // 7, 2, "0"),
    "w": (lambda m: m.isoweekday() % 7, 1, "0"),
    "Y": (lambda m: m.year, 1, "0"),
    "y": (lambda m: m.year % 100, 2, "0"),
}
_TEXTS: Mapping[str, Callable[[datetime], str]] = {
    "A": lambda m: _DAYS[m.weekday()],
    "a": lambda m: _DAYS[m.weekday()][:3],
    "B": lambda m: _MONTHS[m.month - 1],
    "b": lambda m: _MONTHS[m.month - 1][:3],
    "h": lambda m: _MONTHS[m.month - 1][:3],
    "p": lambda m: "AM" if m.hour < 12 else "PM",
    "P": lambda m: "am" if m.hour < 12 else "pm",
    "Z": lambda m: m.tzname() or "",
    "z": lambda m: _offset(m, ""),
    ":z": lambda m: _offset(m, ":"),
    "n": lambda m: "\n",
    "t": lambda m: "\t",
    "%": lambda m: "%",
}
# A directive: flags (no padding, spaces, zeros, upper case), then its letter (or ":z").
_DIRECTIVE = re.compile(r"%([-_0^]*)(:z|[A-Za-z%])?")
_Part = str | tuple[str, str]


def _offset(moment: datetime, sep: str) -> str:
    offset = moment.utcoffset()
    if offset is None:
        return ""
    sign = "-" if offset < timedelta(0) else "+"
    minutes, seconds = divmod(int(abs(offset).total_seconds()), 60)
    text = f"{sign}{minutes // 60:02d}{sep}{minutes % 60:02d}"
    return f"{text}{sep}{seconds:02d}" if seconds else text


@functools.lru_cache(maxsize=256)
def _parse_format(fmt: str) -> tuple[_Part, ...]:
    """``fmt`` as literal text and (flags, directive) pairs, composites expanded. Kept by the
    format alone: the moment, and so its offset, is applied on every call."""
    parts: list[_Part] = []
    at = 0
    for match in _DIRECTIVE.finditer(fmt):
        if match.start() > at:
            parts.append(fmt[at:match.start()])
        at = match.end()
        flags, name = match.group(1), match.group(2)
        if name is None:
            where = match.group(0)
            what = f"{where!r} at its end" if at == len(fmt) else repr(fmt[match.start():at + 1])
            raise FilterInputError(f"date: the format {fmt!r} has {what}, which is not a "
                                   "directive")
        if name in _COMPOSITE:
            parts.extend(_parse_format(_COMPOSITE[name]))
        elif name in _NUMBERS or name in _TEXTS:
            parts.append((flags, name))
        else:
            raise FilterInputError(f"date: the format {fmt!r} has {match.group(0)!r}, which is "
                                   "not a directive")
    if at < len(fmt):
        parts.append(fmt[at:])
    return tuple(parts)


def format_date(moment: datetime, fmt: str) -> str:
    """``moment`` written by the strftime format ``fmt``, from its own fields and offset.

    Directives: ``%a %A %b %B %h %c %C %d %D %e %F %f %G %g %H %I %j %k %l %L %m %M %n %N %p
    %P %r %R %s %S %t %T %u %U %V %w %W %x %X %y %Y %z %:z %Z %%``, with the flags ``-`` (no
    padding), ``_`` (spaces), ``0`` (zeros) and ``^`` (upper case). Any other raises
    ``FilterInputError``."""
    out: list[str] = []
    for part in _parse_format(fmt):
        if isinstance(part, str):
            out.append(part)
            continue
        flags, name = part
        number = _NUMBERS.get(name)
        if number is None:
            text = _TEXTS[name](moment)
        else:
            read, width, pad = number
            value = read(moment)
            if "-" in flags:
                width = 1
            elif "_" in flags:
                pad = " "
            elif "0" in flags:
                pad = "0"
            digits = str(abs(value)).rjust(width - (value < 0), pad)
            text = f"-{digits}" if value < 0 else digits
        out.append(text.upper() if "^" in flags else text)
    return "".join(out)


@with_context
def _date(value: object, fmt: object, *, context: RenderContext) -> object:
    """Liquid's ``date``, with ``now`` and ``today`` read from the render data (the instant
    being decided) rather than the machine's local wall clock, a value it cannot read refused
    rather than output unchanged, and the moment formatted in its own offset."""
    instant = context.globals.get(NOW_KEY)
    # Outside the engine (a host rendering on its own), the real time, in UTC.
    now = instant if isinstance(instant, datetime) else datetime.now(UTC)
    if isinstance(value, str) and value in ("now", "today"):
        value = now
    if isinstance(value, Undefined):
        raise _undefined(value)
    if isinstance(fmt, Undefined):
        raise _undefined(fmt)
    if not isinstance(fmt, str):
        raise _refused("date", "text (a format)", fmt, argument=True)
    moment = _read_date(value, now)
    if moment is None:
        if (isinstance(value, str) and _numeric_text(value)) or (
            isinstance(value, int | float) and not isinstance(value, bool)
        ):
            raise FilterInputError("date: expected a date, got a number that is not a time "
                                   "stamp (whole seconds since 1970)")
        raise _refused("date", "a date", value, argument=False)
    return format_date(moment, fmt)


def output_text(value: object) -> str:
    """What ``{{ value }}`` writes, as Liquid writes it (nil as nothing, booleans as ``true``
    and ``false``, a list's items one after another, each written so), except an object (a
    mapping), which fails: Liquid would write Python's form of it (``{'a': 1}``) into the
    message. A derived sample cannot know a value is an object (``shape``)."""
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, Mapping) and not isinstance(value, Undefined):
        raise FilterInputError(
            "output: an object cannot be written into a message; write one of its fields "
            "(product.name), or pass it through json", shape=True,
        )
    if isinstance(value, list | tuple):
        return "".join(output_text(item) for item in value)
    return to_liquid_string(value, autoescape=False)


@with_context
def _time_zone(value: object, zone: object = None, *, context: RenderContext) -> object:
    """A date (read as ``date`` reads one) at the same instant in ``zone`` (an IANA name),
    or in the customer's zone when none is given, so that ``date`` then writes the customer's
    wall time: ``{{ event.starts_at | time_zone | date: '%H:%M' }}``."""
    if isinstance(value, Undefined):
        raise _undefined(value)
    if isinstance(zone, Undefined):
        raise _undefined(zone)
    if zone is None:
        given = context.globals.get(ZONE_KEY)
        if callable(given):
            given = given()
        target: tzinfo = given if isinstance(given, tzinfo) else UTC
    elif not isinstance(zone, str):
        raise _refused("time_zone", "text (an IANA time zone)", zone, argument=True)
    elif not is_zone(zone):
        raise FilterInputError(f"time_zone: {_shown(zone)} is not a known IANA time zone")
    else:
        target = ZoneInfo(zone)
    instant = context.globals.get(NOW_KEY)
    now = instant if isinstance(instant, datetime) else datetime.now(UTC)
    if isinstance(value, str) and value in ("now", "today"):
        value = now
    moment = _read_date(value, now)
    if moment is None:
        raise _refused("time_zone", "a date", value, argument=False)
    return moment.astimezone(target)


# Filters that read the content of a value, not only its type. A derived sample (every variable
# the text "1") cannot hold a list or base64 text, so their refusals are ``shape``: reported at
# publish only against a sample the host gives, and at every send.


def _concat(sequence: object, second_array: object) -> object:
    """Liquid's ``concat``, whose own refusal of an argument that is not a list fails to build
    its error ("LiquidError.__init__() missing 1 required keyword-only argument")."""
    if isinstance(second_array, Undefined):
        raise _undefined(second_array)
    if not isinstance(second_array, list | tuple):
        raise FilterInputError(f"concat: expected a list as its argument, got "
                               f"{_kind(second_array)}", shape=True)
    return liquid_array.concat(sequence, second_array)


def _strict_base64(name: str, decode: Callable[[str], bytes]) -> Callable[[object], str]:
    """A base64 decoder that refuses text that is not base64 (Python's, as Liquid calls it,
    skips the characters it does not know: ``"aGk=!!"`` decodes to ``hi``) and bytes that are
    not UTF-8 text."""

    def strict(value: object) -> str:
        if isinstance(value, Undefined):
            raise _undefined(value)
        text = value if isinstance(value, str) else to_liquid_string(value, autoescape=False)
        try:
            raw = decode(text)
        except (binascii.Error, ValueError):
            raise FilterInputError(f"{name}: expected base64 text, got text that is not "
                                   f"base64", shape=True) from None
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise FilterInputError(f"{name}: expected base64 text, got base64 of what is not "
                                   f"UTF-8 text", shape=True) from None

    return strict


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _b64_url_safe(text: str) -> bytes:
    # validate=True reads the standard alphabet only: translate the URL-safe one to it.
    return base64.b64decode(text.translate(str.maketrans("-_", "+/")), validate=True)


# ``sort``, ``sort_natural``, ``compact`` and ``uniq`` by a property. Liquid's read an item
# without the property as a character that sorts last among text (so among numbers the sort
# fails with Python's words), ``compact`` fails on it (KeyError), and a nil property fails
# ``sort``. As in Shopify's Liquid, a missing property is nil, and nil sorts last.


def _property(item: object, key: object) -> object:
    """``item``'s property ``key`` (the item itself without a key); nil when it has none."""
    if key is None or key == "":
        value = item
    elif isinstance(item, Mapping):
        value = item.get(str(key))
    else:
        value = None
    return None if _is_nil(value) or isinstance(value, Undefined) else value


def _ordered(name: str, natural: bool) -> Callable[..., list[object]]:
    @sequence_filter
    def ordered(sequence: list[object], key: object = None) -> list[object]:
        if isinstance(key, Undefined):
            raise _undefined(key)
        keyed = [(_property(item, key), item) for item in sequence]
        present = [(value, item) for value, item in keyed if value is not None]
        nils = [item for value, item in keyed if value is None]
        if natural:
            present.sort(key=lambda pair: str(pair[0]).lower())
        else:
            try:
                present.sort(key=lambda pair: pair[0])  # type: ignore[arg-type,return-value]
            except TypeError:
                kinds = list(dict.fromkeys(_kind(value) for value, _ in present))
                first, second = (kinds * 2)[:2]  # two objects do not order either
                raise FilterInputError(f"{name}: cannot order {first} and {second}") from None
        return [item for _, item in present] + nils

    return ordered


@sequence_filter
def _compact(sequence: list[object], key: object = None) -> list[object]:
    if isinstance(key, Undefined):
        raise _undefined(key)
    return [item for item in sequence if _property(item, key) is not None]


@sequence_filter
def _uniq(sequence: list[object], key: object = None) -> list[object]:
    if isinstance(key, Undefined):
        raise _undefined(key)
    seen: list[object] = []  # a list: items may be objects, which do not hash
    out: list[object] = []
    for item in sequence:
        value = _property(item, key)
        if value not in seen:
            seen.append(value)
            out.append(item)
    return out


@sequence_filter
def _join(sequence: list[object], separator: object = " ") -> str:
    """Liquid's ``join``, writing each item as ``{{ item }}`` writes it: Liquid's writes them
    with Python's ``str``, so a nil (``map`` of an item without the property) is ``None`` and a
    boolean ``True`` in the message."""
    if isinstance(separator, Undefined):
        raise _undefined(separator)
    return output_text(separator).join(output_text(item) for item in sequence)


def register_strict_filters(env: Environment) -> None:
    """Replace ``env``'s math filters, ``sum``, ``date``, ``concat``, the base64 decoders,
    ``join`` and the filters by a property with cjo's strict versions, and add ``time_zone``."""
    for name, liquid_filter in _MATH.items():
        env.add_filter(name, _strict_math(name, liquid_filter))
    env.add_filter("sum", _sum)
    env.add_filter("date", _date)
    env.add_filter("time_zone", _time_zone)
    env.add_filter("concat", _concat)
    env.add_filter("base64_decode", _strict_base64("base64_decode", _b64))
    env.add_filter("base64_url_safe_decode",
                   _strict_base64("base64_url_safe_decode", _b64_url_safe))
    env.add_filter("sort", _ordered("sort", natural=False))
    env.add_filter("sort_natural", _ordered("sort_natural", natural=True))
    env.add_filter("compact", _compact)
    env.add_filter("uniq", _uniq)
    env.add_filter("join", _join)
