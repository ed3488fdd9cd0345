"""Email bytes built cheaply per recipient from a notice rendered once per language.

Building an `EmailMessage` per recipient costs about as much as sending it (facts.md), so a
notice is rendered once per (notice, language) with placeholders for the customer's fields;
each recipient's message is then those parts with the placeholders replaced, base64-encoded,
under headers written here. The result is the same MIME a mail client gets from the stdlib:
multipart/alternative, text part first, UTF-8, RFC 2047 words for non-ASCII headers.
"""

from __future__ import annotations

import binascii
import hashlib
import html
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import parseaddr
from functools import cached_property

import idna

CRLF = b"\r\n"
# Placeholders for per-recipient fields: ASCII letters only, so that HTML escaping, Jinja
# filters that keep letters and line folding all leave them intact.
NAME = "QxNAMEq7Zv"
REF = "QxREFq7Zv"
ALT_NAME = "WkNAMEp3Jy"
ALT_REF = "WkREFp3Jy"
_SAFE_PHRASE = re.compile(r"^[A-Za-z0-9 !#$%&'*+\-/=?^_`{|}~.]*$")


_WORD_LINE = 76  # RFC 2047 §2: a line holding encoded-words is at most 76 characters
_LINE_MAX = 78  # RFC 5322 §2.1.1: lines SHOULD be at most 78 characters (998 at most)
_WORD_MARKUP = len("=?utf-8?b??=")
_UTF8_CONTINUATION = range(0x80, 0xC0)


