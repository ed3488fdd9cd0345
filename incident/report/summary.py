"""The period summary across incidents: what a department manager presents each quarter.

Built from the per-incident reports of `incident.report.metrics`: count by type and grade,
verdict counts per principle, the median and the worst of the main figures (with the incident
that holds the worst), and the action items still open. Real incidents and drills are never
mixed: a summary covers one or the other.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from statistics import median_low
from typing import Any

from incident.report.metrics import PRINCIPLES, VERDICTS, iso

SCHEMA = "incident-summary/1"


def _reach_p95(r: dict[str, Any]) -> int | None:
    reach = r["principles"]["fast_response"]["figures"]["reach"].get("customers")
    return reach["p95_s"] if reach else None


def _regulator_bad(r: dict[str, Any]) -> int:
    counts = r["principles"]["coordination"]["figures"]["regulator_deadlines"]
    return int(counts["late"] + counts["missed"])


# Each figure: how to read it from one report; for all of them, higher is worse.
FIGURES: dict[str, Callable[[dict[str, Any]], int | None]] = {
    "detection_to_declared_s":
        lambda r: r["principles"]["fast_response"]["figures"]["detection_to_declared_s"],
    "detection_to_first_notice_s":
        lambda r: r["principles"]["fast_response"]["figures"]["detection_to_first_notice_s"],
    "impact_duration_s":
        lambda r: r["principles"]["minimal_impact"]["figures"]["impact_duration_s"],
    "longest_gap_s": lambda r: r["principles"]["transparency"]["figures"]["longest_gap_s"],
    "reach_p95_s": _reach_p95,
    "cases_outstanding":
        lambda r: r["principles"]["minimal_impact"]["figures"]["cases"]["outstanding"],
    "regulator_late_or_missed": _regulator_bad,
}


def summarise(reports: Sequence[dict[str, Any]], *, since: datetime, until: datetime,
              drills: bool, now: datetime) -> dict[str, Any]:
    """The summary of `reports` (all real incidents, or all drills, of the period)."""
    figures: dict[str, dict[str, Any]] = {}
    for name, read in FIGURES.items():
        values = [(v, r["incident"]["id"]) for r in reports if (v := read(r)) is not None]
        if values:
            worst = max(values, key=lambda item: item[0])
            figures[name] = {"n": len(values), "median": median_low(v for v, _ in values),
                             "worst": worst[0], "worst_incident": worst[1]}
        else:
            figures[name] = {"n": 0, "median": None, "worst": None, "worst_incident": None}
    verdicts = {p: {v: sum(1 for r in reports if r["verdicts"][p] == v) for v in VERDICTS}
                for p in PRINCIPLES}
    actions = [{"incident": r["incident"]["id"], **a} for r in reports for a in r["actions"]
               if a["state"] == "open"]
    actions.sort(key=lambda a: (a["due"], a["incident"], a["id"]))
    return {
        "schema": SCHEMA,
        "generated_at": iso(now),
        "period": {"since": iso(since), "until": iso(until)},
        "drills": drills,
        "incidents": len(reports),
        "by_kind": dict(sorted(Counter(r["incident"]["kind"] for r in reports).items())),
        "by_grade": dict(sorted(Counter(r["incident"]["severity"] for r in reports).items())),
        "verdicts": verdicts,
        "figures": figures,
        "open_actions": actions,
        "list": [{"id": r["incident"]["id"], "title": r["incident"]["title"],
                  "drill": r["incident"]["drill"], "kind": r["incident"]["kind"],
                  "playbook": r["incident"]["playbook"]["id"],
                  "severity": r["incident"]["severity"], "status": r["incident"]["status"],
                  "detected_at": r["incident"]["detected_at"],
                  "declared_at": r["incident"]["declared_at"], "verdicts": r["verdicts"]}
                 for r in reports],
    }
