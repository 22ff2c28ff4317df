"""A migration moves customers onto the new version's definition, its maximum lifetime
included (docs/semantics.md, Versions and definitions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cjo import (
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    RecordingChannel,
    Send,
    Variant,
    VersionChange,
    Wait,
)
from cjo.storage.base import Storage

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


def _drip(version: int, wait: timedelta, lifetime: timedelta | None) -> Journey:
    return Journey(id="drip", version=version, trigger=EventTrigger("signed_up"), entry="wait",
                   max_lifetime=lifetime,
                   steps={"wait": Wait(wait, next="mail"), "mail": Send("note", "email")})


def _engine(storage: Storage) -> tuple[Engine, ManualClock, RecordingChannel]:
    clock, email = ManualClock(T0), RecordingChannel()
    engine = Engine(storage=storage, channels={"email": email}, clock=clock)
    engine.publish(journeys=[_drip(1, 10 * DAY, None)], content=[ContentItem(
        "note", variants=(Variant("email", {"subject": "Note", "text": "hi"}),))])
    for customer in ("ann", "bob"):
        engine.handle_event(Event(customer_id=customer, name="signed_up", timestamp=T0,
                                  event_id=f"s-{customer}"))
    return engine, clock, email


def _ends(engine: Engine) -> list[tuple[str, str, int, datetime]]:
    return sorted((a.customer_id, a.kind, a.version, a.at) for a in engine.activities(
        T0, T0 + 30 * DAY, journey_id="drip") if a.kind in ("migrated", "expired", "sent",
                                                            "completed"))


def test_a_migrated_customer_expires_at_the_new_versions_lifetime(storage: Storage) -> None:
    engine, clock, email = _engine(storage)
    clock.advance(HOUR)
    engine.publish(journeys=[_drip(2, DAY, 3 * DAY)],
                   running={"drip": VersionChange.migrate({"wait": "wait", "mail": "mail"})})
    clock.advance(20 * DAY)                           # a late worker: the result is the same
    engine.run_due()
    assert email.messages == []                       # not at T0 + 10 days, aged 10 days in v2
    assert _ends(engine) == [
        ("ann", "expired", 2, T0 + 3 * DAY), ("ann", "migrated", 2, T0 + HOUR),
        ("bob", "expired", 2, T0 + 3 * DAY), ("bob", "migrated", 2, T0 + HOUR),
    ]


def test_a_customer_older_than_the_new_lifetime_expires_at_the_publish(
    storage: Storage,
) -> None:
    engine, clock, email = _engine(storage)
    clock.advance(2 * DAY)
    engine.publish(journeys=[_drip(2, HOUR, DAY)],
                   running={"drip": VersionChange.migrate({"wait": "wait", "mail": "mail"})})
    clock.advance(HOUR)
    engine.handle_event(Event(customer_id="ann", name="clicked", timestamp=clock.now(),
                              event_id="c1"))
    clock.advance(20 * DAY)
    engine.run_due()
    assert email.messages == []
    assert _ends(engine) == [
        ("ann", "expired", 2, T0 + 2 * DAY), ("ann", "migrated", 2, T0 + 2 * DAY),
        ("bob", "expired", 2, T0 + 2 * DAY), ("bob", "migrated", 2, T0 + 2 * DAY),
    ]
