"""Emails built once per (notice, language) equal per-recipient rendering, message by message."""

from __future__ import annotations

import email
import email.policy
import html
import re
from email.header import decode_header, make_header

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli_fixtures import Workspace
from incident import mime
from incident.channels.smtp_wire import wire_body
from incident.composer import Composer
from incident.mime import NAME, REF, EmailTemplate
from incident.response.journal import Journal
from incident.settings import load_runtime
from incident.store.outbox import OutboxRow

NAMES = ["张伟", "Mary \"M\" O'Brien", "<b>&amp;</b>", "{{ 7*7 }}", "李" * 30]


def _composer_and_row(ws: Workspace) -> tuple[Composer, OutboxRow, str]:
    incident_id = ws.json("start", "core-banking-outage", "--title", "核心系统故障",
                          "--queue-only")["id"]
    journal = Journal(load_runtime(str(ws.config), db=ws.db))
    event = journal.store.events(incident_id)[0]
    composer = Composer(journal.rt, journal.renderer, {(incident_id, 1): event.data["notice"]})
    row = OutboxRow(id=1, incident_id=incident_id, notice_seq=1, channel="email",
                    recipient_ref="c1", recipient_name="", address="c1@example.com",
                    language="zh-CN", priority=1, attempts=1,
                    message_id=f"<{incident_id}.x@example.com>", idempotency_key="k" * 64)
    return composer, row, incident_id


def _parts(data: bytes) -> tuple[str, str, str, str]:
    message = email.message_from_bytes(data, policy=email.policy.default)
    return (message["Subject"], display_name(data),
            message.get_body(("plain",)).get_content(),
            html.unescape(message.get_body(("html",)).get_content()))


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_shared_rendering_matches_rendering_each_recipient(sqlite_ws: Workspace,
                                                           lang: str) -> None:
    composer, row, _ = _composer_and_row(sqlite_ws)
    for name in NAMES:
        recipient = _with(row, name, lang)
        fast = composer.compose(recipient)
        notice = composer.notices[(row.incident_id, 1)]
        slow = composer._email_template(recipient, notice, lang, name, row.recipient_ref)
        expected = slow.build(name=name, ref=row.recipient_ref, to=row.address,
                              message_id=row.message_id, date="Tue, 24 Nov 2026 02:00:00 +0000")
        assert _parts(fast.data) == _parts(expected)
        assert _parts(fast.data)[1] == name
        # The SMTP channel writes it to DATA without reading it again, rightly.
        assert fast.data_ready and wire_body(fast.data) == fast.data + b".\r\n"
    # The shipped templates use the name as plain text: rendered once per language (and per
    # region with details of its own: none here).
    assert composer._emails[(row.incident_id, 1, lang, "")] is not None


def test_a_template_that_transforms_the_name_is_rendered_per_recipient(
        sqlite_ws: Workspace) -> None:
    greeting = sqlite_ws.root / "templates" / "system_failure" / "initial" / "email.text.en.txt"
    greeting.write_text("LOUD {{ customer.name|upper }}\n" + greeting.read_text("utf-8"),
                        "utf-8")
    composer, row, _ = _composer_and_row(sqlite_ws)
    out = composer.compose(_with(row, "Mary Chan", "en"))
    assert "LOUD MARY CHAN" in _parts(out.data)[2]
    assert out.data_ready and wire_body(out.data) == out.data + b".\r\n"
    assert composer._emails[(row.incident_id, 1, "en", "")] is None


def _with(row: OutboxRow, name: str, lang: str) -> OutboxRow:
    from dataclasses import replace

    return replace(row, recipient_name=name, language=lang)


def display_name(data: bytes) -> str:
    """The To header's display name decoded as RFC 2047 §6.2 says: the white space between two
    encoded-words is dropped. (The stdlib's address parser keeps it as a space, so a long name
    folded into several words, as the stdlib itself folds one, would not read back the same.)"""
    raw = email.message_from_bytes(data, policy=email.policy.compat32)["To"]
    decoded = str(make_header(decode_header(raw)))
    return decoded.rpartition(" <")[0].strip('"').replace('\\"', '"')


LONG_SUBJECT = "【服务中断】核心业务系统故障，请使用柜台或电话银行办理业务。" * 8
ENCODED_WORD = re.compile(rb"=\?[^?]+\?[bBqQ]\?[^?]*\?=")


