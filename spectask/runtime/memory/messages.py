"""Messages inside the in-memory broker, and the deliveries a consumer sees.

A published `aio_pika.Message` is copied into an `Envelope` through the AMQP wire codec
(pamqp, which aio-pika itself uses): headers come back with the types a real delivery has
(`bytearray` stays `bytearray`, nested tables, datetimes), a header RabbitMQ could not carry
fails at publish as it would on the real transport, and the timestamp keeps whole seconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aio_pika
from pamqp import decode, encode

from spectask.runtime.transport import PreconditionFailedError

if TYPE_CHECKING:
    from spectask.runtime.memory.channel import MemoryChannel

_sequence = itertools.count()


def wire_table(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """`headers` as they arrive after a trip over AMQP."""
    if not headers:
        return {}
    _, table = decode.field_table(encode.field_table(dict(headers)))
    return dict(table)


def wire_timestamp(value: datetime | None) -> datetime | None:
    return None if value is None else decode.timestamp(encode.timestamp(value))[1]


@dataclass(frozen=True, slots=True)
class Properties:
    """The AMQP basic properties the runtime reads."""

    content_type: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration_ms: int | None = None
    message_id: str | None = None
    timestamp: datetime | None = None
    type: str | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message held by a queue: its properties, where it came from, and its place.

    `seq` orders the queue (FIFO within a priority); a requeued message keeps it, so it goes
    back to its place, ahead of messages that arrived after it, as on RabbitMQ.
    """

    body: bytes
    properties: Properties
    exchange: str
    routing_key: str
    seq: int = field(default_factory=lambda: next(_sequence))
    redelivered: bool = False
    expires_at: float | None = None

    def again(self) -> Envelope:
        """The same message in a new place (another queue, a dead-letter hop)."""
        return replace(self, seq=next(_sequence), redelivered=False, expires_at=None)


def envelope_of(message: aio_pika.abc.AbstractMessage, exchange: str, routing_key: str) -> Envelope:
    expiration = message.properties.expiration
    return Envelope(
        body=bytes(message.body),
        properties=Properties(
            content_type=message.content_type,
            headers=wire_table(message.headers),
            delivery_mode=int(message.delivery_mode) if message.delivery_mode else None,
            priority=message.priority,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            expiration_ms=int(expiration) if expiration else None,
            message_id=message.message_id,
            timestamp=wire_timestamp(message.timestamp),
            type=message.type,
        ),
        exchange=exchange,
        routing_key=routing_key,
    )


class MemoryIncomingMessage:
    """A delivery: read-only properties; ack/nack/reject go back to the channel it came on."""

    __slots__ = ("_channel", "_envelope", "_settled", "delivery_tag", "headers", "no_ack")

    def __init__(
        self,
        envelope: Envelope,
        channel: MemoryChannel,
        delivery_tag: int | None,
        *,
        no_ack: bool,
        extra_headers: Mapping[str, Any] | None = None,
    ) -> None:
        self._envelope = envelope
        self._channel = channel
        self._settled = no_ack
        self.delivery_tag = delivery_tag
        self.no_ack = no_ack
        self.headers: dict[str, Any] = dict(envelope.properties.headers)
        if extra_headers:
            self.headers.update(extra_headers)

    def __repr__(self) -> str:
        return f"<MemoryIncomingMessage {self.message_id} tag={self.delivery_tag}>"

    @property
    def channel(self) -> MemoryChannel:
        """The channel it came on (the ack window keeps unsettled tags per channel, as tags are
        per channel; a closed one's deliveries are back in their queue, nothing to ack)."""
        return self._channel

    @property
    def body(self) -> bytes:
        return self._envelope.body

    @property
    def content_type(self) -> str | None:
        return self._envelope.properties.content_type

    @property
    def message_id(self) -> str | None:
        return self._envelope.properties.message_id

    @property
    def type(self) -> str | None:
        return self._envelope.properties.type

    @property
    def priority(self) -> int | None:
        return self._envelope.properties.priority

    @property
    def correlation_id(self) -> str | None:
        return self._envelope.properties.correlation_id

    @property
    def reply_to(self) -> str | None:
        return self._envelope.properties.reply_to

    @property
    def timestamp(self) -> datetime | None:
        return self._envelope.properties.timestamp

    @property
    def expiration(self) -> float | None:
        ms = self._envelope.properties.expiration_ms
        return None if ms is None else ms / 1000

    @property
    def delivery_mode(self) -> int | None:
        return self._envelope.properties.delivery_mode

    @property
    def exchange(self) -> str | None:
        return self._envelope.exchange

    @property
    def routing_key(self) -> str | None:
        return self._envelope.routing_key

    @property
    def redelivered(self) -> bool | None:
        return self._envelope.redelivered

    def _settle(self, action: str, *, multiple: bool = False) -> None:
        if self.no_ack:
            raise _no_ack_error(action)
        if self._settled and not multiple:
            raise _settled_error(action, self.delivery_tag)
        self._settled = True
        assert self.delivery_tag is not None
        self._channel.settle(self.delivery_tag, action, multiple=multiple)

    async def ack(self, multiple: bool = False) -> None:
        self._settle("ack", multiple=multiple)

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        self._settle("requeue" if requeue else "reject", multiple=multiple)

    async def reject(self, requeue: bool = False) -> None:
        self._settle("requeue" if requeue else "reject")


def _no_ack_error(action: str) -> Exception:
    return PreconditionFailedError(f"cannot {action} a message delivered with no_ack")


def _settled_error(action: str, tag: int | None) -> Exception:
    return PreconditionFailedError(f"cannot {action} delivery {tag}: it is already settled")
