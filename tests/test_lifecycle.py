"""STARTED and progress over the status RPC, cancellation (queued and running), and wait().

Real broker, real stores (SQLite and PostgreSQL), the generated clients and WorkerApp. The sync
handlers are module-level so they run in handler processes (the default isolation): their
progress crosses the slot's socket and their cancellation a shared flag.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from generated import models
from generated.producer import ProducerClient
from generated.worker import WorkerApp
from spectask.runtime import memory
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.consumer import WorkerStats
from spectask.runtime.context import TaskContext
from spectask.runtime.waiting import WaitTimeoutError
from tests.runtime_support import POLL_SECONDS, pass_time
from tests.status_support import (
    collector,
    new_id,
    producer_client,
    wait_states,
    worker_cancelled,
)

pytestmark = pytest.mark.asyncio

OURS = "rpc-"  # the prefix of new_id(): tasks this module submitted
Handler = Callable[[models.DataStatistics, TaskContext], Any]


def stepper(payload: models.DataStatistics, context: TaskContext) -> dict[str, Any]:
    """`values[0]` steps of 50 ms, reporting progress each step (so it can be cancelled)."""
    if not context.task_id.startswith(OURS):
        return {"other": True}  # left in the shared queue by another test
    steps = int(payload.values[0])
    for step in range(steps):
        context.progress(100.0 * step / steps, f"step {step} of {steps}")
        time.sleep(0.05)
    return {"steps": steps}


def gate(task_id: str) -> Path:
    """A file the test creates to let a gated handler (in a handler process) go on."""
    return Path(tempfile.gettempdir()) / f"spectask-test-gate-{task_id}"


def gated(payload: models.DataStatistics, context: TaskContext) -> dict[str, Any]:
    """`values[0]` quick steps reporting progress; half way it keeps reporting the same step
    until the test opens `gate(task_id)`, so the test sees it running without a race."""
    if not context.task_id.startswith(OURS):
        return {"other": True}  # left in the shared queue by another test
    steps = int(payload.values[0])
    deadline = time.monotonic() + 20
    for step in range(steps):
        context.progress(100.0 * step / steps, f"step {step} of {steps}")
        while step == steps // 2 and not gate(context.task_id).exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the test never opened the gate")
            time.sleep(0.01)
            context.progress(100.0 * step / steps, f"step {step} of {steps}")
        time.sleep(0.002)
    return {"steps": steps}


def deaf(payload: models.DataStatistics, context: TaskContext) -> dict[str, Any]:
    """Runs until its cancellation has arrived (up to `values[0]` x 50 ms), and never acts on it:
    it reads the flag but neither raises nor reports progress."""
    if not context.task_id.startswith(OURS):
        return {"other": True}
    deadline = time.monotonic() + 0.05 * payload.values[0]
    while not context.cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"checked": False, "cancel_seen": context.cancelled}


def quick(payload: Any, context: TaskContext) -> dict[str, Any]:
    return {"n": len(getattr(payload, "values", []) or [])}


@asynccontextmanager
async def data_worker(
    any_url: str, statistics: Handler, *, worker_id: str = "w-life"
) -> AsyncIterator[list[WorkerStats]]:
    """A data_analysis worker whose statistics handler is `statistics` (others: `quick`)."""
    app = WorkerApp()
    app.process_data_statistics(statistics)
    app.process_data_aggregate(quick)
    app.process_data_detect_patterns(quick)
    stop = asyncio.Event()
    stats: list[WorkerStats] = []
    config = RuntimeConfig(amqp_url=any_url, progress_interval=0.1)
    broker = await Broker.connect(config, name="test-lifecycle-worker")
    runner = asyncio.create_task(
        app.run(broker, worker_id=worker_id, task_types=["data_analysis"], stop=stop)
    )
    try:
        yield stats
    finally:
        stop.set()
        stats.append(await runner)
        await broker.close()


async def cancel(client: ProducerClient, *task_ids: str, reason: str = "test") -> None:
    await client.cancel_tasks(
        models.TaskCancel(
            task_ids=list(task_ids),
            requested_at=datetime.now(UTC),
            requested_by="tests",
            reason=reason,
        )
    )


async def poll_until(
    client: ProducerClient,
    task_id: str,
    ok: Callable[[models.TaskStatusView], bool],
    timeout: float = 20.0,
) -> models.TaskStatusView:
    deadline = time.monotonic() + timeout
    while True:
        view = (await client.get_status([task_id], timeout=5.0)).tasks[0]
        if ok(view):
            return view
        assert time.monotonic() < deadline, f"{task_id} never got there; last seen {view}"
        await asyncio.sleep(POLL_SECONDS)


async def cancel_reached(url: str, timeout: float = 10.0) -> None:
    """On the in-memory broker, wait until every follower of the cancellation stream has handled
    all of it. RabbitMQ cannot be asked; there the retry tier's 1 s wait leaves it that time."""
    if not url.startswith("memory://"):
        return
    hub = memory.hub(url)
    deadline = time.monotonic() + timeout
    while not hub.streams_read():
        assert time.monotonic() < deadline, "the cancellation stream was not read"
        await asyncio.sleep(POLL_SECONDS)


