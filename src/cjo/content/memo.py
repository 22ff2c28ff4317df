"""Fast rendering: memoised outputs, and output-only templates evaluated without the render
machinery.

- Most sends of one content item differ in a handful of values (a first name, a plan, an item):
  Liquid's static analysis tells which variables a template reads, so the rendered text can be
  kept per (template, those values) and a repeat costs a dictionary look-up. A template whose
  output may depend on anything else (loops, counters, partials, the ``date`` filter, whose
  ``now`` is the instant being decided, ``time_zone``, which reads the customer's zone),
  reads a value that is not a plain scalar, or reads the customer id (unique to each
  customer: never repeated) is never memoised.
- Most templates are text, ``{{ path | filter: literal }}`` outputs and ``{% if path ==
  literal %}...{% else %}...{% endif %}`` choices between such parts. For those, Liquid's own
  parse tree and stringification, and the renderer's own filter functions (cjo's strict math
  filters, not Liquid's lenient ones), are applied directly, with no render context, output
  stream or limit bookkeeping (the output's length is still checked). Anything else, a missing
  or non-scalar value, or a filter that raises, falls back to a full render, so errors and
  limits are reported exactly as Liquid and the renderer report them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from liquid import Environment
from liquid.builtin.content import ContentNode
from liquid.builtin.expressions.arguments import PositionalArgument
from liquid.builtin.expressions.filtered import FilteredExpression
from liquid.builtin.expressions.logical import BooleanExpression, EqExpression
from liquid.builtin.expressions.path import Path as LiquidPath
from liquid.builtin.expressions.primitive import Literal
from liquid.builtin.output import OutputNode
from liquid.builtin.tags.if_tag import IfNode
from liquid.exceptions import LiquidError

from cjo.conditions import MISSING, lookup
from cjo.content.filters import output_text
from cjo.content.render import TEMPLATE_ROOTS, Renderer
from cjo.model.content import ContentItem, Variant

__all__ = ["MemoRenderer"]

_UNSAFE_TAGS = frozenset({
    "for", "tablerow", "cycle", "increment", "decrement", "include", "render", "liquid",
    "echo", "assign", "capture",
})
_UNSAFE_FILTERS = frozenset({"date", "time_zone"})
_ROOTS = frozenset(TEMPLATE_ROOTS)
_SCALARS = (str, int, float, bool, type(None))
_MISSING = MISSING

Path = tuple[str, ...]

# Pure filters of plain values, safe to call without a render context.
_FAST_FILTERS = frozenset({
    "default", "upcase", "downcase", "capitalize", "append", "prepend", "strip", "lstrip",
    "rstrip", "plus", "minus", "times", "round", "abs",
})
_Output = tuple[Path, tuple[tuple[Callable[..., Any], tuple[Any, ...]], ...]]
_Filters = Mapping[str, Callable[..., Any]]


class _Choice:
    """``{% if <path> == <literal> %}then{% else %}otherwise{% endif %}`` on the fast path."""

    __slots__ = ("literal", "otherwise", "path", "then")

    def __init__(self, path: Path, literal: str | int | float, then: _FastTemplate,
                 otherwise: _FastTemplate) -> None:
        self.path = path
        self.literal = literal
        self.then = then
        self.otherwise = otherwise


_Part = str | _Output | _Choice
_FastTemplate = tuple[_Part, ...]
# Literals an ``if`` may compare with on the fast path: Liquid's ``==`` on a plain value is
# Python's, except that a boolean equals only a boolean (handled in ``_run_parts``).
_LITERALS = (str, int, float)


class _SlowPathError(Exception):
    """The fast path does not apply to this render: use Liquid's."""


def _fast(source: str, env: Environment, filters: _Filters) -> _FastTemplate | None:
    """``source`` as text, outputs of paths through literal-argument filters, and ``if``s
    comparing a path with a literal, or None. ``filters``: the renderer's, so that the fast
    path calls the same functions a full render does (cjo's strict math filters)."""
    try:
        template = env.from_string(source)
    except LiquidError:
        return None
    return _fast_nodes(template.nodes, filters)


