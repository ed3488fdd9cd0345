"""The SMS segments `start --dry-run` forecasts are those the real messages take (each
recipient's name, the real id's length), and the send time follows from them;
`playbooks validate` forecasts a documented worst case that real notices stay within."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from cli_fixtures import Workspace

TITLE = "核心业务系统故障导致柜面及网银交易暂停"
NAMES = {"zh-CN": ["张伟", "李娜", "欧阳明华", "司马相如", "阿卜杜热合曼·买买提", "王",
                   "爱新觉罗·溥仪", "Mary Chan 陈玛丽", "诸葛孔明亮"],
         "en": ["Wei Zhang", "Mary Anne Catherine O'Brien-Fitzgerald", "Jo", "Renée [VIP]",
                "Dr. Zhang 😀", "Alexander Christopher Montgomery-Smith III"]}


def _customers(ws: Workspace, names_by_lang: dict[str, list[str]] = NAMES) -> dict[str, str]:
    """One customer per name, with a phone; returns phone -> language."""
    rows, phones = [], {}
    for lang, names in names_by_lang.items():
        for name in names:
            n = len(rows)
            phone = f"+86138{n:08d}"
            phones[phone] = lang
            rows.append(f"c{n},{name},,{phone},{lang},retail,guangdong,gd,savings,")
    ws.write_customers(rows)
    return phones


def _sent_segments(ws: Workspace, incident_id: str, phones: dict[str, str]) -> dict[str, Counter]:
    sent: dict[str, Counter] = {}
    for path in ws.outbox_files(incident_id, "json"):
        sms = json.loads(path.read_text("utf-8"))
        sent.setdefault(phones[sms["to"]], Counter())[sms["segments"]] += 1
    return sent


def test_the_dry_run_forecasts_the_segments_the_real_messages_take(sqlite_ws: Workspace) -> None:
    phones = _customers(sqlite_ws)
    plan = sqlite_ws.json("start", "core-banking-outage", "--title", TITLE, "--dry-run")
    started = sqlite_ws.json("start", "core-banking-outage", "--title", TITLE)
    sent = _sent_segments(sqlite_ws, started["id"], phones)
    assert sum(map(sum, (c.values() for c in sent.values()))) == len(phones)
    assert len(set().union(*sent.values())) > 1  # the names make a difference
    for lang, counts in sent.items():
        forecast = {int(n): count for n, count in plan["sms"][lang]["messages"].items()}
        assert forecast == dict(counts), lang
        assert plan["sms"][lang]["segments"] == max(counts)
    total = sum(n * count for counts in sent.values() for n, count in counts.items())
    assert plan["estimated_seconds"]["sms"] == pytest.approx(total / 10)  # 10 segments/s
    human = sqlite_ws.run("start", "core-banking-outage", "--title", TITLE, "--dry-run").stdout
    assert "messages by segments" in human


def test_validate_forecasts_a_worst_case_real_notices_stay_within(sqlite_ws: Workspace) -> None:
    # Values within the documented bounds (README, Templates), in each notice's language.
    phones = _customers(sqlite_ws, {"zh-CN": [n for n in NAMES["zh-CN"] if len(n) <= 12],
                                    "en": [n for n in NAMES["en"] if n.isascii()]})
    checks = sqlite_ws.json("playbooks", "validate")
    worst = next(c for c in checks if "core-banking-outage" in c["path"])["sms"]
    started = sqlite_ws.json("start", "core-banking-outage", "--title",
                             "Core banking down: counters and online banking suspended",
                             "--eta", "2h")
    incident_id = started["id"]
    sqlite_ws.json("eta", incident_id, "2026-12-31T23:30",
                   "--reason", "Checking every posting of the standby database takes longer")
    # Customer notices: 1 initial, 3 ETA changed (2 and 4 went to the parties).
    for notice, phase in (("notice-001", "initial"), ("notice-003", "eta_changed")):
        files = [p for p in sqlite_ws.outbox_files(incident_id, "json") if notice in p.parts]
        assert len(files) == len(phones)
        for path in files:
            sms = json.loads(path.read_text("utf-8"))
            lang = phones[sms["to"]]
            assert sms["segments"] <= worst[f"{phase}/{lang}"]["segments"], (phase, sms)
    human = sqlite_ws.run("playbooks", "validate").stdout
    assert "worst case" in human
