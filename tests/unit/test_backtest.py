"""cjo.simulate.backtest: inputs, instants, results."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

import attrs
import pytest

from cjo.analytics.report import journey_report
from cjo.analytics.segments import segment_sizes
from cjo.channels.base import Channel, DeliveryResult, Message
from cjo.channels.recording import RecordingChannel
from cjo.clock import ManualClock
from cjo.conditions import attr, prop
from cjo.demo import profile_from_signup, shop_definitions, shop_workload
from cjo.engine import Engine
from cjo.errors import (
    ClockError,
    DefinitionError,
    UnknownChannelError,
    UnknownTopicError,
    UsageError,
)
from cjo.model.content import ContentItem, Variant
from cjo.model.definitions import Definitions
from cjo.model.events import Event, ProfileUpdate
from cjo.model.journey import Goal, Journey
from cjo.model.policies import QuietHours, Topic
from cjo.model.segments import Segment
from cjo.model.steps import Branch, Case, Send, Wait, WaitForEvent
from cjo.model.triggers import EventTrigger
from cjo.simulate import BacktestInput, BacktestResult, Publish, backtest
from cjo.storage.memory import InMemoryStorage

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

CONTENT = (
    ContentItem("hello", (Variant("email", {"subject": "Hi {{ profile.name | default: 'you' }}",
                                            "text": "{{ event.item }}"}),
                          Variant("sms", {"text": "{{ profile.tier }}"}))),
)


def cart() -> Definitions:
    """An hour to buy, else an email; goal: a purchase."""
    return Definitions(journeys=(Journey(
        id="cart",
        entry="wait",
        trigger=EventTrigger("cart"),
        steps={
            "wait": WaitForEvent("buy", HOUR, on_timeout="email"),
            "email": Send("hello", "email"),
        },
        goal=Goal("buy"),
    ),), content=CONTENT)


def by_tier() -> Definitions:
    """On sign-up: an SMS for gold customers, an email for everyone else."""
    return Definitions(journeys=(Journey(
        id="tiers",
        entry="branch",
        trigger=EventTrigger("signup"),
        steps={
            "branch": Branch((Case(attr("tier") == "gold", "sms"),), default="email"),
            "sms": Send("hello", "sms"),
            "email": Send("hello", "email"),
        },
    ),), content=CONTENT)


def _live_cart(stream: list[Event]) -> Engine:
    """A live engine running ``cart()`` over ``stream``, each event at its own timestamp,
    with a worker on time before each."""
    clock = ManualClock(T0)
    live = Engine(InMemoryStorage(), recording(), clock)
    live.publish(cart())
    for event in stream:
        clock.set(event.timestamp)
        live.run_due()
        live.handle_event(event)
    return live


def ev(name: str, at: datetime, customer: str = "c1", event_id: str | None = None,
       **props: object) -> Event:
    return Event(customer, name, at, props, event_id or f"{customer}-{name}-{at:%H%M%S}")


def recording() -> dict[str, RecordingChannel]:
    return {"email": RecordingChannel(), "sms": RecordingChannel()}


# --- ordering and arguments --------------------------------------------------------------------


def test_an_input_out_of_order_is_refused_by_its_position() -> None:
    stream = [ev("cart", T0), ev("buy", T0 + HOUR), ev("cart", T0 + HOUR, "c2"),
              ev("cart", T0, "c3")]
    with pytest.raises(UsageError, match=r"input #3 .* earlier than the input before it"):
        backtest(cart(), stream)



def test_a_consent_event_naming_an_undeclared_topic_is_refused() -> None:
    news = attrs.evolve(cart(), topics=(Topic("newsletter"),))
    stream = [ev("subscribed", T0, topic="newsletter"), ev("cart", T0),
              ev("unsubscribed", T0 + HOUR, topic="newsleter")]
    with pytest.raises(UnknownTopicError,
                       match=r"input #2: topic 'newsleter' is not declared .*'newsletter'"):
        backtest(news, stream)
    assert backtest(news, stream, until=T0).inputs == 2  # not read: not refused
    # Declared by a publish in the stream before it: taken.
    later = [ev("cart", T0), (T0, Publish(Definitions(topics=(Topic("newsleter"),)))),
             ev("unsubscribed", T0 + HOUR, topic="newsleter")]
    assert backtest(news, later).inputs == 3


def test_a_consent_event_naming_an_unknown_channel_is_refused() -> None:
    # As a live engine refuses it: the channels are the run's (here, those the definitions
    # name) and those the definitions of the event's instant name.
    stream = [ev("cart", T0), ev("channel_blocked", T0 + HOUR, channel="emial")]
    with pytest.raises(UnknownChannelError,
                       match=r"input #1: channel 'emial' is neither registered nor named by the "
                             r"published definitions \(known: 'email'\)"):
        backtest(cart(), stream)
    with pytest.raises(UnknownChannelError, match=r"\(known: 'email', 'sms'\)"):
        backtest(cart(), stream, channels=recording())
    assert backtest(cart(), stream, until=T0).inputs == 1  # not read: not refused
    for name in ("subscribed", "unsubscribed", "channel_unblocked", "bounced"):
        with pytest.raises(UnknownChannelError, match="input #0: channel 'emial'"):
            backtest(cart(), [ev(name, T0, channel="emial")])
    # Named by a publish in the stream before it, or registered: taken.
    later = [ev("cart", T0), (T0, Publish(by_tier())),
             ev("channel_blocked", T0 + HOUR, channel="sms")]
    assert backtest(cart(), later).inputs == 3
    pushed = [ev("cart", T0), ev("channel_blocked", T0 + HOUR, channel="push")]
    result = backtest(cart(), pushed, channels={**recording(), "push": RecordingChannel()})
    assert result.engine.customer_state("c1").blocked == {"push": "blocked"}  # type: ignore[union-attr]


def test_an_input_before_start_is_refused() -> None:
    with pytest.raises(UsageError, match=r"input #0 .* earlier than start"):
        backtest(cart(), [ev("cart", T0)], start=T0 + HOUR)


@pytest.mark.parametrize(("bound", "at"), [
    ("until", datetime.max.replace(tzinfo=UTC)),        # "run everything": overflowed
    ("until", datetime(9000, 1, 1, tzinfo=UTC)),        # a paused journey's held wake-ups
    ("start", datetime(1899, 12, 31, tzinfo=UTC)),
])
def test_start_and_until_outside_the_timestamp_range_are_refused(
    bound: str, at: datetime
) -> None:
    # Past the range event timestamps fall in, the engine overflowed adding a lease to the
    # instant (OverflowError), or fired a paused journey's held wake-ups (due at the range's
    # end) for ever.
    with pytest.raises(UsageError, match=(
        rf"{bound} .* is outside the range a back-test can run in: from 1900-01-01 up to, "
        r"not including, 9000-01-01 \(UTC\)"
    )):
        backtest(cart(), [ev("cart", T0)], **{bound: at})
    last = datetime(9000, 1, 1, tzinfo=UTC) - timedelta(microseconds=1)
    assert backtest(cart(), [ev("cart", T0)], until=last).messages == {"email": 1}


def test_an_input_of_another_kind_is_refused_by_its_position() -> None:
    with pytest.raises(UsageError, match=r"input #1 is a str"):
        backtest(cart(), [ev("cart", T0), "cart"])  # type: ignore[list-item]
    with pytest.raises(UsageError, match=r"input #0 is a tuple"):
        backtest(cart(), [(T0, "not an update")])  # type: ignore[list-item]


def test_an_input_of_a_lookalike_class_is_named_apart_from_cjos_own() -> None:
    # An analyst's own record class called Event: "input #1 is a Event: a back-test reads
    # Event..." would leave them puzzled; the message names where it comes from, and shows it.
    @attrs.frozen
    class Event:  # the point: the same name as cjo's
        customer_id: str

    with pytest.raises(UsageError) as caught:
        backtest(cart(), [ev("cart", T0), Event("ann")])  # type: ignore[list-item]
    message = str(caught.value)
    assert message.startswith(f"input #1 is a {__name__}.")
    assert "Event(customer_id='ann')" in message
    with pytest.raises(UsageError, match=r"^input #0 is a dict \{'name': 'cart'\}: "):
        backtest(cart(), [{"name": "cart"}])  # type: ignore[list-item]


def test_arguments_are_checked() -> None:
    with pytest.raises(UsageError, match="progress_every"):
        backtest(cart(), [], progress_every=0)
    with pytest.raises(UsageError, match="before start"):
        backtest(cart(), [], start=T0, until=T0 - HOUR)
    with pytest.raises(ClockError):
        backtest(cart(), [], start=datetime(2026, 3, 2))  # naive on purpose


def test_arguments_of_the_wrong_kind_are_refused_before_the_run() -> None:
    stream = [Event("ann", "added_to_cart", T0, event_id="1")]
    with pytest.raises(DefinitionError, match="backtest definitions: expected a Definitions, "
                                              "got NoneType"):
        backtest(None, stream)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="expected a Definitions, got tuple"):
        backtest(cart().journeys, stream)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="inputs must be an iterable of Event, ProfileUpdate "
                                         "and \\(datetime, change\\) items, got NoneType"):
        backtest(cart(), None)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"inputs must be an iterable .* got Event"):
        backtest(cart(), stream[0])  # type: ignore[arg-type]
    read = []
    # Refused before anything is read: not after the whole run, with its result lost.
    with pytest.raises(UsageError, match="progress must be callable"):
        backtest(cart(), (read.append(e) or e for e in stream), progress=5)  # type: ignore[arg-type, func-returns-value]
    assert read == []
    with pytest.raises(UsageError, match="progress_every must be at least 1, got '10'"):
        backtest(cart(), stream, progress_every="10")  # type: ignore[arg-type]
    # A string is truthy: "no" would keep the whole log.
    with pytest.raises(UsageError, match="keep_activity must be True or False, got str 'no'"):
        backtest(cart(), stream, keep_activity="no")  # type: ignore[arg-type]


def test_equal_timestamps_are_in_order() -> None:
    result = backtest(cart(), [ev("cart", T0), ev("buy", T0)])
    assert result.goals == {"cart": 1}
    assert result.messages == {}


# --- instants ----------------------------------------------------------------------------------


def test_each_input_is_decided_at_its_own_timestamp() -> None:
    result = backtest(cart(), [ev("cart", T0), ev("cart", T0 + 5 * HOUR, "c2")])
    [first, second] = sorted(result.engine.enrollments("c1") + result.engine.enrollments("c2"),
                             key=lambda e: e.customer_id)
    assert first.entered_at == T0
    assert second.entered_at == T0 + 5 * HOUR
    # c1's wait ended at its own instant (T0 + 1h), well before c2's cart.
    assert first.ended_at == T0 + HOUR
    assert result.messages == {"email": 1}


def test_a_wake_up_due_at_an_inputs_instant_fires_before_it() -> None:
    # The timeout and the purchase share an instant: the timeout fires first (as a live
    # engine's catch-up would), so the email is sent and the journey completes; the purchase
    # comes too late for it.
    channels = recording()
    result = backtest(cart(), [ev("cart", T0), ev("buy", T0 + HOUR)], channels=channels)
    assert [m.created_at for m in channels["email"].messages] == [T0 + HOUR]
    assert result.ended == {"completed": 1}
    assert result.goals == {}


def test_a_purchase_a_moment_before_the_timeout_wins() -> None:
    result = backtest(cart(), [ev("cart", T0), ev("buy", T0 + HOUR - timedelta(seconds=1))])
    assert result.messages == {}
    assert result.ended == {"converted": 1}


def test_until_fires_what_is_due_and_stops_reading() -> None:
    stream = [ev("cart", T0), ev("cart", T0 + 3 * HOUR, "c2"), ev("cart", T0 + 9 * HOUR, "c3")]
    result = backtest(cart(), stream, until=T0 + 2 * HOUR)
    assert result.inputs == 1  # the input after until ends the run: it and the rest are unread
    assert result.until == T0 + 2 * HOUR
    assert result.messages == {"email": 1}
    assert result.engine.clock.now() == T0 + 2 * HOUR


def test_without_until_the_run_ends_at_the_last_input() -> None:
    result = backtest(cart(), [ev("cart", T0), ev("page", T0 + 30 * timedelta(minutes=1))])
    assert (result.start, result.until) == (T0, T0 + 30 * timedelta(minutes=1))
    assert result.messages == {}  # the timeout (T0 + 1h) is after the end
    assert result.reports["cart"].active == 1


def test_an_empty_stream() -> None:
    result = backtest(cart(), [])
    assert (result.start, result.until, result.inputs) == (None, None, 0)
    assert result.reports["cart"].entered == 0
    result = backtest(cart(), [], start=T0, until=T0 + HOUR)
    assert (result.start, result.until) == (T0, T0 + HOUR)


# --- profile updates ---------------------------------------------------------------------------


def test_a_bare_profile_update_takes_the_next_events_instant() -> None:
    channels = recording()
    stream: list[BacktestInput] = [ProfileUpdate("c1", {"tier": "gold"}), ev("signup", T0 + HOUR)]
    backtest(by_tier(), stream, channels=channels, render=True)
    [sms] = channels["sms"].messages
    assert sms.fields == {"text": "gold"}
    assert sms.created_at == T0 + HOUR


def test_a_timed_profile_update_applies_at_its_instant() -> None:
    stream: list[BacktestInput] = [(T0, ProfileUpdate("c1", {"tier": "gold"})),
                            ev("signup", T0 + HOUR, "c2"),
                            (T0 + 2 * HOUR, ProfileUpdate("c2", {"tier": "gold"})),
                            ev("signup", T0 + 3 * HOUR)]
    result = backtest(by_tier(), stream)
    assert result.messages == {"email": 1, "sms": 1}  # c2 signed up before turning gold
    assert result.profile_updates == 2
    assert result.engine.customer_state("c1").created_at == T0  # type: ignore[union-attr]


def test_trailing_profile_updates_apply_at_the_last_instant() -> None:
    result = backtest(by_tier(), [ev("signup", T0), ProfileUpdate("c2", {"tier": "gold"})])
    state = result.engine.customer_state("c2")
    assert state is not None
    assert state.created_at == T0
    assert state.profile is not None
    assert state.profile.attributes == {"tier": "gold"}


def test_profile_updates_alone_need_an_instant() -> None:
    with pytest.raises(UsageError, match="no timestamped input"):
        backtest(by_tier(), [ProfileUpdate("c1", {"tier": "gold"})])
    result = backtest(by_tier(), [ProfileUpdate("c1", {"tier": "gold"})], until=T0)
    assert result.engine.customer_state("c1").created_at == T0  # type: ignore[union-attr]


# --- results -----------------------------------------------------------------------------------


def test_the_result_counts_and_reports() -> None:
    stream = [ev("cart", T0), ev("cart", T0, "c2"), ev("buy", T0 + HOUR / 2, "c2"),
              ev("page", T0 + 2 * HOUR), ev("cart", T0 + 2 * HOUR, "c3")]
    result = backtest(cart(), stream, until=T0 + 4 * HOUR)
    assert isinstance(result, BacktestResult)
    assert (result.inputs, result.events, result.profile_updates) == (5, 5, 0)
    assert result.messages == {"email": 2}
    assert result.messages_total == 2
    assert result.entered == {"cart": 3}
    assert result.ended == {"completed": 2, "converted": 1}
    assert result.goals == {"cart": 1}
    report = result.reports["cart"]
    assert (report.entered, report.converted, report.completed) == (3, 1, 2)
    assert "cart" in result.table()
    assert result.wall_seconds >= result.due_seconds >= 0
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        result.inputs = 0  # type: ignore[misc]


def test_reports_follow_the_latest_version() -> None:
    [v1] = cart().journeys
    v2 = attrs.evolve(v1, version=2, steps={**v1.steps, "email": Send("hello", "sms")})
    defs = attrs.evolve(cart(), journeys=(v1, v2))
    result = backtest(defs, [ev("cart", T0)], until=T0 + 2 * HOUR)
    assert list(result.reports) == ["cart"]
    assert result.messages == {"sms": 1}


def test_default_channels_count_and_deliver_nothing() -> None:
    result = backtest(cart(), [ev("cart", T0)], until=T0 + 2 * HOUR)
    assert set(result.engine.channels) == {"email"}
    assert result.messages == {"email": 1}
    assert result.engine.channels["email"].sent == 1  # type: ignore[attr-defined]
    # Counted, not recorded: the outbox holds nothing to deliver, retry or read back.
    key = f"{result.engine.enrollments('c1')[0].id}:email:1"
    assert result.engine.storage.outbox_entry(key) is None
    assert result.engine.dispatch_pending() == 0


def test_given_channels_get_every_message_through_the_outbox() -> None:
    channels = recording()
    result = backtest(cart(), [ev("cart", T0)], until=T0 + 2 * HOUR, channels=channels)
    [message] = channels["email"].messages
    entry = result.engine.storage.outbox_entry(message.idempotency_key)
    assert entry is not None and entry.status == "delivered"


def test_rendering_is_off_unless_asked() -> None:
    for render, fields in ((False, {}), (True, {"subject": "Hi you", "text": "shoes"})):
        channels = recording()
        backtest(cart(), [ev("cart", T0, item="shoes")], until=T0 + HOUR, channels=channels,
                 render=render)
        assert [m.fields for m in channels["email"].messages] == [fields]


def test_the_activity_log_is_kept_only_when_asked() -> None:
    stream = [ev("cart", T0)]
    kept = backtest(cart(), stream, until=T0 + HOUR, keep_activity=True)
    assert [a.kind for a in kept.engine.activities(T0, T0 + HOUR)] == ["entered", "step"]
    # Without it, reading the log is refused rather than answered with an empty log, and so
    # is what is computed from it (segment sizes at earlier instants).
    result = backtest(cart(), stream, until=T0 + HOUR)
    assert result.reports["cart"].entered == 1
    with pytest.raises(UsageError, match="keep_activity=True"):
        result.engine.activities(T0, T0 + 2 * HOUR)
    with pytest.raises(UsageError, match="keep_activity=True"):
        segment_sizes(result.engine.storage, ["gold"], [T0], T0 + HOUR)


def test_a_run_longer_than_the_log_retention_keeps_the_whole_log() -> None:
    # Two years: a live engine prunes the log past ``Retention.activity`` (400 days); the log
    # a back-test was asked to keep covers the whole run, as do segment sizes read from it.
    day = 24 * HOUR
    definitions = attrs.evolve(cart(), segments=(Segment("gold", attr("tier") == "gold"),))
    stream: list[BacktestInput] = [
        (T0, ProfileUpdate("c1", {"tier": "gold"})),
        ev("cart", T0, event_id="early"),
        (T0 + 2 * day, ProfileUpdate("c1", {"tier": "silver"})),
        ev("cart", T0 + 730 * day, event_id="late"),
    ]
    result = backtest(definitions, stream, until=T0 + 731 * day, keep_activity=True)
    assert [(a.kind, a.at) for a in result.engine.activities(T0, T0 + day, journey_id="cart")] == [
        ("entered", T0), ("step", T0), ("timeout", T0 + HOUR), ("step", T0 + HOUR),
        ("sent", T0 + HOUR), ("completed", T0 + HOUR),
    ]
    sizes = result.engine.segment_sizes(["gold"], T0 + day, T0 + 3 * day)["gold"]
    assert [size.size for size in sizes] == [1, 0, 0]


def test_progress_is_reported() -> None:
    calls: list[tuple[int, int | None, datetime]] = []
    stream = [ev("page", T0 + i * HOUR, event_id=f"p{i}") for i in range(7)]
    backtest(cart(), stream, progress=lambda *a: calls.append(a), progress_every=3)
    assert calls == [(3, 7, T0 + 2 * HOUR), (6, 7, T0 + 5 * HOUR), (7, 7, T0 + 6 * HOUR)]

    def generated() -> Iterator[Event]:
        yield from stream

    calls.clear()
    backtest(cart(), generated(), progress=lambda *a: calls.append(a), progress_every=5)
    assert calls == [(5, None, T0 + 4 * HOUR), (7, None, T0 + 6 * HOUR)]


def test_a_repeated_event_id_changes_nothing() -> None:
    result = backtest(cart(), [ev("cart", T0, event_id="x"), ev("cart", T0 + 2 * HOUR,
                                                                  event_id="x")])
    assert result.entered == {"cart": 1}


@pytest.mark.parametrize("given_channels", [False, True], ids=["counted", "delivered"])
def test_an_event_id_is_forgotten_after_its_retention_as_live(given_channels: bool) -> None:
    # Kept for de-duplication for Retention.event_ids (7 days, the end included), then
    # handled again: in a back-test as by a live engine whose worker prunes, whatever the
    # length of the back-test's windows.
    day = timedelta(days=1)
    stream = [ev("cart", T0 + n * day, event_id=eid) for n, eid in (
        (0, "x"), (5, "y"), (6, "x"), (10, "x"), (16, "x"), (17, "x"), (18, "x"))]
    live = _live_cart(stream)
    # x at day 0, y, x at day 10 (7 days after is still inside), x at day 18.
    assert journey_report(live.storage, cart().journeys[0]).entered == 4
    result = backtest(cart(), stream, channels=recording() if given_channels else None)
    assert result.entered == {"cart": 4}
    # The engine the result gives remembers the ids still kept, as a live one would.
    assert result.engine.handle_event(ev("cart", T0 + 18 * day, "c2", event_id="x")).duplicate


def test_an_event_that_matters_to_no_customer_costs_no_record() -> None:
    result = backtest(cart(), [ev("page", T0), ev("buy", T0)])
    assert result.engine.customer_state("c1") is None
    assert result.events == 2


def test_a_condition_on_event_properties_is_read_at_each_event() -> None:
    defs = attrs.evolve(cart(), journeys=(attrs.evolve(
        cart().journeys[0], trigger=EventTrigger("cart", prop("price") > 10)
    ),))
    result = backtest(defs, [ev("cart", T0, price=5), ev("cart", T0, "c2", price=50)])
    assert result.entered == {"cart": 1}


# --- against a live engine ---------------------------------------------------------------------


def shop_inputs(customers: int, days: int, seed: int) -> list[Event | ProfileUpdate]:
    """The demo shop's events, each sign-up preceded by its profile."""
    items: list[Event | ProfileUpdate] = []
    for event in shop_workload(customers, days, seed):
        if event.name == "signed_up":
            items.append(profile_from_signup(event))
        items.append(event)
    return items