@pytest.mark.parametrize("name", ["欧阳" * 200, "Mary Ann " * 45, "x" * 400, "张伟",
                                  'Li "Lina" Na', "Chan Tai Man 陈大文" * 20])
@pytest.mark.parametrize("subject", [LONG_SUBJECT + NAME, "Core banking outage " * 10 + NAME,
                                     "短"])
def test_headers_fold_within_the_limits_and_parse_back(name: str, subject: str) -> None:
    template = EmailTemplate(
        sender="示例银行股份有限公司客户服务中心" * 3 + " <service@example.com>",
        reply_to="示例银行客户服务中心（请勿直接回复本邮件）" * 2 + " <help@example.com>",
        subject=subject, text="尊敬的" + NAME + "：", html="<p>" + NAME + "</p>",
        headers=(("X-Incident-ID", "INC-20261124-3F2A7C"), ("Auto-Submitted", "auto-generated")))
    data = template.build(name=name, ref="C1", to="li.na@example.com",
                          message_id="<INC-20261124-3F2A7C.1.x@example.com>",
                          date="Tue, 24 Nov 2026 02:00:00 +0000")
    head = data.split(b"\r\n\r\n")[0]
    for line in head.split(b"\r\n"):
        # RFC 2047 §2: encoded-words ≤ 75 characters, on lines ≤ 76; RFC 5322: ≤ 78 preferred.
        assert all(len(word) <= 75 for word in ENCODED_WORD.findall(line)), line
        assert len(line) <= (76 if ENCODED_WORD.search(line) else 78), line
    # The strict policy raises on any defect the parser finds in a header.
    message = email.message_from_bytes(data, policy=email.policy.strict)
    for field in ("Subject", "From", "Reply-To", "To", "Date", "Message-ID", "Content-Type"):
        assert not message[field].defects, field
    assert message["Subject"] == " ".join(subject.replace(NAME, name).split())
    assert display_name(data) == " ".join(name.split())
    assert message["To"].addresses[0].addr_spec == "li.na@example.com"
    assert message["From"].addresses[0].addr_spec == "service@example.com"
    assert message.get_body(("plain",)).get_content() == "尊敬的" + name + "："


_AWKWARD = st.lists(st.sampled_from(["a", "张", ".", "\r", "\n", "\r\n", " ", "\t", "\x00", '"',
                                     "=?", "<", "\u2028"]), max_size=30).map("".join)


@settings(max_examples=200, deadline=None)
@given(name=_AWKWARD, ref=_AWKWARD, subject=_AWKWARD)
def test_a_message_said_to_be_data_ready_goes_into_data_unchanged(name: str, ref: str,
                                                                  subject: str) -> None:
    # What lets the SMTP channel skip reading every message before DATA (smtp_wire.wire_body
    # with ready=True): the claim is checked against the full normalisation, for names,
    # references and subjects with line breaks and dots anywhere.
    template = EmailTemplate(
        sender="示例银行 <service@example.com>", reply_to=None, subject=subject + NAME + REF,
        text="." + NAME + "\r\n." + REF, html="<p>\n." + NAME + "</p>",
        headers=(("X-Incident-ID", "INC-20261124-3F2A7C"),))
    to, message_id = "li.na@example.com", "<INC-20261124-3F2A7C.1.x@example.com>"
    data = template.build(name=name, ref=ref, to=to, message_id=message_id,
                          date="Tue, 24 Nov 2026 02:00:00 +0000")
    assert template.data_ready(to=to, message_id=message_id)
    assert wire_body(data) == data + b".\r\n"
    assert mime.data_ready(data)


def test_a_fixed_header_that_would_need_dot_stuffing_is_not_data_ready() -> None:
    template = EmailTemplate(sender="Bank <service@example.com>", reply_to=None, subject="S",
                             text="t", html="h", headers=(("X-Note", "a\r\n.b"),))
    to, message_id = "li.na@example.com", "<m@example.com>"
    data = template.build(name="n", ref="r", to=to, message_id=message_id, date="d")
    assert not template.data_ready(to=to, message_id=message_id)
    assert wire_body(data) != data + b".\r\n"
    assert not template.data_ready(to="x@example.com\r\n.", message_id=message_id)
