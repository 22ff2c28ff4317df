"""Withdrawing published definitions (``Engine.withdraw``) on every storage adapter: what
customer records and the outbox hold for a withdrawn definition, and withdrawals racing other
processes' publishes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cjo import (
    ContentItem,
    DefinitionError,
    Engine,
    Event,
    EventTrigger,
    FrequencyCap,
    Journey,
    ManualClock,
    Offer,
    RecordingChannel,
    Segment,
    Send,
    Topic,
    UnknownTopicError,
    UsageError,
    Variant,
    attr,
    in_segment,
)
from cjo.analytics.report import journey_report
from cjo.runtime.registry import Registry
from tests.helpers import Factory

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
VIP = Segment("vip", attr("plan") == "pro")
PAYING = Segment("paying", attr("plan").is_in(["pro", "basic"]))
UNKNOWN = "no segment 'vip' has been published"


def _item(item_id: str, subject: str) -> ContentItem:
    return ContentItem(item_id, (Variant("email", {"subject": subject, "text": "Hello"}),))


def _engine(storage_factory: Factory, clock: ManualClock,
            email: RecordingChannel | None = None, **options: object) -> Engine:
    return Engine(storage=storage_factory(), clock=clock,
                  channels={"email": email or RecordingChannel()}, **options)  # type: ignore[arg-type]


def _segment_log(engine: Engine, customer_id: str) -> list[tuple[str, str, datetime]]:
    """The customer's segment entries and exits, by instant (then kind and segment)."""
    log = engine.activities(T0, T0 + 10 * HOUR, customer_id=customer_id)
    return sorted(((a.kind, a.detail, a.at) for a in log if a.kind.startswith("segment_")),
                  key=lambda x: (x[2], x[0], x[1]))


