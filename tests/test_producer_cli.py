"""The producer validates every task against its schema before anything is published."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workqueue_support import queue_depth, reset_topology

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)


def produce(amqp_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "main-producer.py"), *args],
        env={**os.environ, "AMQP_URL": amqp_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("task", "params", "complaint"),
    [
        (
            "image_processing.resize",
            {"image": {"path": "a.png"}, "width": -5, "height": 10},
            "width",
        ),
        ("image_processing.filter", {"image": {"path": "a.png"}, "filter": "sepia"}, "filter"),
        ("report_generation.email", {"title": "t", "series": [1], "to": ["not-an-address"]}, "to"),
        ("data_analysis.statistics", {"values": [1, 2], "extra": True}, "extra"),
    ],
)
async def test_invalid_task_is_refused_before_publishing(
    amqp_url: str, task: str, params: dict[str, object], complaint: str
) -> None:
    await reset_topology(amqp_url)
    done = produce(amqp_url, "--task", task, "--params", json.dumps(params))
    assert done.returncode == 1
    assert f"invalid {task} task" in done.stderr and complaint in done.stderr
    assert "Traceback" not in done.stderr
    queue = f"tasks.{task.split('.')[0]}"
    assert await queue_depth(amqp_url, queue) == 0


async def test_valid_task_is_confirmed_and_its_id_printed(amqp_url: str) -> None:
    await reset_topology(amqp_url)
    params = {"values": [1, 2, 3]}
    done = produce(
        amqp_url,
        "--task",
        "data_analysis.statistics",
        "--params",
        json.dumps(params),
        "--priority",
        "urgent",
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip()) == 32  # the task id
    assert "all confirmed by the broker" in done.stderr
    assert await queue_depth(amqp_url, "tasks.data_analysis") == 1


def test_unknown_priority_is_refused(amqp_url: str) -> None:
    done = produce(
        amqp_url,
        "--task",
        "data_analysis.statistics",
        "--params",
        '{"values": [1]}',
        "--priority",
        "asap",
    )
    assert done.returncode == 1 and "asap" in done.stderr and "urgent" in done.stderr
