"""The rules the user documentation states, each held to the code by a scenario on a manual
clock: one test per claim that no other test checks, grouped by page and section. Each
docstring quotes the claim it checks."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import attrs
import pytest

from cjo import (
    ApiTrigger,
    Channel,
    ContentItem,
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
    QuietHours,
    RecordingChannel,
    ReentryPolicy,
    Send,
    Storage,
    Topic,
    UpdateProfile,
    Variant,
    VersionChange,
    Wait,
    WaitForEvent,
    attr,
)
from cjo.delivery import STANDARD_CONTACT_ATTRIBUTES
from cjo.errors import DefinitionError

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
