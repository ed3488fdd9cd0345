"""The post-mortem figures of one incident, and a verdict per principle.

Figures come from the incident's events (folded into its view and checklist) and from SQL
aggregates over its outbox (`incident.store.reports`). Durations are whole seconds, times
ISO 8601 UTC; a figure that cannot be known yet (no recovery, nobody reached) is null.

Verdict rules. Each principle has a few checks, each judged against the playbook's own
targets; a check is passed, failed, or not applicable (null: nothing to judge yet or nothing
the playbook asks for). One check per principle is its key check.

- **met**: every applicable check passed.
- **missed**: the key check failed, or none of the applicable checks passed.
- **partly**: anything in between (the key check passed or was not applicable, another failed).

The checks:

- fast response — *first_notice_on_time* (key): the first customer message accepted by a
  provider no later than `fast_response.first_notice_within` after detection;
  *steps_on_time*: no checklist step done after its deadline or left open past it.
- minimal impact — *manual_channel_on_time* (key): the manual channel opened no later than
  the due time of the playbook's `open_manual_channel` step (else `first_notice_within`) after
  detection; *cases_reconciled*: no manual case outstanding; *urgent_first* (when the playbook
  puts urgent customers first and there are some): every urgent customer reached, the last of
  them no later than the median customer.
- coordination — *regulator_deadlines* (key; once a deadline has fallen due): every regulator
  deadline met on time (a late or missing report fails, a skipped duty does not);
  *parties_notified*: every party of `coordination.parties` notified, by the due time of the
  `notify_parties` step when the playbook has one; *parties_acknowledged*: every notified party
  acknowledged.
- transparency — *update_cadence* (key): no gap between customer notices (or, while open, since
  the last one) longer than the cadence promised at the grade of the time
  (`severity.levels[].update_every`, else `transparency.update_every`); *eta_given*: the first
  notice stated an ETA; *eta_kept_current*: no announced ETA passed while the service was still
  down without a new one; *recovery_notice*: once resolved, a recovery notice was sent.

A drill is scored by exactly the same rules.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from incident.checklist import Item, checklist
from incident.models import Event, Phase, Text
from incident.payloads import Declared, Updated, WithNotice, payload_of
from incident.playbooks import RegulatorDuty
from incident.privacy import scrub, scrub_error
from incident.state import IncidentView
from incident.store import Connection
from incident.store import reports as q
from incident.timeutil import to_iso

SECTIONS = ("summary", "root_cause", "trigger", "resolution", "went_well", "went_wrong", "lucky")
PRINCIPLES = ("fast_response", "minimal_impact", "coordination", "transparency")
VERDICTS = ("met", "partly", "missed")
SCHEMA = "incident-report/1"


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC text, or None."""
    return to_iso(value) if value is not None else None


def seconds(value: timedelta | None) -> int | None:
    """Whole seconds (rounded down towards minus infinity), or None."""
    return math.floor(value.total_seconds()) if value is not None else None


def since(start: datetime, end: datetime | None) -> int | None:
    """Seconds from `start` to `end`, or None when `end` is unknown."""
    return seconds(end - start) if end is not None else None


def text(value: Text) -> dict[str, str]:
    """A bilingual text as JSON."""
    return {"zh-CN": value.zh_CN, "en": value.en}


@dataclass(frozen=True)
class Check:
    """One check of a principle against a playbook target."""

    id: str
    passed: bool | None  # None: not applicable
    value: int | None = None
    target: int | None = None
    unit: str = "seconds"  # seconds | count
    key: bool = False

    def json(self) -> dict[str, Any]:
        """As JSON."""
        return {"id": self.id, "key": self.key, "passed": self.passed, "value": self.value,
                "target": self.target, "unit": self.unit}


def verdict(checks: list[Check]) -> str:
    """met / partly / missed, by the rules in the module docstring."""
    judged = [c for c in checks if c.passed is not None]
    if all(c.passed for c in judged):
        return "met"
    if any(c.key and c.passed is False for c in judged) or not any(c.passed for c in judged):
        return "missed"
    return "partly"


def principle(checks: list[Check], figures: dict[str, Any]) -> dict[str, Any]:
    """A principle's verdict, checks and figures as JSON."""
    return {"verdict": verdict(checks), "checks": [c.json() for c in checks],
            "figures": figures}


# ---------------------------------------------------------------------------- the report


