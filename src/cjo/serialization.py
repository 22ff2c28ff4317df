"""The one cattrs converter: definitions to and from JSON-compatible data.

Durations are written as seconds and read from seconds or from strings such as ``"4h"``,
``"1d12h"``, ``"90s"``, ``"30m"`` or ``"-2h"`` (an offset before its base). Conditions, steps
and triggers carry a ``kind`` tag. Loading reports every bad field at once, as one
``DefinitionError``.

Generations in the definitions store use a stored form (``dumps_stored_definitions``): a
``format`` number, and only the fields that differ from their defaults, so that a field a newer
cjo adds is in a stored generation only where it is used. A reader refuses a generation with a
newer format, or with a field, kind or operator it does not know (``UnreadableDefinitionsError``,
see docs/storage.md, rolling upgrades): running definitions without a part it cannot read would
decide differently from the processes that can, without anyone knowing.
"""

from __future__ import annotations

import json
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime, time, timedelta
from typing import Any, Final, Literal, TypeVar

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn
from cattrs.v import format_exception

from cjo.conditions import CONDITION_TYPES, SCOPES, Condition, Ref
from cjo.described import given, likely_meant
from cjo.errors import DefinitionError, Problem, UnreadableDefinitionsError
from cjo.limits import check_json_nesting, check_nesting
from cjo.model.definitions import LISTED, Definitions
from cjo.model.steps import STEP_TYPES, Step
from cjo.model.triggers import TRIGGER_TYPES, Trigger
from cjo.segments.history import HISTORY_CONDITION_TYPES

__all__ = [
    "DEFINITIONS_FORMAT",
    "LoadedParts",
    "converter",
    "dump_definitions",
    "dumps_definitions",
    "dumps_stored_definitions",
    "load_definitions",
    "load_definitions_in_parts",
    "loads_definitions",
    "loads_definitions_in_parts",
    "loads_stored_definitions",
    "parse_duration",
]

#: The format of stored definitions generations that this version writes, and the newest it
#: reads. A new field or kind does not change it (a reader refuses what it does not know); it
#: grows when a field this version knows changes meaning, so that older readers refuse it.
DEFINITIONS_FORMAT: Final = 1

T = TypeVar("T")

# A leading "-" for an offset before its base (a CompareTime or WaitUntilDate offset), as "-2h".
_DURATION = re.compile(r"^\s*(-(?=\d))?(?:(\d+(?:\.\d+)?)w)?\s*(?:(\d+(?:\.\d+)?)d)?"
                       r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$")


def parse_duration(value: object) -> timedelta:
    """Seconds (int or float), a timedelta, or a string like ``"1d4h30m"`` (``"-2h"`` before)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    try:
        if isinstance(value, int | float):
            return timedelta(seconds=value)
        if isinstance(value, str):
            match = _DURATION.match(value)
            if match and any(match.groups()[1:]):
                w, d, h, m, s = (float(g) if g else 0.0 for g in match.groups()[1:])
                span = timedelta(weeks=w, days=d, hours=h, minutes=m, seconds=s)
                return -span if match.group(1) else span
    except (OverflowError, ValueError):  # NaN, infinity, or more days than a timedelta holds
        raise ValueError(
            f"not a duration: {value!r:.80} (a duration is finite, at most "
            f"{timedelta.max.days:,} days)"
        ) from None
    raise ValueError(f"not a duration: {value!r} (use seconds or a string like '4h' or '1d12h')")


class _BadValueError(ValueError):
    """A value our own hooks rejected; its message is meant for the author of the definitions."""


def _parse_ref(value: object) -> Ref:
    if isinstance(value, str):
        scope, _, path = value.partition(".")
        if scope in SCOPES and path:
            return Ref(scope, path)  # type: ignore[arg-type]
    raise _BadValueError(
        f"not a reference: {value!r}; expected 'profile.<attribute>', 'event.<property>' "
        "or 'context.<key>'"
    )


def _structure_duration(value: object, _t: object) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _BadValueError(str(exc)) from None


def _unstructure_duration(value: timedelta) -> int | float:
    seconds = value.total_seconds()
    return int(seconds) if seconds == int(seconds) else seconds


def _structure_datetime(value: object, _t: object) -> datetime:
    """An instant as ISO 8601 text. One without an offset is read, and refused by validation
    where an instant must be aware, at the definition's place."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise _BadValueError(
        f"not a date and time: {value!r:.80} (use ISO 8601 with an offset, such as "
        "'2026-05-10T09:00:00+00:00')"
    )


