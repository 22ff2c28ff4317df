"""The demo shop: three journeys, their content, a synthetic customer stream and a simulator.

The journeys: a welcome series (on sign-up), an abandoned-cart reminder (on a cart), and a
win-back ("We miss you") for customers who have not bought for 14 days.

Used by ``cjo demo``, the benchmarks in ``bench/`` and the tests. Everything is deterministic:
the same seed gives the same customers, the same events and the same results.

Profiles travel in the stream: each ``signed_up`` event carries the new customer's profile
(plan, first_name, country, timezone) as properties, and :func:`run_simulation` calls
:func:`identify_from_signup` (``engine.identify``) for it just before handling the event, the way
a host would save the sign-up form and then report the event.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import attrs

from cjo.channels.base import Channel, DeliveryResult, Message
from cjo.clock import ManualClock
from cjo.conditions import attr, prop
from cjo.engine import Engine
from cjo.errors import UsageError
from cjo.model.content import ContentItem, Variant
from cjo.model.definitions import Definitions
from cjo.model.events import Event, ProfileUpdate
from cjo.model.journey import ExitCriterion, Goal, Journey, ReentryPolicy
from cjo.model.steps import Branch, Case, Send, Wait, WaitForEvent
from cjo.model.taxonomy import Category, Taxonomy
from cjo.model.triggers import EventTrigger, InactivityTrigger
from cjo.outcome import Outcome
from cjo.storage.base import Storage

__all__ = [
    "CURSOR_KEY",
    "DEMO_START",
    "CountingChannel",
    "ShopCursor",
    "SimulationStats",
    "customer_id",
    "customer_profile",
    "identify_from_signup",
    "load_cursor",
    "run_simulation",
    "shop_channels",
    "shop_definitions",
    "shop_workload",
    "simulate_shop",
]

DEMO_START = datetime(2026, 3, 2, tzinfo=UTC)
CURSOR_KEY = "cjo.demo.cursor"

# --- definitions -------------------------------------------------------------------------------


def shop_taxonomy() -> Taxonomy:
    return Taxonomy((
        Category("lifecycle", "Lifecycle stage", (
            Category("onboarding", "Onboarding"),
            Category("recovery", "Recovery"),
            Category("retention", "Retention"),
        )),
        Category("channel", "Channel", (
            Category("email", "Email"), Category("sms", "SMS"), Category("push", "Push"),
        )),
        Category("action", "Desired action", (Category("purchase", "Purchase"),)),
    ))


# Pro members get a larger discount; the code is personal so that redemptions can be traced.
_WIN_BACK_OFFER = "{% if profile.plan == 'pro' %}20{% else %}15{% endif %}% off"
_WIN_BACK_CODE = "BACK-{{ customer_id | upcase }}"


def shop_content() -> tuple[ContentItem, ...]:
    hello = "{{ profile.first_name | default: 'there' }}"
    return (
        ContentItem("welcome", name="Welcome", tags=("lifecycle/onboarding",), variants=(
            Variant("email", {
                "subject": f"Welcome to Acme, {hello}!",
                "text": "Thanks for joining from {{ profile.country | default: 'afar' }}. "
                        "Your {{ profile.plan }} plan is ready.",
            }),
            Variant("sms", {"text": f"Welcome to Acme, {hello}!"}),
            Variant("push", {"title": "Welcome!", "body": f"Hi {hello}, start browsing."}),
        )),
        ContentItem("tips", name="Getting started tips", tags=("lifecycle/onboarding",),
                    variants=(
            Variant("email", {
                "subject": "{{ profile.first_name | default: 'Hi' }}, make the most of "
                           "{{ profile.plan | capitalize }}",
                "text": "Three things {{ profile.plan }} members love...",
            }),
            Variant("sms", {"text": "Tip: save items to your wishlist."}),
            Variant("push", {"title": "Tip of the day",
                             "body": f"{hello}, save items to your wishlist."}),
        )),
        ContentItem("cart_reminder", name="Cart reminder",
                    tags=("lifecycle/recovery", "action/purchase"), variants=(
            Variant("email", {
                "subject": "{{ profile.first_name | default: 'Hi' }}, you left something behind",
                "text": "Your {{ event.item }} ({{ event.price }} EUR) is still in your cart.",
            }),
            Variant("sms", {"text": "Still thinking about {{ event.item }}? It's waiting."}),
            Variant("push", {"title": "Your cart", "body": "{{ event.item }} is waiting."}),
        )),
        ContentItem("win_back", name="We miss you",
                    tags=("lifecycle/retention", "action/purchase"), variants=(
            Variant("email", {
                "subject": "{{ profile.first_name | default: 'Hi' }}, we miss you",
                "text": f"It has been a while. Here is {_WIN_BACK_OFFER} on your next order "
                        f"with code {_WIN_BACK_CODE}.",
            }),
            Variant("sms", {"text": f"Acme misses you: {_WIN_BACK_OFFER} with code "
                                    f"{_WIN_BACK_CODE}."}),
            Variant("push", {"title": "We miss you",
                             "body": f"{hello}, {_WIN_BACK_OFFER} with code {_WIN_BACK_CODE}."}),
        )),
    )


def welcome_journey() -> Journey:
    """Welcome email, two days, then a tip by email (pro plan) or push (everyone else)."""
    return Journey(
        id="welcome",
        name="Welcome series",
        trigger=EventTrigger("signed_up"),
        entry="welcome_email",
        steps={
            "welcome_email": Send("welcome", "email", next="wait_2d", tags=("channel/email",)),
            "wait_2d": Wait(timedelta(days=2), next="by_plan"),
            "by_plan": Branch(
                (Case(attr("plan") == "pro", "tip_email"),), default="tip_push"
            ),
            "tip_email": Send("tips", "email", tags=("channel/email",)),
            "tip_push": Send("tips", "push", tags=("channel/push",)),
        },
        goal=Goal("purchased", within=timedelta(days=14), name="first_purchase"),
        reentry=ReentryPolicy.never(),
        tags=("lifecycle/onboarding", "action/purchase"),
    )


def abandoned_cart_journey() -> Journey:
    """Four hours to buy; then an email; a day to open it; else an SMS."""
    return Journey(
        id="abandoned_cart",
        name="Abandoned cart",
        trigger=EventTrigger("added_to_cart"),
        entry="wait_purchase",
        steps={
            "wait_purchase": WaitForEvent(
                "purchased", timeout=timedelta(hours=4), on_event=None, on_timeout="email"
            ),
            "email": Send("cart_reminder", "email", next="wait_open", tags=("channel/email",)),
            "wait_open": WaitForEvent(
                "email_opened", timeout=timedelta(days=1), on_event=None, on_timeout="sms",
                # Opening some other email (the welcome) says nothing about this cart.
                where=prop("campaign") == "cart_reminder",
            ),
            "sms": Send("cart_reminder", "sms", tags=("channel/sms",)),
        },
        exit_criteria=(ExitCriterion("purchased", event="purchased"),),
        goal=Goal("purchased", within=timedelta(days=7), name="purchase"),
        reentry=ReentryPolicy.after_exit(),
        tags=("lifecycle/recovery", "action/purchase"),
    )


def win_back_journey() -> Journey:
    """No purchase for 14 days (or since sign-up): an email; three days later, still no
    purchase, a push. Once per quiet spell: the next purchase starts a new one."""
    return Journey(
        id="win_back",
        name="We miss you",
        trigger=InactivityTrigger("purchased", after=timedelta(days=14)),
        entry="email",
        steps={
            "email": Send("win_back", "email", next="wait_3d", tags=("channel/email",)),
            "wait_3d": Wait(timedelta(days=3), next="push"),
            "push": Send("win_back", "push", tags=("channel/push",)),
        },
        exit_criteria=(ExitCriterion("purchased", event="purchased"),),
        goal=Goal("purchased", within=timedelta(days=7), name="repurchase"),
        reentry=ReentryPolicy.after_exit(),
        tags=("lifecycle/retention", "action/purchase"),
    )


def shop_definitions() -> Definitions:
    return Definitions(
        journeys=(welcome_journey(), abandoned_cart_journey(), win_back_journey()),
        content=shop_content(),
        taxonomy=shop_taxonomy(),
    )


class CountingChannel(Channel):
    """Counts what it is given instead of keeping it: simulations send millions of messages."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent = 0
        self.by_journey: dict[str, int] = {}

    def send(self, message: Message) -> DeliveryResult:
        self.sent += 1
        self.by_journey[message.journey_id] = self.by_journey.get(message.journey_id, 0) + 1
        return _DELIVERED


