"""Rules across journeys, tried as a user would on every storage: priorities with exclusive
groups and a concurrency limit, the global control group, pause and resume under each late
rule, and new versions that migrate or eject running customers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cjo import (
    Branch,
    Case,
    ContentItem,
    ControlGroup,
    Engine,
    Event,
    EventTrigger,
    Exit,
    Goal,
    InactivityTrigger,
    Journey,
    JourneyPause,
    Jump,
    ManualClock,
    RecordingChannel,
    ResumeRule,
    Send,
    Variant,
    VersionChange,
    Wait,
    WaitForEvent,
    attr,
)
from cjo.analytics.report import journey_report
from cjo.errors import DefinitionError, JourneyNotPausedError, UnknownJourneyError
from cjo.model.governance import in_control_group
from tests.helpers import Factory

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
CONTENT = (
    ContentItem("a", variants=(Variant("email", {"subject": "Note", "text": "A"}),)),
    ContentItem("b", variants=(Variant("email", {"subject": "Note", "text": "B"}),)),
    ContentItem("c", variants=(Variant("email", {"subject": "Note", "text": "C"}),)),
    ContentItem("receipt", variants=(Variant("email", {"subject": "Note", "text": "Thanks"}),)),
)
_seq = iter(range(1_000_000))


def _ev(name: str, customer: str, at: datetime, **props: object) -> Event:
    return Event(customer_id=customer, name=name, timestamp=at, properties=props,
                 event_id=f"e{next(_seq)}")


def _engine(storage: object = None, clock: ManualClock | None = None
            ) -> tuple[Engine, ManualClock, RecordingChannel]:
    clock = clock or ManualClock(T0)
    email = RecordingChannel()
    return Engine(storage, {"email": email}, clock), clock, email  # type: ignore[arg-type]


def _one_send(jid: str, content: str, *, priority: int = 0, group: str | None = None,
              trigger: str = "signed_up") -> Journey:
    return Journey(
        id=jid, trigger=EventTrigger(trigger), entry="wait", priority=priority,
        exclusive_group=group,
        steps={"wait": Wait(DAY, next="send"), "send": Send(content, "email")},
    )


# --- priorities, exclusive groups, concurrency -------------------------------------------------


def test_the_higher_priority_journey_of_an_exclusive_group_wins() -> None:
    engine, clock, email = _engine()
    engine.publish(content=CONTENT, journeys=[
        _one_send("promo_low", "a", priority=1, group="promos"),
        _one_send("promo_high", "b", priority=5, group="promos"),
        _one_send("unrelated", "c"),
    ])
    out = engine.handle_event(_ev("signed_up", "ann", T0))
    assert sorted(e.journey_id for e in out.entered) == ["promo_high", "unrelated"]
    assert [(n.journey_id, n.reason) for n in out.not_entered] == [
        ("promo_low", "exclusive group 'promos': in journey 'promo_high'"),
    ]
    clock.advance(DAY)
    engine.run_due()
    assert sorted(m.content_id for m in email.messages) == ["b", "c"]


def test_equal_priorities_go_to_the_journey_id_in_lexical_order() -> None:
    engine, _, _ = _engine()
    engine.publish(content=CONTENT, journeys=[
        _one_send("zeta", "a", group="g"), _one_send("alpha", "b", group="g"),
    ])
    out = engine.handle_event(_ev("signed_up", "ann", T0))
    assert [e.journey_id for e in out.entered] == ["alpha"]


def test_a_customer_already_in_a_group_stays_out_of_a_higher_priority_one() -> None:
    engine, clock, _ = _engine()
    engine.publish(content=CONTENT, journeys=[
        _one_send("first", "a", priority=1, group="g", trigger="visited"),
        _one_send("second", "b", priority=9, group="g"),
    ])
    engine.handle_event(_ev("visited", "ann", T0))
    clock.set(T0 + HOUR)
    out = engine.handle_event(_ev("signed_up", "ann", T0 + HOUR))
    assert not out.entered and out.not_entered[0].journey_id == "second"
    # Once the first ends, the second may start.
    clock.advance(2 * DAY)
    engine.run_due()
    assert [e.journey_id for e in engine.handle_event(_ev("signed_up", "ann", clock.now())).entered
            ] == ["second"]


def test_the_concurrency_limit_keeps_the_lowest_priorities_out() -> None:
    engine, _, _ = _engine()
    engine.publish(
        content=CONTENT, max_concurrent_journeys=2,
        journeys=[_one_send("j1", "a", priority=1), _one_send("j2", "b", priority=3),
                  _one_send("j3", "c", priority=2)],
    )
    out = engine.handle_event(_ev("signed_up", "ann", T0))
    assert sorted(e.journey_id for e in out.entered) == ["j2", "j3"]
    assert [(n.journey_id, n.reason) for n in out.not_entered] == [
        ("j1", "concurrency limit: in 2 journeys ('j2', 'j3'), at most 2"),
    ]


def test_a_concurrency_limit_lowered_later_names_every_journey_the_customer_is_in(
    storage_factory: Factory,
) -> None:
    engine, clock, _ = _engine(storage_factory())
    engine.publish(content=CONTENT, journeys=[
        _one_send("j1", "a"), _one_send("j2", "b"), _one_send("j3", "c"),
        _one_send("j4", "a", trigger="visited")])
    engine.handle_event(_ev("signed_up", "ann", T0))
    engine.publish(max_concurrent_journeys=2)
    clock.advance(HOUR)
    out = engine.handle_event(_ev("visited", "ann", clock.now()))
    assert [(n.journey_id, n.reason) for n in out.not_entered] == [
        ("j4", "concurrency limit: in 3 journeys ('j1', 'j2', 'j3'), at most 2"),
    ]



def _promo(jid: str, content: str, priority: int, trigger: str | None = None) -> Journey:
    """A journey of the group "promos"; without ``trigger`` only a jump (or the API) enters."""
    return Journey(
        id=jid, priority=priority, exclusive_group="promos", entry="send",
        **({"trigger": EventTrigger(trigger)} if trigger is not None else {}),
        steps={"send": Send(content, "email")},
    )


def _waiting_jumper(*, end_current: bool) -> Journey:
    """Waits for a purchase after a cart, then jumps to "thanks_promo"."""
    return Journey(
        id="checkout", trigger=EventTrigger("cart"), entry="wait",
        steps={"wait": WaitForEvent("purchased", timeout=DAY, on_event="hop"),
               "hop": Jump("thanks_promo", end_current=end_current,
                           next=None if end_current else "receipt"),
               **({} if end_current else {"receipt": Send("receipt", "email")})},
    )


@pytest.mark.parametrize("end_current", [True, False])
def test_a_jump_the_input_causes_waits_for_a_higher_priority_trigger_entry(
    end_current: bool,
) -> None:
    engine, clock, email = _engine()
    engine.publish(content=CONTENT, journeys=[
        _waiting_jumper(end_current=end_current),
        _promo("thanks_promo", "a", 1), _promo("vip_promo", "b", 5, trigger="purchased"),
    ])
    engine.handle_event(_ev("cart", "ann", T0))
    clock.set(T0 + HOUR)
    out = engine.handle_event(_ev("purchased", "ann", T0 + HOUR))
    # The purchase qualifies Ann for both promos, one through the jump it lets through: the
    # higher priority enters, as if both were triggered by it.
    assert [e.journey_id for e in out.entered] == ["vip_promo"]
    assert [(n.journey_id, n.reason) for n in out.not_entered] == [
        ("thanks_promo", "exclusive group 'promos': in journey 'vip_promo'"),
    ]
    assert sorted(m.content_id for m in email.messages) == (
        ["b"] if end_current else ["b", "receipt"])
    jumped = [(a.step_id, a.detail) for a in engine.activities(T0, T0 + DAY, customer_id="ann")
              if a.kind == "jumped"]
    assert jumped == [("hop", "thanks_promo" if end_current else "thanks_promo: not entered")]


@pytest.mark.parametrize("worker", ["on_time", "late"])
def test_a_wake_up_jumps_into_a_group_whatever_entered_earlier_in_the_same_catch_up(
    storage_factory: Factory, worker: str,
) -> None:
    # The win-back enters at 10:00 (its inactivity timer), waits a minute, then hands over to
    # the other journey of its group. A worker on time decides the hand-over in a transaction
    # of its own; a late worker fires both wake-ups in one catch-up, and the hand-over is still
    # an input of its own: the win-back entered at an earlier instant does not hold it out.
    engine, clock, _email = _engine(storage_factory())
    engine.publish(content=CONTENT, journeys=[
        Journey(id="win_back", trigger=InactivityTrigger("purchased", after=HOUR),
                entry="wait", exclusive_group="g",
                steps={"wait": Wait(timedelta(minutes=1), next="hop"),
                       "hop": Jump("loyalty", end_current=True)}),
        Journey(id="loyalty", trigger=EventTrigger("enrolled_by_hand"), entry="wait",
                exclusive_group="g", steps={"wait": Wait(DAY)}),
    ])
    engine.identify("ann")
    if worker == "on_time":
        for minute in range(121):
            clock.set(T0 + timedelta(minutes=minute))
            engine.run_due()
    else:
        clock.set(T0 + 2 * HOUR)
        engine.run_due()
    assert [(e.journey_id, e.status) for e in engine.enrollments("ann")] == [
        ("win_back", "completed"), ("loyalty", "active"),
    ]
    assert journey_report(engine.storage, _journey(engine, "loyalty")).not_entered == 0


def _journey(engine: Engine, journey_id: str) -> Journey:
    return next(j for j in engine.definitions.journeys if j.id == journey_id)


@pytest.mark.parametrize("entered", [True, False])
def test_a_jump_is_logged_at_its_step_before_the_jumper_goes_on(
    storage_factory: Factory, entered: bool,
) -> None:
    # The jumper completes right after its Jump step, and the entry it asked for waits behind
    # a higher-priority entry of the same input: the log says "jumped" at the Jump step, before
    # the jumper's end, never after it (with the refusal, when the entry is refused).
    engine, _, _ = _engine(storage_factory())
    engine.publish(content=CONTENT, journeys=[
        _promo("thanks_promo", "a", 1) if not entered else Journey(
            id="thanks_promo", entry="send", steps={"send": Send("a", "email")}),
        _promo("vip_promo", "b", 2, trigger="go"),
        Journey(id="hopper", trigger=EventTrigger("go"), priority=3, entry="mail",
                steps={"mail": Send("c", "email", next="hop"),
                       "hop": Jump("thanks_promo", end_current=False, next=None)}),
    ])
    engine.handle_event(_ev("go", "ann", T0))
    log = [(a.journey_id, a.step_id, a.kind, a.detail)
           for a in engine.activities(T0, T0 + DAY, customer_id="ann")
           if a.journey_id == "hopper"]
    assert log[-2:] == [
        ("hopper", "hop", "jumped", "thanks_promo" if entered else "thanks_promo: not entered"),
        ("hopper", "hop", "completed", None),
    ]
    entries = {a.journey_id for a in engine.activities(T0, T0 + DAY, customer_id="ann")
               if a.kind == "entered"}
    assert ("thanks_promo" in entries) is entered


def test_a_jump_the_input_causes_wins_over_a_lower_priority_trigger_entry() -> None:
    engine, clock, _ = _engine()
    engine.publish(content=CONTENT, journeys=[
        _waiting_jumper(end_current=False),
        _promo("thanks_promo", "a", 5), _promo("vip_promo", "b", 1, trigger="purchased"),
    ])
    engine.handle_event(_ev("cart", "ann", T0))
    clock.set(T0 + HOUR)
    out = engine.handle_event(_ev("purchased", "ann", T0 + HOUR))
    assert [e.journey_id for e in out.entered] == ["thanks_promo"]
    assert [n.journey_id for n in out.not_entered] == ["vip_promo"]
    jumped = [a.detail for a in engine.activities(T0, T0 + DAY, customer_id="ann")
              if a.kind == "jumped"]
    assert jumped == ["thanks_promo"]


def test_a_jump_of_an_entry_waits_for_the_inputs_higher_priority_entries() -> None:
    engine, _, email = _engine()
    onboarding = Journey(id="onboarding", trigger=EventTrigger("signed_up"), priority=3,
                         entry="hop", steps={"hop": Jump("small_promo")})
    engine.publish(content=CONTENT, journeys=[
        onboarding, _promo("small_promo", "a", 1), _promo("big_promo", "b", 2, "signed_up"),
    ])
    out = engine.handle_event(_ev("signed_up", "ann", T0))
    # Onboarding enters first (priority 3); the promo it jumps to (1) waits its turn behind
    # the big promo (2) that the same sign-up triggers, which keeps it out.
    assert [e.journey_id for e in out.entered] == ["onboarding", "big_promo"]
    assert [(n.journey_id, n.reason) for n in out.not_entered] == [
        ("small_promo", "exclusive group 'promos': in journey 'big_promo'"),
    ]
    assert [m.content_id for m in email.messages] == ["b"]


def test_a_jump_of_an_entry_that_comes_next_anyway_enters_at_once() -> None:
    engine, _, email = _engine()
    onboarding = Journey(
        id="onboarding", trigger=EventTrigger("signed_up"), priority=3, entry="hop",
        steps={"hop": Jump("big_promo", end_current=False, next="receipt"),
               "receipt": Send("receipt", "email")},
    )
    engine.publish(content=CONTENT, journeys=[
        onboarding, _promo("big_promo", "b", 2), _promo("small_promo", "a", 1, "signed_up"),
    ])
    out = engine.handle_event(_ev("signed_up", "ann", T0))
    assert [e.journey_id for e in out.entered] == ["onboarding", "big_promo"]
    assert [n.journey_id for n in out.not_entered] == ["small_promo"]
    # Entered as the jump runs: its message is queued before the step after the jump's.
    assert [m.content_id for m in email.messages] == ["b", "receipt"]


# --- the global control group -----------------------------------------------------------------


def test_control_group_customers_enter_but_get_no_journey_messages() -> None:
    group = ControlGroup(percent=20, salt="cg-2026")
    customers = [f"c{i}" for i in range(200)]
    control = {c for c in customers if in_control_group(c, group)}
    assert 20 <= len(control) <= 60  # a stable share near 20%
    engine, clock, email = _engine()
    journey = Journey(
        id="j", trigger=EventTrigger("signed_up"), entry="receipt",
        steps={"receipt": Send("receipt", "email", transactional=True, next="wait"),
               "wait": Wait(DAY, next="promo"), "promo": Send("a", "email")},
    )
    engine.publish(content=CONTENT, journeys=[journey], control_group=group)
    for c in customers:
        engine.handle_event(_ev("signed_up", c, T0))
    clock.advance(DAY)
    engine.run_due()
    promos = {m.customer_id for m in email.messages if m.content_id == "a"}
    receipts = {m.customer_id for m in email.messages if m.content_id == "receipt"}
    assert promos == set(customers) - control
    assert receipts == set(customers)  # transactional messages are never withheld
    log = engine.activities(T0, T0 + 2 * DAY, journey_id="j")
    assert {a.customer_id for a in log if a.kind == "entered" and a.detail == "control"} == control
    assert {a.customer_id for a in log if a.kind == "suppressed" and a.detail == "control"
            } == control
    # Completed like everyone else: counted, not dropped.
    assert {a.customer_id for a in log if a.kind == "completed"} == set(customers)
    report = journey_report(engine.storage, journey)
    assert (report.entered, report.control) == (200, len(control))
    assert report.suppressed == {"control": len(control)}


def test_the_report_compares_the_control_groups_conversions() -> None:
    group = ControlGroup(percent=50, salt="half")
    engine, clock, _ = _engine()
    journey = Journey(
        id="j", trigger=EventTrigger("signed_up"), entry="wait", goal=Goal("purchased"),
        steps={"wait": Wait(DAY, next="promo"), "promo": Send("a", "email")},
    )
    engine.publish(content=CONTENT, journeys=[journey], control_group=group)
    customers = [f"c{i}" for i in range(40)]
    for c in customers:
        engine.handle_event(_ev("signed_up", c, T0))
    buyers = customers[::3]
    clock.advance(HOUR)
    for c in buyers:
        engine.handle_event(_ev("purchased", c, clock.now()))
    report = journey_report(engine.storage, journey)
    control = [c for c in customers if in_control_group(c, group)]
    control_buyers = [c for c in buyers if c in control]
    assert (report.control, report.control_converted) == (len(control), len(control_buyers))
    assert report.converted == len(buyers)
    assert report.control_conversion_rate == len(control_buyers) / len(control)
    assert report.treated_conversion_rate == (
        (len(buyers) - len(control_buyers)) / (len(customers) - len(control))
    )


def _converting_journey() -> Journey:
    return Journey(
        id="j", trigger=EventTrigger("signed_up"), entry="wait", goal=Goal("purchased"),
        steps={"wait": Wait(DAY, next="promo"), "promo": Send("a", "email")},
    )


@pytest.mark.parametrize("percent", [0, 20])
def test_a_conversion_counts_with_the_group_its_customer_entered_in_after_the_group_shrinks(
    storage_factory: Factory, percent: float,
) -> None:
    # Shrinking releases part of the control group into the treated group, but what they
    # entered as stays what their conversions are measured by: both rates stay within [0, 1].
    engine, clock, _ = _engine(storage_factory())
    journey = _converting_journey()
    engine.publish(content=CONTENT, journeys=[journey], control_group=ControlGroup(50, "s"))
    customers = [f"c{i}" for i in range(200)]
    for c in customers:
        engine.handle_event(_ev("signed_up", c, T0))
    engine.publish(control_group=ControlGroup(percent, "s"))
    clock.advance(HOUR)
    for c in customers:
        engine.handle_event(_ev("purchased", c, clock.now()))
    report = journey_report(engine.storage, journey)
    control = {c for c in customers if in_control_group(c, ControlGroup(50, "s"))}
    assert 60 < len(control) < 140
    assert (report.entered, report.converted) == (200, 200)
    assert (report.control, report.control_converted) == (len(control), len(control))
    assert report.control_conversion_rate == report.treated_conversion_rate == 1.0
    log = engine.storage.activities(T0, T0 + DAY)
    assert {a.customer_id for a in log if a.kind == "goal" and a.detail == "control"} == control


@pytest.mark.parametrize("anonymous_in_control", [True, False])
def test_a_conversion_after_an_identity_merge_counts_with_the_group_of_the_entry(
    storage_factory: Factory, anonymous_in_control: bool,
) -> None:
    # The enrollment moves from the anonymous customer to the known one, of the other group:
    # its entry was counted with the anonymous customer's group, and so is its goal.
    group = ControlGroup(50, "s")
    ids = [f"c{i}" for i in range(40)]
    anonymous = next(c for c in ids if in_control_group(c, group) == anonymous_in_control)
    known = next(c for c in ids if in_control_group(c, group) != anonymous_in_control)
    engine, clock, _ = _engine(storage_factory())
    journey = _converting_journey()
    engine.publish(content=CONTENT, journeys=[journey], control_group=group)
    engine.handle_event(_ev("signed_up", anonymous, T0))
    clock.advance(HOUR)
    engine.identify(known, anonymous_id=anonymous)
    assert [e.journey_id for e in engine.enrollments(known)] == ["j"]
    clock.advance(HOUR)
    engine.handle_event(_ev("purchased", known, clock.now()))
    report = journey_report(engine.storage, journey)
    expected = int(anonymous_in_control)
    assert (report.entered, report.converted) == (1, 1)
    assert (report.control, report.control_converted) == (expected, expected)
    assert report.control_conversion_rate == (1.0 if anonymous_in_control else 0.0)
    assert report.treated_conversion_rate == (0.0 if anonymous_in_control else 1.0)


def test_a_control_group_can_shrink_but_not_grow_or_change_salt() -> None:
    engine, _, _ = _engine()
    engine.publish(content=CONTENT, journeys=[_one_send("j", "a")],
                   control_group=ControlGroup(10, "s"))
    engine.publish(control_group=ControlGroup(5, "s"))
    with pytest.raises(DefinitionError, match="can only shrink"):
        engine.publish(control_group=ControlGroup(15, "s"))
    with pytest.raises(DefinitionError, match="salt cannot change"):
        engine.publish(control_group=ControlGroup(5, "other"))
    with pytest.raises(DefinitionError, match="percent"):
        Engine().publish(control_group=ControlGroup(100, "s"))


@pytest.mark.parametrize("percent", [-1, 100, 150, float("nan"), float("inf"), 10**400],
                         ids=["-1", "100", "150", "nan", "inf", "10**400"])
def test_a_control_group_percent_outside_0_to_100_is_refused_by_name(percent: float) -> None:
    with pytest.raises(DefinitionError, match="control group: percent must be from 0 to less"):
        Engine().publish(control_group=ControlGroup(percent, "s"))


# --- pause and resume -------------------------------------------------------------------------


def _drip(rule: ResumeRule) -> Journey:
    return Journey(
        id="drip", trigger=EventTrigger("signed_up"), entry="w1", on_resume=rule,
        steps={"w1": Wait(2 * HOUR, next="s1"), "s1": Send("a", "email", next="w2"),
               "w2": Wait(DAY, next="s2"), "s2": Send("b", "email")},
    )


@pytest.mark.parametrize(("rule", "sent_at_resume"), [
    (ResumeRule(), ["a"]),
    (ResumeRule("skip"), []),
    (ResumeRule("grace", timedelta(hours=5)), ["a"]),
    (ResumeRule("grace", timedelta(hours=3)), []),
])
def test_pause_at_one_hour_and_resume_at_six(
    storage_factory: Factory, rule: ResumeRule, sent_at_resume: list[str]
) -> None:
    engine, clock, email = _engine(storage_factory())
    engine.publish(content=CONTENT, journeys=[_drip(rule)])
    engine.handle_event(_ev("signed_up", "ann", T0))
    clock.set(T0 + HOUR)
    engine.pause_journey("drip")
    # A worker started before the pause, on the same storage, follows it.
    worker, _, worker_email = _engine(storage_factory(), clock)
    assert not engine.handle_event(_ev("signed_up", "bob", clock.now())).entered
    clock.set(T0 + 2 * HOUR)
    worker.run_due()  # ann's wake-up falls due while paused: held
    assert email.messages == [] and worker_email.messages == []
    assert [a.kind for a in engine.activities(T0, T0 + DAY, customer_id="ann")][-1] == "held"
    clock.set(T0 + 6 * HOUR)
    out = engine.resume_journey("drip")
    assert [m.content_id for m in out.messages] == sent_at_resume
    assert [m.content_id for m in email.messages] == sent_at_resume
    assert all(m.created_at == T0 + 6 * HOUR for m in email.messages)
    # The journey goes on from the resume instant, whatever the rule.
    clock.set(T0 + 6 * HOUR + DAY)
    worker.run_due()
    assert [m.content_id for m in email.messages + worker_email.messages] == [
        *sent_at_resume, "b",
    ]
    kinds = [a.kind for a in engine.activities(T0, T0 + 3 * DAY, customer_id="ann")]
    assert "resumed" in kinds and kinds[-1] == "completed"
    if not sent_at_resume:
        assert "send_skipped" in kinds
    # New entries start again.
    assert engine.handle_event(_ev("signed_up", "bob", clock.now())).entered


def test_a_paused_journey_still_ends_on_its_exit_criteria() -> None:
    from cjo import ExitCriterion

    engine, clock, email = _engine()
    journey = Journey(
        id="j", trigger=EventTrigger("signed_up"), entry="w",
        exit_criteria=(ExitCriterion("bought", event="purchased"),),
        steps={"w": WaitForEvent("clicked", timeout=DAY, on_event="s", on_timeout="s"),
               "s": Send("a", "email")},
    )
    engine.publish(content=CONTENT, journeys=[journey])
    engine.handle_event(_ev("signed_up", "ann", T0))
    engine.pause_journey("j")
    # A wait's own event does not move a paused journey; its exits do end it.
    clock.set(T0 + HOUR)
    assert not engine.handle_event(_ev("clicked", "ann", T0 + HOUR)).steps
    clock.set(T0 + 2 * HOUR)
    out = engine.handle_event(_ev("purchased", "ann", T0 + 2 * HOUR))
    assert [(e.status, e.reason) for e in out.ended] == [("exited", "bought")]
    engine.resume_journey("j")
    clock.advance(2 * DAY)
    engine.run_due()
    assert email.messages == []


def test_a_journey_jumped_into_by_a_skipped_wake_up_sends_as_usual(
    storage_factory: Factory,
) -> None:
    """``skip`` skips the paused journey's own late sends: a journey its released wake-up
    jumps into was not paused, and its customers' sends go."""
    engine, clock, email = _engine(storage_factory())
    paused = Journey(id="paused", trigger=EventTrigger("signed_up"), entry="w",
                     on_resume=ResumeRule("skip"),
                     steps={"w": Wait(2 * HOUR, next="late"), "late": Send("a", "email",
                                                                          next="jump"),
                            "jump": Jump("other")})
    other = Journey(id="other", trigger=EventTrigger("never_sent"), entry="s",
                    steps={"s": Send("b", "email")})
    engine.publish(content=CONTENT, journeys=[paused, other])
    engine.handle_event(_ev("signed_up", "ann", T0))
    clock.set(T0 + HOUR)
    engine.pause_journey("paused")
    clock.set(T0 + 3 * HOUR)
    engine.run_due()  # held
    clock.set(T0 + 4 * HOUR)
    out = engine.resume_journey("paused")
    assert [(m.journey_id, m.content_id) for m in out.messages] == [("other", "b")]
    assert [(m.content_id, m.created_at) for m in email.messages] == [("b", T0 + 4 * HOUR)]
    skipped = [(a.journey_id, a.step_id, a.detail) for a in engine.activities(
        T0, T0 + DAY, customer_id="ann") if a.kind == "send_skipped"]
    assert skipped == [("paused", "late", "paused")]


