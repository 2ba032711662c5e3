"""A dashboard open during a phase: a real `spectask dashboard` process and a page's live feed.

Issue 10 asks that the dashboard and worker heartbeats do not slow the pipeline (the ratio
spectask/raw with them within 5% of the ratio without). So the phase runs what a user who
watches the system runs: `main-dashboard.py` (the repository's app, a fresh SQLite store of its
own, the machine's broker) doing its one-second refresh (store counts, queue reads, heartbeat
stream), and one server-sent-events client reading `/api/live` as an open page does. Both start
before the phase's workers and stop after them, for every side, so the raw side pays the same
machine load; only the spectask workers publish heartbeats (raw has none to send).

What it costs, in a measure the machine's noise cannot swing (`cpu_seconds`, and
`heartbeat_publish_cpu_seconds`): the phase reports the CPU the dashboard process used while
the workers drained the burst, plus the spectask workers' heartbeats (a task inside each
worker's event loop, so not separable by process: their publishes in the window times the
CPU of one publish, measured here with the runtime's own Heartbeat), as a share of the CPU
the pipeline's processes used meanwhile (workers and the bench's collector process; the
broker's is left out, which makes the share larger). On a machine where everything is
CPU-bound, that share bounds what the dashboard can take from the pipeline's throughput;
the ratio of ratios (throughput with / without) is printed beside it, but on 2 shared cores
it swings by tens of percent between pairs (1.33, 0.66, 1.46) and cannot judge 5%.

The feed must have delivered at least two snapshots by the end, else the phase is invalid (a
dashboard that never refreshed costs nothing and would prove nothing). A short phase (a quick
run's 100-task burst) can end within one refresh period, so the check waits, bounded, for the
second snapshot after the phase rather than failing a dashboard that is refreshing fine.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from bench.measure import BenchError
from bench.procs import process_cpu_seconds
from bench.topology import BenchTopology
from spectask.devbroker import free_port
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.consumer import WorkerStats
from spectask.runtime.heartbeat import Heartbeat

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
READY_SECONDS = 60.0
MIN_SNAPSHOTS = 2
SNAPSHOT_WAIT_SECONDS = 15.0  # several one-second refreshes, on a loaded machine
HEARTBEAT_SAMPLES = 200  # publishes timed for the CPU of one (a few ms of CPU in all)


async def heartbeat_publish_cpu_seconds(bench: BenchTopology) -> float:
    """The CPU one WorkerHeartbeat publish costs: the runtime's Heartbeat, as a worker runs
    it, publishing HEARTBEAT_SAMPLES times to the run's heartbeat route, in this process."""
    broker = await Broker.connect(RuntimeConfig(), name="spectask-bench-heartbeat-cost")
    async with broker:
        heartbeat = Heartbeat(
            broker,
            bench.heartbeat,
            worker_id="bench-heartbeat-cost",
            task_types=[bench.process.task_type],
            stats=WorkerStats(),
            in_flight=lambda: 0,
        )
        channel = await broker.connection.channel(publisher_confirms=False)
        exchange = await channel.get_exchange(bench.heartbeat.exchange, ensure=False)
        began = time.process_time()
        for _ in range(HEARTBEAT_SAMPLES):
            await heartbeat._send(exchange)  # the publish itself, without the timer around it
        spent = time.process_time() - began
        await channel.close()
    return spent / HEARTBEAT_SAMPLES


async def _get_status(port: int, path: str) -> int:
    """The status code of one plain HTTP GET (0 when nothing answers yet)."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        return 0
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    except OSError:
        return 0
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class OpenDashboard:
    """`async with OpenDashboard(url):` a dashboard process and a live-feed reader."""

    def __init__(self, amqp_url: str) -> None:
        self._amqp_url = amqp_url
        self._port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="spectask-bench-dashboard-")
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.snapshots = 0

    @property
    def log_path(self) -> Path:
        return Path(self._dir.name) / "dashboard.log"

    async def __aenter__(self) -> OpenDashboard:
        store = Path(self._dir.name) / "store.sqlite3"
        env = {**os.environ, "AMQP_URL": self._amqp_url, "STORE_URL": f"sqlite:///{store}"}
        env.pop("SPECTASK_DASHBOARD_TOKEN", None)
        with self.log_path.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(ROOT / "main-dashboard.py"),
                "--host",
                HOST,
                "--port",
                str(self._port),
                cwd=ROOT,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        try:
            await self._wait_ready()
            self._reader = asyncio.create_task(self._read_feed())
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            await self._await_snapshots()
        feed_error = self._reader.exception() if self._reader and self._reader.done() else None
        problem = None
        if feed_error is not None:
            problem = f"the dashboard's live feed failed: {feed_error!r}"
        elif self.snapshots < MIN_SNAPSHOTS:
            problem = (
                f"the dashboard sent {self.snapshots} live snapshot(s) by the end of the phase, "
                f"fewer than {MIN_SNAPSHOTS}: it was not refreshing ({self._log_tail()})"
            )
        await self._stop()
        if kind is None and problem is not None:
            raise BenchError(problem)

    async def _await_snapshots(self) -> None:
        """Until the feed has sent MIN_SNAPSHOTS, it ended, or SNAPSHOT_WAIT_SECONDS passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SNAPSHOT_WAIT_SECONDS
        while self.snapshots < MIN_SNAPSHOTS and loop.time() < deadline:
            if self._reader is None or self._reader.done():
                return
            await asyncio.sleep(0.1)  # the bound is the deadline; the event is the count

    def cpu_seconds(self) -> float:
        """CPU time the dashboard process has used so far (NaN where /proc is missing)."""
        return math.nan if self._process is None else process_cpu_seconds(self._process.pid)

    def check(self) -> None:
        """Raise now if the dashboard died, rather than measuring a phase without it."""
        if self._process is not None and self._process.returncode is not None:
            raise BenchError(
                f"the dashboard exited with {self._process.returncode}: {self._log_tail()}"
            )

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_SECONDS
        while await _get_status(self._port, "/api/summary") != 200:
            self.check()
            if loop.time() > deadline:
                raise BenchError(
                    f"the dashboard did not answer within {READY_SECONDS:g}s: {self._log_tail()}"
                )
            await asyncio.sleep(0.2)  # polling a start-up; the deadline above bounds it

    async def _read_feed(self) -> None:
        """What an open page does: hold `/api/live` and take every snapshot it sends."""
        reader, writer = await asyncio.open_connection(HOST, self._port)
        try:
            request = f"GET /api/live HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n\r\n"
            writer.write(request.encode())
            await writer.drain()
            while line := await reader.readline():
                if line.startswith(b"event: snapshot"):
                    self.snapshots += 1
        finally:
            writer.close()

    async def _stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        process = self._process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()
        self._dir.cleanup()

    def _log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            return "no log"
        return text[-600:].replace("\n", " | ") or "empty log"
