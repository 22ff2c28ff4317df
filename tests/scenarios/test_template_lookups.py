"""``size`` and ``first`` after an object's name read its property of that name: a customer
without the attribute fails the render (or takes the ``default``), never receives the number
of their attributes or the first of them (another attribute's name and value)."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count

import pytest

from cjo import (
    ContentItem,
    ContentSample,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    RecordingChannel,
    Send,
    Storage,
    Variant,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_ids = count()


def _engine(storage: Storage, template: str) -> Engine:
    engine = Engine(storage=storage, channels={"sms": RecordingChannel()}, clock=ManualClock(T0))
    engine.publish(
        content=[ContentItem("c", (Variant("sms", {"text": template}),),
                             sample=ContentSample(
                                 profile={"size": "M", "first": "Ann", "name": "Ann"},
                                 event={"product": {"size": "L", "first": "tent"},
                                        "lines": ["tent"]}))],
        journeys=[Journey("j", trigger=EventTrigger("go"), entry="s",
                          steps={"s": Send("c", "sms")})],
    )
    return engine


def _send(engine: Engine, customer: str, **properties: object) -> str:
    outcome = engine.handle_event(Event(customer_id=customer, name="go", timestamp=T0,
                                        properties=properties, event_id=f"e{next(_ids)}"))
    if outcome.messages:
        return outcome.messages[0].fields["text"]
    return outcome.failures[0].reason


@pytest.mark.parametrize("path", ["profile.size", "profile.first", "event.product.size",
                                  "event.product.first"])
def test_a_missing_size_or_first_of_an_object_is_undefined(storage: Storage, path: str) -> None:
    engine = _engine(storage, f"Yours: {{{{ {path} }}}}")
    engine.identify("ann", {"email": "ann@example.com", "plan": "pro"})
    assert _send(engine, "ann", product={"sku": "t-1", "price": 20}) == (
        f"content 'c' / sms / field 'text': {path} is undefined")


def test_the_default_replaces_a_missing_size(storage: Storage) -> None:
    engine = _engine(storage, "Size {{ profile.size | default: 'unknown' }}, "
                              "{{ profile.first | default: 'friend' }}")
    engine.identify("ann", {"email": "ann@example.com"})
    engine.identify("bob", {"size": "XL", "first": "Bob"})
    assert _send(engine, "ann") == "Size unknown, friend"
    assert _send(engine, "bob") == "Size XL, Bob"
    assert _send(engine, "ann") == "Size unknown, friend"   # not a kept output of another


def test_lists_and_text_keep_size_first_and_last(storage: Storage) -> None:
    engine = _engine(storage, "{{ event.lines.size }} {{ event.lines.first }} "
                              "{{ event.lines.last }} {{ profile.name.size }} "
                              "{{ event.product | size }}")
    engine.identify("ann", {"name": "Zoë"})
    assert _send(engine, "ann", lines=["tent", "lamp"], product={"sku": "t-1"}) == (
        "2 tent lamp 3 1")
