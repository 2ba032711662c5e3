# generated from spectask/protocol/spectask.asyncapi.yaml by `make protocol` — do not edit
"""The protocol's message models and enums (pydantic), one class per schema."""
# ruff: noqa: E501 - text from the spec (descriptions, patterns) stays on one line

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from typing_extensions import TypeAliasType


class TaskHeaders(BaseModel):
    x_spectask_attempt: Annotated[
        int | None,
        Field(
            alias="x-spectask-attempt",
            description="1 for the first attempt (a JSON/AMQP integer, not a string); absent means 1, and spectask's own producer leaves it out of a submit (one header less for every worker to decode). Written by spectask only: the worker that retries a task sets attempt + 1 when it sends it to its delay tier, and the value counts only on a delivery that came back from a delay tier (the broker's newest x-death record has reason `expired`). On a fresh submit it is ignored, whatever it says: every submitted task starts at attempt 1 with its policy's whole retry budget (a client cannot shrink it). A value that is not an integer in range is an invalid_headers dead letter.",
            ge=1,
            le=1000000,
        ),
    ] = None
    x_spectask_submitted_at: Annotated[
        AwareDatetime | None,
        Field(
            alias="x-spectask-submitted-at",
            description="Submission time, ISO 8601 with microseconds (the AMQP timestamp has whole seconds only, and AMQP float headers are 32-bit).",
        ),
    ] = None
    x_spectask_first_failure_at: Annotated[
        AwareDatetime | None,
        Field(
            alias="x-spectask-first-failure-at",
            description="When the task's first attempt failed (set by the worker that retries it, then kept).",
        ),
    ] = None
    x_spectask_last_error: Annotated[
        str | None,
        Field(
            alias="x-spectask-last-error",
            description="Why the previous attempt failed: `<error type>: <message>`, at most 1000 characters.",
        ),
    ] = None


class TaskStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ErrorInfo(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    type: Annotated[str, Field(description="Exception type or failure kind.")]
    message: str
    traceback: str | None = None


class DeadLetterReason(StrEnum):
    UNDECODABLE = "undecodable"
    SCHEMA_VIOLATION = "schema_violation"
    INVALID_HEADERS = "invalid_headers"
    UNKNOWN_TYPE = "unknown_type"
    TOO_LARGE = "too_large"
    EXCEPTION = "exception"
    TIMEOUT = "timeout"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    PERMANENT = "permanent"
    UNSTORABLE = "unstorable"
    DUPLICATE_ID = "duplicate_id"
    DELIVERY_LIMIT = "delivery_limit"
    DEFAULT_EXCHANGE = "default_exchange"


DeadLetterBody = TypeAliasType(
    "DeadLetterBody",
    Annotated[
        Any,
        Field(
            description="The original task body, byte for byte (it may not even be JSON).",
            title="DeadLetterBody",
        ),
    ],
)


MessageBody = TypeAliasType(
    "MessageBody",
    Annotated[
        Any,
        Field(
            description="A message body, byte for byte, not decoded (the reader wants its headers).",
            title="MessageBody",
        ),
    ],
)


class EventKind(StrEnum):
    SUBMITTED = "submitted"
    STARTED = "started"
    PROGRESS = "progress"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"


TaskType = TypeAliasType("TaskType", Annotated[str, Field(max_length=200)])


class WorkerHeartbeat(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    worker_id: Annotated[str, Field(max_length=200, min_length=1)]
    host: Annotated[str, Field(max_length=255)]
    pid: Annotated[int, Field(ge=0)]
    task_types: Annotated[
        list[TaskType],
        Field(description="The task types (queues) this worker consumes.", max_length=1000),
    ]
    concurrency: Annotated[int, Field(description="Handlers it runs at once.", ge=1)]
    prefetch: Annotated[int, Field(description="Unacked deliveries per consumer.", ge=1)]
    in_flight: Annotated[int, Field(description="Deliveries it holds right now.", ge=0)]
    processed: Annotated[int, Field(description="Attempts it finished since it started.", ge=0)]
    failed: Annotated[
        int, Field(description="Tasks that failed for good on it since it started.", ge=0)
    ]
    retried: Annotated[int | None, Field(ge=0)] = None
    interval: Annotated[
        float,
        Field(
            description="Seconds until its next heartbeat; a watcher counts it lost after three.",
            gt=0.0,
        ),
    ]
    started_at: AwareDatetime
    at: AwareDatetime


TaskId = TypeAliasType("TaskId", Annotated[str, Field(min_length=1)])


class TaskCancel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    task_ids: Annotated[
        list[TaskId],
        Field(
            description="The tasks to cancel; empty in a worker's start-up marker.", max_length=1000
        ),
    ]
    requested_at: AwareDatetime
    requested_by: Annotated[
        str | None, Field(description="Who asked (user@host, or the marker's worker).")
    ] = None
    reason: Annotated[str | None, Field(max_length=1000)] = None


class TaskState(StrEnum):
    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    DEAD = "DEAD"
    CANCELLED = "CANCELLED"


class StatusRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    task_ids: Annotated[list[TaskId], Field(max_length=1000, min_length=1)]


class TaskStatusView(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    task_id: str
    state: TaskState
    message_type: str | None = None
    attempts: Annotated[int | None, Field(ge=0)] = None
    worker_id: str | None = None
    progress: Annotated[float | None, Field(ge=0.0, le=100.0)] = None
    progress_message: str | None = None
    submitted_at: AwareDatetime | None = None
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None
    result: Annotated[
        dict[str, Any] | None, Field(description="What the handler returned (JSON object).")
    ] = None
    error: ErrorInfo | None = None
    dead_reason: str | None = None


class StatusReply(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    tasks: list[TaskStatusView]
    error: ErrorInfo | None = None


class TaskResult(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    task_id: Annotated[str, Field(min_length=1)]
    message_type: Annotated[str, Field(description="`<task_type>.<operation>`")]
    status: TaskStatus
    worker_id: str
    attempt: Annotated[int, Field(ge=1)]
    submitted_at: AwareDatetime | None = None
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime
    result: Annotated[
        dict[str, Any] | None, Field(description="What the handler returned (JSON object).")
    ] = None
    error: ErrorInfo | None = None
    dead_reason: DeadLetterReason | None = None
    task_digest: Annotated[
        str | None,
        Field(
            description="Which task this is the result of: the first 32 hex digits of the SHA-256 of the task's message type, a NUL byte and its body as received. The collector compares it with the digest of the task it stored under task_id (see TaskHeaders): a result of a different task with a reused id is a duplicate_id dead letter, not a lost result.",
            pattern="^[0-9a-f]{32}$",
        ),
    ] = None


class DeadLetterHeaders(BaseModel):
    x_spectask_reason: Annotated[DeadLetterReason, Field(alias="x-spectask-reason")]
    x_spectask_error: Annotated[str | None, Field(alias="x-spectask-error")] = None
    x_spectask_traceback: Annotated[str | None, Field(alias="x-spectask-traceback")] = None
    x_spectask_attempts: Annotated[int | None, Field(alias="x-spectask-attempts", ge=0)] = None
    x_spectask_origin_queue: Annotated[str, Field(alias="x-spectask-origin-queue")]
    x_spectask_origin_exchange: Annotated[
        str,
        Field(
            alias="x-spectask-origin-exchange",
            description="Where the task was published (replay publishes it there again).",
        ),
    ]
    x_spectask_origin_routing_key: Annotated[str, Field(alias="x-spectask-origin-routing-key")]
    x_spectask_first_failure_at: Annotated[
        AwareDatetime | None, Field(alias="x-spectask-first-failure-at")
    ] = None
    x_spectask_last_failure_at: Annotated[
        AwareDatetime | None, Field(alias="x-spectask-last-failure-at")
    ] = None


class TaskEvent(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    task_id: str
    event: EventKind
    message_type: str | None = None
    worker_id: str | None = None
    at: AwareDatetime
    attempt: Annotated[int | None, Field(ge=1)] = None
    progress: Annotated[float | None, Field(ge=0.0, le=100.0)] = None
    message: str | None = None
    task_digest: Annotated[
        str | None,
        Field(
            description="Which task the event is about (as TaskResult.task_digest): an event of a different task under a used id is a duplicate_id dead letter.",
            pattern="^[0-9a-f]{32}$",
        ),
    ] = None


class ResultBatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
    )
    results: Annotated[list[TaskResult], Field(max_length=10000, min_length=1)]
