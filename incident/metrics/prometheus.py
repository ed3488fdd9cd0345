"""The metrics as Prometheus exposes them (prometheus-client), in a registry of this process's
own (never the library's global one), served over HTTP on a port of their own.

Names follow Prometheus' conventions: base units (seconds), `_total` for counters, labels of a
bounded set (channels, states, reasons that are codes, at most `MAX_INCIDENTS` incidents).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from incident.errors import IncidentError
from incident.metrics import Counted, Metrics

# Seconds: an SMTP or HTTP answer takes ms to tens of seconds (timeouts at 30 s).
SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CLAIM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MAX_INCIDENTS = 20  # queue depth per incident: the deepest ones, the rest summed as "other"

Depths = Callable[[], Sequence[tuple[str, str, int]]]
"""Reads (incident, channel, rows pending or being sent) from the outbox at scrape time."""


class PrometheusMetrics(Metrics):
    """The hooks, counted in `registry`."""

    enabled = True

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_* (CPU, memory, start time), on Linux
        self.messages = Counter(
            "incident_messages", "Outcomes recorded in the outbox by this process, by channel "
            "and state (sent, failed; retry: a temporary failure to be tried again)",
            ["channel", "state"], registry=r)
        self.send_seconds = Histogram(
            "incident_send_seconds", "Time to send one message and get the provider's answer",
            ["channel"], buckets=SEND_BUCKETS, registry=r)
        self.waits = Counter(
            "incident_rate_limit_wait_seconds", "Time messages waited for their channel's "
            "rate limit", ["channel"], registry=r)
        self.retries = Counter(
            "incident_retries", "Temporary failures to be tried again, by channel and reason "
            "(the failure's code)", ["channel", "reason"], registry=r)
        self.claims = Histogram(
            "incident_claim_seconds", "Time of one claiming transaction (outcomes recorded, "
            "next batch of outbox rows claimed)", buckets=CLAIM_BUCKETS, registry=r)
        self.last_success = Gauge(
            "incident_last_success_timestamp_seconds", "When a message of the channel was last "
            "accepted by its provider (Unix time)", ["channel"], registry=r)
        self.callbacks = Counter(
            "incident_callbacks", "Provider callbacks answered, by kind (sms, call, unknown) "
            "and result", ["kind", "result"], registry=r)
        self.callback_seconds = Histogram(
            "incident_callback_seconds", "Time to check, record and answer one callback",
            ["kind"], buckets=CLAIM_BUCKETS, registry=r)

    def send_time(self, channel: str, seconds: float) -> None:
        """Observed in incident_send_seconds."""
        self.send_seconds.labels(channel).observe(seconds)

    def rate_limit_wait(self, channel: str, seconds: float) -> None:
        """Added to incident_rate_limit_wait_seconds_total."""
        self.waits.labels(channel).inc(seconds)

    def claim_time(self, seconds: float) -> None:
        """Observed in incident_claim_seconds."""
        self.claims.observe(seconds)

    def recorded(self, outcomes: Sequence[Counted], at: float) -> None:
        """Counted in incident_messages_total (and retries, last success)."""
        for channel, state, reason in outcomes:
            self.messages.labels(channel, state).inc()
            if state == "retry":
                self.retries.labels(channel, reason or "unknown").inc()
            elif state == "sent":
                self.last_success.labels(channel).set(at)

    def callback(self, kind: str, result: str, seconds: float) -> None:
        """Counted in incident_callbacks_total, observed in incident_callback_seconds."""
        self.callbacks.labels(kind, result).inc()
        self.callback_seconds.labels(kind).observe(seconds)


class QueueDepth(Collector):
    """incident_queue_depth{incident,channel}, read from the outbox at each scrape."""

    def __init__(self, depths: Depths) -> None:
        self.depths = depths

    def describe(self) -> Iterator[Any]:
        """Named without reading the outbox (at registration)."""
        yield GaugeMetricFamily("incident_queue_depth", _DEPTH_HELP, labels=["incident", "channel"])

    def collect(self) -> Iterator[Any]:
        """The deepest MAX_INCIDENTS incidents' queues; the others summed as `other`."""
        family = GaugeMetricFamily("incident_queue_depth", _DEPTH_HELP,
                                   labels=["incident", "channel"])
        try:
            found = sorted(self.depths(), key=lambda d: -d[2])
        except IncidentError:  # the database is away: no figure rather than a failed scrape
            found = []
        shown = {incident for incident, _, _ in found[:MAX_INCIDENTS]}
        other: dict[str, int] = {}
        for incident, channel, depth in found:
            if incident in shown:
                family.add_metric([incident, channel], depth)
            else:
                other[channel] = other.get(channel, 0) + depth
        for channel, depth in sorted(other.items()):
            family.add_metric(["other", channel], depth)
        yield family


_DEPTH_HELP = "Outbox rows pending or being sent, by incident and channel"


@dataclass
class Exporter:
    """A running /metrics endpoint and the hooks that feed it."""

    metrics: PrometheusMetrics
    url: str
    _server: Any

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


def serve(host: str, port: int, *, depths: Depths | None = None) -> Exporter:
    """Serve this process's metrics at http://host:port/metrics (port 0: any free one)."""
    metrics = PrometheusMetrics()
    if depths is not None:
        metrics.registry.register(QueueDepth(depths))
    try:
        server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise IncidentError(f"metrics port {host}:{port} is already in use",
                                hint="another process listens there: stop it, or serve the "
                                     "metrics on another port") from exc
        raise IncidentError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
                            ) from exc
    bound_port = server.server_address[1]
    return Exporter(metrics=metrics, url=f"http://{host}:{int(bound_port)}/metrics",
                    _server=server)
