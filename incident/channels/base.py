"""What every channel takes and returns; failures are classified temporary or permanent.

Channels depend on these types only, never on the store: the dispatcher's side (the composer in
incident.notices) turns an outbox row into an `Outgoing` message."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol

from incident.rendering import SmsInfo


@dataclass(frozen=True, slots=True)
class MessageRef:
    """Which notice a message belongs to and its stable ids: what a transport names it by."""

    incident_id: str
    notice_seq: int
    channel: str
    message_id: str
    idempotency_key: str  # the same on every retry: a file name, a provider's dedup key
    internal: bool = False  # to a department or outside body, not a customer


@dataclass(frozen=True, slots=True)
class EmailOut:
    """A composed email: the envelope and the complete message bytes."""

    ref: MessageRef
    sender: str
    data: bytes
    recipients: tuple[str, ...]  # envelope recipients
    # `data` is known to go into SMTP DATA as it is (mime.data_ready): no pass over it to
    # normalise line ends or stuff dots.
    data_ready: bool = False

    @property
    def envelope_to(self) -> list[str]:
        """RCPT TO addresses."""
        return list(self.recipients)

    @classmethod
    def from_message(cls, ref: MessageRef, message: EmailMessage) -> EmailOut:
        """From an EmailMessage built by hand (tests, tools): envelope from its headers."""
        from email.utils import getaddresses, parseaddr

        from incident.mime import flatten

        to = tuple(a for _, a in getaddresses([str(v) for v in message.get_all("To", [])
                                               + message.get_all("Cc", [])]) if a)
        return cls(ref=ref, sender=parseaddr(str(message.get("From", "")))[1],
                   data=flatten(message), recipients=to)


@dataclass(frozen=True, slots=True)
class SmsOut:
    """A composed SMS."""

    ref: MessageRef
    to: str
    body: str
    info: SmsInfo


@dataclass(frozen=True, slots=True)
class WebhookOut:
    """A composed chat message to a party's webhook: the text and what the generic kind
    carries (the event and the incident's public fields, never customer data)."""

    ref: MessageRef
    party: str  # the party id: its signing secret is looked up by it
    url: str
    kind: str  # slack | teams | wecom | dingtalk | feishu | generic
    title: str
    text: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class VoiceOut:
    """A composed call: the script read aloud by `voice` in `language` (a <Say> language)."""

    ref: MessageRef
    to: str
    script: str
    voice: str
    language: str
    # With a URL: the call ends with <Gather numDigits="1" action=gather_url> saying
    # `gather_prompt` ("press 1 to be called back"); the key press is a customer's reply.
    gather_url: str | None = None
    gather_prompt: str = ""


Outgoing = EmailOut | SmsOut | VoiceOut | WebhookOut


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one message: sent, or failed temporarily (retry) or permanently."""

    sent: bool
    permanent: bool = False
    code: str | None = None
    error: str | None = None
    provider_ref: str | None = None
    # The provider refused because the recipient opted out (Twilio 21610): the dispatcher
    # puts the number on the suppression list as it records the failure.
    opted_out: bool = False

    @classmethod
    def ok(cls, provider_ref: str | None = None) -> Outcome:
        """The provider accepted the message."""
        return cls(sent=True, provider_ref=provider_ref)

    @classmethod
    def retry(cls, error: str, code: str | None = None) -> Outcome:
        """A temporary failure: try again later."""
        return cls(sent=False, permanent=False, code=code, error=error)

    @classmethod
    def fail(cls, error: str, code: str | None = None, *, opted_out: bool = False) -> Outcome:
        """A permanent failure: recorded and reported, never retried."""
        return cls(sent=False, permanent=True, code=code, error=error, opted_out=opted_out)


class Channel(Protocol):
    """A transport for one kind of message."""

    name: str
    rate: float | None  # units per second (messages, or SMS segments); None: no limit
    # Set when every further message would fail the same way (bad credentials, relay refuses
    # us): the dispatcher stops and leaves the rest pending instead of burning retries.
    fatal: str | None
    # The transport it is (file, smtp, twilio): it settles only rows recorded for it.
    transport: str

    async def send(self, message: Outgoing) -> Outcome:
        """Send one message and classify the result."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
