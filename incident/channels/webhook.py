"""The `http` webhook transport: a party's chat group (Slack, Teams, WeCom, DingTalk, Feishu) or
any receiver of the generic signed JSON gets the internal notice as its vendor expects it.

Each kind's body is its documented incoming-webhook format; DingTalk and Feishu requests are
signed as those vendors document, generic ones with an `X-Incident-Signature` header:
`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. Outcomes follow every channel's
rule: timeouts, network errors, 429 and 5xx are temporary; other 4xx are permanent; and the
vendors that answer HTTP 200 with an error code in the body (DingTalk/WeCom `errcode`, Feishu
`code`) are classified by that code.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from incident.channels.base import Outcome, Outgoing, WebhookOut
from incident.privacy import mask_url as host
from incident.privacy import scrub_secrets

if TYPE_CHECKING:  # imported on first send: most runs post no webhook (≈ 0.5 s of CPU)
    import aiohttp

MAX_ERROR_CHARS = 300
MAX_BODY_READ = 4096  # bytes of an answer read for its error code or text
SIGNATURE_HEADER = "X-Incident-Signature"
# Vendor codes (HTTP 200, error in the body) that mean "later", not "never".
TEMPORARY_CODES = {
    "dingtalk": frozenset({-1, 130101}),  # system busy; more than 20 messages a minute
    "wecom": frozenset({-1, 45009}),  # system busy; api freq out of limit (20 a minute)
    "feishu": frozenset({9499, 11232}),  # too many requests; frequency limited
}


def hmac_b64(key: str, message: str) -> str:
    """base64(HMAC-SHA256(key, message)), as DingTalk and Feishu sign."""
    digest = hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def generic_signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Incident-Signature` value: `t=<unix>,v1=<hex HMAC-SHA256 over "<t>.<body>">`."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn reads &, < and > as control characters (links, mentions).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def build_request(message: WebhookOut, secret: str | None, now: float
                  ) -> tuple[str, dict[str, str], bytes]:
    """The URL (with DingTalk's signing parameters), headers and JSON body to post."""
    url, kind, text = message.url, message.kind, message.text
    headers = {"Content-Type": "application/json; charset=utf-8"}
    payload: dict[str, Any]
    if kind == "slack":
        payload = {"text": _slack_escape(text)}
    elif kind == "teams":  # Workflows: "when a Teams webhook request is received"
        payload = {"type": "message", "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
            "content": {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard", "version": "1.4",
                        "body": [{"type": "TextBlock", "text": text, "wrap": True}]}}]}
    elif kind == "wecom":
        payload = {"msgtype": "markdown", "markdown": {"content": text}}
    elif kind == "dingtalk":
        payload = {"msgtype": "markdown", "markdown": {"title": message.title, "text": text}}
        if secret:
            millis = int(now * 1000)
            query = urlencode({"timestamp": millis,
                               "sign": hmac_b64(secret, f"{millis}\n{secret}")})
            url += ("&" if urlsplit(url).query else "?") + query
    elif kind == "feishu":
        seconds = str(int(now))
        payload = {"msg_type": "text", "content": {"text": text}}
        if secret:
            # Feishu keys the HMAC with "<timestamp>\n<secret>" and signs an empty message.
            payload = {"timestamp": seconds, "sign": hmac_b64(f"{seconds}\n{secret}", ""),
                       **payload}
    elif kind == "generic":
        payload = message.event
    else:
        raise ValueError(f"unknown webhook kind {kind!r}")
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if kind == "generic":
        headers["X-Incident-Delivery"] = message.ref.idempotency_key
        if secret:
            headers[SIGNATURE_HEADER] = generic_signature(secret, int(now), body)
    return url, headers, body


class WebhookChannel:
    """Posts each party's internal notice to its webhook; one aiohttp session per event loop.

    A party's URL often holds its access token (Slack, WeCom, DingTalk): errors name only the
    scheme and host, and the signing secrets (by party id) never leave this object.
    """

    name = "webhook"
    transport = "http"
    fatal: str | None = None  # one party's bad URL says nothing of the others'

    def __init__(self, secrets: Mapping[str, str], *, rate: float | None = None,
                 timeout: float = 10.0, now: Callable[[], float] = time.time) -> None:
        self.secrets = dict(secrets)
        self.rate = rate
        self.timeout = timeout
        self.now = now
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"WebhookChannel(parties={sorted(self.secrets)}, rate={self.rate})"

    async def send(self, message: Outgoing) -> Outcome:
        """Post one message; classify the answer as sent, temporary or permanent."""
        if not isinstance(message, WebhookOut):
            return Outcome.fail("the webhook channel sends only webhook messages",
                                code="wrong-channel")
        import aiohttp
        from yarl import URL

        url, headers, body = build_request(message, self.secrets.get(message.party),
                                           self.now())
        try:
            async with self._client().post(URL(url, encoded=True), data=body, headers=headers,
                                           allow_redirects=False) as response:
                status = response.status
                raw = await response.content.read(MAX_BODY_READ)
        except TimeoutError:  # asyncio.TimeoutError and aiohttp's timeouts
            return Outcome.retry(self._clean(f"no answer from {host(url)} within "
                                             f"{self.timeout:g}s", message), code="timeout")
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome.retry(self._clean(f"cannot reach {host(url)}: "
                                             f"{type(exc).__name__}: {exc}", message),
                                 code="network")
        return self._classify(message, status, raw.decode("utf-8", "replace"))

    async def close(self) -> None:
        """Close the HTTP session (a later send opens a new one)."""
        session, self._session, self._loop = self._session, None, None
        if session is not None:
            await session.close()

    def _client(self) -> aiohttp.ClientSession:
        # Created in the running loop on first use: channels are built before asyncio.run.
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout))
            self._loop = loop
        return self._session

    def _classify(self, message: WebhookOut, status: int, text: str) -> Outcome:
        where = f"{message.kind} webhook {host(message.url)}"
        if 200 <= status < 300:
            code = _vendor_code(message.kind, text)
            if not code:
                return Outcome.ok(provider_ref=f"{message.kind}:{status}")
            label = f"{message.kind}-{code}"
            error = self._clean(f"{where}: HTTP {status}, error {code}: {text}", message)
            if code in TEMPORARY_CODES.get(message.kind, ()):
                return Outcome.retry(error, code=label)
            return Outcome.fail(error, code=label)
        label = f"HTTP {status}"
        if 300 <= status < 400:
            # Not followed: a POST must not be replayed elsewhere. The URL is wrong.
            label += " (a redirect, not followed: fix the webhook url)"
        error = self._clean(f"{where}: {label}: {text}", message)
        if status in (408, 429) or status >= 500:
            return Outcome.retry(error, code=f"http-{status}")
        return Outcome.fail(error, code=f"http-{status}")

    def _clean(self, text: str, message: WebhookOut) -> str:
        # Stored and shown: never the URL's token, never a signing secret.
        secret = self.secrets.get(message.party)
        if secret:
            text = text.replace(secret, "***")
        text = text.replace(message.url, host(message.url))
        text = " ".join(scrub_secrets(text).split())
        return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 1] + "…"


def _vendor_code(kind: str, text: str) -> int | None:
    """The non-zero error code in a 2xx answer of DingTalk, WeCom or Feishu (None: success)."""
    if kind not in TEMPORARY_CODES:
        return None
    try:
        answer = json.loads(text)
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    for key in ("errcode", "code", "StatusCode"):
        value = answer.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value or None
    return None
