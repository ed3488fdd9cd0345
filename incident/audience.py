"""Customer lists (CSV) → validated recipients; filters, urgent-first order and masking."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from incident.errors import AudienceInvalid, Location

LANGUAGES = ("zh-CN", "en")
PRIORITIES = ("urgent", "normal")
REQUIRED_COLUMNS = ("id", "name", "email", "phone")
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


@dataclass
class RowProblem:
    """A bad row: its physical start line in the file, the column at fault ("" = whole row)."""

    line: int
    field: str
    message: str


@dataclass
class AudienceLoad:
    """The result of reading a customer list: the good rows and every bad one."""

    customers: list[Customer]
    problems: list[RowProblem]  # the first MAX_PROBLEMS, then one line saying how many more
    path: str
    rows_read: int
    bad_rows: int = 0
    problem_count: int = 0  # all problems found, listed or not

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
                  default_region: str = "CN") -> AudienceLoad:
    """Read a whole customer CSV; raise AudienceInvalid if it cannot be used at all."""
    display = str(path)
    customers: list[Customer] = []
    problems: list[RowProblem] = []
    problem_count = bad_rows = 0
    last_bad = 0
    for item in iter_audience(path, default_language=default_language,
                              default_region=default_region):
        if isinstance(item, Customer):
            customers.append(item)
            continue
        # A bad row may yield several problems, one after the other, all with its start line.
        if item.line != last_bad:
            bad_rows, last_bad = bad_rows + 1, item.line
        problem_count += 1
        if len(problems) < MAX_PROBLEMS:
            problems.append(item)
    rows_read = len(customers) + bad_rows
    if not customers:
        what = "no data rows" if rows_read == 0 else f"all {rows_read:,} rows are bad"
        listed = [(_location(display, p), p.message) for p in problems[:LISTED_IN_ERROR]]
        if problem_count > len(listed):
            listed.append((Location(file=display), _more(problem_count - len(listed))))
        raise AudienceInvalid(
            f"{display}: no valid customer ({what})",
            hint="each row needs an id, a name and a valid email or phone",
            problems=listed or [(Location(file=display), "no data rows after the header")],
        )
    if problem_count > len(problems):
        problems.append(RowProblem(0, "", _more(problem_count - len(problems))))
    return AudienceLoad(customers=customers, problems=problems, path=display,
                        rows_read=rows_read, bad_rows=bad_rows, problem_count=problem_count)


def _more(count: int) -> str:
    return f"... and {count:,} more problems in later rows (not listed)"


def iter_audience(path: Path, *, default_language: str = "zh-CN",
                  default_region: str = "CN") -> Iterator[Customer | RowProblem]:
    """Stream a customer CSV: per data row one Customer, or one or more RowProblems."""
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
        lines = _LineTap(_decoded_lines(handle, display))
        reader = csv.reader(lines)
        parser: _RowParser | None = None
        previous_end = 0
        try:
            for row in reader:
                # line_num is where the record ends; a quoted cell can span several lines,
                # so the record starts right after the previous one ended.
                start, previous_end = previous_end + 1, reader.line_num
                lines.watch = previous_end + 1
                if not any(cell.strip() for cell in row):
                    continue
                if parser is None:
                    parser = _RowParser.from_header(row, start, display, language, region)
                    continue
                yield from parser.parse(row, start)
        except (csv.Error, _LineTooLong) as exc:
            # csv stops a cell at 128 KB (field_size_limit): an unclosed quote costs no more.
            line = previous_end + 1
            first = (exc.head if isinstance(exc, _LineTooLong) and exc.number == line
                     else lines.watched)
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


def select(customers: Iterable[Customer], *, products: Sequence[str] = (),
           regions: Sequence[str] = (), branches: Sequence[str] = (),
           segments: Sequence[str] = ()) -> list[Customer]:
    """Customers matching every non-empty criterion (any listed product), urgent first."""
    want_products = _folded(products)
    want_regions = _folded(regions)
    want_branches = _folded(branches)
    want_segments = _folded(segments)
    chosen = [
        c for c in customers
        if (not want_products or not want_products.isdisjoint(p.casefold() for p in c.products))
        and (not want_regions or c.region.casefold() in want_regions)
        and (not want_branches or c.branch.casefold() in want_branches)
        and (not want_segments or c.segment.casefold() in want_segments)
    ]
    # sorted() is stable, so the file's order is kept within each priority.
    return sorted(chosen, key=lambda c: c.priority != "urgent")


def mask_phone(value: str | None) -> str:
    """`+8613812348000` → `+86 138****8000`; never returns a non-empty input unchanged."""
    if not value:
        return ""
    text = value.strip()
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        number = None
    if number is not None and number.country_code:
        national = phonenumbers.national_significant_number(number)
        masked = f"+{number.country_code} {_mask_digits(national)}"
    else:
        digits = "".join(ch for ch in text if ch.isdigit())
        masked = _mask_digits(digits) if digits else "***"
    return _differs(value, masked)


def mask_email(value: str | None) -> str:
    """`zhang.wei@example.com` → `z***@example.com`; never returns a non-empty input unchanged."""
    if not value:
        return ""
    local, at, domain = value.strip().rpartition("@")
    if not at:
        return _differs(value, "***")
    # A one-character local part would be revealed whole by keeping its first character.
    head = local[0] if len(local) > 1 else ""
    return _differs(value, f"{head}***@{domain}")


def mask_contact(value: str | None) -> str:
    """Mask an email or a phone number, whichever `value` looks like."""
    if not value:
        return ""
    if "@" in value:
        return mask_email(value)
    return mask_phone(value)


def mask_name(value: str | None) -> str:
    """`张伟` → `张*`, `Wei Zhang` → `W** Z****`; one-character words are hidden entirely."""
    if not value:
        return ""

    def word(match: re.Match[str]) -> str:
        text = match.group(0)
        return "*" if len(text) == 1 else text[0] + "*" * (len(text) - 1)

    return _differs(value, re.sub(r"\S+", word, value.strip()))


class _RowParser:
    """Validates data rows against one header; remembers ids to catch duplicates."""

    def __init__(self, columns: dict[str, int], width: int, display: str, language: str,
                 region: str) -> None:
        self.columns = columns
        self.width = width
        self.display = display
        self.language = language
        self.region = region
        self.seen: dict[str, int] = {}

    @classmethod
    def from_header(cls, header: list[str], line: int, display: str, language: str,
                    region: str) -> _RowParser:
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
        return cls(columns, len(header), display, language, region)

    def cell(self, row: list[str], name: str) -> str:
        """The stripped cell of column `name`, or "" when the file has no such column."""
        index = self.columns.get(name)
        return row[index].strip() if index is not None else ""

    def parse(self, row: list[str], line: int) -> Iterator[Customer | RowProblem]:
        """Yield the row's Customer, or every problem found in it."""
        if len(row) != self.width:
            # Cells are shifted (usually an unquoted comma), so no column can be trusted.
            yield RowProblem(line, "", f"expected {self.width} cells, found {len(row)} "
                                       "(quote cells that contain commas)")
            return
        problems: list[RowProblem] = []
        ref = self.cell(row, "id")
        if not ref:
            problems.append(RowProblem(line, "id", "empty id"))
        elif ref in self.seen:
            problems.append(RowProblem(line, "id", f"duplicate id {ref!r} "
                                                   f"(first on line {self.seen[ref]})"))
        else:
            self.seen[ref] = line
        name = self.cell(row, "name")
        if not name:
            problems.append(RowProblem(line, "name", "empty name"))

        email = phone = None
        raw_email, raw_phone = self.cell(row, "email"), self.cell(row, "phone")
        if raw_email:
            try:
                email = validate_email(raw_email, check_deliverability=False).normalized
            except EmailNotValidError as exc:
                problems.append(RowProblem(line, "email", f"invalid email: {exc}"))
        if raw_phone:
            phone, message = _parse_phone(raw_phone, self.region)
            if message:
                problems.append(RowProblem(line, "phone", message))
        if not raw_email and not raw_phone:
            problems.append(RowProblem(line, "email/phone", "neither an email nor a phone"))

        language = self.language
        raw_language = self.cell(row, "language")
        if raw_language:
            try:
                language = normalize_language(raw_language)
            except ValueError as exc:
                problems.append(RowProblem(line, "language", str(exc)))
        raw_priority = self.cell(row, "priority")
        priority = _PRIORITY_VALUES.get(raw_priority.lower())
        if priority is None:
            problems.append(RowProblem(line, "priority", f"unknown priority {raw_priority!r} "
                                       "(use urgent/high/vip/1 or normal/0/empty)"))

        if problems:
            yield from problems
            return
        products = _PRODUCT_SEPARATORS.split(self.cell(row, "products").lower())
        yield Customer(
            ref=ref, name=name, email=email, phone=phone, language=language,
            segment=self.cell(row, "segment"), region=self.cell(row, "region"),
            branch=self.cell(row, "branch"),
            products=tuple(dict.fromkeys(p.strip() for p in products if p.strip())),
            priority=priority or "normal",
        )


