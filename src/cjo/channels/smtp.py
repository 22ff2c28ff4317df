"""Email over SMTP, with the standard library only.

Each message is a multipart email built from its rendered fields: ``subject``; ``text`` (or
``body``) as the plain-text part; ``html`` as the HTML alternative (the only part when the
text is absent or blank), with ``preheader`` (when
given) as hidden text at the top of it; ``unsubscribe_url`` (an https or mailto URL) as the
``List-Unsubscribe`` header, with RFC 8058 one-click unsubscription for an https one. It goes
to ``message.recipient["email"]``; a message without one fails permanently.

The idempotency key travels twice: in an ``X-Idempotency-Key`` header, and as the
``Message-ID``, derived from it, so a relay or mailbox that drops repeated Message-IDs sees a
retry as the same email. SMTP has no de-duplication of its own: a retry after a reply that was
lost on the way back can deliver twice.

Classification: a 4xx reply, a dropped or refused connection and a timeout are transient; a
5xx reply (a refused sender or recipient, failed authentication, a rejected message) is
permanent, but for a 552 to the recipient (a full mailbox: RFC 5321 has it taken as 452).
Only a refused recipient, or a missing address, marks the customer unreachable on email
(``DeliveryResult.unreachable``); the other permanent failures are the sender's.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import smtplib
import socket
import ssl
from email.errors import HeaderParseError
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8, Policy, default
from email.utils import format_datetime, formataddr
from html import escape
from typing import Any, Literal

from cjo.channels.base import Channel, DeliveryResult, Message
from cjo.channels.deadline import Deadline
from cjo.described import redacted
from cjo.errors import UsageError

__all__ = ["SmtpChannel", "SmtpSecurity"]

#: An unsubscribe link as List-Unsubscribe carries it (RFC 2369): one URL, printable ASCII
#: without spaces or angle brackets (a header line break or a second URL would be smuggled).
_UNSUBSCRIBE = re.compile(r"(?i:https://|mailto:)[!-;=?-~]+")
#: A header line's limit (RFC 5322: 998 octets, line break excluded).
_MAX_LINE = 998


class _OneLineHeader(UnstructuredHeader, BaseHeader):
    """A header written as it is, on one line: a List-Unsubscribe URL folded the way an
    unstructured header is (into RFC 2047 encoded-words) is no URL to a mailbox provider."""

    def fold(self, *, policy: Policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


_HEADERS = HeaderRegistry()
_HEADERS.map_to_type("list-unsubscribe", _OneLineHeader)
_EMAIL_POLICY = default.clone(header_factory=_HEADERS)

#: ``starttls``: upgrade a plain connection (port 587); ``tls``: TLS from the first byte (port
#: 465); ``none``: no encryption (a relay on the same host, tests).
SmtpSecurity = Literal["starttls", "tls", "none"]

_DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "tls": 465, "none": 25}


class SmtpChannel(Channel):
    """Sends each message as an email through one SMTP server (a new connection per message).

    - ``host``, ``port`` (default by ``security``: 587, 465 or 25), ``security``;
    - ``username`` / ``password``: log in when given;
    - ``from_address`` (and optional ``from_name``): the sender;
    - ``ssl_context``: for ``starttls`` and ``tls`` (default: the system's trusted
      certificates, host names checked);
    - ``message_id_domain``: the right-hand side of generated Message-IDs (default: the
      domain of ``from_address``);
    - ``timeout``: seconds for the whole send, from connecting to the last reply (at most
      half the dispatch lease: 20 by default).
    """

    # Content for it needs the email fields (subject, text or html), whatever its name.
    channel_type = "email"

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        from_address: str,
        from_name: str | None = None,
        security: SmtpSecurity = "starttls",
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        message_id_domain: str | None = None,
        timeout: float = 20.0,
    ) -> None:
        if security not in _DEFAULT_PORTS:
            raise UsageError(f"security must be 'starttls', 'tls' or 'none', got {security!r}")
        # Checked here: a bad setting would otherwise fail every message, each retried as a
        # transient failure until it became a dead letter.
        if not isinstance(host, str):
            raise UsageError(f"host must be a server name or address, got {type(host).__name__}")
        if not host.strip():
            raise UsageError(f"host must be a server name or address, got {host!r}")
        if not _is_host(host):
            raise UsageError(
                f"host must be a server name or address, without a port (give port=) or a "
                f"scheme, got {redacted(host)!r:.120}"
            )
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536
        ):
            raise UsageError(f"port must be an int from 1 to 65535 (or None), got {port!r}")
        if (
            isinstance(timeout, bool) or not isinstance(timeout, int | float)
            or not 0 < timeout < math.inf
        ):
            raise UsageError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if not isinstance(from_address, str):
            raise UsageError(f"from_address must be an email address, got {from_address!r}")
        if "@" not in from_address or _address(from_address) != (from_address, False):
            raise UsageError(
                f"from_address {from_address!r} is not an email address of ASCII characters, "
                "as local@domain (the sender's name goes in from_name)"
            )
        if (username is None) != (password is None):
            raise UsageError("give both username and password, or neither")
        if username is not None and not (isinstance(username, str) and isinstance(password, str)):
            raise UsageError(
                "username and password must be str, got "
                f"{type(username).__name__} and {type(password).__name__}"
            )
        if from_name is not None and not isinstance(from_name, str):
            raise UsageError(f"from_name must be a str (or None), got {from_name!r:.80}")
        if from_name is not None and not from_name.isprintable():
            raise UsageError(f"from_name must be one line of printable text, got {from_name!r:.80}")
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise UsageError(
                f"ssl_context must be an ssl.SSLContext (or None), got {ssl_context!r:.80}"
            )
        if message_id_domain is not None and (
            not isinstance(message_id_domain, str)
            or _address(f"cjo@{message_id_domain}") != (f"cjo@{message_id_domain}", False)
        ):
            raise UsageError(
                f"message_id_domain must be a domain name (or None), got {message_id_domain!r:.80}"
            )
        self.host = host
        self.port = port if port is not None else _DEFAULT_PORTS[security]
        self.security: SmtpSecurity = security
        self.from_address = from_address
        self.from_name = from_name
        self.username = username
        self.password = password
        self.ssl_context = ssl_context
        self.message_id_domain = message_id_domain or from_address.rpartition("@")[2]
        self.timeout = timeout

    def send(self, message: Message) -> DeliveryResult:
        given_to = message.recipient.get("email")
        if not isinstance(given_to, str) or "@" not in given_to:
            return DeliveryResult.permanent(
                f"customer {message.customer_id!r} has no email address (recipient 'email')"
            )
        parsed = _address(given_to)
        if parsed is None:
            return DeliveryResult.permanent(
                f"customer {message.customer_id!r} has no email address (recipient 'email' "
                f"{given_to!r:.200} is not one)"
            )
        to, utf8 = parsed
        try:
            email = self.build(message, to)
        except ValueError as exc:  # a header with a line break...
            return DeliveryResult.permanent(f"cannot build the email: {exc}", unreachable=False)
        deadline = Deadline(self.timeout)
        try:
            with deadline, self._connect(deadline) as smtp:
                options: list[str] = []
                if utf8:
                    smtp.ehlo_or_helo_if_needed()
                    if not smtp.has_extn("smtputf8"):
                        # The server's limit, not the address's: nothing is blocked.
                        return DeliveryResult.permanent(
                            "the server does not take addresses beyond ASCII (no SMTPUTF8): "
                            f"{to!r}", unreachable=False,
                        )
                    options.append("SMTPUTF8")
                # Serialised here with the SMTP policy: send_message's own generator would
                # rewrite body lines starting with "From " (mbox quoting).
                data = email.as_bytes(policy=SMTPUTF8 if utf8 else SMTP)
                if not data.isascii():
                    # A body of 8-bit text (UTF-8 beyond ASCII) is announced, as RFC 6152
                    # asks, to a server that takes it (nearly all do).
                    smtp.ehlo_or_helo_if_needed()
                    if smtp.has_extn("8bitmime"):
                        options.append("BODY=8BITMIME")
                refused = smtp.sendmail(self.from_address, [to], data, mail_options=options)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            return _classified(code, f"recipient refused: {code} {_text(reply)}", recipient=True)
        except smtplib.SMTPResponseException as exc:
            return _classified(exc.smtp_code, f"SMTP {exc.smtp_code} {_text(exc.smtp_error)}",
                               recipient=False)
        except (smtplib.SMTPException, OSError) as exc:  # dropped, refused, timed out, TLS
            if deadline.passed:  # cut by the deadline: the connection was shut down
                return DeliveryResult.transient(f"timed out after {self.timeout}s")
            return DeliveryResult.transient(f"{type(exc).__name__}: {exc}")
        if refused:  # one recipient only: refusing it raises above, but be exact
            code, reply = next(iter(refused.values()))
            return _classified(code, f"recipient refused: {code} {_text(reply)}", recipient=True)
        return DeliveryResult("delivered", provider_id=str(email["Message-ID"]))

    def build(self, message: Message, to: str) -> EmailMessage:
        """The email for ``message`` (public so hosts can inspect or extend it)."""
        fields = message.fields
        email = EmailMessage(policy=_EMAIL_POLICY)
        email["From"] = formataddr((self.from_name, self.from_address)) if self.from_name \
            else self.from_address
        email["To"] = to
        email["Subject"] = fields.get("subject", "")
        # Required by RFC 5322, and not added by every relay: when the message was written,
        # so that every attempt is the same email.
        email["Date"] = format_datetime(message.created_at)
        email["Message-ID"] = self.message_id(message.idempotency_key)
        email["X-Idempotency-Key"] = message.idempotency_key
        text = fields.get("text", fields.get("body"))
        html = fields.get("html")
        if html is not None:
            preheader = fields.get("preheader")
            if preheader:
                # At the top of the body: before a doctype, clients would render the page in
                # quirks mode, or drop it.
                hidden = _PREHEADER.format(escape(preheader))
                body = _BODY_TAG.search(html)
                at = body.end() if body else 0
                html = html[:at] + hidden + html[at:]
            if text is not None and text.strip():
                email.set_content(text)
                email.add_alternative(html, subtype="html")
            else:
                # No empty text/plain alternative: a client that prefers plain text would show
                # it, an empty email, rather than the HTML.
                email.set_content(html, subtype="html")
        else:
            email.set_content(text if text is not None else "")
        if message.locale:  # after set_content, which clears Content-* headers
            email["Content-Language"] = message.locale
        unsubscribe = fields.get("unsubscribe_url", "").strip()
        if unsubscribe:
            if not _UNSUBSCRIBE.fullmatch(unsubscribe):
                raise ValueError(
                    f"unsubscribe_url {unsubscribe!r:.200} is not one https or mailto URL"
                )
            if len("List-Unsubscribe: <>") + len(unsubscribe) > _MAX_LINE:
                raise ValueError(
                    f"unsubscribe_url {unsubscribe!r:.200} is longer than a header line takes "
                    f"({len(unsubscribe)} characters)"
                )
            email["List-Unsubscribe"] = f"<{unsubscribe}>"
            if unsubscribe[:8].lower() == "https://":
                # RFC 8058: mailbox providers unsubscribe with one POST, no page to fill in.
                email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        return email

    def message_id(self, key: str) -> str:
        """The Message-ID of every attempt of the message with idempotency key ``key``."""
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"<cjo.{digest}@{self.message_id_domain}>"

    def _connect(self, deadline: Deadline) -> smtplib.SMTP:
        if self.security == "tls":
            smtp: smtplib.SMTP = _WatchedSmtpSsl(
                deadline, self.host, self.port, timeout=self.timeout, context=self._context()
            )
        else:
            smtp = _Watched(deadline, self.host, self.port, timeout=self.timeout)
        try:
            if self.security == "starttls":
                smtp.starttls(context=self._context())
                if smtp.sock is not None:
                    deadline.watch([smtp.sock])  # the TLS socket that replaced it
            if self.username is not None and self.password is not None:
                smtp.login(self.username, self.password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _context(self) -> ssl.SSLContext:
        return self.ssl_context if self.ssl_context is not None else ssl.create_default_context()


class _Watched(smtplib.SMTP):
    """An SMTP client whose socket is watched by a deadline from the moment it is opened (the
    server's greeting is read in the constructor)."""

    def __init__(self, deadline: Deadline, *args: Any, **kwargs: Any) -> None:
        self.deadline = deadline
        super().__init__(*args, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock: socket.socket = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        self.deadline.watch([sock])
        return sock


class _WatchedSmtpSsl(_Watched, smtplib.SMTP_SSL):
    pass


_BODY_TAG = re.compile(r"<body\b[^>]*>", re.IGNORECASE)

# Shown by mail clients as the inbox preview, hidden in the message itself.
_PREHEADER = (
    '<div style="display:none;max-height:0;overflow:hidden;mso-hide:all">{}</div>\n'
)


def _is_host(host: str) -> bool:
    """A name or an address, not ``host:port`` or a URL (an IPv6 address has colons)."""
    if any(c.isspace() or c in "/@" for c in host):
        return False
    if ":" not in host:
        return True
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _address(address: str) -> tuple[str, bool] | None:
    """``address`` as the envelope and the To header take it: one ``local@domain``, its domain
    in ASCII (IDNA), and whether its local part needs SMTPUTF8 (characters beyond ASCII).
    None if it is not one address (a display name, a list, a stray ``@``...)."""
    local, _, domain = address.strip().rpartition("@")
    try:
        if not domain.isascii():
            domain = domain.encode("idna").decode("ascii")
        # A local part beyond ASCII is checked on a stand-in: the parser refuses it.
        checked = Address(addr_spec=f"{local if local.isascii() else 'x'}@{domain}")
    except (ValueError, IndexError, HeaderParseError):
        return None
    if not checked.username or not checked.domain:
        return None
    if local.isascii():
        return checked.addr_spec, False
    if not local.isprintable() or any(c.isspace() or c in '()<>[]:;@\\,"' for c in local):
        return None
    return f"{local}@{checked.domain}", True


#: In reply to RCPT, a full mailbox (or too many recipients): a later attempt may pass.
_MAILBOX_FULL = 552


def _classified(code: int, error: str, *, recipient: bool) -> DeliveryResult:
    """``recipient``: the reply refuses the recipient (not the sender, login or message)."""
    if recipient and code == _MAILBOX_FULL:  # RFC 5321 4.5.3.1.10: taken as 452
        return DeliveryResult.transient(error)
    if 400 <= code < 500:
        return DeliveryResult.transient(error)
    if 500 <= code < 600:
        return DeliveryResult.permanent(error, unreachable=recipient)
    return DeliveryResult.transient(error)  # not a reply code at all (-1: a dropped line)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
