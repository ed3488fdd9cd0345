"""Customer lists (CSV) → validated recipients; filters and urgent-first order.

Two ways to read a list, with the same validation and the same problems reported:

- `iter_audience` / `load_audience` yield or return `Customer`s (the list API: small files,
  counts per branch, tests);
- `scan_audience`, what `incident start` uses: one streaming pass that validates, selects and
  counts, and spools the selected recipients (urgent ones first) to an unnamed temporary file,
  so that memory does not grow with the list. Only counts, the first MAX_PROBLEMS problems and
  the ids already seen (for duplicates: a dict while small, then 20 bytes per id) are kept.

Validation is the hot path of a big start, so it avoids repeated work: the file is decoded in
1 MB blocks (line numbers are still exact), and an email's domain is checked once per file
(`_EmailCheck`) — the result is the one `email_validator.validate_email` gives, which the
rare addresses off the fast path still go through.
"""

from __future__ import annotations

import csv
import hashlib
import io
import marshal
import os
import re
import struct
import tempfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, BinaryIO, NamedTuple

import email_validator
import phonenumbers
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, DOT_ATOM_TEXT
from email_validator.syntax import validate_email_domain_name

from incident.controls import one_line
from incident.errors import AudienceInvalid, Location
from incident.privacy import mask_phone

LANGUAGES = ("zh-CN", "en")
PRIORITIES = ("urgent", "normal")
REQUIRED_COLUMNS = ("id", "name", "email", "phone")
NAME_MAX = 100  # characters of a customer's name kept for the greeting of a notice
OPTIONAL_COLUMNS = ("language", "segment", "region", "branch", "products", "priority")

_PRIORITY_VALUES = {
    "urgent": "urgent", "high": "urgent", "vip": "urgent", "1": "urgent",
    "": "normal", "normal": "normal", "0": "normal",
}
_LANGUAGE_ALIASES = {"zh": "zh-CN", "cn": "zh-CN", "chinese": "zh-CN", "中文": "zh-CN",
                     "en": "en", "english": "en", "英文": "en"}
_PRODUCT_SEPARATORS = re.compile(r"[;|,]")
_UTF8_BOM = b"\xef\xbb\xbf"
_ENCODING_HINT = ("save the file as UTF-8 (Excel: 'CSV UTF-8'; or "
                  "`iconv -f GBK -t UTF-8 old.csv > new.csv`)")
# A huge broken file must not cost memory in proportion to its size: keep this many problems
# (the rest are counted), list fewer in an error, and refuse lines no customer row needs.
MAX_PROBLEMS = 1000
LISTED_IN_ERROR = 20
MAX_LINE_BYTES = 1 << 20
_BLOCK_BYTES = 1 << 20  # read and decode this much at a time (≤ MAX_LINE_BYTES: see _Lines)


@dataclass(frozen=True, slots=True)
class Customer:
    """One validated recipient; email and phone are normalised (phone in E.164)."""

    ref: str
    name: str
    email: str | None
    phone: str | None
    language: str
    segment: str
    region: str
    branch: str
    products: tuple[str, ...]
    priority: str


class Recipient(NamedTuple):
    """What a notice needs of a selected customer (what `scan_audience` spools)."""

    ref: str
    name: str
    email: str | None
    phone: str | None
    language: str
    priority: str


@dataclass
class RowProblem:
    """A bad row: its physical start line in the file, the column at fault ("" = whole row).

    `skipped` is False for a bad contact of a row that is kept: the customer is notified on
    the channels whose contact is good (an invalid phone costs the SMS, not the email).
    """

    line: int
    field: str
    message: str
    skipped: bool = True


# A check of one normalised contact for one channel (the key: "email" or "phone"): the reason
# it cannot be used there, or None. A refused contact is dropped like an invalid one: the
# customer is still notified on their other channels (e.g. an address a relay cannot take).
ContactChecks = Mapping[str, Callable[[str], "str | None"]]
_CHANNEL_OF = {"email": "email", "phone": "SMS"}


@dataclass(frozen=True, slots=True)
class _KeptRow:
    """A row kept without one of its contacts: its fields and what was wrong with it."""

    fields: tuple[Any, ...]
    problems: list[RowProblem]


