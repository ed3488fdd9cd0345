"""The current state of an incident, derived from its events (never stored).

What each event type records is its model in incident/payloads.py (read through `payload_of`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from incident.models import Event, EventType, Phase, Status
from incident.payloads import (
    ActionAdded,
    ActionDone,
    Alerted,
    AudienceRead,
    CaseLogged,
    CaseReconciled,
    Closed,
    Declared,
    EtaRevised,
    ManualDetails,
    ManualOpened,
    PartiesNotified,
    PartyAcked,
    Resolved,
    StepDone,
    StepSkipped,
    Updated,
    WithNotice,
    WithSteps,
    WithWarning,
    payload_of,
)
from incident.payloads import Note as NoteRecord
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
    # False while a start's audience is still being read (its messages and recipients count
    # what was read before recording): until its `audience_read` event.
    counted: bool = True


@dataclass(frozen=True)
class PartyNotice:
    """An internal notice to departments and outside bodies."""

    seq: int
    at: datetime
    parties: list[str]
    phase: str
    messages: int


@dataclass
class ManualChannelState:
    """The manual-handling channel as last opened (texts by language)."""

    open: bool
    opened_at: datetime
    opened_by: str
    hotline: str | dict[str, str]  # by customer region: {default: …, R: …}
    hours: dict[str, str]
    counters: dict[str, str] | None = None
    workaround: dict[str, str] | None = None
    closed_at: datetime | None = None
    closed_by: str | None = None


@dataclass
class ManualCase:
    """A customer request handled by hand while the system was down."""

    id: str
    customer: str
    request: str
    amount: str | None
    urgent: bool
    logged_at: datetime
    logged_by: str
    reconciled_at: datetime | None = None
    reconciled_by: str | None = None
    note: str = ""


@dataclass(frozen=True)
class StepMark:
    """A checklist item done or skipped (a recurring duty collects several)."""

    state: str  # done | skipped
    at: datetime
    by: str
    reason: str = ""
    auto: bool = False  # done by the action it names (start, manual open, …)


@dataclass(frozen=True)
class Acknowledgement:
    """A party confirmed it received the notice."""

    party: str
    at: datetime
    by: str
    note: str = ""


@dataclass
class ActionItem:
    """A post-mortem action item."""

    id: str
    text: str
    owner: str
    due: datetime
    added_at: datetime
    added_by: str
    done_at: datetime | None = None
    note: str = ""


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
    head: tuple[int, str] = (0, "")  # the latest event's (seq, hash): the chain's head
    branches_selected: list[str] = field(default_factory=list)
    scope: dict[str, Any] = field(default_factory=dict)  # branches closed / open nearby
    severity_history: list[tuple[str, datetime]] = field(default_factory=list)
    manual: ManualChannelState | None = None
    cases: dict[str, ManualCase] = field(default_factory=dict)
    step_marks: dict[str, list[StepMark]] = field(default_factory=dict)
    party_notices: list[PartyNotice] = field(default_factory=list)
    acks: dict[str, Acknowledgement] = field(default_factory=dict)
    alerted: set[str] = field(default_factory=set)
    notes: dict[str, list[tuple[datetime, str, str]]] = field(default_factory=dict)
    actions: dict[str, ActionItem] = field(default_factory=dict)
    close_forced: str | None = None  # the reason, when closed with cases unreconciled
    warnings: list[dict[str, Any]] = field(default_factory=list)  # CAP alerts recorded on it
    title_zh: str | None = None  # the title as typed in Simplified / Hong Kong Chinese
    title_zh_hk: str | None = None

    @property
    def warning_keys(self) -> list[tuple[str, str]]:
        """(sender, identifier) of the CAP alerts recorded on the incident and of the alerts
        they reference: a later alert naming any of them is about this incident."""
        from incident.cap import reference_key  # CAP's machinery only where alerts are read

        keys = []
        for warning in self.warnings:
            keys.append((warning["sender"], warning["identifier"]))
            keys += [reference_key(ref, warning["sender"]) for ref in warning["references"]]
        return list(dict.fromkeys(keys))

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

    @property
    def manual_open(self) -> bool:
        """The manual-handling channel is open now."""
        return self.manual is not None and self.manual.open

    @property
    def unreconciled(self) -> list[ManualCase]:
        """Manual cases not yet entered back into the recovered system."""
        return [c for c in self.cases.values() if c.reconciled_at is None]

    def notified_at(self, party: str) -> datetime | None:
        """When `party` was first sent an internal notice."""
        return next((n.at for n in self.party_notices if party in n.parties), None)

    def grade_since(self, grades: list[str]) -> datetime | None:
        """When the incident first had one of `grades` (detection if graded so at start)."""
        for index, (grade, at) in enumerate(self.severity_history):
            if not grades or grade in grades:
                return self.detected_at if index == 0 else at
        return None


def fold(events: list[Event]) -> IncidentView:
    """Replay events into the incident's current state."""
    if not events or events[0].type is not EventType.DECLARED:
        raise ValueError("an incident's log must start with its declaration")
    first = events[0]
    d = payload_of(first)
    assert isinstance(d, Declared)
    view = IncidentView(
        id=first.incident_id, title=d.title, playbook=Playbook.model_validate(d.playbook),
        severity=d.severity, status=Status.INVESTIGATING, drill=d.drill,
        detected_at=parse_iso(d.detected_at), declared_at=first.at, declared_by=first.actor,
        affected=list(d.affected), regions=list(d.regions),
        audience=d.audience.model_dump(exclude_unset=True) if d.audience else {},
        branches_selected=list(d.branches_selected),
        scope=d.scope.model_dump(exclude_unset=True) if d.scope else {},
        severity_history=[(d.severity, first.at)], title_zh=d.title_zh,
        title_zh_hk=d.title_zh_hk)
    for event in events:
        apply(view, event)
    return view


