"""The bundle of definitions published to an engine together."""

from __future__ import annotations

import attrs

from cjo.model.content import ContentItem
from cjo.model.journey import Journey
from cjo.model.segments import Segment
from cjo.model.taxonomy import Taxonomy
from cjo.segments.rules import ProfileRule

__all__ = ["Definitions"]


@attrs.frozen
class Definitions:
    """Everything a host declares. Published and validated as one set. ``profile_rules``
    keep profile attributes current from events (``cjo.ProfileRule``)."""

    journeys: tuple[Journey, ...] = ()
    segments: tuple[Segment, ...] = ()
    content: tuple[ContentItem, ...] = ()
    taxonomy: Taxonomy | None = None
    profile_rules: tuple[ProfileRule, ...] = ()
