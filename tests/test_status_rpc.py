"""The collector writes results into the task store and answers the status RPC from it.

Real broker, real stores (SQLite file; PostgreSQL when one answers, see tests/store_support.py).
QUEUED comes from the broker's copy of each task (collector.tasks), RETRYING from the worker's
`retrying` event, DEAD from the copy of each dead letter (collector.dead_letter). STARTED is not
published (it would cost the success path a publish per task).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest

from generated import models
from generated.collector import RECEIVE_ROUTES as COLLECTOR_ROUTES
from generated.collector import CollectorApp
from generated.producer import ProducerClient
from generated.topology import TOPOLOGY
from generated.worker import WorkerApp
from spectask.commands.collector import add_store_handlers
from spectask.errors import PermanentTaskError, RpcTimeoutError
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.consumer import WorkerStats
from spectask.runtime.context import TaskContext
from spectask.runtime.producer import TaskPublisher
from spectask.store import TaskState, TaskStore, open_store
from tests.store_support import fresh_database

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tasks.db'}"
    else:
        with fresh_database("spectask_rpc") as url:
            yield url


async def _client(broker: Broker) -> ProducerClient:
    await broker.declare(TOPOLOGY)
    return ProducerClient(TaskPublisher(await broker.publisher(), TOPOLOGY), broker.rpc())


@asynccontextmanager
async def collector(
    amqp_url: str, store_url: str, *, fail_first: int = 0
) -> AsyncIterator[tuple[TaskStore, list[WorkerStats]]]:
    """An in-process collector (store + status RPC); `fail_first` store writes raise."""
    store = await open_store(store_url)
    app = CollectorApp()
    add_store_handlers(app, store)
    failures = [fail_first]

    @app.collect_result
    async def on_result(result: models.TaskResult, context: TaskContext) -> None:
        if failures[0] > 0:
            failures[0] -= 1
            raise ConnectionError("store is down")
        await store.apply_result(result)

    stop = asyncio.Event()
    stats: list[WorkerStats] = []
    broker = await Broker.connect(RuntimeConfig(amqp_url=amqp_url), name="test-collector")
    await purge_collector_copies(broker)
    runner = asyncio.create_task(app.run(broker, worker_id="c1", stop=stop))
    try:
        await asyncio.sleep(0.3)
        yield store, stats
    finally:
        stop.set()
        stats.append(await runner)
        await broker.close()
        await store.close()


async def purge_collector_copies(broker: Broker) -> None:
    """Drop the task copies, events and dead letters other tests left with no collector running."""
    await broker.declare(TOPOLOGY)
    channel = await broker.connection.channel()
    for route in COLLECTOR_ROUTES:
        if route.queue.startswith("collector."):
            await (await channel.get_queue(route.queue, ensure=False)).purge()
    await channel.close()


def result_body(task_id: str, status: str = "succeeded") -> bytes:
    now = datetime.now(UTC)
    document = models.TaskResult.model_validate(
        {
            "task_id": task_id,
            "message_type": "data_analysis.statistics",
            "status": status,
            "worker_id": "w1",
            "attempt": 1,
            "submitted_at": now,
            "started_at": now,
            "finished_at": now,
            "result": {"mean": 2.0} if status == "succeeded" else None,
            "error": {"type": "ValueError", "message": "bad"} if status == "failed" else None,
        }
    )
    return document.model_dump_json(exclude_none=True).encode()


async def publish_results(broker: Broker, items: list[tuple[str, str]]) -> None:
    channel = await broker.connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange("results", ensure=False)
    for task_id, status in items:
        await exchange.publish(
            aio_pika.Message(
                result_body(task_id, status),
                content_type="application/json",
                message_id=task_id,
                type="spectask.result",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            "result",
        )
    await channel.close()


async def wait_states(
    client: ProducerClient, expected: dict[str, str], timeout: float = 15.0
) -> dict[str, models.TaskStatusView]:
    deadline = time.monotonic() + timeout
    while True:
        reply = await client.get_status(list(expected), timeout=5.0)
        views = {view.task_id: view for view in reply.tasks}
        if {k: v.state.value for k, v in views.items()} == expected:
            return views
        assert time.monotonic() < deadline, f"states {views} never became {expected}"
        await asyncio.sleep(0.1)


def new_id(tag: str) -> str:
    return f"rpc-{tag}-{uuid.uuid4().hex[:10]}"


async def test_the_rpc_times_out_clearly_without_a_collector(amqp_url: str) -> None:
    async with await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker:
        client = await _client(broker)
        started = time.monotonic()
        with pytest.raises(RpcTimeoutError, match=r"no collector answered within 0\.5 s; is "):
            await client.get_status([new_id("none")], timeout=0.5)
        assert time.monotonic() - started < 2.0


async def test_states_over_rpc_duplicates_and_restart(amqp_url: str, store_url: str) -> None:
    ok, bad, unknown = new_id("ok"), new_id("bad"), new_id("unknown")
    expected = {ok: "SUCCEEDED", bad: "FAILED", unknown: "UNKNOWN"}
    async with await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker:
        client = await _client(broker)
        async with collector(amqp_url, store_url) as (store, _):
            await publish_results(broker, [(ok, "succeeded"), (bad, "failed"), (ok, "succeeded")])
            views = await wait_states(client, expected)
            assert views[ok].result == {"mean": 2.0}
            assert views[bad].error is not None and views[bad].error.type == "ValueError"
            assert [view.task_id for view in (await client.get_status([unknown, ok])).tasks] == [
                unknown,
                ok,
            ]
            await asyncio.sleep(0.5)  # the duplicate has been applied too
            listed = await store.list(message_type="data_analysis.statistics", limit=1000)
            assert [r.task_id for r in listed].count(ok) == 1
            assert (await store.get(ok)) is not None
            assert (await store.get(ok)).state is TaskState.SUCCEEDED  # type: ignore[union-attr]
        async with collector(amqp_url, store_url):  # a restart keeps the history
            await wait_states(client, expected)


async def test_a_store_outage_requeues_results_instead_of_dead_lettering(
    amqp_url: str, tmp_path: Path
) -> None:
    task_id = new_id("outage")
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    async with await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker:
        client = await _client(broker)
        async with collector(amqp_url, url, fail_first=2) as (_, stats):
            await publish_results(broker, [(task_id, "succeeded")])
            await wait_states(client, {task_id: "SUCCEEDED"}, timeout=20.0)
        assert stats[0].requeued >= 2
        assert stats[0].dead_lettered == 0


async def test_rpc_latency_under_load(amqp_url: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    ids = [new_id("load") for _ in range(2000)]
    async with await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker:
        client = await _client(broker)
        async with collector(amqp_url, url):
            load = asyncio.create_task(publish_results(broker, [(i, "succeeded") for i in ids]))
            samples = []
            for n in range(1000):
                started = time.perf_counter()
                reply = await client.get_status([ids[n % len(ids)]], timeout=5.0)
                samples.append((time.perf_counter() - started) * 1000)
                assert len(reply.tasks) == 1
            await load
            cuts = statistics.quantiles(samples, n=100)
            print(
                f"\nstatus RPC round trip under load: p50 {cuts[49]:.2f} ms, p99 {cuts[98]:.2f} ms"
            )
            assert cuts[98] < 1000


async def test_a_bare_string_is_refused_not_split_into_characters(amqp_url: str) -> None:
    """`get_status("abc")` type-checks (a str is a Sequence[str]); the request schema refuses it."""
    from generated.producer import ProducerClient
    from generated.topology import TOPOLOGY
    from spectask.errors import TaskValidationError
    from spectask.runtime.broker import Broker
    from spectask.runtime.config import RuntimeConfig
    from spectask.runtime.producer import TaskPublisher

    async with await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker:
        await broker.declare(TOPOLOGY)
        client = ProducerClient(TaskPublisher(await broker.publisher(), TOPOLOGY), broker.rpc())
        with pytest.raises(TaskValidationError, match="task_ids"):
            await client.get_status("abc", timeout=1.0)


@asynccontextmanager
async def data_worker(amqp_url: str, fail_once: set[str], doomed: set[str]) -> AsyncIterator[None]:
    """A data_analysis worker: ids in `fail_once` fail their first attempt, `doomed` ones fail
    permanently; any other task (left by another test) just succeeds."""
    app = WorkerApp()

    async def handle(payload: object, context: TaskContext) -> dict[str, object]:
        if context.task_id in doomed:
            raise PermanentTaskError("these numbers are hopeless")
        if context.task_id in fail_once and context.attempt == 1:
            raise ConnectionError("flaky upstream")
        return {"attempt": context.attempt}

    app.process_data_aggregate(handle)
    app.process_data_statistics(handle)
    app.process_data_detect_patterns(handle)
    stop = asyncio.Event()
    broker = await Broker.connect(RuntimeConfig(amqp_url=amqp_url), name="test-worker")
    runner = asyncio.create_task(
        app.run(broker, worker_id="w-states", task_types=["data_analysis"], stop=stop)
    )
    try:
        yield
    finally:
        stop.set()
        await runner
        await broker.close()


async def test_queued_retrying_succeeded_and_dead(amqp_url: str, store_url: str) -> None:
    """QUEUED with no worker; then RETRYING after a failed first attempt, SUCCEEDED at attempt 2;
    a permanent failure ends DEAD with its reason. No extra publish on the success path."""
    async with await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker:
        client = await _client(broker)
        async with collector(amqp_url, store_url) as (_, stats):
            flaky = await client.submit_data_statistics(
                models.DataStatistics(values=[1.0, 2.0]), task_id=new_id("flaky")
            )
            doomed = await client.submit_data_statistics(
                models.DataStatistics(values=[3.0]), task_id=new_id("doomed")
            )
            views = await wait_states(client, {flaky: "QUEUED", doomed: "QUEUED"})
            assert views[flaky].attempts == 1 and views[flaky].submitted_at is not None
            assert views[flaky].message_type == "data_analysis.statistics"

            seen: list[str] = []
            async with data_worker(amqp_url, fail_once={flaky}, doomed={doomed}):
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    reply = await client.get_status([flaky], timeout=5.0)
                    state = reply.tasks[0].state.value
                    if not seen or seen[-1] != state:
                        seen.append(state)
                    if state == "SUCCEEDED":
                        break
                    await asyncio.sleep(0.02)
                views = await wait_states(client, {flaky: "SUCCEEDED", doomed: "DEAD"})
            # the 1 s backoff is long enough to see RETRYING, then attempt 2 QUEUED again
            assert seen[0] == "QUEUED" and "RETRYING" in seen and seen[-1] == "SUCCEEDED", seen
            assert views[flaky].attempts == 2 and views[flaky].result == {"attempt": 2}
            assert views[doomed].dead_reason == "permanent"
            assert views[doomed].error is not None
            assert "hopeless" in views[doomed].error.message

            # stale and duplicated news never moves a task backwards
            stale = [
                {"task_id": flaky, "event": "retrying", "attempt": 1, "message": "old"},
                {"task_id": flaky, "event": "submitted", "attempt": 2},
                {"task_id": doomed, "event": "submitted", "attempt": 1},
                {"task_id": doomed, "event": "retrying", "attempt": 1, "message": "old"},
            ]
            marker = new_id("marker")
            await publish_events(broker, [*stale, *stale, {"task_id": marker, "event": "started"}])
            await wait_states(client, {marker: "STARTED"})
            await asyncio.sleep(0.3)
            views = await wait_states(client, {flaky: "SUCCEEDED", doomed: "DEAD"})
            assert views[flaky].attempts == 2 and views[doomed].dead_reason == "permanent"
        assert stats[0].dead_lettered == 0


async def publish_events(broker: Broker, events: list[dict[str, object]]) -> None:
    channel = await broker.connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange("events", ensure=False)
    for event in events:
        body = models.TaskEvent.model_validate({"at": datetime.now(UTC), **event})
        await exchange.publish(
            aio_pika.Message(
                body.model_dump_json(exclude_none=True).encode(),
                content_type="application/json",
                message_id=str(event["task_id"]),
                type="spectask.event",
            ),
            f"data_analysis.{event['event']}",
        )
    await channel.close()
