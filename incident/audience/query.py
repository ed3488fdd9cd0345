"""A customer list from a database query (a SQL audience): the statement checked to be a
single SELECT before it runs, the rows streamed read-only (store/readonly.py) and validated
exactly as CSV rows are, and a fingerprint of the rows as read.

The fingerprint is a SHA-256 over the rows in a canonical form (the column names, then each
row's cells as text, written as CSV), recorded with the notice as a file's SHA-256 is, so that
completing an interrupted notice can tell whether the query still returns the same list.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from incident.audience.model import ContactChecks, RowProblem, _Fields, _KeptRow
from incident.audience.rows import _RowParser
from incident.errors import AudienceInvalid, BadInput, Location
from incident.privacy import mask_reference

if TYPE_CHECKING:
    from incident.settings import Runtime

# Words that write, lock or change the session: a statement containing one (outside strings,
# quoted names and comments) is refused before it runs. INTO covers SELECT … INTO (a new table).
_WRITES = frozenset({
    "insert", "update", "delete", "merge", "upsert", "truncate", "drop", "alter", "create",
    "grant", "revoke", "copy", "call", "exec", "execute", "into", "attach", "detach", "pragma",
    "vacuum",
})
# Comments, strings, quoted names and PostgreSQL dollar quotes: blanked before the check.
_OPAQUE = re.compile(r"""--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`"""
                     r"""|\[[^\]]*\]|(\$[A-Za-z_0-9]*\$).*?\1""", re.S)
_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9$]*")
_HASH_BLOCK = 5000  # rows written to the digest at a time


@dataclass(frozen=True)
class QuerySource:
    """An audience read by a query: its name in incident.yaml, the environment variable
    holding the database URL, and the statement."""

    name: str
    url_env: str
    query: str

    def __str__(self) -> str:
        return f"audience {self.name} (SQL)"


def configured_audience(rt: Runtime, name: str) -> Path | QuerySource:
    """An audience of incident.yaml (audiences: NAME): its CSV file, or its query."""
    entry = rt.settings.audiences[name]
    if isinstance(entry, str):
        return rt.path(entry)
    return QuerySource(name=name, url_env=entry.url_env, query=entry.query)


def given_audience(rt: Runtime, given: str) -> Path | QuerySource:
    """--audience: a CSV file, or the name of a configured audience (if no such file)."""
    if given in rt.settings.audiences and not Path(given).exists():
        return configured_audience(rt, given)
    return Path(given)


def refuse_statement(query: str) -> str | None:
    """Why `query` is not a single read-only SELECT (or WITH … SELECT), or None."""
    plain = _OPAQUE.sub(" ", query)
    body = plain.strip().rstrip(";").strip()
    if ";" in body:
        return "it holds more than one statement"
    words = [w.lower() for w in _WORD.findall(body)]
    if not words or words[0] not in ("select", "with"):
        return f"it starts with {words[0].upper() if words else 'nothing'}, not SELECT or WITH"
    writes = sorted({w.upper() for w in words} & {w.upper() for w in _WRITES})
    if writes:
        return f"it contains {', '.join(writes)}"
    return None


def _query_rows(source: QuerySource, *, language: str, region: str,
                digest: list[Any] | None, checks: ContactChecks | None,
                refuse_utf8: Callable[[], str | None] | None
                ) -> Iterator[_Fields | list[RowProblem] | _KeptRow]:
    """Per row of the query its validated fields, its problems, or both (as reading._rows);
    `digest` receives the fingerprint (`.digest`, `.size`) once the rows are read."""
    from incident.store.readonly import query_rows  # only a SQL audience needs a driver

    display = str(source)
    why = refuse_statement(source.query)
    if why:
        raise AudienceInvalid(f"{display}: the query is refused before it runs: {why}",
                              problems=[(Location(file=display, field="query"), why)],
                              hint="an audience query is a single SELECT (or WITH … SELECT); "
                                   "it only reads")
    url = os.environ.get(source.url_env, "").strip()
    if not url:
        raise BadInput(f"{display}: the environment variable {source.url_env} is not set",
                       hint=f"export {source.url_env}=postgresql+psycopg://reader@host/crm "
                            "(the database URL is read from the environment only)")
    fingerprint = _Fingerprint()
    if digest is not None:
        digest.append(fingerprint)
    rows = query_rows(url, source.query, label=source.name)
    try:
        header = [str(name) for name in next(rows)]
        fingerprint.add(header)
        try:
            parser = _RowParser.from_header(header, 0, display, language, region, checks)
        except AudienceInvalid as exc:
            raise AudienceInvalid(f"{display}: the query's columns lack what a customer list "
                                  "needs", hint=exc.hint, problems=exc.problems) from None
        parser.unit = "row"
        parser.emails.refuse_utf8 = refuse_utf8
        for number, row in enumerate(rows, 1):
            cells = [_cell(value) for value in row]
            fingerprint.add(cells)
            item = parser.parse(cells, number)
            if isinstance(item, list) and item:
                item = [_named(p, cells, parser) for p in item]
            elif isinstance(item, _KeptRow):
                item = _KeptRow(item.fields, [_named(p, cells, parser) for p in item.problems])
            yield item
        fingerprint.close()
    finally:
        rows.close()


def _named(problem: RowProblem, cells: list[str], parser: _RowParser) -> RowProblem:
    """The problem with the row's number in the query and its id (a query has no lines to
    look up)."""
    ref = cells[parser.columns["id"]].strip() if "id" in parser.columns else ""
    who = f", id {mask_reference(ref)}" if ref else ", no id"
    return RowProblem(problem.line, problem.field,
                      f"{problem.message} (row {problem.line} of the query{who})",
                      problem.skipped)


def _cell(value: Any) -> str:
    """A column's value as the text a CSV cell would hold."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):  # a PostgreSQL array of products
        return ";".join(_cell(v) for v in value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


class _Fingerprint:
    """SHA-256 over the rows in canonical form (CSV of the cells as text), block by block."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\n")
        self._pending = 0

    def add(self, cells: list[str]) -> None:
        self._writer.writerow(cells)
        self._pending += 1
        if self._pending >= _HASH_BLOCK:
            self.close()

    def close(self) -> None:
        """Hash what is buffered."""
        data = self._buffer.getvalue().encode("utf-8")
        self.digest.update(data)
        self.size += len(data)
        self._buffer.seek(0)
        self._buffer.truncate()
        self._pending = 0
