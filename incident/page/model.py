"""The public view of the record: what a status page may show of an incident.

Only the customer notices are read (each recorded with its localized context, which holds no
customer: the customer is added per message at send time), so nothing else of the record can
reach the page — not internal updates, manual cases, audience files or delivery rows. Drills
are left out altogether.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from incident.models import Event, EventType
from incident.payloads import Closed, Declared, EtaRevised, Resolved, Updated, payload_of
from incident.timeutil import parse_iso

# Statuspage's incident impact, from the position of the grade in the playbook's scale
# (its first level is the most severe).
IMPACTS = ("critical", "major", "minor")


@dataclass(frozen=True)
class PublicUpdate:
    """One public notice: when, what status it announced, the ETA it gave, and its
    localized context as recorded (by language)."""

    seq: int
    at: datetime
    phase: str  # initial | update | eta_changed | resolved
    status: str  # investigating | identified | monitoring | resolved
    eta: datetime | None
    contexts: dict[str, dict[str, Any]]

    def context(self, lang: str) -> dict[str, Any]:
        """The notice's context in `lang` (a record without it: the closest language)."""
        return pick(self.contexts, lang)

    def body(self, lang: str) -> str:
        """What the notice told customers, in `lang`, as one paragraph."""
        ctx = self.context(lang)
        notice = ctx.get("notice", {})
        if self.phase == "eta_changed":
            return str(ctx.get("eta", {}).get("reason") or notice.get("message") or "")
        if self.phase == "initial":
            impact = str(ctx.get("playbook", {}).get("impact") or "")
            message = str(notice.get("message") or "")
            return " ".join(part for part in (impact, message) if part)
        return str(notice.get("message") or "")


@dataclass(frozen=True)
class EtaEntry:
    """An estimated recovery time as announced (None: withdrawn / not known)."""

    eta: datetime | None
    announced_at: datetime
    seq: int


@dataclass
class PublicIncident:
    """What the status page shows of one (non-drill) incident with at least one public notice."""

    id: str
    kind: str  # system_failure | natural_disaster
    impact: str  # none | minor | major | critical
    created_at: datetime
    head: str  # hash of the incident's latest event: a cache key for what is built from it
    updates: list[PublicUpdate] = field(default_factory=list)
    resolved_at: datetime | None = None
    closed_at: datetime | None = None

    @property
    def status(self) -> str:
        """Statuspage's status of the incident (that of its latest public notice)."""
        return self.updates[-1].status

    @property
    def resolved(self) -> bool:
        return self.status == "resolved"

    @property
    def updated_at(self) -> datetime:
        """When the latest public notice was recorded."""
        return self.updates[-1].at

    @property
    def eta(self) -> datetime | None:
        """The ETA of the latest public notice (None once resolved)."""
        return None if self.resolved else self.updates[-1].eta

    @property
    def eta_history(self) -> list[EtaEntry]:
        """Each ETA as first announced, in order."""
        out: list[EtaEntry] = []
        for update in self.updates:
            if update.phase == "resolved":
                break
            if not out or out[-1].eta != update.eta:
                out.append(EtaEntry(update.eta, update.at, update.seq))
        return out

    def latest(self, lang: str) -> dict[str, Any]:
        """The latest public notice's context in `lang` (title, manual channel, branches)."""
        return self.updates[-1].context(lang)

    def title(self, lang: str) -> str:
        return str(self.latest(lang).get("incident", {}).get("title") or self.id)


def pick(contexts: dict[str, dict[str, Any]], lang: str) -> dict[str, Any]:
    """`contexts[lang]`, else the other Chinese one, else any (records predating a language)."""
    for candidate in (lang, "zh-CN" if lang == "zh-HK" else "zh-HK", "en", *contexts):
        if candidate in contexts:
            return contexts[candidate]
    return {}


def public_incident(events: Sequence[Event]) -> PublicIncident | None:
    """The public view of one incident's events (None: a drill, or nothing announced yet)."""
    if not events or events[0].type is not EventType.DECLARED:
        return None
    declared = payload_of(events[0])
    assert isinstance(declared, Declared)
    if declared.drill:
        return None
    grades = [str(level["id"]) for level in declared.playbook["severity"]["levels"]]
    severity, status = declared.severity, "investigating"
    eta = parse_iso(declared.eta) if declared.eta else None
    found = PublicIncident(id=events[0].incident_id, kind=str(declared.playbook.get("kind", "")),
                           impact="", created_at=events[0].at, head=events[-1].hash)
    for event in events:
        p = payload_of(event)
        if isinstance(p, Updated):
            severity = p.severity or severity
            status = p.status or status
            if p.given("eta"):
                eta = parse_iso(p.eta) if p.eta else None
        elif isinstance(p, EtaRevised):
            eta = parse_iso(p.eta)
        elif isinstance(p, Resolved):
            status = "resolved"
            found.resolved_at = parse_iso(p.resolved_at)
        elif isinstance(p, Closed):
            found.closed_at = event.at
        notice = getattr(p, "notice", None)
        if notice is None or notice.audience == "internal" or not notice.context:
            continue
        found.updates.append(PublicUpdate(seq=event.seq, at=event.at, phase=notice.phase,
                                          status=status, eta=eta, contexts=notice.context))
    if not found.updates:
        return None
    rank = grades.index(severity) if severity in grades else len(grades) - 1
    found.impact = IMPACTS[min(rank, len(IMPACTS) - 1)]
    return found


def regional_hotlines(ctx: dict[str, Any]) -> list[tuple[str, str]]:
    """(region, hotline) for each region whose customers were given a hotline of their own."""
    out = []
    for region, differs in sorted(ctx.get("regional", {}).items()):
        number = (differs.get("manual", {}).get("hotline")
                  or differs.get("org", {}).get("hotline"))
        if number:
            out.append((region, str(number)))
    return out
