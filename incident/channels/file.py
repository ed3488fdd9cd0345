"""The `file` transport: real .eml, SMS .json and call TwiML .xml files in outbox/, for drills
and demos."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from incident.channels.base import EmailOut, Outcome, Outgoing, SmsOut, VoiceOut, WebhookOut
from incident.channels.twiml import twiml


def _atomic_write(path: Path, data: bytes) -> None:
    # Write then rename, so a crash never leaves half a message where a reader looks.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


class FileChannel:
    """Writes each message to `outbox/<incident>/<notice>/<channel>/<key>.(eml|json|xml)`:
    an email, an SMS, or the TwiML a call would speak.

    The file name derives from the message's idempotency key, so a retry overwrites rather
    than duplicates.
    """

    rate: float | None = None
    fatal: str | None = None
    transport = "file"

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory

    def path_for(self, message: Outgoing) -> Path:
        """Where `message` is written."""
        ref = message.ref
        suffix = ("eml" if isinstance(message, EmailOut)
                  else "xml" if isinstance(message, VoiceOut) else "json")
        folder = self.directory / ref.incident_id
        if ref.internal:
            folder = folder / "internal"  # notices to departments, apart from customers'
        return (folder / f"notice-{ref.notice_seq:03d}" / ref.channel
                / f"{ref.idempotency_key[:20]}.{suffix}")

    async def send(self, message: Outgoing) -> Outcome:
        """Write the message file."""
        path = self.path_for(message)
        try:
            if isinstance(message, EmailOut):
                _atomic_write(path, message.data)
            elif isinstance(message, WebhookOut):
                _atomic_write(path, _webhook_json(message))
            elif isinstance(message, VoiceOut):
                _atomic_write(path, twiml(message).encode("utf-8"))
            else:
                _atomic_write(path, _sms_json(message))
        except OSError as exc:
            return Outcome.retry(f"cannot write {path}: {exc.strerror or exc}", code="io")
        # A write never suspends: without a turn given here, one channel's sender would write
        # its whole queue before any other sender (an SMTP handshake, say) ran at all.
        await asyncio.sleep(0)
        return Outcome.ok(provider_ref=str(path))

    async def close(self) -> None:
        """Nothing to release."""


def _sms_json(message: SmsOut) -> bytes:
    body = {"to": message.to, "body": message.body, "encoding": message.info.encoding,
            "segments": message.info.segments, "units": message.info.units,
            "message_id": message.ref.message_id, "idempotency_key": message.ref.idempotency_key}
    return json.dumps(body, ensure_ascii=False, indent=2).encode("utf-8")


def _webhook_json(message: WebhookOut) -> bytes:
    # The body the http transport would post (unsigned: the file transport reads no secret)
    # and where to, without the URL's path, which often is the group's access token.
    from incident.channels.webhook import build_request
    from incident.privacy import mask_url

    _, _, body = build_request(message, None, 0)
    record = {"kind": message.kind, "to": mask_url(message.url), "party": message.party,
              "body": json.loads(body), "message_id": message.ref.message_id,
              "idempotency_key": message.ref.idempotency_key}
    return json.dumps(record, ensure_ascii=False, indent=2).encode("utf-8")
