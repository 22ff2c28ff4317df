"""Runtime records: the customer record and what it holds, and the effects a transaction emits.

The customer record (``CustomerState``) is the unit of state: everything the decision core needs
to decide for one customer. Storage loads it once per customer transaction and writes it back
whole, with the transaction's effects (outbox messages and activity-log entries).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Literal, Protocol, TypeVar, get_args, overload

import attrs

from cjo.frozen import FrozenDict, thaw
from cjo.model.events import Profile

__all__ = [
    "ACTIVE",
    "ACTIVITY_KINDS",
    "HELD",
    "RECORD_LAYOUT",
    "TERMINAL_STATUSES",
    "Activity",
    "ActivityKind",
    "CarriedSend",
    "ConsentKey",
    "CustomerState",
    "EndStatus",
    "EndedEnrollment",
    "Enrollment",
    "EnrollmentStatus",
    "EntryHistory",
    "LedgerEntry",
    "OfferHistory",
    "PassesBefore",
    "Track",
    "decided_until",
    "detached",
    "merge_attributes",
    "shown_wake",
]

_V = TypeVar("_V")

#: How an enrollment ends; each is also the kind of the activity-log entry that ends it.
EndStatus = Literal["completed", "exited", "converted", "expired", "removed", "ejected", "merged"]
EnrollmentStatus = Literal["active", EndStatus]
ACTIVE: EnrollmentStatus = "active"
TERMINAL_STATUSES: frozenset[str] = frozenset(get_args(EndStatus))

#: Every kind of activity-log entry cjo writes (``Activity.kind``): the one list that the
#: ``Activity`` docstring and docs/architecture.md describe, and that the decision core's
#: logging is typed with.
ActivityKind = Literal[
    # an enrollment's course
    "entered", "step", "path", "timeout", "event_received", "goal", "date_past", "date_missing",
    "action", "action_failed", "offer", "jumped", "held", "resumed", "migrated", "merged_in",
    # an entry refused across journeys (no enrollment)
    "not_entered",
    # sends and the delivery policies
    "sent", "send_failed", "render_retry", "send_skipped", "suppressed", "fallback", "capped",
    "quiet_hours", "withheld", "unreachable", "dead_letter", "dead_letter_retried",
    # delivery feedback
    "message_delivered", "opened", "clicked", "bounced", "complained", "unsubscribed",
    # the customer's own, outside any journey
    "late_event", "segment_entered", "segment_exited",
    # the terminal statuses
    EndStatus,
]
ACTIVITY_KINDS: frozenset[str] = frozenset(get_args(ActivityKind))

#: The wake-up of an enrollment held by a paused journey: after every real instant, so the
#: customer is not claimed for it; resuming the journey wakes its held customers.
HELD = datetime(9000, 1, 1, tzinfo=UTC)


def shown_wake(enrollment: Enrollment) -> datetime | None:
    """An enrollment's ``wake_at`` as shown to the host (copies, exports): None for ``HELD``,
    which is no instant anything happens at (``held_at`` says since when it is held)."""
    wake = enrollment.wake_at
    return None if wake == HELD else wake

#: The layout of stored customer records that this version writes. Older layouts are upgraded
#: when read (``cjo.storage.codec``); fields a newer layout added are kept as they are.
#: Layout 2 added an enrollment's ``cg``, layout 3 its ``cs``.
RECORD_LAYOUT = 3


#: "Not given", for the keyword arguments of ``CustomerState`` and ``Enrollment`` that default
#: to a new container or to the value of ``_rare``.
_DEFAULT: Any = object()


#: What a migration carried onto a Send step (``Enrollment.carried_sends``): how many passes of
#: that step the enrollment had made when it was carried (the carried messages stand for the
#: step's latest pass until it makes another), and the idempotency keys of those messages.
CarriedSend = tuple[int, tuple[str, ...]]


@attrs.frozen(slots=True, weakref_slot=False)
class PassesBefore:
    """The rarely set record of passes made before an identity merge or a version migration
    (``Enrollment.merged_passes`` and ``Enrollment.carried_sends``). Immutable: copies of an
    enrollment share it."""

    merged_passes: dict[str, int] | None = None
    carried_sends: dict[str, CarriedSend] | None = None

    @staticmethod
    def of(merged_passes: dict[str, int] | None,
           carried_sends: dict[str, CarriedSend] | None) -> PassesBefore | None:
        """The record of both, or None when neither holds anything."""
        if not merged_passes and not carried_sends:
            return None
        return PassesBefore(merged_passes or None, carried_sends or None)


@attrs.define(slots=True, eq=True, init=False, weakref_slot=False)
class Enrollment:
    """One customer's run through one journey version.

    ``wake_at`` is the next moment the engine must look at it again (end of a wait, a
    wait-for-event timeout, or the journey's maximum lifetime), stored as an absolute UTC
    instant when the wait starts. In the copies the engine hands out (``Engine.enrollments``,
    ``Engine.customer_state``) and in exports, an enrollment held by a paused journey shows
    None until the resume (``held_at``: when it was held).
    """

    id: str
    journey_id: str
    version: int
    customer_id: str
    entered_at: datetime
    step_id: str | None = None
    step_entered_at: datetime | None = None
    status: EnrollmentStatus = ACTIVE
    instance_key: str | None = None
    wake_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    converted_at: datetime | None = None
    trigger_event_id: str | None = None
    context: dict[str, Any] = attrs.field(factory=dict)
    visits: dict[str, int] = attrs.field(factory=dict)
    paths: dict[str, str] = attrs.field(factory=dict)
    #: When a wake-up fell due while the journey was paused: the enrollment is held (its
    #: ``wake_at`` is ``HELD``, or its expiry) until the journey resumes.
    held_at: datetime | None = None
    #: Render retries so far of the Send step it waits on (``on_render_error="retry"``).
    retries: int = 0
    # merged_passes and carried_sends (properties below): None while both are, as for nearly
    # every enrollment, which saves a slot on each (the engine keeps one per active customer).
    _rare: PassesBefore | None = attrs.field(default=None, alias="_rare")
    #: Whether the customer was in the global control group when it entered: its goal is
    #: counted with that group, whatever the group is by then (shrunk, or another customer's
    #: after an identity merge). None when not known (an enrollment stored by a cjo that did
    #: not keep it): the customer's group at the goal counts.
    control: bool | None = False

    def __init__(
        self, id: str, journey_id: str, version: int, customer_id: str,
        entered_at: datetime, step_id: str | None = None,
        step_entered_at: datetime | None = None, status: EnrollmentStatus = ACTIVE,
        instance_key: str | None = None, wake_at: datetime | None = None,
        expires_at: datetime | None = None, ended_at: datetime | None = None,
        end_reason: str | None = None, converted_at: datetime | None = None,
        trigger_event_id: str | None = None, context: dict[str, Any] = _DEFAULT,
        visits: dict[str, int] = _DEFAULT, paths: dict[str, str] = _DEFAULT,
        held_at: datetime | None = None, retries: int = 0,
        merged_passes: dict[str, int] | None = None, control: bool | None = False,
        carried_sends: dict[str, CarriedSend] | None = None, *,
        _rare: PassesBefore | None = None,
    ) -> None:
        self.id = id
        self.journey_id = journey_id
        self.version = version
        self.customer_id = customer_id
        self.entered_at = entered_at
        self.step_id = step_id
        self.step_entered_at = step_entered_at
        self.status = status
        self.instance_key = instance_key
        self.wake_at = wake_at
        self.expires_at = expires_at
        self.ended_at = ended_at
        self.end_reason = end_reason
        self.converted_at = converted_at
        self.trigger_event_id = trigger_event_id
        self.context = {} if context is _DEFAULT else context
        self.visits = {} if visits is _DEFAULT else visits
        self.paths = {} if paths is _DEFAULT else paths
        self.held_at = held_at
        self.retries = retries
        self._rare = _rare if _rare is not None else PassesBefore.of(merged_passes,
                                                                    carried_sends)
        self.control = control

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    @property
    def merged_passes(self) -> dict[str, int] | None:
        """Per Send step, how many passes of it the enrollment an identity merge ended in its
        place (the anonymous customer's, in the same journey instance) had made: this one
        does not send those passes again (``Decider.send``). None for nearly every
        enrollment; replaced, never changed in place, so copies share it."""
        rare = self._rare
        return None if rare is None else rare.merged_passes

    @merged_passes.setter
    def merged_passes(self, value: dict[str, int] | None) -> None:
        rare = self._rare
        self._rare = PassesBefore.of(value, None if rare is None else rare.carried_sends)

    @property
    def carried_sends(self) -> dict[str, CarriedSend] | None:
        """Per Send step of its version, the messages a migration from an older version
        carried onto it (``cjo.runtime.migration``): the step's engagement waits
        (``WaitForEvent(of_send=...)``) match them until the step is passed again. None for
        every enrollment no migration renamed or merged a Send step of; replaced, never
        changed in place, so copies share it."""
        rare = self._rare
        return None if rare is None else rare.carried_sends

    @carried_sends.setter
    def carried_sends(self, value: dict[str, CarriedSend] | None) -> None:
        rare = self._rare
        self._rare = PassesBefore.of(None if rare is None else rare.merged_passes, value)

    def copy(self) -> Enrollment:
        """A copy whose mutable fields are independent of this one."""
        # Slot by slot (``_take``), not through __init__ or attrs.evolve: this runs for every
        # loaded enrollment.
        c = _new_record(Enrollment)
        c._take(self)
        # Each container the copy's own: an empty one (most often the shared empty one) as a
        # new ``{}``, which costs less than copying it. Inline, not a helper: this runs three
        # times per enrollment of every load.
        items = self.context
        c.context = dict(items) if items else {}
        items = self.visits
        c.visits = dict(items) if items else {}
        items = self.paths
        c.paths = dict(items) if items else {}
        return c

    def keep(self, other: Enrollment) -> None:
        """Take ``other``'s values, its containers as they are (empty ones shared): how the
        in-memory storage updates its kept enrollments in place (see ``KeptRecord``)."""
        self._take(other)
        self.context = other.context or NO_ITEMS
        self.visits = other.visits or NO_ITEMS
        self.paths = other.paths or NO_ITEMS

    def _take(self, other: Enrollment) -> None:
        """Take ``other``'s values but its containers (``copy`` and ``keep`` take those each
        their own way)."""
        self.id = other.id
        self.journey_id = other.journey_id
        self.version = other.version
        self.customer_id = other.customer_id
        self.entered_at = other.entered_at
        self.step_id = other.step_id
        self.step_entered_at = other.step_entered_at
        self.status = other.status
        self.instance_key = other.instance_key
        self.wake_at = other.wake_at
        self.expires_at = other.expires_at
        self.ended_at = other.ended_at
        self.end_reason = other.end_reason
        self.converted_at = other.converted_at
        self.trigger_event_id = other.trigger_event_id
        self.held_at = other.held_at
        self.retries = other.retries
        self._rare = other._rare  # immutable, replaced on change
        self.control = other.control

    def wake_order(self) -> tuple[datetime, datetime, str]:
        """Deterministic order of wake-ups due at the same instant: when the wait began, then id."""
        assert self.wake_at is not None
        return (self.wake_at, self.step_entered_at or self.entered_at, self.id)


@attrs.define(slots=True, eq=True, weakref_slot=False)
class EndedEnrollment:
    """What is kept of an ended enrollment: its identity and how it ended (the activity log
    keeps the details). A record keeps the last few; see ``CustomerState.ended``."""

    id: str
    journey_id: str
    version: int
    entered_at: datetime
    ended_at: datetime
    status: EnrollmentStatus
    end_reason: str | None = None
    step_id: str | None = None
    instance_key: str | None = None
    converted_at: datetime | None = None

    @classmethod
    def of(cls, e: Enrollment) -> EndedEnrollment:
        assert e.ended_at is not None
        return cls(
            e.id, e.journey_id, e.version, e.entered_at, e.ended_at, e.status, e.end_reason,
            e.step_id, e.instance_key, e.converted_at,
        )

    def as_enrollment(self, customer_id: str) -> Enrollment:
        return Enrollment(
            id=self.id, journey_id=self.journey_id, version=self.version,
            customer_id=customer_id, entered_at=self.entered_at, step_id=self.step_id,
            status=self.status, instance_key=self.instance_key, ended_at=self.ended_at,
            end_reason=self.end_reason, converted_at=self.converted_at,
            control=None,  # not kept once ended
        )


@attrs.frozen(slots=True, weakref_slot=False)
class EntryHistory:
    """What re-entry rules need to know of a customer's past entries into one journey (any
    version) for one instance key: how many there were, the most recent entry instants (only
    for an ``at_most`` rule, as many as it counts, or the last one for a ``guard``) and when
    the last one ended (only for an ``after_cooldown`` rule).

    Immutable, replaced on change: most histories are a bare count, and ``of`` hands out one
    shared instance per small count, so they cost a record nothing but a dict entry."""

    count: int = 0
    recent: tuple[datetime, ...] = ()
    last_ended_at: datetime | None = None

    @staticmethod
    def of(
        count: int, recent: tuple[datetime, ...] = (), last_ended_at: datetime | None = None
    ) -> EntryHistory:
        if not recent and last_ended_at is None and 0 <= count < len(_COUNTS):
            return _COUNTS[count]
        return EntryHistory(count, recent, last_ended_at)

    def copy(self) -> EntryHistory:
        return self  # immutable

    def guards(self, guard: timedelta, now: datetime) -> bool:
        """Whether an entry (kept for a ``guard``) came less than ``guard`` before ``now``: a
        trigger then is taken for a duplicate. An identity merge judges an entry by another
        customer's history, which may hold later entries: one less than ``guard`` after
        ``now`` counts too."""
        recent = self.recent
        if not recent:
            return False
        last = recent[-1]
        if last <= now:
            return now - last < guard
        return any(abs(now - t) < guard for t in recent)


_COUNTS: tuple[EntryHistory, ...] = tuple(EntryHistory(n) for n in range(256))


HistoryKey = tuple[str, str | None]  # (journey id, instance key)


class _SharedEmptyDict(dict[Any, Any]):
    """The one empty dict that records share for fields most of them leave empty (extra,
    consent, blocked channels): an empty dict costs 64 bytes a record. Reading works; writing
    raises, so a writer must take its own first (``CustomerState.own_consent``...)."""

    __slots__ = ()

    def _refuse(self, *_args: Any, **_kwargs: Any) -> Any:
        raise TypeError("a shared empty record field: take the record's own copy first")

    __setitem__ = __delitem__ = update = pop = popitem = setdefault = clear = _refuse
    __ior__ = _refuse


class _SharedEmptyList(list[Any]):
    """The one empty list records share for the send ledger (see ``_SharedEmptyDict``)."""

    __slots__ = ()

    def _refuse(self, *_args: Any, **_kwargs: Any) -> Any:
        raise TypeError("a shared empty record field: take the record's own copy first")

    append = extend = insert = pop = remove = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse


NO_ITEMS: dict[Any, Any] = _SharedEmptyDict()
NO_ENTRIES: list[Any] = _SharedEmptyList()


def detached(value: _V) -> _V:
    """A copy sharing nothing with ``value``, down to the lists and dicts inside it: for what
    passes between the host and what the engine keeps (records), so that neither changes with
    what the other does to its objects (``copy`` methods copy only the containers the core
    changes in place). The shared empty containers stay shared (they refuse writes).
    Definitions need none: they hold no lists or dicts (``cjo.frozen``)."""
    return copy.deepcopy(value, {id(NO_ITEMS): NO_ITEMS, id(NO_ENTRIES): NO_ENTRIES})


def own_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (an input's properties, a profile's attributes) as a dict of the engine's
    own, the lists and dicts inside it copied too: the host may change its objects after the
    call, and what is kept must not change with them. Scalars are shared (immutable). The
    tuples and ``FrozenDict`` values of a definition (attributes an UpdateProfile step sets)
    become lists and dicts, as a customer's values are everywhere else."""
    out = dict(values)
    for name, value in out.items():
        kind = type(value)
        if kind is list or kind is dict:
            out[name] = detached(value)
        elif kind is tuple or kind is FrozenDict:
            out[name] = thaw(value)
    return out


