"""Email addresses with non-ASCII characters: the domain always goes out in IDNA; a non-ASCII
local part (张伟@example.com) is sent with SMTPUTF8 when the relay offers it, otherwise refused
when the audience is read, before anything is recorded (channels.email.smtp.smtputf8)."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cli_fixtures import Workspace
from counting_smtp import _LocalController

IDNA_DOMAIN = "li.na@xn--fsqu00a.xn--fiqs8s"  # li.na@例子.中国
CUSTOMERS = {"张伟@example.com", IDNA_DOMAIN, "mary@example.com"}  # the parties are not
ROWS = ["c1,张伟,张伟@example.com,,zh-CN,retail,guangdong,gd,savings,",
        "c2,李娜,li.na@例子.中国,,zh-CN,retail,guangdong,gd,savings,",
        "c3,Mary Chan,mary@example.com,,en,retail,guangdong,gd,savings,"]


class Relay:
    """aiosmtpd handler keeping each message's envelope, MAIL parameters and parsed form."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[list[str], list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = parse(envelope.original_content or envelope.content)
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), list(envelope.mail_options),
                                  parsed))  # type: ignore[arg-type]
        return "250 2.0.0 Ok: queued"


def parse(data: bytes) -> email.message.EmailMessage:
    """A message whose headers may be UTF-8 (RFC 6532): the stdlib's bytes parser reads
    headers as ASCII, its string parser as they are."""
    message = email.message_from_string(data.decode("utf-8"), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


@pytest.fixture
def relay() -> Iterator[Callable[[bool], tuple[Relay, int]]]:
    """Factory: `relay(smtputf8)` starts aiosmtpd offering SMTPUTF8 or not."""
    started: list[_LocalController] = []

    def start(smtputf8: bool) -> tuple[Relay, int]:
        handler = Relay()
        controller = _LocalController(handler, hostname="127.0.0.1", port=0,
                                      enable_SMTPUTF8=smtputf8)
        controller.start()
        started.append(controller)
        return handler, controller.port

    yield start
    for controller in started:
        controller.stop()


def _workspace(ws: Workspace, port: int, smtputf8: Any) -> None:
    """Customers with non-ASCII addresses, email over SMTP to `port` with this setting."""
    ws.use_smtp(port)
    ws.configure(lambda cfg: cfg["channels"]["email"]["smtp"].update(smtputf8=smtputf8))
    ws.write_customers(ROWS)


def _customer_messages(handler: Relay) -> dict[str, tuple[list[str], email.message.EmailMessage]]:
    return {rcpts[0]: (options, message) for rcpts, options, message in handler.messages
            if rcpts[0] in CUSTOMERS}


@pytest.mark.parametrize("setting", ["auto", True])
def test_a_relay_with_smtputf8_gets_non_ascii_addresses_with_it(
        sqlite_ws: Workspace, relay: Callable[[bool], tuple[Relay, int]], setting: Any) -> None:
    handler, port = relay(True)
    _workspace(sqlite_ws, port, setting)
    started = sqlite_ws.json("start", "core-banking-outage", "--title", "核心系统故障")
    assert started["deliveries_by_channel"]["email"] == {"sent": 3}
    got = _customer_messages(handler)
    assert set(got) == CUSTOMERS
    options, message = got["张伟@example.com"]
    assert "SMTPUTF8" in options
    assert message["To"].addresses[0].addr_spec == "张伟@example.com"
    assert message["To"].addresses[0].display_name == "张伟"
    # An ASCII local part with an IDNA domain needs no SMTPUTF8.
    options, message = got[IDNA_DOMAIN]
    assert "SMTPUTF8" not in options
    assert message["To"].addresses[0].addr_spec == IDNA_DOMAIN
    assert not message.defects and not message["To"].defects


@pytest.mark.parametrize("setting", ["auto", False])
def test_without_smtputf8_such_addresses_are_refused_when_the_audience_is_read(
        sqlite_ws: Workspace, relay: Callable[[bool], tuple[Relay, int]], setting: Any) -> None:
    handler, port = relay(False)
    _workspace(sqlite_ws, port, setting)
    result = sqlite_ws.run("start", "core-banking-outage", "--title", "核心系统故障")
    assert "2 customers affected, 1 rows skipped" in result.stdout
    assert "customers.csv:2" in result.stderr and "email" in result.stderr
    assert "SMTPUTF8" in result.stderr
    assert ("does not offer it" if setting == "auto" else "smtputf8 is false") in result.stderr
    assert "张伟@" not in result.stdout + result.stderr  # contacts stay masked
    # Nothing left pending for an address that can never be sent (exit 0: all sent).
    assert set(_customer_messages(handler)) == {IDNA_DOMAIN, "mary@example.com"}


def test_an_unreachable_relay_refuses_them_at_load_and_says_why(sqlite_ws: Workspace) -> None:
    import servers

    sqlite_ws.use_smtp(servers.free_port())  # nothing listens there
    sqlite_ws.write_customers(ROWS)
    result = sqlite_ws.run("start", "core-banking-outage", "--title", "核心系统故障",
                           "--queue-only")
    assert "could not be asked whether it offers it" in result.stderr
    assert "smtputf8: true" in result.stderr


def test_a_relay_that_stops_offering_it_fails_those_messages_permanently(
        sqlite_ws: Workspace, relay: Callable[[bool], tuple[Relay, int]]) -> None:
    handler, port = relay(False)
    _workspace(sqlite_ws, port, True)  # the operator says it does: recorded, refused at send
    result = sqlite_ws.run("start", "core-banking-outage", "--title", "核心系统故障", code=3)
    assert "SMTPUTF8" in result.stdout + result.stderr
    assert set(_customer_messages(handler)) == {IDNA_DOMAIN, "mary@example.com"}


def test_the_file_transport_writes_an_eml_with_the_utf8_address(sqlite_ws: Workspace) -> None:
    sqlite_ws.write_customers(ROWS)
    incident_id = sqlite_ws.json("start", "core-banking-outage", "--title", "核心系统故障")["id"]
    files = sqlite_ws.outbox_files(incident_id, "eml")
    assert len(files) == 3
    to = set()
    for path in files:
        message = parse(path.read_bytes())
        # The stdlib flags what RFC 6532 allows (and only that): a UTF-8 local part.
        defects = {type(d).__name__ for d in message["To"].defects}
        assert not message.defects and defects <= {"NonASCIILocalPartDefect"}
        to.add(message["To"].addresses[0].addr_spec)
        assert message.get_body(("plain",)).get_content()
    assert to == CUSTOMERS


def test_a_refused_address_leaves_the_customer_reached_by_sms(
        sqlite_ws: Workspace, relay: Callable[[bool], tuple[Relay, int]]) -> None:
    # Issue 11 §1: the refusal costs the email channel only; their SMS (file transport) goes.
    handler, port = relay(False)
    _workspace(sqlite_ws, port, "auto")
    sqlite_ws.write_customers(["c1,张伟,张伟@example.com,+8613800138001,zh-CN,retail,guangdong,"
                               "gd,savings,", *ROWS[1:]])
    result = sqlite_ws.run("start", "core-banking-outage", "--title", "核心系统故障")
    assert "customers.csv:2" in result.stderr and "SMTPUTF8" in result.stderr
    assert "3 customers affected" in result.stdout and "rows skipped" not in result.stdout
    assert set(_customer_messages(handler)) == {IDNA_DOMAIN, "mary@example.com"}
    incident = sqlite_ws.json("list")[0]["id"]
    sms = [json.loads(p.read_text(encoding="utf-8"))
           for p in sqlite_ws.outbox_files(incident, "json")]
    assert [m["to"] for m in sms] == ["+8613800138001"]
