"""The runtime on a real broker: confirmed publishing, the ack rule, bad input, shutdown."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from spectask.errors import MissingHandlerError, UnroutableError
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.runtime.producer import TaskPublisher
from spectask.runtime.worker import run_worker
from tests.runtime_support import (
    InProcessWorkers,
    Numbers,
    depth,
    drain,
    make_names,
    publish_raw,
    wait_taken,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def broker(any_url: str) -> AsyncIterator[Broker]:
    config = RuntimeConfig(amqp_url=any_url, prefetch=8, concurrency=4, shutdown_timeout=5)
    async with await Broker.connect(config, name="test-runtime") as connected:
        yield connected


def total(payload: Numbers, context: TaskContext) -> dict[str, Any]:
    if payload.fail:
        raise ValueError(payload.fail)
    return {"sum": sum(payload.values), "attempt": context.attempt}


async def slow_total(payload: Numbers, context: TaskContext) -> dict[str, Any]:
    await asyncio.sleep(payload.delay)  # stands in for long work: the test controls its length
    return {"sum": sum(payload.values)}


async def test_unroutable_publish_is_an_error(broker: Broker) -> None:
    names = make_names()
    await broker.declare(names.topology)
    publisher = TaskPublisher(await broker.publisher(), names.topology)
    route = names.send.__class__(**{**names.send.__dict__, "routing_key": "nobody.listens"})
    with pytest.raises(UnroutableError, match=r"nobody\.listens"):
        await publisher.submit(route, Numbers(values=[1]))


async def test_results_published_then_acked(
    broker: Broker, any_url: str, workers: InProcessWorkers
) -> None:
    names = make_names()
    await broker.declare(names.topology)
    publisher = TaskPublisher(await broker.publisher(), names.topology)
    ids = await publisher.submit_many(
        [publisher.build(names.send, Numbers(values=[i, 1])) for i in range(20)]
    )
    stop = asyncio.Event()
    _, worker = await workers.start(broker, names, total, stop, consuming=True)
    results = [json.loads(m.body) for m in await drain(any_url, names.result_queue, 20)]
    stop.set()
    stats = await worker
    assert sorted(r["task_id"] for r in results) == sorted(ids)
    assert all(r["status"] == "succeeded" and r["worker_id"] == "w-test" for r in results)
    assert {r["result"]["sum"] for r in results} == {float(i + 1) for i in range(20)}
    assert stats.succeeded == 20 and stats.processed == 20
    assert await depth(any_url, names.queue) == 0


async def test_handler_exception_gives_a_failed_result(
    broker: Broker, any_url: str, workers: InProcessWorkers
) -> None:
    names = make_names()
    await broker.declare(names.topology)
    publisher = TaskPublisher(await broker.publisher(), names.topology)
    task_id = await publisher.submit(names.send, Numbers(values=[1], fail="disk on fire"))
    stop = asyncio.Event()
    _, worker = await workers.start(broker, names, total, stop, consuming=True)
    [message] = await drain(any_url, names.result_queue, 1)
    stop.set()
    await worker
    result = json.loads(message.body)
    assert result["task_id"] == task_id and result["status"] == "failed"
    assert result["error"]["type"] == "ValueError"
    assert result["error"]["message"] == "disk on fire"
    assert "Traceback" in result["error"]["traceback"]


async def test_time_limit_stops_a_handler(
    broker: Broker, any_url: str, workers: InProcessWorkers
) -> None:
    names = make_names(time_limit=0.3)
    await broker.declare(names.topology)
    publisher = TaskPublisher(await broker.publisher(), names.topology)
    await publisher.submit(names.send, Numbers(values=[1], delay=5))
    stop = asyncio.Event()
    _, worker = await workers.start(broker, names, slow_total, stop, consuming=True)
    [message] = await drain(any_url, names.result_queue, 1, timeout=10)
    stop.set()
    await worker
    result = json.loads(message.body)
    assert result["status"] == "failed" and result["error"]["type"] == "timeout"


VALID_TASKS = 100
BAD_EVERY = 15  # one bad message after every 15 valid ones: 6 bad among 100 valid

# (id, body, property overrides, expected x-spectask-reason, a fragment of x-spectask-error)
BAD_INPUTS: list[tuple[str, bytes, dict[str, Any], str, str]] = [
    ("bad-undecodable", b"\xff{not json", {}, "undecodable", "Invalid JSON"),
    ("bad-ctype", b"<xml/>", {"content_type": "text/xml"}, "undecodable", "text/xml"),
    ("bad-schema", b'{"values": []}', {}, "schema_violation", "values"),
    ("bad-unknown", b'{"values": [1]}', {"type": "num.nope"}, "unknown_type", "num.nope"),
    (
        "bad-big",
        json.dumps({"values": [1.5] * 1000}).encode(),
        {},
        "too_large",
        "the limit is 2000",
    ),
    ("bad-truncated", b'{"values": [1, 2', {}, "undecodable", "Invalid JSON"),
]


async def test_bad_input_is_dead_lettered_with_its_reason(
    any_url: str, workers: InProcessWorkers
) -> None:
    """Every kind of bad input is dead-lettered with its reason, interleaved with 100 valid
    tasks that all complete exactly once: one bad message never stalls the worker."""
    config = RuntimeConfig(
        amqp_url=any_url, max_message_bytes=2000, prefetch=8, concurrency=4, shutdown_timeout=5
    )
    names = make_names()
    ok = {"type": "num.sum", "content_type": "application/json"}
    stream: list[tuple[bytes, dict[str, Any]]] = []
    bad_by_id: dict[str, tuple[bytes, dict[str, Any], str, str]] = {}
    bad_inputs = iter(BAD_INPUTS)
    for index in range(VALID_TASKS):
        stream.append(
            (json.dumps({"values": [index, 1]}).encode(), {**ok, "message_id": f"ok{index:03d}"})
        )
        if (index + 1) % BAD_EVERY == 0:
            task_id, body, overrides, reason, fragment = next(bad_inputs)
            properties = {**ok, "message_id": task_id, **overrides}
            stream.append((body, properties))
            bad_by_id[task_id] = (body, properties, reason, fragment)
    assert len(bad_by_id) == len(BAD_INPUTS)  # every kind is in the stream, spread through it
    valid_ids = {f"ok{index:03d}" for index in range(VALID_TASKS)}
    started = time.monotonic()
    async with asyncio.timeout(60), await Broker.connect(config) as broker:
        await broker.declare(names.topology)
        stop = asyncio.Event()
        _, worker = await workers.start(broker, names, total, stop, consuming=True)
        await publish_raw(any_url, names.tasks, stream)  # to a worker already consuming
        dead = await drain(any_url, names.dead_queue, len(bad_by_id), timeout=30)
        results = await drain(any_url, names.result_queue, VALID_TASKS, timeout=30)
        assert not worker.done(), "the worker stopped on its own"
        stop.set()
        stats = await worker
    elapsed = time.monotonic() - started
    assert elapsed < 30, f"the run took {elapsed:.1f}s: the worker stalled somewhere"

    documents = [json.loads(m.body) for m in results]
    assert sorted(d["task_id"] for d in documents) == sorted(valid_ids)  # each exactly once
    assert all(d["status"] == "succeeded" for d in documents), documents
    assert {d["task_id"]: d["result"]["sum"] for d in documents} == {
        f"ok{index:03d}": float(index + 1) for index in range(VALID_TASKS)
    }
    assert stats.succeeded == VALID_TASKS and stats.dead_lettered == len(bad_by_id)

    assert sorted(m.message_id or "" for m in dead) == sorted(bad_by_id)  # each exactly once
    for message in dead:
        body, properties, reason, fragment = bad_by_id[message.message_id or ""]
        headers = message.headers
        assert headers["x-spectask-reason"] == reason, message.message_id
        assert headers["x-spectask-origin-queue"] == names.queue
        assert headers["x-spectask-origin-exchange"] == names.tasks
        assert headers["x-spectask-origin-routing-key"] == "num.sum"
        assert fragment in str(headers["x-spectask-error"]), headers["x-spectask-error"]
        assert headers["x-spectask-attempts"] == 1
        assert headers["x-spectask-first-failure-at"] and headers["x-spectask-last-failure-at"]
        assert message.body == body  # the original bytes, unchanged
        assert message.type == properties["type"]
        assert message.content_type == properties["content_type"]

    # Nothing left behind: no task waiting, no duplicate result or dead letter queued.
    assert await depth(any_url, names.queue) == 0
    assert await depth(any_url, names.result_queue) == 0
    assert await depth(any_url, names.dead_queue) == 0


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
    broker: Broker, any_url: str, workers: InProcessWorkers
) -> None:
    names = make_names()
    await broker.declare(names.topology)
    publisher = TaskPublisher(await broker.publisher(), names.topology)
    await publisher.submit(names.send, Numbers(values=[4], delay=0.3))
    running, finished = asyncio.Event(), asyncio.Event()

    async def watched(payload: Numbers, context: TaskContext) -> dict[str, Any]:
        running.set()
        try:
            return await slow_total(payload, context)
        finally:
            finished.set()

    stop = asyncio.Event()
    _, worker = await workers.start(broker, names, watched, stop)
    await asyncio.wait_for(running.wait(), timeout=20)
    stop.set()  # while the handler is mid-way
    assert not finished.is_set()
    stats = await worker
    assert finished.is_set() and stats.succeeded == 1
    [message] = await drain(any_url, names.result_queue, 1)
    assert json.loads(message.body)["result"] == {"sum": 4.0}
    assert await depth(any_url, names.queue) == 0


async def test_shutdown_deadline_requeues_unfinished_work(
    any_url: str, workers: InProcessWorkers
) -> None:
    config = RuntimeConfig(amqp_url=any_url, shutdown_timeout=0.3)
    names = make_names()
    async with await Broker.connect(config) as broker:
        await broker.declare(names.topology)
        publisher = TaskPublisher(await broker.publisher(), names.topology)
        await publisher.submit(names.send, Numbers(values=[4], delay=30))
        stop = asyncio.Event()
        _, worker = await workers.start(broker, names, slow_total, stop, consuming=True)
        await wait_taken(any_url, names.queue)
        stop.set()
        stats = await worker
    assert stats.requeued == 1 and stats.processed == 0
    assert await depth(any_url, names.queue) == 1
    assert await depth(any_url, names.result_queue) == 0


async def test_urgent_tasks_overtake_a_backlog_in_the_queue(
    any_url: str, workers: InProcessWorkers
) -> None:
    """With prefetch 1, priority decides among the tasks still waiting in the queue."""
    config = RuntimeConfig(amqp_url=any_url, prefetch=1, concurrency=1, shutdown_timeout=5)
    async with await Broker.connect(config, name="test-priorities") as broker:
        names = make_names()
        await broker.declare(names.topology)
        publisher = TaskPublisher(await broker.publisher(), names.topology)
        gate = asyncio.Event()
        order: list[str] = []

        async def record(payload: Numbers, context: TaskContext) -> dict[str, Any]:
            await gate.wait()  # the first task holds the worker until the queue is full
            order.append(context.task_id)
            return {}

        await publisher.submit(names.send, Numbers(values=[0]), task_id="first")
        await workers.start(broker, names, record)
        await wait_taken(any_url, names.queue)
        for n in range(10):
            await publisher.submit(names.send, Numbers(values=[n]), task_id=f"normal-{n}")
        for n in range(3):
            await publisher.submit(
                names.send, Numbers(values=[n]), task_id=f"urgent-{n}", priority="urgent"
            )
        gate.set()
        await drain(any_url, names.result_queue, 14)
    assert order[0] == "first"
    assert order[1:4] == ["urgent-0", "urgent-1", "urgent-2"]
    assert order[4:] == [f"normal-{n}" for n in range(10)]
