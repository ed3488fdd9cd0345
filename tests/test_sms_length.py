"""SMS length discipline: every phase of every shipped playbook, in every language, fits two
segments for a realistic customer (a 10-character name, ids as `incident start` makes them,
the supervisor's texts as typed in the README's examples), measured on the SMS the file
channel really writes; and `start --dry-run` shows the customers whose non-GSM name makes
their English SMS UCS-2."""

from __future__ import annotations

import json

import pytest

from cli_fixtures import Workspace
from incident.rendering import sms_segments

PLAYBOOKS = ("core-banking-outage", "online-banking-outage", "card-payments-outage",
             "typhoon", "rainstorm-flood", "earthquake")
# Ten characters each: a long name in each script (GSM-7 for the English one).
CUSTOMERS = [
    "C1,欧阳司徒建国志明华,,+8613800138001,zh-CN,retail,guangdong,,debit_card;mobile_banking,urgent",
    "C2,司徒陳嘉欣美玲慧敏華,,+85291234501,zh-HK,retail,hong-kong,,credit_card;internet_banking,",
    "C3,Chan Tai M,,+85291234502,en,retail,hong-kong,,mobile_banking;debit_card,",
]
LANGUAGE = {"+8613800138001": "zh-CN", "+85291234501": "zh-HK", "+85291234502": "en"}
# What a supervisor types (README examples), in every language.
TITLE = "Core banking down"
UPDATE = ("-m", "Database failover in progress", "--message-zh", "数据库正在切换至备用系统")
REASON = ("--reason", "Failover slower than planned", "--reason-zh", "备用系统切换比预期慢")
RESOLVE = ("-m", "All services restored", "--message-zh", "所有服务已恢复")


def _sms(ws: Workspace, incident_id: str, seq: int) -> dict[str, str]:
    texts = {}
    for path in ws.outbox_files(incident_id, "json"):
        if f"notice-{seq:03d}" in path.parts:
            data = json.loads(path.read_text("utf-8"))
            texts[LANGUAGE[data["to"]]] = data["body"]
    assert set(texts) == set(LANGUAGE.values()), texts
    return texts


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_every_phase_fits_two_segments_in_every_language(sqlite_ws: Workspace,
                                                         playbook: str) -> None:
    ws = sqlite_ws
    ws.write_customers(CUSTOMERS)
    ws.freeze("2026-11-24T06:05:00Z")
    started = ws.json("start", playbook, "--title", TITLE, "--eta", "2h")
    ref = started["id"]
    seqs = {"initial": started["notice"]["seq"]}
    ws.freeze("2026-11-24T06:35:00Z")
    seqs["update"] = ws.json("update", ref, *UPDATE)["notice"]["seq"]
    seqs["eta_changed"] = ws.json("eta", ref, "3h", *REASON)["notice"]["seq"]
    ws.freeze("2026-11-24T08:05:00Z")
    seqs["resolved"] = ws.json("resolve", ref, *RESOLVE)["notice"]["seq"]
    too_long = []
    for phase, seq in seqs.items():
        for lang, text in _sms(ws, ref, seq).items():
            info = sms_segments(text)
            if lang == "en":
                assert info.encoding == "GSM-7", text
            if info.segments > 2:
                too_long.append(f"{playbook}/{phase}/{lang}: {info.segments} segments, "
                                f"{info.units} units: {text}")
    assert not too_long, "\n".join(too_long)


def test_dry_run_names_customers_whose_name_makes_an_english_sms_ucs2(
        sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ws.write_customers([
        "E1,Chan Tai Man,,+85291234511,en,retail,hong-kong,,,",
        "E2,Renée Müller,,+85291234512,en,retail,hong-kong,,,",  # é, ü: in GSM-7
        "E3,Łukasz Kowalski,,+85291234513,en,retail,hong-kong,,,",
        "E4,Chan 陳大文,,+85291234514,en,retail,hong-kong,,,",
        "H1,陳大文,,+85291234515,zh-HK,retail,hong-kong,,,",  # UCS-2 anyway: not listed
    ])
    args = ("start", "core-banking-outage", "--title", TITLE, "--eta", "2h", "--dry-run")
    plan = ws.json(*args)
    english = plan["sms"]["en"]
    assert english["encoding"] == "UCS-2"  # the longest English SMS
    switched = english["ucs2_names"]
    assert switched["customers"] == 2
    listed = {c["customer"]: c for c in switched["listed"]}
    assert set(listed) == {"E3", "E4"}
    assert listed["E3"]["characters"] == "Ł" and listed["E4"]["characters"] == "陳大文"
    assert all(c["segments"] >= 3 for c in listed.values())  # 2 GSM-7 segments as UCS-2
    assert "ucs2_names" not in plan["sms"]["zh-HK"]
    shown = ws.run(*args)
    assert "2 en SMS become UCS-2" in shown.stderr and "E3 (Ł:" in shown.stderr
    assert "E1" not in shown.stderr and "E2" not in shown.stderr
