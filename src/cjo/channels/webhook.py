"""A signed webhook: each message POSTed as JSON to the host's endpoint (needs ``cjo[webhook]``,
which installs ``httpx``).

The request carries:

- the message as a JSON object (``WebhookChannel.payload``): its idempotency key, customer,
  channel, journey (id, version, step, enrollment), content (id, version), rendered ``fields``,
  ``recipient``, ``locale``, ``transactional`` and ``created_at``;
- ``Idempotency-Key``: the message's idempotency key, the same on every attempt (a key that is
  not printable ASCII is percent-encoded; the body carries it as it is);
- ``X-Cjo-Timestamp``: when the attempt was signed, in whole seconds since the epoch;
- ``X-Cjo-Signature``: ``v1=`` and the hex HMAC-SHA256, keyed with the shared secret, of the
  timestamp, a full stop and the body bytes exactly as received.

The receiver recomputes the signature over the raw body before parsing it, compares in constant
time and refuses a timestamp too far from its own clock (a replayed request):
``verify_webhook_signature`` does all three.

Classification: a 2xx reply is delivered; a timeout, a connection error, 408, 429 and any 5xx
are transient; any other reply (a 4xx, a redirect) is permanent. Of those, only 410 Gone
marks the customer unreachable on the channel (``DeliveryResult.unreachable``): the receiver
answers it when the recipient is gone for good (a dead device token, a closed account). A
transient reply's ``Retry-After`` (seconds, or an HTTP date) is passed on as
``DeliveryResult.retry_after``: the next attempt waits at least that long.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

from cjo.channels.base import Channel, DeliveryResult, Message
from cjo.channels.deadline import Deadline
from cjo.clock import Clock, SystemClock, ensure_aware
from cjo.described import given, redacted
from cjo.errors import UsageError, missing_extra

if TYPE_CHECKING:
    import httpx

__all__ = [
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookChannel",
    "sign_webhook",
    "verify_webhook_signature",
]

IDEMPOTENCY_HEADER = "Idempotency-Key"
TIMESTAMP_HEADER = "X-Cjo-Timestamp"
SIGNATURE_HEADER = "X-Cjo-Signature"

#: Set by the channel on every request: a header of the host's by one of these names would
#: send two values, or replace the signed ones.
_OWN_HEADERS = frozenset(
    name.lower() for name in ("Content-Type", IDEMPOTENCY_HEADER, TIMESTAMP_HEADER,
                              SIGNATURE_HEADER)
)
#: An HTTP header name (RFC 9110 token); a value is printable ASCII, spaces and tabs.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
#: How much of a refusal's body is read, and kept in its error.
_SAID = 200
#: How much of an acceptance's body is read (and dropped) so that its connection is kept for
#: the next send; a longer body is left unread and its connection closed.
_DRAINED = 64 * 1024

_TRANSIENT_CODES = frozenset((408, 429))
#: A Retry-After in seconds past this is read as this (the engine cuts waits far shorter).
_MAX_ASKED = 10 * 365 * 86_400
_GONE = 410


def sign_webhook(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Cjo-Signature`` value of ``body`` sent at ``timestamp``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify_webhook_signature(
    secret: str | bytes,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    now: datetime | None = None,
    tolerance: timedelta = timedelta(minutes=5),
) -> bool:
    """For the receiver: True if ``signature`` (the ``X-Cjo-Signature`` header) signs the raw
    ``body`` with ``timestamp`` (the ``X-Cjo-Timestamp`` header) and ``secret``, and the
    timestamp is within ``tolerance`` of ``now`` (default: the system clock).

    The headers come from the network, so any value of them (missing, not text, not ASCII, a
    number no clock reaches) is False, never an exception. The receiver's own settings
    (``secret``, ``body``, ``tolerance``, ``now``) are checked: a wrong one raises
    ``UsageError`` (``ClockError`` for ``now``), as refusing every request would look like
    forged traffic."""
    if not isinstance(secret, str | bytes) or not secret:
        raise UsageError(f"secret must be a non-empty str or bytes, got {given(secret)}")
    if not isinstance(body, bytes | bytearray):
        raise UsageError(
            f"body must be the raw request body (bytes), got {type(body).__name__}"
        )
    if not isinstance(tolerance, timedelta) or tolerance < timedelta(0):
        raise UsageError(f"tolerance must be a timedelta of zero or more, got {given(tolerance)}")
    at = ensure_aware(now, "now") if now is not None else SystemClock().now()
    if not (isinstance(timestamp, str) and isinstance(signature, str)):
        return False
    # Only what the channel sends: ASCII digits, no more than a clock can need.
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= _MAX_DIGITS):
        return False
    sent = int(timestamp)
    if abs(at.timestamp() - sent) > tolerance.total_seconds():
        return False
    expected = sign_webhook(secret, sent, bytes(body)).encode()
    # Compared as bytes: compare_digest refuses str with characters beyond ASCII.
    return hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass"))


#: Seconds since the epoch have 11 digits until the year 5138; 20 leaves room for any clock.
_MAX_DIGITS = 20


def _httpx() -> Any:
    try:
        import httpx  # noqa: PLC0415  (optional: only this channel needs it)
    except ImportError as exc:  # tests/unit/test_packaging.py blocks httpx to reach this
        raise missing_extra("WebhookChannel", "httpx", "webhook", exc) from exc
    return httpx


class WebhookChannel(Channel):
    """POSTs each message, signed, to ``url``.

    - ``secret``: the key shared with the receiver for the HMAC-SHA256 signature;
    - ``timeout``: seconds for the whole send, connecting, sending and reading the reply,
      however slowly it comes (a timeout is transient);
    - ``headers``: more headers for every request (an API key...);
    - ``client``: an ``httpx.Client`` to use (proxies, TLS settings, a mock transport), as it
      is; by default the channel makes its own, one for each send under way at once, and
      ``close()`` closes them;
    - ``clock``: what signs the timestamp (default: the system clock).
    """

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        client: httpx.Client | None = None,
        clock: Clock | None = None,
    ) -> None:
        httpx_module = _httpx()
        # Checked here: a bad setting would otherwise fail every message, each retried as a
        # transient failure until it became a dead letter.
        if not isinstance(url, str):
            raise UsageError(
                f"webhook url must be an http:// or https:// URL, got {type(url).__name__}"
            )
        if not url.startswith(("http://", "https://")):
            raise UsageError(
                f"webhook url must start with http:// or https://, got {redacted(url)!r:.120}"
            )
        try:
            host = httpx_module.URL(url).host
        except httpx_module.InvalidURL as exc:
            raise UsageError(f"webhook url {redacted(url)!r:.120} is not a URL: {exc}") from exc
        if not host:
            raise UsageError(f"webhook url must name a host, got {redacted(url)!r:.120}")
        if not isinstance(secret, str | bytes):
            raise UsageError(
                f"webhook secret must be a str or bytes, got {type(secret).__name__}"
            )
        if not secret:
            raise UsageError("webhook secret must not be empty")
        if (
            isinstance(timeout, bool) or not isinstance(timeout, int | float)
            or not 0 < timeout < math.inf
        ):
            raise UsageError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if headers is not None and not isinstance(headers, Mapping):
            raise UsageError(
                "headers must be a mapping of header names to str values, got "
                f"{type(headers).__name__}"
            )
        for name, value in (headers or {}).items():
            if not isinstance(value, str):
                # The type only: the value may be an API key.
                raise UsageError(
                    "headers must be a mapping of header names to str values, got "
                    f"{type(value).__name__} for {name!r:.80}"
                )
            _check_header(name, value)
        if clock is not None and not callable(getattr(clock, "now", None)):
            raise UsageError(f"clock must be a cjo Clock, got {clock!r:.80}")
        self.url = url
        # Errors are stored with the message: they name the endpoint without the credentials
        # or token its URL may carry.
        self._shown_url = str(
            httpx_module.URL(url).copy_with(userinfo=b"", query=None, fragment=None)
        )
        self._secret = secret
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.clock = clock if clock is not None else SystemClock()
        self._client = client
        # The channel's own clients, each used by one send at a time (see _Client); the idle
        # ones last in, first out, so that the connections in use stay warm.
        self._lock = threading.Lock()
        self._made: set[_Client] = set()
        self._idle: list[_Client] = []
        if client is None:  # the first made now: a setting httpx refuses fails here
            self._give_back(self._new_client())

    def send(self, message: Message) -> DeliveryResult:
        body = json.dumps(self.payload(message), separators=(",", ":"), default=str).encode()
        timestamp = int(self.clock.now().timestamp())
        headers = {
            **self.headers,
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: _header_value(message.idempotency_key),
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign_webhook(self._secret, timestamp, body),
        }
        if self._client is not None:
            return self._send(self._client, None, body, headers)
        own = self._take()
        try:
            return self._send(own.client, own.sockets, body, headers)
        finally:
            self._give_back(own)

    def _send(
        self, client: httpx.Client, sockets: weakref.WeakSet[socket.socket] | None,
        body: bytes, headers: dict[str, str],
    ) -> DeliveryResult:
        httpx_module = _httpx()
        # httpx's timeout bounds each read, not the whole reply: an endpoint sending its
        # status line, headers or body a byte at a time would hold the send past the dispatch
        # lease. So the connection is shut down once the timeout has passed.
        deadline = time.monotonic() + self.timeout
        cut = Deadline(self.timeout)
        try:
            with cut, client.stream(
                "POST", self.url, content=body, headers=headers, timeout=self.timeout,
                extensions={"trace": _tracer(cut, sockets)},
            ) as response:
                try:
                    _watch_reply(cut, response)
                    code = response.status_code
                    if 200 <= code < 300:  # accepted: what the body says does not matter
                        provider_id = response.headers.get("X-Request-Id")
                        # Read, or httpx closes the connection rather than keep it for the
                        # next send (a TCP and TLS handshake for every message).
                        _drain(response, deadline, httpx_module.HTTPError)
                        return DeliveryResult("delivered", provider_id=provider_id)
                    said = _beginning(response, deadline, httpx_module.HTTPError)
                    asked = response.headers.get("Retry-After")
                finally:
                    # Before the connection goes back to its pool, where another send may
                    # take it.
                    cut.end()
        # Each error names the endpoint (without credentials or query), as HTTP replies do: a
        # host with several webhook channels learns which one failed from the error alone.
        except httpx_module.TimeoutException as exc:
            return DeliveryResult.transient(
                f"timed out after {self.timeout}s posting to {self._shown_url}: {exc}"
            )
        except httpx_module.TransportError as exc:
            if cut.passed:
                return DeliveryResult.transient(
                    f"timed out after {self.timeout}s posting to {self._shown_url}"
                )
            return DeliveryResult.transient(
                f"{type(exc).__name__} posting to {self._shown_url}: {exc}"
            )
        error = f"HTTP {code} from {self._shown_url}" + (f": {said}" if said else "")
        if code >= 500 or code in _TRANSIENT_CODES:
            return DeliveryResult.transient(
                error, retry_after=_retry_after(asked, self.clock.now())
            )
        # The endpoint is the host's: only 410 Gone says the customer cannot be reached.
        return DeliveryResult.permanent(error, unreachable=code == _GONE)

    def _take(self) -> _Client:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._new_client()

    def _new_client(self) -> _Client:
        own = _Client(_httpx().Client(timeout=self.timeout))
        with self._lock:
            self._made.add(own)
        return own

    def _give_back(self, own: _Client) -> None:
        with self._lock:
            if own in self._made:
                self._idle.append(own)
                return
        own.client.close()  # close() came during the send

    @staticmethod
    def payload(message: Message) -> dict[str, Any]:
        """The JSON body of ``message``."""
        return {
            "idempotency_key": message.idempotency_key,
            "customer_id": message.customer_id,
            "channel": message.channel,
            "journey_id": message.journey_id,
            "journey_version": message.journey_version,
            "step_id": message.step_id,
            "enrollment_id": message.enrollment_id,
            "content_id": message.content_id,
            "content_version": message.content_version,
            "fields": dict(message.fields),
            "recipient": dict(message.recipient),
            "locale": message.locale,
            "transactional": message.transactional,
            "created_at": message.created_at.isoformat(),
        }

    def close(self) -> None:
        """Close the HTTP clients the channel made, and so their connections (not a client
        it was given). A send after it opens a connection again."""
        with self._lock:
            made, self._made, self._idle = self._made, set(), []
        for own in made:
            own.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Client:
    """One of the channel's own httpx clients, used by one send at a time, and the sockets it
    opened. A send's deadline can so cut every socket of its client: the one the send uses
    and idle ones (opened again when needed), never one another send is using."""

    __slots__ = ("__weakref__", "client", "sockets")

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()


def _tracer(
    deadline: Deadline, sockets: weakref.WeakSet[socket.socket] | None
) -> Callable[[str, dict[str, Any]], None]:
    """An httpx trace hook handing ``deadline`` the sockets of the send: the ones it opens,
    or, on a connection kept alive from an earlier send (which httpx does not name), every
    one in ``sockets``, those its client opened, when that client is the send's alone."""
    opened: list[socket.socket] = []

    def trace(event: str, info: dict[str, Any]) -> None:
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            sock = info["return_value"].get_extra_info("socket")
            if isinstance(sock, socket.socket):
                opened.append(sock)
                if sockets is not None:
                    sockets.add(sock)
                deadline.watch([sock])
        elif (
            event.endswith(".send_request_headers.started") and not opened
            and sockets is not None
        ):
            deadline.watch(list(sockets))

    return trace


