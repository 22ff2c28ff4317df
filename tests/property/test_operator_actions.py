"""What an operator does while customers are mid-journey (pause and resume a journey, publish a
new version that drains, migrates or ejects them) is tied to the instant it is done at, so a
worker that comes only at the end decides what a worker on time decides, whatever the journeys
and the stream.

Random valid journeys (``journeys.py``) with a random ``on_resume`` rule, a random stream, and
random operator actions at instants within the stream; the two engines are compared as in
``test_equivalence.py`` (every message, every record, the reports).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import attrs
from hypothesis import given
from hypothesis import strategies as st

from cjo.engine import Engine
from cjo.model.definitions import Definitions
from cjo.model.governance import ResumeRule, VersionChange
from tests.property.journeys import CUSTOMERS, T0, Input, definitions, streams
from tests.property.test_equivalence import (
    NO_CATCH_UP_LIMIT,
    SETTINGS,
    assert_same,
    new_engine,
    on_time,
    play,
)

#: (instant, what, journey id, detail): ``pause``/``resume``, or ``version`` with a mode.
Action = tuple[datetime, str, str, str]

RULES = st.sampled_from([
    ResumeRule(), ResumeRule("skip"), ResumeRule("grace", timedelta(hours=1)),
])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Definitions, list[Input], list[Action]]:
    defs = draw(definitions())
    journeys = tuple(attrs.evolve(j, on_resume=draw(RULES)) for j in defs.journeys)
    defs = attrs.evolve(defs, journeys=journeys)
    stream = draw(streams())
    ids = sorted({j.id for j in journeys})
    offsets = st.integers(0, 2 * 24 * 3600)
    actions: list[Action] = []
    for jid in draw(st.lists(st.sampled_from(ids), max_size=2, unique=True)):
        # One pause per chosen journey, sometimes never resumed; sometimes a new version.
        start = T0 + timedelta(seconds=draw(offsets))
        actions.append((start, "pause", jid, ""))
        if draw(st.booleans()):
            end = start + timedelta(seconds=draw(st.integers(0, 12 * 3600)))
            actions.append((end, "resume", jid, ""))
    for jid in draw(st.lists(st.sampled_from(ids), max_size=2, unique=True)):
        at = T0 + timedelta(seconds=draw(offsets))
        actions.append((at, "version", jid, draw(st.sampled_from(["drain", "migrate", "eject"]))))
    actions.sort(key=lambda a: a[0])  # stable: a journey's pause stays before its resume
    return defs, stream, actions


def _act(engine: Engine, action: Action) -> None:
    _at, what, jid, detail = action
    if what == "pause":
        engine.pause_journey(jid)
    elif what == "resume":
        engine.resume_journey(jid)
    else:
        journey = max((j for j in engine.definitions.journeys if j.id == jid),
                      key=lambda j: j.version)
        new = attrs.evolve(journey, version=journey.version + 1)
        change = {
            "drain": VersionChange.drain(),
            "migrate": VersionChange.migrate({s: s for s in journey.steps}),
            "eject": VersionChange.eject("replaced"),
        }[detail]
        engine.publish(journeys=[new], running={jid: change})


def live(defs: Definitions, stream: Sequence[Input], actions: Sequence[Action],
         worker: str) -> Engine:
    """Inputs and operator actions, each with the clock at its instant; ``worker``: ``on_time``
    fires every wake-up at its instant, ``at_end`` calls ``run_due`` once, at the end."""
    engine, clock = new_engine(defs, limits=NO_CATCH_UP_LIMIT)
    pending = list(actions)

    def move(at: datetime) -> None:
        # Operator actions due by ``at`` first, each at its own instant.
        while pending and pending[0][0] <= at:
            action = pending.pop(0)
            if worker == "on_time" and action[0] > clock.now():
                # What falls due before the action; at its very instant the action comes first
                # (a publish or a pause at an instant applies to what is decided at it).
                on_time(engine, clock, action[0] - timedelta(microseconds=1))
            clock.set(max(clock.now(), action[0]))
            _act(engine, action)
        if worker == "on_time":
            on_time(engine, clock, at)
        else:
            clock.set(max(clock.now(), at))

    last = play(engine, stream, move) or T0
    end = max([last, *(a[0] for a in pending)])
    move(end)
    engine.run_due(end)
    # A version change reaches a customer at their next transaction, which a late worker's
    # catch-up may have been and a worker on time not yet: one more transaction for each
    # customer brings both records to the same instant.
    for cid in CUSTOMERS:
        if engine.customer_state(cid) is not None:
            engine.identify(cid)
    return engine


@SETTINGS
@given(scenarios())
def test_a_worker_only_at_the_end_decides_what_a_worker_on_time_decides_across_pauses_and_versions(
    scenario: tuple[Definitions, list[Input], list[Action]],
) -> None:
    defs, stream, actions = scenario
    assert_same(live(defs, stream, actions, "at_end"), live(defs, stream, actions, "on_time"),
                defs)

