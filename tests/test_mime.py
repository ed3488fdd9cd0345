"""Emails built once per (notice, language) equal per-recipient rendering, message by message."""

from __future__ import annotations

import email
import email.policy
import html

import pytest

from cli_fixtures import Workspace
from incident.notices import Composer
from incident.service import Service
from incident.settings import load_runtime
from incident.store.outbox import OutboxRow

NAMES = ["张伟", "Mary \"M\" O'Brien", "<b>&amp;</b>", "{{ 7*7 }}", "李" * 30]


def _composer_and_row(ws: Workspace) -> tuple[Composer, OutboxRow, str]:
    incident_id = ws.json("start", "core-banking-outage", "--title", "核心系统故障",
                          "--queue-only")["id"]
    service = Service(load_runtime(str(ws.config), db=ws.db))
    event = service.store.events(incident_id)[0]
    composer = Composer(service.rt, service.renderer, {(incident_id, 1): event.data["notice"]})
    row = OutboxRow(id=1, incident_id=incident_id, notice_seq=1, channel="email",
                    recipient_ref="c1", recipient_name="", address="c1@example.com",
                    language="zh-CN", priority=1, attempts=1,
                    message_id=f"<{incident_id}.x@example.com>", idempotency_key="k" * 64)
    return composer, row, incident_id


def _parts(data: bytes) -> tuple[str, str, str, str]:
    message = email.message_from_bytes(data, policy=email.policy.default)
    return (message["Subject"], message["To"].addresses[0].display_name,
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
    # The shipped templates use the name as plain text: rendered once per language.
    assert composer._emails[(row.incident_id, 1, lang)] is not None


def test_a_template_that_transforms_the_name_is_rendered_per_recipient(
        sqlite_ws: Workspace) -> None:
    greeting = sqlite_ws.root / "templates" / "system_failure" / "initial" / "email.text.en.txt"
    greeting.write_text("LOUD {{ customer.name|upper }}\n" + greeting.read_text("utf-8"),
                        "utf-8")
    composer, row, _ = _composer_and_row(sqlite_ws)
    out = composer.compose(_with(row, "Mary Chan", "en"))
    assert "LOUD MARY CHAN" in _parts(out.data)[2]
    assert composer._emails[(row.incident_id, 1, "en")] is None


def _with(row: OutboxRow, name: str, lang: str) -> OutboxRow:
    from dataclasses import replace

    return replace(row, recipient_name=name, language=lang)
