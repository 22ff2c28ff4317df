"""The condition builder and the compiled semantics of every operator."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pytest

from cjo.conditions import (
    And,
    Compare,
    Condition,
    Exists,
    InSegment,
    Not,
    Or,
    Ref,
    attr,
    compile_condition,
    ctx,
    in_segment,
    prop,
    walk,
)


class FakeScope:
    """A Scope over plain dicts that records which segments were asked about."""

    def __init__(
        self,
        profile: Mapping[str, Any] | None = None,
        event: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        segments: frozenset[str] = frozenset(),
    ) -> None:
        self.profile: Mapping[str, Any] = profile or {}
        self.event: Mapping[str, Any] = event or {}
        self.context: Mapping[str, Any] = context or {}
        self.segments = segments
        self.asked: list[str] = []

    def in_segment(self, segment_id: str) -> bool:
        self.asked.append(segment_id)
        return segment_id in self.segments


def holds(condition: Condition, **profile: Any) -> bool:
    return compile_condition(condition)(FakeScope(profile=profile))


# --- builder -----------------------------------------------------------------------------------


PLAN = Ref("profile", "plan")


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (attr("plan") == "pro", Compare(PLAN, "eq", "pro")),
        (attr("plan") != "pro", Compare(PLAN, "ne", "pro")),
        (attr("plan") < 18, Compare(PLAN, "lt", 18)),
        (attr("plan") <= 18, Compare(PLAN, "le", 18)),
        (attr("plan") > 18, Compare(PLAN, "gt", 18)),
        (attr("plan") >= 18, Compare(PLAN, "ge", 18)),
        (attr("plan").is_in(("a", "b")), Compare(PLAN, "in", ["a", "b"])),
        (attr("plan").not_in(["a"]), Compare(PLAN, "not_in", ["a"])),
        (attr("plan").contains("x"), Compare(PLAN, "contains", "x")),
    ],
)
def test_field_operators_build_compare_nodes(built: Compare, expected: Compare) -> None:
    assert built == expected


def test_scopes_of_the_three_field_builders() -> None:
    assert (attr("a.b") == 1).ref == Ref("profile", "a.b")
    assert (prop("total") == 1).ref == Ref("event", "total")
    assert (ctx("cart_id") == 1).ref == Ref("context", "cart_id")
    assert str(Ref("event", "cart.total")) == "event.cart.total"


def test_exists_and_in_segment_builders() -> None:
    assert attr("email").exists() == Exists(Ref("profile", "email"))
    assert in_segment("vip") == InSegment("vip")


def test_and_or_not_operators_build_and_flatten() -> None:
    a, b, c = attr("a") == 1, attr("b") == 2, attr("c") == 3
    assert (a & b) == And((a, b))
    assert (a & b & c) == And((a, b, c))  # flattened, not nested
    assert ((a & b) & (b & c)) == And((a, b, b, c))
    assert (a | b | c) == Or((a, b, c))
    assert ~a == Not(a)
    assert (a & (b | c)) == And((a, Or((b, c))))


def test_fields_are_not_hashable() -> None:
    with pytest.raises(TypeError):
        hash(attr("plan"))


def test_walk_visits_every_node_depth_first() -> None:
    a, b, c = attr("a") == 1, attr("b") == 2, in_segment("s")
    tree = And((a, Not(Or((b, c)))))
    assert walk(tree) == [tree, a, Not(Or((b, c))), Or((b, c)), b, c]


# --- semantics ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "value", "expected"),
    [
        (attr("x") == 5, 5, True),
        (attr("x") == 5, 6, False),
        (attr("x") != 5, 6, True),
        (attr("x") != 5, 5, False),
        (attr("x") < 5, 4, True),
        (attr("x") < 5, 5, False),
        (attr("x") <= 5, 5, True),
        (attr("x") <= 5, 6, False),
        (attr("x") > 5, 6, True),
        (attr("x") > 5, 5, False),
        (attr("x") >= 5, 5, True),
        (attr("x") >= 5, 4, False),
        (attr("x").is_in([1, 2]), 2, True),
        (attr("x").is_in([1, 2]), 3, False),
        (attr("x").not_in([1, 2]), 3, True),
        (attr("x").not_in([1, 2]), 1, False),
        (attr("x").contains("b"), ["a", "b"], True),
        (attr("x").contains("b"), ["a"], False),
        (attr("x").contains("ell"), "hello", True),
        (attr("x").contains("k"), {"k": 1}, True),
    ],
)
def test_every_operator(condition: Condition, value: Any, expected: bool) -> None:
    assert holds(condition, x=value) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (attr("x") == 5, False),
        (attr("x") != 5, True),
        (attr("x") < 5, False),
        (attr("x") <= 5, False),
        (attr("x") > 5, False),
        (attr("x") >= 5, False),
        (attr("x").is_in([1]), False),
        (attr("x").not_in([1]), True),
        (attr("x").contains(1), False),
        (attr("x").exists(), False),
    ],
)
def test_missing_value_is_false_except_negations(condition: Condition, expected: bool) -> None:
    assert holds(condition) is expected


@pytest.mark.parametrize(
    "condition",
    [attr("x") < 5, attr("x") <= 5, attr("x") > 5, attr("x") >= 5, attr("x").contains(1)],
)
def test_null_value_orders_and_contains_nothing(condition: Condition) -> None:
    assert holds(condition, x=None) is False


def test_exists_is_false_for_null_and_true_for_falsy_values() -> None:
    assert holds(attr("x").exists(), x=None) is False
    assert holds(attr("x").exists(), x=0) is True
    assert holds(attr("x").exists(), x="") is True


@pytest.mark.parametrize(
    ("condition", "value"),
    [
        (attr("x") < 5, "3"),
        (attr("x") <= 5, "3"),
        (attr("x") > 5, "9"),
        (attr("x") >= 5, "9"),
        (attr("x") > "a", 9),
        (attr("x").contains("3"), 3),
        (attr("x").contains(["a"]), "abc"),
    ],
)
def test_type_mismatch_is_false_not_an_error(condition: Condition, value: Any) -> None:
    assert holds(condition, x=value) is False


def test_equality_across_types_is_plain_inequality() -> None:
    assert holds(attr("x") == 3, x="3") is False
    assert holds(attr("x") != 3, x="3") is True


def test_membership_with_unhashable_values() -> None:
    assert holds(attr("x").is_in([[1], [2]]), x=[2]) is True
    assert holds(attr("x").is_in([1, 2]), x=[1]) is False  # unhashable probe, hashable pool
    assert holds(attr("x").not_in([1, 2]), x=[1]) is True


def test_nested_paths() -> None:
    condition = attr("address.country") == "FR"
    assert holds(condition, address={"country": "FR"}) is True
    assert holds(condition, address={"country": "DE"}) is False
    assert holds(condition, address={}) is False
    assert holds(condition, address="FR") is False  # not a mapping: missing
    assert holds(condition) is False
    assert holds(attr("a.b.c") != 1, a={"b": {}}) is True
    assert holds(attr("a.b.c") >= 1, a={"b": {"c": 2}}) is True


def test_event_and_context_scopes() -> None:
    scope = FakeScope(event={"total": 60}, context={"cart": {"id": "c1"}})
    assert compile_condition(prop("total") >= 50)(scope) is True
    assert compile_condition(ctx("cart.id") == "c1")(scope) is True
    assert compile_condition(attr("total") >= 50)(scope) is False


def test_and_or_not() -> None:
    yes, no = attr("x") == 1, attr("x") == 2
    assert holds(yes & yes, x=1) is True
    assert holds(yes & no, x=1) is False
    assert holds(And((yes,)), x=1) is True
    assert holds(yes | no, x=1) is True
    assert holds(no | no, x=1) is False
    assert holds(~no, x=1) is True
    assert holds(~yes, x=1) is False
    assert holds(~(yes & no) | no, x=1) is True


def test_empty_and_is_true_empty_or_is_false() -> None:
    assert holds(And(())) is True
    assert holds(Or(())) is False


def test_in_segment_asks_the_scope() -> None:
    scope = FakeScope(segments=frozenset({"vip"}))
    assert compile_condition(in_segment("vip"))(scope) is True
    assert compile_condition(in_segment("churned"))(scope) is False
    assert scope.asked == ["vip", "churned"]


def test_compiling_a_non_condition_fails() -> None:
    with pytest.raises(TypeError, match="not a condition"):
        compile_condition(attr("x"))  # type: ignore[arg-type]


@pytest.mark.parametrize("combine", [
    lambda c: 5 & c, lambda c: True & c, lambda c: "vip" | c, lambda c: None | c,
], ids=["5 & c", "True & c", "'vip' | c", "None | c"])
def test_what_is_not_a_condition_on_the_left_is_named_at_validation(combine: Any) -> None:
    """``5 & cond`` is refused as ``cond & 5`` is: a DefinitionError naming the operand when
    published, not Python's TypeError when written."""
    from datetime import timedelta

    from cjo import Engine, EventTrigger, Journey, Wait
    from cjo.errors import DefinitionError

    where = combine(attr("plan") == "pro")
    assert isinstance(where, And | Or)
    journey = Journey("j", trigger=EventTrigger("go", where=where), entry="w",
                      steps={"w": Wait(timedelta(days=1))})
    with pytest.raises(DefinitionError, match=r"where: conditions\[0\] must be a condition"):
        Engine().publish(journeys=[journey])


