from __future__ import annotations

import io
import time
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

import pytest

from cjo import (
    Channel,
    ConsoleChannel,
    DeliveryResult,
    Engine,
    EventTrigger,
    InMemoryStorage,
    Journey,
    ManualClock,
    Message,
    Outcome,
    RecordingChannel,
    Send,
    UsageError,
    Wait,
    run_worker,
)
from cjo.channels.base import deliver
from cjo.channels.retry import retry_delay
from cjo.limits import MAX_DELIVERY_ERROR
from tests.helpers import SIMPLE_CONTENT, T0, ev


def message(key: str = "j:c1:1.x:send:1", customer: str = "c1") -> Message:
    return Message(
        idempotency_key=key, customer_id=customer, channel="email", content_id="hello",
        fields={"subject": "Hi Ann"}, journey_id="j", journey_version=1, step_id="send",
        enrollment_id="j:c1:1.x", created_at=T0,
    )


def test_console_channel_prints_one_line_per_message():
    out = io.StringIO()
    result = ConsoleChannel(out).send(message())
    assert result == DeliveryResult("delivered", provider_id="j:c1:1.x:send:1")
    assert result.ok
    assert out.getvalue() == (
        "[2026-03-02T10:00:00+00:00] email -> c1: subject='Hi Ann' (j/send)\n"
    )


def test_recording_channel_keeps_each_key_once():
    channel = RecordingChannel()
    channel.send(message())
    channel.send(message())
    channel.send(message("other", customer="c2"))
    assert channel.attempts == 3
    assert [m.idempotency_key for m in channel.messages] == ["j:c1:1.x:send:1", "other"]
    assert [m.customer_id for m in channel.for_customer("c2")] == ["c2"]
    channel.clear()
    assert channel.messages == []
    assert channel.attempts == 0


def test_delivery_result_ok_only_when_delivered():
    assert not DeliveryResult("transient", error="x").ok
    assert not DeliveryResult("permanent").ok


# --- classification, back-off ----------------------------------------------------------------


class _Raising(Channel):
    def send(self, message: Message) -> DeliveryResult:
        raise ConnectionResetError("peer reset")


class _Odd(Channel):
    def send(self, message: Message) -> DeliveryResult:
        return "ok"  # type: ignore[return-value]


def test_deliver_classifies_exceptions_odd_results_and_missing_channels() -> None:
    assert deliver(RecordingChannel(), message()).status == "delivered"
    raised = deliver(_Raising(), message())
    assert (raised.status, raised.error) == ("transient", "ConnectionResetError: peer reset")
    odd = deliver(_Odd(), message())
    assert odd.status == "transient"
    assert odd.error == "channel returned 'ok', not a DeliveryResult"
    missing = deliver(None, message())
    assert (missing.status, missing.error) == ("permanent", "no channel 'email'")
    assert not missing.unreachable  # a channel this engine lacks blames no address
    assert DeliveryResult.transient("x") == DeliveryResult("transient", error="x")
    assert DeliveryResult.permanent("y") == DeliveryResult("permanent", error="y")
    assert DeliveryResult.permanent("y").unreachable
    assert not DeliveryResult.permanent("z", unreachable=False).unreachable


@pytest.mark.parametrize("status", ["transient", "permanent"])
def test_a_failed_result_needs_its_error(status: str) -> None:
    """The error is kept as the message's last error: a failure without one says nothing."""
    with pytest.raises(UsageError, match=f"DeliveryResult.{status}\\(\\) needs error: the text "
                                         "saying why the attempt failed"):
        getattr(DeliveryResult, status)()


@pytest.mark.parametrize("field", ["error", "provider_id"])
@pytest.mark.parametrize("value", [ValueError("boom"), 503, b"503"])
def test_a_delivery_result_refuses_an_error_or_provider_id_that_is_not_text(
    field: str, value: object
) -> None:
    with pytest.raises(UsageError, match=f"DeliveryResult {field} must be a str or None, got "
                                         f"{type(value).__name__}"):
        DeliveryResult("transient", **{field: value})


class _Verbose(Channel):
    """Returns, or raises, a provider's whole error page."""

    def __init__(self, raises: bool) -> None:
        self.raises = raises

    def send(self, message: Message) -> DeliveryResult:
        page = "<html>" + "x" * 100_000
        if self.raises:
            raise RuntimeError(page)
        return DeliveryResult.permanent(page)


