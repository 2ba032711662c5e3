"""The PostgreSQL task store: several collectors (and readers) on one database.

Driver: psycopg 3 (+ psycopg-pool) — maintained by the PostgreSQL driver's own authors, ships
type hints (mypy strict without stubs) and native async. Each apply is one transaction:
`SELECT ... FOR UPDATE` locks the task's row, `states.advance` computes the new record, and an
UPDATE writes it. A task not yet stored has no row to lock, so its first write is
`INSERT ... ON CONFLICT DO NOTHING`: if another collector inserted it first, this one
re-reads the (now locked) row and applies on top, so nothing is lost and there is one row.
`updated_at` comes from the database clock, the one clock all collectors share.
"""

from __future__ import annotations

import builtins
import logging
import time
import zlib
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from spectask.protocol import models
from spectask.store import counters, events, rows
from spectask.store.batches import batch_of
from spectask.store.errors import StoreDataError, StoreSchemaError, StoreUnavailableError
from spectask.store.migrations import COUNTS_FROM_TASKS, SCHEMA_VERSION_POSTGRES, pending
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
from spectask.store.url import redact

Connection = psycopg.AsyncConnection[DictRow]
log = logging.getLogger(__name__)

DEFAULT_POOL_SIZE = 4
DEFAULT_CONNECT_TIMEOUT = 10.0
# pg_advisory_xact_lock key serializing migrations of every spectask store on a server.
MIGRATION_LOCK = zlib.crc32(b"spectask.store.migrations")

