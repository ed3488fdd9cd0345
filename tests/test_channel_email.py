"""SmtpChannel against real SMTP servers: aiosmtpd in-process (to read what arrived) and
Postfix smtp-sink (to inject faults: -r 4xx, -f 5xx, -q hang up, -w slow DATA, -t idle timeout)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email
import subprocess
import time
from collections.abc import Callable, Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtplib.email import quote_address
from hypothesis import given
from hypothesis import strategies as st

import servers
from incident.channels.base import EmailOut, MessageRef, Outcome
from incident.channels.email import _PLAIN_ADDRESS, SmtpChannel, _quoted
from incident.settings import SmtpSettings

SENDER = "notices@bank.example"
SUBJECT = "【服务中断】手机银行暂时无法登录 / Mobile banking unavailable"
PASSWORD = "s3cret-Pa55word"


# --- helpers -------------------------------------------------------------------------------------


def make_email(i: int, *, to: str | None = None) -> EmailOut:
    """A complete notice as the composer builds it: multipart text + HTML, Chinese subject."""
    address = to if to is not None else f"customer{i}@example.com"
    msg = EmailMessage()
    msg["From"] = f"示例银行 <{SENDER}>"
    if address:
        msg["To"] = address
    msg["Subject"] = SUBJECT
    msg["Message-ID"] = f"<inc-1.n1.{i}@bank.example>"
    msg.set_content(f"尊敬的客户 {i}：手机银行暂时无法登录。")
    msg.add_alternative(f"<p>尊敬的客户 {i}：手机银行暂时无法登录。</p>", subtype="html")
    ref = MessageRef(incident_id="INC-1", notice_seq=1, channel="email",
                     message_id=msg["Message-ID"], idempotency_key=f"{i:064x}")
    return EmailOut.from_message(ref, msg)


def make_channel(port: int, *, connections: int = 4, timeout: float = 5.0,
                 security: str = "none", username: str | None = None,
                 password: str | None = None) -> SmtpChannel:
    settings = SmtpSettings(host="127.0.0.1", port=port, security=security, username=username,
                            timeout=timeout, connections=connections)
    return SmtpChannel(settings, rate=1000.0, password=password)


async def send_all(channel: SmtpChannel, messages: list[EmailOut]) -> list[Outcome]:
    """Send concurrently, as the dispatcher does, then close the channel."""
    try:
        return list(await asyncio.gather(*(channel.send(m) for m in messages)))
    finally:
        await channel.close()


def established(port: int) -> int:
    """Open TCP connections to 127.0.0.1:`port`, seen from the server's side (its sockets)."""
    suffix = f":{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(suffix) and fields[3] == "01":  # local = server port, ESTABLISHED
            count += 1
    return count


# --- aiosmtpd ------------------------------------------------------------------------------------


class Recorder:
    """aiosmtpd handler: keeps every message and every SMTP session it saw."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes, bool]] = []
        self.sessions: dict[int, Any] = {}  # the objects are kept, so their ids stay unique
        self.hang_up = 0  # hang up (no reply) after the next N messages' data
        self.refuse: dict[str, str] = {}  # recipient -> reply to its RCPT TO
        self.mail_options: list[list[str]] = []  # MAIL FROM parameters of each message kept

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        self.sessions[id(session)] = session
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.hang_up:
            self.hang_up -= 1
            server.transport.abort()
            return "250 2.0.0 never seen"
        tls = server.transport.get_extra_info("cipher") is not None
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content, tls))
        self.mail_options.append(list(envelope.mail_options))
        return f"250 2.0.0 Ok: queued as Q{len(self.messages)}"


class LocalController(Controller):
    """aiosmtpd 1.4's Controller cannot take port 0 (it connects to the port it was given to
    check the server is up): learn the bound port first."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@pytest.fixture
