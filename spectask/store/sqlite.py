"""The SQLite task store: the default, one file, no server.

stdlib `sqlite3` on one dedicated thread per store: every call is a whole unit of work run
there, so the event loop never blocks on disk and the connection never crosses threads.
Each apply is `BEGIN IMMEDIATE` (take the write lock before reading) -> read -> advance ->
write -> COMMIT, which makes read-modify-write safe against other processes on the same
file too; a busy timeout makes them queue instead of failing. WAL lets readers (the status
RPC, the dashboard) run while a collector writes; `synchronous=FULL` because the collector
acks a result once it is committed, and a committed result must survive a power cut.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from spectask.protocol import models
from spectask.store import counters, events, rows
from spectask.store.batches import batch_of
from spectask.store.errors import StoreDataError, StoreUnavailableError
from spectask.store.migrations import (
    COUNTS_FROM_TASKS as _COUNTS_FROM_TASKS,
    SCHEMA_VERSION_SQLITE,
    pending,
)
from spectask.store.observations import (
    EventKind,
    Observation,
    observation_from_event,
    observation_from_result,
)
from spectask.store.protocol import DEFAULT_LIST_LIMIT, ChangeCursor, ChangePage
from spectask.store.records import TaskRecord
from spectask.store.retention import PRUNE_INTERVAL, PruneClock
from spectask.store.states import (
    STORED_STATES,
    TaskState,
    advance,
    from_storage_code,
    storage_code,
)
from spectask.store.storable import storable
from spectask.store.url import MEMORY

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT = 30.0
# the batch is written once, with the row: it follows from the id (spectask.store.batches)
_INSERT = "INSERT INTO tasks ({}, batch) VALUES ({}, ?)".format(
    rows.SELECT_COLUMNS, ", ".join("?" for _ in rows.COLUMNS)
)
_UPDATE = "UPDATE tasks SET {} WHERE task_id = ?".format(
    ", ".join(f"{column} = ?" for column in rows.COLUMNS[1:])
)
_SELECT = f"SELECT {rows.SELECT_COLUMNS} FROM tasks"
_INSERT_EVENT = "INSERT INTO task_events ({}) VALUES ({}) ON CONFLICT DO NOTHING".format(
    ", ".join(events.COLUMNS), ", ".join("?" for _ in events.COLUMNS)
)
# the newest PROGRESS_KEPT progress rows of a task stay; the subquery is the oldest kept
_TRIM_PROGRESS = (
    "DELETE FROM task_events WHERE task_id = ? AND kind = 'progress' AND seq < ("
    "SELECT seq FROM task_events WHERE task_id = ? AND kind = 'progress' "
    f"ORDER BY seq DESC LIMIT 1 OFFSET {events.PROGRESS_KEPT - 1})"
)
_SELECT_EVENTS = (
    f"SELECT {events.SELECT_COLUMNS} FROM task_events WHERE task_id = ? ORDER BY at, seq LIMIT ?"
)
_ADD_COUNT = (
    "INSERT INTO task_counts (message_type, state, n) VALUES (?, ?, ?) "
    "ON CONFLICT (message_type, state) DO UPDATE SET n = n + excluded.n"
)
_PRUNE_EVENTS = (
    "DELETE FROM task_events WHERE seq IN (SELECT seq FROM task_events WHERE at < ? LIMIT ?)"
)


class SqliteTaskStore:
    """A `TaskStore` on one SQLite file; open it with `await SqliteTaskStore.open(path)`."""

    def __init__(
        self,
        path: str,
        executor: ThreadPoolExecutor,
        events_retention: timedelta | None = None,
        prune_interval: float = PRUNE_INTERVAL,
    ) -> None:
        self.path = path
        self._executor = executor
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._prune_clock = PruneClock(events_retention, prune_interval)

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        events_retention: timedelta | None = None,
        prune_interval: float = PRUNE_INTERVAL,
    ) -> SqliteTaskStore:
        """Open (creating the directory and file if needed) and migrate the schema.

        `events_retention`: task events older than this are deleted (None keeps them), a
        batch after an apply at most every `prune_interval` seconds."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spectask-store")
        store = cls(path, executor, events_retention, prune_interval)
        try:
            await store._run(store._open_sync, busy_timeout)
        except BaseException:
            await store.close()
            raise
        return store

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StoreUnavailableError(f"the task store {self.path} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function, *args)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailableError(
                f"SQLite task store {self.path}: {exc} (another process may hold the write "
                "lock for longer than the busy timeout, or the file is not writable)"
            ) from exc

    def _open_sync(self, busy_timeout: float) -> None:
        if self.path != MEMORY:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnavailableError(
                    f"cannot create the directory for the task store {self.path}: {exc}"
                ) from exc
        try:
            conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"cannot open the task store {self.path}: {exc}") from exc
        self._conn = conn
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            self._migrate(conn)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise
            raise StoreUnavailableError(
                f"cannot use {self.path} as a task store: {exc}; is it a SQLite database?"
            ) from exc

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Apply pending steps under the write lock, so concurrent openers apply each once."""
        with _transaction(conn):
            conn.execute(SCHEMA_VERSION_SQLITE)
            (current,) = conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version"
            ).fetchone()
            for step in pending(int(current)):
                for statement in step.sqlite:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, description, applied_at) "
                    "VALUES (?, ?, ?)",
                    (step.version, step.description, _encode_time(datetime.now(UTC))),
                )

    def _connection(self) -> sqlite3.Connection:
        assert self._conn is not None, "used before open()"
        return self._conn

    def _apply_sync(self, observation: Observation) -> TaskRecord:
        conn = self._connection()
        with _transaction(conn):
            found = conn.execute(_SELECT + " WHERE task_id = ?", (observation.task_id,)).fetchone()
            old = None if found is None else _decode(found)
            new = advance(old, observation, now=datetime.now(UTC))
            if new is not old:
                values = _encode(new)
                if old is None:
                    conn.execute(_INSERT, (*values, batch_of(new.task_id)))
                else:
                    conn.execute(_UPDATE, (*values[1:], values[0]))
                conn.executemany(_ADD_COUNT, counters.deltas(old, new))
            conn.execute(_INSERT_EVENT, _encode_event(observation))
            if observation.kind is EventKind.PROGRESS:
                conn.execute(_TRIM_PROGRESS, (observation.task_id, observation.task_id))
        return new

    async def apply(self, observation: Observation) -> TaskRecord:
        """Store one observation; StoreDataError if its values cannot be stored, and
        StoreUnavailableError if the file is locked or unusable (see `spectask.store.errors`)."""
        observation = storable(observation)
        try:
            record = await self._run(self._apply_sync, observation)
        except (sqlite3.IntegrityError, sqlite3.DataError, OverflowError) as exc:
            # About the values (a CHECK or NOT NULL violation, an integer beyond 64 bits): the
            # same write would fail forever. A locked or unwritable file is OperationalError.
            raise StoreDataError(
                observation.task_id, f"SQLite refused it: {exc} ({type(exc).__name__})"
            ) from exc
        await self._maybe_prune()
        return record

    async def _maybe_prune(self) -> None:
        await self._prune_clock.prune_if_due(self.prune_events)

    def _prune_sync(self, before: datetime, limit: int) -> int:
        conn = self._connection()
        with _transaction(conn):
            return conn.execute(_PRUNE_EVENTS, (_encode_time(before), limit)).rowcount

    async def prune_events(self, before: datetime, limit: int = events.PRUNE_BATCH) -> int:
        return await self._run(self._prune_sync, before, limit)

    def _events_sync(self, task_id: str, limit: int) -> builtins.list[events.StoredEvent]:
        found = self._connection().execute(_SELECT_EVENTS, (task_id, limit)).fetchall()
        return [_decode_event(row) for row in found]

    async def events(
        self, task_id: str, limit: int = events.DEFAULT_EVENTS_LIMIT
    ) -> builtins.list[events.StoredEvent]:
        return await self._run(self._events_sync, task_id, limit)

    async def apply_event(self, event: models.TaskEvent) -> TaskRecord:
        return await self.apply(observation_from_event(event))

    async def apply_result(self, result: models.TaskResult) -> TaskRecord:
        return await self.apply(observation_from_result(result))

    def _query(self, sql: str, params: tuple[Any, ...]) -> builtins.list[TaskRecord]:
        return [_decode(row) for row in self._connection().execute(sql, params).fetchall()]

    async def get(self, task_id: str) -> TaskRecord | None:
        found = await self._run(self._query, _SELECT + " WHERE task_id = ?", (task_id,))
        return found[0] if found else None

    async def get_many(self, task_ids: Iterable[str]) -> dict[str, TaskRecord]:
        records: dict[str, TaskRecord] = {}
        for chunk in rows.chunks(sorted(set(task_ids))):
            marks = ", ".join("?" for _ in chunk)
            sql = f"{_SELECT} WHERE task_id IN ({marks})"
            for record in await self._run(self._query, sql, tuple(chunk)):
                records[record.task_id] = record
        return records

    def _counts_sync(self, message_type: str | None) -> dict[TaskState, int]:
        sql, params = "SELECT state, SUM(n) FROM task_counts", tuple[str, ...]()
        if message_type is not None:
            sql, params = sql + " WHERE message_type = ?", (message_type,)
        found = self._connection().execute(sql + " GROUP BY state", params).fetchall()
        counts: dict[TaskState, int] = dict.fromkeys(STORED_STATES, 0)
        counts.update({from_storage_code(state): int(count) for state, count in found})
        return counts

    async def counts_by_state(self, message_type: str | None = None) -> dict[TaskState, int]:
        return await self._run(self._counts_sync, message_type)

    async def changed_since(
        self, cursor: ChangeCursor, limit: int = DEFAULT_LIST_LIMIT
    ) -> ChangePage:
        """The (updated_at, task_id) cursor alone is exact here: an apply stamps `updated_at`
        after `BEGIN IMMEDIATE` has taken the database's one write lock and commits before
        releasing it, so stamps grow in commit order (one machine's clock, as long as it is
        not set back), and a reader's snapshot holds every commit up to some point: no commit
        can land behind a cursor that a later one moved. PostgreSQL's writers overlap, see
        PostgresTaskStore.changed_since."""
        rows.check_page(limit, 0)
        sql = f"{_SELECT} WHERE (updated_at, task_id) > (?, ?) ORDER BY updated_at, task_id LIMIT ?"
        params = (_encode_time(cursor.updated_at), cursor.task_id, limit)
        found = await self._run(self._query, sql, params)
        if not found:
            return ChangePage(found, cursor)
        return ChangePage(found, ChangeCursor(found[-1].updated_at, found[-1].task_id))

    def _type_counts_sync(self) -> dict[str, dict[TaskState, int]]:
        sql = "SELECT message_type, state, n FROM task_counts"
        return rows.type_counts(self._connection().execute(sql).fetchall())

    async def counts_by_type(self) -> dict[str, dict[TaskState, int]]:
        return await self._run(self._type_counts_sync)

    def _recount_sync(self) -> None:
        conn = self._connection()
        with _transaction(conn):
            conn.execute("DELETE FROM task_counts")
            conn.execute(_COUNTS_FROM_TASKS)

    async def recount(self) -> None:
        await self._run(self._recount_sync)

    async def list(
        self,
        state: TaskState | None = None,
        message_type: str | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
        offset: int = 0,
        id_prefix: str | None = None,
        batch: str | None = None,
    ) -> builtins.list[TaskRecord]:
        rows.check_page(limit, offset)
        where, params = _filters(state, message_type, id_prefix, batch)
        sql = f"{_SELECT}{where} ORDER BY updated_at DESC, task_id DESC LIMIT ? OFFSET ?"
        return await self._run(self._query, sql, (*params, limit, offset))

    async def close(self) -> None:
        if self._closed:
            return
        if self._conn is not None:
            await self._run(self._conn.close)
        self._closed = True
        self._executor.shutdown(wait=True)


class _transaction:
    """`BEGIN IMMEDIATE` ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self._conn.execute("COMMIT")
        elif self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


