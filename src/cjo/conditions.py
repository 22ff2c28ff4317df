"""Conditions: a small, safe, serializable expression tree, and a Python builder for it.

Conditions are data, never code: they are checked when published and compiled once into plain
Python closures, so evaluating one on the hot path is a handful of dictionary look-ups.

Build them with :func:`attr` (profile attributes), :func:`prop` (properties of the event being
handled), :func:`ctx` (the journey's context, which starts as the trigger event's properties) and
:func:`in_segment`; combine with ``&``, ``|`` and ``~``::

    (attr("plan") == "pro") & (prop("total") >= 50) & ~in_segment("churned")

Python's ``and``, ``or`` and ``not`` cannot be used: a condition has no truth value (it is
evaluated later), and ``a and b`` would silently be ``b``.

Comparing against a missing value is false, except ``!=`` and ``not_in``, which are its negations.
Comparing values of incompatible types (``"3" < 5``) is false rather than an error.

Time: :func:`now` is the instant being decided (never the wall clock) and :func:`entered_at`
the enrollment's entry; both take an offset and compare with a field holding a date or a
datetime (a :class:`CompareTime` node)::

    attr("signed_up_at") < now() - timedelta(days=7)     # signed up more than 7 days ago
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, NoReturn, Protocol

import attrs

from cjo.errors import DefinitionError
from cjo.frozen import freeze, ordered, thaw, to_tuple
from cjo.timezones import UTC_ZONE, instant_of, read_moment

__all__ = [
    "EXTENSIONS",
    "MISSING",
    "And",
    "Compare",
    "CompareFields",
    "CompareTime",
    "CompiledCondition",
    "Condition",
    "Exists",
    "Field",
    "InSegment",
    "Moment",
    "Not",
    "Or",
    "Ref",
    "Scope",
    "attr",
    "compile_condition",
    "ctx",
    "entered_at",
    "holds_value",
    "in_segment",
    "lookup",
    "now",
    "prop",
    "same_value",
    "walk",
]


# Converters typed with their fields' items (why: ``cjo.frozen.to_tuple``).


def _condition_tuple(value: Sequence[Condition]) -> tuple[Condition, ...]:
    return to_tuple(value)

ScopeName = Literal["profile", "event", "context"]
Op = Literal["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "contains"]
OPS: tuple[str, ...] = ("eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "contains")
SCOPES: tuple[str, ...] = ("profile", "event", "context")
TimeBase = Literal["now", "entered_at"]
TIME_BASES: tuple[str, ...] = ("now", "entered_at")
TIME_OPS: tuple[str, ...] = ("lt", "le", "gt", "ge")


class Condition:
    """Base of every condition node. Combine nodes with ``&``, ``|`` and ``~``."""

    __slots__ = ()
    kind: ClassVar[str]

    def __and__(self, other: Condition) -> And:
        if isinstance(other, Field):
            raise other._not_a_condition()
        left = self.conditions if isinstance(self, And) else (self,)
        right = other.conditions if isinstance(other, And) else (other,)
        return And(left + right)

    def __or__(self, other: Condition) -> Or:
        if isinstance(other, Field):
            raise other._not_a_condition()
        left = self.conditions if isinstance(self, Or) else (self,)
        right = other.conditions if isinstance(other, Or) else (other,)
        return Or(left + right)

    def __rand__(self, other: object) -> And:
        # ``5 & cond`` (Python asks the condition when the left side cannot): kept as written,
        # for validation to name what is not a condition, as it does for ``cond & 5``.
        right = self.conditions if isinstance(self, And) else (self,)
        return And((other, *right))  # type: ignore[arg-type]  # named by validation

    def __ror__(self, other: object) -> Or:
        right = self.conditions if isinstance(self, Or) else (self,)
        return Or((other, *right))  # type: ignore[arg-type]  # named by validation

    def __invert__(self) -> Not:
        return Not(self)

    def __bool__(self) -> bool:
        # ``a and b`` would silently be ``b``, ``a or b`` would be ``a``: a condition is data,
        # evaluated later, so it has no truth value now.
        message = ("a condition has no truth value: combine conditions with & (and), | (or) "
                   "and ~ (not), not with Python's and, or, not")
        ref = getattr(self, "ref", None)
        if isinstance(self, Compare) and self.op == "eq" and isinstance(ref, Ref):
            # ``ctx("cart_id") in ["A", "B"]`` asks each item == the field, then its truth.
            field = f"{_BUILDERS.get(ref.scope, ref.scope)}({ref.path!r})"
            message += f"; to test membership write {field}.is_in([...]), not `in`"
        raise DefinitionError(message)


@attrs.frozen
class Ref:
    """A value to read: ``scope`` is profile, event or context; ``path`` is dotted."""

    scope: ScopeName
    path: str

    def __str__(self) -> str:
        return f"{self.scope}.{self.path}"


@attrs.frozen
class Compare(Condition):
    """``ref <op> value``; op is one of eq, ne, lt, le, gt, ge, in, not_in, contains."""

    kind: ClassVar[str] = "compare"
    ref: Ref
    op: Op
    #: Lists are held as tuples, dicts as ``FrozenDict``, at any depth (``cjo.frozen.freeze``).
    value: Any = attrs.field(converter=freeze)


@attrs.frozen
class CompareFields(Condition):
    """``left <op> right`` where both sides are references: an event property against the
    journey's context (``prop("cart_id") == ctx("cart_id")``) or a profile attribute."""

    kind: ClassVar[str] = "compare_fields"
    left: Ref
    op: Op
    right: Ref


