"""The helpers the docs let several threads share (``ManualClock``, ``RecordingChannel``,
``ConsoleChannel``) hold under any interleaving, as they must without the GIL.

Free-threaded CPython may run two threads' steps in any interleaving. CPython with the GIL
switches threads only at some points (a call into Python code, a loop's jump back), so a
helper whose read-modify-write runs in C alone looks atomic there. The tests make such
interleavings happen under the GIL too: they ask for a switch as often as the interpreter
allows (``sys.setswitchinterval``) and give the helpers values whose operations run Python
code (an instant of a ``datetime`` subclass, as date libraries make; an idempotency key of a
``str`` subclass; a stream written character by character), which puts switch points inside
the windows a missing lock would leave open. The count of attempts of ``RecordingChannel``
(``+=`` on an int) still has none under the GIL: only free-threaded CPython can lose one
without the lock.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from cjo import ConsoleChannel, ManualClock, Message, RecordingChannel
from cjo.errors import ClockError
from tests.helpers import T0, together

WRITERS = 6
TICK = timedelta(microseconds=1)


@pytest.fixture(autouse=True)
def switch_often() -> Iterator[None]:
    """Ask the interpreter to switch threads as often as it can (under the GIL: every
    microsecond, at the next switch point)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


class Instant(datetime):
    """A datetime whose arithmetic and comparison run Python code."""

    def __add__(self, other: Any) -> Instant:
        moved = datetime.__add__(self, other)
        return Instant.combine(moved.date(), moved.timetz())

    def __lt__(self, other: Any) -> bool:
        return datetime.__lt__(self, other)


class Key(str):
    """An idempotency key whose hashing and comparison run Python code."""

    __slots__ = ()

    def __hash__(self) -> int:
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        return str.__eq__(self, other)


def message(key: str, customer: str = "c1") -> Message:
    return Message(
        idempotency_key=key, customer_id=customer, channel="email", content_id="hello",
        fields={"subject": f"Hi {key}"}, journey_id="j", journey_version=1, step_id="send",
        enrollment_id=f"j:{customer}:1", created_at=T0,
    )


class Rising:
    """Reads a value again and again (from a thread of its own): it never reads less than
    the time before."""

    def __init__(self, read: Callable[[], Any]) -> None:
        self.read = read
        self.last = read()

    def __call__(self) -> None:
        value = self.read()
        assert value >= self.last, f"read {value} after {self.last}"
        self.last = value


class Growing:
    """Reads what a channel kept (all of it, or one customer's) again and again: each
    reading keeps each key once, and begins with the reading before."""

    def __init__(self, read: Callable[[], list[Message]]) -> None:
        self.read = read
        self.last: list[Message] = []

    def __call__(self) -> None:
        kept = self.read()
        assert len({m.idempotency_key for m in kept}) == len(kept), "a key kept twice"
        assert kept[:len(self.last)] == self.last, "a reading lost what an earlier one had"
        self.last = kept


def writers_and_readers(write: Callable[[int], Any], readers: Sequence[Callable[[], None]],
                        ) -> list[Any]:
    """``write(i)`` in ``WRITERS`` threads and each reader in a loop in a thread of its own
    while they write, all released at once; the writers' results. Errors are raised."""
    busy = threading.Event()
    busy.set()
    left = [WRITERS]
    lock = threading.Lock()

    def work(i: int) -> object:
        if i >= WRITERS:
            read = readers[i - WRITERS]
            while busy.is_set():
                read()
            read()  # once more, when every writer is done
            return None
        try:
            return write(i)
        finally:
            with lock:
                left[0] -= 1
                if not left[0]:
                    busy.clear()

    results = together(WRITERS + len(readers), work)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results[:WRITERS]


# --- ManualClock -------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [T0, Instant.combine(T0.date(), T0.timetz())],
                         ids=["datetime", "datetime subclass"])