def _own_dict(value: dict[Any, Any]) -> dict[Any, Any]:
    """A copy of ``value`` for a copied record (the shared empty one stays shared)."""
    return value if value is NO_ITEMS else dict(value)


#: (topic or ``*``, channel or ``*``) -> (subscribed, when it was said): see ``cjo.delivery``.
ConsentKey = tuple[str, str]
#: One marketing send counted by frequency caps: (instant, channel, tags).
LedgerEntry = tuple[datetime, str, tuple[str, ...]]


@attrs.define(slots=True, eq=True, weakref_slot=False)
class Track:
    """What the customer record keeps of one stream of events (an event name with a property
    filter, and the numeric property aggregated, if any): only what the published conditions
    read (``cjo.segments.tracking`` decides what is kept and for how long).

    - ``since``: when tracking began for this customer (the basis of inactivity with no event).
    - ``first`` / ``last``: the earliest and latest event timestamps seen.
    - ``count``, ``total``, ``low``, ``high``: lifetime count, and sum, minimum and maximum of
      the property's numeric values.
    - ``recent``: (timestamp, value) of the events inside the longest rolling window that reads
      the stream, oldest first (only as many as a count can need, when nothing sums them).
    - ``ranges``: per fixed date range, [count, sum, min, max] of the events stamped inside it.
    """

    since: datetime
    first: datetime | None = None
    last: datetime | None = None
    count: int = 0
    total: float = 0
    low: float | None = None
    high: float | None = None
    recent: list[tuple[datetime, float | None]] = attrs.field(factory=list)
    ranges: dict[str, list[float]] = attrs.field(factory=dict)

    def copy(self) -> Track:
        return Track(self.since, self.first, self.last, self.count, self.total, self.low,
                     self.high, list(self.recent), {k: list(v) for k, v in self.ranges.items()})


