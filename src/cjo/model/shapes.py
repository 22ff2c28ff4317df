"""The structural check of definitions: each field of an attrs definition holds a value of the
type it declares.

Definitions are plain attrs classes that do not check their own fields, so a host can pass
``Wait(3600)`` or ``steps=[...]``. Every other check reads the fields as declared; this one runs
before them, so a wrong type is reported as a problem at its place rather than failing inside
a later check. Each problem names the part of the root it is in (``Mismatch.origin``: a journey,
a segment...), so that validation can leave that part out of the later checks and check the
rest. It reads the declared types (``attrs.fields`` and ``typing.get_type_hints``),
so every definition class is covered without a check of its own.

Understood: ``str``, ``int`` (not ``bool``), ``bool``, ``float`` (an ``int`` too), other
classes (``timedelta``, ``datetime``, ``time``...), ``None``, unions, ``Literal`` (the type of
its values: which values are allowed is said by the checks of each kind, with their own
messages), ``tuple[X, ...]`` (a list too), ``Mapping[K, V]``, ``Any`` and nested attrs classes.
Condition trees are looked into as any nested definition (each node by its own class), so a
node built by hand with a wrong type (``And(5)``, ``Compare(None, "eq", 1)``) leaves its
definition out of the checks of meaning, which read every node's fields as declared.

A field's ``metadata["expects"]`` replaces what messages say it must be ("must name a field...").
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime, time, timedelta
from typing import Any, Literal, NamedTuple, Union, get_args, get_origin

import attrs

from cjo.conditions import Condition, Ref
from cjo.described import short

__all__ = ["Mismatch", "Origin", "shape_problems"]

#: Which part of the root a value is in: the root's field, and the index or key of that field's
#: element (None: the field's value as a whole, as for a field holding one definition).
Origin = tuple[str, object]


class Mismatch(NamedTuple):
    """A value of the wrong type: where it is and what is wrong with it."""

    #: The part of the root it is in, so that a caller can leave that part out of what reads
    #: the fields as declared.
    origin: Origin
    #: Its location, outermost first (empty: a field of the root itself).
    parts: tuple[str, ...]
    message: str


class _Visit(NamedTuple):
    """An attrs object still to look into: where it is, and the part of the root it is in
    (None for the root itself)."""

    obj: object
    parts: tuple[str, ...]
    origin: Origin | None

#: Names an element of a collection field: (field name, key or index, element) -> location part.
Label = Callable[[str, object, object], str]

_NONE = type(None)
_NAMES: dict[object, str] = {
    str: "a string",
    int: "a whole number",
    bool: "True or False",
    float: "a number",
    _NONE: "None",
    Any: "any value",
    timedelta: "a duration (timedelta)",
    datetime: "an aware datetime",
    time: "a time of day (datetime.time)",
    Ref: "a reference (built with attr(), prop() or ctx())",
}

_SCALARS = (str, int, float, bool, _NONE)


def _got(value: object) -> str:
    if type(value) in _SCALARS:
        return short(value)
    return type(value).__name__


def _hints(cls: type) -> tuple[tuple[str, object, str | None], ...]:
    """Each attrs field of ``cls``: its name, declared type, and description override."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # a type only imported for type checkers: not checked
        return ()
    return tuple(
        (f.name, hints.get(f.name, Any), f.metadata.get("expects"))
        for f in attrs.fields(cls)
    )


def describe(hint: object) -> str:
    """A declared type as a person would say it: ``tuple[Case, ...]`` -> "a tuple of Case"."""
    if hint in _NAMES:
        return _NAMES[hint]
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        names = [describe(a) for a in args if a is not _NONE]
        text = names[0] if len(names) == 1 else (
            " or ".join(names) if len(names) == 2 else f"one of {', '.join(names)}"
        )
        return f"{text} (or None)" if _NONE in args else text
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin is tuple:
        return f"a tuple of {describe(args[0]) if args else 'values'}"
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        key, value = args if len(args) == 2 else (Any, Any)
        return f"a mapping of {describe(key)} to {describe(value)}"
    if isinstance(hint, type):
        if issubclass(hint, Condition):
            return ('a condition (a comparison such as attr("vip") == True, built with attr(), '
                    "prop(), ctx(), in_segment()...)")
        return hint.__name__
    return str(hint)


@attrs.frozen
class _Spec:
    """A declared type, compiled once: the classes a value may be (``isinstance``), and what to
    look into when it is one of them."""

    hint: object
    types: tuple[type, ...]
    #: ``int`` and ``float`` are declared, so ``bool`` (an ``int`` subclass) is not accepted.
    no_bool: bool
    #: The union's alternatives that hold something to look into (the spec itself if not a
    #: union): an attrs class, or a collection with its element types.
    parts: tuple[_Spec, ...]
    #: For a collection: the element's spec (tuples) or the key's and value's (mappings).
    items: tuple[_Spec, ...] = ()
    is_mapping: bool = False

    def accepts(self, value: object) -> bool:
        return isinstance(value, self.types) and not (self.no_bool and type(value) is bool)


