"""Delivery feedback acts on the message as it was sent (its channel, content and topic), and a
message written earlier (deferred, or retried) is not sent after a block or an unsubscribe."""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

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
    Offer,
    RecordingChannel,
    Send,
    Storage,
    StorageError,
    Topic,
    UsageError,
    Variant,
    Wait,
    attr,
)
from cjo.delivery import STANDARD_CONTACT_ATTRIBUTES

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
_ids = itertools.count()


def _content(content_id: str, topic: str | None = None) -> ContentItem:
    return ContentItem(content_id, (
        Variant("email", {"subject": content_id, "text": content_id}),
        Variant("sms", {"text": content_id}),
    ), topic=topic)


def _event(engine: Engine, name: str, customer: str = "ann", **props: Any) -> Any:
    return engine.handle_event(Event(customer_id=customer, name=name, properties=props,
                                     timestamp=engine.clock.now(), event_id=f"e{next(_ids)}"))


def _activities(engine: Engine, *kinds: str, customer: str = "ann") -> list[tuple[Any, ...]]:
    return [(a.kind, a.channel, a.content_id, a.content_version, a.detail)
            for a in engine.activities(T0 - DAY, T0 + 30 * DAY, customer_id=customer)
            if a.kind in kinds]


# --- feedback on the message as sent ---------------------------------------------------------


def _fallback_engine(storage: Storage, **send: Any) -> Engine:
    """Sends ``hello`` by email, falling back to SMS; a gold customer gets the ``gold`` offer
    (content of topic ``deals``) instead."""
    engine = Engine(storage=storage, channels={"email": RecordingChannel(),
                                               "sms": RecordingChannel()},
                    clock=ManualClock(T0), contact_attributes=STANDARD_CONTACT_ATTRIBUTES)
    engine.publish(
        content=[_content("hello"), _content("gold", topic="deals")],
        topics=[Topic("news"), Topic("deals")],
        offers=[Offer("gold_card", "gold", when=attr("tier") == "gold")],
        journeys=[Journey("j", trigger=EventTrigger("go"), entry="s", steps={
            "s": Send("hello", "email", fallbacks=("sms",), offers=("gold_card",), **send)})],
    )
    return engine


def test_feedback_is_logged_and_acted_on_for_the_channel_and_content_sent(
    storage: Storage,
) -> None:
    engine = _fallback_engine(storage)
    engine.identify("ann", {"phone": "+15550100", "tier": "gold"})  # no email: SMS
    (message,) = _event(engine, "go").messages
    assert (message.channel, message.content_id, message.offer_id) == ("sms", "gold", "gold_card")

    _event(engine, "clicked", message_id=message.idempotency_key, url="u")
    # The batch path links the message too.
    engine.handle_events([Event(customer_id="ann", name="bounced", timestamp=T0,
                                properties={"message_id": message.idempotency_key,
                                            "type": "hard"}, event_id="bounce")])

    assert _activities(engine, "clicked", "bounced") == [
        ("clicked", "sms", "gold", 1, "u"), ("bounced", "sms", "gold", 1, "hard"),
    ]
    state = engine.customer_state("ann")
    assert state is not None and state.blocked == {"sms": "hard bounce"}


def test_unsubscribing_from_a_message_uses_its_channel_and_its_content_topic(
    storage: Storage,
) -> None:
    engine = _fallback_engine(storage)
    engine.identify("ann", {"phone": "+15550100"})
    engine.identify("bob", {"phone": "+15550101", "tier": "gold"})
    (plain,) = _event(engine, "go").messages
    (offer,) = _event(engine, "go", customer="bob").messages

    _event(engine, "unsubscribed", message_id=plain.idempotency_key)
    _event(engine, "unsubscribed", "bob", message_id=offer.idempotency_key)
    _event(engine, "complained", "bob", message_id=offer.idempotency_key)

    ann, bob = engine.customer_state("ann"), engine.customer_state("bob")
    assert ann is not None and bob is not None
    # No topic: all marketing on the channel it went out on.
    assert ann.consent == {("*", "sms"): (False, T0)}
    # The offer's content has a topic: that one, on every channel; a complaint, all on SMS.
    assert bob.consent == {("deals", "*"): (False, T0), ("*", "sms"): (False, T0)}
    assert _activities(engine, "unsubscribed", customer="bob") == [
        ("unsubscribed", "sms", "gold", 1, "deals")]


