"""Validation: every problem in a set of definitions, each with a precise location.

The converter in :mod:`cjo.serialization` catches what is wrong with the *shape* of the data
(a missing field, a bad duration). This module catches what is wrong with its *meaning*: a step
that points nowhere, a segment that does not exist, a template that does not parse, a loop that
would never stop. It never stops at the first problem, because fixing definitions one error per
publish is miserable.

Locations read like a path a person would follow::

    journey 'cart' v1 / step 'email'
    segment 'vip'
    content 'welcome' / variant email
"""

from __future__ import annotations

import zoneinfo
from collections import Counter, deque
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import TypeGuard, get_args

import liquid
from liquid.exceptions import LiquidError

from cjo.conditions import (
    OPS,
    SCOPES,
    Compare,
    CompareFields,
    Condition,
    Exists,
    Field,
    InSegment,
    Ref,
    walk,
)
from cjo.errors import Problem
from cjo.model.content import ContentItem, Variant
from cjo.model.definitions import Definitions
from cjo.model.journey import ExitCriterion, Journey, ReentryMode, ReentryPolicy
from cjo.model.segments import Segment
from cjo.model.steps import (
    Branch,
    Send,
    Split,
    Step,
    UpdateProfile,
    Wait,
    WaitForEvent,
    successors,
)
from cjo.model.triggers import EventTrigger

__all__ = ["validate_definitions"]

# What each kind of condition can read. Segments and audiences are evaluated with no event at
# hand; triggers see one event; goals, exit criteria and waits see one event and the
# enrollment's context (so a keyed instance can match its own key); a Branch sees the context.
PROFILE_ONLY: tuple[str, ...] = ("profile",)
PROFILE_AND_EVENT: tuple[str, ...] = ("profile", "event")
ALL_SCOPES: tuple[str, ...] = SCOPES

# Steps that run straight through to the next one. A loop made only of these never yields.
_NON_WAITING = (Send, Branch, Split, UpdateProfile)

_ZERO = timedelta(0)


def validate_definitions(
    definitions: Definitions, *, channels: Collection[str] | None = None
) -> list[Problem]:
    """Every problem in ``definitions`` (an empty list when they are valid).

    ``channels`` names the channels registered with the engine; when given, every Send step
    must use one of them.
    """
    segment_ids = {s.id for s in definitions.segments}
    content = _content_by_id(definitions.content)
    problems: list[Problem] = []
    problems += _duplicates(definitions)
    for journey in definitions.journeys:
        problems += _check_journey(journey, segment_ids, content, channels)
    for segment in definitions.segments:
        problems += _check_segment(segment, segment_ids)
    problems += _segment_cycles(definitions.segments)
    environment = liquid.Environment()
    for item in definitions.content:
        problems += _check_content(item, environment)
    problems += _check_tags(definitions)
    return problems


# --- locations ---------------------------------------------------------------------------------


def _journey_location(journey: Journey) -> str:
    return f"journey {journey.id!r} v{journey.version}"


def _step_location(journey: Journey, step_id: str) -> str:
    return f"{_journey_location(journey)} / step {step_id!r}"


def _segment_location(segment_id: str) -> str:
    return f"segment {segment_id!r}"


def _content_location(content_id: str) -> str:
    return f"content {content_id!r}"


def _variant_location(content_id: str, variant: Variant) -> str:
    locale = f" ({variant.locale})" if variant.locale else ""
    return f"{_content_location(content_id)} / variant {variant.channel}{locale}"


# --- small helpers -----------------------------------------------------------------------------


def _describe(duration: timedelta) -> str:
    """``timedelta(days=1, hours=12)`` -> ``"1d12h"``: the notation definitions are written in."""
    if duration < _ZERO:
        return f"-{_describe(-duration)}"
    seconds = duration.total_seconds()
    parts: list[str] = []
    rest = int(seconds)
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "m")):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    secs = rest + (seconds - int(seconds))
    if secs or not parts:
        parts.append(f"{secs:g}s")
    return "".join(parts)


def _positive(duration: timedelta | None) -> TypeGuard[timedelta]:
    return duration is not None and duration > _ZERO


def _content_by_id(items: Iterable[ContentItem]) -> dict[str, list[ContentItem]]:
    # A list per id: duplicates are reported on their own, and must not hide a Send's variant.
    out: dict[str, list[ContentItem]] = {}
    for item in items:
        out.setdefault(item.id, []).append(item)
    return out


