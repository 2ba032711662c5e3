"""The stored view of one task: what the status RPC answers and the dashboard lists.

A record is an immutable value: the transition rule (`states.advance`) builds a new one from
the old one and an observation, so the rule can be tested without a database and a backend
can tell "nothing changed" (skip the write) by identity.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from spectask.protocol.models import TaskState
from spectask.protocol.names import FINAL_STATES


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """Why an attempt failed: the spec's ErrorInfo (exception type or failure kind)."""

    type: str
    message: str
    traceback: str | None = None

    def to_json(self) -> dict[str, str]:
        document = {"type": self.type, "message": self.message}
        if self.traceback is not None:
            document["traceback"] = self.traceback
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> ErrorDetail:
        traceback = document.get("traceback")
        return cls(
            type=str(document.get("type", "")),
            message=str(document.get("message", "")),
            traceback=None if traceback is None else str(traceback),
        )


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """Everything the store knows about one task id.

    `attempts` is the highest attempt number seen. `state_at` is the event time of the
    observation that decided `state` (see `states.advance`); `updated_at` is the store's clock
    when the record last changed, so it orders "recently changed" listings even when workers'
    clocks disagree. `worker_id` is the worker named by the latest observation, at
    `worker_at`. `progress` (0..100) belongs to the current attempt; a new attempt resets it.
    """

    task_id: str
    state: TaskState
    attempts: int
    updated_at: datetime
    message_type: str | None = None
    worker_id: str | None = None
    worker_at: datetime | None = None
    progress: float | None = None
    progress_message: str | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    state_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: ErrorDetail | None = None
    dead_reason: str | None = None
    # which task holds the id (spectask.runtime.digest), from the first observation that says
    task_digest: str | None = None

    @property
    def is_final(self) -> bool:
        """True once the task reached a terminal state (nothing will move it back)."""
        return self.state in FINAL_STATES
