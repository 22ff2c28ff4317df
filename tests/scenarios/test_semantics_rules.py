"""Journey rules of docs/semantics.md that no other test holds to the code: priorities across
trigger kinds, goals of a paused journey, exact and calendar waits, long waits, experiments.
Each drives a real engine on a manual clock."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cjo import (
    AttributeTrigger,
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    Goal,
    Journey,
    Limits,
    ManualClock,
    Outcome,
    ProfileRule,
    RecordingChannel,
    ReentryPolicy,
    Segment,
    SegmentTrigger,
    Send,
    Split,
    SplitPath,
    Variant,
    Wait,
    WaitForEvent,
    WaitUntil,
    attr,
    performed,
)
from cjo.errors import DefinitionError
from cjo.runtime.kinds.flow import split_fraction
from cjo.segments.rules import copy
from tests.helpers import Factory

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
NOTE = ContentItem("note", variants=(Variant("email", {"subject": "Note", "text": "Hi"}),))
_ids = iter(range(1_000_000))


class Host:
    """An engine on a manual clock, with a recording email channel."""

    def __init__(self, storage_factory: Factory | None = None, start: datetime = T0,
                 **options: Any) -> None:
        self.storage_factory, self.options = storage_factory, options
        self.clock = ManualClock(start)
        self.email = RecordingChannel()
        self.engine = self._engine()

    def _engine(self) -> Engine:
        storage = self.storage_factory() if self.storage_factory is not None else None
        return Engine(storage, {"email": self.email}, self.clock, **self.options)

    def restart(self) -> None:
        """A new engine (a restarted process) on the same database."""
        self.engine = self._engine()

    def send(self, name: str, customer: str = "ann", **properties: Any) -> Outcome:
        return self.engine.handle_event(Event(
            customer_id=customer, name=name, timestamp=self.clock.now(), properties=properties,
            event_id=f"r{next(_ids)}"))

    def sent(self) -> list[tuple[str, datetime]]:
        return [(m.customer_id, m.created_at) for m in self.email.messages]


def _grouped(jid: str, priority: int, trigger: Any, **more: Any) -> Journey:
    return Journey(jid, trigger=trigger, entry="w", priority=priority, exclusive_group="offers",
                   steps={"w": Wait(DAY)}, **more)


# --- priority across trigger kinds ------------------------------------------------------------

BUYERS = Segment("buyers", performed("purchase"))


@pytest.mark.parametrize(("segment_priority", "event_priority", "winner", "loser"), [
    (1, 5, "by_event", "by_segment"),
    (5, 1, "by_segment", "by_event"),
])
def test_one_event_enters_the_highest_priority_journey_whatever_starts_it(
    storage_factory: Factory, segment_priority: int, event_priority: int, winner: str,
    loser: str,
) -> None:
    """"When one input qualifies a customer for several journeys that a concurrency limit or an
    exclusive group keeps apart, the highest priority enters": a journey the event starts
    through the segment it makes the customer enter competes with one it starts itself."""
    host = Host(storage_factory)
    host.engine.publish(segments=[BUYERS], journeys=[
        _grouped("by_segment", segment_priority, SegmentTrigger("buyers")),
        _grouped("by_event", event_priority, EventTrigger("purchase")),
    ])
    out = host.send("purchase")
    assert [e.journey_id for e in out.entered] == [winner]
    assert [(n.journey_id, n.reason) for n in out.not_entered] == [
        (loser, f"exclusive group 'offers': in journey {winner!r}")]


def test_journeys_one_segment_change_starts_enter_by_priority_not_by_id() -> None:
    host = Host()
    host.engine.publish(segments=[BUYERS], journeys=[
        _grouped("a_low", 1, SegmentTrigger("buyers")),
        _grouped("z_high", 5, SegmentTrigger("buyers")),
    ])
    out = host.send("purchase")
    assert [e.journey_id for e in out.entered] == ["z_high"]
    assert [n.journey_id for n in out.not_entered] == ["a_low"]


def test_journeys_several_segment_changes_start_enter_by_priority() -> None:
    host = Host()
    host.engine.publish(
        segments=[Segment("a_buyers", performed("purchase")),
                  Segment("b_buyers", performed("purchase"))],
        journeys=[_grouped("first", 1, SegmentTrigger("a_buyers")),
                  _grouped("second", 5, SegmentTrigger("b_buyers"))])
    assert [e.journey_id for e in host.send("purchase").entered] == ["second"]


def test_an_attribute_a_profile_rule_changes_competes_with_the_events_own_trigger() -> None:
    host = Host()
    host.engine.publish(
        profile_rules=[ProfileRule("plan", "upgraded", (copy("plan", prop="plan"),))],
        journeys=[_grouped("by_event", 1, EventTrigger("upgraded")),
                  _grouped("by_attribute", 5, AttributeTrigger("plan"))])
    out = host.send("upgraded", plan="pro")
    assert [e.journey_id for e in out.entered] == ["by_attribute"]
    assert [n.journey_id for n in out.not_entered] == ["by_event"]


def test_a_profile_change_enters_the_highest_of_its_segment_and_attribute_journeys() -> None:
    host = Host()
    host.engine.publish(
        segments=[Segment("pros", attr("plan") == "pro")],
        journeys=[_grouped("by_segment", 1, SegmentTrigger("pros")),
                  _grouped("by_attribute", 5, AttributeTrigger("plan"))])
    out = host.engine.identify("ann", {"plan": "pro"})
    assert [e.journey_id for e in out.entered] == ["by_attribute"]
    assert [n.journey_id for n in out.not_entered] == ["by_segment"]


def test_the_event_that_puts_a_customer_in_a_segment_is_not_used_by_the_journey_it_starts(
    storage_factory: Factory,
) -> None:
    """"The event that starts an enrollment is not also used by it (a WaitForEvent reached right
    after entry waits for the next matching event)\", when it starts it through a segment too:
    the purchase that makes a buyer neither converts nor ends the wait of the journey it
    starts."""
    host = Host(storage_factory)
    host.engine.publish(segments=[BUYERS], content=[NOTE], journeys=[Journey(
        "buyers", trigger=SegmentTrigger("buyers"), entry="again?", goal=Goal("purchase"),
        steps={"again?": WaitForEvent("purchase", timeout=DAY, on_timeout="mail"),
               "mail": Send("note", "email")})])
    out = host.send("purchase")
    assert len(out.entered) == 1 and out.goals == () and out.ended == ()
    (enrollment,) = host.engine.enrollments("ann")
    assert (enrollment.status, enrollment.step_id) == ("active", "again?")
    host.clock.advance(HOUR)
    assert [e.status for e in host.send("purchase").ended] == ["converted"]


# --- pause ------------------------------------------------------------------------------------


def test_a_goal_still_converts_while_the_journey_is_paused(storage_factory: Factory) -> None:
    """"Exit criteria and the goal keep working\" while a journey is paused."""
    host = Host(storage_factory)
    host.engine.publish(content=[NOTE], journeys=[Journey(
        "drip", trigger=EventTrigger("signed_up"), entry="w", goal=Goal("bought"),
        steps={"w": Wait(DAY, next="mail"), "mail": Send("note", "email")})])
    host.send("signed_up")
    host.send("signed_up", customer="bob")
    host.clock.advance(HOUR)
    host.engine.pause_journey("drip")
    host.clock.advance(HOUR)
    out = host.send("bought")
    assert [(g.customer_id, g.at) for g in out.goals] == [("ann", T0 + 2 * HOUR)]
    assert [(e.customer_id, e.status) for e in out.ended] == [("ann", "converted")]
    host.clock.advance(2 * DAY)
    host.engine.resume_journey("drip")
    assert host.sent() == [("bob", T0 + 2 * DAY + 2 * HOUR)]  # released at the resume


