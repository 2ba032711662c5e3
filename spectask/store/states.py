"""Task states and the transition rule: a pure function from (record, observation) to record.

Events and results arrive at-least-once and in any order, from several collectors at once, so
the rule is built to make the final record independent of arrival order and of duplicates:
every observation has a *position*, and the record follows the highest position seen.

- Non-terminal positions are ordered by (attempt, rank), rank QUEUED < STARTED < RETRYING: a
  stale event about an older attempt never overrides a newer attempt. Among observations of
  the same step the later event time wins, so `state_at` is the latest news of a running task.
- Every terminal position is above every non-terminal one: SUCCEEDED, FAILED, DEAD and
  CANCELLED never move back. Between terminals the precedence is
  SUCCEEDED > CANCELLED > DEAD > FAILED, whatever the attempt numbers:
  * a success means a result exists and was delivered; a dead letter or failure reported for
    the same task (a duplicate run after a lost ack) does not take that result away;
  * a cancellation is what a user asked for; a failure or dead letter that follows it is
    usually the cancellation's consequence, and "cancelled" is what they want to read;
  * DEAD over FAILED: the message sits in `dead_letter` and can be replayed, which a bare
    "failed" hides; the failed result's error still fills the record's `error`. spectask's
    own worker never makes a FAILED record turn DEAD: its final failed result names the dead
    reason and is itself a DEAD observation (`observation_from_result`), so the first of the
    two to arrive already says DEAD. Only a plain failed result (a worker that does not say)
    followed by a dead letter moves FAILED to DEAD.
  Among observations of the same terminal state the earliest event time wins: the first
  outcome stands (by event time, so every collector keeps the same result). A replay from
  `dead_letter` therefore cannot reopen a DEAD task by events alone; that needs an explicit
  store operation when replay reporting is built.
- An observation below the record's position only fills gaps: message type, the earliest
  submitted/started times, and (same step, or both terminal failures) error, result and dead
  reason that the record lacks.
- `worker_id` is the worker named by the latest observation (event time) that names one:
  whoever last touched the task, whatever the order the news arrived in.
- `attempts` is the highest attempt seen; `progress` is the highest reported for that attempt
  (a new attempt starts again from nothing) and 100 once SUCCEEDED.
An exact duplicate returns the very same record object, so a store can skip the write.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from spectask.protocol.models import TaskState as TaskState
from spectask.protocol.names import FINAL_STATES
from spectask.store.errors import DuplicateTaskIdError
from spectask.store.observations import EventKind, Observation
from spectask.store.records import ErrorDetail, TaskRecord

# Where a task is: the protocol's TaskState (UNKNOWN is never stored: it is the answer for an
# id never seen), and its final states.
TERMINAL_STATES = FINAL_STATES
STORED_STATES: tuple[TaskState, ...] = tuple(
    state for state in TaskState if state is not TaskState.UNKNOWN
)
_TERMINAL_FAILURES = frozenset({TaskState.FAILED, TaskState.DEAD, TaskState.CANCELLED})
_FAILURES = _TERMINAL_FAILURES | {TaskState.RETRYING}
_RANK = {TaskState.UNKNOWN: -1, TaskState.QUEUED: 0, TaskState.STARTED: 1, TaskState.RETRYING: 2}
_PRECEDENCE = {
    TaskState.FAILED: 0,
    TaskState.DEAD: 1,
    TaskState.CANCELLED: 2,
    TaskState.SUCCEEDED: 3,
}
STATE_OF_KIND = {
    EventKind.SUBMITTED: TaskState.QUEUED,
    EventKind.STARTED: TaskState.STARTED,
    EventKind.PROGRESS: TaskState.STARTED,
    EventKind.RETRYING: TaskState.RETRYING,
    EventKind.SUCCEEDED: TaskState.SUCCEEDED,
    EventKind.FAILED: TaskState.FAILED,
    EventKind.DEAD: TaskState.DEAD,
    EventKind.CANCELLED: TaskState.CANCELLED,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Position = tuple[int, int, int, int]


def state_of(record: TaskRecord | None) -> TaskState:
    """The state to report for a lookup: UNKNOWN when the store has never seen the id."""
    return TaskState.UNKNOWN if record is None else record.state


def _micros(at: datetime | None) -> int:
    return 0 if at is None else (at - _EPOCH) // _MICROSECOND


def _position(state: TaskState, attempt: int, at: datetime | None) -> Position:
    """Total order of observations; see the module docstring."""
    if state in TERMINAL_STATES:
        return (1, _PRECEDENCE[state], 0, -_micros(at))
    return (0, attempt, _RANK[state], _micros(at))


def record_position(record: TaskRecord) -> Position:
    """The position of the observation that decided the record's state."""
    return _position(record.state, record.attempts, record.state_at)


def _same_step(record: TaskRecord, state: TaskState, attempt: int) -> bool:
    """Both about the same thing: the same terminal state, or the same (attempt, rank)."""
    if state in TERMINAL_STATES or record.state in TERMINAL_STATES:
        return state is record.state
    return (attempt, state) == (record.attempts, record.state)


