"""The task role: decode and validate a delivery, run its handler with its time limit, end it.

It serves every queue whose routes are TASK or REQUEST routes (`ReceiveRoute.kind`): both
are decoded, validated, run and failed the same way (time limit, retries, dead letters,
cancellation). They differ only in what a success is, which each route is given once at start
(`Served.finish`): a TASK's is its result (`spectask.runtime.outcomes`), a REQUEST's the
handler's reply to `reply_to` (`spectask.runtime.responder`). That choice is per route, not per
queue, because nothing stops a spec from putting both kinds of operation on one queue.

Input that cannot run at all — too large, an unknown message type, a content type that is not
JSON (or none), no task id (a request needs none), a task published through the default
exchange straight to its queue (the collector's copy never saw it), a header that breaks the
protocol's TaskHeaders (`spectask.runtime.headers`: an attempt that is not an integer in
range, ...), a body that is
not valid JSON or breaks the schema (strictly: no bool for a number, no number for a string) —
is dead-lettered here, before any handler runs; a REQUEST route's is refused instead, with a
reply that says why (`spectask.runtime.responder`). Every other ending is an outcome
(`spectask.runtime.outcomes`); should building one fail, the delivery loop's last resort calls
`TaskRole.salvage`, which dead-letters the delivery (`exception`) rather than leave it unacked.

`Attempts` is what a service's task queues share: the handler runner, the running attempts
(so a cancellation reaches them: `spectask.runtime.cancellation`) and their transient
`started`/`progress` events (`spectask.runtime.events`).

The per-task path is kept to what it always was: one dict lookup for the route, one
validation, one TaskSignals and one TaskContext, one await into the runner (whose time limit
is a dict entry the runner's one sweep reads, no timer or extra task), then the outcome's
hops; the handler, its finish and the progress sink are bound once per route or service, not
looked up per task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from spectask.errors import PermanentTaskError, TaskCancelledError
from spectask.protocol.names import PROTOCOL_TASK_TYPE as OWN
from spectask.runtime.broker import Broker
from spectask.runtime.cancellation import CancellationWatch, CancelRegistry
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.consumer import Backoff, NextHops, WorkerStats, delivery_context
from spectask.runtime.context import TaskContext
from spectask.runtime.control import TaskSignals
from spectask.runtime.deadletter import DeadReason
from spectask.runtime.events import LiveEvents
from spectask.runtime.execution import Handler, HandlerRunner, TaskTimeoutError
from spectask.runtime.headers import TASK_HEADERS
from spectask.runtime.outcomes import Failure, Outcomes, error_info, summarize
from spectask.runtime.repeats import RepeatCheck
from spectask.runtime.topology import ReceiveRoute, SendRoute
from spectask.runtime.transport import IncomingMessage

log = logging.getLogger(__name__)

JSON = "application/json"

# What a success of a route is: (delivery, route, context, started_at, result) -> next hops.
Finish = Callable[
    [IncomingMessage, ReceiveRoute, TaskContext, datetime, dict[str, Any] | None], NextHops
]
# How a REQUEST route refuses a delivery that cannot run: (delivery, queue, reason, error).
Refuse = Callable[[IncomingMessage, str, DeadReason, str], NextHops]


class Attempts:
    """The handler runner, the running attempts and their live events, shared by task queues.

    A Resource of the delivery loop: `start` opens the live events (when the service has an
    event route and publishes results), reads the cancellation stream up to now (when it has a
    cancellation route) and starts the sweep that announces long runners; `close` undoes that
    and closes the runner's pool.
    """

    def __init__(
        self,
        broker: Broker,
        runner: HandlerRunner,
        *,
        worker_id: str,
        live_route: SendRoute | None,
        cancel_route: ReceiveRoute | None,
    ) -> None:
        self._broker = broker
        self._config: RuntimeConfig = broker.config
        self.runner = runner
        self.cancels = CancelRegistry()
        self._worker_id = worker_id
        self._live_route = live_route
        self._cancel_route = cancel_route
        self._live: LiveEvents | None = None
        self._watch: CancellationWatch | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._swept = asyncio.Event()
        # Set once live events are open and SPECTASK_STARTED_AFTER is 0: every attempt says so.
        self.announce_at_start = False

    async def start(self) -> None:
        if self._live_route is not None:
            self._live = await LiveEvents.open(
                self._broker.connection, self._live_route, self._worker_id
            )
        if self._cancel_route is not None:
            self._watch = CancellationWatch(
                self._broker, self._cancel_route, self.cancels, self._worker_id
            )
            await self._watch.start(self._config.cancel_sync_timeout)
        if self._live is not None:
            if self._config.started_after > 0:
                self._sweeper = asyncio.create_task(self._announce_long_runners())
            else:
                self.announce_at_start = True

    async def close(self) -> None:
        self._swept.set()
        if self._sweeper is not None:
            await self._sweeper
        self.runner.close()
        if self._watch is not None:
            await self._watch.close()
        if self._live is not None:
            await self._live.close()

    async def _announce_long_runners(self) -> None:
        """Send `started` for attempts running longer than SPECTASK_STARTED_AFTER.

        A task that finishes sooner never sends one: its result follows at once and says when
        it started, so the success path of short tasks keeps a single publish. One sweep of
        the running attempts every half period costs less than a timer per task.
        """
        loop = asyncio.get_running_loop()
        after = self._config.started_after
        period = max(0.02, after / 2)
        while not self._swept.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._swept.wait(), timeout=period)
            now = loop.time()
            for signals in self.cancels.running():
                if not signals.announced and now - signals.since >= after:
                    self.announce(signals)

    def announce(self, signals: TaskSignals) -> None:
        if self._live is not None and signals.context is not None and not signals.announced:
            signals.announced = True
            self._live.started(signals.context, signals.started_at or datetime.now(UTC))

    def progress(self, context: TaskContext, percent: float, message: str | None) -> None:
        """A handler's progress report (on the loop): a progress event."""
        if self._live is not None:
            self._live.progress(context, percent, message)


