"""Parties' chat webhooks against a real aiohttp server on 127.0.0.1: each vendor's payload,
DingTalk's and Feishu's signatures checked with the vendors' documented recipes (written out
here, not taken from the code under test), the generic kind's X-Incident-Signature, the
classification of answers, and `incident start` delivering to a party's webhook end to end."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cli_fixtures import Workspace
from incident.channels.base import MessageRef, Outcome, WebhookOut
from incident.channels.webhook import WebhookChannel
from servers import ChatServer, HookRequest, start_chat_server

SECRET = "SECtest-signing-secret-0123456789"
TEXT = "【启动应急预案】INC-1 核心系统故障 <b>&</b>"
TITLE = "【启动应急预案】INC-1 核心系统故障"
EVENT = {"type": "incident.notice", "id": "k" * 64, "incident": {"id": "INC-1"}}


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = start_chat_server()
    try:
        yield server
    finally:
        server.stop()


def _message(url: str, kind: str) -> WebhookOut:
    ref = MessageRef(incident_id="INC-1", notice_seq=2, channel="webhook",
                     message_id="<m@x>", idempotency_key="k" * 64, internal=True)
    return WebhookOut(ref=ref, party="ops", url=url, kind=kind, title=TITLE, text=TEXT,
                      event=EVENT)


def _send(url: str, kind: str, *, secret: str | None = SECRET, timeout: float = 5.0,
          now: float | None = None) -> Outcome:
    channel = WebhookChannel({"ops": secret} if secret else {}, timeout=timeout,
                             now=(lambda: now) if now is not None else time.time)

    async def go() -> Outcome:
        try:
            return await channel.send(_message(url, kind))
        finally:
            await channel.close()

    return asyncio.run(go())


# --- the vendors' recipes, as documented ----------------------------------------------------


def dingtalk_verifies(request: HookRequest, secret: str) -> bool:
    """DingTalk: sign = base64(HMAC-SHA256(key=secret, msg=timestamp + "\\n" + secret)), url-
    encoded as a query parameter next to timestamp (ms); valid within an hour."""
    timestamp = request.query["timestamp"]  # aiohttp url-decoded it
    expected = base64.b64encode(hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(),
                                         hashlib.sha256).digest()).decode()
    fresh = abs(int(timestamp) - time.time() * 1000) < 3600_000
    return fresh and hmac.compare_digest(expected, request.query["sign"])


def feishu_verifies(body: dict[str, Any], secret: str) -> bool:
    """Feishu: the HMAC-SHA256 key is timestamp + "\\n" + secret, the message is empty;
    sign = base64 of it; timestamp in seconds, within an hour."""
    timestamp = body["timestamp"]
    key = f"{timestamp}\n{secret}".encode()
    expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    return abs(int(timestamp) - time.time()) < 3600 and hmac.compare_digest(expected,
                                                                             body["sign"])


def generic_verifies(request: HookRequest, secret: str) -> bool:
    """The README's recipe: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>."""
    fields = dict(part.split("=", 1) for part in request.headers["X-Incident-Signature"]
                  .split(","))
    mac = hmac.new(secret.encode(), fields["t"].encode() + b"." + request.body, hashlib.sha256)
    return hmac.compare_digest(mac.hexdigest(), fields["v1"])


@pytest.mark.parametrize("kind", ["slack", "teams", "wecom", "dingtalk", "feishu", "generic"])
def test_each_kind_posts_its_vendors_documented_payload(chat: ChatServer, kind: str) -> None:
    path = f"/{kind}"
    outcome = _send(f"{chat.url}{path}?key=TOKEN-123", kind)
    assert outcome.sent, outcome
    (request,) = chat.at(path)
    assert request.headers["Content-Type"].startswith("application/json")
    assert request.query["key"] == "TOKEN-123"  # the URL's own query is kept
    body = json.loads(request.body)
    if kind == "slack":
        assert body == {"text": "【启动应急预案】INC-1 核心系统故障 &lt;b&gt;&amp;&lt;/b&gt;"}
    elif kind == "teams":
        assert body["type"] == "message"
        (attachment,) = body["attachments"]
        assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
        card = attachment["content"]
        assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
        assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
        assert card["body"] == [{"type": "TextBlock", "text": TEXT, "wrap": True}]
    elif kind == "wecom":
        assert body == {"msgtype": "markdown", "markdown": {"content": TEXT}}
    elif kind == "dingtalk":
        assert body == {"msgtype": "markdown", "markdown": {"title": TITLE, "text": TEXT}}
        assert dingtalk_verifies(request, SECRET)
        assert not dingtalk_verifies(request, SECRET + "x")
    elif kind == "feishu":
        assert body["msg_type"] == "text" and body["content"] == {"text": TEXT}
        assert set(body) == {"timestamp", "sign", "msg_type", "content"}
        assert isinstance(body["timestamp"], str)
        assert feishu_verifies(body, SECRET)
        assert not feishu_verifies(body, SECRET + "x")
    else:
        assert body == EVENT
        assert request.headers["X-Incident-Delivery"] == "k" * 64
        assert generic_verifies(request, SECRET)
        assert not generic_verifies(request, SECRET + "x")
    assert SECRET not in request.body.decode() + json.dumps(request.headers)


