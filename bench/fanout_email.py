"""Fan-out of one notice by email: this project against the baselines, in one run.

    python bench/fanout_email.py [--n 20000] [--slow-n 400] [--concurrency 8]
                                 [--regime fast|slow|both] [--big] [--baseline-seconds S]
                                 [--profile FILE] [--json] [--json-out FILE] [--keep]

For each regime a Postfix `smtp-sink` runs on 127.0.0.1 (started and stopped by this script):

- fast: plain `smtp-sink` (answers at once) -- the senders are CPU-bound;
- slow: `smtp-sink -w 1` (one second before answering DATA) -- a slow relay, latency-bound.
  At C connections nothing can beat C messages/second there, so the slow regime sends
  `--slow-n` messages (default 50 x C, i.e. ~50 s per row) instead of N.

and the same messages go through:

1. incident:   a real workspace (`incident init`), email over SMTP to the sink with C
               connections; `incident start ... --queue-only` records the notice and N outbox
               rows (timed separately), then `incident deliver ID` in a fresh process sends
               them. Rate = N / wall time of that process (start-up included); the rate the
               dispatcher reports for itself (start-up excluded) is shown too, with peak RSS.
   fast regime also: `incident start` recording and sending in one fresh process (issue 17:
               the whole command line), N / its wall time.
2. smtplib:    a plain loop, one `smtplib.SMTP` connection, an `EmailMessage` built per
               recipient (multipart text + HTML, Chinese subject, same size) + `send_message`;
               fast regime also: the same connection sending the project's own bytes
               (`sendmail`, To and Message-ID prepended) -- issue 17's bare loop.
3. aiosmtplib: C `aiosmtplib.SMTP` connections, pre-built message bytes, `sendmail()`,
               no bookkeeping at all. In the fast regime also the same loop making the
               calls `incident` makes (MAIL with SIZE, RCPT, DATA): not a target, shown so
               that the bookkeeping can be told apart from the leaner use of aiosmtplib.
4. smtp-source: Postfix's C load generator, C sessions kept open (-d), sending the project's
               own message files (-F): one process per language at once, sessions split.

Issue 6 targets are printed with PASS/MISS next to the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import json
import os
import pstats
import re
import smtplib
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # bench/ is not a package: imported via sys.path
    LANGS,
    PLAYBOOK,
    TITLE,
    CpuMeter,
    Workspace,
    clean_env,
    customer,
    discard,
    emit,
    find_smtp_source,
    log,
    machine_info,
    machine_lines,
    make_workspace,
    run,
    servers,
    table,
    write_audience,
)

BIG_N = 1_000_000
SLOW_DELAY = 1  # smtp-sink -w: seconds before answering DATA
SLOW_SMTPLIB_CAP = 20.0  # s; one connection at 1 s a message: a sample is enough
BIG_BASELINE_CAP = 120.0  # s; the baselines' rate over 2 minutes is their steady rate
DELIVER_SUMMARY = re.compile(r"Sent (\d+), failed (\d+), still pending (\d+) \(([\d.]+)s\)")
MEMORY_LIMIT_MB = 200.0


# --- the message every row sends ---------------------------------------------------------------


@dataclass
class Sample:
    """The project's own rendered notice for one language, as the `file` transport wrote it."""

    lang: str
    raw: bytes  # CRLF line endings, as on the wire
    subject: str
    sender: str  # From header
    envelope_from: str
    name: str  # the sample customer's name (replaced per recipient by the smtplib loop)
    text: str
    html: str
    headless: bytes = b""  # raw without To / Message-ID, for the pre-built aiosmtplib bytes


