"""Traditional Chinese for Hong Kong (zh-HK) beside zh-CN and en, through the command line:
a typhoon incident for Hong Kong reaches zh-HK customers in Traditional characters only (OpenCC
s2hk changes nothing in what they get), with times in Hong Kong time, while mainland customers
keep Simplified; the supervisor's Chinese text is converted for zh-HK unless given for it, and
a text typed in English only is introduced in Chinese; the playbook check renders zh-HK."""

from __future__ import annotations

import email
import email.policy
import json
import re
import shutil
import subprocess
from pathlib import Path

import opencc
import pytest
from test_report_html import chromium, open_in_chromium, png_size

from cli_fixtures import Workspace
from incident.audience import normalize_language

__all__ = ["chromium"]  # the fixture, shared with the report's browser test

ROOT = Path(__file__).resolve().parent.parent
BRANCHES = ROOT / "examples" / "branches.csv"
NOW = "2026-09-14T06:00:00Z"  # 14:00 in Hong Kong
HAN = re.compile(r"[\u3400-\u9fff]+")
S2HK = opencc.OpenCC("s2hk")
T2S = opencc.OpenCC("t2s")

# Hong Kong customers spell their language in several ways; one reads Simplified.
CUSTOMERS = [
    "H1,陳大文,chan.taiman@example.com,+85291234567,zh-HK,retail,hong-kong,hk-central,,urgent",
    "H2,李嘉欣,li.kayan@example.com,+85262345678,zh-Hant-HK,retail,hong-kong,hk-sha-tin,,",
    "H3,黃美玲,wong.meiling@example.com,+85251234567,zh_TW,retail,hong-kong,hk-mong-kok,,",
    "M1,张伟,zhang.wei@example.com,+8613800138000,zh-CN,retail,hong-kong,hk-central,,",
    "E1,Emily Lau,emily.lau@example.com,+85263456789,en,retail,hong-kong,hk-central,,",
]
LANGUAGE = {"H1": "zh-HK", "H2": "zh-HK", "H3": "zh-HK", "M1": "zh-CN", "E1": "en"}
ADDRESS = {"chan.taiman@example.com": "H1", "li.kayan@example.com": "H2",
           "wong.meiling@example.com": "H3", "zhang.wei@example.com": "M1",
           "emily.lau@example.com": "E1", "+85291234567": "H1", "+85262345678": "H2",
           "+85251234567": "H3", "+8613800138000": "M1", "+85263456789": "E1"}


@pytest.mark.parametrize(("given", "expected"), [
    ("zh-HK", "zh-HK"), ("zh_HK", "zh-HK"), ("zh-TW", "zh-HK"), ("zh-Hant", "zh-HK"),
    ("zh-Hant-HK", "zh-HK"), ("ZH-HANT-TW", "zh-HK"), ("zh-Hans-CN", "zh-CN"), ("zh", "zh-CN"),
    ("zh-SG", "zh-CN"), ("en-HK", "en")])
def test_customer_language_spellings(given: str, expected: str) -> None:
    assert normalize_language(given) == expected


def _notice(ws: Workspace, incident_id: str, seq: int) -> dict[str, list[str]]:
    """Every text one notice sent (email subject, plain, HTML; SMS), by customer id."""
    texts: dict[str, list[str]] = {}
    for path in ws.outbox_files(incident_id, "eml"):
        if f"notice-{seq:03d}" in path.parts:
            with open(path, "rb") as handle:
                msg = email.message_from_binary_file(handle, policy=email.policy.default)
            who = ADDRESS[msg["To"].addresses[0].addr_spec]
            texts.setdefault(who, []).extend(
                [str(msg["Subject"]), msg.get_body(("plain",)).get_content(),  # type: ignore
                 msg.get_body(("html",)).get_content()])  # type: ignore
    for path in ws.outbox_files(incident_id, "json"):
        if f"notice-{seq:03d}" in path.parts:
            data = json.loads(path.read_text("utf-8"))
            texts.setdefault(ADDRESS[data["to"]], []).append(data["body"])
    assert set(texts) == set(LANGUAGE), texts.keys()
    assert all(len(t) == 4 for t in texts.values())  # subject, text, HTML, SMS each
    return texts


def _check_scripts(texts: dict[str, list[str]]) -> None:
    """zh-HK customers: Traditional only (s2hk is a no-op); zh-CN: Simplified only."""
    for who, parts in texts.items():
        chinese = "".join(HAN.findall("".join(parts)))
        if LANGUAGE[who] == "zh-HK":
            assert chinese and S2HK.convert(chinese) == chinese, (who, parts)
            assert all("香港時間" in p for p in parts[1:3]), who
            assert "北京" not in chinese and "网" not in chinese
        elif LANGUAGE[who] == "zh-CN":
            assert chinese and T2S.convert(chinese) == chinese, (who, parts)
            assert S2HK.convert(chinese) != chinese  # really Simplified, not shared forms
        else:
            assert not chinese.replace("示例银行", ""), (who, chinese)


