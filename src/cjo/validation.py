"""Validation: every problem in a set of definitions, each with a precise location.

The converter in :mod:`cjo.serialization` catches what is wrong with the *shape* of the data
(a missing field, a bad duration). This module catches what is wrong with its *meaning*: a step
that points nowhere, a segment that does not exist, a template that does not parse, a loop that
would never stop, a definition over one of the limits in :class:`cjo.limits.Limits`. It never
stops at the first problem, because fixing definitions one error per publish is miserable: nor
at the first kind of problem. A field of the wrong type (``cjo.model.shapes``) is reported at its
place, and the definition holding it is left out of the checks of meaning while every other one
goes through them in the same pass.

It runs in time linear in the size of the definitions (graphs are walked once, conditions
iteratively), so an oversized or hostile definition is refused quickly rather than slowly.

Locations read like a path a person would follow::

    journey 'cart' v1 / step 'email'
    segment 'vip'
    content 'welcome' / variant email
"""

from __future__ import annotations

import copy
import reprlib
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any, Final, TypeGuard, TypeVar, get_args

import attrs
from liquid.exceptions import LiquidSyntaxError, LiquidTypeError, UndefinedError

from cjo.conditions import (
    OPS,
    SCOPES,
    TIME_BASES,
    TIME_OPS,
    And,
    Compare,
    CompareFields,
    CompareTime,
    Condition,
    Exists,
    Field,
    InSegment,
    Not,
    Or,
    Ref,
    walk,
)
from cjo.content.channels import channel_type_of, field_problems, output_problem
from cjo.content.checks import (
    block_problems,
    blocks_used,
    reads_data,
    sample_data,
    unknown_filters,
    unknown_variables,
)
from cjo.content.filters import FilterInputError
from cjo.content.render import TEMPLATE_ROOTS, Renderer
from cjo.delivery.validation import check_policies
from cjo.errors import InvalidEventError, Problem, RenderError, RenderLimitError, UsageError
from cjo.limits import DEFAULT_LIMITS, MAX_VERSION, Limits
from cjo.model.content import LOCALE_PROBLEM, ContentItem, Variant, normal_locale
from cjo.model.definitions import LISTED, Definitions
from cjo.model.events import (
    PROFILE_FIELD_ATTRIBUTES,
    check_id,
    check_value,
    check_values,
    finite_number,
    not_read_here,
    not_set_here,
    text_problem,
)
from cjo.model.governance import CONTROL_DETAIL, VersionChange
from cjo.model.journey import ExitCriterion, Journey, ReentryMode, ReentryPolicy
from cjo.model.offers import Offer
from cjo.model.segments import Segment
from cjo.model.shapes import Origin, shape_problems
from cjo.model.steps import Action, Send, Step
from cjo.runtime.kinds import step_kind, trigger_kind
from cjo.runtime.kinds.waiting import RECEIVED
from cjo.segments.history import (
    HISTORY_CONDITION_TYPES,
    Bucket,
    ListHas,
    check_node,
    stream_of,
)
from cjo.segments.rules import ProfileRule
from cjo.timezones import is_zone

__all__ = ["channels_named", "named_in_steps", "validate_definitions"]

# What each kind of condition can read. Segments and audiences are evaluated with no event at
# hand; triggers see one event; goals, exit criteria and waits see one event and the
# enrollment's context (so a keyed instance can match its own key); a Branch sees the context.
PROFILE_ONLY: tuple[str, ...] = ("profile",)
PROFILE_AND_EVENT: tuple[str, ...] = ("profile", "event")
ALL_SCOPES: tuple[str, ...] = SCOPES


_ZERO = timedelta(0)

# Ids quoted in locations are cut short: a hostile megabyte id must not make every message huge.
_short = reprlib.Repr()
_short.maxstring = 80
_short.maxother = 80


def _q(value: object) -> str:
    """``repr(value)``, cut short when long."""
    if (type(value) is str and len(value) <= 80) or type(value) is int:
        return repr(value)  # the common cases, without reprlib's overhead
    return _short.repr(value)