# --- waits: exact time and calendar time --------------------------------------------------------


def test_a_day_is_86400_seconds_and_the_next_0900_is_calendar_time(
    storage_factory: Factory,
) -> None:
    """"After 1 day\" is exactly 86,400 s; "next day at 09:00" is calendar arithmetic in the
    customer's zone (a Saturday 21:00 entry goes on Sunday 09:00). Across the night the clocks
    go forward, the day still lasts 86,400 s and 09:00 is still 09:00."""
    saturday_21h = datetime(2026, 3, 28, 20, 0, tzinfo=UTC)      # 21:00 CET, in Paris
    host = Host(storage_factory, saturday_21h)
    host.engine.publish(content=[NOTE], journeys=[
        Journey("exact", trigger=EventTrigger("go"), entry="w",
                steps={"w": Wait(DAY, next="mail"), "mail": Send("note", "email")}),
        Journey("calendar", trigger=EventTrigger("go"), entry="w",
                steps={"w": WaitUntil("09:00", next="mail"), "mail": Send("note", "email")}),
    ])
    host.engine.identify("ann", {}, timezone="Europe/Paris")
    host.send("go")
    host.restart()
    host.clock.set(saturday_21h + 2 * DAY)
    host.engine.run_due()
    by_journey = {m.journey_id: m.created_at for m in host.email.messages}
    assert by_journey == {
        "exact": saturday_21h + timedelta(seconds=86_400),        # 22:00 CEST, Sunday
        "calendar": datetime(2026, 3, 29, 7, 0, tzinfo=UTC),      # 09:00 CEST, Sunday
    }
    assert by_journey["calendar"] - saturday_21h == 11 * HOUR   # the night lost an hour


