"""Bulk profile import: many profiles at once, through the same path as any profile change.

Each record is a mapping ``{"customer_id": ..., "attributes": {...}, "timezone": ...,
"locale": ...}`` (only ``customer_id`` is required). A record is checked by the rules of
``ProfileUpdate`` (ids, attribute names and values, a known IANA time zone, locale); a bad one
is reported with its position (1-based) and the reason, and the others are kept. The good ones
are handled as ``ProfileUpdate`` groups by ``Engine.handle_events``, one transaction per group,
so segment memberships, attribute triggers and exit conditions react as for ``identify``.

``read_csv`` and ``read_json_lines`` turn files into such records (``cjo import`` uses them).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from cjo.arguments import callable_or_none, count
from cjo.errors import InvalidEventError, UsageError
from cjo.model.events import ProfileUpdate

if TYPE_CHECKING:
    from cjo.engine import Engine

__all__ = [
    "ImportProblem",
    "ImportResult",
    "Unreadable",
    "import_profiles",
    "read_csv",
    "read_json_lines",
]

_KEYS = frozenset({"customer_id", "attributes", "timezone", "locale"})
#: Columns of a CSV file that are not attributes.
_CSV_FIELDS = ("customer_id", "timezone", "locale")


@attrs.frozen(slots=True)
class ImportProblem:
    """A record that was not imported: its position in the input (1-based) and why."""

    position: int
    reason: str

    def __str__(self) -> str:
        return f"record {self.position}: {self.reason}"


@attrs.frozen(slots=True)
class ImportResult:
    """What an import did so far: records read, profiles imported, records refused."""

    read: int = 0
    imported: int = 0
    problems: tuple[ImportProblem, ...] = ()


Progress = Callable[[ImportResult], object]


def import_profiles(
    engine: Engine,
    records: Iterable[object],
    *,
    progress: Progress | None = None,
    batch_size: int = 500,
) -> ImportResult:
    """Check each record and import the good ones: each ``batch_size`` records read, the good
    ones among them are one transaction, and ``progress`` then gets the running totals."""
    count(batch_size, "batch_size")
    callable_or_none(progress, "progress")
    # A str or a mapping is iterable too, but a record per character or key is never meant.
    if isinstance(records, str | bytes | Mapping) or not isinstance(records, Iterable):
        raise UsageError(
            "records must be an iterable of profile records (mappings), got "
            f"{type(records).__name__}"
        )
    read = imported = reported = 0
    problems: list[ImportProblem] = []
    group: list[ProfileUpdate] = []
    positions: list[int] = []  # of the group's records

    def flush() -> None:
        nonlocal imported, reported
        if group:
            # A customer whose stored record cannot be decoded is left out of the transaction
            # (the others are imported): their records are reported, and the import goes on.
            corrupt = {e.customer_id: e for e in engine._handle_updates(group)}
            for position, update in zip(positions, group, strict=True):
                error = corrupt.get(update.customer_id)
                if error is None:
                    imported += 1
                else:
                    problems.append(ImportProblem(position, f"not imported: {error}"))
            group.clear()
            positions.clear()
        reported = read
        if progress is not None:
            progress(ImportResult(read, imported, tuple(problems)))

    for position, record in enumerate(records, 1):
        read = position
        try:
            group.append(_update(record))
            positions.append(position)
        except InvalidEventError as exc:
            problems.append(ImportProblem(position, str(exc)))
        if position % batch_size == 0:
            flush()
    if reported != read:
        flush()
    return ImportResult(read, imported, tuple(problems))


def _update(record: object) -> ProfileUpdate:
    if isinstance(record, Unreadable):
        raise InvalidEventError(record.reason)
    if not isinstance(record, Mapping):
        raise InvalidEventError(
            f"a profile record must be a mapping, got {type(record).__name__}"
        )
    unknown = sorted(str(k) for k in record if k not in _KEYS)
    if unknown:
        raise InvalidEventError(
            f"unknown key(s) {', '.join(map(repr, unknown))}: a profile record has "
            "customer_id, attributes, timezone and locale"
        )
    if "customer_id" not in record:
        raise InvalidEventError("customer_id is missing")
    return ProfileUpdate(
        record["customer_id"], record.get("attributes") or {}, (),
        record.get("timezone"), record.get("locale"),
    )


# --- files -------------------------------------------------------------------------------------


@attrs.frozen(slots=True)
class Unreadable:
    """A line of a file that could not be read as a record (the reason says why)."""

    reason: str


#: What ``errors="surrogateescape"`` decodes a byte that is not UTF-8 to.
_UNDECODED = re.compile("[\udc80-\udcff]")
_NOT_UTF8 = "not UTF-8 text (save the file as UTF-8)"


def _number(text: str) -> int | float:
    text = text.strip()
    if _WHOLE.fullmatch(text):
        return int(text)
    # int and float also read "1_000" and other scripts' digits: only plain decimals are taken.
    if not _DECIMAL.fullmatch(text):
        raise ValueError(text)
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _boolean(text: str) -> bool:
    value = _BOOLEANS.get(text.strip().lower())
    if value is None:
        raise ValueError(text)
    return value


def _datetime(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip())
    if value.utcoffset() is None:
        raise ValueError(text)
    return value


_WHOLE = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_BOOLEANS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}
#: What a ``name:type`` column reads its cells as, and the form it expects.
_CSV_TYPES: Mapping[str, tuple[Callable[[str], Any], str]] = {
    "string": (str, "text"),
    "number": (_number, "a finite number such as 42 or 9.5"),
    "boolean": (_boolean, "true/false, yes/no or 1/0"),
    "datetime": (_datetime, "an ISO 8601 date and time with an offset, such as "
                            "2026-03-02T09:00:00+01:00"),
}


def _column(name: str) -> tuple[str, str]:
    """(attribute, type) of a header cell: ``name:type`` with a type of ``_CSV_TYPES``, else
    the whole cell, as text (a colon followed by anything else is part of the name)."""
    attribute, colon, kind = name.rpartition(":")
    if colon and attribute and kind in _CSV_TYPES:
        return attribute, kind
    return name, "string"


def read_csv(stream: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | Unreadable]]:
    """(line number, record) of a CSV file with a header row: a ``customer_id`` column, optional
    ``timezone`` and ``locale`` columns, and every other column an attribute (an empty cell
    sets nothing). An attribute is text unless its column says otherwise: ``orders:number``,
    ``vip:boolean``, ``signed_up_at:datetime`` (``:string`` too); a cell its type cannot read
    refuses its line, naming the column. Raises ``UsageError`` when there is no
    ``customer_id`` column, an attribute is named twice or the header is not UTF-8. Open the
    file with ``newline=""``; opened with ``errors="surrogateescape"``, a line that is not
    UTF-8 is reported as such."""
    # Strict: a quote never closed fails rather than swallow every line after it into one
    # cell (those profiles would be lost without a word).
    reader = csv.reader(stream, strict=True)
    header = next(reader, None)
    if header is None or "customer_id" not in header:
        raise UsageError("the CSV file needs a header row with a customer_id column")
    if any(_UNDECODED.search(name) for name in header):
        # Else every line would be refused for an attribute name that is not text.
        raise UsageError(f"the CSV header row is {_NOT_UTF8}")
    columns = [_column(name) if name not in _CSV_FIELDS else (name, "string")
               for name in header]
    # Unnamed columns are left alone: spreadsheets add them (",,") when saving empty cells.
    names = [attribute for attribute, _ in columns]
    twice = sorted({name for name in names if name and names.count(name) > 1})
    if twice:
        raise UsageError(
            f"the CSV header names column(s) {', '.join(map(repr, twice))} more than once"
        )
    typed = [(i, attribute, kind) for i, (attribute, kind) in enumerate(columns)
             if kind != "string"]
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if reader.line_num > start and "unexpected end of data" in str(exc):
                yield start, Unreadable(
                    f"not CSV: a quote opened on line {start} is never closed (lines {start} "
                    f"to {reader.line_num} read as one record)"
                )
                break
            # A cell past the reader's field limit, a character after a closing quote: the
            # reader goes on at the next line.
            yield reader.line_num, Unreadable(f"not CSV: {exc}")
            continue
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        if any(_UNDECODED.search(cell) for cell in row):
            yield line, Unreadable(_NOT_UTF8)
            continue
        if len(row) != len(header):
            yield line, Unreadable(f"{len(row)} cells where the header has {len(header)}")
            continue
        cells: dict[str, Any] = dict(zip(names, row, strict=True))
        bad = None
        for i, attribute, kind in typed:
            text = row[i]
            if text == "":
                continue
            read, expected = _CSV_TYPES[kind]
            try:
                cells[attribute] = read(text)
            except ValueError:
                bad = f"column {header[i]!r}: {text[:40]!r} is not {expected}"
                break
        if bad is not None:
            yield line, Unreadable(bad)
            continue
        record: dict[str, Any] = {"customer_id": cells["customer_id"]}
        for name in _CSV_FIELDS[1:]:
            if cells.get(name):
                record[name] = cells[name]
        record["attributes"] = {
            k: v for k, v in cells.items() if k not in _CSV_FIELDS and v != ""
        }
        yield line, record


def read_json_lines(stream: Iterable[str]) -> Iterator[tuple[int, object]]:
    """(line number, record) of a JSON lines file: one record object per line (see
    ``import_profiles``); blank lines are skipped. Opened with ``errors="surrogateescape"``,
    a line that is not UTF-8 is reported as such."""
    for line, text in enumerate(stream, 1):
        if not text.strip():
            continue
        if _UNDECODED.search(text):
            yield line, Unreadable(_NOT_UTF8)
            continue
        try:
            # Without its line end: a line cut short would read as "invalid control
            # character" (the line end inside the string left open), not what it is.
            yield line, json.loads(text.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            # The column only: the parser's "line 1" is the file's line, named already. (Some
            # of its messages end in "at", for the position.)
            why = exc.msg.removesuffix(" at")
            yield line, Unreadable(f"not JSON: {why} at column {exc.colno}")
        except ValueError as exc:
            yield line, Unreadable(f"not JSON: {exc}")
        except RecursionError:  # the parser recurses once per level of lists and objects
            yield line, Unreadable("not JSON: nests too deeply to read")
