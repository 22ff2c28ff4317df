"""Action steps: host callables called through the outbox, with each failure policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cjo import (
    Action,
    DeliveryResult,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    Message,
    Wait,
)
from cjo.errors import DefinitionError

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


class Desk:
    """A ticketing system that fails its first ``failures`` calls."""

    def __init__(self, failures: int = 0, permanent: bool = False) -> None:
        self.failures, self.permanent = failures, permanent
        self.calls: list[Message] = []
        self.tickets: dict[str, dict[str, str]] = {}

    def __call__(self, call: Message) -> DeliveryResult | None:
        self.calls.append(call)
        if self.failures:
            self.failures -= 1
            if self.permanent:
                return DeliveryResult.permanent("bad request")
            raise ConnectionError("desk is down")
        self.tickets.setdefault(call.idempotency_key, dict(call.fields))
        return None


def _journey(on_failure: str = "retry") -> Journey:
    return Journey(
        id="vip_care", trigger=EventTrigger("complained"), entry="ticket",
        steps={
            "ticket": Action("open_ticket", {"subject": "{{ profile.name }}: {{ event.topic }}"},
                             next="wait", on_failure=on_failure),  # type: ignore[arg-type]
            "wait": Wait(DAY),
        },
    )


def _engine(desk: Desk, on_failure: str = "retry") -> tuple[Engine, ManualClock]:
    clock = ManualClock(T0)
    engine = Engine(clock=clock, actions={"open_ticket": desk},
                    retry_backoff=timedelta(minutes=1), max_delivery_attempts=3)
    engine.publish(journeys=[_journey(on_failure)])
    engine.identify("ann", {"name": "Ann"})
    return engine, clock


def _retry_until_done(engine: Engine, clock: ManualClock) -> None:
    for _ in range(10):
        clock.advance(timedelta(minutes=5))
        engine.dispatch_pending()


def test_an_action_is_called_with_its_rendered_parameters() -> None:
    desk = Desk()
    engine, _ = _engine(desk)
    out = engine.handle_event(Event("ann", "complained", T0, {"topic": "late parcel"}, "e1"))
    assert desk.tickets == {out.messages[0].idempotency_key: {"subject": "Ann: late parcel"}}
    (call,) = desk.calls
    assert (call.content_id, call.channel, call.step_id) == ("open_ticket", "action:open_ticket",
                                                             "ticket")
    assert [e.step_id for e in engine.enrollments("ann")] == ["wait"]


def test_a_failing_action_is_retried_with_one_idempotency_key() -> None:
    desk = Desk(failures=2)
    engine, clock = _engine(desk)
    engine.handle_event(Event("ann", "complained", T0, {"topic": "x"}, "e1"))
    _retry_until_done(engine, clock)
    assert len(desk.calls) == 3 and len({c.idempotency_key for c in desk.calls}) == 1
    assert len(desk.tickets) == 1 and engine.dead_letters() == []


def test_skip_gives_up_at_the_first_failure_and_the_journey_goes_on() -> None:
    desk = Desk(failures=1)
    engine, clock = _engine(desk, "skip")
    engine.handle_event(Event("ann", "complained", T0, {"topic": "x"}, "e1"))
    _retry_until_done(engine, clock)
    assert len(desk.calls) == 1 and desk.tickets == {}
    assert [d.message.content_id for d in engine.dead_letters()] == ["open_ticket"]
    assert [e.step_id for e in engine.enrollments("ann") if e.active] == ["wait"]


@pytest.mark.parametrize("permanent", [False, True])
def test_exit_ends_the_enrollment_when_the_action_finally_fails(permanent: bool) -> None:
    desk = Desk(failures=10, permanent=permanent)
    engine, clock = _engine(desk, "exit")
    engine.handle_event(Event("ann", "complained", T0, {"topic": "x"}, "e1"))
    _retry_until_done(engine, clock)
    assert len(desk.calls) == (1 if permanent else 3)
    (ended,) = engine.enrollments("ann")
    assert (ended.status, ended.end_reason) == ("exited", "action open_ticket failed")


def test_an_action_returning_something_else_is_retried_and_named_in_the_error() -> None:
    calls: list[Message] = []

    def confused(call: Message) -> DeliveryResult | None:
        calls.append(call)
        return "ok"  # type: ignore[return-value]

    clock = ManualClock(T0)
    engine = Engine(clock=clock, actions={"open_ticket": confused},
                    retry_backoff=timedelta(minutes=1), max_delivery_attempts=2)
    engine.publish(journeys=[_journey("skip")])
    engine.identify("ann", {"name": "Ann"})
    engine.handle_event(Event("ann", "complained", T0, {"topic": "x"}, "e1"))
    _retry_until_done(engine, clock)
    [dead] = engine.dead_letters()
    assert dead.last_error == "action 'open_ticket' returned 'ok', not None or a DeliveryResult"
    assert len(calls) == 1  # skip: given up at the first failure


def test_an_unregistered_action_is_refused_at_publish() -> None:
    with pytest.raises(DefinitionError, match="action 'open_ticket' is not registered"):
        Engine().publish(journeys=[_journey()])


@pytest.mark.parametrize(("template", "message"), [
    ("{{ event.topic", "param 'subject' is not a valid Liquid template"),
    ("{{ event.topic | no_such_filter }}", "param 'subject' does not render on the sample"),
    ("{% for i in (1..100000) %}x{% endfor %}", "param 'subject' is over a template limit"),
], ids=["syntax", "unknown filter", "limit"])
def test_params_that_fail_for_every_customer_are_refused_at_publish(
    template: str, message: str
) -> None:
    # As content templates are: rendered against a sample at publish, not failing every call.
    engine = Engine(actions={"open_ticket": Desk()})
    journey = Journey(id="vip_care", trigger=EventTrigger("complained"), entry="ticket",
                      steps={"ticket": Action("open_ticket", {"subject": template})})
    with pytest.raises(DefinitionError) as raised:
        engine.publish(journeys=[journey])
    assert [(p.location, message in p.message) for p in raised.value.problems] == [
        ("journey 'vip_care' v1 / step 'ticket'", True)]
    assert engine.generation == 0


def test_params_reading_what_a_sample_cannot_know_still_publish() -> None:
    # Undefined variables and values of unknown shape are the call's data, not the template's
    # fault: the derived sample refuses only what fails for everyone.
    journey = Journey(id="vip_care", trigger=EventTrigger("complained"), entry="ticket",
                      steps={"ticket": Action("open_ticket", {
                          "subject": "{{ profile.name }} {{ context.received.paid.total }}",
                          "items": "{% for i in event.items %}{{ i.sku }}{% endfor %}",
                          "big": "{% if event.total > 50 %}big{% endif %}",
                      })})
    assert Engine(actions={"open_ticket": Desk()}).publish(journeys=[journey]) == 1


def test_the_call_whose_delivery_ends_the_enrollment_reports_the_end() -> None:
    desk = Desk(failures=1, permanent=True)
    engine, _ = _engine(desk, "exit")
    out = engine.handle_event(Event("ann", "complained", T0, {"topic": "x"}, "e1"))
    assert [(e.journey_id, e.status, e.reason) for e in out.ended] == [
        ("vip_care", "exited", "action open_ticket failed")]
    assert out.delivery == {out.messages[0].idempotency_key: "dead"}


def test_a_backtest_calls_the_actions_given_with_their_rendered_parameters() -> None:
    from cjo import Definitions
    from cjo.simulate import ProfileUpdate, backtest

    desk = Desk()
    result = backtest(
        Definitions(journeys=(_journey(),)),
        [(T0, ProfileUpdate("ann", {"name": "Ann"})),
         Event(name="complained", customer_id="ann", timestamp=T0, event_id="c1",
               properties={"topic": "late"})],
        actions={"open_ticket": desk},
    )
    assert [dict(c.fields) for c in desk.calls] == [{"subject": "Ann: late"}]
    assert result.messages == {"action:open_ticket": 1}
