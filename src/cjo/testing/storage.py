"""The conformance suite for storage adapters (import it from ``cjo.testing``).

``StorageContract`` checks everything the engine relies on from a ``Storage``: customer records
that round-trip whole (fields a newer cjo wrote included), transactions that commit whole or not
at all, event de-duplication, customer wake-ups with their ordering and leases, records that
cannot be decoded and are set aside, the outbox's reservations and retries, definitions written
with compare-and-set, the activity log, erasure, pruning, and (in the tests named
``test_engine_*``) a whole journey run end to end through an ``Engine``.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

from cjo.channels.base import Channel, DeliveryResult, DeliveryStatus, Message
from cjo.channels.contract import ChannelContract
from cjo.channels.recording import RecordingChannel
from cjo.clock import ManualClock
from cjo.errors import ClockError, ConflictError, CorruptRecordError, StorageError, UsageError
from cjo.model.content import ContentItem, Variant
from cjo.model.events import Event, Profile
from cjo.model.journey import ExitCriterion, Goal, Journey
from cjo.model.steps import Action, Send, Wait, WaitForEvent
from cjo.model.triggers import EventTrigger, InactivityTrigger
from cjo.runtime.state import (
    HELD,
    RECORD_LAYOUT,
    Activity,
    CustomerState,
    EndedEnrollment,
    Enrollment,
    EntryHistory,
    OfferHistory,
    Track,
)
from cjo.storage.base import (
    ActivityCount,
    CustomerSession,
    Delivery,
    DueCustomer,
    PruneResult,
    Retention,
    SetAsideRecord,
    Storage,
)
from cjo.storage.erasure import schedule_claim

__all__ = ["CART_CONTENT", "ChannelContract", "StorageContract", "abandoned_cart_journey"]

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
TICK = timedelta(microseconds=1)  # the resolution every adapter must keep


class _BoomError(Exception):
    """Raised inside a transaction to make it roll back."""


# --- records -----------------------------------------------------------------------------------


def _enrollment(
    eid: str,
    customer: str = "c1",
    journey: str = "j",
    *,
    version: int = 1,
    entered: datetime = T0,
    step: str | None = "wait",
    wake_at: datetime | None = None,
    instance_key: str | None = None,
) -> Enrollment:
    return Enrollment(
        id=eid, journey_id=journey, version=version, customer_id=customer, entered_at=entered,
        step_id=step, step_entered_at=entered, instance_key=instance_key, wake_at=wake_at,
    )


def _state(
    customer: str = "c1",
    *,
    wake_at: datetime | None = None,
    attributes: dict[str, Any] | None = None,
    enrollments: Sequence[Enrollment] = (),
    timers: dict[str, datetime] | None = None,
) -> CustomerState:
    """A small record; ``wake_at`` gives it one waiting enrollment due then."""
    items = list(enrollments)
    if wake_at is not None:
        items.append(_enrollment(f"j:{customer}:1", customer, wake_at=wake_at))
    return CustomerState(
        customer_id=customer, created_at=T0 - DAY,
        profile=Profile(customer, attributes if attributes is not None else {"n": 0}),
        enrollments=items, timers=dict(timers or {}),
    )


def _full_state(customer: str = "c1") -> CustomerState:
    """A record with every field set, and values that are easy to lose on the way."""
    paris = timezone(timedelta(hours=2))
    profile = Profile(
        customer,
        {
            "first_name": "Ada", "visits": 3, "score": 1.5, "vip": True, "nothing": None,
            "unicode": "Zoë ✓", "empty": "", "zero": 0, "big": 2**53 + 1,
            "tags": ["a", "b", 3, None],
            "address": {"city": "Lyon", "zip": None, "geo": [45.76, 4.83],
                        "since": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)},
            "signed_up": datetime(2025, 3, 1, 8, 30, 0, 654321, tzinfo=paris),
            "orders": [{"at": T0 - 3 * DAY + TICK, "total": 12.5}, {"at": None, "total": 0}],
        },
        timezone="Europe/Paris",
        locale="fr-FR",
    )
    full = Enrollment(
        id=f"cart:{customer}:cart-7:1", journey_id="cart", version=3, customer_id=customer,
        entered_at=T0 - HOUR + TICK, step_id="wait", step_entered_at=T0 - MINUTE + 2 * TICK,
        instance_key="cart-7", wake_at=T0 + 2 * HOUR + 3 * TICK,
        expires_at=T0 + 30 * DAY, converted_at=T0 - 30 * MINUTE, trigger_event_id="e-7",
        context={"item": "shoes", "price": 12.5, "qty": 2, "gift": False, "none": None,
                 "tags": ["x"], "meta": {"a": None, "b": [1, 2, {"c": "d"}]},
                 "seen": T0 - 2 * HOUR + TICK},
        visits={"wait": 1, "email": 2}, paths={"split": "A", "ab": "control"},
        merged_passes={"email": 1}, control=True,
        carried_sends={"email": (2, (f"cart:{customer}:cart-7:1:mail:1",)),
                       "sms": (0, ("k:a", "k:b"))},
    )
    bare = Enrollment(
        id=f"welcome:{customer}:1", journey_id="welcome", version=1, customer_id=customer,
        entered_at=T0 - 2 * HOUR,
    )
    ended = [
        EndedEnrollment(
            id=f"cart:{customer}:cart-6:1", journey_id="cart", version=2,
            entered_at=T0 - 5 * DAY + TICK, ended_at=T0 - 4 * DAY, status="converted",
            end_reason="goal", step_id="sms", instance_key="cart-6",
            converted_at=T0 - 4 * DAY - TICK,
        ),
        EndedEnrollment(
            id=f"welcome:{customer}:0", journey_id="welcome", version=1,
            entered_at=T0 - 9 * DAY, ended_at=T0 - 8 * DAY, status="completed",
        ),
    ]
    history = {
        ("cart", None): EntryHistory(4, (T0 - 5 * DAY + TICK, T0 - HOUR + TICK), T0 - 4 * DAY),
        ("cart", "cart-7"): EntryHistory(1, (T0 - HOUR + TICK,), None),
        ("cart", ""): EntryHistory(0, (), None),
        ("welcome", None): EntryHistory(2, (), T0 - 8 * DAY),
    }
    return CustomerState(
        customer_id=customer, created_at=T0 - 30 * DAY + TICK, revision=0, profile=profile,
        enrollments=[full, bare], ended=tuple(ended), history=history,
        timers={"inactivity": T0 + 3 * DAY + TICK, "birthday": T0 + 40 * DAY},
        marks={"last_seen": T0 - 3 * HOUR + TICK, "fired": T0 - DAY},
        decided_at=T0 - HOUR,
        extra={"future_field": {"nested": [1, "x", None, {"deep": True}]}, "future_flag": 7},
        # Delivery policies: statement order matters (the last said wins a tie).
        consent={("news", "email"): (False, T0 - DAY + TICK), ("*", "*"): (True, T0 - DAY + TICK),
                 ("offers", "*"): (True, T0 - HOUR)},
        blocked={"sms": "STOP", "push": "hard bounce"},
        sends=[(T0 - 2 * DAY + TICK, "email", ("promo", "lifecycle/onboarding")),
               (T0 - HOUR, "sms", ())],
        tracks={
            "purchase": Track(T0 - 30 * DAY + TICK, T0 - 9 * DAY, T0 - HOUR + TICK, 3,
                              recent=[(T0 - 2 * DAY + TICK, None), (T0 - HOUR + TICK, None)]),
            "purchase|total#0a1b2c3d4e": Track(
                T0 - 30 * DAY, T0 - 9 * DAY, T0 - HOUR, 2, 37.5, 12.5, 25,
                [(T0 - 9 * DAY, 12.5), (T0 - HOUR, 25)],
                {"1700000000000000~": [2, 37.5, 12.5, 25]},
            ),
            "login": Track(T0 - 30 * DAY + TICK),
        },
        segments={"vip": T0 - DAY + TICK, "buyers": T0 - 9 * DAY},
        segments_basis="0123456789abcdef",
        erasures=2,
    )


def _revised(state: CustomerState, revision: int) -> CustomerState:
    return attrs.evolve(state, revision=revision)


def _message(
    key: str, customer: str = "c1", *, text: str = "hello", channel: str = "email"
) -> Message:
    return Message(
        idempotency_key=key, customer_id=customer, channel=channel, content_id="welcome",
        fields={"subject": text}, journey_id="j", journey_version=1, step_id="email",
        enrollment_id=f"j:{customer}:1", created_at=T0,
    )


def _activity(
    kind: str, *, customer: str = "c1", journey: str = "j", version: int = 1,
    step: str | None = "email", detail: str | None = None, at: datetime = T0,
) -> Activity:
    return Activity(at, customer, f"{journey}:{customer}:1", journey, version, step, kind, detail)


def _save(
    storage: Storage,
    state: CustomerState,
    now: datetime = T0,
    *,
    messages: Sequence[Message] = (),
    activities: Sequence[Activity] = (),
) -> None:
    """Save a copy of ``state`` in its own transaction (what is saved belongs to the storage
    from then on: the caller's object stays as it was for comparisons)."""
    with storage.customer(state.customer_id, now) as session:
        session.save(state.copy(), messages, activities)


def _load(storage: Storage, customer: str, now: datetime = T0) -> CustomerState | None:
    with storage.customer(customer, now) as session:
        return session.load()


def _counts(storage: Storage, journey_id: str) -> set[ActivityCount]:
    counts = storage.activity_counts(journey_id)
    assert len(counts) == len(set(counts)), f"a group is reported twice: {counts}"
    return set(counts)


def _due(storage: Storage, now: datetime, limit: int = 100, lease: timedelta = MINUTE) -> list[str]:
    return [d.customer_id for d in storage.claim_due(now, limit, lease)]


# --- the end-to-end journey --------------------------------------------------------------------


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
                          "text": "You left {{ event.item }} behind."}),
        Variant("sms", {"text": "Still want {{ event.item }}?"}),
    ),
)


class _ScriptedChannel(Channel):
    """Fails for the customers named in ``script`` (customer id -> status), delivers the rest;
    keeps every message it was given."""

    def __init__(self, script: dict[str, DeliveryStatus]) -> None:
        self.script = script
        self.sent: list[Message] = []

    def send(self, message: Message) -> DeliveryResult:
        self.sent.append(message)
        status = self.script.get(message.customer_id, "delivered")
        error = None if status == "delivered" else f"{status}: {message.customer_id}"
        return DeliveryResult(status, error=error)


def _event(name: str, customer: str, at: datetime, eid: str, **props: Any) -> Event:
    return Event(customer_id=customer, name=name, timestamp=at, properties=props, event_id=eid)


_ROLLED_BACK_CLAIM = (
    "an event id claimed in a transaction whose block raised was kept: batch() and customer() "
    "commit only when the block ends without an exception, and roll back everything else"
)


