"""Checking a playbook before it is needed: it validates, and every notice it can send
renders in every language with sample data (the worst SMS measured)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from incident.errors import Location, PlaybookInvalid, PlaybookNotFound
from incident.models import Event, EventType, Phase
from incident.notices import (
    SAMPLE_CUSTOMER,
    SAMPLE_MESSAGE,
    WORST_CASE,
    for_customer,
    notice_context,
)
from incident.playbooks import Playbook, load_playbook
from incident.rendering import Renderer
from incident.settings import Runtime
from incident.state import IncidentView, fold
from incident.timeutil import to_iso


@dataclass
class PlaybookCheck:
    """The result of validating one playbook file and rendering all its notices."""

    path: str
    playbook: Playbook | None
    problems: list[tuple[Location, str]]
    sms: dict[str, dict[str, int | float | str]]  # "phase/lang" -> encoding, units, segments, …


def sample_view(playbook: Playbook, phase: Phase, *, now: datetime,
                title: str = "Sample: service disruption",
                reason: str = "Data checks take longer") -> IncidentView:
    """A plausible incident at `phase`, to render templates with sample data."""
    data = {"title": title, "severity": playbook.severity.default,
            "playbook": playbook.model_dump(mode="json", by_alias=True), "drill": False,
            "detected_at": to_iso(now - timedelta(minutes=20)),
            "eta": to_iso(now + timedelta(hours=2)), "affected": playbook.affected_services,
            "regions": ["guangdong"], "audience": {}}
    events = [Event(incident_id="INC-20261124-A1B2C3", seq=1, type=EventType.DECLARED, at=now,
                    actor="sample", data=data, prev_hash="", hash="")]
    if phase is Phase.ETA_CHANGED:
        events.append(events[0].model_copy(update={
            "seq": 2, "type": EventType.ETA_REVISED,
            "data": {"eta": to_iso(now + timedelta(hours=3)),
                     "reason": reason}}))
    if phase is Phase.RESOLVED:
        events.append(events[0].model_copy(update={
            "seq": 2, "type": EventType.RESOLVED,
            "data": {"resolved_at": to_iso(now + timedelta(hours=1)), "message": "Restored"}}))
    return fold(events)


def check_playbook(rt: Runtime, renderer: Renderer, path: Path) -> PlaybookCheck:
    """Validate one playbook and render every phase × channel × language with sample data."""
    try:
        book = load_playbook(path)
    except (PlaybookInvalid, PlaybookNotFound) as exc:
        return PlaybookCheck(str(path), None, [(Location(str(path)), exc.message), *exc.problems],
                             {})
    problems: list[tuple[Location, str]] = []
    sms: dict[str, dict[str, int | float | str]] = {}
    now = rt.clock.now()
    for phase in book.notices.phases:
        view = sample_view(book, phase, now=now)
        for lang in rt.settings.languages:
            context = {**notice_context(rt, view, phase=phase, lang=lang,
                                        message=SAMPLE_MESSAGE[lang]),
                       "customer": SAMPLE_CUSTOMER[lang]}
            problems += renderer.check(book.notices.template_set, [phase.value],
                                       book.notices.channels, [lang], context)
            if "sms" in book.notices.channels and not problems:
                sms[f"{phase.value}/{lang}"] = _worst_sms(rt, renderer, book, phase, lang, now)
    return PlaybookCheck(str(path), book, list(dict.fromkeys(problems)), sms)


def _worst_sms(rt: Runtime, renderer: Renderer, book: Playbook, phase: Phase, lang: str,
               now: datetime) -> dict[str, int | float | str]:
    """The SMS of `phase` with every variable value at its longest (notices.WORST_CASE), in
    the region whose details make it longest, and the seconds 1,000 of them take at the
    configured rate."""
    worst = WORST_CASE[lang]
    view = sample_view(book, phase, now=now, title=worst["title"], reason=worst["reason"])
    context = notice_context(rt, view, phase=phase, lang=lang, message=worst["message"])
    info = max((renderer.render_sms(book.notices.template_set, phase.value, lang, {
        **for_customer(context, region), "customer": {"name": worst["name"],
                                                      "ref": worst["ref"]}}).info
                for region in ("", *context.get("regional", {}))), key=lambda i: i.units)
    return {"encoding": info.encoding, "units": info.units, "segments": info.segments,
            "seconds_per_1000": round(1000 * info.segments / rt.settings.channels.sms.rate, 1)}