def test_the_step_topic_still_wins_over_the_content_topic(storage: Storage) -> None:
    engine = _fallback_engine(storage, topic="news")
    engine.identify("ann", {"phone": "+15550100", "tier": "gold"})
    (message,) = _event(engine, "go").messages
    _event(engine, "unsubscribed", message_id=message.idempotency_key)
    state = engine.customer_state("ann")
    assert state is not None and state.consent == {("news", "*"): (False, T0)}


# --- messages written earlier are checked again before they go out --------------------------


def _deferred(storage: Storage, *, transactional: bool = False) -> tuple[Engine, RecordingChannel]:
    sms = RecordingChannel()
    engine = Engine(storage=storage, channels={"sms": sms}, clock=ManualClock(T0),
                    dispatch="deferred")
    engine.publish(content=[_content("c", topic="promo")], topics=[Topic("promo")],
                   journeys=[Journey("j", trigger=EventTrigger("go"), entry="s", steps={
                       "s": Send("c", "sms", transactional=transactional)})])
    return engine, sms


def test_a_deferred_message_is_withheld_after_a_block_or_an_unsubscribe(
    storage: Storage,
) -> None:
    engine, sms = _deferred(storage)
    keys = {c: _event(engine, "go", c).pending[0].idempotency_key for c in ("a", "b", "c")}
    _event(engine, "unsubscribed", "a", topic="promo")
    engine.block_channel("b", "sms", reason="STOP")

    assert engine.dispatch_pending() == 1
    assert [m.customer_id for m in sms.messages] == ["c"]
    assert _activities(engine, "withheld", customer="a") == [
        ("withheld", "sms", "c", 1, "unsubscribed from promo")]
    assert _activities(engine, "withheld", customer="b") == [
        ("withheld", "sms", "c", 1, "channel blocked: STOP")]
    # Given up on, not a dead letter to retry, and never sent by a later pass.
    for customer in ("a", "b"):
        entry = storage.outbox_entry(keys[customer])
        assert entry is not None and entry.status == "discarded"
    assert engine.dead_letters() == []
    assert engine.dispatch_pending() == 0


def test_a_deferred_transactional_message_passes_an_unsubscribe_but_not_a_block(
    storage: Storage,
) -> None:
    engine, sms = _deferred(storage, transactional=True)
    _event(engine, "go", "a")
    _event(engine, "go", "b")
    engine.set_consent("a", subscribed=False)
    _event(engine, "channel_blocked", "b", channel="sms", reason="STOP")

    assert engine.dispatch_pending() == 1
    assert [m.customer_id for m in sms.messages] == ["a"]
    assert _activities(engine, "withheld", customer="b") == [
        ("withheld", "sms", "c", 1, "channel blocked: STOP")]


class _FailsOnce(Channel):
    def __init__(self) -> None:
        self.calls = 0
        self.delivered: list[Message] = []

    def send(self, message: Message) -> DeliveryResult:
        self.calls += 1
        if self.calls == 1:
            return DeliveryResult.transient("503")
        self.delivered.append(message)
        return DeliveryResult("delivered")


def test_a_retry_is_withheld_after_a_stop(storage: Storage) -> None:
    channel = _FailsOnce()
    clock = ManualClock(T0)
    engine = Engine(storage=storage, channels={"sms": channel}, clock=clock)
    engine.publish(content=[_content("c")], journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="s", steps={"s": Send("c", "sms")})])
    (message,) = _event(engine, "go").messages
    clock.advance(seconds=10)
    _event(engine, "channel_blocked", channel="sms", reason="STOP")
    clock.advance(DAY)

    assert engine.dispatch_pending() == 0
    assert (channel.calls, channel.delivered) == (1, [])
    entry = storage.outbox_entry(message.idempotency_key)
    assert entry is not None and entry.status == "discarded"
    assert _activities(engine, "withheld") == [
        ("withheld", "sms", "c", 1, "channel blocked: STOP")]


