"""A wait for engagement with the journey's own message (``WaitForEvent(of_send=...)``), on
every storage: only an event naming the message this enrollment sent at that Send step (its
latest pass) ends the wait; opens of other journeys' messages, of other enrollments' messages
and of an earlier pass's message do not."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cjo import (
    ContentItem,
    ControlGroup,
    DefinitionError,
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
    Wait,
    WaitForEvent,
    prop,
)
from cjo.analytics import journey_report
from cjo.channels.base import Message
from cjo.model.governance import in_control_group
from cjo.serialization import dumps_definitions, loads_definitions
from cjo.simulate import backtest

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

CONTENT = (
    ContentItem("reminder", (Variant("email", {"subject": "Your cart", "text": "Come back"}),
                             Variant("sms", {"text": "Your cart"}))),
    ContentItem("news", (Variant("email", {"subject": "News", "text": "News"}),)),
)


def cart(**wait: Any) -> Journey:
    """A reminder email; a day to open it (that message), else an SMS."""
    return Journey("cart", "email", {
        "email": Send("reminder", "email", next="opened?"),
        "opened?": WaitForEvent("opened", timeout=DAY, on_timeout="sms", **wait),
        "sms": Send("reminder", "sms"),
    }, trigger=EventTrigger("added_to_cart"), reentry=ReentryPolicy(instance_key="cart_id"))


NEWS = Journey("news", "email", {"email": Send("news", "email")},
               trigger=EventTrigger("news_ready"))


class Host:
    def __init__(self, storage: Storage, **options: Any) -> None:
        self.clock = ManualClock(T0)
        self.email, self.sms = RecordingChannel(), RecordingChannel()
        self.engine = Engine(storage, channels={"email": self.email, "sms": self.sms},
                             clock=self.clock, **options)
        self.events: list[Event] = []
        self._ids = itertools.count(1)

    def event(self, name: str, customer: str = "ann", **props: Any) -> Any:
        event = Event(customer_id=customer, name=name, timestamp=self.clock.now(),
                      properties=props, event_id=f"e{next(self._ids)}")
        self.events.append(event)
        return self.engine.handle_event(event)

    def message(self, journey: str, customer: str = "ann", n: int = -1) -> Message:
        return [m for m in self.email.for_customer(customer) if m.journey_id == journey][n]

    def later(self, delta: timedelta) -> None:
        self.clock.advance(delta)
        self.engine.run_due()

    def texts(self, customer: str = "ann") -> int:
        return len(self.sms.for_customer(customer))


def test_an_open_of_another_journeys_or_customers_or_carts_message_does_not_end_the_wait(
    storage: Storage,
) -> None:
    host = Host(storage)
    host.engine.publish(journeys=[cart(of_send="email"), NEWS], content=CONTENT)
    host.event("added_to_cart", cart_id="c1")
    host.event("added_to_cart", cart_id="c2")
    host.event("news_ready")
    host.event("added_to_cart", "bob", cart_id="c9")
    first, second = (m for m in host.email.for_customer("ann") if m.journey_id == "cart")
    host.later(HOUR)
    host.event("opened", message_id=host.message("news").idempotency_key)  # another journey
    host.event("opened", message_id=host.message("cart", "bob").idempotency_key)  # not hers
    host.event("opened")  # about no message
    host.event("opened", message_id=second.idempotency_key)  # cart c2's: c1 still waits
    enrollments = {e.instance_key: e.step_id
                   for e in host.engine.customer_state("ann").enrollments}
    assert enrollments == {"c1": "opened?"}
    host.later(DAY)
    assert [m.fields["text"] for m in host.sms.for_customer("ann")] == ["Your cart"]
    assert host.texts("bob") == 1
    assert first.idempotency_key != second.idempotency_key


def test_without_of_send_any_open_ends_the_wait(storage: Storage) -> None:
    # The behaviour of_send exists to narrow: the first open of anything ends the wait.
    host = Host(storage)
    host.engine.publish(journeys=[cart(), NEWS], content=CONTENT)
    host.event("added_to_cart", cart_id="c1")
    host.event("news_ready")
    host.event("opened", message_id=host.message("news").idempotency_key)
    host.later(2 * DAY)
    assert host.texts() == 0


def test_an_open_of_its_own_message_ends_the_wait_and_where_still_applies(
    storage: Storage,
) -> None:
    host = Host(storage)
    host.engine.publish(journeys=[cart(of_send="email", where=prop("device") != "bot")],
                        content=CONTENT)
    host.event("added_to_cart", cart_id="c1")
    own = host.message("cart").idempotency_key
    host.event("opened", message_id=own, device="bot")   # its message, but `where` fails
    assert host.engine.customer_state("ann").enrollments[0].step_id == "opened?"
    host.event("opened", message_id=own, device="phone")
    assert host.engine.customer_state("ann").enrollments == []
    host.later(2 * DAY)
    assert host.texts() == 0


def test_a_step_passed_again_counts_only_its_latest_message(storage: Storage) -> None:
    host = Host(storage)
    journey = Journey("cart", "email", {
        "email": Send("reminder", "email", next="opened?"),
        "opened?": WaitForEvent("opened", timeout=DAY, on_timeout="pause", of_send="email"),
        "pause": Wait(DAY, next="email"),
    }, trigger=EventTrigger("added_to_cart"), max_lifetime=30 * DAY)
    host.engine.publish(journeys=[journey], content=CONTENT)
    host.event("added_to_cart")
    first = host.message("cart").idempotency_key
    host.later(2 * DAY)           # timed out, paused, sent again
    second = host.message("cart").idempotency_key
    assert first != second
    host.event("opened", message_id=first)   # the first reminder, opened late
    assert host.engine.customer_state("ann").enrollments[0].step_id == "opened?"
    host.event("opened", message_id=second)
    assert host.engine.customer_state("ann").enrollments == []


GROUP = ControlGroup(50, salt="c")


def test_a_send_that_sent_nothing_leaves_nothing_to_match(storage: Storage) -> None:
    # A control-group customer gets no marketing message; the receipt they do get (another
    # journey's, transactional) is no engagement with the reminder.
    host = Host(storage)
    receipt = Journey("receipt", "email", {"email": Send("news", "email", transactional=True)},
                      trigger=EventTrigger("news_ready"))
    host.engine.publish(journeys=[cart(of_send="email"), receipt], content=CONTENT,
                        control_group=GROUP)
    assert in_control_group("ann", GROUP)
    host.event("added_to_cart", cart_id="c1")
    host.event("news_ready")
    assert [m.journey_id for m in host.email.for_customer("ann")] == ["receipt"]
    host.event("opened", message_id=host.message("receipt").idempotency_key)
    assert host.engine.customer_state("ann").enrollments[0].step_id == "opened?"
    host.later(DAY)
    assert host.engine.customer_state("ann").enrollments == []
    assert [a.detail for a in host.engine.activities(T0, T0 + 2 * DAY, customer_id="ann")
            if a.kind == "timeout"] == ["opened"]


def test_a_back_test_decides_as_the_live_engine(storage: Storage) -> None:
    host = Host(storage)
    definitions = Definitions(journeys=(cart(of_send="email"), NEWS), content=CONTENT)
    host.engine.publish(definitions)
    host.event("added_to_cart", cart_id="c1")
    host.event("added_to_cart", "bob", cart_id="c2")
    host.event("news_ready")
    host.clock.advance(HOUR)
    host.event("opened", message_id=host.message("news").idempotency_key)
    host.event("opened", "bob", message_id=host.message("cart", "bob").idempotency_key)
    host.later(2 * DAY)
    assert (host.texts(), host.texts("bob")) == (1, 0)
    result = backtest(definitions, host.events, until=host.clock.now())
    assert result.messages == {"email": 3, "sms": 1}
    assert result.reports["cart"] == journey_report(storage, cart())


# --- definitions ---------------------------------------------------------------------------


def test_of_send_round_trips_through_json() -> None:
    definitions = Definitions(journeys=(cart(of_send="email", where=prop("device") == "x"),),
                              content=CONTENT)
    text = dumps_definitions(definitions)
    assert '"of_send": "email"' in text
    assert loads_definitions(text) == definitions
    # Definitions written before the option existed have no such key.
    older = dumps_definitions(Definitions(journeys=(cart(),), content=CONTENT))
    data = json.loads(older)
    del data["journeys"][0]["steps"]["opened?"]["of_send"]
    without = loads_definitions(json.dumps(data))
    step = without.journeys[0].steps["opened?"]
    assert isinstance(step, WaitForEvent) and step.of_send is None


@pytest.mark.parametrize(("steps", "message"), [
    ({"email": Send("reminder", "email", next="wait"),
      "wait": WaitForEvent("opened", DAY, of_send="mail")},
     "step 'wait': of_send refers to missing step 'mail'"),
    ({"email": Send("reminder", "email", next="pause"), "pause": Wait(DAY, next="wait"),
      "wait": WaitForEvent("opened", DAY, of_send="pause")},
     "step 'wait': of_send refers to step 'pause', a wait step, not a Send"),
    ({"wait": WaitForEvent("opened", DAY, on_timeout="email", of_send="email"),
      "email": Send("reminder", "email")},
     "step 'wait': of_send refers to step 'email', which comes before this step on no path"),
    ({"wait": WaitForEvent("opened", DAY, on_timeout="email", of_send="wait"),
      "email": Send("reminder", "email")},
     "step 'wait': of_send refers to step 'wait', a wait_for_event step, not a Send"),
])
def test_of_send_must_name_an_earlier_send_step(
    steps: dict[str, Any], message: str
) -> None:
    engine = Engine(channels={"email": RecordingChannel()}, clock=ManualClock(T0))
    entry = next(iter(steps))
    journey = Journey("j", entry, steps, trigger=EventTrigger("go"))
    with pytest.raises(DefinitionError, match=message):
        engine.publish(journeys=[journey], content=CONTENT)


def test_of_send_is_checked_in_every_version_and_a_loop_back_counts_as_before() -> None:
    engine = Engine(channels={"email": RecordingChannel()}, clock=ManualClock(T0))
    # The Send comes after the wait on the first pass, and before it on the next ones.
    looping = Journey("j", "wait", {
        "wait": WaitForEvent("opened", DAY, on_timeout="email", of_send="email"),
        "email": Send("reminder", "email", next="wait"),
    }, trigger=EventTrigger("go"), max_lifetime=30 * DAY)
    engine.publish(journeys=[looping], content=CONTENT)
    broken = Journey("j", "wait", {
        "wait": WaitForEvent("opened", DAY, on_timeout="email", of_send="gone"),
        "email": Send("reminder", "email", next="wait"),
    }, trigger=EventTrigger("go"), max_lifetime=30 * DAY)
    with pytest.raises(DefinitionError, match="of_send refers to missing step 'gone'"):
        engine.publish(journeys=[broken], content=CONTENT)
