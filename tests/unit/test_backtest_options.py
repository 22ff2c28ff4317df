"""The engine options of a back-test: the options a live engine decides or delivers by are
passed through to the back-test's engine, so that a live setup can be reproduced, and refused
as the engine refuses them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from cjo.channels.recording import RecordingChannel
from cjo.clock import ManualClock
from cjo.engine import Engine
from cjo.errors import CjoError, DefinitionError, UsageError
from cjo.limits import Limits
from cjo.model.content import ContentItem, Variant
from cjo.model.definitions import Definitions
from cjo.model.events import Event, ProfileUpdate
from cjo.model.journey import Journey
from cjo.model.offers import Offer
from cjo.model.steps import Send, Wait, WaitUntil
from cjo.model.triggers import EventTrigger
from cjo.simulate import BacktestInput, BacktestOptions, backtest
from cjo.storage.memory import InMemoryStorage
from tests.property.test_equivalence import deliveries, drive, states
from tests.unit.test_backtest import Failing, run_live, twice

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday; 05:00 in New York, 15:30 in Kolkata
HOUR = timedelta(hours=1)
CUSTOMERS = ("ann", "bob")
CONTENT = (ContentItem("hello", (
    Variant("email", {"subject": "Hi {{ profile.name | default: 'you' }}", "text": "Hello"}),
    Variant("sms", {"text": "Hello"}),
)),)


def live(defs: Definitions, stream: list[BacktestInput], **options: Any) -> Engine:
    """A live engine with ``options``, its clock at each input's instant, its worker on time."""
    clock = ManualClock(T0)
    engine = Engine(InMemoryStorage(), {"email": RecordingChannel(), "sms": RecordingChannel()},
                    clock, **options)
    engine.publish(defs)
    drive(engine, clock, stream)
    return engine


def both(defs: Definitions, stream: list[BacktestInput], until: datetime,
         **options: Any) -> tuple[Engine, Engine]:
    """The back-test's engine and a live one, both with ``options``, run to ``until``."""
    channels = {"email": RecordingChannel(), "sms": RecordingChannel()}
    result = backtest(defs, stream, channels=channels, render=True, until=until, **options)
    return result.engine, live(defs, [*stream, Event("zed", "tick", until, {}, "end")],
                               render=True, **options)


def morning() -> Definitions:
    """On sign-up, wait for 09:00 (the customer's time), then an email."""
    return Definitions(journeys=(Journey(
        id="morning", entry="wait", trigger=EventTrigger("signup"),
        steps={"wait": WaitUntil(time(9), next="send"), "send": Send("hello", "email")},
    ),), content=CONTENT)


def test_default_timezone_times_a_calendar_wait_as_a_live_engine_does() -> None:
    stream: list[BacktestInput] = [
        Event("ann", "signup", T0, {}, "1"),
        # Bob's own zone wins over the default.
        ProfileUpdate("bob", {}, timezone="Asia/Kolkata"),
        Event("bob", "signup", T0, {}, "2"),
    ]
    until = T0 + 2 * 24 * HOUR
    tested, engine = both(morning(), stream, until, default_timezone="America/New_York")
    sent = {m.customer_id: m.created_at for m in tested.channels["email"].messages}  # type: ignore[attr-defined]
    assert sent == {
        "ann": datetime(2026, 3, 2, 14, 0, tzinfo=UTC),  # 09:00 in New York, the same day
        "bob": datetime(2026, 3, 3, 3, 30, tzinfo=UTC),  # 09:00 in Kolkata, the next day
    }
    assert deliveries(tested) == deliveries(engine)
    assert states(tested, CUSTOMERS) == states(engine, CUSTOMERS)
    # Without it, Ann's morning is UTC's, as on a live engine without it.
    plain = backtest(morning(), stream, channels={"email": RecordingChannel()}, until=until)
    assert {m.customer_id: m.created_at
            for m in plain.engine.channels["email"].messages  # type: ignore[attr-defined]
            } == {**sent, "ann": datetime(2026, 3, 3, 9, 0, tzinfo=UTC)}


def fallback() -> Definitions:
    """On sign-up, an SMS, else (no phone number) an email."""
    return Definitions(journeys=(Journey(
        id="hello", entry="send", trigger=EventTrigger("signup"),
        steps={"send": Send("hello", "sms", fallbacks=("email",))},
    ),), content=CONTENT)


def test_contact_attributes_choose_the_fallback_as_a_live_engine_does() -> None:
    stream: list[BacktestInput] = [
        ProfileUpdate("ann", {"phone": "+33600000000", "tier": "gold"}),
        Event("ann", "signup", T0, {}, "1"),
        Event("bob", "signup", T0 + HOUR, {}, "2"),  # no phone: the email
    ]
    until = T0 + 2 * HOUR
    tested, engine = both(fallback(), stream, until, contact_attributes={"sms": "phone"})
    sent = {name: [m.customer_id for m in channel.messages]  # type: ignore[attr-defined]
            for name, channel in tested.channels.items()}
    assert sent == {"email": ["bob"], "sms": ["ann"]}
    assert deliveries(tested) == deliveries(engine)
    assert states(tested, CUSTOMERS) == states(engine, CUSTOMERS)
    # Without it, every customer is sent the SMS.
    counted = backtest(fallback(), stream, until=until)
    assert counted.messages == {"sms": 2}


