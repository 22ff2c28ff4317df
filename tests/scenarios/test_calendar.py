"""Calendar waits, time conditions and attribute-change triggers, tried as a user would, on
every storage: exact instants, messages and terminal states under a manual clock."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cjo import (
    ApiTrigger,
    AttributeTrigger,
    Branch,
    Case,
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    Exit,
    Journey,
    ManualClock,
    RecordingChannel,
    Send,
    UpdateProfile,
    Variant,
    Wait,
    WaitForEvent,
    WaitSinceEntry,
    WaitUntil,
    WaitUntilDate,
    attr,
    ctx,
    now,
    prop,
)
from tests.helpers import Factory

HOUR, DAY = timedelta(hours=1), timedelta(days=1)


def note(text: str = "hi") -> ContentItem:
    return ContentItem("note", variants=(Variant("email", {"subject": "Note", "text": text}),))


def event(name: str, customer: str, at: datetime, eid: str, **props: Any) -> Event:
    return Event(customer_id=customer, name=name, timestamp=at, properties=props, event_id=eid)


class World:
    """An engine on a storage, with a manual clock and a recording email channel; ``restart``
    builds a new engine on the same database (what a stored wake-up must survive)."""

    def __init__(self, storage_factory: Factory, start: datetime, **options: Any) -> None:
        self.storage_factory, self.options = storage_factory, options
        self.clock = ManualClock(start)
        self.email = RecordingChannel()
        self.engine = self._engine()

    def _engine(self) -> Engine:
        return Engine(self.storage_factory(), channels={"email": self.email}, clock=self.clock,
                      **self.options)

    def restart(self) -> None:
        self.engine = self._engine()

    def run_until(self, end: datetime, every: timedelta = HOUR) -> None:
        """Run the worker every ``every`` until ``end``, as a host's scheduler would."""
        while self.clock.now() < end:
            self.clock.set(min(self.clock.now() + every, end))
            self.engine.run_due()

    def sent(self) -> list[tuple[str, datetime]]:
        return [(m.customer_id, m.created_at) for m in self.email.messages]

    def texts(self) -> list[str]:
        return [m.fields["text"] for m in self.email.messages]


def _paris_and_tokyo_get_monday_0930(world: World, friday: datetime) -> None:
    """Customers "paris" and "tokyo" trigger the weekly journey on ``friday``: each gets its
    mail at Monday 09:30 in their own zone."""
    world.engine.handle_event(event("go", "paris", friday, "e1"))
    world.engine.handle_event(event("go", "tokyo", friday, "e2"))
    world.run_until(friday + 4 * DAY)
    assert sorted(world.sent()) == [
        ("paris", datetime(2026, 6, 8, 7, 30, tzinfo=UTC)),   # Monday 09:30 CEST
        ("tokyo", datetime(2026, 6, 8, 0, 30, tzinfo=UTC)),   # Monday 09:30 JST
    ]


# --- WaitUntil across DST ---------------------------------------------------------------------

DAILY = Journey(
    "daily", trigger=EventTrigger("subscribed"), entry="wait",
    steps={"wait": WaitUntil("09:00", next="mail"), "mail": Send("note", "email", next="wait")},
)


@pytest.mark.parametrize(
    ("zone", "change"),
    [
        ("Europe/Paris", datetime(2026, 3, 29, 1, tzinfo=UTC)),     # spring forward
        ("Europe/Paris", datetime(2026, 10, 25, 1, tzinfo=UTC)),    # fall back
        ("America/New_York", datetime(2026, 3, 8, 7, tzinfo=UTC)),
        ("America/New_York", datetime(2026, 11, 1, 6, tzinfo=UTC)),
    ],
)
def test_a_daily_0900_local_send_across_a_dst_change(
    storage_factory: Factory, zone: str, change: datetime
) -> None:
    start = change - 3 * DAY
    world = World(storage_factory, start)
    world.engine.publish(journeys=[DAILY], content=[note()])
    world.engine.identify("ann", {"email": "a@example.com"}, timezone=zone)
    world.engine.handle_event(event("subscribed", "ann", start, "s1"))
    (enrollment,) = world.engine.customer_state("ann").enrollments  # type: ignore[union-attr]
    first = enrollment.wake_at
    assert first is not None and first.tzinfo is not None
    assert first.astimezone(ZoneInfo(zone)).time() == time(9)
    world.restart()
    world.run_until(change + 4 * DAY)
    local = [at.astimezone(ZoneInfo(zone)) for _, at in world.sent()]
    assert len(local) == 7
    assert all(t.time() == time(9) for t in local)          # never at 08:00 or 10:00
    days = [t.date() for t in local]
    assert days == sorted(set(days))                        # never twice a day
    assert days[-1] - days[0] == timedelta(days=6)          # and never a day skipped
    # The UTC hour moves by the change of offset, exactly once.
    assert len({at.hour for _, at in world.sent()}) == 2