@dataclass
class AudienceLoad:
    """The result of reading a customer list: the good rows and every bad one."""

    customers: list[Customer]
    problems: list[RowProblem]  # the first MAX_PROBLEMS, then one line saying how many more
    path: str
    rows_read: int
    bad_rows: int = 0
    problem_count: int = 0  # all problems found, listed or not
    partial_rows: int = 0  # rows kept without one of their contacts

    def locations(self) -> list[tuple[Location, str]]:
        """The problems in the form `IncidentError(problems=...)` takes."""
        return [(_location(self.path, p), p.message) for p in self.problems]


def normalize_language(value: str) -> str:
    """Map `zh`, `zh_CN`, `cn`, `en-GB`, ... to a supported language; ValueError otherwise."""
    key = value.strip().replace("_", "-").lower()
    if key in _LANGUAGE_ALIASES:
        return _LANGUAGE_ALIASES[key]
    # Only simplified-Chinese and English templates exist, so every regional variant maps
    # onto one of them rather than failing the row.
    base = key.split("-", 1)[0]
    if base in ("zh", "en") and "-" in key:
        return _LANGUAGE_ALIASES[base]
    raise ValueError(f"unsupported language {value!r} (use one of {', '.join(LANGUAGES)})")


def load_audience(path: Path, *, default_language: str = "zh-CN",
                  default_region: str = "CN", checks: ContactChecks | None = None
                  ) -> AudienceLoad:
    """Read a whole customer CSV; raise AudienceInvalid if it cannot be used at all."""
    display = str(path)
    customers: list[Customer] = []
    tally = _Problems(display)
    for item in iter_audience(path, default_language=default_language,
                              default_region=default_region, checks=checks):
        if isinstance(item, Customer):
            customers.append(item)
        else:
            tally.add(item)
    rows_read = len(customers) + tally.bad_rows
    if not customers:
        tally.refuse(rows_read)
    return AudienceLoad(customers=customers, problems=tally.listed(), path=display,
                        rows_read=rows_read, bad_rows=tally.bad_rows,
                        problem_count=tally.count, partial_rows=tally.partial_rows)


def iter_audience(path: Path, *, default_language: str = "zh-CN",
                  default_region: str = "CN", checks: ContactChecks | None = None
                  ) -> Iterator[Customer | RowProblem]:
    """Stream a customer CSV: per data row one Customer, or one or more RowProblems (a row
    kept without a bad contact: its problems, then the Customer)."""
    for item in _rows(path, default_language=default_language, default_region=default_region,
                      checks=checks):
        if isinstance(item, tuple):
            yield Customer(*item)
        elif isinstance(item, _KeptRow):
            yield from item.problems
            yield Customer(*item.fields)
        else:
            yield from item


# ---------------------------------------------------------------------- selection and scan


@dataclass(frozen=True)
class Selection:
    """Which valid customers a notice goes to.

    The playbook's criteria (every non-empty one must match; any listed product; compared
    stripped and case-folded, as `select` does), then the places the incident names with
    --region/--branch (a customer of any of them), unless `everyone` (a drill audience).
    """

    products: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    branches: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()
    place_regions: frozenset[str] = frozenset()
    place_branches: frozenset[str] = frozenset()
    everyone: bool = False

    @classmethod
    def of(cls, *, products: Sequence[str] = (), regions: Sequence[str] = (),
           branches: Sequence[str] = (), segments: Sequence[str] = (),
           place_regions: Sequence[str] = (), place_branches: Sequence[str] = (),
           everyone: bool = False) -> Selection:
        """A selection from the playbook's criteria and the incident's places."""
        return cls(products=frozenset(_folded(products)), regions=frozenset(_folded(regions)),
                   branches=frozenset(_folded(branches)),
                   segments=frozenset(_folded(segments)),
                   place_regions=frozenset(r.casefold() for r in place_regions),
                   place_branches=frozenset(b.casefold() for b in place_branches),
                   everyone=everyone)

    @property
    def places(self) -> bool:
        """--region or --branch was given."""
        return bool(self.place_regions or self.place_branches)

    @property
    def is_all(self) -> bool:
        """Every valid customer is selected."""
        return self.everyone or not (self.products or self.regions or self.branches
                                     or self.segments or self.places)

    def matches(self, region: str, branch: str, segment: str,
                products: tuple[str, ...]) -> bool:
        """Whether a valid customer with these fields is selected."""
        if self.everyone:
            return True
        if self.products and self.products.isdisjoint(p.casefold() for p in products):
            return False
        folded_region, folded_branch = region.casefold(), branch.casefold()
        if self.regions and folded_region not in self.regions:
            return False
        if self.branches and folded_branch not in self.branches:
            return False
        if self.segments and segment.casefold() not in self.segments:
            return False
        return not self.places or (folded_region in self.place_regions
                                   or folded_branch in self.place_branches)

    def record(self) -> dict[str, Any]:
        """As stored with a notice (JSON), so that its rows can be derived again."""
        return {"products": sorted(self.products), "regions": sorted(self.regions),
                "branches": sorted(self.branches), "segments": sorted(self.segments),
                "place_regions": sorted(self.place_regions),
                "place_branches": sorted(self.place_branches), "places": self.places,
                "everyone": self.everyone}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Selection:
        """The selection `record()` stored."""
        sets = ("products", "regions", "branches", "segments", "place_regions",
                "place_branches")
        return cls(**{key: frozenset(data.get(key, ())) for key in sets},
                   everyone=bool(data.get("everyone")))


