"""Dead letters: the original body, unchanged, published with headers that say why.

A dead letter is published with a confirm before the original delivery is acked, so a task is
never lost between its queue and `dead_letter`; the headers are what `spectask dlq` reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from spectask.protocol import names
from spectask.protocol.models import DeadLetterReason
from spectask.protocol.names import FIRST_FAILURE_HEADER
from spectask.runtime.publisher import OutgoingMessage
from spectask.runtime.retry import portable_headers
from spectask.runtime.topology import SendRoute

MAX_ERROR_CHARS = 2000
MAX_TRACEBACK_CHARS = 4000


# Why a task was dead-lettered: the protocol's enum. After a handler ran: `permanent` (it
# raised PermanentTaskError: no retries), `timeout` (the last attempt ran past the time limit),
# `attempts_exhausted` (the last attempt raised), `exception` (it raised, and the policy asks
# for more attempts but has no retry tiers to wait in).
DeadReason = DeadLetterReason


def build_dead_letter(
    route: SendRoute,
    *,
    body: bytes,
    message_id: str,
    message_type: str,
    original_headers: Mapping[str, Any],
    reason: DeadReason,
    error: str,
    origin_queue: str,
    origin_exchange: str,
    origin_routing_key: str,
    attempts: int,
    traceback: str = "",
    content_type: str | None = None,
    priority: int | None = None,
) -> OutgoingMessage:
    """The dead-letter message for one delivery, keeping its original headers too."""
    now = datetime.now(UTC).isoformat()
    headers = portable_headers(original_headers)
    headers.update(
        {
            names.REASON_HEADER: reason.value,
            names.ERROR_HEADER: error[:MAX_ERROR_CHARS],
            names.ATTEMPTS_HEADER: attempts,
            names.ORIGIN_QUEUE_HEADER: origin_queue,
            names.ORIGIN_EXCHANGE_HEADER: origin_exchange,
            names.ORIGIN_ROUTING_KEY_HEADER: origin_routing_key,
            names.LAST_FAILURE_HEADER: now,
        }
    )
    headers.setdefault(FIRST_FAILURE_HEADER, now)
    if traceback:
        headers[names.TRACEBACK_HEADER] = traceback[-MAX_TRACEBACK_CHARS:]
    return OutgoingMessage(
        exchange=route.exchange,
        routing_key=route.routing_key,
        body=body,
        message_id=message_id,
        message_type=message_type,
        headers=headers,
        # A task without a content type was read as JSON; keeping that makes a replay work.
        content_type=content_type or "application/json",
        priority=priority,
    )
