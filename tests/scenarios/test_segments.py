"""Segments over event history, on every storage adapter: one scenario per condition kind with
its window edges, profile rules, real-time membership and the journeys it starts and ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from cjo import (
    ContentItem,
    Engine,
    Event,
    ExitCriterion,
    Journey,
    ManualClock,
    RecordingChannel,
    Segment,
    SegmentTrigger,
    Send,
    Variant,
    attr,
    average,
    bucket,
    contains_text,
    first_performed,
    has_all,
    has_any,
    has_none,
    in_segment,
    inactive,
    last_performed,
    matches,
    maximum,
    minimum,
    performed,
    prop,
    starts_with,
    total,
)
from cjo.conditions import Condition
from cjo.errors import UsageError
from cjo.limits import MAX_MATCHED_TEXT
from cjo.segments.history import bucket_of
from cjo.segments.membership import SEGMENT_TIMER
from cjo.segments.rules import ProfileRule, add, copy, increment, stamp
from cjo.storage.base import Storage
from tests.helpers import Factory

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
US = timedelta(microseconds=1)


class World:
    """An engine on one storage with a manual clock, and helpers to drive one customer."""

    def __init__(self, storage: Storage, *segments: Segment, **publish: Any) -> None:
        self.clock = ManualClock(T0)
        self.channel = RecordingChannel()
        self.engine = Engine(storage, channels={"email": self.channel}, clock=self.clock)
        self.engine.publish(segments=segments, **publish)
        self.n = 0

    def send(self, name: str, at: datetime | None = None, customer: str = "c1",
             **props: Any) -> None:
        self.n += 1
        stamp_ = at if at is not None else self.clock.now()
        self.engine.handle_event(Event(customer_id=customer, name=name, timestamp=stamp_,
                                       properties=props, event_id=f"e{self.n}"))

    def at(self, when: datetime) -> None:
        """Move the clock and fire what is due."""
        self.clock.set(when)
        self.engine.run_due(when)

    def members(self, customer: str = "c1") -> set[str]:
        state = self.engine.customer_state(customer)
        return set() if state is None else set(state.segments)

    def changes(self, customer: str = "c1") -> list[tuple[datetime, str, str | None]]:
        return [
            (a.at, a.kind, a.detail)
            for a in self.engine.activities(T0 - 400 * DAY, T0 + 400 * DAY, customer_id=customer)
            if a.kind.startswith("segment_")
        ]


def one(storage_factory: Factory, condition: Condition, **publish: Any) -> World:
    return World(storage_factory(), Segment("s", condition), **publish)


def test_three_purchases_in_30_days_is_left_exactly_when_the_oldest_leaves(
    storage_factory: Factory,
) -> None:
    w = one(storage_factory, performed("purchase").at_least(3).within(days=30))
    for day in (0, 5, 10):
        w.at(T0 + day * DAY)
        w.send("purchase")
    assert w.members() == {"s"}
    # The timer is the instant the first purchase turns 30 days old: no periodic scan.
    assert w.engine.customer_state("c1").timers[SEGMENT_TIMER] == T0 + 30 * DAY  # type: ignore[union-attr]
    w.at(T0 + 30 * DAY - US)
    assert w.members() == {"s"}
    w.at(T0 + 30 * DAY)  # exactly 30 days old: out of the half-open window
    assert w.members() == set()
    assert w.changes() == [(T0 + 10 * DAY, "segment_entered", "s"),
                           (T0 + 30 * DAY, "segment_exited", "s")]


def test_counts_with_a_property_filter_between_dates_and_exact_counts(
    storage_factory: Factory,
) -> None:
    shoes = prop("category") == "shoes"
    paris = timezone(timedelta(hours=1))
    # [T0 - 1 day, T0 + 1 day), the start written in Paris time.
    since, until = (T0 - DAY).astimezone(paris), T0 + DAY
    w = one(storage_factory,
            performed("view", where=shoes).exactly(2).between(since, until)
            & performed("purchase").never())
    w.send("view", category="shoes", at=T0 - DAY - US)  # just before the range
    w.send("view", category="hats")
    assert w.members() == set()
    w.send("view", category="shoes", at=T0 - DAY)  # the first instant of the range
    assert w.members() == set()
    w.send("view", category="shoes")
    assert w.members() == {"s"}
    w.at(until)
    w.send("view", category="shoes")  # the range's end is excluded
    assert w.members() == {"s"}
    w.send("view", category="shoes", at=until - US)
    assert w.members() == set()  # three now: "exactly 2" no longer holds


def test_viewed_twice_this_week_but_did_not_buy(storage_factory: Factory) -> None:
    week = 7 * DAY
    w = one(storage_factory,
            performed("view", where=prop("category") == "shoes").at_least(2).within(week)
            & ~performed("purchase").within(week))
    w.send("view", category="shoes")
    w.at(T0 + DAY)
    w.send("view", category="shoes")
    assert w.members() == {"s"}
    w.at(T0 + 2 * DAY)
    w.send("purchase")
    assert w.members() == set()
    w.at(T0 + 9 * DAY)  # the purchase is 7 days old; but so are both views
    assert w.members() == set()


def test_first_and_last_performed(storage_factory: Factory) -> None:
    cutoff = T0 + DAY
    w = World(storage_factory(),
              Segment("early", first_performed("signup").before(cutoff)),
              Segment("late", first_performed("signup").after(cutoff)),
              Segment("new", first_performed("signup").within(days=7)),
              Segment("recent", last_performed("login").within(days=3)))
    w.send("signup")
    w.send("login")
    assert w.members() == {"early", "new", "recent"}
    w.at(T0 + 3 * DAY)
    assert w.members() == {"early", "new"}
    w.at(T0 + 7 * DAY)
    assert w.members() == {"early"}
    w.send("signup", customer="c2")
    assert w.members("c2") == {"late", "new"}
    w.send("signup", customer="c3", at=cutoff)  # exactly at the instant: neither early nor late
    assert w.members("c3") == {"new"}


def test_inactive_counts_from_creation_when_there_is_no_event(
    storage_factory: Factory,
) -> None:
    w = one(storage_factory, inactive("purchase", days=14))
    w.engine.identify("c1", {"name": "Ann"})  # creates the customer at T0
    assert w.members() == set()
    w.at(T0 + 14 * DAY - US)
    assert w.members() == set()
    w.at(T0 + 14 * DAY)
    assert w.members() == {"s"}
    w.at(T0 + 15 * DAY)
    w.send("purchase")
    assert w.members() == set()
    w.at(T0 + 29 * DAY)
    assert w.members() == {"s"}
    assert [c[0] for c in w.changes()] == [T0 + 14 * DAY, T0 + 15 * DAY, T0 + 29 * DAY]


def test_inactive_published_later_counts_from_the_walk_after_the_publish(
    storage_factory: Factory,
) -> None:
    w = World(storage_factory(), Segment("vip", attr("v") == 1))
    w.engine.identify("quiet", {"v": 1})
    w.engine.identify("back", {"v": 1})
    w.at(T0 + DAY)
    w.engine.publish(segments=[Segment("vip", attr("v") == 1),
                               Segment("idle", inactive("open", days=7))])
    w.at(T0 + 2 * DAY)  # the first worker pass evaluates every customer: tracking begins
    w.at(T0 + 3 * DAY)
    w.send("open", customer="back")
    w.at(T0 + 9 * DAY - US)
    assert w.engine.segment_members("idle") == []
    w.at(T0 + 9 * DAY)  # a customer with no input since counts from the walk
    assert w.engine.segment_members("idle") == ["quiet"]
    w.at(T0 + 10 * DAY)
    assert w.engine.segment_members("idle") == ["back", "quiet"]


def test_window_counts_at_the_limit_are_exact(storage_factory: Factory) -> None:
    month = 30 * DAY
    w = World(storage_factory(),
              Segment("over", performed("x").more_than(1000).within(month)),
              Segment("exact", performed("x").exactly(1000).within(month)),
              Segment("under", performed("x").at_most(1000).within(month)))
    w.engine.handle_events([Event(customer_id="c1", name="x", timestamp=T0, event_id=f"x{i}")
                            for i in range(1000)])
    assert w.members() == {"exact", "under"}
    w.send("x")  # the 1,001st within the window
    assert w.members() == {"over"}


def test_aggregates_in_a_window_and_over_the_lifetime(storage_factory: Factory) -> None:
    w = World(storage_factory(),
              Segment("big_week", total("purchase", "amount").within(days=7) > 500),
              Segment("avg", average("purchase", "amount") >= 200),
              Segment("min", minimum("purchase", "amount").within(days=7) < 50),
              Segment("max", maximum("purchase", "amount") > 1000))
    w.send("purchase", amount=300)
    w.send("purchase", amount="n/a")  # not a number: left out
    assert w.members() == {"avg"}
    w.at(T0 + 2 * DAY)
    w.send("purchase", amount=250)
    assert w.members() == {"big_week", "avg"}
    w.send("purchase", amount=20)
    assert w.members() == {"big_week", "min"}  # average 190
    w.at(T0 + 7 * DAY)  # the 300 leaves the week: 270 left
    assert w.members() == {"min"}
    w.send("purchase", amount=2000)
    assert w.members() == {"big_week", "avg", "min", "max"}
    w.at(T0 + 9 * DAY)  # 250 and 20 leave
    assert w.members() == {"big_week", "avg", "max"}


def test_windows_read_instants_whatever_the_time_zone_of_the_timestamp(
    storage_factory: Factory,
) -> None:
    tokyo = timezone(timedelta(hours=9))
    w = one(storage_factory, performed("purchase").within(days=30))
    w.at(T0 + 30 * DAY)
    # Exactly 30 days before now, written in Tokyo time: already out.
    w.send("purchase", at=(T0).astimezone(tokyo))
    assert w.members() == set()
    w.send("purchase", at=(T0 + US).astimezone(tokyo))
    assert w.members() == {"s"}
    w.at(T0 + 30 * DAY + US)
    assert w.members() == set()


def test_text_list_and_bucket_conditions(storage_factory: Factory) -> None:
    w = World(storage_factory(),
              Segment("vip_mail", starts_with(attr("email"), "VIP.", ignore_case=True)),
              Segment("corp", matches(attr("email"), r"@(acme|initech)\.com$")),
              Segment("gmail", contains_text(attr("email"), "@gmail")),
              Segment("shoes", has_any(attr("tags"), ["shoes", "boots"])),
              Segment("both", has_all(attr("tags"), ["shoes", "sale"])),
              Segment("clean", has_none(attr("tags"), ["fraud"])),
              Segment("holdout", bucket("holdout-1").below(50)))
    w.engine.identify("c1", {"email": "vip.ann@acme.com", "tags": ["shoes", "sale"]})
    expected = {"vip_mail", "corp", "shoes", "both", "clean"}
    if bucket_of("c1", "holdout-1", 100) < 50:
        expected.add("holdout")
    assert w.members() == expected
    w.engine.identify("c1", {"email": "x" * (MAX_MATCHED_TEXT + 1) + "@acme.com",
                             "tags": ["fraud"]})
    assert w.members() == expected - {"vip_mail", "corp", "shoes", "both", "clean"}
    # The bucket is stable and splits customers about evenly.
    share = sum(bucket_of(f"c{i}", "holdout-1", 100) < 50 for i in range(2000)) / 2000
    assert 0.45 < share < 0.55


def test_segments_of_segments_and_attributes_follow_in_order(
    storage_factory: Factory,
) -> None:
    w = World(storage_factory(),
              Segment("buyer", performed("purchase").within(days=10)),
              Segment("vip_buyer", in_segment("buyer") & (attr("vip") == True)),  # noqa: E712
              Segment("lapsed_vip", ~in_segment("buyer") & (attr("vip") == True)))  # noqa: E712
    w.engine.identify("c1", {"vip": True})
    assert w.members() == {"lapsed_vip"}
    w.send("purchase")
    assert w.members() == {"buyer", "vip_buyer"}
    w.at(T0 + 10 * DAY)
    assert w.members() == {"lapsed_vip"}
    w.engine.identify("c1", {"vip": False})
    assert w.members() == set()


def test_profile_rules_keep_attributes_current_before_journeys_react(
    storage_factory: Factory,
) -> None:
    rule = ProfileRule("purchases", "purchase", (
        stamp("last_purchase_at"), add("lifetime_spend", prop="total"), increment("orders"),
        copy("last_sku", prop="sku"),
    ))
    high = Segment("high", (attr("lifetime_spend") > 500)
                   | performed("purchase").at_least(3).within(days=30))
    thanks = Journey(id="thanks", trigger=SegmentTrigger("high"), entry="mail",
                     steps={"mail": Send("note", "email")})
    w = World(storage_factory(), high, profile_rules=[rule], journeys=[thanks],
              content=[ContentItem("note", variants=(Variant("email", {"subject": "hi", "text": "hi"}),))])
    w.send("purchase", total=400, sku="A")
    w.send("purchase", total=200, sku="B", at=T0 - DAY)  # late: the stamp stays
    profile = w.engine.profile("c1")
    assert profile is not None
    assert profile.attributes == {"last_purchase_at": T0, "lifetime_spend": 600, "orders": 2,
                                  "last_sku": "B"}
    assert w.members() == {"high"}
    assert [m.journey_id for m in w.channel.messages] == ["thanks"]


def test_win_back_fires_exactly_14_days_after_the_last_purchase_and_ends_on_a_purchase(
    storage_factory: Factory,
) -> None:
    winback = Journey(
        id="winback", trigger=SegmentTrigger("inactive_14d"), entry="mail",
        steps={"mail": Send("note", "email", next="wait"),
               "wait": Send("note", "email")},
        exit_criteria=(ExitCriterion("came back", segment="inactive_14d", on="exit"),),
    )
    w = World(storage_factory(), Segment("inactive_14d", inactive("purchase", days=14)),
              journeys=[winback],
              content=[ContentItem("note", variants=(Variant("email", {"subject": "hi", "text": "hi"}),))])
    w.send("purchase")
    w.at(T0 + 3 * DAY)
    w.send("purchase", at=T0 + 2 * DAY)  # stamped a day late: the quiet spell starts then
    state = w.engine.customer_state("c1")
    assert state is not None and state.wake_at == T0 + 16 * DAY  # one timer, no scan
    w.at(T0 + 16 * DAY - US)
    assert w.channel.messages == []
    w.at(T0 + 16 * DAY)
    assert [m.created_at for m in w.channel.messages] == [T0 + 16 * DAY] * 2
    assert w.members() == {"inactive_14d"}


@pytest.mark.parametrize("exit_on_goal", [True, False])
def test_a_purchase_that_leaves_the_segment_reaches_the_goal_before_the_segment_exit(
    storage_factory: Factory, exit_on_goal: bool,
) -> None:
    from cjo import Goal, Wait
    from cjo.analytics import journey_report

    winback = Journey(
        id="winback", trigger=SegmentTrigger("inactive_14d"), entry="wait",
        steps={"wait": Wait(30 * DAY)},
        goal=Goal("purchase", within=30 * DAY, exit_on_goal=exit_on_goal),
        exit_criteria=(ExitCriterion("came back", segment="inactive_14d", on="exit"),),
    )
    w = World(storage_factory(), Segment("inactive_14d", inactive("purchase", days=14)),
              journeys=[winback])
    w.send("purchase")
    w.at(T0 + 14 * DAY)
    w.at(T0 + 20 * DAY)
    w.send("purchase")  # the goal, and it ends the quiet spell: the goal is checked first
    (ended,) = w.engine.enrollments("c1")
    assert (ended.status, ended.end_reason) == (
        ("converted", "goal") if exit_on_goal else ("exited", "came back"))
    report = journey_report(w.engine.storage, winback)
    assert report.converted == 1
    assert dict(report.exited) == ({} if exit_on_goal else {"came back": 1})


def test_an_exit_criterion_on_segment_entry_interrupts_a_wait(
    storage_factory: Factory,
) -> None:
    from cjo import EventTrigger, Wait

    journey = Journey(
        id="nurture", trigger=EventTrigger("signed_up"), entry="wait",
        steps={"wait": Wait(10 * DAY, next="mail"), "mail": Send("note", "email")},
        exit_criteria=(ExitCriterion("bought", segment="buyer", on="enter"),),
    )
    w = World(storage_factory(), Segment("buyer", performed("purchase")), journeys=[journey],
              content=[ContentItem("note", variants=(Variant("email", {"subject": "hi", "text": "hi"}),))])
    w.send("signed_up")
    w.at(T0 + DAY)
    w.send("purchase")
    enrollments = w.engine.enrollments("c1")
    assert [(e.status, e.end_reason, e.ended_at) for e in enrollments] == [
        ("exited", "bought", T0 + DAY)
    ]
    w.at(T0 + 11 * DAY)
    assert w.channel.messages == []


def test_a_segment_published_later_is_evaluated_at_the_next_input(
    storage_factory: Factory,
) -> None:
    w = World(storage_factory(), Segment("a", attr("plan") == "pro"))
    w.engine.identify("c1", {"plan": "pro"})
    assert w.members() == {"a"}
    w.clock.set(T0 + DAY)
    w.engine.publish(segments=[Segment("a", attr("plan") == "free"),
                               Segment("b", inactive("purchase", days=1))])
    w.engine.identify("c1", {"x": 1})
    assert w.members() == set()
    assert w.changes()[-1] == (T0 + DAY, "segment_exited", "a")
    w.at(T0 + 2 * DAY)  # tracking began at that input: a whole day of quiet
    assert w.members() == {"b"}


def test_membership_query_evaluates_now_and_records_stay_small(
    storage_factory: Factory,
) -> None:
    w = one(storage_factory, performed("view").at_least(2).within(days=1))
    for i in range(500):
        w.clock.set(T0 + i * timedelta(minutes=1))
        w.send("view")
    assert w.engine.in_segment("c1", "s")
    state = w.engine.customer_state("c1")
    assert state is not None
    assert len(state.tracks["view"].recent) == 3  # a count of 2 needs no more than 3
    w.clock.set(T0 + 500 * timedelta(minutes=1) + DAY)
    assert not w.engine.in_segment("c1", "s")  # before any worker ran
    assert not w.engine.in_segment("nobody", "s")
    with pytest.raises(Exception, match="no segment"):
        w.engine.in_segment("c1", "missing")


def test_refresh_segments_re_evaluates_every_customer_after_a_changed_definition(
    storage_factory: Factory,
) -> None:
    vip = Journey(id="vip", trigger=SegmentTrigger("rich", on="enter"), entry="mail",
                  steps={"mail": Send("note", "email")})
    w = World(storage_factory(), Segment("rich", attr("spend") > 1000), journeys=[vip],
              content=[ContentItem("note", variants=(Variant("email", {"subject": "hi", "text": "hi"}),))])
    for i, spend in enumerate((500, 1500, 800)):
        w.engine.identify(f"c{i}", {"spend": spend})
    assert w.engine.segment_members("rich") == ["c1"]
    w.clock.set(T0 + DAY)
    w.engine.publish(segments=[Segment("rich", attr("spend") > 600)])
    outcome = w.engine.refresh_segments(batch_size=2)
    assert w.engine.segment_members("rich") == ["c1", "c2"]
    assert [(e.customer_id, e.at) for e in outcome.entered] == [("c2", T0 + DAY)]
    assert w.changes("c2") == [(T0 + DAY, "segment_entered", "rich")]
    assert w.engine.refresh_segments().entered == ()  # nothing stale any more


def test_a_back_test_fires_segment_journeys_at_their_instants() -> None:
    from cjo import Definitions, backtest

    winback = Journey(id="winback", trigger=SegmentTrigger("inactive_14d"), entry="mail",
                      steps={"mail": Send("note", "email")})
    definitions = Definitions(
        journeys=(winback,), segments=(Segment("inactive_14d", inactive("purchase", days=14)),),
        content=(ContentItem("note", variants=(Variant("email", {"subject": "hi", "text": "hi"}),)),),
    )
    stream = [Event(customer_id=c, name="purchase", timestamp=T0 + d * DAY, properties={},
                    event_id=f"{c}-{d}") for d, c in ((0, "a"), (1, "b"), (5, "a"))]
    channel = RecordingChannel()
    result = backtest(definitions, stream, until=T0 + 30 * DAY, channels={"email": channel})
    assert result.entered == {"winback": 2}
    assert sorted((m.customer_id, m.created_at) for m in channel.messages) == [
        ("a", T0 + 19 * DAY), ("b", T0 + 15 * DAY)
    ]


def test_a_window_count_arms_its_timer_where_it_crosses_its_bound(
    storage_factory: Factory,
) -> None:
    w = one(storage_factory, performed("view").at_least(2).within(days=7))
    for day in (0, 1, 2):
        w.at(T0 + day * DAY)
        w.send("view")
    # The first view leaving leaves two: the count falls below 2 when the second one leaves.
    assert w.engine.customer_state("c1").timers[SEGMENT_TIMER] == T0 + 8 * DAY  # type: ignore[union-attr]
    w.at(T0 + 7 * DAY)
    assert w.members() == {"s"}
    w.at(T0 + 8 * DAY - US)
    assert w.members() == {"s"}
    w.at(T0 + 8 * DAY)
    assert w.members() == set()
    assert SEGMENT_TIMER not in w.engine.customer_state("c1").timers  # type: ignore[union-attr]
    assert w.changes() == [(T0 + DAY, "segment_entered", "s"),
                           (T0 + 8 * DAY, "segment_exited", "s")]


def test_a_timed_segment_that_also_reads_now_is_evaluated_as_each_event_leaves(
    storage_factory: Factory,
) -> None:
    from cjo import now

    # Its comparison with now() moves with time alone, and no timer follows it: it is evaluated
    # wherever the segment timer fires, which is at every event leaving the window.
    w = one(storage_factory, performed("view").at_least(1).within(days=3)
            & (attr("open_at") < now()))
    w.engine.identify("c1", {"open_at": T0 + DAY + DAY / 2})
    w.send("view")
    w.at(T0 + DAY)
    w.send("view")
    assert w.members() == set()
    assert w.engine.customer_state("c1").timers[SEGMENT_TIMER] == T0 + 3 * DAY  # type: ignore[union-attr]
    w.at(T0 + 3 * DAY)  # one view left, one still inside: open by now
    assert w.members() == {"s"}
    w.at(T0 + 4 * DAY)
    assert w.changes() == [(T0 + 3 * DAY, "segment_entered", "s"),
                           (T0 + 4 * DAY, "segment_exited", "s")]


def test_a_profile_change_at_the_segment_timer_does_not_put_the_timer_off(
    storage_factory: Factory,
) -> None:
    from cjo import EventTrigger, UpdateProfile, Wait

    # A journey wakes at the instant a view leaves the window, just before the segment timer
    # due then, and changes an attribute another segment reads.
    w = World(storage_factory(),
              Segment("viewer", performed("view").at_least(1).within(days=2)),
              Segment("flagged", attr("flag") == True),  # noqa: E712
              journeys=[Journey(id="flag", trigger=EventTrigger("view"), entry="wait",
                                steps={"wait": Wait(2 * DAY, next="set"),
                                       "set": UpdateProfile({"flag": True})})])
    w.send("view")
    w.at(T0 + 2 * DAY)
    assert w.members() == {"flagged"}
    assert w.changes() == [(T0, "segment_entered", "viewer"),
                           (T0 + 2 * DAY, "segment_entered", "flagged"),
                           (T0 + 2 * DAY, "segment_exited", "viewer")]


def test_a_changed_segment_is_evaluated_for_everyone_at_the_next_run_due(
    storage_factory: Factory,
) -> None:
    from cjo import Engine, ManualClock

    clock = ManualClock(T0)
    engine = Engine(storage_factory(), clock=clock)
    engine.publish(segments=[Segment("big", attr("spend") > 100)])
    for cid, spend in (("ann", 50), ("bob", 150), ("cyd", 80)):
        engine.identify(cid, {"spend": spend})
    assert engine.segment_members("big") == ["bob"]
    engine.publish(segments=[Segment("big", attr("spend") > 60)])
    clock.advance(timedelta(minutes=1))
    worker = Engine(storage_factory(), clock=clock)  # another process, started after it
    worker.run_due()
    assert engine.segment_members("big") == ["bob", "cyd"]
    entered = [a for a in engine.activities(T0, clock.now() + timedelta(seconds=1))
               if a.kind == "segment_entered" and a.customer_id == "cyd"]
    assert [a.at for a in entered] == [clock.now()]
    # Done once: the storage remembers it, so the next pass has nothing to evaluate.
    assert engine.storage.get_setting("segments:refreshed")
    assert worker.run_due().nothing_happened


def test_segment_sizes_over_time_come_from_the_log(storage_factory: Factory) -> None:
    from cjo import Engine, ManualClock
    from cjo.analytics import format_segment_sizes

    day = timedelta(days=1)
    clock = ManualClock(T0)
    engine = Engine(storage_factory(), clock=clock)
    engine.publish(segments=[Segment("big", attr("spend") > 100),
                             Segment("small", attr("spend") <= 100)])
    engine.identify("ann", {"spend": 150})                 # day 0: big 1, small 0
    clock.advance(day)
    engine.identify("bob", {"spend": 200})                 # day 1: big 2
    engine.identify("cyd", {"spend": 20})                  #        small 1
    clock.advance(day)
    engine.identify("ann", {"spend": 50})                  # day 2: big 1, small 2
    clock.advance(day)
    sizes = engine.segment_sizes(["big", "small"], T0, every=day)
    assert [(s.at, s.size) for s in sizes["big"]] == [
        (T0, 1), (T0 + day, 2), (T0 + 2 * day, 1), (T0 + 3 * day, 1),
    ]
    assert [s.size for s in sizes["small"]] == [0, 1, 2, 2]
    table = format_segment_sizes(sizes).splitlines()
    assert table[0].split() == ["at", "big", "small"] and len(table) == 5
    with pytest.raises(UsageError, match="no segment 'nope'"):
        engine.segment_sizes(["nope"], T0)


def test_a_profile_rule_sum_too_large_for_a_float_leaves_the_attribute(
    storage_factory: Factory,
) -> None:
    rule = ProfileRule("spend", "purchase", (add("lifetime_spend", prop="total"),
                                             increment("orders")))
    w = one(storage_factory, attr("orders") >= 2, profile_rules=[rule])
    w.send("purchase", total=1e308)
    w.send("purchase", total=1e308)  # the sum is no finite number: no store could hold it
    profile = w.engine.profile("c1")
    assert profile is not None
    assert profile.attributes == {"lifetime_spend": 1e308, "orders": 2}
    assert w.members() == {"s"}


def test_a_condition_republished_to_read_further_back_sees_only_what_its_track_kept(
    storage_factory: Factory,
) -> None:
    w = one(storage_factory, performed("purchase").at_least(2).within(days=30))
    for day in range(6):
        w.at(T0 + day * DAY)
        w.send("purchase")
    w.engine.publish(segments=[Segment("s", performed("purchase").at_least(5).within(days=30))])
    w.engine.refresh_segments()
    assert len(w.engine.customer_state("c1").tracks["purchase"].recent) == 3  # type: ignore[union-attr]
    assert w.members() == set()  # six purchases, of which the track kept three
    w.send("purchase")
    w.send("purchase")
    assert w.members() == {"s"}
