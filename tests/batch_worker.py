"""A worker process in result mode `batched` over a test topology: what the kill -9 test kills.

`python -m tests.batch_worker BASE HANDLED_FILE` serves `tests.runtime_support.make_names`'
topology named BASE with its task type in mode `batched`, with the environment's settings
(SPECTASK_RESULT_BATCH_MS, _SIZE, SPECTASK_PREFETCH). Its handler appends each task id to
HANDLED_FILE (one line, flushed) before it returns, so a test waits for that event instead of
guessing when the tasks have run. It prints `consuming` once its queue has a consumer.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from spectask import eventloop
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.runtime.topology import ResultMode
from tests.runtime_support import InProcessWorkers, make_names


async def main(base: str, handled: Path) -> None:
    names = make_names(result_mode=ResultMode.BATCHED, base=base)
    config = RuntimeConfig()
    sink = handled.open("a")

    async def handler(payload: Any, context: TaskContext) -> dict[str, Any]:
        sink.write(context.task_id + "\n")
        sink.flush()
        return {"sum": sum(payload.values)}

    async with await Broker.connect(config, name="test-batch-worker") as broker:
        await broker.declare(names.topology)
        workers = InProcessWorkers()
        _, worker = await workers.start(
            broker, names, handler, worker_id="batch-worker", consuming=True
        )
        print("consuming", flush=True)
        await worker


if __name__ == "__main__":
    eventloop.run(main(sys.argv[1], Path(sys.argv[2])))
