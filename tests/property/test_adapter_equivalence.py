"""Every storage adapter decides the same: random valid journeys (``journeys.py``) and random
input streams, driven identically through an engine on ``InMemoryStorage``, on
``SQLiteStorage`` (a file) and on ``PostgresStorage`` (a fresh schema per example), give the
same messages (every field), the same customer records (every field, ``revision`` too: each
save counts one on every adapter), the same activity log, journey reports and counts, segment
memberships, outbox, dead letters and privacy exports, and the same outcome from every call
along the way.

Beyond the journeys and streams, each example draws how the engine runs: when its worker comes,
the size of a worker's claim, inline or deferred dispatch, a channel that fails some messages
(retries, dead letters, blocked channels), short retention windows (pruned event ids, messages
and activity), the record cache's size, operator changes inside the stream (pauses, resumes,
new versions, content and segments), values of every kind in events and profiles, and what
the host does after the stream (erasures, merges, consent, blocks, explicit starts and
removals, segment refreshes, prunes). Any difference is an adapter's (or the codec's).

Values are compared strictly (``canonical``): types, UTC offsets and key order count.
``CJO_ADAPTER_EXAMPLES`` sets how many examples each property runs (a few dozen by default:
an example on PostgreSQL costs a schema; run hundreds when looking for a difference).
"""

from __future__ import annotations

import functools
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs
from hypothesis import HealthCheck, example, given, settings, target
from hypothesis import strategies as st

from cjo.channels.base import DeliveryResult, Message
from cjo.channels.recording import RecordingChannel
from cjo.clock import ManualClock
from cjo.engine import Engine, Outcome
from cjo.limits import DEFAULT_LIMITS
from cjo.model.definitions import Definitions
from cjo.model.events import Event, ProfileUpdate
from cjo.model.journey import Journey
from cjo.model.steps import Send, Wait
from cjo.model.triggers import EventTrigger
from cjo.runtime.state import Activity
from cjo.simulate import BacktestInput
from cjo.storage.base import DeadLetter, Retention, Storage
from cjo.storage.erasure import ERASED_PREFIX
from cjo.storage.memory import InMemoryStorage
from cjo.storage.record_cache import DEFAULT_RECORD_CACHE
from cjo.storage.sqlite import SQLiteStorage
from tests.helpers import postgres_storage
from tests.property.journeys import (
    CHANNELS,
    CONTENT,
    CUSTOMERS,
    SEGMENTS,
    T0,
    definitions,
    grouped_streams,
    streams,
)
from tests.property.test_equivalence import deliveries, drive, drive_groups, on_time, reports
from tests.property.test_operator_actions import streams_with_changes

#: All time, as a host asks for the whole activity log.
EVER = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))
Groups = list[tuple[datetime, list[Event | ProfileUpdate]]]
#: A host's call: its name, then its arguments (``act``).
Action = tuple[Any, ...]


@attrs.frozen
class Run:
    """One way of running an engine over some inputs; everything but the storage."""

    defs: Definitions
    #: A stream (``drive``), or groups of one instant each (``drive_groups``).
    inputs: list[BacktestInput] | Groups
    grouped: bool
    worker: str
    render: bool
    #: Keyword arguments of ``Engine``.
    options: Mapping[str, Any]
    #: Whether the channels fail some messages (by their key: the same ones on every run).
    failing: bool
    record_cache: int
    #: The customers' ids (for ``CUSTOMERS`` of the strategies).
    customers: tuple[str, ...]
    #: What the host does after the last input, each a while after the one before.
    actions: list[tuple[timedelta, Action]]
    #: How long the worker keeps coming after that.
    tail: timedelta


