"""A shared event stream and the journeys it drives, for the multi-worker tests.

Everything here is deterministic (seeded) and importable by spawned worker processes, which
rebuild the stream themselves instead of receiving it. It imports no test framework.
"""

from __future__ import annotations

import hashlib
import random
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from cjo import (
    Branch,
    Case,
    Channel,
    ContentItem,
    DeliveryResult,
    Engine,
    Event,
    EventTrigger,
    ExitCriterion,
    Journey,
    ManualClock,
    Message,
    ReentryPolicy,
    Retention,
    Send,
    Split,
    SplitPath,
    UpdateProfile,
    Variant,
    Wait,
    WaitForEvent,
    ctx,
)
from cjo.testing import abandoned_cart_journey

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SLICE = timedelta(minutes=15)
EVENT_SLICES = 3 * 24 * 4  # events fall within the first three days
#: After the last slice every worker drains what is left at once, far enough ahead for every
#: wait of every journey to have ended.
END = T0 + EVENT_SLICES * SLICE + timedelta(days=10)
CHANNELS = ("email", "sms", "push")


# --- journeys --------------------------------------------------------------------------------


cart_journey = abandoned_cart_journey


def welcome_journey() -> Journey:
    return Journey(
        id="welcome",
        name="Welcome",
        trigger=EventTrigger("signed_up"),
        entry="hello",
        steps={
            "hello": Send("welcome", "email", next="pause"),
            "pause": Wait(timedelta(days=1), next="mark"),
            "mark": UpdateProfile(set={"onboarded": True}, next="route"),
            "route": Branch((Case(ctx("plan") == "pro", next="pro_tips"),), default="split"),
            "pro_tips": Send("tips", "push", next="wait_app"),
            "split": Split((SplitPath("a", 0.5, next="tips_email"),
                            SplitPath("b", 0.5, next="wait_app"))),
            "tips_email": Send("tips", "email", next="wait_app"),
            "wait_app": WaitForEvent(
                "app_opened", timeout=timedelta(days=2), on_event=None, on_timeout="nudge"
            ),
            "nudge": Send("nudge", "sms"),
        },
        exit_criteria=(ExitCriterion("unsubscribed", event="unsubscribed"),),
        reentry=ReentryPolicy.never(),
    )


CONTENT = (
    ContentItem("cart_reminder", variants=(
        Variant("email", {"subject": "{{ profile.first_name | default: 'Hi' }}, your cart",
                          "text": "You left {{ event.item }} behind."}),
        Variant("sms", {"text": "Still want {{ event.item }}?"}),
    )),
    ContentItem("welcome", variants=(
        Variant("email", {"subject": "Welcome, {{ profile.first_name | default: 'friend' }}",
                          "text": "Welcome"}),
    )),
    ContentItem("tips", variants=(
        Variant("email", {"subject": "Tips for {{ event.plan }} users", "text": "Tips"}),
        Variant("push", {"title": "Pro tip",
                         "body": "Pro tip for {{ profile.first_name | default: 'you' }}"}),
    )),
    ContentItem("nudge", variants=(Variant("sms", {"text": "Open the app?"}),)),
)


# --- the stream ------------------------------------------------------------------------------


class Item(NamedTuple):
    """One thing the host does: an event, or a profile update (``identify``)."""

    slice: int
    customer_id: str
    event: Event | None = None
    attributes: dict[str, Any] | None = None

    @property
    def at(self) -> datetime:
        return T0 + self.slice * SLICE


def build_stream(seed: int, customers: int) -> list[Item]:
    """Items in processing order (by slice). A customer has at most one *distinct* item per
    slice: items of one slice run in parallel on different workers, so two of one customer
    would race. Re-deliveries of an event (same ``event_id``) may share a slice with anything:
    whichever copy comes second is a no-op."""
    rng = random.Random(seed)
    taken: set[tuple[str, int]] = set()
    placed: list[tuple[int, int, Item]] = []

    def place(cid: str, slice_: int, make: Callable[[int], Item]) -> int | None:
        while (cid, slice_) in taken:
            slice_ += 1
        if slice_ >= EVENT_SLICES:
            return None
        taken.add((cid, slice_))
        placed.append((slice_, len(placed), make(slice_)))
        return slice_

    def event(cid: str, name: str, number: int, **props: Any) -> Callable[[int], Item]:
        def make(slice_: int) -> Item:
            at = T0 + slice_ * SLICE
            return Item(slice_, cid, Event(customer_id=cid, name=name, timestamp=at,
                                           properties=props, event_id=f"{cid}-{number}"))
        return make

    for n in range(customers):
        cid = f"cust{n:04}"
        number = iter(range(1_000))
        if rng.random() < 0.9:
            signup = place(cid, rng.randrange(0, 4 * 24), event(
                cid, "signed_up", next(number), plan=rng.choice(["free", "pro"])
            ))
            if signup is not None and rng.random() < 0.5:
                first_name = rng.choice(["Ada", "Bea", "Cy", "Dee"])
                place(cid, signup + rng.randrange(1, 8),
                      lambda s, c=cid, f=first_name: Item(s, c, attributes={"first_name": f}))
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            start = place(cid, rng.randrange(0, EVENT_SLICES), event(
                cid, "added_to_cart", next(number), item=rng.choice(["shoes", "hat", "bag"])
            ))
            if start is None:
                continue
            roll = rng.random()
            if roll < 0.3:  # buys, sometimes before the reminder, sometimes after
                place(cid, start + rng.randrange(1, 40), event(cid, "purchased", next(number)))
            elif roll < 0.55:  # opens the reminder (maybe before it was even sent)
                place(cid, start + rng.randrange(10, 60), event(cid, "email_opened", next(number)))
        if rng.random() < 0.3:
            place(cid, rng.randrange(0, EVENT_SLICES), event(cid, "app_opened", next(number)))
        if rng.random() < 0.05:
            place(cid, rng.randrange(0, EVENT_SLICES), event(cid, "unsubscribed", next(number)))
        if rng.random() < 0.1:  # irrelevant to every journey: filtered before any transaction
            place(cid, rng.randrange(0, EVENT_SLICES), event(cid, "page_viewed", next(number)))

    # Re-deliveries: the same event again, in its own slice or a later one.
    for slice_, _, item in list(placed):
        if item.event is not None and rng.random() < 0.06:
            again = min(EVENT_SLICES - 1, slice_ + rng.choice([0, 0, 1, 5, 30]))
            placed.append((again, len(placed), item._replace(slice=again)))
    placed.sort(key=lambda p: (p[0], p[1]))
    return [item for _, _, item in placed]