@pytest.mark.parametrize(("kind", "answer", "permanent", "code"), [
    ("dingtalk", '{"errcode":310000,"errmsg":"sign not match, more: [see https://x]"}', True,
     "dingtalk-310000"),
    ("dingtalk", '{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}',
     False, "dingtalk-130101"),
    ("wecom", '{"errcode":93000,"errmsg":"invalid webhook url"}', True, "wecom-93000"),
    ("wecom", '{"errcode":45009,"errmsg":"api freq out of limit"}', False, "wecom-45009"),
    ("feishu", '{"code":19021,"msg":"sign match fail or timestamp is not within one hour"}',
     True, "feishu-19021"),
    ("feishu", '{"code":9499,"msg":"Too Many Request"}', False, "feishu-9499"),
])
def test_an_error_code_in_a_200_answer_is_classified(chat: ChatServer, kind: str, answer: str,
                                                       permanent: bool, code: str) -> None:
    chat.answer("/hook", (200, answer))
    outcome = _send(f"{chat.url}/hook?access_token=TOKEN-123", kind)
    assert not outcome.sent and outcome.permanent is permanent and outcome.code == code
    vendor = json.loads(answer)
    reason = vendor.get("errmsg") or vendor["msg"]
    assert reason[:20] in (outcome.error or "")  # the vendor's own words
    assert "TOKEN-123" not in (outcome.error or "")


@pytest.mark.parametrize(("status", "permanent"), [(400, True), (404, True), (410, True),
                                                   (302, True), (429, False), (500, False),
                                                   (503, False)])
def test_http_statuses_are_temporary_or_permanent(chat: ChatServer, status: int,
                                                  permanent: bool) -> None:
    chat.answer("/services/T0/B0/TOKEN-123", (status, "invalid_payload " + "x" * 5000))
    outcome = _send(f"{chat.url}/services/T0/B0/TOKEN-123", "slack")
    assert not outcome.sent and outcome.permanent is permanent
    assert outcome.code == f"http-{status}"
    error = outcome.error or ""
    assert f"HTTP {status}" in error and "invalid_payload" in error  # the reason, bounded
    assert len(error) <= 300 and "TOKEN-123" not in error
    assert f"{chat.url}/…" in error  # where: the host, never the token in the path


def test_no_answer_in_time_is_a_temporary_failure(chat: ChatServer) -> None:
    chat.answer("/slow", (200, "ok", 3.0))
    started = time.monotonic()
    outcome = _send(f"{chat.url}/slow", "slack", timeout=0.5)
    assert time.monotonic() - started < 2.5
    assert not outcome.sent and not outcome.permanent and outcome.code == "timeout"


def test_a_refused_connection_is_a_temporary_failure(chat: ChatServer) -> None:
    url = chat.url
    chat.stop()
    outcome = _send(f"{url}/gone", "wecom")
    assert not outcome.sent and not outcome.permanent and outcome.code == "network"


# --- through the command line -----------------------------------------------------------------

NOW = "2026-11-24T02:00:00+00:00"


def _hook(ws: Workspace, party: str, url: str, kind: str, **extra: Any) -> None:
    def edit(cfg: dict[str, Any]) -> None:
        cfg["parties"][party]["webhook"] = {"url": url, "kind": kind, **extra}
    ws.configure(edit)


def _start(ws: Workspace, *, code: int = 0, env: dict[str, str] | None = None) -> Any:
    result = ws.run("--json", "start", "core-banking-outage", "--title", "Core banking down",
                    "--severity", "II", "--eta", "2h", code=code, env=env)
    return json.loads(result.stdout) if code in (0, 3) else result


