"""The fast rendering path gives exactly what a full Liquid render gives, or defers to it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cjo.content.memo import MemoRenderer
from cjo.content.render import Renderer
from cjo.errors import RenderError
from cjo.model.content import ContentItem, Variant

NAMES = ["first_name", "plan", "total", "flag", "missing"]
FILTERS = [
    "", " | upcase", " | downcase", " | capitalize", " | default: 'there'", " | plus: 2",
    " | times: 1.5", " | round", " | append: '!'", " | prepend: '#'", " | strip",
    " | abs", " | minus: 3", " | default: 0 | plus: 1", " | json",
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=8), st.sampled_from(["", " ada ", "PRO", "3", "-2.5"]),
)
outputs = st.builds(
    lambda scope, name, filters: f"{{{{ {scope}.{name}{filters} }}}}",
    st.sampled_from(["profile", "event"]), st.sampled_from(NAMES), st.sampled_from(FILTERS),
)
# Strict rendering: a missing value fails the render on both paths unless a default or a test
# (``if``, where it is false) covers it.
tests_ = st.builds(
    lambda name: f"{{% if profile.{name} %}}y{{% else %}}n{{% endif %}}", st.sampled_from(NAMES)
)
# ``if path == literal`` with an ``else``, or without, around text and outputs: the fast path's
# choice (a boolean, a number, a string that looks like one, a missing value, a blank branch).
literals = st.sampled_from(["'pro'", "'PRO'", "3", "1", "0", "-2.5", "'3'", "''", "true", "nil"])
simple = st.one_of(outputs, st.sampled_from(["y", " ", "", "{{ customer_id | upcase }}"]))
choices = st.builds(
    lambda scope, name, literal, then, otherwise: (
        f"{{% if {scope}.{name} == {literal} %}}{then}"
        + (f"{{% else %}}{otherwise}" if otherwise is not None else "") + "{% endif %}"
    ),
    st.sampled_from(["profile", "event"]), st.sampled_from(NAMES), literals, simple,
    st.none() | simple,
)
templates = st.lists(st.one_of(outputs, tests_, choices,
                               st.sampled_from(["Hi ", ", ", "{{ customer_id }}", "x"])),
                     min_size=1, max_size=5).map("".join)


def _render(renderer: Renderer | MemoRenderer, source: str, data: dict[str, Any]) -> object:
    item = ContentItem("c", (Variant("email", {"f": source}),))
    try:
        return renderer.render(item, item.variants[0], data)
    except RenderError as exc:
        return type(exc)


@settings(max_examples=400, deadline=None)
@given(templates, st.dictionaries(st.sampled_from(NAMES[:-1]), scalars),
       st.dictionaries(st.sampled_from(NAMES[:-1]), scalars))
def test_fast_and_full_renders_agree(source: str, profile: dict[str, Any],
                                     event: dict[str, Any]) -> None:
    data = {"profile": profile, "event": event, "context": event, "customer_id": "c1"}
    full = _render(Renderer(), source, data)
    fast = MemoRenderer(Renderer())
    assert _render(fast, source, data) == full
    assert _render(fast, source, data) == full  # and again, from the memo


def _render_variant(renderer: Renderer | MemoRenderer, fields: dict[str, str],
                    data: dict[str, Any]) -> object:
    item = ContentItem("c", (Variant("email", fields),))
    try:
        return renderer.render(item, item.variants[0], data)
    except RenderError as exc:
        return (type(exc), exc.field)


# A variant mixes fields the fast path takes with fields only Liquid renders (an ``if``, a
# per-customer code): each field goes its own way, and the result is the full render's.
@settings(max_examples=300, deadline=None)
@given(st.lists(templates, min_size=1, max_size=4),
       st.dictionaries(st.sampled_from(NAMES[:-1]), scalars),
       st.dictionaries(st.sampled_from(NAMES[:-1]), scalars),
       st.sampled_from(["c1", "ada", ""]))
def test_fast_and_full_renders_agree_field_by_field(
    sources: list[str], profile: dict[str, Any], event: dict[str, Any], customer_id: str,
) -> None:
    fields = {f"f{i}": source for i, source in enumerate(sources)}
    fields["code"] = "BACK-{{ customer_id | upcase }}"
    data = {"profile": profile, "event": event, "context": event, "customer_id": customer_id}
    full = _render_variant(Renderer(), fields, data)
    fast = MemoRenderer(Renderer())
    assert _render_variant(fast, fields, data) == full
    assert _render_variant(fast, fields, data) == full  # and again, from the memo
    other = {**data, "customer_id": customer_id + "x"}
    assert _render_variant(fast, fields, other) == _render_variant(Renderer(), fields, other)


@pytest.mark.parametrize("value", [True, False, 1, 0, 1.0, 3, "3", "pro", "", None, 2.5])
@pytest.mark.parametrize("literal", ["1", "0", "3", "'3'", "'pro'", "''", "1.0"])
def test_if_equals_literal_agrees_with_liquid(value: object, literal: str) -> None:
    """Liquid's ``==``: a boolean equals only a boolean, whatever Python says of True == 1."""
    source = f"{{% if profile.flag == {literal} %}}y{{% else %}}n{{% endif %}}"
    data = {"profile": {"flag": value}, "event": {}, "context": {}, "customer_id": "c1"}
    assert _render(MemoRenderer(Renderer()), source, data) == _render(Renderer(), source, data)


