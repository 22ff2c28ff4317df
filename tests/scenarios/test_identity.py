"""Identity merge, on every storage: ``identify(known, ..., anonymous_id=anonymous)`` folds the
anonymous customer's record into the known one in one transaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cjo import (
    AttributeTrigger,
    ContentItem,
    DeliveryResult,
    Engine,
    Event,
    FrequencyCap,
    InactivityTrigger,
    Journey,
    ManualClock,
    RecordingChannel,
    ReentryPolicy,
    Segment,
    SegmentTrigger,
    Send,
    Topic,
    UsageError,
    Variant,
    Wait,
    attr,
    performed,
    total,
)
from cjo.analytics import format_table, journey_report
from cjo.model.triggers import EventTrigger
from tests.helpers import Factory

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

NOTE = ContentItem("note", variants=(Variant("inbox", {"subject": "Hi", "text": "hello"}),))


def _two_sends(journey_id: str, trigger: str, wait: timedelta, **kw: Any) -> Journey:
    return Journey(
        id=journey_id, trigger=EventTrigger(trigger), entry="first",
        steps={"first": Send("note", "inbox", next="wait"), "wait": Wait(wait, next="second"),
               "second": Send("note", "inbox")},
        **kw,
    )


class Host:
    def __init__(self, factory: Factory, **publish: Any) -> None:
        self.clock = ManualClock(T0)
        self.channel = RecordingChannel()
        self.engine = Engine(factory(), channels={"inbox": self.channel}, clock=self.clock,
                             recipient_attributes=("email",))
        self.engine.publish(content=[NOTE], **publish)
        self._n = 0

    def event(self, name: str, customer: str, **props: Any) -> None:
        self._n += 1
        self.engine.handle_event(Event(customer_id=customer, name=name, timestamp=self.clock.now(),
                                       properties=props, event_id=f"e{self._n}"))

    def sent(self) -> list[tuple[str, str, str]]:
        return [(m.customer_id, m.journey_id, m.step_id) for m in self.channel.messages]

    def keys(self) -> list[str]:
        return [m.idempotency_key for m in self.channel.messages]


def test_known_attribute_values_win_and_the_anonymous_record_is_emptied(
    storage_factory: Factory,
) -> None:
    host = Host(storage_factory)
    host.engine.identify("anon-1", {"color": "red", "size": "M"}, timezone="Europe/Paris")
    host.engine.identify("c1", {"color": "blue", "email": "c1@example.com"}, locale="fr")
    host.engine.identify("c1", {"plan": "pro"}, anonymous_id="anon-1")
    profile = host.engine.profile("c1")
    assert profile is not None
    assert dict(profile.attributes) == {
        "color": "blue", "size": "M", "email": "c1@example.com", "plan": "pro",
    }
    assert (profile.timezone, profile.locale) == ("Europe/Paris", "fr")
    assert host.engine.profile("anon-1") is None
    assert host.engine.enrollments("anon-1") == []
    # A merge of a customer never seen is an identify.
    host.engine.identify("c2", {"x": 1}, anonymous_id="never-seen")
    p2 = host.engine.profile("c2")
    assert p2 is not None
    assert dict(p2.attributes) == {"x": 1}
    assert host.engine.customer_state("never-seen") is None
    with pytest.raises(UsageError, match="into itself"):
        host.engine.identify("c1", anonymous_id="c1")


def test_enrollments_move_over_or_end_as_merged_and_nothing_is_sent_twice(
    storage_factory: Factory,
) -> None:
    host = Host(storage_factory, journeys=[
        _two_sends("welcome", "signed_up", DAY), _two_sends("browse", "viewed", 2 * DAY),
    ])
    host.event("signed_up", "anon-1")
    host.event("viewed", "anon-1")
    host.event("signed_up", "c1")
    assert host.sent() == [("anon-1", "welcome", "first"), ("anon-1", "browse", "first"),
                           ("c1", "welcome", "first")]
    browse = next(e for e in host.engine.enrollments("anon-1") if e.journey_id == "browse")
    host.clock.advance(HOUR)
    outcome = host.engine.identify("c1", {"email": "c1@example.com"}, anonymous_id="anon-1")
    assert [(e.journey_id, e.customer_id, e.status) for e in outcome.ended] == [
        ("welcome", "anon-1", "merged"),
    ]
    active = {e.journey_id: e for e in host.engine.enrollments("c1") if e.active}
    assert set(active) == {"welcome", "browse"}
    moved = active["browse"]
    # The moved enrollment keeps its id, step and wake-up; the known welcome continues.
    assert (moved.id, moved.step_id, moved.wake_at) == (browse.id, "wait", browse.wake_at)
    assert moved.customer_id == "c1"
    assert host.engine.enrollments("anon-1") == []
    # A second identify with the same anonymous id finds nothing left to merge.
    host.engine.identify("c1", anonymous_id="anon-1")
    host.clock.advance(3 * DAY)
    host.engine.run_due()
    assert host.sent()[3:] == [("c1", "welcome", "second"), ("c1", "browse", "second")]
    assert host.channel.messages[-1].recipient.get("email") == "c1@example.com"
    assert len(set(host.keys())) == len(host.keys()) == 5
    kinds = [(a.customer_id, a.journey_id, a.kind, a.detail) for a in
             host.engine.activities(T0, T0 + 10 * DAY) if a.kind in ("merged", "merged_in")]
    assert kinds == [("anon-1", "welcome", "merged", "merged into a known customer"),
                     ("c1", "browse", "merged_in", "anon-1")]
    welcome = next(j for j in host.engine.definitions.journeys if j.id == "welcome")
    report = journey_report(host.engine.storage, welcome)
    assert (report.entered, report.merged, report.completed, report.active) == (2, 1, 1, 0)
    assert "merged 1" in format_table([report])


def test_entry_histories_combine_so_reentry_rules_see_both(storage_factory: Factory) -> None:
    host = Host(storage_factory, journeys=[
        Journey(id="once", trigger=EventTrigger("promo"), entry="mail",
                steps={"mail": Send("note", "inbox")}, reentry=ReentryPolicy.never()),
    ])
    host.event("promo", "anon-1")
    host.engine.identify("c1", anonymous_id="anon-1")
    host.event("promo", "c1")
    assert host.sent() == [("anon-1", "once", "mail")]
    state = host.engine.customer_state("c1")
    assert state is not None
    assert state.history[("once", None)].count == 1


# The known customer went through "once" (entered at T0, completed a day later); the anonymous
# visitor entered it at T0 + 2 days and waits for its second send when the merge comes.
_REENTRY_CASES = {
    "never": (ReentryPolicy.never(), False),
    "cooldown not over": (ReentryPolicy.after_cooldown(7 * DAY), False),
    "cooldown over": (ReentryPolicy.after_cooldown(DAY), True),
    "at most reached": (ReentryPolicy.at_most(1, per=30 * DAY), False),
    "at most not reached": (ReentryPolicy.at_most(2, per=30 * DAY), True),
}


@pytest.mark.parametrize("case", sorted(_REENTRY_CASES))
def test_an_enrollment_the_known_customer_may_not_re_enter_does_not_move_over(
    storage_factory: Factory, case: str,
) -> None:
    policy, moves = _REENTRY_CASES[case]
    host = Host(storage_factory, journeys=[_two_sends("once", "promo", DAY, reentry=policy)])
    host.event("promo", "c1")
    host.clock.advance(DAY)
    host.engine.run_due()                           # c1 completes "once"
    host.clock.advance(DAY)
    host.event("promo", "anon-1")
    host.clock.advance(HOUR)
    outcome = host.engine.identify("c1", anonymous_id="anon-1")
    if moves:
        assert outcome.ended == ()
        assert [e.journey_id for e in host.engine.enrollments("c1") if e.active] == ["once"]
    else:
        assert [(e.customer_id, e.status, e.reason) for e in outcome.ended] == [
            ("anon-1", "merged",
             f"merged into a known customer: the re-entry rule ({policy.mode}) keeps the "
             "known customer out"),
        ]
        assert not [e for e in host.engine.enrollments("c1") if e.active]
    host.clock.advance(2 * DAY)
    host.engine.run_due()
    expected = [("c1", "once", "first"), ("c1", "once", "second"), ("anon-1", "once", "first")]
    assert host.sent() == expected + ([("c1", "once", "second")] if moves else [])
    state = host.engine.customer_state("c1")
    assert state is not None and state.history[("once", None)].count == 2
    if not moves:
        # The merged entry history keeps the rule: the cooldown runs from the merge.
        host.event("promo", "c1")
        assert not [e for e in host.engine.enrollments("c1") if e.active]


def test_a_keyed_instance_the_known_customer_may_not_re_enter_does_not_move_over(
    storage_factory: Factory,
) -> None:
    host = Host(storage_factory, journeys=[
        _two_sends("cart", "carted", DAY, reentry=ReentryPolicy.never(instance_key="cart")),
    ])
    host.event("carted", "c1", cart="A")
    host.clock.advance(2 * DAY)
    host.engine.run_due()                           # c1's cart A completes
    host.event("carted", "anon-1", cart="A")
    host.event("carted", "anon-1", cart="B")
    host.engine.identify("c1", anonymous_id="anon-1")
    active = [(e.journey_id, e.instance_key) for e in host.engine.enrollments("c1") if e.active]
    assert active == [("cart", "B")]                # cart B is new to c1: it moves over
    host.clock.advance(2 * DAY)
    host.engine.run_due()
    assert [(c, step) for c, _j, step in host.sent()] == [
        ("c1", "first"), ("c1", "second"), ("anon-1", "first"), ("anon-1", "first"),
        ("c1", "second"),
    ]


def _three_sends(reentry: ReentryPolicy) -> Journey:
    return Journey(
        id="onboard", trigger=EventTrigger("started"), entry="a", reentry=reentry,
        steps={"a": Send("note", "inbox", next="w1"), "w1": Wait(DAY, next="b"),
               "b": Send("note", "inbox", next="w2"), "w2": Wait(DAY, next="c"),
               "c": Send("note", "inbox")},
    )


@pytest.mark.parametrize("keyed", [False, True])
def test_the_continuing_enrollment_does_not_send_a_step_the_merged_one_sent(
    storage_factory: Factory, keyed: bool,
) -> None:
    reentry = ReentryPolicy.after_exit(instance_key="plan") if keyed else ReentryPolicy()
    key = {"plan": "pro"} if keyed else {}
    host = Host(storage_factory, journeys=[_three_sends(reentry)])
    host.event("started", "anon-1", **key)
    host.clock.advance(DAY)
    host.engine.run_due()                           # anon-1 sends "b", waits before "c"
    host.clock.advance(HOUR)
    host.event("started", "c1", **key)              # c1 sends "a", waits before "b"
    host.clock.advance(HOUR)
    outcome = host.engine.identify("c1", anonymous_id="anon-1")
    assert [(e.customer_id, e.status) for e in outcome.ended] == [("anon-1", "merged")]
    for _ in range(3):
        host.clock.advance(DAY)
        host.engine.run_due()
    assert host.sent() == [("anon-1", "onboard", "a"), ("anon-1", "onboard", "b"),
                           ("c1", "onboard", "a"), ("c1", "onboard", "c")]
    [enrollment] = host.engine.enrollments("c1")
    assert enrollment.status == "completed"
    skipped = [(a.customer_id, a.step_id, a.detail, a.content_id, a.content_version) for a in
               host.engine.activities(T0, T0 + 10 * DAY) if a.kind == "send_skipped"]
    assert skipped == [("c1", "b", "sent before a merge", "note", 1)]
    journey = next(j for j in host.engine.definitions.journeys if j.id == "onboard")
    report = journey_report(host.engine.storage, journey)
    assert report.not_sent == {"sent before a merge": 1}
    assert {row.step_id: row.not_sent for row in report.steps}["b"] == 1


def test_a_merge_that_fills_an_attribute_does_not_fire_its_trigger_again(
    storage_factory: Factory,
) -> None:
    host = Host(storage_factory, journeys=[Journey(
        id="plan_changed", trigger=AttributeTrigger("plan", changed_to=("pro",)), entry="mail",
        steps={"mail": Send("note", "inbox")},
    )])
    host.engine.identify("anon-1", {"plan": "pro"})     # the change, acted on once
    host.engine.identify("c1", {"email": "c1@example.com"})
    host.clock.advance(HOUR)
    host.engine.identify("c1", anonymous_id="anon-1")
    profile = host.engine.profile("c1")
    assert profile is not None and profile.attributes["plan"] == "pro"
    assert host.sent() == [("anon-1", "plan_changed", "mail")]
    # The same value given with the merge is no change either; a change after it is one.
    host.engine.identify("anon-2", {"plan": "pro"})
    host.engine.identify("c1", {"plan": "pro"}, anonymous_id="anon-2")
    host.engine.identify("c1", {"plan": "team"})
    host.engine.identify("c1", {"plan": "pro"})
    assert host.sent() == [("anon-1", "plan_changed", "mail"), ("anon-2", "plan_changed", "mail"),
                           ("c1", "plan_changed", "mail")]


def test_the_known_customers_own_change_given_with_the_merge_fires(
    storage_factory: Factory,
) -> None:
    host = Host(storage_factory, journeys=[Journey(
        id="plan_changed", trigger=AttributeTrigger("plan", changed_to=("pro",)), entry="mail",
        steps={"mail": Send("note", "inbox")},
    )])
    host.engine.identify("c1", {"plan": "free"})
    host.engine.identify("anon-1", {"plan": "pro"})
    host.clock.advance(HOUR)
    # The known value wins the merge (free), then the update changes it: a change of c1's plan.
    host.engine.identify("c1", {"plan": "pro"}, anonymous_id="anon-1")
    assert host.sent() == [("anon-1", "plan_changed", "mail"), ("c1", "plan_changed", "mail")]


def test_event_histories_combine_and_memberships_are_evaluated_again(
    storage_factory: Factory,
) -> None:
    host = Host(
        storage_factory,
        segments=[Segment("big_spender", total("purchase", "amount") > 100),
                  Segment("regular", performed("purchase").at_least(3)),
                  Segment("anonymous_browser", ~attr("email").exists())],
        journeys=[Journey(id="vip", trigger=SegmentTrigger("big_spender"), entry="mail",
                          steps={"mail": Send("note", "inbox")})],
    )
    host.event("purchase", "anon-1", amount=60)
    host.event("purchase", "anon-1", amount=30)
    host.engine.identify("c1", {"email": "c1@example.com"})
    host.event("purchase", "c1", amount=20)
    assert host.engine.segment_members("anonymous_browser") == ["anon-1"]
    assert host.engine.segment_members("big_spender") == []
    host.clock.advance(HOUR)
    host.engine.identify("c1", anonymous_id="anon-1")
    state = host.engine.customer_state("c1")
    assert state is not None
    track = state.tracks["purchase|amount"]
    assert (track.count, track.total, track.low, track.high) == (3, 110, 20, 60)
    assert host.engine.segment_members("big_spender") == ["c1"]
    assert host.engine.segment_members("regular") == ["c1"]
    assert host.engine.segment_count("anonymous_browser") == 0
    assert state.segments["big_spender"] == T0 + HOUR
    # Entering by the merge starts the segment's journey for the known customer.
    assert ("c1", "vip", "mail") in host.sent()
    assert host.engine.customer_state("anon-1").tracks == {}  # type: ignore[union-attr]


def test_segment_sizes_count_a_merged_person_once_and_each_log_tells_its_own_story(
    storage_factory: Factory,
) -> None:
    host = Host(storage_factory, segments=[Segment("vip", attr("vip") == True),  # noqa: E712
                                           Segment("guest", ~attr("email").exists())])
    host.engine.identify("c1", {"vip": True, "email": "c1@example.com"})
    host.clock.advance(DAY)
    host.engine.identify("anon-1", {"vip": True})
    host.clock.advance(DAY)
    host.engine.identify("c1", anonymous_id="anon-1")
    host.clock.advance(DAY)
    assert host.engine.segment_members("vip") == ["c1"]
    sizes = host.engine.segment_sizes(["vip", "guest"], T0, every=DAY)
    assert [s.size for s in sizes["vip"]] == [1, 2, 1, 1]
    assert [s.size for s in sizes["guest"]] == [0, 1, 0, 0]

    def log(customer: str) -> list[tuple[datetime, str, str | None]]:
        return sorted((a.at, a.kind, a.detail)
                      for a in host.engine.activities(T0, T0 + 3 * DAY, customer_id=customer)
                      if a.kind.startswith("segment_"))

    # The emptied anonymous record leaves its segments at the merge.
    assert log("anon-1") == [(T0 + DAY, "segment_entered", "guest"),
                             (T0 + DAY, "segment_entered", "vip"),
                             (T0 + 2 * DAY, "segment_exited", "guest"),
                             (T0 + 2 * DAY, "segment_exited", "vip")]
    # A membership the known customer takes over is entered then, and left as it is judged.
    assert log("c1") == [(T0, "segment_entered", "vip"),
                         (T0 + 2 * DAY, "segment_entered", "guest"),
                         (T0 + 2 * DAY, "segment_exited", "guest")]


def test_the_most_recent_consent_statement_wins_and_blocks_stay(
    storage_factory: Factory,
) -> None:
    host = Host(storage_factory, topics=[Topic("news"), Topic("tips")])
    host.engine.set_consent("c1", topic="news", subscribed=True)
    host.engine.set_consent("anon-1", topic="tips", subscribed=True)
    host.clock.advance(HOUR)
    host.engine.set_consent("anon-1", topic="news", subscribed=False)
    host.engine.set_consent("c1", topic="tips", subscribed=False)
    host.engine.block_channel("anon-1", "inbox", "STOP")
    host.engine.identify("c1", anonymous_id="anon-1")
    state = host.engine.customer_state("c1")
    assert state is not None
    assert state.consent == {("news", "*"): (False, T0 + HOUR), ("tips", "*"): (False, T0 + HOUR)}
    assert state.blocked == {"inbox": "STOP"}


@pytest.mark.parametrize("stop_by", ["known", "anonymous"])
def test_a_stop_merged_with_a_bounce_is_not_lifted_by_a_new_address(
    storage_factory: Factory, stop_by: str,
) -> None:
    """One customer said STOP on the channel, the other's address on it bounced: the merged
    block is the customer's word, which a new address does not lift (a bounce alone is)."""
    clock = ManualClock(T0)
    channel = RecordingChannel()
    engine = Engine(storage_factory(), channels={"inbox": channel}, clock=clock,
                    contact_attributes={"inbox": "email"})
    engine.publish(content=[NOTE], journeys=[Journey(
        id="promo", trigger=EventTrigger("promo"), entry="send",
        steps={"send": Send("note", "inbox")})])
    engine.identify("c1", {"email": "c1@example.com"})
    engine.identify("anon-1", {"email": "typo@example.con"})
    stopper, bounced = ("c1", "anon-1") if stop_by == "known" else ("anon-1", "c1")
    engine.block_channel(stopper, "inbox", "STOP")
    engine.handle_event(Event(bounced, "bounced", T0, {"channel": "inbox", "type": "hard"}))
    engine.identify("c1", anonymous_id="anon-1")
    clock.advance(HOUR)
    engine.identify("c1", {"email": "new@example.com"})
    state = engine.customer_state("c1")
    assert state is not None and state.blocked == {"inbox": "STOP"}
    engine.handle_event(Event("c1", "promo", clock.now()))
    assert channel.messages == []


