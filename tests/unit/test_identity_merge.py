"""The record merge of ``cjo.identity``, field by field, on records built by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cjo.identity import merge_into, merged_profile
from cjo.model.content import ContentItem, Variant
from cjo.model.definitions import Definitions
from cjo.model.events import Profile
from cjo.model.journey import Journey, ReentryPolicy
from cjo.model.steps import Send, Wait
from cjo.runtime.core import Decider, reentry_allows
from cjo.runtime.options import DecisionOptions
from cjo.runtime.registry import Registry
from cjo.runtime.state import (
    CustomerState,
    EndedEnrollment,
    Enrollment,
    EntryHistory,
    OfferHistory,
    Track,
)
from cjo.segments.membership import SEGMENT_TIMER

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)


def _deciders(known: CustomerState, anonymous: CustomerState) -> tuple[Decider, Decider]:
    registry = Registry.build(Definitions(), 1)
    options = DecisionOptions(keep_ended=2)
    return Decider(registry, known, options), Decider(registry, anonymous, options)


def test_offer_counts_entry_histories_ledger_and_ended_combine() -> None:
    known = CustomerState("c1", T0, revision=3)
    anon = CustomerState("a1", T0, revision=2)
    known.offers = {"gold": OfferHistory(2, (T0, T0 + 2 * H)), "silver": OfferHistory(1, (T0,))}
    anon.offers = {"gold": OfferHistory(1, (T0 + H,)), "bronze": OfferHistory(4, ())}
    known.history = {("j", None): EntryHistory.of(2, (T0, T0 + 3 * H), T0 + H)}
    anon.history = {("j", None): EntryHistory.of(1, (T0 + 2 * H,), T0 + 4 * H),
                    ("k", "cart-1"): EntryHistory.of(1)}
    known.sends = [(T0, "email", ()), (T0 + 2 * H, "sms", ("promo",))]
    anon.sends = [(T0 + H, "email", ("promo",))]
    known.ended = (EndedEnrollment("e1", "j", 1, T0, T0 + H, "completed"),)
    anon.ended = (EndedEnrollment("e2", "j", 1, T0, T0 + 3 * H, "exited"),
                  EndedEnrollment("e3", "j", 1, T0, T0 + 2 * H, "completed"))
    k, a = _deciders(known, anon)
    merge_into(k, a, T0 + 5 * H)
    # Neither the offers nor the journey is published: no rule says how many instants count,
    # so every one is kept (the next send or entry trims them to its rule).
    assert known.offers == {"gold": OfferHistory(3, (T0, T0 + H, T0 + 2 * H)),
                            "silver": OfferHistory(1, (T0,)), "bronze": OfferHistory(4, ())}
    assert known.history[("j", None)] == EntryHistory(
        3, (T0, T0 + 2 * H, T0 + 3 * H), T0 + 4 * H)
    assert known.history[("k", "cart-1")].count == 1
    assert [s[0] for s in known.sends] == [T0, T0 + H, T0 + 2 * H]
    assert [x.id for x in known.ended] == ["e3", "e2"]  # keep_ended newest
    assert a.state.customer_id == "a1" and a.state.revision == 2
    assert (a.state.offers, a.state.history, a.state.sends, a.state.ended) == ({}, {}, [], ())
    assert a.dirty and k.dirty


def test_tracks_marks_timers_and_memberships_combine() -> None:
    known = CustomerState("c1", T0)
    anon = CustomerState("a1", T0 - H)
    known.tracks = {"buy|amount": Track(T0, T0 + H, T0 + 3 * H, 2, 30, 10, 20,
                                        [(T0 + H, 10), (T0 + 3 * H, 20)], {"r": [2, 30, 10, 20]})}
    anon.tracks = {"buy|amount": Track(T0 - H, T0, T0 + 2 * H, 2, 105, 5, 100,
                                       [(T0, 5), (T0 + 2 * H, 100)], {"r": [1, 5, 5, 5]}),
                   "login": Track(T0 - H, T0, T0, 1)}
    known.marks = {"seen": T0}
    anon.marks = {"seen": T0 + H, "other": T0}
    known.decided_at, anon.decided_at = T0 + 2 * H, T0 + 3 * H
    known.timers = {"other": T0 + 10 * H, SEGMENT_TIMER: T0 + 9 * H}
    anon.timers = {"other": T0 + 11 * H, SEGMENT_TIMER: T0 + 5 * H}
    known.segments = {"s1": T0 + H}
    anon.segments = {"s1": T0, "s2": T0 + 2 * H}
    k, a = _deciders(known, anon)
    merge_into(k, a, T0 + 4 * H)
    t = known.tracks["buy|amount"]
    assert (t.since, t.first, t.last, t.count, t.total, t.low, t.high) == (
        T0 - H, T0, T0 + 3 * H, 4, 135, 5, 100)
    assert [r[0] for r in t.recent] == [T0, T0 + H, T0 + 2 * H, T0 + 3 * H]
    assert t.ranges == {"r": [3, 35, 5, 20]}
    assert known.tracks["login"].count == 1
    assert known.tracks["login"] is not anon.tracks.get("login")
    assert known.marks == {"seen": T0 + H, "other": T0}
    assert known.decided_at == T0 + 3 * H  # the later of the two
    # The segment timer is set again when memberships are evaluated; others keep the later.
    assert known.timers == {"other": T0 + 11 * H, SEGMENT_TIMER: T0 + 9 * H}
    assert known.segments == {"s1": T0, "s2": T0 + 2 * H}
    assert a.state.tracks == {} and a.state.segments == {}


def test_the_quiet_spell_of_the_later_qualifying_event_goes_on() -> None:
    known = CustomerState("c1", T0 - 100 * H)
    anon = CustomerState("a1", T0)
    # Journey "a": only the known customer bought (at T0 - 50 h); the anonymous record's spell
    # runs from its creation. Journey "b": both bought, the anonymous customer later. Journey
    # "c": neither bought; the known customer's spell fired already.
    known.marks = {"seen:a": T0 - 50 * H, "seen:b": T0 - 20 * H, "fired:c": T0 - 100 * H}
    known.timers = {"trigger:a": T0 + 50 * H, "trigger:b": T0 + 80 * H}
    anon.marks = {"seen:b": T0 + H, "fired:b": T0 + H}
    anon.timers = {"trigger:a": T0 + 100 * H, "trigger:c": T0 + 100 * H}
    k, a = _deciders(known, anon)
    merge_into(k, a, T0 + 2 * H)
    assert known.marks == {"seen:a": T0 - 50 * H, "seen:b": T0 + H, "fired:b": T0 + H,
                           "fired:c": T0 - 100 * H}
    assert known.timers == {"trigger:a": T0 + 50 * H}


def test_a_known_customer_new_to_the_trigger_takes_the_anonymous_spell() -> None:
    known = CustomerState("c1", T0 + 2 * H)
    anon = CustomerState("a1", T0)
    anon.marks = {"fired:a": T0}
    k, a = _deciders(known, anon)
    merge_into(k, a, T0 + 2 * H)
    # The spell that fired goes on from the anonymous creation, so it does not fire again.
    assert known.marks == {"fired:a": T0, "since:a": T0}
    assert known.timers == {}


def test_enrollments_move_unless_the_known_customer_is_in_the_journey() -> None:
    known = CustomerState("c1", T0)
    anon = CustomerState("a1", T0)
    known.enrollments = [Enrollment("j1:c1:1", "j1", 1, "c1", T0, "wait", wake_at=T0 + H)]
    anon.enrollments = [
        Enrollment("j1:a1:1", "j1", 1, "a1", T0, "wait", wake_at=T0 + 2 * H),
        Enrollment("j2:a1:1", "j2", 3, "a1", T0, "wait", wake_at=T0 + 3 * H),
    ]
    k, a = _deciders(known, anon)
    moved = merge_into(k, a, T0 + 30 * timedelta(minutes=1))
    assert moved == ["j2:a1:1"]
    assert [(e.id, e.customer_id, e.wake_at) for e in known.enrollments] == [
        ("j1:c1:1", "c1", T0 + H), ("j2:a1:1", "c1", T0 + 3 * H),
    ]
    assert [(e.id, e.status) for e in a.state.enrollments] == []
    assert [(x.kind, x.enrollment_id) for x in a.activities] == [("merged", "j1:a1:1")]
    assert [(x.kind, x.enrollment_id, x.detail) for x in k.activities] == [
        ("merged_in", "j2:a1:1", "a1"),
    ]


def test_merged_profile_prefers_known_values_and_fills_gaps() -> None:
    anon = Profile("a1", {"color": "red", "size": "M"}, "Europe/Paris", "de")
    assert merged_profile("c1", None, anon) == Profile(
        "c1", {"color": "red", "size": "M"}, "Europe/Paris", "de")
    known = Profile("c1", {"color": "blue"}, None, "fr")
    assert merged_profile("c1", known, anon) == Profile(
        "c1", {"color": "blue", "size": "M"}, "Europe/Paris", "fr")


def _journey_registry(reentry: ReentryPolicy | None = None) -> Registry:
    journey = Journey(
        id="j1", entry="a", reentry=reentry or ReentryPolicy(),
        steps={"a": Send("note", "inbox", next="w1"), "w1": Wait(H, next="b"),
               "b": Send("note", "inbox", next="w2"), "w2": Wait(H, next="c"),
               "c": Send("note", "inbox")},
    )
    note = ContentItem("note", variants=(Variant("inbox", {"text": "hi"}),))
    return Registry.build(Definitions(journeys=[journey], content=[note]), 1)


def test_the_continuing_enrollment_learns_the_send_passes_the_merged_one_made() -> None:
    registry = _journey_registry()
    known = CustomerState("c1", T0)
    anon = CustomerState("a1", T0)
    going_on = Enrollment("j1:c1:1", "j1", 1, "c1", T0 + H, "w1", visits={"a": 1, "w1": 1},
                          merged_passes={"c": 1})
    known.enrollments = [going_on]
    # Waiting on "b" (a deferred send): that pass has not gone out; "a" went out twice (a loop).
    anon.enrollments = [Enrollment("j1:a1:1", "j1", 1, "a1", T0, "b",
                                   visits={"a": 2, "w1": 2, "b": 1}, merged_passes={"c": 2})]
    k, a = Decider(registry, known), Decider(registry, anon)
    assert merge_into(k, a, T0 + 2 * H) == []
    assert going_on.merged_passes == {"a": 2, "c": 2}
    assert going_on.visits == {"a": 1, "w1": 1}  # its own, untouched
    # Nothing of the kind: no container at all, as for every enrollment never merged.
    other = Enrollment("j1:c2:1", "j1", 1, "c2", T0 + H, "w1", visits={"a": 1, "w1": 1})
    known2, anon2 = CustomerState("c2", T0), CustomerState("a2", T0)
    known2.enrollments = [other]
    anon2.enrollments = [Enrollment("j1:a2:1", "j1", 1, "a2", T0, "a", visits={"a": 1})]
    merge_into(Decider(registry, known2), Decider(registry, anon2), T0 + 2 * H)
    assert other.merged_passes is None


def test_an_anonymous_enrollment_is_judged_by_the_known_history_at_its_entry() -> None:
    def moved(policy: ReentryPolicy, history: EntryHistory, entered: datetime) -> bool:
        known = CustomerState("c1", T0 - 100 * H)
        anon = CustomerState("a1", T0 - 100 * H)
        known.history = {("j1", None): history}
        anon.enrollments = [Enrollment("j1:a1:1", "j1", 1, "a1", entered, "w1")]
        registry = _journey_registry(policy)
        return merge_into(Decider(registry, known), Decider(registry, anon), T0) == ["j1:a1:1"]

    never, day = ReentryPolicy.never(), 24 * H
    assert moved(never, EntryHistory.of(0), T0 - H)
    assert not moved(never, EntryHistory.of(1), T0 - H)
    cooldown = ReentryPolicy.after_cooldown(day)
    assert moved(cooldown, EntryHistory.of(1, (), T0 - 30 * H), T0 - 6 * H)
    assert not moved(cooldown, EntryHistory.of(1, (), T0 - 20 * H), T0 - 6 * H)
    # The known customer's enrollment ended after the anonymous one began: it ran meanwhile.
    assert not moved(cooldown, EntryHistory.of(1, (), T0 - 2 * H), T0 - 6 * H)
    at_most = ReentryPolicy.at_most(2, per=10 * H)
    assert moved(at_most, EntryHistory.of(2, (T0 - 30 * H, T0 - 12 * H)), T0 - 6 * H)
    assert not moved(at_most, EntryHistory.of(2, (T0 - 9 * H, T0 - 8 * H)), T0 - 6 * H)
    # Entries after the anonymous one's count too, by every window holding it.
    assert not moved(at_most, EntryHistory.of(2, (T0 - 5 * H, T0 - 4 * H)), T0 - 6 * H)
    assert moved(at_most, EntryHistory.of(2, (T0 - 15 * H, T0 - H)), T0 - 6 * H)
    guarded = ReentryPolicy.after_exit(guard=H)
    assert moved(guarded, EntryHistory.of(1, (T0 - 3 * H,)), T0 - 6 * H)
    assert not moved(guarded, EntryHistory.of(1, (T0 - 6 * H + H / 2,)), T0 - 6 * H)


def test_reentry_rules_with_entries_after_the_instant_judged() -> None:
    at = T0
    at_most = ReentryPolicy.at_most(2, per=10 * H)
    # The window (T0 - 3 h, T0 + 7 h] holds both entries and T0; no window holds an entry
    # 9 h before T0 and one 9 h after it.
    assert not reentry_allows(at_most, EntryHistory.of(2, (at - 2 * H, at + 7 * H)), at)
    assert reentry_allows(at_most, EntryHistory.of(2, (at - 9 * H, at + 9 * H)), at)
    # Half-open, as everywhere: 10 h apart is not within one window.
    assert reentry_allows(ReentryPolicy.at_most(1, per=10 * H), EntryHistory.of(1, (at + 10 * H,)),
                          at)
    assert not EntryHistory.of(1, (at + 2 * H,)).guards(H, at)
    assert EntryHistory.of(1, (at + H / 2,)).guards(H, at)
    assert EntryHistory.of(1, (at - H / 2,)).guards(H, at)