def test_a_condition_on_the_left_of_its_own_kind_flattens() -> None:
    both = attr("a") == 1
    assert (5 & (both & (attr("b") == 2))).conditions[1:] == (both, attr("b") == 2)


def test_is_in_not_in_and_contains_take_another_field() -> None:
    """``prop("tags").contains(ctx("tag"))`` compares two values read at evaluation, as
    ``prop("a") == ctx("a")`` does, rather than failing validation with a field as a value."""
    from cjo.conditions import CompareFields

    tags, tag = Ref("event", "tags"), Ref("context", "tag")
    assert prop("tags").contains(ctx("tag")) == CompareFields(tags, "contains", tag)
    assert prop("tags").is_in(ctx("tag")) == CompareFields(tags, "in", tag)
    assert prop("tags").not_in(ctx("tag")) == CompareFields(tags, "not_in", tag)

    def scope(event: dict[str, Any], context: dict[str, Any]) -> FakeScope:
        return FakeScope(event=event, context=context)

    has = compile_condition(prop("tags").contains(ctx("tag")))
    assert has(scope({"tags": ["a", "b"]}, {"tag": "b"}))
    assert not has(scope({"tags": ["a"]}, {"tag": "b"}))
    within = compile_condition(prop("tag").is_in(ctx("tags")))
    assert within(scope({"tag": "b"}, {"tags": ["a", "b"]}))
    assert not within(scope({"tag": "c"}, {"tags": ["a", "b"]}))
    assert compile_condition(prop("tag").not_in(ctx("tags")))(scope({"tag": "c"}, {"tags": []}))
    assert repr(ctx("tag")) == "ctx('tag')"


def test_values_given_as_a_set_are_written_the_same_in_every_process():
    # A set's order follows the process's string hashing, which changes from one run to the
    # next: a journey built from the same code must be the same definition in each process
    # (a web process and a worker publish it; a restart publishes it again).
    import subprocess
    import sys

    code = (
        "from cjo import AttributeTrigger, Definitions, EventTrigger, Journey, Wait, attr, "
        "dumps_definitions, has_any\n"
        "from datetime import timedelta\n"
        "eu = {'FR', 'BE', 'DE', 'NL', 'ES', 'IT', 'PT'}\n"
        "j = Journey('eu', trigger=EventTrigger('signed_up', where=has_any(attr('tags'), eu)),"
        " entry='w', audience=attr('country').is_in(eu) & attr('region').not_in(eu),"
        " steps={'w': Wait(timedelta(days=1))})\n"
        "k = Journey('plan', trigger=AttributeTrigger('plan', changed_to=eu, changed_from=eu),"
        " entry='w', steps={'w': Wait(timedelta(days=1))})\n"
        "print(dumps_definitions(Definitions(journeys=(j, k))))\n"
    )
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout
        for seed in range(1, 6)
    }
    assert len(outputs) == 1
