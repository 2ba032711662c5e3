"""An application whose data_analysis handlers block for minutes: a worker stuck mid-handler.

`--app tests.slow_app:app --types data_analysis` serves it. Each handler first touches the
file named by SLOW_APP_MARKER, so a test waits for that instead of guessing when it started.
With SLOW_APP_RELEASE set, the handler returns as soon as that file exists, after writing
`<release>.returned`: its outcome is then published at a moment the test chose.
Run in a thread (SPECTASK_ISOLATION=thread), the handler cannot be interrupted at all: only
the stop deadline of `spectask.signals` ends such a process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import generated
from generated.worker import WorkerApp
from spectask import Application
from spectask.runtime.context import TaskContext

MARKER_VARIABLE = "SLOW_APP_MARKER"
RELEASE_VARIABLE = "SLOW_APP_RELEASE"
BLOCK_SECONDS = 300
POLL_SECONDS = 0.05


def blocking_handler(payload: Any, context: TaskContext) -> Any:
    Path(os.environ[MARKER_VARIABLE]).write_text(context.task_id)
    release = os.environ.get(RELEASE_VARIABLE)
    deadline = time.monotonic() + BLOCK_SECONDS
    while time.monotonic() < deadline:
        if release and Path(release).exists():
            Path(f"{release}.returned").write_text(context.task_id)
            return {"count": len(payload.values)}
        time.sleep(POLL_SECONDS)
    raise AssertionError("a stopped worker must not wait for this handler")


worker = WorkerApp()
worker.process_data_aggregate(blocking_handler)
worker.process_data_detect_patterns(blocking_handler)
worker.process_data_statistics(blocking_handler)
app = Application(generated=generated, worker=worker)
