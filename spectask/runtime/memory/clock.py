"""The in-memory broker's clock: real time by default, a fake one tests move by hand.

TTLs (the retry tiers' `x-message-ttl`, a request's expiration) are the only timers the broker
keeps. With `FakeClock` a test says "three seconds pass" and every expiry due by then fires at
once, in time order, so a retry's delay is checked without sleeping and without flakiness.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""
        ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` once `now()` reaches `when` (on the event loop, not re-entrantly)."""
        ...


class RealClock:
    """The running event loop's clock: expiries fire on their own, as on RabbitMQ."""

    def now(self) -> float:
        return time.monotonic()  # asyncio's loop.time() is this clock, so call_at agrees

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_at(when, callback)


class _FakeTimer:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Time stands still until `advance`; then the timers due fire, earliest first."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _FakeTimer, Callable[[], None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = _FakeTimer()
        heapq.heappush(self._timers, (when, next(self._order), timer, callback))
        return timer

    def advance(self, seconds: float) -> int:
        """Move time forward; fire every timer due by then (each at its own time). Returns
        how many fired. Deliveries they cause are scheduled on the loop: await them."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        target = self._now + seconds
        fired = 0
        while self._timers and self._timers[0][0] <= target:
            when, _, timer, callback = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            callback()
            fired += 1
        self._now = target
        return fired

    def pending(self) -> int:
        """Timers not yet fired (nor cancelled)."""
        return sum(1 for _, _, timer, _ in self._timers if not timer.cancelled)
