"""Schedule triggers: a journey started for a segment's members on a cron rule in a time zone,
each occurrence once per customer, with several workers, on every storage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import attrs
import pytest

from cjo import (
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    Journey,
    Jump,
    ManualClock,
    RecordingChannel,
    ResumeRule,
    ScheduleTrigger,
    Segment,
    Send,
    Variant,
    Wait,
    attr,
    inactive,
)
from cjo.errors import DefinitionError
from cjo.serialization import dumps_stored_definitions
from tests.helpers import Factory

PARIS = ZoneInfo("Europe/Paris")
SUNDAY = datetime(2026, 3, 1, 12, 0, tzinfo=PARIS)  # a Sunday
CONTENT = (ContentItem("digest", variants=(Variant("email", {
    "subject": "Your week", "text": "Week of {{ context.scheduled_at }}",
}),)),)


def _weekly(segment: str | None = "vip", cron: str = "0 9 * * MON") -> Journey:
    return Journey(id="digest", trigger=ScheduleTrigger(cron, "Europe/Paris", segment),
                   entry="send", steps={"send": Send("digest", "email")})


def _engine(storage: object, clock: ManualClock) -> tuple[Engine, RecordingChannel]:
    email = RecordingChannel()
    return Engine(storage, {"email": email}, clock), email  # type: ignore[arg-type]


def test_a_weekly_digest_reaches_each_member_once_per_occurrence(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(SUNDAY)
    engine, email = _engine(storage_factory(), clock)
    engine.publish(journeys=[_weekly()], content=CONTENT,
                   segments=[Segment("vip", attr("tier") == "gold")])
    for cid, tier in (("ann", "gold"), ("bob", "silver"), ("cat", "gold")):
        engine.identify(cid, {"tier": tier, "email": f"{cid}@example.com"})
    worker, worker_email = _engine(storage_factory(), clock)  # a second worker
    clock.set(datetime(2026, 3, 2, 8, 59, tzinfo=PARIS))
    engine.run_due()
    assert email.messages == []
    clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=PARIS))
    out = engine.run_due()
    worker.run_due()
    engine.run_due()
    assert sorted(e.customer_id for e in out.entered) == ["ann", "cat"]
    sent = email.messages + worker_email.messages
    assert sorted(m.customer_id for m in sent) == ["ann", "cat"]
    assert {m.fields["text"] for m in sent} == {"Week of 2026-03-02T09:00:00+01:00"}
    # The next Monday, again once each; bob has joined the segment meanwhile.
    engine.identify("bob", {"tier": "gold"})
    clock.set(datetime(2026, 3, 9, 9, 30, tzinfo=PARIS))
    worker.run_due()
    engine.run_due()
    sent = email.messages + worker_email.messages
    assert sorted(m.customer_id for m in sent) == ["ann", "ann", "bob", "cat", "cat"]


def _visit(engine: Engine, customer: str, at: datetime) -> None:
    engine.handle_event(Event(customer_id=customer, name="visit", timestamp=at,
                              event_id=f"{customer}-{at.isoformat()}"))


def test_a_schedule_reaches_the_members_of_a_time_relative_segment_at_the_occurrence(
    storage_factory: Factory,
) -> None:
    # "No visit for 7 days": Ann lapses on Monday at 08:30, between two passes of an hourly
    # worker; Bob, lapsed since Saturday, came back on Sunday.
    clock = ManualClock(SUNDAY)
    engine, email = _engine(storage_factory(), clock)
    engine.publish(journeys=[_weekly("lapsed")], content=CONTENT,
                   segments=[Segment("lapsed", inactive("visit", days=7))])
    _visit(engine, "ann", datetime(2026, 2, 23, 8, 30, tzinfo=PARIS))
    _visit(engine, "bob", datetime(2026, 2, 21, 12, 0, tzinfo=PARIS))
    assert engine.segment_members("lapsed") == ["bob"]
    _visit(engine, "bob", datetime(2026, 3, 1, 12, 0, tzinfo=PARIS))  # back, until the 8th
    engine.run_due(datetime(2026, 3, 2, 8, 0, tzinfo=PARIS))
    assert engine.segment_members("lapsed") == []

    clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=PARIS))
    engine.run_due()
    assert [m.customer_id for m in email.messages] == ["ann"]


def test_a_scheduled_entry_is_judged_on_the_membership_once_caught_up(
    storage_factory: Factory,
) -> None:
    # A crashed worker holds Ann's wake-up (its lease has not run out), so this worker's pass
    # cannot fire it before the schedule reads her stored membership: entering her, it
    # catches her up first, and she left the segment at 08:30.
    clock = ManualClock(SUNDAY)
    storage = storage_factory()
    engine, email = _engine(storage, clock)
    engine.publish(journeys=[_weekly("active")], content=CONTENT,
                   segments=[Segment("active", ~inactive("visit", days=7))])
    _visit(engine, "ann", datetime(2026, 2, 23, 8, 30, tzinfo=PARIS))
    _visit(engine, "bob", datetime(2026, 2, 27, 8, 30, tzinfo=PARIS))
    assert engine.segment_members("active") == ["ann", "bob"]
    nine = datetime(2026, 3, 2, 9, 0, tzinfo=PARIS)
    assert [d.customer_id for d in storage.claim_due(nine, 10, timedelta(hours=1))] == ["ann"]

    clock.set(nine)
    engine.run_due()
    assert [m.customer_id for m in email.messages] == ["bob"]
    assert engine.segment_members("active") == ["bob"]


def test_no_occurrence_before_the_publish_is_run() -> None:
    clock = ManualClock(datetime(2026, 3, 2, 9, 30, tzinfo=PARIS))  # just after Monday 09:00
    engine, email = _engine(None, clock)
    engine.identify("ann", {"tier": "gold"})
    engine.publish(journeys=[_weekly(None)], content=CONTENT)
    engine.run_due()
    assert email.messages == []
    clock.set(datetime(2026, 3, 9, 9, 0, tzinfo=PARIS))
    engine.run_due()
    assert [m.customer_id for m in email.messages] == ["ann"]  # every customer: no segment


def test_a_missed_occurrence_is_skipped_and_the_latest_runs_once() -> None:
    clock = ManualClock(SUNDAY)
    engine, email = _engine(None, clock)
    engine.publish(journeys=[_weekly(None, "0 9 * * *")], content=CONTENT)
    engine.identify("ann", {})
    clock.set(datetime(2026, 3, 5, 12, 0, tzinfo=PARIS))  # three days of 09:00s later
    engine.run_due()
    assert [m.fields["text"] for m in email.messages] == ["Week of 2026-03-05T09:00:00+01:00"]


def test_a_schedule_without_a_zone_is_read_in_the_journey_s_zone(
    storage_factory: Factory,
) -> None:
    # 09:00 in Paris (the journey's zone), not 09:00 UTC; a zone on the rule wins over it.
    clock = ManualClock(datetime(2026, 3, 2, 5, 0, tzinfo=UTC))  # Monday 06:00 in Paris
    engine, email = _engine(storage_factory(), clock)
    engine.publish(content=CONTENT, journeys=[
        Journey(id="digest", trigger=ScheduleTrigger("0 9 * * *"), timezone="Europe/Paris",
                entry="send", steps={"send": Send("digest", "email")}),
        Journey(id="ny", trigger=ScheduleTrigger("0 9 * * *", "America/New_York"),
                timezone="Europe/Paris", entry="send", steps={"send": Send("digest", "email")}),
    ])
    engine.identify("ann", {})
    clock.set(datetime(2026, 3, 2, 9, 30, tzinfo=UTC))  # 10:30 in Paris, 04:30 in New York
    engine.run_due()
    assert [(m.journey_id, m.fields["text"]) for m in email.messages] == [
        ("digest", "Week of 2026-03-02T09:00:00+01:00"),
    ]
    clock.set(datetime(2026, 3, 2, 14, 0, tzinfo=UTC))  # 09:00 in New York
    engine.run_due()
    assert [m.journey_id for m in email.messages] == ["digest", "ny"]


def test_a_time_in_the_spring_gap_runs_at_the_end_of_the_gap() -> None:
    clock = ManualClock(datetime(2026, 3, 28, 12, 0, tzinfo=PARIS))
    engine, email = _engine(None, clock)
    engine.publish(journeys=[_weekly(None, "30 2 * * *")], content=CONTENT)
    engine.identify("ann", {})
    clock.set(datetime(2026, 3, 29, 1, 0, tzinfo=UTC))  # 03:00 Paris, summer time
    engine.run_due()
    assert [m.created_at for m in email.messages] == [datetime(2026, 3, 29, 1, 0, tzinfo=UTC)]
    assert email.messages[0].fields["text"] == "Week of 2026-03-29T03:00:00+02:00"


def test_a_day_the_zone_skips_has_no_occurrence(storage: object) -> None:
    # Samoa skipped 30 December 2011: its 09:00 never came, and is not run at 00:00 on the 31st
    # (the end of the gap) besides that day's own 09:00.
    apia = ZoneInfo("Pacific/Apia")
    clock = ManualClock(datetime(2011, 12, 28, 12, 0, tzinfo=apia))
    engine, email = _engine(storage, clock)
    engine.publish(journeys=[attrs.evolve(
        _weekly(None, "0 9 * * *"), trigger=ScheduleTrigger("0 9 * * *", "Pacific/Apia"),
    )], content=CONTENT)
    engine.identify("ann", {"email": "ann@example.com"})
    while clock.now() < datetime(2012, 1, 1, 12, 0, tzinfo=apia):
        clock.advance(timedelta(hours=1))
        engine.run_due()
    assert [m.created_at.astimezone(apia).isoformat() for m in email.messages] == [
        "2011-12-29T09:00:00-10:00", "2011-12-31T09:00:00+14:00", "2012-01-01T09:00:00+14:00",
    ]


def test_the_last_day_of_the_month_is_each_month_s_own(storage: object) -> None:
    clock = ManualClock(datetime(2028, 1, 1, 12, 0, tzinfo=PARIS))
    engine, email = _engine(storage, clock)
    engine.publish(journeys=[_weekly(None, "0 9 L * *")], content=CONTENT)
    engine.identify("ann", {"email": "ann@example.com"})
    while clock.now() < datetime(2028, 5, 1, tzinfo=PARIS):
        clock.advance(timedelta(hours=6))
        engine.run_due()
    assert [m.fields["text"] for m in email.messages] == [
        "Week of 2028-01-31T09:00:00+01:00", "Week of 2028-02-29T09:00:00+01:00",
        "Week of 2028-03-31T09:00:00+02:00", "Week of 2028-04-30T09:00:00+02:00",
    ]


@pytest.mark.parametrize(("trigger", "message"), [
    (ScheduleTrigger("every monday"), "is not a cron rule"),
    (ScheduleTrigger("0 9 * * *", "Mars/Olympus"), "not a known IANA time zone"),
    (ScheduleTrigger("0 9 * * *", segment="nobody"), "segment 'nobody' does not exist"),
    # croniter reads a sixth field as seconds: every second of 09:00.
    (ScheduleTrigger("0 9 * * * *"), "cron '0 9 \\* \\* \\* \\*' is not a cron rule"),
    (ScheduleTrigger("0 0 9 * * MON"), "is not a cron rule"),  # seconds first, as Quartz has
    (ScheduleTrigger("0 9 30 2 *"), "cron '0 9 30 2 \\*' never occurs"),
    (ScheduleTrigger("0 9 31 4,6,9,11 *"), "never occurs"),
    # croniter draws an ``R`` field anew each time it reads the rule: every pass of every
    # worker would find another 09:xx, and a daily rule would run several times a day.
    (ScheduleTrigger("R 9 * * *"), "cron 'R 9 \\* \\* \\*' draws a random field"),
    (ScheduleTrigger("0 r(8-10) * * *"), "draws a random field"),
    (ScheduleTrigger("0 9 * * R/2"), "draws a random field"),
], ids=["words", "zone", "segment", "seconds", "seconds first", "february 30", "31 of april",
        "random minute", "random hour", "random weekday"])
def test_bad_schedules_are_refused(trigger: ScheduleTrigger, message: str) -> None:
    journey = Journey(id="j", trigger=trigger, entry="send",
                      steps={"send": Send("digest", "email")})
    with pytest.raises(DefinitionError, match=message):
        Engine(channels={"email": RecordingChannel()}).publish(journeys=[journey],
                                                              content=CONTENT)


@pytest.mark.parametrize("cron", ["0 9 29 2 *", "@daily", " 0 9 * * 1 "])
def test_rules_that_occur_rarely_or_are_written_short_are_accepted(cron: str) -> None:
    journey = Journey(id="j", trigger=ScheduleTrigger(cron), entry="send",
                      steps={"send": Send("digest", "email")})
    engine = Engine(channels={"email": RecordingChannel()})
    assert engine.publish(journeys=[journey], content=CONTENT) == 1


def test_a_stored_schedule_that_never_occurs_stops_no_worker(
    storage_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    # Published before validation refused such a rule: it runs nothing, and everyone else's
    # wake-ups still fire. It is said once, when the engine reads the definitions, not at
    # every pass of every worker.
    clock = ManualClock(SUNDAY)
    storage = storage_factory()
    engine, email = _engine(storage, clock)
    reminder = Journey(id="reminder", trigger=EventTrigger("signed_up"), entry="wait",
                       steps={"wait": Wait(timedelta(hours=1), next="send"),
                              "send": Send("hello", "email")})
    hello = ContentItem("hello", variants=(Variant("email", {"subject": "Hi", "text": "Hi"}),))
    engine.publish(journeys=[reminder], content=[*CONTENT, hello])
    never = Journey(id="never", trigger=ScheduleTrigger("0 9 30 2 *"), entry="send",
                    steps={"send": Send("digest", "email")})
    stored = attrs.evolve(engine.definitions, journeys=(*engine.definitions.journeys, never))
    storage.append_definitions(engine.generation, dumps_stored_definitions(stored))
    engine.handle_event(Event("ann", "signed_up", clock.now(), event_id="s1"))
    clock.advance(hours=2)
    assert engine.run_worker(max_iterations=1, poll_interval=0).messages == 1
    assert [m.journey_id for m in email.messages] == ["reminder"]
    for _ in range(3):
        clock.advance(hours=1)
        engine.run_due()
    said = [r.getMessage() for r in caplog.records if "never occurs" in r.getMessage()]
    assert said == ["schedule of journey 'never' never occurs: '0 9 30 2 *'"]


def test_a_stored_schedule_with_a_random_field_runs_nothing(
    storage_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    # Published before validation refused such a rule: drawn anew at each pass, it ran a daily
    # rule several times a day, at a different minute on each worker. It runs nothing.
    clock = ManualClock(datetime(2026, 3, 2, 0, 0, tzinfo=PARIS))
    storage = storage_factory()
    engine, email = _engine(storage, clock)
    engine.publish(content=CONTENT)
    engine.identify("ann", {"email": "ann@example.com"})
    drawn = Journey(id="drawn", trigger=ScheduleTrigger("R 9 * * *", "Europe/Paris"),
                    entry="send", steps={"send": Send("digest", "email")})
    stored = attrs.evolve(engine.definitions, journeys=(drawn,))
    storage.append_definitions(engine.generation, dumps_stored_definitions(stored))
    for _ in range(3 * 24 * 6):
        clock.advance(minutes=10)
        engine.run_due()
    assert email.messages == []
    said = [r.getMessage() for r in caplog.records if "drawn" in r.getMessage()]
    assert said == ["schedule of journey 'drawn' never occurs: 'R 9 * * *'"]


def test_run_due_after_a_day_without_schedules_costs_nothing_extra() -> None:
    clock = ManualClock(SUNDAY)
    engine, _ = _engine(None, clock)
    engine.publish(content=CONTENT)
    clock.advance(timedelta(days=1))
    assert engine.run_due().nothing_happened


def _daily(version: int, trigger: object, **journey: object) -> Journey:
    return Journey(id="digest", version=version, trigger=trigger,  # type: ignore[arg-type]
                   entry="send", steps={"send": Send("digest", "email")}, **journey)


def test_a_schedule_republished_at_an_earlier_time_runs_from_the_publish_on(
    storage_factory: Factory,
) -> None:
    # Every day at 09:00, moved to 08:00 at 08:30: today's 08:00 came before the rule did,
    # so the next run is tomorrow's 08:00 (not one at 08:30 for an hour already gone).
    clock = ManualClock(datetime(2026, 3, 2, 7, 0, tzinfo=PARIS))
    engine, email = _engine(storage_factory(), clock)
    engine.publish(journeys=[_daily(1, ScheduleTrigger("0 9 * * *", "Europe/Paris"))],
                   content=CONTENT)
    engine.identify("ann", {})
    clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=PARIS))
    engine.run_due()
    clock.set(datetime(2026, 3, 3, 8, 30, tzinfo=PARIS))
    engine.publish(journeys=[_daily(2, ScheduleTrigger("0 8 * * *", "Europe/Paris"))])
    engine.run_due()
    clock.set(datetime(2026, 3, 4, 8, 0, tzinfo=PARIS))
    engine.run_due()
    assert [m.fields["text"] for m in email.messages] == [
        "Week of 2026-03-02T09:00:00+01:00", "Week of 2026-03-04T08:00:00+01:00",
    ]


def test_a_journey_that_becomes_a_schedule_again_runs_from_that_publish_on(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(datetime(2026, 3, 2, 7, 0, tzinfo=PARIS))
    engine, email = _engine(storage_factory(), clock)
    every_day = ScheduleTrigger("0 8 * * *", "Europe/Paris")
    engine.publish(journeys=[_daily(1, every_day)], content=CONTENT)
    engine.identify("ann", {})
    clock.set(datetime(2026, 3, 2, 8, 0, tzinfo=PARIS))
    engine.run_due()
    engine.publish(journeys=[_daily(2, EventTrigger("asked"))])
    clock.set(datetime(2026, 3, 5, 8, 30, tzinfo=PARIS))
    engine.run_due()
    engine.publish(journeys=[_daily(3, every_day)])  # the same rule, half an hour late
    engine.run_due()
    assert [m.fields["text"] for m in email.messages] == ["Week of 2026-03-02T08:00:00+01:00"]


@pytest.mark.parametrize(("rule", "sent"), [
    (ResumeRule("send_late"), 1), (ResumeRule("skip"), 0),
    (ResumeRule("grace", timedelta(hours=4)), 1), (ResumeRule("grace", timedelta(hours=2)), 0),
])
def test_an_occurrence_missed_while_paused_runs_at_the_resume_by_the_resume_rule(
    storage_factory: Factory, rule: ResumeRule, sent: int,
) -> None:
    # 08:00 falls inside a pause from 07:00 to 11:00: it runs at the resume, three hours
    # late, as a wake-up held by the pause would: with ``skip`` (or a shorter grace) the
    # customer enters but the morning message does not go out at 11:00.
    clock = ManualClock(datetime(2026, 3, 2, 7, 0, tzinfo=PARIS))
    engine, email = _engine(storage_factory(), clock)
    engine.publish(journeys=[_daily(1, ScheduleTrigger("0 8 * * *", "Europe/Paris"),
                                    on_resume=rule)], content=CONTENT)
    engine.identify("ann", {})
    engine.pause_journey("digest")
    clock.set(datetime(2026, 3, 2, 8, 0, tzinfo=PARIS))
    engine.run_due()
    clock.set(datetime(2026, 3, 2, 11, 0, tzinfo=PARIS))
    engine.resume_journey("digest")
    out = engine.run_due()
    assert [e.customer_id for e in out.entered] == ["ann"]
    assert len(email.messages) == sent
    skipped = [a.detail for a in engine.activities(clock.now() - timedelta(days=1),
                                                   clock.now() + timedelta(hours=1))
               if a.kind == "send_skipped"]
    assert skipped == ([] if sent else ["paused"])


def test_a_journey_a_skipped_occurrence_jumps_into_sends_as_usual(
    storage_factory: Factory,
) -> None:
    # The 08:00 digest, paused until 11:00 under ``skip``: its own message is skipped, but the
    # journey it jumps into was not paused and sends.
    clock = ManualClock(datetime(2026, 3, 2, 7, 0, tzinfo=PARIS))
    engine, email = _engine(storage_factory(), clock)
    digest = Journey(id="digest", trigger=ScheduleTrigger("0 8 * * *", "Europe/Paris"),
                     entry="send", on_resume=ResumeRule("skip"),
                     steps={"send": Send("digest", "email", next="jump"), "jump": Jump("more")})
    more = Journey(id="more", trigger=EventTrigger("asked"), entry="send",
                   steps={"send": Send("digest", "email")})
    engine.publish(journeys=[digest, more], content=CONTENT)
    engine.identify("ann", {})
    engine.pause_journey("digest")
    clock.set(datetime(2026, 3, 2, 11, 0, tzinfo=PARIS))
    engine.resume_journey("digest")
    engine.run_due()
    assert [(m.journey_id, m.created_at) for m in email.messages] == [("more", clock.now())]
    assert [(a.journey_id, a.detail) for a in engine.activities(
        clock.now() - timedelta(days=1), clock.now() + timedelta(hours=1),
    ) if a.kind == "send_skipped"] == [("digest", "paused")]
