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


# --- filters by a property: items without it, or with it nil ----------------------------------

PRODUCTS = [
    {"name": "tent", "price": 99.5, "image": "tent.png"},
    {"name": "lamp", "price": None, "image": None},
    {"name": "mug"},
    {"name": "sock", "price": 4, "image": "sock.png"},
]


@pytest.mark.parametrize(("template", "expected"), [
    # An item without the property is as one with it nil, as in Liquid.
    ("{{ event.items | compact: 'image' | map: 'name' | join }}", "tent sock"),
    ("{{ event.items | uniq: 'image' | map: 'name' | join }}", "tent lamp sock"),
    # Nil and missing sort last, in their order; numbers among numbers.
    ("{{ event.items | sort: 'price' | map: 'name' | join }}", "sock tent lamp mug"),
    ("{{ event.items | sort_natural: 'image' | map: 'name' | join }}", "sock tent lamp mug"),
])
def test_filters_by_a_property_read_a_missing_one_as_nil(template: str, expected: str) -> None:
    engine, problems = _publish(template, ContentSample(event={"items": PRODUCTS}))
    assert problems == []
    assert _send(engine, items=PRODUCTS) == ([expected], [])


def test_sort_of_values_that_do_not_compare_fails_the_send_naming_them() -> None:
    engine, problems = _publish("{{ event.items | sort: 'price' | map: 'name' | join }}")
    assert problems == []
    items = [{"name": "a", "price": 3}, {"name": "b", "price": "cheap"}]
    assert _send(engine, items=items) == ([], [
        "content 'c' / sms / field 'text': sort: cannot order a number and text"])


def test_join_writes_nil_and_booleans_as_an_output_does() -> None:
    # A product without a discount is nil: written as nothing, as {{ nil }} is, not "None".
    engine, problems = _publish("{{ event.items | map: 'discount' | join: ', ' }} / "
                                "{{ event.flags | join: ' ' }}")
    assert problems == []
    items = [{"discount": "10%"}, {"discount": None}, {"name": "mug"}, {"discount": 5}]
    assert _send(engine, items=items, flags=[True, False, None, 1.5]) == (
        ["10%, , , 5 / true false  1.5"], [])


def test_time_zone_writes_a_date_at_the_customers_wall_time() -> None:
    # As Braze's time_zone filter: a booking stored in UTC, written at the customer's hour.
    template = ("{{ event.at | time_zone | date: '%a %H:%M %Z' }}, "
                "{{ event.at | time_zone: 'America/New_York' | date: '%H:%M %Z' }}, "
                "{{ 'now' | time_zone | date: '%H:%M' }}")
    clock = ManualClock(T0)
    channel = RecordingChannel()
    engine = Engine(channels={"sms": channel}, clock=clock, default_timezone="Asia/Tokyo")
    engine.publish(
        content=[ContentItem("c", (Variant("sms", {"text": template}),))],
        journeys=[Journey("j", trigger=EventTrigger("go"), entry="s",
                          steps={"s": Send("c", "sms")}),
                  Journey("k", trigger=EventTrigger("go_k"), entry="s", timezone="Europe/Oslo",
                          steps={"s": Send("c", "sms")})],
    )
    engine.identify("ann", timezone="Europe/Paris")
    at = "2026-03-04T14:30:00Z"
    for customer, name in (("ann", "go"), ("bob", "go"), ("bob", "go_k")):
        engine.handle_event(Event(customer, name, T0, properties={"at": at},
                                  event_id=f"tz-{next(_ids)}"))
    assert [(m.customer_id, m.journey_id, m.fields["text"]) for m in channel.messages] == [
        ("ann", "j", "Wed 15:30 CET, 09:30 EST, 10:00"),   # the profile's zone
        ("bob", "j", "Wed 23:30 JST, 09:30 EST, 18:00"),   # the engine's default
        ("bob", "k", "Wed 15:30 CET, 09:30 EST, 10:00"),   # the journey's
    ]


def test_time_zone_refuses_what_it_cannot_read() -> None:
    _, problems = _publish("{{ event.at | time_zone: 'Mars/Olympus' | date: '%H:%M' }}")
    assert any("time_zone: 'Mars/Olympus' is not a known IANA time zone" in p
               for p in problems), problems
    engine, problems = _publish("{{ event.at | time_zone | date: '%H:%M' }}")
    assert problems == []
    assert _send(engine, at="2026-03-04T14:30:00Z") == (["14:30"], [])
    sent, failures = _send(engine, at="next tuesday-ish")
    assert sent == []
    assert len(failures) == 1 and "time_zone: expected a date" in failures[0], failures


def test_an_output_writes_lists_as_liquid_does_and_refuses_objects() -> None:
    # Liquid would write Python's forms into the message: "{'name': 'Hat'}", "None", "True".
    engine, problems = _publish("{{ event.tags }}|{% echo event.flag %}|{{ event.product.name }}")
    assert problems == []
    assert _send(engine, tags=["x", None, True, 2], flag=False, product={"name": "Hat"}) == (
        ["xtrue2|false|Hat"], []
    )
    engine, problems = _publish("{{ event.product }}")
    assert problems == [], "a derived sample cannot know it is an object"
    sent, failures = _send(engine, product={"name": "Hat"})
    assert sent == []
    assert failures == ["content 'c' / sms / field 'text': output: an object cannot be written "
                        "into a message; write one of its fields (product.name), or pass it "
                        "through json"]
    _, problems = _publish("{{ event.product }}", ContentSample(event={"product": {"a": 1}}))
    assert any("an object cannot be written" in p for p in problems), problems
