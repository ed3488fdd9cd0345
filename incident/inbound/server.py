"""`receipts serve`: an aiohttp app that takes Twilio's status callbacks at /twilio/status,
customers' SMS replies at /twilio/inbound and key presses in calls at /twilio/voice/gather.

Each callback is checked (X-Twilio-Signature, by the twilio SDK's RequestValidator, against
the public URL Twilio was given), read, and recorded in a committed write transaction before
the 2xx answer: a crash after the answer loses nothing, and the same callback again is
stored once. Answers: 204 recorded (or already recorded), 403 bad signature, 400 malformed,
404 no row has that SID (yet), 503 the database refused; nothing is recorded on any of them.
A reply or key press is signed and recorded the same way (a duplicate MessageSid is kept once)
and answered with empty TwiML: the acknowledgement, if any, is an outbox row, sent and counted
like every other message.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime

from aiohttp import web
from twilio.request_validator import RequestValidator

from incident.channels.twiml import GATHER_PATH
from incident.errors import IncidentError
from incident.inbound.replies import InboundReply
from incident.inbound.twilio_status import Malformed, from_callback
from incident.metrics import NO_METRICS, Metrics
from incident.privacy import scrub
from incident.store import Store, receipts

STATUS_PATH = "/twilio/status"
INBOUND_PATH = "/twilio/inbound"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
MAX_DIGITS_BODY = 8


def make_app(store: Store, *, auth_token: str, callback_url: str,
             now: Callable[[], datetime], metrics: Metrics = NO_METRICS,
             receive: Callable[[InboundReply], object] | None = None) -> web.Application:
    """The app; `callback_url` is <receipts.public_url>/twilio/status, as Twilio calls it (the
    other paths are signed for the same public URL); `receive(reply)` records a reply or key
    press (committed when it returns). Every status answer is told to `metrics` (kind
    sms/call/unknown, result, time)."""
    validator = RequestValidator(auth_token)
    public = callback_url.removesuffix(STATUS_PATH)
    writer = _GroupCommit(store, now)

    async def signed(request: web.Request,
                     path: str) -> tuple[dict[str, str], web.Response | None]:
        """The request's form, and None if its signature is Twilio's for <public>`path`,
        else the answer refusing it."""
        try:
            form = await request.post()
        except (UnicodeDecodeError, ValueError):  # not a readable form: nothing to check
            return {}, web.Response(status=400, text="malformed callback: not a form\n")
        params = {key: str(value) for key, value in form.items()}
        url = public + path + (f"?{request.query_string}" if request.query_string else "")
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not validator.validate(url, params, signature):
            return params, web.Response(status=403, text="invalid X-Twilio-Signature\n")
        return params, None

    async def answer(request: web.Request) -> tuple[str, str, web.Response]:
        params, refused = await signed(request, STATUS_PATH)
        kind = "call" if "CallSid" in params else "sms" if "MessageSid" in params else "unknown"
        if refused is not None:
            return kind, "bad_signature" if refused.status == 403 else "malformed", refused
        try:
            receipt = from_callback(params, now=now())
        except Malformed as exc:
            return kind, "malformed", web.Response(
                status=400, text=f"malformed callback: {exc}\n")
        try:
            done = await writer.record(receipt)
        except IncidentError as exc:  # the database refused: Twilio may call again
            return kind, "unavailable", web.Response(
                status=503, text=f"not recorded: {exc.message}\n")
        if done.unmatched:
            return kind, "unmatched", web.Response(
                status=404, text="no message or call with this SID\n")
        return kind, "duplicate" if done.duplicates else "recorded", web.Response(status=204)

    async def status(request: web.Request) -> web.Response:
        began = time.perf_counter()
        kind, result, response = await answer(request)
        metrics.callback(kind, result, time.perf_counter() - began)
        return response

    async def record(reply: InboundReply) -> web.Response:
        if receive is None:
            return web.Response(status=404, text="replies are not taken here\n")
        try:  # in a thread: a write waiting for the database must not hold up the others
            await asyncio.to_thread(receive, reply)
        except IncidentError as exc:  # the database refused: Twilio may call again
            return web.Response(status=503, text=f"not recorded: {exc.message}\n")
        return web.Response(text=EMPTY_TWIML, content_type="text/xml")

    async def inbound(request: web.Request) -> web.Response:
        params, refused = await signed(request, INBOUND_PATH)
        if refused is not None:
            return refused
        sid = params.get("MessageSid") or params.get("SmsSid") or ""
        if not sid or not params.get("From"):
            return web.Response(status=400, text="malformed message: no MessageSid or From\n")
        return await record(InboundReply(sid=sid, number=params["From"], to_number=params.get("To"),
                                   body=params.get("Body", ""), at=now()))

    async def gather(request: web.Request) -> web.Response:
        params, refused = await signed(request, GATHER_PATH)
        if refused is not None:
            return refused
        # A call of ours: To is the customer. One key press per call is kept.
        sid, number = params.get("CallSid", ""), params.get("To", "")
        if not sid or not number:
            return web.Response(status=400, text="malformed key press: no CallSid or To\n")
        return await record(InboundReply(sid=f"{sid}/gather", number=number,
                                   to_number=params.get("From"),
                                   body=params.get("Digits", "")[:MAX_DIGITS_BODY], at=now(),
                                   source="keypad"))

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_post(STATUS_PATH, status)
    app.router.add_post(INBOUND_PATH, inbound)
    app.router.add_post(GATHER_PATH, gather)
    return app


class _GroupCommit:
    """Receipts recorded by one writer, off the event loop, several per transaction: the
    callbacks that arrive while a transaction commits are recorded together in the next one
    (at most MAX_GROUP), and each is answered only after the commit that holds it. Under load
    that is one commit (one fsync on SQLite) per group instead of per callback, and the loop
    keeps reading requests while the database works; alone, a callback is committed at once."""

    MAX_GROUP = 256

    def __init__(self, store: Store, now: Callable[[], datetime]) -> None:
        self.store = store
        self.now = now
        self.waiting: list[tuple[receipts.Receipt, asyncio.Future[receipts.Recorded]]] = []
        self.busy = False

    async def record(self, receipt: receipts.Receipt) -> receipts.Recorded:
        """Record `receipt`, committed; IncidentError when the database refused."""
        future: asyncio.Future[receipts.Recorded] = asyncio.get_running_loop().create_future()
        self.waiting.append((receipt, future))
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.waiting:
                group = self.waiting[:self.MAX_GROUP]
                del self.waiting[:self.MAX_GROUP]
                try:
                    results = await asyncio.to_thread(self._write, [r for r, _ in group])
                except Exception as exc:  # IncidentError: 503; anything else: 500
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), done in zip(group, results, strict=True):
                    if not future.done():
                        future.set_result(done)
        finally:
            self.busy = False

    def _write(self, group: list[receipts.Receipt]) -> list[receipts.Recorded]:
        """One write transaction, each receipt's outcome of its own."""
        now = self.now()
        with self.store.write() as conn:
            return [receipts.record(conn, [receipt], now=now) for receipt in group]


async def serve(app: web.Application, host: str, port: int,
                ready: Callable[[str, int], None], *,
                tick: Callable[[], None] | None = None, every: float = 60.0,
                ticking: str = "escalation") -> None:
    """Serve `app` until SIGINT or SIGTERM, then stop taking requests and finish the ones
    in progress; `ready(host, port)` once listening (port: the one bound, for port 0).
    `tick()` runs every `every` seconds meanwhile, in a thread (never holding up an answer);
    `ticking` names what it does in the message when it fails."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        ready(str(bound[0]), int(bound[1]))
        if tick is None:
            await stop.wait()
        else:
            await _every(tick, every, stop, ticking)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


async def _every(tick: Callable[[], None], seconds: float, stop: asyncio.Event,
                 ticking: str = "escalation") -> None:
    """Run `tick` in a thread every `seconds` until `stop`; a failing tick is reported on
    stderr and tried again next time: it must not stop the receipts being taken."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        if stop.is_set():
            return
        try:
            await asyncio.to_thread(tick)
        except Exception as exc:  # any failure: report it, keep serving
            print(f"{ticking} failed: {type(exc).__name__}: {scrub(str(exc))}",
                  file=sys.stderr, flush=True)