def test_a_group_sends_nothing_its_later_items_unsubscribed_or_blocked(
    storage: Storage,
) -> None:
    # handle_events commits a group before it sends: an unsubscribe or a block later in the
    # group is in the record by then, and stops what the group wrote before it.
    sms = RecordingChannel()
    engine = Engine(storage=storage, channels={"sms": sms}, clock=ManualClock(T0))
    engine.publish(content=[_content("c", topic="promo"), _content("r")],
                   topics=[Topic("promo")], journeys=[
        Journey("j", trigger=EventTrigger("go"), entry="s", steps={"s": Send("c", "sms")}),
        Journey("t", trigger=EventTrigger("paid"), entry="s",
                steps={"s": Send("r", "sms", transactional=True)}),
    ])

    def event(customer: str, name: str, **props: Any) -> Event:
        return Event(customer_id=customer, name=name, properties=props, timestamp=T0,
                     event_id=f"e{next(_ids)}")

    out = engine.handle_events([
        event("a", "go"), event("a", "paid"), event("a", "unsubscribed", topic="promo"),
        event("b", "go"), event("b", "channel_blocked", channel="sms", reason="STOP"),
        event("c", "go"), event("c", "opened"),
    ])
    assert sorted((m.customer_id, m.content_id) for m in sms.messages) == [("a", "r"), ("c", "c")]
    assert sorted(out.delivery.values()) == ["delivered", "delivered", "discarded", "discarded"]
    assert _activities(engine, "withheld", customer="a") == [
        ("withheld", "sms", "c", 1, "unsubscribed from promo")]
    assert _activities(engine, "withheld", customer="b") == [
        ("withheld", "sms", "c", 1, "channel blocked: STOP")]
    assert engine.dead_letters() == []
    assert engine.dispatch_pending() == 0


@pytest.mark.parametrize("call", ["group", "event"])
def test_a_storage_failure_judging_a_group_again_leaves_its_messages_to_the_outbox(
    storage: Storage, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    call: str,
) -> None:
    # The items are committed before their messages are judged again: a storage failure
    # then must not report them as not handled. Nothing judged goes out; the outbox's next
    # pass judges and sends what may still go.
    sms = RecordingChannel()
    clock = ManualClock(T0)
    engine = Engine(storage=storage, channels={"sms": sms}, clock=clock)
    # One call: the send falls due and is caught up by the unsubscribe's transaction.
    steps: dict[str, Any] = {"w": Wait(timedelta(hours=1), next="s")} if call == "event" else {}
    engine.publish(content=[_content("c", topic="promo"), _content("r")],
                   topics=[Topic("promo")], journeys=[
        Journey("j", trigger=EventTrigger("go"), entry="w" if steps else "s",
                steps={**steps, "s": Send("c", "sms")}),
        Journey("t", trigger=EventTrigger("paid"), entry="s",
                steps={"s": Send("r", "sms", transactional=True)}),
    ])

    def event(name: str, **props: Any) -> Event:
        return Event(customer_id="a", name=name, properties=props, timestamp=clock.now(),
                     event_id=f"e{next(_ids)}")

    def failing(*args: Any, **kwargs: Any) -> None:
        raise StorageError("the database went away")

    with monkeypatch.context() as patched:
        patched.setattr(storage, "complete_outbox_many", failing)
        if call == "group":
            out = engine.handle_events([event("go"), event("paid"),
                                        event("unsubscribed", topic="promo")])
            assert sorted(out.delivery.values()) == ["pending", "pending"]
        else:
            engine.handle_event(event("go"))
            clock.advance(timedelta(hours=2))
            out = engine.handle_event(event("unsubscribed", topic="promo"))
            assert list(out.delivery.values()) == ["pending"]
    assert sms.messages == []
    assert "not judged again after a consent change" in caplog.text
    assert engine.customer_state("a").consent  # the unsubscribe is kept

    clock.advance(DAY)  # past the messages' lease
    engine.dispatch_pending()
    assert [m.content_id for m in sms.messages] == (["r"] if call == "group" else [])
    assert _activities(engine, "withheld", customer="a") == [
        ("withheld", "sms", "c", 1, "unsubscribed from promo")]


