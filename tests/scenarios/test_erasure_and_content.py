"""Erasure leaves no trace of the customer in the activity log, segment sizes stay right after
an erasure and within the log's retention, locales are matched whatever their spelling, and a
required field that renders empty is a render failure."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import monotonic
from typing import Any

import pytest

from cjo import (
    Channel,
    ContentItem,
    ControlGroup,
    DeliveryResult,
    Engine,
    Event,
    EventTrigger,
    Exit,
    Journey,
    ManualClock,
    RecordingChannel,
    Retention,
    Segment,
    Send,
    SQLiteStorage,
    Variant,
    Wait,
    WaitUntilDate,
    attr,
)
from cjo.analytics import JourneyReport, journey_report
from cjo.channels.base import Message
from cjo.errors import UsageError
from cjo.model.governance import in_control_group
from cjo.model.steps import RenderErrorPolicy
from tests.helpers import Factory, held_by_engine, held_strings

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


class _Dead(Channel):
    """Every message fails for good, with an error naming the recipient."""

    def send(self, message: Message) -> DeliveryResult:
        return DeliveryResult.permanent(f"no mailbox {message.customer_id}", unreachable=True)


def _erasure_engine(storage_factory: Factory, clock: ManualClock) -> Engine:
    engine = Engine(storage=storage_factory(), clock=clock,
                    channels={"email": RecordingChannel(), "sms": _Dead()})
    item = ContentItem("hi", (Variant("email", {"subject": "Hi {{ profile.name }}", "text": "x"}),
                              Variant("sms", {"text": "Hi {{ profile.name }}"})))
    engine.publish(
        content=[item], segments=[Segment("named", attr("name") != "")],
        journeys=[Journey("j", trigger=EventTrigger("go"), entry="s", steps={
            "s": Send("hi", "email", next="s2"), "s2": Send("hi", "sms", next="w"),
            "w": Wait(DAY, next=None),
        })],
    )
    return engine


def test_erasure_leaves_no_customer_id_in_the_activity_log(storage_factory: Factory) -> None:
    clock = ManualClock(T0)
    engine = _erasure_engine(storage_factory, clock)
    engine.identify("ann@x", {"name": "Ann"})
    engine.identify("bob@x", {"name": "Bob"})
    for cid in ("ann@x", "bob@x"):
        engine.handle_event(Event(customer_id=cid, name="go", timestamp=clock.now(),
                                  event_id=f"go-{cid}"))
    engine.run_due()
    counts_before = sum(c.count for c in engine.storage.activity_counts("j"))
    before = engine.activities(T0, T0 + DAY, customer_id="ann@x")
    assert any(a.kind == "unreachable" for a in before)

    engine.erase_customer("ann@x")

    log = engine.activities(T0 - DAY, T0 + DAY)
    assert not [a for a in log if "ann" in f"{a.customer_id} {a.enrollment_id} {a.detail}"]
    erased = [a for a in log if a.customer_id == ""]
    # Hers, then the end of the enrollment she was still in and her exit from the segment she
    # was in, logged as she went.
    assert [(a.kind, a.detail) for a in erased[len(before):]] == [
        ("removed", None), ("segment_exited", "named"),
    ]
    assert len(erased) == len(before) + 2
    # One enrollment keeps one pseudonym: its entries can still be followed through.
    journey_ids = {a.enrollment_id for a in erased if a.journey_id == "j"}
    assert len(journey_ids) == 1 and next(iter(journey_ids)).startswith("erased:")
    assert [a.detail for a in erased if a.kind == "unreachable"] == [None]
    # Another customer's entries are untouched, and every entry still counts.
    assert any("no mailbox bob@x" in (a.detail or "") for a in log if a.customer_id == "bob@x")
    assert sum(c.count for c in engine.storage.activity_counts("j")) == counts_before + 1
    assert not [c for c in engine.storage.activity_counts("j")
                if c.kind == "unreachable" and c.detail is None and c.count != 1]


def test_erasure_leaves_no_free_text_of_the_customer_and_nothing_in_the_engine(
    storage_factory: Factory,
) -> None:
    # A withheld message and a removal carry the host's words (a block reason, a removal
    # reason), and the engine keeps rendered texts by the values they read (a name).
    clock = ManualClock(T0)
    engine = _erasure_engine(storage_factory, clock)
    engine.dispatch = "deferred"
    for n, (cid, name) in enumerate((("ann@x", "Annabel"), ("bob@x", "Bob"))):
        engine.identify(cid, {"name": name})
        engine.handle_event(Event(customer_id=cid, name="go", timestamp=clock.now(),
                                  event_id=f"go-{n}"))  # the host's ids stay: not the customer's
        engine.block_channel(cid, "email", f"bounced: {cid}")
    engine.dispatch_pending()
    engine.remove_from_journey("ann@x", reason="asked by ann@x")
    log = engine.activities(T0 - DAY, T0 + DAY, customer_id="ann@x")
    assert {a.kind for a in log} >= {"withheld", "removed"}

    engine.erase_customer("ann@x")

    log = engine.activities(T0 - DAY, T0 + DAY)
    assert [a.detail for a in log if "ann@x" in (a.detail or "")] == []
    assert {(a.kind, a.detail) for a in log if a.customer_id == ""} >= {
        ("withheld", None), ("removed", None)}
    assert ("withheld", "channel blocked: bounced: bob@x") in {
        (a.kind, a.detail) for a in log if a.customer_id == "bob@x"}
    held = [(where, text) for where, text in held_strings(held_by_engine(engine))
            if "ann@x" in text or "Annabel" in text]
    assert held == []



def test_erasure_leaves_no_date_of_the_customer_in_the_activity_log(
    storage_factory: Factory,
) -> None:
    # A date wait whose date is past logs the instant (``date_past``): read from the profile
    # (a birth date), it is the customer's, and goes with them.
    clock = ManualClock(T0)
    engine = Engine(storage=storage_factory(), clock=clock,
                    channels={"email": RecordingChannel()})
    engine.publish(journeys=[Journey("bday", trigger=EventTrigger("go"), entry="w", steps={
        "w": WaitUntilDate(attr("birth_date"), next=None, on_past="late"),
        "late": Exit("past"),
    })])
    engine.identify("ann", {"birth_date": "1987-06-19"})
    engine.handle_event(Event(customer_id="ann", name="go", timestamp=clock.now(), event_id="g"))
    log = engine.activities(T0 - DAY, T0 + DAY, customer_id="ann")
    assert [a.detail for a in log if a.kind == "date_past"] == ["1987-06-19T00:00:00+00:00"]
    counts = engine.storage.activity_counts("bday")

    engine.erase_customer("ann")

    log = engine.activities(T0 - DAY, T0 + DAY)
    assert [(a.kind, a.detail) for a in log if a.kind == "date_past"] == [("date_past", None)]
    assert not [a for a in log if "1987" in (a.detail or "")]
    assert engine.storage.activity_counts("bday") == counts


class _ErasedWhileSending(Channel):
    """The customer is erased (by another thread, say) while the provider has their message,
    and the provider's answer quotes their address."""

    def __init__(self, result: DeliveryResult) -> None:
        self.engine: Engine | None = None
        self.result = result

    def send(self, message: Message) -> DeliveryResult:
        assert self.engine is not None
        self.engine.erase_customer(message.customer_id)
        return self.result


