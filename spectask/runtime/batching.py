"""Result mode `batched`: the results of many tasks in one persistent, confirmed ResultBatch.

A delivery whose result is BATCHED waits here (`ResultBatcher.add`) until the batch holding its
result is confirmed by the broker; only then does the delivery loop ack it, so the guarantee is
the same as one confirmed result per task: nothing is acked before its result is stored, and a
crash in between gives a duplicate, never a loss. What it saves is broker work: one persistent
message, one confirm and (with `spectask.runtime.acks`) one ack frame for the whole batch.

A batch is flushed when it holds `size` results, at most `max_wait` seconds after its first
one, or once it holds `MAX_BATCH_BYTES`, whichever comes first. `size` is capped by the
prefetch: with every delivery the channel may hold already waiting here, no further result can
arrive until a flush, so waiting for the timer would only add latency.

Each element is the result body exactly as mode `confirmed` would publish it (built by
`spectask.runtime.outcomes`), spliced into `{"results": [...]}` without being parsed again.
If the batch is not confirmed, every delivery in it gets the PublishError and is requeued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from spectask.runtime.publisher import OutgoingMessage, Publisher
from spectask.runtime.topology import SendRoute

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 1024 * 1024
"""A batch is flushed before it grows past this (the results of large handlers)."""


class _Batch:
    __slots__ = ("bodies", "done", "size", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.bodies: list[bytes] = []
        self.size = 0
        self.done: asyncio.Future[None] = loop.create_future()
        self.timer: asyncio.TimerHandle | None = None


class ResultBatcher:
    """Collects BATCHED results and publishes them as ResultBatch messages; see the module doc."""

    def __init__(
        self, publisher: Publisher, route: SendRoute, *, size: int, max_wait: float
    ) -> None:
        self._publisher = publisher
        self._route = route
        self._size = size
        self._max_wait = max_wait
        self._loop = asyncio.get_running_loop()
        self._batch: _Batch | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self.published = 0  # batches confirmed
        self.results = 0  # results in them

    async def add(self, result: OutgoingMessage) -> None:
        """Return once the batch holding `result` is confirmed (raise PublishError if not)."""
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch(self._loop)
            batch.timer = self._loop.call_later(self._max_wait, self._flush, batch)
        batch.bodies.append(result.body)
        batch.size += len(result.body)
        done = batch.done
        if len(batch.bodies) >= self._size or batch.size >= MAX_BATCH_BYTES:
            self._flush(batch)
        await asyncio.shield(done)  # a cancelled waiter must not cancel the others' batch

    def flush(self) -> None:
        """Publish the batch being filled now (at shutdown: nobody waits for its timer)."""
        if self._batch is not None:
            self._flush(self._batch)

    def _flush(self, batch: _Batch) -> None:
        if self._batch is not batch:
            return  # flushed already (by size; this is its timer)
        self._batch = None
        if batch.timer is not None:
            batch.timer.cancel()
        task = self._loop.create_task(self._publish(batch))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _publish(self, batch: _Batch) -> None:
        body = b'{"results":[' + b",".join(batch.bodies) + b"]}"
        message = OutgoingMessage(
            exchange=self._route.exchange,
            routing_key=self._route.routing_key,
            body=body,
            message_id=uuid.uuid4().hex,
            message_type=self._route.message_type,
        )
        try:
            await self._publisher.publish(message)
        except BaseException as exc:  # every waiter hears it; the loop requeues them
            batch.done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.published += 1
        self.results += len(batch.bodies)
        batch.done.set_result(None)

    async def close(self) -> None:
        """Flush what is waiting and wait for every batch in flight (before the channel goes)."""
        self.flush()
        if self._flushes:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._flushes, return_exceptions=True)
