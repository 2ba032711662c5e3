"""A connection to RabbitMQ: connect (with automatic reconnect), declare the topology.

This is the boundary where aio-pika's transport errors become spectask errors with a hint.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from spectask.errors import BrokerUnavailableError
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.publisher import Publisher
from spectask.runtime.topology import Topology


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Broker:
    """One robust connection per process; channels are opened per purpose from it."""

    def __init__(self, connection: AbstractRobustConnection, config: RuntimeConfig) -> None:
        self.connection = connection
        self.config = config
        self._publisher: Publisher | None = None

    @classmethod
    async def connect(
        cls, config: RuntimeConfig | None = None, *, name: str = "spectask"
    ) -> Broker:
        """Connect, or raise `BrokerUnavailableError` saying where we tried and what to do."""
        config = config or RuntimeConfig()
        try:
            connection = await asyncio.wait_for(
                aio_pika.connect_robust(
                    config.amqp_url,
                    heartbeat=config.heartbeat,
                    client_properties={"connection_name": name},
                ),
                timeout=config.connect_timeout,
            )
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
            reason = str(exc) or type(exc).__name__
            raise BrokerUnavailableError(
                f"cannot reach RabbitMQ at {redact_url(config.amqp_url)}: {reason}"
                "\n  hint: run `make broker` (it finds or starts one) and set AMQP_URL to the URL "
                "it prints"
            ) from exc
        return cls(connection, config)

    async def channel(self, *, prefetch: int | None = None) -> AbstractChannel:
        """A new channel with publisher confirms, for consumers that also publish."""
        channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        if prefetch is not None:
            await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def publisher(self) -> Publisher:
        """The process's shared confirmed publisher (one channel, many confirms in flight)."""
        if self._publisher is None:
            self._publisher = Publisher(await self.channel())
        return self._publisher

    async def declare(self, topology: Topology) -> None:
        """Declare every exchange, queue and binding; idempotent, so every process may call it."""
        channel = await self.connection.channel()
        try:
            exchanges: dict[str, AbstractExchange] = {}
            for spec in topology.exchanges:
                exchanges[spec.name] = await channel.declare_exchange(
                    spec.name,
                    type=spec.type,
                    durable=spec.durable,
                    auto_delete=spec.auto_delete,
                )
            for queue_spec in topology.queues:
                queue = await channel.declare_queue(
                    queue_spec.name,
                    durable=queue_spec.durable,
                    exclusive=queue_spec.exclusive,
                    auto_delete=queue_spec.auto_delete,
                    arguments=queue_spec.arguments_dict(),
                )
                for binding in queue_spec.bindings:
                    await queue.bind(exchanges[binding.exchange], routing_key=binding.routing_key)
        finally:
            await channel.close()

    async def close(self) -> None:
        await self.connection.close()

    async def __aenter__(self) -> Broker:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
