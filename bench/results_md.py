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
    ("receipts", "`receipts serve`: signed Twilio status callbacks per second, p50/p99"),
    ("bounces", "Bounce ingest: DSNs per second from an mbox of 100,000"),
    ("sql_audience", "SQL audiences (SQLite, PostgreSQL) vs CSV at 1,000,000 rows: rows/s, "
                     "peak RSS"),
    ("page", "`incident page build`: 1,000 incidents x 20 notices, full and incremental"),
]

# Why a target is missed, by the start of its name: written by people, from the profiles in
# bench/README.md. A missed target without an entry here says so.
WHY: dict[str, str] = {
    "CPU-bound: incident ≥ 80% of bare aiosmtplib": (
        "the durable outbox costs CPU the bare loop does not spend: claiming rows in "
        "transactions, marking each outcome, filling each recipient into the pre-rendered "
        "message (about a fifth of deliver's CPU per message at commit 2cb9299, which met "
        "the target at 0.83-0.87x; see bench/README.md, profile); a miss after that is a "
        "regression or a busy machine (the output warns when other processes used the cores); "
        "at --quick sizes (5,000 messages) the 0.5 s interpreter start-up in the process-wall "
        "row weighs four times as much as at 20,000"),
    "spawn -> first notice accepted": (
        "since issue 17 the notice is recorded once the file is hashed, checked as a whole "
        "and its first 500 selected recipients are read (the rest validated while sending), "
        "so what is left on the path is fixed cost: the interpreter, imports, settings and "
        "playbook, rendering checks, recording and the SMTP handshake (0.82 s with phones "
        "on a quiet machine at 8005e5b); a miss is a busy machine, whose other processes "
        "take the core the start needs (bench/README.md, first notice)"),
    "issue 17: incident start (record + send)": (
        "`incident start` spends ~0.24 CPU ms a message (recording every row durably, "
        "claiming, composing, marking each outcome; both processes counted) against the "
        "loop's ~0.12 ms, plus ~1 s before its first message; two sender processes halve "
        "the wall only when the second core is free, and smtp-sink itself needs ~0.08 CPU "
        "ms a message on the same two cores. Left: pipelining across messages (RFC 2920: "
        "the next MAIL/RCPT/DATA in the write that ends the previous body) "
        "(bench/README.md, fan-out)"),
    "start queue-only peak RSS": (
        "a regression of issue 17's early recording, found by this run and fixed after it "
        "(f9438ba): `start` recorded the notice from the first rows and read the rest of the "
        "file while recording, so the read's own tables (the ids seen, ~50 MB at 10^6) lived "
        "beside each 100,000-row batch (~70 MB). `--queue-only`, which sends nothing itself, "
        "now reads the file whole first as before: start_memory.py at 1,000,000 on f9438ba, "
        "quiet machine: 163 MB (PASS), sending 142 MB (bench/README.md, start_memory)"),
    "peak RSS of incident start < 200 MB": (
        "the same `start --queue-only` as start_memory's queue-only row (see there)"),
    "incident: achieved within 5% of": (
        "by design since issue 11: the rate limiter counts a request from its release until "
        "one second after its answer (a request reaches the provider somewhere in between, "
        "so no window of arrivals can exceed the rate however late a busy machine sends it), "
        "which caps the long-run rate at R / (1 s + mean latency): with this benchmark's "
        "80-250 ms answers about 0.84-0.86 R. The target assumed the provider sees our "
        "release times; see bench/README.md, sms_rate"),
    "full build (every file rendered": (
        "rendering 3,000 incident pages with jinja2 (~1.6 CPU-s, split with a forked child "
        "over the 2 cores: pays only with a free core) and writing 37 MB; 2.12 s on a quiet "
        "machine at f058f7e; on a machine busy with other work the write alone takes as "
        "long as the plain loop's (bench/README.md, page.py)"),
    "incremental rebuild after one notice": (
        "the figure is the slower of the same-process and the new-process rebuild (160-210 "
        "CPU-ms each at 337955c: with 1,000 incidents open every notice re-makes the index, "
        "API and feeds and writes ~16 MB); met on a busy machine in some runs, not in "
        "others (bench/README.md, page.py)"),
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
                        "pass": bool(t["pass"]), "by": _by_how_much(t)})
    if not out and "pass" in data:  # report.py: one verdict over its formats
        slowest = max((r["seconds"] for r in data.get("reports", [])), default=None)
        out.append({"name": f"report in well under a minute (< {data['target_seconds']:g} s)",
                    "shown": f"{slowest:.2f} s" if slowest is not None else "—",
                    "goal": f"< {data['target_seconds']:g} s", "pass": bool(data["pass"])})
    return out


def _by_how_much(t: dict[str, Any]) -> str:
    """How far a numeric figure is from its goal: "3.3× the limit", "6% short"."""
    value, goal = t.get("value"), t.get("goal_value")
    if not isinstance(value, (int, float)) or not isinstance(goal, (int, float)) or not goal:
        return ""
    if t.get("comparison") == "<":
        share = value / goal
        return f"{share:.1f}× the limit" if value >= goal else f"{share:.0%} of the limit"
    return f"{1 - value / goal:.0%} short" if value < goal else f"{value / goal - 1:.0%} over"


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
        by = f" ({t['by']})" if t.get("by") else ""
        lines.append(f"- **{name}: {t['name']}** — measured {t['shown']}, goal {t['goal']}"
                     f"{by}. Why: {why}.")
    lines += sections
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
