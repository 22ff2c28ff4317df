"""What a host's ``mypy --strict`` makes of calls to cjo: documented calls pass, and calls a
constructor refuses at run time are type errors too (``py.typed`` promises both).

One mypy run over a snippet of host code; a line ending in ``# E: code`` must give exactly
that error, and every other line none.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api", reason="mypy is a development dependency")

HOST = '''
from __future__ import annotations

import io
import multiprocessing
from datetime import UTC, datetime, time, timedelta

from cjo import (ConsoleChannel, ContentItem, Definitions, Engine, Event, EventTrigger,
                 ExitCriterion, Journey, ManualClock, ProfileUpdate, QuietHours, Segment, Send,
                 SQLiteStorage, Taxonomy, Category, Variant, attr, run_worker)

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)

# Events and profile updates: their constructors take what they hold.
Event(customer_id="ann", name="signed_up", timestamp=T0, properties={"plan": "pro"})
Event(customer_id="ann", name="signed_up", timestamp=T0, event_id=None)
Event(customer_id=42, name="signed_up", timestamp=T0)  # E: arg-type
Event(customer_id="ann", name="signed_up", timestamp="2026-03-02")  # E: arg-type
Event(customer_id="ann", name="signed_up", timestamp=T0, properties=[("a", 1)])  # E: arg-type
ProfileUpdate("ann", {"plan": "pro"}, unset=["trial"], timezone="Europe/Paris", locale="fr")
ProfileUpdate("ann", unset="trial")
ProfileUpdate(42)  # E: arg-type
ProfileUpdate("ann", timezone=1)  # E: arg-type

# Definitions: lists where tuples are held, typed by their items.
email = Send("welcome", "email", tags=["lifecycle"], fallbacks=["sms"])
journey = Journey(id="welcome", entry="email", trigger=EventTrigger("signed_up"),
                  steps={"email": email}, exit_criteria=[ExitCriterion("left", event="left")])
item = ContentItem("welcome", variants=[Variant("email", {"subject": "Hi", "text": "Hello"})])
Definitions(journeys=[journey], segments=[Segment("pro", attr("plan") == "pro")],
            content=[item], taxonomy=Taxonomy([Category("lifecycle")]))
QuietHours("night", time(21), time(8), weekdays=[5, 6], channels=["sms"])
Journey(id="j", entry="a", steps={"a": "email"})  # E: dict-item
Journey(id="j", entry="a", steps={"a": email}, tags=[1])  # E: list-item
Definitions(journeys=[item])  # E: list-item
ContentItem("c", variants=[{"channel": "email"}])  # E: list-item
Variant("email", {"subject": 1})  # E: dict-item
QuietHours("night", time(21), time(8), weekdays={5, 6})  # E: arg-type

# A storage used as a context manager is still the adapter it was.
with SQLiteStorage(":memory:") as storage:
    same: SQLiteStorage = storage
    engine = Engine(storage=storage, channels={"log": ConsoleChannel(io.StringIO())},
                    clock=ManualClock(T0))
    engine.segment_sizes((s for s in ["pro"]), T0, every=timedelta(days=1))
    # Workers in processes stop on a multiprocessing.Event.
    run_worker(engine, stop=multiprocessing.Event(), max_iterations=1)
    engine.run_worker(stop=multiprocessing.Event(), max_iterations=1)
    run_worker(engine, stop=True)  # E: arg-type


class Lines:
    """Anything with write(str) is a console channel's stream."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.append(text)


ConsoleChannel(Lines())
ConsoleChannel(42)  # E: arg-type
'''


def _mypy(tmp_path: Path, source: str) -> list[tuple[int, str]]:
    host = tmp_path / "host.py"
    host.write_text(textwrap.dedent(source), encoding="utf-8")
    out, err, _status = api.run([
        "--strict", "--no-error-summary", "--show-error-codes", "--hide-error-context",
        "--no-pretty", "--cache-dir", str(tmp_path / ".mypy_cache"), str(host),
    ])
    assert not err, err
    found = []
    for line in out.splitlines():
        m = re.match(r".*host\.py:(\d+): error: .*\[([\w-]+)\]$", line)
        assert m or ": note:" in line, line
        if m:
            found.append((int(m[1]), m[2]))
    return found


def test_a_typed_hosts_calls_are_checked_against_what_cjo_takes(tmp_path: Path) -> None:
    expected = [
        (number, line.rsplit("# E: ", 1)[1].strip())
        for number, line in enumerate(textwrap.dedent(HOST).splitlines(), start=1)
        if "# E: " in line
    ]
    assert sorted(set(_mypy(tmp_path, HOST))) == expected