@pytest.mark.parametrize("result", [
    DeliveryResult.transient("421 zqann@example.org: try later"),
    DeliveryResult.permanent("550 <zqann@example.org>: no such mailbox"),
    DeliveryResult.permanent("554 rejected for zqann@example.org", unreachable=False),
], ids=["transient", "unreachable", "permanent"])
def test_a_result_for_a_customer_erased_while_sending_logs_nothing_of_them(
    storage_factory: Factory, result: DeliveryResult, caplog: pytest.LogCaptureFixture,
) -> None:
    # The result changes nothing (no retry, no dead letter): a log line saying otherwise
    # would also write the erased customer's id and address again.
    channel = _ErasedWhileSending(result)
    engine = Engine(storage=storage_factory(), clock=ManualClock(T0),
                    channels={"email": channel})
    channel.engine = engine
    engine.publish(
        content=[ContentItem("hi", (Variant("email", {"subject": "Hi", "text": "x"}),))],
        journeys=[Journey("j", trigger=EventTrigger("go"), entry="s",
                          steps={"s": Send("hi", "email")})],
    )
    engine.identify("zqcust", {"email": "zqann@example.org"})
    caplog.set_level("DEBUG", logger="cjo")
    engine.handle_event(Event(customer_id="zqcust", name="go", timestamp=T0, event_id="g1"))
    assert [r.getMessage() for r in caplog.records
            if "zqcust" in r.getMessage() or "zqann" in r.getMessage()] == []
    assert engine.export_customer("zqcust")["messages"] == []
    assert engine.dead_letters() == []


