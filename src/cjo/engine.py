"""The Engine: the host's single entry point."""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import attrs

from cjo.analytics.segments import SegmentSize, segment_id_list, segment_sizes, size_instants
from cjo.arguments import (
    activity_window,
    attribute_names,
    check_channels,
    check_consent,
    check_decision_options,
    check_delivery,
    check_engine_options,
    clock_reading,
    count,
    definitions_of,
    flag,
    ids_of,
    refuse_duplicates,
)
from cjo.channels.actions import ActionFunction, action_channels
from cjo.channels.base import Channel, DeliveryResult, Message, deliver
from cjo.channels.retry import retry_delay
from cjo.clock import Clock, SystemClock, ensure_aware
from cjo.content.checks import revise_for_blocks
from cjo.content.offers import Scorer
from cjo.delivery.caps import give_back
from cjo.delivery.consent import (
    block,
    check_channel,
    check_topic,
    set_consent,
    unblock,
    withheld,
    withhold_mark,
)
from cjo.delivery.feedback import (
    DELIVERY_EVENTS,
    check_delivery_event,
    message_activity,
    record_dead_letter,
    record_dead_letter_retried,
    record_permanent_failure,
    sent_messages,
)
from cjo.delivery.quiet_hours import held_at_dispatch
from cjo.described import likely_meant, short
from cjo.errors import (
    ClockError,
    CommitOutcomeUnknownError,
    ConflictError,
    CorruptRecordError,
    DefinitionError,
    InvalidEventError,
    JourneyNotPausedError,
    Problem,
    StorageError,
    UnknownJourneyError,
    UnreadableDefinitionsError,
    UsageError,
)
from cjo.export import export_customer
from cjo.identity import anonymous_id_to_merge, merge_into
from cjo.importing import ImportResult, import_profiles
from cjo.limits import (
    DEFAULT_LIMITS,
    MAX_RETRY_AFTER,
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    TIMESTAMP_RANGE,
    Limits,
)
from cjo.model.content import ContentBlock, ContentItem
from cjo.model.definitions import Definitions
from cjo.model.events import Event, Profile, ProfileUpdate, check_id, check_values, text_problem
from cjo.model.governance import (
    PAUSES_KEPT,
    ControlGroup,
    JourneyPause,
    VersionChange,
    VersionPublished,
    VersionRetired,
    Withdrawal,
)
from cjo.model.journey import Journey
from cjo.model.offers import Offer
from cjo.model.policies import FrequencyCap, QuietHours, Topic
from cjo.model.segments import Segment
from cjo.model.shapes import shape_problems
from cjo.model.steps import Action
from cjo.model.taxonomy import Taxonomy
from cjo.outcome import Outcome, OutcomeBuilder
from cjo.runtime.core import Decider, failover_channels, new_state
from cjo.runtime.ids import failover_key
from cjo.runtime.kinds.action import ACTION_CHANNEL_PREFIX
from cjo.runtime.kinds.flow import launched_split_problems
from cjo.runtime.options import DEFAULT_RECIPIENT_ATTRIBUTES, DecisionOptions
from cjo.runtime.registry import Registry
from cjo.runtime.sending import give_back_offer
from cjo.runtime.state import Activity, CustomerState, Enrollment, detached, shown_wake
from cjo.scheduling import (
    due_occurrences,
    mark_schedules,
    run_occurrence,
    say_never_occurring,
)
from cjo.segments.membership import leave_every_segment
from cjo.segments.rules import ProfileRule
from cjo.serialization import (
    dumps_stored_definitions,
    loads_stored_definitions,
)
from cjo.storage.base import (
    CustomerSession,
    DeadLetter,
    Delivery,
    PruneResult,
    Retention,
    SetAsideRecord,
    Storage,
    page_of_ids,
    returned,
)
from cjo.storage.memory import InMemoryStorage
from cjo.validation import ContentChecks, validate_definitions

if TYPE_CHECKING:
    from cjo.worker import StopSignal, WorkerStats

__all__ = ["RECORD_RESULTS_COST", "RECORD_RESULTS_EVERY", "Engine"]

log = logging.getLogger("cjo.engine")

# Storage classes whose due_batch lacks ``due``, already warned about (once a process).
_WARNED_NO_DUE: set[type] = set()


