"""A channel that fails in odd ways, and an input stream that breaks midway: the failure is
the one message's (or the stream's), and nothing handled or sent before it is lost or done
twice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from cjo import (
    Channel,
    ContentItem,
    DeliveryResult,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    Message,
    Send,
    Storage,
    Variant,
    Wait,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CUSTOMERS = ["c0", "c1", "c2"]


class _Cancelled(BaseException):
    """A library's cancellation or timeout, deriving from BaseException as some do."""


class _Failing(Channel):
    """Delivers, except on the ``fail_at``-th attempt (from 0), where it calls ``fail``."""

    def __init__(self, fail_at: int, fail: BaseException | None = None,
                 result: DeliveryResult | None = None) -> None:
        self.fail_at, self.fail, self.result = fail_at, fail, result
        self.attempts: list[str] = []

    def send(self, message: Message) -> DeliveryResult:
        self.attempts.append(message.idempotency_key)
        if len(self.attempts) - 1 == self.fail_at:
            if self.fail is not None:
                raise self.fail
            if self.result is not None:
                return self.result
        return DeliveryResult("delivered")


def _engine(storage: Storage, channel: Channel, dispatch: str = "inline") -> Engine:
    engine = Engine(storage=storage, channels={"sms": channel}, clock=ManualClock(T0),
                    dispatch=dispatch)
    engine.publish(
        content=[ContentItem("c", (Variant("sms", {"text": "hi"}),))],
        journeys=[Journey("j", trigger=EventTrigger("go"), entry="s",
                          steps={"s": Send("c", "sms", transactional=True)})],
    )
    for customer in CUSTOMERS:
        engine.identify(customer, {"phone": f"+1555{customer}"})
    return engine


def _go(customer: str) -> Event:
    return Event(customer, "go", T0, event_id=f"go-{customer}")


def _entries(storage: Storage) -> list[tuple[str, str, int]]:
    return sorted((e.message.customer_id, e.status, e.attempts)
                  for c in CUSTOMERS for e in storage.customer_outbox(c))


def test_a_base_exception_raised_by_a_channel_is_a_transient_failure(storage: Storage) -> None:
    channel = _Failing(fail_at=1, fail=_Cancelled("send timed out"))
    engine = _engine(storage, channel)
    outcome = engine.handle_events([_go(c) for c in CUSTOMERS])
    assert sorted(outcome.delivery.values()) == ["delivered", "delivered", "pending"]
    assert _entries(storage) == [("c0", "delivered", 1), ("c1", "pending", 1),
                                 ("c2", "delivered", 1)]
    (entry,) = storage.customer_outbox("c1")
    assert entry.last_error == "_Cancelled: send timed out"
    engine.clock.advance(hours=1)  # type: ignore[attr-defined]
    assert engine.dispatch_pending() == 1
    assert len(channel.attempts) == 4 and channel.attempts[3] == channel.attempts[1]
    assert _entries(storage) == [("c0", "delivered", 1), ("c1", "delivered", 2),
                                 ("c2", "delivered", 1)]


def test_a_stop_signal_during_a_send_keeps_what_was_sent_before(storage: Storage) -> None:
    channel = _Failing(fail_at=1, fail=KeyboardInterrupt())
    engine = _engine(storage, channel, dispatch="deferred")
    engine.handle_events([_go(c) for c in CUSTOMERS])
    with pytest.raises(KeyboardInterrupt):
        engine.dispatch_pending()
    first = channel.attempts[0]
    entry = storage.outbox_entry(first)
    assert entry is not None and (entry.status, entry.attempts) == ("delivered", 1)
    # The interrupted pass's lease runs out: the others are sent, the first not again.
    engine.clock.advance(hours=1)  # type: ignore[attr-defined]
    assert engine.dispatch_pending() == 2
    assert channel.attempts.count(first) == 1
    assert [status for _, status, _ in _entries(storage)] == ["delivered"] * 3


def _tampered(**fields: object) -> DeliveryResult:
    result = DeliveryResult.permanent("refused")
    for name, value in fields.items():
        object.__setattr__(result, name, value)  # what a careless adapter might do
    return result


@pytest.mark.parametrize(("result", "error"), [
    (_tampered(error=503), "DeliveryResult error must be a str or None, got int 503"),
    (_tampered(unreachable="no"), "DeliveryResult unreachable must be True or False, got str"),
    (_tampered(status="sent"), "DeliveryResult status 'sent' is not one of delivered"),
    (_tampered(retry_after=timedelta(minutes=5)), "retry_after"),
])
def test_a_delivery_result_changed_past_its_checks_is_a_transient_failure(
    storage: Storage, result: DeliveryResult, error: str
) -> None:
    channel = _Failing(fail_at=1, result=result)
    engine = _engine(storage, channel)
    engine.handle_events([_go(c) for c in CUSTOMERS])
    failed = channel.attempts[1]
    entry = storage.outbox_entry(failed)
    assert entry is not None and entry.status == "pending" and entry.last_error is not None
    assert entry.last_error.startswith("channel returned an invalid DeliveryResult: ")
    assert error in entry.last_error
    # Nothing was blamed on the customer's address, and the others were delivered.
    assert engine.customer_state(entry.message.customer_id).blocked == {}
    assert sorted(status for _, status, _ in _entries(storage)) == [
        "delivered", "delivered", "pending"]


