"""JSON encodings of runtime records, shared by the SQL adapters.

Customer records are encoded by hand (they are read and written on every transaction, and a
hand-written codec is several times faster than a generic one) and decoded leniently:

- a record carries its layout number (``"v"``); older layouts are upgraded by the functions in
  ``UPGRADES``; a layout newer than this cjo knows is read as far as it is understood, and
  written back with its own number (kept in ``CustomerState.extra``), so the newer cjo does not
  upgrade it again. A newer layout adds fields or appends positions to rows, never changes what
  one means (that takes a new field or position);
- top-level fields this version does not know are kept in ``CustomerState.extra`` and written
  back untouched (a rolling upgrade loses nothing); so are the fields a record of a newer layout
  holds inside an active enrollment (kept in ``extra`` under ``_ENROLLMENT_EXTRA``, by
  enrollment id, and written back into that enrollment while it is active);
- the rows of ``hist``, ``cons``, ``led``, ``ended``, ``trk`` and ``offers`` are read by the
  positions this version writes, whatever their length; the positions past them are kept in
  ``extra`` under ``_ROW_EXTRA``, by what identifies the row (``_ROWS``), and written back
  after this version's own while the row is there, changed or not; a row this version
  removes (an ended enrollment pruned, an entry history dropped, a ledger entry past every
  cap) takes them with it. Nested lists (a track's recent entries and ranges, the instants of
  a history or offer) are not rows a layout appends to;
- anything else that does not decode (a row shorter than this version writes, save a track's,
  whose trailing defaults are left out) raises ``CorruptRecordError`` naming the customer.

A value JSON cannot hold (NaN or an infinity put into a record after it was validated, a key
that is not a string...) is refused when the record is encoded: ``StorageError`` naming the
customer and where the value is, raised inside the transaction, which then rolls back.

Instants are integer microseconds since the epoch (UTC). Datetimes inside attributes and event
properties are tagged ``{"$dt": microseconds}`` so they come back as aware datetimes.
"""

from __future__ import annotations

import json
import json.encoder
import json.scanner
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar, cast

from cjo.channels.base import Message
from cjo.clock import EPOCH, MICROSECOND, epoch_us
from cjo.errors import CorruptRecordError, StorageError
from cjo.model.events import INSTANT_TAG, Profile
from cjo.runtime.state import (
    ACTIVE,
    NO_ENTRIES,
    NO_ITEMS,
    RECORD_LAYOUT,
    Activity,
    CustomerState,
    EndedEnrollment,
    Enrollment,
    EntryHistory,
    OfferHistory,
    Track,
)
from cjo.serialization import converter

__all__ = [
    "UPGRADES",
    "activity_from_row",
    "activity_row",
    "decode",
    "decode_message",
    "decode_state",
    "dt",
    "encode",
    "encode_message",
    "encode_state",
    "enrolled_page",
    "has_enrollment",
    "journey_needles",
    "split_extra",
    "us",
]

T = TypeVar("T")

# The name the SQL adapters and cjo.testing import it by.
us = epoch_us


def dt(value: int) -> datetime:
    # A product rather than timedelta(microseconds=...): exact for integers, and half the cost
    # (a record holds several instants, decoded on every transaction).
    return EPOCH + MICROSECOND * value


def _us_opt(value: datetime | None) -> int | None:
    return None if value is None else (value - EPOCH) // MICROSECOND


