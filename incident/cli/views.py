"""Commands that read: status, list, failed (the record itself: cli/record.py)."""

from __future__ import annotations

import csv
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
from rich.text import Text

from incident.cli.app import App, pass_app
from incident.cli.output import Output, safe, state_counts, writing

if TYPE_CHECKING:  # the rest is imported where used: `incident --help` needs none of it
    from incident.response.results import StatusResult
    from incident.state import IncidentView



def _status_json(result: StatusResult) -> dict[str, Any]:
    from incident.checklist import checklist

    view = result.view
    return {
        "id": view.id, "title": view.title, "playbook": view.playbook.id,
        "kind": view.playbook.kind.value, "severity": view.severity,
        "status": view.status.value, "drill": view.drill,
        "detected_at": view.detected_at.isoformat(), "declared_at": view.declared_at.isoformat(),
        "eta": view.eta.isoformat() if view.eta else None,
        "eta_passed": result.eta_passed,
        "next_update_due": view.next_update_due.isoformat() if view.next_update_due else None,
        "update_overdue": result.update_overdue,
        "resolved_at": view.resolved_at.isoformat() if view.resolved_at else None,
        "closed_at": view.closed_at.isoformat() if view.closed_at else None,
        "notices": len(view.notices),
        "deliveries": state_counts(result.counts), "deliveries_by_channel": result.counts,
        "internal_deliveries": state_counts(result.internal_counts),
        "receipts": _totals(result.receipts), "receipts_by_channel": result.receipts,
        "reach_by_channel": _reach(result),
        "manual_channel": {"open": view.manual_open,
                           "opened_at": view.manual.opened_at.isoformat() if view.manual else None,
                           "cases": len(view.cases), "unreconciled": len(view.unreconciled)},
        "steps": [{"id": i.id, "kind": i.kind, "owner": i.owner, "state": i.state,
                   "due": i.due.isoformat() if i.due else None,
                   "overdue": i.overdue(result.now)} for i in checklist(view, result.now)],
        "parties": {p: {"notified_at": _iso(view.notified_at(p)),
                        "acknowledged_at": _iso(view.acks[p].at if p in view.acks else None)}
                    for n in view.party_notices for p in n.parties},
        "attention": [{"level": a.level, "what": a.what, "at": a.at.isoformat()}
                      for a in result.attention],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@click.command()
@click.argument("incident_id", metavar="[ID]", required=False)
@pass_app
def status(app: App, incident_id: str | None) -> None:
    """Where an incident stands: state, ETA, time since detection, when the next update is
    due (red when overdue), deliveries and recent failures. Without ID: every open incident."""
    if incident_id is None:
        _list(app, include_closed=False)
        return
    result = app.response.status(incident_id)
    app.reminded = True  # the view below shows what falls due
    render_status(app, result)


def render_status(app: App, result: StatusResult) -> None:
    """The status of one incident: the facts, what falls due, the checklist, deliveries."""
    from incident.privacy import mask_contact, mask_name
    from incident.store.events import as_utc

    out, view = app.out, result.view
    if out.as_json:
        data = _status_json(result)
        data["retrying"] = [
            {"channel": r.channel, "customer": r.recipient_ref, "to": mask_contact(r.address),
             "attempts": r.attempts, "code": r.error_code, "error": r.last_error}
            for r in result.retrying]
        data["recent_failures"] = [
            {"channel": f.channel, "customer": f.recipient_ref, "to": mask_contact(f.address),
             "code": f.error_code, "error": f.last_error} for f in result.failures]
        data["rollcall"] = result.rollcall
        out.json(data)
        return
    since = result.now - view.detected_at
    drill = " [bold magenta](DRILL)[/bold magenta]" if view.drill else ""
    out.line(f"[bold]{view.id}[/bold]{drill} {safe(view.title)}")
    out.line(f"{safe(view.playbook.name.en)} · severity {view.severity} · "
             f"[bold]{view.status.value}[/bold] · {out.ago(since)} since detection")
    eta = out.when(view.eta)
    if result.eta_passed:
        eta = f"[bold red]{eta} — passed, announce a new ETA (incident eta)[/bold red]"
    out.line(f"ETA: {eta}")
    if view.next_update_due is not None:
        due = out.when(view.next_update_due)
        if result.update_overdue:
            late = out.ago(result.now - view.next_update_due)
            out.line(f"Next customer update: [bold red]{due} — OVERDUE by {late}[/bold red]")
        else:
            out.line(f"Next customer update: {due} "
                     f"(in {out.ago(view.next_update_due - result.now)})")
    if view.resolved_at:
        out.line(f"Resolved: {out.when(view.resolved_at)}")
    _manual_line(out, view)
    _parties_line(app, view)
    for item in result.attention:
        style = "bold red" if item.level == "overdue" else "yellow"
        out.line(f"[{style}]! {safe(item.what)}[/{style}]")
    _checklist(app, result)
    out.deliveries(result.counts)
    if result.internal_counts:
        out.deliveries(result.internal_counts, title="Internal notices to parties")
    _receipts(out, result.receipts)
    for channel, reach in _reach(result).items():
        out.line(f"{channel}: {reach['confirmed']} confirmed of {reach['accepted']} accepted")
    _skipped_line(out, sum(c.get("skipped", 0) for c in result.counts.values()))
    if result.rollcall is not None:
        from incident.cli.rollcall import show

        show(app, result.rollcall)
    if result.retrying:
        out.table("Retrying (temporary failures)", ["channel", "customer", "to", "attempts",
                                                    "code", "last error", "next try"],
                  [[r.channel, r.recipient_ref, mask_contact(r.address), r.attempts,
                    r.error_code or "", (r.last_error or "")[:60],
                    out.when(as_utc(r.next_attempt_at))] for r in result.retrying])
    if result.failures:
        out.table("Recent permanent failures", ["channel", "customer", "name", "to", "code",
                                                "error"],
                  [[f.channel, f.recipient_ref, mask_name(f.recipient_name),
                    mask_contact(f.address), f.error_code or "", (f.last_error or "")[:60]]
                   for f in result.failures])
    short = view.id.rsplit("-", 1)[-1]
    if view.status.is_open:
        out.next(f"incident update {short} -m \"...\"", f"incident resolve {short} -m \"...\"")
    elif view.status.value == "resolved":
        out.next(f"incident close {short}")


def _manual_line(out: Output, view: IncidentView) -> None:
    m = view.manual
    if m is None:
        out.line("Manual channel: not open")
        return
    state = (f"[green]open[/green] since {out.when(m.opened_at)}" if m.open
             else f"closed {out.when(m.closed_at)}")
    cases = f" · {len(view.cases)} case(s), {len(view.unreconciled)} to reconcile"
    out.line(f"Manual channel: {state}{cases if view.cases else ''}")


def _parties_line(app: App, view: IncidentView) -> None:
    parties = list(dict.fromkeys(p for n in view.party_notices for p in n.parties))
    if not parties:
        return
    acked = [p for p in parties if p in view.acks]
    waiting = [p for p in parties if p not in view.acks]
    app.out.line(f"Parties: {len(acked)}/{len(parties)} acknowledged"
                 + (f" · waiting for {safe(', '.join(waiting))}" if waiting else ""))


def _checklist(app: App, result: StatusResult) -> None:
    """Open checklist items with due time and owner (overdue in red), then a count of done."""
    from incident.checklist import checklist

    out, view, now = app.out, result.view, result.now
    items = checklist(view, now)
    open_items = sorted((i for i in items if i.state == "open" and i.due is not None),
                        key=lambda i: i.due or now)
    rows = []
    for item in open_items[:10]:
        assert item.due is not None
        if item.overdue(now):
            left: str | Text = Text(f"OVERDUE {out.ago(now - item.due)}", style="bold red")
        else:
            left = f"in {out.ago(item.due - now)}"
        rows.append([item.id, item.owner, out.short(item.due, now), left])
    done = sum(1 for i in items if i.state == "done")
    skipped = sum(1 for i in items if i.state == "skipped")
    title = f"Checklist: {done} done, {skipped} skipped, {len(open_items)} open"
    if rows:
        out.table(title, ["step", "owner", "due", "left"], rows)
        if len(open_items) > len(rows):
            out.line(f"… and {len(open_items) - len(rows)} more later "
                     f"(incident status {view.id[-6:]} --json)")
    else:
        out.line(title)


@click.command(name="list")
@click.option("--all", "include_closed", is_flag=True, help="Include closed incidents.")
@click.option("--drills", is_flag=True, help="Drills only (they are left out otherwise).")
@pass_app
def list_(app: App, include_closed: bool, drills: bool) -> None:
    """Open incidents (all with --all), newest first; drills only with --drills."""
    _list(app, include_closed=include_closed, drills=drills)


def _list(app: App, *, include_closed: bool, drills: bool | None = None) -> None:
    results = app.response.queries.incidents(include_closed=include_closed)
    if drills is not None:
        results = [r for r in results if r.view.drill == drills]
    out = app.out
    if out.as_json:
        out.json([_status_json(r) for r in results])
        return
    if not results:
        what = "drills" if drills else "incidents"
        out.line(f"No open {what}." if not include_closed else f"No {what} recorded.")
        return
    rows = []
    for r in results:
        v = r.view
        due = out.when(v.next_update_due)
        counts = state_counts(r.counts)
        rows.append([v.id + (" (drill)" if v.drill else ""), v.title[:40], v.severity,
                     v.status.value, out.when(v.eta),
                     Text(due, style="bold red") if r.update_overdue else due,
                     f"{counts['sent']}/{sum(counts.values())}"
                     + (f" ({counts['failed']} failed)" if counts["failed"] else "")])
    out.table(None, ["id", "title", "sev", "status", "ETA", "next update", "sent"], rows)


@click.command()
@click.argument("incident_id", metavar="ID")
@click.option("--export", "export", type=click.Path(dir_okay=False, writable=True),
              help="Write the list as CSV for the manual-handling team.")
@click.option("--with-contacts", is_flag=True,
              help="Put full phone numbers and emails in the export (confidential).")
@pass_app
def failed(app: App, incident_id: str, export: str | None, with_contacts: bool) -> None:
    """Customers whose notices failed permanently (invalid number, unsubscribed, mailbox
    refused): hand them to the manual-handling team to call or serve at the counter.

    \b
    Example:
      incident failed 3F2A --export failed.csv
    """
    if with_contacts and not export:
        raise click.UsageError("--with-contacts goes with --export: full contacts are "
                               "written to the file only, never shown")
    rows = app.response.queries.failed_deliveries(incident_id)
    # What is shown (terminal, --json) is always masked; only the file gets full contacts.
    records = [_failure(r, full=False) for r in rows]
    if export:
        _export_failures(app.out, export, rows, with_contacts=with_contacts)
    _show_failures(app.out, records, export)


def _totals(by_channel: dict[str, dict[str, int]]) -> dict[str, int]:
    """Counts by state over every channel."""
    totals: dict[str, int] = {}
    for counts in by_channel.values():
        for state, n in counts.items():
            totals[state] = totals.get(state, 0) + n
    return totals


def _reach(result: StatusResult) -> dict[str, dict[str, int]]:
    """Per channel with receipts: customer messages accepted by the provider, and confirmed
    (delivered / answered) by its receipts."""
    from incident.models import CONFIRMED_STATES

    return {channel: {"accepted": result.counts.get(channel, {}).get("sent", 0),
                      "confirmed": sum(states.get(s.value, 0) for s in CONFIRMED_STATES)}
            for channel, states in sorted(result.receipts.items())}


def _receipts(out: Output, by_channel: dict[str, dict[str, int]]) -> None:
    """Delivery states after `sent` reported by the providers (receipts), by channel."""
    from incident.models import CONFIRMED_STATES, ReceiptState

    states = [s.value for s in ReceiptState if any(s.value in c for c in by_channel.values())]
    if states:
        out.table("After acceptance (provider receipts; confirmed: "
                  + ", ".join(sorted(CONFIRMED_STATES)) + ")", ["channel", *states],
                  [[channel, *(str(counts.get(s, 0)) for s in states)]
                   for channel, counts in sorted(by_channel.items())])


def _skipped_line(out: Output, skipped: int) -> None:
    """Why rows were never sent, and how an obligation is sent anyway."""
    if skipped:
        out.line(f"[yellow]{skipped} skipped: the number opted out (suppression list); "
                 "an obligation goes to them anyway after "
                 "incident optout override ID --reason \"...\"[/yellow]")


def _failure(row: Any, *, full: bool) -> dict[str, Any]:
    """One failed delivery as shown (contacts masked) or exported (`full`: as recorded)."""
    from incident.privacy import mask_contact, mask_name

    return {"notice": row.notice_seq, "channel": row.channel, "customer": row.recipient_ref,
            "name": row.recipient_name if full else mask_name(row.recipient_name),
            "to": row.address if full else mask_contact(row.address),
            "code": row.error_code or "", "error": row.last_error or "",
            "attempts": row.attempts, "state": row.state}


def _export_failures(out: Output, export: str, rows: list[Any], *, with_contacts: bool) -> None:
    """The failed deliveries as CSV for the manual-handling team."""
    from incident.privacy import spreadsheet_cell

    with writing(export), open(export, "w", newline="", encoding="utf-8-sig") as handle:
        # Every field quoted, and a cell a spreadsheet would run as a formula prefixed
        # with ' (OWASP CSV injection): names and errors come from outside.
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow(["notice", "channel", "customer", "name", "to", "code", "error",
                         "attempts", "state"])
        writer.writerows([spreadsheet_cell(v) for v in _failure(r, full=with_contacts).values()]
                         for r in rows)
    if with_contacts:
        out.warn(f"{export} holds full customer contacts: keep it confidential")


def _show_failures(out: Output, records: list[dict[str, Any]], export: str | None) -> None:
    """The failed deliveries (contacts masked) as a table or JSON."""
    if out.as_json:
        by_state: dict[str, int] = {}
        for record in records:
            by_state[record["state"]] = by_state.get(record["state"], 0) + 1
        out.json({"failed": len(records), "by_state": by_state, "export": export,
                  "deliveries": records})
        return
    if not records:
        out.line("No permanent delivery failures.")
        return
    out.table(f"{len(records)} permanent delivery failures", list(records[0]),
              [[str(v)[:60] for v in r.values()] for r in records])
    _skipped_line(out, sum(r["state"] == "skipped" for r in records))
    if export:
        out.line(f"Written to {safe(export)} ({len(records)} rows)")


COMMANDS = [status, list_, failed]
