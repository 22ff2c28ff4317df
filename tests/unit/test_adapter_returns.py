"""An adapter method that returns the wrong kind of value is named in a StorageError, not met
as an AttributeError or TypeError deep inside the engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest

from cjo import (
    ContentItem,
    Engine,
    Event,
    EventTrigger,
    InMemoryStorage,
    Journey,
    ManualClock,
    RecordingChannel,
    Send,
    Variant,
    Wait,
)
from cjo.abc import CustomerSession, Storage
from cjo.analytics import journey_report
from cjo.errors import StorageError

HELLO = Journey("hello", trigger=EventTrigger("signed_up"), entry="wait",
                steps={"wait": Wait(timedelta(hours=1), next="mail"),
                       "mail": Send("hello", "email")})


class Defaults(InMemoryStorage):
    """The in-memory adapter on the base class's default paths, as a new adapter has them."""

    customer = Storage.customer
    due_batch = Storage.due_batch
    peek_many = Storage.peek_many


def _engine(storage: Storage) -> Engine:
    clock = ManualClock()
    engine = Engine(storage=storage, channels={"email": RecordingChannel()}, clock=clock)
    engine.publish(journeys=[HELLO], content=[
        ContentItem("hello", (Variant("email", {"subject": "Hi", "text": "Hi"}),))])
    return engine


def _signed_up(engine: Engine) -> None:
    engine.handle_event(Event("ada", "signed_up", engine.clock.now(), event_id="ada-1"))


def _woken(engine: Engine) -> None:
    _signed_up(engine)
    engine.clock.advance(hours=1)  # type: ignore[attr-defined]
    engine.run_due()


class _DictLoad:
    def __init__(self, session: CustomerSession) -> None:
        self.session = session

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def _wrong_batch(self: Storage, ids: Any, now: Any, *, claims: Any = ()) -> Any:
    @contextmanager
    def block() -> Iterator[list[CustomerSession]]:
        with InMemoryStorage.batch(self, ids, now, claims=claims) as sessions:  # type: ignore[arg-type]
            yield list(sessions.values())
    return block()


CASES: dict[str, tuple[dict[str, Any], Callable[[Engine], object], str]] = {
    "claim_due ids": (
        {"claim_due": lambda s, *a: [d.customer_id for d in InMemoryStorage.claim_due(s, *a)]},
        _woken, "Wrong.claim_due() returned list holding str 'ada', not list of DueCustomer",
    ),
    "batch list": (
        {"batch": _wrong_batch}, _signed_up,
        "Wrong.batch() yielded list, not a mapping of customer id to CustomerSession",
    ),
    "peek text": (
        {"peek": lambda s, cid: "{}"}, lambda e: e.profile("ada"),
        "Wrong.peek() returned str '{}', not CustomerState or None",
    ),
    "definitions_generation str": (
        {"definitions_generation": lambda s: str(InMemoryStorage.definitions_generation(s))},
        _signed_up, "Wrong.definitions_generation() returned str '0', not int",
    ),
    "load_definitions list": (
        {"load_definitions": lambda s: list(InMemoryStorage.load_definitions(s) or ())},
        lambda e: Engine(storage=e.storage).run_due(), "Wrong.load_definitions() returned list",
    ),
    "activity_counts tuples": (
        {"activity_counts": lambda s, j: [("hello", 1, None, "entered", None, 1)]},
        lambda e: journey_report(e.storage, HELLO),
        "Wrong.activity_counts() returned list holding tuple",
    ),
    "customer_outbox dicts": (
        {"customer_outbox": lambda s, cid: [{"key": "k"}]},
        lambda e: e.export_customer("ada"), "Wrong.customer_outbox() returned list holding dict",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_wrong_return_names_the_adapter_method(case: str) -> None:
    methods, call, message = CASES[case]
    with pytest.raises(StorageError) as raised:
        call(_engine(type("Wrong", (Defaults,), methods)()))
    assert message in str(raised.value)


def test_a_session_load_of_the_wrong_type_is_named() -> None:
    class Session(CustomerSession):
        def __init__(self, inner: CustomerSession) -> None:
            self.inner, self.customer_id = inner, inner.customer_id

        def claim_event(self, event_id: str) -> bool:
            return self.inner.claim_event(event_id)

        def load(self) -> Any:
            return {"customer_id": self.customer_id}

        def save(self, *args: Any) -> None:
            self.inner.save(*args)

        def set_aside(self, reason: str) -> None:
            self.inner.set_aside(reason)

    class Wrong(Defaults):
        @contextmanager
        def batch(self, ids: Any, now: Any, *, claims: Any = ()) -> Iterator[Any]:
            with InMemoryStorage.batch(self, ids, now, claims=claims) as sessions:
                yield {cid: Session(s) for cid, s in sessions.items()}

    engine = _engine(Wrong())
    with pytest.raises(StorageError, match=r"Session\.load\(\) returned dict .*, not "
                                           r"CustomerState or None"):
        _signed_up(engine)


def test_right_returns_pass_unchanged() -> None:
    engine = _engine(Defaults())
    _woken(engine)
    assert journey_report(engine.storage, HELLO).completed == 1
    assert len(engine.export_customer("ada")["messages"]) == 1


class _LoopingError(Exception):
    """The walk asked for the same page again and again."""


def _inclusive(method: str) -> Any:
    """``method`` taking ``after`` as inclusive: the last id of a page starts the next."""
    calls = [0]

    def wrong(self: Storage, *args: Any, after: str | None = None, **kwargs: Any) -> list[str]:
        calls[0] += 1
        if calls[0] > 50:
            raise _LoopingError(method)
        ids: list[str] = getattr(InMemoryStorage, method)(self, *args, **kwargs)
        return [cid for cid in ids if after is None or cid >= after]
    return wrong


@pytest.mark.parametrize(("method", "call"), [
    ("customer_ids", lambda e: e.refresh_segments()),
    ("enrolled_customers", lambda e: journey_report(e.storage, HELLO)),
    ("enrolled_customers", lambda e: (e.pause_journey("hello"), e.resume_journey("hello"))),
])
def test_a_page_that_repeats_its_after_id_is_refused_rather_than_walked_forever(
    method: str, call: Callable[[Engine], object]
) -> None:
    storage = type("Wrong", (Defaults,), {method: _inclusive(method),
                                          "held_counts": Storage.held_counts})()
    engine = _engine(storage)
    _signed_up(engine)
    with pytest.raises(StorageError, match=rf"Wrong\.{method}\(after='ada'\) returned 'ada'"):
        call(engine)
