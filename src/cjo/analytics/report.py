"""Journey reports: what happened in a journey, overall and step by step.

A report is built only from the storage's aggregates (``activity_counts``, ``active_counts``
and ``held_counts``) and its definitions (a pause in force). Their cost grows with the data:
the SQL adapters group the kept activity log and read every customer record that names the
journey (about a second for 100,000 customers waiting in a journey on SQLite, two on
PostgreSQL). Counts cover every version of the journey; rows follow the graph of the version
given.
"""

from __future__ import annotations

import functools
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from cjo.described import given
from cjo.errors import UnknownJourneyError, UnreadableDefinitionsError, UsageError
from cjo.model.definitions import Definitions
from cjo.model.governance import CONTROL_DETAIL
from cjo.model.journey import Journey
from cjo.runtime.kinds import step_kind
from cjo.serialization import loads_stored_definitions
from cjo.storage.base import ActivityCount, Storage, returned

__all__ = [
    "JourneyReport", "StepRow", "build_report", "format_table", "graph_order", "journey_report",
    "report_data",
]

# Activity kinds that end an enrollment (they mirror the terminal enrollment statuses).


@attrs.frozen
class StepRow:
    """One step of a journey: how many got there, what it sent, who is there now."""

    step_id: str
    kind: str
    reached: int = 0
    sent: Mapping[str, int] = attrs.field(factory=dict)
    send_failed: int = 0
    waiting: int = 0
    timeouts: int = 0
    events_received: int = 0
    exited: int = 0
    converted: int = 0
    completed: int = 0
    paths: Mapping[str, int] = attrs.field(factory=dict)
    #: Sends a delivery rule or a limit kept from going out (``JourneyReport.not_sent``).
    not_sent: int = 0
    #: Of ``sent``: withheld at dispatch, and failed for good (``JourneyReport.withheld``,
    #: ``JourneyReport.delivery_failed``).
    withheld: int = 0
    delivery_failed: int = 0
    #: Moves onto the step by a migration to a newer version (``VersionChange.migrate``): they
    #: arrived without passing through it, so ``reached`` does not count them, and ``waiting``
    #: is at most ``reached + migrated``. Moves, not customers: one moved onto it by two
    #: migrations in a row counts twice.
    migrated: int = 0

    @property
    def sent_total(self) -> int:
        return sum(self.sent.values())


@attrs.frozen
class JourneyReport:
    """Totals for one journey (all versions) and one row per step.

    ``sent`` counts the messages written to the outbox, by channel, whether or not they went
    out after all; of those, ``withheld`` counts the ones withheld at dispatch (the customer
    unsubscribed, or the channel was blocked, since they were written) and ``delivery_failed``
    the ones that failed for good (dead letters: a permanent failure, or transient failures
    until the retries ran out; one the host retries counts no longer). ``converted`` counts
    goals reached (whether or not the goal ends the enrollment);
    ``exited`` maps each exit reason (criterion name, exit step reason...) to its count.
    ``control`` and ``control_converted`` count the entries and goals of enrollments that
    entered in the global control group (whatever the group is by the goal); ``suppressed``
    maps each reason a send was withheld (``control``, consent...) to its count,
    ``unspecified`` for the entries of erased customers and those pruned from the log (a
    reason is free text: ``cjo.storage.erasure``), save ``control``, which is cjo's own and
    kept.
    ``not_sent`` counts the other sends that did not go out, by what kept them: ``cap <id>``
    (a frequency cap skipped the send or ended the enrollment), ``quiet hours <id>`` (skipped),
    and the reason a send was skipped (``catch-up limit``, ``paused``); a deferred send is
    counted once it goes out or not.
    ``not_entered`` counts the entries refused by the rules across journeys (the journey was
    paused, an exclusive group, the concurrency limit: the activity log's ``not_entered``
    entries say which); refusals by the audience or the re-entry rule are not counted.
    ``paused_since`` is when the pause in force began (None: the journey runs), and ``held``
    how many of the ``active`` enrollments a pause holds: their wake-ups fell due while the
    journey was paused, and run on resume by its ``on_resume`` rule.
    """

    journey_id: str
    name: str
    entered: int = 0
    active: int = 0
    completed: int = 0
    exited: Mapping[str, int] = attrs.field(factory=dict)
    converted: int = 0
    expired: int = 0
    removed: int = 0
    ejected: int = 0
    #: Ended by an identity merge (the known customer's enrollment went on).
    merged: int = 0
    sent: Mapping[str, int] = attrs.field(factory=dict)
    steps: tuple[StepRow, ...] = ()
    control: int = 0
    control_converted: int = 0
    suppressed: Mapping[str, int] = attrs.field(factory=dict)
    not_sent: Mapping[str, int] = attrs.field(factory=dict)
    #: Of ``sent``: messages withheld at dispatch, and messages that failed for good.
    withheld: int = 0
    delivery_failed: int = 0
    not_entered: int = 0
    paused_since: datetime | None = None
    held: int = 0

    @property
    def exited_total(self) -> int:
        return sum(self.exited.values())

    @property
    def sent_total(self) -> int:
        return sum(self.sent.values())

    @property
    def conversion_rate(self) -> float:
        return self.converted / self.entered if self.entered else 0.0

    @property
    def treated_conversion_rate(self) -> float:
        """The conversion rate of customers outside the control group."""
        treated = self.entered - self.control
        return (self.converted - self.control_converted) / treated if treated else 0.0

    @property
    def control_conversion_rate(self) -> float:
        return self.control_converted / self.control if self.control else 0.0

    def step(self, step_id: str) -> StepRow:
        for row in self.steps:
            if row.step_id == step_id:
                return row
        known = ", ".join(row.step_id for row in self.steps) or "none"
        raise UsageError(
            f"journey {self.journey_id!r} has no step {step_id!r} (its steps: {known})"
        )


