"""Typed event payloads (incident/payloads.py): every event the command line records parses
into its type's model and dumps back to exactly what was stored; payloads as earlier releases
wrote them still parse; a writer's wrong key or type is refused before anything is written."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cli_fixtures import Workspace
from incident.errors import RecordInvalid
from incident.models import Event, EventType
from incident.payloads import (
    MODELS,
    Declared,
    Note,
    PartyAcked,
    Updated,
    parse_payload,
    payload_data,
    payload_of,
)
from incident.state import fold
from incident.store import Store, schema

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
CAP = Path(__file__).resolve().parent / "data" / "cap"


def _at(ws: Workspace, minutes: float) -> None:
    ws.freeze(NOW + timedelta(minutes=minutes))


def _stored(db: str) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of every event, as the JSON stored (not as the store reads it)."""
    store = Store.open(db)
    with store.read() as conn:
        rows = conn.execute(select(schema.events.c.type, schema.events.c.data)
                            .order_by(schema.events.c.id)).all()
    return [(row.type, json.loads(row.data)) for row in rows]


def _demo(ws: Workspace) -> None:
    """An incident through every command that records something."""
    _at(ws, 0)
    iid = ws.json("start", "core-banking-outage", "--title", "Core banking unavailable",
                  "--severity", "II", "--eta", "2h", "--detected-at", "10m")["id"]
    _at(ws, 5)
    ws.run("update", iid, "-m", "Failover in progress", "--message-zh", "正在切换", "--status",
           "identified", "--to", "compliance")
    ws.run("update", iid, "-m", "Re-graded", "--severity", "I", "--eta", "3h", "--internal")
    ws.run("eta", iid, "4h", "--reason", "Data checks take longer")
    ws.run("manual", "open", iid, "--hotline", "400-888-9999")
    ws.run("manual", "log", iid, "--customer", "C0042", "--request", "Cash", "--amount",
           "5000", "--urgent")
    ws.run("manual", "reconcile", iid, "M001", "--note", "entered")
    ws.run("manual", "close", iid)
    ws.run("step", iid, "engineering-triage", "--done", "--note", "DB team on it")
    ws.run("step", iid, "media-holding-statement", "--skip", "no press interest")
    ws.run("ack", iid, "compliance", "--note", "Ms Li confirmed by phone")
    _at(ws, 300)  # updates overdue: the watch alerts
    ws.run("watch", iid, "--once")
    ws.run("resolve", iid, "--message", "All services restored")
    ws.run("close", iid)
    ws.run("note", iid, "--section", "summary", "Expired certificate")
    ws.run("action", "add", iid, "Monitor the certificate", "--owner", "ops", "--due", "14d")
    ws.run("action", "done", iid, "A1", "--note", "alert set up")


def test_every_event_of_an_incident_round_trips_through_its_model(ws: Workspace) -> None:
    _demo(ws)
    ws.freeze("2026-09-14T06:00:00Z")  # every sample alert valid
    ws.json("warnings", "ingest", str(CAP / "typhoon-alert.xml"), "--start")
    ws.json("warnings", "ingest", str(CAP / "typhoon-update.xml"), "--start")

    stored = _stored(ws.db)
    for kind, data in stored:
        payload = MODELS[EventType(kind)].model_validate(data)
        assert payload_data(payload) == data, kind  # nothing added, dropped or converted
    assert {kind for kind, _ in stored} >= {
        "declared", "parties_notified", "updated", "eta_revised", "manual_opened",
        "case_logged", "case_reconciled", "manual_closed", "step_done", "step_skipped",
        "party_acked", "alerted", "resolved", "closed", "note", "action_added", "action_done"}
    warnings = [d["warning"] for _, d in stored if "warning" in d]
    assert [w["msg_type"] for w in warnings] == ["Alert", "Update"]