@attrs.frozen(slots=True, weakref_slot=False)
class OfferHistory:
    """What offer caps need to know of one offer sent to one customer: how many times in all,
    and the most recent send instants (as many as the offer's cap counts)."""

    count: int = 0
    recent: tuple[datetime, ...] = ()




@attrs.define(slots=True, eq=True, weakref_slot=False)
class _RareFields:
    """The fields of ``CustomerState`` that most records leave empty, kept apart so that a
    record without any holds one empty slot rather than nine (``CustomerState._rare``)."""

    extra: dict[str, Any] = NO_ITEMS
    consent: dict[ConsentKey, tuple[bool, datetime]] = NO_ITEMS
    blocked: dict[str, str] = NO_ITEMS
    sends: list[LedgerEntry] = NO_ENTRIES
    tracks: dict[str, Track] = NO_ITEMS
    segments: dict[str, datetime] = NO_ITEMS
    segments_basis: str | None = None
    offers: dict[str, OfferHistory] = NO_ITEMS
    erasures: int = 0

    def shallow(self) -> _RareFields:
        return _RareFields(self.extra, self.consent, self.blocked, self.sends, self.tracks,
                           self.segments, self.segments_basis, self.offers, self.erasures)

    def copy(self) -> _RareFields:
        tracks = self.tracks
        return _RareFields(
            _own_dict(self.extra), _own_dict(self.consent), _own_dict(self.blocked),
            # The ledger is replaced, never changed in place (``delivery.caps.record_send``).
            self.sends,
            {k: t.copy() for k, t in tracks.items()} if tracks else _own_dict(tracks),
            _own_dict(self.segments), self.segments_basis, _own_dict(self.offers),
            self.erasures,
        )

    def share_empty(self) -> bool:
        """Swap empty containers for the shared ones; whether every field is now empty."""
        empty = True
        for name in _RARE_MAPPINGS:
            if getattr(self, name):
                empty = False
            else:
                setattr(self, name, NO_ITEMS)
        if self.sends:
            empty = False
        else:
            self.sends = NO_ENTRIES
        return empty and self.segments_basis is None and not self.erasures


