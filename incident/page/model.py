"""The public view of the record: what a status page may show of an incident.

Only the customer notices are read (each recorded with its localized context, which holds no
customer: the customer is added per message at send time), so nothing else of the record can
reach the page — not internal updates, manual cases, audience files or delivery rows. Drills
are left out altogether.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from incident.models import Event, EventType
from incident.timeutil import parse_iso

# Statuspage's incident impact, from the position of the grade in the playbook's scale
# (its first level is the most severe).
IMPACTS = ("critical", "major", "minor")


@dataclass(frozen=True)
class PublicUpdate:
    """One public notice: when, what status it announced, the ETA it gave, and what it told
    customers in each page language."""

    seq: int
    at: datetime
    phase: str  # initial | update | eta_changed | resolved
    status: str  # investigating | identified | monitoring | resolved
    eta: datetime | None
    bodies: dict[str, str]

    def body(self, lang: str) -> str:
        """What the notice told customers, in `lang`, as one paragraph."""
        return str(pick(self.bodies, lang) or "")


@dataclass(frozen=True)
class EtaEntry:
    """An estimated recovery time as announced (None: withdrawn / not known)."""

    eta: datetime | None
    announced_at: datetime
    seq: int


@dataclass
class PublicIncident:
    """What the status page shows of one (non-drill) incident with at least one public notice.

    `details` are the public parts of the latest notice's context, by language: title and
    affected services, the manual channel and hotlines, branches, the next update promised."""

    id: str
    kind: str  # system_failure | natural_disaster
    impact: str  # none | minor | major | critical
    created_at: datetime
    head: str  # hash of the incident's latest event: a cache key for what is built from it
    updates: list[PublicUpdate] = field(default_factory=list)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    # moments() and summary() of the updates as they were (a view is built by appending its
    # updates, then only read): every build asks each incident for them
    _memo: dict[str, tuple[int, Any]] = field(default_factory=dict, init=False, repr=False,
                                               compare=False)

    @property
    def status(self) -> str:
        """Statuspage's status of the incident (that of its latest public notice)."""
        return self.updates[-1].status

    @property
    def resolved(self) -> bool:
        return self.status == "resolved"

    @property
    def updated_at(self) -> datetime:
        """When the latest public notice was recorded."""
        return self.updates[-1].at

    @property
    def eta(self) -> datetime | None:
        """The ETA of the latest public notice (None once resolved)."""
        return None if self.resolved else self.updates[-1].eta

    @property
    def eta_history(self) -> list[EtaEntry]:
        """Each ETA as first announced, in order."""
        out: list[EtaEntry] = []
        for update in self.updates:
            if update.phase == "resolved":
                break
            if not out or out[-1].eta != update.eta:
                out.append(EtaEntry(update.eta, update.at, update.seq))
        return out

    def latest(self, lang: str) -> dict[str, Any]:
        """The public details of the latest notice in `lang`."""
        return pick(self.details, lang) or {}

    def title(self, lang: str) -> str:
        return str(self.latest(lang).get("incident", {}).get("title") or self.id)

    def affected(self, lang: str) -> list[str]:
        """The services the latest notice in `lang` names as affected."""
        return list(self.latest(lang).get("incident", {}).get("affected", []))

    def moments(self) -> list[tuple[int, int]]:
        """(microseconds since the epoch, seq) of each public notice: orders them as their
        times do, whatever their offsets."""
        return self._memoized("moments", lambda: [(micros(u.at), u.seq) for u in self.updates])

    def _memoized(self, name: str, make: Callable[[], Any]) -> Any:
        kept = self._memo.get(name)
        if kept is None or kept[0] != len(self.updates):
            kept = self._memo[name] = (len(self.updates), make())
        return kept[1]

    def update(self, seq: int) -> PublicUpdate:
        return next(u for u in self.updates if u.seq == seq)

    def summary(self) -> dict[str, Any]:
        """What a build needs of an incident whose pages, index entries and API document are
        kept from an earlier one (`DeferredIncident`), JSON-able."""
        return self._memoized("summary", self._make_summary)

    def _make_summary(self) -> dict[str, Any]:
        return {"kind": self.kind, "impact": self.impact, "status": self.status,
                "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at),
                "affected": {lang: self.affected(lang) for lang in self.details},
                # flat (at, seq, at, seq, ...): one list an incident for the collector to
                # walk in the process that reads it back, not one per notice
                "moments": [n for moment in self.moments() for n in moment]}

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form (the view cache next to the site); `from_json` reads it back."""
        return {"id": self.id, "kind": self.kind, "impact": self.impact,
                "created_at": _iso(self.created_at), "head": self.head,
                "resolved_at": _iso(self.resolved_at), "closed_at": _iso(self.closed_at),
                "details": self.details,
                "updates": [{"seq": u.seq, "at": _iso(u.at), "phase": u.phase,
                             "status": u.status, "eta": _iso(u.eta), "bodies": u.bodies}
                            for u in self.updates]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PublicIncident:
        updates = [PublicUpdate(**{**u, "at": datetime.fromisoformat(u["at"]),
                                   "eta": _stored(u["eta"])}) for u in data["updates"]]
        return cls(**{**data, "updates": updates,
                      "created_at": datetime.fromisoformat(data["created_at"]),
                      "resolved_at": _stored(data["resolved_at"]),
                      "closed_at": _stored(data["closed_at"])})


class DeferredIncident(PublicIncident):
    """An incident known by its `summary` (the cache's index) until more is asked of it: its
    notices and details, then read at once through `load` (the cache next to the site, else
    the record). A rebuild after one notice reads only the changed incident in full."""

    def __init__(self, id: str, head: str, summary: dict[str, Any],
                 load: Callable[[], PublicIncident]) -> None:
        # Not the dataclass's __init__: the fields read from the view are properties here.
        self.id, self.head, self.kind = id, head, str(summary["kind"])
        self.impact = str(summary["impact"])
        self.created_at = datetime.fromisoformat(summary["created_at"])
        self._status = str(summary["status"])
        self._updated_at = datetime.fromisoformat(summary["updated_at"])
        self._affected = {str(k): [str(s) for s in v] for k, v in summary["affected"].items()}
        self._summary, self._load = summary, load
        self._view: PublicIncident | None = None

    @property
    def view(self) -> PublicIncident:
        if self._view is None:
            self._view = self._load()
        return self._view

    updates = property(lambda self: self.view.updates)
    details = property(lambda self: self.view.details)
    resolved_at = property(lambda self: self.view.resolved_at)
    closed_at = property(lambda self: self.view.closed_at)

    @property
    def status(self) -> str:
        return self._status

    @property
    def updated_at(self) -> datetime:
        return self._updated_at

    def affected(self, lang: str) -> list[str]:
        return list(pick(self._affected, lang) or [])

    def moments(self) -> list[tuple[int, int]]:
        flat = self._summary["moments"]
        return list(zip(flat[::2], flat[1::2], strict=True))

    def summary(self) -> dict[str, Any]:
        return self._summary

    def to_json(self) -> dict[str, Any]:
        return self.view.to_json()


def micros(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time(value: str | None) -> datetime | None:
    return parse_iso(value) if value else None


def _stored(value: str | None) -> datetime | None:
    """A time the cache stored (our own isoformat, with its offset)."""
    return datetime.fromisoformat(value) if value else None


def pick(values: dict[str, Any], lang: str) -> Any:
    """`values[lang]`, else the other Chinese one, else any (records predating a language)."""
    for candidate in (lang, "zh-CN" if lang == "zh-HK" else "zh-HK", "en", *values):
        if candidate in values:
            return values[candidate]
    return None


def notice_body(ctx: dict[str, Any], phase: str) -> str:
    """What a notice told customers, from its context in one language, as one paragraph."""
    notice = ctx.get("notice", {})
    if phase == "eta_changed":
        return str(ctx.get("eta", {}).get("reason") or notice.get("message") or "")
    if phase == "initial":
        impact = str(ctx.get("playbook", {}).get("impact") or "")
        message = str(notice.get("message") or "")
        return " ".join(part for part in (impact, message) if part)
    return str(notice.get("message") or "")


def public_details(ctx: dict[str, Any]) -> dict[str, Any]:
    """The parts of a notice's context the page shows (a whitelist: a key added to notice
    contexts later never reaches the page by accident)."""
    incident, org = ctx.get("incident", {}), ctx.get("org", {})
    regional = {region: {"hotline": hotline} for region, hotline in regional_hotlines(ctx)}
    return {"incident": {"title": incident.get("title", ""),
                         "affected": list(incident.get("affected", []))},
            "org": {"hotline": org.get("hotline", "")},
            "manual": {key: ctx.get("manual", {}).get(key, "")
                       for key in ("open", "hotline", "hours", "counters", "workaround")},
            "branches": ctx.get("branches", {"closed": [], "open": [], "none_open": False}),
            "next_update": ctx.get("next_update", ""), "regional": regional}


def public_incident(events: Sequence[Event],
                    languages: Sequence[str] = ("zh-CN", "zh-HK", "en")
                    ) -> PublicIncident | None:
    """The public view of one incident's events (None: a drill, or nothing announced yet)."""
    if not events or events[0].type is not EventType.DECLARED:
        return None
    first = events[0].data
    if first.get("drill"):
        return None
    playbook = first["playbook"]
    grades = [str(level["id"]) for level in playbook["severity"]["levels"]]
    severity, status = str(first["severity"]), "investigating"
    eta = _time(first.get("eta"))
    found = PublicIncident(id=events[0].incident_id, kind=str(playbook.get("kind", "")),
                           impact="", created_at=events[0].at, head=events[-1].hash)
    latest: dict[str, dict[str, Any]] = {}
    # The stored payloads are read as plain JSON here, not through incident/payloads.py:
    # they were validated when written, and parsing thousands of notice contexts through
    # pydantic would cost most of a build (bench/page.py).
    for event in events:
        data = event.data
        if event.type is EventType.UPDATED:
            severity = data.get("severity") or severity
            status = data.get("status") or status
            if "eta" in data:
                eta = _time(data["eta"])
        elif event.type is EventType.ETA_REVISED:
            eta = _time(data["eta"])
        elif event.type is EventType.RESOLVED:
            status = "resolved"
            found.resolved_at = parse_iso(data["resolved_at"])
        elif event.type is EventType.CLOSED:
            found.closed_at = event.at
        notice = data.get("notice")
        if not notice or notice.get("audience") == "internal" or not notice.get("context"):
            continue
        contexts, phase = notice["context"], str(notice["phase"])
        found.updates.append(PublicUpdate(
            seq=event.seq, at=event.at, phase=phase, status=status, eta=eta,
            bodies={lang: notice_body(pick(contexts, lang), phase) for lang in languages}))
        latest = contexts
    if not found.updates:
        return None
    found.details = {lang: public_details(pick(latest, lang)) for lang in languages}
    rank = grades.index(severity) if severity in grades else len(grades) - 1
    found.impact = IMPACTS[min(rank, len(IMPACTS) - 1)]
    return found


def regional_hotlines(ctx: dict[str, Any]) -> list[tuple[str, str]]:
    """(region, hotline) for each region whose customers were given a hotline of their own."""
    out = []
    for region, differs in sorted(ctx.get("regional", {}).items()):
        number = (differs.get("hotline") or differs.get("manual", {}).get("hotline")
                  or differs.get("org", {}).get("hotline"))
        if number:
            out.append((region, str(number)))
    return out
