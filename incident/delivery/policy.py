"""The delivery policy: batching, concurrency and retry knobs, and the backoff before a
temporary failure is tried again."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta

from incident.settings import DeliverySettings


@dataclass
class DeliveryPolicy:
    """Retry, batching and concurrency knobs."""

    batch: int = 64
    flush_every: int = 64  # outcomes recorded per transaction: bounds what a crash can repeat
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
