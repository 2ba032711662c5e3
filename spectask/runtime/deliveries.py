"""Deliveries as spectask reads them: a light message over aiormq's, on every robust consumer.

aio-pika turns each delivery into an `IncomingMessage` (every property converted and checked
against a lock on assignment) and runs the consumer in a second task beside aiormq's own:
~29 µs and ~5 µs per delivery on these machines, paid by every worker for every task and by
the collector for every result, for properties spectask mostly never reads. `Delivery` keeps
aiormq's `DeliveredMessage` and reads its properties from pamqp's frame as they are, with the
same values aio-pika gives (an absent priority is 0, absent headers an empty mapping, the
timestamp pamqp's datetime), and settles it on the aiormq channel it came on, with
aio-pika's rules: settled once (`MessageProcessError` after), never on a consumer without
acks (`TypeError`), and `channel` raises once the channel has closed
(`ChannelInvalidStateError`, what `spectask.runtime.acks` looks for).

`DeliveryQueue` is the robust queue of spectask's robust connection
(`spectask.runtime.failover.FailoverConnection`, through `DeliveryChannel`): its `consume`
subscribes on the underlying aiormq channel with the callback awaited in aiormq's own task
(which aiormq cancels when the channel closes, as it cancelled aio-pika's second task), and
records the consumer exactly as aio-pika's robust queue does, so a reconnect restores it
through this same `consume`. One recovery path of aio-pika (a consumer the broker cancelled
and whose queue needed probing first) re-subscribes through aio-pika's base `Queue.consume`:
those deliveries arrive as aio-pika messages, which satisfy the same `IncomingMessage`
Protocol, so the runtime handles them alike, only slower. The in-memory transport has its own
messages and is unaffected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from functools import partial
from typing import Any

import aiormq
from aio_pika.exceptions import ChannelInvalidStateError, MessageProcessError
from aio_pika.robust_channel import RobustChannel
from aio_pika.robust_queue import RobustQueue
from aiormq.abc import DeliveredMessage

DeliveryCallback = Callable[[Any], Awaitable[Any]]


class Delivery:
    """One delivery, read straight from aiormq's frame (see the module doc)."""

    __slots__ = (
        "_channel",
        "_no_ack",
        "_settled",
        "body",
        "content_type",
        "correlation_id",
        "delivery_tag",
        "exchange",
        "headers",
        "message_id",
        "priority",
        "redelivered",
        "reply_to",
        "routing_key",
        "timestamp",
        "type",
    )

    def __init__(self, message: DeliveredMessage, no_ack: bool = False) -> None:
        properties = message.header.properties
        delivery = message.delivery
        self._channel = message.channel
        self._no_ack = no_ack
        self.body: bytes = message.body
        self.headers: Mapping[str, Any] = properties.headers or {}
        self.content_type: str | None = properties.content_type
        self.message_id: str | None = properties.message_id
        self.type: str | None = properties.message_type
        self.priority: int | None = properties.priority or 0
        self.correlation_id: str | None = properties.correlation_id
        self.reply_to: str | None = properties.reply_to
        self.timestamp: datetime | None = properties.timestamp
        self.exchange: str | None = getattr(delivery, "exchange", None)
        self.routing_key: str | None = getattr(delivery, "routing_key", None)
        self.redelivered: bool | None = getattr(delivery, "redelivered", None)
        self.delivery_tag: int | None = getattr(delivery, "delivery_tag", None)
        # no acks, or nothing to settle (a get without a tag): settled from the start
        self._settled = no_ack or not self.delivery_tag

    @property
    def channel(self) -> aiormq.abc.AbstractChannel:
        """The aiormq channel it came on; raises once that channel has closed."""
        if self._channel.is_closed:
            raise ChannelInvalidStateError
        return self._channel

    def _settle(self) -> int:
        if self._no_ack:
            raise TypeError('cannot settle a message consumed with "no_ack"')
        if self._settled:
            raise MessageProcessError("Message already processed", self)
        assert self.delivery_tag is not None  # a tagless one starts settled
        return self.delivery_tag

    async def ack(self, multiple: bool = False) -> None:
        tag = self._settle()
        await self.channel.basic_ack(delivery_tag=tag, multiple=multiple)
        self._settled = True

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        tag = self._settle()
        await self.channel.basic_nack(delivery_tag=tag, multiple=multiple, requeue=requeue)
        self._settled = True

    async def reject(self, requeue: bool = False) -> None:
        tag = self._settle()
        await self.channel.basic_reject(delivery_tag=tag, requeue=requeue)
        self._settled = True

    def __repr__(self) -> str:
        return f"Delivery(message_id={self.message_id!r}, delivery_tag={self.delivery_tag!r})"


async def _deliver(callback: DeliveryCallback, no_ack: bool, message: DeliveredMessage) -> Any:
    return await callback(Delivery(message, no_ack))


class DeliveryQueue(RobustQueue):
    """A robust queue whose consumers get `Delivery` objects (see the module doc)."""

    async def consume(
        self,
        callback: DeliveryCallback,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        consumer_tag: str | None = None,
        timeout: float | None = None,
        robust: bool = True,
    ) -> str:
        channel = await self.channel.get_underlay_channel()
        answer = await channel.basic_consume(
            queue=self.name,
            consumer_callback=partial(_deliver, callback, no_ack),
            exclusive=exclusive,
            no_ack=no_ack,
            arguments=arguments,
            consumer_tag=consumer_tag,
            timeout=timeout,
        )
        tag = answer.consumer_tag
        if tag is None:
            raise RuntimeError("the broker gave the consumer no tag")
        if robust:  # what aio-pika's robust queue keeps to restore it after a reconnect
            self._consumers[tag] = dict(
                callback=callback, no_ack=no_ack, exclusive=exclusive, arguments=arguments
            )
        return tag


class DeliveryChannel(RobustChannel):
    """aio-pika's robust channel, with `DeliveryQueue` for its queues."""

    QUEUE_CLASS = DeliveryQueue
