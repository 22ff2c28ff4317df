"""Offers and render retries on every storage: the per-customer offer counts and a Send's
retry count live in the customer record, so they must survive a restart of the engine."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import time, timedelta
from typing import Any

from cjo import (
    ContentItem,
    ContentSample,
    Engine,
    EventTrigger,
    Journey,
    ManualClock,
    Offer,
    OfferCap,
    QuietHours,
    RecordingChannel,
    Send,
    Variant,
    Wait,
    attr,
)
from cjo.runtime.sending import RENDER_RETRY_DELAYS
from tests.helpers import T0, Factory, ev

DAY = timedelta(days=1)


def _item(item_id: str, subject: str) -> ContentItem:
    return ContentItem(item_id, (Variant("email", {"subject": subject, "text": subject}),))


def _affinity(profile: Mapping[str, Any], context: Mapping[str, Any]) -> float:
    return float(profile.get("travel_score", 0))


OFFERS = (
    Offer("gold_card", "gold", when=attr("tier") == "gold", priority=10, cap=OfferCap(1)),
    Offer("basic_card", "basic", priority=1, cap=OfferCap(1, per=7 * DAY)),
    Offer("travel_card", "travel", when=attr("travels") == True,  # noqa: E712 (a condition)
          scorer="affinity"),
)
CONTENT = (_item("gold", "Gold"), _item("basic", "Basic"), _item("travel", "Travel"),
           _item("generic", "Hello"))
JOURNEY = Journey("offer", trigger=EventTrigger("visit"), entry="s",
                  steps={"s": Send("generic", "email", offers=tuple(o.id for o in OFFERS))})


def _engine(storage_factory: Factory, clock: ManualClock) -> Engine:
    return Engine(storage=storage_factory(), channels={"email": RecordingChannel()}, clock=clock,
                  scorers={"affinity": _affinity})


def test_the_best_eligible_offer_is_sent_within_its_caps_across_restarts(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    engine = _engine(storage_factory, clock)
    engine.publish(journeys=[JOURNEY], content=CONTENT, offers=OFFERS)
    engine.identify("ann", {"tier": "gold", "travel_score": 50})
    engine.identify("bob", {"tier": "silver", "travels": True, "travel_score": 5})
    chosen: list[tuple[str, str | None, str]] = []
    for day in (0, 1, 2, 8):
        clock.set(T0 + day * DAY)
        engine = _engine(storage_factory, clock)  # a restart: counts come from the record
        for customer in ("ann", "bob"):
            [message] = engine.handle_event(ev("visit", customer, clock.now())).messages
            chosen.append((customer, message.offer_id, message.fields["subject"]))
    assert chosen == [
        # Ann: gold (priority 10) once ever, then basic once a week, else the fallback.
        ("ann", "gold_card", "Gold"), ("bob", "travel_card", "Travel"),
        ("ann", "basic_card", "Basic"), ("bob", "travel_card", "Travel"),
        ("ann", None, "Hello"), ("bob", "travel_card", "Travel"),
        # Exactly 7 days after Ann's basic card, it has left the window (half-open).
        ("ann", "basic_card", "Basic"), ("bob", "travel_card", "Travel"),
    ]
    state = engine.customer_state("ann")
    assert state is not None
    assert {k: v.count for k, v in state.offers.items()} == {"gold_card": 1, "basic_card": 2}
    assert state.offers["basic_card"].recent == (T0 + 8 * DAY,)
    details = [a.detail for a in engine.activities(T0, T0 + 9 * DAY, customer_id="ann")
               if a.kind == "offer"]
    assert details == ["gold_card", "basic_card", "fallback", "basic_card"]


def test_a_deferred_offer_send_logs_its_offer_once_when_it_goes(
    storage_factory: Factory,
) -> None:
    # T0 is 10:00 UTC: inside 09:00-11:00 quiet hours, so the send waits until 11:00, where
    # it chooses again; one choice went on to a message, and the log says so once.
    clock = ManualClock(T0)
    engine = _engine(storage_factory, clock)
    engine.publish(journeys=[JOURNEY], content=CONTENT, offers=OFFERS,
                   quiet_hours=[QuietHours("morning", time(9), time(11))])
    engine.identify("ann", {"tier": "gold"})
    assert engine.handle_event(ev("visit", "ann", T0)).messages == ()
    clock.advance(timedelta(hours=2))
    (message,) = engine.run_due().messages
    assert message.offer_id == "gold_card"
    log = [(a.kind, a.detail) for a in engine.activities(T0, T0 + DAY, customer_id="ann")
           if a.kind in ("offer", "quiet_hours", "sent")]
    assert [kind for kind, _ in log] == ["quiet_hours", "offer", "sent"]
    assert log[1] == ("offer", "gold_card")


def test_a_render_retry_survives_a_restart(storage_factory: Factory) -> None:
    clock = ManualClock(T0)
    engine = _engine(storage_factory, clock)
    item = ContentItem("c", (Variant("email", {"subject": "Hi {{ profile.first_name }}",
                                              "text": "Hello"}),),
                       sample=ContentSample(profile={"first_name": "Ann"}))
    engine.publish(content=[item], journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="s",
        steps={"s": Send("c", "email", on_render_error="retry")},
    )])
    engine.handle_event(ev("go", "bob", T0))
    clock.advance(RENDER_RETRY_DELAYS[0])
    engine = _engine(storage_factory, clock)
    assert [f.action for f in engine.run_due().failures] == ["retrying"]
    engine = _engine(storage_factory, clock)
    [waiting] = engine.enrollments("bob")
    assert (waiting.retries, waiting.wake_at) == (2, clock.now() + RENDER_RETRY_DELAYS[1])
    engine.identify("bob", {"first_name": "Bob"})
    clock.advance(RENDER_RETRY_DELAYS[1])
    assert [m.fields["subject"] for m in engine.run_due().messages] == ["Hi Bob"]
    assert [e.status for e in engine.enrollments("bob")] == ["completed"]


def _meddling(profile: Mapping[str, Any], context: Mapping[str, Any]) -> float:
    """A scorer that writes into what it is given (a host's bug, or a cache it keeps there)."""
    profile["scored"] = True  # type: ignore[index]
    profile["tags"].append("scored")
    context["scored"] = True  # type: ignore[index]
    return 1.0


def test_a_scorer_cannot_change_the_profile_or_the_context(storage_factory: Factory) -> None:
    clock = ManualClock(T0)
    engine = Engine(storage=storage_factory(), channels={"email": RecordingChannel()},
                    clock=clock, scorers={"meddling": _meddling})
    engine.publish(content=CONTENT, offers=[Offer("travel_card", "travel", scorer="meddling")],
                   journeys=[Journey("offer", trigger=EventTrigger("visit"), entry="s", steps={
                       "s": Send("generic", "email", offers=("travel_card",), next="w"),
                       "w": Wait(DAY)})])
    engine.identify("ann", {"tags": ["vip"]})
    [message] = engine.handle_event(ev("visit", "ann", T0, page="home")).messages
    assert message.offer_id == "travel_card"
    engine = _engine(storage_factory, clock)  # what was stored, on every storage
    profile = engine.profile("ann")
    assert profile is not None and profile.attributes == {"tags": ["vip"]}
    [enrollment] = engine.enrollments("ann")
    assert enrollment.context == {"page": "home"}


def test_a_rolling_offer_cap_holds_across_an_identity_merge(storage_factory: Factory) -> None:
    # Twice in 3 days: the anonymous visitor got it once, the known customer once; the merged
    # customer has had it twice in the window, so a third visit gets the next offer.
    clock = ManualClock(T0)
    engine = _engine(storage_factory, clock)
    offers = (Offer("a_off", "gold", priority=5, cap=OfferCap(2, per=3 * DAY)),
              Offer("b_off", "basic", priority=1))
    engine.publish(content=CONTENT, offers=offers, journeys=[Journey(
        "offer", trigger=EventTrigger("visit"), entry="s",
        steps={"s": Send("generic", "email", offers=("a_off", "b_off"))})])
    chosen = [m.offer_id for m in engine.handle_event(ev("visit", "anon", T0)).messages]
    clock.advance(timedelta(hours=1))
    chosen += [m.offer_id for m in engine.handle_event(ev("visit", "ann", clock.now())).messages]
    clock.advance(timedelta(hours=1))
    engine.identify("ann", {"tier": "gold"}, anonymous_id="anon")
    state = engine.customer_state("ann")
    assert state is not None
    assert state.offers["a_off"].recent == (T0, T0 + timedelta(hours=1))
    chosen += [m.offer_id for m in engine.handle_event(ev("visit", "ann", clock.now())).messages]
    assert chosen == ["a_off", "a_off", "b_off"]


def test_offer_priorities_compare_exactly_however_large() -> None:
    # Priorities are whole numbers: one past what a float holds exactly still wins, and one
    # past any float does not crash the send.
    clock = ManualClock(T0)
    engine = Engine(channels={"email": RecordingChannel()}, clock=clock)
    engine.publish(content=CONTENT, offers=(
        Offer("a_off", "gold", priority=2**53), Offer("b_off", "basic", priority=2**53 + 1),
        Offer("c_off", "travel", priority=-(10**400)),
    ), journeys=[Journey("offer", trigger=EventTrigger("visit"), entry="s", steps={
        "s": Send("generic", "email", offers=("a_off", "b_off", "c_off"))})])
    [message] = engine.handle_event(ev("visit", "ann", T0)).messages
    assert message.offer_id == "b_off"


def test_a_scorer_may_return_any_real_number() -> None:
    # A model's score is often not a float: a Decimal from a database, a Fraction, a NumPy
    # float32. Each is a number, and must not silently leave its offer out.
    from decimal import Decimal
    from fractions import Fraction

    scores: dict[str, Any] = {"d": Decimal("0.9"), "f": Fraction(1, 2), "t": True}
    clock = ManualClock(T0)
    engine = Engine(channels={"email": RecordingChannel()}, clock=clock,
                    scorers={k: (lambda p, c, v=v: v) for k, v in scores.items()})
    engine.publish(content=CONTENT, offers=(
        Offer("a_dec", "gold", scorer="d"), Offer("b_frac", "basic", scorer="f"),
        Offer("c_bool", "travel", scorer="t"),
    ), journeys=[Journey("offer", trigger=EventTrigger("visit"), entry="s", steps={
        "s": Send("generic", "email", offers=("a_dec", "b_frac", "c_bool"), next="t"),
        "t": Send("generic", "email", offers=("b_frac", "c_bool"))})])
    chosen = [m.offer_id for m in engine.handle_event(ev("visit", "ann", T0)).messages]
    assert chosen == ["a_dec", "b_frac"]  # a bool is still no score


def test_a_send_retried_to_render_logs_its_offer_once_when_it_goes(
    storage_factory: Factory,
) -> None:
    # Each failed render chooses the offer again; only the choice that went on to a message is
    # logged, so counting offer entries counts offers sent.
    clock = ManualClock(T0)
    engine = _engine(storage_factory, clock)
    strict = ContentItem("gold", (Variant("email", {"subject": "Hi {{ profile.first_name }}",
                                                   "text": "Gold"}),),
                         sample=ContentSample(profile={"first_name": "Ann"}))
    engine.publish(content=[strict, _item("generic", "Hello")],
                   offers=[Offer("gold_card", "gold")],
                   journeys=[Journey("offer", trigger=EventTrigger("visit"), entry="s", steps={
                       "s": Send("generic", "email", offers=("gold_card",),
                                 on_render_error="retry")})])
    engine.handle_event(ev("visit", "ann", T0))
    clock.advance(RENDER_RETRY_DELAYS[0])
    engine.run_due()
    engine.identify("ann", {"first_name": "Ann"})
    clock.advance(RENDER_RETRY_DELAYS[1])
    [message] = engine.run_due().messages
    assert message.offer_id == "gold_card"
    log = [(a.kind, a.detail) for a in engine.activities(T0, T0 + DAY, customer_id="ann")
           if a.kind in ("offer", "render_retry", "sent")]
    assert [kind for kind, _ in log] == ["render_retry", "render_retry", "offer", "sent"]


def test_an_offer_withheld_at_dispatch_gives_its_cap_back(storage_factory: Factory) -> None:
    # Written to the outbox, then withheld before its first attempt (an unsubscribe came
    # first): it never went out, so the once-ever gold card is still the customer's to get,
    # as a frequency cap slot is given back.
    clock = ManualClock(T0)
    engine = Engine(storage=storage_factory(), channels={"email": RecordingChannel()},
                    clock=clock, dispatch="deferred")
    engine.publish(content=CONTENT, offers=OFFERS[:1], journeys=[Journey(
        "offer", trigger=EventTrigger("visit"), entry="s",
        steps={"s": Send("generic", "email", offers=("gold_card",))})])
    engine.identify("ann", {"tier": "gold"})
    [written] = engine.handle_event(ev("visit", "ann", T0)).messages
    assert written.offer_id == "gold_card"
    engine.set_consent("ann", subscribed=False, channel="email")
    assert engine.dispatch_pending() == 0
    state = engine.customer_state("ann")
    assert state is not None and "gold_card" not in state.offers
    engine.set_consent("ann", subscribed=True, channel="email")
    clock.advance(DAY)
    [again] = engine.handle_event(ev("visit", "ann", clock.now())).messages
    assert again.offer_id == "gold_card"
