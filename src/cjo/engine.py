"""The Engine: the host's single entry point."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cjo.channels.base import Channel, DeliveryResult, Message
from cjo.clock import Clock, SystemClock, ensure_aware
from cjo.content.render import Renderer
from cjo.errors import DefinitionError, InvalidEventError, Problem, UnknownJourneyError
from cjo.model.content import ContentItem
from cjo.model.definitions import Definitions
from cjo.model.events import Event, Profile, ProfileUpdate
from cjo.model.journey import Journey
from cjo.model.segments import Segment
from cjo.model.taxonomy import Taxonomy
from cjo.outcome import Outcome, OutcomeBuilder
from cjo.runtime.core import Decider
from cjo.runtime.registry import Registry
from cjo.runtime.state import Enrollment
from cjo.serialization import dumps_definitions, loads_definitions
from cjo.storage.base import CustomerSession, Delivery, Storage
from cjo.storage.memory import InMemoryStorage
from cjo.validation import validate_definitions

if TYPE_CHECKING:
    from cjo.worker import WorkerStats

__all__ = ["Engine"]

#: Where publish keeps the definitions it accepted (every journey version), as JSON.
_DEFINITIONS_SETTING = "cjo.definitions"


class Engine:
    """Runs published journeys for the host's customers.

    ``storage`` defaults to a fresh ``InMemoryStorage``; ``channels`` maps channel names used by
    ``Send`` steps to adapters; ``clock`` defaults to the system clock.
    """

    def __init__(
        self,
        storage: Storage | None = None,
        channels: Mapping[str, Channel] | None = None,
        clock: Clock | None = None,
        *,
        due_batch_size: int = 500,
        wake_lease: timedelta = timedelta(minutes=5),
        max_delivery_attempts: int = 5,
        retry_backoff: timedelta = timedelta(minutes=1),
    ) -> None:
        self.storage = storage if storage is not None else InMemoryStorage()
        self.channels: dict[str, Channel] = dict(channels or {})
        self.clock = clock if clock is not None else SystemClock()
        self.due_batch_size = due_batch_size
        self.wake_lease = wake_lease
        self.max_delivery_attempts = max_delivery_attempts
        self.retry_backoff = retry_backoff
        self._registry = Registry()
        self._renderer = Renderer()
        self._loaded = False

    # --- definitions -------------------------------------------------------------------------

    @property
    def definitions(self) -> Definitions:
        """Everything published so far (every journey version), here or by an earlier process
        on the same storage."""
        self._load_published()
        return self._registry.definitions

    def publish(
        self,
        definitions: Definitions | None = None,
        *,
        journeys: Iterable[Journey] = (),
        segments: Iterable[Segment] = (),
        content: Iterable[ContentItem] = (),
        taxonomy: Taxonomy | None = None,
    ) -> None:
        """Add or update definitions. The whole resulting set is validated together; if any
        problem is found a ``DefinitionError`` lists them all and nothing changes.

        A journey is identified by (id, version): publishing a new version starts new entries
        on it while customers already inside older versions finish them. A published version
        cannot be changed; publish the change as a new version.
        """
        self._load_published()
        incoming = definitions or Definitions()
        new_journeys = (*incoming.journeys, *journeys)
        new_segments = (*incoming.segments, *segments)
        new_content = (*incoming.content, *content)
        new_taxonomy = taxonomy or incoming.taxonomy

        current = self._registry.definitions
        problems: list[Problem] = []
        by_version = {(j.id, j.version): j for j in current.journeys}
        for j in new_journeys:
            old = by_version.get((j.id, j.version))
            if old is not None and old != j:
                problems.append(Problem(
                    f"journey {j.id!r} v{j.version}",
                    "this version is already published with a different definition; "
                    "publish the change as a new version",
                ))
            by_version[(j.id, j.version)] = j
        merged = Definitions(
            journeys=tuple(by_version.values()),
            segments=tuple(_replace_by_id(current.segments, new_segments)),
            content=tuple(_replace_by_id(current.content, new_content)),
            taxonomy=new_taxonomy or current.taxonomy,
        )
        problems.extend(validate_definitions(merged, channels=self.channels.keys()))
        if problems:
            raise DefinitionError(problems)
        self.storage.put_setting(_DEFINITIONS_SETTING, dumps_definitions(merged, indent=None))
        self._registry = Registry.build(merged, self._registry)

    def _load_published(self) -> None:
        """Once per engine, before its first use: start from the definitions published to this
        storage before (by any process), so enrollments in older versions can finish them and
        a worker that publishes nothing itself still runs every journey."""
        if self._loaded:
            return
        stored = self.storage.get_setting(_DEFINITIONS_SETTING)
        if stored is not None:
            self._registry = Registry.build(loads_definitions(stored), self._registry)
        self._loaded = True

    # --- events and time ---------------------------------------------------------------------

    def handle_event(self, event: Event) -> Outcome:
        """Process one event for its customer in one transaction. A repeated ``event_id`` is a
        no-op (the outcome says ``duplicate``)."""
        self._load_published()
        if not isinstance(event, Event):
            raise InvalidEventError(f"expected a cjo.Event, got {type(event).__name__}")
        registry = self._registry
        if not registry.is_relevant(event.name):
            return Outcome(event_id=event.event_id)
        now = self.clock.now()
        with self.storage.customer(event.customer_id, now) as session:
            if not session.claim_event(event.event_id):
                return Outcome(event_id=event.event_id, duplicate=True)
            decider = self._decider(event.customer_id, session, registry)
            decider.on_event(event, now)
            session.apply(decider.changes)
        self._dispatch(decider.changes.messages, now)
        return decider.outcome.build(event.event_id)

    def handle_events(
        self, items: Iterable[Event | ProfileUpdate], *, batch_size: int = 500
    ) -> Outcome:
        """Process many events (and profile updates) with group commit: each group of up to
        ``batch_size`` items is one storage transaction. Each customer's items are handled in
        the order given, with every guarantee of ``handle_event`` and ``identify``; messages
        are dispatched after each group commits."""
        self._load_published()
        builder = OutcomeBuilder()
        chunk: list[Event | ProfileUpdate] = []
        for item in items:
            if isinstance(item, Event):
                if not self._registry.is_relevant(item.name):
                    continue
            elif not isinstance(item, ProfileUpdate):
                raise InvalidEventError(
                    f"expected a cjo.Event or cjo.ProfileUpdate, got {type(item).__name__}"
                )
            chunk.append(item)
            if len(chunk) >= batch_size:
                self._handle_group(chunk, builder)
                chunk = []
        if chunk:
            self._handle_group(chunk, builder)
        return builder.build()

    def _handle_group(
        self, items: list[Event | ProfileUpdate], builder: OutcomeBuilder
    ) -> None:
        registry = self._registry
        now = self.clock.now()
        by_customer: dict[str, list[Event | ProfileUpdate]] = {}
        for item in items:
            by_customer.setdefault(item.customer_id, []).append(item)
        deciders: list[Decider] = []
        claims = [(i.customer_id, i.event_id) for i in items if isinstance(i, Event)]
        with self.storage.batch(list(by_customer), now, claims=claims) as sessions:
            for customer_id, customer_items in by_customer.items():
                session = sessions[customer_id]
                decider = self._decider(customer_id, session, registry)
                for item in customer_items:
                    if isinstance(item, ProfileUpdate):
                        decider.update_profile(item, now)
                    elif session.claim_event(item.event_id):
                        decider.on_event(item, now)
                session.apply(decider.changes)
                deciders.append(decider)
        self._finish(deciders, now, builder)

    def _finish(self, deciders: list[Decider], now: datetime, builder: OutcomeBuilder) -> None:
        """After commit: dispatch what the group wrote to the outbox, collect what happened."""
        self._dispatch([m for d in deciders for m in d.changes.messages], now)
        for decider in deciders:
            builder.absorb(decider.outcome)

    def run_due(self, now: datetime | None = None) -> Outcome:
        """Fire every wake-up due by ``now`` (default: the clock), earliest first. Each fires at
        its scheduled instant, so following waits are timed from the schedule. Customers are
        handled in groups, one transaction per group claimed."""
        now = ensure_aware(now, "now") if now is not None else self.clock.now()
        self._load_published()
        builder = OutcomeBuilder()
        registry = self._registry
        while True:
            deciders: list[Decider] = []
            with self.storage.due_batch(now, self.due_batch_size, self.wake_lease) as sessions:
                for customer_id, session in sessions.items():
                    decider = self._decider(customer_id, session, registry)
                    decider.catch_up(now)
                    session.apply(decider.changes)
                    deciders.append(decider)
            if not deciders:
                break
            self._finish(deciders, now, builder)
        return builder.build()

    def start_journey(
        self, journey_id: str, customer_id: str, context: Mapping[str, Any] | None = None
    ) -> Outcome:
        """Start a journey for a customer explicitly (API trigger). Re-entry rules and the
        journey's audience apply; ``context`` is available to templates and conditions."""
        self._load_published()
        cj = self._registry.latest.get(journey_id)
        if cj is None:
            raise UnknownJourneyError(f"no journey {journey_id!r} has been published")
        _check_customer_id(customer_id)
        now = self.clock.now()
        with self.storage.customer(customer_id, now) as session:
            decider = self._decider(customer_id, session)
            decider.start(cj, dict(context or {}), now)
            session.apply(decider.changes)
        self._dispatch(decider.changes.messages, now)
        return decider.outcome.build()

    def identify(
        self,
        customer_id: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        unset: Iterable[str] = (),
        timezone: str | None = None,
        locale: str | None = None,
    ) -> Outcome:
        """Create or update a customer's profile. Exit conditions of the customer's journeys
        are re-checked against the new profile."""
        update = ProfileUpdate(customer_id, attributes or {}, tuple(unset), timezone, locale)
        self._load_published()
        now = self.clock.now()
        with self.storage.customer(customer_id, now) as session:
            decider = self._decider(customer_id, session)
            decider.update_profile(update, now)
            session.apply(decider.changes)
        self._dispatch(decider.changes.messages, now)
        return decider.outcome.build()

    def remove_from_journey(
        self, customer_id: str, journey_id: str | None = None, reason: str = "removed by host"
    ) -> Outcome:
        """End the customer's active enrollments (in one journey, or all) as ``removed``."""
        now = self.clock.now()
        with self.storage.customer(customer_id, now) as session:
            decider = self._decider(customer_id, session)
            decider.remove(journey_id, reason, now)
            session.apply(decider.changes)
        return decider.outcome.build()

    def erase_customer(self, customer_id: str) -> None:
        """Forget everything about a customer (right to erasure)."""
        self.storage.erase_customer(customer_id)

    # --- delivery ----------------------------------------------------------------------------

    def dispatch_pending(self, now: datetime | None = None, limit: int = 1000) -> int:
        """Dispatch outbox messages left undelivered (after a crash, or awaiting a retry).
        Returns how many were attempted."""
        now = ensure_aware(now, "now") if now is not None else self.clock.now()
        attempted = 0
        while True:
            batch = self.storage.claim_outbox(now, limit, self.storage.dispatch_lease)
            if not batch:
                return attempted
            self._dispatch(batch, now)
            attempted += len(batch)

    def _dispatch(self, messages: Iterable[Message], now: datetime) -> None:
        storage = self.storage
        deliveries: list[Delivery] = []
        for message in messages:
            result = self._deliver(message)
            retry_at = None
            if result.status == "failed":
                entry = storage.outbox_entry(message.idempotency_key)
                attempts = (entry.attempts if entry else 0) + 1
                if attempts < self.max_delivery_attempts:
                    retry_at = now + self.retry_backoff * (2 ** (attempts - 1))
            deliveries.append(Delivery(message.idempotency_key, result, retry_at))
        if deliveries:
            storage.complete_outbox_many(deliveries, now)

    def _deliver(self, message: Message) -> DeliveryResult:
        channel = self.channels.get(message.channel)
        if channel is None:
            return DeliveryResult("rejected", error=f"no channel {message.channel!r}")
        try:
            result = channel.send(message)
        except Exception as exc:  # a failing adapter must not lose the message: retry it
            return DeliveryResult("failed", error=f"{type(exc).__name__}: {exc}")
        if not isinstance(result, DeliveryResult):
            return DeliveryResult("failed", error=f"channel returned {type(result).__name__}")
        return result

    def run_worker(
        self,
        *,
        stop: threading.Event | None = None,
        poll_interval: float = 1.0,
        max_iterations: int | None = None,
    ) -> WorkerStats:
        """Fire due wake-ups and dispatch the outbox until ``stop`` is set: the loop to run in
        each worker process (see ``cjo.worker.run_worker``)."""
        from cjo.worker import run_worker  # noqa: PLC0415  (the worker module imports Engine)

        return run_worker(
            self, stop=stop, poll_interval=poll_interval, max_iterations=max_iterations
        )

    # --- queries -----------------------------------------------------------------------------

    def profile(self, customer_id: str) -> Profile | None:
        return self.storage.get_profile(customer_id)

    def enrollments(self, customer_id: str) -> list[Enrollment]:
        return self.storage.get_enrollments(customer_id)

    def _decider(
        self, customer_id: str, session: CustomerSession, registry: Registry | None = None
    ) -> Decider:
        return Decider(
            registry or self._registry, self._renderer, customer_id, session.load_profile(),
            session.load_active(), session.history,
        )


def _replace_by_id(current: Iterable[Any], new: Iterable[Any]) -> list[Any]:
    merged = {item.id: item for item in current}
    merged.update({item.id: item for item in new})
    return list(merged.values())


def _check_customer_id(customer_id: object) -> None:
    if not isinstance(customer_id, str) or not customer_id:
        raise InvalidEventError(f"customer_id must be a non-empty string, got {customer_id!r}")
