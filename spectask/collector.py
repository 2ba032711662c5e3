"""The collector's service: the task store fed from the broker, and status answered from it.

Every observation is written to the store before its delivery is acked: the broker's copy of
each task (QUEUED), each dead letter (DEAD), lifecycle events (RETRYING, STARTED, ...) and
each cancellation (an unfinished task CANCELLED at once, not when a worker gets to it).
`spectask collect` adds the results on top, with its own reporting. A store that is down
(`StoreUnavailableError`, or any unexpected error) leaves the message in its queue, requeued
with backoff, never lost. A message whose values the store cannot hold (`StoreDataError`: an
attempt out of range, a task id with a NUL, ...) is not retried: the runtime dead-letters it
with reason `unstorable` and acks it, so the messages behind it keep flowing (a dead-letter
copy is acked without a second dead letter; see `CollectorOutcomes.unstorable`). Text the
store cannot hold but that changes nothing (a NUL character) is replaced, not refused
(`spectask.store.storable`). A task copy or result whose task id already belongs to a
different task (`DuplicateTaskIdError`: another message type or body, by
`spectask.runtime.digest`) is dead-lettered the same way, with reason `duplicate_id`; the
dead-letter copies of those are not applied to the record of the task that has the id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import RootModel, ValidationError

from spectask.errors import PermanentTaskError
from spectask.protocol import models
from spectask.protocol.names import (
    CANCEL_MESSAGE_TYPE,
    EVENT_MESSAGE_TYPE,
    EVENTS_ON_THE_WIRE,
    HEARTBEAT_MESSAGE_TYPE,
    STATUS_REPLY_MESSAGE_TYPE,
    STATUS_REQUEST_MESSAGE_TYPE,
)
from spectask.runtime.context import TaskContext
from spectask.runtime.deaths import with_reason
from spectask.store import TaskRecord, TaskStore
from spectask.store.events import capped_payload
from spectask.store.observations import (
    SOURCE_CANCEL,
    SOURCE_COPY,
    EventKind,
    Observation,
    observation_from_dead_letter,
)
from spectask.store.records import ErrorDetail
from spectask.store.states import TERMINAL_STATES
from spectask.store.storable import storable_id

log = logging.getLogger(__name__)


def status_view(task_id: str, record: TaskRecord | None) -> models.TaskStatusView:
    """What the status RPC says about one id (UNKNOWN for an id never seen)."""
    if record is None:
        return models.TaskStatusView(task_id=task_id, state=models.TaskState.UNKNOWN)
    document: dict[str, Any] = {
        "task_id": task_id,
        "state": record.state,
        "message_type": record.message_type,
        "attempts": record.attempts,
        "worker_id": record.worker_id,
        "progress": record.progress,
        "progress_message": record.progress_message,
        "submitted_at": record.submitted_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "updated_at": record.updated_at,
        "result": record.result,
        "error": record.error.to_json() if record.error else None,
        "dead_reason": record.dead_reason,
    }
    return models.TaskStatusView.model_validate(
        {key: value for key, value in document.items() if value is not None}
    )


def submitted_observation(
    context: TaskContext, *, now: datetime, payload: Any = None
) -> Observation | None:
    """The QUEUED observation of the broker's copy of a task (None without a task id).

    A retry coming back from its tier carries its next attempt number, so it is that
    attempt's QUEUED; the event time of a first attempt is its submission time. `payload`
    (the decoded body) is kept with it, capped, for the task page.
    """
    if not context.task_id:
        return None
    text, truncated = (None, False) if payload is None else capped_payload(payload)
    submitted_at = context.submitted_at
    at = submitted_at if submitted_at is not None and context.attempt == 1 else now
    return Observation(
        task_id=context.task_id,
        kind=EventKind.SUBMITTED,
        at=at,
        attempt=max(1, context.attempt),
        message_type=context.message_type or None,
        submitted_at=submitted_at,
        digest=context.digest or None,
        source=SOURCE_COPY,
        payload=text,
        payload_truncated=truncated,
    )


# Protocol messages whose dead letter says nothing about a task's outcome: a refused event,
# cancel or status request carries a task id (or any id its publisher chose) as message_id,
# and storing its dead letter as the task's would let any publisher mark a task DEAD.
NOT_A_TASK_OUTCOME = frozenset(
    {
        EVENT_MESSAGE_TYPE,
        CANCEL_MESSAGE_TYPE,
        STATUS_REQUEST_MESSAGE_TYPE,
        STATUS_REPLY_MESSAGE_TYPE,
        HEARTBEAT_MESSAGE_TYPE,
    }
)


def dead_observation(context: TaskContext, *, now: datetime) -> Observation | None:
    """The DEAD observation of a dead letter (None without a task id or a readable reason,
    and None for a refused protocol message that is not about a task's outcome)."""
    if not context.task_id or context.message_type in NOT_A_TASK_OUTCOME:
        return None
    try:
        headers = models.DeadLetterHeaders.model_validate(with_reason(context.headers))
    except ValidationError as exc:
        log.warning("dead letter %s has unreadable headers: %s", context.task_id, exc)
        return None
    if headers.x_spectask_reason is models.DeadLetterReason.DUPLICATE_ID:
        # not about the task stored under this id: another one that reused it
        return None
    return observation_from_dead_letter(
        headers, task_id=context.task_id, message_type=context.message_type, received_at=now
    )


def cancel_observations(
    cancel: models.TaskCancel, records: Mapping[str, TaskRecord]
) -> list[Observation]:
    """CANCELLED for each cancelled task the store holds unfinished (see collectCancel).

    An id never seen stays UNKNOWN (a typo must not become a task); a final task keeps its
    state (a late cancel changes nothing). The observation is about the record's attempt,
    at the time the cancel was requested, and says who asked and why in the record's error
    (type `cancelled`, as a worker's cancelled result has it); what the worker then did
    (skipped the task, stopped it) is in the task's timeline, from the worker's result.
    """
    said = f"cancel requested by {cancel.requested_by or 'a client'}"
    if cancel.reason:
        said += f": {cancel.reason}"
    error = ErrorDetail(type=EventKind.CANCELLED.value, message=said)
    return [
        Observation(
            task_id=task_id,
            kind=EventKind.CANCELLED,
            at=cancel.requested_at,
            attempt=max(1, record.attempts),
            error=error,
            source=SOURCE_CANCEL,
        )
        for task_id, record in records.items()
        if record.state not in TERMINAL_STATES
    ]


def add_store_handlers(app: Any, store: TaskStore) -> None:
    """The status RPC answered from `store`, in request order; task copies, dead letters and
    events written to it (results are the caller's, who may also want to print them)."""

    async def on_submitted(body: RootModel[Any], context: TaskContext) -> None:
        observation = submitted_observation(context, now=datetime.now(UTC), payload=body.root)
        if observation is not None:
            await store.apply(observation)

    async def on_dead_letter(body: RootModel[Any], context: TaskContext) -> None:
        observation = dead_observation(context, now=datetime.now(UTC))
        if observation is not None:
            await store.apply(observation)

    async def on_event(event: models.TaskEvent, context: TaskContext) -> None:
        if event.event not in EVENTS_ON_THE_WIRE:
            # the store's names for what the collector learns itself: an event claiming one
            # would let any publisher mark a task succeeded or dead without its result
            allowed = ", ".join(sorted(EVENTS_ON_THE_WIRE))
            raise PermanentTaskError(
                f"a {event.event.value!r} event does not travel on the events exchange "
                f"(only {allowed} do); the collector learns it from the task's result or copy"
            )
        await store.apply_event(event)

    async def on_cancel(cancel: models.TaskCancel, context: TaskContext) -> None:
        ids = [i for i in dict.fromkeys(cancel.task_ids) if storable_id(i)]
        records = await store.get_many(ids) if ids else {}
        for observation in cancel_observations(cancel, records):
            await store.apply(observation)

    async def on_status(request: models.StatusRequest, context: TaskContext) -> models.StatusReply:
        # An id no store can hold (a NUL in it) was never stored: UNKNOWN, without a query
        # the database would refuse (which would stall the status queue).
        records = await store.get_many([i for i in request.task_ids if storable_id(i)])
        return models.StatusReply(tasks=[status_view(i, records.get(i)) for i in request.task_ids])

    app.collect_submitted(on_submitted)
    app.collect_dead_letter(on_dead_letter)
    app.collect_event(on_event)
    app.collect_cancel(on_cancel)
    app.answer_status(on_status)


def store_result(store: TaskStore) -> Any:
    """A `collect_result` handler that only stores the result (the command also reports it)."""

    async def on_result(result: models.TaskResult, context: TaskContext) -> None:
        await store.apply_result(result)

    return on_result
