"""Under random consent changes, bounces, contact details, journeys and clock advances, no
message ever goes out that its consent, a frequency cap or quiet hours forbid: checked from the
outcomes against a plain model of the rules, and against the activity log, on the in-memory and
SQLite adapters (and PostgreSQL when a server is configured)."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cjo import (
    Activity,
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    FrequencyCap,
    Journey,
    ManualClock,
    Message,
    QuietHours,
    RecordingChannel,
    Send,
    Storage,
    Topic,
    Variant,
    Wait,
)
from cjo.storage.memory import InMemoryStorage
from cjo.storage.sqlite import SQLiteStorage
from cjo.timezones import customer_zone
from tests.helpers import postgres_storage

T0 = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)  # the Paris DST change falls in the runs
CUSTOMERS = ("c1", "c2", "c3")
ZONES = (None, "Europe/Paris", "America/New_York")
TOPICS = {"news": False, "deals": True}  # topic -> needs an explicit opt-in
QUIET_START, QUIET_END = time(22), time(7)
DAY = timedelta(days=1)
EMAIL_CAP, DAY_CAP = 1, 2


def _content(cid: str, topic: str | None) -> ContentItem:
    return ContentItem(cid, (Variant("email", {"subject": cid, "text": cid}), Variant("sms", {"text": cid})),
                       topic=topic)


DEFINITIONS: dict[str, Any] = {
    "journeys": [
        Journey("news", "first", {
            "first": Send("news", "email", fallbacks=("sms",), when_capped="defer",
                          next="wait"),
            "wait": Wait(timedelta(hours=6), next="again"),
            "again": Send("news", "sms", next=None),
        }, trigger=EventTrigger("go_news")),
        Journey("blast", "mail", {"mail": Send("news", "email")},
                 trigger=EventTrigger("go_blast")),
        Journey("deals", "offer", {
            "offer": Send("deal", "sms", fallbacks=("email",), when_capped="exit"),
        }, trigger=EventTrigger("go_deals")),
        Journey("receipt", "mail", {
            "mail": Send("receipt", "email", transactional=True, next="text"),
            "text": Send("receipt", "sms", transactional=True),
        }, trigger=EventTrigger("order")),
    ],
    "content": [_content("news", "news"), _content("deal", "deals"),
                _content("receipt", None)],
    "topics": [Topic("news"), Topic("deals", default="opt_in")],
    "caps": [FrequencyCap("email_per_day", EMAIL_CAP, per=DAY, channel="email"),
             FrequencyCap("per_calendar_day", DAY_CAP, period="calendar_day")],
    "quiet_hours": [QuietHours("night", QUIET_START, QUIET_END,
                               spread=timedelta(minutes=20))],
}

channels_ = st.sampled_from(["email", "sms"])
journey_events = st.tuples(st.just("event"), st.sampled_from(CUSTOMERS),
                           st.sampled_from(["go_news", "go_blast", "go_blast", "go_deals",
                                            "order"]))
actions = st.one_of(
    # Journeys start most often, so caps and quiet hours have something to bite on.
    journey_events, journey_events, journey_events,
    st.tuples(st.sampled_from(["subscribed", "unsubscribed"]), st.sampled_from(CUSTOMERS),
              st.sampled_from([None, "news", "deals"]), st.none() | channels_),
    st.tuples(st.sampled_from(["channel_blocked", "channel_unblocked", "hard_bounce",
                               "complained"]), st.sampled_from(CUSTOMERS), channels_),
    st.tuples(st.just("phone"), st.sampled_from(CUSTOMERS), st.booleans()),
    st.tuples(st.just("advance"), st.integers(1, 10 * 60)),
    st.tuples(st.just("advance"), st.integers(1, 10 * 60)),
)
Setup = tuple[list[str | None], list[bool], int]
setups = st.tuples(
    st.lists(st.sampled_from(ZONES), min_size=3, max_size=3),
    st.lists(st.booleans(), min_size=3, max_size=3),
    st.integers(0, 23),  # the hour the run starts at
)


class Model:
    """The rules written plainly: every statement kept, the latest covering one decides."""

    def __init__(self) -> None:
        self.statements: dict[str, list[tuple[datetime, int, str, str, bool]]] = {}
        self.blocked: dict[str, set[str]] = {c: set() for c in CUSTOMERS}
        # Channels blocked by a hard bounce: the address's, lifted by a new one.
        self.bounced: dict[str, set[str]] = {c: set() for c in CUSTOMERS}
        self.phone: dict[str, bool] = {}
        self.zone: dict[str, str | None] = {}
        self.sent: dict[str, list[Message]] = {c: [] for c in CUSTOMERS}
        self._n = 0

    def say(self, customer: str, topic: str | None, channel: str | None, yes: bool,
            at: datetime) -> None:
        self._n += 1
        self.statements.setdefault(customer, []).append(
            (at, self._n, topic or "*", channel or "*", yes))

    def apply(self, what: str, customer: str, *args: Any) -> None:
        if what == "say":
            self.say(customer, *args)
        elif what == "phone":
            if args[0] and not self.phone[customer] and "sms" in self.bounced[customer]:
                self.blocked[customer].discard("sms")  # a new number: the bounce was the old
                self.bounced[customer].discard("sms")
            self.phone[customer] = args[0]
        elif what == "bounce":
            if args[0] not in self.blocked[customer]:  # a block keeps its reason
                self.blocked[customer].add(args[0])
                self.bounced[customer].add(args[0])
        else:
            self.bounced[customer].discard(args[0])
            if args[1]:
                self.blocked[customer].add(args[0])
            else:
                self.blocked[customer].discard(args[0])

    def allows(self, customer: str, topic: str | None, channel: str) -> bool:
        opt_in = TOPICS.get(topic or "", False)
        covering = [s for s in self.statements.get(customer, [])
                    if s[2] in ("*", topic) and s[3] in ("*", channel)]
        if not covering:
            return not opt_in
        latest = max(covering, key=lambda s: (s[0], s[1]))
        if latest[4] and opt_in and latest[2] == "*":
            named = [s for s in covering if s[2] == topic]
            return bool(named) and max(named, key=lambda s: (s[0], s[1]))[4]
        return latest[4]

    def check(self, message: Message) -> None:
        c, ch = message.customer_id, message.channel
        assert ch not in self.blocked[c], f"sent on a blocked channel: {message}"
        if ch == "sms":
            assert self.phone[c], f"sent by SMS without a phone: {message}"
        if message.transactional:
            return
        topic = {"news": "news", "deal": "deals"}[message.content_id]
        assert self.allows(c, topic, ch), f"sent without consent: {message}"
        zone = customer_zone(self.zone[c])
        local = message.created_at.astimezone(zone).time()
        assert QUIET_END <= local < QUIET_START, f"sent in quiet hours: {message}"
        marketing = [m for m in self.sent[c] if not m.transactional] + [message]
        at = message.created_at
        emails = [m for m in marketing if m.channel == "email" and at - DAY < m.created_at <= at]
        assert ch != "email" or len(emails) <= EMAIL_CAP, f"email cap exceeded: {message}"
        day = at.astimezone(zone).date()
        same_day = [m for m in marketing if m.created_at.astimezone(zone).date() == day]
        assert len(same_day) <= DAY_CAP, f"calendar-day cap exceeded: {message}"


def _run(storage: Storage, setup: Setup, steps: list[tuple[Any, ...]]) -> None:
    zones, phones, hour = setup
    clock = ManualClock(T0 + timedelta(hours=hour))
    channels = {"email": RecordingChannel(), "sms": RecordingChannel()}
    engine = Engine(storage, channels=channels, clock=clock,  # type: ignore[arg-type]
                    contact_attributes={"sms": "phone"})
    engine.publish(**DEFINITIONS)
    model = Model()
    for customer, zone, phone in zip(CUSTOMERS, zones, phones, strict=True):
        engine.identify(customer, {"phone": "+1555"} if phone else {}, timezone=zone)
        model.zone[customer], model.phone[customer] = zone, phone
    ids = iter(range(10**6))

    def event(customer: str, name: str, **props: Any) -> Any:
        return engine.handle_event(Event(customer_id=customer, name=name,
                                         timestamp=clock.now(), properties=props,
                                         event_id=f"e{next(ids)}"))

    for action in steps:
        kind = action[0]
        now = clock.now()
        change: tuple[Any, ...] = ()  # applied to the model after the call's messages are checked
        if kind == "advance":
            clock.advance(timedelta(minutes=action[1]))
            out = engine.run_due()
        elif kind == "event":
            out = event(action[1], action[2])
        elif kind in ("subscribed", "unsubscribed"):
            _, customer, topic, channel = action
            props = {k: v for k, v in (("topic", topic), ("channel", channel)) if v}
            out = event(customer, kind, **props)
            change = ("say", customer, topic, channel, kind == "subscribed", now)
        elif kind == "phone":
            _, customer, has = action
            out = engine.identify(customer, {"phone": "+1555"} if has else {},
                                  unset=() if has else ("phone",))
            change = ("phone", customer, has)
        else:
            _, customer, channel = action
            if kind == "hard_bounce":
                out = event(customer, "bounced", channel=channel, type="hard")
            else:
                out = event(customer, kind, channel=channel)
            if kind == "complained":
                change = ("say", customer, None, channel, False, now)
            elif kind == "hard_bounce":
                change = ("bounce", customer, channel)
            else:
                change = ("block", customer, channel, kind != "channel_unblocked")
        # Messages of a call were decided before its own consent change: due wake-ups are
        # fired first, and no journey starts on a consent event.
        for message in sorted(out.messages, key=lambda m: m.created_at):
            model.check(message)
            model.sent[message.customer_id].append(message)
        if change:
            model.apply(*change)
    # The activity log tells the same story as the outcomes, and every policy decision in
    # it names its reason.
    activities = engine.activities(T0 - DAY, clock.now() + DAY)
    sent = sorted((a.customer_id, a.at, a.channel) for a in activities if a.kind == "sent")
    assert sent == sorted(
        (m.customer_id, m.created_at, m.channel) for ms in model.sent.values() for m in ms)
    for a in activities:
        if a.kind in ("suppressed", "fallback", "capped", "quiet_hours"):
            assert a.detail and a.channel, a
    _every_send_is_decided(engine, activities)


_FINAL = ("sent", "suppressed", "send_failed", "send_skipped")


def _every_send_is_decided(engine: Engine, activities: list[Activity]) -> None:
    """Each arrival at a Send step ends in exactly one recorded decision (sent, suppressed,
    skipped or exited by a rule), unless it is still deferred."""
    sends = {(j.id, sid) for j in DEFINITIONS["journeys"] for sid, st_ in j.steps.items()
             if isinstance(st_, Send)}
    runs: Counter[tuple[str, str | None]] = Counter()
    decided: Counter[tuple[str, str | None]] = Counter()
    for a in activities:
        key = (a.enrollment_id, a.step_id)
        if a.kind == "step" and (a.journey_id, a.step_id) in sends:
            runs[key] += 1
        elif a.kind in _FINAL or (
            a.kind in ("capped", "quiet_hours") and "deferred" not in (a.detail or "")
        ):
            decided[key] += 1
    for customer in CUSTOMERS:
        state = engine.customer_state(customer)
        for e in state.enrollments if state is not None else ():
            if e.wake_at is not None and (e.journey_id, e.step_id) in sends:
                decided[(e.id, e.step_id)] += 1  # deferred, still to be decided
    assert decided == runs


@contextmanager
def _sqlite() -> Iterator[Storage]:
    with tempfile.TemporaryDirectory() as tmp:
        storage = SQLiteStorage(Path(tmp) / "cjo.db")
        try:
            yield storage
        finally:
            storage.close()


def _runs(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=[
        HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@_runs(60)
@given(setups, st.lists(actions, min_size=10, max_size=40))
def test_no_message_breaks_a_policy_in_memory(
    setup: Setup, steps: list[tuple[Any, ...]],
) -> None:
    _run(InMemoryStorage(), setup, steps)


@_runs(20)
@given(setups, st.lists(actions, min_size=10, max_size=30))
def test_no_message_breaks_a_policy_on_sqlite(
    setup: Setup, steps: list[tuple[Any, ...]],
) -> None:
    with _sqlite() as storage:
        _run(storage, setup, steps)


@_runs(8)
@given(setups, st.lists(actions, min_size=10, max_size=25))
def test_no_message_breaks_a_policy_on_postgres(
    postgres_dsn: str, setup: Setup, steps: list[tuple[Any, ...]],
) -> None:
    with postgres_storage(postgres_dsn, "cjo_prop") as storage:
        _run(storage, setup, steps)


def test_the_model_catches_a_message_sent_without_consent() -> None:
    # The property above can fail: a message the model forbids is reported.
    model = Model()
    model.zone["c1"], model.phone["c1"] = None, True
    model.say("c1", "news", None, False, T0)
    message = Message("k", "c1", "email", "news", {}, "news", 1, "first", "en", T0)
    with pytest.raises(AssertionError, match="without consent"):
        model.check(message)
