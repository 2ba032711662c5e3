"""A task that fails for good is DEAD from the first final answer of wait(), on a real broker.

The worker publishes a dead letter and a failed result for it, and the collector stores the
two in whatever order they come. The collector here holds one of them back until the test has
seen wait() return, so each order is forced instead of hoped for: wait() must already say
DEAD (with its reason), and once the held message is stored too, nothing it said changes.
Real broker, real stores (SQLite and PostgreSQL), the generated clients, WorkerApp and the
collector's own store handlers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import pytest

from generated import models
from generated.collector import CollectorApp
from generated.worker import WorkerApp
from spectask.collector import add_store_handlers
from spectask.errors import PermanentTaskError
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.store import EventKind, Observation, TaskRecord, TaskStore, open_store
from tests.runtime_support import running
from tests.status_support import new_id, producer_client, purge_collector_copies

pytestmark = pytest.mark.asyncio

Source = Literal["result", "dead_letter"]
STORED_SECONDS = 15.0


class Gate:
    """Holds the store write of one task's result or dead letter until released."""

    def __init__(self, task_id: str, held: Source) -> None:
        self.task_id = task_id
        self.held = held
        self.release = asyncio.Event()
        self.stored: dict[Source, asyncio.Event] = {
            "result": asyncio.Event(),
            "dead_letter": asyncio.Event(),
        }

    async def write(
        self, source: Source, task_id: str, write: Callable[[], Awaitable[TaskRecord]]
    ) -> TaskRecord:
        ours = task_id == self.task_id
        if ours and source == self.held:
            await self.release.wait()
        record = await write()
        if ours:
            self.stored[source].set()
        return record


class GatedStore:
    """A TaskStore that passes every call through, the gated task's held write once released.

    The collector's handlers write a dead letter with `apply` (a DEAD observation) and a
    result with `apply_result`; that is how the two are told apart.
    """

    def __init__(self, store: TaskStore, gate: Gate) -> None:
        self._store = store
        self._gate = gate

    async def apply(self, observation: Observation) -> TaskRecord:
        if observation.kind is not EventKind.DEAD:
            return await self._store.apply(observation)
        return await self._gate.write(
            "dead_letter", observation.task_id, lambda: self._store.apply(observation)
        )

    async def apply_result(self, result: models.TaskResult) -> TaskRecord:
        return await self._gate.write(
            "result", result.task_id, lambda: self._store.apply_result(result)
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@asynccontextmanager
async def gated_collector(amqp_url: str, store_url: str, gate: Gate) -> AsyncIterator[None]:
    """An in-process collector (store + status RPC) writing through a GatedStore."""
    store = GatedStore(await open_store(store_url), gate)
    app = CollectorApp()
    add_store_handlers(app, store)

    @app.collect_result
    async def on_result(result: models.TaskResult, context: TaskContext) -> None:
        await store.apply_result(result)

    stop = asyncio.Event()
    broker = await Broker.connect(RuntimeConfig(amqp_url=amqp_url), name="test-dead-collector")
    await purge_collector_copies(broker)
    runner = asyncio.create_task(app.run(broker, worker_id="c-dead", stop=stop))
    try:
        yield
    finally:
        gate.release.set()  # a held delivery must not keep the collector from stopping
        stop.set()
        await runner
        await broker.close()
        await store.close()


async def hopeless(payload: models.DataStatistics, context: TaskContext) -> dict[str, Any]:
    if not context.task_id.startswith("rpc-"):
        return {"other": True}  # left in the shared queue by another test
    raise PermanentTaskError("hopeless input")


async def quick(payload: Any, context: TaskContext) -> dict[str, Any]:
    return {"other": True}


@asynccontextmanager
async def failing_worker(amqp_url: str) -> AsyncIterator[None]:
    """A data_analysis worker whose statistics handler fails for good (no retries)."""
    app = WorkerApp()
    app.process_data_statistics(hopeless)
    app.process_data_aggregate(quick)
    app.process_data_detect_patterns(quick)
    async with running(amqp_url, app, "w-dead", ["data_analysis"]):
        yield


@pytest.mark.parametrize("first", ["result", "dead_letter"])
async def test_a_task_that_fails_for_good_is_dead_from_the_first_final_answer(
    amqp_url: str, store_url: str, first: Source
) -> None:
    task_id = new_id("hopeless")
    gate = Gate(task_id, held="dead_letter" if first == "result" else "result")
    async with await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker:
        client = await producer_client(broker)
        async with gated_collector(amqp_url, store_url, gate), failing_worker(amqp_url):
            await client.submit_data_statistics(
                models.DataStatistics(values=[1.0]), task_id=task_id
            )
            view = (await client.wait([task_id], timeout=30.0))[task_id]
            assert gate.stored[first].is_set() and not gate.stored[gate.held].is_set()
            assert view.state is models.TaskState.DEAD, view
            assert view.dead_reason == "permanent"
            assert view.error is not None and "hopeless input" in view.error.message

            gate.release.set()
            await asyncio.wait_for(gate.stored[gate.held].wait(), timeout=STORED_SECONDS)
            after = (await client.get_status([task_id], timeout=5.0)).tasks[0]
            assert after.state is models.TaskState.DEAD
            assert (after.error, after.dead_reason) == (view.error, view.dead_reason)
            assert after.worker_id == "w-dead" and after.attempts == 1
