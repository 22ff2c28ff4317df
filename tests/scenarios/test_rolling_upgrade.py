"""A rolling upgrade, tried as an operator would: an older cjo and a newer one run side by side
on one database. A newer cjo's definitions are simulated by editing a stored generation as a
newer version would write it (docs/storage.md, rolling upgrades)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from cjo import (
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    RecordingChannel,
    Segment,
    Send,
    Variant,
    Wait,
    attr,
)
from cjo.analytics import journey_report
from cjo.errors import UnreadableDefinitionsError
from cjo.serialization import dumps_stored_definitions, loads_stored_definitions
from cjo.storage.base import Storage
from tests.helpers import Factory

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)

Edit = Callable[[dict[str, Any]], None]


def _journey() -> Journey:
    return Journey(
        id="welcome", trigger=EventTrigger("signed_up"), entry="wait", audience=attr("vip") == True,  # noqa: E712
        steps={"wait": Wait(DAY, next="mail"), "mail": Send("note", "email")},
    )


_CONTENT = ContentItem("note", (Variant("email", {"subject": "Hi", "text": "Hello"}),))
_SEGMENT = Segment("vip", attr("vip") == True)  # noqa: E712


def _event(customer: str, eid: str, at: datetime = T0) -> Event:
    return Event(customer_id=customer, name="signed_up", timestamp=at, event_id=eid)


def _set(path: tuple[Any, ...], value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


# What a newer cjo may store that this one does not know, and where the error says it is.
NEWER: dict[str, tuple[Edit, str]] = {
    "a field of a journey": (_set(("journeys", 0, "budget"), 3), "$.journeys[0]"),
    "a field of a step": (_set(("journeys", 0, "steps", "wait", "jitter"), 60), "'wait'"),
    "a field of a trigger": (_set(("journeys", 0, "trigger", "debounce"), 5), ".trigger"),
    "a field of a segment": (_set(("segments", 0, "refresh"), "1h"), "$.segments[0]"),
    "a field of a content item": (_set(("content", 0, "approval"), "pending"), "$.content[0]"),
    "a field at the top level": (_set(("budgets",), [{"id": "b"}]), "budgets"),
    "a step kind": (_set(("journeys", 0, "steps", "wait", "kind"), "wait_for_webhook"),
                    "wait_for_webhook"),
    "a trigger kind": (_set(("journeys", 0, "trigger"), {"kind": "webhook", "path": "/x"}),
                       "webhook"),
    "a condition operator": (_set(("segments", 0, "condition", "op"), "matches"), "matches"),
    "a condition kind": (_set(("journeys", 0, "audience"), {"kind": "geo_within", "km": 5}),
                         "geo_within"),
    "a newer format": (_set(("format",), 2), "format 2 is newer"),
}


def _store_as_newer(storage: Storage, edit: Edit) -> int:
    """Append a generation as a newer cjo would write it: the latest one, edited."""
    stored = storage.load_definitions()
    assert stored is not None
    data = json.loads(stored[1])
    edit(data)
    return storage.append_definitions(stored[0], json.dumps(data))


def _raw_definitions(storage: Storage) -> tuple[int, str] | None:
    return storage.load_definitions()


@pytest.mark.parametrize("what", list(NEWER))
def test_an_older_engine_refuses_a_generation_it_cannot_read_and_changes_nothing(
    storage_factory: Factory, what: str
) -> None:
    edit, where = NEWER[what]
    clock = ManualClock(T0)
    older = Engine(storage_factory(), channels={"email": RecordingChannel()}, clock=clock)
    older.publish(journeys=[_journey()], segments=[_SEGMENT], content=[_CONTENT])
    older.identify("ada", {"vip": True})
    older.handle_event(_event("ada", "e1"))
    before = older.customer_state("ada")
    newer_generation = _store_as_newer(storage_factory(), edit)
    stored = _raw_definitions(storage_factory())
    clock.advance(DAY)

    calls: dict[str, Callable[[], object]] = {
        "handle_event": lambda: older.handle_event(_event("bob", "e2", clock.now())),
        "handle_events": lambda: older.handle_events([_event("bob", "e2", clock.now())]),
        "run_due": older.run_due,
        "dispatch_pending": older.dispatch_pending,
        "publish": lambda: older.publish(content=[_CONTENT]),
    }
    for name, call in calls.items():
        with pytest.raises(UnreadableDefinitionsError) as caught:
            call()
        assert caught.value.generation == newer_generation, name
        assert f"generation {newer_generation}" in str(caught.value)
        assert any(where in str(p) for p in caught.value.problems), caught.value.problems

    # Nothing stored changed: the newer generation is still the latest, as written; the
    # waiting customer still waits; the refused event was not claimed.
    assert _raw_definitions(storage_factory()) == stored
    assert older.customer_state("ada") == before
    assert older.customer_state("bob") is None
    # The worker loop logs the pass and goes on (it does not die).
    stats = older.run_worker(max_iterations=3, poll_interval=0)
    assert (stats.iterations, stats.errors) == (3, 3)


def test_an_older_worker_resumes_once_the_latest_generation_is_readable_again(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    channel = RecordingChannel()
    older = Engine(storage_factory(), channels={"email": channel}, clock=clock)
    older.publish(journeys=[_journey()], segments=[_SEGMENT], content=[_CONTENT])
    older.identify("ada", {"vip": True})
    older.handle_event(_event("ada", "e1"))
    storage = storage_factory()
    _store_as_newer(storage, NEWER["a step kind"][0])
    clock.advance(DAY)
    assert older.run_worker(max_iterations=1, poll_interval=0).errors == 1
    assert channel.messages == []
    # The operator rolls the feature back (a newer process publishes without it).
    _store_as_newer(storage, lambda data: data["journeys"][0]["steps"]["wait"].update(
        kind="wait"))
    stats = older.run_worker(max_iterations=1, poll_interval=0)
    assert stats.errors == 0
    assert [m.customer_id for m in channel.messages] == ["ada"]
    # The event refused while the generation was unreadable is handled when sent again.
    assert not older.handle_event(_event("bob", "e2", clock.now())).duplicate


def test_an_unreadable_generation_is_read_once_not_on_every_call(
    storage_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = storage_factory()
    older = Engine(storage, channels={"email": RecordingChannel()}, clock=ManualClock(T0))
    older.publish(journeys=[_journey()], segments=[_SEGMENT], content=[_CONTENT])
    _store_as_newer(storage_factory(), NEWER["a newer format"][0])
    loads: list[int] = []
    load = storage.load_definitions

    def counted() -> tuple[int, str] | None:
        loads.append(1)
        return load()

    monkeypatch.setattr(storage, "load_definitions", counted)
    for n in range(5):
        with pytest.raises(UnreadableDefinitionsError):
            older.handle_event(_event("bob", f"e{n}"))
    assert len(loads) == 1


def test_a_stored_generation_holds_only_what_differs_from_the_defaults() -> None:
    # So a field a newer cjo adds is stored only where it is used: an older one reads the
    # rest of that newer cjo's generations.
    from cjo import Definitions

    definitions = Definitions(journeys=(_journey(),), segments=(_SEGMENT,),
                              content=(_CONTENT,))
    text = dumps_stored_definitions(definitions)
    data = json.loads(text)
    assert data["format"] == 1
    journey = data["journeys"][0]
    assert not {"priority", "tags", "exclusive_group", "max_lifetime", "reentry"} & set(journey)
    assert set(journey["steps"]["mail"]) == {"kind", "content", "channel"}
    assert not {"caps", "topics", "paused", "taxonomy"} & set(data)
    assert loads_stored_definitions(text, 1) == definitions


def test_a_generation_stored_without_a_format_number_is_read() -> None:
    from cjo import Definitions, dumps_definitions

    definitions = Definitions(journeys=(_journey(),), content=(_CONTENT,))
    assert loads_stored_definitions(dumps_definitions(definitions), 3) == definitions


@pytest.mark.parametrize("text", ["{ not json", "[1, 2]", '{"format": "two"}', "[" * 10_000])
def test_a_damaged_generation_is_refused_naming_it(text: str) -> None:
    with pytest.raises(UnreadableDefinitionsError, match="generation 7"):
        loads_stored_definitions(text, 7)


def test_an_older_process_still_reports_on_what_it_recorded(storage_factory: Factory) -> None:
    # A report reads counts and the journey it is given; a generation only a newer cjo reads
    # costs it the kinds of steps the given version lacks, not the report.
    older = Engine(storage_factory(), channels={"email": RecordingChannel()},
                   clock=ManualClock(T0))
    older.publish(journeys=[_journey()], segments=[_SEGMENT], content=[_CONTENT])
    older.identify("ada", {"vip": True})
    older.handle_event(_event("ada", "e1"))
    _store_as_newer(storage_factory(), NEWER["a step kind"][0])
    report = journey_report(storage_factory(), _journey())
    assert (report.entered, report.active) == (1, 1)
    assert [(r.step_id, r.kind) for r in report.steps] == [("wait", "wait"), ("mail", "send")]
    # Given a version without ada's step, whose kind only the stored versions would say.
    other = attrs.evolve(_journey(), version=2, entry="pause",
                         steps={"pause": Wait(DAY, next="mail"), "mail": Send("note", "email")})
    report = journey_report(storage_factory(), other)
    assert [(r.step_id, r.kind, r.waiting) for r in report.steps] == [
        ("pause", "wait", 0), ("mail", "send", 0), ("wait", "?", 1)]


def test_a_check_added_since_a_publish_does_not_block_the_next_publish(
    storage_factory: Factory,
) -> None:
    # Published by an older cjo: a 30-second goal window, which this cjo refuses (a bare JSON
    # number is seconds). Every later publish validates the whole merged set; the stored
    # journey must not block those that do not bring it.
    from cjo import Goal
    from cjo.errors import DefinitionError
    from cjo.model.definitions import Definitions

    storage = storage_factory()
    old = attrs.evolve(_journey(), goal=Goal("purchased", within=timedelta(seconds=30)))
    storage.append_definitions(0, dumps_stored_definitions(
        Definitions(journeys=(old,), segments=(_SEGMENT,), content=(_CONTENT,))
    ))
    engine = Engine(storage, clock=ManualClock(T0), channels={"email": RecordingChannel()})
    other = Journey("other", trigger=EventTrigger("ping"), entry="mail",
                    steps={"mail": Send("note", "email")})
    engine.publish(journeys=[other])
    assert {j.id for j in engine.definitions.journeys} == {"welcome", "other"}
    # What a publish brings is still checked: a new version with the same window is refused.
    with pytest.raises(DefinitionError, match="within 30s is shorter than the minimum"):
        engine.publish(journeys=[attrs.evolve(old, version=2)])
