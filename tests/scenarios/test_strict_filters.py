"""Math filters and ``date`` given a value they cannot read fail the send as a render failure,
naming the field, the filter and what the value is, instead of sending ``0``, ``0.0`` or the
value unchanged; values they can read render exactly as Liquid's own filters render them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from liquid import Environment

from cjo import (
    ContentItem,
    ContentSample,
    DefinitionError,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    RecordingChannel,
    Send,
    Variant,
)
from cjo.model.steps import RenderErrorPolicy
from tests.helpers import Factory

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_ids = count()

# Each math filter, as ``{{ profile.v | ... }}``, with a valid argument where it takes one.
MATH = {
    "times": "times: 2",
    "plus": "plus: 1.5",
    "minus": "minus: 3",
    "divided_by": "divided_by: 4",
    "modulo": "modulo: 7",
    "round": "round: 1",
    "ceil": "ceil",
    "floor": "floor",
    "abs": "abs",
    "at_least": "at_least: 5",
    "at_most": "at_most: 5",
}
# Filters that take a number as argument, as ``{{ 10 | ... profile.v }}``.
WITH_ARGUMENT = ["times", "plus", "minus", "divided_by", "modulo", "round", "at_least",
                 "at_most"]

# A value no math filter can read, and how the failure names it.
UNREADABLE: list[tuple[object, str]] = [
    ("abc", "text that does not read as a number"),
    ("12,5", "text that does not read as a number"),
    ("nan", "text that does not read as a number"),
    ("", "empty text"),
    (None, "nil"),
    (True, "a boolean"),
    ([1, 2], "a list"),
    ({"amount": 3}, "an object"),
]
# Values Liquid reads as numbers: numbers, and text that reads as one.
READABLE: list[object] = [12, -7, 2.5, 0, "12.5", " 3 ", "-2", "1e3", "40"]


def _engine(template: str, *, policy: RenderErrorPolicy = "skip", storage: Any = None,
            clock: ManualClock | None = None,
            sample: dict[str, Any] | None = None) -> tuple[Engine, RecordingChannel]:
    sms = RecordingChannel()
    engine = Engine(channels={"sms": sms}, clock=clock or ManualClock(T0),
                    **({"storage": storage} if storage is not None else {}))
    engine.publish(
        content=[ContentItem("c", (Variant("sms", {"text": template}),),
                             sample=ContentSample(profile=sample or {"v": 12, "f": "%Y"}))],
        journeys=[Journey("j", trigger=EventTrigger("go"), entry="s", steps={
            "s": Send("c", "sms", on_render_error=policy),
        })],
    )
    return engine, sms


def _send(engine: Engine, profile: dict[str, Any], customer: str = "ann") -> Any:
    engine.identify(customer, profile)
    return engine.handle_event(Event(customer, "go", engine.clock.now(),
                                     event_id=f"go-{next(_ids)}"))


def _liquid(template: str, profile: dict[str, Any]) -> str:
    """What Liquid's own filters render."""
    return Environment().from_string(template).render(profile=profile)


def _refused(template: str, profile: dict[str, Any],
             sample: dict[str, Any] | None = None) -> str:
    """The reason the send of ``template`` failed; it must have failed, as a render failure."""
    engine, sms = _engine(template, sample=sample)
    outcome = _send(engine, profile)
    assert not outcome.messages and not sms.messages
    [failure] = outcome.failures
    assert failure.action == "skipped"
    [logged] = [a for a in engine.activities(T0, T0 + timedelta(seconds=1))
                if a.kind == "send_failed"]
    assert logged.detail == failure.reason
    prefix = "content 'c' / sms / field 'text': "
    assert failure.reason.startswith(prefix)
    return failure.reason.removeprefix(prefix)


