"""`spectask status` and `spectask result` as a user runs them, against a real collector."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_support import spectask
from tests.workqueue_support import WorkerProcess, reset_topology, submit, wait_ready

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def env(amqp_url: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "AMQP_URL": amqp_url, "STORE_URL": f"sqlite:///{tmp_path}/tasks.db"}


@pytest.fixture
def collector(env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "collector.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "spectask.cli", "collect", "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while "consuming" not in (tmp_path / "collector.log").read_text(errors="replace"):
        assert process.poll() is None, (tmp_path / "collector.log").read_text()
        assert time.monotonic() < deadline, "the collector did not start"
        time.sleep(0.05)
    yield process
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_status_without_a_collector_times_out_clearly(env: dict[str, str]) -> None:
    done = spectask(env, "status", "some-task", "--timeout", "1")
    assert done.returncode == 1
    assert "no collector answered" in done.stderr and "Traceback" not in done.stderr


async def test_status_and_result_of_known_and_unknown_tasks(
    env: dict[str, str], amqp_url: str, collector: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    await reset_topology(amqp_url)
    worker = WorkerProcess("status-w", amqp_url, types="data_analysis", log_dir=tmp_path)
    try:
        wait_ready(worker)
        task_id = f"cli-{uuid.uuid4().hex[:8]}"
        await submit(amqp_url, [(task_id, "data_analysis.statistics", {"values": [1, 2, 3, 4]})])
        unknown = f"never-{uuid.uuid4().hex[:8]}"
        deadline = time.monotonic() + 60
        while True:
            done = spectask(env, "status", task_id, unknown, "--json")
            assert done.returncode == 0, done.stderr
            states = {view["task_id"]: view["state"] for view in json.loads(done.stdout)["tasks"]}
            if states[task_id] == "SUCCEEDED":
                break
            assert time.monotonic() < deadline, states
            await asyncio.sleep(0.2)
        assert states[unknown] == "UNKNOWN"
        table = spectask(env, "status", task_id)
        assert table.returncode == 0 and task_id in table.stdout and "SUCCEEDED" in table.stdout
        result = spectask(env, "result", task_id)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["mean"] == 2.5
        missing = spectask(env, "result", unknown)
        assert missing.returncode == 1 and unknown in (missing.stdout + missing.stderr)
    finally:
        worker.stop()


async def test_producer_wait_reports_final_states(
    env: dict[str, str], amqp_url: str, collector: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    await reset_topology(amqp_url)
    worker = WorkerProcess("wait-w", amqp_url, types="data_analysis", log_dir=tmp_path)
    try:
        wait_ready(worker)
        ok = spectask(
            env,
            "produce",
            "--count",
            "12",
            "--types",
            "data_analysis",
            "--wait",
            "--wait-timeout",
            "90",
        )
        assert ok.returncode == 0, ok.stderr
        assert "SUCCEEDED" in ok.stdout and "data_analysis.statistics" in ok.stdout
        assert "latency submit->finish" in ok.stdout
        poison = spectask(
            env,
            "produce",
            "--task",
            "data_analysis.statistics",
            "--params",
            '{"values": []}',
            "--wait",
            "--wait-timeout",
            "90",
        )
        assert poison.returncode == 2, poison.stdout + poison.stderr
        assert "data_analysis.statistics" in poison.stdout
    finally:
        worker.stop()
