"""Four worker processes on one PostgreSQL database never let a customer exceed a frequency
cap, however their journeys compete.

Four marketing journeys (three sending at once on email, SMS and push, one after a wait)
and a transactional one are started for the same customers at the same instants by
different processes, each on its own ``ManualClock``, in step (a barrier per time slice); the
wake-ups of the waiting journey are fired by whichever worker claims them, while the others
handle events of the same customers. Counted from the outbox and the activity log: no
customer gets more marketing messages than the cap allows, no slot is lost either, every
capped send is recorded with the rule, and transactional messages are neither capped nor
counted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import timedelta

import pytest

from tests.concurrency import caps_workload as w
from tests.concurrency.processes import run_processes

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SEED = 20261201
CUSTOMERS = 40
WORKERS = 4


def test_four_workers_never_exceed_a_frequency_cap(postgres_dsn: str, postgres_schema: str) -> None:
    from cjo.storage.postgres import PostgresStorage

    stream = w.build_stream(SEED, CUSTOMERS)
    # The stream competes: customers get several marketing events at one instant, and those
    # are dealt to different workers.
    crowded = Counter((i.slice, i.event.customer_id) for i in stream
                      if i.event.name in w.MARKETING)
    assert sum(1 for n in crowded.values() if n >= 3) > CUSTOMERS
    ordered = Counter(i.event.customer_id for i in stream if i.event.name == "ordered")

    results = run_processes(w.worker_main, WORKERS,
                            (postgres_dsn, postgres_schema, SEED, CUSTOMERS))

    delivered = [sent for _, _, sends in results for sent in sends]
    assert all(sends for _, _, sends in results), "a worker delivered nothing"
    keys = Counter(key for key, *_ in delivered)
    assert [k for k, n in keys.items() if n > 1] == [], "a message was delivered twice"
    marketing: dict[str, list[str]] = defaultdict(list)
    receipts: Counter[str] = Counter()
    for key, customer, journey, _, _ in delivered:
        if journey == "receipts":
            receipts[customer] += 1
        else:
            marketing[customer].append(key)

    limit = w.CAP.limit
    capped_in_all = 0
    with PostgresStorage(postgres_dsn, schema=postgres_schema, max_size=2) as storage:
        for n in range(CUSTOMERS):
            cid = f"cust{n:03}"
            for key in marketing[cid]:
                entry = storage.outbox_entry(key)
                assert entry is not None and entry.status == "delivered", key
            acts = storage.activities(w.T0, w.END + timedelta(seconds=1), customer_id=cid)
            sent = [a for a in acts if a.kind == "sent" and a.journey_id != "receipts"]
            capped = [a for a in acts if a.kind == "capped"]
            entered = Counter(a.journey_id for a in acts if a.kind == "entered")
            # The log and the outbox agree; never more than the cap; and when a send was
            # capped, the cap was full: no slot was lost to a race.
            assert len(sent) == len(marketing[cid]), cid
            assert len(sent) <= limit, (cid, [(a.journey_id, a.at) for a in sent])
            if capped:
                assert len(sent) == limit, cid
            # Every capped send is recorded with the rule, against its journey and channel.
            assert {(a.detail, a.content_id) for a in capped} <= {("weekly: skipped", "promo")}
            assert all(a.channel in w.CHANNELS and a.journey_id in w.MARKETING.values()
                       for a in capped)
            # Each marketing enrollment either sent or was capped, exactly once.
            reached = Counter(a.journey_id for a in (*sent, *capped))
            assert reached == Counter({j: c for j, c in entered.items() if j != "receipts"}), cid
            capped_in_all += len(capped)
            # Transactional: one receipt per order, neither capped nor counted by the cap.
            assert receipts[cid] == ordered[cid], cid
            state = storage.peek(cid)
            assert state is not None
            assert len(state.sends) == len(sent), cid
            assert state.enrollments == [], cid
    # The cap was under pressure: most customers reached it.
    assert capped_in_all > 2 * CUSTOMERS
    assert sum(1 for cid in marketing if len(marketing[cid]) == limit) > CUSTOMERS // 2