class ContentChecks:
    """The problems found in content items, kept between validations of one engine: an item
    checked again unchanged, with the same blocks, limits and channel types, is not parsed and
    rendered again (rendering against a sample is most of a publish's work: a publish of one
    journey must not re-render a thousand unchanged items). Kept items are private copies, so
    a host editing its objects after a publish never makes a stale entry look current."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: dict[str, tuple[ContentItem, tuple[Any, ...], list[Problem]]] = {}

    def check(
        self, item: ContentItem, context: tuple[Any, ...], run: Callable[[], list[Problem]]
    ) -> list[Problem]:
        kept = self._items.get(item.id) if type(item.id) is str else None
        try:
            if kept is not None and kept[1] == context and kept[0] == item:
                return list(kept[2])
        except Exception:  # a value that cannot be compared: check the item again
            pass
        problems = run()
        if type(item.id) is str:
            try:
                self._items[item.id] = (copy.deepcopy(item), context, list(problems))
            except Exception:  # a value that cannot be copied: not kept
                self._items.pop(item.id, None)
        return problems


def validate_definitions(
    definitions: Definitions,
    *,
    channels: Collection[str] | None = None,
    actions: Collection[str] | None = None,
    limits: Limits | None = None,
    renderer: Renderer | None = None,
    channel_types: Mapping[str, str] | None = None,
    scorers: Collection[str] | None = None,
    unread: Mapping[str, Sequence[Any] | None] | None = None,
    content_checks: ContentChecks | None = None,
) -> list[Problem]:
    """Every problem in ``definitions`` (an empty list when they are valid).

    ``channels`` names the channels registered with the engine; when given, every Send step
    must use one of them (and ``actions`` likewise for Action steps). ``limits`` are the
    limits to check against (the defaults of :class:`~cjo.limits.Limits` when None).
    ``renderer`` renders every template against a sample (the item's ``sample``, else one
    derived from what its templates read) and refuses those that fail; pass the engine's own so
    parsed templates are reused (a new one with ``limits`` and the definitions' blocks when
    None or when its blocks differ). ``channel_types`` maps registered channel names to channel
    types (``cjo.content.channels``); ``scorers`` names the host's offer scorers (when given,
    every offer's scorer must be one). ``unread`` holds the data of definitions that could not
    be read, by field (``cjo.serialization.load_definitions_in_parts``; None: the field as a
    whole): they are not in ``definitions``, and are treated as left out for their shape.
    ``content_checks`` keeps what content items were found to have between calls (the engine
    passes its own), so that unchanged items are not rendered again.

    Problems come in a stable order: first every field of the wrong type (``Wait(3600)``,
    ``steps=[...]``), at its place, in the order the definitions are written; then the problems
    of meaning, check by check. A definition listed in ``definitions`` (a journey, a segment, a
    content item, an offer, the taxonomy...) holding a value of the wrong type anywhere inside
    is left out of the checks of meaning, which read the fields as declared, until its shape is
    fixed; every other definition is checked in the same pass. What refers to a definition left
    out is not refused for it: such a definition exists under its id, but nothing else about it
    is relied on (which channels a content item has variants for, what a block renders, which
    tags the taxonomy holds). One whose id is not text, or a list of definitions holding
    something else, may be what any reference to its kind means: none is refused until it is
    fixed. Duplicate ids are counted among every definition whose id is text.
    """
    limits = limits if limits is not None else DEFAULT_LIMITS
    if not isinstance(limits, Limits):
        raise UsageError(f"limits must be a cjo.Limits, got {type(limits).__name__}")
    if not isinstance(definitions, Definitions):
        return [Problem("definitions", f"expected a cjo.Definitions, got "
                                       f"{type(definitions).__name__}")]
    # A condition too large is refused whole (``_check_condition``) and never walked.
    mismatches = shape_problems(
        definitions, _element_location,
        opaque=lambda condition: _condition_size_problem(condition, limits) is not None,
    )
    problems = [Problem(" / ".join(m.parts) or "definitions", m.message) for m in mismatches]
    sound, listed, known = _partition(definitions, {m.origin for m in mismatches}, unread or {})
    blocks = {b.id: b.source for b in sound.blocks}
    if renderer is None or dict(renderer.blocks) != blocks:
        renderer = Renderer(limits, blocks)
    channel_types = channel_types if channel_types is not None else {}
    offers = {o.id: o for o in sound.offers}
    problems += duplicate_ids(listed)
    checker = _Checker(known, sound.content, channels, limits, actions, offers)

    def renders(item: ContentItem) -> bool:
        # A left-out block renders nothing known: what includes it is not rendered.
        return not known.blocks.partial or not any(
            known.blocks.unchecked(b) for b in blocks_used(item, blocks)
        )

    # A retired version decides nothing any more: what it names may have been withdrawn since
    # (it stays in ``sound`` for the checks of the version changes and retirements).
    gone = sound.retired_versions()
    live = attrs.evolve(sound, journeys=tuple(
        j for j in sound.journeys if (j.id, j.version) not in gone
    )) if gone else sound
    for journey in live.journeys:
        problems += _check_journey(journey, checker)
        problems += _check_action_params(journey, renderer, renders)
    for segment in sound.segments:
        problems += _check_segment(segment, known.segments, limits)
    problems += _segment_cycles(sound.segments, limits)
    problems += _segment_nesting(sound.segments, limits)
    problems += _check_rules(sound.profile_rules, known.segments, limits)
    context = (limits, tuple(blocks.items()), tuple(channel_types.items()))
    for item in sound.content:
        render = renders(item)

        def run(item: ContentItem = item, render: bool = render) -> list[Problem]:
            return _check_content(item, renderer, limits, channel_types, render=render)

        problems += (run() if content_checks is None
                     else content_checks.check(item, (*context, render), run))
    problems += [Problem(where, message) for where, message in block_problems(
        sound.blocks, sound.content, known=known.blocks
    )]
    for offer in sound.offers:
        problems += _check_offer(offer, known.content, known.segments, scorers, limits)
    problems += _check_tags(live, known.tags)
    problems += _check_governance(sound, known)
    problems += check_policies(live, channels, limits, topics=known.topics,
                               journey_ids=known.journeys, tags=known.tags)
    return problems


# --- definitions left out for their shape ------------------------------------------------------

K = TypeVar("K")


class _Names(Collection[K]):
    """The ids that references from one definition to another may name, of one kind: those of
    the definitions checked and those of the definitions left out for their shape (which exist,
    but of which nothing else is relied on). ``anything``: a definition left out has no id to go
    by, so any id may be its (iterating gives the ids known)."""

    __slots__ = ("_all", "_left_out", "anything")

    def __init__(
        self, checked: Iterable[K] = (), left_out: Iterable[K] = (), *, anything: bool = False
    ) -> None:
        self._left_out = frozenset(left_out)
        self._all = frozenset(checked) | self._left_out
        self.anything = anything

    def __contains__(self, key: object) -> bool:
        try:
            return self.anything or key in self._all
        except TypeError:  # a value that cannot be an id (a list) names nothing
            return False

    def __iter__(self) -> Iterator[K]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    @property
    def partial(self) -> bool:
        """Whether any definition of this kind was left out for its shape."""
        return self.anything or bool(self._left_out)

    def unchecked(self, key: object) -> bool:
        """Whether ``key`` may name a definition left out for its shape."""
        try:
            return self.anything or key in self._left_out
        except TypeError:
            return False


@attrs.frozen
class _Known:
    """What definitions may name of one another, for the checks that span definitions."""

    journeys: _Names[str]
    #: Journeys by (id, version).
    versions: _Names[tuple[str, int]]
    segments: _Names[str]
    content: _Names[str]
    offers: _Names[str]
    topics: _Names[str]
    blocks: _Names[str]
    #: The tags of the taxonomy (None: no taxonomy is published; every tag when the taxonomy
    #: was left out for its shape).
    tags: Collection[str] | None


#: The class of the elements of each field of ``Definitions`` that lists definitions.
def _partition(
    definitions: Definitions, origins: Collection[Origin],
    unread: Mapping[str, Sequence[Any] | None],
) -> tuple[Definitions, Definitions, _Known]:
    """``definitions`` without what holds a value of the wrong type (``origins``, from the shape
    check): (the definitions of sound shape, which the checks of meaning read; every definition
    of its field's class whatever it holds, for the duplicate ids; what references may name,
    counting the definitions left out and those ``unread``)."""
    left_out: dict[str, set[object]] = {}
    for name, key in origins:
        left_out.setdefault(name, set()).add(key)
    sound: dict[str, Any] = {}
    listed: dict[str, Any] = {}
    # The id and version of each definition left out or unread, by field.
    missing: dict[str, list[tuple[str | None, int | None]]] = {}
    for field in attrs.fields(Definitions):
        name, keys, data = field.name, left_out.get(field.name, set()), unread.get(field.name, ())
        if data is None or None in keys:  # the field's value as a whole: nothing in it is read
            missing[name] = [(None, None)]
            if keys:
                sound[name] = listed[name] = field.default
            continue
        missing[name] = [_id_and_version(d) for d in data]
        if not keys:
            continue
        value = getattr(definitions, name)
        cls = LISTED[name]
        sound[name] = tuple(e for i, e in enumerate(value) if i not in keys)
        listed[name] = tuple(e for i, e in enumerate(value) if i not in keys or isinstance(e, cls))
        missing[name] += [
            _id_and_version(e) if isinstance(e, cls) else (None, None)
            for i, e in enumerate(value) if i in keys
        ]
    checked = attrs.evolve(definitions, **sound)

    def names(field: str) -> _Names[str]:
        # A definition left out without an id to go by may be the one any reference means.
        ids = [i for i, _ in missing[field]]
        return _Names((d.id for d in getattr(checked, field)), (i for i in ids if i is not None),
                      anything=None in ids)

    pairs = [None if i is None or v is None else (i, v) for i, v in missing["journeys"]]
    taxonomy = checked.taxonomy
    tags: Collection[str] | None
    if missing["taxonomy"]:
        tags = _Names(anything=True)
    else:
        tags = taxonomy.tags() if taxonomy is not None else None
    known = _Known(
        journeys=names("journeys"),
        versions=_Names(((j.id, j.version) for j in checked.journeys),
                        (p for p in pairs if p is not None), anything=None in pairs),
        segments=names("segments"),
        content=names("content"),
        offers=names("offers"),
        topics=names("topics"),
        blocks=names("blocks"),
        tags=tags,
    )
    return checked, attrs.evolve(definitions, **listed), known


_DEFAULT_VERSION = attrs.fields(Journey).version.default


def _id_and_version(definition: object) -> tuple[str | None, int | None]:
    """The id of a definition, or of its data (a mapping), and its version (a journey's),
    each None when it is of the wrong type."""
    if isinstance(definition, Mapping):
        ident, version = definition.get("id"), definition.get("version", _DEFAULT_VERSION)
    else:
        ident, version = getattr(definition, "id", None), getattr(definition, "version", None)
    return (ident if isinstance(ident, str) else None), (version if _is_whole(version) else None)


# --- locations ---------------------------------------------------------------------------------


def _journey_location(journey: Journey) -> str:
    return f"journey {_q(journey.id)} v{_q(journey.version)}"


def _step_location(journey: Journey, step_id: str) -> str:
    return f"{_journey_location(journey)} / step {_q(step_id)}"


def _segment_location(segment_id: str) -> str:
    return f"segment {_q(segment_id)}"


def _content_location(content_id: str) -> str:
    return f"content {_q(content_id)}"


def _variant_location(content_id: str, variant: Variant) -> str:
    locale = f" ({_q(variant.locale)[1:-1]})" if variant.locale else ""
    channel = _q(variant.channel)[1:-1]
    name = f" [{_q(variant.name)[1:-1]}]" if variant.name is not None else ""
    return f"{_content_location(content_id)} / variant {channel}{locale}{name}"


def _running_location(journey_id: str) -> str:
    return f"journey {_q(journey_id)}: running customers"


def _offer_location(offer_id: str) -> str:
    return f"offer {_q(offer_id)}"


#: How an element of a collection field is named in locations, by the field's name.
_ELEMENT_NAMES = {
    "journeys": "journey", "segments": "segment", "content": "content", "variants": "variant",
    "steps": "step", "exit_criteria": "exit criterion", "cases": "case", "paths": "path",
    "offers": "offer", "topics": "topic", "caps": "cap", "quiet_hours": "quiet hours",
    "profile_rules": "profile rule", "blocks": "block", "updates": "update",
    "categories": "category", "children": "category", "paused": "pause",
    "version_changes": "version change",
}


def _element_location(field: str, key: object, element: object) -> str:
    """``journey 'cart' v1``, ``step 'email'``, ``exit criterion 'left'``, ``case 0``: an
    element by its id or name where it has one, else by its key or index."""
    if isinstance(element, Journey):
        return _journey_location(element)
    if isinstance(element, VersionChange) and isinstance(element.journey_id, str):
        # Given as publish(running={journey id: ...}): named as the checks of meaning name it.
        return _running_location(element.journey_id)
    word = _ELEMENT_NAMES.get(field, field)
    if isinstance(key, int):
        for name in ("id", "name", "channel"):
            ident = getattr(element, name, None)
            if isinstance(ident, str) and ident:
                return f"{word} {_q(ident)}"
    return f"{word} {_q(key)}"


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


def _components(edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """The strongly connected components of a graph, sinks first: a component comes after
    every component it can reach. Tarjan's algorithm, iterative, so time and stack are linear
    in the size of the graph whatever its shape. Targets must be keys of ``edges``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work: list[tuple[str, Iterator[str]]] = [(root, iter(edges[root]))]
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(edges[target])))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def _is_cycle(component: Sequence[str], edges: Mapping[str, Sequence[str]]) -> bool:
    return len(component) > 1 or component[0] in edges[component[0]]


