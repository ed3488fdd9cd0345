"""VERP return paths: with `bounces.verp_domain` set, every email notice is sent with envelope
MAIL FROM <verp_prefix>+<idempotency key>@<verp_domain> (the key a bounce is matched by) and
no Return-Path header of ours; without it, MAIL FROM is the From address as before. Checked
on a real SMTP server (aiosmtpd) that keeps each envelope."""

from __future__ import annotations

import email
from collections.abc import Iterator
from typing import Any

import pytest

import servers
from cli_fixtures import Workspace
from incident.store.outbox import idempotency_key

CUSTOMERS = [
    "c1,Li Na,li.na@customer.example,,en,retail,guangdong,gd-sz,savings,normal",
    "c2,Wang Fang,wang.fang@customer.example,,zh-CN,retail,guangdong,gd-sz,savings,normal",
]


@pytest.fixture
def smtp() -> Iterator[servers.EnvelopeServer]:
    server = servers.start_envelope_smtp()
    yield server
    server.stop()


def _customer_envelopes(server: servers.EnvelopeServer) -> dict[str, servers.Envelope]:
    return {e.rcpt_tos[0]: e for e in server.envelopes if e.rcpt_tos[0].endswith(
        "@customer.example")}


def test_verp_envelope_sender_names_the_row(sqlite_ws: Workspace,
                                            smtp: servers.EnvelopeServer) -> None:
    def edit(cfg: dict[str, Any]) -> None:
        cfg.setdefault("bounces", {}).update(verp_domain="notify.example.com",
                                             verp_prefix="bnc")
    sqlite_ws.configure(edit)
    sqlite_ws.use_smtp(smtp.port, connections=1)
    sqlite_ws.write_customers(CUSTOMERS)
    iid = str(sqlite_ws.json("start", "core-banking-outage", "--title", "Core down")["id"])
    sent = _customer_envelopes(smtp)
    assert set(sent) == {"li.na@customer.example", "wang.fang@customer.example"}
    for ref, address in (("c1", "li.na@customer.example"), ("c2", "wang.fang@customer.example")):
        key = idempotency_key(iid, 1, ref, "email")
        assert sent[address].mail_from == f"bnc+{key}@notify.example.com"
        message = email.message_from_bytes(sent[address].data)
        assert message["Return-Path"] is None  # the receiving MTA writes it from MAIL FROM
        assert "notify.example.com" not in str(message["From"])


def test_without_verp_domain_the_sender_is_the_from_address(
        sqlite_ws: Workspace, smtp: servers.EnvelopeServer) -> None:
    sqlite_ws.use_smtp(smtp.port, connections=1)
    sqlite_ws.write_customers(CUSTOMERS[:1])
    sqlite_ws.json("start", "core-banking-outage", "--title", "Core down")
    [sent] = _customer_envelopes(smtp).values()
    message = email.message_from_bytes(sent.data)
    assert sent.mail_from == email.utils.parseaddr(str(message["From"]))[1]
    assert "+" not in sent.mail_from
