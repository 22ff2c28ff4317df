"""The rules the user documentation states, each held to the code by a scenario on a manual
clock: one test per claim that no other test checks, grouped by page and section. Each
docstring quotes the claim it checks."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import attrs
import pytest

from cjo import (
    ApiTrigger,
    Channel,
    ContentItem,
    ControlGroup,
    DeliveryResult,
    Engine,
    Event,
    EventTrigger,
    ExitCriterion,
    FrequencyCap,
    Goal,
    InactivityTrigger,
    InvalidEventError,
    Journey,
    ManualClock,
    Message,
    Outcome,
    ProfileUpdate,
    QuietHours,
    RecordingChannel,
    ReentryPolicy,
    Segment,
    SegmentTrigger,
    Send,
    Storage,
    Topic,
    UpdateProfile,
    Variant,
    Wait,
    WaitForEvent,
    WaitUntilDate,
    attr,
)
from cjo.delivery import STANDARD_CONTACT_ATTRIBUTES
from cjo.model.governance import in_control_group

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
_ids = iter(range(1_000_000))


def note(content_id: str = "note", topic: str | None = None) -> ContentItem:
    return ContentItem(content_id, topic=topic, variants=(
        Variant("email", {"subject": "Note", "text": content_id}),
        Variant("sms", {"text": content_id}),
        Variant("push", {"title": content_id, "body": content_id}),
    ))


def event(name: str, customer: str, at: datetime, event_id: str | None = None,
          **properties: object) -> Event:
    return Event(customer_id=customer, name=name, timestamp=at, properties=properties,
                 event_id=event_id or f"d{next(_ids)}")


class Host:
    """An engine on a manual clock at T0, with a recording channel per channel name."""

    def __init__(self, storage: Storage | None = None, **options: object) -> None:
        self.clock = ManualClock(T0)
        self.channels = {name: RecordingChannel() for name in ("email", "sms", "push")}
        self.engine = Engine(storage, self.channels, self.clock, **options)  # type: ignore[arg-type]

    def send(self, name: str, customer: str = "ann", at: datetime | None = None,
             **properties: object) -> Outcome:
        return self.engine.handle_event(
            event(name, customer, at or self.clock.now(), **properties))

    def sent(self, channel: str = "email") -> list[tuple[str, str, datetime]]:
        """(customer, content, created at) of the messages the channel received."""
        return [(m.customer_id, m.content_id, m.created_at)
                for m in self.channels[channel].messages]

    def log(self, customer: str = "ann", kinds: tuple[str, ...] = ()
            ) -> list[tuple[str, str | None, str | None]]:
        """(kind, detail, channel) of the customer's activities of ``kinds``."""
        return [(a.kind, a.detail, a.channel)
                for a in self.engine.activities(T0 - DAY, T0 + 400 * DAY, customer_id=customer)
                if a.kind in kinds]


# === docs/semantics.md ===========================================================================

# --- Which instant ---------------------------------------------------------------------------


def test_wake_ups_due_by_now_fire_before_an_event_stamped_earlier() -> None:
    """"Before it is handled, the customer's wake-ups due by now fire, each at its own instant;
    so a wait whose timeout passed before the event arrived has timed out, even if the event
    is stamped earlier.\""""
    host = Host()
    host.engine.publish(content=[note("thanks"), note("nudge")], journeys=[Journey(
        "j", trigger=EventTrigger("signed_up"), entry="w",
        steps={"w": WaitForEvent("clicked", timeout=HOUR, on_event="thanks",
                                 on_timeout="nudge"),
               "thanks": Send("thanks", "email"), "nudge": Send("nudge", "email")})])
    host.send("signed_up")
    host.clock.advance(2 * HOUR)
    host.send("clicked", at=T0 + 30 * MINUTE)  # clicked in time, but arrives after the timeout
    assert host.sent() == [("ann", "nudge", T0 + HOUR)]


def test_an_event_delayed_by_the_network_is_timed_from_its_arrival() -> None:
    """"Entries, steps, waits, goal windows and re-entry windows are timed from the instant the
    engine decides" (an event delayed by the network still starts journeys)."""
    host = Host()
    host.engine.publish(content=[note()], journeys=[Journey(
        "j", trigger=EventTrigger("signed_up"), entry="w",
        steps={"w": Wait(HOUR, next="mail"), "mail": Send("note", "email")})])
    out = host.send("signed_up", at=T0 - 3 * HOUR)  # stamped 3 hours before it arrives
    assert [e.at for e in out.entered] == [T0]
    host.clock.advance(HOUR)
    host.engine.run_due()
    assert host.sent() == [("ann", "note", T0 + HOUR)]


def test_an_event_from_the_future_is_refused_and_nothing_is_stored() -> None:
    """"An event stamped in the future by more than Engine(future_tolerance=...) (default 5
    minutes) is refused with InvalidEventError, and nothing is stored.\""""
    host = Host()
    host.engine.publish(content=[note()], journeys=[Journey(
        "j", trigger=EventTrigger("signed_up"), entry="mail",
        steps={"mail": Send("note", "email")})])
    with pytest.raises(InvalidEventError, match="more than 0:05:00 after now"):
        host.engine.handle_event(event("signed_up", "ann", T0 + 6 * MINUTE, "e1"))
    assert host.engine.customer_state("ann") is None
    # Its id was not recorded either: sent again with a sound clock, it is handled.
    assert len(host.engine.handle_event(event("signed_up", "ann", T0, "e1")).entered) == 1


def test_the_future_tolerance_is_inclusive_and_can_be_zero() -> None:
    """"stamped in the future by *more than* future_tolerance ... is refused\": exactly the
    tolerance ahead is accepted, and the tolerance is the engine's option."""
    host = Host()
    host.send("viewed", at=T0 + 5 * MINUTE)  # accepted
    strict = Host(future_tolerance=timedelta(0))
    strict.send("viewed", at=T0)
    with pytest.raises(InvalidEventError, match="after now"):
        strict.send("viewed", at=T0 + timedelta(seconds=1))


# --- Entering ----------------------------------------------------------------------------------


def test_the_event_that_starts_an_enrollment_is_not_also_used_by_it() -> None:
    """"the event that starts an enrollment is not also used by it (a WaitForEvent reached right
    after entry waits for the next matching event)\""""
    host = Host()
    host.engine.publish(content=[note("again")], journeys=[Journey(
        "j", trigger=EventTrigger("viewed"), entry="w",
        steps={"w": WaitForEvent("viewed", timeout=DAY, on_event="again", on_timeout=None),
               "again": Send("again", "email")})])
    out = host.send("viewed")
    assert len(out.entered) == 1 and out.messages == ()
    host.clock.advance(HOUR)
    host.send("viewed")
    assert host.sent() == [("ann", "again", T0 + HOUR)]


