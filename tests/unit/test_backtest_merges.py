"""Identity merges in a back-test's stream (``(at, Identify(...))``), and a stream that gives no
inputs at all (empty, or an iterator read before)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cjo import (
    ContentItem,
    Definitions,
    Engine,
    Event,
    EventTrigger,
    Goal,
    Identify,
    InMemoryStorage,
    InvalidEventError,
    Journey,
    ManualClock,
    ProfileUpdate,
    RecordingChannel,
    ScheduleTrigger,
    Segment,
    Send,
    Topic,
    UsageError,
    Variant,
    Wait,
    WaitForEvent,
    attr,
    simulate,
)
from cjo.analytics.report import journey_report
from cjo.simulate import BacktestInput, BacktestResult, backtest
from cjo.testing import run_until
from tests.property import test_backtest_merges as merges_property
from tests.property.test_equivalence import deliveries, states

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)

CART = Definitions(
    journeys=(Journey(
        id="cart", trigger=EventTrigger("added_to_cart"), entry="wait",
        steps={"wait": WaitForEvent("purchased", HOUR, on_timeout="remind"),
               "remind": Send("reminder", "email")},
        goal=Goal("purchased", within=timedelta(days=7)),
    ),),
    content=(ContentItem("reminder", variants=(Variant("email", {
        "subject": "{{ profile.first_name | default: 'Hi' }}, your {{ event.item }} is waiting",
        "text": "Come back.",
    }),)),),
)


def live(stream: list[BacktestInput], until: datetime) -> Engine:
    """What a host does live: each event handled and each log-in identified with the clock at
    its instant, a worker that is never late (``run_until``) in between."""
    engine = Engine(InMemoryStorage(), {"email": RecordingChannel()}, ManualClock(T0))
    engine.publish(CART)
    for item in stream:
        if isinstance(item, Event):
            run_until(engine, item.timestamp)
            engine.handle_event(item)
        else:
            at, merge = item
            assert isinstance(merge, Identify)
            run_until(engine, at)
            engine.identify(merge.customer_id, merge.attributes, anonymous_id=merge.anonymous_id)
    run_until(engine, until)
    return engine


def test_an_anonymous_cart_merged_into_a_customer_who_then_buys_converts_as_live() -> None:
    stream: list[BacktestInput] = [
        Event("anon-7", "added_to_cart", T0, {"item": "tent"}, event_id="1"),
        # The visitor logs in: their cart is Ann's now.
        (T0 + 10 * MINUTE, Identify("ann", {"first_name": "Ann"}, anonymous_id="anon-7")),
        Event("ann", "purchased", T0 + 20 * MINUTE, event_id="2"),
    ]
    email = RecordingChannel()
    result = backtest(CART, stream, channels={"email": email}, render=True, until=T0 + 2 * HOUR)

    assert (result.inputs, result.events, result.merges) == (3, 2, 1)
    assert result.entered == {"cart": 1}
    assert result.ended == {"converted": 1} and result.goals == {"cart": 1}
    assert email.messages == []            # no reminder to the visitor who bought
    report = result.reports["cart"]
    assert (report.entered, report.converted, report.active) == (1, 1, 0)
    [ended] = result.engine.enrollments("ann")
    assert ended.status == "converted"
    assert result.engine.enrollments("anon-7") == []

    engine = live(stream, T0 + 2 * HOUR)
    assert deliveries(result.engine) == deliveries(engine)
    assert states(result.engine, ["ann", "anon-7"]) == states(engine, ["ann", "anon-7"])
    assert result.reports["cart"] == journey_report(engine.storage, CART.journeys[0])
    # On its own counting channels, the same.
    counted = backtest(CART, stream, until=T0 + 2 * HOUR)
    assert (counted.messages, counted.entered, counted.ended, counted.goals, counted.reports) \
        == (result.messages, result.entered, result.ended, result.goals, result.reports)


def test_a_merge_orders_the_two_customers_inputs_around_it() -> None:
    # In one window: Ann's own cart before the merge, the visitor's second cart after it (a new
    # anonymous record), and the purchase by Ann, which converts the merged cart only. Decided
    # customer by customer, the visitor's inputs would all come before Ann's or after them.
    stream: list[BacktestInput] = [
        Event("anon-7", "added_to_cart", T0, {"item": "tent"}, event_id="1"),
        Event("ann", "added_to_cart", T0 + MINUTE, {"item": "map"}, event_id="2"),
        (T0 + 10 * MINUTE, Identify("ann", anonymous_id="anon-7")),
        Event("anon-7", "added_to_cart", T0 + 15 * MINUTE, {"item": "cap"}, event_id="3"),
        Event("ann", "purchased", T0 + 20 * MINUTE, event_id="4"),
    ]
    email = RecordingChannel()
    result = backtest(CART, stream, channels={"email": email}, render=True, until=T0 + 2 * HOUR)
    # Ann's own enrollment goes on (the visitor's ends as merged into it) and converts; the
    # visitor's new cart, after the log-in, gets its reminder.
    assert [(m.customer_id, m.created_at, m.fields["subject"]) for m in email.messages] == [
        ("anon-7", T0 + 75 * MINUTE, "Hi, your cap is waiting"),
    ]
    assert result.ended == {"completed": 1, "converted": 1, "merged": 1}

    engine = live(stream, T0 + 2 * HOUR)
    assert deliveries(result.engine) == deliveries(engine)
    assert states(result.engine, ["ann", "anon-7"]) == states(engine, ["ann", "anon-7"])
    counted = backtest(CART, stream, until=T0 + 2 * HOUR)
    assert (counted.messages, counted.ended, counted.reports) == (
        result.messages, result.ended, result.reports)


def test_a_wake_up_due_at_the_instant_of_a_merge_fires_before_it() -> None:
    # The visitor's reminder falls due at the very instant they log in: a worker on time sent it
    # to the visitor's record first, as before an event at that instant.
    stream: list[BacktestInput] = [
        Event("anon-7", "added_to_cart", T0, {"item": "tent"}, event_id="1"),
        (T0 + HOUR, Identify("ann", {"first_name": "Ann"}, anonymous_id="anon-7")),
    ]
    email = RecordingChannel()
    result = backtest(CART, stream, channels={"email": email}, render=True)
    assert [(m.customer_id, m.created_at) for m in email.messages] == [("anon-7", T0 + HOUR)]
    engine = live(stream, T0 + HOUR)
    assert deliveries(result.engine) == deliveries(engine)
    assert states(result.engine, ["ann", "anon-7"]) == states(engine, ["ann", "anon-7"])


def test_identify_mirrors_engine_identify_and_is_checked_when_made() -> None:
    merge = Identify("ann", {"timezone": "Europe/Paris", "vip": True}, unset=["tier"],
                     anonymous_id="anon-7")
    # As ProfileUpdate takes them: the zone attribute is the profile's zone.
    assert (merge.attributes, merge.unset, merge.timezone) == (
        {"vip": True}, ("tier",), "Europe/Paris")
    assert merge.update == ProfileUpdate("ann", {"vip": True}, ("tier",), "Europe/Paris")
    with pytest.raises(UsageError, match="cannot merge customer 'ann' into itself"):
        Identify("ann", anonymous_id="ann")
    with pytest.raises(InvalidEventError, match="anonymous_id"):
        Identify("ann", anonymous_id="")
    with pytest.raises(InvalidEventError):
        Identify("ann", {"bad": object()}, anonymous_id="anon-7")
    with pytest.raises(InvalidEventError):
        Identify("ann", unset="tier", anonymous_id="anon-7")  # a bare str, not split


def test_an_identify_needs_its_instant() -> None:
    with pytest.raises(UsageError, match=r"input #1 is an Identify without an instant"):
        backtest(CART, [Event("a", "added_to_cart", T0, event_id="1"),
                        Identify("ann", anonymous_id="a")])  # type: ignore[list-item]


def test_merges_past_until_are_not_read() -> None:
    stream: list[BacktestInput] = [
        Event("anon-7", "added_to_cart", T0, {"item": "tent"}, event_id="1"),
        (T0 + 2 * HOUR, Identify("ann", anonymous_id="anon-7")),
    ]
    result = backtest(CART, stream, until=T0 + HOUR)
    assert (result.inputs, result.merges, result.messages) == (1, 0, {"email": 1})



# --- merges inside a window ---------------------------------------------------------------------


def _counted_like_live(stream: list[BacktestInput], until: datetime,
                       customers: list[str]) -> BacktestResult:
    """The back-test of ``stream`` on its own counting channels, checked against a live engine:
    the same records, reports and messages."""
    result = backtest(CART, stream, until=until)
    engine = live(stream, until)
    assert states(result.engine, customers) == states(engine, customers)
    assert result.reports["cart"] == journey_report(engine.storage, CART.journeys[0])
    email = engine.channels["email"]
    assert isinstance(email, RecordingChannel)
    assert result.messages == ({"email": len(email.messages)} if email.messages else {})
    return result


def _windows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many inputs each window a back-test decides holds, as it decides them."""
    sizes: list[int] = []
    decide_window = simulate._Run._decide_window

    def counted(run: Any, window: list[Any], *args: Any, **kwargs: Any) -> None:
        sizes.append(len(window))
        decide_window(run, window, *args, **kwargs)

    monkeypatch.setattr(simulate._Run, "_decide_window", counted)
    return sizes


