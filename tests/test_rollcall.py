"""The staff roll-call end to end: the question by SMS (through Prism, which validates each
Twilio request) and email (read back from aiosmtpd), answers arriving between rounds through
`answer()` (the hook inbound replies call) and the CLI, reminder calls in rounds 2 and 3 on a
frozen clock (a rerun adds nothing), the need-help alert to the manager and the duty desk, the
final headcount and branch readiness (branches.csv min_staff), status, the report; a drill."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from test_channel_sms import PRISM_PASSED, PRISM_VIOLATIONS, prism_log_since
from test_parties import Recorder

from cli_fixtures import CUSTOMERS_HEADER, Workspace
from counting_smtp import _LocalController
from incident.response import Response
from incident.settings import load_runtime
from incident.store import Store, schema
from servers import PrismServer

ACCOUNT = "AC" + "0" * 32
ENV = {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": "tok-rollcall-never-print-me"}
T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
STAFF = [  # id, name, email, phone, language, branch, team, manager
    ("M1", "陈经理", "m1@example.com", "+85291230001", "zh-HK", "hk-central", "management", ""),
    ("S1", "Mary Lee", "s1@example.com", "+85291230002", "en", "hk-central", "hotline", "M1"),
    ("S2", "张伟", "s2@example.com", "+8613800138002", "zh-CN", "hk-central", "hotline", "M1"),
    ("S3", "李娜", "", "+8613800138003", "zh-CN", "gd-sz-futian", "branch-ops", "M1"),
    ("S9", "Bad Row", "s9@example.com", "+85291230009", "en", "hk-central", "hotline", "NOPE"),
]
BRANCHES = """id,name,name_en,region,latitude,longitude,min_staff
hk-central,香港中环分行,Hong Kong Central,hong-kong,22.2819,114.1581,2
gd-sz-futian,深圳福田支行,Shenzhen Futian,guangdong,22.5431,114.0579,1
gd-sz-nanshan,深圳南山支行,Shenzhen Nanshan,guangdong,22.5329,113.9305,
"""

REPLY = """From: =?utf-8?b?6ZmI57uP55CG?= <M1@example.com>
To: incident@example.com
Subject: Re: Roll-call: Signal No. 8
Message-ID: <reply-m1@example.com>
Content-Type: text/plain; charset=utf-8

1 all fine here