def test_an_event_nothing_reacts_to_is_not_recorded_as_handled() -> None:
    """"An event that no trigger, wait, exit criterion or goal can react to for this customer
    ... is skipped without a transaction: ... its event_id is not recorded.\""""
    host = Host()
    host.engine.publish(content=[note()], journeys=[Journey(
        "j", trigger=EventTrigger("signed_up"), entry="mail",
        steps={"mail": Send("note", "email")})])
    out = host.engine.handle_event(event("ordered", "ann", T0, "o1"))
    assert not out.duplicate and host.engine.customer_state("ann") is None
    # Once a journey reacts to it, the same id is handled, not taken for a duplicate.
    host.engine.publish(content=[note()], journeys=[Journey(
        "k", trigger=EventTrigger("ordered"), entry="mail",
        steps={"mail": Send("note", "email")})])
    assert len(host.engine.handle_event(event("ordered", "ann", T0, "o1")).entered) == 1


# --- Re-entry ----------------------------------------------------------------------------------


def _once(jid: str = "j", version: int = 1, **fields: object) -> Journey:
    return Journey(jid, version=version, trigger=EventTrigger("go"), entry="mail",
                   steps={"mail": Send("note", "email")}, **fields)  # type: ignore[arg-type]


def test_never_holds_across_versions() -> None:
    """"never(): one enrollment per customer, ever, across versions\""""
    host = Host()
    host.engine.publish(content=[note()], journeys=[_once(reentry=ReentryPolicy.never())])
    assert len(host.send("go").entered) == 1
    host.engine.publish(journeys=[_once(version=2, reentry=ReentryPolicy.never())])
    host.clock.advance(DAY)
    assert host.send("go").entered == ()
    assert len(host.send("go", customer="bob").entered) == 1


def test_at_most_lets_one_enrollment_run_at_a_time() -> None:
    """"at_most(n, per=d): at most n entries in any rolling window d, one at a time\""""
    host = Host()
    host.engine.publish(content=[note()], journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="w",
        steps={"w": Wait(HOUR, next="mail"), "mail": Send("note", "email")},
        reentry=ReentryPolicy.at_most(3, per=DAY))])
    assert len(host.send("go").entered) == 1
    host.clock.advance(30 * MINUTE)
    assert host.send("go").entered == ()  # still inside
    host.clock.advance(30 * MINUTE)
    assert len(host.send("go").entered) == 1  # the first ended


def test_an_at_most_window_is_half_open() -> None:
    """"Rolling windows are half-open: at instant t, 'within d' means after t - d, so an entry
    exactly d old has left the window.\""""
    host = Host()
    host.engine.publish(content=[note()],
                        journeys=[_once(reentry=ReentryPolicy.at_most(1, per=DAY))])
    host.send("go")
    host.clock.set(T0 + DAY - timedelta(seconds=1))
    assert host.send("go").entered == ()
    host.clock.set(T0 + DAY)
    assert len(host.send("go").entered) == 1


def test_erasing_a_customer_forgets_their_entry_history(storage: Storage) -> None:
    """"erase_customer forgets the history with the rest of the record.\""""
    host = Host(storage)
    host.engine.publish(content=[note()], journeys=[_once(reentry=ReentryPolicy.never())])
    host.send("go")
    assert host.send("go").entered == ()
    host.engine.erase_customer("ann")
    host.clock.advance(HOUR)
    assert len(host.send("go").entered) == 1


def test_a_guard_a_new_version_adds_applies_from_the_next_entry_on() -> None:
    """"a guard that a new version adds applies from each customer's next entry on.\""""
    host = Host()
    host.engine.publish(content=[note()], journeys=[_once()])
    host.send("go")  # entered, and done at once, under v1 (no guard)
    host.engine.publish(journeys=[_once(version=2,
                                        reentry=ReentryPolicy.after_exit(guard=HOUR))])
    host.clock.advance(MINUTE)
    assert len(host.send("go").entered) == 1  # v1's entry: unguarded
    host.clock.advance(MINUTE)
    assert host.send("go").entered == ()  # within the guard of v2's
    host.clock.advance(HOUR)
    assert len(host.send("go").entered) == 1


# --- Inactivity ----------------------------------------------------------------------------------


def _win_back(after: timedelta = 14 * DAY, jid: str = "win_back", **fields: object) -> Journey:
    return Journey(jid, trigger=InactivityTrigger("purchased", after=after), entry="mail",
                   steps={"mail": Send("note", "email")}, **fields)  # type: ignore[arg-type]


def test_a_late_purchase_stamped_before_the_last_one_moves_nothing() -> None:
    """"Each qualifying event moves that instant; a late event stamped before the last one seen
    moves nothing.\""""
    host = Host()
    host.engine.publish(content=[note()], journeys=[_win_back()])
    host.engine.identify("ann", {"email": "ann@example.com"})
    host.clock.set(T0 + 5 * DAY)
    host.send("purchased")
    host.clock.set(T0 + 6 * DAY)
    host.send("purchased", at=T0 + 2 * DAY)  # arrives late, stamped before the last one
    host.clock.set(T0 + 30 * DAY)
    host.engine.run_due()
    assert host.sent() == [("ann", "note", T0 + 19 * DAY)]


def test_customers_created_before_the_publish_count_from_their_next_input() -> None:
    """"Customers created before the journey was published are armed at their next input that
    opens a transaction ...; what they did before is unknown, so their spell counts from that
    input: the trigger never fires in the past.\""""
    host = Host()
    host.engine.identify("ann", {"plan": "basic"})           # created at T0
    host.clock.set(T0 + 20 * DAY)
    host.engine.publish(content=[note()], journeys=[_win_back()])
    host.clock.set(T0 + 21 * DAY)
    assert host.engine.identify("ann", {"plan": "pro"}).entered == ()  # quiet 21 days: armed
    host.clock.set(T0 + 22 * DAY)
    host.engine.identify("cara", {"plan": "basic"})          # created after the publish
    host.clock.set(T0 + 60 * DAY)
    host.engine.run_due()
    assert host.sent() == [("ann", "note", T0 + 35 * DAY), ("cara", "note", T0 + 36 * DAY)]