def test_payload_of_reads_the_typed_payload_once_per_event(ws: Workspace) -> None:
    _demo(ws)
    store = Store.open(ws.db)
    (row,) = store.incidents()
    events = store.events(row.id)
    first = payload_of(events[0])
    assert isinstance(first, Declared) and first.title == "Core banking unavailable"
    assert payload_of(events[0]) is first
    regraded = next(payload_of(e) for e in events if e.type is EventType.UPDATED
                    and e.data.get("severity"))
    assert isinstance(regraded, Updated)
    assert (regraded.severity, regraded.previous_severity, regraded.internal) == ("I", "II", True)
    assert regraded.given("eta") and not regraded.given("status")
    # A copy with other data is parsed again, not served the first event's payload.
    other = events[0].model_copy(update={"data": {**events[0].data, "title": "Other"}})
    assert isinstance(p := payload_of(other), Declared) and p.title == "Other"


# What earlier releases stored, from their writers (git show ddb9f53:incident/service.py and
# 947c8d0:incident/{service,manual,coordination,postmortem}.py): keys added since are optional.
FIRST_RELEASE_START = {
    "title": "Core banking unavailable", "playbook": {"id": "core-banking-outage"},
    "severity": "II", "drill": False, "detected_at": "2026-11-24T01:50:00+00:00",
    "eta": None, "affected": ["core banking"], "regions": [],
    "audience": {"file": "customers.csv", "rows": 12, "skipped": 0, "selected": 12},
    "notice": {"phase": "initial", "template_set": "default", "channels": ["email", "sms"],
               "context": {"en": {"incident": {"title": "Core banking unavailable"}}},
               "messages": 20, "recipients": 12}}
RELEASED = [
    ("declared", FIRST_RELEASE_START),
    ("updated", {"message": "Failover", "internal": False, "status": "identified",
                 "notice": {"phase": "update", "template_set": "default", "channels": ["email"],
                            "context": {}, "messages": 12, "recipients": 12}}),
    ("eta_revised", {"eta": "2026-11-24T05:00:00+00:00", "previous": None,
                     "reason": "Slower", "message": "Slower"}),
    ("resolved", {"message": "Restored", "resolved_at": "2026-11-24T04:00:00+00:00"}),
    ("closed", {}),
    ("closed", {"forced": True, "reason": "customer unreachable", "unreconciled": ["M002"]}),
    ("manual_opened", {"hotline": "", "hours": {"zh-CN": "全天", "en": "24h"},
                       "counters": None, "workaround": None, "steps_done": []}),
    ("manual_closed", {}),
    ("case_logged", {"case": "M001", "customer": "C1", "request": "Cash", "amount": None,
                     "urgent": False}),
    ("case_reconciled", {"case": "M001", "note": ""}),
    ("step_done", {"step": "engineering-triage"}),
    ("step_skipped", {"step": "media", "reason": "none"}),
    ("party_acked", {"party": "compliance"}),
    ("alerted", {"keys": ["update-overdue"], "alerts": ["update overdue"],
                 "message": "update overdue"}),
    ("note", {"section": "summary", "text": "x"}),
    ("action_added", {"action": "A1", "owner": "ops", "due": "2026-12-01T00:00:00+00:00",
                      "text": "x"}),
    ("action_done", {"action": "A1"}),
    ("chain_tampered", {"problems": ["event #2: content does not match its hash"]}),
    ("delivery_rerouted", {"moved": {"email": {"file": 3}}, "to": {"email": "smtp"}}),
]


@pytest.mark.parametrize(("kind", "data"), RELEASED, ids=[k for k, _ in RELEASED])
def test_payloads_as_earlier_releases_stored_them_still_parse(kind: str,
                                                              data: dict[str, Any]) -> None:
    event = Event(incident_id="INC-20261124-AAAAAA", seq=1, type=EventType(kind), at=NOW,
                  actor="duty-lead", data=data, prev_hash="", hash="")
    assert payload_data(payload_of(event)) == data


