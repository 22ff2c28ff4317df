"""Arguments the documentation describes, given wrong: each is refused by a cjo error that
names it, on every storage adapter, and changes nothing."""

from __future__ import annotations

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
    UsageError,
    Variant,
)
from tests.helpers import T0, Factory


class _Refusing(Channel):
    def send(self, message: Message) -> DeliveryResult:
        return DeliveryResult.permanent("no such address")


def _engine_with_dead_letters(storage_factory: Factory) -> Engine:
    clock = ManualClock(T0)
    engine = Engine(storage_factory(), channels={"email": _Refusing()}, clock=clock)
    engine.publish(
        journeys=[Journey("j", trigger=EventTrigger("go"), entry="m",
                          steps={"m": Send("note", "email")})],
        content=[ContentItem("note", (Variant("email", {"subject": "S", "text": "T"}),))],
    )
    for customer in ("a", "b"):
        engine.identify(customer, {"email": f"{customer}@example.com"})
        engine.handle_event(Event(customer, "go", clock.now(), {}, f"go-{customer}"))
        clock.advance(minutes=1)
    return engine


@pytest.mark.parametrize("order", ["no", 0, None])
def test_dead_letters_takes_newest_first_as_a_bool_only(
    order: object, storage_factory: Factory
) -> None:
    """channels.md: `engine.dead_letters(limit=100, after=None, newest_first=True)` lists them,
    newest first (or oldest first)."""
    engine = _engine_with_dead_letters(storage_factory)
    with pytest.raises(UsageError, match="newest_first must be True or False, got "):
        engine.dead_letters(newest_first=order)  # type: ignore[arg-type]
    assert [d.message.customer_id for d in engine.dead_letters(newest_first=False)] == ["a", "b"]
    assert [d.message.customer_id for d in engine.dead_letters()] == ["b", "a"]
