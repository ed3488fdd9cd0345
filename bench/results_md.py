"""Write bench/RESULTS.md from the JSON and text files bench/run_all.sh left in a folder.

    usage: python bench/results_md.py bench/results [--quick 0|1] > bench/RESULTS.md

Every benchmark prints its figures next to the baselines it ran in the same process; this
collects their targets (PASS/MISS with the measured value and the goal) into one table, says by
how much each missed target is missed and why (from WHY below, kept up to date with
bench/README.md), and appends each benchmark's full output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

BENCHES = [
    ("fanout_email", "Email fan-out, CPU-bound and latency-bound (20,000 notices)"),
    ("fanout_big", "Email fan-out at 1,000,000 recipients (memory)"),
    ("sms_rate", "SMS at a configured segments/second rate"),
    ("first_notice", "`incident start` to the first message accepted; start-up time"),
    ("first_notice_sms", "the same, every customer with a phone number too"),
    ("start_memory", "`incident start` memory with a large audience"),
    ("report", "`incident report` over 1,000,000 delivery rows"),
]

# Why a target is missed, by the start of its name: written by people, from the profiles in
# bench/README.md. A missed target without an entry here says so.
WHY: dict[str, str] = {
    "CPU-bound: incident ≥ 80% of bare aiosmtplib": (
        "the durable outbox costs CPU the bare loop does not spend: claiming rows in "
        "transactions, marking each outcome, composing each recipient's message from the "
        "recorded notice (see bench/README.md, profile)"),
    "spawn -> first notice accepted": (
        "the whole audience is validated before the notice is recorded (its event carries "
        "exact counts; a customer with an invalid phone is skipped on every channel); "
        "checking a phone number with `phonenumbers` costs ~25 µs, 2.4 s for 100,000 — "
        "email-only lists meet the target; see bench/README.md, first notice"),
}


def _targets(name: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of one benchmark's JSON, in one shape: name, shown, goal, pass."""
    out: list[dict[str, Any]] = []
    regimes = data.get("regimes")
    blocks = list(regimes.values()) if isinstance(regimes, dict) else [data]
    for block in blocks:
        for t in block.get("targets", []):
            shown = t.get("shown")
            if shown is None:
                value = t.get("value")
                shown = f"{value:.3g}" if isinstance(value, float) else str(value)
            out.append({"name": t["name"], "shown": shown, "goal": str(t.get("goal", "")),
                        "pass": bool(t["pass"])})
    if not out and "pass" in data:  # report.py: one verdict over its formats
        slowest = max((r["seconds"] for r in data.get("reports", [])), default=None)
        out.append({"name": f"report in well under a minute (< {data['target_seconds']:g} s)",
                    "shown": f"{slowest:.2f} s" if slowest is not None else "—",
                    "goal": f"< {data['target_seconds']:g} s", "pass": bool(data["pass"])})
    return out


def _machine(folder: Path) -> dict[str, Any]:
    for name, _title in BENCHES:
        path = folder / f"{name}.json"
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            machine = data.get("machine")
            if machine:
                return dict(machine)
    return {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--quick", type=int, default=0)
    args = parser.parse_args()
    folder: Path = args.folder
    machine = _machine(folder)
    lines = ["# Benchmark results", "",
             "Written by `bash bench/run_all.sh`"
             + (" --quick (reduced sizes: not the published figures)" if args.quick else "")
             + ". Every figure was measured in the same run as its baseline, on this machine:",
             ""]
    for key in ("date", "commit", "cpu", "cores", "usable_cores", "memory_mb", "os", "python",
                "aiosmtplib", "sqlalchemy", "postfix", "load_average_1m"):
        if machine.get(key) is not None:
            lines.append(f"- {key.replace('_', ' ')}: {machine[key]}")
    lines += ["", "## Targets", "", "| benchmark | target | measured | goal | result |",
              "|---|---|---|---|---|"]
    missed: list[tuple[str, dict[str, Any]]] = []
    sections: list[str] = []
    for name, title in BENCHES:
        json_path, text_path = folder / f"{name}.json", folder / f"{name}.txt"
        if not json_path.exists() and not text_path.exists():
            continue
        targets: list[dict[str, Any]] = []
        if json_path.exists():
            targets = _targets(name, json.loads(json_path.read_text(encoding="utf-8")))
        else:
            lines.append(f"| {name} | (no figures: the benchmark failed, see below) | | | MISS |")
        for t in targets:
            result = "PASS" if t["pass"] else "MISS"
            lines.append(f"| {name} | {t['name']} | {t['shown']} | {t['goal']} | {result} |")
            if not t["pass"]:
                missed.append((name, t))
        output = text_path.read_text(encoding="utf-8") if text_path.exists() else "(no output)"
        rc = (folder / f"{name}.rc").read_text().strip() if (folder / f"{name}.rc").exists() \
            else "?"
        sections += ["", f"## {title}", "", f"`bench/{name.split('_big')[0]}.py` "
                     f"(exit {rc}); the baselines are in the same output:", "", "```",
                     output.rstrip(), "```"]
    lines += ["", "## Missed targets: by how much, and why", ""]
    if not missed:
        lines.append("None: every target was met.")
    for name, t in missed:
        why = next((text for prefix, text in WHY.items() if t["name"].startswith(prefix)),
                   "not analysed yet — see the output below and bench/README.md")
        lines.append(f"- **{name}: {t['name']}** — measured {t['shown']}, goal {t['goal']}. "
                     f"Why: {why}.")
    lines += sections
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
