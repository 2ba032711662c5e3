"""`spectask demo` end to end on the test broker: real processes, every task type, exit 0.

The summary must come from the task store through the status operation: the collector's own
results table goes nowhere, so the per-type table and the worker names can only come from it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(400)
def test_demo_runs_every_path_and_exits_zero(amqp_url: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "SPECTASK_OUTPUT_DIR": str(tmp_path / "out"),
        "STORE_URL": f"sqlite:///{tmp_path / 'tasks.db'}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "workloads.demo", "--count", "18", "--timeout", "240"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=380,
        check=False,
    )
    output = done.stdout
    assert done.returncode == 0, output + done.stderr[-3000:]
    assert "demo: done" in output
    assert "summary from the task store (status RPC, 24 tasks)" in output
    summary = output.split("summary from the task store", 1)[1]
    for operation in (
        "image_processing.resize",
        "data_analysis.statistics",
        "report_generation.email",
    ):
        assert f"\n{operation} " in summary  # a row of the per-type table
    assert "SUCCEEDED" in summary and "latency submit->finish (ms): p50=" in summary
    for worker in ("worker1", "worker2", "worker3"):
        assert re.search(rf"\b{worker} [1-9]", summary), f"{worker} ran no task"
    assert "urgent tasks (submitted after the backlog)" in summary
    assert "retried: 0 tasks" not in summary, "the e-mail retry did not happen"
    assert "e-mails received by the local SMTP server: 2 (2 with a PDF)" in summary
    assert "dead-lettered: 1" in summary and re.search(r"-poison-[0-9a-f]+-000000 ", summary)
    assert ": permanent: " in summary
    assert "image '/etc/passwd' is not inside the worker's image input directory" in summary
