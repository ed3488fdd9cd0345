"""What a dispatcher run reports: its progress as it goes (`Tally`) and, at the end, what it
did and what is left pending and why (`DeliveryReport`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from incident.privacy import scrub
from incident.store import deliveries


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
    waiting: list[deliveries.Waiting] = field(default_factory=list)  # what is pending, and why
    transports: dict[str, str | None] = field(default_factory=dict)  # this run's, by channel

    @property
    def left(self) -> int:
        """Messages this run left pending (not those other workers are sending)."""
        return sum(w.pending for w in self.waiting)

    def why_pending(self) -> str:
        """Per channel: how many messages wait and why — the last error (contacts masked),
        or that they were recorded for another transport than this run's."""
        return "; ".join(self._why(w) for w in self.waiting)

    def waiting_json(self) -> list[dict[str, Any]]:
        """What is pending and why, per channel and recorded transport (contacts masked)."""
        return [{"channel": w.channel, "transport": w.transport, "pending": w.pending,
                 "last_error": scrub(w.error) or None, "error_code": w.code,
                 "other_transport": self._foreign(w)} for w in self.waiting]

    @property
    def foreign(self) -> int:
        """Pending messages recorded for another transport than this run sends by."""
        return sum(w.pending for w in self.waiting if self._foreign(w))

    def _foreign(self, w: deliveries.Waiting) -> bool:
        ours = self.transports.get(w.channel)
        return w.transport is not None and ours is not None and w.transport != ours

    def _why(self, w: deliveries.Waiting) -> str:
        if self._foreign(w):
            return (f"{w.channel}: {w.pending} pending, recorded for transport {w.transport} "
                    f"(this config sends {w.channel} by {self.transports.get(w.channel)}: "
                    "run deliver with the config they were recorded for, or add "
                    "--reroute-to-config-transport)")
        if w.error:
            return f"{w.channel}: {w.pending} pending, last error: {scrub(w.error)}"
        return f"{w.channel}: {w.pending} pending, not tried yet"


ProgressFn = Callable[[Tally], None]