def project_samples(base: Path) -> dict[str, Sample]:
    """Send the notice to one zh-CN and one en customer with the `file` transport; read the .eml
    files back. Every baseline sends these (same size, same MIME structure)."""
    ws = make_workspace(base / "sample-ws")
    audience = write_audience(ws.path / "audience.csv", 2)
    ws.incident("start", PLAYBOOK, "--title", TITLE, "--audience", str(audience)).check(
        "incident start (file transport, sample messages)")
    by_address = {customer(i)[2]: customer(i) for i in range(2)}
    found: dict[str, Sample] = {}
    for path in sorted((ws.path / "outbox").rglob("*.eml")):
        raw = re.sub(rb"\r?\n", b"\r\n", path.read_bytes())
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        _, address = parseaddr(str(msg["To"]))
        if address not in by_address:  # internal notices to the playbook's parties
            continue
        _, name, _, lang = by_address[address]
        plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
        assert isinstance(plain, EmailMessage) and isinstance(html, EmailMessage)
        del msg["To"]
        del msg["Message-ID"]
        found[lang] = Sample(lang=lang, raw=raw, subject=str(msg["Subject"]),
                             sender=str(msg["From"]), envelope_from=parseaddr(msg["From"])[1],
                             name=name, text=plain.get_content(), html=html.get_content(),
                             headless=msg.as_bytes(policy=email.policy.SMTP))
    missing = set(LANGS) - set(found)
    if missing:
        raise RuntimeError(f"no sample .eml for {missing} under {ws.path / 'outbox'}")
    return {lang: found[lang] for lang in LANGS}


# --- results -----------------------------------------------------------------------------------


@dataclass
class Row:
    """One sender's figures in one regime."""

    key: str
    label: str
    messages: int
    seconds: float
    planned: int
    capped: bool = False  # stopped by a time budget before `planned` messages
    server_saw: int | None = None  # messages smtp-sink counted during this row
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0


class SinkCounter:
    """Reads smtp-sink's -c counters (`... mesg=N\\r`) from its log, to check each row."""

    PATTERN = re.compile(rb"mesg=(\d+)")

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path

    def value(self) -> int | None:
        """Messages the sink has received so far (None if it has not said)."""
        time.sleep(0.2)  # let it write the last counter line
        try:
            found = self.PATTERN.findall(self.log_path.read_bytes())
        except OSError:
            return None
        return int(found[-1]) if found else 0


# --- 1. this project ---------------------------------------------------------------------------


def run_project(base: Path, port: int, n: int, c: int, *, profile_to: Path | None,
                batch: int | None = None) -> tuple[Row, dict[str, Any], Workspace | None]:
    """incident start --queue-only (timed), then incident deliver ID in a fresh process."""
    log(f"  incident: workspace, {n}-customer CSV"
        + (f", delivery.batch {batch}" if batch else ""))
    ws = make_workspace(base / "ws", smtp_port=port, connections=c, batch=batch)
    audience = write_audience(ws.path / "audience.csv", n)
    log(f"  incident start {PLAYBOOK} --queue-only ({n} rows)")
    started = ws.incident("--json", "start", PLAYBOOK, "--title", TITLE, "--audience",
                          str(audience), "--queue-only").check("incident start --queue-only")
    data = json.loads(started.stdout)
    incident_id, recorded = data["id"], data["notice"]["messages"]
    if recorded != n:
        raise RuntimeError(f"incident start recorded {recorded} messages, expected {n}")
    record = {"rows": recorded, "seconds": started.wall, "peak_rss_mb": started.max_rss_mb}
    replay = ws.copy(base / "ws-profile") if profile_to else None
    log(f"  incident deliver {incident_id}")
    done = ws.incident("deliver", incident_id, timeout=max(3600.0, n / 20))
    done.check("incident deliver")
    summary = DELIVER_SUMMARY.search(done.stdout)
    status = json.loads(ws.incident("--json", "status", incident_id)
                        .check("incident status").stdout)
    sent = int(status["deliveries"]["sent"])
    if sent != n or status["deliveries"]["failed"]:
        raise RuntimeError(f"incident deliver left {status['deliveries']} (expected {n} sent)")
    extra: dict[str, Any] = {"peak_rss_mb": done.max_rss_mb, "incident_id": incident_id,
                             "cpu_seconds": done.cpu_seconds}
    if summary:
        elapsed = float(summary.group(4))
        extra["dispatch_seconds"] = elapsed
        extra["dispatch_rate"] = n / elapsed if elapsed > 0 else None
    row = Row("incident", f"incident deliver, {c} conn (process wall)", sent, done.wall, n,
              extra=extra)
    return row, record, replay


