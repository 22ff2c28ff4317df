"""What publishing checks of content beyond the shape of its data: the sample each variant is
rendered against, and the blocks templates include (every one published, no cycles).

Without a ``ContentItem.sample``, a variant is rendered against a derived sample: every
variable its templates read (blocks included) holds the text ``"1"``, which reads as a word
and as a number, so text, arithmetic and JSON bodies all render. What such a sample cannot
tell (whether a loop's items have a ``name``, whether a value is text or a number) is not
reported: variables are checked only against a sample the host gives, a field that a
comparison with a number fails on ``"1"`` is rendered again with the number 1, and a field
that reads customer data is not reported for rendering empty on it (``reads_data``).

Whatever the sample, a variable outside the data templates see (``TEMPLATE_ROOTS``) is
refused (``unknown_variables``): no send will ever have it.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
from liquid import Environment
from liquid.builtin.expressions.primitive import StringLiteral
from liquid.builtin.tags.include_tag import IncludeNode
from liquid.builtin.tags.render_tag import RenderNode
from liquid.context import RenderContext
from liquid.exceptions import LiquidError
from liquid.static_analysis import TemplateAnalysis

from cjo.content.render import NOW_KEY, TEMPLATE_ROOTS, Renderer
from cjo.frozen import thaw
from cjo.model.content import ContentBlock, ContentItem, Variant

__all__ = [
    "SAMPLE_CUSTOMER",
    "block_problems",
    "blocks_used",
    "includes",
    "reads_data",
    "revise_for_blocks",
    "sample_data",
    "unknown_filters",
    "unknown_variables",
]

SAMPLE_CUSTOMER = "sample-customer"
#: What ``'now' | date`` reads when a template is checked at publish (any instant will do: it
#: is only rendered for its errors), so that a check never reads the wall clock.
SAMPLE_INSTANT = datetime(2000, 1, 3, 9, 0, tzinfo=UTC)
_PLACEHOLDER = "1"
_ROOTS = frozenset({"profile", "event", "context"})
# What a template may read: the render data, and Liquid's loop objects, which its analysis
# reports as read from the data in a block rendered per item ({% render 'line' for ... %}).
_SEEN = frozenset({*TEMPLATE_ROOTS, "forloop", "tablerowloop"})
_PARSER = Environment()
#: Template analyses kept (each read by several checks of one publish); bounded, as the
#: renderer's parsed templates are.
_ANALYSES = 4_096


def includes(source: str) -> tuple[frozenset[str], bool]:
    """The block ids ``source`` includes, and whether it includes any by a computed name
    (which cannot be checked before it renders). A source that does not parse includes none:
    the renderer reports it."""
    if "{%" not in source or ("include" not in source and "render" not in source):
        return frozenset(), False
    try:
        template = _PARSER.from_string(source)
    except LiquidError:
        return frozenset(), False
    names: set[str] = set()
    dynamic = False
    static_context = RenderContext(template)
    nodes: list[Any] = list(template.nodes)
    while nodes:
        node = nodes.pop()
        if isinstance(node, IncludeNode | RenderNode):
            if isinstance(node.name, StringLiteral):
                names.add(node.name.value)
            else:
                dynamic = True
        nodes.extend(node.children(static_context, include_partials=False))
    return frozenset(names), dynamic


def _sources(item: ContentItem) -> Iterable[str]:
    for variant in item.variants:
        yield from variant.fields.values()


def blocks_used(item: ContentItem, blocks: Mapping[str, str]) -> frozenset[str]:
    """Every block ``item`` includes, directly or through other blocks (published ones)."""
    seen: set[str] = set()
    todo: list[str] = []
    for source in _sources(item):
        todo.extend(includes(source)[0])
    while todo:
        block_id = todo.pop()
        if block_id in seen:
            continue
        seen.add(block_id)
        block = blocks.get(block_id)
        if block is not None:
            todo.extend(includes(block)[0])
    return frozenset(seen)


def block_problems(
    blocks: Iterable[ContentBlock], items: Iterable[ContentItem], *, known: Collection[str]
) -> list[tuple[str, str]]:
    """(location, message) for every include of a block that is not published, by a computed
    name, or that leads back to itself. ``known``: the block ids an include may name (those of
    ``blocks``, and of any left out of them for their shape)."""
    by_id = {b.id: b.source for b in blocks}
    problems: list[tuple[str, str]] = []
    edges: dict[str, frozenset[str]] = {}
    for block_id, source in by_id.items():
        included, dynamic = includes(source)
        edges[block_id] = included
        where = f"block {block_id!r}"
        problems += _include_problems(where, included, dynamic, known)
    for item in items:
        for variant in item.variants:
            for field, source in variant.fields.items():
                included, dynamic = includes(source)
                where = f"{_variant_where(item, variant)} / field {field!r}"
                problems += _include_problems(where, included, dynamic, known)
    for block_id in sorted(edges):
        cycle = _cycle(block_id, edges)
        if cycle is not None:
            path = " -> ".join(repr(b) for b in cycle)
            problems.append((f"block {block_id!r}", f"includes itself: {path}"))
    return problems


def _include_problems(
    where: str, names: Iterable[str], dynamic: bool, blocks: Collection[str]
) -> list[tuple[str, str]]:
    problems = [
        (where, f"includes block {name!r}, which is not published")
        for name in sorted(names) if name not in blocks
    ]
    if dynamic:
        problems.append((where, "includes a block by a computed name; name blocks with a "
                                "quoted id ({% include 'footer' %})"))
    return problems


def _cycle(start: str, edges: Mapping[str, frozenset[str]]) -> list[str] | None:
    """A path of includes from ``start`` back to ``start``, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def _variant_where(item: ContentItem, variant: Variant) -> str:
    locale = f" ({variant.locale})" if variant.locale else ""
    name = f" [{variant.name}]" if variant.name is not None else ""
    return f"content {item.id!r} / variant {variant.channel}{locale}{name}"