class StorageContract:
    """Everything the engine relies on from a ``Storage``. Subclass it once per adapter, with a
    name starting with ``Test``, and implement ``make_storage``; every test then runs on it::

        from cjo.testing import StorageContract

        class TestMyStorage(StorageContract):
            def make_storage(self) -> Storage:
                return MyStorage(self.tmp_path / "cjo.db")   # a new, empty database

    Optional hooks:

    - ``reopen(storage)`` returns a second adapter on the same database: used to check that
      data survives ``close``, that definitions published through one handle are seen by the
      other and, with ``supports_concurrency``, that two handles serialise;
    - ``open_connections(storage)`` returns how many connections the adapter holds;
    - ``corrupt_record(storage, customer_id)`` damages a stored record in place (its wake-up
      left as it was) so that it can no longer be decoded;
    - ``supports_concurrency = True`` runs the two-thread test.

    A test whose hook is missing is skipped. Each test gets a fresh ``self.tmp_path``. The
    tests named ``test_engine_*`` run a whole ``Engine`` on the adapter; select or deselect
    them with ``-k test_engine_``. A failure shows pytest's detailed assertion message (the
    values compared) as long as ``cjo.testing`` is imported before this module.
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

    def corrupt_record(self, storage: Storage, customer_id: str) -> None:
        """Overwrite the stored record of ``customer_id`` (which exists, with a wake-up) with
        something that cannot be decoded, keeping its wake-up: what a bug, a bad manual edit
        or a damaged disk leaves behind. The default skips the tests that need it."""
        pytest.skip("the adapter cannot store a damaged record (corrupt_record() not given)")

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
        with storage.customer("c1", T0 + HOUR) as session:
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
            assert sessions["c2"].claim_event("e1") is False, "event ids are global"
            assert sessions["c2"].claim_event("e2") is True
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e1") is False
            assert session.claim_event("e2") is False

    def test_announced_claims_answer_as_individual_claims(self, storage: Storage) -> None:
        with storage.customer("c1", T0) as session:
            assert session.claim_event("old")
        claims = [("c1", "e1"), ("c2", "e1"), ("c1", "old"), ("c2", "e2"), ("c2", "e2")]
        with storage.batch(["c1", "c2"], T0, claims=claims) as sessions:
            assert sessions["c1"].claim_event("e1") is True
            assert sessions["c2"].claim_event("e1") is False
            assert sessions["c1"].claim_event("old") is False
            assert sessions["c2"].claim_event("e2") is True
            assert sessions["c2"].claim_event("e2") is False
            assert sessions["c1"].claim_event("unannounced") is True
            assert sessions["c1"].claim_event("unannounced") is False
        with storage.batch(["c1"], T0, claims=[("c1", "e1"), ("c1", "e3")]) as sessions:
            assert sessions["c1"].claim_event("e1") is False
            assert sessions["c1"].claim_event("e3") is True
            assert sessions["c1"].claim_event("e3") is False
            assert sessions["c1"].claim_event("unannounced") is False

    def test_announced_claims_never_made_are_not_kept(self, storage: Storage) -> None:
        # The engine announces a group's event ids, then leaves out an event that nothing of
        # its customer reads once the earlier ones are decided: as if never claimed.
        with storage.batch(["c1"], T0, claims=[("c1", "e1"), ("c1", "e2")]) as sessions:
            assert sessions["c1"].claim_event("e1") is True
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e1") is False
            assert session.claim_event("e2") is True

    def test_announced_claims_are_rolled_back_with_the_batch(self, storage: Storage) -> None:
        def fail() -> None:
            with storage.batch(["c1"], T0, claims=[("c1", "e1"), ("c1", "e2")]) as sessions:
                assert sessions["c1"].claim_event("e1")
                assert sessions["c1"].claim_event("e2")
                raise _BoomError

        with pytest.raises(_BoomError):
            fail()
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e1") is True, _ROLLED_BACK_CLAIM
            assert session.claim_event("e2") is True, _ROLLED_BACK_CLAIM

    def test_claim_event_rolled_back_is_forgotten(self, storage: Storage) -> None:
        def claim_then_fail() -> None:
            with storage.customer("c1", T0) as session:
                assert session.claim_event("e1")
                raise _BoomError

        with pytest.raises(_BoomError):
            claim_then_fail()
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e1") is True, _ROLLED_BACK_CLAIM

    # --- the customer record -------------------------------------------------------------------

    def test_load_of_an_unknown_customer_is_none(self, storage: Storage) -> None:
        assert _load(storage, "nobody") is None
        with storage.batch(["nobody", "none"], T0) as sessions:
            assert sessions["nobody"].load() is None
            assert sessions["none"].load() is None
        assert storage.peek("nobody") is None

    def test_record_round_trips_every_field(self, storage: Storage) -> None:
        state = _full_state()
        _save(storage, state)
        expected = _revised(state, 1)
        assert _load(storage, "c1") == expected
        with storage.batch(["c1", "c2"], T0) as sessions:
            assert sessions["c1"].load() == expected
        assert storage.peek("c1") == expected
        loaded = _load(storage, "c1")
        assert loaded is not None
        # Field by field as well, for a readable failure.
        assert loaded.profile == state.profile
        assert loaded.enrollments == state.enrollments
        assert loaded.ended == state.ended
        assert loaded.history == state.history
        assert loaded.timers == state.timers
        assert loaded.marks == state.marks
        assert loaded.decided_at == state.decided_at
        assert loaded.extra == state.extra
        # Consent statements keep the order they were said in (it breaks ties).
        assert list(loaded.consent.items()) == list(state.consent.items())
        assert loaded.blocked == state.blocked
        assert loaded.sends == state.sends
        assert loaded.created_at == state.created_at
        assert loaded.erasures == state.erasures
        assert loaded.wake_at == T0 + 2 * HOUR + 3 * TICK
        # None stays None and "" stays "".
        assert loaded.enrollments[1] == state.enrollments[1]
        assert loaded.enrollments[1].step_id is None
        assert loaded.enrollments[1].instance_key is None
        assert set(loaded.history) == {("cart", None), ("cart", "cart-7"), ("cart", ""),
                                       ("welcome", None)}
        assert storage.next_wake_at() == T0 + 2 * HOUR + 3 * TICK

    def test_record_without_profile_or_anything_else(self, storage: Storage) -> None:
        bare = CustomerState("c1", T0)
        _save(storage, bare)
        assert _load(storage, "c1") == _revised(bare, 1)
        assert storage.next_wake_at() is None

    def test_revision_increments_with_every_save(self, storage: Storage) -> None:
        _save(storage, _state())
        for expected in (1, 2, 3):
            with storage.customer("c1", T0) as session:
                state = session.load()
                assert state is not None
                assert state.revision == expected
                state.profile = Profile("c1", {"n": expected})
                session.save(state, (), ())
        loaded = _load(storage, "c1")
        assert loaded is not None
        assert (loaded.revision, loaded.profile) == (4, Profile("c1", {"n": 3}))
        peeked = storage.peek("c1")
        assert peeked is not None
        assert peeked.revision == 4

    def test_save_replaces_the_record_whole(self, storage: Storage) -> None:
        _save(storage, _full_state())
        small = _revised(_state(wake_at=T0 + DAY), 1)
        _save(storage, small)
        assert _load(storage, "c1") == _revised(small, 2)
        assert storage.next_wake_at() == T0 + DAY

    def test_load_returns_an_independent_copy(self, storage: Storage) -> None:
        state = _full_state()
        _save(storage, state)
        expected = _revised(state, 1)
        with storage.customer("c1", T0) as session:
            loaded = session.load()
            assert loaded is not None
            e = loaded.enrollments[0]
            e.step_id, e.wake_at = "email", None
            e.context["item"] = "hat"
            e.visits["email"] = 9
            e.paths["split"] = "B"
            loaded.enrollments.append(_enrollment("new"))
            loaded.ended = ()
            cart = loaded.history[("cart", None)]
            loaded.history[("cart", None)] = EntryHistory(99, (*cart.recent, T0),
                                                          cart.last_ended_at)
            loaded.history[("new", None)] = EntryHistory(1)
            loaded.timers["other"] = T0
            loaded.marks.clear()
            loaded.extra["future_flag"] = 8
            loaded.profile = Profile("c1", {"changed": True})
            assert session.load() == expected
        assert _load(storage, "c1") == expected
        peeked = storage.peek("c1")
        assert peeked == expected
        with storage.batch(["c1"], T0) as sessions:
            first = sessions["c1"].load()
            assert first is not None
            first.enrollments.clear()
            first.timers.clear()
            assert sessions["c1"].load() == expected

    def test_fields_of_a_newer_version_are_kept(self, storage: Storage) -> None:
        # A newer cjo wrote top-level fields this one does not know; they are in ``extra``.
        # Writing the record back (after changing what this version knows) keeps them.
        state = _state(wake_at=T0 + HOUR)
        state.extra = {"loyalty": {"tier": "gold", "points": [1, 2, 3]}, "flags": ["x"]}
        _save(storage, state)
        with storage.customer("c1", T0) as session:
            loaded = session.load()
            assert loaded is not None
            assert loaded.extra == state.extra
            loaded.profile = Profile("c1", {"n": 1})
            session.save(loaded, (), ())
        again = _load(storage, "c1")
        assert again is not None
        assert again.extra == {"loyalty": {"tier": "gold", "points": [1, 2, 3]}, "flags": ["x"]}
        assert again.profile == Profile("c1", {"n": 1})

    def test_an_export_holds_what_a_newer_layout_wrote(self, storage: Storage) -> None:
        # A privacy export holds everything kept about the customer: what a newer cjo wrote
        # (fields, enrollment fields, positions appended to rows) is kept in ``extra``, so the
        # adapter's ``peek`` must return it whole.
        from cjo.export import export_customer  # noqa: PLC0415  (the export reads storage)
        from cjo.storage.codec import decode_state, encode_state, us  # noqa: PLC0415

        _save(storage, _state("c0"))
        record = export_customer(storage, "c0", T0)["record"]
        assert record["newer_layout"] == {
            "layout": None, "fields": {}, "enrollment_fields": {}, "row_positions": {},
        }
        # Fields a host's older record holds without a layout number of its own.
        _save(storage, _full_state("c1"))
        assert export_customer(storage, "c1", T0)["record"]["newer_layout"] == {
            "layout": None,
            "fields": {"future_field": {"nested": [1, "x", None, {"deep": True}]},
                       "future_flag": 7},
            "enrollment_fields": {}, "row_positions": {},
        }
        # A record of the next layout, as a newer cjo writes it.
        state = _full_state("c2")
        state.offers = {"ten_off": OfferHistory(1, (T0,))}
        data = json.loads(encode_state(state))
        data["v"] = RECORD_LAYOUT + 1
        data["award"] = {"tier": "gold", "since": {"$dt": us(T0 - DAY)}}
        cart, welcome = data["enr"]
        cart["prio"], welcome["seen"] = 3, {"by": ["email"]}
        data["hist"][0].append("hist+")
        data["cons"][2].append(True)
        data["led"][1].append(["led+", 1])
        data["ended"][0].append("ended+")
        data["trk"]["purchase|total#0a1b2c3d4e"].append({"trk": None})
        data["offers"]["ten_off"].append(2)
        _save(storage, decode_state(json.dumps(data), "c2"))
        exported = export_customer(storage, "c2", T0)
        assert json.loads(json.dumps(exported)) == exported  # plain JSON
        newer = exported["record"]["newer_layout"]
        assert newer == {
            "layout": RECORD_LAYOUT + 1,
            "fields": {"future_field": {"nested": [1, "x", None, {"deep": True}]},
                       "future_flag": 7,
                       "award": {"tier": "gold", "since": (T0 - DAY).isoformat()}},
            "enrollment_fields": {cart["id"]: {"prio": 3},
                                  welcome["id"]: {"seen": {"by": ["email"]}}},
            "row_positions": {
                "cons": [{"row": ["offers", "*"], "positions": [True]}],
                "ended": [{"row": data["ended"][0][0], "positions": ["ended+"]}],
                "hist": [{"row": ["cart", None], "positions": ["hist+"]}],
                "led": [{"row": [[us(T0 - HOUR), "sms", []], 0], "positions": [["led+", 1]]}],
                "offers": [{"row": "ten_off", "positions": [2]}],
                "trk": [{"row": "purchase|total#0a1b2c3d4e", "positions": [{"trk": None}]}],
            },
        }
        # Names in sorted order, whatever the order the record holds them in.
        assert list(newer["fields"]) == ["award", "future_field", "future_flag"]
        assert list(newer["enrollment_fields"]) == sorted([cart["id"], welcome["id"]])
        assert list(newer["row_positions"]) == ["cons", "ended", "hist", "led", "offers", "trk"]
        # The rest of the record exports as this cjo reads it.
        assert exported["record"]["profile"]["locale"] == "fr-FR"

    def test_a_session_reads_what_it_saved(self, storage: Storage) -> None:
        _save(storage, _state("c2"))
        with storage.batch(["c1", "c2"], T0) as sessions:
            assert sessions["c1"].load() is None
            new = _full_state("c1")
            sessions["c1"].save(new.copy(), (), ())
            loaded = sessions["c1"].load()
            assert loaded is not None
            assert _revised(loaded, 0) == new
            other = sessions["c2"].load()
            assert other is not None
            assert other.profile == Profile("c2", {"n": 0})
        with storage.customer("c3", T0) as session:
            session.save(_state("c3"), (), ())
            loaded = session.load()
            assert loaded is not None
            assert loaded.profile == Profile("c3", {"n": 0})

    def test_a_session_saves_only_its_own_customer(self, storage: Storage) -> None:
        with pytest.raises(StorageError), storage.customer("c1", T0) as session:
            session.save(_state("c2"), (), ())
        assert storage.peek("c2") is None
        assert storage.peek("c1") is None

    def test_a_session_used_after_its_transaction_is_refused(self, storage: Storage) -> None:
        with storage.customer("c1", T0) as session:
            pass
        with pytest.raises(StorageError):
            session.load()
        with pytest.raises(StorageError):
            session.save(_state(), (), ())
        with pytest.raises(StorageError):
            session.claim_event("late")

    def test_peek_returns_committed_state(self, storage: Storage) -> None:
        assert storage.peek("c1") is None
        first = _state(attributes={"n": 1})
        _save(storage, first)
        with storage.customer("c1", T0) as session:
            session.save(_state(attributes={"n": 2}), (), ())
            peeked = storage.peek("c1")
            assert peeked is not None
            assert peeked.profile == Profile("c1", {"n": 1}), "peek saw an uncommitted write"
        with storage.customer("c2", T0) as session:
            session.save(_state("c2"), (), ())
            assert storage.peek("c2") is None
        peeked = storage.peek("c1")
        assert peeked is not None
        # The revision written is the saved state's plus one (that one was new: 0).
        assert (peeked.profile, peeked.revision) == (Profile("c1", {"n": 2}), 1)

        def fail() -> None:
            with storage.customer("c1", T0) as session:
                session.save(_state(attributes={"n": 3}), (), ())
                raise _BoomError

        with pytest.raises(_BoomError):
            fail()
        peeked = storage.peek("c1")
        assert peeked is not None
        assert peeked.profile == Profile("c1", {"n": 2})

    def test_peek_many(self, storage: Storage) -> None:
        assert storage.peek_many([]) == {}
        assert storage.peek_many(["nobody"]) == {}
        states = {cid: _state(cid, attributes={"cid": cid}) for cid in ("c1", "c2", "c3")}
        for state in states.values():
            _save(storage, state)
        expected = {cid: _revised(state, 1) for cid, state in states.items() if cid != "c2"}
        assert storage.peek_many(["c3", "nobody", "c1", "c3"]) == expected
        with storage.customer("c1", T0) as session:
            session.save(_state("c1", attributes={"n": 9}), (), ())
            assert storage.peek_many(["c1"]) == {"c1": expected["c1"]}, "committed state only"

    # --- records that cannot be decoded --------------------------------------------------------

    def test_a_corrupt_record_raises_naming_the_customer(self, storage: Storage) -> None:
        _save(storage, _state("bad", wake_at=T0))
        _save(storage, _state("good", wake_at=T0))
        self.corrupt_record(storage, "bad")
        with pytest.raises(CorruptRecordError) as info, storage.customer("bad", T0) as session:
            session.load()
        assert info.value.customer_id == "bad"
        assert "'bad'" in str(info.value)
        with pytest.raises(CorruptRecordError, match="'bad'"):
            storage.peek("bad")  # never None: that would say the customer was never seen
        assert list(storage.peek_many(["bad", "good"])) == ["good"]
        with storage.batch(["bad", "good"], T0) as sessions:
            with pytest.raises(CorruptRecordError) as info:
                sessions["bad"].load()
            assert info.value.customer_id == "bad"
            loaded = sessions["good"].load()
            assert loaded is not None
            assert loaded.profile == Profile("good", {"n": 0})
        # The record is kept (not dropped) until someone repairs or erases it.
        assert _due(storage, T0) == ["bad", "good"]

    def test_a_corrupt_record_set_aside_is_not_claimed_again(self, storage: Storage) -> None:
        _save(storage, _state("bad", wake_at=T0))
        _save(storage, _state("good", wake_at=T0 + TICK))
        _save(storage, _state("later", wake_at=T0 + HOUR))
        self.corrupt_record(storage, "bad")
        with storage.due_batch(T0 + TICK, 10, MINUTE) as sessions:
            assert list(sessions) == ["bad", "good"]
            with pytest.raises(CorruptRecordError):
                sessions["bad"].load()
            sessions["bad"].set_aside("cannot be decoded")
            # The transaction goes on with the others.
            good = sessions["good"].load()
            assert good is not None
            good.enrollments.clear()
            sessions["good"].save(good, (), ())
        assert _due(storage, T0 + DAY) == ["later"]
        assert _due(storage, T0 + 2 * DAY) == ["later"]
        assert storage.next_wake_at() == T0 + HOUR
        with pytest.raises(CorruptRecordError), storage.customer("bad", T0) as session:
            session.load()  # kept as it was
        assert storage.records_set_aside(10) == [
            SetAsideRecord("bad", "cannot be decoded", T0 + TICK)
        ]
        storage.erase_customer("bad")
        assert _load(storage, "bad") is None
        assert storage.records_set_aside(10) == []

    def test_set_aside_stops_claiming_while_others_are_still_claimed(
        self, storage: Storage
    ) -> None:
        a, b, c = (_state(cid, wake_at=T0 + n * MINUTE) for n, cid in enumerate("abc"))
        for state in (a, b, c):
            _save(storage, state)
        with storage.due_batch(T0 + HOUR, 10, MINUTE) as sessions:
            assert list(sessions) == ["a", "b", "c"]
            sessions["a"].set_aside("a reason")
        # The leases ran out: the others come back, "a" never does.
        assert _due(storage, T0 + DAY) == ["b", "c"]
        assert _due(storage, T0 + 2 * DAY) == ["b", "c"]
        assert storage.next_wake_at() == T0 + MINUTE
        assert storage.peek("a") == _revised(a, 1), "the record is kept as it is"

        def fail() -> None:
            with storage.customer("b", T0) as session:
                session.set_aside("rolled back")
                raise _BoomError

        with pytest.raises(_BoomError):
            fail()
        assert _due(storage, T0 + 3 * DAY) == ["b", "c"], "set_aside is rolled back too"

    def test_a_set_aside_record_saved_again_is_claimed_again(self, storage: Storage) -> None:
        # A record repaired by hand is read and written back by the next transaction for the
        # customer: readable again, its wake-ups must fire again.
        a, b = _state("a", wake_at=T0 + MINUTE), _state("b", wake_at=T0 + 2 * MINUTE)
        for state in (a, b):
            _save(storage, state)
        with storage.due_batch(T0 + HOUR, 10, MINUTE) as sessions:
            sessions["a"].set_aside("cannot be decoded")
            sessions["b"].set_aside("cannot be decoded")
            # Set aside and saved in one transaction: it stays aside.
            sessions["b"].save(_state("b", wake_at=T0 + 2 * MINUTE), (), ())
        assert _due(storage, T0 + DAY) == []
        with storage.customer("a", T0 + DAY) as session:
            repaired = session.load()
            assert repaired is not None
            session.save(repaired, (), ())
        assert storage.next_wake_at() == T0 + MINUTE
        assert _due(storage, T0 + DAY) == ["a"]
        assert _due(storage, T0 + 2 * DAY) == ["a"], "b stays aside"

    def test_a_set_aside_record_is_repaired_by_any_later_save(self, storage: Storage) -> None:
        # Saved after a load in a group (as handle_events saves), or without a load at all.
        for n, cid in enumerate("ab"):
            _save(storage, _state(cid, wake_at=T0 + n * MINUTE))
        with storage.due_batch(T0 + HOUR, 10, MINUTE) as sessions:
            for cid in "ab":
                sessions[cid].set_aside("cannot be decoded")
        assert _due(storage, T0 + DAY) == []
        with storage.batch(["a"], T0 + DAY) as sessions:
            repaired = sessions["a"].load()
            assert repaired is not None
            sessions["a"].save(repaired, (), ())
        with storage.customer("b", T0 + DAY) as session:
            session.save(_state("b", wake_at=T0 + MINUTE), (), ())
        assert _due(storage, T0 + 2 * DAY) == ["a", "b"]
        assert storage.records_set_aside(10) == []

    def test_records_set_aside_are_listed_with_their_reason_and_instant(
        self, storage: Storage
    ) -> None:
        for n, cid in enumerate("abcde"):
            _save(storage, _state(cid, wake_at=T0 + n * MINUTE))
        assert storage.records_set_aside(10) == []
        with storage.due_batch(T0 + HOUR, 10, MINUTE) as sessions:
            sessions["c"].set_aside("c cannot be decoded")
            sessions["a"].set_aside("a cannot be decoded")
            # Set aside and saved in one transaction: it stays aside, so it is listed.
            sessions["e"].set_aside("e cannot be decoded")
            sessions["e"].save(_state("e", wake_at=T0), (), ())
        with storage.customer("b", T0 + DAY) as session:
            session.set_aside("b cannot be decoded")
        with storage.customer("nobody", T0 + DAY) as session:
            session.set_aside("no record to keep aside")

        def fail() -> None:
            with storage.customer("d", T0 + DAY) as session:
                session.set_aside("rolled back")
                raise _BoomError

        with pytest.raises(_BoomError):
            fail()
        assert storage.records_set_aside(10) == [
            SetAsideRecord("a", "a cannot be decoded", T0 + HOUR),
            SetAsideRecord("b", "b cannot be decoded", T0 + DAY),
            SetAsideRecord("c", "c cannot be decoded", T0 + HOUR),
            SetAsideRecord("e", "e cannot be decoded", T0 + HOUR),
        ]
        # Paged by customer id.
        first = storage.records_set_aside(2)
        assert [r.customer_id for r in first] == ["a", "b"]
        rest = storage.records_set_aside(2, after=first[-1].customer_id)
        assert [r.customer_id for r in rest] == ["c", "e"]
        assert storage.records_set_aside(2, after="e") == []
        assert [r.customer_id for r in storage.records_set_aside(10, after="bb")] == ["c", "e"]
        # Saved again (repaired, it was read back): no longer aside. Erased: gone.
        with storage.customer("a", T0 + 2 * DAY) as session:
            repaired = session.load()
            assert repaired is not None
            session.save(repaired, (), ())
        storage.erase_customer("c")
        assert [r.customer_id for r in storage.records_set_aside(10)] == ["b", "e"]
        # Set aside once more: the new reason, at the new instant.
        with storage.customer("a", T0 + 3 * DAY) as session:
            session.set_aside("again")
        assert storage.records_set_aside(1) == [SetAsideRecord("a", "again", T0 + 3 * DAY)]

    # --- transactions --------------------------------------------------------------------------

    def _seed(self, storage: Storage, customer: str) -> CustomerState:
        state = _state(customer, wake_at=T0 + HOUR)
        _save(storage, state, activities=[_activity("entered", customer=customer)])
        return _revised(state, 1)

    def _change_everything(self, session: CustomerSession, customer: str) -> None:
        state = session.load()
        assert state is not None
        state.enrollments[0].wake_at = T0 + 5 * HOUR
        state.enrollments.append(_enrollment(f"k:{customer}:1", customer, journey="k",
                                             wake_at=T0 + 2 * MINUTE))
        state.profile = Profile(customer, {"n": 1})
        assert session.claim_event(f"ev-{customer}")
        session.save(state, [_message(f"m-{customer}", customer)],
                     [_activity("sent", customer=customer, detail="email"),
                      _activity("entered", customer=customer, journey="k")])

    def _assert_untouched(
        self, storage: Storage, customer: str, stored: CustomerState, counts: set[ActivityCount],
    ) -> None:
        assert _load(storage, customer) == stored
        assert storage.peek(customer) == stored
        assert storage.outbox_entry(f"m-{customer}") is None
        assert storage.claim_outbox(T0 + DAY, 10, MINUTE) == []
        assert _counts(storage, "j") == counts
        assert _counts(storage, "k") == set()
        assert storage.activities(T0 - DAY, T0 + DAY, journey_id="k") == []
        with storage.customer(customer, T0) as session:
            assert session.claim_event(f"ev-{customer}") is True

    def test_exception_in_customer_rolls_back_everything(self, storage: Storage) -> None:
        stored = self._seed(storage, "c1")
        counts = _counts(storage, "j")

        def change_then_fail() -> None:
            with storage.customer("c1", T0) as session:
                self._change_everything(session, "c1")
                raise _BoomError

        with pytest.raises(_BoomError):
            change_then_fail()
        assert storage.next_wake_at() == T0 + HOUR
        self._assert_untouched(storage, "c1", stored, counts)

    def test_exception_in_batch_rolls_back_every_customer(self, storage: Storage) -> None:
        s1 = self._seed(storage, "c1")
        s2 = self._seed(storage, "c2")
        counts = _counts(storage, "j")

        def change_then_fail() -> None:
            with storage.batch(["c1", "c2", "c3"], T0) as sessions:
                self._change_everything(sessions["c1"], "c1")
                self._change_everything(sessions["c2"], "c2")
                sessions["c3"].save(_state("c3", wake_at=T0), [_message("m-c3", "c3")], ())
                raise _BoomError

        with pytest.raises(_BoomError):
            change_then_fail()
        assert storage.next_wake_at() == T0 + HOUR
        self._assert_untouched(storage, "c1", s1, counts)
        self._assert_untouched(storage, "c2", s2, counts)
        assert storage.peek("c3") is None
        assert storage.outbox_entry("m-c3") is None

    def test_batch_commits_every_customer(self, storage: Storage) -> None:
        self._seed(storage, "c1")
        self._seed(storage, "c2")
        with storage.batch(["c2", "c1", "c2"], T0) as sessions:
            assert sorted(sessions) == ["c1", "c2"]
            assert sessions["c1"].customer_id == "c1"
            assert sessions["c2"].customer_id == "c2"
            self._change_everything(sessions["c1"], "c1")
            self._change_everything(sessions["c2"], "c2")
        for customer in ("c1", "c2"):
            state = storage.peek(customer)
            assert state is not None
            assert state.revision == 2
            assert state.profile == Profile(customer, {"n": 1})
            assert [e.journey_id for e in state.enrollments] == ["j", "k"]
            entry = storage.outbox_entry(f"m-{customer}")
            assert entry is not None
            assert entry.status == "pending"
        assert storage.next_wake_at() == T0 + 2 * MINUTE
        assert ActivityCount("j", 1, "email", "sent", "email", 2) in _counts(storage, "j")
        assert _counts(storage, "k") == {ActivityCount("k", 1, "email", "entered", None, 2)}

    def test_batch_of_no_customers(self, storage: Storage) -> None:
        with storage.batch([], T0) as sessions:
            assert dict(sessions) == {}

    # --- wake-ups ------------------------------------------------------------------------------

    def _wakeups(self, storage: Storage) -> None:
        due = T0 + HOUR
        for cid, wake_at in [("b", due), ("a", due), ("z", due), ("y", T0 + 30 * MINUTE),
                             ("x", due + 7 * MINUTE)]:
            _save(storage, _state(cid, wake_at=wake_at))
        _save(storage, _state("w"))  # nothing to wait for: never due
        # A customer timer wakes a customer as an enrollment's wait does.
        _save(storage, _state("t", timers={"inactivity": due, "later": due + DAY}))
        # The earliest of several waits is the customer's wake-up.
        _save(storage, _state("m", enrollments=[
            _enrollment("j:m:1", "m", wake_at=due + 3 * HOUR),
            _enrollment("k:m:1", "m", journey="k", wake_at=T0 + 45 * MINUTE),
        ], timers={"inactivity": due + 2 * HOUR}))

    def test_claim_due_orders_by_wake_at_then_customer_id(self, storage: Storage) -> None:
        self._wakeups(storage)
        due = storage.claim_due(T0 + HOUR, 100, HOUR)
        assert due == [
            DueCustomer("y", T0 + 30 * MINUTE),
            DueCustomer("m", T0 + 45 * MINUTE),
            DueCustomer("a", T0 + HOUR),
            DueCustomer("b", T0 + HOUR),
            DueCustomer("t", T0 + HOUR),
            DueCustomer("z", T0 + HOUR),
        ], (
            "claim_due returns the due customers earliest wake_at first, then by customer id "
            "(a wake_at is the earliest of the record's waits and timers, as saved)"
        )
        assert storage.claim_due(T0 + HOUR + 7 * MINUTE, 100, MINUTE) == [
            DueCustomer("x", T0 + HOUR + 7 * MINUTE)
        ]

    def test_claim_due_limit_and_lease(self, storage: Storage) -> None:
        self._wakeups(storage)
        now = T0 + HOUR
        lease = 5 * MINUTE
        assert _due(storage, now, 2, lease) == ["y", "m"]
        assert _due(storage, now, 2, lease) == ["a", "b"]
        assert _due(storage, now, 2, lease) == ["t", "z"]
        assert _due(storage, now, 2, lease) == []
        assert _due(storage, now + lease - TICK, 100, lease) == []
        assert storage.next_wake_at() == T0 + 30 * MINUTE, "leased wake-ups still count"
        # The lease ran out: whoever held them is presumed dead.
        assert _due(storage, now + lease, 100, lease) == ["y", "m", "a", "b", "t", "z"]
        assert _due(storage, now + 7 * MINUTE, 100, lease) == ["x"]
        assert _due(storage, now + 7 * MINUTE, 100, lease) == []
        assert _due(storage, now + 10 * MINUTE, 1, lease) == ["y"]

    def test_saving_a_record_clears_its_lease_and_moves_its_wake_at(
        self, storage: Storage
    ) -> None:
        _save(storage, _state(wake_at=T0))
        assert _due(storage, T0, 10, HOUR) == ["c1"]
        assert _due(storage, T0 + MINUTE, 10, HOUR) == []
        # Written back unchanged: claimable again at once (the lease went with the write).
        with storage.customer("c1", T0 + MINUTE) as session:
            state = session.load()
            assert state is not None
            session.save(state, (), ())
        assert _due(storage, T0 + MINUTE, 10, HOUR) == ["c1"]
        # Moved later: not due before then.
        with storage.customer("c1", T0 + 2 * MINUTE) as session:
            state = session.load()
            assert state is not None
            state.enrollments[0].wake_at = T0 + 3 * HOUR
            session.save(state, (), ())
        assert storage.next_wake_at() == T0 + 3 * HOUR
        assert _due(storage, T0 + 3 * HOUR - TICK) == []
        assert storage.claim_due(T0 + 3 * HOUR, 10, HOUR) == [DueCustomer("c1", T0 + 3 * HOUR)]
        # A customer timer earlier than every wait wins.
        with storage.customer("c1", T0 + 3 * HOUR) as session:
            state = session.load()
            assert state is not None
            state.timers["inactivity"] = T0 + 2 * HOUR
            session.save(state, (), ())
        assert storage.next_wake_at() == T0 + 2 * HOUR
        # Nothing left to wait for: never claimed again.
        with storage.customer("c1", T0 + 3 * HOUR) as session:
            state = session.load()
            assert state is not None
            state.enrollments.clear()
            state.timers.clear()
            session.save(state, (), ())
        assert storage.next_wake_at() is None
        assert _due(storage, T0 + 365 * DAY) == []

    def test_a_record_without_wake_at_is_never_claimed(self, storage: Storage) -> None:
        _save(storage, _state("c1"))
        _save(storage, _state("c2", enrollments=[_enrollment("j:c2:1", "c2")]))
        assert storage.next_wake_at() is None
        assert storage.claim_due(T0 + 365 * DAY, 10, MINUTE) == []
        with storage.due_batch(T0 + 365 * DAY, 10, MINUTE) as sessions:
            assert dict(sessions) == {}

    def test_due_batch_opens_the_due_customers(self, storage: Storage) -> None:
        self._wakeups(storage)
        now = T0 + HOUR
        with storage.due_batch(now, 3, 5 * MINUTE) as sessions:
            assert list(sessions) == ["y", "m", "a"]
            y = sessions["y"].load()
            assert y is not None
            assert y.wake_at == T0 + 30 * MINUTE
            y.enrollments.clear()
            sessions["y"].save(y, [_message("m-y", "y")], [_activity("step", customer="y")])
            assert sessions["y"].claim_event("in-due-batch")
        assert storage.peek("y") == _revised(_state("y"), 2)
        assert storage.outbox_entry("m-y") is not None
        # The others stay reserved for the lease, then come back.
        with storage.due_batch(now + MINUTE, 100, 5 * MINUTE) as sessions:
            assert list(sessions) == ["b", "t", "z"]
        with storage.due_batch(now + MINUTE, 100, 5 * MINUTE) as sessions:
            assert dict(sessions) == {}
        with storage.due_batch(now + 5 * MINUTE, 100, 5 * MINUTE) as sessions:
            assert list(sessions) == ["m", "a"]

    def test_due_batch_claims_by_due_and_leases_from_now(self, storage: Storage) -> None:
        # A pass at ``now`` that fires what fell due before a schedule occurrence claims by the
        # occurrence, but its transaction and leases run from the pass: a lease timed from the
        # occurrence could already have run out, and another worker would claim them too.
        self._wakeups(storage)
        now = T0 + 2 * HOUR
        with storage.due_batch(now, 100, 5 * MINUTE, due=T0 + 50 * MINUTE) as sessions:
            assert list(sessions) == ["y", "m"]
        with storage.due_batch(now + 4 * MINUTE, 100, 5 * MINUTE) as sessions:
            assert list(sessions) == ["a", "b", "t", "z", "x"]
        with storage.due_batch(now + 5 * MINUTE, 100, 5 * MINUTE) as sessions:
            assert list(sessions) == ["y", "m"]

    def test_due_batch_with_nothing_due(self, storage: Storage) -> None:
        with storage.due_batch(T0, 10, MINUTE) as sessions:
            assert dict(sessions) == {}
        _save(storage, _state(wake_at=T0 + HOUR))
        with storage.due_batch(T0, 10, MINUTE) as sessions:
            assert dict(sessions) == {}

    def test_due_batch_rolls_back_with_an_error(self, storage: Storage) -> None:
        stored = self._seed(storage, "c1")

        def fail() -> None:
            with storage.due_batch(T0 + HOUR, 10, MINUTE) as sessions:
                self._change_everything(sessions["c1"], "c1")
                raise _BoomError

        with pytest.raises(_BoomError):
            fail()
        assert storage.peek("c1") == stored
        assert storage.outbox_entry("m-c1") is None
        assert _counts(storage, "k") == set()
        # Claimed again at the latest once the lease has run out.
        with storage.due_batch(T0 + HOUR + MINUTE, 10, MINUTE) as sessions:
            assert list(sessions) == ["c1"]
            assert sessions["c1"].claim_event("ev-c1") is True

    def test_next_wake_at(self, storage: Storage) -> None:
        assert storage.next_wake_at() is None
        self._wakeups(storage)
        assert storage.next_wake_at() == T0 + 30 * MINUTE
        storage.erase_customer("y")
        assert storage.next_wake_at() == T0 + 45 * MINUTE

    # --- outbox --------------------------------------------------------------------------------

    def test_new_messages_belong_to_their_writer_for_the_dispatch_lease(
        self, storage: Storage
    ) -> None:
        message = Message(
            idempotency_key="j:c1:1:email:1", customer_id="c1", channel="email",
            content_id="welcome", fields={"subject": "Hi Ada", "body": "Welcome!"},
            journey_id="j", journey_version=2, step_id="email", enrollment_id="j:c1:1",
            created_at=T0 - HOUR + TICK, transactional=True, locale="fr-FR",
            # A recipient attribute may be an instant (a host's own attribute), kept as one.
            recipient={"email": "ada@example.com", "visits": 3, "member_since": T0 - HOUR,
                       "tiers": [{"since": T0 - 2 * HOUR}]},
        )
        _save(storage, _state(), messages=[message])
        lease = storage.dispatch_lease
        entry = storage.outbox_entry(message.idempotency_key)
        assert entry is not None
        assert (entry.message, entry.status, entry.attempts) == (message, "pending", 0)
        assert entry.available_at == T0 + lease
        assert entry.last_error is None
        assert storage.claim_outbox(T0, 10, MINUTE) == []
        assert storage.claim_outbox(T0 + lease - TICK, 10, MINUTE) == []
        assert storage.claim_outbox(T0 + lease, 10, MINUTE) == [message]
        assert storage.outbox_entry("unknown") is None

    def test_claim_outbox_oldest_first_with_a_lease(self, storage: Storage) -> None:
        m1, m2, m3, m0 = (_message(k) for k in ("k-b", "k-a", "k-c", "k-0"))
        _save(storage, _state("c1"), T0, messages=[m1, m2])
        _save(storage, _state("c2"), T0 + TICK, messages=[m3])
        _save(storage, _state("c1"), T0 + 2 * TICK, messages=[m0])
        now = T0 + 2 * TICK + storage.dispatch_lease
        assert storage.claim_outbox(now, 2, MINUTE) == [m1, m2]
        assert storage.claim_outbox(now, 10, MINUTE) == [m3, m0]
        assert storage.claim_outbox(now, 10, MINUTE) == []
        assert storage.claim_outbox(now + MINUTE - TICK, 10, MINUTE) == []
        assert storage.claim_outbox(now + MINUTE, 10, MINUTE) == [m1, m2, m3, m0]
        entry = storage.outbox_entry("k-b")
        assert entry is not None
        assert entry.available_at == now + 2 * MINUTE

    def _messages_of_channels(self, storage: Storage) -> tuple[Message, ...]:
        """Five pending messages on three channels, written in this order, all available at
        the returned messages' ``T0 + 3 * TICK + dispatch_lease``."""
        e1, s1, p1, s2, e2 = (
            _message("k-e1", "c1"), _message("k-s1", "c1", channel="sms"),
            _message("k-p1", "c2", channel="push"), _message("k-s2", "c2", channel="sms"),
            _message("k-e2", "c1"),
        )
        _save(storage, _state("c1"), T0, messages=[e1, s1])
        _save(storage, _state("c2"), T0 + TICK, messages=[p1])
        _save(storage, _state("c2"), T0 + 2 * TICK, messages=[s2])
        _save(storage, _state("c1"), T0 + 3 * TICK, messages=[e2])
        return e1, s1, p1, s2, e2

    def test_claim_outbox_takes_only_the_channels_asked_for(self, storage: Storage) -> None:
        e1, s1, p1, s2, e2 = self._messages_of_channels(storage)
        now = T0 + 3 * TICK + storage.dispatch_lease
        untouched = {m.idempotency_key: storage.outbox_entry(m.idempotency_key)
                     for m in (e1, p1, e2)}
        assert storage.claim_outbox(now, 10, MINUTE, channels=["sms"]) == [s1, s2]
        # The others are as they were: neither leased nor counted.
        assert {k: storage.outbox_entry(k) for k in untouched} == untouched
        assert storage.claim_outbox(now, 10, MINUTE, channels=["sms"]) == [], "leased"
        assert storage.claim_outbox(now, 10, MINUTE, channels=()) == []
        assert storage.claim_outbox(now, 10, MINUTE, channels={"fax"}) == []
        # Several channels: oldest first across them, up to the limit.
        assert storage.claim_outbox(now, 2, MINUTE, channels={"push", "email", "fax"}) == [
            e1, p1
        ]
        assert storage.claim_outbox(now, 10, MINUTE, channels=("email", "push")) == [e2]
        entry = storage.outbox_entry("k-p1")
        assert entry is not None
        assert (entry.status, entry.attempts, entry.available_at) == (
            "pending", 0, now + MINUTE
        )
        # Once the leases run out, no filter (None) takes every channel.
        assert storage.claim_outbox(now + MINUTE, 10, MINUTE, channels=None) == [
            e1, s1, p1, s2, e2
        ]
        assert storage.claim_outbox(now + 2 * MINUTE, 10, MINUTE, channels=[]) == []

    @pytest.mark.parametrize("channels", ["sms", ["sms", 3], 3], ids=["str", "not a name", "int"])
    def test_claim_outbox_refuses_channels_that_are_not_names(
        self, storage: Storage, channels: Any
    ) -> None:
        # A str would be read as its letters (channels "s" and "m"): channel_filter refuses it.
        _e1, s1, _p1, s2, _e2 = self._messages_of_channels(storage)
        now = T0 + 3 * TICK + storage.dispatch_lease
        with pytest.raises(UsageError, match="channel"):
            storage.claim_outbox(now, 10, MINUTE, channels=channels)
        assert storage.claim_outbox(now, 10, MINUTE, channels=["sms"]) == [s1, s2], (
            "a refused claim leased nothing"
        )

    def test_claim_outbox_of_channels_keeps_retries_and_releases(self, storage: Storage) -> None:
        e1, s1, _p1, s2, e2 = self._messages_of_channels(storage)
        now = T0 + 3 * TICK + storage.dispatch_lease
        assert storage.claim_outbox(now, 10, MINUTE, channels=["sms", "email"]) == [
            e1, s1, s2, e2
        ]
        storage.complete_outbox_many([
            Delivery("k-s1", DeliveryResult("transient", error="busy"), now + HOUR),
            Delivery("k-s2", DeliveryResult("delivered")),
        ], now)
        storage.release_outbox(["k-e2"], now)
        assert storage.claim_outbox(now, 10, MINUTE, channels=["sms"]) == []
        assert storage.claim_outbox(now, 10, MINUTE, channels=["email"]) == [e2]
        assert storage.claim_outbox(now + HOUR, 10, MINUTE, channels=["sms"]) == [s1]
        storage.complete_outbox("k-s1", DeliveryResult("permanent", error="no"), now + HOUR)
        assert storage.claim_outbox(now + DAY, 10, MINUTE, channels=["sms"]) == []
        assert storage.retry_dead_letter("k-s1", now + DAY) is True
        assert storage.claim_outbox(now + DAY, 10, MINUTE, channels=["sms"]) == [s1]

    def test_retried_dead_letters_keep_their_place_in_the_outbox(self, storage: Storage) -> None:
        # Oldest first is the order the messages were written in, a retried dead letter's too,
        # whatever order the host retries them in: every adapter claims (and so sends, and
        # logs what dispatch does) in the same order.
        e1, s1, p1, s2, e2 = self._messages_of_channels(storage)
        now = T0 + 3 * TICK + storage.dispatch_lease
        assert storage.claim_outbox(now, 10, MINUTE) == [e1, s1, p1, s2, e2]
        storage.complete_outbox_many([
            Delivery(key, DeliveryResult("permanent", error="no"))
            for key in ("k-e2", "k-s1", "k-e1")
        ], now)
        for key in ("k-e2", "k-s1", "k-e1"):
            assert storage.retry_dead_letter(key, now) is True
        assert storage.claim_outbox(now, 10, MINUTE, channels=["email"]) == [e1, e2]
        assert storage.claim_outbox(now + MINUTE, 10, MINUTE) == [e1, s1, p1, s2, e2]

    def test_pending_by_channel_counts_what_waits(self, storage: Storage) -> None:
        assert storage.pending_by_channel() == {}
        self._messages_of_channels(storage)
        assert storage.pending_by_channel() == {"email": 2, "sms": 2, "push": 1}
        now = T0 + 3 * TICK + storage.dispatch_lease
        storage.claim_outbox(now, 10, MINUTE, channels=["sms", "push"])
        assert storage.pending_by_channel() == {"email": 2, "sms": 2, "push": 1}, (
            "claimed messages are still pending"
        )
        storage.complete_outbox_many([
            Delivery("k-s1", DeliveryResult("transient", error="busy"), now + HOUR),
            Delivery("k-s2", DeliveryResult("delivered")),
            Delivery("k-p1", DeliveryResult("permanent", error="no")),
        ], now)
        assert storage.pending_by_channel() == {"email": 2, "sms": 1}
        assert storage.retry_dead_letter("k-p1", now) is True
        assert storage.pending_by_channel() == {"email": 2, "sms": 1, "push": 1}
        storage.erase_customer("c1")
        assert storage.pending_by_channel() == {"push": 1}

    @pytest.mark.parametrize("status", ["delivered", "transient", "permanent"])
    def test_complete_outbox_records_the_result(
        self, storage: Storage, status: DeliveryStatus
    ) -> None:
        _save(storage, _state(), messages=[_message("k1")])
        now = T0 + storage.dispatch_lease
        assert [m.idempotency_key for m in storage.claim_outbox(now, 10, MINUTE)] == ["k1"]
        error = None if status == "delivered" else f"{status}: nope"
        storage.complete_outbox("k1", DeliveryResult(status, "p-1", error), now)
        entry = storage.outbox_entry("k1")
        assert entry is not None
        # Without a retry time, any failure is final: a dead letter.
        outbox_status = "delivered" if status == "delivered" else "dead"
        assert (entry.status, entry.attempts, entry.last_error) == (outbox_status, 1, error)
        assert storage.claim_outbox(now + 30 * DAY, 10, MINUTE) == []
        # A finished message stays finished.
        storage.complete_outbox("k1", DeliveryResult("delivered"), now + HOUR)
        assert storage.outbox_entry("k1") == entry

    def test_complete_outbox_with_retry_at_keeps_it_pending_until_then(
        self, storage: Storage
    ) -> None:
        _save(storage, _state(), messages=[_message("k1")])
        now = T0 + storage.dispatch_lease
        storage.claim_outbox(now, 10, MINUTE)
        retry_at = now + 10 * MINUTE
        storage.complete_outbox("k1", DeliveryResult("transient", error="timeout"), now, retry_at)
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
        _save(storage, _state(), messages=[_message(k) for k in ("k1", "k2", "k3")])
        now = T0 + storage.dispatch_lease
        storage.claim_outbox(now, 10, MINUTE)
        storage.complete_outbox_many([
            Delivery("k1", DeliveryResult("delivered", provider_id="p1")),
            Delivery("k2", DeliveryResult("transient", error="503"), now + HOUR),
            Delivery("k3", DeliveryResult("permanent", error="bad address")),
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
            "k3": ("dead", 1, "bad address"),
        }
        assert storage.outbox_entry("unknown") is None
        assert [m.idempotency_key for m in storage.claim_outbox(now + HOUR, 10, MINUTE)] == ["k2"]
        storage.complete_outbox_many([], now)  # nothing to record is fine

    def test_customer_outbox_lists_one_customers_messages_in_order(
        self, storage: Storage
    ) -> None:
        _save(storage, _state("c1"), messages=[_message("k-b"), _message("k-a")])
        _save(storage, _state("c2"), messages=[_message("k-c", "c2")])
        _save(storage, _state("c1"), T0 + TICK, messages=[_message("k-0")])
        now = T0 + storage.dispatch_lease
        storage.claim_outbox(now, 10, MINUTE)
        storage.complete_outbox("k-a", DeliveryResult("permanent", error="bad address"), now)
        listed = storage.customer_outbox("c1")
        assert [(e.message.idempotency_key, e.status) for e in listed] == [
            ("k-b", "pending"), ("k-a", "dead"), ("k-0", "pending"),
        ]
        assert listed[1].last_error == "bad address"
        assert storage.customer_outbox("nobody") == []
        storage.erase_customer("c1")
        assert storage.customer_outbox("c1") == []
        assert [e.message.idempotency_key for e in storage.customer_outbox("c2")] == ["k-c"]

    def test_complete_outbox_ignores_unknown_keys(self, storage: Storage) -> None:
        storage.complete_outbox("nope", DeliveryResult("delivered"), T0)
        assert storage.outbox_entry("nope") is None

    def test_duplicate_idempotency_key_is_ignored(self, storage: Storage) -> None:
        first = _message("k1", text="first")
        with storage.batch(["c1"], T0) as sessions:
            sessions["c1"].save(_state(), [first, _message("k1", text="same save")], ())
            sessions["c1"].save(_state(), [_message("k1", text="same transaction")], ())
        _save(storage, _state(), T0 + HOUR, messages=[_message("k1", text="later")])
        entry = storage.outbox_entry("k1")
        assert entry is not None
        assert (entry.message, entry.available_at) == (first, T0 + storage.dispatch_lease)
        now = T0 + HOUR + storage.dispatch_lease
        assert storage.claim_outbox(now, 10, MINUTE) == [first]
        storage.complete_outbox("k1", DeliveryResult("delivered"), now)
        # A replay that writes the same send again must not make it pending again.
        _save(storage, _state(), now, messages=[_message("k1", text="replay")])
        entry = storage.outbox_entry("k1")
        assert entry is not None
        assert (entry.status, entry.message) == ("delivered", first)
        assert storage.claim_outbox(now + DAY, 10, MINUTE) == []

    def test_release_outbox_ends_the_writers_reservation(self, storage: Storage) -> None:
        _save(storage, _state(), messages=[_message("k1"), _message("k2"), _message("k3")])
        now = T0 + storage.dispatch_lease
        storage.claim_outbox(now, 1, MINUTE)  # k1
        storage.complete_outbox("k1", DeliveryResult("delivered"), now)
        storage.release_outbox(["k1", "k2", "unknown"], T0)
        assert [m.idempotency_key for m in storage.claim_outbox(T0, 10, MINUTE)] == ["k2"]
        entry = storage.outbox_entry("k1")
        assert entry is not None
        assert entry.status == "delivered", "a finished message stays finished"
        entry = storage.outbox_entry("k3")
        assert entry is not None
        assert entry.available_at == now, "only the keys named are released"
        storage.release_outbox([], T0)

    def test_outbox_entries_tell_a_lease_from_a_retrys_back_off(self, storage: Storage) -> None:
        # ``leased``: available_at ends a reservation (the writer's or a claim's), during
        # which a process may be sending the message; an identity merge leaves it alone.
        _save(storage, _state(), messages=[_message(k) for k in ("k1", "k2", "k3", "k4")])
        lease = storage.dispatch_lease

        def leased(key: str, at: datetime) -> tuple[bool, bool]:
            entry = storage.outbox_entry(key)
            assert entry is not None
            [listed] = [e for e in storage.customer_outbox("c1")
                        if e.message.idempotency_key == key]
            assert listed == entry
            return entry.leased, entry.sending(at)

        assert leased("k1", T0) == (True, True), "written: its writer's"
        assert leased("k1", T0 + lease) == (True, False), "a lease that ran out"
        storage.release_outbox(["k4"], T0)
        assert leased("k4", T0) == (False, False)
        now = T0 + lease
        assert len(storage.claim_outbox(now, 3, MINUTE)) == 3
        assert leased("k2", now) == (True, True), "claimed"
        storage.complete_outbox_many([
            Delivery("k1", DeliveryResult("transient", error="503"), now + HOUR),
            Delivery("k2", DeliveryResult("delivered")),
            Delivery("k3", DeliveryResult("permanent", error="bad address")),
        ], now)
        assert leased("k1", now) == (False, False), "a retry's back-off is no lease"
        assert leased("k2", now) == (False, False)
        assert leased("k3", now) == (False, False)
        assert storage.retry_dead_letter("k3", now)
        assert leased("k3", now) == (False, False)
        assert {m.idempotency_key for m in storage.claim_outbox(now + HOUR, 10, MINUTE)} == {
            "k1", "k3", "k4"
        }
        assert leased("k1", now + HOUR) == (True, True), "claimed again"

    def test_defer_outbox_holds_a_message_without_an_attempt(self, storage: Storage) -> None:
        _save(storage, _state(), messages=[_message(k) for k in ("k1", "k2", "k3")])
        now = T0 + storage.dispatch_lease
        storage.claim_outbox(now, 10, MINUTE)
        storage.complete_outbox_many([
            Delivery("k1", DeliveryResult("transient", error="503"), now + MINUTE),
            Delivery("k3", DeliveryResult("delivered")),
        ], now)
        until = now + 8 * HOUR
        storage.defer_outbox("k1", until, now + MINUTE)  # a retry, held
        storage.defer_outbox("k2", until, now)  # claimed, held
        storage.defer_outbox("k3", until, now)  # delivered: stays so
        storage.defer_outbox("unknown", until, now)
        for key, attempts, error in (("k1", 1, "503"), ("k2", 0, None)):
            entry = storage.outbox_entry(key)
            assert entry is not None
            assert (entry.status, entry.attempts, entry.last_error, entry.available_at,
                    entry.leased) == ("pending", attempts, error, until, False)
        entry = storage.outbox_entry("k3")
        assert entry is not None
        assert (entry.status, entry.available_at) == ("delivered", now)
        assert storage.claim_outbox(until - TICK, 10, MINUTE) == []
        assert {m.idempotency_key for m in storage.claim_outbox(until, 10, MINUTE)} == {
            "k1", "k2"
        }

    # --- dead letters --------------------------------------------------------------------------

    def _dead_letters_setup(self, storage: Storage) -> datetime:
        keys = ("k1", "k2", "k3", "k4", "k5", "ok", "pending")
        _save(storage, _state(), messages=[_message(k) for k in keys])
        now = T0 + storage.dispatch_lease
        storage.claim_outbox(now, 10, MINUTE)
        storage.complete_outbox_many([
            Delivery("k1", DeliveryResult("permanent", error="bad address")),
            Delivery("k2", DeliveryResult("transient", error="503"), now + MINUTE),
            Delivery("ok", DeliveryResult("delivered")),
        ], now)
        storage.complete_outbox("k2", DeliveryResult("transient", error="504"), now + MINUTE)
        # Two at the same instant: ordered by key.
        storage.complete_outbox_many([
            Delivery("k4", DeliveryResult("permanent", error="no")),
            Delivery("k3", DeliveryResult("permanent", error="no")),
        ], now + 2 * MINUTE)
        storage.complete_outbox("k5", DeliveryResult("transient", error="t"), now, now + DAY)
        return now

    def test_dead_letters_are_listed_with_their_last_error_and_attempts(
        self, storage: Storage
    ) -> None:
        now = self._dead_letters_setup(storage)
        dead = storage.dead_letters(10)
        assert [(d.key, d.attempts, d.last_error, d.dead_at) for d in dead] == [
            ("k4", 1, "no", now + 2 * MINUTE),
            ("k3", 1, "no", now + 2 * MINUTE),
            ("k2", 2, "504", now + MINUTE),
            ("k1", 1, "bad address", now),
        ]
        assert dead[-1].message == _message("k1")
        oldest = storage.dead_letters(10, newest_first=False)
        assert [d.key for d in oldest] == ["k1", "k2", "k3", "k4"]
        entry = storage.outbox_entry("k1")
        assert entry is not None
        assert (entry.status, entry.attempts, entry.last_error) == ("dead", 1, "bad address")
        claimed = storage.claim_outbox(now + 30 * DAY, 10, MINUTE)
        assert [m.idempotency_key for m in claimed] == ["k5", "pending"], (
            "dead letters are not claimed"
        )

    def test_dead_letters_are_paged(self, storage: Storage) -> None:
        self._dead_letters_setup(storage)
        first = storage.dead_letters(3)
        assert [d.key for d in first] == ["k4", "k3", "k2"]
        rest = storage.dead_letters(3, after=first[-1].cursor)
        assert [d.key for d in rest] == ["k1"]
        assert storage.dead_letters(3, after=rest[-1].cursor) == []
        first = storage.dead_letters(2, newest_first=False)
        assert [d.key for d in first] == ["k1", "k2"]
        page = storage.dead_letters(1, after=first[-1].cursor, newest_first=False)
        assert [d.key for d in page] == ["k3"]
        page = storage.dead_letters(5, after=page[-1].cursor, newest_first=False)
        assert [d.key for d in page] == ["k4"]

    def test_retry_dead_letter_makes_it_pending_again(self, storage: Storage) -> None:
        now = self._dead_letters_setup(storage)
        later = now + HOUR
        assert storage.retry_dead_letter("k2", later) is True
        entry = storage.outbox_entry("k2")
        assert entry is not None
        assert (entry.message, entry.status, entry.attempts, entry.available_at) == (
            _message("k2"), "pending", 0, later
        )
        assert [d.key for d in storage.dead_letters(10)] == ["k4", "k3", "k1"]
        early = storage.claim_outbox(later - TICK, 10, MINUTE)
        assert [m.idempotency_key for m in early] == ["pending"]
        assert storage.claim_outbox(later, 10, MINUTE) == [_message("k2")]
        assert storage.retry_dead_letter("k2", later) is False, "pending: not a dead letter"
        for key in ("ok", "k5", "unknown"):
            assert storage.retry_dead_letter(key, later) is False
        # It can die again, counted from its reset attempts.
        storage.complete_outbox("k2", DeliveryResult("permanent", error="gone"), later)
        dead = storage.dead_letters(1)
        assert [(d.key, d.attempts, d.last_error, d.dead_at) for d in dead] == [
            ("k2", 1, "gone", later)
        ]

    def test_discard_dead_letter_lets_prune_drop_it(self, storage: Storage) -> None:
        now = self._dead_letters_setup(storage)
        later = now + HOUR
        assert storage.discard_dead_letter("k1", later) is True
        assert storage.discard_dead_letter("k1", later) is False
        for key in ("ok", "k5", "unknown"):
            assert storage.discard_dead_letter(key, later) is False
        entry = storage.outbox_entry("k1")
        assert entry is not None
        assert entry.status == "discarded"
        assert storage.retry_dead_letter("k1", later) is False
        assert [d.key for d in storage.dead_letters(10)] == ["k4", "k3", "k2"]
        retention = Retention(outbox=DAY)
        # "ok" (delivered at now) goes first; the discarded one a retention after its discard.
        assert storage.prune(later + DAY - TICK, retention) == PruneResult(outbox=1)
        assert storage.outbox_entry("k1") is not None
        assert storage.prune(later + DAY + TICK, retention) == PruneResult(outbox=1)
        assert storage.outbox_entry("k1") is None
        assert storage.prune(later + 365 * DAY, retention) == PruneResult()
        assert [d.key for d in storage.dead_letters(10)] == ["k4", "k3", "k2"], (
            "dead letters are never pruned"
        )

    def test_erase_customer_drops_their_dead_letters(self, storage: Storage) -> None:
        _save(storage, _state("c1"), messages=[_message("a", "c1")])
        _save(storage, _state("c2"), messages=[_message("b", "c2")])
        now = T0 + storage.dispatch_lease
        storage.claim_outbox(now, 10, MINUTE)
        storage.complete_outbox_many([
            Delivery("a", DeliveryResult("permanent", error="x")),
            Delivery("b", DeliveryResult("permanent", error="x")),
        ], now)
        storage.erase_customer("c1")
        assert [d.key for d in storage.dead_letters(10)] == ["b"]
        assert storage.retry_dead_letter("a", now) is False

    # --- definitions ---------------------------------------------------------------------------

    def test_definitions_start_empty(self, storage: Storage) -> None:
        assert storage.definitions_generation() == 0
        assert storage.load_definitions() is None

    def test_definitions_append_with_compare_and_set(self, storage: Storage) -> None:
        assert storage.append_definitions(0, '{"g": 1}') == 1
        assert storage.definitions_generation() == 1
        assert storage.load_definitions() == (1, '{"g": 1}')
        assert storage.append_definitions(1, '{"g": 2, "text": "é"}') == 2
        assert storage.load_definitions() == (2, '{"g": 2, "text": "é"}')
        # A publisher that read generation 1 lost the race: its payload is refused.
        with pytest.raises(ConflictError):
            storage.append_definitions(1, '{"g": "stale"}')
        with pytest.raises(ConflictError):
            storage.append_definitions(5, '{"g": "ahead"}')
        assert storage.definitions_generation() == 2
        assert storage.load_definitions() == (2, '{"g": 2, "text": "é"}')
        assert storage.append_definitions(2, "x" * 100_000) == 3
        assert storage.load_definitions() == (3, "x" * 100_000)

    def test_definitions_are_shared_by_handles_on_one_database(self, storage: Storage) -> None:
        other = self._reopen(storage)
        if other is None:
            pytest.skip("the adapter has no second handle on one database (reopen())")
        assert storage.append_definitions(0, "one") == 1
        assert other.definitions_generation() == 1
        assert other.load_definitions() == (1, "one")
        with pytest.raises(ConflictError):
            other.append_definitions(0, "lost")
        assert other.append_definitions(1, "two") == 2
        assert storage.definitions_generation() == 2
        with pytest.raises(ConflictError):
            storage.append_definitions(1, "stale")
        assert storage.load_definitions() == (2, "two")

    # --- the activity log ----------------------------------------------------------------------

    def test_activities_keep_every_field_in_append_order(self, storage: Storage) -> None:
        sent = Activity(T0 + TICK, "c1", "j:c1:1", "j", 2, "email", "sent", "email", "email",
                        "welcome", 4)
        entered = Activity(T0, "c1", "j:c1:1", "j", 2, None, "entered")
        other = Activity(T0 + 2 * TICK, "c2", "o:c2:1", "o", 1, "wait", "timeout", "purchased")
        # Appended later but earlier in time: the order is the order of appending.
        late = Activity(T0 - MINUTE, "c2", "j:c2:1", "j", 1, "wait", "event_received", "opened")
        _save(storage, _state("c1"), activities=[entered, sent])
        _save(storage, _state("c2"), activities=[other, late])
        everything = storage.activities(T0 - DAY, T0 + DAY)
        assert everything == [entered, sent, other, late]
        got = everything[1]
        assert (got.at, got.channel, got.content_id, got.content_version) == (
            T0 + TICK, "email", "welcome", 4
        )
        got = everything[0]
        assert (got.step_id, got.detail, got.channel, got.content_id, got.content_version) == (
            None, None, None, None, None
        )
        assert storage.activities(T0 - DAY, T0 + DAY, journey_id="j") == [entered, sent, late]
        assert storage.activities(T0 - DAY, T0 + DAY, customer_id="c2") == [other, late]
        assert storage.activities(T0 - DAY, T0 + DAY, journey_id="j", customer_id="c2") == [late]
        assert storage.activities(T0 - DAY, T0 + DAY, journey_id="none") == []

    def test_activities_in_a_half_open_range(self, storage: Storage) -> None:
        entries = [_activity("step", at=T0 + n * TICK, detail=str(n)) for n in range(4)]
        _save(storage, _state(), activities=entries)
        assert storage.activities(T0 + TICK, T0 + 3 * TICK) == entries[1:3]
        assert storage.activities(T0, T0 + TICK) == entries[:1]
        assert storage.activities(T0 + TICK, T0 + TICK) == []
        assert storage.activities(T0 + 3 * TICK, T0 + DAY) == entries[3:]
        assert storage.activities(T0 - DAY, T0) == []

    def test_activities_in_a_range_with_ends_far_from_now(self, storage: Storage) -> None:
        # Any aware instants bound a query: "everything" is asked as from year 1 to year 9999.
        entries = [_activity("step", at=T0), _activity("step", at=T0 + DAY, detail="later")]
        _save(storage, _state(), activities=entries)
        first = datetime(1, 1, 1, tzinfo=UTC)
        last = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
        assert storage.activities(first, last) == entries
        assert storage.activities(T0 + TICK, last) == entries[1:]
        assert storage.activities(first, T0 + TICK) == entries[:1]
        assert storage.activities(datetime(3000, 1, 1, tzinfo=UTC), last) == []
        assert storage.activities(first, datetime(1000, 1, 1, tzinfo=UTC)) == []

    def test_activity_counts_aggregate(self, storage: Storage) -> None:
        _save(storage, _state("c1"), activities=[
            _activity("entered", step=None),
            _activity("step"),
            _activity("sent", detail="email"),
            _activity("timeout", version=2, step="wait", detail="purchased"),
            _activity("entered", journey="other", step=None),
        ])
        _save(storage, _state("c2"), activities=[
            _activity("entered", customer="c2", step=None),
            _activity("sent", customer="c2", detail="email"),
            _activity("sent", customer="c2", detail="sms"),
        ])
        assert _counts(storage, "j") == {
            ActivityCount("j", 1, None, "entered", None, 2),
            ActivityCount("j", 1, "email", "step", None, 1),
            ActivityCount("j", 1, "email", "sent", "email", 2),
            ActivityCount("j", 1, "email", "sent", "sms", 1),
            ActivityCount("j", 2, "wait", "timeout", "purchased", 1),
        }
        assert _counts(storage, "other") == {ActivityCount("other", 1, None, "entered", None, 1)}
        assert storage.activity_counts("none") == []

    def test_activity_counts_in_order(self, storage: Storage) -> None:
        # By version as a number, step (None first), kind, detail (None first), text by code
        # point: one order on every adapter, whatever the database's collation.
        _save(storage, _state("c1"), activities=[
            _activity("entered", version=10, step=None),
            _activity("sent", version=2, step="a", detail="b"),
            _activity("sent", version=2, step="a"),
            _activity("step", version=2, step="Z"),
            _activity("entered", version=2, step=None),
            _activity("sent", version=2, step="a", detail="X"),
            _activity("capped", version=2, step="a", detail="x"),
        ])
        assert [(c.version, c.step_id, c.kind, c.detail)
                for c in storage.activity_counts("j")] == [
            (2, None, "entered", None),
            (2, "Z", "step", None),
            (2, "a", "capped", "x"),
            (2, "a", "sent", None),
            (2, "a", "sent", "X"),
            (2, "a", "sent", "b"),
            (10, None, "entered", None),
        ]

    def test_active_counts(self, storage: Storage) -> None:
        _save(storage, _state("c1", enrollments=[
            _enrollment("j:c1:1", step="wait"),
            _enrollment("o:c1:1", journey="o"),
        ]))
        _save(storage, _state("c2", enrollments=[
            _enrollment("j:c2:1", "c2", step="wait"),
            _enrollment("j:c2:2", "c2", version=2, step="email"),
            _enrollment("j:c2:3", "c2", version=2, step=None),
        ]))
        _save(storage, _state("c3"))
        assert storage.active_counts("j") == {(1, "wait"): 2, (2, "email"): 1, (2, None): 1}
        assert storage.active_counts("o") == {(1, "wait"): 1}
        assert storage.active_counts("none") == {}
        # From the records as they are now.
        with storage.customer("c2", T0) as session:
            state = session.load()
            assert state is not None
            del state.enrollments[1:]
            session.save(state, (), ())
        assert storage.active_counts("j") == {(1, "wait"): 2}

    def test_held_counts(self, storage: Storage) -> None:
        # Held: a wake-up fell due while the journey was paused (``held_at``); wake_at is the
        # resume's sentinel, or the expiry when that comes first.
        def held(eid: str, customer: str, journey: str = "j", *, version: int = 1,
                 step: str | None = "wait") -> Enrollment:
            e = _enrollment(eid, customer, journey, version=version, step=step,
                            wake_at=HELD)
            e.held_at = T0 + HOUR
            return e

        _save(storage, _state("c1", enrollments=[
            held("j:c1:1", "c1"), _enrollment("o:c1:1", "c1", journey="o", wake_at=T0 + DAY),
        ]))
        _save(storage, _state("c2", enrollments=[
            held("j:c2:1", "c2"), held("j:c2:2", "c2", version=2, step="email"),
            held("o:c2:1", "c2", journey="o"),
            _enrollment("j:c2:3", "c2", step="wait", wake_at=T0 + DAY),
        ]))
        # Waiting, not held; and a record whose text names "hold" elsewhere.
        _save(storage, _state("c3", wake_at=T0 + DAY, attributes={"hold": "j"}))
        expected = {(1, "wait"): 2, (2, "email"): 1}
        assert storage.held_counts("j") == expected
        assert storage.held_counts("o") == {(1, "wait"): 1}
        assert storage.held_counts("none") == {}
        # The ABC's default, which walks the journey's customers, counts the same.
        assert Storage.held_counts(storage, "j") == expected
        # From the records as they are now: a released enrollment is held no longer.
        with storage.customer("c2", T0) as session:
            state = session.load()
            assert state is not None
            state.enrollments[0].held_at = None
            state.enrollments[0].wake_at = T0 + 2 * HOUR
            session.save(state, (), ())
        assert storage.held_counts("j") == {(1, "wait"): 1, (2, "email"): 1}

    def test_active_counts_of_journeys_named_in_any_characters(self, storage: Storage) -> None:
        # Records are JSON: an id is written escaped or not, however the adapter writes it.
        names = ("café", "j\x7f", "🎉", "j\u2028", 'j"\\/\n')
        for n, journey in enumerate(names):
            cid = f"c{n}"
            _save(storage, _state(cid, enrollments=[_enrollment(f"{journey}:{cid}:1", cid,
                                                                journey=journey)]))
        for journey in names:
            assert storage.active_counts(journey) == {(1, "wait"): 1}, journey
            assert len(storage.enrolled_customers(journey)) == 1, journey

    def test_enrolled_customers_walks_a_journeys_customers_in_pages(
        self, storage: Storage
    ) -> None:
        for i in range(7):
            cid = f"c{i}"
            journey = "j" if i % 2 == 0 else "o"
            _save(storage, _state(cid, enrollments=[_enrollment(f"{journey}:{cid}:1", cid,
                                                                journey=journey)]))
        _save(storage, _state("mentions_j", attributes={"note": "j"}))
        assert storage.enrolled_customers("j") == ["c0", "c2", "c4", "c6"]
        assert storage.enrolled_customers("j", limit=3) == ["c0", "c2", "c4"]
        assert storage.enrolled_customers("j", after="c4", limit=3) == ["c6"]
        assert storage.enrolled_customers("j", after="c6") == []
        assert storage.enrolled_customers("o", after="c1") == ["c3", "c5"]
        assert storage.enrolled_customers("none") == []

    # --- segment memberships -------------------------------------------------------------------

    def test_segment_members_and_counts_follow_saved_records(self, storage: Storage) -> None:
        for customer in ("c3", "c1", "c2", "c4"):
            state = _state(customer)
            state.segments = {"vip": T0, "all": T0 - DAY}
            if customer == "c4":
                del state.segments["vip"]
            _save(storage, state)
        assert storage.segment_members("vip") == ["c1", "c2", "c3"]
        assert storage.segment_members("vip", limit=2) == ["c1", "c2"]
        assert storage.segment_members("vip", after="c2", limit=2) == ["c3"]
        assert storage.segment_members("vip", after="c3") == []
        assert storage.segment_count("all") == 4
        assert (storage.segment_count("none"), storage.segment_members("none")) == (0, [])
        # Leaving, entering and re-entering, through a load and two saves in one transaction.
        with storage.customer("c2", T0) as session:
            loaded = session.load()
            assert loaded is not None
            loaded.segments = {"all": T0 - DAY, "new": T0}
            session.save(loaded, (), ())
            again = session.load()
            assert again is not None
            again.segments = {"new": T0 + HOUR, "vip": T0 + HOUR}
            session.save(again, (), ())
        assert storage.segment_members("all") == ["c1", "c3", "c4"]
        assert storage.segment_members("new") == ["c2"]
        assert storage.segment_members("vip") == ["c1", "c2", "c3"]
        # A rolled-back transaction changes nothing.
        with contextlib.suppress(RuntimeError), storage.customer("c1", T0) as session:
            loaded = session.load()
            assert loaded is not None
            loaded.segments = {}
            session.save(loaded, (), ())
            raise RuntimeError("roll back")
        assert storage.segment_members("vip") == ["c1", "c2", "c3"]
        storage.erase_customer("c1")
        assert storage.segment_members("vip") == ["c2", "c3"]
        assert storage.segment_count("all") == 2

    def test_customer_ids_are_paged_in_id_order(self, storage: Storage) -> None:
        assert storage.customer_ids() == []
        for customer in ("c3", "c1", "c10", "c2"):
            _save(storage, _state(customer))
        assert storage.customer_ids() == ["c1", "c10", "c2", "c3"]
        assert storage.customer_ids(limit=2) == ["c1", "c10"]
        assert storage.customer_ids(after="c10", limit=2) == ["c2", "c3"]
        assert storage.customer_ids(after="c3") == []
        storage.erase_customer("c2")
        assert storage.customer_ids(after="c10") == ["c3"]

    def test_engine_segment_members_are_maintained_in_real_time(self, storage: Storage) -> None:
        from cjo.engine import Engine  # noqa: PLC0415  (see test_engine_abandoned_cart...)
        from cjo.model.segments import Segment  # noqa: PLC0415
        from cjo.segments.history import performed  # noqa: PLC0415

        clock = ManualClock(T0)
        engine = Engine(storage=storage, clock=clock)
        engine.publish(segments=[Segment("buyers", performed("purchase").within(days=2))])
        for i, customer in enumerate(("b", "a", "c")):
            clock.set(T0 + i * DAY)
            engine.handle_event(_event("purchase", customer, clock.now(), f"p-{customer}"))
        # b's purchase is two days old, but nothing has looked at b since: the list is of
        # records as committed until a worker fires b's timer.
        assert engine.segment_members("buyers") == ["a", "b", "c"]
        assert engine.segment_count("buyers") == 3
        assert not engine.in_segment("b", "buyers")  # evaluated now
        engine.run_due(T0 + 3 * DAY)  # then a's turns two days old too
        assert engine.segment_members("buyers") == ["c"]
        assert engine.segment_members("buyers", after="c") == []

    # --- erasure -------------------------------------------------------------------------------

    def test_erase_customer(self, storage: Storage) -> None:
        for customer in ("c1", "c2"):
            _save(
                storage, _state(customer, wake_at=T0 + HOUR),
                messages=[_message(f"{customer}-pending", customer),
                          _message(f"{customer}-sent", customer)],
                activities=[_activity("entered", customer=customer, step=None),
                            _activity("sent", customer=customer, detail="email")],
            )
            with storage.customer(customer, T0) as session:
                assert session.claim_event(f"ev-{customer}")
            storage.complete_outbox(f"{customer}-sent", DeliveryResult("delivered"), T0)
        counts = _counts(storage, "j")
        c2 = storage.peek("c2")

        storage.erase_customer("c1")
        assert storage.peek("c1") is None
        assert _load(storage, "c1") is None
        assert storage.outbox_entry("c1-pending") is None
        assert _due(storage, T0 + HOUR) == ["c2"]
        assert storage.active_counts("j") == {(1, "wait"): 1}
        assert _counts(storage, "j") == counts, "aggregated activity is kept"
        pending = storage.claim_outbox(T0 + DAY, 10, MINUTE)
        assert [m.idempotency_key for m in pending] == ["c2-pending"]
        # The log keeps the entries, without the customer id.
        log = storage.activities(T0 - DAY, T0 + DAY)
        assert [(a.customer_id, a.kind) for a in log] == [
            ("", "entered"), ("", "sent"), ("c2", "entered"), ("c2", "sent")
        ]
        # The enrollment id, which names the customer, becomes a pseudonym, one per enrollment.
        assert log[0].enrollment_id.startswith("erased:")
        assert log[0].enrollment_id == log[1].enrollment_id != log[2].enrollment_id
        assert log[0] == attrs.evolve(_activity("entered", customer="c1", step=None),
                                      customer_id="", enrollment_id=log[0].enrollment_id)
        assert storage.activities(T0 - DAY, T0 + DAY, customer_id="c1") == []
        # The other customer is untouched.
        assert storage.peek("c2") == c2
        entry = storage.outbox_entry("c2-sent")
        assert entry is not None
        assert entry.status == "delivered"
        with storage.customer("c1", T0) as session:
            assert session.claim_event("ev-c1") is False, "event ids are not personal data"
        storage.erase_customer("nobody")

    def test_erase_customer_blanks_free_text_details(self, storage: Storage) -> None:
        # Text from outside the definitions may hold an address; the rest is kept, to count.
        free = {"unreachable": "permanent failure: no mailbox ann@example.org",
                "withheld": "channel blocked: bounced ann@example.org",
                "removed": "asked by ann@example.org", "clicked": "https://x/?u=ann@example.org",
                "merged_in": "anon-ann"}
        kept = {"exited": "criterion", "sent": "email", "path": "a"}
        _save(storage, _state(), activities=[
            _activity(kind, detail=detail) for kind, detail in {**free, **kept}.items()])
        storage.erase_customer("c1")
        log = storage.activities(T0 - DAY, T0 + DAY)
        assert {a.kind: a.detail for a in log} == {**dict.fromkeys(free), **kept}
        assert {(c.kind, c.detail, c.count) for c in _counts(storage, "j")} == {
            *((kind, None, 1) for kind in free), *((k, d, 1) for k, d in kept.items())}

    def test_erase_customer_leaves_a_blank_enrollment_id_blank(self, storage: Storage) -> None:
        # Entries outside any enrollment (a late event, a refused entry, a segment change)
        # have none: blank they stay, so a filter on it still finds them once erased.
        _save(storage, _state(), activities=[
            _activity("entered", step=None),
            attrs.evolve(_activity("late_event", detail="purchased", step=None),
                         enrollment_id="", journey_id="", version=0),
        ])
        storage.erase_customer("c1")
        log = storage.activities(T0 - DAY, T0 + DAY)
        assert [(a.kind, a.enrollment_id[:7]) for a in log] == [
            ("entered", "erased:"), ("late_event", "")]

    def test_erase_customer_forgets_their_schedule_claims(self, storage: Storage) -> None:
        # Schedule entries claim ids naming the customer (``cjo.storage.erasure``); the host's
        # event ids are opaque, whatever they hold, and stay.
        claims = {customer: schedule_claim("weekly", "2026-01-05T09:00:00+00:00", customer)
                  for customer in ("c1", "c2", "xc1", "c1:x")}
        for customer, claim in claims.items():
            with storage.customer(customer, T0) as session:
                assert session.claim_event(claim)
                assert session.claim_event(f"order-of-{customer}")
        storage.erase_customer("c1")
        with storage.customer("c1", T0) as session:
            assert session.claim_event(claims["c1"]), "the claim went with the customer"
            assert not session.claim_event("order-of-c1")
            for other in ("c2", "xc1", "c1:x"):
                assert not session.claim_event(claims[other]), other

    def test_erase_customer_ends_their_messages_in_flight(self, storage: Storage) -> None:
        # Claimed for delivery, waiting for a retry, a dead letter: whatever their delivery
        # results (or the host) say once the customer is erased, nothing of theirs comes back.
        _save(storage, _state("c1"),
              messages=[_message(k, "c1") for k in ("sending", "retrying", "dead")])
        _save(storage, _state("c2"), messages=[_message("other", "c2")])
        now = T0 + storage.dispatch_lease
        assert len(storage.claim_outbox(now, 10, MINUTE)) == 4
        storage.complete_outbox_many([
            Delivery("retrying", DeliveryResult("transient", error="x"), now + MINUTE),
            Delivery("dead", DeliveryResult("permanent", error="x")),
        ], now)
        storage.erase_customer("c1")
        later = now + MINUTE
        storage.complete_outbox("sending", DeliveryResult("delivered"), later)
        storage.complete_outbox_many([
            Delivery("sending", DeliveryResult("permanent", error="gone")),
            Delivery("retrying", DeliveryResult("transient", error="y"), later + HOUR),
            Delivery("dead", DeliveryResult("delivered")),
        ], later)
        storage.release_outbox(["sending", "retrying"], later)
        assert storage.retry_dead_letter("dead", later) is False
        assert storage.discard_dead_letter("dead", later) is False
        for key in ("sending", "retrying", "dead"):
            assert storage.outbox_entry(key) is None, key
        assert storage.customer_outbox("c1") == []
        assert storage.dead_letters(10) == []
        claimed = storage.claim_outbox(later + DAY, 10, MINUTE)
        assert [m.idempotency_key for m in claimed] == ["other"]
        assert storage.peek("c1") is None
        assert storage.activities(T0 - DAY, T0 + 2 * DAY, customer_id="c1") == []

    # --- pruning -------------------------------------------------------------------------------

    def test_prune_forgets_old_event_ids(self, storage: Storage) -> None:
        with storage.customer("c1", T0) as session:
            assert session.claim_event("old")
        with storage.customer("c1", T0 + HOUR) as session:
            assert session.claim_event("newer")
        retention = Retention(event_ids=DAY)
        # Exactly as old as the retention: kept.
        assert storage.prune(T0 + DAY, retention) == PruneResult()
        with storage.customer("c1", T0 + DAY) as session:
            assert session.claim_event("old") is False
        assert storage.prune(T0 + DAY + TICK, retention) == PruneResult(event_ids=1)
        with storage.customer("c1", T0 + DAY) as session:
            assert session.claim_event("old") is True, "a pruned id is handled again"
            assert session.claim_event("newer") is False
        assert storage.prune(T0 + 3 * DAY, retention) == PruneResult(event_ids=2)

    def test_prune_forgets_old_event_ids_whatever_order_they_were_claimed_in(
        self, storage: Storage
    ) -> None:
        # A transaction at an earlier instant than the one before it (a clock that went back,
        # threads committing out of order) claims an id that is older than its neighbours.
        for now, event_id in ((T0 + DAY, "later"), (T0, "earlier"), (T0 + DAY, "latest")):
            with storage.customer("c1", now) as session:
                assert session.claim_event(event_id)
        assert storage.prune(T0 + DAY + HOUR, Retention(event_ids=DAY)) == PruneResult(
            event_ids=1)
        with storage.customer("c1", T0 + DAY + HOUR) as session:
            assert session.claim_event("earlier") is True, "a pruned id is handled again"
            assert session.claim_event("later") is False
            assert session.claim_event("latest") is False
        assert storage.prune(T0 + 3 * DAY, Retention(event_ids=DAY)) == PruneResult(
            event_ids=3)

    def test_prune_drops_finished_messages_never_pending_ones(self, storage: Storage) -> None:
        keys = ("delivered", "transient", "permanent", "retrying", "pending", "recent")
        _save(storage, _state(), messages=[_message(k) for k in keys])
        now = T0 + storage.dispatch_lease
        storage.claim_outbox(now, 10, MINUTE)
        storage.complete_outbox_many([
            Delivery("delivered", DeliveryResult("delivered")),
            Delivery("transient", DeliveryResult("transient", error="down")),
            Delivery("permanent", DeliveryResult("permanent", error="no")),
            Delivery("retrying", DeliveryResult("transient", error="busy"), now + 30 * DAY),
        ], now)
        storage.complete_outbox("recent", DeliveryResult("delivered"), now + DAY)
        retention = Retention(outbox=DAY)
        assert storage.prune(now + DAY, retention) == PruneResult()
        assert storage.prune(now + DAY + TICK, retention) == PruneResult(outbox=1)
        remaining = {k for k in keys if storage.outbox_entry(k) is not None}
        assert remaining == {"transient", "permanent", "retrying", "pending", "recent"}
        assert storage.prune(now + 365 * DAY, retention) == PruneResult(outbox=1)
        remaining = {k for k in keys if storage.outbox_entry(k) is not None}
        assert remaining == {"transient", "permanent", "retrying", "pending"}, (
            "pending messages and dead letters are never pruned"
        )
        assert [m.idempotency_key for m in storage.claim_outbox(now + 365 * DAY, 10, MINUTE)] \
            == ["retrying", "pending"]

    def test_prune_drops_finished_messages_whatever_order_they_finished_in(
        self, storage: Storage
    ) -> None:
        keys = ("later", "earlier", "latest")
        _save(storage, _state(), messages=[_message(k) for k in keys])
        for key, at in zip(keys, (T0 + DAY, T0, T0 + DAY), strict=True):
            storage.complete_outbox(key, DeliveryResult("delivered"), at)
        assert storage.prune(T0 + DAY + HOUR, Retention(outbox=DAY)) == PruneResult(outbox=1)
        assert [k for k in keys if storage.outbox_entry(k) is not None] == ["later", "latest"]

    def test_prune_drops_old_activity_wherever_it_was_appended(self, storage: Storage) -> None:
        # A worker that comes late fires overdue wake-ups at their own instants: their entries
        # are appended after later ones.
        later = [_activity("entered", customer="c2", step=None, at=T0 + DAY)]
        overdue = [_activity("step", at=T0), _activity("sent", detail="email", at=T0)]
        latest = [_activity("step", customer="c2", at=T0 + DAY + TICK)]
        _save(storage, _state("c2"), T0 + DAY, activities=later)
        _save(storage, _state("c1"), T0 + DAY, activities=overdue)
        _save(storage, _state("c2"), T0 + DAY, activities=latest)
        counts = _counts(storage, "j")
        assert storage.prune(T0 + DAY + HOUR, Retention(activity=DAY)) == PruneResult(
            activity=2)
        assert storage.activities(T0 - DAY, T0 + 9 * DAY) == later + latest
        assert _counts(storage, "j") == counts, "activity_counts counts pruned entries"

    def test_prune_drops_old_activity_and_keeps_counting_it(self, storage: Storage) -> None:
        old = [_activity("entered", step=None, at=T0), _activity("sent", detail="email", at=T0)]
        new = [_activity("sent", detail="email", at=T0 + DAY),
               _activity("sent", customer="c2", detail="sms", at=T0 + 2 * DAY)]
        _save(storage, _state("c1"), activities=old)
        _save(storage, _state("c2"), activities=new)
        counts = _counts(storage, "j")
        retention = Retention(activity=DAY)
        assert storage.prune(T0 + DAY, retention) == PruneResult()
        assert storage.prune(T0 + DAY + TICK, retention) == PruneResult(activity=2)
        assert storage.activities(T0 - DAY, T0 + 9 * DAY) == new
        assert _counts(storage, "j") == counts, "activity_counts counts pruned entries"
        # New entries add to what was pruned.
        _save(storage, _state("c3"), T0 + 3 * DAY,
              activities=[_activity("entered", customer="c3", step=None, at=T0 + 3 * DAY)])
        assert ActivityCount("j", 1, None, "entered", None, 2) in _counts(storage, "j")
        assert storage.prune(T0 + 9 * DAY, retention) == PruneResult(activity=3)
        assert storage.activities(T0 - DAY, T0 + 9 * DAY) == []
        assert _counts(storage, "j") == {
            ActivityCount("j", 1, None, "entered", None, 2),
            ActivityCount("j", 1, "email", "sent", "email", 2),
            ActivityCount("j", 1, "email", "sent", "sms", 1),
        }
        storage.erase_customer("c2")
        assert ActivityCount("j", 1, "email", "sent", "sms", 1) in _counts(storage, "j")

    def test_prune_counts_free_text_details_as_blank(self, storage: Storage) -> None:
        # The counts outlive the log, and no erasure could find an address left in them.
        failed = "permanent failure: no mailbox ann@example.org"
        _save(storage, _state(), activities=[
            _activity("unreachable", detail=failed), _activity("sent", detail="email"),
            _activity("unreachable", detail=failed, at=T0 + DAY)])
        assert storage.prune(T0 + DAY, Retention(activity=HOUR)) == PruneResult(activity=2)
        assert _counts(storage, "j") == {
            ActivityCount("j", 1, "email", "unreachable", None, 1),
            ActivityCount("j", 1, "email", "unreachable", failed, 1),
            ActivityCount("j", 1, "email", "sent", "email", 1),
        }
        storage.erase_customer("c1")
        assert _counts(storage, "j") == {
            ActivityCount("j", 1, "email", "unreachable", None, 2),
            ActivityCount("j", 1, "email", "sent", "email", 1),
        }

    def test_prune_and_erasure_keep_the_control_groups_withheld_sends_apart(
        self, storage: Storage
    ) -> None:
        # ``control`` is cjo's own reason, naming no one: reports count the control group's
        # withheld sends under it (``JourneyReport.suppressed``) however old the log.
        blocked = "channel blocked: asked by ann@example.org"
        _save(storage, _state("c1"), activities=[
            _activity("suppressed", detail="control"),
            _activity("suppressed", detail=blocked)])
        _save(storage, _state("c2"), activities=[
            _activity("suppressed", customer="c2", detail="control", at=T0 + DAY)])
        assert storage.prune(T0 + DAY, Retention(activity=HOUR)) == PruneResult(activity=2)
        storage.erase_customer("c2")
        assert _counts(storage, "j") == {
            ActivityCount("j", 1, "email", "suppressed", "control", 2),
            ActivityCount("j", 1, "email", "suppressed", None, 1),
        }
        assert [a.detail for a in storage.activities(T0 - DAY, T0 + 2 * DAY)] == ["control"]

    def test_counts_leave_out_the_instants_details_name(self, storage: Storage) -> None:
        # One deferral, one count group: were each "deferred to <instant>" counted apart, the
        # counts (and what prune folds into them) would grow with every deferral ever made.
        def deferred(kind: str, rule: str, hours: int) -> Activity:
            return _activity(kind, detail=f"{rule}: deferred to {(T0 + hours * HOUR).isoformat()}")

        _save(storage, _state(), activities=[
            deferred("capped", "weekly", 1), deferred("capped", "weekly", 2),
            _activity("capped", detail="weekly: skipped"),
            deferred("quiet_hours", "night", 3), deferred("quiet_hours", "night", 4),
            _activity("date_past", detail=(T0 - DAY).isoformat()),
            _activity("date_past", detail=(T0 - 2 * DAY).isoformat()),
            _activity("late_event", detail=f"paid stamped {T0.isoformat()}, after "
                                           f"{(T0 + HOUR).isoformat()}"),
        ])
        expected = {
            ActivityCount("j", 1, "email", "capped", "weekly: deferred", 2),
            ActivityCount("j", 1, "email", "capped", "weekly: skipped", 1),
            ActivityCount("j", 1, "email", "quiet_hours", "night: deferred", 2),
            ActivityCount("j", 1, "email", "date_past", None, 2),
            ActivityCount("j", 1, "email", "late_event", "paid", 1),
        }
        assert _counts(storage, "j") == expected
        assert storage.prune(T0 + DAY, Retention(activity=HOUR)) == PruneResult(activity=8)
        assert _counts(storage, "j") == expected
        # The log itself keeps each instant.
        _save(storage, _state("c2"), T0 + DAY, activities=[
            _activity("capped", customer="c2", at=T0 + DAY,
                      detail=f"weekly: deferred to {(T0 + 2 * DAY).isoformat()}")])
        (entry,) = storage.activities(T0 + DAY, T0 + 2 * DAY)
        assert entry.detail == f"weekly: deferred to {(T0 + 2 * DAY).isoformat()}"
        assert ActivityCount("j", 1, "email", "capped", "weekly: deferred", 3) in _counts(
            storage, "j")

    def test_prune_with_nothing_to_prune(self, storage: Storage) -> None:
        assert storage.prune(T0, Retention()) == PruneResult()

    def test_prune_keeps_the_newest_generations_of_the_definitions(
        self, storage: Storage
    ) -> None:
        for generation in range(5):
            storage.append_definitions(generation, f'{{"g": {generation + 1}}}')
        assert storage.prune(T0, Retention(definitions=2)) == PruneResult(definitions=3)
        assert storage.prune(T0, Retention(definitions=2)) == PruneResult()
        # Generation numbers go on: the compare-and-set reads the newest.
        assert storage.definitions_generation() == 5
        assert storage.load_definitions() == (5, '{"g": 5}')
        with pytest.raises(ConflictError):
            storage.append_definitions(4, '{"g": "stale"}')
        assert storage.append_definitions(5, '{"g": 6}') == 6
        assert storage.prune(T0, Retention(definitions=1)) == PruneResult(definitions=2)
        assert storage.load_definitions() == (6, '{"g": 6}')
        assert storage.prune(T0, Retention(definitions=1)) == PruneResult()

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
        state = _full_state()
        _save(storage, state, messages=[_message("k1")], activities=[_activity("entered")])
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e1")
        storage.put_setting("s", "v")
        storage.append_definitions(0, "defs")
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
        assert again.peek("c1") == _revised(state, 1)
        assert again.outbox_entry("k1") is not None
        assert again.get_setting("s") == "v"
        assert again.load_definitions() == (1, "defs")
        assert again.activities(T0 - DAY, T0 + DAY) == [_activity("entered")]
        assert again.next_wake_at() == state.wake_at
        with again.customer("c1", T0) as session:
            assert session.claim_event("e1") is False
            assert session.claim_event("e-after-reopen")
            assert session.load() == _revised(state, 1)

    # --- bad input -----------------------------------------------------------------------------

    def _calls_at(self, storage: Storage, now: Any) -> dict[str, Callable[[], object]]:
        """Every call that takes ``now``, made at ``now`` (transactions opened and left)."""

        def enter(transaction: contextlib.AbstractContextManager[object]) -> None:
            with transaction:
                pass

        delivered = DeliveryResult("delivered")
        return {
            "customer": lambda: enter(storage.customer("c1", now)),
            "batch": lambda: enter(storage.batch(["c1", "c2"], now, claims=[("c1", "e9")])),
            "due_batch": lambda: enter(storage.due_batch(now, 10, MINUTE)),
            "claim_due": lambda: storage.claim_due(now, 10, MINUTE),
            "claim_outbox": lambda: storage.claim_outbox(now, 10, MINUTE),
            "complete_outbox": lambda: storage.complete_outbox("m1", delivered, now),
            "complete_outbox_many": lambda: storage.complete_outbox_many(
                [Delivery("m1", delivered)], now),
            "release_outbox": lambda: storage.release_outbox(["m1"], now),
            "retry_dead_letter": lambda: storage.retry_dead_letter("m1", now),
            "discard_dead_letter": lambda: storage.discard_dead_letter("m1", now),
            "prune": lambda: storage.prune(now, Retention()),
        }

    @pytest.mark.parametrize(
        "bad_now",
        [T0.replace(tzinfo=None), T0.isoformat(), None,
         # Aware, but before the first instant a datetime holds once in UTC.
         datetime.min.replace(tzinfo=timezone(timedelta(hours=2)))],
        ids=["naive", "str", "none", "out of range in UTC"],
    )
    def test_a_bad_now_raises_clock_error_and_holds_nothing(
        self, storage: Storage, bad_now: Any
    ) -> None:
        state = _state(wake_at=T0 - HOUR)
        _save(storage, state, messages=[_message("m1")], activities=[_activity("entered")])
        stored = _revised(state, 1)
        for name, call in self._calls_at(storage, bad_now).items():
            with pytest.raises(ClockError):
                call()
            assert storage.peek("c1") == stored, f"{name} changed the record"
        # Nothing was held: the same handle, another handle and another thread all write.
        assert storage.outbox_entry("m1") is not None
        assert storage.claim_outbox(T0 + DAY, 10, MINUTE) == [_message("m1")]
        assert _due(storage, T0) == ["c1"]
        with storage.customer("c1", T0) as session:
            assert session.claim_event("e9"), "an announced claim was kept"
            assert session.load() == stored
            session.save(_state(attributes={"n": 1}), (), ())
        other = self._reopen(storage)
        if other is not None:
            _save(other, _state("c2"))
            assert storage.peek("c2") is not None
        if self.supports_concurrency:
            done: list[bool] = []

            def write() -> None:
                _save(storage, _state("c3"))
                done.append(True)

            thread = threading.Thread(target=write, daemon=True)
            thread.start()
            thread.join(timeout=60)
            assert done == [True], "a transaction in another thread did not finish"
        assert storage.activities(T0 - DAY, T0 + DAY) == [_activity("entered")]

    def test_a_value_json_cannot_hold_is_refused_or_kept(self, storage: Storage) -> None:
        """NaN put into a record or a message after validation (a host changing an event's
        properties after building it): an adapter that encodes refuses the transaction with
        ``StorageError``, which rolls it back whole; one that keeps objects keeps it."""
        stored = {cid: self._seed(storage, cid) for cid in ("c1", "c2")}

        def poisoned(customer: str) -> None:
            with storage.customer(customer, T0) as session:
                assert session.claim_event(f"ev-{customer}")
                state = session.load()
                assert state is not None
                state.enrollments[0].wake_at = T0 + 5 * HOUR
                message = _message(f"m-{customer}", customer)
                if customer == "c1":
                    state.enrollments[0].context["score"] = math.nan
                else:
                    message = attrs.evolve(message, recipient={"score": math.inf})
                session.save(state, [message],
                             [_activity("entered", customer=customer, journey="k")])

        for customer, state in stored.items():
            try:
                poisoned(customer)
            except StorageError as exc:
                error: StorageError | None = exc
            else:
                error = None
            if error is None:  # kept as objects: committed whole
                kept = storage.peek(customer)
                assert kept is not None
                assert kept.enrollments[0].wake_at == T0 + 5 * HOUR
                assert storage.outbox_entry(f"m-{customer}") is not None
                continue
            assert repr(customer) in str(error), f"the error does not name {customer}: {error}"
            # Rolled back whole: the record, its message, its activities and its event id.
            raised = f"{customer}'s transaction raised StorageError ({error}) but"
            hint = "was committed (encode in save, or at least before the commit writes anything)"
            assert _load(storage, customer) == state, f"{raised} the record {hint}"
            assert storage.peek(customer) == state, f"{raised} the record {hint}"
            assert storage.outbox_entry(f"m-{customer}") is None, f"{raised} its message {hint}"
            assert storage.activities(T0 - DAY, T0 + DAY, journey_id="k",
                                      customer_id=customer) == [], f"{raised} its activity {hint}"
            with storage.customer(customer, T0) as session:
                claimed = session.claim_event(f"ev-{customer}")
            assert claimed is True, f"{raised} its event id {hint}"

    # --- concurrency ---------------------------------------------------------------------------

    def test_concurrent_transactions_on_one_customer_serialize(self, storage: Storage) -> None:
        if not self.supports_concurrency:
            pytest.skip("the adapter does not claim to support concurrent use")
        # A second handle on the same database if there is one: then the database's own
        # locking is what is tested, not only the adapter's.
        stores = [storage, self._reopen(storage) or storage]
        errors: list[BaseException] = []
        start = threading.Barrier(len(stores))  # so the two really overlap
        rounds = 200

        def work(store: Storage, worker: int) -> None:
            try:
                start.wait()
                for i in range(rounds):
                    with store.customer("c1", T0) as session:
                        assert session.claim_event(f"w{worker}-{i}")
                        state = session.load() or CustomerState("c1", T0)
                        n = state.profile.attributes["n"] if state.profile is not None else 0
                        state.profile = Profile("c1", {"n": n + 1})
                        session.save(state, (), [_activity("step", detail=f"{worker}")])
            except BaseException as exc:  # reported by the test thread below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(s, i)) for i, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        final = storage.peek("c1")
        assert final is not None
        assert final.profile is not None
        assert final.profile.attributes["n"] == 2 * rounds
        assert final.revision == 2 * rounds
        assert _counts(storage, "j") == {
            ActivityCount("j", 1, "email", "step", str(i), rounds) for i in range(2)
        }

    # --- end to end (needs the engine) ---------------------------------------------------------

    def test_engine_deferred_dispatch_retries_and_dead_letters(self, storage: Storage) -> None:
        from cjo.engine import Engine  # noqa: PLC0415  (see test_engine_abandoned_cart_...)

        clock = ManualClock(T0)
        email = _ScriptedChannel({"flaky": "transient", "bad": "permanent"})
        engine = Engine(
            storage=storage, channels={"email": email}, clock=clock, dispatch="deferred",
            max_delivery_attempts=3, retry_backoff=MINUTE, max_retry_delay=2 * MINUTE,
        )
        engine.publish(journeys=[Journey(
            id="welcome", trigger=EventTrigger("signed_up"), entry="email",
            steps={"email": Send("cart_reminder", "email")},
        )], content=[CART_CONTENT])
        for customer in ("ok", "flaky", "bad"):
            outcome = engine.handle_event(
                _event("signed_up", customer, T0, f"su-{customer}", item="shoes")
            )
            assert [m.customer_id for m in outcome.pending] == [customer]
        assert email.sent == [], "deferred: handle_event sends nothing"
        assert engine.dispatch_pending() == 3
        keys = {m.customer_id: m.idempotency_key for m in email.sent}
        assert engine.dispatch_pending() == 0, "the transient failure waits for its back-off"
        (bad,) = engine.dead_letters()
        assert (bad.key, bad.attempts, bad.last_error) == (keys["bad"], 1, "permanent: bad")
        for _ in range(2):
            clock.advance(minutes=2)
            assert engine.dispatch_pending() == 1
        dead = engine.dead_letters()
        assert [(d.key, d.attempts, d.last_error) for d in dead] == [
            (keys["flaky"], 3, "transient: flaky"), (keys["bad"], 1, "permanent: bad")
        ]
        assert [d.key for d in engine.dead_letters(limit=1, after=dead[0])] == [keys["bad"]]
        clock.advance(days=30)
        engine.prune()
        assert len(engine.dead_letters()) == 2, "dead letters wait for the host"

        email.script.clear()
        assert engine.retry_dead_letter(keys["flaky"]) is True
        assert engine.dead_letters(newest_first=False)[0].key == keys["bad"]
        assert engine.dispatch_pending() == 1
        entry = storage.outbox_entry(keys["flaky"])
        assert entry is not None
        assert (entry.status, entry.attempts) == ("delivered", 1)
        flaky_keys = [m.idempotency_key for m in email.sent if m.customer_id == "flaky"]
        assert flaky_keys == [keys["flaky"]] * 4, "one idempotency key across all attempts"
        assert engine.discard_dead_letter(keys["bad"]) is True
        assert engine.dead_letters() == []
        assert engine.retry_dead_letter(keys["bad"]) is False

    def test_engine_lists_the_records_it_set_aside(self, storage: Storage) -> None:
        from cjo.engine import Engine  # noqa: PLC0415  (see test_engine_abandoned_cart_...)

        clock = ManualClock(T0)
        engine = Engine(storage=storage, clock=clock)
        engine.publish(journeys=[Journey(
            id="later", trigger=EventTrigger("signed_up"), entry="wait",
            steps={"wait": Wait(HOUR)},
        )])
        for customer in ("bad", "good", "worse"):
            engine.handle_event(_event("signed_up", customer, T0, f"su-{customer}"))
        self.corrupt_record(storage, "bad")
        self.corrupt_record(storage, "worse")
        assert engine.records_set_aside() == []
        clock.advance(hours=2)
        engine.run_due()
        aside = engine.records_set_aside()
        assert [(r.customer_id, r.set_aside_at) for r in aside] == [
            ("bad", T0 + 2 * HOUR), ("worse", T0 + 2 * HOUR)
        ]
        assert "'bad'" in aside[0].reason, "the reason is the error, naming the customer"
        assert engine.records_set_aside(limit=1, after=aside[0]) == aside[1:]
        with pytest.raises(UsageError):
            engine.records_set_aside(after="bad")  # type: ignore[arg-type]
        with pytest.raises(UsageError):
            engine.records_set_aside(limit=0)
        engine.erase_customer("bad")
        assert engine.records_set_aside() == aside[1:]

    def test_engine_sets_aside_a_record_at_a_step_its_version_does_not_have(
        self, storage: Storage
    ) -> None:
        from cjo.engine import Engine  # noqa: PLC0415  (see test_engine_abandoned_cart_...)

        clock = ManualClock(T0)
        engine = Engine(storage=storage, clock=clock)
        engine.publish(journeys=[Journey(
            id="later", trigger=EventTrigger("signed_up"), entry="wait",
            steps={"wait": Wait(HOUR, next="again"), "again": Wait(HOUR)},
        )])
        for customer in ("bad", "good"):
            engine.handle_event(_event("signed_up", customer, T0, f"su-{customer}"))
        # A record that decodes but names a step its version lacks (a bad manual edit): its
        # wake-up was spent on nothing and the enrollment left waiting for ever, unlisted.
        with storage.customer("bad", T0) as session:
            state = session.load()
            assert state is not None
            state.enrollments[0] = attrs.evolve(state.enrollments[0], step_id="gone")
            session.save(state, (), ())
        clock.advance(hours=1)
        engine.run_due()
        assert [e.step_id for e in engine.enrollments("good")] == ["again"]
        (aside,) = engine.records_set_aside()
        assert aside.customer_id == "bad"
        assert "step 'gone'" in aside.reason
        assert aside.set_aside_at == T0 + HOUR
        with pytest.raises(CorruptRecordError) as info:
            engine.identify("bad", {"n": 1})
        assert info.value.customer_id == "bad"
        (kept,) = engine.enrollments("bad")
        assert (kept.step_id, kept.wake_at) == ("gone", T0 + HOUR), "kept as it was"

    def test_engine_sends_only_on_its_own_channels(self, storage: Storage) -> None:
        from cjo.engine import Engine  # noqa: PLC0415  (see test_engine_abandoned_cart_...)

        clock = ManualClock(T0)
        email, sms = _ScriptedChannel({}), _ScriptedChannel({})
        # Two processes on one database: one with email only, one with both channels.
        both = Engine(storage=storage, channels={"email": email, "sms": sms}, clock=clock)
        email_only = Engine(storage=storage, channels={"email": email}, clock=clock)
        both.publish(journeys=[Journey(
            id="welcome", trigger=EventTrigger("signed_up"), entry="email",
            steps={"email": Send("cart_reminder", "email", next="sms"),
                   "sms": Send("cart_reminder", "sms")},
        )], content=[CART_CONTENT])
        outcome = email_only.handle_event(_event("signed_up", "ann", T0, "su-ann", item="hat"))
        mail, text = outcome.messages
        assert outcome.delivery == {mail.idempotency_key: "delivered",
                                    text.idempotency_key: "pending"}
        clock.advance(days=1)
        assert email_only.dispatch_pending() == 0
        entry = storage.outbox_entry(text.idempotency_key)
        assert entry is not None
        assert (entry.status, entry.attempts, entry.available_at) == ("pending", 0, T0)
        assert storage.pending_by_channel() == {"sms": 1}
        assert both.dispatch_pending() == 1
        assert [m.idempotency_key for m in sms.sent] == [text.idempotency_key]
        assert both.dispatch_pending() == email_only.dispatch_pending() == 0
        assert email_only.dead_letters() == []
        assert storage.pending_by_channel() == {}

    def test_engine_erasure_stops_the_messages_claimed_for_delivery(
        self, storage: Storage
    ) -> None:
        from cjo.engine import Engine  # noqa: PLC0415  (see test_engine_abandoned_cart_...)

        clock = ManualClock(T0)
        email = _ScriptedChannel({})
        engine = Engine(storage=storage, channels={"email": email}, clock=clock,
                        dispatch="deferred")
        engine.publish(journeys=[Journey(
            id="welcome", trigger=EventTrigger("signed_up"), entry="email",
            steps={"email": Send("cart_reminder", "email")},
        )], content=[CART_CONTENT])
        for customer in ("ann", "bob"):
            engine.handle_event(_event("signed_up", customer, T0, f"su-{customer}", item="hat"))
        claim = storage.claim_outbox

        def claim_then_erase(
            now: datetime, limit: int, lease: timedelta, *,
            channels: Collection[str] | None = None,
        ) -> list[Message]:
            claimed = claim(now, limit, lease, channels=channels)
            if any(m.customer_id == "ann" for m in claimed):
                storage.erase_customer("ann")  # by another process, right after the claim
            return claimed

        storage.claim_outbox = claim_then_erase  # type: ignore[method-assign]
        try:
            assert engine.dispatch_pending() == 1
        finally:
            del storage.claim_outbox
        assert [m.customer_id for m in email.sent] == ["bob"]
        clock.advance(days=1)
        engine.run_due()
        engine.dispatch_pending()
        assert [m.customer_id for m in email.sent] == ["bob"]
        assert storage.peek("ann") is None
        assert storage.customer_outbox("ann") == []
        assert engine.activities(T0 - DAY, T0 + 2 * DAY, customer_id="ann") == []

    def test_engine_delivery_results_after_erasure_write_nothing_back(
        self, storage: Storage
    ) -> None:
        from cjo.engine import Engine  # noqa: PLC0415  (see test_engine_abandoned_cart_...)

        clock = ManualClock(T0)
        # Each customer is erased (by another process) while their message is being sent, and
        # the send then fails (for good, or to be retried), or is delivered.
        outcomes = {"ann": DeliveryResult.permanent("no such mailbox"),
                    "bob": DeliveryResult("transient", error="timeout"),
                    "cat": DeliveryResult("delivered"),
                    "dan": DeliveryResult.permanent("crm refused")}
        sent: list[Message] = []

        class Erasing(Channel):
            def send(self, message: Message) -> DeliveryResult:
                sent.append(message)
                engine.erase_customer(message.customer_id)
                return outcomes[message.customer_id]

        engine = Engine(storage=storage, channels={"email": Erasing()}, clock=clock,
                        actions={"crm": Erasing().send}, max_delivery_attempts=2,
                        retry_backoff=MINUTE, max_retry_delay=MINUTE)
        engine.publish(content=[CART_CONTENT], journeys=[
            Journey(id="welcome", trigger=EventTrigger("signed_up"), entry="email",
                    steps={"email": Send("cart_reminder", "email")}),
            # A failed call ends the enrollment: a follow-up in the customer's record.
            Journey(id="crm", trigger=EventTrigger("called"), entry="call", steps={
                "call": Action("crm", on_failure="exit", next="wait"), "wait": Wait(DAY)}),
            # Would start a quiet spell in any record made for an erased customer.
            Journey(id="winback", trigger=InactivityTrigger("signed_up", after=7 * DAY),
                    entry="email", steps={"email": Send("cart_reminder", "email")}),
        ])
        for customer in ("ann", "bob", "cat"):
            engine.handle_event(_event("signed_up", customer, T0, f"su-{customer}", item="hat"))
        clock.advance(minutes=1)
        engine.handle_event(_event("called", "dan", clock.now(), "call-dan"))
        assert [m.customer_id for m in sent] == ["ann", "bob", "cat", "dan"]
        for _ in range(3):
            clock.advance(days=8)
            engine.run_due()
            engine.dispatch_pending()
        assert len(sent) == 4, "nothing more is delivered to erased customers"
        for customer in outcomes:
            assert storage.peek(customer) is None, customer
            assert storage.customer_outbox(customer) == [], customer
            assert engine.activities(T0, clock.now(), customer_id=customer) == [], customer
        assert engine.dead_letters() == []

    def test_engine_abandoned_cart_end_to_end(self, storage: Storage) -> None:
        # Imported here: the storage tests above need nothing of the engine.
        from cjo.engine import Engine  # noqa: PLC0415  (see above)

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
        assert ada_email.fields["text"] == "You left ada's shoes behind."
        assert ada_email.created_at == T0 + 4 * HOUR
        assert [m.created_at for m in sms.messages] == [T0 + 28 * HOUR] * 2
        for message in email.messages + sms.messages:
            entry = storage.outbox_entry(message.idempotency_key)
            assert entry is not None
            assert (entry.status, entry.attempts) == ("delivered", 1)

        records = {c: storage.peek(c) for c in customers}
        statuses = {
            c: [(x.status, x.end_reason) for x in state.ended] if state is not None else None
            for c, state in records.items()
        }
        assert statuses == {
            "buyer": [("converted", "goal")],
            "opener": [("completed", None)],
            "ignorer": [("completed", None)],
            "late": [("converted", "goal")],
            "ada": [("completed", None)],
        }
        assert all(state is not None and state.enrollments == [] for state in records.values())
        ada = records["ada"]
        assert ada is not None
        assert ada.profile == Profile("ada", {"first_name": "Ada"})
        assert storage.active_counts("abandoned_cart") == {}
        assert storage.next_wake_at() is None
        counts: dict[tuple[str, str | None], int] = {}
        for c in storage.activity_counts("abandoned_cart"):
            if c.kind in ("entered", "sent", "converted", "completed"):
                counts[(c.kind, c.detail)] = counts.get((c.kind, c.detail), 0) + c.count
        assert counts == {("entered", None): 5, ("sent", "email"): 4, ("sent", "sms"): 2,
                          ("converted", "goal"): 2, ("completed", None): 3}
        sent = [a for a in storage.activities(T0, T0 + 7 * DAY, journey_id="abandoned_cart")
                if a.kind == "sent"]
        assert len(sent) == 6
        assert all(a.channel in ("email", "sms") and a.content_id == "cart_reminder"
                   for a in sent)
