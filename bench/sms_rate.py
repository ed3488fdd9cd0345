"""SMS at a configured segments/second rate: this project against a plain Twilio SDK loop.

    python bench/sms_rate.py [--rate 20] [--seconds 30] [--latency 0.08 0.25]
                             [--json] [--json-out FILE] [--keep]

A Twilio-compatible API runs on 127.0.0.1 in this process (tests/fake_twilio.py: the real
`POST /2010-04-01/Accounts/{sid}/Messages.json` shape, every request recorded on arrival) and
answers each request after a random 80-250 ms, like the real API across the internet. Then:

1. incident:  a real workspace (`incident init`), SMS over the Twilio transport to that API at
              `--rate` segments/second; a phone-only audience sized so that the send lasts about
              `--seconds` at that rate (zh-CN and en alternate: their notices have different
              segment counts); `incident start ... --queue-only`, then `incident deliver ID`
              in a fresh process -- the path a supervisor's send takes.
2. SDK loop:  what a user would otherwise write: `twilio.rest.Client(...).messages.create()`
              in a plain loop over the same recipients and the same bodies, one after the other,
              no pacing, for at most `--seconds`.

For each: the achieved rate in segments/second over the whole run (from the first request's
arrival to the last's, as the API saw them), the most segments in any one-second sliding window,
and PASS/MISS against issue 6's targets: achieved within 5% of the configured rate, and no
window above it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # bench/ is not a package: imported via sys.path
    PLAYBOOK,
    TITLE,
    clean_env,
    discard,
    emit,
    log,
    machine_info,
    machine_lines,
    make_workspace,
    run,
    table,
)

import fake_twilio  # tests/fake_twilio.py: tests/ is on sys.path through _common

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "bench-token-not-secret"
FROM_NUMBER = "+15005550006"
TWILIO_API = "https://api.twilio.com"
TOLERANCE = 0.05  # achieved within 5% of the configured rate


# --- measuring a send from the API's side -------------------------------------------------------


@dataclass
class Measured:
    """One sender's send as the API received it."""

    key: str
    label: str
    messages: int
    segments: int
    seconds: float  # first arrival to last arrival
    achieved: float  # segments per second over the run
    max_window: int  # most segments in any one-second window
    wall: float  # the sender's own wall time (a process: start-up included)
    answered: dict[str, int] = field(default_factory=dict)  # HTTP status -> count
    extra: dict[str, Any] = field(default_factory=dict)


def measure(key: str, label: str, requests: list[fake_twilio.Recorded], wall: float,
            **extra: Any) -> Measured:
    """Rate and worst one-second window of the accepted requests."""
    from incident.rendering import sms_segments

    accepted = sorted((r for r in requests if r.status == 201), key=lambda r: r.at)
    arrivals = [(r.at, sms_segments(r.form["Body"]).segments) for r in accepted]
    answered: dict[str, int] = {}
    for r in requests:
        answered[str(r.status)] = answered.get(str(r.status), 0) + 1
    total = sum(units for _, units in arrivals)
    span = arrivals[-1][0] - arrivals[0][0] if len(arrivals) > 1 else 0.0
    # Between the first and the last arrival, all segments but the last message's went out.
    achieved = (total - arrivals[-1][1]) / span if span > 0 else 0.0
    return Measured(key, label, len(arrivals), total, span, achieved,
                    max_window(arrivals), wall, answered, dict(extra))


def max_window(arrivals: list[tuple[float, int]]) -> int:
    """The most units arriving within any one second [t, t + 1) (two pointers, sorted input)."""
    best = used = 0
    start = 0
    for at, units in arrivals:
        used += units
        while arrivals[start][0] <= at - 1.0:
            used -= arrivals[start][1]
            start += 1
        best = max(best, used)
    return best


# --- 1. this project --------------------------------------------------------------------------


