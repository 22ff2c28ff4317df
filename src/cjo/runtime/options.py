"""Engine-wide settings the decision core reads: one object, built once per engine.

New engine-wide policies (default time zone, quiet hours, caps, consent, control group...) add a
field here and a keyword to ``Engine``; the decider reads ``self.options``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

from cjo.limits import DEFAULT_LIMITS, Limits

__all__ = ["DEFAULT_RECIPIENT_ATTRIBUTES", "STANDARD_CONTACT_ATTRIBUTES", "DecisionOptions"]

#: Profile attributes a message carries for its channel by default (contact details).
DEFAULT_RECIPIENT_ATTRIBUTES: tuple[str, ...] = (
    "email", "phone", "push_token", "device_token", "first_name", "last_name", "name",
)

#: A common mapping of channels to the profile attribute each needs (pass it, or your own, as
#: ``Engine(contact_attributes=...)``; exported as ``cjo.delivery.STANDARD_CONTACT_ATTRIBUTES``).
STANDARD_CONTACT_ATTRIBUTES: Mapping[str, str] = {
    "email": "email", "sms": "phone", "push": "push_token",
}


@attrs.frozen(slots=True)
class DecisionOptions:
    """- ``render``: False records messages without rendering content (back-tests).
    - ``keep_ended``: how many ended enrollments each customer record keeps.
    - ``recipient_attributes``: the profile attributes a message carries for its channel.
    - ``limits``: template, definition and catch-up limits.
    - ``default_timezone``: the zone of calendar rules for customers whose profile and journey
      name none (then UTC).
    - ``late_events``: what an event stamped before the newest event already decided for its
      customer (with an effect) does: ``decide`` it at now like any other (the default), or
      ``ignore`` it. Either way it is recorded as ``late_event`` in the activity log.
    - ``contact_attributes``: channel -> the profile attribute a customer needs to be reached
      on it (a customer without it is not sent to on that channel; fallbacks are tried).
      Channels not named need none.
    - ``channel_types``: registered channel name -> channel type (``cjo.content.channels``).
    - ``scorers``: offer scorers by name, called with the profile's attributes and the
      enrollment's context; they must be deterministic.
    - ``worker_on_time``: every wake-up is fired at its own instant, by whoever fires it (a
      back-test). One catch-up may then fire wake-ups of several instants, each of which a
      worker on time would have fired in a catch-up of its own: the catch-up limit counts the
      sends of each instant apart, and a message is sent as at the instant it was decided
      (quiet hours do not hold it as a late one)."""

    render: bool = True
    keep_ended: int = 1
    recipient_attributes: tuple[str, ...] = DEFAULT_RECIPIENT_ATTRIBUTES
    limits: Limits = DEFAULT_LIMITS
    default_timezone: str | None = None
    late_events: Literal["decide", "ignore"] = "decide"
    contact_attributes: Mapping[str, str] = attrs.field(factory=dict)
    channel_types: Mapping[str, str] = attrs.field(factory=dict)
    scorers: Mapping[str, Callable[[Mapping[str, Any], Mapping[str, Any]], float]] = (
        attrs.field(factory=dict)
    )
    worker_on_time: bool = False


DEFAULT_OPTIONS = DecisionOptions()
