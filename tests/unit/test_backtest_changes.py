"""Operator changes inside a back-test's stream: a publish, a pause, a resume at an instant decide
what a live engine decides when the operator makes the same change at the same instant, with a
worker that is never late (every message, every record, the reports)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta

import attrs
import pytest

from cjo.analytics.report import journey_report
from cjo.channels.base import Message
from cjo.channels.recording import RecordingChannel
from cjo.clock import ManualClock
from cjo.conditions import attr
from cjo.demo import shop_definitions
from cjo.engine import Engine
from cjo.errors import DefinitionError, JourneyNotPausedError, UnknownJourneyError, UsageError
from cjo.limits import DEFAULT_LIMITS
from cjo.model.content import ContentItem, Variant
from cjo.model.definitions import Definitions
from cjo.model.events import Event, ProfileUpdate
from cjo.model.governance import ControlGroup, ResumeRule, VersionChange, in_control_group
from cjo.model.journey import Goal, Journey
from cjo.model.segments import Segment
from cjo.model.steps import Action, Send, Wait
from cjo.model.triggers import (
    EventTrigger,
    InactivityTrigger,
    ScheduleTrigger,
    SegmentTrigger,
)
from cjo.simulate import (
    BacktestInput,
    BacktestResult,
    PauseJourney,
    Publish,
    ResumeJourney,
    backtest,
)
from cjo.storage.memory import InMemoryStorage
from tests.property.journeys import T0
from tests.property.test_equivalence import deliveries, on_time, play, states
from tests.unit.test_backtest import shop_inputs

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
CHANNELS = ("email", "sms", "push")


def note(text: str) -> ContentItem:
    return ContentItem("note", (
        Variant("email", {"subject": "Hi {{ profile.name | default: 'you' }}", "text": text}),
        Variant("sms", {"text": text}),
        Variant("push", {"title": "Note", "body": text}),
    ))


def signup(customer: str, at: datetime) -> Event:
    return Event(customer, "signed_up", at, {}, f"{customer}-signup")


def tick(at: datetime) -> Event:
    """An event nothing reads: the stream (and the live engine) reaches ``at``."""
    return Event("nobody", "page_viewed", at, {}, f"tick-{at.isoformat()}")


def live(defs: Definitions, stream: Sequence[BacktestInput], *, render: bool = True) -> Engine:
    """A live engine on InMemoryStorage: each input handled, and each change made, with the
    clock at its instant and a worker that fires every wake-up at its own instant (before a
    change, those due before its instant; right after it, ``run_due`` at it)."""
    # Where the shop's streams start, before T0.
    clock = ManualClock(min([T0, *(i.timestamp for i in stream if isinstance(i, Event))]))
    engine = Engine(InMemoryStorage(), {c: RecordingChannel() for c in CHANNELS}, clock,
                    render=render)
    engine.publish(defs)
    last = play(engine, stream, lambda at: on_time(engine, clock, at),
                lambda at: on_time(engine, clock, at, before=True))
    if last is not None:
        on_time(engine, clock, last)
    return engine


def replay(defs: Definitions, stream: Sequence[BacktestInput], *, render: bool = True
           ) -> BacktestResult:
    return backtest(defs, stream, channels={c: RecordingChannel() for c in CHANNELS},
                    render=render)


def customers(stream: Sequence[BacktestInput]) -> list[str]:
    out = set()
    for item in stream:
        target = item[1] if isinstance(item, tuple) else item
        if isinstance(target, Event | ProfileUpdate):
            out.add(target.customer_id)
    return sorted(out)


def assert_as_live(result: BacktestResult, stream: Sequence[BacktestInput],
                   defs: Definitions, *, render: bool = True) -> Engine:
    """The back-test decided what the live engine decides: messages, records, reports; and
    one on its own counting channels counts the same."""
    counted = backtest(defs, stream, render=render)
    assert (counted.messages, counted.entered, counted.ended, counted.goals, counted.reports) \
        == (result.messages, result.entered, result.ended, result.goals, result.reports)
    engine = live(defs, stream, render=render)
    assert deliveries(result.engine) == deliveries(engine)
    assert states(result.engine, customers(stream)) == states(engine, customers(stream))
    latest: dict[str, Journey] = {}
    for j in sorted(engine.definitions.journeys, key=lambda j: j.version):
        latest[j.id] = j
    assert result.reports == {jid: journey_report(engine.storage, j) for jid, j in latest.items()}
    return engine


def sent(result: BacktestResult) -> list[tuple[str, str, int, str, datetime]]:
    return sorted(
        (m.customer_id, m.channel, m.journey_version, m.step_id, m.created_at)
        for ch in result.engine.channels.values() if isinstance(ch, RecordingChannel)
        for m in ch.messages
    )


# --- a new version mid-stream ------------------------------------------------------------------

V1 = Journey(id="onboard", version=1, trigger=EventTrigger("signed_up"), entry="wait",
             steps={"wait": Wait(DAY, next="hello"), "hello": Send("note", "email")})
V2 = Journey(id="onboard", version=2, trigger=EventTrigger("signed_up"), entry="pause",
             steps={"pause": Wait(DAY, next="welcome"), "welcome": Send("note", "sms")})
ONBOARD = Definitions(journeys=(V1,), content=(note("Hello"),))

VERSION_CHANGES = {
    "drain": VersionChange.drain(),
    "migrate": VersionChange.migrate({"wait": "pause", "hello": "welcome"}),
    "eject": VersionChange.eject("replaced"),
}


@pytest.mark.parametrize("mode", sorted(VERSION_CHANGES))
def test_a_version_published_mid_stream_acts_on_running_customers_by_its_rule(
    mode: str,
) -> None:
    stream: list[BacktestInput] = [
        signup("ann", T0),
        (T0 + HOUR, Publish(Definitions(journeys=(V2,)), running={"onboard": VERSION_CHANGES[mode]})),
        signup("bob", T0 + 2 * HOUR),
        tick(T0 + 3 * DAY),
    ]
    result = replay(ONBOARD, stream)
    assert_as_live(result, stream, ONBOARD)
    assert result.changes == 1 and result.inputs == 4 and result.events == 3
    bob = ("bob", "sms", 2, "welcome", T0 + 2 * HOUR + DAY)  # new entries take version 2
    ann = {
        "drain": [("ann", "email", 1, "hello", T0 + DAY)],
        # Moved to version 2 at the step the map names; the wake-up instant is kept.
        "migrate": [("ann", "sms", 2, "welcome", T0 + DAY)],
        "eject": [],
    }[mode]
    assert sent(result) == sorted([*ann, bob])
    [enrollment] = result.engine.enrollments("ann")
    if mode == "eject":
        assert (enrollment.status, enrollment.ended_at) == ("ejected", T0 + HOUR)
    else:
        assert (enrollment.status, enrollment.version) == ("completed", 1 if mode == "drain" else 2)


def test_a_control_group_shrunk_mid_stream_counts_conversions_by_the_group_of_the_entry() -> None:
    group = ControlGroup(50, "s")
    journey = Journey(id="promo", trigger=EventTrigger("signed_up"), entry="wait",
                      goal=Goal("purchased", exit_on_goal=False),
                      steps={"wait": Wait(DAY, next="mail"), "mail": Send("note", "email")})
    defs = Definitions(journeys=(journey,), content=(note("Hello"),), control_group=group)
    customers = [f"c{i}" for i in range(20)]
    stream: list[BacktestInput] = [
        *(signup(c, T0) for c in customers),
        (T0 + HOUR, Publish(Definitions(control_group=ControlGroup(0, "s")))),
        *(Event(c, "purchased", T0 + 2 * HOUR, {}, f"{c}-buy") for c in customers),
        tick(T0 + 2 * DAY),
    ]
    result = replay(defs, stream)
    assert_as_live(result, stream, defs)
    control = [c for c in customers if in_control_group(c, group)]
    report = result.reports["promo"]
    assert 0 < len(control) < len(customers)
    assert (report.control, report.control_converted, report.converted) == (
        len(control), len(control), len(customers))
    # Released by the shrink: they were sent the journey's message after all.
    assert {m[0] for m in sent(result)} == set(customers)


# --- pause and resume --------------------------------------------------------------------------


def drip(rule: ResumeRule) -> Definitions:
    return Definitions(journeys=(Journey(
        id="drip", trigger=EventTrigger("signed_up"), entry="wait", on_resume=rule,
        steps={"wait": Wait(2 * HOUR, next="mail"), "mail": Send("note", "email")},
    ),), content=(note("Tip"),))


@pytest.mark.parametrize(("rule", "delivered"), [
    (ResumeRule(), True),                                   # sent late, at the resume
    (ResumeRule("skip"), False),
    (ResumeRule("grace", timedelta(hours=3)), False),       # 4 hours late: past the grace
    (ResumeRule("grace", timedelta(hours=5)), True),
])
def test_a_pause_holds_wake_ups_and_the_resume_releases_them_by_the_journeys_rule(
    rule: ResumeRule, delivered: bool,
) -> None:
    defs = drip(rule)
    stream: list[BacktestInput] = [
        signup("ann", T0),                      # due at T0 + 2 h: inside the pause
        signup("cat", T0 + HOUR / 2),           # due at T0 + 2.5 h: inside the pause too
        (T0 + HOUR, PauseJourney("drip")),
        signup("bob", T0 + 90 * timedelta(minutes=1)),  # paused: not entered
        (T0 + 6 * HOUR, ResumeJourney("drip")),
        signup("dan", T0 + 7 * HOUR),           # entered again, due at T0 + 9 h
        tick(T0 + 12 * HOUR),
    ]
    result = replay(defs, stream)
    assert_as_live(result, stream, defs)
    late = [("ann", "email", 1, "mail", T0 + 6 * HOUR), ("cat", "email", 1, "mail", T0 + 6 * HOUR)]
    assert sent(result) == [*(late if delivered else []), ("dan", "email", 1, "mail", T0 + 9 * HOUR)]
    assert result.engine.enrollments("bob") == []
    assert result.entered == {"drip": 3}


def burst(sends: int) -> Journey:
    """A wait, then ``sends`` emails in a row: one wake-up sending them all."""
    steps: dict[str, Wait | Send] = {"wait": Wait(2 * HOUR, next="m0")}
    for i in range(sends):
        steps[f"m{i}"] = Send("note", "email", next=f"m{i + 1}" if i + 1 < sends else None)
    return Journey(id="burst", trigger=EventTrigger("signed_up"), entry="wait", steps=steps)


@pytest.mark.parametrize("paused", [False, True])
def test_the_catch_up_limit_counts_each_instants_sends_as_a_worker_on_time_does(
    paused: bool,
) -> None:
    """Twelve sends due at one instant (a wake-up on time, or the wake-ups a resume releases):
    ten go out and two are skipped, live and in the back-test alike; wake-ups of different
    instants that one window's catch-up fires are limited apart, as a worker on time fires
    them in passes of their own."""
    limit = DEFAULT_LIMITS.max_messages_per_catch_up
    defs = Definitions(journeys=(burst(limit + 2),), content=(note("Hi"),))
    stream: list[BacktestInput] = [signup("ann", T0), signup("bob", T0 + HOUR / 4)]
    if paused:
        stream += [(T0 + HOUR / 2, PauseJourney("burst")), (T0 + 5 * HOUR, ResumeJourney("burst"))]
        stream.sort(key=lambda i: i[0] if isinstance(i, tuple) else i.timestamp)
    stream.append(tick(T0 + 6 * HOUR))
    delivering = backtest(defs, stream, channels={c: RecordingChannel() for c in CHANNELS},
                          keep_activity=True, render=True)
    assert_as_live(delivering, stream, defs)  # and the counting run counts the same
    for result in (delivering, backtest(defs, stream, keep_activity=True)):
        skipped = [a for a in result.engine.activities(T0, T0 + DAY)
                   if a.kind == "send_skipped" and a.detail == "catch-up limit"]
        if paused:
            # Both released at the resume, in one catch-up each: ten of twelve each.
            assert result.messages == {"email": 2 * limit}
            assert len(skipped) == 4
        else:
            # Each at its own instant (T0 + 2 h, T0 + 2 h 15).
            assert result.messages == {"email": 2 * limit}
            assert {(a.customer_id, a.at) for a in skipped} == {
                ("ann", T0 + 2 * HOUR), ("bob", T0 + 2 * HOUR + HOUR / 4)}


def test_wake_ups_of_different_instants_in_one_catch_up_are_limited_apart() -> None:
    """An email every minute: a window's catch-up fires the turns of many minutes in one pass,
    and none is held back, as none is by a worker on time."""
    loop = Journey(id="loop", trigger=EventTrigger("signed_up"), entry="mail", steps={
        "mail": Send("note", "email", next="wait"),
        "wait": Wait(timedelta(minutes=1), next="mail"),
    })
    defs = Definitions(journeys=(loop,), content=(note("Hi"),))
    stream: list[BacktestInput] = [signup("ann", T0), tick(T0 + 30 * timedelta(minutes=1))]
    result = backtest(defs, stream, keep_activity=True)
    assert result.messages == {"email": 31}
    assert_as_live(replay(defs, stream), stream, defs)


def test_a_change_comes_before_what_falls_due_at_its_instant_and_in_order_with_inputs_at_it(
) -> None:
    defs = drip(ResumeRule("skip"))
    minute = timedelta(minutes=1)
    at = T0 + 2 * HOUR + minute  # ann's wait ends here, zed's a minute before
    stream: list[BacktestInput] = [
        signup("zed", T0),
        signup("ann", T0 + minute),
        (at, PauseJourney("drip")),             # ann's wake-up is not before it: held
        signup("bob", at),                      # after the pause: not entered
        (at + HOUR, ResumeJourney("drip")),     # ann skipped (the skip rule)
        tick(at + 4 * HOUR),
    ]
    result = replay(defs, stream)
    assert_as_live(result, stream, defs)
    assert sent(result) == [("zed", "email", 1, "mail", at - minute)]
    assert result.engine.enrollments("bob") == []
    assert result.entered == {"drip": 2}
    # An input at that instant before the pause is decided first, after what fell due by
    # then: ann's wake-up fires before it, and bob enters.
    stream = [signup("zed", T0), signup("ann", T0 + minute), signup("bob", at),
              (at, PauseJourney("drip")), (at + HOUR, ResumeJourney("drip")),
              tick(at + 4 * HOUR)]
    result = replay(defs, stream)
    assert_as_live(result, stream, defs)
    assert sent(result) == [("ann", "email", 1, "mail", at),
                            ("bob", "email", 1, "mail", at + 2 * HOUR),
                            ("zed", "email", 1, "mail", at - minute)]


def test_a_wait_that_ends_before_the_pause_fires_before_it() -> None:
    defs = drip(ResumeRule("skip"))
    stream: list[BacktestInput] = [
        signup("ann", T0),
        (T0 + 2 * HOUR + timedelta(microseconds=1), PauseJourney("drip")),
    ]
    result = replay(defs, stream)
    assert_as_live(result, stream, defs)
    assert sent(result) == [("ann", "email", 1, "mail", T0 + 2 * HOUR)]


# --- content --------------------------------------------------------------------------------


def test_content_published_mid_stream_is_what_later_sends_render() -> None:
    defs = Definitions(journeys=(Journey(
        id="hello", trigger=EventTrigger("signed_up"), entry="wait",
        steps={"wait": Wait(HOUR / 2, next="mail"), "mail": Send("note", "email")},
    ),), content=(note("First draft"),))
    minute = timedelta(minutes=1)
    at = T0 + 80 * minute
    stream: list[BacktestInput] = [
        ProfileUpdate("ann", {"name": "Ann"}),
        signup("ann", T0),                  # mails at T0 + 30 min
        signup("bob", T0 + 40 * minute),    # mails at T0 + 70 min: before the publish
        signup("cat", T0 + 50 * minute),    # mails at T0 + 80 min: at the publish, after it
        (at, Publish(Definitions(content=(note("Second draft"),)))),
        signup("dan", at + HOUR),
        tick(at + 2 * HOUR),
    ]
    result = replay(defs, stream)
    assert_as_live(result, stream, defs)
    email = result.engine.channels["email"]
    assert isinstance(email, RecordingChannel)
    assert [(m.customer_id, m.fields["subject"], m.fields["text"], m.content_version)
            for m in email.messages] == [
        ("ann", "Hi Ann", "First draft", 1),
        ("bob", "Hi you", "First draft", 1),
        ("cat", "Hi you", "Second draft", 2),
        ("dan", "Hi you", "Second draft", 2),
    ]
    # Without rendering the same messages are decided, with no fields.
    unrendered = replay(defs, stream, render=False)
    assert_as_live(unrendered, stream, defs, render=False)
    assert result.messages == unrendered.messages == {"email": 4}


def test_a_segment_published_mid_stream_is_evaluated_for_everyone_at_the_publish() -> None:
    vip = Journey(id="vip", trigger=SegmentTrigger("gold"), entry="mail",
                  steps={"mail": Send("note", "email")})
    at = T0 + HOUR
    stream: list[BacktestInput] = [
        (T0, ProfileUpdate("ann", {"tier": "gold"})),
        signup("bob", T0),                      # onboard's wake-up at T0 + 1 day
        (at, Publish(Definitions(segments=(Segment("gold", attr("tier") == "gold"),),
                                 journeys=(vip,)))),
        (at + HOUR, ProfileUpdate("bob", {"tier": "gold"})),
        tick(T0 + 2 * DAY),
    ]
    result = replay(ONBOARD, stream)
    assert_as_live(result, stream, ONBOARD)
    # Ann is in the new segment from the publish on, not from her next input (she has none).
    assert sent(result) == [("ann", "email", 1, "mail", at),
                            ("bob", "email", 1, "hello", T0 + DAY),
                            ("bob", "email", 1, "mail", at + HOUR)]


# --- inactivity journeys -----------------------------------------------------------------------


def quiet(version: int = 1, after: timedelta = 5 * HOUR) -> Journey:
    return Journey(id="quiet", version=version, trigger=InactivityTrigger("signed_up", after),
                   entry="mail", steps={"mail": Send("note", "email")})


def test_an_inactivity_journey_published_mid_stream_counts_from_the_first_wake_up_after_it(
) -> None:
    # Ann was created before the publish: her quiet spell counts from her first transaction
    # after it, her wake-up at T0 + 1 day (a worker on time opens one then), not from the
    # instant a worker that fires that wake-up later happens to come (the counting run's
    # run_due at the end of the stream).
    stream: list[BacktestInput] = [
        signup("ann", T0),                      # onboard's wake-up at T0 + 1 day
        (T0 + HOUR, Publish(Definitions(journeys=(quiet(),)))),
        tick(T0 + 2 * DAY),
    ]
    result = replay(ONBOARD, stream)
    assert_as_live(result, stream, ONBOARD)
    assert sent(result) == [("ann", "email", 1, "hello", T0 + DAY),
                            ("ann", "email", 1, "mail", T0 + DAY + 5 * HOUR)]
    # A wake-up due before the publish arms nothing: the quiet spell counts from the next
    # transaction after it, here a profile update.
    stream = [
        signup("ann", T0),
        (T0 + DAY + HOUR, Publish(Definitions(journeys=(quiet(),)))),
        (T0 + DAY + 2 * HOUR, ProfileUpdate("ann", {"name": "Ann"})),
        tick(T0 + 2 * DAY),
    ]
    result = replay(ONBOARD, stream)
    assert_as_live(result, stream, ONBOARD)
    assert sent(result) == [("ann", "email", 1, "hello", T0 + DAY),
                            ("ann", "email", 1, "mail", T0 + DAY + 7 * HOUR)]


# --- schedules ---------------------------------------------------------------------------------


def digest() -> Journey:
    return Journey(id="digest", trigger=ScheduleTrigger("0 9 * * *"), entry="mail",
                   steps={"mail": Send("note", "email")})


def test_a_schedule_published_mid_stream_runs_from_its_publish_and_a_paused_one_catches_up(
) -> None:
    defs = Definitions(content=(note("Daily"),), journeys=(V1,))
    nine = datetime.combine(T0.date(), time(9), T0.tzinfo)
    stream: list[BacktestInput] = [
        signup("ann", T0),
        (nine, Publish(Definitions(journeys=(digest(),)))),   # the occurrence at 09:00 runs
        signup("bob", nine + HOUR),
        (nine + DAY, PauseJourney("digest")),          # the occurrence at its instant: held
        # Paused through the next two occurrences: the latest one missed runs at the resume,
        # as a worker polling right after it would run it.
        (nine + 2 * DAY + HOUR, ResumeJourney("digest")),
        tick(nine + 3 * DAY + HOUR),
    ]
    result = replay(defs, stream)
    assert_as_live(result, stream, defs)
    digests = [(cid, at) for cid, channel, _v, step, at in sent(result) if step == "mail"]
    assert sorted(digests, key=lambda d: (d[1], d[0])) == [
        ("ann", nine), ("ann", nine + 2 * DAY + HOUR), ("bob", nine + 2 * DAY + HOUR),
        ("ann", nine + 3 * DAY), ("bob", nine + 3 * DAY),
    ]


# --- on the back-test's own channels -----------------------------------------------------------


@pytest.mark.parametrize("window", [None, 40])
def test_the_demo_shop_across_changes_decides_what_a_live_engine_decides(
    monkeypatch: pytest.MonkeyPatch, window: int | None
) -> None:
    if window is not None:  # where windows end must change nothing
        import cjo.simulate

        monkeypatch.setattr(cjo.simulate, "WINDOW", window)
        monkeypatch.setattr(cjo.simulate, "WINDOW_CUSTOMERS", 7)
    items = shop_inputs(150, 12, 4)
    first = items[1].timestamp  # type: ignore[union-attr]
    cart = next(j for j in shop_definitions().journeys if j.id == "abandoned_cart")
    shorter = attrs.evolve(cart, version=2, steps={
        **cart.steps, "wait_purchase": attrs.evolve(cart.steps["wait_purchase"], timeout=HOUR),
    })
    reminder = next(c for c in shop_definitions().content if c.id == "cart_reminder")
    changes: list[tuple[datetime, BacktestInput]] = [
        (first + 2 * DAY, (first + 2 * DAY, Publish(
            Definitions(journeys=(shorter,)),
            running={"abandoned_cart": VersionChange.migrate({s: s for s in cart.steps})},
        ))),
        (first + 3 * DAY, (first + 3 * DAY, PauseJourney("welcome"))),
        (first + 4 * DAY, (first + 4 * DAY, Publish(Definitions(content=(attrs.evolve(
            reminder, variants=(*reminder.variants[:2], Variant("push", {"title": "Cart",
                                                                         "body": "Back?"}))
        ),))))),
        (first + 5 * DAY, (first + 5 * DAY, ResumeJourney("welcome"))),
    ]
    stream = merged(items, changes)
    recorded = replay(shop_definitions(), stream)
    engine = assert_as_live(recorded, stream, shop_definitions())
    counted = backtest(shop_definitions(), stream)
    received = {name: len(ch.messages) for name, ch in engine.channels.items()
                if isinstance(ch, RecordingChannel) and ch.messages}
    assert counted.messages == received and sum(received.values()) > 100
    assert counted.changes == 4


def merged(items: Sequence[BacktestInput], changes: Sequence[tuple[datetime, BacktestInput]]
           ) -> list[BacktestInput]:
    """``items`` with each change before the first event at or after its instant (and before
    the bare profile updates that event takes)."""
    out: list[BacktestInput] = []
    pending = list(changes)
    held: list[BacktestInput] = []
    for item in items:
        if isinstance(item, ProfileUpdate):
            held.append(item)
            continue
        at = item.timestamp if isinstance(item, Event) else item[0]
        while pending and pending[0][0] <= at:
            out.append(pending.pop(0)[1])
        out.extend(held)
        held = []
        out.append(item)
    return [*out, *held, *(change for _at, change in pending)]


def test_a_publish_naming_new_channels_and_actions_gets_counting_ones() -> None:
    alerts = Journey(id="alerts", trigger=EventTrigger("signed_up"), entry="ticket",
                     steps={"ticket": Action("open_ticket", {}, next="push"),
                            "push": Send("note", "push")})
    defs = Definitions(journeys=(V1,), content=(note("Hello"),))
    stream: list[BacktestInput] = [
        signup("ann", T0),
        (T0 + HOUR, Publish(Definitions(journeys=(alerts,)))),
        signup("bob", T0 + 2 * HOUR),
        tick(T0 + 2 * DAY),
    ]
    result = backtest(defs, stream)
    assert result.messages == {"action:open_ticket": 1, "email": 2, "push": 1}
    assert result.entered == {"alerts": 1, "onboard": 2}
    # Channels given must cover what a publish names, as a live engine's must.
    with pytest.raises(DefinitionError, match=r"input #1 \(Publish at .*\) / .*push"):
        backtest(defs, stream, channels={"email": RecordingChannel()},
                 actions={"open_ticket": lambda call: None})
    calls: list[Message] = []
    with_actions = backtest(defs, stream, actions={"open_ticket": calls.append})
    assert len(calls) == 1 and with_actions.messages == result.messages


# --- bad changes -------------------------------------------------------------------------------


def test_a_pause_or_resume_of_an_unknown_journey_is_refused_by_its_position() -> None:
    for change in (PauseJourney("onbaord"), ResumeJourney("nope")):
        with pytest.raises(UnknownJourneyError,
                           match=rf"input #1 \({type(change).__name__} at .*\): no journey"):
            backtest(ONBOARD, [signup("ann", T0), (T0 + HOUR, change)])
    # A journey published later in the stream is not known before.
    with pytest.raises(UnknownJourneyError, match=r"input #0 .* 'digest'"):
        backtest(ONBOARD, [(T0, PauseJourney("digest")),
                           (T0 + HOUR, Publish(Definitions(journeys=(digest(),))))])
    with pytest.raises(UsageError, match=r"input #0: the journey id of PauseJourney must be a "
                                         r"string, got 3"):
        backtest(ONBOARD, [(T0, PauseJourney(3))])  # type: ignore[arg-type]


def test_a_resume_of_a_journey_not_paused_is_refused_by_its_position() -> None:
    with pytest.raises(JourneyNotPausedError, match=r"^input #1 \(ResumeJourney at "
                                                    r"2026-.*\): journey 'onboard' is not paused"):
        backtest(ONBOARD, [signup("ann", T0), (T0 + HOUR, ResumeJourney("onboard"))])


def test_definitions_that_fail_validation_are_refused_by_position() -> None:
    broken = attrs.evolve(V2, steps={"pause": Wait(DAY, next="missing")})
    with pytest.raises(DefinitionError, match=r"input #2 \(Publish at .*\) / journey 'onboard'"):
        backtest(ONBOARD, [signup("ann", T0), signup("bob", T0),
                           (T0 + HOUR, Publish(Definitions(journeys=(broken,))))])
    # A migration map that misses a step of the old version.
    with pytest.raises(DefinitionError, match=r"input #1 \(Publish"):
        backtest(ONBOARD, [signup("ann", T0), (T0 + HOUR, Publish(
            Definitions(journeys=(V2,)), running={"onboard": VersionChange.migrate({})}))])
    with pytest.raises(DefinitionError, match=r"input #0 \(Publish .* expected a Definitions"):
        backtest(ONBOARD, [(T0, Publish([V2]))])  # type: ignore[arg-type]


def test_a_change_out_of_order_or_without_an_instant_is_refused_by_its_position() -> None:
    with pytest.raises(UsageError, match=r"input #2 .* earlier than the input before it"):
        backtest(ONBOARD, [signup("ann", T0), signup("bob", T0 + HOUR),
                           (T0, PauseJourney("onboard"))])
    with pytest.raises(UsageError, match=r"input #1 .* earlier than the input before it"):
        backtest(ONBOARD, [(T0 + HOUR, PauseJourney("onboard")), signup("ann", T0)])
    with pytest.raises(UsageError, match=r"input #0 .* earlier than start"):
        backtest(ONBOARD, [(T0, PauseJourney("onboard"))], start=T0 + HOUR)
    with pytest.raises(UsageError, match=r"input #1 is a PauseJourney without an instant"):
        backtest(ONBOARD, [signup("ann", T0), PauseJourney("onboard")])  # type: ignore[list-item]


def test_a_change_after_until_is_not_read_and_one_alone_sets_the_run() -> None:
    stream: list[BacktestInput] = [signup("ann", T0), (T0 + 2 * DAY, PauseJourney("onbaord"))]
    result = backtest(ONBOARD, stream, until=T0 + DAY)
    assert (result.inputs, result.changes, result.messages) == (1, 0, {"email": 1})
    alone = backtest(ONBOARD, [(T0, PauseJourney("onboard"))])
    assert (alone.start, alone.until, alone.inputs, alone.changes) == (T0, T0, 1, 1)
    assert alone.engine.definitions.paused[0].since == T0
