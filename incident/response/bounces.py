"""Email bounces read and matched to the outbox: every message of the sources parsed
(incident.bounces), each failure matched to the email it is about by the original Message-ID
or the VERP key it carries — never by a guess — and returned classified hard or soft.

Each matched bounce is recorded as a receipt of its email's outbox row (`bounced_hard` /
`bounced_soft`, source `bounce`, the DSN status as its code), named by the bounce message's
own identity: a mailbox read again records nothing twice. Unmatched bounces are left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path

from incident.bounces import (
    ParsedBounce,
    RecipientStatus,
    Severity,
    SourceMessage,
    parse_bounce,
    read_sources,
)
from incident.errors import ConfigInvalid, ExitCode, Location
from incident.models import ReceiptState
from incident.response.journal import Journal
from incident.response.results import Result
from incident.settings import secret
from incident.store import mailed, receipts
from incident.store.mailed import MailedRow
from incident.store.receipts import Receipt

CHUNK = 500  # messages parsed, then matched in one read transaction


@dataclass(frozen=True, slots=True)
class Bounced:
    """A failure a message reports: where the message is, its identity, the class, the
    recipient it is about, and the outbox row it matched (None: unmatched, see `why`)."""

    where: str
    identity: str
    severity: Severity
    failure: RecipientStatus
    row: MailedRow | None = None
    matched_by: str | None = None  # "message-id" | "verp"
    why: str = ""  # why unmatched


@dataclass(frozen=True, slots=True)
class Unread:
    """A message that could not be read, or is not a failure report: where, and why."""

    where: str
    identity: str | None
    why: str


@dataclass(kw_only=True)
class BounceIngest(Result):
    """What `bounces ingest` read: bounces matched to an outbox row (recorded as receipts),
    bounces it could not match (left alone), messages
    that are no failure report, and problems (exit 2 when there are any, after the rest)."""

    messages: int = 0
    matched: list[Bounced] = field(default_factory=list)
    unmatched: list[Bounced] = field(default_factory=list)
    other: list[Unread] = field(default_factory=list)
    problems: list[Unread] = field(default_factory=list)
    repeated: int = 0  # messages seen again in this run (same identity): read once
    recorded: int = 0  # matched bounces recorded now as receipts
    already: int = 0  # matched bounces recorded by an earlier ingest (the same message)

    @property
    def exit_code(self) -> int:
        """2 when a message could not be read (every other one was), else 0."""
        return ExitCode.BAD_INPUT if self.problems else ExitCode.OK


class Bounces:
    """Read bounces and match them to the outbox."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.rt = journal.rt

    def ingest(self, paths: Sequence[Path]) -> BounceIngest:
        """Parse every message of `paths` (files, .eml directories, mbox, Maildir) and match
        each failure it reports to the email it is about."""
        return self._ingest(read_sources(paths))

    def ingest_imap(self) -> BounceIngest:
        """The same for every message of the IMAP mailbox `bounces.imap` configures (read
        only: nothing flagged, moved or deleted); ImapError (exit 1) when it cannot be read."""
        from incident.bounces.imap import read_imap

        config = self.rt.settings.bounces.imap
        where = str(self.rt.config_path or "built-in defaults")
        if config is None:
            raise ConfigInvalid("no IMAP mailbox configured",
                                problems=[(Location(where, None, "bounces.imap"), "missing")],
                                hint="add bounces.imap: {host, user, mailbox} to incident.yaml")
        password = secret(config.password_env)
        if password is None:
            raise ConfigInvalid(f"the IMAP password is not set: ${config.password_env} is empty",
                                problems=[(Location(where, None, "bounces.imap.password_env"),
                                           f"${config.password_env} not set")])
        return self._ingest(read_imap(config, password))

    def _ingest(self, messages: Iterator[SourceMessage]) -> BounceIngest:
        prefix = self.rt.settings.bounces.verp_prefix
        result = BounceIngest()
        seen: set[str] = set()
        while chunk := list(islice(messages, CHUNK)):
            parsed: list[tuple[str, ParsedBounce]] = []
            for source in chunk:
                result.messages += 1
                bounce = _parse(source, prefix)
                if bounce is None:
                    result.problems.append(Unread(source.where, None, source.problem or ""))
                elif bounce.identity in seen:
                    result.repeated += 1
                else:
                    seen.add(bounce.identity)
                    parsed.append((source.where, bounce))
            self._match(parsed, result)
        self._record(result)
        return result

    def _record(self, result: BounceIngest) -> None:
        """Record every matched bounce not recorded before, in one write transaction."""
        if not result.matched:
            return
        store, now = self.journal.store, self.rt.clock.now()
        refs = {b.identity: f"bounce:{b.identity}" for b in result.matched}
        with store.write() as conn:
            known = receipts.known(conn, refs.values())
            new = [b for b in result.matched if refs[b.identity][:200] not in known]
            done = receipts.record(conn, [Receipt(
                state=(ReceiptState.BOUNCED_HARD if b.severity is Severity.HARD
                       else ReceiptState.BOUNCED_SOFT),
                status=b.failure.status or b.failure.action, code=b.failure.status or None,
                provider_at=now, source="bounce", outbox_id=b.row.id if b.row else None,
                provider_ref=refs[b.identity]) for b in new], now=now)
        result.recorded, result.already = done.stored, len(result.matched) - len(new)

    def _match(self, parsed: list[tuple[str, ParsedBounce]], result: BounceIngest) -> None:
        failures = []
        for where, bounce in parsed:
            failure = bounce.first_failure
            if bounce.problem:
                result.problems.append(Unread(where, bounce.identity, bounce.problem))
            elif failure is None or bounce.severity is None:
                result.other.append(Unread(where, bounce.identity, f"{bounce.kind.value}: "
                                           "not a failure report"))
            else:
                failures.append((where, bounce, failure, bounce.severity))
        with self.journal.store.read() as conn:
            by_id = mailed.by_message_ids(conn, _all(b.message_ids for _, b, _, _ in failures))
            by_key = mailed.by_keys(conn, _all(b.verp_keys for _, b, _, _ in failures))
        for where, bounce, failure, severity in failures:
            found = {("message-id", r.id): r for r in _found(bounce.message_ids, by_id)}
            found.update({("verp", r.id): r for r in _found(bounce.verp_keys, by_key)})
            rows = {r.id: r for r in found.values()}
            base = Bounced(where=where, identity=bounce.identity, severity=severity,
                           failure=failure)
            if len(rows) == 1:
                (how, _), row = next(iter(found.items()))
                result.matched.append(replace(base, row=row, matched_by=how))
            elif rows:
                result.unmatched.append(replace(base, why=f"its references name {len(rows)} "
                                                        "different messages"))
            elif bounce.message_ids or bounce.verp_keys:
                result.unmatched.append(replace(base, why="no email of ours has its Message-ID "
                                                        "or VERP key"))
            else:
                result.unmatched.append(replace(base, why="carries no original Message-ID nor "
                                                        "VERP address"))


def _parse(source: SourceMessage, prefix: str) -> ParsedBounce | None:
    return None if source.data is None else parse_bounce(source.data, verp_prefix=prefix)


def _all(groups: Iterable[Iterable[str]]) -> Iterator[str]:
    for group in groups:
        yield from group


def _found(values: Iterable[str], rows: dict[str, MailedRow]) -> Iterator[MailedRow]:
    return (rows[v] for v in values if v in rows)
