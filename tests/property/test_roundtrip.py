"""Definitions survive a trip through the converter and through JSON text, whatever they hold."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings

from cjo.conditions import Condition
from cjo.errors import Problem
from cjo.model.definitions import Definitions
from cjo.model.segments import Segment
from cjo.serialization import (
    dump_definitions,
    dumps_definitions,
    load_definitions,
    loads_definitions,
)
from cjo.validation import validate_definitions
from tests.property.strategies import conditions, definitions

# Generated definitions are nested and sometimes large; what matters is the count, not speed.
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(definitions)
def test_dump_then_load_is_identity_as_data_and_as_json_text(defs: Definitions) -> None:
    data = dump_definitions(defs)
    assert load_definitions(data) == defs
    text = json.dumps(data)
    assert loads_definitions(text) == defs
    assert loads_definitions(dumps_definitions(defs)) == defs
    # The dump is plain JSON: it reads back as the very same data.
    assert json.loads(text) == data


@FAST
@given(conditions)
def test_every_condition_round_trips(condition: Condition) -> None:
    defs = Definitions(segments=(Segment("s", condition),))
    assert loads_definitions(dumps_definitions(defs)).segments[0].condition == condition


@FAST
@given(definitions)
def test_validation_reports_problems_and_never_raises(defs: Definitions) -> None:
    problems = validate_definitions(defs, channels=("email", "sms"))
    assert all(isinstance(p, Problem) and p.location and p.message for p in problems)
    # Validation reads the same meaning from loaded definitions as from the originals.
    assert validate_definitions(load_definitions(dump_definitions(defs)),
                                channels=("email", "sms")) == problems
