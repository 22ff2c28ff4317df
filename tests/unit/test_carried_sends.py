"""What a migration carries onto the new version's Send steps (``cjo.runtime.migration``), and
how the record holds it: nothing for an enrollment whose Send steps kept their ids."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from cjo import EventTrigger, Journey, Send, WaitForEvent
from cjo.runtime.ids import message_key
from cjo.runtime.migration import carry_sends, latest_message_keys
from cjo.runtime.state import CustomerState, Enrollment
from cjo.storage.codec import decode_state, encode_state

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
EID = "onboard:ann:1.0"


def journey(version: int, *sends: str) -> Journey:
    """Send steps ``sends`` in a row, then a wait for the last one's open."""
    steps: dict[str, object] = {}
    for this, after in zip(sends, [*sends[1:], "wait"], strict=True):
        steps[this] = Send("hello", "email", next=after)
    steps["wait"] = WaitForEvent("opened", timeout=T0 - T0, of_send=sends[-1])
    return Journey("onboard", sends[0], steps,  # type: ignore[arg-type]
                   trigger=EventTrigger("signed_up"), version=version)


def enrolled(**visits: int) -> Enrollment:
    return Enrollment(EID, "onboard", 1, "ann", T0, "wait", visits=dict(visits))


def test_send_steps_that_keep_their_ids_carry_nothing() -> None:
    e = enrolled(a=1, b=2, wait=1)
    carry_sends(e, journey(1, "a", "b"), journey(2, "a", "b"), {"a": "a", "b": "b"})
    assert e.carried_sends is None and e._rare is None
    assert latest_message_keys(e, "b") == (message_key(EID, "b", 2),)


def test_a_renamed_step_carries_the_latest_pass_and_a_new_pass_replaces_it() -> None:
    e = enrolled(a=3, wait=3)
    carry_sends(e, journey(1, "a"), journey(2, "hello"), {"a": "hello", "wait": "wait"})
    assert e.carried_sends == {"hello": (0, (message_key(EID, "a", 3),))}
    assert latest_message_keys(e, "hello") == (message_key(EID, "a", 3),)
    e.visits["hello"] = 1
    assert latest_message_keys(e, "hello") == (message_key(EID, "hello", 1),)


def test_a_step_given_the_old_id_of_another_stands_for_none_of_its_messages() -> None:
    # Version 2 renames 'a' to 'hello' and has a new Send step called 'a': the message
    # version 1's 'a' made is 'hello''s now, not the new step's.
    e = enrolled(a=1, wait=1)
    new = journey(2, "hello", "a")
    carry_sends(e, journey(1, "a"), new, {"a": "hello", "wait": "wait"})
    assert latest_message_keys(e, "a") == ()
    assert latest_message_keys(e, "hello") == (message_key(EID, "a", 1),)
    e.visits["a"] = 2  # its own first pass (the count goes on, so its key is new)
    assert latest_message_keys(e, "a") == (message_key(EID, "a", 2),)


def test_merged_steps_carry_every_message_and_a_step_not_reached_none() -> None:
    e = enrolled(a=1, b=1, wait=1)
    carry_sends(e, journey(1, "a", "b", "c"), journey(2, "one", "two"),
                {"a": "one", "b": "one", "c": "one", "wait": "wait"})
    assert e.carried_sends == {"one": (0, (message_key(EID, "a", 1), message_key(EID, "b", 1)))}
    assert latest_message_keys(e, "two") == ()


def test_the_record_keeps_carried_sends_compactly_and_only_when_there_are_some() -> None:
    state = CustomerState("ann", T0, enrollments=[enrolled(a=1)])
    assert '"cs"' not in encode_state(state)
    e = state.enrollments[0]
    e.carried_sends = {"hello": (0, ("k1",)), "two": (2, ("k2", "k3"))}
    e.merged_passes = {"a": 1}
    text = encode_state(state)
    assert json.loads(text)["enr"][0]["cs"] == {"hello": [0, "k1"], "two": [2, "k2", "k3"]}
    back = decode_state(text, "ann").enrollments[0]
    assert (back.carried_sends, back.merged_passes) == (e.carried_sends, {"a": 1})
    assert back == e
    e.carried_sends = None
    assert (e.merged_passes, e.carried_sends) == ({"a": 1}, None)


def test_moved_onto_a_send_step_from_another_step_starts_a_pass_of_it() -> None:
    # From a wait after 'a' onto 'a' again (the message it sends is a new one), and from a
    # Send waiting to go out (quiet hours) onto its renamed self: the pass in progress is the
    # new step's, and what the old step sent before is not carried onto it.
    e = enrolled(a=1, wait=1)
    carry_sends(e, journey(1, "a"), journey(2, "a"), {"a": "a", "wait": "a"})
    assert (e.visits["a"], e.carried_sends) == (2, None)
    assert latest_message_keys(e, "a") == (message_key(EID, "a", 2),)
    held = Enrollment(EID, "onboard", 1, "ann", T0, "a", visits={"a": 2})
    carry_sends(held, journey(1, "a"), journey(2, "hello"), {"a": "hello", "wait": "wait"})
    assert (held.visits, held.carried_sends) == ({"a": 2, "hello": 1}, None)
    assert latest_message_keys(held, "hello") == (message_key(EID, "hello", 1),)