@pytest.mark.parametrize("stop", ["event", "group", "set_consent", "block_channel"])
def test_a_send_caught_up_before_a_stop_in_the_same_call_is_withheld(
    storage: Storage, stop: str
) -> None:
    # The worker is late: the 10:00 send is due when the customer's "STOP" arrives, and the
    # call fires it first, in the STOP's own transaction. Inline, it would go out after the
    # commit that recorded the STOP: it is judged again, as the worker would judge it.
    sms = RecordingChannel()
    clock = ManualClock(T0)
    engine = Engine(storage=storage, channels={"sms": sms}, clock=clock)
    engine.publish(content=[_content("c", topic="promo")], topics=[Topic("promo")],
                   journeys=[Journey("j", trigger=EventTrigger("go"), entry="wait", steps={
                       "wait": Wait(timedelta(hours=1), next="s"), "s": Send("c", "sms")})])
    _event(engine, "go")
    clock.advance(timedelta(hours=1, minutes=5))
    stop_event = Event(customer_id="ann", name="channel_blocked", timestamp=clock.now(),
                       properties={"channel": "sms", "reason": "STOP"}, event_id="stop")
    if stop == "event":
        out = engine.handle_event(stop_event)
    elif stop == "group":
        out = engine.handle_events([stop_event])
    elif stop == "set_consent":
        out = engine.set_consent("ann", subscribed=False)
    else:
        out = engine.block_channel("ann", "sms", reason="STOP")

    (message,) = out.messages
    assert message.created_at == T0 + timedelta(hours=1)  # decided when it fell due
    assert sms.messages == []
    assert out.delivery == {message.idempotency_key: "discarded"}
    reason = ("unsubscribed from all marketing" if stop == "set_consent"
              else "channel blocked: STOP")
    assert _activities(engine, "withheld") == [("withheld", "sms", "c", 1, reason)]
    assert engine.dead_letters() == []
    assert engine.dispatch_pending() == 0


def test_inline_dispatch_reads_no_record_before_sending(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    sms = RecordingChannel()
    engine = Engine(storage=storage, channels={"sms": sms}, clock=ManualClock(T0))
    engine.publish(content=[_content("c")], journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="s", steps={"s": Send("c", "sms")})])
    reads: list[object] = []
    monkeypatch.setattr(storage, "peek_many", lambda ids: reads.append(ids) or {})
    _event(engine, "go")
    assert len(sms.messages) == 1
    assert reads == []


# --- delivery results ----------------------------------------------------------------------


def test_an_unknown_delivery_status_is_refused_naming_the_valid_ones() -> None:
    with pytest.raises(UsageError, match="'sent' is not one of delivered, transient, permanent"):
        DeliveryResult("sent")  # type: ignore[arg-type]


class _Returns(Channel):
    def __init__(self, make: Any) -> None:
        self.make = make

    def send(self, message: Message) -> DeliveryResult:
        result: DeliveryResult = self.make()
        return result


class _Unshowable:
    """A provider's reply object, returned by mistake, whose repr() fails (a detached
    record that would load a field to show itself)."""

    def __repr__(self) -> str:
        raise RuntimeError("detached")


@pytest.mark.parametrize(("make", "error"), [
    (lambda: {"status": "sent"}, "channel returned {'status': 'sent'}, not a DeliveryResult"),
    (lambda: DeliveryResult("sent"),  # type: ignore[arg-type]
     "UsageError: DeliveryResult status 'sent' is not one of delivered, transient, permanent"),
    # Said without its repr(), rather than raising out of the call that sent it.
    (_Unshowable, "channel returned a _Unshowable (its repr() failed), not a DeliveryResult"),
])
def test_a_bad_result_from_a_channel_is_reported_as_it_is(
    storage: Storage, make: Any, error: str
) -> None:
    engine = Engine(storage=storage, channels={"sms": _Returns(make)}, clock=ManualClock(T0))
    engine.publish(content=[_content("c")], journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="s", steps={"s": Send("c", "sms")})])
    (message,) = _event(engine, "go").messages
    entry = storage.outbox_entry(message.idempotency_key)
    assert entry is not None and (entry.status, entry.last_error) == ("pending", error)


