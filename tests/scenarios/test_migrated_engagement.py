"""Engagement waits across a migration to a new version, on every storage: a Send step renamed
or merged by ``VersionChange.migrate`` keeps the messages it made, so the new version's
``WaitForEvent(of_send=...)`` ends on an open of them; the step's next pass has a key of its
own. The journey report counts the customers a migration moved onto each step."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from cjo import (
    ContentItem,
    Definitions,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    RecordingChannel,
    ReentryPolicy,
    Send,
    Storage,
    Variant,
    VersionChange,
    Wait,
    WaitForEvent,
)
from cjo.abc import Activity
from cjo.analytics import format_table, journey_report
from cjo.channels.base import Message
from cjo.simulate import Publish, backtest
from cjo.testing import advance

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

CONTENT = (
    ContentItem("hello", (Variant("email", {"subject": "Hello", "text": "Hello"}),
                          Variant("sms", {"text": "Hello"}))),
    ContentItem("news", (Variant("email", {"subject": "News", "text": "News"}),)),
)
NEWS = Journey("news", "email", {"email": Send("news", "email")},
               trigger=EventTrigger("news_ready"))
KEYED = ReentryPolicy(instance_key="cart_id")
UNKEYED = ReentryPolicy()


def v1(reentry: ReentryPolicy = UNKEYED) -> Journey:
    """An email, a day to open it (that message), else an SMS."""
    return Journey("onboard", "email1", {
        "email1": Send("hello", "email", next="opened?"),
        "opened?": WaitForEvent("opened", timeout=DAY, on_timeout="sms", of_send="email1"),
        "sms": Send("hello", "sms"),
    }, trigger=EventTrigger("signed_up"), reentry=reentry, version=1)


def v2(reentry: ReentryPolicy = UNKEYED, *, again: bool = False) -> Journey:
    """Version 1 with its steps renamed; ``again``: after the SMS, the email again, and the
    wait is for that one."""
    return Journey("onboard", "welcome_email", {
        "welcome_email": Send("hello", "email", next="engaged?"),
        "engaged?": WaitForEvent("opened", timeout=DAY, on_timeout="text",
                                 of_send="welcome_email"),
        "text": Send("hello", "sms", next="welcome_email" if again else None),
    }, trigger=EventTrigger("signed_up"), reentry=reentry, version=2)


RENAME = VersionChange.migrate({"email1": "welcome_email", "opened?": "engaged?",
                                "sms": "text"})


class Host:
    def __init__(self, storage: Storage) -> None:
        self.clock = ManualClock(T0)
        self.email, self.sms = RecordingChannel(), RecordingChannel()
        self.engine = Engine(storage, channels={"email": self.email, "sms": self.sms},
                             clock=self.clock)
        self.events: list[Event] = []
        self._ids = itertools.count(1)

    def event(self, name: str, customer: str = "ann", **props: Any) -> Any:
        event = Event(customer_id=customer, name=name, timestamp=self.clock.now(),
                      properties=props, event_id=f"e{next(self._ids)}")
        self.events.append(event)
        return self.engine.handle_event(event)

    def emails(self, customer: str = "ann", journey: str = "onboard") -> list[Message]:
        return [m for m in self.email.for_customer(customer) if m.journey_id == journey]

    def opened(self, message: Message, customer: str = "ann") -> None:
        self.event("opened", customer, message_id=message.idempotency_key)

    def log(self, customer: str = "ann") -> list[Activity]:
        return self.engine.activities(T0, self.clock.now() + HOUR, customer_id=customer)

    def texts(self, customer: str = "ann") -> int:
        return len(self.sms.for_customer(customer))

    def steps(self, customer: str = "ann") -> dict[str | None, str | None]:
        return {e.instance_key: e.step_id
                for e in self.engine.customer_state(customer).enrollments}


def test_a_renamed_send_step_keeps_its_message_for_the_new_versions_wait(
    storage: Storage,
) -> None:
    host = Host(storage)
    host.engine.publish(journeys=[v1(), NEWS], content=CONTENT)
    host.event("signed_up")
    host.event("signed_up", "bob")
    host.event("news_ready")
    (sent,) = host.emails()
    advance(host.engine, hours=1)
    host.engine.publish(journeys=[v2()], running={"onboard": RENAME})
    advance(host.engine, hours=1)
    host.opened(host.emails(journey="news")[0])  # another journey's message: still waiting
    host.opened(host.emails("bob")[0])  # another customer's
    assert host.steps() == {None: "engaged?"}
    host.opened(sent)
    assert host.steps() == {}
    advance(host.engine, days=2)
    assert (host.texts(), host.texts("bob")) == (0, 1)
    assert [a.kind for a in host.log()
            if a.journey_id == "onboard"][-3:] == ["opened", "event_received", "completed"]


def test_the_carried_message_is_kept_in_the_stored_record(storage: Storage) -> None:
    host = Host(storage)
    host.engine.publish(journeys=[v1()], content=CONTENT)
    host.event("signed_up")
    (sent,) = host.emails()
    host.engine.publish(journeys=[v2()], running={"onboard": RENAME})
    host.event("opened")  # about no message: it ends no wait, but the transaction moves her
    (e,) = host.engine.customer_state("ann").enrollments
    assert (e.version, e.step_id, e.carried_sends) == (
        2, "engaged?", {"welcome_email": (0, (sent.idempotency_key,))}
    )
    assert host.engine.export_customer("ann")["record"]["enrollments"][0]["carried_sends"] == {
        "welcome_email": {"passes": 0, "message_keys": [sent.idempotency_key]}
    }


def test_a_pass_made_after_the_migration_has_a_key_of_its_own(storage: Storage) -> None:
    host = Host(storage)
    host.engine.publish(journeys=[v1()], content=CONTENT)
    host.event("signed_up")
    (first,) = host.emails()
    host.engine.publish(journeys=[v2(again=True)], running={"onboard": RENAME})
    advance(host.engine, days=1)  # the wait times out: an SMS, the email again, on version 2
    _, second = host.emails()
    assert second.idempotency_key.endswith(":welcome_email:1")
    assert second.idempotency_key != first.idempotency_key
    host.opened(first)  # the earlier message no longer stands for the step's latest pass
    assert host.steps() == {None: "engaged?"}
    (e,) = host.engine.customer_state("ann").enrollments
    assert e.visits["welcome_email"] == 1
    host.opened(second)
    assert host.steps() == {}


def test_a_keyed_journey_carries_each_instances_own_message(storage: Storage) -> None:
    host = Host(storage)
    host.engine.publish(journeys=[v1(KEYED)], content=CONTENT)
    host.event("signed_up", cart_id="c1")
    host.event("signed_up", cart_id="c2")
    c1, c2 = host.emails()
    host.engine.publish(journeys=[v2(KEYED)], running={"onboard": RENAME})
    host.opened(c2)
    assert host.steps() == {"c1": "engaged?"}
    advance(host.engine, days=1)
    assert host.texts() == 1
    assert c1.idempotency_key != c2.idempotency_key


def test_two_send_steps_merged_into_one_keep_both_messages(storage: Storage) -> None:
    # Version 1 sends an email and, a day later, a reminder, then waits for the reminder to be
    # opened; version 2 has one email. A customer who had both counts an open of either.
    old = Journey("onboard", "email1", {
        "email1": Send("hello", "email", next="pause"),
        "pause": Wait(DAY, next="email2"),
        "email2": Send("hello", "email", next="opened?"),
        "opened?": WaitForEvent("opened", timeout=DAY, on_timeout="sms", of_send="email2"),
        "sms": Send("hello", "sms"),
    }, trigger=EventTrigger("signed_up"), version=1)
    host = Host(storage)
    host.engine.publish(journeys=[old], content=CONTENT)
    host.event("signed_up")
    host.event("signed_up", "bob")
    advance(host.engine, days=1, hours=1)
    ann_first, ann_reminder = host.emails()
    bob_first, _ = host.emails("bob")
    host.engine.publish(journeys=[v2()], running={"onboard": VersionChange.migrate({
        "email1": "welcome_email", "pause": "engaged?", "email2": "welcome_email",
        "opened?": "engaged?", "sms": "text",
    })})
    host.opened(ann_reminder)
    host.opened(bob_first, "bob")
    host.event("opened", "cat", message_id=ann_first.idempotency_key)  # not her message
    assert (host.steps(), host.steps("bob")) == ({}, {})
    advance(host.engine, days=2)
    assert (host.texts(), host.texts("bob")) == (0, 0)


def test_a_chain_of_migrations_carries_the_message_on(storage: Storage) -> None:
    v3 = Journey("onboard", "hi", {
        "hi": Send("hello", "email", next="seen?"),
        "seen?": WaitForEvent("opened", timeout=DAY, on_timeout="sms", of_send="hi"),
        "sms": Send("hello", "sms"),
    }, trigger=EventTrigger("signed_up"), version=3)
    host = Host(storage)
    host.engine.publish(journeys=[v1()], content=CONTENT)
    host.event("signed_up")  # ann: moved to v2 by an input, then to v3
    host.event("signed_up", "bob")  # bob: no input between the publishes, moved twice at once
    ann, bob = host.emails(), host.emails("bob")
    advance(host.engine, hours=1)
    host.engine.publish(journeys=[v2()], running={"onboard": RENAME})
    host.event("opened")
    advance(host.engine, hours=1)
    host.engine.publish(journeys=[v3], running={"onboard": VersionChange.migrate(
        {"welcome_email": "hi", "engaged?": "seen?", "text": "sms"}
    )})
    host.opened(ann[0])
    host.opened(bob[0], "bob")
    assert (host.steps(), host.steps("bob")) == ({}, {})
    assert [a.detail for a in host.log("bob") if a.kind == "migrated"] == [
        "v1 to v2", "v2 to v3",
    ]


def test_the_report_counts_the_customers_migrated_onto_each_step(storage: Storage) -> None:
    host = Host(storage)
    host.engine.publish(journeys=[v1()], content=CONTENT)
    for customer in ("ann", "bob", "cat"):
        host.event("signed_up", customer)
    host.engine.publish(journeys=[v2()], running={"onboard": RENAME})
    host.event("opened")  # about no message: moves them, nothing more
    host.event("opened", "bob")  # cat is not moved yet: she has had no input since
    report = journey_report(storage, v2())
    row = report.step("engaged?")
    assert (row.reached, row.migrated, row.waiting) == (0, 2, 2)
    assert report.step("opened?").waiting == 1
    for r in report.steps:
        assert r.reached + r.migrated >= r.waiting, r
    assert report.step("welcome_email").migrated == 0
    table = format_table([report])
    assert "migrated" in table.splitlines()[2]


def test_a_back_test_decides_as_the_live_engine(storage: Storage) -> None:
    host = Host(storage)
    definitions = Definitions(journeys=(v1(), NEWS), content=CONTENT)
    host.engine.publish(definitions)
    host.event("signed_up")
    host.event("signed_up", "bob")
    host.event("news_ready")
    advance(host.engine, hours=1)
    publish_at = host.clock.now()
    host.engine.publish(journeys=[v2()], running={"onboard": RENAME})
    advance(host.engine, hours=1)
    host.opened(host.emails()[0])
    host.opened(host.emails(journey="news")[0], "bob")
    advance(host.engine, days=2)
    assert (host.texts(), host.texts("bob")) == (0, 1)
    stream: list[Any] = [*host.events[:3],
                         (publish_at, Publish(Definitions(journeys=(v2(),)),
                                              running={"onboard": RENAME})),
                         *host.events[3:]]
    result = backtest(definitions, stream, until=host.clock.now())
    assert result.messages == {"email": 3, "sms": 1}
    assert result.reports["onboard"] == journey_report(storage, v2())
    assert result.reports["onboard"].step("engaged?").migrated == 2


def test_a_customer_moved_onto_a_send_step_they_passed_gets_a_new_message(
    storage: Storage,
) -> None:
    # Version 2 sends the email again to those still waiting for its open: they move from the
    # wait onto the Send step they passed, and the email goes at their wake-up instant.
    host = Host(storage)
    host.engine.publish(journeys=[v1()], content=CONTENT)
    host.event("signed_up")
    (first,) = host.emails()
    again = Journey("onboard", "email1", {
        "email1": Send("hello", "email", next="opened?"),
        "opened?": WaitForEvent("opened", timeout=DAY, on_timeout="sms", of_send="email1"),
        "sms": Send("hello", "sms"),
    }, trigger=EventTrigger("signed_up"), version=2)
    host.engine.publish(journeys=[again], running={"onboard": VersionChange.migrate(
        {"email1": "email1", "opened?": "email1", "sms": "sms"}
    )})
    advance(host.engine, days=1)
    _, second = host.emails()
    assert second.journey_version == 2
    assert (first.idempotency_key.endswith(":email1:1"),
            second.idempotency_key.endswith(":email1:2")) == (True, True)
    host.opened(first)  # the earlier message: no longer the step's latest
    assert host.steps() == {None: "opened?"}
    host.opened(second)
    assert host.steps() == {}
    assert host.texts() == 0