# One result for every send: it is frozen, and building one runs its validators (about a
# tenth of a simulated send's dispatch).
_DELIVERED = DeliveryResult("delivered")


def shop_channels() -> dict[str, CountingChannel]:
    return {name: CountingChannel(name) for name in ("email", "sms", "push")}


# --- customers and their events -----------------------------------------------------------------

_FIRST_NAMES = (
    "Ada", "Ben", "Chloé", "Dev", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi",
    "Liam", "Mei", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Vito",
    "Wen", "Yara", "Zoe",
)
_COUNTRIES = (  # (country, timezone, weight)
    ("US", "America/New_York", 14), ("US", "America/Los_Angeles", 8), ("GB", "Europe/London", 10),
    ("DE", "Europe/Berlin", 10), ("FR", "Europe/Paris", 8), ("ES", "Europe/Madrid", 5),
    ("NL", "Europe/Amsterdam", 4), ("BR", "America/Sao_Paulo", 5), ("IN", "Asia/Kolkata", 6),
    ("JP", "Asia/Tokyo", 4), ("AU", "Australia/Sydney", 3),
)
_COUNTRY_WEIGHTS = tuple(w for _c, _t, w in _COUNTRIES)
_PRODUCTS = (
    ("sku-01", "running shoes", 89.0), ("sku-02", "rain jacket", 129.0),
    ("sku-03", "wool socks", 12.5), ("sku-04", "backpack", 64.0), ("sku-05", "water bottle", 18.0),
    ("sku-06", "headlamp", 34.9), ("sku-07", "trail map", 9.9), ("sku-08", "tent", 249.0),
    ("sku-09", "sleeping bag", 159.0), ("sku-10", "camp stove", 79.0),
    ("sku-11", "sunglasses", 45.0), ("sku-12", "cap", 19.0), ("sku-13", "gloves", 24.0),
    ("sku-14", "fleece", 69.0),
    ("sku-15", "hiking poles", 54.0), ("sku-16", "first aid kit", 29.0),
)
# Shared read-only property mappings: millions of events carry one of a few hundred values.
_PAGES = tuple(MappingProxyType({"page": f"/p/{i}"}) for i in range(200))
_CART_PROPS = tuple(
    MappingProxyType({"sku": sku, "item": item, "price": price}) for sku, item, price in _PRODUCTS
)
_PURCHASE_PROPS = tuple(
    MappingProxyType({"sku": sku, "total": price}) for sku, _item, price in _PRODUCTS
)
_OPENED = {
    campaign: MappingProxyType({"campaign": campaign})
    for campaign in ("welcome", "cart_reminder")
}

