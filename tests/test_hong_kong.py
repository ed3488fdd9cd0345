"""A typhoon for Hong Kong and Guangdong, every piece of issue 13 together, through the command
line on a real workspace: zh-HK customers get Traditional Chinese only (OpenCC's s2hk leaves
every email, SMS and call script unchanged), the Hong Kong hotline and Hong Kong time; mainland
customers keep Simplified Chinese (t2s leaves theirs unchanged), the 400 number and Beijing
time; calls are read in Cantonese and Mandarin."""

from __future__ import annotations

import csv
import email
import email.policy
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import opencc

from cli_fixtures import Workspace

ROOT = Path(__file__).resolve().parent.parent
BRANCHES = ROOT / "examples" / "branches.csv"
NOW = "2026-09-14T06:00:00Z"  # 14:00 in Hong Kong and Beijing
MAINLAND = "400-000-0000"
HK_HOTLINE = "+852 2888 8888"
S2HK = opencc.OpenCC("s2hk")
T2S = opencc.OpenCC("t2s")


def _workspace(ws: Workspace) -> None:
    def edit(cfg: dict[str, Any]) -> None:
        cfg["organisation"]["hotline"] = {"default": MAINLAND, "hong-kong": HK_HOTLINE}
        cfg["regions"] = {"hong-kong": {"zone": "Asia/Hong_Kong"},
                          "default": {"zone": "Asia/Shanghai"}}
    ws.configure(edit)
    playbook = ws.root / "playbooks" / "typhoon.yaml"
    text = playbook.read_text(encoding="utf-8")
    old = "  channels: [email, sms]\n"
    assert old in text
    playbook.write_text(text.replace(old, "  channels: [email, sms, voice]\n"
                                          "  voice: {who: all}\n"), encoding="utf-8")


def _customers(ws: Workspace) -> list[dict[str, str]]:
    with open(ws.root / "customers.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _messages(ws: Workspace, incident_id: str) -> dict[str, dict[str, list[str]]]:
    """Every customer message by customer id and channel (email: plain and HTML text; voice:
    what each <Say> reads, with its voice language)."""
    rows = _customers(ws)
    by_contact = {r[key]: r["id"] for r in rows for key in ("email", "phone") if r[key]}
    found: dict[str, dict[str, list[str]]] = {}
    for path in ws.outbox_files(incident_id, "eml"):
        with open(path, "rb") as handle:
            message = email.message_from_binary_file(handle, policy=email.policy.default)
        text = "\n".join(message.get_body((kind,)).get_content()  # type: ignore[union-attr]
                         for kind in ("plain", "html"))
        found.setdefault(by_contact[message["To"].addresses[0].addr_spec], {}).setdefault(
            "email", []).append(text)
    for path in ws.outbox_files(incident_id, "json"):
        sms = json.loads(path.read_text("utf-8"))
        found.setdefault(by_contact[sms["to"]], {}).setdefault("sms", []).append(sms["body"])
    for path in ws.outbox_files(incident_id, "xml"):
        says = ET.fromstring(path.read_bytes()).findall("Say")
        assert len(says) == 2 and says[0].text == says[1].text  # read twice
        script = says[0].text or ""
        who = next(r["id"] for r in rows if r["name"] and r["name"] in script)
        found.setdefault(who, {}).setdefault("voice", []).append(
            f"[{says[0].get('language')}] {script}")
    return found


def test_typhoon_for_hong_kong_and_guangdong_in_each_customers_language(
        sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    _workspace(ws)
    ws.freeze(NOW)
    started = ws.json("start", "typhoon", "--title", "Typhoon Signal No. 8",
                      "--title-zh", "八号风球", "--region", "hong-kong", "--region", "guangdong",
                      "--branches", str(BRANCHES), "--eta", "2026-09-14T18:00")
    ws.run("update", started["id"], "-m", "Signal No. 8 remains in force",
           "--message-zh", "八号风球信号仍然生效")
    rows = {r["id"]: r for r in _customers(ws)}
    messages = _messages(ws, started["id"])
    hk_chinese = [c for c in messages if rows[c]["language"] == "zh-HK"]
    mainland = [c for c in messages if rows[c]["language"] == "zh-CN"]
    assert hk_chinese and mainland

    for customer in hk_chinese:
        by_channel = messages[customer]
        assert set(by_channel) >= {"sms", "voice"}, customer
        for channel, texts in by_channel.items():
            for text in texts:
                assert S2HK.convert(text) == text, f"{customer} {channel}: not Traditional only"
                assert MAINLAND not in text and "北京" not in text
                if channel == "voice":
                    assert text.startswith("[yue-HK]")  # Cantonese
                    assert "2 8 8 8, 8 8 8 8" in text  # the Hong Kong hotline, read out
                else:
                    assert HK_HOTLINE in text
                    assert "香港時間" in text
                    assert "八號風球" in text  # the typed Chinese title, in Traditional
        assert any("八號風球信號仍然生效" in t for t in by_channel["sms"])

    for customer in mainland:
        by_channel = messages[customer]
        for channel, texts in by_channel.items():
            for text in texts:
                assert T2S.convert(text) == text, f"{customer} {channel}: not Simplified only"
                assert HK_HOTLINE not in text and "852" not in text
                if channel == "voice":
                    assert text.startswith("[cmn-CN]")  # Mandarin
                    assert "4 0 0, 0 0 0, 0 0 0 0" in text
                else:
                    assert MAINLAND in text
                    assert "北京时间" in text
