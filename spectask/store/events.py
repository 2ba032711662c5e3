"""A task's timeline: one stored row per observation, bounded, so the task page shows its life.

The `tasks` row keeps the latest state only; the dashboard's task page wants what happened:
queued, started, progress, retrying with its error, the result, the dead letter. Each backend
writes one `task_events` row in the same transaction as the record's update (one more INSERT
per message, no extra round trip to the broker), under the task row's lock, so several
collectors never interleave writes of one task's events. Bounds, so history cannot grow
without limit:
- a redelivered message writes nothing new (a unique key on task, time, kind, source, attempt);
- at most `PROGRESS_KEPT` progress rows per task (the newest; older ones are deleted then);
- the task's payload, from the broker's copy, is kept up to `PAYLOAD_LIMIT` bytes of JSON text
  and marked truncated past that (a preview, not the task);
- events older than the retention (`SPECTASK_EVENTS_RETENTION_DAYS`, see
  `spectask.store.retention`) are deleted by the collector's own store, a bounded batch at a
  time, at most once per `PRUNE_INTERVAL` seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from spectask.store.observations import EventKind, Observation
from spectask.store.records import ErrorDetail

PROGRESS_KEPT = 20
PAYLOAD_LIMIT = 64 * 1024
DEFAULT_EVENTS_LIMIT = 200
PRUNE_BATCH = 5000

# The column order both backends write and read.
COLUMNS = (
    "task_id",
    "at",
    "kind",
    "source",
    "attempt",
    "worker_id",
    "progress",
    "message",
    "error",
    "payload",
    "payload_truncated",
)
SELECT_COLUMNS = ", ".join(COLUMNS[1:])


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One step of a task's timeline as stored (`kind` is the protocol's EventKind)."""

    at: datetime
    kind: EventKind
    source: str
    attempt: int
    worker_id: str | None = None
    progress: float | None = None
    message: str | None = None
    error: ErrorDetail | None = None
    payload: str | None = None
    payload_truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        """The step as the dashboard's API shows it (`queued` for the broker's copy)."""
        document: dict[str, Any] = {
            "event": "queued" if self.kind is EventKind.SUBMITTED else self.kind.value,
            "source": self.source,
            "at": self.at.isoformat(),
            "attempt": self.attempt,
        }
        optional = {"worker_id": self.worker_id, "progress": self.progress, "message": self.message}
        document.update({key: value for key, value in optional.items() if value is not None})
        if self.error is not None:
            document["error"] = f"{self.error.type}: {self.error.message}"
        return document


def capped_payload(body: Any) -> tuple[str, bool]:
    """A task body as text, cut at `PAYLOAD_LIMIT` bytes; (text, truncated).

    Bytes (the broker's copy, as it was published) are kept as they are, decoded as UTF-8
    with bad bytes replaced, so storing costs no JSON round trip; a decoded value is dumped
    as compact JSON. The reader decodes the text, and shows it as is if it is not JSON.
    """
    if isinstance(body, bytes | bytearray | memoryview):
        encoded = bytes(body)
        return encoded[:PAYLOAD_LIMIT].decode("utf-8", "replace"), len(encoded) > PAYLOAD_LIMIT
    if isinstance(body, str):
        text = body
    else:
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= PAYLOAD_LIMIT:
        return text, False
    return encoded[:PAYLOAD_LIMIT].decode("utf-8", "ignore"), True


def event_values(observation: Observation) -> dict[str, Any]:
    """The `task_events` row of an observation, by column (times and JSON not yet encoded)."""
    message = observation.progress_message or observation.dead_reason
    return {
        "task_id": observation.task_id,
        "at": observation.at,
        "kind": observation.kind.value,
        "source": observation.source,
        "attempt": observation.attempt,
        "worker_id": observation.worker_id,
        "progress": observation.progress,
        "message": message,
        "error": None if observation.error is None else observation.error.to_json(),
        "payload": observation.payload,
        "payload_truncated": observation.payload_truncated,
    }


def from_values(values: dict[str, Any]) -> StoredEvent:
    """A row read back (times decoded, error as a mapping or None) as a StoredEvent."""
    error = values["error"]
    return StoredEvent(
        at=values["at"],
        kind=EventKind(values["kind"]),
        source=values["source"],
        attempt=int(values["attempt"]),
        worker_id=values["worker_id"],
        progress=values["progress"],
        message=values["message"],
        error=None if error is None else ErrorDetail.from_json(error),
        payload=values["payload"],
        payload_truncated=bool(values["payload_truncated"]),
    )