# --- Waits and time ------------------------------------------------------------------------------


def test_a_new_version_with_another_wait_does_not_re_time_those_waiting() -> None:
    """"Publishing a new version with a different wait does not re-time customers already
    waiting.\""""
    def drip(version: int, wait: timedelta) -> Journey:
        return Journey("drip", version=version, trigger=EventTrigger("go"), entry="w",
                       steps={"w": Wait(wait, next="mail"), "mail": Send("note", "email")})

    host = Host()
    host.engine.publish(content=[note()], journeys=[drip(1, DAY)])
    host.send("go")
    host.clock.advance(HOUR)
    host.engine.publish(journeys=[drip(2, 3 * DAY)])
    host.send("go", customer="bob")
    host.clock.set(T0 + 5 * DAY)
    host.engine.run_due()
    assert host.sent() == [("ann", "note", T0 + DAY), ("bob", "note", T0 + HOUR + 3 * DAY)]


def test_wake_ups_at_one_instant_fire_by_wait_start_then_id_then_customer_timers() -> None:
    """"A customer's wake-ups due at the same instant fire in the order their waits began, then
    by enrollment id; customer timers due at that instant fire after them.\""""
    def waiting(jid: str, trigger: str, wait: timedelta) -> Journey:
        return Journey(jid, trigger=EventTrigger(trigger), entry="w",
                       steps={"w": Wait(wait, next="mail"), "mail": Send(jid, "email")})

    host = Host()
    journeys = [waiting("a_late", "late", HOUR), waiting("c_tie", "early", 2 * HOUR),
                waiting("b_tie", "early", 2 * HOUR), waiting("z_early", "early", 2 * HOUR),
                Journey("a_quiet", trigger=InactivityTrigger("purchased", after=2 * HOUR),
                        entry="mail", steps={"mail": Send("a_quiet", "email")})]
    host.engine.publish(content=[note(j.id) for j in journeys], journeys=journeys)
    host.send("early")                                        # created, and three waits, at T0
    host.clock.advance(HOUR)
    host.send("late")                                         # a wait begun at T0 + 1 h
    host.clock.advance(5 * HOUR)
    host.engine.run_due()
    assert host.sent() == [("ann", c, T0 + 2 * HOUR)
                           for c in ("b_tie", "c_tie", "z_early", "a_late", "a_quiet")]


# --- Exits and goals -----------------------------------------------------------------------------


def test_a_profile_step_change_is_checked_before_the_other_journeys_sends() -> None:
    """"A change made by an UpdateProfile step is checked against the other enrollments' exit
    conditions at the customer's next event or profile change, and before each of their
    sends.\""""
    host = Host()
    host.engine.publish(content=[note("promo")], journeys=[
        Journey("promo", trigger=EventTrigger("browsed"), entry="w",
                exit_criteria=(ExitCriterion("became vip", where=attr("vip") == True),),  # noqa: E712
                steps={"w": Wait(HOUR, next="mail"), "mail": Send("promo", "email")}),
        Journey("upgrade", trigger=EventTrigger("paid"), entry="set",
                steps={"set": UpdateProfile({"vip": True})}),
    ])
    host.send("browsed")
    host.send("browsed", customer="bob")
    host.clock.advance(10 * MINUTE)
    out = host.send("paid")                                   # ann becomes vip by a step
    assert [e.journey_id for e in out.ended] == ["upgrade"]   # promo not ended yet
    host.send("paid", customer="bob")
    host.clock.advance(5 * MINUTE)
    out = host.send("viewed", customer="bob")                 # bob's next event: exits now
    assert [(e.journey_id, e.status, e.reason) for e in out.ended] == [
        ("promo", "exited", "became vip")]
    host.clock.advance(HOUR)
    out = host.engine.run_due()                               # ann's send: exits instead
    assert [(e.customer_id, e.status, e.reason) for e in out.ended] == [
        ("ann", "exited", "became vip")]
    assert host.sent() == []


def test_a_goal_counts_at_exactly_its_window() -> None:
    """"A Goal(event, where=..., within=...) is counted once per enrollment, when the event
    comes at most `within` after entry\" (the end of the window included)."""
    host = Host()
    host.engine.publish(content=[note()], journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="w", steps={"w": Wait(DAY)},
        goal=Goal("bought", within=2 * HOUR))])
    host.send("go")
    host.send("go", customer="bob")
    host.clock.set(T0 + 2 * HOUR)
    assert [(e.status, e.at) for e in host.send("bought").ended] == [
        ("converted", T0 + 2 * HOUR)]
    host.clock.set(T0 + 2 * HOUR + timedelta(microseconds=1))
    assert host.send("bought", customer="bob").goals == ()


def test_a_goal_that_does_not_exit_is_counted_and_the_exit_criterion_ends() -> None:
    """"The goal is checked before exit criteria, so when one event is both, a goal that exits
    wins\": one that does not exit is still counted, and the exit criterion then ends the
    enrollment."""
    host = Host()
    host.engine.publish(content=[note()], journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="w", steps={"w": Wait(DAY)},
        exit_criteria=(ExitCriterion("bought", event="bought"),),
        goal=Goal("bought", exit_on_goal=False))])
    host.send("go")
    host.clock.advance(HOUR)
    out = host.send("bought")
    assert [g.goal for g in out.goals] == ["goal"]
    assert [(e.status, e.reason) for e in out.ended] == [("exited", "bought")]
    (ended,) = host.engine.enrollments("ann")
    assert ended.converted_at == T0 + HOUR


def test_the_record_keeps_the_last_ended_enrollment_and_the_log_every_end() -> None:
    """"the record keeps the last Engine(keep_ended=...) (default 1) for Engine.enrollments(),
    and the activity log keeps every end.\""""
    host = Host()
    host.engine.publish(content=[note()], journeys=[_once("a"), _once("b")])
    host.send("go")
    assert [(e.journey_id, e.status) for e in host.engine.enrollments("ann")] == [
        ("b", "completed")]
    assert host.log(kinds=("completed",)) == [("completed", None, None)] * 2
    keeping = Host(keep_ended=3)
    keeping.engine.publish(content=[note()], journeys=[_once("a"), _once("b")])
    keeping.send("go")
    assert sorted(e.journey_id for e in keeping.engine.enrollments("ann")) == ["a", "b"]


# --- Duplicates and delivery ---------------------------------------------------------------------