def test_the_demo_shop_decides_what_a_live_engine_decides() -> None:
    items = shop_inputs(300, 10, 7)
    result = backtest(shop_definitions(), items, render=True,
                      channels={c: RecordingChannel() for c in ("email", "sms", "push")})

    clock = ManualClock(items[1].timestamp)  # type: ignore[union-attr]
    engine = Engine(InMemoryStorage(), {c: RecordingChannel() for c in ("email", "sms", "push")},
                    clock)
    engine.publish(shop_definitions())
    pending: list[ProfileUpdate] = []
    for item in items:
        if isinstance(item, ProfileUpdate):
            pending.append(item)
            continue
        clock.set(item.timestamp)
        engine.run_due()
        engine.handle_events([*pending, item])
        pending = []
    engine.run_due()

    def sent(e: Engine) -> list[tuple[str, str, dict[str, str]]]:
        return sorted((m.idempotency_key, m.channel, dict(m.fields))
                      for ch in e.channels.values()
                      for m in ch.messages)  # type: ignore[attr-defined]

    assert sent(result.engine) == sent(engine)
    assert result.messages_total == len(sent(engine)) > 100
    for journey in shop_definitions().journeys:
        assert result.reports[journey.id] == journey_report(engine.storage, journey)


def test_counting_channels_count_what_recording_channels_receive() -> None:
    # On its own counting channels a back-test builds no message, and only counts each send:
    # the counts must be those of channels that receive every message.
    items = shop_inputs(300, 21, 3)
    recorded = backtest(shop_definitions(), items,
                        channels={c: RecordingChannel() for c in ("email", "sms", "push")})
    counted = backtest(shop_definitions(), items)
    received = {name: len(ch.messages)  # type: ignore[attr-defined]
                for name, ch in recorded.engine.channels.items()}
    assert counted.messages == recorded.messages == received
    assert {name: ch.sent for name, ch in counted.engine.channels.items()} == received  # type: ignore[attr-defined]
    assert set(received) == {"email", "sms", "push"} and min(received.values()) > 10
    assert counted.reports == recorded.reports


