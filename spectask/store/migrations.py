"""The store's schema as ordered migration steps, applied at open and recorded in schema_version.

The project owns its schema (no external migration tool): each step has a version, a
description and its SQL for both backends. A backend applies the steps above the recorded
version in one transaction under a lock (PostgreSQL advisory lock, SQLite `BEGIN IMMEDIATE`),
so two processes opening a fresh database at once apply each step exactly once, and opening
an up-to-date database changes nothing. Never edit a released step: append a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

from spectask.store.errors import StoreSchemaError
from spectask.store.states import STORED_STATES


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

_STATE_CHECK = "state IN ({})".format(", ".join(f"'{state.value}'" for state in STORED_STATES))

_TASKS_SQLITE = f"""
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY,
    message_type TEXT,
    state TEXT NOT NULL CHECK ({_STATE_CHECK}),
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
)"""

_TASKS_POSTGRES = f"""
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY,
    message_type TEXT,
    state TEXT NOT NULL CHECK ({_STATE_CHECK}),
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
)"""

# Listing is newest first, filtered by state and/or message type; counting groups by state.
_INDEXES = (
    "CREATE INDEX tasks_by_updated ON tasks (updated_at, task_id)",
    "CREATE INDEX tasks_by_state ON tasks (state, updated_at, task_id)",
    "CREATE INDEX tasks_by_type ON tasks (message_type, state, updated_at, task_id)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="tasks table and its listing indexes",
        sqlite=(_TASKS_SQLITE, *_INDEXES),
        postgres=(_TASKS_POSTGRES, *_INDEXES),
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
