"""A small, uniquely named topology built by hand, to test the runtime apart from the spec."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aio_pika
from pydantic import BaseModel, ConfigDict, Field

from spectask.protocol.models import ResultBatch
from spectask.protocol.names import REASON_HEADER, RESULT_BATCH_MESSAGE_TYPE
from spectask.runtime import memory
from spectask.runtime.broker import Broker
from spectask.runtime.consumer import WorkerStats
from spectask.runtime.topology import (
    BindingSpec,
    ExchangeSpec,
    QueueSpec,
    ReceiveRoute,
    ResultMode,
    SendRoute,
    TaskPolicy,
    Topology,
)
from spectask.runtime.transport import connect
from spectask.runtime.worker import run_worker
from tests.brokers import unique_name

POLL_SECONDS = 0.01  # how often the waits below look again (a cheap passive declare or get)


class Numbers(BaseModel):
    model_config = ConfigDict(extra="forbid")
    values: list[float] = Field(min_length=1)
    delay: float = 0.0
    fail: str | None = None


class Result(BaseModel):
    """The runtime fills the spec's TaskResult shape; this mirrors it loosely for the tests."""

    model_config = ConfigDict(extra="forbid")
    task_id: str
    message_type: str
    status: str
    worker_id: str
    attempt: int
    submitted_at: Any = None
    started_at: Any = None
    finished_at: Any = None
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None


class AnyBody(BaseModel):
    pass


@dataclass(frozen=True)
class Names:
    tasks: str
    queue: str
    results: str
    result_queue: str
    dead: str
    dead_queue: str
    topology: Topology
    receive: ReceiveRoute
    send: SendRoute
    send_routes: tuple[SendRoute, ...]


def make_names(
    time_limit: float = 30.0,
    *,
    result_mode: ResultMode = ResultMode.CONFIRMED,
    base: str | None = None,
) -> Names:
    """A fresh topology (or the one named `base`: another process's), its task type's results
    sent the way `result_mode` says."""
    base = base or unique_name("rt")
    tasks, results, dead = f"{base}.tasks", f"{base}.results", f"{base}.dead"
    queue, result_queue, dead_queue = f"{base}.q", f"{base}.rq", f"{base}.dq"
    topology = Topology(
        exchanges=(ExchangeSpec(tasks), ExchangeSpec(results), ExchangeSpec(dead)),
        queues=(
            QueueSpec(
                queue, arguments=(("x-max-priority", 10),), bindings=(BindingSpec(tasks, "num.#"),)
            ),
            QueueSpec(result_queue, bindings=(BindingSpec(results, "#"),)),
            QueueSpec(dead_queue, bindings=(BindingSpec(dead, "#"),)),
        ),
        priorities=(("normal", 5), ("urgent", 10)),
    )
    policy = TaskPolicy(time_limit=time_limit, result_mode=result_mode)
    receive = ReceiveRoute("processSum", queue, "num.sum", "num", Numbers, policy)
    send = SendRoute("submitSum", tasks, "num.sum", "num.sum", "num", Numbers, 5)
    send_routes: tuple[SendRoute, ...] = (
        SendRoute("publishResult", results, "result", "spectask.result", "spectask", Result),
        SendRoute("publishDeadLetter", dead, "dead", "spectask.dead_letter", "spectask", AnyBody),
    )
    if result_mode is ResultMode.BATCHED:
        send_routes += (
            SendRoute(
                "publishResultBatch",
                results,
                "result_batch",
                RESULT_BATCH_MESSAGE_TYPE,
                "spectask",
                ResultBatch,
            ),
        )
    return Names(
        tasks, queue, results, result_queue, dead, dead_queue, topology, receive, send, send_routes
    )


async def drain(url: str, queue: str, expected: int, timeout: float = 20.0) -> list[Any]:
    """Get `expected` messages from a queue (acking them), waiting up to `timeout`."""
    import asyncio
    import time

    connection = await connect(url, robust=False)
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    async with connection:
        channel = await connection.channel()
        q = await channel.get_queue(queue)
        while len(messages) < expected:
            message = await q.get(fail=False)
            if message is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{queue}: got {len(messages)} of {expected} messages")
                await asyncio.sleep(POLL_SECONDS)
                continue
            await message.ack()
            messages.append(message)
    return messages


async def depth(url: str, queue: str) -> int:
    connection = await connect(url, robust=False)
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        return int(q.declaration_result.message_count or 0)