_SELECT = f"SELECT {rows.SELECT_COLUMNS} FROM tasks"
_WRITTEN = [column for column in rows.COLUMNS if column != "updated_at"]
# the batch is written once, with the row: it follows from the id (spectask.store.batches)
_INSERT = (
    f"INSERT INTO tasks ({', '.join(_WRITTEN)}, batch, xid, updated_at) "
    f"VALUES ({', '.join(f'%({column})s' for column in _WRITTEN)}, %(batch)s, "
    "pg_current_xact_id(), clock_timestamp()) "
    "ON CONFLICT (task_id) DO NOTHING RETURNING updated_at"
)
_UPDATE = (
    "UPDATE tasks SET "
    + ", ".join(f"{column} = %({column})s" for column in _WRITTEN[1:])
    + ", xid = pg_current_xact_id(), updated_at = clock_timestamp() "
    "WHERE task_id = %(task_id)s RETURNING updated_at"
)
_INSERT_EVENT = "INSERT INTO task_events ({}) VALUES ({}) ON CONFLICT DO NOTHING".format(
    ", ".join(events.COLUMNS), ", ".join(f"%({column})s" for column in events.COLUMNS)
)
# the newest PROGRESS_KEPT progress rows of a task stay; the subquery is the oldest kept
_TRIM_PROGRESS = (
    "DELETE FROM task_events WHERE task_id = %(task_id)s AND kind = 'progress' AND seq < ("
    "SELECT seq FROM task_events WHERE task_id = %(task_id)s AND kind = 'progress' "
    f"ORDER BY seq DESC LIMIT 1 OFFSET {events.PROGRESS_KEPT - 1})"
)
_SELECT_EVENTS = (
    f"SELECT {events.SELECT_COLUMNS} FROM task_events WHERE task_id = %(id)s "
    "ORDER BY at, seq LIMIT %(limit)s"
)
# SKIP LOCKED: collectors pruning at once take different rows instead of waiting on (or
# deadlocking with) each other
_PRUNE_EVENTS = (
    "DELETE FROM task_events WHERE seq IN (SELECT seq FROM task_events WHERE at < %(before)s "
    "LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
)
_ADD_DELTA = "INSERT INTO task_count_deltas (message_type, state, n) VALUES (%s, %s, %s)"
_COUNTS = (
    "SELECT message_type, state, SUM(n) AS n FROM (SELECT message_type, state, n FROM "
    "task_counts UNION ALL SELECT message_type, state, n FROM task_count_deltas) AS c "
    "{where}GROUP BY message_type, state"
)
# one transaction: the deltas folded are the deltas deleted (spectask.store.counters)
_FOLD_DELTAS = (
    "WITH moved AS (DELETE FROM task_count_deltas WHERE seq IN (SELECT seq FROM "
    "task_count_deltas ORDER BY seq LIMIT %(limit)s) RETURNING message_type, state, n), "
    "summed AS (SELECT message_type, state, SUM(n) AS n FROM moved GROUP BY message_type, state) "
    "INSERT INTO task_counts (message_type, state, n) SELECT message_type, state, n FROM summed "
    "ON CONFLICT (message_type, state) DO UPDATE SET n = task_counts.n + excluded.n"
)
# An apply's first statement: the task's row, locked, and the transaction's id, assigned here
# if the row is new (nothing to lock), so every writer has its id before it stamps
# updated_at (see changed_since).
_LOCK = (
    "SELECT pg_current_xact_id() AS writer, found.* FROM (VALUES (1)) AS one LEFT JOIN "
    f"LATERAL ({_SELECT} WHERE task_id = %(id)s FOR UPDATE) AS found ON true"
)
# One statement, so one snapshot: the records after the cursor, those the transactions in
# progress at the last read (`late`, from its snapshot) wrote behind it, and this read's own
# snapshot. The ids go as values, not as pg_snapshot_xip() in the query: the planner then
# sees they are rare (an unknown id was costed as the table's commonest one, the xid of a
# bulk load or the migration's 0: a million rows, which switched on JIT, 180 ms a read).
_CHANGES = (
    "SELECT snap.snapshot, page.* FROM (SELECT pg_current_snapshot()::text AS snapshot) AS snap "
    "LEFT JOIN LATERAL ("
    f"(SELECT {rows.SELECT_COLUMNS}, false AS late FROM tasks "
    "WHERE (updated_at, task_id) > (%(after)s, %(after_id)s) "
    "ORDER BY updated_at, task_id LIMIT %(limit)s) UNION ALL "
    f"(SELECT {rows.SELECT_COLUMNS}, true AS late FROM tasks "
    "WHERE xid = ANY(%(late)s::text[]::xid8[]) "
    "AND (updated_at, task_id) <= (%(after)s, %(after_id)s)) "
    "ORDER BY updated_at, task_id LIMIT %(limit)s) AS page ON true"
)
# A lost insert race costs one more round; more than a few means something else is wrong.
_APPLY_ROUNDS = 3


