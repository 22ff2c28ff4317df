"""Delivery policies as a host sees them, on every storage: consent topics and channel blocks,
fallback channels, frequency caps (rolling and per calendar day, skip / defer / exit), quiet
hours across DST, and delivery feedback linked back to the message."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta
from typing import Any

import attrs
import pytest

from cjo import (
    Activity,
    ContentItem,
    DefinitionError,
    Definitions,
    Engine,
    Event,
    EventTrigger,
    FrequencyCap,
    Journey,
    ManualClock,
    Offer,
    QuietHours,
    RecordingChannel,
    Send,
    Storage,
    Taxonomy,
    Topic,
    Variant,
    Wait,
)
from cjo.analytics import format_table, journey_report
from cjo.delivery import STANDARD_CONTACT_ATTRIBUTES
from cjo.errors import InvalidEventError, UnknownChannelError, UnknownTopicError
from cjo.model.taxonomy import Category
from cjo.runtime.kinds import split_fraction
from cjo.simulate import backtest

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
_ids = itertools.count(1)

NEWS = ContentItem("news", (
    Variant("email", {"subject": "News", "text": "News"}),
    Variant("sms", {"text": "News by SMS"}),
    Variant("push", {"title": "News by push", "body": "News by push"}),
), topic="newsletter")
RECEIPT = ContentItem("receipt", (
    Variant("email", {"subject": "Your receipt", "text": "Your receipt"}), Variant("sms", {"text": "Receipt"}),
))
TOPICS = (Topic("newsletter"), Topic("offers", default="opt_in"))


class Host:
    """An engine on a manual clock with one recording channel per channel name."""

    def __init__(self, storage: Storage, **options: Any) -> None:
        self.clock = ManualClock(T0)
        self.channels = {name: RecordingChannel() for name in ("email", "sms", "push")}
        self.engine = Engine(storage, channels=self.channels, clock=self.clock, **options)  # type: ignore[arg-type]

    def event(self, name: str, customer: str = "c1", **props: Any) -> Any:
        return self.engine.handle_event(Event(
            customer_id=customer, name=name, timestamp=self.clock.now(), properties=props,
            event_id=f"e{next(_ids)}",
        ))

    def sent(self, customer: str = "c1") -> list[tuple[str, str, datetime]]:
        """(channel, content, created at) of every message, in order."""
        out = [m for ch in self.channels.values() for m in ch.for_customer(customer)]
        return sorted(((m.channel, m.content_id, m.created_at) for m in out),
                      key=lambda x: x[2])

    def log(self, customer: str = "c1", *, kinds: tuple[str, ...] | None = None,
            ) -> list[tuple[str, str | None, str | None]]:
        """(kind, detail, channel) of the customer's activities, leaving out step runs."""
        acts: list[Activity] = self.engine.activities(
            T0 - DAY, T0 + 400 * DAY, customer_id=customer)
        return [(a.kind, a.detail, a.channel) for a in acts
                if a.kind != "step" and (kinds is None or a.kind in kinds)]


def _send_journey(jid: str = "digest", event: str = "digest_ready", **send: Any) -> Journey:
    step = Send(send.pop("content", "news"), send.pop("channel", "email"), **send)
    return Journey(jid, "send", {"send": step}, trigger=EventTrigger(event))


# --- consent -----------------------------------------------------------------------------------


def test_topic_opt_out_suppresses_marketing_and_the_journey_goes_on(storage: Storage) -> None:
    host = Host(storage)
    host.engine.publish(journeys=[_send_journey()], content=[NEWS], topics=TOPICS)
    host.event("unsubscribed", topic="newsletter")
    out = host.event("digest_ready")
    assert out.messages == ()
    assert [e.status for e in out.ended] == ["completed"]
    assert host.log() == [
        ("entered", None, None),
        ("suppressed", "unsubscribed from newsletter", "email"),
        ("completed", None, None),
    ]
    # Someone who said nothing gets it: the topic is opt-out.
    assert len(host.event("digest_ready", customer="c2").messages) == 1
    # Resubscribing on email alone is newer than the opt-out, so it wins there.
    host.clock.advance(HOUR)
    host.event("subscribed", topic="newsletter", channel="email")
    host.event("digest_ready")
    assert host.sent() == [("email", "news", T0 + HOUR)]


def test_an_opt_in_topic_needs_an_explicit_subscription(storage: Storage) -> None:
    host = Host(storage)
    offers = ContentItem("offer", (Variant("email", {"subject": "Deal", "text": "Deal"}),))
    host.engine.publish(journeys=[_send_journey(content="offer", topic="offers")],
                        content=[offers], topics=TOPICS)
    host.event("digest_ready")
    assert host.log(kinds=("suppressed",)) == [("suppressed", "no opt-in to offers", "email")]
    # A broad "yes to everything" does not opt anyone in to an opt-in topic...
    host.engine.set_consent("c1", subscribed=True)
    host.clock.advance(HOUR)
    host.event("digest_ready")
    assert host.sent() == []
    # ... a statement naming it does.
    host.engine.set_consent("c1", topic="offers", subscribed=True)
    host.clock.advance(HOUR)
    host.event("digest_ready")
    assert host.sent() == [("email", "offer", T0 + 2 * HOUR)]
    state = host.engine.customer_state("c1")
    assert state is not None
    assert state.consent == {("*", "*"): (True, T0), ("offers", "*"): (True, T0 + HOUR)}


def test_the_most_recent_statement_covering_a_send_wins(storage: Storage) -> None:
    host = Host(storage)
    host.engine.publish(journeys=[_send_journey()], content=[NEWS], topics=TOPICS)
    host.engine.set_consent("c1", topic="newsletter", subscribed=True)
    host.clock.advance(HOUR)
    # A complaint-like opt-out of all marketing on email, newer than the subscription.
    host.engine.set_consent("c1", channel="email", subscribed=False)
    host.event("digest_ready")
    assert host.sent() == []
    assert host.log(kinds=("suppressed",)) == [
        ("suppressed", "unsubscribed from marketing on email", "email")
    ]