def by_slice(stream: list[Item]) -> list[tuple[int, list[tuple[int, Item]]]]:
    """(slice, [(index in the stream, item)]) for every slice that has items, in order."""
    out: dict[int, list[tuple[int, Item]]] = {}
    for index, item in enumerate(stream):
        out.setdefault(item.slice, []).append((index, item))
    return sorted(out.items())


# --- channels --------------------------------------------------------------------------------

Sent = tuple[str, str, str, str, tuple[tuple[str, str], ...]]


def sent_record(message: Message) -> Sent:
    return (message.idempotency_key, message.channel, message.customer_id,
            message.created_at.isoformat(), tuple(sorted(message.fields.items())))


class FlakyRecordingChannel(Channel):
    """Records every delivery (no de-duplication: a double send must show). About a fifth of
    the messages fail their first attempt, decided so every process agrees: a message fails
    when tried at the very instant it was created (its first, immediate dispatch), never on
    the retry the outbox makes later."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.delivered: list[Sent] = []
        self.failed: list[Sent] = []

    def send(self, message: Message) -> DeliveryResult:
        digest = hashlib.blake2b(message.idempotency_key.encode(), digest_size=2).digest()
        if digest[0] < 51 and self.clock.now() == message.created_at:
            self.failed.append(sent_record(message))
            return DeliveryResult("transient", error="flaky provider")
        self.delivered.append(sent_record(message))
        return DeliveryResult("delivered", provider_id=message.idempotency_key)


def make_engine(storage: Any, clock: ManualClock, **options: Any) -> tuple[
    Engine, dict[str, FlakyRecordingChannel]
]:
    channels = {name: FlakyRecordingChannel(clock) for name in CHANNELS}
    # Delivered messages are kept for the whole run, so that every outbox entry can be
    # compared at the end; event ids and activity are pruned as usual (by every worker).
    options.setdefault("retention", Retention(outbox=timedelta(days=365)))
    engine = Engine(storage, channels=dict(channels), clock=clock, **options)
    engine.publish(journeys=[cart_journey(), welcome_journey()], content=list(CONTENT))
    return engine, channels


def run_item(engine: Engine, item: Item) -> None:
    if item.event is not None:
        engine.handle_event(item.event)
    else:
        engine.identify(item.customer_id, item.attributes)


# --- the single-engine reference -------------------------------------------------------------


def reference(seed: int, customers: int) -> tuple[Engine, dict[str, FlakyRecordingChannel]]:
    """The stream on one in-memory engine, slice by slice."""
    clock = ManualClock(T0)
    engine, channels = make_engine(None, clock)
    for slice_, items in by_slice(build_stream(seed, customers)):
        clock.set(T0 + slice_ * SLICE)
        for _, item in items:
            run_item(engine, item)
        engine.run_due()
        engine.dispatch_pending()
    clock.set(END)
    engine.run_due()
    engine.dispatch_pending()
    return engine, channels


# --- one worker process ----------------------------------------------------------------------


def worker_main(
    index: int, workers: int, dsn: str, schema: str, seed: int, customers: int,
    barrier: Any, results: Any,
) -> None:
    """Handle every ``workers``-th item of the stream (round-robin by position, so a
    customer's items land on different workers), slice by slice in step with the other
    workers, then fire due wake-ups and dispatch, concurrently with them."""
    from cjo.storage.postgres import PostgresStorage
    from cjo.worker import run_worker

    try:
        storage = PostgresStorage(dsn, schema=schema, min_size=1, max_size=2,
                                  application_name=f"cjo-worker-{index}")
        try:
            clock = ManualClock(T0)
            # A small batch: workers take turns claiming due wake-ups instead of one taking all.
            engine, channels = make_engine(storage, clock, due_batch_size=4)
            fired = 0
            for k, (slice_, items) in enumerate(by_slice(build_stream(seed, customers))):
                barrier.wait(timeout=60)  # nobody moves on to the next instant before all do
                clock.set(T0 + slice_ * SLICE)
                mine = [item for i, item in items if i % workers == index]
                if (k + index) % 2 and all(item.event is not None for item in mine):
                    engine.handle_events([item.event for item in mine if item.event], batch_size=3)
                else:
                    for item in mine:
                        run_item(engine, item)
                fired += len(engine.run_due().messages)
                engine.dispatch_pending()
            barrier.wait(timeout=60)
            clock.set(END)
            stats = run_worker(engine, poll_interval=0, max_iterations=3)
            fired += stats.messages
            delivered = [s for c in channels.values() for s in c.delivered]
            failed = [s for c in channels.values() for s in c.failed]
            results.put((index, None, delivered, failed, fired))
        finally:
            storage.close()
    except BaseException:
        barrier.abort()  # the others stop waiting for this one
        results.put((index, traceback.format_exc(), [], [], 0))
