"""The storage contract on InMemoryStorage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cjo.runtime.state import CustomerState
from cjo.storage.base import DueCustomer, Storage
from cjo.storage.memory import InMemoryStorage
from cjo.testing import StorageContract


class TestInMemoryStorage(StorageContract):
    supports_concurrency = True  # one lock held for the whole customer transaction

    def make_storage(self) -> Storage:
        return InMemoryStorage()


# --- what the in-memory adapter does its own way -----------------------------------------------

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _reschedule(storage: InMemoryStorage, customer_id: str, wake_at: datetime) -> None:
    with storage.customer(customer_id, T0) as session:
        state = session.load() or CustomerState(customer_id, T0)
        state.timers = {"t": wake_at}
        session.save(state, (), ())


def test_a_wake_up_moved_many_times_is_claimed_once_at_its_last_instant() -> None:
    storage = InMemoryStorage()
    _reschedule(storage, "steady", T0 + timedelta(hours=5))
    # Each move replaces the customer's one entry in the index.
    for i in range(5_000):
        _reschedule(storage, "mover", T0 + timedelta(minutes=i % 240))
    _reschedule(storage, "mover", T0 + timedelta(hours=3))
    assert len(storage._wakes) == 2
    assert storage.next_wake_at() == T0 + timedelta(hours=3)
    assert storage.claim_due(T0 + timedelta(hours=2), 10, timedelta(minutes=5)) == []
    due = storage.claim_due(T0 + timedelta(hours=6), 10, timedelta(minutes=5))
    assert [(d.customer_id, d.wake_at) for d in due] == [
        ("mover", T0 + timedelta(hours=3)), ("steady", T0 + timedelta(hours=5)),
    ]
    # Leased now: not claimed again until the lease runs out or the record changes.
    assert storage.claim_due(T0 + timedelta(hours=6), 10, timedelta(minutes=5)) == []
    later = storage.claim_due(T0 + timedelta(hours=7), 10, timedelta(minutes=5))
    assert {d.customer_id for d in later} == {"mover", "steady"}


def test_walks_see_customers_created_after_the_last_walk() -> None:
    storage = InMemoryStorage()
    for cid in ("c3", "c1"):
        _reschedule(storage, cid, T0)
    assert storage.customer_ids() == ["c1", "c3"]
    _reschedule(storage, "c2", T0)
    assert storage.customer_ids(after="c1") == ["c2", "c3"]
    storage.erase_customer("c3")
    assert storage.customer_ids(after="c1", limit=5) == ["c2"]


def test_activity_counts_are_exact_across_bulk_counting() -> None:
    # Counts are added in bulk once a few thousand activities wait: whatever the moment they
    # are read (below, at, past the threshold, after an erase), every activity counts once.
    from cjo.runtime.state import Activity
    from cjo.storage import memory
    from cjo.storage.base import Retention

    for keep in (True, False):
        storage = InMemoryStorage(keep_activity=keep)
        written = 0
        for i in range(memory._COUNT_EVERY * 2 + 7):
            cid = f"c{i % 50}"
            with storage.customer(cid, T0) as session:
                state = session.load() or CustomerState(cid, T0)
                kinds = ("step",) * (i % 3) + ("sent",)
                session.save(state, (), [
                    Activity(T0, cid, f"{cid}:e", "j", 1, "s1", kind) for kind in kinds
                ])
                written += len(kinds)
            if i in (10, memory._COUNT_EVERY // 2, memory._COUNT_EVERY + 3):
                counted = sum(c.count for c in storage.activity_counts("j"))
                assert counted == written
            if i == 5000:
                storage.erase_customer("c7")  # what was counted of them stays counted
                # What waits to be counted keeps no activity (nor its customer) alive.
                assert all(type(key) is tuple and "c7" not in key for key in storage._uncounted)
                assert storage._uncounted or storage._uncounted_rows
            if i == 6000:
                # Pruning the whole log, rows not yet counted included, loses no count.
                pruned = storage.prune(T0 + timedelta(days=1), Retention(activity=timedelta(0)))
                assert not storage._log and (pruned.activity > 0) is keep
        counts = {c.kind: c.count for c in storage.activity_counts("j")}
        assert sum(counts.values()) == written
        assert counts["sent"] == memory._COUNT_EVERY * 2 + 7


def test_the_outbox_keeps_every_field_of_a_message() -> None:
    """A kept message is a flat tuple written field by field: a field added to ``Message`` and
    forgotten there fails here. Read back, it is the message that was written."""
    import attrs

    from cjo.channels.base import Message

    values: dict[str, object] = {}
    for n, field in enumerate(attrs.fields(Message)):
        kind = str(field.type)
        if "Mapping" in kind:
            values[field.name] = {f"k{n}": f"v{n}", "other": n}
        elif "datetime" in kind:
            values[field.name] = T0 + timedelta(minutes=n)
        elif "bool" in kind:
            values[field.name] = True
        elif "int" in kind:
            values[field.name] = 100 + n
        else:
            values[field.name] = f"v{n}"
    message = Message(**values)  # type: ignore[arg-type]
    assert all(getattr(message, name) != attrs.fields_dict(Message)[name].default
               for name in values)
    storage = InMemoryStorage()
    with storage.customer(str(values["customer_id"]), T0) as session:
        session.save(CustomerState(str(values["customer_id"]), T0), (message,), ())
    entry = storage.outbox_entry(message.idempotency_key)
    assert entry is not None and entry.message == message and entry.status == "pending"
    assert storage.claim_outbox(T0 + timedelta(days=1), 10, timedelta(minutes=1)) == [message]


def test_a_kept_record_is_updated_in_place_and_its_outbox_is_untracked() -> None:
    """Why ``KeptRecord`` exists: a commit updates the kept record and enrollments in place
    (the garbage collector moves each to its oldest generation once, not at every commit), and
    the in-memory outbox keeps plain tuples, which the collector stops tracking."""
    import gc

    from cjo.channels.recording import RecordingChannel
    from cjo.clock import ManualClock
    from cjo.engine import Engine
    from cjo.model.content import ContentItem, Variant
    from cjo.model.definitions import Definitions
    from cjo.model.events import Event
    from cjo.model.journey import Journey
    from cjo.model.steps import Send, Wait
    from cjo.model.triggers import EventTrigger
    from cjo.storage.memory import InMemoryStorage

    clock = ManualClock(T0)
    storage = InMemoryStorage()
    engine = Engine(storage, channels={"email": RecordingChannel()}, clock=clock)
    engine.publish(Definitions(
        journeys=(Journey(
            id="j", entry="email", trigger=EventTrigger("cart"),
            steps={"email": Send("hello", "email", next="wait"),
                   "wait": Wait(timedelta(days=1), next="again"),
                   "again": Send("hello", "email", next="rest"),
                   "rest": Wait(timedelta(days=1))},
        ),),
        content=(ContentItem("hello", (Variant("email", {"subject": "Hi",
                                                         "text": "{{ event.item }}"}),)),),
    ))
    engine.handle_event(Event("c1", "cart", T0, {"item": "A"}, "e1"))
    kept = storage._records["c1"]
    (enrollment,) = kept.enrollments
    assert enrollment.step_id == "wait" and kept.wake_at == T0 + timedelta(days=1)
    clock.advance(timedelta(days=1))
    engine.run_due()
    assert storage._records["c1"] is kept and kept.enrollments[0] is enrollment
    assert enrollment.step_id == "rest" and kept.wake_at == T0 + timedelta(days=2)
    assert enrollment.context == {"item": "A"} and not gc.is_tracked(enrollment.context)
    # What a load hands out is a copy: changing it changes nothing kept.
    (loaded,) = engine.enrollments("c1")
    loaded.context["item"] = "B"
    assert enrollment.context == {"item": "A"}
    gc.collect()
    gc.collect()  # a tuple is untracked once what it holds is
    rows = list(storage._outbox.values())
    assert len(rows) == 2 and not any(gc.is_tracked(row) for row in rows)
    entries = storage.customer_outbox("c1")
    assert [e.status for e in entries] == ["delivered", "delivered"]
    assert entries[0].message.fields == {"subject": "Hi", "text": "A"}


def test_nothing_held_names_an_erased_customer() -> None:
    """Beside the records, the adapter keeps the wake-up bucket it read last in order (entries
    read past stay before its position) and the finished messages in the order pruning drops
    them: neither may keep an erased customer's id."""
    from cjo.channels.base import DeliveryResult, Message
    from tests.helpers import held_strings

    storage = InMemoryStorage()
    for customer in ("ann", "bob"):
        message = Message(f"j:{customer}:1:s:1", customer, "email", "m", {}, "j", 1, "s",
                          f"j:{customer}:1", T0)
        with storage.customer(customer, T0) as session:
            state = CustomerState(customer, T0)
            state.timers = {"t": T0 + timedelta(minutes=1)}
            session.save(state, (message,), ())
        storage.complete_outbox(message.idempotency_key, DeliveryResult("delivered"), T0)
    assert storage.next_wake_at() == T0 + timedelta(minutes=1)  # the bucket is read in order
    _reschedule(storage, "ann", T0 + timedelta(hours=5))  # ann leaves its front
    storage.erase_customer("ann")
    assert [where for where, text in held_strings(storage) if "ann" in text] == []
    assert any("bob" in text for _, text in held_strings(storage._wakes))
    assert storage.claim_due(T0 + timedelta(hours=6), 10, timedelta(minutes=1)) == [
        DueCustomer("bob", T0 + timedelta(minutes=1))]
