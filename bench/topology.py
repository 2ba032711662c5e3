"""A bench-only copy of the generated topology, with every name prefixed by the run id.

The bench runs on a shared broker where workers and tests may be using the production queues
(`tasks.*`, `results`), so it never touches them: it takes the generated routes of one task's
round trip, renames their exchanges and queues with the runtime's `Naming`, declares exactly
those, and deletes them at the end. Queue arguments (x-max-priority 10, queue type) are kept.
Both sides get their own copy, so a leftover of one can never be counted by the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.workload import MESSAGE_TYPE
from generated import (
    collector as generated_collector,
    producer as generated_producer,
    worker as generated_worker,
)
from generated.topology import TOPOLOGY
from spectask.protocol.names import (
    DEAD_LETTER_MESSAGE_TYPE,
    EVENT_MESSAGE_TYPE,
    HEARTBEAT_MESSAGE_TYPE,
    RESULT_BATCH_MESSAGE_TYPE,
    RESULT_MESSAGE_TYPE,
)
from spectask.runtime.topology import (
    Naming,
    QueueSpec,
    ReceiveRoute,
    SendRoute,
    Topology,
)
from spectask.runtime.worker import CANCELLATIONS


@dataclass(frozen=True)
class BenchTopology:
    """The renamed topology and the routes of one round trip: submit, process, result, collect."""

    topology: Topology
    submit: SendRoute
    process: ReceiveRoute
    result: SendRoute
    result_batch: SendRoute
    dead_letter: SendRoute
    collect: ReceiveRoute
    collect_batch: ReceiveRoute
    collector_dead_letter: SendRoute
    event: SendRoute
    cancellations: ReceiveRoute
    heartbeat: SendRoute

    @property
    def queue_names(self) -> list[str]:
        """The queues a run must leave empty (not the cancellation stream: a log keeps all)."""
        return [queue.name for queue in self.topology.queues if not _is_stream(queue)]

    @property
    def heartbeat_queue(self) -> str:
        """The run's copy of the heartbeat stream (what a dashboard would follow)."""
        for queue in self.topology.queues:
            if any(binding.exchange == self.heartbeat.exchange for binding in queue.bindings):
                return queue.name
        raise LookupError("the bench topology has no heartbeat queue")

    @property
    def all_queue_names(self) -> list[str]:
        return [queue.name for queue in self.topology.queues]

    @property
    def exchange_names(self) -> list[str]:
        return [exchange.name for exchange in self.topology.exchanges]


def _is_stream(queue: QueueSpec) -> bool:
    return queue.arguments_dict().get("x-queue-type") == "stream"


def _runtime_route(routes: Iterable[ReceiveRoute], runtime: str) -> ReceiveRoute:
    for route in routes:
        if route.runtime == runtime:
            return route
    raise LookupError(f"the generated worker has no x-spectask-runtime: {runtime} route")


def _send(routes: Iterable[SendRoute], message_type: str) -> SendRoute:
    for route in routes:
        if route.message_type == message_type:
            return route
    raise LookupError(f"the generated code has no send route for {message_type!r}")


def _receive(routes: Iterable[ReceiveRoute], message_type: str) -> ReceiveRoute:
    for route in routes:
        if route.message_type == message_type:
            return route
    raise LookupError(f"the generated code has no receive route for {message_type!r}")


