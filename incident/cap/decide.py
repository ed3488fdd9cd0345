"""Whether a CAP alert starts a plan (which playbook, grade, branches), updates or stands
down the incident an earlier alert started, is a duplicate, or is ignored; and what an
incident records of it and tells customers on an Update.

The rules (facts.md): a warning applies when status is Actual, msgType is Alert or Update,
now is within effective..expires, urgency is Immediate or Expected, severity Extreme or Severe,
certainty Observed or Likely, and at least one branch lies in one of its areas. A Cancel
stands down whatever the alerts it references started.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from incident.branches import Branch
from incident.cap.model import (
    APPLYING_CERTAINTY,
    APPLYING_SEVERITY,
    APPLYING_URGENCY,
    CapAlert,
    CapInfo,
    Decision,
    Key,
    Recorded,
)
from incident.playbooks import DEFAULT_MAX_AGE, DEFAULT_SCHEMES, Playbook
from incident.timeutil import format_duration


def decide(alert: CapAlert, *, now: datetime, branches: Sequence[Branch],
           playbooks: Sequence[Playbook],
           recorded: Mapping[Key, Recorded] | None = None) -> Decision:
    """Decide whether `alert` starts a plan (and which), updates or stands down the incident
    an earlier alert started, or is ignored. `recorded` maps the alerts already recorded on
    incidents (by `CapAlert.key`) to those incidents."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    recorded = recorded or {}
    known = recorded.get(alert.key)
    if known is not None:
        return Decision(applies=False, action="duplicate",
                        reasons=[f"already recorded on {known.incident_id} ({known.status}): "
                                 "nothing to do"],
                        info=None, playbook=known.playbook, grade=None, branches=[],
                        alert=alert, incident=known.incident_id)
    alert_reasons = []
    if alert.status != "Actual":
        alert_reasons.append(f"status is {alert.status}, not Actual")
    cancel = alert.msg_type == "Cancel"
    if alert.msg_type not in ("Alert", "Update", "Cancel"):
        alert_reasons.append(f"msgType is {alert.msg_type}, not Alert, Update or Cancel")
    started = _referenced(alert, recorded)

    if cancel:
        return _stand_down(alert, alert_reasons, branches, playbooks, started)
    target = next((r for r in started if r.is_open), None)
    if alert.msg_type == "Update" and not alert_reasons and target is not None:
        return _update(alert, target, now, branches)

    # Each info is checked with the playbook that answers its event: its geocode schemes and
    # the maximum age of an alert without <expires> are the playbook's.
    checked = []
    for info in alert.infos:
        playbook = _match_playbook(info, playbooks)
        failed, hit = _check_info(alert, info, playbook, now, branches)
        checked.append((info, playbook, failed, hit))
    applying = [(info, playbook, hit) for info, playbook, failed, hit in checked if not failed]
    if not alert.infos:
        info_reasons = ["the alert has no <info> block"]
    elif applying:
        info_reasons = []
    else:
        info_reasons = _merge_reasons(alert, [failed for _, _, failed, _ in checked])
    if not applying:
        return Decision(applies=False, action="ignore", reasons=alert_reasons + info_reasons,
                        info=None, playbook=None, grade=None, branches=[], alert=alert)

    # The first applying info whose event a playbook answers; else the first applying one.
    info, playbook, hit = next((m for m in applying if m[1] is not None), applying[0])
    grade = None
    if playbook is not None and playbook.warnings is not None:
        grade = next((g for severity, g in playbook.warnings.grades.items()
                      if severity == info.severity), playbook.severity.default)
    if alert_reasons:
        return Decision(applies=False, action="ignore", reasons=alert_reasons, info=info,
                        playbook=playbook, grade=grade, branches=hit, alert=alert)
    reasons = [
        f"{alert.status} {alert.msg_type} in effect until "
        f"{_when(_expires(alert, info, playbook))}" + _no_expires(info, playbook),
        f"urgency {info.urgency}, severity {info.severity}, certainty {info.certainty}",
        f"{len(hit)} branch{'es' if len(hit) != 1 else ''} inside the alert area: "
        + ", ".join(b.id for b in hit),
    ]
    if playbook is None:
        reasons.append(f"no playbook answers event {info.event!r}: choose one by hand")
    else:
        reasons.append(f"playbook {playbook.id} answers event {info.event!r}, grade {grade}")
    return Decision(applies=True, action="start", reasons=reasons, info=info,
                    playbook=playbook, grade=grade, branches=hit, alert=alert)