def _structure_time(value: object, _t: object) -> time:
    """A wall time as ``"HH:MM"`` or ``"HH:MM:SS"`` (no zone: the customer's zone applies)."""
    if isinstance(value, str):
        try:
            parsed = time.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is None:
            return parsed
    raise _BadValueError(f"not a time of day: {value!r} (use 'HH:MM', such as '09:00')")


def _unstructure_time(value: time) -> str:
    return value.isoformat() if value.second or value.microsecond else value.strftime("%H:%M")


def _is_literal(t: Any) -> bool:
    return typing.get_origin(t) is Literal


def _is_type(target: Any) -> Callable[[Any], bool]:
    return lambda t: bool(t == target)


def _structure_literal(value: object, literal: Any) -> Any:
    # cattrs' own check reports "unknown error (zz not in literal typing.Literal[...])".
    allowed = typing.get_args(literal)
    if value in allowed:
        return value
    expected = ", ".join(repr(a) for a in allowed)
    raise _BadValueError(f"{value!r} is not one of {expected}")


def _strict(cls: type[Any], accepts: tuple[type[Any], ...], noun: str) -> Callable[[Any, Any], Any]:
    """A hook that refuses to coerce: cattrs would otherwise read ``"no"`` as True and 5 as "5"."""

    def structure(value: Any, _t: Any) -> Any:
        if not isinstance(value, accepts) or (isinstance(value, bool) and cls is not bool):
            raise _BadValueError(f"expected {noun}, got {value!r}")
        try:
            return cls(value)
        except OverflowError:  # float(10**400): JSON reads any integer, a float holds less
            raise _BadValueError(
                f"expected {noun}, got an integer too large for one (at most about "
                f"{sys.float_info.max:.1e})"
            ) from None

    return structure


_NOT_A_MAPPING = ("has no attribute 'keys'", "has no attribute 'items'")


def _format_exception(exc: BaseException, cls: Any) -> str:
    # ``cls`` is a type form, as cattrs passes it: a class, a union, ``tuple[...]``, or None.
    if isinstance(exc, _BadValueError):
        return str(exc)
    if isinstance(exc, AttributeError) and str(exc).endswith(_NOT_A_MAPPING):
        return "expected an object"  # a class or a mapping was given a list, string or number
    if isinstance(exc, TypeError) and _is_tuple(cls):
        return "expected a list"  # cattrs would say "expected tuple", which JSON does not have
    union = typing.get_origin(cls) in (typing.Union, types.UnionType)
    if isinstance(exc, TypeError) and union and any(map(_is_tuple, typing.get_args(cls))):
        return "expected a list or null"  # an optional list: cattrs names Python's types
    if isinstance(exc, ForbiddenExtraKeysError) and attrs.has(exc.cl):
        return _extra_fields(exc.extra_fields, [f.name for f in attrs.fields(exc.cl)])
    return format_exception(exc, cls)


def _extra_fields(extra: set[str], known: list[str]) -> str:
    """Name the unknown keys, with the known field each is most likely a misspelling of: in a
    file of definitions a misspelt key is the usual cause."""
    names = sorted(extra)
    message = f"extra fields found ({', '.join(names)})"
    likely = {name: close for name in names if (close := likely_meant(name, known))}
    if len(likely) == 1 and len(names) == 1:
        return f"{message}; did you mean {likely[names[0]]!r}?"
    if likely:
        guesses = ", ".join(f"{right!r} for {wrong!r}" for wrong, right in likely.items())
        return f"{message}; did you mean {guesses}?"
    return message


