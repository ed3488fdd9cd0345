"""The SMTP transaction written by incident.channels.smtp_wire: DATA bytes exactly as aiosmtplib
would send them, and PIPELINING (RFC 2920) where the relay offers it, with every reply kept.

The relays of the other tests answer whole replies; the PIPELINING server here is a small fake
because no real server shows how the client's commands were grouped, or splits its replies at
will."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given
from hypothesis import strategies as st
from test_channel_email import make_channel, make_email

from incident.channels.base import Outcome
from incident.channels.smtp_wire import wire_body


@given(st.lists(st.sampled_from([b"a", b".", b"..", b"\r", b"\n", b"\r\n", b" ", b"\xe4"]),
                max_size=40).map(b"".join))
def test_data_bytes_are_what_aiosmtplib_would_write(data):
    aiosmtplib_writes = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data)) + b".\r\n"
    assert wire_body(data) == aiosmtplib_writes


class PipeliningServer:
    """Offers PIPELINING; notes the commands of each read; answers after `reply_bytes` bytes
    at a time (1: every reply split across many writes)."""

    def __init__(self, reply_bytes: int = 1 << 16, refuse_rcpt: bool = False,
                 hang_up_at: bytes = b"") -> None:
        self.reply_bytes = reply_bytes
        self.refuse_rcpt = refuse_rcpt
        self.hang_up_at = hang_up_at  # the command answered by 421 and a hang-up
        self.reads: list[list[bytes]] = []  # the command verbs of each read, outside DATA
        self.bodies: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def say(text: bytes) -> None:
            for i in range(0, len(text), self.reply_bytes):
                writer.write(text[i:i + self.reply_bytes])
                await writer.drain()

        await say(b"220 fake ESMTP\r\n")
        pending = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                lines = (pending + chunk).split(b"\r\n")
                pending = lines.pop()
                self.reads.append([line.split(b" ")[0].upper() for line in lines])
                answer = b""
                for line in lines:
                    verb = line.split(b" ")[0].upper()
                    if verb == self.hang_up_at:
                        await say(answer + b"421 4.3.2 closing, try later\r\n")
                        return
                    if verb == b"EHLO":
                        answer += b"250-fake\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
                    elif verb == b"RCPT" and self.refuse_rcpt:
                        answer += b"550 5.1.1 no such user\r\n"
                    elif verb == b"DATA":
                        answer += b"554 5.5.1 no valid recipients\r\n" if self.refuse_rcpt \
                            else b"354 go ahead\r\n"
                    elif verb == b"QUIT":
                        await say(answer + b"221 bye\r\n")
                        return
                    else:
                        answer += b"250 2.0.0 ok\r\n"
                await say(answer)
                if answer.endswith(b"354 go ahead\r\n"):
                    body = await reader.readuntil(b"\r\n.\r\n")
                    self.bodies.append(body)
                    await say(b"250 2.0.0 Ok: queued as Q%d\r\n" % len(self.bodies))
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def running(server: PipeliningServer) -> AsyncIterator[int]:
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        listener.close()


def send_over(server: PipeliningServer, count: int) -> list[Outcome]:
    async def scenario() -> list[Outcome]:
        async with running(server) as port:
            channel = make_channel(port, connections=1, timeout=10)
            outcomes = [await channel.send(make_email(i)) for i in range(count)]
            await channel.close()
            return outcomes

    return asyncio.run(scenario())


def test_mail_rcpt_and_data_go_in_one_write_where_pipelining_is_offered():
    server = PipeliningServer()

    outcomes = send_over(server, 3)

    assert [o.provider_ref for o in outcomes] == [f"250 2.0.0 Ok: queued as Q{i}"
                                                  for i in (1, 2, 3)]
    assert server.reads.count([b"MAIL", b"RCPT", b"DATA"]) == 3
    assert [b.startswith(b"From:") or b"\r\nTo: customer" in b for b in server.bodies] \
        == [True] * 3


def test_replies_split_anywhere_are_all_read():
    server = PipeliningServer(reply_bytes=1)

    outcomes = send_over(server, 2)

    assert all(o.sent for o in outcomes), outcomes
    assert len(server.bodies) == 2


def test_pipelined_refusals_are_classified_and_the_connection_kept():
    server = PipeliningServer(refuse_rcpt=True)

    outcomes = send_over(server, 2)

    assert [(o.sent, o.permanent, o.code) for o in outcomes] == [(False, True, "550")] * 2
    assert server.bodies == []
    assert sum(1 for verbs in server.reads if b"EHLO" in verbs) == 1  # one session for both


def test_a_421_then_hang_up_mid_pipeline_is_that_reply():
    # aiosmtplib closed the connection after a 421 and the reply was the outcome: still so.
    for verb in (b"MAIL", b"RCPT"):
        server = PipeliningServer(hang_up_at=verb)

        outcomes = send_over(server, 2)

        assert [(o.sent, o.permanent, o.code) for o in outcomes] == [(False, False, "421")] * 2
        assert sum(1 for verbs in server.reads if b"EHLO" in verbs) == 2  # reconnected


def test_a_421_to_data_then_hang_up_is_that_reply():
    server = PipeliningServer(hang_up_at=b"DATA")

    outcomes = send_over(server, 1)

    assert [(o.sent, o.code) for o in outcomes] == [(False, "421")]