def _loops(edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Groups of nodes that can all reach each other through a cycle, each group and its members
    in the order of ``edges``. Linear in the size of the graph."""
    return _loops_of(_components(edges), edges)


def _loops_of(
    components: Sequence[Sequence[str]], edges: Mapping[str, Sequence[str]]
) -> list[list[str]]:
    """The cyclic ``components``, each group and its members in the order of ``edges``."""
    order = {node: i for i, node in enumerate(edges)}
    groups = [
        sorted(component, key=order.__getitem__)
        for component in components
        if _is_cycle(component, edges)
    ]
    return sorted(groups, key=lambda group: order[group[0]])


def _cycle_from(
    start: str, edges: Mapping[str, Sequence[str]], group: Collection[str]
) -> list[str]:
    """The shortest path ``start -> ... -> start`` (start must be on a cycle). The search stays
    inside ``group``, the strongly connected component of ``start``: every cycle through it
    does, so the work is bounded by the component, not the graph."""
    members = set(group)
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
            if target not in parent and target in members:
                parent[target] = node
                queue.append(target)
    return [start]


def _arrow(path: Sequence[str]) -> str:
    return " -> ".join(_q(node) for node in path)


def _id_problem(value: object, what: str) -> str | None:
    """Why ``value`` cannot be an id (the rules of event ids: 1 to 256 characters, not only
    whitespace, no NUL, no lone surrogate), or None. Ids become storage keys and index entries."""
    if isinstance(value, str) and value == "":
        return f"{what} must not be empty"
    try:
        check_id(value, what)
    except InvalidEventError as exc:
        return str(exc)
    return None


def _text_problems(texts: Iterable[tuple[str, object]], where: str) -> list[Problem]:
    """Free text (names, reasons, templates) may hold anything a storage can keep: any string
    without NUL or lone surrogates."""
    problems: list[Problem] = []
    for what, text in texts:
        if not isinstance(text, str):
            continue
        problem = text_problem(text)
        if problem is not None:
            problems.append(Problem(where, f"{what} {problem}"))
    return problems


def _reason_problems(value: object, what: str, where: str) -> list[Problem]:
    """A reason an enrollment ends with is free text, but not blank: it is all the log says of
    why (``Engine.remove_from_journey`` refuses a blank one likewise)."""
    if isinstance(value, str) and (not value or value.isspace()):
        return [Problem(where, f"{what} must not be empty or only whitespace, got {value!r}")]
    return _text_problems([(what, value)], where)


#: Journey priorities stay within this (a plain, portable whole number).
MAX_PRIORITY = 1_000_000


def _is_whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _in_range(value: object, low: int, high: int) -> bool:
    return _is_whole(value) and low <= value <= high


def _check_span(
    duration: timedelta | None, name: str, where: str, limits: Limits, *, short: bool = False
) -> list[Problem]:
    """A duration that must be positive (when set) and at most ``limits.max_duration``; unless
    ``short``, at least ``limits.min_wait`` too."""
    if duration is None:
        return []
    if not _positive(duration):
        return [Problem(where, f"{name} must be positive, got {_describe(duration)}")]
    if not short and duration < limits.min_wait:
        # In JSON a bare number is seconds: "within": 14 meant as days is 14 seconds, and a
        # window that short only ever holds what the same instant brings.
        return [Problem(where, f"{name} {_describe(duration)} is shorter than the minimum of "
                               f"{_describe(limits.min_wait)} (a bare number is seconds: write "
                               "'14d' for days)")]
    if duration > limits.max_duration:
        return [Problem(where, f"{name} {_describe(duration)} is longer than the limit of "
                               f"{_describe(limits.max_duration)}")]
    return []


# --- duplicates --------------------------------------------------------------------------------


def duplicate_ids(definitions: Definitions) -> list[Problem]:
    """Every id ``definitions`` names twice (journeys by id and version): what a whole set
    must not hold, and what one ``publish`` call must not either (merging by id would keep
    only the last one silently). Only ids that are text are compared (and versions that are
    whole numbers): any other is of the wrong type, which the shape check reports."""
    problems: list[Problem] = []
    journeys = Counter((j.id, j.version) for j in definitions.journeys
                       if isinstance(j.id, str) and _is_whole(j.version))
    for (journey_id, version), count in journeys.items():
        if count > 1:
            problems.append(Problem(
                f"journey {journey_id!r} v{version}",
                f"defined {count} times; each (id, version) must be unique",
            ))
    for what, location, ids in (
        ("segment", _segment_location, [s.id for s in definitions.segments]),
        ("content", _content_location, [c.id for c in definitions.content]),
        ("block", lambda i: f"block {_q(i)}", [b.id for b in definitions.blocks]),
        ("offer", _offer_location, [o.id for o in definitions.offers]),
        ("profile rule", lambda i: f"profile rule {_q(i)}",
         [r.id for r in definitions.profile_rules]),
        ("topic", lambda i: f"topic {i!r}", [t.id for t in definitions.topics]),
        ("frequency cap", lambda i: f"frequency cap {i!r}", [c.id for c in definitions.caps]),
        ("quiet hours", lambda i: f"quiet hours {i!r}", [q.id for q in definitions.quiet_hours]),
    ):
        for item_id, count in Counter(i for i in ids if isinstance(i, str)).items():
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
    limits: Limits = DEFAULT_LIMITS,
) -> list[Problem]:
    """Problems with every node of a condition tree. ``used_in`` names the place for messages
    ("an audience"); ``scopes`` lists what values are available there."""
    too_big = _condition_size_problem(condition, limits)
    if too_big is not None:
        return [Problem(location, too_big)]  # its nodes are not worth walking one by one
    problems: list[Problem] = []
    for node in walk(condition):
        if not isinstance(node, Condition):
            # Typically a bare builder, e.g. attr("vip") instead of attr("vip") == True.
            problems.append(Problem(location, f"not a condition: {node!r}"))
        elif isinstance(node, InSegment):
            if "profile" not in scopes:
                problems.append(_customer_unknown(f"in_segment({node.segment!r})", location,
                                                  used_in))
            elif node.segment not in segment_ids:
                problems.append(Problem(location, f"segment {node.segment!r} does not exist"))
        elif isinstance(node, CompareFields):
            problems += _check_ref(node.left, location, used_in=used_in, scopes=scopes)
            problems += _check_ref(node.right, location, used_in=used_in, scopes=scopes)
            if node.op not in OPS:
                problems.append(Problem(location, f"unknown operator {node.op!r}"))
        elif isinstance(node, CompareTime):
            problems += _check_ref(node.ref, location, used_in=used_in, scopes=scopes)
            if node.base == "now" and "profile" not in scopes:
                problems.append(_customer_unknown("now()", location, used_in))
            problems += _check_compare_time(node, location, used_in, scopes, limits)
        elif isinstance(node, Compare | Exists):
            problems += _check_ref(node.ref, location, used_in=used_in, scopes=scopes)
            if isinstance(node, Compare):
                found = _check_compare(node, location)
                problems += found or _check_compare_value(node, location, limits)
        elif isinstance(node, HISTORY_CONDITION_TYPES):
            problems += _check_extended(node, location, used_in=used_in, scopes=scopes,
                                        segment_ids=segment_ids, limits=limits)
    return problems


def _check_extended(
    node: Condition, location: str, *, used_in: str, scopes: tuple[str, ...],
    segment_ids: Collection[str], limits: Limits,
) -> list[Problem]:
    """History, text, list and bucket conditions (``cjo.segments.history``)."""
    problems = [Problem(location, text) for text in check_node(node, scopes, used_in)]
    if isinstance(node, Bucket) and "profile" not in scopes:
        problems.append(_customer_unknown(f"bucket({node.salt!r})", location, used_in))
    if isinstance(node, ListHas):
        problems += _check_listed_values(node, location, limits)
    stream = stream_of(node)
    if stream is None:
        return problems
    if "profile" not in scopes:
        # History is the customer's: it is read wherever the profile is.
        problems.append(Problem(location, f"{used_in} cannot read the customer's history"))
    event, where, prop = stream
    problems += _event_name_problems(event, location)
    span = getattr(node, "window", None) or getattr(node, "span", None)
    if isinstance(span, timedelta) and span > limits.max_duration:
        problems += _check_span(span, "the window", location, limits)
    if prop is not None and _id_problem(prop, "property") is not None:
        problems.append(Problem(location, f"bad property {_q(prop)}"))
    if where is not None:
        problems += _check_condition(where, location, used_in="an event filter",
                                     scopes=("event",), segment_ids=segment_ids, limits=limits)
    return problems


def _customer_unknown(what: str, location: str, used_in: str) -> Problem:
    # An event filter sees the event alone: no customer (memberships, id) and no decision
    # instant, so such a node would silently never hold there.
    return Problem(location, f"{what} cannot be used in {used_in}: it reads only the event's "
                             "properties")


def _check_listed_values(node: ListHas, location: str, limits: Limits) -> list[Problem]:
    """The values of a list condition (``has_any``...): data stored with the definitions, as a
    Compare's value is. A field among them (``has_any(prop("tags"), [ctx("tag")])``) is not
    read at evaluation time, so it is refused here rather than failing to be stored."""
    listed = f"has_{node.op} on {node.ref}"
    if not isinstance(node.values, tuple):
        return []  # reported by the node's shape
    if len(node.values) > limits.max_condition_values:
        return [Problem(location, f"{listed} lists {len(node.values)} values; the limit is "
                                  f"{limits.max_condition_values}")]
    try:
        check_value(list(node.values), f"{listed}: the value")
    except InvalidEventError as exc:
        return [Problem(location, f"{exc} (a list condition compares with values only: to "
                                  "compare with a field, write prop('tags').contains(ctx('tag')))")]
    return []


def _check_rules(
    rules: Sequence[ProfileRule], segment_ids: Collection[str], limits: Limits
) -> list[Problem]:
    problems: list[Problem] = []
    for rule in rules:
        where = f"profile rule {_q(rule.id)}"
        problems += _id_problems(rule.id, "profile rule id", where)
        problems += _event_name_problems(rule.event, where)
        if not rule.updates:
            problems.append(Problem(where, "has no updates"))
        if len(rule.updates) > limits.max_attributes_per_update:
            problems.append(Problem(where, f"makes {len(rule.updates)} updates; the limit is "
                                           f"{limits.max_attributes_per_update}"))
        for u in rule.updates:
            problems += _text_problems([("the attribute", u.attribute)], where)
            if u.attribute in PROFILE_FIELD_ATTRIBUTES:
                problems.append(Problem(where, not_set_here(u.attribute)))
            if u.op not in ("stamp", "copy", "assign", "add"):
                problems.append(Problem(where, f"unknown update {u.op!r} of {_q(u.attribute)}"))
            if u.op == "copy" and not u.prop:
                problems.append(Problem(where, f"copy into {_q(u.attribute)} needs a prop"))
            if u.op == "add" and u.prop is None and not finite_number(u.value):
                problems.append(Problem(where, f"add to {_q(u.attribute)} needs a prop or a "
                                               "finite number"))
            if u.op == "assign":
                try:
                    check_value(u.value, f"the value assigned to {u.attribute!r}")
                except InvalidEventError as exc:
                    problems.append(Problem(where, str(exc)))
        if rule.where is not None:
            problems += _check_condition(rule.where, where, used_in="a profile rule",
                                         scopes=("event",), segment_ids=segment_ids,
                                         limits=limits)
    return problems


def _condition_size_problem(condition: Condition, limits: Limits) -> str | None:
    """Why ``condition`` is too deep or too large, or None. Iterative, and it stops as soon as
    a limit is passed, so a condition nested thousands deep costs no more than one at the
    limit."""
    stack: list[tuple[object, int]] = [(condition, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > limits.max_condition_depth:
            return (f"conditions nest more than {limits.max_condition_depth} levels of "
                    "and/or/not; flatten the condition or move part of it into a segment")
        if nodes > limits.max_condition_nodes:
            return (f"the condition has more than {limits.max_condition_nodes} nodes; move "
                    "parts of it into segments")
        if isinstance(node, And | Or):
            if isinstance(node.conditions, tuple):  # else reported by the node's shape
                stack.extend((child, depth + 1) for child in node.conditions)
        elif isinstance(node, Not):
            stack.append((node.condition, depth + 1))
    return None


def _check_compare_value(node: Compare, location: str, limits: Limits) -> list[Problem]:
    """The value a Compare node compares against: a value an event could carry, and a list of
    bounded length for ``in`` and ``not_in``."""
    problems: list[Problem] = []
    if isinstance(node.value, list | tuple) and len(node.value) > limits.max_condition_values:
        return [Problem(location, f"operator {node.op!r} on {node.ref} lists {len(node.value)} "
                                  f"values; the limit is {limits.max_condition_values}")]
    try:
        check_value(node.value, f"the value compared with {node.ref}")
    except InvalidEventError as exc:
        problems.append(Problem(location, str(exc)))
    return problems


def _check_ref(ref: Ref, location: str, *, used_in: str, scopes: tuple[str, ...]) -> list[Problem]:
    if ref.scope not in SCOPES and not ref.path and isinstance(ref.scope, str) and ref.scope:
        # A field written as a bare name ("renewal"): say how to name it, not that
        # "renewal." has an unknown scope.
        bare: str = ref.scope
        return [Problem(location, f"{bare!r} is not a field: write attr({bare!r}) or "
                                  f"'profile.{bare}' (ctx(...) or 'context.{bare}' for the "
                                  "context)")]
    if ref.scope not in SCOPES:
        return [Problem(location, f"unknown scope {ref.scope!r} in {ref}; expected one of "
                                  f"{', '.join(SCOPES)}")]
    if ref.scope not in scopes:
        hint = ""
        if ref.scope == "event" and "context" in scopes and isinstance(ref.path, str):
            # Where no event is at hand (a branch, an offer), the one that matters is in the
            # context: the trigger's properties, and what each WaitForEvent received.
            hint = (f" (the trigger event's properties are in the context: "
                    f"ctx({ref.path!r}); an event a WaitForEvent received is under "
                    f"ctx('received.<event>.<property>'))")
        return [Problem(location, f"{ref} cannot be used in {used_in}: only "
                                  f"{' and '.join(scopes)} values are available there{hint}")]
    if not ref.path:
        return [Problem(location, f"a reference to {ref.scope} needs a path")]
    if ref.scope == "profile" and isinstance(ref.path, str):
        name = ref.path.split(".", 1)[0]
        if name in PROFILE_FIELD_ATTRIBUTES:
            return [Problem(location, f"{ref}: {not_read_here(name)}")]
    return _text_problems([(f"the path of {ref.scope}.", ref.path)], location)


def _check_compare_time(
    node: CompareTime, location: str, used_in: str, scopes: tuple[str, ...], limits: Limits
) -> list[Problem]:
    problems: list[Problem] = []
    if node.op not in TIME_OPS:
        problems.append(Problem(location, f"operator {node.op!r} cannot compare {node.ref} with "
                                          f"{node.base}(); use lt (before), le, gt (after) or ge"))
    if node.base not in TIME_BASES:
        problems.append(Problem(location, f"unknown instant {node.base!r}; expected one of "
                                          f"{', '.join(TIME_BASES)}"))
    elif node.base == "entered_at" and "context" not in scopes:
        problems.append(Problem(location, f"entered_at() cannot be used in {used_in}: there is "
                                          "no enrollment there"))
    if not isinstance(node.offset, timedelta):
        problems.append(Problem(location, f"the offset must be a duration, got {node.offset!r}"))
    elif abs(node.offset) > limits.max_duration:
        problems.append(Problem(location, f"the offset {_describe(node.offset)} is beyond the "
                                          f"limit of {_describe(limits.max_duration)} either way"))
    return problems


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
    if isinstance(node.value, list | tuple):
        # is_in(["A", ctx("cart_id")]): a list is data; a field in it is never read.
        field = next((v for v in node.value if isinstance(v, Field | Ref | Condition)), None)
        if field is not None:
            return [Problem(location, f"{node.ref} is compared with a list holding {field!r}, a "
                                      "field, not a value: compare with one field at a time "
                                      "(prop('a') == ctx('a')), or with a field holding the "
                                      "list (prop('a').is_in(ctx('list')))")]
    return []


# --- journeys ----------------------------------------------------------------------------------


def _check_journey(journey: Journey, checker: _Checker) -> list[Problem]:
    known, limits = checker.known, checker.limits
    problems = _check_journey_fields(journey, limits)
    problems += [
        Problem(_exit_location(journey, c), f"segment {c.segment!r} does not exist")
        for c in journey.exit_criteria
        if c.segment is not None and c.segment not in known.segments
    ]
    if len(journey.steps) > limits.max_steps_per_journey:
        # Nothing else is checked: the journey must be split first, and checking (and listing
        # problems for) an oversized graph is exactly the work this limit exists to bound.
        problems.append(Problem(
            _journey_location(journey),
            f"has {len(journey.steps)} steps; the limit is {limits.max_steps_per_journey} "
            "(split it into several journeys, or raise Limits.max_steps_per_journey)",
        ))
        return problems
    problems += _check_reentry(
        journey.reentry, f"{_journey_location(journey)} / reentry", limits
    )
    problems += _check_instance_source(journey)
    problems += _check_journey_conditions(journey, known.segments, limits)
    problems += _check_graph(journey, limits)
    trigger = journey.trigger
    problems += trigger_kind(trigger).check(
        trigger, f"{_journey_location(journey)} / trigger", journey, checker
    )
    for step_id, step in journey.steps.items():
        problems += _check_step(journey, step_id, step, checker)
    return problems


def _check_journey_fields(journey: Journey, limits: Limits = DEFAULT_LIMITS) -> list[Problem]:
    where = _journey_location(journey)
    problems: list[Problem] = []
    problems += _id_problems(journey.id, "journey id", where)
    if not _in_range(journey.version, 1, MAX_VERSION):
        if isinstance(journey.version, int) and journey.version < 1:
            message = f"version must be 1 or more, got {journey.version}"
        else:
            message = f"version must be a whole number from 1 to {MAX_VERSION}, got " \
                      f"{_q(journey.version)}"
        problems.append(Problem(where, message))
    problems += _check_span(journey.max_lifetime, "max_lifetime", where, limits)
    if journey.goal is not None:
        goal_where = f"{where} / goal"
        problems += _check_span(journey.goal.within, "within", goal_where, limits)
        problems += _event_name_problems(journey.goal.event, goal_where)
        # The reason a converted enrollment ends with, as a criterion's name is an exited one's.
        problems += _reason_problems(journey.goal.name, "the goal name", goal_where)
        if journey.goal.name == CONTROL_DETAIL:
            problems.append(Problem(goal_where, (
                f"the goal name {CONTROL_DETAIL!r} is taken: the activity log marks the "
                "control group's conversions with it; name the goal otherwise"
            )))
    for criterion in journey.exit_criteria:
        criterion_where = _exit_location(journey, criterion)
        if criterion.segment is not None:
            if criterion.event is not None or criterion.where is not None:
                problems.append(Problem(criterion_where,
                                        "a segment criterion takes no event or where"))
        elif criterion.event is None and criterion.where is None:
            problems.append(Problem(criterion_where, "needs an event, a where condition, or both"))
        elif criterion.on == "enter":
            # Ignored, it would read as "exit when ... enters": say so rather than run it.
            problems.append(Problem(criterion_where, (
                "on='enter' goes with a segment criterion only (an event or where criterion "
                "has no membership to enter or leave)"
            )))
        if criterion.on not in ("enter", "exit"):
            problems.append(Problem(criterion_where,
                                    f"on must be 'enter' or 'exit', got {criterion.on!r}"))
        if criterion.event is not None:
            problems += _event_name_problems(criterion.event, criterion_where)
        # The name is the reason the enrollment ends with.
        problems += _reason_problems(criterion.name, "the name", criterion_where)
    if journey.timezone is not None and not is_zone(journey.timezone):
        problems.append(Problem(
            where, f"timezone {_q(journey.timezone)} is not a known IANA time zone"
        ))
    problems += _text_problems([("the name", journey.name)], where)
    if not _in_range(journey.priority, -MAX_PRIORITY, MAX_PRIORITY):
        problems.append(Problem(
            where, f"priority must be a whole number from -{MAX_PRIORITY} to {MAX_PRIORITY}, "
            f"got {_q(journey.priority)}"
        ))
    if journey.exclusive_group is not None:
        problems += _id_problems(journey.exclusive_group, "exclusive group", where)
    rule = journey.on_resume
    if rule.late not in ("send_late", "skip", "grace"):
        problems.append(Problem(
            f"{where} / on_resume", f"late must be send_late, skip or grace, got {_q(rule.late)}"
        ))
    elif rule.late == "grace" and rule.grace is None:
        problems.append(Problem(
            f"{where} / on_resume",
            "late='grace' needs a grace period, such as ResumeRule('grace', timedelta(hours=4))",
        ))
    elif rule.late != "grace" and rule.grace is not None:
        problems.append(Problem(
            f"{where} / on_resume",
            f"a grace period goes only with late='grace', not with {_q(rule.late)}",
        ))
    problems += _check_span(rule.grace, "grace", f"{where} / on_resume", limits, short=True)
    return problems


def _check_governance(definitions: Definitions, known: _Known) -> list[Problem]:
    """The rules across journeys: control group, concurrency limit, pauses, version changes."""
    problems: list[Problem] = []
    group = definitions.control_group
    if group is not None:
        percent = group.percent
        # The range refuses nan and inf too (math.isfinite would overflow on a huge int).
        if (
            isinstance(percent, bool) or not isinstance(percent, int | float)
            or not 0 <= percent < 100
        ):
            problems.append(Problem(
                "control group", f"percent must be from 0 to less than 100, got {_q(percent)}"
            ))
        problems += _id_problems(group.salt, "salt", "control group")
    limit = definitions.max_concurrent_journeys
    if limit is not None and not _in_range(limit, 1, MAX_VERSION):
        problems.append(Problem(
            "max_concurrent_journeys", f"must be a whole number of 1 or more, got {_q(limit)}"
        ))
    versions = {(j.id, j.version): j for j in definitions.journeys}
    for pause in definitions.paused:
        if pause.journey_id not in known.journeys:
            problems.append(Problem(
                f"pause of journey {_q(pause.journey_id)}", "no such journey is published"
            ))
    for change in definitions.version_changes:
        where = _running_location(change.journey_id)
        if change.mode not in ("drain", "migrate", "eject"):
            problems.append(Problem(
                where, f"mode must be drain, migrate or eject, got {_q(change.mode)}"
            ))
            continue
        if change.mode == "eject":
            problems += _reason_problems(change.reason, "the eject reason", where)
        pair = ((change.journey_id, change.from_version), (change.journey_id, change.to_version))
        if any(key not in known.versions for key in pair):
            problems.append(Problem(where, (
                f"a change from v{change.from_version} to v{change.to_version} names a "
                "version that is not published"
            )))
            continue
        old, new = versions.get(pair[0]), versions.get(pair[1])
        if change.mode == "migrate" and old is not None and new is not None:
            # (a version left out for its shape has no steps known to map)
            problems += _migration_problems(change, old, new, where)
    problems += _retirement_problems(definitions, known)
    return problems


def _retirement_problems(definitions: Definitions, known: _Known) -> list[Problem]:
    """Each retired version must be a published version, not its journey's latest (that one
    takes the entries), retired once."""
    problems: list[Problem] = []
    latest: dict[str, int] = {}
    for j in definitions.journeys:
        if isinstance(j.version, int):
            latest[j.id] = max(j.version, latest.get(j.id, j.version))
    seen: set[tuple[str, int]] = set()
    for r in definitions.retired:
        key = (r.journey_id, r.version)
        where = f"retired journey {_q(r.journey_id)} v{_q(r.version)}"
        if key not in known.versions:
            problems.append(Problem(where, "no such version is published"))
        elif key in seen:
            problems.append(Problem(where, "retired twice"))
        elif latest.get(r.journey_id) == r.version:
            problems.append(Problem(where, (
                "the latest version of a journey takes its entries and cannot be retired"
            )))
        seen.add(key)
    return problems


def _migration_problems(
    change: VersionChange, old: Journey, new: Journey, where: str
) -> list[Problem]:
    """A migration must map every step of the old version, and only to steps of the new."""
    problems: list[Problem] = []
    missing = sorted(set(old.steps) - set(change.steps))
    if missing:
        problems.append(Problem(where, (
            f"the migration from v{old.version} to v{new.version} does not map "
            f"step(s) {', '.join(map(repr, missing))}"
        )))
    unknown = sorted({t for t in change.steps.values() if t not in new.steps})
    if unknown:
        problems.append(Problem(where, (
            f"the migration maps to step(s) {', '.join(map(repr, unknown))}, "
            f"which v{new.version} does not have"
        )))
    return problems


def _event_name_problems(name: object, where: str) -> list[Problem]:
    return _id_problems(name, "event name", where)


def _id_problems(value: object, what: str, where: str) -> list[Problem]:
    """Why ``value`` cannot be an id, as a problem at ``where`` (none when it can)."""
    problem = _id_problem(value, what)
    return [] if problem is None else [Problem(where, problem)]


def _exit_location(journey: Journey, criterion: ExitCriterion) -> str:
    return f"{_journey_location(journey)} / exit criterion {criterion.name!r}"


def _check_reentry(
    policy: ReentryPolicy, where: str, limits: Limits = DEFAULT_LIMITS
) -> list[Problem]:
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
        elif not _in_range(policy.limit, 1, MAX_VERSION):
            problems.append(Problem(where, f"limit must be at most {MAX_VERSION}, got "
                                           f"{_q(policy.limit)}"))
        if not _positive(policy.per):
            problems.append(Problem(where, "mode 'at_most' needs a positive per window"))
    if policy.guard is not None:
        if policy.mode == "never":
            problems.append(Problem(where, "guard has no effect with mode 'never' (no one "
                                           "enters twice)"))
        elif not _positive(policy.guard):
            problems.append(Problem(where, "guard must be a positive duration"))
    # Past the positivity checks above, only the upper bound is left to say.
    for name in ("cooldown", "per", "guard"):
        span = getattr(policy, name)
        if _positive(span):
            # A duplicate guard may be seconds: it absorbs a double click.
            problems += _check_span(span, name, where, limits, short=name == "guard")
    if policy.instance_key is not None:
        problems += _id_problems(policy.instance_key, "instance_key", where)
    return problems


def _check_instance_source(journey: Journey) -> list[Problem]:
    """A keyed journey whose trigger cannot supply the key would never enter anyone: a trigger
    that declares its context's keys (``context_keys``) must list it."""
    key = journey.reentry.instance_key
    if isinstance(key, str):
        # A wait, goal or exit matches its own instance with ctx(key): a key that ctx() reads
        # as something else would never match, silently (ids are checked by _check_reentry).
        unreadable = _unreadable_key(key)
        if unreadable is not None:
            return [Problem(f"{_journey_location(journey)} / reentry",
                            f"instance_key {_q(key)} cannot be compared with in conditions: "
                            f"{unreadable}; key instances on another property")]
    keys = getattr(journey.trigger, "context_keys", None)
    if key is None or keys is None or key in keys:
        return []
    held = ", ".join(keys) or "nothing"
    return [Problem(
        f"{_journey_location(journey)} / reentry",
        f"instance_key {_q(key)} is never supplied by the trigger: entries by this trigger "
        f"(kind {_q(journey.trigger.kind)}) hold {held} in their context, so no one would "
        "enter; key instances on an event or API trigger",
    )]