def test_a_day_the_zone_skips_has_no_occurrence_so_a_daily_wait_never_fires_twice(
    storage_factory: Factory,
) -> None:
    # Samoa skipped 30 December 2011 (from UTC-10 to UTC+14). Its 09:00 never came: moving it
    # to the gap's end would send at 00:00 on the 31st and again at 09:00 that day.
    apia = ZoneInfo("Pacific/Apia")
    start = datetime(2011, 12, 27, tzinfo=UTC)
    world = World(storage_factory, start)
    world.engine.publish(journeys=[DAILY, Journey(
        "weekly", trigger=EventTrigger("subscribed"), entry="wait",
        steps={"wait": WaitUntil("09:00", weekdays=("fri",), next="mail"),
               "mail": Send("note", "email")},
    )], content=[note()])
    world.engine.identify("ann", {"email": "a@example.com"}, timezone="Pacific/Apia")
    world.engine.handle_event(event("subscribed", "ann", start, "s1"))
    world.run_until(datetime(2012, 1, 6, 12, tzinfo=UTC), every=3 * DAY)  # a late worker too
    local = sorted(at.astimezone(apia) for _, at in world.sent())
    assert all(t.time() == time(9) for t in local), local
    days = [t.date().isoformat() for t in local]
    assert days == ["2011-12-27", "2011-12-28", "2011-12-29", "2011-12-31", "2012-01-01",
                    "2012-01-02", "2012-01-03", "2012-01-04", "2012-01-05", "2012-01-06",
                    "2012-01-06"]  # the daily wait, and the weekly one on the next Friday


def test_a_0230_wait_in_the_gap_moves_forward_and_in_the_fold_takes_the_first(
    storage_factory: Factory,
) -> None:
    world = World(storage_factory, datetime(2026, 3, 28, 12, tzinfo=UTC),
                  default_timezone="Europe/Paris")
    world.engine.publish(journeys=[Journey(
        "night", trigger=EventTrigger("go"), entry="wait",
        steps={"wait": WaitUntil("02:30", next="mail"), "mail": Send("note", "email")},
    )], content=[note()])
    world.engine.handle_event(event("go", "spring", world.clock.now(), "e1"))
    world.run_until(datetime(2026, 3, 30, tzinfo=UTC))
    world.clock.set(datetime(2026, 10, 24, 12, tzinfo=UTC))
    world.engine.handle_event(event("go", "autumn", world.clock.now(), "e2"))
    world.run_until(datetime(2026, 10, 26, tzinfo=UTC))
    assert world.sent() == [
        ("spring", datetime(2026, 3, 29, 1, tzinfo=UTC)),      # 03:00 CEST: the gap's end
        ("autumn", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),  # the first 02:30 (CEST)
    ]


def test_arriving_exactly_at_the_time_goes_on_at_once_and_after_it_waits_a_day(
    storage_factory: Factory,
) -> None:
    nine = datetime(2026, 6, 1, 9, tzinfo=UTC)     # a Monday
    world = World(storage_factory, nine)
    world.engine.publish(journeys=[Journey(
        "once", trigger=EventTrigger("go"), entry="wait",
        steps={"wait": WaitUntil(time(9), next="mail"), "mail": Send("note", "email")},
    )], content=[note()])
    world.engine.handle_event(event("go", "ann", nine, "e1"))
    world.clock.advance(timedelta(minutes=1))
    world.engine.handle_event(event("go", "bob", world.clock.now(), "e2"))
    assert world.sent() == [("ann", nine)]
    world.run_until(nine + 2 * DAY)
    assert world.sent() == [("ann", nine), ("bob", nine + DAY)]
    assert [e.status for e in world.engine.enrollments("bob")] == ["completed"]


