"""The delivery-policy rules one by one: consent resolution, cap windows and release instants,
quiet periods across DST, validation, the record codec and the JSON form."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from cjo import (
    ContentItem,
    CustomerState,
    DefinitionError,
    Definitions,
    FrequencyCap,
    Journey,
    QuietHours,
    Send,
    Taxonomy,
    Topic,
    Variant,
    load_definitions,
    validate_definitions,
)
from cjo.delivery.caps import capped_by, counts, record_send
from cjo.delivery.consent import block, consent_problem, set_consent, subscribed, unblock
from cjo.delivery.quiet_hours import quiet_until, release_at
from cjo.model.taxonomy import Category
from cjo.storage.codec import decode_state, encode_state

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
DAY = timedelta(days=1)
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
TOPICS = {"news": Topic("news"), "deals": Topic("deals", default="opt_in")}


def _state() -> CustomerState:
    return CustomerState("c1", T0)


# --- consent -----------------------------------------------------------------------------------


def test_the_latest_covering_statement_wins_and_on_a_tie_the_one_said_last() -> None:
    s = _state()
    set_consent(s, "news", None, False, T0)
    set_consent(s, None, "email", True, T0 + H)
    assert subscribed(s, "news", "email", opt_in=False)
    assert not subscribed(s, "news", "sms", opt_in=False)
    # Said later at the same instant, and covering it: it replaces the first.
    set_consent(s, "news", "sms", True, T0 + 2 * H)
    set_consent(s, None, "sms", False, T0 + 2 * H)
    assert not subscribed(s, "news", "sms", opt_in=False)
    # Neither covers the other: on a tie too, the one said last wins.
    set_consent(s, None, "sms", False, T0 + 3 * H)
    set_consent(s, "news", None, True, T0 + 3 * H)
    assert subscribed(s, "news", "sms", opt_in=False)
    set_consent(s, None, "sms", False, T0 + 3 * H)
    assert not subscribed(s, "news", "sms", opt_in=False)


def test_a_newer_broad_statement_replaces_the_older_ones_it_covers() -> None:
    s = _state()
    set_consent(s, "news", "email", True, T0)
    set_consent(s, "deals", "sms", True, T0)
    set_consent(s, None, "email", False, T0 + H)
    assert s.consent == {("deals", "sms"): (True, T0), ("*", "email"): (False, T0 + H)}
    set_consent(s, None, None, False, T0 + 2 * H)
    assert s.consent == {("*", "*"): (False, T0 + 2 * H)}


def test_opt_in_topics_need_a_statement_that_names_them() -> None:
    s = _state()
    assert not subscribed(s, "deals", "email", opt_in=True)
    set_consent(s, None, None, True, T0)
    assert not subscribed(s, "deals", "email", opt_in=True)
    assert consent_problem(s, "email", "deals", False, TOPICS) == "no opt-in to deals"
    set_consent(s, "deals", "email", True, T0 + H)
    assert subscribed(s, "deals", "email", opt_in=True)
    assert not subscribed(s, "deals", "sms", opt_in=True)
    # A broad "no" after it replaces it; a broad "yes" after that does not opt in again.
    set_consent(s, None, None, False, T0 + 2 * H)
    assert consent_problem(s, "email", "deals", False, TOPICS) == "unsubscribed from all marketing"
    set_consent(s, None, None, True, T0 + 3 * H)
    assert not subscribed(s, "deals", "email", opt_in=True)
    # A "no" naming the topic reads as an unsubscription.
    set_consent(s, "deals", None, False, T0 + 4 * H)
    assert consent_problem(s, "email", "deals", False, TOPICS) == "unsubscribed from deals"


def test_a_broad_no_that_stops_an_opt_in_topic_is_named_as_said() -> None:
    """Opted in to deals, then an unsubscribe from all marketing, or from marketing on email:
    either way the unsubscribe stopped the send, and the reason names it (not a missing
    opt-in: the customer gave one), whether or not it replaced the opt-in."""
    for channel, reason in ((None, "unsubscribed from all marketing"),
                            ("email", "unsubscribed from marketing on email")):
        s = _state()
        set_consent(s, "deals", None, True, T0)
        set_consent(s, None, channel, False, T0 + H)
        assert consent_problem(s, "email", "deals", False, TOPICS) == reason
        assert consent_problem(s, "email", "news", False, TOPICS) == reason
    # Never opted in, and an unsubscribe since: the unsubscribe is what the customer said.
    s = _state()
    set_consent(s, None, "email", False, T0)
    assert consent_problem(s, "email", "deals", False, TOPICS) == (
        "unsubscribed from marketing on email")
    assert consent_problem(s, "sms", "deals", False, TOPICS) == "no opt-in to deals"


def test_a_broad_yes_keeps_the_opt_out_of_an_opt_in_topic_it_covers() -> None:
    """Subscribed to deals, then not on SMS, then to everything on SMS: deals by SMS stay
    off, since a broad "yes" opts no one in to an opt-in topic and the latest statement
    naming deals on SMS is a "no" (the broad "yes" used to drop it)."""
    s = _state()
    set_consent(s, "deals", None, True, T0)
    set_consent(s, "deals", "sms", False, T0)
    set_consent(s, None, "sms", True, T0)
    assert not subscribed(s, "deals", "sms", opt_in=True)
    assert consent_problem(s, "sms", "deals", False, TOPICS) == "unsubscribed from deals on sms"
    assert subscribed(s, "deals", "email", opt_in=True)
    assert subscribed(s, "news", "sms", opt_in=False)
    # A broad "no" still forgets them all.
    set_consent(s, None, "sms", False, T0 + H)
    assert s.consent == {("deals", "*"): (True, T0), ("*", "sms"): (False, T0 + H)}


def test_blocks_stop_transactional_sends_and_opt_outs_do_not() -> None:
    s = _state()
    set_consent(s, None, None, False, T0)
    assert consent_problem(s, "sms", None, False, TOPICS) == "unsubscribed from all marketing"
    assert consent_problem(s, "sms", None, True, TOPICS) is None
    block(s, "sms", "STOP")
    assert consent_problem(s, "sms", "news", True, TOPICS) == "channel blocked: STOP"
    assert unblock(s, "sms")
    assert not unblock(s, "sms")


# --- caps --------------------------------------------------------------------------------------


def test_caps_count_their_channel_and_tags_with_everything_below_them() -> None:
    cap = FrequencyCap("m", 1, per=DAY, channel="email", tag="marketing")
    assert counts(cap, "email", ("marketing/promo",))
    assert counts(cap, "email", ("x", "marketing"))
    assert not counts(cap, "email", ("marketingx",))
    assert not counts(cap, "sms", ("marketing",))


def test_a_rolling_cap_releases_when_enough_old_sends_leave_the_window() -> None:
    cap = FrequencyCap("w", 2, per=7 * DAY)
    ledger = [(T0, "email", ()), (T0 + DAY, "sms", ()), (T0 + 2 * DAY, "email", ())]
    now = T0 + 3 * DAY
    # Three in the window, two allowed: the two oldest must leave, the second at T0+8d.
    assert capped_by([cap], ledger, "email", (), now, PARIS) == (cap, T0 + 8 * DAY)
    # Exactly 7 days after a send it has left (half-open window).
    assert capped_by([cap], ledger[1:], "email", (), T0 + 8 * DAY, PARIS) is None
    other = FrequencyCap("sms_only", 1, per=DAY, channel="sms")
    assert capped_by([other], ledger, "email", (), now, PARIS) is None


def test_several_exceeded_caps_name_the_first_and_wait_for_the_last() -> None:
    daily = FrequencyCap("daily", 1, per=DAY)
    weekly = FrequencyCap("weekly", 1, per=7 * DAY)
    ledger = [(T0, "email", ())]
    assert capped_by([daily, weekly], ledger, "email", (), T0 + H, PARIS) == (
        daily, T0 + 7 * DAY)


def test_a_calendar_day_cap_follows_the_customers_day_across_dst() -> None:
    cap = FrequencyCap("day", 1, period="calendar_day")
    # 2026-03-08 is 23 hours long in New York (clocks go forward at 02:00).
    sent = datetime(2026, 3, 8, 5, 30, tzinfo=UTC)  # 00:30 EST
    late = datetime(2026, 3, 9, 3, 59, tzinfo=UTC)  # 23:59 EDT, the same local day
    next_midnight = datetime(2026, 3, 9, 4, 0, tzinfo=UTC)
    assert capped_by([cap], [(sent, "email", ())], "email", (), late, NEW_YORK) == (
        cap, next_midnight)
    assert capped_by([cap], [(sent, "email", ())], "email", (), next_midnight,
                     NEW_YORK) is None


def test_the_ledger_keeps_only_what_some_cap_can_still_count() -> None:
    s = _state()
    caps = [FrequencyCap("email", 2, per=DAY, channel="email"),
            FrequencyCap("week", 5, per=7 * DAY, tag="promo")]
    record_send(s, caps, "sms", (), T0)  # no cap counts it
    assert s.sends == []
    record_send(s, caps, "email", (), T0)
    record_send(s, caps, "sms", ("promo",), T0 + H)
    record_send(s, caps, "email", (), T0 + DAY)
    assert s.sends == [(T0 + H, "sms", ("promo",)), (T0 + DAY, "email", ())]


# --- quiet hours -------------------------------------------------------------------------------


def test_a_quiet_period_wraps_past_midnight_and_is_half_open() -> None:
    q = QuietHours("night", time(21), time(8))
    day = datetime(2026, 3, 2, tzinfo=UTC)
    zone = ZoneInfo("UTC")
    assert quiet_until(q, day.replace(hour=20, minute=59), zone) is None
    assert quiet_until(q, day.replace(hour=21), zone) == day.replace(hour=8) + DAY
    assert quiet_until(q, day.replace(hour=7, minute=59), zone) == day.replace(hour=8)
    assert quiet_until(q, day.replace(hour=8), zone) is None


def test_weekdays_name_the_day_a_quiet_period_starts() -> None:
    weekend = QuietHours("weekend", time(18), time(9), weekdays=(4, 5))  # Fri and Sat evenings
    zone = ZoneInfo("UTC")
    saturday_morning = datetime(2026, 3, 7, 8, tzinfo=UTC)
    monday_morning = datetime(2026, 3, 9, 8, tzinfo=UTC)
    assert quiet_until(weekend, saturday_morning, zone) == saturday_morning.replace(hour=9)
    assert quiet_until(weekend, monday_morning, zone) is None


def test_quiet_hours_ending_in_an_autumn_fold_end_at_the_first_occurrence() -> None:
    q = QuietHours("night", time(22), time(2, 30))
    # Paris, 2026-10-25: 02:30 happens twice; the first is 00:30 UTC.
    at = datetime(2026, 10, 24, 23, 0, tzinfo=UTC)
    assert quiet_until(q, at, PARIS) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_the_spread_share_is_stable_per_enrollment() -> None:
    q = QuietHours("night", time(21), time(8), spread=timedelta(minutes=30))
    at = datetime(2026, 3, 2, 23, tzinfo=UTC)
    zone = ZoneInfo("UTC")
    first = release_at([q], at, zone, "j:c1:1.a")
    assert first == release_at([q], at, zone, "j:c1:1.a")
    releases = {release_at([q], at, zone, f"j:c{i}:1.a") for i in range(20)}
    assert len(releases) == 20
    end = datetime(2026, 3, 3, 8, tzinfo=UTC)
    assert all(r is not None and end <= r[1] < end + q.spread for r in releases)


# --- validation, JSON, record ------------------------------------------------------------------


def _definitions(**changes: object) -> Definitions:
    item = ContentItem("c", (Variant("email", {"subject": "x", "text": "x"}),), topic="news")
    journey = Journey("j", "a", {"a": Send("c", "email", topic="news")})
    base: dict[str, object] = {"journeys": (journey,), "content": (item,),
                               "topics": (Topic("news"),)}
    return Definitions(**(base | changes))  # type: ignore[arg-type]


def test_valid_policies_have_no_problems() -> None:
    defs = _definitions(
        caps=(FrequencyCap("w", 3, per=7 * DAY, channel="email"),),
        quiet_hours=(QuietHours("n", time(21), time(8), journeys=("j",),
                                spread=timedelta(hours=1)),),
    )
    assert validate_definitions(defs, channels=("email",)) == []


def test_validation_reports_every_policy_problem() -> None:
    defs = _definitions(
        topics=(Topic("other"), Topic("other")),
        caps=(FrequencyCap("rolling", 0), FrequencyCap("cal", 1, per=DAY, period="calendar_day"),
              FrequencyCap("t", 1, per=DAY, channel="fax", tag="promo")),
        quiet_hours=(QuietHours("same", time(8), time(8)),
                     QuietHours("bad", time(21), time(8), weekdays=(7,), journeys=("nope",),
                                spread=timedelta(hours=13))),
    )
    problems = [(p.location, p.message) for p in validate_definitions(defs, channels=("email",))]
    assert problems == [
        ("topic 'other'", "defined 2 times; topic ids must be unique"),
        ("frequency cap 'rolling'", "limit must be a positive integer, got 0"),
        ("frequency cap 'rolling'", "a rolling cap needs a positive 'per' window"),
        ("frequency cap 'cal'", "a calendar_day cap counts one calendar day: drop 'per'"),
        ("frequency cap 't'", "channel 'fax' is not registered"),
        ("frequency cap 't'", "tag 'promo' used but no taxonomy is published"),
        ("quiet hours 'same'", "start and end are the same time: nothing is quiet"),
        ("quiet hours 'bad'", "weekday 7 is not 0 (Monday) to 6 (Sunday)"),
        ("quiet hours 'bad'", "journey 'nope' does not exist"),
        ("quiet hours 'bad'", "spread must be shorter than the hours that are not quiet"),
        ("content 'c'", "topic 'news' is not a declared topic"),
        ("journey 'j' v1 / step 'a'", "topic 'news' is not a declared topic"),
    ]


def test_a_transactional_send_naming_a_topic_is_refused() -> None:
    # A transactional send goes out whatever the subscriptions: a topic it names would never
    # hold it back, which its author surely meant it to. (The content's own topic is fine:
    # one item may serve marketing and transactional sends.)
    journey = Journey("j", "a", {"a": Send("c", "email", transactional=True, topic="news")})
    assert [(p.location, p.message) for p in validate_definitions(
        _definitions(journeys=(journey,)))] == [
        ("journey 'j' v1 / step 'a'", "a transactional send goes out whatever the customer's "
         "subscriptions, so topic 'news' would never apply: drop the topic, or make the send "
         "marketing (transactional=False)"),
    ]
    content_topic = Journey("j", "a", {"a": Send("c", "email", transactional=True)})
    assert validate_definitions(_definitions(journeys=(content_topic,))) == []


def test_a_topic_named_like_the_every_topic_wildcard_is_refused() -> None:
    # Consent statements say '*' for every topic: an opt-in topic '*' could never be opted
    # in to, and unsubscribing from it would stop all marketing.
    defs = _definitions(topics=(Topic("news"), Topic("*", default="opt_in")))
    assert [(p.location, p.message) for p in validate_definitions(defs)] == [
        ("topic '*'", "topic id '*' stands for every topic in consent statements"),
    ]


def test_a_cap_tag_must_be_in_the_taxonomy() -> None:
    taxonomy = Taxonomy((Category("marketing", children=(Category("promo"),)),))
    good = _definitions(taxonomy=taxonomy,
                        caps=(FrequencyCap("p", 1, per=DAY, tag="marketing/promo"),))
    assert validate_definitions(good) == []
    bad = _definitions(taxonomy=taxonomy, caps=(FrequencyCap("p", 1, per=DAY, tag="promo"),))
    assert [p.message for p in validate_definitions(bad)] == [
        "tag 'promo' is not in the taxonomy"]


def test_policies_load_from_json_data_with_wall_times_and_durations() -> None:
    defs = load_definitions({
        "topics": [{"id": "news", "default": "opt_in"}],
        "caps": [{"id": "w", "limit": 3, "per": "7d", "channel": "email"}],
        "quiet_hours": [{"id": "n", "start": "21:00", "end": "08:00", "spread": "30m"}],
    })
    assert defs.caps == (FrequencyCap("w", 3, per=7 * DAY, channel="email"),)
    assert defs.quiet_hours == (QuietHours("n", time(21), time(8),
                                           spread=timedelta(minutes=30)),)
    with pytest.raises(DefinitionError) as caught:
        load_definitions({"quiet_hours": [{"id": "n", "start": "9pm", "end": "08:00"}]})
    assert [(p.location, p.message) for p in caught.value.problems] == [
        ("$.quiet_hours[0].start", "not a time of day: '9pm' (use 'HH:MM', such as '09:00')")]


def test_consent_blocks_and_the_ledger_survive_the_record_codec() -> None:
    s = _state()
    set_consent(s, "news", "email", False, T0)
    set_consent(s, None, "sms", True, T0 + H)
    block(s, "push", "hard bounce")
    s.sends = [(T0, "email", ("promo", "x/y")), (T0 + H, "sms", ())]
    back = decode_state(encode_state(s), "c1")
    assert (back.consent, back.blocked, back.sends) == (s.consent, s.blocked, s.sends)
    assert back.extra == {}
    assert back.copy() == back


# --- feedback ----------------------------------------------------------------------------------


def test_a_message_id_leads_back_to_its_enrollment_and_step_even_with_colons_in_ids() -> None:
    from cjo.delivery.feedback import locate_message
    from cjo.runtime.core import Decider
    from cjo.runtime.registry import Registry

    item = ContentItem("c", (Variant("email", {"subject": "x", "text": "x"}),))
    journeys = (
        Journey("shop", "a", {"a": Send("c", "email")}),
        Journey("shop:vip", "x:y", {"x:y": Send("c", "email")}),
    )
    registry = Registry.build(Definitions(journeys=journeys, content=(item,)), 1)
    decider = Decider(registry, CustomerState("c:1", T0))
    assert locate_message(decider, "shop:vip:c:1:cart:9:2.5f:x:y:1") == (
        "shop:vip", 1, "shop:vip:c:1:cart:9:2.5f", "x:y", journeys[1].steps["x:y"])
    assert locate_message(decider, "shop:c:1:1.5f:a:3")[2:4] == (  # type: ignore[index]
        "shop:c:1:1.5f", "a")
    assert locate_message(decider, "shop:c:1:1.5f:a:x") is None
    assert locate_message(decider, "shop:c:2:1.5f:a:1") is None  # another customer's
    assert locate_message(decider, "shop:c:1:1.5f:nope:1") is None
    # Ids made now escape the journey and customer ids (those above were made before).
    assert locate_message(decider, "shop%3Avip:c%3A1:cart:9:2.5f:x:y:1") == (
        "shop:vip", 1, "shop%3Avip:c%3A1:cart:9:2.5f", "x:y", journeys[1].steps["x:y"])
    assert locate_message(decider, "shop:c%3A1:1.5f:a:3")[2:4] == (  # type: ignore[index]
        "shop:c%3A1:1.5f", "a")
    assert locate_message(decider, "shop:c%3A2:1.5f:a:1") is None  # another customer's


def test_contact_attributes_must_name_profile_attributes() -> None:
    from cjo import Engine, UsageError

    with pytest.raises(UsageError, match="'sms': None"):
        Engine(contact_attributes={"sms": None})  # type: ignore[dict-item]
    assert Engine(contact_attributes={"sms": "phone"}).options.contact_attributes == {
        "sms": "phone"}
