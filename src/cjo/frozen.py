"""Immutable containers for definitions, and the attrs converters that make them.

Definitions are frozen attrs classes, but a frozen class holding a list still changes when the
list does: a host that keeps the list it passed and edits it after publishing would change a
published definition behind the engine's back. The converters here copy what a definition is
given into tuples and ``FrozenDict`` mappings (nested lists, dicts and sets of plain data too),
so a definition is a value: it never changes, it hashes, and it equals what JSON gives back.

Whatever is not a collection of the expected kind is kept as given: validation names what is
wrong with it at its place (``cjo.model.shapes``), which a constructor cannot know.
"""

from __future__ import annotations

from collections.abc import (
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    Sequence,
    Set,
    ValuesView,
)
from typing import Any, TypeVar, overload

import attrs

__all__ = [
    "FrozenDict", "data_mapping", "freeze", "int_tuple", "ordered", "str_mapping", "str_tuple",
    "thaw", "to_mapping", "to_tuple",
]

K = TypeVar("K")
V_co = TypeVar("V_co", covariant=True)
T = TypeVar("T")

#: How deep ``freeze`` looks into nested values. Deeper (or self-containing) values are kept as
#: given: validation refuses them with their place (values nest at most
#: ``cjo.model.events.MAX_VALUE_DEPTH`` levels), and a constructor must not fail on them.
FREEZE_DEPTH = 64

_ATOMS = frozenset({str, int, float, bool, type(None)})
_TEXT = (str, bytes, bytearray)


class FrozenDict(Mapping[K, V_co]):
    """A read-only mapping: it equals any mapping with the same items (a dict too, whatever
    the order) and hashes by its items, so a definition that holds one hashes."""

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[K, V_co] | Iterable[tuple[K, V_co]] = (), /) -> None:
        self._items: dict[K, V_co] = dict(items)
        self._hash: int | None = None

    def __getitem__(self, key: K) -> V_co:
        return self._items[key]

    # The dict's own methods rather than Mapping's mixins, which go through __getitem__: steps
    # and attribute maps are read on every decision.
    @overload
    def get(self, key: K, /) -> V_co | None: ...
    @overload
    def get(self, key: K, /, default: V_co | T) -> V_co | T: ...
    def get(self, key: K, /, default: object = None) -> object:
        return self._items.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> KeysView[K]:
        return self._items.keys()

    def values(self) -> ValuesView[V_co]:
        return self._items.values()

    def items(self) -> ItemsView[K, V_co]:
        return self._items.items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenDict):
            return self._items == other._items
        if isinstance(other, dict):
            return self._items == other
        if isinstance(other, Mapping):
            return self._items == dict(other.items())
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._items.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenDict({self._items!r})"

    def __reduce__(self) -> tuple[type[FrozenDict[K, V_co]], tuple[dict[K, V_co]]]:
        return (type(self), (self._items,))


def ordered(values: Iterable[T]) -> list[T]:
    """The values of an iterable in a stable order: a set's are sorted, since its own order
    follows the process's hashing and would make one definition differ between processes."""
    if isinstance(values, Set):
        return sorted(values, key=lambda value: (type(value).__name__, repr(value)))
    return list(values)


class _TooDeepError(Exception):
    """A value nested deeper than ``FREEZE_DEPTH``, or containing itself."""


def _frozen(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind in _ATOMS or attrs.has(kind):
        return value  # a definition inside is frozen already
    if depth >= FREEZE_DEPTH:
        raise _TooDeepError
    # The usual containers are told by their type: the ABC checks cost more than the copy.
    if kind is dict or (kind is not list and kind is not tuple and isinstance(value, Mapping)):
        return FrozenDict({k: _frozen(v, depth + 1) for k, v in value.items()})
    if kind is list or kind is tuple or (
        isinstance(value, Sequence) and not isinstance(value, _TEXT)
    ):
        return tuple([_frozen(v, depth + 1) for v in value])
    # A datetime, or what is not plain data, such as a set (JSON has none): validation refuses
    # that by name.
    return value


def freeze(value: Any) -> Any:
    """``value`` with every list or tuple in it a tuple and every mapping a ``FrozenDict``, at
    any depth. Anything else is kept, as is a value too deep or containing itself (validation
    refuses it)."""
    try:
        return _frozen(value, 0)
    except _TooDeepError:
        return value


def to_tuple(value: Sequence[Any]) -> tuple[Any, ...]:
    """The converter of a definition's tuple fields: a list or tuple as a tuple of frozen
    items. A string, a set or anything else but a sequence is kept as given, for validation
    to refuse by name (so the parameter says ``Sequence``: a set or a generator is not one).

    Fields use it through a converter typed with their items (``str_tuple``, or one of the
    model module's own): the attrs mypy plugin makes a converter's parameter type the
    constructor's, so ``Journey(tags=[1])`` is a type error in the host's code."""
    if type(value) is tuple and not value:
        return value  # the usual default
    if isinstance(value, _TEXT) or not isinstance(value, Sequence):
        return value  # type: ignore[return-value]  # refused by validation, by name
    frozen = freeze(value)
    return frozen if isinstance(frozen, tuple) else value  # type: ignore[return-value]


def str_tuple(value: Sequence[str]) -> tuple[str, ...]:
    """``to_tuple`` for a field of names (tags, channels, attribute names)."""
    return to_tuple(value)


def int_tuple(value: Sequence[int]) -> tuple[int, ...]:
    """``to_tuple`` for a field of numbers (weekdays)."""
    return to_tuple(value)


def str_mapping(value: Mapping[str, str]) -> FrozenDict[str, str]:
    """``to_mapping`` for a field of texts by name (a variant's fields, an action's params)."""
    return to_mapping(value)


def data_mapping(value: Mapping[str, Any]) -> FrozenDict[str, Any]:
    """``to_mapping`` for a field of values by name (attributes a step sets, a sample)."""
    return to_mapping(value)


def to_mapping(value: Mapping[Any, Any]) -> FrozenDict[Any, Any]:
    """The converter of a definition's mapping fields: a ``FrozenDict`` of frozen values.
    Anything but a mapping is kept as given."""
    if not isinstance(value, Mapping):
        return value  # refused by validation, by name
    frozen = freeze(value)
    return frozen if isinstance(frozen, FrozenDict) else value  # type: ignore[return-value]


def thaw(value: Any) -> Any:
    """A frozen value as plain data, made of new lists and dicts: what a definition puts into
    a customer's records (an attribute an UpdateProfile step sets) is the data they hold
    elsewhere, as JSON would give it back from a storage, and shares nothing with the
    definition."""
    if type(value) in _ATOMS:
        return value
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value
