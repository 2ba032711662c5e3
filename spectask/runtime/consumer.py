"""The consumer loop: decode, run the handler, publish the next hop, then ack — in that order.

This is the ONE place that settles deliveries. A delivery is acked only after its next hops
are confirmed by the broker; if a publish fails the delivery is requeued. A crash in between
therefore gives a duplicate, never a loss. The next hops of a delivery:
- success: its result;
- a failed attempt with attempts left (any exception but PermanentTaskError, or the time
  limit): the task itself, to a retry tier (`spectask.runtime.retry`), with no result;
- the last failed attempt, or PermanentTaskError: a dead letter and a failed result that
  names the dead letter's reason (so either one tells the store the task is DEAD);
- input that cannot run at all (undecodable, unknown type, ...): a dead letter;
- a cancelled task (skipped before it ran, or stopped cooperatively while running): a
  cancelled result and a `cancelled` event; never a retry or a dead letter.
A failed attempt that is retried also publishes a `retrying` event (when the service has an
event route), confirmed together with the tier publish: it decides what the task is doing.
`started` (for tasks still running after SPECTASK_STARTED_AFTER) and `progress` events are
transient and unconfirmed (`spectask.runtime.events`).
A tap route (`ReceiveRoute.is_tap`) has no next hop: it records, then acks, and never
dead-letters (its queue holds copies the broker made of other traffic).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiormq
from pydantic import ValidationError

from spectask.errors import PermanentTaskError, PublishError, TaskCancelledError
from spectask.protocol.names import ATTEMPT_HEADER, SUBMITTED_AT_HEADER
from spectask.runtime.broker import Broker
from spectask.runtime.cancellation import CancellationWatch, CancelRegistry
from spectask.runtime.context import NO_SIGNALS, Signals, TaskContext
from spectask.runtime.control import TaskSignals
from spectask.runtime.deadletter import DeadReason, build_dead_letter
from spectask.runtime.events import LiveEvents, event_document
from spectask.runtime.execution import Handler, HandlerRunner, TaskTimeoutError
from spectask.runtime.publisher import OutgoingMessage, Publisher
from spectask.runtime.retry import choose_tier, failure_headers
from spectask.runtime.topology import ReceiveRoute, ReplySpec, RetryTier, SendRoute
from spectask.runtime.transport import IncomingMessage, Queue

log = logging.getLogger("spectask.worker")

IDLE_CHECK_SECONDS = 0.2
BURST_IDLE_SECONDS = 0.3
REQUEUE_BACKOFF_SECONDS = 1.0
MAX_REQUEUE_BACKOFF = 30.0
TRACEBACK_FRAMES = 8

NextHops = tuple[OutgoingMessage, ...]


@dataclass
class WorkerStats:
    """What one worker run did; `by_type` counts processed tasks per message type.

    `processed` counts attempts; `retried` the failed ones that went to a retry tier, `failed`
    the tasks that failed for good (each of those is also in `dead_lettered`); `cancelled`
    the ones skipped or stopped because they were cancelled.
    """

    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    dead_lettered: int = 0
    requeued: int = 0
    by_type: Counter[str] = field(default_factory=Counter)


class WorkerRuntime:
    """Consumes the queues of the given receive routes until stopped (or idle, in burst mode)."""

    def __init__(
        self,
        broker: Broker,
        *,
        worker_id: str,
        routes: Sequence[ReceiveRoute],
        handlers: Mapping[str, Handler],
        result_route: SendRoute | None,
        dead_letter_route: SendRoute,
        event_route: SendRoute | None = None,
        cancel_route: ReceiveRoute | None = None,
    ) -> None:
        self._broker = broker
        self._config = broker.config
        self._worker_id = worker_id
        self._handlers = handlers
        self._result_route = result_route
        self._dead_letter_route = dead_letter_route
        self._event_route = event_route
        self._by_queue: dict[str, dict[str, ReceiveRoute]] = {}
        self._taps: dict[str, ReceiveRoute] = {}
        for route in routes:
            self._by_queue.setdefault(route.queue, {})[route.message_type] = route
            if route.is_tap:
                self._taps[route.queue] = route
        self._runner = HandlerRunner(
            self._config.concurrency,
            self._config.isolation,
            progress_interval=self._config.progress_interval,
        )
        self._cancel_route = cancel_route
        self._cancels = CancelRegistry()
        self._live: LiveEvents | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._last_delivery = time.monotonic()
        self._publisher: Publisher | None = None
        self._transient_failures = 0
        self.stats = WorkerStats()

    async def run(self, *, stop: asyncio.Event, burst: bool = False) -> WorkerStats:
        self._loop = asyncio.get_running_loop()
        self._publisher = await self._broker.publisher()
        if self._event_route is not None and self._result_route is not None:
            self._live = await LiveEvents.open(
                self._broker.connection, self._event_route, self._worker_id
            )
        watch: CancellationWatch | None = None
        if self._cancel_route is not None:
            watch = CancellationWatch(
                self._broker, self._cancel_route, self._cancels, self._worker_id
            )
            await watch.start(self._config.cancel_sync_timeout)
        channel = await self._broker.channel(prefetch=self._config.prefetch)
        consumers: list[tuple[Queue, str]] = []
        swept = asyncio.Event()
        sweeper = (
            asyncio.create_task(self._announce_long_runners(swept))
            if self._live is not None and self._config.started_after > 0
            else None
        )
        try:
            for name in sorted(self._by_queue):
                queue = await channel.get_queue(name, ensure=True)
                tag = await queue.consume(self._deliver_to(name), no_ack=False)
                consumers.append((queue, tag))
            log.info("worker %s consuming %s", self._worker_id, ", ".join(sorted(self._by_queue)))
            await self._wait(stop, burst)
        finally:
            await self._shutdown(consumers)
            swept.set()
            if sweeper is not None:
                await sweeper
            await channel.close()
            self._runner.close()
            if watch is not None:
                await watch.close()
            if self._live is not None:
                await self._live.close()
        return self.stats

    def _deliver_to(self, queue: str) -> Any:
        async def on_message(message: IncomingMessage) -> None:
            await self._on_message(message, queue)

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
            for name in self._by_queue:
                queue = await channel.declare_queue(name, passive=True)
                if queue.declaration_result.message_count:
                    return False
        finally:
            await channel.close()
        return not self._in_flight

    async def _shutdown(self, consumers: list[tuple[Queue, str]]) -> None:
        """Stop taking work, let in-flight tasks finish up to the deadline, requeue the rest."""
        for queue, tag in consumers:
            try:
                await queue.cancel(tag)
            except (aiormq.exceptions.AMQPError, RuntimeError) as exc:
                log.warning("could not cancel consumer on %s: %s", queue.name, exc)
        if not self._in_flight:
            return
        _, pending = await asyncio.wait(set(self._in_flight), timeout=self._config.shutdown_timeout)
        if pending:
            log.warning("%d tasks still running at shutdown; requeueing them", len(pending))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _on_message(self, message: IncomingMessage, queue: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        self._last_delivery = time.monotonic()
        try:
            try:
                next_hops = await self._decide(message, queue)
            except _RequeueLater as exc:
                await self._requeue_later(message, exc.reason)
                return
            await self._settle(message, next_hops)
        except asyncio.CancelledError:
            await self._requeue(message)
            raise
        finally:
            self._in_flight.discard(task)
            self._last_delivery = time.monotonic()

    async def _settle(self, message: IncomingMessage, next_hops: NextHops) -> None:
        """Publish the next hops with confirms, then ack; requeue if the broker did not take one.

        A success has one next hop (its result); a retry has two (the task to its tier and the
        `retrying` event) and a final failure too (the dead letter and the failed result); those
        are confirmed together.
        """
        if next_hops:
            assert self._publisher is not None
            try:
                if len(next_hops) == 1:
                    await self._publisher.publish(next_hops[0])
                else:
                    await _publish_all(self._publisher, next_hops)
            except PublishError as exc:
                log.error(
                    "task %s: next hop not confirmed, requeueing: %s", message.message_id, exc
                )
                await asyncio.sleep(REQUEUE_BACKOFF_SECONDS)
                await self._requeue(message)
                return
        try:
            await message.ack()
        except (aiormq.exceptions.AMQPError, RuntimeError) as exc:
            log.warning(
                "task %s: ack lost (%s); the broker will redeliver it", message.message_id, exc
            )

    async def _requeue_later(self, message: IncomingMessage, reason: str) -> None:
        """Back off (longer while failures continue), then give the delivery back to the queue."""
        self._transient_failures += 1
        delay = min(
            REQUEUE_BACKOFF_SECONDS * 2 ** (self._transient_failures - 1), MAX_REQUEUE_BACKOFF
        )
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
        # If the channel is already gone, the broker requeues unacked deliveries itself.
        with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
            await message.nack(requeue=True)

    async def _decide(self, message: IncomingMessage, queue: str) -> NextHops:
        """Decode and run one delivery; return the messages that must be confirmed before ack."""
        tap = self._taps.get(queue)
        if tap is not None:
            return await self._tap(message, tap)
        routes = self._by_queue[queue]
        size = len(message.body)
        if size > self._config.max_message_bytes:
            return self._dead(
                message,
                queue,
                DeadReason.TOO_LARGE,
                f"body is {size} bytes; the limit is {self._config.max_message_bytes} "
                "(SPECTASK_MAX_MESSAGE_BYTES)",
            )
        route = routes.get(message.type or "")
        if route is None:
            return self._dead(
                message,
                queue,
                DeadReason.UNKNOWN_TYPE,
                f"message type {message.type!r} is not taken from {queue}; "
                f"expected one of {sorted(routes)}",
            )
        if message.content_type not in (None, "application/json"):
            return self._dead(
                message,
                queue,
                DeadReason.UNDECODABLE,
                f"content type {message.content_type!r}; expected application/json",
            )
        if not message.message_id:
            return self._dead(
                message,
                queue,
                DeadReason.SCHEMA_VIOLATION,
                "the message has no message_id (task id)",
            )
        try:
            payload = route.model.model_validate_json(message.body)
        except ValidationError as exc:
            undecodable = any(error["type"] == "json_invalid" for error in exc.errors())
            reason = DeadReason.UNDECODABLE if undecodable else DeadReason.SCHEMA_VIOLATION
            return self._dead(message, queue, reason, _summarize(exc))
        return await self._execute(message, route, payload)

    def _context(
        self,
        message: IncomingMessage,
        route: ReceiveRoute,
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
            attempt=_int_header(headers, ATTEMPT_HEADER, 1),
            worker_id=self._worker_id,
            routing_key=message.routing_key or "",
            redelivered=bool(message.redelivered),
            submitted_at=_submitted_at(headers, message.timestamp),
            priority=message.priority or 0,
            headers=headers,
            signals=signals,
        )

    async def _tap(self, message: IncomingMessage, route: ReceiveRoute) -> NextHops:
        """Hand any message to a tap's handler, body undecoded; requeue it if the handler fails.

        A PermanentTaskError drops the message (logged): a tap must never dead-letter, since
        its queue may be bound to the dead-letter exchange itself.
        """
        message_type = message.type or ""
        context = self._context(message, route, message_type, message_type.partition(".")[0])
        payload = route.model.model_construct(root=message.body)
        try:
            await self._runner.run(
                self._handlers[route.operation], payload, context, route.policy.time_limit
            )
        except PermanentTaskError as exc:
            log.warning("dropping %s from %s: %s", message.message_id, route.queue, exc)
            return ()
        except Exception as exc:
            raise _RequeueLater(f"{type(exc).__name__}: {exc}") from exc
        self.stats.processed += 1
        self._transient_failures = 0
        return ()

    async def _execute(
        self, message: IncomingMessage, route: ReceiveRoute, payload: Any
    ) -> NextHops:
        started_at = datetime.now(UTC)
        task_id = message.message_id or ""
        request = self._cancels.request(task_id)
        if request is not None:
            context = self._context(message, route, route.message_type, route.task_type)
            log.info("task %s (%s) skipped: %s", task_id, route.message_type, request.describe())
            return self._cancelled(context, None, f"skipped before it ran: {request.describe()}")
        assert self._loop is not None
        signals = TaskSignals(
            self._on_progress,
            interval=self._config.progress_interval,
            loop=self._loop,
            started_at=started_at,
        )
        context = self._context(message, route, route.message_type, route.task_type, signals)
        signals.context = context
        failure: Failure | None = None
        self._cancels.start(task_id, signals)
        if self._live is not None and self._config.started_after == 0:
            self._announce(signals)
        try:
            result = await self._runner.run(
                self._handlers[route.operation], payload, context, route.policy.time_limit
            )
        except TaskCancelledError as exc:
            failure = Failure(DeadReason.PERMANENT, _error_info(exc), cancelled=True)
        except TaskTimeoutError as exc:
            failure = Failure(DeadReason.TIMEOUT, {"type": "timeout", "message": str(exc)})
        except PermanentTaskError as exc:
            failure = Failure(DeadReason.PERMANENT, _error_info(exc))
        except Exception as exc:
            failure = Failure(DeadReason.ATTEMPTS_EXHAUSTED, _error_info(exc))
        finally:
            self._cancels.finish(task_id, signals)
        self.stats.processed += 1
        self.stats.by_type[route.message_type] += 1
        if failure is not None and (failure.cancelled or signals.cancelled()):
            # A failure after a cancellation is its consequence: cancelled, never retried.
            request = self._cancels.request(task_id)
            why = request.describe() if request is not None else "cancelled"
            return self._cancelled(context, started_at, f"stopped while running: {why}")
        reply: NextHops = ()
        if failure is None and route.reply is not None:
            try:
                reply = self._reply(message, route.reply, result)
            except ValidationError as exc:
                error = {"type": "InvalidReply", "message": _summarize(exc)}
                failure = Failure(DeadReason.PERMANENT, error)
        if failure is not None:
            if (
                self._result_route is None
                and failure.reason is not DeadReason.PERMANENT
                and not route.policy.retry.tiers
            ):
                # No result to report and no retry tier (a collector, say): the failure is
                # taken as transient (its store is down?), so the message waits in its queue.
                raise _RequeueLater(f"{failure.error['type']}: {failure.error['message']}")
            return self._failed(message, route, context, started_at, failure)
        self._transient_failures = 0
        self.stats.succeeded += 1
        if reply or route.reply is not None:
            return reply
        if self._result_route is None:
            return ()
        return (self._result(context, started_at, result, None),)

    async def _announce_long_runners(self, stop: asyncio.Event) -> None:
        """Send `started` for attempts running longer than SPECTASK_STARTED_AFTER.

        A task that finishes sooner never sends one: its result follows at once and says when
        it started, so the success path of short tasks keeps a single publish. One sweep of
        the running attempts every half period costs less than a timer per task.
        """
        assert self._loop is not None
        after = self._config.started_after
        period = max(0.02, after / 2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=period)
            now = self._loop.time()
            for signals in self._cancels.running():
                if not signals.announced and now - signals.since >= after:
                    self._announce(signals)

    def _announce(self, signals: TaskSignals) -> None:
        if self._live is not None and signals.context is not None and not signals.announced:
            signals.announced = True
            self._live.started(signals.context, signals.started_at or datetime.now(UTC))

    def _on_progress(self, context: TaskContext, percent: float, message: str | None) -> None:
        """A handler's progress report (on the loop): a progress event."""
        if self._live is not None:
            self._live.progress(context, percent, message)

    def _cancelled(self, context: TaskContext, started_at: datetime | None, why: str) -> NextHops:
        """A cancelled result and a `cancelled` event, confirmed together, then the ack."""
        self.stats.cancelled += 1
        error = {"type": "cancelled", "message": why}
        hops = self._event(context, "cancelled", why)
        if self._result_route is not None:
            hops = (*hops, self._result(context, started_at, None, error, status="cancelled"))
        return hops

    def _reply(
        self, message: IncomingMessage, reply: ReplySpec, result: dict[str, Any] | None
    ) -> NextHops:
        """The handler's reply, to the request's `reply_to` with its correlation id.

        Not mandatory: a caller that gave up is gone, and its reply is dropped rather than
        keeping the request in the queue forever.
        """
        model = reply.model.model_validate(result)
        if not message.reply_to:
            log.warning("request %s has no reply_to; nobody to answer", message.message_id)
            return ()
        return (
            OutgoingMessage(
                exchange="",
                routing_key=message.reply_to,
                body=model.model_dump_json(by_alias=True, exclude_none=True).encode(),
                message_id=message.message_id or "",
                message_type=reply.message_type,
                correlation_id=message.correlation_id,
                reply=True,
            ),
        )

    def _failed(
        self,
        message: IncomingMessage,
        route: ReceiveRoute,
        context: TaskContext,
        started_at: datetime,
        failure: Failure,
    ) -> NextHops:
        """A failed attempt: wait in a retry tier if attempts are left, else dead-letter it.

        `x-spectask-attempt` only grows here, when a task goes to a tier: a delivery the broker
        redelivers after a worker crash keeps its number, so it is not a new attempt.
        """
        error = failure.error
        summary = f"{error['type']}: {error['message']}"
        retry = route.policy.retry
        attempt = context.attempt
        reason = failure.reason
        if reason is not DeadReason.PERMANENT and attempt < retry.max_attempts:
            tier = choose_tier(retry, attempt)
            if tier is not None:
                self.stats.retried += 1
                log.info(
                    "task %s (%s) attempt %d failed, retrying in %.3gs: %s",
                    context.task_id,
                    route.message_type,
                    attempt,
                    tier.delay_ms / 1000,
                    summary,
                )
                retrying = self._event(context, "retrying", summary)
                return (self._retry(message, tier, attempt + 1, summary), *retrying)
            reason = DeadReason.EXCEPTION  # the policy asks for retries but has no tiers
        self.stats.failed += 1
        log.warning(
            "task %s (%s) failed for good after %d attempt(s): %s",
            context.task_id,
            route.message_type,
            attempt,
            summary,
        )
        dead = self._dead(
            message,
            route.queue,
            reason,
            summary,
            error.get("traceback", ""),
            attempts=attempt,
        )
        if self._result_route is None:
            return dead
        return (*dead, self._result(context, started_at, None, error, dead_reason=reason))

    def _retry(
        self, message: IncomingMessage, tier: RetryTier, attempt: int, error: str
    ) -> OutgoingMessage:
        """The task, unchanged but for its headers, to the tier's exchange with its own key."""
        headers = failure_headers(message.headers or {}, error=error, now=datetime.now(UTC))
        headers[ATTEMPT_HEADER] = attempt
        return OutgoingMessage(
            exchange=tier.exchange,
            routing_key=message.routing_key or "",
            body=message.body,
            message_id=message.message_id or "",
            message_type=message.type or "",
            priority=message.priority,
            headers=headers,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            timestamp=message.timestamp,
            content_type=message.content_type or "application/json",
        )

    def _event(self, context: TaskContext, event: str, message: str) -> NextHops:
        """A lifecycle event about the context's attempt, routed `<task_type>.<event>`."""
        route = self._event_route
        if route is None:
            return ()
        document = event_document(context, self._worker_id, event, message=message)
        return (_validated(route, document, context.task_id, f"{context.task_type}.{event}"),)

    def _result(
        self,
        context: TaskContext,
        started_at: datetime | None,
        result: dict[str, Any] | None,
        error: Mapping[str, str] | None,
        *,
        status: str | None = None,
        dead_reason: DeadReason | None = None,
    ) -> OutgoingMessage:
        route = self._result_route
        assert route is not None
        document: dict[str, Any] = {
            "task_id": context.task_id,
            "message_type": context.message_type,
            "status": status or ("failed" if error else "succeeded"),
            "worker_id": self._worker_id,
            "attempt": context.attempt,
            "submitted_at": context.submitted_at,
            "started_at": started_at,
            "finished_at": datetime.now(UTC),
            "result": result,
            "error": error,
        }
        # The store records DEAD from this or the dead letter; a spec older than the field
        # gets the result without it (FAILED until the dead letter is stored, as before).
        if dead_reason is not None and "dead_reason" in route.model.model_fields:
            document["dead_reason"] = dead_reason.value
        return _validated(route, document, context.task_id, route.routing_key)

    def _dead(
        self,
        message: IncomingMessage,
        queue: str,
        reason: DeadReason,
        error: str,
        trace: str = "",
        *,
        attempts: int | None = None,
    ) -> NextHops:
        self.stats.dead_lettered += 1
        log.warning("dead-lettering %s from %s: %s: %s", message.message_id, queue, reason, error)
        headers = message.headers or {}
        dead = build_dead_letter(
            self._dead_letter_route,
            body=message.body,
            message_id=message.message_id or "",
            message_type=message.type or "",
            original_headers=headers,
            reason=reason,
            error=error,
            origin_queue=queue,
            origin_exchange=message.exchange or "",
            origin_routing_key=message.routing_key or "",
            attempts=attempts if attempts is not None else _int_header(headers, ATTEMPT_HEADER, 1),
            traceback=trace,
            content_type=message.content_type,
            priority=message.priority,
        )
        return (dead,)


