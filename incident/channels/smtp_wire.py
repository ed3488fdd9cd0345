"""One MAIL/RCPT/DATA transaction written straight to the connection aiosmtplib opened.

aiosmtplib keeps the session (connect, TLS, EHLO, AUTH, RSET, QUIT); the transaction itself
goes through `_Replies`, a reader put in front of the transport for its duration, because:

- its DATA passes every message through two regular expressions (line ends, dot-stuffing),
  about a sixth of the CPU of a fan-out; the composer writes CRLF already, so `wire_body`
  checks that with byte counts and stuffs dots with `bytes.replace` (the same bytes on the wire
  as aiosmtplib would send, for any input);
- its reader keeps one reply at a time and drops what arrives while nobody waits, so replies
  to commands written together (PIPELINING, RFC 2920) would be lost; `_Replies` keeps every
  reply in order.

Where the relay offers PIPELINING, MAIL, every RCPT and DATA go out in one write and their
replies are read together, then the body (after a 354) in a second write: two wake-ups a
message instead of four. Otherwise each command waits for its reply, as before. The replies
raise the same exceptions as `SMTP.mail`/`rcpt`/`data` would, so they are classified as before.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from aiosmtplib import (
    SMTP,
    SMTPDataError,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPStatus,
    SMTPTimeoutError,
)

_MAX_LINE = 8192  # as aiosmtplib: a reply line, and a whole reply at most four times that
_MAX_REPLY = 4 * _MAX_LINE
_LINE_ENDS = re.compile(rb"\r\n|\n|\r(?!\n)")  # aiosmtplib's normalisation, for odd input
_COMMAND_INJECTION = re.compile(rb"[\x00-\x1f\x7f]")  # what aiosmtplib refuses in a command
_END = b".\r\n"


def wire_body(data: bytes, *, ready: bool = False) -> bytes:
    """The message as DATA sends it: CRLF line ends, lines starting with "." doubled, ended by
    ".\\r\\n" — byte for byte what aiosmtplib's `execute_data_command` writes, without its two
    regex passes when the bytes have CRLF line ends only (the composer's always do), and
    without reading them at all when they are known to be `ready` (mime.data_ready)."""
    if ready:
        return data + _END
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        data = _LINE_ENDS.sub(b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if b"\n." in data:
        data = data.replace(b"\n.", b"\n..")
    if data.startswith(b"."):
        data = b"." + data
    return data + _END


def command(*args: bytes) -> bytes:
    """One command line, refusing control characters in an argument as aiosmtplib does."""
    for arg in args:
        if _COMMAND_INJECTION.search(arg):
            raise ValueError("Command arg contains a prohibited control character")
    return b" ".join(args) + b"\r\n"


async def mail_rcpt_data(client: SMTP, sender: str, mail: bytes,
                         rcpts: list[tuple[str, bytes]], data: bytes, *,
                         ready: bool = False) -> tuple[list[SMTPRecipientRefused], str]:
    """Send `mail` (a MAIL command line), the RCPT command line of each recipient and the
    message `data`; the recipients refused (when some were accepted) and the reply to DATA.

    Raises SMTPSenderRefused, SMTPRecipientsRefused (all refused) or SMTPDataError as
    aiosmtplib's calls would; a reply 421 closes the connection, as aiosmtplib does. The
    caller sends RSET after a refusal."""
    body = wire_body(data, ready=ready)
    pipelined = client.supports_extension("pipelining")
    timeout = client.timeout
    with _reading(client) as replies:
        answers: list[SMTPResponse] = []
        commands = [mail, *(line for _, line in rcpts), b"DATA\r\n"]
        if pipelined:
            replies.write(b"".join(commands))
            answers = await replies.read(len(commands), timeout, partial=True)
            if len(answers) < len(commands) and all(a.code < 400 for a in answers):
                raise replies.error  # cut short, and no reply says why (e.g. a 421 would)
        else:
            for line in commands:
                replies.write(line)
                answers += await replies.read(1, timeout)
                if not _go_on(answers, len(rcpts)):
                    break
        refused = [SMTPRecipientRefused(a.code, a.message, r)
                   for (r, _), a in zip(rcpts, answers[1:], strict=False)
                   if a.code not in (SMTPStatus.completed, SMTPStatus.will_forward)]
        start = answers[-1] if len(answers) == len(commands) else None
        if (answers[0].code != SMTPStatus.completed or len(refused) == len(rcpts)
                or start is None or start.code != SMTPStatus.start_input):
            if start is not None and start.code == SMTPStatus.start_input:
                replies.write(_END)  # DATA accepted after all: end it empty (RFC 2920)
                await replies.read(1, timeout)
            _refusal(client, sender, answers[0], len(rcpts), refused, start)
        replies.write(body)
        [reply] = await replies.read(1, timeout)
    if reply.code != SMTPStatus.completed:
        _closes(client, reply)
        raise SMTPDataError(reply.code, reply.message)
    return refused, reply.message


def _go_on(answers: list[SMTPResponse], recipients: int) -> bool:
    """Without PIPELINING: whether the next command is worth sending after these replies."""
    if answers[0].code != SMTPStatus.completed:
        return False
    if len(answers) == recipients + 1:  # before DATA: at least one recipient accepted
        return any(a.code in (SMTPStatus.completed, SMTPStatus.will_forward)
                   for a in answers[1:])
    return True


def _refusal(client: SMTP, sender: str, mail: SMTPResponse, recipients: int,
             refused: list[SMTPRecipientRefused], start: SMTPResponse | None) -> None:
    """Raise what aiosmtplib would have raised first for these replies."""
    if mail.code != SMTPStatus.completed:
        _closes(client, mail)
        raise SMTPSenderRefused(mail.code, mail.message, sender)
    for r in refused:
        if r.code == SMTPStatus.domain_unavailable:
            client.close()
    if start is None or len(refused) == recipients:
        raise SMTPRecipientsRefused(refused)
    _closes(client, start)
    raise SMTPDataError(start.code, start.message)


def _closes(client: SMTP, reply: SMTPResponse) -> None:
    if reply.code == SMTPStatus.domain_unavailable:  # 421: aiosmtplib hangs up after it
        client.close()


@contextmanager
def _reading(client: SMTP) -> Iterator[_Replies]:
    """`_Replies` in front of the client's transport for the block, aiosmtplib's protocol back
    after it (also on error or cancellation)."""
    protocol = client.protocol
    transport = protocol.transport if protocol is not None else None
    if protocol is None or not isinstance(transport, asyncio.Transport) or transport.is_closing():
        raise SMTPServerDisconnected("Server not connected")
    replies = _Replies(protocol, transport)
    transport.set_protocol(replies)
    try:
        yield replies
    except BaseException as exc:
        _restore(transport, replies, protocol)
        if replies.broken or isinstance(exc, SMTPTimeoutError):
            client.close()  # out of step with the server, as aiosmtplib closes then
        raise
    _restore(transport, replies, protocol)


def _restore(transport: asyncio.Transport, replies: _Replies,
             protocol: asyncio.BaseProtocol) -> None:
    if transport.get_protocol() is replies:
        transport.set_protocol(protocol)


class _Replies(asyncio.Protocol):
    """Every reply the server sends, in order, however the bytes are split; connection events
    go on to aiosmtplib's protocol, so its session state stays right."""

    def __init__(self, inner: asyncio.BaseProtocol, transport: asyncio.Transport) -> None:
        self._inner = inner
        self._transport = transport
        self._buffer = bytearray()
        self._lines: list[bytes] = []  # the lines so far of a multi-line reply
        self._replies: deque[SMTPResponse] = deque()
        self._want = 0
        self._waiter: asyncio.Future[bool] | None = None
        self._error: Exception | None = None

    @property
    def broken(self) -> bool:
        """Whether the connection failed or sent what is not a reply."""
        return self._error is not None

    def write(self, data: bytes) -> None:
        if self._error is not None or self._transport.is_closing():
            raise self._error or SMTPServerDisconnected("Connection lost")
        self._transport.write(data)

    @property
    def error(self) -> Exception:
        return self._error or SMTPServerDisconnected("Connection lost")

    async def read(self, count: int, timeout: float | None, *,
                   partial: bool = False) -> list[SMTPResponse]:
        """The next `count` replies; SMTPReadTimeoutError when none came for `timeout`. With
        `partial`, the replies that came before the connection failed, if any (a server
        answers 421 and hangs up: that reply is what the caller must see)."""
        while len(self._replies) < count:
            if self._error is not None:
                if partial and self._replies:
                    count = len(self._replies)
                    break
                raise self._error
            had = len(self._replies)
            self._want = count
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            # A timer rather than asyncio.wait_for: the same timeout, without a coroutine and
            # its callbacks around every reply (two reads a message).
            timer = loop.call_later(timeout, _expire, waiter) if timeout is not None else None
            try:
                replied = await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if not replied and len(self._replies) == had:
                raise SMTPReadTimeoutError("Timed out waiting for server response")
        return [self._replies.popleft() for _ in range(count)]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        start = 0
        while (end := self._buffer.find(b"\n", start)) != -1:
            line = bytes(self._buffer[start:end + 1])
            start = end + 1
            if len(line) > _MAX_LINE:
                self._fail(SMTPResponseException(SMTPStatus.invalid_response.value,
                                                 "Response too long"))
                return
            try:
                code = int(line[:3])
            except ValueError:
                text = line.decode("utf-8", errors="ignore")
                self._fail(SMTPResponseException(SMTPStatus.invalid_response.value,
                                                 f"Malformed SMTP response line: {text}"))
                return
            self._lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                text = b"\n".join(self._lines).decode("utf-8", "surrogateescape")
                self._replies.append(SMTPResponse(code, text))
                self._lines = []
        del self._buffer[:start]
        if len(self._buffer) + sum(map(len, self._lines)) > _MAX_REPLY:
            self._fail(SMTPResponseException(SMTPStatus.invalid_response.value,
                                             "Response too long"))
        elif len(self._replies) >= self._want:
            self._wake()

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return False  # closes the transport, as aiosmtplib does

    def connection_lost(self, exc: Exception | None) -> None:
        if self._error is None:
            error = SMTPServerDisconnected("Connection lost")
            error.__cause__ = exc
            self._fail(error)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _fail(self, error: Exception) -> None:
        self._error = self._error or error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(True)


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)  # timed out (the reader looks whether a reply came after all)
