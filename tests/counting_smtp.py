"""An in-process SMTP server for tests that counts what it received, per Message-ID.

    with counting_smtp(delay=0.05) as server:
        ...  # send to 127.0.0.1:server.port (no TLS, no AUTH)
        server.counts()  # Counter: Message-ID -> how many times a message carrying it arrived
        server.total()   # messages received so far

A message counts as received as soon as its DATA has fully arrived, *before* the optional delay
and the 250 reply: a client killed while waiting for the reply has still delivered it, which is
the pessimistic view a duplicate count needs. `delay` (seconds per DATA) makes each send slow
enough for a test to kill or interrupt the sender mid-way; connections are served concurrently,
so it does not serialise them.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiosmtpd.controller import Controller

# The header block ends at the first empty line; Message-ID may be folded onto the next line.
_HEADERS_END = re.compile(rb"\r?\n\r?\n")
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(?:\r?\n[ \t]+)?(\S+)", re.IGNORECASE | re.MULTILINE)


class CountingHandler:
    """aiosmtpd handler: counts Message-IDs (thread-safe), optionally slows every DATA."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._total = 0
        self.without_id = 0  # messages that carried no Message-ID (counted in total too)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or envelope.content
        head = _HEADERS_END.split(content, maxsplit=1)[0]
        match = _MESSAGE_ID.search(head)
        with self._lock:
            self._total += 1
            if match:
                self._counts[match.group(1).decode("ascii", "replace")] += 1
            else:
                self.without_id += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 2.0.0 Ok: queued"

    def counts(self) -> Counter[str]:
        """A snapshot: Message-ID -> receipts."""
        with self._lock:
            return Counter(self._counts)

    def total(self) -> int:
        """Messages received so far (with or without a Message-ID)."""
        with self._lock:
            return self._total


class _LocalController(Controller):
    """aiosmtpd 1.4's Controller cannot take port 0 (its readiness check connects to the port
    it was given): learn the port the OS picked before that check (as test_channel_email.py)."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class CountingServer:
    """What `counting_smtp()` yields."""

    def __init__(self, controller: _LocalController, handler: CountingHandler) -> None:
        self.controller = controller
        self.handler = handler
        self.host = "127.0.0.1"

    @property
    def port(self) -> int:
        """The TCP port the OS picked."""
        return int(self.controller.port)

    def counts(self) -> Counter[str]:
        """Message-ID -> how many times it was received."""
        return self.handler.counts()

    def total(self) -> int:
        """Messages received so far."""
        return self.handler.total()

    def duplicates(self) -> int:
        """Receipts beyond the first, summed over Message-IDs."""
        return sum(n - 1 for n in self.counts().values())


@contextmanager
def counting_smtp(delay: float = 0.0) -> Iterator[CountingServer]:
    """Start a counting SMTP server on 127.0.0.1 (OS-picked port) in its own thread."""
    handler = CountingHandler(delay)
    # data_size_limit=None: notices are small, but never refuse one for its size.
    controller = _LocalController(handler, hostname="127.0.0.1", port=0, data_size_limit=None)
    controller.start()
    try:
        yield CountingServer(controller, handler)
    finally:
        controller.stop()
