"""The settings of what comes back from outside: delivery receipts (`receipts serve` and
`receipts poll`) and email bounces — `incident.yaml` keys `receipts` and `bounces`
(validated with the rest in incident/settings.py)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

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


class ImapSettings(Strict):
    """The mailbox `incident bounces ingest --imap` reads (read-only: nothing is flagged,
    moved or deleted); the password only from the environment variable `password_env`."""

    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)  # None: 993 implicit TLS, else 143
    user: str = Field(min_length=1)
    mailbox: str = Field(default="INBOX", min_length=1)
    tls: Literal["implicit", "starttls", "none"] = "implicit"
    password_env: str = "BOUNCES_IMAP_PASSWORD"
    timeout: float = Field(default=30.0, gt=0)  # seconds per network operation

    @property
    def port_or_default(self) -> int:
        """The port to connect to."""
        return self.port or (993 if self.tls == "implicit" else 143)


class BounceSettings(Strict):
    """Reading email bounces (`incident bounces ingest`) and the VERP return path of sending."""

    # A bounce sent to `<verp_prefix>+<idempotency key>@domain` (VERP) is about that message.
    verp_prefix: str = Field(default="bounce", pattern=r"^[A-Za-z0-9._-]{1,32}$")
    # Set: every email is sent with envelope MAIL FROM <verp_prefix>+<key>@<verp_domain>, so
    # that a bounce names its message even when it returns no headers. None: the From address.
    verp_domain: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
    imap: ImapSettings | None = None

    def verp_address(self, key: str) -> str | None:
        """The envelope sender of the email whose idempotency key is `key` (None: no VERP)."""
        return f"{self.verp_prefix}+{key}@{self.verp_domain}" if self.verp_domain else None
