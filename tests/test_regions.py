"""Per-region details through the command line on a real workspace: a customer's region picks
the hotline, the website and the time zone (with its label) of their notices; nearby open
branches stay within reach (same region, or one the playbook lists); a bad region map in
incident.yaml is refused naming the file and key."""

from __future__ import annotations

import csv
import email
import email.policy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from cli_fixtures import Workspace
from incident.regions import labelled_time, zone_label
from incident.rendering import without_year

ROOT = Path(__file__).resolve().parent.parent
BRANCHES = ROOT / "examples" / "branches.csv"
NOW = "2026-09-14T06:00:00Z"  # 14:00 in Hong Kong and Beijing
MAINLAND = "400-000-0000"  # the shipped example's hotline
HK_HOTLINE = "+852 2888 8888"
HK_SITE = "https://www.example.com.hk"


def _per_region(ws: Workspace) -> None:
    def edit(cfg: dict[str, Any]) -> None:
        cfg["organisation"]["hotline"] = {"default": MAINLAND, "Hong-Kong": HK_HOTLINE}
        cfg["organisation"]["website"] = {"default": "https://www.example.com",
                                          "hong-kong": HK_SITE}
        cfg["regions"] = {"hong-kong": {"zone": "Asia/Hong_Kong"},
                          "default": {"zone": "Asia/Shanghai"}}
    ws.configure(edit)