@attrs.frozen
class CompareTime(Condition):
    """``ref <op> base + offset``: a field holding a date or a datetime against ``now`` (the
    instant being decided) or ``entered_at`` (the enrollment's entry), moved by ``offset``
    (negative for earlier). op is one of lt (before), le, gt (after), ge.

    The field may hold a datetime, an ISO datetime or an ISO date (the start of that day); one
    without an offset is a wall time in the customer's time zone. A missing or unreadable
    value makes the comparison false."""

    kind: ClassVar[str] = "compare_time"
    ref: Ref
    op: Op
    base: TimeBase = "now"
    offset: timedelta = timedelta(0)


@attrs.frozen
class Exists(Condition):
    """True when the referenced value is present and not null."""

    kind: ClassVar[str] = "exists"
    ref: Ref


@attrs.frozen
class And(Condition):
    """True when every condition is true (an empty And is true)."""

    kind: ClassVar[str] = "and"
    conditions: tuple[Condition, ...] = attrs.field(converter=_condition_tuple)


@attrs.frozen
class Or(Condition):
    """True when any condition is true (an empty Or is false)."""

    kind: ClassVar[str] = "or"
    conditions: tuple[Condition, ...] = attrs.field(converter=_condition_tuple)


@attrs.frozen
class Not(Condition):
    """True when its condition is false."""

    kind: ClassVar[str] = "not"
    condition: Condition


@attrs.frozen
class InSegment(Condition):
    """True when the customer is currently in the segment."""

    kind: ClassVar[str] = "in_segment"
    segment: str


CONDITION_TYPES: tuple[type[Condition], ...] = (
    Compare, CompareFields, Exists, And, Or, Not, InSegment, CompareTime
)

_FLIPPED: dict[str, Op] = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le", "eq": "eq", "ne": "ne"}


class Moment:
    """Builder for an instant a condition compares with: ``now() - timedelta(days=7)``,
    ``entered_at() + timedelta(hours=1)``. Compared with a field it makes a
    :class:`CompareTime` node."""

    __slots__ = ("base", "offset")
    __hash__ = None  # type: ignore[assignment]  # comparisons build conditions

    def __init__(self, base: TimeBase, offset: timedelta = timedelta(0)) -> None:
        self.base = base
        self.offset = offset

    def __add__(self, delta: timedelta) -> Moment:
        return Moment(self.base, self.offset + self._duration(delta))

    def __sub__(self, delta: timedelta) -> Moment:
        return Moment(self.base, self.offset - self._duration(delta))

    def _duration(self, delta: object) -> timedelta:
        if not isinstance(delta, timedelta):
            raise DefinitionError(
                f"{self!r} moves by a timedelta, such as timedelta(days=14), got {delta!r:.80}"
            )
        return delta

    def _flip(self, op: Op, field: object) -> CompareTime:
        if not isinstance(field, Field):
            raise DefinitionError(
                f"compare {self!r} with a field, such as attr('signed_up_at')"
            )
        return CompareTime(field.ref, _FLIPPED[op], self.base, self.offset)

    def __lt__(self, field: object) -> CompareTime:
        return self._flip("lt", field)

    def __le__(self, field: object) -> CompareTime:
        return self._flip("le", field)

    def __gt__(self, field: object) -> CompareTime:
        return self._flip("gt", field)

    def __ge__(self, field: object) -> CompareTime:
        return self._flip("ge", field)

    def __repr__(self) -> str:
        return f"Moment({self.base!r}, {self.offset!r})"


def now() -> Moment:
    """The instant being decided (an event's arrival, a wake-up's scheduled instant)."""
    return Moment("now")


