"""`spectask demo` end to end on the test broker: real processes, every task type, exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(400)
def test_demo_runs_every_path_and_exits_zero(amqp_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "AMQP_URL": amqp_url, "SPECTASK_OUTPUT_DIR": str(tmp_path / "out")}
    done = subprocess.run(
        [sys.executable, "-m", "spectask.cli", "demo", "--count", "18", "--timeout", "240"],
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
    for operation in (
        "image_processing.resize",
        "data_analysis.statistics",
        "report_generation.email",
    ):
        assert operation in output
    assert "worker1" in output and "worker2" in output and "worker3" in output
    assert "urgent tasks (submitted after the backlog)" in output
    assert "retried: 0 tasks" not in output, "the e-mail retry did not happen"
    assert "e-mails received by the local SMTP server: 2 (2 with a PDF)" in output
    assert "dead-lettered: 1" in output and ": permanent: " in output