def test_a_statement_arriving_late_is_dated_when_it_was_said(storage: Storage) -> None:
    """A subscription event delayed on its way (a provider's webhook, a queue) is the
    customer's word at its own instant: it loses to what they said after it, as in a
    back-test of the same stream, and it never outlives a later opt-out."""
    host = Host(storage)
    host.engine.publish(journeys=[_send_journey()], content=[NEWS], topics=TOPICS)
    host.clock.advance(HOUR)
    host.engine.set_consent("c1", subscribed=False, topic="newsletter")   # said at T0 + 1h
    host.clock.advance(HOUR)
    # A "subscribe" said at T0 + 30 min arrives only now: the later opt-out still holds.
    host.engine.handle_event(Event("c1", "subscribed", T0 + HOUR / 2, {"topic": "newsletter"},
                                   event_id="late-yes"))
    assert host.event("digest_ready").messages == ()
    assert host.engine.customer_state("c1").consent == {("newsletter", "*"): (False, T0 + HOUR)}
    # And the other way round: a late "unsubscribe" does not undo a later re-subscription.
    host.engine.set_consent("c2", subscribed=True, topic="newsletter")   # at T0 + 2h
    host.clock.advance(HOUR)
    host.engine.handle_event(Event("c2", "unsubscribed", T0 + HOUR, {"topic": "newsletter"},
                                   event_id="late-no"))
    assert len(host.event("digest_ready", customer="c2").messages) == 1
    # A late statement that nothing newer covers is dated when it was said.
    host.engine.handle_event(Event("c3", "unsubscribed", T0 + 2 * HOUR, {"channel": "sms"},
                                   event_id="late-sms"))
    assert host.engine.customer_state("c3").consent == {("*", "sms"): (False, T0 + 2 * HOUR)}


def test_a_statement_about_an_undeclared_topic_is_refused(storage: Storage) -> None:
    host = Host(storage)
    host.engine.publish(journeys=[_send_journey()], content=[NEWS], topics=TOPICS)
    with pytest.raises(UnknownTopicError) as caught:
        host.engine.set_consent("c1", topic="newsleter", subscribed=False)
    assert caught.value.topic == "newsleter"
    assert caught.value.declared == ("newsletter", "offers")
    assert str(caught.value) == (
        "topic 'newsleter' is not declared by the published definitions (declared: "
        "'newsletter', 'offers'); publish it as a Topic first"
    )
    # As an event, from a provider or a preference page: refused alike, nothing kept (its
    # event id is not claimed: the corrected event may reuse it).
    typo = Event("c1", "unsubscribed", T0, {"topic": "newsleter"}, "u1")
    with pytest.raises(UnknownTopicError, match="'newsleter' is not declared"):
        host.engine.handle_event(typo)
    with pytest.raises(UnknownTopicError, match="'newsleter' is not declared"):
        host.engine.handle_events([Event("c2", "digest_ready", T0, {}, "d1"), typo])
    assert host.engine.customer_state("c1") is None
    fixed = attrs.evolve(typo, properties={"topic": "newsletter"})
    assert not host.engine.handle_event(fixed).duplicate
    # No topic (every topic), or a declared one, is taken.
    host.engine.set_consent("c1", subscribed=True)
    host.engine.set_consent("c1", topic="offers", subscribed=True)
    state = host.engine.customer_state("c1")
    assert state is not None
    # The broad "yes" keeps the statement naming newsletter: it would decide the topic if
    # newsletter were (or became) opt-in.
    assert set(state.consent) == {("*", "*"), ("offers", "*"), ("newsletter", "*")}


def test_consent_and_blocks_naming_an_unknown_channel_are_refused(storage: Storage) -> None:
    host = Host(storage)
    host.engine.publish(journeys=[_send_journey()], content=[NEWS], topics=TOPICS)
    host.engine.set_consent("c1", topic="newsletter", channel="email", subscribed=True)
    before = host.engine.customer_state("c1")
    with pytest.raises(UnknownChannelError) as caught:
        host.engine.set_consent("c1", channel="emial", subscribed=False)
    assert caught.value.channel == "emial"
    assert caught.value.known == ("email", "push", "sms")
    assert str(caught.value) == (
        "channel 'emial' is neither registered nor named by the published definitions (known: "
        "'email', 'push', 'sms'); check the name"
    )
    # Every call and event that records consent or a block about a channel: refused alike, and
    # "*" (every channel is said by leaving the channel out) too.
    calls = [
        lambda: host.engine.set_consent("c1", topic="newsletter", channel="*", subscribed=False),
        lambda: host.engine.block_channel("c1", "emial", reason="STOP"),
        lambda: host.engine.unblock_channel("c1", "emial"),
    ]
    for call in calls:
        with pytest.raises(UnknownChannelError, match="is neither registered nor named"):
            call()
    events = [
        Event("c1", "unsubscribed", T0, {"channel": "emial"}, "u1"),
        Event("c1", "subscribed", T0, {"topic": "newsletter", "channel": "emial"}, "u2"),
        Event("c1", "channel_blocked", T0, {"channel": "emial", "reason": "STOP"}, "u3"),
        Event("c1", "channel_unblocked", T0, {"channel": "emial"}, "u4"),
        Event("c1", "bounced", T0, {"channel": "emial", "type": "hard"}, "u5"),
        Event("c1", "complained", T0, {"channel": "emial"}, "u6"),
    ]
    for typo in events:
        with pytest.raises(UnknownChannelError, match="'emial' is neither registered"):
            host.engine.handle_event(typo)
        # In a group, the items before the refused one are handled (c2's, once), none after.
        with pytest.raises(UnknownChannelError, match="item #1: channel 'emial' is neither"):
            host.engine.handle_events([Event("c2", "digest_ready", T0, {}, "d1"), typo])
    # Nothing of them was stored: the record is as it was, no event id was claimed (the
    # corrected events may reuse them), and the real channel's consent is unchanged.
    assert host.engine.customer_state("c1") == before
    c2 = host.engine.customer_state("c2")
    assert c2 is not None and c2.revision == 1
    assert len(host.event("digest_ready").messages) == 1
    for typo in events:
        fixed = attrs.evolve(typo, properties={**typo.properties, "channel": "email"})
        assert not host.engine.handle_event(fixed).duplicate
    state = host.engine.customer_state("c1")
    assert state is not None
    assert state.blocked == {"email": "hard bounce"}


