"""Engine options and rules across journeys that make no sense are refused with a cjo error
naming what is wrong, before anything is stored."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from cjo import Engine, EventTrigger, Journey, Retention, VersionChange, Wait
from cjo.errors import DefinitionError, UsageError


@pytest.mark.parametrize(("options", "message"), [
    ({"late_events": "maybe"}, "late_events must be 'decide' or 'ignore'"),
    ({"channel_types": {"fax": "fax"}}, "channel_types maps channel names to a channel type"),
    ({"scorers": {"s": 3}}, "scorers maps names to callables"),
    ({"default_timezone": "Mars/Olympus"}, "not a known IANA time zone"),
])
def test_bad_engine_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Engine(**options)


@pytest.mark.parametrize(("options", "message"), [
    ({"event_ids": timedelta(days=-1)}, "event_ids must be"),   # would forget every event id
    ({"outbox": 3600}, "outbox must be a timedelta"),             # prune would raise TypeError
    ({"activity": timedelta(days=800_000)}, "activity must be"),  # prune would overflow
    ({"definitions": 0}, "definitions must be a whole number"),  # would drop the newest too
    ({"definitions": 2.5}, "definitions must be a whole number"),
    ({"definitions": True}, "definitions must be a whole number"),
], ids=["negative", "seconds", "huge", "no generation", "a fraction", "a bool"])
def test_a_retention_out_of_range_is_refused_when_built(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        Retention(**options)


def test_a_retention_of_zero_prunes_everything_finished() -> None:
    assert Retention(event_ids=timedelta(0)).event_ids == timedelta(0)


def _journey(version: int) -> Journey:
    return Journey(id="j", version=version, trigger=EventTrigger("e"), entry="s",
                   steps={"s": Wait(timedelta(days=1))})


@pytest.mark.parametrize(("running", "message"), [
    ("migrate", "expected a VersionChange"),
    (VersionChange("", 0, 0, "bogus"), "mode must be drain, migrate or eject"),  # type: ignore[arg-type]
])
def test_bad_version_changes_are_refused_and_nothing_is_published(
    running: Any, message: str
) -> None:
    engine = Engine()
    generation = engine.publish(journeys=[_journey(1)])
    with pytest.raises(DefinitionError, match=message):
        engine.publish(journeys=[_journey(2)], running={"j": running})
    assert engine.generation == generation
    assert [j.version for j in engine.definitions.journeys] == [1]


def test_a_concurrency_limit_of_zero_is_refused() -> None:
    with pytest.raises(DefinitionError, match="max_concurrent_journeys"):
        Engine().publish(journeys=[_journey(1)], max_concurrent_journeys=0)
