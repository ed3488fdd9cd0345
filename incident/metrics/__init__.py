"""What the dispatcher and the receipts server tell a monitoring system, as a small interface.

`Metrics` does nothing: it is what runs when no metrics are asked for, so the dispatcher calls
it unconditionally at no measurable cost (a method that returns, a few times per message).
`incident.metrics.prometheus` implements it with prometheus-client; only that module imports
prometheus_client (a contract in pyproject.toml), so delivery/ and inbound/ depend on this
interface alone.
"""

from __future__ import annotations

from collections.abc import Sequence

Counted = tuple[str, str, str | None]
"""One recorded outcome: (channel, state, reason). State `sent`, `failed` or `retry`; the
reason is the outcome's code (`network`, an SMTP or Twilio code, `interrupted`…)."""


class Metrics:
    """The hooks, each a no-op here."""

    enabled = False

    def send_time(self, channel: str, seconds: float) -> None:
        """One message's send took `seconds` (the provider's answer included, not the wait
        for the rate limit)."""

    def rate_limit_wait(self, channel: str, seconds: float) -> None:
        """A message waited `seconds` for its channel's rate limit."""

    def claim_time(self, seconds: float) -> None:
        """One claiming transaction (outcomes recorded, next batch claimed) took `seconds`."""

    def recorded(self, outcomes: Sequence[Counted], at: float) -> None:
        """These outcomes were committed to the outbox at `at` (Unix time)."""

    def callback(self, kind: str, result: str, seconds: float) -> None:
        """A callback of `kind` (sms, call, unknown) was answered as `result` in `seconds`."""


NO_METRICS = Metrics()

__all__ = ["NO_METRICS", "Counted", "Metrics"]