def test_a_message_claimed_before_its_customer_is_erased_is_dropped_unnamed(
    storage_factory: Factory, caplog: pytest.LogCaptureFixture,
) -> None:
    # Another thread erases the customer right after a worker claimed their message.
    storage = storage_factory()
    email = RecordingChannel()
    engine = Engine(storage=storage, clock=ManualClock(T0), channels={"email": email},
                    dispatch="deferred")
    engine.publish(
        content=[ContentItem("hi", (Variant("email", {"subject": "Hi", "text": "x"}),))],
        journeys=[Journey("j", trigger=EventTrigger("go"), entry="s",
                          steps={"s": Send("hi", "email")})],
    )
    engine.identify("zqcust", {"email": "zqann@example.org"})
    engine.handle_event(Event(customer_id="zqcust", name="go", timestamp=T0, event_id="g1"))
    claim = storage.claim_outbox

    def claim_then_erase(*args: Any, **kwargs: Any) -> Any:
        claimed = claim(*args, **kwargs)
        if claimed:
            engine.erase_customer("zqcust")
        return claimed

    storage.claim_outbox = claim_then_erase  # type: ignore[method-assign]
    caplog.set_level("DEBUG", logger="cjo")
    engine.dispatch_pending()
    assert email.messages == []
    assert [r.getMessage() for r in caplog.records if "zqcust" in r.getMessage()] == []
    assert "1 messages not sent" in caplog.text


@pytest.mark.parametrize("checkpointed", [False, True])
def test_sqlite_erasure_leaves_no_bytes_of_the_customer_in_the_files(
    tmp_path: Path, checkpointed: bool,
) -> None:
    # Rows deleted by a query are still bytes on disk: in free pages of the database file,
    # and in the write-ahead log's frames of the pages written before, which a checkpoint
    # copies back but leaves in the log file until they are overwritten.
    path = tmp_path / "erase.db"
    clock = ManualClock(T0)
    engine = _erasure_engine(lambda: SQLiteStorage(str(path)), clock)
    engine.dispatch = "deferred"
    engine.identify("bob@x", {"name": "Bob"})
    engine.identify("zqcust", {"name": "Zqannabel", "email": "zqann@example.org"})
    engine.handle_event(Event(customer_id="zqcust", name="go", timestamp=clock.now(),
                              event_id="go-1"))
    engine.dispatch_pending()
    engine.block_channel("zqcust", "email", "bounced: zqann@example.org")

    engine.erase_customer("zqcust")
    if checkpointed:  # as SQLite's automatic checkpoint, or an operator, would
        with closing(sqlite3.connect(path)) as other:
            other.execute("PRAGMA wal_checkpoint(PASSIVE)")

    files = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    assert [(name, needle) for name, data in files.items()
            for needle in (b"zqcust", b"zqann@example.org", b"Zqannabel") if needle in data] == []
    assert engine.customer_state("bob@x") is not None
    engine.storage.close()


