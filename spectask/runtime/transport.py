"""The transport seam: the part of an AMQP client the runtime uses, named as Protocols.

The runtime (broker, publisher, consumer, RPC, events, cancellations, dlq) is written against
these Protocols and nothing wider, so two implementations can stand behind them:
- aio-pika, the real one: its objects satisfy the Protocols structurally (mypy checks that in
  `connect`, where an aio-pika connection is returned as a `Connection`), so no adapter layer
  sits on the hot path;
- `spectask.runtime.memory`, a process-local broker for fast tests, chosen by a `memory://`
  URL.

The Protocols name only what spectask calls: adding a call to the runtime means adding it here
and to the in-memory broker, which is the point — the semantics the behaviour depends on stay
listed in one place. Outgoing messages are `aio_pika.Message` values on both transports: a plain
data holder with no I/O, and the one place AMQP properties are spelled.

Errors: the runtime already treats aio-pika's `RuntimeError`s (a closed channel) and
`aiormq.exceptions.AMQPError`s as "the channel is gone". The in-memory transport's errors
derive from `TransportError(RuntimeError)`, so every such handler catches them unchanged; the
few places that tell one failure from another catch the pairs below (`UNROUTABLE`,
`NOT_FOUND`, `PRECONDITION_FAILED`), which hold the real class and its in-memory twin.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

import aio_pika
import aiormq
from aio_pika.connection import make_url

from spectask.runtime.failover import (
    FAILOVER_RECONNECT_SECONDS,
    FailoverConnection,
    split_urls,
)
from spectask.runtime.shutdown import CLOSE_STEP_SECONDS

Message = aio_pika.Message
DeliveryMode = aio_pika.DeliveryMode
MEMORY_SCHEME = "memory://"


class TransportError(RuntimeError):
    """An error of the in-memory transport (a RuntimeError, like a closed aio-pika channel)."""


class ReturnedError(TransportError):
    """A mandatory message no queue is bound for (aio-pika: `aiormq.exceptions.PublishError`)."""


class NotFoundError(TransportError):
    """A passive declare or publish named an exchange/queue that does not exist (404)."""


class PreconditionFailedError(TransportError):
    """A redeclare with other arguments, or a call the entity cannot take (406)."""


class ChannelClosedError(TransportError):
    """The channel (or its connection) is closed."""


UNROUTABLE: tuple[type[Exception], ...] = (aiormq.exceptions.PublishError, ReturnedError)
NOT_FOUND: tuple[type[Exception], ...] = (aiormq.exceptions.ChannelNotFoundEntity, NotFoundError)
ACCESS_REFUSED: tuple[type[Exception], ...] = (aiormq.exceptions.ChannelAccessRefused,)
PRECONDITION_FAILED: tuple[type[Exception], ...] = (
    aiormq.exceptions.ChannelPreconditionFailed,
    PreconditionFailedError,
)


class IncomingMessage(Protocol):
    """A delivery (or a `get`): its properties, and the one way to settle it."""

    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, Any]: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def type(self) -> str | None: ...
    @property
    def priority(self) -> int | None: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def reply_to(self) -> str | None: ...
    @property
    def timestamp(self) -> datetime | None: ...
    @property
    def exchange(self) -> str | None: ...
    @property
    def routing_key(self) -> str | None: ...
    @property
    def redelivered(self) -> bool | None: ...
    @property
    def delivery_tag(self) -> int | None: ...

    async def ack(self, multiple: bool = ...) -> None: ...
    async def nack(self, multiple: bool = ..., requeue: bool = ...) -> None: ...
    async def reject(self, requeue: bool = ...) -> None: ...


Callback = Callable[[IncomingMessage], Awaitable[Any]]


class DeclareResult(Protocol):
    """What a queue declare reports (aio-pika: pamqp's Queue.DeclareOk)."""

    @property
    def message_count(self) -> int | None: ...
    @property
    def consumer_count(self) -> int | None: ...


class Exchange(Protocol):
    @property
    def name(self) -> str: ...

    async def publish(
        self, message: aio_pika.abc.AbstractMessage, routing_key: str, *, mandatory: bool = ...
    ) -> object: ...


class Queue(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def declaration_result(self) -> DeclareResult: ...

    async def bind(self, exchange: str, routing_key: str | None = ...) -> object: ...
    async def consume(
        self,
        callback: Callback,
        no_ack: bool = ...,
        exclusive: bool = ...,
        arguments: dict[str, Any] | None = ...,
    ) -> str: ...
    async def cancel(self, consumer_tag: str) -> object: ...
    async def get(
        self, *, no_ack: bool = ..., fail: bool = ..., timeout: float | None = ...
    ) -> IncomingMessage | None: ...
    async def purge(self) -> object: ...
    async def delete(self, *, if_unused: bool = ..., if_empty: bool = ...) -> object: ...


class RawChannel(Protocol):
    """The channel under aio-pika's robust one (aiormq's): its passive declares bypass aio-pika's
    cache, and `basic_publish` takes the AMQP properties as they go on the wire (the hot path's
    publish, `spectask.runtime.publisher`)."""

    @property
    def is_closed(self) -> bool: ...

    async def queue_declare(self, queue: str = ..., *, passive: bool = ...) -> Any: ...
    async def basic_publish(
        self,
        body: bytes,
        *,
        exchange: str = ...,
        routing_key: str = ...,
        properties: Any = ...,
        mandatory: bool = ...,
        timeout: float | None = ...,
    ) -> object: ...


class Channel(Protocol):
    @property
    def is_closed(self) -> bool: ...
    @property
    def default_exchange(self) -> Exchange: ...

    async def set_qos(self, prefetch_count: int = ...) -> object: ...
    async def declare_exchange(
        self,
        name: str,
        type: str = ...,
        *,
        durable: bool = ...,
        auto_delete: bool = ...,
        passive: bool = ...,
    ) -> Exchange: ...
    async def declare_queue(
        self,
        name: str | None = ...,
        *,
        durable: bool = ...,
        exclusive: bool = ...,
        passive: bool = ...,
        auto_delete: bool = ...,
        arguments: dict[str, Any] | None = ...,
    ) -> Queue: ...
    async def get_exchange(self, name: str, *, ensure: bool = ...) -> Exchange: ...
    async def get_queue(self, name: str, *, ensure: bool = ...) -> Queue: ...
    async def queue_delete(self, queue_name: str) -> object: ...
    async def exchange_delete(self, exchange_name: str) -> object: ...
    def close(self) -> Awaitable[None]: ...
    async def get_underlay_channel(self) -> RawChannel:
        """The channel under this one: `make demo` polls queue depths on it, the publisher
        publishes on it; prefer `declare_queue` for anything else."""
        ...


class Connection(Protocol):
    @property
    def is_closed(self) -> bool: ...

    def channel(
        self,
        channel_number: int | None = ...,
        publisher_confirms: bool = ...,
        on_return_raises: bool = ...,
    ) -> Awaitable[Channel]:
        """A new channel; aio-pika returns an awaitable channel object, hence not `async`."""
        ...

    def close(self) -> Awaitable[None]: ...
    async def __aenter__(self) -> Connection: ...
    async def __aexit__(self, *exc_info: Any) -> Any: ...


def is_memory_url(url: str) -> bool:
    return url.startswith(MEMORY_SCHEME)


async def connect(
    url: str,
    *,
    robust: bool = True,
    heartbeat: int | None = None,
    name: str = "spectask",
) -> Connection:
    """A connection to `url`: `memory://NAME` is the in-memory broker NAME, else RabbitMQ.

    `robust` (aio-pika's reconnecting connection) is for long-lived processes; tests that only
    peek at a queue use a plain one, as they did before the seam.
    """
    if is_memory_url(url):
        from spectask.runtime.memory import connect_memory

        return connect_memory(url)
    properties: dict[str, Any] = {"connection_name": name}
    if robust:
        kwargs: dict[str, Any] = {}
        if heartbeat is not None:
            kwargs["heartbeat"] = heartbeat
        return await _connect_robust(url, properties, kwargs)
    urls = split_urls(url)
    for index, node in enumerate(urls):  # several URLs: the first node that answers
        plain = aio_pika.Connection(make_url(node), client_properties=properties)
        try:
            await plain.connect()
        except (OSError, aio_pika.exceptions.AMQPError):
            # closed here: an unclosed failed connection schedules its close when collected,
            # on a loop that may be gone by then
            await plain.close()
            if index == len(urls) - 1:
                raise
            continue
        return plain
    raise ValueError(f"no broker URL in {url!r}")


def server_properties(connection: Connection) -> Mapping[str, object]:
    """The broker's server properties (its version); empty for the in-memory broker."""
    if isinstance(connection, aio_pika.abc.AbstractConnection):
        transport = connection.transport
        if transport is not None:
            properties: Mapping[str, object] = transport.connection.server_properties or {}
            return properties
    return {}


async def _connect_robust(
    url: str, properties: dict[str, Any], kwargs: dict[str, Any]
) -> aio_pika.abc.AbstractRobustConnection:
    """A robust connection to the first node of `url` (one URL or several, comma-separated:
    `spectask.runtime.failover`) that answers; the error of the last one if none does.

    Unlike `aio_pika.connect_robust`, a first connect that fails or is cancelled (a timeout,
    SIGTERM) closes the connection object: its reconnect task otherwise swallows the cancel and
    keeps trying, and the process cannot exit."""
    urls = split_urls(url)
    if len(urls) > 1:
        kwargs = {"reconnect_interval": FAILOVER_RECONNECT_SECONDS, **kwargs}
    for start in range(len(urls)):
        connection = FailoverConnection(urls, start, kwargs, client_properties=properties)
        try:
            await connection.connect()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), timeout=CLOSE_STEP_SECONDS)
            if start == len(urls) - 1 or not isinstance(exc, Exception):
                raise
            continue
        return connection
    raise ValueError(f"no broker URL in {url!r}")