def test_consent_and_feedback_events_with_malformed_properties_are_refused(
    storage: Storage,
) -> None:
    """A topic or channel that is not a name would widen the statement to every topic or
    channel (an opt-in to everything): refused, as set_consent and block_channel refuse it."""
    host = Host(storage)
    host.engine.publish(journeys=[_send_journey()], content=[NEWS], topics=TOPICS)
    malformed = [
        (Event("c1", "subscribed", T0, {"topic": 5}, "m1"), "property 'topic'"),
        (Event("c1", "unsubscribed", T0, {"topic": ""}, "m2"), "property 'topic'"),
        (Event("c1", "subscribed", T0, {"channel": ["email"]}, "m3"), "property 'channel'"),
        (Event("c1", "unsubscribed", T0, {"channel": ""}, "m4"), "property 'channel'"),
        (Event("c1", "channel_blocked", T0, {}, "m5"), "property 'channel'"),
        (Event("c1", "channel_unblocked", T0, {"channel": None}, "m6"), "property 'channel'"),
        (Event("c1", "channel_blocked", T0, {"channel": "email", "reason": 5}, "m7"),
         "property 'reason'"),
        (Event("c1", "bounced", T0, {"message_id": 5, "type": "hard"}, "m8"),
         "property 'message_id'"),
        (Event("c1", "complained", T0, {"channel": 5}, "m9"), "property 'channel'"),
        # A bounce read as soft because its type is spelt otherwise would keep the address.
        (Event("c1", "bounced", T0, {"channel": "email", "type": "HARD"}, "m10"),
         "property 'type'"),
        (Event("c1", "bounced", T0, {"channel": "email", "type": ["hard"]}, "m11"),
         "property 'type'"),
    ]
    for event, what in malformed:
        with pytest.raises(InvalidEventError, match=f"{event.name!r} event: {what} must be"):
            host.engine.handle_event(event)
        with pytest.raises(InvalidEventError, match=f"item #0: {event.name!r} event: {what}"):
            host.engine.handle_events([event])
        with pytest.raises(InvalidEventError, match=f"input #0: {event.name!r} event: {what}"):
            backtest(Definitions(topics=TOPICS, journeys=(_send_journey(),), content=(NEWS,)),
                     [event])
    assert host.engine.customer_state("c1") is None   # nothing stored, no event id claimed
    assert not host.event("unsubscribed", topic=None, channel=None).duplicate  # null: left out


def test_a_channel_the_stored_definitions_name_is_known_to_every_engine(storage: Storage) -> None:
    # A process with fewer channels records consent and blocks for a channel that another
    # process registered and published definitions for, as it may publish and pause.
    host = Host(storage)
    host.engine.publish(journeys=[_send_journey(channel="sms")], content=[NEWS], topics=TOPICS)
    email_only = Engine(storage, channels={"email": RecordingChannel()}, clock=host.clock)
    email_only.block_channel("c1", "sms", reason="STOP")
    email_only.set_consent("c1", channel="sms", subscribed=False)
    email_only.handle_event(Event("c1", "channel_unblocked", T0, {"channel": "sms"}, "e1"))
    # "push" is registered with the host's engine only, and named by no definition.
    host.engine.block_channel("c1", "push", reason="no device")
    with pytest.raises(UnknownChannelError, match=r"\(known: 'email', 'sms'\)"):
        email_only.block_channel("c1", "push")
    state = host.engine.customer_state("c1")
    assert state is not None
    assert state.blocked == {"push": "no device"}
    assert state.consent == {("*", "sms"): (False, T0)}
    # An engine that knows no channel at all says so.
    with pytest.raises(UnknownChannelError, match=r"\(no channel is known\)"):
        Engine().set_consent("c1", channel="email", subscribed=False)


def test_no_topic_statement_is_taken_before_a_topic_is_declared(storage: Storage) -> None:
    host = Host(storage)
    # Consent imported before the definitions: the topics are published first.
    with pytest.raises(UnknownTopicError, match=r"\(no topic is declared\)"):
        host.engine.set_consent("c1", topic="newsletter", subscribed=False)
    host.engine.publish(topics=[Topic("newsletter")])
    host.engine.set_consent("c1", topic="newsletter", subscribed=False)
    host.engine.publish(journeys=[_send_journey()], content=[NEWS])
    host.event("digest_ready")
    assert host.log(kinds=("suppressed",)) == [
        ("suppressed", "unsubscribed from newsletter", "email"),
    ]


def test_transactional_sends_pass_opt_outs_but_never_a_channel_block(storage: Storage) -> None:
    host = Host(storage)
    host.engine.publish(
        journeys=[_send_journey("receipt", "ordered", content="receipt", channel="sms",
                                transactional=True)],
        content=[RECEIPT], topics=TOPICS,
    )
    host.event("unsubscribed")  # all marketing, every channel
    host.event("ordered")
    assert host.sent() == [("sms", "receipt", T0)]
    host.clock.advance(HOUR)
    host.event("channel_blocked", channel="sms", reason="STOP")
    host.event("ordered")
    assert host.sent() == [("sms", "receipt", T0)]
    assert host.log(kinds=("suppressed",)) == [
        ("suppressed", "channel blocked: STOP", "sms")
    ]
    host.engine.unblock_channel("c1", "sms")
    host.clock.advance(HOUR)
    host.event("ordered")
    assert host.sent()[-1] == ("sms", "receipt", T0 + 2 * HOUR)


def test_consent_arriving_while_a_send_is_deferred_is_honoured(storage: Storage) -> None:
    host = Host(storage)
    quiet = QuietHours("night", time(21), time(8))
    host.engine.publish(journeys=[_send_journey()], content=[NEWS], topics=TOPICS,
                        quiet_hours=[quiet])
    host.clock.set(T0.replace(hour=22))
    host.event("digest_ready")
    host.clock.advance(HOUR)
    host.event("unsubscribed", topic="newsletter")
    host.clock.set(T0.replace(hour=8) + DAY)
    host.engine.run_due()
    assert host.sent() == []
    assert host.log() == [
        ("entered", None, None),
        ("quiet_hours", f"night: deferred to {(T0.replace(hour=8) + DAY).isoformat()}", "email"),
        ("suppressed", "unsubscribed from newsletter", "email"),
        ("completed", None, None),
    ]


