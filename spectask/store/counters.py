"""Task counts by message type and state, kept as tasks change instead of counted each second.

Counting the whole `tasks` table by type and state takes 200-350 ms at 1,000,000 rows; the
dashboard needs the counts every second. Each apply that moves a task from one (type, state)
to another records -1 for the old pair and +1 for the new one, in the same transaction as the
record, so the counts are exactly the table's (`recount` rebuilds them from the table, for a
database written by something that skipped this: an older spectask, a bulk load).
- SQLite has one writer at a time: the apply adds the deltas to `task_counts` directly.
- PostgreSQL has several collectors: if each updated the same `task_counts` row they would
  queue on its lock (and could deadlock, taking two rows in either order). So appliers only
  INSERT into `task_count_deltas`, which no one else locks; every `COMPACT_INTERVAL` seconds
  one store (a transaction-scoped advisory lock, tried, never waited for) folds those deltas
  into `task_counts` and deletes them, in one transaction. Readers sum both tables in one
  statement, so they see the counts before or after a fold, never half of one.
"""

from __future__ import annotations

import zlib

from spectask.store.records import TaskRecord
from spectask.store.states import storage_code

COMPACT_INTERVAL = 1.0
COMPACT_BATCH = 100_000
# pg_try_advisory_xact_lock key: one folder of deltas at a time
COMPACT_LOCK = zlib.crc32(b"spectask.store.counters")

Key = tuple[str, str]


def key_of(record: TaskRecord) -> Key:
    """The (message type, stored state code) a record is counted under ('' for no type)."""
    return (record.message_type or "", storage_code(record.state))


def deltas(old: TaskRecord | None, new: TaskRecord) -> list[tuple[str, str, int]]:
    """What an apply changes in the counts: nothing, +1 for a new task, or -1/+1 for a move."""
    after = key_of(new)
    if old is None:
        return [(*after, 1)]
    before = key_of(old)
    if before == after:
        return []
    return [(*before, -1), (*after, 1)]