def test_a_wait_as_long_as_definitions_allow_is_kept_and_fires(storage_factory: Factory) -> None:
    """Long waits are never dropped: the longest wait validation accepts
    (``Limits.max_duration``, ten years) is stored as an instant, survives a restart and fires
    at that instant on every storage."""
    longest = Limits().max_duration
    host = Host(storage_factory)
    host.engine.publish(content=[NOTE], journeys=[Journey(
        "decade", trigger=EventTrigger("go"), entry="w",
        steps={"w": Wait(longest, next="mail"), "mail": Send("note", "email")})])
    host.send("go")
    host.restart()
    host.clock.set(T0 + longest - timedelta(microseconds=1))
    assert host.engine.run_due().messages == ()
    host.clock.set(T0 + longest)
    host.engine.run_due()
    assert host.sent() == [("ann", T0 + longest)]


# --- experiments (Split) -------------------------------------------------------------------------


def _experiment(version: int = 1, paths: tuple[SplitPath, ...] | None = None,
                step: str = "split") -> Journey:
    paths = paths or (SplitPath("a", 1, next="wait"), SplitPath("b", 1, next="wait"))
    return Journey(
        "exp", version=version, trigger=EventTrigger("go"), entry=step,
        steps={step: Split(paths), "wait": Wait(DAY)},
        reentry=ReentryPolicy.after_exit())


def test_an_arm_is_recorded_on_the_enrollment_and_sticks_to_the_customer(
    storage_factory: Factory,
) -> None:
    """"Each customer down one weighted path, chosen by a stable hash of (customer, journey,
    step); the path is recorded on the enrollment\": a customer who enters again, on a new
    version whose split keeps its arms, is in the same arm."""
    host = Host(storage_factory)
    host.engine.publish(journeys=[_experiment()])
    customers = [f"c{i}" for i in range(40)]
    for c in customers:
        host.send("go", customer=c)
    first = {c: host.engine.enrollments(c)[0].paths for c in customers}
    expected = {c: {"split": "a" if split_fraction(c, "exp", "split") < 0.5 else "b"}
                for c in customers}
    assert first == expected
    assert set(Counter(p["split"] for p in first.values())) == {"a", "b"}
    log = host.engine.activities(T0, T0 + DAY, journey_id="exp")
    assert {a.customer_id: a.detail for a in log if a.kind == "path"} == {
        c: p["split"] for c, p in first.items()}
    # Version 2 keeps the arms (the same shares, written as other numbers): those who come
    # back are in their arm again.
    host.engine.publish(journeys=[_experiment(2, (SplitPath("a", 50, next="wait"),
                                                  SplitPath("b", 50, next="wait")))])
    host.restart()
    assert _back_on_v2(host, customers) == first


