"""Reading the record: one incident's state with its delivery counts, the list of
incidents, the timeline, the CAP alerts recorded, and the chain's verification."""

from __future__ import annotations

from typing import Any

from incident.checklist import attention
from incident.models import Event, Status
from incident.response.journal import Journal
from incident.response.results import StatusResult
from incident.state import IncidentView, fold
from incident.store import deliveries, receipts


class Queries:
    """What the record says, never changing it."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.rt = journal.rt

    def view(self, ref: str) -> IncidentView:
        """The current state of one incident."""
        return self.journal.view(ref)

    def status(self, ref: str) -> StatusResult:
        """State, ETA, cadence, delivery counts and recent failures of one incident."""
        view = self.view(ref)
        with self.journal.store.read() as conn:
            counts = deliveries.counts(conn, view.id)
            internal = deliveries.counts(conn, view.id, parties=True)
            failures = deliveries.failures(conn, view.id, limit=10)
            retrying = deliveries.retrying(conn, view.id)
            confirmed = receipts.counts(conn, view.id)
        now = self.rt.clock.now()
        return StatusResult(view=view, counts=counts, failures=failures, now=now,
                            retrying=retrying, internal_counts=internal, receipts=confirmed,
                            attention=attention(view, now, self.rt.settings.alerts.due_soon))

    def incidents(self, *, include_closed: bool = False) -> list[StatusResult]:
        """Open incidents (or all), newest first, each with its delivery counts."""
        out = []
        rows = self.journal.store.incidents()
        with self.journal.store.read() as conn:
            all_counts = {row.id: deliveries.counts(conn, row.id) for row in rows}
        now = self.rt.clock.now()
        for row in rows:
            view = fold(self.journal.store.events(row.id))
            if include_closed or view.status is not Status.CLOSED:
                out.append(StatusResult(view=view, counts=all_counts.get(row.id, {}),
                                        failures=[], now=now))
        return out

    def timeline(self, ref: str) -> tuple[IncidentView, list[Event]]:
        """Every event of an incident, in order."""
        incident_id = self.journal.store.resolve_id(ref)
        events = self.journal.store.events(incident_id)
        return fold(events), events

    def receipts(self, incident_id: str) -> list[Any]:
        """The incident's delivery receipts by channel, state and source (for the timeline)."""
        with self.journal.store.read() as conn:
            return receipts.summary(conn, incident_id)

    def verify(self, ref: str | None = None) -> dict[str, list[str]]:
        """Recompute the event chain of one incident or of all; problems by incident."""
        store = self.journal.store
        ids = [store.resolve_id(ref)] if ref else [r.id for r in store.incidents()]
        return {incident_id: store.verify(incident_id) for incident_id in ids}

    def reached_parties(self, incident_id: str, notice_seq: int) -> set[str]:
        """The parties an internal notice reached so far (a message accepted)."""
        with self.journal.store.read() as conn:
            return deliveries.reached_parties(conn, incident_id, notice_seq)

    def failed_deliveries(self, ref: str) -> list[Any]:
        """Every permanently failed delivery of an incident."""
        with self.journal.store.read() as conn:
            return deliveries.failures(conn, self.journal.store.resolve_id(ref))

