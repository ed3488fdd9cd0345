"""Post-mortem use cases: the sections people write, action items, and the reports.

Notes and action items are events like any other (appended with `Service.record`, so they
join the incident's hash chain and name their author); they are accepted in every state,
closed included, because a post-mortem is written after the incident.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from incident.errors import BadInput, InvalidValue
from incident.models import EventType, Status
from incident.report import SECTIONS, measure, render, summarise
from incident.report.render import Format, check_choice
from incident.resources import shipped
from incident.service import NoticeResult, Service
from incident.state import ActionItem, IncidentView, fold
from incident.timeutil import parse_when, to_iso

ANY_STATE = frozenset(Status)


@dataclass(frozen=True)
class OpenAction:
    """An action item with the incident it came from."""

    incident_id: str
    incident_title: str
    drill: bool
    item: ActionItem


def _text(value: str, option: str) -> str:
    cleaned = (value or "").strip()
    if not cleaned:
        raise InvalidValue(f"{option} must not be empty")
    return cleaned


def add_note(service: Service, ref: str, section: str, text: str) -> NoticeResult:
    """Record a note in one of the written sections of the post-mortem."""
    if section not in SECTIONS:
        raise InvalidValue(f"--section {section!r} is not a post-mortem section",
                           hint=f"sections: {', '.join(SECTIONS)}")
    body = _text(text, "the note text")
    return service.record(ref, EventType.NOTE, None,
                          lambda view, now: {"section": section, "text": body},
                          allowed=ANY_STATE, verb="add a note to")


def add_action(service: Service, ref: str, owner: str, due: str, text: str) -> NoticeResult:
    """Record an action item (ids A1, A2, … per incident) with its owner and due date."""
    who = _text(owner, "--owner")
    body = _text(text, "the action text")

    def build(view: IncidentView, now: datetime) -> dict[str, Any]:
        when = parse_when(due, zone=service.rt.zone, now=now, future=True)
        if when < now - timedelta(minutes=1):
            raise InvalidValue(f"--due {due!r} is in the past")
        return {"action": f"A{len(view.actions) + 1}", "owner": who, "due": to_iso(when),
                "text": body}

    return service.record(ref, EventType.ACTION_ADDED, None, build, allowed=ANY_STATE,
                          verb="add an action item to")


def complete_action(service: Service, ref: str, action_id: str,
                    note: str | None = None) -> NoticeResult:
    """Mark an action item done, with an optional note on what was done."""
    wanted = action_id.strip().upper()

    def build(view: IncidentView, now: datetime) -> dict[str, Any]:
        item = view.actions.get(wanted)
        if item is None:
            known = ", ".join(view.actions) or "none yet"
            raise InvalidValue(f"ACTION {action_id!r} is not an action item of {view.id}",
                               hint=f"action items: {known}")
        if item.done_at is not None:
            raise BadInput(f"action {wanted} of {view.id} is already done "
                           f"({to_iso(item.done_at)})")
        data: dict[str, Any] = {"action": wanted}
        if note and note.strip():
            data["note"] = note.strip()
        return data

    return service.record(ref, EventType.ACTION_DONE, None, build, allowed=ANY_STATE,
                          verb="complete an action item of")


def open_actions(service: Service, *, include_done: bool = False) -> list[OpenAction]:
    """Action items still open across every incident (all of them with `include_done`),
    earliest due first."""
    out = []
    for row in service.store.incidents():
        view = fold(service.store.events(row.id))
        out += [OpenAction(view.id, view.title, view.drill, item)
                for item in view.actions.values() if include_done or item.done_at is None]
    return sorted(out, key=lambda a: (a.item.done_at is not None, a.item.due, a.incident_id,
                                      a.item.id))


# ---------------------------------------------------------------------------- reports


def _template_dirs(service: Service) -> list[Path]:
    # The shipped report templates only: they follow the report's data shape, which changes
    # with the code, and `incident init` copies them into every workspace, where an old copy
    # would otherwise shadow the new ones after an upgrade.
    return [shipped("templates") / "_report"]


def _party_names(service: Service) -> dict[str, Any]:
    return {pid: party.name for pid, party in service.rt.settings.parties.items()}


def report_data(service: Service, ref: str, *, now: datetime | None = None) -> dict[str, Any]:
    """Every figure of one incident's report (the JSON document)."""
    view, events = service.timeline(ref)
    with service.store.read() as conn:
        return measure(view, events, conn, now=now or service.rt.clock.now(),
                       party_names=_party_names(service))


def report(service: Service, ref: str, *, fmt: Format = "md", lang: str = "zh-CN",
           now: datetime | None = None) -> str:
    """One incident's post-mortem report as Markdown, HTML or JSON text."""
    check_choice(fmt, lang)
    return render(report_data(service, ref, now=now), fmt, lang=lang, zone=service.rt.zone,
                  template_dirs=_template_dirs(service))


def period(service: Service, *, since: str, until: str | None = None, drills: bool = False,
           now: datetime | None = None) -> dict[str, Any]:
    """The summary of the incidents declared in [since, until): real ones, or only drills."""
    now = now or service.rt.clock.now()
    start = _day(service, since, "--since", now)
    end = _day(service, until, "--until", now, end_of_day=True) if until else now
    if end <= start:
        raise InvalidValue(f"--until {until!r} is not after --since {since!r}")
    rows = [r for r in service.store.incidents()
            if r.drill == drills and start <= r.created_at < end]
    reports = []
    with service.store.read() as conn:
        for row in sorted(rows, key=lambda r: r.created_at):
            events = service.store.events(row.id, conn)
            reports.append(measure(fold(events), events, conn, now=now,
                                   party_names=_party_names(service)))
    return summarise(reports, since=start, until=end, drills=drills, now=now)


def period_report(service: Service, *, since: str, until: str | None = None,
                  drills: bool = False, fmt: Format = "md", lang: str = "zh-CN",
                  now: datetime | None = None) -> str:
    """The period summary as Markdown, HTML or JSON text."""
    check_choice(fmt, lang)
    data = period(service, since=since, until=until, drills=drills, now=now)
    return render(data, fmt, lang=lang, zone=service.rt.zone,
                  template_dirs=_template_dirs(service), kind="summary")


def _day(service: Service, text: str, option: str, now: datetime, *,
         end_of_day: bool = False) -> datetime:
    """A date (the whole day, in the configured zone), a time, or `90d` ago."""
    try:
        value = parse_when(text, zone=service.rt.zone, now=now, future=False)
    except InvalidValue as exc:
        raise InvalidValue(f"{option}: {exc.message}",
                           hint="use a date (2026-10-01), a time or a duration (90d)") from None
    if end_of_day and len(text.strip()) == 10:  # a bare date: up to the end of that day
        value += timedelta(days=1)
    return value
