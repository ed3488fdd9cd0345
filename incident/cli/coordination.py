"""Commands that keep the institution coordinated: step, ack, regulator, watch, warnings."""

from __future__ import annotations

import math
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.text import Text

from incident.cli.app import App, pass_app
from incident.cli.lifecycle import (
    party_reach,
    print_party_reach,
    settle,
    show_started,
    show_updated,
)
from incident.cli.output import Output, safe
from incident.cli.views import render_status
from incident.errors import InvalidValue

if TYPE_CHECKING:  # the rest is imported where used: `incident --help` needs none of it
    from incident.cap import Decision
    from incident.checklist import Item
    from incident.regulator import Draft
    from incident.response.results import AlertRound
    from incident.state import IncidentView


@click.command()
@click.argument("incident_id", metavar="ID")
@click.argument("step_id", metavar="STEP")
@click.option("--done", is_flag=True, help="Done (runs the step's action if not yet run).")
@click.option("--skip", metavar="REASON", help="Not done, and why.")
@click.option("--note", help="A note with --done (e.g. who was reached).")
@pass_app
def step(app: App, incident_id: str, step_id: str, done: bool, skip: str | None,
         note: str | None) -> None:
    """Mark a checklist STEP (or regulator duty) done or skipped.

    A step whose playbook action has not run yet runs it: open_manual_channel opens the
    manual channel, notify_parties sends the internal notice. A recurring regulator duty
    (e.g. progress every 2 h) is marked done once per report filed.

    \b
    Example:
      incident step 3F2A nfra-first-report --done --note "Phoned the NFRA duty officer"
    """
    outcome = app.response.coordination.step(incident_id, step_id, done=done, skip=skip, note=note)
    result = outcome.result
    app.touch(result.incident_id)
    item = next((i for i in _items(app, result.incident_id) if i.id == outcome.item.id),
                outcome.item)
    out = app.out
    if out.as_json:
        out.json({"id": result.incident_id, "step": item.id, "state": item.state,
                  "ran": outcome.ran, "next_due": item.due.isoformat() if item.due else None,
                  "internal_messages": result.internal or (result.messages if outcome.ran ==
                                                           "notify_parties" else 0)})
    else:
        ran = {"open_manual_channel": " — manual channel opened",
               "notify_parties": " — internal notice to the parties queued"}.get(
                   outcome.ran or "", "")
        out.line(f"Step {safe(item.id)} {'skipped' if skip else 'done'}{ran}.")
        if item.every and item.due:
            out.line(f"Next {safe(item.id)} due {out.when(item.due)}.")
    if outcome.ran == "notify_parties" and result.messages:
        with app.out.progress(result.messages, "Notifying parties") as update:
            sent = app.response.sending.send(result, progress=update)
        reach = party_reach(app, app.response.queries.view(result.incident_id))
        if reach is not None and not out.as_json:
            print_party_reach(app, reach)
        settle(app, sent)  # exit 1 with the reason if left pending


def _items(app: App, incident_id: str) -> list[Item]:
    from incident.checklist import checklist

    return checklist(app.response.queries.view(incident_id))


@click.command()
@click.argument("incident_id", metavar="ID")
@click.argument("party", metavar="PARTY")
@click.option("--note", help="Who confirmed, how.")
@pass_app
def ack(app: App, incident_id: str, party: str, note: str | None) -> None:
    """Record that PARTY (an id from incident.yaml parties) acknowledged the notice."""
    result = app.response.coordination.ack(incident_id, party, note=note)
    app.touch(result.incident_id)
    view = result.view
    waiting = [p for n in view.party_notices for p in n.parties if p not in view.acks]
    waiting = list(dict.fromkeys(waiting))
    if app.out.as_json:
        app.out.json({"id": view.id, "party": party, "acknowledged": sorted(view.acks),
                      "waiting": waiting})
        return
    app.out.line(f"{safe(party)} acknowledged on {view.id}.")
    if waiting:
        app.out.line(f"Still waiting for: {safe(', '.join(waiting))}")


@click.command()
@click.argument("incident_id", metavar="ID")
@click.option("--duty", metavar="DUTY", help="Which duty (default: the next due).")
@click.option("--draft", "as_draft", is_flag=True,
              help="Print the report's fields filled from the record.")
