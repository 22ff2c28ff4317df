"""Customer records written by a newer or an older cjo, or damaged in the database, tried as an
operator would on the SQL adapters (the in-memory one keeps records as objects, not text)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cjo import (
    ContentItem,
    ControlGroup,
    Engine,
    Event,
    EventTrigger,
    Goal,
    Journey,
    ManualClock,
    ProfileUpdate,
    RecordingChannel,
    Segment,
    Send,
    Variant,
    Wait,
    WaitForEvent,
    attr,
    performed,
)
from cjo.abc import RECORD_LAYOUT
from cjo.analytics.report import journey_report
from cjo.channels.base import DeliveryResult, Message
from cjo.errors import CorruptRecordError
from cjo.model.governance import in_control_group
from cjo.storage.base import Storage

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)

RawWrite = Callable[[str, str], None]
RawRead = Callable[[str], str]
SQL = tuple[Storage, RawWrite, RawRead]


def _event(customer: str, eid: str, at: datetime = T0) -> Event:
    return Event(customer_id=customer, name="signed_up", timestamp=at, event_id=eid)


@pytest.fixture(params=["sqlite", "postgres"])
def sql(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQL]:
    """A SQL storage and the raw text of its records (memory keeps objects, not text)."""
    if request.param == "sqlite":
        from cjo.storage.sqlite import SQLiteStorage

        storage: Storage = SQLiteStorage(tmp_path / "cjo.db")

        def write(customer_id: str, text: str) -> None:
            conn = storage._conn  # type: ignore[attr-defined]
            conn.execute("UPDATE customers SET data = ? WHERE customer_id = ?",
                         (text, customer_id))

        def read(customer_id: str) -> str:
            conn = storage._conn  # type: ignore[attr-defined]
            return str(conn.execute("SELECT data FROM customers WHERE customer_id = ?",
                                    (customer_id,)).fetchone()[0])
    else:
        import psycopg

        from cjo.storage.postgres import PostgresStorage

        dsn = request.getfixturevalue("postgres_dsn")
        schema = request.getfixturevalue("postgres_schema")
        storage = PostgresStorage(dsn, schema=schema)

        def write(customer_id: str, text: str) -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f'UPDATE "{schema}".customers SET data = %s '
                             "WHERE customer_id = %s", (text, customer_id))

        def read(customer_id: str) -> str:
            with psycopg.connect(dsn, autocommit=True) as conn:
                row = conn.execute(f'SELECT data FROM "{schema}".customers '
                                   "WHERE customer_id = %s", (customer_id,)).fetchone()
            assert row is not None
            return str(row[0])
    yield storage, write, read
    storage.close()


def _three_waiting(storage: Storage, clock: ManualClock, channel: RecordingChannel) -> Engine:
    engine = Engine(storage, channels={"email": channel}, clock=clock)
    engine.publish(
        journeys=[Journey(id="welcome", trigger=EventTrigger("signed_up"), entry="wait",
                          audience=attr("vip") == True,  # noqa: E712
                          steps={"wait": Wait(DAY, next="mail"), "mail": Send("note", "email")})],
        content=[ContentItem("note", (Variant("email", {"subject": "Hi", "text": "Hello"}),))],
    )
    for customer in ("amy", "bad", "cid"):
        engine.identify(customer, {"vip": True})
        engine.handle_event(_event(customer, f"{customer}-1"))
    return engine


DAMAGED: dict[str, Callable[[dict[str, Any]], str]] = {
    "not JSON": lambda data: "{ not json",
    "a field of the wrong type": lambda data: json.dumps({**data, "enr": "garbage"}),
    "a missing field": lambda data: json.dumps({k: v for k, v in data.items() if k != "created"}),
}


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_one_undecodable_record_costs_a_group_of_events_nothing_else(sql: SQL, damage: str) -> None:
    storage, write, read = sql
    clock = ManualClock(T0)
    engine = _three_waiting(storage, clock, RecordingChannel())
    write("bad", DAMAGED[damage](json.loads(read("bad"))))
    engine.identify("dan", {"vip": True})
    items = [ProfileUpdate("amy", {"n": 1}), ProfileUpdate("bad", {"n": 1}),
             ProfileUpdate("cid", {"n": 1}), _event("dan", "dan-1"),
             ProfileUpdate("amy", {"n": 2}), ProfileUpdate("bad", {"n": 2})]
    with pytest.raises(CorruptRecordError) as caught:
        engine.handle_events(items, batch_size=3)
    assert caught.value.customer_id == "bad"
    # Both groups committed everyone else's items.
    assert [engine.profile(c).attributes["n"] for c in ("amy", "cid")] == [2, 1]  # type: ignore[union-attr]
    assert [e.journey_id for e in engine.enrollments("dan")] == ["welcome"]
    # Sent again (after the record is repaired, say), the others' events are duplicates.
    with pytest.raises(CorruptRecordError):
        engine.handle_events([_event("dan", "dan-1"), _event("bad", "bad-2")])
    assert engine.handle_events([_event("dan", "dan-1")]).nothing_happened


@pytest.mark.parametrize(("field", "value"), [
    ("ver", "1"), ("ver", 1.0), ("ver", True), ("j", 7), ("s", ["wait"]), ("id", None),
])
def test_a_waiting_enrollment_with_a_field_of_the_wrong_type_is_set_aside(
    sql: SQL, field: str, value: object
) -> None:
    # A bad manual edit that still decodes: read as it was, a version "1" matched no
    # published version, so the wake-up was claimed again every lease and never fired, and
    # nothing was logged nor set aside.
    storage, write, read = sql
    clock, channel = ManualClock(T0), RecordingChannel()
    engine = _three_waiting(storage, clock, channel)
    data = json.loads(read("bad"))
    data["enr"][0][field] = value
    write("bad", json.dumps(data))
    clock.advance(days=2)
    engine.run_due()
    assert sorted(m.customer_id for m in channel.messages) == ["amy", "cid"]
    (aside,) = engine.records_set_aside()
    assert aside.customer_id == "bad" and f"version {data['enr'][0]['ver']!r}" in aside.reason
    with pytest.raises(CorruptRecordError, match="'bad'"):
        engine.handle_event(_event("bad", "bad-2", clock.now()))


def test_an_import_reports_the_records_of_an_undecodable_customer_and_goes_on(sql: SQL) -> None:
    storage, write, read = sql
    engine = _three_waiting(storage, ManualClock(T0), RecordingChannel())
    write("bad", "{ not json")
    records = [{"customer_id": c, "attributes": {"n": i}}
               for i, c in enumerate(["amy", "bad", "cid", "eve", "bad", "fay"])]
    result = engine.import_profiles(records, batch_size=2)
    assert (result.read, result.imported) == (6, 4)
    assert [p.position for p in result.problems] == [2, 5]
    assert all("not imported" in p.reason and "'bad'" in p.reason for p in result.problems)
    assert [engine.profile(c).attributes["n"] for c in ("amy", "cid", "eve", "fay")] == [  # type: ignore[union-attr]
        0, 2, 3, 5]
    assert read("bad") == "{ not json"  # left as it was, for the operator to repair


def test_a_privacy_export_of_an_undecodable_record_raises_naming_the_customer(sql: SQL) -> None:
    storage, write, _ = sql
    engine = _three_waiting(storage, ManualClock(T0), RecordingChannel())
    write("bad", "{ not json")
    with pytest.raises(CorruptRecordError, match="'bad'"):
        engine.export_customer("bad")
    assert engine.export_customer("nobody")["record"] is None
    assert engine.export_customer("amy")["record"] is not None
    engine.erase_customer("bad")  # what the operator does about it
    assert engine.export_customer("bad")["record"] is None


def test_a_record_of_a_newer_layout_keeps_its_number_and_fields_when_written_back(
    sql: SQL,
) -> None:
    storage, write, read = sql
    clock = ManualClock(T0)
    channel = RecordingChannel()
    engine = _three_waiting(storage, clock, channel)
    data = json.loads(read("bad"))
    write("bad", json.dumps({**data, "v": 7, "ledger": [1, 2]}))
    clock.advance(DAY)
    engine.run_due()  # the wait ends: the record is written back by this (older) cjo
    assert sorted(m.customer_id for m in channel.messages) == ["amy", "bad", "cid"]
    written = json.loads(read("bad"))
    # Labelled with this cjo's layout, the newer cjo would upgrade it again from there.
    assert (written["v"], written["ledger"]) == (7, [1, 2])
    assert written["rev"] > data["rev"]


class _Bouncing(RecordingChannel):
    """Every address is refused for good (a hard bounce)."""

    def send(self, message: Message) -> DeliveryResult:
        super().send(message)
        return DeliveryResult.permanent("550 no such user")


def test_one_undecodable_record_does_not_keep_the_others_channels_unblocked(sql: SQL) -> None:
    storage, write, _ = sql
    clock = ManualClock(T0)
    channel = _Bouncing()
    engine = Engine(storage, channels={"email": channel}, clock=clock, dispatch="deferred")
    engine.publish(
        journeys=[Journey(id="welcome", trigger=EventTrigger("signed_up"), entry="mail",
                          steps={"mail": Send("note", "email")})],
        content=[ContentItem("note", (Variant("email", {"subject": "Hi", "text": "Hello"}),))],
    )
    for customer in ("amy", "bad", "cid"):
        engine.handle_event(_event(customer, f"{customer}-1"))
    write("bad", "{ not json")
    assert engine.dispatch_pending() == 3
    assert len(channel.messages) == 3
    # The bounce blocks the channel of everyone whose record can be read.
    for customer in ("amy", "cid"):
        state = engine.customer_state(customer)
        assert state is not None and "email" in state.blocked


def test_fields_a_newer_layout_keeps_in_an_enrollment_are_written_back(sql: SQL) -> None:
    storage, write, read = sql
    clock = ManualClock(T0)
    channel = RecordingChannel()
    engine = _three_waiting(storage, clock, channel)
    data = json.loads(read("bad"))
    (enrollment,) = data["enr"]
    newer = {**enrollment, "prio": 3, "seen": {"$dt": 5}}
    write("bad", json.dumps({**data, "v": 7, "enr": [newer]}))
    engine.identify("bad", {"vip": True, "n": 1})  # written back by this (older) cjo
    written = json.loads(read("bad"))
    assert written["v"] == 7
    assert written["enr"] == [{**enrollment, "prio": 3, "seen": {"$dt": 5}}]
    # Once the enrollment has ended, its fields go with it.
    clock.advance(DAY)
    engine.run_due()
    assert "enr" not in json.loads(read("bad"))
    assert sorted(m.customer_id for m in channel.messages) == ["amy", "bad", "cid"]


def test_positions_a_newer_layout_appends_to_rows_are_written_back(sql: SQL) -> None:
    storage, write, read = sql
    clock = ManualClock(T0)
    channel = RecordingChannel()
    engine = _three_waiting(storage, clock, channel)
    engine.publish(segments=[Segment("openers", performed("opened").at_least(1))])
    data = json.loads(read("bad"))
    at = data["created"]
    # One row of each positional part as a newer cjo writes it: a position more than this one.
    newer = {
        **data, "v": RECORD_LAYOUT + 1,
        "hist": [[*row, "hist+"] for row in data["hist"]],
        "ended": [["older", "welcome", 1, at, at, "completed", None, "mail", None, None,
                   "ended+"]],
        "cons": [["news", "email", True, at, "cons+"]],
        "led": [[at, "email", ["promo"], "led+"]],
        "trk": {"opened": [at, at, at, 1, 0, None, None, [], {}, "trk+"]},
        "offers": {"ten_off": [1, [at], "offers+"]},
    }
    parts = ("hist", "ended", "cons", "led", "trk", "offers")
    write("bad", json.dumps(newer))
    clock.advance(DAY / 2)
    engine.handle_event(_event("bad", "bad-2", clock.now()))  # written back by this cjo
    written = json.loads(read("bad"))
    assert written["rev"] > data["rev"] and written["v"] == RECORD_LAYOUT + 1
    assert {part: written[part] for part in parts} == {part: newer[part] for part in parts}
    assert list(written["seg"]) == ["openers"]  # the newer track row was read, and counted
    # The wait ends: the enrollment ends and is kept in place of the older ended one (whose
    # positions go with it); the history row keeps its own.
    clock.advance(DAY / 2)
    engine.run_due()
    assert sorted(m.customer_id for m in channel.messages) == ["amy", "bad", "cid"]
    written = json.loads(read("bad"))
    assert [row[0] for row in written["ended"]] == [data["enr"][0]["id"]]
    assert len(written["ended"][0]) == 10
    assert [row[5:] for row in written["hist"]] == [["hist+"]]
    assert {part: written[part] for part in parts[2:]} == {part: newer[part] for part in parts[2:]}


def test_a_privacy_export_holds_what_a_newer_cjo_wrote_and_writes_nothing(sql: SQL) -> None:
    storage, write, read = sql
    engine = _three_waiting(storage, ManualClock(T0), RecordingChannel())
    data = json.loads(read("amy"))
    (enrollment,) = data["enr"]
    newer = {
        **data, "v": RECORD_LAYOUT + 1, "award": {"tier": "gold", "at": {"$dt": 0}},
        "enr": [{**enrollment, "prio": 3}],
        "hist": [[*row, "first_channel:email"] for row in data["hist"]],
    }
    text = json.dumps(newer)
    write("amy", text)
    exported = engine.export_customer("amy")
    assert exported["format"] == 4
    assert exported["record"]["newer_layout"] == {
        "layout": RECORD_LAYOUT + 1,
        "fields": {"award": {"tier": "gold", "at": "1970-01-01T00:00:00+00:00"}},
        "enrollment_fields": {enrollment["id"]: {"prio": 3}},
        "row_positions": {
            "hist": [{"row": ["welcome", None], "positions": ["first_channel:email"]}],
        },
    }
    # What this cjo knows is exported as always; the record is left as the newer cjo wrote it.
    assert [e["id"] for e in exported["record"]["enrollments"]] == [enrollment["id"]]
    assert read("amy") == text
    assert engine.export_customer("cid")["record"]["newer_layout"] == {
        "layout": None, "fields": {}, "enrollment_fields": {}, "row_positions": {},
    }


def test_an_event_only_a_damaged_record_could_use_is_refused_not_dropped(sql: SQL) -> None:
    storage, write, _ = sql
    clock = ManualClock(T0)
    engine = Engine(storage, channels={"email": RecordingChannel()}, clock=clock)
    engine.publish(
        journeys=[Journey(id="nudge", trigger=EventTrigger("signed_up"), entry="wait",
                          steps={"wait": WaitForEvent("opened", timeout=DAY)})],
    )
    for customer in ("amy", "bad"):
        engine.handle_event(_event(customer, f"{customer}-1"))
    write("bad", "{ not json")
    # Only the enrollment in the damaged record waits for it: dropped, it would be lost unseen.
    with pytest.raises(CorruptRecordError, match="'bad'"):
        engine.handle_event(Event("bad", "opened", T0, event_id="o1"))
    with pytest.raises(CorruptRecordError, match="'bad'"):
        engine.handle_events([Event("amy", "opened", T0, event_id="o2"),
                              Event("bad", "opened", T0, event_id="o3"),
                              Event("nobody", "opened", T0, event_id="o4")])
    (amy,) = engine.enrollments("amy")
    assert amy.status == "completed"  # the others' events of the group were handled
    with pytest.raises(CorruptRecordError, match="'bad'"):
        engine.profile("bad")
    assert engine.profile("nobody") is None


def _control_group_engine(
    storage: Storage,
) -> tuple[Engine, ManualClock, Journey, list[str], str]:
    """An engine with a 50% control group and a journey whose goal is a purchase, two
    customers of the control group and one outside it."""
    group = ControlGroup(50, "s")
    ids = [f"c{i}" for i in range(40)]
    inside = [c for c in ids if in_control_group(c, group)][:2]
    outside = next(c for c in ids if not in_control_group(c, group))
    clock = ManualClock(T0)
    engine = Engine(storage, channels={"email": RecordingChannel()}, clock=clock)
    journey = Journey(id="j", trigger=EventTrigger("signed_up"), entry="wait",
                      goal=Goal("purchased"), steps={"wait": Wait(DAY)})
    engine.publish(journeys=[journey], control_group=group)
    return engine, clock, journey, inside, outside


def test_a_layout_1_enrollment_converts_with_the_customers_group_at_the_goal(sql: SQL) -> None:
    # Layout 1 did not keep the group an enrollment entered in: its goal counts with the
    # customer's group then, and the record written back keeps it unknown.
    storage, write, read = sql
    engine, clock, journey, (inside, *_), outside = _control_group_engine(storage)
    for customer in (inside, outside):
        engine.handle_event(_event(customer, f"{customer}-1"))
        data = json.loads(read(customer))
        assert [e["cg"] for e in data["enr"]] == [1 if customer == inside else 0]
        write(customer, json.dumps({**data, "v": 1, "enr": [
            {k: v for k, v in e.items() if k != "cg"} for e in data["enr"]]}))
    clock.advance(DAY / 2)
    engine.identify(inside, {"n": 1})  # written back
    written = json.loads(read(inside))
    assert written["v"] == RECORD_LAYOUT and ["cg" in e for e in written["enr"]] == [False]
    for customer in (inside, outside):
        engine.handle_event(Event(customer, "purchased", clock.now(), event_id=f"{customer}-p"))
    report = journey_report(storage, journey)
    assert (report.control, report.control_converted, report.converted) == (1, 1, 2)


def test_an_enrollment_an_older_cjo_wrote_into_a_layout_2_record_converts_as_before(
    sql: SQL,
) -> None:
    # During a rolling upgrade a cjo of layout 1 writes enrollments without "cg" into records
    # a newer one wrote (it keeps their layout number): one it entered, one an identity merge
    # it made moved over. Their group at entry is unknown, so their goals count with the
    # customer's group at the goal, as the older cjo counts them; not with the treated group.
    storage, write, read = sql
    engine, clock, journey, inside, outside = _control_group_engine(storage)
    for customer in (*inside, outside):
        engine.handle_event(_event(customer, f"{customer}-1"))
        data = json.loads(read(customer))
        assert data["v"] == RECORD_LAYOUT
        # As the older cjo writes it back: the layout number kept, its own enrollment bare.
        write(customer, json.dumps({**data, "enr": [
            {k: v for k, v in e.items() if k != "cg"} for e in data["enr"]]}))
    assert [e.control for c in (*inside, outside) for e in engine.customer_state(c).enrollments
            ] == [None, None, None]  # type: ignore[union-attr]
    clock.advance(DAY / 2)
    for customer in (*inside, outside):
        engine.handle_event(Event(customer, "purchased", clock.now(), event_id=f"{customer}-p"))
    report = journey_report(storage, journey)
    assert (report.control, report.control_converted, report.converted) == (2, 2, 3)
    assert report.control_conversion_rate == report.treated_conversion_rate == 1.0
