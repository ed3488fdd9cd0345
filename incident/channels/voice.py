"""The `twilio` voice transport: calls over Twilio Programmable Voice that read the notice.

Each call is `POST /2010-04-01/Accounts/{Sid}/Calls.json` with `To`, `From` and the inline
`Twiml` (channels.twiml: the script read twice by the configured <Say> voice). It shares the
SMS channel's HTTP client, credentials and error handling; only the permanent error codes
differ.

Calls in progress are capped: a call holds one of `concurrent` slots from its create request
until Twilio reports it over (its status, fetched every `poll` seconds, is final), or at most
`max_call` seconds. The cap holds within one delivery process; calls still ringing when it
ends are not known to the next one.
"""

from __future__ import annotations

import asyncio
import contextlib

from twilio.http.async_http_client import AsyncTwilioHttpClient

from incident.channels.base import Outcome, Outgoing, VoiceOut
from incident.channels.sms import TwilioChannel
from incident.channels.twiml import TWIML_MAX, twiml
from incident.settings import TwilioSettings

# Twilio error codes of a call create that no retry can fix.
VOICE_PERMANENT_CODES = frozenset({
    21201,  # no 'To' number
    21205,  # invalid URL
    21210,  # 'From' is not a verified caller id of the account
    21211,  # invalid 'To' number
    21212,  # invalid 'From' (caller id)
    21213,  # 'From' is required
    21214,  # 'To' number cannot be reached
    21215,  # geo permissions do not allow calls to this country
    21216,  # calls to this (premium) number are not allowed
    21217,  # 'To' does not appear to be a valid number
    21219,  # 'To' is not verified (trial account)
    21401,  # invalid phone number
    21402,  # invalid URL
})
FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


class VoiceChannel(TwilioChannel):
    """Creates calls; the rate counts calls started, `concurrent` caps calls in progress."""

    name = "voice"
    permanent_codes = VOICE_PERMANENT_CODES

    def __init__(self, settings: TwilioSettings, *, rate: float, concurrent: int,
                 account_sid: str, auth_token: str,
                 http_client: AsyncTwilioHttpClient | None = None, timeout: float = 30.0,
                 poll: float = 5.0, max_call: float = 600.0,
                 status_callback: str | None = None) -> None:
        super().__init__(settings, rate=rate, account_sid=account_sid, auth_token=auth_token,
                         http_client=http_client, timeout=timeout,
                         status_callback=status_callback)
        self.concurrent = concurrent
        self.poll = poll
        self.max_call = max_call
        self._slots: asyncio.Semaphore | None = None
        self._watchers: set[asyncio.Task[None]] = set()
        _ = self.client.calls

    def __repr__(self) -> str:
        return f"VoiceChannel(base={self._host!r}, rate={self.rate}, concurrent={self.concurrent})"

    def call_params(self, message: VoiceOut) -> dict[str, str]:
        """The `calls.create` arguments: To, From and the TwiML to speak."""
        params = {"to": message.to, "from_": self.settings.from_number or "",
                  "twiml": twiml(message)}
        if self.status_callback:
            params["status_callback"] = self.status_callback  # Twilio posts the final status
        return params

    async def send(self, message: Outgoing) -> Outcome:
        """Start the call once a slot is free; it keeps the slot until the call is over."""
        if not isinstance(message, VoiceOut):
            return Outcome.fail("the voice channel sends only calls", code="wrong-channel")
        params = self.call_params(message)
        if len(params["twiml"]) > TWIML_MAX:
            return Outcome.fail(f"the call's TwiML is {len(params['twiml']):,} characters; "
                                f"Twilio takes {TWIML_MAX:,}", code="twiml-too-long")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrent)
        await self._slots.acquire()
        outcome = await self.create(self.client.calls.create_async, params, message.to)
        if not outcome.sent or not outcome.provider_ref:
            self._slots.release()
            return outcome
        watcher = asyncio.ensure_future(self._hold(outcome.provider_ref, self._slots))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return outcome

    async def _hold(self, sid: str, slots: asyncio.Semaphore) -> None:
        """Keep a slot until the call's status is final (or `max_call` passed)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.max_call
        try:
            while loop.time() < until:
                await asyncio.sleep(min(self.poll, max(until - loop.time(), 0)))
                with contextlib.suppress(Exception):  # a failed poll: ask again later
                    call = await self.client.calls(sid).fetch_async()
                    if str(call.status) in FINAL_STATUSES:
                        return
        finally:
            slots.release()

    async def close(self) -> None:
        """Stop watching calls in progress and close the HTTP session."""
        for watcher in list(self._watchers):
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        self._slots = None
        await super().close()
