"""JSON encodings of runtime records, shared by the SQL adapters.

Customer records are encoded by hand (they are read and written on every transaction, and a
hand-written codec is several times faster than a generic one) and decoded leniently:

- a record carries its layout number (``"v"``); older layouts are upgraded by the functions in
  ``UPGRADES``; a layout newer than this cjo knows is read as far as it is understood;
- top-level fields this version does not know are kept in ``CustomerState.extra`` and written
  back untouched (a rolling upgrade loses nothing); unknown fields inside an enrollment are
  ignored;
- anything else that does not decode raises ``CorruptRecordError`` naming the customer.

Instants are integer microseconds since the epoch (UTC). Datetimes inside attributes and event
properties are tagged ``{"$dt": microseconds}`` so they come back as aware datetimes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from cjo.channels.base import Message
from cjo.errors import CorruptRecordError
from cjo.model.events import Profile
from cjo.runtime.state import (
    RECORD_LAYOUT,
    Activity,
    CustomerState,
    EndedEnrollment,
    Enrollment,
    EntryHistory,
)
from cjo.serialization import converter

__all__ = [
    "UPGRADES",
    "decode",
    "decode_state",
    "dt",
    "encode",
    "encode_state",
    "message_from_json",
    "us",
]

T = TypeVar("T")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def us(value: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact: no float rounding)."""
    return (value - _EPOCH) // _MICROSECOND


