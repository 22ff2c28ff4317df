"""The demo shop: its definitions, its workload, the simulator, and ``cjo demo``."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

import pytest

from cjo import Engine, Event, InMemoryStorage, ManualClock, validate_definitions
from cjo.analytics import format_table, journey_report
from cjo.channels.recording import RecordingChannel
from cjo.cli import main
from cjo.demo import (
    CURSOR_KEY,
    DEMO_START,
    customer_profile,
    load_cursor,
    run_simulation,
    shop_channels,
    shop_definitions,
    shop_workload,
    simulate_shop,
)
from cjo.errors import UsageError
from cjo.runtime.state import TERMINAL_STATUSES


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["demo", *args]) == 0
    return capsys.readouterr().out


def table_part(output: str) -> str:
    """Everything but the wall-time line, which differs from run to run."""
    return "\n".join(line for line in output.splitlines() if "wall time" not in line)


def summary_numbers(output: str, journey_id: str) -> dict[str, int]:
    lines = output.splitlines()
    summary = lines[lines.index(next(x for x in lines if x.startswith(f"== {journey_id}"))) + 1]
    return {
        name: int(value.replace(",", "").replace("-", "0"))
        for name, value in re.findall(r"(entered|active|completed|converted) ([\d,]+|-)", summary)
    }


def column(output: str, journey_id: str, step_id: str, name: str) -> int:
    lines = output.splitlines()
    start = lines.index(next(x for x in lines if x.startswith(f"== {journey_id}")))
    header = lines[start + 2].split()
    row = next(x.split() for x in lines[start + 4:] if x.split()[:1] == [step_id])
    value = row[header.index(name)]
    return 0 if value == "-" else int(value.replace(",", ""))


def test_definitions_are_valid_and_use_the_taxonomy():
    definitions = shop_definitions()
    assert validate_definitions(definitions, channels=["email", "sms", "push"]) == []
    assert definitions.taxonomy is not None
    tags = definitions.taxonomy.tags()
    assert {"lifecycle/onboarding", "lifecycle/recovery", "lifecycle/retention"} <= tags
    assert [j.id for j in definitions.journeys] == ["welcome", "abandoned_cart", "win_back"]
    for item in definitions.content:
        assert {v.channel for v in item.variants} == {"email", "sms", "push"}
        assert item.tags and set(item.tags) <= tags
    for journey in definitions.journeys:
        assert journey.tags and set(journey.tags) <= tags


def test_workload_is_deterministic_time_ordered_and_plausible():
    first = list(shop_workload(300, 30, seed=7))
    again = list(shop_workload(300, 30, seed=7))
    assert first == again
    assert first != list(shop_workload(300, 30, seed=8))
    times = [e.timestamp for e in first]
    assert times == sorted(times)
    assert times[0] >= DEMO_START and times[-1] < DEMO_START + timedelta(days=30)
    assert len({e.event_id for e in first}) == len(first)
    names = Counter(e.name for e in first)
    assert names["signed_up"] == 300
    assert 15 <= len(first) / 300 <= 25  # about 20 events per customer over 30 days
    assert names["page_viewed"] > len(first) / 2
    assert 0 < names["purchased"] < names["added_to_cart"]
    assert names["email_opened"] > 0
    signup = next(e for e in first if e.name == "signed_up")
    assert set(signup.properties) == {"plan", "first_name", "country", "timezone"}


def test_profiles_are_stable_per_customer():
    assert customer_profile(3, 42) == customer_profile(3, 42)
    plans = Counter(customer_profile(3, i)["plan"] for i in range(1000))
    assert 100 < plans["pro"] < 300 and plans["pro"] + plans["free"] == 1000


def simulate(customers: int = 300, days: float = 6, *, batch: bool = True, seed: int = 5):
    clock = ManualClock(DEMO_START)
    channels = shop_channels()
    engine = Engine(InMemoryStorage(), channels=dict(channels), clock=clock)
    engine.publish(shop_definitions())
    run = simulate_shop(engine, clock, customers=customers, days=days, seed=seed, batch=batch)
    return engine, clock, channels, run


def test_simulation_sends_on_every_channel_and_identifies_customers():
    engine, clock, channels, run = simulate()
    assert clock.now() == DEMO_START + timedelta(days=6)
    assert run.stats.profiles == 300
    assert run.stats.ticks == 6 * 24 * 12
    assert all(ch.sent > 0 for ch in channels.values()), {k: c.sent for k, c in channels.items()}
    assert run.stats.messages == sum(ch.sent for ch in channels.values())
    profile = engine.profile("c000000")
    assert profile is not None and profile.attributes["plan"] in ("pro", "free")
    assert profile.timezone


def test_batches_and_single_events_agree():
    engines = [simulate(batch=batch)[0] for batch in (True, False)]
    tables = [
        format_table([journey_report(e.storage, j) for j in shop_definitions().journeys])
        for e in engines
    ]
    assert tables[0] == tables[1]


def test_a_second_run_continues_where_the_first_stopped():
    engine, _clock, _channels, first = simulate(customers=200, days=3)
    assert not first.resumed
    cursor = load_cursor(engine.storage)
    assert cursor is not None and cursor.until == DEMO_START + timedelta(days=3)
    assert (cursor.periods, cursor.customers, cursor.seed) == (1, 200, 5)
    waiting_before = [
        e for cid in (f"c{i:06d}" for i in range(200)) for e in engine.enrollments(cid)
        if e.active and e.wake_at is not None
    ]
    assert waiting_before

    # A fresh clock, as a new process would have: the cursor moves it on.
    clock2 = ManualClock(DEMO_START)
    engine2 = Engine(engine.storage, channels=dict(shop_channels()), clock=clock2)
    engine2.publish(shop_definitions())
    second = simulate_shop(engine2, clock2, customers=100, days=3, seed=999)
    assert second.resumed
    assert second.stats.start == DEMO_START + timedelta(days=3)
    assert clock2.now() == DEMO_START + timedelta(days=6)
    assert second.cursor.seed == 5  # the shop keeps its seed
    assert (second.cursor.periods, second.cursor.customers) == (2, 300)
    assert second.cursor.events == first.stats.events + second.stats.events
    # The waiting customers of the first run got their due steps.
    # (A record keeps its last ended enrollment; the activity log has every end.)
    ended = {
        a.enrollment_id for a in engine2.activities(DEMO_START, clock2.now() + timedelta(1))
        if a.kind in TERMINAL_STATUSES
    }
    for e in waiting_before:
        found = [x for x in engine2.enrollments(e.customer_id) if x.id == e.id]
        if not found:
            assert e.id in ended
            continue
        (now,) = found
        assert now.wake_at is None or now.wake_at > clock2.now()
        assert now != e
    # New sign-ups, and earlier customers still shop (with new event ids: nothing deduplicated).
    assert engine2.profile("c000299") is not None
    assert second.stats.profiles == 100


def test_resumed_workload_brings_new_event_ids():
    one = {e.event_id for e in shop_workload(50, 2, seed=1)}
    two = list(shop_workload(50, 2, seed=1, returning=50, period=1))
    assert not one & {e.event_id for e in two}
    assert {e.customer_id for e in two if e.name == "signed_up"} == {
        f"c{i:06d}" for i in range(50, 100)
    }
    assert any(e.customer_id < "c000050" for e in two)


def test_run_simulation_stops_at_until_and_reads_no_further():
    clock = ManualClock(DEMO_START)
    engine = Engine(channels=dict(shop_channels()), clock=clock)
    engine.publish(shop_definitions())
    events = iter(shop_workload(50, 4, seed=2))
    stats = run_simulation(engine, clock, events, until=DEMO_START + timedelta(days=2))
    assert clock.now() == DEMO_START + timedelta(days=2)
    rest = list(events)
    assert rest and all(e.timestamp >= DEMO_START + timedelta(days=2) for e in rest)
    assert stats.events > 0
    with pytest.raises(UsageError, match="tick"):
        run_simulation(engine, clock, [], tick=timedelta(0))


def test_cli_demo_prints_both_journeys_with_plausible_numbers(capsys):
    out = run_cli(capsys, "--customers", "250", "--days", "5", "--seed", "3")
    assert "cjo demo: simulated 5 days of shop time" in out
    assert "customers: 250 new" in out
    assert "== welcome (Welcome series)" in out
    assert "== abandoned_cart (Abandoned cart)" in out
    assert "== win_back (We miss you)" in out
    welcome = summary_numbers(out, "welcome")
    cart = summary_numbers(out, "abandoned_cart")
    assert welcome["entered"] == 250
    assert 0 < cart["entered"] < 250 * 3
    assert 0 < cart["converted"] < cart["entered"]
    assert column(out, "welcome", "welcome_email", "sent:email") == 250
    assert column(out, "welcome", "tip_push", "sent:push") > 0
    assert column(out, "abandoned_cart", "email", "sent:email") > 0
    assert column(out, "abandoned_cart", "sms", "sent:sms") > 0
    # Those who timed out of the first wait are exactly those who got the email.
    assert column(out, "abandoned_cart", "wait_purchase", "timeouts") == column(
        out, "abandoned_cart", "email", "reached"
    )


def test_cli_demo_is_deterministic(capsys):
    args = ("--customers", "150", "--days", "4", "--seed", "11")
    first = run_cli(capsys, *args)
    second = run_cli(capsys, *args)
    assert table_part(first) == table_part(second)
    other = run_cli(capsys, "--customers", "150", "--days", "4", "--seed", "12")
    assert table_part(first) != table_part(other)


def test_cli_demo_one_by_one_prints_the_same_table(capsys):
    args = ("--customers", "100", "--days", "3")
    assert table_part(run_cli(capsys, *args)) == table_part(run_cli(capsys, *args, "--one-by-one"))


def test_cli_demo_rejects_an_unknown_storage(capsys):
    assert main(["demo", "--storage", "nosuch://db"]) == 2
    assert "nosuch://db" in capsys.readouterr().err


def test_cursor_is_kept_in_storage_settings():
    engine, *_ = simulate(customers=20, days=1)
    assert CURSOR_KEY == "cjo.demo.cursor"
    assert '"periods": 1' in (engine.storage.get_setting(CURSOR_KEY) or "")


def test_win_back_fires_once_per_quiet_spell_from_creation_or_the_last_purchase():
    clock = ManualClock(DEMO_START)
    channels = {name: RecordingChannel() for name in ("email", "sms", "push")}
    engine = Engine(channels=dict(channels), clock=clock)
    engine.publish(shop_definitions())
    day = timedelta(days=1)

    def win_backs() -> list[tuple[str, str, object]]:
        return sorted(
            (m.customer_id, m.channel, m.created_at)
            for ch in channels.values() for m in ch.messages if m.journey_id == "win_back"
        )

    def run_until(when):  # run_due at every hour, as a worker polling would
        while clock.now() < when:
            clock.set(min(clock.now() + timedelta(hours=1), when))
            engine.run_due()

    engine.identify("never", {"plan": "free", "first_name": "Ada"})  # created at DEMO_START
    engine.identify("buyer", {"plan": "pro", "first_name": "Ben"})
    run_until(DEMO_START + 14 * day - timedelta(seconds=1))
    assert win_backs() == []
    run_until(DEMO_START + 14 * day)
    # Exactly 14 days after creation, both are emailed.
    assert win_backs() == [("buyer", "email", DEMO_START + 14 * day),
                           ("never", "email", DEMO_START + 14 * day)]
    (email,) = [m for m in channels["email"].messages if m.customer_id == "buyer"
                and m.journey_id == "win_back"]
    assert email.fields["subject"] == "Ben, we miss you"
    assert "20% off" in email.fields["text"] and "BACK-BUYER" in email.fields["text"]
    # The buyer buys (stamped a little before it reaches the engine): converted, no push; the
    # next quiet spell is measured from the purchase's own timestamp.
    bought = DEMO_START + 15 * day
    clock.set(bought + timedelta(minutes=5))
    outcome = engine.handle_event(Event("buyer", "purchased", bought, event_id="p1"))
    assert [(g.journey_id, g.goal) for g in outcome.goals] == [("win_back", "repurchase")]
    run_until(DEMO_START + 40 * day)
    assert win_backs() == [
        ("buyer", "email", DEMO_START + 14 * day),
        ("buyer", "email", bought + 14 * day),
        ("buyer", "push", bought + 17 * day),
        ("never", "email", DEMO_START + 14 * day),
        ("never", "push", DEMO_START + 17 * day),
    ]
    # Once per quiet spell: nothing more without a new purchase.
    run_until(DEMO_START + 80 * day)
    assert len(win_backs()) == 5
    report = journey_report(engine.storage, shop_definitions().journeys[2])
    assert (report.entered, report.converted, report.completed, report.active) == (3, 1, 2, 0)


def _bench_modules(monkeypatch):
    import importlib
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench"
    monkeypatch.syspath_prepend(str(bench))
    for name in ("bench_engine", "baseline"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module("bench_engine"), importlib.import_module("baseline")


def test_bench_smoke_run_agrees_with_the_hand_written_baseline(tmp_path, monkeypatch, capsys):
    """The benchmark's plain-Python version of the three journeys is an independent oracle: on
    the same events and clock, cjo must send exactly the same messages with the same outcomes
    and fire the same wake-ups. 20 days: long enough for the 14-day win-back to fire."""
    import json

    bench_engine, _baseline = _bench_modules(monkeypatch)
    assert bench_engine.main([
        "--customers", "300", "--days", "20", "--seed", "9", "--out", str(tmp_path),
    ]) == 0
    out = capsys.readouterr().out
    assert "journey outcomes (entered, active, completed, converted, exited): identical" in out
    assert "wake-ups fired by the due phase: identical" in out
    (result,) = tmp_path.glob("bench-*.json")
    report = json.loads(result.read_text())
    runs = {r["name"]: r for r in report["runs"]}
    base, engine = runs["baseline (plain Python)"], runs["cjo memory, batches"]
    assert engine["sent"] == base["sent"] and sum(base["sent"].values()) > 0
    assert engine["outcomes"] == base["outcomes"]
    assert base["outcomes"]["win_back.entered"] > 0 and base["outcomes"]["win_back.converted"] > 0
    assert engine["wakeups"] == base["wakeups"] > 0
    # Engine state per customer, measured apart from what retention bounds.
    state = report["memory"]["state"]
    assert state["customers"] == 300 and state["sent"] == engine["sent"]
    assert set(state["bytes"]) == {"event ids", "outbox", "activity log", "customer records"}
    assert 500 < state["bytes_per_item"]["customer records"] < 20_000
    assert "bytes per customer" in out


def test_the_baseline_renders_what_cjo_renders(monkeypatch):
    """Not only as many messages: the same customers, channels and rendered text."""
    _bench_engine, baseline = _bench_modules(monkeypatch)
    events = list(shop_workload(200, 20, seed=4))
    until = DEMO_START + timedelta(days=20)
    clock = ManualClock(DEMO_START)
    channels = {name: RecordingChannel() for name in ("email", "sms", "push")}
    engine = Engine(InMemoryStorage(), channels=dict(channels), clock=clock)
    engine.publish(shop_definitions())
    run_simulation(engine, clock, events, until=until)
    sent = Counter(
        (m.customer_id, m.channel, tuple(sorted(m.fields.items())))
        for ch in channels.values() for m in ch.messages
    )
    shop = baseline.ShopBaseline()
    shop.run(events, DEMO_START, until, timedelta(minutes=5))
    expected = Counter((cid, ch, tuple(sorted(f.items()))) for cid, ch, f in shop.outbox)
    assert sent == expected
    assert any(m.journey_id == "win_back" for m in channels["push"].messages)


def test_cli_demo_on_sqlite_resumes_the_waiting_customers(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'demo.db'}"  # an absolute path: sqlite:////tmp/...
    first = run_cli(capsys, "--customers", "150", "--days", "3", "--storage", url)
    waiting_first = sum(
        int(n.replace(",", "")) for n in re.findall(r"active ([\d,]+)", first)
    )
    assert waiting_first > 0
    second = run_cli(capsys, "--customers", "150", "--days", "3", "--storage", url)
    assert "continued a simulation begun" in second and "period 2" in second
    assert "customers: 150 new, 300 in all" in second
    assert summary_numbers(second, "welcome")["entered"] == 300
    # Every welcome enrollment of the first run that was waiting has moved on or finished.
    assert summary_numbers(second, "welcome")["completed"] > summary_numbers(
        first, "welcome"
    )["completed"]


def test_bench_collector_times_a_pass_and_its_collections() -> None:
    """``bench/collector.py`` runs the in-memory pass and reports the collector's share."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "collector.py"
    done = subprocess.run(
        [sys.executable, str(script), "--customers", "300", "--days", "15"],
        capture_output=True, text=True, check=True, timeout=120,
    )
    assert "in the collector" in done.stdout and "generation 2" in done.stdout
    assert "'email': " in done.stdout
