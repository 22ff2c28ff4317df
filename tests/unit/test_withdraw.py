"""``Engine.withdraw``: what it refuses and why, in the words of what still uses a definition."""

from __future__ import annotations

from datetime import time, timedelta

import pytest

from cjo import (
    AudiencePath,
    AudiencePaths,
    Branch,
    Case,
    ContentBlock,
    ContentItem,
    DefinitionError,
    Engine,
    Event,
    EventTrigger,
    Exit,
    ExitCriterion,
    FrequencyCap,
    Journey,
    Offer,
    ProfileRule,
    QuietHours,
    Segment,
    SegmentTrigger,
    Send,
    Topic,
    Variant,
    attr,
    in_segment,
)
from cjo.segments.rules import stamp
from tests.helpers import T0, make_engine

VIP = Segment("vip", attr("plan") == "pro")


def _item(item_id: str, subject: str = "Hi", **kw: object) -> ContentItem:
    return ContentItem(item_id, (Variant("email", {"subject": subject, "text": "Hello"}),),
                       **kw)  # type: ignore[arg-type]


def _send(content: str, **kw: object) -> Journey:
    return Journey("mailer", "mail", trigger=EventTrigger("go"),
                   steps={"mail": Send(content, "email", **kw)})  # type: ignore[arg-type]


def _refused(engine: Engine, **ids: list[str]) -> list[str]:
    """The problems of a refused withdrawal, which changed nothing."""
    generation, definitions = engine.generation, engine.definitions
    with pytest.raises(DefinitionError) as caught:
        engine.withdraw(**ids)  # type: ignore[arg-type]
    assert (engine.generation, engine.definitions) == (generation, definitions)
    return [str(p) for p in caught.value.problems]


def test_a_segment_still_used_is_refused_naming_everything_that_uses_it() -> None:
    engine, _, _ = make_engine()
    engine.publish(
        segments=[VIP, Segment("vip_paid", in_segment("vip") & (attr("paid") == True))],  # noqa: E712
        content=[_item("hello")],
        offers=[Offer("gold", "hello", when=in_segment("vip"))],
        journeys=[
            Journey("welcome", "mail", trigger=EventTrigger("go"), audience=in_segment("vip"),
                    steps={"mail": Send("hello", "email")}),
            Journey("upsell", "route", trigger=SegmentTrigger("vip"),
                    exit_criteria=(ExitCriterion("left", segment="vip"),),
                    steps={"route": Branch((Case(in_segment("vip"), "done"),), "done"),
                           "done": Exit()}),
            Journey("paths", "paths", trigger=EventTrigger("go"),
                    steps={"paths": AudiencePaths((AudiencePath("vip", "done"),), "done"),
                           "done": Exit()}),
        ],
    )
    [problem] = _refused(engine, segments=["vip"])
    assert problem.startswith("segment 'vip': cannot be withdrawn: still used by ")
    users = problem.split("still used by ")[1].split("; ")
    assert sorted(users) == sorted([
        "journey 'welcome' v1 / audience", "journey 'upsell' v1 / trigger",
        "journey 'upsell' v1 / exit criterion 'left'", "journey 'upsell' v1 / step 'route' / case 1",
        "journey 'paths' v1 / step 'paths'",
        "segment 'vip_paid'", "offer 'gold'",
    ]), users


@pytest.mark.parametrize(("published", "ids", "expected"), [
    ({"content": [_item("hello")], "journeys": [_send("hello")]}, {"content": ["hello"]},
     "content 'hello': cannot be withdrawn: still used by journey 'mailer' v1 / step 'mail'"),
    ({"content": [_item("hello"), _item("gold_mail")], "offers": [Offer("gold", "gold_mail")]},
     {"content": ["gold_mail"]},
     "content 'gold_mail': cannot be withdrawn: still used by offer 'gold'"),
    ({"content": [_item("hello")], "offers": [Offer("gold", "hello")],
          "journeys": [_send("hello", offers=("gold",))]}, {"offers": ["gold"]},
     "offer 'gold': cannot be withdrawn: still used by journey 'mailer' v1 / step 'mail'"),
    ({"topics": [Topic("news")], "content": [_item("hello", topic="news")],
          "journeys": [_send("hello", topic="news")]}, {"topics": ["news"]},
     "topic 'news': cannot be withdrawn: still used by content 'hello'; "
     "journey 'mailer' v1 / step 'mail'"),
])
def test_a_definition_still_used_is_refused_naming_its_users(
    published: dict[str, list[object]], ids: dict[str, list[str]], expected: str
) -> None:
    engine, _, _ = make_engine()
    engine.publish(**published)  # type: ignore[arg-type]
    assert _refused(engine, **ids) == [expected]


def test_a_block_still_included_is_refused_with_what_its_absence_breaks() -> None:
    engine, _, _ = make_engine()
    engine.publish(blocks=[ContentBlock("footer", "Bye")],
                   content=[_item("hello", "Hi {% include 'footer' %}")])
    assert _refused(engine, blocks=["footer"]) == [
        "block 'footer': cannot be withdrawn: still used by content 'hello' / variant email / "
        "field 'subject'",
        "content 'hello' / variant email: field 'subject' does not render on the sample: footer",
    ]


