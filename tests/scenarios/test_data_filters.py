"""Filters that read the content of a value (``concat`` a list, ``base64_decode`` base64 text):
publishing without a sample does not refuse them for the derived sample's text ``"1"``, and a
customer whose value they cannot read fails the send with a reason that says so."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from itertools import count
from typing import Any

import pytest

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

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_ids = count()


def _publish(template: str, sample: ContentSample | None = None) -> tuple[Engine, list[str]]:
    engine = Engine(channels={"sms": RecordingChannel()}, clock=ManualClock(T0))
    try:
        engine.publish(
            content=[ContentItem("c", (Variant("sms", {"text": template}),), sample=sample)],
            journeys=[Journey("j", trigger=EventTrigger("go"), entry="s",
                              steps={"s": Send("c", "sms")})],
        )
    except DefinitionError as exc:
        return engine, [p.message for p in exc.problems]
    return engine, []


def _send(engine: Engine, **properties: Any) -> tuple[list[str], list[str]]:
    outcome = engine.handle_event(Event("ann", "go", T0, properties=properties,
                                        event_id=f"go-{next(_ids)}"))
    return [m.fields["text"] for m in outcome.messages], [f.reason for f in outcome.failures]


@pytest.mark.parametrize("template", [
    "{{ event.lines | concat: event.extra | size }} items",
    "{{ event.token | base64_decode }}",
    "{{ event.token | base64_url_safe_decode }}",
])
def test_a_filter_that_reads_a_values_content_publishes_without_a_sample(template: str) -> None:
    engine, problems = _publish(template)
    assert problems == []
    token = base64.urlsafe_b64encode("héllo".encode()).decode()
    sent, failed = _send(engine, lines=[1, 2], extra=[3], token=token)
    assert failed == []
    assert sent == (["3 items"] if "concat" in template else ["héllo"])


def test_concat_given_what_is_not_a_list_fails_the_send_naming_it() -> None:
    engine, _ = _publish("{{ event.lines | concat: event.extra | size }}")
    sent, failed = _send(engine, lines=[1], extra="gift")
    assert sent == []
    assert failed == ["content 'c' / sms / field 'text': concat: expected a list as its "
                      "argument, got text"]


@pytest.mark.parametrize(("token", "reason"), [
    ("!!!", "base64_decode: expected base64 text, got text that is not base64"),
    (base64.b64encode(b"\xff\xfe").decode(),
     "base64_decode: expected base64 text, got base64 of what is not UTF-8 text"),
])
def test_base64_decode_given_what_it_cannot_read_fails_the_send_naming_it(
    token: str, reason: str
) -> None:
    engine, _ = _publish("{{ event.token | base64_decode }}")
    sent, failed = _send(engine, token=token)
    assert sent == []
    assert failed == [f"content 'c' / sms / field 'text': {reason}"]


def test_a_sample_still_checks_what_these_filters_read() -> None:
    _, problems = _publish("{{ event.token | base64_decode }}",
                           ContentSample(event={"token": "!!!"}))
    assert problems == ["field 'text' does not render on the sample: base64_decode: expected "
                        "base64 text, got text that is not base64"]
