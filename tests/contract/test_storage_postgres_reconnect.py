"""PostgresStorage when the server ends its connections (a restart, a failover,
``pg_terminate_backend``): a call that finds its pooled connection gone before it could commit
anything runs again on a fresh one, and a COMMIT whose answer was lost is reported as such.
A server that cannot be reached fails calls fast.

Each test ends only the backends of its own storage: they carry an ``application_name`` no
other test uses (the server is shared with other test runs). A server going down, and answers
lost on the way back, are played by a TCP proxy of the test's own between its storage and the
server (``Proxy``).

Needs ``CJO_TEST_POSTGRES_DSN`` (skipped without it, failed without it under ``CI=true``).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from cjo import (
    Engine,
    EventTrigger,
    Journey,
    ManualClock,
    RecordingChannel,
    Retention,
    Send,
    Wait,
)
from cjo.channels.base import DeliveryResult
from cjo.errors import CommitOutcomeUnknownError, ConflictError, StorageError
from cjo.storage.base import Delivery, OutboxEntry, Storage
from tests.helpers import SIMPLE_CONTENT, T0, event_with_id

if os.environ.get("CI", "").strip().lower() == "true":
    import psycopg  # under CI a missing driver must fail, not skip
else:
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (cjo[postgres])")

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cjo.storage import postgres as pg_module
from cjo.storage.postgres import REACHABILITY_CHECK_AFTER, PostgresStorage
from tests.contract.test_storage_postgres import message, record, save

H = timedelta(hours=1)
POOL = 3


def _end_sessions(dsn: str, application_name: str) -> int:
    """End every backend of ``application_name`` as a restart would, waiting until each is
    gone; returns how many there were."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            [application_name],
        ).fetchall()
    assert all(ok for (ok,) in rows)
    return len(rows)


def _end_backend(dsn: str, pid: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as admin:
        (ok,) = admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid]).fetchone() or (None,)
    assert ok


@pytest.fixture
def app() -> str:
    return f"cjo-reconnect-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def storage(postgres_dsn: str, postgres_schema: str, app: str) -> Iterator[PostgresStorage]:
    """A storage whose pool holds ``POOL`` connections, all open before the test goes on."""
    storage = PostgresStorage(postgres_dsn, schema=postgres_schema, min_size=POOL,
                              max_size=POOL, application_name=app)
    storage._pool.wait()
    yield storage
    storage.close()


def _due(storage: PostgresStorage) -> list[str]:
    with storage.due_batch(T0, 10, H) as sessions:
        return sorted(sessions)


def _then(done: object, check: Callable[[], object]) -> object:
    """What ``check`` finds after a call that returns nothing (``done``)."""
    assert done is None
    return check()


def _entry(storage: PostgresStorage) -> OutboxEntry:
    entry = storage.outbox_entry("k1")
    assert entry is not None
    return entry


def _seeded(storage: PostgresStorage) -> None:
    """A customer due at T0 with a pending message, a setting and definitions: something for
    every call to find."""
    save(storage, record("c1", wake_at=T0), messages=[message("c1", "k1")])
    storage.put_setting("s", "v")
    storage.append_definitions(0, "{}")


LATER = T0 + timedelta(days=1)  # past the message's lease

