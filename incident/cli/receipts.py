"""`incident receipts serve | poll`: delivery receipts from Twilio."""

from __future__ import annotations

import sys

import click

from incident.cli.app import App, pass_app
from incident.cli.monitoring import metrics_options, serve_metrics


@click.group()
def receipts() -> None:
    """Delivery receipts: what Twilio reports after accepting an SMS or call."""


@receipts.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free one, printed).")
@metrics_options
@pass_app
def serve(app: App, host: str, port: int, metrics_port: int | None, metrics_host: str) -> None:
    """Take Twilio's status callbacks at <receipts.public_url>/twilio/status until Ctrl-C or
    SIGTERM; each is recorded before it is answered. Due escalations are applied every
    receipts.escalate_every meanwhile. --metrics-port serves Prometheus metrics on a port of
    their own (not the public one Twilio calls)."""
    serve_metrics(app, metrics_host, metrics_port)

    def ready(bound_host: str, bound_port: int) -> None:
        if app.out.as_json:
            app.out.json({"listening": f"http://{bound_host}:{bound_port}/twilio/status"})
        else:
            app.out.line(f"Listening on http://{bound_host}:{bound_port}/twilio/status "
                         "(Ctrl-C stops)")
        sys.stdout.flush()  # a supervisor (or a test) waits for this line

    app.conclude(app.response.serve_receipts(host=host, port=port, ready=ready))


@receipts.command()
@click.argument("incident_id", metavar="[ID]", required=False)
@click.option("--until", "until", default="10m", show_default=True, metavar="DURATION",
              help="Stop after this long even if some are still unsettled.")
@pass_app
def poll(app: App, incident_id: str | None, until: str) -> None:
    """Ask Twilio for the status of every accepted, unsettled SMS and call, at the configured
    rate, until all are settled or the time is up."""
    from incident.errors import InvalidValue
    from incident.timeutil import parse_duration

    try:
        limit = parse_duration(until).total_seconds()
    except InvalidValue as exc:
        raise click.BadParameter(str(exc), param_hint="--until") from exc
    result = app.response.poll_receipts(incident_id, until=limit)
    report = result.report
    if app.out.as_json:
        app.out.json({"requests": report.requests, "changed": report.changed,
                      "unsettled": report.unsettled, "replies": report.replies,
                      "errors": report.errors})
    else:
        app.out.line(f"Asked {report.requests}, settled or changed {report.changed}, "
                     f"still unsettled {report.unsettled}, replies {report.replies}")
        for error in report.errors[:10]:
            app.out.warn(error)
    app.conclude(result)


@click.command()
@click.argument("incident_id", metavar="[ID]", required=False)
@pass_app
def escalate(app: App, incident_id: str | None) -> None:
    """Apply due escalations (the playbook's `escalation:` steps) to one incident or all:
    messages not confirmed in time go out on the next channel, or become call-back cases.

    \b
    Example:
      incident escalate 7Q2K
    """
    result = app.response.escalate(incident_id)
    rows = [{"incident": i, **e.model_dump(mode="json")}
            for i, each in result.done.items() for e in each]
    if app.out.as_json:
        app.out.json({"escalations": rows, "messages": result.messages, "cases": result.cases})
    else:
        for line in result.lines():
            app.out.line(line)
        app.out.line(f"Escalated: {result.messages} messages, {result.cases} call-back cases")
    app.conclude(result)


COMMANDS = [receipts, escalate]