def _watch_reply(deadline: Deadline, response: httpx.Response) -> None:
    """Hands ``deadline`` the socket the reply came on, which httpx names once it has the
    status and headers: a host's client, shared with other sends, cannot be cut before
    that on a connection kept alive (see _tracer), but its body still can."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        deadline.watch([sock])


def _check_header(name: object, value: object) -> None:
    if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
        raise UsageError(f"headers: {name!r:.80} is not a header name")
    if name.lower() in _OWN_HEADERS:
        raise UsageError(f"headers: header {name!r} is set by the channel")
    if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
        # Not shown: it may be an API key.
        raise UsageError(
            f"headers: header {name!r} has a value that is not printable ASCII "
            "(a line break, a character beyond ASCII)"
        )


def _beginning(response: httpx.Response, deadline: float, errors: type[Exception]) -> str:
    """The start of a refusal's body, read until ``deadline`` at most: it only explains the
    status, which is already known."""
    data = b""
    try:
        for chunk in response.iter_bytes():  # decompressed
            data += chunk
            if len(data) >= _SAID * 4 or time.monotonic() >= deadline:
                break
    except errors:
        pass  # the status says enough
    try:
        # Not ``response.encoding``: a client's detecting default would need the whole body.
        text = data.decode(response.charset_encoding or "utf-8", "replace")
    except LookupError:  # a charset Python does not know
        text = data.decode("utf-8", "replace")
    return text[:_SAID].strip()


def _drain(response: httpx.Response, deadline: float, errors: type[Exception]) -> None:
    """Reads (and drops) an acceptance's body, so that its connection can be kept, until
    ``deadline`` and up to ``_DRAINED`` bytes; a longer or slower body is left, and its
    connection closed. The message is delivered whatever happens here."""
    read = 0
    try:
        for chunk in response.iter_raw():  # as sent: decompressing would be work for nothing
            read += len(chunk)
            if read > _DRAINED or time.monotonic() >= deadline:
                return
    except errors:
        pass


def _retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A ``Retry-After`` header's wait (RFC 9110: whole seconds, or an HTTP date), from
    ``now``; None when there is none or it cannot be read (the back-off then decides)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        # A huge number is cut to the longest wait the engine grants anyway (after its
        # leading zeros, which would otherwise push its digits past the cut).
        return timedelta(seconds=min(int(value.lstrip("0")[:12] or "0"), _MAX_ASKED))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": a time in UTC with no zone said
        when = when.replace(tzinfo=UTC)
    return max(when - now, timedelta(0))


def _header_value(key: str) -> str:
    if key.isascii() and key.isprintable():
        return key
    return quote(key, safe="")