def entered_at() -> Moment:
    """The instant the enrollment entered the journey (where there is an enrollment)."""
    return Moment("entered_at")


class Field:
    """Builder for comparisons: ``attr("age") >= 18`` makes a :class:`Compare` node."""

    __slots__ = ("ref",)
    __hash__ = None  # type: ignore[assignment]  # == builds a condition, so a Field is not hashable

    def __init__(self, scope: ScopeName, path: str) -> None:
        if not isinstance(path, str):
            raise DefinitionError(f"the path of a {scope} field must be a string such as 'plan' "
                                  f"or 'address.country', got {path!r}")
        self.ref = Ref(scope, path)

    def _compare(self, op: Op, value: object) -> Compare | CompareFields | CompareTime:
        # Another field on the right compares two values read at evaluation time; a Moment
        # (now(), entered_at()) compares with an instant known only then.
        if isinstance(value, Field):
            return CompareFields(self.ref, op, value.ref)
        if isinstance(value, Moment):
            return CompareTime(self.ref, op, value.base, value.offset)
        return Compare(self.ref, op, value)

    def __eq__(self, value: object) -> Compare | CompareFields | CompareTime:  # type: ignore[override]
        return self._compare("eq", value)

    def __ne__(self, value: object) -> Compare | CompareFields | CompareTime:  # type: ignore[override]
        return self._compare("ne", value)

    def __lt__(self, value: object) -> Compare | CompareFields | CompareTime:
        return self._compare("lt", value)

    def __le__(self, value: object) -> Compare | CompareFields | CompareTime:
        return self._compare("le", value)

    def __gt__(self, value: object) -> Compare | CompareFields | CompareTime:
        return self._compare("gt", value)

    def __ge__(self, value: object) -> Compare | CompareFields | CompareTime:
        return self._compare("ge", value)

    def __repr__(self) -> str:
        return f"{_BUILDERS[self.ref.scope]}({self.ref.path!r})"

    # Another field as the list (or the item) is read when the condition is evaluated:
    # ``prop("tag").is_in(ctx("tags"))``, ``prop("tags").contains(ctx("tag"))``.
    def is_in(self, values: Iterable[Any] | Field) -> Compare | CompareFields:
        if isinstance(values, Field):
            return CompareFields(self.ref, "in", values.ref)
        return Compare(self.ref, "in", self._values("is_in", values))

    def not_in(self, values: Iterable[Any] | Field) -> Compare | CompareFields:
        if isinstance(values, Field):
            return CompareFields(self.ref, "not_in", values.ref)
        return Compare(self.ref, "not_in", self._values("not_in", values))

    def _values(self, op: str, values: object) -> list[Any]:
        # A string is iterable, but is_in("abc") almost never means is_in(["a", "b", "c"]).
        if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
            raise DefinitionError(f"{self.ref}.{op}() needs a list of values, got {values!r}")
        return ordered(values)

    def contains(self, value: Any) -> Compare | CompareFields:
        if isinstance(value, Field):
            return CompareFields(self.ref, "contains", value.ref)
        return Compare(self.ref, "contains", value)

    def exists(self) -> Exists:
        return Exists(self.ref)

    # Python makes ``x in field`` a truth value (so it cannot build a condition) and has no
    # condition for ``field[key]``: each says what to write instead of a bare TypeError.
    def __contains__(self, item: object) -> bool:
        built = repr(self)
        listed = repr(item) if isinstance(item, Field) else "x"
        raise DefinitionError(
            f"`in` cannot build a condition on {built}: write {listed}.is_in({built}) or "
            f"{built}.contains({listed})"
        )

    def __getitem__(self, key: object) -> NoReturn:
        built = repr(self)
        if isinstance(key, str) and key:
            raise DefinitionError(f"{built}[{key!r}]: a nested field is named by its dotted "
                                  f"path: write {_BUILDERS[self.ref.scope]}"
                                  f"({f'{self.ref.path}.{key}'!r})")
        raise DefinitionError(f"{built}[{key!r}]: a field has no items; name a nested field "
                              "by its dotted path, or compare the whole value")

    def __getattr__(self, name: str) -> NoReturn:
        # Only a failed look-up reaches here. Private and special names stay AttributeErrors,
        # so that copy, pickle and hasattr() keep working.
        if name.startswith("_"):
            raise AttributeError(name)
        raise DefinitionError(f"{self!r}.{name}: a nested field is named by its dotted path: "
                              f"write {_BUILDERS[self.ref.scope]}({f'{self.ref.path}.{name}'!r}); "
                              "a field's methods are is_in, not_in, contains and exists")

    # Conditions compare values read at evaluation time; they cannot compute new ones.
    def _arithmetic(self, *_: object) -> NoReturn:
        raise DefinitionError(f"{self!r} cannot be computed with (+, -, *, /, %): a condition "
                              "compares a field with a value or with another field")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _arithmetic
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = _arithmetic
    __mod__ = __rmod__ = __pow__ = __rpow__ = __neg__ = __pos__ = __abs__ = _arithmetic

    # A field is a value, not a condition: ``attr("vip") and cond`` would silently be ``cond``,
    # and ``attr("vip") & cond`` a bare TypeError.
    def _not_a_condition(self) -> DefinitionError:
        built = repr(self)
        return DefinitionError(
            f"{built} is a value, not a condition: compare it (such as {built} == True) or test "
            "it with .exists() before combining it with &, |, ~ (and, or, not)"
        )

    def __bool__(self) -> bool:
        raise self._not_a_condition()

    def __and__(self, other: object) -> NoReturn:
        raise self._not_a_condition()

    __rand__ = __or__ = __ror__ = __and__

    def __invert__(self) -> NoReturn:
        raise self._not_a_condition()


