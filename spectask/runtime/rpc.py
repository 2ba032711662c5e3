"""Request/reply over RabbitMQ direct reply-to: one reply consumer per process, correlation ids.

The caller consumes the pseudo-queue `amq.rabbitmq.reply-to` (no_ack) on the channel it
publishes requests on, so no reply queue is declared per call or per process. Each request
carries a fresh correlation id and expires in the queue after the call's timeout, so a server
that starts late does not answer callers that have given up. A call never waits longer than
its timeout: it raises `RpcTimeoutError` instead.

The server side is the responder role (`spectask.runtime.responder`) in the delivery loop: a
receive route with a reply publishes the handler's model to the request's `reply_to`, then the
loop acks the request. A reply with `error` set is a refusal of the request: `RpcError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import aio_pika
import aiormq
from pydantic import BaseModel, ValidationError

from spectask.errors import PublishError, RpcTimeoutError, SpectaskError, TaskValidationError
from spectask.runtime.connection_watch import cause_of
from spectask.runtime.topology import Naming, RpcRoute
from spectask.runtime.transport import Channel, Connection, IncomingMessage

log = logging.getLogger(__name__)

REPLY_TO = "amq.rabbitmq.reply-to"
DEFAULT_TIMEOUT = 5.0


class RpcError(SpectaskError):
    """A reply arrived but is not the reply the spec describes."""


class RpcClient:
    """Calls request/reply operations; safe to share between the tasks of one event loop."""

    def __init__(self, connection: Connection, *, naming: Naming | None = None) -> None:
        self._connection = connection
        self._naming = naming or Naming()  # calls take the spec's routes (SPECTASK_NAME_PREFIX)
        self._channel: Channel | None = None
        self._pending: dict[str, asyncio.Future[IncomingMessage]] = {}
        self._lock = asyncio.Lock()

    async def _ready(self) -> Channel:
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                channel = await self._connection.channel(publisher_confirms=False)
                queue = await channel.get_queue(REPLY_TO, ensure=False)
                await queue.consume(self._on_reply, no_ack=True)
                self._channel = channel
            return self._channel

    async def _on_reply(self, message: IncomingMessage) -> None:
        future = self._pending.pop(message.correlation_id or "", None)
        if future is None:
            log.debug("late or unknown reply %s dropped", message.correlation_id)
        elif not future.done():
            future.set_result(message)

    async def call(
        self,
        route: RpcRoute,
        request: BaseModel | Mapping[str, Any],
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> BaseModel:
        """Send one request and return its validated reply; `RpcTimeoutError` after `timeout`."""
        if timeout <= 0:
            raise TaskValidationError(f"timeout must be positive, got {timeout}")
        route = self._naming.rpc(route)
        try:
            payload = route.model.model_validate(
                request.model_dump() if isinstance(request, BaseModel) else request
            )
        except ValidationError as exc:
            raise TaskValidationError(f"{route.operation}: invalid request: {exc}") from None
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[IncomingMessage] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            async with asyncio.timeout(timeout):
                try:
                    channel = await self._ready()
                    exchange = (
                        channel.default_exchange
                        if route.exchange == ""
                        else await channel.get_exchange(route.exchange, ensure=False)
                    )
                except (aiormq.exceptions.AMQPError, RuntimeError, ConnectionError) as exc:
                    # no channel over a lost connection (a broker killed -9): one line
                    raise PublishError(
                        f"{route.operation}: request not sent: {cause_of(exc)}"
                    ) from exc
                message = aio_pika.Message(
                    payload.model_dump_json(by_alias=True, exclude_unset=True).encode(),
                    content_type="application/json",
                    message_id=correlation_id,
                    correlation_id=correlation_id,
                    reply_to=REPLY_TO,
                    type=route.message_type,
                    expiration=timeout,
                    delivery_mode=(
                        aio_pika.DeliveryMode.PERSISTENT
                        if route.persistent
                        else aio_pika.DeliveryMode.NOT_PERSISTENT
                    ),
                )
                try:
                    await exchange.publish(message, route.routing_key)
                except (aiormq.exceptions.AMQPError, RuntimeError, ConnectionError) as exc:
                    raise PublishError(
                        f"{route.operation}: request not sent: {cause_of(exc)}"
                    ) from exc
                reply = await future
        except TimeoutError:
            raise RpcTimeoutError(
                f"{route.operation}: no collector answered within {timeout:.1f} s; "
                "is `make collector` running?"
            ) from None
        finally:
            self._pending.pop(correlation_id, None)
        if reply.type and reply.type != route.reply.message_type:
            raise RpcError(
                f"{route.operation}: reply has type {reply.type!r}, "
                f"expected {route.reply.message_type!r}"
            )
        try:
            answer = route.reply.model.model_validate_json(reply.body)
        except ValidationError as exc:
            raise RpcError(
                f"{route.operation}: the reply does not match its schema: {exc}"
            ) from None
        refused = getattr(answer, "error", None)  # a refusal (spectask.runtime.responder)
        if refused is not None:
            raise RpcError(
                f"{route.operation}: the request was refused: {refused.type}: {refused.message}"
            )
        return answer

    async def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self._channel is not None:
            with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
                await self._channel.close()
            self._channel = None
