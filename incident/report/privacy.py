"""Contact data never leaves a report unmasked, even inside free text."""

from __future__ import annotations

from incident.audience import scrub

__all__ = ["scrub"]
