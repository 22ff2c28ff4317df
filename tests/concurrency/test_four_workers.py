"""Four worker processes on one PostgreSQL database do exactly what one in-memory engine does.

One shared stream (a few hundred customers, a welcome and an abandoned-cart journey, profile
updates, re-delivered events) is dealt round-robin to four spawned processes, so one customer's
events are handled by different workers. The workers move through simulated time together
(a ``multiprocessing.Barrier`` per time slice, each with its own ``ManualClock``); in every slice
each handles its share (one by one or in ``handle_events`` groups), then all of them fire due
wake-ups and retry failed deliveries at once, competing for the same rows. The sends, their
delivery records and every enrollment must equal what a single in-memory engine produces from
the same stream.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs
import pytest

from tests.concurrency import workload
from tests.concurrency.processes import run_processes

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SEED = 20260302
CUSTOMERS = 300
WORKERS = 4


def run_workers(dsn: str, schema: str) -> list[tuple[Any, ...]]:
    return run_processes(workload.worker_main, WORKERS, (dsn, schema, SEED, CUSTOMERS))


def test_four_workers_match_one_in_memory_engine(postgres_dsn: str, postgres_schema: str) -> None:
    from cjo.storage.postgres import PostgresStorage

    expected_engine, expected_channels = workload.reference(SEED, CUSTOMERS)
    expected_sends = Counter(s for c in expected_channels.values() for s in c.delivered)
    expected_failures = Counter(s for c in expected_channels.values() for s in c.failed)
    # The stream really exercises what it should.
    stream = workload.build_stream(SEED, CUSTOMERS)
    assert len(stream) > 3 * CUSTOMERS
    assert len({i.event.event_id for i in stream if i.event}) < sum(1 for i in stream if i.event)
    assert len(expected_sends) > 2 * CUSTOMERS and expected_failures

    # The schema does not exist yet: the four processes race to create it.
    results = run_workers(postgres_dsn, postgres_schema)

    sends: Counter[Any] = Counter()
    failures: Counter[Any] = Counter()
    for index, _, delivered, failed, fired in results:
        sends.update(delivered)
        failures.update(failed)
        assert delivered, f"worker {index} delivered nothing"
        assert fired, f"worker {index} fired no wake-up"
    duplicates = [s for s, n in sends.items() if n > 1]
    assert not duplicates, f"sent more than once: {duplicates[:5]}"
    assert sends == expected_sends
    assert failures == expected_failures

    customers = sorted({item.customer_id for item in stream})
    with PostgresStorage(postgres_dsn, schema=postgres_schema, max_size=2) as storage:
        for cid in customers:
            # The whole record: profile, enrollments, ended ones, entry history, timers and
            # marks. Not its revision: how many transactions wrote it depends on which worker
            # got there first (a wake-up fired by run_due, or caught up by an event).
            got, want = storage.peek(cid), expected_engine.storage.peek(cid)
            assert (got is None) == (want is None), cid
            if got is not None and want is not None:
                assert attrs.evolve(got, revision=0) == attrs.evolve(want, revision=0), cid
        for journey in ("abandoned_cart", "welcome"):
            assert storage.activity_counts(journey) == (
                expected_engine.storage.activity_counts(journey)
            )
            assert storage.active_counts(journey) == {}
        assert storage.next_wake_at() is None
        for key, *_ in expected_sends:
            entry, want = storage.outbox_entry(key), expected_engine.storage.outbox_entry(key)
            assert entry is not None and want is not None
            assert (entry.message, entry.status, entry.attempts, entry.last_error) == (
                want.message, want.status, want.attempts, want.last_error
            )
