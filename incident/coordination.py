"""Coordination use cases: checklist steps, acknowledgements, regulator report drafts and the
alerts `incident watch` raises. Mixed into Service (uses its `record`, `view`, `rt`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from incident.checklist import Attention, Item, attention, checklist, find
from incident.errors import InvalidTransition, InvalidValue
from incident.models import EventType
from incident.parties import check_parties, playbook_parties
from incident.regulator import Draft, draft, pick_duty, progress_messages
from incident.state import IncidentView, NoticeResult, fold
from incident.store import deliveries
from incident.timeutil import local_text

if TYPE_CHECKING:
    from incident.service import Service


@dataclass(frozen=True)
class StepResult:
    """What `incident step` recorded, and the action it ran (if any)."""

    result: NoticeResult
    item: Item
    ran: str | None  # "open_manual_channel" / "notify_parties" when the step's action ran


class Coordination:
    """Steps, acknowledgements, regulator drafts and alerts (`service.coordination`)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.rt = service.rt

    def step(self, ref: str, step_id: str, *, done: bool = False,
             skip: str | None = None, note: str | None = None) -> StepResult:
        """Mark a checklist item done (running its action if that has not happened yet) or
        skipped with a reason. A recurring regulator duty is done once per report filed."""
        if done == (skip is not None):
            raise InvalidValue("give exactly one of --done or --skip REASON")
        if skip is not None and not skip.strip():
            raise InvalidValue("--skip needs a reason")
        view = self.service.view(ref)
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
            result = self.service.record(ref, EventType.STEP_SKIPPED, None,
                                 lambda v, now: {"step": item.id, "reason": skip.strip()},
                                 verb="skip a step of")
            return StepResult(result, item, None)
        if item.action == "open_manual_channel" and not view.manual_open:
            return StepResult(self.service.manual.open(ref), item, "open_manual_channel")
        if item.action == "notify_parties":
            step = next(s for s in view.playbook.steps if s.id == item.id)
            parties = (check_parties(self.rt, step.parties, option=f"steps.{step.id}.parties")
                       if step.parties else playbook_parties(self.rt, view))
            if parties:
                return StepResult(self.notify_parties(ref, parties, message=note or "",
                                                      step=item.id), item, "notify_parties")

        def build(v: IncidentView, now: datetime) -> dict[str, Any]:
            return {"step": item.id, **({"note": note.strip()} if note else {})}

        return StepResult(self.service.record(ref, EventType.STEP_DONE, None, build,
                                      verb="complete a step of"), item, None)

    def notify_parties(self, ref: str, parties: Sequence[str], *, message: str,
                       step: str | None = None, kind: str = "update") -> NoticeResult:
        """Send an internal notice to `parties` on its own (a step's action); every channel's
        configuration is checked before anything is recorded."""
        self.service.check_channels()
        targets = check_parties(self.rt, parties)
        incident_id = self.service.store.resolve_id(ref)
        now = self.rt.clock.now()
        with self.service.store.write() as conn:
            self.service.store.lock_incident(conn, incident_id)
            view = fold(self.service.store.events(incident_id, conn))
            if not view.status.is_open and view.status.value != "resolved":
                raise InvalidTransition(f"{incident_id} is {view.status.value}")
            messages = self.service.notify_in(conn, view, targets, kind=kind, message=message,
                                      now=now, steps_done=[step] if step else [])
        return NoticeResult(incident_id=incident_id, seq=view.event_count, phase=None,
                            messages=messages, view=view)

    def ack(self, ref: str, party: str, *, note: str | None = None) -> NoticeResult:
        """Record that `party` acknowledged the notices (first acknowledgement counts)."""
        (party,) = check_parties(self.rt, [party], option="PARTY")

        def build(view: IncidentView, now: datetime) -> dict[str, Any]:
            if party in view.acks:
                first = view.acks[party]
                raise InvalidTransition(
                    f"{party} acknowledged already at {local_text(first.at, self.rt.zone)} "
                    f"(recorded by {first.by})")
            if view.notified_at(party) is None:
                raise InvalidTransition(f"{party} has not been notified on {view.id}",
                                        hint="notify it first: incident update ID --to "
                                             f"{party} -m \"...\"")
            return {"party": party, **({"note": note.strip()} if note else {})}

        return self.service.record(ref, EventType.PARTY_ACKED, None, build, verb="record an ack on")

    def alert(self, ref: str, items: Sequence[Attention]) -> NoticeResult:
        """Record that the supervisor was alerted about `items`, and send the alert parties
        (incident.yaml `alerts.parties`) an internal message."""
        parties = list(self.rt.settings.alerts.parties)

        def build(view: IncidentView, now: datetime) -> dict[str, Any]:
            return {"keys": [a.key for a in items], "alerts": [a.what for a in items],
                    "message": "; ".join(a.what for a in items)}

        return self.service.record(ref, EventType.ALERTED, None, build, verb="alert on",
                           notify=(lambda v, d: (parties, "alert")) if parties else None)

    def attention(self, ref: str, now: datetime | None = None) -> list[Attention]:
        """What falls due on one incident now (the cadence warnings of every command)."""
        return attention(self.service.view(ref), now or self.rt.clock.now(),
                         self.rt.settings.alerts.due_soon)

    def regulator_draft(self, ref: str, *, duty: str | None = None,
                        lang: str | None = None) -> Draft:
        """A draft of the regulator report `duty` (default: the next due) from the record."""
        view, events = self.service.timeline(ref)
        now = self.rt.clock.now()
        item = pick_duty(view, duty, now)
        with self.service.store.read() as conn:
            counts = deliveries.counts(conn, view.id)
        reached = sum(by_state.get("sent", 0) for by_state in counts.values())
        language = lang or self.rt.settings.default_language
        return draft(self.rt, view, item, lang=language, now=now, customers_reached=reached,
                     updates=progress_messages(events, language))
