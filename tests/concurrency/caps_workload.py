"""Marketing journeys competing for the same customers under a frequency cap, for the
four-worker test. Deterministic (seeded) and importable by spawned worker processes, which
rebuild the stream themselves. It imports no test framework."""

from __future__ import annotations

import random
import traceback
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from cjo import (
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    FrequencyCap,
    Journey,
    ManualClock,
    RecordingChannel,
    Retention,
    Send,
    Variant,
    Wait,
)

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SLICE = timedelta(minutes=30)
SLICES = 16
#: Every event falls within 8 hours, so the whole run is inside one window of the cap.
END = T0 + SLICES * SLICE + timedelta(hours=1)
CAP = FrequencyCap("weekly", 3, per=timedelta(days=7))
CHANNELS = ("email", "sms", "push")

#: Marketing journeys, by the event that starts each; ``later`` sends from a wake-up one slice
#: after its trigger, so a worker's ``run_due`` competes with the others' events.
MARKETING = {"sale_email": "flash_email", "sale_sms": "flash_sms", "sale_push": "flash_push",
             "browsed": "later"}
EVENTS = (*MARKETING, "ordered")


def journeys() -> list[Journey]:
    flashes = [
        Journey(jid, "send", {"send": Send("promo", jid.removeprefix("flash_"))},
                trigger=EventTrigger(event))
        for event, jid in MARKETING.items() if jid.startswith("flash_")
    ]
    later = Journey("later", "wait", {"wait": Wait(SLICE, next="send"),
                                      "send": Send("promo", "email")},
                    trigger=EventTrigger("browsed"))
    receipts = Journey("receipts", "send",
                       {"send": Send("receipt", "email", transactional=True)},
                       trigger=EventTrigger("ordered"))
    return [*flashes, later, receipts]


CONTENT = (
    ContentItem("promo", (
        Variant("email", {"subject": "Sale", "text": "Sale"}),
        Variant("sms", {"text": "Sale"}),
        Variant("push", {"title": "Sale", "body": "Sale"}),
    )),
    ContentItem("receipt", (Variant("email", {"subject": "Receipt", "text": "Receipt"}),)),
)


class Item(NamedTuple):
    slice: int
    event: Event


def build_stream(seed: int, customers: int) -> list[Item]:
    """Items in processing order. In each slice a customer gets up to one of each event, one
    after the other in the stream, so dealt round-robin they land on different workers and
    are handled at the same instant, in parallel."""
    rng = random.Random(seed)
    stream: list[Item] = []
    for slice_ in range(SLICES):
        at = T0 + slice_ * SLICE
        for n in range(customers):
            cid = f"cust{n:03}"
            for name in EVENTS:
                if rng.random() < 0.3:
                    stream.append(Item(slice_, Event(
                        customer_id=cid, name=name, timestamp=at,
                        event_id=f"{cid}-{slice_}-{name}",
                    )))
    return stream


Sent = tuple[str, str, str, str, str]  # key, customer, journey, channel, created at


def worker_main(
    index: int, workers: int, dsn: str, schema: str, seed: int, customers: int,
    barrier: Any, results: Any,
) -> None:
    """Handle every ``workers``-th item of the stream, slice by slice in step with the other
    workers, firing due wake-ups after each slice concurrently with them; report what this
    process delivered."""
    from cjo.storage.postgres import PostgresStorage

    try:
        storage = PostgresStorage(dsn, schema=schema, min_size=1, max_size=2,
                                  application_name=f"cjo-caps-worker-{index}")
        try:
            clock = ManualClock(T0)
            channels = {name: RecordingChannel() for name in CHANNELS}
            engine = Engine(storage, channels=dict(channels), clock=clock, due_batch_size=4,
                            retention=Retention(outbox=timedelta(days=365)))
            engine.publish(journeys=journeys(), content=list(CONTENT), caps=[CAP])
            stream = build_stream(seed, customers)
            for slice_ in range(SLICES):
                barrier.wait(timeout=60)  # nobody moves on to the next instant before all do
                clock.set(T0 + slice_ * SLICE)
                mine = [item for i, item in enumerate(stream)
                        if item.slice == slice_ and i % workers == index]
                for item in mine:
                    engine.handle_event(item.event)
                engine.run_due()
            barrier.wait(timeout=60)
            clock.set(END)
            engine.run_due()
            delivered: list[Sent] = [
                (m.idempotency_key, m.customer_id, m.journey_id, m.channel,
                 m.created_at.isoformat())
                for c in channels.values() for m in c.messages
            ]
            results.put((index, None, delivered))
        finally:
            storage.close()
    except BaseException:
        barrier.abort()  # the others stop waiting for this one
        results.put((index, traceback.format_exc(), []))
