"""Delivery receipts: Twilio status callbacks per second into `incident receipts serve` (a real
process: signature validation, mapping, a durable write before the answer), with p50/p99
latency, next to a bare aiohttp handler that only answers 200 (the ceiling), measured in the
same run with the same client.

    python bench/receipts.py [--callbacks 20000] [--concurrency 32] [--pg | --pg-url URL]
                             [--json] [--json-out FILE] [--keep]

The database holds one incident with `--callbacks` SMS rows accepted by Twilio; each callback
is a valid, distinct `delivered` for one of them, signed as Twilio signs it (the SDK's
RequestValidator against receipts.public_url). Signatures are computed before the clock
starts. On SQLite always; on PostgreSQL with --pg-url, or --pg to start one as the tests do.
Targets (issue 14): SQLite >= 1,000 callbacks/s and p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO_ROOT,
    clean_env,
    discard,
    emit,
    incident_cmd,
    log,
    machine_info,
    machine_lines,
    make_workspace,
    servers,
    table,
)

sys.path.insert(0, str(REPO_ROOT))
import aiohttp
from twilio.request_validator import RequestValidator

TOKEN = "bench-auth-token-0123456789abcdef"
PUBLIC = "https://notify.example.com"
CALLBACK = PUBLIC + "/twilio/status"
GOAL_RATE, GOAL_P99_MS = 1000.0, 50.0
BARE = """
import sys
from aiohttp import web
async def ok(request):
    await request.post()
    return web.Response(text="")
app = web.Application()
app.router.add_post("/twilio/status", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=lambda *a: None,
            access_log=None)
"""


def seed(db_url: str, count: int) -> list[str]:
    """`count` SMS rows accepted as SIDs SM…; the SIDs (tests/test_receipts_store.sent_sms)."""
    from test_receipts_store import sent_sms

    sids = [f"SM{i:032x}" for i in range(count)]
    store, _ = sent_sms(db_url, sids)
    store.close()
    return sids


def bodies(sids: list[str]) -> list[tuple[bytes, str]]:
    """Each callback's form body and its X-Twilio-Signature, computed before timing."""
    validator = RequestValidator(TOKEN)
    out = []
    for sid in sids:
        form = {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC1",
                "MessageStatus": "delivered", "SmsStatus": "delivered", "To": "+8613800000000"}
        out.append((urlencode(form).encode(), validator.compute_signature(CALLBACK, form)))
    return out


async def fire(url: str, calls: list[tuple[bytes, str]], concurrency: int
               ) -> tuple[float, list[float], int]:
    """POST every call with `concurrency` in flight: seconds, latencies (s), non-2xx count."""
    latencies: list[float] = []
    failed = 0
    queue = iter(calls)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            nonlocal failed
            for body, signature in queue:
                started = time.perf_counter()
                async with session.post(url, data=body, headers={
                        "X-Twilio-Signature": signature,
                        "Content-Type": "application/x-www-form-urlencoded"}) as answer:
                    await answer.read()
                    failed += not 200 <= answer.status < 300
                latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies, failed


def serve_incident(ws: Any, db_url: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([*incident_cmd(), "--config", str(ws.config), "--db", db_url,
                             "receipts", "serve", "--port", "0"],
                            env=clean_env({"TWILIO_AUTH_TOKEN": TOKEN}), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    found = re.search(r"http://127\.0\.0\.1:\d+/twilio/status", proc.stdout.readline())
    if not found:
        proc.kill()
        raise SystemExit(f"receipts serve did not start: {proc.communicate()[1][-2000:]}")
    return proc, found.group(0)


def serve_bare() -> tuple[subprocess.Popen[str], str]:
    port = servers.free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE, str(port)], text=True)
    url = f"http://127.0.0.1:{port}/twilio/status"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the bare aiohttp server did not start")


