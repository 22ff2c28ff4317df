"""Bulk profile import, on every storage, and the ``cjo import`` command."""

from __future__ import annotations

import io
import json
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cjo import (
    AttributeTrigger,
    ContentItem,
    Engine,
    ImportProblem,
    ImportResult,
    Journey,
    ManualClock,
    RecordingChannel,
    Segment,
    Send,
    UsageError,
    Variant,
    attr,
)
from cjo.cli import main
from cjo.importing import Unreadable, read_csv
from cjo.storage.url import open_storage
from tests.helpers import Factory

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _engine(storage: Any) -> tuple[Engine, RecordingChannel]:
    channel = RecordingChannel()
    engine = Engine(storage, channels={"inbox": channel}, clock=ManualClock(T0))
    engine.publish(
        content=[ContentItem("hi", variants=(Variant("inbox", {"text": "welcome, gold"}),))],
        segments=[Segment("gold", attr("tier") == "gold")],
        journeys=[Journey(id="upgraded", trigger=AttributeTrigger("tier", changed_to=("gold",)),
                          entry="mail", steps={"mail": Send("hi", "inbox")})],
    )
    return engine, channel


def test_good_records_are_imported_bad_ones_reported_and_journeys_react(
    storage_factory: Factory,
) -> None:
    engine, channel = _engine(storage_factory())
    engine.identify("c2", {"tier": "silver", "name": "Bo"})
    records: list[object] = [
        {"customer_id": "c1", "attributes": {"tier": "gold"}, "timezone": "Europe/Paris"},
        {"customer_id": "c2", "attributes": {"tier": "gold"}, "locale": "sv"},
        {"attributes": {"tier": "gold"}},
        {"customer_id": "c4", "timezone": "Mars/Olympus"},
        "c5",
        {"customer_id": "c6", "email": "c6@example.com"},
        {"customer_id": "", "attributes": {}},
        {"customer_id": "c8", "attributes": {"tier": "bronze"}},
    ]
    seen: list[ImportResult] = []
    result = engine.import_profiles(records, batch_size=3, progress=seen.append)
    assert (result.read, result.imported) == (8, 3)
    assert [p.position for p in result.problems] == [3, 4, 5, 6, 7]
    reasons = [p.reason for p in result.problems]
    assert "customer_id is missing" in reasons[0]
    assert "Mars/Olympus" in reasons[1]
    assert "mapping" in reasons[2]
    assert "'email'" in reasons[3]
    assert "customer_id" in reasons[4]
    assert str(result.problems[0]).startswith("record 3: ")
    # One call per batch of three records read, with the running totals.
    assert [(r.read, r.imported, len(r.problems)) for r in seen] == [
        (3, 2, 1), (6, 2, 4), (8, 3, 5),
    ]
    p2 = engine.profile("c2")
    assert p2 is not None
    assert (dict(p2.attributes), p2.locale) == ({"tier": "gold", "name": "Bo"}, "sv")
    p1 = engine.profile("c1")
    assert p1 is not None and p1.timezone == "Europe/Paris"
    assert engine.segment_members("gold") == ["c1", "c2"]
    assert sorted(m.customer_id for m in channel.messages) == ["c1", "c2"]
    assert engine.profile("c4") is None


def test_import_checks_its_batch_size() -> None:
    engine, _ = _engine(None)
    with pytest.raises(UsageError, match="batch_size"):
        engine.import_profiles([], batch_size=0)
    assert engine.import_profiles([]) == ImportResult(0, 0, ())
    assert ImportProblem(2, "x") == ImportProblem(2, "x")


def test_import_refuses_a_progress_that_is_not_callable_before_importing_anything() -> None:
    engine, _ = _engine(None)
    with pytest.raises(UsageError, match="progress must be callable"):
        engine.import_profiles([{"customer_id": "c1"}], progress=5)  # type: ignore[arg-type]
    assert engine.profile("c1") is None


