"""Regulator reports drafted from the record.

The fields are those the 2008 rule (银监办发〔2008〕53号) asks of an incident report — time,
place, symptoms, affected business, cause, measures taken, next steps, contact — filled from
the incident's events, so the compliance officer edits a draft instead of starting from a
blank page under a 60-minute clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from incident.checklist import Item, checklist
from incident.errors import InvalidValue
from incident.models import Event
from incident.notices import KIND_LABELS, STATUS_LABELS
from incident.payloads import EtaRevised, Resolved, Updated, payload_of
from incident.privacy import scrub
from incident.regions import for_region
from incident.settings import Runtime
from incident.state import IncidentView
from incident.timeutil import format_duration, local_text

LABELS = {
    "zh-CN": {"duty": "报告事项", "deadline": "报送时限", "to": "报送对象", "basis": "依据",
              "time": "发生时间", "place": "地点和范围", "symptoms": "事件现象",
              "business": "影响业务", "cause": "原因", "measures": "已采取措施",
              "next": "下一步工作", "contact": "联系人", "grade": "事件级别"},
    "en": {"duty": "Report", "deadline": "Deadline", "to": "To", "basis": "Basis",
           "time": "Time", "place": "Place and extent", "symptoms": "Symptoms",
           "business": "Affected business", "cause": "Cause", "measures": "Measures taken",
           "next": "Next steps", "contact": "Contact", "grade": "Grade"},
}
SEP = {"zh-CN": "；", "en": "; "}


@dataclass(frozen=True)
class Draft:
    """A regulator report draft: the duty it answers and its fields, in order."""

    duty: Item
    lang: str
    fields: list[tuple[str, str, str]]  # (key, label, text)


def pick_duty(view: IncidentView, duty_id: str | None, now: datetime) -> Item:
    """The duty called `duty_id`, or the one falling due first."""
    duties = [i for i in checklist(view, now) if i.kind == "duty"]
    if not duties:
        raise InvalidValue(f"playbook {view.playbook.id} has no regulator duty at grade "
                           f"{view.severity}")
    if duty_id is None:
        pending = sorted((d for d in duties if d.due is not None and d.state == "open"),
                         key=lambda d: d.due or now)
        return pending[0] if pending else duties[0]
    for duty in duties:
        if duty.id == duty_id:
            return duty
    raise InvalidValue(f"no regulator duty {duty_id!r} in {view.playbook.id} at grade "
                       f"{view.severity}", hint=f"duties: {', '.join(d.id for d in duties)}")


def draft(rt: Runtime, view: IncidentView, duty: Item, *, lang: str, now: datetime,
          customers_reached: int, updates: list[tuple[datetime, str]]) -> Draft:
    """Fill the report's fields from the record (`updates`: progress messages in order)."""
    zone = rt.zone
    labels = LABELS[lang]
    book = view.playbook
    sep = SEP[lang]

    def when(value: datetime | None) -> str:
        return local_text(value, zone) if value else "—"

    level = book.level(view.severity)
    zh = lang == "zh-CN"
    place = [*view.regions, *view.branches_selected]
    closed = [b["name"] if zh else (b.get("name_en") or b["name"])
              for b in view.scope.get("closed", [])]
    join = "、" if zh else ", "
    place_text = sep.join(filter(None, [
        ("地区：" if zh else "Regions: ") + join.join(place) if place else "",
        ("暂停营业网点：" if zh else "Branches closed: ") + join.join(closed) if closed else "",
        ("受影响业务：" if zh else "Services: ") + join.join(view.affected)
        if view.affected else ""])) or ("全行" if zh else "Institution-wide")
    since = format_duration(now - view.detected_at)
    time_text = (f"{when(view.detected_at)} 发现，{when(view.declared_at)} 启动应急预案，"
                 f"已持续{since}" if zh else f"detected {when(view.detected_at)}, plan started "
                 f"{when(view.declared_at)}, {since} so far")
    if view.resolved_at:
        time_text += (f"；{when(view.resolved_at)} 恢复" if zh
                      else f"; restored {when(view.resolved_at)}")
    business = (f"{book.impact.get(lang)}{sep}"
                + (f"受影响客户约{view.audience.get('selected', 0)}户，已发送客户通知"
                   f"{len(view.notices)}次，已送达{customers_reached}条"
                   if zh else f"about {view.audience.get('selected', 0)} customers affected; "
                   f"{len(view.notices)} customer notices, {customers_reached} messages "
                   "delivered"))
    cause = _cause(view, updates, lang)
    manual = view.manual
    measures = [book.measures.get(lang)]
    if manual is not None:
        state = "已" if manual.open else "曾"
        measures.append((f"人工应急渠道{state}开通（{when(manual.opened_at)}），"
                         f"人工受理{len(view.cases)}宗，待补录{len(view.unreconciled)}宗")
                        if zh else f"manual channel {'open' if manual.open else 'opened'} "
                        f"since {when(manual.opened_at)}, {len(view.cases)} cases handled, "
                        f"{len(view.unreconciled)} to reconcile")
    measures += [f"{when(at)} {text}" for at, text in updates[-5:]]
    upcoming = [i for i in checklist(view, now) if i.state == "open" and i.due is not None
                and i.id != duty.id]
    upcoming.sort(key=lambda i: i.due or now)
    nexts = [f"{i.title.get(lang)}（{when(i.due)}）" if zh else f"{i.title.get(lang)} "
             f"(by {when(i.due)})" for i in upcoming[:5]]
    if view.status.is_open:
        eta = when(view.eta) if view.eta else ("评估中" if zh else "being assessed")
        nexts.insert(0, f"预计恢复时间：{eta}" if zh else f"estimated recovery: {eta}")
    operators = {o.id: o for o in rt.settings.operators}
    who = operators.get(view.declared_by)
    contact = (f"{who.name}（{who.role}）" if who else view.declared_by)
    contact += f"{sep}{for_region(rt.settings.organisation.hotline, None)}"
    deadline = when(duty.due) if duty.due else "—"
    if duty.due is not None:
        left = duty.due - now
        deadline += ((f"（剩余{format_duration(left)}）" if left.total_seconds() >= 0
                      else f"（已逾期{format_duration(-left)}）") if zh else
                     (f" ({format_duration(left)} left)" if left.total_seconds() >= 0
                      else f" (overdue by {format_duration(-left)})"))
    fields = [
        ("duty", duty.title.get(lang)), ("deadline", deadline), ("to", duty.body or ""),
        ("basis", duty.source or ""),
        ("grade", f"{level.name.get(lang)} — {level.criteria.get(lang)}"),
        ("time", time_text), ("place", place_text),
        ("symptoms", f"{view.title}{sep}{STATUS_LABELS[lang][view.status]}"),
        ("business", business), ("cause", cause),
        ("measures", sep.join(m for m in measures if m)),
        ("next", sep.join(nexts) or "—"), ("contact", contact),
    ]
    # Titles, progress messages and notes are typed by staff and may name a customer's phone
    # or email; the contact line is the institution's own.
    return Draft(duty=duty, lang=lang, fields=[(k, labels[k], v if k == "contact" else scrub(v))
                                               for k, v in fields])


def _cause(view: IncidentView, updates: list[tuple[datetime, str]], lang: str) -> str:
    noted = view.notes.get("root_cause") or view.notes.get("trigger")
    if noted:
        return noted[-1][2]
    kind = KIND_LABELS[lang][view.playbook.kind.value]
    if view.status.value in {"identified", "monitoring", "resolved", "closed"} and updates:
        return updates[-1][1]
    return f"{kind}，原因排查中" if lang == "zh-CN" else f"{kind}; cause under investigation"


def progress_messages(events: list[Event], lang: str) -> list[tuple[datetime, str]]:
    """The progress messages recorded so far (updates, ETA reasons, resolution), in `lang`
    where the supervisor gave a Chinese text."""
    said = [(e.at, p) for e in events
            if isinstance(p := payload_of(e), Updated | EtaRevised | Resolved) and p.message]
    return [(at, (getattr(p, "message_zh", None) if lang == "zh-CN" else None) or p.message)
            for at, p in said]