def test_concurrent_advances_all_count_and_each_returns_its_own_instant(
    start: datetime,
) -> None:
    clock = ManualClock(start)
    rounds = 1500

    def advance(_i: int) -> list[datetime]:
        return [clock.advance(TICK) for _ in range(rounds)]

    returned = writers_and_readers(advance, [Rising(clock.now), Rising(clock.now)])
    total = WRITERS * rounds
    assert clock.now() == T0 + total * TICK
    # Each advance moved the clock one tick from where the previous one left it.
    every = sorted(at for instants in returned for at in instants)
    assert every == [T0 + n * TICK for n in range(1, total + 1)]
    for instants in returned:  # in the order each thread saw them
        assert instants == sorted(instants)


def test_concurrent_sets_never_move_the_clock_back() -> None:
    # Every thread sets the clock just past what it reads: the sets race for the same instants.
    clock = ManualClock(Instant.combine(T0.date(), T0.timetz()))
    rounds = 3000

    def set_next(_i: int) -> None:
        for _ in range(rounds):
            when = clock.now() + TICK
            try:
                clock.set(when)
            except ClockError:  # another thread moved it past ``when`` meanwhile
                assert clock.now() > when
                continue
            # Set: the clock never reads earlier again (a later set may move it on).
            assert clock.now() >= when, "a set was undone by one compared with an older instant"

    writers_and_readers(set_next, [Rising(clock.now), Rising(clock.now)])
    # Each round of each thread moved the clock past the instant the thread read.
    assert clock.now() >= T0 + rounds * TICK


def test_advance_returns_this_calls_instant_and_refuses_a_negative_step() -> None:
    clock = ManualClock(T0)
    assert clock.advance(minutes=5) == T0 + timedelta(minutes=5) == clock.now()
    with pytest.raises(ClockError, match="negative"):
        clock.advance(-TICK)
    with pytest.raises(ClockError, match="backwards"):
        clock.set(T0)
    assert clock.now() == T0 + timedelta(minutes=5)


# --- RecordingChannel --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [str, Key], ids=["str keys", "str subclass keys"])
def test_concurrent_sends_are_all_counted_and_each_key_kept_once(kind: type[str]) -> None:
    channel = RecordingChannel()
    # Enough that the threads overlap for long: a key's first sends race.
    keys = [kind(f"k{n}") for n in range(20_000)]
    messages = [message(key, customer=f"c{n % 3}") for n, key in enumerate(keys)]

    def send_all(_i: int) -> None:
        # Every thread sends every message, in the same order: attempts of one message race.
        for m in messages:
            assert channel.send(m).provider_id == m.idempotency_key

    writers_and_readers(send_all, [Growing(lambda: channel.messages),
                                   Growing(lambda: channel.for_customer("c1"))])
    assert channel.attempts == WRITERS * len(messages)
    kept = channel.messages
    assert sorted(m.idempotency_key for m in kept) == sorted(keys)
    assert channel.for_customer("c1") == [m for m in kept if m.customer_id == "c1"]


def test_the_messages_read_are_a_copy_and_clear_forgets_everything() -> None:
    channel = RecordingChannel()
    channel.send(message("k1"))
    read = channel.messages
    read.clear()
    assert [m.idempotency_key for m in channel.messages] == ["k1"]
    channel.clear()
    assert (channel.messages, channel.attempts) == ([], 0)
    channel.send(message("k1"))  # its key is forgotten too
    assert (len(channel.messages), channel.attempts) == (1, 1)


# --- ConsoleChannel ----------------------------------------------------------------------------


class CharStream:
    """A stream a host might give: not safe for several writers (each character apart)."""

    def __init__(self) -> None:
        self.chars: list[str] = []

    def write(self, text: str) -> int:
        for char in text:
            self.chars.append(char)
        return len(text)


def test_console_lines_from_several_threads_never_interleave() -> None:
    stream = CharStream()
    channel = ConsoleChannel(stream)  # type: ignore[arg-type]
    rounds = 300

    def send(i: int) -> None:
        for n in range(rounds):
            channel.send(message(f"w{i}-{n}", customer=f"writer{i}"))

    writers_and_readers(send, [])
    lines = "".join(stream.chars).splitlines()
    assert len(lines) == WRITERS * rounds
    for i in range(WRITERS):
        mine = [line for line in lines if f"-> writer{i}:" in line]
        assert mine == [
            f"[{T0.isoformat()}] email -> writer{i}: subject='Hi w{i}-{n}' (j/send)"
            for n in range(rounds)
        ]
