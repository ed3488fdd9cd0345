"""End to end over real SMTP: every recipient gets exactly one message per notice, in their
language, with the ETA — read back from an SMTP server on 127.0.0.1 (aiosmtpd)."""

from __future__ import annotations

import email
import email.policy
import re
import threading
from collections import Counter
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from cli_fixtures import Workspace
from counting_smtp import _LocalController


class Recorder:
    """aiosmtpd handler keeping every message as parsed, with its envelope recipients."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content or envelope.content,
                                          policy=email.policy.default)
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), parsed))  # type: ignore[arg-type]
        return "250 2.0.0 Ok: queued"


@pytest.fixture
def recorder() -> Iterator[tuple[Recorder, int]]:
    handler = Recorder()
    controller = _LocalController(handler, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


def test_each_recipient_gets_one_message_per_notice_in_their_language(
        ws: Workspace, recorder: tuple[Recorder, int]) -> None:
    handler, port = recorder
    ws.freeze("2026-11-24T01:40:00Z")  # 09:40 in Shanghai
    ws.use_smtp(port, connections=3)
    languages = {f"c{n}": ("zh-CN" if n % 3 else "en") for n in range(1, 31)}
    names = {"zh-CN": "客户", "en": "Customer"}
    ws.write_customers([f"{ref},{names[lang]} {ref},{ref}@example.com,,{lang},retail,guangdong,"
                        "gd,savings,"
                        f"{'urgent' if ref == 'c7' else 'normal'}"
                        for ref, lang in languages.items()])
    started = ws.json("start", "core-banking-outage", "--title", "核心系统故障", "--eta", "2h")
    incident_id = started["id"]
    ws.json("update", incident_id, "-m", "Failover in progress")
    ws.json("eta", incident_id, "13:00", "--reason", "Data checks take longer")
    ws.json("resolve", incident_id, "-m", "Restored")

    # The parties got their own internal notices (declared, ETA changed, resolved) through
    # the same server; customers got theirs.
    def customer(address: str) -> bool:
        return re.fullmatch(r"c\d+@example\.com", address) is not None

    parties = {r[0]: m for r, m in handler.messages if not customer(r[0])}
    assert {"it-ops@example.com", "compliance@example.com",
            "regulator-liaison@example.com"} <= set(parties)
    internal = [m for r, m in handler.messages if not customer(r[0])]
    # As a word: the chain head's hash in an internal notice may hold the letters "c7".
    assert not [m for m in internal
                if re.search(r"\bc7\b", m.get_body(("plain",)).get_content())]
    assert any("Severity" in m.get_body(("plain",)).get_content()
               or "级别" in m.get_body(("plain",)).get_content() for m in internal)
    messages = [(r, m) for r, m in handler.messages if customer(r[0])]
    assert len(messages) == 4 * 30
    per_recipient = Counter((rcpts[0], m["X-Incident-Notice"]) for rcpts, m in messages)
    assert set(per_recipient.values()) == {1}  # exactly one per notice, no duplicates
    assert {rcpts[0] for rcpts, _ in messages} == {f"{ref}@example.com" for ref in languages}
    assert len({m["Message-ID"] for _, m in messages}) == 120

    for rcpts, message in messages:
        ref = rcpts[0].split("@")[0]
        lang = languages[ref]
        assert message.get_content_type() == "multipart/alternative"
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        subject = message["Subject"]  # decoded from RFC 2047 by the parser
        notice = message["X-Incident-Notice"]
        has_chinese = any("\u4e00" <= ch <= "\u9fff" for ch in text.replace("核心系统故障", ""))
        assert has_chinese == (lang == "zh-CN"), (ref, lang)
        assert "核心系统故障" in subject or incident_id in subject
        if notice == "1":
            assert "11:40" in text and "11:40" in html  # the ETA, in local time
        if notice == "4":  # 1 initial, 2 to the parties, 3 update, 4 ETA changed
            assert "13:00" in text and "11:40" in text  # new and previous ETA
    # The urgent customer (c7, 7th in the file) is in the first wave of the first notice:
    # three connections send at once, so it is among the first three to arrive.
    first_notice = [rcpts[0] for rcpts, m in messages if m["X-Incident-Notice"] == "1"]
    assert "c7@example.com" in first_notice[:3]
