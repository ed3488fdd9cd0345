"""Time and peak memory of `incident start` on big audiences (100,000 and 1,000,000 customers).

    python bench/start_memory.py [--customers 100000 1000000] [--send-seconds 20]
                                 [--json] [--json-out FILE] [--keep]

For each audience size, in a fresh `incident init` workspace (email over SMTP to Postfix's
`smtp-sink` on 127.0.0.1, 4 connections, no rate limit) and with an N-customer CSV (email only,
half zh-CN, half en — the same file `first_notice.py` and `fanout_email.py` use), three fresh
processes, each timed and reaped with `os.wait4` for its own peak RSS:

1. `start --dry-run`: read, validate and select the audience, render, count; record nothing.
2. `start --queue-only`: the same, plus recording the incident, its notice and every outbox row
   (the figure issue 6 names: peak RSS < 200 MB at 1,000,000 recipients).
3. `start` (sending), stopped with SIGKILL after `--send-seconds`: recording and sending at once,
   as the supervisor runs it; the row shows how many messages the sink had accepted by then and
   how many outbox rows were recorded (a killed start leaves the rest for `incident deliver`).

Target (issue 6): every `start` under 200 MB peak RSS at 1,000,000 recipients.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # bench/ is not a package: imported via sys.path
    PLAYBOOK,
    TITLE,
    RunResult,
    Workspace,
    clean_env,
    discard,
    emit,
    incident_cmd,
    log,
    machine_info,
    machine_lines,
    make_workspace,
    run,
    servers,
    table,
    write_audience,
)

RSS_TARGET_MB = 200.0
TARGET_AT = 1_000_000


def outbox_rows(ws: Workspace) -> int:
    """Outbox rows in the workspace's SQLite database (read directly: no process start-up)."""
    db = ws.path / "incident.db"
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])


def measure(base: Path, ws: Workspace, audience: Path, n: int, port: int,
            send_seconds: float, sink_count: Any) -> dict[str, Any]:
    """The three runs for one audience size."""
    start = ["start", PLAYBOOK, "--title", TITLE, "--audience", str(audience)]
    out: dict[str, Any] = {"customers": n}
    log(f"  {n:,}: start --dry-run")
    done = ws.incident(*start, "--dry-run").check("start --dry-run")
    out["dry_run"] = _figures(done)

    log(f"  {n:,}: start --queue-only")
    copy = ws.copy(base / f"queue-{n}")
    done = copy.incident(*start, "--queue-only").check("start --queue-only")
    out["queue_only"] = {**_figures(done), "rows": outbox_rows(copy)}
    shutil.rmtree(copy.path, ignore_errors=True)

    if send_seconds > 0:
        log(f"  {n:,}: start (sending), stopped after {send_seconds:g} s")
        copy = ws.copy(base / f"send-{n}")
        before = sink_count()
        done = run([*incident_cmd(), "--config", str(copy.config), *start], cwd=copy.path,
                   env=clean_env(), timeout=send_seconds)
        time.sleep(0.2)  # let the sink count what was in flight
        out["sending"] = {**_figures(done), "exit": done.returncode,
                          "accepted": sink_count() - before, "rows": outbox_rows(copy),
                          "killed": done.returncode < 0}
        shutil.rmtree(copy.path, ignore_errors=True)
    return out


def _figures(done: RunResult) -> dict[str, float]:
    return {"seconds": done.wall, "peak_rss_mb": done.max_rss_mb, "cpu": done.cpu_seconds}


