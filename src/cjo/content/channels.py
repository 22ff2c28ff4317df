"""Channel types: which fields a variant must and may have on each kind of channel, and what a
rendered field must look like.

A variant names a channel as the engine registers it (``"email"``, ``"transactional_email"``).
Its type is, in order: ``Engine(channel_types={name: type})``, the ``channel_type`` attribute
of the registered ``Channel`` class, or the name itself when it is a type's name. A channel of
no known type is free-form: any fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping

import attrs

__all__ = ["CHANNEL_TYPES", "ChannelType", "channel_type_of", "field_problems", "output_problem"]


@attrs.frozen
class ChannelType:
    """``required`` fields must be present; at least one field of each ``one_of`` group must
    be; ``one_line`` fields must render without a line break; ``json`` fields must render to
    valid JSON; no field outside these is allowed."""

    name: str
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    one_of: tuple[tuple[str, ...], ...] = ()
    json: tuple[str, ...] = ()
    one_line: tuple[str, ...] = ()

    @property
    def known(self) -> tuple[str, ...]:
        return (*self.required, *self.optional)


CHANNEL_TYPES: Mapping[str, ChannelType] = {
    t.name: t for t in (
        ChannelType("email", ("subject",), ("preheader", "html", "text", "unsubscribe_url"),
                    one_of=(("html", "text"),), one_line=("subject", "unsubscribe_url")),
        ChannelType("sms", ("text",)),
        ChannelType("push", ("title", "body"), ("deep_link",)),
        ChannelType("in_app", ("title", "body"), ("image_url", "button_label", "button_url")),
        ChannelType("webhook", ("body",), json=("body",)),
    )
}


def channel_type_of(channel: str, channel_types: Mapping[str, str]) -> ChannelType | None:
    """The type of the channel registered as ``channel`` (None: free-form)."""
    return CHANNEL_TYPES.get(channel_types.get(channel, channel))


def field_problems(ctype: ChannelType, fields: Mapping[str, str]) -> list[str]:
    """What is missing or unknown in a variant's ``fields`` for channel type ``ctype``."""
    problems = [
        f"field {name!r} is required on {ctype.name} channels"
        for name in ctype.required if name not in fields
    ]
    for group in ctype.one_of:
        if not any(name in fields for name in group):
            names = " or ".join(repr(n) for n in group)
            problems.append(f"needs field {names} on {ctype.name} channels")
    known = ctype.known
    for name in fields:
        if name not in known:
            problems.append(
                f"field {name!r} is not a {ctype.name} field (known: {', '.join(known)})"
            )
    return problems


# Every character ``str.splitlines`` breaks at: email headers refuse them all, not only CR/LF.
_LINE_BREAK = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def _not_json(constant: str) -> object:
    # Python's json reads NaN and Infinity; JSON has no such value, and receivers refuse them.
    raise ValueError(f"{constant} is not a JSON value")


def output_problem(
    ctype: ChannelType | None, fields: Mapping[str, str], may_fill: Collection[str] = ()
) -> tuple[str, str] | None:
    """(field, reason) when rendered ``fields`` are not what the channel type needs: a
    required field (or every field of a ``one_of`` group) that renders empty or only
    whitespace (a message nobody should receive), a ``one_line`` field with a line break, a
    ``json`` field that is not JSON. ``may_fill``: fields that rendered blank on a derived
    sample but read customer data, which real data may fill: not reported blank, nor as not
    JSON. On every channel, typed or not: a field with a NUL character (``url_decode`` of
    ``%00``), which PostgreSQL cannot store: written, it would fail the customer's whole
    transaction there, and be sent from the other storages."""
    for name, rendered in fields.items():
        if "\x00" in rendered:
            return name, "renders a NUL character, which no message may carry"
    if ctype is None:
        return None
    # A field the variant lacks is not checked here: publishing reports it (``field_problems``).
    # Blank: empty, or only whitespace (``isspace`` stops at the first other character). Inline,
    # without a call per field: this runs for every message rendered.
    for name in ctype.required:
        text = fields.get(name)
        if text is not None and (not text or text.isspace()) and name not in may_fill:
            return name, "renders empty"
    for group in ctype.one_of:
        first = None  # the group's first field the variant has, while all are blank
        for name in group:
            text = fields.get(name)
            if text is None:
                continue
            if (text and not text.isspace()) or name in may_fill:
                break
            if first is None:
                first = name
        else:
            if first is not None:
                present = [repr(n) for n in group if n in fields]
                if len(present) == 1:
                    return first, "renders empty"
                every = " and ".join(present)
                return first, f"renders empty (so does every one of {every}: one must have text)"
    for name in ctype.one_line:
        text = fields.get(name)
        # A line break in an email subject breaks its header (or adds one).
        if text is not None and _LINE_BREAK.search(text):
            return name, f"renders more than one line (a {name} is one line)"
    for name in ctype.json:
        text = fields.get(name)
        if text is None or (name in may_fill and (not text or text.isspace())):
            continue
        try:
            json.loads(text, parse_constant=_not_json)
        except ValueError as exc:
            return name, f"does not render to valid JSON: {exc}"
    return None