@functools.cache
def _spec(hint: object) -> _Spec:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any or hint is object or not (isinstance(hint, type) or origin is not None):
        return _Spec(hint, (object,), False, ())  # a type this check does not know: accepted
    if origin in (Union, types.UnionType):
        alternatives = [_spec(a) for a in args]
        classes = tuple(t for a in alternatives for t in a.types)
        # bool is refused only when no alternative takes it
        no_bool = any(a.no_bool for a in alternatives) and not any(
            bool in a.types or object in a.types or (int in a.types and not a.no_bool)
            for a in alternatives
        )
        parts = tuple(p for a in alternatives for p in a.parts)
        return _Spec(hint, classes, no_bool, parts)
    if origin is Literal:
        return _Spec(hint, tuple({type(a) for a in args}), False, ())
    if origin is tuple:
        element = args[0] if len(args) == 2 and args[1] is Ellipsis else Any
        spec = _Spec(hint, (tuple, list), False, (), (_spec(element),))
        return attrs.evolve(spec, parts=(spec,))
    if isinstance(origin, type) and issubclass(origin, Mapping):
        key, value = args if len(args) == 2 else (Any, Any)
        spec = _Spec(hint, (origin,), False, (), (_spec(key), _spec(value)), True)
        return attrs.evolve(spec, parts=(spec,))
    if origin is not None:
        return _Spec(hint, (origin,), False, ())
    assert isinstance(hint, type)
    if hint is _NONE:
        return _Spec(hint, (_NONE,), False, ())
    no_bool = hint in (int, float)
    accepted: tuple[type, ...] = (int, float) if hint is float else (hint,)
    if attrs.has(hint) or issubclass(hint, Condition):
        # A condition field is declared as the base class: its value's own class says what
        # fields it has (looked into when it is an attrs class, as every node cjo defines is).
        spec = _Spec(hint, accepted, no_bool, ())
        return attrs.evolve(spec, parts=(spec,))
    return _Spec(hint, accepted, no_bool, ())


def shape_problems(
    root: object, label: Label, *, opaque: Callable[[Condition], bool] | None = None
) -> list[Mismatch]:
    """Every field, at any depth of the attrs object ``root``, whose value is not of its declared
    type, in the order the definitions are written: ``root``'s fields in the order they are
    declared, each field's elements in order (a mapping's keys before its values), each
    element's fields before the next element.
    ``label`` names the elements of collection fields in locations. ``opaque`` says which
    condition trees (by their root) are not looked into: those a later check refuses whole,
    such as one too large to be worth walking. Iterative, so a deep definition costs no stack;
    each value is visited once."""
    problems: list[Mismatch] = []
    # What is left to do, the next last: an attrs object to look into, or a problem already
    # found, kept in place so that problems come out in the order the definitions are written.
    stack: list[_Visit | Mismatch] = [_Visit(root, (), None)]
    while stack:
        item = stack.pop()
        if isinstance(item, Mismatch):
            problems.append(item)
            continue
        obj, parts, origin = item
        found: list[_Visit | Mismatch] = []
        for name, spec, expects in _fields(type(obj)):
            value = getattr(obj, name)
            if not spec.accepts(value):
                must = expects or f"must be {describe(spec.hint)}"
                found.append(Mismatch(origin or (name, None), parts,
                                      f"{name} {must}, got {_got(value)}"))
                continue
            for part in spec.parts:
                if part.accepts(value):
                    found += _contents(part, value, name, _Visit(obj, parts, origin), label,
                                       opaque)
                    break
        stack.extend(reversed(found))
    return problems


_FIELDS: dict[type, tuple[tuple[str, _Spec, str | None], ...]] = {}


def _fields(cls: type) -> tuple[tuple[str, _Spec, str | None], ...]:
    """Each attrs field of ``cls``, its compiled type and message override (computed once)."""
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS[cls] = tuple(
            (name, _spec(hint), expects) for name, hint, expects in _hints(cls)
        )
    return found


def _contents(
    spec: _Spec, value: Any, name: str, owner: _Visit, label: Label,
    opaque: Callable[[Condition], bool] | None,
) -> list[_Visit | Mismatch]:
    """What a field's value holds, in order: a nested definition or a collection's elements to
    look into, and the problems of its keys and elements."""
    parts, origin = owner.parts, owner.origin
    if not spec.items:  # an attrs object
        if not _looked_into(value, owner, opaque):
            return []
        return [_Visit(value, (*parts, name), origin or (name, None))]
    found: list[_Visit | Mismatch] = []
    if spec.is_mapping:
        key_spec, element = spec.items
        for key in value:
            if not key_spec.accepts(key):
                found.append(Mismatch(origin or (name, key), parts,
                                      f"{name} must have keys that are "
                                      f"{describe(key_spec.hint)}, got {_got(key)}"))
        items = value.items()
    else:
        element = spec.items[0]
        items = enumerate(value)
    for key, item in items:
        where = origin or (name, key)
        if not element.accepts(item):
            found.append(Mismatch(where, parts, f"{name}[{short(key)}] must be "
                                                f"{describe(element.hint)}, got {_got(item)}"))
            continue
        for part in element.parts:
            if part.accepts(item):
                # attrs elements are named by the caller's label
                if not part.items and _looked_into(item, owner, opaque):
                    found.append(_Visit(item, (*parts, label(name, key, item)), where))
                break
    return found


def _looked_into(
    value: object, owner: _Visit, opaque: Callable[[Condition], bool] | None
) -> bool:
    """Whether to look into ``value``, an element or field value of ``owner``'s object: an attrs
    object, unless it is the root of a condition tree that ``opaque`` keeps shut."""
    if not attrs.has(type(value)):
        return False
    return not (
        opaque is not None and isinstance(value, Condition)
        and not isinstance(owner.obj, Condition) and opaque(value)
    )
