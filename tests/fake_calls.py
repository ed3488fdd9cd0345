"""A small fake of Twilio's Calls API that keeps each call "in progress" for a while, for the
calls-in-progress cap and the call rate, and scripted error answers (which Prism cannot give).

`POST /2010-04-01/Accounts/{sid}/Calls.json` creates a call that is in progress for `hold`
seconds from its arrival; `GET …/Calls/{CallSid}.json` answers its status (in-progress, then
completed). Each create records its arrival time and how many calls were in progress then.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl

from fake_twilio import Scripted, _basic_auth, _error, serving

CALLS_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Calls\.json$")
CALL_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Calls/(?P<call>CA[0-9a-f]{32})"
                       r"\.json$")


@dataclass(frozen=True)
class Created:
    """One call create as the fake received it."""

    at: float  # time.monotonic() on arrival
    form: dict[str, str]
    in_progress: int  # calls in progress at that moment, this one included
    status: int


@dataclass
class FakeCalls:
    """The fake's state: how long calls last, scripted errors per number, what it saw."""

    url: str = ""
    hold: float = 0.5  # seconds a call stays in progress
    script: dict[str, Scripted] = field(default_factory=dict)  # To -> error answer
    status_override: Scripted | None = None
    calls: dict[str, float] = field(default_factory=dict)  # call SID -> created at
    creates: list[Created] = field(default_factory=list)
    polls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def answer(self, method: str, path: str, form: dict[str, str],
               auth: tuple[str, str] | None) -> tuple[int, dict[str, Any]]:
        """Status and body for one request (called by the handler thread)."""
        now = time.monotonic()
        if auth is None:
            return _error(Scripted(401, 20003, "Authenticate"))
        fetch = CALL_PATH.match(path)
        if method == "GET" and fetch:
            with self.lock:
                self.polls += 1
                created = self.calls.get(fetch["call"])
            if created is None:
                return _error(Scripted(404, 20404, "The requested resource was not found"))
            status = "in-progress" if now < created + self.hold else "completed"
            return 200, call_resource(fetch["sid"], fetch["call"], form, status)
        match = CALLS_PATH.match(path)
        if method != "POST" or match is None:
            return _error(Scripted(404, 20404, f"The requested resource {path} was not found"))
        scripted = self.status_override or self.script.get(form.get("To", ""))
        with self.lock:
            if scripted is not None:
                busy = sum(1 for at in self.calls.values() if at <= now < at + self.hold)
                self.creates.append(Created(now, form, busy, scripted.status))
                return _error(scripted)
            sid = "CA" + secrets.token_hex(16)
            self.calls[sid] = now
            busy = sum(1 for at in self.calls.values() if at <= now < at + self.hold)
            self.creates.append(Created(now, form, busy, 201))
        return 201, call_resource(match["sid"], sid, form, "queued")


def call_resource(account_sid: str, sid: str, form: dict[str, str],
                  status: str) -> dict[str, Any]:
    """A Call resource, as Twilio returns it (the fields the SDK reads)."""
    return {"sid": sid, "account_sid": account_sid, "api_version": "2010-04-01",
            "to": form.get("To"), "from": form.get("From"), "status": status,
            "direction": "outbound-api",
            "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{sid}.json"}


def _handler(fake: FakeCalls) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self._serve("POST")

        def do_GET(self) -> None:
            self._serve("GET")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode("utf-8") if length else ""
            form = dict(parse_qsl(raw, keep_blank_values=True))
            status, body = fake.answer(method, self.path.split("?", 1)[0], form,
                                       _basic_auth(self.headers.get("Authorization")))
            data = json.dumps(body).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def serve_fake_calls() -> Iterator[FakeCalls]:
    """Run a FakeCalls on 127.0.0.1 (an OS-picked port) for the duration of the block."""
    fake = FakeCalls()
    with serving(_handler(fake), "fake-calls") as fake.url:
        yield fake