_DAY = 86_400
_HOUR = 3_600
# Tuned so that a 30-day period averages about 20 events per customer (signing up uniformly
# over the period): mostly page views, a cart every few visits, a purchase for some carts.
_SESSIONS_PER_DAY = 0.28
_PLAN_PRO = 0.2
_CART_PER_SESSION = 0.3
_BUY_AT_ONCE = 0.3        # buys within half an hour: the journey sends nothing
_BUY_LATER = 0.15         # buys hours or days later
_OPEN_REMINDER = 0.35     # opens the cart reminder email
_BUY_AFTER_OPEN = 0.25    # ... and buys because of it
_OPEN_WELCOME = 0.45


def customer_id(index: int) -> str:
    return f"c{index:06d}"


def customer_profile(seed: int, index: int) -> dict[str, Any]:
    """The profile of customer ``index`` in the shop of ``seed``: the same in every period."""
    return _traits(seed, index)[0]


def _traits(seed: int, index: int) -> tuple[dict[str, Any], float]:
    """The profile, and how often the customer visits (heavy-tailed, mean 1)."""
    rng = random.Random(f"{seed}/profile/{index}")
    country, tz, _weight = rng.choices(_COUNTRIES, weights=_COUNTRY_WEIGHTS)[0]
    profile = {
        "plan": "pro" if rng.random() < _PLAN_PRO else "free",
        "first_name": rng.choice(_FIRST_NAMES),
        "country": country,
        "timezone": tz,
    }
    return profile, rng.expovariate(1.0)


