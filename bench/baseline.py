"""The demo shop's three journeys written by hand in plain Python: the benchmark's yardstick.

This is what a developer would write without cjo for exactly these three journeys: dictionaries
for state, a heap for timers, f-strings for messages, no storage layer, no transactions, no
generality. It follows the same rules as ``cjo.demo`` (same waits, exits, goals, re-entry,
inactivity timer, and the same tick-by-tick clock), so its sends, wake-ups and journey outcomes
must match cjo's, and the ratio of their speeds says what cjo's generality costs.

The rules it mirrors, where they are not obvious:

- A customer is created when the engine first handles an input of theirs: in the demo, the
  sign-up's profile update, handled at the end of the tick the sign-up falls in (the simulator
  moves the clock to the slice's end before handling the slice).
- An event reaches the engine only if it can matter to the customer: a trigger event
  (sign-up, cart, purchase), an event a journey they are in waits for (a cart reminder open),
  or any event of a customer with something due by now. Only then does the customer catch up,
  first firing everything of theirs due by now.
- Every wake-up fires at its own instant, earliest first (enrollments before the inactivity
  timer at the same instant); a send at a wake-up is stamped with that instant.
- Goals are measured from entry to the instant the engine handles the purchase (the tick's end);
  inactivity is measured from the purchase's own timestamp. A purchase stamped before the
  instant the win-back trigger last fired (handled a tick late) starts no new quiet spell:
  that firing was its spell's.
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
WIN_BACK_AFTER = timedelta(days=14)
WIN_BACK_WAIT = timedelta(days=3)
WIN_BACK_GOAL = timedelta(days=7)
RELEVANT = frozenset({"signed_up", "added_to_cart", "purchased", "email_opened"})
# Events that start (or feed the trigger of) a journey: they matter to every customer.
TRIGGERS = frozenset({"signed_up", "added_to_cart", "purchased"})


@dataclass(slots=True)
class _Welcome:
    entered_at: datetime
    wake_at: datetime


@dataclass(slots=True)
class _Cart:
    entered_at: datetime
    step: str  # "wait_purchase" or "wait_open"
    since: datetime  # when the current wait began
    wake_at: datetime
    item: Any
    price: Any


@dataclass(slots=True)
class _WinBack:
    entered_at: datetime
    wake_at: datetime


@dataclass
class BaselineStats:
    events: int = 0
    ticks: int = 0
    wakeups: int = 0  # waits and inactivity timers fired by the due phase (not by an event)
    handle_seconds: float = 0.0
    due_seconds: float = 0.0
    sent: Counter[str] = field(default_factory=Counter)
    entered: Counter[str] = field(default_factory=Counter)
    ended: Counter[tuple[str, str]] = field(default_factory=Counter)


class ShopBaseline:
    """The three journeys, hard-coded."""

    def __init__(self) -> None:
        self.seen_events: set[str] = set()
        self.profiles: dict[str, dict[str, Any]] = {}
        self.created: dict[str, datetime] = {}
        self.welcomed: set[str] = set()  # re-entry "never"
        self.welcome: dict[str, _Welcome] = {}
        self.cart: dict[str, _Cart] = {}
        self.win_back: dict[str, _WinBack] = {}
        self.last_purchase: dict[str, datetime] = {}  # by the purchase's own timestamp
        self.inactive_at: dict[str, datetime] = {}  # when the win-back trigger fires
        # The start of the quiet spell the win-back trigger last fired for.
        self.fired_for: dict[str, datetime] = {}
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
                # A sign-up is a customer's first event: saving all the tick's profiles first
                # is the same as saving each just before its sign-up.
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
        cid = event.customer_id
        self.profiles[cid] = {
            "plan": p.get("plan"), "first_name": p.get("first_name"), "country": p.get("country"),
            "timezone": p.get("timezone"),
        }
        if cid not in self.created:
            self._create(cid, now)
        self._catch_up(cid, now)

    def _create(self, cid: str, now: datetime) -> None:
        self.created[cid] = now
        # Never bought: the quiet spell starts at creation.
        at = self.last_purchase.get(cid, now) + WIN_BACK_AFTER
        self.inactive_at[cid] = at
        self._schedule(at, cid, "inactive")

    def handle(self, event: Event, now: datetime) -> None:
        name = event.name
        cid = event.customer_id
        if name not in TRIGGERS and not (
            name == "email_opened" and (cid in self.cart or self._due_by(cid, now))
        ):
            return
        if event.event_id in self.seen_events:
            return
        self.seen_events.add(event.event_id)
        if cid not in self.created:
            self._create(cid, now)
        self._catch_up(cid, now)
        # Enrolled customers react first, then triggers. Each reaction touches only its own
        # journey and sends nothing, so their order does not matter.
        if name == "purchased":
            welcome = self.welcome.get(cid)
            if welcome is not None and now - welcome.entered_at <= WELCOME_GOAL:
                self._end(cid, "welcome", "converted")
            cart = self.cart.get(cid)
            if cart is not None:
                status = "converted" if now - cart.entered_at <= CART_GOAL else "exited"
                self._end(cid, "cart", status)
            wb = self.win_back.get(cid)
            if wb is not None:
                status = "converted" if now - wb.entered_at <= WIN_BACK_GOAL else "exited"
                self._end(cid, "win_back", status)
            # A new quiet spell from the purchase's own timestamp (never backwards).
            seen = self.last_purchase.get(cid)
            if seen is None or event.timestamp > seen:
                self.last_purchase[cid] = event.timestamp
                fired = self.fired_for.get(cid)
                if fired is not None and event.timestamp < fired + WIN_BACK_AFTER:
                    # Stamped before the trigger last fired (handled late): that firing was
                    # this quiet spell's, and the spell fires once.
                    self.fired_for[cid] = event.timestamp
                    self.inactive_at.pop(cid, None)
                else:
                    at = event.timestamp + WIN_BACK_AFTER
                    self.inactive_at[cid] = at
                    self._schedule(at, cid, "inactive")
        elif name == "email_opened":
            cart = self.cart.get(cid)
            if (cart is not None and cart.step == "wait_open"
                    and event.properties.get("campaign") == "cart_reminder"):
                self._end(cid, "cart", "completed")
        elif name == "signed_up":
            if cid not in self.welcomed:
                self.welcomed.add(cid)
                self.stats.entered["welcome"] += 1
                self._send(cid, "email", "welcome", None, now)
                w = _Welcome(now, now + WELCOME_WAIT)
                self.welcome[cid] = w
                self._schedule(w.wake_at, cid, "welcome")
        elif name == "added_to_cart" and cid not in self.cart:
            props = event.properties
            self.stats.entered["cart"] += 1
            c = _Cart(now, "wait_purchase", now, now + CART_WAIT_PURCHASE, props.get("item"),
                      props.get("price"))
            self.cart[cid] = c
            self._schedule(c.wake_at, cid, "cart")

    def _due_by(self, cid: str, now: datetime) -> bool:
        """Whether anything of ``cid`` is due by ``now`` (cjo then lets any event in: the
        wake-up fires first, in the event's catch-up rather than in the due phase)."""
        for state in (self.welcome.get(cid), self.cart.get(cid), self.win_back.get(cid)):
            if state is not None and state.wake_at <= now:
                return True
        at = self.inactive_at.get(cid)
        return at is not None and at <= now

    # --- timers -----------------------------------------------------------------------------

    def _schedule(self, at: datetime, cid: str, kind: str) -> None:
        self._seq += 1
        heapq.heappush(self.timers, (at, self._seq, cid, kind))

    def run_due(self, now: datetime) -> None:
        timers = self.timers
        stats = self.stats
        while timers and timers[0][0] <= now:
            at, _seq, cid, kind = heapq.heappop(timers)
            # A timer is stale when its enrollment ended or moved on, or the inactivity instant
            # moved (lazy deletion).
            if kind == "inactive":
                if self.inactive_at.get(cid) != at:
                    continue
            else:
                state = (self.welcome if kind == "welcome" else
                         self.cart if kind == "cart" else self.win_back).get(cid)
                if state is None or state.wake_at != at:
                    continue
            # The catch-up fires everything of the customer that is due, leaving their other
            # heap entries stale; count what it fires, as cjo's due phase does.
            stats.wakeups += self._catch_up(cid, now)

    def _catch_up(self, cid: str, now: datetime) -> int:
        """Fire everything of ``cid`` due by ``now``, earliest first; returns how many."""
        fired = 0
        while True:
            # (instant, when its wait began, enrollments before the trigger timer, what)
            best: tuple[datetime, datetime, int, str] | None = None
            w = self.welcome.get(cid)
            if w is not None and w.wake_at <= now:
                best = (w.wake_at, w.entered_at, 0, "welcome")
            c = self.cart.get(cid)
            if c is not None and c.wake_at <= now:
                due = (c.wake_at, c.since, 0, "cart")
                best = due if best is None or due < best else best
            b = self.win_back.get(cid)
            if b is not None and b.wake_at <= now:
                due = (b.wake_at, b.entered_at, 0, "win_back")
                best = due if best is None or due < best else best
            i = self.inactive_at.get(cid)
            if i is not None and i <= now:
                due = (i, i, 1, "inactive")
                best = due if best is None or due < best else best
            if best is None:
                return fired
            fired += 1
            at, kind = best[0], best[3]
            if kind == "welcome":
                self._wake_welcome(cid, at)
            elif kind == "cart":
                self._wake_cart(cid, at)
            elif kind == "win_back":
                self._send(cid, "push", "win_back", None, at)
                self._end(cid, "win_back", "completed")
            else:
                self._inactive(cid, at)

    def _inactive(self, cid: str, at: datetime) -> None:
        # The timer is gone until the next purchase: once per quiet spell.
        del self.inactive_at[cid]
        self.fired_for[cid] = at - WIN_BACK_AFTER
        if cid in self.win_back:
            return  # re-entry after exit only
        self.stats.entered["win_back"] += 1
        self._send(cid, "email", "win_back", None, at)
        b = _WinBack(at, at + WIN_BACK_WAIT)
        self.win_back[cid] = b
        self._schedule(b.wake_at, cid, "win_back")

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
            cart.since = at
            cart.wake_at = at + CART_WAIT_OPEN
            self._schedule(cart.wake_at, cid, "cart")
        else:
            self._send(cid, "sms", "cart_reminder", cart, at)
            self._end(cid, "cart", "completed")

    # --- effects ----------------------------------------------------------------------------

    def _end(self, cid: str, journey: str, status: str) -> None:
        if journey == "welcome":
            del self.welcome[cid]
        elif journey == "cart":
            del self.cart[cid]
        else:
            del self.win_back[cid]
        self.stats.ended[(journey, status)] += 1

    def _send(self, cid: str, channel: str, content: str, cart: _Cart | None,
              at: datetime) -> None:
        p = self.profiles.get(cid, {})
        self.outbox.append((cid, channel, _render(cid, content, channel, p, cart)))
        self.stats.sent[channel] += 1


def _render(cid: str, content: str, channel: str, p: Mapping[str, Any],
            cart: _Cart | None) -> dict[str, str]:
    hello = p.get("first_name") or "there"
    if content == "welcome":
        return {"subject": f"Welcome to Acme, {hello}!",
                "text": f"Thanks for joining from {p.get('country') or 'afar'}. "
                        f"Your {p.get('plan')} plan is ready."}
    if content == "tips":
        if channel == "email":
            plan = str(p.get("plan") or "")
            return {"subject": f"{p.get('first_name') or 'Hi'}, make the most of "
                               f"{plan.capitalize()}",
                    "text": f"Three things {plan} members love..."}
        return {"title": "Tip of the day", "body": f"{hello}, save items to your wishlist."}
    if content == "win_back":
        offer = f"{20 if p.get('plan') == 'pro' else 15}% off"
        code = f"BACK-{cid.upper()}"
        if channel == "email":
            return {"subject": f"{p.get('first_name') or 'Hi'}, we miss you",
                    "text": f"It has been a while. Here is {offer} on your next order "
                            f"with code {code}."}
        return {"title": "We miss you", "body": f"{hello}, {offer} with code {code}."}
    assert cart is not None
    if channel == "email":
        return {"subject": f"{p.get('first_name') or 'Hi'}, you left something behind",
                "text": f"Your {cart.item} ({cart.price} EUR) is still in your cart."}
    return {"text": f"Still thinking about {cart.item}? It's waiting."}