async def wait_taken(url: str, queue: str, timeout: float = 20.0) -> None:
    """Wait until a consumer has taken every ready message of `queue`."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while await depth(url, queue):
        if time.monotonic() > deadline:
            raise AssertionError(f"nobody took the messages of {queue} in {timeout}s")
        await asyncio.sleep(POLL_SECONDS)


async def wait_consumed(url: str, queues: Sequence[str], timeout: float = 20.0) -> None:
    """Wait until every one of `queues` has a consumer (the broker's own count, either transport).

    This is the event a fixed "settle" sleep stood in for: a worker or collector is consuming.
    """
    deadline = time.monotonic() + timeout
    connection = await connect(url, robust=False)
    async with connection:
        channel = await connection.channel()
        waiting = list(queues)
        while waiting:
            declared = await channel.declare_queue(waiting[0], passive=True)
            if declared.declaration_result.consumer_count:
                waiting.pop(0)
                continue
            if time.monotonic() > deadline:
                raise AssertionError(f"nobody consumed {waiting} within {timeout}s")
            await asyncio.sleep(POLL_SECONDS)


class WorkerNames(Protocol):
    """What an in-process worker needs from a hand-built test topology."""

    @property
    def topology(self) -> Topology: ...
    @property
    def receive(self) -> ReceiveRoute: ...
    @property
    def send_routes(self) -> tuple[SendRoute, ...]: ...


class InProcessWorkers:
    """Starts in-process workers and always stops them, so a failing test cannot hang the run."""

    def __init__(self) -> None:
        self.running: list[tuple[asyncio.Event, asyncio.Task[WorkerStats]]] = []

    async def start(
        self,
        broker: Broker,
        names: WorkerNames,
        handler: Any,
        stop: asyncio.Event | None = None,
        *,
        worker_id: str = "w-test",
        consuming: bool = False,
    ) -> tuple[asyncio.Event, asyncio.Task[WorkerStats]]:
        """Run one worker on `names`; with `consuming`, return once it consumes its queue."""
        stop = stop or asyncio.Event()
        task = asyncio.create_task(
            run_worker(
                broker,
                topology=names.topology,
                routes=(names.receive,),
                handlers={names.receive.operation: handler},
                send_routes=names.send_routes,
                worker_id=worker_id,
                stop=stop,
            )
        )
        self.running.append((stop, task))
        if consuming:
            waiting = asyncio.create_task(
                wait_consumed(broker.config.amqp_url, [names.receive.queue])
            )
            await asyncio.wait([waiting, task], return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():  # the worker ended first: its error says more than a timeout
                waiting.cancel()
                await task
                raise AssertionError("the worker stopped before it consumed")
            await waiting
        return stop, task

    async def stop_all(self) -> list[WorkerStats]:
        """Stop every worker started so far; the stats of those that stopped cleanly."""
        outcomes = []
        for stop, task in self.running:
            stop.set()
            try:
                outcomes.append(await asyncio.wait_for(task, timeout=15))
            except Exception:
                task.cancel()
        self.running.clear()
        return outcomes


# --- the broker's time: real on RabbitMQ; on the in-memory broker, real time a test may skip ------


@asynccontextmanager
async def running(
    url: str, app: Any, worker_id: str, task_types: Sequence[str] | None = None
) -> AsyncIterator[None]:
    """A generated app (worker or collector) consuming on its own connection for the block."""
    from spectask.runtime.broker import Broker
    from spectask.runtime.config import RuntimeConfig

    stop = asyncio.Event()
    broker = await Broker.connect(RuntimeConfig(amqp_url=url), name=f"test-{worker_id}")
    runner = asyncio.create_task(
        app.run(broker, worker_id=worker_id, task_types=task_types, stop=stop)
    )
    try:
        yield
    finally:
        stop.set()
        await runner
        await broker.close()


async def publish_raw(
    url: str, exchange: str, messages: list[tuple[bytes, dict[str, Any]]]
) -> None:
    """Publish raw messages in order on one confirmed channel, as any AMQP client could
    (bypassing the typed producer, so a test can send what it would refuse)."""
    connection = await connect(url, robust=False)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange)
        for body, properties in messages:
            await target.publish(aio_pika.Message(body, **properties), routing_key="num.sum")


def skipping_clock(url: str) -> memory.SkippingClock | None:
    """The clock of an in-memory broker that can skip (the `any_url` hubs), else None."""
    if not url.startswith("memory://"):
        return None
    clock = memory.hub(url).clock
    return clock if isinstance(clock, memory.SkippingClock) else None


def broker_now(url: str) -> float:
    """Seconds on the broker's clock: what its TTLs count (only differences mean anything)."""
    clock = skipping_clock(url)
    return clock.now() if clock is not None else time.monotonic()


def skipped(url: str) -> float:
    """Seconds the broker's clock has skipped so far (always 0 on RabbitMQ)."""
    clock = skipping_clock(url)
    return clock.skipped if clock is not None else 0.0


async def pass_time(url: str, seconds: float) -> None:
    """Let `seconds` of broker time pass: RabbitMQ by waiting, the in-memory broker by skipping."""
    clock = skipping_clock(url)
    if clock is None:
        await asyncio.sleep(seconds)
        return
    clock.skip(seconds)
    await asyncio.sleep(0)  # the deliveries the expiries caused are scheduled: let them start


@asynccontextmanager
async def fast_forward(url: str, idle: float = POLL_SECONDS) -> AsyncIterator[None]:
    """On the in-memory broker, skip straight to each TTL expiry once it is pending `idle` s.

    For tests whose only broker timers are retry tiers (no status RPC: a request's expiration
    is a timer too). On RabbitMQ it does nothing: the broker's TTLs run in real time.
    """
    clock = skipping_clock(url)
    if clock is None:
        yield
        return

    async def skip_ahead(clock: memory.SkippingClock) -> None:
        while True:
            await asyncio.sleep(idle)
            due = clock.next_due()
            if due is not None:
                clock.skip(max(0.0, due - clock.now()))

    skipper = asyncio.create_task(skip_ahead(clock))
    try:
        yield
    finally:
        skipper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await skipper


async def dead_letters_with(
    url: str, reason: str, expected: int, *, task_id: str | None = None, timeout: float = 40.0
) -> list[Any]:
    """Wait for `expected` dead letters with `reason` (of `task_id`, if given), acking every
    dead letter read on the way."""
    connection = await connect(url, robust=False)
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue("dead_letter")
        while len(found) < expected:
            message = await queue.get(fail=False)
            if message is None:
                assert time.monotonic() < deadline, (
                    f"{len(found)} of {expected} {reason} dead letters in {timeout}s"
                )
                await asyncio.sleep(POLL_SECONDS)
                continue
            await message.ack()
            mine = task_id is None or message.message_id == task_id
            if mine and (message.headers or {}).get(REASON_HEADER) == reason:
                found.append(message)
    return found
