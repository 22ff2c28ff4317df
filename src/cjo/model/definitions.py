"""The bundle of definitions published to an engine together."""

from __future__ import annotations

import typing
from collections.abc import Sequence

import attrs

from cjo.frozen import to_tuple
from cjo.model.content import ContentBlock, ContentItem
from cjo.model.governance import (
    ControlGroup,
    JourneyPause,
    VersionChange,
    VersionPublished,
    VersionRetired,
    Withdrawal,
)
from cjo.model.journey import Journey
from cjo.model.offers import Offer
from cjo.model.policies import FrequencyCap, QuietHours, Topic
from cjo.model.segments import Segment
from cjo.model.taxonomy import Taxonomy
from cjo.segments.rules import ProfileRule

__all__ = ["LISTED", "Definitions"]


# Converters typed with their fields' items (why: ``cjo.frozen.to_tuple``).


def _journey_tuple(value: Sequence[Journey]) -> tuple[Journey, ...]:
    return to_tuple(value)


def _segment_tuple(value: Sequence[Segment]) -> tuple[Segment, ...]:
    return to_tuple(value)


def _content_item_tuple(value: Sequence[ContentItem]) -> tuple[ContentItem, ...]:
    return to_tuple(value)


def _journey_pause_tuple(value: Sequence[JourneyPause]) -> tuple[JourneyPause, ...]:
    return to_tuple(value)


def _version_change_tuple(value: Sequence[VersionChange]) -> tuple[VersionChange, ...]:
    return to_tuple(value)


def _version_published_tuple(value: Sequence[VersionPublished]) -> tuple[VersionPublished, ...]:
    return to_tuple(value)


def _topic_tuple(value: Sequence[Topic]) -> tuple[Topic, ...]:
    return to_tuple(value)


def _frequency_cap_tuple(value: Sequence[FrequencyCap]) -> tuple[FrequencyCap, ...]:
    return to_tuple(value)


def _quiet_hours_tuple(value: Sequence[QuietHours]) -> tuple[QuietHours, ...]:
    return to_tuple(value)


def _profile_rule_tuple(value: Sequence[ProfileRule]) -> tuple[ProfileRule, ...]:
    return to_tuple(value)


def _content_block_tuple(value: Sequence[ContentBlock]) -> tuple[ContentBlock, ...]:
    return to_tuple(value)


def _offer_tuple(value: Sequence[Offer]) -> tuple[Offer, ...]:
    return to_tuple(value)


def _withdrawal_tuple(value: Sequence[Withdrawal]) -> tuple[Withdrawal, ...]:
    return to_tuple(value)


def _version_retired_tuple(value: Sequence[VersionRetired]) -> tuple[VersionRetired, ...]:
    return to_tuple(value)


@attrs.frozen
class Definitions:
    """Everything a host declares. Published and validated as one set. ``profile_rules``
    keep profile attributes current from events (``cjo.ProfileRule``)."""

    journeys: tuple[Journey, ...] = attrs.field(default=(), converter=_journey_tuple)
    segments: tuple[Segment, ...] = attrs.field(default=(), converter=_segment_tuple)
    content: tuple[ContentItem, ...] = attrs.field(default=(), converter=_content_item_tuple)
    taxonomy: Taxonomy | None = None
    #: The global control group (none by default).
    control_group: ControlGroup | None = None
    #: At most this many journeys at once per customer (None: no limit).
    max_concurrent_journeys: int | None = None
    #: Pauses (``Engine.pause_journey``): those in force now (no ``until``) and each journey's
    #: last ended ones, with their resume instants, so that a late worker decides as if it had
    #: come during the pause.
    paused: tuple[JourneyPause, ...] = attrs.field(default=(), converter=_journey_pause_tuple)
    #: Migrations and ejections of running customers, in publish order.
    version_changes: tuple[VersionChange, ...] = attrs.field(
        default=(), converter=_version_change_tuple
    )
    #: When each journey version was published (those published by ``Engine.publish``).
    published: tuple[VersionPublished, ...] = attrs.field(
        default=(), converter=_version_published_tuple
    )
    topics: tuple[Topic, ...] = attrs.field(default=(), converter=_topic_tuple)
    caps: tuple[FrequencyCap, ...] = attrs.field(default=(), converter=_frequency_cap_tuple)
    quiet_hours: tuple[QuietHours, ...] = attrs.field(default=(), converter=_quiet_hours_tuple)
    profile_rules: tuple[ProfileRule, ...] = attrs.field(default=(), converter=_profile_rule_tuple)
    #: Template blocks content includes by id.
    blocks: tuple[ContentBlock, ...] = attrs.field(default=(), converter=_content_block_tuple)
    #: Offers Send steps choose from.
    offers: tuple[Offer, ...] = attrs.field(default=(), converter=_offer_tuple)
    #: What ``Engine.withdraw`` took out and was not published again since, and when.
    withdrawn: tuple[Withdrawal, ...] = attrs.field(default=(), converter=_withdrawal_tuple)
    #: The journey versions ``Engine.retire_drained`` retired, and when: still listed in
    #: ``journeys`` (reports and exports name their steps), no longer compiled for deciding.
    retired: tuple[VersionRetired, ...] = attrs.field(default=(), converter=_version_retired_tuple)

    def retired_versions(self) -> frozenset[tuple[str, int]]:
        """The (journey id, version) of every retired version."""
        return frozenset((r.journey_id, r.version) for r in self.retired)


#: The fields of ``Definitions`` that list definitions, and the class of their elements.
LISTED: dict[str, type] = {
    name: typing.get_args(hint)[0]
    for name, hint in typing.get_type_hints(Definitions).items()
    if typing.get_origin(hint) is tuple
}