@dataclass
class AudienceScan:
    """One pass over a customer list: counts, the first problems, the selected recipients
    (spooled, urgent first) and the file's SHA-256 (what the rows were derived from)."""

    path: str
    rows_read: int
    bad_rows: int
    problem_count: int
    problems: list[RowProblem]
    valid: int
    selected: int
    reach: Counter[tuple[str, bool, bool]]  # (language, has email, has phone) -> customers
    sha256: str
    size: int
    spool: RecipientSpool | None = None
    partial_rows: int = 0  # rows kept without one of their contacts (problems say which)
    utf8_refusal: str | None = None  # why SMTPUTF8 addresses were refused (scan_audience)

    def locations(self, *, skipped: bool | None = None) -> list[tuple[Location, str]]:
        """The problems in the form `IncidentError(problems=...)` takes: all, or those of
        skipped rows (`skipped=True`), or those of rows kept without a contact (False)."""
        return [(_location(self.path, p), p.message) for p in self.problems
                if skipped is None or p.skipped == skipped or not p.line]

    def unreachable(self, channels: Sequence[str]) -> int:
        """Selected customers with no usable contact on any of `channels`."""
        return sum(n for (_, has_email, has_phone), n in self.reach.items()
                   if not any(has_email if c == "email" else has_phone for c in channels))

    def messages(self, channels: Sequence[str]) -> dict[str, dict[str, int]]:
        """Messages per channel and language: a customer gets one per channel they have an
        address for (email, or phone for sms)."""
        out: dict[str, dict[str, int]] = {}
        for (lang, has_email, has_phone), n in sorted(self.reach.items()):
            for channel in channels:
                if has_email if channel == "email" else has_phone:
                    by_lang = out.setdefault(channel, {})
                    by_lang[lang] = by_lang.get(lang, 0) + n
        return out

    def message_count(self, channels: Sequence[str]) -> int:
        """All messages of the notice on `channels`."""
        return sum(n for by_lang in self.messages(channels).values() for n in by_lang.values())


def scan_audience(path: Path, selection: Selection, *, default_language: str = "zh-CN",
                  default_region: str = "CN", spool: bool = True,
                  checks: ContactChecks | None = None,
                  refuse_utf8: Callable[[], str | None] | None = None) -> AudienceScan:
    """Validate, select and count a whole customer list in one streaming pass, spooling the
    selected recipients (unless `spool` is false: a dry run only counts).

    `refuse_utf8`, asked once at the first email whose local part is not ASCII (it can only be
    sent with SMTPUTF8): why such addresses cannot be sent, or None if they can.

    Raises AudienceInvalid if the file cannot be used at all or has no valid customer; a scan
    that selects nobody is returned (`selected == 0`, the caller says why that is wrong).
    """
    display = str(path)
    tally = _Problems(display)
    reach: Counter[tuple[str, bool, bool]] = Counter()
    valid = selected = 0
    recipients = RecipientSpool() if spool else None
    matches = None if selection.is_all else selection.matches
    source: list[_Lines] = []
    refusal: list[str | None] = []  # the answer of refuse_utf8, if it was asked

    def ask() -> str | None:
        assert refuse_utf8 is not None
        refusal.append(refuse_utf8())
        return refusal[-1]

    try:
        for item in _rows(path, default_language=default_language,
                          default_region=default_region, source=source, checks=checks,
                          refuse_utf8=ask if refuse_utf8 is not None else None):
            if isinstance(item, _KeptRow):
                for problem in item.problems:
                    tally.add(problem)
                item = item.fields
            elif not isinstance(item, tuple):
                for problem in item:
                    tally.add(problem)
                continue
            valid += 1
            ref, name, email, phone, language, segment, region, branch, products, priority = item
            if matches is not None and not matches(region, branch, segment, products):
                continue
            selected += 1
            reach[language, email is not None, phone is not None] += 1
            if recipients is not None:
                recipients.add((ref, name, email, phone, language, priority),
                               urgent=priority == "urgent")
        if not valid:
            tally.refuse(valid + tally.bad_rows)
    except BaseException:
        if recipients is not None:
            recipients.close()
        raise
    lines = source[0]
    return AudienceScan(path=display, rows_read=valid + tally.bad_rows, bad_rows=tally.bad_rows,
                        problem_count=tally.count, problems=tally.listed(), valid=valid,
                        selected=selected, reach=reach, sha256=lines.digest.hexdigest(),
                        size=lines.size, spool=recipients, partial_rows=tally.partial_rows,
                        utf8_refusal=refusal[0] if refusal else None)