def test_definitions_withdrawn_together_may_use_one_another() -> None:
    engine, _, _ = make_engine()
    engine.publish(segments=[VIP, Segment("vip_paid", in_segment("vip"))],
                   blocks=[ContentBlock("footer", "Bye")],
                   content=[_item("hello", "Hi {% include 'footer' %}"), _item("gold_mail")],
                   offers=[Offer("gold", "gold_mail", when=in_segment("vip"))],
                   topics=[Topic("news")])
    generation = engine.generation
    assert engine.withdraw(segments=("vip_paid", "vip"), offers=iter(["gold"]),
                           content=["gold_mail", "hello"], blocks=["footer"]) == generation + 1
    definitions = engine.definitions
    assert (definitions.segments, definitions.offers, definitions.content,
            definitions.blocks) == ((), (), (), ())
    assert [(w.kind, w.id, w.at, w.version) for w in definitions.withdrawn] == [
        ("segments", "vip", T0, None), ("segments", "vip_paid", T0, None),
        ("content", "hello", T0, 1), ("content", "gold_mail", T0, 1),
        ("blocks", "footer", T0, None), ("offers", "gold", T0, None),
    ]


def test_policies_and_rules_nothing_refers_to_are_withdrawn() -> None:
    engine, clock, channels = make_engine()
    engine.publish(caps=[FrequencyCap("daily", 1, timedelta(days=1))],
                   quiet_hours=[QuietHours("night", time(0), time(23, 59))],
                   profile_rules=[ProfileRule("seen", "go", [stamp("seen_at")])],
                   topics=[Topic("news")], content=[_item("hello")], journeys=[_send("hello")])
    engine.withdraw(caps=["daily"], quiet_hours=["night"], profile_rules=["seen"],
                    topics=["news"])
    definitions = engine.definitions
    assert (definitions.caps, definitions.quiet_hours, definitions.profile_rules,
            definitions.topics) == ((), (), (), ())
    # Neither the cap, the quiet hours nor the rule acts any more: two sends at once.
    engine.identify("ann", {"email": "ann@example.com"})
    for n in range(2):
        engine.handle_event(Event("ann", "go", clock.now(), event_id=f"go-{n}"))
    assert [m.customer_id for m in channels["email"].messages] == ["ann", "ann"]
    profile = engine.profile("ann")
    assert profile is not None and "seen_at" not in profile.attributes


def test_ids_not_published_are_refused_each_with_a_hint() -> None:
    engine, _clock, _ = make_engine()
    engine.publish(segments=[VIP, Segment("churned", attr("plan") == "none")],
                   content=[_item("welcome_mail")])
    engine.withdraw(segments=["churned"])
    assert _refused(engine, segments=["vip", "churned", "vpi_x", "nowhere"],
                    content=["welcome_mial"], caps=["daily"]) == [
        f"withdraw segments: no segment 'churned' is published (withdrawn at {T0.isoformat()})",
        "withdraw segments: no segment 'vpi_x' is published",
        "withdraw segments: no segment 'nowhere' is published",
        "withdraw content: no content 'welcome_mial' is published; did you mean 'welcome_mail'?",
        "withdraw caps: no frequency cap 'daily' is published",
    ]
    assert [s.id for s in engine.definitions.segments] == ["vip"]


@pytest.mark.parametrize(("ids", "expected"), [
    ({"segments": "vip"}, "withdraw segments: expected a list of segment ids, got str 'vip'"),
    ({"content": VIP}, "withdraw content: expected a list of content ids, got Segment "),
    ({"caps": ["daily", 3]},
     "withdraw caps[1]: expected a frequency cap id (a str), got int 3"),
    ({"segments": [VIP]}, "withdraw segments[0]: expected a segment id (a str), got Segment"),
])
def test_what_is_not_a_list_of_ids_is_refused(ids: dict[str, object], expected: str) -> None:
    engine, _, _ = make_engine()
    engine.publish(segments=[VIP], caps=[FrequencyCap("daily", 1, timedelta(days=1))])
    [problem] = _refused(engine, **ids)  # type: ignore[arg-type]
    assert problem.startswith(expected)


def test_journeys_are_not_withdrawn() -> None:
    engine, _, _ = make_engine()
    with pytest.raises(TypeError, match="journeys"):
        engine.withdraw(journeys=["welcome"])  # type: ignore[call-arg]


def test_a_definition_published_again_is_no_longer_withdrawn() -> None:
    engine, clock, _ = make_engine()
    engine.publish(segments=[VIP], caps=[FrequencyCap("daily", 1, timedelta(days=1))])
    engine.withdraw(segments=["vip"], caps=["daily"])
    clock.advance(hours=1)
    engine.publish(segments=[VIP])
    assert [(w.kind, w.id) for w in engine.definitions.withdrawn] == [("caps", "daily")]
    assert [s.id for s in engine.definitions.segments] == ["vip"]
    engine.withdraw(segments=["vip"])
    assert [(w.kind, w.id, w.at) for w in engine.definitions.withdrawn] == [
        ("caps", "daily", T0), ("segments", "vip", T0 + timedelta(hours=1))]


def test_a_huge_id_not_published_is_named_cut_short() -> None:
    engine, _, _ = make_engine()
    engine.publish(segments=[VIP])
    [problem] = _refused(engine, segments=["v" * 100_000])
    assert problem.startswith("withdraw segments: no segment 'vvv") and len(problem) < 150
