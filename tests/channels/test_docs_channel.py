"""The channel written out in docs/channels.md passes the channel contract, with the hooks of
the page's own ``TestFlakySms``."""

from __future__ import annotations

import types

import pytest

from cjo.channels.base import Channel
from cjo.testing import ChannelContract
from tests.test_docs import ROOT, run_page


@pytest.fixture(scope="module")
def channels_page(tmp_path_factory: pytest.TempPathFactory) -> types.ModuleType:
    return run_page(ROOT / "docs" / "channels.md", tmp_path_factory.mktemp("channels_md"))


class TestDocsChannel(ChannelContract):
    deduplicates = True

    @pytest.fixture(autouse=True)
    def _page(self, channels_page: types.ModuleType) -> None:
        page_tests = channels_page.TestFlakySms
        assert issubclass(page_tests, ChannelContract)
        assert page_tests.deduplicates is self.deduplicates
        self.page_tests = page_tests()

    def make_channel(self) -> Channel:
        channel: Channel = self.page_tests.make_channel()
        return channel

    def endpoint_succeeds(self) -> None:
        self.page_tests.endpoint_succeeds()

    def endpoint_fails_transiently(self) -> None:
        self.page_tests.endpoint_fails_transiently()

    def endpoint_fails_permanently(self) -> None:
        self.page_tests.endpoint_fails_permanently()

    def received_keys(self) -> list[str]:
        keys: list[str] = self.page_tests.received_keys()
        return keys
