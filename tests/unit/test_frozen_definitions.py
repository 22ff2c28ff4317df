"""Definitions are values: what a host passes in is copied into tuples and read-only mappings,
so a definition never changes after it is made, hashes, and equals what JSON gives back."""

from __future__ import annotations

import copy
import json
import pickle
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

import cjo.model.content
import cjo.model.definitions
import cjo.model.governance
import cjo.model.journey
import cjo.model.offers
import cjo.model.policies
import cjo.model.segments
import cjo.model.steps
import cjo.model.taxonomy
import cjo.model.triggers
import cjo.segments.history
import cjo.segments.rules
from cjo import (
    Action,
    AttributeTrigger,
    AttributeUpdate,
    AudiencePath,
    AudiencePaths,
    Branch,
    Case,
    Category,
    ContentItem,
    ContentSample,
    Definitions,
    Engine,
    EventTrigger,
    Exit,
    ExitCriterion,
    Journey,
    Jump,
    ManualClock,
    Offer,
    ProfileRule,
    QuietHours,
    RecordingChannel,
    Segment,
    Send,
    Split,
    SplitPath,
    SQLiteStorage,
    Taxonomy,
    UpdateProfile,
    Variant,
    VersionChange,
    Wait,
    WaitForEvent,
    WaitSinceEntry,
    WaitUntil,
    WaitUntilDate,
    attr,
    has_any,
    in_segment,
    prop,
)
from cjo import conditions as conditions_module
from cjo.conditions import And, Compare, Or, Ref
from cjo.frozen import FREEZE_DEPTH, FrozenDict, freeze, thaw, to_mapping, to_tuple
from cjo.serialization import (
    converter,
    dumps_definitions,
    dumps_stored_definitions,
    loads_definitions,
    loads_stored_definitions,
    structure,
)
from tests.helpers import T0, ev

# --- the containers ----------------------------------------------------------------------------


def test_a_frozen_dict_is_a_read_only_mapping_equal_to_a_dict() -> None:
    d = FrozenDict({"b": 1, "a": [1, 2]})
    assert isinstance(d, Mapping)
    assert d == {"a": [1, 2], "b": 1}
    assert {"b": 1, "a": [1, 2]} == d  # noqa: SIM300  # a dict on the left gives way
    assert d != {"b": 1}
    assert d != [("b", 1), ("a", [1, 2])]
    assert d["b"] == 1
    assert d.get("c") is None
    assert d.get("c", 3) == 3
    assert list(d) == ["b", "a"]
    assert list(d.items()) == [("b", 1), ("a", [1, 2])]
    assert repr(d) == "FrozenDict({'b': 1, 'a': [1, 2]})"
    with pytest.raises(TypeError):
        d["b"] = 2  # type: ignore[index]
    with pytest.raises(AttributeError):
        d.update({"b": 2})  # type: ignore[attr-defined]


def test_a_frozen_dict_hashes_by_its_items_whatever_their_order() -> None:
    a, b = FrozenDict({"x": 1, "y": (2,)}), FrozenDict({"y": (2,), "x": 1})
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert hash(FrozenDict()) == hash(FrozenDict({}))


def test_a_frozen_dict_survives_copy_and_pickle() -> None:
    d = FrozenDict({"a": FrozenDict({"b": (1, 2)})})
    for again in (copy.copy(d), copy.deepcopy(d), pickle.loads(pickle.dumps(d))):
        assert again == d
        assert type(again) is FrozenDict
        assert hash(again) == hash(d)


def test_freeze_makes_plain_data_immutable_at_any_depth() -> None:
    host = {"a": [1, {"b": [2, 3]}], "c": (4, [5])}
    frozen = freeze(host)
    inner = FrozenDict({"b": (2, 3)})
    assert frozen == FrozenDict({"a": (1, inner), "c": (4, (5,))})
    assert type(frozen["a"][1]) is FrozenDict
    hash(frozen)
    host["a"][1]["b"].append(9)  # type: ignore[index]
    assert frozen["a"][1]["b"] == (2, 3)
    assert thaw(frozen) == {"a": [1, {"b": [2, 3]}], "c": [4, [5]]}
    assert type(thaw(frozen)["c"]) is list


def test_freeze_keeps_what_is_not_plain_data_for_validation_to_refuse() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    values = {1, 2}
    assert freeze(values) is values  # JSON has no sets: refused by name at publish
    assert freeze(at) is at
    assert freeze("abc") == "abc"
    selfish: list[Any] = [1]
    selfish.append(selfish)
    assert freeze(selfish) is selfish  # contains itself: refused by validation, not a crash
    deep: Any = 1
    for _ in range(FREEZE_DEPTH + 1):
        deep = [deep]
    assert freeze(deep) is deep