def _tagged(
    conv: cattrs.Converter, what: str, classes: tuple[type[Any], ...]
) -> tuple[Callable[[Any, Any], Any], Callable[[Any], dict[str, Any]]]:
    """Structure and unstructure hooks for a family of classes told apart by a ``kind`` tag.

    Written by hand rather than with cattrs' tagged-union strategy so that an unknown or missing
    kind says so (and lists the known kinds) instead of "required field missing". Per-class
    functions are generated lazily because conditions nest inside steps and triggers.
    """
    by_kind: dict[str, type[Any]] = {cls.kind: cls for cls in classes}
    known = ", ".join(sorted(by_kind))
    structure_fns: dict[type[Any], Callable[[Any, Any], Any]] = {}
    unstructure_fns: dict[type[Any], Callable[[Any], Any]] = {}

    def structure(data: Any, _t: Any) -> Any:
        if not isinstance(data, Mapping):
            raise _BadValueError(f"a {what} must be an object with a 'kind', got {data!r}")
        if "kind" not in data:
            raise _BadValueError(f"{what} has no 'kind'; expected one of {known}")
        kind = data["kind"]
        cls = by_kind.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise _BadValueError(f"unknown {what} kind {kind!r}; expected one of {known}")
        fn = structure_fns.get(cls)
        if fn is None:
            fn = structure_fns[cls] = make_dict_structure_fn(
                cls, conv, _cattrs_forbid_extra_keys=True
            )
        return fn({k: v for k, v in data.items() if k != "kind"}, cls)

    def unstructure(value: Any) -> dict[str, Any]:
        cls = type(value)
        fn = unstructure_fns.get(cls)
        if fn is None:
            fn = unstructure_fns[cls] = make_dict_unstructure_fn(
                cls, conv, _cattrs_omit_if_default=conv.omit_if_default
            )
        return {"kind": value.kind, **fn(value)}

    return structure, unstructure


def _is_tuple(t: Any) -> bool:
    return t is tuple or typing.get_origin(t) is tuple


def _make_converter(*, omit_defaults: bool = False) -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, omit_if_default=omit_defaults)
    conv.register_structure_hook(timedelta, _structure_duration)
    conv.register_unstructure_hook(timedelta, _unstructure_duration)
    conv.register_structure_hook(datetime, _structure_datetime)
    conv.register_unstructure_hook(datetime, lambda v: v.isoformat())
    conv.register_structure_hook(time, _structure_time)
    conv.register_unstructure_hook(time, _unstructure_time)
    conv.register_structure_hook_func(_is_literal, _structure_literal)
    conv.register_structure_hook(str, _strict(str, (str,), "a string"))
    conv.register_structure_hook(int, _strict(int, (int,), "an integer"))
    conv.register_structure_hook(float, _strict(float, (int, float), "a number"))
    conv.register_structure_hook(bool, _strict(bool, (bool,), "true or false"))

    # cattrs' own tuple hook, taken before ours replaces it: it structures each item (with its
    # index in errors); ours only refuses what is not a list first.
    structure_items = conv.get_structure_hook(tuple)

    def structure_tuple(value: Any, t: Any) -> Any:
        # A string is iterable: cattrs would read "vip" as the list ["v", "i", "p"].
        if isinstance(value, str | bytes | Mapping):
            raise _BadValueError(f"expected a list, got {value!r:.60}")
        return structure_items(value, t)

    conv.register_structure_hook_func(_is_tuple, structure_tuple)
    # A reference reads best as one string: "profile.plan", "event.cart.total".
    conv.register_structure_hook(Ref, lambda v, _t: _parse_ref(v))
    conv.register_unstructure_hook(Ref, str)

    # Conditions are a class hierarchy (so they can share operators), not a Union: any
    # Condition-typed field dispatches on the "kind" tag, and every node writes its kind.
    condition_types = CONDITION_TYPES + HISTORY_CONDITION_TYPES
    structure_condition, unstructure_condition = _tagged(conv, "condition", condition_types)
    conv.register_structure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, Condition), structure_condition
    )
    conv.register_unstructure_hook_func(lambda t: t is Condition, unstructure_condition)
    for cls in condition_types:
        conv.register_unstructure_hook(cls, unstructure_condition)

    # Steps and triggers are Unions; only fields typed as the Union carry the tag.
    for union, what, classes in (
        (Step, "step", STEP_TYPES),
        (Trigger, "trigger", TRIGGER_TYPES),
    ):
        structure_member, unstructure_member = _tagged(conv, what, classes)
        conv.register_structure_hook_func(_is_type(union), structure_member)
        conv.register_unstructure_hook_func(_is_type(union), unstructure_member)
    return conv


