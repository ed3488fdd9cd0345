"""The settings of what comes back from outside: delivery receipts (`receipts serve` and
`receipts poll`) and email bounces — `incident.yaml` keys `receipts` and `bounces`
(validated with the rest in incident/settings.py)."""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import Field, field_validator

from incident.models import Duration, Strict


class ReceiptsSettings(Strict):
    """Delivery receipts: where Twilio reaches `receipts serve`, and how `receipts poll` asks."""

    # The URL Twilio calls, as the internet sees it (a proxy in front of `receipts serve`):
    # messages and calls are created with StatusCallback = <public_url>/twilio/status, and
    # signatures are checked against it. None: no callbacks, poll instead.
    public_url: str | None = None
    poll_rate: float = Field(default=5.0, gt=0, le=100, description="requests per second")
    poll_every: Duration = timedelta(seconds=30)  # between two rounds over the unsettled
    # `receipts serve` applies due escalations (as `incident escalate`) this often.
    escalate_every: Duration = timedelta(seconds=60)

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^/@\s]+(/\S*)?$", value):
            raise ValueError("must be an http(s) URL without user:password@, "
                             "e.g. https://notify.example.com")
        return value.rstrip("/")

    @property
    def callback_url(self) -> str | None:
        """The status callback URL, when a public URL is configured."""
        return f"{self.public_url}/twilio/status" if self.public_url else None


class BounceSettings(Strict):
    """Reading email bounces (`incident bounces ingest`)."""

    # A bounce sent to `<verp_prefix>+<idempotency key>@domain` (VERP) is about that message.
    verp_prefix: str = Field(default="bounce", pattern=r"^[A-Za-z0-9._-]{1,32}$")
