"""A spectask command as a child process, its output in a file: wait for a line, signal it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WAIT = 60.0


class Command:
    """`python -m spectask.cli ARGS` run in `cwd` with exactly `env`; stdout+stderr in a file."""

    def __init__(
        self,
        log_dir: Path,
        name: str,
        *args: str,
        env: Mapping[str, str],
        cwd: Path = ROOT,
    ) -> None:
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "spectask.cli", *args],
            cwd=cwd,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str | re.Pattern[str], timeout: float = WAIT) -> str:
        """Wait until the output contains `text` (a string or a pattern); the output."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.output()
            found = bool(text.search(out)) if isinstance(text, re.Pattern) else text in out
            if found:
                return out
            assert self.process.poll() is None, f"exited early ({self.process.returncode}):\n{out}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout}s:\n{out}"
            time.sleep(0.05)

    def signal_and_time(self, signum: int = signal.SIGTERM) -> tuple[int, float]:
        """Send `signum`; the exit code and the seconds it took (killed past WAIT)."""
        started = time.monotonic()
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            pytest.fail(f"still running {WAIT:g}s after {signum}:\n{self.output()}")
        self._log.close()
        return code, time.monotonic() - started

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()
