"""Offers: content a Send chooses per customer (next best action).

A ``Send(offers=(...))`` sends the best offer the customer is eligible for, and its own
``content`` when none is. Eligible: the offer's ``when`` condition holds (it reads the profile
and the enrollment's context) and its ``cap`` is not used up for this customer. Best: the
highest score, which is the value of the host's scorer named ``scorer`` (``Engine(scorers=...)``)
when given, else ``priority``; ties go to the offer id in lexical order.
"""

from __future__ import annotations

from datetime import timedelta

import attrs

from cjo.conditions import Condition
from cjo.frozen import str_tuple

__all__ = ["Offer", "OfferCap"]


@attrs.frozen
class OfferCap:
    """At most ``times`` sends of an offer to one customer: ever, or within any rolling
    ``per`` (half-open: a send exactly ``per`` ago no longer counts). ``OfferCap(1, per=7d)`` is
    once a week."""

    times: int = 1
    per: timedelta | None = None


@attrs.frozen
class Offer:
    id: str
    #: The content item sent when this offer is chosen.
    content: str
    #: Who is eligible (everyone when None).
    when: Condition | None = None
    priority: int = 0
    #: The name of a host scorer (``Engine(scorers={name: fn})``): ``fn(profile, context)``
    #: returns the offer's score; it must be deterministic.
    scorer: str | None = None
    cap: OfferCap | None = None
    tags: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
