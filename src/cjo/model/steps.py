"""Steps: the nodes of a journey graph. ``next=None`` means the enrollment completes there."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import time, timedelta
from typing import Any, ClassVar, Literal, cast, get_args

import attrs

from cjo.conditions import Condition, Field, Ref
from cjo.frozen import FrozenDict, data_mapping, str_mapping, str_tuple, to_tuple

__all__ = [
    "Action",
    "AudiencePath",
    "AudiencePaths",
    "Branch",
    "Case",
    "Exit",
    "Jump",
    "Send",
    "Split",
    "SplitPath",
    "Step",
    "UpdateProfile",
    "Wait",
    "WaitForEvent",
    "WaitSinceEntry",
    "WaitUntil",
    "WaitUntilDate",
]


# Converters typed with their fields' items (why: ``cjo.frozen.to_tuple``).


def _case_tuple(value: Sequence[Case]) -> tuple[Case, ...]:
    return to_tuple(value)


def _split_path_tuple(value: Sequence[SplitPath]) -> tuple[SplitPath, ...]:
    return to_tuple(value)


def _audience_path_tuple(value: Sequence[AudiencePath]) -> tuple[AudiencePath, ...]:
    return to_tuple(value)


RenderErrorPolicy = Literal["skip", "retry", "exit"]
#: What a Send does when a frequency cap holds it (``Send.when_capped``).
CapAction = Literal["skip", "defer", "exit"]


@attrs.frozen
class Send:
    """Send content ``content`` on channel ``channel``.

    - Delivery policies (docs/delivery-policies.md): ``topic`` is the subscription topic of a
      marketing send (else the content item's); ``fallbacks`` are the channels tried in order
      when the customer cannot be reached on ``channel``; ``when_capped`` is what a frequency
      cap does to it: ``skip`` (go on), ``defer`` (wait until the cap allows) or ``exit``.
    - ``variant``: the A/B variant (``Variant.name``) to send; None sends the unnamed ones.
    - ``offers``: offer ids to choose from (the best eligible one is sent; ``content`` when
      none is eligible).
    - ``on_render_error``: what a template that fails to render for this customer does:
      ``skip`` (record ``send_failed`` and go on), ``retry`` (wait and render again a few
      times, then skip) or ``exit`` (end the enrollment as ``exited``, ``render failed``).
    """

    kind: ClassVar[str] = "send"
    content: str
    channel: str
    next: str | None = None
    transactional: bool = False
    tags: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    topic: str | None = None
    fallbacks: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    when_capped: CapAction = "skip"
    variant: str | None = None
    offers: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    on_render_error: RenderErrorPolicy = "skip"


@attrs.frozen
class Wait:
    """Wait exactly ``duration`` (1 day is 86,400 s, whatever the calendar does)."""

    kind: ClassVar[str] = "wait"
    duration: timedelta
    next: str | None = None
    tags: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)


@attrs.frozen
class WaitForEvent:
    """Wait up to ``timeout`` for ``event`` (matching ``where``); go to ``on_event`` if it
    comes, to ``on_timeout`` if it does not.

    ``of_send`` names an earlier Send step of the same journey: only an event about the
    message this enrollment sent there counts, one whose ``message_id`` property is that
    message's idempotency key (an ``opened`` or ``clicked`` event as the provider reports it,
    see docs/delivery-policies.md). A step passed more than once counts its latest pass; a
    pass that sent nothing (control group, cap, consent, quiet hours...) and a step not yet
    reached leave nothing to match, so the wait times out.
    """

    kind: ClassVar[str] = "wait_for_event"
    event: str
    timeout: timedelta
    on_event: str | None = None
    on_timeout: str | None = None
    where: Condition | None = None
    tags: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    of_send: str | None = None


def _as_time(value: time | str) -> time:
    """``"09:00"`` reads as ``time(9, 0)``. Anything else is kept as given: validation reports it
    at the step's place, which a constructor cannot know."""
    if isinstance(value, str):
        try:
            return time.fromisoformat(value)
        except ValueError:
            return cast(time, value)
    return value


def _as_ref(value: Ref | Field | str) -> Ref:
    """``attr("renewal_date")`` or ``"profile.renewal_date"`` reads as that reference."""
    if isinstance(value, Field):
        return value.ref
    if isinstance(value, str):
        scope, _, path = value.partition(".")
        return Ref(scope, path)  # type: ignore[arg-type]  # an unknown scope is reported by validation
    return value


_FIELD_NAME = "must name a field, such as attr('renewal_date') or 'profile.renewal_date'"
_TIME_OF_DAY = "must be a time of day: 'HH:MM' or a datetime.time"


@attrs.frozen
class WaitUntil:
    """Wait until the wall time ``at`` in the customer's time zone, on one of ``weekdays``
    (``"mon"`` ... ``"sun"``; any day when empty).

    Arriving exactly at that time goes on at once; arriving after it waits for the next day (or
    the next allowed weekday). The zone is the profile's, else the journey's, else the engine's
    default, else UTC. A wall time that does not exist (a spring-forward gap) moves forward to
    the first instant after the gap; one that happens twice (autumn) takes its first occurrence.
    A day the zone skips has no occurrence.
    """

    kind: ClassVar[str] = "wait_until"
    at: time = attrs.field(converter=_as_time, metadata={"expects": _TIME_OF_DAY})
    weekdays: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    next: str | None = None
    tags: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)