_Raw = tuple[int, int, int, str, Mapping[str, Any]]  # (second, customer, seq, name, properties)
_Emit = Callable[[int, str, Mapping[str, Any]], None]


def _customer_events(
    rng: random.Random, index: int, profile: Mapping[str, Any], engagement: float,
    signup_at: int | None, begin: int, end: int,
) -> list[_Raw]:
    """One customer's events in [begin, end) seconds; ``signup_at`` for new customers."""
    out: list[_Raw] = []

    def emit(at: int, name: str, props: Mapping[str, Any]) -> None:
        if begin <= at < end:
            out.append((at, index, len(out), name, props))

    rate = _SESSIONS_PER_DAY * engagement
    if signup_at is not None:
        emit(signup_at, "signed_up", profile)
        if rng.random() < _OPEN_WELCOME:
            emit(signup_at + 60 + int(rng.expovariate(1 / (4 * _HOUR))), "email_opened",
                 _OPENED["welcome"])
        t = signup_at + rng.randint(5, 120)  # the sign-up visit goes on browsing
    else:
        t = begin + int(rng.expovariate(rate) * _DAY) if rate > 0 else end
    while t < end:
        t = _session(rng, t, emit)
        if rate <= 0:
            break
        t += max(600, int(rng.expovariate(rate) * _DAY))
    return out


def _session(rng: random.Random, t: int, emit: _Emit) -> int:
    """One visit starting at ``t``: page views, maybe a cart and what follows. Returns its end."""
    for _ in range(1 + int(rng.expovariate(1 / 2.5))):
        emit(t, "page_viewed", rng.choice(_PAGES))
        t += rng.randint(10, 150)
    if rng.random() >= _CART_PER_SESSION:
        return t
    product = rng.randrange(len(_PRODUCTS))
    emit(t, "added_to_cart", _CART_PROPS[product])
    cart_at = t
    t += rng.randint(20, 300)
    r = rng.random()
    bought_at: int | None = None
    if r < _BUY_AT_ONCE:
        bought_at = cart_at + rng.randint(120, 1800)
    elif r < _BUY_AT_ONCE + _BUY_LATER:
        bought_at = cart_at + rng.randint(3 * _HOUR, 3 * _DAY)
    # The reminder email is due four hours after the cart unless bought by then; some open it.
    reminded = bought_at is None or bought_at > cart_at + 4 * _HOUR
    if reminded and rng.random() < _OPEN_REMINDER:
        opened_at = cart_at + 4 * _HOUR + 30 + int(rng.expovariate(1 / (3 * _HOUR)))
        if bought_at is None or opened_at < bought_at:
            emit(opened_at, "email_opened", _OPENED["cart_reminder"])
            if bought_at is None and rng.random() < _BUY_AFTER_OPEN:
                bought_at = opened_at + rng.randint(60, _HOUR)
    if bought_at is not None:
        emit(bought_at, "purchased", _PURCHASE_PROPS[product])
    return t