# Every call that runs again when its connection was lost before it committed anything: reads,
# claims (a claim whose answer was lost only leases its rows until the lease runs out), writes
# that do the same twice, and transactions before their COMMIT; with what each returns (or
# leaves) on the seeded storage.
CALLS: dict[str, tuple[Callable[[PostgresStorage], object], object]] = {
    "batch": (lambda s: _then(save(s, record("c2")), lambda: s.peek("c2") is not None),
              True),
    "due_batch": (_due, ["c1"]),
    "peek": (lambda s: (state := s.peek("c1")) and state.customer_id, "c1"),
    "peek_many": (lambda s: sorted(s.peek_many(["c1", "c2"])), ["c1"]),
    "claim_due": (lambda s: [d.customer_id for d in s.claim_due(T0, 10, H)], ["c1"]),
    "claim_outbox": (lambda s: [m.idempotency_key for m in s.claim_outbox(LATER, 10, H)],
                     ["k1"]),
    "next_wake_at": (lambda s: s.next_wake_at(), T0),
    "next_outbox_at": (lambda s: s.next_outbox_at() == _entry(s).available_at, True),
    "pending_by_channel": (lambda s: s.pending_by_channel(), {"email": 1}),
    "outbox_entry": (lambda s: _entry(s).status, "pending"),
    "customer_outbox": (lambda s: [e.message.idempotency_key for e in s.customer_outbox("c1")],
                        ["k1"]),
    "defer_outbox": (lambda s: _then(s.defer_outbox("k1", LATER, T0),
                                     lambda: _entry(s).available_at), LATER),
    "release_outbox": (lambda s: _then(s.release_outbox(["k1"], T0),
                                       lambda: _entry(s).available_at), T0),
    "dead_letters": (lambda s: s.dead_letters(10), []),
    "records_set_aside": (lambda s: s.records_set_aside(10), []),
    "definitions_generation": (lambda s: s.definitions_generation(), 1),
    "load_definitions": (lambda s: s.load_definitions(), (1, "{}")),
    "activities": (lambda s: s.activities(T0 - H, T0 + H), []),
    "activity_counts": (lambda s: s.activity_counts("j"), []),
    "active_counts": (lambda s: s.active_counts("j"), {(1, "wait"): 1}),
    "held_counts": (lambda s: s.held_counts("j"), {}),
    "enrolled_customers": (lambda s: s.enrolled_customers("j"), ["c1"]),
    "customer_ids": (lambda s: s.customer_ids(), ["c1"]),
    "segment_members": (lambda s: s.segment_members("seg"), []),
    "segment_count": (lambda s: s.segment_count("seg"), 0),
    "erase_customer": (lambda s: _then(s.erase_customer("c1"), lambda: s.peek("c1")), None),
    "prune": (lambda s: s.prune(LATER, Retention()).definitions, 0),
    "get_setting": (lambda s: s.get_setting("s"), "v"),
    "put_setting": (lambda s: _then(s.put_setting("s", "w"), lambda: s.get_setting("s")),
                    "w"),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_call_on_connections_the_server_ended_runs_on_fresh_ones(
    postgres_dsn: str, storage: PostgresStorage, app: str, call: str
) -> None:
    _seeded(storage)
    assert _end_sessions(postgres_dsn, app) == POOL  # every pooled connection is dead

    run, expected = CALLS[call]
    # The first call meets a dead connection: it runs again, on a live one, without an error.
    assert run(storage) == expected
    # The pool checked its other connections and replaced the dead, rather than have each
    # fail a call of its own.
    stats = storage._pool.get_stats()
    assert stats.get("connections_lost", 0) + stats.get("returns_bad", 0) == POOL


def test_a_due_batch_on_a_dead_connection_claims_and_commits_once(
    postgres_dsn: str, storage: PostgresStorage, app: str
) -> None:
    save(storage, record("c1", wake_at=T0))
    _end_sessions(postgres_dsn, app)
    with storage.due_batch(T0, 10, H) as sessions:
        assert list(sessions) == ["c1"]
        state = sessions["c1"].load()
        assert state is not None
        state.enrollments[0].wake_at = None
        sessions["c1"].save(state, [], [])
    saved = storage.peek("c1")
    assert saved is not None and saved.wake_at is None and saved.revision == 2
    with storage.due_batch(T0 + H, 10, H) as sessions:
        assert list(sessions) == []


def _dead_letter(storage: PostgresStorage) -> None:
    """The seeded storage, and a dead letter ``k2``."""
    _seeded(storage)
    save(storage, record("c3"), messages=[message("c3", "k2")])
    storage.complete_outbox("k2", DeliveryResult.permanent("gone"), T0)


# The writes that must not run twice: a connection found lost before their COMMIT lost their
# transaction, so they run again on a fresh one all the same; with what each returns (or
# leaves) on the storage ``_dead_letter`` seeds.
WRITE_ONCE: dict[str, tuple[Callable[[PostgresStorage], object], object]] = {
    "complete_outbox": (
        lambda s: _then(s.complete_outbox("k1", DeliveryResult.transient("busy"), T0, LATER),
                        lambda: (_entry(s).status, _entry(s).attempts)),
        ("pending", 1)),
    "complete_outbox_many": (
        lambda s: _then(s.complete_outbox_many([Delivery("k1", DeliveryResult())], T0),
                        lambda: (_entry(s).status, _entry(s).attempts)),
        ("delivered", 1)),
    "retry_dead_letter": (lambda s: (s.retry_dead_letter("k2", T0),
                                     [d.message.idempotency_key for d in s.dead_letters(10)]),
                          (True, [])),
    "discard_dead_letter": (lambda s: (s.discard_dead_letter("k2", T0),
                                       s.discard_dead_letter("k2", T0)), (True, False)),
    "append_definitions": (lambda s: (s.append_definitions(1, "{2}"), s.load_definitions()),
                           (2, (2, "{2}"))),
}


@pytest.mark.parametrize("call", sorted(WRITE_ONCE))
def test_a_write_on_connections_the_server_ended_runs_on_fresh_ones(
    postgres_dsn: str, storage: PostgresStorage, app: str, call: str
) -> None:
    _dead_letter(storage)
    assert _end_sessions(postgres_dsn, app) == POOL

    run, expected = WRITE_ONCE[call]
    # Nothing of the write reached the server: not an unknown outcome, no error at all.
    assert run(storage) == expected
    stats = storage._pool.get_stats()
    assert stats.get("connections_lost", 0) + stats.get("returns_bad", 0) == POOL


class Proxy:
    """A TCP proxy to the test server, for one storage: ``stop`` is the server going down as
    far as the storage can tell (connections refused, those open cut), ``start`` it coming
    back on the same port. ``cut(sent, answer)``: the connection whose client sends ``sent``
    next has it delivered, then loses the server's answers; the client sees its connection
    lost once the server has answered with ``answer`` (by then it has acted on what was sent:
    a COMMIT has committed), and ``then`` has run. ``drop(sent)``: the connection whose client
    sends ``sent`` next is lost before the server gets it (the server rolls back)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self._cut: tuple[bytes, bytes] | None = None
        self._then: Callable[[], object] | None = None
        self._drop: bytes | None = None
        self.cuts = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.port = 0
        self.start()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self, sent: bytes, answer: bytes = b"Z\x00\x00\x00\x05",
            then: Callable[[], object] | None = None) -> None:
        """``answer`` is ReadyForQuery by default: the end of the answers up to a Sync."""
        self._cut, self._then = (sent, answer), then

    def drop(self, sent: bytes) -> None:
        self._drop = sent

    def stop(self) -> None:
        if self._listener is not None:
            _hang_up(self._listener)  # a bare close would leave the blocked accept() accepting
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _hang_up(sock)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            # Set to the answer awaited once the server's answers are lost.
            awaited: list[bytes] = []
            threading.Thread(target=self._to_server, args=(client, server, awaited),
                             daemon=True).start()
            threading.Thread(target=self._to_client, args=(server, client, awaited),
                             daemon=True).start()

    def _to_server(self, client: socket.socket, server: socket.socket,
                   awaited: list[bytes]) -> None:
        while data := _recv(client):
            with self._lock:
                if self._drop is not None and self._drop in data:
                    self._drop = None
                    self.cuts += 1
                    _hang_up(client)
                    break
                if self._cut is not None and self._cut[0] in data:
                    awaited.append(self._cut[1])
                    self._cut = None
                    self.cuts += 1
            try:
                server.sendall(data)
            except OSError:
                break
        _hang_up(server)

    def _to_client(self, server: socket.socket, client: socket.socket,
                   awaited: list[bytes]) -> None:
        while data := _recv(server):
            if awaited:
                if awaited[0] in data:
                    # The server acted on what was cut: the client never knows.
                    then, self._then = self._then, None
                    if then is not None:
                        then()
                    break
                continue
            try:
                client.sendall(data)
            except OSError:
                break
        _hang_up(client)
        _hang_up(server)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _hang_up(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def proxy(postgres_dsn: str) -> Iterator[Proxy]:
    params = conninfo_to_dict(postgres_dsn)
    proxy = Proxy(str(params.get("hostaddr") or params.get("host") or "127.0.0.1"),
                  int(params.get("port") or 5432))
    yield proxy
    proxy.stop()


PASSWORD = "not-for-error-messages"


@pytest.fixture
def proxied(
    postgres_dsn: str, postgres_schema: str, proxy: Proxy, app: str
) -> Iterator[PostgresStorage]:
    """A storage that reaches the server through ``proxy``, with a password in its DSN (the
    server takes it or ignores it) and a pool timeout long enough to tell waiting from
    failing fast. No prepared statements: every statement's text goes to the server, for
    ``Proxy.cut`` to find."""
    params = conninfo_to_dict(postgres_dsn)
    dsn = make_conninfo(postgres_dsn, host="127.0.0.1", hostaddr=None, port=proxy.port,
                        password=params.get("password") or PASSWORD, sslmode="disable")
    storage = PostgresStorage(dsn, schema=postgres_schema, min_size=1, max_size=3,
                              timeout=12, application_name=app,
                              connect_kwargs={"prepare_threshold": None})
    yield storage
    storage.close()


def test_a_server_that_refuses_connections_fails_calls_fast(
    proxied: PostgresStorage, proxy: Proxy
) -> None:
    _dead_letter(proxied)
    proxy.stop()
    calls: list[Callable[[], object]] = [
        lambda: proxied.get_setting("s"),
        lambda: proxied.retry_dead_letter("k2", T0),
        lambda: proxied.append_definitions(1, "{2}"),
        lambda: save(proxied, record("c2")),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(StorageError) as raised:
            call()
        # Not the pool's timeout (12 s): about a second, the check's wait.
        assert time.monotonic() - started < 4 * REACHABILITY_CHECK_AFTER
        text = str(raised.value)
        assert text.startswith(
            f"PostgreSQL: the server is unreachable at 127.0.0.1:{proxy.port} (Connection refused)"
        ), text
        assert PASSWORD not in text
        assert not isinstance(raised.value, CommitOutcomeUnknownError)

    proxy.start()  # the server is back: the pool opens connections again, the calls work
    assert proxied.get_setting("s") == "v"
    assert proxied.retry_dead_letter("k2", T0) is True
    assert proxied.append_definitions(1, "{2}") == 2


def _socket_libpq_tries(conninfo: str) -> str:
    """The Unix socket libpq connects to for ``conninfo``, as its own error names it (skips
    when something answers there)."""
    try:
        psycopg.connect(conninfo, connect_timeout=2).close()
    except psycopg.OperationalError as exc:
        found = re.search(r'on socket "([^"]+)" failed', str(exc))
        if found is None:
            pytest.skip(f"libpq does not connect to a Unix socket here: {exc}")
        return found.group(1)
    pytest.skip(f"a server answers at {conninfo}")


@pytest.mark.parametrize("where", [
    "port=5999",  # no host: libpq's default socket directory
    "host=/tmp/cjo-nonexistent-dir port=5999",
], ids=["default-socket", "socket-directory"])
def test_a_socket_where_nothing_listens_fails_calls_fast(where: str) -> None:
    from psycopg_pool import ConnectionPool

    socket_path = _socket_libpq_tries(f"{where} dbname=test")
    conninfo = f"{where} dbname=test password={PASSWORD}"
    # The host's pool: cjo does not try the DSN first, so its first call (the migration)
    # meets the server missing.
    with ConnectionPool(conninfo, min_size=1, max_size=1, timeout=12, open=True) as pool:
        started = time.monotonic()
        with pytest.raises(StorageError) as raised:
            PostgresStorage(pool=pool, schema="cjo_unreachable")
        assert time.monotonic() - started < 4 * REACHABILITY_CHECK_AFTER
    text = str(raised.value)
    assert text.startswith(f"PostgreSQL: the server is unreachable at {socket_path} ("), text
    assert PASSWORD not in text


def test_a_busy_pool_still_waits_for_a_connection(
    postgres_dsn: str, postgres_schema: str, app: str
) -> None:
    # Every connection checked out, the server reachable: a call waits for one until the pool's
    # timeout, as it did before servers were checked (the check finds the server answering).
    storage = PostgresStorage(postgres_dsn, schema=postgres_schema, min_size=1, max_size=1,
                              timeout=3 * REACHABILITY_CHECK_AFTER, application_name=app)
    try:
        storage.put_setting("s", "v")
        answers: list[object] = []

        def get() -> None:
            started = time.monotonic()
            try:
                answers.append(storage.get_setting("s"))
            except StorageError as exc:
                answers.append(exc)
            answers.append(time.monotonic() - started)

        with storage.customer("c1", T0):  # holds the only connection
            waiting = threading.Thread(target=get)
            waiting.start()
            time.sleep(2 * REACHABILITY_CHECK_AFTER)  # past the check
        waiting.join()
        assert answers[0] == "v"
        assert answers[1] > REACHABILITY_CHECK_AFTER

        answers.clear()
        with storage.customer("c1", T0):
            waiting = threading.Thread(target=get)
            waiting.start()
            waiting.join()
        assert isinstance(answers[0], StorageError)
        assert "couldn't get a connection after 3.00 sec" in str(answers[0])
        assert answers[1] >= 3 * REACHABILITY_CHECK_AFTER
    finally:
        storage.close()


def test_delivery_results_whose_commit_answer_was_lost_are_recorded_once(
    proxied: PostgresStorage, proxy: Proxy
) -> None:
    # The results commit with the statement (one round trip), whose answer is lost: they are
    # recorded again on a fresh connection, and an attempt a first run recorded is not counted
    # twice (nor is a delivered message changed).
    for key in ("k1", "k2"):
        save(proxied, record(f"c-{key}"), messages=[message(f"c-{key}", key)])
    proxy.cut(b"attempts = o.attempts + 1")
    _record_k1_retry_and_k2_delivered(proxied, proxy)


def _record_k1_retry_and_k2_delivered(storage: Storage, proxy: Proxy) -> None:
    """Record a transient failure of "k1" and a delivery of "k2" through a cut the caller
    armed, and check each attempt counted once."""
    storage.complete_outbox_many([
        Delivery("k1", DeliveryResult.transient("busy"), LATER),
        Delivery("k2", DeliveryResult()),
    ], T0)
    assert proxy.cuts == 1
    for key, status in (("k1", "pending"), ("k2", "delivered")):
        entry = storage.outbox_entry(key)
        assert entry is not None and (entry.status, entry.attempts) == (status, 1)


UPDATE_OUTBOX = b"attempts = o.attempts + 1"


@pytest.mark.parametrize("lost", ["answer", "request"])
def test_a_direct_result_for_a_message_not_leased_survives_a_lost_commit(
    proxied: PostgresStorage, proxy: Proxy, lost: str
) -> None:
    # The host records a result itself for a message nobody holds leased (released, here).
    # Whether the server got the results and their COMMIT (the answer lost) or not (the
    # request lost), the call runs again and the attempt counts once.
    save(proxied, record("c1"), messages=[message("c1", "k1")])
    proxied.release_outbox(["k1"], T0)
    assert not _entry(proxied).leased
    if lost == "answer":
        proxy.cut(UPDATE_OUTBOX)
    else:
        proxy.drop(UPDATE_OUTBOX)
    proxied.complete_outbox("k1", DeliveryResult.transient("busy"), T0, LATER)
    assert proxy.cuts == 1
    entry = _entry(proxied)
    assert (entry.status, entry.attempts, entry.available_at, entry.last_error,
            entry.leased) == ("pending", 1, LATER, "busy", False)


@pytest.mark.parametrize("lost", ["answer", "request"])
def test_results_for_one_message_twice_survive_a_lost_commit(
    proxied: PostgresStorage, proxy: Proxy, lost: str
) -> None:
    # Two attempts of one message in one call (each follows the one before): both count,
    # once each, and the second's result stands.
    save(proxied, record("c1"), messages=[message("c1", "k1")])
    if lost == "answer":
        proxy.cut(b"attempts = attempts + 1")
    else:
        proxy.drop(b"attempts = attempts + 1")
    proxied.complete_outbox_many([
        Delivery("k1", DeliveryResult.transient("busy"), T0 + H),
        Delivery("k1", DeliveryResult.transient("still busy"), LATER),
    ], T0)
    assert proxy.cuts == 1
    entry = _entry(proxied)
    assert (entry.status, entry.attempts, entry.available_at, entry.last_error) == (
        "pending", 2, LATER, "still busy")


def test_a_result_whose_commit_answer_was_lost_is_not_counted_again_after_a_new_claim(
    postgres_dsn: str, postgres_schema: str, proxied: PostgresStorage, proxy: Proxy
) -> None:
    # The result (a retry, due at once) is committed and its answer lost; before the call runs
    # again, another worker claims the message anew. Running again, the call must neither
    # count its attempt a second time nor end the other worker's lease.
    save(proxied, record("c1"), messages=[message("c1", "k1")])
    other = PostgresStorage(postgres_dsn, schema=postgres_schema, min_size=1, max_size=1)
    claimed: list[list[str]] = []
    try:
        def reclaim() -> None:
            claimed.append([m.idempotency_key for m in other.claim_outbox(T0, 10, H)])

        proxy.cut(UPDATE_OUTBOX, then=reclaim)
        proxied.complete_outbox("k1", DeliveryResult.transient("busy"), T0, T0)
    finally:
        other.close()
    assert proxy.cuts == 1
    assert claimed == [["k1"]]
    entry = _entry(proxied)
    assert (entry.status, entry.attempts, entry.last_error, entry.leased,
            entry.available_at) == ("pending", 1, "busy", True, T0 + H)


def test_a_pool_not_in_autocommit_runs_delivery_results_again_after_a_lost_commit(
    postgres_dsn: str, postgres_schema: str, proxy: Proxy, app: str
) -> None:
    # A host's pool of psycopg's default connections (not in autocommit): its COMMITs are
    # inside the calls' retries as on cjo's own pools, so delivery results whose COMMIT answer
    # was lost are recorded once, without an error; its connections go back as they came.
    from psycopg_pool import ConnectionPool

    dsn = make_conninfo(postgres_dsn, host="127.0.0.1", hostaddr=None, port=proxy.port,
                        sslmode="disable")
    with ConnectionPool(dsn, min_size=1, max_size=2, open=True,
                        kwargs={"application_name": app, "prepare_threshold": None}) as pool:
        storage = PostgresStorage(pool=pool, schema=postgres_schema)
        try:
            for key in ("k1", "k2"):
                save(storage, record(f"c-{key}"), messages=[message(f"c-{key}", key)])
            # A write of one statement commits with it, inside the call's retries: no COMMIT
            # for the pool to send (and lose) once the call is over.
            proxy.cut(b"COMMIT\x00")
            storage.put_setting("s", "v")
            assert storage.get_setting("s") == "v"
            proxy.cut(b"COMMIT\x00")
            _record_k1_retry_and_k2_delivered(storage, proxy)
            # A customer transaction's lost COMMIT says so, as on cjo's own pools.
            proxy.cut(b"COMMIT\x00")
            with pytest.raises(CommitOutcomeUnknownError):
                save(storage, record("c2"))
            assert storage.peek("c2") is not None
        finally:
            storage.close()
        with pool.connection() as one, pool.connection() as two:
            assert (one.autocommit, two.autocommit) == (False, False)


@pytest.mark.parametrize(("sent", "answer"), [
    (b".definitions (generation, data)", b"INSERT 0 1\x00"), (b"COMMIT\x00", b"COMMIT\x00"),
], ids=["insert", "commit"])
def test_definitions_whose_answer_was_lost_are_appended_once(
    proxied: PostgresStorage, proxy: Proxy, sent: bytes, answer: bytes
) -> None:
    # Lost with the INSERT, nothing was committed and it runs again; lost with the COMMIT, it
    # was committed and the compare-and-set recognises its own write rather than refuse it.
    assert proxied.append_definitions(0, "{1}") == 1
    proxy.cut(sent, answer)
    assert proxied.append_definitions(1, '{"g": 2}') == 2
    assert proxy.cuts == 1
    assert proxied.load_definitions() == (2, '{"g": 2}')
    with pytest.raises(ConflictError):
        proxied.append_definitions(1, '{"g": 2}')


def test_a_dead_letter_retry_whose_commit_answer_was_lost_is_not_run_again(
    proxied: PostgresStorage, proxy: Proxy
) -> None:
    _dead_letter(proxied)
    proxy.cut(b"COMMIT\x00")
    with pytest.raises(CommitOutcomeUnknownError, match=(
        r"while committing the retry of a dead letter .*whether it was committed is unknown"
    )):
        proxied.retry_dead_letter("k2", T0)
    assert proxy.cuts == 1
    entry = proxied.outbox_entry("k2")
    assert entry is not None and entry.status == "pending"  # it was, as the server answered


@pytest.fixture
def commit_lost(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> list[int]:
    """Ends a customer transaction's backend after its writes were queued, before its COMMIT
    is sent: the connection is then lost at the COMMIT. Lists the backends it ended."""
    ended: list[int] = []
    flush = pg_module._Txn.flush

    def flush_then_lose_the_connection(txn: Any) -> None:
        flush(txn)
        pid = txn.conn.info.backend_pid
        _end_backend(postgres_dsn, pid)
        ended.append(pid)

    monkeypatch.setattr(pg_module._Txn, "flush", flush_then_lose_the_connection)
    return ended


def test_a_commit_whose_connection_was_lost_is_not_run_again(
    storage: PostgresStorage, commit_lost: list[int]
) -> None:
    with pytest.raises(StorageError) as raised:
        save(storage, record("c1"))
    message = str(raised.value)
    assert "whether it was committed is unknown" in message
    assert "handling the same events again is safe" in message
    assert len(commit_lost) == 1  # not run again
    # The broken connection went back to the pool, which closed it instead of handing it out.
    assert storage._pool.get_stats().get("returns_bad", 0) == 1


def _hello_engine(storage: PostgresStorage) -> tuple[Engine, RecordingChannel]:
    """An engine on ``storage`` whose one journey mails each customer a ``go`` event names."""
    email = RecordingChannel()
    engine = Engine(storage, {"email": email}, ManualClock(T0))  # type: ignore[arg-type]
    engine.publish(content=list(SIMPLE_CONTENT), journeys=[
        Journey("j", trigger=EventTrigger("go"), entry="s", steps={"s": Send("hello", "email")})
    ])
    return engine, email


def test_an_engine_whose_commit_was_lost_handles_the_event_again_once(
    storage: PostgresStorage, commit_lost: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, email = _hello_engine(storage)
    event = event_with_id("go", "ann", T0, "e1")
    with pytest.raises(StorageError, match="whether it was committed is unknown"):
        engine.handle_event(event)
    monkeypatch.undo()  # the server answers again
    engine.handle_event(event)
    engine.handle_event(event)  # handled once, however often it comes
    assert len(email.messages) == 1


def test_handle_events_says_a_group_whose_commit_was_lost_is_perhaps_handled(
    storage: PostgresStorage, commit_lost: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, email = _hello_engine(storage)
    events = [event_with_id("go", c, T0, f"e-{c}") for c in ("ann", "bob")]
    with pytest.raises(CommitOutcomeUnknownError) as raised:
        engine.handle_events(events)
    assert str(raised.value).startswith(
        "item #0: perhaps not handled, nor any item after it (every item before it was); "
        "handling them again from there is safe: PostgreSQL: the connection was lost while "
        "committing"
    )
    monkeypatch.undo()
    engine.handle_events(events)
    assert sorted(m.customer_id for m in email.messages) == ["ann", "bob"]


def test_an_engine_carries_on_when_the_server_ends_its_connections(
    postgres_dsn: str, storage: PostgresStorage, app: str
) -> None:
    clock, email = ManualClock(T0), RecordingChannel()
    engine = Engine(storage, {"email": email}, clock,  # type: ignore[arg-type]
                    dispatch="deferred")
    engine.publish(content=list(SIMPLE_CONTENT), journeys=[Journey(
        "j", trigger=EventTrigger("go"), entry="hello",
        steps={"hello": Send("hello", "email", next="wait"),
               "wait": Wait(H, next="again"),
               "again": Send("hello", "email")},
    )])
    engine.identify("ann", {"email": "ann@example.com"})

    def restart() -> None:
        assert _end_sessions(postgres_dsn, app) >= 1

    restart()
    engine.handle_event(event_with_id("go", "ann", T0, "e1"))
    restart()
    engine.handle_event(event_with_id("go", "ann", T0, "e1"))  # a duplicate: ignored
    restart()
    state = engine.customer_state("ann")
    assert state is not None and [e.step_id for e in state.enrollments] == ["wait"]
    restart()
    assert engine.dispatch_pending() == 1
    clock.advance(hours=1)
    restart()
    engine.run_due()
    restart()
    assert engine.dispatch_pending() == 1
    restart()
    assert engine.dispatch_pending() == 0

    keys = [m.idempotency_key for m in email.messages]
    assert len(keys) == 2 and len(set(keys)) == 2  # both sends, each once
    state = engine.customer_state("ann")
    assert state is not None and state.enrollments == []
    assert [e.status for e in state.ended] == ["completed"]


def test_a_pool_passed_in_is_reconnected_too(
    postgres_dsn: str, postgres_schema: str, app: str
) -> None:
    from psycopg_pool import ConnectionPool

    # The host's own pool, of connections that are not in autocommit (psycopg's default).
    with ConnectionPool(postgres_dsn, min_size=POOL, max_size=POOL, open=True,
                        kwargs={"application_name": app}) as pool:
        pool.wait()
        storage = PostgresStorage(pool=pool, schema=postgres_schema)
        _seeded(storage)
        assert _end_sessions(postgres_dsn, app) == POOL
        save(storage, record("c2"))
        assert sorted(storage.peek_many(["c1", "c2"])) == ["c1", "c2"]
        _end_sessions(postgres_dsn, app)
        assert storage.prune(LATER, Retention()).definitions == 0
        storage.close()