def test_a_first_release_incident_folds() -> None:
    declared = Event(incident_id="INC-20261124-AAAAAA", seq=1, type=EventType.DECLARED, at=NOW,
                     actor="duty-lead", data={**FIRST_RELEASE_START, "playbook": _playbook()},
                     prev_hash="", hash="")
    view = fold([declared])
    assert (view.title, view.severity, view.eta, view.audience["selected"]) == (
        "Core banking unavailable", "II", None, 12)
    assert [(n.phase.value, n.messages, n.recipients) for n in view.notices] == [
        ("initial", 20, 12)]


def _playbook() -> dict[str, Any]:
    from incident.playbooks import load_playbook
    from incident.resources import shipped
    book = load_playbook(shipped("playbooks") / "core-banking-outage.yaml")
    return book.model_dump(mode="json", by_alias=True)


@pytest.mark.parametrize(("data", "field"), [
    ({"message": "x", "internal": False, "colour": "red"}, "colour"),  # unknown key
    ({"message": "x", "internal": "yes"}, "internal"),  # wrong type, not coerced
    ({"message": "x", "eta": "tomorrow"}, "eta"),  # not an ISO time
    ({"internal": False}, "message"),  # missing
    ({"message": "x", "notice": {"phase": "update", "messages": "12", "recipients": 1}},
     "notice.messages"),
])
def test_a_wrong_payload_is_refused_and_nothing_is_appended(ws: Workspace, data: dict[str, Any],
                                                            field: str) -> None:
    _at(ws, 0)
    iid = ws.json("start", "core-banking-outage", "--title", "Down", "--eta", "2h")["id"]
    store = Store.open(ws.db)
    before = _stored(ws.db)
    with pytest.raises(RecordInvalid) as caught, store.write() as conn:
        store.append(conn, iid, EventType.UPDATED, actor="duty-lead", data=data, at=NOW)
    assert field in [str(loc.field) for loc, _ in caught.value.problems]
    assert "updated" in caught.value.message and caught.value.exit_code == 1
    assert _stored(ws.db) == before


def test_a_model_is_stored_as_the_keys_it_was_given(ws: Workspace) -> None:
    _at(ws, 0)
    iid = ws.json("start", "core-banking-outage", "--title", "Down", "--eta", "2h")["id"]
    store = Store.open(ws.db)
    with store.write() as conn:
        event = store.append(conn, iid, EventType.NOTE, actor="duty-lead", at=NOW,
                             data=Note(section="summary", text="typed"))
    with pytest.raises(RecordInvalid, match="cannot record a Note payload"), \
            store.write() as conn:
        store.append(conn, iid, EventType.UPDATED, actor="duty-lead", at=NOW,
                     data=Note(section="summary", text="typed"))
    assert _stored(ws.db)[-1] == ("note", {"section": "summary", "text": "typed"})
    assert payload_of(event) == Note(section="summary", text="typed")


def test_a_stored_key_no_model_knows_is_left_out_of_the_typed_view_not_fatal() -> None:
    # Written by a newer build: the incident must stay readable (status, report) in an
    # emergency; writing such a payload is still refused (test above).
    data = {"party": "it-ops", "note": "on it", "channel_hint": "wecom",
            "nested": {"x": 1}}
    event = Event(incident_id="INC-20261205-A1B2C3", seq=3, type=EventType.PARTY_ACKED,
                  at=datetime(2026, 12, 5, tzinfo=UTC), actor="duty", data=data,
                  prev_hash="", hash="")

    payload = payload_of(event)

    assert isinstance(payload, PartyAcked) and payload.party == "it-ops"
    assert event.data == data  # what is stored (and hashed) is untouched
    with pytest.raises(RecordInvalid):
        parse_payload(EventType.PARTY_ACKED, data)
    wrong = event.model_copy(update={"data": {"party": 7}})
    with pytest.raises(RecordInvalid):
        payload_of(wrong)  # a known key of the wrong type is still an error
