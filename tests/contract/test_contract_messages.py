"""An adapter's author who runs the contract suites as documented (no conftest.py) sees what
their adapter returned when a check fails, not a bare ``AssertionError``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cjo

# The authors' tests run in a directory of their own: they import this cjo, not another one a
# relative PYTHONPATH would find from there.
_ENV = {**os.environ, "PYTHONPATH": str(Path(cjo.__file__).resolve().parents[1])}

def _run_tests(tmp_path: Path, source: str, *args: str) -> str:
    """Run ``args`` (test ids and options) of a module made of ``source`` as an adapter's
    author would, in a process of its own; what pytest printed."""
    (tmp_path / "test_my_adapters.py").write_text(source)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False, env=_ENV,
    )
    return run.stdout + run.stderr


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
    report = _run_tests(tmp_path, AUTHORS_TESTS, "-W", "error",
                        "test_my_adapters.py::TestForgetfulStorage::test_next_wake_at",
                        "test_my_adapters.py::TestBusy::test_a_working_endpoint_gives_delivered")
    assert "2 failed" in report, report
    # The naive wake-up against the aware instant the suite expected.
    assert "assert datetime.datetime(2026, 1, 5, 9, 30) == " in report, report
    assert "assert 'transient' == 'delivered'" in report, report
    assert "PytestAssertRewriteWarning" not in report, textwrap.shorten(report, 2000)


MISLEADING_ADAPTERS = '''
from contextlib import contextmanager

from cjo import InMemoryStorage, StorageError
from cjo.abc import Channel, DeliveryResult, encode_state
from cjo.testing import ChannelContract, StorageContract


class Encoding:
    """Saves, then encodes: a value JSON cannot hold raises after the write."""

    def __init__(self, session):
        self.session = session

    def __getattr__(self, name):
        return getattr(self.session, name)

    def save(self, state, messages, activities):
        self.session.save(state, messages, activities)
        encode_state(state)


class CommitsOnErrorStorage(InMemoryStorage):
    """Commits what was saved before the error, then raises it."""

    @contextmanager
    def customer(self, customer_id, now):
        error = None
        with super().customer(customer_id, now) as session:
            try:
                yield Encoding(session)
            except StorageError as exc:
                error = exc
        if error is not None:
            raise error


class TestCommitsOnError(StorageContract):
    def make_storage(self):
        return CommitsOnErrorStorage()


class Spool(Channel):
    def __init__(self):
        self.mode, self.accepted = "ok", []

    def send(self, message):
        if self.mode != "ok":
            return getattr(DeliveryResult, self.mode)(f"spool {self.mode}")
        self.accepted.append(message.idempotency_key)
        return DeliveryResult()


class TestForgetsWhenSteered(ChannelContract):
    """Its endpoint hooks start the record of accepted keys over."""

    def make_channel(self):
        self.spool = Spool()
        return self.spool

    def endpoint_succeeds(self):
        self.spool.mode = "ok"

    def endpoint_fails_transiently(self):
        self.spool.mode, self.spool.accepted = "transient", []

    def endpoint_fails_permanently(self):
        self.spool.mode = "permanent"

    def received_keys(self):
        return self.spool.accepted
'''


def test_a_failing_check_says_what_the_adapter_must_do(tmp_path: Path) -> None:
    report = _run_tests(tmp_path, MISLEADING_ADAPTERS,
                        "test_my_adapters.py::TestCommitsOnError::test_a_value_json_cannot_hold_is_refused_or_kept",
                        "test_my_adapters.py::TestForgetsWhenSteered::test_an_engine_delivers_retries_and_keeps_dead_letters")
    assert "2 failed" in report, report
    assert "'c1''s transaction raised StorageError" not in report, report
    assert "c1's transaction raised StorageError" in report, report
    assert "but the record was committed" in report, report
    assert "received_keys() returned [], expected ['k-engine-ok']" in report, report
    assert "kept whatever the endpoint_* hooks change" in report, report


UNORDERED_ADAPTERS = '''
from contextlib import contextmanager

from cjo import InMemoryStorage
from cjo.testing import StorageContract


class NewestFirst(InMemoryStorage):
    """Hands due customers out latest wake-up first."""

    def claim_due(self, now, limit, lease):
        return list(reversed(super().claim_due(now, limit, lease)))


class TestNewestFirst(StorageContract):
    def make_storage(self):
        return NewestFirst()


class CommitsAnyway(InMemoryStorage):
    """Commits a transaction whatever its block raised."""

    @contextmanager
    def batch(self, customer_ids, now, *, claims=()):
        error = None
        with super().batch(customer_ids, now, claims=claims) as sessions:
            try:
                yield sessions
            except Exception as exc:
                error = exc
        if error is not None:
            raise error


class TestCommitsAnyway(StorageContract):
    def make_storage(self):
        return CommitsAnyway()
'''


def test_an_order_or_rollback_failure_names_the_rule(tmp_path: Path) -> None:
    report = _run_tests(tmp_path, UNORDERED_ADAPTERS,
                        "test_my_adapters.py::TestNewestFirst::test_claim_due_orders_by_wake_at_then_customer_id",
                        "test_my_adapters.py::TestCommitsAnyway::test_announced_claims_are_rolled_back_with_the_batch")
    assert "2 failed" in report, report
    assert "earliest wake_at first, then by customer id" in report, report
    assert "commit only when the block ends without an exception" in report, report