def _reachable(edges: Mapping[str, Sequence[str]], starts: Iterable[str]) -> set[str]:
    """Every node reachable from ``starts`` (which are included) along ``edges``."""
    seen: set[str] = set()
    queue = deque(starts)
    while queue:
        node = queue.popleft()
        if node in seen:
            continue
        seen.add(node)
        queue.extend(edges.get(node, ()))
    return seen


def _loops(edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Groups of nodes that can all reach each other through a cycle, in the order of ``edges``.

    Quadratic, which is fine: journeys have tens of steps and definitions tens of segments, and
    this reads far more plainly than Tarjan's algorithm.
    """
    onward = {node: _reachable(edges, targets) for node, targets in edges.items()}
    grouped: set[str] = set()
    groups: list[list[str]] = []
    for node in edges:
        if node in grouped or node not in onward[node]:
            continue
        group = [other for other in edges if other in onward[node] and node in onward[other]]
        grouped.update(group)
        groups.append(group)
    return groups


def _cycle_from(start: str, edges: Mapping[str, Sequence[str]]) -> list[str]:
    """The shortest path ``start -> ... -> start`` (start must be on a cycle)."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in edges.get(node, ()):
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if target not in parent:
                parent[target] = node
                queue.append(target)
    return [start]


def _arrow(path: Sequence[str]) -> str:
    return " -> ".join(repr(node) for node in path)


# --- duplicates --------------------------------------------------------------------------------


def _duplicates(definitions: Definitions) -> list[Problem]:
    problems: list[Problem] = []
    journeys = Counter((j.id, j.version) for j in definitions.journeys)
    for (journey_id, version), count in journeys.items():
        if count > 1:
            problems.append(Problem(
                f"journey {journey_id!r} v{version}",
                f"defined {count} times; each (id, version) must be unique",
            ))
    for what, location, ids in (
        ("segment", _segment_location, [s.id for s in definitions.segments]),
        ("content", _content_location, [c.id for c in definitions.content]),
    ):
        for item_id, count in Counter(ids).items():
            if count > 1:
                problems.append(Problem(
                    location(item_id), f"defined {count} times; {what} ids must be unique"
                ))
    return problems


# --- conditions --------------------------------------------------------------------------------


def _check_condition(
    condition: Condition,
    location: str,
    *,
    used_in: str,
    scopes: tuple[str, ...],
    segment_ids: Collection[str],
) -> list[Problem]:
    """Problems with every node of a condition tree. ``used_in`` names the place for messages
    ("an audience"); ``scopes`` lists what values are available there."""
    problems: list[Problem] = []
    for node in walk(condition):
        if not isinstance(node, Condition):
            # Typically a bare builder, e.g. attr("vip") instead of attr("vip") == True.
            problems.append(Problem(location, f"not a condition: {node!r}"))
        elif isinstance(node, InSegment):
            if node.segment not in segment_ids:
                problems.append(Problem(location, f"segment {node.segment!r} does not exist"))
        elif isinstance(node, CompareFields):
            problems += _check_ref(node.left, location, used_in=used_in, scopes=scopes)
            problems += _check_ref(node.right, location, used_in=used_in, scopes=scopes)
            if node.op not in OPS:
                problems.append(Problem(location, f"unknown operator {node.op!r}"))
        elif isinstance(node, Compare | Exists):
            problems += _check_ref(node.ref, location, used_in=used_in, scopes=scopes)
            if isinstance(node, Compare):
                problems += _check_compare(node, location)
    return problems


def _check_ref(ref: Ref, location: str, *, used_in: str, scopes: tuple[str, ...]) -> list[Problem]:
    if ref.scope not in SCOPES:
        return [Problem(location, f"unknown scope {ref.scope!r} in {ref}; expected one of "
                                  f"{', '.join(SCOPES)}")]
    if ref.scope not in scopes:
        return [Problem(location, f"{ref} cannot be used in {used_in}: only "
                                  f"{' and '.join(scopes)} values are available there")]
    if not ref.path:
        return [Problem(location, f"a reference to {ref.scope} needs a path")]
    return []


def _check_compare(node: Compare, location: str) -> list[Problem]:
    if node.op not in OPS:
        return [Problem(location, f"unknown operator {node.op!r} on {node.ref}; expected one of "
                                  f"{', '.join(OPS)}")]
    if isinstance(node.value, Field | Ref | Condition):
        return [Problem(location, f"{node.ref} is compared with {node.value!r}, which is not a "
                                  "value; to compare two fields, build the condition with the "
                                  "builder (prop('a') == ctx('a')) or use CompareFields")]
    if node.op in ("in", "not_in") and not isinstance(node.value, list | tuple):
        return [Problem(location, f"operator {node.op!r} on {node.ref} needs a list of values, "
                                  f"got {node.value!r}")]
    return []


# --- journeys ----------------------------------------------------------------------------------


def _check_journey(
    journey: Journey,
    segment_ids: Collection[str],
    content: Mapping[str, list[ContentItem]],
    channels: Collection[str] | None,
) -> list[Problem]:
    problems = _check_journey_fields(journey)
    problems += _check_reentry(journey.reentry, f"{_journey_location(journey)} / reentry")
    problems += _check_journey_conditions(journey, segment_ids)
    problems += _check_graph(journey)
    for step_id, step in journey.steps.items():
        problems += _check_step(
            journey, step_id, step, segment_ids=segment_ids, content=content, channels=channels
        )
    return problems


def _check_journey_fields(journey: Journey) -> list[Problem]:
    where = _journey_location(journey)
    problems: list[Problem] = []
    if not journey.id:
        problems.append(Problem(where, "journey id must not be empty"))
    if journey.version < 1:
        problems.append(Problem(where, f"version must be 1 or more, got {journey.version}"))
    if journey.max_lifetime is not None and not _positive(journey.max_lifetime):
        problems.append(Problem(
            where, f"max_lifetime must be positive, got {_describe(journey.max_lifetime)}"
        ))
    if journey.goal is not None and journey.goal.within is not None and not _positive(
        journey.goal.within
    ):
        problems.append(Problem(
            f"{where} / goal", f"within must be positive, got {_describe(journey.goal.within)}"
        ))
    for criterion in journey.exit_criteria:
        if criterion.event is None and criterion.where is None:
            problems.append(Problem(
                _exit_location(journey, criterion), "needs an event, a where condition, or both"
            ))
    if journey.timezone is not None and not _is_time_zone(journey.timezone):
        problems.append(Problem(
            where, f"timezone {journey.timezone!r} is not a known IANA time zone"
        ))
    return problems


def _exit_location(journey: Journey, criterion: ExitCriterion) -> str:
    return f"{_journey_location(journey)} / exit criterion {criterion.name!r}"


def _is_time_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):  # ValueError: malformed key like "../x"
        return False
    return True


