"""Prometheus metrics (README "Metrics"): a real `incident deliver` worker with --metrics-port,
sending to Postfix's smtp-sink and to Prism (Twilio's API), scraped over HTTP while it sends
and after, parsed with prometheus_client's own parser, its counts equal to the outbox's;
`receipts serve --metrics-port` counts its callbacks; a taken port is exit 1; the sample
Grafana dashboard asks only for metrics that exist."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_receipts_serve import TOKEN, Server, call, sms
from test_receipts_store import NOW, sent_sms

from cli_fixtures import Workspace
from incident.metrics.prometheus import MAX_INCIDENTS, PrometheusMetrics, QueueDepth
from incident.store import Store, deliveries
from servers import PrismServer, SmtpSink, free_port

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "examples" / "grafana-incident.json"
ENV = {"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "tok-metrics-never-print-me"}
CUSTOMERS = 40

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample at `url`, parsed as Prometheus parses it: (name, labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def until(check: Callable[[], Any], what: str, *, seconds: float = 90) -> Any:
    """Poll `check` until it returns something true (a generous deadline: a busy machine)."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def worker_ws(ws: Workspace, smtp_sink: Callable[..., SmtpSink], prism: PrismServer,
              monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """Customers with an email and a phone; email to smtp-sink at 10/s (the send lasts
    seconds: it can be scraped while under way), SMS to Prism; customers' notices only."""
    for name, val in ENV.items():
        monkeypatch.setenv(name, val)
    ws.use_smtp(smtp_sink().port, rate=10)
    ws.use_twilio(prism.url, rate=20)

    def customers_only(cfg: dict[str, Any]) -> None:
        cfg.pop("parties", None)
        cfg.pop("alerts", None)

    ws.configure(customers_only)
    ws.write_customers([f"c{n},Customer {n},c{n}@example.com,+8613800138{n:03d},en,retail,"
                        "guangdong,gd,savings,normal" for n in range(CUSTOMERS)])
    return ws


class Worker:
    """`incident deliver --metrics-port P` as a real process."""

    def __init__(self, ws: Workspace, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "incident", "--config", str(ws.config), "--db", ws.db,
             "deliver", *args, "--metrics-port", str(self.port)],
            env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)

    def scrape(self) -> Samples | None:
        """The samples, or None while the endpoint is not up yet."""
        assert self.process.poll() is None, self.process.communicate()
        try:
            return scrape(self.url)
        except OSError:
            return None

    def stop(self) -> tuple[int, str, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=60)
        return self.process.returncode, out, err


@pytest.fixture
def worker(worker_ws: Workspace) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(*args: str) -> Worker:
        started.append(Worker(worker_ws, *args))
        return started[-1]

    yield start
    for each in started:
        if each.process.poll() is None:
            each.process.kill()
            each.process.communicate()


def outbox(db: str, incident_id: str) -> dict[str, dict[str, int]]:
    store = Store.open(db)
    try:
        with store.read() as conn:
            return deliveries.counts(conn, incident_id, parties=None)
    finally:
        store.close()