def measure(what: str, proc: subprocess.Popen[str], url: str, calls: list[tuple[bytes, str]],
            concurrency: int) -> dict[str, Any]:
    try:
        seconds, latencies, failed = asyncio.run(fire(url, calls, concurrency))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    latencies.sort()
    row = {"what": what, "callbacks": len(calls), "seconds": seconds,
           "per_second": len(calls) / seconds, "failed": failed,
           "p50_ms": latencies[len(latencies) // 2] * 1000,
           "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000}
    log(f"{what}: {row['per_second']:,.0f}/s, p50 {row['p50_ms']:.1f} ms, "
        f"p99 {row['p99_ms']:.1f} ms, {failed} not 2xx")
    return row


def targets(sqlite: dict[str, Any]) -> list[dict[str, Any]]:
    ok = sqlite["failed"] == 0
    return [
        {"name": f"SQLite: >= {GOAL_RATE:,.0f} callbacks/s", "value": sqlite["per_second"],
         "goal_value": GOAL_RATE, "shown": f"{sqlite['per_second']:,.0f}/s",
         "goal": f"≥ {GOAL_RATE:,.0f}/s", "pass": ok and sqlite["per_second"] >= GOAL_RATE},
        {"name": f"SQLite: p99 < {GOAL_P99_MS:g} ms", "value": sqlite["p99_ms"],
         "goal_value": GOAL_P99_MS, "comparison": "<", "shown": f"{sqlite['p99_ms']:.1f} ms",
         "goal": f"< {GOAL_P99_MS:g} ms", "pass": ok and sqlite["p99_ms"] < GOAL_P99_MS}]


def render(report: dict[str, Any]) -> str:
    rows = [[r["what"], f"{r['per_second']:,.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
             r["failed"], f"{r['per_second'] / report['results'][0]['per_second']:.2f}×"]
            for r in report["results"]]
    lines = [f"Status callbacks: {report['callbacks']:,} signed callbacks, "
             f"{report['concurrency']} in flight",
             *machine_lines(report["machine"]), "",
             *table(["", "callbacks/s", "p50 ms", "p99 ms", "not 2xx", "vs bare"], rows), "",
             "targets (issue 14):"]
    lines += [f"  {'PASS' if t['pass'] else 'MISS'}  {t['name']}: {t['shown']}"
              for t in report["targets"]]
    if report.get("postgres_note"):
        lines.append(f"PostgreSQL: {report['postgres_note']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callbacks", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pg", action="store_true", help="start a PostgreSQL as the tests do")
    parser.add_argument("--pg-url", default=None, help="an empty PostgreSQL database to use")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    parser.add_argument("--json-out", metavar="FILE", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the workspace")
    args = parser.parse_args()
    info = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="incident-bench-receipts-"))
    pg = None
    try:
        ws = make_workspace(tmp / "ws")
        import yaml

        config = yaml.safe_load(ws.config.read_text(encoding="utf-8"))
        config["receipts"] = {"public_url": PUBLIC}
        ws.config.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        calls = bodies([f"SM{i:032x}" for i in range(args.callbacks)])
        results = [measure("bare aiohttp handler (ceiling)", *serve_bare(), calls,
                           args.concurrency)]
        sqlite_url = f"sqlite:///{tmp / 'receipts.db'}"
        seed(sqlite_url, args.callbacks)
        results.append(measure("incident receipts serve, SQLite",
                               *serve_incident(ws, sqlite_url), calls, args.concurrency))
        note = None
        pg_url = args.pg_url
        if args.pg and not pg_url:
            pg = servers.start_postgres(tmp / "pg")
            pg_url = pg.url
        if pg_url:
            seed(pg_url, args.callbacks)
            results.append(measure("incident receipts serve, PostgreSQL",
                                   *serve_incident(ws, pg_url), calls, args.concurrency))
        else:
            note = "not measured (give --pg-url URL, or --pg to start one as the tests do)"
        report = {"callbacks": args.callbacks, "concurrency": args.concurrency,
                  "machine": info, "results": results, "postgres_note": note,
                  "targets": targets(results[1])}
        emit(report, args, render)
    finally:
        if pg is not None:
            pg.stop()
        discard(tmp, args.keep)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
