"""The current state of an incident, derived from its events (never stored)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from incident.models import Event, EventType, Phase, Status
from incident.playbooks import Playbook
from incident.timeutil import parse_iso


@dataclass(frozen=True)
class EtaVersion:
    """One announced estimated recovery time."""

    eta: datetime | None
    announced_at: datetime
    reason: str
    seq: int


@dataclass(frozen=True)
class NoticeSummary:
    """A customer notice as recorded (its deliveries live in the outbox)."""

    seq: int
    phase: Phase
    at: datetime
    messages: int
    recipients: int


@dataclass
class IncidentView:
    """Everything known about an incident at its latest event."""

    id: str
    title: str
    playbook: Playbook
    severity: str
    status: Status
    drill: bool
    detected_at: datetime
    declared_at: datetime
    declared_by: str
    affected: list[str]
    regions: list[str]
    audience: dict[str, Any]
    eta_history: list[EtaVersion] = field(default_factory=list)
    notices: list[NoticeSummary] = field(default_factory=list)
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    last_event_at: datetime | None = None
    event_count: int = 0

    @property
    def eta(self) -> datetime | None:
        """The ETA currently announced."""
        return self.eta_history[-1].eta if self.eta_history else None

    @property
    def previous_eta(self) -> datetime | None:
        """The ETA before the latest revision."""
        return self.eta_history[-2].eta if len(self.eta_history) > 1 else None

    @property
    def update_every(self) -> timedelta:
        """Promised customer update cadence at the current grade."""
        return self.playbook.update_every(self.severity)

    @property
    def last_customer_notice_at(self) -> datetime | None:
        """When the latest customer notice was recorded."""
        return self.notices[-1].at if self.notices else None

    @property
    def next_update_due(self) -> datetime | None:
        """When the next customer update is promised; None once resolved."""
        if not self.status.is_open:
            return None
        base = self.last_customer_notice_at or self.declared_at
        return base + self.update_every


def fold(events: list[Event]) -> IncidentView:
    """Replay events into the incident's current state."""
    if not events or events[0].type is not EventType.DECLARED:
        raise ValueError("an incident's log must start with its declaration")
    first = events[0]
    d = first.data
    view = IncidentView(
        id=first.incident_id, title=d["title"], playbook=Playbook.model_validate(d["playbook"]),
        severity=d["severity"], status=Status.INVESTIGATING, drill=bool(d.get("drill")),
        detected_at=parse_iso(d["detected_at"]), declared_at=first.at, declared_by=first.actor,
        affected=list(d.get("affected", [])), regions=list(d.get("regions", [])),
        audience=dict(d.get("audience", {})))
    for event in events:
        apply(view, event)
    return view


def apply(view: IncidentView, event: Event) -> None:
    """Apply one event to the view."""
    d = event.data
    view.event_count += 1
    view.last_event_at = event.at
    if event.type is EventType.DECLARED:
        view.eta_history.append(EtaVersion(_time(d.get("eta")), event.at, "", event.seq))
    elif event.type is EventType.UPDATED:
        if d.get("status"):
            view.status = Status(d["status"])
        if d.get("severity"):
            view.severity = d["severity"]
        if "eta" in d:
            view.eta_history.append(EtaVersion(_time(d["eta"]), event.at,
                                               d.get("message", ""), event.seq))
    elif event.type is EventType.ETA_REVISED:
        view.eta_history.append(EtaVersion(_time(d["eta"]), event.at, d["reason"], event.seq))
    elif event.type is EventType.RESOLVED:
        view.status = Status.RESOLVED
        view.resolved_at = parse_iso(d["resolved_at"])
    elif event.type is EventType.CLOSED:
        view.status = Status.CLOSED
        view.closed_at = event.at
    notice = d.get("notice")
    if notice:
        view.notices.append(NoticeSummary(seq=event.seq, phase=Phase(notice["phase"]),
                                          at=event.at, messages=int(notice["messages"]),
                                          recipients=int(notice["recipients"])))


def _time(value: str | None) -> datetime | None:
    return parse_iso(value) if value else None
