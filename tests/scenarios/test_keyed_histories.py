"""The entry histories of a keyed journey's instances, on every storage: kept while the
journey's re-entry rule can still keep an instance out, then forgotten, so that one history
per cart does not pile up in the customer's record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cjo import (
    ContentItem,
    Engine,
    EventTrigger,
    Journey,
    ManualClock,
    RecordingChannel,
    ReentryPolicy,
    Send,
    Variant,
)
from tests.helpers import Factory
from tests.helpers import event_with_id as _event

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


@pytest.mark.parametrize(("policy", "kept"), [
    # The cooldown of cart A (ended at T0) has passed at T0 + 70 min; B's has not.
    (ReentryPolicy.after_cooldown(HOUR, instance_key="cart_id"), ["B", "C"]),
    # Cart A's entry has left the one-hour window at T0 + 70 min; B's has not.
    (ReentryPolicy.at_most(1, per=HOUR, instance_key="cart_id"), ["B", "C"]),
    # The cooldown has passed for both, but the guard still reads B's entry.
    (ReentryPolicy.after_cooldown(MINUTE, instance_key="cart_id", guard=HOUR), ["B", "C"]),
    # Never again, for every cart: each history is what keeps its cart out.
    (ReentryPolicy.never(instance_key="cart_id"), ["A", "B", "C"]),
], ids=["cooldown", "at_most", "guard", "never"])
def test_a_keyed_history_is_kept_while_its_rule_can_keep_the_instance_out(
    storage_factory: Factory, policy: ReentryPolicy, kept: list[str],
) -> None:
    clock, channel = ManualClock(T0), RecordingChannel()
    engine = Engine(storage_factory(), channels={"email": channel}, clock=clock)
    engine.publish(
        journeys=[Journey("thanks", trigger=EventTrigger("ordered"), entry="mail",
                          steps={"mail": Send("note", "email")}, reentry=policy)],
        content=[ContentItem("note", variants=(
            Variant("email", {"subject": "Thanks", "text": "Thank you"}),))])

    def order(cart: str, event_id: str) -> int:
        out = engine.handle_event(_event("ordered", "ann", clock.now(), event_id, cart_id=cart))
        return len(out.entered)

    assert order("A", "a1") == 1  # sent and done at once
    clock.advance(30 * MINUTE)
    assert (order("B", "b1"), order("A", "a2")) == (1, 0)  # the rule keeps cart A out
    clock.advance(40 * MINUTE)
    assert order("C", "c1") == 1
    state = engine.customer_state("ann")
    assert state is not None
    assert sorted(k for j, k in state.history if j == "thanks" and k is not None) == kept
    # Forgotten or not, cart A is let in (or kept out) as its rule says.
    assert order("A", "a3") == (0 if policy.mode == "never" else 1)
    assert order("B", "b2") == 0