def _customers(ws: Workspace) -> list[dict[str, str]]:
    with open(ws.root / "customers.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _notices(ws: Workspace, incident_id: str, seq: int | None = None) -> dict[str, list[str]]:
    """Every customer message of the incident (or of its notice `seq`) by customer id: email
    plain text (HTML appended) and SMS bodies."""
    by_contact: dict[str, str] = {}
    for row in _customers(ws):
        by_contact[row["email"]] = by_contact[row["phone"]] = row["id"]
    found: dict[str, list[str]] = {}

    def files(suffix: str) -> list[Path]:
        return [p for p in ws.outbox_files(incident_id, suffix)
                if seq is None or f"notice-{seq:03d}" in p.parts]

    for path in files("eml"):
        with open(path, "rb") as handle:
            message = email.message_from_binary_file(handle, policy=email.policy.default)
        text = "\n".join(message.get_body((kind,)).get_content()  # type: ignore[union-attr]
                         for kind in ("plain", "html"))
        to = message["To"].addresses[0].addr_spec
        found.setdefault(by_contact[to], []).append(text)
    for path in files("json"):
        sms = json.loads(path.read_text("utf-8"))
        found.setdefault(by_contact[sms["to"]], []).append(sms["body"])
    return found


def _eta(label: str, lang: str, at: str, text: str) -> bool:
    """Whether `text` shows the time `at` with its zone label as a notice in `lang` does
    (an SMS, one line, without the year: _partials/sms.txt)."""
    shown = at if "\n" in text else without_year(at)
    return (f"{label}{shown}" if lang.startswith("zh") else f"{shown} {label}") in text


def test_typhoon_closing_every_hong_kong_branch(ws: Workspace) -> None:
    _per_region(ws)
    ws.freeze(NOW)
    started = ws.json("start", "typhoon", "--title", "Typhoon Signal No. 8", "--region",
                      "hong-kong", "--branches", str(BRANCHES), "--eta", "2026-09-14T18:00")
    assert started["branches"]["open"] == []  # Shenzhen is across the border
    ws.run("update", started["id"], "-m", "Signal No. 8 remains in force")
    language = {r["id"]: r["language"] for r in _customers(ws)}
    notices = _notices(ws, started["id"])
    hong_kong = {r["id"] for r in _customers(ws) if r["region"] == "hong-kong"}
    assert set(notices) == hong_kong
    assert {language[c] for c in notices} == {"zh-HK", "en"}
    for customer, texts in notices.items():
        assert len(texts) >= 2  # both notices, every channel
        label = "香港時間" if language[customer] == "zh-HK" else "Hong Kong Time"
        for text in texts:
            assert HK_HOTLINE in text and MAINLAND not in text
            assert "CST" not in text and "北京" not in text and "China Standard" not in text
            assert "深圳" not in text and "Shenzhen" not in text
            assert _eta(label, language[customer], "2026-09-14 18:00", text), text
        emails = [t for t in texts if "\n" in t]  # an SMS is one line
        assert all(HK_SITE in t for t in emails)
        assert all("該區的分行已全部暫停營業" in t or "All our branches in the area are "
                   "closed" in t for t in emails)


def test_one_notice_carries_each_regions_hotline_and_time(ws: Workspace) -> None:
    _per_region(ws)
    ws.freeze(NOW)
    started = ws.json("start", "core-banking-outage", "--title", "Core banking down",
                      "--eta", "2026-09-14T18:00")
    region = {r["id"]: r["region"] for r in _customers(ws)}
    language = {r["id"]: r["language"] for r in _customers(ws)}
    notices = _notices(ws, started["id"])
    assert {region[c] for c in notices} >= {"hong-kong", "guangdong", "shanghai"}
    labels = {"zh-CN": ("香港时间", "北京时间"), "zh-HK": ("香港時間", "北京時間"),
              "en": ("Hong Kong Time", "China Standard Time")}
    for customer, texts in notices.items():
        hk = region[customer] == "hong-kong"
        lang = language[customer]
        label = labels[lang][0 if hk else 1]
        for text in texts:
            assert (HK_HOTLINE in text) == hk and (MAINLAND in text) != hk, (customer, text)
            assert _eta(label, lang, "2026-09-14 18:00", text), (customer, text)
            assert "CST" not in text


def test_dry_run_forecasts_each_regions_sms(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ws.freeze(NOW)
    ws.write_customers(["C1,陈大文,,+85291234567,zh-CN,retail,hong-kong,hk-central,,normal",
                        "C2,陈大文,,+8613800138000,zh-CN,retail,guangdong,gd-sz-futian,,normal"])
    plain = ws.json("start", "core-banking-outage", "--title", "Core banking down",
                    "--dry-run")
    _per_region(ws)
    regional = ws.json("start", "core-banking-outage", "--title", "Core banking down",
                       "--dry-run")
    assert plain["sms"].keys() == regional["sms"].keys()
    # The +852 number is longer than the 400 number: Hong Kong customers' SMS are longer.
    assert (regional["sms"]["zh-CN"]["units"]
            == plain["sms"]["zh-CN"]["units"] + len(HK_HOTLINE) - len(MAINLAND))


def test_a_reachable_region_listed_by_the_playbook_is_offered(ws: Workspace) -> None:
    path = ws.root / "playbooks" / "typhoon.yaml"
    book = yaml.safe_load(path.read_text("utf-8"))
    book["branches"] = {"reachable_regions": {"Hong-Kong": ["guangdong"]}}
    path.write_text(yaml.safe_dump(book, allow_unicode=True), encoding="utf-8")
    ws.freeze(NOW)
    started = ws.json("start", "typhoon", "--title", "Typhoon Signal No. 8", "--region",
                      "hong-kong", "--branches", str(BRANCHES))
    assert [(b["id"], b["distance_km"]) for b in started["branches"]["open"]] == [
        ("gd-sz-luohu", 19.4)]
    texts = [t for ts in _notices(ws, started["id"]).values() for t in ts if "\n" in t]
    assert texts and all("深圳罗湖支行（约19.4公里）" in t or "深圳羅湖支行（約19.4公里）" in t
                         or "Shenzhen Luohu Branch (19.4 km)" in t for t in texts)


def _refused(ws: Workspace, edit: Any) -> str:
    ws.configure(edit)
    result = ws.run("list", code=2)
    assert "Traceback" not in result.output + result.stderr
    assert str(ws.config) in result.stderr
    return result.stderr


def test_a_bad_region_map_is_refused_naming_the_file_and_key(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws

    def no_default(cfg: dict[str, Any]) -> None:
        cfg["organisation"]["hotline"] = {"hong-kong": HK_HOTLINE}

    stderr = _refused(ws, no_default)
    assert "organisation.hotline" in stderr and "default" in stderr

    def unknown_zone(cfg: dict[str, Any]) -> None:
        cfg["organisation"]["hotline"] = MAINLAND
        cfg["regions"] = {"hong-kong": {"zone": "Asia/Hongkong_Island"}}

    stderr = _refused(ws, unknown_zone)
    assert "regions.hong-kong.zone" in stderr and "Asia/Hongkong_Island" in stderr

    def unknown_label_language(cfg: dict[str, Any]) -> None:
        cfg["regions"] = {"hong-kong": {"zone": "Asia/Hong_Kong", "label": {"zh_HK": "x"}}}

    stderr = _refused(ws, unknown_label_language)
    assert "regions.hong-kong.label" in stderr and "zh_HK" in stderr


def test_times_are_shown_in_the_regions_zone_with_its_label() -> None:
    at = datetime(2026, 11, 24, 3, 40, tzinfo=UTC)
    london, shanghai = ZoneInfo("Europe/London"), ZoneInfo("Asia/Shanghai")
    assert labelled_time(at, shanghai, zone_label(shanghai, "en"), "en") == (
        "2026-11-24 11:40 China Standard Time")
    assert labelled_time(at, shanghai, zone_label(shanghai, "zh-CN"), "zh-CN") == (
        "北京时间2026-11-24 11:40")
    assert labelled_time(at, london, zone_label(london, "en"), "en") == (
        "2026-11-24 03:40 Europe/London")  # no abbreviation: named by its IANA name
    assert zone_label(london, "zh-CN", {"zh-CN": "伦敦时间"}) == "伦敦时间"


def test_the_manual_channels_hotline_per_region(ws: Workspace) -> None:
    path = ws.root / "playbooks" / "typhoon.yaml"
    book = yaml.safe_load(path.read_text("utf-8"))
    manual = book["principles"]["minimal_impact"]["manual_channel"]
    manual["hotline"] = {"hong-kong": "+852 2000 0001"}
    path.write_text(yaml.safe_dump(book, allow_unicode=True), encoding="utf-8")
    ws.freeze(NOW)
    refused = ws.run("start", "typhoon", "--title", "Signal No. 8", "--region", "hong-kong",
                     code=2)
    assert "typhoon.yaml" in refused.stderr and "hotline" in refused.stderr
    assert "default" in refused.stderr

    manual["hotline"] = {"default": "95555", "hong-kong": "+852 2000 0001"}
    path.write_text(yaml.safe_dump(book, allow_unicode=True), encoding="utf-8")
    started = ws.json("start", "typhoon", "--title", "Signal No. 8", "--region", "hong-kong",
                      "--region", "guangdong", "--branches", str(BRANCHES))
    region = {r["id"]: r["region"] for r in _customers(ws)}
    first = _notices(ws, started["id"], 1)
    assert {region[c] for c in first} == {"hong-kong", "guangdong"}
    for customer, texts in first.items():
        hk = region[customer] == "hong-kong"
        assert all(("+852 2000 0001" in t) == hk and ("95555" in t) != hk for t in texts)

    # The supervisor changes it on the command line: a default and a region's own.
    ws.run("manual", "open", started["id"], "--hotline", "95566", "--hotline",
           "Hong-Kong=+852 2000 0002")
    update = ws.json("update", started["id"], "-m", "Signal No. 8 remains in force")
    second = _notices(ws, started["id"], update["notice"]["seq"])
    assert second.keys() == first.keys()
    for customer, texts in second.items():
        hk = region[customer] == "hong-kong"
        assert all(("+852 2000 0002" in t) == hk and ("95566" in t) != hk for t in texts)
    timeline = ws.run("timeline", started["id"], env={"COLUMNS": "400"}).stdout
    assert "hotline 95566 (hong-kong: +852 20" in timeline  # numbers partly masked

    twice = ws.run("manual", "open", started["id"], "--hotline", "95566", "--hotline", "95577",
                   code=2)
    assert "hotline" in twice.stderr and "Traceback" not in twice.stderr


def test_playbooks_validate_forecasts_the_longest_regions_sms(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws

    def units() -> dict[str, Any]:
        checked = ws.json("playbooks", "validate", str(ws.root / "playbooks" / "typhoon.yaml"))
        return {key: sms["units"] for key, sms in checked[0]["sms"].items()}

    plain = units()
    _per_region(ws)
    # Chinese (zh-CN, zh-HK): the labels are as long (北京时间, 香港時間), the +852 number is
    # longer. English: "Hong Kong Time" is shorter than "China Standard Time", so the default's
    # stays longest.
    longer = len(HK_HOTLINE) - len(MAINLAND)
    assert units() == {key: n + (longer if key.endswith(("zh-CN", "zh-HK")) else 0)
                       for key, n in plain.items()}