def _takes_keyword(method: Callable[..., object], name: str) -> bool:
    """Whether ``method`` accepts the keyword argument ``name`` (by name or ``**kwargs``).
    When its signature cannot be read, assume it does: the call then fails as it would have."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        or (p.name == name and p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                          inspect.Parameter.POSITIONAL_OR_KEYWORD))
        for p in parameters
    )

#: The setting holding the segment definitions every customer was last evaluated against.
_SEGMENTS_REFRESHED = "segments:refreshed"

#: How many times publish reloads and merges when another process published meanwhile.
_PUBLISH_ATTEMPTS = 10

#: The reason an erased customer's active enrollments end with (as ``removed``); like every
#: removal reason, the anonymous log entry keeps the status, not the reason.
ERASED_REASON = "erased"

#: Why an anonymous customer's message withheld at an identity merge did not go out, as its
#: outbox entry says: the known customer's reason is logged on them alone.
_MERGED_REASON = "merged into a known customer"

#: A dispatch records its delivery results in groups, not once per batch: a worker killed
#: mid-batch (``kill -9``, a lost machine) leaves the messages it handed to their channel but
#: did not record for the next worker to send again. A group is written once it holds this
#: many results and sending them took ``RECORD_RESULTS_COST`` times what the last write took
#: (docs/storage.md: several processes).
RECORD_RESULTS_EVERY: Final = 8
#: So the writes take at most about a tenth of a dispatch's time on any storage: with a
#: provider's replies (milliseconds each) every group of ``RECORD_RESULTS_EVERY`` is written; a
#: channel that answers at once (an in-process queue) makes larger groups, each sent in ten
#: writes' time (a few milliseconds on PostgreSQL), instead of halving its throughput there.
RECORD_RESULTS_COST: Final = 10

DispatchMode = Literal["inline", "deferred"]


class Engine:
    """Runs published journeys for the host's customers.

    ``storage`` defaults to a fresh ``InMemoryStorage``; ``channels`` maps channel names used by
    ``Send`` steps to adapters; ``clock`` defaults to the system clock.

    - ``future_tolerance``: an event stamped later than now plus this is refused.
    - ``retention``: how long handled event ids, delivered messages and the activity log are
      kept; ``run_due`` prunes at most once per ``prune_every`` of engine time.
    - ``keep_ended``: how many ended enrollments each customer record keeps (for
      ``enrollments()``; the activity log keeps every end).
    - ``recipient_attributes``: the profile attributes a message carries for its channel.
    - ``render``: False records messages without rendering content (back-tests).
    - ``limits``: template, definition and catch-up limits (``cjo.Limits``).
    - ``default_timezone``: the IANA zone of calendar rules (waits until a time of day, quiet
      hours...) for customers whose profile and journey name none; UTC when None.
    - ``late_events``: ``decide`` (default) or ``ignore`` an event stamped before the newest
      one already decided for its customer; either way it is recorded, and a consent or
      delivery-feedback event still changes consent and blocks (docs/semantics.md).

    Delivery (see docs/channels.md):

    - ``dispatch``: ``"inline"`` (default) sends a call's messages right after it commits,
      before it returns; ``"deferred"`` only records them in the outbox, and
      ``dispatch_pending()`` (the worker loop) sends them, so a slow provider never holds up
      ``handle_event``.
    - ``max_delivery_attempts``: attempts of a message that keeps failing transiently before it
      becomes a dead letter (``dead_letters()``); a permanent failure is never retried, and
      one that blames the recipient (``DeliveryResult.unreachable``) blocks the message's
      channel for the customer, as a hard bounce does.
    - ``retry_backoff`` / ``max_retry_delay``: the wait before a retry doubles from
      ``retry_backoff`` after each failed attempt, up to ``max_retry_delay``, less a jitter of
      up to half fixed by the message's idempotency key and the attempt (reproducible runs).
    - ``contact_attributes``: channel -> the profile attribute needed to reach a customer on
      it (``{"sms": "phone"}``); see ``cjo.delivery.STANDARD_CONTACT_ATTRIBUTES`` and
      docs/delivery-policies.md.
    - ``channel_types``: the channel type (``email``, ``sms``, ``push``, ``in_app``,
      ``webhook``) of channels registered under other names; content for a typed channel
      must have its fields (docs/content.md).
    - ``scorers``: offer scorers by name: ``fn(profile attributes, context) -> float``,
      deterministic.
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
        max_retry_delay: timedelta = timedelta(hours=1),
        dispatch: DispatchMode = "inline",
        future_tolerance: timedelta = timedelta(minutes=5),
        retention: Retention | None = None,
        prune_every: timedelta = timedelta(hours=1),
        keep_ended: int = 1,
        recipient_attributes: Sequence[str] = DEFAULT_RECIPIENT_ATTRIBUTES,
        render: bool = True,
        limits: Limits | None = None,
        default_timezone: str | None = None,
        late_events: Literal["decide", "ignore"] = "decide",
        actions: Mapping[str, ActionFunction] | None = None,
        contact_attributes: Mapping[str, str] | None = None,
        channel_types: Mapping[str, str] | None = None,
        scorers: Mapping[str, Scorer] | None = None,
    ) -> None:
        check_engine_options(
            storage=storage, clock=clock,
            mappings={"channels": channels, "actions": actions, "scorers": scorers,
                      "contact_attributes": contact_attributes, "channel_types": channel_types},
            counts={"due_batch_size": (due_batch_size, 1), "keep_ended": (keep_ended, 0)},
            spans={"wake_lease": (wake_lease, False), "prune_every": (prune_every, False),
                   "future_tolerance": (future_tolerance, True)},
            render=render, limits=limits, retention=retention,
        )
        check_channels(channels or {})
        self.storage = storage if storage is not None else InMemoryStorage()
        # Whether that storage's due_batch takes ``due`` (checked once, when first needed).
        self._takes_due: tuple[Storage, bool] | None = None
        self.channels: dict[str, Channel] = dict(channels or {})
        self.actions: dict[str, ActionFunction] = {}
        self._action_channels: dict[str, Channel] = {}
        self._add_actions(actions or {})
        self.clock = clock if clock is not None else SystemClock()
        self.due_batch_size = due_batch_size
        self.wake_lease = wake_lease
        check_delivery(dispatch, max_delivery_attempts, retry_backoff, max_retry_delay)
        self.dispatch: DispatchMode = dispatch
        self.max_delivery_attempts = max_delivery_attempts
        self.retry_backoff = retry_backoff
        self.max_retry_delay = max_retry_delay
        self.future_tolerance = future_tolerance
        self.retention = retention if retention is not None else Retention()
        self.prune_every = prune_every
        check_decision_options(
            default_timezone, late_events, contact_attributes or {}, channel_types or {},
            scorers or {},
        )
        self.options = DecisionOptions(
            render=render,
            keep_ended=keep_ended,
            recipient_attributes=attribute_names(recipient_attributes, "recipient_attributes"),
            limits=limits if limits is not None else DEFAULT_LIMITS,
            default_timezone=default_timezone,
            late_events=late_events,
            contact_attributes=dict(contact_attributes or {}),
            channel_types={
                **{n: c.channel_type for n, c in self.channels.items() if c.channel_type},
                **(channel_types or {}),
            },
            scorers=dict(scorers or {}),
        )
        self._registry = Registry()
        # Held while a new generation is built or published, so that the threads of one
        # engine build each generation once, never adopt an older one over a newer, and never
        # race each other for the definitions' compare-and-set. Never taken by a call whose
        # generation is current (the hot path).
        self._definitions_lock = threading.RLock()
        # Content problems found by earlier publishes: unchanged items are not rendered again.
        self._content_checks = ContentChecks()
        # The latest stored generation, if this version cannot read it (``_sync``).
        self._unreadable: UnreadableDefinitionsError | None = None
        self._last_prune: datetime | None = None
        # How many customers this engine erased at the latest instant it erased any (no id is
        # kept), at least the count an identity merge gave the record it emptied then: a record
        # it makes at that instant takes the count (``CustomerState.erasures``).
        self._erased: tuple[datetime, int] | None = None
        self._to_release: set[str] = set()
        # Journey versions a due wake-up was found on that no definitions hold (logged once).
        self._said_unknown: set[tuple[str, int]] = set()
        # The segment definitions (plan basis) every stored customer was last evaluated against.
        self._segments_refreshed: str | None = None

    def _now(self) -> datetime:
        """The clock's reading, checked once per host call (not per event)."""
        now = self.clock.now()
        # The usual reading, an instant in UTC, passes without a call.
        if type(now) is datetime and now.tzinfo is UTC:
            return now
        return clock_reading(self.clock, now)

    def _locked_now(self, read: datetime) -> datetime:
        """The instant a customer's transaction decides at, once it holds the customer's
        lock: the clock's reading then, never earlier than ``read`` (the call's own, taken
        before). Another thread may have read the clock after this call did and committed
        for the customer first; decided at ``read``, this call's changes would be logged
        before that thread's (an exit before the entry it ends)."""
        now = self._now()
        return now if now > read else read

    def _pass_instant(self, now: datetime | None) -> datetime:
        """The instant a worker's pass runs at (``now``, or the clock's reading), or
        ``ClockError`` outside the range event timestamps fall in: past it, a lease added to
        it overflows, and a paused journey's held wake-ups (due at the range's end, after
        every real instant) would fire again and again, for ever."""
        at = ensure_aware(now, "now") if now is not None else self._now()
        if not MIN_TIMESTAMP <= at < MAX_TIMESTAMP:
            raise ClockError(
                f"cannot run due work at {at.isoformat()} "
                f"({'now' if now is not None else 'the clock'}): the engine works "
                f"{TIMESTAMP_RANGE}, as event timestamps"
            )
        return at

    @property
    def render(self) -> bool:
        return self.options.render

    @property
    def keep_ended(self) -> int:
        return self.options.keep_ended

    @property
    def recipient_attributes(self) -> tuple[str, ...]:
        return self.options.recipient_attributes

    @property
    def limits(self) -> Limits:
        return self.options.limits

    # --- definitions -------------------------------------------------------------------------

    @property
    def definitions(self) -> Definitions:
        """Everything published so far (every journey version), here or by another process
        on the same storage. Definitions are immutable: publish a changed one built with
        ``attrs.evolve``."""
        return self._sync().definitions

    @property
    def generation(self) -> int:
        """The definitions generation this engine runs (it follows the storage's latest)."""
        return self._sync().generation

    def _sync(self) -> Registry:
        """The registry of the storage's latest generation: one cheap read, and a rebuild only
        when another process (or this one) published since. A generation this version cannot
        read raises ``UnreadableDefinitionsError`` (read once: the answer is kept until a newer
        generation is stored); this engine then decides nothing, rather than decide on older
        definitions or on the part it can read while other processes run all of it."""
        registry = self._registry
        latest = self.storage.definitions_generation()
        if latest == registry.generation:
            return registry
        returned(self.storage, "definitions_generation", latest, int)
        unreadable = self._unreadable
        if unreadable is not None and unreadable.generation == latest:
            raise UnreadableDefinitionsError(unreadable.generation, unreadable.problems)
        with self._definitions_lock:
            # Another thread may have built it while this one waited.
            registry = self._registry
            stored = self.storage.load_definitions()
            if stored is not None and not (
                isinstance(stored, tuple) and len(stored) == 2 and isinstance(stored[0], int)
                and isinstance(stored[1], str)
            ):
                raise StorageError(
                    f"{type(self.storage).__name__}.load_definitions() returned "
                    f"{type(stored).__name__} {stored!r:.80}, not None or a (generation: int, "
                    "payload: str) tuple"
                )
            if stored is None and latest:
                # Running on without definitions would quietly start and wake no one.
                raise StorageError(
                    f"{type(self.storage).__name__}.definitions_generation() says generation "
                    f"{latest!r} is stored, but load_definitions() returned None"
                )
            if stored is None and registry.generation:
                # Emptied behind this engine (dropped and made again, an old backup restored):
                # running on would decide by definitions no other process can see.
                raise StorageError(
                    f"{type(self.storage).__name__} holds no definitions, but this engine ran "
                    f"generation {registry.generation} from it: the storage was emptied or "
                    "replaced while the engine was open; open the storage and the engine again"
                )
            if stored is not None and stored[0] != registry.generation:
                generation, text = stored
                try:
                    definitions = loads_stored_definitions(text, generation)
                except UnreadableDefinitionsError as exc:
                    log.error("%s", exc)
                    self._unreadable = exc
                    raise
                registry = self._adopt(Registry.build(definitions, generation, self.limits))
            return registry

    def _adopt(self, registry: Registry) -> Registry:
        """Run ``registry`` from now on (the caller holds ``_definitions_lock``); journeys it
        resumes get their held customers released at this engine's next ``run_due`` (every
        worker does it once: idempotent)."""
        previous = self._registry
        if previous.generation:
            self._to_release.update(j for j in previous.paused if j not in registry.paused)
        if registry.any_schedule:
            say_never_occurring(registry)
        self._registry = registry
        return registry

    def publish(
        self,
        definitions: Definitions | None = None,
        *,
        journeys: Iterable[Journey] = (),
        segments: Iterable[Segment] = (),
        content: Iterable[ContentItem] = (),
        taxonomy: Taxonomy | None = None,
        control_group: ControlGroup | None = None,
        max_concurrent_journeys: int | None = None,
        running: Mapping[str, VersionChange] | None = None,
        topics: Iterable[Topic] = (),
        caps: Iterable[FrequencyCap] = (),
        quiet_hours: Iterable[QuietHours] = (),
        profile_rules: Iterable[ProfileRule] = (),
        blocks: Iterable[ContentBlock] = (),
        offers: Iterable[Offer] = (),
    ) -> int:
        """Add or update definitions; returns the new generation. The whole resulting set is
        validated together; if any problem is found a ``DefinitionError`` lists them all and
        nothing changes.

        A journey is identified by (id, version): publishing a new version starts new entries
        on it while customers already inside older versions finish them. A published version
        cannot be changed; publish the change as a new version. Content, blocks, offers,
        segments, profile rules and delivery policies (topics, caps, quiet hours) are replaced by
        id; a changed content item gets the next content version, and so does every item that
        includes a changed block.

        ``running`` says, per journey id, what the new version does to customers inside the
        previous one: ``VersionChange.drain()`` (the default), ``.migrate({old step: new
        step})`` or ``.eject(reason)``. ``control_group`` and ``max_concurrent_journeys`` set
        the rules across journeys (see docs/semantics.md).

        From ``definitions``, the definitions and rules are taken, not the state of this
        storage's journeys (``paused``, ``version_changes``, ``published``, ``withdrawn``,
        ``retired``): those come from ``pause_journey``, ``resume_journey``, ``running``, each
        publish, ``withdraw`` and ``retire_drained``. One exception: a journey version
        ``definitions`` lists as retired that this storage does not hold yet is published
        retired (no one can be on it here), so another engine's definitions publish as they are.

        Publishing is a compare-and-set on the storage's generation: when another process
        published meanwhile, its definitions are merged with these and validated again.
        """
        if definitions is not None and not isinstance(definitions, Definitions):
            raise DefinitionError([Problem("publish definitions", (
                f"expected a Definitions, got {type(definitions).__name__}; pass lists of "
                "definitions by keyword (journeys=[...], segments=[...]...)"
            ))])
        if running is not None and not isinstance(running, Mapping):
            raise DefinitionError([Problem("publish running", (
                f"expected a mapping of journey ids to VersionChange, got "
                f"{type(running).__name__}"
            ))])
        incoming = definitions or Definitions()
        new = Definitions(
            journeys=definitions_of(Journey, "journeys", incoming.journeys, journeys),
            segments=definitions_of(Segment, "segments", incoming.segments, segments),
            content=definitions_of(ContentItem, "content", incoming.content, content),
            topics=definitions_of(Topic, "topics", incoming.topics, topics),
            caps=definitions_of(FrequencyCap, "caps", incoming.caps, caps),
            quiet_hours=definitions_of(QuietHours, "quiet_hours", incoming.quiet_hours,
                                       quiet_hours),
            profile_rules=definitions_of(ProfileRule, "profile_rules", incoming.profile_rules,
                                         profile_rules),
            blocks=definitions_of(ContentBlock, "blocks", incoming.blocks, blocks),
            offers=definitions_of(Offer, "offers", incoming.offers, offers),
        )
        refuse_duplicates(new)
        new, unkeyed = _unkeyed(new)
        new_journeys, new_segments, new_content = new.journeys, new.segments, new.content
        new_taxonomy = taxonomy if taxonomy is not None else incoming.taxonomy
        new_policies = (new.topics, new.caps, new.quiet_hours)
        new_rules, new_blocks, new_offers = new.profile_rules, new.blocks, new.offers
        incoming_retired = incoming.retired_versions()
        now = self._now()

        def change(current: Definitions) -> tuple[Definitions, list[Problem]]:
            merged = _merge_policies(
                current,
                _merge(current, new_journeys, new_segments, new_content, new_taxonomy, new_rules),
                *new_policies,
            )
            if new_blocks or new_offers:
                merged = _merge_content_parts(current, merged, new_blocks, new_offers)
            if unkeyed:  # for validation to refuse, with every other problem of the set
                merged = _appended(merged, unkeyed)
            problems = _version_conflicts(current, new_journeys)
            problems += launched_split_problems(current.journeys, new_journeys)
            merged, more = _governance(
                current, merged, new_journeys, now,
                control_group=(
                    control_group if control_group is not None else incoming.control_group
                ),
                max_concurrent=(
                    max_concurrent_journeys if max_concurrent_journeys is not None
                    else incoming.max_concurrent_journeys
                ),
                running=running or {},
            )
            problems.extend(more)
            known = {(j.id, j.version) for j in current.journeys}
            fresh = tuple(VersionPublished(j.id, j.version, now) for j in new_journeys
                          if (j.id, j.version) not in known)
            if fresh:
                merged = attrs.evolve(merged, published=(*merged.published, *fresh))
            # No one can be on a version this storage did not hold: one the copy lists as
            # retired comes in retired (it may name definitions withdrawn there).
            retired = tuple(VersionRetired(p.journey_id, p.version, now) for p in fresh
                            if (p.journey_id, p.version) in incoming_retired)
            if retired:
                merged = attrs.evolve(merged, retired=(*merged.retired, *retired))
            return _republished(merged), problems

        return self._change_definitions(change)

    def withdraw(
        self,
        *,
        segments: Iterable[str] = (),
        content: Iterable[str] = (),
        blocks: Iterable[str] = (),
        offers: Iterable[str] = (),
        topics: Iterable[str] = (),
        caps: Iterable[str] = (),
        quiet_hours: Iterable[str] = (),
        profile_rules: Iterable[str] = (),
    ) -> int:
        """Take published definitions out, by id (segments, content items, blocks, offers,
        topics, frequency caps, quiet hours, profile rules); returns the new generation.

        Refused with a ``DefinitionError`` when an id is not published, or when anything left
        still uses a definition withdrawn (a journey version's audience, trigger, condition or
        Send, another segment, an offer, a content item's block or topic...): each problem
        names the definition and what uses it, and nothing changes. Every journey version
        counts, drained or not, but those ``retire_drained`` retired: a definition only
        retired versions name can be withdrawn once they are.

        Journeys are not withdrawn: their versions hold customers; ``pause_journey`` stops
        one taking entries.

        What customer records hold for a withdrawn definition: segment memberships are ended
        (``segment_exited``) when each customer's segments are next evaluated (by the first
        ``run_due`` of any worker, or ``refresh_segments``); consent statements are kept, so
        a topic published again still honours every unsubscribe. Messages already in the
        outbox go out as they were rendered.

        A withdrawn id may be published again; a content item then takes the content version
        after the one it had. Like ``publish``, a compare-and-set on the storage's generation:
        another process's publish meanwhile is merged with it.
        """
        asked = {
            kind: ids_of(f"withdraw {kind}", noun, ids)
            for (kind, noun), ids in zip(_WITHDRAWABLE.items(), (
                segments, content, blocks, offers, topics, caps, quiet_hours, profile_rules,
            ), strict=True)
        }
        now = self._now()

        def change(current: Definitions) -> tuple[Definitions, list[Problem]]:
            unknown = _not_published(current, asked)
            if unknown:
                raise DefinitionError(unknown)
            kept: dict[str, Any] = {}
            records: list[Withdrawal] = []
            for kind, ids in asked.items():
                if not ids:
                    continue
                gone = set(ids)
                kept[kind] = tuple(d for d in getattr(current, kind) if d.id not in gone)
                records += [
                    Withdrawal(kind, d.id, now, d.version if kind == "content" else None)
                    for d in getattr(current, kind) if d.id in gone
                ]
            if not records:
                return current, []
            withdrawn = (*current.withdrawn, *records)
            return attrs.evolve(current, **kept, withdrawn=withdrawn), []

        return self._change_definitions(change, explain=partial(_still_used, asked))

    def retire_drained(self, journey_ids: Iterable[str] | None = None) -> int:
        """Retire every superseded journey version (not its journey's latest) that no customer
        is on any more, of the journeys ``journey_ids`` names (None: every journey); returns
        the generation that holds the retirements (the current one when there was nothing to
        retire). ``UnknownJourneyError`` names a journey id that is not published.

        A version is drained when no active enrollment is on it in any state (waiting, held by
        a pause, due: ``Storage.active_counts``) and no migration still to be applied moves
        customers onto it (one from a version someone is on). A retired version stays in
        ``definitions.journeys`` (reports, the activity log and exports name its steps) and
        is listed in ``definitions.retired``; it is no longer compiled for deciding, and
        ``withdraw`` no longer counts what it names. Entries never take it: an entry decided
        at an instant when it was the newest (a timer fired late) takes the next version that
        is not retired. A customer record that still turns up on it (a backup restored, a
        process that entered it before reading the newer version) leaves it at its next
        transaction, at the retirement instant: by the version's migration when one leads to
        a version not retired, else ended as ``ejected`` (``version N retired``).

        Like ``publish``, a compare-and-set on the storage's generation: versions are counted
        again against the newer definitions when another process changed them meanwhile, and
        its changes are kept."""
        asked = None if journey_ids is None else ids_of(
            "retire_drained journey_ids", "journey", journey_ids)
        now = self._now()

        def change(current: Definitions) -> tuple[Definitions, list[Problem]]:
            published = dict.fromkeys(j.id for j in current.journeys)
            for journey_id in asked or ():
                if journey_id not in published:
                    raise _unknown_journey(journey_id)
            records = [
                VersionRetired(journey_id, version, now)
                for journey_id in (published if asked is None else dict.fromkeys(asked))
                for version in _drained(self.storage, current, journey_id)
            ]
            if not records:
                return current, []
            return attrs.evolve(current, retired=(*current.retired, *records)), []

        return self._change_definitions(change)

    def _change_definitions(
        self, change: Callable[[Definitions], tuple[Definitions, list[Problem]]],
        explain: Callable[[list[Problem]], list[Problem]] | None = None,
    ) -> int:
        """Apply ``change`` to the latest definitions, validate, and store the result as a new
        generation with a compare-and-set (retried on a conflict, against the newer set).
        ``explain`` rewords the problems validation finds that the change brings."""
        # The threads of this engine publish one at a time: the compare-and-set is for other
        # processes, and a thread waiting here then merges with what the others published.
        with self._definitions_lock:
            return self._change_definitions_locked(change, explain)

    def _validate(self, definitions: Definitions, registry: Registry) -> list[Problem]:
        return validate_definitions(
            definitions, channels=self._known_channels(registry),
            actions=self.actions.keys(),
            limits=self.limits,
            renderer=registry.renderer.renderer,
            channel_types=self.options.channel_types, scorers=self.options.scorers.keys(),
            content_checks=self._content_checks,
        )

    def _change_definitions_locked(
        self, change: Callable[[Definitions], tuple[Definitions, list[Problem]]],
        explain: Callable[[list[Problem]], list[Problem]] | None,
    ) -> int:
        for _ in range(_PUBLISH_ATTEMPTS):
            registry = self._sync()
            current = registry.definitions
            merged, problems = change(current)
            found = self._validate(merged, registry)
            if found and registry.generation > 0:
                # What the stored definitions already break is not this publish's doing: a
                # check added since they were published (an upgrade) must not block every
                # later publish. Only what this one brings is refused.
                stored = set(self._validate(current, registry))
                found = [p for p in found if p not in stored]
            problems.extend(explain(found) if explain is not None and found else found)
            if problems:
                raise DefinitionError(problems)
            if registry.generation > 0 and merged == current:
                return registry.generation  # nothing new: no new generation
            try:
                generation = self.storage.append_definitions(
                    registry.generation, dumps_stored_definitions(merged)
                )
            except ConflictError:
                if self.storage.definitions_generation() == registry.generation:
                    raise  # not a newer generation but the storage refusing (a lock timeout)
                continue  # another process published first: merge with theirs and retry
            # No copy: a valid definition holds no list or dict of the host's (``cjo.frozen``),
            # so a published version cannot change with the host's objects, such as the dict
            # its steps were given in, edited into the next version.
            registry = self._adopt(Registry.build(merged, generation, self.limits))
            mark_schedules(self, registry, self._now())
            return generation
        raise ConflictError(
            f"publish lost the race for the definitions {_PUBLISH_ATTEMPTS} times in a row; "
            "retry"
        )

    def _known_channels(self, registry: Registry) -> frozenset[str]:
        """The channels definitions, consent and blocks may name: this engine's, and those
        ``registry``'s definitions name. A channel the stored definitions name was registered
        by the process that published it: a process with fewer channels may publish, pause and
        record consent too, its messages on such a channel left to a process that has it
        (claims by channel)."""
        return registry.channels.union(self.channels)

    # --- events and time ---------------------------------------------------------------------

    def _check_event(self, event: object, now: datetime, where: str = "") -> Event:
        if not isinstance(event, Event):
            raise InvalidEventError(f"expected a cjo.Event, got {type(event).__name__}")
        if event.timestamp > now + self.future_tolerance:
            raise InvalidEventError(
                f"{where}event {event.event_id!r} is stamped {event.timestamp.isoformat()}, "
                f"more than {self.future_tolerance} after now ({now.isoformat()}): check the "
                "sender's clock"
            )
        return event

    def handle_event(self, event: Event) -> Outcome:
        """Process one event for its customer in one transaction, deciding at the engine
        clock's now (histories and inactivity use the event's own timestamp). A repeated
        ``event_id`` is a no-op (the outcome says ``duplicate``). An event that can matter to
        no journey of this customer costs a look-up, not a transaction."""
        now = self._now()
        event = self._check_event(event, now)
        registry = self._sync()
        name = event.name
        if name in DELIVERY_EVENTS:
            check_delivery_event(registry.delivery.topics, self._known_channels(registry), event)
        if not registry.may_matter(name) or (
            name not in registry.shared_events  # those matter to anyone: no look-up
            and not registry.matters_to(self._peek(event.customer_id), name, now)
        ):
            return Outcome(event_id=event.event_id)
        sent = sent_messages(self.storage, (event,))

        def attempt(registry: Registry, fresh: bool) -> Decider | None:
            nonlocal now
            with self.storage.customer(event.customer_id, now) as session:
                if not session.claim_event(event.event_id):
                    return None
                now = self._locked_now(now)
                decider = self._decider(session, registry, now, fresh=fresh)
                if sent:
                    decider.sent = sent
                decider.on_event(event, now)
                self._save(session, decider)
            return decider

        decider = self._on_latest(registry, attempt)
        if decider is None:
            return Outcome(event_id=event.event_id, duplicate=True)
        if name in DELIVERY_EVENTS:
            self._judge_again(decider, now, decider.outcome)
        self._dispatch(decider.messages, now, decider.outcome)
        return decider.outcome.build(event.event_id)

    def handle_events(
        self, items: Iterable[Event | ProfileUpdate], *, batch_size: int = 500
    ) -> Outcome:
        """Process many events (and profile updates) with group commit: each group of up to
        ``batch_size`` items is one storage transaction. Each customer's items are handled in
        the order given, with every guarantee of ``handle_event`` and ``identify``; messages
        are dispatched after each group commits.

        A customer whose stored record cannot be decoded is left out of its group (the group
        is committed without their items, which are not claimed) and the others go on; once
        every item is handled, the first such ``CorruptRecordError`` is raised, naming the
        customer (the others are logged).

        An item refused as ``handle_event`` refuses an event (not an ``Event`` or
        ``ProfileUpdate``, stamped too far ahead, a statement of an undeclared topic) raises
        ``InvalidEventError`` naming its position (``item #n``, counted from 0): every item
        before it is handled, it and those after it are not. So is every item ``items`` gave
        before raising an exception of its own, which then propagates as it was raised.

        A ``StorageError`` while committing a group (the database went away, stayed locked)
        names the group's first item the same way, ``item #n``: every item before it is
        handled, it and those after it are not, so the host retries from item ``n``."""
        count(batch_size, "batch_size")
        if isinstance(items, Event | ProfileUpdate) or not isinstance(items, Iterable):
            raise UsageError(
                "handle_events takes an iterable of Event and ProfileUpdate items (one event: "
                f"handle_event), got {type(items).__name__}"
            )
        builder = OutcomeBuilder()
        corrupt: list[CorruptRecordError] = []
        chunk: list[Event | ProfileUpdate] = []
        now = self._now()
        registry = self._sync()
        relevant = registry.relevant_events
        known = self._known_channels(registry)
        latest = now + self.future_tolerance
        flushing = False
        start = 0  # the position of the chunk's first item
        try:
            # The hot loop of a stream: most events matter to no journey and cost only this.
            for position, item in enumerate(items):
                if isinstance(item, Event):
                    if item.timestamp > latest:
                        self._check_event(item, now, f"item #{position}: ")  # raises
                    if item.name not in relevant:
                        continue
                    if item.name in DELIVERY_EVENTS:
                        check_delivery_event(registry.delivery.topics, known, item,
                                             f"item #{position}: ")
                elif not isinstance(item, ProfileUpdate):
                    raise InvalidEventError(
                        f"item #{position}: expected a cjo.Event or cjo.ProfileUpdate, got "
                        f"{type(item).__name__}"
                    )
                if not chunk:
                    start = position
                chunk.append(item)
                if len(chunk) >= batch_size:
                    flushing = True
                    corrupt += self._handle_from(start, chunk, registry, builder)
                    flushing = False
                    chunk = []
                    now = self._now()
                    registry = self._sync()
                    relevant = registry.relevant_events
                    known = self._known_channels(registry)
                    latest = now + self.future_tolerance
        except BaseException:
            # A refused item, or the iterable itself failing (a consumer's queue gone): every
            # item before it is handled, none after it, so the host knows where to resume.
            # Not when the group's own transaction failed: nothing of it was kept.
            if chunk and not flushing:
                self._handle_from(start, chunk, registry, builder)
            raise
        if chunk:
            corrupt += self._handle_from(start, chunk, registry, builder)
        if corrupt:
            raise corrupt[0]
        return builder.build()

    def _handle_from(
        self, start: int, items: list[Event | ProfileUpdate], registry: Registry,
        builder: OutcomeBuilder,
    ) -> list[CorruptRecordError]:
        """``_handle_relevant`` for the group of ``handle_events`` whose first item is at
        ``start``. A ``StorageError`` rolled the whole group back: it is raised naming that
        item, the first of the stream not handled, for the host to resume from (the same
        exception, so its class still says whether a retry is safe)."""
        try:
            return self._handle_relevant(items, registry, builder)
        except CommitOutcomeUnknownError as exc:
            exc.args = (f"item #{start}: perhaps not handled, nor any item after it (every "
                        f"item before it was); handling them again from there is safe: {exc}",)
            raise
        except StorageError as exc:
            exc.args = (f"item #{start}: not handled, nor any item after it (every item "
                        f"before it was): {exc}",)
            raise

    def _handle_updates(self, updates: list[ProfileUpdate]) -> list[CorruptRecordError]:
        """``handle_events`` for a group of profile updates (an import's), in one transaction,
        returning the errors of the customers whose stored records cannot be decoded (their
        updates left out) rather than raising the first."""
        return self._handle_relevant(list(updates), self._sync(), OutcomeBuilder())

    def _handle_relevant(
        self, items: list[Event | ProfileUpdate], registry: Registry, builder: OutcomeBuilder
    ) -> list[CorruptRecordError]:
        """Drop the events that cannot matter to their customer (one look-up for the whole
        group), then handle the rest in one transaction."""
        now = self._now()
        # Only events that matter to some customers, not all, need the record to be judged.
        shared = registry.shared_events
        wanted = {
            i.customer_id for i in items if isinstance(i, Event) and i.name not in shared
        }
        states = self.storage.peek_many(sorted(wanted)) if wanted else {}
        kept: list[Event | ProfileUpdate] = []
        touched: set[str] = set()
        if len(states) < len(wanted):
            # Left out: a customer never seen (their event is dropped, as before) or one whose
            # record cannot be decoded, whose items go in: the group leaves them out and the
            # call raises, naming them, rather than drop their events unseen.
            touched.update(_undecodable(self.storage, wanted.difference(states)))
        for item in items:
            cid = item.customer_id
            # An earlier item of the group may have changed the customer (enrolled them, say):
            # from then on, everything of theirs goes in.
            if isinstance(item, ProfileUpdate) or cid in touched or registry.matters_to(
                states.get(cid), item.name, now
            ):
                kept.append(item)
                touched.add(cid)
        return self._handle_group(kept, registry, builder) if kept else []

    def _handle_group(
        self, items: list[Event | ProfileUpdate], registry: Registry, builder: OutcomeBuilder
    ) -> list[CorruptRecordError]:
        """Commit ``items`` as one group. A record that cannot be decoded rolls the group
        back; it is then committed again without that customer's items, so one bad record
        costs the others nothing. Returns the errors of the customers left out."""
        corrupt: list[CorruptRecordError] = []
        while items:
            try:
                # A rolled-back attempt's reports never happened (it is refused before anything
                # is sent, so only the lists hold some of it).
                self._on_latest(registry, partial(self._commit_group, items, builder),
                                undo=partial(builder.rewind, builder.mark()))
            except CorruptRecordError as exc:
                log.error("leaving a customer's events out of a group: %s", exc)
                corrupt.append(exc)
                items = [i for i in items if i.customer_id != exc.customer_id]
                continue
            break
        return corrupt

    def _commit_group(
        self, items: list[Event | ProfileUpdate], builder: OutcomeBuilder, registry: Registry,
        fresh: bool = False,
    ) -> None:
        now = self._now()
        by_customer: dict[str, list[Event | ProfileUpdate]] = {}
        for item in items:
            by_customer.setdefault(item.customer_id, []).append(item)
        deciders: list[Decider] = []
        claims = [(i.customer_id, i.event_id) for i in items if isinstance(i, Event)]
        sent = sent_messages(self.storage, items)
        # Customers whose consent or blocks an item changed after an earlier item of theirs (or
        # a wake-up caught up before it) wrote a message: the group commits before anything is
        # sent, so those messages are judged again on the record the group leaves, as a later
        # dispatch would.
        changed: dict[str, CustomerState] = {}
        with self.storage.batch(list(by_customer), now, claims=claims) as sessions:
            now = self._locked_now(now)
            for customer_id, customer_items in by_customer.items():
                session = sessions[customer_id]
                decider: Decider | None = None
                for item in customer_items:
                    if isinstance(item, ProfileUpdate):
                        decider = decider or self._decider(
                            session, registry, now, outcome=builder, fresh=fresh
                        )
                        decider.update_profile(item, now)
                    elif decider is not None and not registry.matters_to(
                        decider.state, item.name, now
                    ):
                        # As ``handle_event`` would on the record an earlier item left: an
                        # event nothing of theirs reads is neither decided nor claimed.
                        continue
                    elif session.claim_event(item.event_id):
                        decider = decider or self._decider(
                            session, registry, now, outcome=builder, fresh=fresh
                        )
                        if sent:
                            decider.sent = sent
                        decider.on_event(item, now)
                        # After the event: the wake-ups it caught up first may have written
                        # some too (judging one written after the change is a no-op).
                        if decider.messages and item.name in DELIVERY_EVENTS:
                            changed[customer_id] = decider.state
                if decider is not None:
                    self._save(session, decider)
                    deciders.append(decider)
        if changed:
            for decider in deciders:
                if decider.customer_id in changed:
                    self._judge_again(decider, now, builder)
        self._finish(deciders, now, builder)

    def _finish(self, deciders: list[Decider], now: datetime, builder: OutcomeBuilder) -> None:
        """After commit: dispatch what the group wrote to the outbox, collect what happened."""
        self._dispatch([m for d in deciders for m in d.messages], now, builder)
        for decider in deciders:
            if decider.outcome is not builder:
                builder.absorb(decider.outcome)

    def run_due(self, now: datetime | None = None) -> Outcome:
        """Fire every wake-up due by ``now`` (default: the clock): customer by customer, the
        customer with the earliest due wake-up first, and each customer's in order. Each fires at
        its scheduled instant, so following waits are timed from the schedule. Customers are
        handled in groups, one transaction per group claimed. A stored record that cannot be
        decoded is logged and set aside; the others go on."""
        now = self._pass_instant(now)
        builder = OutcomeBuilder()
        registry = self._sync()
        if self._to_release:
            self._release(now, builder)
        self._maybe_refresh_segments(registry, builder)
        # A schedule occurrence runs at its own instant, as a wake-up fires at its own: after
        # the wake-ups due by then (a time-relative membership that changed by then counts),
        # before the later ones, so a late pass decides what one on time would have.
        if registry.any_schedule:
            for occurrence, cj, trigger in due_occurrences(self, now):
                self._fire_due(occurrence.astimezone(UTC), now, registry, builder)
                run_occurrence(self, cj, trigger, occurrence, now, builder)
        self._fire_due(now, now, registry, builder)
        self._maybe_prune(now)
        return builder.build()

    def _fire_due(
        self, until: datetime, now: datetime, registry: Registry, builder: OutcomeBuilder
    ) -> None:
        """Fire every wake-up due by ``until`` (each at its own instant) in a pass at ``now``,
        customer by customer, one transaction per group claimed."""
        if until != now and not self._due_batch_takes_due():
            # An adapter written before ``due`` claims by ``now``: fire all that is due by then,
            # as engines did before schedules ran at their occurrences. (Claiming by ``now``
            # but firing only by ``until`` would leave the customers due in between leased,
            # untouched, until their leases ran out.)
            until = now
        while True:
            # ``due`` only when it differs: an adapter written before it still runs every
            # pass but a schedule's.
            batch = (
                self.storage.due_batch(now, self.due_batch_size, self.wake_lease)
                if until == now else
                self.storage.due_batch(now, self.due_batch_size, self.wake_lease, due=until)
            )
            with batch as sessions:
                # An untouched record keeps its claim's lease, so a wake-up this engine cannot
                # fire (an unknown journey version) is not claimed again at once.
                deciders = self._decide_each(
                    sessions.values(), registry, until, builder,
                    lambda decider: decider.catch_up(until, worker=True),
                )
                claimed = len(sessions)
            if claimed:
                self._say_unknown_versions(deciders, registry, until)
                self._finish(deciders, now, builder)
            # A short claim took every due customer no other worker holds: nothing is left.
            if claimed < self.due_batch_size:
                break

    def _say_unknown_versions(
        self, deciders: list[Decider], registry: Registry, until: datetime
    ) -> None:
        """Log, once per journey version, a due wake-up this engine left as it is because no
        definitions it holds have the version: it is claimed again at every lease until the
        version is published again, and would otherwise say nothing."""
        for decider in deciders:
            if decider.dirty:
                continue  # it fired something: a record stuck on nothing is never changed
            for e in decider.state.enrollments:
                key = (e.journey_id, e.version)
                w = e.wake_at
                if (w is not None and w <= until and key not in registry.journeys
                        and key not in self._said_unknown):
                    self._said_unknown.add(key)
                    log.warning(
                        "customer %r is due in journey %r version %d, which the definitions "
                        "of generation %d do not hold: the wake-up waits (claimed again at "
                        "every wake_lease) until that version is published again",
                        decider.customer_id, e.journey_id, e.version, registry.generation,
                    )

    def _due_batch_takes_due(self) -> bool:
        """Whether the storage's ``due_batch`` takes the ``due`` keyword (adapters written
        before it do not): read from its signature once per storage, with a warning the
        first time an adapter class lacks it."""
        storage = self.storage
        if self._takes_due is None or self._takes_due[0] is not storage:
            takes = _takes_keyword(storage.due_batch, "due")
            self._takes_due = (storage, takes)
            cls = type(storage)
            if not takes and cls not in _WARNED_NO_DUE:
                _WARNED_NO_DUE.add(cls)
                log.warning(
                    "%s.%s.due_batch does not take due=: a pass that runs a schedule "
                    "occurrence fires every wake-up due by now before it, not only those due "
                    "by the occurrence; add the keyword (see cjo.storage.base.Storage."
                    "due_batch)", cls.__module__, cls.__qualname__,
                )
        return self._takes_due[1]

    def start_journey(
        self, journey_id: str, customer_id: str, context: Mapping[str, Any] | None = None
    ) -> Outcome:
        """Start a journey for a customer explicitly (API trigger). Re-entry rules and the
        journey's audience apply; ``context`` is available to templates and conditions. A
        start that enters no one says why in the outcome's ``not_entered``."""
        registry = self._sync()
        cj = registry.latest.get(journey_id)
        if cj is None:
            raise _unknown_journey(journey_id)
        _check_customer_id(customer_id)
        # Checked as event properties are: the context is stored in the customer's record.
        values = dict(check_values(context, "journey context", "journey context value"))
        return self._for_customer(
            customer_id, lambda d, now: d.start(cj, values, now, explain=True),
            registry=registry,
        ).outcome.build()

    def identify(
        self,
        customer_id: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        unset: Iterable[str] = (),
        timezone: str | None = None,
        locale: str | None = None,
        anonymous_id: str | None = None,
    ) -> Outcome:
        """Create or update a customer's profile. Exit conditions of the customer's journeys
        are re-checked against the new profile.

        With ``anonymous_id`` (the id the customer's events carried before they were known),
        that customer's record is first merged into this one, both in one transaction: see
        ``cjo.identity`` and docs/segments.md. Events still sent under the anonymous id later
        start a new anonymous record (no alias is kept)."""
        # ProfileUpdate checks ``unset`` (a bare str is refused, not split into letters).
        update = ProfileUpdate(customer_id, attributes or {}, unset, timezone, locale)
        registry = self._sync()
        if anonymous_id is not None:
            return self._identify_merging(update, anonymous_id, registry, self._now())
        return self._for_customer(
            customer_id, lambda d, at: d.update_profile(update, at), registry=registry,
            fresh=True,
        ).outcome.build()

    def _identify_merging(
        self, update: ProfileUpdate, anonymous_id: str, registry: Registry, now: datetime
    ) -> Outcome:
        known_id = update.customer_id
        anonymous_id = anonymous_id_to_merge(known_id, anonymous_id)
        builder = OutcomeBuilder()
        with self.storage.batch([known_id, anonymous_id], now) as sessions:
            now = self._locked_now(now)
            known = self._decider(sessions[known_id], registry, now, outcome=builder)
            anonymous = self._decider(sessions[anonymous_id], registry, now, create=False,
                                      outcome=builder)
            merging = anonymous.state.revision >= 0  # a stored record: something to merge
            if merging:
                anonymous.catch_up(now)
                known.catch_up(now, settle=False)
                merge_into(known, anonymous, now)
                # An erasure later in this instant must count beyond the emptied record's ids.
                erased = self._erased
                if erased is None or erased[0] != now or erased[1] < anonymous.state.erasures:
                    self._erased = (now, anonymous.state.erasures)
                for key, track in known.state.tracks.items():
                    spec = registry.plan.tracks.get(key)
                    if spec is not None:
                        spec.prune(track, now)
                known.state.segments_basis = None  # every membership is evaluated again
            known.update_profile(update, now)
            self._save(sessions[anonymous_id], anonymous)
            self._save(sessions[known_id], known)
        if merging:
            # The anonymous record is emptied, so its messages still to send (a dead letter
            # once retried) would be judged on no consent at all: they are judged now on the
            # merged record, the person's. Not one a process may be sending now (under a lease
            # that is not this merge's own): its sender judged it before the merge, and goes
            # on; should it come back, a later dispatch withholds it (``_withhold``).
            own = {m.idempotency_key for m in anonymous.messages}
            waiting: list[Message] = []
            sending: list[Message] = []
            for entry in self.storage.customer_outbox(anonymous_id):
                if entry.status in ("pending", "dead"):
                    busy = entry.sending(now) and entry.message.idempotency_key not in own
                    (sending if busy else waiting).append(entry.message)
            self._withhold_if_back(anonymous_id, sending, registry, known.state, now)
            kept = self._withhold(waiting, registry, now, {anonymous_id: known.state}, builder,
                                  merged_into=known_id)
            if len(kept) < len(waiting):  # those its catch-up just wrote are not sent either
                keys = {m.idempotency_key for m in kept}
                anonymous.messages = [m for m in anonymous.messages
                                      if m.idempotency_key in keys]
        self._finish([known, anonymous], now, builder)
        return builder.build()

    def _withhold_if_back(
        self, anonymous_id: str, messages: list[Message], registry: Registry,
        merged: CustomerState, now: datetime,
    ) -> None:
        """Of the anonymous customer's messages a process is sending at their merge (left to
        it: it judged them before the merge), note on the emptied record those the merged
        record stops (``withhold_mark``): one that comes back, its send failed or its sender
        gone, is withheld by the dispatch that claims it, not judged on the emptied record."""
        stopped = [m for m in messages if self._judge(registry, merged, m) is not None]
        if not stopped:
            return

        def note(d: Decider, at: datetime) -> None:
            d.touch()
            d.state.marks.update((withhold_mark(m), at) for m in stopped)

        self._on_record(anonymous_id, note, now)

    def remove_from_journey(
        self, customer_id: str, journey_id: str | None = None, reason: str = "removed by host"
    ) -> Outcome:
        """End the customer's active enrollments (in one journey, or all) as ``removed``.
        ``UnknownJourneyError`` for a journey id never published (a typo removes no one)."""
        _check_customer_id(customer_id)
        if journey_id is not None:
            check_id(journey_id, "journey_id")
        check_id(reason, "removal reason")
        registry = self._sync()
        if journey_id is not None and journey_id not in registry.latest:
            raise _unknown_journey(journey_id)

        def decide(d: Decider, now: datetime) -> None:
            if d.state.revision < 0:
                return  # never seen: nothing to end, and nothing to start for them either
            # What fell due before the call ends or moves on as if a worker had come on time:
            # the removal ends what is still active at ``now``.
            d.catch_up(now)
            d.remove(journey_id, reason, now)

        return self._for_customer(
            customer_id, decide, create=False, registry=registry,
        ).outcome.build()

    def pause_journey(self, journey_id: str) -> int:
        """Pause a journey (every version): it takes no new entries, and wake-ups that fall due
        are held until ``resume_journey``; exits and goals keep working. Returns the
        definitions generation that holds the pause (every engine on this storage follows it):
        a new one, or the current one if the journey was paused already."""
        now = self._now()

        def change(current: Definitions) -> tuple[Definitions, list[Problem]]:
            if journey_id not in {j.id for j in current.journeys}:
                raise _unknown_journey(journey_id)
            if any(p.journey_id == journey_id and p.until is None for p in current.paused):
                return current, []
            paused = (*current.paused, JourneyPause(journey_id, now))
            return attrs.evolve(current, paused=paused), []

        return self._change_definitions(change)

    def resume_journey(self, journey_id: str) -> Outcome:
        """Resume a paused journey: entries start again, and the wake-ups held while it was
        paused run now, by the journey's ``on_resume`` rule (send late, skip, or a grace
        period). Returns what the held wake-ups did. ``JourneyNotPausedError`` when the journey
        is not paused (never paused, or resumed already, here or by another engine). A
        ``StorageError`` while releasing them leaves the resume committed: this engine's next
        ``run_due`` releases them.

        The pause is kept with its resume instant (the journey's last ``PAUSES_KEPT``
        pauses), so a wake-up that fell due inside it is held and released at that instant
        whenever a worker gets to it."""
        now = self._now()

        def change(current: Definitions) -> tuple[Definitions, list[Problem]]:
            if journey_id not in {j.id for j in current.journeys}:
                raise _unknown_journey(journey_id)
            mine = [p for p in current.paused if p.journey_id == journey_id]
            if not mine or mine[-1].until is not None:
                raise JourneyNotPausedError(journey_id, mine[-1].until if mine else None)
            return attrs.evolve(current, paused=_resumed(current.paused, journey_id, now)), []

        self._change_definitions(change)
        builder = OutcomeBuilder()
        self._release(now, builder)
        return builder.build()

    def _release(self, now: datetime, builder: OutcomeBuilder) -> None:
        """Wake the customers of journeys resumed since the last call, so their held wake-ups
        are released, at the resume instant (a customer's own wake-up index cannot know when
        a pause ends)."""
        registry = self._sync()
        while True:
            # Popped, not tested then popped: another thread may take the last one between.
            try:
                journey_id = self._to_release.pop()
            except KeyError:
                return
            try:
                self._release_journey(journey_id, registry, now, builder)
            except BaseException:
                # Held wake-ups are never claimed (their wake_at is HELD): a release cut short
                # (the database went away) is run again, whole, at this engine's next run_due,
                # or its customers would stay held for good. Running it again is harmless.
                self._to_release.add(journey_id)
                raise

    def _release_journey(
        self, journey_id: str, registry: Registry, now: datetime, builder: OutcomeBuilder
    ) -> None:
        after: str | None = None
        while True:
            page = page_of_ids(
                self.storage, "enrolled_customers",
                self.storage.enrolled_customers(journey_id, after=after, limit=500), after,
            )
            if not page:
                return
            after = page[-1]
            with self.storage.batch(page, now) as sessions:
                deciders = self._decide_each(
                    sessions.values(), registry, now, builder,
                    lambda decider: decider.catch_up(now, worker=True),
                )
            self._finish(deciders, now, builder)

    def set_consent(
        self, customer_id: str, *, subscribed: bool, topic: str | None = None,
        channel: str | None = None,
    ) -> Outcome:
        """Record that the customer subscribed to (or unsubscribed from) ``topic`` (None: all
        marketing) on ``channel`` (None: every channel). The most recent statement covering a
        send decides it; see docs/delivery-policies.md. A topic the published definitions do
        not declare is refused (``UnknownTopicError``), and so is a channel neither registered
        nor named by them (``UnknownChannelError``): no send could ever name it."""
        check_consent(subscribed, topic, channel)
        registry = self._sync()
        check_topic(registry.delivery.topics, topic)
        check_channel(self._known_channels(registry), channel)
        return self._change_consent(customer_id, lambda s, now: set_consent(
            s, topic, channel, subscribed, now))

    def block_channel(
        self, customer_id: str, channel: str, reason: str = "blocked by host"
    ) -> Outcome:
        """Send nothing more to the customer on ``channel``, transactional messages included,
        until ``unblock_channel``. A channel neither registered nor named by the published
        definitions is refused (``UnknownChannelError``)."""
        check_id(channel, "channel")
        check_id(reason, "block reason")
        check_channel(self._known_channels(self._sync()), channel)
        return self._change_consent(customer_id, lambda s, _now: block(s, channel, reason))

    def unblock_channel(self, customer_id: str, channel: str) -> Outcome:
        """Lift a block of ``channel`` for the customer; refused as ``block_channel`` refuses
        an unknown channel."""
        check_id(channel, "channel")
        check_channel(self._known_channels(self._sync()), channel)
        return self._change_consent(customer_id, lambda s, _now: unblock(s, channel))

    def _change_consent(
        self, customer_id: str, change: Callable[[CustomerState, datetime], object]
    ) -> Outcome:
        _check_customer_id(customer_id)

        def decide(d: Decider, now: datetime) -> None:
            d.catch_up(now)  # what fell due before the change is decided without it
            change(d.state, now)
            d.touch()

        decider = self._for_customer(customer_id, decide, dispatch=False)
        # ``decide`` caught up, so the decider holds the instant decided at.
        now = decider.now if decider.now is not None else self._now()
        self._judge_again(decider, now, decider.outcome)
        self._dispatch(decider.messages, now, decider.outcome)
        return decider.outcome.build()

    def _judge_again(self, decider: Decider, now: datetime, outcome: OutcomeBuilder) -> None:
        """Inline, withhold what a transaction wrote before it changed the customer's consent
        or blocks (a send that fell due, caught up before an unsubscribe or a "STOP"): it
        would go out after the commit that recorded the change, so it is judged on the record
        the transaction left, as ``dispatch_pending`` judges what it sends."""
        if not decider.messages or self.dispatch != "inline":
            return
        try:
            decider.messages = self._withhold(
                decider.messages, decider.registry, now, {decider.customer_id: decider.state},
                outcome,
            )
        except StorageError as exc:
            # After the commit, as in ``_dispatch``: the input is handled, and raising would
            # tell the caller otherwise. Not sent now, since they could not be judged: left
            # in the outbox (leased) for ``dispatch_pending``, which judges what it sends.
            log.warning("messages written at %s not judged again after a consent change, left "
                        "to the outbox: %s", now.isoformat(), exc)
            for message in decider.messages:
                outcome.delivery.setdefault(message.idempotency_key, "pending")
            decider.messages = []

    def export_customer(self, customer_id: str) -> dict[str, Any]:
        """Everything held about a customer, as JSON-ready data with stable keys (right of
        access): their record, their outbox messages and their activity-log entries. See
        ``cjo.export``. ``CorruptRecordError`` if their stored record cannot be decoded."""
        _check_customer_id(customer_id)
        return export_customer(self.storage, customer_id, self._now())

    def import_profiles(
        self,
        records: Iterable[object],
        *,
        progress: Callable[[ImportResult], object] | None = None,
        batch_size: int = 500,
    ) -> ImportResult:
        """Create or update many profiles: each record a mapping with ``customer_id`` and
        optional ``attributes``, ``timezone``, ``locale``. Bad records are reported (position
        and reason) and the good ones imported, one transaction per ``batch_size`` records
        read, as ``ProfileUpdate``s; ``progress`` gets the running totals after each. The
        records of a customer whose stored record cannot be decoded are reported too, not
        imported, and the import goes on. See ``cjo.importing``."""
        return import_profiles(self, records, progress=progress, batch_size=batch_size)

    def erase_customer(self, customer_id: str) -> None:
        """Forget everything about a customer (right to erasure)."""
        _check_customer_id(customer_id)
        now = self._now()
        # Counted before the record goes: a transaction that finds it gone sees the count.
        erased = self._erased
        self._erased = (now, erased[1] + 1 if erased is not None and erased[0] == now else 1)
        self._leave_before_erasure(customer_id, now)
        self.storage.erase_customer(customer_id)
        # Rendered texts are kept by the values their templates read (a first name, an
        # address), which may be the customer's.
        self._registry.renderer.clear()

    def _leave_before_erasure(self, customer_id: str, now: datetime) -> None:
        """Log the ends of the customer's active enrollments (``removed``, ``erased``) and
        their segment exits before the erasure: the log keeps their entries (anonymous), and
        reports and segment sizes read from it would count them active, or a member, ever
        after."""

        def leave(d: Decider, at: datetime) -> None:
            d.remove(None, ERASED_REASON, at)
            leave_every_segment(d, at)

        try:
            self._for_customer(customer_id, leave, now=now, create=False, dispatch=False)
        except CorruptRecordError as exc:
            # Its enrollments and memberships cannot be read; the erasure must still remove it.
            log.warning("erasing a record that cannot be decoded, without logging its "
                        "enrollments' ends and segment exits: %s", exc)

    def prune(self, now: datetime | None = None) -> PruneResult:
        """Drop what ``retention`` no longer keeps (event ids, delivered messages and
        discarded dead letters, the activity log); dead letters stay until retried or
        discarded. ``run_due`` does this at most once per ``prune_every``."""
        now = ensure_aware(now, "now") if now is not None else self._now()
        result = self.storage.prune(now, self.retention)
        self._last_prune = now  # after it: a prune that failed is due again at the next pass
        return result

    def _maybe_prune(self, now: datetime) -> None:
        # The first pass of an engine prunes too: a process that lives for one pass (a job
        # run from cron) would otherwise never prune, and storage would grow for ever.
        if self._last_prune is None or now - self._last_prune >= self.prune_every:
            self.prune(now)

    # --- delivery ----------------------------------------------------------------------------

    def dispatch_pending(self, now: datetime | None = None, limit: int = 1000) -> int:
        """Send the outbox messages due by ``now``: those recorded in deferred mode, retries
        whose back-off has passed, and any left behind by a crash. Each is first checked
        against its customer's current blocks and consent; one that may no longer go out is
        withheld, not sent (docs/delivery-policies.md). Returns how many were attempted. The
        worker loop calls this.

        Only messages of this engine's channels (and actions) are claimed: those of a channel
        it lacks stay pending, untouched, for a process that has it (``pending_by_channel``
        counts them)."""
        given = now is not None
        now = self._pass_instant(now)
        count(limit, "limit")
        registry = self._sync()
        channels = self._channel_names()
        attempted = 0
        while True:
            batch = self.storage.claim_outbox(
                now, limit, self.storage.dispatch_lease, channels=channels
            )
            if not batch:
                return attempted
            if any(m.channel not in channels for m in batch):
                batch = self._without_strays(batch, channels)
            # Written by an earlier transaction: a block or an unsubscribe may have come since.
            batch = self._withhold(batch, registry, now)
            attempted += self._send(batch, now, None)
            if not given:
                now = self._now()  # the next claim's lease starts when it is taken

    def _channel_names(self) -> frozenset[str]:
        """What this engine can send on: its channels and its actions' calls."""
        return frozenset(self.channels).union(self._action_channels)

    def _has_channel(self, name: str) -> bool:
        return name in self.channels or name in self._action_channels

    def pending_by_channel(self) -> dict[str, int]:
        """How many outbox messages are pending (to be sent now or after a retry's back-off,
        claimed or not), per channel. A channel this engine lacks is another process's to
        send; one that no process has keeps its messages pending, never claimed, until a
        process has it (docs/channels.md: processes with different channels)."""
        return self.storage.pending_by_channel()

    def _without_strays(
        self, batch: list[Message], channels: frozenset[str]
    ) -> list[Message]:
        """``batch`` but messages of channels the claim did not ask for (an adapter that
        ignores ``claim_outbox``'s filter): not sent, and left leased rather than released,
        which would have the next claim hand them out again at once; once the lease runs out,
        a process that has their channel claims them."""
        strays = sorted({m.channel for m in batch if m.channel not in channels})
        log.error("%s.claim_outbox handed out messages of channels it was not asked for "
                  "(%s): left for a process that has them", type(self.storage).__name__,
                  ", ".join(strays))
        return [m for m in batch if m.channel in channels]

    def _withhold(
        self, messages: list[Message], registry: Registry, now: datetime,
        states: Mapping[str, CustomerState] | None = None,
        outcome: OutcomeBuilder | None = None, merged_into: str | None = None,
    ) -> list[Message]:
        """The messages that may still go out, judged on ``states`` (default: one read of
        their customers' records; a customer not in it is not judged); the others are
        discarded in the outbox (so reported in ``outcome``, if given) and logged as
        ``withheld`` (detail: why). Without ``states``, the messages of a customer erased
        since they were claimed are dropped: they went from the outbox with the customer.

        ``merged_into``: the messages are an anonymous customer's, judged on the record of the
        known customer they were merged into; why is logged on that customer only, so the
        anonymous customer's data keeps none of theirs (a block reason may hold an address).

        Without ``states`` (a dispatch of messages written earlier: a retry, a late worker),
        quiet hours are checked again too: a message a rule holds now waits in the outbox
        until the period ends (logged as ``quiet_hours``), or is withheld (``skip``)."""
        read = states is None
        quiet = read and bool(registry.delivery.quiet_hours)
        held: dict[str, list[tuple[Message, str]]] = {}
        if states is None:
            states = self.storage.peek_many(sorted({m.customer_id for m in messages}))
            # Left out: an erased customer, or one whose record cannot be decoded (not judged).
            gone = {m.customer_id for m in messages if m.customer_id not in states}
            if gone:
                messages = self._without_erased(messages, gone)
        kept: list[Message] = []
        stopped: dict[str, list[tuple[Message, str]]] = {}
        for message in messages:
            state = states.get(message.customer_id)
            reason = None
            if state is not None:
                if read and state.marks and withhold_mark(message) in state.marks:
                    reason = _MERGED_REASON  # judged at a merge while it was being sent
                else:
                    reason = self._judge(registry, state, message)
            if reason is None and quiet and self._judged(message):
                hold = held_at_dispatch(registry, state, message, now,
                                        self.options.default_timezone)
                if hold is not None:
                    rule, until = hold
                    if rule.action == "skip":
                        reason = f"quiet hours {rule.id}: skipped"
                    else:
                        self.storage.defer_outbox(message.idempotency_key, until, now)
                        if outcome is not None:
                            outcome.delivery[message.idempotency_key] = "pending"
                        held.setdefault(message.customer_id, []).append(
                            (message, f"{rule.id}: deferred to {until.isoformat()}")
                        )
                        continue
            if reason is None:
                kept.append(message)
            else:
                stopped.setdefault(message.customer_id, []).append((message, reason))
        for customer_id, entries in held.items():
            self._log_held(customer_id, entries, now)
        if not stopped:
            return kept
        # Read before they are recorded (which counts an attempt): the messages never
        # attempted, whose frequency cap slots (marketing ones) and offer sends are given back.
        unsent = {
            m.idempotency_key for found in stopped.values() for m, _ in found
            if (not m.transactional or m.offer_id is not None) and self._never_attempted(m)
        }
        self.storage.complete_outbox_many([
            Delivery(m.idempotency_key, DeliveryResult.permanent(
                f"withheld: {_MERGED_REASON if merged_into is not None else reason}",
                unreachable=False,
            ))
            for found in stopped.values() for m, reason in found
        ], now)
        for customer_id, found in stopped.items():
            for message, reason in found:
                log.info("message %s withheld: %s", message.idempotency_key, reason)
                # Not a dead letter: nothing to retry while the reason holds.
                self.storage.discard_dead_letter(message.idempotency_key, now)
                if outcome is not None:
                    outcome.delivery[message.idempotency_key] = "discarded"
            self._log_withheld(merged_into or customer_id, found, unsent, now)
        return kept

    def _never_attempted(self, message: Message) -> bool:
        entry = self.storage.outbox_entry(message.idempotency_key)
        return entry is not None and entry.attempts == 0

    def _judge(self, registry: Registry, state: CustomerState, message: Message) -> str | None:
        """Why ``message`` may no longer go out by ``state`` (``withheld``), or None
        (``_judged``)."""
        return withheld(registry, state, message) if self._judged(message) else None

    def _judged(self, message: Message) -> bool:
        """Whether this engine judges ``message`` before sending it: not an action's call, nor
        a message of a channel it lacks (the process that sends it judges it, when it does)."""
        return not message.channel.startswith(ACTION_CHANNEL_PREFIX) and self._has_channel(
            message.channel
        )

    def _without_erased(self, messages: list[Message], customer_ids: set[str]) -> list[Message]:
        """``messages`` but those of the customers among ``customer_ids`` that have no record
        (erased since their messages were claimed: nothing more goes out to them)."""
        erased: set[str] = set()
        for customer_id in customer_ids:
            try:
                if self._peek(customer_id) is None:
                    erased.add(customer_id)
            except CorruptRecordError:
                pass  # a record that cannot be read is not an erasure: sent unjudged
        if not erased:
            return messages
        kept = [m for m in messages if m.customer_id not in erased]
        # Counted, not named: a key holds the customer id (and an instance key).
        log.info("%d messages not sent: their customers were erased since they were claimed",
                 len(messages) - len(kept))
        return kept

    def _log_withheld(
        self, customer_id: str, found: list[tuple[Message, str]], unsent: Collection[str],
        now: datetime,
    ) -> None:
        """Log withheld messages (with why) on the customer's record, and give back the
        frequency cap slots and the offer sends of those among ``unsent`` (never attempted:
        they did not go out)."""
        def log_them(d: Decider, at: datetime) -> None:
            d.touch()
            for m, reason in found:
                d.activities.append(message_activity(at, d.customer_id, m, "withheld", reason))
                if m.idempotency_key not in unsent:
                    continue
                if not m.transactional and d.state.sends:
                    give_back(d.state, m.created_at, m.channel)
                if m.offer_id is not None:
                    give_back_offer(d.state, m.offer_id, m.created_at)

        self._on_record(customer_id, log_them, now)

    def _log_held(
        self, customer_id: str, held: list[tuple[Message, str]], now: datetime
    ) -> None:
        """Log messages quiet hours hold at dispatch (with until when) on the customer's
        record."""
        def log_them(d: Decider, at: datetime) -> None:
            d.touch()
            d.activities.extend(
                message_activity(at, d.customer_id, m, "quiet_hours", detail)
                for m, detail in held
            )

        self._on_record(customer_id, log_them, now)

    def _on_record(
        self, customer_id: str, act: Callable[[Decider, datetime], object], now: datetime,
        outcome: OutcomeBuilder | None = None,
    ) -> Decider:
        """After the outbox changed: ``act`` on the customer's record, in a transaction of its
        own (what it changes reported in ``outcome``, if given), not dispatched. A customer
        erased since the message was written has no record to act on."""
        def decide(d: Decider, at: datetime) -> None:
            if d.state.revision >= 0:
                act(d, at)

        return self._for_customer(customer_id, decide, now=now, create=False, dispatch=False,
                                  outcome=outcome)

    def _dispatch(
        self, messages: Sequence[Message], now: datetime, outcome: OutcomeBuilder
    ) -> int:
        """After a commit: send what it wrote to the outbox (inline), or hand it over to
        ``dispatch_pending`` (deferred). Inline, messages of a channel this engine lacks are
        handed over as in deferred mode, to a process that has the channel. Returns how many
        were attempted."""
        if not messages:
            return 0
        try:
            return self._dispatch_now(messages, now, outcome)
        except StorageError as exc:
            # After the commit: what was decided is stored, and a message not recorded as sent
            # stays in the outbox, leased, for ``dispatch_pending`` once the lease runs out
            # (with its key: at least once). An error here would tell the caller nothing was
            # kept, and a retry of the input would only be a duplicate.
            log.warning("messages written at %s not all recorded as sent, left to the outbox: "
                        "%s", now.isoformat(), exc)
            for message in messages:
                outcome.delivery.setdefault(message.idempotency_key, "pending")
            return 0

    def _dispatch_now(
        self, messages: Sequence[Message], now: datetime, outcome: OutcomeBuilder
    ) -> int:
        here: Sequence[Message] = ()
        if self.dispatch == "inline":
            # A worker on time (a back-test) would have sent each at the instant it was
            # decided: none is late, whenever the pass that fired it runs.
            if self._registry.delivery.quiet_hours and not self.options.worker_on_time and any(
                m.created_at < now for m in messages
            ):
                messages = self._quiet_now(messages, now, outcome)
            here = [m for m in messages if self._has_channel(m.channel)]
            if len(here) == len(messages):
                return self._send(messages, now, outcome)
            messages = [m for m in messages if not self._has_channel(m.channel)]
            for message in messages:
                log.debug("message %s left in the outbox: this engine has no channel %r",
                          message.idempotency_key, message.channel)
        # Released before any send here, so another process may claim them at once.
        keys = [m.idempotency_key for m in messages]
        self.storage.release_outbox(keys, now)
        outcome.delivery.update(dict.fromkeys(keys, "pending"))
        return self._send(here, now, outcome) if here else 0

    def _quiet_now(
        self, messages: Sequence[Message], now: datetime, outcome: OutcomeBuilder
    ) -> list[Message]:
        """``messages`` but those decided for an earlier instant (a worker catching up late)
        that quiet hours hold now: they wait in the outbox, or are withheld, as at a dispatch
        (``_withhold``); the decision was on time, the send is not."""
        late = [m for m in messages if m.created_at < now]
        kept = {m.idempotency_key for m in self._withhold(late, self._registry, now,
                                                            outcome=outcome)}
        return [m for m in messages if m.created_at >= now or m.idempotency_key in kept]

    def _send(
        self, messages: Sequence[Message], now: datetime, outcome: OutcomeBuilder | None
    ) -> int:
        """Send ``messages``, reserved to this engine since ``now`` (written or claimed then)
        for ``dispatch_lease``, and record the results in groups (``RECORD_RESULTS_EVERY``);
        returns how many were attempted."""
        storage = self.storage
        deliveries: list[Delivery] = []
        failed_actions: list[Message] = []
        # Dead letters, by customer, to log on their record (not an action's call, which has
        # its own failure policy): a permanent failure that blames the recipient marks the
        # address dead too.
        dead: dict[str, list[tuple[Message, DeliveryResult]]] = {}
        # Once the lease runs out, another worker may claim the messages not yet recorded and
        # send them too. So a send starts only while half the lease remains (the other half is
        # for that send to finish), and the messages left are handed back at once.
        send_by = now + storage.dispatch_lease / 2
        attempted = 0
        # Measured on a monotonic timer: what a write costs against what sending takes, which
        # decides only how results are grouped, never what is sent.
        recorded_at, write_cost = time.perf_counter(), 0.0
        try:
            for index, message in enumerate(messages):
                if index and self._now() >= send_by:
                    left = [m.idempotency_key for m in messages[index:]]
                    storage.release_outbox(left, self._now())
                    if outcome is not None:
                        outcome.delivery.update(dict.fromkeys(left, "pending"))
                    break
                attempted += 1
                key = message.idempotency_key
                channel = self.channels.get(message.channel)
                policy = None
                if channel is None and message.channel.startswith(ACTION_CHANNEL_PREFIX):
                    channel = self._action_channels.get(message.channel)
                    policy = self._action_policy(message)
                result = deliver(channel, message)
                # A failure is recorded on the outbox's entry; None once the outbox no longer
                # holds the message (its customer was erased while the channel had it).
                entry = None if result.ok else storage.outbox_entry(key)
                retry_at = None
                if result.status == "transient":
                    attempts = (entry.attempts if entry else 0) + 1
                    if attempts < self.max_delivery_attempts and policy != "skip":
                        wait = retry_delay(key, attempts, self.retry_backoff, self.max_retry_delay)
                        retry_at = now + wait
                        asked = result.retry_after
                        if asked is not None:
                            # Sooner than the provider asked would only be refused again; and
                            # it asked at this attempt, which a long pass makes later than
                            # ``now``, the instant the pass claimed its messages.
                            asked_at = max(now, self._now()) + min(asked, MAX_RETRY_AFTER)
                            retry_at = max(retry_at, asked_at)
                delivery = Delivery(key, result, retry_at)
                status = delivery.outbox_status
                # A message no longer held is neither retried nor a dead letter: saying so
                # would write the erased customer's id (and what the channel said of their
                # address) to the log again.
                told = entry is not None
                if status == "dead":
                    if told:
                        log.warning("message %s is a dead letter (%s): %s", key, result.status,
                                    result.error)
                    if policy == "exit":
                        failed_actions.append(message)
                    if not message.channel.startswith(ACTION_CHANNEL_PREFIX):
                        dead.setdefault(message.customer_id, []).append((message, result))
                elif retry_at is not None and told:
                    log.info("delivery of %s failed, retrying at %s: %s", key,
                             retry_at.isoformat(), result.error)
                deliveries.append(delivery)
                if outcome is not None:
                    outcome.delivery[key] = status
                if len(deliveries) >= RECORD_RESULTS_EVERY and (
                    time.perf_counter() - recorded_at >= write_cost * RECORD_RESULTS_COST
                ):
                    recorded, deliveries = deliveries, []
                    started = time.perf_counter()
                    storage.complete_outbox_many(recorded, now)
                    recorded_at = time.perf_counter()
                    write_cost = recorded_at - started
        finally:
            # Interrupted too (a stop signal, a storage error reading an entry): what was sent
            # is recorded, or another worker would send it again once the lease ran out.
            if deliveries:
                storage.complete_outbox_many(deliveries, now)
        # Each customer's follow-up in a transaction of its own: one whose record cannot be
        # decoded is logged (its messages are recorded already) and the others still get theirs.
        for customer_id, failures in dead.items():
            try:
                # The failovers it sends count as attempted too (``dispatch_pending``'s count).
                attempted += self._record_dead_letters(customer_id, failures, now, outcome)
            except CorruptRecordError as exc:
                log.error("dead letters not logged (nor channels blocked after a permanent "
                          "failure): %s", exc)
        for message in failed_actions:
            try:
                self._end_enrollment(
                    message.customer_id, message.enrollment_id,
                    f"action {message.content_id} failed", now, outcome,
                )
            except CorruptRecordError as exc:
                log.error("enrollment not ended after its action failed: %s", exc)
        return attempted

    def _record_dead_letters(
        self, customer_id: str, failures: list[tuple[Message, DeliveryResult]], now: datetime,
        outcome: OutcomeBuilder | None = None,
    ) -> int:
        """After the outbox recorded them as dead letters: log the messages on the customer's
        record, one transaction for them all, as ``unreachable`` (and block the channel, as a
        hard bounce does) when the failure blames the recipient, else as ``dead_letter``;
        what that changes is reported in ``outcome`` (the dispatching call's), if given.
        Returns how many failovers it sent."""
        registry = self._sync()
        unreachable = [m for m, r in failures if r.status == "permanent" and r.unreachable]
        # The failovers already written (by another worker, or for a dead letter retried since)
        # are looked up beforehand: the decider reads no storage.
        written = {
            entry.message.idempotency_key: entry.message
            for m in unreachable for ch in failover_channels(registry, m) or ()
            if (entry := self.storage.outbox_entry(failover_key(m.idempotency_key, ch)))
        }
        unknown: list[str] = []

        def record(d: Decider, at: datetime) -> None:
            d.sent = written
            for message, result in failures:
                if result.status == "permanent" and result.unreachable:
                    reason = record_permanent_failure(d, message, result.error, at)
                    why = d.fail_over(message, reason, at)
                    if why is not None:
                        unknown.append(f"message {message.idempotency_key} not failed over: "
                                       f"{why}")
                else:
                    record_dead_letter(d, message, result.status == "permanent", at)

        decider = self._on_record(customer_id, record, now, outcome)
        for text in unknown:
            log.warning(text)
        if not decider.messages:
            return 0
        return self._dispatch_failovers(decider.messages, now, decider.outcome)

    def _dispatch_failovers(
        self, messages: list[Message], now: datetime, outcome: OutcomeBuilder
    ) -> int:
        """Dispatch the failovers a delivery failure wrote, as any message written: inline,
        sent now, once quiet hours allow (their decision left those to this moment, as for a
        message sent late: one held waits in the outbox), else left to ``dispatch_pending``,
        which judges them so."""
        if self.dispatch == "inline":
            messages = self._withhold(messages, self._registry, now, outcome=outcome)
        return self._dispatch(messages, now, outcome)

    def _add_actions(self, actions: Mapping[str, ActionFunction]) -> None:
        """Register host actions (checked), with the outbox channel each is called through."""
        self._action_channels.update(action_channels(actions))
        self.actions.update(actions)

    def _action_policy(self, message: Message) -> str | None:
        """The ``on_failure`` of the Action step that wrote ``message`` (None if unknown)."""
        journey = self._registry.version(message.journey_id, message.journey_version)
        step = journey.steps.get(message.step_id) if journey is not None else None
        return step.on_failure if isinstance(step, Action) else None

    def _end_enrollment(
        self, customer_id: str, enrollment_id: str, reason: str, now: datetime,
        outcome: OutcomeBuilder | None = None,
    ) -> None:
        """End one enrollment as ``exited`` (an action that finally failed under ``exit``),
        reported in ``outcome`` (the dispatching call's), if given."""
        self._for_customer(
            customer_id, lambda d, at: d.end_enrollment(enrollment_id, "exited", reason, at),
            now=now, create=False, dispatch=False, outcome=outcome,
        )

    # --- dead letters ------------------------------------------------------------------------

    def dead_letters(
        self, *, limit: int = 100, after: DeadLetter | None = None, newest_first: bool = True
    ) -> list[DeadLetter]:
        """Messages that will not be sent unless retried: they failed permanently, or
        transiently ``max_delivery_attempts`` times. Each has its last error and attempts.
        Newest first (by the time of the last attempt) unless ``newest_first`` is False; pass
        the last one of a page as ``after`` for the next page. Dead letters are never pruned
        until discarded."""
        count(limit, "limit")
        flag(newest_first, "newest_first")
        if after is not None and not isinstance(after, DeadLetter):
            raise UsageError(
                "after must be the last DeadLetter of the previous page (or None), got "
                f"{type(after).__name__}"
            )
        cursor = None if after is None else after.cursor
        return self.storage.dead_letters(limit, after=cursor, newest_first=newest_first)

    def retry_dead_letter(self, key: str) -> bool:
        """Put the dead letter ``key`` (its idempotency key) back in the outbox, pending now
        with its attempts reset and the same idempotency key; ``dispatch_pending`` (the worker)
        sends it. False if there is no such dead letter."""
        key = _dead_letter_key(key)
        now = self._now()
        if not self.storage.retry_dead_letter(key, now):
            return False
        entry = self.storage.outbox_entry(key)
        if entry is not None and not entry.message.channel.startswith(ACTION_CHANNEL_PREFIX):
            message = entry.message
            # Reports count a message that failed for good until it is retried.
            try:
                self._on_record(
                    message.customer_id,
                    lambda d, at: record_dead_letter_retried(d, message, at), now,
                )
            except CorruptRecordError as exc:
                log.error("dead letter %s retried without logging it: %s", key, exc)
        return True

    def discard_dead_letter(self, key: str) -> bool:
        """Give up on the dead letter ``key``: it leaves ``dead_letters()`` and is pruned like
        a delivered message. False if there is no such dead letter."""
        return self.storage.discard_dead_letter(_dead_letter_key(key), self._now())

    def records_set_aside(
        self, *, limit: int = 100, after: SetAsideRecord | None = None
    ) -> list[SetAsideRecord]:
        """Customer records the worker set aside because they cannot be decoded: kept as they
        are, their wake-ups not fired, until repaired (a readable record put back, then any
        input for the customer saves it again) or erased. Each has the reason (the error's
        text) and the instant; in customer id order, pass the last one of a page as ``after``
        for the next page."""
        count(limit, "limit")
        if after is not None and not isinstance(after, SetAsideRecord):
            raise UsageError(
                "after must be the last SetAsideRecord of the previous page (or None), got "
                f"{type(after).__name__}"
            )
        return self.storage.records_set_aside(
            limit, after=None if after is None else after.customer_id
        )

    def run_worker(
        self,
        *,
        stop: StopSignal | None = None,
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
        """The customer's profile (a copy); None for a customer who has none: never seen, seen
        only through events that set no attribute (no ``identify``, no profile rule), merged
        into another customer, or erased. The queries below raise ``CorruptRecordError`` for a
        record that cannot be decoded."""
        _check_customer_id(customer_id)
        state = self._peek(customer_id)
        if state is None or state.profile is None:
            return None
        # A copy for the host: mutating it must not change what is stored.
        return detached(state.profile)

    def enrollments(self, customer_id: str) -> list[Enrollment]:
        """The customer's active enrollments and the last ``keep_ended`` that ended, oldest
        entry first (copies)."""
        _check_customer_id(customer_id)
        state = self._peek(customer_id)
        return [] if state is None else _shown(detached(state.all_enrollments()))

    def customer_state(self, customer_id: str) -> CustomerState | None:
        """The customer's whole record as last committed (a copy)."""
        _check_customer_id(customer_id)
        state = self._peek(customer_id)
        if state is None:
            return None
        state = detached(state)
        _shown(state.enrollments)
        return state

    def in_segment(self, customer_id: str, segment_id: str) -> bool:
        """Whether the customer is in the segment now (by the clock): evaluated on their
        committed record, so a time-relative change not yet fired by a worker counts."""
        registry = self._check_segment(segment_id)
        _check_customer_id(customer_id)
        state = self._peek(customer_id)
        if state is None:
            return False
        decider = Decider(registry, state.copy(), self.options)
        return registry.plan.is_member(decider, segment_id, self._now())

    def refresh_segments(self, *, batch_size: int = 500) -> Outcome:
        """Evaluate every stored customer's segments against the published definitions, now:
        run it after a publish that changed segments, so that the changes it causes are
        recorded (and start or end journeys) at once rather than at each customer's next input.
        Customers already evaluated against these definitions cost a look-up; the others are
        handled in groups, one transaction per group."""
        count(batch_size, "batch_size")
        builder = OutcomeBuilder()
        self._refresh_segments(self._sync(), builder, batch_size)
        return builder.build()

    def _refresh_segments(
        self, registry: Registry, builder: OutcomeBuilder, batch_size: int = 500
    ) -> None:
        plan = registry.plan
        after: str | None = None
        while True:
            ids = page_of_ids(self.storage, "customer_ids",
                              self.storage.customer_ids(after=after, limit=batch_size), after)
            if not ids:
                break
            after = ids[-1]
            stale = [
                cid for cid, state in self.storage.peek_many(ids).items()
                if state.segments_basis != (plan.basis or None)
                and (plan.basis or state.segments or state.tracks)
            ]
            if not stale:
                continue
            self._refresh_page(stale, registry, builder)
        self.storage.put_setting(_SEGMENTS_REFRESHED, plan.basis)
        self._segments_refreshed = plan.basis

    def _refresh_page(
        self, customer_ids: list[str], registry: Registry, builder: OutcomeBuilder
    ) -> None:
        now = self._now()
        with self.storage.batch(customer_ids, now) as sessions:
            deciders = self._decide_each(
                sessions.values(), registry, now, builder,
                # Catching up evaluates the segments of a stale record.
                lambda decider: decider.catch_up(now, worker=True),
            )
        self._finish(deciders, now, builder)

    def _maybe_refresh_segments(self, registry: Registry, builder: OutcomeBuilder) -> None:
        """After a publish that changed segments, the first ``run_due`` (of any worker)
        evaluates every customer against them, so the changes are recorded at once, not at
        each customer's next input; the storage remembers it was done."""
        basis = registry.plan.basis
        if basis == self._segments_refreshed:
            return
        stored = self.storage.get_setting(_SEGMENTS_REFRESHED)
        if stored == basis or (stored is None and not basis and not any(
            w.kind == "segments" for w in registry.definitions.withdrawn
        )):
            # Done by another worker; or no segment was ever published here: nothing to undo
            # (segments withdrawn before any refresh leave memberships to end).
            self._segments_refreshed = basis
            return
        self._refresh_segments(registry, builder)

    def segment_members(
        self, segment_id: str, *, after: str | None = None, limit: int = 1000
    ) -> list[str]:
        """Ids of the customers in the segment as their records were last committed, in id
        order: a page of up to ``limit`` after ``after`` (the last id of the previous page).
        Time-relative changes count once a worker has fired them (``run_due``)."""
        self._check_segment(segment_id)
        count(limit, "limit")
        if after is not None and not isinstance(after, str):
            raise UsageError(
                "after must be the last customer id of the previous page (or None), got "
                f"{type(after).__name__}"
            )
        return self.storage.segment_members(segment_id, after=after, limit=limit)

    def segment_count(self, segment_id: str) -> int:
        """How many customers are in the segment (as ``segment_members`` lists them)."""
        self._check_segment(segment_id)
        return self.storage.segment_count(segment_id)

    def segment_sizes(
        self, segment_ids: Iterable[str], start: datetime, end: datetime | None = None, *,
        every: timedelta = timedelta(days=1),
    ) -> dict[str, list[SegmentSize]]:
        """The size of each segment from ``start`` to ``end`` (default: now), every ``every``:
        today's committed count less the membership changes logged since each instant.
        An instant older than the activity log's retention raises ``UsageError``."""
        segment_ids = segment_id_list(segment_ids)
        for segment_id in segment_ids:
            self._check_segment(segment_id)
        now = self._now()
        instants = size_instants(ensure_aware(start, "start"),
                                 ensure_aware(end, "end") if end is not None else now, every)
        return segment_sizes(self.storage, segment_ids, instants, now, self.retention.activity)

    def _check_segment(self, segment_id: str) -> Registry:
        registry = self._sync()
        if segment_id not in registry.segments:
            raise UsageError(f"no segment {segment_id!r} has been published")
        return registry

    def activities(
        self, start: datetime, end: datetime, *, journey_id: str | None = None,
        customer_id: str | None = None,
    ) -> list[Activity]:
        """The activity log between ``start`` (included) and ``end`` (excluded).
        ``UnknownJourneyError`` for a journey id never published (a typo would read as a
        journey that did nothing)."""
        start, end = activity_window(start, end, journey_id, customer_id)
        if journey_id is not None and journey_id not in self._sync().latest:
            raise _unknown_journey(journey_id)
        return self.storage.activities(start, end, journey_id=journey_id,
                                       customer_id=customer_id)

    # --- plumbing ----------------------------------------------------------------------------

    def _peek(self, customer_id: str) -> CustomerState | None:
        """``storage.peek``, its answer checked (an adapter's wrong type named, not an
        ``AttributeError`` later)."""
        state = self.storage.peek(customer_id)
        if state is None or isinstance(state, CustomerState):
            return state
        return returned(self.storage, "peek", state, (CustomerState, type(None)))  # raises

    def _decider(
        self, session: CustomerSession, registry: Registry, now: datetime, *,
        create: bool = True, outcome: OutcomeBuilder | None = None, fresh: bool = False,
    ) -> Decider:
        """The decider of the session's customer. With ``fresh``, a record holding an
        enrollment of a journey version ``registry`` does not know, while a newer generation
        is stored, raises ``_NewerDefinitionsError``: another process published and enrolled the
        customer since this call read the definitions, and an input decided now would pass
        that enrollment by (a worker's wake-ups need not: they leave it for a later pass).
        An enrollment at a step its (known) version does not have raises
        ``CorruptRecordError``, so a worker sets the record aside."""
        state = session.load()
        if state is not None and not isinstance(state, CustomerState):
            returned(session, "load", state, (CustomerState, type(None)))
        if state is not None and state.enrollments:
            journeys, retired = registry.journeys, registry.retired
            unknown = False
            for e in state.enrollments:
                cj = journeys.get((e.journey_id, e.version))
                if cj is None:
                    unknown = unknown or (e.journey_id, e.version) not in retired
                elif e.step_id is not None and e.step_id not in cj.steps:
                    # A published version never changes: a bad edit. Decided, its wake-up
                    # would be spent on nothing and the enrollment wait for ever.
                    raise CorruptRecordError(session.customer_id, (
                        f"enrollment {e.id!r} is at step {e.step_id!r}, which journey "
                        f"{e.journey_id!r} version {e.version} does not have"
                    ))
            if fresh and unknown and (
                self.storage.definitions_generation() != registry.generation
            ):
                raise _NewerDefinitionsError
        if state is None:
            state = new_state(session.customer_id, now)
            if not create:
                state.revision = -1  # not there, and never written (``_save``)
            elif (erased := self._erased) is not None and erased[0] == now:
                # Perhaps a customer erased at this very instant, back: ids of their own.
                state.erasures = erased[1]
        return Decider(registry, state, self.options, outcome=outcome)

    def _for_customer(
        self, customer_id: str, decide: Callable[[Decider, datetime], object], *,
        registry: Registry | None = None, now: datetime | None = None, create: bool = True,
        dispatch: bool = True, outcome: OutcomeBuilder | None = None, fresh: bool = False,
    ) -> Decider:
        """One customer's transaction for an API call: load, ``decide(decider, now)``, save,
        then (unless ``dispatch`` is False) send what it wrote to the outbox. What happens is
        reported in ``outcome`` if given (else the decider's own). With ``fresh``, a record
        holding an enrollment of a generation published since ``registry`` was read is decided
        on that generation (``decide`` must then not depend on ``registry``)."""
        registry = registry if registry is not None else self._sync()
        at = now if now is not None else self._now()

        def attempt(registry: Registry, check: bool) -> Decider:
            nonlocal at
            with self.storage.customer(customer_id, at) as session:
                if now is None:  # an instant given is decided at as it is
                    at = self._locked_now(at)
                # Refused (``check``) at load, before ``decide`` ran: nothing reported yet.
                decider = self._decider(session, registry, at, create=create,
                                        outcome=outcome, fresh=check)
                decide(decider, at)
                self._save(session, decider)
            return decider

        decider = self._on_latest(registry, attempt) if fresh else attempt(registry, False)
        if dispatch:
            self._dispatch(decider.messages, at, decider.outcome)
        return decider

    def _decide_each(
        self, sessions: Iterable[CustomerSession], registry: Registry, now: datetime,
        builder: OutcomeBuilder, decide: Callable[[Decider], object],
    ) -> list[Decider]:
        """Decide for existing customers of one storage transaction (worker passes, resumes,
        schedules): ``decide`` each loaded record and save it; a record that cannot be decoded
        is logged and set aside, and the others go on."""
        deciders: list[Decider] = []
        for session in sessions:
            try:
                decider = self._decider(session, registry, now, create=False, outcome=builder)
            except CorruptRecordError as exc:
                log.error("setting a customer record aside: %s", exc)
                session.set_aside(str(exc))
                continue
            decide(decider)
            self._save(session, decider)
            deciders.append(decider)
        return deciders

    def _on_latest(
        self, registry: Registry, attempt: Callable[[Registry, bool], _T],
        undo: Callable[[], None] | None = None,
    ) -> _T:
        """``attempt(registry, True)``: one transaction that raises ``_NewerDefinitionsError``
        (rolled back) when a customer's record shows a generation newer than ``registry``; it
        is then run again on the latest definitions (after ``undo``), the last time without
        the check."""
        retries = _NEWER_DEFINITIONS_RETRIES
        while True:
            try:
                return attempt(registry, retries > 0)
            except _NewerDefinitionsError:
                if undo is not None:
                    undo()
                retries -= 1
                registry = self._sync()

    @staticmethod
    def _save(session: CustomerSession, decider: Decider) -> None:
        # A record that was not there and was not to be made (``create=False``: a follow-up of
        # a delivery, a due customer) is never written: the customer was erased meanwhile, and
        # what was decided for them (timers armed in a fresh record, say) would bring them back.
        if decider.dirty and decider.state.revision >= 0:
            session.save(decider.state, decider.messages, decider.activities)


_T = TypeVar("_T")

#: How many times an input is decided again when its customer's record turns out to hold an
#: enrollment of a generation published since the definitions were read (then it is decided
#: on what this engine has).
_NEWER_DEFINITIONS_RETRIES = 3


class _NewerDefinitionsError(Exception):
    """Rolls back a transaction whose customer holds an enrollment of a newer generation."""


def _shown(enrollments: list[Enrollment]) -> list[Enrollment]:
    """The host's copies of ``enrollments``, as they are shown (``shown_wake``)."""
    for e in enrollments:
        e.wake_at = shown_wake(e)
    return enrollments


def _merge(
    current: Definitions,
    journeys: Iterable[Journey],
    segments: Iterable[Segment],
    content: Iterable[ContentItem],
    taxonomy: Taxonomy | None,
    profile_rules: Iterable[ProfileRule] = (),
) -> Definitions:
    by_version = {(j.id, j.version): j for j in current.journeys}
    for j in journeys:
        by_version[(j.id, j.version)] = j
    items = {c.id: c for c in current.content}
    # A withdrawn item published again goes on from its last version: a content version in
    # the activity log names one definition.
    last = {w.id: w.version or 0 for w in current.withdrawn if w.kind == "content"}
    for c in content:
        old = items.get(c.id)
        if old is None:
            version = last.get(c.id, 0) + 1
            items[c.id] = attrs.evolve(c, version=version) if c.version != version else c
        elif attrs.evolve(c, version=old.version) != old:
            # A change (whatever version the caller wrote) gets the next content version.
            items[c.id] = attrs.evolve(c, version=old.version + 1)
    # evolve: every other field (rules across journeys, pauses...) carries over.
    return attrs.evolve(
        current,
        journeys=tuple(by_version.values()),
        segments=tuple(_replace_by_id(current.segments, segments)),
        content=tuple(items.values()),
        taxonomy=taxonomy if taxonomy is not None else current.taxonomy,
        profile_rules=tuple(_replace_by_id(current.profile_rules, profile_rules)),
    )


def _unkeyed(new: Definitions) -> tuple[Definitions, dict[str, Any]]:
    """``new`` without the definitions whose id is not text (or, for a journey, whose version
    is not a whole number), and those definitions by field: they cannot be merged by id, and
    are added to the merged set as they are, for validation to report their shape."""
    aside: dict[str, Any] = {}
    kept: dict[str, Any] = {}
    for field in attrs.fields(Definitions):
        items = getattr(new, field.name)
        if not isinstance(items, tuple):
            continue
        odd = tuple(d for d in items if not _keyed(d))
        if odd:
            aside[field.name] = odd
            kept[field.name] = tuple(d for d in items if _keyed(d))
    return (attrs.evolve(new, **kept) if kept else new), aside


def _appended(definitions: Definitions, extra: Mapping[str, Any]) -> Definitions:
    """``definitions`` with the definitions of ``extra`` (by field) after their own."""
    fields: dict[str, Any] = {
        name: (*getattr(definitions, name), *items) for name, items in extra.items()
    }
    return attrs.evolve(definitions, **fields)


def _keyed(definition: Any) -> bool:
    """Whether ``definition`` can be merged by id: its id is text (and a journey's version a
    whole number)."""
    if isinstance(definition, Journey) and (
        isinstance(definition.version, bool) or not isinstance(definition.version, int)
    ):
        return False
    return isinstance(definition.id, str)


def _merge_content_parts(
    current: Definitions, merged: Definitions, blocks: Iterable[ContentBlock],
    offers: Iterable[Offer],
) -> Definitions:
    """Blocks and offers replaced by id; items that include a changed block get a new version."""
    new_blocks = tuple(_replace_by_id(current.blocks, blocks))
    return attrs.evolve(
        merged,
        blocks=new_blocks,
        offers=tuple(_replace_by_id(current.offers, offers)),
        content=revise_for_blocks(current.content, current.blocks, merged.content, new_blocks),
    )


def _resumed(
    pauses: tuple[JourneyPause, ...], journey_id: str, now: datetime
) -> tuple[JourneyPause, ...]:
    """``pauses`` with the journey's pause ended at ``now``, keeping its last ``PAUSES_KEPT``."""
    others = [p for p in pauses if p.journey_id != journey_id]
    mine = [
        p if p.until is not None else attrs.evolve(p, until=max(now, p.since))
        for p in pauses if p.journey_id == journey_id
    ]
    return (*others, *mine[-PAUSES_KEPT:])


def _governance(
    current: Definitions,
    merged: Definitions,
    journeys: Iterable[Journey],
    now: datetime,
    *,
    control_group: ControlGroup | None,
    max_concurrent: int | None,
    running: Mapping[str, VersionChange],
) -> tuple[Definitions, list[Problem]]:
    """The rules across journeys a publish sets, checked against what is already published."""
    problems: list[Problem] = []
    changes: dict[str, Any] = {}
    if control_group is not None:
        # Compared only when of sound shape: validation reports any other.
        sound = isinstance(control_group, ControlGroup) and not shape_problems(
            control_group, lambda *_: ""
        )
        published = current.control_group if sound else None
        if published is not None and published.salt != control_group.salt:
            problems.append(Problem(
                "control group", "its salt cannot change once published: that would move "
                "customers between the control group and the others"
            ))
        elif published is not None and control_group.percent > published.percent:
            problems.append(Problem(
                "control group", f"its share can only shrink (published: {published.percent}%)"
            ))
        changes["control_group"] = control_group
    if max_concurrent is not None:
        changes["max_concurrent_journeys"] = max_concurrent
    if running:
        new_by_id = {j.id: j for j in journeys}
        latest: dict[str, Journey] = {}
        for j in current.journeys:
            if j.id not in latest or latest[j.id].version < j.version:
                latest[j.id] = j
        version_changes = list(current.version_changes)
        for journey_id, vc in running.items():
            where = f"journey {journey_id!r}: running customers"
            if not isinstance(vc, VersionChange):
                problems.append(Problem(where, (
                    "expected a VersionChange (VersionChange.drain(), .migrate({...}) or "
                    f".eject(reason)), got {type(vc).__name__}"
                )))
                continue
            if vc.mode not in ("drain", "migrate", "eject"):
                problems.append(Problem(
                    where, f"mode must be drain, migrate or eject, got {vc.mode!r}"
                ))
                continue
            new, old = new_by_id.get(journey_id), latest.get(journey_id)
            if new is None:
                problems.append(Problem(where, "no new version of it is being published"))
                continue
            if old is None or old.version >= new.version:
                problems.append(Problem(where, "no earlier version of it is running"))
                continue
            # A migration's step map is checked by validation, with the merged definitions;
            # but a step the old version lacks only here, for the map being published (one
            # stored before this check must not stop every later publish).
            strays = sorted(
                step for step in (vc.steps if isinstance(vc.steps, Mapping) else ())
                if isinstance(step, str) and step not in old.steps
            ) if vc.mode == "migrate" else []
            if strays:
                # A misspelt step would pass unnoticed, and the step it meant stay unmapped.
                problems.append(Problem(where, (
                    f"the migration maps step(s) {', '.join(map(repr, strays))}, "
                    f"which v{old.version} does not have"
                )))
            if vc.mode != "drain":
                version_changes.append(attrs.evolve(
                    vc, journey_id=journey_id, from_version=old.version,
                    to_version=new.version, at=now,
                ))
        changes["version_changes"] = tuple(version_changes)
    return (attrs.evolve(merged, **changes) if changes else merged), problems
def _merge_policies(
    current: Definitions,
    merged: Definitions,
    topics: Iterable[Topic],
    caps: Iterable[FrequencyCap],
    quiet_hours: Iterable[QuietHours],
) -> Definitions:
    """Delivery policies are replaced by id, like segments."""
    return attrs.evolve(
        merged,
        topics=tuple(_replace_by_id(current.topics, topics)),
        caps=tuple(_replace_by_id(current.caps, caps)),
        quiet_hours=tuple(_replace_by_id(current.quiet_hours, quiet_hours)),
    )


def _version_conflicts(current: Definitions, journeys: Iterable[Journey]) -> list[Problem]:
    problems: list[Problem] = []
    by_version = {(j.id, j.version): j for j in current.journeys}
    highest: dict[str, int] = {}
    for j in current.journeys:
        highest[j.id] = max(j.version, highest.get(j.id, j.version))
    for j in journeys:
        old = by_version.get((j.id, j.version))
        if old is not None and old != j:
            problems.append(Problem(
                f"journey {j.id!r} v{j.version}",
                "this version is already published with a different definition; "
                "publish the change as a new version",
            ))
        elif (old is None and type(j.version) is int and j.id in highest
              and j.version < highest[j.id]):
            # Only the highest version takes entries: a lower one published now would never
            # be entered, silently.
            problems.append(Problem(
                f"journey {j.id!r} v{j.version}",
                f"version {highest[j.id]} is already published; a new version must be "
                "numbered above it (only the highest version takes new entries)",
            ))
        by_version[(j.id, j.version)] = j
    return problems


#: What ``Engine.withdraw`` takes out: the ``Definitions`` field (its keyword), and the word
#: validation's problems name one of its definitions with (``segment 'vip' does not exist``).
_WITHDRAWABLE: Final = {
    "segments": "segment", "content": "content", "blocks": "block", "offers": "offer",
    "topics": "topic", "caps": "frequency cap", "quiet_hours": "quiet hours",
    "profile_rules": "profile rule",
}


def _drained(storage: Storage, current: Definitions, journey_id: str) -> list[int]:
    """The superseded versions of ``journey_id`` not retired yet that no customer is on, in any
    state, nor will be moved onto by a migration still to reach customers of another version
    (they are on the version they move from until their next transaction)."""
    versions = sorted(j.version for j in current.journeys if j.id == journey_id)
    retired = current.retired_versions()
    candidates = [v for v in versions[:-1] if (journey_id, v) not in retired]
    if not candidates:
        return []  # no look at the records
    occupied = {version for (version, _), n in storage.active_counts(journey_id).items() if n}
    arriving = {c.to_version for c in current.version_changes
                if c.journey_id == journey_id and c.mode == "migrate"
                and c.from_version in occupied}
    return [v for v in candidates if v not in occupied and v not in arriving]


def _not_published(current: Definitions, asked: Mapping[str, Sequence[str]]) -> list[Problem]:
    """A problem for each id of ``asked`` (by field) that ``current`` does not hold: withdrawn
    already (when), or likely a misspelling of one it holds."""
    problems: list[Problem] = []
    when = {(w.kind, w.id): w.at for w in current.withdrawn}
    for kind, ids in asked.items():
        published = [d.id for d in getattr(current, kind)]
        for ident in dict.fromkeys(ids):
            if ident in published:
                continue
            # Cut short: an id not published may be any text the caller passed.
            message = f"no {_WITHDRAWABLE[kind]} {short(ident)} is published"
            if (kind, ident) in when:
                message += f" (withdrawn at {when[kind, ident].isoformat()})"
            elif (likely := likely_meant(ident, published)) is not None:
                message += f"; did you mean {likely!r}?"
            problems.append(Problem(f"withdraw {kind}", message))
    return problems


def _still_used(asked: Mapping[str, Sequence[str]], found: list[Problem]) -> list[Problem]:
    """The problems validation finds once ``asked`` is withdrawn, as refusals: one per
    withdrawn definition something still refers to, naming where (the location of each
    reference validation found dangling), then the problems no reference explains (what
    follows from one, such as a template that no longer renders)."""
    refusals: list[Problem] = []
    explained: set[Problem] = set()
    for kind, ids in asked.items():
        for ident in dict.fromkeys(ids):
            named = f"{_WITHDRAWABLE[kind]} {ident!r}"
            users = [p for p in found if named in p.message]
            if users:
                explained.update(users)
                refusals.append(Problem(named, "cannot be withdrawn: still used by " + "; ".join(
                    dict.fromkeys(p.location for p in users)
                )))
    return refusals + [p for p in found if p not in explained]


def _republished(definitions: Definitions) -> Definitions:
    """``definitions`` without the withdrawals of ids it holds again."""
    withdrawn = tuple(
        w for w in definitions.withdrawn
        # A kind that is no field (stored data edited by hand) holds nothing published.
        if w.id not in {d.id for d in getattr(definitions, w.kind, ())}
    )
    if len(withdrawn) == len(definitions.withdrawn):
        return definitions
    return attrs.evolve(definitions, withdrawn=withdrawn)


def _replace_by_id(current: Iterable[Any], new: Iterable[Any]) -> list[Any]:
    merged = {item.id: item for item in current}
    merged.update({item.id: item for item in new})
    return list(merged.values())


def _undecodable(storage: Storage, customer_ids: Iterable[str]) -> list[str]:
    """Of customers ``peek_many`` left out, those whose record cannot be decoded."""
    found = []
    for cid in sorted(customer_ids):
        try:
            storage.peek(cid)
        except CorruptRecordError:
            found.append(cid)
    return found


def _unknown_journey(journey_id: str) -> UnknownJourneyError:
    return UnknownJourneyError(f"no journey {journey_id!r} has been published")


def _check_customer_id(customer_id: object) -> None:
    check_id(customer_id, "customer_id")


def _dead_letter_key(key: object) -> str:
    """``key`` checked before the storage is asked: an adapter would otherwise answer False,
    or fail in its driver's words, for what can never be a key."""
    if not isinstance(key, str):
        raise UsageError(
            f"key must be a dead letter's idempotency key (a str), got {type(key).__name__} "
            f"{key!r:.80}"
        )
    problem = text_problem(key) if key.strip() else "is blank"
    if problem is not None:
        raise UsageError(f"key must be a dead letter's idempotency key, got one that {problem}")
    return key