def run_project_start(base: Path, port: int, n: int, c: int) -> Row:
    """The whole command line (issue 17): `incident start` recording the notice and sending it
    to the sink in one fresh process, as an operator runs it. Rate = N / its wall time."""
    log(f"  incident start {PLAYBOOK} (record + send, {n} rows)")
    ws = make_workspace(base / "ws-start", smtp_port=port, connections=c)
    audience = write_audience(ws.path / "audience.csv", n)
    done = ws.incident("--json", "start", PLAYBOOK, "--title", TITLE, "--audience",
                       str(audience), timeout=max(3600.0, n / 20)).check("incident start")
    data = json.loads(done.stdout)
    sent = int(data["deliveries"]["sent"])
    if sent != n or data["deliveries"]["failed"]:
        raise RuntimeError(f"incident start left {data['deliveries']} (expected {n} sent)")
    return Row("incident_start", f"incident start (record + send), {c} conn", sent, done.wall,
               n, extra={"peak_rss_mb": done.max_rss_mb, "cpu_seconds": done.cpu_seconds})


def profile_project(replay: Workspace, incident_id: str, out: Path, top: int = 15) -> dict:
    """`python -m cProfile -o OUT -m incident deliver ID` on a copy of the queued workspace."""
    log(f"  profiling incident deliver under cProfile -> {out}")
    cmd = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "incident",
           "--config", str(replay.config), "deliver", incident_id]
    result = run(cmd, cwd=replay.path, env=clean_env()).check("profiled incident deliver")
    stats = pstats.Stats(str(out))
    table_: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]  # (not in typeshed)
    entries = []
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in table_.items():
        where = _short_path(file)
        if any(where.startswith(p) for p in _PLUMBING) or func in _PLUMBING_FUNCS:
            continue
        entries.append({"function": f"{where}:{line}({func})", "calls": ncalls,
                        "tottime": tottime, "cumtime": cumtime})
    total = max((e["cumtime"] for e in entries if e["function"].endswith("(deliver)")),
                default=getattr(stats, "total_tt", 0.0)) or 1.0
    for e in entries:
        e["cum_percent"] = 100 * e["cumtime"] / total
    by_cum = sorted(entries, key=lambda e: e["cumtime"], reverse=True)[:top]
    by_own = sorted(entries, key=lambda e: e["tottime"], reverse=True)[:top]
    return {"path": str(out), "seconds_under_profiler": result.wall, "deliver_seconds": total,
            "top_cumulative": by_cum, "top_own": by_own}


# Frames that only wrap everything else (interpreter start-up, click, the event loop).
_PLUMBING = ("<frozen", "<string>", "runpy", "click/", "asyncio/", "selectors.py",
             "incident/__main__.py", "incident/cli/__init__.py", "incident/cli/lifecycle.py")
_PLUMBING_FUNCS = {"<built-in method builtins.exec>", "<module>",
                   "<method 'run' of '_contextvars.Context' objects>"}


def _short_path(file: str) -> str:
    for marker in ("site-packages/", f"{Path(__file__).resolve().parent.parent}/"):
        if marker in file:
            return file.split(marker, 1)[1]
    if "/lib/python" in file:
        return file.split("/lib/python", 1)[1].split("/", 1)[-1]
    return file


def profile_lines(entries: list[dict[str, Any]]) -> list[str]:
    """A profile top list as a table."""
    return table(["function", "calls", "own s", "cumulative s", "% of deliver"],
                 [[e["function"], f"{e['calls']:,}", f"{e['tottime']:.3f}",
                   f"{e['cumtime']:.3f}", f"{e['cum_percent']:.0f}%"] for e in entries])


# --- 2. plain smtplib, one connection ----------------------------------------------------------


def build_message(i: int, samples: dict[str, Sample]) -> tuple[EmailMessage, str, str]:
    """What a plain script does per recipient: a fresh EmailMessage (text + HTML)."""
    _, name, address, lang = customer(i)
    s = samples[lang]
    msg = EmailMessage()
    msg["Subject"] = s.subject
    msg["From"] = s.sender
    local, _, domain = address.rpartition("@")
    msg["To"] = Address(display_name=name, username=local, domain=domain)
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<bench-{i}@example.com>"
    msg.set_content(s.text.replace(s.name, name))
    msg.add_alternative(s.html.replace(s.name, name), subtype="html")
    return msg, s.envelope_from, address