# --- fallback channels -------------------------------------------------------------------------


def test_a_fallback_channel_is_used_when_the_customer_cannot_be_reached(storage: Storage) -> None:
    host = Host(storage, contact_attributes=STANDARD_CONTACT_ATTRIBUTES)
    host.engine.publish(
        journeys=[_send_journey(channel="push", fallbacks=("sms", "email"))],
        content=[NEWS], topics=TOPICS,
    )
    host.engine.identify("c1", {"phone": "+15550100", "email": "c1@example.com"})
    host.event("unsubscribed", topic="newsletter", channel="sms")
    out = host.event("digest_ready")
    [message] = out.messages
    assert (message.channel, message.fields) == ("email", {"subject": "News", "text": "News"})
    assert message.recipient == {"phone": "+15550100", "email": "c1@example.com"}
    assert host.log() == [
        ("entered", None, None),
        ("fallback", "no push_token", "push"),
        ("fallback", "unsubscribed from newsletter on sms", "sms"),
        ("sent", "email", "email"),
        ("completed", None, None),
    ]
    # Nobody reachable on any of them: suppressed on the last, and the journey goes on.
    host.engine.identify("c2", {})
    host.event("digest_ready", customer="c2")
    assert host.log("c2") == [
        ("entered", None, None),
        ("fallback", "no push_token", "push"),
        ("fallback", "no phone", "sms"),
        ("suppressed", "no email", "email"),
        ("completed", None, None),
    ]


def test_a_contact_detail_of_only_whitespace_counts_as_missing(storage: Storage) -> None:
    # "  " reaches nobody: a channel would fail it (or worse, send it somewhere).
    host = Host(storage, contact_attributes=STANDARD_CONTACT_ATTRIBUTES)
    host.engine.publish(journeys=[_send_journey(channel="email", fallbacks=("sms",))],
                        content=[NEWS], topics=TOPICS)
    host.engine.identify("c1", {"email": "  ", "phone": "\t"})
    assert host.event("digest_ready").messages == ()
    assert host.log() == [
        ("entered", None, None),
        ("fallback", "no email", "email"),
        ("suppressed", "no phone", "sms"),
        ("completed", None, None),
    ]


def test_validation_wants_a_variant_for_every_fallback_channel() -> None:
    engine = Engine(channels={"email": RecordingChannel(), "sms": RecordingChannel(),
                              "push": RecordingChannel()}, clock=ManualClock(T0))
    with pytest.raises(DefinitionError) as caught:
        engine.publish(journeys=[_send_journey(content="receipt", fallbacks=("push", "sms",
                                                                               "sms"))],
                       content=[RECEIPT])
    assert [p.message for p in caught.value.problems] == [
        "content 'receipt' has no variant for fallback channel 'push'",
        "fallback channel 'sms' is named twice",
    ]


def test_a_misspelt_policy_choice_is_refused_not_read_as_another() -> None:
    # Built in Python, a Literal field holds whatever it is given: "optin" must not pass for
    # the default opt-out (marketing to customers who never agreed), nor "wait" for "exit".
    engine = Engine(channels={"email": RecordingChannel()}, clock=ManualClock(T0))
    with pytest.raises(DefinitionError) as caught:
        engine.publish(
            journeys=[_send_journey(when_capped="wait")], content=[NEWS],
            topics=[Topic("newsletter", default="optin")],  # type: ignore[arg-type]
            caps=[FrequencyCap("weekly", 2, per=7 * DAY, period="weekly")],  # type: ignore[arg-type]
            quiet_hours=[QuietHours("night", time(21), time(8), action="later")],  # type: ignore[arg-type]
        )
    assert [str(p) for p in caught.value.problems] == [
        "journey 'digest' v1 / step 'send': when_capped must be one of defer, exit, skip, "
        "got 'wait'",
        "topic 'newsletter': default must be one of opt_in, opt_out, got 'optin'",
        "frequency cap 'weekly': period must be one of calendar_day, rolling, got 'weekly'",
        "quiet hours 'night': action must be one of defer, skip, got 'later'",
    ]
    assert engine.generation == 0


# --- frequency caps ----------------------------------------------------------------------------


def _promo_host(storage: Storage, when_capped: str = "skip", **cap: Any) -> Host:
    host = Host(storage)
    host.engine.publish(
        journeys=[_send_journey("promo", "promo", when_capped=when_capped),
                  _send_journey("receipt", "ordered", content="receipt", transactional=True)],
        content=[NEWS, RECEIPT], topics=TOPICS,
        caps=[FrequencyCap("weekly", **({"limit": 2, "per": 7 * DAY} | cap))],
    )
    return host


def test_a_rolling_cap_skips_and_its_window_is_half_open(storage: Storage) -> None:
    host = _promo_host(storage)
    for _ in range(3):
        host.event("promo")
        host.event("ordered")  # transactional: neither capped nor counted
        host.clock.advance(DAY)
    assert [s[2] for s in host.sent() if s[1] == "news"] == [T0, T0 + DAY]
    assert host.log(kinds=("capped",)) == [("capped", "weekly: skipped", "email")]
    assert len([s for s in host.sent() if s[1] == "receipt"]) == 3
    # Exactly 7 days after the first send it has left the window: one slot is free.
    host.clock.set(T0 + 7 * DAY)
    host.event("promo")
    host.event("promo")
    assert [s[2] for s in host.sent() if s[1] == "news"] == [T0, T0 + DAY, T0 + 7 * DAY]
    # The ledger keeps only what the cap can still count.
    state = host.engine.customer_state("c1")
    assert state is not None
    assert [at for at, _, _ in state.sends] == [T0 + DAY, T0 + 7 * DAY]