@pytest.mark.parametrize("raises", [False, True], ids=["returned", "raised"])
def test_deliver_cuts_a_long_error_to_the_limit(raises: bool) -> None:
    error = deliver(_Verbose(raises), message()).error
    assert error is not None
    assert len(error) == MAX_DELIVERY_ERROR
    assert error.startswith("RuntimeError: <html>x" if raises else "<html>x")
    assert error.endswith("x…")
    huge = deliver(_Odd(), message())  # an odd result is shown only in part
    assert huge.error is not None and len(huge.error) < MAX_DELIVERY_ERROR


def test_retry_delay_doubles_up_to_the_maximum_with_deterministic_jitter() -> None:
    backoff, cap = timedelta(minutes=1), timedelta(minutes=10)
    delays = [retry_delay("k1", n, backoff, cap) for n in range(1, 8)]
    assert delays == [retry_delay("k1", n, backoff, cap) for n in range(1, 8)], "reproducible"
    for n, delay in enumerate(delays, start=1):
        full = min(backoff * 2 ** (n - 1), cap)
        assert full / 2 <= delay <= full, (n, delay)
    assert delays[-1] <= cap
    # The jitter depends on key and attempt: messages failing together spread out.
    spread = {retry_delay(f"k{i}", 3, backoff, cap) for i in range(50)}
    assert len(spread) > 40
    assert retry_delay("k", 10_000, backoff, cap) <= cap, "no overflow"
    with pytest.raises(ValueError, match="attempt"):
        retry_delay("k", 0, backoff, cap)


# --- the engine's delivery -------------------------------------------------------------------


class _Scripted(Channel):
    """Answers each send with the next status of ``script`` (then ``delivered``), keeping
    what it was sent; ``delay`` seconds of real time per send (a slow provider)."""

    def __init__(self, *script: str, delay: float = 0.0) -> None:
        self.script = list(script)
        self.sent: list[Message] = []
        self.delay = delay

    def send(self, message: Message) -> DeliveryResult:
        if self.delay:
            time.sleep(self.delay)
        self.sent.append(message)
        status = self.script.pop(0) if self.script else "delivered"
        return DeliveryResult(status, error=None if status == "delivered" else f"{status}!")  # type: ignore[arg-type]


def _engine(channel: Channel, **kwargs: Any) -> tuple[Engine, ManualClock]:
    clock = ManualClock(T0)
    engine = Engine(channels={"email": channel}, clock=clock, **kwargs)
    engine.publish(
        journeys=[Journey(id="welcome", trigger=EventTrigger("signed_up"), entry="send",
                          steps={"send": Send("hello", "email")})],
        content=SIMPLE_CONTENT,
    )
    engine.identify("c1", {"first_name": "Ada", "email": "ada@example.com"})
    return engine, clock


def _signup(engine: Engine, customer: str = "c1") -> Outcome:
    return engine.handle_event(ev("signed_up", customer, engine.clock.now()))


def test_inline_dispatch_sends_before_handle_event_returns() -> None:
    channel = _Scripted()
    engine, _ = _engine(channel)
    outcome = _signup(engine)
    (sent,) = outcome.messages
    assert channel.sent == [sent]
    assert outcome.delivery == {sent.idempotency_key: "delivered"}
    assert outcome.pending == ()


def test_transient_failures_are_retried_with_back_off_then_become_dead_letters() -> None:
    channel = _Scripted("transient", "transient", "transient")
    backoff, cap = timedelta(minutes=1), timedelta(minutes=3)
    engine, clock = _engine(channel, max_delivery_attempts=3, retry_backoff=backoff,
                            max_retry_delay=cap)
    outcome = _signup(engine)
    (sent,) = outcome.messages
    key = sent.idempotency_key
    assert outcome.delivery == {key: "pending"}
    assert outcome.pending == (sent,)
    for attempt in (1, 2):
        entry = engine.storage.outbox_entry(key)
        assert entry is not None
        assert (entry.status, entry.attempts, entry.last_error) == ("pending", attempt,
                                                                      "transient!")
        assert entry.available_at == clock.now() + retry_delay(key, attempt, backoff, cap)
        clock.set(entry.available_at - timedelta(microseconds=1))
        assert engine.dispatch_pending() == 0, "not before its back-off"
        clock.set(entry.available_at)
        assert engine.dispatch_pending() == 1
    (dead,) = engine.dead_letters()
    assert (dead.key, dead.attempts, dead.last_error, dead.dead_at) == (
        key, 3, "transient!", clock.now()
    )
    assert dead.message == sent
    assert [m.idempotency_key for m in channel.sent] == [key] * 3, "one key for every attempt"