def _parse_phone(raw: str, region: str) -> tuple[str | None, str | None]:
    """(E.164 number, None) or (None, why the number is unusable)."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        return None, f"invalid phone {raw!r}: {exc}"
    if not phonenumbers.is_possible_number(number):
        return None, f"invalid phone {raw!r}: not a possible number"
    if not phonenumbers.is_valid_number(number):
        return None, f"invalid phone {raw!r}: not a valid number"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


class _LineTooLong(Exception):
    """A physical line longer than MAX_LINE_BYTES (read no further than that)."""

    def __init__(self, number: int, head: str) -> None:
        super().__init__(f"line {number} is longer than {MAX_LINE_BYTES >> 20} MB (not a "
                         "customer row: an unclosed quote, or not a CSV file)")
        self.number = number
        self.head = head


class _LineTap:
    """Passes lines through to csv.reader, keeping the one numbered `watch` (the first line of
    the record being read) so that an error can name the cell it stopped in."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines = lines
        self.number = 0
        self.watch = 1
        self.watched = ""

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        self.number += 1
        if self.number == self.watch:
            self.watched = line[:MAX_LINE_BYTES]
        return line


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


def _decoded_lines(handle: BinaryIO, display: str) -> Iterator[str]:
    """Decode line by line so that a bad byte can be reported with its line number."""
    # UTF-8 continuation bytes are never 0x0A, so splitting the raw bytes on LF is safe.
    number = 0
    while raw := handle.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise _LineTooLong(number, raw[:MAX_LINE_BYTES].decode("utf-8", "replace"))
        if number == 1 and raw.startswith(_UTF8_BOM):
            raw = raw[len(_UTF8_BOM):]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            message = (f"not UTF-8: byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} "
                       "of the line")
            raise AudienceInvalid(f"{display}:{number}: {message}", hint=_ENCODING_HINT,
                                  problems=[(Location(file=display, line=number), message)]
                                  ) from None


def _location(display: str, problem: RowProblem) -> Location:
    return Location(file=display, line=problem.line, field=problem.field or None)


def _folded(values: Sequence[str]) -> set[str]:
    return {v.strip().casefold() for v in values if v.strip()}


def _mask_digits(digits: str) -> str:
    """Keep the first 3 and last 4 digits; shorter numbers show less, half at most."""
    n = len(digits)
    if n >= 8:
        head, tail = 3, 4
    else:
        visible = n - (n + 1) // 2
        tail = (visible + 1) // 2
        head = visible - tail
    return digits[:head] + "*" * (n - head - tail) + digits[n - tail:]


def _differs(original: str, masked: str) -> str:
    # Callers rely on masking never echoing the input, even for odd inputs such as "***".
    return masked if masked != original else "*" * (len(original) + 1)