def test_each_visit_of_a_step_has_its_own_idempotency_key() -> None:
    """"Each message has an idempotency key <enrollment>:<step>:<visit>\": a step reached again
    (a loop) sends under a new key."""
    host = Host()
    host.engine.publish(content=[note()], journeys=[Journey(
        "daily", trigger=EventTrigger("go"), entry="mail",
        steps={"mail": Send("note", "email", next="w"), "w": Wait(DAY, next="mail")},
        max_lifetime=10 * DAY)])
    (first,) = host.send("go").messages
    host.clock.advance(DAY)
    (second,) = host.engine.run_due().messages
    assert first.enrollment_id == second.enrollment_id
    assert [first.idempotency_key, second.idempotency_key] == [
        f"{first.enrollment_id}:mail:1", f"{first.enrollment_id}:mail:2"]


# --- Across journeys -----------------------------------------------------------------------------


def test_an_entry_into_a_paused_journey_is_listed_as_paused() -> None:
    """"a paused journey takes no new entries (listed in not_entered as paused)\""""
    host = Host()
    host.engine.publish(content=[note()], journeys=[_once()])
    host.engine.pause_journey("j")
    out = host.send("go")
    assert out.entered == ()
    assert [(n.journey_id, n.reason) for n in out.not_entered] == [("j", "paused")]


def test_inactivity_timers_due_together_fire_by_priority() -> None:
    """"Customer timers due at the same instant (inactivity triggers) fire in the same order\"
    (highest priority first, ties by journey id), each an input of its own: the first keeps
    the others of its exclusive group out while the customer is in it, not once it ended."""
    host = Host()
    host.engine.publish(content=[note()], journeys=[
        _win_back(DAY, "a_low", priority=1, exclusive_group="g"),
        attrs.evolve(_win_back(DAY, "z_high", priority=5, exclusive_group="g"),
                     steps={"mail": Send("note", "email", next="w"), "w": Wait(DAY)}),
        _win_back(DAY, "b_done", exclusive_group="h"),
        _win_back(DAY, "c_done", exclusive_group="h"),
    ])
    host.engine.identify("ann", {"plan": "basic"})
    host.clock.advance(2 * DAY)
    out = host.engine.run_due()
    assert [e.journey_id for e in out.entered] == ["z_high", "b_done", "c_done"]
    assert [(n.journey_id, n.reason) for n in out.not_entered] == [
        ("a_low", "exclusive group 'g': in journey 'z_high'")]


def test_removing_a_customer_without_a_journey_ends_every_enrollment() -> None:
    """"engine.remove_from_journey(customer_id, journey_id, reason) ends one customer's
    enrollments in one journey (or in all, without journey_id) as removed, with the reason.\""""
    def waiting(jid: str) -> Journey:
        return Journey(jid, trigger=EventTrigger("go"), entry="w", steps={"w": Wait(DAY)})

    host = Host()
    host.engine.publish(journeys=[waiting("a"), waiting("b")])
    host.send("go")
    host.send("go", customer="bob")
    out = host.engine.remove_from_journey("ann", reason="account closed")
    assert sorted((e.journey_id, e.status, e.reason) for e in out.ended) == [
        ("a", "removed", "account closed"), ("b", "removed", "account closed")]
    assert len(host.engine.enrollments("bob")) == 2



def test_removing_a_customer_first_fires_what_fell_due_before_the_call(storage: Storage) -> None:
    """"Every enrollment ends in exactly one terminal state, with its instant and a reason
    that names what ended it", whenever a worker comes: a removal decided after a wake-up fell
    due (no worker ran since) ends what is still active then, as it would had the worker run
    on time."""
    host = Host(storage)
    host.engine.publish(content=[note()], journeys=[
        Journey("drip", trigger=EventTrigger("go"), entry="w",
                steps={"w": Wait(DAY, next="mail"), "mail": Send("note", "email", next="w2"),
                       "w2": Wait(DAY)}),
        Journey("short", trigger=EventTrigger("go"), entry="w", max_lifetime=DAY,
                steps={"w": Wait(20 * HOUR, next="w2"), "w2": Wait(20 * HOUR)}),
    ])
    host.send("go")
    host.clock.advance(DAY + HOUR)  # both fell due at +1 day; no worker ran
    out = host.engine.remove_from_journey("ann", reason="account closed")
    assert host.sent() == [("ann", "note", T0 + DAY)]
    assert sorted((e.journey_id, e.status, e.reason, e.at) for e in out.ended) == [
        ("drip", "removed", "account closed", T0 + DAY + HOUR),
        ("short", "expired", "max lifetime", T0 + DAY),
    ]


def test_removing_a_customer_never_seen_makes_no_record_and_sends_nothing(
    storage: Storage
) -> None:
    """A removal finds the customer's enrollments: for a customer never seen there are none,
    and what a new customer would enter (a segment that holds for a missing attribute) is not
    entered."""
    host = Host(storage)
    host.engine.publish(
        content=[note()], segments=[Segment("not_vip", attr("vip") != True)],  # noqa: E712
        journeys=[Journey("welcome", trigger=SegmentTrigger("not_vip"), entry="mail",
                          steps={"mail": Send("note", "email")})],
    )
    out = host.engine.remove_from_journey("ghost")
    assert out.nothing_happened and host.sent() == []
    assert host.engine.customer_state("ghost") is None

# === docs/getting-started.md =====================================================================


def test_on_event_none_ends_the_journey_as_completed() -> None:
    """"`next=None` (or `on_event=None`) means 'end the journey here, as completed'.\""""
    host = Host()
    host.engine.publish(content=[note()], journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="w",
        steps={"w": WaitForEvent("bought", timeout=DAY, on_event=None, on_timeout="mail"),
               "mail": Send("note", "email")})])
    host.send("go")
    host.clock.advance(HOUR)
    assert [e.status for e in host.send("bought").ended] == ["completed"]
    assert host.sent() == []


# === docs/channels.md ============================================================================


class _Refusing(Channel):
    """Refuses every message permanently, each with its own error."""

    def __init__(self) -> None:
        self.errors = iter(f"550 refused #{n}" for n in range(1, 100))

    def send(self, message: Message) -> DeliveryResult:
        return DeliveryResult.permanent(next(self.errors))


