"""Operating the engine: the housekeeping the worker loop does on every storage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cjo import Engine, ManualClock, Retention
from cjo.errors import ConflictError
from cjo.storage.base import Storage

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def test_a_prune_that_failed_is_tried_again_by_the_next_pass(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock(T0)
    engine = Engine(storage, clock=clock, retention=Retention(), prune_every=timedelta(hours=1))
    engine.run_due()  # the first pass starts the interval
    pruned: list[datetime] = []
    real_prune = storage.prune

    def prune(now: datetime, retention: Retention) -> object:
        pruned.append(now)
        if len(pruned) == 1:
            raise ConflictError("the database stayed locked")
        return real_prune(now, retention)

    monkeypatch.setattr(storage, "prune", prune)
    clock.advance(hours=1)
    with pytest.raises(ConflictError):
        engine.run_due()
    clock.advance(minutes=1)
    engine.run_due()  # not an hour after the failed prune: it is due still
    assert pruned == [T0 + timedelta(hours=1), T0 + timedelta(hours=1, minutes=1)]
    clock.advance(minutes=30)
    engine.run_due()  # an hour is timed from the prune that succeeded
    assert len(pruned) == 2