def _dt_opt(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + MICROSECOND * value


# --- values (attributes, properties, context) --------------------------------------------------


def _default(value: object) -> Any:
    if isinstance(value, datetime):
        return {INSTANT_TAG: us(value)}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return str(value)


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and INSTANT_TAG in obj:
        return dt(obj[INSTANT_TAG])
    return obj


def _revive(values: dict[str, Any]) -> dict[str, Any]:
    """Tagged datetimes back to datetimes, in attributes or properties decoded without a hook
    (a hook would run for every object of the record; values are mostly scalars)."""
    for k, v in values.items():
        if isinstance(v, dict | list):
            values[k] = _revive_value(v)
    return values


def _revive_value(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and INSTANT_TAG in value:
            return dt(value[INSTANT_TAG])
        return _revive(value)
    if isinstance(value, list):
        return [_revive_value(v) if isinstance(v, dict | list) else v for v in value]
    return value


_dumps = json.JSONEncoder(separators=(",", ":"), default=_default, allow_nan=False).encode

# Customer records skip the check for circular references: their values come through the
# model's validation, which copies them into plain, depth-bounded data (a cycle built by hand
# still fails, with RecursionError rather than ValueError). Where the C accelerator is there, its
# encoder is made once, not on every call as JSONEncoder.encode does: with the skipped check,
# about a third off the encoding of a small record.
_record_encoder = json.JSONEncoder(
    separators=(",", ":"), default=_default, allow_nan=False, check_circular=False
)
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)


def _make_record_dumps() -> Callable[[object], str]:
    if _c_make_encoder is None:
        return _record_encoder.encode
    e = _record_encoder
    chunks = _c_make_encoder(
        None, e.default, json.encoder.encode_basestring_ascii, e.indent, e.key_separator,
        e.item_separator, e.sort_keys, e.skipkeys, e.allow_nan,
    )
    join = "".join

    def dumps(value: object) -> str:
        return join(chunks(value, 0))

    return dumps


_dumps_record = _make_record_dumps()
_loads = json.JSONDecoder(object_hook=_hook).decode
_loads_plain = json.JSONDecoder().decode
# The decoder's scanner, called directly for stored records (compact text, no surrounding
# whitespace): it skips decode()'s two whitespace matches, a sixth of the parse.
# (typeshed wants a scanner as the context; a decoder is what json itself passes.)
_scan_once = json.scanner.make_scanner(cast(Any, json.JSONDecoder()))


def _parse_record(text: str) -> Any:
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        return _loads_plain(text)  # leading whitespace, or not JSON: the decoder decides
    if end != len(text):
        return _loads_plain(text)  # trailing text: the decoder accepts whitespace, refuses more
    return value


# --- generic records (messages, definitions) ---------------------------------------------------


def encode(record: object) -> str:
    """A record (Message, ...) as compact JSON text, through the project's one converter;
    ``StorageError`` if it holds a value JSON cannot hold."""
    return _encoded(record, converter.unstructure(record))


def _encoded(record: object, data: Any) -> str:
    """``record``'s data as compact JSON text (``encode``)."""
    try:
        return _dumps(data)
    except (ValueError, TypeError, RecursionError) as exc:
        raise _unencodable(_describe(record), _locate(data), exc) from exc


def _describe(record: object) -> str:
    """A record as an error message names it: its kind, its key and its customer, if any."""
    what = type(record).__name__
    key = getattr(record, "idempotency_key", None)
    if key is not None:
        what += f" {key!r}"
    customer = getattr(record, "customer_id", None)
    return what if customer is None else f"{what} of customer {customer!r}"


#: How deep ``_locate`` looks for the value that failed (records are depth-bounded; a cycle
#: built by hand is not).
_LOCATE_DEPTH: Final = 64


def _locate(value: object, path: str = "", depth: int = 0) -> str | None:
    """Where in ``value`` (a record's JSON data) the first thing JSON cannot hold is, as a
    path of keys and indexes; None if it cannot be found. Runs only once encoding failed."""
    if depth > _LOCATE_DEPTH:
        return path or None
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str | int | float | None) or (
                isinstance(k, float) and not math.isfinite(k)
            ):
                return f"{path}[{k!r}] (the key)"
            found = _locate(v, f"{path}[{k!r}]", depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple | set | frozenset):
        for i, v in enumerate(value):
            found = _locate(v, f"{path}[{i}]", depth + 1)
            if found is not None:
                return found
        return None
    try:
        _dumps(value)
    except (ValueError, TypeError, RecursionError):
        return f"{path} = {value!r}" if path else repr(value)
    return None


def _unencodable(what: str, where: str | None, exc: BaseException) -> StorageError:
    at = f" ({where})" if where is not None else ""
    return StorageError(
        f"the {what} cannot be stored: it holds a value JSON cannot hold{at}: "
        f"{type(exc).__name__}: {exc}"
    )