@pytest.mark.parametrize(("paths", "why"), [
    ((SplitPath("a", 3, next="wait"), SplitPath("b", 1, next="wait")), "other shares"),
    ((SplitPath("b", 1, next="wait"), SplitPath("a", 1, next="wait")), "another order"),
    ((SplitPath("a", 1, next="wait"), SplitPath("c", 1, next="wait")), "another name"),
    ((SplitPath("a", 1, next="wait"), SplitPath("b", 1, next="wait"),
      SplitPath("c", 1, next="wait")), "an arm more"),
])
def test_a_launched_split_cannot_change_so_that_customers_would_move_between_arms(
    paths: tuple[SplitPath, ...], why: str,
) -> None:
    """"Experiment settings that would move customers between arms after launch are
    rejected": a later version of the journey keeps each split step's arms, names and shares."""
    host = Host()
    host.engine.publish(journeys=[_experiment()])
    with pytest.raises(DefinitionError, match=(
        r"journey 'exp' v2 / step 'split': the split was launched in v1 with arms "
        r"a 50%, b 50%; changing its arms would move customers between them"
    )):
        host.engine.publish(journeys=[_experiment(2, paths)])
    assert host.engine.definitions.journeys == (_experiment(),), why


@pytest.mark.parametrize(("launched_as", "changed_as"), [(tuple, list), (list, tuple)])
def test_a_launched_split_keeps_its_arms_whether_its_paths_are_a_list_or_a_tuple(
    storage_factory: Factory, launched_as: type, changed_as: type,
) -> None:
    """Paths given as a list are accepted like a tuple, so they launch a split and are held to
    its arms like one: otherwise a list would let a new version move customers between arms."""
    host = Host(storage_factory)
    host.engine.publish(journeys=[_experiment(1, launched_as(
        (SplitPath("a", 1, next="wait"), SplitPath("b", 1, next="wait"))))])
    with pytest.raises(DefinitionError, match=(
        r"journey 'exp' v2 / step 'split': the split was launched in v1 with arms "
        r"a 50%, b 50%"
    )):
        host.engine.publish(journeys=[_experiment(2, changed_as(
            (SplitPath("a", 1, next="wait"), SplitPath("b", 9, next="wait"))))])
    assert [j.version for j in host.engine.definitions.journeys] == [1]


def test_what_moves_no_customer_between_arms_may_change() -> None:
    """The shares written as other numbers, other next steps, or a split under a new step id (a
    new experiment) are accepted."""
    host = Host()
    host.engine.publish(journeys=[_experiment()])
    host.engine.publish(journeys=[_experiment(2, (SplitPath("a", 5, next=None),
                                                  SplitPath("b", 5, next="wait")))])
    host.engine.publish(journeys=[_experiment(3, (SplitPath("x", 9, next="wait"),
                                                  SplitPath("y", 1, next="wait")),
                                              step="split_2")])
    # Arms launched in v1 still hold for a version that brings the step back.
    with pytest.raises(DefinitionError, match="launched in v1"):
        host.engine.publish(journeys=[_experiment(4, (SplitPath("a", 9, next="wait"),
                                                      SplitPath("b", 1, next="wait")))])


