"""Storages for scenario tests: each test runs on memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cjo.storage.base import Storage
from cjo.storage.memory import InMemoryStorage
from tests.helpers import Factory


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def storage_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """Makes handles on ONE shared database (memory: one shared object), so a test can run
    several engines (workers, a restart) on the same data."""
    opened: list[Storage] = []
    if request.param == "memory":
        shared = InMemoryStorage()

        def make() -> Storage:
            return shared
    elif request.param == "sqlite":
        from cjo.storage.sqlite import SQLiteStorage

        def make() -> Storage:
            opened.append(SQLiteStorage(tmp_path / "cjo.db"))
            return opened[-1]
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        schema = request.getfixturevalue("postgres_schema")
        from cjo.storage.postgres import PostgresStorage

        def make() -> Storage:
            opened.append(PostgresStorage(dsn, schema=schema))
            return opened[-1]
    yield make
    for s in opened:
        s.close()


@pytest.fixture
def storage(storage_factory: Factory) -> Storage:
    """One handle on a fresh database of each kind."""
    return storage_factory()
