"""Accepted values come back the same from every storage.

Random hostile values (NaN, huge integers, nested and self-referencing containers, odd strings,
Decimals, naive datetimes...) go into a profile attribute and an event property that a journey
keeps in its context, on memory, SQLite and PostgreSQL. Each is either refused with
``InvalidEventError`` before anything is stored, or read back from the committed record exactly
as the rules of ``cjo.model.events`` say (``plain``), the same on every adapter.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from cjo import Engine, Event, Journey, ManualClock, Storage, Wait
from cjo.errors import InvalidEventError
from cjo.model.triggers import EventTrigger
from cjo.storage.memory import InMemoryStorage
from cjo.storage.sqlite import SQLiteStorage
from tests.property.test_hostile_values import T0, any_values, plain, same

_ids = itertools.count()
ROUND_TRIPS = settings(
    max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
KEEP = Journey("keep", trigger=EventTrigger("checkout"), entry="wait",
               steps={"wait": Wait(timedelta(days=1))})


@pytest.fixture(scope="module", params=["memory", "sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Engine]:
    storage: Storage
    schema = None
    if request.param == "memory":
        storage = InMemoryStorage()
    elif request.param == "sqlite":
        storage = SQLiteStorage(Path(tmp_path_factory.mktemp("values")) / "cjo.db")
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        from cjo.storage.postgres import PostgresStorage

        schema = f"cjo_values_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        storage = PostgresStorage(dsn, schema=schema)
    engine = Engine(storage, clock=ManualClock(T0))
    engine.publish(journeys=[KEEP])
    yield engine
    storage.close()
    if schema is not None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(request.getfixturevalue("postgres_dsn"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def _expected(value: object) -> object:
    try:
        return plain(value)
    except ValueError:
        return ValueError


@ROUND_TRIPS
@given(value=any_values)
def test_an_attribute_reads_back_the_same_or_is_refused(engine: Engine, value: object) -> None:
    customer = f"a{next(_ids)}"
    expected = _expected(value)
    try:
        engine.identify(customer, {"a": value})
    except InvalidEventError:
        assert expected is ValueError
        assert engine.customer_state(customer) is None  # nothing stored
        return
    state = engine.customer_state(customer)
    assert state is not None and state.profile is not None
    assert same(state.profile.attributes["a"], expected)


@ROUND_TRIPS
@given(value=any_values)
def test_an_event_property_reads_back_the_same_or_is_refused(
    engine: Engine, value: object
) -> None:
    customer = f"e{next(_ids)}"
    expected = _expected(value)
    try:
        event = Event(customer, "checkout", T0, {"v": value}, f"ev-{customer}")
    except InvalidEventError:
        assert expected is ValueError
        return
    engine.handle_event(event)
    state = engine.customer_state(customer)
    assert state is not None
    (enrollment,) = state.enrollments
    assert same(enrollment.context["v"], expected)
