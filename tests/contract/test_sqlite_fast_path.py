"""What SQLiteStorage's one-event path does to go faster, checked where the contract suite does
not look: event ids pruned in slices, schema 5 (no index by age on event ids), the page size of
new databases, the customer transaction's context manager, and the codec's record encoder and
parser (equal to the generic ones)."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cjo.channels.base import DeliveryResult, Message
from cjo.errors import CorruptRecordError, InvalidEventError, StorageError
from cjo.model.events import Profile, check_values
from cjo.runtime.state import Activity, CustomerState, Enrollment
from cjo.storage import codec
from cjo.storage import sqlite as sqlite_module
from cjo.storage.base import PruneResult, Retention, Storage
from cjo.storage.sqlite import SQLiteStorage
from tests.helpers import sqlite_at_schema

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _claim(storage: Storage, event_id: str, at: datetime) -> bool:
    with storage.customer("c1", at) as session:
        return session.claim_event(event_id)


# --- pruning event ids in slices -----------------------------------------------------------------


def test_prune_walks_every_slice_and_forgets_exactly_the_old_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_PRUNE_SLICE", 3)  # many slices from a few ids
    # The empty id sorts first: the first slice must include its start.
    old = ["", "a", "b", "e1", "e10", "e2", "zz", "\u00e9t\u00e9"]
    new = ["0", "ab", "e11", "e3", "y"]
    with SQLiteStorage(tmp_path / "p.db") as storage:
        for eid in old:
            assert _claim(storage, eid, T0)
        for eid in new:
            assert _claim(storage, eid, T0 + 2 * DAY)
        result = storage.prune(T0 + 3 * DAY, Retention(event_ids=DAY + timedelta(hours=12)))
        assert result == PruneResult(event_ids=len(old))
        for eid in old:
            assert _claim(storage, eid, T0 + 3 * DAY), f"{eid!r} was pruned"
        for eid in new:
            assert not _claim(storage, eid, T0 + 3 * DAY), f"{eid!r} was kept"
        # Everything is newer than the cutoff now: nothing to prune, every slice still walked.
        assert storage.prune(T0 + 3 * DAY, Retention(event_ids=DAY)) == PruneResult()


def test_prune_gives_other_writers_the_lock_between_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_PRUNE_SLICE", 2)
    storage = SQLiteStorage(tmp_path / "w.db")
    try:
        for n in range(7):
            assert _claim(storage, f"e{n}", T0)
        commits: list[int] = []
        write = storage._write

        def counting_write() -> AbstractContextManager[sqlite3.Connection]:
            commits.append(1)
            return write()

        monkeypatch.setattr(storage, "_write", counting_write)
        assert storage.prune(T0 + 2 * DAY, Retention(event_ids=DAY)).event_ids == 7
        # Four slices of at most two ids, the empty look that ends the walk, then the outbox,
        # the activity log (nothing in either: one look each) and the definitions log: one
        # short transaction each, not one long one.
        assert len(commits) == 8
    finally:
        storage.close()


def test_prune_drops_old_messages_and_activity_a_slice_per_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_PRUNE_SLICE", 3)
    path = tmp_path / "s.db"
    tick = timedelta(microseconds=1)
    storage = SQLiteStorage(path)
    try:
        state = CustomerState("c1", T0)
        for n in range(10):
            at = T0 + n * timedelta(minutes=1)
            message = Message(
                idempotency_key=f"k{n}", customer_id="c1", channel="email", content_id="hi",
                fields={"subject": "hi"}, journey_id="j", journey_version=1, step_id="email",
                enrollment_id="j:c1:1", created_at=at,
            )
            entries = [Activity(at, "c1", "j:c1:1", "j", 1, "email", "sent", f"d{n % 2}")]
            if n == 4:  # two in one microsecond: dropped in one span
                entries.append(Activity(at, "c1", "j:c1:1", "j", 1, "email", "opened"))
            if n == 7:  # logged late, behind the entries before it
                entries.append(Activity(T0 + tick, "c1", "j:c1:1", "j", 1, "wait", "event_received"))
            with storage.customer("c1", at) as session:
                session.save(state, [message], entries)
                state = session.load() or state
            storage.complete_outbox(f"k{n}", DeliveryResult("delivered"), at)
        # Kept: newer than the cutoff.
        with storage.customer("c1", T0 + 3 * DAY) as session:
            session.save(state, [], [Activity(T0 + 3 * DAY, "c1", "j:c1:1", "j", 1, None, "entered")])
        counts = set(storage.activity_counts("j"))

        sizes: list[int] = []
        write = storage._write

        @contextmanager
        def measured_write() -> Iterator[sqlite3.Connection]:
            with closing(_raw(path)) as raw:
                before = _rows(raw)
                with write() as conn:
                    yield conn
                sizes.append(before - _rows(raw))

        monkeypatch.setattr(storage, "_write", measured_write)
        result = storage.prune(T0 + 4 * DAY, Retention(outbox=DAY, activity=2 * DAY))
        assert result == PruneResult(outbox=10, activity=12)
        # No transaction drops more than a slice of each (and the entry sharing an instant).
        assert max(sizes) <= 3 + 3 + 1, sizes
        assert sum(sizes) == 22 and len(sizes) >= 8, sizes
        assert set(storage.activity_counts("j")) == counts, "every dropped entry still counts"
        assert [a.kind for a in storage.activities(T0 - DAY, T0 + 9 * DAY)] == ["entered"]
    finally:
        storage.close()


def _rows(conn: sqlite3.Connection) -> int:
    """Messages and activity entries stored."""
    ((outbox,),) = conn.execute("SELECT count(*) FROM outbox")
    ((activity,),) = conn.execute("SELECT count(*) FROM activity")
    return int(outbox) + int(activity)


# --- schema 5 --------------------------------------------------------------------------------


def _indexes(path: Path) -> set[str]:
    with closing(_raw(path)) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


def test_a_version_4_database_loses_the_age_index_and_keeps_its_event_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v4.db"
    with sqlite_at_schema(path, 4, monkeypatch) as storage:
        assert _claim(storage, "seen", T0)
    assert "events_seen" in _indexes(path)
    with SQLiteStorage(path) as storage:
        assert not _claim(storage, "seen", T0 + DAY), "a migrated database still de-duplicates"
        assert storage.prune(T0 + 9 * DAY, Retention()) == PruneResult(event_ids=1)
    assert "events_seen" not in _indexes(path)
    assert {"customers_due", "activity_late", "outbox_pending"} <= _indexes(path)


# --- page size -------------------------------------------------------------------------------


def _page_size(path: Path) -> int:
    conn = _raw(path)
    try:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


def test_a_new_database_gets_small_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    SQLiteStorage(tmp_path / "new.db").close()
    assert _page_size(tmp_path / "new.db") == sqlite_module._PAGE_SIZE == 2048

    old = tmp_path / "old.db"
    conn = _raw(old)
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE unrelated (x)")  # the file exists, with its page size
    conn.close()
    big = CustomerState("c1", T0, profile=Profile("c1", {"note": "x" * 3000}))
    with SQLiteStorage(old) as storage:
        with storage.customer("c1", T0) as session:
            session.save(big, (), ())
        assert storage.peek("c1") == CustomerState(
            "c1", T0, revision=1, profile=Profile("c1", {"note": "x" * 3000})
        )
    assert _page_size(old) == 4096


def test_records_larger_than_a_page_round_trip(tmp_path: Path) -> None:
    with SQLiteStorage(tmp_path / "big.db") as storage:
        for size in (10, 1900, 2100, 5000, 40_000):
            state = CustomerState("c1", T0, profile=Profile("c1", {"note": "y" * size}))
            with storage.customer("c1", T0) as session:
                current = session.load()
                state.revision = 0 if current is None else current.revision
                session.save(state, (), ())
            peeked = storage.peek("c1")
            assert peeked is not None and peeked.profile is not None
            assert peeked.profile.attributes == {"note": "y" * size}


# --- the customer transaction's context manager ----------------------------------------------


def test_the_customer_transaction_commits_rolls_back_and_is_not_reentered(
    tmp_path: Path,
) -> None:
    def fail_inside(storage: Storage) -> None:
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e1")
            session.save(CustomerState("c1", T0), (), ())
            raise KeyError("boom")

    with SQLiteStorage(tmp_path / "t.db") as storage:
        with pytest.raises(KeyError):
            fail_inside(storage)
        assert storage.peek("c1") is None
        assert _claim(storage, "e1", T0), "the rolled-back claim is forgotten"
        transaction = storage.customer("c2", T0)
        with transaction as session:
            session.save(CustomerState("c2", T0), (), ())
        with pytest.raises(StorageError, match="twice"), transaction:
            pass
        assert storage.peek("c2") == CustomerState("c2", T0, revision=1)
        # The lock was released every time: another transaction runs.
        assert _claim(storage, "e2", T0)


# --- codec: the record encoder and parser ----------------------------------------------------

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.datetimes(timezones=st.just(UTC)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=8), _values, max_size=5))
def test_the_record_encoder_writes_what_the_generic_one_does(attributes: dict[str, object]) -> None:
    try:  # what a record can hold: values as the model's validation lets them through
        attributes = dict(check_values({"k": attributes}, "values", "value")["k"])
    except InvalidEventError:
        assume(False)
    state = CustomerState(
        "c\u00e91", T0, 4, Profile("c\u00e91", attributes, "Europe/Paris"),
        [Enrollment("j:c1:1", "j", 2, "c\u00e91", T0, "wait", T0, wake_at=T0 + DAY,
                    context={"k": attributes})],
    )
    data = codec.state_to_dict(state, 5)
    assert codec.encode_state(state, 5) == codec._dumps(data)
    assert json.loads(codec.encode_state(state, 5))["rev"] == 5
    assert codec.decode_state(codec.encode_state(state), "c\u00e91") == codec.decode_state(
        codec._dumps(codec.state_to_dict(state)), "c\u00e91"
    )


def test_the_record_encoder_refuses_what_json_cannot_hold() -> None:
    state = CustomerState("c1", T0, profile=Profile("c1", {"x": math.nan}))
    with pytest.raises(StorageError, match="not JSON compliant"):
        codec.encode_state(state)


@pytest.mark.parametrize("text", [
    ' {"created": 0}', '{"created": 0}\n ', '\t{"created":0}\t', b'{"created": 0}',
])
def test_the_record_parser_accepts_whitespace_around_a_record(text: str | bytes) -> None:
    assert codec.decode_state(text, "c1") == CustomerState("c1", codec.dt(0))


@pytest.mark.parametrize("text", [
    "", " ", "{", '{"created": 0} x', '{"created": 0}{}', "[1]", "nul", "1 2", '"s"',
])
def test_the_record_parser_refuses_what_is_not_one_object(text: str) -> None:
    with pytest.raises(CorruptRecordError):
        codec.decode_state(text, "c1")