def test_merges_do_not_end_the_window_of_the_other_customers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ten shoppers' carts, with three visitors logging in among them: one window of all the
    # carts, the merges made inside it, each between its two customers' inputs around it.
    stream: list[BacktestInput] = []
    for n in range(10):
        at = T0 + n * MINUTE
        stream.append(Event(f"c{n}", "added_to_cart", at, {"item": "tent"}, event_id=f"c{n}"))
        if n % 3 == 1:
            stream.append(Event(f"anon-{n}", "added_to_cart", at, {"item": "map"},
                                event_id=f"a{n}"))
        if n % 3 == 2:
            stream.append((at + MINUTE / 2, Identify(f"c{n - 1}", anonymous_id=f"anon-{n - 1}")))
            stream.append(Event(f"c{n - 1}", "purchased", at + MINUTE, event_id=f"p{n}"))
    sizes = _windows(monkeypatch)
    customers = [f"c{n}" for n in range(10)] + [f"anon-{n}" for n in (1, 4, 7)]
    result = _counted_like_live(stream, T0 + 2 * HOUR, customers)
    assert sizes == [len(stream) - 3]
    assert result.merges == 3 and result.ended == {"completed": 7, "converted": 3, "merged": 3}


@pytest.mark.parametrize("anonymous", ["anon-7", "anon-8"])
def test_what_falls_due_at_a_merge_fires_first_for_customers_with_no_input_in_its_window(
    monkeypatch: pytest.MonkeyPatch, anonymous: str,
) -> None:
    # Windows of three: the carts of Ann and the visitors are in the first window, the merge
    # in the second, at the instant Ann's (or the visitor's) reminder falls due. It is sent
    # before the merge, as a worker on time sends it, although neither has an input there.
    monkeypatch.setattr(simulate, "WINDOW", 3)
    stream: list[BacktestInput] = [
        Event("ann", "added_to_cart", T0, {"item": "tent"}, event_id="1"),
        Event("anon-7", "added_to_cart", T0 + MINUTE, {"item": "map"}, event_id="2"),
        Event("anon-8", "added_to_cart", T0 + 2 * MINUTE, {"item": "cap"}, event_id="3"),
        Event("bob", "added_to_cart", T0 + 30 * MINUTE, {"item": "mug"}, event_id="4"),
        (T0 + HOUR + (2 * MINUTE if anonymous == "anon-8" else 0 * MINUTE),
         Identify("ann", anonymous_id=anonymous)),
        Event("cat", "added_to_cart", T0 + 70 * MINUTE, {"item": "pen"}, event_id="5"),
    ]
    sizes = _windows(monkeypatch)
    result = _counted_like_live(stream, T0 + 3 * HOUR,
                                ["ann", "anon-7", "anon-8", "bob", "cat"])
    assert sizes == [3, 2]
    assert result.messages == {"email": 5}


