"""``cjo backtest`` and ``cjo.streams``: past inputs from JSON lines, run over definitions."""

from __future__ import annotations

import json
from collections.abc import Iterator
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
    UsageError,
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
    ('{"customer_id": "a", "name": "x", "timestamp": true}',
     "line 2: timestamp must be an ISO 8601 string with a UTC offset or a number (Unix epoch "
     "seconds), got a boolean"),
    ('{"customer_id": "a", "name": "x", "timestamp": null}',
     "line 2: timestamp must be an ISO 8601 string with a UTC offset or a number (Unix epoch "
     "seconds), got null"),
    ('{"customer_id": "a", "name": "x", "timestamp": NaN}',
     "line 2: timestamp must be a finite number, got NaN"),
    ('{"customer_id": "a", "name": "x", "timestamp": Infinity}',
     "line 2: timestamp must be a finite number, got Infinity"),
    ('{"customer_id": "a", "name": "x", "timestamp": -1772442000}',
     "line 2: timestamp -1772442000 is negative: Unix epoch seconds count from 1970-01-01"),
    ('{"customer_id": "a", "name": "x", "timestamp": 1772442000000}',
     "line 2: timestamp 1772442000000 is too large for Unix epoch seconds (after 5138-11-16): "
     "if it is in milliseconds, read the stream with timestamp_unit='ms' (cjo backtest "
     "--timestamp-unit ms)"),
    ('{"customer_id": "a", "name": "x", "timestamp": 1e300}',
     "line 2: timestamp 1e+300 is too large for Unix epoch seconds"),
    ('{"customer_id": "a", "name": "x", "timestamp": ' + "9" * 400 + "}",
     "line 2: timestamp 9999999999999999999999999999999999999... is too large for Unix epoch "
     "seconds"),
    ('{"type": "profile", "customer_id": "a", "timestamp": 17724420000000}',
     "line 2: timestamp 17724420000000 is too large for Unix epoch seconds"),
    ('{"customer_id": "a", "name": "x", "timestamp": 1772402400}',
     "line 2: stamped 2026-03-01T22:00:00+00:00, before line 1"),
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


@pytest.mark.parametrize("end", ["\n", "\r\n", ""])
def test_a_line_cut_short_is_named_as_such_by_its_column(tmp_path: Path, capsys, end: str) -> None:
    # An export cut mid-record: the string left open is what is wrong, at that column (the
    # line end is not part of the record, and the parser's "line 1" is not the file's line).
    definitions = tmp_path / "d.json"
    definitions.write_text(dumps_definitions(shop_definitions()))
    stream = tmp_path / "in.jsonl"
    first = '{"customer_id": "a", "name": "x", "timestamp": "2026-03-02T09:00:00Z"}'
    stream.write_text(f"{first}{end or chr(10)}{first[:40]}{end}", newline="")
    assert main(["backtest", str(definitions), str(stream)]) == 1
    assert capsys.readouterr().err == (
        f"cjo backtest: {stream}: line 2: not JSON: Unterminated string starting at column 35\n"
    )


def test_a_line_stamped_before_start_is_named_by_its_line(tmp_path: Path, capsys) -> None:
    # --start after the export's first instant: the line is named, as an input out of order
    # is, not the input's position in the stream (which counts from 0 and skips blank lines).
    definitions = tmp_path / "d.json"
    definitions.write_text(dumps_definitions(shop_definitions()))
    stream = tmp_path / "in.jsonl"
    stream.write_text('{"type": "profile", "customer_id": "a", "attributes": {}}\n\n'
                      '{"customer_id": "a", "name": "x", "timestamp": "2026-03-02T09:00:00Z"}\n')
    assert main(["backtest", str(definitions), str(stream),
                 "--start", "2026-03-03T00:00:00Z"]) == 1
    assert capsys.readouterr().err == (
        f"cjo backtest: {stream}: line 3: stamped 2026-03-02T09:00:00+00:00, before the start "
        "of the run (2026-03-03T00:00:00+00:00): the inputs must be in time order\n"
    )