def journey_report(storage: Storage, journey: Journey) -> JourneyReport:
    """The report of ``journey`` (all its versions) from what ``storage`` has recorded;
    ``UnknownJourneyError`` for a journey never published there."""
    if not isinstance(storage, Storage):
        raise UsageError(f"storage must be a cjo Storage (engine.storage), got "
                         f"{type(storage).__name__}")
    if not isinstance(journey, Journey):
        hint = (
            "; look a journey up by id in engine.definitions.journeys"
            if isinstance(journey, str) else ""
        )
        raise UsageError(
            f"journey must be a Journey, got {type(journey).__name__} {journey!r:.80}{hint}"
        )
    counts = returned(storage, "activity_counts", storage.activity_counts(journey.id), list,
                      ActivityCount)
    active = returned(storage, "active_counts", storage.active_counts(journey.id), dict)
    stored = storage.load_definitions()
    try:
        definitions = None if stored is None else _parsed(stored[1], stored[0])
    except UnreadableDefinitionsError:
        if not counts and not active:
            raise
        # Written by a newer cjo (a rolling upgrade): what was recorded is still reported,
        # the steps only older versions have without their kind, and no pause.
        definitions = None
    versions = [] if definitions is None else sorted(
        (j for j in definitions.journeys if j.id == journey.id), key=lambda j: -j.version
    )
    if not counts and not active and not versions:
        # Zeros would read as a journey no one entered: a typo in an id, or another storage.
        raise UnknownJourneyError(
            f"no journey {journey.id!r} has been published in this storage"
        )
    paused_since = None if definitions is None else next(
        (p.since for p in definitions.paused if p.journey_id == journey.id and p.until is None),
        None,
    )
    # Only a paused journey holds anyone, or one resumed a moment ago whose held customers
    # have not all been released yet: the count reads every record that names the journey.
    held = storage.held_counts(journey.id) if active else {}
    return build_report(journey, counts, active, versions, held=held, paused_since=paused_since)


@functools.lru_cache(maxsize=1)
def _parsed(payload: str, generation: int) -> Definitions:
    """A stored generation, parsed once for the reports of all its journeys (``cjo report``
    reads one per journey); definitions are immutable, so sharing them is safe."""
    return loads_stored_definitions(payload, generation)


def graph_order(journey: Journey) -> list[str]:
    """Step ids breadth-first from the entry, then any step the entry cannot reach."""
    order: list[str] = []
    seen: set[str] = set()
    queue = deque([journey.entry])
    while queue:
        step_id = queue.popleft()
        if step_id in seen or step_id not in journey.steps:
            continue
        seen.add(step_id)
        order.append(step_id)
        step = journey.steps[step_id]
        queue.extend(t for _, t in step_kind(step).successors(step) if t is not None)
    order.extend(s for s in journey.steps if s not in seen)
    return order


