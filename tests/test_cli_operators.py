"""``cjo report``, ``cjo dead-letters`` and ``cjo set-aside``: what an operator reads from the
storage a running engine uses."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cjo import (
    Channel,
    ContentItem,
    DeliveryResult,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    Message,
    Send,
    Variant,
)
from cjo.analytics import journey_report, report_data
from cjo.cli import main
from cjo.storage.url import open_storage, redact_url

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MAIL = ContentItem("hi", (Variant("email", {"subject": "Hi", "text": "Hello"}),))


class Refusing(Channel):
    """Refuses every address it is given but ann's."""

    def send(self, message: Message) -> DeliveryResult:
        if message.customer_id == "ann":
            return DeliveryResult()
        return DeliveryResult.permanent("mailbox full", unreachable=False)


@pytest.fixture(params=["sqlite", "postgres"])
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a storage where bob's and cy's welcome mails became dead letters and dan's
    record was set aside."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shop.db'}"
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        url = f"{dsn}?schema={request.getfixturevalue('postgres_schema')}"
    storage = open_storage(url)
    engine = Engine(storage, {"email": Refusing()}, ManualClock(T0))
    engine.publish(content=[MAIL], journeys=[
        Journey("welcome", trigger=EventTrigger("signed_up"), entry="mail",
                steps={"mail": Send("hi", "email")}),
    ])
    engine.handle_events([Event(c, "signed_up", T0, event_id=f"s-{c}")
                          for c in ("ann", "bob", "cy")])
    engine.identify("dan", {})
    with storage.batch(["dan"], T0) as sessions:
        sessions["dan"].set_aside("cannot be decoded: a test")
    storage.close()
    return url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_dead_letters_are_listed_then_retried_or_discarded(
    shop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "dead-letters", "--storage", shop)
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "2 dead letters"
    assert "customer bob, email, welcome/mail, dead 2026-03-02 09:00 UTC after 1 attempt: " \
           "mailbox full" in out
    assert "customer cy," in out and "customer ann," not in out
    keys = [line.strip() for line in lines[1:] if line.startswith("  welcome:")]
    assert len(keys) == 2

    assert run(capsys, "dead-letters", "--storage", shop, "--limit", "1")[1].startswith(
        "1 dead letter (the newest; more with a larger --limit)\n")
    status, out, err = run(capsys, "dead-letters", "--storage", shop, "--retry", keys[0], "nope")
    assert (status, out, err) == (1, f"retried {keys[0]}\n",
                                  "cjo dead-letters: no dead letter nope\n")
    status, out, _ = run(capsys, "dead-letters", "--storage", shop, "--discard", keys[1])
    assert (status, out) == (0, f"discarded {keys[1]}\n")
    assert run(capsys, "dead-letters", "--storage", shop)[1] == "0 dead letters\n"
    with open_storage(shop) as storage:
        entry = storage.outbox_entry(keys[0])
    assert entry is not None and entry.status == "pending"  # for the worker to send


def test_records_set_aside_are_listed(shop: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "set-aside", "--storage", shop)
    assert (status, out) == (
        0, "1 record set aside\n  dan, 2026-03-02 09:00 UTC: cannot be decoded: a test\n")


def test_report_prints_the_stored_journeys(shop: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "report", "--storage", shop)
    assert status == 0
    assert "welcome" in out and "delivery failed 2" in out
    assert run(capsys, "report", "--storage", shop, "welcome")[1] == out
    status, _, err = run(capsys, "report", "--storage", shop, "welcom")
    assert (status, err) == (2, "cjo report: no journey 'welcom' is published "
                                "(published: welcome)\n")


def test_report_json_is_the_reports_data(shop: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "report", "--storage", shop, "--json")
    assert status == 0
    (data,) = json.loads(out)
    with open_storage(shop) as storage:
        journey = max(Engine(storage).definitions.journeys, key=lambda j: j.version)
        assert data == json.loads(json.dumps(report_data(journey_report(storage, journey))))
    assert data["journey_id"] == "welcome" and data["delivery_failed"] == 2
    assert data["steps"][0]["step_id"] and "sent_total" in data["steps"][0]


