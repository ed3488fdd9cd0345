"""The status page (`incident page build`) over 1,000 incidents with 20 public notices each:
a full build and an incremental one after one more notice, next to writing the same bytes with
a plain loop.

    usage: .venv/bin/python bench/page.py [--incidents 1000] [--updates 20] [--json-out FILE]

The notices are real: one incident is started and updated through the CLI (so each notice
carries the context `incident` records), then its events are copied for N incidents into
SQLite. Timed:

- first build: `StatusPage.build` with nothing cached: every event of every incident is read
  from the database (the public view), every file rendered and written;
- full build (the goal): every file rendered (HTML in three languages, API, feeds) and
  written into an empty directory (staged, then `os.replace`), in a new process whose public
  views come from the cache the first build left next to the site — what a template change
  costs; next to it, a plain `open().write()` loop writing the same bytes;
- incremental: one incident gets one more notice; `StatusPage.build` again, in the same
  process (`incident page serve`) and in a new one (the rebuild after `incident update`,
  helped by the cache next to the site: a real new interpreter, the build timed inside it,
  imports excluded): only that incident is read and its pages rendered
  again (with the index, API and feeds), and only the files whose bytes changed are written.

Goals (issue 16): full build < 2 s, incremental < 200 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from _common import (
    clean_env,
    emit,
    incident_cmd,
    log,
    machine_info,
    machine_lines,
    make_workspace,
    run,
)

from incident.models import EventType
from incident.page.cache import BuildCache
from incident.page.writer import SiteWriter
from incident.response import Response
from incident.settings import load_runtime
from incident.store import Store, schema
from incident.store.events import canonical_json

FULL_GOAL, INCREMENTAL_GOAL = 2.0, 0.2


def seed(ws_path: Path, config: Path, db_url: str, incidents: int, updates: int) -> str:
    """One real incident through the CLI, then `incidents` copies with `updates` notices."""
    base = [*incident_cmd(frozen_at="2026-09-14T06:00:00Z"), "--config", str(config),
            "--db", db_url]
    started = run([*base, "--json", "start", "core-banking-outage", "--title",
                   "Transfers down", "--eta", "2h", "--queue-only"], env=clean_env())
    started.check("incident start")
    iid = json.loads(started.stdout)["id"]
    run([*base, "update", iid, "-m", "Failover in progress", "--queue-only"],
        env=clean_env()).check("incident update")
    store = Store.open(db_url)
    events = store.events(iid)
    declared = next(e for e in events if e.type is EventType.DECLARED)
    update = next(e for e in events if e.type is EventType.UPDATED)
    rows: list[dict[str, Any]] = []
    with store.write() as conn:
        for n in range(incidents):
            copy = f"INC-20260914-{n:06X}"
            at = declared.at + timedelta(minutes=n)
            conn.execute(schema.incidents.insert().values(
                id=copy, created_at=at, playbook_id="core-banking-outage",
                title="Transfers down", drill=False, last_seq=updates,
                head_hash=_row(copy, updates, EventType.UPDATED, at, {})["hash"]))
            for seq in range(1, updates + 1):
                kind, data = (EventType.DECLARED, declared.data) if seq == 1 else (
                    EventType.UPDATED, with_message(update.data, f"Progress {seq} of {copy}"))
                rows.append(_row(copy, seq, kind, at + timedelta(minutes=seq), data))
            if len(rows) >= 5000:
                conn.execute(schema.events.insert(), rows)
                rows = []
        if rows:
            conn.execute(schema.events.insert(), rows)
    store.close()
    return "INC-20260914-000000"


def with_message(data: dict[str, Any], message: str) -> dict[str, Any]:
    """An update's payload with another message, in its notice's context too."""
    copy = json.loads(json.dumps(data))
    copy["message"] = message
    for context in copy["notice"]["context"].values():
        context["notice"]["message"] = message
    return copy


def _row(incident_id: str, seq: int, kind: EventType, at: Any, data: dict[str, Any]
         ) -> dict[str, Any]:
    digest = hashlib.sha256(f"{incident_id}:{seq}".encode()).hexdigest()
    return {"incident_id": incident_id, "seq": seq, "type": kind.value, "at": at,
            "actor": "bench", "data": canonical_json(data), "prev_hash": "", "hash": digest}


NEW_PROCESS = """
import json, sys, time
from incident.response import Response
from incident.settings import load_runtime
page = Response(load_runtime(sys.argv[1], db=sys.argv[2])).page
began, cpu = time.perf_counter(), time.process_time()
built = page.build(sys.argv[3], publish=False)
print(json.dumps([time.perf_counter() - began, built.written, time.process_time() - cpu]))
"""


def new_process(config: Path, db_url: str, site: Path) -> tuple[float, list[str], float]:
    """The rebuild after `incident update`: a new interpreter (imports done, as in that
    process before its rebuild starts) builds the site; its own timing of the build (wall,
    and CPU seconds)."""
    done = run([sys.executable, "-c", NEW_PROCESS, str(config), db_url, str(site)],
               env=clean_env())
    done.check("rebuild in a new process")
    seconds, written, cpu = json.loads(done.stdout)
    return float(seconds), list(written), float(cpu)


def cpu_now() -> float:
    """CPU seconds of this process and of its children waited for (a forked renderer)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def plain_loop(files: dict[str, bytes], root: Path) -> float:
    """Seconds to write `files` with open().write(), creating folders as needed."""
    began = time.perf_counter()
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(data)
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="incident-bench-page-") as tmp:
        ws = make_workspace(Path(tmp) / "ws")
        db_url = f"sqlite:///{ws.path / 'incident.db'}"
        log(f"seeding {args.incidents:,} incidents x {args.updates} notices…")
        first = seed(ws.path, ws.config, db_url, args.incidents, args.updates)
        rt = load_runtime(str(ws.config), db=db_url)
        site = Path(tmp) / "site"
        page = Response(rt).page  # nothing read, rendered or written yet
        began = time.perf_counter()
        written = page.build(str(site), publish=False)
        first_build = time.perf_counter() - began

        # A full rebuild (every file rendered and written, as after a template change), in a
        # new process: the public views come from the cache the first build left.
        began = time.perf_counter()
        cache = BuildCache(site)
        try:
            cache.load(lambda _iid: None)  # views parsed when rendered (in `render`)
        except TypeError:  # a tree before the per-incident cache (side-by-side runs)
            cache.load()  # type: ignore[call-arg]
        views = [view for _seq, _head, view in cache.views.values() if view is not None]
        read = time.perf_counter() - began
        began, cpu = time.perf_counter(), cpu_now()
        files = Response(rt).page.builder().build(views)
        render, render_cpu = time.perf_counter() - began, cpu_now() - cpu
        began = time.perf_counter()
        SiteWriter(Path(tmp) / "rebuilt").write(files)
        write = time.perf_counter() - began
        full = read + render + write
        baseline = plain_loop(files, Path(tmp) / "plain")
        size = sum(len(data) for data in files.values())

        # One more notice on one incident, then rebuild: in the same process (page serve)
        # and in a fresh one (the rebuild after `incident update`: the cache next to the site).
        store = page.journal.store
        incremental: dict[str, float] = {}
        incremental_cpu: dict[str, float] = {}
        again = written
        for how in ("same_process", "new_process"):
            with store.write() as conn:
                last = store.events(first, conn)[-1]
                data = with_message(last.data, f"One more notice ({how})")
                row = _row(first, last.seq + 1, EventType.UPDATED,
                           last.at + timedelta(minutes=1), data)
                conn.execute(schema.events.insert(), [row])
                conn.execute(schema.incidents.update().where(schema.incidents.c.id == first)
                             .values(last_seq=last.seq + 1, head_hash=row["hash"]))
            if how == "same_process":
                began, cpu = time.perf_counter(), cpu_now()
                again = page.build(str(site), publish=False)
                incremental[how] = time.perf_counter() - began
                incremental_cpu[how] = cpu_now() - cpu
            else:
                incremental[how], written_there, incremental_cpu[how] = new_process(
                    ws.config, db_url, site)
                again.written = written_there
            html = (site / "en" / "incidents" / f"{first}.html").read_text("utf-8")
            if f"One more notice ({how})" not in html:
                raise SystemExit(f"the {how} rebuild did not show the notice")

    worst = max(incremental.values())
    report = {
        "machine": info, "incidents": args.incidents, "updates": args.updates,
        "files": len(files), "megabytes": round(size / 1e6, 1),
        "seconds": {"first_build": round(first_build, 3), "full": round(full, 3),
                    "read": round(read, 3),
                    "render": round(render, 3), "write": round(write, 3),
                    "plain_loop_write": round(baseline, 3), "render_cpu": round(render_cpu, 3),
                    **{f"incremental_{k}_cpu": round(v, 3) for k, v in incremental_cpu.items()},
                    **{f"incremental_{k}": round(v, 3) for k, v in incremental.items()}},
        "written": {"full": len(written.written), "incremental": len(again.written)},
        "targets": [
            {"name": "full build (every file rendered and written) < 2 s",
             "value": round(full, 3),
             "shown": f"{full:.2f} s", "goal": f"< {FULL_GOAL:g} s", "goal_value": FULL_GOAL,
             "comparison": "<", "pass": full < FULL_GOAL},
            {"name": "incremental rebuild after one notice < 200 ms",
             "value": round(worst, 3), "shown": f"{worst * 1000:.0f} ms",
             "goal": f"< {INCREMENTAL_GOAL * 1000:g} ms", "goal_value": INCREMENTAL_GOAL,
             "comparison": "<", "pass": worst < INCREMENTAL_GOAL}]}
    emit(report, args, render_text)
    return 0 if all(t["pass"] for t in report["targets"]) else 1


