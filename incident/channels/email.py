"""The `smtp` transport: a small pool of aiosmtplib connections to one relay, with every SMTP
error turned into an `Outcome` (4xx, disconnects and timeouts temporary; 5xx permanent)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import smtplib
import ssl

from aiosmtplib import (
    SMTP,
    SMTPAuthenticationError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.email import quote_address

from incident.channels import smtp_wire
from incident.channels.base import EmailOut, Outcome, Outgoing
from incident.channels.smtp_wire import command
from incident.mime import needs_smtputf8
from incident.settings import SmtpSettings

_MAX_REF = 200
_MAX_ERROR = 300
_QUIT_TIMEOUT = 5.0
# An ASCII dot-atom addr-spec: what aiosmtplib's quote_address would return as "<address>"
# unchanged after parsing it with email.utils.parseaddr (tests/test_email_channel.py checks
# that equivalence); anything else goes through quote_address itself.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                            r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


class SmtpChannel:
    """Sends each email through one of up to `settings.connections` reused SMTP connections.

    aiosmtplib serialises the transactions of one `SMTP` object, so concurrent `send()` calls
    each take a connection of their own from the pool; when all are busy, they wait for one.
    Connections open on first use and stay open until `close()`; a connection that failed
    mid-conversation (disconnect, timeout, cancellation) is dropped and replaced.
    """

    name = "email"
    transport = "smtp"

    def __init__(self, settings: SmtpSettings, *, rate: float, password: str | None) -> None:
        self.settings = settings
        self.rate: float | None = rate
        # Set when the relay refuses us outright (bad credentials, no TLS): every further
        # message would fail the same way, so the dispatcher can stop early.
        self.fatal: str | None = None
        self._password = password
        self._local_hostname: str | None = None  # FQDN lookup done once, not per connection
        self._idle: asyncio.Queue[SMTP] = asyncio.Queue()
        self._created = 0

    def __repr__(self) -> str:  # the default one would show the password
        s = self.settings
        return f"SmtpChannel({s.host}:{s.port}, security={s.security}, conn={s.connections})"

    async def send(self, message: Outgoing) -> Outcome:
        """Send one email over a pooled connection and classify the result."""
        if not isinstance(message, EmailOut):
            return Outcome.fail("the email channel cannot send an SMS", code="channel")
        client = await self._acquire()
        healthy = False
        try:
            if not client.is_connected:
                outcome = await self._connect(client)
                if outcome is not None:
                    return outcome
            outcome, healthy = await _transact(client, message)
            if outcome.code == "530":
                # "Authentication (or STARTTLS) required": the relay wants a login or TLS we
                # are not configured for; every message would be refused the same way.
                self.fatal = f"the SMTP relay {self._where()} refused to relay: {outcome.error}"
            return outcome
        finally:
            # Also on cancellation: a half-finished conversation must never be reused.
            self._release(client, healthy)

    async def close(self) -> None:
        """QUIT every idle connection, ignoring errors; the pool reopens lazily if used again."""
        clients: list[SMTP] = []
        while not self._idle.empty():
            clients.append(self._idle.get_nowait())
        self._created -= len(clients)
        await asyncio.gather(*(_quit(c) for c in clients if c.is_connected))

    # --- the pool -------------------------------------------------------------------------------

    async def _acquire(self) -> SMTP:
        if not self._idle.empty():
            return self._idle.get_nowait()
        if self._created < self.settings.connections:
            self._created += 1
            return self._new_client()
        return await self._idle.get()

    def _release(self, client: SMTP, healthy: bool) -> None:
        if healthy:
            self._idle.put_nowait(client)  # even if the server has since hung up: reconnects
        else:
            client.close()
            self._idle.put_nowait(self._new_client())  # keeps the slot, connects on next use

    def _new_client(self) -> SMTP:
        s = self.settings
        return SMTP(hostname=s.host, port=s.port, timeout=s.timeout,
                    use_tls=s.security == "tls", start_tls=s.security == "starttls",
                    username=s.username, password=self._password if s.username else None,
                    local_hostname=self._local_hostname)

    async def _connect(self, client: SMTP) -> Outcome | None:
        """Open the connection (greeting, EHLO, STARTTLS, AUTH); an Outcome if that failed."""
        try:
            await client.connect()
        except SMTPAuthenticationError as exc:
            text = _reply(exc.code, exc.message)
            self.fatal = f"the SMTP relay {self._where()} refused the login: {text}"
            return Outcome.retry(f"login refused: {text}", code="auth")
        except SMTPResponseException as exc:
            # A refusal of the session itself (greeting, EHLO, STARTTLS) is about the relay,
            # not this message: temporary, and with a 5xx nothing else will get through.
            text = _reply(exc.code, exc.message)
            if exc.code >= 500:
                self.fatal = f"the SMTP relay {self._where()} refused the session: {text}"
            return Outcome.retry(f"session refused: {text}", code=str(exc.code))
        except SMTPTimeoutError:
            return Outcome.retry(f"timed out connecting to {self._where()}", code="timeout")
        except OSError as exc:  # SMTPConnectError and SMTPServerDisconnected included
            return Outcome.retry(f"cannot connect to {self._where()}: {_describe(exc)}",
                                 code="connect")
        except SMTPException as exc:
            # A bare SMTPException here means the relay lacks what we are configured to use
            # (STARTTLS, AUTH): no message will get through until the config changes.
            text = _line(exc.message)
            self.fatal = f"the SMTP relay {self._where()}: {text}"
            return Outcome.retry(text, code="config")
        if self._local_hostname is None:
            self._local_hostname = client.local_hostname
        try:
            # EHLO now rather than inside the first MAIL, so that the first message on the
            # connection already knows whether it may announce its SIZE.
            if client.is_ehlo_or_helo_needed:
                try:
                    await client.ehlo()
                except SMTPHeloError:
                    await client.helo()
        except SMTPResponseException as exc:
            client.close()
            return Outcome.retry(f"session refused: {_reply(exc.code, exc.message)}",
                                 code=str(exc.code))
        except (SMTPException, OSError, TimeoutError) as exc:
            client.close()
            return Outcome.retry(f"cannot greet {self._where()}: {_describe(exc)}",
                                 code="connect")
        return None

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"


_PREFLIGHT_TIMEOUT = 10.0


def smtputf8_refusal(settings: SmtpSettings) -> str | None:
    """Ask the relay whether it offers SMTPUTF8 (EHLO, after STARTTLS when configured; no
    login): None if it does, else why such addresses cannot be sent. An unreachable relay
    counts as not offering it, so that no message is recorded that may never be sendable."""
    where = f"{settings.host}:{settings.port}"
    timeout = min(settings.timeout, _PREFLIGHT_TIMEOUT)
    try:
        client = (smtplib.SMTP_SSL(settings.host, settings.port, timeout=timeout,
                                   context=ssl.create_default_context())
                  if settings.security == "tls"
                  else smtplib.SMTP(settings.host, settings.port, timeout=timeout))
        with client:
            client.ehlo()
            if settings.security == "starttls":
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            offered = client.has_extn("smtputf8")
    except (smtplib.SMTPException, OSError) as exc:
        return (f"the relay {where} could not be asked whether it offers it "
                f"({_describe(exc)}; set channels.email.smtp.smtputf8: true if it does)")
    return None if offered else f"the relay {where} does not offer it"


async def _transact(client: SMTP, message: EmailOut) -> tuple[Outcome, bool]:
    """One MAIL/RCPT/DATA transaction: the outcome, and whether the connection can be reused."""
    recipients = [r for r in message.envelope_to if r]
    if not message.sender or not recipients:
        return Outcome.fail("cannot send this message: no sender or no recipient address",
                            code="message"), True
    try:
        refused, reply = await _mail_rcpt_data(client, message.sender, recipients, message.data,
                                               ready=message.data_ready)
    except SMTPRecipientsRefused as exc:
        return _refused(exc.recipients), True
    except SMTPResponseException as exc:
        # RSET has been sent (_mail_rcpt_data); after a 421 aiosmtplib has closed the
        # connection (we reconnect next time).
        code = exc.code
        text = _reply(code, exc.message)
        if code >= 500 and code != 530:
            return Outcome.fail(text, code=str(code)), True
        return Outcome.retry(text, code=str(code)), True
    except SMTPTimeoutError:
        return Outcome.retry("timed out waiting for the SMTP server", code="timeout"), False
    except TimeoutError:
        return Outcome.retry("timed out talking to the SMTP server", code="timeout"), False
    except SMTPServerDisconnected as exc:
        return Outcome.retry(f"the SMTP server disconnected: {_line(exc.message)}",
                             code="disconnect"), False
    except OSError as exc:
        return Outcome.retry(f"connection to the SMTP server failed: {_describe(exc)}",
                             code="disconnect"), False
    except (ValueError, SMTPNotSupported) as exc:
        # Nothing was sent (no From/To, an address that cannot be sent): the message is at
        # fault, not the connection, and a retry would fail the same way.
        text = exc.message if isinstance(exc, SMTPNotSupported) else str(exc)
        kind = "smtputf8" if "SMTPUTF8" in text else "message"
        return Outcome.fail(f"cannot send this message: {_line(text)}", code=kind), True
    except SMTPException as exc:
        return Outcome.retry(f"SMTP error: {_line(exc.message)}", code="smtp"), False
    if refused:
        # Accepted for some recipients, refused for others (one recipient per row in practice).
        return _refused(refused), True
    return Outcome.ok(provider_ref=f"250 {_line(reply)}"[:_MAX_REF]), True


async def _mail_rcpt_data(client: SMTP, sender: str, recipients: list[str], data: bytes, *,
                          ready: bool = False) -> tuple[list[SMTPRecipientRefused], str]:
    """What `SMTP.sendmail` does, minus the work it would repeat on bytes and addresses
    already checked here: the SIZE it announces is `len(data)` (the composer writes CRLF line
    ends already; sendmail normalises the whole message once more just to count it), MAIL and
    RCPT carry addresses quoted by `_quoted` (a plain address is not parsed again with
    email.utils.parseaddr, twice per message in sendmail), and the transaction is written by
    `smtp_wire` (pipelined where the relay offers it, DATA without aiosmtplib's regex passes).
    The same replies are errors as in `SMTP.mail`/`rcpt`/`data`, raised as the same exceptions.

    Returns the recipients refused (when some were accepted) and the reply to DATA. As in
    sendmail: SMTPRecipientsRefused when every recipient is refused, and RSET after a refusal
    so that the connection can carry the next message.
    """
    options = [f"SIZE={len(data)}".encode()] if client.supports_extension("size") else []
    if needs_smtputf8(sender) or any(needs_smtputf8(r) for r in recipients):
        if not client.supports_extension("smtputf8"):
            # Never sent: the message is at fault for this relay, as a 5xx would say.
            raise SMTPNotSupported(
                "the relay does not offer SMTPUTF8, which an address with non-ASCII "
                "characters before the @ needs (RFC 6531)")
        options.append(b"SMTPUTF8")  # the headers are UTF-8 (RFC 6532): 8-bit content
        if client.supports_extension("8bitmime"):
            options.append(b"BODY=8BITMIME")
    try:
        return await smtp_wire.mail_rcpt_data(
            client, sender, command(b"MAIL", b"FROM:" + _quoted(sender), *options),
            [(r, command(b"RCPT", b"TO:" + _quoted(r))) for r in recipients], data,
            ready=ready)
    except (SMTPResponseException, SMTPRecipientsRefused, ValueError):
        with contextlib.suppress(ConnectionError, SMTPResponseException):
            await client.rset()
        raise


def _quoted(address: str) -> bytes:
    """The address as MAIL FROM/RCPT TO take it: `<address>`, as aiosmtplib quotes it (a
    ValueError for one that cannot go on an SMTP command line)."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return b"<" + address.encode("ascii") + b">"
    # UTF-8 only for a non-ASCII local part, sent only under SMTPUTF8 (checked by the caller).
    return quote_address(address).encode("utf-8")


def _refused(recipients: list[SMTPRecipientRefused]) -> Outcome:
    """Permanent only when every refusal is a 5xx; a 4xx may pass on a later try."""
    if len(recipients) == 1:
        text = _reply(recipients[0].code, recipients[0].message)
    else:
        text = "; ".join(f"{r.recipient}: {_reply(r.code, r.message)}" for r in recipients)
    temporary = [r for r in recipients if r.code < 500]
    if temporary:
        return Outcome.retry(text[:_MAX_ERROR], code=str(temporary[0].code))
    return Outcome.fail(text[:_MAX_ERROR], code=str(recipients[0].code))


async def _quit(client: SMTP) -> None:
    with contextlib.suppress(SMTPException, OSError, TimeoutError):
        await client.quit(timeout=_QUIT_TIMEOUT)
    client.close()


def _reply(code: int, message: str) -> str:
    return f"{code} {_line(message)}"[:_MAX_ERROR]


def _line(text: str) -> str:
    # Multi-line replies come joined with "\n": one line for logs and the outbox.
    return " ".join(text.split())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SMTPException):
        return _line(exc.message)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _line(str(exc)) or type(exc).__name__