def test_an_outcome_that_records_no_messages_counts_sends_and_merges_counts() -> None:
    from cjo.outcome import OutcomeBuilder

    one = OutcomeBuilder(record_messages=False, sent={"email": 2})
    other = OutcomeBuilder(record_messages=False, sent={"email": 1, "sms": 4})
    one.absorb(other)
    assert one.sent == {"email": 3, "sms": 4} and one.messages == []


def ticketing() -> Definitions:
    """On a complaint: open a ticket now (an action), and again after an hour (after a wait),
    then email."""
    from cjo.model.steps import Action, Wait

    return Definitions(journeys=(Journey(
        id="care", entry="ticket", trigger=EventTrigger("complained"),
        steps={
            "ticket": Action("open_ticket", {"about": "{{ event.topic }}"}, next="wait"),
            "wait": Wait(HOUR, next="again"),
            "again": Action("open_ticket", {"about": "follow-up"}, next="email"),
            "email": Send("hello", "email"),
        },
    ),), content=CONTENT)


def test_actions_are_counted_and_not_called_unless_given() -> None:
    stream = [ev("complained", T0, topic="late", item="socks"),
              ev("complained", T0 + HOUR / 2, "c2", topic="rude", item="hat")]
    counted = backtest(ticketing(), stream, until=T0 + 2 * HOUR)
    # Both calls of both customers: the first in the event's window, the second at a wake-up.
    assert counted.messages == {"action:open_ticket": 4, "email": 2}
    assert counted.ended == {"completed": 2}

    calls: list[tuple[str, str]] = []

    def open_ticket(call: Message) -> None:
        calls.append((call.customer_id, call.fields.get("about", "")))  # "" unrendered

    given = backtest(ticketing(), stream, until=T0 + 2 * HOUR, render=True,
                     actions={"open_ticket": open_ticket})
    assert given.messages == counted.messages
    assert sorted(calls) == [("c1", "follow-up"), ("c1", "late"),
                             ("c2", "follow-up"), ("c2", "rude")]
    # With channels of its own too, the calls are made as well.
    calls.clear()
    channels = recording()
    backtest(ticketing(), stream, until=T0 + 2 * HOUR, channels=channels,
             actions={"open_ticket": open_ticket})
    assert len(calls) == 4 and len(channels["email"].messages) == 2


