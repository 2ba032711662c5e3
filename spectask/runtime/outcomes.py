"""The outcomes of a task: the next hops that end one attempt, built here and nowhere else.

The delivery loop confirms these before it acks (`spectask.runtime.consumer`):
- success: its result;
- a failed attempt with attempts left (any exception but PermanentTaskError, or the time
  limit): the task itself, to a retry tier (`spectask.runtime.retry`), with no result, and a
  `retrying` event, confirmed together with it: it decides what the task is doing;
- the last failed attempt, or PermanentTaskError: a dead letter and a failed result that
  names the dead letter's reason (so either one tells the store the task is DEAD);
- input that cannot run at all (undecodable, unknown type, ...): a dead letter;
- a cancelled task (skipped before it ran, or stopped cooperatively while running): a
  cancelled result and a `cancelled` event; never a retry or a dead letter.

What a service can report is fixed by its send routes, so it is chosen once, at start, by
picking the class (`outcomes_for`), not checked per task:
- WorkerOutcomes: the service publishes results (a worker);
- CollectorOutcomes: it has no result to publish (the collector, or a worker whose spec has
  no publishResult). A failure it cannot retry is then taken as transient — its store is
  down? — so the delivery waits in its queue (RequeueLater) rather than being lost in a dead
  letter nobody reads as a failure. A failure that is about the message, not the store (the
  store raised StoreDataError: a value it cannot hold), is a dead letter of its own with
  reason `unstorable` (`CollectorOutcomes.unstorable`), or `duplicate_id` when the store
  says the task id belongs to a different task (DuplicateTaskIdError), so one poison message
  never stalls the queue behind it and a reused id never merges two tasks.
Events (`retrying`, `cancelled`) go out only when the service has an event route; that too is
bound once (`_event`).
"""

from __future__ import annotations

import logging
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_json

from spectask.protocol.names import ATTEMPT_HEADER
from spectask.runtime.consumer import NextHops, RequeueLater, WorkerStats
from spectask.runtime.context import TaskContext
from spectask.runtime.deadletter import DeadReason, build_dead_letter
from spectask.runtime.events import event_document
from spectask.runtime.headers import attempt_of
from spectask.runtime.publisher import OutgoingMessage
from spectask.runtime.retry import choose_tier, failure_headers
from spectask.runtime.topology import ReceiveRoute, ResultMode, RetryTier, SendRoute
from spectask.runtime.transport import IncomingMessage

log = logging.getLogger(__name__)

TRACEBACK_FRAMES = 8
# The type name of `spectask.store.StoreDataError` in a failure's error info (the runtime does
# not import the store; tests/test_unstorable.py checks the two agree).
UNSTORABLE_ERROR = "StoreDataError"
# ... and of its `DuplicateTaskIdError`: the id already belongs to a different task
DUPLICATE_ID_ERROR = "DuplicateTaskIdError"
# what a collector dead-letters, by the store's refusal (for good: no retry can fix either)
STORE_REFUSALS: Mapping[str, DeadReason] = {
    UNSTORABLE_ERROR: DeadReason.UNSTORABLE,
    DUPLICATE_ID_ERROR: DeadReason.DUPLICATE_ID,
}

EventHops = Callable[[TaskContext, str, str], NextHops]


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an attempt failed: the dead-letter reason if it is the last, and the error info."""

    reason: DeadReason
    error: Mapping[str, str]
    cancelled: bool = False


class Outcomes(ABC):
    """Dead letters, retries and events: what every service's outcomes share."""

    def __init__(
        self,
        *,
        worker_id: str,
        stats: WorkerStats,
        dead_letter_route: SendRoute,
        event_route: SendRoute | None,
    ) -> None:
        self._worker_id = worker_id
        self.stats = stats
        self._dead_letter_route = dead_letter_route
        self._event_route = event_route
        self._event: EventHops = self._event_hop if event_route is not None else _no_event

    def _observe(
        self, context: TaskContext, started_at: datetime | None, finished_at: datetime
    ) -> None:
        """An attempt's duration into the /metrics histogram, if the worker serves one."""
        observe = self.stats.observe_duration
        if observe is not None and started_at is not None:
            observe(context.message_type, (finished_at - started_at).total_seconds())

    @abstractmethod
    def succeeded(
        self,
        context: TaskContext,
        started_at: datetime,
        result: dict[str, Any] | None,
        mode: ResultMode = ResultMode.CONFIRMED,
    ) -> NextHops:
        """The next hops of a successful attempt (its result sent the way `mode` says)."""

    @abstractmethod
    def _final(
        self,
        dead: NextHops,
        context: TaskContext,
        started_at: datetime,
        error: Mapping[str, str],
        reason: DeadReason,
    ) -> NextHops:
        """The next hops of a task that failed for good, given its dead letter."""

    @abstractmethod
    def cancelled(self, context: TaskContext, started_at: datetime | None, why: str) -> NextHops:
        """A cancelled result and a `cancelled` event, confirmed together, then the ack."""

    def failed(
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
                self._observe(context, started_at, datetime.now(UTC))
                log.info(
                    "task %s (%s) attempt %d failed, retrying in %.3gs: %s",
                    context.task_id,
                    route.message_type,
                    attempt,
                    tier.delay_ms / 1000,
                    summary,
                    extra=outcome_fields(context, started_at, datetime.now(UTC), "retrying"),
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
            extra=outcome_fields(context, started_at, datetime.now(UTC), "failed"),
        )
        dead = self.dead(
            message,
            route.queue,
            reason,
            summary,
            error.get("traceback", ""),
            attempts=attempt,
        )
        return self._final(dead, context, started_at, error, reason)

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

    def _event_hop(self, context: TaskContext, event: str, message: str) -> NextHops:
        """A lifecycle event about the context's attempt, routed `<task_type>.<event>`."""
        route = self._event_route
        assert route is not None
        document = event_document(context, self._worker_id, event, message=message)
        return (validated(route, document, context.task_id, f"{context.task_type}.{event}"),)

    def dead(
        self,
        message: IncomingMessage,
        queue: str,
        reason: DeadReason,
        error: str,
        trace: str = "",
        *,
        attempts: int | None = None,
    ) -> NextHops:
        """The dead letter of a delivery: its body unchanged, with why in the headers."""
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
            attempts=attempts if attempts is not None else attempt_of(headers),
            traceback=trace,
            content_type=message.content_type,
            priority=message.priority,
        )
        return (dead,)


