"""An adapter's author who runs the contract suites as documented (no conftest.py) sees what
their adapter returned when a check fails, not a bare ``AssertionError``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

AUTHORS_TESTS = '''
from cjo import DeliveryResult, InMemoryStorage, RecordingChannel
from cjo.testing import ChannelContract, StorageContract


class ForgetfulStorage(InMemoryStorage):
    """Loses the time zone of the earliest wake-up, as a database column without one would."""

    def next_wake_at(self):
        wake_at = super().next_wake_at()
        return None if wake_at is None else wake_at.replace(tzinfo=None)


class TestForgetfulStorage(StorageContract):
    def make_storage(self):
        return ForgetfulStorage()


class Busy(RecordingChannel):
    def send(self, message):
        return DeliveryResult.transient("busy")


class TestBusy(ChannelContract):
    def make_channel(self):
        self.channel = Busy()
        return self.channel

    def endpoint_succeeds(self):
        pass

    def endpoint_fails_transiently(self):
        pass

    def endpoint_fails_permanently(self):
        pass

    def received_keys(self):
        return [m.idempotency_key for m in self.channel.messages]
'''


def test_a_failing_check_shows_the_values_it_compared(tmp_path: Path) -> None:
    (tmp_path / "test_my_adapters.py").write_text(AUTHORS_TESTS)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-W", "error",
         "test_my_adapters.py::TestForgetfulStorage::test_next_wake_at",
         "test_my_adapters.py::TestBusy::test_a_working_endpoint_gives_delivered"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    report = run.stdout + run.stderr
    assert "2 failed" in report, report
    # The naive wake-up against the aware instant the suite expected.
    assert "assert datetime.datetime(2026, 1, 5, 9, 30) == " in report, report
    assert "assert 'transient' == 'delivered'" in report, report
    assert "PytestAssertRewriteWarning" not in report, textwrap.shorten(report, 2000)
