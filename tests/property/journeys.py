"""Hypothesis strategies for definitions that run, and for streams of inputs that exercise them.

Unlike ``strategies.py`` (well-formed data, not necessarily meaningful), everything here passes
validation and is built to make things happen: a few event names shared by triggers, waits,
goals and exits; durations of minutes to hours over streams that last a couple of days; step
graphs where each step leads only to later ones (so no loop runs without a wait); profile
attributes that conditions, segments, branches and templates read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any

import attrs
from hypothesis import strategies as st

from cjo.conditions import Condition, attr, ctx, in_segment, prop
from cjo.model.content import ContentItem, Variant
from cjo.model.definitions import Definitions
from cjo.model.events import Event, ProfileUpdate
from cjo.model.governance import ControlGroup
from cjo.model.journey import ExitCriterion, Goal, Journey, ReentryPolicy
from cjo.model.segments import Segment
from cjo.model.steps import (
    AudiencePath,
    AudiencePaths,
    Branch,
    Case,
    Exit,
    Jump,
    Send,
    Split,
    SplitPath,
    Step,
    UpdateProfile,
    Wait,
    WaitForEvent,
    WaitSinceEntry,
    WaitUntil,
    WaitUntilDate,
)
from cjo.model.triggers import EventTrigger, InactivityTrigger, ScheduleTrigger, Trigger
from cjo.runtime.kinds import step_kind

__all__ = [
    "CHANNELS",
    "CONTENT",
    "CUSTOMERS",
    "EVENTS",
    "SEGMENTS",
    "T0",
    "Input",
    "customer_ids",
    "definitions",
    "grouped_streams",
    "reachable",
    "streams",
]

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
EVENTS = ("a", "b", "c", "buy")
CHANNELS = ("email", "sms")
CUSTOMERS = ("c0", "c1", "c2")

#: One input of a stream: an event, a bare profile update (applied at the next event's
#: instant), or a profile update with its own instant.
Input = Event | ProfileUpdate | tuple[datetime, ProfileUpdate]

# --- conditions, by what they may read ---------------------------------------------------------

profile_conditions: st.SearchStrategy[Condition] = st.sampled_from([
    attr("tier") == "gold",
    attr("tier") != "silver",
    attr("n") >= 2,
    in_segment("gold"),
    ~in_segment("gold"),
])
event_conditions: st.SearchStrategy[Condition] = st.sampled_from([
    prop("k") == "x",
    prop("v") > 2,
    prop("k").exists(),
])
context_conditions: st.SearchStrategy[Condition] = st.sampled_from([
    ctx("k") == "x",
    ctx("v") >= 1,
])
trigger_conditions = profile_conditions | event_conditions
reading_conditions = profile_conditions | event_conditions | context_conditions
branch_conditions = profile_conditions | context_conditions

# Whole minutes up to a few hours: shorter than the streams, so that waits end inside them.
minutes = st.integers(1, 6 * 60).map(lambda m: timedelta(minutes=m))
events = st.sampled_from(EVENTS)

# --- step graphs -------------------------------------------------------------------------------


@st.composite
def step_graphs(draw: st.DrawFn) -> dict[str, Step]:
    """Steps s0..sN where each step leads only to later steps (or ends the journey)."""
    count = draw(st.integers(1, 6))
    ids = [f"s{i}" for i in range(count)]
    graph: dict[str, Step] = {}
    for i, step_id in enumerate(ids):
        later = st.none() | st.sampled_from(ids[i + 1:]) if i + 1 < count else st.none()
        kind = draw(st.sampled_from(
            ["send", "send", "wait", "wait_for_event", "branch", "split", "update", "exit",
             "audience", "jump", "wait_until", "wait_until_date", "wait_since_entry"]
        ))
        step: Step
        if kind == "send":
            content = draw(st.sampled_from(["m", "m", "email_only"]))
            channel = "email" if content == "email_only" else draw(st.sampled_from(CHANNELS))
            step = Send(content, channel, next=draw(later))
        elif kind == "wait":
            step = Wait(draw(minutes), next=draw(later))
        elif kind == "wait_for_event":
            step = WaitForEvent(
                draw(events), draw(minutes), on_event=draw(later), on_timeout=draw(later),
                where=draw(st.none() | reading_conditions),
            )
        elif kind == "branch":
            cases = draw(st.lists(st.builds(Case, branch_conditions, later), min_size=1,
                                  max_size=2))
            step = Branch(tuple(cases), default=draw(later))
        elif kind == "split":
            weights = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
            step = Split(tuple(
                SplitPath(f"p{j}", float(w), draw(later)) for j, w in enumerate(weights)
            ))
        elif kind == "update":
            step = UpdateProfile(
                set=draw(st.dictionaries(st.sampled_from(["tier", "n"]),
                                         st.sampled_from(["gold", "silver", 1, 3]), max_size=2)),
                unset=tuple(draw(st.lists(st.sampled_from(["tier", "n"]), max_size=1))),
                next=draw(later),
            )
        elif kind == "wait_until":
            step = WaitUntil(
                time(draw(st.integers(0, 23)), draw(st.sampled_from([0, 30]))),
                weekdays=tuple(draw(st.sets(st.sampled_from(["mon", "wed", "sat"]),
                                            max_size=2))),
                next=draw(later),
            )
        elif kind == "wait_until_date":
            step = WaitUntilDate(
                attr("renews_on"), days=draw(st.integers(-1, 1)), next=draw(later),
                on_past=draw(later), on_missing=draw(later),
                at=draw(st.none() | st.just(time(9))),
            )
        elif kind == "wait_since_entry":
            step = WaitSinceEntry(draw(minutes), next=draw(later))
        elif kind == "audience":
            step = AudiencePaths((AudiencePath("gold", draw(later)),), default=draw(later))
        elif kind == "jump":
            # j0 exists in every definition set; jumping to itself is allowed too.
            end_current = draw(st.booleans())
            step = Jump("j0", end_current=end_current,
                        next=None if end_current else draw(later))
        else:
            step = Exit(draw(st.sampled_from(["done", "bye"])))
        graph[step_id] = step
    return reachable(graph)


def reachable(graph: dict[str, Step], entry: str = "s0") -> dict[str, Step]:
    """The steps of ``graph`` that ``entry`` reaches (validation refuses unreachable steps);
    a reached step refers only to reached ones."""
    reached: set[str] = set()
    todo = [entry]
    while todo:
        step_id = todo.pop()
        if step_id not in reached:
            reached.add(step_id)
            todo.extend(t for _label, t in step_kind(graph[step_id]).successors(graph[step_id])
                        if t is not None)
    return {k: v for k, v in graph.items() if k in reached}


# --- journeys ----------------------------------------------------------------------------------

triggers: st.SearchStrategy[Trigger] = st.one_of(
    st.builds(EventTrigger, events, st.none() | trigger_conditions),
    st.builds(EventTrigger, events, st.none() | trigger_conditions),
    st.builds(InactivityTrigger, events, st.integers(10, 12 * 60).map(
        lambda m: timedelta(minutes=m)), st.none() | trigger_conditions),
)
# Occurrences inside the streams (a couple of days): every customer known by then, or the
# segment's members, enter at each one. Kept apart: a worker that comes late runs only the
# latest missed occurrence, at its own instant (docs/semantics.md), so only a worker on time
# and a back-test agree on them.
schedules: st.SearchStrategy[Trigger] = st.builds(
    ScheduleTrigger, st.sampled_from(["*/45 * * * *", "0 9 * * *", "30 2 * * *"]),
    st.sampled_from([None, "Europe/Paris"]), st.sampled_from([None, "gold"]),
)


@st.composite
def reentry_policies(draw: st.DrawFn) -> ReentryPolicy:
    key = draw(st.sampled_from([None, None, "k"]))
    mode = draw(st.sampled_from(["never", "after_exit", "after_cooldown", "at_most"]))
    guard = None if mode == "never" else draw(st.none() | minutes)
    if mode == "after_cooldown":
        return ReentryPolicy.after_cooldown(draw(minutes), instance_key=key, guard=guard)
    if mode == "at_most":
        return ReentryPolicy.at_most(draw(st.integers(1, 3)), per=draw(minutes),
                                     instance_key=key, guard=guard)
    return ReentryPolicy(mode, instance_key=key, guard=guard)  # type: ignore[arg-type]


@st.composite
def journeys(draw: st.DrawFn, journey_id: str, *, with_schedules: bool = False) -> Journey:
    graph = draw(step_graphs())
    exits = draw(st.lists(st.one_of(
        st.builds(ExitCriterion, st.just("on_event"), events, st.none() | reading_conditions),
        st.builds(ExitCriterion, st.just("on_profile"), st.none(), profile_conditions),
    ), max_size=2))
    goal = draw(st.none() | st.builds(
        Goal, events, st.none() | reading_conditions, st.none() | minutes, st.booleans(),
    ))
    # Every wait is at most six hours: a lifetime of a day or more never cuts one short at
    # validation, and a shorter one is not offered.
    lifetime = draw(st.sampled_from([None, None, timedelta(days=1), timedelta(hours=30)]))
    trigger = draw(triggers | schedules if with_schedules else triggers)
    reentry = draw(reentry_policies())
    if trigger.context_keys is not None:  # only event and API triggers supply an instance key
        reentry = attrs.evolve(reentry, instance_key=None)
    return Journey(
        id=journey_id,
        entry="s0",
        steps=graph,
        trigger=trigger,
        audience=draw(st.none() | profile_conditions),
        exit_criteria=tuple(exits),
        goal=goal,
        reentry=reentry,
        max_lifetime=lifetime,
        priority=draw(st.integers(0, 2)),
        exclusive_group=draw(st.sampled_from([None, None, "g"])),
    )


CONTENT = (
    ContentItem("m", (
        Variant("email", {
            "subject": "Hi {{ profile.tier | default: 'friend' }}",
            "text": "{{ event.k }}/{{ context.v }} n={{ profile.n }}",
        }),
        Variant("sms", {"text": "{{ customer_id }}: {{ event.k | default: '-' }}"}),
    )),
    ContentItem("email_only", (Variant("email", {"subject": "only email", "text": "x"}),)),
)
SEGMENTS = (Segment("gold", attr("tier") == "gold"),)


@st.composite
def definitions(draw: st.DrawFn, *, with_schedules: bool = False) -> Definitions:
    count = draw(st.integers(1, 3))
    return Definitions(
        journeys=tuple(draw(journeys(f"j{i}", with_schedules=with_schedules))
                       for i in range(count)),
        segments=SEGMENTS,
        content=CONTENT,
        control_group=draw(st.sampled_from([None, None, ControlGroup(40, "cg")])),
        max_concurrent_journeys=draw(st.sampled_from([None, None, 2])),
    )


# --- streams -----------------------------------------------------------------------------------

# Gaps between inputs, in seconds: ties are common (groups of one instant), and so are gaps
# longer than the waits.
gaps = st.sampled_from([0, 0, 0, 1, 30, 60, 600, 3600, 4 * 3600, 9 * 3600]) | st.integers(0, 7200)
properties = st.fixed_dictionaries({}, optional={
    "k": st.sampled_from(["x", "y"]), "v": st.integers(0, 5),
})
updates = st.builds(
    ProfileUpdate,
    st.sampled_from(CUSTOMERS),
    st.fixed_dictionaries({}, optional={
        "tier": st.sampled_from(["gold", "silver"]), "n": st.integers(0, 3),
        "renews_on": st.sampled_from(["2026-03-02", "2026-03-03", "2026-03-05", "bad"]),
    }),
    st.lists(st.sampled_from(["tier", "n"]), max_size=1).map(tuple),
    st.sampled_from([None, None, "Europe/Paris"]),
)


@st.composite
def streams(draw: st.DrawFn, *, max_size: int = 25, reuse_ids: bool = False) -> list[Input]:
    """A time-ordered stream for a few customers: events, bare profile updates and timed
    profile updates. Some events are delivered twice (the same event again, at once). With
    ``reuse_ids``, some events also take the id of an earlier, different event: a host's
    mistake, whose handling is deterministic but depends on which events were claimed."""
    out: list[Input] = []
    at = T0
    seen: list[str] = []
    for i in range(draw(st.integers(0, max_size))):
        previous = out[-1] if out else None
        if isinstance(previous, Event) and draw(st.integers(0, 9)) == 0:
            out.append(previous)  # a redelivery
            continue
        at += timedelta(seconds=draw(gaps))
        kind = draw(st.sampled_from(["event"] * 6 + ["update", "timed"]))
        if kind == "update":
            out.append(draw(updates))
        elif kind == "timed":
            out.append((at, draw(updates)))
        else:
            event_id = f"e{i}"
            if reuse_ids and seen and draw(st.integers(0, 9)) == 0:
                event_id = draw(st.sampled_from(seen))
            seen.append(event_id)
            out.append(Event(
                draw(st.sampled_from(CUSTOMERS)), draw(events), at, draw(properties), event_id,
            ))
    return out


@st.composite
def grouped_streams(draw: st.DrawFn) -> list[tuple[datetime, list[Event | ProfileUpdate]]]:
    """Groups of inputs sharing one instant each, in time order."""
    groups: list[tuple[datetime, list[Event | ProfileUpdate]]] = []
    at = T0
    n = 0
    for _ in range(draw(st.integers(0, 8))):
        at += timedelta(seconds=draw(gaps.filter(bool)))
        items: list[Event | ProfileUpdate] = []
        for _ in range(draw(st.integers(1, 5))):
            if draw(st.integers(0, 5)) == 0:
                items.append(draw(updates))
            else:
                items.append(Event(
                    draw(st.sampled_from(CUSTOMERS)), draw(events), at, draw(properties),
                    f"e{n}",
                ))
                n += 1
        groups.append((at, items))
    return groups


def customer_ids(stream: Sequence[Any]) -> list[str]:
    """Every customer a stream mentions."""
    out: set[str] = set()
    for item in stream:
        target = item[1] if isinstance(item, tuple) else item
        out.add(target.customer_id)
    return sorted(out)