def test_sqlite_erasure_does_not_hold_writers_for_a_reader_of_an_old_snapshot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # Emptying the log waits for readers while other writers wait for it: not for the whole
    # busy timeout (30 s by default). The erasure itself is done; the log is emptied later.
    path = tmp_path / "erase.db"
    engine = Engine(storage=SQLiteStorage(str(path)), clock=ManualClock(T0),
                    channels={"email": RecordingChannel()})
    engine.identify("zqcust", {"email": "zqann@example.org"})
    with closing(sqlite3.connect(path, isolation_level=None)) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM customers").fetchall()
        engine.identify("bob", {"email": "bob@example.org"})  # the reader's snapshot is old
        started = monotonic()
        engine.erase_customer("zqcust")
        assert monotonic() - started < 10
        reader.execute("COMMIT")
    assert "could not be emptied" in caplog.text
    assert engine.customer_state("zqcust") is None
    engine.erase_customer("bob")  # no reader now: the log is emptied, hers too
    assert [f.name for f in tmp_path.iterdir() if b"zqann@example.org" in f.read_bytes()] == []
    engine.storage.close()


def test_a_customer_erased_and_back_within_one_instant_reuses_no_id(
    storage_factory: Factory,
) -> None:
    # Downstream providers de-duplicate on idempotency keys: a returning customer's messages
    # must not carry the keys of the erased one's, even at the very same instant.
    clock = ManualClock(T0)
    email = RecordingChannel()
    engine = Engine(storage=storage_factory(), clock=clock, channels={"email": email})
    item = ContentItem("hi", (Variant("email", {"subject": "Hi", "text": "x"}),))
    engine.publish(content=[item], journeys=[
        Journey("welcome", trigger=EventTrigger("signed_up"), entry="s",
                steps={"s": Send("hi", "email")}),
        Journey("promo", entry="s", steps={"s": Send("hi", "email")}),  # entered by the API
    ])
    enrollments: list[set[str]] = []
    for life in range(3):
        engine.handle_event(Event(customer_id="ann", name="signed_up", timestamp=T0,
                                  event_id=f"signup-{life}"))
        engine.start_journey("promo", "ann")
        enrollments.append({m.enrollment_id for m in email.for_customer("ann")})
        engine.erase_customer("ann")
    keys = [m.idempotency_key for m in email.messages]
    assert len(keys) == 6 and len(set(keys)) == 6, keys
    assert [len(ids) for ids in enrollments] == [2, 4, 6]
    # Feedback on a message of the last one finds its journey and step.
    last = email.messages[5]
    engine.handle_event(Event(customer_id="ann", name="opened", timestamp=T0, event_id="o1",
                              properties={"message_id": last.idempotency_key}))
    (opened,) = (a for a in engine.activities(T0, T0 + DAY, customer_id="ann")
                 if a.kind == "opened")
    assert (opened.enrollment_id, opened.step_id) == (last.enrollment_id, "s")
    # A customer erased and back later than that instant is numbered as any other.
    clock.advance(timedelta(microseconds=1))
    engine.handle_event(Event(customer_id="ann", name="signed_up", timestamp=clock.now(),
                              event_id="signup-later"))
    (later,) = (m for m in email.messages[6:])
    assert later.enrollment_id == "welcome:ann:1." + format(
        (clock.now() - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1), "x")