#: The dict fields of ``_RareFields`` (a record's own until emptied, then the shared one).
_RARE_MAPPINGS = ("extra", "consent", "blocked", "tracks", "segments", "offers")
#: Every field of ``_RareFields``, in order.
_RARE_NAMES = tuple(a.name for a in attrs.fields(_RareFields))
# What the constructor is given for the rare fields when it is given none of them.
_NONE_GIVEN = (_DEFAULT,) * len(_RARE_NAMES)
_NO_RARE = _RareFields()


def _rare_key(rare: _RareFields | None) -> _RareFields:
    """Records compare equal whether or not they hold empty rare fields of their own."""
    return _NO_RARE if rare is None else rare


_T = TypeVar("_T")


class _RareField(Generic[_T]):
    """A ``CustomerState`` field kept in its rare sub-record: it reads as ``empty`` while the
    record has none, and assigning anything but ``empty`` makes one."""

    __slots__ = ("empty", "name")

    def __init__(self, name: str, empty: _T) -> None:
        self.name = name
        self.empty = empty

    @overload
    def __get__(self, record: None, owner: type[Any]) -> _RareField[_T]: ...
    @overload
    def __get__(self, record: CustomerState, owner: type[Any]) -> _T: ...

    def __get__(self, record: CustomerState | None, owner: type[Any]) -> Any:
        if record is None:
            return self
        rare = record._rare
        return self.empty if rare is None else getattr(rare, self.name)

    def __set__(self, record: CustomerState, value: _T) -> None:
        if value is not self.empty or record._rare is not None:
            setattr(record._own_rare(), self.name, value)


