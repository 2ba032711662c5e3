"""Shared by the status tests: an in-process collector on a real store, and status polling."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pika

from generated import models
from generated.collector import RECEIVE_ROUTES as COLLECTOR_ROUTES, CollectorApp
from generated.producer import ProducerClient
from generated.topology import TOPOLOGY
from generated.worker import SEND_ROUTES as WORKER_SEND_ROUTES
from spectask.collector import add_store_handlers
from spectask.protocol.names import STATUS_EXCHANGE, STATUS_ROUTING_KEY
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.consumer import WorkerStats
from spectask.runtime.context import TaskContext
from spectask.runtime.execution import Handler
from spectask.runtime.rpc import REPLY_TO
from spectask.runtime.topology import ReceiveRoute
from spectask.runtime.worker import run_worker
from spectask.store import TaskStore, open_store
from spectask.store.observations import SOURCE_RESULT, EventKind
from tests.runtime_support import POLL_SECONDS, wait_consumed

# how long a pika caller waits for its status reply
REPLY_SECONDS = 10.0


async def app_worker(
    broker: Broker,
    routes: Sequence[ReceiveRoute],
    handlers: Mapping[str, Handler],
    *,
    worker_id: str,
    stop: asyncio.Event | None = None,
) -> WorkerStats:
    """The application's worker over `routes` with `handlers`; without `stop`, until idle."""
    return await run_worker(
        broker,
        topology=TOPOLOGY,
        routes=routes,
        handlers=handlers,
        send_routes=WORKER_SEND_ROUTES,
        worker_id=worker_id,
        stop=stop,
        burst=stop is None,
    )


async def producer_client(broker: Broker) -> ProducerClient:
    return await ProducerClient.open(broker)


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
        await collector_consuming(amqp_url, runner)
        yield store, stats
    finally:
        stop.set()
        stats.append(await runner)
        await broker.close()
        await store.close()


async def collector_consuming(amqp_url: str, runner: asyncio.Task[WorkerStats]) -> None:
    """Return once the collector consumes every one of its queues (or raise what stopped it)."""
    waiting = asyncio.create_task(wait_consumed(amqp_url, [r.queue for r in COLLECTOR_ROUTES]))
    await asyncio.wait([waiting, runner], return_when=asyncio.FIRST_COMPLETED)
    if not waiting.done():
        waiting.cancel()
        await runner  # raises its error, if it had one
        raise AssertionError("the collector stopped before it consumed")
    await waiting


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
    """Results with the given statuses, published straight to `results` as a worker would."""
    await publish_result_bodies(
        broker, [(task_id, result_body(task_id, s)) for task_id, s in items]
    )


async def publish_result_bodies(broker: Broker, bodies: Sequence[tuple[str, bytes]]) -> None:
    """TaskResult bodies to the `results` exchange, confirmed, by task id."""
    channel = await broker.connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange("results", ensure=False)
    for task_id, body in bodies:
        await exchange.publish(
            aio_pika.Message(
                body,
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
        await asyncio.sleep(POLL_SECONDS)


def new_id(tag: str) -> str:
    return f"rpc-{tag}-{uuid.uuid4().hex[:10]}"


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


def ask_with_pika(
    url: str, body: bytes, properties: Mapping[str, Any]
) -> tuple[pika.BasicProperties, bytes]:
    """One status request published with pika to where getStatus sends it; its reply."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        replies: list[tuple[pika.BasicProperties, bytes]] = []
        channel.basic_consume(
            REPLY_TO, lambda _ch, _m, props, reply: replies.append((props, reply)), auto_ack=True
        )
        channel.basic_publish(
            STATUS_EXCHANGE,
            STATUS_ROUTING_KEY,
            body,
            pika.BasicProperties(reply_to=REPLY_TO, correlation_id="call-1", **properties),
        )
        deadline = time.monotonic() + REPLY_SECONDS
        while not replies:
            if time.monotonic() > deadline:
                raise AssertionError(f"no reply within {REPLY_SECONDS} s to {body!r}")
            connection.process_data_events(time_limit=POLL_SECONDS)
        return replies[0]
    finally:
        connection.close()


def publish_with_pika(url: str, body: bytes, properties: Mapping[str, Any]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            STATUS_EXCHANGE, STATUS_ROUTING_KEY, body, pika.BasicProperties(**properties)
        )
    finally:
        connection.close()


async def worker_cancelled(store: TaskStore, task_id: str, timeout: float = 20.0) -> str:
    """What the worker's cancelled result said, from the task's timeline, once it is there.

    The record is CANCELLED before that (the collector's copy of the cancel); this is the
    worker's own word that it skipped or stopped the task."""
    deadline = time.monotonic() + timeout
    while True:
        for event in await store.events(task_id):
            if event.kind is EventKind.CANCELLED and event.source == SOURCE_RESULT:
                return event.error.message if event.error is not None else ""
        assert time.monotonic() < deadline, f"no cancelled result from a worker for {task_id}"
        await asyncio.sleep(POLL_SECONDS)
