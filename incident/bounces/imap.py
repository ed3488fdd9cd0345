"""Bounces read from an IMAP mailbox (`bounces.imap` in incident.yaml) with the standard
library's imaplib, each message a `SourceMessage` like a file's, so that it is parsed, matched
and recorded the same way.

The mailbox is opened read-only (EXAMINE) and fetched with BODY.PEEK: nothing is flagged
\\Seen, moved or deleted — a mailbox read again records nothing twice because each message is
recorded once by its identity (its Message-ID, else its hash). Every network operation has a
timeout; a refused connection or login, or an unknown mailbox, is an `ImapError` (exit 1)
naming the server and mailbox, never the password.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import socket
import ssl
from collections.abc import Iterator

from incident.bounces.model import MAX_MESSAGE_BYTES, SourceMessage
from incident.errors import IncidentError
from incident.inbound_settings import ImapSettings

FETCH_BATCH = 100  # messages per UID FETCH
_UID = re.compile(rb"\bUID (\d+)")


class ImapError(IncidentError):
    """The IMAP mailbox could not be read (connection, login, mailbox): exit 1."""


def read_imap(settings: ImapSettings, password: str) -> Iterator[SourceMessage]:
    """Every message of the configured mailbox, oldest first (UID order); ImapError before
    the first one when the server, the login or the mailbox is refused."""
    where = f"imap://{settings.host}:{settings.port_or_default}/{settings.mailbox}"
    conn = _connect(settings, where)
    try:
        _login(conn, settings, password, where)
        uids = _uids(conn, settings, where)
        for start in range(0, len(uids), FETCH_BATCH):
            yield from _fetch(conn, uids[start:start + FETCH_BATCH], where)
    except (imaplib.IMAP4.abort, OSError) as exc:  # the server hung up or timed out mid-way
        raise ImapError(f"{where}: the connection failed while reading: {_text(exc)}",
                        hint="nothing of this run was recorded; run it again") from None
    finally:
        _close(conn)


def _connect(settings: ImapSettings, where: str) -> imaplib.IMAP4:
    host, port, timeout = settings.host, settings.port_or_default, settings.timeout
    try:
        if settings.tls == "implicit":
            return imaplib.IMAP4_SSL(host, port, ssl_context=ssl.create_default_context(),
                                     timeout=timeout)
        conn = imaplib.IMAP4(host, port, timeout=timeout)
        if settings.tls == "starttls":
            conn.starttls(ssl_context=ssl.create_default_context())
        return conn
    except (OSError, imaplib.IMAP4.error) as exc:  # refused, unknown host, timeout, TLS
        reason = ("timed out" if isinstance(exc, (TimeoutError, socket.timeout))
                  else _text(exc))
        raise ImapError(f"cannot connect to the IMAP server {where}: {reason}",
                        hint="check bounces.imap (host, port, tls) in incident.yaml"
                        ) from None


def _login(conn: imaplib.IMAP4, settings: ImapSettings, password: str, where: str) -> None:
    try:
        conn.login(settings.user, password)
    except imaplib.IMAP4.error as exc:
        raise ImapError(f"the IMAP server {where} refused the login of {settings.user!r}: "
                        f"{_text(exc)}", hint=f"check bounces.imap.user and the password in "
                        f"${settings.password_env}") from None


def _uids(conn: imaplib.IMAP4, settings: ImapSettings, where: str) -> list[bytes]:
    typ, data = conn.select(_quoted(settings.mailbox), readonly=True)  # EXAMINE
    if typ != "OK":
        raise ImapError(f"the IMAP server {where} has no mailbox {settings.mailbox!r}: "
                        f"{_text(data)}", hint="check bounces.imap.mailbox (default INBOX)")
    typ, data = conn.uid("SEARCH", "ALL")
    if typ != "OK":
        raise ImapError(f"{where}: SEARCH refused: {_text(data)}")
    return sorted((data[0] or b"").split(), key=int)


def _fetch(conn: imaplib.IMAP4, uids: list[bytes], where: str) -> Iterator[SourceMessage]:
    # A partial fetch: one byte more than parse_bounce accepts, so a huge message is refused
    # there without being downloaded whole.
    typ, data = conn.uid("FETCH", b",".join(uids).decode(),
                         f"(UID BODY.PEEK[]<0.{MAX_MESSAGE_BYTES + 1}>)")
    if typ != "OK":
        raise ImapError(f"{where}: FETCH refused: {_text(data)}")
    got: dict[bytes, bytes] = {}
    for item in data:
        if isinstance(item, tuple):
            found = _UID.search(item[0])
            if found:
                got[found.group(1)] = item[1]
    for uid in uids:
        name = f"{where};UID={uid.decode()}"
        body = got.get(uid)
        yield (SourceMessage(where=name, data=body) if body is not None else
               SourceMessage(where=name, data=None, problem="removed from the mailbox meanwhile"))


def _quoted(mailbox: str) -> str:
    """A mailbox name as an IMAP quoted string (imaplib sends it as given)."""
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _close(conn: imaplib.IMAP4) -> None:
    try:
        if conn.state == "SELECTED":
            conn.close()
        conn.logout()
    except (imaplib.IMAP4.error, OSError):
        with contextlib.suppress(OSError):
            conn.shutdown()


def _text(value: object) -> str:
    if isinstance(value, OSError) and value.strerror:
        return value.strerror
    if isinstance(value, imaplib.IMAP4.error) and value.args:
        value = value.args[0]
    if isinstance(value, list):
        value = b" ".join(v for v in value if isinstance(v, bytes))
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    text = " ".join(str(value).split())
    return text.strip("b'\"") or type(value).__name__