def dt(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _us_opt(value: datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // _MICROSECOND


def _dt_opt(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


# --- values (attributes, properties, context) --------------------------------------------------


def _default(value: object) -> Any:
    if isinstance(value, datetime):
        return {"$dt": us(value)}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return str(value)


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "$dt" in obj:
        return dt(obj["$dt"])
    return obj


_dumps = json.JSONEncoder(separators=(",", ":"), default=_default, allow_nan=False).encode
_loads = json.JSONDecoder(object_hook=_hook).decode


# --- generic records (messages, definitions) ---------------------------------------------------


def encode(record: object) -> str:
    """A record (Message, ...) as compact JSON text, through the project's one converter."""
    return _dumps(converter.unstructure(record))


def decode(text: str | bytes, cls: type[T]) -> T:
    return converter.structure(json.loads(text), cls)


def message_from_json(text: str | bytes) -> Message:
    return decode(text, Message)


# --- the customer record -----------------------------------------------------------------------


def _enrollment(e: Enrollment) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": e.id, "j": e.journey_id, "ver": e.version, "in": us(e.entered_at),
    }
    if e.step_id is not None:
        d["s"] = e.step_id
    if e.step_entered_at is not None:
        d["sin"] = us(e.step_entered_at)
    if e.instance_key is not None:
        d["k"] = e.instance_key
    if e.wake_at is not None:
        d["w"] = us(e.wake_at)
    if e.expires_at is not None:
        d["x"] = us(e.expires_at)
    if e.converted_at is not None:
        d["conv"] = us(e.converted_at)
    if e.trigger_event_id is not None:
        d["t"] = e.trigger_event_id
    if e.context:
        d["ctx"] = e.context
    if e.visits:
        d["vis"] = e.visits
    if e.paths:
        d["p"] = e.paths
    return d


def _enrollment_from(d: Mapping[str, Any], customer_id: str) -> Enrollment:
    return Enrollment(
        id=d["id"], journey_id=d["j"], version=d["ver"], customer_id=customer_id,
        entered_at=dt(d["in"]), step_id=d.get("s"), step_entered_at=_dt_opt(d.get("sin")),
        instance_key=d.get("k"), wake_at=_dt_opt(d.get("w")), expires_at=_dt_opt(d.get("x")),
        converted_at=_dt_opt(d.get("conv")), trigger_event_id=d.get("t"),
        context=dict(d.get("ctx") or {}), visits=dict(d.get("vis") or {}),
        paths=dict(d.get("p") or {}),
    )


def _ended(x: EndedEnrollment) -> list[Any]:
    return [
        x.id, x.journey_id, x.version, us(x.entered_at), us(x.ended_at), x.status,
        x.end_reason, x.step_id, x.instance_key, _us_opt(x.converted_at),
    ]


def _ended_from(row: list[Any]) -> EndedEnrollment:
    (eid, jid, version, entered, ended, status, reason, step, key, converted) = row[:10]
    return EndedEnrollment(
        eid, jid, version, dt(entered), dt(ended), status, reason, step, key, _dt_opt(converted)
    )


_KNOWN: Final = frozenset({
    "v", "cid", "created", "rev", "profile", "enr", "ended", "hist", "timers", "marks",
})


def state_to_dict(state: CustomerState) -> dict[str, Any]:
    d: dict[str, Any] = dict(state.extra)
    d["v"] = RECORD_LAYOUT
    d["cid"] = state.customer_id
    d["created"] = us(state.created_at)
    d["rev"] = state.revision
    p = state.profile
    if p is not None:
        prof: dict[str, Any] = {"a": p.attributes}
        if p.timezone is not None:
            prof["tz"] = p.timezone
        if p.locale is not None:
            prof["loc"] = p.locale
        d["profile"] = prof
    if state.enrollments:
        d["enr"] = [_enrollment(e) for e in state.enrollments]
    if state.ended:
        d["ended"] = [_ended(x) for x in state.ended]
    if state.history:
        d["hist"] = [
            [jid, key, h.count, [us(t) for t in h.recent], _us_opt(h.last_ended_at)]
            for (jid, key), h in state.history.items()
        ]
    if state.timers:
        d["timers"] = {name: us(at) for name, at in state.timers.items()}
    if state.marks:
        d["marks"] = {name: us(at) for name, at in state.marks.items()}
    return d


def encode_state(state: CustomerState) -> str:
    """The record as compact JSON text."""
    return _dumps(state_to_dict(state))


#: Upgrades from older layouts: ``UPGRADES[n]`` turns a layout-``n`` dict into layout ``n+1``.
#: Append one whenever ``RECORD_LAYOUT`` grows and old records need more than defaults.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def state_from_dict(d: Mapping[str, Any], customer_id: str) -> CustomerState:
    try:
        data = dict(d)
        layout = data.get("v", RECORD_LAYOUT)
        if not isinstance(layout, int) or layout < 1:
            raise ValueError(f"bad layout {layout!r}")
        while layout < RECORD_LAYOUT:
            data = UPGRADES[layout](data)
            layout += 1
        prof = data.get("profile")
        profile = None
        if prof is not None:
            profile = Profile(customer_id, dict(prof.get("a") or {}), prof.get("tz"),
                              prof.get("loc"))
        history: dict[tuple[str, str | None], EntryHistory] = {}
        for jid, key, count, recent, last_ended in data.get("hist") or ():
            history[(jid, key)] = EntryHistory(count, tuple(dt(t) for t in recent),
                                               _dt_opt(last_ended))
        return CustomerState(
            customer_id=customer_id,
            created_at=dt(data["created"]),
            revision=int(data.get("rev", 0)),
            profile=profile,
            enrollments=[_enrollment_from(e, customer_id) for e in data.get("enr") or ()],
            ended=[_ended_from(x) for x in data.get("ended") or ()],
            history=history,
            timers={n: dt(t) for n, t in (data.get("timers") or {}).items()},
            marks={n: dt(t) for n, t in (data.get("marks") or {}).items()},
            extra={k: v for k, v in data.items() if k not in _KNOWN},
        )
    except CorruptRecordError:
        raise
    except Exception as exc:  # whatever a damaged record raises, name the customer
        raise CorruptRecordError(customer_id, f"{type(exc).__name__}: {exc}") from exc


def decode_state(text: str | bytes, customer_id: str) -> CustomerState:
    """A record from its JSON text; ``CorruptRecordError`` (naming the customer) if it cannot
    be read."""
    try:
        data = _loads(text if isinstance(text, str) else text.decode())
    except Exception as exc:
        raise CorruptRecordError(customer_id, f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CorruptRecordError(customer_id, f"expected an object, got {type(data).__name__}")
    return state_from_dict(data, customer_id)


def activity_row(a: Activity) -> tuple[Any, ...]:
    """An activity as the column values SQL adapters store (``at`` in microseconds)."""
    return (
        us(a.at), a.customer_id, a.enrollment_id, a.journey_id, a.version, a.step_id, a.kind,
        a.detail, a.channel, a.content_id, a.content_version,
    )


def activity_from_row(row: tuple[Any, ...]) -> Activity:
    at, cid, eid, jid, version, step, kind, detail, channel, content, cver = row
    return Activity(dt(at), cid or "", eid, jid, version, step, kind, detail, channel, content,
                    cver)


def value_dumps(value: object) -> str:
    """Attributes and properties as JSON (datetimes tagged), for adapters that need it."""
    return _dumps(value)


def value_loads(text: str) -> Any:
    return _loads(text)
