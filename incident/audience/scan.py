"""Selection, the streaming scan `incident start` uses, and the spool of selected recipients."""

from __future__ import annotations

import marshal
import struct
import tempfile
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import IO, Any

from incident.audience.model import (
    CALL_CHOICES,
    ContactChecks,
    Customer,
    Recipient,
    RowProblem,
    _KeptRow,
    _location,
    _Problems,
    wants_call,
)
from incident.audience.query import QuerySource
from incident.audience.reading import _rows, urgent_rows
from incident.errors import AudienceInvalid, Location


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
    (spooled, urgent first) and the file's SHA-256, or a query's fingerprint (the SHA-256 of
    its rows): what the rows were derived from."""

    path: str
    rows_read: int
    bad_rows: int
    problem_count: int
    problems: list[RowProblem]
    valid: int
    selected: int
    # (language, has email, has phone, voice column, urgent) -> customers
    reach: Counter[tuple[str, bool, bool, str, bool]]
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

    def unreachable(self, channels: Sequence[str], *, calls: str = "none") -> int:
        """Selected customers with no usable contact on any of `channels` (`calls`: who
        the voice channel calls, see wants_call)."""
        return sum(n for key, n in self.reach.items()
                   if not any(_reaches(key, c, calls) for c in channels))

    def messages(self, channels: Sequence[str], *,
                 calls: str = "none") -> dict[str, dict[str, int]]:
        """Messages per channel and language: a customer gets one per channel they have an
        address for (email, or phone for sms, and for voice if they are called)."""
        out: dict[str, dict[str, int]] = {}
        for key, n in sorted(self.reach.items()):
            for channel in channels:
                if _reaches(key, channel, calls):
                    by_lang = out.setdefault(channel, {})
                    by_lang[key[0]] = by_lang.get(key[0], 0) + n
        return out

    def message_count(self, channels: Sequence[str], *, calls: str = "none") -> int:
        """All messages of the notice on `channels`."""
        return sum(n for by_lang in self.messages(channels, calls=calls).values()
                   for n in by_lang.values())


def _reaches(key: tuple[str, bool, bool, str, bool], channel: str, calls: str) -> bool:
    """Whether the customers counted under `key` get a message on `channel`."""
    assert calls in CALL_CHOICES, calls
    _, has_email, has_phone, voice, urgent = key
    if channel == "email":
        return has_email
    if channel == "voice":
        return has_phone and wants_call(calls, "urgent" if urgent else "normal", voice)
    return has_phone


def scan_audience(path: Path | QuerySource, selection: Selection, *,
                  default_language: str = "zh-CN", default_region: str = "CN", spool: bool = True,
                  checks: ContactChecks | None = None,
                  refuse_utf8: Callable[[], str | None] | None = None) -> AudienceScan:
    """Validate, select and count a whole customer list in one streaming pass, spooling the
    selected recipients (unless `spool` is false: a dry run only counts).

    `refuse_utf8`, asked once at the first email whose local part is not ASCII (it can only be
    sent with SMTPUTF8): why such addresses cannot be sent, or None if they can.

    Raises AudienceInvalid if the file cannot be used at all or has no valid customer; a scan
    that selects nobody is returned (`selected == 0`, the caller says why that is wrong).
    """
    return AudienceScanner(path, selection, default_language=default_language,
                           default_region=default_region, checks=checks,
                           refuse_utf8=refuse_utf8).spooled(spool=spool)


class AudienceScanner:
    """`scan_audience` a selected recipient at a time: `selected()` yields them in file order
    while the counts grow; `scan()` is what was read so far (all of it once `ended`).

    The early path of `incident start` (response/recording.py) takes the urgent recipients
    first (`urgent_first`), records a notice with them and the first recipients `selected()`
    yields, and goes on reading while it sends; `spooled()` reads the rest into a spool,
    urgent first, as `scan_audience` does.
    """

    def __init__(self, path: Path | QuerySource, selection: Selection, *,
                 default_language: str = "zh-CN", default_region: str = "CN",
                 checks: ContactChecks | None = None,
                 refuse_utf8: Callable[[], str | None] | None = None) -> None:
        self.display = str(path)
        self.tally = _Problems(self.display)
        self.reach: Counter[tuple[str, bool, bool, str, bool]] = Counter()
        self.valid = self.selected_count = 0
        self.ended = False
        self._matches = None if selection.is_all else selection.matches
        self._source: list[Any] = []  # what read the rows: its digest and size
        self._refusal: list[str | None] = []  # the answer of refuse_utf8, if it was asked
        self._refuse_utf8 = refuse_utf8
        self._path = path
        self._defaults: dict[str, Any] = {"default_language": default_language,
                          "default_region": default_region, "checks": checks}
        self._items = _rows(path, source=self._source, refuse_utf8=self._utf8_question(),
                            **self._defaults)
        # Recipients already taken by urgent_first(), by id: not yielded again in file order.
        self._ahead: dict[str, tuple[Any, ...]] = {}
        self._selected = self._select()

    def _utf8_question(self) -> Callable[[], str | None] | None:
        return self._ask if self._refuse_utf8 is not None else None

    def urgent_first(self, limit: int) -> list[tuple[Any, ...]]:
        """The selected urgent recipients of a file that `plain_file` passes (up to `limit`,
        in file order: see reading.urgent_rows), before the rest is read: `selected()` then
        skips them, while the counts still count each row once, when it is read in order."""
        assert isinstance(self._path, Path) and not self._ahead
        for item in urgent_rows(self._path, limit=limit, refuse_utf8=self._utf8_question(),
                                **self._defaults):
            fields = item.fields if isinstance(item, _KeptRow) else item
            if (isinstance(fields, tuple) and (recipient := self._recipient(fields))
                    and recipient[5] == "urgent"):
                self._ahead[recipient[0]] = recipient
        return list(self._ahead.values())

    def _recipient(self, fields: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """A valid row's recipient tuple, or None if the selection leaves it out."""
        (ref, name, email, phone, language, segment, region, branch, products, priority,
         voice) = fields
        if self._matches is not None and not self._matches(region, branch, segment, products):
            return None
        return (ref, name, email, phone, language, priority, voice, region)

    def _ask(self) -> str | None:
        assert self._refuse_utf8 is not None
        self._refusal.append(self._refuse_utf8())
        return self._refusal[-1]

    def selected(self) -> Iterator[tuple[Any, ...]]:
        """The selected recipients still unread, as tuples (ref, name, email, phone, language,
        priority, voice, region): `Recipient._make` them. Raises AudienceInvalid at the end
        if the list has no valid customer. One iterator: each call goes on where the last
        stopped."""
        return self._selected

    def _select(self) -> Generator[tuple[Any, ...], None, None]:
        tally, reach, ahead = self.tally, self.reach, self._ahead
        for item in self._items:
            if isinstance(item, _KeptRow):
                for problem in item.problems:
                    tally.add(problem)
                item = item.fields
            elif not isinstance(item, tuple):
                for problem in item:
                    tally.add(problem)
                continue
            self.valid += 1
            recipient = self._recipient(item)
            if recipient is None:
                continue
            self.selected_count += 1
            ref, _, email, phone, language, priority, voice, _ = recipient
            reach[language, email is not None, phone is not None, voice,
                  priority == "urgent"] += 1
            if ahead and ref in ahead:  # taken already (a valid row's id is unique)
                if ahead.pop(ref) != recipient:
                    raise AudienceInvalid(f"{self.display}: an urgent row read first reads "
                                          "differently in order",
                                          problems=[(Location(self.display), "urgent rows")])
                continue
            yield recipient
        self.ended = True
        if ahead:  # a recipient taken first that reading in order did not select
            raise AudienceInvalid(f"{self.display}: {len(ahead)} urgent rows read first were "
                                  "not selected when read in order",
                                  problems=[(Location(self.display), "urgent rows")])
        if not self.valid:
            tally.refuse(self.valid + tally.bad_rows)

    def close(self) -> None:
        """Stop reading (the file is closed)."""
        self._selected.close()
        self._items.close()  # type: ignore[attr-defined]

    def spooled(self, first: Sequence[tuple[Any, ...]] = (), *,
                spool: bool = True) -> AudienceScan:
        """Read to the end, spooling `first` (already taken from `selected()`) and the rest,
        urgent first (unless not `spool`: only counted)."""
        recipients = RecipientSpool() if spool else None
        try:
            for recipient in chain(first, self.selected()):
                if recipients is not None:
                    recipients.add(recipient, urgent=recipient[5] == "urgent")
        except BaseException:
            if recipients is not None:
                recipients.close()
            raise
        return self.scan(recipients)

    def scan(self, spool: RecipientSpool | None = None) -> AudienceScan:
        """The counts so far (exact once `ended`), the digest and size of the bytes read."""
        tally, lines = self.tally, self._source[0]
        return AudienceScan(path=self.display, rows_read=self.valid + tally.bad_rows,
                            bad_rows=tally.bad_rows, problem_count=tally.count,
                            problems=tally.listed(), valid=self.valid,
                            selected=self.selected_count, reach=Counter(self.reach),
                            sha256=lines.digest.hexdigest(), size=lines.size, spool=spool,
                            partial_rows=tally.partial_rows,
                            utf8_refusal=self._refusal[0] if self._refusal else None)


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
        """Append one recipient (ref, name, email, phone, language, priority, voice, region)."""
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


def _folded(values: Sequence[str]) -> set[str]:
    return {v.strip().casefold() for v in values if v.strip()}