@pytest.mark.parametrize(("inputs", "customers"), [(40, 10_000), (10_000, 7), (1, 1)])
def test_windows_of_any_size_decide_alike(
    monkeypatch: pytest.MonkeyPatch, inputs: int, customers: int
) -> None:
    # A window ends after so many inputs or customers; where it ends must change nothing.
    import cjo.simulate

    items = shop_inputs(200, 21, 5)

    def run() -> tuple[BacktestResult, list[tuple[str, str, datetime]], dict[str, object]]:
        channels = {c: RecordingChannel() for c in ("email", "sms", "push")}
        result = backtest(shop_definitions(), items, channels=channels)
        sent = sorted((m.idempotency_key, m.channel, m.created_at)
                      for ch in channels.values() for m in ch.messages)
        engine = result.engine
        customers_ = {i.customer_id for i in items}
        return result, sent, {c: engine.enrollments(c) for c in sorted(customers_)}

    one_window, sent, enrollments = run()
    monkeypatch.setattr(cjo.simulate, "WINDOW", inputs)
    monkeypatch.setattr(cjo.simulate, "WINDOW_CUSTOMERS", customers)
    many, sent_many, enrollments_many = run()
    assert many == one_window  # counts and reports
    assert sent_many == sent and len(sent) > 100
    assert enrollments_many == enrollments