def measure(view: IncidentView, events: list[Event], conn: Connection, *, now: datetime,
            party_names: dict[str, Text] | None = None) -> dict[str, Any]:
    """Every figure of the post-mortem report of one incident, as a JSON-ready dict."""
    customer_seqs = [n.seq for n in view.notices]
    first = view.notices[0] if view.notices else None
    reach = q.reach(conn, view.id, first.seq) if first else {}
    deliveries = q.notices(conn, view.id, customer_seqs)
    items = checklist(view, now)
    fast = _fast_response(view, first, reach, items, now)
    minimal = _minimal_impact(view, first, reach, items, conn, now)
    coordination = _coordination(view, items, conn, now, party_names or {})
    transparency = _transparency(view, events, first, reach, deliveries, conn, now)
    principles = {"fast_response": fast, "minimal_impact": minimal,
                  "coordination": coordination, "transparency": transparency}
    return {
        "schema": SCHEMA,
        "generated_at": iso(now),
        "incident": _incident(view),
        "timestamps": _timestamps(view, first, reach, coordination),
        "verdicts": {name: p["verdict"] for name, p in principles.items()},
        "principles": principles,
        "sections": {s: [{"at": iso(at), "by": by, "text": scrub(t)}
                         for at, by, t in view.notes.get(s, [])] for s in SECTIONS},
        "actions": [_action(item, now) for item in view.actions.values()],
        "timeline": [_timeline_entry(e) for e in events],
    }


def _incident(view: IncidentView) -> dict[str, Any]:
    book = view.playbook
    return {
        "id": view.id, "title": view.title, "drill": view.drill,
        "playbook": {"id": book.id, "name": text(book.name)}, "kind": book.kind.value,
        "severity": view.severity,
        "severity_name": text(book.level(view.severity).name),
        "severity_history": [{"grade": g, "at": iso(at)} for g, at in view.severity_history],
        "status": view.status.value, "declared_by": view.declared_by,
        "affected": list(view.affected), "regions": list(view.regions),
        "detected_at": iso(view.detected_at), "declared_at": iso(view.declared_at),
        "resolved_at": iso(view.resolved_at), "closed_at": iso(view.closed_at),
        "eta": iso(view.eta), "events": view.event_count,
    }


def _timestamps(view: IncidentView, first: Any, reach: dict[str, q.Reach],
                coordination: dict[str, Any]) -> dict[str, str | None]:
    regulator = [p["notified_at"] for p in coordination["figures"]["parties"]
                 if p["id"] == "regulator" and p["notified_at"]]
    regulator += [d["done_at"] for duty in coordination["figures"]["regulator"]
                  for d in duty["deadlines"] if d["done_at"]]
    return {
        "detected": iso(view.detected_at), "declared": iso(view.declared_at),
        "first_notice_recorded": iso(first.at) if first else None,
        "first_notice_accepted": iso(reach["customers"].first) if reach else None,
        "regulator_notified": min(regulator) if regulator else None,
        "manual_channel_opened": iso(view.manual.opened_at) if view.manual else None,
        "resolved": iso(view.resolved_at), "closed": iso(view.closed_at),
    }


# ---------------------------------------------------------------------------- fast response


def _reach_json(result: q.Reach, start: datetime) -> dict[str, Any]:
    return {"audience": result.audience, "reached": result.reached,
            **{f"p{p}_s": since(start, result.at[p]) for p in q.PERCENTILES}}


def _fast_response(view: IncidentView, first: Any, reach: dict[str, q.Reach],
                   items: list[Item], now: datetime) -> dict[str, Any]:
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
        "reach": {name: _reach_json(r, first.at) for name, r in reach.items()},
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


def _minimal_impact(view: IncidentView, first: Any, reach: dict[str, q.Reach],
                    items: list[Item], conn: Connection, now: datetime) -> dict[str, Any]:
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


# ---------------------------------------------------------------------------- coordination


