"""Journeys authored as JSON: three mistakes, one error naming all three."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cjo import Engine, RecordingChannel, dumps_definitions, loads_definitions
from cjo.errors import DefinitionError

WELCOME = Path(__file__).resolve().parents[2] / "examples" / "welcome.json"


def test_three_mistakes_are_reported_together_and_nothing_is_published():
    data = json.loads(WELCOME.read_text())
    journey = data["journeys"][0]
    journey["steps"]["pause"]["next"] = "by_plann"           # 1. dangling step reference
    journey["steps"]["pro_tips"]["content"] = "tipz"          # 2. unknown content item
    journey["tags"] = ["lifecycle/onboardin"]                 # 3. tag not in the taxonomy
    engine = Engine(channels={"email": RecordingChannel(), "push": RecordingChannel()})
    definitions = loads_definitions(json.dumps(data))
    with pytest.raises(DefinitionError) as info:
        engine.publish(definitions)
    text = str(info.value)
    problems = info.value.problems
    assert "by_plann" in text and "tipz" in text and "lifecycle/onboardin" in text
    assert all("welcome" in p.location for p in problems)
    # by_plan becomes unreachable too, which validation also reports; nothing was published.
    assert engine.definitions.journeys == ()


def test_structural_mistakes_in_json_are_reported_together():
    data = json.loads(WELCOME.read_text())
    journey = data["journeys"][0]
    journey["steps"]["pause"]["duration"] = "two days"
    journey["steps"]["nudge"]["kind"] = "sned"
    journey["version"] = "first"
    with pytest.raises(DefinitionError) as info:
        loads_definitions(json.dumps(data))
    locations = " ".join(p.location for p in info.value.problems)
    assert "pause" in locations and "nudge" in locations and "version" in locations
    assert len(info.value.problems) == 3


def test_example_file_round_trips():
    definitions = loads_definitions(WELCOME.read_text())
    assert loads_definitions(dumps_definitions(definitions)) == definitions