On Tue, 24 Nov 2026 10:00, incident@example.com wrote:
> 3 — need help
"""


def write_staff(ws: Workspace) -> Path:
    path = ws.root / "staff.csv"
    header = CUSTOMERS_HEADER.strip() + ",team,manager\n"
    path.write_text(header + "".join(
        f"{i},{name},{mail},{phone},{lang},staff,hong-kong,{branch},,normal,{team},{boss}\n"
        for i, name, mail, phone, lang, branch, team, boss in STAFF), encoding="utf-8")
    return path


@pytest.fixture
def staff_ws(ws: Workspace, prism: PrismServer, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[tuple[Workspace, Recorder, PrismServer]]:
    """SMS and calls through Prism, email through aiosmtpd; one customer by email; the staff
    list and a branch list with min_staff."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    handler = Recorder()
    controller = _LocalController(handler, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        ws.use_smtp(controller.port, connections=2)
        for channel, number in (("sms", "+15005550006"), ("voice", "+85230000000")):
            ws.configure(lambda cfg, c=channel, n=number: cfg["channels"].setdefault(
                c, {}).update(transport="twilio", rate=100,
                              twilio={"from_number": n, "api_base_url": prism.url}))
        ws.configure(lambda cfg: cfg.update(branches="branches.csv"))
        (ws.root / "branches.csv").write_text(BRANCHES, encoding="utf-8")
        for name in ("customers.csv", "drill.csv"):
            ws.write_customers(["C1,Customer One,c1@example.com,,en,retail,hong-kong,"
                                "hk-central,savings,normal"], name=name)
        write_staff(ws)
        yield ws, handler, prism
    finally:
        controller.stop()


def response(ws: Workspace) -> Response:
    """The use cases over the workspace, at the time it is frozen at (what the inbound routes
    hold)."""
    assert ws.clock is not None
    return Response(load_runtime(str(ws.config), db=ws.db, operator="receipts-server",
                                 clock=ws.clock))


def to_staff(messages: list[tuple[str, EmailMessage]]) -> dict[str, EmailMessage]:
    return {rcpt: m for rcpt, m in messages if rcpt != "c1@example.com"}


def text(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def staff_rows(ws: Workspace, incident_id: str, channel: str) -> list[Any]:
    o = schema.outbox
    with Store.open(ws.db).read() as conn:
        return list(conn.execute(o.select().where(
            o.c.incident_id == incident_id, o.c.channel == channel,
            o.c.recipient_ref.like("party:staff:%")).order_by(o.c.id)).all())


def test_rollcall_three_rounds_answers_alert_headcount_readiness(
        staff_ws: tuple[Workspace, Recorder, PrismServer]) -> None:
    ws, mail, prism = staff_ws
    ws.freeze(T0)
    incident_id = ws.json("start", "typhoon", "--title", "Signal No. 8")["id"]
    short = incident_id[-6:]
    mark, offset = len(mail), prism.log_path.stat().st_size

    started = ws.run("--json", "rollcall", "start", short, "--audience", str(ws.root / "staff.csv"),
                     "--question", "Typhoon No. 8: are you safe, can you work tomorrow?")
    out = __import__("json").loads(started.stdout)
    assert (out["members"], out["skipped"]) == (4, 1)
    assert "staff.csv:6 manager" in started.stderr and "NOPE" in started.stderr
    # SMS to the four staff through Prism (each request valid), email to the three with one.
    log = prism_log_since(prism.log_path, offset, expected_passes=4)
    assert [m for m in PRISM_VIOLATIONS if m in log] == [], log
    assert log.count(PRISM_PASSED) >= 4
    emails = to_staff(mail.since(mark))
    assert sorted(emails) == ["m1@example.com", "s1@example.com", "s2@example.com"]
    body = text(emails["s1@example.com"])
    assert "are you safe, can you work tomorrow?" in body
    assert "1 — safe and able to work" in body and "3 — need help" in body
    assert "需要帮助" in text(emails["s2@example.com"])
    assert "需要協助" in text(emails["m1@example.com"])  # converted to Hong Kong Chinese

    # Answers between rounds: S1 by SMS, M1 by email; a repeat and strangers record nothing.
    ws.freeze(T0 + timedelta(minutes=5))
    inbound = response(ws)
    got = inbound.rollcall_answer(sender="+85291230002", text="1", provider_id="SM1")
    assert got is not None and (got.incident_id, got.member, got.answer, got.recorded) == (
        incident_id, "S1", 1, True)
    again = inbound.rollcall_answer(sender="+85291230002", text="1", provider_id="SM1")
    assert again is not None and not again.recorded
    assert inbound.rollcall_answer(sender="+85299999999", text="1", provider_id="SM2") is None
    # M1 answers by email: the reply's own text counts, not the quoted question.
    reply = ws.root / "reply.eml"
    reply.write_bytes(REPLY.encode("utf-8"))
    by_mail = ws.json("rollcall", "replies", str(reply), str(ws.root / "staff.csv"))
    assert by_mail["answers"] == [{"id": incident_id, "member": "M1", "answer": 1,
                                   "recorded": True}]
    assert by_mail["unmatched"] == [str(ws.root / "staff.csv")]  # not a reply from staff
    again = ws.json("rollcall", "replies", str(reply))  # the same Message-ID: once
    assert again["answers"][0]["recorded"] is False

    # Round 2 after --every: calls to S2 and S3 only; a rerun at the same time adds nothing.
    ws.freeze(T0 + timedelta(minutes=14))
    assert ws.json("rollcall", "remind", short)["rounds"] == []
    ws.freeze(T0 + timedelta(minutes=16))
    offset = prism.log_path.stat().st_size
    assert ws.json("rollcall", "remind", short)["rounds"] == [
        {"id": incident_id, "round": 2, "called": 2}]
    log = prism_log_since(prism.log_path, offset, expected_passes=2)
    assert f"post /2010-04-01/Accounts/{ACCOUNT}/Calls.json" in log
    assert [m for m in PRISM_VIOLATIONS if m in log] == [], log
    assert ws.json("rollcall", "remind", short)["rounds"] == []
    assert sorted(r.recipient_ref for r in staff_rows(ws, incident_id, "voice")) == [
        "party:staff:S2", "party:staff:S3"]

    # S2 needs help (a keypad digit): the manager and the duty desk are alerted at once.
    ws.freeze(T0 + timedelta(minutes=20))
    mark = len(mail)
    helped = response(ws).rollcall_answer(sender="+8613800138002", text="3",
                                          provider_id="CA1", via="voice")
    assert helped is not None and helped.alerted == ["M1", "duty_desk"]
    assert helped.sent is not None and helped.sent.report is not None
    alerts = to_staff(mail.since(mark))
    assert sorted(alerts) == ["duty-desk@example.com", "m1@example.com"]
    assert "需要協助" in str(alerts["m1@example.com"]["Subject"])
    assert "张伟" in text(alerts["duty-desk@example.com"])

    # Round 3 (watch applies it, as the receipts timer would): S3 alone is called again.
    ws.freeze(T0 + timedelta(minutes=32))
    watched = ws.json("watch", short, "--once")
    assert watched["rollcall"][incident_id]["round"] == 3
    assert "roll-call round 3: 1 staff not answering called" in " ".join(watched["escalated"])
    assert [r.recipient_ref for r in staff_rows(ws, incident_id, "voice")][2:] == [
        "party:staff:S3"]

    # Answers taken by phone, entered by a supervisor: S3 cannot work; S2 reached and safe.
    ws.freeze(T0 + timedelta(minutes=40))
    ws.run("rollcall", "answer", short, "--member", "S3", "2")
    ws.run("rollcall", "answer", short, "--member", "S2", "1")
    bad = ws.run("rollcall", "answer", short, "--member", "S404", "1", code=2)
    assert "member" in bad.stderr and "S404" in bad.stderr
    ws.freeze(T0 + timedelta(minutes=60))
    assert ws.json("rollcall", "remind")["rounds"] == []  # --max-rounds 3: no round 4

    status = ws.json("rollcall", "status", short)
    assert status["total"] == {"able": 3, "unable": 1, "need_help": 0, "unanswered": 0}
    assert status["branches"]["hk-central"]["able"] == 3
    assert status["teams"]["branch-ops"] == {"able": 0, "unable": 1, "need_help": 0,
                                            "unanswered": 0}
    assert {b: r["verdict"] for b, r in status["readiness"].items()} == {
        "hk-central": "can open", "gd-sz-futian": "cannot open"}
    [case] = status["need_help"]
    assert (case["member"], case["minutes_to_handle"]) == ("S2", 20.0)
    assert status["answered_within"] == {"50%": 5.0, "90%": 40.0, "100%": 40.0}
    assert not status["drill"]

    shown = ws.run("status", short, env={"COLUMNS": "200"}).stdout
    assert "Roll-call: 4 staff, round 3 of 3" in shown and "cannot open" in shown
    assert ws.json("status", short)["rollcall"]["readiness"]["hk-central"]["verdict"] == \
        "can open"
    # Announcing reopened branches: a warning (not a refusal) for the one that cannot open.
    reopened = ws.run("update", short, "-m", "Branches reopen", "--reopen", "hk-central",
                      "--reopen", "gd-sz-futian")
    assert ("gd-sz-futian cannot open per the staff roll-call: 0 of 1 staff needed able to "
            "work") in reopened.stderr
    assert "hk-central" not in reopened.stderr
    unknown = ws.run("update", short, "-m", "x", "--reopen", "nowhere", code=2)
    assert "--reopen" in unknown.stderr and "nowhere" in unknown.stderr
    report = ws.run("report", short, "--lang", "en").stdout
    assert "## Staff roll-call" in report and "| Time to 90% answered | 40.0 min |" in report
    assert "| S2 | M1, duty_desk | 20.0 min |" in report
    assert "## 员工平安点名" in ws.run("report", short).stdout
    timeline = ws.run("timeline", short, env={"COLUMNS": "300"}).stdout
    for secret in ("+8613800138002", "s1@example.com", ENV["TWILIO_AUTH_TOKEN"]):
        assert secret not in timeline + shown + report
    ws.run("verify", short)


def test_drill_rollcall_is_marked_and_scored(
        staff_ws: tuple[Workspace, Recorder, PrismServer]) -> None:
    ws, mail, _ = staff_ws
    ws.freeze(T0)
    incident_id = ws.json("start", "typhoon", "--title", "Drill: Signal No. 8", "--drill")["id"]
    mark = len(mail)
    ws.run("rollcall", "start", incident_id, "--audience", str(ws.root / "staff.csv"),
           "--every", "10m")
    emails = to_staff(mail.since(mark))
    assert str(emails["s1@example.com"]["Subject"]).startswith("[DRILL]")
    assert "【演练】" in str(emails["s2@example.com"]["Subject"])
    inbound = response(ws)
    for minute, phone in ((3, "+85291230001"), (6, "+85291230002"), (9, "+8613800138002"),
                          (12, "+8613800138003")):
        ws.freeze(T0 + timedelta(minutes=minute))
        assert inbound.rollcall_answer(sender=phone, text="1", provider_id=phone) is not None
    status = ws.json("rollcall", "status", incident_id)
    assert status["drill"] and status["answered_within"]["90%"] == 12.0
    assert (status["target_90"], status["target_90_met"]) == ("30m", True)
    assert "[DRILL] Roll-call" in ws.run("rollcall", "status", incident_id).stdout
    report = ws.run("report", incident_id, "--lang", "en").stdout
    assert "## Staff roll-call (DRILL)" in report
    assert "| 90% answered within the playbook's target (30m) | pass |" in report


def test_staff_list_with_no_usable_row_is_refused(sqlite_ws: Workspace) -> None:
    sqlite_ws.freeze(T0)
    incident_id = sqlite_ws.json("start", "typhoon", "--title", "Signal No. 8")["id"]
    path = sqlite_ws.root / "staff.csv"
    path.write_text(CUSTOMERS_HEADER.strip() + ",team,manager\n"
                    "S1,Mary,s1@example.com,,en,staff,hong-kong,hk-central,,normal,ops,S7\n",
                    encoding="utf-8")
    bad = sqlite_ws.run("rollcall", "start", incident_id, "--audience", str(path), code=2)
    assert "no usable row" in bad.stderr and "Traceback" not in bad.stderr
    assert "manager" in bad.stderr
    bad = sqlite_ws.run("rollcall", "status", incident_id, code=2)
    assert "no roll-call" in bad.stderr


def test_min_staff_must_be_a_whole_number(tmp_path: Path) -> None:
    from incident.branches import load_branches
    from incident.errors import BranchesInvalid

    path = tmp_path / "branches.csv"
    path.write_text(BRANCHES.replace(",2\n", ",two\n"), encoding="utf-8")
    with pytest.raises(BranchesInvalid) as caught:
        load_branches(path)
    [(where, message)] = caught.value.problems
    assert (where.line, where.field) == (2, "min_staff") and "'two'" in message
    path.write_text(BRANCHES, encoding="utf-8")
    assert [b.min_staff for b in load_branches(path)] == [2, 1, None]
