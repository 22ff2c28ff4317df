"""Content: one item, many channel variants and locales, referenced by id from journeys."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from cjo.frozen import FrozenDict, data_mapping, str_mapping, str_tuple, to_tuple

__all__ = [
    "LOCALE_PROBLEM", "ContentBlock", "ContentItem", "ContentSample", "Variant", "normal_locale",
]


# Converters typed with their fields' items (why: ``cjo.frozen.to_tuple``).


def _variant_tuple(value: Sequence[Variant]) -> tuple[Variant, ...]:
    return to_tuple(value)

# A BCP 47 tag as hosts write them: a language, then subtags of letters and digits, separated
# by "-" or "_".
_LOCALE = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*")


def normal_locale(tag: str) -> str | None:
    """``tag`` in the one spelling locales are matched by ("fr-CA", "zh-Hant-TW"): "_" read as
    "-", the language and other subtags lower-case, a script title-case, a region upper-case;
    None if it is not a locale tag. Tags are case-insensitive (BCP 47), so spellings that
    differ only there are the same locale."""
    if not _LOCALE.fullmatch(tag):
        return None
    language, *rest = tag.replace("_", "-").split("-")
    subtags = [language.lower()]
    for subtag in rest:
        if len(subtag) == 4 and subtag.isalpha():
            subtags.append(subtag.title())  # a script
        elif (len(subtag) == 2 and subtag.isalpha()) or (len(subtag) == 3 and subtag.isdigit()):
            subtags.append(subtag.upper())  # a region
        else:
            subtags.append(subtag.lower())
    return "-".join(subtags)


LOCALE_PROBLEM = "must be a locale tag such as 'fr' or 'fr-CA'"


def _variant_locale(value: str | None) -> Any:
    """A locale tag in its normal spelling; anything else is kept as given: publishing
    reports it at the variant's place, which a constructor cannot know."""
    normal = normal_locale(value) if isinstance(value, str) else None
    return value if normal is None else normal


@attrs.frozen
class Variant:
    """The fields of one content item on one channel (and optionally one locale).

    Field values are Liquid templates that can read ``profile``, ``event`` (the journey's
    trigger properties), ``context`` and ``customer_id``. ``name`` makes it an A/B variant:
    a ``Send(variant=name)`` picks it; a ``Send`` without one picks the unnamed variants.
    """

    channel: str
    fields: Mapping[str, str] = attrs.field(converter=str_mapping)
    #: Normalised (``normal_locale``) when the variant is made: "fr_ca" is stored as "fr-CA".
    locale: str | None = attrs.field(default=None, converter=_variant_locale)
    name: str | None = None


@attrs.frozen
class ContentSample:
    """What a content item's templates are rendered against at publish: a profile's attributes
    and an event's properties (read as ``event`` and ``context``)."""

    profile: Mapping[str, Any] = attrs.field(factory=FrozenDict, converter=data_mapping)
    event: Mapping[str, Any] = attrs.field(factory=FrozenDict, converter=data_mapping)


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
    variants: tuple[Variant, ...] = attrs.field(converter=_variant_tuple)
    name: str = ""
    tags: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
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
        locale, then each shorter prefix of it (``fr-CA``, then ``fr``), then the default (the
        variant without a locale; without one, the first defined).
        Locales match whatever their case or separator (``fr_ca`` is ``fr-CA``)."""
        candidates = [v for v in self.variants if v.channel == channel and v.name == name]
        if not candidates:
            return None
        tag = normal_locale(locale) if locale else None
        while tag:
            for v in candidates:
                if v.locale == tag:
                    return v
            tag = tag.rpartition("-")[0]
        for v in candidates:
            if v.locale is None:
                return v
        return candidates[0]
