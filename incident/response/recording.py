"""Recording a start's notice: its first recipients with its event, the rest in batches while
sending (and, for a plain customer file, while the file is still being read), and completing
a notice whose recording a crash interrupted.

Every other notice is recorded in one transaction with its rows (response/journal.py). `start`
is the exception, because its notice can go to a million customers and the first of
them must hear within seconds. Nothing is sent that was not first recorded, and the record is
never half a notice that nobody completes:

1. Before anything is recorded (`read_audience`), a customer file is hashed over its raw bytes
   (`plain_file`: SHA-256, size and lines, ~10 ms a 10 MB file) and checked for what could
   make reading it refuse the whole file later (bytes not UTF-8, a line over a CSV cell's
   limit, a quoted cell spanning lines; with SMTPUTF8 in doubt, a non-ASCII email local part,
   whose answer must not come after recording). Its urgent recipients come first
   (`AudienceScanner.urgent_first`): one pass reads each row's id and priority only
   (`reading.urgent_rows`, ~0.2 s at 100,000 rows), and the rows whose priority
   reads urgent and whose id is on no earlier row — up to URGENT_ROWS — are parsed by the
   same row parser, against the same header, and selected, as reading in order would; reading
   in order then counts them where they are (each row once, each problem once with its line)
   but does not yield them again (a valid row's id is unique). Then rows are read,
   validated and selected until FIRST_ROWS more recipients are selected (file order). A file that
   fails those checks, a SQL audience (its fingerprint is of its rows), a dry run, and a list
   that ends before FIRST_ROWS recipients are read in full first, as before (`scan_audience`:
   one streaming pass, counted, spooled urgent first). A list that cannot be used, has no
   valid row or selects nobody stops with nothing recorded (exit 2), as before.
2. One transaction records the incident, the declared event with the notice and what its rows
   are derived from — the audience file's path, SHA-256 and size (of the whole file), the
   selection, the default language and phone region — the notice's first FIRST_ROWS
   recipients' outbox rows, and the internal notice to the parties. Read in full: with the
   exact message and recipient counts (urgent rows first). Read early: `audience.counts` is
   "pending" and the counts (audience rows/skipped/selected, the notice's messages and
   recipients) are those of the rows read so far; the parties' notice says "≥N" customers.
   From its commit on, the notice is on record and its first messages can be sent.
3. The other rows are recorded in batches, one transaction each, while the dispatcher sends,
   in the same event loop, taking turns (`Sending.send`; `--queue-only` records them all
   first) — read early: as the file is read. Read early, the transaction with the last rows
   also appends an `audience_read` event (payloads.AudienceRead) with the exact counts (rows,
   bad rows, kept-without-a-contact rows, selected, messages per channel and language,
   unreachable) once the bytes read are checked to hash to the SHA-256 recorded up front (a
   file changed meanwhile: the counts are not recorded, the start fails, and completion
   refuses it as below). `fold` applies it (state.py) so every reader of the notice's totals
   (status, completion, report, page) sees the exact counts; the problems of bad rows found
   after recording are printed at the end of `start` instead of before its progress bar.
   Rows are claimed urgent first whenever they were recorded (claims order by priority), and
   read early as read in full, the urgent ones are recorded first: with the notice (the
   first FIRST_ROWS), then in the next batches if there are more, then the others in file
   order. Past URGENT_ROWS, the other urgent rows come in file order.

A notice is complete when its rows on its channels number its recorded message count (read
early: the count of its `audience_read` event; without that event it is not complete). If the
process dies during step 3, the notice is on record but not complete: `incident deliver` (and
any later notice, which copies the first notice's rows) completes it first
(`complete_notices`): it reads the audience file again (a SQL audience: runs its query again),
checks its SHA-256 (a query's: of its rows), derives the same rows and inserts the missing
ones (rows already there are skipped, so two processes completing at once cannot clash), and,
read early, appends the `audience_read` event (once, under the incident's lock).
`deliver` leaves a notice to its recording process while that lives: on this host, while its
pid does; on another, for `delivery.stale_claim` after the declaration (as for a claim). If the
file is gone or changed (or the query's rows are), it says so and what is missing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

from incident.audience import (
    AudienceScan,
    AudienceScanner,
    ContactChecks,
    QuerySource,
    Recipient,
    RecipientSpool,
    Selection,
    plain_file,
    scan_audience,
)
from incident.channels.factory import contact_checks
from incident.errors import AudienceInvalid, IncidentError, Location, StorageError
from incident.models import EventType
from incident.notices import rows_for_customers, sender_domain
from incident.payloads import AudienceRead
from incident.settings import Runtime
from incident.store import Store, deliveries
from incident.store import outbox as ob
from incident.store.events import event_data, first_event_data, open_incident_ids

# `start` records the notice's event with the outbox rows of this many recipients (urgent
# first), then the rest in transactions of SENDING_BATCH recipients while the first ones are
# sent, each followed by as long a pause, so that the dispatcher, in the same event loop,
# keeps at least half of the time; without sending (--queue-only, completing a notice), in
# transactions of ROWS_PER_BATCH: fewer, larger transactions write each index page to the
# SQLite WAL fewer times (1,000,000 rows: 55 s in batches of 2,000, 23 s of 100,000).
FIRST_ROWS = 500
ROWS_PER_BATCH = 100_000
SENDING_BATCH = 500
FIRST_SEND_WAIT = 1.0  # seconds: the rest is recorded once the first messages went (or after)
# Read early, the urgent recipients are found by a pass over the file first and recorded
# before the others: up to this many (more come in file order, as read).
URGENT_ROWS = 20_000


@dataclass
class EarlyRead:
    """A customer file still being read when its notice is recorded (the early path; see the
    module docstring): its urgent recipients (up to URGENT_ROWS) then its first FIRST_ROWS
    selected recipients taken, the rest to come from `scanner`; the SHA-256, size and line
    count of its bytes, taken first."""

    scanner: AudienceScanner
    first: list[tuple[Any, ...]]
    sha256: str
    size: int
    lines: int

    def recipients(self) -> Iterator[Recipient]:
        """Every selected recipient: the urgent ones, then the others in file order."""
        for recipient in self.first:
            yield Recipient._make(recipient)
        for recipient in self.scanner.selected():
            yield Recipient._make(recipient)

    def estimate(self, messages: int) -> int:
        """The notice's messages guessed from those of its first recipients (a progress bar's
        total until the exact count is known)."""
        rows = max(self.scanner.valid + self.scanner.tally.bad_rows, 1)
        return max(messages, round(messages * max(self.lines - 1, rows) / rows))


def read_audience(path: Path | QuerySource, selection: Selection, *, default_language: str,
                  default_region: str, checks: ContactChecks | None,
                  refuse_utf8: Callable[[], str | None] | None, spool: bool = True,
                  early: bool = True) -> tuple[AudienceScan, EarlyRead | None]:
    """The audience as `start` reads it: in full (scan_audience), or — a file that
    `plain_file` passes, with more than FIRST_ROWS selected recipients, unless not `early` —
    its urgent recipients (urgent_first) and its first FIRST_ROWS other selected recipients
    (the scan's counts are then those so far, its SHA-256 and size those of the whole file)."""
    scanner = AudienceScanner(path, selection, default_language=default_language,
                              default_region=default_region, checks=checks,
                              refuse_utf8=refuse_utf8)
    plain = (plain_file(path, ascii_local_parts=refuse_utf8 is not None)
             if early and isinstance(path, Path) else None)
    if plain is None:
        return scanner.spooled(spool=spool), None
    urgent = scanner.urgent_first(URGENT_ROWS)  # recorded first, whatever their line
    first = list(islice(scanner.selected(), FIRST_ROWS))
    if len(first) < FIRST_ROWS:  # the whole list is read already: recorded as before
        return scanner.spooled(urgent + first, spool=spool), None
    scan = replace(scanner.scan(), sha256=plain[0], size=plain[1])
    return scan, EarlyRead(scanner, urgent + first, *plain)


def audience_read(scan: AudienceScan, channels: Sequence[str], calls: str) -> AudienceRead:
    """The `audience_read` payload of a notice whose audience `scan` read to the end."""
    by_channel = scan.messages(channels, calls=calls)
    return AudienceRead(rows=scan.rows_read, skipped=scan.bad_rows, partial=scan.partial_rows,
                        selected=scan.selected,
                        messages=sum(n for each in by_channel.values() for n in each.values()),
                        by_channel=by_channel, unreachable=scan.unreachable(channels,
                                                                            calls=calls),
                        sha256=scan.sha256, utf8_refusal=scan.utf8_refusal)


class PendingRows:
    """The outbox rows of a start's notice still to record after its event, from the spooled
    recipients: one transaction per batch. Done when all are recorded; closed (spool dropped)
    then, or when abandoned to `incident deliver` (see the module docstring)."""

    def __init__(self, store: Store, incident_id: str, recipients: Iterator[Recipient],
                 spool: RecipientSpool | None, *, channels: Sequence[str], domain: str,
                 transports: Mapping[str, str], fallback: bool, now: datetime, recorded: int,
                 total: int, calls: str = "none", early: EarlyRead | None = None,
                 actor: str = "", counted: Callable[[AudienceScan, int], None] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self.incident_id = incident_id
        self.recipients = recipients
        self.spool = spool
        self.channels = list(channels)
        self.domain = domain
        self.transports = dict(transports)
        self.fallback = fallback
        self.calls = calls
        self.now = now
        self.recorded = recorded
        self.total = total
        self.done = False
        self.closed = False
        # The early path: the list is still being read; its counts are recorded (an
        # `audience_read` event by `actor`) with the last rows, then told to `counted`.
        self.early = early
        self.actor = actor
        self.counted = counted
        self.clock = clock or (lambda: now)
        self._ahead: list[Recipient] = []  # read to learn whether a batch is the last one
        if early is None and recorded >= total:
            self._end()

    def step(self, recipients: int = ROWS_PER_BATCH) -> None:
        """Record the next batch (its own transaction); with the last one, an early-read
        audience's exact counts."""
        batch = self._ahead + list(islice(self.recipients, recipients + 1 - len(self._ahead)))
        batch, self._ahead = batch[:recipients], batch[recipients:]
        last = not self._ahead
        scan = None
        if not batch and self.early is None:
            self._end()
            return
        try:
            with self.store.write() as conn:
                added = ob.enqueue(conn, rows_for_customers(
                    self.incident_id, 1, batch, self.channels, self.domain,
                    transports=self.transports, fallback=self.fallback,
                    calls=self.calls), now=self.now) if batch else 0
                if last and self.early:
                    scan = self._count(conn, self.early)
            self.recorded += added
        except StorageError as exc:
            self.close()
            of = f" of {self.total:,}" if self.early is None else ""
            raise StorageError(
                f"recording notice #1 of {self.incident_id} stopped after {self.recorded:,}"
                f"{of} messages: {exc.message.replace(', nothing was recorded', '')}",
                hint=f"the notice is on record; `incident deliver {self.incident_id[-6:]}` "
                     "records the rest (from the audience file) and sends it") from exc
        except Exception:  # the file refused or changed: the rest is left as after a crash
            self.close()
            raise
        if scan is not None:
            self.early = None
            if self.counted is not None:
                self.counted(scan, self.total)
        if last:
            self._end()

    def _count(self, conn: Any, early: EarlyRead) -> AudienceScan:
        """Record the exact counts of the audience just read to its end (in `conn`)."""
        scan = early.scanner.scan()
        if not early.scanner.ended:  # interrupted while reading: not a changed file
            raise StorageError(f"reading {scan.path} stopped before its end",
                               hint=f"run `incident deliver {self.incident_id[-6:]}`")
        if scan.sha256 != early.sha256:
            raise AudienceInvalid(
                f"{scan.path} changed while notice #1 of {self.incident_id} was recorded from "
                f"it: {self.recorded:,} of its messages are recorded, the others and its "
                "counts cannot be",
                problems=[(Location(scan.path), "SHA-256 differs")],
                hint=f"put back the file it was declared with (SHA-256 {early.sha256[:16]}"
                     f"...), then run: incident deliver {self.incident_id[-6:]}")
        counts = audience_read(scan, self.channels, self.calls)
        record_counts(self.store, conn, self.incident_id, counts, actor=self.actor,
                      at=self.clock())
        self.total = counts.messages
        return scan

    def finish(self) -> None:
        """Record every remaining batch."""
        while not self.done:
            self.step()

    def _end(self) -> None:
        self.done = True
        self.close()
        if self.recorded != self.total:  # the scan counted what the spool holds
            raise StorageError(f"notice #1 of {self.incident_id}: {self.recorded:,} messages "
                               f"recorded, {self.total:,} expected",
                               hint=f"run `incident deliver {self.incident_id[-6:]}`")

    def close(self) -> None:
        """Drop the spooled recipients, or stop reading the file (what is not recorded is left
        to `complete_notices`)."""
        if not self.closed:
            self.closed = True
            if self.spool is not None:
                self.spool.close()
            if self.early is not None:
                self.early.scanner.close()


def complete_notices(store: Store, rt: Runtime, incident_id: str | None = None, *,
                     strict: bool = False) -> list[str]:
    """Record the missing rows of first notices whose recording stopped (a start that
    died while recording them): of one incident, or of every one not closed.

    Returns what the operator should know. A notice still being recorded (see the module
    docstring) is left to its recorder, unless `strict`. A notice that cannot be completed
    (the audience file is gone or changed) is reported, or raises with `strict` (a later
    notice must not copy a partial audience).
    """
    if incident_id is None:
        with store.read() as conn:
            ids = open_incident_ids(conn)
    else:
        ids = [incident_id]
    notes = []
    for each in ids:
        try:
            note = _complete_notice(store, rt, each, strict=strict)
        except IncidentError as exc:
            if strict:
                raise
            note = exc.message + (f" ({exc.hint})" if exc.hint else "")
        if note:
            notes.append(note)
    return notes

def _complete_notice(store: Store, rt: Runtime, incident_id: str, *,
                     strict: bool) -> str | None:
    with store.read() as conn:
        first = event_data(conn, incident_id, 1)
        data, declared = first if first else ({}, rt.clock.now())
        audience, notice = data.get("audience", {}), data.get("notice")
        if "sha256" not in audience or not notice:
            return None  # recorded in one transaction (or no customer notice)
        channels = list(notice["channels"])
        # Recorded before its audience was read to the end: the counts came later, if at all.
        uncounted = audience.get("counts") == "pending"
        if uncounted and (read := first_event_data(conn, incident_id,
                                                   EventType.AUDIENCE_READ)) is not None:
            uncounted = False
            notice = {**notice, "messages": read["messages"]}
        total = int(notice["messages"])
        # On its own channels: its fallback rows are on the other.
        recorded = deliveries.count_rows(conn, incident_id, 1, channels)
    if recorded >= total and not uncounted:
        return None
    short = incident_id[-6:]
    recorder = str(audience.get("recorder", ""))
    of = "" if uncounted else f" of {total:,}"
    # Left to its recorder while that process lives (on another host: for as long as a
    # claim there would be trusted; the audience file is that host's anyway).
    elsewhere = (recorder.rpartition(":")[0] != socket.gethostname()
                 and rt.clock.now() - declared < rt.settings.delivery.stale_claim)
    if not strict and (_alive_here(recorder) or elsewhere):
        return (f"{incident_id}: notice #1 is being recorded by {recorder} "
                f"({recorded:,}{of} messages so far)")
    path: Path | QuerySource
    if audience.get("query"):  # a SQL audience: the same query, its URL from the environment
        path = QuerySource(name=str(audience.get("name")), url_env=str(audience["url_env"]),
                           query=str(audience["query"]))
        what = "the query's rows"
    else:
        path = Path(audience["path"])
        what = "the file"
    its = "" if uncounted else f" of its {total:,}"
    missing = (f"{incident_id}: notice #1 has {recorded:,}{its} messages recorded, and the "
               f"rest cannot be derived from {path}")
    hint = (f"put back the audience {'data' if isinstance(path, QuerySource) else 'file'} it "
            f"was declared with (SHA-256 {audience['sha256'][:16]}...), then run: "
            f"incident deliver {short}")
    if isinstance(path, Path) and not path.is_file():
        raise AudienceInvalid(f"{missing}: the file is not there", hint=hint,
                              problems=[(Location(str(path)), "no such file")])
    refusal = audience.get("utf8_refusal")  # as the start decided, not asked again
    scan = scan_audience(path, Selection.from_record(audience["selection"]),
                         default_language=audience["language"],
                         default_region=audience["phone_region"], checks=contact_checks(rt),
                         refuse_utf8=(lambda: refusal) if refusal else None)
    assert scan.spool is not None
    try:
        if scan.sha256 != audience["sha256"]:
            raise AudienceInvalid(f"{missing}: {what} changed since the notice was declared",
                                  hint=hint, problems=[(Location(str(path)), "SHA-256 differs")])
        fallback = bool(data["playbook"]["notices"].get("fallback", False))
        calls = str(data["playbook"]["notices"].get("voice", {}).get("who", "none"))
        if uncounted:
            total = audience_read(scan, channels, calls).messages
        # The transports the notice was recorded for (not this config's, which may differ).
        transports = notice.get("transports") or rt.settings.channels.transports
        domain = sender_domain(rt)
        now = rt.clock.now()
        recipients = iter(scan.spool)
        while batch := list(islice(recipients, ROWS_PER_BATCH)):
            with store.write() as conn:
                ob.enqueue(conn, rows_for_customers(incident_id, 1, batch, channels,
                                                    domain, transports=transports,
                                                    fallback=fallback, calls=calls),
                           now=now, ignore_existing=True)
    finally:
        scan.spool.close()
    with store.read() as conn:
        done = deliveries.count_rows(conn, incident_id, 1, channels)
    if done < total:
        raise StorageError(f"{incident_id}: notice #1 has {done:,} of {total:,} messages "
                           f"recorded after reading {path} again",
                           hint="the validation rules may have changed since (a newer "
                                "phonenumbers or email-validator)")
    if uncounted:
        with store.write() as conn:
            record_counts(store, conn, incident_id, audience_read(scan, channels, calls),
                          actor=rt.operator, at=rt.clock.now())
    return (f"{incident_id}: notice #1 was interrupted while being recorded; its other "
            f"{total - recorded:,} messages are recorded now (from {path})")


def record_counts(store: Store, conn: Any, incident_id: str, counts: AudienceRead, *,
                  actor: str, at: datetime) -> None:
    """Append the `audience_read` event (in `conn`), unless another process recorded it
    already: the start and a completion (`deliver`, or an `update` while the start still
    reads) may both reach the end of the same file."""
    store.lock_incident(conn, incident_id)
    if first_event_data(conn, incident_id, EventType.AUDIENCE_READ) is None:
        store.append(conn, incident_id, EventType.AUDIENCE_READ, actor=actor, data=counts,
                     at=at)


def _alive_here(worker: str) -> bool:
    """Whether `worker` (host:pid) is another live process on this host."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    return ob.pid_alive(int(pid))
