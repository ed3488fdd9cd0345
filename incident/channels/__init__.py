"""Delivery channels: the `Channel` protocol and its transports (file, SMTP, Twilio, webhook)."""

from __future__ import annotations

from incident.channels.base import (
    Channel,
    EmailOut,
    MessageRef,
    Outcome,
    Outgoing,
    SmsOut,
    VoiceOut,
)

__all__ = ["Channel", "EmailOut", "MessageRef", "Outcome", "Outgoing", "SmsOut", "VoiceOut"]