def _check_reentry(policy: ReentryPolicy, where: str) -> list[Problem]:
    modes = get_args(ReentryMode)
    if policy.mode not in modes:
        return [Problem(where, f"unknown mode {policy.mode!r}; expected one of "
                               f"{', '.join(modes)}")]
    problems: list[Problem] = []
    # Each parameter belongs to exactly one mode; setting it elsewhere is a silent no-op, which
    # almost always means the author picked the wrong mode.
    owners = {"cooldown": "after_cooldown", "limit": "at_most", "per": "at_most"}
    for name, owner in owners.items():
        if owner != policy.mode and getattr(policy, name) is not None:
            problems.append(Problem(
                where, f"{name} only applies to mode {owner!r}, not {policy.mode!r}"
            ))
    if policy.mode == "after_cooldown" and not _positive(policy.cooldown):
        problems.append(Problem(where, "mode 'after_cooldown' needs a positive cooldown"))
    if policy.mode == "at_most":
        if policy.limit is None or policy.limit < 1:
            problems.append(Problem(where, "mode 'at_most' needs a limit of 1 or more"))
        if not _positive(policy.per):
            problems.append(Problem(where, "mode 'at_most' needs a positive per window"))
    return problems


def _check_journey_conditions(journey: Journey, segment_ids: Collection[str]) -> list[Problem]:
    where = _journey_location(journey)
    checks: list[tuple[Condition, str, str, tuple[str, ...]]] = []
    if isinstance(journey.trigger, EventTrigger) and journey.trigger.where is not None:
        checks.append((journey.trigger.where, f"{where} / trigger", "a trigger",
                       PROFILE_AND_EVENT))
    if journey.audience is not None:
        checks.append((journey.audience, f"{where} / audience", "an audience", PROFILE_ONLY))
    for criterion in journey.exit_criteria:
        if criterion.where is not None:
            checks.append((criterion.where, _exit_location(journey, criterion),
                           "an exit criterion", ALL_SCOPES))
    if journey.goal is not None and journey.goal.where is not None:
        checks.append((journey.goal.where, f"{where} / goal", "a goal", ALL_SCOPES))
    problems: list[Problem] = []
    for condition, location, used_in, scopes in checks:
        problems += _check_condition(
            condition, location, used_in=used_in, scopes=scopes, segment_ids=segment_ids
        )
    return problems


