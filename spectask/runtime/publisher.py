"""Confirmed, persistent, mandatory publishing: a publish returns only once the broker has it.

An unroutable message raises `UnroutableError` (mandatory + on_return_raises) instead of being
dropped; a nack or a lost connection raises `PublishError`. Batches: `spectask.runtime.submission`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aio_pika
import aiormq

from spectask.errors import PublishError, UnroutableError
from spectask.runtime.transport import UNROUTABLE, Channel, Exchange


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message ready to publish; the body is already-serialized bytes."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    message_type: str
    priority: int | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None
    reply_to: str | None = None
    timestamp: datetime | None = None
    content_type: str = "application/json"
    # A reply to a caller that may be gone: transient, and not returned when unroutable.
    reply: bool = False


class Publisher:
    """Publishes on one confirm channel; safe to share between tasks of one event loop."""

    def __init__(self, channel: Channel, confirm_timeout: float | None = None) -> None:
        self._channel = channel
        # None: wait as long as the connection lives. A quorum queue that lost the majority of
        # its nodes neither confirms nor refuses: without a bound, a submit would hang forever.
        self._confirm_timeout = confirm_timeout
        self._exchanges: dict[str, Exchange] = {}

    async def _exchange(self, name: str) -> Exchange:
        exchange = self._exchanges.get(name)
        if exchange is None:
            if name == "":
                exchange = self._channel.default_exchange
            else:
                exchange = await self._channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    async def publish(self, message: OutgoingMessage) -> None:
        """Publish and wait for the broker's confirm."""
        exchange = await self._exchange(message.exchange)
        amqp_message = aio_pika.Message(
            message.body,
            delivery_mode=(
                aio_pika.DeliveryMode.NOT_PERSISTENT
                if message.reply
                else aio_pika.DeliveryMode.PERSISTENT
            ),
            content_type=message.content_type,
            message_id=message.message_id,
            type=message.message_type,
            priority=message.priority,
            headers=dict(message.headers),
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            timestamp=message.timestamp,
        )
        try:
            await asyncio.wait_for(
                exchange.publish(amqp_message, message.routing_key, mandatory=not message.reply),
                self._confirm_timeout,
            )
        except TimeoutError:
            raise PublishError(
                f"RabbitMQ did not confirm message {message.message_id} within "
                f"{self._confirm_timeout:g}s (SPECTASK_CONFIRM_TIMEOUT), so it may not be stored: "
                "on a cluster, a quorum queue confirms nothing while a majority of its nodes is "
                "down; publish it again once they are back (the task id makes a duplicate harmless)"
            ) from None
        except UNROUTABLE as exc:
            raise UnroutableError(message.exchange, message.routing_key) from exc
        except aiormq.exceptions.DeliveryError as exc:
            raise PublishError(
                f"broker refused message {message.message_id} ({exc}); it was not stored"
            ) from exc
        except (aiormq.exceptions.AMQPError, RuntimeError, ConnectionError) as exc:
            raise PublishError(
                f"connection lost before the broker confirmed message {message.message_id}: "
                f"{exc or type(exc).__name__}; publish it again under the same id (the "
                "collector keeps one record per task id; if the first copy was stored after "
                "all, the task may run twice)"
            ) from exc
