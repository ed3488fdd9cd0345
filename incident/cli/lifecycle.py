"""Commands that change an incident: start, update, eta, resolve, close, deliver."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from incident.cli.app import App, pass_app
from incident.cli.monitoring import metrics_options, serve_metrics
from incident.cli.output import safe, state_counts
from incident.cli.record import describe_reroute
from incident.errors import Location
from incident.timeutil import format_duration

if TYPE_CHECKING:  # `incident --help` must not import the use cases and what they pull in
    from incident.response.results import DryRunPlan, NoticeResult, SendResult, StartResult
    from incident.state import IncidentView

queue_only = click.option("--queue-only", is_flag=True,
                          help="Record the notice without sending; `incident deliver` sends.")


def _short(incident_id: str) -> str:
    return incident_id.rsplit("-", 1)[-1]


def _send(app: App, result: NoticeResult, queue: bool) -> SendResult:
    """Send the notice just recorded in the foreground (a progress bar), unless queued for
    workers; the whole notice is recorded when this returns (response/sending.py)."""
    total = 0 if queue else result.messages + result.internal
    if not total:
        return app.response.sending.send(result, queue_only=True)
    with app.out.progress(total, f"Sending notice #{result.seq}") as update:
        return app.response.sending.send(result, progress=update)


def _finish(app: App, result: NoticeResult, sent: SendResult,
            extra: dict[str, Any] | None = None) -> None:
    """Print the outcome (table or JSON), then end as the send's result says (exit 1 with
    messages left unsent, 3 when some failed permanently)."""
    view, report = result.view, sent.report
    app.touch(result.incident_id)
    for note in result.notes:  # e.g. the first notice, completed after a crash
        app.out.warn(note)
    status = app.response.queries.status(result.incident_id)
    reach = party_reach(app, view) if result.internal else None
    payload = {"id": view.id, "status": view.status.value, "severity": view.severity,
               "eta": view.eta.isoformat() if view.eta else None,
               "next_update_due": (view.next_update_due.isoformat()
                                   if view.next_update_due else None),
               "notice": ({"seq": result.seq, "phase": result.phase.value,
                           "messages": result.messages} if result.phase else None),
               "deliveries": state_counts(status.counts),
               "deliveries_by_channel": status.counts,
               "internal_deliveries": state_counts(status.internal_counts),
               "parties_reached": reach[0] if reach else [],
               "waiting": report.waiting_json() if report else [], **(extra or {})}
    out = app.out
    if out.as_json:
        out.json(payload)
    else:
        if result.phase:
            out.line(f"Notice #{result.seq} ({result.phase.value}): {result.messages} messages "
                     "recorded" + (" and queued" if report is None else ""))
        out.deliveries(status.counts)
        if reach is not None:
            print_party_reach(app, reach)
        if app.rt.settings.channels.email.transport == "file" and result.messages:
            out.line(f"Files written under {safe(app.rt.outbox_dir / view.id)}")
    for note in app.response.page.published():  # status_page.publish: a warning at most
        out.warn(note)
    settle(app, sent)


def party_reach(app: App, view: IncidentView) -> tuple[list[str], list[str]] | None:
    """The parties of the incident's latest internal notice: those a message reached, and
    those still queued (None: no internal notice)."""
    if not view.party_notices:
        return None
    notice = view.party_notices[-1]
    done = app.response.queries.reached_parties(view.id, notice.seq)
    return ([p for p in notice.parties if p in done],
            [p for p in notice.parties if p not in done])


def print_party_reach(app: App, reach: tuple[list[str], list[str]]) -> None:
    """`Parties reached: … · not yet (queued): …` — never 'notified' before they were."""
    reached, waiting = reach
    app.out.line("Parties reached: " + (safe(_party_names(app, reached)) or "none")
                 + (f"  ·  not yet (queued): {safe(_party_names(app, waiting))}"
                    if waiting else ""))


def settle(app: App, sent: SendResult) -> None:
    """List permanent failures, then end as the result says (App.conclude)."""
    report = sent.report
    if report is not None and report.failed and sent.incident_id:
        _list_failures(app, sent.incident_id)
    app.conclude(sent)


def _list_failures(app: App, incident_id: str) -> None:
    from incident.privacy import mask_contact, mask_name

    failures = app.response.queries.failed_deliveries(incident_id)
    app.out.table(f"{len(failures)} permanent delivery failures (give these customers to the "
                  "manual-handling team)", ["notice", "channel", "customer", "name", "to",
                                            "code", "error"],
                  [[f.notice_seq, f.channel, f.recipient_ref, mask_name(f.recipient_name),
                    mask_contact(f.address), f.error_code or "", (f.last_error or "")[:60]]
                   for f in failures[:20]])


@click.command()
@click.argument("playbook")
@click.option("--title", required=True, help="What is happening, in a few words.")
@click.option("--title-zh", help="The title in Simplified Chinese (zh-CN customers; converted "
              "for zh-HK ones unless --title-zh-hk is given; default: the playbook's name).")
@click.option("--title-zh-hk", help="The title in Traditional Chinese for zh-HK customers.")
@click.option("--severity", help="Grade from the playbook (default: the playbook's default).")
@click.option("--eta", metavar="WHEN", help="Estimated recovery: 90m, 2h, 14:30, ISO time.")
@click.option("--detected-at", metavar="TIME", help="When it was detected (default: now).")
@click.option("--affected", multiple=True, metavar="SERVICE", help="Affected service (repeat).")
@click.option("--region", multiple=True, metavar="R",
              help="Affected region: its customers are notified, its branches closed (repeat).")
@click.option("--branch", multiple=True, metavar="B",
              help="Affected branch: its customers are notified, it is closed (repeat).")
@click.option("--branches", "branch_list", metavar="FILE", type=click.Path(dir_okay=False),
              help="Branch list CSV (id,name,region,latitude,longitude; default: the "
                   "config's branches).")
@click.option("--no-manual-channel", "no_manual", is_flag=True,
              help="Do not open the manual channel yet (incident manual open, later).")
@click.option("--audience", metavar="FILE", type=click.Path(dir_okay=False),
              help="Customer CSV, or an audience named in the config (default: the "
                   "config's default audience).")
@click.option("--drill", is_flag=True, help="An exercise: only the drill audience is notified.")
@click.option("--dry-run", is_flag=True,
              help="Render and count everything; record and send nothing.")
@queue_only
@pass_app
def start(app: App, playbook: str, title: str, title_zh: str | None, title_zh_hk: str | None,
          severity: str | None, eta: str | None,
          detected_at: str | None, affected: tuple[str, ...], region: tuple[str, ...],
          branch: tuple[str, ...], branch_list: str | None, no_manual: bool,
          audience: str | None, drill: bool, dry_run: bool, queue_only: bool) -> None:
    """Declare an incident from PLAYBOOK and send the first customer notice.

    \b
    Example:
      incident start core-banking-outage --title "Core banking unavailable" \\
          --severity II --eta 2h --detected-at 09:40
    """
    from incident.response.results import DryRunPlan, StartResult

    result = app.response.lifecycle.start(
        playbook=playbook, title=title, title_zh=title_zh, title_zh_hk=title_zh_hk,
        severity=severity, eta=eta, detected_at=detected_at,
        affected=affected, regions=region, branches=branch, branch_list=branch_list,
        manual=False if no_manual else None, audience=audience, drill=drill, dry_run=dry_run,
        queue_only=queue_only)
    if isinstance(result, DryRunPlan):
        _print_plan(app, result)
        return
    assert isinstance(result, StartResult)
    show_started(app, result, queue_only)


def show_started(app: App, result: StartResult, queue_only: bool) -> None:
    """What a start recorded, then its notice sent (or queued) and the outcome. An audience
    still being read when the notice was recorded is described once read (after the send)."""
    late = result.counting
    try:
        _print_declared(app, result)
    except BaseException:  # Ctrl-C: the whole notice is recorded all the same
        app.response.sending.finish_start(result)
        raise
    view = result.view
    sent = _send(app, result, queue_only)
    if late and not app.out.as_json:
        _print_audience(app, result.audience_path, result.recipients, result.skipped_rows,
                        result.partial_rows, result.unreachable)
    _finish(app, result, sent, {
        "audience": {"file": result.audience_path, "recipients": result.recipients,
                     "skipped_rows": len(result.skipped_rows),
                     "partial_rows": len(result.partial_rows),
                     "unreachable": result.unreachable, "problems": _problems(result)},
        "drill": view.drill, "manual_channel": view.manual_open,
        "parties": view.party_notices[0].parties if view.party_notices else [],
        "branches": view.scope})
    short = _short(result.incident_id)
    app.out.next(f"incident update {short} --message \"...\"", f"incident status {short}")


def _print_declared(app: App, result: StartResult) -> None:
    out, view = app.out, result.view
    book = view.playbook
    if out.as_json:
        return
    drill = "[bold magenta]DRILL[/bold magenta] " if view.drill else ""
    names = safe(f"{book.name.en} / {book.name.zh_CN}")
    out.line(f"{drill}Declared [bold]{view.id}[/bold] — {names}, "
             f"severity {view.severity}, {view.status.value}")
    deadline = format_duration(book.principles.fast_response.first_notice_within)
    out.line(f"ETA {out.when(view.eta)}  ·  next customer update due "
             f"{out.when(view.next_update_due)}  ·  first notice due within {deadline} of "
             "detection")
    if not result.counting:
        _print_audience(app, result.audience_path, result.recipients, result.skipped_rows,
                        result.partial_rows, result.unreachable)
    lang = app.rt.settings.default_language
    closed = [b["name"] if lang == "zh-CN" else b.get("name_en") or b["name"]
              for b in view.scope.get("closed", [])]
    if closed:
        near = ", ".join(b["name"] if lang == "zh-CN" else b.get("name_en") or b["name"]
                         for b in view.scope.get("open", []))
        out.line(f"Branches closed: {safe(', '.join(closed))}"
                 + (f"  ·  open nearby: {safe(near)}" if near else ""))
    out.line("Manual channel: " + ("open, announced in the notice" if view.manual_open else
                                   f"not open — incident manual open {view.id[-6:]}"))
    if view.party_notices:
        out.line(f"Parties: {safe(_party_names(app, view.party_notices[0].parties))} "
                 "(internal notice queued)")
    missing = [p for p in book.principles.coordination.parties
               if p not in app.rt.settings.parties]
    if missing:
        out.warn(f"playbook parties not in incident.yaml, not notified: {', '.join(missing)}")


def _print_audience(app: App, path: str, recipients: int,
                    skipped: list[tuple[Location, str]], partial: list[tuple[Location, str]],
                    unreachable: int) -> None:
    """The audience line, then each skipped row and each row kept without a bad contact (a
    customer notified on fewer channels), the first 10 of each; never silently."""
    out = app.out
    out.line(f"Audience {safe(path)}: {recipients} customers affected"
             + (f", {len(skipped)} rows skipped" if skipped else "")
             + (f", {len(partial)} notified without a bad contact" if partial else ""))
    for what, problems in (("skipped", skipped), ("contact not used", partial)):
        for location, message in problems[:10]:
            out.warn(f"{what} {location}: {message}")
        if len(problems) > 10:
            out.warn(f"... and {len(problems) - 10} more ({what})")
    if unreachable:
        out.warn(f"{unreachable} affected customers have no usable contact on this notice's "
                 "channels: give them to the manual-handling team")


def _problems(result: StartResult) -> list[dict[str, Any]]:
    """The audience's row problems for --json (the first ones of each kind, as printed):
    where, what, and whether the row was skipped or kept without that contact."""
    return [{"file": location.file, "line": location.line, "field": location.field,
             "message": message, "row": row}
            for row, problems in (("skipped", result.skipped_rows),
                                  ("kept", result.partial_rows))
            for location, message in problems]


def _party_names(app: App, parties: list[str]) -> str:
    lang = app.rt.settings.default_language
    return ", ".join(app.rt.settings.parties[p].name.get(lang) for p in parties)


def _print_plan(app: App, plan: DryRunPlan) -> None:
    out = app.out
    if out.as_json:
        out.json({"dry_run": True, "playbook": plan.playbook.id, "audience": plan.audience_path,
                  "recipients": plan.recipients, "messages": plan.messages, "sms": plan.sms,
                  "estimated_seconds": plan.estimated_seconds, "calls": plan.calls,
                  "skipped_rows": [f"{loc}: {msg}" for loc, msg in plan.skipped_rows],
                  "partial_rows": [f"{loc}: {msg}" for loc, msg in plan.partial_rows],
                  "unreachable": plan.unreachable})
        return
    out.line(f"Dry run of {safe(plan.playbook.id)}: nothing recorded, nothing sent.")
    _print_audience(app, plan.audience_path, plan.recipients, plan.skipped_rows,
                    plan.partial_rows, plan.unreachable)
    rows = [[channel, lang, n] for channel, by_lang in sorted(plan.messages.items())
            for lang, n in sorted(by_lang.items())]
    out.table("Messages", ["channel", "language", "messages"], rows)
    out.table("SMS as each recipient's message renders",
              ["language", "encoding", "longest (units)", "messages by segments"],
              [[lang, s["encoding"], s["units"],
                "  ".join(f"{n}: {count}" for n, count in s["messages"].items())]
               for lang, s in plan.sms.items()])
    if plan.calls:
        out.table("Calls (the notice read twice)", ["language", "calls", "each call (about)"],
                  [[lang, c["calls"], format_duration_s(c["seconds"])]
                   for lang, c in plan.calls.items()])
    for lang, s in plan.sms.items():
        if "ucs2_names" in s:
            _print_ucs2_names(app, lang, s["ucs2_names"])
    out.table("Estimated send time at the configured rates", ["channel", "time"],
              [[c, format_duration_s(s)] for c, s in plan.estimated_seconds.items()])


def _print_ucs2_names(app: App, lang: str, names: dict[str, Any]) -> None:
    """The customers whose name alone makes their SMS in `lang` UCS-2 (more segments)."""
    listed = ", ".join(f"{c['customer']} ({c['characters'] or 'ref'}: "
                       f"{c['segments']} segments)" for c in names["listed"])
    more = names["customers"] - len(names["listed"])
    app.out.warn(f"{names['customers']} {lang} SMS become UCS-2 (70 characters a segment, not "
                 f"160) because of characters outside GSM-7 in the customer's name: {listed}"
                 + (f" and {more} more" if more > 0 else ""))


def format_duration_s(seconds: float) -> str:
    """Seconds as a short human duration."""
    return f"{seconds:.1f}s" if seconds < 60 else f"{seconds / 60:.1f} min"


@click.command()
@click.argument("incident_id", metavar="ID")
@click.option("--message", "-m", required=True, help="What changed (goes into the notice).")
@click.option("--message-zh", help="The message in Simplified Chinese (zh-CN customers; "
              "converted to Traditional for zh-HK ones unless --message-zh-hk is given).")
@click.option("--message-zh-hk", help="The message in Traditional Chinese for zh-HK customers.")
@click.option("--eta", metavar="WHEN", help="A new ETA along with the update.")
@click.option("--status", type=click.Choice(["investigating", "identified", "monitoring"]))
@click.option("--severity", metavar="GRADE",
              help="Re-grade (e.g. I); regulator clocks and cadence follow; parties are told.")
@click.option("--internal", is_flag=True,
              help="Not to customers: to the playbook's parties (or only those of --to).")
@click.option("--to", "to", multiple=True, metavar="PARTY",
              help="Also send it to this party from incident.yaml (repeat).")
@click.option("--reopen", multiple=True, metavar="BRANCH",
              help="A branch this update announces reopened (repeat); warns when the staff "
                   "roll-call says it cannot open.")
@queue_only
@pass_app
def update(app: App, incident_id: str, message: str, message_zh: str | None,
           message_zh_hk: str | None, eta: str | None, status: str | None,
           severity: str | None, internal: bool, to: tuple[str, ...], reopen: tuple[str, ...],
           queue_only: bool) -> None:
    """Post a progress update; customers get it unless --internal.

    \b
    Example:
      incident update 3F2A --status identified -m "Database failover in progress"
    """
    result = app.response.update(
        incident_id, message=message, message_zh=message_zh, message_zh_hk=message_zh_hk,
        eta=eta, status=status, severity=severity, internal=internal, to=to, reopen=reopen,
        queue_only=queue_only)
    show_updated(app, result, queue_only)


def show_updated(app: App, result: NoticeResult, queue_only: bool) -> None:
    """What an update recorded, then its notice sent (or queued) and the outcome."""
    view = result.view
    app.out.line(f"Update recorded on {result.incident_id}: {view.status.value}, severity "
                 f"{view.severity}, ETA {app.out.when(view.eta)}, next update due "
                 f"{app.out.when(view.next_update_due)}")
    if result.internal and view.party_notices:
        app.out.line(f"Internal notice to {safe(', '.join(view.party_notices[-1].parties))}: "
                     f"{result.internal} messages")
    _finish(app, result, _send(app, result, queue_only))


@click.command()
@click.argument("incident_id", metavar="ID")
@click.argument("when", metavar="WHEN")
@click.option("--reason", required=True, help="Why the ETA changed (customers are told).")
@click.option("--reason-zh", help="The reason in Simplified Chinese (zh-CN customers; "
              "converted to Traditional for zh-HK ones unless --reason-zh-hk is given).")
@click.option("--reason-zh-hk", help="The reason in Traditional Chinese for zh-HK customers.")
@queue_only
@pass_app
def eta(app: App, incident_id: str, when: str, reason: str, reason_zh: str | None,
        reason_zh_hk: str | None, queue_only: bool) -> None:
    """Announce a new estimated recovery time WHEN (90m, 2h, 16:30, ISO).

    \b
    Example:
      incident eta 3F2A 16:30 --reason "Data verification takes longer"
    """
    result = app.response.lifecycle.revise_eta(incident_id, when=when, reason=reason,
                                               reason_zh=reason_zh, reason_zh_hk=reason_zh_hk,
                                               queue_only=queue_only)
    app.out.line(f"ETA of {result.incident_id} is now {app.out.when(result.view.eta)} "
                 f"(was {app.out.when(result.view.previous_eta)})")
    _finish(app, result, _send(app, result, queue_only))


@click.command()
@click.argument("incident_id", metavar="ID")
@click.option("--message", "-m", required=True, help="What was restored.")
@click.option("--message-zh", help="The message in Simplified Chinese (zh-CN customers; "
              "converted to Traditional for zh-HK ones unless --message-zh-hk is given).")
@click.option("--message-zh-hk", help="The message in Traditional Chinese for zh-HK customers.")
@click.option("--at", metavar="TIME", help="When service was restored (default: now).")
@queue_only
@pass_app
def resolve(app: App, incident_id: str, message: str, message_zh: str | None,
            message_zh_hk: str | None, at: str | None, queue_only: bool) -> None:
    """Declare service restored and send the recovery notice.

    \b
    Example:
      incident resolve 3F2A -m "All services restored; transfers made today are processed"
    """
    result = app.response.lifecycle.resolve(incident_id, message=message,
                                            message_zh=message_zh, message_zh_hk=message_zh_hk,
                                            at=at, queue_only=queue_only)
    app.out.line(f"{result.incident_id} resolved at {app.out.when(result.view.resolved_at)}")
    _finish(app, result, _send(app, result, queue_only))
    app.out.next(f"incident close {_short(result.incident_id)}")


@click.command()
@click.argument("incident_id", metavar="ID")
@click.option("--force", is_flag=True, help="Close although manual cases are unreconciled.")
@click.option("--reason", help="Why --force (recorded, shown in the report).")
@pass_app
def close(app: App, incident_id: str, force: bool, reason: str | None) -> None:
    """Close a resolved incident; its record becomes final.

    Refused (exit 2, listing them) while manual cases are unreconciled, unless --force
    --reason is given.
    """
    result = app.response.lifecycle.close(incident_id, force=force, reason=reason)
    app.out.line(f"{result.incident_id} closed."
                 + (f" Forced with {len(result.view.unreconciled)} unreconciled case(s): "
                    f"{safe(result.view.close_forced or '')}" if result.view.close_forced
                    else ""))
    _finish(app, result, _send(app, result, True))
    app.out.next(f"incident timeline {_short(result.incident_id)}",
                 f"incident verify {_short(result.incident_id)}")


@click.command()
@click.argument("incident_id", metavar="[ID]", required=False)
@click.option("--reroute-to-config-transport", "reroute", is_flag=True,
              help="Also send messages recorded for another transport (e.g. smtp) by this "
                   "config's (e.g. file); recorded as an event on each incident.")
@metrics_options
@pass_app
def deliver(app: App, incident_id: str | None, reroute: bool, metrics_port: int | None,
            metrics_host: str) -> None:
    """Send pending messages (of one incident or all): resume after a crash or Ctrl-C,
    and retry temporary failures. Several workers may run at once on PostgreSQL.

    A message is sent only by the transport its notice was recorded for, unless
    --reroute-to-config-transport says otherwise. Escalations that fell due are applied
    afterwards (as `incident escalate`) and what they queued is sent too. With
    --metrics-port it is a worker: it keeps sending what gets queued until Ctrl-C or SIGTERM.
    """
    worker = serve_metrics(app, metrics_host, metrics_port)
    sending = app.response.sending
    # Said before a send that may take long: what was rerouted, and a notice whose recording
    # a crash interrupted, completed first.
    ready = sending.prepare(incident_id, reroute=reroute)
    for event in ready.rerouted:
        app.out.warn(f"{event.incident_id}: "
                     + "; ".join(describe_reroute(event)) + " (recorded)")
    for note in ready.notes:
        app.out.warn(note)
    run = app.response.work if worker else app.response.deliver
    with app.out.progress(0, "Delivering") as update:
        sent = run(ready.incident_id, progress=update)
    _delivered(app, sent)


def _delivered(app: App, sent: SendResult) -> None:
    """What `deliver` did (table or JSON), then end as its result says."""
    report = sent.report
    assert report is not None
    if app.out.as_json:
        app.out.json({"sent": report.sent, "failed": report.failed, "pending": report.pending,
                      "fallbacks": report.fallbacks, "waiting": report.waiting_json(),
                      "interrupted": report.interrupted, "deliveries": state_counts(report.counts),
                      "deliveries_by_channel": report.counts})
    else:
        app.out.line(f"Sent {report.sent}, failed {report.failed}, still pending "
                     f"{report.pending} ({report.elapsed:.1f}s)")
        app.out.deliveries(report.counts)
    settle(app, sent)


COMMANDS = [start, update, eta, resolve, close, deliver]
