"""The `tasks` table's columns and the record <-> row mapping both backends share.

Rows here hold Python values (datetimes, dicts); each backend adapts them to what its driver
stores (SQLite: ISO 8601 text and JSON text; PostgreSQL: timestamptz and jsonb).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from spectask.store.observations import as_utc
from spectask.store.records import ErrorDetail, TaskRecord
from spectask.store.states import STORED_STATES, TaskState, from_storage_code, storage_code

COLUMNS = (
    "task_id",
    "message_type",
    "state",
    "attempts",
    "worker_id",
    "worker_at",
    "progress",
    "progress_message",
    "submitted_at",
    "started_at",
    "finished_at",
    "state_at",
    "updated_at",
    "result",
    "error",
    "dead_reason",
    "task_digest",
)
TIME_COLUMNS = frozenset(
    {"worker_at", "submitted_at", "started_at", "finished_at", "state_at", "updated_at"}
)
JSON_COLUMNS = frozenset({"result", "error"})
SELECT_COLUMNS = ", ".join(COLUMNS)
# How many ids one `IN (...)` query takes (SQLite's variable limit is 32766; stay well below).
ID_CHUNK = 500


def to_row(record: TaskRecord) -> dict[str, Any]:
    """A record as column values (JSON columns as dicts, times as aware datetimes)."""
    return {
        "task_id": record.task_id,
        "message_type": record.message_type,
        "state": storage_code(record.state),
        "attempts": record.attempts,
        "worker_id": record.worker_id,
        "worker_at": record.worker_at,
        "progress": record.progress,
        "progress_message": record.progress_message,
        "submitted_at": record.submitted_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "state_at": record.state_at,
        "updated_at": record.updated_at,
        "result": record.result,
        "error": None if record.error is None else record.error.to_json(),
        "dead_reason": record.dead_reason,
        "task_digest": record.task_digest,
    }


def from_row(row: Mapping[str, Any]) -> TaskRecord:
    """The record a row holds (times in UTC, whatever the driver's session time zone)."""
    error = row["error"]
    progress = row["progress"]
    return TaskRecord(
        task_id=row["task_id"],
        message_type=row["message_type"],
        state=from_storage_code(row["state"]),
        attempts=int(row["attempts"]),
        worker_id=row["worker_id"],
        worker_at=_utc(row["worker_at"]),
        progress=None if progress is None else float(progress),
        progress_message=row["progress_message"],
        submitted_at=_utc(row["submitted_at"]),
        started_at=_utc(row["started_at"]),
        finished_at=_utc(row["finished_at"]),
        state_at=_utc(row["state_at"]),
        updated_at=as_utc(row["updated_at"], "updated_at"),
        result=row["result"],
        error=None if error is None else ErrorDetail.from_json(error),
        dead_reason=row["dead_reason"],
        task_digest=row["task_digest"],
    )


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def check_page(limit: int, offset: int) -> None:
    """Refuse a negative page (SQLite would read LIMIT -1 as "no limit")."""
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must be >= 0, got limit={limit}, offset={offset}")


def chunks(ids: list[str], size: int = ID_CHUNK) -> list[list[str]]:
    """Ids in groups small enough for one query each."""
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def type_counts(found: Iterable[Sequence[Any]]) -> dict[str, dict[TaskState, int]]:
    """(message_type, state code, count) rows as {type: {state: n}}, every stored state present."""
    counts: dict[str, dict[TaskState, int]] = {}
    for message_type, state, count in found:
        per_state = counts.setdefault(message_type or "", dict.fromkeys(STORED_STATES, 0))
        per_state[from_storage_code(state)] += int(count)
    return counts


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` (code point order);
    None when there is none (the prefix is all U+10FFFF). Surrogates are skipped: no stored
    text holds one (the stores replace them with U+FFFD)."""
    stripped = prefix.rstrip(MAX_CHAR)
    if not stripped:
        return None
    following = ord(stripped[-1]) + 1
    if SURROGATES[0] <= following <= SURROGATES[1]:
        following = SURROGATES[1] + 1
    return stripped[:-1] + chr(following)


MAX_CHAR = "\U0010ffff"
SURROGATES = (0xD800, 0xDFFF)
