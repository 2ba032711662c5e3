"""Running one handler with its time limit: async handlers on the loop, sync ones off it.

The time limit of a handler on the loop or in a thread is kept by one sweep per runner
(`Deadlines`), not a timeout scope per task: a task costs a dict entry (its deadline) in and
out, and one periodic task cancels whatever has run past its deadline, within
`DEADLINE_TICK_SECONDS` of it. The sweep runs only while handlers do.

Sync (CPU-bound) handlers run off the event loop so AMQP heartbeats and other deliveries keep
flowing while a long task computes. By default they run in a pool of child processes
(`spectask.runtime.isolation`), where a time limit really stops the handler and a crash fails
only its task; `SPECTASK_ISOLATION=thread` runs them in a thread pool instead, which is cheaper
per task but can only stop *waiting* for a handler that overruns. A sync handler that cannot be
pickled (a closure, a lambda) runs in a thread either way, with a warning.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, cast

from pydantic import BaseModel

from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.runtime.control import TaskSignals
from spectask.runtime.isolation import (
    DEFAULT_PROGRESS_INTERVAL,
    HandlerCrashedError,
    ProcessPool,
    TaskTimeoutError,
)

__all__ = [
    "Handler",
    "HandlerCrashedError",
    "HandlerResult",
    "HandlerRunner",
    "InvalidResultError",
    "TaskTimeoutError",
    "to_json_object",
]

log = logging.getLogger(__name__)

HandlerResult = BaseModel | Mapping[str, Any] | None
Handler = Callable[[Any, TaskContext], Awaitable[HandlerResult] | HandlerResult]
Isolation = Literal["process", "thread"]


class InvalidResultError(TypeError):
    """The handler returned something that is not a JSON object."""


DEADLINE_TICK_SECONDS = 0.05
"""How often the sweep looks for handlers past their time limit (so a limit fires up to this
late); 20 checks a second cost a few microseconds each, against a timer per task."""


class Deadlines:
    """The running handlers' deadlines, and the one sweep that cancels those past theirs.

    A handler past its deadline has its task cancelled, as `asyncio.timeout` would, and is
    marked expired, so the runner tells that cancellation (a TaskTimeoutError) from any other
    (a shutdown), which it passes on. The sweep starts with the first deadline and ends when
    none is left, so an idle worker wakes for nothing.
    """

    __slots__ = ("_deadlines", "_expired", "_sweep", "tick")

    def __init__(self, tick: float = DEADLINE_TICK_SECONDS) -> None:
        self.tick = tick
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweep: asyncio.Task[None] | None = None

    def enter(self, task: asyncio.Task[Any], time_limit: float) -> None:
        loop = asyncio.get_running_loop()
        self._deadlines[task] = loop.time() + time_limit
        if self._sweep is None:
            self._sweep = loop.create_task(self._run())

    def leave(self, task: asyncio.Task[Any]) -> bool:
        """Forget `task`'s deadline; whether the sweep cancelled it for passing it."""
        self._deadlines.pop(task, None)
        if self._expired:
            try:
                self._expired.remove(task)
            except KeyError:
                return False
            return True
        return False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadlines = self._deadlines
        try:
            while deadlines:
                await asyncio.sleep(self.tick)
                now = loop.time()
                for task, deadline in list(deadlines.items()):
                    if deadline <= now and task not in self._expired:
                        self._expired.add(task)
                        task.cancel()
        finally:
            self._sweep = None


class _Mode(enum.Enum):
    LOOP = "loop"
    PROCESS = "process"
    THREAD = "thread"