def _filters(
    state: TaskState | None,
    message_type: str | None,
    id_prefix: str | None = None,
    batch: str | None = None,
) -> tuple[str, tuple[str | int, ...]]:
    clauses: list[str] = []
    params: list[str | int] = []
    if batch is not None:
        clauses.append("batch = ?")  # tasks_by_batch: the batch's newest rows first
        params.append(batch)
    if id_prefix:
        # a closed range on the primary key (text compares by code point here) finds the
        # ids at once however old they are; substr is the exact test (LIKE ignores case)
        clauses.append("task_id >= ? AND substr(task_id, 1, ?) = ?")
        params.extend((id_prefix, len(id_prefix), id_prefix))
        end = rows.prefix_end(id_prefix)
        if end is not None:
            clauses.append("task_id < ?")
            params.append(end)
    if state is not None:
        clauses.append("state = ?")
        params.append(storage_code(state))
    if message_type is not None:
        clauses.append("message_type = ?")
        params.append(message_type)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def _encode_time(value: datetime | None) -> str | None:
    """UTC ISO 8601 with microseconds: one fixed width, so text order is time order."""
    return None if value is None else value.astimezone(UTC).isoformat(timespec="microseconds")


def _encode(record: TaskRecord) -> tuple[Any, ...]:
    row = rows.to_row(record)
    for column in rows.TIME_COLUMNS:
        row[column] = _encode_time(row[column])
    for column in rows.JSON_COLUMNS:
        if row[column] is not None:
            row[column] = json.dumps(row[column], separators=(",", ":"), ensure_ascii=False)
    return tuple(row[column] for column in rows.COLUMNS)


def _encode_event(observation: Observation) -> tuple[Any, ...]:
    row = events.event_values(observation)
    row["at"] = _encode_time(row["at"])
    if row["error"] is not None:
        row["error"] = json.dumps(row["error"], separators=(",", ":"), ensure_ascii=False)
    row["payload_truncated"] = int(row["payload_truncated"])
    return tuple(row[column] for column in events.COLUMNS)


def _decode_event(found: sqlite3.Row) -> events.StoredEvent:
    row = dict(zip(events.COLUMNS[1:], found, strict=True))
    row["at"] = datetime.fromisoformat(row["at"])
    if row["error"] is not None:
        row["error"] = json.loads(row["error"])
    return events.from_values(row)


def _decode(found: sqlite3.Row) -> TaskRecord:
    row = dict(zip(rows.COLUMNS, found, strict=True))
    for column in rows.TIME_COLUMNS:
        if row[column] is not None:
            row[column] = datetime.fromisoformat(row[column])
    for column in rows.JSON_COLUMNS:
        if row[column] is not None:
            row[column] = json.loads(row[column])
    return rows.from_row(row)
