"""Minimal impact: the manual-handling channel and the cases handled through it.

While a system is down, customers are served by hand (hotline, counters, a workaround). Every
request handled that way is logged as a case so that it can be entered back into the recovered
system; the incident cannot be closed while a case is unreconciled unless the supervisor forces
it with a reason. The rules on its data live here; the use cases in response/manual.py.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from incident.errors import InvalidValue
from incident.payloads import ManualOpened
from incident.playbooks import ManualChannel, Playbook

if TYPE_CHECKING:
    from incident.state import IncidentView

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
        raise InvalidValue(f"{text!r} is not a number", field="amount",
                           hint="e.g. 5000 or 1234.50") from None
    if not value.is_finite() or value < 0 or value.as_tuple().exponent < -2:  # type: ignore[operator]
        raise InvalidValue(f"{text!r} must be zero or more with at most 2 decimals",
                           field="amount")
    if value > maximum:
        raise InvalidValue(f"{text!r} is more than {maximum:,}", field="amount",
                           hint="the bound is limits.max_amount in incident.yaml")
    return f"{value:.2f}"


def manual_details(book: Playbook, overrides: dict[str, Any] | None = None,
                   current: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manual channel's details as recorded: the playbook's, then the current ones, then
    the overrides given on the command line (each text in both languages)."""
    channel: ManualChannel = book.principles.minimal_impact.manual_channel

    def both(text: Any) -> dict[str, str] | None:
        return text.texts() if text is not None else None

    details: dict[str, Any] = dict(current) if current else {
        "hotline": channel.hotline or "", "hours": both(channel.hours),
        "counters": both(channel.counters), "workaround": both(channel.workaround)}
    for key, value in (overrides or {}).items():
        if value is not None:
            details[key] = value
    return details


def opened(view: IncidentView, *, hotline: str | dict[str, str] | None = None,
           texts: dict[str, dict[str, str] | None] | None = None) -> ManualOpened:
    """The payload of opening the manual channel of `view` (or changing its details while it
    is open): its current details with the given ones over them, and the checklist steps
    this completes."""
    current = None
    if view.manual is not None and view.manual.open:
        m = view.manual
        current = {"hotline": m.hotline, "hours": m.hours, "counters": m.counters,
                   "workaround": m.workaround}
    data = manual_details(view.playbook, {"hotline": hotline, **(texts or {})}, current)
    data["steps_done"] = [s.id for s in view.playbook.steps
                          if s.action == "open_manual_channel" and not view.step_marks.get(s.id)]
    return ManualOpened(**data)
