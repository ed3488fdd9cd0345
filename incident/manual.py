"""Minimal impact: the manual-handling channel and the cases handled through it.

While a system is down, customers are served by hand (hotline, counters, a workaround). Every
request handled that way is logged as a case so that it can be entered back into the recovered
system; the incident cannot be closed while a case is unreconciled unless the supervisor forces
it with a reason.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from incident.errors import InvalidTransition, InvalidValue
from incident.models import OPEN_STATES, EventType
from incident.playbooks import ManualChannel, Playbook

if TYPE_CHECKING:
    from incident.service import Service
    from incident.state import IncidentView, NoticeResult

_CASE_ID = re.compile(r"^M?0*(\d+)$", re.IGNORECASE)


def case_id(given: str, view: IncidentView) -> str:
    """The case called `given` (`M3`, `m003` or `3`), or InvalidValue listing the known ones."""
    match = _CASE_ID.match(given.strip())
    wanted = f"M{int(match.group(1)):03d}" if match else given.strip()
    if wanted not in view.cases:
        known = ", ".join(view.cases) or "none yet"
        raise InvalidValue(f"no manual case {given!r} in {view.id}", hint=f"cases: {known}")
    return wanted


def parse_amount(text: str | None, *, maximum: int) -> str | None:
    """A money amount as a decimal string with at most 2 decimals, at most `maximum`
    (InvalidValue otherwise)."""
    if text is None:
        return None
    cleaned = text.replace(",", "").strip()
    try:
        # Digits and one point only: Decimal also reads 1_000, 1e3 and "Infinity".
        if not re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", cleaned):
            raise InvalidOperation
        value = Decimal(cleaned)
    except InvalidOperation:
        raise InvalidValue(f"--amount {text!r} is not a number",
                           hint="e.g. --amount 5000 or --amount 1234.50") from None
    if not value.is_finite() or value < 0 or value.as_tuple().exponent < -2:  # type: ignore[operator]
        raise InvalidValue(f"--amount {text!r} must be zero or more with at most 2 decimals")
    if value > maximum:
        raise InvalidValue(f"--amount {text!r} is more than {maximum:,}",
                           hint="the bound is limits.max_amount in incident.yaml")
    return f"{value:.2f}"


def manual_details(book: Playbook, overrides: dict[str, Any] | None = None,
                   current: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manual channel's details as recorded: the playbook's, then the current ones, then
    the overrides given on the command line (each text in both languages)."""
    channel: ManualChannel = book.principles.minimal_impact.manual_channel

    def both(text: Any) -> dict[str, str] | None:
        return {"zh-CN": text.zh_CN, "en": text.en} if text is not None else None

    details: dict[str, Any] = dict(current) if current else {
        "hotline": channel.hotline or "", "hours": both(channel.hours),
        "counters": both(channel.counters), "workaround": both(channel.workaround)}
    for key, value in (overrides or {}).items():
        if value is not None:
            details[key] = value
    return details


class ManualChannelCases:
    """The manual-channel use cases (`service.manual`), recorded through `service.record`."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def open(self, ref: str, *, hotline: str | None = None,
                    texts: dict[str, dict[str, str] | None] | None = None) -> NoticeResult:
        """Open the manual channel, or change its details while open (`texts`: counters,
        hours, workaround, each {zh-CN, en}). Every later customer notice announces it."""
        def build(view: IncidentView, now: datetime) -> dict[str, Any]:
            current = None
            if view.manual is not None and view.manual.open:
                m = view.manual
                current = {"hotline": m.hotline, "hours": m.hours, "counters": m.counters,
                           "workaround": m.workaround}
            data = manual_details(view.playbook, {"hotline": hotline, **(texts or {})},
                                  current)
            data["steps_done"] = [s.id for s in view.playbook.steps
                                  if s.action == "open_manual_channel"
                                  and not view.step_marks.get(s.id)]
            return data

        return self.service.record(ref, EventType.MANUAL_OPENED, None, build, allowed=OPEN_STATES,
                           verb="open the manual channel of")

    def close(self, ref: str, *, note: str | None = None) -> NoticeResult:
        """Close the manual channel (cases stay to be reconciled)."""

        def build(view: IncidentView, now: datetime) -> dict[str, Any]:
            if not view.manual_open:
                raise InvalidTransition(f"the manual channel of {view.id} is not open")
            return {"note": note.strip()} if note and note.strip() else {}

        return self.service.record(ref, EventType.MANUAL_CLOSED, None, build,
                           verb="close the manual channel of")

    def log(self, ref: str, *, customer: str, request: str,
                   amount: str | None = None, urgent: bool = False) -> NoticeResult:
        """Record a request handled by hand (who took it and when come from the event)."""
        if not customer.strip():
            raise InvalidValue("--customer must not be empty")
        if not request.strip():
            raise InvalidValue("--request must not be empty: what did the customer need?")
        value = parse_amount(amount, maximum=self.service.rt.settings.limits.max_amount)

        def build(view: IncidentView, now: datetime) -> dict[str, Any]:
            if not view.manual_open:
                raise InvalidTransition(
                    f"the manual channel of {view.id} is not open",
                    hint=f"open it first: incident manual open {view.id[-6:]}")
            return {"case": f"M{len(view.cases) + 1:03d}", "customer": customer.strip(),
                    "request": request.strip(), "amount": value, "urgent": urgent}

        return self.service.record(ref, EventType.CASE_LOGGED, None, build,
                           verb="log a manual case on")

    def reconcile(self, ref: str, case: str, *,
                         note: str | None = None) -> NoticeResult:
        """Mark a case as entered back into the recovered system."""

        def build(view: IncidentView, now: datetime) -> dict[str, Any]:
            wanted = case_id(case, view)
            done = view.cases[wanted]
            if done.reconciled_at is not None:
                raise InvalidTransition(f"case {wanted} was reconciled already "
                                        f"(by {done.reconciled_by})")
            return {"case": wanted, "note": (note or "").strip()}

        return self.service.record(ref, EventType.CASE_RECONCILED, None, build,
                           verb="reconcile a case of")
