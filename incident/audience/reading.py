"""A customer CSV file → its data rows: lines decoded and checked a block at a time,
records parsed, and the list API (`iter_audience`, `load_audience`)."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO

import phonenumbers

from incident.audience.model import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    AudienceLoad,
    ContactChecks,
    Customer,
    RowProblem,
    _Fields,
    _KeptRow,
    _Problems,
)
from incident.audience.query import QuerySource, _query_rows
from incident.audience.rows import _PRIORITY_VALUES, _RowParser, _Seen, normalize_language
from incident.controls import one_line
from incident.errors import AudienceInvalid, Location

_UTF8_BOM = b"\xef\xbb\xbf"
_ENCODING_HINT = ("save the file as UTF-8 (Excel: 'CSV UTF-8'; or "
                  "`iconv -f GBK -t UTF-8 old.csv > new.csv`)")
# A huge broken file must not cost memory in proportion to its size: refuse lines no customer
# row needs.
MAX_LINE_BYTES = 1 << 20
_BLOCK_BYTES = 1 << 20  # read and decode this much at a time (≤ MAX_LINE_BYTES: see _Lines)


def load_audience(path: Path | QuerySource, *, default_language: str = "zh-CN",
                  default_region: str = "CN", checks: ContactChecks | None = None
                  ) -> AudienceLoad:
    """Read a whole customer list (CSV, or a query); raise AudienceInvalid if it cannot be
    used at all."""
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


def iter_audience(path: Path | QuerySource, *, default_language: str = "zh-CN",
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


def _rows(path: Path | QuerySource, *, default_language: str, default_region: str,
          source: list[Any] | None = None, checks: ContactChecks | None = None,
          refuse_utf8: Callable[[], str | None] | None = None
          ) -> Iterator[_Fields | list[RowProblem] | _KeptRow]:
    """Per data row its validated fields, its problems, or both (kept without a bad
    contact); raises AudienceInvalid when the file cannot be read as a customer list.
    `source` receives the line reader (for its digest and size once the rows are read).
    A query (QuerySource) is read by audience/query.py, with the same validation."""
    language, region = _defaults(default_language, default_region)
    if isinstance(path, QuerySource):
        yield from _query_rows(path, language=language, region=region, digest=source,
                               checks=checks, refuse_utf8=refuse_utf8)
        return
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


def urgent_rows(path: Path, *, default_language: str, default_region: str, limit: int,
                checks: ContactChecks | None = None,
                refuse_utf8: Callable[[], str | None] | None = None
                ) -> list[_Fields | list[RowProblem] | _KeptRow]:
    """The rows of a customer file that `plain_file` passes whose priority reads urgent (as
    the row parser reads it), as reading the whole file in order would parse them — up to
    `limit`, in file order, each parsed by a parser of its own header. One cheap pass reads
    each row's id and priority only; a row whose id is on an earlier row (a duplicate, then)
    is left out, so that no other row is parsed differently from the full read. [] if the
    header is bad (the full read says why)."""
    language, region = _defaults(default_language, default_region)
    found: list[tuple[int, list[str]]] = []
    with path.open("rb") as handle:
        reader = csv.reader(_Lines(handle, str(path)))
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        try:
            parser = _RowParser.from_header(header or [], reader.line_num, str(path),
                                            language, region, checks)
        except AudienceInvalid:
            return []
        seen, width = _Seen(), parser.width
        id_at, priority_at = parser.columns["id"], parser.columns.get("priority")
        if priority_at is None:
            return []
        try:
            for row in reader:  # no record spans lines (plain_file): line_num is its line
                if len(row) != width:
                    continue  # blank, or no column can be trusted: no id remembered
                ref = one_line(row[id_at].strip())
                if ref and seen.first(ref, reader.line_num) is None and _PRIORITY_VALUES.get(
                        row[priority_at].strip().lower()) == "urgent":
                    found.append((reader.line_num, row))
                    if len(found) >= limit:
                        break
        except (csv.Error, _LineTooLong, AudienceInvalid):
            return []  # the read in order refuses the file where it breaks, as before
    parser.emails.refuse_utf8 = refuse_utf8
    return [parser.parse(row, line) for line, row in found]


def _defaults(default_language: str, default_region: str) -> tuple[str, str]:
    """The default language and phone region as the row parser takes them."""
    language = normalize_language(default_language)
    region = default_region.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown phone region {default_region!r}")
    return language, region


# The early path (response/recording.py) needs these to hold of a file before it records a
# notice from its first rows: what reading the rest could refuse the whole file for, checked
# over the raw bytes first (a file that fails any is read in full first, as before).
_CSV_CELL_BYTES = min(MAX_LINE_BYTES, csv.field_size_limit())
_NON_ASCII_LOCAL_PART = re.compile(rb'[\x80-\xff][^,"\r\n]*@')


def plain_file(path: Path, *, ascii_local_parts: bool = False) -> tuple[str, int, int] | None:
    """The SHA-256, size and line count of a CSV file that reading to the end can refuse for
    nothing but its rows: UTF-8 throughout, no line over a CSV cell's limit, no quote left
    open past its line (no record spans lines), no CR but before LF; with
    `ascii_local_parts`, no email address whose local part is not ASCII (whether those can be
    sent is asked when the first is read, see scan_audience). None if it cannot be opened or
    may break one of these."""
    digest, size, lines = hashlib.sha256(), 0, 0
    decoder = codecs.getincrementaldecoder("utf-8")()
    rest = b""
    try:
        with path.open("rb") as handle:
            while raw := handle.read(_BLOCK_BYTES):
                digest.update(raw)
                size += len(raw)
                lines += raw.count(b"\n")
                decoder.decode(raw)
                data = rest + raw
                end = data.rfind(b"\n") + 1
                whole, rest = data[:end], data[end:]
                if not _plain_lines(whole, ascii_local_parts) or len(rest) > _CSV_CELL_BYTES:
                    return None
            decoder.decode(b"", final=True)
    except (OSError, UnicodeDecodeError):
        return None
    if not _plain_lines(rest, ascii_local_parts):
        return None
    return digest.hexdigest(), size, lines + bool(rest)


def _plain_lines(data: bytes, ascii_local_parts: bool) -> bool:
    if ascii_local_parts and _NON_ASCII_LOCAL_PART.search(data):
        return False
    if data.count(b"\r") != data.count(b"\r\n"):  # a lone CR: csv refuses it unquoted
        return False
    lines = data.split(b"\n")
    if max(map(len, lines)) > _CSV_CELL_BYTES:
        return False
    return not (b'"' in data and any(line.count(b'"') % 2 for line in lines))


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
