"""Sending what is recorded: a notice just recorded in the foreground, or the whole outbox
(`incident deliver`), resuming after any crash; and moving pending messages to this config's
transport on the supervisor's word.

A start's notice may still be being recorded when its first messages go: it is sent while the
rest of its rows are recorded, in one event loop (response/recording.py). Nothing is sent that
was not recorded first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from incident.channels import Channel
from incident.channels.factory import build_channels, concurrency
from incident.composer import Composer
from incident.delivery import DeliveryPolicy, DeliveryReport, Dispatcher, ProgressFn, Tally
from incident.metrics import NO_METRICS, Metrics
from incident.models import Event, EventType
from incident.payloads import DeliveryRerouted
from incident.response.journal import Journal
from incident.response.recording import (
    FIRST_SEND_WAIT,
    SENDING_BATCH,
    PendingRows,
    complete_notices,
)
from incident.response.results import NoticeResult, Prepared, SendResult, StartResult
from incident.response.senders import (
    Helper,
    can_fork,
    emails_due,
    merged,
    processes,
    share,
    with_helped,
)
from incident.settings import Runtime
from incident.store import deliveries
from incident.store import outbox as ob


class Sending:
    """Send recorded notices; reroute pending messages."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.rt = journal.rt
        self.metrics: Metrics = NO_METRICS  # told what every dispatcher of this process does

    def send(self, result: NoticeResult, *, queue_only: bool = False,
             progress: ProgressFn | None = None) -> SendResult:
        """Send the notice `result` recorded (customers' and parties') in the foreground,
        unless it is only queued for workers (`incident deliver`). A start's notice is sent
        while the rest of its rows are recorded, or (queued) recorded in full first; either
        way, the whole notice is recorded when this returns."""
        started = result if isinstance(result, StartResult) else None
        try:
            if queue_only or not (result.messages or result.internal):
                return SendResult(report=None, incident_id=result.incident_id)
            if started is not None and started.pending is not None:
                report = self._deliver_started(started, started.pending, progress)
                return SendResult(report=report, incident_id=result.incident_id)
            return self.deliver(result.incident_id, progress=progress)
        finally:
            if started is not None:
                self.finish_start(started)

    def prepare(self, ref: str | None = None, *, reroute: bool = False) -> Prepared:
        """Before `incident deliver` sends (of one incident or all): every channel's
        configuration checked, pending messages of another transport moved to this config's
        when the supervisor says so (`reroute`, recorded), and notices whose recording a
        crash interrupted completed."""
        incident_id = self.journal.store.resolve_id(ref) if ref else None
        self.journal.check_channels()  # before completing a notice records anything
        rerouted = self.reroute(incident_id) if reroute else []
        return Prepared(incident_id=incident_id, rerouted=rerouted,
                        notes=self.complete_notices(incident_id))

    def finish_start(self, result: StartResult) -> None:
        """Record the rest of a start's notice now (for `--queue-only`, or after sending
        stopped early); nothing to do once it is complete or was left to `incident deliver`."""
        if result.pending is not None and not result.pending.closed:
            result.pending.finish()
        result.pending = None

    def _deliver_started(self, result: StartResult, pending: PendingRows,
                         progress: ProgressFn | None) -> DeliveryReport:
        """Send a start's notice in the foreground while the rest of its rows are recorded
        (email from two processes when it is worth it: response/senders.py)."""
        due = pending.total if "email" in pending.channels else 0
        helper = self._helper(result.incident_id, lambda: due, recording=True)
        try:
            return asyncio.run(self._send_while_recording(result.incident_id, pending,
                                                          progress, helper))
        except KeyboardInterrupt:
            # Interrupted twice: stop now; `incident deliver` records the rest (and sends it).
            pending.close()
            raise
        finally:
            if helper is not None:
                helper.close()  # stopped and reaped, whatever happened
            self.finish_start(result)

    def _helper(self, incident_id: str | None, due: Callable[[], int], *,
                recording: bool) -> Helper | None:
        """The second sender process of this send, if it gets one (not when metrics are
        served: they count this process's sends; nor beside a thread at work: can_fork)."""
        if self.metrics is not NO_METRICS or processes(self.rt, due) < 2 or not can_fork():
            return None
        return Helper.fork(self.journal.store, self.rt, self.journal.renderer, incident_id,
                           recording=recording)

    def _dispatcher(self, rt: Runtime, channels: dict[str, Channel] | None = None,
                    policy: DeliveryPolicy | None = None) -> Dispatcher:
        composer = Composer(rt, self.journal.renderer, {})
        policy = policy or DeliveryPolicy.from_settings(rt.settings.delivery, concurrency(rt))
        return Dispatcher(self.journal.store, composer, channels or build_channels(rt),
                          policy=policy, clock=rt.clock, metrics=self.metrics)

    async def _send_while_recording(self, incident_id: str, pending: PendingRows,
                                    progress: ProgressFn | None,
                                    helper: Helper | None) -> DeliveryReport:
        """One event loop: the dispatcher sends what is recorded; between its awaits, a task
        records the next batch of rows (some ms of blocking each, then a pause as long), once
        the first messages have gone, so that recording never delays the first one. The
        second sender process (`helper`), if any, is told when every row is recorded."""
        dispatcher = self._dispatcher(share(self.rt, 0) if helper else self.rt)
        first_sent = asyncio.Event()
        runs: list[DeliveryReport] = []
        latest = Tally()

        def report(tally: Tally | None = None) -> None:
            nonlocal latest
            if tally is not None:
                first_sent.set()
                latest = tally
            if progress is not None:  # the runs before this one, plus this one
                progress(with_helped(
                    Tally(total=latest.total, sent=latest.sent + sum(r.sent for r in runs),
                          failed=latest.failed + sum(r.failed for r in runs),
                          retrying=latest.retrying, started=latest.started), helper))

        if helper is not None:
            helper.watch(report)

        async def record() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first_sent.wait(), FIRST_SEND_WAIT)
            while not pending.done:
                began = time.perf_counter()
                pending.step(SENDING_BATCH)
                await asyncio.sleep(time.perf_counter() - began)
            if helper is not None:
                helper.recorded()

        recorder = asyncio.ensure_future(record())
        try:
            while True:
                recorded_all = recorder.done()  # every row (or recording failed: see below)
                runs.append(await dispatcher.run(incident_id=incident_id, progress=report))
                last = runs[-1]
                if recorded_all or last.interrupted or last.fatal:
                    break
                # The dispatcher found nothing due before the next batch was recorded.
                await asyncio.wait([recorder], timeout=0.05)
        finally:
            await recorder  # the rest of the notice is recorded even when sending stopped
        done = DeliveryReport(sent=sum(r.sent for r in runs), failed=sum(r.failed for r in runs),
                              pending=last.pending, interrupted=last.interrupted,
                              counts=last.counts, elapsed=sum(r.elapsed for r in runs),
                              fatal=last.fatal, fallbacks=dispatcher.fallbacks,
                              waiting=last.waiting, transports=last.transports)
        return await self._helped(done, dispatcher, incident_id, helper)

    @staticmethod
    async def _helped(report: DeliveryReport, dispatcher: Dispatcher, incident_id: str | None,
                      helper: Helper | None) -> DeliveryReport:
        """`report` with the second process's outcomes, once it has ended (told to stop
        first when this one was interrupted or cannot go on)."""
        if helper is None:
            return report
        if report.interrupted or report.fatal:
            helper.close()
        else:
            await helper.finished()
        return merged(report, helper.helped, dispatcher, incident_id, helper.pid)

    def reroute(self, ref: str | None = None) -> list[Event]:
        """Move the pending messages of one incident (or of all) recorded for another
        transport onto this config's, one DELIVERY_REROUTED event per incident in the same
        transaction: the supervisor's explicit decision, on the record."""
        transports = self.rt.settings.channels.transports
        incident_id = self.journal.store.resolve_id(ref) if ref else None
        with self.journal.store.read() as conn:
            ids = deliveries.foreign_incidents(conn, transports, incident_id)
        events = []
        for each in ids:
            with self.journal.store.write() as conn:
                self.journal.store.lock_incident(conn, each)
                moved = {channel: found for channel, transport in transports.items()
                         if (found := ob.reroute(conn, each, channel, transport))}
                if moved:
                    events.append(self.journal.store.append(
                        conn, each, EventType.DELIVERY_REROUTED, actor=self.rt.operator,
                        data=DeliveryRerouted(moved=moved, to=dict(transports)),
                        at=self.rt.clock.now()))
        return events

    def deliver(self, ref: str | None = None, *, progress: ProgressFn | None = None,
                policy: DeliveryPolicy | None = None,
                channels: dict[str, Channel] | None = None,
                complete: bool = True) -> SendResult:
        """Send what is pending (for one incident or all), resuming after any crash; first
        (unless the caller just did, `complete=False`) completing interrupted notices."""
        incident_id = self.journal.store.resolve_id(ref) if ref else None
        notes = self.complete_notices(incident_id) if complete else []
        helper = None if channels or policy else self._helper(
            incident_id, lambda: emails_due(self.journal.store, incident_id), recording=False)
        try:
            dispatcher = self._dispatcher(share(self.rt, 0) if helper else self.rt, channels,
                                          policy)
            report = asyncio.run(self._run(dispatcher, incident_id, progress, helper))
        finally:
            if helper is not None:
                helper.close()
        return SendResult(report=report, incident_id=incident_id, notes=notes)

    async def _run(self, dispatcher: Dispatcher, incident_id: str | None,
                   progress: ProgressFn | None, helper: Helper | None) -> DeliveryReport:
        """One dispatcher run, with the second process's outcomes when there is one."""
        latest = Tally()

        def report(tally: Tally | None = None) -> None:
            nonlocal latest
            latest = tally or latest
            if progress is not None:
                progress(with_helped(latest, helper))

        if helper is not None:
            helper.watch(report)
        done = await dispatcher.run(incident_id=incident_id, progress=report)
        return await self._helped(done, dispatcher, incident_id, helper)

    def complete_notices(self, incident_id: str | None = None, *,
                         strict: bool = False) -> list[str]:
        """Record the missing rows of first notices whose recording stopped (see
        incident/recording.py); what the operator should know."""
        return complete_notices(self.journal.store, self.rt, incident_id, strict=strict)

