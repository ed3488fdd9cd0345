"""The voice channel: calls with inline TwiML against Prism (the published contract), a fake
that keeps calls in progress (the cap, the rate, error codes), and the command line (who is
called, the TwiML files, the dry run, bad config)."""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_calls import FakeCalls, serve_fake_calls
from test_channel_sms import PRISM_PASSED, PRISM_VIOLATIONS, prism_log_since

from cli_fixtures import Workspace
from fake_twilio import Scripted
from incident.channels.base import MessageRef, Outcome, VoiceOut
from incident.channels.twiml import say_language
from incident.channels.voice import VoiceChannel
from incident.rendering import LANGUAGES, PHASES, Renderer
from incident.resources import shipped
from incident.settings import DEFAULT_VOICES, TwilioSettings
from servers import PrismServer

ACCOUNT = "AC" + "0" * 32
TOKEN = "tok-voice-never-print-me"
CALLER = "+85230000000"
CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
SCRIPTS = {"zh-CN": "示例银行来电通知：核心系统故障，请拨打热线9 5 5 5 5。",
           "zh-HK": "示例銀行來電通知：分行暫停營業，請致電熱線8 5 2, 3 0 0 0, 0 0 0 0。",
           "en": "This is Example Bank. Branches are closed. Call 9 5 5 5 5."}
NUMBERS = ["+8613800138000", "+85291234567", "+14155550123"]


def call(lang: str, to: str, n: int = 1) -> VoiceOut:
    ref = MessageRef(incident_id="INC-1", notice_seq=1, channel="voice", message_id=f"m{n}",
                     idempotency_key=f"k{n}")
    voice = DEFAULT_VOICES[lang]
    return VoiceOut(ref=ref, to=to, script=SCRIPTS[lang], voice=voice,
                    language=say_language(lang, voice))


def channel(url: str, *, concurrent: int = 10, poll: float = 0.05) -> VoiceChannel:
    return VoiceChannel(TwilioSettings(from_number=CALLER, api_base_url=url), rate=100.0,
                        concurrent=concurrent, account_sid=ACCOUNT, auth_token=TOKEN,
                        poll=poll, max_call=30.0)


def send(ch: VoiceChannel, *calls: VoiceOut) -> list[Outcome]:
    async def run() -> list[Outcome]:
        try:
            return list(await asyncio.gather(*(ch.send(c) for c in calls)))
        finally:
            await ch.close()
    return asyncio.run(run())


def spoken(twiml: str) -> list[ET.Element]:
    """The <Say> elements of a call's TwiML (which must parse as XML)."""
    root = ET.fromstring(twiml.encode("utf-8"))
    assert root.tag == "Response"
    return root.findall("Say")


@pytest.fixture
def fake() -> Iterator[FakeCalls]:
    with serve_fake_calls() as server:
        yield server


# --- the real contract: Prism validates every Calls request ----------------------------------


def test_prism_accepts_every_call(prism: PrismServer) -> None:
    calls = [call(lang, NUMBERS[i % 3], n=i)
             for i, lang in enumerate(["zh-CN", "zh-HK", "en"] * 4)]
    offset = prism.log_path.stat().st_size

    outcomes = send(channel(prism.url), *calls)

    assert [o.error for o in outcomes if not o.sent] == []
    assert all(o.provider_ref and CALL_SID.match(o.provider_ref) for o in outcomes), outcomes
    log = prism_log_since(prism.log_path, offset, expected_passes=len(calls))
    assert [marker for marker in PRISM_VIOLATIONS if marker in log] == [], log
    assert log.count(f"post /2010-04-01/Accounts/{ACCOUNT}/Calls.json") >= len(calls)
    assert log.count(PRISM_PASSED) >= len(calls)


# --- what a call says, the cap on calls in progress, error codes (the fake) ------------------


@pytest.mark.parametrize("lang", ["zh-CN", "zh-HK", "en"])
def test_the_twiml_reads_the_script_twice_in_the_configured_voice(fake: FakeCalls,
                                                                  lang: str) -> None:
    [outcome] = send(channel(fake.url), call(lang, NUMBERS[0]))

    assert outcome.sent
    [created] = fake.creates
    assert (created.form["To"], created.form["From"]) == (NUMBERS[0], CALLER)
    assert set(created.form) == {"To", "From", "Twiml"}
    says = spoken(created.form["Twiml"])
    assert [s.text for s in says] == [SCRIPTS[lang]] * 2
    expected = {"zh-CN": "cmn-CN", "zh-HK": "yue-HK", "en": "en-US"}[lang]
    assert {(s.get("voice"), s.get("language")) for s in says} == {
        (DEFAULT_VOICES[lang], expected)}