@pytest.mark.parametrize("records", [5, None, "abc", {"customer_id": "a"}])
def test_import_takes_an_iterable_of_records_not_one_record_or_a_string(records: Any) -> None:
    engine, _ = _engine(None)
    with pytest.raises(UsageError, match="records must be an iterable of profile records"):
        engine.import_profiles(records)


def test_cli_imports_a_csv_file_into_sqlite(tmp_path: Path, capsys: Any) -> None:
    db = tmp_path / "cjo.db"
    path = tmp_path / "people.csv"
    path.write_text(
        "customer_id,tier,name,timezone,locale\n"
        "c1,gold,Ann,Europe/Paris,fr\n"
        ",gold,Nobody,,\n"
        "\n"
        "c2,,Bo,,\n"
        "c3,silver\n"
        "c4,silver,Cy,Nowhere/Land,\n",
        encoding="utf-8",
    )
    status = main(["import", str(path), "--storage", f"sqlite:///{db}", "--batch-size", "2"])
    out = capsys.readouterr().out
    assert status == 1
    lines = out.splitlines()
    assert lines[0] == f"{path}: 2 profiles imported, 3 records refused"
    assert lines[1].startswith("  - line 3: ") and "customer_id" in lines[1]
    assert lines[2] == "  - line 6: 2 cells where the header has 5"
    assert lines[3].startswith("  - line 7: ") and "Nowhere/Land" in lines[3]
    from cjo.storage.sqlite import SQLiteStorage

    with SQLiteStorage(db) as storage:
        engine = Engine(storage, clock=ManualClock(T0))
        p1, p2 = engine.profile("c1"), engine.profile("c2")
        assert p1 is not None and p2 is not None
        assert (dict(p1.attributes), p1.timezone, p1.locale) == (
            {"tier": "gold", "name": "Ann"}, "Europe/Paris", "fr")
        assert dict(p2.attributes) == {"name": "Bo"}