def _unreadable_key(key: str) -> str | None:
    """Why ``ctx(key)`` does not read the instance key ``key`` of the entry's context, or None."""
    if "." in key:
        path = " → ".join(key.split("."))
        return f"ctx({key!r}) reads the path {path} (a dotted name is a nested field)"
    if key == RECEIVED:
        return (f"a WaitForEvent keeps the events it received under ctx({RECEIVED!r}), "
                "replacing the key")
    return None


def _check_journey_conditions(
    journey: Journey, segment_ids: Collection[str], limits: Limits = DEFAULT_LIMITS
) -> list[Problem]:
    where = _journey_location(journey)
    checks: list[tuple[Condition, str, str, tuple[str, ...]]] = []
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
            condition, location, used_in=used_in, scopes=scopes, segment_ids=segment_ids,
            limits=limits,
        )
    return problems


def _check_graph(journey: Journey, limits: Limits = DEFAULT_LIMITS) -> list[Problem]:
    """Entry, dangling references, unreachable steps, loops that never wait, and runs of steps
    without a wait longer than ``limits.max_steps_per_advance``."""
    where = _journey_location(journey)
    steps = journey.steps
    problems: list[Problem] = []
    for step_id, step in steps.items():
        for label, target in step_kind(step).successors(step):
            if target is not None and target not in steps:
                problems.append(Problem(
                    _step_location(journey, step_id),
                    f"{label} refers to missing step {target!r}",
                ))
    edges = {
        sid: [t for _, t in step_kind(step).successors(step) if t is not None and t in steps]
        for sid, step in steps.items()
    }
    for step_id, step in steps.items():
        for label, earlier in step_kind(step).refers_back(step):
            if earlier not in steps:
                problems.append(Problem(
                    _step_location(journey, step_id),
                    f"{label} refers to missing step {earlier!r}",
                ))
            elif step_id not in _reachable(edges, edges[earlier]):
                problems.append(Problem(
                    _step_location(journey, step_id),
                    f"{label} refers to step {earlier!r}, which comes before this step on no "
                    "path",
                ))
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
        sid: [t for t in targets if not step_kind(steps[t]).waits]
        for sid, targets in edges.items()
        if not step_kind(steps[sid]).waits
    }
    components = _components(busy)
    for group in _loops_of(components, busy):
        problems.append(Problem(
            _step_location(journey, group[0]),
            f"loop without a wait: {_arrow(_cycle_from(group[0], busy, group))} would repeat "
            "forever; add a Wait or WaitForEvent to it",
        ))
    problems += _check_runs(journey, edges, busy, components, limits)
    return problems


