"""Acceptance of content and delivery, as a host lives it, on every storage: each test is one
sentence of what cjo promises, with the exact messages, instants and activities it leads to.

- a send due at 23:00 local is deferred to 08:00 local the next day;
- the 4th marketing message in a week is skipped and recorded, a receipt still goes out;
- a customer without push is reached by the SMS fallback;
- a transient failure is retried three times, then delivered, under one idempotency key;
- a hard bounce, or a permanent delivery failure, marks email unreachable;
- an unsubscribed customer receives transactional messages only;
- an undefined variable is refused at publish;
- a republished content item is rendered by the very next send of every journey using it.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cjo import (
    Action,
    Channel,
    ContentItem,
    ContentSample,
    DefinitionError,
    DeliveryResult,
    Engine,
    Event,
    EventTrigger,
    FrequencyCap,
    Journey,
    ManualClock,
    Message,
    Outcome,
    QuietHours,
    Send,
    Storage,
    Topic,
    Variant,
    Wait,
)
from cjo.channels.retry import retry_delay
from cjo.delivery import STANDARD_CONTACT_ATTRIBUTES
from cjo.limits import MAX_DELIVERY_ERROR, MAX_RETRY_AFTER

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # Monday 09:00 in New York (EST, UTC-5)
NEW_YORK = ZoneInfo("America/New_York")
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
_ids = itertools.count(1)

NEWS = ContentItem("news", (
    Variant("email", {"subject": "This week", "text": "This week at the shop"}),
    Variant("sms", {"text": "This week: shop.example/news"}),
    Variant("push", {"title": "This week", "body": "New at the shop"}),
), topic="newsletter")
RECEIPT = ContentItem("receipt", (
    Variant("email", {"subject": "Your receipt", "text": "Thank you for your order"}),
    Variant("sms", {"text": "Order received"}),
))
TOPICS = (Topic("newsletter"),)


class Provider(Channel):
    """A provider that delivers, except for the results queued in ``failures`` (taken one per
    attempt). Every attempt is kept with its instant; a key it accepted twice shows twice."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.failures: list[DeliveryResult] = []
        self.attempts: list[tuple[str, datetime]] = []
        self.delivered: list[Message] = []

    def send(self, message: Message) -> DeliveryResult:
        self.attempts.append((message.idempotency_key, self.clock.now()))
        if self.failures:
            return self.failures.pop(0)
        self.delivered.append(message)
        return DeliveryResult("delivered", provider_id=message.idempotency_key)


