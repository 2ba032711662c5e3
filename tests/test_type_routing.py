"""Type routing with real worker processes: a worker serves only the task types it was started
with, and tasks of a type no running worker serves wait durably in their queue until one does.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from PIL import Image

from generated.topology import POLICIES
from tests.workqueue_support import (
    ROOT,
    Env,
    queue_depth,
    submit,
    wait_ready,
    worker_environment,
)

pytestmark = pytest.mark.timeout(180)

IMAGE_QUEUE = "tasks.image_processing"
DATA_QUEUE = "tasks.data_analysis"
GRACE = 2.0  # seconds the data tasks must stay put after the image tasks are done


@pytest.fixture
async def env(amqp_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    async with worker_environment(amqp_url, tmp_path) as environment:
        yield environment


async def consumer_count(url: str, name: str) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.consumer_count or 0)


def image_tasks(tmp: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """Three filter tasks on a small file image and two on an inline (base64) one."""
    picture = Image.radial_gradient("L").resize((64, 64)).convert("RGB")
    path = tmp / "gradient.png"
    picture.save(path)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    inline = base64.b64encode(buffer.getvalue()).decode()
    return [
        (f"img-file-{n}", "image_processing.filter", {"image": {"path": str(path)}, "filter": f})
        for n, f in enumerate(("blur", "grayscale", "sharpen"))
    ] + [
        (
            f"img-inline-{n}",
            "image_processing.filter",
            {"image": {"data_base64": inline}, "filter": f},
        )
        for n, f in enumerate(("contour", "emboss"))
    ]


def data_tasks() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (f"data-{n}", "data_analysis.statistics", {"values": [float(v) for v in range(1, n + 3)]})
        for n in range(4)
    ]


def assert_succeeded_once_by(env: Env, ids: list[str], worker_id: str) -> None:
    for task_id in ids:
        documents = env.collector.results[task_id]
        assert len(documents) == 1, f"{task_id}: {len(documents)} results"
        [document] = documents
        assert document["status"] == "succeeded", document
        assert document["worker_id"] == worker_id, document


async def test_worker_serves_only_its_types_and_others_wait_durably(env: Env) -> None:
    images, data = image_tasks(env.tmp), data_tasks()
    image_worker = env.worker("img-only", types="image_processing")
    wait_ready(image_worker)
    assert await consumer_count(env.url, DATA_QUEUE) == 0, "an image-only worker consumes data"
    # Interleaved submission: the types only part ways at the exchange.
    mixed = [task for pair in zip(data, images, strict=False) for task in pair] + images[
        len(data) :
    ]
    submitted = await submit(env.url, mixed)
    image_ids = [task_id for task_id, _, _ in images]
    data_ids = [task_id for task_id, _, _ in data]
    assert sorted(submitted) == sorted(image_ids + data_ids)

    await env.collector.wait_for(image_ids, timeout=60)
    assert_succeeded_once_by(env, image_ids, "img-only")
    assert await queue_depth(env.url, IMAGE_QUEUE) == 0
    assert await queue_depth(env.url, DATA_QUEUE) == len(data)
    await asyncio.sleep(GRACE)
    assert await queue_depth(env.url, DATA_QUEUE) == len(data), "data tasks left their queue"
    assert await consumer_count(env.url, DATA_QUEUE) == 0
    assert not set(data_ids) & env.collector.results.keys(), "a data task got a result"
    assert image_worker.process.poll() is None, f"the image worker exited:\n{image_worker.log()}"
    consuming = [line for line in image_worker.log().splitlines() if "consuming" in line]
    assert consuming and all(DATA_QUEUE not in line for line in consuming), consuming

    data_worker = env.worker("data-only", types="data_analysis")
    wait_ready(data_worker)
    await env.collector.wait_for(data_ids, timeout=60)
    assert_succeeded_once_by(env, data_ids, "data-only")
    for task_id, _, params in data:
        values = params["values"]
        [document] = env.collector.results[task_id]
        assert document["result"]["count"] == len(values)
        assert document["result"]["mean"] == pytest.approx(sum(values) / len(values))
    assert await queue_depth(env.url, DATA_QUEUE) == 0
    assert env.collector.results.keys() == set(image_ids + data_ids)  # nothing else, no repeats


@pytest.mark.parametrize("types", ["nonsense", "image_processing,nonsense"])
def test_unknown_task_type_refuses_to_start(amqp_url: str, types: str) -> None:
    environment = {**os.environ, "AMQP_URL": amqp_url, "PYTHONUNBUFFERED": "1"}
    completed = subprocess.run(
        [sys.executable, str(ROOT / "main-worker.py"), "x", "--types", types],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 1, completed
    assert "nonsense" in completed.stderr, completed.stderr
    for known in POLICIES:
        assert known in completed.stderr, completed.stderr
    assert "consuming" not in completed.stderr + completed.stdout
