"""Journeys as data: load definitions from JSON, validate them, and run them.

Run it with ``python examples/from_json.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cjo import Engine, Event, ManualClock, RecordingChannel, loads_definitions

HERE = Path(__file__).parent


def main() -> None:
    definitions = loads_definitions((HERE / "welcome.json").read_text())
    clock = ManualClock(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))
    email, push = RecordingChannel(), RecordingChannel()
    engine = Engine(channels={"email": email, "push": push}, clock=clock)
    engine.publish(definitions)  # raises DefinitionError listing every problem, if any

    engine.identify("ada", {"first_name": "Ada", "plan": "pro"})
    engine.identify("max", {"first_name": "Max", "plan": "free"})
    for customer in ("ada", "max"):
        engine.handle_event(Event(customer_id=customer, name="signed_up",
                                  timestamp=clock.now(), event_id=f"{customer}-signup"))
    clock.advance(days=2)
    engine.run_due()
    for message in email.messages + push.messages:
        print(f"{message.channel:5} {message.customer_id}: {dict(message.fields)}")


if __name__ == "__main__":
    main()
