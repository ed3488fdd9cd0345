"""Opt-outs (issue 14 item 5): Twilio 21610, an opted-out receipt or an operator put a number
on the suppression list; later notices skip it on SMS (status and failed say so) unless the
incident overrides the list, recorded as an event; STOP keywords are recognised."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from test_receipts_poll import ACCOUNT, TOKEN, fake  # noqa: F401 (the fixture)

from cli_fixtures import Workspace
from fake_twilio import FakeTwilio
from incident.inbound.optout import STOP_KEYWORDS, is_stop
from incident.models import ReceiptState
from incident.store import Store
from incident.store import receipts as rc
from incident.store import schema as sc

UNSUBSCRIBED = "+15005550004"  # the fake answers 21610, as Twilio's magic number does
REACHABLE = "+8613800138001"
KEYWORDS = STOP_KEYWORDS


@pytest.mark.parametrize(("body", "stop"), [
    ("STOP", True), ("stop", True), (" Stop. ", True), ("ＳＴＯＰ", True), ("StopAll", True),
    ("UNSUBSCRIBE", True), ("cancel", True), ("END", True), ("quit!", True),
    ("退订", True), ("退订！", True), ("TD", True), ("td", True), ("取消", True), ("停止。", True),
    ("please don't stop", False), ("TD bank", False), ("退订了吗?", False), ("", False),
    ("STOPP", False), ("yes", False),
])
def test_stop_keywords_are_the_whole_message(body: str, stop: bool) -> None:
    assert is_stop(body, KEYWORDS) is stop


def test_configured_keywords_replace_the_defaults() -> None:
    assert is_stop("arrêt", ["ARRÊT"]) and not is_stop("STOP", ["ARRÊT"])
    assert not is_stop("", [""]) and not is_stop("!", ["STOP", " "])


def _twilio(ws: Workspace, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    ws.use_twilio(url)
    ws.write_customers([
        f"c1,Li Lei,li@example.com,{UNSUBSCRIBED},en,retail,guangdong,gd-sz,savings,normal",
        f"c2,Wang Fang,wang@example.com,{REACHABLE},en,retail,guangdong,gd-sz,savings,normal"])


def _texted(twilio: FakeTwilio, number: str) -> int:
    return sum(1 for r in twilio.recorded() if r.method == "POST" and r.form.get("To") == number)


def test_a_21610_lists_the_number_and_later_incidents_skip_it_until_overridden(
        ws: Workspace, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    _twilio(ws, fake.url, monkeypatch)
    first = ws.json("start", "core-banking-outage", "--title", "Core down", code=3)
    assert _texted(fake, UNSUBSCRIBED) == 1
    listed = ws.json("optout", "list")
    assert listed["suppressed"] == 1
    [entry] = listed["numbers"]
    assert entry["source"] == "sms 21610" and entry["number"] != UNSUBSCRIBED  # masked

    second = ws.json("start", "core-banking-outage", "--title", "Core down again")
    assert _texted(fake, UNSUBSCRIBED) == 1, "a suppressed number is never texted again"
    status = ws.json("status", second["id"])
    assert status["deliveries"]["skipped"] == 1
    assert status["deliveries_by_channel"]["sms"]["skipped"] == 1
    assert "1 skipped: the number opted out" in ws.run("status", second["id"]).stdout
    failed = ws.json("failed", second["id"])
    [row] = failed["deliveries"]
    assert (row["state"], row["code"], row["customer"]) == ("skipped", "opted_out", "c1")
    assert UNSUBSCRIBED not in ws.run("failed", second["id"]).stdout

    done = ws.json("optout", "override", second["id"], "--reason", "regulatory notice")
    assert done["requeued"] == 1
    timeline = ws.run("timeline", second["id"]).stdout
    assert "opt-outs overridden" in timeline and "regulatory notice" in timeline
    ws.run("deliver", second["id"], code=None)
    assert _texted(fake, UNSUBSCRIBED) == 2, "the override sends the obligation"
    # The first incident skipped nothing (the number was listed during it).
    assert "skipped" not in ws.json("status", first["id"])["deliveries"]


def test_an_operator_lists_a_number_and_the_next_update_skips_it_until_removed(
        ws: Workspace, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    _twilio(ws, fake.url, monkeypatch)
    started = ws.json("start", "core-banking-outage", "--title", "Core down", code=3)
    assert _texted(fake, REACHABLE) == 1
    added = ws.json("optout", "add", "+86 138 0013 8001", "--reason", "asked at a branch")
    assert added["changed"] is True and REACHABLE not in str(added)
    assert ws.json("optout", "add", REACHABLE, "--reason", "again")["changed"] is False
    [entry] = [n for n in ws.json("optout", "list")["numbers"] if n["source"] == "operator"]
    assert entry["by"] == ws.operator and entry["reason"] == "asked at a branch"

    ws.run("update", started["id"], "--message", "Still down", code=None)
    assert _texted(fake, REACHABLE) == 1, "the copied row of the later notice is skipped"
    assert ws.json("status", started["id"])["deliveries_by_channel"]["sms"]["skipped"] == 1

    assert ws.json("optout", "remove", REACHABLE)["changed"] is True
    assert ws.json("optout", "remove", REACHABLE)["changed"] is False
    ws.run("update", started["id"], "--message", "Nearly fixed", code=None)
    assert _texted(fake, REACHABLE) == 2


@pytest.mark.parametrize("phone", ["12345", "not-a-number"])
def test_an_invalid_number_is_refused_naming_the_field(ws: Workspace, phone: str) -> None:
    result = ws.run("optout", "add", phone, "--reason", "x", code=2)
    assert "phone" in result.stderr and "Traceback" not in result.stderr


def test_an_opted_out_receipt_lists_the_number(
        ws: Workspace, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    _twilio(ws, fake.url, monkeypatch)
    ws.json("start", "core-banking-outage", "--title", "Core down", code=3)
    store = Store.open(ws.db)
    try:
        with store.read() as conn:
            sid = conn.execute(sc.outbox.select().where(
                sc.outbox.c.channel == "sms", sc.outbox.c.address == REACHABLE)).first()
        assert sid is not None and sid.provider_ref
        with store.write() as conn:
            rc.record(conn, [rc.Receipt(state=ReceiptState.OPTED_OUT, status="undelivered",
                                        code="21610", provider_at=datetime.now(UTC),
                                        source="callback", provider_ref=sid.provider_ref)],
                      now=datetime.now(UTC))
    finally:
        store.close()
    assert {n["source"] for n in ws.json("optout", "list")["numbers"]} == {
        "sms 21610", "sms callback"}


def test_the_report_counts_skipped_messages_apart_and_names_the_override(
        ws: Workspace, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    _twilio(ws, fake.url, monkeypatch)
    ws.run("optout", "add", UNSUBSCRIBED, "--reason", "asked by phone")
    started = ws.json("start", "core-banking-outage", "--title", "Core down")
    report = ws.json("report", started["id"], "--format", "json")
    x = report["principles"]["transparency"]["figures"]
    assert x["opted_out_skipped"] == {"sms": 1}
    assert x["notices"][0]["pending"] == 0, "a skipped message is not waiting to be sent"
    ws.run("optout", "override", started["id"], "--reason", "regulatory notice")
    for lang in ("en", "zh-CN"):
        shown = ws.run("report", started["id"], "--lang", lang).stdout
        assert "regulatory notice" in shown and UNSUBSCRIBED not in shown


def test_enqueue_skips_customers_sms_and_voice_to_listed_numbers_only(db_url: str) -> None:
    from incident.models import EventType
    from incident.payloads import Declared
    from incident.store import optouts
    from incident.store import outbox as ob

    now = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    store = Store.open(db_url)
    try:
        with store.write() as conn:
            incident_id = store.create_incident(conn, playbook_id="p", title="t", drill=False,
                                                at=now)
            store.append(conn, incident_id, EventType.DECLARED, actor="a", at=now,
                         data=Declared(title="t", playbook={}, severity="P3",
                                       detected_at=now.isoformat()))
            assert optouts.add(conn, UNSUBSCRIBED, source="operator", now=now)
            rows = [(ref, channel, address) for ref, address in (
                ("c1", UNSUBSCRIBED), ("c2", REACHABLE), ("party:it", UNSUBSCRIBED))
                for channel in ("sms", "voice", "email")]
            ob.enqueue(conn, [{"incident_id": incident_id, "notice_seq": 1, "channel": channel,
                               "recipient_ref": ref, "recipient_name": "", "address": address,
                               "language": "en", "priority": 1, "message_id": f"<{ref}{channel}>",
                               "idempotency_key": ob.idempotency_key(incident_id, 1, ref,
                                                                     channel)}
                              for ref, channel, address in rows], now=now)
        with store.read() as conn:
            states = {(r.recipient_ref, r.channel): r.state
                      for r in conn.execute(sc.outbox.select())}
    finally:
        store.close()
    assert {k for k, state in states.items() if state == "skipped"} == {
        ("c1", "sms"), ("c1", "voice")}
    assert len(states) == 9
