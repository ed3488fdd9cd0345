"""Escalation to the next channel, end to end: an SMS reported undelivered (30003) is followed,
after the playbook's delay, by a call placed through Prism (which validates the Calls
request); the call not answered, the customer becomes a call-back case in `manual list`.
All on a frozen clock; every step recorded once and the chain verifies."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_channel_sms import PRISM_PASSED, PRISM_VIOLATIONS, prism_log_since

from cli_fixtures import Workspace
from incident.errors import PlaybookInvalid
from incident.models import ReceiptState
from incident.playbooks import parse_playbook
from incident.store import Store, schema
from incident.store import receipts as rc
from servers import PrismServer

ACCOUNT = "AC" + "0" * 32
ENV = {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": "tok-escalation-never-print-me"}
T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
ESCALATION = """escalation:
  - after: 15m
    unless: delivered|answered
    from: sms
    to: voice
  - after: 45m
    unless: delivered
    to: manual_callback
"""


def escalating(ws: Workspace, url: str) -> None:
    """SMS and calls through `url`; two customers by SMS only; the escalation above."""
    for channel, number in (("sms", "+15005550006"), ("voice", "+85230000000")):
        ws.configure(lambda cfg, c=channel, n=number: cfg["channels"].setdefault(c, {}).update(
            transport="twilio", rate=100, twilio={"from_number": n, "api_base_url": url}))
    for prefix, name in (("C", "customers.csv"), ("D", "drill.csv")):  # D: staff, drills
        ws.write_customers([
            f"{prefix}1,张伟,,+861380013800{prefix == 'D':d},zh-CN,retail,guangdong,gd-sz-futian,"
            "savings,urgent",
            f"{prefix}2,Mary Lee,,+1415555012{prefix == 'D':d},en,retail,hong-kong,hk-central,"
            "savings,normal"], name=name)
    playbook = ws.root / "playbooks" / "typhoon.yaml"
    text = playbook.read_text(encoding="utf-8")
    old = "  channels: [email, sms]\n"
    assert old in text
    playbook.write_text(text.replace(old, "  channels: [sms]\n") + ESCALATION, encoding="utf-8")


def rows(store: Store, incident_id: str) -> list[Any]:
    o = schema.outbox
    with store.read() as conn:
        return list(conn.execute(o.select().where(o.c.incident_id == incident_id,
                                                  ~o.c.recipient_ref.like("party:%"))
                                 .order_by(o.c.id)).all())


def callbacks(ws: Workspace, incident_id: str) -> list[tuple[str, bool]]:
    """(customer, urgent) of each case in `manual list`."""
    listed = ws.json("manual", "list", incident_id[-6:])["cases"]
    return [(c["customer"], c["urgent"]) for c in listed]


def settle(store: Store, row_id: int, state: ReceiptState, status: str, code: str | None,
           at: datetime) -> None:
    with store.write() as conn:
        rc.record(conn, [rc.Receipt(state=state, status=status, provider_at=at,
                                    source="callback", code=code, outbox_id=row_id)], now=at)


def undelivered_sms(ws: Workspace, prism: PrismServer, monkeypatch: pytest.MonkeyPatch,
                    *flags: str) -> tuple[Store, str, Any]:
    """An incident started at T0 whose SMS to C1 came back undelivered (30003) and whose SMS
    to C2 was delivered; the store, the incident's id and C1's row."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    escalating(ws, prism.url)
    ws.freeze(T0)
    incident_id = ws.json("start", "typhoon", "--title", "Signal No. 8", *flags)["id"]
    store = Store.open(ws.db)
    c1, c2 = rows(store, incident_id)
    assert (c1.recipient_ref[1:], c1.channel, c1.state) == ("1", "sms", "sent")
    settle(store, c1.id, ReceiptState.UNDELIVERED, "undelivered", "30003", T0 + timedelta(
        seconds=20))
    settle(store, c2.id, ReceiptState.DELIVERED, "delivered", None, T0 + timedelta(seconds=20))
    return store, incident_id, c1