def run_smtplib(port: int, n: int, samples: dict[str, Sample], cap: float | None) -> Row:
    """smtplib.SMTP, one connection, send_message in a loop."""
    log(f"  smtplib loop, 1 connection ({n} messages"
        + (f", at most {cap:.0f} s)" if cap else ")"))
    sent = 0
    cpu = _cpu_self()
    started = time.perf_counter()
    deadline = started + cap if cap else None
    with smtplib.SMTP("127.0.0.1", port, local_hostname="localhost", timeout=60) as conn:
        for i in range(n):
            if deadline and time.perf_counter() > deadline:
                break
            msg, sender, address = build_message(i, samples)
            conn.send_message(msg, from_addr=sender, to_addrs=[address])
            sent += 1
    seconds = time.perf_counter() - started
    return Row("smtplib", "smtplib loop, 1 conn", sent, seconds, n, capped=sent < n,
               extra={"cpu_seconds": _cpu_self() - cpu})


def run_smtplib_bytes(port: int, n: int, samples: dict[str, Sample], cap: float | None) -> Row:
    """smtplib.SMTP, one connection, `sendmail` of the project's own message bytes (To and
    Message-ID prepended per recipient): the bare loop issue 17 compares the whole CLI with."""
    log(f"  smtplib loop, same bytes, 1 connection ({n} messages"
        + (f", at most {cap:.0f} s)" if cap else ")"))
    bodies = {lang: s.headless for lang, s in samples.items()}
    senders = {lang: s.envelope_from for lang, s in samples.items()}
    sent = 0
    cpu = _cpu_self()
    started = time.perf_counter()
    deadline = started + cap if cap else None
    with smtplib.SMTP("127.0.0.1", port, local_hostname="localhost", timeout=60) as conn:
        for i in range(n):
            if deadline and time.perf_counter() > deadline:
                break
            _, _, address, lang = customer(i)
            head = f"To: <{address}>\r\nMessage-ID: <bench-{i}@example.com>\r\n".encode()
            conn.sendmail(senders[lang], [address], head + bodies[lang])
            sent += 1
    seconds = time.perf_counter() - started
    return Row("smtplib_bytes", "smtplib loop, same bytes, 1 conn", sent, seconds, n,
               capped=sent < n, extra={"cpu_seconds": _cpu_self() - cpu})


# --- 3. bare aiosmtplib, C connections ---------------------------------------------------------


def run_aiosmtplib(port: int, n: int, c: int, samples: dict[str, Sample],
                   cap: float | None, *, lean: bool = False) -> Row:
    """C aiosmtplib connections sending pre-built bytes; no outbox, no per-message work.

    `lean`: the same, through the calls `incident` makes (MAIL with SIZE = len(bytes), RCPT,
    DATA) instead of sendmail(), which normalises each message once more to count its size and
    parses each address twice: shown so that the project's bookkeeping can be told apart from
    its leaner use of aiosmtplib.
    """
    how = "MAIL/RCPT/DATA" if lean else "sendmail()"
    log(f"  bare aiosmtplib, {c} connections, {how} ({n} messages"
        + (f", at most {cap:.0f} s)" if cap else ")"))
    cpu = _cpu_self()
    sent, seconds = asyncio.run(_aiosmtplib(port, n, c, samples, cap, lean=lean))
    if lean:
        key, label = "aiosmtplib_lean", f"bare aiosmtplib, {c} conn, MAIL/RCPT/DATA"
    else:
        key, label = "aiosmtplib", f"bare aiosmtplib, {c} conn"
    return Row(key, label, sent, seconds, n, capped=sent < n,
               extra={"cpu_seconds": _cpu_self() - cpu})


