"""The workload the fault tests crash: 20 customers through the abandoned-cart journey.

``STEPS`` is a fixed list of (time, action) pairs: identifies, single events, event groups
(group commit), ``run_due`` and ``dispatch_pending`` calls. Running it again from the start
after a crash is what a restarted host does when it re-delivers its events: duplicates are
no-ops. ``recover`` is what a restarted worker does later anyway: poll for wake-ups whose lease
ran out, and flush the outbox.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs

from cjo import (
    Engine,
    Event,
    ManualClock,
)
from cjo.channels.base import Message
from cjo.runtime.state import CustomerState
from cjo.storage.base import ActivityCount, Storage
from cjo.testing import CART_CONTENT, abandoned_cart_journey
from tests.faults.crashing import LedgerChannel

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
JOURNEY = "abandoned_cart"
CUSTOMERS = tuple(f"c{i:02d}" for i in range(20))
END = T0 + timedelta(days=3)
FAR = T0 + timedelta(days=30)


cart_journey = abandoned_cart_journey


CONTENT = CART_CONTENT

Action = Callable[[Engine], Any]


def _ev(name: str, customer: str, at: datetime, **props: Any) -> Event:
    return Event(customer_id=customer, name=name, timestamp=at, properties=props,
                 event_id=f"{name}-{customer}-{at:%d%H%M}")


def _steps() -> list[tuple[datetime, Action]]:
    steps: list[tuple[datetime, Action]] = []

    def at(when: datetime, action: Action) -> None:
        steps.append((when, action))

    first, second = CUSTOMERS[:10], CUSTOMERS[10:]
    for c in CUSTOMERS[::4]:
        at(T0 - timedelta(hours=1),
           lambda e, c=c: e.identify(c, {"first_name": c.upper()}))
    # Half enter together (one group commit), half one by one, ten minutes later.
    adds = [_ev("added_to_cart", c, T0, item=f"item-{c}") for c in first]
    at(T0, lambda e: e.handle_events(adds))
    late = T0 + timedelta(minutes=10)
    for c in second:
        at(late, lambda e, c=c: e.handle_event(_ev("added_to_cart", c, late, item=f"item-{c}")))
    buy = T0 + timedelta(hours=2)
    for c in ("c00", "c05", "c10", "c15"):
        at(buy, lambda e, c=c: e.handle_event(_ev("purchased", c, buy)))
    at(T0 + timedelta(hours=4), lambda e: e.run_due())
    at(late + timedelta(hours=4), lambda e: e.run_due())
    opened = T0 + timedelta(hours=5)
    at(opened, lambda e: e.handle_events([
        _ev("email_opened", "c01", opened),
        _ev("email_opened", "c11", opened),
        adds[3],  # the host re-delivers an old event: a duplicate
    ]))
    bought = T0 + timedelta(hours=6)
    for c in ("c02", "c12"):
        at(bought, lambda e, c=c: e.handle_event(_ev("purchased", c, bought)))
    at(T0 + timedelta(hours=28), lambda e: e.run_due())
    at(late + timedelta(hours=28), lambda e: e.run_due())
    at(late + timedelta(hours=28, minutes=5), lambda e: e.dispatch_pending())
    at(late + timedelta(hours=29), lambda e: e.dispatch_pending())
    at(END, lambda e: e.run_due())
    return steps


STEPS = _steps()


def flaky(message: Message) -> bool:
    """Every third customer's SMS provider fails the first attempt: retries go through the
    outbox (outbox_entry, complete_outbox with retry_at, dispatch_pending)."""
    return message.channel == "sms" and int(message.customer_id[1:]) % 3 == 0


@attrs.define
class World:
    """What survives a crash: the database (``storage``) and the outside world (channels)."""

    storage: Storage
    email: LedgerChannel
    sms: LedgerChannel

    @classmethod
    def new(cls, storage: Storage, ledger: Path | None = None) -> World:
        return cls(storage, LedgerChannel(ledger=ledger), LedgerChannel(flaky, ledger=ledger))

    def engine(self, storage: Storage | None = None) -> tuple[Engine, ManualClock]:
        """A new engine process: new clock, same channels, on ``storage`` (default: ours)."""
        clock = ManualClock(T0 - timedelta(days=1))
        engine = Engine(storage=storage or self.storage,
                        channels={"email": self.email, "sms": self.sms}, clock=clock)
        engine.publish(journeys=[cart_journey()], content=[CONTENT])
        return engine, clock

    def deliveries(self) -> dict[str, int]:
        return dict(self.email.delivered + self.sms.delivered)


def run(engine: Engine, clock: ManualClock) -> None:
    for when, action in STEPS:
        clock.set(when)
        action(engine)


def recover(engine: Engine, clock: ManualClock) -> None:
    clock.set(END + engine.wake_lease)
    engine.run_due()
    clock.set(FAR)
    engine.dispatch_pending(FAR)


@attrs.frozen
class Snapshot:
    records: dict[str, CustomerState | None]
    activity: frozenset[ActivityCount]
    outbox: dict[str, str | None]
    next_wake_at: datetime | None
    active: dict[tuple[int, str | None], int]


def _record(storage: Storage, customer_id: str) -> CustomerState | None:
    """The customer's record, its revision aside: how many times it was written back (a
    replayed duplicate may write it once more) is not part of what it says."""
    state = storage.peek(customer_id)
    return None if state is None else attrs.evolve(state, revision=0)


def snapshot(storage: Storage, keys: set[str]) -> Snapshot:
    outbox: dict[str, str | None] = {}
    for key in sorted(keys):
        entry = storage.outbox_entry(key)
        outbox[key] = None if entry is None else entry.status
    counts = storage.activity_counts(JOURNEY)
    assert len(counts) == len(set(counts)), f"a group is reported twice: {counts}"
    return Snapshot(
        records={c: _record(storage, c) for c in CUSTOMERS},
        activity=frozenset(counts),
        outbox=outbox,
        next_wake_at=storage.next_wake_at(),
        active=storage.active_counts(JOURNEY),
    )


def child_main(
    path: str, crash_at: int, ledger: str, exit_code: int, in_commit: bool = False
) -> None:
    """The body of a child process that is killed (``os._exit``) inside storage call
    ``crash_at``, half-way through whatever transaction that call belongs to.

    With ``in_commit`` (``crash_at`` then names a ``<kind>.commit`` call), the child dies later
    in that transaction: once the adapter has written its buffered rows, before ``COMMIT``."""
    import os

    from cjo.storage import sqlite as sqlite_module
    from tests.faults.crashing import CrashingStorage

    def die(_why: str) -> None:
        os._exit(exit_code)  # no cleanup, no rollback, no close: like a kill -9

    armed: list[str] = []
    if in_commit:
        # SQLiteStorage writes a transaction's rows at commit (one statement per table): dying
        # right after them leaves every row of the transaction written but not committed.
        flush = sqlite_module._Txn.flush

        def flush_then_die(txn: sqlite_module._Txn) -> None:
            flush(txn)
            if armed:
                die("after the writes, before COMMIT")

        sqlite_module._Txn.flush = flush_then_die  # type: ignore[method-assign]

    storage = CrashingStorage(
        sqlite_module.SQLiteStorage(path), crash_at, die=armed.append if in_commit else die,
        die_after_call=True,
    )
    world = World.new(storage, Path(ledger))
    engine, clock = world.engine()
    run(engine, clock)
    raise SystemExit(f"the child was meant to die at call {crash_at}")
