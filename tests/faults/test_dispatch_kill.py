"""A worker process killed (SIGKILL) while it dispatches a batch of outbox messages.

Delivery is at least once: the messages the channel was given but whose results were not yet
recorded go out again from the next worker, once the dead one's lease runs out. Results are
recorded in groups of ``RECORD_RESULTS_EVERY`` sends (larger only when the channel answers
faster than the storage writes), so with a provider's reply times that is the most a kill can
send twice, however large the batch.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cjo import (
    Channel,
    ContentItem,
    DeliveryResult,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    Message,
    Send,
    Variant,
)
from cjo.abc import Delivery
from cjo.engine import RECORD_RESULTS_EVERY
from cjo.storage.memory import InMemoryStorage
from cjo.storage.url import open_storage
from tests.helpers import drop_schema

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
MESSAGES = 120
KILLED_AFTER = 45  # sends: not a multiple of the group, so a group is cut short
#: What each send of the killed worker takes, as a provider's reply would: far more than ten
#: writes of results, so every group is written at ``RECORD_RESULTS_EVERY``.
REPLY = 0.03
WELCOME = Journey(id="welcome", trigger=EventTrigger("signed_up"), entry="email",
                  steps={"email": Send("hello", "email")})
HELLO = ContentItem("hello", (Variant("email", {"subject": "Hi", "text": "Hi"}),))


class LedgerChannel(Channel):
    """Appends each key it is given to a file, as a provider's log would; kills its own process
    (no cleanup, as ``kill -9``) once it has sent ``kill_after``, each send taking ``reply``
    seconds."""

    def __init__(self, ledger: str, kill_after: int | None = None, reply: float = 0.0) -> None:
        self.ledger = ledger
        self.kill_after = kill_after
        self.reply = reply
        self.sent = 0

    def send(self, message: Message) -> DeliveryResult:
        if self.reply:
            time.sleep(self.reply)
        with open(self.ledger, "a", encoding="utf-8") as f:
            f.write(message.idempotency_key + "\n")
        self.sent += 1
        if self.kill_after is not None and self.sent >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return DeliveryResult("delivered")


def _engine(
    url: str, ledger: str, at: datetime, kill_after: int | None = None, reply: float = 0.0
) -> Engine:
    channel = LedgerChannel(ledger, kill_after, reply)
    return Engine(storage=open_storage(url), channels={"email": channel},
                  clock=ManualClock(at), dispatch="deferred")


def _dispatch_until_killed(url: str, ledger: str) -> None:
    _engine(url, ledger, T0 + timedelta(seconds=1), KILLED_AFTER, REPLY).dispatch_pending()


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cjo.db'}"
        return
    dsn: str = request.getfixturevalue("postgres_dsn")  # skips (or fails in CI) without one
    schema = f"cjo_kill_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in dsn else "?"
    yield f"{dsn}{sep}schema={schema}"
    drop_schema(dsn, schema)


def test_a_worker_killed_mid_batch_sends_again_only_its_last_unrecorded_group(
    storage_url: str, tmp_path: Path
) -> None:
    ledger = str(tmp_path / "ledger.txt")
    setup = _engine(storage_url, ledger, T0)
    setup.publish(journeys=[WELCOME], content=[HELLO])
    setup.handle_events([Event(customer_id=f"c{i}", name="signed_up", timestamp=T0,
                               properties={}, event_id=f"e{i}") for i in range(MESSAGES)])
    setup.storage.close()

    # spawn, not fork: a clean interpreter, as a real worker process would be.
    child = multiprocessing.get_context("spawn").Process(
        target=_dispatch_until_killed, args=(storage_url, ledger)
    )
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL, "the worker did not die mid-batch"

    # The next worker, once the dead one's lease ran out, sends what is not recorded.
    after = _engine(storage_url, ledger, T0 + timedelta(minutes=5))
    try:
        assert after.dispatch_pending() == MESSAGES - (KILLED_AFTER // RECORD_RESULTS_EVERY
                                                       * RECORD_RESULTS_EVERY)
        assert after.storage.pending_by_channel() == {}
    finally:
        after.storage.close()
    sent = Counter(Path(ledger).read_text(encoding="utf-8").split())
    assert len(sent) == MESSAGES, "every message went out"
    twice = sorted(key for key, n in sent.items() if n > 1)
    # The group the kill cut short: handed to the channel, never recorded.
    assert len(twice) == KILLED_AFTER % RECORD_RESULTS_EVERY
    assert max(sent.values()) == 2


class _TimedWrites(InMemoryStorage):
    """Records the size of each group of results written, each write taking ``write``
    seconds (as a database's round trip does)."""

    def __init__(self, write: float) -> None:
        super().__init__()
        self.write = write
        self.groups: list[int] = []

    def complete_outbox_many(self, deliveries: Sequence[Delivery], now: datetime) -> None:
        self.groups.append(len(deliveries))
        time.sleep(self.write)
        super().complete_outbox_many(deliveries, now)


def _dispatched_groups(write: float, reply: float, tmp_path: Path) -> list[int]:
    storage = _TimedWrites(write)
    channel = LedgerChannel(str(tmp_path / "ledger.txt"), reply=reply)
    engine = Engine(storage=storage, channels={"email": channel}, clock=ManualClock(T0),
                    dispatch="deferred")
    engine.publish(journeys=[WELCOME], content=[HELLO])
    engine.handle_events([Event(customer_id=f"c{i}", name="signed_up", timestamp=T0,
                                properties={}, event_id=f"e{i}") for i in range(40)])
    assert engine.dispatch_pending() == 40
    return storage.groups


def test_results_are_written_every_group_while_sending_takes_longer(tmp_path: Path) -> None:
    assert _dispatched_groups(0.0, 0.005, tmp_path) == [RECORD_RESULTS_EVERY] * 5


def test_a_channel_faster_than_the_writes_gets_larger_groups(tmp_path: Path) -> None:
    # A write of 20 ms: the next group waits for 200 ms of sending, which 32 instant sends
    # never take, so a dispatch to an in-process queue is not slowed by a write every 8.
    groups = _dispatched_groups(0.02, 0.0, tmp_path)
    assert groups[0] == RECORD_RESULTS_EVERY
    assert sum(groups) == 40 and len(groups) < 5