#: The builder that makes a field of each scope, to name a field as it was written.
_BUILDERS: dict[str, str] = {"profile": "attr", "event": "prop", "context": "ctx"}


def attr(path: str) -> Field:
    """A profile attribute, e.g. ``attr("plan")`` or ``attr("address.country")``."""
    return Field("profile", path)


def prop(path: str) -> Field:
    """A property of the event being handled, e.g. ``prop("total")``."""
    return Field("event", path)


def ctx(path: str) -> Field:
    """A value of the journey's context (the trigger event's properties and what steps added)."""
    return Field("context", path)


def in_segment(segment_id: str) -> InSegment:
    return InSegment(segment_id)


def walk(condition: Condition) -> list[Condition]:
    """Every node of a condition tree, depth first (for validation and indexing)."""
    out: list[Condition] = []
    stack: list[Condition] = [condition]
    while stack:
        node = stack.pop()
        out.append(node)
        if isinstance(node, And | Or):
            # Not a sequence: a node built by hand with a wrong type, which validation reports
            # as one (``cjo.model.shapes``) rather than failing on.
            if isinstance(node.conditions, tuple):
                stack.extend(reversed(node.conditions))
        elif isinstance(node, Not):
            stack.append(node.condition)
    return out


# --- evaluation --------------------------------------------------------------------------------


class Scope(Protocol):
    """What a condition reads: the profile's attributes, the current event's properties, the
    journey context, and the ids of the segments the customer is in.

    Time comparisons also read ``now``, ``entered_at`` (aware datetimes, or None) and ``zone``
    (a ``ZoneInfo`` for dates without one) where a scope has them; without them they are
    false."""

    @property
    def profile(self) -> Mapping[str, Any]: ...
    @property
    def event(self) -> Mapping[str, Any]: ...
    @property
    def context(self) -> Mapping[str, Any]: ...
    def in_segment(self, segment_id: str) -> bool: ...


CompiledCondition = Callable[[Scope], bool]

_MISSING: Any = object()
#: What ``lookup`` returns for a path that leads nowhere.
MISSING: Any = _MISSING


def _getter(ref: Ref) -> Callable[[Scope], Any]:
    parts = ref.path.split(".")
    scope_get = operator.attrgetter(ref.scope)
    if len(parts) == 1:
        key = parts[0]

        def get_one(s: Scope) -> Any:
            return scope_get(s).get(key, _MISSING)

        return get_one

    def get_path(s: Scope) -> Any:
        return lookup(scope_get(s), parts)

    return get_path


def lookup(value: Any, parts: Sequence[str]) -> Any:
    """The value at ``parts`` inside nested mappings, or ``MISSING``."""
    for part in parts:
        # A dict first: the ABC check costs more than the look-up.
        if type(value) is not dict and not isinstance(value, Mapping):
            return _MISSING
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def same_value(a: Any, b: Any) -> bool:
    """Equality with types: a bool is not the number it equals in Python (``True == 1``)."""
    return bool(a == b) and (type(a) is bool) is (type(b) is bool)


def holds_value(items: Any, value: Any) -> bool:
    """Whether ``items`` hold ``value``, compared as ``same_value`` compares."""
    return any(same_value(item, value) for item in items)


def _safe(fn: Callable[[Any, Any], Any], value: Any) -> Callable[[Any], bool]:
    is_bool = type(value) is bool

    def test(v: Any) -> bool:
        if v is _MISSING or v is None or (type(v) is bool) is not is_bool:
            return False
        try:
            return bool(fn(v, value))
        except TypeError:
            return False

    return test