class WorkerOutcomes(Outcomes):
    """A service that publishes results: every task ends in one (see the module doc)."""

    def __init__(
        self,
        *,
        worker_id: str,
        stats: WorkerStats,
        dead_letter_route: SendRoute,
        event_route: SendRoute | None,
        result_route: SendRoute,
        log_tasks: bool = True,
    ) -> None:
        super().__init__(
            worker_id=worker_id,
            stats=stats,
            dead_letter_route=dead_letter_route,
            event_route=event_route,
        )
        self._result_route = result_route
        self._log_tasks = log_tasks
        # Which optional fields the spec's TaskResult has, read once: pydantic's
        # `model_fields` is a property that builds its answer (~2 us a look-up, per result).
        fields = result_route.model.model_fields
        self._has_dead_reason = "dead_reason" in fields
        self._has_digest = "task_digest" in fields

    def succeeded(
        self,
        context: TaskContext,
        started_at: datetime,
        result: dict[str, Any] | None,
        mode: ResultMode = ResultMode.CONFIRMED,
    ) -> NextHops:
        return (self._result(context, started_at, result, None, mode=mode),)

    def _final(
        self,
        dead: NextHops,
        context: TaskContext,
        started_at: datetime,
        error: Mapping[str, str],
        reason: DeadReason,
    ) -> NextHops:
        return (*dead, self._result(context, started_at, None, error, dead_reason=reason))

    def cancelled(self, context: TaskContext, started_at: datetime | None, why: str) -> NextHops:
        self.stats.cancelled += 1
        error = {"type": "cancelled", "message": why}
        hops = self._event(context, "cancelled", why)
        return (*hops, self._result(context, started_at, None, error, status="cancelled"))

    def _result(
        self,
        context: TaskContext,
        started_at: datetime | None,
        result: dict[str, Any] | None,
        error: Mapping[str, str] | None,
        *,
        status: str | None = None,
        dead_reason: DeadReason | None = None,
        mode: ResultMode = ResultMode.CONFIRMED,
    ) -> OutgoingMessage:
        route = self._result_route
        finished_at = datetime.now(UTC)
        outcome = status or ("failed" if error else "succeeded")
        self._observe(context, started_at, finished_at)
        # A failure has its WARNING line already (`failed`); the rest one INFO line each,
        # formatted only if it is shown (SPECTASK_LOG_TASKS, the log level).
        if self._log_tasks and outcome != "failed" and log.isEnabledFor(logging.INFO):
            fields = outcome_fields(context, started_at, finished_at, outcome)
            log.info(
                "task %s (%s) attempt %d %s in %.0f ms",
                context.task_id,
                context.message_type,
                context.attempt,
                outcome,
                fields["duration_ms"],
                extra=fields,
            )
        document: dict[str, Any] = {
            "task_id": context.task_id,
            "message_type": context.message_type,
            "status": outcome,
            "worker_id": self._worker_id,
            "attempt": context.attempt,
            "submitted_at": context.submitted_at,
            "started_at": started_at,
            "finished_at": finished_at,
            "result": result,
            "error": error,
        }
        # The store records DEAD from this or the dead letter; a spec older than the field
        # gets the result without it (FAILED until the dead letter is stored, as before).
        if dead_reason is not None and self._has_dead_reason:
            document["dead_reason"] = dead_reason.value
        if context.digest and self._has_digest:
            document["task_digest"] = context.digest
        # Built here from checked values (an id, an attempt from valid headers, the handler's
        # JSON object): serialized as the TaskResult schema has it, not validated again
        # (tests/test_result_modes.py checks the body against the schema).
        body = to_json({key: value for key, value in document.items() if value is not None})
        return OutgoingMessage(
            exchange=route.exchange,
            routing_key=route.routing_key,
            body=body,
            message_id=context.task_id,
            message_type=route.message_type,
            result_mode=mode,
        )