def aiosmtpd_server() -> Iterator[Callable[..., LocalController]]:
    """Factory: `aiosmtpd_server(handler, **smtp_options)` starts aiosmtpd on 127.0.0.1."""
    started: list[LocalController] = []

    def start(handler: Recorder, **kwargs: Any) -> LocalController:
        controller = LocalController(handler, hostname="127.0.0.1", port=0, **kwargs)
        controller.start()
        started.append(controller)
        return controller

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_concurrent_messages_arrive_once_each_intact_over_the_pool(aiosmtpd_server):
    handler = Recorder()
    server = aiosmtpd_server(handler)
    messages = [make_email(i) for i in range(50)]

    outcomes = asyncio.run(send_all(make_channel(server.port, connections=4), messages))

    assert all(o.sent for o in outcomes), [o for o in outcomes if not o.sent][:3]
    refs = {o.provider_ref for o in outcomes}
    assert len(refs) == 50 and all(r.startswith("250 2.0.0 Ok: queued as Q") for r in refs)
    received = {}
    for mail_from, rcpt_tos, content, _tls in handler.messages:
        got = email.message_from_bytes(content, policy=policy.default)
        assert mail_from == SENDER
        assert rcpt_tos == [str(got["To"])]
        assert got["Subject"] == SUBJECT
        assert got["Message-ID"] not in received, "delivered twice"
        received[got["Message-ID"]] = got
    assert set(received) == {m.ref.message_id for m in messages}
    sample = received["<inc-1.n1.7@bank.example>"]
    assert sample.get_content_type() == "multipart/alternative"
    text = sample.get_body(("plain",)).get_content()
    assert text.strip() == "尊敬的客户 7：手机银行暂时无法登录。"
    assert "<p>尊敬的客户 7" in sample.get_body(("html",)).get_content()
    # 50 concurrent sends, 4 connections: the first four sends open one each, the rest reuse.
    assert len(handler.sessions) == 4


def test_a_hung_up_connection_is_dropped_and_a_fresh_one_reused(aiosmtpd_server):
    handler = Recorder()
    handler.hang_up = 1
    server = aiosmtpd_server(handler)

    async def scenario() -> list[Outcome]:
        channel = make_channel(server.port, connections=1)
        first = await channel.send(make_email(0))
        rest = [await channel.send(make_email(i)) for i in range(1, 6)]
        await channel.close()
        return [first, *rest]

    first, *rest = asyncio.run(scenario())

    assert (first.sent, first.permanent, first.code) == (False, False, "disconnect")
    assert all(o.sent for o in rest)
    assert len(handler.messages) == 5
    assert len(handler.sessions) == 2  # the broken one, then one reused for all five


@pytest.mark.parametrize(
    ("refuse", "permanent", "code", "delivered"),
    [
        pytest.param({"b@example.com": "550 5.1.1 mailbox unavailable"}, True, "550", 1,
                     id="one-of-two-5xx"),
        pytest.param({"b@example.com": "451 4.2.0 mailbox busy"}, False, "451", 1,
                     id="one-of-two-4xx"),
        pytest.param({"a@example.com": "550 5.1.1 mailbox unavailable",
                      "b@example.com": "451 4.2.0 mailbox busy"}, False, "451", 0,
                     id="both-4xx-wins"),
        pytest.param({"a@example.com": "550 5.1.1 mailbox unavailable",
                      "b@example.com": "553 5.1.3 bad address"}, True, "550", 0,
                     id="both-5xx"),
    ],
)
def test_refused_recipients_are_classified_by_their_codes(aiosmtpd_server, refuse, permanent,
                                                          code, delivered):
    handler = Recorder()
    handler.refuse = refuse
    server = aiosmtpd_server(handler)

    [outcome] = asyncio.run(send_all(make_channel(server.port),
                                     [make_email(1, to="a@example.com, b@example.com")]))

    assert (outcome.sent, outcome.permanent, outcome.code) == (False, permanent, code)
    for address, reply in refuse.items():
        assert reply in (outcome.error or "")
        if len(refuse) > 1:
            assert address in (outcome.error or "")
    assert len(handler.messages) == delivered


@pytest.mark.parametrize(
    ("server_options", "channel_options", "sent", "code", "fatal"),
    [
        pytest.param({"auth_require_tls": False}, {"username": "ops", "password": PASSWORD},
                     True, None, False, id="login-ok"),
        pytest.param({"auth_require_tls": False}, {"username": "ops", "password": "wrong"},
                     False, "auth", True, id="login-refused"),
        pytest.param({"auth_require_tls": False, "auth_required": True}, {},
                     False, "530", True, id="login-required",
                     marks=pytest.mark.filterwarnings("ignore:Requiring AUTH:UserWarning")),
        pytest.param({}, {"security": "starttls"}, False, "config", True, id="no-starttls"),
    ],
)
def test_relay_configuration_problems_are_temporary_and_fatal(
        aiosmtpd_server, server_options, channel_options, sent, code, fatal):
    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult

        ok = auth_data.login == b"ops" and auth_data.password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd replies 535

    handler = Recorder()
    server = aiosmtpd_server(handler, authenticator=authenticate, **server_options)
    channel = make_channel(server.port, **channel_options)

    outcomes = asyncio.run(send_all(channel, [make_email(1), make_email(2)]))

    assert [o.sent for o in outcomes] == [sent, sent]
    assert [o.code for o in outcomes] == [code, code]
    assert not any(o.permanent for o in outcomes)  # the messages are fine; the setup is not
    assert (channel.fatal is not None) == fatal
    assert len(handler.messages) == (2 if sent else 0)
    for text in (*(o.error or "" for o in outcomes), channel.fatal or "", repr(channel)):
        assert PASSWORD not in text
    if code in ("auth", "530"):
        assert (channel.fatal or "").split(": ", 1)[1].startswith(("535", "530"))


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_tls_and_starttls_deliver_encrypted(aiosmtpd_server, certificate, security, monkeypatch):
    import ssl

    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    options = ({"ssl_context": context} if security == "tls"
               else {"tls_context": context, "require_starttls": True})
    handler = Recorder()
    server = aiosmtpd_server(handler, **options)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts our self-signed cert

    outcomes = asyncio.run(send_all(make_channel(server.port, security=security),
                                    [make_email(1), make_email(2)]))

    assert all(o.sent for o in outcomes), outcomes
    assert [tls for *_, tls in handler.messages] == [True, True]