# --- math filters ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MATH))
@pytest.mark.parametrize(("value", "kind"), UNREADABLE)
def test_a_math_filter_given_a_value_it_cannot_read_fails_the_send(
    name: str, value: object, kind: str,
) -> None:
    template = f"Total: {{{{ profile.v | {MATH[name]} }}}}"
    assert _refused(template, {"v": value}) == f"{name}: expected a number, got {kind}"


@pytest.mark.parametrize(("template", "reason"), [
    ("{{ profile.v | times: 10 }}", "times: the result is not a finite number (inf)"),
    ("{{ profile.v | plus: profile.v }}", "plus: the result is not a finite number (inf)"),
    ("{{ 0 | minus: profile.v | minus: profile.v }}",
     "minus: the result is not a finite number (-inf)"),
])
def test_a_math_filter_whose_result_overflows_fails_the_send(template: str, reason: str) -> None:
    # Liquid renders "inf": no amount a customer should read.
    assert _liquid(template, {"v": "1e308"}) in ("inf", "-inf")
    assert _refused(f"Total: {template}", {"v": "1e308"}) == reason


@pytest.mark.parametrize("name", WITH_ARGUMENT)
@pytest.mark.parametrize(("value", "kind"), UNREADABLE[:4] + UNREADABLE[5:])
def test_a_math_filter_given_an_argument_it_cannot_read_fails_the_send(
    name: str, value: object, kind: str,
) -> None:
    template = f"Total: {{{{ 10 | {name}: profile.v }}}}"
    assert _refused(template, {"v": value}) == (
        f"{name}: expected a number as its argument, got {kind}")


@pytest.mark.parametrize("name", list(MATH))
@pytest.mark.parametrize("value", READABLE)
def test_a_math_filter_renders_a_value_it_can_read_as_liquid_does(
    name: str, value: object,
) -> None:
    template = f"Total: {{{{ profile.v | {MATH[name]} }}}}"
    engine, sms = _engine(template)
    for customer in ("ann", "bob"):  # the second from the renderer's memo
        _send(engine, {"v": value}, customer)
    expected = _liquid(template, {"v": value})
    assert [m.fields["text"] for m in sms.messages] == [expected, expected]


@pytest.mark.parametrize("name", WITH_ARGUMENT)
@pytest.mark.parametrize("value", ["4", 2.5, " 3 "])
def test_a_math_filter_reads_an_argument_as_liquid_does(name: str, value: object) -> None:
    template = f"{{{{ 10 | {name}: profile.v }}}}"
    engine, sms = _engine(template)
    _send(engine, {"v": value})
    assert [m.fields["text"] for m in sms.messages] == [_liquid(template, {"v": value})]


@pytest.mark.parametrize(("template", "items", "reason"), [
    ("{{ profile.v | sum }}", [1, "abc"], "text that does not read as a number"),
    ("{{ profile.v | sum: 'price' }}", [{"price": 2}, {"price": "n/a"}],
     "text that does not read as a number"),
    ("{{ profile.v | sum }}", [1, {"a": 2}], "an object"),
])
def test_sum_names_an_item_it_cannot_read(template: str, items: list[Any], reason: str) -> None:
    # Liquid's own sum raises an arithmetic error of Python's for such an item: the reason
    # would name a decimal signal instead of the filter and the value.
    sample = {"v": [{"price": 1}] if "price" in template else [1]}
    assert _refused(template, {"v": items}, sample) == f"sum: expected a number, got {reason}"


@pytest.mark.parametrize(("template", "items"), [
    ("{{ profile.v | sum }}", [1, "2.5", None]),      # nil counts nothing, as in Liquid
    ("{{ profile.v | sum: 'price' }}", [{"price": 0.1}, {"price": 0.2}, {"other": 5}]),
])
def test_sum_renders_what_it_can_read_as_liquid_does(template: str, items: list[Any]) -> None:
    engine, _ = _engine(template, sample={"v": items})
    [message] = _send(engine, {"v": items}).messages
    assert message.fields["text"] == _liquid(template, {"v": items})