def test_cli_reads_typed_csv_columns(tmp_path: Path, capsys: Any) -> None:
    # A column says what its cells are (name:type); untyped ones stay text (a zip code keeps
    # its leading zero), and a colon followed by anything else is part of the name.
    db = tmp_path / "cjo.db"
    path = tmp_path / "people.csv"
    path.write_text(
        "customer_id,orders:number,vip:boolean,joined:datetime,zip,ratio:number,a:b\n"
        "c1,3,yes,2026-03-02T09:00:00+01:00,02134,0.5,x\n"
        "c2,many,true,,,,\n"
        "c3,,,2026-03-02,,,\n"
        "c4,-4,No,2026-03-02T09:00:00Z,,1e3,\n"
        "c5,nan,,,,,\n",
        encoding="utf-8",
    )
    assert main(["import", str(path), "--storage", f"sqlite:///{db}"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path}: 2 profiles imported, 3 records refused"
    assert lines[1] == ("  - line 3: column 'orders:number': 'many' is not a finite number "
                        "such as 42 or 9.5")
    assert lines[2].startswith("  - line 4: column 'joined:datetime': '2026-03-02' is not an "
                               "ISO 8601 date and time with an offset")
    assert lines[3].startswith("  - line 6: column 'orders:number': 'nan'")
    from cjo.storage.sqlite import SQLiteStorage

    with SQLiteStorage(db) as storage:
        engine = Engine(storage, clock=ManualClock(T0))
        p1, p4 = engine.profile("c1"), engine.profile("c4")
        assert p1 is not None and p4 is not None
        assert dict(p1.attributes) == {
            "orders": 3, "vip": True, "joined": datetime(2026, 3, 2, 8, 0, tzinfo=UTC),
            "zip": "02134", "ratio": 0.5, "a:b": "x",
        }
        assert dict(p4.attributes) == {"orders": -4, "vip": False, "joined": T0,
                                       "ratio": 1000.0}


def test_a_csv_attribute_named_twice_with_and_without_its_type_is_refused(
    tmp_path: Path, capsys: Any,
) -> None:
    path = tmp_path / "people.csv"
    path.write_text("customer_id,orders,orders:number\nc1,1,2\n", encoding="utf-8")
    assert main(["import", str(path)]) == 2
    assert "'orders' more than once" in capsys.readouterr().err


def test_cli_imports_json_lines(tmp_path: Path, capsys: Any) -> None:
    db = tmp_path / "cjo.db"
    path = tmp_path / "people.jsonl"
    rows = [
        json.dumps({"customer_id": "c1", "attributes": {"orders": 3, "vip": True}}),
        "",
        "{not json",
        json.dumps({"customer_id": "c2", "attributes": {"tags": ["a", "b"]}, "locale": "en"}),
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    status = main(["import", str(path), "--storage", f"sqlite:///{db}", "-v"])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.out.splitlines()[0] == f"{path}: 2 profiles imported, 1 record refused"
    assert captured.out.splitlines()[1].startswith("  - line 3: not JSON")
    assert "3 records read, 2 imported" in captured.err
    from cjo.storage.sqlite import SQLiteStorage

    with SQLiteStorage(db) as storage:
        p1 = Engine(storage, clock=ManualClock(T0)).profile("c1")
        assert p1 is not None and dict(p1.attributes) == {"orders": 3, "vip": True}


def test_cli_import_counts_read_as_english(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "many.csv"
    path.write_text("customer_id\n" + "".join(f"c{i}\n" for i in range(1200)), encoding="utf-8")
    assert main(["import", str(path), "-v", "--batch-size", "1199"]) == 0
    captured = capsys.readouterr()
    assert captured.out == (
        f"{path}: 1,200 profiles checked, 0 records refused "
        "(a dry run: --storage memory keeps nothing)\n"
    )
    assert captured.err.splitlines() == [
        "cjo import: 1,199 records read, 1,199 imported",
        "cjo import: 1,200 records read, 1,200 imported",
    ]
    one = tmp_path / "one.csv"
    one.write_text("customer_id\nc1\n", encoding="utf-8")
    assert main(["import", str(one), "-v"]) == 0
    assert capsys.readouterr().err == "cjo import: 1 record read, 1 imported\n"


def test_cli_import_usage_errors(tmp_path: Path, capsys: Any) -> None:
    assert main(["import", str(tmp_path / "missing.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err
    path = tmp_path / "bad.csv"
    path.write_text("id,name\n1,x\n", encoding="utf-8")
    assert main(["import", str(path)]) == 2
    assert "customer_id column" in capsys.readouterr().err
    ok = tmp_path / "ok.csv"
    ok.write_text("customer_id\nc1\n", encoding="utf-8")
    assert main(["import", str(ok), "--storage", "nosuch://x"]) == 2
    assert main(["import", str(ok)]) == 0
    assert capsys.readouterr().out.startswith(f"{ok}: 1 profile checked, 0 records refused")


def _imported(db: Path, *customer_ids: str) -> dict[str, dict[str, Any]]:
    from cjo.storage.sqlite import SQLiteStorage

    with SQLiteStorage(db) as storage:
        engine = Engine(storage, clock=ManualClock(T0))
        profiles = {cid: engine.profile(cid) for cid in customer_ids}
    return {cid: dict(p.attributes) for cid, p in profiles.items() if p is not None}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_cli_import_refuses_lines_that_are_not_utf8_and_keeps_the_others(
    tmp_path: Path, capsys: Any, suffix: str
) -> None:
    # A file saved as Latin-1 with one accented name among many UTF-8 lines: that line is
    # refused, the others (before and after, across transactions) are imported.
    if suffix == ".csv":
        head, rows = b"customer_id,name\n", [f"c{i},n{i}\n".encode() for i in range(5)]
        bad = b"ren,Ren\xe9\n"
    else:
        head = b""
        rows = [json.dumps({"customer_id": f"c{i}"}).encode() + b"\n" for i in range(5)]
        bad = b'{"customer_id": "ren", "attributes": {"name": "Ren\xe9"}}\n'
    path = tmp_path / f"people{suffix}"
    path.write_bytes(head + b"".join(rows[:3]) + bad + b"".join(rows[3:]))
    db = tmp_path / "cjo.db"
    status = main(["import", str(path), "--storage", f"sqlite:///{db}", "--batch-size", "2"])
    captured = capsys.readouterr()
    assert (status, captured.err) == (1, "")
    bad_line = 5 if suffix == ".csv" else 4
    assert captured.out.splitlines() == [
        f"{path}: 5 profiles imported, 1 record refused",
        f"  - line {bad_line}: not UTF-8 text (save the file as UTF-8)",
    ]
    assert sorted(_imported(db, "ren", *(f"c{i}" for i in range(5)))) == [
        f"c{i}" for i in range(5)
    ]


def test_cli_import_refuses_a_csv_header_that_is_not_utf8_before_reading_a_row(
    tmp_path: Path, capsys: Any
) -> None:
    # A Latin-1 export with an accented column name: one line saying so, not every row refused
    # for an attribute name holding an undecodable byte.
    path = tmp_path / "people.csv"
    path.write_bytes(b"customer_id,pr\xe9nom\nann,Ann\nbob,Bob\n")
    db = tmp_path / "cjo.db"
    assert main(["import", str(path), "--storage", f"sqlite:///{db}"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"cjo import: {path}: the CSV header row is not UTF-8 text (save "
                            "the file as UTF-8)\n")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_cli_import_reads_a_file_with_a_byte_order_mark(
    tmp_path: Path, capsys: Any, suffix: str
) -> None:
    # Spreadsheets save "CSV UTF-8" with a byte-order mark before the header.
    text = ("customer_id,name\nann,Ann\n" if suffix == ".csv"
            else '{"customer_id": "ann", "attributes": {"name": "Ann"}}\n')
    path = tmp_path / f"people{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    db = tmp_path / "cjo.db"
    assert main(["import", str(path), "--storage", f"sqlite:///{db}"]) == 0
    assert capsys.readouterr().out == f"{path}: 1 profile imported, 0 records refused\n"
    assert _imported(db, "ann") == {"ann": {"name": "Ann"}}


def test_cli_import_refuses_a_csv_header_naming_a_column_twice(
    tmp_path: Path, capsys: Any
) -> None:
    # Which of the two cells would win is a guess; unnamed columns (",,") stay allowed.
    path = tmp_path / "people.csv"
    path.write_text("customer_id,email,,email,\nann,a@x,,b@x,\n", encoding="utf-8")
    assert main(["import", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"cjo import: {path}: the CSV header names column(s) 'email' more "
                            "than once\n")
    path.write_text("customer_id,email,,\nann,a@x,,\n", encoding="utf-8")
    assert main(["import", str(path)]) == 0


def test_cli_import_memory_does_not_grow_with_the_length_of_the_file(
    tmp_path: Path, capsys: Any
) -> None:
    # Only the lines of the current batch and of refused records are kept to name lines:
    # ten thousand more good lines (one customer, so the storage does not grow) cost nothing.
    def peak(n: int) -> int:
        path = tmp_path / f"people{n}.csv"
        path.write_text("customer_id,orders:number\nann,x\n"
                        + "".join(f"ann,{i}\n" for i in range(n)), encoding="utf-8")
        tracemalloc.start()
        try:
            assert main(["import", str(path)]) == 1
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    growth = peak(12_000) - peak(2_000)
    out = capsys.readouterr().out
    assert out.count("  - line 2: column 'orders:number': 'x' is not a finite number") == 2
    assert growth < 100_000


@pytest.mark.parametrize("cell", ["1_000", "\u0661\u0662", "\u0663.\u0665", "1__0.5"])
def test_a_number_column_reads_only_plain_ascii_numbers(cell: str) -> None:
    # Python's int and float also read digit-group underscores and other scripts' digits:
    # a cell a spreadsheet would not take for a number is refused, not guessed at.
    rows = list(read_csv(io.StringIO(f"customer_id,orders:number\nann,{cell}\nbo,-12.5e1\n")))
    assert rows[0] == (2, Unreadable(
        f"column 'orders:number': {cell!r} is not a finite number such as 42 or 9.5"))
    assert rows[1] == (3, {"customer_id": "bo", "attributes": {"orders": -125.0}})


def test_a_quote_never_closed_is_reported_rather_than_swallow_the_lines_after_it() -> None:
    # A lenient reader took "Ann\nbo,Bo\ncy,Cy\n" as ann's name: bo and cy lost unnoticed.
    rows = list(read_csv(io.StringIO('customer_id,name\nzed,Zed\nann,"Ann\nbo,Bo\ncy,Cy\n')))
    assert rows == [
        (2, {"customer_id": "zed", "attributes": {"name": "Zed"}}),
        (3, Unreadable("not CSV: a quote opened on line 3 is never closed (lines 3 to 5 read "
                       "as one record)")),
    ]
    # A character after a closing quote refuses that line only; quoted line breaks and
    # doubled quotes are CSV.
    rows = list(read_csv(io.StringIO(
        'customer_id,name\nann,"Ann"x\nbo,"Bo\nB"\ncy,"Cy ""C"""\n'
    )))
    assert rows == [
        (2, Unreadable("not CSV: ',' expected after '\"'")),
        (4, {"customer_id": "bo", "attributes": {"name": "Bo\nB"}}),
        (5, {"customer_id": "cy", "attributes": {"name": 'Cy "C"'}}),
    ]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_cli_import_refuses_a_line_too_big_or_deep_to_read_and_keeps_the_others(
    tmp_path: Path, capsys: Any, suffix: str
) -> None:
    # A cell past the CSV reader's field limit, a line nesting deeper than the JSON parser
    # recurses: that line is refused, not the whole import ended by a traceback.
    if suffix == ".csv":
        text = "customer_id,name\nann,Ann\nbob," + "x" * 200_000 + "\ncy,Cy\n"
        reason = "not CSV: field larger than field limit (131072)"
    else:
        text = ('{"customer_id": "ann"}\n' + "[" * 100_000 + "]" * 100_000
                + '\n{"customer_id": "cy"}\n')
        reason = "not JSON: nests too deeply to read"
    path = tmp_path / f"people{suffix}"
    path.write_text(text, encoding="utf-8")
    db = tmp_path / "cjo.db"
    status = main(["import", str(path), "--storage", f"sqlite:///{db}"])
    captured = capsys.readouterr()
    assert (status, captured.err) == (1, "")
    bad_line = 3 if suffix == ".csv" else 2
    assert captured.out.splitlines() == [
        f"{path}: 2 profiles imported, 1 record refused", f"  - line {bad_line}: {reason}",
    ]
    assert sorted(_imported(db, "ann", "bob", "cy")) == ["ann", "cy"]


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_cli_import_stopped_by_a_signal_says_what_it_kept(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str, signal_name: str
) -> None:
    # Ctrl-C or a service manager's SIGTERM in the middle of an import: the transactions
    # already committed are kept, and the command says so (at least that many, no traceback),
    # with the shell's status for a command a signal ended.
    import re
    import signal
    import subprocess
    import sys

    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'cjo.db'}"
    else:
        url = (f"{request.getfixturevalue('postgres_dsn')}"
               f"?schema={request.getfixturevalue('postgres_schema')}")
    path = tmp_path / "people.csv"
    path.write_text("customer_id\n" + "".join(f"c{i}\n" for i in range(1_000_000)),
                    encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "cjo", "import", str(path), "--storage", url,
         "--batch-size", "100", "-v"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
    )
    assert process.stderr is not None
    assert process.stderr.readline().startswith("cjo import: 100 records read")
    process.send_signal(getattr(signal, signal_name))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + getattr(signal, signal_name)
    assert "Traceback" not in err and out == ""
    said = re.search(r"cjo import: interrupted: at least ([\d,]+) profiles imported, of the "
                     r"first ([\d,]+) records read; importing the file again is safe\n$", err)
    assert said is not None, err
    kept = int(said[1].replace(",", ""))
    with open_storage(url) as storage:
        engine = Engine(storage, clock=ManualClock(T0))
        stored = sum(engine.profile(f"c{i}") is not None for i in range(kept + 1000))
    assert 100 <= kept <= stored < 1_000_000


def test_cli_import_stops_at_the_next_batch_when_the_interrupt_was_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python drops an interrupt raised while it runs a finaliser or a callback: the signal
    # was received, but the import went on to the end and exited 0. It stops at the next
    # batch instead, saying what it kept, with the signal's status.
    import signal

    from cjo import cli

    path = tmp_path / "people.csv"
    path.write_text("customer_id\n" + "".join(f"c{i}\n" for i in range(1_000)), encoding="utf-8")
    real = cli._stop_if_asked
    calls = []

    def received_once_lost() -> None:
        calls.append(1)
        if len(calls) == 2:  # the signal came during the second batch, its interrupt lost
            cli._STOP.append(signal.SIGTERM)
        real()

    monkeypatch.setattr(cli, "_stop_if_asked", received_once_lost)
    db = tmp_path / "cjo.db"
    status = cli.main(["import", str(path), "--storage", f"sqlite:///{db}",
                       "--batch-size", "100"])
    captured = capsys.readouterr()
    assert status == 128 + signal.SIGTERM
    assert captured.out == ""
    assert captured.err == (
        "cjo import: interrupted: at least 200 profiles imported, of the first 200 records "
        "read; importing the file again is safe\n"
    )
    assert len(calls) == 2


def test_cli_import_after_a_stopped_one_runs_to_the_end_from_another_thread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A host that runs commands through main(): the stop asked of one command is not asked
    # of the next, even one run from a thread other than the main one (which installs no
    # signal handler of its own).
    import signal
    import threading

    from cjo import cli

    path = tmp_path / "people.csv"
    path.write_text("customer_id\n" + "".join(f"c{i}\n" for i in range(300)), encoding="utf-8")
    db = tmp_path / "cjo.db"
    argv = ["import", str(path), "--storage", f"sqlite:///{db}", "--batch-size", "100"]
    real = cli._stop_if_asked

    def stopped() -> None:
        cli._STOP.append(signal.SIGTERM)
        real()

    with monkeypatch.context() as patched:
        patched.setattr(cli, "_stop_if_asked", stopped)
        assert cli.main(argv) == 128 + signal.SIGTERM
    capsys.readouterr()
    statuses: list[int] = []
    worker = threading.Thread(target=lambda: statuses.append(cli.main(argv)))
    worker.start()
    worker.join()
    assert statuses == [0]
    assert "300 profiles imported" in capsys.readouterr().out


def test_cli_import_on_a_storage_that_fails_says_what_it_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database that turns read-only (or full, or a connection lost) under way: the failed
    # transaction rolls back, the ones before it are kept, and the command says so, with no
    # traceback.
    from cjo import StorageError

    real = Engine._handle_updates
    calls = []

    def failing_second(self: Engine, updates: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise StorageError("SQLite 'cjo.db': batch: commit failed: attempt to write a "
                               "readonly database")
        return real(self, updates)

    monkeypatch.setattr(Engine, "_handle_updates", failing_second)
    path = tmp_path / "people.csv"
    path.write_text("customer_id\n" + "".join(f"c{i}\n" for i in range(300)), encoding="utf-8")
    db = tmp_path / "cjo.db"
    status = main(["import", str(path), "--storage", f"sqlite:///{db}", "--batch-size", "100"])
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    assert captured.err == (
        "cjo import: SQLite 'cjo.db': batch: commit failed: attempt to write a readonly "
        "database: at least 100 profiles imported, of the first 100 records read; importing "
        "the file again is safe\n"
    )
    assert len(_imported(db, *(f"c{i}" for i in range(300)))) == 100

