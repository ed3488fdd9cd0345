"""Customer replies (issue 15 items 1-3) through a real `incident receipts serve` process:
signed inbound SMS and key presses are matched by number to the customer's most recent
incident, each keyword of each language makes the right record, bad signatures record
nothing, unknown numbers stay unmatched, and a flood from one number is acknowledged once."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select
from test_receipts_serve import PUBLIC, TOKEN, Server
from twilio.request_validator import RequestValidator

from cli_fixtures import Workspace
from incident.store import Store
from incident.store import schema as sc

OUR_NUMBER = "+15005550006"
CUSTOMERS = {  # ref: (phone, language, priority)
    "c1": ("+8613800138001", "zh-CN", "urgent"),
    "c2": ("+85291230002", "zh-HK", "normal"),
    "c3": ("+447911123003", "en", "normal"),
}
UNKNOWN = "+8613900000099"


class Replies(Server):
    """The receipts server, posting to its inbound and keypad paths."""

    def __init__(self, ws: Workspace) -> None:
        super().__init__(ws)
        self.base = self.url.removesuffix("/twilio/status")
        self.sent = 0

    def send(self, path: str, form: dict[str, str], *, signature: str | None = None
             ) -> tuple[int, str]:
        sign = RequestValidator(TOKEN).compute_signature(PUBLIC + path, form)
        request = urllib.request.Request(
            self.base + path, data=urlencode(form).encode(),
            headers={"X-Twilio-Signature": sign if signature is None else signature,
                     "Content-Type": "application/x-www-form-urlencoded"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return int(answer.status), answer.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), ""

    def sms(self, number: str, body: str, sid: str | None = None,
            signature: str | None = None) -> int:
        self.sent += 1
        form = {"MessageSid": sid or f"SMin{self.sent:06d}", "AccountSid": "AC1",
                "From": number, "To": OUR_NUMBER, "Body": body}
        return self.send("/twilio/inbound", form, signature=signature)[0]


@pytest.fixture
def served(ws: Workspace) -> Iterator[tuple[Replies, Workspace, str]]:
    ws.configure(lambda cfg: cfg.update(receipts={"public_url": PUBLIC}))
    ws.write_customers([f"{ref},Name {ref},{ref}@example.com,{phone},{lang},retail,guangdong,"
                        f"gd-sz,savings,{priority}"
                        for ref, (phone, lang, priority) in CUSTOMERS.items()])
    incident_id = ws.json("start", "core-banking-outage", "--title", "Core down")["id"]
    server = Replies(ws)
    try:
        yield server, ws, incident_id
    finally:
        server.stop()


def replies(ws: Workspace) -> list[Any]:
    store = Store.open(ws.db)
    try:
        with store.read() as conn:
            return list(conn.execute(select(sc.replies).order_by(sc.replies.c.id)).all())
    finally:
        store.close()


def acks(ws: Workspace, incident_id: str) -> list[Any]:
    """The acknowledgement outbox rows: SMS rows of reply events."""
    store = Store.open(ws.db)
    try:
        with store.read() as conn:
            seqs = select(sc.events.c.seq).where(sc.events.c.incident_id == incident_id,
                                                 sc.events.c.type == "reply_received")
            return list(conn.execute(select(sc.outbox).where(
                sc.outbox.c.incident_id == incident_id,
                sc.outbox.c.notice_seq.in_(seqs))).all())
    finally:
        store.close()


@pytest.mark.parametrize(("ref", "body", "kind"), [
    ("c1", "1", "callback"), ("c1", "回电", "callback"), ("c1", "退订", "stop"),
    ("c1", "TD", "stop"), ("c1", "我的工资转账失败了", "text"),
    ("c2", "1", "callback"), ("c2", "回電", "callback"), ("c2", "取消", "stop"),
    ("c2", "我要查詢戶口", "text"),
    ("c3", "CALL", "callback"), ("c3", " call. ", "callback"), ("c3", "STOP", "stop"),
    ("c3", "my salary transfer failed", "text"),
])
def test_each_keyword_makes_its_record(served: tuple[Replies, Workspace, str], ref: str,
                                       body: str, kind: str) -> None:
    server, ws, incident_id = served
    phone = CUSTOMERS[ref][0]
    assert server.sms(phone, body) == 200
    [kept] = replies(ws)
    assert (kept.kind, kept.incident_id, kept.recipient_ref) == (kind, incident_id, ref)
    cases = ws.json("manual", "list", incident_id[-6:])
    listed = ws.json("optout", "list")
    if kind == "stop":
        assert kept.case_id is None and listed["suppressed"] == 1
        assert acks(ws, incident_id) == []  # no SMS to a number that just opted out
    else:
        assert listed["suppressed"] == 0
        [case] = [c for c in cases["cases"] if c["case"] == kept.case_id]
        assert case["urgent"] is (CUSTOMERS[ref][2] == "urgent")
        assert body.strip(" .") in case["request"]
        [ack] = acks(ws, incident_id)
        assert (ack.channel, ack.address, ack.language) == ("sms", phone, CUSTOMERS[ref][1])
    timeline = ws.run("timeline", incident_id[-6:]).output
    assert "reply_received" in timeline or "reply" in timeline.lower()
    assert phone not in timeline and phone not in ws.run("replies", incident_id[-6:]).output


def test_bad_signatures_duplicates_and_unknown_numbers(
        served: tuple[Replies, Workspace, str]) -> None:
    server, ws, incident_id = served
    phone = CUSTOMERS["c3"][0]
    assert server.sms(phone, "CALL", signature="bm90IGEgc2lnbmF0dXJl") == 403
    assert server.sms(phone, "CALL", signature="") == 403
    assert replies(ws) == []
    assert server.sms(phone, "CALL", sid="SMdup") == 200
    assert server.sms(phone, "CALL", sid="SMdup") == 200  # Twilio retried: kept once
    assert len(replies(ws)) == 1
    assert server.sms(UNKNOWN, "hello?") == 200
    unmatched = replies(ws)[-1]
    assert (unmatched.incident_id, unmatched.recipient_ref, unmatched.case_id) == (
        None, None, None)
    shown = ws.json("replies")
    assert [r["incident"] for r in shown["replies"]] == [incident_id, None]
    assert UNKNOWN not in ws.run("replies").output
    assert len(ws.json("manual", "list", incident_id[-6:])["cases"]) == 1


def test_a_flood_from_one_number_is_acknowledged_once_by_two_servers(
        served: tuple[Replies, Workspace, str]) -> None:
    server, ws, incident_id = served
    other = Replies(ws)
    loop, chatty = CUSTOMERS["c2"][0], CUSTOMERS["c3"][0]
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            # A reply loop: the same text 1,000 times, to two servers at once.
            codes = list(pool.map(
                lambda n: (server if n % 2 else other).sms(loop, "1", sid=f"SMloop{n:04d}"),
                range(1000)))
            # Different texts at once: each is a case, still one acknowledgement.
            codes += list(pool.map(
                lambda n: (server if n % 2 else other).sms(chatty, f"question {n}",
                                                           sid=f"SMtext{n:04d}"), range(30)))
    finally:
        other.stop()
    assert codes.count(200) == 1030, {c: codes.count(c) for c in set(codes)}
    kept = replies(ws)
    assert len(kept) == 1030 and {r.incident_id for r in kept} == {incident_id}
    assert sorted(a.recipient_ref for a in acks(ws, incident_id)) == ["c2", "c3"]
    cases = ws.json("manual", "list", incident_id[-6:])["cases"]
    assert [c["customer"] for c in cases].count("c2") == 1
    assert [c["customer"] for c in cases].count("c3") == 30
    shown = ws.json("replies", incident_id[-6:])["replies"]
    assert len(shown) == 1030


def test_a_key_press_in_a_call_is_a_call_back(served: tuple[Replies, Workspace, str]) -> None:
    server, ws, incident_id = served
    form = {"CallSid": "CA0001", "AccountSid": "AC1", "From": OUR_NUMBER,
            "To": CUSTOMERS["c1"][0], "Digits": "1"}
    assert server.send("/twilio/voice/gather", form, signature="x")[0] == 403
    status, twiml = server.send("/twilio/voice/gather", form)
    assert status == 200 and "<Response" in twiml
    [kept] = replies(ws)
    assert (kept.source, kept.kind, kept.recipient_ref) == ("keypad", "callback", "c1")
    [case] = ws.json("manual", "list", incident_id[-6:])["cases"]
    assert case["urgent"] is True and case["case"] == kept.case_id


@pytest.mark.parametrize(("lang", "prompt"), [("zh-CN", "请按1"), ("zh-HK", "請按1"),
                                              ("en", "press 1")])
def test_calls_end_with_a_one_digit_gather_when_replies_are_taken(lang: str,
                                                                  prompt: str) -> None:
    import xml.etree.ElementTree as ET

    from incident.channels.base import MessageRef, VoiceOut
    from incident.channels.twiml import PRESS_ONE, twiml

    ref = MessageRef(incident_id="INC-1", notice_seq=1, channel="voice", message_id="m1",
                     idempotency_key="k1")
    plain = VoiceOut(ref=ref, to="+8613800138001", script="通知", voice="alice", language="en")
    assert ET.fromstring(twiml(plain)).find("Gather") is None
    asking = VoiceOut(ref=ref, to="+8613800138001", script="通知", voice="alice",
                      language="en", gather_url=PUBLIC + "/twilio/voice/gather",
                      gather_prompt=PRESS_ONE[lang])
    root = ET.fromstring(twiml(asking))
    gather = root[-1]
    assert gather.tag == "Gather" and gather.get("numDigits") == "1"
    assert gather.get("action") == PUBLIC + "/twilio/voice/gather"
    assert prompt in "".join(gather.itertext())


def test_acknowledgements_are_not_counted_as_customer_notices(
        served: tuple[Replies, Workspace, str]) -> None:
    server, ws, incident_id = served
    short = incident_id[-6:]
    before = ws.json("status", short)
    reach = reach_figures(ws, short)
    with ThreadPoolExecutor(max_workers=4) as pool:  # a flood: 60 replies, 3 acknowledged
        codes = list(pool.map(lambda n: server.sms(CUSTOMERS[f"c{n % 3 + 1}"][0],
                                                   f"question {n}", sid=f"SMq{n:03d}"),
                              range(60)))
    assert codes == [200] * 60
    ws.run("deliver", short)
    sent = acks(ws, incident_id)
    assert len(sent) == 3 and {a.state for a in sent} == {"sent"}
    after = ws.json("status", short)
    for key in ("deliveries", "deliveries_by_channel", "internal_deliveries"):
        assert after[key] == before[key], key
    assert reach_figures(ws, short) == reach
    # An acknowledgement the provider refused is no failed customer notice either.
    store = Store.open(ws.db)
    try:
        with store.write() as conn:
            conn.execute(sc.outbox.update().where(sc.outbox.c.id.in_([a.id for a in sent]))
                         .values(state="failed", error_code="21610", last_error="refused"))
    finally:
        store.close()
    assert ws.json("status", short)["deliveries"] == before["deliveries"]
    assert ws.json("failed", short)["deliveries"] == []


def reach_figures(ws: Workspace, short: str) -> tuple[Any, ...]:
    """The report's reach and accepted figures (JSON)."""
    principles = ws.json("report", short, "--format", "json")["principles"]
    minimal = principles["minimal_impact"]["figures"]
    return (principles["fast_response"]["figures"]["reach"], minimal["customers_reached"],
            minimal["urgent"], principles["transparency"]["figures"]["notices"])
