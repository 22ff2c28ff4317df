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

``type`` is ``"event"`` when left out. Timestamps are ISO 8601 strings with a UTC offset (``Z``
for UTC). ``cjo backtest`` reads its inputs with ``read_inputs``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from cjo.described import likely_meant
from cjo.errors import InvalidEventError
from cjo.importing import Unreadable, read_json_lines
from cjo.model.events import Event, ProfileUpdate

__all__ = ["StreamInput", "input_from_json", "read_inputs"]

#: What one line gives: an event, a profile update applied with the next input, or a profile
#: update at its own instant (what ``cjo.simulate.backtest`` takes).
StreamInput = Event | ProfileUpdate | tuple[datetime, ProfileUpdate]

_EVENT_KEYS = ("type", "customer_id", "name", "timestamp", "properties", "event_id")
_PROFILE_KEYS = ("type", "customer_id", "attributes", "unset", "timezone", "locale",
                 "timestamp")
_TYPES = ("event", "profile")


def read_inputs(lines: Iterable[str], *, in_order: bool = False) -> Iterator[StreamInput]:
    """The inputs of a JSON lines stream, in order. A line that cannot be read raises
    ``InvalidEventError`` naming it (``line 12: ...``, counted from 1); the lines before it have
    been given out. With ``in_order`` (a back-test's stream), so does a line stamped before
    the last stamped line before it."""
    latest: tuple[datetime, int] | None = None
    for line, record in read_json_lines(lines):
        try:
            item = input_from_json(record)
        except InvalidEventError as exc:
            raise InvalidEventError(f"line {line}: {exc}") from None
        if in_order:
            at = item.timestamp if isinstance(item, Event) else (
                item[0] if isinstance(item, tuple) else None
            )
            if at is not None:
                if latest is not None and at < latest[0]:
                    raise InvalidEventError(
                        f"line {line}: stamped {at.isoformat()}, before line {latest[1]} "
                        f"({latest[0].isoformat()}): the inputs must be in time order"
                    )
                latest = (at, line)
        yield item


def input_from_json(record: object) -> StreamInput:
    """One input from a decoded JSON object (see the module's description); a record that is
    not one raises ``InvalidEventError`` saying what is wrong."""
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
            timestamp=_instant(record["timestamp"]),
            properties=_object(record, "properties"),
            event_id=record.get("event_id"),
        )
    unset = record.get("unset")
    update = ProfileUpdate(
        record["customer_id"], _object(record, "attributes"),
        () if unset is None else unset, record.get("timezone"), record.get("locale"),
    )
    at = record.get("timestamp")
    return update if at is None else (_instant(at), update)


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


def _instant(value: object) -> datetime:
    if not isinstance(value, str):
        raise InvalidEventError(
            f"timestamp must be an ISO 8601 string with a UTC offset, got {_json_type(value)}"
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


def _json_type(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number",
             list: "a list", type(None): "null"}
    return names.get(type(value), type(value).__name__)
