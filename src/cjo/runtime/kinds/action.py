"""Action: a call to a host-registered Python callable, made through the outbox."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from cjo.channels.base import Message
from cjo.errors import Problem, RenderError
from cjo.model.content import ContentItem, Variant
from cjo.model.steps import Action
from cjo.runtime.ids import message_key
from cjo.runtime.kinds.base import Checker, Next, StepKind
from cjo.runtime.sending import render_fields

if TYPE_CHECKING:
    from cjo.model.journey import Journey
    from cjo.runtime.core import Decider
    from cjo.runtime.registry import CompiledJourney
    from cjo.runtime.state import Enrollment

__all__ = ["ACTION_CHANNEL_PREFIX", "ActionKind", "action_channel"]

#: Actions travel through the outbox as messages on the channel ``action:<name>``.
ACTION_CHANNEL_PREFIX = "action:"
_ON_FAILURE = ("retry", "skip", "exit")


def action_channel(name: str) -> str:
    return f"{ACTION_CHANNEL_PREFIX}{name}"


class ActionKind(StepKind[Action]):
    step_type = Action

    def successors(self, step: Action) -> list[tuple[str, str | None]]:
        return [("next", step.next)]

    def check(self, step: Action, where: str, journey: Journey, checker: Checker) -> list[Problem]:
        problems = checker.identifier(step.action, "action name", where)
        actions = checker.actions
        if not problems and actions is not None and step.action not in actions:
            known = ", ".join(sorted(actions)) or "none"
            problems.append(Problem(
                where, f"action {step.action!r} is not registered (registered: {known})"
            ))
        if step.on_failure not in _ON_FAILURE:
            problems.append(Problem(
                where, f"on_failure must be retry, skip or exit, got {step.on_failure!r}"
            ))
        problems += checker.text(list(step.params.items()), where)
        return problems

    def compile(self, step: Action) -> tuple[ContentItem, Variant]:
        # The parameters render as the fields of a content item of their own, through the
        # generation's renderer (limits and parsed templates included).
        variant = Variant(action_channel(step.action), step.params)
        return ContentItem(action_channel(step.action), (variant,)), variant

    def run(
        self, d: Decider, cj: CompiledJourney, e: Enrollment, step_id: str, step: Action,
        compiled: Any, at: datetime,
    ) -> Next:
        item, variant = compiled
        params: dict[str, str] = {}
        # Rendered even when messages are not (a back-test): the host's callable reads them,
        # and a failure to render decides the enrollment's path.
        if step.params:
            try:
                # As a message's fields: a NUL (``url_decode`` of ``%00``) fails the render.
                params = render_fields(d, item, variant, variant.channel,
                                       d.template_data(e, at))
            except RenderError as exc:
                d.activity(e, "action_failed", f"{step.action}: {str(exc)[:200]}", at)
                if step.on_failure == "exit":
                    d.end(e, "exited", f"action {step.action} failed", at)
                    return None if not e.active else step.next
                return step.next
        attempt = e.visits.get(step_id, 1)
        message = Message(
            message_key(e.id, step_id, attempt), d.customer_id, action_channel(step.action),
            step.action, params, e.journey_id, e.version, step_id, e.id, at,
        )
        d.add_message(message)
        d.activity(e, "action", step.action, at)
        return step.next