def test_recipient_attributes_and_keep_ended_are_those_of_a_live_engine() -> None:
    stream: list[BacktestInput] = [
        ProfileUpdate("ann", {"phone": "+33600000000", "email": "ann@example.com"}),
        Event("ann", "signup", T0, {}, "1"),
        Event("ann", "signup", T0 + HOUR, {}, "2"),
        Event("ann", "signup", T0 + 2 * HOUR, {}, "3"),
    ]
    until = T0 + 3 * HOUR
    tested, engine = both(fallback(), stream, until, recipient_attributes=("phone",),
                          keep_ended=2)
    [first, *_] = tested.channels["sms"].messages  # type: ignore[attr-defined]
    assert first.recipient == {"phone": "+33600000000"}
    assert len(tested.enrollments("ann")) == 2
    assert deliveries(tested) == deliveries(engine)
    assert states(tested, CUSTOMERS) == states(engine, CUSTOMERS)


def test_scorers_are_those_of_a_live_engine() -> None:
    # An offer scored by a host function: without the scorer the definitions are refused, as a
    # live engine without it refuses them.
    offers = Definitions(
        journeys=(Journey(id="offer", entry="send", trigger=EventTrigger("signup"),
                          steps={"send": Send("hello", "email", offers=("big", "small"))}),),
        content=(*CONTENT,
                 ContentItem("big", (Variant("email", {"subject": "big", "text": "b"}),)),
                 ContentItem("small", (Variant("email", {"subject": "small", "text": "s"}),))),
        offers=(Offer("big", "big", scorer="tier_score"), Offer("small", "small")),
    )
    with pytest.raises(DefinitionError, match="tier_score"):
        backtest(offers, [Event("ann", "signup", T0, {}, "1")])
    email = RecordingChannel()
    backtest(offers, [Event("ann", "signup", T0, {}, "1")], channels={"email": email},
             render=True, scorers={"tier_score": lambda profile, context: -1.0})
    assert [m.content_id for m in email.messages] == ["small"]  # scored below the other


def test_delivery_options_are_those_of_a_live_engine() -> None:
    # Every attempt fails transiently: two attempts, a minute apart, then a dead letter.
    stream = [Event("c1", "cart", T0, {"item": "hat"}, "1")]
    options: BacktestOptions = {"max_delivery_attempts": 2, "retry_backoff": timedelta(minutes=1),
                                "max_retry_delay": timedelta(minutes=1)}
    channel, live_channel = Failing(99), Failing(99)
    result = backtest(twice(), stream, until=T0 + HOUR / 2, channels={"email": channel},
                      render=True, **options)
    engine = run_live(twice(), stream, T0 + HOUR / 2, live_channel, ("c1",), **options)
    assert len(channel.attempts) == len(live_channel.attempts) == 2
    assert result.engine.dead_letters() == engine.dead_letters()
    assert len(result.engine.dead_letters()) == 1


def test_limits_are_those_of_a_live_engine() -> None:
    # A catch-up limit of one message: the second send of the same wake-up is skipped.
    defs = Definitions(journeys=(Journey(
        id="burst", entry="wait", trigger=EventTrigger("signup"),
        steps={"wait": Wait(HOUR, next="a"), "a": Send("hello", "email", next="b"),
               "b": Send("hello", "email")},
    ),), content=CONTENT)
    limits = Limits(max_messages_per_catch_up=1)
    stream: list[BacktestInput] = [Event("ann", "signup", T0, {}, "1")]
    tested, engine = both(defs, stream, T0 + 2 * HOUR, limits=limits)
    assert len(tested.channels["email"].messages) == 1  # type: ignore[attr-defined]
    assert deliveries(tested) == deliveries(engine)
    assert states(tested, CUSTOMERS) == states(engine, CUSTOMERS)


BAD_OPTIONS: list[dict[str, Any]] = [
    {"default_timezone": "Mars/Olympus_Mons"},
    {"default_timezone": 5},
    {"contact_attributes": {"sms": ""}},
    {"contact_attributes": ["sms"]},
    {"recipient_attributes": "email"},
    {"channel_types": {"email": "fax"}},
    {"scorers": {"s": 5}},
    {"limits": {"max_messages_per_catch_up": 1}},
    {"keep_ended": -1},
    {"keep_ended": True},
    {"max_delivery_attempts": 0},
    {"retry_backoff": timedelta(0)},
    {"max_retry_delay": timedelta(seconds=1)},
]


def _unread(stream: list[Event], read: list[Event]) -> Iterator[Event]:
    for event in stream:
        read.append(event)
        yield event


@pytest.mark.parametrize("option", BAD_OPTIONS, ids=lambda o: next(iter(o)))
def test_an_invalid_option_is_refused_as_the_engine_refuses_it(option: dict[str, Any]) -> None:
    with pytest.raises(CjoError) as live_error:
        Engine(**option)
    read: list[Event] = []
    with pytest.raises(type(live_error.value)) as caught:
        backtest(morning(), _unread([Event("ann", "signup", T0, {}, "1")], read), **option)
    assert str(caught.value) == str(live_error.value)
    assert read == []  # before the run: nothing read


@pytest.mark.parametrize("name", ["due_batch_size", "wake_lease", "dispatch", "retention",
                                  "prune_every", "future_tolerance", "late_events", "storage",
                                  "clock", "tymezone"])
def test_an_option_the_backtest_does_not_take_is_refused(name: str) -> None:
    with pytest.raises(UsageError, match=f"backtest takes no engine option {name!r}"):
        backtest(morning(), [], **{name: None})  # type: ignore[arg-type]