def test_a_deliver_worker_is_scraped_while_sending_and_counts_what_the_outbox_holds(
        worker_ws: Workspace, worker: Callable[..., Worker]) -> None:
    ws = worker_ws
    incident_id = ws.json("start", "core-banking-outage", "--title", "Core down", "--eta", "2h",
                          "--queue-only")["id"]
    began = time.time()
    run = worker()

    # During the send: some messages counted as sent while the incident's queue still holds
    # others (40 emails at 10/s take 4 s).
    def under_way() -> Samples | None:
        found = run.scrape()
        if found and value(found, "incident_messages_total", channel="email", state="sent") \
                and value(found, "incident_queue_depth", incident=incident_id, channel="email"):
            return found
        return None

    during = until(under_way, "a scrape while sending")
    assert value(during, "incident_messages_total", channel="email", state="sent") < CUSTOMERS
    assert value(during, "incident_last_success_timestamp_seconds", channel="email") >= began

    # After: everything settled in the outbox, and the worker's counts are the outbox's.
    def settled() -> dict[str, dict[str, int]] | None:
        counts = outbox(ws.db, incident_id)
        busy = sum(c.get("pending", 0) + c.get("sending", 0) for c in counts.values())
        return None if busy else counts

    counts = until(settled, "the outbox to be settled")
    assert counts == {"email": {"sent": CUSTOMERS}, "sms": {"sent": CUSTOMERS}}

    def agreed() -> Samples | None:
        found = run.scrape()
        sent = {ch: value(found or {}, "incident_messages_total", channel=ch, state="sent")
                for ch in counts}
        return found if sent == {ch: c["sent"] for ch, c in counts.items()} else None

    after = until(agreed, "the metrics to count what the outbox holds")
    for channel in ("email", "sms"):
        assert value(after, "incident_messages_total", channel=channel, state="failed") == 0
        assert value(after, "incident_send_seconds_count", channel=channel) == CUSTOMERS
        assert value(after, "incident_send_seconds_sum", channel=channel) > 0
        assert value(after, "incident_queue_depth", incident=incident_id, channel=channel) == 0
        last = value(after, "incident_last_success_timestamp_seconds", channel=channel)
        assert began <= last <= time.time()
    assert not [k for k in after if k[0] == "incident_retries_total"]
    assert value(after, "incident_rate_limit_wait_seconds_total", channel="email") > 0
    assert value(after, "incident_claim_seconds_count") >= 2  # batches of 64 for 80 rows

    # A worker stays up for what is queued next, until SIGTERM; it then says what it did.
    update = ws.json("update", incident_id[-6:], "-m", "Failover in progress", "--queue-only")
    assert update["id"] == incident_id

    def more_sent() -> Samples | None:  # both channels: a SIGTERM mid-send exits 1
        found = run.scrape() or {}
        sent = [value(found, "incident_messages_total", channel=ch, state="sent")
                for ch in ("email", "sms")]
        return found if sent == [2 * CUSTOMERS] * 2 else None

    until(more_sent, "the update's messages, sent by the same worker")
    code, out, err = run.stop()
    assert code == 0, err
    assert re.search(rf"Sent {4 * CUSTOMERS}, failed 0", out), out
    assert ENV["TWILIO_AUTH_TOKEN"] not in out + err


def test_sigterm_during_a_send_lets_the_round_finish(
        worker_ws: Workspace, worker: Callable[..., Worker]) -> None:
    """SIGTERM (how a service manager stops a worker) while emails are still going out at
    10/s: the round in hand finishes, every message is sent once, exit 0."""
    ws = worker_ws
    incident_id = ws.json("start", "core-banking-outage", "--title", "Core down",
                          "--queue-only")["id"]
    run = worker()

    def under_way() -> Samples | None:
        found = run.scrape()
        return found if found and value(found, "incident_messages_total", channel="email",
                                        state="sent") else None

    until(under_way, "the first emails")
    code, out, err = run.stop()
    assert code == 0, err
    assert outbox(ws.db, incident_id) == {"email": {"sent": CUSTOMERS},
                                          "sms": {"sent": CUSTOMERS}}
    assert re.search(rf"Sent {2 * CUSTOMERS}, failed 0", out), out


def test_retries_are_counted_by_reason(worker_ws: Workspace, worker: Callable[..., Worker],
                                       smtp_sink: Callable[..., SmtpSink]) -> None:
    """A relay answering 4xx to every RCPT: each try is a retry with the SMTP code."""
    ws = worker_ws
    ws.use_smtp(smtp_sink("-r", "RCPT").port, rate=100)  # -r: a soft (4xx) reject
    ws.fast_retries(attempts=2)
    ws.configure(lambda cfg: cfg["channels"].update(sms={"transport": "file"}))
    incident_id = ws.json("start", "core-banking-outage", "--title", "Core down",
                          "--queue-only")["id"]
    run = worker(incident_id[-6:])

    def failed_for_good() -> Samples | None:
        found = run.scrape()
        return found if value(found or {}, "incident_messages_total", channel="email",
                              state="failed") == CUSTOMERS else None

    found = until(failed_for_good, "every email to fail after its retries")
    retries = {dict(k[1])["reason"]: v for k, v in found.items()
               if k[0] == "incident_retries_total" and dict(k[1])["channel"] == "email"}
    assert sum(retries.values()) == CUSTOMERS  # one retry each (2 attempts), then failed
    assert all(re.fullmatch(r"4\d\d", reason) for reason in retries), retries
    assert value(found, "incident_messages_total", channel="email", state="retry") == CUSTOMERS
    assert outbox(ws.db, incident_id)["email"] == {"failed": CUSTOMERS}
    code, _, _ = run.stop()
    assert code == 3  # done, some failed permanently


