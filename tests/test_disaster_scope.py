"""Natural-disaster scoping through the command line: the typhoon playbook started for a region
or branches notifies only their customers and names the closed and nearby open branches; CAP
1.2 warnings ingested, decided and started — on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import email
import email.policy
import json
from pathlib import Path
from typing import Any

from cli_fixtures import Workspace

ROOT = Path(__file__).resolve().parent.parent
BRANCHES = ROOT / "examples" / "branches.csv"
CAP = Path(__file__).resolve().parent / "data" / "cap"
NOW = "2026-09-14T06:00:00Z"  # 14:00 in Hong Kong: every sample alert but the expired one valid
HK = ["hk-central", "hk-tsim-sha-tsui", "hk-sha-tin", "hk-causeway-bay", "hk-mong-kok",
      "hk-kwun-tong"]
HK_ZH = "中环分行、尖沙咀分行、沙田分行、铜锣湾分行、旺角分行、观塘分行"
HK_HK = "中環分行、尖沙咀分行、沙田分行、銅鑼灣分行、旺角分行、觀塘分行"
HK_EN = ("Central Branch, Tsim Sha Tsui Branch, Sha Tin Branch, Causeway Bay Branch, "
         "Mong Kok Branch, Kwun Tong Branch")


def _customers(ws: Workspace) -> list[dict[str, str]]:
    with open(ws.root / "customers.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _reached(ws: Workspace, incident_id: str) -> tuple[dict[str, Any], set[str]]:
    """Customer emails of the incident (by address: language and plain text), and SMS numbers."""
    mails = {}
    for path in ws.outbox_files(incident_id, "eml"):
        with open(path, "rb") as handle:
            message = email.message_from_binary_file(handle, policy=email.policy.default)
        mails[message["To"].addresses[0].addr_spec] = message.get_body(  # type: ignore
            ("plain",)).get_content()
    phones = {json.loads(p.read_text("utf-8"))["to"] for p in ws.outbox_files(incident_id,
                                                                             "json")}
    return mails, phones


def _plain(path: Path) -> str:
    with open(path, "rb") as handle:
        message = email.message_from_binary_file(handle, policy=email.policy.default)
    return message.get_body(("plain",)).get_content()  # type: ignore


def _expect(ws: Workspace, rows: list[dict[str, str]], incident_id: str) -> dict[str, Any]:
    """Assert exactly these customers were reached, each on every channel they have."""
    mails, phones = _reached(ws, incident_id)
    assert set(mails) == {r["email"] for r in rows if r["email"]}
    assert phones == {r["phone"] for r in rows if r["phone"]}
    assert len(ws.outbox_files(incident_id, "eml")) == len(mails)  # one each
    return mails


def test_typhoon_for_a_region_reaches_its_customers_and_names_the_branches(ws: Workspace) -> None:
    ws.freeze(NOW)
    started = ws.json("start", "typhoon", "--title", "Typhoon Signal No. 8", "--region",
                      "hong-kong", "--branches", str(BRANCHES))
    rows = [r for r in _customers(ws) if r["region"] == "hong-kong"]
    assert 0 < started["audience"]["recipients"] == len(rows) < len(_customers(ws))
    assert [b["id"] for b in started["branches"]["closed"]] == HK
    # Shenzhen Luohu, 19.4 km away, is across the border: out of reach (test_regions.py).
    assert started["branches"]["open"] == []
    mails = _expect(ws, rows, started["id"])
    language = {r["email"]: r["language"] for r in rows}
    assert {language[a] for a in mails} == {"zh-HK", "en"}
    for address, text in mails.items():
        if language[address] == "zh-CN":
            assert f"暂停营业的网点：{HK_ZH}" in text
            assert "该地区的网点均已暂停营业" in text
        elif language[address] == "zh-HK":
            assert f"暫停營業的分行：{HK_HK}" in text
            assert "該區的分行已全部暫停營業" in text
        else:
            assert f"Branches closed: {HK_EN}" in text
            assert "All our branches in the area are closed" in text
        assert "深圳" not in text and "Shenzhen" not in text  # Shenzhen stays open, unnamed
    # Later notices keep naming them, and status / the regulator draft know the scope.
    updated = ws.json("update", started["id"], "-m", "Signal No. 8 remains in force")
    assert updated["deliveries"]["sent"] == 2 * started["deliveries"]["sent"]
    draft = ws.json("regulator", started["id"], "--draft", "--lang", "en")
    assert "Regions: hong-kong" in draft["fields"]["place"]
    assert "Branches closed: " + HK_EN in draft["fields"]["place"]


def test_branch_selection_uses_the_configured_branch_list(ws: Workspace) -> None:
    ws.freeze(NOW)
    assert "branches: branches.csv" in ws.config.read_text("utf-8")
    started = ws.json("start", "typhoon", "--title", "Flooding at two branches", "--branch",
                      "hk-central", "--branch", "hk-sha-tin")
    rows = [r for r in _customers(ws) if r["branch"] in ("hk-central", "hk-sha-tin")]
    assert started["audience"]["recipients"] == len(rows) > 0
    assert [b["id"] for b in started["branches"]["closed"]] == ["hk-central", "hk-sha-tin"]
    nearby = [(b["name_en"], b["distance_km"]) for b in started["branches"]["open"]]
    assert nearby == [("Tsim Sha Tsui Branch", 2.3), ("Causeway Bay Branch", 2.7),
                      ("Mong Kok Branch", 4.3)]  # the three nearest open ones
    mails = _expect(ws, rows, started["id"])
    for text in mails.values():
        assert ("Branches closed: Central Branch, Sha Tin Branch" in text
                or "暂停营业的网点：中环分行、沙田分行" in text
                or "暫停營業的分行：中環分行、沙田分行" in text)
        assert "Kwun Tong" not in text and "观塘" not in text

    listed = ws.run("start", "typhoon", "--title", "x", "--region", "hong-kong", "--branch",
                    "hk-nowhere", code=2)
    assert "hk-nowhere" in listed.stderr
    missing = ws.run("start", "typhoon", "--title", "x", "--region", "hong-kong",
                     "--branches", str(ws.root / "missing.csv"), code=2)
    assert "missing.csv" in missing.stderr
    assert len(ws.json("list")) == 1  # the refused starts recorded nothing


# (file, applies, action, playbook, grade, branches) for tests/data/cap at NOW.
SAMPLES = [
    ("typhoon-alert.xml", True, "start", "typhoon", "II", HK),
    ("typhoon-update.xml", True, "start", "typhoon", "I", HK),
    ("typhoon-cancel.xml", False, "ignore", "typhoon", None, HK),  # started nothing here
    ("typhoon-test.xml", False, "ignore", "typhoon", "II", HK),
    ("typhoon-expired.xml", False, "ignore", None, None, []),
    ("typhoon-out-of-area.xml", False, "ignore", None, None, []),
    ("earthquake-circle.xml", True, "start", "earthquake", "II",
     ["fj-xm-siming", "fj-xm-huli"]),
    ("rainstorm-geocode.xml", True, "start", "rainstorm-flood", "I",
     ["gd-sz-futian", "gd-sz-nanshan"]),
    ("rainstorm-moderate.xml", False, "ignore", None, None, []),
    ("earthquake-exercise.xml", False, "ignore", "earthquake", "II",
     ["bj-haidian", "bj-xicheng"]),
]


def test_every_sample_warning_gets_its_decision_and_customer_counts(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ws.freeze(NOW)
    per_branch: dict[str, int] = {}
    for row in _customers(ws):
        per_branch[row["branch"]] = per_branch.get(row["branch"], 0) + 1
    for name, applies, action, playbook, grade, branches in SAMPLES:
        got = ws.json("warnings", "ingest", str(CAP / name), "--branches", str(BRANCHES))
        assert (got["applies"], got["action"], got["playbook"], got["grade"]) == (
            applies, action, playbook, grade), name
        assert [b["id"] for b in got["branches"]] == branches, name
        assert [b["customers"] for b in got["branches"]] == [
            per_branch.get(b, 0) for b in branches], name
        assert got["customers"] == sum(per_branch.get(b, 0) for b in branches), name
        assert got["reasons"], name
    human = {name: ws.run("warnings", "ingest", str(CAP / name)).stdout
             for name in ("typhoon-alert.xml", "typhoon-cancel.xml", "typhoon-test.xml")}
    assert "APPLIES" in human["typhoon-alert.xml"]
    assert "Playbook: typhoon at grade II" in human["typhoon-alert.xml"]
    assert "Affected branches (8 customers)" in human["typhoon-alert.xml"]
    assert "it applies to nothing" in human["typhoon-cancel.xml"]
    assert "does not apply" in human["typhoon-test.xml"]
    assert "status is Test, not Actual" in human["typhoon-test.xml"]
    assert ws.json("list", "--all") == []  # deciding records nothing


def test_bad_warning_files_and_a_missing_branch_list_are_refused(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ws.freeze(NOW)
    for name, line in (("not-xml.xml", 1), ("truncated.xml", 23), ("wrong-namespace.xml", 2),
                       ("missing-status.xml", 2), ("bad-urgency.xml", 13),
                       ("bad-polygon.xml", 25)):
        path = CAP / "malformed" / name
        result = ws.run("warnings", "ingest", str(path), code=2)
        assert f"{path}:{line}:" in result.stderr, name
        assert result.stderr.count(f"{path}:{line}:") == 1, name  # said once, not repeated
        assert result.stdout == "", name
    polygons = ws.run("warnings", "ingest", str(CAP / "malformed" / "bad-polygon.xml"), code=2)
    assert "(and 1 more)" in polygons.stderr and ":43: alert.info[2]" in polygons.stderr
    ws.run("warnings", "ingest", str(CAP / "no-such-alert.xml"), code=2)
    ws.configure(lambda cfg: cfg.pop("branches"))
    missing = ws.run("warnings", "ingest", str(CAP / "typhoon-alert.xml"), code=2)
    assert "branch list" in missing.stderr and "--branches" in missing.stderr
    ws.json("warnings", "ingest", str(CAP / "typhoon-alert.xml"), "--branches", str(BRANCHES))


def test_start_from_a_warning_opens_the_playbook_for_the_affected_branches(ws: Workspace) -> None:
    ws.freeze(NOW)
    started = ws.json("warnings", "ingest", str(CAP / "typhoon-update.xml"), "--start")
    assert started["severity"] == "I"  # CAP severity Extreme maps to grade I
    assert started["warning"]["identifier"] == "HKO-TC-20260914-1340"
    assert started["warning"]["action"] == "start"
    assert [b["id"] for b in started["branches"]["closed"]] == HK
    rows = [r for r in _customers(ws) if r["branch"] in HK]
    assert started["audience"]["recipients"] == len(rows)
    _expect(ws, rows, started["id"])
    status = ws.json("status", started["id"])
    assert (status["playbook"], status["severity"], status["status"]) == (
        "typhoon", "I", "investigating")
    assert status["title"] == "Hurricane Signal No. 10 is issued"  # the CAP headline

    # The alert that Update replaced, read late: already part of the incident.
    late = ws.json("warnings", "ingest", str(CAP / "typhoon-alert.xml"), "--start")
    assert (late["action"], late["incident"]) == ("duplicate", started["id"])

    for name in ("typhoon-test.xml", "typhoon-cancel.xml", "typhoon-out-of-area.xml"):
        refused = ws.run("warnings", "ingest", str(CAP / name), "--start", code=2)
        assert "not starting" in refused.stderr, name
    assert len(ws.json("list")) == 1


def test_an_update_updates_the_incident_its_alert_started_and_a_cancel_names_it(
        ws: Workspace) -> None:
    ws.freeze(NOW)
    started = ws.json("warnings", "ingest", str(CAP / "typhoon-alert.xml"), "--start")
    short = started["id"][-6:]
    assert started["severity"] == "II"
    rows = [r for r in _customers(ws) if r["branch"] in HK]
    again = ws.json("warnings", "ingest", str(CAP / "typhoon-alert.xml"), "--start")
    assert (again["action"], again["incident"], again["applies"]) == (
        "duplicate", started["id"], False)

    seen = ws.json("warnings", "ingest", str(CAP / "typhoon-update.xml"))
    assert (seen["action"], seen["incident"], seen["grade"]) == ("update", started["id"], "I")
    assert f"--start  (updates {short})" in ws.run(
        "warnings", "ingest", str(CAP / "typhoon-update.xml")).stdout
    updated = ws.json("warnings", "ingest", str(CAP / "typhoon-update.xml"), "--start")
    assert (updated["id"], updated["severity"], updated["notice"]["phase"]) == (
        started["id"], "I", "update")
    assert updated["warning"]["action"] == "update"
    assert len(ws.json("list")) == 1  # one incident, not a second one
    mails, _ = _reached(ws, started["id"])
    assert set(mails) == {r["email"] for r in rows if r["email"]}
    assert len(ws.outbox_files(started["id"], "eml")) == 2 * len(mails)  # initial + update
    texts = "\n".join(_plain(p) for p in ws.outbox_files(started["id"], "eml"))
    assert "Hurricane Signal No. 10 is issued (in force until 2026-09-15 13:40 +08:00)" in texts
    assert ws.json("warnings", "ingest", str(CAP / "typhoon-update.xml"),
                   "--start")["action"] == "duplicate"
    assert len(ws.outbox_files(started["id"], "eml")) == 2 * len(mails)  # nothing more

    cancel = ws.run("warnings", "ingest", str(CAP / "typhoon-cancel.xml"))
    assert f"CANCEL — stand down {started['id']}" in cancel.stdout
    assert f'incident resolve {short} --message "..."' in cancel.stdout
    refused = ws.run("warnings", "ingest", str(CAP / "typhoon-cancel.xml"), "--start", code=2)
    assert started["id"] in refused.stderr and f"incident resolve {short}" in refused.stderr
    ws.run("resolve", started["id"], "-m", "Signal No. 10 cancelled")
    over = ws.json("warnings", "ingest", str(CAP / "typhoon-cancel.xml"))
    assert (over["applies"], over["action"]) == (False, "ignore")
    assert over["reasons"][0].endswith(f"no longer open: {started['id']} (resolved)")


def test_an_ignored_alert_shows_its_event_and_headline(sqlite_ws: Workspace) -> None:
    sqlite_ws.freeze(NOW)
    got = sqlite_ws.json("warnings", "ingest", str(CAP / "typhoon-expired.xml"))
    assert (got["applies"], got["event"], got["headline"]) == (
        False, "台风橙色预警", "深圳市气象台发布台风橙色预警信号")


def test_real_alerts_through_the_command_line(sqlite_ws: Workspace) -> None:
    sqlite_ws.freeze(NOW)
    real = sorted((CAP / "real").glob("*.*[lp]"))
    codes = {}
    for path in real:
        result = sqlite_ws.run("warnings", "ingest", str(path), code=None)
        assert "Traceback" not in result.stderr, path.name
        codes[path.name] = result.exit_code
        if result.exit_code == 2:
            assert f"{path}:" in result.stderr, path.name  # names the file and line
    assert set(codes.values()) == {0, 2}
    assert codes["google-xee.cap"] == codes["google-invalid.cap"] == 2
    assert codes["google-canada.cap"] == codes["oasiscap-v1dot2_appendix_adot1.xml"] == 0
    assert sqlite_ws.json("list", "--all") == []