def _references(step: Step) -> list[tuple[str, str | None]]:
    """Each step id a step refers to, labelled with the field it comes from."""
    if isinstance(step, Send | Wait | UpdateProfile):
        return [("next", step.next)]
    if isinstance(step, WaitForEvent):
        return [("on_event", step.on_event), ("on_timeout", step.on_timeout)]
    if isinstance(step, Branch):
        cases: list[tuple[str, str | None]] = [
            (f"case {i}", case.next) for i, case in enumerate(step.cases, 1)
        ]
        return [*cases, ("default", step.default)]
    if isinstance(step, Split):
        return [(f"path {path.name!r}", path.next) for path in step.paths]
    return []


def _check_graph(journey: Journey) -> list[Problem]:
    """Entry, dangling references, unreachable steps and loops that never wait."""
    where = _journey_location(journey)
    steps = journey.steps
    problems: list[Problem] = []
    for step_id, step in steps.items():
        for label, target in _references(step):
            if target is not None and target not in steps:
                problems.append(Problem(
                    _step_location(journey, step_id),
                    f"{label} refers to missing step {target!r}",
                ))
    edges = {sid: [t for t in successors(step) if t in steps] for sid, step in steps.items()}
    if journey.entry not in steps:
        problems.append(Problem(where, f"entry step {journey.entry!r} does not exist"))
    else:
        # Without a valid entry every step would be "unreachable": one problem says it better.
        reached = _reachable(edges, [journey.entry])
        problems += [
            Problem(_step_location(journey, sid),
                    f"unreachable: no path leads here from the entry step {journey.entry!r}")
            for sid in steps
            if sid not in reached
        ]
    busy = {
        sid: [t for t in targets if isinstance(steps[t], _NON_WAITING)]
        for sid, targets in edges.items()
        if isinstance(steps[sid], _NON_WAITING)
    }
    for group in _loops(busy):
        problems.append(Problem(
            _step_location(journey, group[0]),
            f"loop without a wait: {_arrow(_cycle_from(group[0], busy))} would repeat forever; "
            "add a Wait or WaitForEvent to it",
        ))
    return problems


def _check_step(
    journey: Journey,
    step_id: str,
    step: Step,
    *,
    segment_ids: Collection[str],
    content: Mapping[str, list[ContentItem]],
    channels: Collection[str] | None,
) -> list[Problem]:
    where = _step_location(journey, step_id)
    problems: list[Problem] = []
    if not step_id:
        problems.append(Problem(where, "step id must not be empty"))
    if isinstance(step, Send):
        problems += _check_send(step, where, content, channels)
    elif isinstance(step, Wait):
        problems += _check_duration(step.duration, "duration", where, journey.max_lifetime)
    elif isinstance(step, WaitForEvent):
        problems += _check_duration(step.timeout, "timeout", where, journey.max_lifetime)
        if step.where is not None:
            problems += _check_condition(
                step.where, where, used_in="a wait for an event", scopes=ALL_SCOPES,
                segment_ids=segment_ids,
            )
    elif isinstance(step, Branch):
        if not step.cases:
            problems.append(Problem(where, "a branch needs at least one case"))
        for i, case in enumerate(step.cases, 1):
            problems += _check_condition(
                case.condition, f"{where} / case {i}", used_in="a branch", scopes=ALL_SCOPES,
                segment_ids=segment_ids,
            )
    elif isinstance(step, Split):
        problems += _check_split(step, where)
    return problems


def _check_send(
    step: Send,
    where: str,
    content: Mapping[str, list[ContentItem]],
    channels: Collection[str] | None,
) -> list[Problem]:
    problems: list[Problem] = []
    if channels is not None and step.channel not in channels:
        known = ", ".join(sorted(channels)) or "none"
        problems.append(Problem(
            where, f"channel {step.channel!r} is not registered (registered: {known})"
        ))
    items = content.get(step.content)
    if items is None:
        problems.append(Problem(where, f"content {step.content!r} does not exist"))
    elif not any(v.channel == step.channel for item in items for v in item.variants):
        problems.append(Problem(
            where, f"content {step.content!r} has no variant for channel {step.channel!r}"
        ))
    return problems