def _locate_in_state(state: CustomerState, data: Mapping[str, Any]) -> str | None:
    """Where in a customer record the value that failed is, named as the record's fields are
    (the places host values reach first), else as a path in its encoded form."""
    places: list[tuple[str, object]] = []
    if state.profile is not None:
        places.append(("profile attribute ", state.profile.attributes))
    places += [(f"context of enrollment {e.id!r} at ", e.context) for e in state.enrollments]
    places.append(("", data))
    for label, value in places:
        found = _locate(value)
        if found is not None:
            return label + found
    return None


def decode(text: str | bytes, cls: type[T]) -> T:
    return converter.structure(json.loads(text), cls)


def encode_message(message: Message) -> str:
    """An outbox message as compact JSON text (``decode_message`` reads it back);
    ``StorageError`` naming where, if it holds a value JSON cannot hold."""
    data = converter.unstructure(message)
    # The recipient's values as a profile's in a record: instants tagged (``_default``), so
    # that ``decode_message`` gives back what the memory adapter keeps (not ISO text).
    data["recipient"] = message.recipient
    if message.context:
        # As an enrollment's context in a record: instants tagged (``_default``), so that
        # ``decode_message`` gives back what a template rendered at the send read.
        data["context"] = message.context
    else:
        # Left out, as before messages had one: nearly every message is then as an older cjo
        # wrote it, and reads (a rolling upgrade).
        del data["context"]
    return _encoded(message, data)


def decode_message(text: str | bytes) -> Message:
    """A message from ``encode_message``'s text."""
    message = decode(text, Message)
    # Tagged instants back to datetimes (a message an older cjo wrote has ISO text there).
    _revive(cast(dict[str, Any], message.recipient))
    if message.context:
        # Its instants are tagged as in a record (``_default``): datetimes again, as rendered.
        _revive(cast(dict[str, Any], message.context))
    return message


# --- the customer record -----------------------------------------------------------------------


def _enrollment(e: Enrollment) -> dict[str, Any]:
    epoch, tick = EPOCH, MICROSECOND  # us() inlined: several instants per enrollment
    d: dict[str, Any] = {
        "id": e.id, "j": e.journey_id, "ver": e.version, "in": (e.entered_at - epoch) // tick,
    }
    if e.step_id is not None:
        d["s"] = e.step_id
    if e.step_entered_at is not None:
        d["sin"] = (e.step_entered_at - epoch) // tick
    if e.instance_key is not None:
        d["k"] = e.instance_key
    if e.wake_at is not None:
        d["w"] = (e.wake_at - epoch) // tick
    if e.expires_at is not None:
        d["x"] = (e.expires_at - epoch) // tick
    if e.converted_at is not None:
        d["conv"] = (e.converted_at - epoch) // tick
    if e.trigger_event_id is not None:
        d["t"] = e.trigger_event_id
    if e.context:
        d["ctx"] = e.context
    if e.visits:
        d["vis"] = e.visits
    if e.paths:
        d["p"] = e.paths
    if e.held_at is not None:
        d["hold"] = (e.held_at - epoch) // tick
    if e.retries:
        d["rr"] = e.retries
    rare = e._rare
    if rare is not None:
        if rare.merged_passes:
            d["mrg"] = rare.merged_passes
        if rare.carried_sends:
            # step -> [passes, key...]: a list per step, as JSON has no tuples
            d["cs"] = {step: [passes, *keys] for step, (passes, keys) in
                       rare.carried_sends.items()}
    control = e.control
    if control is not None:
        # Written for the treated too: an enrollment without it is one an older cjo wrote
        # (entered, or moved by an identity merge, into a record of this layout), whose group
        # at entry is not known.
        d["cg"] = 1 if control else 0
    return d


