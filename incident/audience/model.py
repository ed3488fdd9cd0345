"""What a customer list reads into: customers, recipients, row problems and their tally."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from incident.errors import AudienceInvalid, Location
from incident.languages import LANGUAGES as LANGUAGES  # re-exported

PRIORITIES = ("urgent", "normal")
REQUIRED_COLUMNS = ("id", "name", "email", "phone")
NAME_MAX = 100  # characters of a customer's name kept for the greeting of a notice
OPTIONAL_COLUMNS = ("language", "segment", "region", "branch", "products", "priority", "voice")
# Who a playbook's voice notices call (notices.voice.who), besides customers who asked for
# calls (voice column "yes"); a customer who said "no" is never called.
CALL_CHOICES = ("urgent", "all", "none")

# A huge broken file must not cost memory in proportion to its size: keep this many problems
# (the rest are counted), and list fewer in an error.
MAX_PROBLEMS = 1000
LISTED_IN_ERROR = 20


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
    voice: str = ""  # the voice column: "yes" (call me), "no" (never call), "" (unsaid)


class Recipient(NamedTuple):
    """What a notice needs of a selected customer (what `scan_audience` spools)."""

    ref: str
    name: str
    email: str | None
    phone: str | None
    language: str
    priority: str
    voice: str = ""  # yes / no / "": asked for calls, refused them, or the playbook says
    region: str = ""  # picks per-region details (hotline, time zone) in its notices


def wants_call(who: str, priority: str, voice: str) -> bool:
    """Whether a customer with a phone is called: they asked ("yes"), or the playbook's
    `who` covers them (all, or urgent ones) and they did not refuse ("no")."""
    if voice in ("yes", "no"):
        return voice == "yes"
    return who == "all" or (who == "urgent" and priority == "urgent")


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


# A data row's fields, validated: ref, name, email, phone, language, segment, region, branch,
# products, priority, voice (the order of Customer's fields).
_Fields = tuple[Any, ...]


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


def _location(display: str, problem: RowProblem) -> Location:
    return Location(file=display, line=problem.line, field=problem.field or None)
