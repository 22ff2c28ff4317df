"""A channel that writes files, checked by ChannelContract in the directory the contract gives
each test (``self.tmp_path``)."""

from __future__ import annotations

import json
from pathlib import Path

from cjo import Channel, DeliveryResult
from cjo.channels.base import Message
from cjo.testing import ChannelContract


class SpoolChannel(Channel):
    """Drops each message into a spool directory as ``<key>.json``, once per key; the
    endpoint's mode (up, down, refusing) is a file beside it, as another process would set
    it."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self.spool.mkdir()
        self.mode_file = spool.parent / "mode"

    def send(self, message: Message) -> DeliveryResult:
        mode = self.mode_file.read_text() if self.mode_file.exists() else "up"
        if mode == "down":
            return DeliveryResult.transient("spool unavailable")
        if mode == "refusing":
            return DeliveryResult.permanent("spool refuses messages")
        path = self.spool / f"{len(list(self.spool.iterdir())):06d}.json"
        if message.idempotency_key not in self.keys():
            path.write_text(json.dumps({"key": message.idempotency_key,
                                        "fields": message.fields}), encoding="utf-8")
        return DeliveryResult("delivered")

    def keys(self) -> list[str]:
        return [json.loads(p.read_text(encoding="utf-8"))["key"]
                for p in sorted(self.spool.iterdir())]


class TestSpoolChannel(ChannelContract):
    deduplicates = True

    def make_channel(self) -> Channel:
        self.spool = SpoolChannel(self.tmp_path / "spool")
        return self.spool

    def endpoint_succeeds(self) -> None:
        self.spool.mode_file.write_text("up")

    def endpoint_fails_transiently(self) -> None:
        self.spool.mode_file.write_text("down")

    def endpoint_fails_permanently(self) -> None:
        self.spool.mode_file.write_text("refusing")

    def received_keys(self) -> list[str]:
        return self.spool.keys()