def _enrollment_from(d: Mapping[str, Any], customer_id: str) -> Enrollment:
    get = d.get
    ctx, vis, paths, merged, carried = get("ctx"), get("vis"), get("p"), get("mrg"), get("cs")
    sin, w, x, conv, hold = get("sin"), get("w"), get("x"), get("conv"), get("hold")
    epoch, tick = EPOCH, MICROSECOND  # dt() inlined: several instants per enrollment
    control = get("cg")
    eid, jid, version, step = d["id"], d["j"], d["ver"], get("s")
    if (type(version) is not int or type(jid) is not str or type(eid) is not str
            or not (step is None or type(step) is str)):
        # Read as they are, a version "1" or a journey id 7 match no published version: the
        # enrollment was claimed again every lease, never fired, never set aside.
        raise TypeError(
            f"enrollment {eid!r} names journey {jid!r} version {version!r} step {step!r}: "
            "the id, journey and step must be text and the version an integer"
        )
    return Enrollment(
        eid, jid, version, customer_id, epoch + tick * d["in"], step,
        None if sin is None else epoch + tick * sin, ACTIVE, get("k"),
        None if w is None else epoch + tick * w, None if x is None else epoch + tick * x,
        None, None, None if conv is None else epoch + tick * conv, get("t"),
        _revive(ctx) if ctx else {}, dict(vis) if vis else {}, dict(paths) if paths else {},
        None if hold is None else epoch + tick * hold, int(get("rr", 0)),
        dict(merged) if merged else None, None if control is None else bool(control),
        {step: (int(kept[0]), tuple(kept[1:])) for step, kept in carried.items()}
        if carried else None,
    )


def _ended(x: EndedEnrollment) -> list[Any]:
    return [
        x.id, x.journey_id, x.version, us(x.entered_at), us(x.ended_at), x.status,
        x.end_reason, x.step_id, x.instance_key, _us_opt(x.converted_at),
    ]


def _ended_from(row: list[Any]) -> EndedEnrollment:
    (eid, jid, version, entered, ended, status, reason, step, key, converted) = row
    return EndedEnrollment(
        eid, jid, version, dt(entered), dt(ended), status, reason, step, key, _dt_opt(converted)
    )


_KNOWN: Final = frozenset({
    "v", "cid", "created", "rev", "profile", "enr", "ended", "hist", "timers", "marks",
    "cons", "blk", "led", "trk", "seg", "segb", "offers", "ers",
})


_TRACK_DEFAULTS: Final[tuple[Any, ...]] = (None, None, None, 0, 0, None, None, [], {})


def _track(t: Track) -> list[Any]:
    # Positional, trailing defaults left out: most tracks are a timestamp or two and a count.
    row: list[Any] = [
        us(t.since), _us_opt(t.first), _us_opt(t.last), t.count, t.total, t.low, t.high,
        [us(at) if v is None else [us(at), v] for at, v in t.recent], t.ranges,
    ]
    while len(row) > 1 and row[-1] == _TRACK_DEFAULTS[len(row) - 1]:
        row.pop()
    return row


def _track_from(row: list[Any]) -> Track:
    full: list[Any] = [*row, *_TRACK_DEFAULTS[len(row):]]
    since, first, last, count, total, low, high, recent, ranges = full
    return Track(
        dt(since), _dt_opt(first), _dt_opt(last), int(count), total, low, high,
        [(dt(e), None) if isinstance(e, int) else (dt(e[0]), e[1]) for e in recent],
        {k: list(v) for k, v in ranges.items()},
    )


