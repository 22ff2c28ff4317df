"""Delivery policies: subscription topics, frequency caps and quiet hours.

They are definitions like journeys (published together, so every engine on a storage applies
the same rules) and are enforced by ``cjo.delivery`` right before each send, in the customer's
transaction.
"""

from __future__ import annotations

from datetime import time, timedelta
from typing import Literal

import attrs

from cjo.frozen import int_tuple, str_tuple

__all__ = ["FrequencyCap", "QuietHours", "Topic"]

TopicDefault = Literal["opt_out", "opt_in"]
CapPeriod = Literal["rolling", "calendar_day"]
QuietAction = Literal["defer", "skip"]


@attrs.frozen
class Topic:
    """A subscription topic (``newsletter``, ``promotions``...) that marketing sends name.

    ``default`` says what a customer who never said anything gets: ``opt_out`` (default) sends
    until they unsubscribe; ``opt_in`` sends only once they subscribed.
    """

    id: str
    default: TopicDefault = "opt_out"
    name: str = ""


@attrs.frozen
class FrequencyCap:
    """At most ``limit`` marketing sends per period, counted per customer.

    - ``period="rolling"`` with ``per``: any window of that length, half-open (a send exactly
      ``per`` old no longer counts).
    - ``period="calendar_day"``: the customer's calendar day, in their time zone.

    ``channel`` and ``tag`` narrow what counts (and what is capped): only sends on that channel,
    only sends tagged with that taxonomy tag or one below it (the Send's tags, its content's and
    its journey's).
    Neither: every marketing send. Transactional sends are never capped and never counted.
    """

    id: str
    limit: int
    per: timedelta | None = None
    period: CapPeriod = "rolling"
    channel: str | None = None
    tag: str | None = None


@attrs.frozen
class QuietHours:
    """Local hours in which marketing sends do not go out: from ``start`` to ``end`` in the
    customer's time zone (``end`` before ``start`` spans midnight).

    - ``weekdays``: the days (Monday is 0) on which a quiet period starts; empty: every day.
    - ``journeys`` / ``channels``: where it applies; empty: every journey / every channel.
    - ``action``: ``defer`` (default) sends at the end of the quiet period, each customer
      ``spread`` later by a stable share of it (zero: all at the end); ``skip`` drops the send
      and the journey goes on.
    - ``include_transactional``: transactional sends observe it too (default: they do not).
    """

    id: str
    start: time
    end: time
    weekdays: tuple[int, ...] = attrs.field(default=(), converter=int_tuple)
    journeys: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    channels: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    action: QuietAction = "defer"
    spread: timedelta = timedelta(0)
    include_transactional: bool = False
