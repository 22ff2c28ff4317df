"""When a count in a rolling window can next change truth, against counting at every instant.

``change_clock`` arms the segment timer: it must never be later than the count's real change
(a change would fire late), and for counts it is exactly the instant the count crosses its
bound (a timer where nothing can change is wasted work).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from cjo.runtime.state import Track
from cjo.segments.history import COUNT_OPS, Performed, change_clock, next_change

T0 = datetime(2026, 1, 5, tzinfo=UTC)
HOUR = timedelta(hours=1)
US = timedelta(microseconds=1)
TESTS = {"eq": int.__eq__, "ne": int.__ne__, "lt": int.__lt__, "le": int.__le__,
         "gt": int.__gt__, "ge": int.__ge__}


def _truth(node: Performed, stamps: list[datetime], at: datetime) -> bool:
    assert node.window is not None
    count = sum(1 for t in stamps if t > at - node.window)
    return bool(TESTS[node.op](count, node.count))


def _real_change(node: Performed, stamps: list[datetime], now: datetime) -> datetime | None:
    """The first instant after ``now`` the count's truth differs, trying every departure."""
    assert node.window is not None
    before = _truth(node, stamps, now)
    for at in sorted({t + node.window for t in stamps if t + node.window > now}):
        if _truth(node, stamps, at) != before:
            return at
    return None


nodes = st.builds(
    lambda op, n, hours: Performed("view", op=op, count=n, window=hours * HOUR),
    st.sampled_from(COUNT_OPS), st.integers(0, 4), st.sampled_from([1, 3, 24]),
)
stamps = st.lists(st.integers(0, 48).map(lambda h: T0 + h * HOUR), max_size=8).map(sorted)


@given(nodes, stamps, st.integers(0, 60).map(lambda h: T0 + h * HOUR))
def test_a_count_changes_exactly_where_its_truth_does(
    node: Performed, events: list[datetime], now: datetime,
) -> None:
    track = Track(T0, recent=[(t, None) for t in events])
    real = _real_change(node, events, now)
    armed = next_change(node, track, now)
    if node.op in ("eq", "ne"):
        # Several events leaving at one instant can step over the bound: the instant the count
        # reaches it is armed, and nothing changes there.
        assert real is None or armed == real
        if armed is not None and real is None:
            assert _truth(node, events, armed) == _truth(node, events, now)
    else:
        assert armed == real
    if real is not None:  # at the timer, the clock knows it is due
        assert next_change(node, track, real - US) == real


@given(nodes, nodes, stamps, st.integers(0, 60).map(lambda h: T0 + h * HOUR))
def test_a_clock_shared_by_counts_is_the_earliest_of_them(
    first: Performed, second: Performed, events: list[datetime], now: datetime,
) -> None:
    second = Performed("view", op=second.op, count=second.count, window=first.window)
    track = Track(T0, recent=[(t, None) for t in events])
    shared = change_clock((first, second))(track, now)
    alone = [t for t in (next_change(first, track, now), next_change(second, track, now))
             if t is not None]
    assert shared == (min(alone) if alone else None)


@given(nodes, stamps, st.integers(0, 60).map(lambda h: T0 + h * HOUR))
def test_not_exact_a_window_changes_when_its_oldest_event_leaves(
    node: Performed, events: list[datetime], now: datetime,
) -> None:
    assert node.window is not None
    track = Track(T0, recent=[(t, None) for t in events])
    leaving = [t + node.window for t in events if t + node.window > now]
    assert change_clock((node,), exact=False)(track, now) == (min(leaving) if leaving else None)
