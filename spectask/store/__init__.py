"""Task history and results: an explicit state machine over a real database.

`open_store(url)` gives a `TaskStore` (SQLite by default, PostgreSQL to scale out). The
collector folds events and results into it with `apply_event` / `apply_result`; the status
RPC reads it with `get`, where None means the id was never seen (`TaskState.UNKNOWN`), unlike
Celery's PENDING, which cannot tell "queued" from "never heard of".
"""

from __future__ import annotations

from spectask.store.errors import (
    DuplicateTaskIdError,
    StoreConfigError,
    StoreDataError,
    StoreSchemaError,
    StoreUnavailableError,
)
from spectask.store.factory import open_store
from spectask.store.observations import (
    EventKind,
    Observation,
    observation_from_dead_letter,
    observation_from_event,
    observation_from_result,
)
from spectask.store.protocol import TaskStore
from spectask.store.records import ErrorDetail, TaskRecord
from spectask.store.states import TERMINAL_STATES, TaskState, advance, state_of
from spectask.store.url import STORE_URL_ENV, default_store_path, default_store_url

__all__ = [
    "STORE_URL_ENV",
    "TERMINAL_STATES",
    "DuplicateTaskIdError",
    "ErrorDetail",
    "EventKind",
    "Observation",
    "StoreConfigError",
    "StoreDataError",
    "StoreSchemaError",
    "StoreUnavailableError",
    "TaskRecord",
    "TaskState",
    "TaskStore",
    "advance",
    "default_store_path",
    "default_store_url",
    "observation_from_dead_letter",
    "observation_from_event",
    "observation_from_result",
    "open_store",
    "state_of",
]
