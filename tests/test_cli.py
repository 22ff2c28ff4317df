"""``cjo validate`` and the storage URLs the command line accepts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cjo import Engine, InMemoryStorage, dumps_definitions
from cjo.cli import main
from cjo.demo import shop_definitions
from cjo.errors import StorageError, UsageError
from cjo.storage.url import open_storage, redact_url, storage_kind


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    path = tmp_path / "shop.json"
    path.write_text(dumps_definitions(shop_definitions()), encoding="utf-8")
    return path


def broken(tmp_path: Path, edit) -> Path:
    data = json.loads(dumps_definitions(shop_definitions()))
    edit(data)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_validate_ok(good_file, capsys):
    assert main(["validate", str(good_file)]) == 0
    out = capsys.readouterr().out
    assert out == f"{good_file}: OK (3 journeys, 0 segments, 4 content items)\n"


def test_validate_ok_with_the_channels_it_uses(good_file, capsys):
    assert main(["validate", str(good_file), "--channels", "email, sms,push"]) == 0
    assert "OK" in capsys.readouterr().out


def test_validate_reports_unregistered_channels(good_file, capsys):
    assert main(["validate", str(good_file), "--channels", "email"]) == 1
    out = capsys.readouterr().out
    assert "channel 'sms' is not registered" in out
    assert "channel 'push' is not registered" in out


def test_validate_lists_every_meaning_problem(tmp_path, capsys):
    def edit(data):
        steps = data["journeys"][1]["steps"]
        steps["email"]["content"] = "nope"
        steps["sms"]["next"] = "nowhere"
        data["content"][0]["tags"] = ["not/a/tag"]

    path = broken(tmp_path, edit)
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"{path}: 3 problems"
    assert "  - journey 'abandoned_cart' v1 / step 'email': content 'nope' does not exist" in lines
    assert any("step 'sms'" in x and "missing step 'nowhere'" in x for x in lines)
    assert any("content 'welcome'" in x and "'not/a/tag'" in x for x in lines)


def test_validate_refuses_a_later_version_that_changes_a_launched_split(tmp_path, capsys):
    # Publishing v1 then v2 is refused (customers would move between arms): so is the file.
    def journey(version, shares):
        return {"id": "exp", "version": version, "trigger": {"kind": "event", "event": "go"},
                "entry": "ab", "steps": {"ab": {"kind": "split", "paths": [
                    {"name": "a", "weight": shares[0], "next": None},
                    {"name": "b", "weight": shares[1], "next": None}]}}}

    path = tmp_path / "exp.json"
    path.write_text(json.dumps({"journeys": [journey(1, (1, 1)), journey(2, (3, 1))]}))
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "journey 'exp' v2 / step 'ab': the split was launched in v1 with arms" in out
    path.write_text(json.dumps({"journeys": [journey(1, (1, 1)), journey(2, (50, 50))]}))
    assert main(["validate", str(path)]) == 0


def test_validate_reports_shape_problems(tmp_path, capsys):
    def edit(data):
        data["journeys"][0]["steps"]["wait_2d"]["duration"] = "two days"

    path = broken(tmp_path, edit)
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: 1 problem\n")
    assert "wait_2d" in out


def test_validate_reports_what_cannot_be_read_with_every_other_problem(tmp_path, capsys):
    def edit(data):
        data["journeys"][0]["steps"]["wait_2d"]["duration"] = "two days"
        data["journeys"][1]["steps"]["sms"]["next"] = "nowhere"
        # what names the content item that cannot be read is not refused for it
        data["content"][2]["variants"][0]["fields"]["subject"] = 5

    path = broken(tmp_path, edit)
    assert main(["validate", str(path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: 3 problems",
        "  - $.journeys[0].steps['wait_2d'].duration: not a duration: 'two days' (use seconds "
        "or a string like '4h' or '1d12h')",
        "  - $.content[2].variants[0].fields['subject']: expected a string, got 5",
        "  - journey 'abandoned_cart' v1 / step 'sms': next refers to missing step 'nowhere'",
    ]


def test_validate_reports_bad_json(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text('{"journeys": [', encoding="utf-8")
    assert main(["validate", str(path)]) == 1
    assert "invalid JSON" in capsys.readouterr().out


def test_validate_missing_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "none.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_validate_refuses_a_file_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe{}")
    assert main(["validate", str(path)]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_validate_reads_a_file_with_a_byte_order_mark(good_file, capsys):
    good_file.write_bytes(b"\xef\xbb\xbf" + good_file.read_bytes())
    assert main(["validate", str(good_file)]) == 0
    assert capsys.readouterr().out == (f"{good_file}: OK (3 journeys, 0 segments, "
                                       "4 content items)\n")


def test_version_prints_the_installed_version(capsys):
    import importlib.metadata

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"cjo {importlib.metadata.version('cjo')}\n"


def test_demo_help_names_every_journey(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    # argparse wraps lines at hyphens too
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
    assert "welcome series" in text and "abandoned-cart" in text and "win-back" in text


def test_demo_help_says_what_its_storage_option_does(capsys):
    # The demo reads no file: its in-memory run keeps nothing, and that is all there is to say.
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "file" not in text
    assert "memory (the default: keeps nothing when the demo ends)" in text


@pytest.mark.parametrize(("option", "value", "says"), [
    ("--days", "inf", "must be from 0.001 to 3650, got inf"),
    ("--days", "1e308", "must be from 0.001 to 3650"),
    ("--days", "nan", "must be from 0.001 to 3650"),
    ("--days", "0.0000001", "must be from 0.001 to 3650"),  # shorter than a second
    ("--days", "x", "expected a number, got 'x'"),
    ("--tick", "inf", "must be from 0.02 to 1440, got inf"),
    ("--tick", "1e-9", "must be from 0.02 to 1440"),  # rounds to no time at all
    ("--customers", "99999999999999999999", "must be at most 1,000,000"),
    ("--customers", "abc", "expected a whole number, got 'abc'"),
])
def test_demo_refuses_out_of_range_options_as_usage_errors(option, value, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--customers", "5", "--days", "1", option, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {says}" in err
    assert "Traceback" not in err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli(good_file):
    done = subprocess.run(
        [sys.executable, "-m", "cjo", "validate", str(good_file)],
        capture_output=True, text=True, check=False,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
    )
    assert (done.returncode, done.stdout.strip().endswith("OK (3 journeys, 0 segments, "
                                                          "4 content items)")) == (0, True)


# --- storage URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["memory", "memory://", " memory "])
def test_memory_urls(url):
    assert isinstance(open_storage(url), InMemoryStorage)
    assert storage_kind(url) == "memory"


@pytest.mark.parametrize(("url", "kind"), [
    ("sqlite:///shop.db", "sqlite"),
    ("sqlite:////tmp/shop.db", "sqlite"),
    ("postgresql://cjo@localhost/cjo", "postgresql"),
    ("postgres://cjo@localhost/cjo", "postgresql"),
])
def test_sql_url_kinds(url, kind):
    assert storage_kind(url) == kind


@pytest.mark.parametrize("url", ["mysql://x/y", "shop.db", "", "sqlite", "redis://a:secret@h/0"])
def test_unknown_urls_raise_storage_error_naming_the_url(url):
    with pytest.raises(StorageError, match="unknown storage URL") as info:
        open_storage(url)
    assert redact_url(url) in str(info.value)
    assert "secret" not in str(info.value)


def test_missing_adapter_is_a_clear_storage_error(monkeypatch):
    # Simulate an adapter (or its driver) that is not installed.
    monkeypatch.setitem(sys.modules, "cjo.storage.postgres", None)
    with pytest.raises(StorageError, match=r"cjo\.storage\.postgres is not available") as info:
        open_storage("postgresql://u:hunter2@localhost/db")
    assert "hunter2" not in str(info.value)
    assert "postgresql://u:***@localhost/db" in str(info.value)


def test_sqlite_url_opens_the_sqlite_adapter(tmp_path):
    pytest.importorskip("cjo.storage.sqlite")
    storage = open_storage(f"sqlite:///{tmp_path / 'shop.db'}")
    try:
        assert type(storage).__name__ == "SQLiteStorage"
    finally:
        storage.close()


@pytest.mark.parametrize("command", [["demo"], ["import", "people.csv"]])
def test_a_postgresql_server_that_refuses_is_one_clear_line_at_once(
    command, tmp_path, monkeypatch, capsys
):
    pytest.importorskip("psycopg")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "people.csv").write_text("customer_id\nann\n", encoding="utf-8")
    # Nothing listens on port 1: the pool used to retry for 30 s, logging every attempt, and
    # then report only that it had waited.
    began = time.monotonic()
    assert main([*command, "--storage", "postgresql://nobody:pw@127.0.0.1:1/db"]) == 2
    assert time.monotonic() - began < 10
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"cjo {command[0]}: PostgreSQL: ") and "refused" in err


def test_redact_url():
    assert redact_url("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("memory") == "memory"
    # libpq takes the password as a query parameter too; a fragment is never needed.
    assert (redact_url("postgresql://u@h/db?sslmode=require&password=pw#x")
            == "postgresql://u@h/db?sslmode=***&password=***")
    assert redact_url("sqlite://u:pw@x/y.db") == "sqlite://u:***@x/y.db"
    assert (redact_url("postgresql://u@h/db?schema=shop&password=pw")
            == "postgresql://u@h/db?schema=shop&password=***")


@pytest.mark.parametrize("url", [
    "postgresql://app:hunter2@db.example/shop",
    "postgresql://app@db.example/shop?password=hunter2",
])
def test_a_url_given_as_the_engine_storage_is_refused_without_its_password(url):
    # The error says to open the URL with open_storage; it reaches logs, so the password stays out.
    with pytest.raises(UsageError, match="open_storage") as info:
        Engine(storage=url)
    assert "hunter2" not in str(info.value)
    assert redact_url(url) in str(info.value)


def test_a_bad_sqlite_url_is_refused_without_its_password():
    with pytest.raises(StorageError, match="bad SQLite URL") as info:
        open_storage("sqlite://app:hunter2@x/y.db")
    assert "hunter2" not in str(info.value)


def test_a_postgresql_url_names_the_schema_the_host_keeps_cjo_in(
    postgres_dsn, postgres_schema, tmp_path, capsys
):
    # A host running PostgresStorage(dsn, schema=...) imports into that schema, not into a
    # new "cjo" schema beside it.
    from cjo.storage.postgres import PostgresStorage

    people = tmp_path / "people.csv"
    people.write_text("customer_id,plan\nann,pro\n", encoding="utf-8")
    url = f"{postgres_dsn}?schema={postgres_schema}"
    assert main(["import", str(people), "--storage", url]) == 0, capsys.readouterr().err
    with PostgresStorage(postgres_dsn, schema=postgres_schema) as storage:
        record = storage.peek("ann")
        assert record is not None and record.profile.attributes == {"plan": "pro"}
    with open_storage(url) as storage:
        assert storage.peek("ann") is not None


@pytest.mark.parametrize(("query", "says"), [
    ("schema=a&schema=b", "schema is given 2 times"),
    ("schema=", "invalid schema name ''"),
    ("schema=no-dashes", "invalid schema name 'no-dashes'"),
])
def test_a_bad_schema_in_a_postgresql_url_is_refused_before_connecting(query, says):
    pytest.importorskip("psycopg")
    # Nothing listens on port 1: the schema is refused before any connection is tried.
    with pytest.raises(StorageError, match=says):
        open_storage(f"postgresql://nobody@127.0.0.1:1/db?{query}")


def test_a_storage_that_fails_under_any_command_is_named_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database that turns read-only under way: one line naming what failed, status 2.
    def failing(*_args: Any, **_kwargs: Any) -> Any:
        raise StorageError("SQLite 'demo.db': append_definitions failed: attempt to write a "
                           "readonly database")

    monkeypatch.setattr(Engine, "publish", failing)
    status = main(["demo", "--days", "1", "--customers", "5",
                   "--storage", f"sqlite:///{tmp_path / 'demo.db'}"])
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    assert captured.err == ("cjo demo: SQLite 'demo.db': append_definitions failed: attempt to "
                            "write a readonly database\n")


def test_a_signal_the_command_was_started_ignoring_stays_ignored(good_file, monkeypatch):
    # A shell script's background job starts with SIGINT ignored: the Ctrl-C meant for the
    # foreground command does not stop it (Python itself leaves such a signal ignored).
    import os
    import signal

    from cjo import cli

    real = cli._validate

    def interrupted(args: Any, out: Any, err: Any) -> int:
        os.kill(os.getpid(), signal.SIGINT)
        return real(args, out, err)

    monkeypatch.setattr(cli, "_validate", interrupted)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert main(["validate", str(good_file)]) == 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