def test_a_withdrawn_segment_is_unknown_at_once_and_its_members_leave_it_at_the_next_run(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    engine = _engine(storage_factory, clock)
    engine.publish(segments=[VIP, PAYING])
    for cid, plan in (("ann", "pro"), ("bob", "pro"), ("cy", "basic")):
        engine.identify(cid, {"plan": plan})
    assert engine.segment_members("vip") == ["ann", "bob"]

    clock.advance(HOUR)
    generation = engine.generation
    assert engine.withdraw(segments=["vip"]) == generation + 1
    assert [s.id for s in engine.definitions.segments] == ["paying"]
    # Asked about, it is as a segment never published, while records still hold it.
    for ask in (lambda: engine.segment_members("vip"), lambda: engine.segment_count("vip"),
                lambda: engine.in_segment("ann", "vip"),
                lambda: engine.segment_sizes(["vip"], T0)):
        with pytest.raises(UsageError, match=UNKNOWN):
            ask()
    # Records holding it still load, here and in a process started afterwards.
    restarted = _engine(storage_factory, clock)
    assert restarted.customer_state("ann") is not None
    assert restarted.export_customer("ann")["record"]["segments"] == {"paying": T0.isoformat(),
                                                                      "vip": T0.isoformat()}

    clock.advance(HOUR)
    restarted.run_due()  # evaluates every customer against the new segments
    for cid in ("ann", "bob"):
        state = engine.customer_state(cid)
        assert state is not None and set(state.segments) == {"paying"}
        assert engine.export_customer(cid)["record"]["segments"] == {"paying": T0.isoformat()}
        assert _segment_log(engine, cid) == [
            ("segment_entered", "paying", T0), ("segment_entered", "vip", T0),
            ("segment_exited", "vip", T0 + 2 * HOUR),
        ]
    assert _segment_log(engine, "cy") == [("segment_entered", "paying", T0)]
    assert engine.segment_members("paying") == ["ann", "bob", "cy"]

    # Published again, it is a segment like any other: its members enter it anew.
    clock.advance(HOUR)
    engine.publish(segments=[VIP])
    assert engine.definitions.withdrawn == ()
    engine.refresh_segments()
    assert engine.segment_members("vip") == ["ann", "bob"]
    assert _segment_log(engine, "ann")[-1] == ("segment_entered", "vip", T0 + 3 * HOUR)


@pytest.mark.parametrize("then", ["run_due", "profile_change"])
def test_members_leave_the_only_segment_withdrawn_before_any_worker_ran(
    storage_factory: Factory, then: str,
) -> None:
    clock = ManualClock(T0)
    engine = _engine(storage_factory, clock)
    engine.publish(segments=[VIP])
    engine.identify("ann", {"plan": "pro"})
    clock.advance(HOUR)
    engine.withdraw(segments=["vip"])  # no segment is published now
    clock.advance(HOUR)
    if then == "run_due":
        _engine(storage_factory, clock).run_due()
    else:
        engine.identify("ann", {"city": "Oslo"})
    state = engine.customer_state("ann")
    assert state is not None and state.segments == {}
    assert _segment_log(engine, "ann") == [("segment_entered", "vip", T0),
                                           ("segment_exited", "vip", T0 + 2 * HOUR)]


def test_a_message_of_a_withdrawn_content_item_still_goes_out(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    email = RecordingChannel()
    engine = _engine(storage_factory, clock, email, dispatch="deferred")
    journey = Journey("promo", "mail", trigger=EventTrigger("visited"),
                      steps={"mail": Send("plain", "email", offers=("spring",))})
    engine.publish(journeys=[journey], offers=[Offer("spring", content="spring_sale")],
                   content=[_item("plain", "News"), _item("spring_sale", "Spring sale")])
    engine.handle_event(Event("ann", "visited", T0, event_id="e1"))
    assert engine.pending_by_channel() == {"email": 1}

    # The offer now sends other content, and the old item is no longer used: withdrawn.
    clock.advance(HOUR)
    engine.publish(offers=[Offer("spring", content="summer_sale")],
                   content=[_item("summer_sale", "Summer sale")])
    engine.withdraw(content=["spring_sale"])
    assert "spring_sale" not in {c.id for c in engine.definitions.content}

    # The message written before goes out as it was rendered, by this engine or another.
    worker = _engine(storage_factory, clock, email, dispatch="deferred")
    assert worker.dispatch_pending() == 1
    [message] = email.messages
    assert (message.content_id, message.content_version, message.fields["subject"]) == (
        "spring_sale", 1, "Spring sale")
    report = journey_report(engine.storage, journey)
    assert (report.sent, report.delivery_failed, report.withheld) == ({"email": 1}, 0, 0)


def test_a_content_item_published_again_goes_on_from_its_last_version(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    email = RecordingChannel()
    engine = _engine(storage_factory, clock, email)
    engine.publish(content=[_item("note", "One")])
    engine.publish(content=[_item("note", "Two")])
    engine.withdraw(content=["note"])
    [withdrawal] = engine.definitions.withdrawn
    assert (withdrawal.kind, withdrawal.id, withdrawal.at, withdrawal.version) == (
        "content", "note", T0, 2)

    # Another process, started after the withdrawal, publishes it again.
    other = _engine(storage_factory, clock, email)
    other.publish(content=[_item("note", "Three")],
                  journeys=[Journey("j", "mail", trigger=EventTrigger("go"),
                                    steps={"mail": Send("note", "email")})])
    assert [(c.id, c.version) for c in engine.definitions.content] == [("note", 3)]
    assert engine.definitions.withdrawn == ()
    engine.handle_event(Event("ann", "go", T0, event_id="e1"))
    assert [(m.content_version, m.fields["subject"]) for m in email.messages] == [(3, "Three")]


def test_an_unsubscribe_from_a_withdrawn_topic_holds_when_it_is_published_again(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    email = RecordingChannel()
    engine = _engine(storage_factory, clock, email)
    engine.publish(topics=[Topic("news")])
    for cid in ("ann", "bob"):
        engine.identify(cid, {"email": f"{cid}@example.com"})
    engine.set_consent("ann", subscribed=False, topic="news")
    clock.advance(HOUR)
    engine.withdraw(topics=["news"])
    with pytest.raises(UnknownTopicError):
        engine.set_consent("bob", subscribed=False, topic="news")

    clock.advance(HOUR)
    digest = Journey("digest", "mail", trigger=EventTrigger("go"),
                     steps={"mail": Send("news_mail", "email", topic="news")})
    _engine(storage_factory, clock, email).publish(
        topics=[Topic("news")], content=[_item("news_mail", "News")], journeys=[digest])
    for cid in ("ann", "bob"):
        engine.handle_event(Event(cid, "go", clock.now(), event_id=f"go-{cid}"))
    assert [m.customer_id for m in email.messages] == ["bob"]
    assert journey_report(engine.storage, digest).suppressed == {"unsubscribed from news": 1}


def _stale_once(engine: Engine, registry: Registry) -> None:
    """Make ``engine``'s next definitions read return ``registry``: as if it had read them
    just before another process changed them."""
    real = engine._sync
    calls = iter([registry])
    engine._sync = lambda: next(calls, None) or real()  # type: ignore[method-assign]


def test_a_withdrawal_and_another_process_publish_merge(storage_factory: Factory) -> None:
    clock = ManualClock(T0)
    one, two = _engine(storage_factory, clock), _engine(storage_factory, clock)
    one.publish(segments=[VIP, PAYING], caps=[FrequencyCap("daily", 3, timedelta(days=1))])

    # Each read the definitions before the other stored its change: the second to store
    # loses the compare-and-set, reads the newer generation and applies its change to it.
    before = one._sync()
    two._sync()
    two.publish(content=[_item("note", "Hi")])
    _stale_once(one, before)
    one.withdraw(caps=["daily"])
    before = two._sync()
    one.withdraw(segments=["paying"])
    _stale_once(two, before)
    two.publish(content=[_item("news", "News")])

    for engine in (one, two):
        definitions = engine.definitions
        assert [s.id for s in definitions.segments] == ["vip"]
        assert definitions.caps == ()
        assert sorted(c.id for c in definitions.content) == ["news", "note"]
        assert [(w.kind, w.id) for w in definitions.withdrawn] == [
            ("caps", "daily"), ("segments", "paying")]


def test_a_withdrawal_is_refused_when_another_process_started_using_it_meanwhile(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    one, two = _engine(storage_factory, clock), _engine(storage_factory, clock)
    one.publish(segments=[VIP])
    before = one._sync()
    two.publish(segments=[Segment("vip_paying", in_segment("vip") & (attr("paid") == True))])  # noqa: E712
    _stale_once(one, before)
    with pytest.raises(DefinitionError) as caught:
        one.withdraw(segments=["vip"])
    assert [str(p) for p in caught.value.problems] == [
        "segment 'vip': cannot be withdrawn: still used by segment 'vip_paying'"]
    assert {s.id for s in two.definitions.segments} == {"vip", "vip_paying"}
