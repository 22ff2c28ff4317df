from __future__ import annotations

import io

from cjo import ConsoleChannel, DeliveryResult, Message, RecordingChannel
from tests.helpers import T0


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
