"""The producer validates every task against its schema before anything is published."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.workqueue_support import queue_depth, reset_topology

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)


def produce(amqp_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "main-producer.py"), *args],
        env={**os.environ, "AMQP_URL": amqp_url, **env},
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


def test_an_interrupted_submit_keeps_track_of_what_the_broker_has(
    amqp_url: str, tmp_path: Path
) -> None:
    """Ctrl-C half-way through a large batch: the confirmed ids in --ids-file, the others in
    `.unconfirmed`, "N of M confirmed" on stderr, a non-zero exit; no traceback."""

    def depth() -> int:
        return asyncio.run(queue_depth(amqp_url, "tasks.data_analysis"))

    asyncio.run(reset_topology(amqp_url))
    ids_file = tmp_path / "ids.txt"
    total = 40000
    command = [sys.executable, str(ROOT / "main-producer.py"), "--count", str(total)]
    process = subprocess.Popen(
        [*command, "--types", "data_analysis.statistics", "--ids-file", str(ids_file)],
        env={**os.environ, "AMQP_URL": amqp_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while depth() < 200:  # confirms are flowing
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no task reached the broker"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "never retrieved" not in stderr, stderr
    confirmed = ids_file.read_text().split()
    unconfirmed = Path(f"{ids_file}.unconfirmed").read_text().split()
    # the queue held 200 when the signal went, but confirms trail routing: some of those may
    # not have been confirmed yet, so only "some, not all" is certain
    assert 0 < len(confirmed) < total, stderr
    assert len(set(confirmed) | set(unconfirmed)) == len(confirmed) + len(unconfirmed) == total
    summary = f"error: {len(confirmed)} of {total} tasks confirmed by the broker (interrupted)"
    assert summary in stderr, stderr
    assert depth() >= len(confirmed)  # every id it calls confirmed is on the broker
    asyncio.run(reset_topology(amqp_url))


async def test_a_task_workers_would_refuse_as_too_large_is_not_sent(
    amqp_url: str, tmp_path: Path
) -> None:
    """The producer refuses what a worker would dead-letter as too_large (issue 9, item 8)."""
    await reset_topology(amqp_url)
    params = tmp_path / "big.json"
    params.write_text(json.dumps({"values": [1.5] * 50_000}))  # about 200 kB of JSON
    done = produce(
        amqp_url,
        "--task",
        "data_analysis.statistics",
        "--params",
        f"@{params}",
        SPECTASK_MAX_MESSAGE_BYTES="100000",
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "workers refuse tasks over 100,000 bytes (SPECTASK_MAX_MESSAGE_BYTES)" in done.stderr
    assert await queue_depth(amqp_url, "tasks.data_analysis") == 0


async def test_a_reused_batch_label_never_reuses_a_task_id(amqp_url: str, tmp_path: Path) -> None:
    """Issue 9 item 4: `--batch b1` twice made the same ids b1-000000..., so the second batch's
    tasks merged into the first one's records. The label is a prefix; the ids are new."""
    await reset_topology(amqp_url)
    runs = []
    for name in ("first", "second"):
        ids_file = tmp_path / name
        args = ("--count", "3", "--types", "data_analysis.statistics", "--batch", "b1")
        done = produce(amqp_url, *args, "--ids-file", str(ids_file))
        assert done.returncode == 0, done.stderr
        runs.append(ids_file.read_text().split())
    first, second = runs
    assert len(set(first)) == len(set(second)) == 3
    assert not set(first) & set(second)
    assert all(task_id.startswith("b1-") for task_id in first + second)


async def test_a_batch_label_that_makes_ids_too_long_is_refused(amqp_url: str) -> None:
    """A task id is an AMQP shortstr: a label that makes ids over 255 bytes is one clear line."""
    await reset_topology(amqp_url)
    done = produce(
        amqp_url, "--count", "2", "--types", "data_analysis.statistics", "--batch", "b" * 250
    )
    assert done.returncode == 1
    assert "is not allowed: a task id is 1 to 255 bytes" in done.stderr
    assert "Traceback" not in done.stderr
    assert await queue_depth(amqp_url, "tasks.data_analysis") == 0