def state_to_dict(state: CustomerState, revision: int | None = None) -> dict[str, Any]:
    """The record as the dict its JSON text is; ``revision`` in place of the record's own."""
    rev = state.revision if revision is None else revision
    epoch, tick = EPOCH, MICROSECOND  # us() inlined: this runs on every save
    # The rare fields (``CustomerState._rare``) read once: each read through the record is a
    # descriptor call, ten per save, and most records hold none of them.
    rare = state._rare
    d: dict[str, Any]
    kept: Mapping[str, Mapping[str, Any]] | None = None
    positions: Mapping[str, Mapping[Hashable, list[Any]]] | None = None
    if rare is not None and rare.extra:
        d, kept, positions = split_extra(rare.extra)
        # A record of a newer layout keeps its number (kept among the extra fields): labelled
        # with this one's, the newer cjo would run its upgrades again on what is already new.
        d.setdefault("v", RECORD_LAYOUT)
        d["cid"] = state.customer_id
        d["created"] = (state.created_at - epoch) // tick
        d["rev"] = rev
    else:  # the usual case: one literal, the same keys in the same order
        d = {"v": RECORD_LAYOUT, "cid": state.customer_id,
             "created": (state.created_at - epoch) // tick, "rev": rev}
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
        if kept:
            for e in d["enr"]:
                more = kept.get(e["id"])
                if more:
                    e.update(more)
    if state.ended:
        d["ended"] = [_ended(x) for x in state.ended]
    history = state.history
    if history:
        d["hist"] = [
            [jid, key, h.count, [(t - epoch) // tick for t in h.recent],
             _us_opt(h.last_ended_at)]
            for (jid, key), h in history.items()
        ]
    if state.timers:
        d["timers"] = {name: us(at) for name, at in state.timers.items()}
    if state.marks or state.decided_at is not None:
        marks = {name: us(at) for name, at in state.marks.items()}
        # Stored among the marks, where it was before it had a field of its own.
        if state.decided_at is not None:
            marks[_DECIDED] = us(state.decided_at)
        d["marks"] = marks
    if rare is None:
        return d
    # Delivery policies: consent statements, blocked channels, the send ledger of caps.
    if rare.consent:
        d["cons"] = [[t, c, ok, us(at)] for (t, c), (ok, at) in rare.consent.items()]
    if rare.blocked:
        d["blk"] = dict(rare.blocked)
    if rare.sends:
        d["led"] = [[us(at), channel, list(tags)] for at, channel, tags in rare.sends]
    if rare.tracks:
        d["trk"] = {key: _track(t) for key, t in rare.tracks.items()}
    if rare.segments:
        d["seg"] = {sid: us(at) for sid, at in rare.segments.items()}
    if rare.segments_basis is not None:
        d["segb"] = rare.segments_basis
    if rare.offers:
        d["offers"] = {
            offer_id: [h.count, [us(t) for t in h.recent]]
            for offer_id, h in rare.offers.items()
        }
    if rare.erasures:
        d["ers"] = rare.erasures
    if positions:
        _append_positions(d, positions)
    return d


def encode_state(state: CustomerState, revision: int | None = None) -> str:
    """The record as compact JSON text; ``revision`` (the one being written) in place of the
    record's own, leaving the caller's object as it is. ``StorageError`` naming the customer
    and where the value is, if the record holds a value JSON cannot hold."""
    data = state_to_dict(state, revision)
    try:
        return _dumps_record(data)
    except (ValueError, TypeError, RecursionError) as exc:
        raise _unencodable(
            f"record of customer {state.customer_id!r}", _locate_in_state(state, data), exc
        ) from exc


#: What a SQL adapter logs (with where) when it opens a database of the first layout, with a
#: row per enrollment: while cjo is 0.x that data is dropped, not converted (documented), and
#: an operator should not learn it only from missing customers.
DROPPING_LAYOUT_1 = (
    "%s has cjo's schema version 1 (a row per enrollment), whose data is not converted: its "
    "profiles, enrollments, handled event ids, outbox and activity log are dropped (settings "
    "are kept); publish the definitions again"
)

#: Upgrades from older layouts: ``UPGRADES[n]`` turns a layout-``n`` dict into layout ``n+1``.
#: Add one whenever ``RECORD_LAYOUT`` grows and old records need more than defaults; a layout
#: with none reads as it is (layout 2 only added ``cg``, whose absence means not known, and
#: layout 3 ``cs``, whose absence means nothing carried: each grew so that an older cjo keeps
#: the new key, which it keeps inside an enrollment only in a newer layout).
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}

#: ``CustomerState.decided_at``'s name among the stored marks.
_DECIDED: Final = "decided"

#: Where ``CustomerState.extra`` keeps the enrollment fields of a newer layout (never a
#: top-level field of a record: not a name a layout would choose).
_ENROLLMENT_EXTRA: Final = "~enrollment fields"

#: The fields of a stored enrollment (``_enrollment``).
_ENROLLMENT_FIELDS: Final = frozenset({
    "id", "j", "ver", "in", "s", "sin", "k", "w", "x", "conv", "t", "ctx", "vis", "p", "hold",
    "rr", "mrg", "cg", "cs",
})


def split_extra(
    extra: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, dict[Hashable, list[Any]]]]:
    """``CustomerState.extra`` in its three parts, each a new dict (the values are shared):
    the top-level fields this cjo does not know (with the record's layout number, as
    ``"v"``, when it is newer than this cjo's); a newer layout's fields inside active
    enrollments, by enrollment id; and the positions a newer layout appended to rows, by part
    (``hist``, ``cons``, ``led``, ``ended``, ``trk``, ``offers``) and by what identifies the
    row in its part (``_ROWS``)."""
    fields = dict(extra)
    enrollments = fields.pop(_ENROLLMENT_EXTRA, None)
    positions = fields.pop(_ROW_EXTRA, None)
    return fields, dict(enrollments or {}), dict(positions or {})


