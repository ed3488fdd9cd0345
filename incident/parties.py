"""Coordination: internal notices to departments and outside bodies (incident.yaml `parties`).

An internal notice is its own event (`parties_notified`) whose outbox rows go to the parties'
email, phone and chat webhook (its SMS text, see composer.Composer). It is rendered from the
`internal` template set, which carries what customers are not told: the grade and its
criteria, the operator, the audience size, the manual cases, the checklist items falling due
and the regulator deadlines.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from incident.checklist import checklist
from incident.errors import InvalidValue
from incident.models import Phase
from incident.notices import message_id, notice_context
from incident.rendering import INTERNAL_PHASE
from incident.settings import Runtime
from incident.state import IncidentView
from incident.store.outbox import PARTY_PREFIX, idempotency_key
from incident.timeutil import local_text

INTERNAL_SET = "internal"
KIND_LABELS = {
    "zh-CN": {"declared": "启动应急预案", "update": "处置进展", "eta_changed": "预计恢复时间变更",
              "regraded": "事件级别调整", "resolved": "服务已恢复", "closed": "事件关闭",
              "alert": "到期提醒", "manual_opened": "人工应急渠道开通",
              "manual_closed": "人工应急渠道关闭", "step": "预案步骤"},
    "zh-HK": {"declared": "啟動應急預案", "update": "處理進展", "eta_changed": "預計恢復時間變更",
              "regraded": "事件級別調整", "resolved": "服務已恢復", "closed": "事件結束",
              "alert": "到期提示", "manual_opened": "人手應急渠道開通",
              "manual_closed": "人手應急渠道關閉", "step": "預案步驟"},
    "en": {"declared": "incident declared", "update": "progress update",
           "eta_changed": "ETA changed", "regraded": "severity changed",
           "resolved": "service restored", "closed": "incident closed", "alert": "falling due",
           "manual_opened": "manual channel opened", "manual_closed": "manual channel closed",
           "step": "playbook step"},
}


def check_parties(rt: Runtime, parties: Sequence[str], *, option: str = "--to") -> list[str]:
    """The party ids, checked against incident.yaml (InvalidValue naming the unknown ones)."""
    known = rt.settings.parties
    unknown = [p for p in parties if p not in known]
    if unknown:
        where = f"{rt.config_path}: parties" if rt.config_path else "incident.yaml parties"
        raise InvalidValue(f"{option}: unknown parties {', '.join(unknown)}",
                           hint=f"parties in {where}: {', '.join(sorted(known)) or 'none'}")
    return list(dict.fromkeys(parties))


def playbook_parties(rt: Runtime, view: IncidentView) -> list[str]:
    """The playbook's parties that incident.yaml knows (the others cannot be reached).

    A drill leaves out the bodies that receive regulator reports: an exercise must never
    reach the regulator.
    """
    coordination = view.playbook.principles.coordination
    outside = drill_barred(view)
    return [p for p in coordination.parties if p in rt.settings.parties and p not in outside]


def drill_barred(view: IncidentView) -> set[str]:
    """The parties a drill must never reach: those that receive its regulator reports."""
    if not view.drill:
        return set()
    return {duty.party for duty in view.playbook.principles.coordination.regulator}


def party_rows(rt: Runtime, incident_id: str, seq: int, parties: Sequence[str],
               domain: str) -> Iterator[dict[str, Any]]:
    """Outbox rows of an internal notice: each party's email, phone and chat webhook, sent
    before customers."""
    for party_id in parties:
        party = rt.settings.parties[party_id]
        ref = PARTY_PREFIX + party_id
        hook = party.webhook.url if party.webhook else None
        for channel, address in (("email", party.email), ("sms", party.phone),
                                 ("webhook", hook)):
            if not address:
                continue
            key = idempotency_key(incident_id, seq, ref, channel)
            yield {"incident_id": incident_id, "notice_seq": seq, "channel": channel,
                   "recipient_ref": ref, "recipient_name": party.name.get(party.language),
                   "address": address, "language": party.language, "priority": 0,
                   "message_id": message_id(key, incident_id, domain), "idempotency_key": key,
                   "fallback_address": None, "transport": rt.settings.channels.transports[channel]}


def internal_contexts(rt: Runtime, view: IncidentView, *, kind: str, message: str,
                      now: datetime, actor: str,
                      deliveries: dict[str, int] | None = None) -> dict[str, dict[str, Any]]:
    """The internal notice's context in every language: the customer notice's facts plus the
    technical and coordination detail."""
    if kind not in KIND_LABELS["en"]:
        raise ValueError(f"unknown internal notice kind {kind!r}")
    out: dict[str, dict[str, Any]] = {}
    level = view.playbook.level(view.severity)
    items = [i for i in checklist(view, now) if i.state == "open" and i.due is not None]
    items.sort(key=lambda i: i.due or now)
    for lang in rt.settings.languages:
        context = notice_context(rt, view, phase=Phase.UPDATE, lang=lang, message=message)
        context.pop("regional", None)  # parties get the default region's details
        context["notice"] = {**context["notice"], "phase": INTERNAL_PHASE, "kind": kind,
                             "kind_label": KIND_LABELS[lang][kind]}
        context["internal"] = {
            "operator": actor,
            "severity_criteria": level.criteria.get(lang),
            "customers": _customers(view),
            "customer_notices": len(view.notices),
            "deliveries": deliveries or {},
            "manual": {"open": view.manual_open, "cases": len(view.cases),
                       "unreconciled": len(view.unreconciled)},
            "due": [{"id": i.id, "title": i.title.get(lang), "owner": i.owner,
                     "kind": i.kind, "due": local_text(i.due, rt.zone) if i.due else "",
                     "overdue": i.overdue(now)} for i in items[:8]],
            "parties": [rt.settings.parties[p].name.get(lang) for p in playbook_parties(rt, view)],
            # The chain's head as of this notice, in the parties' mailboxes: an anchor outside
            # the database that a truncated or rewritten record cannot match.
            "record": {"seq": view.head[0], "hash": view.head[1]},
        }
        out[lang] = context
    return out


def _customers(view: IncidentView) -> int | str:
    """The customers affected; "≥N" while the start's audience is still being read."""
    selected = int(view.audience.get("selected", 0))
    return f"≥{selected}" if view.audience.get("counts") == "pending" else selected
