"""Host actions: Python callables an ``Action`` step calls, delivered through the outbox like
messages (same retries, back-off, dead letters and idempotency keys)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cjo.channels.base import Channel, DeliveryResult, Message, is_async
from cjo.errors import UsageError
from cjo.model.events import check_id

__all__ = ["ActionFunction", "action_channels"]

#: An action receives the call as a ``Message``: ``content_id`` is the action's name,
#: ``fields`` its rendered parameters, ``idempotency_key`` is stable across retries (use it to
#: make the call once). Return None (or a ``DeliveryResult``); raise for a transient failure,
#: return ``DeliveryResult.permanent(...)`` for one that must not be retried.
ActionFunction = Callable[[Message], DeliveryResult | None]


class _ActionChannel(Channel):
    def __init__(self, name: str, function: ActionFunction) -> None:
        self.name = name
        self.function = function

    def send(self, message: Message) -> DeliveryResult:
        result = self.function(message)
        if result is None:
            return DeliveryResult("delivered")
        if not isinstance(result, DeliveryResult):
            # Transient, as for a channel: a bug in the host's function must not lose the call.
            return DeliveryResult.transient(
                f"action {self.name!r} returned {result!r:.200}, not None or a DeliveryResult"
            )
        return result


def action_channels(actions: Mapping[str, ActionFunction]) -> dict[str, Channel]:
    """The outbox channel of each registered action (``action:<name>``)."""
    from cjo.runtime.kinds.action import action_channel  # noqa: PLC0415  (kinds import channels)

    out: dict[str, Channel] = {}
    for name, function in actions.items():
        check_id(name, "action name")
        if not callable(function):
            raise UsageError(f"action {name!r} is not callable: {function!r}")
        if is_async(function):
            raise UsageError(
                f"action {name!r} is a coroutine function (async def), which cjo calls "
                "without awaiting: every call would fail; register a plain function"
            )
        out[action_channel(name)] = _ActionChannel(name, function)
    return out
