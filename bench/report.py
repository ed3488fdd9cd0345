"""How long `incident report` takes on a big incident: 1,000,000 outbox rows, 10,000 events.

    .venv/bin/python bench/report.py                    # 1,000,000 rows, 10,000 events
    .venv/bin/python bench/report.py --rows 200000      # smaller
    .venv/bin/python bench/report.py --json             # figures as JSON only

Builds a real workspace (`incident init` in a temp dir, SQLite) and one incident written with
the store's own functions: the declaration and 9,999 more events appended to the hash chain
(20 customer notices with ETA revisions and updates, manual cases logged and reconciled, steps,
party acknowledgements), and the outbox rows bulk-inserted with SQLAlchemy executemany —
25,000 customers × 2 channels × 20 notices, each notice sent over a few minutes (email at about
200/s, SMS slower, a long tail), 1.5% permanent failures with realistic codes, 0.2% still
pending. Then `incident report ID` runs as a fresh process for JSON, HTML and Markdown; each
is timed (wall clock, start-up included) with its own peak RSS. PASS when every format takes
under 30 s ("well under a minute").
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from incident.models import EventType
from incident.playbooks import load_playbook
from incident.resources import shipped
from incident.store import Store, schema
from incident.timeutil import to_iso

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # bench/ is not a package: imported via sys.path
    clean_env,
    incident_cmd,
    machine_info,
    machine_lines,
    make_workspace,
    run,
)

TARGET_SECONDS = 30.0
NOTICES = 20
CHANNELS = ("email", "sms")
FAILURES = {"email": [("550", "550 5.1.1 <{address}>: Recipient address rejected"),
                       ("552", "552 5.2.2 Mailbox full")],
            "sms": [("21211", "Twilio 21211: The 'To' number {address} is not valid"),
                    ("21610", "Twilio 21610: Attempt to send to unsubscribed recipient"),
                    ("21614", "Twilio 21614: {address} is not a mobile number")]}


def _declared(book: Any, detected: datetime, eta: datetime, customers: int) -> dict[str, Any]:
    return {"title": "Bench: core banking down", "severity": "I",
            "playbook": book.model_dump(mode="json", by_alias=True), "drill": False,
            "detected_at": to_iso(detected), "eta": to_iso(eta),
            "affected": list(book.affected_services), "regions": [],
            "audience": {"file": "customers.csv", "rows": customers, "skipped": 0,
                         "selected": customers},
            "manual": {"hotline": "95000", "hours": {"zh-CN": "全天", "en": "24 hours"}},
            "steps_done": ["declare", "first-customer-notice", "open-manual-channel"],
            "notice": {"phase": "initial", "messages": customers * len(CHANNELS),
                       "recipients": customers}}


def build_incident(db_url: str, *, rows: int, events: int, seed: int = 7
                   ) -> tuple[str, dict[str, float]]:
    """Write the incident; return its id and how long each part took."""
    rng = random.Random(seed)
    customers = rows // (NOTICES * len(CHANNELS))
    book = load_playbook(shipped("playbooks") / "core-banking-outage.yaml")
    store = Store.open(db_url)
    detected = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    declared = detected + timedelta(minutes=8)
    # 20 notices every 20 minutes, recovery after the last one.
    notice_times = [declared + timedelta(minutes=20 * n) for n in range(NOTICES)]
    timings: dict[str, float] = {}

    started = time.perf_counter()
    with store.write() as conn:
        iid = store.create_incident(conn, playbook_id=book.id, title="Bench", drill=False,
                                    at=declared)
        store.append(conn, iid, EventType.DECLARED, actor="bench", at=declared,
                     data=_declared(book, detected, notice_times[-1] + timedelta(hours=1),
                                    customers))
        seqs = [1]
        fillers = events - NOTICES - 1  # everything that is not a customer notice
        plan: list[tuple[datetime, EventType, dict[str, Any]]] = []
        for n in range(1, NOTICES - 1):
            at = notice_times[n]
            if n % 4 == 0:
                plan.append((at, EventType.ETA_REVISED, {
                    "eta": to_iso(at + timedelta(hours=2)), "reason": "Checks take longer",
                    "message": "Checks take longer",
                    "notice": {"phase": "eta_changed", "messages": customers * 2,
                               "recipients": customers}}))
            else:
                plan.append((at, EventType.UPDATED, {
                    "message": f"Progress {n}", "internal": False,
                    "notice": {"phase": "update", "messages": customers * 2,
                               "recipients": customers}}))
        cases = fillers // 2 - 20
        span = (notice_times[-1] - declared).total_seconds()
        for c in range(cases):
            logged = declared + timedelta(seconds=span * c / cases)
            plan.append((logged, EventType.CASE_LOGGED, {
                "case": f"M{c + 1:05d}", "customer": f"C{rng.randrange(customers):08d}",
                "request": "Urgent cash withdrawal", "amount": f"{rng.randrange(100, 50000)}.00",
                "urgent": rng.random() < 0.1}))
        for step in ("notify-parties", "engineering-triage", "branch-instructions",
                     "media-holding-statement", "nfra-first-report", "dora-initial-notification",
                     "inform-institutions-and-key-customers", "recovery-verification"):
            plan.append((declared + timedelta(minutes=rng.randrange(5, 200)),
                         EventType.STEP_DONE, {"step": step}))
        for k in range(1, 8):
            plan.append((declared + timedelta(hours=2 * k, minutes=-3), EventType.STEP_DONE,
                         {"step": "nfra-progress-report"}))
        plan.sort(key=lambda item: item[0])
        resolved_at = notice_times[-1]
        plan.append((resolved_at, EventType.RESOLVED, {
            "message": "Restored", "resolved_at": to_iso(resolved_at),
            "notice": {"phase": "resolved", "messages": customers * 2,
                       "recipients": customers}}))
        after = resolved_at + timedelta(minutes=5)
        reconcile = events - 1 - len(plan)
        for c in range(min(reconcile, cases)):
            plan.append((after + timedelta(seconds=c), EventType.CASE_RECONCILED,
                         {"case": f"M{c + 1:05d}"}))
        while len(plan) < events - 1:
            plan.append((after + timedelta(hours=1), EventType.NOTE,
                         {"section": "went_well", "text": f"Note {len(plan)}"}))
        for at, kind, data in plan:
            event = store.append(conn, iid, kind, actor="bench", data=data, at=at)
            if "notice" in data:
                seqs.append(event.seq)
    timings["events"] = time.perf_counter() - started

    started = time.perf_counter()
    batch: list[dict[str, Any]] = []
    written = 0
    with store.write() as conn:
        for seq, at in zip(seqs, notice_times, strict=True):
            for channel in CHANNELS:
                rate = 200.0 if channel == "email" else 60.0  # messages per second
                for i in range(customers):
                    ref = f"C{i:08d}"
                    address = (f"customer{i}@example.com" if channel == "email"
                               else f"+86138{i:08d}")
                    roll = rng.random()
                    # Position in the queue over the rate, with jitter and a long tail of
                    # slow acceptances (retries).
                    delay = i / rate + rng.expovariate(1 / 0.5)
                    if roll < 0.01:
                        delay += rng.expovariate(1 / 120)
                    row: dict[str, Any] = {
                        "incident_id": iid, "notice_seq": seq, "channel": channel,
                        "recipient_ref": ref, "recipient_name": "客户", "address": address,
                        "language": "zh-CN" if i % 3 else "en",
                        "priority": 0 if i % 20 == 0 else 1, "attempts": 1,
                        "message_id": f"<{iid}.{seq}.{i}.{channel}@bench>",
                        "idempotency_key": f"{seq}:{channel}:{i}",
                        "created_at": at.replace(tzinfo=None),
                        "next_attempt_at": at.replace(tzinfo=None), "sent_at": None,
                        "error_code": None, "last_error": None}
                    if roll > 0.998:
                        row["state"] = "pending"
                    elif roll > 0.983:
                        causes = FAILURES[channel]
                        code, text = causes[(i + seq) % len(causes)]
                        row.update(state="failed", error_code=code,
                                   last_error=text.format(address=address), attempts=1)
                    else:
                        row.update(state="sent",
                                   sent_at=(at + timedelta(seconds=delay)).replace(tzinfo=None))
                    batch.append(row)
                    if len(batch) >= 10_000:
                        conn.execute(schema.outbox.insert(), batch)
                        written += len(batch)
                        batch = []
        if batch:
            conn.execute(schema.outbox.insert(), batch)
            written += len(batch)
    timings["outbox"] = time.perf_counter() - started
    timings["rows"] = written
    store.close()
    return iid, timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="outbox rows (default 1M)")
    parser.add_argument("--events", type=int, default=10_000, help="events (default 10,000)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    parser.add_argument("--json-out", metavar="FILE", type=Path, default=None,
                        help="also write the figures as JSON to FILE (bench/run_all.sh)")
    args = parser.parse_args()

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="incident-bench-report-") as tmp:
        ws = make_workspace(Path(tmp) / "ws")
        db_url = f"sqlite:///{ws.path / 'incident.db'}"
        say(f"building an incident with {args.rows:,} outbox rows and {args.events:,} events…")
        iid, built = build_incident(db_url, rows=args.rows, events=args.events)
        say(f"  events {built['events']:.1f} s, outbox {built['outbox']:.1f} s")
        results = []
        for fmt in ("json", "html", "md"):
            out = Path(tmp) / f"report.{fmt}"
            result = run([*incident_cmd(frozen_at="2026-11-25T01:00:00Z"), "--config",
                          str(ws.config), "report", iid, "--format", fmt, "--lang", "en",
                          "-o", str(out)], env=clean_env())
            result.check(f"incident report --format {fmt}")
            results.append({"format": fmt, "seconds": round(result.wall, 2),
                            "peak_rss_mb": round(result.max_rss_mb, 1),
                            "bytes": out.stat().st_size})
            say(f"  report {fmt}: {result.wall:.2f} s, peak RSS {result.max_rss_mb:.0f} MB")
        report = json.loads((Path(tmp) / "report.json").read_text("utf-8"))
    figures = report["principles"]["transparency"]["figures"]
    checked = {"notices": figures["customer_notices"], "events": report["incident"]["events"],
               "messages": sum(n["messages"] for n in figures["notices"]),
               "reach": report["principles"]["fast_response"]["figures"]["reach"],
               "failures": figures["failures"], "verdicts": report["verdicts"]}
    passed = all(r["seconds"] < TARGET_SECONDS for r in results)
    data = {"machine": info, "rows": built["rows"], "events": args.events,
            "build_seconds": {"events": round(built["events"], 1),
                              "outbox": round(built["outbox"], 1)},
            "reports": results, "report_saw": checked, "target_seconds": TARGET_SECONDS,
            "pass": passed}
    if args.json_out:
        args.json_out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0 if passed else 1
    print("incident report on a big incident")
    print("\n".join(machine_lines(info)))
    print(f"incident: {built['rows']:,} outbox rows, {args.events:,} events "
          f"(the report saw {checked['messages']:,} messages in {checked['notices']} notices, "
          f"{checked['events']:,} events)")
    for name, r in checked["reach"].items():
        print(f"  first notice, {name}: {r['reached']:,}/{r['audience']:,} reached; 50% "
              f"after {r['p50_s']} s, 95% after {r['p95_s']} s, 100% after {r['p100_s']} s")
    print("  permanent failures: " + ", ".join(f"{f['channel']} {f['code']} × {f['count']:,}"
                                               for f in checked["failures"]))
    print("  verdicts: " + ", ".join(f"{k} {v}" for k, v in checked["verdicts"].items()))
    print(f"{'format':<8}{'seconds':>10}{'peak RSS MB':>14}{'output KB':>12}")
    for r in results:
        print(f"{r['format']:<8}{r['seconds']:>10.2f}{r['peak_rss_mb']:>14.0f}"
              f"{r['bytes'] / 1024:>12.0f}")
    verdict = "PASS" if passed else "MISS"
    print(f"[{verdict}] every format under {TARGET_SECONDS:.0f} s (well under a minute): "
          f"slowest {max(r['seconds'] for r in results):.2f} s")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