class _RequeueLater(Exception):
    """The delivery goes back to its queue after a backoff (no next hop can take it now)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an attempt failed: the dead-letter reason if it is the last, and the error info."""

    reason: DeadReason
    error: Mapping[str, str]
    cancelled: bool = False


def _error_info(exc: BaseException) -> dict[str, str]:
    """The spec's ErrorInfo of an exception raised by a handler, with its innermost frames."""
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc, limit=-TRACEBACK_FRAMES)),
    }


async def _publish_all(publisher: Publisher, messages: Sequence[OutgoingMessage]) -> None:
    """Publish with every confirm in flight at once; raise the first failure once all are done."""
    outcomes = await asyncio.gather(
        *(publisher.publish(message) for message in messages), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def _validated(
    route: SendRoute, document: Mapping[str, Any], message_id: str, routing_key: str
) -> OutgoingMessage:
    """A message the runtime builds itself, checked against its schema in the spec."""
    body = route.model.model_validate(document).model_dump_json(by_alias=True, exclude_none=True)
    return OutgoingMessage(
        exchange=route.exchange,
        routing_key=routing_key,
        body=body.encode(),
        message_id=message_id,
        message_type=route.message_type,
    )


def _summarize(exc: ValidationError, limit: int = 5) -> str:
    """A short, readable list of schema errors (location: message)."""
    parts = []
    for error in exc.errors()[:limit]:
        where = ".".join(str(item) for item in error["loc"]) or "(body)"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _int_header(headers: Mapping[str, Any], name: str, default: int) -> int:
    value = headers.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _submitted_at(headers: Mapping[str, Any], timestamp: datetime | None) -> datetime | None:
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
