"""Attribute-change triggers compared with profile values, on every storage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cjo import (
    AttributeTrigger,
    ContentItem,
    Engine,
    Journey,
    ManualClock,
    RecordingChannel,
    ReentryPolicy,
    Segment,
    Send,
    Variant,
    attr,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_changed_to_and_changed_from_tell_a_bool_from_the_number_it_equals(
    storage: Any,
) -> None:
    # Conditions compare with types (a segment on vip == True holds no vip of 1), and a
    # change from False to 0 is a change: the trigger's value lists read values the same way.
    inbox = RecordingChannel()
    engine = Engine(storage, channels={"inbox": inbox}, clock=ManualClock(T0))
    note = ContentItem("note", variants=(Variant(
        "inbox", {"text": "{{ context.attribute }}: {{ context.old_value }} to "
                          "{{ context.new_value }}"}),))

    def journey(id_: str, trigger: AttributeTrigger) -> Journey:
        return Journey(id_, trigger=trigger, entry="m", steps={"m": Send("note", "inbox")},
                       reentry=ReentryPolicy("after_exit"))

    engine.publish(content=[note], segments=[Segment("vip", attr("vip") == True)],  # noqa: E712
                   journeys=[journey("became_vip", AttributeTrigger("vip", changed_to=[True])),
                             journey("left_zero", AttributeTrigger("n", changed_from=[0]))])
    engine.identify("ann", {"vip": 1, "n": False})
    engine.identify("ann", {"n": 5})              # from False, not from 0
    assert not engine.in_segment("ann", "vip")
    assert [m.fields["text"] for m in inbox.messages] == []
    engine.identify("ann", {"vip": True, "n": 0})
    engine.identify("ann", {"n": 1})              # from 0
    assert engine.in_segment("ann", "vip")
    assert [m.fields["text"] for m in inbox.messages] == ["vip: 1 to true", "n: 0 to 1"]