def test_segment_sizes_count_an_erased_member_until_the_erasure(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    engine = _erasure_engine(storage_factory, clock)
    engine.identify("ann@x", {"name": "Ann"})
    clock.advance(DAY)
    engine.identify("bob@x", {"name": "Bob"})
    clock.advance(DAY)
    engine.erase_customer("ann@x")
    sizes = engine.segment_sizes(["named"], T0 - DAY, every=DAY)["named"]
    # Ann's entry stays in the log (anonymous) and still counts while she was a member; her
    # exit, logged as she is erased, ends it there.
    assert [s.size for s in sizes] == [0, 1, 2, 1]
    assert engine.segment_count("named") == 1
    (exit_,) = (a for a in engine.activities(T0, clock.now() + DAY)
                if a.kind == "segment_exited")
    assert (exit_.at, exit_.customer_id, exit_.detail) == (clock.now(), "", "named")
    clock.advance(DAY)
    later = engine.segment_sizes(["named"], T0, every=DAY)["named"]
    assert [s.size for s in later] == [1, 2, 1, 1]


def test_segment_sizes_before_an_erasure_stay_the_same_whoever_else_is_erased(
    storage_factory: Factory,
) -> None:
    # Erased members' changes cannot be told apart in the log: each still counts.
    clock = ManualClock(T0)
    engine = _erasure_engine(storage_factory, clock)
    for name in ("ann", "bob", "cid", "dee"):
        engine.identify(f"{name}@x", {"name": name})
        clock.advance(DAY)
    engine.identify("bob@x", {"name": ""})  # bob leaves before he is erased
    clock.advance(DAY)
    before = [s.size for s in engine.segment_sizes(["named"], T0, every=DAY)["named"]]
    assert before == [1, 2, 3, 4, 3, 3]
    for cid in ("ann@x", "bob@x", "cid@x"):
        engine.erase_customer(cid)
    sizes = [s.size for s in engine.segment_sizes(["named"], T0, every=DAY)["named"]]
    assert sizes == [*before[:-1], 1]
    assert engine.segment_count("named") == 1


def test_erasing_a_customer_in_no_segment_logs_no_exit(storage_factory: Factory) -> None:
    clock = ManualClock(T0)
    engine = _erasure_engine(storage_factory, clock)
    engine.identify("ann@x", {"name": ""})
    engine.erase_customer("ann@x")
    engine.erase_customer("nobody")
    assert [a.kind for a in engine.activities(T0, T0 + DAY) if not a.journey_id] == []


def _report(engine: Engine) -> JourneyReport:
    (journey,) = (j for j in engine.definitions.journeys if j.id == "j")
    return journey_report(engine.storage, journey)


def test_an_erased_customer_in_a_journey_counts_removed_not_active(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    engine = _erasure_engine(storage_factory, clock)
    for cid in ("ann@x", "bob@x"):
        engine.identify(cid, {"name": cid[:3]})
        engine.handle_event(Event(customer_id=cid, name="go", timestamp=clock.now(),
                                  event_id=f"go-{cid}"))
    assert _report(engine).active == 2
    clock.advance(timedelta(hours=1))
    engine.erase_customer("ann@x")
    report = _report(engine)
    # Ann left while waiting: no longer active, ended as removed; Bob waits on.
    assert (report.entered, report.active, report.removed) == (2, 1, 1)
    (end,) = (a for a in engine.activities(T0, T0 + DAY) if a.kind == "removed")
    assert (end.at, end.customer_id, end.step_id, end.detail) == (clock.now(), "", "w", None)
    assert end.enrollment_id.startswith("erased:")
    clock.advance(2 * DAY)
    engine.run_due()
    report = _report(engine)
    assert (report.active, report.completed, report.removed) == (0, 1, 1)


def test_a_journey_report_is_the_same_once_its_log_is_pruned_or_its_customers_erased(
    storage_factory: Factory,
) -> None:
    # The control group's withheld sends stay counted apart, as its entries and goals are.
    clock = ManualClock(T0)
    engine = Engine(storage=storage_factory(), clock=clock, channels={"email": RecordingChannel()},
                    retention=Retention(activity=30 * DAY))
    welcome = Journey(id="welcome", trigger=EventTrigger("go"), entry="m",
                      steps={"m": Send("hi", "email")})
    engine.publish(journeys=[welcome], control_group=ControlGroup(50, "cg"),
                   content=[ContentItem("hi", (Variant("email", {"subject": "Hi", "text": "x"}),))])
    customers = [f"c{i}" for i in range(8)]
    for cid in customers:
        engine.handle_event(Event(customer_id=cid, name="go", timestamp=T0, event_id=f"go-{cid}"))
    control = sum(in_control_group(cid, ControlGroup(50, "cg")) for cid in customers)
    before = journey_report(engine.storage, welcome)
    assert 0 < before.control == control < len(customers)
    assert before.suppressed == {"control": control}
    clock.advance(60 * DAY)
    assert engine.prune().activity > 0
    assert journey_report(engine.storage, welcome) == before
    # An erasure blanks free-text details in the log it keeps: not the control group's.
    late = next(f"d{i}" for i in range(99) if in_control_group(f"d{i}", ControlGroup(50, "cg")))
    engine.handle_event(Event(customer_id=late, name="go", timestamp=clock.now(), event_id="g"))
    engine.erase_customer(late)
    assert journey_report(engine.storage, welcome).suppressed == {"control": control + 1}


def test_an_erased_member_who_entered_before_the_log_start_counts(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    engine = Engine(storage=storage_factory(), clock=clock,
                    retention=Retention(activity=10 * DAY))
    engine.publish(segments=[Segment("vip", attr("vip") == True)])  # noqa: E712
    engine.identify("ann@x", {"vip": True})
    clock.advance(12 * DAY)
    engine.identify("ann@x", {"vip": False})
    clock.advance(DAY)
    engine.erase_customer("ann@x")
    engine.prune()  # the entry, 13 days old, is gone; the exit stays
    start = T0 + 3 * DAY
    sizes = engine.segment_sizes(["vip"], start, every=5 * DAY)["vip"]
    assert [(s.at - T0, s.size) for s in sizes] == [(3 * DAY, 1), (8 * DAY, 1), (13 * DAY, 0)]


def test_segment_sizes_refuse_instants_older_than_the_activity_log(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    engine = Engine(storage=storage_factory(), clock=clock,
                    retention=Retention(activity=10 * DAY))
    engine.publish(segments=[Segment("s", attr("x") > 0)])
    engine.identify("a", {"x": 1})
    clock.advance(5 * DAY)
    engine.identify("b", {"x": 1})
    clock.advance(15 * DAY)
    engine.prune()
    earliest = (clock.now() - 10 * DAY).isoformat()
    with pytest.raises(UsageError, match=re.escape(f"known from {earliest}")):
        engine.segment_sizes(["s"], T0 - DAY, every=5 * DAY)
    sizes = engine.segment_sizes(["s"], clock.now() - 10 * DAY, every=5 * DAY)["s"]
    assert [s.size for s in sizes] == [2, 2, 2]


# --- locales -----------------------------------------------------------------------------------

_BYE = ContentItem("bye", (
    Variant("sms", {"text": "Bye"}),
    Variant("sms", {"text": "Au revoir"}, locale="fr"),
    Variant("sms", {"text": "Bonjour CA"}, locale="FR_ca"),
))


@pytest.mark.parametrize(("locale", "text"), [
    ("fr-CA", "Bonjour CA"), ("fr-ca", "Bonjour CA"), ("FR-ca", "Bonjour CA"),
    ("fr_CA", "Bonjour CA"), ("FR", "Au revoir"), ("Fr-be", "Au revoir"), ("pt-BR", "Bye"),
])
def test_locales_match_whatever_their_case_or_separator(locale: str, text: str) -> None:
    variant = _BYE.variant_for("sms", locale)
    assert variant is not None and variant.fields["text"] == text


def test_locales_are_normalised_where_profiles_and_variants_are_made() -> None:
    from cjo import ProfileUpdate
    from cjo.errors import DefinitionError, InvalidEventError

    assert [v.locale for v in _BYE.variants] == [None, "fr", "fr-CA"]
    assert ProfileUpdate("a", locale="zh_hant_tw").locale == "zh-Hant-TW"
    clock = ManualClock(T0)
    sms = RecordingChannel()
    engine = Engine(channels={"sms": sms}, clock=clock)
    engine.publish(content=[_BYE], journeys=[
        Journey("j", trigger=EventTrigger("go"), entry="s", steps={"s": Send("bye", "sms")}),
    ])
    engine.identify("a", locale="FR-ca")
    profile = engine.profile("a")
    assert profile is not None and profile.locale == "fr-CA"
    outcome = engine.handle_event(Event(customer_id="a", name="go", timestamp=T0, event_id="1"))
    assert [(m.fields["text"], m.locale) for m in outcome.messages] == [("Bonjour CA", "fr-CA")]
    for bad in ("fr ca", "12", "fr--CA", "français"):
        with pytest.raises(InvalidEventError, match="profile locale must be a locale tag"):
            engine.identify("a", locale=bad)
    profile = engine.profile("a")
    assert profile is not None and profile.locale == "fr-CA"
    bad_item = ContentItem("x", (Variant("sms", {"text": "x"}, locale="fr ca"),))
    with pytest.raises(DefinitionError, match=r"locale must be a locale tag.*'fr ca'"):
        engine.publish(content=[bad_item])
    # One locale spelt two ways is one variant defined twice.
    twice = ContentItem("x", (Variant("sms", {"text": "x"}, locale="fr-CA"),
                              Variant("sms", {"text": "y"}, locale="fr_ca")))
    with pytest.raises(DefinitionError, match="defined 2 times"):
        engine.publish(content=[twice])


# --- required fields that render empty ---------------------------------------------------------


@pytest.mark.parametrize("policy", ["skip", "exit", "retry"])
def test_a_required_field_that_renders_empty_is_a_render_failure(
    policy: RenderErrorPolicy,
) -> None:
    clock = ManualClock(T0)
    channel = RecordingChannel()
    engine = Engine(channels={"sms": channel, "email": channel}, clock=clock)
    item = ContentItem("c", (
        Variant("sms", {"text": "{% if profile.vip %}VIP deal{% endif %}"}),
        Variant("email", {"subject": "{{ profile.nick | default: ' ' }}", "text": "x"}),
    ))
    engine.publish(content=[item], journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="s", steps={
            "s": Send("c", "sms", next="e", on_render_error=policy),
            "e": Send("c", "email"),
        })])
    engine.identify("vip", {"vip": True})
    outcome = engine.handle_event(Event(customer_id="a", name="go", timestamp=T0, event_id="a"))
    assert not outcome.messages
    action = {"skip": "skipped", "exit": "exited", "retry": "retrying"}[policy]
    assert (outcome.failures[0].reason, outcome.failures[0].action) == (
        "content 'c' / sms / field 'text': renders empty", action)
    if policy == "skip":  # the email's subject is only whitespace
        assert outcome.failures[1].reason == "content 'c' / email / field 'subject': renders empty"
    sent = engine.handle_event(Event(customer_id="vip", name="go", timestamp=T0, event_id="v"))
    assert [m.fields.get("text") for m in sent.messages][:1] == ["VIP deal"]


def test_an_email_with_neither_html_nor_text_is_a_render_failure() -> None:
    engine = Engine(channels={"email": RecordingChannel()}, clock=ManualClock(T0))
    item = ContentItem("c", (Variant("email", {
        "subject": "Hi", "text": "{{ profile.text | default: '' }}",
        "html": "{% if profile.vip %}<p>VIP</p>{% endif %}",
    }),))
    engine.publish(content=[item], journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="s", steps={"s": Send("c", "email")})])
    outcome = engine.handle_event(Event(customer_id="a", name="go", timestamp=T0, event_id="a"))
    assert not outcome.messages
    [failure] = outcome.failures
    assert "renders empty" in failure.reason and "'html' and 'text'" in failure.reason