def build_report(
    journey: Journey,
    counts: Iterable[ActivityCount],
    active: Mapping[tuple[int, str | None], int],
    versions: Sequence[Journey] = (),
    *,
    held: Mapping[tuple[int, str | None], int] | None = None,
    paused_since: datetime | None = None,
) -> JourneyReport:
    """A report from raw aggregates (what ``journey_report`` reads from storage).
    ``versions``: the journey's versions, newest first, where a step only an older version
    has finds its kind; ``held`` and ``paused_since`` as ``Storage.held_counts`` and the
    definitions' pause in force say."""
    per_step: dict[str, Counter[tuple[str, str | None]]] = {}
    totals: Counter[str] = Counter()
    exited: Counter[str] = Counter()
    sent: Counter[str] = Counter()
    suppressed: Counter[str] = Counter()
    control: Counter[str] = Counter()
    not_sent: Counter[str] = Counter()
    not_sent_by_step: Counter[str | None] = Counter()
    for c in counts:
        if c.journey_id != journey.id:
            continue
        totals[c.kind] += c.count
        if c.detail == CONTROL_DETAIL and c.kind in ("entered", "goal"):
            control[c.kind] += c.count
        if c.kind == "suppressed":
            suppressed[c.detail or "unspecified"] += c.count
        why = _not_sent(c.kind, c.detail)
        if why is not None:
            not_sent[why] += c.count
            not_sent_by_step[c.step_id] += c.count
        if c.kind == "exited":
            exited[c.detail or "unspecified"] += c.count
        elif c.kind == "sent":
            sent[c.detail or "unknown"] += c.count
        if c.step_id is not None:
            per_step.setdefault(c.step_id, Counter())[(c.kind, c.detail)] += c.count
    waiting: Counter[str] = Counter()
    for (_version, step_id), n in active.items():
        if step_id is not None:
            waiting[step_id] += n

    order = graph_order(journey)
    # Steps known only to older versions (or to the data) still get a row, after the graph.
    order.extend(sorted((set(per_step) | set(waiting)) - set(order)))
    rows = []
    for step_id in order:
        step = journey.steps.get(step_id) or next(
            (v.steps[step_id] for v in versions if step_id in v.steps), None
        )
        by_kind = per_step.get(step_id, Counter())
        rows.append(StepRow(
            step_id=step_id,
            kind=step.kind if step is not None else "?",
            reached=_sum(by_kind, "step"),
            sent=_details(by_kind, "sent"),
            send_failed=_sum(by_kind, "send_failed"),
            waiting=waiting.get(step_id, 0),
            timeouts=_sum(by_kind, "timeout"),
            events_received=_sum(by_kind, "event_received"),
            exited=_sum(by_kind, "exited"),
            converted=_sum(by_kind, "goal"),
            completed=_sum(by_kind, "completed"),
            paths=_details(by_kind, "path"),
            not_sent=not_sent_by_step.get(step_id, 0),
            withheld=_sum(by_kind, "withheld"),
            delivery_failed=_failed(by_kind),
            migrated=_sum(by_kind, "migrated"),
        ))
    return JourneyReport(
        journey_id=journey.id,
        name=journey.name or journey.id,
        entered=totals["entered"],
        active=sum(active.values()),
        completed=totals["completed"],
        exited=dict(sorted(exited.items())),
        converted=totals["goal"],
        expired=totals["expired"],
        removed=totals["removed"],
        ejected=totals["ejected"],
        merged=totals["merged"],
        sent=dict(sorted(sent.items())),
        steps=tuple(rows),
        control=control["entered"],
        control_converted=control["goal"],
        suppressed=dict(sorted(suppressed.items())),
        not_sent=dict(sorted(not_sent.items())),
        withheld=sum(row.withheld for row in rows),
        delivery_failed=sum(row.delivery_failed for row in rows),
        not_entered=totals["not_entered"],
        paused_since=paused_since,
        held=sum(held.values()) if held else 0,
    )