def _expires(alert: CapAlert, info: CapInfo, playbook: Playbook | None) -> datetime:
    """When the info stops applying: its <expires>, else the playbook's `warnings.max_age`
    after it took effect (an alert without an end must not apply for ever)."""
    if info.expires is not None:
        return info.expires
    return (info.effective or alert.sent) + _max_age(playbook)


def _max_age(playbook: Playbook | None) -> timedelta:
    warnings = playbook.warnings if playbook is not None else None
    return warnings.max_age if warnings is not None else DEFAULT_MAX_AGE


def _no_expires(info: CapInfo, playbook: Playbook | None) -> str:
    """Said after a time derived from the maximum age, not given by the alert."""
    if info.expires is not None:
        return ""
    whose = f"playbook {playbook.id}'s" if playbook is not None else "the default"
    return f" (no <expires>: {whose} max_age {format_duration(_max_age(playbook))})"


def _check_info(alert: CapAlert, info: CapInfo, playbook: Playbook | None, now: datetime,
                branches: Sequence[Branch]) -> tuple[list[str], list[Branch]]:
    """The criteria the info fails (empty when it applies) and the branches in its area."""
    failed = []
    effective = info.effective or alert.sent
    if now < effective:
        failed.append(f"not in effect until {_when(effective)}")
    expires = _expires(alert, info, playbook)
    if now > expires:
        failed.append(f"expired at {_when(expires)}{_no_expires(info, playbook)}")
    if info.urgency not in APPLYING_URGENCY:
        failed.append(f"urgency is {info.urgency}, not Immediate or Expected")
    if info.severity not in APPLYING_SEVERITY:
        failed.append(f"severity is {info.severity}, not Extreme or Severe")
    if info.certainty not in APPLYING_CERTAINTY:
        failed.append(f"certainty is {info.certainty}, not Observed or Likely")
    hit = _in_area(info, playbook, branches)
    if not hit:
        if all(area.empty for area in info.areas):
            failed.append("no branch inside the alert area (it gives no polygon, circle "
                          "or geocode)")
        else:
            failed.append("no branch inside the alert area")
    return failed, hit


def _in_area(info: CapInfo, playbook: Playbook | None,
             branches: Sequence[Branch]) -> list[Branch]:
    """The branches inside an area of the info, geocodes read in the playbook's schemes."""
    warnings = playbook.warnings if playbook is not None else None
    schemes = warnings.geocodes if warnings is not None else DEFAULT_SCHEMES
    return [b for b in branches if any(area.contains(b, schemes) for area in info.areas)]


def _merge_reasons(alert: CapAlert, per_info: list[list[str]]) -> list[str]:
    """One list of reasons; prefixed with the info when translations disagree."""
    if all(reasons == per_info[0] for reasons in per_info):
        return per_info[0]
    return [f"info[{n}] ({info.language}): {reason}"
            for n, (info, reasons) in enumerate(zip(alert.infos, per_info, strict=True), start=1)
            for reason in reasons]


def _match_playbook(info: CapInfo, playbooks: Sequence[Playbook]) -> Playbook | None:
    """The first playbook whose `warnings` answer the info's event and category."""
    event = info.event.casefold()
    categories = {c.casefold() for c in info.categories}
    for playbook in playbooks:
        warnings = playbook.warnings
        if warnings is None:
            continue
        if warnings.categories and not categories & {c.casefold() for c in warnings.categories}:
            continue
        if any(word.casefold() in event for word in warnings.events):
            return playbook
    return None


def _referenced(alert: CapAlert, recorded: Mapping[Key, Recorded]) -> list[Recorded]:
    """The incidents the alerts `alert` references are recorded on, each once."""
    found = {r.incident_id: r for key in alert.referenced_keys()
             if (r := recorded.get(key)) is not None}
    return list(found.values())