def test_a_permanent_failure_on_a_blocked_channel_keeps_the_first_reason() -> None:
    """"A channel already blocked keeps the reason it has\" (each failure is still logged as
    `unreachable`)."""
    clock = ManualClock(T0)
    engine = Engine(channels={"sms": _Refusing()}, clock=clock)
    engine.publish(content=[note()], journeys=[
        Journey(jid, trigger=EventTrigger(jid), entry="s", steps={"s": Send("note", "sms")})
        for jid in ("a", "b")])
    # One group: both messages are committed before either is sent.
    engine.handle_events([event("a", "ann", T0), event("b", "ann", T0)])
    state = engine.customer_state("ann")
    assert state is not None and state.blocked == {"sms": "permanent failure: 550 refused #1"}
    assert [(a.kind, a.detail) for a in engine.activities(T0, T0 + DAY)
            if a.kind == "unreachable"] == [
        ("unreachable", "permanent failure: 550 refused #1"),
        ("unreachable", "permanent failure: 550 refused #2")]


class _Gate(Channel):
    """Refuses permanently while closed; records what it delivers."""

    def __init__(self) -> None:
        self.closed = True
        self.delivered: list[Message] = []

    def send(self, message: Message) -> DeliveryResult:
        if self.closed:
            return DeliveryResult.permanent("number blocked by the carrier")
        self.delivered.append(message)
        return DeliveryResult("delivered")


def test_a_retried_dead_letter_keeps_the_recipient_it_was_written_with() -> None:
    """"The retried message keeps the recipient it was written with; to reach a corrected
    address, the host sends a new message.\""""
    clock, sms = ManualClock(T0), _Gate()
    engine = Engine(channels={"sms": sms}, clock=clock)
    engine.publish(content=[note()], journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="s", steps={"s": Send("note", "sms")})])
    engine.identify("ann", {"phone": "+15550100"})
    engine.handle_event(event("go", "ann", T0))
    (dead,) = engine.dead_letters()
    engine.identify("ann", {"phone": "+15550199"})           # a corrected number
    engine.unblock_channel("ann", "sms")
    sms.closed = False
    assert engine.retry_dead_letter(dead.key) and engine.dispatch_pending() == 1
    assert [(m.idempotency_key, m.recipient) for m in sms.delivered] == [
        (dead.key, {"phone": "+15550100"})]


def test_deferred_dispatch_applies_to_start_journey() -> None:
    """"Engine(dispatch="deferred"): calls only record their messages in the outbox and return
    them in the outcome as pending\" (start_journey among the calls named)."""
    host = Host(dispatch="deferred")
    host.engine.publish(content=[note()], journeys=[Journey(
        "api", trigger=ApiTrigger(), entry="mail", steps={"mail": Send("note", "email")})])
    out = host.engine.start_journey("api", "ann")
    (pending,) = out.pending
    assert out.delivery == {pending.idempotency_key: "pending"} and host.sent() == []
    assert host.engine.dispatch_pending() == 1
    assert host.sent() == [("ann", "note", T0)]


def test_start_journey_starts_a_journey_of_any_trigger_under_the_entry_rules() -> None:
    """"An ApiTrigger journey starts only through Engine.start_journey, which also starts a
    customer on a journey of any other trigger (an operator's manual start): the audience,
    re-entry rules, a pause and the rules across journeys apply as to any entry"."""
    host = Host()
    host.engine.publish(content=[note()], journeys=[Journey(
        "welcome", trigger=EventTrigger("signed_up"), entry="mail",
        steps={"mail": Send("note", "email")}, audience=attr("plan") == "pro",
        reentry=ReentryPolicy("never"),
    )])
    host.engine.identify("ann", {"plan": "pro"})
    host.engine.identify("bob", {"plan": "free"})
    assert [e.customer_id for e in host.engine.start_journey("welcome", "ann").entered] == ["ann"]
    assert not host.engine.start_journey("welcome", "ann").entered   # re-entry: never
    assert not host.engine.start_journey("welcome", "bob").entered   # audience
    host.engine.pause_journey("welcome")
    host.engine.identify("cy", {"plan": "pro"})
    paused = host.engine.start_journey("welcome", "cy")
    assert not paused.entered and [n.reason for n in paused.not_entered] == ["paused"]
    assert host.sent() == [("ann", "note", T0)]


def test_publishing_another_engines_definitions_does_not_copy_its_pauses() -> None:
    """"publish(definitions) takes the journeys, content, segments, policies and rules across
    journeys of a Definitions, never its paused, version_changes, published or withdrawn ...
    so copying one engine's engine.definitions into another does not pause the other's
    journeys"."""
    staging, prod = Host(), Host()
    staging.engine.publish(content=[note()], journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="mail", steps={"mail": Send("note", "email")})],
        segments=[Segment("test", attr("qa") == True)])  # noqa: E712
    staging.engine.pause_journey("j")
    staging.engine.withdraw(segments=["test"])
    assert staging.engine.definitions.paused and staging.engine.definitions.withdrawn
    prod.engine.publish(staging.engine.definitions)
    assert (prod.engine.definitions.paused, prod.engine.definitions.withdrawn) == ((), ())
    assert [j.id for j in prod.engine.definitions.journeys] == ["j"]
    assert [e.journey_id for e in prod.send("go").entered] == ["j"]
    assert not staging.send("go").entered


# === docs/delivery-policies.md ===================================================================

_SUPPRESS = ("suppressed", "fallback", "capped", "quiet_hours")
NIGHT = QuietHours("night", time(21), time(8))


def _news(**send: object) -> Journey:
    channel = str(send.pop("channel", "email"))
    return Journey("digest", trigger=EventTrigger("digest_ready"), entry="send",
                   steps={"send": Send("news", channel, **send)})  # type: ignore[arg-type]


def _receipts(**send: object) -> Journey:
    return Journey("receipts", trigger=EventTrigger("ordered"), entry="send",
                   steps={"send": Send("receipt", "email", transactional=True, **send)})  # type: ignore[arg-type]


NEWS, RECEIPT = note("news", topic="newsletter"), note("receipt")


# --- the order of the checks -------------------------------------------------------------------


def test_the_channel_is_checked_before_quiet_hours() -> None:
    """Right before each send cjo checks, in this order: "1. the channel ... 2. quiet hours\":
    a send on a blocked channel at night is suppressed, not deferred."""
    host = Host()
    host.engine.publish(journeys=[_news()], content=[NEWS], quiet_hours=[NIGHT],
                        topics=[Topic("newsletter")])
    host.engine.block_channel("ann", "email", reason="STOP")
    host.clock.set(T0.replace(hour=22))
    host.send("digest_ready")
    assert host.log(kinds=_SUPPRESS) == [("suppressed", "channel blocked: STOP", "email")]