def test_the_same_shares_written_as_fractions_keep_a_launched_split(
    storage_factory: Factory,
) -> None:
    """70:20:10 and 0.7:0.2:0.1 are the same shares: a later version may write them either
    way, and the customers who come back are in their arm again."""
    def arms(*weights: float) -> tuple[SplitPath, ...]:
        return tuple(SplitPath(name, w, next="wait") for name, w in zip("abc", weights, strict=True))

    host = Host(storage_factory)
    host.engine.publish(journeys=[_experiment(1, arms(70, 20, 10))])
    customers = [f"c{i}" for i in range(60)]
    for c in customers:
        host.send("go", customer=c)
    first = {c: host.engine.enrollments(c)[0].paths for c in customers}
    host.engine.publish(journeys=[_experiment(2, arms(0.7, 0.2, 0.1))])
    assert _back_on_v2(host, customers) == first
    assert set(Counter(p["split"] for p in first.values())) == {"a", "b", "c"}


def test_an_enrollment_keeps_its_arm_when_it_moves_to_a_known_customer() -> None:
    """The arm recorded on the enrollment is the one it takes whenever it reaches the split
    again, even after an identity merge moved it to a customer whose own hash falls in the
    other arm."""
    def arm(customer: str) -> str:
        return "a" if split_fraction(customer, "loop", "split") < 0.5 else "b"

    anonymous = next(f"anon-{i}" for i in range(100) if arm(f"anon-{i}") == "a")
    known = next(f"kim-{i}" for i in range(100) if arm(f"kim-{i}") == "b")
    host = Host()
    host.engine.publish(content=[NOTE], journeys=[Journey(
        "loop", trigger=EventTrigger("go"), entry="split",
        steps={"split": Split((SplitPath("a", 1, next="mail_a"),
                               SplitPath("b", 1, next="mail_b"))),
               "mail_a": Send("note", "email", next="wait"),
               "mail_b": Send("note", "email", next="wait"),
               "wait": Wait(DAY, next="split")})])
    host.send("go", customer=anonymous)
    host.clock.advance(HOUR)
    host.engine.identify(known, {}, anonymous_id=anonymous)
    host.clock.advance(2 * DAY)
    host.engine.run_due()
    assert [(m.customer_id, m.step_id) for m in host.email.messages] == [
        (anonymous, "mail_a"), (known, "mail_a"), (known, "mail_a")]
    assert host.engine.enrollments(known)[0].paths == {"split": "a"}


# --- the global control group ---------------------------------------------------------------------


def test_the_control_group_gets_no_message_but_its_host_actions_are_called() -> None:
    """Control customers "receive no journey messages" (each send recorded as suppressed,
    detail control); an Action step's call is not a message and is made for them too."""
    from cjo import Action, ControlGroup
    from cjo.model.governance import in_control_group

    calls: list[str] = []
    group = ControlGroup(50, "cg")
    clock = ManualClock(T0)
    email = RecordingChannel()
    engine = Engine(channels={"email": email}, clock=clock,
                    actions={"crm": lambda call: calls.append(call.customer_id)})
    engine.publish(content=[NOTE], control_group=group, journeys=[Journey(
        "welcome", trigger=EventTrigger("signed_up"), entry="crm",
        steps={"crm": Action("crm", {"note": "signed up"}, next="mail"),
               "mail": Send("note", "email")})])
    customers = [f"c{i}" for i in range(20)]
    for c in customers:
        engine.handle_event(Event(customer_id=c, name="signed_up", timestamp=T0,
                                  properties={}, event_id=f"s-{c}"))
    control = {c for c in customers if in_control_group(c, group)}
    assert control and control != set(customers)
    assert {m.customer_id for m in email.messages} == set(customers) - control
    assert sorted(calls) == sorted(customers)


def _back_on_v2(host: Any, customers: list[str]) -> dict[str, Any]:
    """Each customer's split paths once their v1 enrollment ended and they came back on v2."""
    host.clock.advance(2 * DAY)
    host.engine.run_due()
    for c in customers:
        (again,) = host.send("go", customer=c).entered
        assert again.version == 2
    return {c: host.engine.enrollments(c)[-1].paths for c in customers}
