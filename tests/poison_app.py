"""An application whose data_analysis handlers kill their own worker on a poison payload.

`--app tests.poison_app:app --types data_analysis` serves it: a task whose first value is
POISON ends the worker process at once (`os._exit`, as a segfaulting C extension or the
kernel's OOM killer would), before any outcome is published; any other task succeeds. The
handler is async, so it runs in the worker process itself, not in a pool child.
"""

from __future__ import annotations

import os
from typing import Any

import generated
from generated.worker import WorkerApp
from spectask import Application
from spectask.runtime.context import TaskContext

POISON = 666.0
DIED = 70  # the exit code of a worker the poison killed


async def poisoned(payload: Any, context: TaskContext) -> Any:
    if payload.values and payload.values[0] == POISON:
        os._exit(DIED)
    return {"count": len(payload.values)}


worker = WorkerApp()
worker.process_data_aggregate(poisoned)
worker.process_data_detect_patterns(poisoned)
worker.process_data_statistics(poisoned)
app = Application(generated=generated, worker=worker)
