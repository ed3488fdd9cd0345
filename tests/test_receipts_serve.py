"""`incident receipts serve` as a real process on 127.0.0.1: Twilio status callbacks signed by
the twilio SDK's own validator logic are recorded before the answer; bad signatures, another
URL's signature and malformed bodies are refused with nothing recorded; a SIGKILL right after
an answer loses nothing; out-of-order callbacks settle by the provider's time."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from test_receipts_store import NOW, sent_sms, settled
from twilio.request_validator import RequestValidator

from cli_fixtures import Workspace
from incident.store import Store
from incident.store import receipts as rc

TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC = "https://notify.example.com"
CALLBACK = PUBLIC + "/twilio/status"


class Server:
    def __init__(self, ws: Workspace, *extra: str) -> None:
        env = {**os.environ, "TWILIO_AUTH_TOKEN": TOKEN}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "incident", "--config", str(ws.config), "--db", ws.db,
             "receipts", "serve", "--port", "0", *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/twilio/status", line)
        assert found, (line, self.process.stderr.read() if self.process.stderr else "")
        self.url = found.group(0)

    def post(self, form: dict[str, str], *, signed_for: str = CALLBACK,
             signature: str | None = None, body: bytes | None = None) -> int:
        """POST `form` signed as Twilio signs it for `signed_for`; the HTTP status."""
        sign = RequestValidator(TOKEN).compute_signature(signed_for, form)
        request = urllib.request.Request(
            self.url, data=body if body is not None else urlencode(form).encode(),
            headers={"X-Twilio-Signature": signature if signature is not None else sign,
                     "Content-Type": "application/x-www-form-urlencoded"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=10)


@pytest.fixture
def served(ws: Workspace) -> Iterator[tuple[Server, Store]]:
    ws.configure(lambda cfg: cfg.update(receipts={"public_url": PUBLIC + "/"}))
    store, _ = sent_sms(ws.db, ["SM1", "SM2", "CA1"])
    server = Server(ws)
    try:
        yield server, store
    finally:
        server.stop()
        store.close()


def sms(sid: str, status: str, **extra: str) -> dict[str, str]:
    return {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC1", "MessageStatus": status,
            "SmsStatus": status, "To": "+8613800000000", **extra}


def call(sid: str, status: str, at: datetime, **extra: str) -> dict[str, str]:
    return {"CallSid": sid, "AccountSid": "AC1", "CallStatus": status,
            "Timestamp": format_datetime(at), **extra}


def stored(store: Store) -> list[Any]:
    with store.read() as conn:
        return list(conn.execute(rc.schema.receipts.select()).all())


def test_signed_callbacks_are_recorded_once_and_settle_rows(
        served: tuple[Server, Store]) -> None:
    server, store = served
    assert server.post(sms("SM1", "sent")) == 204
    assert server.post(sms("SM1", "delivered")) == 204
    assert server.post(sms("SM2", "undelivered", ErrorCode="30003")) == 204
    assert server.post(sms("SM2", "undelivered", ErrorCode="30003")) in (204,)  # again
    assert settled(store, "SM1") == ("delivered", None)
    assert settled(store, "SM2") == ("undelivered", "30003")
    assert server.stop() == 0  # SIGTERM: a graceful stop


def test_bad_signatures_and_malformed_bodies_record_nothing(
        served: tuple[Server, Store]) -> None:
    server, store = served
    good = sms("SM1", "delivered")
    assert server.post(good, signature="bm90IGEgc2lnbmF0dXJl") == 403
    assert server.post(good, signature="") == 403
    assert server.post(good, signed_for="https://other.example.com/twilio/status") == 403
    assert server.post({**good, "MessageStatus": "undelivered",
                        "SmsStatus": "undelivered"}, signature=RequestValidator(
        TOKEN).compute_signature(CALLBACK, good)) == 403  # a signature of other fields
    assert server.post({"AccountSid": "AC1", "To": "+8613800000000"}) == 400
    assert server.post(sms("SM1", "exploded")) == 400
    assert server.post(sms("SM1", "delivered", ErrorCode="x")) == 400
    assert server.post({}, body=b"\xff\xfe not a form") in (400, 403)
    assert server.post(sms("SM404", "delivered")) == 404
    assert stored(store) == []
    assert settled(store, "SM1") == (None, None)


def test_out_of_order_call_callbacks_settle_by_the_providers_time(
        served: tuple[Server, Store]) -> None:
    server, store = served
    assert server.post(call("CA1", "completed", NOW + timedelta(seconds=40),
                            AnsweredBy="human")) == 204
    assert server.post(call("CA1", "ringing", NOW + timedelta(seconds=5))) == 204
    assert server.post(call("CA1", "no-answer", NOW + timedelta(seconds=30))) == 204
    assert settled(store, "CA1") == ("answered", None)
    assert len(stored(store)) == 3


def test_a_sigkill_right_after_the_answer_loses_nothing(
        served: tuple[Server, Store]) -> None:
    server, store = served
    assert server.post(sms("SM1", "delivered")) == 204
    server.process.kill()
    server.process.wait(timeout=10)
    assert settled(store, "SM1") == ("delivered", None)
    assert [r.source for r in stored(store)] == ["callback"]


def test_missing_configuration_is_bad_input_and_names_what_to_set(
        sqlite_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = sqlite_ws
    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("TWILIO_ACCOUNT_SID", raising=False)
    assert "receipts.public_url" in ws.run("receipts", "serve", code=2).stderr
    assert "Twilio" in ws.run("receipts", "poll", code=2).stderr  # the file channel: none
    assert "--until" in ws.run("receipts", "poll", "--until", "soon", code=2).stderr
    ws.configure(lambda cfg: cfg.update(receipts={"public_url": PUBLIC}))
    assert "TWILIO_AUTH_TOKEN" in ws.run("receipts", "serve", code=2).stderr
    ws.configure(lambda cfg: cfg.update(receipts={"public_url": "ftp://user:pw@x"}))
    refused = ws.run("receipts", "serve", code=2)
    assert "public_url" in refused.stderr and "pw" not in refused.output
    assert "Traceback" not in refused.output


def test_concurrent_callbacks_share_commits_and_each_gets_its_own_answer(
        sqlite_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app in this process on a real SQLite file: 60 callbacks in flight at once are
    committed in at most two write transactions (group commit: the first group, held until
    every callback has arrived, then all the others together), each answered after its own outcome
    (204 recorded, 404 unknown SID) and every known one stored."""
    import asyncio
    import threading

    import aiohttp
    from aiohttp import web

    from incident.inbound import server
    from incident.inbound.server import STATUS_PATH, make_app

    sids = [f"SM{i}" for i in range(50)]
    store, _ = sent_sms(sqlite_ws.db, sids)
    forms = [sms(sid, "delivered") for sid in sids] + [
        sms(f"SMX{i}", "delivered") for i in range(10)]
    # A callback is handed to the writer in the loop step that reads it (from_callback, then
    # the append): once all have been read, the writer's next group holds every one not yet
    # written. The first write waits for that, so the grouping is certain, not a race.
    arrived = 0
    everyone = threading.Event()
    read = server.from_callback

    def reading(*args: Any, **kwargs: Any) -> Any:
        nonlocal arrived
        arrived += 1
        if arrived == len(forms):
            everyone.set()
        return read(*args, **kwargs)

    monkeypatch.setattr(server, "from_callback", reading)
    writes = 0
    write = store.write

    def counted() -> Any:
        nonlocal writes
        writes += 1
        if writes == 1:
            assert everyone.wait(timeout=120), "the callbacks never all arrived"
        return write()

    store.write = counted  # type: ignore[method-assign]
    app = make_app(store, auth_token=TOKEN, callback_url=CALLBACK, now=lambda: NOW)

    async def run() -> list[int]:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as session:
                async def post(form: dict[str, str]) -> int:
                    sign = RequestValidator(TOKEN).compute_signature(CALLBACK, form)
                    async with session.post(f"http://127.0.0.1:{port}{STATUS_PATH}",
                                            data=form, headers={"X-Twilio-Signature": sign},
                                            timeout=aiohttp.ClientTimeout(total=60)) as answer:
                        return answer.status
                return list(await asyncio.gather(*(post(f) for f in forms)))
        finally:
            await runner.cleanup()

    try:
        answers = asyncio.run(run())
        assert answers == [204] * 50 + [404] * 10
        # One transaction per callback would be 60; grouped, the first group (taken when the
        # writer starts: the first callback, or more if they came first) and all the rest.
        assert writes <= 2, writes
        assert len(stored(store)) == 50
        assert all(settled(store, sid) == ("delivered", None) for sid in sids)
    finally:
        store.close()
