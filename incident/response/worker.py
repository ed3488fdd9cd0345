"""`incident deliver` as a long-running worker (with its metrics served, a process Prometheus
watches must stay up): deliver what is due, then look again every second for newly queued
messages, until SIGINT or SIGTERM.

A signal while idle ends the worker with what it did; during a send it interrupts the send
as Ctrl-C does (claims given back, exit 1, `incident deliver` resumes).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from incident.response.results import SendResult

IDLE = 1.0  # s between looks at the outbox once nothing is due


def work(deliver: Callable[[], SendResult], *, every: float = IDLE) -> SendResult:
    """Call `deliver` until a signal, a channel that cannot work, or an interruption; the
    rounds' results added up (counts and what is left: the last round's)."""

    def terminate(signum: int, frame: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the same path as Ctrl-C, whatever is running

    previous = signal.signal(signal.SIGTERM, terminate)
    total: SendResult | None = None
    try:
        while True:
            sent = deliver()
            total = sent if total is None else _add(total, sent)
            report = sent.report
            if report is None or report.fatal or report.interrupted:
                return total
            try:
                time.sleep(every)
            except KeyboardInterrupt:
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
