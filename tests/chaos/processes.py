"""The real processes of a chaos batch: workers, a collector and the producer, via the CLI.

Each is `python -m spectask.cli <command>` in its own OS process (so kill -9, SIGSTOP and
SIGTERM are real), its output in a log file. `stop()` is the shutdown check of the suite: a
process must exit 0 within its shutdown timeout after SIGTERM, and the handler processes a
worker started must not outlive it (an orphan left by a kill -9 counts as a failure too).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHAOS_APP = "tests.chaos.app:app"
REAL_APP = "workloads.app:app"
EXIT_GRACE = 5.0  # seconds past the shutdown timeout for the interpreter to tear down
# seconds for handler slots (children of the fork server) to notice their worker is gone; 5 s
# was too short on a 2-core machine at load 15 (CI with five other test runs)
CHILD_GRACE = 15.0


@dataclass(frozen=True)
class Exit:
    """How a process ended when it was asked to stop."""

    name: str
    code: int | None  # None: it did not exit in time (and was killed)
    seconds: float
    leftovers: tuple[int, ...] = ()  # child pids still alive after it exited

    @property
    def failure(self) -> str | None:
        if self.code is None:
            return f"{self.name} did not exit within {self.seconds:.0f}s of SIGTERM"
        if self.code != 0:
            return f"{self.name} exited {self.code}"
        if self.leftovers:
            return f"{self.name} left child processes behind: {list(self.leftovers)}"
        return None


def descendants(pid: int) -> set[int]:
    """Every live descendant of `pid` (from /proc: children of children too)."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    pending.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """The pids of `pids` that still run (zombies count as gone)."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            running.add(pid)
    return running


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Wait for `pids` to exit; those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while (left := alive(pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


class Service:
    """One spectask CLI process (`worker`, `collect`, `produce`) with its log."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], log_dir: Path, shutdown: float
    ) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.shutdown = shutdown
        self.log_dir = log_dir
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = log_dir / f"{name}.log"

    def start(self) -> Service:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"--- start {self.starts} ---\n".encode())
        log.flush()
        command = [sys.executable, "-m", "spectask.cli", *self.args]
        self.process = subprocess.Popen(
            command, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self._log_from = self.log_path.stat().st_size
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 60.0) -> None:
        """Wait until this run of the process has logged `text` (or fail with its log)."""
        deadline = time.monotonic() + timeout
        while text not in self.log()[self._log_from :]:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {text!r} in {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def signal(self, number: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def kill9(self) -> set[int]:
        """kill -9 the process; its handler processes must then exit on their own."""
        assert self.process is not None
        children = descendants(self.pid)
        self.process.kill()
        self.process.wait(10)
        return wait_gone(children, 10.0)

    def stop(self) -> Exit:
        """SIGTERM, then wait for the exit within the shutdown timeout (+ EXIT_GRACE)."""
        return stop_all([self])[0]

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def stop_all(services: list[Service]) -> list[Exit]:
    """SIGTERM every running service at once, then wait for each within its shutdown timeout
    (+ EXIT_GRACE); one that does not exit is killed and reported, as are its leftovers."""
    signalled = []
    for service in services:
        process = service.process
        if process is None or process.poll() is not None:
            continue
        children = descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        signalled.append((service, process, children, time.monotonic()))
    exits = []
    for service, process, children, started in signalled:
        limit = started + service.shutdown + EXIT_GRACE - time.monotonic()
        try:
            code: int | None = process.wait(max(0.0, limit))
        except subprocess.TimeoutExpired:
            code = None
            process.kill()
            process.wait(10)
        seconds = time.monotonic() - started
        left = wait_gone(children, CHILD_GRACE)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        exits.append(Exit(service.name, code, seconds, tuple(sorted(left))))
    return exits
