"""The customer record and the definitions store, tried as a user would, on every storage:
republished content, workers started before a publish, concurrent publishers, records written
by a newer cjo, keyed goals, re-entry that does not depend on when the worker ran."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cjo import (
    ContentItem,
    ContentSample,
    Engine,
    Event,
    ExitCriterion,
    Goal,
    InactivityTrigger,
    Journey,
    ManualClock,
    Profile,
    RecordingChannel,
    ReentryPolicy,
    Segment,
    Send,
    Variant,
    VersionChange,
    Wait,
    WaitForEvent,
    attr,
    ctx,
    prop,
)
from cjo.conditions import Compare
from cjo.errors import CorruptRecordError
from cjo.model.triggers import EventTrigger
from cjo.runtime.kinds.triggers import InactivityTriggerKind
from cjo.storage.codec import encode_state
from tests.helpers import Factory
from tests.helpers import event_with_id as _event

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)





def _note(text: str) -> ContentItem:
    return ContentItem("note", variants=(Variant("email", {"subject": "Note", "text": text}),))


def _welcome(version: int = 1) -> Journey:
    return Journey(
        id="welcome", version=version, trigger=EventTrigger("signed_up"), entry="mail",
        steps={"mail": Send("note", "email", next="wait"), "wait": Wait(DAY, next="again"),
               "again": Send("note", "email")},
    )


def test_republished_content_renders_at_once_and_messages_record_its_version(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    channel = RecordingChannel()
    engine = Engine(storage_factory(), channels={"email": channel}, clock=clock)
    engine.publish(journeys=[_welcome()], content=[_note("old text")])
    engine.handle_event(_event("signed_up", "c1", T0, "e1"))
    # Another process republishes the content while c1 waits.
    other = Engine(storage_factory(), channels={"email": RecordingChannel()}, clock=clock)
    other.publish(content=[_note("new text")])
    clock.advance(DAY)
    engine.run_due()
    assert [m.fields["text"] for m in channel.messages] == ["old text", "new text"]
    assert [m.content_version for m in channel.messages] == [1, 2]


def test_a_worker_started_before_a_publish_runs_what_was_published_after(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    channel = RecordingChannel()
    worker = Engine(storage_factory(), channels={"email": channel}, clock=clock)
    worker.run_due()  # the worker is up and has looked at the (empty) definitions
    publisher = Engine(storage_factory(), channels={"email": RecordingChannel()}, clock=clock)
    publisher.publish(journeys=[_welcome()], content=[_note("hi")])
    # The worker takes the event and knows the journey published after it started.
    worker.handle_event(_event("signed_up", "c1", T0, "e1"))
    publisher.publish(journeys=[_welcome(version=2)])
    worker.handle_event(_event("signed_up", "c2", T0, "e2"))
    clock.advance(DAY)
    worker.run_due()
    assert sorted((m.customer_id, m.journey_version) for m in channel.messages) == [
        ("c1", 1), ("c1", 1), ("c2", 2), ("c2", 2),
    ]
    assert worker.generation == publisher.generation == 2


def test_concurrent_publishers_never_lose_each_others_definitions(
    storage_factory: Factory,
) -> None:
    engines = [Engine(storage_factory(), clock=ManualClock(T0)) for _ in range(4)]
    for e in engines:
        assert e.generation == 0  # every engine has read generation 0 before anyone publishes
    barrier = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def publish(i: int, engine: Engine) -> None:
        try:
            barrier.wait()
            for n in range(3):
                engine.publish(journeys=[Journey(
                    f"j{i}-{n}", entry="x", steps={"x": Wait(HOUR)}
                )])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(i, e)) for i, e in enumerate(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    fresh = Engine(storage_factory(), clock=ManualClock(T0))
    assert sorted(j.id for j in fresh.definitions.journeys) == sorted(
        f"j{i}-{n}" for i in range(4) for n in range(3)
    )
    assert fresh.generation == 12


def test_a_record_written_by_a_newer_version_is_read_and_its_fields_kept(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    storage = storage_factory()
    engine = Engine(storage, channels={"email": RecordingChannel()}, clock=clock)
    engine.publish(journeys=[_welcome()], content=[_note("hi")])
    engine.handle_event(_event("signed_up", "c1", T0, "e1"))
    # A newer cjo wrote the record: a layout number this one does not know, a new top-level
    # field and a new field inside the enrollment.
    with storage.customer("c1", T0) as session:
        state = session.load()
        assert state is not None
        data = json.loads(encode_state(state))
        data["v"] = 99
        data["ledger"] = [{"channel": "email", "at": 1}]
        data["enr"][0]["priority"] = 5
        session.save(_decode(data, "c1"), [], [])
    clock.advance(DAY)
    engine.run_due()
    stored = engine.customer_state("c1")
    assert stored is not None
    assert stored.extra["ledger"] == [{"channel": "email", "at": 1}]
    assert [e.status for e in engine.enrollments("c1")] == ["completed"]


def _decode(data: dict[str, Any], customer_id: str) -> Any:
    from cjo.storage.codec import state_from_dict

    return state_from_dict(data, customer_id)


def test_an_undecodable_record_is_set_aside_and_the_worker_goes_on() -> None:
    from cjo.storage.codec import state_from_dict

    with pytest.raises(CorruptRecordError, match="'c9'"):
        state_from_dict({"v": 1, "enr": "garbage"}, "c9")


def _cart_journey(goal_where: Any) -> Journey:
    return Journey(
        id="cart", trigger=EventTrigger("added_to_cart"), entry="wait",
        steps={
            "wait": WaitForEvent("purchased", timeout=4 * HOUR, on_timeout="mail",
                                 where=prop("cart_id") == ctx("cart_id")),
            "mail": Send("note", "email"),
        },
        goal=Goal("purchased", where=goal_where, within=7 * DAY),
        reentry=ReentryPolicy.after_exit(instance_key="cart_id"),
    )


def test_each_keyed_instance_reacts_only_to_its_own_purchase(storage_factory: Factory) -> None:
    clock = ManualClock(T0)
    channel = RecordingChannel()
    engine = Engine(storage_factory(), channels={"email": channel}, clock=clock)
    engine.publish(journeys=[_cart_journey(prop("cart_id") == ctx("cart_id"))],
                   content=[_note("your cart")])
    engine.handle_event(_event("added_to_cart", "c1", T0, "a1", cart_id="A"))
    engine.handle_event(_event("added_to_cart", "c1", T0, "b1", cart_id="B"))
    clock.advance(HOUR)
    out = engine.handle_event(_event("purchased", "c1", T0 + HOUR, "p1", cart_id="A"))
    assert [(e.status, e.enrollment_id.split(":")[2]) for e in out.ended] == [("converted", "A")]
    clock.advance(4 * HOUR)
    engine.run_due()
    assert [m.enrollment_id.split(":")[2] for m in channel.messages] == ["B"]


def test_a_customer_is_in_at_most_the_limit_of_one_keyed_journeys_instances(
    storage_factory: Factory,
) -> None:
    # A client sending a new cart id with every event grew the record, and each event's cost,
    # with every instance it opened.
    from cjo import Limits

    clock = ManualClock(T0)
    engine = Engine(storage_factory(), channels={"email": RecordingChannel()}, clock=clock,
                    limits=Limits(max_instances_per_journey=3))
    engine.publish(journeys=[_cart_journey(prop("cart_id") == ctx("cart_id"))],
                   content=[_note("your cart")])
    outcomes = [engine.handle_event(_event("added_to_cart", "c1", T0, f"a{n}", cart_id=f"K{n}"))
                for n in range(5)]
    assert [len(o.entered) for o in outcomes] == [1, 1, 1, 0, 0]
    assert [n.reason for n in outcomes[3].not_entered] == [
        "3 instances of the journey are active already; the limit is 3 "
        "(Limits.max_instances_per_journey)"
    ]
    state = engine.customer_state("c1")
    assert state is not None and len(state.enrollments) == 3
    # An instance that ends makes room; a repeat of a running key is refused as before.
    engine.handle_event(_event("purchased", "c1", T0, "p0", cart_id="K0"))
    again = engine.handle_event(_event("added_to_cart", "c1", T0, "a1-again", cart_id="K1"))
    assert again.entered == ()
    assert len(engine.handle_event(_event("added_to_cart", "c1", T0, "a9", cart_id="K9")).entered) == 1


def test_a_field_compared_with_a_field_round_trips_through_publish(
    storage_factory: Factory,
) -> None:
    engine = Engine(storage_factory(), channels={"email": RecordingChannel()},
                    clock=ManualClock(T0))
    journey = _cart_journey(prop("cart_id") == ctx("cart_id"))
    engine.publish(journeys=[journey], content=[_note("x")])
    fresh = Engine(storage_factory(), clock=ManualClock(T0))
    assert fresh.definitions.journeys == (journey,)


@pytest.mark.parametrize("worker_first", [True, False])
def test_cooldown_counts_an_enrollment_that_ended_in_the_same_transaction(
    storage_factory: Factory, worker_first: bool,
) -> None:
    # The first enrollment ends at its wake-up; whether a worker fired it before the next
    # trigger or the trigger's own transaction catches it up, the cooldown must count it.
    clock = ManualClock(T0)
    channel = RecordingChannel()
    engine = Engine(storage_factory(), channels={"email": channel}, clock=clock)
    engine.publish(journeys=[Journey(
        "browse", trigger=EventTrigger("viewed"), entry="wait",
        steps={"wait": Wait(HOUR, next="mail"), "mail": Send("note", "email")},
        reentry=ReentryPolicy.after_cooldown(DAY),
    )], content=[_note("seen it?")])
    engine.handle_event(_event("viewed", "c1", T0, "v1"))
    clock.advance(2 * HOUR)
    if worker_first:
        engine.run_due()
    out = engine.handle_event(_event("viewed", "c1", clock.now(), "v2"))
    assert out.entered == ()
    assert len(channel.messages) == 1


def test_cooldown_counts_an_exit_on_the_trigger_event_itself(storage_factory: Factory) -> None:
    clock = ManualClock(T0)
    engine = Engine(storage_factory(), clock=clock)
    engine.publish(journeys=[Journey(
        "j", trigger=EventTrigger("ping"), entry="wait", steps={"wait": Wait(DAY)},
        exit_criteria=(ExitCriterion("pinged again", event="ping"),),
        reentry=ReentryPolicy.after_cooldown(DAY),
    )])
    engine.handle_event(_event("ping", "c1", T0, "p1"))
    clock.advance(HOUR)
    out = engine.handle_event(_event("ping", "c1", clock.now(), "p2"))
    assert [e.status for e in out.ended] == ["exited"]
    assert out.entered == ()


def test_inactivity_fires_exactly_after_the_last_qualifying_event(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    channel = RecordingChannel()
    engine = Engine(storage_factory(), channels={"email": channel}, clock=clock)
    engine.publish(journeys=[Journey(
        "win_back", trigger=InactivityTrigger("purchased", after=14 * DAY), entry="mail",
        steps={"mail": Send("note", "email")},
    )], content=[_note("we miss you")])
    engine.identify("c1", {"first_name": "Ada"})  # created at T0
    engine.identify("c2", {"first_name": "Ben"})
    clock.advance(3 * DAY)
    # Stamped earlier than it arrives: the quiet spell counts from the event's own instant.
    engine.handle_event(_event("purchased", "c2", T0 + 2 * DAY, "p1"))
    assert engine.storage.next_wake_at() == T0 + 14 * DAY
    clock.set(T0 + 30 * DAY)
    engine.run_due()
    assert sorted((m.customer_id, m.created_at) for m in channel.messages) == [
        ("c1", T0 + 14 * DAY), ("c2", T0 + 16 * DAY),
    ]
    # Once per quiet spell: nothing more until the customer buys again.
    clock.set(T0 + 90 * DAY)
    engine.run_due()
    assert len(channel.messages) == 2


def test_inputs_arm_only_the_inactivity_triggers_with_something_to_set(
    storage_factory: Factory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A programme with many quiet journeys: each input of each customer used to arm every one,
    # though nearly all are timed already or fired for their quiet spell.
    clock = ManualClock(T0)
    channel = RecordingChannel()
    engine = Engine(storage_factory(), channels={"email": channel}, clock=clock)
    engine.publish(journeys=[Journey(
        f"quiet{i}", trigger=InactivityTrigger(f"e{i}", after=(i + 1) * DAY), entry="mail",
        steps={"mail": Send("note", "email")}, reentry=ReentryPolicy.after_exit(),
    ) for i in range(6)], content=[_note("we miss you")])
    engine.identify("c1", {"first_name": "Ada"})  # created at T0: spells count from creation
    clock.advance(HOUR)
    engine.handle_event(_event("e3", "c1", clock.now(), "a"))  # quiet3's spell from its event
    clock.set(T0 + 4 * DAY + HOUR)  # quiet0..quiet3 fire (quiet3 at T0 + 4d + 1h)
    engine.run_due()
    assert [m.journey_id for m in channel.messages] == ["quiet0", "quiet1", "quiet2", "quiet3"]
    armed: list[str] = []
    original = InactivityTriggerKind.arm

    def arm(self: InactivityTriggerKind, d: Any, cj: Any, *rest: Any) -> None:
        armed.append(cj.journey.id)
        original(self, d, cj, *rest)

    monkeypatch.setattr(InactivityTriggerKind, "arm", arm)
    engine.handle_event(_event("other", "c1", clock.now(), "b"))
    engine.handle_event(_event("e0", "c1", clock.now(), "c"))  # a new spell: timed by the event
    assert armed == []
    clock.set(T0 + 10 * DAY)
    engine.run_due()
    assert [m.journey_id for m in channel.messages][4:] == ["quiet4", "quiet0", "quiet5"]
    assert armed == []
    # A customer new to the journeys is armed for each of them, as before.
    engine.identify("c2", {"first_name": "Ben"})
    assert sorted(armed) == [f"quiet{i}" for i in range(6)]


def test_a_late_worker_never_releases_a_storm(storage_factory: Factory) -> None:
    # Send, wait a minute, send again, forever: a worker a day late would owe 1,440 messages.
    clock = ManualClock(T0)
    channel = RecordingChannel()
    engine = Engine(storage_factory(), channels={"email": channel}, clock=clock)
    engine.publish(journeys=[Journey(
        "nag", trigger=EventTrigger("go"), entry="mail",
        steps={"mail": Send("note", "email", next="wait"),
               "wait": Wait(timedelta(minutes=1), next="mail")},
        max_lifetime=timedelta(days=30),
    )], content=[_note("again")])
    engine.handle_event(_event("go", "c1", T0, "g1"))
    clock.advance(DAY)
    engine.run_due()
    assert len(channel.messages) == 1 + engine.limits.max_messages_per_catch_up
    skipped = engine.activities(T0, T0 + 2 * DAY, customer_id="c1")
    assert sum(a.kind == "send_skipped" for a in skipped) == 1440 - 10
    # The schedule went on: the next wake-up is the next minute, not a day of backlog.
    assert engine.storage.next_wake_at() == T0 + DAY + timedelta(minutes=1)


def _self_containing() -> dict[str, Any]:
    d: dict[str, Any] = {}
    d["me"] = d
    return d


def test_hostile_input_is_refused_alike_and_stores_nothing(storage_factory: Factory) -> None:
    import math
    from decimal import Decimal

    from cjo import CjoError, InvalidEventError, Split, SplitPath

    clock = ManualClock(T0)
    engine = Engine(storage_factory(), channels={"email": RecordingChannel()}, clock=clock)
    engine.publish(journeys=[_welcome()], content=[_note("hi")])
    generation = engine.generation
    bad_events: list[Callable[[], object]] = [
        lambda: _event("signed_up", "c1", T0, "x1", total=Decimal("99.90")),
        lambda: _event("signed_up", "c1", T0, "x2", total=math.nan),
        lambda: _event("signed_up", "c1", T0, "x3", total=math.inf),
        lambda: _event("signed_up", "c1", T0, "x4", cart=_self_containing()),
        lambda: _event("signed_up", "c\ud800", T0, "x5"),
        lambda: _event("signed_up", "c\x00", T0, "x6"),
        lambda: _event("signed_up", "   ", T0, "x7"),
        lambda: _event("signed_up", "c" * 1_000_000, T0, "x8"),
        lambda: _event("", "c1", T0, "x9"),
        lambda: engine.identify("c1", {"score": math.nan}),
        lambda: engine.remove_from_journey(42),  # type: ignore[arg-type]
    ]
    def attempt(make: Callable[[], object]) -> None:
        made = make()
        if isinstance(made, Event):
            engine.handle_event(made)

    for make in bad_events:
        with pytest.raises(InvalidEventError):
            attempt(make)
    assert engine.customer_state("c1") is None
    bad_journeys = [
        Journey("v", version=2**40, entry="w", steps={"w": Wait(HOUR)}),
        Journey("d", entry="w", steps={"w": Wait(timedelta(days=999_999_999))}),
        Journey("s", entry="s", steps={"s": Split((SplitPath("a", math.inf),
                                                   SplitPath("b", 1.0)))}),
        Journey("t", entry="w", steps={"w": Wait(timedelta(seconds=1))}),
    ]
    for journey in bad_journeys:
        with pytest.raises(CjoError):
            engine.publish(journeys=[journey])
    assert engine.generation == generation
    assert Engine(storage_factory(), clock=clock).definitions == engine.definitions


def test_what_the_queries_return_is_the_hosts_to_change(storage_factory: Factory) -> None:
    """``customer_state``, ``profile`` and ``enrollments`` return copies: changing one, down to
    a list inside an attribute or the context, changes nothing stored, decided or read back."""
    email = RecordingChannel()
    engine = Engine(storage_factory(), {"email": email}, ManualClock(T0))
    engine.publish(content=[_note("hi")], journeys=[Journey(
        "pro", trigger=EventTrigger("go"), audience=attr("plan") == "pro", entry="w",
        steps={"w": Wait(DAY, next="m"), "m": Send("note", "email")},
    )])
    engine.identify("ann", {"plan": "pro", "tags": ["a"]})
    engine.handle_event(_event("go", "ann", T0, "g1", plan="pro", items=[1]))
    state = engine.customer_state("ann")
    assert state is not None
    state.profile.attributes["plan"] = "free"  # type: ignore[index]
    state.profile.attributes["tags"].append("b")
    state.enrollments[0].context["items"].append(2)
    profile = engine.profile("ann")
    assert profile is not None
    profile.attributes["tags"].append("c")
    engine.enrollments("ann")[0].context["items"].append(3)

    assert engine.profile("ann") == Profile("ann", {"plan": "pro", "tags": ["a"]})
    assert [e.context for e in engine.enrollments("ann")] == [{"plan": "pro", "items": [1]}]
    engine.identify("ann", {"seen": True})  # a write after the changes keeps none of them
    fresh = storage_factory()  # another handle on the same data reads what was stored
    stored = fresh.peek("ann")
    assert stored is not None and stored.profile is not None
    assert stored.profile.attributes == {"plan": "pro", "tags": ["a"], "seen": True}
    assert stored.enrollments[0].context == {"plan": "pro", "items": [1]}


def test_what_the_host_hands_in_is_copied_down_to_nested_values(
    storage_factory: Factory,
) -> None:
    """An event's properties, a profile's attributes and a start's context are the host's
    objects: changing a list or dict inside one after the call changes nothing kept (the
    enrollment's context, what a wait received, the profile), on any storage."""
    engine = Engine(storage_factory(), {"email": RecordingChannel()}, ManualClock(T0))
    engine.publish(content=[_note("hi")], journeys=[
        Journey("cart", trigger=EventTrigger("carted"), entry="w", steps={
            "w": WaitForEvent("paid", timeout=DAY, on_event="m", on_timeout="m"),
            "m": Send("note", "email", next="rest"), "rest": Wait(DAY)}),
        Journey("manual", entry="rest", steps={"rest": Wait(DAY)}),
    ])
    carted = _event("carted", "ann", T0, "c1", items=[{"sku": "a"}])
    engine.handle_event(carted)
    paid = _event("paid", "ann", T0, "p1", lines={"a": [1]})
    engine.handle_event(paid)
    attributes: dict[str, Any] = {"tags": ["vip"], "address": {"city": "Oslo"}}
    engine.identify("ann", attributes)
    context: dict[str, Any] = {"basket": ["x"]}
    engine.start_journey("manual", "ann", context)

    carted.properties["items"][0]["sku"] = "changed"
    carted.properties["items"].append("more")
    paid.properties["lines"]["a"].append(2)
    attributes["tags"].append("changed")
    attributes["address"]["city"] = "changed"
    context["basket"].append("changed")

    for storage in (engine.storage, storage_factory()):
        stored = storage.peek("ann")
        assert stored is not None and stored.profile is not None
        assert stored.profile.attributes == {"tags": ["vip"], "address": {"city": "Oslo"}}
        contexts = {e.journey_id: e.context for e in stored.enrollments}
        assert contexts == {
            "cart": {"items": [{"sku": "a"}], "received": {"paid": {"lines": {"a": [1]}}}},
            "manual": {"basket": ["x"]},
        }


def test_publishing_the_same_definitions_again_from_code_is_no_change(
    storage_factory: Factory,
) -> None:
    """A deploy publishes the definitions in its code at every start. One whose condition
    holds a tuple (read back from storage as a list) is the same definition: no conflict, no
    new generation, no new content version."""
    def definitions() -> tuple[list[Journey], list[ContentItem]]:
        plans = Compare(attr("plan").ref, "in", ("pro", "team"))
        content = ContentItem("note", variants=(
            Variant("email", {"subject": "Hi", "text": "Hi {{ profile.tags | join: ',' }}"}),
        ), sample=ContentSample(profile={"tags": ("a", "b")}))
        return [Journey("j", trigger=EventTrigger("go", where=plans), entry="m",
                        steps={"m": Send("note", "email")})], [content]

    journeys, content = definitions()
    first = Engine(storage_factory(), {"email": RecordingChannel()}, ManualClock(T0))
    generation = first.publish(journeys=journeys, content=content)
    journeys, content = definitions()
    again = Engine(storage_factory(), {"email": RecordingChannel()}, ManualClock(T0))
    assert again.publish(journeys=journeys, content=content) == generation
    assert [c.version for c in again.definitions.content] == [1]


def test_a_published_version_does_not_change_with_the_objects_it_was_published_from(
    storage_factory: Factory,
) -> None:
    """"A published version cannot be changed": not by editing the dict its steps were given
    in (to build the next version from it), nor what ``engine.definitions`` returned (its
    mappings are read-only), nor the map a migration was given."""
    content = [ContentItem(c, variants=(Variant("email", {"subject": c, "text": c}),))
               for c in ("old", "new", "other")]
    email = RecordingChannel()
    clock = ManualClock(T0)
    engine = Engine(storage_factory(), {"email": email}, clock)
    steps: dict[str, Any] = {"w": Wait(DAY, next="m"), "m": Send("old", "email")}
    engine.publish(content=content, journeys=[
        Journey("j", version=1, trigger=EventTrigger("go"), entry="w", steps=steps)])
    engine.handle_event(_event("go", "ann", T0, "g1"))
    steps["m"] = Send("new", "email")  # the next version, built from the same dict
    mapping = {"w": "w", "m": "m"}
    engine.publish(running={"j": VersionChange.migrate(mapping)}, journeys=[
        Journey("j", version=2, trigger=EventTrigger("go"), entry="w", steps=steps)])
    mapping["m"] = "w"
    engine.handle_event(_event("go", "bob", T0, "g2"))
    v2 = engine.definitions.journeys[1]
    with pytest.raises(TypeError):  # a read-only mapping
        v2.steps["m"] = Send("other", "email")  # type: ignore[index]
    engine.publish(segments=[Segment("vip", attr("vip") == True)])  # noqa: E712
    clock.advance(2 * DAY)
    engine.run_due()
    assert sorted((m.customer_id, m.journey_version, m.content_id) for m in email.messages) == [
        ("ann", 2, "new"), ("bob", 2, "new")]
    for definitions in (engine.definitions, Engine(storage_factory()).definitions):
        assert [(j.version, j.steps["m"]) for j in definitions.journeys] == [
            (1, Send("old", "email")), (2, Send("new", "email"))]
        assert [c.steps for c in definitions.version_changes] == [{"w": "w", "m": "m"}]
