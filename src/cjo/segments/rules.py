"""Profile rules: attributes that events keep current, declared with the other definitions.

A rule names an event (and an optional filter on its properties) and the attribute updates it
makes. Rules run in the customer's transaction for the event, before journeys react to it, in
the order they are defined::

    ProfileRule("purchases", "purchase", updates=(
        stamp("last_purchase_at"),          # the event's own timestamp (never moved back)
        add("lifetime_spend", prop="total"),
        increment("orders"),
        copy("last_sku", prop="sku"),
        assign("customer", True),
    ))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import attrs

from cjo.conditions import MISSING, CompiledCondition, Condition, lookup
from cjo.frozen import freeze, thaw, to_tuple

__all__ = ["AttributeUpdate", "ProfileRule", "add", "apply_updates", "assign", "copy",
           "increment", "stamp"]


# Converters typed with their fields' items (why: ``cjo.frozen.to_tuple``).


def _attribute_update_tuple(value: Sequence[AttributeUpdate]) -> tuple[AttributeUpdate, ...]:
    return to_tuple(value)

UpdateOp = Literal["stamp", "copy", "assign", "add"]


@attrs.frozen
class AttributeUpdate:
    """One attribute change:

    - ``stamp``: the event's timestamp, unless the attribute already holds a later one (a late
      event never moves it back);
    - ``copy``: the value of the event property ``prop`` (nothing when it is missing);
    - ``assign``: ``value``;
    - ``add``: add ``value``, or the event property ``prop`` when given, to the attribute's
      number (missing counts as 0; non-numbers are left as they are).
    """

    attribute: str
    op: UpdateOp
    prop: str | None = None
    value: Any = attrs.field(default=None, converter=freeze)

    # The builders below, as class methods too: ``AttributeUpdate.stamp("last_seen_at")``.
    @classmethod
    def stamp(cls, attribute: str) -> AttributeUpdate:
        return stamp(attribute)

    @classmethod
    def copy(cls, attribute: str, *, prop: str) -> AttributeUpdate:
        return copy(attribute, prop=prop)

    @classmethod
    def assign(cls, attribute: str, value: Any) -> AttributeUpdate:
        return assign(attribute, value)

    @classmethod
    def add(cls, attribute: str, value: float | None = None, *,
            prop: str | None = None) -> AttributeUpdate:
        return add(attribute, value, prop=prop)

    @classmethod
    def increment(cls, attribute: str, by: float = 1) -> AttributeUpdate:
        return increment(attribute, by)


@attrs.frozen
class ProfileRule:
    """Update profile attributes whenever the customer sends ``event`` matching ``where``."""

    id: str
    event: str
    updates: tuple[AttributeUpdate, ...] = attrs.field(converter=_attribute_update_tuple)
    where: Condition | None = None


def stamp(attribute: str) -> AttributeUpdate:
    return AttributeUpdate(attribute, "stamp")


def copy(attribute: str, *, prop: str) -> AttributeUpdate:
    return AttributeUpdate(attribute, "copy", prop=prop)


def assign(attribute: str, value: Any) -> AttributeUpdate:
    return AttributeUpdate(attribute, "assign", value=value)


def add(attribute: str, value: float | None = None, *, prop: str | None = None) -> AttributeUpdate:
    return AttributeUpdate(attribute, "add", prop=prop, value=value)


def increment(attribute: str, by: float = 1) -> AttributeUpdate:
    return AttributeUpdate(attribute, "add", value=by)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def apply_updates(
    updates: tuple[AttributeUpdate, ...], attributes: Mapping[str, Any],
    properties: Mapping[str, Any], timestamp: datetime,
) -> dict[str, Any]:
    """The attributes ``updates`` set (only those whose value actually changes)."""
    changed: dict[str, Any] = {}

    def current(name: str) -> Any:
        return changed[name] if name in changed else attributes.get(name)

    for u in updates:
        old = current(u.attribute)
        new: Any
        if u.op == "stamp":
            # A naive datetime cannot be compared with an instant: the stamp replaces it.
            if isinstance(old, datetime) and old.tzinfo is not None and old >= timestamp:
                continue
            new = timestamp
        elif u.op == "copy":
            new = lookup(properties, (u.prop or "").split("."))
            if new is MISSING or new is None:
                continue
        elif u.op == "assign":
            new = thaw(u.value)  # the profile's own copy, as plain data
        else:
            amount = lookup(properties, u.prop.split(".")) if u.prop else u.value
            base = 0 if old is None else old
            if not _number(amount) or not _number(base):
                continue
            new = base + amount
            if isinstance(new, float) and not math.isfinite(new):
                continue  # too large for a float: it could not be stored
        if new != old or type(new) is not type(old):
            changed[u.attribute] = new
    return changed


CompiledRule = tuple[ProfileRule, CompiledCondition | None]
