"""Wait for engagement with the journey's own message: ``WaitForEvent(of_send=...)``.

The host hands each message's idempotency key to its email provider as custom data; the
provider's open webhook gives it back, and the host turns it into an ``opened`` event with a
``message_id`` property. A wait with ``of_send="email"`` then ends only on an open of the
message this enrollment sent at step ``email``, not on an open of the newsletter.

Run it with ``python examples/engagement.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

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
    RecordingChannel,
    Send,
    Variant,
    WaitForEvent,
)

cart = Journey(
    id="abandoned_cart",
    trigger=EventTrigger("added_to_cart"),
    entry="email",
    steps={
        "email": Send("cart_reminder", "email", next="wait_for_open"),
        # A day to open THIS reminder; opening any other email does not count.
        "wait_for_open": WaitForEvent("opened", timeout=timedelta(days=1), on_event=None,
                                      on_timeout="sms", of_send="email"),
        "sms": Send("cart_reminder", "sms"),
    },
)
newsletter = Journey(
    id="newsletter", trigger=EventTrigger("issue_out"), entry="email",
    steps={"email": Send("issue", "email")},
)
content = [
    ContentItem("cart_reminder", variants=(
        Variant("email", {"subject": "You left something behind", "text": "Your cart"}),
        Variant("sms", {"text": "Your cart is waiting"}),
    )),
    ContentItem("issue", variants=(Variant("email", {"subject": "News", "text": "News"}),)),
]


class EmailProvider(Channel):
    """Stands for an email API: the key goes along as custom data, returned by its webhooks."""

    channel_type = "email"

    def __init__(self) -> None:
        self.sent: dict[str, dict[str, Any]] = {}   # provider id -> what it was given

    def send(self, message: Message) -> DeliveryResult:
        provider_id = f"p{len(self.sent) + 1}"
        self.sent[provider_id] = {"to": message.customer_id, "subject": message.fields["subject"],
                                  "custom_args": {"cjo_key": message.idempotency_key}}
        return DeliveryResult("delivered", provider_id=provider_id)


def open_webhook(payload: Mapping[str, Any], at: datetime) -> Event:
    """The provider's open webhook, as the host turns it into an event."""
    return Event(customer_id=payload["to"], name="opened", timestamp=at,
                 properties={"message_id": payload["custom_args"]["cjo_key"]},
                 event_id=f"open-{payload['custom_args']['cjo_key']}")


def main() -> None:
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    email, sms = EmailProvider(), RecordingChannel()
    engine = Engine(channels={"email": email, "sms": sms}, clock=clock)
    engine.publish(journeys=[cart, newsletter], content=content)
    for customer in ("ann", "bob"):
        for name in ("added_to_cart", "issue_out"):
            engine.handle_event(Event(customer_id=customer, name=name,
                                      timestamp=clock.now(), event_id=f"{customer}-{name}"))
    clock.advance(hours=1)
    ann_news = next(p for p in email.sent.values() if (p["to"], p["subject"]) == ("ann", "News"))
    bob_reminder = next(p for p in email.sent.values()
                        if (p["to"], p["subject"]) == ("bob", "You left something behind"))
    engine.handle_event(open_webhook(ann_news, clock.now()))      # Ann opens the newsletter
    engine.handle_event(open_webhook(bob_reminder, clock.now()))  # Bob opens his reminder
    clock.advance(days=1)
    engine.run_due()
    for customer in ("ann", "bob"):
        texts = len(sms.for_customer(customer))
        print(f"{customer}: {texts} SMS reminder{'s' if texts != 1 else ''}")


if __name__ == "__main__":
    main()