def render(report: dict[str, Any]) -> str:
    """The human-readable report."""
    lines = ["Time and peak memory of incident start on big audiences",
             *machine_lines(report["machine"]), "",
             f"incident start {PLAYBOOK} --audience customers.csv (email only; SMTP to smtp-sink "
             "on 127.0.0.1), a fresh process each", ""]
    rows = []
    for size in report["sizes"]:
        n = size["customers"]
        for key, label in (("dry_run", "start --dry-run"), ("queue_only", "start --queue-only"),
                           ("sending", "start (sending)")):
            if key not in size:
                continue
            s = size[key]
            note = ""
            if key == "queue_only":
                note = f"{s['rows']:,} outbox rows recorded"
            elif key == "sending":
                how = (f"killed after {s['seconds']:.0f} s" if s["killed"]
                       else f"exit {s['exit']}")
                note = (f"{how}: {s['accepted']:,} messages accepted by the sink, "
                        f"{s['rows']:,} outbox rows recorded")
            rows.append([f"{n:,}", label, f"{s['seconds']:.2f}", f"{s['cpu']:.2f}",
                         f"{s['peak_rss_mb']:.0f}", note])
    lines += table(["customers", "command", "wall s", "CPU s", "peak RSS MB", ""], rows,
                   "rlrrrl")
    lines += ["", "targets (issue 6):"]
    for t in report["targets"]:
        lines.append(f"  [{'PASS' if t['pass'] else 'MISS'}] {t['name']}: {t['shown']}")
    return "\n".join(lines)


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Peak RSS of every start under 200 MB at 1,000,000 recipients."""
    out = []
    for size in report["sizes"]:
        if size["customers"] < TARGET_AT:
            continue
        for key in ("queue_only", "sending"):
            if key in size:
                rss = size[key]["peak_rss_mb"]
                out.append({"name": f"start {key.replace('_', '-')} peak RSS < "
                                    f"{RSS_TARGET_MB:.0f} MB at {size['customers']:,} "
                                    "recipients",
                            "value": rss, "shown": f"{rss:.0f} MB",
                            "goal": f"< {RSS_TARGET_MB:.0f} MB", "goal_value": RSS_TARGET_MB,
                            "comparison": "<",
                            "pass": rss < RSS_TARGET_MB})
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000],
                   help="audience sizes (default 100,000 and 1,000,000)")
    p.add_argument("--send-seconds", type=float, default=20.0,
                   help="how long the sending run may go before it is killed (0: skip it)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON only")
    p.add_argument("--json-out", metavar="FILE", type=Path, default=None,
                   help="also write the figures as JSON to FILE")
    p.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = p.parse_args(argv)
    if any(n < 1 for n in args.customers) or args.send_seconds < 0:
        p.error("--customers must be positive, --send-seconds not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure; print the report (or JSON)."""
    args = parse_args(argv)
    report: dict[str, Any] = {"benchmark": "start_memory", "machine": machine_info(),
                              "params": {"send_seconds": args.send_seconds}, "sizes": []}
    tmp = Path(tempfile.mkdtemp(prefix="incident-bench-start-"))
    sink = servers.start_smtp_sink(tmp / "sink", "-c")
    counter = _SinkCounter(sink.log_path)
    try:
        ws = make_workspace(tmp / "ws", smtp_port=sink.port, connections=4)
        ws.incident("status").check("incident status (creates the database)")
        for n in args.customers:
            log(f"{n:,}-customer CSV")
            audience = write_audience(tmp / f"customers-{n}.csv", n)
            report["sizes"].append(measure(tmp, ws, audience, n, sink.port,
                                           args.send_seconds, counter.value))
            audience.unlink()
    finally:
        sink.stop()
        discard(tmp, args.keep)
    report["targets"] = targets(report)
    emit(report, args, render)
    return 0


class _SinkCounter:
    """Messages smtp-sink has accepted so far, from the `mesg=N` counters `-c` writes."""

    PATTERN = re.compile(rb"mesg=(\d+)")

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path

    def value(self) -> int:
        """The latest count in the log (0 before the first message)."""
        try:
            found = self.PATTERN.findall(self.log_path.read_bytes()[-4096:])
        except OSError:
            return 0
        return int(found[-1]) if found else 0


if __name__ == "__main__":
    sys.exit(main())