def test_plain_client_on_a_starttls_only_relay_is_fatal(aiosmtpd_server, certificate):
    import ssl

    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = aiosmtpd_server(Recorder(), tls_context=context, require_starttls=True)
    channel = make_channel(server.port, security="none")

    [outcome] = asyncio.run(send_all(channel, [make_email(1)]))

    assert (outcome.sent, outcome.permanent, outcome.code) == (False, False, "530")
    assert channel.fatal and "STARTTLS" in channel.fatal


# --- smtp-sink faults ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sink_options", "sent", "permanent", "code"),
    [
        pytest.param((), True, False, None, id="plain"),
        pytest.param(("-f", "RCPT"), False, True, "500", id="5xx-rcpt"),
        pytest.param(("-r", "RCPT"), False, False, "450", id="4xx-rcpt"),
        pytest.param(("-f", "MAIL"), False, True, "500", id="5xx-mail"),
        pytest.param(("-r", "MAIL"), False, False, "450", id="4xx-mail"),
        pytest.param(("-r", "DATA"), False, False, "450", id="4xx-data"),
        pytest.param(("-r", "."), False, False, "450", id="4xx-dot"),
        pytest.param(("-f", "."), False, True, "500", id="5xx-dot"),
        pytest.param(("-Q", "DATA"), False, False, "421", id="421-data"),
        pytest.param(("-q", "DATA"), False, False, "disconnect", id="hangup-data"),
        pytest.param(("-q", "."), False, False, "disconnect", id="hangup-dot"),
        pytest.param(("-r", "CONNECT"), False, False, "450", id="4xx-greeting"),
    ],
)
def test_smtp_sink_replies_are_classified(smtp_sink, sink_options, sent, permanent, code):
    sink = smtp_sink(*sink_options)
    # Two rounds of three: the second round runs on connections reused, reopened or replaced.
    messages = [make_email(i) for i in range(6)]

    async def scenario() -> list[Outcome]:
        channel = make_channel(sink.port, connections=3)
        first = await asyncio.gather(*(channel.send(m) for m in messages[:3]))
        second = await asyncio.gather(*(channel.send(m) for m in messages[3:]))
        await channel.close()
        return [*first, *second]

    outcomes = asyncio.run(scenario())

    assert [(o.sent, o.permanent, o.code) for o in outcomes] == [(sent, permanent, code)] * 6
    for o in outcomes:
        if sent:
            assert o.provider_ref and o.provider_ref.startswith("250 ")
        elif code and code.isdigit():
            assert o.error and code in o.error and "\n" not in o.error
        else:
            assert o.error and "disconnected" in o.error


def test_slow_data_uses_at_most_the_configured_connections(smtp_sink):
    sink = smtp_sink("-w", "1")
    seen: list[int] = []

    async def scenario() -> list[Outcome]:
        channel = make_channel(sink.port, connections=2)
        sending = asyncio.gather(*(channel.send(make_email(i)) for i in range(8)))
        while not sending.done():
            seen.append(established(sink.port))
            await asyncio.sleep(0.02)
        outcomes = await sending
        seen.append(established(sink.port))
        await channel.close()
        return list(outcomes)

    started = time.monotonic()
    outcomes = asyncio.run(scenario())
    elapsed = time.monotonic() - started

    assert all(o.sent for o in outcomes)
    assert max(seen) == 2  # both used, never more
    assert seen[-1] == 2  # still open after the batch: kept for reuse...
    deadline = time.monotonic() + 2
    while established(sink.port) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert established(sink.port) == 0  # ...until close() says QUIT
    assert 3.5 < elapsed < 8  # 8 one-second DATA phases, two at a time