@attrs.frozen
class WaitUntilDate:
    """Wait until the date or instant held in ``date`` (a profile attribute, a context value such
    as a trigger event's property), moved by ``days`` calendar days and ``offset`` (exact time),
    at the wall time ``at`` when given, in the customer's time zone.

    ``days=-1, at="09:00"`` is 09:00 on the day before; ``offset=-2h`` is two hours (7,200 s)
    before. Values may be ISO dates (``"2026-05-10"``, the start of that day), ISO datetimes, or
    datetimes; one without an offset is a wall time in the customer's zone.

    Arriving at or after that instant goes on at once to ``next``; strictly after it, to
    ``on_past`` when given. A missing or unreadable value goes to ``on_missing`` when given,
    else on to ``next``; both are recorded in the activity log (``date_past``,
    ``date_missing``).
    """

    kind: ClassVar[str] = "wait_until_date"
    date: Ref = attrs.field(converter=_as_ref, metadata={"expects": _FIELD_NAME})
    days: int = 0
    offset: timedelta = timedelta(0)
    at: time | None = attrs.field(
        default=None, converter=attrs.converters.optional(_as_time),
        metadata={"expects": f"{_TIME_OF_DAY}, or None"},
    )
    next: str | None = None
    on_past: str | None = None
    on_missing: str | None = None
    tags: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)


@attrs.frozen
class WaitSinceEntry:
    """Wait until ``duration`` has passed since the enrollment entered the journey (its entry
    instant plus exactly ``duration``); if that is already past, go on at once."""

    kind: ClassVar[str] = "wait_since_entry"
    duration: timedelta
    next: str | None = None
    tags: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)


@attrs.frozen
class Case:
    """One case of a Branch: go to ``next`` when ``condition`` holds."""

    condition: Condition
    next: str | None = None


@attrs.frozen
class Branch:
    """Take the first case whose condition holds, else ``default``."""

    kind: ClassVar[str] = "branch"
    cases: tuple[Case, ...] = attrs.field(converter=_case_tuple)
    default: str | None = None
    tags: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)


@attrs.frozen
class SplitPath:
    """One path of a Split, taken by a ``weight`` share of customers."""

    name: str
    weight: float
    next: str | None = None


@attrs.frozen
class Split:
    """Send each customer down one path, chosen by a stable hash of (customer, journey, step)."""

    kind: ClassVar[str] = "split"
    paths: tuple[SplitPath, ...] = attrs.field(converter=_split_path_tuple)
    tags: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)


@attrs.frozen
class UpdateProfile:
    """Set (and unset) profile attributes."""

    kind: ClassVar[str] = "update_profile"
    set: Mapping[str, Any] = attrs.field(factory=FrozenDict, converter=data_mapping)
    unset: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)
    next: str | None = None
    tags: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)


@attrs.frozen
class Exit:
    """End the enrollment here as ``exited`` with ``reason``."""

    kind: ClassVar[str] = "exit"
    reason: str = "exit step"
    tags: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)


@attrs.frozen
class AudiencePath:
    """One path of AudiencePaths: customers in ``segment`` go to ``next``."""

    segment: str
    next: str | None = None


@attrs.frozen
class AudiencePaths:
    """Send each customer down the first path (in rank order) whose segment they are in, and
    everyone else to ``default``. The path taken is recorded (``"everyone else"`` for the
    default)."""

    kind: ClassVar[str] = "audience_paths"
    paths: tuple[AudiencePath, ...] = attrs.field(converter=_audience_path_tuple)
    default: str | None = None
    tags: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)


@attrs.frozen
class Action:
    """Call the host's action ``action`` (registered with ``Engine(actions=...)``) with
    ``params``, Liquid templates rendered like content fields. The call goes through the
    outbox, after the transaction commits, with an idempotency key that is stable across
    retries; the journey goes on to ``next`` at once.

    ``on_failure``: ``retry`` (default: a failing call is retried with back-off, as messages
    are, and kept as a dead letter if it never succeeds), ``skip`` (not retried: the first
    failure is final) or ``exit`` (retried; when it finally fails the enrollment ends as
    ``exited``)."""

    kind: ClassVar[str] = "action"
    action: str
    params: Mapping[str, str] = attrs.field(factory=FrozenDict, converter=str_mapping)
    next: str | None = None
    on_failure: Literal["retry", "skip", "exit"] = "retry"
    tags: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)


@attrs.frozen
class Jump:
    """Enter the customer into journey ``journey`` (its latest version, with this enrollment's
    context; its audience, re-entry and cross-journey rules apply). With ``end_current`` (the
    default) this enrollment ends as ``completed`` first; otherwise it goes on to ``next``."""

    kind: ClassVar[str] = "jump"
    journey: str
    end_current: bool = True
    next: str | None = None
    tags: tuple[str, ...] = attrs.field(default=(), converter=str_tuple)


Step = (
    Send | Wait | WaitForEvent | Branch | Split | UpdateProfile | Exit | WaitUntil
    | WaitUntilDate | WaitSinceEntry | AudiencePaths | Jump | Action
)
#: The classes of ``Step``, read from the union so that a new step class is listed once.
STEP_TYPES: tuple[type[Any], ...] = get_args(Step)
