"""Every step and trigger class is wired everywhere a kind must be: a kind in ``STEP_KINDS`` or
``TRIGGER_KINDS``, a unique JSON tag, an export of ``cjo``, a row of docs/kinds.md, a JSON
case in the serialization tests and a property strategy. Adding a class to the ``Step`` or
``Trigger`` union and forgetting one of them fails here, by name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import attrs
import pytest

import cjo
from cjo.model.steps import STEP_TYPES, Step
from cjo.model.triggers import TRIGGER_TYPES, Trigger
from cjo.runtime.kinds import STEP_KINDS, TRIGGER_KINDS, step_kind, trigger_kind
from tests.property.strategies import STEP_STRATEGIES, TRIGGER_STRATEGIES
from tests.unit.test_serialization import STEP_CASES, TRIGGER_CASES

ROOT = Path(__file__).resolve().parents[2]
STEPS: tuple[type[Any], ...] = get_args(Step)
TRIGGERS: tuple[type[Any], ...] = get_args(Trigger)
EVERY = [*STEPS, *TRIGGERS]


def _name(cls: type[Any]) -> str:
    return cls.__name__


def test_the_type_tables_are_the_unions() -> None:
    assert STEP_TYPES == STEPS
    assert TRIGGER_TYPES == TRIGGERS


@pytest.mark.parametrize("cls", STEPS, ids=_name)
def test_every_step_class_has_its_kind(cls: type[Any]) -> None:
    assert cls in STEP_KINDS, f"{cls.__name__} has no StepKind in STEP_KINDS"
    assert STEP_KINDS[cls].step_type is cls


@pytest.mark.parametrize("cls", TRIGGERS, ids=_name)
def test_every_trigger_class_has_its_kind(cls: type[Any]) -> None:
    assert cls in TRIGGER_KINDS, f"{cls.__name__} has no TriggerKind in TRIGGER_KINDS"
    assert TRIGGER_KINDS[cls].trigger_type is cls


def test_every_kind_runs_a_class_of_the_unions() -> None:
    assert set(STEP_KINDS) - set(STEPS) == set(), "in STEP_KINDS but not in the Step union"
    assert set(TRIGGER_KINDS) - set(TRIGGERS) == set(), (
        "in TRIGGER_KINDS but not in the Trigger union"
    )


@pytest.mark.parametrize("classes", [STEPS, TRIGGERS], ids=["steps", "triggers"])
def test_every_class_is_attrs_with_its_own_tag(classes: tuple[type[Any], ...]) -> None:
    for cls in classes:
        assert attrs.has(cls), cls
        assert isinstance(cls.__dict__.get("kind"), str) and cls.kind, cls
    tags = [cls.kind for cls in classes]
    assert len(set(tags)) == len(tags), f"a kind tag is used twice: {sorted(tags)}"


@pytest.mark.parametrize("cls", EVERY, ids=_name)
def test_every_class_is_exported(cls: type[Any]) -> None:
    assert getattr(cjo, cls.__name__, None) is cls and cls.__name__ in cjo.__all__


def _kinds_page_rows() -> dict[str, set[str]]:
    """docs/kinds.md's table: module → the kind classes its row names."""
    rows: dict[str, set[str]] = {}
    for line in (ROOT / "docs" / "kinds.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`") and cells[0].endswith(".py`"):
            rows[cells[0].strip("`")] = set(re.findall(r"`(\w+Kind)`", cells[1]))
    return rows


@pytest.mark.parametrize("cls", EVERY, ids=_name)
def test_every_kind_is_on_the_kinds_page_in_its_module(cls: type[Any]) -> None:
    kind = STEP_KINDS[cls] if cls in STEP_KINDS else TRIGGER_KINDS[cls]
    module = type(kind).__module__
    # The table names modules of cjo/runtime/kinds/ by file name, others by path.
    short = module.removeprefix("cjo.runtime.kinds.") + ".py"
    path = module.replace(".", "/") + ".py"
    rows = _kinds_page_rows()
    row = rows.get(short) if module.startswith("cjo.runtime.kinds.") else rows.get(path)
    assert row is not None and type(kind).__name__ in row, (
        f"docs/kinds.md does not list {type(kind).__name__} in the row of its module {module}"
    )


@pytest.mark.parametrize("cls", EVERY, ids=_name)
def test_every_class_has_a_json_case(cls: type[Any]) -> None:
    cases = STEP_CASES if cls in STEP_TYPES else TRIGGER_CASES
    assert any(type(value) is cls for value, _ in cases), (
        f"no {cls.__name__} in the JSON cases of tests/unit/test_serialization.py"
    )


@pytest.mark.parametrize("cls", EVERY, ids=_name)
def test_every_class_has_a_strategy(cls: type[Any]) -> None:
    strategies = STEP_STRATEGIES if cls in STEP_TYPES else TRIGGER_STRATEGIES
    assert cls in strategies, f"no {cls.__name__} strategy in tests/property/strategies.py"


@attrs.frozen
class _Unlisted:
    kind = "unlisted"


def test_a_class_without_a_kind_is_named_with_the_table_to_list_it_in() -> None:
    with pytest.raises(TypeError, match=r"_Unlisted is not a step: no StepKind in STEP_KINDS"):
        step_kind(_Unlisted())
    with pytest.raises(
        TypeError, match=r"_Unlisted is not a trigger: no TriggerKind in TRIGGER_KINDS"
    ):
        trigger_kind(_Unlisted())
