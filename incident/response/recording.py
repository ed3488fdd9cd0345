"""Recording a start's notice: its first recipients with its event, the rest in batches while
sending, and completing a notice whose recording a crash interrupted.

Every other notice is recorded in one transaction with its rows (response/journal.py). `start`
is the exception, because its notice can go to a million customers and the first of
them must hear within seconds. Nothing is sent that was not first recorded, and the record is
never half a notice that nobody completes:

1. The whole customer list is read once before anything is recorded (`scan_audience`, one
   streaming pass): every row validated, the audience selected and counted, the selected
   recipients spooled to an unnamed temporary file, urgent ones first. A file that cannot be
   used, or selects nobody, stops here with nothing recorded (exit 2), as before.
2. One transaction records the incident, the declared event with the notice — its exact
   message and recipient counts, and what its rows are derived from: the audience file's path
   and SHA-256, the selection, the default language and phone region — and the notice's first
   FIRST_ROWS recipients' outbox rows (urgent first), plus the internal notice to the parties.
   From its commit on, the notice is on record and its first messages can be sent.
3. The other rows are recorded in batches, one transaction each, while the dispatcher sends,
   in the same event loop, taking turns (`Sending.send`; `--queue-only` records them all
   first). Rows are claimed urgent first whenever they were recorded: claims order by priority.

A notice is complete when its rows on its channels number its recorded message count. If the
process dies during step 3, the notice is on record but not complete: `incident deliver` (and
any later notice, which copies the first notice's rows) completes it first
(`complete_notices`): it reads the audience file again (a SQL audience: runs its query again),
checks its SHA-256 (a query's: of its rows), derives the same rows and inserts the missing
ones (rows already there are skipped, so two processes completing at once cannot clash).
`deliver` leaves a notice to its recording process while that lives: on this host, while its
pid does; on another, for `delivery.stale_claim` after the declaration (as for a claim). If the
file is gone or changed (or the query's rows are), it says so and what is missing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from itertools import islice
from pathlib import Path

from incident.audience import QuerySource, Recipient, RecipientSpool, Selection, scan_audience
from incident.channels.factory import contact_checks
from incident.errors import AudienceInvalid, IncidentError, Location, StorageError
from incident.notices import rows_for_customers, sender_domain
from incident.settings import Runtime
from incident.store import Store, deliveries
from incident.store import outbox as ob
from incident.store.events import event_data, open_incident_ids

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


class PendingRows:
    """The outbox rows of a start's notice still to record after its event, from the spooled
    recipients: one transaction per batch. Done when all are recorded; closed (spool dropped)
    then, or when abandoned to `incident deliver` (see the module docstring)."""

    def __init__(self, store: Store, incident_id: str, recipients: Iterator[Recipient],
                 spool: RecipientSpool, *, channels: Sequence[str], domain: str,
                 transports: Mapping[str, str], fallback: bool, now: datetime, recorded: int,
                 total: int, calls: str = "none") -> None:
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
        if recorded >= total:
            self._end()

    def step(self, recipients: int = ROWS_PER_BATCH) -> None:
        """Record the next batch (its own transaction)."""
        batch = list(islice(self.recipients, recipients))
        if not batch:
            self._end()
            return
        try:
            with self.store.write() as conn:
                self.recorded += ob.enqueue(conn, rows_for_customers(
                    self.incident_id, 1, batch, self.channels, self.domain,
                    transports=self.transports, fallback=self.fallback, calls=self.calls),
                now=self.now)
        except StorageError as exc:
            self.close()
            raise StorageError(
                f"recording notice #1 of {self.incident_id} stopped after {self.recorded:,} of "
                f"{self.total:,} messages: {exc.message.replace(', nothing was recorded', '')}",
                hint=f"the notice is on record; `incident deliver {self.incident_id[-6:]}` "
                     "records the rest (from the audience file) and sends it") from exc

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
        """Drop the spooled recipients (what is not recorded is left to `complete_notices`)."""
        if not self.closed:
            self.closed = True
            self.spool.close()


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
        total = int(notice["messages"])
        # On its own channels: its fallback rows are on the other.
        recorded = deliveries.count_rows(conn, incident_id, 1, channels)
    if recorded >= total:
        return None
    short = incident_id[-6:]
    recorder = str(audience.get("recorder", ""))
    # Left to its recorder while that process lives (on another host: for as long as a
    # claim there would be trusted; the audience file is that host's anyway).
    elsewhere = (recorder.rpartition(":")[0] != socket.gethostname()
                 and rt.clock.now() - declared < rt.settings.delivery.stale_claim)
    if not strict and (_alive_here(recorder) or elsewhere):
        return (f"{incident_id}: notice #1 is being recorded by {recorder} "
                f"({recorded:,} of {total:,} messages so far)")
    path: Path | QuerySource
    if audience.get("query"):  # a SQL audience: the same query, its URL from the environment
        path = QuerySource(name=str(audience.get("name")), url_env=str(audience["url_env"]),
                           query=str(audience["query"]))
        what = "the query's rows"
    else:
        path = Path(audience["path"])
        what = "the file"
    missing = (f"{incident_id}: notice #1 has {recorded:,} of its {total:,} messages "
               f"recorded, and the rest cannot be derived from {path}")
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
    return (f"{incident_id}: notice #1 was interrupted while being recorded; its other "
            f"{total - recorded:,} messages are recorded now (from {path})")

def _alive_here(worker: str) -> bool:
    """Whether `worker` (host:pid) is another live process on this host."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    return ob.pid_alive(int(pid))
