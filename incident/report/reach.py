"""How fast and how far customers were reached: the fast-response and minimal-impact
principles (verdicts by the rules of `incident.report.checks`).

- fast response — *first_notice_on_time* (key): the first customer message accepted by a
  provider no later than `fast_response.first_notice_within` after detection;
  *steps_on_time*: no checklist step done after its deadline or left open past it.
- minimal impact — *manual_channel_on_time* (key): the manual channel opened no later than
  the due time of the playbook's `open_manual_channel` step (else `first_notice_within`) after
  detection; *cases_reconciled*: no manual case outstanding; *urgent_first* (when the playbook
  puts urgent customers first and there are some): every urgent customer reached, the last of
  them no later than the median customer.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from incident.checklist import Item
from incident.privacy import scrub
from incident.report.checks import Check, iso, principle, seconds, since, text
from incident.report.confirmed import reach_json
from incident.state import IncidentView
from incident.store import Connection
from incident.store import reports as q

# ---------------------------------------------------------------------------- fast response


def judge_fast_response(view: IncidentView, first: Any, reach: dict[str, q.Reach],
                        items: list[Item], now: datetime) -> dict[str, Any]:
    """Fast response: the first notice accepted in time, checklist steps on time."""
    target = view.playbook.principles.fast_response.first_notice_within
    accepted = reach["customers"].first if reach else None
    steps = [_step(item, now) for item in items if item.kind == "step"]
    counts = {state: sum(1 for s in steps if s["state"] == state)
              for state in ("on_time", "late", "skipped", "missed", "pending")}
    figures: dict[str, Any] = {
        "detection_to_declared_s": since(view.detected_at, view.declared_at),
        "declared_to_first_notice_s": since(view.declared_at, accepted),
        "detection_to_first_notice_s": since(view.detected_at, accepted),
        "first_notice_target_s": seconds(target),
        "reach": {name: reach_json(r, first.at) for name, r in reach.items()},
        "steps": {**counts, "items": steps},
    }
    first_ok = accepted is not None and accepted - view.detected_at <= target
    bad_steps = counts["late"] + counts["missed"]
    checks = [
        Check("first_notice_on_time", first_ok, figures["detection_to_first_notice_s"],
              seconds(target), key=True),
        Check("steps_on_time", bad_steps == 0 if steps else None, bad_steps, 0, unit="count"),
    ]
    return principle(checks, figures)


def _step(item: Item, now: datetime) -> dict[str, Any]:
    done = item.done_at
    due = item.due
    if done is not None:
        state = "late" if due is not None and done > due else "on_time"
    elif item.state == "skipped":
        state = "skipped"
    else:
        state = "missed" if due is not None and due < now else "pending"
    skip = next((m for m in item.marks if m.state == "skipped"), None)
    return {"id": item.id, "title": text(item.title), "owner": item.owner, "due": iso(due),
            "state": state, "done_at": iso(done),
            "late_by_s": since(due, done) if state == "late" and due else None,
            "overdue_s": since(due, now) if state == "missed" and due else None,
            "skipped_at": iso(skip.at) if skip else None,
            "reason": scrub(skip.reason) if skip else ""}


# ---------------------------------------------------------------------------- minimal impact


def _manual_target(view: IncidentView) -> timedelta:
    step = next((s for s in view.playbook.steps if s.action == "open_manual_channel"), None)
    return step.due if step else view.playbook.principles.fast_response.first_notice_within


def judge_minimal_impact(view: IncidentView, first: Any, reach: dict[str, q.Reach],
                         items: list[Item], conn: Connection, now: datetime) -> dict[str, Any]:
    """Minimal impact: manual channel opened in time, cases reconciled, urgent first."""
    book = view.playbook
    manual = view.manual
    target = _manual_target(view)
    end = view.resolved_at or now
    cases = list(view.cases.values())
    amounts = [_decimal(c.amount) for c in cases if c.amount]
    total = sum((a for a in amounts if a is not None), Decimal(0)) if amounts else None
    urgent_total, urgent_reached, urgent_last = (
        q.urgent_reach(conn, view.id, first.seq) if first else (0, 0, None))
    median = reach["customers"].at[50] if reach else None
    figures: dict[str, Any] = {
        "customers_affected": first.recipients if first else
        int(view.audience.get("selected", 0)),
        "customers_reached": reach["customers"].reached if reach else 0,
        "impact_duration_s": since(view.detected_at, view.resolved_at),
        "impact_ongoing": view.resolved_at is None,
        "manual_channel": {
            "opened_at": iso(manual.opened_at) if manual else None,
            "closed_at": iso(manual.closed_at) if manual else None,
            "open_s": (since(manual.opened_at, manual.closed_at or max(end, manual.opened_at))
                       if manual else None),
            "opened_after_s": since(view.detected_at, manual.opened_at) if manual else None,
            "target_s": seconds(target),
        },
        "cases": {
            "logged": len(cases), "urgent": sum(1 for c in cases if c.urgent),
            "reconciled": sum(1 for c in cases if c.reconciled_at),
            "outstanding": sum(1 for c in cases if not c.reconciled_at),
            "amount_total": str(total) if total is not None else None,
            "items": [{"id": c.id, "customer": scrub(c.customer), "request": scrub(c.request),
                       "amount": c.amount, "urgent": c.urgent, "logged_at": iso(c.logged_at),
                       "reconciled_at": iso(c.reconciled_at), "note": scrub(c.note)}
                      for c in cases],
        },
        "urgent": {
            "customers": urgent_total, "reached": urgent_reached,
            "all_reached_s": (since(first.at, urgent_last)
                              if first and urgent_total and urgent_reached == urgent_total
                              else None),
            "customers_p50_s": since(first.at, median) if first else None,
        },
    }
    opened_in_time = manual is not None and manual.opened_at - view.detected_at <= target
    urgent_applies = book.principles.minimal_impact.urgent_first and urgent_total > 0
    urgent_ok = (urgent_reached == urgent_total and urgent_last is not None
                 and median is not None and urgent_last <= median)
    checks = [
        Check("manual_channel_on_time", opened_in_time,
              figures["manual_channel"]["opened_after_s"], seconds(target), key=True),
        Check("cases_reconciled", figures["cases"]["outstanding"] == 0,
              figures["cases"]["outstanding"], 0, unit="count"),
        Check("urgent_first", urgent_ok if urgent_applies else None,
              figures["urgent"]["all_reached_s"], figures["urgent"]["customers_p50_s"]),
    ]
    return principle(checks, figures)


def _decimal(value: str) -> Decimal | None:
    try:
        return Decimal(value)
    except InvalidOperation:
        return None
