"""Identity merges inside a back-test's stream: ``(at, Identify(...))`` decides what a live engine
decides when the host calls ``identify(..., anonymous_id=...)`` with its clock at that instant
and a worker that is never late (every message, every record, the reports), on the caller's
channels and on the back-test's own counting ones, with or without operator changes.

Random valid journeys (``journeys.py``) over a random stream of a few customers, with merges of
one of them into another at random places (a merge may find no anonymous record, or one made
again by events after an earlier merge); the engines are compared as in
``test_equivalence.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from unittest import mock

from hypothesis import assume, given
from hypothesis import strategies as st

from cjo import simulate
from cjo.channels.recording import RecordingChannel
from cjo.engine import Engine
from cjo.model.definitions import Definitions
from cjo.model.events import ProfileUpdate
from cjo.simulate import BacktestInput, Identify, backtest
from tests.property.journeys import (
    CHANNELS,
    CUSTOMERS,
    T0,
    definitions,
    streams,
    updates,
)
from tests.property.test_equivalence import (
    SETTINGS,
    assert_counted_as_live,
    assert_same,
    drive,
    engine_options,
    new_engine,
)
from tests.property.test_operator_actions import placed, streams_with_changes


def live(defs: Definitions, stream: list[BacktestInput], **options: Any) -> Engine:
    """A live engine with its clock at each input's instant and a worker on time, which passes
    from the start: the first ``run_due`` of an engine evaluates every stored customer against
    the segments, and one that first came after a merge would evaluate the record the merge
    emptied (as a back-test's worker, on time from the start, does not). That pass comes
    just before ``T0``: at ``T0`` itself it would run a schedule occurrence of ``T0`` before
    an operator's change at that instant, where the back-test (and a worker on time, which
    comes after the change) runs it after."""
    engine, clock = new_engine(defs, **options)
    engine.run_due(T0 - timedelta(microseconds=1))
    drive(engine, clock, stream)
    return engine


@st.composite
def plain(draw: st.DrawFn) -> tuple[Definitions, list[BacktestInput]]:
    return draw(definitions(with_schedules=True)), list(draw(streams(reuse_ids=True)))


@st.composite
def streams_with_merges(draw: st.DrawFn) -> tuple[Definitions, list[BacktestInput]]:
    """Random journeys and a stream (with operator changes, sometimes), with one to four
    merges put at random places, each at a random instant between the inputs around it (often
    the same as theirs, or whole minutes after the one before, where waits end)."""
    defs, stream = draw(plain() | streams_with_changes())

    def merge_at(at: datetime, _n: int) -> BacktestInput:
        known, anonymous = draw(st.permutations(CUSTOMERS))[:2]
        update: ProfileUpdate = draw(updates)
        return at, Identify(known, update.attributes, unset=update.unset,
                            timezone=update.timezone, anonymous_id=anonymous)

    return defs, placed(draw, stream, merge_at)


@SETTINGS
@given(streams_with_merges(), st.booleans(), engine_options)
def test_a_backtest_with_merges_in_its_stream_decides_what_a_live_engine_decides(
    scenario: tuple[Definitions, list[BacktestInput]], render: bool, options: dict[str, Any],
) -> None:
    defs, stream = scenario
    result = backtest(defs, stream, channels={name: RecordingChannel() for name in CHANNELS},
                      render=render, **options)
    assert result.merges == sum(isinstance(i, tuple) and isinstance(i[1], Identify)
                                for i in stream)
    assert_same(result.engine, live(defs, stream, render=render, **options), defs)


@SETTINGS
@given(streams_with_merges(), engine_options, st.sampled_from([1, 2, simulate.CUSTOMER_CHUNK]))
def test_a_backtest_with_merges_on_its_own_channels_decides_what_a_live_engine_decides(
    scenario: tuple[Definitions, list[BacktestInput]], options: dict[str, Any], chunk: int,
) -> None:
    # The window before a merge may be decided customer by customer: the two customers' inputs
    # around the merge must still be decided in their order.
    defs, stream = scenario
    assume(not all(isinstance(item, ProfileUpdate) for item in stream))
    with mock.patch.object(simulate, "CUSTOMER_CHUNK", chunk):
        result = backtest(defs, stream, render=True, keep_activity=True, **options)
    assert_counted_as_live(result, live(defs, stream, **options), defs)