def render_text(r: dict[str, Any]) -> str:
    s = r["seconds"]
    lines = ["incident page build", *machine_lines(r["machine"]),
             f"{r['incidents']:,} incidents x {r['updates']} notices: {r['files']:,} files, "
             f"{r['megabytes']} MB",
             f"  first build ever (reads every event from SQLite) {s['first_build']:.3f} s",
             f"  full build: views from the cache {s['read']:.3f} s + render (HTML x3 "
             f"languages, API, feeds) {s['render']:.3f} s + write (staged, os.replace) "
             f"{s['write']:.3f} s = {s['full']:.3f} s (goal < {FULL_GOAL:g} s); render CPU "
             f"{s['render_cpu']:.3f} s (this process and its children)",
             f"  the same bytes by a plain open().write() loop {s['plain_loop_write']:.3f} s",
             f"  incremental after one notice: {s['incremental_same_process'] * 1000:.0f} ms in "
             f"the same process (page serve), {s['incremental_new_process'] * 1000:.0f} ms in "
             f"a new one (after `incident update`); {r['written']['incremental']} files "
             f"written (goal < {INCREMENTAL_GOAL * 1000:g} ms); CPU "
             f"{s['incremental_same_process_cpu'] * 1000:.0f} ms and "
             f"{s['incremental_new_process_cpu'] * 1000:.0f} ms"]
    for t in r["targets"]:
        lines.append(f"  {'PASS' if t['pass'] else 'MISS'}: {t['name']}: {t['shown']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