def test_a_missing_value_fails_a_math_filter_as_it_fails_an_output() -> None:
    # Liquid counts a missing value as 0: "Total: 0" for every customer without a total.
    assert _liquid("Total: {{ profile.v | times: 2 }}", {}) == "Total: 0"
    assert _refused("Total: {{ profile.v | times: 2 }}", {}) == "profile.v is undefined"
    assert _refused("Total: {{ 3 | plus: profile.v }}", {}) == "profile.v is undefined"
    engine, sms = _engine("Total: {{ profile.v | default: 0 | times: 2 }}")
    _send(engine, {})
    assert [m.fields["text"] for m in sms.messages] == ["Total: 0"]


def test_text_of_more_digits_than_liquid_converts_is_over_a_template_limit() -> None:
    assert _refused("{{ profile.v | times: 2 }}", {"v": "9" * 5000}) == (
        "times: text of 5000 characters is too long for a number")


def test_liquid_itself_renders_what_the_engine_refuses() -> None:
    # What these tests guard against: Liquid's filters render a wrong text, with no failure.
    assert _liquid("{{ profile.v | times: 1.1 }}", {"v": "abc"}) == "0.0"
    assert _liquid("{{ profile.v | plus: 1 }}", {"v": None}) == "1"
    assert _liquid("{{ profile.v | date: '%Y' }}", {"v": "not a date"}) == "not a date"
    assert _liquid("{{ profile.v | date: '%Y' }}", {}) == ""


# --- date --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "kind"), [
    ("not a date", "text that does not read as a date"),
    ("soon", "text that does not read as a date"),
    ("", "empty text"),
    (None, "nil"),
    (True, "a boolean"),
    ([2026, 3, 1], "a list"),
    ({"year": 2026}, "an object"),
])
def test_date_given_a_value_it_cannot_read_fails_the_send(value: object, kind: str) -> None:
    assert _refused("Since {{ profile.v | date: '%Y-%m-%d' }}", {"v": value}) == (
        f"date: expected a date, got {kind}")


def test_date_given_a_number_that_is_not_a_time_stamp_fails_the_send() -> None:
    # Text that reads as a number is no date either: Liquid reads "3.5" as the 3rd of a month.
    for value in (1.5, 10**15, "3.5", "-5", " +7 ", "1e3", "12.0"):
        assert _refused("{{ profile.v | date: '%Y' }}", {"v": value}) == (
            "date: expected a date, got a number that is not a time stamp "
            "(whole seconds since 1970)")


def test_date_given_a_missing_value_or_format_fails_the_send() -> None:
    assert _refused("Since {{ profile.v | date: '%Y' }}", {}) == "profile.v is undefined"
    assert _refused("{{ '2026-03-01' | date: profile.f }}", {}) == "profile.f is undefined"
    assert _refused("{{ '2026-03-01' | date: profile.f }}", {"f": 5}) == (
        "date: expected text (a format) as its argument, got a number")


@pytest.mark.parametrize("value", [
    "2026-03-01", "2026-03-01T10:30:00", "2026-03-01T10:30:00+02:00", "March 1, 2026",
    "1 Mar 2026 10:30", 1_772_000_000, "1772000000",
    datetime(2026, 3, 1, 10, 30, tzinfo=UTC),
])
def test_date_renders_a_value_it_can_read_as_liquid_does(value: object) -> None:
    template = "Since {{ profile.v | date: '%Y-%m-%d %H:%M' }}"
    engine, sms = _engine(template)
    _send(engine, {"v": value})
    assert [m.fields["text"] for m in sms.messages] == [_liquid(template, {"v": value})]