async def test_started_and_progress_reach_the_store(any_url: str, store_url: str) -> None:
    """A running task is STARTED with its worker and progress; it ends SUCCEEDED at 100."""
    async with await Broker.connect(RuntimeConfig(amqp_url=any_url)) as broker:
        client = await producer_client(broker)
        task = new_id("steps")
        try:
            async with collector(any_url, store_url), data_worker(any_url, gated):
                try:
                    await client.submit_data_statistics(
                        models.DataStatistics(values=[40.0]), task_id=task
                    )
                    # it holds at 20 of 40 until the gate opens: its `started` event comes too
                    view = await poll_until(
                        client,
                        task,
                        lambda v: (
                            v.state.value == "STARTED"
                            and (v.progress or 0) > 20
                            and v.started_at is not None
                        ),
                    )
                    assert view.worker_id == "w-life"
                    assert view.progress_message is not None and "of 40" in view.progress_message
                finally:
                    gate(task).touch()  # never leave the handler waiting at shutdown
                views = await wait_states(client, {task: "SUCCEEDED"})
        finally:
            gate(task).unlink(missing_ok=True)
            assert views[task].progress == 100 and views[task].result == {"steps": 40}


async def test_a_cancelled_queued_task_is_skipped_by_a_worker_started_later(
    any_url: str, store_url: str
) -> None:
    """Cancelled while queued (no worker runs); a worker started afterwards reads the stream,
    skips it without running it, and it ends CANCELLED; its neighbour still runs."""
    async with await Broker.connect(RuntimeConfig(amqp_url=any_url)) as broker:
        client = await producer_client(broker)
        async with collector(any_url, store_url) as (store, _):
            doomed = await client.submit_data_statistics(
                models.DataStatistics(values=[1.0]), task_id=new_id("doomed")
            )
            kept = await client.submit_data_statistics(
                models.DataStatistics(values=[1.0]), task_id=new_id("kept")
            )
            await wait_states(client, {doomed: "QUEUED", kept: "QUEUED"})
            await cancel(client, doomed, reason="changed my mind")
            ran: list[str] = []

            async def record(payload: models.DataStatistics, context: TaskContext) -> Any:
                ran.append(context.task_id)
                return {"ran": True}

            # the collector's copy of the cancel makes it CANCELLED before any worker runs
            await wait_states(client, {doomed: "CANCELLED", kept: "QUEUED"})
            views = await wait_states(client, {doomed: "CANCELLED", kept: "QUEUED"})
            error = views[doomed].error
            assert (
                error is not None and error.message == "cancel requested by tests: changed my mind"
            )
            async with data_worker(any_url, record) as stats:
                await wait_states(client, {doomed: "CANCELLED", kept: "SUCCEEDED"})
                said = await worker_cancelled(store, doomed)
            assert doomed not in ran and kept in ran
            assert stats[0].cancelled >= 1
            assert "changed my mind" in said and "skipped before it ran" in said


async def test_a_running_task_is_cancelled_cooperatively(any_url: str, store_url: str) -> None:
    """A handler process reporting progress stops at its next report; it is not retried."""
    async with await Broker.connect(RuntimeConfig(amqp_url=any_url)) as broker:
        client = await producer_client(broker)
        async with (
            collector(any_url, store_url) as (store, _),
            data_worker(any_url, stepper) as stats,
        ):
            task = await client.submit_data_statistics(
                models.DataStatistics(values=[400.0]), task_id=new_id("long")
            )
            await poll_until(client, task, lambda v: v.state.value == "STARTED")
            asked = time.monotonic()
            await cancel(client, task)
            # CANCELLED at once (the collector's copy of the cancel); the worker's own
            # cancelled result, once the handler has stopped, says what it did
            said = await worker_cancelled(store, task)
            stopped_after = time.monotonic() - asked
            views = await wait_states(client, {task: "CANCELLED"})
            assert views[task].attempts == 1
            assert "stopped while running" in said
            assert stopped_after < 5.0, f"it ran on for {stopped_after:.1f}s (20 s if ignored)"
        assert stats[0].cancelled == 1 and stats[0].retried == 0 and stats[0].dead_lettered == 0