def _check_runs(
    journey: Journey,
    edges: Mapping[str, Sequence[str]],
    busy: Mapping[str, Sequence[str]],
    components: Sequence[Sequence[str]],
    limits: Limits,
) -> list[Problem]:
    """The longest run of steps one customer can go through without waiting, against
    ``limits.max_steps_per_advance``.

    A run counts every step it visits, the Wait, WaitForEvent or Exit that ends it included.
    ``components`` come sinks first, so each step's longest run is known from those of the
    steps after it: one pass, linear in the size of the journey. Steps on a loop without a wait
    are reported as loops and left out here.
    """
    run: dict[str, int] = {}
    onward: dict[str, str | None] = {}
    for component in components:
        if _is_cycle(component, busy):
            for node in component:
                run[node] = 0
            continue
        node = component[0]
        best, best_next = 1, None
        for target in edges[node]:
            length = 1 + (run[target] if target in busy else 1)
            if length > best:
                best, best_next = length, target
        run[node], onward[node] = best, best_next
    if not run:
        return []
    start = max(run, key=run.__getitem__)
    if run[start] <= limits.max_steps_per_advance:
        return []
    path = [start]
    while (step := onward.get(path[-1])) is not None and len(path) < 4:
        path.append(step)
    shown = _arrow(path) + (" -> ..." if run[start] > len(path) else "")
    return [Problem(
        _step_location(journey, start),
        f"{run[start]} steps run one after another without a wait ({shown}); the limit is "
        f"{limits.max_steps_per_advance}: add a Wait, or split the journey",
    )]