class Shop:
    """A host: an engine on a manual clock, an email, an SMS and a push provider, and
    customers with an email address and a phone number (no push token) in New York."""

    def __init__(self, storage: Storage, **options: Any) -> None:
        self.clock = ManualClock(T0)
        self.providers = {name: Provider(self.clock) for name in ("email", "sms", "push")}
        self.engine = Engine(storage, channels=dict(self.providers), clock=self.clock,
                             contact_attributes=STANDARD_CONTACT_ATTRIBUTES, **options)

    def customer(self, customer_id: str = "ann") -> None:
        self.engine.identify(customer_id, {"email": f"{customer_id}@example.com",
                                           "phone": "+15550100"}, timezone="America/New_York")

    def event(self, name: str, customer: str = "ann", **properties: Any) -> Outcome:
        return self.engine.handle_event(Event(
            customer_id=customer, name=name, timestamp=self.clock.now(), properties=properties,
            event_id=f"e{next(_ids)}",
        ))

    def sent(self, customer: str = "ann") -> list[tuple[str, str, datetime, dict[str, str]]]:
        """(channel, content, created at, fields) of every message delivered, oldest first."""
        messages = [m for p in self.providers.values() for m in p.delivered
                    if m.customer_id == customer]
        return [(m.channel, m.content_id, m.created_at, dict(m.fields))
                for m in sorted(messages, key=lambda m: (m.created_at, m.idempotency_key))]

    def log(self, customer: str = "ann", kinds: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
        """(instant, kind, journey, detail, channel) of the customer's activities of ``kinds``
        (every kind but step runs when none are named)."""
        return [(a.at, a.kind, a.journey_id, a.detail, a.channel)
                for a in self.engine.activities(T0 - DAY, T0 + 60 * DAY, customer_id=customer)
                if (a.kind in kinds if kinds else a.kind != "step")]


def _journey(jid: str, event: str, content: str = "news", channel: str = "email",
             **send: Any) -> Journey:
    return Journey(jid, "send", {"send": Send(content, channel, **send)},
                   trigger=EventTrigger(event))


def test_a_send_due_at_23_00_local_is_deferred_to_08_00_local_the_next_day(
    storage: Storage,
) -> None:
    shop = Shop(storage)
    shop.engine.publish(journeys=[_journey("digest", "digest_ready")], content=[NEWS],
                        topics=TOPICS, quiet_hours=[QuietHours("night", time(21), time(8))])
    shop.customer()
    eleven_pm = datetime(2026, 3, 2, 23, 0, tzinfo=NEW_YORK)
    eight_am = datetime(2026, 3, 3, 8, 0, tzinfo=NEW_YORK)
    shop.clock.set(eleven_pm.astimezone(UTC))
    assert shop.event("digest_ready").messages == ()

    shop.clock.set(eight_am.astimezone(UTC) - timedelta(seconds=1))
    assert shop.engine.run_due().messages == ()
    shop.clock.set(eight_am.astimezone(UTC) + HOUR)  # a worker that comes by late
    (message,) = shop.engine.run_due().messages
    assert message.created_at == eight_am  # the deferred instant itself, not the late pass
    assert message.created_at.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(
        2026, 3, 3, 8, 0)
    assert shop.sent() == [("email", "news", eight_am, dict(NEWS.variants[0].fields))]
    assert shop.log() == [
        (eleven_pm, "entered", "digest", None, None),
        (eleven_pm, "quiet_hours", "digest",
         "night: deferred to 2026-03-03T13:00:00+00:00", "email"),
        (eight_am, "sent", "digest", "email", "email"),
        (eight_am, "completed", "digest", None, None),
    ]


def test_the_4th_marketing_message_in_a_week_is_skipped_and_a_receipt_still_goes_out(
    storage: Storage,
) -> None:
    shop = Shop(storage)
    shop.engine.publish(
        journeys=[_journey("promo", "sale"),
                  _journey("receipts", "ordered", "receipt", transactional=True)],
        content=[NEWS, RECEIPT], topics=TOPICS,
        caps=[FrequencyCap("weekly", 3, per=7 * DAY)],
    )
    shop.customer()
    for day in range(4):
        shop.clock.set(T0 + day * DAY)
        shop.event("sale")
    fourth = T0 + 3 * DAY
    shop.clock.set(fourth + HOUR)
    shop.event("ordered")

    assert [(channel, content, at) for channel, content, at, _ in shop.sent()] == [
        ("email", "news", T0), ("email", "news", T0 + DAY), ("email", "news", T0 + 2 * DAY),
        ("email", "receipt", fourth + HOUR),
    ]
    assert shop.log(kinds=("sent", "capped")) == [
        (T0, "sent", "promo", "email", "email"),
        (T0 + DAY, "sent", "promo", "email", "email"),
        (T0 + 2 * DAY, "sent", "promo", "email", "email"),
        (fourth, "capped", "promo", "weekly: skipped", "email"),
        (fourth + HOUR, "sent", "receipts", "email", "email"),
    ]
    # Skipped, and the journey went on to its end.
    assert [entry for entry in shop.log() if entry[0] == fourth] == [
        (fourth, "entered", "promo", None, None),
        (fourth, "capped", "promo", "weekly: skipped", "email"),
        (fourth, "completed", "promo", None, None),
    ]
    # A week after the first one, its slot is free again.
    shop.clock.set(T0 + 7 * DAY)
    assert len(shop.event("sale").messages) == 1


def test_a_customer_without_push_is_reached_by_sms_fallback(storage: Storage) -> None:
    shop = Shop(storage)
    shop.engine.publish(
        journeys=[_journey("digest", "digest_ready", channel="push", fallbacks=("sms",))],
        content=[NEWS], topics=TOPICS,
    )
    shop.customer()  # no push_token
    (message,) = shop.event("digest_ready").messages
    assert (message.channel, message.recipient["phone"]) == ("sms", "+15550100")
    assert shop.sent() == [("sms", "news", T0, {"text": "This week: shop.example/news"})]
    assert shop.providers["push"].attempts == []
    assert shop.log() == [
        (T0, "entered", "digest", None, None),
        (T0, "fallback", "digest", "no push_token", "push"),
        (T0, "sent", "digest", "sms", "sms"),
        (T0, "completed", "digest", None, None),
    ]


def _receipts_by_sms(
    storage: Storage, backoff: timedelta, ceiling: timedelta
) -> tuple[Shop, Provider]:
    """A shop sending transactional receipts by SMS to one customer, retrying as given."""
    shop = Shop(storage, retry_backoff=backoff, max_retry_delay=ceiling)
    shop.engine.publish(journeys=[_journey("receipts", "ordered", "receipt", channel="sms",
                                           transactional=True)], content=[RECEIPT])
    shop.customer()
    return shop, shop.providers["sms"]


def test_a_transient_failure_is_retried_three_times_then_delivered_under_one_key(
    storage: Storage,
) -> None:
    backoff, ceiling = timedelta(minutes=1), timedelta(hours=1)
    shop, sms = _receipts_by_sms(storage, backoff, ceiling)
    sms.failures = [DeliveryResult.transient("carrier busy")] * 3
    outcome = shop.event("ordered")
    (message,) = outcome.messages
    key = message.idempotency_key
    assert outcome.delivery == {key: "pending"}

    # Each retry falls due at the back-off of the attempt before it, and not a moment sooner.
    expected = [T0]
    for attempt in (1, 2, 3):
        due = expected[-1] + retry_delay(key, attempt, backoff, ceiling)
        entry = shop.engine.storage.outbox_entry(key)
        assert entry is not None
        assert (entry.status, entry.attempts, entry.available_at, entry.last_error) == (
            "pending", attempt, due, "carrier busy")
        shop.clock.set(due - timedelta(seconds=1))
        assert shop.engine.dispatch_pending() == 0
        shop.clock.set(due)
        assert shop.engine.dispatch_pending() == 1
        expected.append(due)

    assert sms.attempts == [(key, at) for at in expected]  # one key on every attempt
    assert sms.delivered == [message]
    entry = shop.engine.storage.outbox_entry(key)
    assert entry is not None and (entry.status, entry.attempts) == ("delivered", 4)
    assert shop.engine.dead_letters() == []
    assert shop.log(kinds=("sent",)) == [(T0, "sent", "receipts", "sms", "sms")]
    state = shop.engine.customer_state("ann")
    assert state is not None and state.blocked == {}  # transient failures block nothing


def test_a_provider_asking_to_retry_later_is_left_alone_that_long(storage: Storage) -> None:
    backoff, ceiling = timedelta(minutes=1), timedelta(hours=1)
    shop, sms = _receipts_by_sms(storage, backoff, ceiling)
    sms.failures = [
        DeliveryResult.transient("rate limited", retry_after=timedelta(minutes=20)),
        DeliveryResult.transient("rate limited", retry_after=timedelta(seconds=1)),
        DeliveryResult.transient("rate limited", retry_after=timedelta(days=30)),
    ]
    (message,) = shop.event("ordered").messages
    key = message.idempotency_key

    def due() -> datetime:
        entry = shop.engine.storage.outbox_entry(key)
        assert entry is not None and entry.status == "pending"
        return entry.available_at

    # Longer than the back-off: the provider's wait, not a moment sooner.
    assert due() == T0 + timedelta(minutes=20)
    shop.clock.set(due() - timedelta(seconds=1))
    assert shop.engine.dispatch_pending() == 0
    shop.clock.set(due())
    assert shop.engine.dispatch_pending() == 1
    # Shorter than the back-off: the back-off.
    second = shop.clock.now()
    assert due() == second + retry_delay(key, 2, backoff, ceiling)
    shop.clock.set(due())
    assert shop.engine.dispatch_pending() == 1
    # Past the longest wait granted: cut to it.
    assert due() == shop.clock.now() + MAX_RETRY_AFTER
    shop.clock.set(due())
    assert shop.engine.dispatch_pending() == 1
    assert sms.delivered == [message]


class _SlowProvider(Provider):
    """Takes 20 seconds to answer (its clock moves while it sends), then asks to be left
    alone for a minute, once."""

    def send(self, message: Message) -> DeliveryResult:
        self.clock.advance(seconds=20)
        return super().send(message)


def test_a_provider_asking_to_retry_later_is_left_alone_that_long_from_its_answer(
    storage: Storage,
) -> None:
    # Two messages in one worker pass: the second attempt is made 40 s after the pass began,
    # and the provider's minute counts from then.
    shop = Shop(storage, dispatch="deferred")
    sms = shop.providers["sms"] = _SlowProvider(shop.clock)
    shop.engine.channels["sms"] = sms
    shop.engine.publish(content=[RECEIPT], journeys=[
        _journey("receipts", "ordered", "receipt", "sms", transactional=True)])
    for customer in ("ann", "bob"):
        shop.customer(customer)
        shop.event("ordered", customer)
    sms.failures = [DeliveryResult("delivered"),
                    DeliveryResult.transient("rate limited", retry_after=timedelta(minutes=1))]
    assert shop.engine.dispatch_pending() == 2
    [(key, asked_at)] = sms.attempts[1:]
    entry = shop.engine.storage.outbox_entry(key)
    assert entry is not None and entry.status == "pending"
    assert asked_at == T0 + timedelta(seconds=40)
    assert entry.available_at == asked_at + timedelta(minutes=1)


def _digest_and_receipts(storage: Storage) -> Shop:
    """A shop sending a marketing digest (falling back to SMS) and transactional receipts."""
    shop = Shop(storage)
    shop.engine.publish(
        journeys=[_journey("digest", "digest_ready", fallbacks=("sms",)),
                  _journey("receipts", "ordered", "receipt", transactional=True)],
        content=[NEWS, RECEIPT], topics=TOPICS,
    )
    return shop


def test_a_hard_bounce_marks_email_unreachable(storage: Storage) -> None:
    shop = _digest_and_receipts(storage)
    shop.customer()
    (first,) = shop.event("digest_ready").messages
    assert first.channel == "email"
    shop.clock.advance(HOUR)
    shop.event("bounced", message_id=first.idempotency_key, type="hard")
    state = shop.engine.customer_state("ann")
    assert state is not None and state.blocked == {"email": "hard bounce"}

    shop.clock.advance(HOUR)
    assert [m.channel for m in shop.event("digest_ready").messages] == ["sms"]  # the fallback
    assert shop.event("ordered").messages == ()      # even a receipt: nothing goes to email
    assert [(channel, content, at) for channel, content, at, _ in shop.sent()] == [
        ("email", "news", T0), ("sms", "news", T0 + 2 * HOUR)]
    assert shop.log(kinds=("bounced", "fallback", "suppressed", "sent")) == [
        (T0, "sent", "digest", "email", "email"),
        (T0 + HOUR, "bounced", "digest", "hard", "email"),
        (T0 + 2 * HOUR, "fallback", "digest", "channel blocked: hard bounce", "email"),
        (T0 + 2 * HOUR, "sent", "digest", "sms", "sms"),
        (T0 + 2 * HOUR, "suppressed", "receipts", "channel blocked: hard bounce", "email"),
    ]


def test_a_permanent_delivery_failure_marks_the_channel_unreachable(storage: Storage) -> None:
    shop = _digest_and_receipts(storage)
    shop.customer()
    shop.customer("bob")
    shop.providers["email"].failures = [DeliveryResult.permanent("550 mailbox unavailable")]
    outcome = shop.event("digest_ready")
    (dead, failover) = outcome.messages   # the step's SMS fallback takes over at once
    assert outcome.delivery == {dead.idempotency_key: "dead",
                                failover.idempotency_key: "delivered"}
    (letter,) = shop.engine.dead_letters()
    assert (letter.key, letter.attempts, letter.dead_at) == (dead.idempotency_key, 1, T0)
    state = shop.engine.customer_state("ann")
    assert state is not None
    assert state.blocked == {"email": "permanent failure: 550 mailbox unavailable"}

    # The next journeys do not write to the dead address: the fallback applies, and a
    # transactional message on email alone is suppressed. Bob's address still works.
    shop.clock.advance(HOUR)
    (again,) = shop.event("digest_ready").messages
    assert shop.event("ordered").messages == ()
    assert len(shop.event("ordered", customer="bob").messages) == 1
    assert again.channel == "sms"
    sms = {"text": "This week: shop.example/news"}
    assert shop.sent() == [("sms", "news", T0, sms), ("sms", "news", T0 + HOUR, sms)]
    reason = "permanent failure: 550 mailbox unavailable"
    assert shop.log(kinds=("sent", "unreachable", "fallback", "suppressed")) == [
        (T0, "sent", "digest", "email", "email"),
        (T0, "unreachable", "digest", reason, "email"),
        (T0, "fallback", "digest", reason, "email"),
        (T0, "sent", "digest", "sms", "sms"),
        (T0 + HOUR, "fallback", "digest", f"channel blocked: {reason}", "email"),
        (T0 + HOUR, "sent", "digest", "sms", "sms"),
        (T0 + HOUR, "suppressed", "receipts", f"channel blocked: {reason}", "email"),
    ]
    (unreachable,) = [a for a in shop.engine.activities(T0, T0 + DAY, customer_id="ann")
                      if a.kind == "unreachable"]
    assert (unreachable.enrollment_id, unreachable.step_id, unreachable.content_id,
            unreachable.content_version) == (dead.enrollment_id, "send", "news", 1)

    # Unblocked by the host (a corrected address), email is used again.
    shop.engine.unblock_channel("ann", "email")
    shop.clock.advance(HOUR)
    assert [m.channel for m in shop.event("digest_ready").messages] == ["email"]


class _Careless(Channel):
    """Reports failures badly: an exception object as the error (no storage can write it,
    so the result is refused where it is built, in ``send``: a transient failure), or a
    provider's whole error page."""

    def __init__(self) -> None:
        self.page = "550 " + "x" * 100_000

    def send(self, message: Message) -> DeliveryResult:
        if message.customer_id == "ann":
            return DeliveryResult("permanent", error=ValueError("mailbox full"))  # type: ignore[arg-type]
        return DeliveryResult.permanent(self.page)


def test_a_failure_a_channel_reports_badly_is_recorded_and_bounded(storage: Storage) -> None:
    channel = _Careless()
    engine = Engine(storage, channels={"email": channel}, clock=ManualClock(T0),
                    max_delivery_attempts=2)
    engine.publish(journeys=[_journey("digest", "digest_ready")], content=[NEWS],
                   topics=TOPICS)
    outcomes = {}
    for customer in ("ann", "bob"):
        engine.identify(customer, {"email": f"{customer}@example.com"})
        outcomes[customer] = engine.handle_event(Event(
            customer_id=customer, name="digest_ready", timestamp=T0, event_id=f"d-{customer}"))

    (ann,) = outcomes["ann"].messages
    entry = storage.outbox_entry(ann.idempotency_key)
    assert entry is not None
    assert (entry.status, entry.attempts) == ("pending", 1)  # recorded: retried, not lost
    assert entry.last_error is not None
    assert entry.last_error.startswith(
        "UsageError: DeliveryResult error must be a str or None, got ValueError")

    (bob,) = outcomes["bob"].messages
    dead = storage.outbox_entry(bob.idempotency_key)
    assert dead is not None
    assert (dead.status, dead.last_error) == ("dead", channel.page[:MAX_DELIVERY_ERROR - 1] + "…")
    reason = f"permanent failure: {dead.last_error}"
    state = engine.customer_state("bob")
    assert state is not None
    assert state.blocked == {"email": reason}
    assert [a.detail for a in engine.activities(T0, T0 + DAY, customer_id="bob")
            if a.kind == "unreachable"] == [reason]


def test_what_a_permanent_failure_does_not_block(storage: Storage) -> None:
    """An action's call has its own failure policy; a permanent failure on the sending side
    says nothing of the customer's address; a transient failure that used up its attempts
    may pass."""
    desk_calls: list[str] = []

    def open_ticket(call: Message) -> DeliveryResult:
        desk_calls.append(call.idempotency_key)
        return DeliveryResult.permanent("400 bad request")

    shop = Shop(storage, actions={"open_ticket": open_ticket}, max_delivery_attempts=1)
    care = Journey("care", "ticket", {"ticket": Action("open_ticket", {"subject": "help"})},
                   trigger=EventTrigger("complained_to_support"))
    shop.engine.publish(journeys=[care, _journey("receipts", "ordered", "receipt",
                                                 channel="sms", transactional=True)],
                        content=[RECEIPT])
    shop.customer()
    shop.event("complained_to_support")
    shop.providers["sms"].failures = [DeliveryResult.transient("carrier busy")]
    shop.event("ordered")
    shop.providers["sms"].failures = [DeliveryResult.permanent("401 bad API key",
                                                               unreachable=False)]
    shop.event("ordered")

    assert len(desk_calls) == 1
    assert sorted(d.last_error or "" for d in shop.engine.dead_letters()) == [
        "400 bad request", "401 bad API key", "carrier busy"]
    state = shop.engine.customer_state("ann")
    assert state is not None and state.blocked == {}
    assert shop.log(kinds=("unreachable",)) == []


def test_an_unsubscribed_customer_receives_only_transactional_messages(
    storage: Storage,
) -> None:
    shop = Shop(storage)
    untopical = ContentItem("tips", (Variant("sms", {"text": "Tip of the week"}),))
    shop.engine.publish(
        journeys=[_journey("digest", "digest_ready"),
                  _journey("tips", "digest_ready", "tips", channel="sms"),
                  _journey("receipts", "ordered", "receipt", transactional=True),
                  _journey("sms_receipts", "ordered", "receipt", channel="sms",
                           transactional=True)],
        content=[NEWS, RECEIPT, untopical], topics=TOPICS,
    )
    shop.customer()
    shop.customer("bob")
    shop.event("unsubscribed")  # from all marketing, on every channel
    shop.clock.advance(HOUR)
    assert shop.event("digest_ready").messages == ()
    assert sorted(m.channel for m in shop.event("ordered").messages) == ["email", "sms"]
    assert [m.journey_id for m in shop.event("digest_ready", customer="bob").messages] == [
        "digest", "tips"]

    at = T0 + HOUR
    assert [(c, content, when) for c, content, when, _ in shop.sent()] == [
        ("email", "receipt", at), ("sms", "receipt", at)]
    assert shop.log(kinds=("sent", "suppressed")) == [
        (at, "suppressed", "digest", "unsubscribed from all marketing", "email"),
        (at, "suppressed", "tips", "unsubscribed from all marketing", "sms"),
        (at, "sent", "receipts", "email", "email"),
        (at, "sent", "sms_receipts", "sms", "sms"),
    ]


def test_an_undefined_variable_is_refused_at_publish(storage: Storage) -> None:
    shop = Shop(storage)
    sample = ContentSample(profile={"first_name": "Ann"})
    greeting = ContentItem("greeting", (
        Variant("email", {"subject": "Hello {{ profile.first_name }}", "text": "Hello"}),
    ), sample=sample)
    shop.engine.publish(journeys=[_journey("hello", "signed_up", "greeting")],
                        content=[greeting])
    generation = shop.engine.generation
    typo = ContentItem("greeting", (
        Variant("email", {"subject": "Hello {{ profile.frist_name }}", "text": "Hello"}),
    ), sample=sample)
    with pytest.raises(DefinitionError) as refused:
        shop.engine.publish(content=[typo])
    assert [(p.location, p.message) for p in refused.value.problems] == [(
        "content 'greeting' / variant email",
        "field 'subject' does not render on the sample: profile.frist_name is undefined",
    )]
    # Nothing changed: the published item is still the one that sends.
    assert shop.engine.generation == generation
    assert shop.engine.definitions.content == (greeting,)
    shop.engine.identify("ann", {"email": "ann@example.com", "first_name": "Ann"})
    shop.event("signed_up")
    assert shop.sent() == [("email", "greeting", T0, {"subject": "Hello Ann", "text": "Hello"})]


def test_a_republished_item_is_rendered_by_the_next_send_of_every_journey_using_it(
    storage: Storage,
) -> None:
    shop = Shop(storage)
    welcome = Journey("welcome", "wait", {"wait": Wait(DAY, next="send"),
                                          "send": Send("news", "email")},
                      trigger=EventTrigger("signed_up"))
    shop.engine.publish(
        journeys=[welcome, _journey("digest", "digest_ready"),
                  _journey("flash", "sale", channel="sms")],
        content=[NEWS], topics=TOPICS,
    )
    shop.customer()
    shop.event("signed_up")   # waits a day inside "welcome"
    shop.event("digest_ready")  # sent now: the old text

    # Another process republishes the item while the welcome journey waits.
    shop.clock.advance(HOUR)
    other = Engine(storage, channels=dict(shop.providers), clock=shop.clock)
    new_email = {"subject": "Spring", "text": "Spring at the shop"}
    new_sms = {"text": "Spring: shop.example/spring"}
    other.publish(content=[ContentItem("news", (Variant("email", new_email),
                                                Variant("sms", new_sms)),
                                       topic="newsletter")])

    # The very next send of every journey using it, by this engine, renders version 2.
    shop.clock.advance(HOUR)
    shop.event("digest_ready")
    shop.event("sale")
    shop.clock.set(T0 + DAY)
    shop.engine.run_due()
    second = T0 + 2 * HOUR
    assert shop.sent() == [
        ("email", "news", T0, dict(NEWS.variants[0].fields)),
        ("email", "news", second, new_email),
        ("sms", "news", second, new_sms),
        ("email", "news", T0 + DAY, new_email),
    ]
    versions = [(m.journey_id, m.content_version)
                for p in shop.providers.values() for m in p.delivered]
    assert sorted(versions) == [("digest", 1), ("digest", 2), ("flash", 2), ("welcome", 2)]
    assert [(a.journey_id, a.content_version)
            for a in shop.engine.activities(T0, T0 + 2 * DAY, customer_id="ann")
            if a.kind == "sent"] == [("digest", 1), ("digest", 2), ("flash", 2),
                                     ("welcome", 2)]
