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
  neither the machine's clock nor its time zone is read (Liquid's reading uses both).

Anything else (text that does not read as one, nil, a boolean, a list, an object), and a math
result that overflows to infinity, raises :class:`FilterInputError`, naming the filter and what
it was given; the renderer reports it as
a ``RenderError`` naming the field. A missing value fails as it fails everywhere else in a
template (``profile.total is undefined``) unless ``default`` supplies one.

The math filters take no render context, so the fast rendering path (``cjo.content.memo``)
calls them as they are.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from dateutil import parser as date_parser
from liquid import Environment, RenderContext
from liquid.builtin.filters import math as liquid_math
from liquid.builtin.filters.array import _Null
from liquid.builtin.filters.misc import date as liquid_date
from liquid.exceptions import (
    FilterArgumentError,
    LiquidTypeError,
    LiquidValueError,
    ResourceLimitError,
    UndefinedError,
)
from liquid.filter import num_arg, with_context
from liquid.undefined import StrictUndefined, Undefined

__all__ = ["NOW_KEY", "FilterInputError", "register_strict_filters"]

#: The key of the render data that holds the instant being decided: what ``'now' | date``
#: reads. No template path can spell it, so no template variable is shadowed.
NOW_KEY = "cjo:now"


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


def _read_date(value: object, today: datetime) -> datetime | None:
    """``value`` as a date, or None. As Liquid reads it, but never by the machine's clock or
    time zone: a time stamp is UTC, naive text is UTC, and what text leaves out (the year of
    ``"May 5"``, the day of ``"10:30"``) is taken from ``today``, the instant being decided."""
    if isinstance(value, bool) or not isinstance(value, str | int | date):
        return None  # Liquid would read True as 1970-01-01, and fail on a list for its hash
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    try:
        if isinstance(value, int) or value.isdigit():
            return datetime.fromtimestamp(int(value), UTC)
        if _numeric_text(value):
            return None
        return date_parser.parse(value, default=today.replace(
            hour=0, minute=0, second=0, microsecond=0))
    except (ValueError, OverflowError, OSError):  # not a date, or past the years datetime holds
        return None


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


@with_context
def _date(value: object, fmt: object, *, context: RenderContext) -> object:
    """Liquid's ``date``, with ``now`` and ``today`` read from the render data (the instant
    being decided) rather than the machine's local wall clock, and a value it cannot read
    refused rather than output unchanged."""
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
    return liquid_date(moment, fmt, environment=context.env)


def register_strict_filters(env: Environment) -> None:
    """Replace ``env``'s math filters and ``date`` with cjo's strict versions."""
    for name, liquid_filter in _MATH.items():
        env.add_filter(name, _strict_math(name, liquid_filter))
    env.add_filter("date", _date)