def test_a_deferred_capped_send_goes_out_when_the_cap_allows(storage: Storage) -> None:
    host = _promo_host(storage, when_capped="defer")
    host.event("promo")
    host.clock.advance(HOUR)
    host.event("promo")
    host.clock.advance(HOUR)
    host.event("promo")
    assert host.log(kinds=("capped",)) == [
        ("capped", f"weekly: deferred to {(T0 + 7 * DAY).isoformat()}", "email")
    ]
    host.clock.set(T0 + 7 * DAY - timedelta(seconds=1))
    assert host.engine.run_due().messages == ()
    host.clock.set(T0 + 8 * DAY)
    out = host.engine.run_due()
    assert [m.created_at for m in out.messages] == [T0 + 7 * DAY]
    assert out.ended[0].status == "completed"


def test_a_capped_send_can_end_the_enrollment(storage: Storage) -> None:
    host = _promo_host(storage, when_capped="exit", limit=1)
    host.event("promo")
    out = host.event("promo")
    assert [(e.status, e.reason) for e in out.ended] == [("exited", "frequency cap weekly")]
    assert host.log(kinds=("capped", "exited")) == [
        ("capped", "weekly: exited", "email"), ("exited", "frequency cap weekly", None),
    ]


def test_two_journeys_never_both_take_the_last_slot(storage: Storage) -> None:
    host = Host(storage)
    host.engine.publish(
        journeys=[_send_journey("a_promo", "sale"), _send_journey("b_promo", "sale")],
        content=[NEWS], topics=TOPICS, caps=[FrequencyCap("one", 1, per=DAY, channel="email")],
    )
    out = host.event("sale")
    assert [m.journey_id for m in out.messages] == ["a_promo"]
    assert host.log(kinds=("capped",)) == [("capped", "one: skipped", "email")]


def test_a_calendar_day_cap_counts_the_customers_own_day(storage: Storage) -> None:
    host = _promo_host(storage, when_capped="defer", limit=1, per=None,
                       period="calendar_day")
    host.engine.identify("c1", timezone="America/New_York")
    host.event("promo")  # 05:00 in New York
    host.clock.set(T0.replace(hour=23))  # 18:00 the same New York day
    host.event("promo")
    ny_midnight = datetime(2026, 3, 3, 5, 0, tzinfo=UTC)  # EST is UTC-5
    assert host.log(kinds=("capped",)) == [
        ("capped", f"weekly: deferred to {ny_midnight.isoformat()}", "email")
    ]
    host.clock.set(ny_midnight + HOUR)
    host.engine.run_due()
    assert [s[2] for s in host.sent()] == [T0, ny_midnight]


# --- quiet hours -------------------------------------------------------------------------------


def test_quiet_hours_defer_to_the_customers_morning_across_dst(storage: Storage) -> None:
    host = Host(storage)
    host.engine.publish(journeys=[_send_journey()], content=[NEWS], topics=TOPICS,
                        quiet_hours=[QuietHours("night", time(21), time(8))])
    host.engine.identify("c1", timezone="Europe/Paris")
    # Saturday 23:00 in Paris; the clocks go forward that night (02:00 -> 03:00).
    host.clock.set(datetime(2026, 3, 28, 22, 0, tzinfo=UTC))
    assert host.event("digest_ready").messages == ()
    eight_cest = datetime(2026, 3, 29, 6, 0, tzinfo=UTC)
    host.clock.set(eight_cest - timedelta(seconds=1))
    assert host.engine.run_due().messages == ()
    host.clock.set(eight_cest)
    assert [m.created_at for m in host.engine.run_due().messages] == [eight_cest]


def test_quiet_hours_starting_in_a_dst_gap_start_after_it(storage: Storage) -> None:
    host = Host(storage)
    host.engine.publish(journeys=[_send_journey()], content=[NEWS], topics=TOPICS,
                        quiet_hours=[QuietHours("early", time(2, 30), time(5))])
    host.engine.identify("c1", timezone="Europe/Paris")
    host.engine.identify("c2", timezone="Europe/Paris")
    host.clock.set(datetime(2026, 3, 29, 0, 45, tzinfo=UTC))  # 01:45 CET: not quiet
    assert len(host.event("digest_ready").messages) == 1
    host.clock.set(datetime(2026, 3, 29, 1, 10, tzinfo=UTC))  # 03:10 CEST: quiet
    assert host.event("digest_ready", customer="c2").messages == ()
    assert host.log("c2", kinds=("quiet_hours",)) == [
        ("quiet_hours", "early: deferred to 2026-03-29T03:00:00+00:00", "email")
    ]


def test_released_sends_are_spread_by_enrollment_and_transactional_ones_wait_not(
    storage: Storage,
) -> None:
    host = Host(storage)
    spread = timedelta(minutes=30)
    host.engine.publish(
        journeys=[_send_journey(),
                  _send_journey("receipt", "ordered", content="receipt", transactional=True)],
        content=[NEWS, RECEIPT], topics=TOPICS,
        quiet_hours=[QuietHours("night", time(21), time(8), spread=spread)],
    )
    host.clock.set(T0.replace(hour=22))
    for customer in ("c1", "c2", "c3"):
        host.event("digest_ready", customer=customer)
    assert [s[1] for s in host.sent()] == []
    host.event("ordered")
    assert host.sent() == [("email", "receipt", T0.replace(hour=22))]
    host.clock.set(T0.replace(hour=9) + DAY)
    out = host.engine.run_due()
    morning = T0.replace(hour=8) + DAY
    expected = {}
    for m in out.messages:
        share = split_fraction(m.enrollment_id, "quiet_hours", "night")
        expected[m.customer_id] = morning + spread * share
        assert morning <= m.created_at < morning + spread
    assert {m.customer_id: m.created_at for m in out.messages} == expected
    assert len({m.created_at for m in out.messages}) == 3


def test_quiet_hours_can_skip_and_be_limited_to_a_journey(storage: Storage) -> None:
    host = Host(storage)
    host.engine.publish(
        journeys=[_send_journey(), _send_journey("other", "other_ready")],
        content=[NEWS], topics=TOPICS,
        quiet_hours=[QuietHours("night", time(21), time(8), journeys=("digest",),
                                action="skip")],
    )
    host.clock.set(T0.replace(hour=22))
    host.event("digest_ready")
    host.event("other_ready")
    assert [(s[1], s[2]) for s in host.sent()] == [("news", T0.replace(hour=22))]
    assert host.log(kinds=("quiet_hours",)) == [("quiet_hours", "night: skipped", "email")]


