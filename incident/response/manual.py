"""Minimal impact: the manual-handling channel and the cases handled through it.

While a system is down, customers are served by hand (hotline, counters, a workaround). Every
request handled that way is logged as a case so that it can be entered back into the recovered
system; the incident cannot be closed while a case is unreconciled unless the supervisor forces
it with a reason (response/lifecycle.py). The rules on the data are in incident/manual.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from incident.errors import InvalidTransition, InvalidValue
from incident.manual import case_id, opened, parse_amount
from incident.models import OPEN_STATES, EventType
from incident.payloads import CaseLogged, CaseReconciled, ManualClosed
from incident.regions import given_per_region
from incident.response.journal import Journal
from incident.response.results import NoticeResult
from incident.state import IncidentView

OPEN = frozenset(OPEN_STATES)


class ManualChannel:
    """Open, change and close the manual channel; log and reconcile its cases."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def open(self, ref: str, *, hotline: str | Sequence[str] | None = None,
                    texts: dict[str, dict[str, str] | None] | None = None) -> NoticeResult:
        """Open the manual channel, or change its details while open (`texts`: counters,
        hours, workaround, each {zh-CN, en}; `hotline`: a number, or `NUMBER` and
        `REGION=NUMBER` values, see given_per_region). Every later customer notice
        announces it."""
        number = given_per_region([hotline] if isinstance(hotline, str) else hotline or (),
                                  "hotline")
        return self.journal.record(
            ref, EventType.MANUAL_OPENED, None,
            lambda view, now: opened(view, hotline=number, texts=texts),
            allowed=OPEN, verb="open the manual channel of")

    def close(self, ref: str, *, note: str | None = None) -> NoticeResult:
        """Close the manual channel (cases stay to be reconciled)."""

        def build(view: IncidentView, now: datetime) -> ManualClosed:
            if not view.manual_open:
                raise InvalidTransition(f"the manual channel of {view.id} is not open")
            return ManualClosed(note=note.strip()) if note and note.strip() else ManualClosed()

        return self.journal.record(ref, EventType.MANUAL_CLOSED, None, build,
                                   verb="close the manual channel of")

    def log(self, ref: str, *, customer: str, request: str,
                   amount: str | None = None, urgent: bool = False) -> NoticeResult:
        """Record a request handled by hand (who took it and when come from the event)."""
        if not customer.strip():
            raise InvalidValue("must not be empty", field="customer")
        if not request.strip():
            raise InvalidValue("must not be empty: what did the customer need?",
                               field="request")
        value = parse_amount(amount, maximum=self.journal.rt.settings.limits.max_amount)

        def build(view: IncidentView, now: datetime) -> CaseLogged:
            if not view.manual_open:
                raise InvalidTransition(
                    f"the manual channel of {view.id} is not open",
                    hint=f"open it first: incident manual open {view.id[-6:]}")
            return CaseLogged(case=f"M{len(view.cases) + 1:03d}", customer=customer.strip(),
                              request=request.strip(), amount=value, urgent=urgent)

        return self.journal.record(ref, EventType.CASE_LOGGED, None, build,
                                   verb="log a manual case on")

    def reconcile(self, ref: str, case: str, *,
                         note: str | None = None) -> NoticeResult:
        """Mark a case as entered back into the recovered system."""

        def build(view: IncidentView, now: datetime) -> CaseReconciled:
            wanted = case_id(case, view)
            done = view.cases[wanted]
            if done.reconciled_at is not None:
                raise InvalidTransition(f"case {wanted} was reconciled already "
                                        f"(by {done.reconciled_by})")
            return CaseReconciled(case=wanted, note=(note or "").strip())

        return self.journal.record(ref, EventType.CASE_RECONCILED, None, build,
                                   verb="reconcile a case of")