# The order of the record's fields, as its constructor takes them (and ``repr`` shows them).
_FIELD_ORDER = (
    "customer_id", "created_at", "revision", "profile", "enrollments", "ended", "history",
    "timers", "marks", "extra", "consent", "blocked", "sends", "tracks", "segments",
    "segments_basis", "offers", "decided_at", "erasures",
)


@attrs.define(slots=True, eq=True, init=False, repr=False, weakref_slot=False)
class CustomerState:
    """Everything the decision core knows of one customer, kept as one versioned record.

    - ``revision`` counts the writes of this record (storage increments it on save).
    - ``profile``: attributes, time zone, locale.
    - ``enrollments``: the active ones; ``ended``: the last few that ended, newest last.
    - ``history``: per (journey, instance key), what re-entry rules need (bounded: entries that
      no rule can count any more are dropped).
    - ``timers``: customer-level wake-ups by name (an inactivity trigger's instant, ...).
    - ``marks``: instants the core remembers by name (the last qualifying event of an
      inactivity trigger, the basis it last fired for; on a record an identity merge emptied,
      the messages to withhold should they come back: ``cjo.delivery.consent.WITHHOLD_MARK``).
    - ``consent``: subscription statements per (topic, channel), ``*`` for all, with their
      instant; ``blocked``: channels the customer cannot receive anything on, with the reason.
    - ``sends``: the send ledger of frequency caps (marketing sends, oldest first, kept only as
      far back as the longest cap counts).
    - ``tracks``: bounded aggregates of the event streams that conditions read, by stream key.
    - ``segments``: the segments the customer is in, with the instant each was entered.
    - ``segments_basis``: a digest of the segment definitions the memberships were last
      computed against (a changed definition is re-evaluated at the customer's next input).
    - ``extra``: fields written by a newer cjo that this one does not know, and (as ``"v"``)
      the record's layout number if it is newer than this cjo's; written back untouched, so
      a rolling upgrade loses nothing.
    - ``offers``: per offer id, how often it was sent to this customer (for offer caps).
    - ``decided_at``: the newest event timestamp that changed the record (late events).
    - ``erasures``: how many erasures (of any customer) had been made at the instant this
      record was made, by the storage's count (0 for nearly every record): the entries of
      that instant carry it in their ids, so that a customer erased and back within one
      instant reuses no id of before (``cjo.runtime.ids.enrollment_id_for``). A record an
      identity merge empties counts as made at the merge, with a count above its own
      (``cjo.identity``).

    ``extra``, ``consent``, ``blocked``, ``sends``, ``tracks``, ``segments`` and ``offers``
    start as one empty container shared by every record (most records never fill them):
    assign a new container, or use ``own_consent()``, ``own_tracks()``... to change one;
    changing the shared one raises. These fields and ``segments_basis`` are kept together
    in one sub-record, made when the first of them is set: read and assign them as
    attributes, as the others. Each read is a descriptor call; hot paths of the package test
    ``_rare is None`` first (then every one of them is empty) and skip them.

    New features add fields here with a default (and a layout upgrade in
    ``cjo.storage.codec`` if an old layout must be converted), not verbs to ``Storage``.
    """

    customer_id: str
    created_at: datetime
    revision: int = 0
    profile: Profile | None = None
    enrollments: list[Enrollment] = attrs.field(factory=list)
    # A tuple, replaced on change: records share it when copied (its entries never change).
    ended: tuple[EndedEnrollment, ...] = ()
    history: dict[HistoryKey, EntryHistory] = attrs.field(factory=dict)
    timers: dict[str, datetime] = attrs.field(factory=dict)
    marks: dict[str, datetime] = attrs.field(factory=dict)
    #: The newest event timestamp that changed this record (late events are told apart by
    #: it). A field of its own, not a mark: nearly every record has one, and for most it
    #: would be the only mark (an empty ``marks`` costs a record nothing).
    decided_at: datetime | None = None
    # extra, consent, blocked, sends, tracks, segments, segments_basis, offers and erasures:
    # None while they are all empty (as for most records), which saves seven slots a record. Passed
    # (copied shallowly) by ``attrs.evolve``.
    _rare: _RareFields | None = attrs.field(default=None, alias="_rare", eq=_rare_key)

    def __init__(
        self,
        customer_id: str,
        created_at: datetime,
        revision: int = 0,
        profile: Profile | None = None,
        enrollments: list[Enrollment] = _DEFAULT,
        ended: tuple[EndedEnrollment, ...] = (),
        history: dict[HistoryKey, EntryHistory] = _DEFAULT,
        timers: dict[str, datetime] = _DEFAULT,
        marks: dict[str, datetime] = _DEFAULT,
        extra: dict[str, Any] = _DEFAULT,
        consent: dict[ConsentKey, tuple[bool, datetime]] = _DEFAULT,
        blocked: dict[str, str] = _DEFAULT,
        sends: list[LedgerEntry] = _DEFAULT,
        tracks: dict[str, Track] = _DEFAULT,
        segments: dict[str, datetime] = _DEFAULT,
        segments_basis: str | None = _DEFAULT,
        offers: dict[str, OfferHistory] = _DEFAULT,
        decided_at: datetime | None = None,
        erasures: int = _DEFAULT,
        *,
        _rare: _RareFields | None = None,
    ) -> None:
        self.customer_id = customer_id
        self.created_at = created_at
        self.revision = revision
        self.profile = profile
        self.enrollments = [] if enrollments is _DEFAULT else enrollments
        self.ended = ended
        self.history = {} if history is _DEFAULT else history
        self.timers = {} if timers is _DEFAULT else timers
        self.marks = {} if marks is _DEFAULT else marks
        self.decided_at = decided_at
        # A copy of a given sub-record: assigning a field of this record must not change the
        # record it came from (``attrs.evolve`` shares containers, never fields).
        rare = None if _rare is None else _rare.shallow()
        given = (extra, consent, blocked, sends, tracks, segments, segments_basis, offers,
                 erasures)
        # Without a sub-record, one is made only for a value that is not empty and shared.
        if rare is not None or (given != _NONE_GIVEN and any(
            v is not _DEFAULT and v is not NO_ITEMS and v is not None and v is not NO_ENTRIES
            and v != 0 for v in given
        )):
            if rare is None:
                rare = _RareFields()
            for name, value in zip(_RARE_NAMES, given, strict=True):
                if value is not _DEFAULT:
                    setattr(rare, name, value)
        self._rare = rare

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELD_ORDER)
        return f"CustomerState({fields})"

    def __copy__(self) -> CustomerState:
        # Containers shared, fields not: the rare ones too (``__init__`` copies the sub-record).
        return attrs.evolve(self)

    # --- the rarely set fields ----------------------------------------------------------------

    def _own_rare(self) -> _RareFields:
        rare = self._rare
        if rare is None:
            rare = self._rare = _RareFields()
        return rare

    extra = _RareField[dict[str, Any]]("extra", NO_ITEMS)
    consent = _RareField[dict[ConsentKey, tuple[bool, datetime]]]("consent", NO_ITEMS)
    blocked = _RareField[dict[str, str]]("blocked", NO_ITEMS)
    sends = _RareField[list[LedgerEntry]]("sends", NO_ENTRIES)
    tracks = _RareField[dict[str, Track]]("tracks", NO_ITEMS)
    segments = _RareField[dict[str, datetime]]("segments", NO_ITEMS)
    segments_basis = _RareField[str | None]("segments_basis", None)
    offers = _RareField[dict[str, OfferHistory]]("offers", NO_ITEMS)
    erasures = _RareField[int]("erasures", 0)

    def _own(self, name: str) -> Any:
        """The sub-record's container ``name``, made this record's own if it was the shared
        empty one."""
        rare = self._own_rare()
        container = getattr(rare, name)
        if container is NO_ITEMS:
            container = {}
            setattr(rare, name, container)
        return container

    def own_consent(self) -> dict[ConsentKey, tuple[bool, datetime]]:
        """``consent``, made this record's own (changeable) container if it was the shared one."""
        return self._own("consent")  # type: ignore[no-any-return]

    def own_blocked(self) -> dict[str, str]:
        return self._own("blocked")  # type: ignore[no-any-return]

    def own_tracks(self) -> dict[str, Track]:
        return self._own("tracks")  # type: ignore[no-any-return]

    def own_segments(self) -> dict[str, datetime]:
        return self._own("segments")  # type: ignore[no-any-return]

    def own_offers(self) -> dict[str, OfferHistory]:
        return self._own("offers")  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------------------------

    @property
    def wake_at(self) -> datetime | None:
        """The earliest instant anything of this customer must be looked at again."""
        timers = self.timers
        best: datetime | None = min(timers.values()) if timers else None
        for e in self.enrollments:
            w = e.wake_at
            if w is not None and (best is None or w < best):
                best = w
        return best

    def copy(self) -> CustomerState:
        """A copy the core may change freely (a rolled-back transaction leaves no trace).
        Every container is the copy's own, except the empty shared ones (see ``own_*``)."""
        return _copy_record(self)

    def all_enrollments(self) -> list[Enrollment]:
        """The kept ended enrollments and the active ones, oldest entry first."""
        out = [x.as_enrollment(self.customer_id) for x in self.ended]
        out.extend(e.copy() for e in self.enrollments)
        out.sort(key=lambda e: (e.entered_at, e.id))
        return out