class _Outage(RecordingChannel):
    """A provider that fails while ``down``."""

    down = False

    def send(self, message: Any) -> Any:
        from cjo import DeliveryResult

        if self.down:
            return DeliveryResult.transient("503")
        return super().send(message)


@pytest.mark.parametrize("late", ["a retry", "a late worker"])
def test_a_message_dispatched_in_quiet_hours_waits_for_their_end(
    storage: Storage, late: str
) -> None:
    # Written at 20:55 in Paris, outside the quiet hours; a retry after a provider's outage,
    # or a worker that dispatches deferred messages late, would send it at night.
    clock = ManualClock(datetime(2026, 6, 1, 18, 55, tzinfo=UTC))  # 20:55 CEST
    sms = _Outage()
    sms.down = late == "a retry"
    engine = Engine(storage, channels={"sms": sms}, clock=clock,
                    dispatch="inline" if late == "a retry" else "deferred")
    engine.publish(
        journeys=[_send_journey(channel="sms"),
                  _send_journey("receipt", "ordered", content="receipt", channel="sms",
                                transactional=True)],
        content=[NEWS, RECEIPT], topics=TOPICS,
        quiet_hours=[QuietHours("night", time(21), time(8), spread=timedelta(minutes=10))],
    )
    engine.identify("c1", timezone="Europe/Paris")
    for name in ("digest_ready", "ordered"):
        engine.handle_event(Event(customer_id="c1", name=name, timestamp=clock.now(),
                                  event_id=f"e-{name}"))
    assert sms.messages == []
    sms.down = False
    clock.set(datetime(2026, 6, 1, 21, 30, tzinfo=UTC))  # 23:30 in Paris
    engine.dispatch_pending()
    assert [m.content_id for m in sms.messages] == ["receipt"], "transactional: it passes"
    [entry] = [e for e in engine.storage.customer_outbox("c1") if e.message.content_id == "news"]
    morning = datetime(2026, 6, 2, 6, 0, tzinfo=UTC)  # 08:00 in Paris
    share = split_fraction(entry.message.enrollment_id, "quiet_hours", "night")
    release = morning + timedelta(minutes=10) * share
    assert (entry.status, entry.available_at, entry.leased) == ("pending", release, False)
    assert entry.attempts == (1 if late == "a retry" else 0), "holding it is no attempt"
    log = [(a.kind, a.detail) for a in engine.activities(T0, T0 + 400 * DAY, customer_id="c1")
           if a.kind == "quiet_hours"]
    assert log == [("quiet_hours", f"night: deferred to {release.isoformat()}")]
    clock.set(release - timedelta(seconds=1))
    engine.dispatch_pending()
    assert len(sms.messages) == 1
    clock.set(release)
    engine.dispatch_pending()
    assert [m.content_id for m in sms.messages] == ["receipt", "news"]


def test_a_send_a_late_worker_decides_for_the_evening_waits_for_the_morning(
    storage: Storage,
) -> None:
    # Inline: the wake-up falls due at 20:45 in Paris, outside the quiet hours, and is decided
    # at its own instant; the worker runs only at 23:30, so the message would go out then.
    clock = ManualClock(datetime(2026, 6, 1, 17, 45, tzinfo=UTC))  # 19:45 CEST
    sms = RecordingChannel()
    engine = Engine(storage, channels={"sms": sms}, clock=clock)
    engine.publish(
        journeys=[Journey("later", "wait", {"wait": Wait(HOUR, next="send"),
                                            "send": Send("news", "sms")},
                          trigger=EventTrigger("go"))],
        content=[NEWS], topics=TOPICS, quiet_hours=[QuietHours("night", time(21), time(8))],
    )
    engine.identify("c1", timezone="Europe/Paris")
    engine.handle_event(Event(customer_id="c1", name="go", timestamp=clock.now(),
                              event_id="e1"))
    clock.set(datetime(2026, 6, 1, 21, 30, tzinfo=UTC))  # 23:30 CEST
    out = engine.run_due()
    [message] = out.messages
    assert message.created_at == datetime(2026, 6, 1, 18, 45, tzinfo=UTC), "decided on time"
    assert sms.messages == []
    assert out.delivery == {message.idempotency_key: "pending"}
    morning = datetime(2026, 6, 2, 6, 0, tzinfo=UTC)
    entry = engine.storage.outbox_entry(message.idempotency_key)
    assert entry is not None and (entry.available_at, entry.attempts) == (morning, 0)
    clock.set(morning)
    engine.dispatch_pending()
    assert [m.idempotency_key for m in sms.messages] == [message.idempotency_key]


def test_a_message_dispatched_in_quiet_hours_that_skip_is_withheld(storage: Storage) -> None:
    clock = ManualClock(T0.replace(hour=20))
    sms = RecordingChannel()
    engine = Engine(storage, channels={"sms": sms}, clock=clock, dispatch="deferred")
    engine.publish(journeys=[_send_journey(channel="sms")], content=[NEWS], topics=TOPICS,
                   quiet_hours=[QuietHours("night", time(21), time(8), action="skip")])
    engine.handle_event(Event(customer_id="c1", name="digest_ready", timestamp=clock.now(),
                              event_id="e1"))
    clock.set(T0.replace(hour=22))
    assert engine.dispatch_pending() == 0
    assert sms.messages == []
    [entry] = engine.storage.customer_outbox("c1")
    assert (entry.status, entry.last_error) == ("discarded", "withheld: quiet hours night: skipped")
    report = journey_report(engine.storage, _send_journey(channel="sms"))
    assert (report.sent, report.withheld) == ({"sms": 1}, 1)


