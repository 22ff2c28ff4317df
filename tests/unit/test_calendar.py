"""Calendar waits, time conditions and attribute triggers as definitions: JSON, validation,
the builder, the kinds on their own."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import pytest

from cjo import (
    AttributeTrigger,
    Branch,
    Case,
    DefinitionError,
    Definitions,
    Engine,
    EventTrigger,
    Exit,
    Journey,
    Limits,
    ManualClock,
    Problem,
    UpdateProfile,
    UsageError,
    WaitSinceEntry,
    WaitUntil,
    WaitUntilDate,
    attr,
    ctx,
    dumps_definitions,
    entered_at,
    loads_definitions,
    now,
    prop,
    validate_definitions,
)
from cjo.conditions import CompareTime, Ref, compile_condition
from cjo.runtime.core import Decider, new_state
from cjo.runtime.kinds import HALT, step_kind
from cjo.runtime.kinds.calendar import date_target
from cjo.runtime.registry import CompiledJourney, Registry
from cjo.runtime.state import Enrollment
from cjo.timezones import UTC_ZONE, customer_zone

T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)
DAY, HOUR = timedelta(days=1), timedelta(hours=1)
J = "journey 'j' v1"


def journey(steps: dict[str, Any], **fields: Any) -> Journey:
    return Journey("j", next(iter(steps)), steps, **fields)


def problems_of(*journeys: Journey, limits: Limits | None = None) -> list[Problem]:
    return validate_definitions(Definitions(journeys=journeys), limits=limits)


# --- JSON ------------------------------------------------------------------------------------


def test_the_new_steps_trigger_and_conditions_round_trip_through_json() -> None:
    defs = Definitions(journeys=(
        Journey("j", "until", {
            "until": WaitUntil("09:00", weekdays=("mon", "fri"), next="date"),
            "date": WaitUntilDate(attr("renewal_date"), days=-1, at="08:30:15",
                                  offset=-2 * HOUR, next="since", on_past="x",
                                  on_missing="x"),
            "since": WaitSinceEntry(7 * DAY, next="branch"),
            "branch": Branch((Case((attr("signed_up_at") < now() - 7 * DAY)
                                   & (ctx("paid_at") >= entered_at() + HOUR), "x"),)),
            "x": Exit(),
        }, trigger=AttributeTrigger("plan", changed_to=["pro"], changed_from=[None, "trial"],
                                    where=prop("new_value") != "x")),
    ))
    text = dumps_definitions(defs)
    assert loads_definitions(text) == defs
    steps = json.loads(text)["journeys"][0]["steps"]
    assert steps["until"] == {"kind": "wait_until", "at": "09:00", "weekdays": ["mon", "fri"],
                              "next": "date", "tags": []}
    assert steps["date"]["date"] == "profile.renewal_date"
    assert (steps["date"]["at"], steps["date"]["offset"], steps["date"]["days"]) == (
        "08:30:15", -7200, -1
    )
    assert steps["since"]["duration"] == 7 * 86_400
    case = steps["branch"]["cases"][0]["condition"]["conditions"]
    assert case[0] == {"kind": "compare_time", "ref": "profile.signed_up_at", "op": "lt",
                       "base": "now", "offset": -7 * 86_400}
    assert case[1]["base"] == "entered_at" and case[1]["op"] == "ge"
    trigger = json.loads(text)["journeys"][0]["trigger"]
    assert trigger["kind"] == "attribute" and trigger["changed_from"] == [None, "trial"]


def test_json_written_by_hand_reads_times_and_durations() -> None:
    data = {"journeys": [{"id": "j", "entry": "a", "steps": {
        "a": {"kind": "wait_until", "at": "09:00", "next": "b"},
        "b": {"kind": "wait_until_date", "date": "context.delivery_at", "offset": "2h"},
    }}]}
    (j,) = loads_definitions(json.dumps(data)).journeys
    assert j.steps["a"] == WaitUntil(time(9), next="b")
    assert j.steps["b"] == WaitUntilDate(Ref("context", "delivery_at"), offset=2 * HOUR)


def test_a_bad_time_of_day_says_where() -> None:
    data = {"journeys": [{"id": "j", "entry": "a", "steps": {
        "a": {"kind": "wait_until", "at": "9am"}}}]}
    with pytest.raises(DefinitionError) as caught:
        loads_definitions(json.dumps(data))
    assert list(caught.value.problems) == [Problem(
        "$.journeys[0].steps['a'].at", "not a time of day: '9am' (use 'HH:MM', such as '09:00')"
    )]
    with pytest.raises(DefinitionError) as caught:
        Engine().publish(journeys=[Journey("j", entry="a", steps={"a": WaitUntil("25:00")})])
    assert [p.location for p in caught.value.problems] == ["journey 'j' v1 / step 'a'"]


# --- validation --------------------------------------------------------------------------------


def test_calendar_waits_are_valid_as_written() -> None:
    assert problems_of(journey({
        "a": WaitUntil("09:00", weekdays=("sat", "sun"), next="b"),
        "b": WaitUntilDate(ctx("delivery_at"), days=-3650, at=time(9), next="c"),
        "c": WaitSinceEntry(DAY),
    })) == []


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (WaitUntil("09:00", weekdays=("monday",)),
         "unknown weekday 'monday'; expected one of mon, tue, wed, thu, fri, sat, sun"),
        (WaitUntil(time(9, tzinfo=UTC)),
         "at 09:00:00+00:00 must not carry a zone: the wait uses the customer's time zone"),
        (WaitUntilDate(attr("renewal"), days=3651),
         "days 3651 is beyond the limit of 3650 days either way"),
        (WaitUntilDate(attr("renewal"), offset=-3651 * DAY),
         "offset -3651 days, 0:00:00 is beyond the limit of 3650 days, 0:00:00 either way"),
        (WaitUntilDate(prop("renewal")),
         "event.renewal cannot be used in a wait until a date: only profile and context "
         "values are available there (the trigger event's properties are in the context: "
         "ctx('renewal'); an event a WaitForEvent received is under "
         "ctx('received.<event>.<property>'))"),
        (WaitUntilDate("renewal"),  # a bare name: which scope was meant is not said
         "'renewal' is not a field: write attr('renewal') or 'profile.renewal' (ctx(...) or "
         "'context.renewal' for the context)"),
        (WaitUntilDate("planet.renewal"),
         "unknown scope 'planet' in planet.renewal; expected one of profile, event, context"),
        (WaitUntilDate(5),  # type: ignore[arg-type]
         "date must name a field, such as attr('renewal_date') or 'profile.renewal_date', "
         "got 5"),
        (WaitUntilDate(attr("renewal"), days=1.5),  # type: ignore[arg-type]
         "days must be a whole number, got 1.5"),
        (WaitSinceEntry(timedelta(seconds=10)),
         "duration 10s is shorter than the minimum wait 1m"),
        (WaitSinceEntry(3651 * DAY), "duration 3651d is longer than the limit of 3650d"),
    ],
)
def test_calendar_wait_problems(step: Any, message: str) -> None:
    assert problems_of(journey({"a": step})) == [Problem(f"{J} / step 'a'", message)]


def test_a_wait_since_entry_longer_than_the_lifetime_could_never_end() -> None:
    (problem,) = problems_of(journey({"a": WaitSinceEntry(8 * DAY)}, max_lifetime=7 * DAY))
    assert "longer than the journey's max_lifetime 7d" in problem.message


def test_unknown_zone_names_are_refused_where_they_are_given() -> None:
    (problem,) = problems_of(journey({"a": WaitUntil("09:00")}, timezone="Mars/Olympus"))
    assert problem == Problem(J, "timezone 'Mars/Olympus' is not a known IANA time zone")
    with pytest.raises(UsageError, match="'Europe/Pariss' is not a known IANA time zone"):
        Engine(default_timezone="Europe/Pariss")
    # A profile's zone comes from customers: an unknown one is skipped, never an error.
    assert customer_zone("Nowhere/Else", None, None) == UTC_ZONE


@pytest.mark.parametrize(
    ("condition", "used_in", "message"),
    [
        (attr("signed_up_at") == now(), "branch",
         "operator 'eq' cannot compare profile.signed_up_at with now(); use lt (before), le, "
         "gt (after) or ge"),
        (CompareTime(Ref("profile", "x"), "lt", "later"), "branch",  # type: ignore[arg-type]
         "unknown instant 'later'; expected one of now, entered_at"),
        (attr("x") < now() - 3651 * DAY, "branch",
         "the offset -3651d is beyond the limit of 3650d either way"),
        (prop("added_at") > entered_at(), "trigger",
         "entered_at() cannot be used in a trigger: there is no enrollment there"),
    ],
)
def test_time_condition_problems(condition: Any, used_in: str, message: str) -> None:
    if used_in == "branch":
        j = journey({"b": Branch((Case(condition, None),))})
        where = f"{J} / step 'b' / case 1"
    else:
        j = journey({"b": Exit()}, trigger=EventTrigger("go", where=condition))
        where = f"{J} / trigger"
    assert problems_of(j) == [Problem(where, message)]


def test_attribute_trigger_problems() -> None:
    j = journey({"a": Exit()}, trigger=AttributeTrigger("", changed_to=[],
                                                        where=ctx("plan") == "x"))
    assert problems_of(j) == [
        Problem(f"{J} / trigger", "attribute must not be empty"),
        Problem(f"{J} / trigger",
                "changed_to lists no values, so it never fires; leave it out to accept any "
                "value"),
        Problem(f"{J} / trigger", "context.plan cannot be used in a trigger: only profile and "
                                  "event values are available there"),
    ]


# --- the builder and evaluation ------------------------------------------------------------------


class FakeScope:
    def __init__(self, profile: dict[str, Any], now: datetime | None,
                 entered_at: datetime | None = None, zone: Any = UTC_ZONE) -> None:
        self.profile, self.event, self.context = profile, {}, {}
        self.now, self.entered_at, self.zone = now, entered_at, zone

    def in_segment(self, segment_id: str) -> bool:
        return False


def test_the_builder_makes_time_comparisons_both_ways() -> None:
    assert (attr("a") < now() - DAY) == CompareTime(Ref("profile", "a"), "lt", "now", -DAY)
    assert (now() - DAY > attr("a")) == CompareTime(Ref("profile", "a"), "lt", "now", -DAY)
    assert (ctx("b") >= entered_at() + HOUR) == CompareTime(
        Ref("context", "b"), "ge", "entered_at", HOUR
    )
    with pytest.raises(DefinitionError, match="compare Moment"):
        _ = now() < 5  # type: ignore[operator]
    with pytest.raises(DefinitionError, match="moves by a timedelta"):
        _ = now() - 5  # type: ignore[operator]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T0 - 8 * DAY, True),
        (T0 - 7 * DAY, False),                         # exactly 7 days: not before
        ((T0 - 8 * DAY).isoformat(), True),
        ("2026-05-25", True),                          # midnight of May 25 in the zone
        ("2026-05-26", False),                         # midnight of May 26: 6.5 days ago
        ("2026-05-25T11:00", True),                    # a wall time in the zone
        ("a while ago", False),
        (None, False),
        (17, False),
    ],
)
def test_a_time_comparison_reads_dates_and_datetimes(value: Any, expected: bool) -> None:
    test = compile_condition(attr("signed_up_at") < now() - 7 * DAY)
    assert test(FakeScope({"signed_up_at": value}, T0)) is expected


def test_dates_are_read_in_the_customer_zone_and_scopes_without_instants_say_false() -> None:
    from zoneinfo import ZoneInfo

    test = compile_condition(attr("due") < now())
    tokyo = ZoneInfo("Asia/Tokyo")
    # June 2 starts at 15:00 UTC on June 1 in Tokyo: before T0 (12:00 UTC)? No: after.
    assert test(FakeScope({"due": "2026-06-02"}, T0, zone=tokyo)) is False
    assert test(FakeScope({"due": "2026-06-02"}, T0 + 4 * HOUR, zone=tokyo)) is True
    assert test(FakeScope({"due": "2026-06-01"}, None)) is False
    entered = compile_condition(ctx("x") > entered_at())
    assert entered(FakeScope({}, T0)) is False


# --- the kinds on their own ----------------------------------------------------------------------


def run(step: Any, at: datetime, **journey_fields: Any) -> tuple[Any, Enrollment, Decider]:
    j = Journey("j", "s", {"s": step, "n": Exit()}, **journey_fields)
    decider = Decider(Registry(), new_state("c", at))
    enrollment = Enrollment("e", "j", 1, "c", at - DAY)
    enrollment.step_id = "s"
    kind = step_kind(step)
    result = kind.run(decider, CompiledJourney.compile(j), enrollment, "s", step,
                      kind.compile(step), at)
    return result, enrollment, decider


def test_wait_until_schedules_an_absolute_instant_or_goes_on_at_once() -> None:
    result, e, _ = run(WaitUntil("09:00", next="n"), T0, timezone="Europe/Paris")
    assert result is HALT and e.wake_at == datetime(2026, 6, 2, 7, tzinfo=UTC)
    result, e, _ = run(WaitUntil("14:00", next="n"), T0, timezone="Europe/Paris")
    assert result == "n" and e.wake_at is None


def test_a_wait_until_reached_again_at_the_instant_it_released_waits_a_day() -> None:
    step = WaitUntil("14:00", next="n")
    j = CompiledJourney.compile(Journey("j", "s", {"s": step, "n": Exit()},
                                        timezone="Europe/Paris"))
    decider = Decider(Registry(), new_state("c", T0))
    e = Enrollment("e", "j", 1, "c", T0)
    e.step_id = "s"
    kind = step_kind(step)
    assert kind.run(decider, j, e, "s", step, None, T0) == "n"
    assert kind.run(decider, j, e, "s", step, None, T0) is HALT
    assert e.wake_at == T0 + DAY


def test_date_targets() -> None:
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")
    # The day before March 30 at 09:00: March 29 is the spring-forward day (CEST from 03:00).
    assert date_target(date(2026, 3, 30), paris, days=-1, at=time(9)) == datetime(
        2026, 3, 29, 7, tzinfo=UTC
    )
    # Exact time: 24 hours before midnight of March 30 is 23:00 on March 28, local time.
    assert date_target(date(2026, 3, 30), paris, offset=-DAY) == datetime(
        2026, 3, 28, 22, tzinfo=UTC
    )
    plus_two = timezone(timedelta(hours=2))
    aware = datetime(2026, 10, 25, 2, 30, tzinfo=plus_two)   # the first 02:30 in Paris
    assert date_target(aware, paris) == aware                 # kept exact, fold and all


def test_wait_until_date_reads_the_profile_or_the_context() -> None:
    step = WaitUntilDate(attr("renewal"), at="09:00", next="n")
    result, _, d = run(step, T0)
    assert result == "n" and [a.kind for a in d.activities] == ["date_missing"]
    result, _, d = run(WaitUntilDate(ctx("due"), next="n"), T0)
    assert result == "n" and d.activities[0].detail == "context.due is missing"
    far = WaitUntilDate(attr("renewal"), days=2, next="n", on_missing="n")
    decider = Decider(Registry(), new_state("c", T0))
    decider.change_profile({"renewal": "9999-12-31"})
    e = Enrollment("e", "j", 1, "c", T0)
    e.step_id = "s"
    j = CompiledJourney.compile(Journey("j", "s", {"s": far, "n": Exit()}))
    assert step_kind(far).run(decider, j, e, "s", far, None, T0) == "n"
    assert decider.activities[-1].detail == "profile.renewal is out of range"


def test_wait_since_entry_counts_from_the_entry() -> None:
    result, e, _ = run(WaitSinceEntry(2 * DAY, next="n"), T0)
    assert result is HALT and e.wake_at == T0 + DAY           # entered a day before T0
    result, e, _ = run(WaitSinceEntry(DAY, next="n"), T0)
    assert result == "n"                                       # exactly now: at once


# --- attribute triggers ----------------------------------------------------------------------


def test_a_chain_of_attribute_changes_between_journeys_stops() -> None:
    engine = Engine(clock=ManualClock(T0))
    engine.publish(journeys=[
        Journey("ping", trigger=AttributeTrigger("x", changed_to=["a"]), entry="set",
                steps={"set": UpdateProfile({"x": "b"})}),
        Journey("pong", trigger=AttributeTrigger("x", changed_to=["b"]), entry="set",
                steps={"set": UpdateProfile({"x": "a"})}),
    ])
    engine.identify("ann", {"x": "a"})
    record = engine.customer_state("ann")
    assert record is not None
    entries = record.history[("ping", None)].count + record.history[("pong", None)].count
    assert entries == Limits().max_steps_per_advance


def test_entered_at_in_a_branch_and_in_an_exit_criterion() -> None:
    from cjo import ContentItem, Event, ExitCriterion, RecordingChannel, Send, Variant, Wait

    clock, email = ManualClock(T0), RecordingChannel()
    engine = Engine(channels={"email": email}, clock=clock)
    quick = ctx("paid_at") <= entered_at() + HOUR
    engine.publish(journeys=[Journey(
        "order", trigger=EventTrigger("ordered"), entry="wait",
        steps={"wait": Wait(DAY, next="branch"),
               "branch": Branch((Case(quick, "mail"),), default=None),
               "mail": Send("note", "email")},
        exit_criteria=(ExitCriterion("refund after a week", event="refunded",
                                     where=prop("at") > entered_at() + 7 * DAY),),
    )], content=[ContentItem("note", variants=(Variant("email", {"subject": "Note", "text": "x"}),))])

    def order(cid: str, paid: datetime) -> None:
        engine.handle_event(Event(customer_id=cid, name="ordered", timestamp=T0,
                                  properties={"paid_at": paid.isoformat()},
                                  event_id=f"o-{cid}"))

    order("fast", T0 + 30 * 60 * timedelta(seconds=1))
    order("slow", T0 + 2 * HOUR)
    clock.advance(2 * DAY)
    engine.run_due()
    assert [m.customer_id for m in email.messages] == ["fast"]
    order("late", T0)
    # It entered at T0 + 2 days (the instant decided), so only a refund past T0 + 9 days exits.
    for at, eid in ((T0 + 9 * DAY, "r1"), (T0 + 10 * DAY, "r2")):
        engine.handle_event(Event(customer_id="late", name="refunded", timestamp=clock.now(),
                                  properties={"at": at.isoformat()}, event_id=eid))
        (enrollment,) = engine.enrollments("late")
        assert enrollment.status == ("exited" if eid == "r2" else "active")
    assert enrollment.end_reason == "refund after a week"