converter = _make_converter()
#: The stored form's writer: fields at their defaults are left out.
_stored_converter = _make_converter(omit_defaults=True)


def structure(data: Any, cls: type[T], what: str = "$") -> T:
    """Structure ``data`` as ``cls``, turning every cattrs error into one DefinitionError."""
    try:
        return converter.structure(data, cls)
    except cattrs.BaseValidationError as exc:
        problems = []
        for message in cattrs.transform_error(exc, what, _format_exception):
            text, _, where = message.rpartition(" @ ")
            problems.append(Problem(where or what, text or message))
        raise DefinitionError(problems) from exc
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # Raised by ``cls`` itself rather than by a field (cattrs wraps those): worded as cattrs
        # words a field's, so that a definition read alone reads as one read in its list.
        raise DefinitionError([Problem(what, _format_exception(exc, cls))]) from exc


def dump_definitions(definitions: Definitions) -> dict[str, Any]:
    """Definitions as JSON-compatible data. Anything but a ``Definitions`` whose fields hold
    definitions of their classes raises ``DefinitionError`` naming what was given and where."""
    _check_dumpable(definitions, "dump_definitions")
    data: dict[str, Any] = converter.unstructure(definitions)
    return data


def _check_dumpable(definitions: object, call: str) -> None:
    """Refuse what is not a ``Definitions``, and a ``Definitions`` one of whose fields holds
    something else than its class (``Definitions(journeys=[1])``: attrs does not check): the
    converter would write whatever it is given as JSON (``dumps_definitions([1])`` is ``[1]``)
    or fail deep inside on an attribute the value does not have."""
    if not isinstance(definitions, Definitions):
        raise DefinitionError([Problem(call, (
            f"expected a cjo.Definitions, got {given(definitions)}"
        ))])
    problems: list[Problem] = []
    for name, hint in _DEFINITION_FIELDS.items():
        value = getattr(definitions, name)
        where = f"Definitions.{name}"
        cls = LISTED.get(name)
        if cls is None:
            classes = tuple(c for c in typing.get_args(hint) or (hint,) if isinstance(c, type))
            if classes and not isinstance(value, classes):
                expected = " or ".join("None" if c is type(None) else c.__name__ for c in classes)
                problems.append(Problem(where, f"expected {expected}, got {given(value)}"))
            continue
        if not isinstance(value, tuple | list):
            problems.append(Problem(where, (
                f"expected a list or tuple of {cls.__name__}, got {given(value)}"
            )))
            continue
        problems += [
            Problem(f"{where}[{i}]", f"expected a {cls.__name__}, got {given(item)}")
            for i, item in enumerate(value) if not isinstance(item, cls)
        ]
    if problems:
        raise DefinitionError(problems)


@attrs.frozen
class LoadedParts:
    """Definitions read from data one at a time (``load_definitions_in_parts``)."""

    #: Every definition that could be read.
    definitions: Definitions
    #: Why the others could not, in the order of the fields of ``Definitions``.
    problems: tuple[Problem, ...]
    #: The data of each definition that could not be read, by the field it is in (None: the
    #: field's value as a whole, as for one that is not a list).
    unread: Mapping[str, tuple[Any, ...] | None]


_DEFINITION_FIELDS: dict[str, Any] = typing.get_type_hints(Definitions)