_new_record = object.__new__


class RecordView(Protocol):
    """What reading a record's wake-up and active enrollments needs: a ``CustomerState``, or
    the in-memory storage's ``KeptRecord`` read in place."""

    @property
    def wake_at(self) -> datetime | None: ...

    @property
    def enrollments(self) -> list[Enrollment]: ...


class KeptRecord:
    """A customer record as the in-memory storage keeps it between transactions: one object
    per customer, updated in place by each commit, as are its enrollments (matched by id); its
    ``wake_at`` computed once, when it is kept.

    Why not the record itself: a record replaced at every commit left a few new objects per
    transaction (the record, its list, its enrollments) that lived long enough for the garbage
    collector to move them to its oldest generation, which every full pass of the collector
    walks; the collector took about a quarter of a 100,000-customer in-memory run, most of it
    in those passes. Updated in place, a record and its enrollments are moved there once. What
    a commit does replace (plain dicts of strings, numbers and instants) is not tracked by the
    collector at all; the rest (profile, ended enrollments, entry history, the rare fields)
    changes seldom."""

    __slots__ = (
        "_rare", "created_at", "customer_id", "decided_at", "ended", "enrollments", "history",
        "marks", "profile", "revision", "timers", "wake_at",
    )

    def __init__(self, state: CustomerState) -> None:
        self.customer_id = state.customer_id
        self.enrollments: list[Enrollment] = NO_ENTRIES
        self.history: dict[HistoryKey, EntryHistory] = NO_ITEMS
        self.keep(state)

    def keep(self, state: CustomerState) -> None:
        """Take ``state``'s values: a record its caller will not change again (the in-memory
        commit's), so its containers are kept as they are, the empty ones shared."""
        self.created_at: datetime = state.created_at
        self.revision: int = state.revision
        self.profile: Profile | None = state.profile
        self._keep_enrollments(state.enrollments)
        self.ended: tuple[EndedEnrollment, ...] = state.ended
        history = state.history
        if not history:
            self.history = NO_ITEMS
        elif history != self.history:
            # Written only when it changed (most inputs enter or end nothing), and into the
            # kept one when there is one: the new copy dies young.
            if self.history is NO_ITEMS:
                self.history = history
            else:
                self.history.clear()
                self.history.update(history)
        self.timers: dict[str, datetime] = state.timers or NO_ITEMS
        self.marks: dict[str, datetime] = state.marks or NO_ITEMS
        self.decided_at: datetime | None = state.decided_at
        rare = state._rare
        self._rare: _RareFields | None = None if rare is None or rare.share_empty() else rare
        self.wake_at: datetime | None = state.wake_at

    def _keep_enrollments(self, enrollments: list[Enrollment]) -> None:
        kept = self.enrollments
        if not enrollments:
            self.enrollments = NO_ENTRIES
            return
        if len(kept) == len(enrollments):
            # Most commits change enrollments in place: each is found at its own position.
            for same, e in zip(kept, enrollments, strict=True):
                if same.id != e.id:
                    break
                same.keep(e)
            else:
                return
        # Some entered or ended: the others are found by id.
        by_id = {k.id: k for k in kept}
        out = []
        for e in enrollments:
            mine = by_id.get(e.id)
            if mine is None:
                mine = _new_record(Enrollment)
            mine.keep(e)
            out.append(mine)
        if kept is NO_ENTRIES:
            self.enrollments = out
        else:
            kept[:] = out

    def state(self) -> CustomerState:
        """The record, a copy the core may change freely (every container its own, except the
        empty shared ones: see ``CustomerState.own_*``)."""
        return _copy_record(self)

    @property
    def segments(self) -> Mapping[str, datetime]:
        rare = self._rare
        return NO_ITEMS if rare is None else rare.segments


