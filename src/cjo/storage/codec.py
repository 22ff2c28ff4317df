"""JSON encodings of runtime records, shared by the SQL adapters (one converter for all)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from cjo.channels.base import Message
from cjo.model.events import Profile
from cjo.runtime.state import Enrollment
from cjo.serialization import converter

__all__ = [
    "decode",
    "encode",
    "enrollment_from_json",
    "message_from_json",
    "profile_from_json",
]

T = TypeVar("T")


def _default(value: object) -> Any:
    # Event properties may hold values JSON has no type for (dates, decimals): keep their text.
    return str(value)


def encode(record: object) -> str:
    """A record (Enrollment, Message, Profile...) as compact JSON text."""
    return json.dumps(converter.unstructure(record), separators=(",", ":"), default=_default)


def decode(text: str | bytes, cls: type[T]) -> T:
    return converter.structure(json.loads(text), cls)


def enrollment_from_json(text: str | bytes) -> Enrollment:
    return decode(text, Enrollment)


def message_from_json(text: str | bytes) -> Message:
    return decode(text, Message)


def profile_from_json(text: str | bytes) -> Profile:
    return decode(text, Profile)
