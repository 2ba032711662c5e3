"""Does RabbitMQ set `redelivered` on messages recovered after a broker kill -9 and restart?

Run: .venv/bin/python tools/measure_redelivered.py   (needs rabbitmq-server installed)

Per queue type (classic durable, quorum), three times: publish N persistent confirmed
messages and consume + ack all of them, plus UNDELIVERED confirmed messages in a second queue
that nobody consumes; kill -9 the broker right after the last ack, start it again, then drain
both queues counting redelivered True/False. The facts it printed on RabbitMQ 3.10.8 are in
README "The guarantees" and spectask.runtime.repeats (which relies on them).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import aio_pika

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from spectask.devbroker import LocalNode
from tests.brokers import throwaway_node

N = 2000
UNDELIVERED = 200
RUNS = 3


async def publish_and_ack(url: str, queue_type: str) -> aio_pika.abc.AbstractConnection:
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    arguments: dict[str, Any] = {"x-queue-type": queue_type}
    acked = await channel.declare_queue(f"acked.{queue_type}", durable=True, arguments=arguments)
    parked = await channel.declare_queue(f"parked.{queue_type}", durable=True, arguments=arguments)
    for queue, count in ((acked, N), (parked, UNDELIVERED)):
        for i in range(count):
            message = aio_pika.Message(str(i).encode(), delivery_mode=2)
            await channel.default_exchange.publish(message, queue.name)
    consumer = await connection.channel()
    await consumer.set_qos(prefetch_count=50)
    done = asyncio.Event()
    seen = 0

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal seen
        await message.ack()
        seen += 1
        if seen == N:
            done.set()

    await (await consumer.get_queue(acked.name)).consume(on_message)
    await done.wait()
    return connection  # left open: the broker dies under it


async def drain(url: str, queue_type: str) -> dict[str, tuple[int, int]]:
    counts: dict[str, tuple[int, int]] = {}
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in (f"acked.{queue_type}", f"parked.{queue_type}"):
            queue = await channel.declare_queue(
                name, durable=True, arguments={"x-queue-type": queue_type}
            )
            redelivered = fresh = 0
            while (message := await queue.get(no_ack=False, fail=False, timeout=10)) is not None:
                redelivered += bool(message.redelivered)
                fresh += not message.redelivered
                await message.ack()
            counts[name] = (redelivered, fresh)
    return counts


def main() -> None:
    node: LocalNode
    with contextlib.contextmanager(throwaway_node)("measure-redelivered") as node:
        for queue_type in ("classic", "quorum"):
            for run in range(RUNS):
                loop = asyncio.new_event_loop()
                loop.run_until_complete(publish_and_ack(node.url, queue_type))
                node.kill()
                node.start(timeout=120)
                with contextlib.suppress(Exception):
                    loop.close()
                counts = asyncio.run(drain(node.url, queue_type))
                print(
                    f"{queue_type} run {run}: acked before the kill, back after it "
                    f"(redelivered, not): {counts[f'acked.{queue_type}']}; never delivered "
                    f"(redelivered, not): {counts[f'parked.{queue_type}']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
