"""Coordination use cases: checklist steps, notices to the parties, acknowledgements,
regulator report drafts and the alerts `incident watch` raises, recorded through the
journal."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from incident.checklist import Attention, attention, checklist, find
from incident.errors import InvalidTransition, InvalidValue
from incident.languages import document_language
from incident.manual import opened
from incident.models import OPEN_STATES, EventType
from incident.parties import check_parties, playbook_parties
from incident.payloads import Alerted, PartyAcked, StepDone, StepSkipped
from incident.regulator import Draft, draft, pick_duty, progress_messages
from incident.response.journal import Journal
from incident.response.results import AlertRound, NoticeResult, StepResult
from incident.state import IncidentView, fold
from incident.store import deliveries
from incident.timeutil import local_text


class Coordination:
    """Steps, notices to parties, acknowledgements, regulator drafts and alerts."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.rt = journal.rt

    def step(self, ref: str, step_id: str, *, done: bool = False,
             skip: str | None = None, note: str | None = None) -> StepResult:
        """Mark a checklist item done (running its action if that has not happened yet) or
        skipped with a reason. A recurring regulator duty is done once per report filed."""
        if done == (skip is not None):
            raise InvalidValue("a step is marked either done or skipped (with a reason): "
                               "give exactly one")
        if skip is not None and not skip.strip():
            raise InvalidValue("needs a reason", field="skip")
        view = self.journal.view(ref)
        item = find(view, step_id)
        if item is None:
            known = ", ".join(i.id for i in checklist(view))
            raise InvalidValue(f"no step {step_id!r} in {view.playbook.id}",
                               hint=f"steps: {known}")
        if done and item.every and item.due is None and item.state != "skipped":
            raise InvalidTransition(f"no {item.id} report is due on {view.id}: the incident "
                                    "is resolved and every report owed was filed")
        if item.state != "open" and not (item.every and done and item.state != "skipped"):
            mark = item.marks[0]
            raise InvalidTransition(f"step {item.id} is {item.state} already "
                                    f"(by {mark.by} at {local_text(mark.at, self.rt.zone)})")
        if skip is not None:
            skipped = StepSkipped(step=item.id, reason=skip.strip())
            result = self.journal.record(ref, EventType.STEP_SKIPPED, None,
                                         lambda v, now: skipped, verb="skip a step of")
            return StepResult(result=result, item=item, ran=None)
        if item.action == "open_manual_channel" and not view.manual_open:
            result = self.journal.record(ref, EventType.MANUAL_OPENED, None,
                                         lambda v, now: opened(v), allowed=frozenset(OPEN_STATES),
                                         verb="open the manual channel of")
            return StepResult(result=result, item=item, ran="open_manual_channel")
        if item.action == "notify_parties":
            step = next(s for s in view.playbook.steps if s.id == item.id)
            parties = (check_parties(self.rt, step.parties, option=f"steps.{step.id}.parties")
                       if step.parties else playbook_parties(self.rt, view))
            if parties:
                result = self.notify_parties(ref, parties, message=note or "", step=item.id)
                return StepResult(result=result, item=item, ran="notify_parties")

        def build(v: IncidentView, now: datetime) -> StepDone:
            return StepDone(step=item.id, note=note.strip()) if note else StepDone(step=item.id)

        result = self.journal.record(ref, EventType.STEP_DONE, None, build,
                                     verb="complete a step of")
        return StepResult(result=result, item=item, ran=None)

    def notify_parties(self, ref: str, parties: Sequence[str], *, message: str,
                       step: str | None = None, kind: str = "update") -> NoticeResult:
        """Send an internal notice to `parties` on its own (a step's action); every channel's
        configuration is checked before anything is recorded."""
        self.journal.check_channels()
        targets = check_parties(self.rt, parties)
        store = self.journal.store
        incident_id = store.resolve_id(ref)
        now = self.rt.clock.now()
        with store.write() as conn:
            store.lock_incident(conn, incident_id)
            view = fold(store.events(incident_id, conn))
            if not view.status.is_open and view.status.value != "resolved":
                raise InvalidTransition(f"{incident_id} is {view.status.value}")
            messages = self.journal.notify_in(conn, view, targets, kind=kind, message=message,
                                              now=now, steps_done=[step] if step else [])
        return NoticeResult(incident_id=incident_id, seq=view.event_count, phase=None,
                            messages=messages, view=view)

    def ack(self, ref: str, party: str, *, note: str | None = None) -> NoticeResult:
        """Record that `party` acknowledged the notices (first acknowledgement counts)."""
        (party,) = check_parties(self.rt, [party], option="PARTY")

        def build(view: IncidentView, now: datetime) -> PartyAcked:
            if party in view.acks:
                first = view.acks[party]
                raise InvalidTransition(
                    f"{party} acknowledged already at {local_text(first.at, self.rt.zone)} "
                    f"(recorded by {first.by})")
            if view.notified_at(party) is None:
                raise InvalidTransition(f"{party} has not been notified on {view.id}",
                                        hint="notify it first: incident update ID --to "
                                             f"{party} -m \"...\"")
            return PartyAcked(party=party, note=note.strip()) if note else PartyAcked(party=party)

        return self.journal.record(ref, EventType.PARTY_ACKED, None, build, verb="record an ack on")

    def alert(self, ref: str, items: Sequence[Attention]) -> NoticeResult:
        """Record that the supervisor was alerted about `items`, and send the alert parties
        (incident.yaml `alerts.parties`) an internal message."""
        parties = list(self.rt.settings.alerts.parties)

        def build(view: IncidentView, now: datetime) -> Alerted:
            return Alerted(keys=[a.key for a in items], alerts=[a.what for a in items],
                           message="; ".join(a.what for a in items))

        return self.journal.record(ref, EventType.ALERTED, None, build, verb="alert on",
                                   notify=(lambda v, d: (parties, "alert")) if parties else None)

    def raise_alerts(self, ref: str | None = None) -> AlertRound:
        """One round of `incident watch`: on the incident `ref` (or every one open or
        resolved), what falls due and was not alerted yet is recorded as an alert, with the
        internal message to the alert parties (to send: `AlertRound.recorded`)."""
        store = self.journal.store
        if ref:
            ids = [store.resolve_id(ref)]
        else:
            views = [fold(store.events(row.id)) for row in store.incidents()]
            ids = [v.id for v in views if v.status.is_open or v.status.value == "resolved"]
        found = AlertRound(watching=ids)
        for ident in ids:
            view = self.journal.view(ident)
            fresh = [a for a in self.attention(ident) if a.key not in view.alerted]
            if fresh:
                found.raised[ident] = fresh
                found.recorded.append(self.alert(ident, fresh))
        return found

    def attention(self, ref: str, now: datetime | None = None) -> list[Attention]:
        """What falls due on one incident now (the cadence warnings of every command)."""
        return attention(self.journal.view(ref), now or self.rt.clock.now(),
                         self.rt.settings.alerts.due_soon)

    def regulator_draft(self, ref: str, *, duty: str | None = None,
                        lang: str | None = None) -> Draft:
        """A draft of the regulator report `duty` (default: the next due) from the record."""
        store = self.journal.store
        events = store.events(store.resolve_id(ref))
        view = fold(events)
        now = self.rt.clock.now()
        item = pick_duty(view, duty, now)
        with store.read() as conn:
            counts = deliveries.counts(conn, view.id)
        reached = sum(by_state.get("sent", 0) for by_state in counts.values())
        language = lang or document_language(self.rt.settings.default_language)
        return draft(self.rt, view, item, lang=language, now=now, customers_reached=reached,
                     updates=progress_messages(events, language))