def _unknown_enrollment_fields(enrollments: object) -> dict[str, dict[str, Any]]:
    """The fields of stored enrollments this cjo does not know, by enrollment id."""
    out: dict[str, dict[str, Any]] = {}
    if isinstance(enrollments, list):
        for e in enrollments:
            if isinstance(e, dict) and not _ENROLLMENT_FIELDS.issuperset(e):
                out[str(e.get("id"))] = {
                    k: v for k, v in e.items() if k not in _ENROLLMENT_FIELDS
                }
    return out


#: Where ``CustomerState.extra`` keeps the positions a newer layout appended to rows, by part
#: and by what identifies each row (as ``_ENROLLMENT_EXTRA``, not a name a layout would choose).
_ROW_EXTRA: Final = "~row positions"

#: What identifies a row among its part's rows, from its place in the part (index or key),
#: the row, and what the identity saw of the part's earlier rows.
_Identity = Callable[[Any, list[Any], dict[Hashable, int]], Hashable]


def _first_two(_at: Any, row: list[Any], _seen: dict[Hashable, int]) -> Hashable:
    return (row[0], row[1])  # hist: (journey, instance key); cons: (topic, channel)


def _first(_at: Any, row: list[Any], _seen: dict[Hashable, int]) -> Hashable:
    eid: Hashable = row[0]  # ended: the enrollment id
    return eid


def _place(at: Any, _row: list[Any], _seen: dict[Hashable, int]) -> Hashable:
    key: Hashable = at  # trk, offers: the key the row is stored under
    return key


def _send(_at: Any, row: list[Any], seen: dict[Hashable, int]) -> Hashable:
    # A ledger entry has no id: its content (instant, channel, tags), and which of the entries
    # with that content it is. The ledger is pruned and merged without reordering its entries
    # (a merged record's come after the kept one's at the same instant), and entries equal in
    # content are pruned together, so the pairing holds; a new entry has none to pair with.
    content = (row[0], row[1], tuple(row[2]))
    n = seen[content] = seen.get(content, -1) + 1
    return (content, n)


#: The positional rows of a record: part, positions this cjo writes, fewest a row may have,
#: the values of the positions it may leave out (only a track leaves out trailing defaults),
#: and what identifies a row.
_ROWS: Final[tuple[tuple[str, int, int, tuple[Any, ...], _Identity], ...]] = (
    ("hist", 5, 5, (), _first_two),
    ("cons", 4, 4, (), _first_two),
    ("led", 3, 3, (), _send),
    ("ended", 10, 10, (), _first),
    ("trk", len(_TRACK_DEFAULTS), 1, _TRACK_DEFAULTS, _place),
    ("offers", 2, 2, (), _place),
)


def _cut_rows(
    data: Mapping[str, Any],
) -> tuple[Mapping[str, Any], dict[str, dict[Hashable, list[Any]]]] | None:
    """``data`` with every row longer than this cjo writes cut to the positions it reads, and
    the positions cut off, by part and row identity; None if no row is longer. ``ValueError``
    for a row shorter than this cjo writes; what is not a row is left to the decoder."""
    out: dict[str, Any] | None = None
    positions: dict[str, dict[Hashable, list[Any]]] = {}
    for part, width, least, _defaults, identity in _ROWS:
        rows = data.get(part)
        if isinstance(rows, dict):
            places: Any = rows.items()
        elif isinstance(rows, list):
            places = enumerate(rows)
        else:
            continue
        cut: Any = None
        more: dict[Hashable, list[Any]] = {}
        seen: dict[Hashable, int] = {}
        for at, row in places:
            if not isinstance(row, list):
                continue
            if len(row) < least:
                raise ValueError(
                    f"{part}[{at!r}] has {len(row)} positions, fewer than the {least} this cjo "
                    "reads"
                )
            key = identity(at, row, seen)
            if len(row) > width:
                if cut is None:
                    cut = rows.copy()
                cut[at] = row[:width]
                more[key] = row[width:]
        if cut is not None:
            if out is None:
                out = dict(data)
            out[part] = cut
            positions[part] = more
    return None if out is None else (out, positions)


