"""The post-mortem figures of one incident, and a verdict per principle.

Figures come from the incident's events (folded into its view and checklist) and from SQL
aggregates over its outbox (`incident.store.reports`). Durations are whole seconds, times
ISO 8601 UTC; a figure that cannot be known yet (no recovery, nobody reached) is null.

This module assembles the report: the incident, its key timestamps, the post-mortem sections,
actions and timeline. The principles are judged in `reach` (fast response, minimal impact)
and `duties` (coordination, transparency), by the verdict rules of `checks`. A drill is
scored by exactly the same rules.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from incident.checklist import checklist
from incident.models import Event, Text
from incident.payloads import AudienceRead, Declared, WithNotice, payload_of
from incident.privacy import scrub
from incident.report.checks import iso, text
from incident.report.duties import judge_coordination, judge_transparency
from incident.report.reach import judge_fast_response, judge_minimal_impact
from incident.report.replies import reply_figures
from incident.rollcall import fold_rollcall, summary
from incident.state import IncidentView
from incident.store import Connection
from incident.store import reports as q
from incident.store.rollcall import members as rollcall_members

__all__ = ["PRINCIPLES", "SCHEMA", "SECTIONS", "VERDICTS", "iso", "measure"]

SECTIONS = ("summary", "root_cause", "trigger", "resolution", "went_well", "went_wrong", "lucky")
PRINCIPLES = ("fast_response", "minimal_impact", "coordination", "transparency")
VERDICTS = ("met", "partly", "missed")
SCHEMA = "incident-report/1"


# ---------------------------------------------------------------------------- the report


def measure(view: IncidentView, events: list[Event], conn: Connection, *, now: datetime,
            party_names: dict[str, Text] | None = None) -> dict[str, Any]:
    """Every figure of the post-mortem report of one incident, as a JSON-ready dict."""
    customer_seqs = [n.seq for n in view.notices]
    first = view.notices[0] if view.notices else None
    reach = q.reach(conn, view.id, first.seq) if first else {}
    deliveries = q.notices(conn, view.id, customer_seqs)
    items = checklist(view, now)
    fast = judge_fast_response(view, first, reach, items, now)
    minimal = judge_minimal_impact(view, first, reach, items, conn, now)
    minimal["figures"]["replies"] = reply_figures(view, events, conn)
    coordination = judge_coordination(view, items, conn, now, party_names or {})
    transparency = judge_transparency(view, events, first, reach, deliveries, conn, now)
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
        "rollcall": rollcall_figures(view, events, conn),
    }


def rollcall_figures(view: IncidentView, events: list[Event],
                     conn: Connection) -> dict[str, Any] | None:
    """The staff roll-call's figures (None: no roll-call): time to 50/90/100% answered,
    need-help cases and time to handle them, the headcount; a drill's 90% vs the target."""
    state = fold_rollcall(events)
    if state is None:
        return None
    return summary(state, rollcall_members(conn, view.id), [], view)


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


# ---------------------------------------------------------------------------- post-mortem


def _action(item: Any, now: datetime) -> dict[str, Any]:
    return {"id": item.id, "text": scrub(item.text), "owner": item.owner, "due": iso(item.due),
            "added_at": iso(item.added_at), "added_by": item.added_by,
            "done_at": iso(item.done_at), "note": scrub(item.note),
            "state": "done" if item.done_at else "open",
            "overdue": item.done_at is None and item.due < now}


_TIMELINE_FIELDS = ("status", "severity", "eta", "previous", "reason", "resolved_at", "step",
                    "case", "urgent", "party", "parties", "section", "action", "owner", "due",
                    "internal", "forced", "problems", "member", "answer", "via", "round")


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
        if isinstance(p, Declared) and p.audience and p.audience.counts:
            what["notice"]["counts"] = p.audience.counts  # "pending": see audience_read
    if isinstance(p, AudienceRead):  # the exact counts of the notice recorded early
        what.update(selected=p.selected, messages=p.messages)
    return {"seq": event.seq, "at": iso(event.at), "type": event.type.value,
            "actor": event.actor, "what": what}