def shop_workload(
    customers: int, days: float, seed: int, *, start: datetime = DEMO_START,
    returning: int = 0, period: int = 0,
) -> Iterator[Event]:
    """A deterministic, time-ordered stream of shop events over ``days`` from ``start``.

    ``customers`` new customers (numbered from ``returning``) sign up at random instants over
    the period; the ``returning`` customers of earlier periods (numbered from 0) keep visiting.
    ``period`` numbers the period: it seeds its randomness and prefixes its event ids, so each
    period brings new events. Events that would fall after the period are not generated.
    """
    end = int(days * _DAY)
    rng = random.Random(f"{seed}/signups/{period}")
    signups = sorted(rng.randrange(end) for _ in range(customers)) if end > 0 else []
    raw: list[_Raw] = []
    for index in range(returning + customers):
        profile, engagement = _traits(seed, index)
        signup_at = signups[index - returning] if index >= returning else None
        crng = random.Random(f"{seed}/events/{period}/{index}")
        raw.extend(_customer_events(crng, index, profile, engagement, signup_at, 0, end))
    raw.sort(key=lambda r: (r[0], r[1], r[2]))
    return _events(raw, start, seed, period)


def _events(raw: list[_Raw], start: datetime, seed: int, period: int) -> Iterator[Event]:
    for at, index, seq, name, props in raw:
        yield Event(
            customer_id=customer_id(index),
            name=name,
            timestamp=start + timedelta(seconds=at),
            properties=props,
            event_id=f"s{seed}.p{period}.{index}.{seq}",
        )


def profile_from_signup(event: Event) -> ProfileUpdate:
    """The profile carried by a ``signed_up`` event (see the module docstring)."""
    props = event.properties
    attributes = {k: props[k] for k in ("plan", "first_name", "country") if k in props}
    return ProfileUpdate(event.customer_id, attributes, timezone=props.get("timezone"))


def identify_from_signup(engine: Engine, event: Event) -> Outcome:
    """Save the profile carried by a ``signed_up`` event, on its own."""
    update = profile_from_signup(event)
    return engine.identify(update.customer_id, update.attributes, timezone=update.timezone)


# --- simulation ---------------------------------------------------------------------------------


@attrs.define
class SimulationStats:
    """What one simulation run did. The ``*_seconds`` are wall time, for reporting only."""

    start: datetime
    until: datetime
    events: int = 0
    profiles: int = 0
    ticks: int = 0
    entered: int = 0
    messages: int = 0
    ended: int = 0
    goals: int = 0
    handle_seconds: float = 0.0
    due_seconds: float = 0.0

    def count(self, outcome: Outcome) -> None:
        self.entered += len(outcome.entered)
        self.messages += len(outcome.messages)
        self.ended += len(outcome.ended)
        self.goals += len(outcome.goals)


def run_simulation(
    engine: Engine,
    clock: ManualClock,
    events: Iterable[Event],
    *,
    tick: timedelta = timedelta(minutes=5),
    batch: bool = True,
    until: datetime | None = None,
) -> SimulationStats:
    """Play ``events`` (time-ordered) through ``engine``, moving ``clock`` one ``tick`` at a time.

    For each slice of time the clock moves to the slice's end, the slice's events are handled
    (as batches with ``handle_events``, or one by one with ``handle_event``), then everything due
    runs (``run_due``). Events are therefore seen up to one tick late, like a host that polls a
    queue. The run goes on until ``until`` (default: the tick after the last event) so that
    waits due by then fire; customers still waiting stay in storage for the next run.
    """
    if tick <= timedelta(0):
        raise UsageError(f"tick must be positive, got {tick}")
    start = clock.now()
    stats = SimulationStats(start=start, until=start)
    it = iter(events)
    pending = next(it, None)
    slice_end = start + tick
    while True:
        if until is not None:
            if clock.now() >= until:
                break
            slice_end = min(slice_end, until)
        elif pending is None:
            break
        chunk: list[Event] = []
        # Events older than the clock (a resumed stream) go into the first slice. Of the events
        # at or after ``until`` only the first is read (to see that it is later), none handled.
        while pending is not None and pending.timestamp < slice_end:
            chunk.append(pending)
            pending = next(it, None)
        clock.set(slice_end)
        began = time.perf_counter()
        if chunk:
            stats.events += len(chunk)
            _handle(engine, chunk, batch, stats)
        handled = time.perf_counter()
        stats.count(engine.run_due())
        stats.due_seconds += time.perf_counter() - handled
        stats.handle_seconds += handled - began
        stats.ticks += 1
        slice_end += tick
    stats.until = clock.now()
    return stats


