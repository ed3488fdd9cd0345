"""`incident receipts poll`: against a fake walking messages and calls through their states
(tests/fake_twilio.py), and against Prism, which validates every request; plus the
StatusCallback every SMS and call is created with when receipts.public_url is set."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Iterator

import pytest
from test_channel_sms import PRISM_PASSED, PRISM_VIOLATIONS, prism_log_since, sms
from test_receipts_store import sent_sms, settled

from cli_fixtures import Workspace
from fake_twilio import FakeTwilio, serve_fake_twilio
from incident.channels.sms import TwilioChannel
from incident.settings import TwilioSettings
from incident.store import receipts as rc
from servers import PrismServer

ACCOUNT = "AC" + "0" * 32
TOKEN = "poll-test-token"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with serve_fake_twilio() as server:
        yield server


def polling(ws: Workspace, url: str, monkeypatch: pytest.MonkeyPatch, *, rate: float) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    ws.use_twilio(url)
    ws.configure(lambda cfg: cfg.update(receipts={"poll_rate": rate, "poll_every": "1s"}))


def test_poll_walks_messages_and_calls_until_settled_at_the_rate(
        ws: Workspace, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:
    polling(ws, fake.url, monkeypatch, rate=20)
    fake.walks = {"SM1": [("queued", None), ("sent", None), ("delivered", None)],
                  "SM2": [("sent", None), ("undelivered", 30003)],
                  "CA1": [("ringing", None), ("no-answer", None)]}
    store, incident_id = sent_sms(ws.db, ["SM1", "SM2", "CA1"])
    out = ws.json("receipts", "poll", incident_id[-6:], "--until", "30s")
    assert (out["unsettled"], out["errors"]) == (0, [])
    assert settled(store, "SM1") == ("delivered", None)
    assert settled(store, "SM2") == ("undelivered", "30003")
    assert settled(store, "CA1") == ("no_answer", None)
    assert fake.fetched == {"SM1": 3, "SM2": 2, "CA1": 2}  # nothing asked once settled
    gets = [r for r in fake.recorded() if r.method == "GET"]
    # One listing of the replies to our number (Messages.json?To=…), then the 7 fetches.
    assert [r.path.rsplit("/", 1)[1] for r in gets].count("Messages.json") == 1
    assert len(gets) == 8
    gaps = [b.at - a.at for a, b in itertools.pairwise(gets)]
    # The configured request rate holds (the first request's arrival includes opening the
    # connection, so the first gap is measured from a late start).
    assert min(gaps[1:]) >= 1 / 20 * 0.8, gaps
    with store.read() as conn:
        assert {r.source for r in rc.of_incident(conn, incident_id)} == {"poll"}
    store.close()


def test_poll_stops_at_the_time_limit_and_lists_what_failed(
        ws: Workspace, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:
    polling(ws, fake.url, monkeypatch, rate=50)
    fake.walks = {"SM1": [("sent", None)]}  # never settles; SM2 Twilio does not know
    store, _ = sent_sms(ws.db, ["SM1", "SM2"])
    out = ws.json("receipts", "poll", "--until", "2s")
    assert out["unsettled"] == 2
    assert any("SM2" in e and "404" in e for e in out["errors"]), out
    assert settled(store, "SM1") == ("accepted", None)
    store.close()


def test_poll_against_prism_sends_only_valid_requests(
        ws: Workspace, prism: PrismServer, monkeypatch: pytest.MonkeyPatch) -> None:
    polling(ws, prism.url, monkeypatch, rate=50)
    sids = ["SM" + secrets.token_hex(16), "CA" + secrets.token_hex(16)]
    store, _ = sent_sms(ws.db, sids)
    offset = prism.log_path.stat().st_size
    ws.json("receipts", "poll", "--until", "2s")
    log = prism_log_since(prism.log_path, offset, expected_passes=2)
    assert [marker for marker in PRISM_VIOLATIONS if marker in log] == [], log
    assert f"get /2010-04-01/Accounts/{ACCOUNT}/Messages/{sids[0]}.json" in log
    assert f"get /2010-04-01/Accounts/{ACCOUNT}/Calls/{sids[1]}.json" in log
    assert log.count(PRISM_PASSED) >= 2
    with store.read() as conn:
        assert conn.execute(rc.schema.receipts.select()).all()  # Prism's example, recorded
    store.close()


def test_sms_are_created_with_the_status_callback(fake: FakeTwilio,
                                                  prism: PrismServer) -> None:
    callback = "https://notify.example.com/twilio/status"
    for url in (fake.url, prism.url):
        channel = TwilioChannel(TwilioSettings(from_number="+15005550006", api_base_url=url),
                                rate=10.0, account_sid=ACCOUNT, auth_token=TOKEN,
                                status_callback=callback)

        async def once(ch: TwilioChannel = channel) -> bool:
            try:
                return (await ch.send(sms("+8613800138000"))).sent
            finally:
                await ch.close()

        assert asyncio.run(once())
    [created] = [r for r in fake.recorded() if r.method == "POST"]
    assert created.form["StatusCallback"] == callback


def test_calls_are_created_with_the_status_callback(prism: PrismServer) -> None:
    from test_channel_voice import CALLER, call, send
    from test_channel_voice import TOKEN as VOICE_TOKEN

    from incident.channels.voice import VoiceChannel

    callback = "https://notify.example.com/twilio/status"
    voice = VoiceChannel(TwilioSettings(from_number=CALLER, api_base_url=prism.url),
                         rate=100.0, concurrent=2, account_sid=ACCOUNT, auth_token=VOICE_TOKEN,
                         poll=0.05, max_call=1.0, status_callback=callback)
    assert voice.call_params(call("en", "+8613800138000"))["status_callback"] == callback
    offset = prism.log_path.stat().st_size
    [outcome] = send(voice, call("en", "+8613800138000"))
    assert outcome.sent, outcome
    log = prism_log_since(prism.log_path, offset, expected_passes=1)
    assert [marker for marker in PRISM_VIOLATIONS if marker in log] == [], log
