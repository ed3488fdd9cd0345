"""`incident watch --once` with a frozen clock: what fell due is alerted once, recorded, and
sent to the alert parties of incident.yaml — on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
from datetime import datetime, timedelta
from typing import Any

import pytest

from cli_fixtures import Workspace

T0 = datetime.fromisoformat("2026-11-24T02:00:00+00:00")


def _at(ws: Workspace, minutes: float) -> None:
    ws.freeze(T0 + timedelta(minutes=minutes))


def _start(ws: Workspace, title: str = "Core banking down"
           ) -> str:
    _at(ws, 0)
    return str(ws.json("start", "core-banking-outage", "--title", title, "--eta", "2h")["id"])


def _alerted(ws: Workspace, incident_id: str) -> list[dict[str, Any]]:
    return [e for e in ws.json("timeline", incident_id)["events"] if e["type"] == "alerted"]


def _internal(ws: Workspace, incident_id: str) -> dict[str, list[tuple[str, str, str]]]:
    """Internal notices by folder: (recipient, subject, text) of each message."""
    found: dict[str, list[tuple[str, str, str]]] = {}
    for path in ws.outbox_files(incident_id, "eml", internal=True):
        with open(path, "rb") as handle:
            message = email.message_from_binary_file(handle, policy=email.policy.default)
        body = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        found.setdefault(path.parent.parent.name, []).append(
            (message["To"].addresses[0].addr_spec, message["Subject"], body))
    return found


@pytest.fixture
def small(ws: Workspace) -> Workspace:
    ws.write_customers(["C1,张伟,zhang.wei@example.com,,zh-CN,retail,guangdong,gd-sz-futian,"
                        "savings,normal"])
    ws.configure(lambda cfg: cfg.update(alerts={"parties": ["facilities"], "due_soon": "15m"}))
    return ws


def test_watch_alerts_once_records_it_and_tells_the_alert_parties(small: Workspace) -> None:
    ws = small
    incident_id = _start(ws)
    declared = _internal(ws, incident_id)
    assert len(declared) == 1  # the playbook's parties heard of the declaration

    _at(ws, 5)  # nothing due within 15 minutes yet
    quiet = ws.json("watch", incident_id, "--once")
    assert quiet["alerts"] == {} and quiet["watching"] == [incident_id]
    assert _alerted(ws, incident_id) == []

    _at(ws, 65)  # the 60-minute update and first regulator report are 5m late
    first = ws.json("watch", incident_id, "--once")
    whats = [a["what"] for a in first["alerts"][incident_id]]
    assert "customer update overdue by 5m" in whats
    assert "regulator deadline nfra-first-report overdue by 5m (owner compliance)" in whats
    assert all(a["level"] in ("overdue", "due_soon") for a in first["alerts"][incident_id])
    [event] = _alerted(ws, incident_id)
    assert event["data"]["alerts"] == whats
    assert len(event["data"]["keys"]) == len(whats)
    assert event["actor"] == "duty-lead"
    notices = _internal(ws, incident_id)
    [alert_notice] = [v for k, v in notices.items() if k not in declared]
    assert [to for to, _, _ in alert_notice] == ["facilities@example.com"]
    _, subject, text = alert_notice[0]
    assert "到期提醒" in subject and incident_id in subject
    assert "customer update overdue by 5m" in text
    after = ws.json("timeline", incident_id)["events"][-1]
    assert (after["type"], after["data"]["parties"], after["data"]["kind"]) == (
        "parties_notified", ["facilities"], "alert")

    _at(ws, 66)
    again = ws.json("watch", incident_id, "--once")
    assert again["alerts"] == {}  # the same items are not alerted twice
    assert len(_alerted(ws, incident_id)) == 1
    assert len(_internal(ws, incident_id)) == 2

    _at(ws, 125)  # the ETA passed: a new item, alerted in human mode
    human = ws.run("watch", incident_id, "--once")
    assert "ALERT" in human.stderr and "ETA passed 5m ago" in human.stderr
    assert "customer update" not in human.stderr  # alerted already
    assert incident_id in human.stdout and "Checklist" in human.stdout  # the status view
    assert len(_alerted(ws, incident_id)) == 2
    assert len(_internal(ws, incident_id)) == 3


def test_watch_without_alert_parties_records_only_and_covers_every_open_incident(
        small: Workspace) -> None:
    ws = small
    ws.configure(lambda cfg: cfg.update(alerts={"parties": []}))
    first = _start(ws, "Core banking down")
    second = _start(ws, "Core banking down again")
    closed = _start(ws, "Closed already")
    ws.json("resolve", closed, "-m", "Restored")
    ws.json("close", closed)
    _at(ws, 65)
    report = ws.json("watch", "--once")
    assert sorted(report["watching"]) == sorted([first, second])
    assert set(report["alerts"]) == {first, second}
    for incident_id in (first, second):
        assert len(_alerted(ws, incident_id)) == 1
        assert len(_internal(ws, incident_id)) == 1  # only the declaration's notice
    assert _alerted(ws, closed) == []
    assert ws.json("watch", "--once")["alerts"] == {}