def test_undelivered_sms_is_called_then_called_back(ws: Workspace, prism: PrismServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store, incident_id, c1 = undelivered_sms(ws, prism, monkeypatch)

    ws.freeze(T0 + timedelta(minutes=14))  # nothing is due before the delay
    assert ws.json("escalate")["messages"] == 0
    assert len(rows(store, incident_id)) == 2

    ws.freeze(T0 + timedelta(minutes=16))
    offset = prism.log_path.stat().st_size
    out = ws.json("escalate", incident_id[-6:])
    assert (out["messages"], out["cases"]) == (1, 0)
    [step] = out["escalations"]
    assert (step["step"], step["to"], step["customers"]) == (1, "voice", 1)
    log = prism_log_since(prism.log_path, offset, expected_passes=1)
    assert [m for m in PRISM_VIOLATIONS if m in log] == [], log
    assert f"post /2010-04-01/Accounts/{ACCOUNT}/Calls.json" in log
    assert PRISM_PASSED in log
    call = rows(store, incident_id)[2]
    # The delivered customer is never escalated; the undelivered one is called, once.
    assert (call.recipient_ref, call.channel, call.state) == ("C1", "voice", "sent")
    assert call.address == c1.address and call.notice_seq == c1.notice_seq
    assert ws.json("escalate")["messages"] == 0
    assert len(rows(store, incident_id)) == 3

    settle(store, call.id, ReceiptState.NO_ANSWER, "no-answer", None,
           T0 + timedelta(minutes=17))
    ws.freeze(T0 + timedelta(minutes=46))
    out = ws.json("escalate")
    assert (out["messages"], out["cases"]) == (0, 1)
    assert callbacks(ws, incident_id) == [("C1", True)]
    assert ws.json("escalate")["cases"] == 0  # never twice

    timeline = ws.run("timeline", incident_id[-6:], env={"COLUMNS": "300"}).stdout
    assert "escalation step 1 (after 15m) to voice: 1 customers, 1 messages" in timeline
    assert "escalation step 2 (after 45m) to manual_callback: 1 customers, cases M" in timeline
    for lang in ("en", "zh-CN"):
        report = ws.run("report", incident_id[-6:], "--lang", lang).stdout
        assert ("escalated to the next channel" if lang == "en" else "升级至下一渠道") in report
    assert "+8613800138000" not in timeline
    ws.run("verify", incident_id[-6:])
    store.close()


def test_deliver_applies_due_escalations_and_sends_them(ws: Workspace, prism: PrismServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A drill escalates too, within its own audience."""
    store, incident_id, _ = undelivered_sms(ws, prism, monkeypatch, "--drill")
    ws.freeze(T0 + timedelta(minutes=5))
    ws.run("deliver")
    assert len(rows(store, incident_id)) == 2
    ws.freeze(T0 + timedelta(minutes=20))
    out = ws.run("--json", "deliver")
    assert "escalation step 1 (after 15m) → voice: 1 customers, 1 messages" in out.stderr
    assert [(r.recipient_ref, r.channel, r.state) for r in rows(store, incident_id)] == [
        ("D1", "sms", "sent"), ("D2", "sms", "sent"), ("D1", "voice", "sent")]
    assert json.loads(out.stdout)["sent"] == 1
    store.close()


def test_watch_escalates_each_round(ws: Workspace, prism: PrismServer,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store, incident_id, _ = undelivered_sms(ws, prism, monkeypatch)
    ws.freeze(T0 + timedelta(minutes=16))
    first = ws.json("watch", "--once")
    assert first["escalated"] == [f"{incident_id}: escalation step 1 (after 15m) → voice: "
                                  "1 customers, 1 messages, 0 call-back cases"]
    assert [(r.channel, r.state) for r in rows(store, incident_id)][2] == ("voice", "sent")
    assert ws.json("watch", "--once")["escalated"] == []
    store.close()


def test_receipts_serve_escalates_on_its_timer(ws: Workspace, prism: PrismServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The server runs on the system clock: T0 is long past, the first step is due."""
    from test_receipts_serve import PUBLIC, Server

    store, incident_id, _ = undelivered_sms(ws, prism, monkeypatch)
    ws.configure(lambda cfg: cfg["receipts"].update(public_url=PUBLIC, escalate_every="1s")
                 if cfg.get("receipts") else cfg.update(
                     receipts={"public_url": PUBLIC, "escalate_every": "1s"}))
    server = Server(ws)
    try:
        deadline = time.monotonic() + 30
        while len(rows(store, incident_id)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        # both steps are due on the system clock: the call is placed, then (unconfirmed,
        # 45 minutes after the SMS) the call-back case is logged
        while time.monotonic() < deadline and not callbacks(ws, incident_id):
            time.sleep(0.2)
    finally:
        assert server.stop() == 0
    assert [(r.channel, r.state) for r in rows(store, incident_id)][2] == ("voice", "sent")
    assert callbacks(ws, incident_id) == [("C1", True)]
    ws.run("verify", incident_id[-6:])
    store.close()


def test_the_readme_example_is_a_valid_playbook_section(ws: Workspace) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("#### Escalation", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = ws.root / "playbooks" / "typhoon.yaml"
    book = parse_playbook(path.read_text(encoding="utf-8") + example, source=str(path))
    assert [(s.after, s.unless, s.from_, s.to) for s in book.escalation] == [
        (timedelta(minutes=15), ["delivered", "answered"], "sms", "voice"),
        (timedelta(minutes=45), ["delivered"], None, "manual_callback")]


@pytest.mark.parametrize(("text", "field"), [
    ("escalation:\n  - {after: 15m, from: sms, to: sms}\n", "escalation.0"),
    ("escalation:\n  - {after: 45m, to: manual_callback}\n  - {after: 50m, to: voice}\n",
     "escalation"),
    ("escalation:\n  - {after: 15m, unless: read, to: voice}\n", "escalation.0.unless"),
])
def test_bad_escalation_steps_are_refused_naming_the_field(ws: Workspace, text: str,
                                                           field: str) -> None:
    path = ws.root / "playbooks" / "typhoon.yaml"
    with pytest.raises(PlaybookInvalid) as caught:
        parse_playbook(path.read_text(encoding="utf-8") + text, source=str(path))
    assert any(field in line for line in caught.value.lines()), caught.value.lines()
