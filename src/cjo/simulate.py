"""Back-tests: run definitions over a historical stream of events, in memory, at full speed.

``backtest`` replays a time-ordered stream through an ``Engine`` on ``InMemoryStorage`` driven
by a ``ManualClock``. Each input is decided at its own timestamp (the clock is set to it first),
and wake-ups fall due at their own instants in between, so the result is what a live engine
would have done had every event arrived the moment it was stamped, and replaying the same
stream gives the same result. The stream may also carry an operator's changes, each at its
own instant: a publish (``Publish``), a pause or a resume (``PauseJourney``,
``ResumeJourney``), a withdrawal (``Withdraw``), applied as ``Engine.publish``,
``pause_journey``, ``resume_journey`` and ``withdraw`` apply them live; and identity merges
(``Identify``), made as ``Engine.identify(..., anonymous_id=...)`` makes them live. See
docs/backtest.md.
"""

from __future__ import annotations

import bisect
import gc
import itertools
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import (
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableSequence,
    Sequence,
    Sized,
)
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, NamedTuple, TypedDict, Unpack

import attrs

from cjo.analytics.report import JourneyReport, format_table, journey_report
from cjo.arguments import callable_or_none, flag
from cjo.channels.actions import ActionFunction
from cjo.channels.base import Channel, DeliveryResult, Message
from cjo.clock import ManualClock, ensure_aware
from cjo.content.offers import Scorer
from cjo.delivery.feedback import DELIVERY_EVENTS, check_delivery_event, sent_messages
from cjo.described import short
from cjo.engine import Engine
from cjo.errors import (
    DefinitionError,
    JourneyNotPausedError,
    Problem,
    UnknownJourneyError,
    UsageError,
)
from cjo.identity import anonymous_id_to_merge
from cjo.limits import MAX_TIMESTAMP, MIN_TIMESTAMP, TIMESTAMP_RANGE, Limits
from cjo.model.definitions import Definitions
from cjo.model.events import Event, ProfileUpdate
from cjo.model.governance import VersionChange
from cjo.model.journey import Journey
from cjo.model.steps import Action
from cjo.outcome import Outcome, OutcomeBuilder
from cjo.runtime.core import Decider
from cjo.runtime.state import TERMINAL_STATUSES, RecordView
from cjo.scheduling import mark_schedules, next_schedule_run
from cjo.segments.membership import MERGED_AWAY
from cjo.storage.base import _MAX_RETENTION, CustomerSession, Retention
from cjo.storage.memory import InMemoryStorage
from cjo.validation import channels_named, named_in_steps

__all__ = [
    "BacktestInput",
    "BacktestOptions",
    "BacktestResult",
    "Identify",
    "OperatorChange",
    "PauseJourney",
    "Progress",
    "Publish",
    "ResumeJourney",
    "Withdraw",
    "backtest",
]


@attrs.frozen
class Publish:
    """In a back-test's stream, paired with its instant: what ``Engine.publish(definitions,
    running=running)`` does at that instant (new journeys or versions, content, segments,
    policies; ``running`` says what a new version does to the customers inside the previous
    one: ``VersionChange.drain()``, ``.migrate({...})`` or ``.eject(reason)``)."""

    definitions: Definitions
    running: Mapping[str, VersionChange] = attrs.field(factory=dict)


@attrs.frozen
class PauseJourney:
    """In a back-test's stream, paired with its instant: ``Engine.pause_journey(journey_id)``
    at that instant."""

    journey_id: str


@attrs.frozen
class ResumeJourney:
    """In a back-test's stream, paired with its instant: ``Engine.resume_journey(journey_id)``
    at that instant (the held wake-ups run then, by the journey's ``on_resume`` rule)."""

    journey_id: str


@attrs.frozen
class Withdraw:
    """In a back-test's stream, paired with its instant: ``Engine.withdraw(segments=...,
    content=..., ...)`` at that instant (the ids of each kind of definition to take out)."""

    segments: Iterable[str] = ()
    content: Iterable[str] = ()
    blocks: Iterable[str] = ()
    offers: Iterable[str] = ()
    topics: Iterable[str] = ()
    caps: Iterable[str] = ()
    quiet_hours: Iterable[str] = ()
    profile_rules: Iterable[str] = ()


@attrs.frozen
class Identify:
    """In a back-test's stream, paired with its instant: an identity merge, what
    ``Engine.identify(customer_id, attributes, unset=..., timezone=..., locale=...,
    anonymous_id=anonymous_id)`` does at that instant. The anonymous customer's record is
    merged into the known customer's (see ``cjo.identity``), then the profile update is applied
    to the merged record; events under the anonymous id later start a new anonymous record.

    Checked when made, as ``Engine.identify`` checks its arguments: the profile update as a
    ``ProfileUpdate`` is (``InvalidEventError``; ``attributes`` named ``timezone`` or
    ``locale`` become those fields, as there), ``anonymous_id`` as an id, and ``UsageError``
    for a customer merged into itself. For a profile update without a merge, pair a
    ``ProfileUpdate`` with its instant."""

    customer_id: str
    attributes: Mapping[str, Any] = attrs.field(factory=dict)
    unset: Iterable[str] = ()
    timezone: str | None = None
    locale: str | None = None
    anonymous_id: str = attrs.field(kw_only=True)

    def __attrs_post_init__(self) -> None:
        update = self.update
        object.__setattr__(self, "anonymous_id",
                           anonymous_id_to_merge(update.customer_id, self.anonymous_id))
        # Kept as checked (ids as plain strings, an unset list as a tuple), as Engine.identify
        # would take them, so that the run's identify cannot refuse them after a long run.
        for name in ("customer_id", "attributes", "unset", "timezone", "locale"):
            object.__setattr__(self, name, getattr(update, name))

    @property
    def update(self) -> ProfileUpdate:
        """The profile update applied after the merge."""
        return ProfileUpdate(self.customer_id, self.attributes, self.unset, self.timezone,
                             self.locale)


#: What an operator does to a running engine, replayed at an instant of a back-test.
OperatorChange = Publish | PauseJourney | ResumeJourney | Withdraw

#: One input of a back-test: an event (decided at its timestamp), a profile update (applied at
#: the instant of the next input that has one, or of the last when none follows), a profile
#: update with its own instant, an identity merge with its instant, or an operator's change
#: with its instant.
BacktestInput = (
    Event | ProfileUpdate | tuple[datetime, ProfileUpdate] | tuple[datetime, Identify]
    | tuple[datetime, OperatorChange]
)

class BacktestOptions(TypedDict, total=False):
    """The options of ``Engine`` that change what it decides or delivers, which ``backtest``
    passes to the engine it runs (``backtest(..., **options)``), so that one dict sets up a
    live engine (``Engine(..., **options)``) and its back-test alike. Each means what it means
    to ``Engine``, has its default, and is refused as ``Engine`` refuses it."""

    default_timezone: str | None
    contact_attributes: Mapping[str, str] | None
    recipient_attributes: Sequence[str]
    channel_types: Mapping[str, str] | None
    scorers: Mapping[str, Scorer] | None
    limits: Limits | None
    keep_ended: int
    max_delivery_attempts: int
    retry_backoff: timedelta
    max_retry_delay: timedelta