def decided_until(state: CustomerState) -> datetime:
    """The latest instant the record shows a decision at: its creation, the newest event that
    changed it, and the instants its enrollments entered, moved, converted, were held or
    ended, and its segments were entered. Something decided later must be decided no earlier,
    or the record's history would be out of order (a schedule entered late)."""
    latest = state.created_at
    if state.decided_at is not None:
        latest = max(latest, state.decided_at)
    for e in state.enrollments:
        for at in (e.entered_at, e.step_entered_at, e.converted_at, e.held_at, e.ended_at):
            if at is not None and at > latest:
                latest = at
    for ended in state.ended:
        latest = max(latest, ended.ended_at)
    if state._rare is not None:
        for at in state.segments.values():
            latest = max(latest, at)
    return latest


def _copy_record(source: CustomerState | KeptRecord) -> CustomerState:
    """A changeable record from a record or a kept one (they share these fields' names)."""
    # Slot by slot rather than through __init__: one copy per customer transaction.
    c = _new_record(CustomerState)
    c.customer_id = source.customer_id
    c.created_at = source.created_at
    c.revision = source.revision
    c.profile = source.profile
    enrollments = source.enrollments
    c.enrollments = [e.copy() for e in enrollments] if enrollments else []
    c.ended = source.ended
    # Each container the copy's own, as in ``Enrollment.copy``.
    items = source.history
    c.history = dict(items) if items else {}
    timers = source.timers
    c.timers = dict(timers) if timers else {}
    marks = source.marks
    c.marks = dict(marks) if marks else {}
    c.decided_at = source.decided_at
    rare = source._rare
    c._rare = None if rare is None else rare.copy()
    return c


