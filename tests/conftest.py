"""Shared fixtures."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

# --- PostgreSQL ------------------------------------------------------------------------------

_DSN_VAR = "CJO_TEST_POSTGRES_DSN"


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The DSN of a PostgreSQL server for tests, from ``CJO_TEST_POSTGRES_DSN``.

    Unset: the test is skipped, except when ``CI=true``, where a missing DSN, a missing driver
    or an unreachable server fails the test (a CI job must not go green by skipping).
    A set DSN that cannot be reached always fails: someone asked for these tests.
    """
    in_ci = os.environ.get("CI", "").strip().lower() == "true"
    dsn = os.environ.get(_DSN_VAR, "").strip()
    if not dsn:
        message = (
            f"{_DSN_VAR} is not set; PostgreSQL tests need a server, "
            f"e.g. {_DSN_VAR}=postgresql://postgres@127.0.0.1:5432/test"
        )
        if in_ci:
            pytest.fail(f"{message} (CI=true: failing instead of skipping)", pytrace=False)
        pytest.skip(message)
    try:
        import psycopg
    except ImportError as exc:
        message = f"psycopg is not installed (pip install 'cjo[postgres]'): {exc}"
        if in_ci:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(f"cannot reach PostgreSQL at {_DSN_VAR}: {exc}", pytrace=False)
    return dsn


@pytest.fixture
def postgres_schema(postgres_dsn: str) -> Iterator[str]:
    """A schema name no other test (or test run) uses; the schema is dropped afterwards."""
    from tests.helpers import drop_schema

    name = f"cjo_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    yield name
    drop_schema(postgres_dsn, name)


# --- the SQL adapters' record cache ---------------------------------------------------------


@pytest.fixture(autouse=True)
def _check_record_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every record the SQL adapters take from their record cache must equal the record
    decoded from the stored text it was matched with: the rule the cache rests on
    (``cjo.storage.record_cache``), checked in every test that uses a SQL adapter."""
    from cjo.storage.codec import decode_state
    from cjo.storage.record_cache import RecordCache

    cached = RecordCache.get

    def get(self: RecordCache, customer_id: str, text: str) -> object:
        state = cached(self, customer_id, text)
        if state is not None:
            decoded = decode_state(text, customer_id)
            assert state == decoded, (
                f"the record cache holds a record of {customer_id!r} that differs from its "
                f"stored text:\ncached:  {state!r}\ndecoded: {decoded!r}"
            )
        return state

    monkeypatch.setattr(RecordCache, "get", get)