def test_the_garbage_collector_is_restored() -> None:
    assert gc.isenabled()
    backtest(cart(), [ev("cart", T0)])
    assert gc.isenabled()
    with pytest.raises(UsageError):
        backtest(cart(), [ev("cart", T0 + HOUR), ev("cart", T0)])
    assert gc.isenabled()
    gc.disable()
    try:
        backtest(cart(), [ev("cart", T0)])
        assert not gc.isenabled()  # a host that runs without the collector keeps it off
    finally:
        gc.enable()


def test_a_consent_event_of_a_customer_in_no_journey_counts_as_it_would_live() -> None:
    # The customer unsubscribes from email before they ever enter: the reminder an hour after
    # their cart is not sent, in the back-test as by a live engine.
    stream = [ev("unsubscribed", T0, channel="email"), ev("cart", T0 + timedelta(minutes=1))]
    assert backtest(cart(), stream[1:], until=T0 + 2 * HOUR).messages == {"email": 1}
    result = backtest(cart(), stream, until=T0 + 2 * HOUR)
    assert result.messages == {}
    clock = ManualClock(T0)
    live = Engine(channels=recording(), clock=clock)
    live.publish(cart())
    for event in stream:
        clock.set(event.timestamp)
        live.handle_event(event)
    clock.set(T0 + 2 * HOUR)
    live.run_due()
    assert live.channels["email"].messages == []  # type: ignore[attr-defined]
    assert result.reports["cart"].entered == 1