async def test_a_handler_that_never_checks_finishes_normally(any_url: str, store_url: str) -> None:
    """Cancellation is cooperative: a handler that does not look finishes, and says so."""
    async with await Broker.connect(RuntimeConfig(amqp_url=any_url)) as broker:
        client = await producer_client(broker)
        async with collector(any_url, store_url), data_worker(any_url, deaf):
            task = await client.submit_data_statistics(
                models.DataStatistics(values=[400.0]), task_id=new_id("deaf")
            )
            await poll_until(client, task, lambda v: v.state.value == "STARTED")
            await cancel(client, task)
            views = await wait_states(client, {task: "SUCCEEDED"})
            assert views[task].result == {"checked": False, "cancel_seen": True}


async def test_wait_returns_final_views_and_times_out_naming_the_pending(
    any_url: str, tmp_path: Any
) -> None:
    store_url = f"sqlite:///{tmp_path / 'tasks.db'}"
    async with await Broker.connect(RuntimeConfig(amqp_url=any_url)) as broker:
        client = await producer_client(broker)
        async with collector(any_url, store_url):
            ids = [
                await client.submit_data_statistics(
                    models.DataStatistics(values=[1.0, 2.0]), task_id=new_id("wait")
                )
                for _ in range(5)
            ]
            with pytest.raises(WaitTimeoutError) as caught:
                await client.wait(ids, 0.2, poll_interval=0.05)
            assert set(caught.value.pending) == set(ids) and not caught.value.final
            assert "5 of 5 tasks not final" in str(caught.value)
            progress: list[int] = []
            async with data_worker(any_url, quick):
                final = await client.wait(
                    [*ids, ids[0]], 20.0, on_progress=progress.append, poll_interval=0.02
                )
            assert list(final) == ids, "the order given, each id once"
            assert {view.state.value for view in final.values()} == {"SUCCEEDED"}
            assert sum(progress) == 5


async def test_only_tasks_running_past_started_after_send_started(amqp_url: str) -> None:
    """Short tasks keep one publish on the success path: no `started` event for them.

    RabbitMQ only: it measures timing against a real broker's pace of deliveries.
    """
    async with await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker:
        client = await producer_client(broker)
        channel = await broker.connection.channel()
        events = await channel.declare_queue(exclusive=True)
        await events.bind("events", "data_analysis.started")
        async with data_worker(amqp_url, stepper):
            # the first task waits for the handler processes to start: warm them up
            await client.submit_data_statistics(models.DataStatistics(values=[0.0]))
            await asyncio.sleep(1.5)
            short = [
                await client.submit_data_statistics(
                    models.DataStatistics(values=[0.0]), task_id=new_id("short")
                )
                for _ in range(10)
            ]
            long = await client.submit_data_statistics(
                models.DataStatistics(values=[12.0]), task_id=new_id("long")
            )
            started: list[str] = []
            deadline = time.monotonic() + 15
            while long not in started and time.monotonic() < deadline:
                message = await events.get(fail=False, no_ack=True)
                if message is None:
                    await asyncio.sleep(0.05)
                elif message.message_id in {*short, long}:
                    started.append(message.message_id or "")
            await asyncio.sleep(0.8)  # the long task ends; nothing else may turn up
            while (message := await events.get(fail=False, no_ack=True)) is not None:
                if message.message_id in {*short, long}:
                    started.append(message.message_id or "")
        await channel.close()
    assert started == [long]


async def test_a_task_cancelled_while_waiting_to_retry_is_not_run_again(
    any_url: str, tmp_path: Any
) -> None:
    """RETRYING (its first attempt failed, it waits in a delay tier), then cancelled: when it
    comes back the worker skips it, so there is no second attempt."""
    store_url = f"sqlite:///{tmp_path / 'tasks.db'}"
    task = new_id("retrying")
    attempts: list[int] = []

    async def flaky(payload: models.DataStatistics, context: TaskContext) -> Any:
        if context.task_id != task:
            return {"other": True}  # left in the queue by another test
        attempts.append(context.attempt)
        raise ConnectionError("upstream is down")

    async with await Broker.connect(RuntimeConfig(amqp_url=any_url)) as broker:
        client = await producer_client(broker)
        async with (
            collector(any_url, store_url) as (store, _),
            data_worker(any_url, flaky) as stats,
        ):
            await client.submit_data_statistics(models.DataStatistics(values=[1.0]), task_id=task)
            await poll_until(client, task, lambda v: v.state.value == "RETRYING")
            await cancel(client, task, reason="no point retrying")
            await cancel_reached(any_url)
            await pass_time(any_url, 1.2)  # its retry tier's wait (0.9 to 1.1 s)
            said = await worker_cancelled(store, task)  # it came back and was skipped
            views = await wait_states(client, {task: "CANCELLED"})
        assert attempts == [1], "the cancelled task ran again"
        assert stats[0].retried == 1 and stats[0].cancelled >= 1
        error = views[task].error
        assert error is not None and "no point retrying" in error.message
        assert "skipped before it ran" in said
