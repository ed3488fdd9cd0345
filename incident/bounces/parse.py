"""Untrusted mail → `ParsedBounce`: RFC 3464 delivery status notifications and the common
non-standard bounces (plain text with the original quoted: Exchange/Outlook NDRs, Gmail, QQ
Mail, Exim). Never raises on what a message contains: a message that cannot be read becomes
a `problem`; sizes are bounded and diagnostic text is stripped of control characters.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser, HeaderParser
from functools import partial

from incident.bounces.model import (
    MAX_DIAGNOSTIC,
    MAX_ID,
    MAX_MESSAGE_BYTES,
    MAX_PARTS,
    MAX_RECIPIENTS,
    MAX_REFERENCES,
    MAX_TEXT,
    Kind,
    ParsedBounce,
    RecipientStatus,
    Severity,
)

# compat32: the lenient, fast parser; headers are read as text here, never as structures
# that raise on a malformed address.
_PARSER = BytesParser(policy=policy.compat32)
_HEADERS = HeaderParser(policy=policy.compat32)

_MESSAGE_ID = re.compile(r"<[^<>\s\"]{3,}@[^<>\s\"]+>")
_QUOTED_ID = re.compile(r"^[ \t>|]*Message-ID:[ \t]*(<[^<>\s\"]+@[^<>\s\"]+>)",
                        re.IGNORECASE | re.MULTILINE)
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_CODE = re.compile(r"(?<!\d)([45])\d\d(?=[ -])")
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]+")
_ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")
_DAEMONS = ("mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon")
# Subjects and phrases of the common non-standard bounces (Exchange/Outlook, Gmail, QQ Mail,
# Exim, Sendmail, qmail), lower-cased.
_BOUNCE_SUBJECT = re.compile(
    r"undeliverable|undelivered mail|delivery status notification|mail delivery failed|"
    r"delivery failure|failure notice|returned mail|non[- ]?delivery|could not be delivered|"
    r"delivery has failed|退信|投递失败|未送达|无法送达|無法傳遞", re.IGNORECASE)
_BOUNCE_TEXT = re.compile(
    r"this message was created automatically by mail delivery software|"
    r"delivery has failed to these recipients|your message (?:wasn't|was not|couldn't be) "
    r"delivered|could not be delivered to one or more recipients|i'm sorry to have to inform "
    r"you|permanent error|message could not be delivered|邮件.{0,20}(?:退回|无法|未能|失败)",
    re.IGNORECASE)
_SOFT_TEXT = re.compile(r"temporar|delay|will (?:retry|try again|keep trying)|still trying|"
                        r"has not yet been delivered|暂时|延迟|稍后重试", re.IGNORECASE)


def parse_bounce(data: bytes, *, verp_prefix: str = "bounce") -> ParsedBounce:
    """Read one message; a DSN, a non-standard bounce, something else, or a problem."""
    if len(data) > MAX_MESSAGE_BYTES:
        return _problem(data, f"message of {len(data):,} bytes is larger than the "
                              f"{MAX_MESSAGE_BYTES:,} bytes read; not parsed")
    try:
        msg = _PARSER.parsebytes(data)
    except Exception as exc:  # outside input: any parser failure is a problem
        return _problem(data, f"not a mail message: {_clean(str(exc))[:120]}")
    identity = message_identity(msg, data)
    try:
        return _read(msg, identity, verp_prefix)
    except Exception as exc:  # malformed MIME the lenient parser let through
        return ParsedBounce(identity=identity, kind=Kind.PROBLEM,
                            problem=f"malformed message ({type(exc).__name__}: "
                                    f"{_clean(str(exc))[:120]})")


def message_identity(msg: Message | None, data: bytes) -> str:
    """A message's stable identity: its own Message-ID, else the SHA-256 of its bytes."""
    if msg is not None:
        own = _header(msg, "Message-ID")
        found = _MESSAGE_ID.search(own)
        if found and len(found.group(0)) <= MAX_ID:
            return f"message-id:{found.group(0)}"
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _problem(data: bytes, why: str) -> ParsedBounce:
    return ParsedBounce(identity=message_identity(None, data), kind=Kind.PROBLEM, problem=why)