def write_phone_audience(path: Path, n: int) -> Path:
    """n customers with a mobile number only (valid CN numbers), zh-CN and en alternating."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "name", "email", "phone", "language"])
        for i in range(n):
            lang = "zh-CN" if i % 2 == 0 else "en"
            name = "张伟" if lang == "zh-CN" else "Wei Zhang"
            w.writerow([f"C{i:08d}", name, "", f"+86138{i:08d}", lang])
    return path


def configure_sms(ws: Any, url: str, rate: float) -> None:
    """SMS over the Twilio transport to `url` at `rate` segments/second."""
    import yaml

    config = yaml.safe_load(ws.config.read_text(encoding="utf-8"))
    config["channels"]["sms"].update(transport="twilio", rate=rate, twilio={
        "from_number": FROM_NUMBER, "api_base_url": url})
    ws.config.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False),
                         encoding="utf-8")


def twilio_env() -> dict[str, str]:
    """The environment of the incident processes: credentials for the fake API."""
    return clean_env({"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN})


def incident(ws: Any, *args: str, timeout: float | None = None) -> Any:
    """`incident --config WS ARGS` as a fresh process, with the Twilio credentials."""
    from _common import incident_cmd

    return run([*incident_cmd(), "--config", str(ws.config), *args], cwd=ws.path,
               env=twilio_env(), timeout=timeout)


def run_project(base: Path, fake: fake_twilio.FakeTwilio, rate: float,
                seconds: float) -> tuple[Measured, dict[str, Any]]:
    """Size the audience from a dry run, record it, then time `incident deliver`."""
    ws = make_workspace(base / "ws")
    configure_sms(ws, fake.url, rate)
    sample = write_phone_audience(ws.path / "sample.csv", 2)
    plan = json.loads(incident(ws, "--json", "start", PLAYBOOK, "--title", TITLE,
                               "--audience", str(sample), "--dry-run")
                      .check("incident start --dry-run").stdout)
    per_lang = {lang: info["segments"] for lang, info in plan["sms"].items()}
    average = sum(per_lang.values()) / len(per_lang)
    n = max(2, round(rate * seconds / average))
    audience = write_phone_audience(ws.path / "audience.csv", n)
    log(f"  incident: {n} customers ({per_lang} segments per notice), rate {rate:g} seg/s")
    started = incident(ws, "--json", "start", PLAYBOOK, "--title", TITLE, "--audience",
                       str(audience), "--queue-only").check("incident start --queue-only")
    incident_id = json.loads(started.stdout)["id"]
    fake.clear()
    log(f"  incident deliver {incident_id} (about {seconds:.0f} s)")
    done = incident(ws, "--json", "deliver", incident_id, timeout=seconds * 5 + 120)
    done.check("incident deliver")
    report = json.loads(done.stdout)
    sms = report.get("deliveries_by_channel", {}).get("sms", {})
    if sms.get("sent") != n or report.get("failed"):
        raise RuntimeError(f"incident deliver sent {sms.get('sent')} SMS of {n}: {report}")
    requests = fake.recorded()
    bodies = {}
    for r in requests:
        if r.status == 201:
            lang = "zh-CN" if int(r.form["To"][-8:]) % 2 == 0 else "en"
            bodies.setdefault(lang, r.form["Body"])
    row = measure("incident", "incident deliver (Twilio transport, rate-limited)", requests,
                  done.wall, peak_rss_mb=done.max_rss_mb)
    info = {"customers": n, "segments_per_notice": per_lang, "bodies": bodies,
            "record_seconds": started.wall}
    return row, info


# --- 2. the plain SDK loop ----------------------------------------------------------------------


def run_sdk_loop(fake: fake_twilio.FakeTwilio, customers: int, bodies: dict[str, str],
                 seconds: float) -> Measured:
    """twilio.rest.Client().messages.create() in a loop, one at a time, no pacing."""
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    base = fake.url

    class BaseUrl(TwilioHttpClient):
        """The SDK's own HTTP client, pointed at the local API (as a gateway user would)."""

        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            return super().request(method, url.replace(TWILIO_API, base, 1), *args, **kwargs)

    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=BaseUrl(),
                    environment={"TWILIO_ACCOUNT_SID": ACCOUNT_SID})
    _ = client.messages  # import the API modules before the clock starts
    log(f"  twilio SDK loop, one request at a time (at most {customers} messages, "
        f"{seconds:.0f} s)")
    fake.clear()
    started = time.perf_counter()
    sent = 0
    for i in range(customers):
        if time.perf_counter() - started > seconds:
            break
        lang = "zh-CN" if i % 2 == 0 else "en"
        client.messages.create(to=f"+86138{i:08d}", from_=FROM_NUMBER, body=bodies[lang])
        sent += 1
    wall = time.perf_counter() - started
    return measure("sdk_loop", "twilio SDK loop, sequential, no pacing", fake.recorded(), wall,
                   capped=sent < customers)


# --- report ---------------------------------------------------------------------------------------