def test_timeout_setting_applies(smtp_sink):
    sink = smtp_sink("-w", "1")
    started = time.monotonic()
    outcomes = asyncio.run(send_all(make_channel(sink.port, connections=1, timeout=0.3),
                                    [make_email(1), make_email(2)]))

    assert [(o.sent, o.permanent, o.code) for o in outcomes] == [(False, False, "timeout")] * 2
    assert time.monotonic() - started < 1.5  # 0.3 s each, not the server's 1 s delay


def test_a_connection_the_server_closed_while_idle_is_reopened(smtp_sink):
    sink = smtp_sink("-t", "1")  # smtp-sink drops a client silent for a second

    async def scenario() -> list[Outcome]:
        channel = make_channel(sink.port, connections=1)
        first = await channel.send(make_email(1))
        await asyncio.sleep(1.5)
        assert established(sink.port) == 0  # the server did hang up
        second = await channel.send(make_email(2))
        await channel.close()
        return [first, second]

    first, second = asyncio.run(scenario())

    assert first.sent and second.sent


def test_a_send_cancelled_mid_conversation_does_not_poison_the_pool(smtp_sink):
    sink = smtp_sink("-w", "1")

    async def scenario() -> Outcome:
        channel = make_channel(sink.port, connections=1)
        interrupted = asyncio.ensure_future(channel.send(make_email(1)))
        await asyncio.sleep(0.3)  # waiting for the (delayed) reply to DATA
        interrupted.cancel()  # as the dispatcher does on Ctrl-C
        with contextlib.suppress(asyncio.CancelledError):
            await interrupted
        after = await channel.send(make_email(2))
        await channel.close()
        return after

    after = asyncio.run(scenario())

    # Reusing the connection would pair the late reply to DATA with the next command.
    assert after.sent, after


def test_a_message_without_recipients_fails_alone(smtp_sink):
    sink = smtp_sink()
    outcomes = asyncio.run(send_all(make_channel(sink.port, connections=1),
                                    [make_email(1, to=""), make_email(2)]))

    assert (outcomes[0].sent, outcomes[0].permanent, outcomes[0].code) == (False, True, "message")
    assert outcomes[1].sent  # the connection was not harmed


def test_nothing_listening_is_a_temporary_connect_failure():
    port = servers.free_port()  # free a moment ago, nobody listens there
    channel = make_channel(port, connections=2)

    outcomes = asyncio.run(send_all(channel, [make_email(i) for i in range(4)]))

    assert [(o.sent, o.permanent, o.code) for o in outcomes] == [(False, False, "connect")] * 4
    assert all(f"127.0.0.1:{port}" in (o.error or "") for o in outcomes)
    assert channel.fatal is None  # the relay may come back


# --- addresses on the command line ---------------------------------------------------------------


@given(st.from_regex(_PLAIN_ADDRESS, fullmatch=True))
def test_a_plain_address_is_quoted_exactly_as_aiosmtplib_quotes_it(address):
    assert _quoted(address) == quote_address(address).encode("ascii")


@pytest.mark.parametrize("address",
                         ["客户 <c1@example.com>", "c1@example.com ", '"a b"@example.com'])
def test_other_addresses_go_through_aiosmtplib_quoting(address):
    assert _quoted(address) == quote_address(address).encode("ascii")


# (A non-ASCII address goes out with SMTPUTF8 when the relay offers it: tests/test_smtputf8.py.)
@pytest.mark.parametrize("address", ["a b@example.com"])
def test_an_address_that_cannot_go_on_the_command_line_fails_that_message_alone(aiosmtpd_server,
                                                                              address):
    handler = Recorder()
    server = aiosmtpd_server(handler)

    bad = dataclasses.replace(make_email(1), recipients=(address,))  # as the envelope has it

    outcomes = asyncio.run(send_all(make_channel(server.port, connections=1),
                                    [bad, make_email(2)]))

    assert (outcomes[0].sent, outcomes[0].permanent, outcomes[0].code) == (False, True, "message")
    assert outcomes[1].sent
    assert [m[1] for m in handler.messages] == [["customer2@example.com"]]


def test_every_message_announces_its_size_from_the_first_on_a_connection(aiosmtpd_server):
    handler = Recorder()
    server = aiosmtpd_server(handler)
    messages = [make_email(i) for i in range(6)]

    outcomes = asyncio.run(send_all(make_channel(server.port, connections=2), messages))

    assert all(o.sent for o in outcomes)
    by_to = {m[1][0]: opts for m, opts in zip(handler.messages, handler.mail_options, strict=True)}
    for message in messages:
        assert by_to[message.envelope_to[0]] == [f"SIZE={len(message.data)}"]
