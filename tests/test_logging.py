"""Logs for people and for pipelines (issue 9 item 13): a level and a JSON format for every
command, one line per task outcome that can be turned off, third-party loggers kept quiet.

Real commands against the session's RabbitMQ; the level rules in a fresh interpreter, since
the test runner configures logging of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TASK = ("--task", "data_analysis.statistics", "--params", '{"values": [1, 2, 3]}')
pytestmark = pytest.mark.timeout(180)


def spectask(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spectask.cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def submit_one(amqp_url: str) -> str:
    done = spectask("produce", *TASK, AMQP_URL=amqp_url)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line that is a log record; the command's own lines are plain text."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_json_logs_carry_one_outcome_per_task_with_its_fields(amqp_url: str) -> None:
    task_id = submit_one(amqp_url)
    done = spectask(
        "--log-format", "json", "worker", "w1", "--types", "data_analysis", "--burst",
        AMQP_URL=amqp_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = json_lines(done.stderr)
    assert records, done.stderr
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
    outcomes = [r for r in records if r.get("task_id") == task_id]
    assert len(outcomes) == 1, done.stderr
    outcome = outcomes[0]
    assert outcome["level"] == "INFO"
    assert outcome["outcome"] == "succeeded"
    assert outcome["task_type"] == "data_analysis.statistics"
    assert outcome["attempt"] == 1
    assert isinstance(outcome["duration_ms"], float) and outcome["duration_ms"] >= 0
    assert outcome["logger"] == "spectask.runtime.outcomes"
    assert task_id in outcome["message"] and "succeeded in" in outcome["message"]


def test_task_outcome_lines_can_be_turned_off(amqp_url: str) -> None:
    task_id = submit_one(amqp_url)
    done = spectask(
        "worker", "w1", "--types", "data_analysis", "--burst",
        AMQP_URL=amqp_url, SPECTASK_LOG_TASKS="false", SPECTASK_LOG_LEVEL="info",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "consuming" in done.stderr  # INFO lines still show
    assert "succeeded" in done.stderr.splitlines()[-1]  # the worker's own summary: it ran
    assert task_id not in done.stderr, done.stderr


def test_log_level_warning_hides_info(amqp_url: str) -> None:
    """After the command too: `main-worker.py w1 --log-level warning` puts it there."""
    submit_one(amqp_url)
    done = spectask(
        "worker", "w1", "--types", "data_analysis", "--burst", "--log-level", "warning",
        AMQP_URL=amqp_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert " INFO " not in done.stderr and "consuming" not in done.stderr, done.stderr


LEVELS_PROBE = """
import logging, sys
from spectask.logs import configure_logging
configure_logging(sys.argv[1])
for name in ("spectask.runtime.consumer", "aiormq.connection", "aio_pika.robust_connection",
             "some.library"):
    print(name, logging.getLogger(name).isEnabledFor(logging.DEBUG),
          logging.getLogger(name).isEnabledFor(logging.INFO))
"""


def test_debug_is_spectask_s_own_not_the_libraries() -> None:
    """`-v` made the root logger DEBUG: every library's debug lines, AMQP frames included."""
    done = subprocess.run(
        [sys.executable, "-c", LEVELS_PROBE, "DEBUG"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    enabled = {
        name: (debug == "True", info == "True")
        for name, debug, info in (line.split() for line in done.stdout.splitlines())
    }
    assert enabled["spectask.runtime.consumer"] == (True, True)
    assert enabled["some.library"] == (False, True)
    assert enabled["aiormq.connection"] == (False, False)
    assert enabled["aio_pika.robust_connection"] == (False, False)


def test_a_bad_log_setting_names_its_variable() -> None:
    done = spectask("status", "x", SPECTASK_LOG_LEVEL="loud")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert "error: SPECTASK_LOG_LEVEL='loud'" in done.stderr, done.stderr
