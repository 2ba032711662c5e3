"""The `TaskStore` interface the collector writes through and the status RPC reads through.

Two backends implement it (SQLite by default, PostgreSQL to scale out); callers depend on
this Protocol only, and get an instance from `open_store(url)`.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from spectask.protocol import models
from spectask.store.events import DEFAULT_EVENTS_LIMIT, PRUNE_BATCH, StoredEvent
from spectask.store.observations import Observation
from spectask.store.records import TaskRecord
from spectask.store.states import TaskState

DEFAULT_LIST_LIMIT = 100


@dataclass(frozen=True)
class ChangeCursor:
    """Where a follower of the store's changes stands: pass `ChangeCursor(since)` first, then
    each page's `cursor`. The last record read (`updated_at`, `task_id`: ties in id order)
    and, on PostgreSQL, `horizon`: the snapshot of the last read, whose in-progress
    transactions the next read looks for (see PostgresTaskStore.changed_since)."""

    updated_at: datetime
    task_id: str = ""
    horizon: str | None = None


@dataclass(frozen=True)
class ChangePage:
    """One read of the store's changes: the records, oldest first, and the cursor after them."""

    records: list[TaskRecord]
    cursor: ChangeCursor


class TaskStore(Protocol):
    """Durable task history. Every apply is one transaction: read, `states.advance`, write.

    Applies are idempotent and commutative (see `spectask.store.states`), so a collector can
    apply a redelivered message again, and several collectors can share one database.
    """

    async def apply(self, observation: Observation) -> TaskRecord:
        """Fold one observation into its task's record and return the record as stored."""
        ...

    async def apply_event(self, event: models.TaskEvent) -> TaskRecord:
        """Apply a TaskEvent."""
        ...

    async def apply_result(self, result: models.TaskResult) -> TaskRecord:
        """Apply a TaskResult (its succeeded, failed, dead or cancelled observation)."""
        ...

    async def get(self, task_id: str) -> TaskRecord | None:
        """The record, or None for an id never seen (report it as `TaskState.UNKNOWN`)."""
        ...

    async def get_many(self, task_ids: Iterable[str]) -> dict[str, TaskRecord]:
        """The records of those ids that exist, by id."""
        ...

    async def counts_by_state(self, message_type: str | None = None) -> dict[TaskState, int]:
        """How many tasks are in each stored state (every state present, zeros included)."""
        ...

    async def list(
        self,
        state: TaskState | None = None,
        message_type: str | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
        offset: int = 0,
        id_prefix: str | None = None,
        batch: str | None = None,
    ) -> builtins.list[TaskRecord]:
        """Records, most recently updated first (then by task id, descending), filtered.

        `batch` keeps the tasks of `produce --batch B` (ids `B-<run>-<n>`, every run of that
        label; spectask.store.batches), through an index; `id_prefix` keeps the ids that start
        with it (the start of an id someone is searching for).
        """
        ...

    async def changed_since(
        self, cursor: ChangeCursor, limit: int = DEFAULT_LIST_LIMIT
    ) -> ChangePage:
        """Up to `limit` records the store changed after `cursor`, oldest first, and the
        cursor to pass next: a follower (the dashboard) reads each change once, through the
        (updated_at, task_id) index, instead of scanning the table every second.

        After means an `updated_at` (the store's own clock) later than the cursor's, or equal
        with a later task id (with `updated_at` alone, records sharing a timestamp across a
        page boundary were skipped), plus, where a transaction can commit after a later
        stamped one (PostgreSQL), what such late commits wrote behind the cursor. A record
        that changes again is read again, as it is then.
        """
        ...

    async def counts_by_type(self) -> dict[str, dict[TaskState, int]]:
        """How many tasks of each message type are in each state ('' for an unknown type)."""
        ...

    async def recount(self) -> None:
        """Rebuild the counts by type and state from the table (spectask.store.counters): for
        a database written by something that did not keep them (an older spectask, a bulk
        load). Applies keep them exact otherwise."""
        ...

    async def events(
        self, task_id: str, limit: int = DEFAULT_EVENTS_LIMIT
    ) -> builtins.list[StoredEvent]:
        """The task's stored events, oldest first (its timeline; see spectask.store.events)."""
        ...

    async def prune_events(self, before: datetime, limit: int = PRUNE_BATCH) -> int:
        """Delete up to `limit` events older than `before`; how many went. Each apply also
        runs this every minute with the store's retention, so callers rarely need to."""
        ...

    async def close(self) -> None:
        """Release connections and threads; the store cannot be used afterwards."""
        ...
