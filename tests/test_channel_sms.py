"""The Twilio SMS channel: the real API contract through Prism, faults through a scripted fake."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import socket
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from fake_twilio import FakeTwilio, Scripted, serve_fake_twilio
from incident.channels.base import EmailOut, MessageRef, Outcome, Outgoing, SmsOut
from incident.channels.sms import BaseUrlHttpClient, OffBaseUrl, TwilioChannel
from incident.rendering import sms_segments
from incident.settings import TwilioSettings
from servers import PrismServer

ACCOUNT = "AC" + "0" * 32
SERVICE = "MG" + "0" * 32
SENDER = "+15005550006"
TOKEN = "tok-9f8e7d6c5b4a-never-print-me"
MESSAGE_SID = re.compile(r"^SM[0-9a-fA-F]{32}$")

ENGLISH = ("Bank notice: card payments are down since 14:05. Use the mobile app or call "
           "95555. Next update by 15:00.")
CHINESE = "【某银行】银行卡支付暂时中断，预计15:00恢复。请使用手机银行或致电95555。"
NUMBERS = ["+8613800138000", "+14155550123", "+447700900123", "+85291234567"]

PRISM_REJECTED = "Request did not pass the validation rules"
# Any of these after our sends means a request broke the published contract.
PRISM_VIOLATIONS = (PRISM_REJECTED, "Request terminated with error", "violation")
PRISM_PASSED = "The request passed the validation rules"


def sms(to: str, body: str = ENGLISH, n: int = 1) -> SmsOut:
    ref = MessageRef(incident_id="INC-1", notice_seq=1, channel="sms", message_id=f"m{n}",
                     idempotency_key=f"k{n}")
    return SmsOut(ref=ref, to=to, body=body, info=sms_segments(body))


def channel(base_url: str, *, timeout: float = 10.0, from_number: str | None = SENDER,
            service: str | None = None) -> TwilioChannel:
    settings = TwilioSettings(from_number=from_number, messaging_service_sid=service,
                              api_base_url=base_url)
    return TwilioChannel(settings, rate=10.0, account_sid=ACCOUNT, auth_token=TOKEN,
                         timeout=timeout)


async def send_all(ch: TwilioChannel, messages: list[Outgoing]) -> list[Outcome]:
    """Send concurrently, as the dispatcher does, then close like the dispatcher."""
    try:
        return list(await asyncio.gather(*(ch.send(m) for m in messages)))
    finally:
        await ch.close()


def send(ch: TwilioChannel, *messages: Outgoing) -> list[Outcome]:
    return asyncio.run(send_all(ch, list(messages)))


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with serve_fake_twilio() as server:
        yield server


# --- the real contract: Prism validates each request against Twilio's OpenAPI description ---


def prism_log_since(log_path: Path, offset: int, expected_passes: int) -> str:
    # Prism writes its log lines before answering, but give the file a moment to catch up.
    deadline = time.monotonic() + 3
    while True:
        with open(log_path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
        if text.count(PRISM_PASSED) >= expected_passes or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


@pytest.mark.parametrize(("from_number", "service"), [
    (SENDER, None),
    (None, SERVICE),
    (SENDER, SERVICE),
], ids=["from-number", "messaging-service", "both"])
def test_prism_accepts_concurrent_sends(prism: PrismServer, from_number: str | None,
                                        service: str | None) -> None:
    messages: list[Outgoing] = [
        sms(NUMBERS[i % len(NUMBERS)], ENGLISH if i % 2 else CHINESE, n=i) for i in range(20)]
    assert {m.info.encoding for m in messages if isinstance(m, SmsOut)} == {"GSM-7", "UCS-2"}
    offset = prism.log_path.stat().st_size

    outcomes = send(channel(prism.url, from_number=from_number, service=service), *messages)

    assert [o.error for o in outcomes if not o.sent] == []
    assert all(o.provider_ref and MESSAGE_SID.match(o.provider_ref) for o in outcomes), outcomes
    log = prism_log_since(prism.log_path, offset, expected_passes=20)
    assert [marker for marker in PRISM_VIOLATIONS if marker in log] == [], log
    assert log.count(f"post /2010-04-01/Accounts/{ACCOUNT}/Messages.json") >= 20
    assert log.count(PRISM_PASSED) == 20


def test_prism_log_shows_a_rejected_request(prism: PrismServer) -> None:
    """The check above can fail: a request that breaks the contract is logged as such."""
    offset = prism.log_path.stat().st_size

    [outcome] = send(channel(prism.url, from_number=None, service="MG123"), sms(NUMBERS[0]))

    assert outcome.permanent and outcome.code == "http-422", outcome
    log = prism_log_since(prism.log_path, offset, expected_passes=0)
    assert PRISM_REJECTED in log
    assert "MessagingServiceSid must match pattern" in log


# --- faults, through the scripted fake -------------------------------------------------------


@pytest.mark.parametrize(("to", "code"), [
    ("+15005550001", "21211"),
    ("+15005550004", "21610"),
    ("+15005550009", "21614"),
])
def test_magic_numbers_fail_permanently(fake: FakeTwilio, to: str, code: str) -> None:
    [outcome] = send(channel(fake.url), sms(to))

    assert (outcome.sent, outcome.permanent, outcome.code) == (False, True, code)
    assert f"Twilio error {code}" in (outcome.error or "")
    assert to not in (outcome.error or ""), "the full number must be masked"
    assert TOKEN not in (outcome.error or "")


@pytest.mark.parametrize(("answer", "permanent", "code", "fatal"), [
    (Scripted(400, 21408, "Permission to send an SMS has not been enabled"), True, "21408", False),
    (Scripted(400, 21612, "The 'To' phone number is not currently reachable"), True, "21612",
     False),
    (Scripted(400, 21608, "The number is unverified"), True, "21608", False),
    (Scripted(400, 21606, "The 'From' phone number is not a valid, SMS-capable number"),
     True, "21606", False),
    (Scripted(400, 21602, "Message body is required."), True, "21602", False),
    (Scripted(404, 20404, "The requested resource was not found"), True, "20404", False),
    (Scripted(418, None, "I'm a teapot"), True, "http-418", False),
    (Scripted(429, 20429, "Too Many Requests"), False, "20429", False),
    (Scripted(429, None, "Too Many Requests"), False, "20429", False),
    (Scripted(400, 20429, "Too Many Requests"), False, "20429", False),
    (Scripted(500, 20500, "Internal Server Error"), False, "http-5xx", False),
    (Scripted(503, None, "Service Unavailable"), False, "http-5xx", False),
    (Scripted(401, 20003, "Authenticate"), False, "auth", True),
    (Scripted(403, 20003, "Forbidden"), False, "auth", True),
    (Scripted(301, None, "Moved Permanently"), False, "http-301", True),
])
def test_error_answers_are_classified(fake: FakeTwilio, answer: Scripted, permanent: bool,
                                      code: str, fatal: bool) -> None:
    fake.status_override = answer
    ch = channel(fake.url)

    [outcome] = send(ch, sms(NUMBERS[1]))

    assert (outcome.sent, outcome.permanent, outcome.code) == (False, permanent, code)
    assert f"HTTP {answer.status}" in (outcome.error or ""), outcome.error
    assert (ch.fatal is not None) == fatal
    assert len(fake.recorded()) == 1, "one request per send: the SDK never retries a POST"
    [again] = send(ch, sms(NUMBERS[2], n=2))
    assert (again.sent, again.permanent, again.code) == (False, permanent, code)
    assert len(fake.recorded()) == (1 if fatal else 2), "a fatal answer stops sending"


def test_429_burst_is_temporary_then_sends_succeed(fake: FakeTwilio) -> None:
    fake.burst = 3
    ch = channel(fake.url)

    first = send(ch, *(sms(NUMBERS[0], n=i) for i in range(3)))
    then = send(ch, *(sms(NUMBERS[0], n=i) for i in range(3, 5)))

    assert [(o.sent, o.permanent, o.code) for o in first] == [(False, False, "20429")] * 3
    assert all(o.sent and o.provider_ref and MESSAGE_SID.match(o.provider_ref) for o in then)
    assert [r.status for r in fake.recorded()] == [429, 429, 429, 201, 201]


@pytest.mark.parametrize(("from_number", "service", "fields"), [
    (SENDER, None, {"To", "Body", "From"}),
    (None, SERVICE, {"To", "Body", "MessagingServiceSid"}),
    (SENDER, SERVICE, {"To", "Body", "From", "MessagingServiceSid"}),
])
def test_request_carries_only_what_the_api_knows(fake: FakeTwilio, from_number: str | None,
                                                 service: str | None, fields: set[str]) -> None:
    [outcome] = send(channel(fake.url, from_number=from_number, service=service),
                     sms(NUMBERS[0], CHINESE))

    assert outcome.sent
    [request] = fake.recorded()
    assert (request.method, request.account_sid, request.username) == ("POST", ACCOUNT, ACCOUNT)
    assert sorted(request.fields) == sorted(fields), "no field twice, none unknown to the API"
    assert (request.form["To"], request.form["Body"]) == (NUMBERS[0], CHINESE)
    assert request.form.get("From") == from_number
    assert request.form.get("MessagingServiceSid") == service


def test_unreachable_base_url_is_temporary() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    [outcome] = send(channel(f"http://127.0.0.1:{port}"), sms(NUMBERS[0]))

    assert (outcome.sent, outcome.permanent, outcome.code) == (False, False, "network")
    assert f"127.0.0.1:{port}" in (outcome.error or "")


def test_slow_answer_times_out_as_temporary(fake: FakeTwilio) -> None:
    fake.delay = 2.0
    started = time.monotonic()

    [outcome] = send(channel(fake.url, timeout=0.3), sms(NUMBERS[0]))

    assert (outcome.sent, outcome.permanent, outcome.code) == (False, False, "timeout")
    assert time.monotonic() - started < 1.5


def test_unreadable_success_body_is_temporary(fake: FakeTwilio) -> None:
    fake.raw_body = b"<html>OK</html>"

    [outcome] = send(channel(fake.url), sms(NUMBERS[0]))

    assert (outcome.sent, outcome.permanent, outcome.code) == (False, False, "bad-response")


def test_bad_credentials_are_fatal_and_never_shown(fake: FakeTwilio) -> None:
    fake.credentials = (ACCOUNT, "the-right-token")
    fake.echo_credentials = True  # a server that repeats the token back must not leak it
    ch = channel(fake.url)

    first = send(ch, sms(NUMBERS[0], n=1))
    later = send(ch, sms(NUMBERS[1], n=2), sms(NUMBERS[2], n=3))

    assert [(o.sent, o.permanent, o.code) for o in first + later] == [(False, False, "auth")] * 3
    assert ch.fatal and "HTTP 401" in ch.fatal and "\n" not in ch.fatal
    assert "***" in (first[0].error or ""), "the echoed token was redacted"
    shown = [ch.fatal, repr(ch), *(o.error or "" for o in first + later)]
    assert not [text for text in shown if TOKEN in text]
    assert len(fake.recorded()) == 1, "after the credentials failed, nothing more is sent"


def test_right_credentials_are_accepted(fake: FakeTwilio) -> None:
    fake.credentials = (ACCOUNT, TOKEN)

    [outcome] = send(channel(fake.url), sms(NUMBERS[0]))

    assert outcome.sent, outcome
    [request] = fake.recorded()
    assert (request.username, request.status) == (ACCOUNT, 201)
    assert outcome.provider_ref == request.sid


def test_token_is_not_logged(fake: FakeTwilio, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the SDK logs every request and its headers at INFO
    fake.status_override = Scripted(401, 20003, "Authenticate")
    encoded = base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()

    send(channel(fake.url), sms(NUMBERS[0]))

    assert "Twilio API Request" in caplog.text, "the SDK's request log was captured"
    assert TOKEN not in caplog.text
    assert encoded not in caplog.text


def test_sends_run_concurrently_in_one_event_loop(fake: FakeTwilio) -> None:
    fake.delay = 0.4
    started = time.monotonic()

    outcomes = send(channel(fake.url), *(sms(NUMBERS[i % 4], n=i) for i in range(10)))

    assert all(o.sent for o in outcomes)
    assert time.monotonic() - started < 2.0, "10 sends of 0.4 s each must overlap"
    arrivals = [r.at for r in fake.recorded()]
    assert max(arrivals) - min(arrivals) < 0.3


def test_channel_built_outside_the_loop_serves_several_runs(fake: FakeTwilio) -> None:
    ch = channel(fake.url)  # built before any event loop runs, as build_channels does

    for n in range(3):  # each `incident deliver` is one asyncio.run, then close()
        [outcome] = send(ch, sms(NUMBERS[0], n=n))
        assert outcome.sent, outcome

    assert len(fake.recorded()) == 3


def test_twilio_edge_in_environment_does_not_move_requests(
        fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")

    [outcome] = send(channel(fake.url), sms(NUMBERS[0]))

    assert outcome.sent, outcome
    assert len(fake.recorded()) == 1


@pytest.mark.parametrize(("base", "url", "expected"), [
    ("http://127.0.0.1:4010", "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json",
     "http://127.0.0.1:4010/2010-04-01/Accounts/AC1/Messages.json"),
    ("https://gw.example.com/twilio/", "https://api.twilio.com/2010-04-01/x",
     "https://gw.example.com/twilio/2010-04-01/x"),
    ("https://api.twilio.com", "https://api.twilio.com/2010-04-01/x",
     "https://api.twilio.com/2010-04-01/x"),
])
def test_base_url_rewrite(base: str, url: str, expected: str) -> None:
    assert BaseUrlHttpClient(base, timeout=1).rewrite(url) == expected


@pytest.mark.parametrize("url", [
    "https://messaging.twilio.com/v1/Services",
    "https://api.sydney.au1.twilio.com/2010-04-01/x",
    "https://api.twilio.com.evil.example/2010-04-01/x",
])
def test_other_hosts_are_refused(url: str) -> None:
    with pytest.raises(OffBaseUrl):
        BaseUrlHttpClient("http://127.0.0.1:4010", timeout=1).rewrite(url)


def test_email_is_refused_without_a_request(fake: FakeTwilio) -> None:
    message = EmailOut.from_message(sms(NUMBERS[0]).ref, EmailMessage())

    [outcome] = send(channel(fake.url), message)

    assert (outcome.sent, outcome.permanent, outcome.code) == (False, True, "wrong-channel")
    assert fake.recorded() == []


@pytest.mark.parametrize(("base", "message"), [
    ("ftp://127.0.0.1", "http"),
    ("127.0.0.1:4010", "http"),
    ("https://gateway:gw-pass-123@sms.example.com", "user:password@"),
])
def test_bad_base_urls_are_refused(base: str, message: str) -> None:
    settings = TwilioSettings(from_number=SENDER, api_base_url=base)
    with pytest.raises(ValueError, match=message) as info:
        TwilioChannel(settings, rate=1.0, account_sid=ACCOUNT, auth_token=TOKEN)
    assert "gw-pass-123" not in str(info.value)


@pytest.mark.parametrize(("account", "token"), [("", TOKEN), (ACCOUNT, "")])
def test_missing_credentials_are_refused(account: str, token: str) -> None:
    settings = TwilioSettings(from_number=SENDER)
    with pytest.raises(ValueError, match="TWILIO_AUTH_TOKEN"):
        TwilioChannel(settings, rate=1.0, account_sid=account, auth_token=token)
