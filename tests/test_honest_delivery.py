"""Issue 11 §1–§2 through the command line: no customer silently left out, and delivery
outcomes that say what happened (pending with a reason, the transport a notice was recorded
for, channels checked before anything is recorded, parties queued until reached)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator

import pytest

from cli_fixtures import Workspace
from fake_twilio import FakeTwilio, Scripted, serve_fake_twilio
from servers import SmtpSink, free_port


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with serve_fake_twilio() as server:
        yield server


def _start(ws: Workspace, *extra: str, code: int | None = 0) -> dict:
    return ws.json("start", "core-banking-outage", "--title", "Core banking unavailable",
                   "--eta", "2h", *extra, code=code)


def test_a_customer_with_a_bad_phone_still_gets_the_email(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ws.write_customers(["c1,张伟,zhang.wei@example.com,999,zh-CN,,,,,",
                        "c2,Li Na,not-an-email,13812348000,en,,,,,"])
    result = ws.run("start", "core-banking-outage", "--title", "Core banking unavailable")
    incident_id = json.loads(ws.run("--json", "list").stdout)[0]["id"]
    emails = ws.outbox_files(incident_id, "eml")
    sms = ws.outbox_files(incident_id, "json")
    assert len(emails) == 1 and len(sms) == 1  # c1 by email, c2 by SMS
    assert b"zhang.wei@example.com" in emails[0].read_bytes()
    assert json.loads(sms[0].read_text(encoding="utf-8"))["to"] == "+8613812348000"
    # Each bad field is named with its line; nothing is said to be skipped.
    assert "customers.csv:2: phone" in result.stderr and "notified by email only" in result.stderr
    assert "customers.csv:3: email" in result.stderr and "notified by SMS only" in result.stderr
    assert "2 customers affected" in result.stdout and "rows skipped" not in result.stdout
    assert "zhang.wei@example.com" not in result.output
    # A script gets the same, located, in --json (it got counts only).
    again = ws.json("start", "core-banking-outage", "--title", "Core banking again")
    problems = again["audience"]["problems"]
    assert [(p["line"], p["field"], p["row"]) for p in problems] == [
        (2, "phone", "kept"), (3, "email", "kept")]
    assert all(p["file"].endswith("customers.csv") for p in problems)


# --- §2: messages left pending say why, exit 1, and name the command that resumes ----------

def _smtp_closed_port(ws: Workspace, smtp_sink: Callable[..., SmtpSink],
                      fake: FakeTwilio) -> str:
    ws.use_smtp(free_port())  # nothing listens there
    return r"email: \d+ pending, last error: cannot connect to 127\.0\.0\.1:\d+"


def _smtp_hangs_up(ws: Workspace, smtp_sink: Callable[..., SmtpSink], fake: FakeTwilio) -> str:
    ws.use_smtp(smtp_sink("-q", "MAIL").port)  # disconnects when told who sends
    return r"email: \d+ pending, last error: the SMTP server disconnected"


def _tls_on_plain_port(ws: Workspace, smtp_sink: Callable[..., SmtpSink],
                       fake: FakeTwilio) -> str:
    ws.use_smtp(smtp_sink().port)
    ws.configure(lambda cfg: cfg["channels"]["email"]["smtp"].update(security="tls"))
    return r"email: \d+ pending, last error: cannot connect to 127\.0\.0\.1:\d+"


def _twilio_500(ws: Workspace, smtp_sink: Callable[..., SmtpSink], fake: FakeTwilio) -> str:
    ws.use_twilio(fake.url)
    fake.status_override = Scripted(500, 20500, "Internal Server Error")
    return r"sms: \d+ pending, last error: .*500"


@pytest.mark.parametrize("fault", [_smtp_closed_port, _smtp_hangs_up, _tls_on_plain_port,
                                   _twilio_500], ids=lambda f: f.__name__.strip("_"))
def test_messages_left_pending_say_why_and_exit_1(
        sqlite_ws: Workspace, smtp_sink: Callable[..., SmtpSink], fake: FakeTwilio,
        monkeypatch: pytest.MonkeyPatch,
        fault: Callable[[Workspace, Callable[..., SmtpSink], FakeTwilio], str]) -> None:
    ws = sqlite_ws
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "token-never-shown")
    ws.write_customers(["c1,张伟,zhang.wei@example.com,13812348000,zh-CN,,,,,",
                        "c2,Li Na,li.na@example.com,13912348000,en,,,,,",
                        "c3,Wang Wu,wang.wu@example.com,,en,,,,,"])
    ws.fast_retries(wait="1s", attempts=50)
    reason = fault(ws, smtp_sink, fake)
    started = ws.run("start", "core-banking-outage", "--title", "Core banking unavailable",
                     code=1)
    incident_id = json.loads(ws.run("--json", "list").stdout)[0]["id"]
    short = incident_id[-6:]
    # The parties (email only) are reached when email works, never "notified" before.
    assert "Parties notified" not in started.stdout
    assert "(internal notice queued)" in started.stdout
    if reason.startswith("email"):
        assert "Parties reached: none  ·  not yet (queued): 科技运维部" in started.stdout
    else:
        assert "Parties reached: 科技运维部" in started.stdout
        assert "not yet" not in started.stdout
    for result in (started, ws.run("deliver", short, code=1)):
        assert re.search(reason, result.stderr), result.stderr
        assert f"incident deliver {short}" in result.stderr
        assert "Traceback" not in result.output
        for contact in ("zhang.wei@example.com", "13812348000", "token-never-shown"):
            assert contact not in result.output
    assert ws.json("status", short)["deliveries"]["pending"] > 0
    waiting = ws.json("deliver", short, code=1)["waiting"]
    assert [w["channel"] for w in waiting] == [reason.split(":")[0]]
    assert re.search(reason.split("last error: ")[1], waiting[0]["last_error"])


# --- §2: every channel's configuration is checked before anything is recorded --------------

@pytest.mark.parametrize("missing", ["INCIDENT_SMTP_PASSWORD", "TWILIO_AUTH_TOKEN"])
def test_a_missing_secret_is_refused_before_anything_is_recorded(
        sqlite_ws: Workspace, monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    ws = sqlite_ws
    secrets = {"INCIDENT_SMTP_PASSWORD": "pw-never-shown",
               "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "tk-never-shown"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    ws.use_smtp(free_port())
    ws.configure(lambda cfg: cfg["channels"]["email"]["smtp"].update(username="notices"))
    ws.use_twilio("http://127.0.0.1:9")
    started = ws.json("start", "core-banking-outage", "--title", "Core down", "--queue-only")
    monkeypatch.delenv(missing)
    commands = [("start", "core-banking-outage", "--title", "Core down"),
                ("update", started["id"], "-m", "progress"),
                ("eta", started["id"], "3h", "--reason", "later"),
                ("resolve", started["id"], "-m", "restored"),
                ("deliver", started["id"])]
    for command in commands:
        result = ws.run(*command, code=2)
        assert missing in result.stderr and f"export {missing}=" in result.stderr
        assert "never-shown" not in result.output
    # Nothing was recorded or sent: one incident, its one event and its first notice pending.
    assert len(ws.json("list")) == 1
    assert len(ws.json("timeline", started["id"])["events"]) == 2  # declared, parties
    assert ws.json("status", started["id"])["deliveries"]["sent"] == 0


# --- §2: a row is settled only on the transport its notice was recorded for -----------------

def test_deliver_never_settles_rows_recorded_for_another_transport_unless_rerouted(
        ws: Workspace, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "token")
    ws.write_customers(["c1,张伟,zhang.wei@example.com,13812348000,zh-CN,,,,,",
                        "c2,Li Na,li.na@example.com,,en,,,,,"])
    ws.use_smtp(free_port())
    ws.use_twilio(fake.url)
    queued = ws.json("start", "core-banking-outage", "--title", "Relay down", "--queue-only")
    incident_id, short = queued["id"], queued["id"][-6:]
    pending = queued["deliveries"]["pending"] + queued["internal_deliveries"]["pending"]

    # Another supervisor's config writes files: it must not take these rows.
    def to_files(cfg: dict) -> None:
        cfg["channels"]["email"]["transport"] = "file"
        cfg["channels"]["sms"]["transport"] = "file"
    ws.configure(to_files)
    began = time.monotonic()
    refused = ws.run("deliver", code=1)
    # Nor wait for them: rows it may not send are no retries to wait for (30 s by default).
    assert time.monotonic() - began < 15
    assert "recorded for transport smtp" in refused.stderr
    assert "recorded for transport twilio" in refused.stderr
    assert "incident deliver --reroute-to-config-transport" in refused.stderr
    assert not (ws.root / "outbox" / incident_id).exists()
    assert ws.json("status", short)["deliveries"]["sent"] == 0
    assert fake.recorded() == []

    # The supervisor says so explicitly: rerouted, on the record, then sent as files.
    rerouted = ws.run("deliver", short, "--reroute-to-config-transport")
    assert "rerouted from smtp to file" in rerouted.stderr
    assert "rerouted from twilio to file" in rerouted.stderr
    events = ws.json("timeline", short)["events"]
    (event,) = [e for e in events if e["type"] == "delivery_rerouted"]
    assert event["actor"] == "duty-lead"
    status = ws.json("status", short)
    assert status["deliveries"]["pending"] == 0
    assert status["deliveries"]["sent"] + status["internal_deliveries"]["sent"] == pending
    assert len(ws.outbox_files(incident_id, "eml")) == 2
    assert ws.run("verify", short).exit_code == 0


def test_the_notify_parties_step_says_queued_and_why_they_were_not_reached(
        sqlite_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = sqlite_ws
    saved: dict = {}

    def drop(cfg: dict) -> None:  # started without parties: the step stays open
        saved.update(parties=cfg.pop("parties"), alerts=cfg.pop("alerts"))
    ws.configure(drop)
    incident_id = ws.json("start", "core-banking-outage", "--title", "Core down")["id"]
    ws.configure(lambda cfg: cfg.update(saved))
    ws.use_smtp(free_port())
    ws.configure(lambda cfg: cfg["channels"]["email"]["smtp"].update(username="notices"))
    ws.fast_retries(wait="1s", attempts=50)

    refused = ws.run("step", incident_id, "notify-parties", "--done", code=2)
    assert "INCIDENT_SMTP_PASSWORD" in refused.stderr  # checked before anything is recorded
    assert len(ws.json("timeline", incident_id)["events"]) == 1

    monkeypatch.setenv("INCIDENT_SMTP_PASSWORD", "pw")
    result = ws.run("step", incident_id, "notify-parties", "--done", code=1)
    assert "notified" not in result.stdout
    assert "internal notice to the parties queued" in result.stdout
    assert "Parties reached: none  ·  not yet (queued): 科技运维部" in result.stdout
    assert re.search(r"email: 6 pending, last error: cannot connect", result.stderr)
    assert f"incident deliver {incident_id[-6:]}" in result.stderr