@click.option("--lang", type=click.Choice(["zh-CN", "en"]), help="Language of the draft.")
@pass_app
def regulator(app: App, incident_id: str, duty: str | None, as_draft: bool,
              lang: str | None) -> None:
    """The regulator reporting duties with their countdown, or (--draft) a report's fields
    filled from the record: time, place, symptoms, affected business, cause, measures, next
    steps, contact. File it, then: incident step ID DUTY --done.

    \b
    Example:
      incident regulator 3F2A --draft --lang zh-CN
    """
    if as_draft:
        draft = app.response.coordination.regulator_draft(incident_id, duty=duty, lang=lang)
        view = app.response.queries.view(incident_id)
        app.touch(view.id)
        _show_draft(app.out, view.id, draft)
        return
    if duty:
        raise InvalidValue("--duty goes with --draft")
    view = app.response.queries.view(incident_id)
    app.touch(view.id)
    items = [i for i in _items(app, view.id) if i.kind == "duty"]
    _show_duties(app.out, view, items, app.rt.clock.now())


def _show_draft(out: Output, incident_id: str, draft: Draft) -> None:
    """A regulator report's fields filled from the record, as a table or JSON."""
    if out.as_json:
        out.json({"id": incident_id, "duty": draft.duty.id, "lang": draft.lang,
                  "due": draft.duty.due.isoformat() if draft.duty.due else None,
                  "fields": {key: text for key, _label, text in draft.fields}})
        return
    out.table(f"Draft regulator report — {incident_id} — {draft.duty.id}", ["field", "text"],
              [[label, text] for _key, label, text in draft.fields])
    out.next(f"incident step {incident_id[-6:]} {draft.duty.id} --done  (once filed)")


def _show_duties(out: Output, view: IncidentView, items: list[Item], now: datetime) -> None:
    """The regulator duties at the incident's grade with their countdown, as a table or JSON."""
    if out.as_json:
        out.json({"id": view.id, "severity": view.severity, "duties": [
            {"id": i.id, "state": i.state, "due": i.due.isoformat() if i.due else None,
             "overdue": i.overdue(now), "every": str(i.every) if i.every else None,
             "reports_filed": sum(1 for m in i.marks if m.state == "done"), "to": i.body,
             "source": i.source} for i in items]})
        return
    out.table(f"Regulator duties of {view.id} at grade {view.severity}",
              ["duty", "due", "left", "state", "filed"],
              [[i.id, out.short(i.due, now), _left(out, i, now), i.state,
                sum(1 for m in i.marks if m.state == "done")] for i in items])
    out.next(f"incident regulator {view.id[-6:]} --draft")


def _left(out: Output, item: Item, now: datetime) -> str | Text:
    if item.due is None or item.state != "open":
        return "—"
    if item.due < now:
        return Text(f"OVERDUE {out.ago(now - item.due)}", style="bold red")
    return out.ago(item.due - now)


def _finite(value: float) -> float:
    """NaN passes every range check: refuse it by name."""
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds")
    return value


@click.command()
@click.argument("incident_id", metavar="[ID]", required=False)
@click.option("--interval", default=30.0, show_default=True,
              type=click.FloatRange(min=1, max=86400), callback=lambda _c, _p, v: _finite(v),
              help="Seconds between refreshes (1 to 86400).")
@click.option("--once", is_flag=True, help="Check once and exit (for cron and scripts).")
@pass_app
def watch(app: App, incident_id: str | None, interval: float, once: bool) -> None:
    """Keep the status on screen and alert when something falls due: a customer update, a
    passed ETA, a step or a regulator deadline. Each alert rings the terminal bell, is
    recorded, and is sent to the parties of incident.yaml `alerts.parties`. Each round also
    applies due escalations (as `incident escalate`). Ctrl-C stops.
    """
    app.reminded = True
    while True:
        found = app.response.coordination.raise_alerts(incident_id)
        unsent = []
        for alert in found.recorded:  # left pending: status shows it, the next round too
            problem = app.response.sending.send(alert).problem
            if problem is not None:
                unsent.append(f"{alert.incident_id[-6:]}: alert to the parties: {problem.message}")
        escalated = app.response.escalate(incident_id)
        if escalated.problem is not None:
            unsent.append(f"escalation: {escalated.problem.message}")
        _show_round(app, found, unsent, escalated.lines(), clear=not once)
        if once:
            return
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return


def _show_round(app: App, found: AlertRound, unsent: list[str], escalated: list[str], *,
                clear: bool) -> None:
    """One round of `watch`: the status of each incident watched, then its alerts (with the
    bell), the escalations applied and the alert messages that could not be sent."""
    out, ids, raised = app.out, found.watching, found.raised
    if out.as_json:
        out.json({"at": app.rt.clock.now().isoformat(), "alerts": {
            i: [{"level": a.level, "what": a.what, "at": a.at.isoformat()} for a in alerts]
            for i, alerts in raised.items()}, "watching": ids, "unsent": unsent,
            "escalated": escalated, "rollcall": {
                i: app.response.status(i).rollcall for i in ids}})
        return
    if clear:
        out.console.clear()
    for ident in ids:
        render_status(app, app.response.status(ident))
    if not ids:
        out.line("No open incidents.")
    for ident, alerts in raised.items():
        out.err.bell()
        for a in alerts:
            style = "bold red" if a.level == "overdue" else "yellow"
            out.err.print(f"[{style}]ALERT[/{style}] {ident[-6:]}: {safe(a.what)}")
    for line in escalated:
        out.line(line)
    for line in unsent:
        out.warn(line)