class RecipientSpool:
    """Selected recipients in an unnamed temporary file (in memory while small): urgent ones
    first, each group in file order; blocks of marshalled tuples, so memory stays flat."""

    BLOCK = 5000
    _LENGTH = struct.Struct("<I")

    def __init__(self) -> None:
        self._files = {True: _spool_file(), False: _spool_file()}
        self._pending: dict[bool, list[tuple[Any, ...]]] = {True: [], False: []}
        self.count = 0

    def add(self, recipient: tuple[Any, ...], *, urgent: bool) -> None:
        """Append one recipient (ref, name, email, phone, language, priority)."""
        pending = self._pending[urgent]
        pending.append(recipient)
        self.count += 1
        if len(pending) >= self.BLOCK:
            self._flush(urgent)

    def _flush(self, urgent: bool) -> None:
        pending = self._pending[urgent]
        if pending:
            data = marshal.dumps(pending)
            self._files[urgent].write(self._LENGTH.pack(len(data)) + data)
            self._pending[urgent] = []

    def __iter__(self) -> Iterator[Recipient]:
        """Every recipient, urgent first (read once, after the last `add`)."""
        for urgent in (True, False):
            self._flush(urgent)
            handle = self._files[urgent]
            handle.seek(0)
            while header := handle.read(self._LENGTH.size):
                (size,) = self._LENGTH.unpack(header)
                yield from map(Recipient._make, marshal.loads(handle.read(size)))

    def close(self) -> None:
        """Drop the spooled data."""
        for handle in self._files.values():
            handle.close()


def _spool_file() -> IO[bytes]:
    # Unnamed: customer contacts never appear under a file name, and vanish with the process.
    return tempfile.SpooledTemporaryFile(max_size=4 << 20)


def select(customers: Iterable[Customer], *, products: Sequence[str] = (),
           regions: Sequence[str] = (), branches: Sequence[str] = (),
           segments: Sequence[str] = ()) -> list[Customer]:
    """Customers matching every non-empty criterion (any listed product), urgent first."""
    wanted = Selection.of(products=products, regions=regions, branches=branches,
                          segments=segments)
    chosen = [c for c in customers
              if wanted.matches(c.region, c.branch, c.segment, c.products)]
    # sorted() is stable, so the file's order is kept within each priority.
    return sorted(chosen, key=lambda c: c.priority != "urgent")


# ---------------------------------------------------------------------- reading and validating


class _Problems:
    """Problems of a list: the first MAX_PROBLEMS kept, all counted, bad rows counted."""

    def __init__(self, display: str) -> None:
        self.display = display
        self.kept: list[RowProblem] = []
        self.count = 0
        self.bad_rows = 0
        self.partial_rows = 0  # rows kept without a contact
        self._last_bad = 0

    def add(self, problem: RowProblem) -> None:
        """Note one problem (a bad row may have several, one after the other)."""
        if problem.line != self._last_bad:
            self._last_bad = problem.line
            if problem.skipped:
                self.bad_rows += 1
            else:
                self.partial_rows += 1
        self.count += 1
        if len(self.kept) < MAX_PROBLEMS:
            self.kept.append(problem)

    def listed(self) -> list[RowProblem]:
        """The kept problems, plus one line saying how many more there were."""
        if self.count > len(self.kept):
            return [*self.kept, RowProblem(0, "", _more(self.count - len(self.kept)))]
        return list(self.kept)

    def refuse(self, rows_read: int) -> None:
        """Raise AudienceInvalid: the list has no valid customer."""
        display = self.display
        what = "no data rows" if rows_read == 0 else f"all {rows_read:,} rows are bad"
        listed = [(_location(display, p), p.message) for p in self.kept[:LISTED_IN_ERROR]]
        if self.count > len(listed):
            listed.append((Location(file=display), _more(self.count - len(listed))))
        raise AudienceInvalid(
            f"{display}: no valid customer ({what})",
            hint="each row needs an id, a name and a valid email or phone",
            problems=listed or [(Location(file=display), "no data rows after the header")],
        )