class _QueueGoneError(Exception):
    pass


def _stream(count: int, fail: BaseException) -> Iterator[Event]:
    for number in range(count):
        yield Event(f"s{number}", "go", T0, event_id=f"s{number}")
    raise fail


@pytest.mark.parametrize("fail", [_QueueGoneError("the queue is gone"), KeyboardInterrupt()])
def test_the_items_an_iterable_gave_before_it_raised_are_handled(
    storage: Storage, fail: BaseException
) -> None:
    engine = Engine(storage=storage, clock=ManualClock(T0))
    engine.publish(journeys=[Journey("j", trigger=EventTrigger("go"), entry="w",
                                     steps={"w": Wait(timedelta(days=1))})])
    with pytest.raises(type(fail)) as raised:
        engine.handle_events(_stream(7, fail), batch_size=5)
    assert raised.value is fail  # the stream's own error, as it raised it
    assert [storage.peek(f"s{n}") is not None for n in range(8)] == [True] * 7 + [False]
    # Given again, they are duplicates: nothing is handled twice.
    again = engine.handle_events(Event(f"s{n}", "go", T0, event_id=f"s{n}") for n in range(7))
    assert again.entered == ()


def test_a_storage_error_recording_inline_sends_keeps_the_calls_outcome(
    storage: Storage,
) -> None:
    # The connection is lost after the commit, while the sends are recorded: the decision is
    # stored, so the call returns what it decided; the messages stay in the outbox and go out
    # again with their keys once the lease has run out (at least once).
    from cjo.errors import StorageError

    channel = _Failing(fail_at=-1)
    engine = _engine(storage, channel)
    record = storage.complete_outbox_many

    def lost(*args: object, **kwargs: object) -> None:
        raise StorageError("connection lost")

    storage.complete_outbox_many = lost  # type: ignore[method-assign]
    try:
        outcome = engine.handle_event(_go("c0"))
    finally:
        storage.complete_outbox_many = record  # type: ignore[method-assign]
    assert [e.journey_id for e in outcome.entered] == ["j"]
    assert list(outcome.delivery.values()) == ["delivered"]
    assert engine.handle_event(_go("c0")).duplicate
    assert _entries(storage)[0][:2] == ("c0", "pending")
    engine.clock.advance(hours=1)  # type: ignore[attr-defined]
    assert engine.dispatch_pending() == 1
    assert channel.attempts == [channel.attempts[0]] * 2   # the same key, again
    assert _entries(storage)[0][:2] == ("c0", "delivered")


class _NoTextError(Exception):
    def __str__(self) -> str:
        raise ValueError("no text")


@pytest.mark.parametrize(("result", "fail", "error"), [
    (DeliveryResult.transient("busy\x00"), None, "busy\ufffd"),
    (DeliveryResult.transient("bad \udc80 byte"), None, "bad \ufffd byte"),
    (None, RuntimeError("reply \ud800\x00"), "RuntimeError: reply \ufffd\ufffd"),
    (None, _NoTextError(), "_NoTextError: <str() of the exception failed>"),
], ids=["nul", "surrogate", "raised", "no-str"])
def test_an_error_text_no_storage_can_keep_is_recorded_made_storable(
    storage: Storage, result: DeliveryResult | None, fail: BaseException | None, error: str
) -> None:
    # A provider's reply decoded with surrogateescape, or a NUL byte in it: recording the
    # attempt must not fail (PostgreSQL refuses NUL, UTF-8 lone surrogates), or the message
    # would stay leased, be sent again at every lease, and never be counted.
    channel = _Failing(fail_at=0, fail=fail, result=result)
    engine = _engine(storage, channel)
    outcome = engine.handle_event(_go("c0"))
    assert list(outcome.delivery.values()) == ["pending"]
    (entry,) = storage.customer_outbox("c0")
    assert (entry.status, entry.attempts, entry.last_error) == ("pending", 1, error)
    engine.clock.advance(hours=1)  # type: ignore[attr-defined]
    assert engine.dispatch_pending() == 1
    assert _entries(storage)[0] == ("c0", "delivered", 2)


def test_a_permanent_error_no_storage_can_keep_makes_a_dead_letter(storage: Storage) -> None:
    channel = _Failing(fail_at=0, result=DeliveryResult.permanent("gone \udcff\x00"))
    engine = _engine(storage, channel)
    engine.handle_event(_go("c0"))
    (dead,) = engine.dead_letters()
    assert (dead.message.customer_id, dead.last_error) == ("c0", "gone \ufffd\ufffd")
    assert engine.customer_state("c0").blocked == {
        "sms": "permanent failure: gone \ufffd\ufffd"}