class PostgresTaskStore:
    """A `TaskStore` on PostgreSQL; open it with `await PostgresTaskStore.open(url)`."""

    def __init__(
        self,
        url: str,
        pool: AsyncConnectionPool[Connection],
        events_retention: timedelta | None = None,
        prune_interval: float = PRUNE_INTERVAL,
    ) -> None:
        self.url = redact(url)
        self._pool = pool
        self._prune_clock = PruneClock(events_retention, prune_interval)
        self._folded_at = -float("inf")

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        events_retention: timedelta | None = None,
        prune_interval: float = PRUNE_INTERVAL,
    ) -> PostgresTaskStore:
        """Connect, migrate the schema, and start a small connection pool.

        `events_retention`: task events older than this are deleted (None keeps them), a
        batch after an apply at most every `prune_interval` seconds."""
        try:
            # One direct connection first: its error says why (auth, no database, no server),
            # where a pool would only time out.
            conn = await psycopg.AsyncConnection.connect(
                url,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=max(1, round(connect_timeout)),
            )
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"cannot connect to the PostgreSQL task store {redact(url)}: {exc}".strip()
            ) from exc
        async with conn:
            try:
                await _migrate(conn)
            except psycopg.Error as exc:
                raise StoreSchemaError(
                    f"cannot create or migrate the task store schema in {redact(url)}: {exc}; "
                    "the user needs CREATE rights on the database's public schema"
                ) from exc
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url,
            connection_class=Connection,
            kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=1,
            max_size=pool_size,
            timeout=connect_timeout,
            open=False,
            name="spectask-store",
        )
        try:
            await pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout as exc:
            await pool.close()
            raise StoreUnavailableError(f"PostgreSQL task store {redact(url)}: {exc}") from exc
        return cls(url, pool, events_retention, prune_interval)

    async def apply(self, observation: Observation) -> TaskRecord:
        """Store one observation; StoreDataError if PostgreSQL refuses its values, and
        StoreUnavailableError if the database cannot be reached (see `spectask.store.errors`)."""
        observation = storable(observation)
        try:
            async with self._pool.connection() as conn:
                for _ in range(_APPLY_ROUNDS):
                    async with conn.transaction():
                        applied = await _apply_once(conn, observation)
                    if applied is not None:
                        break
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            # About the values, not the database: out of range, untranslatable text, invalid
            # JSON, a CHECK or NOT NULL violation. The same write would fail forever.
            problem = exc.diag.message_primary or str(exc)
            raise StoreDataError(
                observation.task_id, f"PostgreSQL refused it: {problem} ({type(exc).__name__})"
            ) from exc
        if applied is None:
            raise StoreUnavailableError(
                f"task {observation.task_id!r}: could neither insert nor lock its row "
                f"in {_APPLY_ROUNDS} rounds; is something deleting rows from {self.url}?"
            )
        await self._maybe_fold()
        await self._maybe_prune()
        return applied

    async def _maybe_fold(self) -> None:
        """Fold the count deltas into task_counts, at most every COMPACT_INTERVAL seconds."""
        if time.monotonic() - self._folded_at < counters.COMPACT_INTERVAL:
            return
        self._folded_at = time.monotonic()
        try:
            await self.fold_counts()
        except StoreUnavailableError as exc:
            log.warning("task count deltas not folded this time: %s", exc)

    async def fold_counts(self, limit: int = counters.COMPACT_BATCH) -> bool:
        """One fold of up to `limit` deltas; False if another store is folding right now."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cursor = await conn.execute(
                    "SELECT pg_try_advisory_xact_lock(%(key)s) AS got",
                    {"key": counters.COMPACT_LOCK},
                )
                found = await cursor.fetchone()
                if found is None or not found["got"]:
                    return False
                await conn.execute(_FOLD_DELTAS, {"limit": limit})
                return True
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc

    async def recount(self) -> None:
        """Rebuild the counts from the table. EXCLUSIVE on the deltas waits for the applies in
        flight to commit and holds new ones (and folds) back until this one has."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("LOCK TABLE task_count_deltas IN EXCLUSIVE MODE")
                await conn.execute("DELETE FROM task_count_deltas")
                await conn.execute("DELETE FROM task_counts")
                await conn.execute(COUNTS_FROM_TASKS)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc

    async def _maybe_prune(self) -> None:
        await self._prune_clock.prune_if_due(self.prune_events)

    async def prune_events(self, before: datetime, limit: int = events.PRUNE_BATCH) -> int:
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(_PRUNE_EVENTS, {"before": before, "limit": limit})
                return cursor.rowcount
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc

    async def events(
        self, task_id: str, limit: int = events.DEFAULT_EVENTS_LIMIT
    ) -> builtins.list[events.StoredEvent]:
        found = await self._fetch(_SELECT_EVENTS, {"id": task_id, "limit": limit})
        return [_decode_event(row) for row in found]

    async def apply_event(self, event: models.TaskEvent) -> TaskRecord:
        return await self.apply(observation_from_event(event))

    async def apply_result(self, result: models.TaskResult) -> TaskRecord:
        return await self.apply(observation_from_result(result))

    async def _fetch(self, sql: str, params: dict[str, Any]) -> builtins.list[DictRow]:
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(sql, params)
                return await cursor.fetchall()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: Exception) -> StoreUnavailableError:
        return StoreUnavailableError(f"PostgreSQL task store {self.url}: {exc}")

    async def get(self, task_id: str) -> TaskRecord | None:
        found = await self._fetch(_SELECT + " WHERE task_id = %(id)s", {"id": task_id})
        return rows.from_row(found[0]) if found else None

    async def get_many(self, task_ids: Iterable[str]) -> dict[str, TaskRecord]:
        records: dict[str, TaskRecord] = {}
        for chunk in rows.chunks(sorted(set(task_ids))):
            sql = _SELECT + " WHERE task_id = ANY(%(ids)s)"
            for found in await self._fetch(sql, {"ids": chunk}):
                record = rows.from_row(found)
                records[record.task_id] = record
        return records

    async def counts_by_state(self, message_type: str | None = None) -> dict[TaskState, int]:
        where = "" if message_type is None else "WHERE message_type = %(type)s "
        found = await self._fetch(_COUNTS.format(where=where), {"type": message_type})
        counts: dict[TaskState, int] = dict.fromkeys(STORED_STATES, 0)
        for row in found:
            counts[from_storage_code(row["state"])] += int(row["n"])
        return counts

    async def changed_since(
        self, cursor: ChangeCursor, limit: int = DEFAULT_LIST_LIMIT
    ) -> ChangePage:
        """The changes after `cursor`, including late commits behind it.

        Writers overlap here: `updated_at` is `clock_timestamp()` at the UPDATE, so a
        transaction that stamps first can commit last, after a reader saw (and its cursor
        passed) a row stamped later; read by (updated_at, task_id) alone, its row was never
        seen until a full reload. The fix is PgQ's: every row carries its writer's
        transaction id (`tasks.xid`, migration 7), each read returns its own snapshot, and
        the next read also takes the rows behind the cursor written by the transactions
        that snapshot had in progress (`pg_snapshot_xip`, a short list probed through
        tasks_by_xid). Nothing else can land behind it: an apply gets its transaction id in
        its first statement (_LOCK), before it stamps, so a transaction that had no id yet
        at the last read stamps after every row that read could see, ahead of the cursor.
        Each change is read once: a row found behind the cursor was invisible to every
        earlier read. (More than `limit` late rows at once would move the cursor back and
        read some records twice; never miss one.)

        Chosen over re-reading a lookback window behind the cursor: that is correct only
        while no transaction stays open longer than the window (a collector stalled between
        its stamp and its commit, on a loaded machine, is not bounded), and it re-reads the
        whole window every tick. This costs one index entry per row version, and a tick two
        index probes more. Rows written past the store (a bulk load) are followed by their
        stamps only.
        """
        rows.check_page(limit, 0)
        params = {
            "after": cursor.updated_at,
            "after_id": cursor.task_id,
            "late": in_progress(cursor.horizon),
            "limit": limit,
        }
        found = await self._fetch(_CHANGES, params)
        snapshot = str(found[0]["snapshot"])
        page = [row for row in found if row["task_id"] is not None]
        records = [rows.from_row(row) for row in page]
        ahead = [record for record, row in zip(records, page, strict=True) if not row["late"]]
        if len(page) == limit and page[-1]["late"]:
            last: TaskRecord | None = records[-1]  # more late rows than a page: step back
        else:
            last = ahead[-1] if ahead else None  # late rows are behind: the cursor stays
        if last is None:
            return ChangePage(records, replace(cursor, horizon=snapshot))
        return ChangePage(records, ChangeCursor(last.updated_at, last.task_id, snapshot))

    async def counts_by_type(self) -> dict[str, dict[TaskState, int]]:
        found = await self._fetch(_COUNTS.format(where=""), {})
        return rows.type_counts([(r["message_type"], r["state"], r["n"]) for r in found])

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
        clauses = []
        if batch is not None:
            clauses.append("batch = %(batch)s")  # tasks_by_batch: the batch's newest first
        if id_prefix:
            # byte-wise operators: the tasks_by_id_pattern index, whatever the collation
            clauses.append("task_id ~>=~ %(prefix)s")
            if rows.prefix_end(id_prefix) is not None:
                clauses.append("task_id ~<~ %(end)s")
        if state is not None:
            clauses.append("state = %(state)s")
        if message_type is not None:
            clauses.append("message_type = %(type)s")
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        page = " ORDER BY updated_at DESC, task_id DESC LIMIT %(limit)s OFFSET %(offset)s"
        if id_prefix:
            # The planner guesses a prefix range matches 1% of the table and walks the
            # updated_at index instead, reading all of it when few ids match (7 s at 1M
            # rows): select the range first, then page what it found.
            sql = f"WITH matched AS MATERIALIZED ({_SELECT}{where}) SELECT * FROM matched{page}"
        else:
            sql = f"{_SELECT}{where}{page}"
        params = {
            "state": None if state is None else storage_code(state),
            "type": message_type,
            "limit": limit,
            "offset": offset,
            "prefix": id_prefix,
            "batch": batch,
            "end": rows.prefix_end(id_prefix) if id_prefix else None,
        }
        return [rows.from_row(found) for found in await self._fetch(sql, params)]

    async def close(self) -> None:
        await self._pool.close()


