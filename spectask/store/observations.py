"""One normalized input to the store: a lifecycle event, a result or a dead letter, as a fact.

Events (TaskEvent), results (TaskResult) and dead letters (DeadLetterHeaders) carry the same
facts under different names; folding them into one `Observation` keeps the transition rule to
one input type. They are the protocol's own models (`spectask.protocol.models`, which every
application's generated models re-export), so the store needs no application code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# What an observation says happened: the protocol's TaskEvent `event` enum.
from spectask.protocol import models
from spectask.protocol.models import EventKind as EventKind
from spectask.store.records import ErrorDetail

# Where an observation came from: the same kind can be said twice (a final failure by its
# result and by its dead letter), and the task's timeline shows both (spectask.store.events).
SOURCE_COPY = "copy"
SOURCE_EVENT = "event"
SOURCE_RESULT = "result"
SOURCE_DEAD_LETTER = "dead_letter"
SOURCE_CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class Observation:
    """A fact about one task at event time `at` (the sender's clock, always timezone-aware).

    `attempt` is the attempt the fact is about; for `retrying` it is the attempt that failed
    (the next one is `attempt + 1`). An event without an attempt is about the first one.
    """

    task_id: str
    kind: EventKind
    at: datetime
    attempt: int = 1
    message_type: str | None = None
    worker_id: str | None = None
    progress: float | None = None
    progress_message: str | None = None
    error: ErrorDetail | None = None
    result: dict[str, Any] | None = field(default=None, hash=False)
    dead_reason: str | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    # which task the fact is about (spectask.runtime.digest); None when the sender does not say
    digest: str | None = None
    # where the fact came from, for the task's timeline (spectask.store.events' SOURCE_*)
    source: str = SOURCE_EVENT
    # the task's payload as capped JSON text (broker copies only; spectask.store.events)
    payload: str | None = field(default=None, hash=False, repr=False)
    payload_truncated: bool = False

    def __post_init__(self) -> None:
        if not self.task_id:
            raise ValueError("an observation needs a task id")
        if self.attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {self.attempt}")
        if self.progress is not None and not 0.0 <= self.progress <= 100.0:
            raise ValueError(f"progress must be within 0..100, got {self.progress}")
        for name in ("at", "submitted_at", "started_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, as_utc(value, name))


def as_utc(value: datetime, name: str = "timestamp") -> datetime:
    """The same instant in UTC; naive times are refused (whose clock would they be on?)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value.isoformat()}")
    return value.astimezone(UTC)


_RESULT_KINDS = {
    kind.value: kind for kind in (EventKind.SUCCEEDED, EventKind.FAILED, EventKind.CANCELLED)
}
_FAILURE_KINDS = {EventKind.RETRYING, EventKind.FAILED, EventKind.CANCELLED}


def observation_from_event(event: models.TaskEvent) -> Observation:
    """A TaskEvent as an observation.

    `message` is the progress message of `started`/`progress`, the reason of `dead`, and the
    error message of `retrying`/`failed`/`cancelled` events, so a failure is never recorded
    without saying why.
    """
    kind = EventKind(event.event)
    error = None
    if kind in _FAILURE_KINDS and event.message:
        error = ErrorDetail(type=kind.value, message=event.message)
    running = kind in (EventKind.STARTED, EventKind.PROGRESS)
    return Observation(
        task_id=event.task_id,
        kind=kind,
        at=event.at,
        attempt=event.attempt or 1,
        message_type=event.message_type,
        worker_id=event.worker_id,
        progress=event.progress,
        progress_message=event.message if running else None,
        error=error,
        dead_reason=event.message if kind is EventKind.DEAD else None,
        submitted_at=event.at if kind is EventKind.SUBMITTED else None,
        started_at=event.at if kind is EventKind.STARTED else None,
        digest=event.task_digest,
    )


def observation_from_result(result: models.TaskResult) -> Observation:
    """A TaskResult as the task's `succeeded`, `failed`, `dead` or `cancelled` observation.

    The event time is finished_at; a status this store does not know counts as failed. A failed
    result with a `dead_reason` is the worker saying it also dead-lettered the task: that is
    the `dead` observation, so the store records DEAD from whichever of the result and the
    dead letter arrives first and the task is never FAILED on the way (a waiting client reads
    its final state once). Its error takes the dead letter's shape (see `dead_letter_error`),
    so the record says the same whichever came first. A failed result without one (a worker
    that does not say) stays FAILED.
    """
    kind = _RESULT_KINDS.get(str(result.status), EventKind.FAILED)
    error = _error_from(result.error)
    reason = None
    if kind is EventKind.FAILED and result.dead_reason is not None:
        kind = EventKind.DEAD
        reason = str(result.dead_reason)
        error = dead_letter_error(reason, error)
    return Observation(
        task_id=result.task_id,
        kind=kind,
        at=result.finished_at,
        attempt=result.attempt,
        message_type=result.message_type,
        worker_id=result.worker_id,
        error=error,
        result=dict(result.result) if result.result is not None else None,
        dead_reason=reason,
        submitted_at=result.submitted_at,
        started_at=result.started_at,
        digest=result.task_digest,
        source=SOURCE_RESULT,
    )


def dead_letter_error(reason: str, error: ErrorDetail | None) -> ErrorDetail | None:
    """A final failure's error as its dead letter states it: `reason`, then `<type>: <message>`.

    The worker's dead letter carries the failed result's error squeezed into headers:
    `x-spectask-reason`, `x-spectask-error` = "<type>: <message>" and `x-spectask-traceback`
    (`observation_from_dead_letter` reads them back as this shape). Giving the result's `dead`
    observation the same shape makes both observations of one final failure carry the same
    error, so which one the store sees first changes nothing; the exception type is kept, in
    the message. (Headers are capped, so an error longer than the caps differs: then the
    earliest observation wins, as for any two observations of one terminal state.)
    """
    if error is None:
        return None
    return ErrorDetail(
        type=reason,
        message=f"{error.type}: {error.message}",
        traceback=error.traceback or None,
    )


def observation_from_dead_letter(
    headers: models.DeadLetterHeaders, *, task_id: str, message_type: str, received_at: datetime
) -> Observation:
    """A dead letter's headers as the task's `dead` observation.

    The event time is the last failure time from the headers, else when it was received.
    Dead letters refused before any attempt say `attempts: 0`; that is still attempt 1 here.
    """
    reason = str(headers.x_spectask_reason)
    return Observation(
        task_id=task_id,
        kind=EventKind.DEAD,
        at=headers.x_spectask_last_failure_at or received_at,
        attempt=max(1, headers.x_spectask_attempts or 1),
        message_type=message_type or None,
        error=ErrorDetail(
            type=reason,
            message=headers.x_spectask_error or "",
            traceback=headers.x_spectask_traceback,
        ),
        dead_reason=reason,
        source=SOURCE_DEAD_LETTER,
    )


def _error_from(value: object) -> ErrorDetail | None:
    """An ErrorDetail from an ErrorInfo model, a plain mapping, or nothing."""
    if value is None:
        return None
    if isinstance(value, ErrorDetail):
        return value
    if isinstance(value, Mapping):
        return ErrorDetail.from_json(value)
    traceback = getattr(value, "traceback", None)
    return ErrorDetail(
        type=str(getattr(value, "type", "")),
        message=str(getattr(value, "message", "")),
        traceback=None if traceback is None else str(traceback),
    )
