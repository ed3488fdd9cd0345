"""Delivery through the dispatcher against real relays: faults, retries, fallback, rates."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from cli_fixtures import Workspace
from counting_smtp import CountingHandler, CountingServer, _LocalController
from fake_twilio import Recorded, Scripted, serve_fake_twilio
from incident.rendering import sms_segments
from servers import SmtpSink

EMAILS = [f"c{n},客户{n},user{n}@example.com,,{'zh-CN' if n % 2 else 'en'},retail,guangdong,"
          f"gd-sz,savings,{'urgent' if n == 3 else 'normal'}" for n in range(1, 6)]


@pytest.fixture
def twilio_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "test-token-not-secret")


def customers_only(ws: Workspace) -> None:
    """No internal notices to parties (their own tests cover them): only customer notices go
    out, so what the relay sees is exactly the customers' outbox rows."""
    def edit(cfg: dict[str, Any]) -> None:
        cfg.pop("parties", None)
        cfg.pop("alerts", None)
    ws.configure(edit)


def _start(ws: Workspace, *extra: str, code: int = 0) -> dict:
    return ws.json("start", "core-banking-outage", "--title", "Core banking down", "--eta",
                   "2h", *extra, code=code)


def _wait_until_due(seconds: float = 2.0) -> None:
    # Retries are scheduled backoff_base (1 s) ± 50% after the failure.
    time.sleep(seconds)


@pytest.mark.parametrize("fault, code", [(("-r", "RCPT"), "450"), (("-r", "."), "450"),
                                         (("-q", "."), "disconnect")])
def test_temporary_smtp_faults_are_retried_then_delivered_when_the_relay_heals(
        ws: Workspace, smtp_sink: Callable[..., SmtpSink], fault: tuple[str, str],
        code: str) -> None:
    broken = smtp_sink(*fault)
    ws.use_smtp(broken.port)
    customers_only(ws)
    ws.fast_retries()
    ws.write_customers(EMAILS)
    started = _start(ws, code=1)  # messages left pending: exit 1, with the reason
    assert started["deliveries"]["sent"] == 0
    assert started["deliveries"]["pending"] == 5
    status = ws.json("status", started["id"])
    assert status["retrying"] and {r["code"] for r in status["retrying"]} == {code}
    assert all("@" not in r["to"].split("***")[0][1:] for r in status["retrying"])  # masked
    broken.stop()
    smtp_sink(port=broken.port)
    _wait_until_due()
    delivered = ws.json("deliver", started["id"])
    assert delivered["sent"] == 5 and delivered["pending"] == 0 and delivered["failed"] == 0


def test_permanent_smtp_refusal_is_reported_masked_and_exits_3(
        ws: Workspace, smtp_sink: Callable[..., SmtpSink], tmp_path) -> None:
    refusing = smtp_sink("-f", "RCPT")
    ws.use_smtp(refusing.port)
    ws.write_customers(EMAILS)
    customers_only(ws)
    result = ws.run("start", "core-banking-outage", "--title", "Core down", code=3)
    assert "5 permanent delivery failures" in result.stdout
    assert "user1@example.com" not in result.output
    incident_id = ws.json("list")[0]["id"]
    status = ws.json("status", incident_id)
    assert status["deliveries"]["failed"] == 5 and status["deliveries"]["pending"] == 0
    export = tmp_path / "failed.csv"
    listed = ws.json("failed", incident_id, "--export", str(export))
    assert listed["failed"] == 5
    with open(export, encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["code"] for r in rows} == {"500"}
    assert all(r["to"].startswith("u***@") for r in rows)
    # A later notice does not try addresses that failed permanently.
    update = ws.json("update", incident_id, "-m", "progress", code=0)
    assert update["notice"]["messages"] == 0


