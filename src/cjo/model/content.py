"""Content: one item, many channel variants and locales, referenced by id from journeys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["ContentBlock", "ContentItem", "ContentSample", "Variant"]


@attrs.frozen
class Variant:
    """The fields of one content item on one channel (and optionally one locale).

    Field values are Liquid templates that can read ``profile``, ``event`` (the journey's
    trigger properties), ``context`` and ``customer_id``. ``name`` makes it an A/B variant:
    a ``Send(variant=name)`` picks it; a ``Send`` without one picks the unnamed variants.
    """

    channel: str
    fields: Mapping[str, str]
    locale: str | None = None
    name: str | None = None


@attrs.frozen
class ContentSample:
    """What a content item's templates are rendered against at publish: a profile's attributes
    and an event's properties (read as ``event`` and ``context``)."""

    profile: Mapping[str, Any] = attrs.field(factory=dict)
    event: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ContentBlock:
    """A reusable piece of template, published with the content and included by id from
    templates: ``{% include 'footer' %}`` (sees the including template's variables) or
    ``{% render 'footer' %}`` (sees only what is passed to it)."""

    id: str
    source: str


@attrs.frozen
class ContentItem:
    id: str
    variants: tuple[Variant, ...]
    name: str = ""
    tags: tuple[str, ...] = ()
    #: The subscription topic of marketing sends of this item (a Send may name its own).
    topic: str | None = None
    #: Set by publishing: 1 for the first definition of an id, one more for each change (of
    #: the item, or of a block it includes). Every message records the version it rendered.
    version: int = 1
    #: What the templates are rendered against at publish (derived when None).
    sample: ContentSample | None = None

    def variant_for(
        self, channel: str, locale: str | None = None, name: str | None = None
    ) -> Variant | None:
        """The best variant named ``name`` (None: the unnamed ones) for a channel: the exact
        locale, then its language (``fr-CA``, then ``fr``), then the default."""
        candidates = [v for v in self.variants if v.channel == channel and v.name == name]
        if not candidates:
            return None
        if locale:
            language = locale.split("-")[0].split("_")[0]
            for wanted in (locale, language):
                for v in candidates:
                    if v.locale == wanted:
                        return v
        for v in candidates:
            if v.locale is None:
                return v
        return candidates[0]