def _check_step(journey: Journey, step_id: str, step: Step, checker: _Checker) -> list[Problem]:
    where = _step_location(journey, step_id)
    problems = checker.identifier(step_id, "step id", where)
    found: list[Problem] = step_kind(step).check(step, where, journey, checker)
    return problems + found


class _Checker:
    """The shared checks a kind's ``check`` calls (``cjo.runtime.kinds.Checker``)."""

    def __init__(
        self,
        known: _Known,
        content: Iterable[ContentItem],
        channels: Collection[str] | None,
        limits: Limits,
        actions: Collection[str] | None,
        offers: Mapping[str, Offer],
    ) -> None:
        self.known = known
        self.segment_ids = known.segments
        self.journey_ids = known.journeys
        self.content_ids = known.content
        self.offer_ids = known.offers
        self.actions = actions
        self.offers = offers
        self.channels = channels
        self.limits = limits
        # Which channels each content item has a variant for, once, rather than once per Send
        # (of every item of an id: duplicates are reported on their own, and must not hide one).
        self._variants = {
            (item.id, variant.channel, variant.name)
            for item in content
            for variant in item.variants
        }

    def has_variant(self, content_id: str, channel: str, name: str | None = None) -> bool:
        # An item left out for its shape may have any variant: its Sends are not refused for it.
        return (content_id, channel, name) in self._variants or self.known.content.unchecked(
            content_id
        )

    def condition(
        self, condition: Condition, where: str, *, used_in: str, scopes: tuple[str, ...]
    ) -> list[Problem]:
        return _check_condition(condition, where, used_in=used_in, scopes=scopes,
                                segment_ids=self.segment_ids, limits=self.limits)

    def wait(
        self, value: timedelta, name: str, where: str, journey: Journey | None
    ) -> list[Problem]:
        limits = self.limits
        if not _positive(value):
            return [Problem(where, f"{name} must be positive, got {_describe(value)}")]
        if value < limits.min_wait:
            # A wait shorter than this turns a late run_due into a burst of messages.
            return [Problem(where, f"{name} {_describe(value)} is shorter than the minimum wait "
                                   f"{_describe(limits.min_wait)}")]
        if value > limits.max_duration:
            return [Problem(where, f"{name} {_describe(value)} is longer than the limit of "
                                   f"{_describe(limits.max_duration)}")]
        lifetime = journey.max_lifetime if journey is not None else None
        if _positive(lifetime) and value >= lifetime:
            # Even from the entry, such a wait ends no sooner than the enrollment expires.
            than = "longer than" if value > lifetime else "as long as"
            return [Problem(where, f"{name} {_describe(value)} is {than} the journey's "
                                   f"max_lifetime {_describe(lifetime)}, so the enrollment would "
                                   "expire by the time the wait ends")]
        return []

    def identifier(self, value: object, what: str, where: str) -> list[Problem]:
        return _id_problems(value, what, where)

    def text(self, texts: Iterable[tuple[str, object]], where: str) -> list[Problem]:
        return _text_problems(texts, where)

    def reason(self, value: object, what: str, where: str) -> list[Problem]:
        return _reason_problems(value, what, where)

    def values(
        self, values: Mapping[str, Any], what: str, item: str, where: str
    ) -> list[Problem]:
        try:
            check_values(values, what, item)
        except InvalidEventError as exc:
            return [Problem(where, str(exc))]
        return []


