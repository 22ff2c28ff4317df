"""A stream of inputs from JSON lines: events and profile updates as a host exports them.

One JSON object per line (blank lines are skipped):

- an event: ``{"customer_id": "c1", "name": "added_to_cart", "timestamp":
  "2026-03-02T09:00:00Z", "properties": {"cart_id": "A"}, "event_id": "e1"}``; ``properties``
  and ``event_id`` may be left out (an event without an id gets a new one, so it is never a
  duplicate of another line);
- a profile update: ``{"type": "profile", "customer_id": "c1", "attributes": {"plan": "pro"},
  "unset": [], "timezone": "Europe/Paris", "locale": "fr-FR", "timestamp": ...}``; every key
  but ``type`` and ``customer_id`` may be left out. With a ``timestamp`` it is read as a
  ``(timestamp, ProfileUpdate)`` pair (a back-test applies it at that instant); without, as a
  ``ProfileUpdate`` (applied with the next input).

``type`` is ``"event"`` when left out. A timestamp is an ISO 8601 string with a UTC offset (``Z``
for UTC), or a JSON number: a Unix epoch time in UTC, in seconds (int or float) by default, or
in milliseconds with ``timestamp_unit="ms"`` (what event stores such as Segment, Amplitude,
Mixpanel and Kafka often export). ``10**11`` is the line between the two units: a number of
seconds must be below it (before 5138-11-16), one of milliseconds at least it (from 1973-03-03)
and below ``10**14``, so a file read in the wrong unit is refused, with the unit to use, rather
than read as instants thousands of years off. ``cjo backtest`` reads its inputs with
``read_inputs`` (``--timestamp-unit``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from cjo.clock import EPOCH
from cjo.described import likely_meant
from cjo.errors import InvalidEventError, UsageError
from cjo.importing import Unreadable, read_json_lines
from cjo.model.events import Event, ProfileUpdate

__all__ = ["StreamInput", "TimestampUnit", "input_from_json", "read_inputs"]

#: What one line gives: an event, a profile update applied with the next input, or a profile
#: update at its own instant (what ``cjo.simulate.backtest`` takes).
StreamInput = Event | ProfileUpdate | tuple[datetime, ProfileUpdate]

_EVENT_KEYS = ("type", "customer_id", "name", "timestamp", "properties", "event_id")
_PROFILE_KEYS = ("type", "customer_id", "attributes", "unset", "timezone", "locale",
                 "timestamp")
_TYPES = ("event", "profile")

#: The unit of a timestamp given as a JSON number: Unix epoch seconds or milliseconds.
TimestampUnit = Literal["s", "ms"]
_UNITS: tuple[TimestampUnit, ...] = ("s", "ms")
# Numbers of seconds are below it (up to 5138-11-16), of milliseconds at least it (from
# 1973-03-03, before any event store's export): a number in the other unit is told apart.
_UNIT_LINE = 10**11
_MS_LIMIT = 10**14  # milliseconds past 5138-11-16: microseconds or nanoseconds
_UNIT_OPTION = {"s": "timestamp_unit='s' (cjo backtest --timestamp-unit s, the default)",
                "ms": "timestamp_unit='ms' (cjo backtest --timestamp-unit ms)"}


def read_inputs(
    lines: Iterable[str], *, in_order: bool = False, timestamp_unit: TimestampUnit = "s",
    start: datetime | None = None,
) -> Iterator[StreamInput]:
    """The inputs of a JSON lines stream, in order. A line that cannot be read raises
    ``InvalidEventError`` naming it (``line 12: ...``, counted from 1); the lines before it have
    been given out. With ``in_order`` (a back-test's stream), so does a line stamped before
    the last stamped line before it, or before ``start`` (the back-test's, when given).
    ``timestamp_unit`` is the unit of timestamps given as numbers: Unix epoch seconds
    (``"s"``) or milliseconds (``"ms"``); see the module's description."""
    _check_unit(timestamp_unit)  # now, not at the first line read
    if start is not None and (not isinstance(start, datetime) or start.utcoffset() is None):
        raise UsageError(f"start must be a datetime with a UTC offset, got {start!r:.80}")
    return _read_inputs(lines, in_order, timestamp_unit, start)


def _read_inputs(
    lines: Iterable[str], in_order: bool, unit: TimestampUnit, start: datetime | None
) -> Iterator[StreamInput]:
    # Line 0 stands for start: a back-test refuses an input before it by its position in the
    # stream, which a file's reader knows as a line.
    latest: tuple[datetime, int] | None = None if start is None else (start, 0)
    for line, record in read_json_lines(lines):
        try:
            item = _from_json(record, unit)
        except InvalidEventError as exc:
            raise InvalidEventError(f"line {line}: {exc}") from None
        if in_order:
            at = item.timestamp if isinstance(item, Event) else (
                item[0] if isinstance(item, tuple) else None
            )
            if at is not None:
                if latest is not None and at < latest[0]:
                    before = f"line {latest[1]}" if latest[1] else "the start of the run"
                    raise InvalidEventError(
                        f"line {line}: stamped {at.isoformat()}, before {before} "
                        f"({latest[0].isoformat()}): the inputs must be in time order"
                    )
                latest = (at, line)
        yield item


def input_from_json(record: object, *, timestamp_unit: TimestampUnit = "s") -> StreamInput:
    """One input from a decoded JSON object (see the module's description; a timestamp given
    as a number is in ``timestamp_unit``); a record that is not one raises
    ``InvalidEventError`` saying what is wrong."""
    _check_unit(timestamp_unit)
    return _from_json(record, timestamp_unit)


def _from_json(record: object, timestamp_unit: TimestampUnit) -> StreamInput:
    if isinstance(record, Unreadable):
        raise InvalidEventError(record.reason)
    if not isinstance(record, Mapping):
        raise InvalidEventError(f"expected a JSON object, got {_json_type(record)}")
    kind = record.get("type", "event")
    if kind not in _TYPES:
        raise InvalidEventError(f"type must be 'event' or 'profile', got {kind!r:.80}")
    if kind == "event":
        _refuse_unknown(record, _EVENT_KEYS, "an event")
    else:
        _refuse_unknown(record, _PROFILE_KEYS, "a profile update")
    for key in ("customer_id", "name") if kind == "event" else ("customer_id",):
        if key not in record:
            raise InvalidEventError(f"{key} is missing")
    if kind == "event":
        if "timestamp" not in record:
            raise InvalidEventError("timestamp is missing")
        return Event(
            customer_id=record["customer_id"], name=record["name"],
            timestamp=_instant(record["timestamp"], timestamp_unit),
            properties=_object(record, "properties"),
            event_id=record.get("event_id"),
        )
    unset = record.get("unset")
    update = ProfileUpdate(
        record["customer_id"], _object(record, "attributes"),
        () if unset is None else unset, record.get("timezone"), record.get("locale"),
    )
    at = record.get("timestamp")
    return update if at is None else (_instant(at, timestamp_unit), update)


def _refuse_unknown(record: Mapping[Any, Any], known: tuple[str, ...], kind: str) -> None:
    unknown = sorted(str(k) for k in record if k not in known)
    if not unknown:
        return
    hints = [f"{name!r} (did you mean {close!r}?)" if (close := likely_meant(name, known))
             else repr(name) for name in unknown]
    raise InvalidEventError(
        f"unknown key(s) {', '.join(hints)}: {kind} has {', '.join(known)}"
    )


def _object(record: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = record.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidEventError(f"{key} must be a JSON object, got {_json_type(value)}")
    return value


def _check_unit(unit: object) -> None:
    if not isinstance(unit, str) or unit not in _UNITS:
        raise UsageError(f"timestamp_unit must be 's' or 'ms', got {unit!r:.80}")


def _instant(value: object, unit: TimestampUnit) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _epoch_instant(value, unit)
    if not isinstance(value, str):
        raise InvalidEventError(
            "timestamp must be an ISO 8601 string with a UTC offset or a number (Unix epoch "
            f"{_unit_name(unit)}), got {_json_type(value)}"
        )
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEventError(
            f"timestamp {value!r:.80} is not an ISO 8601 date and time "
            "(such as 2026-03-02T09:00:00Z)"
        ) from None
    if at.utcoffset() is None:
        raise InvalidEventError(
            f"timestamp {value!r:.80} has no UTC offset: add one (Z for UTC, or +01:00)"
        )
    return at


def _epoch_instant(value: float, unit: TimestampUnit) -> datetime:
    """The instant of a Unix epoch time in ``unit``, refused when it cannot be one in it."""
    if isinstance(value, float) and not math.isfinite(value):  # (an int may be too large)
        shown = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        raise InvalidEventError(f"timestamp must be a finite number, got {shown}")
    if value < 0:
        raise InvalidEventError(
            f"timestamp {_number(value)} is negative: Unix epoch {_unit_name(unit)} count from "
            "1970-01-01T00:00:00Z"
        )
    if unit == "s":
        if value >= _UNIT_LINE:
            raise InvalidEventError(
                f"timestamp {_number(value)} is too large for Unix epoch seconds (after "
                f"5138-11-16): if it is in milliseconds, read the stream with "
                f"{_UNIT_OPTION['ms']}"
            )
        return EPOCH + timedelta(seconds=value)
    if value < _UNIT_LINE:
        raise InvalidEventError(
            f"timestamp {_number(value)} is before 1973-03-03 in Unix epoch milliseconds: if it "
            f"is in seconds, read the stream with {_UNIT_OPTION['s']}"
        )
    if value >= _MS_LIMIT:
        raise InvalidEventError(
            f"timestamp {_number(value)} is too large for Unix epoch milliseconds (after "
            "5138-11-16)"
        )
    return EPOCH + timedelta(milliseconds=value)


def _number(value: float) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else f"{shown[:37]}..."  # a JSON integer may be huge


def _unit_name(unit: TimestampUnit) -> str:
    return "seconds" if unit == "s" else "milliseconds"


def _json_type(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number",
             list: "a list", type(None): "null"}
    return names.get(type(value), type(value).__name__)
