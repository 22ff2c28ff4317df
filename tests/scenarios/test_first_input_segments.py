"""A customer's first input, and the first input after a publish changed segments, are judged
on the state the input leaves: a membership that would begin and end at that one instant is no
membership at all (no activity, no journey started), on every storage adapter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cjo import (
    ContentItem,
    Engine,
    Event,
    Journey,
    ManualClock,
    ProfileUpdate,
    RecordingChannel,
    Segment,
    SegmentTrigger,
    Send,
    Variant,
    attr,
    performed,
)
from cjo.segments.rules import ProfileRule, stamp
from cjo.storage.base import Storage

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)

NUDGE = ContentItem("nudge", (Variant("email", {"subject": "Come back", "text": "x"}),))
NO_RECENT_BUY = Segment("no_recent_buy", performed("buy").never().within(days=7))
NOT_VIP = Segment("not_vip", attr("vip") != True)  # noqa: E712  (a condition, not a test)
NOT_PAID = Segment("not_paid", attr("plan") != "paid")


def on_entry(segment: Segment) -> Journey:
    return Journey(f"on_{segment.id}", trigger=SegmentTrigger(segment.id), entry="s",
                   steps={"s": Send("nudge", "email")})


class Shop:
    """An engine whose journeys each start when a customer enters one of ``segments``."""

    def __init__(self, storage: Storage, *segments: Segment, late_events: Any = "decide",
                 **publish: Any) -> None:
        self.clock = ManualClock(T0)
        self.email = RecordingChannel()
        self.engine = Engine(storage, channels={"email": self.email}, clock=self.clock,
                             late_events=late_events)
        self.publish(*segments, **publish)

    def publish(self, *segments: Segment, **more: Any) -> None:
        self.engine.publish(segments=list(segments), content=[NUDGE],
                            journeys=[on_entry(s) for s in segments], **more)

    def event(self, customer: str, name: str, event_id: str, at: datetime | None = None
              ) -> None:
        self.engine.handle_event(Event(customer_id=customer, name=name, event_id=event_id,
                                       timestamp=at if at is not None else self.clock.now()))

    def sent(self) -> list[tuple[str, str]]:
        return [(m.customer_id, m.journey_id) for m in self.email.messages]

    def changes(self, customer: str) -> list[tuple[datetime, str, str | None]]:
        return [(a.at, a.kind, a.detail)
                for a in self.engine.activities(T0 - DAY, T0 + 30 * DAY, customer_id=customer)
                if a.kind.startswith("segment_")]

    def members(self, customer: str) -> set[str]:
        state = self.engine.customer_state(customer)
        return set() if state is None else set(state.segments)


def test_a_first_event_does_not_enter_a_segment_it_leaves(storage: Storage) -> None:
    shop = Shop(storage, NO_RECENT_BUY, NOT_VIP)
    shop.event("new1", "buy", "x1")
    assert shop.members("new1") == {"not_vip"}
    assert shop.changes("new1") == [(T0, "segment_entered", "not_vip")]
    assert shop.sent() == [("new1", "on_not_vip")]
    # Time-relative membership still follows the customer from there, at its own instant.
    shop.clock.set(T0 + 7 * DAY)
    shop.engine.run_due(T0 + 7 * DAY)
    assert shop.changes("new1")[-1] == (T0 + 7 * DAY, "segment_entered", "no_recent_buy")
    assert shop.sent()[-1] == ("new1", "on_no_recent_buy")


def test_a_first_profile_does_not_enter_a_segment_it_leaves(storage: Storage) -> None:
    shop = Shop(storage, NO_RECENT_BUY, NOT_VIP)
    outcome = shop.engine.identify("new2", {"vip": True})
    assert [e.journey_id for e in outcome.entered] == ["on_no_recent_buy"]
    assert shop.changes("new2") == [(T0, "segment_entered", "no_recent_buy")]
    assert shop.sent() == [("new2", "on_no_recent_buy")]


def test_a_merge_into_a_new_known_customer_is_judged_after_it(storage: Storage) -> None:
    shop = Shop(storage, NOT_VIP)
    shop.engine.identify("anon", {"vip": True})
    assert shop.changes("anon") == []
    shop.engine.identify("known", {"vip": True}, anonymous_id="anon")
    assert shop.changes("known") == []
    assert shop.sent() == []


def test_a_first_profile_that_belongs_enters_at_once(storage: Storage) -> None:
    shop = Shop(storage, NOT_PAID)
    shop.engine.identify("free", {"plan": "free"})
    assert shop.changes("free") == [(T0, "segment_entered", "not_paid")]
    assert shop.sent() == [("free", "on_not_paid")]


def test_a_profile_update_in_a_batch_and_an_import_are_judged_after_they_apply(
    storage: Storage,
) -> None:
    shop = Shop(storage, NOT_PAID)
    shop.engine.handle_events([ProfileUpdate("zed", {"plan": "paid"}),
                               ProfileUpdate("amy", {"plan": "free"})])
    result = shop.engine.import_profiles([{"customer_id": "yan", "attributes": {"plan": "paid"}},
                                          {"customer_id": "bo", "attributes": {"plan": "trial"}}])
    assert result.imported == 2
    for paid in ("zed", "yan"):
        assert shop.changes(paid) == []
        assert shop.members(paid) == set()
    assert sorted(shop.sent()) == [("amy", "on_not_paid"), ("bo", "on_not_paid")]


def test_a_first_event_whose_profile_rule_leaves_the_segment(storage: Storage) -> None:
    shop = Shop(storage, Segment("never_bought", ~attr("last_buy").exists()),
                profile_rules=[ProfileRule("last_buy", "buy", (stamp("last_buy"),))])
    shop.event("new3", "buy", "x3")
    assert shop.changes("new3") == []
    assert shop.sent() == []


def test_the_first_input_after_a_publish_is_judged_after_it(storage: Storage) -> None:
    shop = Shop(storage, NO_RECENT_BUY)
    shop.engine.identify("old", {"vip": False})
    shop.clock.set(T0 + DAY)
    shop.publish(NO_RECENT_BUY, NOT_VIP)  # the record was evaluated without "not_vip"
    shop.engine.identify("old", {"vip": True})
    assert shop.changes("old") == [(T0, "segment_entered", "no_recent_buy")]
    assert shop.sent() == [("old", "on_no_recent_buy")]


@pytest.mark.parametrize("late_events", ["decide", "ignore"])
def test_a_late_first_input_after_a_publish_still_evaluates(
    storage: Storage, late_events: str
) -> None:
    shop = Shop(storage, NO_RECENT_BUY, late_events=late_events)
    shop.event("old", "buy", "b1")
    shop.clock.set(T0 + DAY)
    shop.publish(NO_RECENT_BUY, NOT_VIP)
    shop.event("old", "buy", "b2", at=T0 - DAY)  # stamped before what was decided
    assert shop.members("old") == {"not_vip"}
    assert shop.changes("old")[-1] == (T0 + DAY, "segment_entered", "not_vip")
