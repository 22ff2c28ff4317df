"""An adapter written before ``Storage.due_batch`` took ``due=`` (its override has no such
keyword) still runs schedules: the engine sees it once, warns naming the adapter, and claims
by ``now`` as engines did before, instead of failing every pass that runs an occurrence."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from cjo import (
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    RecordingChannel,
    ScheduleTrigger,
    Send,
    Variant,
    Wait,
)
from cjo.storage.base import CustomerSession, Storage
from cjo.storage.memory import InMemoryStorage

NINE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
CONTENT = [ContentItem(cid, variants=(Variant("email", {"subject": cid, "text": cid}),))
           for cid in ("digest", "reminder")]


class _OlderAdapter(InMemoryStorage):
    """Overrides ``due_batch`` with the signature it had before ``due``."""

    @contextmanager
    def due_batch(  # type: ignore[override]
        self, now: datetime, limit: int, lease: timedelta
    ) -> Iterator[Mapping[str, CustomerSession]]:
        with super().due_batch(now, limit, lease) as sessions:
            yield sessions


def _run(storage: Storage) -> list[tuple[str, str]]:
    """A daily 09:00 digest for everyone, and a reminder to Bob an hour after his event at
    10:00; a worker that comes back only at 13:00 runs both. What was sent: (customer,
    content, time)."""
    clock, email = ManualClock(NINE - timedelta(hours=1)), RecordingChannel()
    engine = Engine(storage, {"email": email}, clock)
    engine.publish(content=CONTENT, journeys=[
        Journey("digest", trigger=ScheduleTrigger("0 9 * * *"), entry="m",
                steps={"m": Send("digest", "email")}),
        Journey("cart", trigger=EventTrigger("added"), entry="w",
                steps={"w": Wait(timedelta(hours=1), next="m"),
                       "m": Send("reminder", "email")}),
    ])
    engine.identify("ann", {"email": "ann@example.com"})
    engine.identify("bob", {"email": "bob@example.com"})
    engine.run_due()  # 08:00: marks the schedule
    clock.set(NINE + timedelta(hours=1))
    engine.handle_event(Event(customer_id="bob", name="added", timestamp=clock.now(),
                              event_id="e1"))
    clock.set(NINE + timedelta(hours=4))
    engine.run_due()  # late: the 09:00 occurrence, then the 11:00 reminder
    engine.run_due()
    return sorted((m.customer_id, m.content_id, m.created_at.isoformat()[11:16])
                  for m in email.messages)


def test_an_adapter_without_due_runs_schedules_and_is_named_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="cjo.engine")
    sent = _run(_OlderAdapter())
    # Each once, the reminder at 11:00: not held back by a claim the 09:00 pass could not fire.
    # Bob's 11:00 wake-up fired before the occurrence ran (by now, as before ``due``), so his
    # record shows 11:00, and he enters the digest then (an adapter with ``due``: at 10:00).
    assert sent == [("ann", "digest", "09:00"), ("bob", "digest", "11:00"),
                    ("bob", "reminder", "11:00")]
    warnings = [r.getMessage() for r in caplog.records if "due_batch" in r.getMessage()]
    assert len(warnings) == 1
    assert "_OlderAdapter.due_batch does not take due=" in warnings[0]
    # A second engine on another such storage does not warn again.
    _run(_OlderAdapter())
    assert len([r for r in caplog.records if "due_batch" in r.getMessage()]) == 1


def test_an_adapter_with_due_runs_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="cjo.engine")
    assert _run(InMemoryStorage()) == [("ann", "digest", "09:00"), ("bob", "digest", "10:00"),
                                       ("bob", "reminder", "11:00")]
    assert not [r for r in caplog.records if "due_batch" in r.getMessage()]