def test_a_record_made_at_a_merges_instant_takes_its_count_by_stream_order() -> None:
    # A record made at the instant of a merge, after it, takes the count the merge gave the
    # record it emptied (its enrollment ids carry it), as live; one made before it does not,
    # nor does one made at another instant, although a later merge in the window sets a count
    # of its own.
    at = T0 + 10 * MINUTE
    stream: list[BacktestInput] = [
        Event("anon-7", "added_to_cart", T0, {"item": "tent"}, event_id="1"),
        Event("bob", "added_to_cart", at, {"item": "map"}, event_id="2"),
        (at, Identify("ann", anonymous_id="anon-7")),
        Event("cat", "added_to_cart", at, {"item": "cap"}, event_id="3"),
        Event("anon-8", "added_to_cart", at + MINUTE, {"item": "mug"}, event_id="4"),
        Event("dan", "added_to_cart", at + 2 * MINUTE, {"item": "pen"}, event_id="5"),
        (at + 3 * MINUTE, Identify("eve", anonymous_id="anon-8")),
        Event("fay", "added_to_cart", at + 3 * MINUTE, {"item": "cup"}, event_id="6"),
    ]
    result = _counted_like_live(stream, T0 + 2 * HOUR,
                                ["anon-7", "ann", "bob", "cat", "anon-8", "dan", "eve", "fay"])
    # (An id ends with its instant, and the count after a dot: "cart:cat:1.64c06f38eca00.1".)
    counts = {cid: [e.id.split(".")[2:] for e in result.engine.enrollments(cid)]
              for cid in ("bob", "cat", "dan", "fay")}
    assert counts == {"bob": [[]], "cat": [["1"]], "dan": [[]], "fay": [["1"]]}


