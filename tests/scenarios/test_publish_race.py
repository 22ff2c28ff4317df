"""An event that meets an enrollment of a journey version published by another process after
this engine read the definitions: it is decided on that version, not passed by."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from cjo import (
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    ExitCriterion,
    Journey,
    ManualClock,
    Outcome,
    RecordingChannel,
    Send,
    Variant,
    WaitForEvent,
    attr,
)
from cjo.runtime.registry import Registry
from tests.helpers import Factory

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
CONTENT = (ContentItem("hello", (Variant("email", {"subject": "Hi", "text": "Hello"}),)),)


def _journey(version: int) -> Journey:
    # Both versions wait for a review; the second's steps have other ids, so an enrollment of
    # it means nothing to an engine that knows only the first.
    step = "wait" if version == 1 else "wait_v2"
    return Journey(
        "welcome", step, version=version, trigger=EventTrigger("signed_up"),
        steps={step: WaitForEvent("reviewed", timeout=HOUR, on_event="mail",
                                  on_timeout=None),
               "mail": Send("hello", "email")},
    )


def _stale_once(engine: Engine, registry: Registry) -> None:
    """Make ``engine``'s next definitions read return ``registry``: as if it had read them
    just before another process published."""
    real = engine._sync
    calls = iter([registry])

    def sync() -> Registry:
        return next(calls, None) or real()

    engine._sync = sync  # type: ignore[method-assign]


def _review(at: datetime) -> Event:
    return Event(customer_id="ann", name="reviewed", timestamp=at, event_id="review-1")


def _survey() -> Journey:
    # Known to both engines, and reading the review too: the review then matters to ann on the
    # older definitions as well, and reaches her record's transaction.
    return Journey("survey", "wait", trigger=EventTrigger("signed_up"),
                   steps={"wait": WaitForEvent("reviewed", timeout=HOUR, on_event=None,
                                               on_timeout=None)})


@pytest.mark.parametrize("known_too", [False, True], ids=["alone", "beside_a_known_one"])
@pytest.mark.parametrize("handle", [
    lambda engine, event: engine.handle_event(event),
    lambda engine, event: engine.handle_events([event]),
], ids=["handle_event", "handle_events"])
def test_an_event_meeting_a_newer_version_is_decided_on_it(
    storage_factory: Factory, handle: Callable[[Engine, Event], Outcome], known_too: bool
) -> None:
    clock = ManualClock(T0)
    first, second = RecordingChannel(), RecordingChannel()
    publisher = Engine(storage_factory(), channels={"email": first}, clock=clock)
    worker = Engine(storage_factory(), channels={"email": second}, clock=clock)
    publisher.publish(journeys=[_journey(1), *([_survey()] if known_too else [])],
                      content=CONTENT)
    assert worker.generation == 1
    before = worker._registry

    # Another process publishes version 2 and enrolls ann in it...
    publisher.publish(journeys=[_journey(2)])
    publisher.handle_event(Event(customer_id="ann", name="signed_up", timestamp=T0,
                                 event_id="signup-1"))
    # ... right after this engine read the definitions for ann's review.
    clock.advance(minutes=10)
    _stale_once(worker, before)
    outcome = handle(worker, _review(clock.now()))

    assert not outcome.duplicate
    assert [m.step_id for m in outcome.messages] == ["mail"], "the review ends the wait"
    # Reported once, not also as the rolled-back attempt on the older definitions saw it.
    assert sorted((e.journey_id, e.status) for e in outcome.ended) == [
        *([("survey", "completed")] if known_too else []), ("welcome", "completed")]
    assert [m.customer_id for m in second.messages] == ["ann"]
    assert worker.generation == 2
    (enrollment,) = [e for e in worker.enrollments("ann") if e.journey_id == "welcome"]
    assert (enrollment.version, enrollment.status) == (2, "completed")
    # The review was decided once: nothing more comes of it or of the wait's timeout.
    clock.advance(hours=2)
    assert publisher.run_due().messages == ()
    assert not handle(worker, _review(clock.now())).messages
    assert len(first.messages) + len(second.messages) == 1


def test_a_group_decided_again_reports_each_customer_once(storage_factory: Factory) -> None:
    clock = ManualClock(T0)
    publisher = Engine(storage_factory(), channels={"email": RecordingChannel()}, clock=clock)
    worker = Engine(storage_factory(), channels={"email": RecordingChannel()}, clock=clock)
    publisher.publish(journeys=[_journey(1)], content=CONTENT)
    before = worker._sync()
    publisher.publish(journeys=[_journey(2)])
    publisher.handle_event(Event(customer_id="ann", name="signed_up", timestamp=T0,
                                 event_id="signup-ann"))
    clock.advance(minutes=10)
    _stale_once(worker, before)
    # Bob comes first in the group: decided (and rolled back) before ann's record shows the
    # newer version, then decided again with her.
    outcome = worker.handle_events([
        Event(customer_id="bob", name="signed_up", timestamp=clock.now(), event_id="signup-bob"),
        _review(clock.now()),
    ])
    assert [(e.customer_id, e.version) for e in outcome.entered] == [("bob", 2)]
    assert [m.customer_id for m in outcome.messages] == ["ann"]
    assert [e.customer_id for e in outcome.ended] == ["ann"]


@pytest.mark.parametrize("call", ["identify", "remove_from_journey"])
def test_a_profile_change_or_removal_meeting_a_newer_version_is_decided_on_it(
    storage_factory: Factory, call: str
) -> None:
    clock = ManualClock(T0)
    publisher = Engine(storage_factory(), channels={"email": RecordingChannel()}, clock=clock)
    worker = Engine(storage_factory(), channels={"email": RecordingChannel()}, clock=clock)
    publisher.publish(journeys=[_journey(1)], content=CONTENT)
    before = worker._sync()
    cancelled = ExitCriterion("cancelled", where=attr("plan") == "cancelled")
    publisher.publish(journeys=[attrs.evolve(_journey(2), exit_criteria=(cancelled,))])
    publisher.handle_event(Event(customer_id="ann", name="signed_up", timestamp=T0,
                                 event_id="signup-ann"))
    clock.advance(minutes=10)
    _stale_once(worker, before)
    if call == "identify":
        outcome = worker.identify("ann", {"plan": "cancelled"})
        expected = ("welcome", "exited", "cancelled")
    else:
        outcome = worker.remove_from_journey("ann", "welcome")
        expected = ("welcome", "removed", "removed by host")
    assert [(e.journey_id, e.status, e.reason) for e in outcome.ended] == [expected]
    assert [e.active for e in worker.enrollments("ann")] == [False]
