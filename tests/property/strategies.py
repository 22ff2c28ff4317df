"""Hypothesis strategies for definitions.

They generate definitions that are well-formed for the converter (every field has a value of
the right type), not necessarily meaningful: a step may point at a step that does not exist.
Values that must survive JSON are JSON-shaped: lists rather than tuples, finite floats, and
durations of whole or quarter seconds (exact in binary, so exact after a trip through text).
"""

from __future__ import annotations

import string
from datetime import timedelta
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
from cjo.model.journey import ExitCriterion, Goal, Journey, ReentryMode, ReentryPolicy
from cjo.model.offers import Offer, OfferCap
from cjo.model.segments import Segment
from cjo.model.steps import (
    Branch,
    Case,
    Exit,
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
from cjo.model.triggers import ApiTrigger, AttributeTrigger, EventTrigger, Trigger
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
leaves: st.SearchStrategy[Condition] = st.one_of(
    compares(), st.builds(Exists, refs), st.builds(InSegment, ids), time_compares
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

steps: st.SearchStrategy[Step] = st.one_of(
    st.builds(Send, ids, channels, next=targets, transactional=st.booleans(), tags=tags,
              variant=st.none() | ids, offers=st.lists(ids, max_size=2).map(tuple),
              on_render_error=st.sampled_from(["skip", "retry", "exit"])),
    st.builds(Wait, durations, next=targets, tags=tags),
    st.builds(WaitForEvent, ids, durations, on_event=targets, on_timeout=targets,
              where=maybe_conditions, tags=tags),
    st.builds(Branch, st.lists(st.builds(Case, conditions, targets), max_size=2).map(tuple),
              default=targets, tags=tags),
    st.builds(Split, st.lists(
        st.builds(SplitPath, ids, st.floats(0.01, 100, allow_nan=False), targets), max_size=3,
    ).map(tuple), tags=tags),
    st.builds(UpdateProfile, set=st.dictionaries(ids, json_values, max_size=2),
              unset=st.lists(ids, max_size=2).map(tuple), next=targets, tags=tags),
    st.builds(Exit, names, tags=tags),
    st.builds(WaitUntil, st.times(), st.lists(st.sampled_from(WEEKDAYS), max_size=3).map(tuple),
              next=targets, tags=tags),
    st.builds(WaitUntilDate, refs, st.integers(-400, 400), signed_durations,
              st.none() | st.times(), next=targets, on_past=targets, on_missing=targets,
              tags=tags),
    st.builds(WaitSinceEntry, durations, next=targets, tags=tags),
)


# --- journeys ----------------------------------------------------------------------------------

triggers: st.SearchStrategy[Trigger] = st.one_of(
    st.builds(ApiTrigger), st.builds(EventTrigger, ids, maybe_conditions),
    st.builds(AttributeTrigger, ids, st.none() | st.lists(json_scalars, max_size=3),
              st.none() | st.lists(json_scalars, max_size=3), maybe_conditions),
)


@st.composite
def reentry_policies(draw: st.DrawFn) -> ReentryPolicy:
    mode: ReentryMode = draw(st.sampled_from(get_args(ReentryMode)))
    key = draw(st.none() | ids)
    if mode == "after_cooldown":
        return ReentryPolicy.after_cooldown(draw(durations), instance_key=key)
    if mode == "at_most":
        return ReentryPolicy.at_most(draw(st.integers(1, 10)), per=draw(durations),
                                     instance_key=key)
    return ReentryPolicy(mode, instance_key=key)


goals = st.builds(Goal, ids, maybe_conditions, st.none() | durations, st.booleans(), names)
exit_criteria = st.one_of(
    st.builds(ExitCriterion, names, ids, maybe_conditions),
    st.builds(ExitCriterion, names, st.none(), conditions),
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

definitions: st.SearchStrategy[Definitions] = st.builds(
    Definitions,
    journeys=st.lists(journeys(), max_size=2).map(tuple),
    segments=st.lists(segments, max_size=3).map(tuple),
    content=st.lists(content_items, max_size=3).map(tuple),
    taxonomy=st.none() | taxonomies,
    blocks=st.lists(blocks, max_size=2).map(tuple),
    offers=st.lists(offers, max_size=2).map(tuple),
)
