"""What the task store raises on purpose, rooted in `spectask.errors` so callers catch one tree.

Each message says how to fix the problem: a wrong `STORE_URL` is a configuration mistake the
user can correct, an unreachable database is an operational one, and a schema newer than the
code means an older spectask was started against a database a newer one already migrated.

Two failures of a write are told apart, because the collector acts on them differently:
`StoreUnavailableError` is about the database (unreachable, overloaded, locked): the same write
may work later, so the message waits in its queue. `StoreDataError` is about what was to be
written (a number out of the column's range, text the database cannot hold, JSON it refuses,
a CHECK violation): the same write fails the same way forever, so the collector dead-letters
that message (reason `unstorable`) and the rest keep flowing.
"""

from __future__ import annotations

from spectask.errors import ConfigError, PermanentTaskError, SpectaskError


class StoreConfigError(ConfigError):
    """`STORE_URL` (or the URL given to `open_store`) is not one the store can open."""


class StoreUnavailableError(SpectaskError):
    """The database named by the store URL could not be reached or opened."""


class StoreSchemaError(SpectaskError):
    """The database schema is not one this version of spectask can use."""


class StoreDataError(PermanentTaskError):
    """The store cannot hold what an observation says; retrying would fail the same way.

    A PermanentTaskError, so a handler that lets it through never has its message retried;
    the collector's roles dead-letter the message with reason `unstorable` (see
    `spectask.runtime.outcomes.CollectorOutcomes.unstorable`). The message names the task and
    what could not be stored.
    """

    def __init__(self, task_id: str, problem: str) -> None:
        super().__init__(f"cannot store task {task_id!r}: {problem}")
        self.task_id = task_id
        self.problem = problem


class DuplicateTaskIdError(StoreDataError):
    """An observation's task id already belongs to a different task (another type or body).

    Task ids are unique for all time; the store keeps the task it saw first under the id. The
    collector dead-letters the message with reason `duplicate_id`, so the second task (or its
    result) stays visible in `spectask dlq` instead of being merged into the first one's record.
    """

    def __init__(self, task_id: str, stored_type: str | None, new_type: str | None) -> None:
        what = "another task" if stored_type == new_type else f"a {stored_type} task"
        super().__init__(
            task_id,
            f"the id already belongs to {what} with a different body; this {new_type} message "
            "is kept as a duplicate_id dead letter (give every task a new id)",
        )
