"""Escalation to the next channel (`incident escalate`, also run by `watch`, `receipts serve`
and after `deliver`): a customer whose message was accepted but not confirmed (delivered,
answered) within a playbook step's delay gets the same notice on the step's channel, or, at a
manual_callback step, a call-back case on the manual channel for the hotline team.

Each step is applied at most once per message row: the new row is the same notice on another
channel (outbox uniqueness makes a rerun add nothing), and a customer gets one call-back case
per incident. What each step did is one ESCALATED event (counts, never contacts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from incident.manual import opened
from incident.models import EventType, Status
from incident.notices import message_id, sender_domain
from incident.payloads import CaseLogged, Escalated
from incident.playbooks import EscalationStep
from incident.response.journal import Journal
from incident.response.results import Sends
from incident.state import IncidentView, fold
from incident.store import escalation as esc
from incident.store import outbox as ob
from incident.timeutil import format_duration

CALLBACK_REQUEST = "Call back: notice #{seq} was not confirmed on {channels}"
CALLBACK_PREFIX = "Call back: "


@dataclass(kw_only=True)
class Escalations(Sends):
    """What `incident escalate` did: the ESCALATED events' payloads, by incident (`sent`:
    sending what was queued, when something was)."""

    done: dict[str, list[Escalated]] = field(default_factory=dict)
    reminders: list[str] = field(default_factory=list)  # roll-call rounds applied with it

    @property
    def messages(self) -> int:
        """Outbox rows queued on a next channel (to be sent by the dispatcher)."""
        return sum(e.messages for each in self.done.values() for e in each)

    @property
    def cases(self) -> int:
        """Call-back cases logged."""
        return sum(len(e.cases) for each in self.done.values() for e in each)

    def lines(self) -> list[str]:
        """One line per step applied (counts only), for people."""
        return [f"{incident_id}: escalation step {e.step} (after {e.after}) → {e.to}: "
                f"{e.customers} customers, {e.messages} messages, {len(e.cases)} call-back "
                "cases" + (f", {e.no_address} with no contact there" if e.no_address else "")
                for incident_id, each in self.done.items() for e in each] + self.reminders


class Escalation:
    """Apply due escalation steps of the incidents' playbooks."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def escalate(self, ref: str | None = None) -> Escalations:
        """Apply every due step to incident `ref`, or to every incident not closed."""
        store = self.journal.store
        ids = [store.resolve_id(ref)] if ref else [
            i.id for i in store.incidents() if self._open(i.id)]
        result = Escalations()
        for incident_id in ids:
            done = self._escalate(incident_id)
            if done:
                result.done[incident_id] = done
        return result

    def _open(self, incident_id: str) -> bool:
        view = fold(self.journal.store.events(incident_id))
        return view.status is not Status.CLOSED and bool(view.playbook.escalation)

    def _escalate(self, incident_id: str) -> list[Escalated]:
        store, rt = self.journal.store, self.journal.rt
        now = rt.clock.now()
        done: list[Escalated] = []
        with store.write() as conn:
            store.lock_incident(conn, incident_id)
            view = fold(store.events(incident_id, conn))
            if view.status is Status.CLOSED:
                return done
            for number, step in enumerate(view.playbook.escalation, start=1):
                rows = esc.unconfirmed(conn, incident_id, accepted_before=now - step.after,
                                       confirmed=set(step.unless), source=step.from_,
                                       exclude=None if step.to == "manual_callback" else step.to)
                # Only customer notices escalate (not a reply's acknowledgement).
                notices = {n.seq for n in view.notices}
                rows = [r for r in rows if r.notice_seq in notices]
                if not rows:
                    continue
                if step.to == "manual_callback":
                    payload = self._callbacks(conn, view, number, step, rows, now)
                else:
                    payload = self._next_channel(conn, view, number, step, rows, now)
                if payload is not None:
                    self.journal.append(conn, view, EventType.ESCALATED, payload, now)
                    done.append(payload)
        return done

    def _next_channel(self, conn: Any, view: IncidentView, number: int, step: EscalationStep,
                      rows: list[Any], now: datetime) -> Escalated | None:
        """Queue each row's notice on `step.to` (a row there already: nothing to add)."""
        rt = self.journal.rt
        domain = sender_domain(rt)
        reach = esc.contacts(conn, view.id, {r.recipient_ref for r in rows})
        transport = rt.settings.channels.transports[step.to]
        new, missing = [], 0
        for r in rows:
            address = reach.get(r.recipient_ref, {}).get(step.to)
            if not address:
                missing += 1
                continue
            key = ob.idempotency_key(view.id, r.notice_seq, r.recipient_ref, step.to)
            new.append({"incident_id": view.id, "notice_seq": r.notice_seq, "channel": step.to,
                        "recipient_ref": r.recipient_ref, "recipient_name": r.recipient_name,
                        "address": address, "language": r.language, "priority": r.priority,
                        "message_id": message_id(key, view.id, domain), "idempotency_key": key,
                        "fallback_address": None, "transport": transport, "region": r.region})
        there = esc.existing_keys(conn, [row["idempotency_key"] for row in new])
        new = [row for row in new if row["idempotency_key"] not in there]
        if not new:
            return None
        queued = ob.enqueue(conn, new, now=now)
        customers = len({row["recipient_ref"] for row in new})
        return Escalated(step=number, after=format_duration(step.after), to=step.to,
                         source=step.from_, customers=customers, messages=queued,
                         no_address=missing)

    def _callbacks(self, conn: Any, view: IncidentView, number: int, step: EscalationStep,
                   rows: list[Any], now: datetime) -> Escalated | None:
        """One call-back case per customer not called back yet; the manual channel is opened
        first (recorded) if it is not open."""
        called = {c.customer for c in view.cases.values()
                  if c.request.startswith(CALLBACK_PREFIX)}
        first: dict[str, Any] = {}
        channels: dict[str, set[str]] = {}
        for r in rows:
            if r.recipient_ref not in called:
                first.setdefault(r.recipient_ref, r)
                channels.setdefault(r.recipient_ref, set()).add(r.channel)
        if not first:
            return None
        if not view.manual_open:
            self.journal.append(conn, view, EventType.MANUAL_OPENED, opened(view), now)
        cases = []
        for ref, r in first.items():
            case = CaseLogged(case=f"M{len(view.cases) + 1:03d}", customer=ref,
                              request=CALLBACK_REQUEST.format(
                                  seq=r.notice_seq, channels=", ".join(sorted(channels[ref]))),
                              urgent=r.priority == 0)
            self.journal.append(conn, view, EventType.CASE_LOGGED, case, now)
            cases.append(case.case)
        return Escalated(step=number, after=format_duration(step.after), to=step.to,
                         source=step.from_, customers=len(cases), messages=0, cases=cases)
