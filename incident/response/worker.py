"""`incident deliver` as a long-running worker (with its metrics served, a process Prometheus
watches must stay up): deliver what is due, then look again every second for newly queued
messages, until SIGINT or SIGTERM.

SIGTERM (how systemd, Kubernetes or a supervisor stop a service) is a graceful stop: the round
in hand finishes, then the worker ends with what it did (exit 0, or 3 if something failed for
good). A worker stopped harder than that (SIGKILL after a grace period) loses nothing either:
the outbox is crash-safe. SIGINT (Ctrl-C) interrupts a send at once, claims given back, exit 1,
and the next `incident deliver` resumes.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable
from typing import Any

from incident.response.results import SendResult

IDLE = 1.0  # s between looks at the outbox once nothing is due
NAP = 0.05  # s: how soon an idle worker notices SIGTERM


def work(deliver: Callable[[], SendResult], *, every: float = IDLE) -> SendResult:
    """Call `deliver` until SIGTERM, a channel that cannot work, or an interruption; the
    rounds' results added up (counts and what is left: the last round's)."""
    stopping = False

    def terminate(signum: int, frame: Any) -> None:
        nonlocal stopping  # never raises: a round in hand finishes, an idle wait ends
        stopping = True

    previous = signal.signal(signal.SIGTERM, terminate)
    total: SendResult | None = None
    try:
        while True:
            sent = deliver()
            total = sent if total is None else _add(total, sent)
            report = sent.report
            if report is None or report.fatal or report.interrupted or stopping:
                return total
            try:
                idle_until = time.monotonic() + every
                while not stopping and time.monotonic() < idle_until:
                    time.sleep(NAP)
            except KeyboardInterrupt:
                return total
            if stopping:
                return total
    finally:
        signal.signal(signal.SIGTERM, previous)


def _add(before: SendResult, after: SendResult) -> SendResult:
    """`after` with `before`'s messages sent, failed and moved to another channel added."""
    if before.report is None or after.report is None:
        return after
    report = dataclasses.replace(after.report, sent=before.report.sent + after.report.sent,
                                 failed=before.report.failed + after.report.failed,
                                 fallbacks=before.report.fallbacks + after.report.fallbacks)
    return SendResult(report=report, incident_id=after.incident_id,
                      notes=[*before.notes, *after.notes][-100:])
