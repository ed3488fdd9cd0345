"""Commands of the post-mortem: report, note, action add | done, actions."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click
from rich.text import Text

from incident.cli.app import App, pass_app
from incident.cli.output import clean, safe, writing
from incident.errors import BadInput

if TYPE_CHECKING:
    from incident.report.render import Format


# The options' choices, spelt out: importing incident.report (SQL aggregates, templates) only
# to list them would cost every command, `incident --help` included, its import time.
# tests/test_startup.py checks that they are incident.report's own.
FORMATS = ("md", "html", "json")
SECTIONS = ("summary", "root_cause", "trigger", "resolution", "went_well", "went_wrong",
            "lucky")
REPORT_LANGUAGES = ("zh-CN", "en")


def _short(incident_id: str) -> str:
    return incident_id.rsplit("-", 1)[-1]


@click.command()
@click.argument("incident_id", metavar="[ID]", required=False)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="md (default; json with --json), html (self-contained, printable) or json.")
@click.option("--lang", type=click.Choice(REPORT_LANGUAGES), default=None,
              help="Language of the report (default: the config's default language).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report to FILE instead of standard output.")
@click.option("--since", metavar="DATE", help="Summarise every incident declared since DATE "
              "(2026-10-01, or 90d) instead of reporting one.")
@click.option("--until", metavar="DATE", help="With --since: up to the end of DATE.")
@click.option("--drills", is_flag=True, help="With --since: summarise drills only "
              "(real incidents are summarised without them).")
@pass_app
def report(app: App, incident_id: str | None, fmt: str | None, lang: str | None,
           output: Path | None, since: str | None, until: str | None, drills: bool) -> None:
    """The post-mortem report of incident ID: the four principles measured against the
    playbook (met / partly / missed, with the figures), the written review, action items
    and the timeline. With --since: the summary of a period across incidents.

    \b
    Examples:
      incident report 3F2A --format html --lang en -o 3F2A.html
      incident report 3F2A --format json | jq .verdicts
      incident report --since 2026-07-01 --until 2026-09-30
      incident report --since 90d --drills
    """

    if incident_id and since:
        raise BadInput("give an incident ID or --since, not both")
    if not incident_id and not since:
        raise BadInput("give an incident ID, or --since DATE for a period summary",
                       hint="incident report 3F2A  ·  incident report --since 2026-07-01")
    if (until or drills) and not since:
        raise BadInput("--until and --drills go with --since")
    chosen = cast("Format", fmt or ("json" if app.out.as_json else "md"))
    from incident.languages import document_language

    language = lang or document_language(app.rt.settings.default_language)
    if incident_id:
        text = app.response.postmortem.report(incident_id, fmt=chosen, lang=language)
    else:
        assert since is not None
        text = app.response.postmortem.period_report(since=since, until=until, drills=drills,
                                                     fmt=chosen, lang=language)
    if output is None:  # to a terminal, perhaps: nothing in it may act on one
        click.echo(clean(text), nl=False)
        return
    with writing(output):
        output.write_text(text, encoding="utf-8")
    app.out.note(f"Wrote {output} ({chosen}, {language})")


@click.command()
@click.argument("incident_id", metavar="ID")
@click.argument("text", required=False)
@click.option("--section", required=True, metavar="S",
              help=f"One of: {', '.join(SECTIONS)}.")
@click.option("--text", "text_option", metavar="TEXT", help="The note (or give it as TEXT).")
@pass_app
def note(app: App, incident_id: str, text: str | None, section: str,
         text_option: str | None) -> None:
    """Add a note to a written section of the post-mortem (any state, closed included).

    \b
    Example:
      incident note 3F2A --section root_cause "Expired certificate on the DB proxy"
    """

    body = text_option if text_option is not None else text
    if text and text_option:
        raise BadInput("give the note as TEXT or --text, not both")
    if body is None:
        raise BadInput("give the note as TEXT or --text")
    result = app.response.postmortem.add_note(incident_id, section, body)
    if app.out.as_json:
        app.out.json({"id": result.incident_id, "seq": result.seq, "section": section,
                      "notes": len(result.view.notes.get(section, []))})
        return
    app.out.line(f"Note added to {safe(section)} of {result.incident_id} (event #{result.seq})")
    app.out.next(f"incident report {_short(result.incident_id)}")


@click.group()
def action() -> None:
    """Post-mortem action items: add one, mark one done."""


@action.command(name="add")
@click.argument("incident_id", metavar="ID")
@click.argument("text")
@click.option("--owner", required=True, help="Who is responsible (a person or a team).")
@click.option("--due", required=True, metavar="D", help="Due date: 2026-12-31, 14d, ISO time.")
@pass_app
def action_add(app: App, incident_id: str, text: str, owner: str, due: str) -> None:
    """Add an action item with its owner and due date; ids are A1, A2, … per incident.

    \b
    Example:
      incident action add 3F2A --owner dba-team --due 2026-12-31 "Monitor certificate expiry"
    """

    result = app.response.postmortem.add_action(incident_id, owner, due, text)
    item = list(result.view.actions.values())[-1]
    if app.out.as_json:
        app.out.json(_action_json(result.incident_id, item, app.rt.clock.now()))
        return
    app.out.line(f"Action {item.id} added to {result.incident_id}: owner {safe(item.owner)}, "
                 f"due {app.out.when(item.due)}")
    app.out.next(f"incident action done {_short(result.incident_id)} {item.id}",
                 "incident actions")


@action.command(name="done")
@click.argument("incident_id", metavar="ID")
@click.argument("action_id", metavar="ACTION")
@click.option("--note", help="What was done.")
@pass_app
def action_done(app: App, incident_id: str, action_id: str, note: str | None) -> None:
    """Mark action item ACTION (e.g. A1) of incident ID done.

    \b
    Example:
      incident action done 3F2A A1 --note "Alerting added in change CHG-1234"
    """

    result = app.response.postmortem.complete_action(incident_id, action_id, note)
    item = result.view.actions[action_id.strip().upper()]
    if app.out.as_json:
        app.out.json(_action_json(result.incident_id, item, app.rt.clock.now()))
        return
    app.out.line(f"Action {item.id} of {result.incident_id} done")


def _action_json(incident_id: str, item: Any, now: datetime, drill: bool = False,
                 title: str | None = None) -> dict[str, Any]:
    data = {"incident": incident_id, "id": item.id, "text": item.text, "owner": item.owner,
            "due": item.due.isoformat(), "added_at": item.added_at.isoformat(),
            "added_by": item.added_by,
            "done_at": item.done_at.isoformat() if item.done_at else None, "note": item.note,
            "state": "done" if item.done_at else "open",
            "overdue": item.done_at is None and item.due < now}
    if title is not None:
        data.update(incident_title=title, drill=drill)
    return data


@click.command()
@click.option("--all", "include_done", is_flag=True, help="Include action items already done.")
@pass_app
def actions(app: App, include_done: bool) -> None:
    """Open action items across every incident, earliest due first (all with --all)."""
    items = app.response.postmortem.open_actions(include_done=include_done)
    out = app.out
    if out.as_json:
        now = app.rt.clock.now()
        out.json([_action_json(a.incident_id, a.item, now, a.drill, a.incident_title)
                  for a in items])
        return
    if not items:
        out.line("No open action items." if not include_done else "No action items recorded.")
        return
    now = app.rt.clock.now()
    rows = []
    for a in items:
        due = out.when(a.item.due)
        overdue = a.item.done_at is None and a.item.due < now
        rows.append([a.incident_id + (" (drill)" if a.drill else ""), a.item.id, a.item.text,
                     a.item.owner, Text(due + " overdue", style="bold red") if overdue else due,
                     "done" if a.item.done_at else "open"])
    out.table(None, ["incident", "action", "text", "owner", "due", "state"], rows)


COMMANDS = [report, note, action, actions]
