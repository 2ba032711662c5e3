"""Which batch a task belongs to, from its id, so a batch is one indexed value to look up.

`produce --batch B` names its tasks `B-<run>-<n>` (spectask.runtime.producer.batch_task_ids:
a 12-hex-digit run per submit, a 6-or-more-digit index). Listing a batch by id prefix had to
read and sort every task of it (a 100,000-task batch: 190-270 ms at 1,000,000 rows); the
store keeps the label in `tasks.batch` instead (migration 6, indexed with updated_at), so the
newest page of a batch is an index walk. Ids of any other shape belong to no batch.

Migration 6 fills the column for rows written before it with SQL that applies this same rule;
tests/test_store_batches.py holds the two to each other.
"""

from __future__ import annotations

import re

RUN_HEX_DIGITS = 12  # spectask.runtime.producer.BATCH_RUN_CHARS (a test keeps them equal)
BATCH_ID = re.compile(rf"(.+)-[0-9a-f]{{{RUN_HEX_DIGITS}}}-[0-9]{{6,}}")


def batch_of(task_id: str) -> str | None:
    """The batch label of a task id (`B` of `B-<run>-<n>`), None for an id of another shape."""
    match = BATCH_ID.fullmatch(task_id)
    return match.group(1) if match else None