def test_quiet_hours_are_checked_before_caps() -> None:
    """"2. quiet hours on the chosen channel ...; 3. frequency caps\": a capped send at night is
    first deferred to the morning, and the cap is counted then."""
    host = Host()
    host.engine.publish(journeys=[_news()], content=[NEWS],
                        caps=[FrequencyCap("daily", 1, per=DAY)], quiet_hours=[NIGHT],
                        topics=[Topic("newsletter")])
    host.clock.set(T0.replace(hour=20))
    host.send("digest_ready")                                  # sent at 20:00
    host.clock.set(T0.replace(hour=22))
    host.send("digest_ready")                                  # at night, and over the cap
    host.clock.set(T0 + DAY)
    host.engine.run_due()
    morning = (T0 + DAY).replace(hour=8)
    assert host.log(kinds=_SUPPRESS) == [
        ("quiet_hours", f"night: deferred to {morning.isoformat()}", "email"),
        ("capped", "daily: skipped", "email")]
    assert [at for _, _, at in host.sent()] == [T0.replace(hour=20)]


# --- Consent -------------------------------------------------------------------------------------


def test_a_send_without_a_topic_is_stopped_by_a_marketing_opt_out_only() -> None:
    """"A send with no topic is still marketing (unless transactional=True): it is stopped by an
    opt-out of all marketing on its channel\" (and not by a topic's opt-out)."""
    host = Host()
    host.engine.publish(journeys=[_news()], content=[note("news")],
                        topics=[Topic("newsletter")])
    host.engine.set_consent("ann", subscribed=False, topic="newsletter")
    assert len(host.send("digest_ready").messages) == 1
    host.clock.advance(HOUR)
    host.engine.set_consent("ann", subscribed=False, channel="email")
    assert host.send("digest_ready").messages == ()
    assert host.log(kinds=_SUPPRESS) == [
        ("suppressed", "unsubscribed from marketing on email", "email")]


def test_channel_block_reasons_a_bounce_keeps_and_a_block_event_restates() -> None:
    """"A hard bounce or a permanent failure on a channel already blocked leaves its reason as
    it is (a 'STOP' stays a 'STOP'); a block by the host (block_channel) or a channel_blocked
    event states its reason anew\"; a channel_unblocked event lifts the block."""
    host = Host()
    host.engine.publish(journeys=[_receipts()], content=[RECEIPT])
    (receipt,) = host.send("ordered").messages
    host.send("channel_blocked", channel="email", reason="STOP")
    host.send("bounced", message_id=receipt.idempotency_key, type="hard")

    def blocked() -> dict[str, str]:
        state = host.engine.customer_state("ann")
        assert state is not None
        return state.blocked

    assert blocked() == {"email": "STOP"}
    host.send("channel_blocked", channel="email", reason="mailbox closed")
    assert blocked() == {"email": "mailbox closed"}
    host.send("channel_unblocked", channel="email")
    assert blocked() == {}
    assert len(host.send("ordered").messages) == 1


# --- Contact details and fallback channels -------------------------------------------------------


def test_an_empty_contact_attribute_does_not_reach_the_customer() -> None:
    """"a customer without it (missing or empty) is not sent to on that channel\""""
    host = Host(contact_attributes=STANDARD_CONTACT_ATTRIBUTES)
    host.engine.publish(journeys=[_news()], content=[NEWS], topics=[Topic("newsletter")])
    host.engine.identify("ann", {"email": ""})
    assert host.send("digest_ready").messages == ()
    assert host.log(kinds=_SUPPRESS) == [("suppressed", "no email", "email")]


def test_when_no_channel_can_be_used_the_last_is_logged_as_suppressed() -> None:
    """"Each channel passed over is logged as fallback with its reason; ... when none can be
    used, the last one is logged as suppressed.\""""
    host = Host(contact_attributes=STANDARD_CONTACT_ATTRIBUTES)
    host.engine.publish(journeys=[_news(channel="push", fallbacks=("sms", "email"))],
                        content=[NEWS], topics=[Topic("newsletter")])
    out = host.send("digest_ready")
    assert out.messages == () and [e.status for e in out.ended] == ["completed"]
    assert host.log(kinds=_SUPPRESS) == [
        ("fallback", "no push_token", "push"), ("fallback", "no phone", "sms"),
        ("suppressed", "no email", "email")]


# --- Frequency caps ------------------------------------------------------------------------------


def test_transactional_sends_are_not_counted_by_caps() -> None:
    """"Transactional sends are never capped and never counted.\""""
    host = Host()
    host.engine.publish(journeys=[_news(), _receipts()], content=[NEWS, RECEIPT],
                        topics=[Topic("newsletter")], caps=[FrequencyCap("weekly", 1, per=7 * DAY)])
    for _ in range(3):
        host.send("ordered")
    assert len(host.send("digest_ready").messages) == 1        # the receipts took no slot
    assert len(host.send("ordered").messages) == 1             # nor does the cap hold them
    assert [c for _, c, _ in host.sent()] == ["receipt"] * 3 + ["news", "receipt"]


def test_a_cap_published_later_counts_only_the_sends_still_kept() -> None:
    """"a cap published later ... counts only the sends still kept: those the earlier caps had
    let go (or all of them, when there was no cap) are not counted\""""
    host = Host()
    host.engine.publish(journeys=[_news()], content=[NEWS], topics=[Topic("newsletter")])
    for _ in range(3):
        host.send("digest_ready")
    host.engine.publish(caps=[FrequencyCap("weekly", 2, per=7 * DAY)])
    sent = [bool(host.send("digest_ready").messages) for _ in range(3)]
    assert sent == [True, True, False]


