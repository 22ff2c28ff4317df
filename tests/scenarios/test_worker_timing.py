"""A result never depends on when a worker runs: the same scenario with a worker at every minute
and with one only at the end sends the same messages at the same instants and logs the same
activities, on every storage. Covered here: a new version's migration or ejection (applied at
the publish instant, after the wake-ups due before it), and pauses (tied to their instants:
a wake-up due before a pause fires, one due inside it is held and released at the resume)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cjo import (
    ContentItem,
    Engine,
    EventTrigger,
    InactivityTrigger,
    Journey,
    Jump,
    ManualClock,
    RecordingChannel,
    ResumeRule,
    Send,
    Variant,
    VersionChange,
    Wait,
)
from cjo.storage.base import Storage
from cjo.storage.memory import InMemoryStorage
from cjo.storage.sqlite import SQLiteStorage
from tests.helpers import T0, ev

MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)

Action = Callable[[Engine], object]
# (offset from T0, what the host does then)
Timeline = list[tuple[timedelta, Action]]


def _content(*ids: str) -> list[ContentItem]:
    return [ContentItem(i, (Variant("email", {"subject": i, "text": f"text of {i}"}),))
            for i in ids]


@pytest.fixture(params=["memory", "sqlite"])
def storages(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Storage]]:
    """Makes a fresh storage of one kind for each run of a scenario."""
    opened: list[Storage] = []

    def make() -> Storage:
        if request.param == "memory":
            opened.append(InMemoryStorage())
        else:
            opened.append(SQLiteStorage(tmp_path / f"run{len(opened)}.db"))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


def _play(storage: Storage, timeline: Timeline, until: timedelta, *, eager: bool) -> Any:
    """Run ``timeline``; an eager worker calls ``run_due`` at every minute before each host
    call and up to ``until``, a lazy one only at ``until``. Returns the sends and the log."""
    clock, email = ManualClock(T0), RecordingChannel()
    engine = Engine(storage, {"email": email}, clock)

    def work_until(offset: timedelta) -> None:
        while eager and clock.now() + MINUTE < T0 + offset:
            clock.advance(MINUTE)
            engine.run_due()

    for offset, action in timeline:
        work_until(offset)
        clock.set(T0 + offset)
        action(engine)
    work_until(until)
    clock.set(T0 + until)
    engine.run_due()
    sends = [(m.customer_id, m.journey_version, m.step_id, m.content_id, m.fields["text"],
              m.created_at) for m in email.messages]
    log = [(a.at, a.customer_id, a.journey_id, a.version, a.step_id, a.kind, a.detail)
           for a in engine.activities(T0 - DAY, T0 + until + DAY)]
    # Stable: one customer's entries at one instant keep the order they happened in.
    return sorted(sends, key=lambda s: (s[5], s[0])), sorted(log, key=lambda r: (r[0], r[1]))


def _same_either_way(
    storages: Callable[[], Storage], timeline: Timeline, until: timedelta
) -> tuple[list[Any], list[Any]]:
    eager = _play(storages(), timeline, until, eager=True)
    lazy = _play(storages(), timeline, until, eager=False)
    assert lazy[0] == eager[0]
    assert lazy[1] == eager[1]
    return eager  # type: ignore[no-any-return]


def _enter(customer: str, offset: timedelta) -> Action:
    return lambda engine: engine.handle_event(ev("go", customer, T0 + offset))


def _kinds(log: list[Any], customer: str) -> list[tuple[timedelta, str]]:
    return [(row[0] - T0, row[5]) for row in log if row[1] == customer]


# --- new versions ------------------------------------------------------------------------------


def _versioned(version: int, *, wait: timedelta = HOUR) -> Journey:
    """Wait an hour, send, wait ``wait``, send: every send of version n sends content vn."""
    content = f"v{version}"
    return Journey(
        id="on", version=version, trigger=EventTrigger("go"), entry="w1",
        steps={"w1": Wait(HOUR, next="s1"), "s1": Send(content, "email", next="w2"),
               "w2": Wait(wait, next="s2"), "s2": Send(content, "email")},
    )


_STEPS = {"w1": "w1", "s1": "s1", "w2": "w2", "s2": "s2"}


def test_a_migration_comes_after_the_wake_ups_due_before_it(
    storages: Callable[[], Storage],
) -> None:
    # Ann's first send falls due at +1 h, an hour before v2 exists; her second at +4 h.
    timeline: Timeline = [
        (timedelta(0), lambda e: e.publish(journeys=[_versioned(1, wait=3 * HOUR)],
                                           content=_content("v1", "v2"))),
        (timedelta(0), _enter("ann", timedelta(0))),
        (2 * HOUR, lambda e: e.publish(journeys=[_versioned(2, wait=3 * HOUR)],
                                       running={"on": VersionChange.migrate(_STEPS)})),
    ]
    sends, log = _same_either_way(storages, timeline, DAY)
    assert [(s[1], s[3], s[5] - T0) for s in sends] == [(1, "v1", HOUR), (2, "v2", 4 * HOUR)]
    assert (2 * HOUR, "migrated") in _kinds(log, "ann")


def test_versions_one_two_three_in_time_order(storages: Callable[[], Storage]) -> None:
    timeline: Timeline = [
        (timedelta(0), lambda e: e.publish(journeys=[_versioned(1, wait=5 * HOUR)],
                                           content=_content("v1", "v2", "v3"))),
        (timedelta(0), _enter("ann", timedelta(0))),
        (30 * MINUTE, lambda e: e.publish(journeys=[_versioned(2, wait=5 * HOUR)],
                                          running={"on": VersionChange.migrate(_STEPS)})),
        (3 * HOUR, lambda e: e.publish(journeys=[_versioned(3, wait=5 * HOUR)],
                                       running={"on": VersionChange.migrate(_STEPS)})),
    ]
    sends, log = _same_either_way(storages, timeline, DAY)
    # v1 -> v2 at +30 min, before the first send; v2 -> v3 at +3 h, before the second.
    assert [(s[1], s[3], s[5] - T0) for s in sends] == [(2, "v2", HOUR), (3, "v3", 6 * HOUR)]
    migrated = [(row[0] - T0, row[6]) for row in log if row[5] == "migrated"]
    assert migrated == [(30 * MINUTE, "v1 to v2"), (3 * HOUR, "v2 to v3")]


def test_an_ejection_keeps_what_fell_due_before_it(storages: Callable[[], Storage]) -> None:
    # Ann's only message fell due at +1 h, before the ejection at +2 h; Bob's at +2.5 h after.
    one_send = Journey(id="on", version=1, trigger=EventTrigger("go"), entry="w",
                       steps={"w": Wait(HOUR, next="m"), "m": Send("v1", "email")})
    timeline: Timeline = [
        (timedelta(0), lambda e: e.publish(journeys=[one_send], content=_content("v1", "v2"))),
        (timedelta(0), _enter("ann", timedelta(0))),
        (90 * MINUTE, _enter("bob", 90 * MINUTE)),
        (2 * HOUR, lambda e: e.publish(journeys=[_versioned(2)],
                                       running={"on": VersionChange.eject("stop")})),
    ]
    sends, log = _same_either_way(storages, timeline, DAY)
    assert [(s[0], s[5] - T0) for s in sends] == [("ann", HOUR)]
    assert _kinds(log, "ann")[-1] == (HOUR, "completed")
    assert _kinds(log, "bob")[-1] == (2 * HOUR, "ejected")


# --- pauses ------------------------------------------------------------------------------------


def _drip(rule: ResumeRule, *, lifetime: timedelta | None = None) -> Journey:
    return Journey(
        id="drip", trigger=EventTrigger("go"), entry="wait", on_resume=rule,
        max_lifetime=lifetime,
        steps={"wait": Wait(2 * HOUR, next="mail"), "mail": Send("tip", "email", next="w2"),
               "w2": Wait(HOUR, next="m2"), "m2": Send("tip", "email")},
    )


def _paused_from_one_to_six(journey: Journey, *extra: tuple[timedelta, Action]) -> Timeline:
    return sorted([
        (timedelta(0), lambda e: e.publish(journeys=[journey], content=_content("tip"))),
        (timedelta(0), _enter("ann", timedelta(0))),
        (HOUR, lambda e: e.pause_journey("drip")),
        (6 * HOUR, lambda e: e.resume_journey("drip")),
        *extra,
    ], key=lambda step: step[0])


@pytest.mark.parametrize(("rule", "first_send"), [
    (ResumeRule("skip"), None),
    (ResumeRule("send_late"), 6 * HOUR),
    (ResumeRule("grace", 4 * HOUR), 6 * HOUR),
    (ResumeRule("grace", 4 * HOUR - MINUTE), None),
])
def test_a_wake_up_due_inside_a_pause_is_released_at_the_resume(
    storages: Callable[[], Storage], rule: ResumeRule, first_send: timedelta | None
) -> None:
    # Due at +2 h, inside the pause from +1 h to +6 h: held, released at +6 h by the rule,
    # whether or not a worker ran during the pause.
    sends, log = _same_either_way(storages, _paused_from_one_to_six(_drip(rule)), DAY)
    expected = [7 * HOUR] if first_send is None else [first_send, 7 * HOUR]
    assert [s[5] - T0 for s in sends] == expected
    kinds = _kinds(log, "ann")
    assert (2 * HOUR, "held") in kinds and (6 * HOUR, "resumed") in kinds
    assert ((6 * HOUR, "send_skipped") in kinds) == (first_send is None)


def test_a_wake_up_due_before_a_pause_fires_at_its_instant(
    storages: Callable[[], Storage],
) -> None:
    # Due at +2 h, the pause starts at +3 h: it fires at +2 h; the next, due at +3 h, is held.
    timeline: Timeline = [
        (timedelta(0), lambda e: e.publish(journeys=[_drip(ResumeRule("skip"))],
                                           content=_content("tip"))),
        (timedelta(0), _enter("ann", timedelta(0))),
        (3 * HOUR, lambda e: e.pause_journey("drip")),
        (5 * HOUR, lambda e: e.resume_journey("drip")),
    ]
    sends, log = _same_either_way(storages, timeline, DAY)
    assert [s[5] - T0 for s in sends] == [2 * HOUR]
    kinds = _kinds(log, "ann")
    assert (2 * HOUR, "sent") in kinds
    assert (3 * HOUR, "held") in kinds and (5 * HOUR, "send_skipped") in kinds


def test_a_lifetime_ending_inside_a_pause_ends_the_enrollment_then(
    storages: Callable[[], Storage],
) -> None:
    journey = _drip(ResumeRule("send_late"), lifetime=3 * HOUR)
    sends, log = _same_either_way(storages, _paused_from_one_to_six(journey), DAY)
    assert sends == []
    assert _kinds(log, "ann")[-2:] == [(2 * HOUR, "held"), (3 * HOUR, "expired")]


def test_entries_into_a_journey_while_it_was_paused_are_refused(
    storages: Callable[[], Storage],
) -> None:
    # A jump at +2 h into a journey paused from +1 h to +6 h is refused, even when the jump is
    # decided only after the resume.
    jumper = Journey(id="jumper", trigger=EventTrigger("hop"), entry="w",
                     steps={"w": Wait(2 * HOUR, next="j"), "j": Jump("drip")})
    timeline = _paused_from_one_to_six(
        _drip(ResumeRule()),
        (timedelta(0), lambda e: e.publish(journeys=[jumper])),
        (timedelta(0), lambda e: e.handle_event(ev("hop", "bob", T0))),
    )
    sends, log = _same_either_way(storages, timeline, DAY)
    assert all(s[0] == "ann" for s in sends)
    assert (2 * HOUR, "jumped") in _kinds(log, "bob")
    # Nothing in the journey but the refusal, logged at the jump's instant.
    assert [(row[0] - T0, row[5], row[6]) for row in log if row[1] == "bob" and row[2] == "drip"
            ] == [(2 * HOUR, "not_entered", "paused")]


def test_a_journey_paused_twice_releases_each_wake_up_at_its_own_resume(
    storages: Callable[[], Storage],
) -> None:
    # Paused +1 h to +6 h (first wake-up at +2 h, released at +6 h), and again from +6 h 30 min
    # to +9 h (the next, due at +7 h, released at +9 h).
    timeline = _paused_from_one_to_six(
        _drip(ResumeRule("send_late")),
        (6 * HOUR + 30 * MINUTE, lambda e: e.pause_journey("drip")),
        (9 * HOUR, lambda e: e.resume_journey("drip")),
    )
    sends, log = _same_either_way(storages, timeline, DAY)
    assert [s[5] - T0 for s in sends] == [6 * HOUR, 9 * HOUR]
    assert [row[0] - T0 for row in log if row[5] == "resumed"] == [6 * HOUR, 9 * HOUR]


# --- inactivity journeys published after customers were created ------------------------------


def _quiet(version: int, after: timedelta) -> Journey:
    return Journey(id="quiet", version=version, trigger=InactivityTrigger("go", after),
                   entry="m", steps={"m": Send("tip", "email")})


def _waits_then_quiet(*publishes: tuple[timedelta, Journey]) -> Timeline:
    """Ann enters a journey at T0 whose wait ends at +1 h; inactivity journeys come later."""
    waits = Journey(id="waits", trigger=EventTrigger("go"), entry="w",
                    steps={"w": Wait(HOUR)})
    return [
        (timedelta(0), lambda e: e.publish(journeys=[waits], content=_content("tip"))),
        (timedelta(0), _enter("ann", timedelta(0))),
        *((offset, lambda e, j=journey: e.publish(journeys=[j])) for offset, journey in publishes),
    ]


def test_a_quiet_spell_starts_at_the_first_wake_up_after_the_publish(
    storages: Callable[[], Storage],
) -> None:
    # Ann's wake-up at +1 h is her first transaction after the publish at +30 min: her quiet
    # spell counts from +1 h, whenever a worker fires that wake-up.
    timeline = _waits_then_quiet((30 * MINUTE, _quiet(1, 5 * HOUR)))
    sends, log = _same_either_way(storages, timeline, DAY)
    assert [row[0] - T0 for row in log if row[2] == "quiet" and row[5] == "entered"] == [6 * HOUR]
    assert [(s[1], s[5] - T0) for s in sends] == [(1, 6 * HOUR)]


def test_a_wake_up_arms_the_version_in_force_at_its_instant(
    storages: Callable[[], Storage],
) -> None:
    # Version 2 (a longer spell) is published after ann's wake-up at +1 h: that wake-up armed
    # version 1's spell; the entry at +6 h takes the version newest then.
    timeline = _waits_then_quiet((30 * MINUTE, _quiet(1, 5 * HOUR)),
                                 (2 * HOUR, _quiet(2, 10 * HOUR)))
    sends = _same_either_way(storages, timeline, DAY)[0]
    assert [(s[1], s[5] - T0) for s in sends] == [(2, 6 * HOUR)]


def test_a_wake_up_before_the_publish_arms_nothing(storages: Callable[[], Storage]) -> None:
    # Ann's wake-up at +1 h comes before the publish at +2 h, though a lazy worker fires it
    # after: her quiet spell counts from her next transaction, a profile update at +3 h.
    timeline = _waits_then_quiet((2 * HOUR, _quiet(1, 5 * HOUR)))
    timeline.append((3 * HOUR, lambda e: e.identify("ann", {"name": "Ann"})))
    sends = _same_either_way(storages, timeline, DAY)[0]
    assert [(s[1], s[5] - T0) for s in sends] == [(1, 8 * HOUR)]


def test_resuming_keeps_only_the_latest_pauses_of_a_journey() -> None:
    from cjo.model.governance import PAUSES_KEPT

    clock = ManualClock(T0)
    engine = Engine(InMemoryStorage(), {"email": RecordingChannel()}, clock)
    engine.publish(journeys=[_drip(ResumeRule())], content=_content("tip"))
    for _ in range(PAUSES_KEPT + 3):
        engine.pause_journey("drip")
        clock.advance(HOUR)
        engine.resume_journey("drip")
        clock.advance(HOUR)
    pauses = engine.definitions.paused
    assert len(pauses) == PAUSES_KEPT
    assert all(p.until is not None for p in pauses)
    assert pauses[-1].since == clock.now() - 2 * HOUR
    engine.pause_journey("drip")
    assert engine.definitions.paused[-1].until is None