def _membership(values: Any) -> Callable[[Any], bool]:
    # Bools and the rest apart: in one set True and 1 are the same member.
    pools: list[Any] = []
    for is_bool in (False, True):
        members = [x for x in values if (type(x) is bool) is is_bool]
        try:
            pools.append(frozenset(members))
        except TypeError:  # unhashable members: fall back to a linear scan
            pools.append(members)

    def test(v: Any) -> bool:
        try:
            return v is not _MISSING and v in pools[type(v) is bool]
        except TypeError:
            return False

    return test


def _contains(value: Any) -> Callable[[Any], bool]:
    def test(v: Any) -> bool:
        if v is _MISSING or v is None:
            return False
        try:
            return holds_value(v, value) if isinstance(v, list | tuple) else value in v
        except TypeError:
            return False

    return test


def _value_test(op: str, value: Any) -> Callable[[Any], bool]:
    if op == "eq":
        return lambda v: v is not _MISSING and same_value(v, value)
    if op == "ne":
        return lambda v: v is _MISSING or not same_value(v, value)
    if op == "in":
        return _membership(value)
    if op == "not_in":
        member = _membership(value)
        return lambda v: not member(v)
    if op == "contains":
        return _contains(value)
    comparisons: dict[str, Callable[[Any, Any], Any]] = {
        "lt": operator.lt,
        "le": operator.le,
        "gt": operator.gt,
        "ge": operator.ge,
    }
    return _safe(comparisons[op], value)


def _compare_fields(node: CompareFields) -> CompiledCondition:
    left, right, op = _getter(node.left), _getter(node.right), node.op

    def test(s: Scope) -> bool:
        other = right(s)
        if other is _MISSING:  # as with a missing left side: only the negations hold
            return op in ("ne", "not_in")
        if op in ("in", "not_in") and not isinstance(other, list | tuple | set | frozenset):
            return op == "not_in"
        return _value_test(op, other)(left(s))

    return test


_TIME_TESTS: dict[str, Callable[[datetime, datetime], bool]] = {
    "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
    "eq": operator.eq, "ne": operator.ne,
}


def _compare_time(node: CompareTime) -> CompiledCondition:
    get, base, offset = _getter(node.ref), node.base, node.offset
    test = _TIME_TESTS[node.op]

    def check(s: Scope) -> bool:
        # Scopes that know no instant (a host's own scope, a segment read without a decision)
        # make the comparison false, like a missing value.
        reference = getattr(s, base, None)
        moment = read_moment(get(s))
        if reference is None or moment is None:
            return False
        try:
            instant = instant_of(moment, getattr(s, "zone", UTC_ZONE))
            return test(instant, reference + offset)
        except (OverflowError, TypeError):
            return False

    return check


def compile_condition(condition: Condition) -> CompiledCondition:
    """Turn a condition tree into a closure. The tree must already be valid."""
    if isinstance(condition, Compare):
        get = _getter(condition.ref)
        # Compared as plain data, as a customer's values are: a list the definition holds as a
        # tuple still equals the list a profile holds.
        test = _value_test(condition.op, thaw(condition.value))
        return lambda s: test(get(s))
    if isinstance(condition, CompareFields):
        return _compare_fields(condition)
    if isinstance(condition, CompareTime):
        return _compare_time(condition)
    if isinstance(condition, Exists):
        get = _getter(condition.ref)
        return lambda s: (v := get(s)) is not _MISSING and v is not None
    if isinstance(condition, And):
        parts = tuple(compile_condition(c) for c in condition.conditions)
        if len(parts) == 1:
            return parts[0]
        return lambda s: all(p(s) for p in parts)
    if isinstance(condition, Or):
        parts = tuple(compile_condition(c) for c in condition.conditions)
        return lambda s: any(p(s) for p in parts)
    if isinstance(condition, Not):
        inner = compile_condition(condition.condition)
        return lambda s: not inner(s)
    if isinstance(condition, InSegment):
        segment = condition.segment
        return lambda s: s.in_segment(segment)
    extension = EXTENSIONS.get(type(condition))
    if extension is not None:
        return extension(condition)
    raise TypeError(f"not a condition: {condition!r}")


#: Compilers of condition kinds defined in other modules (event history, text, lists, buckets:
#: ``cjo.segments``), by class; those modules register themselves when imported.
EXTENSIONS: dict[type[Condition], Callable[[Condition], CompiledCondition]] = {}