async def _aiosmtplib(port: int, n: int, c: int, samples: dict[str, Sample],
                      cap: float | None, *, lean: bool = False) -> tuple[int, float]:
    import aiosmtplib

    bodies = {lang: s.headless for lang, s in samples.items()}
    senders = {lang: s.envelope_from for lang, s in samples.items()}
    numbers = iter(range(n))  # shared by the workers: each takes the next message
    sent = 0
    started = time.perf_counter()
    deadline = started + cap if cap else None
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="localhost",
                               timeout=60) for _ in range(c)]
    await asyncio.gather(*(client.connect() for client in clients))

    async def worker(client: aiosmtplib.SMTP) -> None:
        nonlocal sent
        size = client.supports_extension("size")
        for i in numbers:
            if deadline and time.perf_counter() > deadline:
                break
            _, _, address, lang = customer(i)
            head = f"To: <{address}>\r\nMessage-ID: <bench-{i}@example.com>\r\n".encode()
            data = head + bodies[lang]
            if lean:
                await client.mail(senders[lang], options=[f"SIZE={len(data)}"] if size else None)
                await client.rcpt(address)
                await client.data(data)
            else:
                await client.sendmail(senders[lang], [address], data)
            sent += 1

    try:
        await asyncio.gather(*(worker(client) for client in clients))
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.quit()
    return sent, time.perf_counter() - started


# --- 4. smtp-source ----------------------------------------------------------------------------


def run_smtp_source(base: Path, port: int, n: int, c: int, samples: dict[str, Sample]) -> Row:
    """smtp-source -d -F <the project's message>: one process per language at the same time,
    the C sessions split between them (C=1: one after the other), half the messages each."""
    binary = find_smtp_source()
    log(f"  smtp-source, {c} sessions ({n} messages)")
    jobs = []
    for index, lang in enumerate(LANGS):
        count = len(range(index, n, len(LANGS)))  # as customer(i) alternates languages
        sessions = max(1, len(range(index, c, len(LANGS))))
        if not count:
            continue
        message = base / f"message-{lang}.eml"
        message.write_bytes(samples[lang].raw.replace(b"\r\n", b"\n"))  # it appends CRLF
        jobs.append([str(binary), "-s", str(sessions), "-m", str(count), "-d", "-N",
                     "-M", "localhost", "-F", str(message), "-f", samples[lang].envelope_from,
                     "-t", "customer@example.com", f"127.0.0.1:{port}"])
    cpu = _cpu_children()
    started = time.perf_counter()
    if c == 1:
        for cmd in jobs:
            subprocess.run(cmd, check=True, capture_output=True, timeout=max(600, n))
    else:
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                 for cmd in jobs]
        for proc, cmd in zip(procs, jobs, strict=True):
            out, _ = proc.communicate(timeout=max(600, n))
            if proc.returncode:
                raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {out!r}")
    seconds = time.perf_counter() - started
    return Row("smtp_source", f"smtp-source, {c} sessions", n, seconds, n,
               extra={"cpu_seconds": _cpu_children() - cpu})


def _cpu_self() -> float:
    t = os.times()
    return t.user + t.system


def _cpu_children() -> float:
    t = os.times()
    return t.children_user + t.children_system


# --- a regime ----------------------------------------------------------------------------------


@dataclass
class Regime:
    """One server set-up and what to send to it."""

    name: str
    sink_args: list[str]
    n: int
    concurrency: int
    description: str
    smtplib_cap: float | None
    aiosmtplib_cap: float | None
    memory_target: bool = False  # --big: peak RSS < 200 MB
    batch: int | None = None  # --batch: the workspace's delivery.batch (None: incident's default)