def test_the_journey_report_says_which_rule_kept_a_send_from_going_out(
    storage: Storage,
) -> None:
    # Reached 5, sent 3: without the cap and the quiet hours that held the other 2, the
    # funnel does not add up.
    host = Host(storage)
    journey = Journey("digest", "send", {"send": Send("news", "email", when_capped="skip")},
                      trigger=EventTrigger("digest_ready"))
    host.engine.publish(
        journeys=[journey], content=[NEWS], topics=TOPICS,
        caps=[FrequencyCap("weekly", 2, per=7 * DAY)],
        quiet_hours=[QuietHours("night", time(21), time(8), action="skip")],
    )
    for customer in ("c1", "c1", "c1", "c2"):
        host.event("digest_ready", customer)
    host.clock.set(T0.replace(hour=22))
    host.event("digest_ready", "c3")
    report = journey_report(host.engine.storage, journey)
    assert (report.step("send").reached, report.sent) == (5, {"email": 3})
    assert report.not_sent == {"cap weekly": 1, "quiet hours night": 1}
    assert report.step("send").not_sent == 2
    assert "not sent 2 (cap weekly 1, quiet hours night 1)" in format_table([report])


# --- delivery feedback -------------------------------------------------------------------------


def test_feedback_is_logged_against_the_message_and_changes_consent(storage: Storage) -> None:
    host = Host(storage)
    journey = Journey("digest", "first", {
        "first": Send("news", "email", next="wait"),
        "wait": Wait(DAY, next="second"),
        "second": Send("news", "email", next="third"),
        "third": Send("receipt", "email", transactional=True),
    }, trigger=EventTrigger("digest_ready"))
    host.engine.publish(journeys=[journey], content=[NEWS, RECEIPT], topics=TOPICS)
    [message] = host.event("digest_ready").messages
    key = message.idempotency_key
    host.event("message_delivered", message_id=key)
    host.event("opened", message_id=key)
    host.event("clicked", message_id=key, url="https://example.com/a")
    host.event("complained", message_id=key)
    acts = [a for a in host.engine.activities(T0, T0 + DAY, customer_id="c1")
            if a.kind in ("message_delivered", "opened", "clicked", "complained")]
    assert [(a.kind, a.detail, a.journey_id, a.enrollment_id, a.step_id, a.channel,
             a.content_id) for a in acts] == [
        (kind, detail, "digest", message.enrollment_id, "first", "email", "news")
        for kind, detail in (("message_delivered", None), ("opened", None),
                             ("clicked", "https://example.com/a"), ("complained", None))
    ]
    # The complaint opted c1 out of marketing on email; transactional mail still goes.
    host.clock.advance(DAY)
    host.engine.run_due()
    assert [s[1] for s in host.sent()] == ["news", "receipt"]
    assert host.log(kinds=("suppressed",)) == [
        ("suppressed", "unsubscribed from marketing on email", "email")
    ]


def test_a_hard_bounce_blocks_the_channel_and_unsubscribe_takes_the_messages_topic(
    storage: Storage,
) -> None:
    host = Host(storage)
    host.engine.publish(
        journeys=[_send_journey(), _send_journey("receipt", "ordered", content="receipt",
                                                 channel="sms", transactional=True)],
        content=[NEWS, RECEIPT], topics=TOPICS,
    )
    [first] = host.event("digest_ready").messages
    host.event("bounced", message_id=first.idempotency_key, type="soft")
    host.event("unsubscribed", message_id=first.idempotency_key)
    state = host.engine.customer_state("c1")
    assert state is not None
    assert state.blocked == {}
    assert state.consent == {("newsletter", "*"): (False, T0)}
    [receipt] = host.event("ordered").messages
    # The receipt has no topic: unsubscribing from it leaves marketing on its channel.
    host.event("unsubscribed", message_id=receipt.idempotency_key)
    host.event("bounced", message_id=receipt.idempotency_key, type="hard")
    state = host.engine.customer_state("c1")
    assert state is not None
    assert state.blocked == {"sms": "hard bounce"}
    assert state.consent == {("newsletter", "*"): (False, T0), ("*", "sms"): (False, T0)}
    assert host.log(kinds=("bounced", "unsubscribed")) == [
        ("bounced", "soft", "email"), ("unsubscribed", "newsletter", "email"),
        ("unsubscribed", "*", "sms"), ("bounced", "hard", "sms"),
    ]


def test_a_message_withheld_before_any_attempt_gives_its_cap_slot_back(storage: Storage) -> None:
    # One marketing email a day. The newsletter, written for a worker that sends later, is
    # withheld (the customer unsubscribed from it meanwhile): it never went out, so the offer
    # decided afterwards that day is not capped by it.
    offers = ContentItem("deal", (Variant("email", {"subject": "Deal", "text": "Deal"}),),
                         topic="offers")
    clock = ManualClock(T0)
    email = RecordingChannel()
    engine = Engine(storage, channels={"email": email}, clock=clock, dispatch="deferred")
    engine.publish(journeys=[_send_journey(), _send_journey("deals", "deal_ready",
                                                            content="deal")],
                   content=[NEWS, offers], topics=TOPICS,
                   caps=[FrequencyCap("daily", 1, per=DAY)])
    engine.set_consent("c1", topic="offers", subscribed=True)
    for n, name in enumerate(["digest_ready", "unsubscribed"]):
        clock.advance(timedelta(minutes=1))
        engine.handle_event(Event(customer_id="c1", name=name, timestamp=clock.now(),
                                  properties={"topic": "newsletter"}, event_id=f"e{n}"))
    engine.dispatch_pending()
    assert email.messages == []
    clock.advance(HOUR)
    engine.handle_event(Event(customer_id="c1", name="deal_ready", timestamp=clock.now(),
                              event_id="e-deal"))
    engine.dispatch_pending()
    assert [m.content_id for m in email.messages] == ["deal"]
    state = engine.customer_state("c1")
    assert state is not None and [(at, ch) for at, ch, _ in state.sends] == [(clock.now(), "email")]
    # An attempted message keeps its slot, delivered or not: the next is capped.
    clock.advance(HOUR)
    engine.handle_event(Event(customer_id="c1", name="deal_ready", timestamp=clock.now(),
                              event_id="e-deal-2"))
    engine.dispatch_pending()
    assert [m.content_id for m in email.messages] == ["deal"]


