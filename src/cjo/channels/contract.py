"""The conformance suite for channel adapters (needs pytest; ``import cjo`` does not).

Subclass ``ChannelContract`` once per adapter, with a name starting with ``Test``, and give it a
channel and three ways to steer the endpoint it talks to (a local test server, a fake
provider): every test then runs on it::

    from cjo.testing import ChannelContract

    class TestMyChannel(ChannelContract):
        deduplicates = True  # the provider drops a second message with a known key

        def make_channel(self) -> Channel:
            return MyChannel(self.server.url)

        def endpoint_succeeds(self) -> None:
            self.server.mode = "ok"

        def endpoint_fails_transiently(self) -> None:
            self.server.mode = "503"

        def endpoint_fails_permanently(self) -> None:
            self.server.mode = "400"

        def received_keys(self) -> list[str]:
            return self.server.delivered_keys

The tests check what the engine relies on: ``send`` returns a ``DeliveryResult``; a working
endpoint gives ``delivered``, a temporary problem ``transient`` and a lasting one ``permanent``
(as the engine classifies them: an exception counts as transient), with an error saying why;
the idempotency key reaches the provider unchanged; ``send`` leaves the message it is given
unchanged; a retry after a transient failure delivers once, under the same key; where the
provider de-duplicates, a key sent twice is delivered once;
and an ``Engine`` dispatching through the channel records delivered messages, schedules
retries and keeps dead letters.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from cjo.errors import missing_extra

try:
    import pytest
except ImportError as exc:  # the suite's runner, not a dependency of cjo itself
    raise missing_extra("cjo.channels.contract", "pytest", "testing", exc) from exc

from cjo.channels.base import Channel, DeliveryResult, Message, deliver
from cjo.clock import ManualClock
from cjo.runtime.state import CustomerState
from cjo.storage.memory import InMemoryStorage

__all__ = ["ChannelContract"]

_T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
#: A key with the separators real keys have (journey, enrollment, step, attempt counter).
_ODD_KEY = "spring_sale-2:cust/42@example.com:3.x:send_email:1"


class ChannelContract:
    """What the engine relies on from a ``Channel``. Implement ``make_channel``, the three
    ``endpoint_*`` hooks and ``received_keys``; set ``deduplicates = True`` when the provider
    drops a message whose idempotency key it has seen (the test of it is skipped otherwise).
    ``make_message`` may be overridden to give the channel the fields and recipient it needs;
    the default has ``subject``, ``text`` and ``html`` fields and an ``email`` and a ``phone``
    recipient.

    A test may call the ``endpoint_*`` hooks one after another in any order (transient, then
    permanent): each sets the endpoint's whole state, undoing what the others set, and none of
    them forgets what the endpoint accepted before (``received_keys``). Each test gets a fresh
    directory, ``self.tmp_path``, set before ``make_channel`` is called (for a channel that
    writes files, or an endpoint that keeps its state in one)."""

    #: True if the endpoint delivers a message once however many times its key is sent.
    deduplicates: ClassVar[bool] = False

    tmp_path: Path

    # --- hooks ---------------------------------------------------------------------------------

    def make_channel(self) -> Channel:
        """The channel under test, talking to the endpoint the other hooks steer."""
        raise NotImplementedError("subclasses of ChannelContract implement make_channel()")

    def endpoint_succeeds(self) -> None:
        """Make the endpoint accept the next messages (the state each test starts in)."""
        raise NotImplementedError("subclasses of ChannelContract implement endpoint_succeeds()")

    def endpoint_fails_transiently(self) -> None:
        """Make the endpoint fail the next messages in a way a retry may get past (a 503, a
        4xx SMTP reply, a timeout, a refused connection)."""
        raise NotImplementedError(
            "subclasses of ChannelContract implement endpoint_fails_transiently()"
        )

    def endpoint_fails_permanently(self) -> None:
        """Make the endpoint refuse the next messages for good (a 400, a 5xx SMTP reply)."""
        raise NotImplementedError(
            "subclasses of ChannelContract implement endpoint_fails_permanently()"
        )

    def received_keys(self) -> list[str]:
        """The idempotency keys of the messages the endpoint accepted, one per delivery, in
        order, exactly as the provider saw them."""
        raise NotImplementedError("subclasses of ChannelContract implement received_keys()")

    def make_message(self, key: str, **changes: Any) -> Message:
        """A message for the channel under test, with idempotency key ``key``."""
        values: dict[str, Any] = {
            "idempotency_key": key, "customer_id": "c1", "channel": "contract",
            "content_id": "welcome", "journey_id": "onboarding", "journey_version": 1,
            "step_id": "send_welcome", "enrollment_id": "onboarding:c1:1", "created_at": _T0,
            "fields": {"subject": "Welcome, Ada", "text": "Hello Ada.",
                       "html": "<p>Hello <b>Ada</b>.</p>"},
            "recipient": {"email": "ada@example.com", "phone": "+15555550100"},
        }
        values.update(changes)
        return Message(**values)

    def _check_received(self, expected: list[str]) -> None:
        received = self.received_keys()
        assert received == expected, (
            f"received_keys() returned {received!r}, expected {expected!r}: it lists every key "
            "the endpoint accepted since make_channel(), in order, kept whatever the endpoint_* "
            "hooks change"
        )

    @pytest.fixture
    def channel(self, tmp_path: Path) -> Iterator[Channel]:
        self.tmp_path = tmp_path
        channel = self.make_channel()
        self.endpoint_succeeds()
        yield channel
        close = getattr(channel, "close", None)
        if callable(close):  # channels that hold connections (WebhookChannel) release them
            close()

    # --- the contract --------------------------------------------------------------------------

    def test_a_working_endpoint_gives_delivered(self, channel: Channel) -> None:
        message = self.make_message("k-delivered")
        result = channel.send(message)
        assert isinstance(result, DeliveryResult)
        assert result.status == "delivered", result.error
        assert result.ok
        assert result.provider_id is None or isinstance(result.provider_id, str)
        self._check_received(["k-delivered"])

    def test_a_temporary_problem_gives_transient(self, channel: Channel) -> None:
        self.endpoint_fails_transiently()
        result = deliver(channel, self.make_message("k-transient"))
        assert result.status == "transient", result
        assert isinstance(result.error, str)
        assert result.error
        self._check_received([])

    def test_a_lasting_problem_gives_permanent(self, channel: Channel) -> None:
        self.endpoint_fails_permanently()
        # Through the engine's classification: a channel that raises here is transient.
        result = deliver(channel, self.make_message("k-permanent"))
        assert result.status == "permanent", result
        assert isinstance(result.error, str)
        assert result.error
        self._check_received([])

    def test_the_idempotency_key_reaches_the_provider_unchanged(self, channel: Channel) -> None:
        result = channel.send(self.make_message(_ODD_KEY))
        assert result.status == "delivered", result.error
        self._check_received([_ODD_KEY])

    def test_a_retry_after_a_transient_failure_delivers_once(self, channel: Channel) -> None:
        message = self.make_message("k-retry")
        self.endpoint_fails_transiently()
        assert deliver(channel, message).status == "transient"
        self.endpoint_succeeds()
        assert deliver(channel, message).status == "delivered"
        self._check_received(["k-retry"])

    def test_a_key_sent_twice_is_delivered_once(self, channel: Channel) -> None:
        if not self.deduplicates:
            pytest.skip("the endpoint does not de-duplicate (deduplicates = False)")
        message = self.make_message("k-twice")
        first, second = channel.send(message), channel.send(message)
        assert (first.status, second.status) == ("delivered", "delivered")
        self._check_received(["k-twice"])

    def test_messages_differ_by_key(self, channel: Channel) -> None:
        for key in ("k-a", "k-b"):
            assert channel.send(self.make_message(key)).status == "delivered"
        self._check_received(["k-a", "k-b"])

    def test_send_leaves_the_message_as_it_was_given(self, channel: Channel) -> None:
        # The message sent is the one the caller's outcome lists, and the one a retry and a
        # failover are made from: a channel that writes into its fields or recipient (to
        # shorten a text, normalise a number) changes what the host sees was sent.
        steer = (self.endpoint_succeeds, self.endpoint_fails_transiently,
                 self.endpoint_fails_permanently)
        for n, endpoint in enumerate(steer):
            endpoint()
            message = self.make_message(f"k-unchanged-{n}")
            before = copy.deepcopy(message)
            deliver(channel, message)
            assert message == before, (
                f"send() changed the message it was given: {before!r} became {message!r}; "
                "copy what the provider needs changed"
            )

    def test_an_engine_delivers_retries_and_keeps_dead_letters(self, channel: Channel) -> None:
        from cjo.engine import Engine  # noqa: PLC0415  (the engine imports this package)

        storage = InMemoryStorage()
        clock = ManualClock(_T0)
        sample = self.make_message("k")
        engine = Engine(storage=storage, channels={sample.channel: channel}, clock=clock,
                        dispatch="deferred", max_delivery_attempts=2,
                        retry_backoff=timedelta(minutes=1))
        steer = {
            "ok": self.endpoint_succeeds,
            "transient": self.endpoint_fails_transiently,
            "permanent": self.endpoint_fails_permanently,
        }
        messages = {name: self.make_message(f"k-engine-{name}") for name in steer}
        for name, message in messages.items():
            # Written by a transaction, as a Send step does; then sent by dispatch_pending.
            with storage.customer(message.customer_id, _T0) as session:
                session.save(CustomerState(message.customer_id, _T0), [message], ())
            storage.release_outbox([message.idempotency_key], _T0)
            steer[name]()
            assert engine.dispatch_pending() == 1
        states = {}
        for name, message in messages.items():
            entry = storage.outbox_entry(message.idempotency_key)
            assert entry is not None
            states[name] = (entry.status, entry.attempts)
        assert states == {
            "ok": ("delivered", 1), "transient": ("pending", 1), "permanent": ("dead", 1)
        }
        assert [d.key for d in engine.dead_letters()] == ["k-engine-permanent"]
        self._check_received(["k-engine-ok"])