def load_definitions_in_parts(data: Mapping[str, Any]) -> LoadedParts:
    """Definitions from JSON-compatible data, each listed definition (a journey, a segment...)
    and each other field read on its own, so that those that can be read are, whatever is wrong
    with the others. Data that is not an object, or nested deeper than definitions may be, raises
    ``DefinitionError``."""
    if not isinstance(data, Mapping):
        raise DefinitionError([Problem("$", "expected an object of definitions")])
    check_nesting(data)  # the converter recurses once per level: refuse deep data first
    read: dict[str, Any] = {}
    problems: list[Problem] = []
    unread: dict[str, tuple[Any, ...] | None] = {}
    for name in _DEFINITION_FIELDS:
        if name not in data:
            continue
        value = data[name]
        cls = LISTED.get(name)
        if cls is not None and isinstance(value, list):
            items: list[Any] = []
            failed: list[Any] = []
            for i, item in enumerate(value):
                try:
                    items.append(structure(item, cls, f"$.{name}[{i}]"))
                except DefinitionError as exc:
                    problems += exc.problems
                    failed.append(item)
            read[name] = tuple(items)
            if failed:
                unread[name] = tuple(failed)
            continue
        try:
            read[name] = getattr(structure({name: value}, Definitions), name)
        except DefinitionError as exc:
            problems += exc.problems
            unread[name] = None
    extra = {key: value for key, value in data.items() if key not in _DEFINITION_FIELDS}
    if extra:
        try:
            structure(extra, Definitions)
        except DefinitionError as exc:
            problems += exc.problems
    return LoadedParts(Definitions(**read), tuple(problems), unread)


def load_definitions(data: Mapping[str, Any]) -> Definitions:
    """Definitions from JSON-compatible data; every problem is reported in one DefinitionError."""
    parts = load_definitions_in_parts(data)
    if parts.problems:
        raise DefinitionError(parts.problems)
    return parts.definitions


def dumps_definitions(definitions: Definitions, *, indent: int | None = 2) -> str:
    """Definitions as JSON text; refused as by ``dump_definitions``."""
    _check_dumpable(definitions, "dumps_definitions")
    data: dict[str, Any] = converter.unstructure(definitions)
    return json.dumps(data, indent=indent, sort_keys=False)


class _RepeatedKeys(dict[str, Any]):
    """A JSON object in which a key was written more than once (``repeated``, in order)."""

    __slots__ = ("repeated",)

    def __init__(self, pairs: list[tuple[str, Any]], repeated: list[str]) -> None:
        super().__init__(pairs)
        self.repeated = repeated


def _marking_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    seen: set[str] = set()
    repeated: list[str] = []
    for key, _ in pairs:
        if key in seen and key not in repeated:
            repeated.append(key)
        seen.add(key)
    return _RepeatedKeys(pairs, repeated)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _repeated_keys(data: object) -> list[Problem]:
    """A problem for each key written twice in one object of ``data``, at the object's JSON
    path, in document order."""
    problems: list[Problem] = []
    stack: list[tuple[str, object]] = [("$", data)]
    while stack:  # the nesting was bounded before parsing
        path, node = stack.pop()
        children: list[tuple[str, object]] = []
        if isinstance(node, dict):
            if isinstance(node, _RepeatedKeys):
                problems.extend(Problem(path, (
                    f"key {key!r} appears twice in one object (JSON would keep only the last)"
                )) for key in node.repeated)
            children = [
                (f"{path}.{k}" if _IDENTIFIER.fullmatch(k) else f"{path}[{k!r}]", v)
                for k, v in node.items()
            ]
        elif isinstance(node, list):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(node)]
        stack.extend(reversed(children))
    return problems


def loads_definitions(text: str | bytes) -> Definitions:
    """Definitions from JSON text (a str, or UTF-8 bytes as a file opened in binary mode
    gives; a leading byte order mark is skipped); every problem is reported in one
    DefinitionError."""
    return load_definitions(_json_object(text, "loads_definitions"))


def loads_definitions_in_parts(text: str | bytes) -> LoadedParts:
    """``load_definitions_in_parts`` of JSON text: text that is not a JSON object raises
    ``DefinitionError``."""
    return load_definitions_in_parts(_json_object(text, "loads_definitions_in_parts"))


