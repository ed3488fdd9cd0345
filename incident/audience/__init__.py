"""Customer lists (CSV, or a database query) → validated recipients; filters and
urgent-first order.

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

The modules, each one job (each imports only those above it):

- `model`: the types (`Customer`, `Recipient`, `RowProblem`, `AudienceLoad`), the columns
  and the tally of problems;
- `contacts`: one email or phone checked and normalised;
- `rows`: one data row validated against the header (ids, names, contacts, languages,
  priorities);
- `reading`: the file's lines (UTF-8, long lines, digest) → CSV records → rows, and the
  list API;
- `query`: a SQL audience (`QuerySource`): the statement checked, rows streamed read-only
  (store/readonly.py) into the same validation, and their fingerprint;
- `scan`: `Selection`, `scan_audience` (over `AudienceScanner`, which also yields the selected
  recipients as it reads: the early path of `start`) and the `RecipientSpool`.
"""

from __future__ import annotations

from incident.audience.model import (
    CALL_CHOICES,
    LANGUAGES,
    LISTED_IN_ERROR,
    MAX_PROBLEMS,
    NAME_MAX,
    OPTIONAL_COLUMNS,
    PRIORITIES,
    REQUIRED_COLUMNS,
    AudienceLoad,
    ContactChecks,
    Customer,
    Recipient,
    RowProblem,
    wants_call,
)
from incident.audience.query import (
    QuerySource,
    configured_audience,
    given_audience,
    refuse_statement,
)
from incident.audience.reading import MAX_LINE_BYTES, iter_audience, load_audience, plain_file
from incident.audience.rows import normalize_language
from incident.audience.scan import (
    AudienceScan,
    AudienceScanner,
    RecipientSpool,
    Selection,
    scan_audience,
    select,
)

__all__ = [
    "CALL_CHOICES",
    "LANGUAGES",
    "LISTED_IN_ERROR",
    "MAX_LINE_BYTES",
    "MAX_PROBLEMS",
    "NAME_MAX",
    "OPTIONAL_COLUMNS",
    "PRIORITIES",
    "REQUIRED_COLUMNS",
    "AudienceLoad",
    "AudienceScan",
    "AudienceScanner",
    "ContactChecks",
    "Customer",
    "QuerySource",
    "Recipient",
    "RecipientSpool",
    "RowProblem",
    "Selection",
    "configured_audience",
    "given_audience",
    "iter_audience",
    "load_audience",
    "normalize_language",
    "plain_file",
    "refuse_statement",
    "scan_audience",
    "select",
    "wants_call",
]