def _fast_nodes(nodes: Iterable[object], filters: _Filters) -> _FastTemplate | None:
    parts: list[_Part] = []
    for node in nodes:
        if type(node) is ContentNode:
            parts.append(node.text)
            continue
        if type(node) is IfNode:
            choice = _fast_choice(node, filters)
            if choice is None:
                return None
            parts.append(choice)
            continue
        if type(node) is not OutputNode or type(node.expression) is not FilteredExpression:
            return None
        expression = node.expression
        left = expression.left
        if type(left) is not LiquidPath or not all(isinstance(p, str) for p in left.path):
            return None
        calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        for f in expression.filters or ():
            func = filters.get(f.name)
            if f.name not in _FAST_FILTERS or func is None:
                return None
            args: list[Any] = []
            for arg in f.args:
                if type(arg) is not PositionalArgument or not isinstance(arg.value, Literal):
                    return None
                args.append(arg.value.value)
            calls.append((func, tuple(args)))
        parts.append((tuple(str(p) for p in left.path), tuple(calls)))
    return tuple(parts)


def _fast_choice(node: IfNode, filters: _Filters) -> _Choice | None:
    condition = node.condition
    if type(condition) is not BooleanExpression or node.alternatives:
        return None
    test = condition.expression
    if type(test) is not EqExpression:
        return None
    left, right = test.left, test.right
    if type(left) is not LiquidPath or not all(isinstance(p, str) for p in left.path):
        return None
    if not isinstance(right, Literal) or type(right.value) not in _LITERALS:
        return None
    # A block of nothing but whitespace renders nothing in Liquid: left to Liquid.
    blocks = [node.consequence] + ([node.default] if node.default is not None else [])
    if any(block.blank for block in blocks):
        return None
    then = _fast_nodes(node.consequence.nodes, filters)
    otherwise = _fast_nodes(node.default.nodes, filters) if node.default is not None else ()
    if then is None or otherwise is None:
        return None
    return _Choice(tuple(str(p) for p in left.path), right.value, then, otherwise)


def _run_fast(template: _FastTemplate, data: Mapping[str, Any], limit: int) -> str:
    out: list[str] = []
    _run_parts(template, data, out)
    text = "".join(out)
    if len(text) * 4 > limit and len(text.encode()) > limit:
        raise _SlowPathError  # the renderer reports the limit (bytes of UTF-8)
    return text


def _run_parts(template: _FastTemplate, data: Mapping[str, Any], out: list[str]) -> None:
    for part in template:
        if isinstance(part, str):
            out.append(part)
            continue
        if isinstance(part, _Choice):
            value = lookup(data, part.path)
            if value is _MISSING or not isinstance(value, _SCALARS) or value is None:
                raise _SlowPathError  # Liquid's undefined and object semantics apply
            equal = type(value) is not bool and value == part.literal
            _run_parts(part.then if equal else part.otherwise, data, out)
            continue
        path, filters = part
        value = lookup(data, path)
        if value is _MISSING or not isinstance(value, _SCALARS) or value is None:
            raise _SlowPathError  # Liquid's undefined and object semantics apply
        try:
            for func, args in filters:
                value = func(value, *args)
        except Exception as exc:
            raise _SlowPathError from exc
        out.append(output_text(value))


def _reads(source: str, env: Environment) -> tuple[Path, ...] | None:
    """The variable paths ``source`` reads, or None when its output may depend on more."""
    if "{{" not in source and "{%" not in source:
        return ()
    try:
        analysis = env.from_string(source).analyze()
    except LiquidError:
        return None  # the renderer reports the error
    if set(analysis.tags) & _UNSAFE_TAGS or set(analysis.filters) & _UNSAFE_FILTERS:
        return None
    if analysis.locals or set(analysis.globals) - _ROOTS:
        return None
    paths: list[Path] = []
    for variables in analysis.variables.values():
        for variable in variables:
            segments = tuple(getattr(variable, "segments", ()))
            if not segments or not all(isinstance(s, str) for s in segments):
                return None
            if segments[0] != "customer_id" and len(segments) < 2:
                return None  # a whole object (``{{ profile }}``): not a scalar
            paths.append(segments)
    return tuple(sorted(set(paths)))


