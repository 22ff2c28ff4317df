"""Channel failover, on every storage: when a message fails permanently because the customer
cannot be reached on its channel, the next of its Send step's channels takes over at once, by
the rules of a send, as one message with a key of its own (docs/delivery-policies.md)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from cjo import (
    Channel,
    ContentItem,
    DeliveryResult,
    Engine,
    Event,
    EventTrigger,
    FrequencyCap,
    Journey,
    ManualClock,
    Message,
    Offer,
    Outcome,
    ProfileUpdate,
    QuietHours,
    Send,
    Storage,
    Topic,
    Variant,
    Wait,
    WaitForEvent,
)
from cjo.delivery import STANDARD_CONTACT_ATTRIBUTES
from cjo.model.definitions import Definitions
from cjo.simulate import backtest

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # a Monday afternoon, in London too
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
_ids = itertools.count(1)

CART = ContentItem("cart", (
    Variant("push", {"title": "Your cart", "body": "Your {{ event.item }} is waiting"}),
    Variant("sms", {"text": "{{ profile.first_name }}, your {{ event.item }} is waiting"}),
    Variant("email", {"subject": "Your {{ event.item }}", "text": "Still there"}),
), topic="reminders")
DEAL = ContentItem("deal", (
    Variant("push", {"title": "Deal", "body": "20% off"}),
    Variant("sms", {"text": "Deal: 20% off {{ event.item }}"}),
    Variant("email", {"subject": "Deal", "text": "20% off"}),
))
TOKEN_DEAD = DeliveryResult.permanent("InvalidRegistration")


class Provider(Channel):
    """Delivers, except with the results queued in ``failures`` (one per attempt)."""

    def __init__(self) -> None:
        self.failures: list[DeliveryResult] = []
        self.always: DeliveryResult | None = None
        self.delivered: list[Message] = []
        self.attempted: list[str] = []

    def send(self, message: Message) -> DeliveryResult:
        self.attempted.append(message.idempotency_key)
        if self.failures:
            return self.failures.pop(0)
        if self.always is not None:
            return self.always
        self.delivered.append(message)
        return DeliveryResult("delivered")


def _journey(*, then_wait: bool = True, **send: Any) -> Journey:
    """Sends the cart reminder on push (falling back as ``send`` says), then waits a day."""
    send.setdefault("fallbacks", ("sms", "email"))
    steps: dict[str, Any] = {"remind": Send(send.pop("content", "cart"), "push",
                                            next="wait" if then_wait else None, **send)}
    if then_wait:
        steps["wait"] = Wait(DAY)
    return Journey("cart", "remind", steps, trigger=EventTrigger("added_to_cart"))


class Shop:
    def __init__(self, storage: Storage, journey: Journey | None = None,
                 offers: tuple[Offer, ...] = (), **options: Any) -> None:
        self.clock = ManualClock(T0)
        self.providers = {name: Provider() for name in ("push", "sms", "email")}
        self.engine = Engine(storage, channels=dict(self.providers), clock=self.clock,
                             contact_attributes=STANDARD_CONTACT_ATTRIBUTES, **options)
        self.engine.publish(journeys=[journey or _journey()], content=[CART, DEAL],
                            topics=[Topic("reminders")], offers=offers)

    def customer(self, **attributes: Any) -> None:
        profile = {"first_name": "Ann", "push_token": "tok", "phone": "+15550100",
                   "email": "ann@example.com"}
        profile.update(attributes)
        self.engine.identify("ann", {k: v for k, v in profile.items() if v is not None})

    def added(self, item: str = "umbrella") -> Outcome:
        return self.engine.handle_event(Event("ann", "added_to_cart", self.clock.now(),
                                              {"item": item}, event_id=f"e{next(_ids)}"))

    def log(self, kinds: tuple[str, ...] = ("sent", "unreachable", "fallback", "suppressed",
                                            "capped", "quiet_hours", "withheld", "send_failed"),
            ) -> list[tuple[str, str | None, str | None]]:
        return [(a.kind, a.detail, a.channel)
                for a in self.engine.activities(T0 - DAY, T0 + 30 * DAY, customer_id="ann")
                if a.kind in kinds]


@pytest.mark.parametrize("dispatch", ["inline", "deferred"])
def test_a_dead_push_token_sends_the_sms_at_once_and_only_once(
    storage: Storage, dispatch: str
) -> None:
    shop = Shop(storage, dispatch=dispatch)
    shop.customer()
    shop.providers["push"].failures = [TOKEN_DEAD]
    outcome = shop.added()
    if dispatch == "deferred":
        assert shop.engine.dispatch_pending() == 2  # the push, then the SMS in the same pass
    (push,) = [m for m in outcome.messages if m.channel == "push"]
    (sms,) = shop.providers["sms"].delivered
    assert sms.idempotency_key == f"{push.idempotency_key}@sms"
    assert dict(sms.fields) == {"text": "Ann, your umbrella is waiting"}
    assert sms.recipient["phone"] == "+15550100"
    assert (sms.journey_id, sms.step_id, sms.enrollment_id) == (
        "cart", "remind", push.enrollment_id)
    assert shop.providers["email"].attempted == []
    reason = "permanent failure: InvalidRegistration"
    assert shop.log() == [
        ("sent", "push", "push"),
        ("unreachable", reason, "push"),
        ("fallback", reason, "push"),
        ("sent", "sms", "sms"),
    ]
    # The enrollment is where the send left it: waiting a day after the step.
    (enrollment,) = shop.engine.enrollments("ann")
    assert (enrollment.step_id, enrollment.wake_at) == ("wait", T0 + DAY)
    # Another pass, or another worker on the same storage, sends nothing more.
    other = Engine(storage, channels=dict(shop.providers), clock=shop.clock,
                   contact_attributes=STANDARD_CONTACT_ATTRIBUTES)
    shop.clock.advance(HOUR)
    assert shop.engine.dispatch_pending() == 0
    assert other.dispatch_pending() == 0
    assert [m.idempotency_key for m in shop.providers["sms"].delivered] == [sms.idempotency_key]


def test_a_retried_dead_letter_that_fails_again_sends_no_second_failover(
    storage: Storage,
) -> None:
    shop = Shop(storage)
    shop.customer()
    shop.providers["push"].always = TOKEN_DEAD
    shop.added()
    (letter,) = shop.engine.dead_letters()
    shop.engine.unblock_channel("ann", "push")
    assert shop.engine.retry_dead_letter(letter.key)
    assert shop.engine.dispatch_pending() == 1
    assert len(shop.providers["push"].attempted) == 2
    assert len(shop.providers["sms"].attempted) == 1
    assert shop.log(kinds=("sent", "fallback")) == [
        ("sent", "push", "push"),
        ("fallback", "permanent failure: InvalidRegistration", "push"),
        ("sent", "sms", "sms"),
    ]


def test_a_retry_that_fails_for_good_counts_its_failover_as_attempted(storage: Storage) -> None:
    # Inline: the retry's pass sends the failover at once, so it counts it with the retry.
    shop = Shop(storage)
    shop.customer()
    shop.providers["push"].failures = [DeliveryResult.transient("503"), TOKEN_DEAD]
    shop.added()
    assert shop.providers["sms"].delivered == []
    shop.clock.advance(HOUR)
    assert shop.engine.dispatch_pending() == 2  # the push again, then the SMS
    assert len(shop.providers["sms"].delivered) == 1
    assert shop.engine.dispatch_pending() == 0


def test_no_eligible_fallback_is_suppressed(storage: Storage) -> None:
    shop = Shop(storage, journey=_journey(fallbacks=("sms",)))
    shop.customer(phone=None)
    shop.providers["push"].failures = [TOKEN_DEAD]
    outcome = shop.added()
    assert [m.channel for m in outcome.messages] == ["push"]
    assert shop.providers["sms"].attempted == []
    reason = "permanent failure: InvalidRegistration"
    assert shop.log() == [
        ("sent", "push", "push"),
        ("unreachable", reason, "push"),
        ("fallback", reason, "push"),
        ("suppressed", "no phone", "sms"),
    ]


def test_a_chain_of_dead_channels_fails_over_to_each_in_turn_until_none_is_left(
    storage: Storage,
) -> None:
    shop = Shop(storage)
    shop.customer()
    shop.providers["push"].failures = [TOKEN_DEAD]
    shop.providers["sms"].failures = [DeliveryResult.permanent("21211 invalid number")]
    (push, sms, email) = shop.added().messages
    assert [m.idempotency_key for m in (sms, email)] == [
        f"{push.idempotency_key}@sms", f"{push.idempotency_key}@email"]
    assert [m.channel for m in shop.providers["email"].delivered] == ["email"]
    assert dict(email.fields) == {"subject": "Your umbrella", "text": "Still there"}
    push_dead = "permanent failure: InvalidRegistration"
    sms_dead = "permanent failure: 21211 invalid number"
    assert shop.log() == [
        ("sent", "push", "push"),
        ("unreachable", push_dead, "push"),
        ("fallback", push_dead, "push"),
        ("sent", "sms", "sms"),
        ("unreachable", sms_dead, "sms"),
        ("fallback", sms_dead, "sms"),
        ("sent", "email", "email"),
    ]
    # Every channel dead: the last failure has nothing after it.
    shop.clock.advance(2 * DAY)
    shop.engine.unblock_channel("ann", "push")
    shop.engine.unblock_channel("ann", "sms")
    for provider in shop.providers.values():
        provider.always = DeliveryResult.permanent("gone")
    outcome = shop.added("kettle")
    assert [m.channel for m in outcome.messages] == ["push", "sms", "email"]
    assert set(outcome.delivery.values()) == {"dead"}
    assert len(shop.engine.dead_letters()) == 2 + 3
    assert shop.log(kinds=("fallback", "suppressed"))[-2:] == [
        ("fallback", "permanent failure: gone", "push"),
        ("fallback", "permanent failure: gone", "sms"),
    ]


@pytest.mark.parametrize("failure", [
    DeliveryResult.transient("503 unavailable"),
    DeliveryResult.permanent("401 bad API key", unreachable=False),
], ids=["transient", "not unreachable"])
def test_a_failure_that_does_not_blame_the_address_does_not_fail_over(
    storage: Storage, failure: DeliveryResult
) -> None:
    shop = Shop(storage, max_delivery_attempts=2)
    shop.customer()
    shop.providers["push"].always = failure
    shop.added()
    shop.clock.advance(HOUR)
    shop.engine.dispatch_pending()  # the retry of a transient failure fails too
    assert len(shop.engine.dead_letters()) == 1
    assert shop.providers["sms"].attempted == shop.providers["email"].attempted == []
    assert shop.log(kinds=("fallback", "sent", "unreachable")) == [("sent", "push", "push")]


def test_a_failover_keeps_the_offer_and_is_a_transactional_send_if_the_step_is(
    storage: Storage,
) -> None:
    journey = _journey(content="cart", offers=("deal",), transactional=True,
                       fallbacks=("sms",))
    shop = Shop(storage, journey=journey, offers=(Offer("deal", "deal"),))
    shop.customer()
    shop.engine.set_consent("ann", subscribed=False)  # no marketing: a transactional send goes
    shop.providers["push"].failures = [TOKEN_DEAD]
    (push, sms) = shop.added().messages
    assert (push.content_id, push.offer_id) == ("deal", "deal")
    assert (sms.content_id, sms.offer_id, sms.transactional) == ("deal", "deal", True)
    assert dict(sms.fields) == {"text": "Deal: 20% off umbrella"}
    state = shop.engine.customer_state("ann")
    assert state is not None and state.offers["deal"].count == 1  # one offer, one message


def test_a_failover_takes_the_failed_messages_cap_slot_and_a_full_cap_skips_it(
    storage: Storage,
) -> None:
    shop = Shop(storage, journey=_journey(then_wait=False, fallbacks=("sms",),
                                          when_capped="defer"))
    shop.engine.publish(caps=[
        FrequencyCap("daily", 1, period="calendar_day"),
        FrequencyCap("sms_daily", 1, period="calendar_day", channel="sms"),
    ])
    shop.customer()
    shop.providers["push"].failures = [TOKEN_DEAD]
    # The failed push took the day's one slot: the SMS taking over from it takes the slot.
    assert [m.channel for m in shop.added().messages] == ["push", "sms"]
    state = shop.engine.customer_state("ann")
    assert state is not None and [ch for _, ch, _ in state.sends] == ["sms"]

    shop.clock.advance(HOUR)
    shop.engine.publish(caps=[FrequencyCap("daily", 2, period="calendar_day")])
    shop.engine.unblock_channel("ann", "push")
    shop.providers["push"].failures = [TOKEN_DEAD]
    # A full cap (the SMS one) skips the failover, whatever ``when_capped`` says: it never
    # waits, and the enrollment it belongs to has ended. The failed push keeps its slot.
    assert [m.channel for m in shop.added().messages] == ["push"]
    assert shop.log(kinds=("capped",)) == [("capped", "sms_daily: skipped", "sms")]
    assert [e.status for e in shop.engine.enrollments("ann")] == ["completed"]  # not deferred
    state = shop.engine.customer_state("ann")
    assert state is not None and [ch for _, ch, _ in state.sends] == ["sms", "push"]


def test_a_failover_in_quiet_hours_waits_in_the_outbox_for_their_end(storage: Storage) -> None:
    shop = Shop(storage, journey=_journey(then_wait=False, fallbacks=("sms",)))
    shop.engine.publish(quiet_hours=[QuietHours("sms_nights", time(21), time(8),
                                                 channels=("sms",))])
    shop.customer()
    shop.clock.set(datetime(2026, 3, 2, 22, 0, tzinfo=UTC))  # push is not held at night
    shop.providers["push"].failures = [TOKEN_DEAD]
    outcome = shop.added()
    (push, sms) = outcome.messages
    assert outcome.delivery == {push.idempotency_key: "dead", sms.idempotency_key: "pending"}
    assert shop.providers["sms"].attempted == []
    assert shop.log(kinds=("quiet_hours",)) == [
        ("quiet_hours", "sms_nights: deferred to 2026-03-03T08:00:00+00:00", "sms")]
    shop.clock.set(datetime(2026, 3, 3, 8, 0, tzinfo=UTC))
    assert shop.engine.dispatch_pending() == 1
    assert [m.idempotency_key for m in shop.providers["sms"].delivered] == [sms.idempotency_key]


def test_feedback_on_a_failover_is_the_steps_and_ends_a_wait_for_its_engagement(
    storage: Storage,
) -> None:
    journey = Journey("cart", "remind", {
        "remind": Send("cart", "push", fallbacks=("email",), next="opened"),
        "opened": WaitForEvent("opened", timeout=DAY, of_send="remind", on_event="thanks"),
        "thanks": Send("deal", "email"),
    }, trigger=EventTrigger("added_to_cart"))
    shop = Shop(storage, journey=journey)
    shop.customer()
    shop.providers["push"].failures = [TOKEN_DEAD]
    (_, email) = shop.added().messages
    shop.engine.handle_event(Event("ann", "opened", shop.clock.now(),
                                   {"message_id": email.idempotency_key}, event_id="open-1"))
    (opened,) = [a for a in shop.engine.activities(T0, T0 + DAY, customer_id="ann")
                 if a.kind == "opened"]
    assert (opened.journey_id, opened.step_id, opened.channel) == ("cart", "remind", "email")
    assert [m.content_id for m in shop.providers["email"].delivered] == ["cart", "deal"]


def test_a_back_test_with_the_callers_channels_fails_over_as_live() -> None:
    providers = {name: Provider() for name in ("push", "sms", "email")}
    providers["push"].always = TOKEN_DEAD
    definitions = Definitions(journeys=(_journey(),), content=(CART, DEAL),
                              topics=(Topic("reminders"),))
    result = backtest(definitions, [
        (T0, ProfileUpdate("ann", {"first_name": "Ann", "push_token": "t",
                                   "phone": "+15550100"})),
        Event("ann", "added_to_cart", T0, {"item": "umbrella"}, event_id="e-1"),
    ], channels=providers, render=True, contact_attributes=STANDARD_CONTACT_ATTRIBUTES)
    (sms,) = providers["sms"].delivered
    assert dict(sms.fields) == {"text": "Ann, your umbrella is waiting"}
    assert sms.idempotency_key == f"{providers['push'].attempted[0]}@sms"
    assert result.messages == {"push": 1, "sms": 1}


def test_a_message_of_a_journey_version_the_engine_does_not_know_is_not_failed_over() -> None:
    from cjo.runtime.core import Decider, new_state
    from cjo.runtime.registry import Registry

    decider = Decider(Registry(), new_state("ann", T0))
    failed = Message("cart:ann:1.1:remind:1", "ann", "push", "cart", {}, "cart", 3, "remind",
                     "cart:ann:1.1", T0, context={"item": "umbrella"})
    why = decider.fail_over(failed, "permanent failure: gone", T0)
    assert why == "journey 'cart' version 3 is not known to this engine"
    assert (decider.messages, decider.activities) == ([], [])


def test_a_failover_renders_the_context_the_stored_message_kept(storage: Storage) -> None:
    # Deferred: the failed push is read back from the outbox, with its context (an instant in
    # it too), after the enrollment ended.
    order = ContentItem("order", (
        Variant("push", {"title": "Order", "body": "Arriving"}),
        Variant("sms", {"text": "{{ event.item }} arrives {{ event.eta | date: '%d %b %H:%M' }}"}),
    ))
    journey = Journey("shipping", "tell", {"tell": Send("order", "push", fallbacks=("sms",),
                                                        transactional=True)},
                      trigger=EventTrigger("shipped"))
    clock = ManualClock(T0)
    push, sms = Provider(), Provider()
    push.always = TOKEN_DEAD
    engine = Engine(storage, channels={"push": push, "sms": sms}, clock=clock,
                    dispatch="deferred")
    engine.publish(journeys=[journey], content=[order])
    engine.handle_event(Event("ann", "shipped", T0, {"item": "Kettle", "eta": T0 + DAY},
                              event_id="s-1"))
    assert [e.status for e in engine.enrollments("ann")] == ["completed"]
    assert engine.dispatch_pending() == 2
    (message,) = sms.delivered
    assert dict(message.fields) == {"text": "Kettle arrives 03 Mar 14:00"}
    assert message.context == {}  # nothing after SMS: nothing kept
    entry = storage.outbox_entry(push.attempted[0])
    assert entry is not None and entry.message.context == {"item": "Kettle", "eta": T0 + DAY}
    # The customer's data the message keeps is in their export too.
    exported = {m["idempotency_key"]: m for m in engine.export_customer("ann")["messages"]}
    assert exported[entry.message.idempotency_key]["context"] == {
        "item": "Kettle", "eta": (T0 + DAY).isoformat()}