def apply(view: IncidentView, event: Event) -> None:
    """Apply one event to the view."""
    p = payload_of(event)
    view.event_count += 1
    view.last_event_at = event.at
    view.head = (event.seq, event.hash)
    if isinstance(p, Declared):
        view.eta_history.append(EtaVersion(_time(p.eta), event.at, "", event.seq))
        if p.manual:
            _open_manual(view, event, p.manual)
    elif isinstance(p, AudienceRead):
        _audience_read(view, p)
    elif isinstance(p, Updated):
        if p.status:
            view.status = Status(p.status)
        if p.severity and p.severity != view.severity:
            view.severity = p.severity
            view.severity_history.append((p.severity, event.at))
        if p.given("eta"):
            view.eta_history.append(EtaVersion(_time(p.eta), event.at, p.message, event.seq))
    elif isinstance(p, EtaRevised):
        view.eta_history.append(EtaVersion(_time(p.eta), event.at, p.reason, event.seq))
    elif isinstance(p, Resolved):
        view.status = Status.RESOLVED
        view.resolved_at = parse_iso(p.resolved_at)
    elif isinstance(p, Closed):
        view.status = Status.CLOSED
        view.closed_at = event.at
        _close_manual(view, event)  # closing the incident closes its manual channel
        view.close_forced = p.reason if p.forced else None
    elif isinstance(p, ManualOpened):
        _open_manual(view, event, p)
    elif event.type is EventType.MANUAL_CLOSED:
        _close_manual(view, event)
    elif isinstance(p, CaseLogged):
        view.cases[p.case] = ManualCase(id=p.case, customer=p.customer, request=p.request,
                                        amount=p.amount, urgent=p.urgent, logged_at=event.at,
                                        logged_by=event.actor)
    elif isinstance(p, CaseReconciled):
        case = view.cases[p.case]
        case.reconciled_at = event.at
        case.reconciled_by = event.actor
        case.note = p.note or ""
    elif isinstance(p, StepDone | StepSkipped):
        reason = p.reason if isinstance(p, StepSkipped) else p.note
        view.step_marks.setdefault(p.step, []).append(
            StepMark("done" if isinstance(p, StepDone) else "skipped", event.at, event.actor,
                     reason=reason or ""))
    elif isinstance(p, PartyAcked):
        view.acks.setdefault(p.party, Acknowledgement(p.party, event.at, event.actor,
                                                      p.note or ""))
    elif isinstance(p, Alerted):
        view.alerted.update(p.keys)
    elif isinstance(p, NoteRecord):
        view.notes.setdefault(p.section, []).append((event.at, event.actor, p.text))
    elif isinstance(p, ActionAdded):
        view.actions[p.action] = ActionItem(id=p.action, text=p.text, owner=p.owner,
                                            due=parse_iso(p.due), added_at=event.at,
                                            added_by=event.actor)
    elif isinstance(p, ActionDone):
        item = view.actions[p.action]
        item.done_at = event.at
        item.note = p.note or ""
    if isinstance(p, WithWarning) and p.warning:
        view.warnings.append(p.warning.model_dump(exclude_unset=True))
    if isinstance(p, WithSteps):
        for step in p.steps_done:
            view.step_marks.setdefault(step, []).append(
                StepMark("done", event.at, event.actor, auto=True))
    notice = p.notice if isinstance(p, WithNotice) else None
    if notice and notice.audience == "internal":
        view.party_notices.append(PartyNotice(
            seq=event.seq, at=event.at,
            parties=list(p.parties) if isinstance(p, PartiesNotified) else [],
            phase=notice.phase, messages=notice.messages))
    elif notice:
        pending = (isinstance(p, Declared) and p.audience is not None
                   and p.audience.counts == "pending")
        view.notices.append(NoticeSummary(seq=event.seq, phase=Phase(notice.phase), at=event.at,
                                          messages=notice.messages,
                                          recipients=notice.recipients, counted=not pending))


def _audience_read(view: IncidentView, p: AudienceRead) -> None:
    """The exact counts of a notice recorded before its audience was read to the end."""
    view.audience.pop("counts", None)
    view.audience.update(rows=p.rows, skipped=p.skipped, selected=p.selected)
    if p.utf8_refusal:
        view.audience["utf8_refusal"] = p.utf8_refusal
    view.notices = [replace(n, messages=p.messages, recipients=p.selected, counted=True)
                    if n.seq == 1 else n for n in view.notices]


def _open_manual(view: IncidentView, event: Event, m: ManualDetails) -> None:
    view.manual = ManualChannelState(open=True, opened_at=event.at, opened_by=event.actor,
                                     hotline=m.hotline or "", hours=dict(m.hours),
                                     counters=dict(m.counters) if m.counters else m.counters,
                                     workaround=(dict(m.workaround) if m.workaround
                                                 else m.workaround))


def _close_manual(view: IncidentView, event: Event) -> None:
    if view.manual is not None and view.manual.open:
        view.manual.open = False
        view.manual.closed_at = event.at
        view.manual.closed_by = event.actor


def _time(value: str | None) -> datetime | None:
    return parse_iso(value) if value else None
