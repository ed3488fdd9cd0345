"""incident — emergency response and incident communication for customer-service departments."""

from __future__ import annotations

__version__ = "0.1.0"
