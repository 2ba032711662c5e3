"""The worker's side of a running attempt: progress reports coming out, a cancel going in.

A `TaskSignals` belongs to one attempt. The handler reaches it through its TaskContext
(`ctx.progress`, `ctx.cancelled`); the worker's cancellation watch calls `cancel()` on it. A
handler on the event loop or in a thread uses it directly; a handler in a child process gets a
stand-in (`spectask.runtime.isolation`) whose reports arrive here through `forward` and which
reads a flag that `on_cancel` callbacks set.

One is made for every task, so it is kept cheap (slots, no locks): the cancel flag is a plain
attribute (reads and writes are atomic under the GIL), `cancel` and `on_cancel` run on the
event loop, and a report from a handler's thread hops to the loop before it reaches the sink.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from spectask.runtime.context import check_percent

if TYPE_CHECKING:
    from spectask.runtime.context import TaskContext

ProgressSink = Callable[["TaskContext", float, str | None], None]


class Throttle:
    """Lets one event through per `interval` seconds (the first always); drops the rest."""

    __slots__ = ("_interval", "_last")

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
    """Progress and cancellation of one attempt, and when it started (see the module doc).

    `context` is set once the attempt's TaskContext exists (it holds these signals);
    `announced` is set once its `started` event went out.
    """

    __slots__ = (
        "_callbacks",
        "_cancelled",
        "_interval",
        "_loop",
        "_sink",
        "_throttle",
        "announced",
        "context",
        "since",
        "started_at",
    )

    def __init__(
        self,
        sink: ProgressSink | None,
        *,
        interval: float,
        loop: asyncio.AbstractEventLoop,
        started_at: datetime | None = None,
    ) -> None:
        self._sink = sink
        self._interval = interval
        self._throttle: Throttle | None = None  # made at the first report: most tasks make none
        self._loop = loop
        self._cancelled = False
        self._callbacks: list[Callable[[], None]] | None = None
        self.context: TaskContext | None = None
        self.started_at = started_at
        self.since = loop.time()
        self.announced = False

    def report(self, percent: float, message: str | None) -> None:
        """From the handler, on the loop or in a thread: throttled, then to the sink."""
        check_percent(percent)
        throttle = self._throttle
        if throttle is None:
            throttle = self._throttle = Throttle(self._interval)
        if throttle.allow():
            self._deliver(percent, message)

    def forward(self, percent: float, message: str | None) -> None:
        """A report from a handler process (already throttled there); called on the loop."""
        check_percent(percent)
        self._deliver(percent, message)

    def _deliver(self, percent: float, message: str | None) -> None:
        if self._sink is None or self.context is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._sink(self.context, percent, message)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._sink, self.context, percent, message)

    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Ask the handler to stop (it sees `ctx.cancelled`); runs the `on_cancel` callbacks."""
        if self._cancelled:
            return
        self._cancelled = True
        for callback in list(self._callbacks or ()):
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` on cancel (now, if already cancelled); returns an unsubscribe."""
        if self._cancelled:
            callback()
        else:
            if self._callbacks is None:
                self._callbacks = []
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            if self._callbacks is not None and callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe
