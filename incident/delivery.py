"""The dispatcher: claims outbox rows, sends with bounded concurrency under per-channel rate
limits, retries temporary failures with backoff and jitter, and resumes after a crash."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from incident.channels.base import Channel, Outcome, Outgoing, SmsOut
from incident.errors import IncidentError
from incident.models import DeliveryState
from incident.notices import Composer, message_id, sender_domain
from incident.settings import DeliverySettings
from incident.store import Store, schema
from incident.store import outbox as ob
from incident.store.events import as_utc
from incident.timeutil import utcnow


class RateLimiter:
    """At most `rate` units (messages or SMS segments) in any one-second window, evenly spread.

    Two rules together. A sliding window, slightly longer than a second (`margin`), so that
    network jitter between us and the provider cannot make the provider see more than `rate`
    in any second of its own. And even spacing (GCRA) with a burst of at most a tenth of a
    second's worth, so that a second's allowance never leaves as one clump at its start.
    """

    def __init__(self, rate: float, *, margin: float = 0.05,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.span = 1.0 + margin
        self.tolerance = 0.1  # seconds of burst the spacing allows (≥ 1 unit)
        self.clock = clock
        self.window: deque[tuple[float, float]] = deque()
        self.used = 0.0
        self.tat = 0.0  # theoretical arrival time of the next unit (GCRA)
        self.lock = asyncio.Lock()

    async def acquire(self, units: float = 1.0) -> None:
        """Wait until `units` may go without breaking either rule, then take them."""
        async with self.lock:
            while True:
                now = self.clock()
                while self.window and now - self.window[0][0] >= self.span:
                    self.used -= self.window.popleft()[1]
                tolerance = max(self.tolerance, units / self.rate)
                spaced = self.tat - now <= tolerance - units / self.rate
                # A single message larger than the whole rate goes alone in its window.
                fits = self.used + units <= self.rate or not self.window
                if spaced and fits:
                    self.tat = max(self.tat, now) + units / self.rate
                    self.window.append((now, units))
                    self.used += units
                    return
                waits = [0.0005]
                if not spaced:
                    waits.append(self.tat - (tolerance - units / self.rate) - now)
                if not fits:
                    waits.append(self.window[0][0] + self.span - now)
                await asyncio.sleep(max(waits))


@dataclass
class Tally:
    """Progress of one dispatcher run."""

    total: int = 0
    sent: int = 0
    failed: int = 0
    retrying: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        """Messages accepted per second so far."""
        elapsed = time.monotonic() - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0


@dataclass
class DeliveryReport:
    """What a run did and what is left."""

    sent: int
    failed: int
    pending: int
    interrupted: bool
    counts: dict[str, dict[str, int]]
    elapsed: float
    fatal: str | None = None  # why sending stopped early (e.g. the relay refused our login)
    fallbacks: int = 0  # messages re-queued on the other channel after a permanent failure


@dataclass
class DeliveryPolicy:
    """Retry, batching and concurrency knobs."""

    batch: int = 64
    flush_every: int = 16  # outcomes recorded per transaction: bounds what a crash can repeat
    flush_interval: float = 0.2  # ... or at least this often (seconds) on a slow relay
    max_attempts: int = 8
    backoff_base: float = 2.0
    backoff_cap: float = 300.0
    wait_for_retries: float = 30.0  # how long a foreground run waits for due retries
    stale_claim: timedelta = timedelta(minutes=5)
    concurrency: dict[str, int] = field(default_factory=lambda: {"email": 8, "sms": 8})

    @classmethod
    def from_settings(cls, settings: DeliverySettings, concurrency: dict[str, int]
                      ) -> DeliveryPolicy:
        """The policy incident.yaml's `delivery:` section describes."""
        return cls(batch=settings.batch, max_attempts=settings.max_attempts,
                   backoff_base=settings.backoff_base.total_seconds(),
                   backoff_cap=settings.backoff_cap.total_seconds(),
                   wait_for_retries=settings.wait_for_retries.total_seconds(),
                   stale_claim=settings.stale_claim, concurrency=concurrency)

    def backoff(self, attempts: int) -> float:
        """Seconds before the next try: exponential, capped, with ±50% jitter."""
        delay = min(self.backoff_cap, self.backoff_base * 2 ** max(0, attempts - 1))
        return delay * random.uniform(0.5, 1.5)


ProgressFn = Callable[[Tally], None]


class Dispatcher:
    """Sends what the outbox holds; safe to run in several processes at once."""

    def __init__(self, store: Store, composer: Composer, channels: dict[str, Channel], *,
                 policy: DeliveryPolicy | None = None) -> None:
        self.store = store
        self.composer = composer
        self.channels = channels
        self.policy = policy or DeliveryPolicy()
        self.worker = f"{ob.worker_name()}:{random.getrandbits(32):08x}"
        self.limiters = {name: RateLimiter(ch.rate) for name, ch in channels.items() if ch.rate}
        self.gates = {name: asyncio.Semaphore(self.policy.concurrency.get(name, 8))
                      for name in channels}
        self.domain = sender_domain(composer.rt)
        self.fallbacks = 0

    def pending(self, incident_id: str | None) -> int:
        """Rows not yet sent or failed."""
        o = schema.outbox
        query = select(func.count()).where(o.c.state.in_(
            [DeliveryState.PENDING.value, DeliveryState.SENDING.value]))
        if incident_id:
            query = query.where(o.c.incident_id == incident_id)
        with self.store.read() as conn:
            return int(conn.execute(query).scalar() or 0)

    def _next_due(self, incident_id: str | None) -> datetime | None:
        o = schema.outbox
        query = select(func.min(o.c.next_attempt_at)).where(
            o.c.state == DeliveryState.PENDING.value)
        if incident_id:
            query = query.where(o.c.incident_id == incident_id)
        with self.store.read() as conn:
            value = conn.execute(query).scalar()
        return as_utc(value) if value is not None else None

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
        deadline = time.monotonic() + wait_budget
        try:
            while True:
                with self.store.write() as conn:
                    rows = ob.claim(conn, worker=self.worker, now=utcnow(),
                                    limit=self.policy.batch, incident_id=incident_id,
                                    channels=list(self.channels),
                                    stale_after=self.policy.stale_claim)
                if rows:
                    sent_before = tally.sent
                    await self._send_batch(rows, tally, progress)
                    fatal = self._fatal()
                    if fatal:
                        break
                    # Only progress extends the wait: a relay that keeps refusing must not
                    # hold the supervisor's terminal until every attempt is used up.
                    if tally.sent > sent_before:
                        deadline = time.monotonic() + wait_budget
                    elif time.monotonic() > deadline:
                        break
                    continue
                due = self._next_due(incident_id)
                if due is None:
                    break
                delay = (due - utcnow()).total_seconds()
                if time.monotonic() + max(delay, 0) > deadline:
                    break
                await asyncio.sleep(min(max(delay, 0.05), 5.0))
        except (asyncio.CancelledError, KeyboardInterrupt):
            interrupted = True
        finally:
            for channel in self.channels.values():
                await channel.close()
        with self.store.read() as conn:
            counts = ob.counts(conn, incident_id, parties=None)
        return DeliveryReport(sent=tally.sent, failed=tally.failed,
                              pending=self.pending(incident_id), interrupted=interrupted,
                              counts=counts, elapsed=time.monotonic() - tally.started,
                              fatal=fatal, fallbacks=self.fallbacks)

    def _fatal(self) -> str | None:
        for name, channel in self.channels.items():
            if channel.fatal:
                return f"{name}: {channel.fatal}"
        return None

    async def _send_batch(self, rows: list[ob.OutboxRow], tally: Tally,
                          progress: ProgressFn | None) -> None:
        """Send a claimed batch, recording outcomes in small groups as they arrive.

        Recording often keeps "sent but not yet marked" small: after a crash only those
        messages can go out twice.
        """
        self._load_notices({(r.incident_id, r.notice_seq) for r in rows})
        running = {asyncio.ensure_future(self._send_one(row)): row for row in rows}
        done: list[tuple[ob.OutboxRow, Outcome]] = []
        last_flush = time.monotonic()
        try:
            while running:
                finished, _ = await asyncio.wait(running, timeout=self.policy.flush_interval,
                                                 return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    done.append((running.pop(task), _result(task)))
                due = time.monotonic() - last_flush >= self.policy.flush_interval
                if done and (len(done) >= self.policy.flush_every or due or not running):
                    self._record(done, [], tally)
                    done, last_flush = [], time.monotonic()
                    if progress:
                        progress(tally)
        finally:
            # Interrupted: whatever finished is recorded; what never finished goes back to
            # pending (it may have reached the provider: that is the bounded duplicate).
            for task in [t for t in running if t.done() and not t.cancelled()]:
                done.append((running.pop(task), _result(task)))
            for task in running:
                task.cancel()
            if done or running:
                self._record(done, list(running.values()), tally)

    async def _send_one(self, row: ob.OutboxRow) -> Outcome:
        try:
            message = self.composer.compose(row)
        except IncidentError as exc:
            return Outcome.fail(exc.message, code="template")
        async with self.gates[row.channel]:
            limiter = self.limiters.get(row.channel)
            if limiter:
                await limiter.acquire(_units(message))
            try:
                return await self.channels[row.channel].send(message)
            except (OSError, TimeoutError) as exc:
                return Outcome.retry(f"{type(exc).__name__}: {exc}", code="network")

    def _record(self, done: list[tuple[ob.OutboxRow, Outcome]],
                unfinished: list[ob.OutboxRow], tally: Tally) -> None:
        now = utcnow()
        sent = [(row.id, outcome.provider_ref) for row, outcome in done if outcome.sent]
        with self.store.write() as conn:
            ob.mark_sent(conn, sent, now=now)
            for row in unfinished:
                ob.mark_retry(conn, row.id, error="interrupted before the result was known",
                              code="interrupted", at=now, attempts=row.attempts - 1)
            for row, outcome in done:
                if outcome.sent:
                    continue
                if outcome.permanent or row.attempts >= self.policy.max_attempts:
                    error = outcome.error or "failed"
                    if not outcome.permanent:
                        error += f" (gave up after {row.attempts} attempts)"
                    ob.mark_failed(conn, row.id, error=error, code=outcome.code)
                    tally.failed += 1
                    self._fall_back(conn, row, now)
                else:
                    delay = self.policy.backoff(row.attempts)
                    ob.mark_retry(conn, row.id, error=outcome.error or "temporary failure",
                                  code=outcome.code, at=now + timedelta(seconds=delay))
                    tally.retrying += 1
        tally.sent += len(sent)

    def _fall_back(self, conn: Any, row: ob.OutboxRow, now: datetime) -> None:
        channel = ob.FALLBACK_CHANNEL.get(row.channel)
        if channel is None or channel not in self.channels:
            return
        key = ob.idempotency_key(row.incident_id, row.notice_seq, row.recipient_ref, channel)
        if ob.add_fallback(conn, row, message_id=message_id(key, row.incident_id, self.domain),
                           now=now):
            self.fallbacks += 1

    def _load_notices(self, keys: set[tuple[str, int]]) -> None:
        missing = keys - set(self.composer.notices)
        if not missing:
            return
        e = schema.events
        with self.store.read() as conn:
            for incident_id, seq in missing:
                data = conn.execute(select(e.c.data).where(
                    e.c.incident_id == incident_id, e.c.seq == seq)).scalar_one()
                self.composer.notices[(incident_id, seq)] = json.loads(data)["notice"]


def _result(task: asyncio.Future[Outcome]) -> Outcome:
    """A finished send's outcome; an unexpected error is a temporary failure, never a stuck row."""
    exc = task.exception()
    if exc is None:
        return task.result()
    return Outcome.retry(f"unexpected {type(exc).__name__}: {exc}", code="internal")


def _units(message: Outgoing) -> float:
    return float(message.info.segments) if isinstance(message, SmsOut) else 1.0


def _alive(worker: str) -> bool:
    try:
        pid = int(worker.split(":")[1])
    except (IndexError, ValueError):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

