"""Receipts end to end: SMS sent through Twilio (the fake) carry the status callback, `receipts
poll` settles them, and `status`, `failed`, `timeline` and the report show the states."""

from __future__ import annotations

import pytest
from test_receipts_poll import ACCOUNT, TOKEN, fake  # noqa: F401 (the fixture)

from cli_fixtures import Workspace
from fake_twilio import FakeTwilio
from incident.store import Store
from incident.store import schema as sc


def test_states_after_acceptance_are_shown_everywhere(
        ws: Workspace, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    ws.use_twilio(fake.url)
    ws.configure(lambda cfg: cfg.update(receipts={
        "public_url": "https://notify.example.com", "poll_rate": 50, "poll_every": "1s"}))
    started = ws.json("start", "core-banking-outage", "--title", "Core down")
    created = [r for r in fake.recorded() if r.method == "POST" and r.sid]
    assert created and {r.form["StatusCallback"] for r in created} == {
        "https://notify.example.com/twilio/status"}
    store = Store.open(ws.db)
    with store.read() as conn:
        sids = [r.provider_ref for r in conn.execute(sc.outbox.select().where(
            sc.outbox.c.channel == "sms", sc.outbox.c.state == "sent",
            ~sc.outbox.c.recipient_ref.like("party:%")).order_by(sc.outbox.c.id))]
    store.close()
    assert len(sids) >= 2
    fake.walks = {sid: [("sent", None), ("delivered", None)] for sid in sids}
    fake.walks[sids[0]] = [("undelivered", 30003)]
    ws.json("receipts", "poll", "--until", "30s")

    status = ws.json("status", started["id"])
    assert status["receipts"] == {"delivered": len(sids) - 1, "undelivered": 1}
    assert "undelivered" in ws.run("status", started["id"]).stdout
    failed = ws.json("failed", started["id"])
    assert failed["by_state"].get("undelivered") == 1
    [row] = [d for d in failed["deliveries"] if d["state"] == "undelivered"]
    assert row["code"] == "30003" and "*" in row["to"]  # masked
    timeline = ws.json("timeline", started["id"])
    assert {(r["state"], r["source"]) for r in timeline["receipts"]} == {
        ("accepted", "poll"), ("delivered", "poll"), ("undelivered", "poll")}
    report = ws.json("report", started["id"], "--format", "json")
    figures = report["principles"]["transparency"]["figures"]
    assert figures["receipts"] == {"sms": {"delivered": len(sids) - 1, "undelivered": 1}}
    assert "undelivered" in ws.run("report", started["id"]).stdout