# --- channels, deliveries and what the result counts -------------------------------------------


def test_fallback_and_policy_channels_get_counting_channels() -> None:
    # Every channel the definitions name (a fallback, a cap's, quiet hours') gets its own
    # counting channel, or the definitions would be refused for naming unregistered ones.
    from cjo.model.policies import FrequencyCap

    [journey] = cart().journeys
    defs = attrs.evolve(
        cart(),
        journeys=(attrs.evolve(journey, steps={
            **journey.steps, "email": Send("hello", "email", fallbacks=("sms",))}),),
        caps=(FrequencyCap("push_daily", 1, period="calendar_day", channel="push"),),
        quiet_hours=(QuietHours("night", time(22), time(7), channels=("webhook",)),),
    )
    stream = [ev("unsubscribed", T0, channel="email"), ev("cart", T0 + HOUR)]
    result = backtest(defs, stream, until=T0 + 3 * HOUR)
    assert set(result.engine.channels) == {"email", "push", "sms", "webhook"}
    assert result.messages == {"sms": 1}  # email is blocked: the fallback is used


class Failing(Channel):
    """Fails each message's first ``transient`` attempts transiently, then as ``then`` says."""

    def __init__(self, transient: int = 0, then: DeliveryResult | None = None) -> None:
        self.transient, self.then = transient, then or DeliveryResult("delivered")
        self.attempts: list[str] = []

    def send(self, message: Message) -> DeliveryResult:
        self.attempts.append(message.idempotency_key)
        if self.attempts.count(message.idempotency_key) <= self.transient:
            return DeliveryResult.transient("busy")
        return self.then