@pytest.mark.parametrize("failed", ["hard bounce", "permanent failure"])
def test_a_dead_address_is_blocked_until_the_profile_gets_a_new_one(
    storage: Storage, failed: str
) -> None:
    # As Braze's bounce status, the block is the address's: a customer who gives a new email
    # gets email again; one who said STOP stays blocked whatever their number.
    from cjo import DeliveryResult

    class Refusing(RecordingChannel):
        """Refuses the addresses it knows are closed."""

        def send(self, message: Any) -> Any:
            if failed == "permanent failure" and message.recipient.get("email") == "old@example.org":
                return DeliveryResult.permanent("550 no such user", unreachable=True)
            return super().send(message)

    host = Host(storage, contact_attributes={"email": "email", "sms": "phone"})
    host.channels["email"] = Refusing()
    host.engine.channels["email"] = host.channels["email"]
    host.engine.publish(journeys=[_send_journey(), _send_journey("texts", "text_ready",
                                                                  channel="sms")],
                        content=[NEWS], topics=TOPICS)
    host.engine.identify("c1", {"email": "old@example.org", "phone": "+33600000000"})
    first = host.event("digest_ready")
    if failed == "hard bounce":  # delivered, then bounced
        host.event("bounced", message_id=first.messages[0].idempotency_key, type="hard")
    host.event("channel_blocked", channel="sms", reason="STOP")
    state = host.engine.customer_state("c1")
    assert state is not None
    reason = "hard bounce" if failed == "hard bounce" else "permanent failure: 550 no such user"
    assert state.blocked == {"email": reason, "sms": "STOP"}
    host.clock.advance(HOUR)
    assert host.event("digest_ready").messages == ()  # suppressed: blocked
    host.engine.identify("c1", {"email": "new@example.org", "phone": "+33611111111",
                                "plan": "pro"})
    state = host.engine.customer_state("c1")
    assert state is not None
    assert state.blocked == {"sms": "STOP"}, "a new address lifts a dead one's block only"
    host.clock.advance(HOUR)
    [message] = host.event("digest_ready").messages
    assert message.recipient["email"] == "new@example.org"
    assert host.event("text_ready").messages == ()
    # Writing the same address again, or clearing it, lifts nothing.
    host.event("bounced", message_id=message.idempotency_key, type="hard")
    host.engine.identify("c1", {"email": "new@example.org"})
    host.engine.identify("c1", unset=["email"])
    state = host.engine.customer_state("c1")
    assert state is not None and state.blocked == {"email": "hard bounce", "sms": "STOP"}


def test_a_late_bounce_of_a_replaced_address_blocks_nothing(storage: Storage) -> None:
    host = Host(storage, contact_attributes={"email": "email"})
    host.engine.publish(journeys=[_send_journey()], content=[NEWS], topics=TOPICS)
    host.engine.identify("c1", {"email": "old@example.org"})
    [sent] = host.event("digest_ready").messages
    host.engine.identify("c1", {"email": "new@example.org"})
    host.event("bounced", message_id=sent.idempotency_key, type="hard")
    state = host.engine.customer_state("c1")
    assert state is not None and state.blocked == {}
    assert host.log(kinds=("bounced",)) == [("bounced", "hard", "email")], "still logged"


def test_policies_are_published_definitions_every_engine_applies(storage: Storage) -> None:
    host = Host(storage)
    definitions = Definitions(
        journeys=(_send_journey(),), content=(NEWS,), topics=TOPICS,
        caps=(FrequencyCap("daily", 1, period="calendar_day"),),
        quiet_hours=(QuietHours("night", time(21), time(8)),),
    )
    host.engine.publish(definitions)
    other = Engine(storage, channels=host.channels, clock=host.clock)  # type: ignore[arg-type]
    assert other.definitions.caps == definitions.caps
    assert other.definitions.quiet_hours == definitions.quiet_hours
    # Replaced by id, like segments.
    other.publish(caps=[FrequencyCap("daily", 2, period="calendar_day")])
    assert host.engine.definitions.caps == (FrequencyCap("daily", 2, period="calendar_day"),)
    assert host.engine.definitions.topics == TOPICS


def test_a_tag_cap_counts_the_tags_of_the_offer_sent(storage: Storage) -> None:
    host = Host(storage)
    taxonomy = Taxonomy((Category("marketing", children=(Category("promo"),)),))
    flash = Journey("flash", "send", {"send": Send("news", "email", tags=("marketing",))},
                    trigger=EventTrigger("flash"))
    host.engine.publish(
        journeys=[_send_journey(offers=("spring_sale",)), flash], content=[NEWS],
        topics=TOPICS, taxonomy=taxonomy,
        offers=[Offer("spring_sale", "news", tags=("marketing/promo",))],
        caps=[FrequencyCap("marketing", 1, per=DAY, tag="marketing")],
    )
    [sale] = host.event("digest_ready").messages  # the offer is a promotion: counted
    assert sale.offer_id == "spring_sale"
    assert host.event("flash").messages == ()
    assert host.log(kinds=("capped",)) == [("capped", "marketing: skipped", "email")]


def test_a_tag_cap_counts_sends_tagged_below_it_by_step_content_or_journey(
    storage: Storage,
) -> None:
    host = Host(storage)
    taxonomy = Taxonomy((Category("marketing", children=(Category("promo"),)),
                         Category("lifecycle")))
    promo = attrs.evolve(_send_journey("promo", "promo"), tags=("marketing/promo",))
    tagged_step = Journey("flash", "send", {"send": Send("news", "email",
                                                         tags=("marketing",))},
                          trigger=EventTrigger("flash"))
    onboarding = attrs.evolve(_send_journey("onboarding", "signed_up"), tags=("lifecycle",))
    host.engine.publish(
        journeys=[promo, tagged_step, onboarding], content=[NEWS], topics=TOPICS,
        taxonomy=taxonomy, caps=[FrequencyCap("marketing", 1, per=DAY, tag="marketing")],
    )
    host.event("promo")
    host.event("signed_up")  # not marketing: neither capped nor counted
    host.event("flash")
    assert [m.journey_id for ch in host.channels.values() for m in ch.messages] == [
        "promo", "onboarding"]
    assert host.log(kinds=("capped",)) == [("capped", "marketing: skipped", "email")]
