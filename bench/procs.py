"""Worker processes: started early, held at a gate, released together, always stopped.

A worker is a separate OS process (as in production), so Python start-up and connecting are
kept out of the timed window: the child connects, prints `ready`, and waits for `go` on stdin.
`stop` (or the parent closing stdin, e.g. because it died) makes it drain and exit; it then
prints one `stats {json}` line. The parent escalates to SIGTERM and SIGKILL at deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.measure import BenchError

ROOT = Path(__file__).resolve().parents[1]
STATS_PREFIX = "stats "
KILL_GRACE_SECONDS = 5.0


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (Linux); NaN elsewhere.

    Wall-clock throughput on a shared 2-core machine is noisy; CPU per task much less so, and
    it says which process a difference comes from.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def local_broker_pid() -> int | None:
    """The pid of the RabbitMQ node on this machine, if exactly one runs (else None).

    The broker does about half of a pipeline's work on these machines, so a side that costs
    the broker more is slower with the same worker CPU; with several nodes (a test suite's)
    nobody can tell which one the bench uses, and the number is left out.
    """
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip() == "beam.smp":
                pids.append(int(comm.parent.name))
    return pids[0] if len(pids) == 1 else None


def process_rss_bytes(pid: int) -> float:
    """Resident set size of a process in bytes, from /proc/PID/statm (Linux); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return math.nan
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


class Control:
    """The child's end of the protocol: report on stdout, take `go` and `stop` on stdin."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._watcher: asyncio.Task[None] | None = None  # a strong reference for the loop

    @classmethod
    async def open(cls) -> Control:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        return cls(reader)

    @staticmethod
    def send(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def wait_go(self, timeout: float) -> None:
        """Block until the parent says go; give up at the deadline or if it goes away."""
        line = await asyncio.wait_for(self._reader.readline(), timeout=timeout)
        if line.strip() != b"go":
            raise BenchError(f"expected 'go' from the bench, got {line!r}")

    def stop_event(self, timeout: float) -> asyncio.Event:
        """An event set on `stop`, on end of input, or at the deadline (an orphan never hangs)."""
        stop = asyncio.Event()

        async def watch() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reader.readline(), timeout=timeout)
            stop.set()

        self._watcher = asyncio.create_task(watch())
        return stop

    def report(self, stats: dict[str, Any]) -> None:
        self.send(STATS_PREFIX + json.dumps(stats))


class WorkerProcess:
    """The parent's handle on one worker process."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self._process = process
        self._sampler: asyncio.subprocess.Process | None = None

    async def attach_sampler(self, path: Path, rate: int, timeout: float) -> None:
        """`py-spy record` on this worker until it exits: CPU samples, raw collapsed stacks.

        For `bench/profile.py` only. py-spy pauses the worker for each sample (without that its
        stacks come out torn under uvloop: a third of them in a write that had returned), so
        the profile slows the run a little; the CPU it measures stays the worker's own.
        Returns once py-spy samples.
        """
        py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if py_spy is None:
            raise BenchError("py-spy is not installed: .venv/bin/pip install py-spy")
        self._sampler = await asyncio.create_subprocess_exec(
            py_spy,
            "record",
            "--pid",
            str(self._process.pid),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self._sampler.stdout is not None
        line = await asyncio.wait_for(self._sampler.stdout.readline(), timeout=timeout)
        if b"Sampling" not in line:
            raise BenchError(f"py-spy did not attach to {self.name}: {line.decode().strip()}")

    async def _wait_sampler(self, timeout: float) -> None:
        """py-spy ends with its target and then writes its file; wait for that."""
        if self._sampler is not None and self._sampler.returncode is None:
            try:
                await asyncio.wait_for(self._sampler.communicate(), timeout=timeout)
            except TimeoutError:
                self._sampler.kill()
                await self._sampler.wait()

    @classmethod
    async def spawn(cls, name: str, module: str, args: list[str], url: str) -> WorkerProcess:
        env = {**os.environ, "AMQP_URL": url}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        return cls(name, process)

    async def _line(self, timeout: float) -> str:
        assert self._process.stdout is not None
        try:
            raw = await asyncio.wait_for(self._process.stdout.readline(), timeout=timeout)
        except TimeoutError:
            raise BenchError(f"worker {self.name} said nothing for {timeout:g}s") from None
        if not raw:
            code = await self._wait(KILL_GRACE_SECONDS)
            raise BenchError(f"worker {self.name} exited (code {code}); see its stderr above")
        return raw.decode().strip()

    async def wait_ready(self, timeout: float) -> None:
        line = await self._line(timeout)
        if line != "ready":
            raise BenchError(f"worker {self.name}: expected 'ready', got {line!r}")

    def check_alive(self) -> None:
        """Fail fast, rather than at a deadline, when a worker has died under us."""
        code = self._process.returncode
        if code is not None:
            raise BenchError(f"worker {self.name} exited with code {code}; see its stderr above")

    def cpu_seconds(self) -> float:
        """CPU time the process has used so far (user + system), NaN where /proc is missing."""
        return process_cpu_seconds(self._process.pid)

    def rss_bytes(self) -> float:
        return process_rss_bytes(self._process.pid)

    def _write(self, text: str) -> None:
        stdin = self._process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.write(text.encode())

    def go(self) -> None:
        self._write("go\n")

    async def stop(self, timeout: float) -> dict[str, Any]:
        """Ask the worker to drain and exit; its stats, or a BenchError if it had to be killed."""
        self._write("stop\n")
        stdin = self._process.stdin
        if stdin is not None:
            stdin.close()
        stats: dict[str, Any] | None = None
        with contextlib.suppress(BenchError):
            while stats is None:
                line = await self._line(timeout)
                if line.startswith(STATS_PREFIX):
                    stats = json.loads(line.removeprefix(STATS_PREFIX))
        code = await self._wait(timeout)
        await self._wait_sampler(timeout)
        if stats is None or code != 0:
            raise BenchError(f"worker {self.name} did not stop cleanly (exit code {code})")
        return stats

    async def _wait(self, timeout: float) -> int | None:
        """Wait for exit; SIGTERM at the deadline, SIGKILL if that does not work either."""
        try:
            return await asyncio.wait_for(self._process.wait(), timeout=timeout)
        except TimeoutError:
            pass
        with contextlib.suppress(ProcessLookupError):
            self._process.terminate()
        try:
            return await asyncio.wait_for(self._process.wait(), timeout=KILL_GRACE_SECONDS)
        except TimeoutError:
            pass
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        return await asyncio.wait_for(self._process.wait(), timeout=KILL_GRACE_SECONDS)

    async def kill(self) -> None:
        """The cleanup of last resort: make sure the process is gone."""
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await asyncio.wait_for(self._process.wait(), timeout=KILL_GRACE_SECONDS)
        await self._wait_sampler(KILL_GRACE_SECONDS)
