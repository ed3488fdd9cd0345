"""Delivery: the dispatcher that sends what the outbox holds (`dispatcher`), under per-channel
rate limits (`limiter`), with the retry and batching knobs of `policy`, reporting its progress
and what is left (`report`)."""

from __future__ import annotations

from incident.delivery.dispatcher import Dispatcher
from incident.delivery.limiter import RateLimiter
from incident.delivery.policy import DeliveryPolicy
from incident.delivery.report import DeliveryReport, ProgressFn, Tally

__all__ = ["DeliveryPolicy", "DeliveryReport", "Dispatcher", "ProgressFn", "RateLimiter", "Tally"]