def test_a_permanent_email_failure_falls_back_to_sms(
        ws: Workspace, smtp_sink: Callable[..., SmtpSink]) -> None:
    playbook = ws.root / "playbooks" / "email-first.yaml"
    text = (ws.root / "playbooks" / "core-banking-outage.yaml").read_text("utf-8")
    text = text.replace("id: core-banking-outage", "id: email-first", 1)
    assert "channels: [email, sms]" in text
    text = text.replace("channels: [email, sms]", "channels: [email]\n  fallback: true", 1)
    playbook.write_text(text, "utf-8")
    refusing = smtp_sink("-f", "RCPT")
    ws.use_smtp(refusing.port)
    customers_only(ws)
    ws.write_customers([
        "c1,张伟,zhang@example.com,+8613800138001,zh-CN,retail,guangdong,gd,savings,normal",
        "c2,Mary,mary@example.com,,en,retail,guangdong,gd,savings,normal"])
    result = ws.json("start", "email-first", "--title", "Core down", code=3)
    by_channel = result["deliveries_by_channel"]
    assert by_channel["email"]["failed"] == 2
    assert by_channel["sms"]["sent"] == 1  # only c1 has a phone
    sms = [json.loads(p.read_text("utf-8")) for p in ws.outbox_files(result["id"], "json")]
    assert [s["to"] for s in sms] == ["+8613800138001"]
    # The next notice goes straight to the channel that works.
    update = ws.json("update", result["id"], "-m", "progress")
    assert update["notice"]["messages"] == 1
    assert update["deliveries_by_channel"]["sms"]["sent"] == 2


def test_twilio_errors_are_classified_through_the_dispatcher(ws: Workspace,
                                                             twilio_env: None) -> None:
    phones = {"c1": "+8613800138001", "c2": "+8613800138002", "c3": "+8613800138003",
              "c4": "+8613800138004"}
    ws.write_customers([f"{ref},Name {ref},,{phone},en,retail,guangdong,gd,savings,normal"
                        for ref, phone in phones.items()])
    ws.fast_retries(wait="5s")
    with serve_fake_twilio() as fake:
        fake.script[phones["c1"]] = Scripted(400, 21211, "The 'To' number is not valid")
        fake.script[phones["c2"]] = Scripted(400, 21610, "Attempt to send to unsubscribed")
        fake.burst = 3  # the first three requests get 429 / 20429 and must be retried
        ws.use_twilio(fake.url)
        result = ws.run("start", "core-banking-outage", "--title", "Core down", code=3)
        assert "21211" in result.stdout and "21610" in result.stdout
        status = ws.json("status", ws.json("list")[0]["id"])
        assert status["deliveries_by_channel"]["sms"] == {"sent": 2, "failed": 2}
        answered = [r.status for r in fake.recorded()]
        assert answered.count(429) == 3
        # 21610 (unsubscribed) and 21211 are never retried: one request each.
        to = [r.form["To"] for r in fake.recorded()]
        assert to.count(phones["c1"]) == 1 or 429 in [
            r.status for r in fake.recorded() if r.form["To"] == phones["c1"]]
        assert sum(1 for r in fake.recorded()
                   if r.form["To"] == phones["c2"] and r.status == 400) == 1


def test_sms_rate_limit_holds_in_every_one_second_window(sqlite_ws: Workspace,
                                                        twilio_env: None) -> None:
    # A 20-second send; the limit is the dispatcher's, so one database backend is enough.
    ws = sqlite_ws
    rate = 10  # segments per second
    ws.write_customers([f"c{n},Customer {n},,+86138001{n:05d},en,retail,guangdong,gd,savings,"
                        "normal" for n in range(1, 101)])
    with serve_fake_twilio() as fake:
        ws.use_twilio(fake.url, rate=rate)
        started = time.monotonic()
        result = _start(ws)
        elapsed = time.monotonic() - started
        requests = fake.recorded()
    assert result["deliveries"]["sent"] == 100
    arrivals = [(r.at, sms_segments(r.form["Body"]).segments) for r in requests]
    total = sum(units for _, units in arrivals)
    assert total >= 150  # long enough (about 20 s at 10 segments/s) to mean something
    worst = max(sum(units for at, units in arrivals if start <= at < start + 1.0)
                for start, _ in arrivals)
    print(f"\nSMS rate: {total} segments in {elapsed:.1f}s, configured {rate}/s, "
          f"worst one-second window {worst}")
    assert worst <= rate
    assert total / elapsed >= rate * 0.8  # and the limit is not wildly pessimistic


# --- 5xx for a subset of recipients ---------------------------------------------------------------


class RefusingHandler(CountingHandler):
    """aiosmtpd handler that refuses RCPT TO for some addresses with a 550 (mailbox unknown), as
    a relay does for a few bad addresses in a large list, and counts what it accepted."""

    def __init__(self, refuse: set[str]) -> None:
        super().__init__()
        self.refuse = refuse
        self.refused: Counter[str] = Counter()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            self.refused[address] += 1
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"


