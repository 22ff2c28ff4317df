"""A worker process killed (SIGKILL) while it dispatches a batch of outbox messages.

Delivery is at least once: the messages the channel was given but whose results were not yet
recorded go out again from the next worker, once the dead one's lease runs out. Results are
recorded every ``RECORD_RESULTS_EVERY`` sends, so that is the most a kill can send twice,
however large the batch.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
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
from cjo.engine import RECORD_RESULTS_EVERY
from cjo.storage.url import open_storage
from tests.helpers import drop_schema

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
MESSAGES = 120
KILLED_AFTER = 45  # sends: not a multiple of the group, so a group is cut short
WELCOME = Journey(id="welcome", trigger=EventTrigger("signed_up"), entry="email",
                  steps={"email": Send("hello", "email")})
HELLO = ContentItem("hello", (Variant("email", {"subject": "Hi", "text": "Hi"}),))


class LedgerChannel(Channel):
    """Appends each key it is given to a file, as a provider's log would; kills its own process
    (no cleanup, as ``kill -9``) once it has sent ``kill_after``."""

    def __init__(self, ledger: str, kill_after: int | None = None) -> None:
        self.ledger = ledger
        self.kill_after = kill_after
        self.sent = 0

    def send(self, message: Message) -> DeliveryResult:
        with open(self.ledger, "a", encoding="utf-8") as f:
            f.write(message.idempotency_key + "\n")
        self.sent += 1
        if self.kill_after is not None and self.sent >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return DeliveryResult("delivered")


def _engine(url: str, ledger: str, at: datetime, kill_after: int | None = None) -> Engine:
    return Engine(storage=open_storage(url), channels={"email": LedgerChannel(ledger, kill_after)},
                  clock=ManualClock(at), dispatch="deferred")


def _dispatch_until_killed(url: str, ledger: str) -> None:
    _engine(url, ledger, T0 + timedelta(seconds=1), KILLED_AFTER).dispatch_pending()


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
