"""Collectors started in different directories share the default store, so `status` agrees
with them (issue 9 item 14: it alternated between SUCCEEDED and UNKNOWN for one task).

Real processes on the session's RabbitMQ, no STORE_URL, each collector in its own working
directory, the user's data directory pointed at the test's (XDG_DATA_HOME).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WAIT = 60.0
pytestmark = pytest.mark.timeout(240)


def environment(amqp_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "STORE_URL"}
    env.update(
        AMQP_URL=amqp_url,
        XDG_DATA_HOME=str(tmp_path / "data"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    return env


def run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spectask.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class Collector:
    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.log_path = cwd / "collector.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "spectask.cli", "collect"],
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_for(self, text: str) -> str:
        deadline = time.monotonic() + WAIT
        while text not in (out := self.log_path.read_text(errors="replace")):
            assert self.process.poll() is None, out
            assert time.monotonic() < deadline, out
            time.sleep(0.05)
        return out

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=WAIT)
        self._log.close()


def test_collectors_in_different_directories_and_status_agree(
    amqp_url: str, tmp_path: Path
) -> None:
    env = environment(amqp_url, tmp_path)
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    expected = tmp_path / "data" / "spectask" / "tasks.db"

    first = Collector(env, first_dir)
    try:
        out = first.wait_for("consuming")
        assert f"task store: SQLite {expected} " in out, out
        produced = run(
            env, first_dir, "produce", "--task", "data_analysis.statistics",
            "--params", '{"values": [4, 5]}',
        )  # fmt: skip
        assert produced.returncode == 0, produced.stderr
        task_id = produced.stdout.strip()
        worked = run(env, first_dir, "worker", "w1", "--types", "data_analysis", "--burst")
        assert worked.returncode == 0, worked.stderr
        first.wait_for(f"succeeded {task_id}")
    finally:
        first.stop()

    second = Collector(env, second_dir)
    try:
        out = second.wait_for("consuming")
        assert f"task store: SQLite {expected} " in out, out
        status = run(env, second_dir, "status", task_id, "--json")
        assert status.returncode == 0, status.stderr
        assert '"state": "SUCCEEDED"' in status.stdout, status.stdout
    finally:
        second.stop()
    assert not (first_dir / ".spectask").exists() and not (second_dir / ".spectask").exists()
