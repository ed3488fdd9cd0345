"""`incident replies [ID]`: what customers answered (SMS and key presses), masked."""

from __future__ import annotations

import click

from incident.cli.app import App, pass_app


@click.command()
@click.argument("incident_id", metavar="[ID]", required=False)
@pass_app
def replies(app: App, incident_id: str | None) -> None:
    """Customers' replies to incident ID (all incidents, and the unmatched, without ID):
    time, masked number, kind (callback, stop, text), the case it made.

    \b
    Example:
      incident replies 7Q2K
    """
    from incident.privacy import mask_phone, scrub

    result = app.response.replies.list(incident_id)
    rows = [{"time": r.received_at.isoformat(timespec="seconds"),
             "number": mask_phone(r.number), "source": r.source, "kind": r.kind,
             "case": r.case_id, "incident": r.incident_id, "customer": r.recipient_ref,
             "text": scrub(r.body)} for r in result.rows]
    if app.out.as_json:
        app.out.json({"replies": rows})
    elif rows:
        app.out.table(f"{len(rows)} replies", ["time", "number", "kind", "case", "incident"],
                      [[r["time"], r["number"], r["kind"], r["case"] or "",
                        (r["incident"] or "unmatched")[-6:]] for r in rows])
    else:
        app.out.line("No replies.")
    app.conclude(result)


COMMANDS = [replies]