def test_a_journey_named_twice_is_reported_once(
    shop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two tables of the same journey would read as two journeys, or as counts doubled.
    status, once, _ = run(capsys, "report", "--storage", shop, "welcome")
    assert status == 0
    assert run(capsys, "report", "--storage", shop, "welcome", "welcome")[1] == once
    status, _, err = run(capsys, "report", "--storage", shop, "welcom", "welcom")
    assert (status, err) == (2, "cjo report: no journey 'welcom' is published "
                                "(published: welcome)\n")


@pytest.mark.parametrize("command", ["report", "dead-letters", "set-aside"])
def test_a_storage_that_holds_nothing_is_refused(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, command, "--storage", "memory")
    assert status == 2 and "--storage memory holds nothing" in err
    missing = tmp_path / "typo.db"
    status, _, err = run(capsys, command, "--storage", f"sqlite:///{missing}")
    assert (status, err) == (2, f"cjo {command}: no SQLite database at {missing}\n")
    assert not missing.exists()  # not made empty by looking
    status, _, err = run(capsys, command, "--storage", "mysql://x")
    assert status == 2 and "unknown storage URL" in err


@pytest.fixture(params=["sqlite", "postgres"])
def not_cjos(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Callable[[], object]]:
    """The URL of a database another application owns (a SQLite file, a PostgreSQL schema
    with a table of its own), and what it holds."""
    if request.param == "sqlite":
        path = tmp_path / "app.db"
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE users (id INTEGER)")
            conn.commit()

        def sqlite_tables() -> object:
            with closing(sqlite3.connect(path)) as conn:
                return conn.execute("SELECT name FROM sqlite_master").fetchall()

        return f"sqlite:///{path}", sqlite_tables
    import psycopg

    dsn = request.getfixturevalue("postgres_dsn")
    schema = request.getfixturevalue("postgres_schema")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.users (id integer)")

    def postgres_tables() -> object:
        with psycopg.connect(dsn) as conn:
            return conn.execute("SELECT table_name FROM information_schema.tables "
                                "WHERE table_schema = %s", [schema]).fetchall()

    return f"{dsn}?schema={schema}", postgres_tables


@pytest.mark.parametrize("command", ["report", "dead-letters", "set-aside"])
def test_a_database_that_is_not_cjos_is_refused_and_left_as_it_was(
    command: str, not_cjos: tuple[str, Callable[[], object]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, tables = not_cjos
    before = tables()
    status, out, err = run(capsys, command, "--storage", url)
    assert (status, out) == (2, "")
    assert err == (f"cjo {command}: {redact_url(url)} holds no cjo storage: give the URL of "
                   "the storage the engine runs on\n")
    assert tables() == before  # cjo's tables were not made by looking


@pytest.mark.parametrize("command", ["report", "dead-letters", "set-aside"])
def test_a_postgresql_schema_that_does_not_exist_is_refused_not_made(
    command: str, postgres_dsn: str, postgres_schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import psycopg

    url = f"{postgres_dsn}?schema={postgres_schema}"
    status, _, err = run(capsys, command, "--storage", url)
    assert (status, err) == (2, f"cjo {command}: {redact_url(url)} holds no cjo storage: give "
                                "the URL of the storage the engine runs on\n")
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                            [postgres_schema]).fetchone() is None


@pytest.mark.parametrize("command", ["report", "dead-letters", "set-aside"])
def test_a_postgresql_url_without_the_driver_names_the_extra(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As if psycopg were not installed: the adapter's import fails on it.
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "cjo.storage.postgres", raising=False)
    status, out, err = run(capsys, command, "--storage", "postgresql://u:hunter2@h/db")
    assert (status, out) == (2, "")
    assert err.startswith(f"cjo {command}: cannot open postgresql://u:***@h/db: ")
    assert 'pip install "cjo[postgres]"' in err and err.count("\n") == 1


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_a_private_sqlite_memory_database_holds_nothing_either(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "dead-letters", "--storage", url)
    assert (status, out) == (2, "")
    assert "holds nothing: give the URL of the storage the engine runs on" in err