def test_the_converters_keep_what_is_not_a_collection_of_their_kind() -> None:
    assert to_tuple(["a", ["b"]]) == ("a", ("b",))
    # Kept as given, for validation to refuse by name: a string is not a list of letters.
    samples: list[Any] = ["abc", {"a": 1}, {1, 2}, 5]
    for given in samples:
        assert to_tuple(given) is given
    assert to_mapping({"a": [1]}) == FrozenDict({"a": (1,)})
    pairs: Any = [("a", 1)]
    assert to_mapping(pairs) is pairs


# --- every definition class --------------------------------------------------------------------

_MODEL_MODULES = (
    cjo.model.content, cjo.model.definitions, cjo.model.governance, cjo.model.journey,
    cjo.model.offers, cjo.model.policies, cjo.model.segments, cjo.model.steps,
    cjo.model.taxonomy, cjo.model.triggers, conditions_module, cjo.segments.history,
    cjo.segments.rules,
)


def _definition_classes() -> list[type]:
    found = {
        cls for module in _MODEL_MODULES for cls in vars(module).values()
        if isinstance(cls, type) and attrs.has(cls) and cls.__module__ == module.__name__
    }
    return sorted(found, key=lambda cls: (cls.__module__, cls.__name__))


def _collection_fields() -> list[tuple[type, str, object]]:
    out = []
    for cls in _definition_classes():
        hints = typing.get_type_hints(cls)
        for field in attrs.fields(cls):
            hint = hints[field.name]
            kinds = {typing.get_origin(h) for h in (hint, *typing.get_args(hint))}
            if kinds & {tuple, Mapping, list, dict} or hint is Any:
                out.append((cls, field.name, hint))
    return out


@pytest.mark.parametrize(("cls", "name", "hint"), _collection_fields(),
                         ids=lambda x: x.__name__ if isinstance(x, type) else str(x)[:30])
def test_every_collection_field_of_a_definition_is_frozen(
    cls: type, name: str, hint: object
) -> None:
    field = attrs.fields_dict(cls)[name]
    assert field.converter is not None, f"{cls.__name__}.{name} ({hint}) is not converted"
    origins = {typing.get_origin(h) for h in (hint, *typing.get_args(hint))}
    assert list not in origins
    assert dict not in origins


def test_the_collection_fields_are_all_found() -> None:
    # Guards the check above against finding nothing (a renamed module, a changed hint).
    assert len(_collection_fields()) >= 55


Host = list[Any]


def _send() -> tuple[object, Host]:
    tags, fallbacks, offers = ["t"], ["sms"], ["o"]
    return Send("c", "email", tags=tags, fallbacks=fallbacks, offers=offers), [
        tags, fallbacks, offers]


def _simple_steps() -> tuple[object, Host]:
    tags = ["t"]
    return (Wait(timedelta(hours=1), tags=tags), WaitForEvent("e", timedelta(1), tags=tags),
            WaitSinceEntry(timedelta(1), tags=tags), WaitUntilDate("profile.d", tags=tags),
            Exit(tags=tags), Jump("k", tags=tags)), [tags]


def _wait_until() -> tuple[object, Host]:
    weekdays, tags = ["mon"], ["t"]
    return WaitUntil(time(9), weekdays=weekdays, tags=tags), [weekdays, tags]


def _branch() -> tuple[object, Host]:
    cases, tags = [Case(attr("a") == 1, "x")], ["t"]
    return Branch(cases, tags=tags), [cases, tags]


def _split() -> tuple[object, Host]:
    paths = [SplitPath("a", 50, "x"), SplitPath("b", 50)]
    return Split(paths), [paths]


def _update_profile() -> tuple[object, Host]:
    tags = ["a"]
    values = {"tags": tags, "n": 1}
    unset = ["old"]
    return UpdateProfile(values, unset), [values, tags, unset]


def _audience_paths() -> tuple[object, Host]:
    paths = [AudiencePath("s", "x")]
    return AudiencePaths(paths), [paths]


def _action() -> tuple[object, Host]:
    params = {"id": "{{ customer_id }}"}
    return Action("crm", params), [params]


def _journey() -> tuple[object, Host]:
    steps: dict[str, Any] = {"s": Exit()}
    criteria = [ExitCriterion("left", event="bye")]
    tags = ["t"]
    return Journey("j", "s", steps, EventTrigger("go"), exit_criteria=criteria, tags=tags), [
        steps, criteria, tags]