def test_weekdays_and_the_journey_zone_and_the_engine_default(storage_factory: Factory) -> None:
    friday = datetime(2026, 6, 5, 12, tzinfo=UTC)
    world = World(storage_factory, friday, default_timezone="America/New_York")
    world.engine.publish(journeys=[
        Journey("weekly", trigger=EventTrigger("go"), entry="wait",
                steps={"wait": WaitUntil("09:30", weekdays=("mon", "wed"), next="mail"),
                       "mail": Send("note", "email")}, timezone="Asia/Tokyo"),
    ], content=[note()])
    world.engine.identify("tokyo", {})                      # no zone: the journey's
    world.engine.identify("paris", {}, timezone="Europe/Paris")   # the profile's wins
    _paris_and_tokyo_get_monday_0930(world, friday)
    other = World(storage_factory, friday, default_timezone="America/New_York")
    other.engine.publish(journeys=[Journey(
        "plain", trigger=EventTrigger("go"), entry="wait",
        steps={"wait": WaitUntil("09:30", next="mail"), "mail": Send("note", "email")},
    )])
    other.engine.handle_event(event("go", "nyc", friday, "e3"))
    other.run_until(friday + 2 * DAY)
    # 08:00 in New York when it arrives: 09:30 EDT the same day.
    assert other.sent() == [("nyc", datetime(2026, 6, 5, 13, 30, tzinfo=UTC))]


# --- WaitUntilDate ---------------------------------------------------------------------------

RENEWAL = Journey(
    "renewal", trigger=EventTrigger("renewal_scheduled"), entry="wait",
    steps={
        "wait": WaitUntilDate(attr("renewal_date"), days=-1, at="09:00", next="remind",
                              on_past="late", on_missing="ask"),
        "remind": Send("note", "email"),
        "late": Exit("renewal already due"),
        "ask": Exit("no renewal date"),
    },
)


def test_a_send_on_the_day_before_the_renewal_date(storage_factory: Factory) -> None:
    start = datetime(2026, 3, 20, 15, tzinfo=UTC)
    world = World(storage_factory, start)
    world.engine.publish(journeys=[RENEWAL], content=[note()])
    # The US changes to summer time on March 8, Europe on March 29: the day before April 1
    # at 09:00 is 13:00 UTC in New York and 07:00 UTC in Paris.
    world.engine.identify("ny", {"renewal_date": "2026-04-01"}, timezone="America/New_York")
    world.engine.identify("pa", {"renewal_date": datetime(2026, 3, 31, 22, tzinfo=UTC)},
                          timezone="Europe/Paris")              # April 1, 00:00 in Paris
    world.engine.identify("old", {"renewal_date": "2026-03-20"})
    world.engine.identify("none", {})
    world.engine.identify("junk", {"renewal_date": "next spring"})
    for i, cid in enumerate(("ny", "pa", "old", "none", "junk")):
        world.engine.handle_event(event("renewal_scheduled", cid, start, f"r{i}"))
    world.restart()
    world.run_until(datetime(2026, 4, 2, tzinfo=UTC))
    assert sorted(world.sent()) == [
        ("ny", datetime(2026, 3, 31, 13, tzinfo=UTC)),
        ("pa", datetime(2026, 3, 31, 7, tzinfo=UTC)),
    ]
    ends = {cid: [(e.status, e.end_reason) for e in world.engine.enrollments(cid)]
            for cid in ("ny", "old", "none", "junk")}
    assert ends == {
        "ny": [("completed", None)],
        "old": [("exited", "renewal already due")],
        "none": [("exited", "no renewal date")],
        "junk": [("exited", "no renewal date")],
    }
    log = world.engine.activities(start, start + DAY)
    details = {(a.customer_id, a.kind, a.detail) for a in log
               if a.kind in ("date_past", "date_missing")}
    assert details == {
        ("old", "date_past", "2026-03-19T09:00:00+00:00"),
        ("none", "date_missing", "profile.renewal_date is missing"),
        ("junk", "date_missing", "profile.renewal_date is not a date"),
    }