def _coordination(view: IncidentView, items: list[Item], conn: Connection, now: datetime,
                  party_names: dict[str, Text]) -> dict[str, Any]:
    book = view.playbook
    required = list(book.principles.coordination.parties)
    notified = [p for n in view.party_notices for p in n.parties]
    ids = list(dict.fromkeys([*required, *notified, *view.acks]))
    accepted = q.party_deliveries(conn, view.id, [n.seq for n in view.party_notices])
    parties = []
    for party in ids:
        at = view.notified_at(party)
        ack = view.acks.get(party)
        name = party_names.get(party)
        parties.append({
            "id": party, "name": text(name) if name else None, "required": party in required,
            "notified_at": iso(at), "notified_after_s": since(view.detected_at, at),
            "delivered_at": iso(accepted.get(party)),
            "acknowledged_at": iso(ack.at) if ack else None,
            "ack_after_s": since(at, ack.at) if ack and at else None,
        })
    duties = {d.id: d for d in book.principles.coordination.regulator}
    regulator = [_duty(view, item, duties[item.id], now) for item in items
                 if item.kind == "duty" and item.id in duties]
    deadlines = [d for duty in regulator for d in duty["deadlines"]]
    counts = {state: sum(1 for d in deadlines if d["state"] == state)
              for state in ("met", "late", "missed", "pending", "skipped")}
    step = next((s for s in book.steps if s.action == "notify_parties"), None)
    wanted = [p for p in required if step is None or not step.parties or p in step.parties]
    due = view.detected_at + step.due if step else None
    on_time = [p for p in wanted if (at := view.notified_at(p)) is not None
               and (due is None or at <= due)]
    acked = [p for p in dict.fromkeys(notified) if p in view.acks]
    judged = counts["met"] + counts["late"] + counts["missed"]
    figures: dict[str, Any] = {
        "parties": parties, "regulator": regulator, "regulator_deadlines": counts,
        "parties_required": len(wanted), "parties_notified_on_time": len(on_time),
        "parties_notified": len(set(notified)), "parties_acknowledged": len(acked)}
    checks = [
        Check("regulator_deadlines", counts["met"] == judged if judged else None,
              counts["met"], judged, unit="count", key=True),
        Check("parties_notified", len(on_time) == len(wanted) if wanted else None,
              len(on_time), len(wanted), unit="count"),
        Check("parties_acknowledged", len(acked) == len(set(notified)) if notified else None,
              len(acked), len(set(notified)), unit="count"),
    ]
    return principle(checks, figures)


def _duty_deadlines(view: IncidentView, item: Item, duty: RegulatorDuty,
                    now: datetime) -> list[datetime]:
    """Every deadline of a duty up to recovery (or now): the checklist lists a recurring
    duty's deadlines only up to the next one that is open, the report needs all of them."""
    if duty.every is None:
        return list(item.deadlines)
    anchor = view.grade_since(duty.grades) or view.detected_at
    end = view.resolved_at or now
    out, at = [], anchor + duty.every
    while at <= end:
        out.append(at)
        at += duty.every
    return out or list(item.deadlines[:1])


def _duty(view: IncidentView, item: Item, duty: RegulatorDuty,
          now: datetime) -> dict[str, Any]:
    done = [m.at for m in item.marks if m.state == "done"]
    skip = next((m for m in item.marks if m.state == "skipped"), None)
    deadlines = []
    for index, due in enumerate(_duty_deadlines(view, item, duty, now)):
        at = done[index] if index < len(done) else None
        if at is not None:
            state, by = ("late", since(due, at)) if at > due else ("met", since(at, due))
        elif skip is not None:
            state, by = "skipped", None
        elif due < now:
            state, by = "missed", since(due, now)
        else:
            state, by = "pending", since(now, due)
        deadlines.append({"due": iso(due), "done_at": iso(at), "state": state, "by_s": by})
    return {"id": duty.id, "title": text(duty.title), "body": duty.body, "source": duty.source,
            "every_s": seconds(duty.every), "deadlines": deadlines,
            "skipped_reason": scrub(skip.reason) if skip else ""}


# ---------------------------------------------------------------------------- transparency


def _grade_at(view: IncidentView, at: datetime) -> str:
    grade = view.severity_history[0][0]
    for g, since_at in view.severity_history:
        if since_at <= at:
            grade = g
    return grade