def _append_positions(d: dict[str, Any], positions: Mapping[str, Mapping[Hashable, list[Any]]],
                      ) -> None:
    """Append to the rows of ``d`` (a record being encoded, its rows its own) the positions
    kept for them; a row this cjo removed has none written (its positions go with it)."""
    for part, width, _least, defaults, identity in _ROWS:
        more = positions.get(part)
        rows = d.get(part)
        if not more or not rows:
            continue
        seen: dict[Hashable, int] = {}
        for at, row in rows.items() if isinstance(rows, dict) else enumerate(rows):
            appended = more.get(identity(at, row, seen))
            if appended:
                if len(row) < width:  # the positions left out come first
                    row.extend(defaults[len(row):])
                row.extend(appended)


def state_from_dict(d: Mapping[str, Any], customer_id: str) -> CustomerState:
    """A record from its decoded JSON (values' datetimes still tagged)."""
    try:
        data = d
        layout = data.get("v", RECORD_LAYOUT)
        if layout != RECORD_LAYOUT:
            if not isinstance(layout, int) or layout < 1:
                raise ValueError(f"bad layout {layout!r}")
            if layout < RECORD_LAYOUT:
                data = dict(data)
                while layout < RECORD_LAYOUT:
                    upgrade = UPGRADES.get(layout)
                    if upgrade is not None:
                        data = upgrade(data)
                    layout += 1
        if layout > RECORD_LAYOUT:
            # Only a newer cjo appends positions to rows: records of this layout are not
            # searched for them.
            cut = _cut_rows(data)
            if cut is None:
                return _state_from(data, customer_id, layout, None)
            return _state_from(cut[0], customer_id, layout, cut[1])
        try:
            return _state_from(data, customer_id, layout, None)
        except ValueError:
            # Rows are unpacked to exactly the positions this layout writes, so a longer row
            # (a newer cjo's that kept this layout's number) fails here rather than being
            # looked for in every record: read again, cut. Values the failed attempt revived
            # in place are datetimes now, which reviving leaves as they are.
            cut = _cut_rows(data)
            if cut is None:
                raise
            return _state_from(cut[0], customer_id, layout, cut[1])
    except CorruptRecordError:
        raise
    except Exception as exc:  # whatever a damaged record raises, name the customer
        raise CorruptRecordError(customer_id, f"{type(exc).__name__}: {exc}") from exc


