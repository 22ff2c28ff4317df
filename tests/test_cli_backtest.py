"""``cjo backtest`` and ``cjo.streams``: past inputs from JSON lines, run over definitions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cjo import (
    ContentItem,
    Event,
    EventTrigger,
    InvalidEventError,
    Journey,
    ProfileUpdate,
    Send,
    Variant,
    Wait,
    dumps_definitions,
    read_inputs,
)
from cjo.analytics import report_data
from cjo.cli import main
from cjo.demo import profile_from_signup, shop_definitions, shop_workload
from cjo.model.definitions import Definitions
from cjo.simulate import backtest
from cjo.streams import input_from_json

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _line(item: Event | ProfileUpdate, at: datetime | None = None) -> str:
    if isinstance(item, Event):
        record: dict[str, Any] = {
            "customer_id": item.customer_id, "name": item.name,
            "timestamp": item.timestamp.isoformat(), "properties": dict(item.properties),
            "event_id": item.event_id,
        }
    else:
        record = {"type": "profile", "customer_id": item.customer_id,
                  "attributes": dict(item.attributes), "timezone": item.timezone,
                  "locale": item.locale}
        if at is not None:
            record["timestamp"] = at.isoformat()
    return json.dumps(record) + "\n"


@pytest.fixture
def shop(tmp_path: Path) -> tuple[Path, Path, list[Any]]:
    """The demo shop's definitions and two weeks of its workload, as files and as inputs."""
    definitions = tmp_path / "shop.json"
    definitions.write_text(dumps_definitions(shop_definitions()), encoding="utf-8")
    inputs: list[Any] = []
    lines = []
    for event in shop_workload(200, 21, 3):
        if event.name == "signed_up":
            update = profile_from_signup(event)
            inputs.append((event.timestamp, update))
            lines.append(_line(update, event.timestamp))
        inputs.append(event)
        lines.append(_line(event))
    stream = tmp_path / "events.jsonl"
    stream.write_text("".join(lines), encoding="utf-8")
    return definitions, stream, inputs


def test_the_command_reports_what_the_api_back_test_decides(shop, capsys) -> None:
    definitions, stream, inputs = shop
    assert main(["backtest", str(definitions), str(stream)]) == 0
    out = capsys.readouterr().out
    expected = backtest(shop_definitions(), inputs)
    assert expected.messages_total > 0 and expected.entered["win_back"] > 0
    first, second = out.split("\n")[:2]
    assert first.startswith(
        f"{len(inputs):,} inputs ({expected.events:,} events, "
        f"{expected.profile_updates:,} profile updates) from "
    )
    assert second == "messages: " + ", ".join(
        f"{c} {n:,}" for c, n in sorted(expected.messages.items()))
    assert expected.table() in out