def _content() -> tuple[object, Host]:
    fields = {"subject": "Hi"}
    profile = {"name": "Ada", "tags": ["a"]}
    variants = [Variant("email", fields)]
    tags = ["t"]
    item = ContentItem("c", variants, tags=tags, sample=ContentSample(profile, {"x": 1}))
    return item, [fields, profile, profile["tags"], variants, tags]


def _conditions() -> tuple[object, Host]:
    values = ["a", "b"]
    nested = {"k": [1, 2]}
    parts = [Compare(Ref("profile", "plan"), "in", values), attr("m") == nested]
    return (And(parts), Or(parts), has_any(attr("tags"), values)), [values, nested,
                                                                    nested["k"], parts]


def _profile_rule() -> tuple[object, Host]:
    value = ["a"]
    updates = [AttributeUpdate("x", "assign", value=value)]
    return ProfileRule("r", "e", updates), [value, updates]


def _attribute_trigger() -> tuple[object, Host]:
    to, old = ["pro", ["a"]], ["free"]
    return AttributeTrigger("plan", changed_to=to, changed_from=old), [to, to[1], old]


def _taxonomy() -> tuple[object, Host]:
    children = [Category("b")]
    categories = [Category("a", children=children)]
    return Taxonomy(categories), [children, categories]


def _policies() -> tuple[object, Host]:
    weekdays, journeys, channels, tags = [0], ["j"], ["email"], ["t"]
    return (QuietHours("q", time(21), time(8), weekdays, journeys, channels),
            Offer("o", "c", tags=tags), Segment("s", in_segment("t"), tags=tags)), [
        weekdays, journeys, channels, tags]


def _version_change() -> tuple[object, Host]:
    steps = {"a": "b"}
    return VersionChange("j", 1, 2, "migrate", steps), [steps]


def _definitions() -> tuple[object, Host]:
    journeys: list[Any] = [Journey("j", "s", {"s": Exit()})]
    segments, topics = [Segment("s", attr("a") == 1)], [cjo.Topic("news")]
    return Definitions(journeys=journeys, segments=segments, topics=topics), [
        journeys, segments, topics]


CASES: dict[str, Callable[[], tuple[object, Host]]] = {
    f.__name__.strip("_"): f for f in (
        _send, _simple_steps, _wait_until, _branch, _split, _update_profile, _audience_paths,
        _action, _journey, _content, _conditions, _profile_rule, _attribute_trigger,
        _taxonomy, _policies, _version_change, _definitions,
    )
}


def _tamper(host: Host) -> None:
    """What a host may do to the lists and dicts it passed: change them in place."""
    for container in host:
        if isinstance(container, dict):
            container["tampered"] = ["x"]
            for key in list(container)[:1]:
                container[key] = "changed"
        else:
            container.append("tampered")
            container[0] = "changed"


def _parts(definition: object) -> tuple[object, ...]:
    return definition if isinstance(definition, tuple) else (definition,)


@pytest.mark.parametrize("make", CASES.values(), ids=CASES.keys())
def test_a_definition_does_not_change_with_the_host_objects_it_was_given(
    make: Callable[[], tuple[object, Host]],
) -> None:
    definition, host = make()
    expected, _ = make()
    hashes = [hash(part) for part in _parts(definition)]
    _tamper(host)
    assert definition == expected
    assert [hash(part) for part in _parts(definition)] == hashes


@pytest.mark.parametrize("make", CASES.values(), ids=CASES.keys())
def test_a_definition_reads_back_from_json_equal(
    make: Callable[[], tuple[object, Host]],
) -> None:
    for part in _parts(make()[0]):
        cls = type(part)
        data = json.loads(json.dumps(converter.unstructure(part, cls)))
        back = structure(data, cls)
        assert back == part
        assert hash(back) == hash(part)


def test_definitions_read_back_from_json_and_storage_equal() -> None:
    parts = [p for make in CASES.values() for p in _parts(make()[0])]
    journey = next(p for p in parts if isinstance(p, Journey))
    steps = {f"s{i}": p for i, p in enumerate(parts) if isinstance(p, cjo.model.steps.STEP_TYPES)}
    definitions = Definitions(
        journeys=[journey, attrs.evolve(journey, id="k", entry="s0", steps=steps)],
        segments=[p for p in parts if isinstance(p, Segment)],
        content=[p for p in parts if isinstance(p, ContentItem)],
        taxonomy=next(p for p in parts if isinstance(p, Taxonomy)),
        profile_rules=[p for p in parts if isinstance(p, ProfileRule)],
        quiet_hours=[p for p in parts if isinstance(p, QuietHours)],
        offers=[p for p in parts if isinstance(p, Offer)],
    )
    assert loads_definitions(dumps_definitions(definitions)) == definitions
    assert loads_stored_definitions(dumps_stored_definitions(definitions), 1) == definitions
    assert hash(loads_definitions(dumps_definitions(definitions))) == hash(definitions)