def test_feedback_on_a_message_sent_before_the_merge_reaches_the_known_customer(
    storage_factory: Factory,
) -> None:
    """The host sends feedback under the known id from sign-in on: a message the anonymous
    customer got before (its enrollment moved over, keeping its id) is the known customer's."""
    clock = ManualClock(T0)
    engine = Engine(storage_factory(), channels={"inbox": RecordingChannel()}, clock=clock)
    news = ContentItem("news", topic="news", variants=NOTE.variants)
    engine.publish(content=[news], topics=[Topic("news"), Topic("tips")], journeys=[Journey(
        id="digest", trigger=EventTrigger("digest_ready"), entry="send",
        steps={"send": Send("news", "inbox", next="wait"), "wait": Wait(DAY)})])
    (message,) = engine.handle_event(Event("anon-1", "digest_ready", T0)).messages
    engine.identify("c1", anonymous_id="anon-1")
    clock.advance(HOUR)
    key = message.idempotency_key
    engine.handle_event(Event("c1", "opened", clock.now(), {"message_id": key}))
    engine.handle_event(Event("c1", "unsubscribed", clock.now(), {"message_id": key}))
    engine.handle_event(Event("c1", "bounced", clock.now(), {"message_id": key, "type": "hard"}))
    state = engine.customer_state("c1")
    assert state is not None
    assert state.consent == {("news", "*"): (False, T0 + HOUR)}      # not every topic
    assert state.blocked == {"inbox": "hard bounce"}
    assert [(a.kind, a.customer_id, a.journey_id, a.step_id, a.detail)
            for a in engine.activities(T0 + HOUR, T0 + DAY)] == [
        ("opened", "c1", "digest", "send", None),
        ("unsubscribed", "c1", "digest", "send", "news"),
        ("bounced", "c1", "digest", "send", "hard"),
    ]