def test_receipts_serve_counts_its_callbacks(ws: Workspace) -> None:
    ws.configure(lambda cfg: cfg.update(receipts={"public_url": "https://notify.example.com/"}))
    store, _ = sent_sms(ws.db, ["SM1", "SM2", "CA1"])
    port = free_port()
    server = Server(ws, "--metrics-port", str(port))
    try:
        assert server.post(sms("SM1", "delivered")) == 204
        assert server.post(sms("SM2", "delivered"), signature="bm90IGEgc2lnbmF0dXJl") == 403
        assert server.post(sms("SM404", "delivered")) == 404
        assert server.post(call("CA1", "completed", NOW)) == 204
        assert server.post(call("CA1", "completed", NOW)) == 204  # again: a duplicate
        assert server.post({"To": "+8613800000000"}) == 400
        found = scrape(f"http://127.0.0.1:{port}/metrics")
        assert value(found, "incident_callbacks_total", kind="sms", result="recorded") == 1
        assert value(found, "incident_callbacks_total", kind="sms", result="bad_signature") == 1
        assert value(found, "incident_callbacks_total", kind="sms", result="unmatched") == 1
        assert value(found, "incident_callbacks_total", kind="call", result="recorded") == 1
        assert value(found, "incident_callbacks_total", kind="call", result="duplicate") == 1
        assert value(found, "incident_callbacks_total", kind="unknown",
                     result="malformed") == 1
        assert value(found, "incident_callback_seconds_count", kind="sms") == 3
        # The public port Twilio calls does not serve them.
        public = server.url.replace("/twilio/status", "/metrics")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(public, timeout=10)
        assert TOKEN not in json.dumps([list(k) for k in found], default=str)
    finally:
        assert server.stop() == 0
        store.close()


@pytest.mark.parametrize("command", [["deliver"], ["receipts", "serve", "--port", "0"]])
def test_a_taken_metrics_port_is_a_clear_error(sqlite_ws: Workspace, command: list[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = sqlite_ws.run(*command, "--metrics-port", str(port), code=1)
    assert f"metrics port 127.0.0.1:{port} is already in use" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_queue_depth_keeps_its_label_set_bounded() -> None:
    many = [(f"INC-{n:03d}", "email", n + 1) for n in range(MAX_INCIDENTS + 5)]
    metrics = PrometheusMetrics()
    metrics.registry.register(QueueDepth(lambda: many))
    found = {(s.labels["incident"], s.value)
             for family in text_string_to_metric_families(generate_latest(
                 metrics.registry).decode())
             for s in family.samples if s.name == "incident_queue_depth"}
    assert len(found) == MAX_INCIDENTS + 1
    assert ("other", float(sum(range(1, 6)))) in found  # the 5 shallowest, summed
    assert (f"INC-{MAX_INCIDENTS + 4:03d}", float(MAX_INCIDENTS + 5)) in found


def exported() -> set[str]:
    """Every sample name the metrics module exports, each hook called once."""
    metrics = PrometheusMetrics()
    metrics.registry.register(QueueDepth(lambda: [("INC-1", "email", 1)]))
    metrics.send_time("email", 0.1)
    metrics.rate_limit_wait("email", 0.1)
    metrics.claim_time(0.01)
    metrics.recorded([("email", "sent", None), ("email", "retry", "421")], 1.0)
    metrics.callback("sms", "recorded", 0.01)
    text = generate_latest(metrics.registry).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_grafana_dashboard_asks_only_for_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [target["expr"] for panel in dashboard["panels"]
             for target in panel.get("targets", [])]
    assert exprs
    names = exported()
    used = {name for expr in exprs for name in re.findall(r"\b(?:incident|process)_\w+", expr)}
    assert used <= names, used - names
    # Every metric of the toolkit is on the dashboard.
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in names
                if n.startswith("incident_")}
    shown = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in used}
    assert families <= shown, families - shown