def run_regime(regime: Regime, base: Path, *, profile_to: Path | None) -> dict[str, Any]:
    """Start the sink, measure the four rows, stop the sink (always)."""
    base.mkdir(parents=True, exist_ok=True)
    log(f"[{regime.name}] smtp-sink {' '.join(regime.sink_args)} — {regime.description}; "
        f"N={regime.n}, C={regime.concurrency}")
    samples = project_samples(base)
    sink = servers.start_smtp_sink(base / "sink", "-c", *regime.sink_args)
    counter = SinkCounter(sink.log_path)
    rows: list[Row] = []
    result: dict[str, Any] = {}
    try:
        n, c = regime.n, regime.concurrency

        def measured(fn: Any, *args: Any, **kwargs: Any) -> Any:
            before = counter.value()
            with CpuMeter(watch=[sink.process.pid]) as meter:
                out = fn(*args, **kwargs)
            row = out[0] if isinstance(out, tuple) else out
            row.extra["machine_cpu"] = meter.as_dict()  # sink = watched_cpu
            after = counter.value()
            if before is not None and after is not None:
                row.server_saw = after - before
            rows.append(row)
            return out

        _, record, replay = measured(run_project, base, sink.port, n, c, profile_to=profile_to,
                                     batch=regime.batch)
        if regime.name == "fast":  # issue 17: the whole command line vs the same bytes
            measured(run_project_start, base, sink.port, n, c)
            measured(run_smtplib_bytes, sink.port, n, samples, regime.smtplib_cap)
        measured(run_smtplib, sink.port, n, samples, regime.smtplib_cap)
        measured(run_aiosmtplib, sink.port, n, c, samples, regime.aiosmtplib_cap)
        if regime.name == "fast":  # where the cost of each call shows
            measured(run_aiosmtplib, sink.port, n, c, samples, regime.aiosmtplib_cap, lean=True)
        measured(run_smtp_source, base, sink.port, n, c, samples)
        if replay is not None and profile_to is not None:
            result["profile"] = profile_project(replay, rows[0].extra["incident_id"],
                                                profile_to)
    finally:
        sink.stop()
    by_key = {row.key: row for row in rows}
    result.update({
        "server": f"smtp-sink {' '.join(regime.sink_args)}".strip(),
        "description": regime.description, "n": regime.n, "concurrency": regime.concurrency,
        "batch": regime.batch,
        "message_bytes": {lang: len(s.raw) for lang, s in samples.items()},
        "record": record,
        "rows": {row.key: {**asdict(row), "rate": row.rate} for row in rows},
        "ratios": _ratios(by_key),
    })
    result["targets"] = _targets(regime.name, result, big=regime.memory_target)
    return result