@attrs.define(slots=True)
class Activity:
    """One entry of the activity log: one thing that happened in a journey, kept for
    measurement. The same fields on every storage adapter. Treat it as read-only (it is not
    frozen only because several are built for every input, and frozen classes build slowly).

    ``kind`` is one of ``ACTIVITY_KINDS``:

    - an enrollment's course: entered, step, path (a split or audience path taken), timeout,
      event_received, goal, date_past, date_missing (a date wait's date was past, or missing),
      action, action_failed, offer (the offer a send chose, once delivery policies let it
      through), jumped, held (a wake-up held by a paused journey), resumed, migrated (to a
      new journey version), merged_in (an enrollment taken over from an identity merge);
    - an entry refused by the rules across journeys: not_entered (``enrollment_id`` blank,
      ``version`` the one that would have been entered; detail: ``paused``, the exclusive
      group and the journey the customer is in, or the concurrency limit and the journeys
      the customer is in). Refusals by the audience or the re-entry rules are not logged;
    - sends: sent, send_failed, render_retry, send_skipped (a send not made: the catch-up
      limit, a skip on resume, a step sent before a merge), the delivery-policy decisions
      (suppressed, fallback, capped, quiet_hours), withheld (a message written earlier and no
      longer allowed out), unreachable (a message failed permanently and its channel was
      blocked), dead_letter (a message failed for good otherwise: on the sender's side, or
      its retries ran out), dead_letter_retried (the host put a dead letter back in the
      outbox);
    - delivery feedback: message_delivered, opened, clicked, bounced, complained,
      unsubscribed;
    - the customer's own, outside any journey (``journey_id`` blank): late_event,
      segment_entered, segment_exited (detail: the segment id);
    - the terminal statuses: completed, exited, converted, expired, removed, ejected, merged.

    ``detail`` qualifies it (the criterion of an exit, the path of a split, the event received).
    ``channel``, ``content_id`` and ``content_version`` are set on sends, and on the entries of
    a send that was not made.
    """

    at: datetime
    customer_id: str
    enrollment_id: str
    journey_id: str
    version: int
    step_id: str | None
    kind: str
    detail: str | None = None
    channel: str | None = None
    content_id: str | None = None
    content_version: int | None = None


def merge_attributes(current: Mapping[str, Any], set_: Mapping[str, Any],
                     unset: tuple[str, ...] = ()) -> dict[str, Any]:
    merged = dict(current)
    merged.update(own_values(set_))
    for name in unset:
        merged.pop(name, None)
    return merged

