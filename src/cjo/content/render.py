"""Rendering content variants with Liquid (sandboxed: templates cannot run Python)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from liquid import Environment
from liquid.exceptions import LiquidError

from cjo.errors import RenderError
from cjo.model.content import ContentItem, Variant

__all__ = ["Renderer"]


class Renderer:
    """Parses each template once and renders it many times."""

    def __init__(self) -> None:
        self._env = Environment()
        self._cache: dict[tuple[str, str, str | None, str], Any] = {}

    def render(
        self,
        item: ContentItem,
        variant: Variant,
        data: Mapping[str, Any],
    ) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, source in variant.fields.items():
            key = (item.id, variant.channel, variant.locale, name)
            template = self._cache.get(key)
            try:
                if template is None:
                    # Plain text needs no template engine: keep the string itself.
                    static = "{{" not in source and "{%" not in source
                    template = source if static else self._env.from_string(source)
                    self._cache[key] = template
                out[name] = template if isinstance(template, str) else template.render(**data)
            except LiquidError as exc:
                raise RenderError(
                    f"content {item.id!r} / {variant.channel} / field {name!r}: {exc}"
                ) from exc
        return out