def _ratios(rows: dict[str, Row]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    project = rows["incident"]
    dispatch_rate = project.extra.get("dispatch_rate")
    for base in ("smtplib", "aiosmtplib", "aiosmtplib_lean", "smtp_source", "smtplib_bytes"):
        if base not in rows:
            continue
        rate = rows[base].rate
        out[f"incident/{base}"] = project.rate / rate if rate else None
        out[f"incident_dispatch/{base}"] = dispatch_rate / rate if rate and dispatch_rate else None
    if "incident_start" in rows and "smtplib_bytes" in rows and rows["smtplib_bytes"].rate:
        out["incident_start/smtplib_bytes"] = (rows["incident_start"].rate
                                               / rows["smtplib_bytes"].rate)
    return out


def _targets(regime: str, result: dict[str, Any], *, big: bool) -> list[dict[str, Any]]:
    ratios = result["ratios"]
    targets: list[dict[str, Any]] = []

    def target(name: str, value: float | None, goal: float, *, below: bool = False) -> None:
        ok = value is not None and (value < goal if below else value >= goal)
        unit = " MB" if below else "×"
        shown = "-" if value is None else (f"{value:.0f} MB" if below else f"{value:.2f}×")
        targets.append({"name": name, "value": value, "shown": shown,
                        "goal": f"< {goal:.0f}{unit}" if below else f"≥ {goal:.2f}{unit}",
                        "goal_value": goal, "comparison": "<" if below else ">=", "pass": ok})

    if regime == "fast":
        target("CPU-bound: incident ≥ 3× plain smtplib loop", ratios["incident/smtplib"], 3.0)
        target("CPU-bound: incident ≥ 80% of bare aiosmtplib", ratios["incident/aiosmtplib"],
               0.8)
        if "incident_start/smtplib_bytes" in ratios:
            target("issue 17: incident start (record + send) ≥ smtplib loop, same bytes",
                   ratios["incident_start/smtplib_bytes"], 1.0)
    else:
        target("latency-bound: incident ≥ 90% of smtp-source", ratios["incident/smtp_source"],
               0.9)
    if big:
        rows = result["rows"]
        target(f"peak RSS of incident deliver < 200 MB at {result['n']:,}",
               rows["incident"]["extra"]["peak_rss_mb"], MEMORY_LIMIT_MB, below=True)
        target(f"peak RSS of incident start < 200 MB at {result['n']:,} (not a stated target)",
               result["record"]["peak_rss_mb"], MEMORY_LIMIT_MB, below=True)
    return targets


# --- report ------------------------------------------------------------------------------------


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


def _row_adder(body: list[list[str]], base: dict[str, float]) -> Any:
    def ratio(rate: float, key: str) -> str:
        return _fmt_ratio(rate / base[key] if base[key] else None)

    def add(label: str, messages: int, seconds: float, note: str, *, cpu: float | None = None,
            saw: int | None = None) -> None:
        rate = messages / seconds if seconds > 0 else 0.0
        body.append([label, f"{messages:,}", f"{seconds:.2f}", f"{rate:,.0f}",
                     ratio(rate, "smtplib"), ratio(rate, "aiosmtplib"), ratio(rate, "smtp_source"),
                     "-" if cpu is None or not messages else f"{1000 * cpu / messages:.2f}",
                     "-" if saw is None else f"{saw:,}", note])

    return add


ROW_KEYS = ("incident", "incident_start", "smtplib_bytes", "smtplib", "aiosmtplib",
            "aiosmtplib_lean", "smtp_source")
BUSY_CORES = 0.15  # other processes using more than this many cores make wall times pessimistic


def render(report: dict[str, Any]) -> str:
    """The human-readable report."""
    lines = ["Email fan-out: incident vs smtplib, bare aiosmtplib and smtp-source",
             *machine_lines(report["machine"])]
    for name, r in report["regimes"].items():
        rows = r["rows"]
        base = {k: rows[k]["rate"] for k in ("smtplib", "aiosmtplib", "smtp_source")}
        sizes = ", ".join(f"{lang} {size:,} B" for lang, size in r["message_bytes"].items())
        lines += ["", f"== {name}: {r['server']} on 127.0.0.1 — {r['description']}",
                  f"N={r['n']:,}  C={r['concurrency']}  "
                  f"delivery.batch={r.get('batch') or 'default (64)'}  message size: {sizes}",
                  f"record {r['record']['rows']:,} rows (incident start --queue-only, "
                  f"process wall): {r['record']['seconds']:.2f} s, "
                  f"peak RSS {r['record']['peak_rss_mb']:.0f} MB",
                  ""]
        body: list[list[str]] = []
        add = _row_adder(body, base)
        project = rows["incident"]
        add(project["label"], project["messages"], project["seconds"],
            f"peak RSS {project['extra']['peak_rss_mb']:.0f} MB",
            cpu=project["extra"].get("cpu_seconds"), saw=project["server_saw"])
        if project["extra"].get("dispatch_seconds"):
            add("  same run, dispatcher only (start-up excluded)", project["messages"],
                project["extra"]["dispatch_seconds"], "from its own 'Sent ... (Xs)'")
        for key in ROW_KEYS[1:]:
            if key not in rows:
                continue
            row = rows[key]
            note = f"time-capped: {row['messages']:,} of {row['planned']:,}" if row["capped"] \
                else ""
            add(row["label"], row["messages"], row["seconds"], note,
                cpu=row["extra"].get("cpu_seconds"), saw=row["server_saw"])
        lines += table(["sender", "messages", "seconds", "msg/s", "vs smtplib", "vs aiosmtplib",
                        "vs smtp-source", "CPU ms/msg", "sink saw", ""], body, "lrrrrrrrrl")
        usage, busy = [], []
        for key in ROW_KEYS:
            if key not in rows:
                continue
            cpu = rows[key]["extra"].get("machine_cpu") or {}
            if cpu.get("others_cpu") is None:
                continue
            usage.append(f"{key} {cpu['watched_cpu']:.1f}/{cpu['others_cpu']:.1f}")
            if (cpu.get("others_cores") or 0) > BUSY_CORES:
                busy.append(f"{key} ({cpu['others_cores']:.2f} cores)")
        if usage:
            lines += ["", "CPU-seconds used by smtp-sink / by other processes during each row: "
                      + ", ".join(usage)]
        if busy:
            lines.append("WARNING: other processes were busy during " + ", ".join(busy)
                         + ": those wall-clock rates are pessimistic (CPU ms/msg is not)")
        lines += ["", "targets (issue 6; issue 17: the whole command line):"]
        for t in r["targets"]:
            lines.append(f"  [{'PASS' if t['pass'] else 'MISS'}] {t['name']}: {t['shown']}")
        lean = r["ratios"].get("incident/aiosmtplib_lean")
        if lean is not None:
            dispatch = r["ratios"].get("incident_dispatch/aiosmtplib_lean")
            lines.append("  (not a target: incident vs a bare loop making the same MAIL/RCPT/DATA "
                         f"calls: {lean:.2f}×"
                         + (f", dispatcher only {dispatch:.2f}×)" if dispatch else ")"))
        if "profile" in r:
            p = r["profile"]
            lines += ["", f"cProfile of incident deliver ({p['seconds_under_profiler']:.1f} s "
                          f"under the profiler, {p['deliver_seconds']:.1f} s in deliver), "
                          f"saved to {p['path']}", "top by cumulative time:",
                      *profile_lines(p["top_cumulative"]), "", "top by own time:",
                      *profile_lines(p["top_own"])]
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=None,
                   help="messages in the fast regime (default 20,000; 1,000,000 with --big)")
    p.add_argument("--slow-n", type=int, default=None,
                   help="messages in the slow regime (default 50 × concurrency: ~50 s a row)")
    p.add_argument("--concurrency", "-c", type=int, default=8,
                   help="SMTP connections of incident, aiosmtplib and smtp-source (default 8)")
    p.add_argument("--regime", choices=["fast", "slow", "both"], default="both")
    p.add_argument("--big", action="store_true",
                   help=f"fast regime with {BIG_N:,} recipients and the memory target; the "
                        f"smtplib/aiosmtplib baselines stop after {BIG_BASELINE_CAP:.0f} s")
    p.add_argument("--baseline-seconds", type=float, default=None,
                   help="stop the smtplib and aiosmtplib baselines after this long and report "
                        "their rate so far (default: no cap; smtplib in the slow regime: "
                        f"{SLOW_SMTPLIB_CAP:.0f} s)")
    p.add_argument("--profile", metavar="FILE.prof", type=Path, default=None,
                   help="also run incident deliver under cProfile in the fast regime (on a "
                        "copy of the same queue) and print the top 15 functions")
    p.add_argument("--json", action="store_true",
                   help="print the figures as JSON on stdout instead of the report")
    p.add_argument("--json-out", metavar="FILE", type=Path, default=None,
                   help="also write the figures as JSON to FILE (for bench/RESULTS.md)")
    p.add_argument("--keep", action="store_true", help="keep the temporary workspaces")
    p.add_argument("--batch", type=int, default=None,
                   help="delivery.batch of the incident workspace: outbox rows claimed per "
                        "transaction (default: incident's own, 64)")
    args = p.parse_args(argv)
    if args.concurrency < 1 or args.concurrency > 64:
        p.error("--concurrency must be 1..64 (the email channel allows up to 64 connections)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the regimes; print the report (or JSON)."""
    args = parse_args(argv)
    c = args.concurrency
    fast_n = args.n or (BIG_N if args.big else 20_000)
    cap = args.baseline_seconds or (BIG_BASELINE_CAP if args.big else None)
    regimes = []
    if args.regime in ("fast", "both"):
        regimes.append(Regime("fast", [], fast_n, c, "fast local server, CPU-bound",
                              smtplib_cap=cap, aiosmtplib_cap=cap, memory_target=args.big,
                              batch=args.batch))
    if args.regime in ("slow", "both"):
        slow_cap = min(cap or SLOW_SMTPLIB_CAP, SLOW_SMTPLIB_CAP)
        regimes.append(Regime("slow", ["-w", str(SLOW_DELAY)], args.slow_n or 50 * c, c,
                              f"slow relay ({SLOW_DELAY} s before answering DATA), "
                              "latency-bound", smtplib_cap=slow_cap,
                              aiosmtplib_cap=args.baseline_seconds, batch=args.batch))
    report: dict[str, Any] = {"benchmark": "fanout_email", "machine": machine_info(),
                              "params": {"concurrency": c, "big": args.big,
                                         "batch": args.batch,
                                         "regimes": [r.name for r in regimes]},
                              "regimes": {}}
    tmp = Path(tempfile.mkdtemp(prefix="incident-bench-email-"))
    try:
        for regime in regimes:
            profile_to = args.profile.resolve() if args.profile and regime.name == "fast" \
                else None
            report["regimes"][regime.name] = run_regime(regime, tmp / regime.name,
                                                        profile_to=profile_to)
    finally:
        discard(tmp, args.keep)
    emit(report, args, render)
    return 0


if __name__ == "__main__":
    sys.exit(main())