def _handle(engine: Engine, chunk: list[Event], batch: bool, stats: SimulationStats) -> None:
    if batch:
        # Profiles go into the same group transactions as the events, just before the signup.
        items: list[Event | ProfileUpdate] = []
        for event in chunk:
            if event.name == "signed_up":
                items.append(profile_from_signup(event))
                stats.profiles += 1
            items.append(event)
        stats.count(engine.handle_events(items))
        return
    for event in chunk:
        if event.name == "signed_up":
            stats.count(identify_from_signup(engine, event))
            stats.profiles += 1
        stats.count(engine.handle_event(event))


@attrs.frozen
class ShopCursor:
    """Where a shop simulation stopped, kept in storage so the next run continues from it."""

    seed: int
    start: datetime
    until: datetime
    periods: int
    customers: int
    events: int

    def dumps(self) -> str:
        return json.dumps({
            "seed": self.seed, "start": self.start.isoformat(), "until": self.until.isoformat(),
            "periods": self.periods, "customers": self.customers, "events": self.events,
        }, sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> ShopCursor:
        data = json.loads(text)
        return cls(
            seed=int(data["seed"]),
            start=datetime.fromisoformat(data["start"]),
            until=datetime.fromisoformat(data["until"]),
            periods=int(data["periods"]),
            customers=int(data["customers"]),
            events=int(data["events"]),
        )


def load_cursor(storage: Storage) -> ShopCursor | None:
    text = storage.get_setting(CURSOR_KEY)
    return ShopCursor.loads(text) if text else None


@attrs.frozen
class ShopRun:
    """One period of the shop simulation: its stats and the cursor saved after it."""

    stats: SimulationStats
    cursor: ShopCursor
    new_customers: int
    resumed: bool


def simulate_shop(
    engine: Engine,
    clock: ManualClock,
    *,
    customers: int,
    days: float,
    seed: int,
    tick: timedelta = timedelta(minutes=5),
    batch: bool = True,
) -> ShopRun:
    """Simulate the next ``days`` of the shop on ``engine`` (published with the shop's
    definitions), with ``customers`` new sign-ups.

    On a storage that already holds a shop cursor this continues where the last run stopped:
    the clock moves to the cursor, the earlier customers keep shopping, new ones sign up, and the
    seed of the first run is kept (``seed`` is then ignored) so the shop stays the same shop.
    """
    cursor = load_cursor(engine.storage)
    if cursor is None:
        start, period, returning = clock.now(), 0, 0
    else:
        seed, start, period, returning = cursor.seed, cursor.until, cursor.periods, cursor.customers
        if clock.now() < start:
            clock.set(start)
        start = clock.now()
    until = start + timedelta(days=days)
    events = shop_workload(customers, days, seed, start=start, returning=returning, period=period)
    stats = run_simulation(engine, clock, events, tick=tick, batch=batch, until=until)
    new_cursor = ShopCursor(
        seed=seed,
        start=cursor.start if cursor is not None else start,
        until=stats.until,
        periods=period + 1,
        customers=returning + customers,
        events=(cursor.events if cursor is not None else 0) + stats.events,
    )
    engine.storage.put_setting(CURSOR_KEY, new_cursor.dumps())
    return ShopRun(stats, new_cursor, customers, cursor is not None)
