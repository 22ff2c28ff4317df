"""Every exception cjo raises on purpose.

The tree (docs/limits.md says what each one means and what to do about it)::

    CjoError
    ├── DefinitionError          definitions are invalid or over a limit (lists every problem)
    ├── InvalidEventError        an event or profile update is malformed, or holds a value that
    │                            cannot be stored alike everywhere (NaN, Decimal, a NUL in an
    │                            id...); nothing was stored
    │   ├── UnknownTopicError    ...a consent statement names a topic no definition declares
    │   └── UnknownChannelError  ...consent or a block names a channel neither registered nor
    │                            named by the published definitions
    ├── UnknownJourneyError      a journey id that was never published
    ├── ClockError               a clock asked to go backwards, or a naive "now"
    ├── UsageError               a call's argument is out of range (a negative poll interval...)
    │   └── JourneyNotPausedError
    │                            ...resume_journey names a journey that is not paused
    ├── RenderError              a content template failed to render for one message
    │   └── RenderLimitError     ...because it hit a template limit (loops, output, time)
    ├── ChannelError             for a channel adapter's own failures; cjo never raises it
    └── StorageError             a storage adapter failed; nothing half-written was kept
        ├── ConflictError        another worker changed the same customer at the same time
        ├── CommitOutcomeUnknownError
        │                        the connection was lost while a commit was under way: whether
        │                        it was stored is unknown
        ├── CorruptRecordError   a stored customer record cannot be decoded (names the customer)
        ├── UnreadableDefinitionsError
        │                        a stored definitions generation uses what this cjo does not know
        │                        (written by a newer cjo) or cannot be decoded (names it)
        └── SchemaError          the database schema is newer than this cjo, or cannot be migrated
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import attrs

__all__ = [
    "ChannelError",
    "CjoError",
    "ClockError",
    "ConflictError",
    "CorruptRecordError",
    "DefinitionError",
    "InvalidEventError",
    "JourneyNotPausedError",
    "Problem",
    "RenderError",
    "RenderLimitError",
    "SchemaError",
    "StorageError",
    "UnknownChannelError",
    "UnknownJourneyError",
    "UnknownTopicError",
    "UnreadableDefinitionsError",
    "UsageError",
]


class CjoError(Exception):
    """The root of every error cjo raises on purpose."""


@attrs.frozen
class Problem:
    """One thing wrong with a definition: where it is and what is wrong."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class DefinitionError(CjoError, ValueError):
    """Definitions are invalid. ``problems`` lists every problem found, each with its location."""

    def __init__(self, problems: Iterable[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem("definitions", problems)]
        self.problems: Sequence[Problem] = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in definitions:\n{lines}")


class InvalidEventError(CjoError, ValueError):
    """An event is malformed; it was not stored and changed nothing."""


class UnknownTopicError(InvalidEventError):
    """A consent statement (``Engine.set_consent``, a ``subscribed`` or ``unsubscribed`` event)
    names a topic that the published definitions do not declare: sends name declared topics
    only, so it could never apply (a typo). ``topic`` names it and ``declared`` lists the
    declared topics; nothing was stored."""

    def __init__(self, topic: str, declared: Iterable[str], where: str = "") -> None:
        self.topic = topic
        self.declared = tuple(sorted(declared))
        known = _listed("declared", self.declared, "no topic is declared")
        super().__init__(
            f"{where}topic {topic!r} is not declared by the published definitions ({known}); "
            "publish it as a Topic first"
        )


class UnknownChannelError(InvalidEventError):
    """A consent statement or a channel block (``Engine.set_consent``, ``block_channel``,
    ``unblock_channel``, or a consent or delivery-feedback event's ``channel``) names a channel
    that is neither registered with the engine nor named by the published definitions: no
    message can go out on it, so it could never apply (a typo). ``channel`` names it and
    ``known`` lists the known channels; nothing was stored."""

    def __init__(self, channel: str, known: Iterable[str], where: str = "") -> None:
        self.channel = channel
        self.known = tuple(sorted(known))
        listed = _listed("known", self.known, "no channel is known")
        super().__init__(
            f"{where}channel {channel!r} is neither registered nor named by the published "
            f"definitions ({listed}); check the name"
        )


class UnknownJourneyError(CjoError, KeyError):
    """A journey id that was never published to this engine."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown journey"


class UsageError(CjoError, ValueError):
    """A call's argument is out of range; nothing was done."""


class JourneyNotPausedError(UsageError):
    """``Engine.resume_journey`` named a journey that is not paused: never paused, or resumed
    already (perhaps by another engine on the same storage). Nothing was done, so a resume
    aimed at the wrong journey is not taken for one that released nothing. ``journey_id``
    names it; ``resumed_at`` is when its last pause ended (None: it was never paused)."""

    def __init__(self, journey_id: str, resumed_at: datetime | None, where: str = "") -> None:
        self.journey_id = journey_id
        self.resumed_at = resumed_at
        when = ("never paused" if resumed_at is None
                else f"last resumed at {resumed_at.isoformat()}")
        super().__init__(
            f"{where}journey {journey_id!r} is not paused ({when}); nothing was done"
        )


class ClockError(CjoError, ValueError):
    """A clock was given a naive datetime or asked to move backwards."""


class RenderError(CjoError):
    """A content template could not be rendered for one message.

    ``field`` names the content field that failed (when known) and ``reason`` says why, without
    the content and channel the message starts with.
    """

    def __init__(
        self, message: str, *, field: str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason if reason is not None else message


class RenderLimitError(RenderError):
    """A content template hit a template limit (``cjo.limits.Limits``): too many loop
    iterations, too much output or too many assigned bytes, or too long to render."""


class ChannelError(CjoError):
    """For a channel adapter to raise for a failure of its own. cjo never raises it: whatever a
    channel's ``send`` raises (this included) counts as a transient failure, kept as the
    message's last error and retried."""


class StorageError(CjoError):
    """A storage adapter failed. The customer transaction in progress was rolled back (unless
    it is a ``CommitOutcomeUnknownError``)."""


class CommitOutcomeUnknownError(StorageError):
    """The connection to the database was lost while a commit was under way: whether it was
    stored is unknown. Handling the same events again is safe (their ids are claimed)."""


class ConflictError(StorageError):
    """Another worker changed the same customer concurrently; retrying is safe."""


class CorruptRecordError(StorageError):
    """A stored customer record cannot be decoded. ``customer_id`` names it; workers set such
    a record aside (it is kept, no longer claimed) and go on with the others."""

    def __init__(self, customer_id: str, reason: str) -> None:
        self.customer_id = customer_id
        super().__init__(f"the stored record of customer {customer_id!r} cannot be read: {reason}")


class UnreadableDefinitionsError(StorageError):
    """The latest stored definitions generation cannot be read by this cjo: written by a newer
    version that uses what this one does not know, or damaged. ``generation`` names it and
    ``problems`` lists what cannot be read. Nothing stored was changed; this engine decides
    nothing until it can read the latest generation (docs/storage.md, rolling upgrades)."""

    def __init__(self, generation: int, problems: Iterable[Problem]) -> None:
        self.generation = generation
        self.problems: Sequence[Problem] = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"definitions generation {generation} cannot be read by this version of cjo "
            "(written by a newer one?); nothing was changed: upgrade this process, or publish "
            f"from one that reads it. What it cannot read:\n{lines}"
        )


class SchemaError(StorageError):
    """The database schema cannot be used by this version of cjo."""


def _listed(label: str, names: tuple[str, ...], none: str) -> str:
    """``label: 'a', 'b'``, or ``none`` when there are no names: the valid choices an error
    lists beside the name it refuses."""
    return f"{label}: {', '.join(map(repr, names))}" if names else none


def missing_extra(what: str, needs: str, extra: str, cause: ImportError) -> ImportError:
    """The ``ImportError`` of a part of cjo whose packages are an extra: it names the extra to
    install rather than a module the user never asked for. (Not a ``CjoError``: it is raised
    on import, as Python's own would be.)"""
    return ImportError(
        f'{what} needs {needs} ({cause}): install it with `pip install "cjo[{extra}]"`'
    )
