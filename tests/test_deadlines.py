"""The time limit kept by one sweep per runner (`spectask.runtime.execution.Deadlines`).

No broker: the runner alone, on a real event loop. Each test waits for the
event it is about (the handler's end, its cancellation), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from spectask.runtime.context import TaskContext
from spectask.runtime.execution import HandlerRunner, TaskTimeoutError
from tests.test_isolation import CONTEXT


async def sleeper(payload: float, ctx: TaskContext) -> dict[str, float]:
    await asyncio.sleep(payload)
    return {"slept": payload}


def blocking(payload: float, ctx: TaskContext) -> dict[str, float]:
    time.sleep(payload)
    return {"slept": payload}


STARTED = asyncio.Event()


async def waiter(payload: float, ctx: TaskContext) -> None:
    STARTED.set()
    await asyncio.sleep(payload)


async def swallows_cancellation(payload: float, ctx: TaskContext) -> dict[str, bool]:
    """A handler that catches the limit's cancellation and returns as if all went well."""
    try:
        await asyncio.sleep(payload)
    except asyncio.CancelledError:
        return {"finished": False}
    return {"finished": True}


async def own_timeout(payload: float, ctx: TaskContext) -> None:
    raise TimeoutError("the handler's socket timed out")


async def test_a_loop_handler_past_its_limit_times_out_and_the_sweep_ends() -> None:
    runner = HandlerRunner(2, "thread")
    began = time.monotonic()
    with pytest.raises(TaskTimeoutError, match=r"time limit of 0\.2s"):
        await runner.run(sleeper, 30.0, CONTEXT, 0.2)  # type: ignore[arg-type]
    assert time.monotonic() - began < 0.2 + 10 * runner.deadlines.tick
    # in time: a result; and no deadline nor sweep left behind
    assert await runner.run(sleeper, 0.0, CONTEXT, 5.0) == {"slept": 0.0}  # type: ignore[arg-type]
    assert runner.deadlines._sweep is not None  # still finishing its tick
    await runner.deadlines._sweep
    assert not runner.deadlines._deadlines and not runner.deadlines._expired
    runner.close()


async def test_a_thread_handler_past_its_limit_times_out() -> None:
    runner = HandlerRunner(1, "thread")
    with pytest.raises(TaskTimeoutError):
        await runner.run(blocking, 1.0, CONTEXT, 0.1)  # type: ignore[arg-type]
    runner.close()


async def test_a_handler_that_swallows_the_limits_cancellation_still_timed_out() -> None:
    """Its late "result" is not a success: the task ran past its limit, so it is a timeout,
    and the runner's own task is left with no cancellation pending."""
    runner = HandlerRunner(1, "thread")
    with pytest.raises(TaskTimeoutError, match=r"time limit of 0\.1s"):
        await runner.run(swallows_cancellation, 30.0, CONTEXT, 0.1)  # type: ignore[arg-type]
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    assert await runner.run(sleeper, 0.0, CONTEXT, 5.0) == {"slept": 0.0}  # type: ignore[arg-type]
    runner.close()


async def test_a_cancellation_that_is_not_the_limit_is_passed_on() -> None:
    runner = HandlerRunner(1, "thread")
    STARTED.clear()
    running = asyncio.create_task(runner.run(waiter, 30.0, CONTEXT, 60.0))  # type: ignore[arg-type]
    await STARTED.wait()
    assert runner.deadlines._deadlines  # its deadline is kept while it runs
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert not runner.deadlines._deadlines
    runner.close()


async def test_the_handlers_own_timeout_error_is_an_ordinary_failure() -> None:
    runner = HandlerRunner(1, "thread")
    with pytest.raises(TimeoutError, match="socket") as raised:
        await runner.run(own_timeout, 0.0, CONTEXT, 5.0)  # type: ignore[arg-type]
    assert not isinstance(raised.value, TaskTimeoutError)
    runner.close()
