"""SmtpChannel against a real SMTP server (aiosmtpd) on the loopback interface: plain, STARTTLS
with login, and implicit TLS; the channel contract on each."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cjo import SmtpChannel, UsageError
from cjo.channels.base import Channel, Message
from cjo.testing import ChannelContract
from tests.channels.servers import (
    Mailbox,
    client_context,
    elapsed,
    free_port,
    self_signed,
    server_context,
    trickling_server,
)
from tests.helpers import T0

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
aiosmtpd_smtp = pytest.importorskip("aiosmtpd.smtp")

USER, PASSWORD = "cjo", "s3cret"


class SmtpServer:
    def __init__(self, mailbox: Mailbox, port: int, controller: Any) -> None:
        self.mailbox = mailbox
        self.port = port
        self.controller = controller


def _start(**kwargs: Any) -> tuple[Mailbox, int, Any]:
    mailbox = Mailbox()
    port = free_port()
    controller = aiosmtpd_controller.Controller(
        mailbox, hostname="127.0.0.1", port=port, **kwargs
    )
    controller.start()
    return mailbox, port, controller


def _login(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
    ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
    # handled=False: aiosmtpd then sends its 535 reply itself.
    return aiosmtpd_smtp.AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def plain_server() -> Iterator[SmtpServer]:
    mailbox, port, controller = _start()
    try:
        yield SmtpServer(mailbox, port, controller)
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def starttls_server(certificate: tuple[Path, Path]) -> Iterator[SmtpServer]:
    mailbox, port, controller = _start(
        tls_context=server_context(*certificate), require_starttls=True,
        authenticator=_login, auth_required=True,
    )
    try:
        yield SmtpServer(mailbox, port, controller)
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def tls_server(certificate: tuple[Path, Path]) -> Iterator[SmtpServer]:
    mailbox, port, controller = _start(ssl_context=server_context(*certificate))
    try:
        yield SmtpServer(mailbox, port, controller)
    finally:
        controller.stop()


def message(key: str = "onboarding:c1:1.x:welcome:1", **changes: Any) -> Message:
    values: dict[str, Any] = {
        "idempotency_key": key, "customer_id": "c1", "channel": "email",
        "content_id": "welcome", "journey_id": "onboarding", "journey_version": 1,
        "step_id": "welcome", "enrollment_id": "onboarding:c1:1.x",
        "created_at": T0,
        "fields": {"subject": "Welcome, Ada", "text": "Hello Ada.",
                   "html": "<p>Hello <b>Ada</b>.</p>", "preheader": "Your first steps"},
        "recipient": {"email": "ada@example.com"},
    }
    values.update(changes)
    return Message(**values)


# --- the contract on each kind of connection -----------------------------------------------


class _SmtpContract(ChannelContract):
    server: SmtpServer

    def endpoint_succeeds(self) -> None:
        self.server.mailbox.mode = "ok"

    def endpoint_fails_transiently(self) -> None:
        self.server.mailbox.mode = "transient"

    def endpoint_fails_permanently(self) -> None:
        self.server.mailbox.mode = "permanent"

    def received_keys(self) -> list[str]:
        return self.server.mailbox.keys()


class TestSmtpPlain(_SmtpContract):
    @pytest.fixture(autouse=True)
    def _server(self, plain_server: SmtpServer) -> None:
        plain_server.mailbox.reset()
        self.server = plain_server

    def make_channel(self) -> Channel:
        return SmtpChannel("127.0.0.1", self.server.port, security="none",
                           from_address="journeys@shop.example", timeout=5)


class TestSmtpStartTlsWithLogin(_SmtpContract):
    @pytest.fixture(autouse=True)
    def _server(self, starttls_server: SmtpServer, certificate: tuple[Path, Path]) -> None:
        starttls_server.mailbox.reset()
        self.server = starttls_server
        self.cert = certificate[0]

    def make_channel(self) -> Channel:
        return SmtpChannel("localhost", self.server.port, security="starttls",
                           username=USER, password=PASSWORD,
                           ssl_context=client_context(self.cert),
                           from_address="journeys@shop.example", timeout=5)


class TestSmtpImplicitTls(_SmtpContract):
    @pytest.fixture(autouse=True)
    def _server(self, tls_server: SmtpServer, certificate: tuple[Path, Path]) -> None:
        tls_server.mailbox.reset()
        self.server = tls_server
        self.cert = certificate[0]

    def make_channel(self) -> Channel:
        return SmtpChannel("localhost", self.server.port, security="tls",
                           ssl_context=client_context(self.cert),
                           from_address="journeys@shop.example", timeout=5)


# --- what the email looks like -------------------------------------------------------------


@pytest.fixture
def mailbox(plain_server: SmtpServer) -> Mailbox:
    plain_server.mailbox.reset()
    return plain_server.mailbox


@pytest.fixture
def channel(plain_server: SmtpServer) -> SmtpChannel:
    return SmtpChannel("127.0.0.1", plain_server.port, security="none",
                       from_address="journeys@shop.example", from_name="Shop Journeys",
                       timeout=5)


def test_the_email_is_multipart_text_and_html(channel: SmtpChannel, mailbox: Mailbox) -> None:
    result = channel.send(message(locale="en-GB"))
    assert result.status == "delivered", result.error
    (email,) = mailbox.received
    assert mailbox.envelopes == [("journeys@shop.example", ["ada@example.com"])]
    assert email["Subject"] == "Welcome, Ada"
    assert email["From"] == "Shop Journeys <journeys@shop.example>"
    assert email["To"] == "ada@example.com"
    assert email["Content-Language"] == "en-GB"
    assert email.get_content_type() == "multipart/alternative"
    text = email.get_body(("plain",))
    html = email.get_body(("html",))
    assert text is not None
    assert html is not None
    assert text.get_content().strip() == "Hello Ada."
    body = html.get_content()
    assert body.index("Your first steps") < body.index("<p>Hello <b>Ada</b>.</p>")
    assert "display:none" in body.split("Your first steps")[0], "the preheader is hidden"


@pytest.mark.parametrize("text", [None, "", " \n"])
def test_an_html_only_email_has_no_empty_plain_text_part(
    channel: SmtpChannel, mailbox: Mailbox, text: str | None
) -> None:
    # An empty text/plain alternative is what a client that prefers plain text shows: nothing.
    fields = {"subject": "Hi", "html": "<p>Hello <b>Ada</b>.</p>", "preheader": "Psst"}
    if text is not None:
        fields["text"] = text
    assert channel.send(message(fields=fields)).ok
    (email,) = mailbox.received
    assert email.get_content_type() == "text/html"
    body = email.get_content()
    assert body.index("Psst") < body.index("<p>Hello <b>Ada</b>.</p>")


def test_the_idempotency_key_is_a_header_and_the_message_id(
    channel: SmtpChannel, mailbox: Mailbox
) -> None:
    first = channel.send(message())
    again = channel.send(message())
    other = channel.send(message("onboarding:c1:1.x:welcome:2"))
    emails = mailbox.received
    assert [str(e["X-Idempotency-Key"]) for e in emails] == [
        "onboarding:c1:1.x:welcome:1", "onboarding:c1:1.x:welcome:1",
        "onboarding:c1:1.x:welcome:2",
    ]
    ids = [str(e["Message-ID"]) for e in emails]
    assert ids[0] == ids[1] != ids[2], "a retry carries the same Message-ID"
    assert ids[0].startswith("<cjo.")
    assert ids[0].endswith("@shop.example>")
    assert first.provider_id == again.provider_id == ids[0]
    assert other.provider_id == ids[2]


def test_text_only_and_body_field(channel: SmtpChannel, mailbox: Mailbox) -> None:
    assert channel.send(message(fields={"subject": "Hi", "body": "From body."})).ok
    (email,) = mailbox.received
    assert email.get_content_type() == "text/plain"
    assert email.get_content().strip() == "From body."


def test_no_email_address_is_permanent(channel: SmtpChannel, mailbox: Mailbox) -> None:
    for recipient in ({}, {"email": None}, {"email": "not an address"}):
        result = channel.send(message(recipient=recipient))
        assert result.status == "permanent"
        assert result.error is not None
        assert "no email address" in result.error
        assert result.unreachable
    assert mailbox.received == []


def test_a_header_with_a_line_break_is_permanent(channel: SmtpChannel, mailbox: Mailbox) -> None:
    result = channel.send(message(fields={"subject": "Hi\r\nBcc: x@evil.example", "text": "x"}))
    assert result.status == "permanent"
    assert not result.unreachable  # the content is at fault, not the address
    assert mailbox.received == []


def test_4xx_is_transient_and_5xx_permanent(channel: SmtpChannel, mailbox: Mailbox) -> None:
    mailbox.mode = "transient"
    result = channel.send(message())
    assert (result.status, result.error) == (
        "transient", "recipient refused: 451 4.3.0 Mailbox busy, try again later"
    )
    mailbox.mode = "permanent"
    result = channel.send(message())
    assert (result.status, result.error, result.unreachable) == (
        "permanent", "recipient refused: 550 5.1.1 No such user", True
    )


def test_connection_errors_are_transient() -> None:
    channel = SmtpChannel("127.0.0.1", free_port(), security="none",
                          from_address="journeys@shop.example", timeout=2)
    result = channel.send(message())
    assert result.status == "transient"
    assert result.error is not None
    assert "Connection" in result.error or "refused" in result.error


def test_a_wrong_password_is_permanent(
    starttls_server: SmtpServer, certificate: tuple[Path, Path]
) -> None:
    starttls_server.mailbox.reset()
    channel = SmtpChannel("localhost", starttls_server.port, username=USER, password="wrong",
                          ssl_context=client_context(certificate[0]),
                          from_address="journeys@shop.example", timeout=5)
    result = channel.send(message())
    assert result.status == "permanent"
    assert result.error is not None
    assert result.error.startswith("SMTP 535")
    assert not result.unreachable  # the sender's login, not the customer's address
    assert starttls_server.mailbox.received == []


def test_an_untrusted_certificate_is_transient(starttls_server: SmtpServer) -> None:
    channel = SmtpChannel("localhost", starttls_server.port, username=USER, password=PASSWORD,
                          from_address="journeys@shop.example", timeout=5)
    result = channel.send(message())
    assert result.status == "transient"
    assert result.error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in result.error


def test_construction_checks_its_arguments() -> None:
    assert SmtpChannel("mail.example", from_address="a@b.example").port == 587
    assert SmtpChannel("mail.example", from_address="a@b.example", security="tls").port == 465
    with pytest.raises(UsageError, match="security"):
        SmtpChannel("mail.example", from_address="a@b.example", security="ssl")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="from_address"):
        SmtpChannel("mail.example", from_address="nobody")
    with pytest.raises(UsageError, match="username and password"):
        SmtpChannel("mail.example", from_address="a@b.example", username="u")


@pytest.mark.parametrize(("options", "message"), [
    ({"port": "25"}, "port must be an int from 1 to 65535"),
    ({"port": 70000}, "port must be an int from 1 to 65535"),
    ({"timeout": -1}, "timeout must be a positive number of seconds"),
    ({"timeout": 0}, "timeout must be a positive number of seconds"),
    ({"timeout": float("nan")}, "timeout must be a positive number of seconds"),
    ({"host": ""}, "host must be a server name or address"),
    ({"from_address": None}, "from_address must be an email address"),
    ({"from_name": 5}, "from_name must be a str \\(or None\\), got 5"),
    ({"ssl_context": True}, "ssl_context must be an ssl.SSLContext \\(or None\\), got True"),
    ({"message_id_domain": 5}, "message_id_domain must be a domain name \\(or None\\), got 5"),
    ({"username": 5, "password": "p"}, "username and password must be str, got int and str"),
], ids=["port str", "port range", "negative timeout", "zero timeout", "nan timeout", "host",
        "from_address None", "from_name", "ssl_context", "message_id_domain", "username"])
def test_settings_every_message_would_fail_on_are_refused_when_built(
    options: dict[str, Any], message: str
) -> None:
    # Each would otherwise fail every message as a transient error, until a dead letter.
    arguments: dict[str, Any] = {"host": "mail.example", "from_address": "a@b.example", **options}
    with pytest.raises(UsageError, match=message):
        SmtpChannel(arguments.pop("host"), **arguments)


@pytest.mark.parametrize("address", ["ada@", "@example.com", "ada@x@example.com",
                                     "Ada <ada@example.com>", "ada@example.com, eve@example.com",
                                     "ada@exam ple.com"])
def test_an_address_that_is_not_one_is_permanent_and_blames_it(
    channel: SmtpChannel, mailbox: Mailbox, address: str
) -> None:
    result = channel.send(message(recipient={"email": address}))
    assert (result.status, result.unreachable) == ("permanent", True)
    assert result.error == (
        f"customer 'c1' has no email address (recipient 'email' {address!r} is not one)"
    )
    assert mailbox.received == []


def test_a_domain_beyond_ascii_is_sent_in_its_ascii_form(
    channel: SmtpChannel, mailbox: Mailbox
) -> None:
    assert channel.send(message(recipient={"email": "ada@exämple.de"})).ok
    (email,) = mailbox.received
    assert mailbox.envelopes == [("journeys@shop.example", ["ada@xn--exmple-cua.de"])]
    assert email["To"] == "ada@xn--exmple-cua.de"


def test_a_local_part_beyond_ascii_needs_a_server_with_smtputf8(
    channel: SmtpChannel, mailbox: Mailbox
) -> None:
    assert channel.send(message(recipient={"email": "zoë@example.com"})).ok
    (email,) = mailbox.received
    assert mailbox.envelopes == [("journeys@shop.example", ["zoë@example.com"])]
    assert email["To"] == "zoë@example.com"
    ascii_mailbox, port, controller = _start(enable_SMTPUTF8=False)
    try:
        ascii_only = SmtpChannel("127.0.0.1", port, security="none",
                                 from_address="journeys@shop.example", timeout=5)
        result = ascii_only.send(message(recipient={"email": "zoë@example.com"}))
    finally:
        controller.stop()
    assert (result.status, result.unreachable) == ("permanent", False)  # the server's limit
    assert result.error == (
        "the server does not take addresses beyond ASCII (no SMTPUTF8): 'zoë@example.com'"
    )
    assert ascii_mailbox.received == []


@pytest.mark.parametrize(("options", "error"), [
    ({"from_address": "journeys@shop.example\r\nBcc: eve@example.com"},
     "from_address 'journeys@shop.example\\r\\nBcc: eve@example.com' is not an email address"),
    ({"from_address": "Shop <journeys@shop.example>"},
     "from_address 'Shop <journeys@shop.example>' is not an email address"),
    ({"from_address": "jörn@shop.example"}, "from_address 'jörn@shop.example' is not an email "
     "address of ASCII characters"),
    ({"from_name": "Shop\r\nBcc: eve@example.com"}, "from_name must be one line"),
    ({"message_id_domain": "shop.example>\r\nX: y"}, "message_id_domain must be a domain name"),
    ({"host": "mail.example:25"}, "host must be a server name or address, without a port"),
    ({"host": "smtp://mail.example"}, "host must be a server name or address, without a port"),
], ids=["from_address line break", "from_address with name", "from_address not ascii",
        "from_name line break", "message_id_domain", "host with port", "host as url"])
def test_settings_no_email_could_be_built_or_sent_with_are_refused_when_built(
    options: dict[str, Any], error: str
) -> None:
    arguments: dict[str, Any] = {"host": "mail.example", "from_address": "a@b.example", **options}
    with pytest.raises(UsageError, match=re.escape(error)):
        SmtpChannel(arguments.pop("host"), **arguments)


@pytest.mark.parametrize(("host", "shown"), [
    ("smtp://journeys:pa55word@mail.example:587", "'smtp://journeys:***@mail.example:587'"),
    ("journeys:pa55word@mail.example", "'journeys:***@mail.example'"),
    ("smtps://mail.example?password=pa55word", "'smtps://mail.example?password=***'"),
], ids=["url", "userinfo", "query"])
def test_a_refused_host_does_not_repeat_its_credentials(host: str, shown: str) -> None:
    # A host pasted from a connection URL may carry the password: the error reaches logs.
    with pytest.raises(UsageError) as refused:
        SmtpChannel(host, from_address="a@b.example")
    assert str(refused.value).endswith(f"got {shown}")
    assert "pa55word" not in str(refused.value)


def test_an_ipv6_host_is_not_taken_for_a_port() -> None:
    assert SmtpChannel("::1", from_address="a@b.example").host == "::1"


def test_the_email_has_the_date_it_was_written(channel: SmtpChannel, mailbox: Mailbox) -> None:
    # RFC 5322 requires a Date; relays do not all add one. Every attempt carries the same.
    assert channel.send(message()).ok
    (email,) = mailbox.received
    assert email["Date"].datetime == T0


def test_the_preheader_goes_inside_the_body_of_a_whole_html_document(
    channel: SmtpChannel, mailbox: Mailbox
) -> None:
    # Before the doctype, it would put mail clients in quirks mode (or be dropped).
    document = ('<!DOCTYPE html>\n<html><head><title>Hi</title></head>\n'
                '<BODY class="mail">\n<p>Hello Ada.</p></BODY></html>')
    fields = {"subject": "Hi", "html": document, "preheader": "Your first steps"}
    assert channel.send(message(fields=fields)).ok
    (email,) = mailbox.received
    html = email.get_body(("html",))
    assert html is not None
    body = html.get_content().replace("\r\n", "\n")  # as it came off the wire
    assert body.startswith("<!DOCTYPE html>\n<html><head><title>Hi</title></head>\n"
                           '<BODY class="mail"><div style="display:none')
    assert body.index("Your first steps") < body.index("<p>Hello Ada.</p>")


def test_a_full_mailbox_is_transient(channel: SmtpChannel, mailbox: Mailbox) -> None:
    # RFC 5321 (4.5.3.1.10): a 552 in reply to RCPT is to be taken as 452; blocking the
    # customer's email for a full mailbox would lose every later message.
    mailbox.mode = "full"
    result = channel.send(message())
    assert (result.status, result.error) == (
        "transient", "recipient refused: 552 5.2.2 Mailbox full"
    )


def test_a_body_beyond_ascii_is_announced_as_8bit(channel: SmtpChannel, mailbox: Mailbox) -> None:
    """RFC 6152: 8-bit text goes with BODY=8BITMIME; an ASCII email needs no parameter."""
    assert channel.send(message()).ok
    fields = {"subject": "Bienvenue", "text": "Déjà là", "html": "<p>Déjà là</p>"}
    assert channel.send(message(key="onboarding:c1:1.x:welcome:2", fields=fields)).ok
    body = [[o for o in options if o.startswith("BODY=")] for options in mailbox.mail_options]
    assert body == [[], ["BODY=8BITMIME"]]
    assert "Déjà là" in mailbox.received[1].get_body(("plain",)).get_content()


@pytest.mark.parametrize(("url", "post"), [
    ("https://shop.example/unsubscribe?c=c1&t=news", True),
    ("mailto:unsubscribe@shop.example?subject=c1", False),
    ("HTTPS://shop.example/u/c1", True),
])
def test_an_unsubscribe_url_becomes_list_unsubscribe(
    channel: SmtpChannel, mailbox: Mailbox, url: str, post: bool
) -> None:
    fields = {**message().fields, "unsubscribe_url": f" {url} "}
    assert channel.send(message(fields=fields)).ok
    (email,) = mailbox.received
    assert email["List-Unsubscribe"] == f"<{url}>"
    assert email["List-Unsubscribe-Post"] == ("List-Unsubscribe=One-Click" if post else None)


@pytest.mark.parametrize("url", [
    "https://shop.example/unsubscribe?customer=c1&token=" + "f3a9" * 40,
    "mailto:unsubscribe@shop.example?subject=" + "c1-" * 40,
])
def test_a_long_unsubscribe_url_is_written_as_it_is_on_one_line(
    channel: SmtpChannel, mailbox: Mailbox, url: str
) -> None:
    # Mailbox providers read the URL between the angle brackets: folded into encoded-words
    # (as an unstructured header would be) it is no URL at all.
    assert channel.send(message(fields={**message().fields, "unsubscribe_url": url})).ok
    (email,) = mailbox.received
    assert dict(email.raw_items())["List-Unsubscribe"] == f"<{url}>"


def test_an_unsubscribe_url_too_long_for_a_header_line_is_permanent(
    channel: SmtpChannel, mailbox: Mailbox
) -> None:
    url = "https://shop.example/u?t=" + "a" * 1000  # a header line is 998 octets at most
    result = channel.send(message(fields={**message().fields, "unsubscribe_url": url}))
    assert result.status == "permanent" and not result.unreachable
    assert result.error is not None and "unsubscribe_url" in result.error
    assert mailbox.received == []


def test_a_blank_unsubscribe_url_adds_no_header(channel: SmtpChannel, mailbox: Mailbox) -> None:
    assert channel.send(message(fields={**message().fields, "unsubscribe_url": "  "})).ok
    (email,) = mailbox.received
    assert email["List-Unsubscribe"] is None


@pytest.mark.parametrize("url", [
    "http://shop.example/u",                     # no one-click over plain http
    "https://shop.example/u>, <https://evil.example/x",
    "https://shop.example/a b",
    "https://shop.example/u\r\nBcc: x@evil.example",
    "javascript:alert(1)",
    "/unsubscribe",
])
def test_an_unsubscribe_url_that_is_not_one_is_permanent_and_blames_the_content(
    channel: SmtpChannel, mailbox: Mailbox, url: str
) -> None:
    result = channel.send(message(fields={**message().fields, "unsubscribe_url": url}))
    assert result.status == "permanent"
    assert result.error is not None and "unsubscribe_url" in result.error
    assert not result.unreachable
    assert mailbox.received == []


def test_email_content_may_carry_an_unsubscribe_url_of_one_line() -> None:
    from cjo.content.channels import CHANNEL_TYPES, field_problems, output_problem

    email = CHANNEL_TYPES["email"]
    fields = {"subject": "Hi", "text": "x", "unsubscribe_url": "https://shop.example/u"}
    assert field_problems(email, fields) == []
    assert output_problem(email, {**fields, "unsubscribe_url": "https://a\nb"}) == (
        "unsubscribe_url", "renders more than one line (a unsubscribe_url is one line)")


@pytest.mark.parametrize("trickled", [False, True], ids=["slow replies", "trickled replies"])
def test_the_timeout_bounds_the_whole_conversation_with_a_slow_server(trickled: bool) -> None:
    # Each reply within the timeout, all of them far beyond it: the send must end in time, or
    # the dispatch lease runs out under it and another worker sends the batch again.
    def handle(connection: Any, say: Any) -> None:
        reply = say if trickled else (lambda data: (time.sleep(0.3), connection.sendall(data)))
        lines = connection.makefile("rb")
        reply(b"220 slow.example ESMTP\r\n")
        while line := lines.readline():
            verb = line[:4].upper()
            if verb == b"DATA":
                reply(b"354 go on\r\n")
                while lines.readline() not in (b".\r\n", b""):
                    pass
            reply(b"221 bye\r\n" if verb == b"QUIT" else b"250 ok\r\n")

    with trickling_server(handle, pause=0.05) as port:
        channel = SmtpChannel("127.0.0.1", port, security="none",
                              from_address="journeys@shop.example", timeout=0.5)
        result, took = elapsed(lambda: channel.send(message()))
    assert took < 1.5
    assert (result.status, result.error) == ("transient", "timed out after 0.5s")
