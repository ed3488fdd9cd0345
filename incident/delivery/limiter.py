"""The rate limiter: how many messages (or SMS segments) a channel may release, and when, so
that the provider never sees more than its rate in any one-second window."""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable


class RateLimiter:
    """At most `rate` units (messages or SMS segments) in any one-second window, evenly spread.

    Two rules together. A sliding window of one second counted as the provider sees it: a
    request reaches the provider at some moment between its release here and its answer, so
    it occupies the window from its release until one second after its answer (`done`), and
    one still in flight counts whatever the clock says. Then no one-second window of arrivals
    can hold more than `rate`, however late a busy machine or the network delivers a request
    (counted from the release alone, a delayed request arrived together with the next
    second's). The price is the latency: the long-run ceiling is rate / (1 s + mean latency).
    And even spacing (GCRA) with a burst of at most a tenth of a second's worth, so that a
    second's allowance never leaves as one clump at its start.
    """

    def __init__(self, rate: float, *, margin: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.span = 1.0 + margin
        self.tolerance = 0.1  # seconds of burst the spacing allows (≥ 1 unit)
        self.clock = clock
        self.answered: list[tuple[float, float]] = []  # heap of (answered at, units)
        self.in_flight = 0.0  # units released and not yet answered
        self.recent = 0.0  # units answered less than `span` ago
        self.tat = 0.0  # theoretical arrival time of the next unit (GCRA)
        self.lock = asyncio.Lock()

    @property
    def used(self) -> float:
        """Units that may still fall into the provider's current one-second window."""
        return self.in_flight + self.recent

    def try_acquire(self, units: float = 1.0) -> bool:
        """Take `units` now if both rules allow it and nobody is waiting; else False."""
        return not self.lock.locked() and self._take(units, self.clock()) is None

    async def acquire(self, units: float = 1.0) -> None:
        """Wait until `units` may go without breaking either rule, then take them."""
        async with self.lock:
            while True:
                wait = self._take(units, self.clock())
                if wait is None:
                    return
                await asyncio.sleep(wait)

    def done(self, units: float = 1.0) -> None:
        """The request that took `units` has been answered (or given up): its window closes
        `span` from now."""
        self.in_flight = max(0.0, self.in_flight - units)
        heapq.heappush(self.answered, (self.clock(), units))
        self.recent += units

    def _take(self, units: float, now: float) -> float | None:
        """Take `units` at `now` (None) or say how long to wait before trying again."""
        answered = self.answered
        while answered and now - answered[0][0] >= self.span:
            self.recent -= heapq.heappop(answered)[1]
        if not answered:
            self.recent = 0.0  # no float drift once the window is empty
        tolerance = max(self.tolerance, units / self.rate)
        spaced = self.tat - now <= tolerance - units / self.rate
        # A single message larger than the whole rate goes alone in its window.
        fits = self.used + units <= self.rate or self.used <= 0
        if spaced and fits:
            self.tat = max(self.tat, now) + units / self.rate
            self.in_flight += units
            return None
        waits = [0.0005]
        if not spaced:
            waits.append(self.tat - (tolerance - units / self.rate) - now)
        if not fits:
            # The oldest answer leaves the window then; with every unit still in flight,
            # look again shortly (an answer or a timeout will come).
            waits.append(answered[0][0] + self.span - now if answered else 0.005)
        return max(waits)