def test_a_5xx_for_some_recipients_reports_exactly_those_and_delivers_the_rest(
        ws: Workspace) -> None:
    n = 30
    refused_refs = {f"c{k}" for k in (2, 3, 11, 17, 23, 29)}
    rows = [f"c{k},客户{k},user{k}@example.com,,{'zh-CN' if k % 2 else 'en'},retail,guangdong,"
            f"gd-sz,savings,{'urgent' if k % 5 == 0 else 'normal'}" for k in range(1, n + 1)]
    handler = RefusingHandler({f"user{ref[1:]}@example.com" for ref in refused_refs})
    controller = _LocalController(handler, hostname="127.0.0.1", port=0, data_size_limit=None)
    controller.start()
    try:
        server = CountingServer(controller, handler)
        ws.use_smtp(server.port)
        customers_only(ws)
        ws.fast_retries()
        ws.write_customers(rows)
        result = ws.run("start", "core-banking-outage", "--title", "Core down", code=3)
        assert f"{len(refused_refs)} permanent delivery failures" in result.stdout
        incident_id = ws.json("list")[0]["id"]
        failed = ws.json("failed", incident_id)
        # Exactly the refused customers are reported, with the relay's code, masked.
        assert {d["customer"] for d in failed["deliveries"]} == refused_refs
        assert {d["code"] for d in failed["deliveries"]} == {"550"}
        assert {d["channel"] for d in failed["deliveries"]} == {"email"}
        assert all("@example.com" in d["to"] and "***" in d["to"] for d in failed["deliveries"])
        # A 5xx is permanent: each refused address was tried once, never retried.
        assert set(handler.refused.values()) == {1}
        # Everyone else got the notice exactly once.
        status = ws.json("status", incident_id)
        assert status["deliveries"] == {"pending": 0, "sending": 0, "sent": n - len(refused_refs),
                                        "failed": len(refused_refs)}
        assert server.total() == n - len(refused_refs)
        assert set(server.counts().values()) == {1}
    finally:
        controller.stop()


# --- Twilio 429 bursts during a rate-limited send ---------------------------------------------


def worst_window(requests: list[Recorded], rate: float) -> int:
    """The most SMS segments that arrived in any one-second window."""
    arrivals = [(r.at, sms_segments(r.form["Body"]).segments) for r in requests]
    return max(sum(units for at, units in arrivals if start <= at < start + 1.0)
               for start, _ in arrivals)


def test_twilio_429_bursts_are_retried_until_all_arrive_within_the_rate(
        sqlite_ws: Workspace, twilio_env: None) -> None:
    # The limit is the dispatcher's, so one database backend is enough.
    ws = sqlite_ws
    rate = 10  # segments per second
    # Chinese (UCS-2) and English notices: a mix of segment counts per message.
    phones = {f"c{n}": f"+86138002{n:05d}" for n in range(1, 41)}
    ws.write_customers([f"{ref},客户 {ref},,{phone},{'zh-CN' if int(ref[1:]) % 2 else 'en'},"
                        "retail,guangdong,gd,savings,normal" for ref, phone in phones.items()])
    ws.fast_retries(wait="60s")
    with serve_fake_twilio() as fake:
        # Every 8th request starts a burst of three 429 / 20429 answers, all through the send.
        fake.burst_every, fake.burst_length = 8, 3
        ws.use_twilio(fake.url, rate=rate)
        result = _start(ws)
        requests = fake.recorded()
    assert result["deliveries"] == {"pending": 0, "sending": 0, "sent": 40, "failed": 0}
    pushed_back = [r for r in requests if r.status == 429]
    accepted = [r for r in requests if r.status == 201]
    assert len(pushed_back) >= 9  # several bursts really happened
    # Every number got exactly one message, including each one that was pushed back first.
    assert Counter(r.form["To"] for r in accepted) == Counter(phones.values())
    assert {r.form["To"] for r in pushed_back} <= set(phones.values())
    segments = {sms_segments(r.form["Body"]).segments for r in accepted}
    assert len(segments) > 1, segments  # the mix is real
    # The rate holds for what Twilio accepted and for every request, retries included.
    worst_accepted, worst_all = worst_window(accepted, rate), worst_window(requests, rate)
    print(f"\n429 bursts: {len(requests)} requests, {len(pushed_back)} answered 429, "
          f"segments per message {sorted(segments)}, worst one-second window: accepted "
          f"{worst_accepted}, all requests {worst_all} (limit {rate})")
    assert worst_accepted <= rate
    assert worst_all <= rate
