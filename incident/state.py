"""The current state of an incident, derived from its events (never stored).

The data each event type carries (besides `notice`, the customer or internal notice it records):

- declared: title, playbook (the whole playbook as recorded), severity, drill, detected_at, eta,
  affected, regions, branches_selected, audience {file, rows, skipped, selected}, manual (see
  manual_opened; absent when the channel is not opened at start), scope {closed, open} (branches),
  steps_done [step ids completed by the start itself]
- updated: message, message_zh?, internal, status?, severity?, previous_severity?, eta?, to?
- declared and updated may carry warning: the CAP alert they were recorded from {identifier,
  sender, sent, msg_type, references [sender,identifier,sent], event, severity, expires,
  branches} (`incident warnings ingest --start`)
- eta_revised: eta, previous, reason;  resolved: message, resolved_at;
  closed: forced?, reason?, unreconciled? [case ids]
- manual_opened: hotline, counters {zh-CN, en}?, hours {zh-CN, en}, workaround {zh-CN, en}?,
  steps_done;  manual_closed: note?
- case_logged: case, customer, request, amount? (decimal string), urgent;
  case_reconciled: case, note?
- step_done: step, note?, steps_done;  step_skipped: step, reason
- parties_notified: parties [ids], phase, message, steps_done (notice.audience == "internal")
- party_acked: party, note?;  alerted: keys [what fell due], alerts [texts]
- note: section, text;  action_added: action, owner, due, text;  action_done: action, note?
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from incident.cap import reference_key
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
    hotline: str
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

    @property
    def warning_keys(self) -> list[tuple[str, str]]:
        """(sender, identifier) of the CAP alerts recorded on the incident and of the alerts
        they reference: a later alert naming any of them is about this incident."""
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
    d = first.data
    view = IncidentView(
        id=first.incident_id, title=d["title"], playbook=Playbook.model_validate(d["playbook"]),
        severity=d["severity"], status=Status.INVESTIGATING, drill=bool(d.get("drill")),
        detected_at=parse_iso(d["detected_at"]), declared_at=first.at, declared_by=first.actor,
        affected=list(d.get("affected", [])), regions=list(d.get("regions", [])),
        audience=dict(d.get("audience", {})),
        branches_selected=list(d.get("branches_selected", [])), scope=dict(d.get("scope", {})),
        severity_history=[(d["severity"], first.at)])
    for event in events:
        apply(view, event)
    return view


def apply(view: IncidentView, event: Event) -> None:
    """Apply one event to the view."""
    d = event.data
    view.event_count += 1
    view.last_event_at = event.at
    view.head = (event.seq, event.hash)
    kind = event.type
    if kind is EventType.DECLARED:
        view.eta_history.append(EtaVersion(_time(d.get("eta")), event.at, "", event.seq))
        if d.get("manual"):
            _open_manual(view, event)
    elif kind is EventType.UPDATED:
        if d.get("status"):
            view.status = Status(d["status"])
        if d.get("severity") and d["severity"] != view.severity:
            view.severity = d["severity"]
            view.severity_history.append((d["severity"], event.at))
        if "eta" in d:
            view.eta_history.append(EtaVersion(_time(d["eta"]), event.at,
                                               d.get("message", ""), event.seq))
    elif kind is EventType.ETA_REVISED:
        view.eta_history.append(EtaVersion(_time(d["eta"]), event.at, d["reason"], event.seq))
    elif kind is EventType.RESOLVED:
        view.status = Status.RESOLVED
        view.resolved_at = parse_iso(d["resolved_at"])
    elif kind is EventType.CLOSED:
        view.status = Status.CLOSED
        view.closed_at = event.at
        _close_manual(view, event)  # closing the incident closes its manual channel
        view.close_forced = d.get("reason") if d.get("forced") else None
    elif kind in _HANDLERS:
        _HANDLERS[kind](view, event)
    if d.get("warning"):
        view.warnings.append(dict(d["warning"]))
    for step in d.get("steps_done", []):
        view.step_marks.setdefault(step, []).append(
            StepMark("done", event.at, event.actor, auto=True))
    notice = d.get("notice")
    if notice and notice.get("audience") == "internal":
        view.party_notices.append(PartyNotice(seq=event.seq, at=event.at,
                                              parties=list(d.get("parties", [])),
                                              phase=notice["phase"],
                                              messages=int(notice["messages"])))
    elif notice:
        view.notices.append(NoticeSummary(seq=event.seq, phase=Phase(notice["phase"]),
                                          at=event.at, messages=int(notice["messages"]),
                                          recipients=int(notice["recipients"])))


def _open_manual(view: IncidentView, event: Event) -> None:
    m = event.data["manual"] if event.type is EventType.DECLARED else event.data
    view.manual = ManualChannelState(open=True, opened_at=event.at, opened_by=event.actor,
                                     hotline=m.get("hotline") or "", hours=dict(m["hours"]),
                                     counters=m.get("counters"), workaround=m.get("workaround"))


def _close_manual(view: IncidentView, event: Event) -> None:
    if view.manual is not None and view.manual.open:
        view.manual.open = False
        view.manual.closed_at = event.at
        view.manual.closed_by = event.actor


def _log_case(view: IncidentView, event: Event) -> None:
    d = event.data
    view.cases[d["case"]] = ManualCase(id=d["case"], customer=d["customer"],
                                       request=d["request"], amount=d.get("amount"),
                                       urgent=bool(d.get("urgent")), logged_at=event.at,
                                       logged_by=event.actor)


def _reconcile_case(view: IncidentView, event: Event) -> None:
    case = view.cases[event.data["case"]]
    case.reconciled_at = event.at
    case.reconciled_by = event.actor
    case.note = event.data.get("note") or ""


def _mark_step(view: IncidentView, event: Event) -> None:
    d = event.data
    state = "done" if event.type is EventType.STEP_DONE else "skipped"
    view.step_marks.setdefault(d["step"], []).append(
        StepMark(state, event.at, event.actor, reason=d.get("reason") or d.get("note") or ""))


def _ack(view: IncidentView, event: Event) -> None:
    party = event.data["party"]
    view.acks.setdefault(party, Acknowledgement(party, event.at, event.actor,
                                                event.data.get("note") or ""))


def _alerted(view: IncidentView, event: Event) -> None:
    view.alerted.update(event.data.get("keys", []))


def _note(view: IncidentView, event: Event) -> None:
    view.notes.setdefault(event.data["section"], []).append(
        (event.at, event.actor, event.data["text"]))


def _add_action(view: IncidentView, event: Event) -> None:
    d = event.data
    view.actions[d["action"]] = ActionItem(id=d["action"], text=d["text"], owner=d["owner"],
                                           due=parse_iso(d["due"]), added_at=event.at,
                                           added_by=event.actor)


def _action_done(view: IncidentView, event: Event) -> None:
    item = view.actions[event.data["action"]]
    item.done_at = event.at
    item.note = event.data.get("note") or ""


_HANDLERS = {
    EventType.MANUAL_OPENED: _open_manual, EventType.MANUAL_CLOSED: _close_manual,
    EventType.CASE_LOGGED: _log_case, EventType.CASE_RECONCILED: _reconcile_case,
    EventType.STEP_DONE: _mark_step, EventType.STEP_SKIPPED: _mark_step,
    EventType.PARTY_ACKED: _ack, EventType.ALERTED: _alerted, EventType.NOTE: _note,
    EventType.ACTION_ADDED: _add_action, EventType.ACTION_DONE: _action_done,
}


def _time(value: str | None) -> datetime | None:
    return parse_iso(value) if value else None