def _state_from(
    data: Mapping[str, Any], customer_id: str, layout: int,
    positions: dict[str, dict[Hashable, list[Any]]] | None,
) -> CustomerState:
    """``state_from_dict`` once the layout is known: ``positions``, those cut from rows longer
    than this cjo writes (``_cut_rows``), are kept in ``extra``."""
    epoch, tick = EPOCH, MICROSECOND  # dt() inlined: this runs on every transaction
    get = data.get
    prof = get("profile")
    profile = None
    if prof is not None:
        attributes = prof.get("a")
        tz, loc = prof.get("tz"), prof.get("loc")
        # Read by every send and every local time: refused here, where the record is set aside,
        # rather than failing each input of the customer later.
        if (tz is not None and type(tz) is not str) or (loc is not None and type(loc) is not str):
            raise TypeError(f"profile time zone and locale must be text, got {tz!r} and {loc!r}")
        profile = Profile(customer_id, _revive(dict(attributes)) if attributes else {}, tz, loc)
    history: dict[tuple[str, str | None], EntryHistory] = {}
    hist = get("hist")
    if hist:
        of = EntryHistory.of
        for jid, key, count, recent, last_ended in hist:
            history[(jid, key)] = of(
                count, tuple([epoch + tick * t for t in recent]) if recent else (),
                None if last_ended is None else epoch + tick * last_ended,
            )
    enr, ended, timers, marks = get("enr"), get("ended"), get("timers"), get("marks")
    decided = None
    if marks and _DECIDED in marks:
        marks = dict(marks)
        decided = dt(marks.pop(_DECIDED))
    offers = get("offers")
    extra = (
        {k: v for k, v in data.items() if k not in _KNOWN}
        if not _KNOWN.issuperset(data) else None
    )
    if layout > RECORD_LAYOUT:
        extra = {**(extra or {}), "v": layout}
        # Only a newer cjo writes enrollment fields this one does not know: records of
        # this layout are not searched for them.
        kept = _unknown_enrollment_fields(get("enr"))
        if kept:
            extra[_ENROLLMENT_EXTRA] = kept
    if extra:
        extra = _revive(extra)
    if positions:
        # Not revived: kept as the rows hold them.
        extra = {**(extra or {}), _ROW_EXTRA: positions}
    cons, blk, led = get("cons"), get("blk"), get("led")
    trk, seg = get("trk"), get("seg")
    return CustomerState(
        customer_id, epoch + tick * data["created"], int(get("rev", 0)), profile,
        [_enrollment_from(e, customer_id) for e in enr] if enr else [],
        tuple(_ended_from(x) for x in ended) if ended else (),
        history,
        {n: epoch + tick * t for n, t in timers.items()} if timers else {},
        {n: epoch + tick * t for n, t in marks.items()} if marks else {},
        extra or NO_ITEMS,
        consent={(t, c): (bool(ok), dt(at)) for t, c, ok, at in cons} if cons else NO_ITEMS,
        blocked={str(c): str(r) for c, r in blk.items()} if blk else NO_ITEMS,
        sends=[(dt(at), ch, tuple(tags)) for at, ch, tags in led] if led else NO_ENTRIES,
        tracks={k: _track_from(row) for k, row in trk.items()} if trk else NO_ITEMS,
        segments={sid: epoch + tick * at for sid, at in seg.items()} if seg else NO_ITEMS,
        segments_basis=get("segb"),
        offers={
            offer_id: OfferHistory(int(count), tuple(dt(t) for t in recent))
            for offer_id, (count, recent) in offers.items()
        } if offers else NO_ITEMS,
        decided_at=decided,
        erasures=int(get("ers", 0)),
    )


def decode_state(text: str | bytes, customer_id: str) -> CustomerState:
    """A record from its JSON text; ``CorruptRecordError`` (naming the customer) if it cannot
    be read."""
    try:
        data = _parse_record(text if isinstance(text, str) else text.decode())
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
    """The activity ``activity_row`` gave these values for (a blank customer id: erased)."""
    at, cid, eid, jid, version, step, kind, detail, channel, content, cver = row
    return Activity(dt(at), cid or "", eid, jid, version, step, kind, detail, channel, content,
                    cver)


def value_dumps(value: object) -> str:
    """Attributes and properties as JSON (datetimes tagged), for adapters that need it."""
    return _dumps(value)


def value_loads(text: str) -> Any:
    return _loads(text)


def enrolled_page(
    candidates: Callable[[str], Sequence[tuple[str, str | bytes | None]]], journey_id: str,
    after: str | None, limit: int,
) -> list[str]:
    """One page of ``Storage.enrolled_customers`` for SQL adapters: ``candidates(after_id)``
    returns the next (id, record) rows, in id order, of records that mention the journey (or
    of a window of ids, with None for a record that does not); the records decide."""
    out: list[str] = []
    cursor = after if after is not None else ""
    while len(out) < limit:
        rows = candidates(cursor)
        if not rows:
            break
        for cid, data in rows:
            if data is not None and has_enrollment(data, cid, journey_id):
                out.append(cid)
                if len(out) == limit:
                    break
        cursor = rows[-1][0]
    return out


def journey_needles(journey_id: str) -> tuple[str, str]:
    """How a journey id appears in a stored record (JSON, ASCII-escaped or not)."""
    return json.dumps(journey_id), json.dumps(journey_id, ensure_ascii=False)


def has_enrollment(data: str | bytes, customer_id: str, journey_id: str) -> bool:
    """Whether a stored record has an active enrollment in ``journey_id`` (a record that cannot
    be decoded has none: it is about to be set aside)."""
    try:
        state = decode_state(data, customer_id)
    except CorruptRecordError:
        return False
    return any(e.journey_id == journey_id for e in state.enrollments)