def test_a_permanent_failure_is_never_retried() -> None:
    channel = _Scripted("permanent")
    engine, clock = _engine(channel)
    outcome = _signup(engine)
    (sent,) = outcome.messages
    assert outcome.delivery == {sent.idempotency_key: "dead"}
    clock.advance(days=1)
    assert engine.dispatch_pending() == 0
    assert [d.last_error for d in engine.dead_letters()] == ["permanent!"]
    assert len(channel.sent) == 1


def test_a_process_without_the_channel_leaves_its_messages_pending() -> None:
    channel = RecordingChannel()
    engine, clock = _engine(channel, dispatch="deferred")
    (written,) = _signup(engine).messages
    key = written.idempotency_key
    # Another process on the same storage, without the channel.
    other = Engine(engine.storage, channels={}, clock=clock)
    clock.advance(minutes=5)
    assert other.dispatch_pending() == 0
    entry = engine.storage.outbox_entry(key)
    assert entry is not None
    # Untouched: not attempted, not leased (still available since the deferred release).
    assert (entry.status, entry.attempts, entry.available_at) == ("pending", 0, T0)
    assert other.dead_letters() == []
    assert other.pending_by_channel() == {"email": 1}
    assert engine.dispatch_pending() == 1
    assert [m.idempotency_key for m in channel.messages] == [key]
    assert other.pending_by_channel() == {}


def test_messages_of_channels_a_claim_did_not_ask_for_are_left_leased(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Unfiltered(InMemoryStorage):
        """An adapter that ignores the channel filter."""

        def claim_outbox(
            self, now: datetime, limit: int, lease: timedelta, *,
            channels: Collection[str] | None = None,
        ) -> list[Message]:
            return super().claim_outbox(now, limit, lease)

    channel = RecordingChannel()
    storage = Unfiltered()
    engine, clock = _engine(channel, dispatch="deferred", storage=storage)
    (written,) = _signup(engine).messages
    other = Engine(storage, channels={}, clock=clock)
    assert other.dispatch_pending() == 0  # one claim: not handed out again at once
    assert "Unfiltered.claim_outbox handed out messages of channels it was not asked for " \
           "(email)" in caplog.text
    entry = storage.outbox_entry(written.idempotency_key)
    assert entry is not None
    assert (entry.status, entry.attempts) == ("pending", 0)
    assert entry.available_at == T0 + storage.dispatch_lease, "left leased, not released"
    assert engine.dispatch_pending() == 0
    clock.advance(storage.dispatch_lease)
    assert engine.dispatch_pending() == 1
    assert [m.idempotency_key for m in channel.messages] == [written.idempotency_key]


def test_dead_letters_retry_and_discard_through_the_engine() -> None:
    channel = _Scripted("permanent", "permanent", "permanent")
    engine, clock = _engine(channel)
    keys = []
    for customer in ("c1", "c2", "c3"):
        engine.identify(customer, {"first_name": customer})
        keys.append(_signup(engine, customer).messages[0].idempotency_key)
        clock.advance(minutes=1)
    assert [d.key for d in engine.dead_letters()] == keys[::-1]
    page = engine.dead_letters(limit=2, newest_first=False)
    assert [d.key for d in page] == keys[:2]
    assert [d.key for d in engine.dead_letters(after=page[-1], newest_first=False)] == keys[2:]
    with pytest.raises(UsageError, match="limit"):
        engine.dead_letters(limit=0)

    # The permanent failure blocked c1's email: lifted first, or the retry is withheld.
    engine.unblock_channel("c1", "email")
    assert engine.retry_dead_letter(keys[0]) is True
    assert engine.retry_dead_letter(keys[0]) is False
    assert engine.dispatch_pending() == 1
    entry = engine.storage.outbox_entry(keys[0])
    assert entry is not None
    assert (entry.status, entry.attempts) == ("delivered", 1)
    assert [m.idempotency_key for m in channel.sent].count(keys[0]) == 2

    assert engine.discard_dead_letter(keys[1]) is True
    assert engine.discard_dead_letter(keys[1]) is False
    assert [d.key for d in engine.dead_letters()] == [keys[2]]
    assert engine.retry_dead_letter("nope") is False


def test_deferred_dispatch_keeps_a_slow_channel_out_of_handle_event() -> None:
    slow = _Scripted(delay=0.5)
    engine, _ = _engine(slow, dispatch="deferred")
    started = time.monotonic()
    outcome = _signup(engine)
    assert time.monotonic() - started < 0.5
    assert slow.sent == [], "nothing was sent inside handle_event"
    (pending,) = outcome.pending
    assert outcome.delivery == {pending.idempotency_key: "pending"}
    entry = engine.storage.outbox_entry(pending.idempotency_key)
    assert entry is not None
    assert (entry.status, entry.available_at) == ("pending", engine.clock.now())
    stats = run_worker(engine, poll_interval=0, max_iterations=1)
    assert stats.dispatched == 1
    assert slow.sent == [pending]


def test_deferred_dispatch_applies_to_run_due_and_identify() -> None:
    channel = _Scripted()
    clock = ManualClock(T0)
    engine = Engine(channels={"email": channel}, clock=clock, dispatch="deferred")
    engine.publish(
        journeys=[Journey(id="later", trigger=EventTrigger("signed_up"), entry="wait",
                          steps={"wait": Wait(timedelta(hours=1), next="send"),
                                 "send": Send("hello", "email")})],
        content=SIMPLE_CONTENT,
    )
    engine.identify("c1", {"first_name": "Ada"})
    _signup(engine)
    clock.advance(hours=1)
    outcome = engine.run_due()
    assert len(outcome.pending) == 1
    assert channel.sent == []
    assert engine.dispatch_pending() == 1
    assert channel.sent == list(outcome.pending)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"dispatch": "later"}, "dispatch"),
     ({"max_delivery_attempts": 0}, "max_delivery_attempts"),
     ({"retry_backoff": timedelta(0)}, "retry_backoff"),
     ({"retry_backoff": timedelta(minutes=5), "max_retry_delay": timedelta(minutes=1)},
      "max_retry_delay")],
)
def test_delivery_settings_are_checked(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        Engine(**kwargs)


@pytest.mark.parametrize("value", ["no", 0, None])
def test_a_delivery_result_refuses_unreachable_that_is_not_a_bool(value: object) -> None:
    """A truthy "no" would block the customer's channel: only True or False says which."""
    with pytest.raises(UsageError, match="DeliveryResult unreachable must be True or False, "
                                         f"got {type(value).__name__}"):
        DeliveryResult.permanent("refused", unreachable=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("result", "match"), [
    (lambda: DeliveryResult.transient("busy", retry_after=-timedelta(seconds=1)),
     "must not be negative"),
    (lambda: DeliveryResult.transient("busy", retry_after=30), "must be a timedelta"),  # type: ignore[arg-type]
    (lambda: DeliveryResult("delivered", retry_after=timedelta(minutes=1)),
     "for a transient failure, not delivered"),
    (lambda: DeliveryResult.permanent("gone").__class__(
        "permanent", error="gone", retry_after=timedelta(minutes=1)),
     "for a transient failure, not permanent"),
])
def test_a_delivery_result_checks_retry_after(
    result: Callable[[], DeliveryResult], match: str
) -> None:
    with pytest.raises(UsageError, match=match):
        result()


def test_deliver_keeps_retry_after_when_it_cuts_the_error() -> None:
    class _Limited(Channel):
        def send(self, message: Message) -> DeliveryResult:
            return DeliveryResult.transient("x" * 5_000, retry_after=timedelta(minutes=5))

    result = deliver(_Limited(), message())
    assert (result.status, result.retry_after) == ("transient", timedelta(minutes=5))
    assert len(result.error or "") == MAX_DELIVERY_ERROR
