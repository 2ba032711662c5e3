"""spectask: distributed task processing on RabbitMQ, typed from AsyncAPI 3 documents.

The public API (everything a script of one's own needs; the rest is internal):

- `Application`: an application's generated package, worker (with handlers) and samples;
- `connect()`, `producer(broker, app)`, `run_worker(app, id)`, `run_collector(app)`;
- `TaskContext` (what a handler gets beside its payload), `PermanentTaskError` (fail without
  retrying), `SubmitError` (a batch submit that stopped: its confirmed and unconfirmed ids),
  `configure_logging()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

__all__ = [
    "Application",
    "PermanentTaskError",
    "SubmitError",
    "TaskContext",
    "__version__",
    "configure_logging",
    "connect",
    "producer",
    "run_collector",
    "run_worker",
]

# name -> module: imported on first use, so `spectask generate` loads no broker client
_EXPORTS = {
    "Application": "spectask.app",
    "PermanentTaskError": "spectask.errors",
    "SubmitError": "spectask.errors",
    "TaskContext": "spectask.runtime.context",
    "configure_logging": "spectask.logs",
    "connect": "spectask.api",
    "producer": "spectask.api",
    "run_collector": "spectask.api",
    "run_worker": "spectask.api",
}

if TYPE_CHECKING:
    from spectask.api import connect, producer, run_collector, run_worker
    from spectask.app import Application
    from spectask.errors import PermanentTaskError, SubmitError
    from spectask.logs import configure_logging
    from spectask.runtime.context import TaskContext


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'spectask' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
