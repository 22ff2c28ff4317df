"""Invariants of any run: random valid journeys (every step kind, priorities, exclusive groups,
a control group, a concurrency limit) over random streams.

- no enrollment is lost: each one entered is either still active in its customer's record or
  ended exactly once;
- nothing happens to an enrollment after it ended;
- nothing but transactional messages reaches the control group;
- the same inputs give the same messages and the same activity log.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import attrs
from hypothesis import given

from cjo.engine import Engine
from cjo.model.definitions import Definitions
from cjo.model.governance import in_control_group
from cjo.runtime.state import TERMINAL_STATUSES
from tests.property.journeys import CUSTOMERS, T0, Input, definitions, streams
from tests.property.test_equivalence import SETTINGS, deliveries, live


def _log(engine: Engine) -> list[Any]:
    return engine.activities(T0 - timedelta(days=1), T0 + timedelta(days=400))


@SETTINGS
@given(definitions(), streams())
def test_enrollments_are_never_lost_nor_ended_twice(defs: Definitions, stream: list[Input]) -> None:
    engine = live(defs, stream)
    log = _log(engine)
    entered = Counter(a.enrollment_id for a in log if a.kind == "entered")
    ended = Counter(a.enrollment_id for a in log if a.kind in TERMINAL_STATUSES)
    assert all(n == 1 for n in entered.values()), entered
    assert all(n == 1 for n in ended.values()), ended
    active = {e.id for c in CUSTOMERS for e in engine.enrollments(c) if e.active}
    assert active.isdisjoint(ended)
    assert set(entered) == active | set(ended)  # every entry is accounted for
    # Nothing happens to an enrollment once it has ended (the log is in commit order).
    over: set[str] = set()
    for a in log:
        if a.enrollment_id:
            assert a.enrollment_id not in over, a
        if a.kind in TERMINAL_STATUSES:
            over.add(a.enrollment_id)


@SETTINGS
@given(definitions(), streams())
def test_the_control_group_gets_no_journey_messages(defs: Definitions, stream: list[Input]
                                                    ) -> None:
    group = defs.control_group
    engine = live(defs, stream)
    for messages in deliveries(engine).values():
        for m in messages:
            assert m["transactional"] or not in_control_group(m["customer_id"], group)


@SETTINGS
@given(definitions(), streams())
def test_runs_are_deterministic(defs: Definitions, stream: list[Input]) -> None:
    first, second = live(defs, stream), live(defs, stream)
    assert deliveries(first) == deliveries(second)
    assert [attrs.astuple(a) for a in _log(first)] == [attrs.astuple(a) for a in _log(second)]
