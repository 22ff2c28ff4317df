"""The bundle of definitions published to an engine together."""

from __future__ import annotations

import typing

import attrs

from cjo.model.content import ContentBlock, ContentItem
from cjo.model.governance import ControlGroup, JourneyPause, VersionChange, VersionPublished
from cjo.model.journey import Journey
from cjo.model.offers import Offer
from cjo.model.policies import FrequencyCap, QuietHours, Topic
from cjo.model.segments import Segment
from cjo.model.taxonomy import Taxonomy
from cjo.segments.rules import ProfileRule

__all__ = ["LISTED", "Definitions"]


@attrs.frozen
class Definitions:
    """Everything a host declares. Published and validated as one set. ``profile_rules``
    keep profile attributes current from events (``cjo.ProfileRule``)."""

    journeys: tuple[Journey, ...] = ()
    segments: tuple[Segment, ...] = ()
    content: tuple[ContentItem, ...] = ()
    taxonomy: Taxonomy | None = None
    #: The global control group (none by default).
    control_group: ControlGroup | None = None
    #: At most this many journeys at once per customer (None: no limit).
    max_concurrent_journeys: int | None = None
    #: Pauses (``Engine.pause_journey``): those in force now (no ``until``) and each journey's
    #: last ended ones, with their resume instants, so that a late worker decides as if it had
    #: come during the pause.
    paused: tuple[JourneyPause, ...] = ()
    #: Migrations and ejections of running customers, in publish order.
    version_changes: tuple[VersionChange, ...] = ()
    #: When each journey version was published (those published by ``Engine.publish``).
    published: tuple[VersionPublished, ...] = ()
    topics: tuple[Topic, ...] = ()
    caps: tuple[FrequencyCap, ...] = ()
    quiet_hours: tuple[QuietHours, ...] = ()
    profile_rules: tuple[ProfileRule, ...] = ()
    #: Template blocks content includes by id.
    blocks: tuple[ContentBlock, ...] = ()
    #: Offers Send steps choose from.
    offers: tuple[Offer, ...] = ()


#: The fields of ``Definitions`` that list definitions, and the class of their elements.
LISTED: dict[str, type] = {
    name: typing.get_args(hint)[0]
    for name, hint in typing.get_type_hints(Definitions).items()
    if typing.get_origin(hint) is tuple
}
