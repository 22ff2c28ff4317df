"""What ``dispatch_pending`` costs per message on a storage, channel excluded.

Writes ``--messages`` messages to the outbox in deferred mode (one welcome email per customer),
then times ``dispatch_pending`` sending them all to a channel that does nothing (or sleeps
``--send-ms`` per message, as a provider's reply would take). Reports the best of ``--rounds``
rounds, each on a fresh outbox (a fresh file, or a schema dropped afterwards), in microseconds
per message.

    python bench/bench_dispatch.py                                   # SQLite in a temp dir
    python bench/bench_dispatch.py --storage postgresql://postgres@127.0.0.1:5432/test
    python bench/bench_dispatch.py --send-ms 1 --messages 1000
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cjo import (
    Channel,
    ContentItem,
    DeliveryResult,
    Engine,
    Event,
    EventTrigger,
    Journey,
    ManualClock,
    Message,
    Send,
    Variant,
)
from cjo.storage.url import open_storage

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
WELCOME = Journey(id="welcome", trigger=EventTrigger("signed_up"), entry="email",
                  steps={"email": Send("hello", "email")})
HELLO = ContentItem("hello", (Variant("email", {"subject": "Hi", "text": "Hi"}),))


class NullChannel(Channel):
    def __init__(self, send_ms: float) -> None:
        self.wait = send_ms / 1000

    def send(self, message: Message) -> DeliveryResult:
        if self.wait:
            time.sleep(self.wait)
        return DeliveryResult("delivered")


def one_round(url: str, messages: int, send_ms: float) -> float:
    engine = Engine(storage=open_storage(url), channels={"email": NullChannel(send_ms)},
                    clock=ManualClock(T0), dispatch="deferred")
    try:
        engine.publish(journeys=[WELCOME], content=[HELLO])
        engine.handle_events([Event(customer_id=f"c{i}", name="signed_up", timestamp=T0,
                                    properties={}, event_id=f"e{i}") for i in range(messages)])
        started = time.perf_counter()
        sent = engine.dispatch_pending(T0 + timedelta(seconds=1))
        elapsed = time.perf_counter() - started
        assert sent == messages, sent
        return elapsed / messages * 1e6
    finally:
        engine.storage.close()
        if url.startswith("postgresql"):
            drop_schema(url)


def drop_schema(url: str) -> None:
    import psycopg
    from psycopg import sql

    dsn, _, schema = url.rpartition("schema=")
    with psycopg.connect(dsn.rstrip("?&"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage", default="sqlite", help="'sqlite' (a temp file) or a URL")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--send-ms", type=float, default=0.0,
                        help="how long each send takes (default: nothing)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            if args.storage == "sqlite":
                url = f"sqlite:///{Path(tmp) / f'round{n}.db'}"
            else:
                sep = "&" if "?" in args.storage else "?"
                url = f"{args.storage}{sep}schema=cjo_bench_{uuid.uuid4().hex[:10]}"
            results.append(one_round(url, args.messages, args.send_ms))
    print(f"dispatch_pending: best {min(results):.1f} us/message, "
          f"rounds {', '.join(f'{r:.1f}' for r in results)}")


if __name__ == "__main__":
    main()
