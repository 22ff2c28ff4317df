"""Send: one message from a content item on one channel."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from cjo.delivery.validation import check_choice
from cjo.errors import Problem
from cjo.model.steps import CapAction, Send
from cjo.runtime.kinds.base import HALT, Checker, Next, StepKind
from cjo.runtime.sending import retry_render, send_content_problems

if TYPE_CHECKING:
    from cjo.model.journey import Journey
    from cjo.runtime.core import Decider
    from cjo.runtime.registry import CompiledJourney
    from cjo.runtime.state import Enrollment

__all__ = ["SendKind"]


class SendKind(StepKind[Send]):
    step_type = Send

    def successors(self, step: Send) -> list[tuple[str, str | None]]:
        return [("next", step.next)]

    def check(self, step: Send, where: str, journey: Journey, checker: Checker) -> list[Problem]:
        problems = checker.identifier(step.channel, "channel", where)
        if problems:
            return problems
        channels = checker.channels
        if channels is not None and step.channel not in channels:
            known = ", ".join(sorted(channels)) or "none"
            problems.append(Problem(
                where, f"channel {step.channel!r} is not registered (registered: {known})"
            ))
        problems += check_choice(step.when_capped, CapAction, "when_capped", where)
        problems += send_content_problems(step, where, checker)
        return problems + _check_fallbacks(step, where, checker)

    def run(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step_id: str, step: Send,
        compiled: Any, at: datetime,
    ) -> Next:
        if not d.send(cj, e, step_id, step, at):
            return HALT
        return step.next

    def wake(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step: Send, compiled: Any,
        at: datetime,
    ) -> Next:
        # A send waits on its step when delivery policies deferred it (quiet hours, a
        # frequency cap) or a render is retried: every rule is checked again.
        if not retry_render(d, cj, e, step, at):
            return HALT
        return step.next


def _check_fallbacks(step: Send, where: str, checker: Checker) -> list[Problem]:
    problems: list[Problem] = []
    seen = {step.channel}
    named = f" named {step.variant!r}" if step.variant is not None else ""
    # What a fallback may send: the step's content, or an offer's, in the step's variant.
    contents = [(step.content, "content")]
    for offer_id in step.offers:
        offer = checker.offers.get(offer_id)
        if offer is not None:  # an unknown offer is reported with the step's content
            contents.append((offer.content, f"offer {offer_id!r}: content"))
    for channel in step.fallbacks:
        found = checker.identifier(channel, "fallback channel", where)
        if found:
            problems += found
            continue
        if channel in seen:
            problems.append(Problem(where, f"fallback channel {channel!r} is named twice"))
            continue
        seen.add(channel)
        channels = checker.channels
        if channels is not None and channel not in channels:
            problems.append(Problem(where, f"fallback channel {channel!r} is not registered"))
        for content_id, what in contents:
            if content_id in checker.content_ids and not checker.has_variant(
                content_id, channel, step.variant
            ):
                problems.append(Problem(
                    where, f"{what} {content_id!r} has no variant{named} for fallback channel "
                           f"{channel!r}"
                ))
    return problems
