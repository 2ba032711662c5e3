"""The spectask side: the producer, workers and collector a spectask user would write.

Tasks are built from the generated route (payload validated into the generated model) and
published by `TaskPublisher`; workers and the collector are `run_worker` with the bench's
renamed routes, so every message goes through the runtime's decode -> handler -> confirmed
next hop -> ack path, exactly as in production: the workers also follow the cancellation
stream (checked before each task) and publish each task's transient `started` event.

Run as `python -m bench.spectask_side --run-id ID --worker-id W --prefetch N` it is one worker
process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from bench.phases import RESULT_MODES, SPECTASK
from bench.procs import Control
from bench.topology import BenchTopology, bench_topology
from bench.workload import PAYLOAD, summarize
from spectask import eventloop
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.runtime.producer import TaskPublisher
from spectask.runtime.publisher import OutgoingMessage
from spectask.runtime.topology import ResultMode
from spectask.runtime.worker import Handler, WorkerStats, run_worker


class SpectaskProducer:
    """Submits bench tasks the way generated producer clients do."""

    def __init__(self, broker: Broker, tasks: TaskPublisher, bench: BenchTopology) -> None:
        self._broker = broker
        self._tasks = tasks
        self._route = bench.submit

    @classmethod
    async def open(cls, config: RuntimeConfig, bench: BenchTopology) -> SpectaskProducer:
        broker = await Broker.connect(config, name="spectask-bench-producer")
        return cls(broker, TaskPublisher(await broker.publisher(), bench.topology), bench)

    def message(self, task_id: str) -> OutgoingMessage:
        payload = self._route.model.model_validate(PAYLOAD)
        return self._tasks.build(self._route, payload, task_id=task_id)

    def task_body(self) -> bytes:
        """One task's body, to check that both sides send the same bytes."""
        return self.message("size").body

    async def submit(self, task_id: str) -> None:
        payload = self._route.model.model_validate(PAYLOAD)
        await self._tasks.submit(self._route, payload, task_id=task_id)

    async def preload(self, task_ids: Sequence[str]) -> None:
        await self._tasks.submit_many([self.message(task_id) for task_id in task_ids])

    async def close(self) -> None:
        await self._broker.close()


class SpectaskCollector:
    """`run_worker` on the collector's routes, in a task of the bench process."""

    def __init__(self, broker: Broker, stop: asyncio.Event) -> None:
        self._broker = broker
        self._stop = stop
        self._task: asyncio.Task[WorkerStats] | None = None
        self.result_bytes = 0

    @classmethod
    async def start(
        cls,
        config: RuntimeConfig,
        bench: BenchTopology,
        on_result: Callable[[str], None],
    ) -> SpectaskCollector:
        broker = await Broker.connect(config, name="spectask-bench-collector")
        collector = cls(broker, asyncio.Event())

        async def collect(result: Any, context: TaskContext) -> None:
            if not collector.result_bytes:  # what the worker put on the wire, measured once
                collector.result_bytes = len(
                    result.model_dump_json(by_alias=True, exclude_none=True)
                )
            on_result(result.task_id)

        collector._task = asyncio.create_task(
            run_worker(
                broker,
                topology=bench.topology,
                routes=[bench.collect, bench.collect_batch],  # batches: one call per result
                handlers={bench.collect.operation: collect},
                send_routes=[bench.collector_dead_letter],
                worker_id="bench-collector",
                stop=collector._stop,
            )
        )
        return collector

    def check(self) -> None:
        """Raise the collector's error now if it crashed, rather than timing out later."""
        if self._task is not None and self._task.done():
            self._task.result()

    async def close(self, timeout: float) -> None:
        self._stop.set()
        try:
            if self._task is not None:
                await asyncio.wait_for(self._task, timeout=timeout)
        finally:
            await self._broker.close()


async def process_statistics(payload: Any, context: TaskContext) -> dict[str, Any]:
    """The handler: the same work as the raw worker, on the validated payload model."""
    return summarize(payload.values)


async def serve(
    broker: Broker,
    bench: BenchTopology,
    handler: Handler,
    worker_id: str,
    stop: asyncio.Event,
    *,
    heartbeats: bool = False,
) -> WorkerStats:
    """One bench worker: `run_worker` on the round trip's task queue, as production runs it."""
    send_routes = [bench.result, bench.result_batch, bench.dead_letter, bench.event]
    if heartbeats:  # the dashboard phase: one WorkerHeartbeat every few seconds
        send_routes.append(bench.heartbeat)
    return await run_worker(
        broker,
        topology=bench.topology,
        routes=[bench.process, bench.cancellations],
        handlers={bench.process.operation: handler},
        send_routes=send_routes,
        worker_id=worker_id,
        stop=stop,
    )


async def _worker(args: argparse.Namespace) -> int:
    control = await Control.open()
    bench = bench_topology(args.run_id, SPECTASK)
    # the task type's x-spectask-results, as a spec would say it
    policy = replace(bench.process.policy, result_mode=ResultMode(args.result_mode))
    bench = replace(bench, process=replace(bench.process, policy=policy))
    config = RuntimeConfig(prefetch=args.prefetch, shutdown_timeout=args.drain_seconds)
    broker = await Broker.connect(config, name=f"spectask-bench-{args.worker_id}")
    async with broker:
        await broker.publisher()  # open the confirm channel before the clock starts
        control.send("ready")
        await control.wait_go(args.max_seconds)
        stats = await serve(
            broker,
            bench,
            process_statistics,
            args.worker_id,
            control.stop_event(args.max_seconds),
            heartbeats=args.heartbeats,
        )
    control.report(
        {
            "processed": stats.processed,
            "succeeded": stats.succeeded,
            "failed": stats.failed,
            "dead_lettered": stats.dead_lettered,
            "requeued": stats.requeued,
        }
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one spectask bench worker process")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--prefetch", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--drain-seconds", type=float, default=30.0)
    parser.add_argument("--result-mode", choices=RESULT_MODES, default=RESULT_MODES[0])
    parser.add_argument("--heartbeats", action="store_true", help="send worker heartbeats")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return eventloop.run(_worker(args))
    return 1


if __name__ == "__main__":
    sys.exit(main())
