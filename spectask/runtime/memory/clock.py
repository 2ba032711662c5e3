"""The in-memory broker's clock: real time by default, a fake one tests move by hand, or real
time a test may skip forward (`SkippingClock`).

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


class SkippingClock:
    """Real time, plus whatever was skipped: `skip(s)` makes `s` seconds pass at once.

    Until something skips it behaves exactly as `RealClock` (expiries fire on their own, on the
    loop). A test on the in-memory broker skips a retry tier's wait instead of sleeping through
    it, while time limits and timeouts, which run on the loop's own clock, still pass for real;
    `now()` counts both, so a delay measured on it is what a broker would have shown.
    """

    def __init__(self) -> None:
        self.skipped = 0.0
        self._timers: list[tuple[float, int, _FakeTimer, Callable[[], None]]] = []
        self._order = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def now(self) -> float:
        return time.monotonic() + self.skipped

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = _FakeTimer()
        heapq.heappush(self._timers, (when, next(self._order), timer, callback))
        self._loop = asyncio.get_running_loop()
        self._arm()
        return timer

    def skip(self, seconds: float) -> int:
        """Let `seconds` pass now: every timer due by then fires, earliest first. Returns how
        many fired. Deliveries they cause are scheduled on the loop: await them."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self.skipped += seconds
        return self._fire()

    def next_due(self) -> float | None:
        """When the earliest pending timer is due (on `now()`'s scale), or None."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def pending(self) -> int:
        """Timers not yet fired (nor cancelled)."""
        return sum(1 for _, _, timer, _ in self._timers if not timer.cancelled)

    def _fire(self) -> int:
        self._handle = None
        fired = 0
        while self._timers and self._timers[0][0] <= self.now():
            _, _, timer, callback = heapq.heappop(self._timers)
            if not timer.cancelled:
                callback()
                fired += 1
        self._arm()
        return fired

    def _arm(self) -> None:
        """One loop timer, for the earliest pending expiry (on the loop's unskipped clock)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        due = self.next_due()
        if due is not None and self._loop is not None and not self._loop.is_closed():
            self._handle = self._loop.call_at(due - self.skipped, self._fire)
