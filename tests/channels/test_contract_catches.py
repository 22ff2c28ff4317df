"""What ``ChannelContract`` catches in a channel that passes its other checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from cjo import DeliveryResult, Message, RecordingChannel
from cjo.testing import ChannelContract


class Shortening(RecordingChannel):
    """Cuts the text it sends in the message it is given, and fills in a missing country code
    in its recipient: what the engine's outcome lists is then not what the journey sent."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: str | None = None

    def send(self, message: Message) -> DeliveryResult:
        fields, recipient = message.fields, message.recipient
        fields["text"] = fields["text"][:5]  # type: ignore[index]
        recipient["phone"] = "+1" + recipient["phone"]  # type: ignore[index]
        if self.failing == "transient":
            return DeliveryResult.transient("busy")
        if self.failing == "permanent":
            return DeliveryResult.permanent("refused")
        return super().send(message)


class _ShorteningContract(ChannelContract):
    deduplicates = True

    def make_channel(self) -> Shortening:
        self.sms = Shortening()
        return self.sms

    def endpoint_succeeds(self) -> None:
        self.sms.failing = None

    def endpoint_fails_transiently(self) -> None:
        self.sms.failing = "transient"

    def endpoint_fails_permanently(self) -> None:
        self.sms.failing = "permanent"

    def received_keys(self) -> list[str]:
        return [m.idempotency_key for m in self.sms.messages]


def test_a_channel_that_changes_the_message_it_sends_fails_the_contract(tmp_path: Path) -> None:
    contract = _ShorteningContract()
    contract.tmp_path = tmp_path
    channel = contract.make_channel()
    contract.endpoint_succeeds()
    contract.test_a_working_endpoint_gives_delivered(channel)  # the other checks pass
    with pytest.raises(AssertionError, match="send\\(\\) changed the message it was given"):
        contract.test_send_leaves_the_message_as_it_was_given(channel)
