"""Rules across journeys: priorities' companions (concurrency, exclusive groups), the global
control group, paused journeys, and what a new version does to customers already inside."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Literal

import attrs

from cjo.frozen import FrozenDict, str_mapping

__all__ = [
    "CONTROL_DETAIL",
    "PAUSES_KEPT",
    "ControlGroup",
    "JourneyPause",
    "ResumeRule",
    "VersionChange",
    "VersionRetired",
    "Withdrawal",
    "in_control_group",
]

#: The activity detail that marks the control group's entries, conversions and withheld sends
#: (reports count the group by it, so no goal may take it as its name).
CONTROL_DETAIL = "control"

LateRule = Literal["send_late", "skip", "grace"]
VersionMode = Literal["drain", "migrate", "eject"]


@attrs.frozen
class ControlGroup:
    """A stable ``percent`` of all customers, chosen by hashing the customer id with ``salt``:
    they enter journeys and are measured, but receive no journey messages (each withheld send
    is recorded as ``suppressed``/``control``). Transactional messages are never withheld.

    Once published, the salt cannot change and the share cannot grow, so no treated customer
    ever becomes control; shrinking it releases part of the control group into the treated
    group (their sends from then on are delivered; an enrollment's goal still counts with
    the group it entered in; docs/semantics.md)."""

    percent: float
    salt: str = "cjo-control"


def in_control_group(customer_id: str, group: ControlGroup | None) -> bool:
    if group is None or group.percent <= 0:
        return False
    digest = hashlib.blake2b(
        f"{group.salt}\x1f{customer_id}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100 < group.percent


@attrs.frozen
class ResumeRule:
    """What a journey does, on resume, with wake-ups that fell due while it was paused.

    - ``send_late`` (default): they run at the resume instant, sends included.
    - ``skip``: they run at the resume instant, but the sends they reach before the next wait
      are skipped (recorded as ``send_skipped``/``paused``); the journey goes on (a journey
      they jump into was not paused: its sends go).
    - ``grace``: as ``send_late`` for wake-ups at most ``grace`` old at resume, else ``skip``.
    """

    late: LateRule = "send_late"
    grace: timedelta | None = None

    def skips(self, due: datetime, resumed_at: datetime) -> bool:
        """Whether what fell due at ``due`` and is released at ``resumed_at`` has its sends
        skipped: ``skip``, or ``grace`` when it is older than the grace by then."""
        if self.late == "grace":
            return resumed_at - due > (self.grace or timedelta(0))
        return self.late == "skip"


#: Past pauses kept per journey (the most recent ones): a wake-up that fell due inside one is
#: held and released at its resume even when no worker ran during the pause. A wake-up left
#: unfired through more pauses than this fires as if the older ones had not been.
PAUSES_KEPT = 16


@attrs.frozen
class JourneyPause:
    """A pause of a journey (every version) from ``since`` until ``until`` (None: paused now):
    no new entries, and wake-ups due in ``[since, until)`` are held and released at ``until``
    by the journey's ``on_resume`` rule."""

    journey_id: str
    since: datetime
    until: datetime | None = None

    def covers(self, at: datetime) -> bool:
        """Whether the journey was paused at ``at``."""
        until = self.until
        return self.since <= at and (until is None or at < until)


@attrs.frozen
class VersionPublished:
    """When version ``version`` of journey ``journey_id`` was published: entries decided at an
    earlier instant (a timer a late worker fires, a jump in a late wake-up) take the version
    that was the newest then, as a worker on time would have."""

    journey_id: str
    version: int
    at: datetime


@attrs.frozen
class VersionRetired:
    """Version ``version`` of journey ``journey_id`` retired at ``at`` by
    ``Engine.retire_drained``: superseded, and with no customer left on it then. It stays
    known (reports, the activity log, exports name its steps) but is no longer compiled for
    deciding, so it may name definitions withdrawn since; a customer record that still turns
    up on it is moved off it at its next transaction (docs/semantics.md)."""

    journey_id: str
    version: int
    at: datetime


@attrs.frozen
class Withdrawal:
    """Definition ``id`` of the kind ``kind`` (the ``Definitions`` field: ``segments``,
    ``content``...) withdrawn at ``at`` by ``Engine.withdraw``, and kept until it is published
    again. ``version`` is a content item's last content version: published again, the item
    takes the next one, so a content version names one definition in the activity log."""

    kind: str
    id: str
    at: datetime
    version: int | None = None


@attrs.frozen
class VersionChange:
    """What publishing version ``to_version`` of journey ``journey_id`` does to customers inside
    version ``from_version``:

    - ``drain`` (the default, and what happens without a VersionChange): they finish it;
    - ``migrate``: they move to the new version at the step ``steps`` maps their current
      step to (a map that must cover every step of the old version); wake-up instants already
      scheduled are kept;
    - ``eject``: they end as ``ejected`` with ``reason``, at the instant of the publish.

    Applied to each customer at their next transaction (an event, a wake-up, an API call),
    timed at ``at``, the instant of the publish, so the result does not depend on when."""

    journey_id: str
    from_version: int
    to_version: int
    mode: VersionMode = "drain"
    steps: Mapping[str, str] = attrs.field(factory=FrozenDict, converter=str_mapping)
    reason: str = "new version"
    at: datetime | None = None

    @classmethod
    def migrate(cls, steps: Mapping[str, str]) -> VersionChange:
        """A migration to be completed by ``Engine.publish(..., running=...)``."""
        return cls("", 0, 0, "migrate", steps)

    @classmethod
    def eject(cls, reason: str = "new version") -> VersionChange:
        return cls("", 0, 0, "eject", reason=reason)

    @classmethod
    def drain(cls) -> VersionChange:
        return cls("", 0, 0, "drain")