def test_pausing_an_unknown_journey_is_refused() -> None:
    engine, _, _ = _engine()
    with pytest.raises(UnknownJourneyError):
        engine.pause_journey("nope")
    with pytest.raises(UnknownJourneyError):
        engine.resume_journey("nope")


def test_resuming_a_journey_that_is_not_paused_is_refused(storage_factory: Factory) -> None:
    engine, clock, _ = _engine(storage_factory())
    engine.publish(content=CONTENT, journeys=[_drip(ResumeRule())])
    with pytest.raises(JourneyNotPausedError, match=r"^journey 'drip' is not paused \(never "
                                                    r"paused\); nothing was done$") as never:
        engine.resume_journey("drip")
    assert (never.value.journey_id, never.value.resumed_at) == ("drip", None)
    generation = engine.pause_journey("drip")
    clock.set(T0 + HOUR)
    # Another engine on the same storage resumes it first: this one's resume comes too late.
    other, _, _ = _engine(storage_factory(), clock)
    other.resume_journey("drip")
    clock.set(T0 + 2 * HOUR)
    with pytest.raises(JourneyNotPausedError, match=r"^journey 'drip' is not paused \(last "
                                                    r"resumed at 2026-03-02T10:00:00\+00:00\)"):
        engine.resume_journey("drip")
    assert engine.definitions.paused == (JourneyPause("drip", T0, T0 + HOUR),)
    assert engine.pause_journey("drip") > generation