class Worker(Engine):
    """An engine whose every ``run_due`` is followed by ``dispatch_pending``, as each pass of
    the worker loop does: deferred messages and retries go out while the run goes on.

    It keeps a journal of the run: what each call that handles inputs or fires wake-ups
    returned, with the earliest wake-up, the segment members, the size of the activity log
    and of each customer's outbox right after it, so that a difference along the way counts
    even where the end is the same (a prune that kept too much, pruned again later)."""

    def __init__(self, *args: Any, customers: Sequence[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.customers = customers
        self.journal: list[object] = []

    def _note(self, call: str, outcome: Outcome) -> Outcome:
        storage = self.storage
        self.journal.append((call, canonical(outcome), canonical(storage.next_wake_at()),
                             storage.segment_members("gold")))
        return outcome

    def run_due(self, now: datetime | None = None) -> Outcome:
        outcome = self._note("run_due", super().run_due(now))
        self.journal.append(("dispatch_pending", self.dispatch_pending(now)))
        # What pruning (which only run_due does) left: differences here may be gone by the
        # end of the run.
        self.journal.append((len(self.storage.activities(*EVER)),
                             [len(self.storage.customer_outbox(c)) for c in self.customers]))
        return outcome

    def handle_event(self, event: Event) -> Outcome:
        return self._note("handle_event", super().handle_event(event))

    def handle_events(self, items: Iterable[Event | ProfileUpdate], *,
                      batch_size: int = 500) -> Outcome:
        return self._note("handle_events", super().handle_events(items, batch_size=batch_size))

    def identify(self, customer_id: str, attributes: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> Outcome:
        return self._note("identify", super().identify(customer_id, attributes, **kwargs))


class FlakyChannel(RecordingChannel):
    """Fails some messages, chosen by their key: a few twice transiently (then delivered),
    a few permanently (blaming the address or not)."""

    def __init__(self, failing: bool) -> None:
        super().__init__()
        self.failing = failing
        self.tries: dict[str, int] = {}

    def send(self, message: Message) -> DeliveryResult:
        key = message.idempotency_key
        tries = self.tries[key] = self.tries.get(key, 0) + 1
        mark = zlib.crc32(key.encode())
        if self.failing and mark % 4 == 0 and tries <= 2:
            return DeliveryResult.transient(f"busy ({tries})")
        if self.failing and mark % 9 == 1:
            return DeliveryResult.permanent("refused", unreachable=mark % 2 == 0)
        return super().send(message)


minutes = st.integers(0, 12 * 60).map(lambda m: timedelta(minutes=m))
channel_names = st.sampled_from(CHANNELS)
# Customer ids that sort differently as text and as numbers, by case, by bytes and by code
# points, and one that is also a journey's id; the plain ones first (what examples shrink to).
IDS = ("c0", "c1", "c2", "Zoë", "zoe", "10", "9", "a b", "ü", "🎉", "x:y/\\z", "j0", "c0 ")


def host_actions(ids: Sequence[str]) -> st.SearchStrategy[Action]:
    customers = st.sampled_from(ids)
    return st.one_of(
        st.tuples(st.just("erase"), customers),
        st.tuples(st.just("start"), st.sampled_from(["j0", "j1", "j2"]), customers,
                  st.fixed_dictionaries({}, optional={"k": st.just("x"), "v": st.integers(0, 3)})),
        st.tuples(st.just("remove"), customers, st.sampled_from([None, "j0"])),
        st.tuples(st.sampled_from(["block", "unblock"]), customers, channel_names),
        st.tuples(st.just("consent"), customers, st.booleans(), st.none() | channel_names),
        st.tuples(st.just("merge"), customers, customers),
        st.tuples(st.just("identify"), customers, st.fixed_dictionaries(
            {}, optional={"tier": st.sampled_from(["gold", "silver"]), "n": st.integers(0, 3)})),
        st.tuples(st.just("refresh")),
        st.tuples(st.just("prune")),
    )


# Values of every kind the codec writes, for an extra event property (kept in the context of
# the enrollments the event starts) and an extra profile attribute.
odd_values = st.sampled_from([
    1.5, -0.0, 1e300, 2**53 + 1, -(2**63) + 1, True, None, "", "é ✓ \u2028 \"q\"", [1, "a", None],
    {"b": 1, "a": [2.0, {"c": False}]}, datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
    datetime(2026, 3, 2, 10, 30, tzinfo=ZoneInfo("Europe/Paris")),
])


@st.composite
def varied(draw: st.DrawFn, inputs: list[Any], ids: Mapping[str, str]) -> list[Any]:
    """``inputs`` for the customers ``ids`` names, event ids after a drawn prefix, and an odd
    value added to some events and profile updates (a redelivered event stays the same as
    the first delivery)."""
    changed: dict[int, Any] = {}
    prefix = draw(st.sampled_from(["", "é", "🎉", " ", "%_"]))

    def change(item: Any) -> Any:
        if id(item) not in changed:
            value = draw(st.just({}) | odd_values.map(lambda v: {"x": v}))
            cid = ids[item.customer_id]
            if isinstance(item, Event):
                new = attrs.evolve(item, customer_id=cid, properties={**item.properties, **value},
                                   event_id=prefix + item.event_id)
            else:
                new = attrs.evolve(item, customer_id=cid, attributes={**item.attributes, **value})
            changed[id(item)] = new
        return changed[id(item)]

    out: list[Any] = []
    for item in inputs:
        if isinstance(item, Event | ProfileUpdate):
            out.append(change(item))
        elif isinstance(item[1], ProfileUpdate):
            out.append((item[0], change(item[1])))
        elif isinstance(item[1], list):  # a group of one instant
            out.append((item[0], [change(i) for i in item[1]]))
        else:  # an operator's change
            out.append(item)
    return out


retentions = st.none() | st.builds(Retention, event_ids=minutes, outbox=minutes,
                                   activity=minutes)


@st.composite
def runs(draw: st.DrawFn) -> Run:
    kind = draw(st.sampled_from(["stream", "changes", "groups"]))
    inputs: list[BacktestInput] | Groups
    if kind == "changes":
        defs, inputs = draw(streams_with_changes())
    else:
        defs = draw(definitions(with_schedules=True))
        inputs = draw(grouped_streams() if kind == "groups" else streams(reuse_ids=True))
    ids = dict(zip(CUSTOMERS, draw(st.permutations(IDS))[:len(CUSTOMERS)], strict=True))
    inputs = draw(varied(inputs, ids))
    options: dict[str, Any] = {
        "due_batch_size": draw(st.sampled_from([500, 1, 2])),
        "dispatch": draw(st.sampled_from(["inline", "deferred"])),
        "keep_ended": draw(st.sampled_from([1, 0, 3])),
        "limits": draw(st.sampled_from([
            DEFAULT_LIMITS, attrs.evolve(DEFAULT_LIMITS, max_messages_per_catch_up=2),
        ])),
    }
    retention = draw(retentions)
    if retention is not None:
        options["retention"] = retention
        options["prune_every"] = draw(st.sampled_from([timedelta(minutes=10), timedelta(hours=1)]))
    return Run(
        defs=defs, inputs=inputs, grouped=kind == "groups",
        worker=draw(st.sampled_from(["on_time", "before_input", "at_end"])),
        render=draw(st.booleans()), options=options, failing=draw(st.booleans()),
        record_cache=draw(st.sampled_from([DEFAULT_RECORD_CACHE, 0, 1])),
        customers=tuple(ids.values()),
        actions=draw(st.lists(st.tuples(minutes, host_actions(list(ids.values()))), max_size=4)),
        tail=draw(st.sampled_from([timedelta(0), timedelta(hours=3), timedelta(days=2)])),
    )


def run(storage: Storage, r: Run) -> tuple[Worker, list[object]]:
    """The engine after ``r`` on ``storage``, and what each of the host's calls returned."""
    clock = ManualClock(T0)
    channels = {name: FlakyChannel(r.failing) for name in CHANNELS}
    engine = Worker(storage, channels, clock, render=r.render, customers=r.customers,
                    **r.options)
    engine.publish(r.defs)
    if r.grouped:
        drive_groups(engine, clock, r.inputs, r.worker)  # type: ignore[arg-type]
    else:
        drive(engine, clock, r.inputs, r.worker)  # type: ignore[arg-type]
    returned = []
    for after, action in r.actions:
        on_time(engine, clock, clock.now() + after)
        returned.append(attempt(functools.partial(act, engine, action)))
    # The worker keeps coming for a while: each wake-up at its instant, and a pass every three
    # hours that sends what waits for a retry. Then it sends what is due at the end.
    end = clock.now() + r.tail
    while clock.now() < end:
        on_time(engine, clock, min(end, clock.now() + timedelta(hours=3)))
        engine.run_due()
    engine.dispatch_pending()
    return engine, returned


def act(engine: Engine, action: Action) -> object:
    name, *args = action
    if name == "erase":
        return engine.erase_customer(args[0])
    if name == "start":
        return engine.start_journey(args[0], args[1], args[2])
    if name == "remove":
        return engine.remove_from_journey(args[0], args[1])
    if name == "block":
        return engine.block_channel(args[0], args[1])
    if name == "unblock":
        return engine.unblock_channel(args[0], args[1])
    if name == "consent":
        return engine.set_consent(args[0], subscribed=args[1], channel=args[2])
    if name == "merge":
        return engine.identify(args[0], anonymous_id=args[1])
    if name == "identify":
        return engine.identify(args[0], args[1])
    if name == "refresh":
        return engine.refresh_segments()
    assert name == "prune"
    return engine.prune()


# --- what is compared ------------------------------------------------------------------------


def canonical(value: object) -> object:
    """``value`` as plain data that keeps what equality of the objects would hide: the type of
    every value (1, 1.0 and True differ; a list is not a tuple) and each instant's UTC offset
    (the same instant in another zone differs)."""
    if attrs.has(type(value)):
        return (type(value).__name__, {
            f.name: canonical(getattr(value, f.name)) for f in attrs.fields(type(value))
        })
    if isinstance(value, datetime):
        return ("datetime", value.isoformat())
    if isinstance(value, Mapping):
        return (type(value).__name__, tuple((canonical(k), canonical(v)) for k, v in value.items()))
    if isinstance(value, list | tuple | set | frozenset):
        items = [canonical(v) for v in value]
        return (type(value).__name__, tuple(sorted(items, key=repr)
                                            if isinstance(value, set | frozenset) else items))
    return (type(value).__name__, value)


def attempt(query: Callable[[], object]) -> object:
    """What a query returns, or the error it raises (which must be the same too)."""
    try:
        return canonical(query())
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


def unsalted(activities: list[Activity]) -> list[Activity]:
    """The log with each erased enrollment's pseudonym (salted afresh for every erasure, so
    never the same on two runs) replaced by its rank of first appearance."""
    names: dict[str, str] = {}
    return [
        attrs.evolve(a, enrollment_id=names.setdefault(
            a.enrollment_id, f"{ERASED_PREFIX}#{len(names)}"))
        if a.enrollment_id.startswith(ERASED_PREFIX) else a
        for a in activities
    ]


def each(keys: Iterable[Any], query: Callable[[Any], object]) -> dict[Any, object]:
    """``attempt(query(key))`` for each key."""
    return {key: attempt(functools.partial(query, key)) for key in keys}


def pages(page: Callable[[str | None], list[str]]) -> list[str]:
    """Every id a paged query gives, walked one page at a time from the start."""
    out: list[str] = []
    while found := page(out[-1] if out else None):
        out.extend(found)
        assert len(out) <= 100, "the pages do not end"
    return out


def dead_pages(storage: Storage) -> list[DeadLetter]:
    out: list[DeadLetter] = []
    while found := storage.dead_letters(1, after=out[-1].cursor if out else None,
                                        newest_first=False):
        out.extend(found)
        assert len(out) <= 1000, "the pages do not end"
    return out


def observed(engine: Engine, r: Run) -> dict[str, object]:
    """Everything the host can read back after a run, by what it is."""
    storage, defs, customers = engine.storage, r.defs, r.customers
    now = engine.clock.now()
    journeys = sorted({j.id for j in engine.definitions.journeys} | {j.id for j in defs.journeys})
    segments = sorted(s.id for s in engine.definitions.segments)
    return {
        "messages": canonical(deliveries(engine)),
        "attempts": {name: ch.attempts for name, ch in engine.channels.items()
                     if isinstance(ch, RecordingChannel)},
        "records": each(customers, engine.customer_state),
        "activities": attempt(lambda: unsalted(engine.activities(*EVER))),
        "activities by journey": each(
            journeys, lambda j: unsalted(engine.activities(*EVER, journey_id=j))),
        "activities by customer": each(
            customers, lambda c: engine.activities(*EVER, customer_id=c)),
        "recent activities": attempt(
            lambda: unsalted(engine.activities(now - timedelta(hours=6), now))),
        "reports": canonical(reports(engine, defs)),
        "activity counts": each(journeys, lambda j: sorted(storage.activity_counts(j), key=repr)),
        # Counts by (version, step), in no promised order: each adapter reads its own way.
        "active counts": each(journeys, lambda j: sorted(storage.active_counts(j).items(), key=repr)),
        "enrolled": each(journeys, storage.enrolled_customers),
        "enrolled, a page of one at a time": each(journeys, lambda j: pages(
            lambda after: storage.enrolled_customers(j, after=after, limit=1))),
        "customers": attempt(storage.customer_ids),
        "customers, a page of one at a time": attempt(lambda: pages(
            lambda after: storage.customer_ids(after=after, limit=1))),
        "next wake-up": attempt(storage.next_wake_at),
        "members": each(segments, lambda s: (engine.segment_members(s), engine.segment_count(s))),
        "members, a page of one at a time": each(segments, lambda s: pages(
            lambda after: engine.segment_members(s, after=after, limit=1))),
        "in segment": each([(c, s) for c in customers for s in segments],
                           lambda cs: engine.in_segment(*cs)),
        "segment sizes": attempt(lambda: engine.segment_sizes(
            segments, now - timedelta(days=2), now, every=timedelta(hours=5))),
        "outbox": each(customers, storage.customer_outbox),
        "dead letters": attempt(lambda: storage.dead_letters(100)),
        "dead letters, oldest first, a page of one at a time": attempt(lambda: dead_pages(storage)),
        "exports": each(customers, engine.export_customer),
    }


def assert_same(storage: Storage, r: Run) -> None:
    reference, returned = run(InMemoryStorage(), r)
    expected = {"journal": reference.journal, "returned": returned,
                **observed(reference, r)}
    # Steer the search towards runs where much happens (most random journeys and streams do
    # little): there is more for the adapters to disagree on.
    target(float(len(reference.activities(T0 - timedelta(days=1), T0 + timedelta(days=30)))))
    engine, returned = run(storage, r)
    got = {"journal": engine.journal, "returned": returned, **observed(engine, r)}
    for part, value in expected.items():
        assert got[part] == value, f"{part} differ from the in-memory adapter's"


# --- the adapters ------------------------------------------------------------------------------


@contextmanager
def sqlite_storage(record_cache: int) -> Iterator[SQLiteStorage]:
    with tempfile.TemporaryDirectory() as tmp:
        storage = SQLiteStorage(Path(tmp) / "cjo.db", record_cache=record_cache)
        try:
            yield storage
        finally:
            storage.close()


def _late_worker() -> Run:
    """c0's wait ends at 09:00; the worker comes back only at 11:00, after c1 entered, and
    fires it at its own instant: the log has entries of 09:00 after entries of 11:00. The next
    prune drops everything before 09:30 wherever it was written (the in-memory adapter kept
    what came after the 11:00 entries)."""
    hour = timedelta(hours=1)
    journey = Journey(id="j0", entry="s0", steps={"s0": Wait(hour, next="s1"),
                                                  "s1": Send("m", "email")},
                      trigger=EventTrigger("a"))
    return Run(
        defs=Definitions(journeys=(journey,), segments=SEGMENTS, content=CONTENT),
        inputs=[Event("c0", "a", T0, {}, "e0"), Event("c1", "a", T0 + 3 * hour, {}, "e1")],
        grouped=False, worker="at_end", render=True,
        options={"retention": Retention(activity=hour + hour / 2),
                 "prune_every": timedelta(minutes=10)},
        failing=False, record_cache=DEFAULT_RECORD_CACHE, customers=CUSTOMERS, actions=[],
        tail=3 * hour,
    )


def _runs(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=[
        HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])


@_runs(int(os.environ.get("CJO_ADAPTER_EXAMPLES", "60")))
@example(_late_worker())
@given(runs())
def test_sqlite_decides_what_memory_decides(r: Run) -> None:
    with sqlite_storage(r.record_cache) as storage:
        assert_same(storage, r)


@_runs(int(os.environ.get("CJO_ADAPTER_EXAMPLES", "20")))
@example(_late_worker())
@given(runs())
def test_postgres_decides_what_memory_decides(postgres_dsn: str, r: Run) -> None:
    with postgres_storage(postgres_dsn, "cjo_eq", max_size=2,
                          record_cache=r.record_cache) as storage:
        assert_same(storage, r)


def test_the_comparison_sees_what_equality_hides() -> None:
    # The properties above fail on differences == would let through: the same instant in
    # another zone, 1.0 read back for 1, a tuple for a list, keys in another order.
    utc = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    paris = utc.astimezone(ZoneInfo("Europe/Paris"))
    assert paris == utc and canonical(paris) != canonical(utc)
    assert {"n": 1} == {"n": 1.0} and canonical({"n": 1}) != canonical({"n": 1.0})
    assert canonical([1]) != canonical((1,))
    assert canonical({"a": 1, "b": 2}) != canonical({"b": 2, "a": 1})
    assert canonical({"a": 1, "b": 2}) == canonical({"a": 1, "b": 2})


def test_an_erased_enrollments_pseudonym_is_compared_by_rank() -> None:
    # Salted afresh for each erasure, pseudonyms differ from run to run; their ranks do not.
    def log(*names: str) -> list[Activity]:
        return [Activity(T0, "", name, "j", 1, None, "entered") for name in names]

    assert unsalted(log("erased:x", "erased:y", "erased:x", "j:c0:1")) == unsalted(
        log("erased:p", "erased:q", "erased:p", "j:c0:1"))
    assert unsalted(log("erased:x", "erased:y")) != unsalted(log("erased:x", "erased:x"))