def test_read_inputs_refuses_a_line_before_start_and_a_start_without_offset() -> None:
    line = '{"customer_id": "a", "name": "x", "timestamp": "2026-03-02T09:00:00Z"}'
    assert len(list(read_inputs([line], in_order=True, start=T0))) == 1
    with pytest.raises(InvalidEventError, match=r"^line 1: stamped .* before the start"):
        list(read_inputs([line], in_order=True, start=T0 + timedelta(seconds=1)))
    with pytest.raises(UsageError, match="start must be a datetime with a UTC offset"):
        read_inputs([line], in_order=True, start=datetime(2026, 3, 2))


def _numbered(tmp_path: Path, lines: list[dict[str, Any]]) -> tuple[Path, Path]:
    definitions = tmp_path / "d.json"
    definitions.write_text(dumps_definitions(shop_definitions()))
    stream = tmp_path / "in.jsonl"
    stream.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return definitions, stream


@pytest.mark.parametrize(("stamp", "why"), [
    (1772442000, "line 1: timestamp 1772442000 is before 1973-03-03 in Unix epoch "
                 "milliseconds: if it is in seconds, read the stream with timestamp_unit='s' "
                 "(cjo backtest --timestamp-unit s, the default)"),
    (1772442000000000, "line 1: timestamp 1772442000000000 is too large for Unix epoch "
                       "milliseconds (after 5138-11-16)"),
    (-1, "line 1: timestamp -1 is negative: Unix epoch milliseconds count from 1970-01-01"),
    ("2026-03-02T09:00", "line 1: timestamp '2026-03-02T09:00' has no UTC offset"),
    (False, "line 1: timestamp must be an ISO 8601 string with a UTC offset or a number (Unix "
            "epoch milliseconds), got a boolean"),
])
def test_a_timestamp_that_cannot_be_milliseconds_is_named(
    tmp_path: Path, capsys, stamp: object, why: str
) -> None:
    definitions, stream = _numbered(tmp_path, [
        {"customer_id": "a", "name": "x", "timestamp": stamp}])
    assert main(["backtest", str(definitions), str(stream), "--timestamp-unit", "ms"]) == 1
    assert f"cjo backtest: {stream}: {why}" in capsys.readouterr().err


def test_epoch_numbers_are_read_as_utc_instants_in_their_unit() -> None:
    lines = [
        '{"type": "profile", "customer_id": "a", "timestamp": 1772442000}',
        '{"customer_id": "a", "name": "go", "timestamp": 1772442000.25, "event_id": "1"}',
        '{"customer_id": "a", "name": "go", "timestamp": "2026-03-02T10:00:00+01:00",'
        ' "event_id": "2"}',
        '{"customer_id": "a", "name": "go", "timestamp": 1772445600, "event_id": "3"}',
        '{"customer_id": "a", "name": "go", "timestamp": 0.000001, "event_id": "4"}',
    ]
    read = list(read_inputs(lines))
    assert read[0] == (T0, ProfileUpdate("a"))
    assert [item.timestamp for item in read[1:] if isinstance(item, Event)] == [
        T0 + timedelta(milliseconds=250), T0, T0 + timedelta(hours=1),
        datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)]
    assert all(item.timestamp.tzinfo is UTC for item in read[1:3] if isinstance(item, Event))
    in_ms = [lines[0].replace("1772442000", "1772442000000"),
             lines[1].replace("1772442000.25", "1772442000250"), lines[2],
             lines[3].replace("1772445600", "1772445600000.0")]
    assert list(read_inputs(in_ms, timestamp_unit="ms")) == read[:4]
    # A millisecond count with a fraction keeps it, to the microsecond.
    [event] = read_inputs(['{"customer_id": "a", "name": "go", "timestamp": 1772442000000.5,'
                           ' "event_id": "1"}'], timestamp_unit="ms")
    assert isinstance(event, Event) and event.timestamp == T0 + timedelta(microseconds=500)
    # The default unit is seconds, and a number of seconds in the other unit is named too.
    with pytest.raises(InvalidEventError, match=r"^line 2: timestamp 1772442000000 is too large"):
        list(read_inputs([lines[0], lines[0].replace("1772442000", "1772442000000")]))


def test_an_unknown_timestamp_unit_is_refused_before_reading() -> None:
    def lines() -> Iterator[str]:
        raise AssertionError("read")
        yield ""

    for unit in ("us", "S", None, 1000):
        with pytest.raises(UsageError, match=r"^timestamp_unit must be 's' or 'ms', got "):
            read_inputs(lines(), timestamp_unit=unit)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="timestamp_unit must be"):
        input_from_json({}, timestamp_unit="seconds")  # type: ignore[arg-type]