# --- new versions: migrate and eject ----------------------------------------------------------


def _v1() -> Journey:
    return Journey(
        id="onboard", version=1, trigger=EventTrigger("signed_up"), entry="w1",
        steps={"w1": Wait(DAY, next="s1"), "s1": Send("a", "email", next="w2"),
               "w2": Wait(DAY, next="s2"), "s2": Send("b", "email", next="w3"),
               "w3": WaitForEvent("clicked", timeout=DAY, on_timeout="s3"),
               "s3": Send("c", "email")},
    )


def _v2() -> Journey:
    return Journey(
        id="onboard", version=2, trigger=EventTrigger("signed_up"), entry="first_wait",
        steps={"first_wait": Wait(DAY, next="hello"), "hello": Send("a", "email", next="pause"),
               "pause": Wait(DAY, next="last"), "last": Send("c", "email")},
    )


def test_a_migration_moves_customers_waiting_at_three_steps(
    storage_factory: Factory,
) -> None:
    engine, clock, email = _engine(storage_factory())
    engine.publish(content=CONTENT, journeys=[_v1()])
    engine.handle_event(_ev("signed_up", "at_w3", T0))  # will wait at w3
    clock.set(T0 + DAY)
    engine.handle_event(_ev("signed_up", "at_w2", clock.now()))
    clock.set(T0 + 2 * DAY)
    engine.run_due()
    engine.handle_event(_ev("signed_up", "at_w1", clock.now()))
    steps = {e.customer_id: e.step_id for c in ("at_w1", "at_w2", "at_w3")
             for e in engine.enrollments(c)}
    assert steps == {"at_w1": "w1", "at_w2": "w2", "at_w3": "w3"}
    email.clear()
    with pytest.raises(DefinitionError, match="does not map step"):
        engine.publish(journeys=[_v2()], running={
            "onboard": VersionChange.migrate({"w1": "first_wait"}),
        })
    publish_at = clock.now()
    engine.publish(journeys=[_v2()], running={"onboard": VersionChange.migrate({
        "w1": "first_wait", "s1": "hello", "w2": "pause", "s2": "last", "w3": "pause",
        "s3": "last",
    })})
    # Wake-up instants already scheduled are kept; each continues on version 2.
    worker, _, worker_email = _engine(storage_factory(), clock)
    for _ in range(4):
        clock.advance(DAY)
        worker.run_due()
    sent = sorted((m.customer_id, m.content_id, m.journey_version, m.created_at)
                  for m in email.messages + worker_email.messages)
    assert sent == [
        ("at_w1", "a", 2, T0 + 3 * DAY), ("at_w1", "c", 2, T0 + 4 * DAY),
        ("at_w2", "c", 2, T0 + 3 * DAY),
        ("at_w3", "c", 2, T0 + 3 * DAY),
    ]
    log = engine.activities(T0, T0 + 9 * DAY, journey_id="onboard")
    migrated = {a.customer_id: a for a in log if a.kind == "migrated"}
    assert set(migrated) == {"at_w1", "at_w2", "at_w3"}
    assert {a.at for a in migrated.values()} == {publish_at}
    assert all(a.detail == "v1 to v2" for a in migrated.values())