def test_typhoon_for_hong_kong_in_traditional_and_simplified(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ws.write_customers(CUSTOMERS)
    ws.freeze(NOW)
    started = ws.json("start", "typhoon", "--title", "Typhoon Signal No. 8", "--region",
                      "hong-kong", "--branches", str(BRANCHES), "--eta", "18:00")
    ref = started["id"]
    first = _notice(ws, ref, 1)
    _check_scripts(first)
    hk_mail = first["H1"][1]
    # Hong Kong wording, not a character conversion of the mainland text.
    assert "暫停營業的分行：中環分行、尖沙咀分行" in hk_mail
    assert "客户服務熱線" in hk_mail and "網上銀行" in hk_mail
    assert "香港時間2026-09-14 18:00" in hk_mail  # the label first, as in 北京时间…
    assert "暂停营业的网点：中环分行" in first["M1"][1]

    # Chinese typed in Simplified reaches zh-HK customers in Traditional characters.
    ws.freeze("2026-09-14T07:00:00Z")
    update = ws.json("update", ref, "-m", "Signal No. 8 remains in force",
                     "--message-zh", "八号信号仍然生效，分行继续暂停营业")
    second = _notice(ws, ref, update["notice"]["seq"])
    _check_scripts(second)
    assert all("八號信號仍然生效，分行繼續暫停營業" in p for p in second["H2"][1:])
    assert all("八号信号仍然生效，分行继续暂停营业" in p for p in second["M1"][1:])

    # A Hong Kong text given for them is theirs; the ETA reason in Chinese too.
    ws.freeze("2026-09-14T08:00:00Z")
    revised = ws.json("eta", ref, "20:00", "--reason", "The signal stays up longer",
                      "--reason-zh", "信号维持时间较预期长", "--reason-zh-hk", "天文台延長八號信號")
    third = _notice(ws, ref, revised["notice"]["seq"])
    _check_scripts(third)
    assert all("天文台延長八號信號" in p for p in third["H3"][1:])
    assert all("信号维持时间较预期长" in p for p in third["M1"][1:])
    assert "Reason: The signal stays up longer" in third["E1"][1]

    # With no Chinese text at all, Chinese notices say in Chinese that it follows in English.
    ws.freeze("2026-09-14T09:00:00Z")
    resolved = ws.json("resolve", ref, "-m", "Branches reopen at 16:00")
    fourth = _notice(ws, ref, resolved["notice"]["seq"])
    assert all("詳情（英文）：Branches reopen at 16:00" in p for p in fourth["H1"][1:])
    assert all("详情（英文）：Branches reopen at 16:00" in p for p in fourth["M1"][1:])
    assert "详情" not in fourth["E1"][1] and "Branches reopen at 16:00" in fourth["E1"][1]
    # What was sent is in the record: the Chinese texts as typed.
    record = json.dumps(ws.json("timeline", ref), ensure_ascii=False)
    assert "天文台延長八號信號" in record and "信号维持时间较预期长" in record


def test_playbook_check_renders_zh_hk(sqlite_ws: Workspace) -> None:
    path = sqlite_ws.root / "playbooks" / "typhoon.yaml"
    result = sqlite_ws.json("playbooks", "validate", str(path))
    assert "zh-HK" in json.dumps(result, ensure_ascii=False)


def test_zh_hk_email_renders_in_chromium_with_a_cjk_font(
        sqlite_ws: Workspace, chromium: str, tmp_path: Path,
        record_property: pytest.RecordProperty) -> None:
    """The HTML part of a zh-HK email, opened in headless Chromium: a font covers Traditional
    Chinese (no boxes), the page loads nothing and shows the notice; the screenshot is kept."""
    fonts = subprocess.run(["fc-list", ":lang=zh-tw", "family"], capture_output=True,
                           text=True, check=False) if shutil.which("fc-list") else None
    if fonts is None or not fonts.stdout.strip():
        pytest.fail("no Traditional Chinese font: run scripts/install-test-deps.sh "
                    "(fonts-wqy-microhei)")
    ws = sqlite_ws
    ws.write_customers(CUSTOMERS)
    ws.freeze(NOW)
    started = ws.json("start", "typhoon", "--title", "Typhoon Signal No. 8", "--region",
                      "hong-kong", "--branches", str(BRANCHES), "--eta", "18:00")
    html = _notice(ws, started["id"], 1)["H1"][2]
    page_path = tmp_path / "zh-hk-email.html"
    page_path.write_text(html, encoding="utf-8")
    page = open_in_chromium(chromium, page_path, tmp_path / "chromium")
    record_property("screenshot", str(page.screenshot))
    print(f"zh-HK email screenshot: {page.screenshot}")
    assert page.console == []
    assert png_size(page.screenshot)[0] > 0
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    empty = open_in_chromium(chromium, blank, tmp_path / "chromium-blank")
    assert page.screenshot.stat().st_size > 10 * empty.screenshot.stat().st_size
    assert '<html lang="zh-HK">' in page.dom
    for words in ("親愛的陳大文", "暫停營業：中環分行", "香港時間", "客户服務熱線"):
        assert words in page.dom


def test_hong_kong_default_language(sqlite_ws: Workspace) -> None:
    """default_language zh-HK: customers without a language cell read Traditional; the
    report and the regulator draft, written in zh-CN and en only, come in Chinese."""
    ws = sqlite_ws
    ws.set_config("default_language: zh-CN", "default_language: zh-HK")
    ws.write_customers(["H9,陳小明,chan.siuming@example.com,,,retail,hong-kong,,,"])
    ws.freeze(NOW)
    started = ws.json("start", "typhoon", "--title", "Typhoon Signal No. 8")
    mails = ws.outbox_files(started["id"], "eml")
    assert len(mails) == 1
    with open(mails[0], "rb") as handle:
        msg = email.message_from_binary_file(handle, policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "親愛的陳小明" in text and "香港時間" in text
    report = ws.run("report", started["id"]).stdout
    assert "事件" in report
    draft = ws.run("regulator", started["id"], "--draft").stdout
    assert "报告" in draft or "报送" in draft
