"""Content items as a user meets them: channel fields checked at publish, templates rendered
strictly against a sample, locales with a fallback chain, A/B variants, blocks, and what a
template that fails at send time does."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from cjo import (
    Channel,
    ContentBlock,
    ContentItem,
    ContentSample,
    DefinitionError,
    Definitions,
    DeliveryResult,
    Engine,
    EventTrigger,
    Journey,
    ManualClock,
    Message,
    Offer,
    OfferCap,
    RecordingChannel,
    Send,
    Split,
    SplitPath,
    Variant,
    Wait,
    attr,
    ctx,
    dumps_definitions,
    loads_definitions,
    prop,
)
from cjo.content.channels import CHANNEL_TYPES
from cjo.runtime.sending import RENDER_RETRY_DELAYS
from tests.helpers import T0, ev

HOUR = timedelta(hours=1)


def email(subject: str = "Hi", text: str = "Hello", **more: str) -> dict[str, str]:
    return {"subject": subject, "text": text, **more}


def engine_with(*names: str, **kwargs: object) -> tuple[Engine, dict[str, RecordingChannel]]:
    channels = {name: RecordingChannel() for name in names or ("email",)}
    return Engine(channels=channels, clock=ManualClock(T0), **kwargs), channels  # type: ignore[arg-type]


def problems(engine: Engine, *items: ContentItem, **publish: object) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        engine.publish(content=items, **publish)  # type: ignore[arg-type]
    return [str(p) for p in info.value.problems]


def one_send(content: str = "c", channel: str = "email", **send: object) -> Journey:
    return Journey("j", trigger=EventTrigger("go"), entry="s",
                   steps={"s": Send(content, channel, **send)})  # type: ignore[arg-type]


# --- channel types -----------------------------------------------------------------------------


def test_an_email_needs_a_subject_and_a_text_or_html_part() -> None:
    engine, _ = engine_with()
    assert problems(engine, ContentItem("c", (Variant("email", {"text": "Hello"}),))) == [
        "content 'c' / variant email: field 'subject' is required on email channels",
    ]
    assert problems(engine, ContentItem("c", (Variant("email", {"subject": "Hi"}),))) == [
        "content 'c' / variant email: needs field 'html' or 'text' on email channels",
    ]
    engine.publish(content=[ContentItem("c", (
        Variant("email", {"subject": "Hi", "html": "<p>Hello</p>", "preheader": "Hey"}),
    ))])


def test_a_field_a_channel_type_does_not_know_is_refused() -> None:
    engine, _ = engine_with()
    assert problems(engine, ContentItem("c", (Variant("email", email(subjet="Hi")),))) == [
        "content 'c' / variant email: field 'subjet' is not a email field "
        "(known: subject, preheader, html, text, unsubscribe_url)",
    ]


@pytest.mark.parametrize(("channel", "fields", "missing"), [
    ("sms", {}, "text"),
    ("push", {"title": "Hi"}, "body"),
    ("push", {"body": "Hi"}, "title"),
    ("in_app", {"title": "Hi"}, "body"),
    ("webhook", {}, "body"),
])
def test_each_channel_type_requires_its_fields(
    channel: str, fields: dict[str, str], missing: str
) -> None:
    engine, _ = engine_with()
    item = ContentItem("c", (Variant(channel, fields, locale="fr"),))
    assert problems(engine, item) == [
        f"content 'c' / variant {channel} (fr): field {missing!r} is required on {channel} "
        "channels",
    ]


def test_push_may_carry_a_deep_link() -> None:
    assert "deep_link" in CHANNEL_TYPES["push"].optional
    engine, _ = engine_with()
    engine.publish(content=[ContentItem("c", (
        Variant("push", {"title": "Hi", "body": "Yo", "deep_link": "app://cart"}),
    ))])


def test_a_webhook_body_must_render_to_json_on_the_sample() -> None:
    engine, _ = engine_with()
    broken = ContentItem("c", (Variant("webhook", {"body": '{"order": {{ event.order }}'}),))
    [problem] = problems(engine, broken)
    assert problem.startswith(
        "content 'c' / variant webhook: field 'body' does not render to valid JSON: "
    )
    engine.publish(content=[ContentItem("c", (Variant("webhook", {
        "body": '{"order": {{ event.order | json }}, "total": {{ event.total }}}',
    }),))])


def test_a_webhook_body_that_is_not_json_for_one_customer_fails_that_send() -> None:
    engine, _channels = engine_with("webhook")
    item = ContentItem("c", (Variant("webhook", {"body": '{"total": {{ event.total }}}'}),))
    engine.publish(journeys=[one_send(channel="webhook")], content=[item])
    good = engine.handle_event(ev("go", "ann", T0, total=12.5))
    assert [m.fields["body"] for m in good.messages] == ['{"total": 12.5}']
    bad = engine.handle_event(ev("go", "bob", T0, total="twelve"))
    assert bad.messages == ()
    [failure] = bad.failures
    assert "does not render to valid JSON" in failure.reason
    assert failure.action == "skipped"


def test_a_channel_registered_under_another_name_is_typed_by_the_engine() -> None:
    engine, _ = engine_with("transactional_email",
                            channel_types={"transactional_email": "email"})
    assert problems(engine, ContentItem("c", (Variant("transactional_email", {"x": "y"}),))) == [
        "content 'c' / variant transactional_email: field 'subject' is required on email "
        "channels",
        "content 'c' / variant transactional_email: needs field 'html' or 'text' on email "
        "channels",
        "content 'c' / variant transactional_email: field 'x' is not a email field "
        "(known: subject, preheader, html, text, unsubscribe_url)",
    ]


def test_a_channel_class_can_say_its_type() -> None:
    class Texts(Channel):
        channel_type = "sms"

        def send(self, message: Message) -> DeliveryResult:
            return DeliveryResult()

    engine = Engine(channels={"texts": Texts()}, clock=ManualClock(T0))
    assert problems(engine, ContentItem("c", (Variant("texts", {"body": "Hi"}),))) == [
        "content 'c' / variant texts: field 'text' is required on sms channels",
        "content 'c' / variant texts: field 'body' is not a sms field (known: text)",
    ]


def test_a_channel_of_no_known_type_is_free_form() -> None:
    engine, _ = engine_with("fax")
    engine.publish(content=[ContentItem("c", (Variant("fax", {"anything": "goes"}),))])


# --- templates at publish and at send time -----------------------------------------------------


def test_a_template_is_rendered_strictly_against_the_items_sample() -> None:
    engine, _ = engine_with()
    item = ContentItem("c", (Variant("email", email("Hi {{ profile.first_name }}",
                                                    "{{ profile.last_name }}")),),
                       sample=ContentSample(profile={"first_name": "Ann"}))
    assert problems(engine, item) == [
        "content 'c' / variant email: field 'text' does not render on the sample: "
        "profile.last_name is undefined",
    ]
    engine.publish(content=[ContentItem("c", item.variants, sample=ContentSample(
        profile={"first_name": "Ann", "last_name": "Lee"}))])


def test_without_a_sample_templates_render_against_one_derived_from_what_they_read() -> None:
    engine, _ = engine_with()
    engine.publish(content=[ContentItem("c", (Variant("email", email(
        "{{ profile.first_name | capitalize }}, {{ event.total | plus: 1 }}",
        "{% for line in event.lines %}{{ line.name }}{% endfor %}",
    )),))])
    # What no sample can excuse is still refused: an unknown filter, a bad literal argument.
    assert problems(engine, ContentItem("d", (Variant("email", email(
        "{{ profile.first_name | shout }}", "{{ event.total | divided_by: 0 }}")),))) == [
        "content 'd' / variant email: field 'subject' does not render on the sample: "
        "unknown filter 'shout'",
        "content 'd' / variant email: field 'text' does not render on the sample: "
        "divided_by: can't divide by 0",
    ]


def test_an_unknown_filter_the_sample_does_not_reach_is_refused_at_publish() -> None:
    # In a loop after an item's variable a derived sample lacks, in a branch the sample does
    # not take, in a block: every customer who reaches it would fail.
    engine, _ = engine_with()
    assert problems(engine, ContentItem("d", (Variant("email", email(
        "{% if profile.vip %}{{ profile.first_name | upcase | shuot }}{% endif %}Hi",
        "{% for line in event.lines %}{{ line.name }} {{ line.price | mony }}{% endfor %}",
        html="{% if profile.vip %}{% include 'footer' %}{% endif %}<p>Hi</p>",
    )),), sample=ContentSample(profile={"vip": False}, event={"lines": []})),
        blocks=[ContentBlock("footer", "{{ profile.first_name | titel }}")]) == [
        "content 'd' / variant email: field 'subject' uses unknown filter 'shuot'",
        "content 'd' / variant email: field 'text' uses unknown filter 'mony'",
        "content 'd' / variant email: field 'html' uses unknown filter 'titel'",
    ]
    assert problems(engine, ContentItem("e", (Variant("email", email(text=(
        "{% for line in event.lines %}{{ line.name }} {{ line.price | mony }}{% endfor %}"))),
    ))) == ["content 'e' / variant email: field 'text' uses unknown filter 'mony'"]


def test_a_filter_given_too_few_or_too_many_arguments_says_so_in_template_words() -> None:
    engine, _ = engine_with()
    assert problems(engine, ContentItem("d", (Variant("email", email(
        "{{ profile.signed_up_at | date }} {{ 3 | times }}",
        "{{ profile.first_name | upcase: 2 }} {{ 'x' | slice }}")),))) == [
        "content 'd' / variant email: field 'subject' does not render on the sample: "
        "filter 'date' takes 1 argument (fmt), given 0",
        "content 'd' / variant email: field 'text' does not render on the sample: "
        "filter 'upcase' takes 0 arguments, given 1",
    ]


def test_a_comparison_with_a_number_is_not_refused_for_want_of_a_sample() -> None:
    # A derived sample cannot know a value is a number: "1" > 50 would fail in Liquid.
    engine, channels = engine_with()
    engine.publish(journeys=[one_send()], content=[ContentItem("c", (Variant("email", email(
        "{% if event.total > 50 %}Free shipping{% else %}Your order{% endif %}",
        "{% if profile.orders < 3 %}Welcome{% endif %} {{ profile.first_name | upcase }}",
    )),))])
    engine.identify("ann", {"orders": 1, "first_name": "Ann"})
    engine.handle_event(ev("go", "ann", T0, total=80))
    assert channels["email"].messages[0].fields == {"subject": "Free shipping",
                                                    "text": "Welcome ANN"}
    # Literals that cannot be compared are refused still: no data can excuse them.
    assert problems(engine, ContentItem("d", (Variant("email", email(
        "{% if 1 > 'a' %}x{% endif %}{{ event.total }}")),))) == [
        "content 'd' / variant email: field 'subject' does not render on the sample: "
        "'<' and '>' are not supported between 'str' and 'int'",
    ]


def test_at_send_time_a_missing_variable_fails_unless_it_has_a_default() -> None:
    engine, channels = engine_with()
    item = ContentItem("c", (Variant("email", email(
        "Hi {{ profile.first_name | default: 'there' }}",
        "{% if profile.vip %}VIP {% endif %}{{ event.item }}",
    )),))
    engine.publish(journeys=[one_send()], content=[item])
    sent = engine.handle_event(ev("go", "ann", T0, item="tent"))
    assert [dict(m.fields) for m in sent.messages] == [{"subject": "Hi there", "text": "tent"}]
    failed = engine.handle_event(ev("go", "bob", T0))
    assert failed.messages == () and len(channels["email"].messages) == 1
    [failure] = failed.failures
    assert failure.reason == "content 'c' / email / field 'text': event.item is undefined"
    assert (failure.journey_id, failure.step_id, failure.content_id, failure.action) == (
        "j", "s", "c", "skipped"
    )
    assert [e.status for e in failed.ended] == ["completed"]  # skip: the journey goes on
    kinds = [a.kind for a in engine.activities(T0, T0 + HOUR, customer_id="bob")]
    assert "send_failed" in kinds


# --- locales -----------------------------------------------------------------------------------


def test_a_locale_falls_back_to_its_language_then_to_the_default() -> None:
    item = ContentItem("c", (
        Variant("email", email("Hello")),
        Variant("email", email("Bonjour"), locale="fr"),
        Variant("email", email("Allo"), locale="fr-CA"),
    ))
    subject = {loc: item.variant_for("email", loc).fields["subject"]  # type: ignore[union-attr]
               for loc in ("fr-CA", "fr-BE", "fr", "de", None)}
    assert subject == {"fr-CA": "Allo", "fr-BE": "Bonjour", "fr": "Bonjour", "de": "Hello",
                       None: "Hello"}
    engine, _ = engine_with()
    engine.publish(journeys=[one_send()], content=[item])
    for customer, locale, expected in (("a", "fr-CA", ("Allo", "fr-CA")),
                                       ("b", "fr-BE", ("Bonjour", "fr")),
                                       ("c", "de-DE", ("Hello", None))):
        engine.identify(customer, locale=locale)
        [message] = engine.handle_event(ev("go", customer, T0)).messages
        assert (message.fields["subject"], message.locale) == expected


def test_remembered_variant_choices_follow_each_generation_and_stay_bounded() -> None:
    """The engine remembers which variant fits (content, channel, locale): a republished item
    is chosen afresh, and profiles with ever new locales do not grow the memory forever."""
    from cjo.runtime import registry as registry_module

    engine, _ = engine_with()
    engine.publish(journeys=[one_send()], content=[ContentItem("c", (
        Variant("email", email("Hello")), Variant("email", email("Bonjour"), locale="fr"),
    ))])
    engine.identify("a", locale="fr")
    [message] = engine.handle_event(ev("go", "a", T0)).messages
    assert message.fields["subject"] == "Bonjour"
    engine.publish(content=[ContentItem("c", (
        Variant("email", email("Hello")), Variant("email", email("Salut"), locale="fr"),
    ))])
    engine.identify("b", locale="fr")
    [message] = engine.handle_event(ev("go", "b", T0)).messages
    assert message.fields["subject"] == "Salut"
    registry = engine._sync()
    item = registry.content["c"]
    for n in range(registry_module._MAX_VARIANT_CHOICES + 5):
        assert registry.variant_for(item, "email", f"x-{n}", None) is item.variants[0]
    assert len(registry._variants) <= registry_module._MAX_VARIANT_CHOICES


# --- A/B variants ------------------------------------------------------------------------------


def test_a_split_path_sends_its_named_variant_and_the_message_records_it() -> None:
    engine, _ = engine_with()
    item = ContentItem("promo", (
        Variant("email", email("Spring sale")),
        Variant("email", email("20% off everything"), name="B"),
        Variant("email", email("20% de remise"), locale="fr", name="B"),
    ))
    journey = Journey("j", trigger=EventTrigger("go"), entry="split", steps={
        "split": Split((SplitPath("A", 50, next="a"), SplitPath("B", 50, next="b"))),
        "a": Send("promo", "email"),
        "b": Send("promo", "email", variant="B"),
    })
    engine.publish(journeys=[journey], content=[item])
    engine.identify("c-fr", locale="fr")
    seen: dict[str | None, set[str]] = {}
    for i in range(40):
        customer = f"c{i}" if i else "c-fr"
        [message] = engine.handle_event(ev("go", customer, T0)).messages
        seen.setdefault(message.variant, set()).add(message.fields["subject"])
        path = engine.enrollments(customer)[0]
        assert path.step_id == ("b" if message.variant == "B" else "a")
    assert seen[None] == {"Spring sale"}
    assert seen["B"] <= {"20% off everything", "20% de remise"} and len(seen["B"]) >= 1


def test_a_send_naming_a_variant_the_item_lacks_is_refused() -> None:
    engine, _ = engine_with()
    item = ContentItem("promo", (Variant("email", email()),))
    assert problems(engine, item, journeys=[one_send("promo", variant="C")]) == [
        "journey 'j' v1 / step 's': content 'promo' has no variant named 'C' for channel "
        "'email'",
    ]


def test_a_fallback_channel_needs_the_sends_variant_of_its_content_and_offers() -> None:
    engine, _ = engine_with("email", "sms")
    promo = ContentItem("promo", (
        Variant("email", email()), Variant("email", email("B"), name="B"),
        Variant("sms", {"text": "A by SMS"}),
    ))
    gold = ContentItem("gold", (Variant("email", email("Gold")),))
    assert problems(engine, promo, gold, offers=[Offer("gold_card", "gold")], journeys=[
        one_send("promo", variant="B", fallbacks=("sms",)),
    ]) == [
        "journey 'j' v1 / step 's': content 'promo' has no variant named 'B' for fallback "
        "channel 'sms'",
    ]
    assert problems(engine, promo, gold, offers=[Offer("gold_card", "gold")], journeys=[
        one_send("promo", fallbacks=("sms",), offers=("gold_card",)),
    ]) == [
        "journey 'j' v1 / step 's': offer 'gold_card': content 'gold' has no variant for "
        "fallback channel 'sms'",
    ]


# --- blocks ------------------------------------------------------------------------------------


def test_blocks_are_included_by_id_and_see_what_they_are_given() -> None:
    engine, _channels = engine_with()
    footer = ContentBlock("footer", "-- {{ profile.first_name | default: 'friend' }}, "
                                    "{% render 'legal' %}")
    legal = ContentBlock("legal", "Acme Ltd")
    item = ContentItem("c", (Variant("email", email("Hi", "Hello{% include 'footer' %}")),))
    engine.publish(journeys=[one_send()], content=[item], blocks=[footer, legal])
    engine.identify("ann", {"first_name": "Ann"})
    [message] = engine.handle_event(ev("go", "ann", T0)).messages
    assert message.fields["text"] == "Hello-- Ann, Acme Ltd"


def test_a_missing_block_a_computed_name_and_an_include_cycle_are_refused() -> None:
    engine, _ = engine_with()
    item = ContentItem("c", (Variant("email", email(
        "{% include 'nope' %}", "{% include profile.block %}")),))
    found = problems(engine, item, blocks=[
        ContentBlock("a", "{% include 'b' %}"), ContentBlock("b", "{% render 'a' %}"),
    ])
    assert "content 'c' / variant email / field 'subject': includes block 'nope', which is " \
           "not published" in found
    assert "content 'c' / variant email / field 'text': includes a block by a computed name; " \
           "name blocks with a quoted id ({% include 'footer' %})" in found
    assert "block 'a': includes itself: 'a' -> 'b' -> 'a'" in found
    assert "block 'b': includes itself: 'b' -> 'a' -> 'b'" in found


def test_a_block_change_is_a_new_version_of_every_item_using_it() -> None:
    engine, _ = engine_with()
    uses = ContentItem("uses", (Variant("email", email("Hi", "x{% include 'outer' %}")),))
    other = ContentItem("other", (Variant("email", email()),))
    engine.publish(journeys=[one_send("uses")], content=[uses, other], blocks=[
        ContentBlock("outer", "[{% include 'inner' %}]"), ContentBlock("inner", "v1"),
    ])
    [first] = engine.handle_event(ev("go", "ann", T0)).messages
    assert (first.fields["text"], first.content_version) == ("x[v1]", 1)
    engine.publish(blocks=[ContentBlock("inner", "v2")])
    versions = {c.id: c.version for c in engine.definitions.content}
    assert versions == {"uses": 2, "other": 1}
    engine.publish(blocks=[ContentBlock("inner", "v2")])  # no change: no new version
    assert {c.id: c.version for c in engine.definitions.content} == versions
    engine.remove_from_journey("ann")
    [second] = engine.handle_event(ev("go", "ann", T0)).messages
    assert (second.fields["text"], second.content_version) == ("x[v2]", 2)


# --- render failures follow the step's policy ---------------------------------------------------


def _failing(policy: str) -> tuple[Engine, ManualClock, dict[str, RecordingChannel]]:
    clock = ManualClock(T0)
    channels = {"email": RecordingChannel()}
    engine = Engine(channels=channels, clock=clock)
    item = ContentItem("c", (Variant("email", email("Hi {{ profile.first_name }}")),),
                       sample=ContentSample(profile={"first_name": "Ann"}))
    engine.publish(content=[item], journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="s",
        steps={"s": Send("c", "email", next="w", on_render_error=policy),  # type: ignore[arg-type]
               "w": Wait(HOUR)},
    )])
    return engine, clock, channels


def test_exit_ends_the_enrollment_when_the_render_fails() -> None:
    engine, _, _ = _failing("exit")
    outcome = engine.handle_event(ev("go", "bob", T0))
    assert [(e.status, e.reason) for e in outcome.ended] == [("exited", "render failed")]
    assert [f.action for f in outcome.failures] == ["exited"]


def test_skip_records_the_failure_and_goes_on() -> None:
    engine, _, _ = _failing("skip")
    outcome = engine.handle_event(ev("go", "bob", T0))
    assert [f.action for f in outcome.failures] == ["skipped"]
    assert [s.step_id for s in outcome.steps] == ["s", "w"]


def test_retry_waits_and_renders_again_with_the_data_the_customer_has_then() -> None:
    engine, clock, _channels = _failing("retry")
    outcome = engine.handle_event(ev("go", "bob", T0))
    assert [f.action for f in outcome.failures] == ["retrying"]
    [waiting] = engine.enrollments("bob")
    assert (waiting.step_id, waiting.wake_at, waiting.retries) == (
        "s", T0 + RENDER_RETRY_DELAYS[0], 1
    )
    engine.identify("bob", {"first_name": "Bob"})
    clock.advance(RENDER_RETRY_DELAYS[0])
    outcome = engine.run_due()
    assert [m.fields["subject"] for m in outcome.messages] == ["Hi Bob"]
    assert outcome.messages[0].idempotency_key.endswith(":s:1")
    [moved_on] = engine.enrollments("bob")
    assert (moved_on.step_id, moved_on.retries) == ("w", 0)


def test_retry_backs_off_then_skips_and_never_drops_silently() -> None:
    engine, clock, channels = _failing("retry")
    engine.handle_event(ev("go", "bob", T0))
    actions: list[str] = []
    for delay in RENDER_RETRY_DELAYS:
        clock.advance(delay)
        actions += [f.action for f in engine.run_due().failures]
    assert actions == ["retrying", "retrying", "skipped"]
    [enrollment] = engine.enrollments("bob")
    assert enrollment.step_id == "w" and channels["email"].messages == []
    log = engine.activities(T0, clock.now() + HOUR, customer_id="bob")
    assert [a.kind for a in log if a.kind in ("render_retry", "send_failed")] == [
        "render_retry", "render_retry", "render_retry", "send_failed",
    ]
    [skipped] = [a for a in log if a.kind == "send_failed"]
    assert skipped.detail is not None and skipped.detail.endswith("(after 3 retries)")


def test_an_unknown_render_policy_is_refused() -> None:
    engine, _ = engine_with()
    item = ContentItem("c", (Variant("email", email()),))
    assert problems(engine, item, journeys=[one_send(on_render_error="ignore")]) == [
        "journey 'j' v1 / step 's': on_render_error must be one of exit, retry, skip, got "
        "'ignore'",
    ]


# --- offers ------------------------------------------------------------------------------------


def test_offers_tie_on_score_go_to_the_lower_id_and_a_failing_scorer_leaves_its_offer_out(
) -> None:
    def boom(profile: object, context: object) -> float:
        raise RuntimeError("scorer down")

    # 10**400 is a whole number no float holds: no score either.
    engine, _ = engine_with(scorers={"boom": boom, "nan": lambda p, c: float("nan"),
                                     "huge": lambda p, c: 10**400})
    items = [ContentItem(i, (Variant("email", email(i)),)) for i in ("x", "y", "z", "f")]
    offers = [Offer("b", "y", priority=3), Offer("a", "x", priority=3),
              Offer("c", "z", scorer="boom"), Offer("d", "z", scorer="nan", priority=9),
              Offer("e", "z", scorer="huge")]
    engine.publish(journeys=[one_send("f", offers=("b", "a", "c", "d", "e"))], content=items,
                   offers=offers)
    [message] = engine.handle_event(ev("go", "ann", T0)).messages
    assert (message.offer_id, message.content_id) == ("a", "x")


def test_an_offer_condition_reads_the_trigger_event_through_the_context() -> None:
    engine, _ = engine_with()
    items = [ContentItem(i, (Variant("email", email(i)),)) for i in ("big", "small")]
    offers = [Offer("upsell", "big", when=ctx("total") > 100)]
    engine.publish(journeys=[one_send("small", offers=("upsell",))], content=items,
                   offers=offers)
    [big] = engine.handle_event(ev("go", "ann", T0, total=150)).messages
    [small] = engine.handle_event(ev("go", "bob", T0, total=50)).messages
    assert (big.offer_id, big.content_id, small.offer_id, small.content_id) == (
        "upsell", "big", None, "small"
    )


def test_offers_are_validated_at_publish() -> None:
    engine, _ = engine_with("email", "sms", scorers={"affinity": lambda p, c: 1.0})
    items = (ContentItem("f", (Variant("email", email()),)),
             ContentItem("sms_only", (Variant("sms", {"text": "Hi"}),)))
    found = problems(engine, *items, journeys=[one_send("f", offers=("o1", "o2", "nope"))],
                     offers=[
                         Offer("o1", "sms_only", scorer="affinty", tags=("vip",)),
                         Offer("o2", "gone", cap=OfferCap(0, per=timedelta(0)),
                               when=attr("x") == prop("y")),
                     ])
    assert found == [
        "journey 'j' v1 / step 's': offer 'nope' does not exist",
        "journey 'j' v1 / step 's': offer 'o1': content 'sms_only' has no variant for "
        "channel 'email'",
        "offer 'o1': scorer 'affinty' is not registered (registered: affinity)",
        "offer 'o2': content 'gone' does not exist",
        "offer 'o2': event.y cannot be used in an offer: only profile and context values are "
        "available there (the trigger event's properties are in the context: ctx('y'); an "
        "event a WaitForEvent received is under ctx('received.<event>.<property>'))",
        "offer 'o2': cap times must be 1 or more, got 0",
        "offer 'o2': cap per must be positive, got 0s",
        "offer 'o1': tag 'vip' used but no taxonomy is published",
    ]


def test_content_offers_and_blocks_round_trip_through_json() -> None:
    definitions = Definitions(
        journeys=(one_send("c", offers=("o",), variant="B", on_render_error="retry"),),
        content=(ContentItem("c", (Variant("email", email(), locale="fr", name="B"),),
                             sample=ContentSample({"first_name": "Ann"}, {"total": 3})),),
        blocks=(ContentBlock("footer", "-- {{ profile.first_name }}"),),
        offers=(Offer("o", "c", when=attr("tier") == "gold", priority=2, scorer="s",
                      cap=OfferCap(2, per=timedelta(days=7)), tags=()),),
    )
    text = dumps_definitions(definitions)
    assert loads_definitions(text) == definitions
    data = json.loads(text)
    assert data["offers"][0]["cap"] == {"times": 2, "per": 604800}
    assert data["journeys"][0]["steps"]["s"]["on_render_error"] == "retry"


# --- what publishing refuses, and what it must not ---------------------------------------------


def test_a_template_reading_a_variable_no_customer_data_holds_is_refused() -> None:
    engine, _ = engine_with("email", "sms")
    seen = "which templates never see (they read profile, event, context and customer_id)"
    item = ContentItem("c", (
        Variant("email", email("Hi {{ custmer.first_name | default: 'there' }}",
                               "{% if vip %}VIP{% endif %}{{ profile.name }}")),
        Variant("sms", {"text": "{% render 'sig' %}"}),
    ))
    assert problems(engine, item, blocks=[ContentBlock("sig", "{{ name }}")]) == [
        f"content 'c' / variant email: field 'subject' reads 'custmer.first_name', {seen}",
        f"content 'c' / variant email: field 'text' reads 'vip', {seen}",
        f"content 'c' / variant sms: field 'text' reads 'name', {seen}",
    ]
    # With a sample too: the sample cannot give what no send will have.
    sampled = ContentItem("c", (Variant("email", email("{{ foo.bar }}")),),
                          sample=ContentSample(profile={"a": 1}))
    assert problems(engine, sampled) == [
        f"content 'c' / variant email: field 'subject' reads 'foo.bar', {seen}"]


def test_variables_a_template_defines_itself_or_passes_to_a_block_are_not_refused() -> None:
    engine, _channels = engine_with()
    item = ContentItem("c", (Variant("email", email(
        "{% assign n = profile.name | default: 'you' %}Hi {{ n }}",
        "{% for line in event.lines %}{{ forloop.index }}. {{ line }} {% endfor %}"
        "{% capture who %}{{ customer_id }}{% endcapture %}{{ who }}"
        "{% render 'sig', name: profile.name %}{% render 'item' for event.lines as it %}"
        "{% include 'by' %}{{ context.order | default: '' }}",
    )),))
    blocks = [ContentBlock("sig", " -- {{ name }}"), ContentBlock("item", "[{{ forloop.index }}:{{ it }}]"),
              ContentBlock("by", "{% if who %}!{% endif %}")]
    engine.publish(content=[item], blocks=blocks, journeys=[one_send()])
    engine.identify("ann", {"name": "Ann"})
    [message] = engine.handle_event(ev("go", "ann", T0, lines=["tent"])).messages
    assert message.fields == {"subject": "Hi Ann", "text": "1. tent ann -- Ann[1:tent]!"}


def test_an_action_param_reading_a_variable_no_customer_data_holds_is_refused() -> None:
    from cjo import Action

    engine = Engine(channels={"email": RecordingChannel()}, actions={"ticket": lambda p: None},
                    clock=ManualClock(T0))
    journey = Journey("j", trigger=EventTrigger("go"), entry="a", steps={
        "a": Action("ticket", {"subject": "Call {{ customer_id }} about {{ order.id }}"})})
    with pytest.raises(DefinitionError) as info:
        engine.publish(journeys=[journey])
    assert [str(p) for p in info.value.problems] == [
        "journey 'j' v1 / step 'a': param 'subject' reads 'order.id', which templates never see "
        "(they read profile, event, context and customer_id)"]


@pytest.mark.parametrize(("channel", "fields"), [
    ("sms", {"text": "{% if profile.plan == 'gold' %}Gold deal{% endif %}"}),
    ("email", {"subject": "{% case event.kind %}{% when 'a' %}A{% endcase %}",
               "html": "{% if profile.plan == 'gold' %}<p>Gold</p>{% endif %}"}),
    ("push", {"title": "{{ profile.nick | remove: profile.nick }}", "body": "x"}),
    ("webhook", {"body": "{% if event.kind == 'paid' %}{\"paid\": true}{% endif %}"}),
])
def test_a_field_that_renders_empty_on_a_derived_sample_but_reads_data_is_not_refused(
    channel: str, fields: dict[str, str],
) -> None:
    # The derived sample holds "1" in every variable: no plan is "gold" there. Real data may
    # fill the field; a customer it does not fill is a render failure at send time.
    engine, _ = engine_with(channel)
    engine.publish(content=[ContentItem("c", (Variant(channel, fields),))])


def test_a_field_that_renders_empty_whatever_the_data_is_refused() -> None:
    engine, _ = engine_with("sms", "email")
    assert problems(engine, ContentItem("c", (
        Variant("sms", {"text": "{% if false %}never{% endif %}"}),
        Variant("email", {"subject": "{{ '' }}", "text": "{% if 'now' == 1 %}x{% endif %}"}),
    ))) == [
        "content 'c' / variant sms: field 'text' renders empty",
        "content 'c' / variant email: field 'subject' renders empty",
    ]
    # On a sample the host gives, as at send time.
    assert problems(engine, ContentItem("c", (
        Variant("sms", {"text": "{% if profile.plan == 'gold' %}Gold deal{% endif %}"}),
    ), sample=ContentSample(profile={"plan": "silver"}))) == [
        "content 'c' / variant sms: field 'text' renders empty"]


def test_an_email_subject_is_one_line() -> None:
    engine, channels = engine_with()
    one_line = "renders more than one line (a subject is one line)"
    assert problems(engine, ContentItem("c", (
        Variant("email", email("Hello\n{{ profile.name }}")),
        Variant("email", email("Hi {{ profile.name }}\r\n"), locale="fr"),
    ))) == [
        f"content 'c' / variant email: field 'subject' {one_line}",
        f"content 'c' / variant email (fr): field 'subject' {one_line}",
    ]
    engine.publish(content=[ContentItem("c", (
        Variant("email", email("Hi {{ profile.name }}", "Line one\nLine two")),))],
        journeys=[one_send()])
    engine.identify("ann", {"name": "Ann\nBcc: someone@example.com"})
    outcome = engine.handle_event(ev("go", "ann", T0))
    assert outcome.messages == () and channels["email"].messages == []
    [failure] = outcome.failures
    assert failure.reason == f"content 'c' / email / field 'subject': {one_line}"
    engine.identify("bob", {"name": "Bob"})
    [message] = engine.handle_event(ev("go", "bob", T0)).messages
    assert message.fields == {"subject": "Hi Bob", "text": "Line one\nLine two"}



@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c"])
def test_an_email_subject_with_any_line_separator_is_not_one_line(separator: str) -> None:
    # Email headers refuse every character that splits lines, not only CR and LF: a subject
    # that passed with one of them would fail at the channel instead of at render.
    engine, channels = engine_with()
    engine.publish(content=[ContentItem("c", (
        Variant("email", email("Hi {{ profile.name }}")),))], journeys=[one_send()])
    engine.identify("ann", {"name": f"Ann{separator}Bcc: someone@example.com"})
    outcome = engine.handle_event(ev("go", "ann", T0))
    assert outcome.messages == () and channels["email"].messages == []
    [failure] = outcome.failures
    assert failure.reason == ("content 'c' / email / field 'subject': renders more than one "
                              "line (a subject is one line)")
    [problem] = problems(engine, ContentItem("c", (
        Variant("email", email(f"Hi{separator}there")),)))
    assert problem.endswith("field 'subject' renders more than one line (a subject is one line)")

@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_webhook_body_with_nan_or_infinity_is_not_json(constant: str) -> None:
    assert json.loads(f'{{"score": {constant}}}')  # what Python's json reads
    engine, _channels = engine_with("webhook")
    [problem] = problems(engine, ContentItem("c", (
        Variant("webhook", {"body": f'{{"score": {constant}}}'}),)))
    assert problem == (f"content 'c' / variant webhook: field 'body' does not render to valid "
                       f"JSON: {constant} is not a JSON value")
    item = ContentItem("c", (Variant("webhook", {"body": '{"score": {{ event.score }}}'}),))
    engine.publish(content=[item], journeys=[one_send(channel="webhook")])
    bad = engine.handle_event(ev("go", "ann", T0, score=constant))
    assert bad.messages == ()
    [failure] = bad.failures
    assert failure.reason == (f"content 'c' / webhook / field 'body': does not render to valid "
                              f"JSON: {constant} is not a JSON value")
    good = engine.handle_event(ev("go", "bob", T0, score=1.5))
    assert [m.fields["body"] for m in good.messages] == ['{"score": 1.5}']
