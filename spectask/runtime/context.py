"""What a handler knows about the task it is running."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class TaskContext:
    """Delivery facts a handler may need: ids, attempt, who runs it, when it was submitted.

    `headers` are the message's AMQP headers as received (read-only by convention).
    """

    task_id: str
    message_type: str
    task_type: str
    operation: str
    attempt: int
    worker_id: str
    routing_key: str
    redelivered: bool
    submitted_at: datetime | None
    priority: int
    headers: Mapping[str, Any] = field(default_factory=dict)
