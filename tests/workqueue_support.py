"""Helpers for tests that run real worker processes against a real broker.

Workers are the real `main-worker.py` in separate OS processes (so `kill -9` is real); tasks
are submitted through the generated producer routes; results are read straight off the
`results` queue by a small robust consumer, keyed by task id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from generated.producer import SEND_ROUTES
from generated.topology import TOPOLOGY
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.producer import TaskPublisher
from spectask.runtime.transport import Connection, IncomingMessage, connect

ROOT = Path(__file__).resolve().parents[1]
ROUTES = {route.message_type: route for route in SEND_ROUTES}


async def reset_topology(url: str, config: RuntimeConfig | None = None) -> None:
    """Delete every queue of the spec, then declare the topology afresh (tests share a node).

    `config` (its queue type, say) is what the processes under test will declare with."""
    connection = await connect(url, robust=False)
    async with connection:
        channel = await connection.channel()
        for queue in TOPOLOGY.queues:
            await channel.queue_delete(queue.name)
    broker = await Broker.connect(config or RuntimeConfig(amqp_url=url))
    async with broker:
        await broker.declare(TOPOLOGY)


async def submit(
    url: str, tasks: Iterable[tuple[str, str, Mapping[str, Any]]], priority: str | None = None
) -> list[str]:
    """Publish (task_id, message_type, params) tasks with confirms; the ids, once confirmed."""
    broker = await Broker.connect(RuntimeConfig(amqp_url=url))
    async with broker:
        publisher = TaskPublisher(await broker.publisher(), TOPOLOGY)
        messages = [
            publisher.build(
                ROUTES[message_type],
                ROUTES[message_type].model.model_validate(params),
                task_id=task_id,
                priority=priority,
            )
            for task_id, message_type, params in tasks
        ]
        return await publisher.submit_many(messages)


async def queue_depth(url: str, name: str) -> int:
    connection = await connect(url, robust=False)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)


class ResultCollector:
    """Consumes `results` (acking after recording), surviving broker restarts."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.results: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._connection: Connection | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self._connection = await connect(self._url)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=100)
        queue = await channel.get_queue("results", ensure=True)
        await queue.consume(self._on_message)

    async def _on_message(self, message: IncomingMessage) -> None:
        document = json.loads(message.body)
        self.results[document["task_id"]].append(document)
        self._changed.set()
        await message.ack()

    async def wait_for(self, task_ids: Iterable[str], timeout: float) -> None:
        """Wait until every id has a result; fail listing what is missing at the deadline."""
        wanted = set(task_ids)
        deadline = time.monotonic() + timeout
        while not wanted <= self.results.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(wanted - self.results.keys())
                raise AssertionError(f"{len(missing)} tasks without a result, e.g. {missing[:5]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 1.0))

    def workers_of(self, task_ids: Iterable[str]) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for task_id in task_ids:
            for document in self.results[task_id]:
                counts[document["worker_id"]] += 1
        return dict(counts)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


class ChildProcess:
    """A spectask process the test started, its output in a log file: stop or kill it."""

    process: subprocess.Popen[bytes]
    _log: IO[bytes]

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (finish in-flight work, then exit); SIGKILL if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        return self.process.returncode


class WorkerProcess(ChildProcess):
    """`main-worker.py ID` as a child process with its own environment."""

    def __init__(
        self,
        worker_id: str,
        url: str,
        *,
        types: str = "",
        prefetch: int = 1,
        concurrency: int = 1,
        output_dir: Path | None = None,
        input_root: Path | None = None,
        log_dir: Path | None = None,
    ) -> None:
        env = dict(os.environ)
        env.update(
            {
                "AMQP_URL": url,
                "SPECTASK_PREFETCH": str(prefetch),
                "SPECTASK_CONCURRENCY": str(concurrency),
                "SPECTASK_SHUTDOWN_TIMEOUT": "10",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if output_dir is not None:
            env["SPECTASK_OUTPUT_DIR"] = str(output_dir)
        if input_root is not None:  # image tasks read files only below it
            env["SPECTASK_IMAGE_INPUT_ROOT"] = str(input_root)
        args = [sys.executable, str(ROOT / "main-worker.py"), worker_id]
        if types:
            args += ["--types", types]
        self.worker_id = worker_id
        self.log_path = (log_dir or Path("/tmp")) / f"{worker_id}-{os.getpid()}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_ready(*workers: WorkerProcess, timeout: float = 60.0) -> None:
    """Wait until each worker logs that it is consuming (or fail with its log)."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        while "consuming" not in worker.log():
            if worker.process.poll() is not None:
                raise AssertionError(f"{worker.worker_id} exited early:\n{worker.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{worker.worker_id} not ready in {timeout}s:\n{worker.log()}")
            time.sleep(0.05)


@dataclass
class Env:
    """A reset topology, a result collector and the worker processes a test starts."""

    url: str
    tmp: Path
    collector: ResultCollector
    workers: list[WorkerProcess] = field(default_factory=list)

    def worker(self, worker_id: str, **kwargs: Any) -> WorkerProcess:
        process = WorkerProcess(
            worker_id,
            self.url,
            output_dir=self.tmp / "out",
            input_root=self.tmp,  # the tests' image files live in their tmp directory
            log_dir=self.tmp,
            **kwargs,
        )
        self.workers.append(process)
        return process


@contextlib.asynccontextmanager
async def worker_environment(url: str, tmp: Path) -> AsyncIterator[Env]:
    """Reset the topology and collect results; stop every worker started, whatever happens."""
    await reset_topology(url)
    collector = ResultCollector(url)
    await collector.start()
    environment = Env(url, tmp, collector)
    try:
        yield environment
    finally:
        for worker in environment.workers:
            worker.stop()
        await collector.close()
