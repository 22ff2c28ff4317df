"""InMemoryStorage's kept records (``KeptRecord``), updated in place at each commit: over random
sequences of saved records (enrollments entering, ending, changing and reordered; timers,
marks, histories and rare fields set and cleared), a load gives back exactly the last record
saved, a peek too, the wake-up index follows, and an enrollment that stays is kept in the same
object."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from cjo.model.events import Profile
from cjo.runtime.state import CustomerState, Enrollment, EntryHistory
from cjo.storage.memory import InMemoryStorage

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
instants = st.builds(lambda m: T0 + timedelta(minutes=m), st.integers(0, 600))
small_dicts = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 3), max_size=2)

enrollments = st.builds(
    lambda eid, step, wake, context, visits, status: Enrollment(
        eid, "j" + eid[-1], 1, "c1", T0, step_id=step, wake_at=wake, context=context,
        visits=visits, status=status,
    ),
    st.sampled_from(["e1", "e2", "e3", "e4"]),
    st.sampled_from([None, "s1", "s2"]),
    st.one_of(st.none(), instants),
    small_dicts,
    small_dicts,
    st.sampled_from(["active", "active", "completed"]),
)

records = st.builds(
    lambda enrolled, timers, marks, history, segments, attributes: CustomerState(
        "c1", T0, 0, Profile("c1", attributes) if attributes is not None else None,
        # Unique ids, in whatever order the draw gives.
        list({e.id: e for e in enrolled}.values()),
        history={(j, None): EntryHistory.of(n, (), None) for j, n in history.items()},
        timers=timers, marks=marks, segments=segments,
    ),
    st.lists(enrollments, max_size=4),
    st.dictionaries(st.sampled_from(["t1", "t2"]), instants, max_size=2),
    st.dictionaries(st.sampled_from(["m1"]), instants, max_size=1),
    st.dictionaries(st.sampled_from(["j1", "j2"]), st.integers(1, 3), max_size=2),
    st.dictionaries(st.sampled_from(["vip"]), instants, max_size=1),
    st.one_of(st.none(), small_dicts),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(records, min_size=1, max_size=8))
def test_a_kept_record_gives_back_what_was_saved(saved: list[CustomerState]) -> None:
    storage = InMemoryStorage()
    for n, record in enumerate(saved):
        expected = record.copy()
        expected.revision += 1  # what a commit does to the record it writes
        with storage.customer("c1", T0) as session:
            session.save(record, (), ())
        kept = storage._records["c1"]
        before = {e.id: e for e in kept.enrollments}
        with storage.customer("c1", T0) as session:
            loaded = session.load()
        assert loaded is not None
        assert loaded == expected
        assert storage.peek("c1") == expected
        assert storage.next_wake_at() == expected.wake_at
        assert kept.wake_at == expected.wake_at
        assert storage.segment_members("vip") == (["c1"] if expected.segments else [])
        # A load is a copy: changing it changes nothing kept.
        for e in loaded.enrollments:
            e.context["x"] = 1
            e.wake_at = None
        loaded.timers.clear()
        assert storage.peek("c1") == expected
        # The next save keeps an enrollment that stays in the object that held it.
        if n + 1 < len(saved):
            with storage.customer("c1", T0) as session:
                session.save(saved[n + 1].copy(), (), ())
            after = {e.id: e for e in storage._records["c1"].enrollments}
            assert all(after[i] is before[i] for i in after.keys() & before.keys())
