"""A send left out for a control-group customer, or skipped as a paused journey resumes, names
the content version it would have sent, as a send does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cjo import (
    ContentItem,
    ControlGroup,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    RecordingChannel,
    ResumeRule,
    Send,
    Variant,
    Wait,
)
from cjo.model.governance import in_control_group
from cjo.runtime.state import Activity

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _engine() -> tuple[Engine, ManualClock]:
    clock = ManualClock(T0)
    engine = Engine(channels={"email": RecordingChannel()}, clock=clock)
    # Published twice with a change: the item is at version 2.
    for text in ("first", "second"):
        engine.publish(content=[ContentItem("note", (Variant("email", {"subject": "Hi", "text": text}),))])
    return engine, clock


def _journey(rule: ResumeRule | None = None) -> Journey:
    return Journey(
        id="j", trigger=EventTrigger("go"), entry="w", on_resume=rule or ResumeRule(),
        steps={"w": Wait(2 * HOUR, next="s"), "s": Send("note", "email")},
    )


def _go(engine: Engine, customer_id: str, clock: ManualClock) -> None:
    engine.handle_event(Event(customer_id=customer_id, name="go", timestamp=clock.now(),
                              event_id=f"go-{customer_id}"))


def _entries(engine: Engine, kind: str) -> list[Activity]:
    return [a for a in engine.activities(T0, T0 + 30 * HOUR) if a.kind == kind]


def test_a_send_left_out_for_the_control_group_names_the_content_version() -> None:
    engine, clock = _engine()
    group = ControlGroup(50)
    engine.publish(journeys=[_journey()], control_group=group)
    customer = next(c for c in (f"c{n}" for n in range(100)) if in_control_group(c, group))
    _go(engine, customer, clock)
    clock.advance(2 * HOUR)
    engine.run_due()
    [left_out] = _entries(engine, "suppressed")
    assert (left_out.detail, left_out.content_id, left_out.content_version) == (
        "control", "note", 2)


def test_a_send_skipped_on_resume_names_the_content_version() -> None:
    engine, clock = _engine()
    engine.publish(journeys=[_journey(ResumeRule("skip"))])
    _go(engine, "ann", clock)
    clock.advance(HOUR)
    engine.pause_journey("j")
    clock.advance(HOUR)
    engine.run_due()  # the wait ends while paused: held
    clock.advance(HOUR)
    engine.resume_journey("j")
    [skipped] = _entries(engine, "send_skipped")
    assert (skipped.content_id, skipped.content_version) == ("note", 2)
    # As a send made does.
    _go(engine, "bob", clock)
    clock.advance(2 * HOUR)
    engine.run_due()
    [sent] = _entries(engine, "sent")
    assert (sent.content_id, sent.content_version) == ("note", 2)