def test_bounces_merged_are_lifted_by_a_new_address(storage_factory: Factory) -> None:
    clock = ManualClock(T0)
    engine = Engine(storage_factory(), channels={"inbox": RecordingChannel()}, clock=clock,
                    contact_attributes={"inbox": "email"})
    engine.publish(content=[NOTE])
    for customer in ("c1", "anon-1"):
        engine.identify(customer, {"email": f"{customer}@example.com"})
        engine.handle_event(Event(customer, "bounced", T0, {"channel": "inbox", "type": "hard"}))
    engine.identify("c1", anonymous_id="anon-1")
    state = engine.customer_state("c1")
    assert state is not None and state.blocked == {"inbox": "hard bounce"}
    engine.identify("c1", {"email": "new@example.com"})
    state = engine.customer_state("c1")
    assert state is not None and state.blocked == {}


@pytest.mark.parametrize("said", ["anonymous unsubscribed", "anonymous blocked",
                                  "known unsubscribed"])
def test_a_merge_withholds_the_anonymous_messages_still_to_send_that_consent_stops(
    storage_factory: Factory, said: str,
) -> None:
    clock = ManualClock(T0)
    channel = RecordingChannel()
    engine = Engine(storage_factory(), channels={"inbox": channel}, clock=clock,
                    dispatch="deferred")
    engine.publish(content=[NOTE], topics=[Topic("news")], journeys=[
        Journey(id="news", trigger=EventTrigger("viewed"), entry="mail",
                steps={"mail": Send("note", "inbox", topic="news")}),
        Journey(id="receipt", trigger=EventTrigger("bought"), entry="mail",
                steps={"mail": Send("note", "inbox", transactional=True)}),
    ])
    for n, name in enumerate(["viewed", "bought"]):
        engine.handle_event(Event(customer_id="anon-1", name=name, timestamp=clock.now(),
                                  event_id=f"e{n}"))
    clock.advance(HOUR)  # after the messages were written
    if said == "anonymous unsubscribed":
        engine.set_consent("anon-1", subscribed=False)
    elif said == "anonymous blocked":
        engine.block_channel("anon-1", "inbox", "STOP")
    else:
        engine.set_consent("c1", subscribed=False)
    engine.identify("c1", anonymous_id="anon-1")

    engine.dispatch_pending()
    # The merged record holds the person's consent: a message that may no longer go out
    # does not go out because the record it was written for was emptied.
    sent = [m.journey_id for m in channel.messages]
    assert sent == ([] if said == "anonymous blocked" else ["receipt"])
    # Logged on the known customer, whose record decided it; the anonymous customer's data
    # keeps none of their reasons (erasing the known customer must leave none there).
    withheld = [a.journey_id for a in engine.activities(T0, T0 + DAY, customer_id="c1")
                if a.kind == "withheld"]
    assert withheld == (["news", "receipt"] if said == "anonymous blocked" else ["news"])
    assert {e.last_error for e in engine.storage.customer_outbox("anon-1")
            if e.status == "discarded"} == {"withheld: merged into a known customer"}