def targets(row: Measured, rate: float) -> list[dict[str, Any]]:
    """Issue 6's two checks for one sender."""
    ratio = row.achieved / rate if rate else 0.0
    return [
        {"name": f"{row.key}: achieved within {TOLERANCE:.0%} of {rate:g} seg/s",
         "value": ratio, "shown": f"{ratio:.3f}× ({row.achieved:.2f} seg/s)",
         "goal": f"{1 - TOLERANCE:.2f}× .. {1 + TOLERANCE:.2f}×",
         "pass": abs(ratio - 1) <= TOLERANCE},
        {"name": f"{row.key}: max one-second window <= {rate:g} segments",
         "value": row.max_window, "shown": f"{row.max_window} segments",
         "goal": f"≤ {rate:g}", "pass": row.max_window <= rate},
    ]


def render(report: dict[str, Any]) -> str:
    """The human-readable report."""
    p = report["params"]
    lines = ["SMS at a configured rate: incident vs a plain twilio SDK loop",
             *machine_lines(report["machine"]), "",
             f"fake Twilio API on 127.0.0.1, latency {p['latency'][0] * 1000:.0f}-"
             f"{p['latency'][1] * 1000:.0f} ms per request; configured rate {p['rate']:g} "
             f"segments/s; {report['customers']:,} customers (segments per notice: "
             + ", ".join(f"{k} {v}" for k, v in report["segments_per_notice"].items())
             + f"); record (incident start --queue-only): {report['record_seconds']:.2f} s", ""]
    rows = []
    for r in report["rows"]:
        rows.append([r["label"], f"{r['messages']:,}", f"{r['segments']:,}",
                     f"{r['seconds']:.1f}", f"{r['achieved']:.2f}",
                     f"{r['achieved'] / p['rate']:.3f}×", str(r["max_window"]),
                     f"{r['wall']:.1f}",
                     " ".join(f"{k}:{v}" for k, v in sorted(r["answered"].items()))
                     + ("  (stopped at --seconds)" if r["extra"].get("capped") else "")])
    lines += table(["sender", "messages", "segments", "seconds", "seg/s", "vs configured",
                    "max 1-s window", "wall s", "answers"], rows, "lrrrrrrrl")
    lines += ["", "seconds: first to last request as the API saw them; seg/s: segments sent "
                  "in that span; wall s: the sender's own run (incident: a fresh process, "
                  "start-up included)", "", "targets (issue 6):"]
    for t in report["targets"]:
        lines.append(f"  [{'PASS' if t['pass'] else 'MISS'}] {t['name']}: {t['shown']}")
    lines += ["", "the SDK loop, the same checks for comparison (a baseline, not a target):"]
    for t in report.get("baseline_checks", []):
        lines.append(f"  [{'yes' if t['pass'] else 'no '}] {t['name']}: {t['shown']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=20.0,
                   help="configured SMS rate, segments/second (default 20)")
    p.add_argument("--seconds", type=float, default=30.0,
                   help="about how long the send lasts at that rate (default 30)")
    p.add_argument("--latency", type=float, nargs=2, default=(0.08, 0.25),
                   metavar=("LOW", "HIGH"),
                   help="the API's answer time, uniform in [LOW, HIGH] s (default 0.08 0.25)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON only")
    p.add_argument("--json-out", metavar="FILE", type=Path, default=None,
                   help="also write the figures as JSON to FILE")
    p.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or not 0 <= args.latency[0] <= args.latency[1]:
        p.error("--rate and --seconds must be positive, --latency LOW <= HIGH")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run both senders against one fake API; print the report (or JSON)."""
    args = parse_args(argv)
    report: dict[str, Any] = {"benchmark": "sms_rate", "machine": machine_info(),
                              "params": {"rate": args.rate, "seconds": args.seconds,
                                         "latency": list(args.latency)}}
    tmp = Path(tempfile.mkdtemp(prefix="incident-bench-sms-"))
    try:
        with fake_twilio.serve_fake_twilio() as fake:
            fake.credentials = (ACCOUNT_SID, AUTH_TOKEN)
            fake.latency = (args.latency[0], args.latency[1])
            project, info = run_project(tmp, fake, args.rate, args.seconds)
            baseline = run_sdk_loop(fake, info["customers"], info["bodies"], args.seconds)
    finally:
        discard(tmp, args.keep)
    report.update(customers=info["customers"], segments_per_notice=info["segments_per_notice"],
                  record_seconds=info["record_seconds"],
                  rows=[asdict(project), asdict(baseline)],
                  targets=targets(project, args.rate),
                  baseline_checks=targets(baseline, args.rate))
    emit(report, args, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
