"""The demo shop's two journeys written by hand in plain Python: the benchmark's yardstick.

This is what a developer would write without cjo for exactly these two journeys: dictionaries
for state, a heap for timers, f-strings for messages, no storage layer, no transactions, no
generality. It follows the same rules as ``cjo.demo`` (same waits, exits, goals, re-entry, and the
same tick-by-tick clock), so its send counts should match cjo's, and the ratio of their speeds
says what cjo's generality costs.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cjo import Event

WELCOME_WAIT = timedelta(days=2)
WELCOME_GOAL = timedelta(days=14)
CART_WAIT_PURCHASE = timedelta(hours=4)
CART_WAIT_OPEN = timedelta(days=1)
CART_GOAL = timedelta(days=7)
RELEVANT = frozenset({"signed_up", "added_to_cart", "purchased", "email_opened"})


@dataclass(slots=True)
class _Welcome:
    entered_at: datetime
    wake_at: datetime


@dataclass(slots=True)
class _Cart:
    entered_at: datetime
    step: str  # "wait_purchase" or "wait_open"
    wake_at: datetime
    item: Any
    price: Any


@dataclass
class BaselineStats:
    events: int = 0
    ticks: int = 0
    wakeups: int = 0  # enrollments woken by the due phase (not by an event's catch-up)
    handle_seconds: float = 0.0
    due_seconds: float = 0.0
    sent: Counter[str] = field(default_factory=Counter)
    entered: Counter[str] = field(default_factory=Counter)
    ended: Counter[tuple[str, str]] = field(default_factory=Counter)


class ShopBaseline:
    """Both journeys, hard-coded."""

    def __init__(self) -> None:
        self.seen_events: set[str] = set()
        self.profiles: dict[str, dict[str, Any]] = {}
        self.welcomed: set[str] = set()  # re-entry "never"
        self.welcome: dict[str, _Welcome] = {}
        self.cart: dict[str, _Cart] = {}
        self.timers: list[tuple[datetime, int, str, str]] = []
        self._seq = 0
        self.outbox: list[tuple[str, str, dict[str, str]]] = []
        self.stats = BaselineStats()

    # --- the clock loop (the same slicing as cjo.demo.run_simulation) ----------------------

    def run(self, events: Iterable[Event], start: datetime, until: datetime,
            tick: timedelta) -> BaselineStats:
        stats = self.stats
        it = iter(events)
        pending = next(it, None)
        now = start
        slice_end = start + tick
        perf = time.perf_counter
        while now < until:
            slice_end = min(slice_end, until)
            chunk: list[Event] = []
            while pending is not None and pending.timestamp < slice_end:
                chunk.append(pending)
                pending = next(it, None)
            now = slice_end
            began = perf()
            if chunk:
                stats.events += len(chunk)
                for event in chunk:
                    if event.name == "signed_up":
                        self.identify(event, now)
                for event in chunk:
                    self.handle(event, now)
            handled = perf()
            self.run_due(now)
            stats.due_seconds += perf() - handled
            stats.handle_seconds += handled - began
            stats.ticks += 1
            slice_end += tick
        return stats

    def identify(self, event: Event, now: datetime) -> None:
        p = event.properties
        self.profiles[event.customer_id] = {
            "plan": p.get("plan"), "first_name": p.get("first_name"), "country": p.get("country"),
            "timezone": p.get("timezone"),
        }
        self._catch_up(event.customer_id, now)

    def handle(self, event: Event, now: datetime) -> None:
        name = event.name
        if name not in RELEVANT:
            return
        if event.event_id in self.seen_events:
            return
        self.seen_events.add(event.event_id)
        cid = event.customer_id
        self._catch_up(cid, now)
        props = event.properties
        welcome = self.welcome.get(cid)
        cart = self.cart.get(cid)
        # Enrolled customers react first (oldest enrollment first), then triggers.
        for journey in self._by_entry(welcome, cart):
            if journey == "welcome" and welcome is not None and name == "purchased":
                if now - welcome.entered_at <= WELCOME_GOAL:
                    self._end(cid, "welcome", "converted")
            elif journey == "cart" and cart is not None:
                if name == "purchased":
                    status = "converted" if now - cart.entered_at <= CART_GOAL else "exited"
                    self._end(cid, "cart", status)
                elif (name == "email_opened" and cart.step == "wait_open"
                      and props.get("campaign") == "cart_reminder"):
                    self._end(cid, "cart", "completed")
        if name == "signed_up" and cid not in self.welcomed:
            self.welcomed.add(cid)
            self.stats.entered["welcome"] += 1
            self._send(cid, "email", "welcome", None, now)
            w = _Welcome(now, now + WELCOME_WAIT)
            self.welcome[cid] = w
            self._schedule(w.wake_at, cid, "welcome")
        elif name == "added_to_cart" and cid not in self.cart:
            self.stats.entered["cart"] += 1
            c = _Cart(now, "wait_purchase", now + CART_WAIT_PURCHASE, props.get("item"),
                      props.get("price"))
            self.cart[cid] = c
            self._schedule(c.wake_at, cid, "cart")

    @staticmethod
    def _by_entry(welcome: _Welcome | None, cart: _Cart | None) -> list[str]:
        found = [(w.entered_at, "welcome") for w in (welcome,) if w is not None]
        found += [(c.entered_at, "cart") for c in (cart,) if c is not None]
        return [name for _at, name in sorted(found)]

    # --- timers -----------------------------------------------------------------------------

    def _schedule(self, at: datetime, cid: str, journey: str) -> None:
        self._seq += 1
        heapq.heappush(self.timers, (at, self._seq, cid, journey))

    def run_due(self, now: datetime) -> None:
        timers = self.timers
        while timers and timers[0][0] <= now:
            at, _seq, cid, journey = heapq.heappop(timers)
            # A timer is stale when its enrollment ended or moved on (lazy deletion).
            state = self.welcome.get(cid) if journey == "welcome" else self.cart.get(cid)
            if state is None or state.wake_at != at:
                continue
            # Count every enrollment of the customer that is due, as cjo's claim_due does; the
            # catch-up fires them all, leaving their other heap entries stale.
            self.stats.wakeups += sum(
                1 for s in (self.welcome.get(cid), self.cart.get(cid))
                if s is not None and s.wake_at <= now
            )
            self._catch_up(cid, now)

    def _catch_up(self, cid: str, now: datetime) -> None:
        while True:
            w = self.welcome.get(cid)
            c = self.cart.get(cid)
            due = [(s.wake_at, name) for s, name in ((w, "welcome"), (c, "cart"))
                   if s is not None and s.wake_at <= now]
            if not due:
                return
            at, journey = min(due)
            if journey == "welcome":
                self._wake_welcome(cid, at)
            else:
                self._wake_cart(cid, at)

    def _wake_welcome(self, cid: str, at: datetime) -> None:
        profile = self.profiles.get(cid, {})
        channel = "email" if profile.get("plan") == "pro" else "push"
        self._send(cid, channel, "tips", None, at)
        self._end(cid, "welcome", "completed")

    def _wake_cart(self, cid: str, at: datetime) -> None:
        cart = self.cart[cid]
        if cart.step == "wait_purchase":
            self._send(cid, "email", "cart_reminder", cart, at)
            cart.step = "wait_open"
            cart.wake_at = at + CART_WAIT_OPEN
            self._schedule(cart.wake_at, cid, "cart")
        else:
            self._send(cid, "sms", "cart_reminder", cart, at)
            self._end(cid, "cart", "completed")

    # --- effects ----------------------------------------------------------------------------

    def _end(self, cid: str, journey: str, status: str) -> None:
        if journey == "welcome":
            del self.welcome[cid]
        else:
            del self.cart[cid]
        self.stats.ended[(journey, status)] += 1

    def _send(self, cid: str, channel: str, content: str, cart: _Cart | None,
              at: datetime) -> None:
        p = self.profiles.get(cid, {})
        self.outbox.append((cid, channel, _render(content, channel, p, cart)))
        self.stats.sent[channel] += 1


def _render(content: str, channel: str, p: Mapping[str, Any], cart: _Cart | None) -> dict[str, str]:
    hello = p.get("first_name") or "there"
    if content == "welcome":
        return {"subject": f"Welcome to Acme, {hello}!",
                "body": f"Thanks for joining from {p.get('country') or 'afar'}. "
                        f"Your {p.get('plan')} plan is ready."}
    if content == "tips":
        if channel == "email":
            plan = str(p.get("plan") or "")
            return {"subject": f"{p.get('first_name') or 'Hi'}, make the most of "
                               f"{plan.capitalize()}",
                    "body": f"Three things {plan} members love..."}
        return {"title": "Tip of the day", "body": f"{hello}, save items to your wishlist."}
    assert cart is not None
    if channel == "email":
        return {"subject": f"{p.get('first_name') or 'Hi'}, you left something behind",
                "body": f"Your {cart.item} ({cart.price} EUR) is still in your cart."}
    return {"text": f"Still thinking about {cart.item}? It's waiting."}
