"""The content side of a Send: which content (an offer or the step's own), rendering it for
the channel, and what a render failure does (the step's ``on_render_error`` policy).

Called from ``Decider.send`` and ``SendKind``; everything here is as pure as the decider.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from cjo.content.channels import channel_type_of, output_problem
from cjo.content.offers import choose_offer, counted
from cjo.content.render import field_error
from cjo.delivery.validation import check_choice
from cjo.errors import Problem, RenderError
from cjo.model.content import ContentItem, Variant
from cjo.model.offers import Offer
from cjo.model.steps import RenderErrorPolicy, Send
from cjo.outcome import SendFailure
from cjo.runtime.state import OfferHistory

if TYPE_CHECKING:
    from cjo.runtime.core import Decider
    from cjo.runtime.kinds.base import Checker
    from cjo.runtime.registry import CompiledJourney
    from cjo.runtime.state import ActivityKind, CustomerState, Enrollment

__all__ = [
    "RENDER_RETRY_DELAYS",
    "choose_content",
    "count_offer",
    "give_back_offer",
    "log_offer",
    "render_failed",
    "render_fields",
    "retry_render",
    "send_content_problems",
    "send_failed",
]

#: How long a Send with ``on_render_error="retry"`` waits before each new render; after the
#: last one fails too, the send is skipped.
RENDER_RETRY_DELAYS: Final = (timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2))

_FALLBACK = "fallback"


def send_content_problems(step: Send, where: str, checker: Checker) -> list[Problem]:
    """What is wrong with the content a Send names: its item, variant, offers and policy."""
    problems: list[Problem] = []
    problems += check_choice(step.on_render_error, RenderErrorPolicy, "on_render_error", where)
    named = f" named {step.variant!r}" if step.variant is not None else ""
    contents = [(step.content, "content")]
    for offer_id in step.offers:
        offer = checker.offers.get(offer_id)
        if offer is not None:
            contents.append((offer.content, f"offer {offer_id!r}: content"))
        elif offer_id not in checker.offer_ids:
            problems.append(Problem(where, f"offer {offer_id!r} does not exist"))
    for content_id, what in contents:
        if content_id not in checker.content_ids:
            if what == "content":
                problems.append(Problem(where, f"content {content_id!r} does not exist"))
            continue  # an offer's missing content is reported on the offer
        if not checker.has_variant(content_id, step.channel, step.variant):
            problems.append(Problem(
                where, f"{what} {content_id!r} has no variant{named} for channel "
                       f"{step.channel!r}"
            ))
    return problems


def choose_content(
    d: Decider, enrollment: Enrollment, step: Send, at: datetime
) -> tuple[str, Offer | None]:
    """(content id, offer) to send: the best eligible offer of the step, else the step's own
    content (and None). Chosen before the delivery policies (an offer's tags count in caps); logged
    by ``log_offer`` once they let the send through."""
    if not step.offers:
        return step.content, None
    offers = d.registry.offers
    compiled = [offers[o] for o in step.offers if o in offers]
    profile = d.profile.attributes
    context = enrollment.context
    scope = d.scope({}, context, enrollment)
    offer = choose_offer(compiled, scope, profile, context, d.state.offers,
                         d.options.scorers, at)
    if offer is None:
        return step.content, None
    return offer.content, offer


def log_offer(
    d: Decider, enrollment: Enrollment, step: Send, offer_id: str | None, at: datetime
) -> None:
    """Record the choice of a Send with offers (``offer``: the offer id, or ``fallback``), once
    per message: a send the delivery policies defer, or that waits to render again, chooses
    again when it goes, and is logged then; one skipped (no variant, a render failure, the
    catch-up limit) is not logged. So the log counts each choice that went on to a message
    once."""
    if step.offers:
        d.activity(enrollment, "offer", offer_id if offer_id is not None else _FALLBACK, at,
                   channel=step.channel)


def count_offer(d: Decider, offer_id: str, at: datetime) -> None:
    """Count a send of ``offer_id`` for the customer's caps."""
    compiled = d.registry.offers.get(offer_id)
    if compiled is not None:
        histories = d.state.own_offers()
        histories[offer_id] = counted(compiled.offer, histories.get(offer_id), at)


def give_back_offer(state: CustomerState, offer_id: str, at: datetime) -> None:
    """Uncount a send of ``offer_id`` made at ``at`` that never went out (withheld before its
    first attempt), as a frequency cap slot is given back: the customer never saw the offer."""
    history = state.offers.get(offer_id)
    if history is None or history.count < 1:
        return
    recent = list(history.recent)
    if at in recent:
        recent.remove(at)
    histories = state.own_offers()
    if history.count == 1:
        del histories[offer_id]
    else:
        histories[offer_id] = OfferHistory(history.count - 1, tuple(recent))


def render_fields(
    d: Decider, item: ContentItem, variant: Variant, channel: str, data: Mapping[str, Any]
) -> dict[str, str]:
    """The variant's fields rendered for ``channel``; ``RenderError`` if a template fails or
    the result is not what the channel type needs (a webhook body that is not JSON)."""
    fields = d.registry.renderer.render(item, variant, data)
    bad = output_problem(channel_type_of(channel, d.options.channel_types), fields)
    if bad is not None:
        raise field_error(RenderError, item, variant, *bad)
    return fields


def send_failed(
    d: Decider, enrollment: Enrollment, step: Send, content_id: str, reason: str,
    action: str, at: datetime, content_version: int | None = None,
) -> None:
    """Record a send that did not happen (``send_failed``, or ``render_retry`` while it will
    be tried again) in the activity log and the outcome."""
    kind: ActivityKind = "render_retry" if action == "retrying" else "send_failed"
    d.activity(enrollment, kind, reason[:200], at, channel=step.channel,
               content_id=content_id, content_version=content_version)
    d.outcome.failures.append(SendFailure(
        enrollment.journey_id, enrollment.id, d.customer_id, enrollment.step_id or "",
        content_id, reason, action, at,
    ))


def render_failed(
    d: Decider, enrollment: Enrollment, step: Send, item: ContentItem, error: RenderError,
    at: datetime,
) -> bool:
    """Apply the step's ``on_render_error`` policy. Returns whether the journey goes on to the
    step's next (False: the enrollment waits to retry, or has ended)."""
    reason = str(error)
    policy = step.on_render_error
    if policy == "retry" and enrollment.retries < len(RENDER_RETRY_DELAYS):
        delay = RENDER_RETRY_DELAYS[enrollment.retries]
        enrollment.retries += 1
        send_failed(d, enrollment, step, item.id, reason, "retrying", at, item.version)
        d.schedule(enrollment, at + delay)
        return False
    if policy == "retry":
        reason = f"{reason} (after {enrollment.retries} retries)"
    enrollment.retries = 0
    if policy == "exit":
        send_failed(d, enrollment, step, item.id, reason, "exited", at, item.version)
        d.end(enrollment, "exited", "render failed", at)
        return False
    send_failed(d, enrollment, step, item.id, reason, "skipped", at, item.version)
    return True


def retry_render(
    d: Decider, cj: CompiledJourney, enrollment: Enrollment, step: Send, at: datetime
) -> bool:
    """The wake-up of a Send waiting to render again: send now (or apply the policy again).
    Returns whether the journey goes on to the step's next."""
    step_id = enrollment.step_id
    if step_id is None:
        return False
    enrollment.wake_at = None
    d.dirty = True
    gone_on = d.send(cj, enrollment, step_id, step, at)
    if gone_on:
        enrollment.retries = 0
    return gone_on
