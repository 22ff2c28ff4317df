"""Segments: named, reusable audiences."""

from __future__ import annotations

import attrs

from cjo.conditions import Condition
from cjo.frozen import str_tuple

__all__ = ["Segment"]


@attrs.frozen
class Segment:
    """An audience defined by a condition over the customer's profile."""

    id: str
    condition: Condition
    name: str = ""
    tags: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
