"""The runtime on a real broker: confirmed publishing, the ack rule, bad input, shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from spectask.errors import MissingHandlerError, UnroutableError
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.runtime.producer import TaskPublisher
from spectask.runtime.worker import run_worker
from tests.runtime_support import Names, Numbers, depth, drain, make_names, wait_taken

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[Broker]:
    config = RuntimeConfig(amqp_url=amqp_url, prefetch=8, concurrency=4, shutdown_timeout=5)
    async with await Broker.connect(config, name="test-runtime") as connected:
        yield connected


def total(payload: Numbers, context: TaskContext) -> dict[str, Any]:
    if payload.fail:
        raise ValueError(payload.fail)
    return {"sum": sum(payload.values), "attempt": context.attempt}


async def slow_total(payload: Numbers, context: TaskContext) -> dict[str, Any]:
    await asyncio.sleep(payload.delay)  # stands in for long work: the test controls its length
    return {"sum": sum(payload.values)}


class Workers:
    """Starts in-process workers and always stops them, so a failing test cannot hang the run."""

    def __init__(self) -> None:
        self.running: list[tuple[asyncio.Event, asyncio.Task[Any]]] = []

    async def start(self, broker: Broker, names: Names, handler: Any, stop: asyncio.Event) -> Any:
        task = asyncio.create_task(
            run_worker(
                broker,
                topology=names.topology,
                routes=(names.receive,),
                handlers={"processSum": handler},
                send_routes=names.send_routes,
                worker_id="w-test",
                stop=stop,
            )
        )
        self.running.append((stop, task))
        await asyncio.sleep(0.3)  # declare + consume; tests wait on queues with deadlines anyway
        return task

    async def stop_all(self) -> None:
        for stop, task in self.running:
            stop.set()
            try:
                await asyncio.wait_for(task, timeout=15)
            except Exception:
                task.cancel()


@pytest.fixture
async def workers() -> AsyncIterator[Workers]:
    started = Workers()
    try:
        yield started
    finally:
        await started.stop_all()


async def test_unroutable_publish_is_an_error(broker: Broker) -> None:
    names = make_names()
    await broker.declare(names.topology)
    publisher = TaskPublisher(await broker.publisher(), names.topology)
    route = names.send.__class__(**{**names.send.__dict__, "routing_key": "nobody.listens"})
    with pytest.raises(UnroutableError, match=r"nobody\.listens"):
        await publisher.submit(route, Numbers(values=[1]))


async def test_results_published_then_acked(
    broker: Broker, amqp_url: str, workers: Workers
) -> None:
    names = make_names()
    await broker.declare(names.topology)
    publisher = TaskPublisher(await broker.publisher(), names.topology)
    ids = await publisher.submit_many(
        [publisher.build(names.send, Numbers(values=[i, 1])) for i in range(20)]
    )
    stop = asyncio.Event()
    worker = await workers.start(broker, names, total, stop)
    results = [json.loads(m.body) for m in await drain(amqp_url, names.result_queue, 20)]
    stop.set()
    stats = await worker
    assert sorted(r["task_id"] for r in results) == sorted(ids)
    assert all(r["status"] == "succeeded" and r["worker_id"] == "w-test" for r in results)
    assert {r["result"]["sum"] for r in results} == {float(i + 1) for i in range(20)}
    assert stats.succeeded == 20 and stats.processed == 20
    assert await depth(amqp_url, names.queue) == 0


async def test_handler_exception_gives_a_failed_result(
    broker: Broker, amqp_url: str, workers: Workers
) -> None:
    names = make_names()
    await broker.declare(names.topology)
    publisher = TaskPublisher(await broker.publisher(), names.topology)
    task_id = await publisher.submit(names.send, Numbers(values=[1], fail="disk on fire"))
    stop = asyncio.Event()
    worker = await workers.start(broker, names, total, stop)
    [message] = await drain(amqp_url, names.result_queue, 1)
    stop.set()
    await worker
    result = json.loads(message.body)
    assert result["task_id"] == task_id and result["status"] == "failed"
    assert result["error"]["type"] == "ValueError"
    assert result["error"]["message"] == "disk on fire"
    assert "Traceback" in result["error"]["traceback"]


async def test_time_limit_stops_a_handler(broker: Broker, amqp_url: str, workers: Workers) -> None:
    names = make_names(time_limit=0.3)
    await broker.declare(names.topology)
    publisher = TaskPublisher(await broker.publisher(), names.topology)
    await publisher.submit(names.send, Numbers(values=[1], delay=5))
    stop = asyncio.Event()
    worker = await workers.start(broker, names, slow_total, stop)
    [message] = await drain(amqp_url, names.result_queue, 1, timeout=10)
    stop.set()
    await worker
    result = json.loads(message.body)
    assert result["status"] == "failed" and result["error"]["type"] == "timeout"


async def publish_raw(url: str, exchange: str, body: bytes, **properties: Any) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange)
        await target.publish(aio_pika.Message(body, **properties), routing_key="num.sum")


async def test_bad_input_is_dead_lettered_with_its_reason(amqp_url: str, workers: Workers) -> None:
    config = RuntimeConfig(amqp_url=amqp_url, max_message_bytes=2000)
    names = make_names()
    ok = {"message_id": "valid", "type": "num.sum", "content_type": "application/json"}
    bad: dict[str, tuple[bytes, dict[str, Any]]] = {
        "undecodable": (b"\xff{not json", {**ok, "message_id": "undecodable"}),
        "wrong content type": (
            b"<xml/>",
            {**ok, "message_id": "ctype", "content_type": "text/xml"},
        ),
        "schema_violation": (b'{"values": []}', {**ok, "message_id": "schema"}),
        "unknown_type": (b'{"values": [1]}', {**ok, "message_id": "unknown", "type": "num.nope"}),
        "too_large": (json.dumps({"values": [1.5] * 1000}).encode(), {**ok, "message_id": "big"}),
    }
    expected = {
        "undecodable": "undecodable",
        "ctype": "undecodable",
        "schema": "schema_violation",
        "unknown": "unknown_type",
        "big": "too_large",
    }
    async with await Broker.connect(config) as broker:
        await broker.declare(names.topology)
        for body, properties in bad.values():
            await publish_raw(amqp_url, names.tasks, body, **properties)
        for index in range(10):
            await publish_raw(
                amqp_url, names.tasks, b'{"values": [2, 3]}', **{**ok, "message_id": f"ok{index}"}
            )
        stop = asyncio.Event()
        worker = await workers.start(broker, names, total, stop)
        dead = await drain(amqp_url, names.dead_queue, len(bad))
        results = await drain(amqp_url, names.result_queue, 10)
        stop.set()
        await worker
    reasons = {(m.message_id or ""): m.headers["x-spectask-reason"] for m in dead}
    assert reasons == expected
    for message in dead:
        assert message.headers["x-spectask-origin-queue"] == names.queue
        assert message.headers["x-spectask-origin-exchange"] == names.tasks
        assert message.headers["x-spectask-origin-routing-key"] == "num.sum"
        assert message.headers["x-spectask-error"]
    assert {m.message_id for m in dead if m.message_id == "undecodable"} == {"undecodable"}
    assert next(m for m in dead if m.message_id == "undecodable").body == b"\xff{not json"
    assert all(json.loads(m.body)["status"] == "succeeded" for m in results)


async def test_missing_handler_is_named(broker: Broker) -> None:
    names = make_names()
    with pytest.raises(MissingHandlerError, match="processSum"):
        await run_worker(
            broker,
            topology=names.topology,
            routes=(names.receive,),
            handlers={},
            send_routes=names.send_routes,
            worker_id="w",
        )


async def test_shutdown_finishes_in_flight_work(
    broker: Broker, amqp_url: str, workers: Workers
) -> None:
    names = make_names()
    await broker.declare(names.topology)
    publisher = TaskPublisher(await broker.publisher(), names.topology)
    await publisher.submit(names.send, Numbers(values=[4], delay=1.0))
    stop = asyncio.Event()
    worker = await workers.start(broker, names, slow_total, stop)
    await wait_taken(amqp_url, names.queue)
    stop.set()  # while the handler is mid-way
    stats = await worker
    assert stats.succeeded == 1
    [message] = await drain(amqp_url, names.result_queue, 1)
    assert json.loads(message.body)["result"] == {"sum": 4.0}
    assert await depth(amqp_url, names.queue) == 0


async def test_shutdown_deadline_requeues_unfinished_work(amqp_url: str, workers: Workers) -> None:
    config = RuntimeConfig(amqp_url=amqp_url, shutdown_timeout=0.3)
    names = make_names()
    async with await Broker.connect(config) as broker:
        await broker.declare(names.topology)
        publisher = TaskPublisher(await broker.publisher(), names.topology)
        await publisher.submit(names.send, Numbers(values=[4], delay=30))
        stop = asyncio.Event()
        worker = await workers.start(broker, names, slow_total, stop)
        await wait_taken(amqp_url, names.queue)
        stop.set()
        stats = await worker
    assert stats.requeued == 1 and stats.processed == 0
    assert await depth(amqp_url, names.queue) == 1
    assert await depth(amqp_url, names.result_queue) == 0
