"""Worker heartbeats: one transient WorkerHeartbeat per worker per interval, never per task.

A watcher (the dashboard, `spectask workers`) needs to know which workers are alive and what
they are doing without asking each one. Each worker therefore publishes a snapshot of itself
(id, host, pid, task types, concurrency, in flight, processed, failed) every
SPECTASK_HEARTBEAT_INTERVAL seconds to the protocol's `workers` exchange, from where the broker
appends it to the `spectask.heartbeats` stream. It is a Resource of the delivery loop: started
before the first delivery, stopped after the last. The publish goes on its own channel without
confirms, non-persistent and not mandatory: the next heartbeat supersedes a lost one, and a
slow or blocked broker must never hold up a task for it. Its cost does not grow with the
number of tasks, so it stays off the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import aio_pika
import aiormq

from spectask.runtime.broker import Broker
from spectask.runtime.consumer import WorkerStats
from spectask.runtime.topology import SendRoute
from spectask.runtime.transport import Channel, Exchange

log = logging.getLogger(__name__)


class Heartbeat:
    """Publishes this worker's WorkerHeartbeat now and then every `interval` seconds."""

    def __init__(
        self,
        broker: Broker,
        route: SendRoute,
        *,
        worker_id: str,
        task_types: Sequence[str],
        stats: WorkerStats,
        in_flight: Callable[[], int],
    ) -> None:
        self._broker = broker
        self._route = route
        self._worker_id = worker_id
        self._task_types = sorted(set(task_types))
        self._stats = stats
        self._in_flight = in_flight
        self._interval = broker.config.heartbeat_interval
        self._started_at = datetime.now(UTC)
        self._channel: Channel | None = None
        self._beating: asyncio.Task[None] | None = None
        self.sent = 0

    def document(self) -> dict[str, object]:
        """The heartbeat as of now (validated by the route's model before it is sent)."""
        config = self._broker.config
        return {
            "worker_id": self._worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "task_types": self._task_types,
            "concurrency": config.concurrency,
            "prefetch": config.prefetch,
            "in_flight": self._in_flight(),
            "processed": self._stats.processed,
            "failed": self._stats.failed,
            "retried": self._stats.retried,
            "interval": self._interval,
            "started_at": self._started_at,
            "at": datetime.now(UTC),
        }

    async def start(self) -> None:
        channel = await self._broker.connection.channel(publisher_confirms=False)
        self._channel = channel
        exchange = await channel.get_exchange(self._route.exchange, ensure=False)
        await self._send(exchange)  # watchers see a new worker at once, not one period later
        self._beating = asyncio.create_task(self._beat(exchange), name="spectask-heartbeat")

    async def _beat(self, exchange: Exchange) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._send(exchange)

    async def _send(self, exchange: Exchange) -> None:
        route = self._route
        body = route.model.model_validate(self.document()).model_dump_json(exclude_none=True)
        message = aio_pika.Message(
            body.encode(),
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            content_type="application/json",
            type=route.message_type,
            timestamp=datetime.now(UTC),
        )
        try:
            await exchange.publish(message, route.routing_key, mandatory=False)
            self.sent += 1
        except (aiormq.exceptions.AMQPError, RuntimeError, ConnectionError) as exc:
            log.debug("worker %s: a heartbeat was lost: %s", self._worker_id, exc)

    async def close(self) -> None:
        if self._beating is not None:
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating
        if self._channel is not None:
            try:
                await self._channel.close()
            except (aiormq.exceptions.AMQPError, RuntimeError) as exc:
                log.debug("closing the heartbeat channel: %s", exc)