def in_progress(snapshot: str | None) -> list[str]:
    """The transaction ids a pg_snapshot's text (`xmin:xmax:xip,...`) has in progress."""
    if snapshot is None:
        return []
    xip = snapshot.split(":")[2]
    return xip.split(",") if xip else []


async def _apply_once(conn: Connection, observation: Observation) -> TaskRecord | None:
    """One transaction's work; None if another collector inserted the task first."""
    cursor = await conn.execute(_LOCK, {"id": observation.task_id})
    found = await cursor.fetchone()
    old = None if found is None or found["task_id"] is None else rows.from_row(found)
    new = advance(old, observation, now=datetime.now(UTC))
    if new is not old:
        if old is None:
            cursor = await conn.execute(_INSERT, {**_params(new), "batch": batch_of(new.task_id)})
        else:
            cursor = await conn.execute(_UPDATE, _params(new))
        written = await cursor.fetchone()
        if written is None:
            return None
        # INSERT only: no row another collector locks (spectask.store.counters)
        async with conn.cursor() as cursor:
            await cursor.executemany(_ADD_DELTA, counters.deltas(old, new))
        new = replace(new, updated_at=written["updated_at"].astimezone(UTC))
    # under the task row's lock (taken or inserted above): one task's events never interleave
    await conn.execute(_INSERT_EVENT, _event_params(observation))
    if observation.kind is EventKind.PROGRESS:
        await conn.execute(_TRIM_PROGRESS, {"task_id": observation.task_id})
    return new


def _event_params(observation: Observation) -> dict[str, Any]:
    row = events.event_values(observation)
    if row["error"] is not None:
        row["error"] = Jsonb(row["error"])
    return row


def _decode_event(found: DictRow) -> events.StoredEvent:
    row = dict(found)
    row["at"] = row["at"].astimezone(UTC)
    return events.from_values(row)


def _params(record: TaskRecord) -> dict[str, Any]:
    row = rows.to_row(record)
    for column in rows.JSON_COLUMNS:
        if row[column] is not None:
            row[column] = Jsonb(row[column])
    return row


async def _migrate(conn: Connection) -> None:
    """Apply pending steps under an advisory lock, so concurrent openers apply each once."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%(key)s)", {"key": MIGRATION_LOCK})
        await conn.execute(SCHEMA_VERSION_POSTGRES)
        cursor = await conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
        found = await cursor.fetchone()
        for step in pending(0 if found is None else int(found["v"])):
            for statement in step.postgres:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (version, description) VALUES (%(v)s, %(d)s)",
                {"v": step.version, "d": step.description},
            )