def test_calls_in_progress_never_exceed_the_cap(fake: FakeCalls) -> None:
    fake.hold = 0.4
    calls = [call("en", NUMBERS[i % 3], n=i) for i in range(10)]

    outcomes = send(channel(fake.url, concurrent=3), *calls)

    assert all(o.sent for o in outcomes), outcomes
    assert len(fake.creates) == 10
    peak = max(c.in_progress for c in fake.creates)
    assert peak == 3, [c.in_progress for c in fake.creates]
    assert fake.polls > 0, "a call holds its slot until its status says it is over"


@pytest.mark.parametrize(("answer", "permanent", "code"), [
    (Scripted(400, 21211, "The 'To' number is not a valid phone number."), True, "21211"),
    (Scripted(400, 21214, "'To' phone number cannot be reached"), True, "21214"),
    (Scripted(400, 21215, "Geo permissions do not allow calls to this number"), True, "21215"),
    (Scripted(400, 21217, "Phone number does not appear to be valid"), True, "21217"),
    (Scripted(400, 21210, "'From' phone number not verified"), True, "21210"),
    (Scripted(429, 20429, "Too Many Requests"), False, "20429"),
    (Scripted(503, None, "Service Unavailable"), False, "http-5xx"),
    (Scripted(401, 20003, "Authenticate"), False, "auth"),
])
def test_call_errors_are_classified(fake: FakeCalls, answer: Scripted, permanent: bool,
                                    code: str) -> None:
    fake.status_override = answer
    ch = channel(fake.url, concurrent=1)

    [first] = send(ch, call("zh-CN", NUMBERS[0]))
    fake.status_override = None
    [second] = send(ch, call("zh-CN", NUMBERS[1], n=2))

    assert (first.sent, first.permanent, first.code) == (False, permanent, code)
    assert NUMBERS[0] not in (first.error or "") and TOKEN not in (first.error or "")
    # A failed create frees its slot: the next call (one slot only) is not held up, unless
    # the credentials were refused (then every call would fail the same way).
    assert second.sent == (code != "auth"), second


# --- the command line -------------------------------------------------------------------------

HEADER = "id,name,email,phone,language,segment,region,branch,products,priority,voice\n"
CUSTOMERS = [
    "C1,张伟,,+8613800138000,zh-CN,retail,guangdong,gd-sz-futian,savings,urgent,",
    "C2,Chan Tai Man,,+85291234567,en,retail,hong-kong,hk-central,savings,normal,yes",
    "C3,李娜,,+8613922451876,zh-CN,retail,guangdong,gd-sz-futian,savings,urgent,no",
    "C4,王芳,wang@example.com,,zh-CN,retail,guangdong,gd-sz-futian,savings,urgent,yes",
    "C5,Mary Lee,,+14155550123,en,retail,hong-kong,hk-central,savings,normal,",
]


def voice_workspace(ws: Workspace, who: str = "urgent") -> None:
    """Customers with a voice column and a typhoon playbook that also calls."""
    (ws.root / "customers.csv").write_text(HEADER + "".join(r + "\n" for r in CUSTOMERS),
                                           encoding="utf-8")
    playbook = ws.root / "playbooks" / "typhoon.yaml"
    text = playbook.read_text(encoding="utf-8")
    old = "  channels: [email, sms]\n"
    assert old in text
    playbook.write_text(text.replace(old, f"  channels: [sms, voice]\n  voice: {{who: {who}}}\n"),
                        encoding="utf-8")