def _word_bytes(columns: int) -> int:
    """The most UTF-8 bytes whose encoded-word fits in `columns` (at least one character)."""
    return max(4, (columns - _WORD_MARKUP) // 4 * 3)


def encoded_words(text: str, used: int = 0) -> list[str]:
    """`text` as RFC 2047 base64 encoded-words (UTF-8) of at most 75 characters each, never
    splitting a character: the first fits on a line of which `used` columns are taken, the
    others each on a line of their own after the folding space."""
    data = text.encode("utf-8")
    words: list[str] = []
    start, budget = 0, _word_bytes(_WORD_LINE - used)
    while start < len(data):
        end = min(start + budget, len(data))
        while end < len(data) and data[end] in _UTF8_CONTINUATION:
            end -= 1  # back to the start of the character that does not fit
        words.append("=?utf-8?b?" + binascii.b2a_base64(data[start:end], newline=False)
                     .decode("ascii") + "?=")
        start, budget = end, _word_bytes(_WORD_LINE - 1)
    return words


def _needs_encoding(text: str) -> bool:
    """Whether `text` cannot go in a header as it is (non-ASCII, control characters, or a
    sequence a reader would take for an encoded-word)."""
    return not (text.isascii() and text.isprintable()) or "=?" in text


def _fold_ascii(words: list[str], used: int) -> str | None:
    """Words joined by spaces, folded before a word that would pass 78 columns; None if a
    single word cannot fit (the caller encodes instead)."""
    lines: list[str] = []
    line: list[str] = []
    column = used
    for word in words:
        if len(word) + 1 > _LINE_MAX - used:
            return None
        if line and column + 1 + len(word) > _LINE_MAX:
            lines.append(" ".join(line))
            line, column = [], 0
        column += len(word) + (1 if line or lines else 0)
        line.append(word)
    lines.append(" ".join(line))
    return "\r\n ".join(lines)


def unstructured_header(field: str, text: str) -> str:
    """`Field: text` CRLF, folded (RFC 5322 §2.2.3) with RFC 2047 words for non-ASCII text."""
    text = " ".join(text.split())  # no line break of the text can reach the header
    used = len(field) + 2
    if not _needs_encoding(text):
        folded = _fold_ascii(text.split(" "), used)
        if folded is not None:
            return f"{field}: {folded}\r\n"
    return f"{field}: " + "\r\n ".join(encoded_words(text, used)) + "\r\n"


def address_header(field: str, name: str, address: str) -> str:
    """`Field: Name <addr>` CRLF, the name quoted or encoded as RFC 5322 and 2047 require and
    the header folded: encoded-words of at most 75 characters on lines of at most 76, the
    address on a line of its own when it would pass 78 columns."""
    name = " ".join(name.split())  # customer data: no line breaks can reach a header
    used = len(field) + 2
    if not name:
        return f"{field}: {address}\r\n"
    if not _needs_encoding(name):
        phrase = name if _SAFE_PHRASE.match(name) else (
            '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"')
        if used + len(phrase) + len(address) + 3 <= _LINE_MAX:
            return f"{field}: {phrase} <{address}>\r\n"
    words = encoded_words(name, used)
    last = len(words[-1]) + (used if len(words) == 1 else 1)
    gap = " " if last + len(address) + 3 <= _LINE_MAX else "\r\n "
    return f"{field}: " + "\r\n ".join(words) + f"{gap}<{address}>\r\n"


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
        return idna_address(parseaddr(self.sender)[1])

    @cached_property
    def _fixed(self) -> _Shared:
        """What every recipient's message shares, computed once."""
        subject_fixed = NAME not in self.subject and REF not in self.subject
        before = address_header("From", *_name_and_address(self.sender))
        if subject_fixed:
            before = unstructured_header("Subject", self.subject) + before
        reply = (address_header("Reply-To", *_name_and_address(self.reply_to))
                 if self.reply_to else "")
        # One boundary for the template's messages: base64 lines never contain "_".
        digest = hashlib.sha1("\0".join([self.subject, self.text, self.html]).encode())
        boundary = f"==incident_{digest.hexdigest()[:24]}=="
        after = "".join(f"{key}: {value}\r\n" for key, value in self.headers)
        after += (f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n'
                  f' boundary="{boundary}"\r\n\r\n--{boundary}\r\n') + _PART.format("plain")
        middle = f"--{boundary}\r\n" + _PART.format("html")
        end = f"--{boundary}--\r\n"
        return _Shared(before=before.encode("ascii"), reply=reply.encode("ascii"),
                       after=after.encode("ascii"), middle=middle.encode("ascii"),
                       end=end.encode("ascii"), text=_Base64Body(self.text, _KEYS),
                       html=_Base64Body(self.html, _KEYS), subject_fixed=subject_fixed)

    @cached_property
    def _fixed_ready(self) -> bool:
        shared = self._fixed
        return all(data_ready(part) for part in (shared.before, shared.reply, shared.after,
                                                 shared.middle, shared.end))

    def data_ready(self, *, to: str, message_id: str) -> bool:
        """Whether `build`'s message for these values goes into DATA as it is (see
        data_ready()), known without reading it: the parts every recipient shares were checked
        once; per recipient, the name and reference are either base64 or in headers whose
        whitespace is collapsed to spaces (unstructured_header, address_header), whose folded
        lines start with a space; only the address and the Message-ID are written raw."""
        return self._fixed_ready and _one_line(to) and _one_line(message_id)

    def build(self, *, name: str, ref: str, to: str, message_id: str, date: str) -> bytes:
        """The complete message for one recipient, CRLF line endings."""
        shared = self._fixed
        before = shared.before
        if not shared.subject_fixed:
            subject = self.subject.replace(NAME, name).replace(REF, ref)
            before = unstructured_header("Subject", subject).encode("ascii") + before
        # The address is ASCII but for a non-ASCII local part, sent only with SMTPUTF8 and
        # then written as UTF-8 (RFC 6532); the domain is already IDNA (idna_address).
        out = [before, address_header("To", name, to).encode("utf-8"), shared.reply,
               f"Date: {date}\r\nMessage-ID: {message_id}\r\n".encode("ascii"), shared.after]
        shared.text.encode_into(out, {NAME: name.encode("utf-8"), REF: ref.encode("utf-8")})
        out.append(shared.middle)
        shared.html.encode_into(out, {NAME: html.escape(name).encode("utf-8"),
                                      REF: html.escape(ref).encode("utf-8")})
        out.append(shared.end)
        return b"".join(out)



def data_ready(data: bytes) -> bool:
    """Whether `data` goes into SMTP DATA as it is: whole lines ending in CRLF, no lone CR
    or LF, no line starting with "." (nothing to normalise or dot-stuff, RFC 5321 §4.5.2)."""
    crlf = data.count(b"\r\n")
    return (data.count(b"\n") == crlf == data.count(b"\r") and data.endswith(b"\r\n")
            and not data.startswith(b".") and b"\n." not in data) if data else True


def _one_line(value: str) -> bool:
    return "\r" not in value and "\n" not in value


def _name_and_address(value: str) -> tuple[str, str]:
    name, address = parseaddr(value)
    return name, idna_address(address)


def idna_address(address: str) -> str:
    """The address with its domain in ASCII (IDNA 2008 A-labels, as email-validator checks
    it): `li.na@例子.中国` → `li.na@xn--fsqu00a.xn--fiqs8s`. The local part is left as it is."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"


def needs_smtputf8(address: str) -> bool:
    """Whether an address (domain already IDNA) can only be sent with SMTPUTF8 (RFC 6531)."""
    return not address.isascii()


class DkimSigner:
    """Puts a DKIM-Signature (RFC 6376: rsa-sha256, relaxed/relaxed) on built messages."""

    # What a receiver shows or acts on; a listed header that is absent is signed as absent.
    HEADERS = (b"From", b"Reply-To", b"To", b"Subject", b"Date", b"Message-ID",
               b"MIME-Version", b"Content-Type", b"Auto-Submitted")

    def __init__(self, selector: str, domain: str, key: bytes) -> None:
        import dkim  # dkimpy: imported only when signing is configured

        self._dkim = dkim
        self.selector = selector.encode("ascii")
        self.domain = idna.encode(domain, uts46=True) if not domain.isascii() else domain.encode()
        self._key = key
        try:  # a key that cannot sign fails here, once, rather than on every message
            self.sign(b"From: check@example.com\r\nSubject: key check\r\n\r\nx\r\n")
        except Exception as exc:  # dkimpy raises its own errors, binascii's, IndexError...
            raise ValueError(f"cannot sign with this key ({type(exc).__name__}: {exc})"
                             ) from None

    def sign(self, data: bytes) -> bytes:
        """The message with its DKIM-Signature header first."""
        header = self._dkim.sign(data, self.selector, self.domain, self._key,
                                 canonicalize=(b"relaxed", b"relaxed"),
                                 include_headers=list(self.HEADERS))
        return header + data


def flatten(message: EmailMessage) -> bytes:
    """An EmailMessage as SMTP-ready bytes (for callers that built one themselves)."""
    return message.as_bytes(policy=SMTP_POLICY)
