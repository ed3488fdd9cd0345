"""Post-mortem use cases: the sections people write, action items, and the reports.

Notes and action items are events like any other (appended through the journal, so they
join the incident's hash chain and name their author); they are accepted in every state,
closed included, because a post-mortem is written after the incident.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from incident.errors import BadInput, InvalidValue
from incident.models import EventType
from incident.payloads import ActionAdded, ActionDone, Note
from incident.report import SECTIONS, measure, render, summarise
from incident.report.render import Format, check_choice
from incident.resources import shipped
from incident.response.journal import ANY_STATE, Journal
from incident.response.results import NoticeResult
from incident.state import ActionItem, IncidentView, fold
from incident.timeutil import parse_when, to_iso


@dataclass(frozen=True)
class OpenAction:
    """An action item with the incident it came from."""

    incident_id: str
    incident_title: str
    drill: bool
    item: ActionItem


def _text(value: str, field: str) -> str:
    cleaned = (value or "").strip()
    if not cleaned:
        raise InvalidValue("must not be empty", field=field)
    return cleaned


class PostMortem:
    """Notes, action items and the reports, over the journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.rt = journal.rt

    def add_note(self, ref: str, section: str, text: str) -> NoticeResult:
        """Record a note in one of the written sections of the post-mortem."""
        if section not in SECTIONS:
            raise InvalidValue(f"{section!r} is not a post-mortem section", field="section",
                               hint=f"sections: {', '.join(SECTIONS)}")
        body = _text(text, "text")
        return self.journal.record(ref, EventType.NOTE, None,
                                   lambda view, now: Note(section=section, text=body),
                                   allowed=ANY_STATE, verb="add a note to")


    def add_action(self, ref: str, owner: str, due: str, text: str) -> NoticeResult:
        """Record an action item (ids A1, A2, … per incident) with its owner and due date."""
        who = _text(owner, "owner")
        body = _text(text, "text")

        def build(view: IncidentView, now: datetime) -> ActionAdded:
            when = parse_when(due, zone=self.rt.zone, now=now, future=True)
            if when < now - timedelta(minutes=1):
                raise InvalidValue(f"{due!r} is in the past", field="due")
            return ActionAdded(action=f"A{len(view.actions) + 1}", owner=who, due=to_iso(when),
                               text=body)

        return self.journal.record(ref, EventType.ACTION_ADDED, None, build, allowed=ANY_STATE,
                                   verb="add an action item to")

    def complete_action(self, ref: str, action_id: str,
                        note: str | None = None) -> NoticeResult:
        """Mark an action item done, with an optional note on what was done."""
        wanted = action_id.strip().upper()

        def build(view: IncidentView, now: datetime) -> ActionDone:
            item = view.actions.get(wanted)
            if item is None:
                known = ", ".join(view.actions) or "none yet"
                raise InvalidValue(f"{action_id!r} is not an action item of {view.id}",
                                   field="action_id",
                                   hint=f"action items: {known}")
            if item.done_at is not None:
                raise BadInput(f"action {wanted} of {view.id} is already done "
                               f"({to_iso(item.done_at)})")
            if note and note.strip():
                return ActionDone(action=wanted, note=note.strip())
            return ActionDone(action=wanted)

        return self.journal.record(ref, EventType.ACTION_DONE, None, build, allowed=ANY_STATE,
                                   verb="complete an action item of")


    def open_actions(self, *, include_done: bool = False) -> list[OpenAction]:
        """Action items still open across every incident (all of them with `include_done`),
        earliest due first."""
        out = []
        for row in self.journal.store.incidents():
            view = fold(self.journal.store.events(row.id))
            out += [OpenAction(view.id, view.title, view.drill, item)
                    for item in view.actions.values() if include_done or item.done_at is None]
        return sorted(out, key=lambda a: (a.item.done_at is not None, a.item.due, a.incident_id,
                                          a.item.id))


    # ------------------------------------------------------------------------ reports


    @staticmethod
    def _template_dirs() -> list[Path]:
        # The shipped report templates only: they follow the report's data shape, which changes
        # with the code, and `incident init` copies them into every workspace, where an old copy
        # would otherwise shadow the new ones after an upgrade.
        return [shipped("templates") / "_report"]


    def _party_names(self) -> dict[str, Any]:
        return {pid: party.name for pid, party in self.rt.settings.parties.items()}


    def report_data(self, ref: str, *, now: datetime | None = None) -> dict[str, Any]:
        """Every figure of one incident's report (the JSON document)."""
        store = self.journal.store
        events = store.events(store.resolve_id(ref))
        view = fold(events)
        with self.journal.store.read() as conn:
            return measure(view, events, conn, now=now or self.rt.clock.now(),
                           party_names=self._party_names())


    def report(self, ref: str, *, fmt: Format = "md", lang: str = "zh-CN",
               now: datetime | None = None) -> str:
        """One incident's post-mortem report as Markdown, HTML or JSON text."""
        check_choice(fmt, lang)
        return render(self.report_data(ref, now=now), fmt, lang=lang, zone=self.rt.zone,
                      template_dirs=self._template_dirs())


    def period(self, *, since: str, until: str | None = None, drills: bool = False,
               now: datetime | None = None) -> dict[str, Any]:
        """The summary of the incidents declared in [since, until): real ones, or only drills."""
        now = now or self.rt.clock.now()
        start = self._day(since, "since", now)
        end = self._day(until, "until", now, end_of_day=True) if until else now
        if end <= start:
            raise InvalidValue(f"{until!r} is not after the start of the period ({since!r})",
                               field="until")
        rows = [r for r in self.journal.store.incidents()
                if r.drill == drills and start <= r.created_at < end]
        reports = []
        with self.journal.store.read() as conn:
            for row in sorted(rows, key=lambda r: r.created_at):
                events = self.journal.store.events(row.id, conn)
                reports.append(measure(fold(events), events, conn, now=now,
                                       party_names=self._party_names()))
        return summarise(reports, since=start, until=end, drills=drills, now=now)


    def period_report(self, *, since: str, until: str | None = None,
                      drills: bool = False, fmt: Format = "md", lang: str = "zh-CN",
                      now: datetime | None = None) -> str:
        """The period summary as Markdown, HTML or JSON text."""
        check_choice(fmt, lang)
        data = self.period(since=since, until=until, drills=drills, now=now)
        return render(data, fmt, lang=lang, zone=self.rt.zone,
                      template_dirs=self._template_dirs(), kind="summary")

    def _day(self, text: str, field: str, now: datetime, *,
             end_of_day: bool = False) -> datetime:
        """A date (the whole day, in the configured zone), a time, or `90d` ago."""
        try:
            value = parse_when(text, zone=self.rt.zone, now=now, future=False)
        except InvalidValue as exc:
            raise InvalidValue(f"{exc.message}", field=field,
                               hint="use a date (2026-10-01), a time or a duration (90d)") from None
        if end_of_day and len(text.strip()) == 10:  # a bare date: up to the end of that day
            value += timedelta(days=1)
        return value