class CollectorOutcomes(Outcomes):
    """A service with no result to publish: a failure it cannot retry waits in its queue,
    unless it is about the message itself (`unstorable`): that one goes to a dead letter."""

    def succeeded(
        self,
        context: TaskContext,
        started_at: datetime,
        result: dict[str, Any] | None,
        mode: ResultMode = ResultMode.CONFIRMED,
    ) -> NextHops:
        return ()

    def failed(
        self,
        message: IncomingMessage,
        route: ReceiveRoute,
        context: TaskContext,
        started_at: datetime,
        failure: Failure,
    ) -> NextHops:
        refused = STORE_REFUSALS.get(failure.error.get("type", ""))
        if refused is not None:
            # The store refused the values (spectask.store.StoreDataError): for good.
            return self.unstorable(message, route.queue, failure.error["message"], refused)
        if failure.reason is not DeadReason.PERMANENT and not route.policy.retry.tiers:
            # No result to report and no retry tier (a collector, say): the failure is
            # taken as transient (its store is down?), so the message waits in its queue.
            raise RequeueLater(f"{failure.error['type']}: {failure.error['message']}")
        return super().failed(message, route, context, started_at, failure)

    def _final(
        self,
        dead: NextHops,
        context: TaskContext,
        started_at: datetime,
        error: Mapping[str, str],
        reason: DeadReason,
    ) -> NextHops:
        return dead

    def cancelled(self, context: TaskContext, started_at: datetime | None, why: str) -> NextHops:
        self.stats.cancelled += 1
        return self._event(context, "cancelled", why)

    def unstorable(
        self,
        message: IncomingMessage,
        queue: str,
        error: str,
        reason: DeadReason = DeadReason.UNSTORABLE,
    ) -> NextHops:
        """A message the store cannot hold (StoreDataError): its own dead letter, then the ack.

        The dead letter has reason `unstorable` and `error` (which names the task and what could
        not be stored), so the message is kept where `spectask dlq` shows it and the queue moves
        on, instead of waiting forever for a store that will refuse it every time.

        Except a delivery that came from the dead-letter exchange (the collector's copy of a
        dead letter, in `collector.dead_letter`): it is acked without storing, and logged. Its
        original is already in the dead-letter queue, so a dead letter of it would only be a
        duplicate there; and since the collector's own `unstorable` dead letters come back to
        it as such copies, this is also what makes a loop impossible: a message is
        dead-lettered as unstorable at most once, whatever the store refuses in its copy.
        """
        if message.exchange == self._dead_letter_route.exchange:
            log.warning(
                "dead letter %s from %s not stored (it stays in the dead-letter queue): %s",
                message.message_id,
                queue,
                error,
            )
            return ()
        return self.dead(message, queue, reason, error)


def outcomes_for(
    *,
    worker_id: str,
    stats: WorkerStats,
    dead_letter_route: SendRoute,
    result_route: SendRoute | None,
    event_route: SendRoute | None,
    log_tasks: bool = True,
) -> Outcomes:
    """The outcomes of a service with these send routes (decided once, at start)."""
    if result_route is None:
        return CollectorOutcomes(
            worker_id=worker_id,
            stats=stats,
            dead_letter_route=dead_letter_route,
            event_route=event_route,
        )
    return WorkerOutcomes(
        worker_id=worker_id,
        stats=stats,
        dead_letter_route=dead_letter_route,
        event_route=event_route,
        result_route=result_route,
        log_tasks=log_tasks,
    )


def outcome_fields(
    context: TaskContext, started_at: datetime | None, finished_at: datetime, outcome: str
) -> dict[str, Any]:
    """A task outcome's structured log fields (what `--log-format json` shows as keys)."""
    duration = (finished_at - started_at).total_seconds() * 1000 if started_at else 0.0
    return {
        "task_id": context.task_id,
        "task_type": context.message_type,
        "attempt": context.attempt,
        "duration_ms": round(duration, 1),
        "outcome": outcome,
    }


def _no_event(context: TaskContext, event: str, message: str) -> NextHops:
    return ()


def error_info(exc: BaseException) -> dict[str, str]:
    """The spec's ErrorInfo of an exception raised by a handler, with its innermost frames."""
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc, limit=-TRACEBACK_FRAMES)),
    }


def validated(
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


def summarize(exc: ValidationError, limit: int = 5) -> str:
    """A short, readable list of schema errors (location: message)."""
    parts = []
    for error in exc.errors()[:limit]:
        where = ".".join(str(item) for item in error["loc"]) or "(body)"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