def _check_duration(
    duration: timedelta, name: str, where: str, max_lifetime: timedelta | None
) -> list[Problem]:
    if not _positive(duration):
        return [Problem(where, f"{name} must be positive, got {_describe(duration)}")]
    if _positive(max_lifetime) and duration > max_lifetime:
        return [Problem(where, f"{name} {_describe(duration)} is longer than the journey's "
                               f"max_lifetime {_describe(max_lifetime)}, so it could never end")]
    return []


def _check_split(step: Split, where: str) -> list[Problem]:
    problems: list[Problem] = []
    if not step.paths:
        problems.append(Problem(where, "a split needs at least one path"))
    for path in step.paths:
        if not path.weight > 0:  # written this way round so that NaN is rejected too
            problems.append(Problem(
                where, f"path {path.name!r} has weight {path.weight}; weights must be positive"
            ))
    for name, count in Counter(p.name for p in step.paths).items():
        if count > 1:
            problems.append(Problem(
                where, f"path name {name!r} is used {count} times; path names must be unique"
            ))
    return problems


# --- segments ----------------------------------------------------------------------------------


def _check_segment(segment: Segment, segment_ids: Collection[str]) -> list[Problem]:
    where = _segment_location(segment.id)
    problems: list[Problem] = []
    if not segment.id:
        problems.append(Problem(where, "segment id must not be empty"))
    problems += _check_condition(
        segment.condition, where, used_in="a segment", scopes=PROFILE_ONLY,
        segment_ids=segment_ids,
    )
    return problems


def _segment_cycles(segments: Sequence[Segment]) -> list[Problem]:
    """A segment defined in terms of itself has no membership to compute."""
    known = {s.id for s in segments}
    edges: dict[str, list[str]] = {}
    for segment in segments:
        targets = edges.setdefault(segment.id, [])
        for node in walk(segment.condition):
            if isinstance(node, InSegment) and node.segment in known:
                targets.append(node.segment)
    return [
        Problem(_segment_location(segment_id),
                f"refers to itself through in_segment: {_arrow(_cycle_from(segment_id, edges))}")
        for group in _loops(edges)
        for segment_id in group
    ]


# --- content -----------------------------------------------------------------------------------


def _check_content(item: ContentItem, environment: liquid.Environment) -> list[Problem]:
    where = _content_location(item.id)
    problems: list[Problem] = []
    if not item.id:
        problems.append(Problem(where, "content id must not be empty"))
    if not item.variants:
        problems.append(Problem(where, "has no variants"))
    for (channel, locale), count in Counter((v.channel, v.locale) for v in item.variants).items():
        if count > 1:
            variant = Variant(channel=channel, fields={}, locale=locale)
            problems.append(Problem(
                _variant_location(item.id, variant),
                f"defined {count} times for the same channel and locale",
            ))
    for variant in item.variants:
        for field, source in variant.fields.items():
            error = _liquid_error(environment, source)
            if error is not None:
                problems.append(Problem(
                    _variant_location(item.id, variant),
                    f"field {field!r} is not a valid Liquid template: {error}",
                ))
    return problems


def _liquid_error(environment: liquid.Environment, source: str) -> str | None:
    try:
        environment.from_string(source)
    except LiquidError as exc:
        # str(exc) carries a multi-line source excerpt; the bare message fits on one line.
        message = getattr(exc, "message", None) or str(exc).splitlines()[0]
        return str(message)
    return None


# --- tags --------------------------------------------------------------------------------------


def _tagged_places(definitions: Definitions) -> Iterator[tuple[str, tuple[str, ...]]]:
    for journey in definitions.journeys:
        yield _journey_location(journey), journey.tags
        for step_id, step in journey.steps.items():
            yield _step_location(journey, step_id), step.tags
    for segment in definitions.segments:
        yield _segment_location(segment.id), segment.tags
    for item in definitions.content:
        yield _content_location(item.id), item.tags


def _check_tags(definitions: Definitions) -> list[Problem]:
    taxonomy = definitions.taxonomy
    allowed = taxonomy.tags() if taxonomy is not None else frozenset[str]()
    problems: list[Problem] = []
    for location, tags in _tagged_places(definitions):
        for tag in tags:
            if taxonomy is None:
                problems.append(Problem(location, f"tag {tag!r} used but no taxonomy is published"))
            elif tag not in allowed:
                problems.append(Problem(location, f"tag {tag!r} is not in the taxonomy"))
    return problems
