"""Arguments the Engine's constructor and public methods refuse: each gets a cjo error naming
what is wrong, raised before any transaction, so nothing is stored and nothing hangs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cjo import (
    ApiTrigger,
    Channel,
    Clock,
    ContentItem,
    DeliveryResult,
    Engine,
    Event,
    EventTrigger,
    InMemoryStorage,
    Journey,
    ManualClock,
    Message,
    Profile,
    ProfileUpdate,
    RecordingChannel,
    Segment,
    Send,
    SQLiteStorage,
    Topic,
    Variant,
    Wait,
    attr,
)
from cjo.analytics import segment_sizes as analytics_segment_sizes
from cjo.errors import (
    ClockError,
    DefinitionError,
    InvalidEventError,
    UnknownJourneyError,
    UsageError,
)
from cjo.storage.base import Storage
from cjo.testing import advance as advance_engine
from cjo.testing import run_until

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
DAY = timedelta(days=1)

NOTE = ContentItem("note", variants=(Variant("email", {"subject": "S", "text": "t"}),))
API = Journey("api", trigger=ApiTrigger(), entry="w",
              steps={"w": Wait(DAY, next="m"), "m": Send("note", "email")})
ON_X = Journey("j", trigger=EventTrigger("x"), entry="w", steps={"w": Wait(DAY)})


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    store: Storage = (
        InMemoryStorage() if request.param == "memory" else SQLiteStorage(tmp_path / "s.db")
    )
    with store:
        yield store


def _engine(storage: Storage | None = None, clock: Clock | None = None) -> Engine:
    engine = Engine(storage=storage, channels={"email": RecordingChannel()},
                    clock=clock or ManualClock(T0))
    engine.publish(journeys=[API, ON_X], content=[NOTE])
    return engine


# --- journey context ---------------------------------------------------------------------------


@pytest.mark.parametrize(("context", "message"), [
    ({"x": float("nan")}, "'x' is nan"),
    ({"x": Decimal("1.5")}, "is a Decimal"),
    ({"x": {1}}, "builtins.set"),
    ({"x": datetime(2026, 1, 1)}, "naive datetime"),
    ({"x": object()}, "builtins.object"),
    ({1: 2}, "names must be strings"),
    ([1, 2], "journey context must be a mapping"),
    ({"x": {"$dt": "zz"}}, 'only key is "\\$dt"'),
    ({"x": 2**80}, "outside the stored integer range"),
])
def test_a_context_that_cannot_be_stored_alike_is_refused_and_nothing_is_stored(
    storage: Storage, context: Any, message: str
) -> None:
    engine = _engine(storage)
    with pytest.raises(InvalidEventError, match=message):
        engine.start_journey("api", "c", context)
    assert engine.customer_state("c") is None


def test_a_valid_context_comes_back_as_given(storage: Storage) -> None:
    engine = _engine(storage)
    context = {"cart": {"at": T0, "items": ["a", 1, 2.5, None, True]}, "$dt": 5}
    engine.start_journey("api", "c", context)
    state = engine.customer_state("c")
    assert state is not None
    assert state.enrollments[0].context == context


# --- the clock and instants --------------------------------------------------------------------


class NaiveClock(Clock):
    def now(self) -> datetime:
        return datetime(2026, 3, 2, 9)


class TextClock(Clock):
    def now(self) -> datetime:
        return "2026-03-02"  # type: ignore[return-value]


@pytest.mark.parametrize("clock", [NaiveClock(), TextClock()], ids=["naive", "text"])
@pytest.mark.parametrize("call", [
    lambda e: e.identify("c", {"a": 1}),
    lambda e: e.handle_event(Event("c", "x", T0)),
    lambda e: e.handle_events([Event("c", "x", T0)]),
    lambda e: e.publish(journeys=[ON_X]),
    lambda e: e.run_due(),
    lambda e: e.start_journey("api", "c"),
    lambda e: e.set_consent("c", subscribed=False),
], ids=["identify", "handle_event", "handle_events", "publish", "run_due", "start", "consent"])
def test_a_clock_reading_that_is_not_an_aware_datetime_is_refused_naming_the_clock(
    storage: Storage, clock: Clock, call: Callable[[Engine], object]
) -> None:
    _engine(storage)  # publish with a good clock first
    engine = Engine(storage=storage, channels={"email": RecordingChannel()}, clock=clock)
    with pytest.raises(ClockError, match=f"{type(clock).__name__}.now\\(\\) must return"):
        call(engine)
    # Nothing was stored, and the storage goes on serving a well-behaved engine.
    good = Engine(storage=storage, channels={"email": RecordingChannel()},
                  clock=ManualClock(T0))
    assert good.customer_state("c") is None
    good.identify("c", {"a": 1})
    assert good.profile("c") is not None


@pytest.mark.parametrize("method", ["run_due", "prune", "dispatch_pending"])
@pytest.mark.parametrize("now", ["2026", 20260302, datetime(2026, 3, 2)],
                         ids=["str", "int", "naive"])
def test_a_now_that_is_not_an_aware_datetime_is_a_clock_error(method: str, now: object) -> None:
    engine = _engine()
    with pytest.raises(ClockError, match="now must be"):
        getattr(engine, method)(now)


@pytest.mark.parametrize("method", ["run_due", "dispatch_pending"])
@pytest.mark.parametrize("at", [datetime.max.replace(tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC),
                                datetime(1899, 12, 31, tzinfo=UTC)],
                         ids=["max", "9000", "1899"])
@pytest.mark.parametrize("paused", [False, True], ids=["running", "paused"])
def test_a_pass_outside_the_timestamp_range_is_a_clock_error(
    storage: Storage, method: str, at: datetime, paused: bool
) -> None:
    # "Run everything that is left" with the clock at the end of time: a lease added to it
    # overflowed (a bare OverflowError), and from 9000 on a paused journey's held wake-ups,
    # due at 9000-01-01, were claimed and held again for ever.
    engine = _engine(storage)
    engine.start_journey("api", "c")
    if paused:
        engine.pause_journey("api")
        engine.run_due(T0 + 2 * DAY)  # the wait falls due while paused: held
    for how in ("given", "clock"):
        clock = ManualClock(at)
        probe = Engine(storage=storage, channels={"email": RecordingChannel()}, clock=clock)
        with pytest.raises(ClockError, match=(
            r"cannot run due work at .*: the engine works from 1900-01-01 up to, not "
            r"including, 9000-01-01 \(UTC\), as event timestamps"
        )):
            getattr(engine, method)(at) if how == "given" else getattr(probe, method)()
    assert [e.status for e in engine.enrollments("c")] == ["active"]


@pytest.mark.parametrize(("start", "end"), [
    (datetime(2026, 3, 1), datetime(2026, 3, 3)),
    (T0, None),
    ("2026-03-01", "2026-03-03"),
], ids=["naive", "none", "str"])
def test_activity_bounds_must_be_aware_datetimes(
    storage: Storage, start: object, end: object
) -> None:
    engine = _engine(storage)
    engine.handle_event(Event("c", "x", T0))
    assert engine.activities(T0, T0 + DAY)  # the log has entries
    with pytest.raises(ClockError, match="must be"):
        engine.activities(start, end)  # type: ignore[arg-type]


def test_activity_bounds_out_of_range_in_utc_are_refused(storage: Storage) -> None:
    # "Everything" written with the host's zone: datetime.min at +02:00 is before year 1 in
    # UTC, datetime.max at -02:00 after 9999. Refused as ClockError, not a bare OverflowError.
    engine = _engine(storage)
    engine.handle_event(Event("c", "x", T0))
    first, last = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    assert engine.activities(first, last) == engine.activities(T0, T0 + DAY)
    east, west = timezone(timedelta(hours=2)), timezone(timedelta(hours=-2))
    with pytest.raises(ClockError, match=r"^start 0001-01-01T00:00:00\+02:00 is outside"):
        engine.activities(datetime.min.replace(tzinfo=east), last)
    with pytest.raises(ClockError, match=r"^end 9999-12-31T23:59:59.999999-02:00 is outside"):
        engine.activities(first, datetime.max.replace(tzinfo=west))


def test_activity_bounds_given_the_wrong_way_round_are_refused(storage: Storage) -> None:
    engine = _engine(storage)
    engine.handle_event(Event("c", "x", T0))
    assert engine.activities(T0, T0) == []  # an empty window, not a mistake
    with pytest.raises(UsageError, match="end 2026-03-02T09:00:00\\+00:00 is before start "
                                         "2026-03-03T09:00:00\\+00:00"):
        engine.activities(T0 + DAY, T0)


@pytest.mark.parametrize("filters", [{"journey_id": 5}, {"customer_id": ""}])
def test_activity_filters_must_be_ids(filters: dict[str, Any]) -> None:
    with pytest.raises(InvalidEventError):
        _engine().activities(T0, T0 + DAY, **filters)


@pytest.mark.parametrize(("advance", "message"), [
    (lambda c: c.advance("1h"), "ManualClock.advance needs a timedelta, got str '1h'"),
    (lambda c: c.advance(3600), "ManualClock.advance needs a timedelta, got int 3600"),
    (lambda c: c.advance(timedelta(hours=1), minutes=30), "a timedelta or keyword arguments, "
                                                          "not both"),
    (lambda c: c.advance(hours="1"), "ManualClock.advance: not a duration"),
    (lambda c: c.advance(hour=1), "ManualClock.advance: not a duration"),
    (lambda c: c.advance(days=10**10), "ManualClock.advance: not a duration"),
    (lambda c: c.advance(timedelta(days=999_999_999)), "past the last instant a datetime holds"),
], ids=["str", "seconds", "both", "str hours", "unknown unit", "too many days", "overflow"])
def test_a_manual_clock_advanced_by_what_is_not_a_duration_stays_where_it_is(
    advance: Callable[[ManualClock], object], message: str
) -> None:
    clock = ManualClock(T0)
    with pytest.raises(ClockError, match=message):
        advance(clock)
    assert clock.now() == T0
    assert clock.advance(timedelta(hours=1)) == clock.advance(minutes=0) == T0 + timedelta(hours=1)


@pytest.mark.parametrize("step", [{"delta": timedelta(days=999_999_999)}, {"days": 999_999_999}],
                         ids=["timedelta", "keywords"])
def test_advancing_a_test_engine_past_the_last_instant_is_a_clock_error(
    step: dict[str, Any],
) -> None:
    engine = Engine(storage=InMemoryStorage(), clock=ManualClock(T0))
    with pytest.raises(ClockError, match=r"^advance cannot move .* past the last instant"):
        advance_engine(engine, **step)
    assert engine.clock.now() == T0


@pytest.mark.parametrize(("start", "until"), [(T0, datetime(9500, 1, 1, tzinfo=UTC)), (
    datetime(1850, 1, 1, tzinfo=UTC), datetime(1899, 1, 1, tzinfo=UTC))], ids=["after", "before"])
def test_running_a_test_engine_outside_the_engines_range_leaves_its_clock_where_it_was(
    start: datetime, until: datetime,
) -> None:
    engine = Engine(storage=InMemoryStorage(), clock=ManualClock(start))
    with pytest.raises(ClockError, match=rf"^run_until cannot go to {until.year}-01-01.*up to"):
        run_until(engine, until)
    assert engine.clock.now() == start
    engine.clock.set(T0)
    with pytest.raises(ClockError, match=r"^advance cannot go to 9500-01-01.*up to"):
        advance_engine(engine, datetime(9500, 1, 1, tzinfo=UTC) - T0)
    assert advance_engine(engine, hours=1).messages == ()


# --- the constructor ---------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "message"), [
    ({"due_batch_size": 0}, "due_batch_size must be an int >= 1"),
    ({"due_batch_size": -1}, "due_batch_size must be an int >= 1"),
    ({"due_batch_size": True}, "due_batch_size must be an int >= 1"),
    ({"wake_lease": timedelta(0)}, "wake_lease must be a positive timedelta"),
    ({"prune_every": timedelta(0)}, "prune_every must be a positive timedelta"),
    ({"future_tolerance": None}, "future_tolerance must be a non-negative timedelta"),
    ({"future_tolerance": -DAY}, "future_tolerance must be a non-negative timedelta"),
    ({"keep_ended": -1}, "keep_ended must be an int >= 0"),
    ({"recipient_attributes": "email"}, "recipient_attributes must be a list or tuple"),
    ({"recipient_attributes": ["email", 3]}, "recipient_attributes must hold"),
    ({"limits": "x"}, "limits must be a cjo Limits"),
    ({"retention": DAY}, "retention must be a cjo Retention"),
    ({"render": "yes"}, "render must be True or False"),
    ({"channels": [RecordingChannel()]}, "channels must be a mapping"),
    ({"actions": ["a"]}, "actions must be a mapping"),
    ({"scorers": ["a"]}, "scorers must be a mapping"),
    ({"contact_attributes": ["email"]}, "contact_attributes must be a mapping"),
    ({"channel_types": ["email"]}, "channel_types must be a mapping"),
    ({"storage": "sqlite:///x.db"}, "storage must be a cjo Storage.*open_storage"),
    ({"clock": T0}, "clock must be a cjo Clock"),
    ({"clock": "now"}, "clock must be a cjo Clock"),
])
def test_bad_constructor_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Engine(**options)


@pytest.mark.parametrize(("channels", "error", "message"), [
    ({"email": 5}, UsageError, "channel 'email' must be a cjo Channel .* got int 5$"),
    ({"email": print}, UsageError,
     "channel 'email' must be a cjo Channel .*; a function is an action: register it with "
     "Engine\\(actions=...\\)"),
    ({5: RecordingChannel()}, InvalidEventError, "channel name must be a non-empty string"),
    # '*' is every channel to a consent statement: an unsubscribe from it would be from all.
    ({"*": RecordingChannel()}, UsageError,
     "channel name '\\*' stands for every channel in consent statements"),
], ids=["int", "function", "name", "wildcard"])
def test_a_channel_that_is_not_one_is_refused_naming_it(
    channels: dict[Any, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Engine(channels=channels)


class _AsyncSms(Channel):
    async def send(self, message: Message) -> DeliveryResult:  # type: ignore[override]
        return DeliveryResult()


class _AsyncCall:
    async def __call__(self, message: Message) -> None:
        return None


async def _async_action(message: Message) -> None:
    return None


def test_an_async_channel_or_action_is_refused_naming_it() -> None:
    # Called without being awaited, each send would return a coroutine: every message would
    # fail five times and end a dead letter.
    with pytest.raises(UsageError, match=(
        "channel 'sms': send is a coroutine function \\(async def\\), which cjo calls "
        "without awaiting"
    )):
        Engine(channels={"sms": _AsyncSms()})
    for action in (_async_action, _AsyncCall()):
        with pytest.raises(UsageError, match=(
            "action 'open_ticket' is a coroutine function \\(async def\\)"
        )):
            Engine(actions={"open_ticket": action})  # type: ignore[dict-item]


@pytest.mark.parametrize("channel_type", ["emial", "SMS", 5])
def test_a_channel_class_of_an_unknown_type_is_refused_naming_it(channel_type: object) -> None:
    # As Engine(channel_types=...) refuses one: a typo would leave an email channel free-form,
    # its content never checked for a subject.
    class Mail(RecordingChannel):
        pass

    Mail.channel_type = channel_type  # type: ignore[assignment]
    with pytest.raises(UsageError, match=(
        f"channel 'mail': channel_type must be a channel type \\(email, in_app, push, sms, "
        f"webhook\\) or None, got {channel_type!r}"
    )):
        Engine(channels={"mail": Mail()})


def test_zero_ended_enrollments_kept_is_accepted() -> None:
    assert Engine(keep_ended=0).keep_ended == 0


# --- identify ----------------------------------------------------------------------------------


def test_unset_given_as_a_bare_string_is_refused_not_split_into_letters(
    storage: Storage
) -> None:
    engine = _engine(storage)
    engine.identify("c", {"e": 1, "m": 2, "email": "x@y"})
    with pytest.raises(InvalidEventError, match="unset must be attribute names"):
        engine.identify("c", unset="email")
    profile = engine.profile("c")
    assert profile is not None
    assert profile.attributes == {"e": 1, "m": 2, "email": "x@y"}
    engine.identify("c", unset=["email"])
    assert engine.profile("c").attributes == {"e": 1, "m": 2}  # type: ignore[union-attr]


# --- publish -----------------------------------------------------------------------------------


def _journey(version: int = 1) -> Journey:
    return Journey("k", version=version, trigger=EventTrigger("x"), entry="w",
                   steps={"w": Wait(DAY * version)})


@pytest.mark.parametrize(("arguments", "message"), [
    ({"segments": [Segment("s", attr("a") == 1), Segment("s", attr("a") == 2)]},
     "segment 's': defined 2 times; segment ids must be unique"),
    ({"content": [NOTE, ContentItem("note", variants=(
        Variant("email", {"subject": "T", "text": "u"}),))]},
     "content 'note': defined 2 times; content ids must be unique"),
    ({"journeys": [_journey(), Journey("k", trigger=EventTrigger("y"), entry="w",
                                       steps={"w": Wait(DAY)})]},
     "journey 'k' v1: defined 2 times"),
    ({"topics": [Topic("news"), Topic("news", default="opt_in")]},
     "topic 'news': defined 2 times"),
    # Collections of the wrong shape.
    ({"journeys": _journey()}, "publish journeys: expected a list or tuple of Journey"),
    ({"journeys": "abc"}, "publish journeys: expected a list or tuple of Journey"),
    ({"journeys": ["abc"]}, "publish journeys\\[0\\]: expected a Journey, got str"),
    ({"segments": 5}, "publish segments: expected a list or tuple of Segment"),
    ({"content": {"note": NOTE}}, "publish content: expected a list or tuple of ContentItem"),
    ({"definitions": [_journey()]}, "publish definitions: expected a Definitions"),
    ({"running": ["k"]}, "publish running: expected a mapping"),
], ids=["segments", "content", "journeys", "topics", "one journey", "str", "str item", "int",
        "mapping", "list as definitions", "running"])
def test_ids_given_twice_or_collections_of_the_wrong_shape_are_refused_unpublished(
    arguments: dict[str, Any], message: str
) -> None:
    engine = _engine()
    generation = engine.generation
    with pytest.raises(DefinitionError, match=message):
        engine.publish(**arguments)
    assert engine.generation == generation


def test_the_same_definitions_given_once_still_publish() -> None:
    engine = _engine()
    assert engine.publish(journeys=(j for j in [_journey()])) == engine.generation


# --- consent and channel blocks ----------------------------------------------------------------


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda e: e.set_consent("c", subscribed=False, topic=5), InvalidEventError,
     "consent topic must be a non-empty string"),
    (lambda e: e.set_consent("c", subscribed="no"), UsageError,
     "subscribed must be True or False"),
    (lambda e: e.set_consent("c", subscribed=True, channel=""), InvalidEventError,
     "consent channel"),
    (lambda e: e.block_channel("c", None), InvalidEventError, "channel must be"),
    (lambda e: e.block_channel("c", {"x": 1}), InvalidEventError, "channel must be"),
    (lambda e: e.block_channel("c", "email", reason=float("nan")), InvalidEventError,
     "block reason must be"),
    (lambda e: e.block_channel("c", "email", reason="x" * 1000), InvalidEventError,
     "block reason is 1000 characters long"),
    (lambda e: e.unblock_channel("c", 5), InvalidEventError, "channel must be"),
    (lambda e: e.remove_from_journey("c", None, reason=object()), InvalidEventError,
     "removal reason must be"),
    (lambda e: e.remove_from_journey("c", 5), InvalidEventError, "journey_id must be"),
], ids=["topic", "subscribed", "channel", "block none", "block dict", "block nan",
        "block long", "unblock", "remove reason", "remove journey"])
def test_bad_consent_and_block_arguments_are_refused_and_nothing_changes(
    storage: Storage, call: Callable[[Engine], object], error: type[Exception], message: str
) -> None:
    engine = _engine(storage)
    engine.identify("c", {"email": "x@y"})
    before = engine.customer_state("c")
    with pytest.raises(error, match=message):
        call(engine)
    assert engine.customer_state("c") == before


# --- page and batch sizes ----------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda e: e.refresh_segments(batch_size=0),
    lambda e: e.handle_events([], batch_size=0),
    lambda e: e.dispatch_pending(limit=-1),
    lambda e: e.dead_letters(limit=0),
    lambda e: e.records_set_aside(limit=0),
], ids=["refresh_segments", "handle_events", "dispatch_pending", "dead_letters",
        "records_set_aside"])
def test_sizes_below_one_are_refused(call: Callable[[Engine], object]) -> None:
    with pytest.raises(UsageError, match="must be an int >= 1"):
        call(_engine())


@pytest.mark.parametrize(("call", "message"), [
    (lambda e: e.handle_events(None), "handle_events takes an iterable of Event and "
                                      "ProfileUpdate items .* got NoneType"),
    (lambda e: e.handle_events(Event("c", "x", T0, event_id="e1")),
     "handle_events takes an iterable .*\\(one event: handle_event\\), got Event"),
    (lambda e: e.dead_letters(after="key"), "after must be the last DeadLetter of the previous "
                                            "page \\(or None\\), got str"),
    (lambda e: e.records_set_aside(after="c"), "after must be the last SetAsideRecord of the "
                                               "previous page \\(or None\\), got str"),
    (lambda e: e.segment_members("s", after=5), "after must be the last customer id of the "
                                                "previous page \\(or None\\), got int"),
    (lambda e: e.segment_sizes("s", T0), "segment_ids must be a list of segment ids, got str"),
    (lambda e: e.segment_sizes(["s"], T0, every=5), "every must be a positive duration \\(a "
                                                   "timedelta\\), got 5"),
    (lambda e: e.segment_sizes(["s"], T0, T0 + timedelta(days=2), every=timedelta(seconds=1)),
     "makes 172,801 instants, more than 105,120: choose a longer every or a shorter span"),
    (lambda e: e.run_worker(max_iterations="2"), "max_iterations must be >= 0 \\(an int"),
    (lambda e: e.run_worker(max_iterations=1, poll_interval="1"), "poll_interval must be >= 0 "
                                                                  "\\(a number of seconds\\)"),
    (lambda e: e.run_worker(max_iterations=1, poll_interval=float("nan")),
     "poll_interval must be >= 0 \\(a number of seconds\\), got nan"),
    (lambda e: e.run_worker(max_iterations=1, stop=True), "stop must be a threading.Event"),
], ids=["handle_events None", "handle_events one event", "dead_letters after",
        "records_set_aside after", "segment_members after", "segment_sizes one id", "segment_sizes every",
        "segment_sizes too many instants",
        "max_iterations", "poll_interval str", "poll_interval nan", "stop"])
def test_arguments_of_the_wrong_kind_are_usage_errors(
    call: Callable[[Engine], object], message: str
) -> None:
    engine = _engine()
    engine.publish(segments=[Segment("s", attr("a") == 1)])
    engine.identify("c", {"a": 1})
    before = engine.customer_state("c")
    with pytest.raises(UsageError, match=message):
        call(engine)
    assert engine.customer_state("c") == before


def test_segment_sizes_reads_segment_ids_given_as_a_generator() -> None:
    engine = _engine()
    engine.publish(segments=[Segment("s", attr("a") == 1)])
    engine.identify("c", {"a": 1})
    ids = (segment.id for segment in engine.definitions.segments)
    assert [size.size for size in engine.segment_sizes(ids, T0)["s"]] == [1]


def test_the_activity_log_of_a_journey_never_published_is_refused(storage: Storage) -> None:
    # A typo would otherwise read as a journey that did nothing.
    engine = _engine(storage)
    engine.handle_event(Event("c", "x", T0, {}, event_id="e1"))
    assert {a.journey_id for a in engine.activities(T0, T0 + DAY, journey_id="j")} == {"j"}
    with pytest.raises(UnknownJourneyError, match="no journey 'J' has been published"):
        engine.activities(T0, T0 + DAY, journey_id="J")


def test_segment_sizes_of_cjo_analytics_refuse_one_segment_id_given_bare(
    storage: Storage,
) -> None:
    engine = _engine(storage)
    engine.publish(segments=[Segment("vip", attr("a") == 1)])
    with pytest.raises(UsageError, match="segment_ids must be a list of segment ids, got str"):
        analytics_segment_sizes(storage, "vip", [T0], T0)


@pytest.mark.parametrize("zone", ["Europe/Pariss", "GMT+2", "../etc/passwd"])
def test_a_time_zone_that_is_not_one_is_refused_not_replaced_by_the_default(zone: str) -> None:
    engine = Engine(clock=ManualClock(T0))
    with pytest.raises(InvalidEventError, match="is not a known IANA time zone"):
        engine.identify("c1", {"plan": "pro"}, timezone=zone)
    with pytest.raises(InvalidEventError, match="is not a known IANA time zone"):
        engine.handle_events([ProfileUpdate("c1", timezone=zone)])
    assert engine.profile("c1") is None  # nothing stored
    engine.identify("c1", timezone="Europe/Paris")
    assert engine.profile("c1") == Profile("c1", {}, "Europe/Paris")


# --- a refused item in a stream ----------------------------------------------------------------


@pytest.mark.parametrize(("bad", "message"), [
    ("junk", "item #2: expected a cjo.Event or cjo.ProfileUpdate, got str"),
    (Event("c3", "x", T0 + DAY, event_id="late"), "item #2: event 'late' is stamped"),
    (Event("c3", "unsubscribed", T0, {"topic": "typo"}, "u1"), "item #2: topic 'typo' is not"),
], ids=["not an event", "stamped ahead", "undeclared topic"])
def test_handle_events_names_the_refused_item_and_handles_every_item_before_it(
    storage: Storage, bad: object, message: str
) -> None:
    engine = _engine(storage)
    engine.publish(topics=[Topic("news")])
    items = [Event("c1", "x", T0, event_id="e1"), ProfileUpdate("c2", {"a": 1}), bad,
             Event("c4", "x", T0, event_id="e4")]
    with pytest.raises(InvalidEventError, match=message):
        engine.handle_events(items, batch_size=500)  # all in one group
    assert [e.journey_id for e in engine.enrollments("c1")] == ["j"]
    assert engine.profile("c2") == Profile("c2", {"a": 1})
    assert engine.customer_state("c3") is None
    assert engine.customer_state("c4") is None
    # The consumer resumes at the refused item, set aside: nothing is handled twice.
    outcome = engine.handle_events(items[3:])
    assert [e.customer_id for e in outcome.entered] == ["c4"]


def test_a_custom_clock_reading_naive_time_is_told_to_add_a_zone() -> None:
    class LocalClock(Clock):
        def now(self) -> datetime:
            return datetime(2026, 1, 1, 9, 0)

    engine = Engine(storage=InMemoryStorage(), clock=LocalClock())
    with pytest.raises(ClockError) as caught:
        engine.run_due()
    assert str(caught.value) == (
        "LocalClock.now() must return a timezone-aware datetime, got a naive one "
        "(2026-01-01T09:00:00): give it a tzinfo, e.g. datetime.now(UTC)"
    )
