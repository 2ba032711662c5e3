"""Testing a handler without a broker: a `TaskContext` that records what the handler reports.

A handler is a plain function of (payload model, context); call it directly:

    ctx = context_for("text.wordcount")
    result = wordcount(models.TextWordcount(text="a b"), ctx)
    assert ctx.signals.reports == [(50.0, "counted")]

`cancelled=True` makes the context report a cancellation, so a test can check that a long
handler stops at its next `ctx.progress(...)` or `ctx.raise_if_cancelled()`. A whole flow
(producer, worker, collector) runs without RabbitMQ on the in-memory transport: see the
README's "Testing without a broker".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from spectask.runtime.context import TaskContext, check_percent


@dataclass
class RecordingSignals:
    """Keeps every progress report; says "cancelled" when told to."""

    cancel: bool = False
    reports: list[tuple[float, str | None]] = field(default_factory=list)

    def report(self, percent: float, message: str | None) -> None:
        check_percent(percent)
        self.reports.append((float(percent), message))

    def cancelled(self) -> bool:
        return self.cancel


@dataclass(frozen=True)
class TestContext(TaskContext):
    """A `TaskContext` whose `signals` are a `RecordingSignals` (typed for the test's asserts)."""

    __test__ = False  # not a pytest test class, despite the name
    signals: RecordingSignals = field(default_factory=RecordingSignals, compare=False)


def context_for(
    message_type: str,
    *,
    task_id: str = "test-task",
    attempt: int = 1,
    cancelled: bool = False,
    headers: Mapping[str, Any] | None = None,
) -> TestContext:
    """The context a worker would give a handler of `message_type` (`<task_type>.<op>`)."""
    task_type = message_type.partition(".")[0]
    return TestContext(
        task_id=task_id,
        message_type=message_type,
        task_type=task_type,
        operation=message_type,
        attempt=attempt,
        worker_id="test",
        routing_key=message_type,
        redelivered=False,
        submitted_at=datetime.now(UTC),
        priority=0,
        headers=dict(headers or {}),
        signals=RecordingSignals(cancel=cancelled),
    )
