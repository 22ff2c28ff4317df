"""AudiencePaths, Jump, and the events a wait received, tried as a user would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cjo import (
    AudiencePath,
    AudiencePaths,
    Branch,
    Case,
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    Journey,
    Jump,
    ManualClock,
    RecordingChannel,
    Segment,
    Send,
    Variant,
    Wait,
    WaitForEvent,
    attr,
    ctx,
)
from cjo.errors import DefinitionError
from cjo.serialization import dumps_definitions, loads_definitions

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CONTENT = tuple(
    ContentItem(name, variants=(Variant("email", {"subject": "Note", "text": text}),))
    for name, text in (("vip", "VIP"), ("regular", "Hi"), ("other", "Hello"),
                       ("thanks", "Thanks for {{ context.received.purchased.total }}"))
)
SEGMENTS = (
    Segment("vip", attr("spend") >= 1000),
    Segment("regular", attr("spend") >= 100),
)
_n = iter(range(10**6))


def _ev(name: str, customer: str, at: datetime, **props: object) -> Event:
    return Event(customer_id=customer, name=name, timestamp=at, properties=props,
                 event_id=f"r{next(_n)}")


def _engine() -> tuple[Engine, ManualClock, RecordingChannel]:
    clock, email = ManualClock(T0), RecordingChannel()
    return Engine(channels={"email": email}, clock=clock), clock, email


def test_audience_paths_take_the_first_ranked_segment_else_everyone_else() -> None:
    engine, _, email = _engine()
    journey = Journey(
        id="j", trigger=EventTrigger("signed_up"), entry="route",
        steps={
            "route": AudiencePaths(
                (AudiencePath("vip", "to_vip"), AudiencePath("regular", "to_regular")),
                default="to_other",
            ),
            "to_vip": Send("vip", "email"), "to_regular": Send("regular", "email"),
            "to_other": Send("other", "email"),
        },
    )
    engine.publish(journeys=[journey], segments=SEGMENTS, content=CONTENT)
    for cid, spend in (("big", 5000), ("mid", 200), ("small", 5)):
        engine.identify(cid, {"spend": spend})
        engine.handle_event(_ev("signed_up", cid, T0))
    assert {(m.customer_id, m.content_id) for m in email.messages} == {
        ("big", "vip"), ("mid", "regular"), ("small", "other"),
    }
    paths = {a.customer_id: a.detail for a in engine.activities(T0, T0 + DAY)
             if a.kind == "path"}
    assert paths == {"big": "vip", "mid": "regular", "small": "everyone else"}


def test_audience_paths_need_known_segments() -> None:
    engine, _, _ = _engine()
    journey = Journey(id="j", trigger=EventTrigger("x"), entry="route", steps={
        "route": AudiencePaths((AudiencePath("nope", None),)),
    })
    with pytest.raises(DefinitionError, match="segment 'nope' does not exist"):
        engine.publish(journeys=[journey])


def test_a_segment_named_as_the_default_path_is_no_ranked_path() -> None:
    # The default path is recorded as "everyone else": a segment of that name taken as a path
    # would be counted with everyone else in the report's path counts.
    engine, _, _ = _engine()
    journey = Journey(id="j", trigger=EventTrigger("x"), entry="route", steps={
        "route": AudiencePaths((AudiencePath("everyone else", None),)),
    })
    with pytest.raises(DefinitionError, match=(
        "journey 'j' v1 / step 'route': segment 'everyone else' cannot be a path: the "
        "customers in none of the segments are recorded under that name"
    )):
        engine.publish(journeys=[journey], segments=[Segment("everyone else", attr("x") == 1)])


def _jumping(end_current: bool) -> list[Journey]:
    source = Journey(
        id="source", trigger=EventTrigger("signed_up"), entry="hop",
        steps={"hop": Jump("target", end_current=end_current,
                           next=None if end_current else "after"),
               **({} if end_current else {"after": Send("other", "email")})},
    )
    target = Journey(id="target", entry="hello", steps={
        "hello": Branch((Case(ctx("plan") == "pro", "vip"),), default="regular"),
        "vip": Send("vip", "email"), "regular": Send("regular", "email"),
    })
    return [source, target]


def test_a_jump_enters_the_other_journey_with_the_context_and_ends_this_one() -> None:
    engine, _, email = _engine()
    engine.publish(journeys=_jumping(True), content=CONTENT)
    out = engine.handle_event(_ev("signed_up", "ann", T0, plan="pro"))
    assert [e.journey_id for e in out.entered] == ["source", "target"]
    assert [(e.journey_id, e.status, e.reason) for e in out.ended] == [
        ("source", "completed", "jumped to target"), ("target", "completed", None),
    ]
    assert [m.content_id for m in email.messages] == ["vip"]


def test_a_jump_that_keeps_this_journey_goes_on_to_next() -> None:
    engine, _, email = _engine()
    engine.publish(journeys=_jumping(False), content=CONTENT)
    engine.handle_event(_ev("signed_up", "ann", T0, plan="free"))
    assert [m.content_id for m in email.messages] == ["regular", "other"]


def test_journeys_jumping_to_each_other_stop_at_the_limit() -> None:
    engine, _, _ = _engine()
    ping = Journey(id="ping", trigger=EventTrigger("go"), entry="j", steps={"j": Jump("pong")})
    pong = Journey(id="pong", entry="j", steps={"j": Jump("ping")})
    engine.publish(journeys=[ping, pong])
    out = engine.handle_event(_ev("go", "ann", T0))
    assert len(out.entered) == engine.limits.max_jumps_per_input + 1
    log = engine.activities(T0, T0 + DAY, customer_id="ann")
    assert [a.detail for a in log if a.kind == "jumped"][-1].endswith("jump limit reached")


def test_a_jump_to_an_unknown_journey_is_refused() -> None:
    engine, _, _ = _engine()
    journey = Journey(id="j", trigger=EventTrigger("x"), entry="hop",
                      steps={"hop": Jump("missing")})
    with pytest.raises(DefinitionError, match="journey 'missing' does not exist"):
        engine.publish(journeys=[journey])


def test_later_steps_read_the_event_a_wait_received() -> None:
    engine, clock, email = _engine()
    journey = Journey(
        id="j", trigger=EventTrigger("checkout_started"), entry="wait",
        steps={
            "wait": WaitForEvent("purchased", timeout=DAY, on_event="check"),
            "check": Branch((Case(ctx("received.purchased.total") > 50, "thank"),)),
            "thank": Send("thanks", "email"),
        },
    )
    engine.publish(journeys=[journey], content=CONTENT)
    engine.handle_event(_ev("checkout_started", "ann", T0))
    engine.handle_event(_ev("checkout_started", "bob", T0))
    clock.advance(timedelta(hours=1))
    engine.handle_event(_ev("purchased", "ann", clock.now(), total=80))
    engine.handle_event(_ev("purchased", "bob", clock.now(), total=20))
    assert [(m.customer_id, m.fields["text"]) for m in email.messages] == [
        ("ann", "Thanks for 80"),
    ]


def test_new_steps_round_trip_through_json() -> None:
    from cjo import Definitions

    journeys = (
        *_jumping(False),
        Journey(id="r", trigger=EventTrigger("x"), entry="route", steps={
            "route": AudiencePaths((AudiencePath("vip", "w"),), default=None),
            "w": Wait(DAY),
        }),
    )
    definitions = Definitions(journeys=journeys, segments=SEGMENTS, content=CONTENT)
    assert loads_definitions(dumps_definitions(definitions)) == definitions