@click.group()
def warnings() -> None:
    """Natural-disaster warnings (OASIS CAP 1.2)."""


@warnings.command("ingest")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--branches", "branch_list", metavar="FILE", type=click.Path(dir_okay=False),
              help="Branch list CSV (default: the config's branches).")
@click.option("--audience", metavar="FILE", type=click.Path(dir_okay=False),
              help="Customer CSV to count affected customers (default: the config's).")
@click.option("--start", "start_it", is_flag=True,
              help="Start the matching playbook for the affected branches.")
@click.option("--queue-only", is_flag=True, help="With --start: record without sending.")
@pass_app
def ingest(app: App, file: str, branch_list: str | None,
           audience: str | None, start_it: bool, queue_only: bool) -> None:
    """Read a CAP 1.2 alert and decide whether it applies (status, msgType, urgency,
    severity, certainty, validity, area vs branch locations); print the matching playbook,
    the affected branches and customer counts — or start it with --start.

    \b
    Example:
      incident warnings ingest hko-typhoon-8.xml --start
    """
    from incident.response.results import StartResult

    assessed = app.response.warnings.assess(Path(file), branch_list=branch_list,
                                            audience=audience)
    app.conclude(assessed)  # the playbooks skipped
    # With --json and --start, one document: the incident with the decision in it.
    _print_decision(app, assessed.decision, assessed.counts, file,
                    defer=start_it and assessed.acts)
    if not start_it:
        _next_after_decision(app, assessed.decision, file)
        return
    result = app.response.act_on_warning(assessed, queue_only=queue_only)
    if isinstance(result, StartResult):
        show_started(app, result, queue_only)
    elif result is not None:
        show_updated(app, result, queue_only)


def _next_after_decision(app: App, decision: Decision, file: str) -> None:
    short = decision.incident[-6:] if decision.incident else ""
    if decision.action == "start" and decision.playbook is not None:
        app.out.next(f"incident warnings ingest {file} --start")
    elif decision.action == "update":
        app.out.next(f"incident warnings ingest {file} --start  (updates {short})")
    elif decision.action == "stand_down":
        app.out.next(f"incident resolve {short} --message \"...\"")


def _print_decision(app: App, decision: Decision, counts: dict[str, int], file: str, *,
                    defer: bool = False) -> None:
    out, alert, info = app.out, decision.alert, decision.subject
    if out.as_json:
        data = {"file": file, "identifier": alert.identifier, "sender": alert.sender,
                "status": alert.status, "msg_type": alert.msg_type,
                "applies": decision.applies, "action": decision.action,
                "reasons": decision.reasons,
                "event": info.event if info else None,
                "headline": info.headline if info else None,
                "playbook": decision.playbook.id if decision.playbook else None,
                "grade": decision.grade,
                "branches": [{"id": b.id, "name": b.name, "region": b.region,
                              "customers": counts.get(b.id, 0)} for b in decision.branches],
                "customers": sum(counts.values()),
                "references": alert.referenced_identifiers(), "incident": decision.incident}
        if defer:
            out.json_extra["warning"] = data
        else:
            out.json(data)
        return
    verdict = {"start": "[bold red]APPLIES[/bold red] — start the playbook",
               "update": f"[bold red]UPDATE[/bold red] of {decision.incident}",
               "stand_down": f"[bold yellow]CANCEL[/bold yellow] — stand down "
                             f"{decision.incident}",
               "duplicate": f"[green]already recorded[/green] on {decision.incident}",
               "ignore": "[green]does not apply[/green]"}[decision.action]
    out.line(f"{safe(alert.identifier)} ({alert.status} {alert.msg_type} from "
             f"{safe(alert.sender)}): {verdict}")
    if info:
        out.line(f"{safe(info.event)}: {safe(info.headline)}")
    for reason in decision.reasons:
        out.line(f"  · {safe(reason)}")
    if decision.playbook is not None:
        out.line(f"Playbook: {safe(decision.playbook.id)}"
                 + (f" at grade {safe(decision.grade)}" if decision.grade else ""))
    if decision.branches:
        lang = app.rt.settings.default_language
        out.table(f"Affected branches ({sum(counts.values())} customers)",
                  ["branch", "name", "region", "customers"],
                  [[b.id, b.label(lang), b.region, counts.get(b.id, 0)]
                   for b in decision.branches])


COMMANDS = [step, ack, regulator, watch, warnings]
