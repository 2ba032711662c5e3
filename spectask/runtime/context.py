"""What a handler knows about the task it is running, and how it talks back to its worker."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from spectask.errors import TaskCancelledError


class Signals(Protocol):
    """The running attempt's line to its worker: progress out, a cancel request in.

    Where the handler runs decides the implementation (`spectask.runtime.control`): on the
    event loop or a thread, a `TaskSignals`; in a handler process, frames over the slot's
    socket and a flag the worker sets.
    """

    def report(self, percent: float, message: str | None) -> None: ...

    def cancelled(self) -> bool: ...


class NoSignals:
    """For a context built outside a worker (tests, direct calls): reports go nowhere."""

    def report(self, percent: float, message: str | None) -> None:
        check_percent(percent)

    def cancelled(self) -> bool:
        return False


NO_SIGNALS = NoSignals()


def check_percent(percent: float) -> None:
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"progress must be within 0..100, got {percent!r}")


@dataclass(frozen=True, slots=True)
class TaskContext:
    """Delivery facts a handler may need: ids, attempt, who runs it, when it was submitted.

    `headers` are the message's AMQP headers as received (read-only by convention). Long
    handlers call `progress(percent, message)` now and then: it publishes a progress event
    (rate-limited) and raises TaskCancelledError once the task has been cancelled, which is
    how a running task is cancelled cooperatively.
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
    # which task this is (spectask.runtime.digest): the result carries it to the collector
    digest: str = ""
    signals: Signals = field(default=NO_SIGNALS, compare=False, repr=False)

    @property
    def idempotency_key(self) -> str:
        """A key for this task that stays the same across redeliveries and retries (the task
        id): give it to whatever the handler acts on (an e-mail's Message-ID, a payment's
        idempotency key), so the receiver can drop a repeat spectask could not prevent."""
        return self.task_id

    def progress(self, percent: float, message: str | None = None) -> None:
        """Report progress (0..100, with an optional message); raises if cancelled."""
        self.signals.report(percent, message)
        self.raise_if_cancelled()

    @property
    def cancelled(self) -> bool:
        """Whether someone asked to cancel this task (the handler should stop soon)."""
        return self.signals.cancelled()

    def raise_if_cancelled(self) -> None:
        """Raise TaskCancelledError if the task was cancelled; cheap enough for a loop."""
        if self.signals.cancelled():
            raise TaskCancelledError(f"task {self.task_id} was cancelled while running")
