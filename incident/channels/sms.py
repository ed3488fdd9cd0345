"""The `twilio` SMS transport: Twilio Programmable Messaging or any Twilio-compatible API.

Uses the official SDK's async path (`AsyncTwilioHttpClient` + `messages.create_async`), so the
dispatcher's concurrent sends share one aiohttp session in its event loop, without threads.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from incident.channels.base import Outcome, Outgoing, SmsOut
from incident.privacy import mask_phone
from incident.settings import TwilioSettings

TWILIO_API = "https://api.twilio.com"

# Twilio error codes that no retry can fix: the number, the recipient or the sender is wrong.
PERMANENT_CODES = frozenset({
    21211,  # invalid 'To' number
    21408,  # permission to send to this region not enabled
    21606,  # 'From' number cannot send SMS
    21608,  # unverified recipient (trial account)
    21610,  # recipient unsubscribed (replied STOP): never retry
    21612,  # cannot route between these numbers
    21614,  # 'To' is not a mobile number
})
UNSUBSCRIBED = 21610  # the recipient replied STOP: the number goes on the suppression list
TOO_MANY_REQUESTS = 20429
AUTH_STATUSES = frozenset({401, 403})
MAX_ERROR_CHARS = 300


class OffBaseUrl(RuntimeError):
    """The SDK asked for a host other than api.twilio.com, which cannot be redirected."""


class BaseUrlHttpClient(AsyncTwilioHttpClient):
    """The SDK's aiohttp client, sending every request to `base_url` instead of api.twilio.com.

    Also fixes two things of the stock client: its aiohttp session is created on first use
    (aiohttp needs a running event loop, and channels are built before `asyncio.run`), and its
    `timeout` is applied (the stock client passes the SDK's per-request `None`, which aiohttp
    reads as "no timeout at all").
    """

    session: aiohttp.ClientSession | None  # the SDK's attribute, None until first use

    def __init__(self, base_url: str, *, timeout: float) -> None:
        super().__init__(pool_connections=False, timeout=timeout)
        self.base_url = base_url.rstrip("/")
        self._loop: asyncio.AbstractEventLoop | None = None

    def rewrite(self, url: str) -> str:
        """`https://api.twilio.com/<path>` → `<base_url>/<path>`; refuses any other host."""
        if url == TWILIO_API or url.startswith(TWILIO_API + "/"):
            return self.base_url + url[len(TWILIO_API):]
        # Only the v2010 API is used; anything else would escape the configured base URL.
        raise OffBaseUrl(f"unexpected Twilio URL {url!r}: only {TWILIO_API} can be redirected")

    async def request(self, method: str, url: str, params: Any = None, data: Any = None,
                      headers: Any = None, auth: Any = None, timeout: float | None = None,
                      allow_redirects: bool = False) -> Response:
        """Send one request to the base URL through this event loop's session."""
        loop = asyncio.get_running_loop()
        if self.session is None or self._loop is not loop:
            self.session = aiohttp.ClientSession()
            self._loop = loop
        headers = dict(headers or {})
        if auth is not None:
            # The header itself: aiohttp 3.12+ deprecates the BasicAuth object the SDK builds.
            pair = f"{auth[0]}:{auth[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        response: Response = await super().request(
            method, self.rewrite(url), params=params, data=data, headers=headers, auth=None,
            timeout=self.timeout if timeout is None else timeout,
            allow_redirects=allow_redirects)
        return response

    async def close(self) -> None:
        """Close the aiohttp session (a later request opens a new one)."""
        session, self.session, self._loop = self.session, None, None
        if session is not None:
            await session.close()


