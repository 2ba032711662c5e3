"""What a handler knows about the task it is running."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class TaskContext:
    """Delivery facts a handler may need: ids, attempt, who runs it, when it was submitted."""

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