def bench_topology(run_id: str, side: str) -> BenchTopology:
    """The same for every process of a run: workers rebuild it from the run id and side."""
    prefix = f"bench-{run_id}-{side}."

    submit = _send(generated_producer.SEND_ROUTES, MESSAGE_TYPE)
    process = _receive(generated_worker.RECEIVE_ROUTES, MESSAGE_TYPE)
    result = _send(generated_worker.SEND_ROUTES, RESULT_MESSAGE_TYPE)
    result_batch = _send(generated_worker.SEND_ROUTES, RESULT_BATCH_MESSAGE_TYPE)
    dead_letter = _send(generated_worker.SEND_ROUTES, DEAD_LETTER_MESSAGE_TYPE)
    collect = _receive(generated_collector.RECEIVE_ROUTES, RESULT_MESSAGE_TYPE)
    collect_batch = _receive(generated_collector.RECEIVE_ROUTES, RESULT_BATCH_MESSAGE_TYPE)
    collector_dead_letter = _send(generated_collector.SEND_ROUTES, DEAD_LETTER_MESSAGE_TYPE)
    event = _send(generated_worker.SEND_ROUTES, EVENT_MESSAGE_TYPE)
    cancellations = _runtime_route(generated_worker.RECEIVE_ROUTES, CANCELLATIONS)
    heartbeat = _send(generated_worker.SEND_ROUTES, HEARTBEAT_MESSAGE_TYPE)

    # The queues one round trip touches: the task queue, the result queue, whatever the
    # dead-letter exchange feeds (so a dead letter is kept for the checks, not unroutable) and
    # the cancellation stream every worker reads at start. The events exchange is declared
    # with no queue: the worker pays for publishing started events, the broker drops them.
    # The heartbeat stream is the run's own copy too (workers send heartbeats only in the
    # dashboard phase): a dashboard elsewhere on a shared broker never lists bench workers.
    wanted_queues = {process.queue, collect.queue, cancellations.queue}
    queues = [
        queue
        for queue in TOPOLOGY.queues
        if queue.name in wanted_queues
        or any(
            binding.exchange in (dead_letter.exchange, heartbeat.exchange)
            for binding in queue.bindings
        )
    ]
    wanted_exchanges = {submit.exchange, result.exchange, dead_letter.exchange, event.exchange}
    wanted_exchanges.add(heartbeat.exchange)
    wanted_exchanges |= {binding.exchange for queue in queues for binding in queue.bindings}
    exchanges = [exchange for exchange in TOPOLOGY.exchanges if exchange.name in wanted_exchanges]

    naming = Naming(prefix)  # the runtime's own transform (SPECTASK_NAME_PREFIX)
    return BenchTopology(
        topology=naming.topology(
            replace(TOPOLOGY, exchanges=tuple(exchanges), queues=tuple(queues))
        ),
        submit=naming.send(submit),
        process=naming.receive(process),
        result=naming.send(result),
        result_batch=naming.send(result_batch),
        dead_letter=naming.send(dead_letter),
        collect=naming.receive(collect),
        collect_batch=naming.receive(collect_batch),
        collector_dead_letter=naming.send(collector_dead_letter),
        event=naming.send(event),
        cancellations=naming.receive(cancellations),
        heartbeat=naming.send(heartbeat),
    )


async def queue_depths(url: str, names: Iterable[str]) -> dict[str, int]:
    """Ready messages per queue (a passive declare each), for the after-run checks."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        depths: dict[str, int] = {}
        for name in names:
            queue = await channel.declare_queue(name, passive=True)
            depths[name] = int(queue.declaration_result.message_count or 0)
        return depths


async def purge(url: str, names: Iterable[str]) -> None:
    """Empty the queues before a phase, so a previous repetition cannot leak into it."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            queue = await channel.get_queue(name, ensure=True)
            await queue.purge()


async def delete(url: str, bench: BenchTopology) -> None:
    """Delete the run's queues and exchanges (idempotent: RabbitMQ accepts missing ones)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in bench.all_queue_names:
            await channel.queue_delete(name)
        for name in bench.exchange_names:
            await channel.exchange_delete(name)


async def heartbeat_senders(url: str, stream: str, worker_ids: set[str], timeout: float) -> int:
    """Wait until every worker in `worker_ids` has a heartbeat in `stream`; how many do.

    Read from the stream's first offset (a stream consumer needs a prefetch); returns as soon
    as all are seen, or at the deadline with fewer (the caller decides what that means).
    """
    seen: set[str] = set()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=100)
        queue = await channel.get_queue(stream, ensure=False)
        all_seen = asyncio.Event()

        async def on_message(message: AbstractIncomingMessage) -> None:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                worker_id = json.loads(message.body).get("worker_id")
                if worker_id in worker_ids:
                    seen.add(worker_id)
            await message.ack()
            if seen >= worker_ids:
                all_seen.set()

        tag = await queue.consume(on_message, arguments={"x-stream-offset": "first"})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_seen.wait(), timeout)
        await queue.cancel(tag)
    return len(seen)