def test_the_command_prints_json_when_asked(shop, capsys) -> None:
    definitions, stream, inputs = shop
    assert main(["backtest", str(definitions), str(stream), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = backtest(shop_definitions(), inputs)
    assert (data["inputs"], data["events"], data["profile_updates"]) == (
        expected.inputs, expected.events, expected.profile_updates)
    assert data["messages"] == dict(expected.messages)
    assert data["goals"] == dict(expected.goals) and data["ended"] == dict(expected.ended)
    assert data["reports"] == json.loads(json.dumps(
        [report_data(r) for r in expected.reports.values()]))
    assert data["start"] == inputs[0][0].isoformat()


def test_the_files_inputs_equal_the_ones_written(shop) -> None:
    _, stream, inputs = shop
    with stream.open(encoding="utf-8") as lines:
        assert list(read_inputs(lines, in_order=True)) == inputs


def test_until_stops_the_run_and_render_renders(tmp_path: Path, capsys) -> None:
    journey = Journey("j", trigger=EventTrigger("go"), entry="s", steps={
        "s": Send("hello", "email", next="w"), "w": Wait(timedelta(days=2), next="t"),
        "t": Send("hello", "email")})
    content = ContentItem("hello", (Variant(
        "email", {"subject": "Hi", "text": "{{ 10 | divided_by: profile.zero }}"}),))
    definitions = tmp_path / "d.json"
    definitions.write_text(dumps_definitions(Definitions(journeys=(journey,),
                                                         content=(content,))))
    stream = tmp_path / "in.jsonl"
    stream.write_text(
        json.dumps({"type": "profile", "customer_id": "ann", "attributes": {"zero": 0}})
        + "\n" + json.dumps({"customer_id": "ann", "name": "go", "timestamp": "2026-03-02T09:00Z"})
        + "\n"
    )
    until = "2026-03-03T09:00:00+00:00"
    assert main(["backtest", str(definitions), str(stream), "--until", until]) == 0
    out = capsys.readouterr().out
    assert f"to {until}" in out and "messages: email 1\n" in out  # the second is not due yet
    # A division by zero fails to render: only a run that renders finds it.
    assert main(["backtest", str(definitions), str(stream), "--render"]) == 0
    assert "messages: none" in capsys.readouterr().out


@pytest.mark.parametrize(("lines", "why"), [
    ('{"customer_id": "a", "nmae": "x", "timestamp": "2026-03-02T09:00:00Z"}',
     "line 2: unknown key(s) 'nmae' (did you mean 'name'?)"),
    ('{"customer_id": "a", "name": "x", "timestamp": "2026-03-02T09:00:00"}',
     "line 2: timestamp '2026-03-02T09:00:00' has no UTC offset"),
    ('{"customer_id": "a", "name": "x", "timestamp": 1772442000}',
     "line 2: timestamp must be an ISO 8601 string with a UTC offset, got a number"),
    ('{"customer_id": "a", "name": "x", "timestamp": "2026-03-01T09:00:00Z"}',
     "line 2: stamped 2026-03-01T09:00:00+00:00, before line 1"),
    ('{"customer_id": "a", "name": "x"}', "line 2: timestamp is missing"),
    ('{"type": "visit", "customer_id": "a"}', "line 2: type must be 'event' or 'profile'"),
    ('{"type": "profile", "customer_id": "a", "attributes": [1]}',
     "line 2: attributes must be a JSON object, got a list"),
    ('{"customer_id": 7, "name": "x", "timestamp": "2026-03-02T09:00:00Z"}',
     "line 2: customer_id must be a non-empty string, got 7"),
    ("[1, 2]", "line 2: expected a JSON object, got a list"),
    ("{not json", "line 2: not JSON"),
])
def test_a_line_that_cannot_be_read_is_named(
    tmp_path: Path, capsys, lines: str, why: str
) -> None:
    definitions = tmp_path / "d.json"
    definitions.write_text(dumps_definitions(shop_definitions()))
    stream = tmp_path / "in.jsonl"
    first = '{"customer_id": "a", "name": "x", "timestamp": "2026-03-02T09:00:00Z"}'
    stream.write_text(f"{first}\n{lines}\n")
    assert main(["backtest", str(definitions), str(stream)]) == 1
    assert f"cjo backtest: {stream}: {why}" in capsys.readouterr().err


def test_bad_definitions_and_arguments(tmp_path: Path, capsys) -> None:
    definitions = tmp_path / "d.json"
    definitions.write_text('{"journeys": [{"id": "j"}]}')
    stream = tmp_path / "in.jsonl"
    stream.write_text("")
    assert main(["backtest", str(definitions), str(stream)]) == 1
    assert "$.journeys[0].entry: required field missing" in capsys.readouterr().out
    assert main(["backtest", str(tmp_path / "none.json"), str(stream)]) == 2
    assert "cannot read" in capsys.readouterr().err
    definitions.write_text(dumps_definitions(shop_definitions()))
    assert main(["backtest", str(definitions), str(stream), "--timezone", "Mars/Base"]) == 2
    assert "'Mars/Base' is not a known IANA time zone" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["backtest", str(definitions), str(stream), "--until", "2026-03-03"])
    assert "has no UTC offset" in capsys.readouterr().err


def test_input_from_json_reads_each_kind() -> None:
    assert input_from_json({"customer_id": "a", "name": "go",
                            "timestamp": "2026-03-02T10:00:00+01:00", "event_id": "e1",
                            "properties": {"n": 1}}) == Event(
        customer_id="a", name="go", timestamp=T0, properties={"n": 1}, event_id="e1")
    assert input_from_json({"type": "profile", "customer_id": "a",
                            "attributes": {"plan": "pro"}, "unset": ["old"],
                            "timezone": "Europe/Paris", "locale": "fr-FR"}) == ProfileUpdate(
        "a", {"plan": "pro"}, ("old",), "Europe/Paris", "fr-FR")
    assert input_from_json({"type": "profile", "customer_id": "a",
                            "timestamp": "2026-03-02T09:00:00Z"}) == (T0, ProfileUpdate("a"))
    # Without an id, each line is an event of its own.
    first, second = (input_from_json({"customer_id": "a", "name": "go",
                                      "timestamp": "2026-03-02T09:00:00Z"}) for _ in range(2))
    assert isinstance(first, Event) and isinstance(second, Event)
    assert first.event_id != second.event_id
    with pytest.raises(InvalidEventError, match="a profile update has type, customer_id"):
        input_from_json({"type": "profile", "customer_id": "a", "name": "x"})
