"""What the bank owed others while the incident ran: the coordination and transparency
principles (verdicts by the rules of `incident.report.checks`).

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
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from incident.checklist import Item
from incident.models import Event, Phase, Text
from incident.payloads import Updated, payload_of
from incident.playbooks import RegulatorDuty
from incident.privacy import scrub, scrub_error
from incident.report.checks import Check, iso, principle, seconds, since, text
from incident.report.confirmed import judge_confirmed
from incident.state import IncidentView
from incident.store import Connection, receipts
from incident.store import reports as q

# ---------------------------------------------------------------------------- coordination


def judge_coordination(view: IncidentView, items: list[Item], conn: Connection, now: datetime,
                       party_names: dict[str, Text]) -> dict[str, Any]:
    """Coordination: parties notified and acknowledged, regulator deadlines met."""
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


def judge_transparency(view: IncidentView, events: list[Event], first: Any,
                       reach: dict[str, q.Reach], deliveries: dict[int, q.NoticeDeliveries],
                       conn: Connection, now: datetime) -> dict[str, Any]:
    """Transparency: update cadence kept, ETAs given and kept current, recovery told."""
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
        # Customer rows by channel and delivery state after acceptance (provider receipts).
        "receipts": receipts.counts(conn, view.id),
        "reached_share": round(reached / affected, 4) if affected else None,
    }
    confirmed, reached_check = judge_confirmed(view, first, conn)
    figures.update(confirmed)
    resolved_notice = any(n.phase is Phase.RESOLVED for n in view.notices)
    checks = [
        Check("update_cadence", not any(g["over"] for g in gaps) if gaps else None,
              figures["longest_gap_s"], figures["longest_gap_promised_s"], key=True),
        Check("eta_given", bool(view.eta_history and view.eta_history[0].eta is not None)
              if view.notices else None),
        Check("eta_kept_current", not any(v["lapsed"] for v in eta) if eta else None,
              sum(1 for v in eta if v["lapsed"]), 0, unit="count"),
        Check("recovery_notice", resolved_notice if view.resolved_at else None),
        reached_check,
    ]
    return principle(checks, figures)
