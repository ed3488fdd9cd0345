"""What a bounce says, as read from an untrusted mail message: the recipients it reports on
(action, status, diagnostic), the references that can match it to the outbox (the original
Message-IDs, VERP keys) and the message's own stable identity."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# Bounds on what an outside message may make us hold or print.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # larger messages are a problem, not parsed
MAX_RECIPIENTS = 100  # per-recipient blocks read from one DSN
MAX_PARTS = 200  # MIME parts walked in one message
MAX_TEXT = 256 * 1024  # characters of a text part searched for quoted headers
MAX_DIAGNOSTIC = 300  # characters of a diagnostic kept (after stripping control characters)
MAX_REFERENCES = 20  # Message-IDs / VERP keys kept from one message
MAX_ID = 250  # a longer Message-ID is not an id we generated (nor a usable identity)


class Severity(StrEnum):
    """How a bounce counts: hard (permanent, 5.x.x) or soft (transient, 4.x.x, delayed)."""

    HARD = "hard"
    SOFT = "soft"


class Kind(StrEnum):
    """What a message turned out to be."""

    DSN = "dsn"  # RFC 3464 multipart/report; report-type=delivery-status
    NON_STANDARD = "non-standard"  # a plain-text bounce with the original quoted
    NOT_A_BOUNCE = "not-a-bounce"  # an auto-reply, a positive DSN, anything else
    PROBLEM = "problem"  # could not be read (too large, malformed MIME): `problem` says why


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    """One recipient a bounce reports on."""

    recipient: str  # Final-Recipient's address ("" when the bounce does not name it)
    action: str  # failed | delayed | delivered | relayed | expanded ("failed" if unstated)
    status: str  # x.y.z ("" when none was found)
    diagnostic: str  # control characters stripped, bounded
    severity: Severity | None  # None: not a failure (delivered, relayed, expanded)


@dataclass(frozen=True, slots=True)
class ParsedBounce:
    """One message read: what it is, whom it reports on and what may match it to the outbox.

    `message_ids` are the original message's (from the returned message or its headers,
    never the bounce's own); `verp_keys` the keys of VERP addresses `<prefix>+<key>@domain`
    the bounce was sent to. A bounce with neither is unmatched: nothing is guessed.
    """

    identity: str  # `message-id:<…>` of the bounce itself, else `sha256:<hex>` of its bytes
    kind: Kind
    recipients: tuple[RecipientStatus, ...] = ()
    message_ids: tuple[str, ...] = ()
    verp_keys: tuple[str, ...] = ()
    subject: str = ""
    problem: str | None = None

    @property
    def severity(self) -> Severity | None:
        """The bounce's class: hard when any recipient failed for good, else soft when any
        failed for now or is delayed, else None (not a failure)."""
        found = {r.severity for r in self.recipients}
        if Severity.HARD in found:
            return Severity.HARD
        return Severity.SOFT if Severity.SOFT in found else None

    @property
    def first_failure(self) -> RecipientStatus | None:
        """The recipient the class comes from (the first with it)."""
        wanted = self.severity
        return next((r for r in self.recipients if r.severity is wanted and wanted), None)


@dataclass(frozen=True, slots=True)
class SourceMessage:
    """One message of a source: where it is (`file`, `file#3` in an mbox, `dir/cur/<key>`
    in a Maildir) and its raw bytes (None with `problem` when it could not be read)."""

    where: str
    data: bytes | None
    problem: str | None = None
