"""The chaos suite's application: this repo's data_analysis handlers, each execution logged.

A duplicate execution (a task whose handler ran to the end twice, e.g. after a lost ack) is
invisible in the store, which keeps one record per task. So the statistics handler, the
chaos batches' task type, appends one line per finished run to `CHAOS_EXECUTION_LOG`:
`task_id worker_id attempt started finished` (wall-clock seconds). The file is opened with
O_APPEND for each line and every line is far below PIPE_BUF, so lines from the handler
processes of several workers never interleave. Everything else is the real application:
`spectask worker ID --app tests.chaos.app:app --types data_analysis`.
"""

from __future__ import annotations

import os
import time

import generated
from generated import models
from generated.worker import WorkerApp
from spectask import Application, TaskContext
from workloads import analysis
from workloads.handlers import bind, data_aggregate, data_detect_patterns, data_statistics
from workloads.samples import SAMPLES
from workloads.settings import TaskSettings

EXECUTION_LOG = "CHAOS_EXECUTION_LOG"
TASK_TYPE = "data_analysis"
MESSAGE_TYPE = "data_analysis.statistics"


def record_execution(context: TaskContext, started: float) -> None:
    """One line for a finished run of a handler, appended atomically."""
    path = os.environ.get(EXECUTION_LOG)
    if not path:
        return
    ids = f"{context.task_id} {context.worker_id} {context.attempt}"
    line = f"{ids} {started:.6f} {time.time():.6f}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def logged_statistics(
    payload: models.DataStatistics, context: TaskContext
) -> analysis.StatisticsResult:
    """The real statistics handler, then its execution line (a run that finished)."""
    started = time.time()
    result = data_statistics(payload, context)
    record_execution(context, started)
    return result


def build_worker() -> WorkerApp:
    settings = TaskSettings()
    worker = WorkerApp()
    worker.process_data_statistics(logged_statistics)
    worker.process_data_aggregate(bind(data_aggregate, settings))
    worker.process_data_detect_patterns(bind(data_detect_patterns, settings))
    return worker


app = Application(
    generated=generated, worker=build_worker(), samples=SAMPLES, default_mix=(MESSAGE_TYPE,)
)