def test_a_send_the_anonymous_catch_up_makes_at_the_merge_is_judged_on_the_merged_consent(
    storage_factory: Factory,
) -> None:
    host = Host(storage_factory, topics=[Topic("news")], journeys=[
        Journey(id="news", trigger=EventTrigger("viewed"), entry="wait",
                steps={"wait": Wait(DAY, next="mail"), "mail": Send("note", "inbox",
                                                                       topic="news")}),
    ])
    host.event("viewed", "anon-1")
    host.clock.advance(HOUR)
    host.engine.set_consent("c1", subscribed=False)
    host.clock.advance(DAY)  # the wake-up is due: the merge's catch-up of anon-1 runs it
    outcome = host.engine.identify("c1", anonymous_id="anon-1")
    assert host.sent() == []
    assert list(outcome.delivery.values()) == ["discarded"]


def test_a_merge_discards_an_anonymous_dead_letter_the_merged_consent_stops(
    storage_factory: Factory,
) -> None:
    class Refusing(RecordingChannel):
        refuse = True

        def send(self, message: Any) -> DeliveryResult:
            if self.refuse:
                return DeliveryResult.permanent("rejected", unreachable=False)
            return super().send(message)

    clock = ManualClock(T0)
    channel = Refusing()
    engine = Engine(storage_factory(), channels={"inbox": channel}, clock=clock)
    engine.publish(content=[NOTE], journeys=[
        Journey(id="news", trigger=EventTrigger("viewed"), entry="mail",
                steps={"mail": Send("note", "inbox")}),
    ])
    engine.handle_event(Event(customer_id="anon-1", name="viewed", timestamp=clock.now(),
                              event_id="e1"))
    [dead] = engine.dead_letters()
    clock.advance(HOUR)
    engine.set_consent("c1", subscribed=False)
    engine.identify("c1", anonymous_id="anon-1")

    # Retried, it would have been judged on the emptied anonymous record and gone out.
    channel.refuse = False
    engine.retry_dead_letter(dead.message.idempotency_key)
    engine.dispatch_pending()
    assert channel.messages == []
    assert engine.dead_letters() == []
    assert [a.detail for a in engine.activities(T0, T0 + DAY, customer_id="c1")
            if a.kind == "withheld"] == ["unsubscribed from all marketing"]


