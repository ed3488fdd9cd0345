"""`api/v2/*.json` in Statuspage's public shape (summary, status, incidents, unresolved), in
the default language, plus our own `eta` and `manual_channel` on each incident."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from incident.page.model import PublicIncident, PublicUpdate, regional_hotlines

if TYPE_CHECKING:
    from incident.page.site import SiteInfo

RECENT = 50  # incidents.json: the 50 most recent, as Statuspage's
ORDER = ("none", "minor", "major", "critical")
# Statuspage's page-level descriptions of each indicator.
DESCRIPTIONS = {"none": "All Systems Operational", "minor": "Minor Service Outage",
                "major": "Partial System Outage", "critical": "Major System Outage"}
# A component affected by an unresolved incident of this impact.
COMPONENT_STATUS = {"minor": "degraded_performance", "major": "partial_outage",
                    "critical": "major_outage"}


def stamp(value: datetime | None) -> str | None:
    """Statuspage's time format: ISO 8601 with milliseconds, in UTC."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{value.microsecond // 1000:03d}Z"


def encode(data: Any) -> str:
    """Deterministic compact JSON (sorted keys; the C encoder: indent would take the
    pure-Python one, ten times slower)."""
    return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def document(parts: dict[str, bytes]) -> bytes:
    """A JSON object spliced from its members' encoded values (UTF-8), keys sorted as
    `encode` sorts them: the bytes of `encode` of the whole object, plus a newline."""
    pieces = [b"{"]
    for key in sorted(parts):  # one join: the members (megabytes) are copied once
        pieces += (b"," if len(pieces) > 1 else b"", encode(key).encode(), b":", parts[key])
    pieces.append(b"}\n")
    return b"".join(pieces)


def encoded(data: Any) -> bytes:
    return encode(data).encode()


def api_files(ordered: Sequence[PublicIncident], info: SiteInfo, updated: datetime | None,
              docs: dict[tuple[str, str], bytes] | None = None) -> dict[str, bytes]:
    """The four API documents (`ordered`: newest first), spliced from each incident's
    encoded document. `docs`: those by (id, head), kept between builds and processes (only a
    changed incident is encoded again; tests/test_page.py checks the splice against one
    json.dumps of the whole)."""
    docs = {} if docs is None else docs
    lang = info.default_language
    page = encoded({"id": info.page_id, "name": info.name.get(lang) or info.name.get("en", ""),
                   "url": info.url, "time_zone": info.time_zone, "updated_at": stamp(updated)})
    unresolved = [i for i in ordered if not i.resolved]
    indicator = max((i.impact for i in unresolved), key=ORDER.index, default="none")
    status = encoded({"indicator": indicator, "description": DESCRIPTIONS[indicator]})

    def listed(incidents: Sequence[PublicIncident]) -> bytes:
        out = []
        for incident in incidents:
            key = (incident.id, incident.head)
            if key not in docs:
                docs[key] = encoded(incident_doc(incident, info))
            out.append(docs[key])
        return b"".join([b"[", b",".join(out), b"]"])

    open_docs = listed(unresolved)
    return {"api/v2/summary.json": document({
                "page": page, "status": status, "components": encoded(components(ordered, info)),
                "incidents": open_docs, "scheduled_maintenances": b"[]"}),
            "api/v2/status.json": document({"page": page, "status": status}),
            "api/v2/incidents.json": document({"page": page,
                                               "incidents": listed(ordered[:RECENT])}),
            "api/v2/incidents/unresolved.json": document({"page": page,
                                                          "incidents": open_docs})}


def incident_doc(incident: PublicIncident, info: SiteInfo) -> dict[str, Any]:
    """One incident as Statuspage documents it; updates newest first."""
    lang = info.default_language
    ctx = incident.latest(lang)
    manual = ctx.get("manual", {})
    monitoring = next((u.at for u in incident.updates if u.status == "monitoring"), None)
    link = f"{info.url}/{lang}/incidents/{incident.id}.html" if info.url else ""
    return {
        "id": incident.id, "name": incident.title(lang), "status": incident.status,
        "impact": incident.impact, "created_at": stamp(incident.created_at),
        "updated_at": stamp(incident.updated_at), "started_at": stamp(incident.created_at),
        "monitoring_at": stamp(monitoring), "resolved_at": stamp(
            incident.resolved_at or (incident.updated_at if incident.resolved else None)),
        "shortlink": link, "page_id": info.page_id, "components": [],
        "incident_updates": [update_doc(incident, u, lang) for u in reversed(incident.updates)],
        # Ours: what Statuspage has no field for.
        "eta": stamp(incident.eta),
        "manual_channel": {
            "open": bool(manual.get("open")),
            "hotline": manual.get("hotline") or ctx.get("org", {}).get("hotline", ""),
            "hours": manual.get("hours", ""), "counters": manual.get("counters", ""),
            "workaround": manual.get("workaround", ""),
            "hotlines": dict(regional_hotlines(ctx))},
    }


def update_doc(incident: PublicIncident, update: PublicUpdate, lang: str) -> dict[str, Any]:
    at = stamp(update.at)
    return {"id": f"{incident.id}-{update.seq}", "incident_id": incident.id,
            "status": update.status, "body": update.body(lang), "created_at": at,
            "updated_at": at, "display_at": at, "affected_components": None,
            "eta": stamp(update.eta)}


def components(ordered: Sequence[PublicIncident], info: SiteInfo) -> list[dict[str, Any]]:
    """The services named as affected by the incidents shown, each with the status the worst
    unresolved incident affecting it gives (operational when none does)."""
    found: dict[str, dict[str, Any]] = {}
    for incident in reversed(ordered):  # oldest first: created_at is the first mention
        for name in incident.affected(info.default_language):
            entry = found.get(name)
            if entry is None:
                entry = found[name] = {
                    "id": name, "name": name, "status": "operational", "description": None,
                    "created_at": stamp(incident.created_at), "position": len(found) + 1,
                    "showcase": True, "group_id": None, "page_id": info.page_id,
                    "group": False, "only_show_if_degraded": False, "start_date": None,
                    "_rank": 0}
            entry["_updated"] = incident.updated_at  # stamped once, below
            rank = ORDER.index(incident.impact) if not incident.resolved else 0
            if rank > entry["_rank"]:
                entry["_rank"], entry["status"] = rank, COMPONENT_STATUS[incident.impact]
    return [{**{k: v for k, v in entry.items() if k[0] != "_"},
             "updated_at": stamp(entry["_updated"])}
            for entry in sorted(found.values(), key=lambda e: e["position"])]