def _not_sent(kind: str, detail: str | None) -> str | None:
    """Why a send this activity records did not go out, if it is one that did not (a deferral
    is not: the send is decided again later)."""
    if kind == "send_skipped":
        return detail or "unspecified"
    if kind not in ("capped", "quiet_hours") or detail is None:
        return None
    # "<rule>: skipped", "<cap>: exited" or "<rule>: deferred to <instant>"
    rule, _, action = detail.rpartition(": ")
    if action not in ("skipped", "exited"):
        return None
    return f"cap {rule}" if kind == "capped" else f"quiet hours {rule}"


def _failed(by_kind: Counter[tuple[str, str | None]]) -> int:
    """The dead letters a step's messages became (the address dead, or not), less those the
    host retried since: each went out after all, or failed and was logged again."""
    dead = _sum(by_kind, "unreachable") + _sum(by_kind, "dead_letter")
    return max(0, dead - _sum(by_kind, "dead_letter_retried"))


def _sum(by_kind: Counter[tuple[str, str | None]], kind: str) -> int:
    return sum(n for (k, _detail), n in by_kind.items() if k == kind)


def _details(by_kind: Counter[tuple[str, str | None]], kind: str) -> dict[str, int]:
    out: Counter[str] = Counter()
    for (k, detail), n in by_kind.items():
        if k == kind:
            out[detail or "unknown"] += n
    return dict(sorted(out.items()))


# --- text rendering ------------------------------------------------------------------------------

_STEP_COLUMNS = ("reached", "waiting", "timeouts", "exited", "converted", "completed")
#: The columns, after the channels', of sent messages that did not go out, shown when a report
#: has some: (header, ``JourneyReport`` field).
_UNDELIVERED_COLUMNS = (("withheld", "withheld"), ("failed", "delivery_failed"))


def report_data(report: JourneyReport) -> dict[str, Any]:
    """``report`` as JSON-ready data: its fields by name (``steps`` a list of rows, each with
    its fields), instants as ISO 8601 text, plus the totals and rates the properties give
    (``sent_total``, ``exited_total``, ``conversion_rate``...)."""
    # A list of reports, or a journey, would otherwise fail deep in attrs with no hint.
    if isinstance(report, list | tuple):
        raise UsageError(f"report_data takes one JourneyReport, got {given(report)} "
                         "(several: [report_data(r) for r in reports])")
    if not isinstance(report, JourneyReport):
        raise UsageError(f"report_data takes a JourneyReport, got {given(report)}")
    data = attrs.asdict(report, recurse=True, value_serializer=_json_value)
    for name in ("exited_total", "sent_total", "conversion_rate", "treated_conversion_rate",
                 "control_conversion_rate"):
        data[name] = getattr(report, name)
    for row, step in zip(data["steps"], report.steps, strict=True):
        row["sent_total"] = step.sent_total
    return data


