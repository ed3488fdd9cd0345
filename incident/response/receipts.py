"""Delivery receipts: `receipts serve` (Twilio status callbacks) and `receipts poll`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from incident.errors import ConfigInvalid
from incident.metrics import NO_METRICS, Metrics
from incident.response.journal import Journal
from incident.response.results import Result
from incident.settings import secret

INBOUND_WINDOW = timedelta(days=2)  # replies listed by `receipts poll` (each kept once)

if TYPE_CHECKING:  # aiohttp and twilio are imported by the commands that use them
    from incident.inbound.poll import PollReport
    from incident.inbound.replies import InboundReply


@dataclass(kw_only=True)
class Polled(Result):
    """What `receipts poll` did; a success even with rows left unsettled (they may settle
    later) or requests that failed (listed)."""

    report: PollReport


class Receipts:
    """Take what Twilio reports after accepting a message or call."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.metrics: Metrics = NO_METRICS  # told every callback `serve` answers

    def serve(self, *, host: str, port: int, ready: Callable[[str, int], None],
              tick: Callable[[], None] | None = None,
              receive: Callable[[InboundReply], object] | None = None) -> Result:
        """Serve /twilio/status (and, with `receive`, /twilio/inbound and
        /twilio/voice/gather) until SIGINT/SIGTERM; `tick()` every receipts.escalate_every
        meanwhile."""
        from incident.inbound import server

        rt = self.journal.rt
        where = str(rt.config_path) if rt.config_path else "built-in defaults"
        callback = rt.settings.receipts.callback_url
        if callback is None:
            raise ConfigInvalid("receipts.public_url is not set: Twilio's signatures are "
                                "checked against the URL it calls",
                                hint=f"add receipts: {{public_url: https://…}} to {where}, "
                                     "or use incident receipts poll")
        token = secret("TWILIO_AUTH_TOKEN")
        if not token:
            raise ConfigInvalid("the environment variable TWILIO_AUTH_TOKEN is not set: it "
                                "checks the callbacks' signatures")
        app = server.make_app(self.journal.store, auth_token=token, callback_url=callback,
                              now=rt.clock.now, metrics=self.metrics, receive=receive)
        asyncio.run(server.serve(app, host, port, ready, tick=tick,
                                 every=rt.settings.receipts.escalate_every.total_seconds()))
        return Result()

    def poll(self, ref: str | None, *, until: float,
             receive: Callable[[InboundReply], object] | None = None) -> Polled:
        """Poll Twilio for the unsettled SMS and calls (of one incident, or all), and with
        `receive` for the replies to the SMS number of the last INBOUND_WINDOW."""
        from incident.channels.factory import check_channels
        from incident.inbound import poll as polling

        rt = self.journal.rt
        channels = rt.settings.channels
        twilio = next((c.twilio for c in (channels.sms, channels.voice)
                       if c.transport == "twilio" and c.twilio is not None), None)
        if twilio is None:
            raise ConfigInvalid("no channel sends by Twilio (channels.sms.transport / "
                                "channels.voice.transport): there is nothing to poll")
        found = check_channels(rt)
        incident_id = self.journal.store.resolve_id(ref) if ref else None
        settings = rt.settings.receipts
        account = polling.Twilio(twilio.api_base_url, found["twilio_sid"],
                                 found["twilio_token"])
        report = polling.PollReport()
        if receive is not None:  # replies first: they are what people wait for
            since = rt.clock.now() - INBOUND_WINDOW
            numbers = [n for n in (twilio.from_number,) if n]
            report.replies = asyncio.run(polling.fetch_inbound(
                account, numbers, since=since, receive=receive, report=report))
        polled = asyncio.run(polling.poll(
            self.journal.store, account,
            incident_id=incident_id, rate=settings.poll_rate,
            every=settings.poll_every.total_seconds(), until=until, now=rt.clock.now))
        polled.requests += report.requests
        polled.errors[:0] = report.errors
        polled.replies = report.replies
        return Polled(report=polled)