class TwilioChannel:
    """Sends SMS with `messages.create`; the rate is counted in segments per second.

    After Twilio rejects the credentials, `fatal` holds a one-line reason (without secrets)
    and every later send is a temporary failure without a request, so the dispatcher can stop.
    """

    name = "sms"
    transport = "twilio"
    permanent_codes = PERMANENT_CODES

    def __init__(self, settings: TwilioSettings, *, rate: float, account_sid: str,
                 auth_token: str, http_client: AsyncTwilioHttpClient | None = None,
                 timeout: float = 30.0, status_callback: str | None = None) -> None:
        if not account_sid or not auth_token:
            raise ValueError("Twilio needs an account SID and an auth token "
                             "(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)")
        base = urlsplit(settings.api_base_url)
        if base.scheme not in ("http", "https") or not base.hostname:
            raise ValueError(f"api_base_url must be an http(s) URL, not "
                             f"{settings.api_base_url!r}")
        if "@" in base.netloc:
            # Not echoed: it holds a secret, and secrets come only from the environment.
            raise ValueError("api_base_url must not contain user:password@; the account SID "
                             "and token (from the environment) authenticate every request")
        if http_client is not None and not http_client.is_async:
            raise ValueError("the Twilio channel needs an asynchronous HttpClient")
        self.settings = settings
        self.status_callback = status_callback  # <receipts.public_url>/twilio/status
        self.rate: float | None = rate
        self.fatal: str | None = None
        self._fatal_code = "auth"
        self.http = http_client or BaseUrlHttpClient(settings.api_base_url, timeout=timeout)
        # A non-empty `environment`, because the SDK reads os.environ for an empty one, where
        # TWILIO_EDGE / TWILIO_REGION would move requests to another host.
        self.client = Client(account_sid, auth_token, http_client=self.http,
                             environment={"TWILIO_ACCOUNT_SID": account_sid})
        self._secrets = (auth_token,)
        # The SDK imports its API modules on first use (tens of ms); doing it now keeps that
        # delay off the first message, where it would bunch the first second's sends.
        _ = self.client.messages

    def __repr__(self) -> str:
        return f"TwilioChannel(base={self._host!r}, rate={self.rate})"

    def create_params(self, message: SmsOut) -> dict[str, str]:
        """The `messages.create` arguments: To, Body and the configured sender."""
        params = {"to": message.to, "body": message.body}
        if self.settings.messaging_service_sid:
            params["messaging_service_sid"] = self.settings.messaging_service_sid
        if self.settings.from_number:
            # With a messaging service too, Twilio sends from this number of its pool.
            params["from_"] = self.settings.from_number
        if self.status_callback:
            params["status_callback"] = self.status_callback
        return params

    async def send(self, message: Outgoing) -> Outcome:
        """Create the Message; classify Twilio's answer as sent, temporary or permanent."""
        if not isinstance(message, SmsOut):
            return Outcome.fail("the sms channel sends only SMS messages", code="wrong-channel")
        return await self.create(self.client.messages.create_async,
                                 self.create_params(message), message.to)

    async def create(self, create: Callable[..., Awaitable[Any]], params: dict[str, Any],
                     to: str) -> Outcome:
        """Create one resource (Message, Call) with `params`; the outcome, with its SID."""
        if self.fatal:
            return Outcome.retry(self.fatal, code=self._fatal_code)
        try:
            created = await create(**params)
        except TwilioRestException as exc:
            detail = str(exc.msg).removeprefix("Unable to create record: ")
            return self._classify(int(exc.status), exc.code, detail, to)
        except TwilioServiceException as exc:
            return self._classify(int(exc.status), exc.code, exc.detail or exc.title, to)
        except TimeoutError:  # asyncio.TimeoutError and aiohttp's timeouts
            return Outcome.retry(self._clean(f"no answer from {self._host} within "
                                             f"{self.http.timeout}s", to), code="timeout")
        except (aiohttp.ClientError, OSError) as exc:
            text = f"cannot reach {self._host}: {type(exc).__name__}: {exc}"
            return Outcome.retry(self._clean(text, to), code="network")
        except json.JSONDecodeError as exc:  # a 2xx whose body is not JSON: not Twilio
            text = f"unreadable answer from {self._host}: {exc}"
            return Outcome.retry(self._clean(text, to), code="bad-response")
        return Outcome.ok(provider_ref=created.sid)

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.http.close()

    @property
    def _host(self) -> str:
        return self.settings.api_base_url

    def _classify(self, status: int, code: Any, detail: str, to: str) -> Outcome:
        number = _error_number(code, status)
        label = f"HTTP {status}" + (f", Twilio error {number}" if number else "")
        text = self._clean(f"{label}: {detail}", to)
        if number in self.permanent_codes:
            return Outcome.fail(text, code=str(number), opted_out=number == UNSUBSCRIBED)
        if status == 429 or number == TOO_MANY_REQUESTS:
            return Outcome.retry(text, code=str(TOO_MANY_REQUESTS))
        if status in AUTH_STATUSES:
            self.fatal = (f"{self._host} rejected the Twilio credentials (HTTP {status}); "
                          "check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
            return Outcome.retry(text, code="auth")
        if status >= 500:
            return Outcome.retry(text, code="http-5xx")
        if 300 <= status < 400:
            # Redirects are not followed (a POST must not be replayed elsewhere): the base URL
            # is wrong, which no message can fix. Stop, keep the rows pending.
            self.fatal = f"{self._host} answered with a redirect (HTTP {status}); fix api_base_url"
            self._fatal_code = f"http-{status}"
            return Outcome.retry(text, code=self._fatal_code)
        return Outcome.fail(text, code=str(number) if number else f"http-{status}")

    def _clean(self, text: str, to: str) -> str:
        # Error text is stored and shown: never a secret, never a full phone number.
        for secret in self._secrets:
            text = text.replace(secret, "***")
        if to:
            text = text.replace(to, mask_phone(to))
        text = " ".join(text.split())
        return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 1] + "…"


def _error_number(code: Any, status: int) -> int | None:
    """Twilio's error code; None when the SDK filled in the HTTP status for a missing one."""
    try:
        number = int(code)
    except (TypeError, ValueError):
        return None
    return None if number == status else number