def test_a_merge_in_a_window_with_an_event_id_two_customers_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The second "2" is a duplicate only after the first: such a window is decided in stream
    # order, and the merge ends the window before it.
    stream: list[BacktestInput] = [
        Event("anon-7", "added_to_cart", T0, {"item": "tent"}, event_id="1"),
        Event("bob", "added_to_cart", T0 + MINUTE, {"item": "map"}, event_id="2"),
        (T0 + 2 * MINUTE, Identify("ann", anonymous_id="anon-7")),
        Event("cat", "added_to_cart", T0 + 3 * MINUTE, {"item": "cap"}, event_id="2"),
        Event("ann", "purchased", T0 + 4 * MINUTE, event_id="3"),
    ]
    sizes = _windows(monkeypatch)
    result = _counted_like_live(stream, T0 + 2 * HOUR, ["anon-7", "ann", "bob", "cat"])
    assert sizes == [2, 2]
    assert result.entered == {"cart": 2} and result.engine.enrollments("cat") == []


def test_merges_in_a_chain_within_one_window() -> None:
    # A visitor merged into Ann, Ann merged into Bob (as an id Ann's events carried), the
    # visitor back with a new cart, and Bob's purchase: each merge between its inputs.
    stream: list[BacktestInput] = [
        Event("anon-7", "added_to_cart", T0, {"item": "tent"}, event_id="1"),
        Event("ann", "added_to_cart", T0 + MINUTE, {"item": "map"}, event_id="2"),
        Event("zed", "added_to_cart", T0 + MINUTE, {"item": "cap"}, event_id="3"),
        (T0 + 5 * MINUTE, Identify("ann", anonymous_id="anon-7")),
        (T0 + 5 * MINUTE, Identify("bob", anonymous_id="ann")),
        Event("anon-7", "added_to_cart", T0 + 5 * MINUTE, {"item": "mug"}, event_id="4"),
        Event("ann", "added_to_cart", T0 + 6 * MINUTE, {"item": "pen"}, event_id="5"),
        (T0 + 70 * MINUTE, Identify("zed", anonymous_id="anon-7")),
        Event("bob", "purchased", T0 + 90 * MINUTE, event_id="6"),
    ]
    result = _counted_like_live(stream, T0 + 3 * HOUR, ["anon-7", "ann", "bob", "zed"])
    assert result.merges == 3



