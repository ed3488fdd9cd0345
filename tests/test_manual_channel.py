"""Minimal impact through the command line: the manual-handling channel announced in the
notices, manual cases logged (masked), reconciled, and `close` refusing while any is open —
on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import json

from click.testing import Result

from cli_fixtures import Workspace

ZH = ("C1,张伟,zhang.wei@example.com,+8613800138000,zh-CN,retail,guangdong,gd-sz-futian,"
      "savings,normal")
EN = "C2,Mary Chan,mary@example.org,+85291234567,en,private,hong-kong,hk-central,wealth,normal"

# The core-banking playbook's manual channel, as customers read it.
COUNTERS = {"en": "Branches can take urgent cash withdrawal requests",
            "zh-CN": "营业网点可登记紧急取款、办理挂失和开具证明"}
WORKAROUND = {"en": "Cards can still be used for purchases and ATM withdrawals within daily",
              "zh-CN": "银行卡在单日限额内仍可刷卡消费和在ATM取款"}


def _start(ws: Workspace, *extra: str) -> dict:
    ws.write_customers([ZH, EN])
    return ws.json("start", "core-banking-outage", "--title", "Core banking unavailable",
                   "--eta", "2h", *extra)


def _emails(ws: Workspace, incident_id: str, seq: int) -> dict[str, str]:
    """Plain-text body of each customer email of notice `seq`, by language of the customer."""
    bodies = {}
    for path in ws.outbox_files(incident_id, "eml"):
        if f"notice-{seq:03d}" not in path.parts:
            continue
        with open(path, "rb") as handle:
            message = email.message_from_binary_file(handle, policy=email.policy.default)
        to = message["To"].addresses[0].addr_spec
        lang = "zh-CN" if to == "zhang.wei@example.com" else "en"
        bodies[lang] = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert set(bodies) == {"zh-CN", "en"}, f"notice {seq}: {bodies.keys()}"
    return bodies


def _sms(ws: Workspace, incident_id: str, seq: int) -> dict[str, str]:
    bodies = {}
    for path in ws.outbox_files(incident_id, "json"):
        if f"notice-{seq:03d}" in path.parts:
            data = json.loads(path.read_text("utf-8"))
            bodies["zh-CN" if data["to"] == "+8613800138000" else "en"] = data["body"]
    assert set(bodies) == {"zh-CN", "en"}, f"notice {seq}: {bodies.keys()}"
    return bodies


def _output(result: Result) -> str:
    return result.stdout + result.stderr


def test_start_opens_the_manual_channel_and_the_first_notice_names_it(ws: Workspace) -> None:
    started = _start(ws)
    assert started["manual_channel"] is True
    status = ws.json("status", started["id"])
    assert status["manual_channel"]["open"] is True
    assert status["manual_channel"]["opened_at"] is not None
    texts = _emails(ws, started["id"], 1)
    for lang, text in texts.items():
        assert COUNTERS[lang] in text, lang
        assert WORKAROUND[lang] in text, lang
        assert "400-000-0000" in text  # the organisation's hotline (no override)
    assert "Manual channel: open" in ws.run("status", started["id"]).stdout


def test_no_manual_channel_keeps_it_closed_and_refuses_cases(ws: Workspace) -> None:
    started = _start(ws, "--no-manual-channel")
    assert started["manual_channel"] is False
    texts = _emails(ws, started["id"], 1)
    for lang, text in texts.items():
        assert COUNTERS[lang] not in text and WORKAROUND[lang] not in text, lang
    refused = ws.run("manual", "log", started["id"], "--customer", "C0042", "--request",
                     "Urgent cash", code=2)
    assert "not open" in refused.stderr
    assert f"manual open {started['id'][-6:]}" in refused.stderr
    assert ws.json("manual", "list", started["id"])["cases"] == []
    assert ws.json("status", started["id"])["manual_channel"]["open"] is False
    assert "Manual channel: not open" in ws.run("status", started["id"]).stdout


def test_overrides_given_to_manual_open_reach_the_next_update(ws: Workspace) -> None:
    started = _start(ws, "--no-manual-channel")
    opened = ws.json("manual", "open", started["id"], "--hotline", "400-888-9999",
                     "--workaround", "Pay with the app's QR code",
                     "--workaround-zh", "可使用手机银行扫码支付")
    assert opened["open"] is True and opened["hotline"] == "400-888-9999"
    # zh-HK customers get the Chinese text in Traditional characters (OpenCC s2hk).
    assert opened["workaround"] == {"en": "Pay with the app's QR code",
                                    "zh-CN": "可使用手机银行扫码支付",
                                    "zh-HK": "可使用手機銀行掃碼支付"}
    assert opened["counters"]["en"].startswith(COUNTERS["en"])  # the playbook's, kept
    updated = ws.json("update", started["id"], "-m", "Failover in progress")
    seq = updated["notice"]["seq"]
    texts = _emails(ws, started["id"], seq)
    assert "Pay with the app's QR code" in texts["en"]
    assert "可使用手机银行扫码支付" in texts["zh-CN"]
    for lang, text in texts.items():
        assert "400-888-9999" in text and COUNTERS[lang] in text
        assert WORKAROUND[lang] not in text  # overridden
    for text in _sms(ws, started["id"], seq).values():
        assert "400-888-9999" in text
    # The first notice, before the channel was opened, had none of it.
    assert all("400-888-9999" not in t for t in _emails(ws, started["id"], 1).values())
    assert all("400-888-9999" not in t for t in _sms(ws, started["id"], 1).values())


def test_log_records_amount_urgency_operator_and_rejects_bad_amounts(ws: Workspace) -> None:
    started = _start(ws)
    logged = ws.json("manual", "log", started["id"], "--customer", "C0042", "--request",
                     "Urgent cash withdrawal", "--amount", "5,000", "--urgent")
    assert (logged["case"], logged["customer"], logged["amount"], logged["urgent"]) == (
        "M001", "C0042", "5000.00", True)
    assert logged["logged_by"] == "duty-lead" and logged["reconciled_at"] is None
    second = ws.json("manual", "log", started["id"], "--customer", "C0043", "--request",
                     "Statement", "--amount", "1234.5")
    assert (second["case"], second["amount"], second["urgent"]) == ("M002", "1234.50", False)
    for bad in ("abc", "-5", "12.345", "NaN"):
        result = ws.run("manual", "log", started["id"], "--customer", "C0044", "--request",
                        "x", "--amount", bad, code=2)
        assert "--amount" in result.stderr, bad
    for empty in (("--customer", " ", "--request", "x"), ("--customer", "C1", "--request", "")):
        ws.run("manual", "log", started["id"], *empty, code=2)
    listed = ws.json("manual", "list", started["id"])
    assert [c["case"] for c in listed["cases"]] == ["M001", "M002"]  # nothing half-recorded
    assert listed["unreconciled"] == 2


def test_customers_typed_as_contacts_are_masked_everywhere(ws: Workspace) -> None:
    started = _start(ws)
    incident_id = started["id"]
    # A phone number (with and without country code) or an email typed instead of an id.
    refs = ["+8613922451876", "wang.fang@example.com", "13922451876", "C0042"]
    secrets = ["13922451876", "wang.fang@example.com", "wang.fang"]
    outputs = []
    for ref in refs:
        outputs.append(ws.run("manual", "log", incident_id, "--customer", ref, "--request",
                              "Lost card"))
        outputs.append(ws.run("--json", "manual", "log", incident_id, "--customer", ref,
                              "--request", "Lost card"))
    outputs += [ws.run("manual", "list", incident_id),
                ws.run("--json", "manual", "list", incident_id),
                ws.run("status", incident_id), ws.run("--json", "status", incident_id),
                ws.run("timeline", incident_id), ws.run("--json", "timeline", incident_id)]
    ws.json("manual", "reconcile", incident_id, "M001")
    ws.json("resolve", incident_id, "-m", "Restored")
    outputs.append(ws.run("close", incident_id, code=2))  # lists the unreconciled cases
    for result in outputs:
        for secret in secrets:
            assert secret not in _output(result), (secret, result.stdout, result.stderr)
    shown = [c["customer"] for c in ws.json("manual", "list", incident_id)["cases"]]
    assert len(shown) == 8 and shown[0::2] == shown[1::2]
    phone, mail, bare, plain = shown[0::2]
    assert phone.startswith("+86") and "******" in phone and phone.endswith("876")
    assert mail.endswith("@example.com") and "***" in mail
    assert "******" in bare and bare.endswith("876")
    assert plain == "C0042"  # a plain id is shown as typed
    assert "C0042" in outputs[-1].stderr and "M002" in outputs[-1].stderr
    assert "C0042" in ws.run("manual", "list", incident_id).stdout


def test_reconcile_checks_the_case_and_refuses_twice(ws: Workspace) -> None:
    started = _start(ws)
    incident_id = started["id"]
    ws.run("manual", "reconcile", incident_id, "M001", code=2)  # no case yet
    ws.json("manual", "log", incident_id, "--customer", "C0042", "--request", "Cash")
    ws.json("manual", "log", incident_id, "--customer", "C0043", "--request", "Card")
    unknown = ws.run("manual", "reconcile", incident_id, "M009", code=2)
    assert "M009" in unknown.stderr and "M001" in unknown.stderr and "M002" in unknown.stderr
    done = ws.json("manual", "reconcile", incident_id, "2", "--note", "Posted, ref 778")
    assert done["unreconciled"] == 1
    case = next(c for c in done["cases"] if c["case"] == "M002")
    assert case["reconciled_by"] == "duty-lead" and case["note"] == "Posted, ref 778"
    again = ws.run("manual", "reconcile", incident_id, "m002", code=2)
    assert "already" in again.stderr
    assert ws.json("status", incident_id)["manual_channel"]["unreconciled"] == 1


def test_close_is_refused_until_every_case_is_reconciled(ws: Workspace) -> None:
    started = _start(ws)
    incident_id = started["id"]
    ws.json("manual", "log", incident_id, "--customer", "C0042", "--request", "Cash")
    ws.json("manual", "log", incident_id, "--customer", "C0043", "--request", "Card")
    ws.json("manual", "reconcile", incident_id, "M001")
    ws.json("resolve", incident_id, "-m", "Restored")
    refused = ws.run("close", incident_id, code=2)
    assert "1 manual case(s) not reconciled" in refused.stderr
    assert "M002" in refused.stderr and "M001" not in refused.stderr
    assert ws.json("status", incident_id)["status"] == "resolved"
    ws.json("manual", "reconcile", incident_id, "M002")
    closed = ws.json("close", incident_id)
    assert closed["status"] == "closed"
    last = ws.json("timeline", incident_id)["events"][-1]
    assert last["type"] == "closed" and "forced" not in last["data"]


def test_force_close_needs_a_reason_and_records_it(ws: Workspace) -> None:
    started = _start(ws)
    incident_id = started["id"]
    ws.json("manual", "log", incident_id, "--customer", "C0042", "--request", "Cash")
    ws.json("resolve", incident_id, "-m", "Restored")
    for args in (("--force",), ("--force", "--reason", "  ")):
        result = ws.run("close", incident_id, *args, code=2)
        assert "--reason" in result.stderr
    closed = ws.json("close", incident_id, "--force", "--reason",
                     "Customer emigrated; case handed to the back office")
    assert closed["status"] == "closed"
    last = ws.json("timeline", incident_id)["events"][-1]
    assert last["type"] == "closed"
    assert last["data"]["forced"] is True
    assert last["data"]["reason"] == "Customer emigrated; case handed to the back office"
    assert last["data"]["unreconciled"] == ["M001"]
    assert ws.json("verify", incident_id)["verified"] == 1


def test_manual_close_stops_later_notices_announcing_the_channel(ws: Workspace) -> None:
    started = _start(ws)
    incident_id = started["id"]
    ws.json("manual", "open", incident_id, "--hotline", "400-888-9999")  # change while open
    ws.json("manual", "log", incident_id, "--customer", "C0042", "--request", "Cash")
    before = ws.json("update", incident_id, "-m", "Still working")
    for lang, text in _emails(ws, incident_id, before["notice"]["seq"]).items():
        assert COUNTERS[lang] in text and "400-888-9999" in text
    closed = ws.json("manual", "close", incident_id, "--note", "Branches back to normal")
    assert closed == {"id": incident_id, "open": False, "unreconciled": 1}
    ws.run("manual", "close", incident_id, code=2)  # not open any more
    ws.run("manual", "log", incident_id, "--customer", "C0043", "--request", "x", code=2)
    after = ws.json("update", incident_id, "-m", "Nearly there")
    texts = _emails(ws, incident_id, after["notice"]["seq"])
    for lang, text in texts.items():
        assert COUNTERS[lang] not in text and WORKAROUND[lang] not in text, lang
        assert "400-888-9999" not in text and "400-000-0000" in text
    assert all("400-888-9999" not in t for t in _sms(ws, incident_id,
                                                     after["notice"]["seq"]).values())
    status = ws.json("status", incident_id)["manual_channel"]
    assert status["open"] is False and status["unreconciled"] == 1
    # The cases stay listed (and to reconcile) after the channel closed.
    assert [c["case"] for c in ws.json("manual", "list", incident_id)["cases"]] == ["M001"]