#: ``progress(done, total, now)``: inputs read so far, the stream's length when it has one
#: (else None), and the back-test's current instant.
Progress = Callable[[int, int | None, datetime], None]

log = logging.getLogger("cjo.simulate")

# The clock starts here when no ``start`` is given, and moves to the first input's instant.
_BEGINNING = datetime.min.replace(tzinfo=UTC)
_END = datetime.max.replace(tzinfo=UTC)
_DELIVERED = DeliveryResult("delivered")
# The resolution of instants: "before t" is "by t - _TICK".
_TICK = timedelta(microseconds=1)


class _CountingChannel(Channel):
    """Delivers nothing and counts what it is given: the back-test's default channel, so that
    dispatch costs next to nothing."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = 0

    def send(self, message: Message) -> DeliveryResult:
        self.sent += 1
        return _DELIVERED


@attrs.frozen
class BacktestResult:
    """What a back-test did.

    - ``start``, ``until``: the instants the run covered (None only for an empty stream with
      neither given).
    - ``inputs``: items read (0, logged as a warning, for an empty stream or an iterator
      read before); ``events``, ``profile_updates``, identity ``merges`` and operator
      ``changes`` of them.
    - ``messages``: messages queued per channel (sent to the channels given, or counted).
    - ``entered``: entries per journey id; ``ended``: ended enrollments per terminal status;
      ``goals``: goals reached per journey id (all three from the activity counts, as the
      reports are).
    - ``reports``: the journey report of the latest version of every journey (those published
      by the stream's changes too), by journey id.
    - ``wall_seconds``: how long the run took (``due_seconds`` of it firing wake-ups): wall
      time, for reporting only; nothing in the run depends on it.
    - ``engine``: the engine, to inspect customers (``engine.customer_state(...)``), their
      enrollments, the activity log (with ``keep_activity``) and the channels.
    """

    start: datetime | None
    until: datetime | None
    inputs: int
    events: int
    profile_updates: int
    changes: int
    merges: int
    messages: Mapping[str, int]
    entered: Mapping[str, int]
    ended: Mapping[str, int]
    goals: Mapping[str, int]
    reports: Mapping[str, JourneyReport]
    wall_seconds: float = attrs.field(eq=False)
    due_seconds: float = attrs.field(eq=False)
    engine: Engine = attrs.field(eq=False, repr=False)

    @property
    def messages_total(self) -> int:
        return sum(self.messages.values())

    @property
    def inputs_per_second(self) -> float:
        return self.inputs / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def table(self) -> str:
        """The journey reports as a text table (``cjo.analytics.format_table``)."""
        return format_table(list(self.reports.values()))


class _Tally:
    """Counts the messages the outcomes of the run queued (entries, ends and goals are read
    from the activity counts afterwards: some ends, such as an action's final failure, come
    from deliveries, after the outcome that queued them)."""

    __slots__ = ("messages",)

    def __init__(self) -> None:
        self.messages: Counter[str] = Counter()

    def add(self, outcome: Outcome | OutcomeBuilder) -> None:
        # Most outcomes are empty: test before looping.
        if outcome.messages:
            self.messages.update(m.channel for m in outcome.messages)
        if isinstance(outcome, OutcomeBuilder) and outcome.sent:
            self.messages.update(outcome.sent)  # sends counted, not recorded (see _decide)


def backtest(
    definitions: Definitions,
    inputs: Iterable[BacktestInput],
    *,
    start: datetime | None = None,
    until: datetime | None = None,
    channels: Mapping[str, Channel] | None = None,
    actions: Mapping[str, ActionFunction] | None = None,
    render: bool = False,
    progress: Progress | None = None,
    progress_every: int = 10_000,
    keep_activity: bool = False,
    **options: Unpack[BacktestOptions],
) -> BacktestResult:
    """Run ``definitions`` over ``inputs``, a time-ordered stream, and report what happened.

    Each input is decided at its own timestamp, in stream order (inputs sharing an instant in
    the order given); wake-ups due before an input fire first, each at its own instant (one
    due exactly at an input's instant fires before it, as a live engine's catch-up does). At
    the end, everything due by ``until`` fires. The result is what a live engine decides with
    its clock set to each input's timestamp and a worker that is never late.

    - ``inputs``: ``Event``s; ``ProfileUpdate``s, applied at the instant of the next input
      that has one (or of the last input when none follows); ``(datetime, ProfileUpdate)``
      pairs, applied at that instant; ``(datetime, Identify(...))`` pairs, identity merges
      made at that instant as ``Engine.identify(..., anonymous_id=...)`` makes them (after
      what falls due by then, as before an event); ``(datetime, change)`` pairs, where the
      change is a ``Publish``, ``PauseJourney``, ``ResumeJourney`` or ``Withdraw``, applied at
      that instant as the engine's ``publish``, ``pause_journey``, ``resume_journey`` and
      ``withdraw`` would apply it then:
      after everything due before that instant has fired and the inputs before it in the
      stream are decided, and before what falls due at it, which fires right after it (with
      the segments a publish changed evaluated for every customer, a schedule occurrence at
      that instant, the latest one a resumed journey missed), as a worker on time would.
      An input stamped earlier than the one
      before it (or than ``start``) raises ``UsageError`` naming its position (0-based); a
      change the engine refuses raises its error (``DefinitionError``,
      ``UnknownJourneyError``) naming it by position. A run that reads no input (an empty
      stream, or a generator read before: it can be read only once) logs a warning on the
      ``cjo.simulate`` logger.
    - ``start``: the instant the run begins (default: the first input's). ``until``: the
      instant it ends (default: the last input's); an input stamped after it ends the run,
      and it and the rest are not read.
    - ``channels``: delivery adapters by name, covering every channel the definitions name
      (default: one counting channel, which delivers nothing, per channel). With channels or
      actions given, the run decides instant by instant, delivering each message (and retrying
      each failed delivery) at its own instant, as a live engine with a worker on time does.
    - ``actions``: the host actions of ``Action`` steps, by name (default: each action the
      journeys call is counted and not called, so a back-test never reaches the host's real
      systems). Their calls are counted in ``messages`` under ``action:<name>``.
    - ``render``: render message content (False records messages with empty ``fields``; an
      ``Action``'s ``params`` are rendered either way).
    - ``progress``: called as ``progress(done, total, now)`` every ``progress_every`` inputs
      read, and once at the end when everything is decided.
    - ``keep_activity``: keep the activity log itself (``engine.activities``), not only the
      counts the reports (and ``entered``, ``ended``, ``goals``) are built from, for the
      whole run (the result's engine keeps it past ``Retention.activity``); without it,
      reading the log raises ``UsageError``.
    - ``options``: the engine options that change what is decided or delivered
      (``BacktestOptions``), passed to the run's engine as a live engine is given them, and
      refused with the error ``Engine`` raises for them: ``default_timezone``,
      ``contact_attributes``, ``recipient_attributes``, ``channel_types``, ``scorers``,
      ``limits``, ``keep_ended``, and, for the channels and actions given,
      ``max_delivery_attempts``, ``retry_backoff`` and ``max_retry_delay``. Not taken
      (``UsageError``): those of a live deployment's mechanics, which the run sets itself
      (``storage``, ``clock``, ``due_batch_size``, ``wake_lease``, ``dispatch``: each message is
      delivered at the instant it is decided; ``retention``, ``prune_every``: the defaults), and
      those that cannot change a back-test's decisions: ``future_tolerance`` (no input is
      ahead of the run's clock: each is decided at its own timestamp) and ``late_events`` (the
      inputs are in timestamp order, so none is late).
    """
    # Checked before the run: a bad argument found after it would lose the whole run.
    if not isinstance(definitions, Definitions):
        raise DefinitionError([Problem("backtest definitions", (
            f"expected a Definitions, got {type(definitions).__name__}"
        ))])
    if isinstance(inputs, str | bytes | Mapping) or not isinstance(inputs, Iterable):
        raise UsageError(
            "inputs must be an iterable of Event, ProfileUpdate and (datetime, change) items, "
            f"got {type(inputs).__name__}"
        )
    unknown = sorted(options.keys() - BacktestOptions.__optional_keys__)
    if unknown:
        raise UsageError(
            f"backtest takes no engine option {unknown[0]!r}: it takes "
            f"{', '.join(sorted(BacktestOptions.__optional_keys__))} (those that change what is "
            "decided or delivered)"
        )
    callable_or_none(progress, "progress")
    if isinstance(progress_every, bool) or not isinstance(progress_every, int) or (
        progress_every < 1
    ):
        raise UsageError(f"progress_every must be at least 1, got {progress_every!r}")
    flag(keep_activity, "keep_activity")
    if start is not None:
        start = _in_range(ensure_aware(start, "start"), "start")
    if until is not None:
        until = _in_range(ensure_aware(until, "until"), "until")
        if start is not None and until < start:
            raise UsageError(
                f"until ({until.isoformat()}) is before start ({start.isoformat()})"
            )
    # Wall time is measured for the report only; it never steers the run.
    began = time.perf_counter()
    clock = ManualClock(start if start is not None else _BEGINNING)
    own: dict[str, _CountingChannel] | None = None  # shared with the run: a publish may add
    if channels is None:
        own = {name: _CountingChannel() for name in channels_named(definitions)}
        channels = own
    # Counted rather than delivered only when channels and actions are both the run's own.
    counters = own if actions is None else None
    actions_counted = actions is None
    if actions is None:
        actions = dict.fromkeys(named_in_steps(definitions, Action, "action"), _count_call)
    # With the back-test's own channels and actions, every delivery succeeds: no message is
    # ever retried or read back, so none is built or recorded (the outbox would only be
    # written, completed and pruned). Channels or actions given get the whole delivery path.
    storage = InMemoryStorage(keep_activity=keep_activity, keep_outbox=counters is None)
    # Small wake-up groups: each load in an in-memory group looks through the group's earlier
    # writes, so a group's cost grows with its square.
    # The log asked for is the whole run's: a run longer than ``Retention.activity`` would
    # otherwise prune its first months (and segment sizes at their instants) as it went.
    retention = Retention(activity=_MAX_RETENTION) if keep_activity else None
    engine = Engine(
        storage, channels, clock, render=render, due_batch_size=DUE_BATCH, actions=actions,
        retention=retention, **options,
    )
    # Each wake-up fires at its own instant, whoever fires it: the catch-up limit counts each
    # instant's sends apart, as a live worker on time, firing each instant in its own pass,
    # does (a window's catch-up may fire wake-ups of many instants).
    engine.options = attrs.evolve(engine.options, worker_on_time=True)
    engine.publish(definitions)
    # A worker on time passes from the start: its first pass finds every customer (none yet)
    # evaluated against the segments, so a later pass does not evaluate the record a merge
    # emptied then, as a live engine's first pass would (long past when a host merges).
    engine._maybe_refresh_segments(engine._sync(), OutcomeBuilder())
    run = _Run(engine, clock, storage, progress, counters, own_channels=own,
               own_actions=actions_counted)
    with _collector_paused():
        run.play(inputs, start, until, progress_every)
        run.hand_over_claims()
    if run.inputs == 0:
        _warn_nothing_read(inputs, run.unread, until)
    latest = _latest_journeys(engine.definitions)
    reports = {journey.id: journey_report(storage, journey) for journey in latest}
    entered, ended, goals = _logged(storage, [journey.id for journey in latest])
    return BacktestResult(
        start=run.start,
        until=run.until,
        inputs=run.inputs,
        events=run.events,
        profile_updates=run.profile_updates,
        changes=run.changes,
        merges=run.merges,
        messages=dict(sorted(run.tally.messages.items())),
        entered=entered,
        ended=ended,
        goals=goals,
        reports=reports,
        wall_seconds=time.perf_counter() - began,
        due_seconds=run.due_seconds,
        engine=engine,
    )


Item = Event | ProfileUpdate
#: An identity merge of a window: its place (how many of the window's inputs come before it),
#: its instant, and the merge.
_Merge = tuple[int, datetime, Identify]


class _PerCustomer(NamedTuple):
    """A window's inputs split for deciding customer by customer (``_Run._per_customer``)."""

    #: Each customer's inputs, in stream order, but those of the customers merges tie:
    mine: dict[str, list[tuple[datetime, Item]]]
    #: those of the customers with an input at a merge's instant, with their places, in
    #: stream order;
    in_order: list[tuple[int, tuple[datetime, Item]]]
    #: and those of the other customers of merges, by customer, with their places.
    waiting: dict[str, deque[tuple[int, tuple[datetime, Item]]]]

#: How many inputs that may matter are decided in one storage transaction (see ``_Run``).
WINDOW = 1_048_576
#: ... and of at most this many customers: a window decided in stream order holds a decider
#: and a record for each (the demo shop's 100,000 customers fit in one window: about 490 MiB);
#: one decided customer by customer writes them ``CUSTOMER_CHUNK`` at a time.
WINDOW_CUSTOMERS = 131_072
#: Customers per transaction when a window is decided customer by customer: each chunk's
#: records are written while still in the processor's caches, and what the transaction holds
#: stays small.
CUSTOMER_CHUNK = 512
#: Customers per wake-up transaction in ``run_due``.
DUE_BATCH = 64



@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector's automatic passes for the run.

    A back-test builds millions of long-lived objects (records, enrollments, outbox entries,
    and often the caller's list of inputs), and automatic collection kept re-traversing them:
    about 40% of the run. What the engine allocates is freed by reference counting (a run of
    the demo shop leaves a few hundred objects in cycles, from publishing, whatever its
    length), so nothing piles up; the collector resumes, and finds any cycles, afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if gc.get_freeze_count() == 0:
                # What the run built is long-lived: hand it straight to the oldest generation
                # (freezing and unfreezing moves every tracked object there at no cost), or
                # the first young collection would traverse all of it. Skipped when the host
                # froze objects itself: unfreezing would release them too.
                gc.freeze()
                gc.unfreeze()
            gc.enable()


class _Run:
    """The replay loop and what it counts.

    Inputs are read in order and checked; events that no journey can read are counted and
    dropped at once. The others are decided in windows of up to ``WINDOW`` inputs (and
    ``WINDOW_CUSTOMERS`` customers), one storage transaction per window, each input at its own
    timestamp by the decision core, with one ``Decider`` per customer per window (a customer
    record is loaded and written once per window, not once per input: that is where the speed
    comes from). A window ends with every customer it touched caught up to its last instant,
    and then ``run_due`` at that instant for everyone else. Since every wake-up fires at its
    own scheduled instant, whoever fires it, this decides exactly what a live engine would with
    the clock at each input's timestamp and a worker that is never late
    (tests/property/test_equivalence.py holds it to that).

    An operator's change ends the window before it, fires what falls due before its instant,
    is applied by the engine itself at that instant, and is followed by ``run_due`` at it; the
    windows after it decide with the definitions it left (tests/property/
    test_operator_actions.py holds that to a live engine). An identity merge ties two
    customers' records: it stays in the window, at its place, and is made by the engine's own
    ``identify`` between the two customers' inputs around it, with both caught up to its
    instant; the other customers' inputs are decided as if it were not there
    (``_around_merges``; tests/property/test_backtest_merges.py). Only where the window must
    be decided in stream order does a merge end the window before it (``_split``).
    """

    def __init__(
        self, engine: Engine, clock: ManualClock, storage: InMemoryStorage,
        progress: Progress | None, counters: dict[str, _CountingChannel] | None = None, *,
        own_channels: dict[str, _CountingChannel] | None = None, own_actions: bool = False,
    ) -> None:
        self.engine = engine
        # The back-test's own counting channels, when the caller gave none: the windows'
        # messages are counted on them directly rather than dispatched.
        self.counters = counters
        # The run's own counting channels and actions (None, False: the caller's), which
        # grow with what a published change names.
        self.own_channels = own_channels
        self.own_actions = own_actions
        self.clock = clock
        self.storage = storage
        # The engine's own compiled definitions, so that a window decides exactly as the
        # engine's handle_event and run_due would.
        self.registry = engine._sync()
        self.progress = progress
        self.tally = _Tally()
        self.outcome = OutcomeBuilder(record_steps=False)
        # The next schedule occurrence to run, each at its own instant (None: none to run).
        # Without a start, schedules count from the first input's instant (set there).
        self.next_run: datetime | None = (
            next_schedule_run(engine) if clock.now() != _BEGINNING else None
        )
        # Event ids claimed by the run's inputs: id -> its latest claim's instant, and every
        # claim in order (instants only grow), for ``_forget``.
        self.keep = engine.retention.event_ids
        self.claimed: dict[str, datetime] = {}
        self.claims: deque[tuple[datetime, str]] = deque()
        self.inputs = 0
        self.events = 0
        self.profile_updates = 0
        self.changes = 0
        self.merges = 0
        self.due_seconds = 0.0
        self.start: datetime | None = None
        self.until: datetime | None = None
        # The instant of the input past ``until`` that ended the run (None: none did).
        self.unread: datetime | None = None

    def play(
        self, inputs: Iterable[BacktestInput], start: datetime | None, until: datetime | None,
        progress_every: int,
    ) -> None:
        total = len(inputs) if isinstance(inputs, Sized) else None
        progress = self.progress or _no_progress
        next_progress = progress_every if self.progress is not None else -1
        registry = self.registry
        relevant = registry.relevant_events
        known = self.engine._known_channels(registry)
        # Inputs to decide, with their instants, and profile updates waiting for the next
        # timestamped input's instant.
        window: list[tuple[datetime, Item]] = []
        customers: set[str] = set()  # the window's customers
        # The window's identity merges, each with its place (how many of the window's inputs
        # come before it) and instant.
        window_merges: list[_Merge] = []
        # The window's inputs by customer, and the customer of each event id (``shared``: one
        # has two), for deciding it customer by customer: gathered as the inputs are read,
        # while they are in the processor's caches (a month's window is far larger).
        by_customer: defaultdict[str, list[tuple[datetime, Item]]] = defaultdict(list)
        owners: dict[str, str] = {}
        shared = False

        def decide() -> None:
            """Decide the window read so far, and start the next."""
            nonlocal window, customers, window_merges, by_customer, owners, shared
            if window or window_merges:
                self._decide(window, customers, window_merges,
                             None if shared else by_customer)
                window, customers, window_merges = [], set(), []
                by_customer, owners, shared = defaultdict(list), {}, False

        floating: list[ProfileUpdate] = []

        def add_floating(at: datetime) -> None:
            """Put the profile updates waiting for an instant into the window, at ``at``."""
            for update in floating:
                pair = (at, update)
                window.append(pair)
                customers.add(update.customer_id)
                by_customer[update.customer_id].append(pair)

        pair: tuple[datetime, Item]
        last = start if start is not None else _BEGINNING
        first: datetime | None = None
        stop = until if until is not None else _END
        read = updates = changes = merges = 0  # events: the rest of those read
        # The latest instant an event can be taken at without a look at anything else: in
        # order, within the run, with no schedule occurrence by it and no profile update
        # waiting for its instant (None: before the first input, or while one waits).
        fast_until: datetime | None = None
        # The change or merge read in this pass (None but in a pass that reads one: not set
        # per event).
        change: OperatorChange | None = None
        merge: Identify | None = None
        # The hot loop of the run: one pass per input, most of them events nothing reads.
        for item in inputs:
            entry: Item
            if (
                type(item) is Event and fast_until is not None
                and last <= (at := item.timestamp) <= fast_until and read + 1 != next_progress
            ):
                # The common case first: an event that needs no look at anything else (and
                # no progress to report). One nothing reads is counted, and dropped.
                read += 1
                last = at
                if item.name not in relevant:
                    continue
                entry, matters = item, True
            else:
                if type(item) is Event or isinstance(item, Event):
                    entry, at = item, item.timestamp
                    matters = item.name in relevant
                elif isinstance(item, ProfileUpdate):
                    floating.append(item)
                    fast_until = None  # the next input gives it its instant
                    updates += 1
                    read += 1
                    if read == next_progress:
                        next_progress += progress_every
                        progress(read, total, last)
                    continue
                else:
                    at, timed = _timed(item, read)
                    if isinstance(timed, ProfileUpdate):
                        entry, matters = timed, True
                        updates += 1
                    elif isinstance(timed, Identify):
                        merge, matters = timed, False
                        merges += 1
                    else:
                        change, matters = timed, False
                        changes += 1
                if at < last:
                    what = "the input before it" if first is not None else "start"
                    raise UsageError(
                        f"input #{read} is stamped {at.isoformat()}, earlier than {what} "
                        f"({last.isoformat()}): a back-test needs its inputs in timestamp order"
                    )
                if at > stop:
                    # The run ends at until: this input and those after it are not read.
                    self.unread = at
                    if change is not None:
                        changes -= 1
                    elif merge is not None:
                        merges -= 1
                    elif entry is not item:
                        updates -= 1
                    break
                read += 1
                last = at
                if first is None:
                    first = at
                    if start is None and registry.any_schedule:
                        # Schedules start where the stream does, as at a publish then.
                        mark_schedules(self.engine, registry, at, replace=True)
                        self.next_run = next_schedule_run(self.engine)
                if self.next_run is not None and self.next_run <= at and (
                    change is None or floating  # a change alone runs only those before it
                ):
                    # A schedule occurrence comes first: decide what came before it, then run
                    # it (and what falls due by then) at its own instant.
                    decide()
                    self._run_schedules(at)
                if floating:
                    add_floating(at)
                    floating = []
                fast_until = _fast_until(stop, self.next_run)
            if matters:
                cid = entry.customer_id
                if isinstance(entry, Event):
                    if entry.name in DELIVERY_EVENTS:
                        # Refused as a live engine refuses it, by the definitions of its
                        # instant.
                        check_delivery_event(registry.delivery.topics, known, entry,
                                             f"input #{read - 1}: ")
                    # (A host's subclass of Event claims its id as an Event does.)
                    if owners.setdefault(entry.event_id, cid) != cid:
                        shared = True
                pair = (at, entry)
                window.append(pair)
                customers.add(cid)
                by_customer[cid].append(pair)
            elif change is not None:
                decide()
                self._change(at, change, read - 1)
                change = None
                registry = self.registry
                relevant = registry.relevant_events
                known = self.engine._known_channels(registry)
                fast_until = _fast_until(stop, self.next_run)
            elif merge is not None:
                # Kept in the window, at its place: made between the two customers' inputs
                # around it when the window is decided (``_decide``), without ending it.
                window_merges.append((len(window), at, merge))
                customers.update((merge.customer_id, merge.anonymous_id))
                merge = None
            if len(window) + len(window_merges) >= WINDOW or len(customers) >= WINDOW_CUSTOMERS:
                decide()
                # (A window with merges may run schedule occurrences.)
                fast_until = _fast_until(stop, self.next_run)
            if read == next_progress:
                next_progress += progress_every
                progress(read, total, at)
        self.inputs, self.events, self.profile_updates = (
            read, read - updates - changes - merges, updates
        )
        self.changes, self.merges = changes, merges
        end = until if until is not None else (last if first is not None else start)
        if floating:
            # Profile updates that no event follows: applied at the last instant read.
            final = last if first is not None else end
            if final is None:
                raise UsageError(
                    "the stream holds profile updates but no timestamped input: give start "
                    "or until, so that they have an instant"
                )
            add_floating(final)
        decide()
        if end is not None:
            self._run_schedules(end)
            if self.counters is None:
                self._on_time(end)  # each at its own instant, before the clock is at the end
            self.clock.set(end)
            self._due(end)
        self.start = start if start is not None else (first or end)
        self.until = end
        progress(read, total, end if end is not None else self.clock.now())

    def _decide(
        self, window: list[tuple[datetime, Item]], customer_ids: set[str],
        merges: list[_Merge], by_customer: dict[str, list[tuple[datetime, Item]]] | None = None,
    ) -> None:
        """Decide one window's inputs (of ``customer_ids``) and make its identity merges, then
        fire what is due by its end. ``by_customer``: the window's inputs by customer, each
        customer's in stream order, when no event id is shared across customers (None: not
        gathered).

        With the caller's channels or actions, each instant's inputs are decided apart, after
        what fell due before them, and their messages delivered at that instant: a delivery
        then acts from its own instant on (a retry, a channel blocked by a permanent failure,
        an action's failure ending the enrollment), as it does live."""
        if self.counters is None:
            if merges:
                self._split(window, merges)
                return
            for at, group in itertools.groupby(window, key=itemgetter(0)):
                items = list(group)
                self._on_time(at)
                self._decide_window(items, {item.customer_id for _, item in items})
            return
        split: _PerCustomer | None = None
        if merges or (len(customer_ids) >= 2 and by_customer is None):
            split = self._per_customer(window, merges)
        elif by_customer is not None and len(customer_ids) >= 2:
            split = _PerCustomer(by_customer, [], {})  # what _per_customer would make of it
        if split is None and merges:
            # An event id two customers share orders them across customers: the stream's
            # order, each merge between the inputs around it.
            self._split(window, merges)
            return
        self._decide_window(window, customer_ids, split, merges)

    def _split(self, window: list[tuple[datetime, Item]], merges: list[_Merge]) -> None:
        """Decide ``window`` as windows that end at each of its merges, each merge made after
        the window before it, by ``_identify``."""
        done = 0
        for place, at, merge in merges:
            if place > done:
                part = window[done:place]
                self._decide(part, {item.customer_id for _, item in part}, [])
            self._identify(at, merge)
            done = place
        if done < len(window):
            part = window[done:]
            self._decide(part, {item.customer_id for _, item in part}, [])

    def _decide_window(
        self, window: list[tuple[datetime, Item]], customer_ids: set[str],
        split: _PerCustomer | None = None, merges: Sequence[_Merge] = (),
    ) -> None:
        """Decide ``window`` (customer by customer when ``split`` is given, making ``merges``
        between the inputs around them; else in stream order, in one transaction), then fire
        what is due by its end."""
        end = max(window[-1][0] if window else _BEGINNING, merges[-1][1] if merges else _BEGINNING)
        engine = self.engine
        storage = self.storage
        # Shared by the window's deciders.
        # On the back-test's own counting channels, a send is only counted: no message is
        # built (the storage keeps no outbox, and the channels would only count it).
        outcome = self.outcome = OutcomeBuilder(
            record_steps=False, record_messages=self.counters is None
        )
        claims: list[tuple[datetime, str]] = []  # the window's, when not claimed in order
        if split is not None:
            claims = self._by_customer(split, merges, end)
        else:
            self.clock.set(end)
            # The messages the window's feedback events name, as the engine reads them (the
            # outbox keeps none on the run's own channels): a bounce blocks the channel the
            # message went out on, a fallback's too.
            sent = (
                sent_messages(storage, [item for _, item in window])
                if self.counters is None else None
            )
            self._in_order(window, customer_ids, end, sent)
        counters = self.counters
        if counters is not None:
            for channel, n in outcome.sent.items():
                counters[channel].sent += n
        elif outcome.messages:
            # The engine's own delivery path: channels, outcome statuses, retries.
            engine._dispatch(outcome.messages, end, outcome)
        # After the delivery: a failover it wrote (a permanent failure) is a message queued too.
        self.tally.add(outcome)
        self._forget(end, claims)
        self._due(end)
        # As a worker prunes (at most once per ``prune_every``): the outbox and the log stay
        # bounded over a long run too.
        engine._maybe_prune(end)

    def _per_customer(
        self, window: list[tuple[datetime, Item]], merges: list[_Merge]
    ) -> _PerCustomer | None:
        """The window's inputs by customer, each customer's in stream order, when it may be
        decided customer by customer; None when an event id two customers share ties them
        (which one is the duplicate depends on the order across customers).

        With merges, the inputs of the customers they tie are kept apart, with their places,
        to be decided around the merges (``_around_merges``): those of the merges' customers,
        by customer, and in one list those of every customer with an input at the instant of
        a merge (or of the latest one before the window): a record made at that instant takes
        a count the merge sets for it (``Engine._erased``), or not, by which comes first."""
        merged: set[str] = set()
        at_merges: set[str] = set()
        if merges:
            instants = {at for _, at, _ in merges}
            erased = self.engine._erased
            if erased is not None:
                instants.add(erased[0])
            for _, _, merge in merges:
                merged.update((merge.customer_id, merge.anonymous_id))
            key = itemgetter(0)
            for instant in instants:  # the window is in time order
                low = bisect.bisect_left(window, instant, key=key)
                high = bisect.bisect_right(window, instant, lo=low, key=key)
                at_merges.update(item.customer_id for _, item in window[low:high])
            merged -= at_merges
        mine: defaultdict[str, list[tuple[datetime, Item]]] = defaultdict(list)
        owners: dict[str, str] = {}
        in_order: list[tuple[int, tuple[datetime, Item]]] = []
        waiting: dict[str, deque[tuple[int, tuple[datetime, Item]]]] = {
            cid: deque() for cid in merged
        }
        # Where the inputs of the customers merges tie go (none without merges), in one
        # look-up: ``in_order`` for those with an input at a merge's instant, else their own.
        held: dict[str, MutableSequence[tuple[int, tuple[datetime, Item]]]] = dict.fromkeys(
            at_merges, in_order
        )
        held.update(waiting)
        for place, entry in enumerate(window):
            item = entry[1]
            cid = item.customer_id
            if (type(item) is Event or isinstance(item, Event)) and owners.setdefault(
                item.event_id, cid
            ) != cid:  # (a host's subclass of Event claims its id as an Event does)
                return None
            if held:
                inputs = held.get(cid)
                if inputs is not None:
                    inputs.append((place, entry))
                    continue
            mine[cid].append(entry)
        return _PerCustomer(mine, in_order, waiting)

    def _by_customer(
        self, split: _PerCustomer, merges: Sequence[_Merge], end: datetime
    ) -> list[tuple[datetime, str]]:
        """Decide a window customer by customer (``CUSTOMER_CHUNK`` to a transaction), each
        customer's inputs in order (each caught up to ``end``), after the inputs of the
        customers its merges tie, decided around the merges. What one customer's inputs
        decide never depends on another's (but through a merge, or an event id they share:
        see ``_per_customer``), and a customer's record stays in the processor's caches while
        it is decided and written: a month of 100,000 customers takes about 9% less CPU than
        in stream order. Returns the event ids claimed, each customer's in order."""
        claims: list[tuple[datetime, str]] = []
        if merges:
            self._around_merges(split, merges, end, claims)
        self.clock.set(end)
        decide, close = self._input, self._close
        batch = self.storage.batch
        customers = list(split.mine.items())
        for first in range(0, len(customers), CUSTOMER_CHUNK):
            chunk = customers[first:first + CUSTOMER_CHUNK]
            with batch([cid for cid, _ in chunk], end) as sessions:
                for cid, inputs in chunk:
                    decider: Decider | None = None
                    for at, item in inputs:
                        decider = decide(cid, at, item, decider, sessions, claims, None)
                    if decider is not None:
                        close(decider, end, sessions[cid])
        return claims

    def _around_merges(
        self, split: _PerCustomer, merges: Sequence[_Merge], end: datetime,
        claims: list[tuple[datetime, str]],
    ) -> None:
        """Make each of the window's ``merges`` at its place: first the inputs before it of its
        two customers (and of those with inputs at a merge's instant) are decided, in stream
        order, and the two customers caught up to its instant (what falls due then fires first,
        as before an event), as a live engine's worker on time leaves them; then the engine's
        ``identify``. The inputs after their last merge are decided up to ``end``."""
        engine = self.engine
        in_order, waiting = split.in_order, split.waiting
        done = 0
        for place, at, merge in merges:
            upto = done
            while upto < len(in_order) and in_order[upto][0] < place:
                upto += 1
            before = in_order[done:upto]
            done = upto
            for cid in {merge.customer_id, merge.anonymous_id}:
                inputs = waiting.get(cid)
                while inputs and inputs[0][0] < place:
                    before.append(inputs.popleft())
            self._decide_placed(before, at, claims, (merge.customer_id, merge.anonymous_id))
            self.clock.set(at)
            self.tally.add(engine.identify(
                merge.customer_id, merge.attributes, unset=merge.unset,
                timezone=merge.timezone, locale=merge.locale, anonymous_id=merge.anonymous_id,
            ))
        after = in_order[done:]
        for inputs in waiting.values():
            after.extend(inputs)
        self._decide_placed(after, end, claims)

    def _decide_placed(
        self, placed: list[tuple[int, tuple[datetime, Item]]], end: datetime,
        claims: list[tuple[datetime, str]], caught_up: Sequence[str] = (),
    ) -> None:
        """Decide ``placed`` inputs (with their places in the window) in stream order, up to
        ``end`` (see ``_in_order``)."""
        if not placed and not caught_up:
            return
        placed.sort(key=itemgetter(0))
        entries = [entry for _, entry in placed]
        self._in_order(entries, {item.customer_id for _, item in entries}, end, None, claims,
                       caught_up=caught_up)

    def _in_order(
        self, window: list[tuple[datetime, Item]], customer_ids: set[str], end: datetime,
        sent: Mapping[str, Message] | None,
        claims: deque[tuple[datetime, str]] | list[tuple[datetime, str]] | None = None, *,
        caught_up: Sequence[str] = (),
    ) -> None:
        """Decide ``window`` in one transaction, in its own order (each customer caught up to
        ``end``, and each of ``caught_up`` too when anything of theirs is due by then)."""
        deciders: dict[str, Decider] = {}
        decide = self._input
        if claims is None:
            claims = self.claims
        with self.storage.batch([*customer_ids, *caught_up], end) as sessions:
            for at, item in window:
                cid = item.customer_id
                decider = decide(cid, at, item, deciders.get(cid), sessions, claims, sent)
                if decider is not None:
                    deciders[cid] = decider
            for cid in caught_up:
                if cid not in deciders and _due_by(self.storage.kept(cid), end):
                    deciders[cid] = self._decider(sessions[cid], end)
            for cid, decider in deciders.items():
                self._close(decider, end, sessions[cid])

    def _input(
        self, cid: str, at: datetime, item: Item, decider: Decider | None,
        sessions: Mapping[str, CustomerSession],
        claims: deque[tuple[datetime, str]] | list[tuple[datetime, str]],
        sent: Mapping[str, Message] | None,
    ) -> Decider | None:
        """Decide one input of customer ``cid`` at ``at``, with the customer's decider so far
        (None: none was needed yet); returns it (made here when the input needs one)."""
        if type(item) is Event or isinstance(item, Event):
            # First what a worker on time would have done by now: fire the wake-ups due by this
            # instant (each at its own instant). They may end or start enrollments, and so
            # change whether this event matters.
            # (The back-test's own storage, which no other thread commits to: read in place.)
            state: RecordView | None = (
                decider.state if decider is not None else self.storage.kept(cid)
            )
            wake = state.wake_at if state is not None else None  # _due_by, inline
            caught_up = wake is not None and wake <= at
            if caught_up:
                if decider is None:
                    decider = self._decider(sessions[cid], at)
                    state = decider.state
                decider.catch_up(at, worker=True)
                # A record a merge emptied is somebody's again at an input: the event's own
                # catch-up (which finds nothing more due) says so, as live.
                marks = decider.state.marks
                caught_up = not (marks and MERGED_AWAY in marks)
            # Then what Engine.handle_event skips, skip: it opens no transaction, so it claims
            # no event id.
            if not self.registry.matters_to(state, item.name):
                return decider
            # Event ids claimed at their own instants, and forgotten once
            # ``Retention.event_ids`` has passed since (``_forget``), as a live engine decides
            # at each input's instant and forgets at its prunes; stamped at the window's end by
            # the storage, an id would be kept for up to a window longer.
            event_id = item.event_id
            claimed = self.claimed
            claimed_at = claimed.get(event_id)
            if claimed_at is not None and at - claimed_at <= self.keep:
                return decider  # a duplicate changes nothing
            claimed[event_id] = at
            claims.append((at, event_id))
            if decider is None:
                decider = self._decider(sessions[cid], at)
            if sent:
                decider.sent = sent
            decider.on_event(item, at, caught_up=caught_up)
            return decider
        if decider is None:
            decider = self._decider(sessions[cid], at)
        decider.update_profile(item, at)
        return decider

    @staticmethod
    def _close(decider: Decider, end: datetime, session: CustomerSession) -> None:
        """Whatever falls due by the window's end fires now, at its own instant, so that
        run_due after the window has nothing left to do for this customer (one with nothing
        due is left alone, as a worker would leave them); then the record is written."""
        state = decider.state
        if _due_by(state, end):
            decider.catch_up(end, worker=True)
        if decider.dirty:
            state = decider.state
            state.revision = max(state.revision, 0)
            session.save(state, decider.messages, decider.activities)

    def _forget(self, now: datetime, fresh: list[tuple[datetime, str]]) -> None:
        """Forget the event ids claimed longer than ``Retention.event_ids`` before ``now`` (as
        a prune at ``now`` does: a live engine prunes at most ``prune_every`` later), then
        remember the ``fresh`` claims (a window's, in any order, none before those
        remembered) that are not already forgotten too."""
        claims, claimed = self.claims, self.claimed
        cut = now - self.keep
        while claims and claims[0][0] < cut:
            at, event_id = claims.popleft()
            if claimed.get(event_id) == at:  # else claimed again since
                del claimed[event_id]
        if claims or not fresh:
            kept = fresh  # (none is before those still remembered)
        else:
            # A long window's first claims are often past already: forgotten (in any order:
            # only an id's latest claim is forgotten) rather than sorted and queued.
            kept = []
            for claim in fresh:
                at, event_id = claim
                if at >= cut:
                    kept.append(claim)
                elif claimed.get(event_id) == at:
                    del claimed[event_id]
        # Queued in the order they were claimed, to be forgotten in it.
        kept.sort(key=itemgetter(0))
        claims.extend(kept)

    def hand_over_claims(self) -> None:
        """Give the storage the event ids the run still remembers, with their instants, so the
        engine a result returns knows them as a live one would."""
        self.storage.add_claims([(at, event_id) for at, event_id in self.claims
                                 if self.claimed.get(event_id) == at])

    def _decider(self, session: CustomerSession, at: datetime) -> Decider:
        # The engine's own: a record it makes at the instant of a merge takes the count the
        # merge gave the record it emptied (``CustomerState.erasures``), as live.
        return self.engine._decider(session, self.registry, at, outcome=self.outcome)

    def _change(self, at: datetime, change: OperatorChange, position: int) -> None:
        """Apply an operator's change at ``at``, as the engine applies it live: after what
        falls due before ``at`` (wake-ups, retries, schedule occurrences, each at its own
        instant), then what a worker on time does right after it. Errors name the change by
        ``position``."""
        self._run_schedules(at, before=True)
        if self.counters is None:
            self._on_time(at, before=True)
        else:
            wake = self.storage.next_wake_at()
            if wake is not None and wake < at:
                self._due(at - _TICK)  # each at its own instant, all before ``at``
        self.clock.set(at)
        engine = self.engine
        where = f"input #{position} ({type(change).__name__} at {at.isoformat()})"
        try:
            if isinstance(change, Publish):
                if isinstance(change.definitions, Definitions):
                    self._count_named(change.definitions)
                engine.publish(change.definitions, running=change.running)
            elif isinstance(change, PauseJourney):
                engine.pause_journey(change.journey_id)
            elif isinstance(change, Withdraw):
                engine.withdraw(**attrs.asdict(change, recurse=False))
            else:
                self.tally.add(engine.resume_journey(change.journey_id))
        except DefinitionError as exc:
            raise DefinitionError(
                [Problem(f"{where} / {p.location}", p.message) for p in exc.problems]
            ) from exc
        except UnknownJourneyError as exc:
            raise UnknownJourneyError(f"{where}: {exc}") from exc
        except JourneyNotPausedError as exc:
            raise JourneyNotPausedError(exc.journey_id, exc.resumed_at, f"{where}: ") from exc
        # The windows after it decide by the definitions it left.
        self.registry = engine._sync()
        # A worker on time runs right after it: what falls due at ``at`` fires, a schedule
        # occurrence at ``at`` (or the latest one a resumed journey missed) runs, and segments
        # a publish changed are evaluated for every customer, all at ``at``.
        if self.counters is None:
            self._on_time(at)
        self._run_due(at)
        self.next_run = next_schedule_run(engine)

    def _identify(self, at: datetime, merge: Identify) -> None:
        """Make an identity merge at ``at`` by the engine's own ``identify``, as live, between
        two windows: after what falls due by ``at`` (wake-ups, retries, schedule occurrences,
        each at its own instant; those at ``at`` itself first, as before an event)."""
        self._run_schedules(at)
        if self.counters is None:
            self._on_time(at)
        else:
            self._due(at)
        self.clock.set(at)
        self.tally.add(self.engine.identify(
            merge.customer_id, merge.attributes, unset=merge.unset, timezone=merge.timezone,
            locale=merge.locale, anonymous_id=merge.anonymous_id,
        ))

    def _count_named(self, definitions: Definitions) -> None:
        """Counting channels and counted actions for those ``definitions`` name that the run
        has none for, when the channels or actions are the run's own (the caller's must cover
        what a publish names, as a live engine's must)."""
        engine = self.engine
        own = self.own_channels
        if own is not None:
            for name in channels_named(definitions):
                if name not in engine.channels:
                    own[name] = _CountingChannel()
                    engine.channels[name] = own[name]
        if self.own_actions:
            new = [name for name in named_in_steps(definitions, Action, "action")
                   if name not in engine.actions]
            if new:
                engine._add_actions(dict.fromkeys(new, _count_call))

    def _run_schedules(self, limit: datetime, *, before: bool = False) -> None:
        """Run every schedule occurrence due by ``limit`` (or only before it), each at its own
        instant, in order (``Engine.run_due`` at that instant: wake-ups due by then fire
        first)."""
        while self.next_run is not None and (
            self.next_run < limit if before else self.next_run <= limit
        ):
            at = self.next_run
            if self.counters is None:
                self._on_time(at, before=True)
            self.clock.set(at)
            self._run_due(at)
            self.next_run = next_schedule_run(self.engine)

    def _due(self, at: datetime) -> None:
        if self.counters is None:
            self._on_time(at)
            return
        # Only when something is due: a call for nothing costs more than the look-up.
        wake = self.storage.next_wake_at()
        if wake is not None and wake <= at:
            self._run_due(at)

    def _run_due(self, at: datetime) -> None:
        """``Engine.run_due(at)``, timed and counted."""
        began = time.perf_counter()
        outcome = self.engine.run_due(at)
        self.due_seconds += time.perf_counter() - began
        self.tally.add(outcome)

    def _on_time(self, limit: datetime, *, before: bool = False) -> None:
        """What a worker that is never late does up to ``limit`` (or only before it), for the
        caller's channels and actions only: the run's own never fail."""
        fire_on_time(self.engine, self.clock, limit, before=before, run_due=self._run_due)


def fire_on_time(
    engine: Engine, clock: ManualClock, limit: datetime, *, before: bool = False,
    run_due: Callable[[datetime], object] | None = None,
) -> None:
    """What a worker that is never late does up to ``limit`` (or only before it): fire each
    wake-up and retry each delivery at its own instant, moving ``clock`` there, and deliver
    what that wrote then. ``run_due`` stands for ``engine.run_due`` (a caller's that counts)."""
    storage = engine.storage
    fire = run_due if run_due is not None else engine.run_due
    seen = None
    while True:
        wake, retry = storage.next_wake_at(), storage.next_outbox_at()
        if (wake, retry) == seen:
            return  # nothing that can still happen at this instant (a leased wake-up)
        seen = wake, retry
        at = retry if wake is None or (retry is not None and retry < wake) else wake
        if at is None or at > limit or (before and at == limit):
            return
        # One due before the clock (overdue when the caller came) fires now, as late.
        at = max(at, clock.now())
        clock.set(at)
        if wake is not None and wake <= at:
            fire(at)
        if retry is not None and retry <= at:
            engine.dispatch_pending(at)


def _in_range(at: datetime, what: str) -> datetime:
    """``at``, or ``UsageError`` when it is outside the range event timestamps must fall in:
    past its end the engine overflows adding durations, and a paused journey's held wake-ups
    (due at ``MAX_TIMESTAMP``, after every real instant) would fire again and again."""
    if not MIN_TIMESTAMP <= at < MAX_TIMESTAMP:
        raise UsageError(
            f"{what} {at.isoformat()} is outside the range a back-test can run in: "
            f"{TIMESTAMP_RANGE}, as event timestamps"
        )
    return at


def _warn_nothing_read(
    inputs: Iterable[BacktestInput], unread: datetime | None, until: datetime | None
) -> None:
    """A run that read nothing is most often a mistake that would otherwise look like
    journeys that did nothing: say why, as far as can be told."""
    if unread is not None and until is not None:
        why = (f"the first input is stamped {unread.isoformat()}, after until "
               f"({until.isoformat()})")
    elif isinstance(inputs, Sized):
        why = f"the {type(inputs).__name__} of inputs is empty"
    else:
        why = (f"the {type(inputs).__name__} of inputs yielded nothing: a generator or iterator "
               "can be read only once, and one read before (by an earlier back-test, or by "
               "counting it) yields nothing")
    log.warning("backtest read no inputs: %s", why)


def _no_progress(done: int, total: int | None, now: datetime) -> None:
    pass


def _fast_until(stop: datetime, next_run: datetime | None) -> datetime | None:
    """The latest instant an input can be decided at without running a schedule occurrence
    first: ``stop``, or the instant before ``next_run`` (None when there is no such instant)."""
    if next_run is None:
        return stop
    if next_run <= _BEGINNING:
        return None
    return min(stop, next_run - _TICK)  # instants are whole microseconds


def _due_by(state: RecordView | None, at: datetime) -> bool:
    if state is None:
        return False
    wake = state.wake_at
    return wake is not None and wake <= at


_TIMED = (ProfileUpdate, Identify, Publish, PauseJourney, ResumeJourney, Withdraw)


def _timed(
    item: object, position: int
) -> tuple[datetime, ProfileUpdate | Identify | OperatorChange]:
    if (
        isinstance(item, tuple) and len(item) == 2
        and isinstance(item[0], datetime) and isinstance(item[1], _TIMED)
    ):
        at = ensure_aware(item[0], f"the instant of input #{position}")
        if isinstance(item[1], PauseJourney | ResumeJourney) and not isinstance(
            item[1].journey_id, str
        ):
            raise UsageError(
                f"input #{position}: the journey id of {type(item[1]).__name__} must be a "
                f"string, got {item[1].journey_id!r}"
            )
        return at, item[1]
    if isinstance(item, _TIMED[1:]):
        article = "an" if isinstance(item, Identify) else "a"
        raise UsageError(
            f"input #{position} is {article} {type(item).__name__} without an instant: pair "
            f"it with the instant it applies at, as (datetime, {type(item).__name__}(...))"
        )
    kind = type(item)
    # A class of the caller's own may share a name with cjo's (their own Event): name its
    # module, and show the value, so the input can be found.
    name = kind.__name__ if kind.__module__ == "builtins" else (
        f"{kind.__module__}.{kind.__qualname__}"
    )
    raise UsageError(
        f"input #{position} is a {name} {short(item)}: a back-test reads cjo's Event, "
        "ProfileUpdate, (datetime, ProfileUpdate), (datetime, Identify) and (datetime, Publish "
        "| PauseJourney | ResumeJourney | Withdraw) items"
    )


def _count_call(call: Message) -> None:
    """The default action of a back-test: called for nothing (the run counts the call)."""


def _logged(
    storage: InMemoryStorage, journey_ids: list[str]
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Entries and goals per journey, and ends per status, as the activity log counts them
    (what the reports read)."""
    entered: Counter[str] = Counter()
    ended: Counter[str] = Counter()
    goals: Counter[str] = Counter()
    for journey_id in journey_ids:
        for c in storage.activity_counts(journey_id):
            if c.kind == "entered":
                entered[journey_id] += c.count
            elif c.kind == "goal":
                goals[journey_id] += c.count
            elif c.kind in TERMINAL_STATUSES:
                ended[c.kind] += c.count
    return (dict(sorted(entered.items())), dict(sorted(ended.items())),
            dict(sorted(goals.items())))


def _latest_journeys(definitions: Definitions) -> list[Journey]:
    latest: dict[str, Journey] = {}
    for journey in definitions.journeys:
        old = latest.get(journey.id)
        if old is None or old.version < journey.version:
            latest[journey.id] = journey
    return list(latest.values())