def test_the_command_reads_epoch_milliseconds_when_told(shop, tmp_path: Path, capsys) -> None:
    definitions, stream, inputs = shop
    iso = backtest(shop_definitions(), inputs)
    records = [json.loads(line) for line in stream.read_text().splitlines()]
    for record in records:
        if "timestamp" in record:
            at = datetime.fromisoformat(record["timestamp"])
            record["timestamp"] = (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
                milliseconds=1)
    millis = tmp_path / "millis.jsonl"
    millis.write_text("".join(json.dumps(record) + "\n" for record in records))
    assert main(["backtest", str(definitions), str(millis), "--timestamp-unit", "ms",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["inputs"], data["messages"], data["ended"]) == (
        iso.inputs, dict(iso.messages), dict(iso.ended))
    assert data["start"] == inputs[0][0].isoformat()
    # Read as seconds (the default), the first stamped line is refused with the unit to use.
    assert main(["backtest", str(definitions), str(millis)]) == 1
    err = capsys.readouterr().err
    assert "is too large for Unix epoch seconds" in err and "--timestamp-unit ms" in err
    with pytest.raises(SystemExit):
        main(["backtest", str(definitions), str(millis), "--timestamp-unit", "us"])
    assert "invalid choice: 'us'" in capsys.readouterr().err


def test_bad_definitions_and_arguments(tmp_path: Path, capsys) -> None:
    definitions = tmp_path / "d.json"
    definitions.write_text('{"journeys": [{"id": "j"}]}')
    stream = tmp_path / "in.jsonl"
    stream.write_text("")
    assert main(["backtest", str(definitions), str(stream)]) == 1
    assert "$.journeys[0].entry: required field missing" in capsys.readouterr().err
    assert main(["backtest", str(tmp_path / "none.json"), str(stream)]) == 2
    assert "cannot read" in capsys.readouterr().err
    definitions.write_text(dumps_definitions(shop_definitions()))
    assert main(["backtest", str(definitions), str(stream), "--timezone", "Mars/Base"]) == 2
    assert "'Mars/Base' is not a known IANA time zone" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["backtest", str(definitions), str(stream), "--until", "2026-03-03"])
    assert "has no UTC offset" in capsys.readouterr().err


def test_with_json_bad_definitions_leave_stdout_empty(shop, capsys) -> None:
    # `cjo backtest --json ... > report.json`: the problems go to stderr, as every other
    # failure's, so stdout never holds text that is not the JSON report.
    definitions, stream, _ = shop
    definitions.write_text('{"journeys": [{"id": "j", "entry": "a", "steps": {"a": '
                           '{"kind": "wait", "duration": "4 hours"}}}]}')
    assert main(["backtest", str(definitions), str(stream), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"cjo backtest: {definitions}: 1 problem\n  - ")
    assert "not a duration: '4 hours'" in captured.err


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


@pytest.mark.parametrize("content", ["", "\n\n", "  \n"])
def test_an_empty_inputs_file_is_named_not_run(
    tmp_path: Path, capsys, caplog, content: str
) -> None:
    definitions = tmp_path / "d.json"
    definitions.write_text(dumps_definitions(shop_definitions()))
    stream = tmp_path / "in.jsonl"
    stream.write_text(content)
    assert main(["backtest", str(definitions), str(stream)]) == 1
    captured = capsys.readouterr()
    assert captured.err == (f"cjo backtest: {stream}: no inputs (the file is empty or holds "
                            "only blank lines)\n")
    assert captured.out == "" and "generator" not in caplog.text


def test_an_interrupted_back_test_says_so_and_prints_no_report(shop, capsys, monkeypatch) -> None:
    import signal

    from cjo import cli

    def interrupted(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyboardInterrupt  # Ctrl-C in the middle of the run

    monkeypatch.setattr(cli, "backtest", interrupted)
    definitions, stream, _ = shop
    assert main(["backtest", str(definitions), str(stream), "--json"]) == 128 + signal.SIGINT
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "cjo backtest: interrupted: no report (a back-test keeps nothing)\n"