def _read(msg: Message, identity: str, verp_prefix: str) -> ParsedBounce:
    subject = _clean(_decoded(_header(msg, "Subject")))[:200]
    parts = list(_walk(msg))
    returned = [h for h in (_returned_headers(p) for p in parts) if h is not None]
    verp = _verp_keys(verp_prefix, [_header(msg, name) for name in (
        "To", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To")]
        + [_header(h, "Return-Path") for h in returned])
    ids = _unique(_MESSAGE_ID.findall(_header(h, "Message-ID"))[:1] for h in returned)
    base = partial(ParsedBounce, identity=identity, verp_keys=verp, subject=subject)
    report_type = msg.get_param("report-type")
    if msg.get_content_type() == "multipart/report" and isinstance(report_type, str) and (
            report_type.lower() == "delivery-status"):
        statuses = [p for p in parts if p.get_content_type() == "message/delivery-status"]
        if not statuses:
            return base(kind=Kind.PROBLEM, problem="multipart/report without its "
                                                   "message/delivery-status part")
        recipients = tuple(_dsn_recipients(statuses[0]))
        if not recipients:
            return base(kind=Kind.PROBLEM, problem="delivery-status part names no "
                                                   "recipient (Final-Recipient, Action, Status)")
        return base(kind=Kind.DSN, recipients=recipients, message_ids=ids)
    text = _text_of(parts)
    sender = _header(msg, "From").lower()
    if not (any(d in sender for d in _DAEMONS) or _BOUNCE_SUBJECT.search(subject)
            or _BOUNCE_TEXT.search(text)):
        return base(kind=Kind.NOT_A_BOUNCE)
    quoted = _QUOTED_ID.findall(text)
    ids = _unique([ids, quoted])
    return base(kind=Kind.NON_STANDARD, recipients=(_from_text(text, verp_prefix),),
                message_ids=ids)


def _walk(msg: Message) -> Iterator[Message]:
    """The message's parts, depth first, at most MAX_PARTS (a returned message's own parts
    are not entered: the original is ours, not the bounce)."""
    stack, seen = [msg], 0
    while stack and seen < MAX_PARTS:
        part = stack.pop()
        seen += 1
        yield part
        if part.is_multipart() and part.get_content_maintype() != "message":
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend(reversed([c for c in children if isinstance(c, Message)]))


def _returned_headers(part: Message) -> Message | None:
    """The headers of the original message a part returns (message/rfc822 or
    text/rfc822-headers), or None."""
    kind = part.get_content_type()
    if kind == "message/rfc822":
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            return inner[0]
        if isinstance(inner, str):
            return _HEADERS.parsestr(inner[:MAX_TEXT], headersonly=True)
    if kind == "text/rfc822-headers":
        return _HEADERS.parsestr(_part_text(part), headersonly=True)
    return None


def _dsn_recipients(part: Message) -> Iterator[RecipientStatus]:
    """The per-recipient blocks of a message/delivery-status part (the first block is the
    per-message one: Reporting-MTA, Arrival-Date)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = [b for b in payload if isinstance(b, Message)]
    else:  # not split by the parser (unusual encoding): split it ourselves
        text = _part_text(part)
        blocks = [_HEADERS.parsestr(b.strip() + "\n") for b in re.split(r"\r?\n\s*\r?\n", text)
                  if b.strip()]
    found = 0
    for block in blocks:
        if found >= MAX_RECIPIENTS:
            return
        recipient = _header(block, "Final-Recipient") or _header(block, "Original-Recipient")
        action = _header(block, "Action").strip().lower()
        status = _header(block, "Status")
        if not (recipient or action or status):
            continue
        found += 1
        code = _STATUS.search(status)
        diagnostic = _header(block, "Diagnostic-Code")
        yield _recipient(_address(recipient.partition(";")[2] or recipient), action,
                         code.group(0) if code else "", diagnostic.partition(";")[2]
                         if ";" in diagnostic else diagnostic)


def _recipient(address: str, action: str, status: str, diagnostic: str) -> RecipientStatus:
    action = action if action in _ACTIONS else "failed"
    severity: Severity | None
    if action in ("delivered", "relayed", "expanded"):
        severity = None
    elif action == "delayed" or status.startswith("4."):
        severity = Severity.SOFT
    else:
        severity = Severity.HARD
    return RecipientStatus(recipient=address, action=action, status=status,
                           diagnostic=_clean(diagnostic)[:MAX_DIAGNOSTIC], severity=severity)


def _from_text(text: str, verp_prefix: str) -> RecipientStatus:
    """What a plain-text bounce says before the original it quotes: the first recipient
    address, the first status code (x.y.z, else an SMTP reply code) and its line."""
    own = text[:_quote_start(text)]
    code = _STATUS.search(own)
    smtp = None if code else _SMTP_CODE.search(own)
    found = code or smtp
    line = _line_at(own, found.start()) if found else ""
    addresses = [a for a in _ADDRESS.findall(own) if not a.lower().startswith(
        (*_DAEMONS, f"{verp_prefix.lower()}+"))]
    status = code.group(0) if code else ""
    klass = (code or smtp).group(1) if found else ""  # type: ignore[union-attr]
    delayed = klass == "4" or (not klass and bool(_SOFT_TEXT.search(own)))
    if not line:
        line = next((ln for ln in own.splitlines() if _BOUNCE_TEXT.search(ln)), "")
    return _recipient(addresses[0] if addresses else "", "delayed" if delayed else "failed",
                      status, line)


def _line_at(text: str, index: int) -> str:
    """The line of `text` that holds position `index`."""
    end = text.find("\n", index)
    return text[text.rfind("\n", 0, index) + 1:end if end >= 0 else len(text)]


def _quote_start(text: str) -> int:
    """Where the quoted original starts in a bounce's text (its end when not found)."""
    marks = [m.start() for m in re.finditer(
        r"^[ \t>|]*(?:Message-ID|Received|Return-Path):|^-+ ?(?:This is a copy|Original "
        r"message|Below this line)|^原始邮件|^-+ ?原", text, re.IGNORECASE | re.MULTILINE)]
    return min(marks) if marks else len(text)


def _text_of(parts: Iterable[Message]) -> str:
    """The text parts' text, bounded, with the returned headers appended."""
    chunks: list[str] = []
    size = 0
    for part in parts:
        if part.get_content_maintype() == "text" and size < MAX_TEXT:
            chunk = _part_text(part)[:MAX_TEXT - size]
            chunks.append(chunk)
            size += len(chunk)
    return "\n".join(chunks)


def _part_text(part: Message) -> str:
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        payload = part.get_payload()
        return payload[:MAX_TEXT] if isinstance(payload, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return raw[:MAX_TEXT * 4].decode(charset, errors="replace")[:MAX_TEXT]
    except LookupError:  # an unknown charset name
        return raw[:MAX_TEXT * 4].decode("utf-8", errors="replace")[:MAX_TEXT]


def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    if value is None:
        return ""
    return str(value)[:MAX_TEXT]


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, UnicodeError, ValueError):  # a bad encoded word: keep it raw
        return value


def _address(value: str) -> str:
    found = _ADDRESS.search(value)
    return found.group(0)[:320] if found else _clean(value)[:320]


def _verp_keys(prefix: str, values: Iterable[str]) -> tuple[str, ...]:
    pattern = re.compile(rf"(?<![\w.+-]){re.escape(prefix)}\+([0-9a-f]{{64}})@", re.IGNORECASE)
    return _unique([m.lower() for m in pattern.findall(v)] for v in values)


def _unique(groups: Iterable[Iterable[str]]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for group in groups:
        for value in group:
            if len(value) <= MAX_ID and len(seen) < MAX_REFERENCES:
                seen.setdefault(value, None)
    return tuple(seen)


def _clean(text: str) -> str:
    """Outside text as one printable line: control and bidi characters become spaces."""
    return " ".join(_CONTROL.sub(" ", text).split())
