"""Hypothesis strategies for definitions.

They generate definitions that are well-formed for the converter (every field has a value of
the right type), not necessarily meaningful: a step may point at a step that does not exist.
Values that must survive JSON are JSON-shaped: lists rather than tuples, finite floats, and
durations of whole or quarter seconds (exact in binary, so exact after a trip through text).
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from hypothesis import strategies as st

from cjo.conditions import (
    OPS,
    SCOPES,
    TIME_BASES,
    And,
    Compare,
    CompareTime,
    Condition,
    Exists,
    InSegment,
    Not,
    Or,
    Ref,
)
from cjo.model.content import ContentBlock, ContentItem, ContentSample, Variant
from cjo.model.definitions import Definitions
from cjo.model.governance import ControlGroup, JourneyPause, ResumeRule, VersionChange
from cjo.model.journey import ExitCriterion, Goal, Journey, ReentryMode, ReentryPolicy
from cjo.model.offers import Offer, OfferCap
from cjo.model.policies import FrequencyCap, QuietHours, Topic
from cjo.model.segments import Segment
from cjo.model.steps import (
    Action,
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
from cjo.model.taxonomy import Category, Taxonomy
from cjo.model.triggers import (
    ApiTrigger,
    AttributeTrigger,
    EventTrigger,
    InactivityTrigger,
    ScheduleTrigger,
    SegmentTrigger,
    Trigger,
)
from cjo.segments.history import (
    Aggregate,
    Bucket,
    FirstPerformed,
    Inactive,
    LastPerformed,
    ListHas,
    Performed,
    TextMatch,
)
from cjo.segments.rules import AttributeUpdate, ProfileRule
from cjo.timezones import WEEKDAYS

__all__ = ["conditions", "definitions", "durations", "journeys", "json_values", "steps"]

ids = st.text(string.ascii_lowercase + string.digits + "_", min_size=1, max_size=8)
names = st.text(max_size=12)
tags = st.lists(st.sampled_from(["lifecycle", "lifecycle/onboarding", "promo", "x/y/z"]),
                max_size=2).map(tuple)
channels = st.sampled_from(["email", "sms", "push", "webhook"])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                               max_size=3),
    max_leaves=6,
)

durations = st.one_of(
    st.integers(1, 10**7).map(lambda s: timedelta(seconds=s)),
    st.integers(1, 4 * 10**6).map(lambda q: timedelta(seconds=q / 4)),
)

# --- conditions --------------------------------------------------------------------------------

paths = st.lists(ids, min_size=1, max_size=3).map(".".join)
refs = st.builds(Ref, st.sampled_from(SCOPES), paths)


@st.composite
def compares(draw: st.DrawFn) -> Compare:
    op = draw(st.sampled_from(OPS))
    value = draw(st.lists(json_scalars, max_size=3) if op in ("in", "not_in") else json_values)
    return Compare(draw(refs), op, value)  # type: ignore[arg-type]


signed_durations = durations | durations.map(lambda d: -d)
time_compares = st.builds(CompareTime, refs, st.sampled_from(OPS), st.sampled_from(TIME_BASES),
                          st.just(timedelta(0)) | signed_durations)
instants = st.datetimes(datetime(1950, 1, 1), datetime(2100, 1, 1),
                        timezones=st.just(UTC))
count_ops = st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge"])
event_filters = st.none() | st.builds(Compare, st.builds(Ref, st.just("event"), paths),
                                      st.sampled_from(["eq", "gt"]), json_scalars)
history_leaves: st.SearchStrategy[Condition] = st.one_of(
    st.builds(Performed, ids, event_filters, count_ops, st.integers(0, 50),
              st.none() | durations, st.none() | instants, st.none() | instants),
    st.builds(FirstPerformed, ids, event_filters, st.sampled_from(["before", "after", "within"]),
              st.none() | instants, st.none() | durations),
    st.builds(LastPerformed, ids, event_filters, st.sampled_from(["before", "after", "within"]),
              st.none() | instants, st.none() | durations),
    st.builds(Inactive, ids, durations, event_filters),
    st.builds(Aggregate, ids, ids, st.sampled_from(["sum", "avg", "min", "max"]), count_ops,
              st.floats(-1e6, 1e6, allow_nan=False), event_filters, st.none() | durations,
              st.none() | instants, st.none() | instants),
    st.builds(TextMatch, refs, st.sampled_from(["prefix", "suffix", "contains", "regex"]),
              st.text(max_size=6), st.booleans()),
    st.builds(ListHas, refs, st.sampled_from(["any", "all", "none"]),
              st.lists(json_scalars, max_size=3).map(tuple)),
    st.builds(Bucket, ids, st.integers(0, 50), st.integers(50, 100), st.just(100)),
)
leaves: st.SearchStrategy[Condition] = st.one_of(
    compares(), st.builds(Exists, refs), st.builds(InSegment, ids), time_compares,
    history_leaves
)
conditions: st.SearchStrategy[Condition] = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda cs: And(tuple(cs))),
        st.lists(inner, max_size=3).map(lambda cs: Or(tuple(cs))),
        st.builds(Not, inner),
    ),
    max_leaves=4,
)
maybe_conditions = st.none() | conditions

# --- steps -------------------------------------------------------------------------------------


# Step ids come mostly from a small pool, so that references between steps often hit (and
# sometimes miss: a dangling reference is still well-formed data).
STEP_POOL = ("start", "a", "b", "c")
step_ids = st.sampled_from(STEP_POOL) | ids
targets = st.none() | step_ids

#: A strategy for each step class (a test checks that every class of the ``Step`` union has one).
STEP_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    Send: st.builds(
        Send, ids, channels, next=targets, transactional=st.booleans(), tags=tags,
        topic=st.none() | ids, fallbacks=st.lists(channels, max_size=2).map(tuple),
        when_capped=st.sampled_from(["skip", "defer", "exit"]),
        variant=st.none() | ids, offers=st.lists(ids, max_size=2).map(tuple),
        on_render_error=st.sampled_from(["skip", "retry", "exit"]),
    ),
    Wait: st.builds(Wait, durations, next=targets, tags=tags),
    WaitForEvent: st.builds(
        WaitForEvent, ids, durations, on_event=targets, on_timeout=targets,
        where=maybe_conditions, tags=tags,
    ),
    Branch: st.builds(
        Branch, st.lists(st.builds(Case, conditions, targets), max_size=2).map(tuple),
        default=targets, tags=tags,
    ),
    Split: st.builds(Split, st.lists(
        st.builds(SplitPath, ids, st.floats(0.01, 100, allow_nan=False), targets), max_size=3,
    ).map(tuple), tags=tags),
    UpdateProfile: st.builds(
        UpdateProfile, set=st.dictionaries(ids, json_values, max_size=2),
        unset=st.lists(ids, max_size=2).map(tuple), next=targets, tags=tags,
    ),
    Exit: st.builds(Exit, names, tags=tags),
    WaitUntil: st.builds(
        WaitUntil, st.times(), st.lists(st.sampled_from(WEEKDAYS), max_size=3).map(tuple),
        next=targets, tags=tags,
    ),
    WaitUntilDate: st.builds(
        WaitUntilDate, refs, st.integers(-400, 400), signed_durations,
        st.none() | st.times(), next=targets, on_past=targets, on_missing=targets, tags=tags,
    ),
    WaitSinceEntry: st.builds(WaitSinceEntry, durations, next=targets, tags=tags),
    AudiencePaths: st.builds(
        AudiencePaths, st.lists(st.builds(AudiencePath, ids, targets), max_size=3).map(tuple),
        default=targets, tags=tags,
    ),
    Jump: st.builds(Jump, ids, st.booleans(), targets, tags=tags),
    Action: st.builds(
        Action, ids, st.dictionaries(ids, names, max_size=2), next=targets,
        on_failure=st.sampled_from(["retry", "skip", "exit"]), tags=tags,
    ),
}
steps: st.SearchStrategy[Step] = st.one_of(*STEP_STRATEGIES.values())

# --- journeys ----------------------------------------------------------------------------------

#: A strategy for each trigger class (a test checks that every class of the ``Trigger`` union
#: has one).
TRIGGER_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    ApiTrigger: st.builds(ApiTrigger),
    EventTrigger: st.builds(EventTrigger, ids, maybe_conditions),
    InactivityTrigger: st.builds(InactivityTrigger, ids, durations, maybe_conditions),
    AttributeTrigger: st.builds(
        AttributeTrigger, ids, st.none() | st.lists(json_scalars, max_size=3),
        st.none() | st.lists(json_scalars, max_size=3), maybe_conditions,
    ),
    SegmentTrigger: st.builds(SegmentTrigger, ids, st.sampled_from(["enter", "exit"])),
    ScheduleTrigger: st.builds(
        ScheduleTrigger, st.sampled_from(["0 9 * * MON", "*/15 * * * *"]),
        st.sampled_from([None, "Europe/Paris"]), st.none() | ids,
    ),
}
triggers: st.SearchStrategy[Trigger] = st.one_of(*TRIGGER_STRATEGIES.values())


@st.composite
def reentry_policies(draw: st.DrawFn) -> ReentryPolicy:
    mode: ReentryMode = draw(st.sampled_from(get_args(ReentryMode)))
    key = draw(st.none() | ids)
    guard = None if mode == "never" else draw(st.none() | durations)
    if mode == "after_cooldown":
        return ReentryPolicy.after_cooldown(draw(durations), instance_key=key, guard=guard)
    if mode == "at_most":
        return ReentryPolicy.at_most(draw(st.integers(1, 10)), per=draw(durations),
                                     instance_key=key, guard=guard)
    return ReentryPolicy(mode, instance_key=key, guard=guard)


goals = st.builds(Goal, ids, maybe_conditions, st.none() | durations, st.booleans(), names)
exit_criteria = st.one_of(
    st.builds(ExitCriterion, names, ids, maybe_conditions),
    st.builds(ExitCriterion, names, st.none(), conditions),
    st.builds(ExitCriterion, names, st.none(), st.none(), ids,
              st.sampled_from(["enter", "exit"])),
)


@st.composite
def journeys(draw: st.DrawFn) -> Journey:
    graph = draw(st.dictionaries(step_ids, steps, min_size=1, max_size=4))
    return Journey(
        id=draw(ids),
        entry=draw(st.sampled_from(sorted(graph))),
        steps=graph,
        trigger=draw(triggers),
        name=draw(names),
        version=draw(st.integers(1, 1000)),
        audience=draw(maybe_conditions),
        exit_criteria=tuple(draw(st.lists(exit_criteria, max_size=2))),
        goal=draw(st.none() | goals),
        reentry=draw(reentry_policies()),
        max_lifetime=draw(st.none() | durations),
        timezone=draw(st.sampled_from([None, "UTC", "Europe/Paris", "America/New_York"])),
        tags=draw(tags),
        priority=draw(st.integers(-5, 5)),
        exclusive_group=draw(st.none() | ids),
        on_resume=draw(st.sampled_from([
            ResumeRule(), ResumeRule("skip"), ResumeRule("grace", timedelta(hours=2)),
        ])),
    )


# --- the rest ----------------------------------------------------------------------------------

segments = st.builds(Segment, ids, conditions, names, tags)
variants = st.builds(
    Variant,
    channels,
    st.dictionaries(ids, st.text(max_size=20) | st.just("Hi {{ profile.name }}"), max_size=3),
    st.none() | st.sampled_from(["en", "fr", "pt-BR"]),
    st.none() | st.sampled_from(["A", "B"]),
)
samples = st.builds(
    ContentSample,
    st.dictionaries(ids, st.text(max_size=10) | st.integers(-100, 100), max_size=3),
    st.dictionaries(ids, st.text(max_size=10) | st.booleans(), max_size=3),
)
content_items = st.builds(
    ContentItem, ids, st.lists(variants, max_size=3).map(tuple), names, tags,
    topic=st.none() | ids,
    sample=st.none() | samples,
)
blocks = st.builds(ContentBlock, ids, st.text(max_size=20) | st.just("Bye {{ profile.name }}"))
offers = st.builds(
    Offer, ids, ids, maybe_conditions, st.integers(-5, 5), st.none() | ids,
    st.none() | st.builds(OfferCap, st.integers(1, 5), st.none() | durations), tags,
)
categories: st.SearchStrategy[Category] = st.recursive(
    st.builds(Category, ids, names),
    lambda inner: st.builds(Category, ids, names, st.lists(inner, max_size=3).map(tuple)),
    max_leaves=5,
)
taxonomies = st.builds(Taxonomy, st.lists(categories, max_size=3).map(tuple))

topics = st.builds(Topic, ids, st.sampled_from(["opt_out", "opt_in"]), names)
wall_times = st.times().map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))
caps = st.one_of(
    st.builds(FrequencyCap, ids, st.integers(0, 10), per=st.none() | durations,
              channel=st.none() | channels, tag=st.none() | st.sampled_from(["promo", "x/y"])),
    st.builds(FrequencyCap, ids, st.integers(1, 10), period=st.just("calendar_day")),
)
quiet_hours = st.builds(
    QuietHours, ids, wall_times, wall_times,
    weekdays=st.lists(st.integers(0, 6), max_size=3, unique=True).map(tuple),
    journeys=st.lists(ids, max_size=2).map(tuple),
    channels=st.lists(channels, max_size=2).map(tuple),
    action=st.sampled_from(["defer", "skip"]), spread=st.sampled_from(
        [timedelta(0), timedelta(minutes=30), timedelta(hours=2)]),
    include_transactional=st.booleans(),
)
attribute_updates = st.one_of(
    st.builds(AttributeUpdate, ids, st.just("stamp")),
    st.builds(AttributeUpdate, ids, st.just("copy"), paths),
    st.builds(AttributeUpdate, ids, st.just("assign"), st.none(), json_values),
    st.builds(AttributeUpdate, ids, st.just("add"), st.none() | paths,
              st.integers(-100, 100)),
)
profile_rules = st.builds(ProfileRule, ids, ids,
                          st.lists(attribute_updates, max_size=3).map(tuple), event_filters)

definitions: st.SearchStrategy[Definitions] = st.builds(
    Definitions,
    journeys=st.lists(journeys(), max_size=2).map(tuple),
    segments=st.lists(segments, max_size=3).map(tuple),
    content=st.lists(content_items, max_size=3).map(tuple),
    taxonomy=st.none() | taxonomies,
    control_group=st.none() | st.builds(ControlGroup, st.floats(0, 99), ids),
    max_concurrent_journeys=st.none() | st.integers(1, 5),
    paused=st.lists(st.builds(JourneyPause, ids, st.datetimes(timezones=st.just(UTC))),
                    max_size=2).map(tuple),
    version_changes=st.lists(st.builds(
        VersionChange, ids, st.integers(1, 9), st.integers(1, 9),
        st.sampled_from(["migrate", "eject"]), st.dictionaries(ids, ids, max_size=2), names,
        st.none() | st.datetimes(timezones=st.just(UTC)),
    ), max_size=2).map(tuple),
    topics=st.lists(topics, max_size=2).map(tuple),
    caps=st.lists(caps, max_size=2).map(tuple),
    quiet_hours=st.lists(quiet_hours, max_size=2).map(tuple),
    profile_rules=st.lists(profile_rules, max_size=2).map(tuple),
    blocks=st.lists(blocks, max_size=2).map(tuple),
    offers=st.lists(offers, max_size=2).map(tuple),
)