def sample_data(
    item: ContentItem, variant: Variant, renderer: Renderer, placeholder: str | int = _PLACEHOLDER
) -> dict[str, Any]:
    """What ``variant`` is rendered against at publish: the item's sample, else one derived
    from the variables its templates read, each holding ``placeholder``."""
    sample = item.sample
    if sample is not None:
        # Rendered as a customer's data is: plain lists and dicts.
        event = thaw(sample.event)
        return {"profile": thaw(sample.profile), "event": event, "context": event,
                "customer_id": SAMPLE_CUSTOMER, NOW_KEY: SAMPLE_INSTANT}
    profile: dict[str, Any] = {}
    event = {}
    for source in variant.fields.values():
        for variable in _globals(source, renderer.environment):
            segments = tuple(getattr(variable, "segments", ()))
            if len(segments) < 2 or segments[0] not in _ROOTS:
                continue
            _fill(profile if segments[0] == "profile" else event, segments[1:], placeholder)
    return {"profile": profile, "event": event, "context": event,
            "customer_id": SAMPLE_CUSTOMER, NOW_KEY: SAMPLE_INSTANT}


@functools.lru_cache(maxsize=_ANALYSES)
def _analysis(source: str, env: Environment) -> TemplateAnalysis | None:
    """Liquid's analysis of ``source``, blocks included (``env``'s). None for plain text, and
    for a source that does not parse or includes a block not published: the render reports
    it. Kept: a publish reads each field's analysis several times, for several checks."""
    if "{{" not in source and "{%" not in source:
        return None
    try:
        return env.from_string(source).analyze(include_partials=True)
    except LiquidError:
        return None


def _globals(source: str, env: Environment) -> list[Any]:
    """The variables ``source`` reads from the render data (blocks included; not what it
    assigns, loops over or passes to a block), as Liquid's analysis gives them."""
    analysis = _analysis(source, env)
    if analysis is None:
        return []
    return [variable for variables in analysis.globals.values() for variable in variables]


def reads_data(source: str, renderer: Renderer) -> bool:
    """Whether ``source`` reads any of the render data: what it renders may then differ from
    customer to customer."""
    return bool(_globals(source, renderer.environment))


def unknown_variables(variant: Variant, renderer: Renderer) -> list[tuple[str, str]]:
    """(field, variable) for every variable a field of ``variant`` reads outside
    ``TEMPLATE_ROOTS``: undefined at every send (``{{ custmer.name }}``), or its ``default``
    for everyone."""
    found: list[tuple[str, str]] = []
    for name, source in variant.fields.items():
        seen: set[str] = set()
        for variable in _globals(source, renderer.environment):
            segments = tuple(getattr(variable, "segments", ()))
            shown = str(variable)
            if segments and segments[0] not in _SEEN and shown not in seen:
                seen.add(shown)
                found.append((name, shown))
    return found


def unknown_filters(variant: Variant, renderer: Renderer) -> list[tuple[str, str]]:
    """(field, filter) for every filter a field of ``variant`` names that is not registered,
    wherever it is: in a loop or a branch the sample does not reach, or after a variable the
    sample lacks, the render would not get to it, and every customer who does would fail."""
    known = renderer.environment.filters
    found: list[tuple[str, str]] = []
    for name, source in variant.fields.items():
        analysis = _analysis(source, renderer.environment)
        if analysis is not None:
            found += [(name, f) for f in analysis.filters if f not in known]
    return found


def _fill(target: dict[str, Any], path: tuple[Any, ...], placeholder: str | int) -> None:
    for i, segment in enumerate(path):
        if not isinstance(segment, str):
            return  # an index or a computed key: nothing sensible to derive
        last = i == len(path) - 1 or not isinstance(path[i + 1], str)
        current = target.get(segment)
        if last:
            if current is None:
                target[segment] = placeholder
            return
        if not isinstance(current, dict):
            current = target[segment] = {}
        target = current


def revise_for_blocks(
    current_items: Iterable[ContentItem],
    current_blocks: Iterable[ContentBlock],
    items: Iterable[ContentItem],
    blocks: Iterable[ContentBlock],
) -> tuple[ContentItem, ...]:
    """``items`` with the next content version for every item that includes (directly or
    not) a block whose source changed or went away, unless publishing bumped it already: a
    block change is a change of every item that uses it."""
    old = {b.id: b.source for b in current_blocks}
    new = {b.id: b.source for b in blocks}
    changed = {i for i in old.keys() | new.keys() if old.get(i) != new.get(i)}
    versions = {c.id: c.version for c in current_items}
    if not changed:
        return tuple(items)
    out: list[ContentItem] = []
    for item in items:
        bump = (
            item.id in versions and item.version == versions[item.id]
            and blocks_used(item, new | old) & changed
        )
        out.append(attrs.evolve(item, version=item.version + 1) if bump else item)
    return tuple(out)
