"""The dispatcher: claims outbox rows, sends with bounded concurrency under per-channel rate
limits, retries temporary failures with backoff and jitter, and resumes after a crash."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from incident.channels.base import Channel, Outcome, Outgoing, SmsOut
from incident.clock import Clock
from incident.composer import Composer
from incident.delivery.limiter import RateLimiter
from incident.delivery.policy import DeliveryPolicy
from incident.delivery.report import DeliveryReport, ProgressFn, Tally
from incident.errors import IncidentError, StorageError
from incident.metrics import NO_METRICS, Counted, Metrics
from incident.notices import message_id, sender_domain
from incident.privacy import scrub_error
from incident.store import Store, deliveries, optouts
from incident.store import outbox as ob
from incident.store.events import event_data

_RECHECK = 0.25  # s: after a claim found no more rows for a channel, look again this often
_STALE_EVERY = 1.0  # s: how often claims also look for stale claims of dead workers


class Dispatcher:
    """Sends what the outbox holds; safe to run in several processes at once.

    One run is a small pipeline in one event loop:

    - a conductor (`_conduct`) claims due rows in batches (urgent first) and hands them to the
      channels' queues before they run dry, and records the outcomes that came back, both in
      one write transaction: claim → send → mark;
    - per channel, as many senders (`_sender`) as the channel may have messages in flight,
      each taking the next row from its channel's queue, composing it, waiting for the rate
      limit and sending it. No task per message, no semaphore: the number of senders is the
      concurrency.

    What a crash can send twice is bounded: rows being sent (at most the concurrency) and
    outcomes not yet recorded (fewer than `flush_every`, never older than `flush_interval`).
    Rows claimed but not yet sent are given back by the next run (`recover`) or, after
    `stale_claim`, by any worker; they are never sent twice.
    """

    def __init__(self, store: Store, composer: Composer, channels: dict[str, Channel], *,
                 policy: DeliveryPolicy | None = None, clock: Clock | None = None,
                 metrics: Metrics | None = None) -> None:
        self.store = store
        self.metrics = metrics or NO_METRICS  # what a monitoring system is told
        # Claims, retries and outcomes are timed by it (by default the runtime's).
        self.clock = clock or composer.rt.clock
        self.composer = composer
        self.channels = channels
        self.policy = policy or DeliveryPolicy()
        self.worker = f"{ob.worker_name()}:{random.getrandbits(32):08x}"
        self.limiters = {name: RateLimiter(ch.rate) for name, ch in channels.items() if ch.rate}
        # A row is settled only on the transport it was recorded for (a channel that does not
        # say which it is, a test's, takes any).
        self.transports: dict[str, str | None] = {
            name: getattr(ch, "transport", None) for name, ch in channels.items()}
        self.domain = sender_domain(composer.rt)
        self.fallbacks = 0
        # The state of one run (see _conduct and _sender).
        self._queues: dict[str, asyncio.Queue[ob.OutboxRow | None]] = {}
        self._done: list[tuple[ob.OutboxRow, Outcome]] = []  # outcomes not yet recorded
        self._busy: dict[int, ob.OutboxRow] = {}  # rows being sent, by id
        self._unsent: list[ob.OutboxRow] = []  # claimed, never tried: given back at the end
        self._stopping = False
        self._wake = asyncio.Event()
        self._stale_checked = -_STALE_EVERY
        self.stopped = False  # stop(): no further claims, in this run or the next

    def stop(self) -> None:
        """Stop claiming: the sends in hand finish and are recorded, the rows claimed but not
        yet sent are given back, and the run ends (a graceful stop, e.g. on SIGTERM)."""
        self.stopped = True
        self._wake.set()

    def pending(self, incident_id: str | None) -> int:
        """Rows not yet sent or failed."""
        with self.store.read() as conn:
            return deliveries.unsettled(conn, incident_id)

    def _next_due(self, incident_id: str | None) -> datetime | None:
        """When the next row this run may send falls due (not another transport's)."""
        with self.store.read() as conn:
            return deliveries.next_due(conn, self.transports, incident_id)

    def recover(self) -> int:
        """Give back the claims of this host's processes that are no longer alive."""
        host = socket.gethostname()
        with self.store.write() as conn:
            dead = [w for w in ob.claimed_workers(conn, host) if not _alive(w)]
            return ob.release_claims(conn, dead)

    async def run(self, *, incident_id: str | None = None, progress: ProgressFn | None = None,
                  wait_for_retries: float | None = None) -> DeliveryReport:
        """Send until nothing is due (waiting up to `wait_for_retries` s for due retries)."""
        wait_budget = self.policy.wait_for_retries if wait_for_retries is None else wait_for_retries
        self.recover()
        tally = Tally(total=self.pending(incident_id))
        interrupted = False
        fatal: str | None = None
        try:
            fatal = await self._pipeline(incident_id, tally, progress, wait_budget)
        except (asyncio.CancelledError, KeyboardInterrupt):
            interrupted = True
        finally:
            for channel in self.channels.values():
                await channel.close()
        with self.store.read() as conn:
            counts = deliveries.counts(conn, incident_id, parties=None)
            waiting = deliveries.waiting(conn, incident_id)
        return DeliveryReport(sent=tally.sent, failed=tally.failed,
                              pending=self.pending(incident_id), interrupted=interrupted,
                              counts=counts, elapsed=time.monotonic() - tally.started,
                              fatal=fatal, fallbacks=self.fallbacks, waiting=waiting,
                              transports=self.transports)

    def _fatal(self) -> str | None:
        for name, channel in self.channels.items():
            if channel.fatal:  # printed: a relay's answer may echo a credential
                return f"{name}: {scrub_error(channel.fatal)}"
        return None

    # --- the pipeline ----------------------------------------------------------------------

    async def _pipeline(self, incident_id: str | None, tally: Tally,
                        progress: ProgressFn | None, wait_budget: float) -> str | None:
        """Start the senders, conduct, then stop the senders and record what is left."""
        self._queues = {name: asyncio.Queue() for name in self.channels}
        self._done, self._busy, self._unsent = [], {}, []
        self._stopping = False
        self._wake = asyncio.Event()
        senders = [asyncio.ensure_future(self._sender(name, queue))
                   for name, queue in self._queues.items()
                   for _ in range(max(1, self.policy.concurrency.get(name, 8)))]
        finished = False
        try:
            fatal = await self._conduct(incident_id, tally, progress, wait_budget)
            finished = True
            return fatal
        finally:
            self._stopping = True
            if finished:
                # Sends under way finish (their outcome is known); queued rows are given back.
                for name, queue in self._queues.items():
                    for _ in range(max(1, self.policy.concurrency.get(name, 8))):
                        queue.put_nowait(None)
                await asyncio.gather(*senders, return_exceptions=True)
            else:
                # Interrupted: sends under way are abandoned; their result is unknown.
                for sender in senders:
                    sender.cancel()
                await asyncio.gather(*senders, return_exceptions=True)
            for queue in self._queues.values():
                while not queue.empty():
                    row = queue.get_nowait()
                    if row is not None:
                        self._unsent.append(row)
            self._flush(tally, claim=None, unfinished=list(self._busy.values()))
            if progress:
                progress(tally)

    async def _conduct(self, incident_id: str | None, tally: Tally,
                       progress: ProgressFn | None, wait_budget: float) -> str | None:
        """Keep the queues fed and the outcomes recorded until nothing is due; the reason if
        a channel became unusable (fatal)."""
        policy = self.policy
        low = {name: max(1, policy.concurrency.get(name, 8)) for name in self._queues}
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + wait_budget
        sent_before = tally.sent
        drained: dict[str, float] = {}  # channel -> when a claim last found nothing more for it
        last_flush = time.monotonic()
        while True:
            fatal = self._fatal()
            if fatal or self.stopped:
                return fatal
            now = time.monotonic()
            for name in [n for n, at in drained.items() if now - at >= _RECHECK]:
                del drained[name]  # rows may have come due or been added meanwhile
            hungry = [name for name, queue in self._queues.items()
                      if name not in drained and queue.qsize() <= low[name]]
            in_flight = bool(self._busy) or any(not queue.empty()
                                                for queue in self._queues.values())
            # Outcomes are recorded in groups (flush_every), at least every flush_interval,
            # and at once when nothing else is in flight (the last ones of a run).
            flush_due = bool(self._done) and (len(self._done) >= policy.flush_every
                                              or now - last_flush >= policy.flush_interval
                                              or not in_flight)
            if hungry or flush_due:
                recorded = len(self._done)
                claimed = self._flush(tally, claim=(incident_id, hungry) if hungry else None)
                last_flush = time.monotonic()
                if progress and recorded:
                    progress(tally)
                for row in claimed:
                    self._queues[row.channel].put_nowait(row)
                if hungry and len(claimed) < policy.batch:
                    drained.update(dict.fromkeys(hungry, last_flush))
                # Only progress extends the wait: a relay that keeps refusing must not hold
                # the supervisor's terminal until every attempt is used up.
                if tally.sent > sent_before:
                    sent_before, deadline = tally.sent, last_flush + wait_budget
                elif last_flush > deadline:
                    return None
                continue
            if not in_flight and not self._done:
                # Nothing in flight and nothing due now (every queue is empty, so every
                # channel is drained): wait for the next retry, if any.
                due = self._next_due(incident_id)
                if due is None:
                    return None
                delay = (due - self.clock.now()).total_seconds()
                if time.monotonic() + max(delay, 0) > deadline:
                    return None
                self._wake.clear()  # set by stop() only: nothing is in flight
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(max(delay, 0.05), 5.0))
                drained.clear()
                continue
            # Wait for a sender to report (outcomes to record, a queue running low), for the
            # flush interval, or for the re-check of a drained channel.
            timeouts = [at + _RECHECK - now for at in drained.values()]
            if self._done:
                timeouts.append(last_flush + policy.flush_interval - now)
            self._wake.clear()
            timer = loop.call_later(max(min(timeouts), 0.001), self._wake.set) \
                if timeouts else None
            try:
                await self._wake.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    async def _sender(self, name: str, queue: asyncio.Queue[ob.OutboxRow | None]) -> None:
        """Send the rows of one channel's queue, one at a time, until told to stop."""
        channel = self.channels[name]
        limiter = self.limiters.get(name)
        low = max(1, self.policy.concurrency.get(name, 8))
        flush_every = self.policy.flush_every
        done, busy, wake = self._done, self._busy, self._wake
        while True:
            if queue.qsize() <= low:
                wake.set()  # the conductor claims more before the queue runs dry
            if not queue.empty():
                row = queue.get_nowait()
            elif self._stopping:
                # (Also reached when a cancellation was lost: asyncio.wait_for, which
                # aiosmtplib uses, returns the result instead when both come at once.)
                return
            else:
                row = await queue.get()
            if row is None:
                return
            if self._stopping or channel.fatal:
                self._unsent.append(row)  # never tried: given back as it was
                continue
            busy[row.id] = row
            try:
                outcome = await self._attempt(row, channel, limiter)
            except Exception as exc:  # never a stuck row: a temporary failure
                outcome = Outcome.retry(f"unexpected {type(exc).__name__}: {exc}",
                                        code="internal")
            del busy[row.id]
            done.append((row, outcome))
            if len(done) == 1 or len(done) >= flush_every:
                wake.set()

    async def _attempt(self, row: ob.OutboxRow, channel: Channel,
                       limiter: RateLimiter | None) -> Outcome:
        try:
            message = self.composer.compose(row)
        except IncidentError as exc:
            return Outcome.fail(exc.message, code="template")
        if limiter is None:
            return await self._timed(message, channel, row.channel)
        units = _units(message)
        if not limiter.try_acquire(units):
            began = time.perf_counter()
            await limiter.acquire(units)
            self.metrics.rate_limit_wait(row.channel, time.perf_counter() - began)
        try:
            return await self._timed(message, channel, row.channel)
        finally:
            limiter.done(units)  # counted until its answer, whatever the answer was

    async def _timed(self, message: Outgoing, channel: Channel, name: str) -> Outcome:
        began = time.perf_counter()
        try:
            return await self._send(message, channel)
        finally:
            self.metrics.send_time(name, time.perf_counter() - began)

    @staticmethod
    async def _send(message: Outgoing, channel: Channel) -> Outcome:
        try:
            return await channel.send(message)
        except (OSError, TimeoutError) as exc:
            return Outcome.retry(f"{type(exc).__name__}: {exc}", code="network")

    def _flush(self, tally: Tally, *, claim: tuple[str | None, list[str]] | None,
               unfinished: Sequence[ob.OutboxRow] = ()) -> list[ob.OutboxRow]:
        """One write transaction: record the outcomes so far, give back what was not sent,
        and (with `claim`: the incident and the channels to claim for) claim the next batch."""
        # Emptied in place: the senders hold these lists.
        done, unsent = self._done[:], self._unsent[:]
        self._done.clear()
        self._unsent.clear()
        began = time.perf_counter()
        with self.store.write() as conn:
            now = self.clock.now()
            counted = self._record(conn, done, unfinished, unsent, tally, now)
            if claim is not None:
                incident_id, channels = claim
                # Stale claims (of workers on other hosts that died) are looked for once a
                # second.
                stale = time.monotonic() - self._stale_checked >= _STALE_EVERY
                rows = ob.claim(conn, worker=self.worker, now=now, limit=self.policy.batch,
                                incident_id=incident_id, channels=channels,
                                stale_after=self.policy.stale_claim, stale=stale,
                                transports=self.transports)
        # Told once committed, so that what is counted is what the outbox holds.
        self.metrics.recorded(counted, now.timestamp())
        if claim is None:
            return []
        self.metrics.claim_time(time.perf_counter() - began)
        if stale:
            self._stale_checked = time.monotonic()
        if rows:
            self._load_notices({(r.incident_id, r.notice_seq) for r in rows})
        return rows

    def _record(self, conn: Any, done: list[tuple[ob.OutboxRow, Outcome]],
                unfinished: Sequence[ob.OutboxRow], unsent: list[ob.OutboxRow], tally: Tally,
                now: datetime) -> list[Counted]:
        """Record the outcomes; what was recorded, as the metrics count it."""
        sent = [(row.id, outcome.provider_ref) for row, outcome in done if outcome.sent]
        counted: list[Counted] = [(row.channel, "sent", None) for row, outcome in done
                                  if outcome.sent]
        ob.mark_sent(conn, sent, now=now)
        ob.release(conn, [row.id for row in unsent])
        for row in unfinished:
            ob.mark_retry(conn, row.id, error="interrupted before the result was known",
                          code="interrupted", at=now, attempts=row.attempts - 1)
            counted.append((row.channel, "retry", "interrupted"))
        for row, outcome in done:
            if outcome.sent:
                continue
            if outcome.permanent or row.attempts >= self.policy.max_attempts:
                error = outcome.error or "failed"
                if not outcome.permanent:
                    error += f" (gave up after {row.attempts} attempts)"
                ob.mark_failed(conn, row.id, error=error, code=outcome.code)
                if outcome.opted_out:
                    optouts.add(conn, row.address, source=f"{row.channel} {outcome.code}",
                                now=now)
                tally.failed += 1
                counted.append((row.channel, "failed", outcome.code))
                self._fall_back(conn, row, now)
            else:
                delay = self.policy.backoff(row.attempts)
                ob.mark_retry(conn, row.id, error=outcome.error or "temporary failure",
                              code=outcome.code, at=now + timedelta(seconds=delay))
                tally.retrying += 1
                counted.append((row.channel, "retry", outcome.code))
        tally.sent += len(sent)
        return counted

    def _fall_back(self, conn: Any, row: ob.OutboxRow, now: datetime) -> None:
        channel = ob.FALLBACK_CHANNEL.get(row.channel)
        if channel is None or channel not in self.channels:
            return
        key = ob.idempotency_key(row.incident_id, row.notice_seq, row.recipient_ref, channel)
        if ob.add_fallback(conn, row, message_id=message_id(key, row.incident_id, self.domain),
                           now=now, transport=self.transports.get(channel)):
            self.fallbacks += 1

    def _load_notices(self, keys: set[tuple[str, int]]) -> None:
        missing = keys - set(self.composer.notices)
        if not missing:
            return
        with self.store.read() as conn:
            for incident_id, seq in missing:
                found = event_data(conn, incident_id, seq)
                if found is None:  # deleted from the record under its rows
                    raise StorageError(f"{incident_id}: notice #{seq} is not in the record",
                                       hint=f"see what else is missing: incident verify "
                                            f"{incident_id[-6:]}")
                self.composer.notices[(incident_id, seq)] = found[0]["notice"]


def _units(message: Outgoing) -> float:
    return float(message.info.segments) if isinstance(message, SmsOut) else 1.0


def _alive(worker: str) -> bool:
    try:
        pid = int(worker.split(":")[1])
    except (IndexError, ValueError):
        return True
    return ob.pid_alive(pid)