def test_outputs_that_read_the_customer_id_are_not_kept() -> None:
    """A per-customer code is never read again: keeping it would only fill the memo (and the
    engine's memory); outputs shared by many customers are kept."""
    renderer = MemoRenderer(Renderer())
    item = ContentItem("c", (Variant("email", {
        "subject": "Hi {{ profile.first_name | default: 'there' }}",
        "code": "BACK-{{ customer_id | upcase }}",
    }),))
    for n in range(50):
        data = {"profile": {"first_name": "Ada"}, "event": {}, "context": {},
                "customer_id": f"c{n}"}
        out = renderer.render(item, item.variants[0], data)
        assert out == {"subject": "Hi Ada", "code": f"BACK-C{n}"}
    assert len(renderer._memo) == 1


@pytest.mark.parametrize("source", [
    "{{ profile.tags.first }}", "{{ profile.tags.last }}", "{{ event.items.size }}",
    "{{ profile.first_name.size }}", "{% if event.items.size > 1 %}many{% endif %}.",
    "{{ profile.tags.first | upcase }} and {{ profile.plan }}",
])
def test_a_list_or_text_read_through_size_first_or_last_is_each_customers_own(
    source: str,
) -> None:
    # The path does not lead to a value of the data (a list has no key ``first``), so it must
    # not be kept as if it were missing: the next customer would get the first one's output.
    memo, full = MemoRenderer(Renderer()), Renderer()
    item = ContentItem("c", (Variant("sms", {"text": source}),))  # one item, as published
    for tags, items, name in ((["beach", "city"], [1, 2], "Ann"), (["ski"], [1], "Bo"),
                              (["spa", "golf", "zoo"], [1, 2, 3], "Cem")):
        data = {"profile": {"tags": tags, "first_name": name, "plan": "pro"},
                "event": {"items": items}, "context": {"items": items}, "customer_id": "c1"}
        assert memo.render(item, item.variants[0], data) == full.render(
            item, item.variants[0], data)


def test_zero_and_negative_zero_are_each_rendered_as_they_are() -> None:
    # Equal as numbers, but written 0.0 and -0.0: the memo must not give one the other's text.
    memo, full = MemoRenderer(Renderer()), Renderer()
    item = ContentItem("c", (Variant("sms", {"text": "Balance {{ profile.balance }}"}),))
    for balance in (-0.0, 0.0, 0, -0.0):
        data = {"profile": {"balance": balance}, "event": {}, "context": {}, "customer_id": "c1"}
        assert memo.render(item, item.variants[0], data) == full.render(
            item, item.variants[0], data)