def _more(count: int) -> str:
    return f"... and {count:,} more problems in later rows (not listed)"


# A data row's fields, validated: ref, name, email, phone, language, segment, region, branch,
# products, priority (the order of Customer's fields).
_Fields = tuple[Any, ...]


def _rows(path: Path, *, default_language: str, default_region: str,
          source: list[_Lines] | None = None, checks: ContactChecks | None = None,
          refuse_utf8: Callable[[], str | None] | None = None
          ) -> Iterator[_Fields | list[RowProblem] | _KeptRow]:
    """Per data row its validated fields, its problems, or both (kept without a bad
    contact); raises AudienceInvalid when the file cannot be read as a customer list.
    `source` receives the line reader (for its digest and size once the rows are read)."""
    language = normalize_language(default_language)
    region = default_region.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown phone region {default_region!r}")
    display = str(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise AudienceInvalid(f"audience file not found: {display}",
                              problems=[(Location(file=display), "no such file")]) from None
    except OSError as exc:
        raise AudienceInvalid(f"cannot read audience file {display}: {exc.strerror or exc}",
                              problems=[(Location(file=display), str(exc))]) from None
    with handle:
        lines = _Lines(handle, display)
        if source is not None:
            source.append(lines)
        reader = csv.reader(lines)
        parser: _RowParser | None = None
        previous_end = 0
        try:
            for row in reader:
                # line_num is where the record ends; a quoted cell can span several lines,
                # so the record starts right after the previous one ended.
                start, previous_end = previous_end + 1, reader.line_num
                if parser is None:
                    if not any(cell.strip() for cell in row):
                        continue
                    parser = _RowParser.from_header(row, start, display, language, region,
                                                    checks)
                    parser.seen.expected = lines.rows_hint(reader)
                    parser.emails.refuse_utf8 = refuse_utf8
                    continue
                if reader.line_num > start and len(row) != parser.width:
                    # A quote left open swallowed the lines after it into one cell: the
                    # customers on them would be lost without a word. Refuse the file.
                    raise AudienceInvalid(
                        f"{display}:{start}: a quote (\") opened in this row is not closed "
                        f"until line {reader.line_num}: lines {start + 1}–{reader.line_num} "
                        "were read into one cell, and the customers on them would never be "
                        "notified",
                        problems=[(Location(file=display, line=start, field=_last_cell(
                            _read_line(handle, start), parser)), "unclosed quote")],
                        hint="close or remove the quote in this row, then run the command "
                             "again")
                yield parser.parse(row, start)
        except (csv.Error, _LineTooLong) as exc:
            # csv stops a cell at 128 KB (field_size_limit): an unclosed quote costs no more.
            line = previous_end + 1
            first = (exc.head if isinstance(exc, _LineTooLong) and exc.number == line
                     else _read_line(handle, line))
            field = _last_cell(first, parser)
            raise AudienceInvalid(
                f"{display}:{line}: not readable as CSV: {exc}"
                + (f" (in column {field})" if field else ""),
                problems=[(Location(file=display, line=line, field=field), str(exc))],
                hint="check for an unclosed quote (\") in this row",
            ) from None
        if parser is None:
            raise AudienceInvalid(f"{display}: the file is empty (no header line)",
                                  problems=[(Location(file=display, line=1), "no header")],
                                  hint="the first line must be: " + ",".join(
                                      REQUIRED_COLUMNS + OPTIONAL_COLUMNS))


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
         raw_priority) = map(str.strip, self.cells(row))
        # The name and id go into email headers and SMS bodies: one line, no control
        # characters (a NUL, an ESC, a line break that would start a header of its own).
        ref, name = one_line(ref), one_line(name)[:NAME_MAX]
        if not (ref or name or raw_email or raw_phone or raw_language or segment or region
                or branch or products or raw_priority) and not any(c.strip() for c in row):
            return []
        problems: list[RowProblem] = []
        if not ref:
            problems.append(RowProblem(line, "id", "empty id"))
        else:
            first = self.seen.first(ref, line)
            if first is not None:
                problems.append(RowProblem(line, "id", f"duplicate id {ref!r} "
                                                       f"(first on line {first})"))
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
            phone, message = _parse_phone(raw_phone, self.region)
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

        fields = (ref, name, email, phone, language, segment, region, branch,
                  tuple(dict.fromkeys(p.strip() for p in
                                      _PRODUCT_SEPARATORS.split(products.lower()) if p.strip()))
                  if products else (), priority or "normal")
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