def _json_value(_instance: object, _field: object, value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return dict(value)
    return value


def format_table(reports: Sequence[JourneyReport]) -> str:
    """A fixed-width text table: a summary line per journey, then one row per step.

    Channel columns are the union of channels any of the journeys sent on, so several journeys
    line up under one header.
    """
    if isinstance(reports, JourneyReport):
        raise UsageError("format_table takes a list of JourneyReport, got JourneyReport "
                         "(one report: format_table([report]))")
    if isinstance(reports, str) or not isinstance(reports, Iterable):
        raise UsageError(
            f"format_table takes a list of JourneyReport, got {type(reports).__name__}"
        )
    reports = list(reports)
    for i, item in enumerate(reports):
        if not isinstance(item, JourneyReport):
            raise UsageError(
                f"format_table takes a list of JourneyReport: item #{i} is {given(item)}"
            )
    channels = sorted({ch for r in reports for row in r.steps for ch in row.sent})
    # The paths a split or audience-path step sent customers down, when any step has some:
    # an A/B test's table must show its arms.
    paths = any(row.paths for r in reports for row in r.steps)
    # Of the messages sent, those that did not go out after all, when any step has some.
    undelivered = [
        column for column, field in _UNDELIVERED_COLUMNS
        if any(getattr(r, field) for r in reports)
    ]
    # Customers moved onto steps by a migration, when any were: else a step's waiting can
    # exceed its reached with nothing to say why.
    migrated = ["migrated"] if any(row.migrated for r in reports for row in r.steps) else []
    header = ["step", "kind", *_STEP_COLUMNS[:2], *migrated, *(f"sent:{c}" for c in channels),
              *undelivered, *_STEP_COLUMNS[2:], *(["paths"] if paths else [])]
    lines: list[str] = []
    for report in reports:
        table: list[list[str]] = [header]
        for row in report.steps:
            values = {
                "reached": row.reached, "waiting": row.waiting, "timeouts": row.timeouts,
                "exited": row.exited, "converted": row.converted, "completed": row.completed,
                "withheld": row.withheld, "failed": row.delivery_failed,
                "migrated": row.migrated,
            }
            table.append([
                row.step_id, row.kind,
                *(_num(values[c]) for c in _STEP_COLUMNS[:2]),
                *(_num(values[c]) for c in migrated),
                *(_num(row.sent.get(c, 0)) for c in channels),
                *(_num(values[c]) for c in undelivered),
                *(_num(values[c]) for c in _STEP_COLUMNS[2:]),
                *([_paths(row.paths)] if paths else []),
            ])
        if lines:
            lines.append("")
        lines.append(f"== {report.journey_id}" + (
            f" ({report.name})" if report.name and report.name != report.journey_id else ""
        ))
        lines.append(_summary(report))
        lines.extend(_align(table, text_last=paths))
    return "\n".join(lines) + "\n"


def _paths(paths: Mapping[str, int]) -> str:
    """``a 700, b 300``: each path taken and how many took it, in path order."""
    return ", ".join(f"{path} {_num(n)}" for path, n in sorted(paths.items())) or "-"


def _summary(report: JourneyReport) -> str:
    exits = ", ".join(f"{reason} {_num(n)}" for reason, n in report.exited.items())
    parts = [
        f"entered {_num(report.entered)}",
        f"active {_num(report.active)}",
        f"completed {_num(report.completed)}",
        f"exited {_num(report.exited_total)}" + (f" ({exits})" if exits else ""),
        f"converted {_num(report.converted)} ({report.conversion_rate:.1%})",
    ]
    for label, n in (("expired", report.expired), ("removed", report.removed),
                     ("ejected", report.ejected), ("merged", report.merged),
                     ("not entered", report.not_entered)):
        if n:
            parts.append(f"{label} {_num(n)}")
    # Why a journey's customers stand still: it is paused, or its held ones wait for a release.
    if report.paused_since is not None:
        parts.append(f"paused since {report.paused_since.isoformat()}")
    if report.held:
        parts.append(f"held {_num(report.held)}")
    # Why steps reached more customers than they sent to, and the control group against the
    # others: without them a funnel's numbers do not add up.
    failed = sum(row.send_failed for row in report.steps)
    if failed:
        parts.append(f"send failed {_num(failed)}")
    # Why fewer messages went out than were sent: the channel figures count them all.
    for label, n in (("withheld", report.withheld),
                     ("delivery failed", report.delivery_failed)):
        if n:
            parts.append(f"{label} {_num(n)}")
    for label, counted in (("suppressed", report.suppressed), ("not sent", report.not_sent)):
        if counted:
            reasons = ", ".join(f"{reason} {_num(n)}" for reason, n in counted.items())
            parts.append(f"{label} {_num(sum(counted.values()))} ({reasons})")
    if report.control:
        parts.append(
            f"control {_num(report.control)} (converted {_num(report.control_converted)}, "
            f"{report.control_conversion_rate:.1%}; others {report.treated_conversion_rate:.1%})"
        )
    return "   " + ", ".join(parts)


def _num(n: int) -> str:
    return f"{n:,}" if n else "-"


def _align(table: list[list[str]], *, text_last: bool = False) -> list[str]:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    last = len(widths) - 1
    out = []
    for i, row in enumerate(table):
        # Names left, numbers right: columns of figures are read by their last digits.
        cells = [
            cell.ljust(widths[j]) if j < 2 or (text_last and j == last)
            else cell.rjust(widths[j])
            for j, cell in enumerate(row)
        ]
        out.append("   " + "  ".join(cells).rstrip())
        if i == 0:
            out.append("   " + "  ".join("-" * w for w in widths))
    return out
