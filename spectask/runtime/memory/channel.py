"""Connections, channels, exchange and queue handles of the in-memory broker.

They implement `spectask.runtime.transport` the way RabbitMQ behaves behind aio-pika:
- a publish routes at once and is confirmed (there is nothing to lose in memory); a mandatory
  publish no queue takes raises `ReturnedError` on a channel opened with `on_return_raises`;
  a publish to a missing exchange closes the channel (404), as RabbitMQ does;
- a delivery runs its consumer callback in a task of its own (as aio-pika does), so prefetch
  bounds how many run at once;
- closing a channel (or its connection) gives its unacked deliveries back to their queues,
  marked redelivered: that is how a worker that goes away hands its tasks to another;
- direct reply-to: a channel consuming `amq.rabbitmq.reply-to` gets replies addressed to the
  `reply_to` its requests carry (`amq.rabbitmq.reply-to.<channel>`), and nobody else does.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika

from spectask.runtime.memory.hub import REPLY_TO, Hub
from spectask.runtime.memory.messages import Envelope, MemoryIncomingMessage, envelope_of
from spectask.runtime.memory.queues import Consumer, QueueState
from spectask.runtime.transport import (
    Callback,
    ChannelClosedError,
    NotFoundError,
    PreconditionFailedError,
    ReturnedError,
    TransportError,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeclareOk:
    message_count: int | None
    consumer_count: int | None


@dataclass(frozen=True, slots=True)
class _Unacked:
    envelope: Envelope
    queue: QueueState
    consumer: Consumer | None


class MemoryExchange:
    """A handle on an exchange by name; it is looked up at publish, as `ensure=False` does."""

    def __init__(self, channel: MemoryChannel, name: str) -> None:
        self._channel = channel
        self.name = name

    def __repr__(self) -> str:
        return f"<MemoryExchange {self.name!r}>"

    async def publish(
        self, message: aio_pika.abc.AbstractMessage, routing_key: str, *, mandatory: bool = True
    ) -> object:
        await self._channel.publish(self.name, message, routing_key, mandatory=mandatory)
        return None


class MemoryQueue:
    """A handle on a queue by name, with the counts of its declare."""

    def __init__(self, channel: MemoryChannel, name: str, declared: DeclareOk) -> None:
        self._channel = channel
        self.name = name
        self.declaration_result = declared

    def __repr__(self) -> str:
        return f"<MemoryQueue {self.name!r}>"

    async def bind(self, exchange: str, routing_key: str | None = None) -> object:
        self._channel.check_open()
        self._channel.hub.bind(self.name, exchange, routing_key or "")
        return None

    async def consume(
        self,
        callback: Callback,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> str:
        return self._channel.consume(self.name, callback, no_ack=no_ack, arguments=arguments)

    async def cancel(self, consumer_tag: str) -> object:
        self._channel.cancel(consumer_tag)
        return None

    async def get(
        self, *, no_ack: bool = False, fail: bool = True, timeout: float | None = 5
    ) -> MemoryIncomingMessage | None:
        await asyncio.sleep(0)
        message = self._channel.get(self.name, no_ack=no_ack)
        if message is None and fail:
            raise QueueEmptyError(f"queue {self.name!r} is empty")
        return message

    async def purge(self) -> object:
        self._channel.check_open()
        return self._channel.hub.queue(self.name).purge()

    async def delete(self, *, if_unused: bool = True, if_empty: bool = True) -> object:
        self._channel.check_open()
        return self._channel.hub.delete_queue(self.name)


class QueueEmptyError(TransportError):
    """A `get(fail=True)` found the queue empty (aio-pika: `QueueEmpty`)."""


class MemoryChannel:
    """One channel: its consumers, its unacked deliveries, its delivery-tag counter."""

    def __init__(
        self, connection: MemoryConnection, *, confirms: bool, on_return_raises: bool
    ) -> None:
        self._connection = connection
        self.hub: Hub = connection.hub
        self.confirms = confirms
        self.on_return_raises = on_return_raises
        self._closed = False
        self._prefetch = 0
        self._tags = itertools.count(1)
        self._unacked: dict[int, _Unacked] = {}
        self._consumers: dict[str, Consumer] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.reply_address = f"{REPLY_TO}.{uuid.uuid4().hex}"

    @property
    def is_closed(self) -> bool:
        return self._closed or self._connection.is_closed

    @property
    def default_exchange(self) -> MemoryExchange:
        return MemoryExchange(self, "")

    def check_open(self) -> None:
        if self.is_closed:
            raise ChannelClosedError("the channel is closed")

    def _fail(self, error: TransportError) -> TransportError:
        """A channel-level error closes the channel, as RabbitMQ's channel exceptions do."""
        self._close_now()
        return error

    async def set_qos(self, prefetch_count: int = 0) -> object:
        self.check_open()
        self._prefetch = prefetch_count
        return None

    async def declare_exchange(
        self,
        name: str,
        type: str = "direct",
        *,
        durable: bool = False,
        auto_delete: bool = False,
        passive: bool = False,
    ) -> MemoryExchange:
        self.check_open()
        await asyncio.sleep(0)
        try:
            self.hub.declare_exchange(
                name, str(type), durable=durable, auto_delete=auto_delete, passive=passive
            )
        except TransportError as exc:
            raise self._fail(exc) from None
        return MemoryExchange(self, name)

    async def declare_queue(
        self,
        name: str | None = None,
        *,
        durable: bool = False,
        exclusive: bool = False,
        passive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> MemoryQueue:
        self.check_open()
        await asyncio.sleep(0)
        try:
            queue = self.hub.declare_queue(
                name or "",
                durable=durable,
                exclusive=exclusive,
                auto_delete=auto_delete,
                passive=passive,
                arguments=arguments,
                owner=self._connection,
            )
        except TransportError as exc:
            raise self._fail(exc) from None
        return MemoryQueue(self, queue.name, _declared(queue))

    async def get_exchange(self, name: str, *, ensure: bool = True) -> MemoryExchange:
        if ensure:
            return await self.declare_exchange(name, passive=True)
        self.check_open()
        return MemoryExchange(self, name)

    async def get_queue(self, name: str, *, ensure: bool = True) -> MemoryQueue:
        if ensure:
            return await self.declare_queue(name, passive=True)
        self.check_open()
        known = self.hub.queues.get(name)
        return MemoryQueue(self, name, _declared(known) if known else DeclareOk(None, None))

    async def queue_delete(self, queue_name: str) -> object:
        self.check_open()
        return self.hub.delete_queue(queue_name)

    async def exchange_delete(self, exchange_name: str) -> object:
        self.check_open()
        self.hub.delete_exchange(exchange_name)
        return None

    async def get_underlay_channel(self) -> MemoryChannel:
        """There is no cache to bypass: the channel itself answers `queue_declare`."""
        return self

    async def queue_declare(self, queue: str = "", *, passive: bool = False) -> DeclareOk:
        return (await self.declare_queue(queue, passive=passive)).declaration_result

    # --- publishing ---------------------------------------------------------------------------

    async def basic_publish(
        self,
        body: bytes,
        *,
        exchange: str = "",
        routing_key: str = "",
        properties: Any = None,
        mandatory: bool = False,
        timeout: float | None = None,
        wait: bool = True,
    ) -> None:
        """aiormq's publish with wire properties (what `spectask.runtime.publisher` calls);
        `wait` (for the socket write) means nothing in memory."""
        message = aio_pika.Message(
            body,
            headers=properties.headers,
            content_type=properties.content_type,
            delivery_mode=properties.delivery_mode,
            priority=properties.priority,
            correlation_id=properties.correlation_id,
            reply_to=properties.reply_to,
            message_id=properties.message_id,
            timestamp=properties.timestamp,
            type=properties.message_type,
        )
        await self.publish(exchange, message, routing_key, mandatory=mandatory)

    async def publish(
        self,
        exchange: str,
        message: aio_pika.abc.AbstractMessage,
        routing_key: str,
        *,
        mandatory: bool,
    ) -> None:
        self.check_open()
        envelope = envelope_of(message, exchange, routing_key)
        if envelope.properties.reply_to == REPLY_TO:
            if REPLY_TO not in {c.queue.name for c in self._consumers.values()}:
                raise self._fail(
                    PreconditionFailedError(
                        "PRECONDITION_FAILED - fast reply consumer does not exist "
                        f"(consume {REPLY_TO} on this channel before publishing requests)"
                    )
                )
            envelope = _reply_addressed(envelope, self.reply_address)
        try:
            taken = self.hub.route(exchange, envelope)
        except NotFoundError as exc:
            raise self._fail(exc) from None
        await asyncio.sleep(0)  # a confirm is a round trip: let other tasks run meanwhile
        if not taken and mandatory and self.on_return_raises:
            raise ReturnedError(
                f"NO_ROUTE: {exchange or '(default)'!r} routed {routing_key!r} to no queue"
            )

    # --- consuming ----------------------------------------------------------------------------

    def consume(
        self,
        queue_name: str,
        callback: Callback,
        *,
        no_ack: bool,
        arguments: Mapping[str, Any] | None,
    ) -> str:
        self.check_open()
        tag = f"ctag-{uuid.uuid4().hex[:12]}"
        if queue_name == REPLY_TO:
            if not no_ack:
                raise self._fail(
                    PreconditionFailedError(f"{REPLY_TO} must be consumed with no_ack")
                )
            pseudo = QueueState(REPLY_TO, self.hub.clock, self.hub.dead_letter)
            consumer = Consumer(tag, pseudo, self, callback, no_ack=True, prefetch=0)
            self._consumers[tag] = consumer
            self.hub.reply_consumers[self.reply_address] = consumer
            return tag
        try:
            queue = self.hub.queue(queue_name)
        except NotFoundError as exc:
            raise self._fail(exc) from None
        consumer = Consumer(tag, queue, self, callback, no_ack=no_ack, prefetch=self._prefetch)
        if queue.is_stream:
            if not no_ack and self._prefetch == 0:
                raise self._fail(
                    PreconditionFailedError(
                        f"PRECONDITION_FAILED - consumer prefetch count is not set for stream "
                        f"{queue_name!r}"
                    )
                )
            consumer.position = queue.stream_start((arguments or {}).get("x-stream-offset"))
        queue.consumers.append(consumer)
        queue.had_consumer = True
        self._consumers[tag] = consumer
        queue.dispatch()
        return tag

    def cancel(self, tag: str) -> None:
        self.check_open()
        consumer = self._consumers.get(tag)
        if consumer is not None:
            self.forget_consumer(consumer)

    def forget_consumer(self, consumer: Consumer) -> None:
        """Stop delivering to `consumer` (cancelled, or its queue deleted); unacked stay so."""
        self._consumers.pop(consumer.tag, None)
        if consumer.queue.name == REPLY_TO:
            self.hub.reply_consumers.pop(self.reply_address, None)
            return
        queue = consumer.queue
        if consumer in queue.consumers:
            queue.consumers.remove(consumer)
        if queue.auto_delete and queue.had_consumer and not queue.consumers:
            self.hub.delete_queue(queue.name)

    def deliver(
        self, consumer: Consumer, envelope: Envelope, stream_offset: int | None = None
    ) -> None:
        """Hand one message to a consumer's callback, in a task of its own."""
        tag = next(self._tags)
        if not consumer.no_ack:
            self._unacked[tag] = _Unacked(envelope, consumer.queue, consumer)
            consumer.unacked += 1
        extra = None if stream_offset is None else {"x-stream-offset": stream_offset}
        message = MemoryIncomingMessage(
            envelope, self, tag, no_ack=consumer.no_ack, extra_headers=extra
        )
        task = asyncio.get_running_loop().create_task(self._run(consumer, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, consumer: Consumer, message: MemoryIncomingMessage) -> None:
        try:
            await consumer.callback(message)
        except Exception:
            # aio-pika logs a failing callback too; the delivery stays unacked.
            log.exception("consumer %s failed on %r", consumer.tag, message)

    def get(self, queue_name: str, *, no_ack: bool) -> MemoryIncomingMessage | None:
        self.check_open()
        try:
            queue = self.hub.queue(queue_name)
        except NotFoundError as exc:
            raise self._fail(exc) from None
        if queue.is_stream:
            raise self._fail(PreconditionFailedError("basic.get is not supported on streams"))
        envelope = queue.take()
        if envelope is None:
            return None
        tag = next(self._tags)
        if not no_ack:
            self._unacked[tag] = _Unacked(envelope, queue, None)
        return MemoryIncomingMessage(envelope, self, tag, no_ack=no_ack)

    def settle(self, tag: int, action: str, *, multiple: bool) -> None:
        """ack, requeue or reject (dead-letter) one delivery, or every one up to `tag`."""
        self.check_open()
        if tag not in self._unacked:
            raise self._fail(
                PreconditionFailedError(f"PRECONDITION_FAILED - unknown delivery tag {tag}")
            )
        tags = sorted(t for t in self._unacked if t <= tag) if multiple else [tag]
        touched: dict[str, QueueState] = {}
        for one in tags:
            pending = self._unacked.pop(one)
            if pending.consumer is not None:
                pending.consumer.unacked -= 1
            queue = pending.queue
            if action == "requeue":
                queue.requeue(pending.envelope)
            elif action == "reject" and not queue.is_stream:
                queue.dead_letter(queue, pending.envelope, "rejected")
            touched[queue.name] = queue
        for queue in touched.values():
            if queue.name in self.hub.queues:
                queue.dispatch()

    # --- closing ------------------------------------------------------------------------------

    def _close_now(self) -> None:
        """Cancel the consumers and give every unacked delivery back, in delivery order."""
        if self._closed:
            return
        self._closed = True
        for consumer in list(self._consumers.values()):
            self.forget_consumer(consumer)
        touched: dict[str, QueueState] = {}
        for tag in sorted(self._unacked):
            pending = self._unacked.pop(tag)
            pending.queue.requeue(pending.envelope)
            touched[pending.queue.name] = pending.queue
        for queue in touched.values():
            if queue.name in self.hub.queues:
                queue.dispatch()
        self._connection.forget_channel(self)

    def close(self) -> Awaitable[None]:
        self._close_now()
        return _done()


class MemoryConnection:
    """A connection to a hub: it owns channels (and exclusive queues) and closes them."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._closed = False
        self._channels: set[MemoryChannel] = set()

    @property
    def is_closed(self) -> bool:
        return self._closed

    def channel(
        self,
        channel_number: int | None = None,
        publisher_confirms: bool = True,
        on_return_raises: bool = False,
    ) -> Awaitable[MemoryChannel]:
        return self._open(publisher_confirms, on_return_raises)

    async def _open(self, publisher_confirms: bool, on_return_raises: bool) -> MemoryChannel:
        if self._closed:
            raise ChannelClosedError("the connection is closed")
        channel = MemoryChannel(
            self, confirms=publisher_confirms, on_return_raises=on_return_raises
        )
        self._channels.add(channel)
        return channel

    def forget_channel(self, channel: MemoryChannel) -> None:
        self._channels.discard(channel)

    def close(self) -> Awaitable[None]:
        """Close every channel (requeueing what they held), then drop exclusive queues."""
        if not self._closed:
            for channel in list(self._channels):
                channel._close_now()
            self._closed = True
            for name, queue in list(self.hub.queues.items()):
                if queue.owner is self:
                    self.hub.delete_queue(name)
        return _done()

    async def __aenter__(self) -> MemoryConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _done() -> None:
    return None


def _declared(queue: QueueState) -> DeclareOk:
    return DeclareOk(queue.message_count(), len(queue.consumers))


def _reply_addressed(envelope: Envelope, address: str) -> Envelope:
    from dataclasses import replace

    return replace(envelope, properties=replace(envelope.properties, reply_to=address))
