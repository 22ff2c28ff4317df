"""Journey reports from hand-built activity and active counts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from cjo import (
    Branch,
    Case,
    ContentItem,
    Engine,
    Exit,
    Journey,
    RecordingChannel,
    Send,
    Split,
    SplitPath,
    SQLiteStorage,
    Variant,
    Wait,
    WaitForEvent,
    attr,
)
from cjo.analytics import JourneyReport, format_table, journey_report
from cjo.analytics.report import build_report, graph_order
from cjo.errors import UnknownJourneyError, UsageError
from cjo.storage.base import ActivityCount, Storage
from cjo.storage.memory import InMemoryStorage


def journey() -> Journey:
    # Steps deliberately declared out of graph order: rows must follow the graph.
    return Journey(
        id="cart",
        name="Abandoned cart",
        entry="wait",
        steps={
            "sms": Send("reminder", "sms"),
            "email": Send("reminder", "email", next="wait_open"),
            "wait_open": WaitForEvent("email_opened", timedelta(days=1), on_timeout="vip"),
            "wait": WaitForEvent("purchased", timedelta(hours=4), on_timeout="email"),
            "vip": Branch((Case(attr("vip").is_in([True]), "push"),), default="sms"),
            "push": Send("reminder", "push", next="cool"),
            "cool": Wait(timedelta(hours=1), next="bye"),
            "bye": Exit("done with vip"),
        },
    )


def c(step: str | None, kind: str, n: int, detail: str | None = None, *,
      journey_id: str = "cart", version: int = 1) -> ActivityCount:
    return ActivityCount(journey_id, version, step, kind, detail, n)


COUNTS = [
    c(None, "entered", 100),
    c("wait", "step", 100),
    c("wait", "goal", 30, "goal"),
    c("wait", "converted", 30, "goal"),
    c("wait", "timeout", 65, "purchased"),
    c("wait", "exited", 2, "unsubscribed"),
    c("email", "step", 65),
    c("email", "sent", 60, "email"),
    c("email", "send_failed", 5, "no content variant"),
    c("wait_open", "step", 65),
    c("wait_open", "event_received", 20, "email_opened"),
    c("wait_open", "completed", 20),
    c("wait_open", "timeout", 40, "email_opened"),
    c("wait_open", "goal", 1, "goal"),
    c("wait_open", "converted", 1, "goal"),
    c("vip", "step", 40),
    c("sms", "step", 30),
    c("sms", "sent", 30, "sms"),
    c("sms", "completed", 30),
    c("push", "step", 10),
    c("push", "sent", 10, "push"),
    c("cool", "step", 10),
    c("cool", "expired", 3, "max lifetime"),
    c("bye", "step", 7),
    c("bye", "exited", 7, "done with vip"),
    # Another journey's counts must not leak in.
    c(None, "entered", 999, journey_id="other"),
    c("wait", "step", 999, journey_id="other"),
    # A step only an older version had.
    c("legacy", "step", 4, version=0),
    c("legacy", "sent", 4, "email", version=0),
]
ACTIVE = {(1, "wait"): 3, (1, "wait_open"): 4, (0, "legacy"): 1}


def report() -> JourneyReport:
    return build_report(journey(), COUNTS, ACTIVE)


def test_rows_follow_the_graph_breadth_first_from_the_entry():
    assert graph_order(journey()) == [
        "wait", "email", "wait_open", "vip", "push", "sms", "cool", "bye"
    ]
    assert [r.step_id for r in report().steps] == [
        "wait", "email", "wait_open", "vip", "push", "sms", "cool", "bye", "legacy"
    ]


def test_unreachable_steps_come_after_the_graph():
    j = Journey(id="j", entry="a", steps={"z": Send("x", "email"), "a": Send("x", "email")})
    assert graph_order(j) == ["a", "z"]


def test_totals():
    r = report()
    assert r.journey_id == "cart" and r.name == "Abandoned cart"
    assert r.entered == 100
    assert r.active == 8
    assert r.completed == 50
    assert r.exited == {"done with vip": 7, "unsubscribed": 2}
    assert r.exited_total == 9
    assert r.converted == 31
    assert r.expired == 3
    assert r.sent == {"email": 64, "push": 10, "sms": 30}
    assert r.sent_total == 104
    assert r.conversion_rate == pytest.approx(0.31)


def test_step_rows():
    r = report()
    wait = r.step("wait")
    assert (wait.kind, wait.reached, wait.waiting, wait.timeouts, wait.converted,
            wait.exited) == ("wait_for_event", 100, 3, 65, 30, 2)
    assert wait.sent == {}
    email = r.step("email")
    assert (email.kind, email.reached, email.sent, email.send_failed) == (
        "send", 65, {"email": 60}, 5
    )
    wait_open = r.step("wait_open")
    assert (wait_open.waiting, wait_open.events_received, wait_open.completed,
            wait_open.timeouts, wait_open.converted) == (4, 20, 20, 40, 1)
    assert r.step("sms").sent == {"sms": 30}
    assert r.step("vip").kind == "branch"
    assert r.step("cool").kind == "wait"
    assert r.step("bye").exited == 7
    legacy = r.step("legacy")
    assert (legacy.kind, legacy.reached, legacy.waiting, legacy.sent_total) == ("?", 4, 1, 4)
    with pytest.raises(UsageError, match=(
        r"journey 'cart' has no step 'nope' \(its steps: wait, email, wait_open, vip, "
    )):
        r.step("nope")


def test_empty_journey_reports_zeros():
    r = build_report(journey(), [], {})
    assert (r.entered, r.active, r.converted, r.conversion_rate) == (0, 0, 0, 0.0)
    assert all(row.reached == 0 and row.waiting == 0 for row in r.steps)
    text = format_table([r])
    assert "entered -" in text and "converted - (0.0%)" in text


class CannedStorage(InMemoryStorage):
    def activity_counts(self, journey_id: str) -> list[ActivityCount]:
        return [x for x in COUNTS if x.journey_id == journey_id]

    def active_counts(self, journey_id: str) -> dict[tuple[int, str | None], int]:
        return dict(ACTIVE) if journey_id == "cart" else {}


def test_journey_report_reads_the_storage_aggregates():
    assert journey_report(CannedStorage(), journey()) == report()


def test_format_table():
    other = build_report(
        Journey(id="hello", entry="s", steps={"s": Send("x", "webhook")}),
        [c(None, "entered", 1234, journey_id="hello"),
         c("s", "step", 1234, journey_id="hello"),
         c("s", "sent", 1234, "webhook", journey_id="hello"),
         c("s", "completed", 1234, journey_id="hello")],
        {},
    )
    text = format_table([report(), other])
    lines = text.splitlines()
    assert lines[0] == "== cart (Abandoned cart)"
    assert "entered 100, active 8, completed 50, exited 9 (done with vip 7, unsubscribed 2), "\
           "converted 31 (31.0%), expired 3" in lines[1]
    header = lines[2].split()
    # Channel columns are the union over every journey, so the two tables line up.
    assert header == ["step", "kind", "reached", "waiting", "sent:email", "sent:push",
                      "sent:sms", "sent:webhook", "timeouts", "exited", "converted", "completed"]
    rows = {line.split()[0]: line.split() for line in lines[4:13]}
    assert rows["wait"] == ["wait", "wait_for_event", "100", "3", "-", "-", "-", "-", "65",
                            "2", "30", "-"]
    assert rows["email"][4] == "60"
    assert rows["legacy"][:4] == ["legacy", "?", "4", "1"]
    assert "== hello" in lines
    assert lines[lines.index("== hello") + 4].split() == [
        "s", "send", "1,234", "-", "-", "-", "-", "1,234", "-", "-", "-", "1,234"
    ]
    # Fixed width: in one table every row ends in the same column (numbers right-aligned).
    table = lines[2:13]
    assert len({len(line) for line in table}) == 1
    assert text.endswith("\n")


def test_format_table_says_what_was_not_sent_and_the_control_group():
    # A step reached by more customers than it sent to: the summary says why (control group,
    # consent, failed renders), and how the control group converted against the others.
    r = build_report(
        Journey(id="hello", entry="s", steps={"s": Send("x", "email")}),
        [c(None, "entered", 10, journey_id="hello"),
         c(None, "entered", 4, "control", journey_id="hello"),
         c("s", "step", 14, journey_id="hello"),
         c("s", "sent", 7, "email", journey_id="hello"),
         c("s", "send_failed", 1, "render failed", journey_id="hello"),
         c("s", "suppressed", 4, "control", journey_id="hello"),
         c("s", "suppressed", 2, "no email", journey_id="hello"),
         c("s", "goal", 5, "goal", journey_id="hello"),
         c("s", "goal", 1, "control", journey_id="hello"),
         c("s", "completed", 14, journey_id="hello")],
        {},
    )
    summary = format_table([r]).splitlines()[1]
    assert summary.endswith(
        "converted 6 (42.9%), send failed 1, suppressed 6 (control 4, no email 2), "
        "control 4 (converted 1, 25.0%; others 50.0%)"
    ), summary


def test_a_report_asked_by_journey_id_says_to_pass_the_journey() -> None:
    with pytest.raises(UsageError, match=(
        r"journey must be a Journey, got str 'j'; look a journey up by id in "
        r"engine\.definitions\.journeys"
    )):
        journey_report(InMemoryStorage(), "j")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="storage must be a cjo Storage"):
        journey_report(object(), Journey("j", "w", {"w": Wait(timedelta(hours=1))}))  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [InMemoryStorage, lambda: SQLiteStorage(":memory:")],
                         ids=["memory", "sqlite"])
def test_a_report_of_a_journey_never_published_is_refused_not_zeros(
    make: Callable[[], Storage],
) -> None:
    storage = make()
    engine = Engine(storage=storage,
                    channels={ch: RecordingChannel() for ch in ("email", "sms", "push")})
    with pytest.raises(UnknownJourneyError, match="no journey 'cart' has been published"):
        journey_report(storage, journey())
    engine.publish(journeys=[Journey("other", "w", {"w": Wait(timedelta(hours=1))})])
    with pytest.raises(UnknownJourneyError, match="no journey 'cart' has been published"):
        journey_report(storage, journey())
    engine.publish(journeys=[journey()], content=[ContentItem("reminder", (
        Variant("email", {"subject": "s", "text": "x"}), Variant("sms", {"text": "x"}),
        Variant("push", {"title": "t", "body": "b"})))])
    assert journey_report(storage, journey()) == build_report(journey(), [], {})


def test_format_table_shows_the_paths_of_a_split():
    ab = Journey(id="ab", entry="split", steps={
        "split": Split((SplitPath("a", 0.7, "mail_a"), SplitPath("b", 0.3, "mail_b"))),
        "mail_a": Send("x", "email"), "mail_b": Send("y", "email"),
    })
    r = build_report(ab, [
        c(None, "entered", 1000, journey_id="ab"), c("split", "step", 1000, journey_id="ab"),
        c("split", "path", 702, "a", journey_id="ab"), c("split", "path", 298, "b", journey_id="ab"),
        c("mail_a", "step", 702, journey_id="ab"), c("mail_a", "sent", 702, "email", journey_id="ab"),
        c("mail_b", "step", 298, journey_id="ab"), c("mail_b", "sent", 298, "email", journey_id="ab"),
    ], {})
    lines = format_table([r]).splitlines()
    assert lines[2].split()[-1] == "paths"
    rows = {line.split()[0]: line for line in lines[4:]}
    assert rows["split"].endswith("a 702, b 298")
    assert rows["mail_a"].split()[-1] == "-"
    # Without any path, no column for them.
    assert "paths" not in format_table([report()])


@pytest.mark.parametrize(("given", "message"), [
    (None, "format_table takes a list of JourneyReport, got NoneType"),
    ("cart", "format_table takes a list of JourneyReport, got str"),
    ([1], r"format_table takes a list of JourneyReport: item #0 is int 1"),
])
def test_format_table_refuses_what_is_not_a_list_of_reports(given: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        format_table(given)  # type: ignore[arg-type]


@pytest.mark.parametrize("given", [None, [1], {"big": [3]}, {"big": None}])
def test_format_segment_sizes_refuses_what_segment_sizes_does_not_return(given: object) -> None:
    from cjo.analytics import format_segment_sizes

    with pytest.raises(UsageError, match="format_segment_sizes takes what segment_sizes returns"):
        format_segment_sizes(given)  # type: ignore[arg-type]


def test_format_table_says_how_to_print_one_report() -> None:
    with pytest.raises(UsageError, match=r"got JourneyReport \(one report: format_table\(\[report\]\)\)"):
        format_table(report())  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [InMemoryStorage, lambda: SQLiteStorage(":memory:")],
                         ids=["memory", "sqlite"])
def test_a_step_only_an_older_version_has_keeps_its_kind(make: Callable[[], Storage]) -> None:
    from cjo import Event, EventTrigger, ManualClock
    from tests.helpers import T0

    storage = make()
    clock = ManualClock(T0)
    engine = Engine(storage=storage, channels={"email": RecordingChannel()}, clock=clock)
    first = Journey("j", "pause", {"pause": Wait(timedelta(hours=1))}, trigger=EventTrigger("go"))
    engine.publish(journeys=[first])
    engine.handle_event(Event(customer_id="c", name="go", timestamp=T0, event_id="e1"))
    second = Journey("j", "hold", {"hold": WaitForEvent("done", timeout=timedelta(hours=1))},
                     version=2, trigger=EventTrigger("go"))
    engine.publish(journeys=[second])
    report = journey_report(storage, second)
    assert [(row.step_id, row.kind) for row in report.steps] == [
        ("hold", "wait_for_event"), ("pause", "wait")]


@pytest.mark.parametrize(("given", "message"), [
    ("cart", r"report_data takes a JourneyReport, got str 'cart'"),
    (None, r"report_data takes a JourneyReport, got None"),
    ([1], r"report_data takes one JourneyReport, got list .*\[report_data\(r\) for r in reports\]"),
])
def test_report_data_refuses_what_is_not_a_report(given: object, message: str) -> None:
    from cjo.analytics import report_data

    with pytest.raises(UsageError, match=message):
        report_data(given)  # type: ignore[arg-type]