def _ann_on_v1(storage: object) -> tuple[Engine, ManualClock, RecordingChannel]:
    """An engine running v1, with ann signed up at T0 and the clock an hour later."""
    engine, clock, email = _engine(storage)
    engine.publish(content=CONTENT, journeys=[_v1()])
    engine.handle_event(_ev("signed_up", "ann", T0))
    clock.set(T0 + HOUR)
    return engine, clock, email


def test_a_migration_onto_a_step_that_does_not_wait_runs_it_at_the_kept_wake_up(
    storage_factory: Factory,
) -> None:
    # A customer waiting at w1 moves to a Branch, another to an Exit: each runs at the
    # wake-up instant kept from v1, rather than staying active with nothing to wake them.
    engine, clock, email = _ann_on_v1(storage_factory())
    v2 = Journey(
        id="onboard", version=2, trigger=EventTrigger("signed_up"), entry="route",
        steps={"route": Branch((Case(attr("vip") == True, "stop"),), default="hello"),  # noqa: E712
               "hello": Send("b", "email"), "stop": Exit("vip")},
    )
    engine.publish(journeys=[v2], running={"onboard": VersionChange.migrate({
        "w1": "route", "s1": "hello", "w2": "route", "s2": "hello", "w3": "stop",
        "s3": "hello",
    })})
    worker, _, worker_email = _engine(storage_factory(), clock)
    clock.set(T0 + 3 * DAY)
    worker.run_due()
    assert [(m.content_id, m.journey_version, m.step_id, m.created_at)
            for m in email.messages + worker_email.messages] == [
        ("b", 2, "hello", T0 + DAY)]
    (ended,) = engine.enrollments("ann")
    assert (ended.status, ended.ended_at) == ("completed", T0 + DAY)
    log = [(a.kind, a.step_id) for a in engine.activities(T0, T0 + 9 * DAY, customer_id="ann")]
    assert log[-4:] == [("step", "route"), ("step", "hello"), ("sent", "hello"),
                        ("completed", "hello")]


def test_an_ejecting_publish_ends_running_customers_at_the_publish_instant(
    storage_factory: Factory,
) -> None:
    engine, clock, email = _ann_on_v1(storage_factory())
    engine.publish(journeys=[_v2()], running={"onboard": VersionChange.eject("redesign")})
    clock.set(T0 + 5 * DAY)
    engine.run_due()
    assert email.messages == []
    (ended,) = engine.enrollments("ann")
    assert (ended.status, ended.end_reason, ended.ended_at) == ("ejected", "redesign",
                                                                T0 + HOUR)
    # New entries go to version 2.
    out = engine.handle_event(_ev("signed_up", "bob", clock.now()))
    assert [(e.journey_id, e.version) for e in out.entered] == [("onboard", 2)]
