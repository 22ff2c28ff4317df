"""WebhookChannel against a real local HTTP server (http.server in a thread); the channel
contract on it."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sys
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cjo import (
    ClockError,
    ManualClock,
    SystemClock,
    UsageError,
    WebhookChannel,
    verify_webhook_signature,
)
from cjo.channels.base import Channel, Message
from cjo.channels.webhook import sign_webhook
from cjo.testing import ChannelContract
from tests.channels.servers import WebhookReceiver, elapsed, free_port, trickling_server
from tests.helpers import T0

pytest.importorskip("httpx")

SECRET = "whsec-test-0123456789"


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(SECRET, slow_seconds=2.0)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def hook(receiver: WebhookReceiver) -> WebhookReceiver:
    receiver.reset()
    return receiver


class TestWebhookContract(ChannelContract):
    deduplicates = True  # the receiver keeps one request per Idempotency-Key

    @pytest.fixture(autouse=True)
    def _server(self, hook: WebhookReceiver) -> Iterator[None]:
        self.hook = hook
        self._channels: list[WebhookChannel] = []
        yield
        for channel in self._channels:
            channel.close()

    def make_channel(self) -> Channel:
        channel = WebhookChannel(self.hook.url, SECRET, timeout=5)
        self._channels.append(channel)
        return channel

    def endpoint_succeeds(self) -> None:
        self.hook.mode = "ok"

    def endpoint_fails_transiently(self) -> None:
        self.hook.mode = "503"

    def endpoint_fails_permanently(self) -> None:
        self.hook.mode = "400"

    def received_keys(self) -> list[str]:
        return self.hook.keys()


def message(key: str = "orders:acme:1.x:notify:1", **changes: Any) -> Message:
    values: dict[str, Any] = {
        "idempotency_key": key, "customer_id": "acme", "channel": "webhook",
        "content_id": "order_paid", "journey_id": "orders", "journey_version": 2,
        "step_id": "notify", "enrollment_id": "orders:acme:1.x", "created_at": T0,
        "fields": {"order": "A-1001", "total": "99.5"}, "content_version": 3,
        "recipient": {"email": "ops@acme.example"}, "transactional": True, "locale": "de",
    }
    values.update(changes)
    return Message(**values)


@pytest.fixture
def channel(hook: WebhookReceiver) -> Iterator[WebhookChannel]:
    with WebhookChannel(hook.url, SECRET, timeout=5, headers={"X-Api-Key": "k1"}) as channel:
        yield channel


def test_the_body_is_the_message_as_json(channel: WebhookChannel, hook: WebhookReceiver) -> None:
    result = channel.send(message())
    assert result.status == "delivered", result.error
    assert result.provider_id == "req-1"
    ((headers, body),) = hook.accepted
    assert headers["content-type"] == "application/json"
    assert headers["x-api-key"] == "k1"
    assert headers["idempotency-key"] == "orders:acme:1.x:notify:1"
    assert json.loads(body) == {
        "idempotency_key": "orders:acme:1.x:notify:1", "customer_id": "acme",
        "channel": "webhook", "journey_id": "orders", "journey_version": 2,
        "step_id": "notify", "enrollment_id": "orders:acme:1.x", "content_id": "order_paid",
        "content_version": 3, "fields": {"order": "A-1001", "total": "99.5"},
        "recipient": {"email": "ops@acme.example"}, "locale": "de", "transactional": True,
        "created_at": "2026-03-02T10:00:00+00:00",
    }


def test_the_signature_is_hmac_sha256_of_timestamp_and_body(hook: WebhookReceiver) -> None:
    # The receiver checks the timestamp against its own (system) clock.
    clock = ManualClock(SystemClock().now().replace(microsecond=500000))
    with WebhookChannel(hook.url, SECRET, clock=clock) as channel:
        assert channel.send(message()).ok
    ((headers, body),) = hook.accepted
    assert headers["x-cjo-timestamp"] == str(int(clock.now().timestamp()))
    expected = hmac.new(SECRET.encode(), headers["x-cjo-timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert headers["x-cjo-signature"] == f"v1={expected}"


def test_verify_webhook_signature() -> None:
    body = b'{"a":1}'
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    ts = int(now.timestamp())
    good = sign_webhook(SECRET, ts, body)
    assert verify_webhook_signature(SECRET, body, str(ts), good, now=now)
    assert verify_webhook_signature(SECRET.encode(), body, str(ts), good,
                                    now=now + timedelta(minutes=5))
    assert not verify_webhook_signature(SECRET, body, str(ts), good,
                                        now=now + timedelta(minutes=5, seconds=1)), "replayed"
    assert not verify_webhook_signature(SECRET, body + b" ", str(ts), good, now=now)
    assert not verify_webhook_signature("other", body, str(ts), good, now=now)
    assert not verify_webhook_signature(SECRET, body, str(ts + 1), good, now=now)
    assert not verify_webhook_signature(SECRET, body, "soon", good, now=now)
    assert not verify_webhook_signature(SECRET, body, None, good, now=now)
    assert not verify_webhook_signature(SECRET, body, str(ts), None, now=now)


@pytest.mark.parametrize(("timestamp", "signature"), [
    ("{ts}", "v1=\u00e9"),            # a header decoded as Latin-1 by the receiver's server
    ("{ts}", 5),                      # a framework that hands over something else than text
    ("9" * 400, "{good}"),            # a number no clock reaches
    ("1_7{ts}", "{good}"),            # what int() reads, but not what cjo sends
    ("\u0661\u0662", "{good}"),       # digits of another script
    (" {ts}", "{good}"),
    (5, "{good}"),
])
def test_a_forged_header_is_refused_not_raised(timestamp: object, signature: object) -> None:
    body = b'{"a":1}'
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    ts = int(now.timestamp())
    good = sign_webhook(SECRET, ts, body)

    def fill(value: object) -> object:
        return value.format(ts=ts, good=good) if isinstance(value, str) else value

    assert verify_webhook_signature(
        SECRET, body, fill(timestamp), fill(signature), now=now  # type: ignore[arg-type]
    ) is False


@pytest.mark.parametrize(("arguments", "message"), [
    ({"secret": None}, "secret must be a non-empty str or bytes, got NoneType"),
    ({"secret": ""}, "secret must be a non-empty str or bytes, got str ''"),
    ({"body": "{}"}, "body must be the raw request body (bytes), got str"),
    ({"tolerance": 300}, "tolerance must be a timedelta of zero or more, got int 300"),
    ({"tolerance": -timedelta(seconds=1)}, "tolerance must be a timedelta of zero or more"),
    ({"now": "now"}, "now must be a timezone-aware datetime, got str"),
    ({"now": datetime(2026, 3, 2, 10, 0)}, "now must be timezone-aware, got naive"),
])
def test_a_receiver_set_up_wrong_is_told_so(arguments: dict[str, Any], message: str) -> None:
    """A receiver's own settings are refused by name: refusing every request instead would
    look like forged traffic."""
    call: dict[str, Any] = {"secret": SECRET, "body": b"{}", "timestamp": "1",
                            "signature": "v1=00", "now": datetime(2026, 3, 2, tzinfo=UTC)}
    call.update(arguments)
    with pytest.raises((UsageError, ClockError), match=re.escape(message)):
        verify_webhook_signature(**call)


@pytest.mark.parametrize(
    ("mode", "status"),
    [("500", "transient"), ("503", "transient"), ("429", "transient"), ("408", "transient"),
     ("400", "permanent"), ("404", "permanent"), ("410", "permanent"), ("301", "permanent")],
)
def test_http_status_classification(
    channel: WebhookChannel, hook: WebhookReceiver, mode: str, status: str
) -> None:
    hook.mode = mode
    result = channel.send(message())
    assert result.status == status
    assert result.error is not None
    assert result.error.startswith(f"HTTP {mode} from {hook.url}")
    # Only 410 Gone blames the recipient; other refusals are about the request.
    assert result.unreachable == (status != "permanent" or mode == "410")
    assert hook.accepted == []


def test_a_refusal_says_what_the_endpoint_answered_and_nothing_when_it_said_nothing(
    channel: WebhookChannel, hook: WebhookReceiver,
) -> None:
    hook.mode = "400"
    assert channel.send(message()).error == f"HTTP 400 from {hook.url}: no thanks"
    hook.refusal = b"  "
    assert channel.send(message()).error == f"HTTP 400 from {hook.url}"


def test_a_timeout_is_transient(hook: WebhookReceiver) -> None:
    hook.mode = "slow"
    with WebhookChannel(hook.url, SECRET, timeout=0.2) as channel:
        result = channel.send(message())
    assert result.status == "transient"
    assert result.error is not None
    assert result.error.startswith(f"timed out after 0.2s posting to {hook.url}")


def test_a_refused_connection_is_transient_naming_the_endpoint_without_credentials() -> None:
    port = free_port()
    url = f"http://user:pw@127.0.0.1:{port}/x?token=t0k"
    with WebhookChannel(url, SECRET, timeout=2) as channel:
        result = channel.send(message())
    assert result.status == "transient"
    assert result.error is not None
    assert result.error.startswith(f"ConnectError posting to http://127.0.0.1:{port}/x: ")
    assert "pw" not in result.error and "t0k" not in result.error


def test_a_key_that_is_not_ascii_is_percent_encoded_in_the_header(
    channel: WebhookChannel, hook: WebhookReceiver
) -> None:
    assert channel.send(message("orders:zoë:1.x:notify:1")).ok
    ((headers, body),) = hook.accepted
    assert headers["idempotency-key"] == "orders%3Azo%C3%AB%3A1.x%3Anotify%3A1"
    assert json.loads(body)["idempotency_key"] == "orders:zoë:1.x:notify:1"


def test_construction_checks_its_arguments() -> None:
    with pytest.raises(UsageError, match="http"):
        WebhookChannel("ftp://x", SECRET)
    with pytest.raises(UsageError, match="secret"):
        WebhookChannel("https://x.example", "")
    with pytest.raises(UsageError, match="timeout"):
        WebhookChannel("https://x.example", SECRET, timeout=0)


@pytest.mark.parametrize(("options", "message"), [
    ({"url": 5}, "webhook url must be an http:// or https:// URL, got int"),
    ({"url": "https://"}, "webhook url must name a host, got 'https://'"),
    ({"secret": 5}, "webhook secret must be a str or bytes, got int"),
    ({"timeout": "3"}, "timeout must be a positive number of seconds, got '3'"),
    ({"timeout": float("nan")}, "timeout must be a positive number of seconds, got nan"),
    ({"headers": 5}, "headers must be a mapping of header names to str values, got int"),
    ({"headers": {"X-Key": 5}},
     "headers must be a mapping of header names to str values, got int for 'X-Key'"),
    ({"clock": 5}, "clock must be a cjo Clock, got 5"),
], ids=["url int", "url without host", "secret int", "timeout str", "timeout nan",
        "headers int", "header value int", "clock"])
def test_construction_refuses_what_would_fail_every_send(
    options: dict[str, Any], message: str
) -> None:
    # As SmtpChannel does: checked once here rather than failing every message, each retried
    # as a transient failure until it became a dead letter.
    arguments: dict[str, Any] = {"url": "https://x.example/hook", "secret": SECRET, **options}
    with pytest.raises(UsageError, match=re.escape(message)):
        WebhookChannel(arguments.pop("url"), arguments.pop("secret"), **arguments)


def test_without_httpx_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    # Quoted, as the other extras are: an unquoted [webhook] is a glob to zsh.
    with pytest.raises(ImportError, match=r'pip install "cjo\[webhook\]"'):
        WebhookChannel("https://x.example", SECRET)


def test_a_refusal_does_not_repeat_the_credentials_of_the_url(hook: WebhookReceiver) -> None:
    # The error is stored as the message's last error and shown with dead letters: a password
    # or token in the URL must not end up there.
    url = hook.url.replace("http://", "http://user:pa55word@") + "?token=t0ken"
    hook.mode = "503"
    with WebhookChannel(url, SECRET, timeout=5) as channel:
        result = channel.send(message())
    assert result.status == "transient"
    assert result.error == f"HTTP 503 from {hook.url}: no thanks"
    assert hook.requests[0][0]["authorization"].startswith("Basic ")  # still sent, though


@pytest.mark.parametrize(("options", "shown"), [
    ({"url": "ftp://user:pa55word@hooks.example/in?token=t0ken"}, "'ftp://user:***@hooks.example/in?token=***'"),
    ({"url": "https://user:pa55word@/in?token=t0ken"}, "'https://user:***@/in?token=***'"),
    ({"url": b"https://user:pa55word@hooks.example/in?token=t0ken"}, "bytes"),
    ({"headers": {"Authorization": b"Bearer t0ken"}}, "bytes for 'Authorization'"),
    ({"headers": {"X-Api-Key": 20260302}}, "int for 'X-Api-Key'"),
], ids=["url scheme", "url without host", "url bytes", "header bytes", "header int"])
def test_a_refused_setting_does_not_repeat_its_credentials(
    options: dict[str, Any], shown: str
) -> None:
    # Construction errors reach the host's logs: like a refusal's stored error, they name the
    # URL without its password and query string, and a header by its name only.
    arguments: dict[str, Any] = {"url": "https://x.example/hook", "secret": SECRET, **options}
    with pytest.raises(UsageError) as refused:
        WebhookChannel(arguments.pop("url"), arguments.pop("secret"), **arguments)
    said = str(refused.value)
    assert said.endswith(shown)
    for secret in ("pa55word", "t0ken", "20260302"):
        assert secret not in said


@pytest.mark.parametrize(("headers", "error"), [
    ({"X-Key": "a\r\nX-Forged: 1"}, "header 'X-Key' has a value that is not printable ASCII"),
    ({"X-Key": "clé"}, "header 'X-Key' has a value that is not printable ASCII"),
    ({"X Key": "k"}, "'X Key' is not a header name"),
    ({"": "k"}, "'' is not a header name"),
    ({"content-type": "text/plain"}, "header 'content-type' is set by the channel"),
    ({"Idempotency-Key": "mine"}, "header 'Idempotency-Key' is set by the channel"),
    ({"x-cjo-signature": "v1=00"}, "header 'x-cjo-signature' is set by the channel"),
], ids=["line break", "not ascii", "space in name", "empty name", "content-type",
        "idempotency key", "signature"])
def test_headers_every_request_would_fail_or_lie_with_are_refused_when_built(
    headers: dict[str, str], error: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(error)):
        WebhookChannel("https://x.example/hook", SECRET, headers=headers)


def test_the_timeout_bounds_an_endpoint_that_trickles_its_reply() -> None:
    import socket
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 1000\r\n\r\n")
            while not stop.wait(0.05):  # each byte well within the read timeout
                try:
                    connection.sendall(b"x")
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
        with WebhookChannel(url, SECRET, timeout=0.5) as channel:
            started = time.monotonic()
            result = channel.send(message())
            elapsed = time.monotonic() - started
    finally:
        stop.set()
        server.close()
        thread.join(5)
    assert result.status == "transient"
    assert elapsed < 1.5
    assert result.error is not None and result.error.startswith(f"HTTP 503 from {url}: x")


def test_a_compressed_refusal_is_quoted_decompressed() -> None:
    import gzip

    import httpx

    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, content=gzip.compress(b"busy, retry later"), headers={
            "Content-Encoding": "gzip", "Content-Type": "text/plain; charset=x-unknown"})

    with httpx.Client(transport=httpx.MockTransport(refuse)) as client:
        result = WebhookChannel("https://x.example/hook", SECRET, client=client).send(message())
    assert result.error == "HTTP 503 from https://x.example/hook: busy, retry later"


@pytest.mark.parametrize(("code", "header", "wait"), [
    (429, "120", timedelta(minutes=2)),
    (503, " 0 ", timedelta(0)),
    (503, "Wed, 04 Mar 2026 12:05:00 GMT", timedelta(minutes=5)),   # an HTTP date
    (503, "Wed, 04 Mar 2026 11:00:00 GMT", timedelta(0)),           # already past
    (429, "99999999999999999999", timedelta(seconds=10 * 365 * 86_400)),
    (429, "0000000000060", timedelta(minutes=1)),                   # leading zeros
    (503, "soon", None),                                            # unreadable: the back-off
    (503, "-5", None),
    (503, None, None),
])
def test_a_transient_refusal_passes_on_its_retry_after(
    code: int, header: str | None, wait: timedelta | None
) -> None:
    import httpx

    def refuse(request: httpx.Request) -> httpx.Response:
        headers = {"Retry-After": header} if header is not None else {}
        return httpx.Response(code, content=b"slow down", headers=headers)

    clock = ManualClock(datetime(2026, 3, 4, 12, 0, tzinfo=UTC))
    with httpx.Client(transport=httpx.MockTransport(refuse)) as client:
        result = WebhookChannel("https://x.example/hook", SECRET, client=client,
                                clock=clock).send(message())
    assert (result.status, result.retry_after) == ("transient", wait)


def test_a_permanent_refusal_ignores_retry_after() -> None:
    import httpx

    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, content=b"no", headers={"Retry-After": "60"})

    with httpx.Client(transport=httpx.MockTransport(refuse)) as client:
        result = WebhookChannel("https://x.example/hook", SECRET, client=client).send(message())
    assert (result.status, result.retry_after) == ("permanent", None)


@pytest.mark.parametrize("reused", [False, True], ids=["new connection", "kept alive"])
def test_the_timeout_bounds_an_endpoint_that_trickles_its_status_line_and_headers(
    reused: bool,
) -> None:
    def read_request(lines: Any) -> None:
        length = 0
        while (line := lines.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        lines.read(length)

    def handle(connection: Any, say: Any) -> None:
        lines = connection.makefile("rb")
        read_request(lines)
        if reused:  # a refusal, read whole: its connection is kept alive for the next send
            connection.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy")
            read_request(lines)
        say(b"HTTP/1.1 200 OK\r\nX-Padding: " + b"x" * 200 + b"\r\n\r\n")

    with trickling_server(handle, pause=0.05) as port, \
            WebhookChannel(f"http://127.0.0.1:{port}/hook", SECRET, timeout=0.5) as channel:
        if reused:
            assert channel.send(message()).status == "transient"
        result, took = elapsed(lambda: channel.send(message()))
    assert took < 1.5
    assert (result.status, result.error) == (
        "transient", f"timed out after 0.5s posting to http://127.0.0.1:{port}/hook"
    )


def _within(seconds: float, holds: Any) -> bool:
    import time

    until = time.monotonic() + seconds
    while not holds():
        if time.monotonic() >= until:
            return False
        time.sleep(0.01)
    return True


def test_sequential_sends_reuse_one_connection(
    channel: WebhookChannel, hook: WebhookReceiver
) -> None:
    # Each send used to leave its 2xx reply unread, so the connection was closed rather than
    # kept: a TCP (and, over HTTPS, TLS) handshake for every message.
    before = hook.connections
    for number in range(20):
        result = channel.send(message(f"orders:acme:{number}.x:notify:1"))
        assert result.status == "delivered", result.error
    assert len(hook.accepted) == 20
    assert hook.connections - before == 1


def test_threads_sending_at_once_keep_their_connections_and_close_them_all(
    channel: WebhookChannel, hook: WebhookReceiver
) -> None:
    import threading

    before = hook.connections
    start = threading.Barrier(4)
    results: list[str] = []

    def send(thread: int) -> None:
        start.wait()
        for number in range(25):
            result = channel.send(message(f"orders:t{thread}:{number}.x:notify:1"))
            results.append(result.error or result.status)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == ["delivered"] * 100
    assert hook.connections - before <= 4  # one per send under way at once, at most
    assert hook.open_connections > 0
    channel.close()  # every connection the channel opened, whichever thread it served
    assert _within(2, lambda: hook.open_connections == 0)


def test_one_send_timing_out_does_not_cut_the_sends_of_other_threads(
    hook: WebhookReceiver,
) -> None:
    """A send's deadline shuts down its socket when the timeout passes: only the socket of
    that send, never those of the sends other threads have under way, which would be
    retried (sent twice) although the endpoint received them."""
    import threading
    import time

    hook.delay = 0.2        # every send under way for a while...
    hook.delays["slow"] = 5.0  # ...and one far past the timeout
    results: dict[str, list[str]] = {}
    with WebhookChannel(hook.url, SECRET, timeout=1.0) as channel:
        until = time.monotonic() + 2.0

        def busy(thread: int) -> None:
            number = 0
            while time.monotonic() < until:
                result = channel.send(message(f"orders:t{thread}:{number}.x:notify:1"))
                results.setdefault(f"t{thread}", []).append(result.error or result.status)
                number += 1

        def slow() -> None:
            # A connection kept alive first, so the slow send goes out on it.
            for key in ("warm", "slow"):
                result = channel.send(message(key))
                results.setdefault(key, []).append(result.error or result.status)

        threads = [threading.Thread(target=busy, args=(n,)) for n in range(6)]
        threads.append(threading.Thread(target=slow))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert results.pop("warm") == ["delivered"]
    (slow,) = results.pop("slow")  # cut by the deadline, or by httpx's read timeout
    assert slow.startswith("timed out after 1.0s")
    assert len(results) == 6
    for sent in results.values():
        assert sent and set(sent) == {"delivered"}, sent


def test_threads_opening_and_reusing_connections_at_once_never_raise(
    hook: WebhookReceiver,
) -> None:
    # The sockets of a send used to be found in one set shared by every thread, which a
    # thread could be reading while another added to it ("Set changed size during
    # iteration"). Short switch intervals make such a race likely, if there is one.
    import sys
    import threading

    errors: list[BaseException] = []
    results: list[str] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with WebhookChannel(hook.url, SECRET, timeout=5) as channel:
            def send(thread: int) -> None:
                try:
                    for number in range(30):
                        result = channel.send(message(f"orders:t{thread}:{number}.x:notify:1"))
                        results.append(result.error or result.status)
                except BaseException as exc:  # what the test is about
                    errors.append(exc)

            threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(20)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert results == ["delivered"] * 240


def test_a_2xx_reply_trickling_its_body_is_delivered_within_the_timeout() -> None:
    def handle(connection: Any, say: Any) -> None:
        connection.recv(65536)
        connection.sendall(b"HTTP/1.1 200 OK\r\nX-Request-Id: r1\r\nContent-Length: 1000\r\n\r\n")
        say(b"x" * 1000)

    with trickling_server(handle, pause=0.05) as port, \
            WebhookChannel(f"http://127.0.0.1:{port}/hook", SECRET, timeout=0.5) as channel:
        result, took = elapsed(lambda: channel.send(message()))
    assert (result.status, result.provider_id) == ("delivered", "r1")
    assert took < 1.5


def test_a_2xx_reply_with_an_endless_body_is_not_read_to_its_end() -> None:
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def endless() -> None:
        connection, _ = server.accept()
        with connection, suppress(OSError):
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n")
            while True:
                connection.sendall(b"x" * 65536)

    thread = threading.Thread(target=endless, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
        with WebhookChannel(url, SECRET, timeout=5) as channel:
            result, took = elapsed(lambda: channel.send(message()))
    finally:
        server.close()
        thread.join(5)
    assert result.status == "delivered"
    assert took < 2  # not read until the timeout


def test_a_client_of_the_hosts_keeps_its_connections_too(hook: WebhookReceiver) -> None:
    import httpx

    before = hook.connections
    with httpx.Client() as client:
        channel = WebhookChannel(hook.url, SECRET, timeout=5, client=client)
        for number in range(10):
            assert channel.send(message(f"orders:acme:{number}.x:notify:1")).ok
        channel.close()  # not the host's client
        assert channel.send(message("orders:acme:10.x:notify:1")).ok
    assert hook.connections - before == 1


def test_a_deadline_ended_cuts_nothing() -> None:
    # A send's deadline ends before its connection goes back to the pool: firing then would
    # cut the next send made on it.
    import socket
    import time

    from cjo.channels.deadline import Deadline

    left, right = socket.socketpair()
    with left, right:
        deadline = Deadline(0.05)
        with deadline:
            deadline.watch([left])
        deadline._cut()  # what its timer runs, had it woken just as the block ended
        time.sleep(0.15)
        assert not deadline.passed
        right.sendall(b"still open")
        assert left.recv(16) == b"still open"
        with Deadline(0.05) as cut:
            cut.watch([left])
            time.sleep(0.15)
        assert cut.passed
        assert left.recv(16) == b""  # shut down