def twice() -> Definitions:
    """An email at once on each ``cart``, and another an hour later."""
    return Definitions(journeys=(Journey(
        id="twice", entry="now", trigger=EventTrigger("cart"),
        steps={"now": Send("hello", "email", next="wait"),
               "wait": Wait(HOUR, next="later"), "later": Send("hello", "email")},
    ),), content=CONTENT)


def run_live(defs: Definitions, stream: list[Event], until: datetime, channel: Channel,
             customers: tuple[str, ...], **options: Any) -> Engine:
    """A live engine (with ``options``) whose worker is never late: it fires every wake-up
    and retries every delivery at its own instant; each event is handled at its own
    timestamp."""
    clock = ManualClock(stream[0].timestamp)
    engine = Engine(InMemoryStorage(), {"email": channel}, clock, **options)
    engine.publish(defs)

    def next_instant() -> datetime | None:
        retries = [e.available_at for c in customers for e in engine.storage.customer_outbox(c)
                   if e.status == "pending"]
        return min([t for t in (engine.storage.next_wake_at(), *retries) if t is not None],
                   default=None)

    def worker(until: datetime) -> None:
        while (at := next_instant()) is not None and at <= until:
            clock.set(at)
            engine.run_due()
            engine.dispatch_pending()

    for event in stream:
        worker(event.timestamp)
        clock.set(event.timestamp)
        engine.handle_event(event)
    worker(until)
    return engine


def deliveries(engine: Engine, customers: tuple[str, ...]) -> dict[str, object]:
    return {c: (sorted(engine.storage.customer_outbox(c), key=lambda e: e.message.idempotency_key),
                attrs.evolve(engine.customer_state(c), revision=0))  # type: ignore[arg-type]
            for c in customers}


@pytest.mark.parametrize("then", [
    DeliveryResult.permanent("550 mailbox unavailable"),  # blocks the channel at once
    DeliveryResult("delivered"),
])
def test_deliveries_happen_and_are_retried_at_their_own_instants(then: DeliveryResult) -> None:
    # A delivery acts from its own instant on, as it does live: a retry after its back-off,
    # and a channel blocked by a permanent failure before the customer's next send.
    stream = [ev("cart", T0, item="hat"), ev("cart", T0 + HOUR / 2, "c2", item="cap")]
    until, customers = T0 + 2 * HOUR, ("c1", "c2")
    channel, live_channel = Failing(1, then), Failing(1, then)
    result = backtest(twice(), stream, until=until, channels={"email": channel}, render=True)
    live = run_live(twice(), stream, until, live_channel, customers)
    assert channel.attempts == live_channel.attempts
    assert len(channel.attempts) == (4 if then.status == "permanent" else 8)
    assert deliveries(result.engine, customers) == deliveries(live, customers)
    assert result.engine.dead_letters() == live.dead_letters()
    assert result.reports["twice"] == journey_report(live.storage, twice().journeys[0])


def test_the_result_counts_what_deliveries_end() -> None:
    # An action that finally fails under on_failure="exit" ends its enrollment after the
    # delivery: the result counts that end, as the report does.
    from cjo.model.steps import Action

    defs = Definitions(journeys=(Journey(
        id="care", entry="ticket", trigger=EventTrigger("complained"),
        steps={"ticket": Action("open_ticket", on_failure="exit", next="wait"),
               "wait": Wait(HOUR)},
    ),))
    result = backtest(defs, [ev("complained", T0)], until=T0 + 2 * HOUR,
                      actions={"open_ticket": lambda call: DeliveryResult.permanent("down")})
    assert result.reports["care"].exited == {"action open_ticket failed": 1}
    assert result.ended == {"exited": 1}
    assert result.entered == {"care": 1} and result.goals == {}


