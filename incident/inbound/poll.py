"""`receipts poll`: ask Twilio for the status of every accepted, unsettled SMS and call
(GET …/Messages/{Sid}.json, …/Calls/{Sid}.json) at a bounded request rate, in rounds, until
none is unsettled or the time is up; what it learns is recorded as receipts (source poll),
exactly as a callback would be."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from incident.channels.sms import BaseUrlHttpClient
from incident.inbound.replies import InboundReply
from incident.inbound.twilio_status import Malformed, from_resource
from incident.privacy import scrub_error
from incident.store import Store, receipts

INBOUND_LIMIT = 1000  # inbound messages listed per number and poll
RESOURCE_FIELDS = ("status", "error_code", "answered_by", "end_time", "date_updated")


@dataclass(slots=True)
class PollReport:
    """What one `receipts poll` did."""

    requests: int = 0
    changed: int = 0  # rows whose state a receipt changed
    unsettled: int = 0  # still unsettled when it stopped
    errors: list[str] = field(default_factory=list)  # requests that failed (scrubbed)
    replies: int = 0  # inbound messages listed and handed over (kept once each)


@dataclass(frozen=True, slots=True)
class Twilio:
    """Where and as whom to ask (the SID and token come from the environment)."""

    api_base_url: str
    account_sid: str
    auth_token: str


async def poll(store: Store, twilio: Twilio, *, incident_id: str | None, rate: float,
               every: float, until: float, now: Callable[[], datetime]) -> PollReport:
    """Poll in rounds `every` seconds apart for at most `until` seconds, at most `rate`
    requests a second."""
    http = BaseUrlHttpClient(twilio.api_base_url, timeout=30.0)
    client = Client(twilio.account_sid, twilio.auth_token, http_client=http,
                    environment={"TWILIO_ACCOUNT_SID": twilio.account_sid})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + until
    next_at = loop.time()
    report = PollReport()
    try:
        while True:
            with store.read() as conn:
                rows = receipts.unsettled(conn, incident_id)
            report.unsettled = len(rows)
            if not rows or loop.time() >= deadline:
                return report
            for row in rows:
                await asyncio.sleep(max(0.0, next_at - loop.time()))
                if loop.time() >= deadline:
                    break
                next_at = max(next_at, loop.time()) + 1.0 / rate
                report.requests += 1
                found = await _fetch(client, row.channel, row.provider_ref, report)
                if found is None:
                    continue
                try:
                    receipt = from_resource(row.channel, row.provider_ref, found, now=now())
                except Malformed as exc:
                    report.errors.append(f"{row.provider_ref}: {exc}")
                    continue
                with store.write() as conn:
                    report.changed += len(receipts.record(conn, [receipt], now=now()).changed)
            with store.read() as conn:
                if not receipts.unsettled(conn, incident_id):
                    report.unsettled = 0
                    return report
            await asyncio.sleep(max(0.0, min(every, deadline - loop.time())))
    finally:
        await http.close()


async def _fetch(client: Client, channel: str, sid: str,
                 report: PollReport) -> dict[str, Any] | None:
    """The resource's fields, or None (the failure noted in `report`)."""
    try:
        if channel == "voice":
            resource: Any = await client.calls(sid).fetch_async()
        else:
            resource = await client.messages(sid).fetch_async()
    except TwilioRestException as exc:
        report.errors.append(scrub_error(f"{sid}: HTTP {exc.status}: {exc.msg}") or sid)
        return None
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        report.errors.append(scrub_error(f"{sid}: {type(exc).__name__}: {exc}") or sid)
        return None
    return {name: getattr(getattr(resource, name, None), "value", getattr(resource, name, None))
            for name in RESOURCE_FIELDS}


async def fetch_inbound(twilio: Twilio, numbers: list[str], *, since: datetime,
                        receive: Callable[[InboundReply], object],
                        report: PollReport) -> int:
    """List the messages sent to each of `numbers` since `since` (GET …/Messages.json?To=…
    &DateSent>=…) and hand each inbound one to `receive` (kept once by SID, so listing the
    same again is harmless); how many were handed over."""
    http = BaseUrlHttpClient(twilio.api_base_url, timeout=30.0)
    client = Client(twilio.account_sid, twilio.auth_token, http_client=http,
                    environment={"TWILIO_ACCOUNT_SID": twilio.account_sid})
    handed = 0
    try:
        for number in numbers:
            report.requests += 1
            try:
                # Bounded: a provider (or a mock) that always names a next page must not
                # keep the poll paging for ever.
                found = await client.messages.list_async(to=number, date_sent_after=since,
                                                         limit=INBOUND_LIMIT, page_size=100)
            except TwilioRestException as exc:
                report.errors.append(scrub_error(f"inbound to {number}: HTTP {exc.status}: "
                                                 f"{exc.msg}") or "inbound")
                continue
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                report.errors.append(scrub_error(f"inbound: {type(exc).__name__}: {exc}")
                                     or "inbound")
                continue
            for message in found:
                direction = getattr(message.direction, "value", message.direction)
                if direction != "inbound" or not message.sid or not message.from_:
                    continue
                await asyncio.to_thread(receive, InboundReply(
                    sid=message.sid, number=message.from_, to_number=message.to,
                    body=message.body or "", at=message.date_sent or since))
                handed += 1
    finally:
        await http.close()
    return handed
