"""Static checks of delivery policies: topics, frequency caps, quiet hours, and the topics
that Sends and content items name. Called by ``cjo.validation.validate_definitions``."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any, get_args

from cjo.delivery.consent import ANY
from cjo.errors import InvalidEventError, Problem
from cjo.limits import Limits
from cjo.model.definitions import Definitions
from cjo.model.events import check_id
from cjo.model.policies import CapPeriod, FrequencyCap, QuietAction, QuietHours, TopicDefault
from cjo.model.steps import Send

__all__ = ["check_choice", "check_policies"]

_DAY = timedelta(days=1)


def check_choice(value: object, choices: Any, what: str, where: str) -> list[Problem]:
    """A problem when ``value`` is not one of the values of the ``Literal`` type ``choices``.
    The JSON loader refuses such a value; a definition built in Python holds whatever it was
    given, and a misspelt choice must not be read as another (an ``"optin"`` topic as the
    default opt-out)."""
    allowed = get_args(choices)
    if value in allowed and isinstance(value, str):
        return []
    return [Problem(where, f"{what} must be one of {', '.join(sorted(allowed))}, "
                           f"got {value!r:.80}")]


def _id(value: object, what: str, where: str) -> list[Problem]:
    try:
        check_id(value, what)
    except InvalidEventError as exc:
        return [Problem(where, str(exc))]
    return []


def _channel(channel: str, channels: Collection[str] | None, where: str) -> list[Problem]:
    if channels is not None and channel not in channels:
        return [Problem(where, f"channel {channel!r} is not registered")]
    return []


def _check_cap(
    cap: FrequencyCap, channels: Collection[str] | None, tags: Collection[str] | None,
    limits: Limits,
) -> list[Problem]:
    where = f"frequency cap {cap.id!r}"
    problems = _id(cap.id, "frequency cap id", where)
    period = check_choice(cap.period, CapPeriod, "period", where)
    if period:
        return problems + period  # the other checks depend on the period
    if isinstance(cap.limit, bool) or not isinstance(cap.limit, int) or cap.limit < 1:
        problems.append(Problem(where, f"limit must be a positive integer, got {cap.limit!r}"))
    if cap.period == "rolling":
        if cap.per is None or cap.per <= timedelta(0):
            problems.append(Problem(where, "a rolling cap needs a positive 'per' window"))
        elif cap.per < limits.min_wait:  # a bare JSON number is seconds: "per": 7 for 7 days
            problems.append(Problem(where, "'per' is shorter than the minimum wait (a bare "
                                           "number is seconds: write '7d' for days)"))
        elif cap.per > limits.max_duration:
            problems.append(Problem(where, "'per' is longer than the longest duration allowed"))
    elif cap.per is not None:
        problems.append(Problem(where, "a calendar_day cap counts one calendar day: drop 'per'"))
    if cap.channel is not None:
        problems += _channel(cap.channel, channels, where)
    if cap.tag is not None:
        if tags is None:
            problems.append(Problem(where, f"tag {cap.tag!r} used but no taxonomy is published"))
        elif cap.tag not in tags:
            problems.append(Problem(where, f"tag {cap.tag!r} is not in the taxonomy"))
    return problems


def _quiet_length(q: QuietHours) -> timedelta:
    day = datetime(2000, 1, 3)
    start, end = datetime.combine(day, q.start), datetime.combine(day, q.end)
    return end - start if end > start else end + _DAY - start


def _check_quiet(
    q: QuietHours, journey_ids: Collection[str], channels: Collection[str] | None
) -> list[Problem]:
    where = f"quiet hours {q.id!r}"
    problems = _id(q.id, "quiet hours id", where)
    problems += check_choice(q.action, QuietAction, "action", where)
    if q.start.tzinfo is not None or q.end.tzinfo is not None:
        problems.append(Problem(where, "start and end are wall times: give them no time zone"))
        return problems
    if q.start == q.end:
        problems.append(Problem(where, "start and end are the same time: nothing is quiet"))
        return problems
    for day in q.weekdays:
        if isinstance(day, bool) or not isinstance(day, int) or not 0 <= day <= 6:
            problems.append(Problem(where, f"weekday {day!r} is not 0 (Monday) to 6 (Sunday)"))
    if len(set(q.weekdays)) != len(q.weekdays):
        problems.append(Problem(where, "a weekday is named twice"))
    for journey_id in q.journeys:
        if journey_id not in journey_ids:
            problems.append(Problem(where, f"journey {journey_id!r} does not exist"))
    for channel in q.channels:
        problems += _channel(channel, channels, where)
    if q.spread < timedelta(0):
        problems.append(Problem(where, "spread must not be negative"))
    elif q.spread >= _DAY - _quiet_length(q):
        # Released sends must still leave before the next quiet period begins.
        problems.append(Problem(where, "spread must be shorter than the hours that are not quiet"))
    return problems


def check_policies(
    definitions: Definitions, channels: Collection[str] | None, limits: Limits, *,
    topics: Collection[str], journey_ids: Collection[str], tags: Collection[str] | None,
) -> list[Problem]:
    """Every problem with the delivery policies of ``definitions``. ``topics``, ``journey_ids``
    and ``tags`` are what the policies and Sends may name (``tags`` None: no taxonomy is
    published); they may hold more than ``definitions`` (those left out for their shape)."""
    # Duplicate ids are reported by ``cjo.validation.duplicate_ids`` with every other kind's.
    problems: list[Problem] = []
    for topic in definitions.topics:
        problems += _id(topic.id, "topic id", f"topic {topic.id!r}")
        if topic.id == ANY:
            # A statement about topic '*' is one about every topic: this one could never be
            # told apart (never opted in to, unsubscribed by any broad unsubscribe).
            problems.append(Problem(f"topic {topic.id!r}", f"topic id {ANY!r} stands for every "
                                                           "topic in consent statements"))
        problems += check_choice(topic.default, TopicDefault, "default", f"topic {topic.id!r}")
    for cap in definitions.caps:
        problems += _check_cap(cap, channels, tags, limits)
    for q in definitions.quiet_hours:
        problems += _check_quiet(q, journey_ids, channels)
    for item in definitions.content:
        if item.topic is not None and item.topic not in topics:
            problems.append(Problem(f"content {item.id!r}",
                                    f"topic {item.topic!r} is not a declared topic"))
    for journey in definitions.journeys:
        for step_id, step in journey.steps.items():
            if not isinstance(step, Send) or step.topic is None:
                continue
            where = f"journey {journey.id!r} v{journey.version} / step {step_id!r}"
            if step.topic not in topics:
                problems.append(Problem(where, f"topic {step.topic!r} is not a declared topic"))
            if step.transactional is True:
                problems.append(Problem(where, (
                    "a transactional send goes out whatever the customer's subscriptions, so "
                    f"topic {step.topic!r} would never apply: drop the topic, or make the send "
                    "marketing (transactional=False)"
                )))
    return problems
