"""Email bytes built cheaply per recipient from a notice rendered once per language.

Building an `EmailMessage` per recipient costs about as much as sending it (facts.md), so a
notice is rendered once per (notice, language) with placeholders for the customer's fields;
each recipient's message is then those parts with the placeholders replaced, base64-encoded,
under headers written here. The result is the same MIME a mail client gets from the stdlib:
multipart/alternative, text part first, UTF-8, RFC 2047 words for non-ASCII headers.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import parseaddr

CRLF = b"\r\n"
# Placeholders for per-recipient fields: ASCII letters only, so that HTML escaping, Jinja
# filters that keep letters and line folding all leave them intact.
NAME = "QxNAMEq7Zv"
REF = "QxREFq7Zv"
ALT_NAME = "WkNAMEp3Jy"
ALT_REF = "WkREFp3Jy"
_SAFE_PHRASE = re.compile(r"^[A-Za-z0-9 !#$%&'*+\-/=?^_`{|}~.]*$")


def encode_header_words(text: str) -> str:
    """RFC 2047 base64 encoded-words (UTF-8) for non-ASCII text, folded to ≤ 76 columns."""
    if text.isascii():
        return text
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in text:
        width = len(char.encode("utf-8"))
        if size + width > 45:  # 45 bytes → 60 base64 chars + 12 of markup
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    if chunk:
        words.append("".join(chunk))
    return "\r\n ".join("=?utf-8?b?" + base64.b64encode(w.encode("utf-8")).decode("ascii") + "?="
                        for w in words)


def format_address(name: str, address: str) -> str:
    """`Name <addr>` with the name quoted or encoded as RFC 5322 and 2047 require."""
    name = " ".join(name.split())  # customer data: no line breaks can reach a header
    if not name:
        return address
    if _SAFE_PHRASE.match(name):
        return f"{name} <{address}>"
    if name.isascii():
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{address}>'
    # One encoded-word: parsers put spaces between adjacent words inside a display name.
    return f"=?utf-8?b?{base64.b64encode(name.encode('utf-8')).decode('ascii')}?= <{address}>"


def _b64(text: str) -> bytes:
    return base64.encodebytes(text.encode("utf-8")).replace(b"\n", CRLF)


@dataclass(frozen=True)
class EmailTemplate:
    """One notice in one language, rendered once, with placeholders for the customer."""

    sender: str  # From header value, as configured
    reply_to: str | None
    subject: str
    text: str
    html: str
    headers: tuple[tuple[str, str], ...]  # fixed extra headers (X-Incident-*, Auto-Submitted)

    @property
    def envelope_sender(self) -> str:
        """The bare address of the sender, for MAIL FROM."""
        return parseaddr(self.sender)[1]

    def build(self, *, name: str, ref: str, to: str, message_id: str, date: str) -> bytes:
        """The complete message for one recipient, CRLF line endings."""
        subject = self.subject.replace(NAME, name).replace(REF, ref)
        text = self.text.replace(NAME, name).replace(REF, ref)
        page = self.html.replace(NAME, html.escape(name)).replace(REF, html.escape(ref))
        boundary = "==incident_" + hashlib.sha1(message_id.encode()).hexdigest()[:24] + "=="
        head = [
            f"Subject: {encode_header_words(' '.join(subject.split()))}",
            f"From: {self._sender_header}",
            f"To: {format_address(name, to)}",
            *([f"Reply-To: {self._reply_header}"] if self.reply_to else []),
            f"Date: {date}",
            f"Message-ID: {message_id}",
            *[f"{key}: {value}" for key, value in self.headers],
            "MIME-Version: 1.0",
            f'Content-Type: multipart/alternative; boundary="{boundary}"',
        ]
        part = 'Content-Type: text/{}; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        return b"".join([
            "\r\n".join(head).encode("ascii"), CRLF, CRLF,
            f"--{boundary}\r\n".encode(), part.format("plain").encode(), _b64(text),
            f"--{boundary}\r\n".encode(), part.format("html").encode(), _b64(page),
            f"--{boundary}--\r\n".encode(),
        ])

    @property
    def _sender_header(self) -> str:
        name, address = parseaddr(self.sender)
        return format_address(name, address)

    @property
    def _reply_header(self) -> str:
        name, address = parseaddr(self.reply_to or "")
        return format_address(name, address)


def flatten(message: EmailMessage) -> bytes:
    """An EmailMessage as SMTP-ready bytes (for callers that built one themselves)."""
    return message.as_bytes(policy=SMTP_POLICY)