class _EmailCheck:
    """`validate_email(raw, check_deliverability=False).normalized`, fast for common addresses.

    An address whose local part is a plain ASCII dot-atom with one @ is what email_validator
    accepts without change on that side (RFC 2142 role names aside, which it lower-cases), so
    only its domain needs checking, and a domain is checked once per file with the library's
    own function; the total length is checked as the library does. Anything else — quotes,
    display names, non-ASCII local parts, bracketed IPs, role names, an invalid domain, a
    length over the limit — goes through `validate_email` itself, so the accepted set, the
    normalised form and every error message are the library's.
    """

    MAX_DOMAINS = 10_000  # a list with more distinct domains than this checks the rest each time
    _ROLES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)

    def __init__(self) -> None:
        self.domains: dict[str, tuple[str, int] | None] = {}
        # Why an address needing SMTPUTF8 (non-ASCII local part) cannot be sent, asked once.
        self.refuse_utf8: Callable[[], str | None] | None = None
        self._utf8_refusal: list[str | None] = []

    def normalized(self, raw: str) -> str:
        """The normalised address; EmailNotValidError as the library raises it."""
        local, at, domain_part = raw.partition("@")
        if (at and "@" not in domain_part and DOT_ATOM_TEXT.match(local)
                and not email_validator.STRICT and local.lower() not in self._ROLES):
            try:
                domain = self.domains[domain_part]
            except KeyError:
                domain = self._domain(domain_part)
            # The local part is ASCII: the address's three forms (as given, normalised, with
            # the ASCII domain) fit in 254 octets when the local part fits the domain's room.
            if domain is not None and len(local) <= domain[1]:
                return f"{local}@{domain[0]}"
        valid = validate_email(raw, check_deliverability=False)
        if valid.smtputf8 and self.refuse_utf8 is not None:
            if not self._utf8_refusal:
                self._utf8_refusal.append(self.refuse_utf8())
            if self._utf8_refusal[0]:
                raise EmailNotValidError(
                    "the part before the @ is not ASCII, which needs SMTPUTF8, and "
                    f"{self._utf8_refusal[0]}; reach this customer on another channel")
        return valid.normalized

    def _domain(self, domain_part: str) -> tuple[str, int] | None:
        """(domain as the library normalises it, room left for the local part), or None (not
        on the fast path: a bracketed literal, or invalid — validate_email then says why)."""
        result: tuple[str, int] | None = None
        if domain_part and not (domain_part.startswith("[") and domain_part.endswith("]")):
            try:
                info = validate_email_domain_name(
                    domain_part, test_environment=email_validator.TEST_ENVIRONMENT,
                    globally_deliverable=email_validator.GLOBALLY_DELIVERABLE)
                longest = max(_utf8_len(domain_part), _utf8_len(info["domain"]),
                              _utf8_len(info["ascii_domain"]))
                result = (info["domain"], _EMAIL_MAX - 1 - longest)
            except EmailNotValidError:
                result = None
        if len(self.domains) < self.MAX_DOMAINS:
            self.domains[domain_part] = result
        return result


_EMAIL_MAX = 254  # octets (email_validator's EMAIL_MAX_LENGTH)


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


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


def _parse_phone(raw: str, region: str) -> tuple[str | None, str | None]:
    """(E.164 number, None) or (None, why the number is unusable)."""
    shown = mask_phone(raw)  # the warning is printed: even a wrong number is personal data
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        return None, f"invalid phone {shown!r}: {exc}"
    if not phonenumbers.is_possible_number(number):
        return None, f"invalid phone {shown!r}: not a possible number"
    if not phonenumbers.is_valid_number(number):
        return None, f"invalid phone {shown!r}: not a valid number"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


