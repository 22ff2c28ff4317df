"""A send that renders fields its channel cannot take (empty, more than one line, not JSON)
fails with a reason naming the variant as every other render failure does: its locale and A/B
name, so a failure of the French variant reads as one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

from cjo import (
    Action,
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    Message,
    RecordingChannel,
    Send,
    Storage,
    Variant,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_ids = count()

PROMO = ContentItem("promo", (
    Variant("email", {"subject": "Hi", "text": "{% if profile.vip %}VIP deal{% endif %}"}),
    Variant("email", {"subject": "Salut {{ profile.name }}",
                      "text": "{% if profile.vip %}Offre VIP{% endif %}"}, locale="fr-CA"),
    Variant("email", {"subject": "Hi", "html": "{% if profile.vip %}<b>VIP</b>{% endif %}",
                      "text": "{% if profile.vip %}VIP{% endif %}"}, name="B"),
))


def _reasons(storage: Storage, variant: str | None) -> dict[str, str]:
    engine = Engine(storage=storage, channels={"email": RecordingChannel()},
                    clock=ManualClock(T0))
    engine.publish(content=[PROMO], journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="s", steps={"s": Send("promo", "email",
                                                                     variant=variant)})])
    engine.identify("ann", {"name": "Ann"})
    engine.identify("zoe", {"name": "Zoé"}, locale="fr-CA")
    engine.identify("eve", {"name": "Eve\nBcc: x@example.com", "vip": True}, locale="fr_ca")
    reasons = {}
    for customer in ("ann", "zoe", "eve"):
        outcome = engine.handle_event(Event(customer_id=customer, name="go", timestamp=T0,
                                            event_id=f"e{next(_ids)}"))
        reasons[customer] = outcome.failures[0].reason if outcome.failures else "sent"
    return reasons


def test_a_failure_of_rendered_output_names_the_variant(storage: Storage) -> None:
    assert _reasons(storage, None) == {
        "ann": "content 'promo' / email / field 'text': renders empty",
        "zoe": "content 'promo' / email (fr-CA) / field 'text': renders empty",
        "eve": "content 'promo' / email (fr-CA) / field 'subject': renders more than one line "
               "(a subject is one line)",
    }


def test_an_empty_group_names_its_fields_only_when_it_has_several(storage: Storage) -> None:
    assert _reasons(storage, "B") == {
        "ann": "content 'promo' / email [B] / field 'html': renders empty (so does every one "
               "of 'html' and 'text': one must have text)",
        "zoe": "content 'promo' / email [B] / field 'html': renders empty (so does every one "
               "of 'html' and 'text': one must have text)",
        "eve": "sent",
    }


def test_a_nul_character_a_filter_decodes_fails_the_render_on_every_storage(
    storage: Storage,
) -> None:
    # ``url_decode`` of ``%00`` (a tracking code from a link, say) gives a NUL, which
    # PostgreSQL cannot store: the customer's whole event failed there, and the other storages
    # sent it. A render failure instead, as for any value that cannot make a message.
    calls: list[Message] = []
    engine = Engine(storage=storage, channels={"sms": RecordingChannel()},
                    actions={"crm": calls.append}, clock=ManualClock(T0))
    engine.publish(
        content=[ContentItem("code", (
            Variant("sms", {"text": "Code {{ event.code | url_decode }}"}),))],
        journeys=[Journey("j", trigger=EventTrigger("go"), entry="s", steps={
            "s": Send("code", "sms", next="a"),
            "a": Action("crm", {"code": "{{ event.code | url_decode }}"}),
        })])
    engine.identify("ann", {"phone": "+15550100"})
    outcome = engine.handle_event(Event(customer_id="ann", name="go", timestamp=T0,
                                        properties={"code": "%00"}, event_id="nul"))
    assert [f.reason for f in outcome.failures] == [
        "content 'code' / sms / field 'text': renders a NUL character, which no message may "
        "carry"]
    log = engine.activities(T0, T0 + timedelta(seconds=1), customer_id="ann")
    assert [a.detail for a in log if a.kind == "action_failed"] == [
        "crm: content 'action:crm' / action:crm / field 'code': renders a NUL character, "
        "which no message may carry"]
    assert calls == []
