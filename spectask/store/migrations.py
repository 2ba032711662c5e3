"""The store's schema as ordered migration steps, applied at open and recorded in schema_version.

The project owns its schema (no external migration tool): each step has a version, a
description and its SQL for both backends. A backend applies the steps above the recorded
version in one transaction under a lock (PostgreSQL advisory lock, SQLite `BEGIN IMMEDIATE`),
so two processes opening a fresh database at once apply each step exactly once, and opening
an up-to-date database changes nothing.

Never edit a released step: append a new one. A database that already applied a step never
runs it again, so an edited step only changes what *new* databases get, and old and new
databases silently disagree. That is why every released step is literal SQL text, with no
value computed from live code (an enum, a constant): adding a task state must be a new step
that widens the CHECK constraint, not a rewrite of step 1 that old databases never see.
tests/test_store_migrations.py pins a digest of each released step to keep it that way.
"""

from __future__ import annotations

from dataclasses import dataclass

from spectask.store.errors import StoreSchemaError


@dataclass(frozen=True)
class Migration:
    """One schema step; statements run in order, inside the migration transaction."""

    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


SCHEMA_VERSION_SQLITE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""

SCHEMA_VERSION_POSTGRES = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)"""

# --- step 1 (released): literal text; the CHECK lists the states TaskState had then ---------

_TASKS_SQLITE_1 = """
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY,
    message_type TEXT,
    state TEXT NOT NULL CHECK (state IN ('queued', 'started', 'retrying', 'succeeded', 'failed', 'dead', 'cancelled')),
    attempts INTEGER NOT NULL,
    worker_id TEXT,
    worker_at TEXT,
    progress REAL,
    progress_message TEXT,
    submitted_at TEXT,
    started_at TEXT,
    finished_at TEXT,
    state_at TEXT,
    updated_at TEXT NOT NULL,
    result TEXT,
    error TEXT,
    dead_reason TEXT
)"""  # noqa: E501 (the CHECK line is kept exactly as released)

_TASKS_POSTGRES_1 = """
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY,
    message_type TEXT,
    state TEXT NOT NULL CHECK (state IN ('queued', 'started', 'retrying', 'succeeded', 'failed', 'dead', 'cancelled')),
    attempts INTEGER NOT NULL,
    worker_id TEXT,
    worker_at TIMESTAMPTZ,
    progress DOUBLE PRECISION,
    progress_message TEXT,
    submitted_at TIMESTAMPTZ,
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    state_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL,
    result JSONB,
    error JSONB,
    dead_reason TEXT
)"""  # noqa: E501 (the CHECK line is kept exactly as released)

# Listing is newest first, filtered by state and/or message type; counting groups by state.
_INDEXES_1 = (
    "CREATE INDEX tasks_by_updated ON tasks (updated_at, task_id)",
    "CREATE INDEX tasks_by_state ON tasks (state, updated_at, task_id)",
    "CREATE INDEX tasks_by_type ON tasks (message_type, state, updated_at, task_id)",
)

# --- step 2 (released): which task holds each id, so a reused id is told apart ----------
_DIGEST_2 = "ALTER TABLE tasks ADD COLUMN task_digest TEXT"

# --- step 3 (released): id-prefix search (batches, the dashboard's search box) -------------
# PostgreSQL's primary key follows the database's collation, where a prefix is no range;
# text_pattern_ops compares bytes (code points), so `~>=~ p AND ~<~ next(p)` is exact and
# indexed. SQLite compares text by code point already: its primary key serves as is.
_ID_PATTERN_POSTGRES_3 = "CREATE INDEX tasks_by_id_pattern ON tasks (task_id text_pattern_ops)"

# --- step 4 (released): each task's events, for the task page's timeline and payload -------
# One row per observation (spectask.store.events); the unique key makes a redelivery write
# nothing, and serves the per-task read; `at` serves the retention cleanup.
_EVENTS_SQLITE_4 = """
CREATE TABLE task_events (
    seq INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    worker_id TEXT,
    progress REAL,
    message TEXT,
    error TEXT,
    payload TEXT,
    payload_truncated INTEGER NOT NULL DEFAULT 0
)"""

_EVENTS_POSTGRES_4 = """
CREATE TABLE task_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    worker_id TEXT,
    progress DOUBLE PRECISION,
    message TEXT,
    error JSONB,
    payload TEXT,
    payload_truncated BOOLEAN NOT NULL DEFAULT false
)"""

_EVENTS_INDEXES_4 = (
    "CREATE UNIQUE INDEX task_events_once ON task_events (task_id, at, kind, source, attempt)",
    "CREATE INDEX task_events_by_at ON task_events (at)",
)

# --- step 5 (released): task counts by type and state, kept as the tasks change ------------
# spectask.store.counters: the dashboard reads a few rows instead of counting the table. On
# PostgreSQL appliers only INSERT deltas (no row two collectors update, so no lock waits and
# no deadlocks); one at a time folds them into task_counts. Both start from the table as is.
_COUNTS_5 = """
CREATE TABLE task_counts (
    message_type TEXT NOT NULL,
    state TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (message_type, state)
)"""
_COUNT_DELTAS_POSTGRES_5 = """
CREATE TABLE task_count_deltas (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_type TEXT NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL
)"""
# also what `recount` runs (the same text: one source)
COUNTS_FROM_TASKS = (
    "INSERT INTO task_counts (message_type, state, n) "
    "SELECT COALESCE(message_type, ''), state, COUNT(*) FROM tasks "
    "GROUP BY COALESCE(message_type, ''), state"
)

# --- step 6: the batch label of each task, indexed with recency -----------------------------
# spectask.store.batches: a batch's newest page is an index walk instead of a sort of all of
# it. Rows already stored get their label here by the same rule as batch_of(): `B` of
# `B-<12 hex digits>-<6 or more digits>` (SQLite has no regex: rtrim strips the index digits,
# GLOB checks the run). Only rows of a batch are indexed.
_BATCH_6 = "ALTER TABLE tasks ADD COLUMN batch TEXT"
_BATCH_FILL_SQLITE_6 = (
    "UPDATE tasks SET batch = substr(rtrim(task_id, '0123456789'), 1, "
    "length(rtrim(task_id, '0123456789')) - 14) "
    "WHERE length(task_id) - length(rtrim(task_id, '0123456789')) >= 6 "
    "AND rtrim(task_id, '0123456789') GLOB '?*-" + "[0-9a-f]" * 12 + "-'"
)
_BATCH_FILL_POSTGRES_6 = (
    "UPDATE tasks SET batch = substring(task_id from '^(.+)-[0-9a-f]{12}-[0-9]{6,}$') "
    "WHERE task_id ~ '^.+-[0-9a-f]{12}-[0-9]{6,}$'"
)
_BATCH_INDEX_6 = (
    "CREATE INDEX tasks_by_batch ON tasks (batch, updated_at, task_id) WHERE batch IS NOT NULL"
)

# --- step 7: the transaction that wrote each row, for the change follower (PostgreSQL) -------
# `updated_at` is stamped at statement time, so a transaction can commit after one that
# stamped later: the dashboard's (updated_at, task_id) cursor would pass its row unseen.
# Knowing each row's writer lets the follower re-read the rows of the transactions its last
# read saw in progress (spectask.store.postgres, changed_since). Existing rows get xid 0 (a
# constant default: no table rewrite), later ones their writer; SQLite serializes writers.
_XID_POSTGRES_7 = (
    "ALTER TABLE tasks ADD COLUMN xid xid8 NOT NULL DEFAULT '0'",
    "ALTER TABLE tasks ALTER COLUMN xid SET DEFAULT pg_current_xact_id()",
    "CREATE INDEX tasks_by_xid ON tasks (xid)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="tasks table and its listing indexes",
        sqlite=(_TASKS_SQLITE_1, *_INDEXES_1),
        postgres=(_TASKS_POSTGRES_1, *_INDEXES_1),
    ),
    Migration(
        version=2,
        description="tasks.task_digest: which task holds the id (duplicate_id)",
        sqlite=(_DIGEST_2,),
        postgres=(_DIGEST_2,),
    ),
    Migration(
        version=3,
        description="task id prefix index (PostgreSQL text_pattern_ops)",
        sqlite=(),
        postgres=(_ID_PATTERN_POSTGRES_3,),
    ),
    Migration(
        version=4,
        description="task_events: each task's timeline and payload",
        sqlite=(_EVENTS_SQLITE_4, *_EVENTS_INDEXES_4),
        postgres=(_EVENTS_POSTGRES_4, *_EVENTS_INDEXES_4),
    ),
    Migration(
        version=5,
        description="task_counts: counts by type and state kept as tasks change",
        sqlite=(_COUNTS_5, COUNTS_FROM_TASKS),
        postgres=(_COUNTS_5, _COUNT_DELTAS_POSTGRES_5, COUNTS_FROM_TASKS),
    ),
    Migration(
        version=6,
        description="tasks.batch: the batch label, indexed with updated_at",
        sqlite=(_BATCH_6, _BATCH_FILL_SQLITE_6, _BATCH_INDEX_6),
        postgres=(_BATCH_6, _BATCH_FILL_POSTGRES_6, _BATCH_INDEX_6),
    ),
    Migration(
        version=7,
        description="tasks.xid: each row's writing transaction (PostgreSQL's change follower)",
        sqlite=(),
        postgres=_XID_POSTGRES_7,
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def pending(current: int) -> tuple[Migration, ...]:
    """The steps above `current`, in order; refuses a schema newer than this code."""
    if current > LATEST_VERSION:
        raise StoreSchemaError(
            f"the task store's schema is at version {current}, newer than this spectask "
            f"knows (version {LATEST_VERSION}); upgrade spectask, or point STORE_URL at "
            "another database"
        )
    return tuple(step for step in MIGRATIONS if step.version > current)
