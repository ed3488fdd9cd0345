"""Commands that keep the institution coordinated: step, ack, regulator, watch, warnings."""

from __future__ import annotations

import math
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.text import Text

from incident.cli.app import App
from incident.cli.lifecycle import party_reach, print_party_reach, settle, start, update
from incident.cli.output import Output, safe
from incident.cli.views import render_status
from incident.errors import BadInput, InvalidValue, PlaybookInvalid
from incident.timeutil import to_iso

if TYPE_CHECKING:  # the rest is imported where used: `incident --help` needs none of it
    from incident.cap import Decision
    from incident.checklist import Attention, Item
    from incident.playbooks import Playbook
    from incident.regulator import Draft
    from incident.state import IncidentView

pass_app = click.make_pass_decorator(App)


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
    outcome = app.service.coordination.step(incident_id, step_id, done=done, skip=skip, note=note)
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
            report = app.service.deliver(result.incident_id, progress=update)
        reach = party_reach(app, app.service.view(result.incident_id))
        if reach is not None and not out.as_json:
            print_party_reach(app, reach)
        settle(app, report, result.incident_id)  # exit 1 with the reason if left pending


def _items(app: App, incident_id: str) -> list[Item]:
    from incident.checklist import checklist

    return checklist(app.service.view(incident_id))