def _transparency(view: IncidentView, events: list[Event], first: Any,
                  reach: dict[str, q.Reach], deliveries: dict[int, q.NoticeDeliveries],
                  conn: Connection, now: datetime) -> dict[str, Any]:
    book = view.playbook
    times = [n.at for n in view.notices]
    if view.status.is_open and times:
        times.append(max(now, times[-1]))  # the gap still running
    gaps: list[dict[str, Any]] = []
    last = len(times) - 2
    for index, (start, end) in enumerate(itertools.pairwise(times)):
        promised = book.update_every(_grade_at(view, start))
        gaps.append({"from": iso(start), "to": iso(end), "gap_s": since(start, end),
                     "promised_s": seconds(promised), "over": end - start > promised,
                     "running": view.status.is_open and index == last})
    longest = max(gaps, key=lambda g: (g["gap_s"], -g["promised_s"])) if gaps else None
    eta = []
    for index, version in enumerate(view.eta_history):
        nxt = (view.eta_history[index + 1].announced_at if index + 1 < len(view.eta_history)
               else (view.resolved_at or now))
        eta.append({"seq": version.seq, "eta": iso(version.eta),
                    "announced_at": iso(version.announced_at), "reason": scrub(version.reason),
                    "lapsed": version.eta is not None and version.eta < nxt,
                    "recovery_vs_eta_s": (since(version.eta, view.resolved_at)
                                          if version.eta else None)})
    customer_seqs = [n.seq for n in view.notices]
    notices = []
    for n in view.notices:
        d = deliveries.get(n.seq)
        notices.append({"seq": n.seq, "phase": n.phase.value, "at": iso(n.at),
                        "messages": d.messages if d else 0, "recipients": n.recipients,
                        "sent": d.sent if d else 0, "failed": d.failed if d else 0,
                        "pending": d.pending if d else 0,
                        "first_accepted_s": since(n.at, d.first_sent) if d else None,
                        "last_accepted_s": since(n.at, d.last_sent) if d else None})
    delivery = [{"channel": c.channel, "language": c.language, "messages": c.messages,
                 "sent": c.sent, "failed": c.failed, "pending": c.messages - c.sent - c.failed,
                 "success_rate": round(c.sent / c.messages, 4) if c.messages else None}
                for c in q.by_channel_language(conn, view.id, customer_seqs)]
    failures = [{"channel": f.channel, "code": f.code, "count": f.count,
                 "example": (scrub_error(f.example) or "")[:200]}
                for f in q.failure_causes(conn, view.id, customer_seqs)]
    internal = sum(1 for e in events
                   if isinstance(p := payload_of(e), Updated) and p.internal and not p.notice)
    affected = first.recipients if first else 0
    reached = reach["customers"].reached if reach else 0
    figures: dict[str, Any] = {
        "customer_notices": len(view.notices),
        "updates": sum(1 for n in view.notices if n.phase in (Phase.UPDATE, Phase.ETA_CHANGED)),
        "internal_updates": internal,
        "promised_cadence_s": seconds(view.update_every),
        "longest_gap_s": longest["gap_s"] if longest else None,
        "longest_gap_promised_s": longest["promised_s"] if longest else None,
        "gaps_over": sum(1 for g in gaps if g["over"]),
        "gaps": gaps,
        "eta_revisions": max(len(view.eta_history) - 1, 0),
        "eta": eta,
        "notices": notices,
        "delivery": delivery,
        "failures": failures,
        "reached_share": round(reached / affected, 4) if affected else None,
    }
    resolved_notice = any(n.phase is Phase.RESOLVED for n in view.notices)
    checks = [
        Check("update_cadence", not any(g["over"] for g in gaps) if gaps else None,
              figures["longest_gap_s"], figures["longest_gap_promised_s"], key=True),
        Check("eta_given", bool(view.eta_history and view.eta_history[0].eta is not None)
              if view.notices else None),
        Check("eta_kept_current", not any(v["lapsed"] for v in eta) if eta else None,
              sum(1 for v in eta if v["lapsed"]), 0, unit="count"),
        Check("recovery_notice", resolved_notice if view.resolved_at else None),
    ]
    return principle(checks, figures)


# ---------------------------------------------------------------------------- post-mortem


def _action(item: Any, now: datetime) -> dict[str, Any]:
    return {"id": item.id, "text": scrub(item.text), "owner": item.owner, "due": iso(item.due),
            "added_at": iso(item.added_at), "added_by": item.added_by,
            "done_at": iso(item.done_at), "note": scrub(item.note),
            "state": "done" if item.done_at else "open",
            "overdue": item.done_at is None and item.due < now}


_TIMELINE_FIELDS = ("status", "severity", "eta", "previous", "reason", "resolved_at", "step",
                    "case", "urgent", "party", "parties", "section", "action", "owner", "due",
                    "internal", "forced", "problems")


def _timeline_entry(event: Event) -> dict[str, Any]:
    p = payload_of(event)
    what: dict[str, Any] = {k: getattr(p, k) for k in _TIMELINE_FIELDS
                            if p.given(k) and getattr(p, k) is not None}
    if isinstance(p, Declared):
        what = {"severity": p.severity, "eta": p.eta}
    what = {k: v for k, v in what.items() if v is not False}  # internal: false says nothing
    if "reason" in what:
        what["reason"] = scrub(str(what["reason"]))
    notice = p.notice if isinstance(p, WithNotice) else None
    if notice:
        what["notice"] = {"phase": notice.phase, "audience": notice.audience or "customers",
                          "messages": notice.messages}
    return {"seq": event.seq, "at": iso(event.at), "type": event.type.value,
            "actor": event.actor, "what": what}
