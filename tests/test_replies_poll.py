"""`incident receipts poll` also lists the messages sent to our number (GET …/Messages.json
?To=…&DateSent>=…) and records each inbound one as a reply, once however often it is listed:
against the fake (replies it scripts) and Prism (every request valid)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from test_channel_sms import PRISM_VIOLATIONS, prism_log_since
from test_receipts_poll import ACCOUNT, TOKEN, fake  # noqa: F401 (the fixture)

from cli_fixtures import Workspace
from fake_twilio import FakeTwilio
from incident.store import Store
from incident.store import schema as sc
from servers import PrismServer

OURS = "+15005550006"  # Workspace.use_twilio's from_number
CUSTOMER = "+8613800138001"


def inbound(sid: str, sender: str, body: str, direction: str = "inbound") -> dict[str, object]:
    return {"sid": sid, "account_sid": ACCOUNT, "from": sender, "to": OURS, "body": body,
            "direction": direction, "status": "received",
            "date_sent": "Sat, 05 Dec 2026 06:00:00 +0000", "num_segments": "1"}


def kept(ws: Workspace) -> list[tuple[str, str, str | None]]:
    store = Store.open(ws.db)
    try:
        with store.read() as conn:
            return [(r.provider_ref, r.kind, r.recipient_ref) for r in conn.execute(
                select(sc.replies).order_by(sc.replies.c.id))]
    finally:
        store.close()


def test_poll_records_inbound_messages_once(ws: Workspace, fake: FakeTwilio,  # noqa: F811
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    ws.use_twilio(fake.url)
    ws.write_customers([f"c1,Li Lei,li@example.com,{CUSTOMER},zh-CN,retail,guangdong,gd-sz,"
                        "savings,normal"])
    ws.json("start", "core-banking-outage", "--title", "Core down")
    fake.inbound = [inbound("SMr1", CUSTOMER, "回电"), inbound("SMr2", "+8613900000099", "hi"),
                    inbound("SMout", OURS, "a notice", direction="outbound-api")]
    for _ in range(2):
        out = ws.json("receipts", "poll", "--until", "2s")
        assert out["replies"] == 2, out
    assert kept(ws) == [("SMr1", "callback", "c1"), ("SMr2", "text", None)]
    assert fake.listed and all(q.get("To") == OURS and "DateSent>" in q for q in fake.listed)


def test_poll_lists_inbound_messages_with_valid_requests(
        ws: Workspace, prism: PrismServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    ws.use_twilio(prism.url)
    offset = prism.log_path.stat().st_size
    out = ws.json("receipts", "poll", "--until", "2s")
    log = prism_log_since(prism.log_path, offset, expected_passes=1)
    assert [marker for marker in PRISM_VIOLATIONS if marker in log] == [], log
    assert f"get /2010-04-01/Accounts/{ACCOUNT}/Messages.json" in log.lower() or \
        "Messages.json" in log, log
    assert out["errors"] == [], out
