"""Task cancellation: a stream every worker follows, and the set of ids it has cancelled.

`spectask cancel` (generated `ProducerClient.cancel_tasks`) publishes a TaskCancel to the
`control` exchange; it lands in a RabbitMQ stream, an append-only log kept for days. A stream,
not a queue per worker, because a queue only holds what arrived after it was made: a worker
started after the cancellation would run the task. Each worker reads the stream from its start
before it takes any task (it publishes a marker to the stream and reads until it meets it) and
then follows it, so a cancelled task is skipped whichever worker takes it, whenever. A task
already running is cancelled cooperatively: its TaskSignals are told, so `ctx.cancelled`
turns true and `ctx.progress` / `ctx.raise_if_cancelled` raise TaskCancelledError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import aiormq
from pydantic import ValidationError

from spectask.errors import PublishError
from spectask.runtime.broker import Broker
from spectask.runtime.control import TaskSignals
from spectask.runtime.publisher import OutgoingMessage
from spectask.runtime.topology import ReceiveRoute
from spectask.runtime.transport import Channel, IncomingMessage

log = logging.getLogger(__name__)

STREAM_PREFETCH = 500


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """Who cancelled a task, when and why (from its TaskCancel)."""

    requested_at: datetime | None
    requested_by: str
    reason: str

    def describe(self) -> str:
        who = f" by {self.requested_by}" if self.requested_by else ""
        when = f" at {self.requested_at.isoformat()}" if self.requested_at else ""
        why = f": {self.reason}" if self.reason else ""
        return f"cancelled{who}{when}{why}"


class CancelRegistry:
    """Cancelled task ids, and the signals of the attempts running now (to tell them)."""

    def __init__(self) -> None:
        self._cancelled: dict[str, CancelRequest] = {}
        self._running: dict[str, TaskSignals] = {}

    def __len__(self) -> int:
        return len(self._cancelled)

    def request(self, task_id: str) -> CancelRequest | None:
        return self._cancelled.get(task_id)

    def cancel(self, task_ids: Sequence[str], request: CancelRequest) -> int:
        """Record the ids; tell the running ones. Returns how many were running here."""
        told = 0
        for task_id in task_ids:
            self._cancelled.setdefault(task_id, request)
            signals = self._running.get(task_id)
            if signals is not None:
                told += 1
                signals.cancel()
        return told

    def start(self, task_id: str, signals: TaskSignals) -> None:
        """The attempt runs now: a cancellation of its id reaches `signals` (call `finish`)."""
        self._running[task_id] = signals
        if task_id in self._cancelled:
            signals.cancel()

    def finish(self, task_id: str, signals: TaskSignals) -> None:
        if self._running.get(task_id) is signals:
            del self._running[task_id]

    def running(self) -> list[TaskSignals]:
        """The attempts running now (a copy)."""
        return list(self._running.values())


class CancellationWatch:
    """Follows the cancellation stream into a CancelRegistry; see the module docstring."""

    def __init__(
        self, broker: Broker, route: ReceiveRoute, registry: CancelRegistry, worker_id: str
    ) -> None:
        self._broker = broker
        self._route = route
        self._registry = registry
        self._worker_id = worker_id
        self._marker = f"marker-{uuid.uuid4().hex}"
        self._synced = asyncio.Event()
        self._channel: Channel | None = None

    async def start(self, timeout: float) -> None:
        """Subscribe from the stream's start, then wait until the stream is read up to now."""
        channel = self._channel = await self._broker.connection.channel()
        await channel.set_qos(prefetch_count=STREAM_PREFETCH)  # a stream consumer needs one
        queue = await channel.get_queue(self._route.queue, ensure=True)
        await queue.consume(self._on_message, no_ack=False, arguments={"x-stream-offset": "first"})
        began = time.monotonic()
        await self._publish_marker()
        try:
            async with asyncio.timeout(timeout):
                await self._synced.wait()
        except TimeoutError:
            log.warning(
                "worker %s: the cancellation stream %s was not read up to now within %gs; "
                "taking tasks anyway (a task cancelled before this start may still run)",
                self._worker_id,
                self._route.queue,
                timeout,
            )
        else:
            log.info(
                "worker %s: %d cancelled task(s) known from %s (read in %.0f ms)",
                self._worker_id,
                len(self._registry),
                self._route.queue,
                (time.monotonic() - began) * 1000,
            )

    async def _publish_marker(self) -> None:
        document = {
            "task_ids": [],
            "requested_at": datetime.now(UTC),
            "requested_by": f"worker {self._worker_id} start-up marker",
        }
        body = self._route.model.model_validate(document).model_dump_json(exclude_none=True)
        publisher = await self._broker.publisher()
        try:
            await publisher.publish(
                OutgoingMessage(
                    exchange="",
                    routing_key=self._route.queue,
                    body=body.encode(),
                    message_id=self._marker,
                    message_type=self._route.message_type,
                )
            )
        except PublishError as exc:
            log.warning("could not publish the cancellation stream marker: %s", exc)

    async def _on_message(self, message: IncomingMessage) -> None:
        try:
            cancel = self._route.model.model_validate_json(message.body)
        except ValidationError as exc:
            log.warning(
                "ignoring message %s in %s: not a TaskCancel (%s)",
                message.message_id,
                self._route.queue,
                exc.errors()[0]["msg"] if exc.errors() else exc,
            )
        else:
            task_ids: list[str] = list(getattr(cancel, "task_ids", []))
            if task_ids:
                request = CancelRequest(
                    getattr(cancel, "requested_at", None),
                    getattr(cancel, "requested_by", None) or "",
                    getattr(cancel, "reason", None) or "",
                )
                told = self._registry.cancel(task_ids, request)
                if told:
                    log.info("worker %s: asked %d running task(s) to stop", self._worker_id, told)
            elif message.message_id == self._marker:
                self._synced.set()
        with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
            await message.ack()

    async def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
                await self._channel.close()
