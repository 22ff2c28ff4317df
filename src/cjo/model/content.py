"""Content: one item, many channel variants and locales, referenced by id from journeys."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

__all__ = ["ContentItem", "Variant"]


@attrs.frozen
class Variant:
    """The fields of one content item on one channel (and optionally one locale).

    Field values are Liquid templates that can read ``profile``, ``event`` (the journey's
    trigger properties), ``context`` and ``customer_id``.
    """

    channel: str
    fields: Mapping[str, str]
    locale: str | None = None


@attrs.frozen
class ContentItem:
    id: str
    variants: tuple[Variant, ...]
    name: str = ""
    tags: tuple[str, ...] = ()
    #: The subscription topic of marketing sends of this item (a Send may name its own).
    topic: str | None = None
    #: Set by publishing: 1 for the first definition of an id, one more for each change.
    #: Every message records the version it rendered.
    version: int = 1

    def variant_for(self, channel: str, locale: str | None = None) -> Variant | None:
        """The best variant for a channel: the exact locale, then its language, then the default."""
        candidates = [v for v in self.variants if v.channel == channel]
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