@dataclass(frozen=True, slots=True)
class Served:
    """One route of a task queue, with its handler and what its success is, bound at start."""

    route: ReceiveRoute
    handler: Handler
    finish: Finish
    refuse: Refuse | None = None  # a REQUEST route's; a TASK's refusal is its dead letter


class TaskRole:
    """Serves one queue of TASK and REQUEST routes; see the module docstring."""

    def __init__(
        self,
        queue: str,
        *,
        attempts: Attempts,
        outcomes: Outcomes,
        stats: WorkerStats,
        backoff: Backoff,
        worker_id: str,
        config: RuntimeConfig,
        repeats: RepeatCheck | None = None,
    ) -> None:
        self._queue = queue
        self._repeats = repeats
        self._attempts = attempts
        self._runner = attempts.runner
        self._cancels = attempts.cancels
        self._progress = attempts.progress
        self._outcomes = outcomes
        self._stats = stats
        self._backoff = backoff
        self._worker_id = worker_id
        self._max_bytes = config.max_message_bytes
        self._progress_interval = config.progress_interval
        self._loop = asyncio.get_running_loop()
        self._routes: dict[str, Served] = {}
        # Who refuses a delivery of no known type: the requests' refusal when the queue serves
        # requests only (a caller that got the type wrong hears so), else a dead letter.
        self._refuse_unrouted: Refuse | None = None

    def serve(
        self,
        route: ReceiveRoute,
        handler: Handler,
        finish: Finish | None = None,
        refuse: Refuse | None = None,
    ) -> None:
        """Take `route`'s messages; a success ends in `finish` (default: the task's result),
        a delivery that cannot run in `refuse` (default: a dead letter)."""
        requests_only = all(served.refuse is not None for served in self._routes.values())
        self._routes[route.message_type] = Served(route, handler, finish or self.succeeded, refuse)
        self._refuse_unrouted = refuse if requests_only else None

    def _reject(
        self, message: IncomingMessage, served: Served | None, reason: DeadReason, error: str
    ) -> NextHops:
        """A delivery that cannot run: a request's refusal, or a task's dead letter."""
        refuse = self._refuse_unrouted if served is None else served.refuse
        if refuse is not None:
            return refuse(message, self._queue, reason, error)
        return self._outcomes.dead(message, self._queue, reason, error)

    async def handle(self, message: IncomingMessage) -> NextHops:
        """Decode and run one delivery; return the messages that must be confirmed before ack."""
        queue = self._queue
        routes = self._routes
        size = len(message.body)
        served = routes.get(message.type or "")
        if size > self._max_bytes:
            return self._reject(
                message,
                served,
                DeadReason.TOO_LARGE,
                f"body is {size} bytes; the limit is {self._max_bytes} "
                "(SPECTASK_MAX_MESSAGE_BYTES)",
            )
        if served is None:
            return self._reject(
                message,
                served,
                DeadReason.UNKNOWN_TYPE,
                f"message type {message.type!r} is not taken from {queue}; "
                f"expected one of {sorted(routes)}",
            )
        if message.content_type != JSON:
            return self._reject(
                message,
                served,
                DeadReason.UNDECODABLE,
                f"content type {message.content_type!r}; expected {JSON}"
                if message.content_type
                else f"the message has no content type; expected {JSON}",
            )
        if not message.message_id and served.refuse is None:  # a request needs no id
            return self._reject(
                message,
                served,
                DeadReason.SCHEMA_VIOLATION,
                "the message has no message_id (task id)",
            )
        if not message.exchange and served.refuse is None and served.route.task_type != OWN:
            return self._reject(
                message,
                served,
                DeadReason.DEFAULT_EXCHANGE,
                f"published through the default exchange straight to {queue}; "
                "submit tasks to their exchange (the submit operation's cc[0] as routing key)",
            )
        invalid = TASK_HEADERS.error(message.headers)
        if invalid is not None:
            return self._reject(message, served, DeadReason.INVALID_HEADERS, invalid)
        try:
            # Strict, as JSON Schema reads JSON: a bool is no number, a number no string.
            payload = served.route.model.model_validate_json(message.body, strict=True)
        except ValidationError as exc:
            undecodable = any(error["type"] == "json_invalid" for error in exc.errors())
            reason = DeadReason.UNDECODABLE if undecodable else DeadReason.SCHEMA_VIOLATION
            return self._reject(message, served, reason, summarize(exc))
        return await self._execute(message, served, payload)

    async def _execute(self, message: IncomingMessage, served: Served, payload: Any) -> NextHops:
        route = served.route
        started_at = datetime.now(UTC)
        task_id = message.message_id or ""
        cancels = self._cancels
        request = cancels.request(task_id)
        if request is not None:
            context = delivery_context(
                message, route, self._worker_id, route.message_type, route.task_type
            )
            log.info("task %s (%s) skipped: %s", task_id, route.message_type, request.describe())
            return self._outcomes.cancelled(
                context, None, f"skipped before it ran: {request.describe()}"
            )
        repeat = message.redelivered and route.message_type in route.policy.side_effects
        if repeat and await self._already_final(task_id, route):
            return ()
        signals = TaskSignals(
            self._progress,
            interval=self._progress_interval,
            loop=self._loop,
            started_at=started_at,
        )
        context = delivery_context(
            message, route, self._worker_id, route.message_type, route.task_type, signals
        )
        signals.context = context
        failure: Failure | None = None
        cancels.start(task_id, signals)
        if self._attempts.announce_at_start:
            self._attempts.announce(signals)
        try:
            result = await self._runner.run(
                served.handler, payload, context, route.policy.time_limit
            )
        except TaskCancelledError as exc:
            failure = Failure(DeadReason.PERMANENT, error_info(exc), cancelled=True)
        except TaskTimeoutError as exc:
            failure = Failure(DeadReason.TIMEOUT, {"type": "timeout", "message": str(exc)})
        except PermanentTaskError as exc:
            failure = Failure(DeadReason.PERMANENT, error_info(exc))
        except Exception as exc:
            failure = Failure(DeadReason.ATTEMPTS_EXHAUSTED, error_info(exc))
        finally:
            cancels.finish(task_id, signals)
        stats = self._stats
        stats.processed += 1
        stats.by_type[route.message_type] += 1
        if failure is None:
            return served.finish(message, route, context, started_at, result)
        if failure.cancelled or signals.cancelled():
            # A failure after a cancellation is its consequence: cancelled, never retried.
            request = cancels.request(task_id)
            why = request.describe() if request is not None else "cancelled"
            return self._outcomes.cancelled(context, started_at, f"stopped while running: {why}")
        return self._outcomes.failed(message, route, context, started_at, failure)

    async def _already_final(self, task_id: str, route: ReceiveRoute) -> bool:
        """Whether a redelivered side-effecting task is final in the store: then it is acked
        without running again (`spectask.runtime.repeats`); RequeueLater if no one answers."""
        assert self._repeats is not None, "a side-effecting route needs a RepeatCheck"
        state = await self._repeats.final_state(task_id, route.message_type)
        if state is None:
            return False
        self._stats.skipped_repeats += 1
        log.warning(
            "task %s (%s) redelivered but already %s in the task store: not run again "
            "(sideEffects policy); acked",
            task_id,
            route.message_type,
            state.value,
        )
        return True

    def salvage(self, message: IncomingMessage, stage: str, error: Exception) -> NextHops:
        """The delivery loop's last resort: a dead letter (`exception`) naming what failed."""
        info = error_info(error)
        return self._outcomes.dead(
            message,
            self._queue,
            DeadReason.EXCEPTION,
            f"spectask failed {stage}: {info['type']}: {info['message']}",
            info["traceback"],
        )

    def succeeded(
        self,
        message: IncomingMessage,
        route: ReceiveRoute,
        context: TaskContext,
        started_at: datetime,
        result: dict[str, Any] | None,
    ) -> NextHops:
        """A TASK's success: its result (where the service publishes results)."""
        # may raise: not a success
        hops = self._outcomes.succeeded(context, started_at, result, route.policy.result_mode)
        self._backoff.failures = 0
        self._stats.succeeded += 1
        return hops
