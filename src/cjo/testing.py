"""Conformance suites for adapters written outside cjo (needs pytest; ``import cjo`` does not).

``StorageContract`` checks everything the engine relies on from a ``Storage``: transactions that
commit whole or not at all, event de-duplication, wake-up ordering and leases, the outbox's
reservations and retries, erasure, and a whole journey run end to end through an ``Engine``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cjo.channels.base import DeliveryResult, DeliveryStatus, Message
from cjo.channels.recording import RecordingChannel
from cjo.clock import ManualClock
from cjo.engine import Engine
from cjo.model.content import ContentItem, Variant
from cjo.model.events import Event, Profile
from cjo.model.journey import ExitCriterion, Goal, Journey
from cjo.model.steps import Send, WaitForEvent
from cjo.model.triggers import EventTrigger
from cjo.runtime.state import Activity, Changes, Enrollment, EnrollmentStatus, PastEntry
from cjo.storage.base import ActivityCount, CustomerSession, Delivery, DueWakeup, Storage

__all__ = ["CART_CONTENT", "StorageContract", "abandoned_cart_journey"]

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
TICK = timedelta(microseconds=1)  # the resolution every adapter must keep


class _BoomError(Exception):
    """Raised inside a transaction to make it roll back."""


def _enrollment(
    eid: str,
    customer: str = "c1",
    journey: str = "j",
    *,
    version: int = 1,
    entered: datetime = T0,
    step: str | None = "wait",
    step_entered: datetime | None = None,
    wake_at: datetime | None = None,
    status: EnrollmentStatus = "active",
    instance_key: str | None = None,
    ended_at: datetime | None = None,
) -> Enrollment:
    return Enrollment(
        id=eid, journey_id=journey, version=version, customer_id=customer, entered_at=entered,
        step_id=step, step_entered_at=step_entered if step_entered is not None else entered,
        status=status, instance_key=instance_key, wake_at=wake_at, ended_at=ended_at,
    )


def _message(key: str, customer: str = "c1", *, text: str = "hello") -> Message:
    return Message(
        idempotency_key=key, customer_id=customer, channel="email", content_id="welcome",
        fields={"subject": text}, journey_id="j", journey_version=1, step_id="email",
        enrollment_id=f"j:{customer}:1", created_at=T0,
    )


def _activity(
    kind: str, *, customer: str = "c1", journey: str = "j", version: int = 1,
    step: str | None = "email", detail: str | None = None,
) -> Activity:
    return Activity(journey, version, step, kind, detail, f"{journey}:{customer}:1", customer, T0)


def _write(storage: Storage, changes: Changes, now: datetime = T0) -> None:
    with storage.customer(changes.customer_id, now) as session:
        session.apply(changes)


def _counts(storage: Storage, journey_id: str) -> set[ActivityCount]:
    counts = storage.activity_counts(journey_id)
    assert len(counts) == len(set(counts)), f"a group is reported twice: {counts}"
    return set(counts)


# --- the end-to-end journey ----------------------------------------------------------------


def abandoned_cart_journey() -> Journey:
    """The reference journey of cjo's own tests: wait up to 4 h for a purchase, email, wait a
    day for the email to be opened, SMS; a purchase exits (and converts) at any point."""
    return Journey(
        id="abandoned_cart",
        name="Abandoned cart",
        trigger=EventTrigger("added_to_cart"),
        entry="wait_purchase",
        steps={
            "wait_purchase": WaitForEvent(
                "purchased", timeout=timedelta(hours=4), on_event=None, on_timeout="email"
            ),
            "email": Send("cart_reminder", "email", next="wait_open"),
            "wait_open": WaitForEvent(
                "email_opened", timeout=timedelta(days=1), on_event=None, on_timeout="sms"
            ),
            "sms": Send("cart_reminder", "sms"),
        },
        exit_criteria=(ExitCriterion("purchased", event="purchased"),),
        goal=Goal("purchased", within=timedelta(days=7)),
    )


CART_CONTENT = ContentItem(
    "cart_reminder",
    variants=(
        Variant("email", {"subject": "{{ profile.first_name | default: 'Hi' }}, your cart",
                          "body": "You left {{ event.item }} behind."}),
        Variant("sms", {"text": "Still want {{ event.item }}?"}),
    ),
)


def _event(name: str, customer: str, at: datetime, eid: str, **props: Any) -> Event:
    return Event(customer_id=customer, name=name, timestamp=at, properties=props, event_id=eid)


class StorageContract:
    """Everything the engine relies on from a ``Storage``. Subclass it once per adapter, with a
    name starting with ``Test``, and implement ``make_storage``; every test then runs on it::

        from cjo.testing import StorageContract

        class TestMyStorage(StorageContract):
            def make_storage(self) -> Storage:
                return MyStorage(self.tmp_path / "cjo.db")   # a new, empty database

    Optional hooks: ``reopen(storage)`` returns a second adapter on the same database (used to
    check that data survives ``close`` and, with ``supports_concurrency``, that two handles
    serialise); ``open_connections(storage)`` returns how many connections the adapter holds;
    ``supports_concurrency = True`` runs the two-thread test. Each test gets a fresh
    ``self.tmp_path``. For pytest's detailed assertion messages, call
    ``pytest.register_assert_rewrite("cjo.testing")`` in your conftest.py.
    """

    #: Set True if the adapter may be used from several threads (and processes) at once.
    supports_concurrency: ClassVar[bool] = False

    tmp_path: Path

    # --- hooks ---------------------------------------------------------------------------------

    def make_storage(self) -> Storage:
        """A new adapter on a new, empty database. ``self.tmp_path`` is a fresh directory."""
        raise NotImplementedError("subclasses of StorageContract implement make_storage()")

    def reopen(self, storage: Storage) -> Storage | None:
        """Another adapter on the same database as ``storage``; None if there is no such thing
        (a private in-memory database)."""
        return None

    def open_connections(self, storage: Storage) -> int | None:
        """How many database connections ``storage`` holds now; None if unknown."""
        return None

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Iterator[Storage]:
        self.tmp_path = tmp_path
        self._others: list[Storage] = []
        store = self.make_storage()
        try:
            yield store
        finally:
            for other in self._others:
                other.close()
            store.close()

    def _reopen(self, storage: Storage) -> Storage | None:
        other = self.reopen(storage)
        if other is not None:
            self._others.append(other)
        return other

    # --- claim_event ---------------------------------------------------------------------------

    def test_claim_event_dedupes_within_and_across_transactions(self, storage: Storage) -> None:
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e1") is True
            assert session.claim_event("e1") is False
            assert session.claim_event("e2") is True
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e1") is False
            assert session.claim_event("e2") is False
            assert session.claim_event("e3") is True

    def test_claim_event_ids_are_global_across_customers(self, storage: Storage) -> None:
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e1")
        with storage.customer("c2", T0) as session:
            assert session.claim_event("e1") is False
        with storage.batch(["c3", "c4"], T0) as sessions:
            assert sessions["c3"].claim_event("e1") is False
            assert sessions["c4"].claim_event("e1") is False

    def test_claim_event_same_id_twice_in_one_batch(self, storage: Storage) -> None:
        with storage.batch(["c1", "c2"], T0) as sessions:
            assert sessions["c1"].claim_event("e1") is True
            assert sessions["c1"].claim_event("e1") is False
            assert sessions["c2"].claim_event("e2") is True
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e1") is False
            assert session.claim_event("e2") is False

    def test_claim_event_same_id_for_two_customers_in_one_batch(self, storage: Storage) -> None:
        with storage.batch(["c1", "c2"], T0) as sessions:
            assert sessions["c1"].claim_event("e1") is True
            assert sessions["c2"].claim_event("e1") is False, "event ids are global"

    def test_announced_claims_answer_as_individual_claims(self, storage: Storage) -> None:
        with storage.customer("c1", T0) as session:
            assert session.claim_event("old")
        claims = [("c1", "e1"), ("c2", "e1"), ("c1", "old"), ("c2", "e2")]
        with storage.batch(["c1", "c2"], T0, claims=claims) as sessions:
            assert sessions["c2"].claim_event("e2") is True
            assert sessions["c1"].claim_event("e1") is True
            assert sessions["c2"].claim_event("e1") is False
            assert sessions["c1"].claim_event("old") is False
            assert sessions["c1"].claim_event("unannounced") is True
            assert sessions["c1"].claim_event("unannounced") is False
        with storage.batch(["c1"], T0, claims=[("c1", "e1"), ("c1", "e3")]) as sessions:
            assert sessions["c1"].claim_event("e1") is False
            assert sessions["c1"].claim_event("e3") is True
            assert sessions["c1"].claim_event("e3") is False

    def test_announced_claims_are_rolled_back_with_the_batch(self, storage: Storage) -> None:
        def fail() -> None:
            with storage.batch(["c1"], T0, claims=[("c1", "e1"), ("c1", "e2")]) as sessions:
                assert sessions["c1"].claim_event("e1")
                raise _BoomError

        with pytest.raises(_BoomError):
            fail()
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e1") is True
            assert session.claim_event("e2") is True

    def test_claim_event_rolled_back_is_forgotten(self, storage: Storage) -> None:
        def claim_then_fail() -> None:
            with storage.customer("c1", T0) as session:
                assert session.claim_event("e1")
                raise _BoomError

        with pytest.raises(_BoomError):
            claim_then_fail()
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e1") is True

    # --- profiles ------------------------------------------------------------------------------

    def test_profile_saved_and_loaded(self, storage: Storage) -> None:
        assert storage.get_profile("c1") is None
        profile = Profile(
            "c1",
            {"first_name": "Ada", "visits": 3, "score": 1.5, "vip": True, "tags": ["a", "b"],
             "address": {"city": "Lyon", "zip": None}},
            timezone="Europe/Paris",
            locale="fr-FR",
        )
        with storage.customer("c1", T0) as session:
            assert session.load_profile() is None
            session.apply(Changes("c1", profile=profile))
        with storage.customer("c1", T0) as session:
            assert session.load_profile() == profile
        assert storage.get_profile("c1") == profile
        assert storage.get_profile("c2") is None

        # Changes without a profile keep it; a new profile replaces it whole.
        _write(storage, Changes("c1", enrollments={"x": _enrollment("x")}))
        assert storage.get_profile("c1") == profile
        _write(storage, Changes("c1", profile=Profile("c1", {"first_name": "Bea"})))
        assert storage.get_profile("c1") == Profile("c1", {"first_name": "Bea"})

    # --- enrollments ---------------------------------------------------------------------------

    def test_enrollment_round_trips_every_field(self, storage: Storage) -> None:
        full = Enrollment(
            id="cart:c1:cart-7:1", journey_id="cart", version=3, customer_id="c1",
            entered_at=T0, step_id="wait", step_entered_at=T0 + HOUR + TICK, status="active",
            instance_key="cart-7", wake_at=T0 + 2 * HOUR, expires_at=T0 + timedelta(days=30),
            converted_at=T0 + HOUR, trigger_event_id="e1",
            context={"item": "shoes", "price": 12.5, "qty": 2, "gift": False, "tags": ["x"],
                     "meta": {"a": None, "b": [1, 2]}},
            visits={"wait": 1, "email": 2}, paths={"split": "A"},
        )
        ended = Enrollment(
            id="cart:c1:cart-6:1", journey_id="cart", version=3, customer_id="c1",
            entered_at=T0 + TICK, step_id="sms", step_entered_at=T0 + HOUR, status="exited",
            instance_key="cart-6", ended_at=T0 + 3 * HOUR, end_reason="purchased",
        )
        _write(storage, Changes("c1", enrollments={full.id: full, ended.id: ended},
                                new_enrollments={full.id, ended.id}))
        assert storage.get_enrollments("c1") == [full, ended]
        with storage.customer("c1", T0) as session:
            assert session.load_active() == [full]

    def test_load_active_only_this_customers_active_ones(self, storage: Storage) -> None:
        mine = _enrollment("j:c1:2", wake_at=T0 + HOUR)
        done = _enrollment("j:c1:1", status="completed", ended_at=T0, step=None)
        other = _enrollment("j:c2:1", customer="c2")
        _write(storage, Changes("c1", enrollments={done.id: done, mine.id: mine}))
        _write(storage, Changes("c2", enrollments={other.id: other}))
        with storage.customer("c1", T0) as session:
            assert session.load_active() == [mine]
        with storage.customer("c3", T0) as session:
            assert session.load_active() == []

    def test_load_active_returns_independent_copies(self, storage: Storage) -> None:
        original = _enrollment("j:c1:1", wake_at=T0 + HOUR)
        original.context["item"] = "shoes"
        stored = original.copy()
        # What apply() was given belongs to the storage from then on: hand it a copy.
        _write(storage, Changes("c1", enrollments={original.id: original.copy()}))

        with storage.customer("c1", T0) as session:
            (loaded,) = session.load_active()
            loaded.step_id = "email"
            loaded.status = "exited"
            loaded.wake_at = None
            loaded.context["item"] = "hat"
            loaded.visits["email"] = 9
            loaded.paths["split"] = "B"
            assert session.load_active() == [stored]
        assert storage.get_enrollments("c1") == [stored]
        (got,) = storage.get_enrollments("c1")
        got.context["item"] = "socks"
        assert storage.get_enrollments("c1") == [stored]
        assert storage.next_wake_at() == T0 + HOUR

    def test_get_enrollments_oldest_first(self, storage: Storage) -> None:
        # Ids sort in the opposite order ("10" < "9"), so only the age can give this order.
        first = _enrollment("j:c1:9", status="completed", ended_at=T0 + HOUR)
        second = _enrollment("j:c1:10", entered=T0 + 2 * HOUR)
        third = _enrollment("a:c1:1", journey="a", entered=T0 + 3 * HOUR)
        _write(storage, Changes("c1", enrollments={first.id: first}))
        _write(storage, Changes("c1", enrollments={second.id: second}))
        _write(storage, Changes("c1", enrollments={third.id: third}))
        _write(storage, Changes("c2", enrollments={"j:c2:1": _enrollment("j:c2:1", "c2")}))
        assert [e.id for e in storage.get_enrollments("c1")] == ["j:c1:9", "j:c1:10", "a:c1:1"]
        assert storage.get_enrollments("nobody") == []

    def test_history_oldest_first_filtered_by_journey_and_instance_key(
        self, storage: Storage
    ) -> None:
        rows = [
            _enrollment("j:c1:9", entered=T0, status="completed", ended_at=T0 + HOUR),
            _enrollment("j:c1:10", version=2, entered=T0 + 2 * HOUR),
            _enrollment("j:c1:k1:1", entered=T0 + 3 * HOUR, instance_key="k1"),
            _enrollment("o:c1:1", journey="o", entered=T0 + 4 * HOUR),
        ]
        for row in rows:
            _write(storage, Changes("c1", enrollments={row.id: row}))
        _write(storage, Changes("c2", enrollments={"j:c2:1": _enrollment("j:c2:1", "c2")}))
        with storage.customer("c1", T0) as session:
            assert session.history("j", None) == [
                PastEntry(T0, T0 + HOUR), PastEntry(T0 + 2 * HOUR, None)
            ]
            assert session.history("j", "k1") == [PastEntry(T0 + 3 * HOUR, None)]
            assert session.history("j", "k2") == []
            assert session.history("o", None) == [PastEntry(T0 + 4 * HOUR, None)]
            assert session.history("nope", None) == []
        with storage.customer("c2", T0) as session:
            assert session.history("j", None) == [PastEntry(T0, None)]

    def test_apply_upserts_enrollments_and_moves_wakeups(self, storage: Storage) -> None:
        e = _enrollment("j:c1:1", wake_at=T0 + HOUR)
        _write(storage, Changes("c1", enrollments={e.id: e}, new_enrollments={e.id}))
        assert storage.next_wake_at() == T0 + HOUR

        e.wake_at = T0 + 3 * HOUR
        e.step_id = "wait_more"
        _write(storage, Changes("c1", enrollments={e.id: e}))
        assert storage.get_enrollments("c1") == [e]
        assert storage.next_wake_at() == T0 + 3 * HOUR
        assert storage.claim_due(T0 + 2 * HOUR, 10, MINUTE) == []
        assert storage.claim_due(T0 + 3 * HOUR, 10, MINUTE) == [
            DueWakeup("c1", e.id, T0 + 3 * HOUR)
        ]

        # Only an active enrollment wakes up, even if an ended one still names a time.
        e.status, e.ended_at, e.wake_at = "completed", T0 + 3 * HOUR, T0 + 4 * HOUR
        _write(storage, Changes("c1", enrollments={e.id: e}))
        assert storage.next_wake_at() is None
        assert storage.claim_due(T0 + timedelta(days=9), 10, MINUTE) == []
        assert storage.get_enrollments("c1") == [e]
        with storage.customer("c1", T0) as session:
            assert session.load_active() == []

    # --- transactions --------------------------------------------------------------------------

    def _seed(self, storage: Storage, customer: str) -> tuple[Profile, Enrollment]:
        profile = Profile(customer, {"n": 0})
        e = _enrollment(f"j:{customer}:1", customer, wake_at=T0 + HOUR)
        _write(storage, Changes(customer, enrollments={e.id: e}, profile=profile,
                                activities=[_activity("entered", customer=customer)]))
        return profile, e

    def _change_everything(self, session: CustomerSession, customer: str, e: Enrollment) -> None:
        moved = e.copy()
        moved.step_id, moved.wake_at = "later", T0 + 5 * HOUR
        new = _enrollment(f"k:{customer}:1", customer, journey="k", wake_at=T0 + 2 * MINUTE)
        assert session.claim_event(f"ev-{customer}")
        session.apply(Changes(
            customer, enrollments={moved.id: moved, new.id: new}, new_enrollments={new.id},
            profile=Profile(customer, {"n": 1}), messages=[_message(f"m-{customer}", customer)],
            activities=[_activity("sent", customer=customer, detail="email")],
        ))

    def _assert_untouched(
        self, storage: Storage, customer: str, profile: Profile, e: Enrollment,
        counts: set[ActivityCount],
    ) -> None:
        assert storage.get_profile(customer) == profile
        assert storage.get_enrollments(customer) == [e]
        assert storage.outbox_entry(f"m-{customer}") is None
        assert storage.claim_outbox(T0 + timedelta(days=1), 10, MINUTE) == []
        assert _counts(storage, "j") == counts
        assert _counts(storage, "k") == set()
        with storage.customer(customer, T0) as session:
            assert session.claim_event(f"ev-{customer}") is True

    def test_exception_in_customer_rolls_back_everything(self, storage: Storage) -> None:
        profile, e = self._seed(storage, "c1")
        counts = _counts(storage, "j")
        def change_then_fail() -> None:
            with storage.customer("c1", T0) as session:
                self._change_everything(session, "c1", e)
                raise _BoomError

        with pytest.raises(_BoomError):
            change_then_fail()
        assert storage.next_wake_at() == T0 + HOUR
        self._assert_untouched(storage, "c1", profile, e, counts)

    def test_exception_in_batch_rolls_back_every_customer(self, storage: Storage) -> None:
        p1, e1 = self._seed(storage, "c1")
        p2, e2 = self._seed(storage, "c2")
        counts = _counts(storage, "j")
        def change_then_fail() -> None:
            with storage.batch(["c1", "c2"], T0) as sessions:
                self._change_everything(sessions["c1"], "c1", e1)
                self._change_everything(sessions["c2"], "c2", e2)
                raise _BoomError

        with pytest.raises(_BoomError):
            change_then_fail()
        assert storage.next_wake_at() == T0 + HOUR
        self._assert_untouched(storage, "c1", p1, e1, counts)
        self._assert_untouched(storage, "c2", p2, e2, counts)

    def test_batch_commits_every_customer(self, storage: Storage) -> None:
        _, e1 = self._seed(storage, "c1")
        _, e2 = self._seed(storage, "c2")
        with storage.batch(["c2", "c1", "c2"], T0) as sessions:
            assert sorted(sessions) == ["c1", "c2"]
            assert sessions["c1"].customer_id == "c1"
            assert [e.id for e in sessions["c2"].load_active()] == [e2.id]
            assert sessions["c2"].load_profile() == Profile("c2", {"n": 0})
            self._change_everything(sessions["c1"], "c1", e1)
            self._change_everything(sessions["c2"], "c2", e2)
        for customer in ("c1", "c2"):
            assert storage.get_profile(customer) == Profile(customer, {"n": 1})
            assert [e.step_id for e in storage.get_enrollments(customer)] == ["later", "wait"]
            entry = storage.outbox_entry(f"m-{customer}")
            assert entry is not None
            assert entry.status == "pending"
        assert storage.next_wake_at() == T0 + 2 * MINUTE
        assert ActivityCount("j", 1, "email", "sent", "email", 2) in _counts(storage, "j")

    # --- wake-ups ------------------------------------------------------------------------------

    def _wakeups(self, storage: Storage) -> None:
        due = T0 + HOUR
        rows = [
            _enrollment("b", step_entered=T0, wake_at=due),
            _enrollment("a", step_entered=T0, wake_at=due),
            _enrollment("z", step_entered=T0 - HOUR, wake_at=due),
            _enrollment("y", step_entered=T0 + 10 * MINUTE, wake_at=T0 + 30 * MINUTE),
            _enrollment("x", step_entered=T0, wake_at=due + 7 * MINUTE),
            _enrollment("w", step=None, status="completed", ended_at=T0),
        ]
        # No step_entered_at: the wait is taken to have begun at entry.
        g = _enrollment("g", "c2", entered=T0 - 2 * HOUR, wake_at=due)
        g.step_entered_at = None
        _write(storage, Changes("c1", enrollments={r.id: r for r in rows}))
        _write(storage, Changes("c2", enrollments={g.id: g}))

    def test_claim_due_orders_by_wake_at_then_wait_start_then_id(self, storage: Storage) -> None:
        self._wakeups(storage)
        due = storage.claim_due(T0 + HOUR, 100, MINUTE)
        assert [(d.enrollment_id, d.customer_id) for d in due] == [
            ("y", "c1"), ("g", "c2"), ("z", "c1"), ("a", "c1"), ("b", "c1")
        ]
        assert due[0].wake_at == T0 + 30 * MINUTE
        assert {d.wake_at for d in due[1:]} == {T0 + HOUR}

    def test_claim_due_limit_and_lease(self, storage: Storage) -> None:
        self._wakeups(storage)
        now = T0 + HOUR
        lease = 5 * MINUTE
        assert [d.enrollment_id for d in storage.claim_due(now, 2, lease)] == ["y", "g"]
        assert [d.enrollment_id for d in storage.claim_due(now, 2, lease)] == ["z", "a"]
        assert [d.enrollment_id for d in storage.claim_due(now, 2, lease)] == ["b"]
        assert storage.claim_due(now, 2, lease) == []
        assert storage.claim_due(now + lease - TICK, 100, lease) == []
        assert storage.next_wake_at() == T0 + 30 * MINUTE, "leased wake-ups still count"
        # The lease ran out: whoever held them is presumed dead.
        again = storage.claim_due(now + lease, 100, lease)
        assert [d.enrollment_id for d in again] == ["y", "g", "z", "a", "b"]
        assert storage.claim_due(now + 7 * MINUTE, 100, lease) == [
            DueWakeup("c1", "x", now + 7 * MINUTE)
        ]

    def test_rewriting_an_enrollment_clears_its_lease(self, storage: Storage) -> None:
        e = _enrollment("j:c1:1", wake_at=T0)
        _write(storage, Changes("c1", enrollments={e.id: e}))
        assert [d.enrollment_id for d in storage.claim_due(T0, 10, HOUR)] == [e.id]
        assert storage.claim_due(T0 + MINUTE, 10, HOUR) == []
        _write(storage, Changes("c1", enrollments={e.id: e}), T0 + MINUTE)
        assert [d.enrollment_id for d in storage.claim_due(T0 + MINUTE, 10, HOUR)] == [e.id]

    def test_due_batch_opens_the_customers_of_due_wakeups(self, storage: Storage) -> None:
        self._wakeups(storage)
        now = T0 + HOUR
        with storage.due_batch(now, 100, 5 * MINUTE) as sessions:
            # c1's "y" (due at T0+30m) comes first, then c2's "g".
            assert list(sessions) == ["c1", "c2"]
            assert {e.id for e in sessions["c1"].load_active()} == {"a", "b", "x", "y", "z"}
            done = _enrollment("y", step=None, status="completed", ended_at=now)
            sessions["c1"].apply(Changes("c1", enrollments={"y": done}))
        (y,) = [e for e in storage.get_enrollments("c1") if e.id == "y"]
        assert y.status == "completed"
        # The others stay reserved for the lease, then come back.
        with storage.due_batch(now, 100, 5 * MINUTE) as sessions:
            assert dict(sessions) == {}
        with storage.due_batch(now + 5 * MINUTE, 100, 5 * MINUTE) as sessions:
            assert list(sessions) == ["c2", "c1"]

    def test_due_batch_with_nothing_due(self, storage: Storage) -> None:
        with storage.due_batch(T0, 10, MINUTE) as sessions:
            assert dict(sessions) == {}

    def test_due_batch_rolls_back_with_an_error(self, storage: Storage) -> None:
        e = _enrollment("j:c1:1", wake_at=T0)

        _write(storage, Changes("c1", enrollments={e.id: e}))

        def fail() -> None:
            with storage.due_batch(T0, 10, MINUTE) as sessions:
                done = _enrollment(e.id, step=None, status="completed", ended_at=T0)
                sessions["c1"].apply(Changes("c1", enrollments={e.id: done}))
                raise _BoomError

        with pytest.raises(_BoomError):
            fail()
        (kept,) = storage.get_enrollments("c1")
        assert (kept.status, kept.wake_at) == ("active", T0)
        # Claimed again at the latest once the lease has run out.
        with storage.due_batch(T0 + MINUTE, 10, MINUTE) as sessions:
            assert list(sessions) == ["c1"]

    def test_next_wake_at(self, storage: Storage) -> None:
        assert storage.next_wake_at() is None
        self._wakeups(storage)
        assert storage.next_wake_at() == T0 + 30 * MINUTE

    # --- outbox --------------------------------------------------------------------------------

    def test_new_messages_belong_to_their_writer_for_the_dispatch_lease(
        self, storage: Storage
    ) -> None:
        message = Message(
            idempotency_key="j:c1:1:email:1", customer_id="c1", channel="email",
            content_id="welcome", fields={"subject": "Hi Ada", "body": "Welcome!"},
            journey_id="j", journey_version=2, step_id="email", enrollment_id="j:c1:1",
            created_at=T0 - HOUR, transactional=True, locale="fr-FR",
            recipient={"email": "ada@example.com", "visits": 3},
        )
        _write(storage, Changes("c1", messages=[message]))
        lease = storage.dispatch_lease
        entry = storage.outbox_entry(message.idempotency_key)
        assert entry is not None
        assert (entry.message, entry.status, entry.attempts) == (message, "pending", 0)
        assert entry.available_at == T0 + lease
        assert entry.last_error is None
        assert storage.claim_outbox(T0, 10, MINUTE) == []
        assert storage.claim_outbox(T0 + lease - TICK, 10, MINUTE) == []
        assert storage.claim_outbox(T0 + lease, 10, MINUTE) == [message]

    def test_claim_outbox_oldest_first_with_a_lease(self, storage: Storage) -> None:
        m1, m2, m3, m0 = (_message(k) for k in ("k-b", "k-a", "k-c", "k-0"))
        _write(storage, Changes("c1", messages=[m1, m2]), T0)
        _write(storage, Changes("c2", messages=[m3]), T0 + TICK)
        _write(storage, Changes("c1", messages=[m0]), T0 + 2 * TICK)
        now = T0 + 2 * TICK + storage.dispatch_lease
        assert storage.claim_outbox(now, 2, MINUTE) == [m1, m2]
        assert storage.claim_outbox(now, 10, MINUTE) == [m3, m0]
        assert storage.claim_outbox(now, 10, MINUTE) == []
        assert storage.claim_outbox(now + MINUTE - TICK, 10, MINUTE) == []
        assert storage.claim_outbox(now + MINUTE, 10, MINUTE) == [m1, m2, m3, m0]
        entry = storage.outbox_entry("k-b")
        assert entry is not None
        assert entry.available_at == now + 2 * MINUTE

    @pytest.mark.parametrize("status", ["delivered", "failed", "rejected"])
    def test_complete_outbox_records_the_result(
        self, storage: Storage, status: DeliveryStatus
    ) -> None:
        _write(storage, Changes("c1", messages=[_message("k1")]))
        now = T0 + storage.dispatch_lease
        assert [m.idempotency_key for m in storage.claim_outbox(now, 10, MINUTE)] == ["k1"]
        error = None if status == "delivered" else f"{status}: nope"
        storage.complete_outbox("k1", DeliveryResult(status, "p-1", error), now)
        entry = storage.outbox_entry("k1")
        assert entry is not None
        assert (entry.status, entry.attempts, entry.last_error) == (status, 1, error)
        assert storage.claim_outbox(now + timedelta(days=30), 10, MINUTE) == []
        # A finished message stays finished.
        storage.complete_outbox("k1", DeliveryResult("delivered"), now + HOUR)
        assert storage.outbox_entry("k1") == entry

    def test_complete_outbox_with_retry_at_keeps_it_pending_until_then(
        self, storage: Storage
    ) -> None:
        _write(storage, Changes("c1", messages=[_message("k1")]))
        now = T0 + storage.dispatch_lease
        storage.claim_outbox(now, 10, MINUTE)
        retry_at = now + 10 * MINUTE
        storage.complete_outbox("k1", DeliveryResult("failed", error="timeout"), now, retry_at)
        entry = storage.outbox_entry("k1")
        assert entry is not None
        assert (entry.status, entry.attempts, entry.last_error) == ("pending", 1, "timeout")
        assert entry.available_at == retry_at
        assert storage.claim_outbox(retry_at - TICK, 10, MINUTE) == []
        assert [m.idempotency_key for m in storage.claim_outbox(retry_at, 10, MINUTE)] == ["k1"]
        storage.complete_outbox("k1", DeliveryResult("delivered"), retry_at)
        entry = storage.outbox_entry("k1")
        assert entry is not None
        assert (entry.status, entry.attempts, entry.last_error) == ("delivered", 2, None)

    def test_complete_outbox_many_records_each_result(self, storage: Storage) -> None:
        _write(storage, Changes("c1", messages=[_message(k) for k in ("k1", "k2", "k3")]))
        now = T0 + storage.dispatch_lease
        storage.claim_outbox(now, 10, MINUTE)
        storage.complete_outbox_many([
            Delivery("k1", DeliveryResult("delivered", provider_id="p1")),
            Delivery("k2", DeliveryResult("failed", error="503"), now + HOUR),
            Delivery("k3", DeliveryResult("rejected", error="bad address")),
            Delivery("unknown", DeliveryResult("delivered")),
        ], now)
        states = {}
        for key in ("k1", "k2", "k3"):
            entry = storage.outbox_entry(key)
            assert entry is not None
            states[key] = (entry.status, entry.attempts, entry.last_error)
        assert states == {
            "k1": ("delivered", 1, None),
            "k2": ("pending", 1, "503"),
            "k3": ("rejected", 1, "bad address"),
        }
        assert storage.outbox_entry("unknown") is None
        assert [m.idempotency_key for m in storage.claim_outbox(now + HOUR, 10, MINUTE)] == ["k2"]
        storage.complete_outbox_many([], now)  # nothing to record is fine

    def test_complete_outbox_ignores_unknown_keys(self, storage: Storage) -> None:
        storage.complete_outbox("nope", DeliveryResult("delivered"), T0)
        assert storage.outbox_entry("nope") is None

    def test_duplicate_idempotency_key_is_ignored(self, storage: Storage) -> None:
        first = _message("k1", text="first")
        _write(storage, Changes("c1", messages=[first, _message("k1", text="same batch")]))
        _write(storage, Changes("c1", messages=[_message("k1", text="later")]), T0 + HOUR)
        entry = storage.outbox_entry("k1")
        assert entry is not None
        assert (entry.message, entry.available_at) == (first, T0 + storage.dispatch_lease)
        now = T0 + HOUR + storage.dispatch_lease
        assert storage.claim_outbox(now, 10, MINUTE) == [first]
        storage.complete_outbox("k1", DeliveryResult("delivered"), now)
        # A replay that writes the same send again must not make it pending again.
        _write(storage, Changes("c1", messages=[_message("k1", text="replay")]), now)
        entry = storage.outbox_entry("k1")
        assert entry is not None
        assert entry.status == "delivered"
        assert storage.claim_outbox(now + timedelta(days=1), 10, MINUTE) == []

    # --- reporting -----------------------------------------------------------------------------

    def test_activity_counts_aggregate(self, storage: Storage) -> None:
        _write(storage, Changes("c1", activities=[
            _activity("entered", step=None),
            _activity("step"),
            _activity("sent", detail="email"),
            _activity("timeout", version=2, step="wait", detail="purchased"),
            _activity("entered", journey="other", step=None),
        ]))
        _write(storage, Changes("c2", activities=[
            _activity("entered", customer="c2", step=None),
            _activity("sent", customer="c2", detail="email"),
            _activity("sent", customer="c2", detail="sms"),
        ]))
        assert _counts(storage, "j") == {
            ActivityCount("j", 1, None, "entered", None, 2),
            ActivityCount("j", 1, "email", "step", None, 1),
            ActivityCount("j", 1, "email", "sent", "email", 2),
            ActivityCount("j", 1, "email", "sent", "sms", 1),
            ActivityCount("j", 2, "wait", "timeout", "purchased", 1),
        }
        assert _counts(storage, "other") == {ActivityCount("other", 1, None, "entered", None, 1)}
        assert storage.activity_counts("none") == []

    def test_active_counts(self, storage: Storage) -> None:
        _write(storage, Changes("c1", enrollments={
            "j:c1:1": _enrollment("j:c1:1", step="wait"),
            "j:c1:2": _enrollment("j:c1:2", step="wait", status="completed", ended_at=T0),
            "o:c1:1": _enrollment("o:c1:1", journey="o"),
        }))
        _write(storage, Changes("c2", enrollments={
            "j:c2:1": _enrollment("j:c2:1", "c2", step="wait"),
            "j:c2:2": _enrollment("j:c2:2", "c2", version=2, step="email"),
            "j:c2:3": _enrollment("j:c2:3", "c2", version=2, step=None),
        }))
        assert storage.active_counts("j") == {(1, "wait"): 2, (2, "email"): 1, (2, None): 1}
        assert storage.active_counts("o") == {(1, "wait"): 1}
        assert storage.active_counts("none") == {}

    # --- erasure -------------------------------------------------------------------------------

    def test_erase_customer(self, storage: Storage) -> None:
        for customer in ("c1", "c2"):
            waiting = _enrollment(f"j:{customer}:2", customer, wake_at=T0 + HOUR)
            done = _enrollment(f"j:{customer}:1", customer, status="completed", ended_at=T0)
            _write(storage, Changes(
                customer, enrollments={done.id: done, waiting.id: waiting},
                profile=Profile(customer, {"email": f"{customer}@example.com"}),
                messages=[_message(f"{customer}-pending", customer),
                          _message(f"{customer}-sent", customer)],
                activities=[_activity("entered", customer=customer, step=None),
                            _activity("sent", customer=customer, detail="email")],
            ))
            storage.complete_outbox(f"{customer}-sent", DeliveryResult("delivered"), T0)
        counts = _counts(storage, "j")
        c2_enrollments = storage.get_enrollments("c2")

        storage.erase_customer("c1")
        assert storage.get_profile("c1") is None
        assert storage.get_enrollments("c1") == []
        assert storage.outbox_entry("c1-pending") is None
        assert [d.customer_id for d in storage.claim_due(T0 + HOUR, 10, MINUTE)] == ["c2"]
        assert storage.active_counts("j") == {(1, "wait"): 1}
        assert _counts(storage, "j") == counts, "aggregated activity is kept"
        pending = storage.claim_outbox(T0 + timedelta(days=1), 10, MINUTE)
        assert [m.idempotency_key for m in pending] == ["c2-pending"]
        with storage.customer("c1", T0) as session:
            assert session.load_profile() is None
            assert session.load_active() == []
            assert session.history("j", None) == []
        # The other customer is untouched.
        assert storage.get_profile("c2") == Profile("c2", {"email": "c2@example.com"})
        assert storage.get_enrollments("c2") == c2_enrollments
        entry = storage.outbox_entry("c2-sent")
        assert entry is not None
        assert entry.status == "delivered"
        storage.erase_customer("nobody")

    # --- settings ------------------------------------------------------------------------------

    def test_settings(self, storage: Storage) -> None:
        assert storage.get_setting("cursor") is None
        storage.put_setting("cursor", "2026-01-05T09:00:00+00:00")
        assert storage.get_setting("cursor") == "2026-01-05T09:00:00+00:00"
        storage.put_setting("cursor", "next")
        storage.put_setting("empty", "")
        assert storage.get_setting("cursor") == "next"
        assert storage.get_setting("empty") == ""
        assert storage.get_setting("other") is None

    # --- lifecycle -----------------------------------------------------------------------------

    def test_close_releases_connections_and_data_survives(self, storage: Storage) -> None:
        profile, e = self._seed(storage, "c1")
        _write(storage, Changes("c1", messages=[_message("k1")]))
        storage.put_setting("s", "v")
        before = self.open_connections(storage)
        storage.close()
        storage.close()  # closing twice is harmless
        after = self.open_connections(storage)
        if after is not None:
            assert after == 0, f"{after} connections left open after close() (had {before})"
        again = self._reopen(storage)
        if again is None:
            if after is None:
                pytest.skip("the adapter has neither open_connections() nor reopen()")
            return
        assert again.get_profile("c1") == profile
        assert again.get_enrollments("c1") == [e]
        assert again.outbox_entry("k1") is not None
        assert again.get_setting("s") == "v"
        with again.customer("c1", T0) as session:
            assert session.claim_event("e-after-reopen")
            assert [x.id for x in session.load_active()] == [e.id]

    # --- concurrency ---------------------------------------------------------------------------

    def test_concurrent_transactions_on_one_customer_serialize(self, storage: Storage) -> None:
        if not self.supports_concurrency:
            pytest.skip("the adapter does not claim to support concurrent use")
        # A second handle on the same database if there is one: then the database's own
        # locking is what is tested, not only the adapter's.
        stores = [storage, self._reopen(storage) or storage]
        errors: list[BaseException] = []
        start = threading.Barrier(len(stores))  # so the two really overlap

        def work(store: Storage) -> None:
            try:
                start.wait()
                for _ in range(200):
                    with store.customer("c1", T0) as session:
                        profile = session.load_profile()
                        n = profile.attributes["n"] if profile is not None else 0
                        session.apply(Changes("c1", profile=Profile("c1", {"n": n + 1})))
            except BaseException as exc:  # reported by the test thread below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        final = storage.get_profile("c1")
        assert final is not None
        assert final.attributes["n"] == 400

    # --- end to end ----------------------------------------------------------------------------

    def test_abandoned_cart_end_to_end(self, storage: Storage) -> None:
        clock = ManualClock(T0)
        email, sms = RecordingChannel(), RecordingChannel()
        engine = Engine(storage=storage, channels={"email": email, "sms": sms}, clock=clock)
        engine.publish(journeys=[abandoned_cart_journey()], content=[CART_CONTENT])
        engine.identify("ada", {"first_name": "Ada"})
        customers = ("buyer", "opener", "ignorer", "late", "ada")
        first = [_event("added_to_cart", c, T0, f"add-{c}", item=f"{c}'s shoes")
                 for c in customers]
        outcome = engine.handle_events(first)  # one group commit
        assert len(outcome.entered) == 5
        clock.advance(hours=3)
        engine.handle_event(_event("purchased", "buyer", clock.now(), "buy-buyer"))
        clock.advance(hours=1)
        assert {m.customer_id for m in engine.run_due().messages} == {
            "opener", "ignorer", "late", "ada"
        }
        clock.advance(hours=1)
        engine.handle_event(_event("email_opened", "opener", clock.now(), "open-opener"))
        clock.advance(hours=5)
        engine.handle_events([
            _event("purchased", "late", clock.now(), "buy-late"),
            first[0],  # a replayed event changes nothing
        ])
        assert engine.handle_event(first[1]).duplicate
        clock.advance(hours=18)
        assert {m.customer_id for m in engine.run_due().messages} == {"ignorer", "ada"}
        clock.advance(days=3)
        assert engine.run_due().messages == ()

        assert sorted(m.customer_id for m in email.messages) == ["ada", "ignorer", "late",
                                                                 "opener"]
        assert sorted(m.customer_id for m in sms.messages) == ["ada", "ignorer"]
        assert email.attempts == 4
        assert sms.attempts == 2
        (ada_email,) = email.for_customer("ada")
        assert ada_email.fields["subject"] == "Ada, your cart"
        assert ada_email.fields["body"] == "You left ada's shoes behind."
        assert ada_email.created_at == T0 + 4 * HOUR
        assert [m.created_at for m in sms.messages] == [T0 + 28 * HOUR] * 2
        for message in email.messages + sms.messages:
            entry = storage.outbox_entry(message.idempotency_key)
            assert entry is not None
            assert (entry.status, entry.attempts) == ("delivered", 1)

        statuses = {c: [(e.status, e.end_reason) for e in storage.get_enrollments(c)]
                    for c in customers}
        assert statuses == {
            "buyer": [("converted", "goal")],
            "opener": [("completed", None)],
            "ignorer": [("completed", None)],
            "late": [("converted", "goal")],
            "ada": [("completed", None)],
        }
        assert storage.get_profile("ada") == Profile("ada", {"first_name": "Ada"})
        assert storage.active_counts("abandoned_cart") == {}
        assert storage.next_wake_at() is None
        counts: dict[tuple[str, str | None], int] = {}
        for c in storage.activity_counts("abandoned_cart"):
            if c.kind in ("entered", "sent", "converted", "completed"):
                counts[(c.kind, c.detail)] = counts.get((c.kind, c.detail), 0) + c.count
        assert counts == {("entered", None): 5, ("sent", "email"): 4, ("sent", "sms"): 2,
                          ("converted", "goal"): 2, ("completed", None): 3}
