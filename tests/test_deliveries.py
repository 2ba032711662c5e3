"""spectask's light deliveries (`spectask.runtime.deliveries`) on a real broker.

A robust connection's consumers get `Delivery` objects instead of aio-pika's messages; these
tests hold them to what the runtime relied on with aio-pika: the same property values for the
same message, settled once, `channel` raising once the channel closed, and a consumer that
still gets them after its connection was dropped and restored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from aio_pika.exceptions import ChannelInvalidStateError, MessageProcessError

from spectask.devbroker import LocalNode
from spectask.runtime.acks import channel_closed
from spectask.runtime.deliveries import Delivery
from spectask.runtime.transport import Channel, IncomingMessage, connect
from tests.brokers import BrokerNode, require_controllable, unique_name

pytestmark = pytest.mark.timeout(120)

WAIT = 30.0
PROTOCOL = (  # every property of the transport's IncomingMessage Protocol
    "body",
    "headers",
    "content_type",
    "message_id",
    "type",
    "priority",
    "correlation_id",
    "reply_to",
    "timestamp",
    "exchange",
    "routing_key",
    "redelivered",
    "delivery_tag",
)


def full_message(message_id: str) -> aio_pika.Message:
    return aio_pika.Message(
        b'{"values": [1, 2]}',
        content_type="application/json",
        message_id=message_id,
        type="test.kind",
        priority=7,
        correlation_id="corr-1",
        reply_to="replies",
        timestamp=datetime(2026, 12, 3, 10, 0, 1, tzinfo=UTC),
        headers={"x-spectask-attempt": 3, "x-text": "zürich", "x-list": [1, "a"]},
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


@asynccontextmanager
async def consumed(
    url: str, queue_name: str, *, robust: bool, no_ack: bool = False
) -> AsyncIterator[tuple[Channel, asyncio.Queue[IncomingMessage]]]:
    """A consumer of `queue_name` on a fresh connection; its deliveries in an asyncio queue."""
    connection = await connect(url, robust=robust, name=f"test-deliveries-{queue_name}")
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=True)
        delivered: asyncio.Queue[IncomingMessage] = asyncio.Queue()

        async def on_message(message: IncomingMessage) -> None:
            await delivered.put(message)

        await queue.consume(on_message, no_ack=no_ack)
        yield channel, delivered


async def declared(url: str) -> str:
    name = unique_name("deliveries")
    connection = await connect(url, robust=False)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=False, arguments={"x-max-priority": 10})
    return name


async def publish(url: str, queue_name: str, message: aio_pika.Message) -> None:
    connection = await connect(url, robust=False)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(message, routing_key=queue_name)


def properties(message: IncomingMessage) -> dict[str, Any]:
    return {name: getattr(message, name) for name in PROTOCOL}


async def test_a_delivery_reads_what_aio_pika_reads(amqp_url: str) -> None:
    """The same message read by aio-pika (a plain connection) and as a `Delivery` (a robust
    one): every property of the Protocol equal, both for a full message and a bare one."""
    name = await declared(amqp_url)
    for message_id, message in (
        ("full", full_message("full")),
        ("bare", aio_pika.Message(b"x", message_id="bare")),
    ):
        await publish(amqp_url, name, message)
        async with consumed(amqp_url, name, robust=False) as (_, plain):
            by_aio_pika = await asyncio.wait_for(plain.get(), WAIT)
            assert not isinstance(by_aio_pika, Delivery)
            seen = properties(by_aio_pika)
            await by_aio_pika.nack(requeue=True)
        async with consumed(amqp_url, name, robust=True) as (_, light):
            delivery = await asyncio.wait_for(light.get(), WAIT)
            assert isinstance(delivery, Delivery), message_id
            read = properties(delivery)
            await delivery.ack()
        # the second read is a redelivery on another channel: those two differ, by design
        assert (seen.pop("redelivered"), read.pop("redelivered")) == (False, True)
        seen.pop("delivery_tag"), read.pop("delivery_tag")
        assert read == seen, message_id
    assert read["priority"] == 0 and read["headers"] == {} and read["timestamp"] is None


async def test_a_delivery_is_settled_once_and_not_after_its_channel_closed(
    amqp_url: str,
) -> None:
    name = await declared(amqp_url)
    for index in range(3):
        await publish(amqp_url, name, aio_pika.Message(b"x", message_id=f"m{index}"))
    async with consumed(amqp_url, name, robust=True) as (channel, delivered):
        first = await asyncio.wait_for(delivered.get(), WAIT)
        await first.ack()
        with pytest.raises(MessageProcessError):
            await first.nack(requeue=True)
        second = await asyncio.wait_for(delivered.get(), WAIT)
        await second.reject(requeue=False)
        with pytest.raises(MessageProcessError):
            await second.ack()
        third = await asyncio.wait_for(delivered.get(), WAIT)
        assert not channel_closed(third)
        await channel.close()
        assert channel_closed(third)  # what the ack window looks for
        with pytest.raises(ChannelInvalidStateError):
            await third.ack()


async def test_a_no_ack_delivery_cannot_be_settled(amqp_url: str) -> None:
    name = await declared(amqp_url)
    await publish(amqp_url, name, aio_pika.Message(b"x", message_id="auto"))
    async with consumed(amqp_url, name, robust=True, no_ack=True) as (_, delivered):
        delivery = await asyncio.wait_for(delivered.get(), WAIT)
        assert isinstance(delivery, Delivery)
        with pytest.raises(TypeError, match="no_ack"):
            await delivery.ack()


async def test_a_restored_consumer_still_gets_deliveries(broker_node: BrokerNode) -> None:
    """The broker drops the consumer's connection: aio-pika's robust connection reconnects
    and restores the consumer through `DeliveryQueue.consume`, whose deliveries are still
    `Delivery` objects, and the message unacked at the drop comes again, redelivered."""
    node = require_controllable(broker_node)
    name = await declared(node.url)
    await publish(node.url, name, aio_pika.Message(b"x", message_id="before"))
    async with consumed(node.url, name, robust=True) as (_, delivered):
        before = await asyncio.wait_for(delivered.get(), WAIT)
        assert isinstance(before, Delivery) and not before.redelivered
        closed = close_connections_named(node, f"test-deliveries-{name}")
        assert closed == 1
        again = await asyncio.wait_for(delivered.get(), WAIT)  # the restored consumer's
        assert isinstance(again, Delivery)
        assert (again.message_id, again.redelivered) == ("before", True)
        await again.ack()
        await publish(node.url, name, aio_pika.Message(b"x", message_id="after"))
        after = await asyncio.wait_for(delivered.get(), WAIT)
        assert isinstance(after, Delivery) and after.message_id == "after"
        await after.ack()


def close_connections_named(node: LocalNode, connection_name: str) -> int:
    """Close, from the broker, the client connections that gave `connection_name`."""
    deadline = time.monotonic() + WAIT
    while True:  # the connection is listed a moment after it opened
        listed = node.ctl(
            "list_connections", "--quiet", "--no-table-headers", "pid", "client_properties"
        )
        pids = [  # client_properties is printed as Erlang terms: the name is one of them
            line.split()[0] for line in listed.stdout.splitlines() if f'"{connection_name}"' in line
        ]
        if pids or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for pid in pids:
        node.ctl("close_connection", pid, "test: dropping the connection")
    return len(pids)
