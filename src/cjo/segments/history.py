"""Conditions over a customer's event history, text and lists, and stable random buckets.

Like every condition they are data (serialised with a ``kind`` tag) and compile into closures;
they combine with the others through ``&``, ``|`` and ``~``. History conditions read the
bounded aggregates the customer record keeps (``CustomerState.tracks``) at the decision
instant; windows count events by their own timestamps and are half-open: "within 30 days" at
``t`` means stamped after ``t - 30 days``, so an event exactly 30 days old has left.

Builders::

    performed("purchase").at_least(3).within(days=30)
    performed("view", where=prop("category") == "shoes").exactly(2).within(days=7)
    last_performed("purchase").within(days=14)
    first_performed("signup").before(datetime(2026, 1, 1, tzinfo=UTC))
    inactive("purchase", days=14)
    total("purchase", "amount") > 500          # also average, minimum, maximum
    starts_with(attr("email"), "vip.")          # also ends_with, contains_text, matches
    has_any(attr("tags"), ["shoes", "bags"])    # also has_all, has_none
    bucket("holdout-2026").below(10)            # 10 % of customers, stable
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final, Literal, NoReturn, Self

import attrs

from cjo.clock import epoch_us
from cjo.conditions import (
    SCOPES,
    CompiledCondition,
    Condition,
    Field,
    Ref,
    Scope,
    compile_condition,
    holds_value,
    lookup,
)
from cjo.errors import DefinitionError
from cjo.frozen import ordered, thaw, to_tuple
from cjo.limits import MAX_MATCHED_TEXT, MAX_PATTERN_LENGTH
from cjo.model.events import finite_number
from cjo.runtime.state import CustomerState, Track

__all__ = [
    "HISTORY_CONDITION_TYPES",
    "Aggregate",
    "AggregateBuilder",
    "Bucket",
    "BucketBuilder",
    "FirstPerformed",
    "Inactive",
    "LastPerformed",
    "ListHas",
    "NextChange",
    "Performed",
    "TextMatch",
    "average",
    "bucket",
    "change_clock",
    "check_node",
    "clock_key",
    "compile_extended",
    "contains_text",
    "ends_with",
    "first_performed",
    "has_all",
    "has_any",
    "has_none",
    "inactive",
    "last_performed",
    "matches",
    "maximum",
    "minimum",
    "next_change",
    "performed",
    "range_key",
    "starts_with",
    "stream_of",
    "total",
]

CountOp = Literal["eq", "ne", "lt", "le", "gt", "ge"]
COUNT_OPS: Final = ("eq", "ne", "lt", "le", "gt", "ge")
Instant = Literal["before", "after", "within"]
AggregateFn = Literal["sum", "avg", "min", "max"]
TextOp = Literal["prefix", "suffix", "contains", "regex"]
ListOp = Literal["any", "all", "none"]


_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "eq": lambda a, b: bool(a == b),
    "ne": lambda a, b: bool(a != b),
    "lt": lambda a, b: bool(a < b),
    "le": lambda a, b: bool(a <= b),
    "gt": lambda a, b: bool(a > b),
    "ge": lambda a, b: bool(a >= b),
}


def _span(days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0,
          span: timedelta | None = None) -> timedelta:
    if span is not None:
        return span  # checked by validation, which names the definition it is in
    try:
        return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    except (TypeError, ValueError, OverflowError) as exc:
        given = ", ".join(f"{name}={value!r:.40}" for name, value in (
            ("days", days), ("hours", hours), ("minutes", minutes), ("seconds", seconds),
        ) if value is not None and value != 0)
        raise DefinitionError(
            f"a window or quiet span is a number of days, hours, minutes or seconds (or a "
            f"timedelta); got {given or 'none'} ({exc})"
        ) from None


class _Windowed:
    """Window builders shared by the conditions that count or aggregate events."""

    __slots__ = ()

    def within(self, span: timedelta | None = None, *, days: float = 0, hours: float = 0,
               minutes: float = 0, seconds: float = 0) -> Self:
        """Events stamped after ``now - span`` (a rolling window)."""
        return attrs.evolve(self, window=_span(days, hours, minutes, seconds, span),  # type: ignore[misc]
                            since=None, until=None)

    def between(self, since: datetime | None, until: datetime | None) -> Self:
        """Events stamped at or after ``since`` and before ``until`` (either may be open)."""
        return attrs.evolve(self, window=None, since=since, until=until)  # type: ignore[misc]


# --- history conditions -----------------------------------------------------------------------


@attrs.frozen
class Performed(_Windowed, Condition):
    """The customer sent ``event`` (matching ``where``) ``op count`` times: within a rolling
    window, between two dates, or ever (neither given)."""

    kind: ClassVar[str] = "performed"
    event: str
    where: Condition | None = None
    op: CountOp = "ge"
    count: int = 1
    window: timedelta | None = None
    since: datetime | None = None
    until: datetime | None = None

    def _times(self, op: CountOp, n: int) -> Performed:
        return attrs.evolve(self, op=op, count=n)

    def at_least(self, n: int) -> Performed:
        return self._times("ge", n)

    def at_most(self, n: int) -> Performed:
        return self._times("le", n)

    def exactly(self, n: int) -> Performed:
        return self._times("eq", n)

    def more_than(self, n: int) -> Performed:
        return self._times("gt", n)

    def fewer_than(self, n: int) -> Performed:
        return self._times("lt", n)

    def never(self) -> Performed:
        return self._times("eq", 0)


@attrs.frozen
class FirstPerformed(Condition):
    """When the customer first sent ``event``: ``before`` / ``after`` an instant (strictly), or
    ``within`` a rolling window ending now. False if they never did."""

    kind: ClassVar[str] = "first_performed"
    event: str
    where: Condition | None = None
    op: Instant = "within"
    at: datetime | None = None
    window: timedelta | None = None


@attrs.frozen
class LastPerformed(Condition):
    """When the customer last sent ``event``; the same operators as :class:`FirstPerformed`."""

    kind: ClassVar[str] = "last_performed"
    event: str
    where: Condition | None = None
    op: Instant = "within"
    at: datetime | None = None
    window: timedelta | None = None


class _WhenBuilder:
    __slots__ = ("cls", "event", "where")

    def __init__(self, cls: type[FirstPerformed] | type[LastPerformed], event: str,
                 where: Condition | None) -> None:
        self.cls, self.event, self.where = cls, event, where

    def before(self, at: datetime) -> FirstPerformed | LastPerformed:
        return self.cls(self.event, self.where, "before", at=at)

    def after(self, at: datetime) -> FirstPerformed | LastPerformed:
        return self.cls(self.event, self.where, "after", at=at)

    def within(self, span: timedelta | None = None, *, days: float = 0, hours: float = 0,
               minutes: float = 0, seconds: float = 0) -> FirstPerformed | LastPerformed:
        return self.cls(self.event, self.where, "within",
                        window=_span(days, hours, minutes, seconds, span))


@attrs.frozen
class Inactive(Condition):
    """The customer has not sent ``event`` for ``span``: true from exactly ``span`` after the
    last qualifying event, or after tracking began (the customer's creation, or their first
    evaluation after the condition was published: a worker's walk after the publish, or their
    next input if sooner) when there is none."""

    kind: ClassVar[str] = "inactive"
    event: str
    span: timedelta
    where: Condition | None = None


@attrs.frozen
class Aggregate(_Windowed, Condition):
    """``fn`` (sum, avg, min, max) of the numeric ``property`` of ``event`` compared with
    ``value``. Events whose property is not a number are left out; with none left the
    condition is false."""

    kind: ClassVar[str] = "aggregate"
    event: str
    property: str
    fn: AggregateFn
    op: CountOp
    value: float
    where: Condition | None = None
    window: timedelta | None = None
    since: datetime | None = None
    until: datetime | None = None


class AggregateBuilder:
    """``total("purchase", "amount").within(days=365) > 500``: compare to make a condition."""

    __slots__ = ("event", "fn", "property", "since", "until", "where", "window")
    __hash__ = None  # type: ignore[assignment]  # == builds a condition

    def __init__(self, event: str, property: str, fn: AggregateFn,
                 where: Condition | None = None, within: timedelta | None = None,
                 since: datetime | None = None, until: datetime | None = None) -> None:
        self.event, self.property, self.fn, self.where = event, property, fn, where
        self.window, self.since, self.until = within, since, until

    def within(self, span: timedelta | None = None, *, days: float = 0, hours: float = 0,
               minutes: float = 0, seconds: float = 0) -> AggregateBuilder:
        return AggregateBuilder(self.event, self.property, self.fn, self.where,
                                _span(days, hours, minutes, seconds, span))

    def between(self, since: datetime | None, until: datetime | None) -> AggregateBuilder:
        return AggregateBuilder(self.event, self.property, self.fn, self.where, None, since,
                                until)

    def _make(self, op: CountOp, value: float) -> Aggregate:
        return Aggregate(self.event, self.property, self.fn, op, value, self.where,
                         self.window, self.since, self.until)

    def __eq__(self, value: object) -> Aggregate:  # type: ignore[override]
        return self._make("eq", value)  # type: ignore[arg-type]

    def __ne__(self, value: object) -> Aggregate:  # type: ignore[override]
        return self._make("ne", value)  # type: ignore[arg-type]

    def __lt__(self, value: float) -> Aggregate:
        return self._make("lt", value)

    def __le__(self, value: float) -> Aggregate:
        return self._make("le", value)

    def __gt__(self, value: float) -> Aggregate:
        return self._make("gt", value)

    def __ge__(self, value: float) -> Aggregate:
        return self._make("ge", value)


# --- text, lists, buckets ---------------------------------------------------------------------


@attrs.frozen
class TextMatch(Condition):
    """A text value that starts with, ends with, contains or matches (``regex``, searched)
    ``value``. Not text, or longer than ``cjo.limits.MAX_MATCHED_TEXT``: false."""

    kind: ClassVar[str] = "text"
    ref: Ref
    op: TextOp
    value: str
    ignore_case: bool = False


@attrs.frozen
class ListHas(Condition):
    """A list value that holds ``any``, ``all`` or ``none`` of ``values`` (a missing or
    non-list value holds none)."""

    kind: ClassVar[str] = "list"
    ref: Ref
    op: ListOp
    values: tuple[Any, ...] = attrs.field(converter=to_tuple)


@attrs.frozen
class Bucket(Condition):
    """A stable random share of customers: the customer id hashed with ``salt`` falls in
    buckets ``low`` (included) to ``high`` (excluded) of ``buckets``."""

    kind: ClassVar[str] = "bucket"
    salt: str
    low: int
    high: int
    buckets: int = 100


class BucketBuilder:
    __slots__ = ("buckets", "salt")

    def __init__(self, salt: str, buckets: int = 100) -> None:
        self.salt, self.buckets = salt, buckets

    def below(self, high: int) -> Bucket:
        return Bucket(self.salt, 0, high, self.buckets)

    def at_or_above(self, low: int) -> Bucket:
        return Bucket(self.salt, low, self.buckets, self.buckets)

    def between(self, low: int, high: int) -> Bucket:
        return Bucket(self.salt, low, high, self.buckets)

    # A builder is not a number: comparing it would be a bare TypeError (or, for ==, a
    # silent False), so each says which method builds the condition.
    def _compared(self, other: object) -> NoReturn:
        raise DefinitionError(f"bucket({self.salt!r}, {self.buckets}) is not a number to compare: "
                              "write .below(n), .at_or_above(n) or .between(low, high)")

    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = _compared
    __hash__ = None  # type: ignore[assignment]


HISTORY_CONDITION_TYPES: tuple[type[Condition], ...] = (
    Performed, FirstPerformed, LastPerformed, Inactive, Aggregate, TextMatch, ListHas, Bucket,
)
_STREAM_TYPES: Final = (Performed, FirstPerformed, LastPerformed, Inactive, Aggregate)
Stream = Performed | FirstPerformed | LastPerformed | Inactive | Aggregate


# --- builder functions ------------------------------------------------------------------------


def performed(event: str, where: Condition | None = None) -> Performed:
    """The customer sent ``event`` at least once (ever); narrow with ``.within``,
    ``.between`` and ``.at_least`` / ``.at_most`` / ``.exactly`` / ``.more_than`` /
    ``.fewer_than`` / ``.never``."""
    return Performed(event, where)


def first_performed(event: str, where: Condition | None = None) -> _WhenBuilder:
    return _WhenBuilder(FirstPerformed, event, where)


def last_performed(event: str, where: Condition | None = None) -> _WhenBuilder:
    return _WhenBuilder(LastPerformed, event, where)


def inactive(event: str, span: timedelta | None = None, *, days: float = 0, hours: float = 0,
             minutes: float = 0, seconds: float = 0, where: Condition | None = None) -> Inactive:
    return Inactive(event, _span(days, hours, minutes, seconds, span), where)


def total(event: str, property: str, where: Condition | None = None) -> AggregateBuilder:
    return AggregateBuilder(event, property, "sum", where)


def average(event: str, property: str, where: Condition | None = None) -> AggregateBuilder:
    return AggregateBuilder(event, property, "avg", where)


def minimum(event: str, property: str, where: Condition | None = None) -> AggregateBuilder:
    return AggregateBuilder(event, property, "min", where)


def maximum(event: str, property: str, where: Condition | None = None) -> AggregateBuilder:
    return AggregateBuilder(event, property, "max", where)


def _ref_of(field: Field, builder: str, example: str) -> Ref:
    # Checked here: the condition holds the field's reference, so a field given as a bare
    # name would fail with no word of which builder it was given to.
    if not isinstance(field, Field):
        raise DefinitionError(f"{builder} reads a field such as attr({example!r}), got "
                              f"{type(field).__name__} {field!r:.60}")
    return field.ref


def _values_of(values: Iterable[Any], builder: str) -> tuple[Any, ...]:
    # A text is iterable, but ``has_any(attr("tags"), "vip")`` means ["vip"], not its letters.
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise DefinitionError(f"{builder} takes a list of values, got "
                              f"{type(values).__name__} {values!r:.60}")
    return tuple(ordered(values))


def starts_with(field: Field, prefix: str, *, ignore_case: bool = False) -> TextMatch:
    return TextMatch(_ref_of(field, "starts_with", "email"), "prefix", prefix, ignore_case)


def ends_with(field: Field, suffix: str, *, ignore_case: bool = False) -> TextMatch:
    return TextMatch(_ref_of(field, "ends_with", "email"), "suffix", suffix, ignore_case)


def contains_text(field: Field, text: str, *, ignore_case: bool = False) -> TextMatch:
    return TextMatch(_ref_of(field, "contains_text", "email"), "contains", text, ignore_case)


def matches(field: Field, pattern: str, *, ignore_case: bool = False) -> TextMatch:
    """A regular expression searched in the value (anchor it with ``^``/``$`` if need be)."""
    return TextMatch(_ref_of(field, "matches", "email"), "regex", pattern, ignore_case)


def has_any(field: Field, values: Iterable[Any]) -> ListHas:
    return ListHas(_ref_of(field, "has_any", "tags"), "any", _values_of(values, "has_any"))


def has_all(field: Field, values: Iterable[Any]) -> ListHas:
    return ListHas(_ref_of(field, "has_all", "tags"), "all", _values_of(values, "has_all"))


def has_none(field: Field, values: Iterable[Any]) -> ListHas:
    return ListHas(_ref_of(field, "has_none", "tags"), "none", _values_of(values, "has_none"))


def bucket(salt: str, buckets: int = 100) -> BucketBuilder:
    return BucketBuilder(salt, buckets)


# --- streams ----------------------------------------------------------------------------------


def range_key(since: datetime | None, until: datetime | None) -> str:
    """The key of a fixed date range inside a track (microseconds since the epoch)."""
    return f"{'' if since is None else epoch_us(since)}~{'' if until is None else epoch_us(until)}"


def stream_of(node: Condition) -> tuple[str, Condition | None, str | None] | None:
    """(event, filter, property) of the events a history node reads, or None."""
    if isinstance(node, Aggregate):
        return node.event, node.where, node.property
    if isinstance(node, _STREAM_TYPES):
        return node.event, node.where, None
    return None


def _window(node: Performed | Aggregate) -> tuple[timedelta | None, str | None]:
    if node.window is not None:
        return node.window, None
    if node.since is not None or node.until is not None:
        return None, range_key(node.since, node.until)
    return None, None


# --- evaluation -------------------------------------------------------------------------------


def _record(s: Scope) -> tuple[CustomerState | None, datetime | None]:
    # Scopes of the decision core carry the record and the decision instant; others do not,
    # and history reads nothing there.
    return getattr(s, "record", None), getattr(s, "now", None)


def compile_extended(node: Condition, key_of: Callable[[Condition], str]) -> CompiledCondition:
    """Compile one node of this module; ``key_of`` names the track a history node reads."""
    if isinstance(node, Performed):
        return _compile_performed(node, key_of(node))
    if isinstance(node, FirstPerformed | LastPerformed):
        return _compile_when(node, key_of(node))
    if isinstance(node, Inactive):
        return _compile_inactive(node, key_of(node))
    if isinstance(node, Aggregate):
        return _compile_aggregate(node, key_of(node))
    if isinstance(node, TextMatch):
        return _compile_text(node)
    if isinstance(node, ListHas):
        return _compile_list(node)
    if isinstance(node, Bucket):
        return _compile_bucket(node)
    raise TypeError(f"not a condition: {node!r}")


def _track(s: Scope, key: str) -> tuple[Track | None, datetime | None, bool]:
    record = getattr(s, "record", None)
    now = getattr(s, "now", None)
    if record is None or now is None:
        return None, None, False
    return record.tracks.get(key), now, True


def _first_inside(recent: list[tuple[datetime, float | None]], start: datetime) -> int:
    """The index of the first event stamped after ``start`` (oldest first; pruning leaves few
    before it)."""
    i = 0
    for t, _ in recent:
        if t > start:
            return i
        i += 1
    return i


def _compile_performed(node: Performed, key: str) -> CompiledCondition:
    test, n = _COMPARE[node.op], node.count
    within, rkey = _window(node)

    def check(s: Scope) -> bool:
        track, now, known = _track(s, key)
        if not known:
            return False
        if track is None:
            count = 0
        elif within is not None:
            assert now is not None
            recent = track.recent
            count = len(recent) - _first_inside(recent, now - within)
        elif rkey is not None:
            acc = track.ranges.get(rkey)
            count = int(acc[0]) if acc else 0
        else:
            count = track.count
        return test(count, n)

    return check


def _compile_when(node: FirstPerformed | LastPerformed, key: str) -> CompiledCondition:
    first = isinstance(node, FirstPerformed)
    op, at, within = node.op, node.at, node.window

    def check(s: Scope) -> bool:
        track, now, _ = _track(s, key)
        if track is None or now is None:
            return False
        when = track.first if first else track.last
        if when is None:
            return False
        if op == "within":
            return within is not None and when > now - within
        if at is None:
            return False
        return when < at if op == "before" else when > at

    return check


def _compile_inactive(node: Inactive, key: str) -> CompiledCondition:
    span = node.span

    def check(s: Scope) -> bool:
        track, now, _ = _track(s, key)
        if track is None or now is None:
            return False  # tracking has not begun: nothing is known of a quiet spell
        return now >= (track.last or track.since) + span

    return check


def _aggregate(fn: str, values: list[float]) -> float | None:
    if not values:
        return None
    if fn == "sum":
        return sum(values)
    if fn == "avg":
        return sum(values) / len(values)
    return min(values) if fn == "min" else max(values)


def _compile_aggregate(node: Aggregate, key: str) -> CompiledCondition:
    test, fn, target = _COMPARE[node.op], node.fn, node.value
    within, rkey = _window(node)

    def value_of(track: Track, now: datetime) -> float | None:
        if within is not None:
            recent = track.recent
            inside = recent[_first_inside(recent, now - within):]
            return _aggregate(fn, [v for _, v in inside if v is not None])
        if rkey is not None:
            acc = track.ranges.get(rkey)
            return None if not acc else _summary(fn, acc[0], acc[1], acc[2], acc[3])
        return _summary(fn, track.count, track.total, track.low, track.high)

    def check(s: Scope) -> bool:
        track, now, _ = _track(s, key)
        if track is None or now is None:
            return False
        value = value_of(track, now)
        return value is not None and test(value, target)

    return check


def _summary(fn: str, count: float, total_: float, low: float | None,
             high: float | None) -> float | None:
    if not count:
        return None
    if fn == "sum":
        return total_
    if fn == "avg":
        return total_ / count
    return low if fn == "min" else high


def _ref_getter(ref: Ref) -> Callable[[Scope], Any]:
    parts = ref.path.split(".")
    scope = ref.scope
    return lambda s: lookup(getattr(s, scope), parts)


def _compile_text(node: TextMatch) -> CompiledCondition:
    get = _ref_getter(node.ref)
    value, fold = node.value, node.ignore_case
    test: Callable[[str], bool]
    if node.op == "regex":
        pattern = re.compile(value, re.IGNORECASE if fold else 0)
        test = lambda v: pattern.search(v) is not None  # noqa: E731
    else:
        needle = value.casefold() if fold else value
        if node.op == "prefix":
            test = lambda v: v.startswith(needle)  # noqa: E731
        elif node.op == "suffix":
            test = lambda v: v.endswith(needle)  # noqa: E731
        else:
            test = lambda v: needle in v  # noqa: E731
        if fold:
            inner = test
            test = lambda v: inner(v.casefold())  # noqa: E731

    def check(s: Scope) -> bool:
        v = get(s)
        # The length guard keeps a pattern's work bounded by what it is given.
        return isinstance(v, str) and len(v) <= MAX_MATCHED_TEXT and test(v)

    return check


def _compile_list(node: ListHas) -> CompiledCondition:
    # The values as plain data, as the customer's list is: a nested list still matches.
    get, op, wanted = _ref_getter(node.ref), node.op, thaw(node.values)

    def check(s: Scope) -> bool:
        v = get(s)
        held = v if isinstance(v, list | tuple) else ()
        found = [holds_value(held, w) for w in wanted]
        if op == "any":
            return any(found)
        if op == "all":
            return bool(found) and all(found) and bool(held)
        return not any(found)

    return check


def bucket_of(customer_id: str, salt: str, buckets: int) -> int:
    """The customer's bucket for ``salt``: stable across processes and releases."""
    digest = hashlib.sha256(f"{salt}\x00{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % buckets


def _compile_bucket(node: Bucket) -> CompiledCondition:
    salt, low, high, buckets = node.salt, node.low, node.high, node.buckets

    def check(s: Scope) -> bool:
        record, _ = _record(s)
        if record is None:
            return False
        return low <= bucket_of(record.customer_id, salt, buckets) < high

    return check


def compile_filter(where: Condition | None) -> CompiledCondition | None:
    return compile_condition(where) if where is not None else None


# --- time -------------------------------------------------------------------------------------


#: When a node's truth can next change: (its track, now) -> an instant after now, or None.
NextChange = Callable[[Track | None, datetime], datetime | None]


def next_change(node: Condition, track: Track | None, now: datetime) -> datetime | None:
    """The earliest instant after ``now`` at which ``node``'s truth can change with no new
    input (a count crossing its bound as events leave its window, a quiet spell reaching its
    length), or None."""
    return change_clock((node,))(track, now)


def clock_key(node: Condition) -> tuple[str, timedelta | None]:
    """Time-relative nodes of one track with one clock key share one :func:`change_clock`."""
    if isinstance(node, Performed):
        return "count", node.window
    if isinstance(node, Aggregate):
        return "window", node.window
    if isinstance(node, FirstPerformed | LastPerformed):
        return node.kind, node.window
    if isinstance(node, Inactive):
        return "inactive", node.span
    return "never", None


def change_clock(nodes: Sequence[Condition], *, exact: bool = True) -> NextChange:
    """``next_change`` of the earliest of ``nodes`` (of one track and one :func:`clock_key`),
    compiled once.

    ``exact``: a count in a rolling window changes when it crosses its bound, not each time an
    event leaves; otherwise (and always for sums, averages, minimums and maximums) the next
    event leaving the window is the next instant."""
    node = nodes[0]
    if isinstance(node, Performed | Aggregate):
        span = node.window
        if span is None:
            return _never
        if exact and isinstance(node, Performed):
            return _count_change(span, tuple((n.op, n.count) for n in nodes
                                             if isinstance(n, Performed)))
        return _window_change(span)
    if isinstance(node, FirstPerformed | LastPerformed):
        if node.op != "within" or node.window is None:
            return _never
        return _when_change(node.window, isinstance(node, FirstPerformed))
    if isinstance(node, Inactive):
        return _quiet_change(node.span)
    return _never


def _never(track: Track | None, now: datetime) -> None:
    return None


def _window_change(span: timedelta) -> NextChange:
    def change(track: Track | None, now: datetime) -> datetime | None:
        if track is None:
            return None
        start = now - span
        for t, _ in track.recent:  # oldest first: the first one still inside leaves first
            if t > start:
                return t + span
        return None

    return change


def _drops(op: CountOp, n: int) -> tuple[tuple[int, int], ...]:
    """When ``count op n`` changes truth as events leave its window (counts only fall without
    input): (at least this count now, the count at or below which it changes), first match
    wins; none: it never changes."""
    if op in ("ge", "lt"):  # "ge" turns false, "lt" true
        return ((n, n - 1),) if n >= 1 else ()
    if op in ("gt", "le"):  # "gt" turns false, "le" true
        return ((n + 1, n),)
    # "eq" turns true when the count reaches n (below n, nothing more changes), and false when
    # it falls below n; "ne" the other way round.
    return ((n + 1, n), (n, n - 1)) if n >= 1 else ((1, 0),)


def _count_change(span: timedelta, tests: tuple[tuple[CountOp, int], ...]) -> NextChange:
    drops = tuple(_drops(op, n) for op, n in tests)

    def change(track: Track | None, now: datetime) -> datetime | None:
        if track is None or not track.recent:
            return None
        recent = track.recent
        size = len(recent)
        start = now - span
        inside = size
        for t, _ in recent:  # oldest first
            if t > start:
                break
            inside -= 1
        # The count first falls to m when the (m+1)-th newest event leaves: the highest m
        # any test waits for comes first.
        highest = -1
        for test in drops:
            for least, m in test:
                if inside >= least:
                    highest = max(highest, m)
                    break
        return None if highest < 0 else recent[size - highest - 1][0] + span

    return change


def _when_change(span: timedelta, first: bool) -> NextChange:
    def change(track: Track | None, now: datetime) -> datetime | None:
        if track is None:
            return None
        when = track.first if first else track.last
        if when is None:
            return None
        at = when + span
        return at if at > now else None

    return change


def _quiet_change(span: timedelta) -> NextChange:
    def change(track: Track | None, now: datetime) -> datetime | None:
        if track is None:
            return None
        at = (track.last or track.since) + span
        return at if at > now else None

    return change


# --- validation -------------------------------------------------------------------------------


def check_node(node: Condition, scopes: tuple[str, ...], used_in: str) -> list[str]:
    """What is wrong with one node of this module (its event filter is checked by the caller,
    as any condition reading only the event)."""
    problems: list[str] = []
    if isinstance(node, Performed | Aggregate):
        if node.window is not None and (node.since is not None or node.until is not None):
            problems.append("give a rolling window or dates (since/until), not both")
        if node.window is not None and node.window <= timedelta(0):
            problems.append(f"the window must be positive, got {node.window}")
        problems += _check_range(node.since, node.until)
        if node.op not in COUNT_OPS:
            problems.append(f"unknown operator {node.op!r}")
    if isinstance(node, Performed):
        if isinstance(node.count, bool) or not isinstance(node.count, int) or node.count < 0:
            problems.append(f"count must be a whole number of 0 or more, got {node.count!r}")
        elif node.count > 1_000:
            problems.append(f"count must be at most 1000, got {node.count}")
    if isinstance(node, Aggregate):
        if node.fn not in ("sum", "avg", "min", "max"):
            problems.append(f"unknown aggregate {node.fn!r}")
        if not finite_number(node.value):
            problems.append(f"the value compared with must be a finite number, got "
                            f"{node.value!r:.80}")
    if isinstance(node, FirstPerformed | LastPerformed):
        if node.op == "within":
            if node.window is None or node.window <= timedelta(0):
                problems.append("'within' needs a positive window")
        elif node.op in ("before", "after"):
            if node.at is None:
                problems.append(f"{node.op!r} needs an instant (at)")
            elif node.at.tzinfo is None:
                problems.append("the instant must be timezone-aware")
        else:
            problems.append(f"unknown operator {node.op!r}")
    if isinstance(node, Inactive) and node.span <= timedelta(0):
        problems.append(f"the span must be positive, got {node.span}")
    if isinstance(node, TextMatch):
        problems += _check_ref(node.ref, scopes, used_in)
        problems += _check_text(node)
    if isinstance(node, ListHas):
        problems += _check_ref(node.ref, scopes, used_in)
        if node.op not in ("any", "all", "none"):
            problems.append(f"unknown list operator {node.op!r}")
    if isinstance(node, Bucket) and not (
        isinstance(node.buckets, int) and 0 < node.buckets <= 1_000_000
        and isinstance(node.low, int) and isinstance(node.high, int)
        and 0 <= node.low <= node.high <= node.buckets
    ):
        problems.append(
            f"buckets must satisfy 0 <= low <= high <= buckets <= 1000000, got low "
            f"{node.low!r}, high {node.high!r}, buckets {node.buckets!r}"
        )
    return problems


def _check_range(since: datetime | None, until: datetime | None) -> list[str]:
    problems = [f"{name} must be timezone-aware" for name, at in (("since", since),
                ("until", until)) if at is not None and at.tzinfo is None]
    if not problems and since is not None and until is not None and since >= until:
        problems.append(f"since ({since.isoformat()}) must be before until "
                        f"({until.isoformat()})")
    return problems


def _check_ref(ref: Ref, scopes: tuple[str, ...], used_in: str) -> list[str]:
    if ref.scope not in SCOPES:
        return [f"unknown scope {ref.scope!r}"]
    if ref.scope not in scopes:
        return [f"{used_in} cannot read {ref} (it can read {', '.join(scopes)} values)"]
    return []


def _check_text(node: TextMatch) -> list[str]:
    if node.op not in ("prefix", "suffix", "contains", "regex"):
        return [f"unknown text operator {node.op!r}"]
    if not isinstance(node.value, str):
        return [f"the text must be a string, got {node.value!r}"]
    if node.op != "regex":
        return []
    if len(node.value) > MAX_PATTERN_LENGTH:
        return [f"the pattern is {len(node.value)} characters long; the limit is "
                f"{MAX_PATTERN_LENGTH}"]
    try:
        re.compile(node.value)
    except re.error as exc:
        return [f"not a regular expression: {exc}"]
    if _repeats_a_choice(node.value):
        return ["the pattern repeats a group that itself repeats or alternates (such as "
                "'(a+)+' or '(a|ab)*'), which can take exponential time; rewrite it"]
    return []


def _repeats_a_choice(pattern: str) -> bool:
    """Whether a group containing a repetition or an alternation is itself repeated: the shapes
    that make a backtracking matcher take exponential time on some texts."""
    stack: list[bool] = []  # per open group: whether it holds a repetition or alternation
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":  # a character class: skip to its end
            i += 2 if pattern.startswith("[]", i) or pattern.startswith("[^]", i) else 1
            while i < n and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
        elif c == "(":
            stack.append(False)
        elif c == ")" and stack:
            risky = stack.pop()
            repeated = i + 1 < n and pattern[i + 1] in "*+{"
            if risky and repeated:
                return True
            if (risky or repeated) and stack:
                stack[-1] = True
        elif c in "*+{|" and stack:
            stack[-1] = True
        i += 1
    return False
