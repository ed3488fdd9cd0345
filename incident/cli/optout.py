"""`incident optout add | remove | list | override`: the suppression list."""

from __future__ import annotations

import click

from incident.cli.app import App, pass_app


@click.group()
def optout() -> None:
    """Numbers that opted out of SMS and calls: later notices skip them (status and failed
    say so) unless an incident overrides the list."""


@optout.command()
@click.argument("phone")
@click.option("--reason", required=True, help="Why (e.g. the customer asked at a branch).")
@pass_app
def add(app: App, phone: str, reason: str) -> None:
    """Put PHONE on the suppression list.

    \b
    Example:
      incident optout add +85291230004 --reason "asked by phone"
    """
    result = app.response.optouts.add(phone, reason=reason)
    _listed(app, result.number, result.changed, "added to", "already on")
    app.conclude(result)


@optout.command()
@click.argument("phone")
@pass_app
def remove(app: App, phone: str) -> None:
    """Take PHONE off the suppression list (who listed and who removed it are kept)."""
    result = app.response.optouts.remove(phone)
    _listed(app, result.number, result.changed, "removed from", "not on")
    app.conclude(result)


@optout.command(name="list")
@pass_app
def list_(app: App) -> None:
    """The numbers on the suppression list (masked), with time and source."""
    from incident.privacy import mask_phone, scrub

    result = app.response.optouts.list()
    rows = [{"number": mask_phone(r.address), "source": r.source,
             "reason": scrub(r.reason or ""), "by": r.actor or "",
             "since": r.added_at.isoformat()} for r in result.rows]
    if app.out.as_json:
        app.out.json({"suppressed": len(rows), "numbers": rows})
    elif rows:
        app.out.table(f"{len(rows)} numbers on the suppression list", list(rows[0]),
                      [list(r.values()) for r in rows])
    else:
        app.out.line("The suppression list is empty.")
    app.conclude(result)


@optout.command()
@click.argument("incident_id", metavar="ID")
@click.option("--reason", required=True, help="Why these notices must reach everyone.")
@pass_app
def override(app: App, incident_id: str, reason: str) -> None:
    """Send incident ID's notices to suppressed numbers too (recorded with the reason); its
    skipped messages go with the next `incident deliver`.

    \b
    Example:
      incident optout override 3F2A --reason "regulatory notice"
    """
    result = app.response.optouts.override(incident_id, reason=reason)
    if app.out.as_json:
        app.out.json({"id": result.incident_id, "seq": result.seq, "requeued": result.requeued})
    else:
        app.out.line(f"{result.incident_id}: opt-outs overridden (event {result.seq}); "
                     f"{result.requeued} skipped messages pending again")
    app.conclude(result)


def _listed(app: App, number: str, changed: bool, done: str, already: str) -> None:
    from incident.privacy import mask_phone

    shown = mask_phone(number)
    if app.out.as_json:
        app.out.json({"number": shown, "changed": changed})
    else:
        app.out.line(f"{shown} {done if changed else already} the suppression list")


COMMANDS = [optout]
