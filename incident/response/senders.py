"""A second sender process for a foreground send (`incident start`, `incident deliver`): the
email of a large notice goes out from two processes, so that both CPUs work (one Python
process keeps one busy at most).

The second process is forked (not spawned: a fresh interpreter re-imports for seconds) once
the first rows are recorded. It runs a Dispatcher of its own over the same outbox, for the same
incident and the email channel only: its own worker name (claims are per worker, so no row is
sent by both), its own database connections (the inherited pool is dropped unclosed: the
parent's connections stay the parent's) and its own event loop. The relay never sees more than
configured: each process has half of `channels.email.smtp.connections` and half the email rate.

The parent tells it when every row is recorded (until then it looks again for new rows, as the
parent does) and reads its progress and, at the end, its tally through a pipe; the start's or
deliver's report and exit code include what it did. Stopping: Ctrl-C interrupts both (the same
process group); SIGTERM to it, or the parent ending without a word (killed), makes it finish
the sends in hand and give back the rest. If it dies, the rows it had claimed are given back by
the recovery of dead workers' claims and the parent's report says so (exit 1): `incident
deliver` sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from incident.channels.factory import build_channels, concurrency
from incident.composer import Composer
from incident.delivery import DeliveryPolicy, DeliveryReport, Dispatcher, Tally
from incident.rendering import Renderer
from incident.settings import Runtime
from incident.store import Store, deliveries

SPLIT_AT = 1000  # emails due: below this a second process is not worth its start
_PROGRESS_EVERY = 0.2  # s between the progress lines the second process writes
_RECHECK = 0.05  # s: how soon the second process looks again for rows still being recorded


def processes(rt: Runtime, emails_due: Callable[[], int]) -> int:
    """How many sender processes a foreground send of `emails_due()` emails uses: 2 only for
    email over SMTP with 2 connections or more to share, and with `delivery.processes` (or, by
    default, 2 CPUs and SPLIT_AT emails). The emails are counted only when that could be 2."""
    email = rt.settings.channels.email
    if email.transport != "smtp" or email.smtp is None or email.smtp.connections < 2:
        return 1
    wanted = rt.settings.delivery.processes
    if wanted == 1 or (wanted is None and (os.cpu_count() or 1) < 2):
        return 1
    due = emails_due()
    if wanted is None:
        wanted = 2 if due >= SPLIT_AT else 1
    return wanted if due > 1 else 1


def can_fork() -> bool:
    """Whether this process may fork its second sender now: from the main thread, with no other
    thread at work (a non-daemon thread, such as the status page's rebuild after a notice).
    A fork copies only the forking thread: a lock another thread holds at that instant (in
    SQLite, say) stays held in the child forever, and a page build pauses the collector."""
    main = threading.main_thread()
    return threading.current_thread() is main and not any(
        thread.is_alive() and not thread.daemon
        for thread in threading.enumerate() if thread is not main)


def emails_due(store: Store, incident_id: str | None) -> int:
    """Email rows not yet sent or failed (of one incident or all)."""
    with store.read() as conn:
        counts = deliveries.counts(conn, incident_id, parties=None).get("email", {})
    return sum(n for state, n in counts.items() if state not in ("sent", "failed"))


def share(rt: Runtime, part: int) -> Runtime:
    """`rt` with the email channel's part of two processes (0: the parent, 1: the child):
    half the connections (the parent gets the odd one) and half the rate."""
    email = rt.settings.channels.email
    assert email.smtp is not None
    smtp = email.smtp.model_copy(update={"connections": (email.smtp.connections + 1 - part) // 2})
    email = email.model_copy(update={"smtp": smtp, "rate": email.rate / 2})
    channels = rt.settings.channels.model_copy(update={"email": email})
    return dataclasses.replace(rt, settings=rt.settings.model_copy(update={"channels": channels}))


@dataclass
class Helped:
    """What the second process did, as far as the parent knows."""

    sent: int = 0
    failed: int = 0
    fallbacks: int = 0
    fatal: str | None = None
    interrupted: bool = False
    died: str | None = None  # how it ended without its tally (a signal, an error)


class Helper:
    """The second sender process, seen from the parent."""

    def __init__(self, pid: int, control: int, reports: int) -> None:
        self.pid = pid
        self._control: int | None = control  # parent -> child: b"r" once every row is recorded
        self._reports = reports  # child -> parent: progress lines, then its tally
        self._buffer = b""
        self._eof = asyncio.Event()
        self.helped = Helped()
        self._final = False
        self._reaped = False

    @classmethod
    def fork(cls, store: Store, rt: Runtime, renderer: Renderer, incident_id: str | None, *,
             recording: bool) -> Helper:
        """Start the second process (see the module's docstring)."""
        control_r, control_w = os.pipe()
        reports_r, reports_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.close(control_w)
                os.close(reports_r)
                _child(store, share(rt, 1), renderer, incident_id, control_r, reports_w,
                       recording=recording)
                code = 0
            except BaseException as exc:  # told to the parent, never raised here
                _write(reports_w, {"error": f"{type(exc).__name__}: {exc}"[:300]})
            finally:
                os._exit(code)
        os.close(control_r)
        os.close(reports_w)
        return cls(pid, control_w, reports_r)

    def recorded(self) -> None:
        """Every row is recorded: the child ends once nothing more is due."""
        if self._control is not None:
            with contextlib.suppress(OSError):
                os.write(self._control, b"r")

    def watch(self, on_progress: Callable[[], None]) -> None:
        """Read the child's lines as they come (in the running event loop)."""
        os.set_blocking(self._reports, False)
        asyncio.get_running_loop().add_reader(self._reports, self._read, on_progress)

    async def finished(self) -> Helped:
        """Wait for the child to end; what it did."""
        await self._eof.wait()
        return self.close()

    def close(self) -> Helped:
        """Tell the child to stop (if it has not) and reap it; what it did."""
        if self._reaped:
            return self.helped
        if self._control is not None:
            os.close(self._control)
            self._control = None
        if not self._eof.is_set():
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(self._reports)
            os.set_blocking(self._reports, True)
            while chunk := os.read(self._reports, 65536):
                self._take(chunk)
            self._eof.set()
            os.close(self._reports)
        _, status = os.waitpid(self.pid, 0)
        self._reaped = True
        if not self._final and self.helped.died is None:
            code = os.waitstatus_to_exitcode(status)
            self.helped.died = (f"killed by signal {-code}" if code < 0
                                else f"ended with exit code {code}")
        return self.helped

    def _read(self, on_progress: Callable[[], None]) -> None:
        try:
            chunk = os.read(self._reports, 65536)
        except BlockingIOError:
            return
        if chunk:
            self._take(chunk)
            on_progress()
            return
        asyncio.get_running_loop().remove_reader(self._reports)
        os.close(self._reports)
        self._eof.set()

    def _take(self, chunk: bytes) -> None:
        lines = (self._buffer + chunk).split(b"\n")
        self._buffer = lines.pop()
        for line in lines:
            data = json.loads(line)
            if "error" in data:
                self.helped.died = f"failed: {data['error']}"
                continue
            self.helped.sent, self.helped.failed = data["sent"], data["failed"]
            if data.get("final"):
                self._final = True
                self.helped.fallbacks = data["fallbacks"]
                self.helped.fatal = data["fatal"]
                self.helped.interrupted = data["interrupted"]


def merged(report: DeliveryReport, helped: Helped, dispatcher: Dispatcher,
           incident_id: str | None, pid: int) -> DeliveryReport:
    """The parent's report with the child's outcomes added, and what is left counted again
    now that both have stopped (a dead child's claims given back first)."""
    dispatcher.recover()
    fatal = report.fatal or (f"email (second sender process): {helped.fatal}"
                             if helped.fatal else None)
    if helped.died:
        fatal = fatal or (f"the second sender process (pid {pid}) {helped.died}: the messages "
                          "it held are pending again; `incident deliver` sends them")
    with dispatcher.store.read() as conn:
        counts = deliveries.counts(conn, incident_id, parties=None)
        waiting = deliveries.waiting(conn, incident_id)
    return dataclasses.replace(report, sent=report.sent + helped.sent,
                               failed=report.failed + helped.failed,
                               fallbacks=report.fallbacks + helped.fallbacks,
                               interrupted=report.interrupted or helped.interrupted,
                               fatal=fatal, counts=counts, waiting=waiting,
                               pending=dispatcher.pending(incident_id))


def with_helped(tally: Tally, helper: Helper | None) -> Tally:
    """A progress tally with the child's sent and failed added."""
    if helper is None:
        return tally
    return dataclasses.replace(tally, sent=tally.sent + helper.helped.sent,
                               failed=tally.failed + helper.helped.failed)


# --- the child ------------------------------------------------------------------------------


def _child(store: Store, rt: Runtime, renderer: Renderer, incident_id: str | None,
           control: int, reports: int, *, recording: bool) -> None:
    # Connections of the parent's pool are the parent's: dropped here unclosed, new ones
    # opened on first use.
    store.engine.dispose(close=False)
    policy = DeliveryPolicy.from_settings(rt.settings.delivery, concurrency(rt))
    channels = {"email": build_channels(rt)["email"]}
    dispatcher = Dispatcher(store, Composer(rt, renderer, {}), channels, policy=policy,
                            clock=rt.clock)
    asyncio.run(_send(dispatcher, incident_id, control, reports, recording=recording))


async def _send(dispatcher: Dispatcher, incident_id: str | None, control: int, reports: int,
                *, recording: bool) -> None:
    loop = asyncio.get_running_loop()
    recorded = asyncio.Event()
    if not recording:
        recorded.set()

    def readable() -> None:
        if not os.read(control, 64):  # the parent closed it (or died): stop
            loop.remove_reader(control)
            dispatcher.stop()
        recorded.set()

    loop.add_reader(control, readable)
    loop.add_signal_handler(signal.SIGTERM, dispatcher.stop)  # the sends in hand finish
    runs: list[DeliveryReport] = []
    last_line = 0.0

    def progress(tally: Tally) -> None:
        nonlocal last_line
        if time.monotonic() - last_line >= _PROGRESS_EVERY:
            last_line = time.monotonic()
            _write(reports, {"sent": tally.sent + sum(r.sent for r in runs),
                             "failed": tally.failed + sum(r.failed for r in runs)})

    interrupted = False
    try:
        while True:
            was_recorded = recorded.is_set()
            runs.append(await dispatcher.run(incident_id=incident_id, progress=progress))
            last = runs[-1]
            if was_recorded or last.interrupted or last.fatal or dispatcher.stopped:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(recorded.wait(), _RECHECK)
    except asyncio.CancelledError:  # Ctrl-C between two runs (a run itself returns then)
        interrupted = True
    _write(reports, {"sent": sum(r.sent for r in runs), "failed": sum(r.failed for r in runs),
                     "fallbacks": dispatcher.fallbacks,
                     "fatal": runs[-1].fatal if runs else None,
                     "interrupted": interrupted or any(r.interrupted for r in runs),
                     "final": True})


def _write(fd: int, data: dict[str, object]) -> None:
    """One line to the parent; nothing if it is gone (killed: the child stops on the EOF of
    its control pipe, and a failed write must not abandon the sends in hand)."""
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(data).encode() + b"\n")
