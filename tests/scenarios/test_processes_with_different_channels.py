"""Processes with different channels on one database: a web process with email only and a
worker with email and SMS. Each sends only on its own channels; SMS messages the web process
writes wait in the outbox, untouched, until the worker sends them, once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from cjo import (
    Channel,
    ContentItem,
    DefinitionError,
    DeliveryResult,
    Engine,
    EventTrigger,
    Journey,
    ManualClock,
    Message,
    RecordingChannel,
    Send,
    Variant,
    Wait,
)
from cjo.storage.base import OutboxEntry, Storage
from tests.helpers import T0, Factory, ev

ORDER_MAIL = ContentItem("order_mail", (Variant("email", {"subject": "Thanks", "text": "Thanks"}),))
ORDER_SMS = ContentItem("order_sms", (Variant("sms", {"text": "Thanks for your order"}),))
HOUR = timedelta(hours=1)
CUSTOMERS = ("ann", "bob", "cid")


class _BusyOnce(Channel):
    """Fails the first attempt of every message transiently, then delivers; keeps each key
    it was given, once per attempt."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def send(self, message: Message) -> DeliveryResult:
        self.attempts.append(message.idempotency_key)
        if self.attempts.count(message.idempotency_key) == 1:
            return DeliveryResult.transient("carrier busy")
        return DeliveryResult("delivered")


def _entry(storage: Storage, key: str) -> OutboxEntry:
    entry = storage.outbox_entry(key)
    assert entry is not None
    return entry