def test_file_transport_writes_the_twiml_of_each_chosen_customer(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    voice_workspace(ws)
    ws.configure(lambda cfg: cfg["channels"].update(
        voice={"voices": {"zh-CN": "Google.cmn-CN-Standard-A", "en": "Polly.Amy-Neural"}}))

    started = ws.json("start", "typhoon", "--title", "Signal No. 8")

    files = ws.outbox_files(started["id"], "xml")
    # C1 urgent; C2 asked; not C3 (said no), C4 (no phone), C5 (normal, unsaid).
    assert len(files) == 2, files
    by_voice = {}
    for path in files:
        says = spoken(path.read_text(encoding="utf-8"))
        assert len(says) == 2 and says[0].text == says[1].text
        assert "4 0 0, 0 0 0, 0 0 0 0" in (says[0].text or ""), "the hotline, digit by digit"
        by_voice[says[0].get("voice")] = (says[0].get("language"), says[0].text)
    assert set(by_voice) == {"Google.cmn-CN-Standard-A", "Polly.Amy-Neural"}
    assert by_voice["Google.cmn-CN-Standard-A"][0] == "cmn-CN"
    assert "张伟您好" in by_voice["Google.cmn-CN-Standard-A"][1]
    assert by_voice["Polly.Amy-Neural"][0] == "en-US"
    assert "Chan Tai Man" in by_voice["Polly.Amy-Neural"][1]
    assert started["deliveries_by_channel"]["voice"]["sent"] == 2


@pytest.mark.parametrize(("who", "calls"), [("urgent", 2), ("all", 3), ("none", 1)])
def test_dry_run_counts_calls_and_estimates_their_time(sqlite_ws: Workspace, who: str,
                                                       calls: int) -> None:
    voice_workspace(sqlite_ws, who)

    plan = sqlite_ws.json("start", "typhoon", "--title", "Signal No. 8", "--dry-run")

    assert sum(plan["messages"]["voice"].values()) == calls
    assert sum(c["calls"] for c in plan["calls"].values()) == calls
    assert all(c["seconds"] > 20 for c in plan["calls"].values()), plan["calls"]
    assert plan["estimated_seconds"]["voice"] > 20
    text = sqlite_ws.run("start", "typhoon", "--title", "Signal No. 8", "--dry-run").stdout
    assert "Calls (the notice read twice)" in text and "voice" in text


def test_calls_over_twilio_keep_the_rate_in_every_second(sqlite_ws: Workspace,
                                                         fake: FakeCalls) -> None:
    ws = sqlite_ws
    voice_workspace(ws, "all")
    fake.hold = 0.05
    ws.configure(lambda cfg: cfg["channels"].update(voice={
        "transport": "twilio", "rate": 2, "concurrent": 5,
        "twilio": {"from_number": CALLER, "api_base_url": fake.url}}))
    rows = [f"C{i},Name {i},,+1415555{i:04d},en,retail,hong-kong,hk-central,savings,normal,yes"
            for i in range(10)]
    (ws.root / "customers.csv").write_text(HEADER + "".join(r + "\n" for r in rows),
                                           encoding="utf-8")
    env = {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN}

    started = ws.run("--json", "start", "typhoon", "--title", "Signal No. 8", env=env)

    assert started.exit_code == 0
    arrivals = sorted(c.at for c in fake.creates)
    assert len(arrivals) == 10
    worst = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert worst <= 2, arrivals
    assert TOKEN not in started.output


@pytest.mark.parametrize(("voice", "field"), [
    ({"voices": {"fr": "Polly.Lea"}}, "channels.voice"),
    ({"transport": "twilio"}, "channels.voice"),
    ({"transport": "twilio", "twilio": {"from_number": "85230000000"}},
     "channels.voice.twilio.from_number"),
    ({"concurrent": 0}, "channels.voice.concurrent"),
])
def test_bad_voice_config_is_refused_naming_the_field(sqlite_ws: Workspace,
                                                      voice: dict[str, object],
                                                      field: str) -> None:
    sqlite_ws.configure(lambda cfg: cfg["channels"].update(voice=voice))

    result = sqlite_ws.run("start", "typhoon", "--title", "x", "--dry-run", code=2)

    assert field in result.stderr and "Traceback" not in result.stderr


def test_twilio_voice_needs_the_credentials_before_recording(sqlite_ws: Workspace,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.delenv("TWILIO_ACCOUNT_SID", raising=False)
    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    voice_workspace(sqlite_ws)
    sqlite_ws.configure(lambda cfg: cfg["channels"].update(voice={
        "transport": "twilio", "twilio": {"from_number": CALLER}}))

    result = sqlite_ws.run("start", "typhoon", "--title", "x", code=2)

    assert "TWILIO_ACCOUNT_SID" in result.stderr and "channels.voice" in result.stderr
    assert sqlite_ws.json("list", "--all") in ([], {"incidents": []})


def test_a_bad_voice_cell_names_its_line_and_field(sqlite_ws: Workspace) -> None:
    voice_workspace(sqlite_ws)
    path = sqlite_ws.root / "customers.csv"
    path.write_text(path.read_text(encoding="utf-8").replace(",urgent,no\n", ",urgent,maybe\n"),
                    encoding="utf-8")

    result = sqlite_ws.run("start", "typhoon", "--title", "x", "--dry-run")

    assert "customers.csv:4" in result.output and "voice" in result.output
    assert "maybe" in result.output


# --- the scripts ------------------------------------------------------------------------------


@pytest.mark.parametrize("template_set", ["system_failure", "natural_disaster"])
@pytest.mark.parametrize("phase", PHASES)
def test_every_shipped_phase_has_a_voice_script_per_language(template_set: str,
                                                             phase: str) -> None:
    root = shipped("templates")
    renderer = Renderer([root])
    context = {"incident": {"drill": False, "title": "T"}, "customer": {"name": "N"},
               "org": {"name": "O", "hotline": "95555"}, "manual": {"hotline": ""},
               "eta": {"known": True, "at": "12:00", "reason": "R", "previous": "11:00"},
               "notice": {"message": "M"}, "next_update": "11:30", "resolved": {"at": "13:00"}}
    for lang in sorted({*LANGUAGES, "zh-HK"}):
        path = Path(root) / template_set / phase / f"voice.{lang}.txt"
        assert path.is_file(), path
        text = renderer.env.get_template(f"{template_set}/{phase}/voice.{lang}.txt").render(
            context)
        assert "9 5 5 5 5" in text, (lang, text)
