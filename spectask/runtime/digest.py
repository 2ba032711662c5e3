"""Which task a message is: a digest of its message type and body, the same at every hop.

A task id is meant to be unique for all time, but a producer can reuse one (a fixed id, a
batch label from an older spectask). The digest tells "the same task again" (a redelivery,
a retry, a resubmit: same type, same body) from "another task under a used id": the collector
computes it from its copy of each task, the worker from the task it ran (and puts it in the
result), and the store refuses an observation whose digest differs from the one it recorded
(`duplicate_id`, see spectask.store.states). Retries keep the body unchanged, so they keep it.
"""

from __future__ import annotations

import hashlib

DIGEST_CHARS = 32  # 128 bits: the protocol's TaskResult.task_digest pattern


def task_digest(message_type: str, body: bytes) -> str:
    """The first 32 hex digits of SHA-256(message type, NUL, body)."""
    digest = hashlib.sha256(message_type.encode("utf-8", "surrogateescape"))
    digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()[:DIGEST_CHARS]
