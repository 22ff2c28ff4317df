"""A withdrawal inside a back-test's stream (``Withdraw``) decides what a live engine decides
when the operator calls ``Engine.withdraw`` at the same instant, with a worker on time."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cjo.conditions import attr
from cjo.errors import DefinitionError
from cjo.model.definitions import Definitions
from cjo.model.events import Event, ProfileUpdate
from cjo.model.journey import Journey
from cjo.model.policies import FrequencyCap
from cjo.model.segments import Segment
from cjo.model.steps import Send
from cjo.model.triggers import EventTrigger, SegmentTrigger
from cjo.simulate import BacktestInput, Withdraw, backtest
from tests.property.journeys import T0
from tests.unit.test_backtest_changes import assert_as_live, note, replay, sent

HOUR = timedelta(hours=1)
PROMO = Journey(id="promo", trigger=EventTrigger("visited"), entry="mail",
                steps={"mail": Send("note", "email")})
DEFS = Definitions(journeys=(PROMO,), content=(note("Sale"),),
                   segments=(Segment("gold", attr("tier") == "gold"),),
                   caps=(FrequencyCap("one_a_day", 1, timedelta(days=1)),))


def visit(customer: str, n: int, at: timedelta) -> Event:
    return Event(customer, "visited", T0 + at, {}, f"{customer}-visit-{n}")


def test_a_withdrawal_mid_stream_acts_from_its_instant_on() -> None:
    withdrawn_at = T0 + 2 * HOUR
    stream: list[BacktestInput] = [
        (T0, ProfileUpdate("ann", {"tier": "gold"})),
        visit("ann", 1, HOUR),
        visit("ann", 2, 90 * timedelta(minutes=1)),  # capped
        (withdrawn_at, Withdraw(segments=["gold"], caps=("one_a_day",))),
        visit("ann", 3, 3 * HOUR),  # no cap any more
    ]
    result = replay(DEFS, stream)
    assert_as_live(result, stream, DEFS)
    assert result.changes == 1
    assert [(m[0], m[4]) for m in sent(result)] == [("ann", T0 + HOUR), ("ann", T0 + 3 * HOUR)]
    assert (result.engine.definitions.segments, result.engine.definitions.caps) == ((), ())
    # Ann left the segment at the withdrawal, as a worker on time takes her out of it.
    engine = backtest(DEFS, stream, keep_activity=True).engine
    state = engine.customer_state("ann")
    assert state is not None and state.segments == {}
    assert [(a.kind, a.detail, a.at) for a in engine.activities(T0, T0 + 4 * HOUR)
            if a.kind.startswith("segment_")] == [("segment_entered", "gold", T0),
                                                 ("segment_exited", "gold", withdrawn_at)]


def test_a_refused_withdrawal_is_named_by_its_position() -> None:
    defs = Definitions(
        journeys=(Journey(id="vip", trigger=SegmentTrigger("gold"), entry="mail",
                          steps={"mail": Send("note", "email")}),),
        content=DEFS.content, segments=DEFS.segments)
    with pytest.raises(DefinitionError, match=(
        r"input #1 \(Withdraw at .*\) / segment 'gold': cannot be withdrawn: still used by "
        r"journey 'vip' v1 / trigger"
    )):
        backtest(defs, [visit("ann", 1, HOUR), (T0 + 2 * HOUR, Withdraw(segments=["gold"]))])