def _json_text(text: object, call: str) -> str:
    if isinstance(text, bytes | bytearray):
        try:
            return bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise DefinitionError([Problem(call, "the bytes are not UTF-8 text")]) from None
    if not isinstance(text, str):
        hint = "; data already parsed goes to load_definitions" if isinstance(
            text, Mapping) else ""
        raise DefinitionError([Problem(call, (
            f"expected JSON text (a str or UTF-8 bytes), got {type(text).__name__}{hint}"
        ))])
    # A byte order mark, as the bytes may start with: read_text() keeps it as U+FEFF.
    return text.removeprefix("\ufeff")


def _json_object(text: object, call: str) -> dict[str, Any]:
    text = _json_text(text, call)
    check_json_nesting(text)  # json.loads recurses once per level: refuse deep text first
    repeated = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeated
        out = _marking_repeated_keys(items)
        repeated = repeated or isinstance(out, _RepeatedKeys)
        return out

    try:
        # A key written twice in one object would silently keep only its last value: in
        # hand-written definitions, that is a step or a field overwritten by mistake.
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise DefinitionError([Problem(f"line {exc.lineno}", f"invalid JSON: {exc.msg}")]) from exc
    except ValueError as exc:  # an integer with more digits than int() reads
        raise DefinitionError([_too_long_integer(text, exc)]) from exc
    if repeated:
        raise DefinitionError(_repeated_keys(data))
    if not isinstance(data, dict):
        raise DefinitionError([Problem("$", "expected a JSON object of definitions")])
    return data


def _too_long_integer(text: str, exc: ValueError) -> Problem:
    """Where ``text`` holds an integer longer than ``sys.get_int_max_str_digits()``: json.loads
    raises a plain ValueError for it, with no position."""
    limit = sys.get_int_max_str_digits()
    # Digits not part of a float (its fraction or exponent), which json.loads reads otherwise.
    match = re.search(rf"(?<![\d.eE])\d{{{limit + 1},}}(?![\d.eE])", text) if limit else None
    if match is None:
        return Problem("$", f"invalid JSON: {exc}")
    return Problem(f"line {text.count(chr(10), 0, match.start()) + 1}", (
        f"a number of {len(match.group()):,} digits; at most {limit:,} are read"
    ))


def dumps_stored_definitions(definitions: Definitions) -> str:
    """Definitions as a generation of the definitions store holds them: compact JSON with the
    ``format`` number, fields at their defaults left out (a released default never changes)."""
    _check_dumpable(definitions, "dumps_stored_definitions")
    data: dict[str, Any] = _stored_converter.unstructure(definitions)
    return json.dumps({"format": DEFINITIONS_FORMAT, **data}, separators=(",", ":"))


def loads_stored_definitions(text: str | bytes, generation: int) -> Definitions:
    """A stored generation; ``UnreadableDefinitionsError`` naming it and everything in it this
    version cannot read (a newer format, an unknown field, kind or operator), or if damaged."""
    try:
        check_json_nesting(text if isinstance(text, str) else text.decode())
        data = json.loads(text)
    except DefinitionError as exc:  # nested deeper than definitions may be
        raise UnreadableDefinitionsError(generation, exc.problems) from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise UnreadableDefinitionsError(generation, [Problem("$", f"not JSON: {exc}")]) from exc
    if not isinstance(data, dict):
        raise UnreadableDefinitionsError(generation, [Problem("$", "expected a JSON object")])
    fmt = data.pop("format", 1)  # a generation stored before the number was written
    if fmt != DEFINITIONS_FORMAT:
        known = isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > DEFINITIONS_FORMAT
        raise UnreadableDefinitionsError(generation, [Problem("$.format", (
            f"format {fmt} is newer than this version reads ({DEFINITIONS_FORMAT})" if known
            else f"not a definitions format: {fmt!r}"
        ))])
    try:
        return load_definitions(data)
    except DefinitionError as exc:
        raise UnreadableDefinitionsError(generation, exc.problems) from exc
