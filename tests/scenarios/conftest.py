"""Fixtures shared by the scenario tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cjo import Storage
from cjo.storage.memory import InMemoryStorage


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """A fresh storage of each adapter (PostgreSQL in a schema of its own)."""
    if request.param == "memory":
        yield InMemoryStorage()
        return
    if request.param == "sqlite":
        from cjo.storage.sqlite import SQLiteStorage

        s: Storage = SQLiteStorage(tmp_path / "cjo.db")
    else:
        from cjo.storage.postgres import PostgresStorage

        s = PostgresStorage(request.getfixturevalue("postgres_dsn"),
                            schema=request.getfixturevalue("postgres_schema"))
    yield s
    s.close()
