"""Opt-outs: the operator's side of the suppression list (`incident optout add | remove |
list | override`); Twilio 21610 and opted-out receipts add to it on their own
(delivery/dispatcher.py, store/receipts.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from incident.errors import InvalidValue
from incident.models import EventType
from incident.payloads import OptoutOverridden
from incident.response.journal import NOT_CLOSED, Journal
from incident.response.results import Result
from incident.store import optouts


@dataclass(kw_only=True)
class Listed(Result):
    """A change to the suppression list: the number (E.164) and whether anything changed."""

    number: str
    changed: bool


@dataclass(kw_only=True)
class Suppressed(Result):
    """The numbers on the suppression list now."""

    rows: list[Any] = field(default_factory=list)


@dataclass(kw_only=True)
class Overridden(Result):
    """An incident's override: the event recorded and the rows put back to pending."""

    incident_id: str
    seq: int
    requeued: int


class Optouts:
    """Keep the suppression list: numbers whose owners opted out of SMS and calls."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def add(self, phone: str, *, reason: str) -> Listed:
        """Put a number on the list (source `operator`, with the operator and the reason)."""
        number = self._number(phone)
        if not reason.strip():
            raise InvalidValue("reason: must not be empty")
        rt = self.journal.rt
        with self.journal.store.write() as conn:
            changed = optouts.add(conn, number, source="operator", reason=reason.strip(),
                                  actor=rt.operator, now=rt.clock.now())
        return Listed(number=number, changed=changed)

    def remove(self, phone: str) -> Listed:
        """Take a number off the list (the removal and who made it are kept)."""
        number = self._number(phone)
        rt = self.journal.rt
        with self.journal.store.write() as conn:
            changed = optouts.remove(conn, number, actor=rt.operator, now=rt.clock.now())
        return Listed(number=number, changed=changed)

    def list(self) -> Suppressed:
        """The numbers on the list, oldest first."""
        with self.journal.store.read() as conn:
            return Suppressed(rows=optouts.listed(conn))

    def override(self, ref: str, *, reason: str) -> Overridden:
        """Let incident `ref` notify suppressed numbers (an obligation), recorded as an event
        with the reason; its rows skipped so far are sent by the next `deliver`."""
        if not reason.strip():
            raise InvalidValue("reason: must not be empty")
        with self.journal.store.read() as conn:
            listed = len(optouts.suppressed(conn))

        def build(view: Any, now: datetime) -> OptoutOverridden:
            return OptoutOverridden(reason=reason.strip(), suppressed=listed)

        result = self.journal.record(ref, EventType.OPTOUT_OVERRIDDEN, None, build,
                                     allowed=NOT_CLOSED, verb="override the opt-outs of")
        with self.journal.store.write() as conn:
            requeued = optouts.unskip(conn, result.incident_id, now=self.journal.rt.clock.now())
        return Overridden(incident_id=result.incident_id, seq=result.seq, requeued=requeued)

    def _number(self, phone: str) -> str:
        from incident.audience.phones import parse_phone

        number, problem = parse_phone(phone, self.journal.rt.settings.phone_region)
        if number is None:
            raise InvalidValue(f"phone: {problem}")
        return number