def test_a_record_a_merge_emptied_is_somebodys_again_at_its_next_event() -> None:
    # The visitor's emptied record is entered by the nightly schedule (as every record is), so
    # a wake-up of its own is due before its next event: that event still makes the record
    # somebody's again, evaluated against the segments with it, as live.
    nightly = Definitions(
        journeys=(Journey(id="nightly", trigger=ScheduleTrigger("30 2 * * *"), entry="w",
                          steps={"w": Wait(MINUTE)}),
                  Journey(id="visits", trigger=EventTrigger("visited"), entry="w",
                          steps={"w": Wait(HOUR)})),
        segments=(Segment("gold", attr("tier") == "gold"),),
    )
    stream: list[BacktestInput] = [
        Event("anon-7", "visited", T0, event_id="1"),
        (T0 + HOUR, Identify("ann", anonymous_id="anon-7")),
        Event("anon-7", "visited", T0 + 22 * HOUR, event_id="2"),
    ]
    result = backtest(nightly, stream)
    engine = merges_property.live(nightly, stream)
    assert states(result.engine, ["ann", "anon-7"]) == states(engine, ["ann", "anon-7"])
    visitor = result.engine.customer_state("anon-7")
    assert visitor is not None and visitor.marks == {} and visitor.segments_basis is not None


# --- a stream that gives nothing ---------------------------------------------------------------


def _carts() -> Iterator[Event]:
    for n in range(3):
        yield Event(f"c{n}", "added_to_cart", T0 + n * MINUTE, {"item": "tent"}, event_id=str(n))


def test_a_generator_read_before_gives_no_inputs_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    carts = _carts()
    with caplog.at_level(logging.WARNING, logger="cjo.simulate"):
        first = backtest(CART, carts)
    assert first.inputs == 3 and not caplog.records
    with caplog.at_level(logging.WARNING, logger="cjo.simulate"):
        again = backtest(CART, carts)  # the same generator: read already
    assert again.inputs == 0 and again.entered == {}
    [record] = caplog.records
    assert record.name == "cjo.simulate" and record.levelno == logging.WARNING
    assert record.getMessage() == (
        "backtest read no inputs: the generator of inputs yielded nothing: a generator or "
        "iterator can be read only once, and one read before (by an earlier back-test, or by "
        "counting it) yields nothing"
    )


def test_an_empty_stream_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cjo.simulate"):
        result = backtest(CART, [])
    assert result.inputs == 0
    assert [r.getMessage() for r in caplog.records] == [
        "backtest read no inputs: the list of inputs is empty"]


def test_a_stream_that_starts_after_until_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cjo.simulate"):
        result = backtest(CART, _carts(), until=T0 - HOUR)
    assert result.inputs == 0
    assert [r.getMessage() for r in caplog.records] == [
        "backtest read no inputs: the first input is stamped 2026-03-02T09:00:00+00:00, after "
        "until (2026-03-02T08:00:00+00:00)"]


def test_feedback_after_a_merge_on_a_message_sent_before_it() -> None:
    """As live: a bounce and an unsubscribe under the known id, naming a message the
    anonymous customer got before the merge, are the known customer's."""
    news = ContentItem("news", topic="news", variants=(
        Variant("email", {"subject": "News", "text": "News"}),))
    definitions = Definitions(
        journeys=(Journey(id="digest", trigger=EventTrigger("digest_ready"), entry="send",
                          steps={"send": Send("news", "email", next="wait"),
                                 "wait": Wait(HOUR)}),),
        content=(news,), topics=(Topic("news"), Topic("tips")),
    )
    first = [Event("anon", "digest_ready", T0, event_id="d1")]
    (enrollment,) = backtest(definitions, first).engine.enrollments("anon")
    key = f"{enrollment.id}:send:0"
    result = backtest(definitions, [
        *first, (T0 + MINUTE, Identify("known", anonymous_id="anon")),
        Event("known", "bounced", T0 + 2 * MINUTE, {"message_id": key, "type": "hard"}, "b1"),
        Event("known", "unsubscribed", T0 + 2 * MINUTE, {"message_id": key}, "u1"),
    ])
    state = result.engine.customer_state("known")
    assert state is not None and state.blocked == {"email": "hard bounce"}
    assert state.consent == {("news", "*"): (False, T0 + 2 * MINUTE)}