def test_now_in_a_template_is_the_instant_being_decided_not_the_wall_clock(
    storage_factory: Factory,
) -> None:
    # Liquid's "now" reads the machine's local wall clock: a back-test or a test on a manual
    # clock would render today's date, in whatever zone the server runs in.
    clock = ManualClock(datetime(2031, 6, 1, 23, 30, tzinfo=UTC))
    email = RecordingChannel()
    engine = Engine(storage=storage_factory(), channels={"email": email}, clock=clock)
    stamp = "{{ 'now' | date: '%Y-%m-%d %H:%M' }} / {{ 'today' | date: '%Y-%m-%d' }}"
    engine.publish(
        content=[ContentItem("stamped", (Variant("email", {"subject": stamp, "text": "x"}),))],
        journeys=[Journey("j", trigger=EventTrigger("go"), entry="first", steps={
            "first": Send("stamped", "email", next="wait"),
            "wait": Wait(DAY, next="second"),
            "second": Send("stamped", "email"),
        })],
    )
    engine.handle_event(Event("ann", "go", clock.now(), event_id="go-1"))
    clock.advance(days=3)
    engine.run_due()  # the wake-up is due a day after entry: that is its instant
    assert [m.fields["subject"] for m in email.messages] == [
        "2031-06-01 23:30 / 2031-06-01", "2031-06-02 23:30 / 2031-06-02",
    ]
