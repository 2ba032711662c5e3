"""Collectors started in different directories share the default store, so `status` agrees
with them (issue 9 item 14: it alternated between SUCCEEDED and UNKNOWN for one task).

Real processes on the session's RabbitMQ, no STORE_URL, each collector in its own working
directory, the user's data directory pointed at the test's (XDG_DATA_HOME).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.process_support import ROOT, Command

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


def test_collectors_in_different_directories_and_status_agree(
    amqp_url: str, tmp_path: Path
) -> None:
    env = environment(amqp_url, tmp_path)
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    expected = tmp_path / "data" / "spectask" / "tasks.db"

    first = Command(first_dir, "collector", "collect", env=env, cwd=first_dir)
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
        first.signal_and_time()

    second = Command(second_dir, "collector", "collect", env=env, cwd=second_dir)
    try:
        out = second.wait_for("consuming")
        assert f"task store: SQLite {expected} " in out, out
        status = run(env, second_dir, "status", task_id, "--json")
        assert status.returncode == 0, status.stderr
        assert '"state": "SUCCEEDED"' in status.stdout, status.stdout
    finally:
        second.signal_and_time()
    assert not (first_dir / ".spectask").exists() and not (second_dir / ".spectask").exists()