def _render_body(message: Message) -> DeliveryResult:
    raise KeyError("body")  # a bug in the host's adapter, not a provider's refusal


def test_an_exception_raised_by_a_channel_is_logged_with_its_traceback(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    # Retried and, five attempts later, a dead letter: the traceback is what finds the bug.
    engine = Engine(storage=storage, channels={"sms": _Returns(lambda: None)},
                    clock=ManualClock(T0))
    engine.channels["sms"].send = _render_body  # type: ignore[method-assign]
    engine.publish(content=[_content("c")], journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="s", steps={"s": Send("c", "sms")})])
    with caplog.at_level(logging.WARNING, logger="cjo"):
        (message,) = _event(engine, "go").messages
    entry = storage.outbox_entry(message.idempotency_key)
    assert entry is not None and entry.last_error == "KeyError: 'body'"
    (raised,) = [r for r in caplog.records if r.exc_info]
    assert message.idempotency_key in raised.getMessage()
    assert raised.exc_info is not None and raised.exc_info[0] is KeyError
    assert "_render_body" in caplog.text  # the frame that raised


# --- a slow channel and the dispatch lease ---------------------------------------------------


class _SlowChannel(Channel):
    """Takes 20 seconds of the shared clock per message; during its ``meanwhile_at``-th send,
    ``meanwhile`` runs (another worker's pass)."""

    def __init__(self, clock: ManualClock, meanwhile_at: int = 0) -> None:
        self.clock, self.meanwhile_at = clock, meanwhile_at
        self.meanwhile: Any = None
        self.sent: list[str] = []

    def send(self, message: Message) -> DeliveryResult:
        self.clock.advance(seconds=20)
        self.sent.append(message.idempotency_key)
        if len(self.sent) == self.meanwhile_at and self.meanwhile is not None:
            self.meanwhile()
        return DeliveryResult("delivered")


def _two_workers(storage_factory: Any, dispatch: str) -> tuple[Engine, Engine, _SlowChannel,
                                                              _SlowChannel]:
    clock = ManualClock(T0)
    slow, other = _SlowChannel(clock, meanwhile_at=4), _SlowChannel(clock)
    journey = Journey("hello", trigger=EventTrigger("signed_up"), entry="s",
                      steps={"s": Send("hello", "email")})
    first = Engine(storage=storage_factory(), channels={"email": slow}, clock=clock,
                   dispatch=dispatch)  # type: ignore[arg-type]
    first.publish(journeys=[journey], content=[_content("hello")])
    second = Engine(storage=storage_factory(), channels={"email": other}, clock=clock)
    slow.meanwhile = second.dispatch_pending
    return first, second, slow, other


def _sign_ups(count: int) -> list[Event]:
    return [Event(customer_id=f"c{i}", name="signed_up", timestamp=T0, event_id=f"s{i}")
            for i in range(count)]


def test_a_worker_sends_nothing_its_lease_no_longer_covers(storage_factory: Any) -> None:
    # Ten messages leased for a minute; each send takes 20 seconds. Another worker's pass at
    # the fourth send finds messages whose lease has run out: unless the first worker stops
    # sending them in time, both send them.
    first, _second, slow, other = _two_workers(storage_factory, "deferred")
    first.handle_events(_sign_ups(10))
    assert first.dispatch_pending() == 10
    keys = slow.sent + other.sent
    assert len(keys) == len(set(keys)) == 10
    assert {first.storage.outbox_entry(k).status for k in keys} == {"delivered"}  # type: ignore[union-attr]


def test_inline_sends_leave_what_their_lease_no_longer_covers_to_the_worker(
    storage_factory: Any,
) -> None:
    first, second, slow, other = _two_workers(storage_factory, "inline")
    outcome = first.handle_events(_sign_ups(10))
    assert 0 < len(slow.sent) < 10
    assert [outcome.delivery[k] for k in slow.sent] == ["delivered"] * len(slow.sent)
    left = [m.idempotency_key for m in outcome.messages if m.idempotency_key not in slow.sent]
    assert {outcome.delivery[k] for k in left} == {"pending"}
    second.dispatch_pending()
    keys = slow.sent + other.sent
    assert len(keys) == len(set(keys)) == 10
