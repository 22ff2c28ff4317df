"""Quick start: an abandoned-cart journey, run under a manual clock.

Run it with ``python examples/quickstart.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import cjo
from cjo import (
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    ExitCriterion,
    Goal,
    Journey,
    ManualClock,
    RecordingChannel,
    Send,
    Variant,
    WaitForEvent,
)

cart = Journey(
    id="abandoned_cart",
    name="Abandoned cart",
    trigger=EventTrigger("added_to_cart"),
    entry="wait_for_purchase",
    steps={
        # Give the customer 4 hours to buy; if they do, the journey simply ends.
        "wait_for_purchase": WaitForEvent(
            "purchased", timeout=timedelta(hours=4), on_event=None, on_timeout="email"
        ),
        "email": Send("cart_reminder", "email", next="wait_for_open"),
        # One day to open the email; if it stays unopened, follow up by SMS.
        "wait_for_open": WaitForEvent(
            "email_opened", timeout=timedelta(days=1), on_event=None, on_timeout="sms"
        ),
        "sms": Send("cart_reminder", "sms"),
    },
    exit_criteria=(ExitCriterion("purchased", event="purchased"),),
    goal=Goal("purchased", within=timedelta(days=7)),
)

reminder = ContentItem(
    "cart_reminder",
    variants=(
        Variant("email", {
            "subject": "{{ profile.first_name | default: 'Hello' }}, you left something behind",
            "text": "Your {{ event.item }} is still in your cart.",
        }),
        Variant("sms", {"text": "Your {{ event.item }} is waiting: reply STOP to opt out"}),
    ),
)


def main() -> None:
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    email, sms = RecordingChannel(), RecordingChannel()
    engine = Engine(channels={"email": email, "sms": sms}, clock=clock)
    engine.publish(journeys=[cart], content=[reminder])

    engine.identify("ann", {"first_name": "Ann"})
    for customer in ("ann", "bob"):
        engine.handle_event(Event(
            customer_id=customer, name="added_to_cart", timestamp=clock.now(),
            properties={"item": "blue umbrella"}, event_id=f"{customer}-cart-1",
        ))

    clock.advance(hours=2)
    outcome = engine.handle_event(Event(
        customer_id="bob", name="purchased", timestamp=clock.now(), event_id="bob-order-1",
    ))
    print(f"bob bought after 2 h: {outcome.ended[0].status}")

    clock.advance(days=2)
    engine.run_due()  # fires Ann's email at +4 h and her SMS at +28 h
    for message in email.messages + sms.messages:
        print(f"{message.created_at:%a %H:%M} {message.channel:5} -> {message.customer_id}: "
              f"{dict(message.fields)}")
    for customer in ("ann", "bob"):
        (enrollment,) = engine.enrollments(customer)
        print(f"{customer}: {enrollment.status} at {enrollment.ended_at:%a %H:%M}")
    print(f"cjo {cjo.__version__}")


if __name__ == "__main__":
    main()
