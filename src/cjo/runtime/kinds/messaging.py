"""Send: one message from a content item on one channel."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from cjo.errors import Problem
from cjo.model.steps import Send
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
        problems += send_content_problems(step, where, checker)
        return problems

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
        # Only a render retry (on_render_error="retry") waits on a Send step.
        if not retry_render(d, cj, e, step, at):
            return HALT
        return step.next
