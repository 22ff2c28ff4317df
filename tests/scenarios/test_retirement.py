"""Retiring drained journey versions (``Engine.retire_drained``) on every storage adapter: what
counts as drained, what a retired version still answers for (reports, the activity log, the
privacy export, copies of the definitions), withdrawals it no longer blocks, records that turn
up on it, and retirements racing other processes' publishes."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

from cjo import (
    Channel,
    ContentItem,
    DefinitionError,
    DeliveryResult,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    Message,
    RecordingChannel,
    Segment,
    Send,
    UnknownJourneyError,
    Variant,
    VersionChange,
    Wait,
    attr,
    dumps_definitions,
    in_segment,
    loads_definitions,
)
from cjo.analytics.report import journey_report
from cjo.runtime.registry import Registry
from cjo.storage.memory import InMemoryStorage
from tests.helpers import Factory

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
VIP = Segment("vip", attr("plan") == "pro")
NOTE = ContentItem("note", (Variant("email", {"subject": "Hi", "text": "Hello"}),))
#: Version 1 waits, then mails, for VIPs only; version 2 mails everyone at once.
V1 = Journey("onboard", "wait", version=1, trigger=EventTrigger("signed_up"),
             audience=in_segment("vip"),
             steps={"wait": Wait(2 * HOUR, next="mail"), "mail": Send("note", "email")})
V2 = Journey("onboard", "hello", version=2, trigger=EventTrigger("signed_up"),
             steps={"hello": Send("note", "email")})
V3 = Journey("onboard", "hi", version=3, trigger=EventTrigger("signed_up"),
             steps={"hi": Send("note", "email")})


def _engine(storage_factory: Factory, clock: ManualClock,
            email: RecordingChannel | None = None) -> Engine:
    return Engine(storage=storage_factory(), clock=clock,
                  channels={"email": email or RecordingChannel()})


def _sign_up(engine: Engine, customer_id: str, event_id: str) -> None:
    engine.handle_event(Event(customer_id, "signed_up", engine.clock.now(), event_id=event_id))


def _with_ann_on_v1(storage_factory: Factory, clock: ManualClock,
                    email: RecordingChannel | None = None) -> Engine:
    """An engine whose journey is at version 2 while Ann still waits in version 1."""
    engine = _engine(storage_factory, clock, email)
    engine.publish(journeys=[V1], segments=[VIP], content=[NOTE])
    engine.identify("ann", {"plan": "pro", "email": "ann@example.com"})
    _sign_up(engine, "ann", "e-ann")
    clock.advance(HOUR)
    engine.publish(journeys=[V2])
    return engine


def _stale_once(engine: Engine, registry: Registry) -> None:
    """Make ``engine``'s next definitions read return ``registry``: as if it had read them
    just before another process changed them."""
    real = engine._sync
    calls = iter([registry])
    engine._sync = lambda: next(calls, None) or real()  # type: ignore[method-assign]


def test_a_segment_only_a_drained_version_uses_is_withdrawn_once_it_is_retired(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    email = RecordingChannel()
    engine = _with_ann_on_v1(storage_factory, clock, email)

    # Ann still waits in version 1: nothing to retire, and its audience keeps the segment.
    generation = engine.generation
    assert engine.retire_drained() == generation
    assert engine.definitions.retired == ()
    with pytest.raises(DefinitionError) as caught:
        engine.withdraw(segments=["vip"])
    assert [str(p) for p in caught.value.problems] == [
        "segment 'vip': cannot be withdrawn: still used by journey 'onboard' v1 / audience"]

    clock.advance(HOUR)
    engine.run_due()  # Ann is mailed by version 1 and completes it
    assert [(m.journey_version, m.step_id) for m in email.messages] == [(1, "mail")]
    assert engine.retire_drained(["onboard"]) == generation + 1
    [retired] = engine.definitions.retired
    assert (retired.journey_id, retired.version, retired.at) == ("onboard", 1, T0 + 2 * HOUR)
    # Still a published version, as far as anything that reads the definitions is concerned.
    assert [j.version for j in engine.definitions.journeys] == [1, 2]
    assert engine.withdraw(segments=["vip"]) == generation + 2
    assert engine.definitions.segments == ()

    # Another process reads the generation, and what version 1 did is still reported by step.
    other = _engine(storage_factory, clock, email)
    report = journey_report(other.storage, V2)
    assert (report.entered, report.completed, report.sent) == (1, 1, {"email": 1})
    assert {row.step_id: row.reached for row in report.steps} == {
        "hello": 0, "wait": 1, "mail": 1}
    log = other.activities(T0, clock.now() + HOUR, customer_id="ann")
    assert [(a.kind, a.version, a.step_id) for a in log if a.journey_id == "onboard"] == [
        ("entered", 1, None), ("step", 1, "wait"), ("step", 1, "mail"), ("sent", 1, "mail"),
        ("completed", 1, "mail")]
    export = other.export_customer("ann")
    assert [(e["version"], e["step_id"], e["status"]) for e in export["record"]["enrollments"]] == [
        (1, "mail", "completed")]
    assert {(a["version"], a["step_id"]) for a in export["activities"]
            if a["journey_id"] == "onboard"} == {(1, None), (1, "wait"), (1, "mail")}

    # New sign-ups go on entering version 2, without the withdrawn segment.
    _sign_up(other, "bob", "e-bob")
    assert [(m.customer_id, m.journey_version) for m in email.messages][-1] == ("bob", 2)


@pytest.mark.parametrize("state", ["waiting", "held by a pause", "due"])
def test_a_version_anyone_is_still_on_is_not_retired(
    storage_factory: Factory, state: str,
) -> None:
    clock = ManualClock(T0)
    engine = _with_ann_on_v1(storage_factory, clock)
    if state == "held by a pause":
        engine.pause_journey("onboard")
        clock.advance(2 * HOUR)
        engine.run_due()
        [held] = engine.enrollments("ann")
        assert held.held_at == T0 + 2 * HOUR
    elif state == "due":
        clock.advance(2 * HOUR)  # no worker has run yet
    generation = engine.generation
    assert engine.retire_drained() == generation
    assert engine.definitions.retired == ()
    with pytest.raises(DefinitionError, match="still used by journey 'onboard' v1 / audience"):
        engine.withdraw(segments=["vip"])


def test_customers_a_migration_has_not_reached_keep_the_version_it_leads_to(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    engine = _engine(storage_factory, clock)
    engine.publish(journeys=[V1], segments=[VIP], content=[NOTE])
    engine.identify("ann", {"plan": "pro"})
    _sign_up(engine, "ann", "e-ann")
    clock.advance(HOUR)
    engine.publish(journeys=[V2], running={
        "onboard": VersionChange.migrate({"wait": "hello", "mail": "hello"})})
    engine.publish(journeys=[V3])
    # Ann is on version 1 until her next transaction moves her onto version 2: neither is
    # drained, though no one is on version 2 yet.
    assert engine.retire_drained() == engine.generation
    assert engine.definitions.retired == ()
    clock.advance(HOUR)
    engine.run_due()  # her wake-up: migrated, then mailed by version 2
    [moved] = [a for a in engine.activities(T0, clock.now() + HOUR, customer_id="ann")
               if a.kind == "migrated"]
    assert moved.detail == "v1 to v2"
    engine.retire_drained()
    assert sorted(r.version for r in engine.definitions.retired) == [1, 2]


@pytest.mark.parametrize("rule", ["drain", "migrate"])
def test_a_record_that_turns_up_on_a_retired_version_leaves_it(
    storage_factory: Factory, rule: str,
) -> None:
    clock = ManualClock(T0)
    email = RecordingChannel()
    engine = _engine(storage_factory, clock, email)
    engine.publish(journeys=[V1], segments=[VIP], content=[NOTE])
    engine.identify("ann", {"plan": "pro", "email": "ann@example.com"})
    _sign_up(engine, "ann", "e-ann")
    backup = engine.customer_state("ann")  # a backup taken while she waits in version 1
    assert backup is not None
    clock.advance(HOUR)
    running = {"onboard": VersionChange.migrate({"wait": "hello", "mail": "hello"})}
    engine.publish(journeys=[V2], running=running if rule == "migrate" else None)
    engine.remove_from_journey("ann", "onboard")
    engine.retire_drained()
    retired_at = clock.now()
    assert [r.version for r in engine.definitions.retired] == [1]

    # The backup is restored: Ann is on version 1 again, her wake-up due in an hour.
    clock.advance(HOUR)
    storage = storage_factory()
    with storage.customer("ann", clock.now()) as session:
        current = session.load()
        assert current is not None
        restored = copy.deepcopy(backup)
        restored.revision = current.revision
        session.save(restored, [], [])
    clock.advance(2 * HOUR)
    _engine(storage_factory, clock, email).run_due()

    [ann] = engine.enrollments("ann")
    log = [(a.kind, a.version, a.detail, a.at)
           for a in engine.activities(T0, clock.now() + HOUR, customer_id="ann")
           if a.kind in ("ejected", "migrated")]
    if rule == "drain":
        # Nothing of version 1 runs again: she ends, saying why, at the retirement.
        assert (ann.version, ann.status, ann.end_reason) == (1, "ejected", "version 1 retired")
        assert log == [("ejected", 1, "version 1 retired", retired_at)]
        assert email.messages == []
    else:
        # By the version's migration, onto version 2, which mails her (the first move is
        # the one before her removal, in the record the backup replaced).
        assert log == [("migrated", 2, "v1 to v2", T0 + HOUR)] * 2
        assert [(m.journey_version, m.step_id) for m in email.messages] == [(2, "hello")]


def test_a_late_entry_takes_the_version_after_a_retired_one() -> None:
    clock = ManualClock(T0)
    engine = _engine(InMemoryStorage, clock)
    engine.publish(journeys=[V1], segments=[VIP], content=[NOTE])
    clock.advance(HOUR)
    engine.publish(journeys=[V2])
    clock.advance(HOUR)
    engine.publish(journeys=[V3])
    engine.retire_drained()
    registry = engine._sync()
    assert sorted(r.version for r in engine.definitions.retired) == [1, 2]
    assert set(registry.journeys) == {("onboard", 3)}
    # An entry decided at an instant when version 1 or 2 was the newest takes version 3.
    for at in (T0, T0 + HOUR, T0 + 2 * HOUR):
        cj = registry.latest_at("onboard", at)
        assert cj is not None and cj.journey.version == 3
    assert registry.latest_at("onboard", T0 - HOUR) is None


def test_a_retirement_and_another_process_publish_merge(storage_factory: Factory) -> None:
    clock = ManualClock(T0)
    one, two = _engine(storage_factory, clock), _engine(storage_factory, clock)
    one.publish(journeys=[V1], segments=[VIP], content=[NOTE])
    clock.advance(HOUR)
    one.publish(journeys=[V2])

    # Each read the definitions before the other stored its change: the retirement loses the
    # compare-and-set, reads the newer generation (version 3 now supersedes version 2, which
    # no one is on either) and retires on it, keeping the other's publish.
    before = one._sync()
    two.publish(journeys=[V3], content=[ContentItem(
        "news", (Variant("email", {"subject": "News", "text": "."}),))])
    _stale_once(one, before)
    one.retire_drained()
    before = two._sync()
    one.withdraw(segments=["vip"])
    for engine in (one, two):
        definitions = engine.definitions
        assert sorted((r.journey_id, r.version) for r in definitions.retired) == [
            ("onboard", 1), ("onboard", 2)]
        assert sorted(c.id for c in definitions.content) == ["news", "note"]
        assert [j.version for j in definitions.journeys] == [1, 2, 3]
        assert definitions.segments == ()

    # A publish that read the definitions before the retirement keeps it too.
    _stale_once(two, before)
    two.publish(content=[ContentItem("extra", (Variant("email", {"subject": "X", "text": "."}),))])
    assert sorted(r.version for r in one.definitions.retired) == [1, 2]


def test_an_unknown_journey_is_named(storage_factory: Factory) -> None:
    engine = _engine(storage_factory, ManualClock(T0))
    engine.publish(journeys=[V1], segments=[VIP], content=[NOTE])
    generation = engine.generation
    with pytest.raises(UnknownJourneyError, match="no journey 'onbaord' has been published"):
        engine.retire_drained(["onboard", "onbaord"])
    assert engine.generation == generation
    with pytest.raises(DefinitionError, match="expected a list of journey ids, got str"):
        engine.retire_drained("onboard")


def test_a_copy_of_the_definitions_publishes_its_retired_versions_retired(
    storage_factory: Factory,
) -> None:
    clock = ManualClock(T0)
    source = _engine(InMemoryStorage, clock)
    source.publish(journeys=[V1], segments=[VIP], content=[NOTE])
    clock.advance(HOUR)
    source.publish(journeys=[V2])
    source.retire_drained()
    source.withdraw(segments=["vip"])

    # Through JSON, into another storage: version 1 still names the withdrawn segment.
    copied = loads_definitions(dumps_definitions(source.definitions))
    assert copied == source.definitions
    target = _engine(storage_factory, clock)
    target.publish(copied)
    assert [(r.journey_id, r.version) for r in target.definitions.retired] == [("onboard", 1)]
    assert [j.version for j in target.definitions.journeys] == [1, 2]
    # Published again on the same storage, nothing changes.
    generation = target.generation
    assert target.publish(copied) == generation


def test_the_latest_version_cannot_be_listed_as_retired() -> None:
    from cjo import Definitions, validate_definitions
    from cjo.model.governance import VersionRetired

    definitions = Definitions(journeys=(V1, V2), segments=(VIP,), content=(NOTE,), retired=(
        VersionRetired("onboard", 2, T0), VersionRetired("onboard", 1, T0),
        VersionRetired("onboard", 1, T0), VersionRetired("welcome", 1, T0)))
    assert [str(p) for p in validate_definitions(definitions)] == [
        "retired journey 'onboard' v2: the latest version of a journey takes its entries and "
        "cannot be retired",
        "retired journey 'onboard' v1: retired twice",
        "retired journey 'welcome' v1: no such version is published",
    ]


def test_only_a_generation_that_holds_a_retirement_stores_the_field(
    storage_factory: Factory,
) -> None:
    # An older cjo reads every generation stored before the first retirement, and refuses
    # the others by the unknown field, as it refuses any field it does not know.
    from cjo.errors import UnreadableDefinitionsError
    from cjo.serialization import loads_stored_definitions

    clock = ManualClock(T0)
    engine = _engine(storage_factory, clock)
    engine.publish(journeys=[V1], segments=[VIP], content=[NOTE])
    clock.advance(HOUR)
    engine.publish(journeys=[V2])
    stored = engine.storage.load_definitions()
    assert stored is not None and "retired" not in json.loads(stored[1])
    engine.retire_drained()
    stored = engine.storage.load_definitions()
    assert stored is not None
    data = json.loads(stored[1])
    assert data["retired"] == [{"journey_id": "onboard", "version": 1,
                                "at": (T0 + HOUR).isoformat()}]
    assert loads_stored_definitions(stored[1], stored[0]) == engine.definitions
    data["retired"][0]["since"] = "then"  # what a reader that does not know a field meets
    with pytest.raises(UnreadableDefinitionsError, match=r"\$\.retired\[0\]"):
        loads_stored_definitions(json.dumps(data), stored[0])


def test_cjo_report_shows_a_retired_versions_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from cjo.cli import main
    from cjo.storage.sqlite import SQLiteStorage

    path = tmp_path / "cjo.db"
    clock = ManualClock(T0)
    storage = SQLiteStorage(path)
    try:
        engine = _with_ann_on_v1(lambda: storage, clock)
        clock.advance(2 * HOUR)
        engine.run_due()
        engine.retire_drained()
        engine.withdraw(segments=["vip"])
        definitions = engine.definitions
    finally:
        storage.close()
    assert main(["report", "--storage", f"sqlite:///{path}", "--json"]) == 0
    (data,) = json.loads(capsys.readouterr().out)
    assert {row["step_id"]: row["reached"] for row in data["steps"]} == {
        "hello": 0, "wait": 1, "mail": 1}
    # An export of the definitions validates: version 1 names the withdrawn segment.
    exported = tmp_path / "definitions.json"
    exported.write_text(dumps_definitions(definitions))
    assert main(["validate", str(exported)]) == 0
    assert "OK" in capsys.readouterr().out


class _Bounce(Channel):
    def send(self, message: Message) -> DeliveryResult:
        return DeliveryResult.permanent("mailbox gone")


def test_a_message_a_retired_version_wrote_still_fails_over(storage_factory: Factory) -> None:
    clock = ManualClock(T0)
    sms = RecordingChannel()
    engine = Engine(storage=storage_factory(), clock=clock, dispatch="deferred",
                    channels={"email": _Bounce(), "sms": sms})
    both = ContentItem("note", (Variant("email", {"subject": "Hi", "text": "Hello"}),
                                Variant("sms", {"text": "Hello"})))
    mailer = Journey("mailer", "mail", trigger=EventTrigger("signed_up"),
                     steps={"mail": Send("note", "email", fallbacks=("sms",))})
    engine.publish(journeys=[mailer], content=[both])
    engine.identify("ann", {"email": "ann@example.com", "phone": "+4712345678"})
    _sign_up(engine, "ann", "e-ann")  # mailed, and done with version 1
    engine.publish(journeys=[attrs.evolve(mailer, version=2, steps={"mail": Send("note", "email")})])
    engine.retire_drained()
    assert [r.version for r in engine.definitions.retired] == [1]
    # The message version 1 wrote bounces: its step's fallback still takes over.
    assert engine.dispatch_pending() == 2
    assert [(m.channel, m.journey_version, m.step_id) for m in sms.messages] == [
        ("sms", 1, "mail")]


def test_feedback_on_a_message_a_retired_version_sent_is_placed_on_its_step(
    storage_factory: Factory,
) -> None:
    # Opens, clicks and unsubscribes arrive days after a send, when the version that sent it
    # may be drained and retired: they are still the message's own.
    from cjo import Topic

    clock = ManualClock(T0)
    email = RecordingChannel()
    news = Journey("news", "mail", version=1, trigger=EventTrigger("signed_up"),
                   steps={"mail": Send("note", "email", topic="newsletter")})
    engine = _engine(storage_factory, clock, email)
    engine.publish(journeys=[news], content=[NOTE], topics=[Topic("newsletter"), Topic("offers")])
    engine.identify("ann", {"email": "ann@example.com"})
    _sign_up(engine, "ann", "e-ann")
    [sent] = email.messages
    clock.advance(HOUR)
    engine.publish(journeys=[attrs.evolve(news, version=2)])
    engine.retire_drained()
    assert [(r.journey_id, r.version) for r in engine.definitions.retired] == [("news", 1)]

    clock.advance(HOUR)
    engine.handle_event(Event("ann", "opened", clock.now(), {"message_id": sent.idempotency_key},
                              event_id="open-1"))
    engine.handle_event(Event("ann", "unsubscribed", clock.now(),
                              {"message_id": sent.idempotency_key}, event_id="unsub-1"))
    logged = [(a.kind, a.journey_id, a.version, a.step_id, a.detail)
              for a in engine.activities(T0, T0 + 3 * HOUR, customer_id="ann")
              if a.kind in {"opened", "unsubscribed"}]
    assert logged == [("opened", "news", 1, "mail", None),
                      ("unsubscribed", "news", 1, "mail", "newsletter")]
    # From the message's topic only: other marketing still goes out.
    consent = engine.customer_state("ann").consent
    assert list(consent) == [("newsletter", "*")]
