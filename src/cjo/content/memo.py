"""Memoised rendering: a field's output is reused for the same values of what it reads.

Most sends of one content item differ in a handful of values (a first name, a plan, an item):
Liquid's static analysis tells which variables a template reads, so the rendered text can be
kept per (template, those values) and a repeat costs a dictionary look-up instead of a render.
A template whose output may depend on anything else (loops, counters, partials, the ``date``
filter, which can read the current time) or reads a value that is not a plain scalar is always
rendered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from liquid import Environment
from liquid.exceptions import LiquidError

from cjo.content.render import Renderer
from cjo.model.content import ContentItem, Variant

__all__ = ["MemoRenderer"]

_UNSAFE_TAGS = frozenset({
    "for", "tablerow", "cycle", "increment", "decrement", "include", "render", "liquid",
    "echo", "assign", "capture",
})
_UNSAFE_FILTERS = frozenset({"date"})
_ROOTS = frozenset({"profile", "event", "context", "customer_id"})
_SCALARS = (str, int, float, bool, type(None))
_MISSING = object()
_NO_MEMO = None

Path = tuple[str, ...]


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


def _value(data: Mapping[str, Any], path: Path) -> Any:
    value: Any = data
    for part in path:
        if not isinstance(value, Mapping):
            return _MISSING
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


class MemoRenderer:
    """Renders through ``renderer``, reusing outputs; at most ``size`` outputs are kept."""

    def __init__(self, renderer: Renderer, size: int = 50_000) -> None:
        self.renderer = renderer
        self._size = size
        self._env = Environment()
        self._reads: dict[str, tuple[Path, ...] | None] = {}
        self._memo: dict[tuple[Any, ...], dict[str, str]] = {}

    def _key(self, variant: Variant, data: Mapping[str, Any]) -> tuple[Any, ...] | None:
        key: list[Any] = [id(variant)]
        for source in variant.fields.values():
            if source in self._reads:
                reads = self._reads[source]
            else:
                reads = self._reads[source] = _reads(source, self._env)
            if reads is None:
                return _NO_MEMO
            for path in reads:
                v = _value(data, path)
                if v is not _MISSING and not isinstance(v, _SCALARS):
                    return _NO_MEMO
                # The type too: 1, 1.0 and True are equal keys but render differently.
                key.append((type(v), v))
        return tuple(key)

    def render(
        self, item: ContentItem, variant: Variant, data: Mapping[str, Any]
    ) -> dict[str, str]:
        key = self._key(variant, data)
        if key is None:
            return self.renderer.render(item, variant, data)
        hit = self._memo.get(key)
        if hit is None:
            hit = self.renderer.render(item, variant, data)
            if len(self._memo) >= self._size:
                self._memo.clear()
            self._memo[key] = hit
        return dict(hit)
