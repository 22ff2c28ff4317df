"""Taxonomy: the hierarchy of categories that tags must come from."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from cjo.frozen import to_tuple

__all__ = ["Category", "Taxonomy"]


# Converters typed with their fields' items (why: ``cjo.frozen.to_tuple``).


def _category_tuple(value: Sequence[Category]) -> tuple[Category, ...]:
    return to_tuple(value)


@attrs.frozen
class Category:
    """One category; its tag is the path of ids from the root, joined with ``/``."""

    id: str
    name: str = ""
    children: tuple[Category, ...] = attrs.field(default=(), converter=_category_tuple)


@attrs.frozen
class Taxonomy:
    """A forest of categories. ``lifecycle/onboarding`` is the tag of ``onboarding`` under
    ``lifecycle``; tagging with a path also tags with each of its ancestors for roll-ups."""

    categories: tuple[Category, ...] = attrs.field(default=(), converter=_category_tuple)

    def tags(self) -> frozenset[str]:
        out: set[str] = set()
        stack = [(c, "") for c in self.categories]
        while stack:
            cat, prefix = stack.pop()
            path = f"{prefix}{cat.id}"
            out.add(path)
            stack.extend((child, f"{path}/") for child in cat.children)
        return frozenset(out)

    @staticmethod
    def ancestors(tag: str) -> list[str]:
        """``a/b/c`` -> ``["a", "a/b", "a/b/c"]``: what a tag rolls up to."""
        parts = tag.split("/")
        return ["/".join(parts[: i + 1]) for i in range(len(parts))]