def _absent(data: Mapping[str, Any], path: Path) -> bool:
    """Whether ``path`` is missing from ``data`` because a mapping on the way lacks its key.
    Not when it runs into a list or text: Liquid reads their ``size``, ``first`` and ``last``,
    which differ from one customer to the next where the path is missing for all of them."""
    value: Any = data
    for part in path:
        if not isinstance(value, Mapping):
            return False
        if part not in value:
            return True
        value = value[part]
    return True


_FieldPlan = tuple[str, _FastTemplate | None, tuple[Path, ...] | None]


class MemoRenderer:
    """Renders through ``renderer``, reusing outputs; at most ``size`` outputs are kept.

    Each field is taken on its own: a field on the fast path is evaluated directly even when
    another field of its variant needs Liquid (the win-back's ``{% if %}`` offer beside its
    per-customer code), and a field that needs Liquid is memoised on the values it reads, not
    on everything its variant reads. Fields are rendered in order, so the first field that
    fails raises, as a full render of the variant does."""

    def __init__(self, renderer: Renderer, size: int = 50_000) -> None:
        self.renderer = renderer
        self._size = size
        self._env = Environment()
        self._memo: dict[tuple[Any, ...], str] = {}
        # Per variant (of this generation's definitions, so ids are stable): per field, its
        # name, its fast form (or None) and the paths it reads (None: never memoised).
        self._plans: dict[int, tuple[_FieldPlan, ...]] = {}

    def render(
        self, item: ContentItem, variant: Variant, data: Mapping[str, Any]
    ) -> dict[str, str]:
        plan = self._plans.get(id(variant))
        if plan is None:
            plan = self._plans[id(variant)] = self._plan(variant)
        out: dict[str, str] = {}
        for name, fast, reads in plan:
            out[name] = self._field(item, variant, name, fast, reads, data)
        return out

    def clear(self) -> None:
        """Forget every output kept (a customer was erased: some may hold their data)."""
        self._memo.clear()

    def _field(
        self, item: ContentItem, variant: Variant, name: str, fast: _FastTemplate | None,
        reads: tuple[Path, ...] | None, data: Mapping[str, Any],
    ) -> str:
        """One field: from the memo when its values were seen before, else evaluated on the
        fast path when it applies, else rendered by Liquid."""
        if reads is None:
            return self._evaluate(item, variant, name, fast, data)
        key: list[Any] = [id(variant), name]
        for path in reads:
            v = lookup(data, path)
            if (v is not _MISSING and not isinstance(v, _SCALARS)) or (
                v is _MISSING and not _absent(data, path)
            ):
                return self._evaluate(item, variant, name, fast, data)
            # The type too: 1, 1.0 and True are equal keys but render differently; and so do
            # 0.0 and -0.0, told apart by their text.
            key.append((type(v), v) if v or type(v) is not float else (float, str(v)))
        memo_key = tuple(key)
        hit = self._memo.get(memo_key)
        if hit is None:
            hit = self._evaluate(item, variant, name, fast, data)
            if len(self._memo) >= self._size:
                self._memo.clear()
            self._memo[memo_key] = hit
        return hit

    def _evaluate(
        self, item: ContentItem, variant: Variant, name: str, fast: _FastTemplate | None,
        data: Mapping[str, Any],
    ) -> str:
        if fast is not None:
            try:
                return _run_fast(fast, data, self.renderer.limits.max_render_output)
            except _SlowPathError:
                pass  # this time's values need Liquid's semantics
        return self.renderer.render_field(item, variant, name, data)

    def _plan(self, variant: Variant) -> tuple[_FieldPlan, ...]:
        plan: list[_FieldPlan] = []
        for name, source in variant.fields.items():
            if len(source) > self.renderer.limits.max_template_length:
                # The renderer reports the limit, every time.
                plan.append((name, None, None))
                continue
            reads = _reads(source, self._env)
            if reads is not None and any(path[0] == "customer_id" for path in reads):
                # Unique to each customer: a memo would fill up with outputs never read again.
                reads = None
            plan.append((name, _fast(source, self._env, self.renderer.environment.filters),
                         reads))
        return tuple(plan)

