"""`incident bounces ingest`: email bounces read from files, mbox or Maildir and matched to
the notices they are about."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from incident.cli.app import App, pass_app

if TYPE_CHECKING:  # `incident --help` must not import the parser
    from incident.response.bounces import Bounced, BounceIngest, Unread

LISTED = 50  # rows of each kind in the table (--json lists all)


@click.group()
def bounces() -> None:
    """Email bounces (RFC 3464 DSNs and common non-standard bounces)."""


@bounces.command("ingest")
@click.argument("paths", metavar="PATH...", nargs=-1, type=click.Path(path_type=str))
@click.option("--imap", is_flag=True, help="Read the IMAP mailbox bounces.imap configures "
              "(read-only: nothing flagged, moved or deleted).")
@pass_app
def ingest(app: App, paths: tuple[str, ...], imap: bool) -> None:
    """Read bounces from message files, directories of .eml files, mbox files or Maildirs
    (or with --imap the configured IMAP mailbox); classify each (5.x.x hard, 4.x.x or delayed
    soft) and match it to the email it is about by the original Message-ID or the VERP return
    path. A bounce that matches nothing is listed and left alone. Exit 2 when a message could
    not be read (the others are); exit 1 when the IMAP server, login or mailbox is refused.

    \b
    Example:
      incident bounces ingest ~/Maildir/.Bounces bounces.mbox
      BOUNCES_IMAP_PASSWORD=... incident bounces ingest --imap
    """
    from pathlib import Path

    if bool(paths) == imap:
        raise click.UsageError("give PATH... or --imap (one of them)")
    result = (app.response.bounces.ingest_imap() if imap
              else app.response.bounces.ingest([Path(p) for p in paths]))
    _show(app, result)
    app.conclude(result)


def _show(app: App, result: BounceIngest) -> None:
    out = app.out
    if out.as_json:
        out.json({"messages": result.messages, "repeated": result.repeated,
                  "recorded": result.recorded, "already_recorded": result.already,
                  "matched": [_bounced(b) for b in result.matched],
                  "unmatched": [_bounced(b) for b in result.unmatched],
                  "other": [_unread(u) for u in result.other],
                  "problems": [_unread(u) for u in result.problems]})
        return
    hard = sum(b.severity == "hard" for b in result.matched)
    out.line(f"Read {result.messages} messages: {len(result.matched)} bounces matched "
             f"({hard} hard, {len(result.matched) - hard} soft), {len(result.unmatched)} "
             f"unmatched (left alone), {len(result.other)} not a failure report, "
             f"{len(result.problems)} problems"
             + (f", {result.repeated} seen twice" if result.repeated else ""))
    rows: list[list[str]] = []
    for kind, items in (("matched", result.matched), ("unmatched", result.unmatched)):
        rows += [_row(kind, b) for b in items[:LISTED]]
    rows += [[u.where, "problem", "", "", "", u.why] for u in result.problems[:LISTED]]
    if rows:
        out.table("Bounces", ["message", "result", "status", "recipient", "notice", "detail"],
                  rows)
    longest = max(len(result.matched), len(result.unmatched), len(result.problems))
    if longest > LISTED:
        out.note(f"at most {LISTED} of each listed; --json lists all")
    if result.matched:
        out.line(f"Recorded {result.recorded} as bounced (hard/soft)"
                 + (f"; {result.already} recorded by an earlier ingest" if result.already
                    else "") + " — `incident failed ID` lists the customers to reach otherwise")


def _row(kind: str, b: Bounced) -> list[str]:
    from incident.privacy import mask_email, mask_reference, scrub

    notice = (f"{b.row.incident_id[-6:]} #{b.row.notice_seq} "
              f"{mask_reference(b.row.recipient_ref)}") if b.row else ""
    return [b.where, f"{b.severity} {kind}" + (f" ({b.matched_by})" if b.matched_by else ""),
            b.failure.status, mask_email(b.failure.recipient), notice,
            scrub(b.failure.diagnostic) if b.row else b.why]


def _bounced(b: Bounced) -> dict[str, Any]:
    from incident.privacy import mask_email, mask_reference, scrub

    row = b.row
    return {"where": b.where, "identity": b.identity, "severity": str(b.severity),
            "action": b.failure.action, "status": b.failure.status,
            "recipient": mask_email(b.failure.recipient),
            "diagnostic": scrub(b.failure.diagnostic), "matched_by": b.matched_by,
            "why": b.why or None,
            "outbox": None if row is None else {
                "id": row.id, "incident": row.incident_id, "notice": row.notice_seq,
                "customer": mask_reference(row.recipient_ref), "state": row.state,
                "message_id": row.message_id}}


def _unread(u: Unread) -> dict[str, Any]:
    return {"where": u.where, "identity": u.identity, "why": u.why}


COMMANDS = [bounces]
