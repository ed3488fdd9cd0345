"""A scripted fake of Twilio's `POST /2010-04-01/Accounts/{sid}/Messages.json`, for faults
that Prism cannot produce (error codes, 429 bursts, 5xx, slow answers, bad credentials).

A stdlib HTTP server in a thread on 127.0.0.1 and a port the OS picks, so it serves any event
loop and any number of concurrent clients. Every request is recorded (time, account, form
fields) for rate and payload assertions. Answers are shaped like Twilio's: the Message resource
on 201, `{"code", "message", "more_info", "status"}` on errors.
"""

from __future__ import annotations

import base64
import json
import random
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from incident.rendering import sms_segments

MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")
FETCH_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/(?P<kind>Messages|Calls)/"
                        r"(?P<resource>[^/]+)\.json$")


@dataclass(frozen=True)
class Scripted:
    """One error answer: HTTP status, Twilio error code and message."""

    status: int
    code: int | None  # None: the body has no "code" (a gateway, or a bare HTTP error)
    message: str


# Twilio's magic test numbers (https://www.twilio.com/docs/iam/test-credentials) and their errors.
DEFAULT_SCRIPT: dict[str, Scripted] = {
    "+15005550001": Scripted(400, 21211, "The 'To' number +15005550001 is not a valid phone "
                                         "number."),
    "+15005550004": Scripted(400, 21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": Scripted(400, 21614, "'To' number is not a valid mobile number"),
}
TOO_MANY = Scripted(429, 20429, "Too Many Requests")
AUTH_FAILED = Scripted(401, 20003, "Authenticate")


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it."""

    at: float  # time.monotonic() on arrival
    wall: float  # time.time() on arrival
    method: str
    path: str
    account_sid: str | None
    username: str | None
    form: dict[str, str]  # last value of each field
    fields: list[str]  # field names in the order sent, repeats included
    status: int  # what the fake answered
    sid: str | None  # the Message SID it returned, if any


@dataclass
class FakeTwilio:
    """The fake's state; change it between sends to script the next answers."""

    url: str = ""
    script: dict[str, Scripted] = field(default_factory=lambda: dict(DEFAULT_SCRIPT))
    credentials: tuple[str, str] | None = None  # (account SID, token) to accept; None: any
    burst: int = 0  # answer this many of the next requests with 429 / 20429
    # Recurring bursts: every `burst_every`-th request starts a burst of `burst_length` 429s
    # (that request included), e.g. a provider that keeps pushing back during a long send.
    burst_every: int = 0
    burst_length: int = 0
    seen: int = 0  # authenticated requests to Messages.json so far
    status_override: Scripted | None = None  # answer every request with this error
    delay: float = 0.0  # seconds to wait before answering
    latency: tuple[float, float] | None = None  # and a random wait in [low, high] seconds
    raw_body: bytes | None = None  # answer 201 with these bytes instead of a Message
    echo_credentials: bool = False  # put the received user:password into error messages
    requests: list[Recorded] = field(default_factory=list)
    # GET …/Messages/{Sid}.json and …/Calls/{Sid}.json: each fetch of a SID answers the next
    # (status, error code) of its walk, then the last one again; a SID without one is 404.
    walks: dict[str, list[tuple[str, int | None]]] = field(default_factory=dict)
    fetched: dict[str, int] = field(default_factory=dict)
    # GET …/Messages.json?To=…: the inbound messages listed (Message resources, as Twilio
    # lists them); each list request's query is kept in `listed`.
    inbound: list[dict[str, Any]] = field(default_factory=list)
    listed: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self.lock:
            self.requests.clear()

    def recorded(self) -> list[Recorded]:
        """A copy of the requests so far, in arrival order."""
        with self.lock:
            return list(self.requests)

    def answer(self, method: str, path: str, form: dict[str, str],
               auth: tuple[str, str] | None) -> tuple[int, dict[str, Any] | bytes]:
        """Status and body for one request (called by the handler thread)."""
        fetch = FETCH_PATH.match(path)
        if method == "GET" and fetch is not None and auth is not None:
            return _walked(self, fetch["kind"], fetch["resource"])
        match = MESSAGES_PATH.match(path)
        if method == "GET" and match is not None and auth is not None:
            to = form.get("To")
            with self.lock:
                self.listed.append(dict(form))
            found = [m for m in self.inbound if to is None or m["to"] == to]
            return 200, {"messages": found, "next_page_uri": None, "page": 0,
                         "page_size": 50, "first_page_uri": path, "previous_page_uri": None,
                         "uri": path, "start": 0, "end": len(found)}
        if method != "POST" or match is None:
            return _error(Scripted(404, 20404, f"The requested resource {path} was not found"))
        if auth is None or (self.credentials is not None and auth != self.credentials):
            scripted = AUTH_FAILED
            if self.echo_credentials and auth is not None:
                scripted = Scripted(401, 20003, f"Authenticate: {auth[0]}:{auth[1]} is wrong")
            return _error(scripted)
        with self.lock:
            self.seen += 1
            if self.burst_every and self.seen % self.burst_every == 0:
                self.burst += self.burst_length
            bursting = self.burst > 0
            if bursting:
                self.burst -= 1
        if bursting:
            return _error(TOO_MANY)
        if self.status_override is not None:
            return _error(self.status_override)
        to = form.get("To", "")
        if not to:
            return _error(Scripted(400, 21604, "A 'To' phone number is required."))
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return _error(Scripted(400, 21603, "A 'From' phone number is required."))
        if to in self.script:
            return _error(self.script[to])
        if self.raw_body is not None:
            return 201, self.raw_body
        return 201, message_resource(match["sid"], form)


def _walked(fake: FakeTwilio, kind: str, sid: str) -> tuple[int, dict[str, Any]]:
    with fake.lock:
        walk = fake.walks.get(sid)
        if not walk:
            return _error(Scripted(404, 20404, f"The requested resource {sid} was not found"))
        step = fake.fetched.get(sid, 0)
        fake.fetched[sid] = step + 1
        status, code = walk[min(step, len(walk) - 1)]
    now = format_datetime(datetime.now(UTC))
    body: dict[str, Any] = {"sid": sid, "status": status, "date_updated": now}
    if kind == "Calls":
        body.update(answered_by=None, end_time=now if status in {
            "completed", "busy", "no-answer", "failed", "canceled"} else None)
    else:
        body.update(error_code=code, error_message=None)
    return 200, body


def message_resource(account_sid: str, form: dict[str, str]) -> dict[str, Any]:
    """A Message resource as Twilio returns it from create."""
    sid = "SM" + secrets.token_hex(16)
    now = format_datetime(datetime.now(UTC))
    body = form.get("Body", "")
    return {
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": form.get("From"),
        "messaging_service_sid": form.get("MessagingServiceSid"),
        "num_media": "0",
        "num_segments": str(sms_segments(body).segments),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        # Twilio says "accepted" while a messaging service still picks the sender.
        "status": "queued" if form.get("From") else "accepted",
        "subresource_uris": {
            "media": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"},
        "to": form.get("To"),
        "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
    }


def _error(scripted: Scripted) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"message": scripted.message, "status": scripted.status}
    if scripted.code is not None:
        body["code"] = scripted.code
        body["more_info"] = f"https://www.twilio.com/docs/errors/{scripted.code}"
    return scripted.status, body


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except ValueError:
        return None
    return user, password


def _handler(fake: FakeTwilio) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as aiohttp expects from Twilio

        def do_POST(self) -> None:
            self._serve("POST")

        def do_GET(self) -> None:
            self._serve("GET")

        def _serve(self, method: str) -> None:
            at, wall = time.monotonic(), time.time()
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode("utf-8") if length else ""
            if method == "GET" and "?" in self.path:  # a list's filters: treated as the form
                raw = self.path.split("?", 1)[1]
            pairs = parse_qsl(raw, keep_blank_values=True)
            fields = [name for name, _ in pairs]
            form = dict(pairs)
            auth = _basic_auth(self.headers.get("Authorization"))
            path = self.path.split("?", 1)[0]
            status, body = fake.answer(method, path, form, auth)
            match = MESSAGES_PATH.match(path)
            with fake.lock:
                fake.requests.append(Recorded(
                    at=at, wall=wall, method=method, path=path,
                    account_sid=match["sid"] if match else None,
                    username=auth[0] if auth else None, form=form, fields=fields,
                    status=status, sid=body.get("sid") if isinstance(body, dict) else None))
            if fake.delay:
                time.sleep(fake.delay)
            if fake.latency:
                time.sleep(random.uniform(*fake.latency))  # a real API's varying latency
            data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the recorder is the log

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The stdlib's backlog of 5 drops the SYNs of a burst of new connections, which the
    # client's kernel resends a second later: that would look like a slow API to rate tests.
    request_queue_size = 128


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], name: str) -> Iterator[str]:
    """Serve `handler` in a thread on 127.0.0.1 (an OS-picked port); yields its base URL."""
    # 127.0.0.1, not localhost: localhost may resolve to ::1 first, where nothing listens.
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=name,
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def serve_fake_twilio() -> Iterator[FakeTwilio]:
    """Run a FakeTwilio on 127.0.0.1 (an OS-picked port) for the duration of the block."""
    fake = FakeTwilio()
    with serving(_handler(fake), "fake-twilio") as fake.url:
        yield fake
