"""The worker's side of a running attempt: progress reports coming out, a cancel going in.

A `TaskSignals` belongs to one attempt. The handler reaches it through its TaskContext
(`ctx.progress`, `ctx.cancelled`); the worker's cancellation watch calls `cancel()` on it. A
handler on the event loop or in a thread uses it directly; a handler in a child process gets a
stand-in (`spectask.runtime.isolation`) whose reports arrive here through `forward` and which
reads a flag that `on_cancel` callbacks set.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from spectask.runtime.context import check_percent

ProgressSink = Callable[[float, str | None], None]


class Throttle:
    """Lets one event through per `interval` seconds (the first always); drops the rest."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: float | None = None

    def allow(self) -> bool:
        now = time.monotonic()
        if self._last is not None and now - self._last < self._interval:
            return False
        self._last = now
        return True


class TaskSignals:
    """Progress and cancellation of one attempt; `report` is safe from any thread."""

    def __init__(
        self, on_progress: ProgressSink, *, interval: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._on_progress = on_progress
        self._throttle = Throttle(interval)
        self._loop = loop
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def report(self, percent: float, message: str | None) -> None:
        check_percent(percent)
        with self._lock:
            allowed = self._throttle.allow()
        if allowed:
            self._deliver(percent, message)

    def forward(self, percent: float, message: str | None) -> None:
        """A report from a handler process (already throttled there); called on the loop."""
        check_percent(percent)
        self._deliver(percent, message)

    def _deliver(self, percent: float, message: str | None) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._on_progress(percent, message)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_progress, percent, message)

    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Ask the handler to stop (it sees `ctx.cancelled`); runs the `on_cancel` callbacks."""
        with self._lock:
            if self._cancelled.is_set():
                return
            self._cancelled.set()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` on cancel (now, if already cancelled); returns an unsubscribe."""
        with self._lock:
            already = self._cancelled.is_set()
            if not already:
                self._callbacks.append(callback)
        if already:
            callback()

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe
