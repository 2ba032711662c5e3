"""Which batch a task belongs to, from its id, so a batch is one indexed value to look up.

`produce --batch B` names its tasks `B-<run>-<n>` (spectask.runtime.producer.batch_task_ids:
a 12-hex-digit run per submit, a 6-or-more-digit index). Listing a batch by id prefix had to
read and sort every task of it (a 100,000-task batch: 190-270 ms at 1,000,000 rows); the
store keeps the label in `tasks.batch` instead (migration 6, indexed with updated_at), so the
newest page of a batch is an index walk. Ids of any other shape belong to no batch.

`list_tasks` is the listing `spectask tasks` and the dashboard's `/api/tasks` share, so a
batch means the same in both.

Migration 6 fills the column for rows written before it with SQL that applies this same rule;
tests/test_store_batches.py holds the two to each other.
"""

from __future__ import annotations

import re

from spectask.store.protocol import DEFAULT_LIST_LIMIT, TaskStore
from spectask.store.records import TaskRecord
from spectask.store.states import TaskState

RUN_HEX_DIGITS = 12  # spectask.runtime.producer.BATCH_RUN_CHARS (a test keeps them equal)
BATCH_ID = re.compile(rf"(.+)-[0-9a-f]{{{RUN_HEX_DIGITS}}}-[0-9]{{6,}}")


def batch_of(task_id: str) -> str | None:
    """The batch label of a task id (`B` of `B-<run>-<n>`), None for an id of another shape."""
    match = BATCH_ID.fullmatch(task_id)
    return match.group(1) if match else None


def prefix_may_match(batch: str, id_prefix: str) -> bool:
    """Whether an id of `batch` can start with `id_prefix`: every such id starts `B-`, so
    the prefix must start with that or be the start of it (`b` or `b1` for batch `b1`)."""
    head = f"{batch}-"
    return id_prefix.startswith(head) or head.startswith(id_prefix)


async def list_tasks(
    store: TaskStore,
    *,
    state: TaskState | None = None,
    message_type: str | None = None,
    batch: str | None = None,
    id_prefix: str | None = None,
    limit: int = DEFAULT_LIST_LIMIT,
    offset: int = 0,
) -> list[TaskRecord]:
    """The tasks `spectask tasks` and the dashboard's `/api/tasks` list: one query for both.

    A batch is the `tasks.batch` column (so `--batch B` is every run of label B, and not a
    batch `B-x` whose ids also start `B-`). A search prefix no id of the batch can have is
    answered without a query: the store would walk the whole batch's index to find nothing.
    """
    if batch and id_prefix and not prefix_may_match(batch, id_prefix):
        return []
    return await store.list(
        state=state,
        message_type=message_type,
        limit=limit,
        offset=offset,
        id_prefix=id_prefix or None,
        batch=batch or None,
    )
