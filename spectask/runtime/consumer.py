"""The delivery loop: consume, hand each delivery to its queue's role, settle it in ONE place.

Every service — worker, collector, status responder — runs this same loop; what differs is the
*role* that serves each queue, chosen once at start from its routes' kind (`ReceiveRoute.kind`,
see `spectask.runtime.worker`): the tap role (`spectask.runtime.tap`) or the task role
(`spectask.runtime.task`), whose routes end a success in a result (`.outcomes`) or a reply
(`.responder`). A role looks at a delivery and returns its next hops (or raises RequeueLater);
it never acks, nacks or publishes. This module owns:
- consuming the selected queues on one channel with the configured prefetch;
- the deliveries in flight, burst mode (stop once idle and every queue is empty) and graceful
  shutdown (stop consuming, let in-flight deliveries finish up to SPECTASK_SHUTDOWN_TIMEOUT,
  requeue the rest);
- `settle`: publish the next hops with confirms, then ack. A delivery is acked only after its next
  hops are confirmed by the broker; a hop the broker refuses is published again while the delivery
  is held (up to a minute, `_publish_hops`), and if it still fails, or the connection went, the
  delivery is requeued (after a backoff). A crash in between therefore gives a duplicate, never a
  loss. A lost ack is only logged: the broker redelivers the message. A task's result goes the way
  its task type's result mode says (`x-spectask-results`, `ResultMode`): confirmed on its own, in
  a confirmed ResultBatch (`spectask.runtime.batching`: the ack waits for the batch's confirm),
  or, mode `none`, transient on a channel without confirms (the ack follows the write). Acks that
  become due in the same loop turn go out together (`spectask.runtime.acks`: `multiple=True` over
  consecutive delivery tags);
- RequeueLater: a role that cannot take a delivery now (a collector's store is down, say)
  gives it back to its queue after a backoff that grows while such failures continue;
- the last resort (`_unhandled`): any other exception of a role, or of publishing its hops,
  still settles the delivery — the role's `salvage` dead-letters it with why (the task role),
  else it is requeued later — so no delivery holds a prefetch slot forever.

Per delivery the loop costs what it did when it was one class with the roles: the consumer
callback of each queue is bound to its role once (no lookup by queue name per delivery), a
delivery is one await into the role, and the settle step is one publish (or one gather of
several) then the ack. `WorkerStats`, what a run did, is counted here by the loop and its roles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import aiormq

from spectask.errors import PublishError, SpectaskError, UnroutableError
from spectask.protocol.names import SUBMITTED_AT_HEADER
from spectask.runtime.acks import AckWindow, channel_closed
from spectask.runtime.batching import ResultBatcher
from spectask.runtime.broker import Broker
from spectask.runtime.context import NO_SIGNALS, Signals, TaskContext
from spectask.runtime.digest import task_digest
from spectask.runtime.headers import attempt_of
from spectask.runtime.publisher import OutgoingMessage, Publisher
from spectask.runtime.shutdown import within
from spectask.runtime.topology import ReceiveRoute, ResultMode, SendRoute
from spectask.runtime.transport import Channel, IncomingMessage, Queue

log = logging.getLogger(__name__)

IDLE_CHECK_SECONDS = 0.2
BURST_IDLE_SECONDS = 0.3
REQUEUE_BACKOFF_SECONDS = 1.0
MAX_REQUEUE_BACKOFF = 30.0
# a next hop the broker refused: published again after 0.5, 1, 2, 4, 5, 5... s, for up to a minute
REFUSED_RETRY_SECONDS = 0.5
MAX_REFUSED_RETRY_SECONDS = 5.0
REFUSED_HOLD_SECONDS = 60.0
# ...and after this long on one channel, on a fresh one (`Publisher.renew`)
RENEW_CHANNEL_AFTER_SECONDS = 3.0

NextHops = tuple[OutgoingMessage, ...]


@dataclass
class WorkerStats:
    """What one worker run did; `by_type` counts processed tasks per message type.

    `processed` counts attempts; `retried` the failed ones that went to a retry tier, `failed`
    the tasks that failed for good (each of those is also in `dead_lettered`); `cancelled`
    the ones skipped or stopped because they were cancelled; `skipped_repeats` the redelivered
    side-effecting tasks acked without running because the store had their outcome already.
    """

    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    dead_lettered: int = 0
    requeued: int = 0
    skipped_repeats: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    # (message type, seconds) of each finished attempt; set by the worker's /metrics only,
    # so a worker without it pays one None check per task
    observe_duration: Callable[[str, float], None] | None = field(default=None, repr=False)


class Role(Protocol):
    """What serves one queue: a delivery in, the messages to confirm before its ack out."""

    async def handle(self, message: IncomingMessage) -> NextHops:
        """The next hops of `message` (none: just ack it); raise RequeueLater to give it back."""
        ...


@runtime_checkable
class Salvaging(Protocol):
    """A role that can end a delivery it failed on: the last resort of the delivery loop."""

    def salvage(self, message: IncomingMessage, stage: str, error: Exception) -> NextHops:
        """The next hops that still settle `message` (a dead letter) after `error`."""
        ...


Salvage = Callable[[IncomingMessage, str, Exception], NextHops]


class Resource(Protocol):
    """Something the roles share that lives as long as the loop (a pool, a stream watch)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class RequeueLater(Exception):
    """The delivery goes back to its queue after a backoff (no next hop can take it now)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Backoff:
    """How long to wait before a RequeueLater delivery goes back: longer while they continue.

    A role that handles a delivery well sets `failures` back to 0.
    """

    __slots__ = ("failures",)

    def __init__(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        delay: float = min(REQUEUE_BACKOFF_SECONDS * 2 ** (self.failures - 1), MAX_REQUEUE_BACKOFF)
        return delay


class DeliveryLoop:
    """Consumes each queue of `roles` until stopped (or idle, in burst mode); see the module doc.

    `resources` start in order before the first delivery and close in reverse order after the
    last one has settled (or been requeued).
    """

    def __init__(
        self,
        broker: Broker,
        *,
        worker_id: str,
        roles: Mapping[str, Role],
        stats: WorkerStats,
        backoff: Backoff,
        resources: Sequence[Resource] = (),
        name: str | None = None,
        result_modes: frozenset[ResultMode] = frozenset(),
        result_batch_route: SendRoute | None = None,
    ) -> None:
        if ResultMode.BATCHED in result_modes and result_batch_route is None:
            raise SpectaskError(
                "a task type has x-spectask-results: batched but the service spec has no send "
                "operation with message type spectask.result_batch; refresh the protocol copy "
                "(`spectask protocol spec/`) and regenerate"
            )
        self._broker = broker
        self._name = name or f"worker {worker_id}"  # how its log lines name the process
        self._config = broker.config
        self._worker_id = worker_id
        self._roles = roles
        self._resources = resources
        self._backoff = backoff
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._last_delivery = time.monotonic()
        self._publisher: Publisher | None = None
        self._result_modes = result_modes
        self._result_batch_route = result_batch_route
        self._batcher: ResultBatcher | None = None
        self._unconfirmed: Publisher | None = None
        self._unconfirmed_channel: Channel | None = None
        self.acks = AckWindow()
        self.stats = stats

    @property
    def in_flight(self) -> int:
        """Deliveries being handled right now (what a heartbeat reports)."""
        return len(self._in_flight)

    async def run(self, *, stop: asyncio.Event, burst: bool = False) -> WorkerStats:
        self._publisher = await self._broker.publisher()
        config = self._config
        if self._result_batch_route is not None and ResultMode.BATCHED in self._result_modes:
            self._batcher = ResultBatcher(
                self._publisher,
                self._result_batch_route,
                size=min(config.result_batch_size, config.prefetch),
                max_wait=config.result_batch_ms / 1000,
            )
        if ResultMode.NONE in self._result_modes:
            self._unconfirmed_channel = await self._broker.connection.channel(
                publisher_confirms=False
            )
            self._unconfirmed = Publisher(self._unconfirmed_channel, confirmed=False)
        started: list[Resource] = []
        consumers: list[tuple[Queue, str]] = []
        try:
            for resource in self._resources:
                await resource.start()
                started.append(resource)
            channel = await self._broker.channel(prefetch=self._config.prefetch)
            try:
                for name in sorted(self._roles):
                    queue = await channel.get_queue(name, ensure=True)
                    tag = await queue.consume(self._deliver_to(self._roles[name]), no_ack=False)
                    consumers.append((queue, tag))
                log.info("%s consuming %s", self._name, ", ".join(sorted(self._roles)))
                await self._wait(stop, burst)
            finally:
                await self._shutdown(consumers)
                await within(channel.close(), "closing the channel")
                if self._unconfirmed_channel is not None:
                    await within(self._unconfirmed_channel.close(), "closing the result channel")
        finally:
            for resource in reversed(started):
                await within(resource.close(), f"closing {type(resource).__name__}")
        return self.stats

    def _deliver_to(self, role: Role) -> Callable[[IncomingMessage], Awaitable[None]]:
        salvage = role.salvage if isinstance(role, Salvaging) else None

        async def on_message(message: IncomingMessage) -> None:
            await self._on_message(message, role, salvage)

        return on_message

    async def _wait(self, stop: asyncio.Event, burst: bool) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=IDLE_CHECK_SECONDS)
            if burst and await self._drained():
                return

    async def _drained(self) -> bool:
        """Burst mode: nothing in flight, nothing delivered lately, and every queue empty."""
        if self._in_flight or time.monotonic() - self._last_delivery < BURST_IDLE_SECONDS:
            return False
        channel = await self._broker.connection.channel()
        try:
            for name in self._roles:
                queue = await channel.declare_queue(name, passive=True)
                if queue.declaration_result.message_count:
                    return False
        finally:
            await channel.close()
        return not self._in_flight

    async def _shutdown(self, consumers: list[tuple[Queue, str]]) -> None:
        """Stop taking work, let in-flight deliveries finish by the deadline, requeue the rest.

        Every step is bounded (`spectask.runtime.shutdown`): with the broker gone, cancelling
        a consumer waits for a reconnect that may never come.
        """
        deadline = time.monotonic() + self._config.shutdown_timeout
        if consumers:
            await within(
                asyncio.gather(*(queue.cancel(tag) for queue, tag in consumers)),
                "cancelling the consumers",
            )
        if self._batcher is not None:
            self._batcher.flush()  # the deliveries waiting for a batch need not wait its timer
        if not self._in_flight:
            return
        _, pending = await asyncio.wait(
            set(self._in_flight), timeout=max(0.0, deadline - time.monotonic())
        )
        if pending:
            log.warning("%d tasks still running at shutdown; requeueing them", len(pending))
            for task in pending:
                task.cancel()
            await within(asyncio.gather(*pending, return_exceptions=True), "requeueing them")
        if self._batcher is not None:
            await within(self._batcher.close(), "publishing the last result batch")

    async def _on_message(
        self, message: IncomingMessage, role: Role, salvage: Salvage | None = None
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        self._last_delivery = time.monotonic()
        self.acks.track(message)
        try:
            try:
                next_hops = await role.handle(message)
            except RequeueLater as exc:
                await self._requeue_later(message, exc.reason)
                return
            except Exception as exc:  # the last resort: no delivery stays unsettled
                await self._unhandled(message, "handling it", exc, salvage)
                return
            await self.settle(message, next_hops, salvage)
        except asyncio.CancelledError:
            await self._requeue(message)
            raise
        finally:
            self._in_flight.discard(task)
            self._last_delivery = time.monotonic()

    async def settle(
        self, message: IncomingMessage, next_hops: NextHops, salvage: Salvage | None = None
    ) -> None:
        """Publish the next hops with confirms, then ack; requeue if the broker did not take one.

        A success has one next hop (its result); a retry has two (the task to its tier and the
        `retrying` event) and a final failure too (the dead letter and the failed result); those
        are confirmed together. A publish that fails other than by the broker (a hop that
        cannot even be sent) goes to the last resort, as a failing role does (`_unhandled`).
        """
        if next_hops:
            try:
                await self._publish_hops(message, next_hops)
            except PublishError as exc:
                log.error(
                    "task %s: next hop not confirmed, requeueing: %s", message.message_id, exc
                )
                await asyncio.sleep(REQUEUE_BACKOFF_SECONDS)
                await self._requeue(message)
                return
            except Exception as exc:
                await self._unhandled(message, "publishing its next hops", exc, salvage)
                return
        await self.acks.ack(message)

    async def _publish_hops(self, message: IncomingMessage, hops: NextHops) -> None:
        """Publish `hops` until the broker confirms each; raise PublishError if it will not.

        A hop the broker refused (a nack: a quorum queue between leaders after a node went
        away, a full queue that rejects publishes; or no confirm in SPECTASK_CONFIRM_TIMEOUT)
        is published again, only it, while the delivery is held unacked, for up to
        REFUSED_HOLD_SECONDS. Requeueing instead would run the task again for every refusal
        and spend its delivery budget on the broker's trouble: on a cluster whose node
        stopped, results were refused for ~11 s and tasks that had succeeded five times were
        dead-lettered by the quorum queue's delivery limit. A hop published twice is the same
        message under the same id (the collector keeps one record per task id). Given up at
        once: a lost connection (the delivery went back to its queue with it) and an
        unroutable hop (no queue will appear by waiting).
        """
        held_since: float | None = None
        delay = REFUSED_RETRY_SECONDS
        while True:
            refused = await self._publish_once(hops)
            if not refused:
                if held_since is not None:
                    log.info(
                        "task %s: the broker took its next hops after %.1fs",
                        message.message_id,
                        time.monotonic() - held_since,
                    )
                return
            error = refused[0][1]
            if channel_closed(message) or isinstance(error, UnroutableError):
                raise error  # nothing to hold (or to wait for): requeued as before
            now = time.monotonic()
            if held_since is None:
                held_since = now
                log.warning(
                    "task %s: the broker refused a next hop (%s); publishing it again for up "
                    "to %gs, the task held (not run again)",
                    message.message_id,
                    error,
                    REFUSED_HOLD_SECONDS,
                )
            elif now - held_since + delay > REFUSED_HOLD_SECONDS:
                raise error
            elif now - held_since >= RENEW_CHANNEL_AFTER_SECONDS:
                await self._renew_publish_channel(message, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_REFUSED_RETRY_SECONDS)
            hops = tuple(hop for hop, _ in refused)

    async def _renew_publish_channel(self, message: IncomingMessage, error: Exception) -> None:
        """A hop still refused after RENEW_CHANNEL_AFTER_SECONDS: go on on a fresh channel
        (`Publisher.renew`: a channel can stay refused while the broker takes others)."""
        publisher = self._publisher
        assert publisher is not None
        try:
            renewed = await publisher.renew()
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError, TimeoutError) as exc:
            log.warning("could not open a new publish channel (%s); retrying on the old one", exc)
            return
        if renewed:
            log.warning(
                "task %s: the broker still refuses next hops on this channel (%s); "
                "publishing on a new channel",
                message.message_id,
                error,
            )

    async def _publish_once(self, hops: NextHops) -> list[tuple[OutgoingMessage, PublishError]]:
        """Publish each hop the way its result mode says; the ones the broker did not take.

        A success has one hop (its result); a retry has two (the task to its tier and the
        `retrying` event) and a final failure too (the dead letter and the failed result);
        several hops are confirmed together, every confirm in flight at once.
        """
        publisher = self._publisher
        assert publisher is not None
        if len(hops) > 1:
            outcomes = await asyncio.gather(
                *(publisher.publish(hop) for hop in hops), return_exceptions=True
            )
            refused = []
            for hop, outcome in zip(hops, outcomes, strict=True):
                if isinstance(outcome, PublishError):
                    refused.append((hop, outcome))
                elif isinstance(outcome, BaseException):
                    raise outcome
            return refused
        hop = hops[0]
        try:
            if hop.result_mode is ResultMode.CONFIRMED:
                await publisher.publish(hop)
            elif hop.result_mode is ResultMode.BATCHED and self._batcher is not None:
                await self._batcher.add(hop)
            else:
                await (self._unconfirmed or publisher).publish(hop)
        except PublishError as exc:
            return [(hop, exc)]
        return []

    async def _unhandled(
        self, message: IncomingMessage, stage: str, error: Exception, salvage: Salvage | None
    ) -> None:
        """The last resort for a delivery its role (or its hops' publish) failed on unexpectedly.

        A bug or a message nobody foresaw must not hold a prefetch slot until the worker dies
        (and then jam the next one): the role's `salvage` ends it — a dead letter that says
        why, confirmed, then the ack. A role that cannot salvage (a tap), or a salvage that
        fails too, gives the delivery back to its queue after a backoff (RequeueLater).
        """
        log.error(
            "message %s: unexpected failure %s: %s: %s",
            message.message_id,
            stage,
            type(error).__name__,
            error,
            exc_info=error,
        )
        if salvage is not None:
            try:
                hops = salvage(message, stage, error)
            except Exception:
                log.exception("message %s: could not dead-letter it either", message.message_id)
            else:
                await self.settle(message, hops)  # no salvage again: at most one more round
                return
        await self._requeue_later(message, f"{type(error).__name__}: {error}")

    async def _requeue_later(self, message: IncomingMessage, reason: str) -> None:
        """Back off (longer while failures continue), then give the delivery back to the queue."""
        delay = self._backoff.next_delay()
        log.warning(
            "message %s: handler failed (%s); requeueing it in %.3gs",
            message.message_id,
            reason,
            delay,
        )
        await asyncio.sleep(delay)
        await self._requeue(message)

    async def _requeue(self, message: IncomingMessage) -> None:
        self.stats.requeued += 1
        self.acks.forget(message)
        # If the channel is already gone, the broker requeues unacked deliveries itself.
        with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
            await message.nack(requeue=True)


def delivery_context(
    message: IncomingMessage,
    route: ReceiveRoute,
    worker_id: str,
    message_type: str,
    task_type: str,
    signals: Signals = NO_SIGNALS,
) -> TaskContext:
    """What a handler may know about the delivery it is running."""
    headers = message.headers or {}
    return TaskContext(
        task_id=message.message_id or "",
        message_type=message_type,
        task_type=task_type,
        operation=route.operation,
        attempt=attempt_of(headers),
        worker_id=worker_id,
        routing_key=message.routing_key or "",
        redelivered=bool(message.redelivered),
        submitted_at=submitted_at(headers, message.timestamp),
        priority=message.priority or 0,
        headers=headers,
        digest=task_digest(message.type or message_type, message.body),
        signals=signals,
    )


def submitted_at(headers: Mapping[str, Any], timestamp: datetime | None) -> datetime | None:
    """The exact submission time from its header, else the whole-second AMQP timestamp."""
    value = headers.get(SUBMITTED_AT_HEADER)
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if timestamp is not None:
        return timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
    return None
