"""Real local servers for the channel tests: SMTP (aiosmtpd) and HTTP (http.server), each on a
free loopback port, with a self-signed certificate for TLS."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for ``localhost`` and 127.0.0.1, and its key (made with openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def client_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


class Mailbox:
    """An aiosmtpd handler: accepts, defers (451), refuses (550) recipients or finds their
    mailbox full (552) as ``mode`` says, and keeps every email it accepted."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.received: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.mail_options: list[list[str]] = []  # the MAIL FROM parameters of each email

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if self.mode == "transient":
            return "451 4.3.0 Mailbox busy, try again later"
        if self.mode == "permanent":
            return "550 5.1.1 No such user"
        if self.mode == "full":
            return "552 5.2.2 Mailbox full"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        email = message_from_bytes(envelope.content, policy=default)
        assert isinstance(email, EmailMessage)
        self.received.append(email)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.mail_options.append(list(envelope.mail_options))
        return "250 2.0.0 Accepted"

    def keys(self) -> list[str]:
        return [str(m["X-Idempotency-Key"]) for m in self.received]

    def reset(self) -> None:
        self.mode = "ok"
        self.received.clear()
        self.envelopes.clear()
        self.mail_options.clear()


class WebhookReceiver:
    """A webhook endpoint on ``http.server`` in a thread, speaking HTTP/1.1 (connections kept
    alive): checks each request's signature, answers as ``mode`` says ("ok", or an HTTP status
    such as "503", or "slow": answer after ``slow_seconds``), after ``delay`` seconds, or
    ``delays[key]`` for a request of that idempotency key, and keeps the requests it
    accepted, once per idempotency key. ``connections`` counts the connections it accepted,
    ``open_connections`` those the client has not closed yet."""

    def __init__(self, secret: str, *, slow_seconds: float = 1.0) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from cjo.channels.webhook import verify_webhook_signature

        self.secret = secret
        self.mode = "ok"
        self.refusal = b"no thanks"  # the body of an answer other than "ok"
        self.slow_seconds = slow_seconds
        self.delay = 0.0
        self.delays: dict[str, float] = {}
        self.connections = 0
        self.open_connections = 0
        counting = threading.Lock()
        self.requests: list[tuple[dict[str, str], bytes]] = []  # every request that arrived
        self.accepted: list[tuple[dict[str, str], bytes]] = []  # delivered, once per key
        self.bad_signatures = 0
        receiver = self
        stop_slow = self._stop_slow = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keeps connections alive: every answer has a length
            disable_nagle_algorithm = True  # headers and body are two writes

            def setup(self) -> None:
                with counting:
                    receiver.connections += 1
                    receiver.open_connections += 1
                super().setup()

            def finish(self) -> None:
                with suppress(OSError):
                    super().finish()
                with counting:
                    receiver.open_connections -= 1

            def handle(self) -> None:
                with suppress(OSError):  # the client cut the connection (a timeout test)
                    super().handle()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.requests.append((headers, body))
                delay = receiver.delays.get(headers.get("idempotency-key", ""), receiver.delay)
                if delay:
                    stop_slow.wait(delay)
                mode = receiver.mode
                if mode == "slow":
                    stop_slow.wait(receiver.slow_seconds)
                    mode = "ok"
                if not verify_webhook_signature(
                    receiver.secret, body, headers.get("x-cjo-timestamp"),
                    headers.get("x-cjo-signature"),
                ):
                    receiver.bad_signatures += 1
                    self._answer(401, b"bad signature")
                    return
                if mode != "ok":
                    self._answer(int(mode), receiver.refusal)
                    return
                key = headers.get("idempotency-key")
                if key not in {h.get("idempotency-key") for h, _ in receiver.accepted}:
                    receiver.accepted.append((headers, body))
                self._answer(200, b"{}", request_id=f"req-{len(receiver.requests)}")

            def _answer(self, code: int, body: bytes, request_id: str | None = None) -> None:
                try:
                    self.send_response(code)
                    if request_id is not None:
                        self.send_header("X-Request-Id", request_id)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet tests

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/cjo"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def keys(self) -> list[str]:
        return [h["idempotency-key"] for h, _ in self.accepted]

    def reset(self) -> None:
        self.mode = "ok"
        self.refusal = b"no thanks"
        self.delay = 0.0
        self.delays.clear()
        self.requests.clear()
        self.accepted.clear()
        self.bad_signatures = 0

    def close(self) -> None:
        self._stop_slow.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@contextmanager
def trickling_server(handle: Callable[[socket.socket, Callable[[bytes], None]], None],
                     pause: float) -> Iterator[int]:
    """A loopback server (its port yielded) that runs ``handle(connection, say)`` on each
    connection, where ``say`` sends its bytes one at a time, ``pause`` seconds apart: each
    byte well within a client's read timeout, the whole reply far beyond it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def say(connection: socket.socket) -> Callable[[bytes], None]:
        def send(data: bytes) -> None:
            for byte in data:
                if stop.wait(pause):
                    raise OSError("stopped")
                connection.sendall(bytes([byte]))
        return send

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection, suppress(OSError):
                handle(connection, say(connection))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        server.close()
        thread.join(5)


def elapsed(action: Callable[[], Any]) -> tuple[Any, float]:
    """What ``action()`` returns, and how many seconds it took."""
    started = time.monotonic()
    return action(), time.monotonic() - started
