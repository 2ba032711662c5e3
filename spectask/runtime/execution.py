"""Running one handler: async handlers on the loop, sync (CPU-bound) ones in a thread pool.

Running sync handlers off the event loop keeps AMQP heartbeats and other deliveries flowing
while a long task computes. The time limit comes from the task type's policy.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from pydantic import BaseModel

from spectask.runtime.context import TaskContext

HandlerResult = BaseModel | Mapping[str, Any] | None
Handler = Callable[[Any, TaskContext], Awaitable[HandlerResult] | HandlerResult]


class TaskTimeoutError(Exception):
    """The handler ran past its task type's time limit."""


class InvalidResultError(TypeError):
    """The handler returned something that is not a JSON object."""


class HandlerRunner:
    """Calls handlers with a time limit; owns the thread pool for sync handlers."""

    def __init__(self, concurrency: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="task")
        # Sync handlers wait here for a thread; the time limit starts once one is free.
        self._threads = asyncio.Semaphore(concurrency)
        self._is_async: dict[Handler, bool] = {}

    async def run(
        self, handler: Handler, payload: BaseModel, context: TaskContext, time_limit: float
    ) -> dict[str, Any] | None:
        is_async = self._is_async.get(handler)
        if is_async is None:
            is_async = self._is_async[handler] = inspect.iscoroutinefunction(handler)
        # asyncio.timeout, not wait_for: no extra task per message on the hot path.
        try:
            if is_async:
                async with asyncio.timeout(time_limit):
                    result = await cast(Awaitable[HandlerResult], handler(payload, context))
            else:
                sync_call = cast(
                    Callable[[], HandlerResult], functools.partial(handler, payload, context)
                )
                async with self._threads, asyncio.timeout(time_limit):
                    result = await asyncio.get_running_loop().run_in_executor(
                        self._executor, sync_call
                    )
        except TimeoutError:
            raise TaskTimeoutError(f"handler exceeded its time limit of {time_limit:g}s") from None
        return to_json_object(result)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


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
