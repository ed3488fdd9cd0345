"""Email bytes built cheaply per recipient from a notice rendered once per language.

Building an `EmailMessage` per recipient costs about as much as sending it (facts.md), so a
notice is rendered once per (notice, language) with placeholders for the customer's fields;
each recipient's message is then those parts with the placeholders replaced, base64-encoded,
under headers written here. The result is the same MIME a mail client gets from the stdlib:
multipart/alternative, text part first, UTF-8, RFC 2047 words for non-ASCII headers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import parseaddr
from functools import cached_property

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


_LINE = 57  # input bytes per base64 line (76 characters), as email.base64mime does it


def _b64_lines(data: bytes) -> bytes:
    """Base64 in lines of at most 76 characters, each ending in CRLF (RFC 2045)."""
    if len(data) <= _LINE:
        return binascii.b2a_base64(data, newline=False) + CRLF if data else b""
    encoded = binascii.b2a_base64(data, newline=False)
    return CRLF.join([encoded[i:i + 76] for i in range(0, len(encoded), 76)]) + CRLF


class _Base64Body:
    """A text with placeholders whose base64 form is built per recipient cheaply.

    Base64 works on 57-byte lines, so only the lines a filled-in value touches need encoding
    per recipient. The fixed runs between values are encoded once for each of the 57 ways a
    run can start within a line (the values' byte lengths decide which) and reused: the output
    is byte for byte `base64.encodebytes` of the filled-in text, with CRLF line ends.
    """

    def __init__(self, text: str, keys: tuple[str, ...]) -> None:
        self.fixed: list[bytes] = []  # one more than `slots`
        self.slots: list[str] = []
        pattern = re.compile("|".join(re.escape(k) for k in keys))
        position = 0
        for match in pattern.finditer(text):
            self.fixed.append(text[position:match.start()].encode("utf-8"))
            self.slots.append(match.group())
            position = match.end()
        self.fixed.append(text[position:].encode("utf-8"))
        self._runs: dict[tuple[int, int], bytes] = {}  # (segment, bytes taken) -> its lines

    def encode(self, values: dict[str, bytes]) -> bytes:
        """The base64 lines of the text with `values` in place of the placeholders."""
        out: list[bytes] = []
        self.encode_into(out, values)
        return b"".join(out)

    def encode_into(self, out: list[bytes], values: dict[str, bytes]) -> None:
        """Append the base64 lines of the filled-in text to `out`, in pieces."""
        pending = b""  # bytes not yet encoded: always less than a line at a segment's start
        for index, segment in enumerate(self.fixed):
            if index:
                pending += values[self.slots[index - 1]]
            head = -len(pending) % _LINE  # bytes of this segment that complete pending's line
            if head >= len(segment):
                pending += segment
                continue
            if pending or head:
                out.append(_b64_lines(pending + segment[:head]))
            whole = (len(segment) - head) // _LINE * _LINE
            if whole:
                run = self._runs.get((index, head))
                if run is None:
                    run = self._runs[(index, head)] = _b64_lines(segment[head:head + whole])
                out.append(run)
            pending = segment[head + whole:]
        if pending:
            out.append(_b64_lines(pending))


_PART = 'Content-Type: text/{}; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
_KEYS = (NAME, REF)


@dataclass(frozen=True, slots=True)
class _Shared:
    """The parts of a template's messages that are the same for every recipient."""

    before: bytes  # Subject (unless it holds a placeholder) and From
    reply: bytes  # Reply-To, or nothing
    after: bytes  # fixed headers, MIME headers, the first boundary and the text part's headers
    middle: bytes  # the boundary and the HTML part's headers
    end: bytes  # the closing boundary
    text: _Base64Body
    html: _Base64Body
    subject_fixed: bool


@dataclass(frozen=True)
class EmailTemplate:
    """One notice in one language, rendered once, with placeholders for the customer."""

    sender: str  # From header value, as configured
    reply_to: str | None
    subject: str
    text: str
    html: str
    headers: tuple[tuple[str, str], ...]  # fixed extra headers (X-Incident-*, Auto-Submitted)

    @cached_property
    def envelope_sender(self) -> str:
        """The bare address of the sender, for MAIL FROM."""
        return parseaddr(self.sender)[1]

    @cached_property
    def _fixed(self) -> _Shared:
        """What every recipient's message shares, computed once."""
        subject_fixed = NAME not in self.subject and REF not in self.subject
        before = f"From: {self._sender_header}\r\n"
        if subject_fixed:
            before = f"Subject: {self._subject(self.subject)}\r\n" + before
        reply = f"Reply-To: {self._reply_header}\r\n" if self.reply_to else ""
        # One boundary for the template's messages: base64 lines never contain "_".
        digest = hashlib.sha1("\0".join([self.subject, self.text, self.html]).encode())
        boundary = f"==incident_{digest.hexdigest()[:24]}=="
        after = "".join(f"{key}: {value}\r\n" for key, value in self.headers)
        after += (f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; '
                  f'boundary="{boundary}"\r\n\r\n--{boundary}\r\n') + _PART.format("plain")
        middle = f"--{boundary}\r\n" + _PART.format("html")
        end = f"--{boundary}--\r\n"
        return _Shared(before=before.encode("ascii"), reply=reply.encode("ascii"),
                       after=after.encode("ascii"), middle=middle.encode("ascii"),
                       end=end.encode("ascii"), text=_Base64Body(self.text, _KEYS),
                       html=_Base64Body(self.html, _KEYS), subject_fixed=subject_fixed)

    @staticmethod
    def _subject(subject: str) -> str:
        return encode_header_words(" ".join(subject.split()))

    def build(self, *, name: str, ref: str, to: str, message_id: str, date: str) -> bytes:
        """The complete message for one recipient, CRLF line endings."""
        shared = self._fixed
        before = shared.before
        if not shared.subject_fixed:
            subject = self.subject.replace(NAME, name).replace(REF, ref)
            before = f"Subject: {self._subject(subject)}\r\n".encode("ascii") + before
        out = [before, f"To: {format_address(name, to)}\r\n".encode("ascii"), shared.reply,
               f"Date: {date}\r\nMessage-ID: {message_id}\r\n".encode("ascii"), shared.after]
        shared.text.encode_into(out, {NAME: name.encode("utf-8"), REF: ref.encode("utf-8")})
        out.append(shared.middle)
        shared.html.encode_into(out, {NAME: html.escape(name).encode("utf-8"),
                                      REF: html.escape(ref).encode("utf-8")})
        out.append(shared.end)
        return b"".join(out)

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
