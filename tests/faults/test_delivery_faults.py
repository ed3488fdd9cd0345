"""Delivery through the dispatcher against real relays: faults, retries, fallback, rates."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable

import pytest

from cli_fixtures import Workspace
from fake_twilio import Scripted, serve_fake_twilio
from incident.rendering import sms_segments
from servers import SmtpSink

EMAILS = [f"c{n},客户{n},user{n}@example.com,,{'zh-CN' if n % 2 else 'en'},retail,guangdong,"
          f"gd-sz,savings,{'urgent' if n == 3 else 'normal'}" for n in range(1, 6)]


@pytest.fixture
def twilio_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "test-token-not-secret")


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
    ws.fast_retries()
    ws.write_customers(EMAILS)
    started = _start(ws)
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