def test_stored_definitions_written_with_lists_still_load() -> None:
    # What a generation stored before holds: lists, read as tuples and read-only mappings.
    text = json.dumps({"format": 1, "segments": [{
        "id": "s", "tags": ["t"],
        "condition": {"kind": "compare", "ref": "profile.plan", "op": "in", "value": ["a"]},
    }], "journeys": [{"id": "j", "entry": "u", "steps": {
        "u": {"kind": "update_profile", "set": {"tags": ["a", {"b": [1]}]}},
    }}]})
    definitions = loads_stored_definitions(text, 1)
    segment, journey = definitions.segments[0], definitions.journeys[0]
    assert segment.tags == ("t",)
    assert segment.condition == Compare(Ref("profile", "plan"), "in", ("a",))
    step = journey.steps["u"]
    assert isinstance(step, UpdateProfile)
    assert step.set == FrozenDict({"tags": ("a", FrozenDict({"b": (1,)}))})
    hash(definitions)


# --- what the engine decides -------------------------------------------------------------------


def _engine() -> tuple[Engine, RecordingChannel]:
    email = RecordingChannel()
    engine = Engine(clock=ManualClock(T0), channels={"email": email})
    return engine, email


def _welcome() -> tuple[Definitions, dict[str, Any]]:
    """A journey whose every decision reads a list or dict the host keeps: its steps, a
    Branch's cases, an ``is_in`` list, the attributes an UpdateProfile step sets."""
    plans = ["pro"]
    cases = [Case(attr("plan").is_in(plans), "mark")]
    values = {"badges": ["welcomed"]}
    steps: dict[str, Any] = {
        "branch": Branch(cases, default=None),
        "mark": UpdateProfile(values, next="send"),
        "send": Send("hello", "email"),
    }
    journey = Journey("welcome", "branch", steps, EventTrigger("signed_up"))
    content = ContentItem("hello", [Variant("email", {"subject": "Hi", "text": "t"})])
    host = {"plans": plans, "cases": cases, "values": values, "steps": steps}
    return Definitions(journeys=[journey], content=[content]), host


def _tamper_welcome(host: dict[str, Any]) -> None:
    host["plans"][:] = ["free"]
    host["cases"].clear()
    host["values"]["badges"].append("tampered")
    host["values"]["extra"] = 1
    host["steps"]["send"] = Exit("tampered")


def _decisions(engine: Engine, email: RecordingChannel) -> tuple[object, ...]:
    engine.identify("pro-1", {"plan": "pro"})
    engine.identify("free-1", {"plan": "free"})
    for customer in ("pro-1", "free-1"):
        engine.handle_event(ev("signed_up", customer, T0))
    engine.run_due()
    profile = engine.profile("pro-1")
    assert profile is not None
    return (sorted(m.customer_id for m in email.messages), dict(profile.attributes))


def _expected() -> tuple[object, ...]:
    engine, email = _engine()
    definitions, _ = _welcome()
    engine.publish(definitions)
    return _decisions(engine, email)


def test_host_objects_changed_before_publish_change_nothing_published() -> None:
    engine, email = _engine()
    definitions, host = _welcome()
    _tamper_welcome(host)
    engine.publish(definitions)
    assert engine.definitions.journeys == _welcome()[0].journeys
    assert _decisions(engine, email) == _expected()
    assert _expected() == (["pro-1"], {"plan": "pro", "badges": ["welcomed"]})


def test_host_objects_changed_after_publish_change_nothing_published() -> None:
    engine, email = _engine()
    definitions, host = _welcome()
    engine.publish(definitions)
    _tamper_welcome(host)
    engine.publish(definitions)  # the same definitions again: no change
    assert engine.generation == 1
    assert _decisions(engine, email) == _expected()


def test_attributes_a_step_sets_are_the_profiles_own_plain_data() -> None:
    engine, email = _engine()
    definitions, _ = _welcome()
    engine.publish(definitions)
    _decisions(engine, email)
    profile = engine.profile("pro-1")
    assert profile is not None
    assert type(profile.attributes["badges"]) is list
    profile.attributes["badges"].append("host's own copy")
    step = engine.definitions.journeys[0].steps["mark"]
    assert isinstance(step, UpdateProfile)
    assert step.set == {"badges": ("welcomed",)}


