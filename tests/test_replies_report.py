"""The replies section of the post-mortem report (issue 15 item 6, under minimal impact):
replies by kind (unmatched ones not counted), call-back cases made and closed, time from the
reply to its call-back case closed (median, p90), acknowledgements recorded and sent; in JSON,
Markdown (zh-CN, en) and HTML. Replies are received in-process on a frozen clock, as the
receipts server's route receives them (`Response.receive_reply`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cli_fixtures import Workspace
from incident.inbound.replies import InboundReply
from incident.response import Response
from incident.settings import load_runtime

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
PHONES = {"c1": "+8613800138001", "c2": "+85291230002", "c3": "+447911123003"}


def test_report_has_the_replies_section(ws: Workspace) -> None:
    ws.write_customers([f"{ref},Name {ref},{ref}@example.com,{phone},en,retail,guangdong,"
                        f"gd-sz,savings,normal" for ref, phone in PHONES.items()])
    ws.freeze(T0)
    short = ws.json("start", "core-banking-outage", "--title", "Core down")["id"][-6:]
    assert "replies" not in ws.run("report", short, "--lang", "en").stdout.lower()
    assert ws.json("report", short, "--format", "json")["principles"]["minimal_impact"][
        "figures"]["replies"] is None
    ws.freeze(T0 + timedelta(minutes=1))
    assert ws.clock is not None
    response = Response(load_runtime(str(ws.config), db=ws.db, operator="receipts-server",
                                     clock=ws.clock))
    for n, (number, body) in enumerate([
            (PHONES["c1"], "1"), (PHONES["c2"], "回电"), (PHONES["c3"], "STOP"),
            (PHONES["c1"], "my salary transfer failed"), (PHONES["c1"], "1"),
            ("+8613900000099", "1")]):  # the last: of no customer, not counted
        response.receive_reply(InboundReply(sid=f"SM{n}", number=number, to_number=None,
                                            body=body, at=T0 + timedelta(minutes=1)))
    ws.run("deliver", short)  # the two acknowledgements (c1, c2; none after a STOP)
    cases = {c["customer"]: c["case"] for c in ws.json("manual", "list", short)["cases"]
             if c["request"].startswith("Call back")}
    ws.freeze(T0 + timedelta(minutes=11))
    ws.run("manual", "reconcile", short, cases["c1"], "--note", "called back")
    ws.freeze(T0 + timedelta(minutes=31))
    ws.run("manual", "reconcile", short, cases["c2"], "--note", "called back")

    figures = ws.json("report", short, "--format", "json")["principles"]["minimal_impact"][
        "figures"]["replies"]
    assert figures == {
        "received": 5, "by_kind": {"callback": 3, "stop": 1, "text": 1},
        "callback_cases": 2, "callback_cases_closed": 2,
        "reply_to_callback_closed_s": {"median": 600, "p90": 1800},
        "acknowledgements": {"recorded": 2, "sent": 2}}
    english = ws.run("report", short, "--lang", "en").stdout
    assert "### Customer replies" in english
    assert "| Asked for a call back | 3 |" in english
    assert "| Call-back cases made / closed | 2 / 2 |" in english
    assert "| Reply to call-back case closed (p90) | 30m |" in english
    assert "| Acknowledgements recorded / sent | 2 / 2 |" in english
    chinese = ws.run("report", short).stdout
    assert "### 客户回复" in chinese and "| 要求回电 | 3 |" in chinese
    html = ws.run("report", short, "--format", "html", "--lang", "en").stdout
    assert "<h3>Customer replies</h3>" in html and "Opted out (STOP)" in html
    for phone in PHONES.values():
        assert phone not in english + chinese + html


def test_every_event_type_has_a_report_label() -> None:
    from incident.models import EventType
    from incident.report.labels import LABELS

    for lang, words in LABELS.items():
        assert [t.value for t in EventType if t.value not in words["event_types"]] == [], lang