class HandlerRunner:
    """Calls handlers with a time limit; owns the process (or thread) pool for sync handlers.

    `isolation` defaults to `SPECTASK_ISOLATION` (see `RuntimeConfig.isolation`).
    """

    def __init__(
        self,
        concurrency: int,
        isolation: Isolation | None = None,
        *,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
    ) -> None:
        self._concurrency = concurrency
        self._isolation = isolation or RuntimeConfig().isolation
        self._executor: ThreadPoolExecutor | None = None
        # Sync handlers wait here for a thread; the time limit starts once one is free.
        self._threads = asyncio.Semaphore(concurrency)
        self._pool: ProcessPool | None = None
        if self._isolation == "process":
            self._pool = ProcessPool(
                concurrency, to_json_object, progress_interval=progress_interval
            )
        self._modes: dict[Handler, _Mode] = {}
        self.deadlines = Deadlines()

    @property
    def pool(self) -> ProcessPool | None:
        """The handler process pool (None with thread isolation)."""
        return self._pool

    async def run(
        self, handler: Handler, payload: BaseModel, context: TaskContext, time_limit: float
    ) -> dict[str, Any] | None:
        mode = self._modes.get(handler) or self._mode_of(handler)
        if mode is _Mode.PROCESS:
            assert self._pool is not None
            sync_handler = cast(Callable[[Any, Any], object], handler)
            signals = context.signals if isinstance(context.signals, TaskSignals) else None
            return cast(
                dict[str, Any] | None,
                await self._pool.run(sync_handler, payload, context, time_limit, signals),
            )
        # One sweep keeps every deadline (`Deadlines`): no timer or scope per task.
        task = asyncio.current_task()
        assert task is not None
        deadlines = self.deadlines
        expired = False
        try:
            if mode is _Mode.LOOP:
                context.raise_if_cancelled()
                deadlines.enter(task, time_limit)
                try:
                    result = await cast(Awaitable[HandlerResult], handler(payload, context))
                finally:
                    expired = deadlines.leave(task)
            else:
                sync_call = cast(
                    Callable[[], HandlerResult], functools.partial(handler, payload, context)
                )
                async with self._threads:
                    context.raise_if_cancelled()  # cancelled while it waited for a thread
                    deadlines.enter(task, time_limit)  # the limit starts once a thread is free
                    try:
                        result = await asyncio.get_running_loop().run_in_executor(
                            self._thread_pool(), sync_call
                        )
                    finally:
                        expired = deadlines.leave(task)
        except asyncio.CancelledError:
            if not expired or task.uncancel() > 0:
                raise  # a cancellation of ours, not the time limit (a shutdown): pass it on
            raise TaskTimeoutError(f"handler exceeded its time limit of {time_limit:g}s") from None
        if expired and task.uncancel() == 0:
            # the handler caught the sweep's cancellation and returned: over the limit all the
            # same, so a timeout, not a success (tests/test_deadlines.py)
            raise TaskTimeoutError(f"handler exceeded its time limit of {time_limit:g}s")
        return to_json_object(result)

    def _mode_of(self, handler: Handler) -> _Mode:
        if inspect.iscoroutinefunction(handler):
            mode = _Mode.LOOP
        elif self._pool is None:
            mode = _Mode.THREAD
        elif self._pool.accepts(cast(Callable[[Any, Any], object], handler)):
            mode = _Mode.PROCESS
        else:
            mode = _Mode.THREAD
            log.warning(
                "handler %r cannot be pickled, so it runs in a thread, where a time limit "
                "cannot stop it; define it at module level (bind arguments with "
                "functools.partial) to run it in a handler process, or set "
                "SPECTASK_ISOLATION=thread",
                handler,
            )
        self._modes[handler] = mode
        return mode

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self._concurrency, thread_name_prefix="task"
            )
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._pool is not None:
            self._pool.close()


def to_json_object(result: object) -> dict[str, Any] | None:
    """A handler's return value as a JSON object (a model, a mapping, or nothing)."""
    if result is None:
        return None
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json", by_alias=True)
    if isinstance(result, Mapping):
        return dict(result)
    raise InvalidResultError(
        f"handler returned {type(result).__name__}; return a pydantic model, a dict or None"
    )