def test_an_end_of_time_date_is_beyond_the_lifetime_and_expires_the_enrollment(
    storage_factory: Factory,
) -> None:
    # "9999-12-31" is a common "never ends" value in exported data. It lies past every instant
    # cjo stores, so past any max_lifetime too: the enrollment expires at that age, as for any
    # date beyond it, rather than sending the reminder at once.
    start = datetime(2026, 3, 2, 9, tzinfo=UTC)
    world = World(storage_factory, start)
    world.engine.publish(journeys=[Journey(
        "ending", trigger=EventTrigger("go"), entry="wait", max_lifetime=30 * DAY,
        steps={"wait": WaitUntilDate(attr("ends_on"), days=-7, next="mail"),
               "mail": Send("note", "email")},
    )], content=[note()])
    world.engine.identify("ann", {"ends_on": "9999-12-31"})
    world.engine.identify("bob", {"ends_on": "8999-12-31"})
    for i, cid in enumerate(("ann", "bob")):
        world.engine.handle_event(event("go", cid, start, f"g{i}"))
    world.run_until(start + 31 * DAY, every=DAY)
    assert world.sent() == []
    assert {cid: [(e.status, e.ended_at) for e in world.engine.enrollments(cid)]
            for cid in ("ann", "bob")} == {
        "ann": [("expired", start + 30 * DAY)], "bob": [("expired", start + 30 * DAY)]}


def test_a_date_from_the_trigger_event_with_an_exact_offset(storage_factory: Factory) -> None:
    start = datetime(2026, 5, 1, 8, tzinfo=UTC)
    world = World(storage_factory, start)
    world.engine.publish(journeys=[Journey(
        "delivery", trigger=EventTrigger("shipped"), entry="wait",
        steps={"wait": WaitUntilDate(ctx("delivery_at"), offset=-2 * HOUR, next="mail"),
               "mail": Send("note", "email")},
    )], content=[note()])
    world.engine.handle_event(
        event("shipped", "ann", start, "s1", delivery_at="2026-05-03T14:00:00+02:00")
    )
    # Without on_past and on_missing, a past or missing date goes on at once.
    world.engine.handle_event(
        event("shipped", "bob", start, "s2", delivery_at="2026-04-03T14:00:00+02:00")
    )
    world.engine.handle_event(event("shipped", "cid", start, "s3"))
    world.run_until(start + 3 * DAY)
    assert sorted(world.sent()) == [
        ("ann", datetime(2026, 5, 3, 10, tzinfo=UTC)), ("bob", start), ("cid", start),
    ]


# --- WaitSinceEntry --------------------------------------------------------------------------


def test_seven_days_after_entry_whatever_the_wait_before_it(storage_factory: Factory) -> None:
    start = datetime(2026, 3, 25, 10, tzinfo=UTC)     # across the European change on March 29
    world = World(storage_factory, start)
    world.engine.publish(journeys=[Journey(
        "onboarding", trigger=EventTrigger("signed_up"), entry="opened?",
        steps={"opened?": WaitForEvent("opened", timeout=9 * DAY, on_event="week",
                                       on_timeout="week"),
               "week": WaitSinceEntry(7 * DAY, next="mail"),
               "mail": Send("note", "email")},
    )], content=[note()])
    world.engine.identify("ann", {}, timezone="Europe/Paris")
    world.engine.handle_event(event("signed_up", "ann", start, "s1"))
    world.clock.advance(HOUR)
    world.engine.handle_event(event("signed_up", "bob", start + HOUR, "s2"))
    world.clock.advance(2 * DAY + 4 * HOUR)
    world.engine.handle_event(event("opened", "ann", world.clock.now(), "o1"))
    world.run_until(start + 12 * DAY)
    assert world.sent() == [
        ("ann", start + 7 * DAY),        # exactly 7 x 86,400 s, DST or not
        ("bob", start + HOUR + 9 * DAY),  # the timeout came later: already past, at once
    ]


# --- conditions that read time -----------------------------------------------------------------


def test_now_in_a_condition_is_the_instant_decided_even_for_a_late_worker(
    storage_factory: Factory,
) -> None:
    start = datetime(2026, 6, 1, 12, tzinfo=UTC)
    world = World(storage_factory, start)
    veteran = attr("signed_up_at") < now() - 7 * DAY
    world.engine.publish(journeys=[Journey(
        "check", trigger=EventTrigger("go"), entry="wait",
        steps={"wait": Wait(2 * DAY, next="branch"),
               "branch": Branch((Case(veteran, "old"),), default="new"),
               "old": Send("note", "email"), "new": Exit("new customer")},
    )], content=[note("veteran")])
    world.engine.identify("ann", {"signed_up_at": (start - 6 * DAY).isoformat()})
    world.engine.identify("bob", {"signed_up_at": start - 4 * DAY})
    world.engine.handle_event(event("go", "ann", start, "g1"))
    world.engine.handle_event(event("go", "bob", start, "g2"))
    world.clock.advance(5 * DAY)        # the worker comes three days late
    world.engine.run_due()
    # Decided at the wake-up (start + 2 days): Ann had been a customer 8 days, Bob 6.
    assert world.sent() == [("ann", start + 2 * DAY)]
    assert [e.end_reason for e in world.engine.enrollments("bob")] == ["new customer"]


def test_a_trigger_filter_reading_now(storage_factory: Factory) -> None:
    start = datetime(2026, 6, 1, 12, tzinfo=UTC)
    world = World(storage_factory, start)
    world.engine.publish(journeys=[Journey(
        "stale_cart", trigger=EventTrigger("cart_viewed",
                                           where=prop("added_at") < now() - DAY),
        entry="mail", steps={"mail": Send("note", "email")},
    )], content=[note()])
    world.engine.handle_event(event("cart_viewed", "ann", start, "c1",
                                    added_at="2026-05-30T12:00:00Z"))
    world.engine.handle_event(event("cart_viewed", "bob", start, "c2",
                                    added_at="2026-06-01T08:00:00Z"))
    assert world.sent() == [("ann", start)]


# --- AttributeTrigger --------------------------------------------------------------------------


def test_an_attribute_trigger_fires_once_per_actual_change(storage_factory: Factory) -> None:
    start = datetime(2026, 6, 1, 12, tzinfo=UTC)
    world = World(storage_factory, start)
    upgraded = ContentItem("upgraded", variants=(Variant(
        "email", {"subject": "Note", "text": "{{ context.old_value }} -> {{ context.new_value }}"}),))
    world.engine.publish(journeys=[
        Journey("upgrade", trigger=AttributeTrigger("plan", changed_to=["pro", "team"]),
                entry="mail", steps={"mail": Send("upgraded", "email")}),
        Journey("promote", trigger=ApiTrigger(), entry="set",
                steps={"set": UpdateProfile({"plan": "team"})}),
    ], content=[upgraded])
    world.engine.identify("ann", {"plan": "trial"})        # first value: not one it wants
    world.engine.identify("ann", {"plan": "pro"})
    world.engine.identify("ann", {"plan": "pro", "name": "Ann"})   # same value: nothing
    world.restart()
    world.engine.identify("ann", {"plan": "pro"})
    world.clock.advance(HOUR)
    world.engine.start_journey("promote", "ann")            # an UpdateProfile step changes it
    world.engine.start_journey("promote", "ann")            # already team: nothing
    assert world.texts() == ["trial -> pro", "pro -> team"]
    assert [m.created_at for m in world.email.messages] == [start, start + HOUR]
    record = world.engine.customer_state("ann")
    assert record is not None and record.history[("upgrade", None)].count == 2


def test_an_attribute_trigger_from_values_where_and_unset(storage_factory: Factory) -> None:
    start = datetime(2026, 6, 1, 12, tzinfo=UTC)
    world = World(storage_factory, start)
    world.engine.publish(journeys=[
        Journey("downgrade", trigger=AttributeTrigger(
            "plan", changed_from=["pro"], where=prop("new_value") != "enterprise"),
            entry="mail", steps={"mail": Send("note", "email")}),
    ], content=[note()])
    world.engine.identify("ann", {"plan": "pro"})
    world.engine.identify("ann", {"plan": "enterprise"})   # the where refuses it
    world.engine.identify("bob", {"plan": "pro"})
    world.engine.identify("bob", unset=["plan"])           # from pro to no value: fires
    world.engine.identify("bob", {"plan": None})           # None is no value: nothing
    assert world.sent() == [("bob", start)]


def test_a_timezone_attribute_is_the_profile_zone_on_every_path(storage_factory: Factory) -> None:
    # As in Braze, where time_zone is a standard attribute: a host that sends the zone among
    # the attributes (identify, a JSON lines import) gets calendar waits in that zone.
    from cjo import InvalidEventError
    from cjo.importing import import_profiles

    friday = datetime(2026, 6, 5, 12, tzinfo=UTC)
    world = World(storage_factory, friday)
    world.engine.publish(journeys=[
        Journey("weekly", trigger=EventTrigger("go"), entry="wait",
                steps={"wait": WaitUntil("09:30", weekdays=("mon",), next="mail"),
                       "mail": Send("note", "email")}),
    ], content=[note()])
    world.engine.identify("paris", {"timezone": "Europe/Paris", "plan": "pro"})
    result = import_profiles(world.engine, [
        {"customer_id": "tokyo", "attributes": {"timezone": "Asia/Tokyo"}},
        {"customer_id": "bad", "attributes": {"timezone": "+02:00"}},
    ])
    assert (result.imported, [p.position for p in result.problems]) == (1, [2])
    assert "not a known IANA time zone" in result.problems[0].reason
    for customer, zone in (("paris", "Europe/Paris"), ("tokyo", "Asia/Tokyo")):
        profile = world.engine.profile(customer)
        assert profile is not None and profile.timezone == zone
        assert "timezone" not in profile.attributes   # one place for the zone, never two
    with pytest.raises(InvalidEventError, match="two time zones"):
        world.engine.identify("paris", {"timezone": "Asia/Tokyo"}, timezone="Europe/Paris")
    with pytest.raises(InvalidEventError, match="not a known IANA time zone"):
        world.engine.identify("paris", {"timezone": "utc"})
    _paris_and_tokyo_get_monday_0930(world, friday)


def test_unsetting_the_zone_or_the_locale_clears_it(storage_factory: Factory) -> None:
    # They are the profile's own fields: unset=["timezone"], or the attribute given as None
    # (Braze's time_zone set to null), clears them, as it removes an attribute.
    from cjo import InvalidEventError

    world = World(storage_factory, datetime(2026, 6, 5, 12, tzinfo=UTC))
    engine = world.engine
    engine.identify("ann", {"plan": "pro"}, timezone="Europe/Paris", locale="fr")
    engine.identify("ann", unset=["timezone"])
    profile = engine.profile("ann")
    assert profile is not None
    assert (profile.timezone, profile.locale, profile.attributes) == (None, "fr", {"plan": "pro"})
    engine.identify("ann", {"locale": None, "plan": "max"}, timezone="Asia/Tokyo")
    profile = engine.profile("ann")
    assert profile is not None
    assert (profile.timezone, profile.locale, profile.attributes) == (
        "Asia/Tokyo", None, {"plan": "max"}
    )
    with pytest.raises(InvalidEventError, match="both sets and clears the time zone"):
        engine.identify("ann", unset=["timezone"], timezone="Europe/Paris")
    with pytest.raises(InvalidEventError, match="both sets and clears the locale"):
        engine.identify("ann", {"locale": None}, locale="de")
    profile = engine.profile("ann")
    assert profile is not None and (profile.timezone, profile.locale) == ("Asia/Tokyo", None)


def test_a_locale_attribute_is_the_profile_locale_on_every_path(storage_factory: Factory) -> None:
    # As the time zone: a host that sends the locale among the attributes (Braze's language)
    # gets the translation, rather than a plain attribute that content never reads.
    from cjo import InvalidEventError
    from cjo.importing import import_profiles

    start = datetime(2026, 6, 5, 12, tzinfo=UTC)
    world = World(storage_factory, start)
    world.engine.publish(journeys=[
        Journey("hello", trigger=EventTrigger("go"), entry="mail",
                steps={"mail": Send("note", "email")}),
    ], content=[ContentItem("note", variants=(
        Variant("email", {"subject": "Hi", "text": "Hello"}),
        Variant("email", {"subject": "Salut", "text": "Bonjour"}, locale="fr"),
    ))])
    world.engine.identify("ann", {"locale": "fr", "plan": "pro"})
    result = import_profiles(world.engine, [
        {"customer_id": "bea", "attributes": {"locale": "fr-CA"}},
        {"customer_id": "bad", "attributes": {"locale": "not a locale"}},
    ])
    assert (result.imported, [p.position for p in result.problems]) == (1, [2])
    for customer, locale in (("ann", "fr"), ("bea", "fr-CA")):
        profile = world.engine.profile(customer)
        assert profile is not None and profile.locale == locale
        assert "locale" not in profile.attributes
    with pytest.raises(InvalidEventError, match="two locales"):
        world.engine.identify("ann", {"locale": "de"}, locale="fr")
    world.engine.handle_event(event("go", "ann", start, "e1"))
    world.engine.handle_event(event("go", "bea", start, "e2"))
    assert sorted((m.customer_id, m.fields["subject"]) for m in world.email.messages) == [
        ("ann", "Salut"), ("bea", "Salut"),
    ]
