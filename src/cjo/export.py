"""Privacy export: everything cjo holds about one customer, as plain JSON-ready data.

``export_customer(storage, customer_id, now)`` reads the customer's record (profile, enrollments
active and kept ended, entry histories, consent and channel blocks, the send ledger, event
aggregates, segment memberships, offer counts, timers and marks, and what the record holds
from a newer layout than this cjo's, ``newer_layout``), the outbox messages still held for them
(pending, delivered, dead letters) and their activity-log entries. Instants are ISO 8601 strings
in UTC; every key is always present, so the shape does not depend on the data.

``newer_layout``: during a rolling upgrade, a record written by a newer cjo keeps what this one
does not know (``CustomerState.extra``), and it is held about the customer as much as the rest:

- ``layout``: the record's layout number when it is newer than this cjo's, else None;
- ``fields``: its top-level fields this cjo does not know, by name;
- ``enrollment_fields``: its fields inside active enrollments, by enrollment id, then by name;
- ``row_positions``: the positions it appended to rows, by part (``cons``, ``ended``, ``hist``,
  ``led``, ``offers``, ``trk``: see the record layout in docs/architecture.md), each a list of
  ``{"row": ..., "positions": [...]}`` in the order of the stored rows, ``row`` being what
  identifies the row in its part as the stored record does (an ended enrollment's id, a
  history's journey and instance key, a stream key...).

Names and ids are in sorted order. Values are as the record holds them: an instant tagged in a
field (``{"$dt": microseconds}``, as in attributes) as an ISO string, positions as stored (this
cjo does not know what they mean).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from cjo.errors import UsageError
from cjo.runtime.state import HELD, Activity, CustomerState, Enrollment, shown_wake
from cjo.storage.base import OutboxEntry, Storage, returned
from cjo.storage.codec import split_extra

__all__ = ["EXPORT_FORMAT", "export_customer", "upgrade_export"]

#: The version of the export's shape (a change of keys gets a new number): 2 added the
#: record's ``newer_layout``; 3 added each enrollment's ``held_at`` and ``carried_sends``, and
#: shows ``wake_at`` None while a pause holds it (2 showed an instant in the year 9000); 4
#: added each message's ``context`` (what a failover renders with).
EXPORT_FORMAT = 4

#: How format 2 wrote the wake-up of an enrollment held by a pause (``HELD``).
_HELD_TEXT = HELD.isoformat()

#: Every instant: the activity log of all time (storage takes any aware bounds).
_ALL_TIME = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))


def export_customer(storage: Storage, customer_id: str, now: datetime) -> dict[str, Any]:
    """Everything ``storage`` holds about ``customer_id`` (see the module docstring). A
    customer never seen exports with ``record`` None and empty lists; a stored record that
    cannot be decoded raises ``CorruptRecordError`` rather than export as none."""
    state = returned(storage, "peek", storage.peek(customer_id), (CustomerState, type(None)))
    if state is None:
        # An adapter written before peek raised for an undecodable record answers None for it:
        # a transaction's load tells them apart (and raises for it). Nothing is written.
        with storage.customer(customer_id, now) as session:
            state = returned(session, "load", session.load(), (CustomerState, type(None)))
    return {
        "format": EXPORT_FORMAT,
        "customer_id": customer_id,
        "record": None if state is None else _record(state),
        "messages": [_message(e) for e in returned(
            storage, "customer_outbox", storage.customer_outbox(customer_id), list, OutboxEntry
        )],
        "activities": [
            _plain_dict(attrs.asdict(a, recurse=False))
            for a in returned(storage, "activities",
                              storage.activities(*_ALL_TIME, customer_id=customer_id),
                              list, Activity)
        ],
    }


def upgrade_export(exported: Mapping[str, Any]) -> dict[str, Any]:
    """An export of an older format (2 to 3, as JSON-decoded) in the current one (a copy):
    format 2's enrollments gain ``held_at`` None and empty ``carried_sends``, and a held one's
    ``wake_at`` (an instant in the year 9000) becomes None (when it was held is not known);
    the messages of formats 2 and 3 gain an empty ``context`` (none was kept then).
    ``UsageError`` for anything else, naming the format found."""
    fmt = exported.get("format") if isinstance(exported, Mapping) else None
    if type(fmt) is not int or not 2 <= fmt <= EXPORT_FORMAT:
        what = (f"format {fmt!r}" if isinstance(exported, Mapping)
                else type(exported).__name__)
        raise UsageError(f"upgrade_export reads exports of format 2 to {EXPORT_FORMAT}, got "
                         f"{what}")
    out = copy.deepcopy(dict(exported))
    out["format"] = EXPORT_FORMAT
    record = out.get("record")
    if fmt == 2 and isinstance(record, dict):
        for e in record.get("enrollments") or ():
            if e.get("wake_at") == _HELD_TEXT:
                e["wake_at"] = None
            e.setdefault("held_at", None)
            e.setdefault("carried_sends", {})
    for message in out.get("messages") or ():
        if isinstance(message, dict):
            message.setdefault("context", {})
    return out


def _record(state: CustomerState) -> dict[str, Any]:
    p = state.profile
    return _plain_dict({
        "created_at": state.created_at,
        "profile": None if p is None else {
            "attributes": dict(p.attributes), "timezone": p.timezone, "locale": p.locale,
        },
        "enrollments": [_enrollment(e) for e in state.all_enrollments()],
        "entry_history": [
            {"journey_id": jid, "instance_key": key, "count": h.count, "recent": list(h.recent),
             "last_ended_at": h.last_ended_at}
            for (jid, key), h in sorted(state.history.items(), key=lambda kv: (kv[0][0],
                                                                              kv[0][1] or ""))
        ],
        "consent": [
            {"topic": topic, "channel": channel, "subscribed": value, "at": at}
            for (topic, channel), (value, at) in state.consent.items()
        ],
        "blocked_channels": dict(state.blocked),
        "sends": [{"at": at, "channel": ch, "tags": list(tags)} for at, ch, tags in state.sends],
        "tracks": {
            key: {
                "since": t.since, "first": t.first, "last": t.last, "count": t.count,
                "total": t.total, "low": t.low, "high": t.high,
                "recent": [[at, value] for at, value in t.recent],
                "ranges": {r: list(acc) for r, acc in t.ranges.items()},
            }
            for key, t in sorted(state.tracks.items())
        },
        "segments": dict(sorted(state.segments.items())),
        "offers": {
            oid: {"count": o.count, "recent": list(o.recent)}
            for oid, o in sorted(state.offers.items())
        },
        "timers": dict(sorted(state.timers.items())),
        "marks": dict(sorted(state.marks.items())),
        "decided_at": state.decided_at,
        "newer_layout": _newer_layout(state.extra),
    })


def _newer_layout(extra: Mapping[str, Any]) -> dict[str, Any]:
    fields, enrollments, positions = split_extra(extra)
    return {
        "layout": fields.pop("v", None),
        "fields": dict(sorted(fields.items())),
        "enrollment_fields": {
            eid: dict(sorted(more.items())) for eid, more in sorted(enrollments.items())
        },
        "row_positions": {
            part: [{"row": row, "positions": more} for row, more in rows.items()]
            for part, rows in sorted(positions.items())
        },
    }


def _enrollment(e: Enrollment) -> dict[str, Any]:
    return {
        "id": e.id, "journey_id": e.journey_id, "version": e.version, "status": e.status,
        "step_id": e.step_id, "instance_key": e.instance_key, "entered_at": e.entered_at,
        "step_entered_at": e.step_entered_at, "wake_at": shown_wake(e), "held_at": e.held_at,
        "expires_at": e.expires_at,
        "ended_at": e.ended_at, "end_reason": e.end_reason, "converted_at": e.converted_at,
        "context": dict(e.context), "paths": dict(e.paths), "visits": dict(e.visits),
        "merged_passes": dict(e.merged_passes or {}), "control": e.control,
        "carried_sends": {
            step: {"passes": passes, "message_keys": list(keys)}
            for step, (passes, keys) in (e.carried_sends or {}).items()
        },
    }


def _message(entry: OutboxEntry) -> dict[str, Any]:
    m = entry.message
    return _plain_dict({
        "idempotency_key": m.idempotency_key, "status": entry.status,
        "attempts": entry.attempts, "available_at": entry.available_at,
        "last_error": entry.last_error, "channel": m.channel, "content_id": m.content_id,
        "content_version": m.content_version, "journey_id": m.journey_id,
        "journey_version": m.journey_version, "step_id": m.step_id,
        "enrollment_id": m.enrollment_id, "created_at": m.created_at,
        "transactional": m.transactional, "locale": m.locale, "variant": m.variant,
        "offer_id": m.offer_id, "recipient": dict(m.recipient), "fields": dict(m.fields),
        "context": dict(m.context),
    })


def _plain_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in value.items()}


def _plain(value: Any) -> Any:
    """``value`` with instants as ISO strings and every container a dict or list."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
