"""Dead letters RabbitMQ writes itself: read as if spectask had written them.

Every other dead letter is published by the runtime with headers that say why
(`spectask.runtime.deadletter`). One kind is not: a quorum task queue that stops redelivering a
task after its `x-delivery-limit` (a poison message whose handler kills its worker each time)
dead-letters it on its own, and the broker can only add its `x-death` record. Measured on
RabbitMQ 3.10.8: the newest record (first in the list) says `reason: delivery_limit`, the queue,
the exchange the task was published to and its routing keys; `x-first-death-*` may name an
older death (a retry tier's `expired`), so only the newest record counts.

`with_reason` gives such a message the protocol's dead-letter headers, so the collector's store
and `spectask dlq` (list, replay to its origin) treat it like any other dead letter.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from spectask.protocol import names
from spectask.protocol.models import DeadLetterReason

DEATHS_HEADER = "x-death"
BROKER_REASONS = {DeadLetterReason.DELIVERY_LIMIT.value: DeadLetterReason.DELIVERY_LIMIT}
"""x-death reasons that mean a task queue gave up on a task (the protocol's reason for each)."""


def with_reason(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The headers, with the dead-letter headers filled in from a broker's own dead-lettering.

    Headers that already say why (x-spectask-reason), or carry no broker death of a task
    queue, are returned unchanged.
    """
    result = dict(headers)
    deaths = result.get(DEATHS_HEADER)
    if names.REASON_HEADER in result or not isinstance(deaths, list) or not deaths:
        return result
    death = deaths[0]
    if not isinstance(death, Mapping):
        return result
    reason = BROKER_REASONS.get(_text(death.get("reason")))
    if reason is None:
        return result
    keys = death.get("routing-keys")
    routing_key = _text(keys[0]) if isinstance(keys, list) and keys else ""
    when = death.get("time")
    attempt = result.get(names.ATTEMPT_HEADER)
    result.update(
        {
            names.REASON_HEADER: reason.value,
            names.ERROR_HEADER: "RabbitMQ stopped redelivering the task after its queue's "
            "x-delivery-limit: its worker died or lost its connection on every delivery "
            "(a poison message?); replay it once the handler is fixed",
            names.ATTEMPTS_HEADER: attempt if isinstance(attempt, int) else 1,
            names.ORIGIN_QUEUE_HEADER: _text(death.get("queue")),
            names.ORIGIN_EXCHANGE_HEADER: _text(death.get("exchange")),
            names.ORIGIN_ROUTING_KEY_HEADER: routing_key,
        }
    )
    if isinstance(when, datetime):
        result[names.LAST_FAILURE_HEADER] = when.isoformat()
    return result


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else ""