def test_a_calendar_day_cap_uses_the_profile_then_journey_zone_then_the_engine_default() -> None:
    """"period='calendar_day': the customer's calendar day, in their time zone (profile, then
    journey, then Engine(default_timezone=...), then UTC)\""""
    host = Host(default_timezone="America/New_York")
    host.engine.publish(
        journeys=[_news(), attrs.evolve(_news(), id="tokyo", timezone="Asia/Tokyo",
                                        trigger=EventTrigger("tokyo_ready"))],
        content=[NEWS], topics=[Topic("newsletter")],
        caps=[FrequencyCap("daily", 1, period="calendar_day")])
    host.engine.identify("cy", {}, timezone="UTC")

    def sends(name: str, customer: str, *hours: tuple[int, int]) -> list[bool]:
        out = []
        for day, hour in hours:
            host.clock.set(datetime(2026, 3, day, hour, 0, tzinfo=UTC))
            out.append(bool(host.send(name, customer=customer).messages))
        return out

    # New York: 23:00 and 03:00 UTC are one day (18:00, 22:00); 05:00 UTC is its midnight.
    assert sends("digest_ready", "ann", (2, 23), (3, 3), (3, 5)) == [True, False, True]
    # The journey's Tokyo: 14:00 UTC is 23:00 there, 16:00 UTC the next day's 01:00.
    assert sends("tokyo_ready", "bob", (4, 14), (4, 16)) == [True, True]
    # A profile zone wins over the journey's: 14:00 and 16:00 UTC are one UTC day.
    assert sends("tokyo_ready", "cy", (5, 14), (5, 16)) == [True, False]


# --- Delivery feedback ---------------------------------------------------------------------------


def _fallback_host(storage: Storage | None = None) -> Host:
    """News by email, falling back to SMS; customers have a phone number and no email."""
    host = Host(storage, contact_attributes=STANDARD_CONTACT_ATTRIBUTES)
    host.engine.publish(journeys=[_news(fallbacks=("sms",))], content=[NEWS],
                        topics=[Topic("newsletter")])
    for customer in ("ann", "bob"):
        host.engine.identify(customer, {"phone": "+15550100"})
    return host


def test_feedback_acts_on_the_channel_the_outbox_says_the_message_went_out_on() -> None:
    """"The event acts on the message as it was sent: the channel it went out on (a fallback
    channel) ..., read from the outbox\" (whatever `channel` the event carries)."""
    host = _fallback_host()
    (message,) = host.send("digest_ready").messages
    assert message.channel == "sms"
    host.send("bounced", message_id=message.idempotency_key, type="hard", channel="email")
    state = host.engine.customer_state("ann")
    assert state is not None and state.blocked == {"sms": "hard bounce"}
    assert host.log(kinds=("bounced",)) == [("bounced", "hard", "sms")]


def test_feedback_on_a_pruned_message_takes_the_events_channel_else_the_steps(
    storage: Storage,
) -> None:
    """"A message the outbox no longer holds (pruned after Retention.outbox) is taken to have
    gone out on the event's channel property, else the Send step's channel\""""
    host = _fallback_host(storage)
    keys = {c: host.send("digest_ready", customer=c).messages[0].idempotency_key
            for c in ("ann", "bob")}
    host.clock.advance(8 * DAY)
    host.engine.prune()
    assert host.engine.storage.outbox_entry(keys["ann"]) is None
    host.send("bounced", customer="ann", message_id=keys["ann"], type="hard", channel="sms")
    host.send("bounced", customer="bob", message_id=keys["bob"], type="hard")
    blocked = {c: s.blocked for c in ("ann", "bob")
               if (s := host.engine.customer_state(c)) is not None}
    assert blocked == {"ann": {"sms": "hard bounce"}, "bob": {"email": "hard bounce"}}


def test_feedback_naming_no_message_changes_consent_but_is_not_logged() -> None:
    """"An event whose message_id names no message of this customer still changes consent when
    it says which channel (`channel`), but is not logged against a journey.\""""
    host = _fallback_host()
    (message,) = host.send("digest_ready").messages
    # Bob names Ann's message: not one of his.
    host.send("unsubscribed", customer="bob", message_id=message.idempotency_key,
              channel="sms")
    host.send("complained", customer="bob", message_id="nowhere:1", channel="push")
    state = host.engine.customer_state("bob")
    assert state is not None
    assert state.consent == {("*", "sms"): (False, T0), ("*", "push"): (False, T0)}
    assert host.log("bob", kinds=("unsubscribed", "complained")) == []


# === docs/semantics.md, continued ================================================================


def test_a_date_beyond_the_lifetime_expires_the_enrollment_at_that_age() -> None:
    """"a date beyond the journey's max_lifetime ends the enrollment as expired at that age.\""""
    host = Host()
    host.engine.publish(content=[note()], journeys=[Journey(
        "renewal", trigger=EventTrigger("go"), entry="w", max_lifetime=30 * DAY,
        steps={"w": WaitUntilDate(attr("renews_on"), next="mail"),
               "mail": Send("note", "email")})])
    host.engine.identify("ann", {"renews_on": "2026-06-01"})
    host.send("go")
    host.clock.set(T0 + 100 * DAY)
    out = host.engine.run_due()
    assert [(e.status, e.at) for e in out.ended] == [("expired", T0 + 30 * DAY)]
    assert host.sent() == []


def test_a_profile_update_in_a_group_is_checked_against_exit_conditions() -> None:
    """"Exit criteria are checked ... when the host changes the profile (identify, a
    ProfileUpdate in handle_events)\""""
    host = Host()
    host.engine.publish(content=[note()], journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="w",
        exit_criteria=(ExitCriterion("closed", where=attr("closed") == True),),  # noqa: E712
        steps={"w": Wait(DAY, next="mail"), "mail": Send("note", "email")})])
    host.send("go")
    host.clock.advance(HOUR)
    out = host.engine.handle_events([ProfileUpdate("ann", {"closed": True})])
    assert [(e.status, e.reason) for e in out.ended] == [("exited", "closed")]


def test_a_shrunk_control_group_releases_customers_inside_journeys() -> None:
    """"it can shrink, which releases part of the control group into the treated group: those
    customers receive journey messages from then on, even in journeys they entered as
    control\""""
    wide, narrow = ControlGroup(50, "cg"), ControlGroup(10, "cg")
    released = next(f"c{i}" for i in range(1000)
                    if in_control_group(f"c{i}", wide) and not in_control_group(f"c{i}", narrow))
    host = Host()
    host.engine.publish(control_group=wide, content=[note("first"), note("later")],
                        journeys=[Journey(
                            "j", trigger=EventTrigger("go"), entry="first",
                            steps={"first": Send("first", "email", next="w"),
                                   "w": Wait(HOUR, next="later"),
                                   "later": Send("later", "email")})])
    host.send("go", customer=released)
    assert host.log(released, kinds=("entered", "suppressed")) == [
        ("entered", "control", None), ("suppressed", "control", "email")]
    host.engine.publish(control_group=narrow)
    host.clock.advance(HOUR)
    host.engine.run_due()
    assert host.sent() == [(released, "later", T0 + HOUR)]


