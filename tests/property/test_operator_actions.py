"""What an operator does while customers are mid-journey (pause and resume a journey, publish a
new version that drains, migrates or ejects them, or a new journey) is tied to the instant it is
done at, so a worker that comes only at the end decides what a worker on time decides, whatever
the journeys and the stream.

Random valid journeys (``journeys.py``) with a random ``on_resume`` rule, a random stream, and
random operator actions at instants within the stream; the two engines are compared as in
``test_equivalence.py`` (every message, every record, the reports). The same changes inside a
back-test's stream decide what a live engine with a worker on time decides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import attrs
from hypothesis import assume, given
from hypothesis import strategies as st

from cjo.channels.recording import RecordingChannel
from cjo.conditions import attr
from cjo.engine import Engine
from cjo.model.content import ContentItem, Variant
from cjo.model.definitions import Definitions
from cjo.model.events import Event, ProfileUpdate
from cjo.model.governance import ResumeRule, VersionChange
from cjo.model.journey import Journey
from cjo.model.segments import Segment
from cjo.model.steps import Split, SplitPath
from cjo.model.triggers import InactivityTrigger
from cjo.simulate import (
    BacktestInput,
    OperatorChange,
    PauseJourney,
    Publish,
    ResumeJourney,
    backtest,
)
from tests.property.journeys import (
    CHANNELS,
    CUSTOMERS,
    EVENTS,
    T0,
    Input,
    definitions,
    journeys,
    reachable,
    streams,
)
from tests.property.test_equivalence import (
    NO_CATCH_UP_LIMIT,
    SETTINGS,
    assert_same,
    new_engine,
    on_time,
    play,
)
from tests.property.test_equivalence import live as live_engine

#: (instant, what, journey id, detail): ``pause``/``resume``, ``version`` with a mode, or
#: ``journey`` with a journey of a new id.
Action = tuple[datetime, str, str, str | Journey]

RULES = st.sampled_from([
    ResumeRule(), ResumeRule("skip"), ResumeRule("grace", timedelta(hours=1)),
])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Definitions, list[Input], list[Action]]:
    defs = draw(definitions())
    drawn = tuple(attrs.evolve(j, on_resume=draw(RULES)) for j in defs.journeys)
    defs = attrs.evolve(defs, journeys=drawn)
    stream = draw(streams())
    ids = sorted({j.id for j in drawn})
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
    if draw(st.booleans()):
        # A journey of a new id with an inactivity trigger: customers known before it are
        # armed at their first transaction after it, which a late worker must not move.
        # Published within the stream, often shortly after an input.
        instants = [item.timestamp for item in stream if isinstance(item, Event)]
        at = (draw(st.sampled_from(instants)) + timedelta(minutes=draw(st.integers(0, 90)))
              if instants and draw(st.booleans()) else T0 + timedelta(seconds=draw(offsets)))
        new = draw(journeys("jn"))
        trigger = InactivityTrigger(draw(st.sampled_from(EVENTS)),
                                    timedelta(minutes=draw(st.integers(10, 12 * 60))))
        actions.append((at, "journey", "jn", attrs.evolve(
            new, trigger=trigger, reentry=attrs.evolve(new.reentry, instance_key=None),
        )))
    actions.sort(key=lambda a: a[0])  # stable: a journey's pause stays before its resume
    return defs, stream, actions


def _act(engine: Engine, action: Action) -> None:
    _at, what, jid, detail = action
    if what == "pause":
        engine.pause_journey(jid)
    elif what == "resume":
        engine.resume_journey(jid)
    elif isinstance(detail, Journey):
        engine.publish(journeys=[detail])
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



# --- the same changes inside a back-test's stream ----------------------------------------------


def _instant(item: Input) -> datetime | None:
    if isinstance(item, Event):
        return item.timestamp
    return item[0] if isinstance(item, tuple) else None


def keeping_launched_splits(
    journey: Journey, launched: dict[tuple[str, str], tuple[SplitPath, ...]]
) -> Journey:
    """``journey`` with each split step an earlier version launched (``launched``: by journey
    and step id, the arms first published) given those arms again, leading where its own
    arms lead: a new version cannot change a launched split's arms (publish refuses it).
    Its own splits are recorded in ``launched``. A split given fewer arms than it had leads
    to fewer steps: those no path reaches any more are left out (publish refuses them)."""
    steps = dict(journey.steps)
    for step_id, step in journey.steps.items():
        arms = launched.get((journey.id, step_id))
        if isinstance(step, Split) and arms is not None:
            steps[step_id] = attrs.evolve(step, paths=tuple(
                attrs.evolve(arm, next=step.paths[i % len(step.paths)].next)
                for i, arm in enumerate(arms)
            ))
    steps = reachable(steps, journey.entry)
    for step_id, step in steps.items():
        if isinstance(step, Split):
            launched.setdefault((journey.id, step_id), step.paths)
    return attrs.evolve(journey, steps=steps)


@st.composite
def streams_with_changes(draw: st.DrawFn) -> tuple[Definitions, list[BacktestInput]]:
    """Random journeys (schedules too) and a random stream, with operator changes put at random
    places in it, each at a random instant between the inputs around it (often the same as
    theirs, or whole minutes after the one before): pauses and resumes, new versions that
    drain, migrate (to random steps of a random new graph) or eject, new content, and the
    segment they read redefined."""
    defs = draw(definitions(with_schedules=True))
    defs = attrs.evolve(defs, journeys=tuple(
        attrs.evolve(j, on_resume=draw(RULES)) for j in defs.journeys
    ))
    stream = draw(streams())
    latest = {j.id: j for j in defs.journeys}
    launched: dict[tuple[str, str], tuple[SplitPath, ...]] = {}
    for journey in defs.journeys:
        keeping_launched_splits(journey, launched)
    paused: set[str] = set()

    def change_at(at: datetime, n: int) -> BacktestInput:
        jid = draw(st.sampled_from(sorted(latest)))
        what = draw(st.sampled_from(["pause", "resume", "version", "content", "segment"]))
        if what == "resume" and jid not in paused:
            what = "pause"  # only a paused journey can be resumed
        change: OperatorChange
        if what == "pause":
            change = PauseJourney(jid)
            paused.add(jid)
        elif what == "resume":
            change = ResumeJourney(jid)
            paused.discard(jid)
        elif what == "segment":
            # The segment journeys read, redefined: every customer is evaluated again.
            change = Publish(Definitions(segments=(Segment("gold", draw(st.sampled_from([
                attr("tier") == "silver", attr("n") >= 2, attr("tier") == "gold",
            ]))),)))
        elif what == "content":
            text = f"v{n} {{{{ event.k | default: '-' }}}}"
            change = Publish(Definitions(content=(ContentItem("m", (
                Variant("email", {"subject": f"v{n}", "text": text}),
                Variant("sms", {"text": text}),
            )),)))
        else:
            old = latest[jid]
            new = attrs.evolve(draw(journeys(jid, with_schedules=True)), version=old.version + 1,
                               on_resume=draw(RULES))
            new = keeping_launched_splits(new, launched)
            latest[jid] = new
            mode = draw(st.sampled_from(["drain", "migrate", "eject"]))
            running = {
                "drain": VersionChange.drain(),
                "migrate": VersionChange.migrate(
                    {s: draw(st.sampled_from(sorted(new.steps))) for s in old.steps}
                ),
                "eject": VersionChange.eject("replaced"),
            }[mode]
            change = Publish(Definitions(journeys=(new,)), running={jid: running})
        return at, change

    return defs, placed(draw, stream, change_at)


def placed(
    draw: st.DrawFn, stream: list[BacktestInput],
    make: Callable[[datetime, int], BacktestInput],
) -> list[BacktestInput]:
    """``stream`` with one to four items ``make(at, n)`` (the ``n``-th) put at random places,
    each at a random instant between the inputs around it: often the same as theirs, or whole
    minutes after the one before, which fall where its waits end (an item at such an instant
    comes before the wake-ups due at it)."""
    places = sorted(draw(st.lists(st.integers(0, len(stream)), min_size=1, max_size=4)))
    out: list[BacktestInput] = []
    last = T0
    done = 0
    for n, place in enumerate(places):
        for item in stream[done:place]:
            out.append(item)
            last = _instant(item) or last
        done = place
        following = next((t for i in stream[place:] if (t := _instant(i)) is not None),
                         last + timedelta(hours=12))
        span = int((following - last).total_seconds())
        at = last + timedelta(seconds=draw(
            st.integers(0, span) | st.integers(0, span // 60).map(lambda m: 60 * m)
        ))
        last = at
        out.append(make(at, n))
    out.extend(stream[done:])
    return out


@SETTINGS
@given(streams_with_changes(), st.booleans())
def test_a_backtest_with_changes_in_its_stream_decides_what_a_live_engine_decides(
    scenario: tuple[Definitions, list[BacktestInput]], render: bool
) -> None:
    defs, stream = scenario
    assume(not all(isinstance(item, ProfileUpdate) for item in stream))
    result = backtest(defs, stream, channels={name: RecordingChannel() for name in CHANNELS},
                      render=render)
    # A live engine with the default catch-up limit: the back-test counts it per instant, as
    # a worker on time does.
    assert_same(result.engine, live_engine(defs, stream, render=render), defs)
    # On its own counting channels, the same counts.
    counted = backtest(defs, stream, render=render)
    assert (counted.messages, counted.reports, counted.entered, counted.ended) == (
        result.messages, result.reports, result.entered, result.ended)
