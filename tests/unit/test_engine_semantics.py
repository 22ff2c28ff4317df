"""Journey semantics of the engine on in-memory storage, under a ManualClock."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from cjo import (
    ApiTrigger,
    Branch,
    Case,
    Event,
    EventTrigger,
    Exit,
    ExitCriterion,
    Goal,
    Journey,
    ReentryPolicy,
    Segment,
    Send,
    Split,
    SplitPath,
    UpdateProfile,
    Wait,
    attr,
    ctx,
    in_segment,
)
from cjo.errors import ClockError, DefinitionError, InvalidEventError, UnknownJourneyError
from tests.helpers import SIMPLE_CONTENT, T0, ev, make_engine


def one_send_then_wait(jid: str = "j", **kw: object) -> Journey:
    return Journey(
        id=jid,
        trigger=kw.pop("trigger", EventTrigger("go")),  # type: ignore[arg-type]
        entry="send",
        steps={"send": Send("hello", "email", next="wait"), "wait": Wait(timedelta(days=1))},
        **kw,  # type: ignore[arg-type]
    )


# --- re-entry ------------------------------------------------------------------------------


def _entries(engine, customer="c1"):
    return engine.enrollments(customer)


def test_after_exit_allows_reentry_only_once_ended():
    engine, clock, _ = make_engine()
    engine.publish(journeys=[one_send_then_wait()], content=SIMPLE_CONTENT)
    assert engine.handle_event(ev("go", "c1", clock.now())).entered
    assert not engine.handle_event(ev("go", "c1", clock.now())).entered
    clock.advance(days=1)
    engine.run_due()
    assert engine.handle_event(ev("go", "c1", clock.now())).entered
    assert [e.id.split(".")[0] for e in _entries(engine)] == ["j:c1:1", "j:c1:2"]


def test_never_allows_one_entry_ever():
    engine, clock, _ = make_engine()
    engine.publish(
        journeys=[one_send_then_wait(reentry=ReentryPolicy.never())], content=SIMPLE_CONTENT
    )
    engine.handle_event(ev("go", "c1", clock.now()))
    clock.advance(days=5)
    engine.run_due()
    assert not engine.handle_event(ev("go", "c1", clock.now())).entered


def test_cooldown_counts_from_the_end_of_the_previous_enrollment():
    engine, clock, _ = make_engine()
    policy = ReentryPolicy.after_cooldown(timedelta(days=2))
    engine.publish(journeys=[one_send_then_wait(reentry=policy)], content=SIMPLE_CONTENT)
    engine.handle_event(ev("go", "c1", clock.now()))
    clock.advance(days=1)
    engine.run_due()  # ended at T0 + 1 day
    clock.advance(days=1, hours=23)
    assert not engine.handle_event(ev("go", "c1", clock.now())).entered
    clock.advance(hours=1)
    assert engine.handle_event(ev("go", "c1", clock.now())).entered


def test_at_most_limits_entries_in_a_rolling_window():
    engine, clock, _ = make_engine()
    journey = Journey(
        id="j", trigger=EventTrigger("go"), entry="send",
        steps={"send": Send("hello", "email")},
        reentry=ReentryPolicy.at_most(2, per=timedelta(days=7)),
    )
    engine.publish(journeys=[journey], content=SIMPLE_CONTENT)
    results = []
    for _ in range(4):
        results.append(bool(engine.handle_event(ev("go", "c1", clock.now())).entered))
        clock.advance(days=1)
    assert results == [True, True, False, False]
    clock.advance(days=4)  # the first entry leaves the 7-day window
    assert engine.handle_event(ev("go", "c1", clock.now())).entered


def test_instance_key_gives_one_enrollment_per_value():
    engine, clock, channels = make_engine()
    journey = one_send_then_wait(reentry=ReentryPolicy.after_exit(instance_key="cart_id"))
    engine.publish(journeys=[journey], content=SIMPLE_CONTENT)
    assert engine.handle_event(ev("go", "c1", clock.now(), cart_id="A")).entered
    assert engine.handle_event(ev("go", "c1", clock.now(), cart_id="B")).entered
    assert not engine.handle_event(ev("go", "c1", clock.now(), cart_id="A")).entered
    assert not engine.handle_event(ev("go", "c1", clock.now())).entered  # no key, no instance
    # Numbered per journey, keyed instances included.
    assert sorted(e.id.split(".")[0] for e in _entries(engine)) == ["j:c1:A:1", "j:c1:B:2"]
    assert len(channels["email"].messages) == 2


def test_a_keyed_instance_entered_twice_at_one_instant_gets_two_ids():
    # The first instance ends at once (one send, no wait), so the second entry of the same key
    # at the same instant is allowed: it must not reuse the first one's id (nor its message's
    # idempotency key, which would swallow the second message).
    engine, clock, channels = make_engine()
    journey = Journey(id="j", trigger=EventTrigger("go"), entry="send",
                      reentry=ReentryPolicy.after_exit(instance_key="cart_id"),
                      steps={"send": Send("hello", "email")})
    engine.publish(journeys=[journey], content=SIMPLE_CONTENT)
    out = engine.handle_events([ev("go", "c1", clock.now(), cart_id="A"),
                                ev("go", "c1", clock.now(), cart_id="A")])
    assert len({e.enrollment_id for e in out.entered}) == 2
    assert len({m.idempotency_key for m in channels["email"].messages}) == 2


# --- steps ---------------------------------------------------------------------------------


def test_branch_update_profile_and_context():
    engine, clock, channels = make_engine()
    journey = Journey(
        id="j", trigger=EventTrigger("go"), entry="mark",
        steps={
            "mark": UpdateProfile(set={"onboarded": True}, next="branch"),
            "branch": Branch(
                (Case((attr("plan") == "pro") & (ctx("amount") > 10), "sms"),),
                default="email",
            ),
            "sms": Send("hello", "sms"),
            "email": Send("hello", "email"),
        },
    )
    engine.publish(journeys=[journey], content=SIMPLE_CONTENT)
    engine.identify("pro", {"plan": "pro"})
    engine.identify("free", {"plan": "free"})
    engine.handle_event(ev("go", "pro", clock.now(), amount=20))
    engine.handle_event(ev("go", "free", clock.now(), amount=20))
    engine.handle_event(ev("go", "small", clock.now(), amount=5))
    assert [m.customer_id for m in channels["sms"].messages] == ["pro"]
    assert sorted(m.customer_id for m in channels["email"].messages) == ["free", "small"]
    assert engine.profile("pro").attributes == {"plan": "pro", "onboarded": True}


def test_split_is_deterministic_and_follows_weights():
    def run() -> Counter[str]:
        engine, clock, channels = make_engine()
        journey = Journey(
            id="exp", trigger=EventTrigger("go"), entry="split",
            steps={
                "split": Split((SplitPath("a", 3, "email"), SplitPath("b", 1, "sms"))),
                "email": Send("hello", "email"),
                "sms": Send("hello", "sms"),
            },
        )
        engine.publish(journeys=[journey], content=SIMPLE_CONTENT)
        for i in range(2000):
            engine.handle_event(ev("go", f"c{i}", clock.now()))
        return Counter({n: len(ch.messages) for n, ch in channels.items()})

    first, second = run(), run()
    assert first == second
    assert 1400 < first["email"] < 1600 and first["email"] + first["sms"] == 2000


def test_exit_step_and_completion_states():
    engine, clock, _ = make_engine()
    journey = Journey(
        id="j", trigger=EventTrigger("go"), entry="b",
        steps={"b": Branch((Case(ctx("stop") == True, "x"),), default=None),  # noqa: E712
               "x": Exit("stopped by branch")},
    )
    engine.publish(journeys=[journey], content=SIMPLE_CONTENT)
    stop = engine.handle_event(ev("go", "c1", clock.now(), stop=True))
    go_on = engine.handle_event(ev("go", "c2", clock.now(), stop=False))
    assert [(e.status, e.reason) for e in stop.ended] == [("exited", "stopped by branch")]
    assert [(e.status, e.reason) for e in go_on.ended] == [("completed", None)]


def test_exit_criterion_condition_interrupts_a_wait_when_the_profile_changes():
    engine, clock, channels = make_engine()
    journey = Journey(
        id="j", trigger=EventTrigger("go"), entry="wait",
        steps={"wait": Wait(timedelta(days=3), next="send"), "send": Send("hello", "email")},
        exit_criteria=(ExitCriterion("unsubscribed", where=attr("unsubscribed") == True),),  # noqa: E712
    )
    engine.publish(journeys=[journey], content=SIMPLE_CONTENT)
    engine.handle_event(ev("go", "c1", clock.now()))
    clock.advance(days=1)
    out = engine.identify("c1", {"unsubscribed": True})
    assert [(e.status, e.reason) for e in out.ended] == [("exited", "unsubscribed")]
    clock.advance(days=5)
    engine.run_due()
    assert channels["email"].messages == []


def test_send_time_validation_rechecks_the_audience():
    engine, clock, channels = make_engine()
    journey = Journey(
        id="j", trigger=EventTrigger("go"), entry="wait",
        audience=attr("consent") == True,  # noqa: E712
        steps={"wait": Wait(timedelta(hours=1), next="send"), "send": Send("hello", "email")},
    )
    engine.publish(journeys=[journey], content=SIMPLE_CONTENT)
    engine.identify("c1", {"consent": True})
    engine.identify("c2", {"consent": False})
    assert not engine.handle_event(ev("go", "c2", clock.now())).entered
    engine.handle_event(ev("go", "c1", clock.now()))
    engine.identify("c1", {"consent": False})
    clock.advance(hours=2)
    out = engine.run_due()
    assert [(e.status, e.reason) for e in out.ended] == [("exited", "audience no longer matches")]
    assert channels["email"].messages == []


def test_segment_membership_in_trigger_filter():
    engine, clock, _ = make_engine()
    engine.publish(
        segments=[Segment("vip", attr("spend") >= 1000)],
        journeys=[one_send_then_wait(trigger=EventTrigger("go", where=in_segment("vip")))],
        content=SIMPLE_CONTENT,
    )
    engine.identify("rich", {"spend": 5000})
    engine.identify("poor", {"spend": 10})
    assert engine.handle_event(ev("go", "rich", clock.now())).entered
    assert not engine.handle_event(ev("go", "poor", clock.now())).entered


def test_goal_window_and_exit_on_goal_false():
    engine, clock, _ = make_engine()
    journey = one_send_then_wait(goal=Goal("bought", within=timedelta(hours=2), exit_on_goal=False))
    engine.publish(journeys=[journey], content=SIMPLE_CONTENT)
    engine.handle_event(ev("go", "c1", clock.now()))
    engine.handle_event(ev("go", "c2", clock.now()))
    clock.advance(hours=1)
    out = engine.handle_event(ev("bought", "c1", clock.now()))
    assert [g.customer_id for g in out.goals] == ["c1"] and out.ended == ()
    again = engine.handle_event(ev("bought", "c1", clock.now()))
    assert again.goals == ()  # counted once per enrollment
    clock.advance(hours=2)
    assert engine.handle_event(ev("bought", "c2", clock.now())).goals == ()  # window passed
    clock.advance(days=1)
    engine.run_due()
    (c1,) = engine.enrollments("c1")
    assert c1.status == "completed" and c1.converted_at == T0 + timedelta(hours=1)


def test_max_lifetime_expires_a_long_wait():
    engine, clock, _ = make_engine()
    journey = Journey(
        id="j", trigger=EventTrigger("go"), entry="wait",
        steps={"wait": Wait(timedelta(days=3))}, max_lifetime=timedelta(days=10),
    )
    short = Journey(
        id="k", trigger=EventTrigger("go"), entry="wait",
        steps={"wait": Wait(timedelta(days=3), next="again"), "again": Wait(timedelta(days=3))},
        max_lifetime=timedelta(days=4),
    )
    engine.publish(journeys=[journey, short], content=SIMPLE_CONTENT)
    engine.handle_event(ev("go", "c1", clock.now()))
    clock.advance(days=20)
    out = engine.run_due()
    ended = {e.journey_id: (e.status, e.at) for e in out.ended}
    assert ended == {
        "j": ("completed", T0 + timedelta(days=3)),
        "k": ("expired", T0 + timedelta(days=4)),
    }


def test_start_journey_api_and_unknown_journey():
    engine, _clock, channels = make_engine()
    engine.publish(
        journeys=[one_send_then_wait("api", trigger=ApiTrigger())], content=SIMPLE_CONTENT
    )
    out = engine.start_journey("api", "c1", {"order": 7})
    assert out.entered
    assert channels["email"].messages[0].enrollment_id.startswith("api:c1:1.")
    with pytest.raises(UnknownJourneyError):
        engine.start_journey("nope", "c1")


def test_remove_from_journey():
    engine, clock, _ = make_engine()
    engine.publish(journeys=[one_send_then_wait()], content=SIMPLE_CONTENT)
    engine.handle_event(ev("go", "c1", clock.now()))
    out = engine.remove_from_journey("c1", "j")
    assert [(e.status, e.reason) for e in out.ended] == [("removed", "removed by host")]
    assert engine.storage.next_wake_at() is None


def test_remove_from_a_journey_never_published_raises_and_changes_nothing():
    engine, clock, _ = make_engine()
    engine.publish(journeys=[one_send_then_wait()], content=SIMPLE_CONTENT)
    engine.handle_event(ev("go", "c1", clock.now()))
    before = engine.customer_state("c1")
    with pytest.raises(UnknownJourneyError, match="no journey 'J' has been published"):
        engine.remove_from_journey("c1", "J")  # a typo must not pass for a removal
    assert engine.customer_state("c1") == before


def test_new_version_drains_the_old_one():
    engine, clock, _ = make_engine()
    v1 = one_send_then_wait()
    engine.publish(journeys=[v1], content=SIMPLE_CONTENT)
    engine.handle_event(ev("go", "c1", clock.now()))
    v2 = Journey(id="j", version=2, trigger=EventTrigger("go"), entry="send",
                 steps={"send": Send("hello", "sms")})
    engine.publish(journeys=[v2])
    engine.handle_event(ev("go", "c2", clock.now()))
    assert not engine.handle_event(ev("go", "c1", clock.now())).entered  # still in v1
    clock.advance(days=1)
    engine.run_due()
    assert [(e.version, e.status) for e in engine.enrollments("c1")] == [(1, "completed")]
    assert [(e.version, e.status) for e in engine.enrollments("c2")] == [(2, "completed")]


def test_published_version_cannot_change_and_failed_publish_keeps_old_set():
    engine, clock, _ = make_engine()
    engine.publish(journeys=[one_send_then_wait()], content=SIMPLE_CONTENT)
    changed = Journey(id="j", trigger=EventTrigger("go"), entry="send",
                      steps={"send": Send("hello", "sms")})
    with pytest.raises(DefinitionError, match="already published"):
        engine.publish(journeys=[changed])
    broken = Journey(id="other", trigger=EventTrigger("go"), entry="missing", steps={})
    with pytest.raises(DefinitionError):
        engine.publish(journeys=[broken])
    assert [j.id for j in engine.definitions.journeys] == ["j"]
    assert engine.handle_event(ev("go", "c1", clock.now())).entered



def test_a_version_below_one_already_published_is_refused_since_no_one_could_enter_it():
    engine, clock, _ = make_engine()

    def version(n: int) -> Journey:
        return Journey(id="j", version=n, trigger=EventTrigger("go"), entry="wait",
                       steps={"wait": Wait(timedelta(hours=n))})

    engine.publish(journeys=[version(1), version(5)])
    generation = engine.generation
    with pytest.raises(DefinitionError, match=(
        r"journey 'j' v3: version 5 is already published; a new version must be numbered "
        r"above it"
    )):
        engine.publish(journeys=[version(3)])
    assert engine.generation == generation
    assert engine.publish(journeys=[version(1), version(5)]) == generation  # as published
    assert engine.handle_event(ev("go", "c1", clock.now())).entered[0].version == 5
    engine.publish(journeys=[version(6)])
    assert engine.handle_event(ev("go", "c2", clock.now())).entered[0].version == 6


def test_a_version_below_one_is_a_problem_of_its_own_for_a_journey_never_published():
    # Nothing of the journey is published: no higher version to name, only validation's.
    engine, _clock, _ = make_engine()
    journey = Journey(id="j", version=-1, trigger=EventTrigger("go"), entry="wait",
                      steps={"wait": Wait(timedelta(hours=1))})
    with pytest.raises(DefinitionError, match="journey 'j' v-1") as caught:
        engine.publish(journeys=[journey])
    assert not any("already published" in str(p) for p in caught.value.problems)

# --- input errors and delivery ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"customer_id": ""}, "customer_id"),
        ({"customer_id": 5}, "customer_id"),
        ({"name": None}, "name"),
        ({"timestamp": T0.replace(tzinfo=None)}, "timezone-aware"),
        ({"timestamp": "2026-01-01"}, "timestamp"),
        ({"properties": [1, 2]}, "properties"),
        ({"properties": {1: "x"}}, "property names"),
    ],
)
def test_malformed_events_raise_and_store_nothing(kwargs, message):
    base = {"customer_id": "c1", "name": "go", "timestamp": T0, "properties": {}}
    base.update(kwargs)
    with pytest.raises(InvalidEventError, match=message):
        Event(**base)  # type: ignore[arg-type]
    engine, _, _ = make_engine()
    with pytest.raises(InvalidEventError):
        engine.handle_event({"customer_id": "c1"})  # type: ignore[arg-type]
    assert engine.enrollments("c1") == []


def test_manual_clock_refuses_to_go_backwards_and_naive_times():
    _, clock, _ = make_engine()
    with pytest.raises(ClockError):
        clock.set(T0 - timedelta(seconds=1))
    with pytest.raises(ClockError):
        clock.set(T0.replace(tzinfo=None))
    with pytest.raises(ClockError):
        clock.advance(timedelta(seconds=-1))


def test_failing_channel_is_retried_with_the_same_key():
    from cjo import Channel, DeliveryResult, Message

    class Flaky(Channel):
        def __init__(self) -> None:
            self.keys: list[str] = []

        def send(self, message: Message) -> DeliveryResult:
            self.keys.append(message.idempotency_key)
            if len(self.keys) < 3:
                raise ConnectionError("smtp down")
            return DeliveryResult("delivered")

    engine, clock, _channels = make_engine()
    flaky = Flaky()
    engine.channels["email"] = flaky
    engine.publish(journeys=[one_send_then_wait()], content=SIMPLE_CONTENT)
    engine.handle_event(ev("go", "c1", clock.now()))
    key = flaky.keys[0]
    entry = engine.storage.outbox_entry(key)
    assert entry is not None and entry.status == "pending" and "smtp down" in entry.last_error
    assert engine.dispatch_pending() == 0  # not before the back-off
    clock.advance(minutes=1)
    assert engine.dispatch_pending() == 1
    clock.advance(minutes=2)
    engine.dispatch_pending()
    assert flaky.keys == [key, key, key]
    assert engine.storage.outbox_entry(key).status == "delivered"


def test_a_customer_erased_and_back_gets_new_enrollment_ids_and_keys():
    engine, clock, channels = make_engine()
    engine.publish(journeys=[one_send_then_wait()], content=SIMPLE_CONTENT)
    engine.handle_event(ev("go", "c1", clock.now()))
    engine.erase_customer("c1")
    assert engine.enrollments("c1") == []
    assert engine.profile("c1") is None
    clock.advance(seconds=1)
    engine.handle_event(ev("go", "c1", clock.now()))
    keys = [m.idempotency_key for m in channels["email"].messages]
    assert len(keys) == 2
    assert len(set(keys)) == 2


def test_profile_updates_share_the_group_with_events_in_order():
    from cjo import ProfileUpdate

    engine, clock, channels = make_engine()
    journey = Journey(
        id="j", trigger=EventTrigger("go", where=attr("vip") == True), entry="send",  # noqa: E712
        steps={"send": Send("hello", "email")},
    )
    engine.publish(journeys=[journey], content=SIMPLE_CONTENT)
    out = engine.handle_events([
        ev("go", "a", clock.now()),                         # before the update: not a vip yet
        ProfileUpdate("a", {"vip": True, "first_name": "Ann"}),
        ev("go", "a", clock.now()),
        ProfileUpdate("b", {"vip": True}, timezone="Europe/Paris", locale="fr"),
    ])
    assert [e.customer_id for e in out.entered] == ["a"]
    assert channels["email"].messages[0].fields == {"subject": "Hello Ann", "text": "Hi"}
    profile = engine.profile("b")
    assert profile is not None
    assert (profile.attributes, profile.timezone, profile.locale) == (
        {"vip": True}, "Europe/Paris", "fr"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"customer_id": ""}, "customer_id"),
        ({"attributes": [1]}, "attributes must be a mapping"),
        ({"attributes": {2: 1}}, "attribute names"),
        ({"unset": "plan"}, "unset"),
        ({"timezone": 5}, "timezone"),
    ],
)
def test_malformed_profile_updates_raise(kwargs, message):
    from cjo import ProfileUpdate

    base: dict[str, object] = {"customer_id": "c1"}
    base.update(kwargs)
    with pytest.raises(InvalidEventError, match=message):
        ProfileUpdate(**base)  # type: ignore[arg-type]
    engine, _, _ = make_engine()
    with pytest.raises(InvalidEventError):
        engine.handle_events([object()])  # type: ignore[list-item]
