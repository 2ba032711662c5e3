"""What both backends can hold: an observation checked and normalised before any write.

The collector stores what untrusted messages say (any client can publish a task, a result or
an event), so a value a database cannot hold must not reach it as a driver error that looks
like an outage. Both backends run `storable` first, so they accept and refuse the same input
and read back the same text:
- text that is merely unrepresentable but harmless is normalised: PostgreSQL cannot hold a NUL
  character in `text` or `jsonb`, and neither driver can encode a lone UTF-16 surrogate; each
  becomes U+FFFD (the replacement character), in every text field and in the result's keys and
  strings, so the record still says what the message said, minus the bytes it could not keep;
- a value that would change meaning is refused with a `StoreDataError` that names it, never
  clamped: an attempt beyond PostgreSQL's INTEGER (`MAX_ATTEMPT`, refused on SQLite too), a
  task id with a character it cannot hold (replacing one would alias two ids), a result number
  that is not finite (jsonb has no NaN or Infinity).
A backend still maps what its database refuses after that (a range or CHECK violation) to a
`StoreDataError`, and what is about the database itself to a `StoreUnavailableError`.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

from spectask.store.errors import StoreDataError
from spectask.store.observations import Observation
from spectask.store.records import ErrorDetail

# The `attempts INTEGER` column on PostgreSQL (SQLite's INTEGER is 64-bit; it refuses the same).
MAX_ATTEMPT = 2**31 - 1
REPLACEMENT = "\ufffd"
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")
_TEXT_FIELDS = ("message_type", "worker_id", "progress_message", "dead_reason", "payload")


def storable(observation: Observation) -> Observation:
    """`observation` as both backends store it (the same object if nothing needed changing).

    Raises StoreDataError for what cannot be stored without changing its meaning.
    """
    task_id = observation.task_id
    if not storable_id(task_id):
        raise StoreDataError(
            task_id, "its task id holds a NUL character or a lone surrogate, which no store keeps"
        )
    if observation.attempt > MAX_ATTEMPT:
        raise StoreDataError(
            task_id,
            f"attempt {observation.attempt} is out of range (the store holds 1..{MAX_ATTEMPT})",
        )
    changes: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        value = getattr(observation, name)
        if value is not None and (clean := clean_text(value)) is not value:
            changes[name] = clean
    error = observation.error
    if error is not None:
        clean_error = ErrorDetail(
            type=clean_text(error.type),
            message=clean_text(error.message),
            traceback=None if error.traceback is None else clean_text(error.traceback),
        )
        if clean_error != error:
            changes["error"] = clean_error
    if observation.result is not None:
        result = _clean_json(observation.result, task_id, "result")
        if result is not observation.result:
            changes["result"] = result
    return replace(observation, **changes) if changes else observation


def storable_id(task_id: str) -> bool:
    """Whether a store can hold (and so look up) this task id."""
    return not _UNSTORABLE_TEXT.search(task_id)


def clean_text(text: str) -> str:
    """`text` with each NUL and lone surrogate replaced by U+FFFD (itself if it has none)."""
    if text.isascii() and "\x00" not in text:
        return text
    if not _UNSTORABLE_TEXT.search(text):
        return text
    return _UNSTORABLE_TEXT.sub(REPLACEMENT, text)


def _clean_json(value: Any, task_id: str, where: str) -> Any:
    """A JSON value with its strings cleaned; the same object when nothing changed."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise StoreDataError(task_id, f"{where} holds {value!r}, which JSON cannot store")
        return value
    if isinstance(value, dict):
        changed = False
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            clean_key = clean_text(key) if isinstance(key, str) else key
            clean_item = _clean_json(item, task_id, f"{where}.{clean_key}")
            changed = changed or clean_key is not key or clean_item is not item
            cleaned[clean_key] = clean_item
        return cleaned if changed else value
    if isinstance(value, list):
        items = [_clean_json(item, task_id, f"{where}[{i}]") for i, item in enumerate(value)]
        if any(new is not old for new, old in zip(items, value, strict=True)):
            return items
        return value
    return value