def _carries_over(record: TaskRecord, state: TaskState, attempt: int) -> bool:
    """May failure details and results pass between the record and this observation?"""
    both_failed = state in _TERMINAL_FAILURES and record.state in _TERMINAL_FAILURES
    return both_failed or _same_step(record, state, attempt)


def _own_details(
    obs: Observation, state: TaskState
) -> tuple[ErrorDetail | None, dict[str, Any] | None, str | None]:
    """The error, result and dead reason an observation may put on a record in `state`."""
    error = obs.error if state in _FAILURES else None
    result = obs.result if state is TaskState.SUCCEEDED else None
    reason = obs.dead_reason if state is TaskState.DEAD else None
    return error, result, reason


def _decide(record: TaskRecord, obs: Observation, state: TaskState) -> TaskRecord:
    """The observation outranks the record: it sets state and details, keeping compatible gaps."""
    error, result, reason = _own_details(obs, state)
    if _carries_over(record, state, obs.attempt):
        error = error if error is not None else record.error
        if state is TaskState.SUCCEEDED and result is None:
            result = record.result
        if state is TaskState.DEAD and reason is None:
            reason = record.dead_reason
    return replace(
        record,
        state=state,
        state_at=obs.at,
        finished_at=obs.at if state in TERMINAL_STATES else None,
        error=error,
        result=result,
        dead_reason=reason,
    )


def _fill(record: TaskRecord, obs: Observation, state: TaskState) -> TaskRecord:
    """The observation does not outrank the record: it only fills what the record lacks."""
    error, result, reason = record.error, record.result, record.dead_reason
    if _carries_over(record, state, obs.attempt):
        own_error, own_result, own_reason = _own_details(obs, record.state)
        error = error if error is not None else own_error
        result = result if result is not None else own_result
        reason = reason if reason is not None else own_reason
    return replace(
        record,
        error=error,
        result=result,
        dead_reason=reason,
    )


def _progress(
    record: TaskRecord, obs: Observation, attempts: int, state: TaskState
) -> tuple[float | None, str | None]:
    """The current attempt's highest progress (and its message); 100 once succeeded."""
    if state is TaskState.SUCCEEDED:
        return 100.0, None
    progress, message = record.progress, record.progress_message
    if attempts > record.attempts:
        progress, message = None, None
    if obs.progress is None or obs.attempt != attempts:
        return progress, message
    if progress is None or obs.progress > progress:
        return obs.progress, obs.progress_message
    if obs.progress == progress and message is None:
        return progress, obs.progress_message
    return progress, message


def _earliest(first: datetime | None, second: datetime | None) -> datetime | None:
    if first is None or second is None:
        return first or second
    return min(first, second)


def blank_record(task_id: str, now: datetime) -> TaskRecord:
    """The record before any observation: UNKNOWN, below every position."""
    return TaskRecord(task_id=task_id, state=TaskState.UNKNOWN, attempts=0, updated_at=now)


def advance(record: TaskRecord | None, obs: Observation, *, now: datetime) -> TaskRecord:
    """The record after `obs` (a new one if `record` is None); `record` itself if nothing changed.

    `now` is the store's clock, written to `updated_at` only when something changed.
    """
    if record is None:
        record = blank_record(obs.task_id, now)
    elif record.task_id != obs.task_id:
        raise ValueError(f"observation for {obs.task_id!r} applied to record {record.task_id!r}")
    elif record.task_digest and obs.digest and record.task_digest != obs.digest:
        raise DuplicateTaskIdError(obs.task_id, record.message_type, obs.message_type)
    state = STATE_OF_KIND[obs.kind]
    if _position(state, obs.attempt, obs.at) > record_position(record):
        merged = _decide(record, obs, state)
    else:
        merged = _fill(record, obs, state)
    attempts = max(record.attempts, obs.attempt)
    progress, progress_message = _progress(record, obs, attempts, merged.state)
    worker_id, worker_at = record.worker_id, record.worker_at
    if obs.worker_id is not None and (worker_at is None or obs.at > worker_at):
        worker_id, worker_at = obs.worker_id, obs.at
    merged = replace(
        merged,
        attempts=attempts,
        worker_id=worker_id,
        worker_at=worker_at,
        message_type=record.message_type or obs.message_type,
        submitted_at=_earliest(record.submitted_at, obs.submitted_at),
        started_at=_earliest(record.started_at, obs.started_at),
        progress=progress,
        progress_message=progress_message,
        task_digest=record.task_digest or obs.digest,
    )
    if merged == record:
        return record
    return replace(merged, updated_at=now)


def storage_code(state: TaskState) -> str:
    """How a state is written in the store's `state` column: the protocol's name in lower case.

    Frozen by migration step 1 (its CHECK lists these codes), so existing databases keep
    working; a state the protocol adds gets its code through a new migration.
    """
    return state.value.lower()


def from_storage_code(code: str) -> TaskState:
    """The state a `state` column holds (see `storage_code`)."""
    return TaskState(code.upper())