def test_the_send_ledger_combines_so_caps_count_both(storage_factory: Factory) -> None:
    host = Host(storage_factory, caps=[FrequencyCap("daily", 2, per=DAY)], journeys=[
        Journey(id="news", trigger=EventTrigger("news"), entry="mail",
                steps={"mail": Send("note", "inbox")}),
    ])
    host.engine.identify("c1", {"email": "c1@example.com"})
    host.event("news", "anon-1")
    host.event("news", "c1")
    host.engine.identify("c1", anonymous_id="anon-1")
    host.event("news", "c1")
    assert host.sent() == [("anon-1", "news", "mail"), ("c1", "news", "mail")]
    state = host.engine.customer_state("c1")
    assert state is not None
    assert len(state.sends) == 2


def _win_back(host: Host) -> None:
    host.engine.publish(journeys=[Journey(
        id="win_back", trigger=InactivityTrigger("purchased", after=10 * DAY), entry="mail",
        steps={"mail": Send("note", "inbox")},
    )])


def test_a_merge_keeps_the_win_back_timed_from_the_last_purchase(
    storage_factory: Factory,
) -> None:
    host = Host(storage_factory)
    _win_back(host)
    host.event("purchased", "c1")                   # the known customer's last purchase, T0
    host.clock.advance(5 * DAY)
    host.engine.identify("anon-1", {"page": "pricing"})   # never buys: quiet from T0 + 5 days
    host.clock.advance(DAY)
    host.engine.identify("c1", anonymous_id="anon-1")
    host.clock.advance(30 * DAY)
    host.engine.run_due()
    assert [(m.customer_id, m.created_at) for m in host.channel.messages] == [
        ("c1", T0 + 10 * DAY)]