def test_feedback_on_a_fallback_message_acts_on_its_channel_as_live() -> None:
    """With channels given, the outbox holds the message a feedback event names: a hard bounce
    blocks the channel the message went out on (its fallback), as a live engine does."""
    news = ContentItem("news", variants=(Variant("email", {"subject": "x", "text": "x"}),
                                         Variant("sms", {"text": "x"})))
    definitions = Definitions(
        journeys=(Journey("digest", "send", {"send": Send("news", "sms", fallbacks=("email",))},
                          trigger=EventTrigger("digest_ready")),),
        content=(news,),
    )
    clock = ManualClock(T0)
    live = Engine(channels={"email": RecordingChannel(), "sms": RecordingChannel()}, clock=clock,
                  contact_attributes={"sms": "phone"})
    live.publish(definitions)
    (message,) = live.handle_event(Event("ann", "digest_ready", T0, event_id="e1")).messages
    bounce = Event("ann", "bounced", T0 + HOUR, {"message_id": message.idempotency_key,
                                                 "type": "hard"}, event_id="b1")
    clock.set(T0 + HOUR)
    live.handle_event(bounce)
    assert message.channel == "email"
    assert live.customer_state("ann").blocked == {"email": "hard bounce"}

    result = backtest(definitions, [Event("ann", "digest_ready", T0, event_id="e1"), bounce],
                      channels={"email": RecordingChannel(), "sms": RecordingChannel()},
                      contact_attributes={"sms": "phone"}, keep_activity=True)
    assert result.engine.customer_state("ann").blocked == {"email": "hard bounce"}
    (bounced,) = [a for a in result.engine.activities(T0, T0 + 2 * HOUR, customer_id="ann")
                  if a.kind == "bounced"]
    assert (bounced.channel, bounced.content_version) == ("email", news.version)


def test_an_event_id_two_customers_share_is_the_later_ones_duplicate() -> None:
    # c1's first input comes before c2's, but c2 sends "x" first: c2 enters and c1's "x" is
    # the duplicate, as a live engine handling the stream in order decides, however the run
    # groups a window's inputs.
    stream = [ev("buy", T0, "c1"), ev("cart", T0 + HOUR, "c2", event_id="x"),
              ev("cart", T0 + 2 * HOUR, "c1", event_id="x"), ev("cart", T0 + 3 * HOUR, "c3")]
    live = _live_cart(stream)
    runs = [live] + [backtest(cart(), stream, channels=channels, keep_activity=True).engine
                     for channels in (None, recording())]
    for engine in runs:
        entered = {a.customer_id for a in engine.storage.activities(T0, T0 + 9 * HOUR)
                   if a.kind == "entered"}
        assert entered == {"c2", "c3"}


@attrs.frozen(slots=True)
class _ShopEvent(Event):
    """A host's own kind of event: an Event still."""


def test_an_event_id_two_customers_share_ties_them_in_a_subclass_of_event_too() -> None:
    # c1's profile update puts them first in the window; c2 sends "x" first, so c1's "x" is
    # the duplicate however the run groups a window's inputs.
    stream: list[BacktestInput] = [
        (T0, ProfileUpdate("c1", {"tier": "gold"})),
        _ShopEvent("c2", "cart", T0 + HOUR, {}, "x"),
        _ShopEvent("c1", "cart", T0 + 2 * HOUR, {}, "x"),
    ]
    for channels in (None, recording()):
        engine = backtest(cart(), stream, channels=channels, keep_activity=True).engine
        entered = {a.customer_id for a in engine.storage.activities(T0, T0 + 9 * HOUR)
                   if a.kind == "entered"}
        assert entered == {"c2"}


def test_a_wake_up_fired_after_the_last_input_is_not_held_by_quiet_hours_on_the_runs_channels(
) -> None:
    # Ann's reminder falls due at 11:00, outside the quiet hours; the run ends at 23:00,
    # inside them. A worker on time sends it at 11:00: nothing is held, and the log says so
    # alike whether the run delivers to its own channels or to the caller's.
    definitions = Definitions(
        journeys=(Journey(id="remind", trigger=EventTrigger("cart"), entry="wait",
                          steps={"wait": Wait(HOUR, next="email"),
                                 "email": Send("hello", "email")}),),
        content=CONTENT,
        quiet_hours=(QuietHours("night", time(21), time(8)),),
    )
    stream = [Event("ann", "cart", T0 + HOUR, event_id="a1")]

    def logged(result: BacktestResult) -> list[tuple[datetime, str, str | None]]:
        return [(a.at, a.kind, a.detail) for a in result.engine.activities(T0, T0 + 15 * HOUR)
                if a.kind in ("sent", "quiet_hours")]

    own = backtest(definitions, stream, keep_activity=True, until=T0 + 14 * HOUR)
    given = backtest(definitions, stream, keep_activity=True, until=T0 + 14 * HOUR,
                     channels={"email": RecordingChannel()})
    assert own.messages == given.messages == {"email": 1}
    assert logged(own) == logged(given) == [(T0 + 2 * HOUR, "sent", "email")]