class _LineTooLong(Exception):
    """A physical line longer than MAX_LINE_BYTES (read no further than that)."""

    def __init__(self, number: int, head: str) -> None:
        super().__init__(f"line {number} is longer than {MAX_LINE_BYTES >> 20} MB (not a "
                         "customer row: an unclosed quote, or not a CSV file)")
        self.number = number
        self.head = head


class _Lines:
    """The file's lines for csv.reader, decoded a block at a time (C-speed iteration), with
    the checks per line: UTF-8 (a bad byte is reported with its line, after the lines before
    it), no line over MAX_LINE_BYTES, a BOM dropped. Also hashes the bytes (SHA-256)."""

    def __init__(self, handle: BinaryIO, display: str) -> None:
        self.handle = handle
        self.display = display
        self.digest = hashlib.sha256()
        self.size = 0
        self.number = 0  # lines handed out so far

    def __iter__(self) -> Iterator[str]:
        return chain.from_iterable(self._blocks())

    def rows_hint(self, reader: Any) -> Callable[[], int]:
        """A guess of the file's line count from what `reader` has read so far."""
        try:
            total = os.fstat(self.handle.fileno()).st_size
        except (OSError, ValueError):
            total = 0

        def guess() -> int:
            done = max(self.size, 1)
            return int(reader.line_num * max(total, done) / done)
        return guess

    def _blocks(self) -> Iterator[Iterable[str]]:
        rest = b""
        first = True
        while True:
            raw = self.handle.read(_BLOCK_BYTES)
            self.digest.update(raw)
            self.size += len(raw)
            data = rest + raw if rest else raw
            if first and (len(data) >= len(_UTF8_BOM) or not raw):
                first = False
                if data.startswith(_UTF8_BOM):
                    data = data[len(_UTF8_BOM):]
            if not raw:
                if data:
                    yield self._decoded(data)
                return
            end = data.rfind(b"\n")
            if end < 0 or first:
                rest = data
            else:
                # The first line may have begun in an earlier block: the only one that can
                # be longer than a block.
                if data.find(b"\n", 0, MAX_LINE_BYTES + 1) < 0:
                    raise _LineTooLong(self.number + 1, _head(data))
                rest = data[end + 1:]
                yield self._decoded(data[:end + 1])
            if len(rest) > MAX_LINE_BYTES:
                raise _LineTooLong(self.number + 1, _head(rest))

    def _decoded(self, data: bytes) -> Iterable[str]:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self._line_by_line(data)
        self.number += data.count(b"\n") + (not data.endswith(b"\n"))
        return io.StringIO(text, newline="\n")

    def _line_by_line(self, data: bytes) -> Iterator[str]:
        """Decode line by line so that a bad byte is reported with its line number."""
        # UTF-8 continuation bytes are never 0x0A, so splitting the raw bytes on LF is safe.
        for raw in io.BytesIO(data):
            self.number += 1
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                message = (f"not UTF-8: byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} "
                           "of the line")
                raise AudienceInvalid(f"{self.display}:{self.number}: {message}",
                                      hint=_ENCODING_HINT,
                                      problems=[(Location(file=self.display, line=self.number),
                                                 message)]) from None


def _head(data: bytes) -> str:
    return data[:MAX_LINE_BYTES].decode("utf-8", "replace")


def _read_line(handle: BinaryIO, number: int) -> str:
    """Physical line `number` of the file (lines before it are known to be short), for an
    error message."""
    try:
        handle.seek(0)
        raw = b""
        for _ in range(number):
            raw = handle.readline(MAX_LINE_BYTES + 1)
    except OSError:
        return ""
    if number == 1 and raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM):]
    return raw.decode("utf-8", "replace")


def _last_cell(first_line: str, parser: _RowParser | None) -> str | None:
    """The column in which a broken record's first line ends (where its open quote is)."""
    if parser is None or not first_line:
        return None
    try:
        cells = next(csv.reader([first_line[:65536]]))  # within csv's 128 KB cell limit
    except (csv.Error, StopIteration):
        return None
    index = len(cells) - 1
    names = {position: name for name, position in parser.columns.items()}
    return names.get(index, f"column {index + 1}")


def _location(display: str, problem: RowProblem) -> Location:
    return Location(file=display, line=problem.line, field=problem.field or None)


def _folded(values: Sequence[str]) -> set[str]:
    return {v.strip().casefold() for v in values if v.strip()}