@pytest.mark.parametrize("op", ["in", "not_in"])
def test_a_compare_value_given_as_a_list_is_held_as_a_tuple_and_decides(op: str) -> None:
    values = ["gold", "silver"]
    condition = Compare(Ref("profile", "tier"), op, values)  # type: ignore[arg-type]
    assert condition.value == ("gold", "silver")
    values.append("bronze")
    assert condition.value == ("gold", "silver")
    assert hash(condition) == hash(Compare(Ref("profile", "tier"), op, ("gold", "silver")))  # type: ignore[arg-type]
    engine, _ = _engine()
    engine.publish(segments=[Segment("tiered", condition)])
    for customer, tier in (("g", "gold"), ("b", "bronze"), ("n", None)):
        engine.identify(customer, {"tier": tier} if tier else {})
    members = {c for c in ("g", "b", "n") if engine.in_segment(c, "tiered")}
    assert members == ({"g"} if op == "in" else {"b", "n"})


def test_conditions_compare_lists_and_dicts_as_plain_data() -> None:
    # A value the definition holds as a tuple (or a FrozenDict) equals the list (or dict) a
    # profile holds, as it did when given as a list.
    engine, _ = _engine()
    engine.publish(segments=[
        Segment("pair", attr("pair") == [1, [2, 3]]),
        Segment("address", attr("address") == {"city": "Paris", "lines": ["1 rue"]}),
        Segment("nested", has_any(attr("lists"), [[1, 2]])),
        Segment("holds", attr("lists").contains([1, 2])),
        Segment("among", attr("pair").is_in([[1, [2, 3]]])),
    ])
    engine.identify("c", {"pair": [1, [2, 3]], "lists": [[1, 2], [3]],
                          "address": {"city": "Paris", "lines": ["1 rue"]}})
    held = {s for s in ("pair", "address", "nested", "holds", "among") if engine.in_segment("c", s)}
    assert held == {"pair", "address", "nested", "holds", "among"}


def test_an_attribute_trigger_with_a_list_value_fires_on_that_list() -> None:
    engine, email = _engine()
    engine.publish(
        journeys=[Journey("j", "s", {"s": Send("hello", "email")},
                          AttributeTrigger("badges", changed_to=[["gold", "vip"]]))],
        content=[ContentItem("hello", [Variant("email", {"subject": "Hi", "text": "t"})])],
    )
    engine.identify("c", {"badges": ["gold", "vip"]})
    engine.identify("d", {"badges": ["gold"]})
    engine.run_due()
    assert [m.customer_id for m in email.messages] == ["c"]


def test_a_profile_rule_assigns_its_list_as_the_profiles_own() -> None:
    engine, _ = _engine()
    engine.publish(profile_rules=[
        ProfileRule("r", "joined", [AttributeUpdate.assign("groups", ["a", "b"])]),
    ])
    engine.handle_event(ev("joined", "c", T0))
    engine.handle_event(ev("joined", "c", T0))
    profile = engine.profile("c")
    assert profile is not None
    assert profile.attributes["groups"] == ["a", "b"]
    assert type(profile.attributes["groups"]) is list


def test_a_published_definition_is_hashable_and_usable_as_a_key() -> None:
    engine, _ = _engine()
    definitions, _ = _welcome()
    engine.publish(definitions)
    published = engine.definitions
    assert {published.journeys: 1}[definitions.journeys] == 1
    assert {j: j.id for j in published.journeys}[definitions.journeys[0]] == "welcome"
    assert {published.content[0]} == set(definitions.content)
    step = prop("total") >= 50
    assert hash(step) == hash(prop("total") >= 50)


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
def test_a_value_written_as_a_tuple_decides_as_the_same_value_read_from_json(
    storage: str, tmp_path: Path,
) -> None:
    # A tuple in code and the list JSON gives back are one definition, so they decide alike:
    # the condition matches a profile's list, and the attribute set is stored as a list.
    engine = Engine(SQLiteStorage(str(tmp_path / "db")) if storage == "sqlite" else None,
                    {"email": RecordingChannel()}, ManualClock(T0))
    engine.publish(
        segments=[Segment("pair", attr("pair") == (1, 2))],
        journeys=[Journey("j", "u", {"u": UpdateProfile({"t": ("a", ("b",))})},
                          EventTrigger("go"))],
    )
    engine.identify("c", {"pair": [1, 2]})
    engine.handle_event(ev("go", "c", T0))
    assert engine.in_segment("c", "pair")
    profile = engine.profile("c")
    assert profile is not None
    assert profile.attributes["t"] == ["a", ["b"]]
    assert type(profile.attributes["t"]) is list
