"""The baseline: the same pipeline written by hand on aio-pika, the way a careful engineer would.

Same guarantees as spectask: persistent messages, mandatory publishes on a confirm channel with
many confirms in flight, workers that publish the result, wait for its confirm, and only then
ack the task; a collector that acks what it has recorded. Same queues (the bench topology),
same payload bytes, same prefetch. What it leaves out is what a framework adds: schema
validation, the task envelope and context, dead-lettering, retries, stats and the burst mode.

`--transient` makes the variant most libraries ship: results published transient, on a channel
without confirms, and the task acked as soon as the publish is written (a broker crash can lose
a result whose task was acked). It is the `raw-transient` column: what the guarantees cost.

Run as `python -m bench.raw --run-id ID --worker-id W --prefetch N` it is one worker process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)

from bench.phases import RAW, RAW_TRANSIENT, RESULT_MODES
from bench.procs import Control
from bench.topology import BenchTopology, bench_topology
from bench.workload import MESSAGE_TYPE, PAYLOAD, summarize
from spectask import eventloop  # only to run on the same event loop as the spectask side

WINDOW = 256
"""Confirms in flight while pre-loading: the same as spectask's `submit_many` default window."""


def _json(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


async def _confirm_channel(connection: AbstractRobustConnection) -> AbstractChannel:
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


class RawProducer:
    """Publishes tasks to the bench `tasks` exchange, persistent, mandatory, confirmed."""

    def __init__(
        self, connection: AbstractRobustConnection, exchange: AbstractExchange, bench: BenchTopology
    ) -> None:
        self._connection = connection
        self._exchange = exchange
        self._routing_key = bench.submit.routing_key
        self._priority = bench.submit.default_priority

    @classmethod
    async def open(cls, url: str, bench: BenchTopology) -> RawProducer:
        connection = await aio_pika.connect_robust(url)
        channel = await _confirm_channel(connection)
        exchange = await channel.get_exchange(bench.submit.exchange, ensure=False)
        return cls(connection, exchange, bench)

    def message(self, task_id: str) -> aio_pika.Message:
        return aio_pika.Message(
            _json(PAYLOAD),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            message_id=task_id,
            type=MESSAGE_TYPE,
            priority=self._priority,
            timestamp=datetime.now(UTC),
        )

    def task_body(self) -> bytes:
        """One task's body, to check that both sides send the same bytes."""
        return self.message("size").body

    async def submit(self, task_id: str) -> None:
        await self._exchange.publish(self.message(task_id), self._routing_key, mandatory=True)

    async def preload(self, task_ids: Sequence[str]) -> None:
        """Publish all, at most WINDOW unconfirmed at a time; raise if any was not confirmed."""
        slots = asyncio.Semaphore(WINDOW)

        async def one(task_id: str) -> None:
            try:
                await self.submit(task_id)
            finally:
                slots.release()

        tasks = []
        for task_id in task_ids:
            await slots.acquire()
            tasks.append(asyncio.create_task(one(task_id)))
        await asyncio.gather(*tasks)

    async def close(self) -> None:
        await self._connection.close()


class RawCollector:
    """Consumes results, records each task id, then acks it."""

    def __init__(self, connection: AbstractRobustConnection) -> None:
        self._connection = connection
        self.result_bytes = 0

    @classmethod
    async def start(
        cls, url: str, bench: BenchTopology, prefetch: int, on_result: Callable[[str], None]
    ) -> RawCollector:
        connection = await aio_pika.connect_robust(url)
        collector = cls(connection)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(bench.collect.queue, ensure=False)

        async def on_message(message: AbstractIncomingMessage) -> None:
            document = json.loads(message.body)
            collector.result_bytes = len(message.body)
            on_result(document["task_id"])
            await message.ack()

        await queue.consume(on_message)
        return collector

    def check(self) -> None:
        """Nothing to check: the robust connection reconnects and resumes consuming."""

    async def close(self, timeout: float) -> None:
        await asyncio.wait_for(self._connection.close(), timeout=timeout)


class RawWorker:
    """Decode, work, publish the result with a confirm, then ack; requeue if the publish fails."""

    def __init__(
        self,
        worker_id: str,
        results: AbstractExchange,
        bench: BenchTopology,
        transient: bool = False,
    ) -> None:
        self._worker_id = worker_id
        self._results = results
        self._routing_key = bench.result.routing_key
        self._delivery_mode = (
            aio_pika.DeliveryMode.NOT_PERSISTENT if transient else aio_pika.DeliveryMode.PERSISTENT
        )
        self._mandatory = not transient
        self.processed = 0
        self.requeued = 0
        self.in_flight: set[asyncio.Task[None]] = set()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.in_flight.add(task)
        try:
            await self._handle(message)
        finally:
            self.in_flight.discard(task)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        started_at = datetime.now(UTC)
        task = json.loads(message.body)
        result = summarize(task["values"])
        submitted_at = message.timestamp.replace(tzinfo=UTC) if message.timestamp else None
        body = _json(
            {
                "task_id": message.message_id,
                "message_type": message.type,
                "status": "succeeded",
                "worker_id": self._worker_id,
                "attempt": 1,
                "submitted_at": submitted_at.isoformat() if submitted_at else None,
                "started_at": started_at.isoformat(),
                "finished_at": datetime.now(UTC).isoformat(),
                "result": result,
            }
        )
        reply = aio_pika.Message(
            body,
            delivery_mode=self._delivery_mode,
            content_type="application/json",
            message_id=message.message_id,
            type="spectask.result",
        )
        try:
            await self._results.publish(reply, self._routing_key, mandatory=self._mandatory)
        except (aio_pika.exceptions.AMQPError, ConnectionError) as exc:
            print(f"raw worker: result not confirmed, requeueing: {exc}", file=sys.stderr)
            self.requeued += 1
            await message.nack(requeue=True)
            return
        await message.ack()
        self.processed += 1


async def _worker(args: argparse.Namespace) -> int:
    control = await Control.open()
    bench = bench_topology(args.run_id, RAW_TRANSIENT if args.transient else RAW)
    connection = await aio_pika.connect_robust(os.environ["AMQP_URL"])
    async with connection:
        channel: AbstractChannel = (
            await connection.channel(publisher_confirms=False)
            if args.transient
            else await _confirm_channel(connection)
        )
        await channel.set_qos(prefetch_count=args.prefetch)
        results = await channel.get_exchange(bench.result.exchange, ensure=False)
        queue = await channel.get_queue(bench.process.queue, ensure=False)
        worker = RawWorker(args.worker_id, results, bench, transient=args.transient)
        control.send("ready")
        await control.wait_go(args.max_seconds)
        stop = control.stop_event(args.max_seconds)
        tag = await queue.consume(worker.on_message)
        await stop.wait()
        await queue.cancel(tag)
        if worker.in_flight:
            await asyncio.wait(set(worker.in_flight), timeout=args.drain_seconds)
    control.report({"processed": worker.processed, "requeued": worker.requeued})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one raw aio-pika bench worker process")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--prefetch", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--drain-seconds", type=float, default=30.0)
    parser.add_argument(
        "--result-mode",
        choices=RESULT_MODES,
        default=RESULT_MODES[0],
        help="ignored: the raw pipeline keeps its own guarantees in every phase",
    )
    parser.add_argument(
        "--transient", action="store_true", help="transient, unconfirmed results (raw-transient)"
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return eventloop.run(_worker(args))
    return 1


if __name__ == "__main__":
    sys.exit(main())
