"""Confirmed reach in the report (issue 14 item 7): next to accepted, per channel and across
channels, with time to 50/95 % confirmed, undelivered by reason and the customers never
reached; the transparency verdict judges confirmed reach once receipts exist."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_receipts_poll import ACCOUNT, TOKEN, fake  # noqa: F401 (the fixture)

from cli_fixtures import Workspace
from fake_twilio import FakeTwilio
from incident.models import ReceiptState
from incident.store import Store
from incident.store import receipts as rc
from incident.store import schema as sc

AT = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def _start(ws: Workspace, url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    ws.use_twilio(url)
    ws.write_customers([f"c{n},Li {n},,+861380013800{n},en,retail,guangdong,gd-sz,savings,normal"
                        for n in range(1, 5)])
    ws.freeze(AT)
    return str(ws.json("start", "core-banking-outage", "--title", "Core down")["id"])


def _record(ws: Workspace, receipts: dict[str, tuple[ReceiptState, str | None, int]]) -> None:
    """Receipts for customers' SMS: customer -> (state, code, seconds after the notice)."""
    store = Store.open(ws.db)
    try:
        with store.read() as conn:
            sids = {r.recipient_ref: r.provider_ref for r in conn.execute(
                sc.outbox.select().where(sc.outbox.c.channel == "sms"))}
        with store.write() as conn:
            rc.record(conn, [rc.Receipt(state=state, status=state.value, code=code,
                                        provider_at=AT + timedelta(seconds=after),
                                        source="callback", provider_ref=sids[customer])
                             for customer, (state, code, after) in receipts.items()],
                      now=AT + timedelta(minutes=5))
    finally:
        store.close()


def _transparency(ws: Workspace, incident_id: str) -> dict[str, Any]:
    return dict(ws.json("report", incident_id, "--format", "json")["principles"]["transparency"])


def test_the_report_shows_confirmed_reach_next_to_accepted(
        ws: Workspace, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    incident_id = _start(ws, fake.url, monkeypatch)
    _record(ws, {"c1": (ReceiptState.DELIVERED, None, 60),
                 "c2": (ReceiptState.DELIVERED, None, 120),
                 "c3": (ReceiptState.UNDELIVERED, "30003", 30)})  # c4: accepted, no receipt

    transparency = _transparency(ws, incident_id)
    x = transparency["figures"]
    assert x["basis"] == "confirmed"
    assert x["reached_share"] == 1.0 and x["confirmed_share"] == 0.5
    assert x["confirmed_reach"]["customers"] == {"audience": 4, "reached": 2, "p50_s": 120,
                                                 "p95_s": None, "p100_s": None}
    assert x["confirmed_reach"]["sms"]["reached"] == 2
    assert x["undelivered"] == [{"channel": "sms", "state": "undelivered", "code": "30003",
                                 "count": 1}]
    assert x["never_reached"] == {"count": 2, "customers": ["c3", "c4"]}
    [check] = [c for c in transparency["checks"] if c["id"] == "customers_reached"]
    assert (check["passed"], check["value"]) == (False, 2)
    assert transparency["verdict"] != "met"

    status = ws.json("status", incident_id)
    assert status["reach_by_channel"] == {"sms": {"accepted": 4, "confirmed": 2}}
    assert "sms: 2 confirmed of 4 accepted" in ws.run("status", incident_id).stdout

    for fmt in ("md", "html"):
        shown = ws.run("report", incident_id, "--format", fmt, "--lang", "en").stdout
        assert "Confirmed reach of the first notice" in shown and "30003" in shown
        assert "Customers never reached" in shown
        assert "+8613800138003" not in shown


def test_without_receipts_the_verdict_stays_on_accepted_reach(
        ws: Workspace, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    incident_id = _start(ws, fake.url, monkeypatch)
    transparency = _transparency(ws, incident_id)
    x = transparency["figures"]
    assert x["basis"] == "accepted" and x["confirmed_reach"] is None
    assert x["never_reached"] == {"count": 0, "customers": []}
    [check] = [c for c in transparency["checks"] if c["id"] == "customers_reached"]
    assert check["passed"] is None


def test_when_every_customer_is_confirmed_the_check_passes(
        ws: Workspace, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    incident_id = _start(ws, fake.url, monkeypatch)
    _record(ws, {f"c{n}": (ReceiptState.DELIVERED, None, 10 * n) for n in range(1, 5)})
    transparency = _transparency(ws, incident_id)
    x = transparency["figures"]
    assert x["confirmed_reach"]["customers"] == {"audience": 4, "reached": 4, "p50_s": 20,
                                                 "p95_s": 40, "p100_s": 40}
    [check] = [c for c in transparency["checks"] if c["id"] == "customers_reached"]
    assert check["passed"] is True
