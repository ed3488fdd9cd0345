"""The time source, injected: the system clock in production, a frozen one in tests.

Every time the toolkit records or compares with "now" comes from the `Clock` it was given
(`Runtime.clock`, handed on to the store and the dispatcher). Nothing reads the time from the
environment: a recorded time cannot be set by whoever can set a variable.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Where "now" comes from."""

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The operating system's clock (what production runs on)."""

    def now(self) -> datetime:
        """The system's current time in UTC."""
        return datetime.now(UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


class FrozenClock:
    """A clock that stands still until it is set or advanced (tests, benchmarks, replays)."""

    def __init__(self, at: datetime | str) -> None:
        self._at = _aware(at)

    def now(self) -> datetime:
        """The time it was set to."""
        return self._at

    def set(self, at: datetime | str) -> None:
        """Move to `at` (a datetime or an ISO text; naive means UTC)."""
        self._at = _aware(at)

    def advance(self, delta: timedelta) -> None:
        """Move on by `delta`."""
        self._at += delta

    def __repr__(self) -> str:
        return f"FrozenClock({self._at.isoformat()!r})"


SYSTEM_CLOCK: Clock = SystemClock()


def _aware(at: datetime | str) -> datetime:
    value = datetime.fromisoformat(at.replace("Z", "+00:00")) if isinstance(at, str) else at
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