# --- segments ----------------------------------------------------------------------------------


def _check_segment(
    segment: Segment, segment_ids: Collection[str], limits: Limits = DEFAULT_LIMITS
) -> list[Problem]:
    where = _segment_location(segment.id)
    problems: list[Problem] = []
    problems += _id_problems(segment.id, "segment id", where)
    problems += _text_problems([("the name", segment.name)], where)
    problems += _check_condition(
        segment.condition, where, used_in="a segment", scopes=PROFILE_ONLY,
        segment_ids=segment_ids, limits=limits,
    )
    return problems


# Past this many segments in one cycle, only the first gets its own path in the message: a
# shortest cycle per member would cost the square of the group's size.
_CYCLE_PATHS = 100


def _segment_cycles(
    segments: Sequence[Segment], limits: Limits = DEFAULT_LIMITS
) -> list[Problem]:
    """A segment defined in terms of itself has no membership to compute."""
    known = {s.id for s in segments}
    edges: dict[str, list[str]] = {}
    for segment in segments:
        targets = edges.setdefault(segment.id, [])
        if _condition_size_problem(segment.condition, limits) is not None:
            continue  # reported by _check_segment; not worth walking
        for node in walk(segment.condition):
            if isinstance(node, InSegment) and node.segment in known:
                targets.append(node.segment)
    problems: list[Problem] = []
    for group in _loops(edges):
        for i, segment_id in enumerate(group):
            if i < _CYCLE_PATHS:
                cycle = _arrow(_cycle_from(segment_id, edges, group))
            else:
                cycle = f"one of {len(group)} segments in a cycle with {_q(group[0])}"
            problems.append(Problem(
                _segment_location(segment_id), f"refers to itself through in_segment: {cycle}"
            ))
    return problems


#: How many levels of and/or/not a segment's membership may nest through the segments it reads
#: with ``in_segment``, each read counting the depth it is read at: membership is evaluated
#: through the chain, and far past this (several hundred levels) Python's stack runs out.
MAX_SEGMENT_NESTING: Final = 128


