"""Enrollment ids: deterministic, so that replaying the same events yields the same ids and
the same idempotency keys, and unambiguous whatever the ids they are made of hold."""

from __future__ import annotations

from datetime import datetime

from cjo.clock import EPOCH, MICROSECOND

__all__ = ["enrollment_id_for", "failover_key", "id_part", "message_key", "origin_key"]



def enrollment_id_for(
    journey_id: str, customer_id: str, key: str | None, number: int, entered_at: datetime,
    erasures: int = 0,
) -> str:
    """Deterministic ids: replaying the same events yields the same ids and idempotency keys.

    The entry instant is part of the id: after ``erase_customer`` the entry count starts again,
    and a returning customer must not reuse an old id (providers de-duplicate on the keys
    built from it). One back within the instant of their erasure is told apart by
    ``erasures``, the count of erasures made at that instant when their record was made
    (``CustomerState.erasures``; 0, and no suffix, for nearly every entry).
    """
    # Microseconds since the epoch in hexadecimal: exact, and formatted in C.
    stamp = format((entered_at - EPOCH) // MICROSECOND, "x")
    if erasures:
        stamp = f"{stamp}.{erasures}"
    # Ids may hold ':', the separator: unescaped, journey 'promo:vip' with customer 'ann' and
    # journey 'promo' with customer 'vip:ann' would share ids, and so the idempotency keys of
    # their messages (so would customer 'ann:x' with key '1' and 'ann' with key 'x:1').
    if ":" in journey_id or "%" in journey_id:
        journey_id = id_part(journey_id)
    if ":" in customer_id or "%" in customer_id:
        customer_id = id_part(customer_id)
    if key is None:
        return f"{journey_id}:{customer_id}:{number}.{stamp}"
    if ":" in key or "%" in key:
        key = id_part(key)
    return f"{journey_id}:{customer_id}:{key}:{number}.{stamp}"


def id_part(text: str) -> str:
    """``text`` as one ':'-separated part of an enrollment id ('%' and ':' escaped)."""
    return text.replace("%", "%25").replace(":", "%3A")


def message_key(enrollment_id: str, step_id: str, attempt: int) -> str:
    """The idempotency key of the message (or action call) an enrollment makes on its
    ``attempt``-th pass of step ``step_id``: ``<enrollment id>:<step id>:<attempt>``."""
    return f"{enrollment_id}:{step_id}:{attempt}"


#: Between a message's key and the channel its failover went out on (``failover_key``): the
#: tail of a key is its pass number, digits, so a key never holds it after its last ':'.
FAILOVER_MARK = "@"


def failover_key(key: str, channel: str) -> str:
    """The idempotency key of the message that takes over on ``channel`` from the message
    ``key`` (or from the message it took over from in turn), which failed for good:
    ``<original key>@<channel>``. Derived, not counted: a worker that records the failure
    again, or a retried dead letter, makes the same key, and the outbox keeps one message."""
    return f"{origin_key(key)}{FAILOVER_MARK}{id_part(channel)}"


def origin_key(key: str) -> str:
    """The key of the message a Send step wrote on its pass (``message_key``), from the key
    of that message or of a failover of it (``failover_key``)."""
    head, colon, tail = key.rpartition(":")
    return f"{head}{colon}{tail.partition(FAILOVER_MARK)[0]}"
