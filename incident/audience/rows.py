"""One data row → validated fields or problems: ids, names, contacts, languages, priorities."""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable
from operator import itemgetter

from email_validator import EmailNotValidError

from incident.audience.contacts import _EmailCheck
from incident.audience.model import (
    LANGUAGES,
    NAME_MAX,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    ContactChecks,
    RowProblem,
    _Fields,
    _KeptRow,
)
from incident.audience.phones import parse_phone
from incident.controls import one_line
from incident.errors import AudienceInvalid, Location

_PRIORITY_VALUES = {
    "urgent": "urgent", "high": "urgent", "vip": "urgent", "1": "urgent",
    "": "normal", "normal": "normal", "0": "normal",
}
_VOICE_VALUES = {"yes": "yes", "y": "yes", "true": "yes", "1": "yes", "是": "yes",
                 "no": "no", "n": "no", "false": "no", "0": "no", "否": "no", "": ""}
_LANGUAGE_ALIASES = {"zh": "zh-CN", "cn": "zh-CN", "chinese": "zh-CN", "中文": "zh-CN",
                     "简体": "zh-CN", "zh-hans": "zh-CN",
                     "hk": "zh-HK", "繁體": "zh-HK", "繁体": "zh-HK", "zh-hant": "zh-HK",
                     "zh-tw": "zh-HK", "zh-mo": "zh-HK", "zh-hant-hk": "zh-HK",
                     "zh-hant-tw": "zh-HK", "zh-hant-mo": "zh-HK", "zh-yue": "zh-HK",
                     "yue": "zh-HK", "yue-hk": "zh-HK", "zh-hk": "zh-HK",
                     "en": "en", "english": "en", "英文": "en"}
_PRODUCT_SEPARATORS = re.compile(r"[;|,]")
_CHANNEL_OF = {"email": "email", "phone": "SMS"}


def normalize_language(value: str) -> str:
    """Map `zh`, `zh_CN`, `cn`, `en-GB`, ... to a supported language: Traditional Chinese
    (`zh-HK`, `zh-TW`, `zh-Hant`, `zh-Hant-HK`, ...) to zh-HK, other Chinese to zh-CN;
    ValueError otherwise."""
    key = value.strip().replace("_", "-").lower()
    if key in _LANGUAGE_ALIASES:
        return _LANGUAGE_ALIASES[key]
    # Templates exist in Simplified, Hong Kong Traditional and English, so every regional
    # variant maps onto one of them rather than failing the row: a Traditional script tag
    # wins over the region (zh-Hant-SG reads Traditional), else the base language.
    parts = key.split("-")
    if parts[0] in ("zh", "en") and len(parts) > 1:
        return "zh-HK" if parts[0] == "zh" and "hant" in parts else _LANGUAGE_ALIASES[parts[0]]
    raise ValueError(f"unsupported language {value!r} (use one of {', '.join(LANGUAGES)})")