def test_date_reads_neither_the_machines_time_zone_nor_its_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A time stamp and naive text are UTC whatever the machine's zone; what text leaves out
    (the year of "May 5", the day of "10:30") comes from the instant being decided, so a
    back-test of 2031 renders 2031, not the year the machine is in."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        later = datetime(2031, 7, 9, 14, 0, tzinfo=UTC)
        for value, expected in ((1_772_000_000, "2026-02-25 06:13 +0000"),
                                ("May 5", "2031-05-05 00:00 +0000"),
                                ("10:30", "2031-07-09 10:30 +0000")):
            engine, sms = _engine("{{ profile.v | date: '%Y-%m-%d %H:%M %z' }}",
                                  clock=ManualClock(later))
            _send(engine, {"v": value})
            assert [m.fields["text"] for m in sms.messages] == [expected]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


# --- policies and publish ----------------------------------------------------------------------


def test_a_refused_value_follows_the_retry_policy_and_sends_once_it_is_a_number(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    engine, sms = _engine("Your balance: {{ profile.v | times: 1.1 | round: 2 }}",
                          policy="retry", storage=storage_factory(), clock=clock)
    outcome = _send(engine, {"v": "n/a"})
    [failure] = outcome.failures
    assert (failure.reason, failure.action) == (
        "content 'c' / sms / field 'text': times: expected a number, got text that does not "
        "read as a number", "retrying")
    assert not sms.messages
    engine.identify("ann", {"v": "12.5"})
    clock.advance(minutes=5)
    assert [m.fields["text"] for m in engine.run_due().messages] == ["Your balance: 13.75"]


def test_publish_checks_math_and_date_on_the_sample_and_not_what_a_derived_one_cannot_know(
) -> None:
    engine = Engine(channels={"sms": RecordingChannel()}, clock=ManualClock(T0))

    def problems(template: str, sample: ContentSample | None = None) -> list[str]:
        try:
            engine.publish(content=[ContentItem("c", (Variant("sms", {"text": template}),),
                                                sample=sample)])
        except DefinitionError as exc:
            return [p.message for p in exc.problems]
        return []

    # Derived samples: every variable is "1", a number and a time stamp to these filters; nil
    # or a list where the template reads one (``first`` of the text "1") is the sample's doing.
    assert problems("{{ event.total | times: 1.1 | round: 2 }} {{ event.at | date: '%Y' }}") == []
    assert problems("{{ event.lines | first | times: 2 }}") == []
    assert problems("{% for line in event.lines %}{{ line.price | times: 2 }}{% endfor %}") == []
    # What no sample excuses: a literal the filter cannot read.
    assert problems("{{ 'abc' | times: 2 }} and {{ 'soon' | date: '%Y' }}") == [
        "field 'text' does not render on the sample: times: expected a number, got text that "
        "does not read as a number"]
    # A given sample is checked as a send is.
    on = "field 'text' does not render on the sample: "
    assert problems("{{ profile.total | times: 2 }}", ContentSample(profile={})) == [
        on + "profile.total is undefined"]
    assert problems("{{ profile.total | times: 2 }}", ContentSample(profile={"total": [1]})) == [
        on + "times: expected a number, got a list"]
    assert problems("{{ event.at | date: '%Y' }}", ContentSample(event={"at": "later"})) == [
        on + "date: expected a date, got text that does not read as a date"]
    assert problems("{{ profile.total | times: 2 }} {{ event.at | date: '%Y' }}",
                    ContentSample(profile={"total": "4.5"}, event={"at": "2026-03-01"})) == []


# --- date: zones and offsets -------------------------------------------------------------------


def test_date_renders_each_customers_own_offset_for_one_instant() -> None:
    # Two customers in different zones, one instant: each reads their own wall time and offset,
    # never the one rendered first for an equal instant.
    engine, sms = _engine("{{ profile.v | date: '%Y-%m-%d %H:%M %z' }}")
    for customer, value in (("ann", "2026-03-05T10:00:00+02:00"),
                            ("bob", "2026-03-05T03:00:00-05:00"),
                            ("cem", "2026-03-05T08:00:00Z")):
        _send(engine, {"v": value}, customer)
    assert [m.fields["text"] for m in sms.messages] == [
        "2026-03-05 10:00 +0200", "2026-03-05 03:00 -0500", "2026-03-05 08:00 +0000"]


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata", "UTC"])
def test_date_epoch_seconds_do_not_depend_on_the_machines_time_zone(
    monkeypatch: pytest.MonkeyPatch, zone: str,
) -> None:
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        engine, sms = _engine("{{ profile.v | date: '%s' }}")
        for customer, value in (("ann", "2026-03-01T10:00:00+02:00"), ("bob", "1772000000"),
                                ("cem", "1969-12-31T23:59:59Z")):
            _send(engine, {"v": value}, customer)
        assert [m.fields["text"] for m in sms.messages] == ["1772352000", "1772000000", "-1"]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize(("value", "zone"), [
    ("2026-03-01 10:00 EST", "EST"),
    ("2026-03-01 10:00 CET", "CET"),
    ("March 1, 2026 10:00 PST", "PST"),
])
def test_date_refuses_a_zone_name_without_an_offset(value: str, zone: str) -> None:
    # dateutil warns and reads these as UTC: "10:00 EST" would be sent as 10:00 UTC.
    assert _refused("{{ profile.v | date: '%H:%M' }}", {"v": value}) == (
        f"date: {value!r} names the zone {zone!r}, which has no known offset; write the offset "
        "(-05:00) or UTC")


@pytest.mark.parametrize(("value", "written", "offset"), [
    ("2026-03-01 10:00 UTC+02:00", "UTC+02:00", "+02:00"),
    ("2026-03-01 10:00 GMT+2", "GMT+2", "+2"),
    ("2026-03-01T10:00:00 EST-05:00", "EST-05:00", "-05:00"),
    ("2026-03-01 10:00 AM EST-05:00", "EST-05:00", "-05:00"),
])
def test_date_refuses_a_zone_name_followed_by_an_offset(
    value: str, written: str, offset: str,
) -> None:
    # dateutil reads the sign reversed, as POSIX zone strings do: UTC+02:00 is 2 hours behind.
    assert _liquid("{{ profile.v | date: '%z' }}", {"v": value}) != "+0200"
    assert _refused("{{ profile.v | date: '%H:%M' }}", {"v": value}) == (
        f"date: {value!r} names the zone {written!r}, whose offset reads with its sign "
        f"reversed; write the offset alone: {offset!r}")


def test_date_reads_a_zone_name_by_its_offset_not_by_the_machines_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # dateutil reads a name the machine's zone has (EST, EDT in New York) as the machine's
    # zone: in July, "EST" would be rendered with EDT's offset.
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        value = "2026-07-01 10:00 EST"
        assert _refused("{{ profile.v | date: '%H:%M %z' }}", {"v": value}) == (
            "date: '2026-07-01 10:00 EST' names the zone 'EST', which has no known offset; "
            "write the offset (-05:00) or UTC")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-03-01 10:00 UTC", "10:00 +0000"),
    ("2026-03-01 10:00 GMT", "10:00 +0000"),
    ("2026-03-01T10:00:00Z", "10:00 +0000"),
    ("2026-03-01 10:00 +02:00", "10:00 +0200"),
    ("2026-03-01 10:00 -0530", "10:00 -0530"),
    ("2026-03-01 10:00", "10:00 +0000"),
    ("01-MAR-2026 10:00", "10:00 +0000"),
    ("2026-03-01 10:00 AM -05:00", "10:00 -0500"),
])
def test_date_reads_utc_and_plain_offsets(value: str, expected: str) -> None:
    engine, sms = _engine("{{ profile.v | date: '%H:%M %z' }}")
    _send(engine, {"v": value})
    assert [m.fields["text"] for m in sms.messages] == [expected]


def test_date_still_refuses_a_posix_zone_string() -> None:
    for value in ("2026-03-01 10:00 EST5", "2026-03-01 10:00 EST5EDT"):
        assert _refused("{{ profile.v | date: '%H:%M' }}", {"v": value}) == (
            "date: expected a date, got text that does not read as a date")