class _SlowEmail(Channel):
    """Takes 20 seconds of the shared clock per message; during its second send, ``meanwhile``
    runs (another process's worker pass)."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.meanwhile: Callable[[], object] | None = None
        self.sent: list[str] = []

    def send(self, message: Message) -> DeliveryResult:
        self.clock.advance(seconds=20)
        self.sent.append(message.idempotency_key)
        if len(self.sent) == 2 and self.meanwhile is not None:
            self.meanwhile()
        return DeliveryResult("delivered")


def _processes(
    storage_factory: Factory, sms: Channel, clock: ManualClock | None = None,
    web_email: Channel | None = None,
) -> tuple[Engine, Engine, ManualClock, Channel, RecordingChannel]:
    clock = clock or ManualClock(T0)
    web_email = web_email or RecordingChannel()
    worker_email = RecordingChannel()
    # One handle each, on one database, as two processes would have.
    worker = Engine(storage_factory(), channels={"email": worker_email, "sms": sms}, clock=clock)
    web = Engine(storage_factory(), channels={"email": web_email}, clock=clock)
    worker.publish(
        journeys=[
            Journey(id="ordered", trigger=EventTrigger("ordered"), entry="mail",
                    steps={"mail": Send("order_mail", "email", next="text"),
                           "text": Send("order_sms", "sms")}),
            Journey(id="shipped", trigger=EventTrigger("shipped"), entry="wait",
                    steps={"wait": Wait(HOUR, next="text"), "text": Send("order_sms", "sms")}),
        ],
        content=[ORDER_MAIL, ORDER_SMS],
    )
    for customer in CUSTOMERS:
        web.identify(customer, {"email": f"{customer}@example.com", "phone": "+15555550100"})
    return web, worker, clock, web_email, worker_email


def test_sms_written_by_the_web_process_wait_untouched_for_the_worker(
    storage_factory: Factory,
) -> None:
    sms = RecordingChannel()
    web, worker, clock, web_email, worker_email = _processes(storage_factory, sms)
    assert isinstance(web_email, RecordingChannel)
    storage = web.storage

    texts: list[str] = []
    for customer in CUSTOMERS:
        outcome = web.handle_event(ev("ordered", customer, clock.now()))
        mail, text = outcome.messages
        assert (mail.channel, text.channel) == ("email", "sms")
        # Inline: the web process sends its email, and leaves the SMS pending, released.
        assert outcome.delivery == {mail.idempotency_key: "delivered",
                                    text.idempotency_key: "pending"}
        assert outcome.pending == (text,)
        texts.append(text.idempotency_key)
    assert [m.customer_id for m in web_email.messages] == list(CUSTOMERS)
    assert sms.messages == []

    untouched = [(_entry(storage, k).status, _entry(storage, k).attempts,
                  _entry(storage, k).available_at) for k in texts]
    assert untouched == [("pending", 0, T0)] * 3, "no attempt, no lease held"
    # The web process's worker loop, even long after any lease: nothing claimed, nothing dead.
    for _ in range(2):
        assert web.dispatch_pending() == 0
        clock.advance(minutes=30)
        assert web.run_worker(max_iterations=1, poll_interval=0).dispatched == 0
    assert [(_entry(storage, k).status, _entry(storage, k).attempts,
             _entry(storage, k).available_at) for k in texts] == untouched
    assert web.dead_letters() == []
    assert web.pending_by_channel() == {"sms": 3}

    # The worker sends them, each once.
    assert worker.dispatch_pending() == 3
    assert sorted(m.idempotency_key for m in sms.messages) == sorted(texts)
    assert worker.dispatch_pending() == 0
    assert web.dispatch_pending() == 0
    assert len(sms.messages) == 3
    assert [(_entry(storage, k).status, _entry(storage, k).attempts) for k in texts] == [
        ("delivered", 1)
    ] * 3
    assert worker.pending_by_channel() == {}
    assert worker_email.messages == [], "the web process sent its own emails"


def test_a_wake_up_fired_by_the_web_process_leaves_its_sms_to_the_worker(
    storage_factory: Factory,
) -> None:
    sms = RecordingChannel()
    web, worker, clock, _web_email, _worker_email = _processes(storage_factory, sms)
    web.handle_event(ev("shipped", "ann", clock.now()))
    clock.advance(HOUR)
    outcome = web.run_due()  # the web process's worker loop fires the wait
    (text,) = outcome.messages
    assert outcome.delivery == {text.idempotency_key: "pending"}
    entry = _entry(web.storage, text.idempotency_key)
    assert (entry.status, entry.attempts, entry.available_at) == ("pending", 0, clock.now())
    assert worker.run_worker(max_iterations=1, poll_interval=0).dispatched == 1
    assert [m.idempotency_key for m in sms.messages] == [text.idempotency_key]


def test_a_retry_stays_with_the_process_that_has_the_channel(
    storage_factory: Factory,
) -> None:
    sms = _BusyOnce()
    web, worker, clock, _web_email, _worker_email = _processes(storage_factory, sms)
    (_mail, text) = web.handle_event(ev("ordered", "ann", clock.now())).messages
    key = text.idempotency_key
    assert worker.dispatch_pending() == 1  # busy: a retry is due after its back-off
    retry_at = _entry(web.storage, key).available_at
    assert retry_at > clock.now()
    clock.set(retry_at)
    assert web.dispatch_pending() == 0
    entry = _entry(web.storage, key)
    assert (entry.status, entry.attempts, entry.available_at) == ("pending", 1, retry_at)
    assert worker.dispatch_pending() == 1
    assert sms.attempts == [key, key]
    assert _entry(web.storage, key).status == "delivered"


@pytest.mark.parametrize("dispatch", ["inline", "deferred"])
def test_a_channel_no_process_has_keeps_its_messages_pending_and_counted(
    storage_factory: Factory, dispatch: str,
) -> None:
    clock = ManualClock(T0)
    full = Engine(storage_factory(), channels={"email": RecordingChannel(),
                                               "sms": RecordingChannel()}, clock=clock)
    full.publish(journeys=[Journey(id="ordered", trigger=EventTrigger("ordered"), entry="text",
                                   steps={"text": Send("order_sms", "sms")})],
                 content=[ORDER_SMS])
    # The process that had SMS is gone; what is left has email only.
    left = Engine(storage_factory(), channels={"email": RecordingChannel()}, clock=clock,
                  dispatch=dispatch)  # type: ignore[arg-type]
    left.identify("ann", {"phone": "+15555550100"})
    (text,) = left.handle_event(ev("ordered", "ann", clock.now())).messages
    clock.advance(days=30)
    assert left.dispatch_pending() == 0
    left.prune()
    assert left.pending_by_channel() == {"sms": 1}
    assert left.dead_letters() == []
    entry = _entry(left.storage, text.idempotency_key)
    assert (entry.status, entry.attempts) == ("pending", 0)


def test_a_slow_provider_in_the_web_process_keeps_every_message_sent_once(
    storage_factory: Factory,
) -> None:
    # Ten orders in one group, an email and an SMS each. The web process starts its email
    # sends only while half their minute's lease remains (20 seconds each: two of them), and
    # hands the SMS over before the first; the worker's pass during the second send finds the
    # SMS, never an email the web process still holds.
    clock = ManualClock(T0)
    slow, sms = _SlowEmail(clock), RecordingChannel()
    web, worker, _clock, _web_email, worker_email = _processes(
        storage_factory, sms, clock, slow
    )
    passes: list[int] = []
    slow.meanwhile = lambda: passes.append(worker.dispatch_pending())
    customers = [f"c{i}" for i in range(10)]
    outcome = web.handle_events([ev("ordered", c, clock.now()) for c in customers])
    assert passes == [10], "the worker's pass, during the second send: the ten SMS"
    assert len(slow.sent) == 2
    assert sorted(m.customer_id for m in sms.messages) == customers
    assert worker_email.messages == []
    left = [k for k, status in outcome.delivery.items() if status == "pending"]
    assert len(left) == 18  # ten SMS and the eight emails not started
    assert worker.dispatch_pending() == 8
    mails = slow.sent + [m.idempotency_key for m in worker_email.messages]
    texts = [m.idempotency_key for m in sms.messages]
    assert len(mails) == len(set(mails)) == 10
    assert len(texts) == len(set(texts)) == 10
    assert worker.dispatch_pending() == web.dispatch_pending() == 0
    assert {_entry(web.storage, k).status for k in mails + texts} == {"delivered"}


def test_a_block_later_in_the_group_is_judged_by_the_process_that_sends(
    storage_factory: Factory,
) -> None:
    # The web process commits a group, then judges what it sends against the record the
    # group leaves; an SMS it does not send is judged by the worker, when it sends, as a
    # deferred message is: withheld, never sent, not a dead letter.
    sms = RecordingChannel()
    web, worker, clock, _web_email, _worker_email = _processes(storage_factory, sms)
    outcome = web.handle_events([
        ev("ordered", "bob", clock.now()),
        ev("channel_blocked", "bob", clock.now(), channel="sms", reason="STOP"),
    ])
    (_mail, text) = outcome.messages
    assert outcome.delivery[text.idempotency_key] == "pending"
    assert worker.dispatch_pending() == 0  # withheld: not attempted
    assert sms.messages == []
    assert _entry(web.storage, text.idempotency_key).status == "discarded"
    assert [(a.kind, a.detail) for a in worker.activities(T0, T0 + HOUR, customer_id="bob")
            if a.kind == "withheld"] == [("withheld", "channel blocked: STOP")]
    assert worker.dead_letters() == []


def test_a_process_with_fewer_channels_publishes_and_pauses_on_channels_stored_definitions_name(
    storage_factory: Factory,
) -> None:
    sms = RecordingChannel()
    web, worker, clock, _, _ = _processes(storage_factory, sms)
    # The worker published SMS sends; the web process (email only) changes the set all the
    # same: a new journey on email, one on the SMS channel the stored set already names, and
    # a pause and resume.
    web.publish(
        journeys=[
            Journey(id="thanks", trigger=EventTrigger("reviewed"), entry="mail",
                    steps={"mail": Send("order_mail", "email")}),
            Journey(id="reminder", trigger=EventTrigger("left"), entry="text",
                    steps={"text": Send("order_sms", "sms")}),
        ],
    )
    web.pause_journey("ordered")
    web.resume_journey("ordered")
    outcome = web.handle_event(ev("left", "ann", clock.now()))
    [text] = outcome.messages
    assert outcome.delivery == {text.idempotency_key: "pending"}
    assert worker.dispatch_pending() == 1
    assert [m.idempotency_key for m in sms.messages] == [text.idempotency_key]
    # A channel no stored definition names and this process lacks is still a typo to refuse.
    with pytest.raises(DefinitionError, match="push"):
        web.publish(journeys=[Journey(id="nudge", trigger=EventTrigger("left"), entry="p",
                                      steps={"p": Send("order_sms", "push")})])
