"""`started` and `progress` events: transient news, published without waiting for the broker.

A `started` event for every task would cost the success path a second publish (the bench saw
worker CPU per task grow by a third for trivial tasks), so it is sent only for a task still
running after SPECTASK_STARTED_AFTER seconds (default 0.2): the tasks whose STARTED state
anybody gets to see. Both kinds go on their own channel without publisher confirms,
non-persistent and not mandatory: nobody waits, a lost one is harmless (the result, confirmed,
supersedes it) and a full broker never blocks a task for them. `retrying`
and `cancelled` events decide what a task is doing, so they are next hops, confirmed with the
task's other next hops (`spectask.runtime.outcomes`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq

from spectask.runtime.context import TaskContext
from spectask.runtime.topology import SendRoute
from spectask.runtime.transport import Channel, Connection, Exchange

log = logging.getLogger(__name__)


def event_document(
    context: TaskContext, worker_id: str, event: str, **fields: Any
) -> dict[str, Any]:
    """A TaskEvent about the context's attempt (None fields left out)."""
    document: dict[str, Any] = {
        "task_id": context.task_id,
        "event": event,
        "message_type": context.message_type,
        "worker_id": worker_id,
        "at": fields.pop("at", None) or datetime.now(UTC),
        "attempt": context.attempt,
    }
    document.update((key, value) for key, value in fields.items() if value is not None)
    if context.digest:
        document["task_digest"] = context.digest
    return document


class LiveEvents:
    """Publishes started/progress events fire-and-forget on an unconfirmed channel."""

    def __init__(
        self, channel: Channel, exchange: Exchange, route: SendRoute, worker_id: str
    ) -> None:
        self._channel = channel
        self._exchange = exchange
        self._route = route
        self._worker_id = worker_id
        self._pending: set[asyncio.Task[None]] = set()
        self.published = 0
        self.lost = 0

    @classmethod
    async def open(cls, connection: Connection, route: SendRoute, worker_id: str) -> LiveEvents:
        channel = await connection.channel(publisher_confirms=False)
        exchange = await channel.get_exchange(route.exchange, ensure=False)
        return cls(channel, exchange, route, worker_id)

    def started(self, context: TaskContext, at: datetime) -> None:
        """The attempt started at `at`; called on the event loop, sends in the background."""
        self._send(context, event_document(context, self._worker_id, "started", at=at))

    def progress(self, context: TaskContext, percent: float, message: str | None) -> None:
        """Called on the event loop (TaskSignals hops threads); sends in the background."""
        document = event_document(
            context, self._worker_id, "progress", progress=percent, message=message
        )
        self._send(context, document)

    def _send(self, context: TaskContext, document: Mapping[str, Any]) -> None:
        task = asyncio.create_task(self._publish(context, document))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, context: TaskContext, document: Mapping[str, Any]) -> None:
        route = self._route
        body = route.model.model_validate(document).model_dump_json(
            by_alias=True, exclude_none=True
        )
        message = aio_pika.Message(
            body.encode(),
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            content_type="application/json",
            message_id=context.task_id,
            type=route.message_type,
        )
        try:
            await self._exchange.publish(
                message, f"{context.task_type}.{document['event']}", mandatory=False
            )
            self.published += 1
        except (aiormq.exceptions.AMQPError, RuntimeError, ConnectionError) as exc:
            self.lost += 1
            log.debug("%s event of %s lost: %s", document["event"], context.task_id, exc)

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        try:
            await self._channel.close()
        except (aiormq.exceptions.AMQPError, RuntimeError) as exc:
            log.debug("closing the events channel: %s", exc)
