"""`bench/run.py --quick` runs end to end and reports; it is a smoke test, not a speed test.

No speed bar is asserted here: timing assertions on a shared CI machine fail at random. The
bench itself exits non-zero only when a run is invalid (lost tasks, timeouts, dead workers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_bench_prints_the_table_and_the_ratios(amqp_url: str, tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    completed = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--output", str(output)],
        cwd=ROOT,
        env={**os.environ, "AMQP_URL": amqp_url},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    assert any(line.split()[:3] == ["side", "tasks/s", "p50"] for line in lines if line.strip())
    for side in ("raw", "spectask"):
        assert any(line.split()[:1] == [side] for line in lines), completed.stdout
    assert "ratio spectask/raw: throughput" in completed.stdout

    document = json.loads(output.read_text())
    assert set(document["median"]) == {"raw", "spectask"}
    assert document["median"]["spectask"]["throughput"] > 0
    assert document["ratios"]["throughput"] > 0
    assert document["config"]["quick"] is True
