"""Staff answers to an open roll-call through a real `incident receipts serve` process (issue 15
items 3-4 joined): a signed SMS "1", "3" or a full-width "２" from a staff member's number, or
a key pressed in a roll-call call, records the roll-call answer (a "3" queues and records the
need-help alert to the manager and the duty desk); the same MessageSid twice records once; a
staff text that is no answer is kept as a reply; a roll-call call asks for 1, 2 or 3."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from test_receipts_serve import PUBLIC
from test_replies import Replies, replies
from test_rollcall import STAFF, write_staff

from cli_fixtures import Workspace
from incident.channels.twiml import PRESS_ANSWER
from incident.store import Store
from incident.store import schema as sc

PHONE = {i: phone for i, _, _, phone, *_ in STAFF}


@pytest.fixture
def rollcall(ws: Workspace) -> Iterator[tuple[Replies, Workspace, str]]:
    """An open roll-call (file transports) and the receipts server taking replies."""
    ws.configure(lambda cfg: cfg.update(receipts={"public_url": PUBLIC}))
    ws.write_customers(["C1,Customer One,c1@example.com,+8613800138111,en,retail,hong-kong,"
                        "hk-central,savings,normal"])
    incident_id = ws.json("start", "typhoon", "--title", "Signal No. 8")["id"]
    ws.run("rollcall", "start", incident_id, "--audience", str(write_staff(ws)),
           "--every", "15m")
    server = Replies(ws)
    try:
        yield server, ws, incident_id
    finally:
        server.stop()


def events(ws: Workspace, incident_id: str, kind: str) -> list[Any]:
    store = Store.open(ws.db)
    try:
        return [e for e in store.events(incident_id) if e.type.value == kind]
    finally:
        store.close()


def alert_rows(ws: Workspace, incident_id: str, seq: int) -> list[Any]:
    store = Store.open(ws.db)
    try:
        with store.read() as conn:
            return list(conn.execute(select(sc.outbox).where(
                sc.outbox.c.incident_id == incident_id,
                sc.outbox.c.notice_seq == seq)).all())
    finally:
        store.close()


def test_staff_sms_answers_the_rollcall(rollcall: tuple[Replies, Workspace, str]) -> None:
    server, ws, incident_id = rollcall
    assert server.sms(PHONE["S1"], "1", sid="SMans1") == 200
    assert server.sms(PHONE["S1"], "1", sid="SMans1") == 200  # Twilio retried: once
    assert server.sms(PHONE["M1"], "２ 在家", sid="SMans2") == 200  # a full-width digit
    assert server.sms(PHONE["S2"], "3 水浸", sid="SMans3") == 200
    answered = events(ws, incident_id, "rollcall_answered")
    assert [(e.data["member"], e.data["answer"], e.data["via"])
            for e in answered] == [("S1", 1, "sms"), ("M1", 2, "sms"), ("S2", 3, "sms")]
    help_event = answered[-1]
    assert help_event.data["alerted"] == ["M1", "duty_desk"]
    rows = alert_rows(ws, incident_id, help_event.seq)
    assert {(r.recipient_ref, r.channel) for r in rows} >= {
        ("party:staff:M1", "sms"), ("party:staff:M1", "email"), ("party:duty_desk", "email")}
    status = ws.json("rollcall", "status", incident_id)
    assert status["total"] == {"able": 1, "unable": 1, "need_help": 1, "unanswered": 1}
    assert replies(ws) == []  # answers, not customer replies
    assert ws.json("manual", "list", incident_id[-6:])["cases"] == []


def test_staff_text_that_is_no_answer_is_kept_as_a_reply(
        rollcall: tuple[Replies, Workspace, str]) -> None:
    server, ws, incident_id = rollcall
    assert server.sms(PHONE["S3"], "where do I go?", sid="SMtext1") == 200
    assert events(ws, incident_id, "rollcall_answered") == []
    [kept] = replies(ws)
    assert (kept.provider_ref, kept.body) == ("SMtext1", "where do I go?")
    shown = ws.json("replies")["replies"]
    assert len(shown) == 1 and PHONE["S3"] not in ws.run("replies").output


def test_staff_key_press_answers_and_the_call_asks_for_it(
        rollcall: tuple[Replies, Workspace, str]) -> None:
    server, ws, incident_id = rollcall
    later = datetime.now(UTC) + timedelta(minutes=16)
    ws.freeze(later)
    assert ws.json("rollcall", "remind", incident_id)["rounds"][0]["called"] == 4
    calls = ws.outbox_files(incident_id, "xml", internal=True)
    assert len(calls) == 4
    for call in calls:
        gather = ET.fromstring(call.read_text(encoding="utf-8")).find("Gather")
        assert gather is not None and gather.get("numDigits") == "1"
        assert gather.get("action") == PUBLIC + "/twilio/voice/gather"
        assert "".join(gather.itertext()).strip() in PRESS_ANSWER.values()
    form = {"CallSid": "CArc0001", "AccountSid": "AC1", "From": "+85230000000",
            "To": PHONE["S3"], "Digits": "2"}
    assert server.send("/twilio/voice/gather", form)[0] == 200
    assert server.send("/twilio/voice/gather", form)[0] == 200  # retried: once
    [answer] = events(ws, incident_id, "rollcall_answered")
    assert (answer.data["member"], answer.data["answer"], answer.data["via"]) == (
        "S3", 2, "voice")
    assert replies(ws) == []