def _nesting(condition: Condition) -> tuple[int, list[tuple[str, int]]]:
    """The depth of ``condition`` (and/or/not levels, 1 for a leaf) and the segments it reads
    with ``in_segment``, each with the depth it is read at. Iterative."""
    deepest, reads = 0, []
    stack: list[tuple[object, int]] = [(condition, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, And | Or):
            if isinstance(node.conditions, tuple):
                stack.extend((child, depth + 1) for child in node.conditions)
        elif isinstance(node, Not):
            stack.append((node.condition, depth + 1))
        elif isinstance(node, InSegment):
            reads.append((node.segment, depth))
    return deepest, reads


def _segment_nesting(segments: Sequence[Segment], limits: Limits) -> list[Problem]:
    """A segment whose membership nests deeper than ``MAX_SEGMENT_NESTING`` levels through the
    segments it reads (a long chain of ``in_segment``, or deep conditions chained): evaluating
    it would run out of stack. A segment that reads none is left to its own depth limit."""
    own: dict[str, tuple[int, list[tuple[str, int]]]] = {}
    for segment in segments:
        if _condition_size_problem(segment.condition, limits) is None:
            own[segment.id] = _nesting(segment.condition)
    reach: dict[str, int] = {}
    problems: list[Problem] = []
    for start in own:
        if start in reach:
            continue
        # Depth-first without recursion; a segment in a cycle (reported apart) counts once.
        stack, entered = [start], {start}
        while stack:
            sid = stack[-1]
            pending = [t for t, _ in own[sid][1] if t in own and t not in reach
                       and t not in entered]
            if pending:
                entered.update(pending)
                stack.extend(pending)
                continue
            stack.pop()
            depth, reads = own[sid]
            reach[sid] = max([depth, *(at + reach.get(t, 0) for t, at in reads)])
    for sid, (_depth, reads) in own.items():
        # Named where the chain first passes the limit: the segments that read it pass it too.
        if reads and reach[sid] > MAX_SEGMENT_NESTING and all(
            reach.get(t, 0) <= MAX_SEGMENT_NESTING for t, _ in reads
        ):
            problems.append(Problem(
                _segment_location(sid),
                f"nests {reach[sid]} levels of conditions through the segments it reads with "
                f"in_segment; the limit is {MAX_SEGMENT_NESTING} (and every segment that "
                "reads it goes deeper): read fewer segments in a chain, or flatten their "
                "conditions",
            ))
    return problems


# --- content -----------------------------------------------------------------------------------


def _check_content(
    item: ContentItem, renderer: Renderer, limits: Limits = DEFAULT_LIMITS,
    channel_types: Mapping[str, str] | None = None, *, render: bool = True,
) -> list[Problem]:
    """The item's problems; ``render``: whether its templates are rendered against a sample
    (not when they include a block whose source is not known)."""
    where = _content_location(item.id)
    problems: list[Problem] = []
    problems += _id_problems(item.id, "content id", where)
    if not _in_range(item.version, 1, MAX_VERSION):
        problems.append(Problem(where, f"version must be a whole number from 1 to "
                                       f"{MAX_VERSION}, got {_q(item.version)}"))
    problems += _text_problems([("the name", item.name)], where)
    if not item.variants:
        problems.append(Problem(where, "has no variants"))
    if len(item.variants) > limits.max_variants_per_content:
        problems.append(Problem(where, f"has {len(item.variants)} variants; the limit is "
                                       f"{limits.max_variants_per_content}"))
        return problems
    counts = Counter((v.channel, v.locale, v.name) for v in item.variants)
    for (channel, locale, name), count in counts.items():
        if count > 1:
            variant = Variant(channel=channel, fields={}, locale=locale, name=name)
            problems.append(Problem(
                _variant_location(item.id, variant),
                f"defined {count} times for the same channel, locale and name",
            ))
    if item.sample is not None:
        for what, values in (("sample profile", item.sample.profile),
                             ("sample event", item.sample.event)):
            try:
                check_values(values, what, "value")
            except InvalidEventError as exc:
                problems.append(Problem(where, str(exc)))
                return problems
    for variant in item.variants:
        problems += _check_variant(item, variant, renderer, limits, channel_types, render)
    return problems


def _check_variant(
    item: ContentItem, variant: Variant, renderer: Renderer, limits: Limits,
    channel_types: Mapping[str, str] | None = None, render: bool = True,
) -> list[Problem]:
    where = _variant_location(item.id, variant)
    problems: list[Problem] = []
    for what, value in (("channel", variant.channel), ("locale", variant.locale),
                        ("variant name", variant.name)):
        if value is not None:
            problems += _id_problems(value, what, where)
    if isinstance(variant.locale, str) and normal_locale(variant.locale) is None:
        problems.append(Problem(where, f"locale {LOCALE_PROBLEM}, got {variant.locale!r}"))
    if len(variant.fields) > limits.max_fields_per_variant:
        problems.append(Problem(where, f"has {len(variant.fields)} fields; the limit is "
                                       f"{limits.max_fields_per_variant}"))
        return problems
    texts = [(f"the field name {name!r}", name) for name in variant.fields]
    texts += [(f"field {name!r}", source) for name, source in variant.fields.items()]
    text_problems = _text_problems(texts, where)
    if text_problems:
        return problems + text_problems
    ctype = channel_type_of(variant.channel, channel_types or {})
    if ctype is not None:
        problems += [Problem(where, message) for message in field_problems(ctype, variant.fields)]
    if not render:
        return problems
    messages, data = _sample_problems(item, variant, renderer, "field")
    problems += [Problem(where, message) for message in messages]
    if data is not None:
        fields = renderer.render(item, variant, data)
        may_fill: set[str] = set()
        if item.sample is None:
            # A derived sample holds "1" everywhere: a field that reads customer data and
            # renders empty on it ({% if profile.plan == "gold" %}) may well render for the
            # customers it is meant for; one that fails for a customer fails at send time.
            may_fill = {name for name, text in fields.items()
                        if (not text or text.isspace())
                        and reads_data(variant.fields[name], renderer)}
        bad = output_problem(ctype, fields, may_fill)
        if bad is not None:
            problems.append(Problem(where, f"field {bad[0]!r} {bad[1]}"))
    return problems


def _check_action_params(
    journey: Journey, renderer: Renderer, renders: Callable[[ContentItem], bool]
) -> list[Problem]:
    """An Action's params are templates rendered as content fields are: checked the same way
    against a sample, so one that fails for every customer is refused rather than failing
    every call."""
    problems: list[Problem] = []
    for step_id, step in journey.steps.items():
        if not isinstance(step, Action) or not step.params:
            continue
        where = _step_location(journey, step_id)
        if _text_problems(list(step.params.items()), where):
            continue  # reported by the step's own checks
        item, variant = step_kind(step).compile(step)
        if renders(item):
            messages, _ = _sample_problems(item, variant, renderer, "param")
            problems += [Problem(where, message) for message in messages]
    return problems


def _sample_problems(
    item: ContentItem, variant: Variant, renderer: Renderer, what: str
) -> tuple[list[str], Mapping[str, Any] | None]:
    """What is wrong with the variant's templates (each named as ``what`` and its name), and
    the sample they rendered on when none failed (None when one did)."""
    # Rendered against a sample: a template that does not parse, uses an unknown filter or a
    # variable the sample lacks, or hits a template limit, is refused here rather than failing
    # every send.
    unknown = unknown_variables(variant, renderer)
    messages = [f"{what} {field!r} reads {variable!r}, which templates never see (they read "
                f"{_roots()})" for field, variable in unknown]
    data = sample_data(item, variant, renderer)
    found = renderer.problems(item, variant, data)
    # A field reported for its variable is not reported again for failing on it.
    errors = [e for e in found if e.field not in {field for field, _ in unknown}]
    if item.sample is None:
        # A derived sample cannot know the shape of a value (a loop over a list of objects):
        # its undefined variables say nothing about the template, nor a filter given nil, a
        # list or an object where it reads a number or a date (``first`` of the sample's text
        # is nil). Give a sample to check them.
        errors = [e for e in errors if not isinstance(e.__cause__, UndefinedError)
                  and not (isinstance(e.__cause__, FilterInputError) and e.__cause__.shape)]
        typed = [e for e in errors if isinstance(e.__cause__, LiquidTypeError)]
        if typed:
            # Nor its types: "1" is text to a comparison with a number ({% if event.total >
            # 50 %}). A field that renders with the number 1 in each variable is not refused.
            numbers = sample_data(item, variant, renderer, placeholder=1)
            passed = {e.field for e in typed
                      if e.field is not None and _renders(renderer, item, variant, e.field,
                                                          numbers)}
            errors = [e for e in errors if e.field not in passed]
    for error in errors:
        if isinstance(error, RenderLimitError):
            message = f"{what} {error.field!r} is over a template limit: {error.reason}"
        elif isinstance(error.__cause__, LiquidSyntaxError):
            message = f"{what} {error.field!r} is not a valid Liquid template: {error.reason}"
        else:
            message = f"{what} {error.field!r} does not render on the sample: {error.reason}"
        messages.append(message)
    # A filter the sample's render did not reach (in a loop, an untaken branch, after a
    # variable a derived sample lacks) fails every customer who reaches it.
    failed = {e.field for e in errors} | {field for field, _ in unknown}
    filters = [(field, name) for field, name in unknown_filters(variant, renderer)
               if field not in failed]
    messages += [f"{what} {field!r} uses unknown filter {name!r}" for field, name in filters]
    return messages, None if found or unknown or filters else data


def _roots() -> str:
    *first, last = TEMPLATE_ROOTS
    return f"{', '.join(first)} and {last}"


def _renders(
    renderer: Renderer, item: ContentItem, variant: Variant, field: str, data: Mapping[str, Any]
) -> bool:
    try:
        renderer.render_field(item, variant, field, data)
    except RenderError:
        return False
    return True


# --- offers ------------------------------------------------------------------------------------


def _check_offer(
    offer: Offer,
    content_ids: Collection[str],
    segment_ids: Collection[str],
    scorers: Collection[str] | None,
    limits: Limits,
) -> list[Problem]:
    where = _offer_location(offer.id)
    problems: list[Problem] = []
    problems += _id_problems(offer.id, "offer id", where)
    if offer.content not in content_ids:
        problems.append(Problem(where, f"content {offer.content!r} does not exist"))
    if offer.when is not None:
        problems += _check_condition(offer.when, where, used_in="an offer",
                                     scopes=("profile", "context"), segment_ids=segment_ids,
                                     limits=limits)
    if isinstance(offer.priority, bool) or not isinstance(offer.priority, int):
        problems.append(Problem(where, f"priority must be a whole number, got "
                                       f"{_q(offer.priority)}"))
    if offer.scorer is not None and scorers is not None and offer.scorer not in scorers:
        known = ", ".join(sorted(scorers)) or "none"
        problems.append(Problem(where, f"scorer {offer.scorer!r} is not registered "
                                       f"(registered: {known})"))
    cap = offer.cap
    if cap is not None:
        if isinstance(cap.times, bool) or not isinstance(cap.times, int) or cap.times < 1:
            problems.append(Problem(where, f"cap times must be 1 or more, got {_q(cap.times)}"))
        if cap.per is not None:
            problems += _check_span(cap.per, "cap per", where, limits)
    return problems


# --- tags --------------------------------------------------------------------------------------


def _tagged_places(definitions: Definitions) -> Iterator[tuple[str, tuple[str, ...]]]:
    for journey in definitions.journeys:
        yield _journey_location(journey), journey.tags
        for step_id, step in journey.steps.items():
            if step.tags:  # most steps have none: skip building their location
                yield _step_location(journey, step_id), step.tags
    for segment in definitions.segments:
        yield _segment_location(segment.id), segment.tags
    for item in definitions.content:
        yield _content_location(item.id), item.tags
    for offer in definitions.offers:
        yield _offer_location(offer.id), offer.tags


def _check_tags(definitions: Definitions, tags: Collection[str] | None) -> list[Problem]:
    """Every tag must be one of ``tags``, the taxonomy's (None: no taxonomy is published)."""
    problems: list[Problem] = []
    for location, used in _tagged_places(definitions):
        for tag in used:
            if tags is None:
                problems.append(Problem(location, f"tag {tag!r} used but no taxonomy is published"))
            elif tag not in tags:
                problems.append(Problem(location, f"tag {tag!r} is not in the taxonomy"))
    return problems


def channels_named(definitions: Definitions) -> list[str]:
    """Every channel the definitions name (sends and their fallbacks, caps, quiet hours)."""
    names = set(named_in_steps(definitions, Send, "channel"))
    names.update(
        channel
        for journey in definitions.journeys
        for step in journey.steps.values()
        if isinstance(step, Send)
        for channel in step.fallbacks
    )
    names.update(cap.channel for cap in definitions.caps if cap.channel is not None)
    names.update(channel for quiet in definitions.quiet_hours for channel in quiet.channels)
    return sorted(names)


def named_in_steps(definitions: Definitions, kind: type[Step], attribute: str) -> list[str]:
    """The names the steps of one kind give in ``attribute`` (channels of sends, actions of
    action steps), in order."""
    return sorted({
        getattr(step, attribute)
        for journey in definitions.journeys
        for step in journey.steps.values()
        if isinstance(step, kind)
    })
