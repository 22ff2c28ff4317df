"""Choosing an offer (next best action): eligibility, caps, scores, and the per-customer counts.

Pure functions of the offers, the customer's offer history and ``now``; the decision core calls
them (``cjo.runtime.sending``) and records the choice.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs

from cjo.conditions import CompiledCondition, compile_condition
from cjo.model.offers import Offer
from cjo.runtime.state import OfferHistory

__all__ = ["CompiledOffer", "Scorer", "capped", "choose_offer", "counted", "sends_kept"]

#: A host scorer: (profile attributes, enrollment context) -> score.
Scorer = Callable[[Mapping[str, Any], Mapping[str, Any]], float]

_NONE = OfferHistory()


@attrs.frozen(slots=True)
class CompiledOffer:
    offer: Offer
    when: CompiledCondition | None

    @classmethod
    def compile(cls, offer: Offer) -> CompiledOffer:
        return cls(offer, compile_condition(offer.when) if offer.when is not None else None)


def capped(offer: Offer, history: OfferHistory | None, now: datetime) -> bool:
    """Whether the offer's cap keeps it from this customer at ``now``."""
    cap = offer.cap
    if cap is None or history is None:
        return False
    if cap.per is None:
        return history.count >= cap.times
    since = now - cap.per
    return sum(1 for t in history.recent if t > since) >= cap.times


def sends_kept(offer: Offer) -> int:
    """How many recent send instants of ``offer`` a customer's history keeps: as many as a
    rolling cap counts (none without one)."""
    return offer.cap.times if offer.cap is not None and offer.cap.per is not None else 0


def counted(offer: Offer, history: OfferHistory | None, now: datetime) -> OfferHistory:
    """The customer's history of ``offer`` once it is sent at ``now``: the recent instants kept
    are only as many as a rolling cap counts (``sends_kept``)."""
    history = history if history is not None else _NONE
    keep = sends_kept(offer)
    recent = (*history.recent, now)[-keep:] if keep else ()
    return OfferHistory(history.count + 1, recent)


def _score(
    offer: Offer, scorers: Mapping[str, Scorer], profile: Mapping[str, Any],
    context: Mapping[str, Any],
) -> float | None:
    if offer.scorer is None:
        # The whole number itself: a float would round a large priority into a tie, or
        # overflow past any float (Python compares an int with a float exactly).
        return offer.priority
    scorer = scorers.get(offer.scorer)
    if scorer is None:
        return None
    try:
        # Copies: the profile and context are the customer's record, which a scorer that
        # writes into what it is given would change unseen (and differently per storage).
        value = scorer(copy.deepcopy(profile), copy.deepcopy(context))
    except Exception:  # a host scorer that fails leaves its offer out, not the whole send
        return None
    # Any real number: a model's score is often a NumPy scalar, a Decimal or a Fraction, and
    # must not silently leave its offer out. A bool is an answer, not a score.
    if isinstance(value, bool) or not isinstance(value, numbers.Real | Decimal):
        return None
    try:
        score = float(value)
    except (OverflowError, ValueError):  # a whole number past any float; a signalling NaN
        return None
    return None if math.isnan(score) else score


def choose_offer(
    offers: Iterable[CompiledOffer],
    scope: Any,
    profile: Mapping[str, Any],
    context: Mapping[str, Any],
    histories: Mapping[str, OfferHistory],
    scorers: Mapping[str, Scorer],
    now: datetime,
) -> Offer | None:
    """The best eligible offer (highest score, then lowest id), or None. An offer whose scorer
    is not registered, raises or returns no number (or NaN, or an int past any float) is not
    eligible. A scorer is given copies of the profile and the context."""
    best: tuple[float, str] | None = None
    chosen: Offer | None = None
    for compiled in offers:
        offer = compiled.offer
        if compiled.when is not None and not compiled.when(scope):
            continue
        if capped(offer, histories.get(offer.id), now):
            continue
        score = _score(offer, scorers, profile, context)
        if score is None:
            continue
        key = (-score, offer.id)
        if best is None or key < best:
            best, chosen = key, offer
    return chosen
