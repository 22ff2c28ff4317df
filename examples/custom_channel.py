"""Plugging in your own delivery channel.

A channel is any object with ``send(message) -> DeliveryResult``. Here a webhook-style channel
posts JSON to a (fake) transport, honours idempotency keys, and reports temporary failures as
``transient`` so that cjo retries with the same key. (cjo ships a real one, ``cjo.WebhookChannel``:
see docs/channels.md.)

Run it with ``python examples/custom_channel.py``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

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


class PostingChannel(Channel):
    """Posts each message as JSON. ``transport`` stands in for an HTTP client."""

    # Content for it must have a ``body`` that renders to JSON (checked at publish, and at
    # every send), whatever name the channel is registered under.
    channel_type = "webhook"

    def __init__(self, transport: list[str], fail_first: int = 0) -> None:
        self.transport = transport
        self.delivered: set[str] = set()
        self._failures_left = fail_first

    def send(self, message: Message) -> DeliveryResult:
        if message.idempotency_key in self.delivered:
            # The provider already has it (a retry after a crash): do not deliver twice.
            return DeliveryResult("delivered", provider_id=message.idempotency_key)
        if self._failures_left:
            self._failures_left -= 1
            return DeliveryResult("transient", error="HTTP 503 from provider")
        self.transport.append(json.dumps({
            "to": message.recipient.get("webhook_url", "unknown"),
            "key": message.idempotency_key,
            "payload": json.loads(message.fields["body"]),
        }))
        self.delivered.add(message.idempotency_key)
        return DeliveryResult("delivered", provider_id=f"wh-{len(self.transport)}")


def main() -> None:
    clock = ManualClock(datetime(2026, 5, 1, 12, 0, tzinfo=UTC))
    posted: list[str] = []
    engine = Engine(
        channels={"webhook": PostingChannel(posted, fail_first=1)},
        clock=clock,
        retry_backoff=timedelta(seconds=30),
        # A message carries only the profile attributes named here (contact details).
        recipient_attributes=("webhook_url",),
    )
    engine.publish(
        journeys=[Journey(
            id="order_paid",
            trigger=EventTrigger("order_paid"),
            entry="notify",
            steps={"notify": Send("order_webhook", "webhook", transactional=True)},
        )],
        content=[ContentItem("order_webhook", (
            Variant("webhook", {
                "body": '{"order": {{ event.order_id | json }}, "total": {{ event.total }}}',
            }),
        ))],
    )
    engine.identify("acme", {"webhook_url": "https://hooks.example.invalid/acme"})
    engine.handle_event(Event(
        customer_id="acme", name="order_paid", timestamp=clock.now(),
        properties={"order_id": "A-1001", "total": 99.5}, event_id="order-A-1001-paid",
    ))
    print(f"after the first attempt: {len(posted)} posted")
    clock.advance(seconds=30)
    retried = engine.dispatch_pending()
    print(f"retried {retried}; posted: {posted}")


if __name__ == "__main__":
    main()