# === docs/delivery-policies.md, continued ========================================================


def test_consent_events_reach_the_record_when_no_journey_reads_them() -> None:
    """"These events always reach the customer's record, whether or not a journey reads
    them.\""""
    host = Host()
    host.engine.publish(topics=[Topic("newsletter")])  # declared, by no journey read
    host.send("unsubscribed", topic="newsletter")
    host.send("channel_blocked", channel="sms", reason="STOP")
    state = host.engine.customer_state("ann")
    assert state is not None
    assert state.consent == {("newsletter", "*"): (False, T0)}
    assert state.blocked == {"sms": "STOP"}


def test_a_journey_a_consent_event_starts_already_sees_the_change() -> None:
    """Consent events are "handled by engine.handle_event like any other (so they ... can also
    start journeys)\", and the consent they state is applied first."""
    host = Host()
    host.engine.publish(topics=[Topic("newsletter")], content=[NEWS], journeys=[Journey(
        "sorry", trigger=EventTrigger("unsubscribed"), entry="send",
        steps={"send": Send("news", "email")})])
    out = host.send("unsubscribed", topic="newsletter")
    assert len(out.entered) == 1 and out.messages == ()
    assert host.log(kinds=_SUPPRESS) == [
        ("suppressed", "unsubscribed from newsletter", "email")]


def test_quiet_hours_limited_to_a_channel_and_holding_transactional_sends() -> None:
    """"channels=('sms',): only those ... channels\"; "include_transactional=True holds
    transactional sends too (by default they pass).\""""
    host = Host()
    host.engine.publish(
        journeys=[_news(channel="sms"), _receipts(), attrs.evolve(_news(), id="mail")],
        content=[NEWS, RECEIPT], topics=[Topic("newsletter")],
        quiet_hours=[QuietHours("sms_night", time(21), time(8), channels=("sms",)),
                     QuietHours("hold_all", time(23), time(7), journeys=("receipts",),
                                include_transactional=True)])
    host.clock.set(T0.replace(hour=22))
    assert [m.channel for m in host.send("digest_ready").messages] == ["email"]  # 'mail' only
    host.clock.set(T0.replace(hour=23, minute=30))
    assert host.send("ordered").messages == ()
    host.clock.set(T0 + DAY)
    host.engine.run_due()
    assert sorted((c, at) for _, c, at in host.sent("sms")) == [
        ("news", (T0 + DAY).replace(hour=8))]
    assert [(c, at) for _, c, at in host.sent("email")] == [
        ("news", T0.replace(hour=22)), ("receipt", (T0 + DAY).replace(hour=7))]


def test_a_goal_window_is_timed_from_the_instant_decided() -> None:
    """"Entries, steps, waits, goal windows and re-entry windows are timed from the instant the
    engine decides\": a purchase made in the window but arriving after it does not count."""
    host = Host()
    host.engine.publish(content=[note()], journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="w", steps={"w": Wait(DAY)},
        goal=Goal("bought", within=2 * HOUR))])
    host.send("go")
    host.clock.advance(3 * HOUR)
    assert host.send("bought", at=T0 + HOUR).goals == ()


def test_no_second_enrollment_in_a_new_version_while_one_runs() -> None:
    """"Whatever the policy, a customer is never in two enrollments of one journey (any version)
    at once for the same instance key.\""""
    def drip(version: int) -> Journey:
        return Journey("drip", version=version, trigger=EventTrigger("go"), entry="w",
                       steps={"w": Wait(DAY)})

    host = Host()
    host.engine.publish(journeys=[drip(1)])
    host.send("go")
    host.engine.publish(journeys=[drip(2)])
    host.clock.advance(HOUR)
    assert host.send("go").entered == ()
    host.clock.advance(DAY)
    assert [(e.version, e.at) for e in host.send("go").entered] == [(2, T0 + DAY + HOUR)]


def test_an_inactivity_entry_the_audience_refuses_waits_for_the_next_spell() -> None:
    """"It fires once per quiet spell: after it fires, nothing more happens until the next
    qualifying event starts a new spell. Entry still follows the audience and the re-entry
    policy.\""""
    host = Host()
    host.engine.publish(content=[note()], journeys=[
        _win_back(DAY, audience=attr("vip") == True)])  # noqa: E712
    host.engine.identify("ann", {"vip": False})
    host.clock.set(T0 + 2 * DAY)
    assert host.engine.run_due().entered == ()                # fired, the audience refused
    host.engine.identify("ann", {"vip": True})
    host.clock.set(T0 + 5 * DAY)
    host.engine.run_due()
    assert host.sent() == []
    host.send("purchased")                                    # a new spell
    host.clock.set(T0 + 7 * DAY)
    host.engine.run_due()
    assert host.sent() == [("ann", "note", T0 + 6 * DAY)]


def test_an_event_id_is_a_duplicate_only_within_its_retention() -> None:
    """"An event whose event_id was handled before (within Retention.event_ids, 7 days by
    default) changes nothing; the outcome says duplicate.\""""
    host = Host()
    host.engine.publish(content=[note()], journeys=[_once()])
    host.engine.handle_event(event("go", "ann", T0, "same"))
    host.clock.set(T0 + 7 * DAY - MINUTE)
    host.engine.prune()
    assert host.engine.handle_event(event("go", "ann", host.clock.now(), "same")).duplicate
    host.clock.set(T0 + 7 * DAY + MINUTE)
    host.engine.prune()
    again = host.engine.handle_event(event("go", "ann", host.clock.now(), "same"))
    assert not again.duplicate and len(again.entered) == 1


# === docs/getting-started.md, continued ==========================================================


def test_the_install_line_names_every_core_dependency() -> None:
    """"pip install cjo  # the core: attrs, cattrs, sortedcontainers, python-liquid, croniter
    (and tzdata on Windows)\" and the extras it names."""
    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    page = (root / "docs" / "getting-started.md").read_text(encoding="utf-8")
    install = page[page.index("pip install cjo "):page.index("```", page.index("pip install cjo "))]
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=;\[ ]", requirement, maxsplit=1)[0]
        assert name in install, f"{name} is not named on the install line"
    extras = set(project["optional-dependencies"]) - {"dev"}  # dev is the project's tooling
    assert extras >= {"postgres", "webhook", "testing"}
    for extra in extras:
        assert f'"cjo[{extra}]"' in install, f"the extra {extra} is not on the install lines"