@click.command()
@click.argument("incident_id", metavar="ID")
@click.argument("party", metavar="PARTY")
@click.option("--note", help="Who confirmed, how.")
@pass_app
def ack(app: App, incident_id: str, party: str, note: str | None) -> None:
    """Record that PARTY (an id from incident.yaml parties) acknowledged the notice."""
    result = app.service.coordination.ack(incident_id, party, note=note)
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
        draft = app.service.coordination.regulator_draft(incident_id, duty=duty, lang=lang)
        view = app.service.view(incident_id)
        app.touch(view.id)
        _show_draft(app.out, view.id, draft)
        return
    if duty:
        raise InvalidValue("--duty goes with --draft")
    view = app.service.view(incident_id)
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
    recorded, and is sent to the parties of incident.yaml `alerts.parties`. Ctrl-C stops.
    """
    service, out = app.service, app.out
    app.reminded = True
    while True:
        ids = ([service.store.resolve_id(incident_id)] if incident_id else
               [r.view.id for r in service.incidents() if r.view.status.is_open
                or r.view.status.value == "resolved"])
        raised: dict[str, list[Attention]] = {}
        for ident in ids:
            view = service.view(ident)
            fresh = [a for a in service.coordination.attention(ident) if a.key not in view.alerted]
            if fresh:
                result = service.coordination.alert(ident, fresh)
                raised[ident] = fresh
                if result.internal:
                    service.deliver(ident)
        if out.as_json:
            out.json({"at": app.rt.clock.now().isoformat(), "alerts": {
                i: [{"level": a.level, "what": a.what, "at": a.at.isoformat()} for a in alerts]
                for i, alerts in raised.items()}, "watching": ids})
        else:
            if not once:
                out.console.clear()
            for ident in ids:
                render_status(app, service.status(ident))
            if not ids:
                out.line("No open incidents.")
            for ident, alerts in raised.items():
                out.err.bell()
                for a in alerts:
                    style = "bold red" if a.level == "overdue" else "yellow"
                    out.err.print(f"[{style}]ALERT[/{style}] {ident[-6:]}: {safe(a.what)}")
        if once:
            return
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return


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
@click.pass_context
def ingest(ctx: click.Context, app: App, file: str, branch_list: str | None,
           audience: str | None, start_it: bool, queue_only: bool) -> None:
    """Read a CAP 1.2 alert and decide whether it applies (status, msgType, urgency,
    severity, certainty, validity, area vs branch locations); print the matching playbook,
    the affected branches and customer counts — or start it with --start.

    \b
    Example:
      incident warnings ingest hko-typhoon-8.xml --start
    """
    from incident.branches import load_branches
    from incident.cap import decide, load_alert, update_messages, warning_record

    rt, out = app.rt, app.out
    listed = branch_list or rt.settings.branches
    if not listed:
        raise BadInput("deciding on a warning needs the branch list",
                       hint="give --branches FILE or set branches: in incident.yaml")
    branch_path = Path(branch_list) if branch_list else rt.path(listed)
    branches = load_branches(branch_path)
    alert = load_alert(Path(file))
    decision = decide(alert, now=app.rt.clock.now(), branches=branches, playbooks=_playbooks(app),
                      recorded=app.service.recorded_warnings())
    counts = _customer_counts(app, decision, audience)
    action = decision.action
    acting = start_it and (action == "update" or (action == "start"
                                                  and decision.playbook is not None))
    # With --json and --start, one document: the incident with the decision in it.
    _print_decision(app, decision, counts, file, defer=acting)
    short = decision.incident[-6:] if decision.incident else ""
    if not start_it:
        if action == "start" and decision.playbook is not None:
            out.next(f"incident warnings ingest {file} --start")
        elif action == "update":
            out.next(f"incident warnings ingest {file} --start  (updates {short})")
        elif action == "stand_down":
            out.next(f"incident resolve {short} --message \"...\"")
        return
    if action == "duplicate":
        return  # the same alert again (a feed read twice): nothing to record
    if action == "stand_down":
        raise BadInput(f"not starting: the alert in {file} cancels {decision.incident}",
                       hint=f"stand it down: incident resolve {short} --message \"...\"")
    if not acting:
        raise BadInput(f"not starting: the alert in {file} "
                       + ("needs a playbook for its event" if decision.applies
                          else "does not apply"),
                       hint="; ".join(decision.reasons[:3]))
    info = decision.info
    assert info is not None
    if action == "update":
        assert decision.incident is not None
        message, message_zh = update_messages(decision)
        ctx.invoke(update, incident_id=decision.incident, message=message,
                   message_zh=message_zh, eta=None, status=None, severity=decision.grade,
                   internal=False, to=(), queue_only=queue_only,
                   warning=warning_record(decision))
        return
    assert decision.playbook is not None
    # Detection is when the warning took effect (not when it was read here), if that is past.
    effective = info.effective or alert.sent
    detected = to_iso(effective) if effective <= app.rt.clock.now() else None
    ctx.invoke(start, playbook=decision.playbook.id,
               title=(info.headline or info.event)[:200], severity=decision.grade,
               eta=None, detected_at=detected, affected=(), region=(),
               branch=tuple(b.id for b in decision.branches), branch_list=str(branch_path),
               no_manual=False, audience=audience, drill=False, dry_run=False,
               queue_only=queue_only, warning=warning_record(decision))


def _playbooks(app: App) -> list[Playbook]:
    from incident.playbooks import load_playbook, playbook_files

    books = []
    for path in playbook_files(app.rt.playbook_path).values():
        try:
            books.append(load_playbook(path))
        except PlaybookInvalid as exc:
            app.out.warn(f"skipping playbook {path}: {exc.message}")
    return books


def _customer_counts(app: App, decision: Decision, audience: str | None) -> dict[str, int]:
    from incident.audience import load_audience

    if not decision.branches:
        return {}
    settings = app.rt.settings
    path = Path(audience) if audience else app.rt.path(
        settings.audiences[settings.default_audience])
    load = load_audience(path, default_language=settings.default_language,
                         default_region=settings.phone_region)
    wanted = {b.id.casefold() for b in decision.branches}
    counts: dict[str, int] = {b.id: 0 for b in decision.branches}
    for customer in load.customers:
        if customer.branch.casefold() in wanted:
            key = next(b.id for b in decision.branches
                       if b.id.casefold() == customer.branch.casefold())
            counts[key] += 1
    return counts


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