def test_a_merge_does_not_fire_the_win_back_twice_in_one_quiet_spell(
    storage_factory: Factory,
) -> None:
    host = Host(storage_factory)
    _win_back(host)
    host.engine.identify("c1", {"email": "c1@example.com"})   # never buys
    host.clock.advance(8 * DAY)
    host.engine.identify("anon-1", {"page": "pricing"})
    host.clock.advance(4 * DAY)
    host.engine.run_due()                           # c1's win-back, at T0 + 10 days
    host.engine.identify("c1", anonymous_id="anon-1")
    host.clock.advance(30 * DAY)
    host.engine.run_due()
    assert [(m.customer_id, m.created_at) for m in host.channel.messages] == [
        ("c1", T0 + 10 * DAY)]


def test_a_failed_merge_changes_neither_customer(
    storage_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = Host(storage_factory, journeys=[_two_sends("browse", "viewed", DAY)])
    host.event("viewed", "anon-1")
    host.engine.identify("c1", {"email": "c1@example.com"})
    before = (host.engine.export_customer("anon-1"), host.engine.export_customer("c1"))
    saves: list[str] = []
    real = Engine._save

    def failing(session: Any, decider: Any) -> None:
        saves.append(session.customer_id)
        real(session, decider)
        if len(saves) == 2:
            raise RuntimeError("the process died half-way through the merge")

    monkeypatch.setattr(Engine, "_save", staticmethod(failing))
    with pytest.raises(RuntimeError):
        host.engine.identify("c1", anonymous_id="anon-1")
    monkeypatch.undo()
    assert saves == ["anon-1", "c1"]
    assert (host.engine.export_customer("anon-1"), host.engine.export_customer("c1")) == before
    host.engine.identify("c1", anonymous_id="anon-1")  # the retry merges
    assert [e.journey_id for e in host.engine.enrollments("c1")] == ["browse"]


def test_export_holds_everything_and_erase_leaves_nothing(storage_factory: Factory) -> None:
    host = Host(
        storage_factory,
        segments=[Segment("buyer", performed("purchase"))],
        journeys=[_two_sends("welcome", "signed_up", DAY)],
    )
    host.engine.identify("c1", {"email": "c1@example.com"}, timezone="Europe/Paris")
    host.event("signed_up", "c1")
    host.event("purchase", "c1", amount=12)
    host.engine.set_consent("c1", topic=None, subscribed=True)
    host.event("signed_up", "c2")
    exported = host.engine.export_customer("c1")
    assert json.loads(json.dumps(exported)) == exported  # plain JSON
    assert list(exported) == ["format", "customer_id", "record", "messages", "activities"]
    record = exported["record"]
    assert list(record) == [
        "created_at", "profile", "enrollments", "entry_history", "consent", "blocked_channels",
        "sends", "tracks", "segments", "offers", "timers", "marks", "decided_at", "newer_layout",
    ]
    assert record["profile"] == {"attributes": {"email": "c1@example.com"},
                                 "timezone": "Europe/Paris", "locale": None}
    assert [(e["journey_id"], e["step_id"]) for e in record["enrollments"]] == [
        ("welcome", "wait"),
    ]
    assert record["entry_history"][0]["count"] == 1
    assert record["consent"] == [{"topic": "*", "channel": "*", "subscribed": True,
                                  "at": T0.isoformat()}]
    assert record["tracks"]["purchase"]["count"] == 1
    assert record["segments"] == {"buyer": T0.isoformat()}
    assert [m["step_id"] for m in exported["messages"]] == ["first"]
    assert exported["messages"][0]["status"] == "delivered"
    assert {a["kind"] for a in exported["activities"]} >= {"entered", "sent",
                                                           "segment_entered"}
    assert all(a["customer_id"] == "c1" for a in exported["activities"])
    assert record["newer_layout"] == {
        "layout": None, "fields": {}, "enrollment_fields": {}, "row_positions": {},
    }

    host.engine.erase_customer("c1")
    assert host.engine.export_customer("c1") == {
        "format": 4, "customer_id": "c1", "record": None, "messages": [], "activities": [],
    }
    assert host.engine.segment_members("buyer") == []
    assert host.engine.segment_count("buyer") == 0
    assert host.engine.export_customer("c2")["record"] is not None


def test_erasing_the_known_customer_leaves_their_id_nowhere_in_the_log(
    storage_factory: Factory,
) -> None:
    host = Host(storage_factory, journeys=[
        _two_sends("welcome", "signed_up", DAY), _two_sends("browse", "viewed", DAY),
    ])
    host.event("signed_up", "c1")
    host.event("signed_up", "anon-1")  # ends as merged: c1 is in welcome already
    host.event("viewed", "anon-1")  # moves over to c1
    host.engine.identify("c1", {"email": "c1@example.com"}, anonymous_id="anon-1")
    host.engine.erase_customer("c1")
    logged = host.engine.activities(T0, T0 + 10 * DAY)
    assert {a.customer_id for a in logged} == {"", "anon-1"}
    # (By whole parts: a pseudonym's hexadecimal digest may hold the letters "c1".)
    assert not [a for a in logged
                if "c1" in a.enrollment_id.split(":") or "c1" in (a.detail or "").split()]


def test_an_entry_under_the_anonymous_id_at_the_merges_instant_takes_an_id_of_its_own(
    storage_factory: Factory,
) -> None:
    host = Host(storage_factory, journeys=[_two_sends("browse", "viewed", DAY)])
    host.event("viewed", "anon-1")
    host.engine.identify("c1", {"email": "c1@example.com"}, anonymous_id="anon-1")
    host.event("viewed", "anon-1")  # the same instant, still under the anonymous id
    host.engine.identify("c2", anonymous_id="anon-1")
    host.event("viewed", "anon-1")  # and again after a second merge
    ids = [e.id for c in ("c1", "c2", "anon-1") for e in host.engine.enrollments(c)]
    assert len(ids) == len(set(ids)) == 3
    host.engine.erase_customer("anon-1")
    host.event("viewed", "anon-1")  # back at that instant after an erasure too
    host.clock.advance(DAY)
    host.engine.run_due()
    # Each enrollment sends its steps (the erased one only its first): none is taken for
    # another's send and dropped.
    assert len(set(host.keys())) == len(host.keys()) == 7


def test_a_message_being_sent_when_a_merge_withholds_it_is_recorded_as_sent(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    merging = Engine(storage_factory(), channels={"inbox": RecordingChannel()}, clock=clock)

    class MergedMeanwhile(RecordingChannel):
        """Another process merges the anonymous customer while this send is under way."""

        def send(self, message: Any) -> DeliveryResult:
            if not self.messages:
                merging.identify("c1", anonymous_id="anon-1")
            return super().send(message)

    channel = MergedMeanwhile()
    sending = Engine(storage_factory(), channels={"inbox": channel}, clock=clock)
    sending.publish(content=[NOTE], journeys=[
        Journey(id="news", trigger=EventTrigger("viewed"), entry="mail",
                steps={"mail": Send("note", "inbox")}),
    ])
    merging.block_channel("c1", "inbox", "STOP")
    sending.handle_event(Event(customer_id="anon-1", name="viewed", timestamp=clock.now(),
                               event_id="e1"))

    [message] = channel.messages  # accepted by the channel
    entry = sending.storage.outbox_entry(message.idempotency_key)
    assert entry is not None and entry.status == "delivered"
    assert not [a for a in sending.activities(T0, T0 + DAY) if a.kind == "withheld"]


@pytest.mark.parametrize("stopped", [True, False], ids=["merged record stops it", "allowed"])
@pytest.mark.parametrize("how", ["its send fails", "its sender dies"])
def test_a_message_being_sent_at_a_merge_is_judged_on_the_merged_record_if_it_comes_back(
    storage_factory: Factory, how: str, stopped: bool,
) -> None:
    clock = ManualClock(T0)
    merging = Engine(storage_factory(), channels={"inbox": RecordingChannel()}, clock=clock)

    class MergedMeanwhile(RecordingChannel):
        """Another process merges the anonymous customer while the first send is under way,
        which then fails."""

        def send(self, message: Any) -> DeliveryResult:
            if how == "its send fails" and not self.refused:
                merging.identify("c1", anonymous_id="anon-1")
                self.refused = True
                return DeliveryResult.transient("503")
            return super().send(message)

        refused = False

    channel = MergedMeanwhile()
    sending = Engine(storage_factory(), channels={"inbox": channel}, clock=clock,
                     dispatch="inline" if how == "its send fails" else "deferred")
    sending.publish(content=[NOTE], journeys=[
        Journey(id="news", trigger=EventTrigger("viewed"), entry="mail",
                steps={"mail": Send("note", "inbox")}),
    ])
    if stopped:
        merging.block_channel("c1", "inbox", "STOP")
    sending.handle_event(Event(customer_id="anon-1", name="viewed", timestamp=clock.now(),
                               event_id="e1"))
    if how == "its sender dies":
        clock.advance(timedelta(minutes=5))
        # A dispatcher claims it, and dies before sending: the merge comes meanwhile.
        assert len(sending.storage.claim_outbox(clock.now(), 10, HOUR)) == 1
        merging.identify("c1", anonymous_id="anon-1")
        [entry] = sending.storage.customer_outbox("anon-1")
        assert entry.status == "pending", "left to the process sending it"
    assert channel.messages == []

    clock.advance(DAY)  # past the retry's back-off, or the dead sender's lease
    sending.dispatch_pending()
    [entry] = sending.storage.customer_outbox("anon-1")
    withheld = [a for a in sending.activities(T0, T0 + 2 * DAY) if a.kind == "withheld"]
    if stopped:
        assert channel.messages == []
        assert (entry.status, entry.last_error) == (
            "discarded", "withheld: merged into a known customer"
        )
        # On the anonymous customer: their data names no reason of the known one's.
        assert [(a.customer_id, a.detail) for a in withheld] == [
            ("anon-1", "merged into a known customer")
        ]
    else:
        assert [m.idempotency_key for m in channel.messages] == [entry.message.idempotency_key]
        assert entry.status == "delivered"
        assert withheld == []


def test_an_at_most_rule_counts_the_entries_of_both_customers_after_a_merge(
    storage_factory: Factory,
) -> None:
    # Twice in 3 days: the anonymous visitor entered once, the known customer once; each
    # record kept its one instant, and the merged record must keep both.
    clock = ManualClock(T0)
    engine = Engine(storage=storage_factory(), channels={"email": RecordingChannel()},
                    clock=clock)
    engine.publish(content=[ContentItem("hi", (Variant("email", {"subject": "Hi",
                                                                  "text": "Hi"}),))],
                   journeys=[Journey("j", trigger=EventTrigger("go"), entry="s",
                                     steps={"s": Send("hi", "email")},
                                     reentry=ReentryPolicy.at_most(2, per=3 * DAY))])
    engine.handle_event(Event(customer_id="anon", name="go", timestamp=T0, event_id="e1"))
    clock.advance(HOUR)
    engine.handle_event(Event(customer_id="ann", name="go", timestamp=clock.now(),
                              event_id="e2"))
    clock.advance(HOUR)
    engine.identify("ann", {"first_name": "Ann"}, anonymous_id="anon")
    outcome = engine.handle_event(Event(customer_id="ann", name="go", timestamp=clock.now(),
                                        event_id="e3"))
    assert outcome.messages == ()
    state = engine.customer_state("ann")
    assert state is not None
    assert state.history[("j", None)].recent == (T0, T0 + HOUR)


def test_a_record_a_merge_emptied_is_in_no_segment_until_an_input_of_its_own(
    storage_factory: Factory,
) -> None:
    # Every login leaves an emptied anonymous record behind: a segment an empty profile
    # satisfies must not count those, when it is published later (every record is evaluated)
    # or refreshed. A later input under the anonymous id is a visitor again.
    host = Host(storage_factory, journeys=[
        Journey("cart", trigger=EventTrigger("added_to_cart"), entry="w",
                steps={"w": Wait(HOUR)})])
    engine = host.engine
    for anonymous in ("anon-1", "anon-2"):
        host.event("added_to_cart", anonymous)
    engine.identify("ann", {"tier": "gold"}, anonymous_id="anon-1")
    host.clock.advance(HOUR)
    engine.publish(segments=[Segment("not_silver", attr("tier") != "silver")])
    engine.run_due()
    # anon-2 never logged in: a visitor without a tier, so not silver.
    assert engine.segment_members("not_silver") == ["ann", "anon-2"]
    engine.refresh_segments()
    assert engine.segment_count("not_silver") == 2
    # The emptied record merged again: nothing of it reaches Bob's.
    engine.identify("bob", {"tier": "silver"}, anonymous_id="anon-1")
    engine.identify("bob", {"tier": "bronze"})
    assert engine.segment_members("not_silver") == ["ann", "anon-2", "bob"]
    assert "merged_away" not in engine.customer_state("bob").marks
    # The anonymous id comes back: a visitor again, judged as any.
    host.clock.advance(HOUR)
    host.event("added_to_cart", "anon-1")
    assert engine.segment_members("not_silver") == ["ann", "anon-1", "anon-2", "bob"]
    assert "merged_away" not in engine.customer_state("anon-1").marks
