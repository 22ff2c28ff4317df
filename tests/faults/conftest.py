"""Storage factories for the fault tests, one per adapter; add one to FACTORIES to run every
fault test on another adapter."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from cjo.storage.base import Storage
from cjo.storage.memory import InMemoryStorage


@attrs.define
class StorageFactory:
    """How to get a fresh database, and what a restarted process gets after a crash.

    ``reopen(crashed)`` returns a new adapter on the crashed one's database (the crashed one is
    closed first: its process is gone); None means the database *is* the adapter object (in
    memory), which then simply carries on. ``budget`` bounds how many crash points are run.
    """

    name: str
    fresh: Callable[[Path], Storage]
    reopen: Callable[[Storage], Storage] | None
    budget: int
    cleanup: list[Callable[[], None]] = attrs.field(factory=list)

    def restart(self, crashed: Storage) -> Storage:
        if self.reopen is None:
            return crashed
        crashed.close()
        return self.reopen(crashed)


def _memory(request: pytest.FixtureRequest) -> StorageFactory:
    return StorageFactory("memory", lambda _dir: InMemoryStorage(), None, budget=500)


def _sqlite(request: pytest.FixtureRequest) -> StorageFactory:
    from cjo.storage.sqlite import SQLiteStorage

    def reopen(crashed: Storage) -> Storage:
        assert isinstance(crashed, SQLiteStorage)
        return SQLiteStorage(crashed.database)

    return StorageFactory("sqlite", lambda d: SQLiteStorage(d / "cjo.db"), reopen, budget=120)


def _postgres(request: pytest.FixtureRequest) -> StorageFactory:
    dsn: str = request.getfixturevalue("postgres_dsn")  # skips (or fails in CI) without one
    try:
        from cjo.storage.postgres import PostgresStorage
    except ImportError as exc:
        pytest.skip(f"cjo.storage.postgres is not available: {exc}")
    import psycopg
    from psycopg import sql

    schemas: list[str] = []

    def fresh(_dir: Path) -> Storage:
        schema = f"cjo_fault_{os.getpid()}_{uuid.uuid4().hex[:10]}"
        schemas.append(schema)
        return PostgresStorage(dsn, schema=schema, min_size=1, max_size=2)

    def reopen(crashed: Storage) -> Storage:
        assert isinstance(crashed, PostgresStorage)
        return PostgresStorage(dsn, schema=crashed.schema, min_size=1, max_size=2)

    def drop_schemas() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(schema)))

    # A pool and a schema per crash point cost about half a second: fewer points, still both
    # ends of the run and every verb.
    return StorageFactory("postgres", fresh, reopen, budget=25, cleanup=[drop_schemas])


#: Name -> factory builder. Builders may skip (pytest.skip) when their database is unavailable.
FACTORIES: dict[str, Callable[[pytest.FixtureRequest], StorageFactory]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(FACTORIES))
def storage_factory(request: pytest.FixtureRequest) -> Iterator[StorageFactory]:
    factory = FACTORIES[request.param](request)
    yield factory
    for cleanup in factory.cleanup:
        cleanup()