def test_start_delivers_to_a_partys_webhook_retrying_a_500(ws: Workspace,
                                                          chat: ChatServer) -> None:
    ws.fast_retries(wait="5s")
    # A party with only a webhook (no email, no phone) is notified through it alone.
    def edit(cfg: dict[str, Any]) -> None:
        cfg["parties"]["tech_support"] = {
            "name": {"zh-CN": "科技运维部", "en": "IT Operations"}, "language": "en",
            "webhook": {"url": f"{chat.url}/ops?token=TOKEN-123", "kind": "generic",
                        "secret_env": "OPS_HOOK_SECRET"}}
    ws.configure(edit)
    chat.answer("/ops", (500, "upstream down"))
    started = _start(ws, env={"OPS_HOOK_SECRET": SECRET})
    first, second = chat.at("/ops")  # the 500, then the retry that succeeded
    assert first.headers["X-Incident-Delivery"] == second.headers["X-Incident-Delivery"]
    assert first.body == second.body and generic_verifies(second, SECRET)
    event = json.loads(second.body)
    assert event["incident"]["id"] == started["id"] and event["language"] == "en"
    assert event["event"]["kind"] == "declared"
    assert event["incident"]["title"] == "Core banking down"
    assert event["event"]["text"].startswith(f"[incident declared] {started['id']}")
    # The internal detail (operator, audience size) and customer data stay out of it.
    assert "duty-lead" not in second.body.decode() and "customers" not in event["incident"]
    status = ws.json("status", started["id"])
    assert status["internal_deliveries"]["sent"] >= 1
    assert "tech_support" in status["parties"]
    assert SECRET not in json.dumps(status) and "TOKEN-123" not in json.dumps(status)
    report = ws.run("report", started["id"], "--format", "md").stdout
    assert "TOKEN-123" not in report and SECRET not in report


def test_a_webhook_that_answers_400_is_reported_as_failed(ws: Workspace,
                                                          chat: ChatServer) -> None:
    ws.fast_retries(wait="2s")
    _hook(ws, "tech_support", f"{chat.url}/services/T0/B0/TOKEN-123", "slack")
    chat.answer("/services/T0/B0/TOKEN-123", (400, "invalid_payload"))
    started = _start(ws, code=3)
    assert len(chat.at("/services/T0/B0/TOKEN-123")) == 1  # never retried
    status = ws.json("status", started["id"])
    (failure,) = [f for f in status["recent_failures"] if f["channel"] == "webhook"]
    assert failure["code"] == "http-400" and "invalid_payload" in failure["error"]
    assert failure["to"] == f"{chat.url}/…"
    assert "TOKEN-123" not in json.dumps(status)


def test_a_misspelt_kind_or_a_missing_secret_is_a_config_error(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    _hook(ws, "tech_support", "https://oapi.dingtalk.com/robot/send?access_token=T", "dingtalkk",
          secret_env="DT_SECRET")
    result = _start(ws, code=2)
    assert "parties.tech_support.webhook.kind" in result.stderr
    assert "Traceback" not in result.stderr

    _hook(ws, "tech_support", "https://oapi.dingtalk.com/robot/send?access_token=T", "dingtalk")
    result = _start(ws, code=2)
    assert "parties.tech_support.webhook" in result.stderr and "secret_env" in result.stderr

    _hook(ws, "tech_support", "https://oapi.dingtalk.com/robot/send?access_token=T", "dingtalk",
          secret_env="DT_SECRET")
    result = _start(ws, code=2, env={"DT_SECRET": ""})
    assert "DT_SECRET" in result.stderr
    assert "parties.tech_support.webhook.secret_env" in result.stderr
    assert ws.json("list", "--all") == [] or not ws.json("list", "--all")  # nothing recorded


def test_the_file_transport_writes_the_request_that_would_be_posted(sqlite_ws: Workspace
                                                                    ) -> None:
    ws = sqlite_ws
    ws.configure(lambda cfg: cfg["channels"].update(webhook={"transport": "file"}))
    _hook(ws, "tech_support", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=TOKEN-123",
          "wecom")
    started = _start(ws)
    (path,) = [p for p in ws.outbox_files(started["id"], "json", internal=True)
               if "webhook" in p.parts]
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["to"] == "https://qyapi.weixin.qq.com/…"
    assert written["body"]["msgtype"] == "markdown"
    assert started["id"] in written["body"]["markdown"]["content"]
    assert "TOKEN-123" not in path.read_text(encoding="utf-8")


def test_the_readme_example_is_a_valid_config() -> None:
    import re
    from pathlib import Path

    import yaml

    from incident.settings import example_config_text, parse_settings

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("#### Parties: chat webhooks", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    example = yaml.safe_load(block.group(1))
    config = yaml.safe_load(example_config_text())
    config["parties"].update(example["parties"])
    settings = parse_settings(yaml.safe_dump(config, allow_unicode=True), source="README")
    hook = settings.parties["tech_support"].webhook
    assert hook is not None and hook.kind == "dingtalk" and hook.secret_env