def _update(alert: CapAlert, target: Recorded, now: datetime,
            branches: Sequence[Branch]) -> Decision:
    """An Update of an alert that started `target`: its severity, area and expiry update it
    (even when it lowers the warning below the starting criteria: customers are told)."""
    playbook = target.playbook
    matched = [info for info in alert.infos if _match_playbook(info, [playbook])]
    info = next(iter(matched or alert.infos), None)
    if info is None:
        return Decision(applies=False, action="ignore",
                        reasons=["the alert has no <info> block"], info=None,
                        playbook=playbook, grade=None, branches=[], alert=alert,
                        incident=target.incident_id)
    warnings = playbook.warnings
    grade = next((g for severity, g in warnings.grades.items() if severity == info.severity),
                 None) if warnings is not None else None
    hit = _in_area(info, playbook, branches)
    expires = _expires(alert, info, playbook)
    reasons = [
        f"Update of {', '.join(alert.referenced_identifiers())}, which started "
        f"{target.incident_id}: record it there, not a second incident",
        f"urgency {info.urgency}, severity {info.severity}, certainty {info.certainty}"
        + (f": grade {grade}" if grade and grade != target.severity else
           f": grade stays {target.severity}"),
        (f"in force until {_when(expires)}" if now <= expires
         else f"expired at {_when(expires)}") + _no_expires(info, playbook),
        f"{len(hit)} branch{'es' if len(hit) != 1 else ''} inside the alert area"
        + (": " + ", ".join(b.id for b in hit) if hit else ""),
    ]
    return Decision(applies=True, action="update", reasons=reasons, info=info,
                    playbook=playbook, grade=grade if grade != target.severity else None,
                    branches=hit, alert=alert, incident=target.incident_id)


def _stand_down(alert: CapAlert, alert_reasons: list[str], branches: Sequence[Branch],
                playbooks: Sequence[Playbook], started: list[Recorded]) -> Decision:
    """A Cancel: stand down the incident the referenced alerts started (time and area are
    not checked); a Cancel of alerts that started nothing applies to nothing."""
    info: CapInfo | None = None
    playbook: Playbook | None = None
    for candidate in alert.infos:
        playbook = _match_playbook(candidate, playbooks)
        if playbook is not None or info is None:
            info = candidate
        if playbook is not None:
            break
    hit = _in_area(info, playbook, branches) if info is not None else []
    target = next((r for r in started if r.is_open), None)

    def decision(applies: bool, reasons: list[str]) -> Decision:
        return Decision(applies=applies, action="stand_down" if applies else "ignore",
                        reasons=reasons, info=info,
                        playbook=target.playbook if target else playbook, grade=None,
                        branches=hit, alert=alert, incident=shown.incident_id if shown else None)

    shown = target or (started[0] if started else None)

    if alert_reasons:
        return decision(False, alert_reasons)
    referenced = ", ".join(alert.referenced_identifiers())
    if not referenced:
        return decision(False, ["msgType is Cancel, but it references no earlier alert: it "
                                "applies to nothing"])
    if target is None:
        if started:
            done = ", ".join(f"{r.incident_id} ({r.status})" for r in started)
            return decision(False, [f"msgType is Cancel of {referenced}; the incident they "
                                    f"started is no longer open: {done}"])
        return decision(False, [f"msgType is Cancel of {referenced}, which started no "
                                "incident here: it applies to nothing"])
    return decision(True, [
        f"msgType is Cancel of {referenced}, which started {target.incident_id}: stand it down",
        f"incident resolve {target.incident_id[-6:]} --message \"...\"  (customers get the "
        "recovery notice)",
    ])


def warning_record(decision: Decision) -> dict[str, Any]:
    """What an incident records of the alert it was started or updated from (event data)."""
    alert, info = decision.alert, decision.info
    expires = (_expires(alert, info, decision.playbook) if info is not None else None)
    return {"identifier": alert.identifier, "sender": alert.sender,
            "sent": alert.sent.isoformat(), "msg_type": alert.msg_type,
            "references": list(alert.references),
            "event": info.event if info else "", "severity": info.severity if info else "",
            "expires": expires.isoformat() if expires else None,
            "branches": [b.id for b in decision.branches]}


def update_messages(decision: Decision) -> tuple[str, str | None]:
    """The customer update for an Update: its headline (English and Chinese infos) and how
    long it is in force."""
    alert, chosen = decision.alert, decision.info
    assert chosen is not None

    def text(info: CapInfo | None) -> str | None:
        if info is None:
            return None
        until = _when(_expires(alert, info, decision.playbook))
        line = info.headline or info.event
        return (f"{line}（有效至 {until}）" if info.language.lower().startswith("zh")
                else f"{line} (in force until {until})")

    english = next((i for i in alert.infos if i.language.lower().startswith("en")), None)
    chinese = next((i for i in alert.infos if i.language.lower().startswith("zh")), None)
    return text(english) or text(chosen) or chosen.event, text(chinese)


def _when(value: datetime) -> str:
    """`2026-09-14 20:00 +08:00`: the time in the offset the alert gave it."""
    offset = value.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{value.strftime('%Y-%m-%d %H:%M')} {sign}{minutes // 60:02d}:{minutes % 60:02d}"
