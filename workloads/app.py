"""This repository's application on spectask: `--app workloads.app:app` names it.

The generated package (from spec/), a worker with the nine real handlers registered, and the
sample payloads `make producer` and `make demo` submit. Importing it builds the worker app once;
the handler settings (output directory, SMTP) come from the environment (`TaskSettings`).
"""

from __future__ import annotations

import generated
from generated.worker import WorkerApp
from spectask import Application
from workloads.handlers import register_all
from workloads.samples import DEFAULT_MIX, SAMPLES
from workloads.settings import TaskSettings

APP_NAME = "workloads.app:app"


def build_worker(settings: TaskSettings | None = None) -> WorkerApp:
    """A worker app with every handler of the three task types registered."""
    worker = WorkerApp()
    register_all(worker, settings or TaskSettings())
    return worker


app = Application(
    generated=generated, worker=build_worker(), samples=SAMPLES, default_mix=DEFAULT_MIX
)
