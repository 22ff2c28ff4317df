"""Conditions compare values with their types: a bool is not the number Python equates it
with (``True == 1``), in a segment, a list test or a comparison, on every storage adapter."""

from __future__ import annotations

from datetime import UTC, datetime

from cjo import Engine, ManualClock, Segment, attr, has_any, has_none
from cjo.storage.base import Storage

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_a_bool_attribute_is_not_a_number_in_any_comparison(storage: Storage) -> None:
    engine = Engine(storage=storage, clock=ManualClock(T0))
    engine.publish(segments=[
        Segment("one", attr("x") == 1),
        Segment("not_one", attr("x") != 1),
        Segment("is_true", attr("x") == True),  # noqa: E712  (a condition, not a test)
        Segment("positive", attr("x") > 0),
        Segment("in_numbers", attr("x").is_in([1, 2])),
        Segment("in_bools", attr("x").is_in([True])),
        Segment("holds_one", attr("x").contains(1)),
        Segment("has_one", has_any(attr("x"), [1])),
        Segment("has_no_one", has_none(attr("x"), [1])),
    ])
    engine.identify("flag", {"x": True})
    engine.identify("number", {"x": 1})
    engine.identify("flags", {"x": [True]})
    engine.identify("numbers", {"x": [1]})

    def members(customer: str) -> list[str]:
        state = engine.customer_state(customer)
        assert state is not None
        return sorted(state.segments)

    assert members("flag") == ["has_no_one", "in_bools", "is_true", "not_one"]
    assert members("number") == ["has_no_one", "in_numbers", "one", "positive"]
    assert members("flags") == ["has_no_one", "not_one"]
    assert members("numbers") == ["has_one", "holds_one", "not_one"]
    assert engine.segment_members("one") == ["number"]
    assert engine.segment_members("is_true") == ["flag"]