class _RowParser:
    """Validates data rows against one header; remembers ids to catch duplicates."""

    def __init__(self, columns: dict[str, int], width: int, display: str, language: str,
                 region: str, checks: ContactChecks | None = None) -> None:
        self.columns = columns
        self.checks = checks or {}
        self.width = width
        self.display = display
        self.language = language
        self.region = region
        self.seen = _Seen()
        self.unit = "line"  # what a row's number counts: a file's lines, a query's rows
        self.emails = _EmailCheck()
        self.languages: dict[str, str | ValueError] = {}
        # parse() appends "" to each row: a column the file lacks reads that cell.
        self.cells = itemgetter(*(columns.get(name, width)
                                  for name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS))

    @classmethod
    def from_header(cls, header: list[str], line: int, display: str, language: str,
                    region: str, checks: ContactChecks | None = None) -> _RowParser:
        """Map known column names to positions; raise AudienceInvalid on a bad header."""
        columns: dict[str, int] = {}
        problems: list[tuple[Location, str]] = []
        known = set(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
        for index, raw in enumerate(header):
            name = raw.strip().lstrip("\ufeff").lower()
            if name not in known:
                continue  # extra columns (notes, account manager, ...) are allowed
            if name in columns:
                problems.append((Location(file=display, line=line, field=name),
                                 "column appears twice"))
            columns.setdefault(name, index)
        for name in REQUIRED_COLUMNS:
            if name not in columns:
                problems.append((Location(file=display, line=line, field=name),
                                 "required column missing"))
        if problems:
            fields = ", ".join(loc.field or "" for loc, _ in problems)
            raise AudienceInvalid(
                f"{display}:{line}: bad header ({fields})",
                hint="the header needs the columns " + ",".join(REQUIRED_COLUMNS)
                + "; optional: " + ",".join(OPTIONAL_COLUMNS),
                problems=problems,
            )
        return cls(columns, len(header), display, language, region, checks)

    def parse(self, row: list[str], line: int) -> _Fields | list[RowProblem] | _KeptRow:
        """The row's validated fields, or every problem found in it ([] for a blank row).

        A bad contact alone does not cost the row: with a good contact left, the row is kept
        without the bad one (_KeptRow), so the customer is notified on the channels they can
        be reached on, and the bad field is reported.
        """
        if len(row) != self.width:
            if not any(cell.strip() for cell in row):
                return []  # a blank line (or a row of empty cells): not a customer
            # Cells are shifted (usually an unquoted comma), so no column can be trusted.
            return [RowProblem(line, "", f"expected {self.width} cells, found {len(row)} "
                                         "(quote cells that contain commas)")]
        row.append("")
        (ref, name, raw_email, raw_phone, raw_language, segment, region, branch, products,
         raw_priority, raw_voice) = map(str.strip, self.cells(row))
        # The name and id go into email headers and SMS bodies: one line, no control
        # characters (a NUL, an ESC, a line break that would start a header of its own).
        ref, name = one_line(ref), one_line(name)[:NAME_MAX]
        if not (ref or name or raw_email or raw_phone or raw_language or segment or region
                or branch or products or raw_priority or raw_voice) and not any(
                    c.strip() for c in row):
            return []
        problems: list[RowProblem] = []
        if not ref:
            problems.append(RowProblem(line, "id", "empty id"))
        else:
            first = self.seen.first(ref, line)
            if first is not None:
                problems.append(RowProblem(line, "id", f"duplicate id {ref!r} "
                                                       f"(first on {self.unit} {first})"))
        if not name:
            problems.append(RowProblem(line, "name", "empty name"))

        email = phone = None
        bad_contacts = len(problems)
        if raw_email:
            try:
                email = self.emails.normalized(raw_email)
            except EmailNotValidError as exc:
                problems.append(RowProblem(line, "email", f"invalid email: {exc}"))
        if raw_phone:
            phone, message = parse_phone(raw_phone, self.region)
            if message:
                problems.append(RowProblem(line, "phone", message))
        if self.checks:
            email, phone = self._checked(line, email, phone, problems)
        bad_contacts = len(problems) - bad_contacts
        if not raw_email and not raw_phone:
            problems.append(RowProblem(line, "email/phone", "neither an email nor a phone"))

        language = self.language
        if raw_language:
            known = self.languages.get(raw_language)
            if known is None:
                try:
                    known = normalize_language(raw_language)
                except ValueError as exc:
                    known = exc
                if len(self.languages) < 1000:  # a few spellings, unless the file is odd
                    self.languages[raw_language] = known
            if isinstance(known, ValueError):
                problems.append(RowProblem(line, "language", str(known)))
            else:
                language = known
        priority = _PRIORITY_VALUES.get(raw_priority.lower())
        if priority is None:
            problems.append(RowProblem(line, "priority", f"unknown priority {raw_priority!r} "
                                       "(use urgent/high/vip/1 or normal/0/empty)"))
        voice = _VOICE_VALUES.get(raw_voice.lower())
        if voice is None:
            problems.append(RowProblem(line, "voice", f"unknown voice {raw_voice!r} "
                                       "(use yes or no, or leave it empty)"))

        fields = (ref, name, email, phone, language, segment, region, branch,
                  tuple(dict.fromkeys(p.strip() for p in
                                      _PRODUCT_SEPARATORS.split(products.lower()) if p.strip()))
                  if products else (), priority or "normal", voice or "")
        if problems:
            if len(problems) == bad_contacts and (email is not None or phone is not None):
                left = "email" if email is not None else "SMS"
                return _KeptRow(fields, [
                    RowProblem(p.line, p.field, f"{p.message} — not used: notified by "
                                                f"{left} only", skipped=False)
                    for p in problems])
            return problems
        return fields

    def _checked(self, line: int, email: str | None, phone: str | None,
                 problems: list[RowProblem]) -> tuple[str | None, str | None]:
        """The contacts once the channel checks had their say (a refused one is dropped)."""
        contacts = {"email": email, "phone": phone}
        for field, check in self.checks.items():
            value = contacts.get(field)
            reason = check(value) if value is not None else None
            if reason:
                problems.append(RowProblem(line, field, f"{field} refused for "
                                                        f"{_CHANNEL_OF[field]}: {reason}"))
                contacts[field] = None
        return contacts["email"], contacts["phone"]


class _Seen:
    """Ids already read, each with its line: a dict while small, then an open-addressing table
    of two independent 64-bit hashes per id (24 bytes a slot; two different ids collide on
    128 bits with a chance below 1e-26 in a million), so a huge list costs little memory."""

    SMALL = 200_000

    def __init__(self) -> None:
        self.small: dict[str, int] | None = {}
        self.expected: Callable[[], int] = lambda: 0  # rows the whole file probably holds
        self.size = 0
        self.mask = 0
        self.keys = array("q")
        self.checks = array("q")
        self.lines = array("q")

    def first(self, ref: str, line: int) -> int | None:
        """The line `ref` was first seen on, or None (and remember it on `line`)."""
        small = self.small
        if small is not None:
            first = small.setdefault(ref, line)
            if first != line:
                return first
            if len(small) > self.SMALL:
                # Sized for the whole file at once: growing later would hold both tables.
                self._grow(max(len(small), self.expected()) * 2)
                for known, at in small.items():
                    self._put(known, at)
                self.small = None
            return None
        return self._put(ref, line)

    def _put(self, ref: str, line: int) -> int | None:
        key, check = hash(ref) or 1, hash(ref + "\x00")
        keys, mask = self.keys, self.mask
        slot = key & mask
        while True:
            found = keys[slot]
            if found == 0:
                break
            if found == key and self.checks[slot] == check:
                return self.lines[slot]
            slot = (slot + 1) & mask
        keys[slot], self.checks[slot], self.lines[slot] = key, check, line
        self.size += 1
        if self.size * 2 > len(keys):
            self._grow(len(keys) * 2)
        return None

    def _grow(self, wanted: int) -> None:
        capacity = 1 << max(wanted - 1, 1).bit_length()
        old = self.keys, self.checks, self.lines
        self.keys = array("q", bytes(8 * capacity))
        self.checks = array("q", bytes(8 * capacity))
        self.lines = array("q", bytes(8 * capacity))
        self.mask = mask = capacity - 1
        keys, checks, lines = self.keys, self.checks, self.lines
        for key, check, line in zip(*old, strict=True):
            if key:
                slot = key & mask
                while keys[slot]:
                    slot = (slot + 1) & mask
                keys[slot], checks[slot], lines[slot] = key, check, line
