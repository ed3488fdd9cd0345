"""Two sender processes (response/senders.py): `incident start` and `incident deliver` as real
processes sending email from a forked second process to a real (in-process) SMTP server that
counts Message-IDs. The outcome must be one process's (every message once), the relay must
never see more than the configured rate, and a stop or a dead second process must lose
nothing (`incident deliver` sends the rest)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from test_crash import (
    RUN_TIMEOUT,
    Workers,
    check_all_delivered,
    customers,
    customers_only,
    in_flight_ids,
    queue_notice,
    wait_for_receipts,
    workers,
)

from cli_fixtures import Workspace
from counting_smtp import CountingServer, counting_smtp

N = 1500


def senders(ws: Workspace, processes: int, *, rate: float | None = None,
            server: CountingServer | None = None) -> None:
    """`delivery.processes` of the workspace (and the email rate; with `server`, email over
    SMTP to it, 4 connections, customers' notices only)."""
    def edit(cfg: dict[str, Any]) -> None:
        cfg["delivery"] = {**(cfg.get("delivery") or {}), "processes": processes}
        email = cfg["channels"]["email"]
        if server is not None:
            email.update(transport="smtp", rate=5000, smtp={
                "host": "127.0.0.1", "port": server.port, "security": "none", "connections": 4})
        if rate is not None:
            email["rate"] = rate
    ws.configure(edit)
    if server is not None:
        customers_only(ws)


def children(proc: subprocess.Popen[bytes]) -> list[int]:
    """The processes `proc` has forked and not yet reaped (Linux)."""
    try:
        text = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()
    except OSError:
        return []
    return [int(pid) for pid in text.split()]


def second_sender(proc: subprocess.Popen[bytes], server: CountingServer) -> int:
    """Wait until the sender has forked its second process and the server receives; its pid."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while not (found := children(proc)) or server.total() < 50:
        assert proc.poll() is None, f"exited {proc.returncode} before a second process showed"
        assert time.monotonic() < deadline, "no second sender process"
        time.sleep(0.005)
    return found[0]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def run_start(ws: Workspace, group: Workers) -> tuple[subprocess.Popen[bytes], Path]:
    """`incident --json start` (record + send) as a process of its own."""
    out = ws.root.parent / f"start-{time.monotonic_ns()}.out"
    cmd = [sys.executable, "-m", "incident", "--config", str(ws.config), "--db", ws.db,
           "--json", "start", "core-banking-outage", "--title", "X"]
    with open(out, "wb") as stdout:
        proc = subprocess.Popen(cmd, env=group.env, cwd=ws.root, stdout=stdout,
                                stderr=subprocess.DEVNULL)
    group.procs.append(proc)
    return proc, out


def test_start_with_two_sender_processes_sends_what_one_sends_each_message_once(
        ws: Workspace) -> None:
    reports = {}
    for processes in (2, 1):
        with counting_smtp(delay=0.001) as server:
            senders(ws, processes, server=server)
            ws.write_customers(customers(N))
            with workers(ws, "") as group:
                proc, out = run_start(ws, group)
                if processes == 2:
                    second_sender(proc, server)
                assert proc.wait(timeout=RUN_TIMEOUT) == 0, out.read_text()
                if processes == 2:
                    assert not children(proc)
            report = json.loads(out.read_text())
            reports[processes] = report
            assert check_all_delivered(ws, server, report["id"], N) == 0
    assert reports[2]["deliveries"] == reports[1]["deliveries"] == {
        "pending": 0, "sending": 0, "sent": N, "failed": 0}


def test_deliver_with_two_processes_keeps_to_the_configured_rate(ws: Workspace) -> None:
    # 300 messages at 60/s, timed at the server from the first to the last: about 5 s however
    # the two processes share the rate; had each taken the whole rate, about 2.5 s.
    with counting_smtp() as server:
        incident_id = queue_notice(ws, server, 300)
        senders(ws, 2, rate=60)
        with workers(ws, incident_id) as group:
            proc = group.start()
            wait_for_receipts(server, 1, proc, group)
            first = time.monotonic()
            assert children(proc), "no second sender process"
            wait_for_receipts(server, 300, proc, group)
            took = time.monotonic() - first
            report = group.finish(proc)
        assert report["sent"] == 300 and report["pending"] == 0
        assert check_all_delivered(ws, server, incident_id, 300) == 0
        assert took >= 4.0, f"300 messages in {took:.2f}s: faster than 60/s"


def interrupted_rows(db_url: str, incident_id: str) -> int:
    """Rows whose last try was abandoned before its result was known."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(*) FROM outbox WHERE incident_id = :id "
                "AND error_code = 'interrupted'"), {"id": incident_id}).scalar_one())
    finally:
        engine.dispose()


@dataclass
class MidSend:
    """`incident deliver` of N queued messages by two processes, caught mid-send."""

    server: CountingServer
    incident_id: str
    group: Workers
    proc: subprocess.Popen[bytes]
    child: int  # the second process
    held: set[str]  # Message-IDs in flight then


@contextmanager
def mid_send(ws: Workspace) -> Iterator[MidSend]:
    with counting_smtp(delay=0.005) as server:
        incident_id = queue_notice(ws, server, N)
        senders(ws, 2)
        with workers(ws, incident_id) as group:
            proc = group.start()
            child = second_sender(proc, server)
            wait_for_receipts(server, 300, proc, group)
            yield MidSend(server, incident_id, group, proc, child,
                          in_flight_ids(ws.db, incident_id))


def test_sigterm_mid_send_stops_both_processes_and_deliver_sends_the_rest(
        ws: Workspace) -> None:
    with mid_send(ws) as run:
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=RUN_TIMEOUT) == -signal.SIGTERM
        deadline = time.monotonic() + RUN_TIMEOUT
        while alive(run.child):  # it finishes the sends in hand, gives back the rest, ends
            assert time.monotonic() < deadline, "the second process did not stop"
            time.sleep(0.01)
        assert run.server.total() < N
        # It recorded the outcome of every send it had begun: none left "interrupted" (as
        # when it failed to tell its dead parent its progress and abandoned them).
        assert interrupted_rows(ws.db, run.incident_id) == 0
        run.held |= in_flight_ids(ws.db, run.incident_id)  # the parent's, killed with them
        report = run.group.finish(run.group.start())
        assert report["interrupted"] is False and report["failed"] == 0
        duplicates = check_all_delivered(ws, run.server, run.incident_id, N)
        assert all(n == 1 for mid, n in run.server.counts().items() if mid not in run.held)
        assert duplicates <= len(run.held)


def test_a_killed_second_process_is_reported_and_deliver_sends_the_rest(
        ws: Workspace) -> None:
    with mid_send(ws) as run:
        os.kill(run.child, signal.SIGKILL)
        code = run.proc.wait(timeout=RUN_TIMEOUT)
        out, err = run.group.output(run.proc)
        # Its claims are given back, the run says so and ends as unfinished (exit 1).
        assert code == 1, f"exit {code}\n{out}\n{err}"
        assert f"second sender process (pid {run.child}) killed by signal 9" in err
        first = json.loads(out)
        assert first["pending"] > 0
        assert first["deliveries"]["sending"] == 0
        report = run.group.finish(run.group.start())
        assert report["sent"] == first["pending"]
        assert check_all_delivered(ws, run.server, run.incident_id, N) <= len(run.held)
