"""The work-queue acceptance test: competing worker processes on a real RabbitMQ.

Proves: every task is processed exactly once and shared across workers; a worker started
mid-run gets work; tasks published with no worker running wait durably; a worker killed with
`kill -9` mid-task has that task redelivered to another worker; a broker restart loses no
confirmed task.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.brokers import require_controllable
from tests.workqueue_support import (
    Env,
    queue_depth,
    submit,
    wait_ready,
    worker_environment,
)

pytestmark = pytest.mark.timeout(300)

FILTER = "image_processing.filter"


@pytest.fixture
async def env(amqp_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    async with worker_environment(amqp_url, tmp_path) as environment:
        yield environment


def make_image(path: Path, size: int) -> Path:
    Image.radial_gradient("L").resize((size, size)).convert("RGB").save(path)
    return path


def filter_tasks(prefix: str, count: int, image: Path, radius: float = 3) -> list[Any]:
    params = {"image": {"path": str(image)}, "filter": "blur", "radius": radius}
    return [(f"{prefix}-{index:04d}", FILTER, params) for index in range(count)]


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def assert_exactly_once(env: Env, ids: list[str]) -> None:
    counts = {task_id: len(env.collector.results[task_id]) for task_id in ids}
    duplicated = {task_id: n for task_id, n in counts.items() if n != 1}
    assert not duplicated, f"tasks not processed exactly once: {duplicated}"
    failed = [
        r for task_id in ids for r in env.collector.results[task_id] if r["status"] != "succeeded"
    ]
    assert not failed, f"failed tasks: {failed[:3]}"


async def test_300_tasks_processed_exactly_once_shared_by_three_workers(env: Env) -> None:
    image = make_image(env.tmp / "image.png", 300)
    workers = [env.worker(f"w{n}") for n in (1, 2, 3)]
    wait_ready(*workers)
    ids = await submit(env.url, filter_tasks("share", 300, image))
    await env.collector.wait_for(ids, timeout=180)
    assert_exactly_once(env, ids)
    shares = env.collector.workers_of(ids)
    assert set(shares) == {"w1", "w2", "w3"}, shares
    assert all(count >= 30 for count in shares.values()), f"uneven shares: {shares}"


async def test_worker_started_mid_run_gets_work(env: Env) -> None:
    image = make_image(env.tmp / "image.png", 500)
    first = [env.worker("early1"), env.worker("early2")]
    wait_ready(*first)
    ids = await submit(env.url, filter_tasks("mid", 300, image, radius=6))
    await wait_until(lambda: len(env.collector.results) >= 30, 120, "the first 30 results")
    assert len(env.collector.results) < 300, "the run ended before the late worker could start"
    late = env.worker("late")
    wait_ready(late)
    await env.collector.wait_for(ids, timeout=240)
    assert_exactly_once(env, ids)
    assert env.collector.workers_of(ids).get("late", 0) > 0, env.collector.workers_of(ids)


async def test_tasks_published_with_no_worker_wait_durably(env: Env) -> None:
    image = make_image(env.tmp / "image.png", 64)
    ids = await submit(env.url, filter_tasks("waiting", 50, image))
    await asyncio.sleep(1.0)
    assert await queue_depth(env.url, "tasks.image_processing") == 50
    assert not env.collector.results, "results appeared with no worker running"
    wait_ready(env.worker("latecomer"))
    await env.collector.wait_for(ids, timeout=60)
    assert_exactly_once(env, ids)


async def test_task_of_a_killed_worker_is_redelivered_to_another(env: Env) -> None:
    big = make_image(env.tmp / "big.png", 4000)
    victim = env.worker("victim", types="image_processing")
    wait_ready(victim)
    [slow_id] = await submit(env.url, filter_tasks("slow", 1, big, radius=60))
    # The victim is the only consumer: once the queue is empty, it holds the task. Freeze it
    # mid-task (decoding and blurring a 4000x4000 image takes ~1 s) so it cannot finish.
    deadline = time.monotonic() + 30
    while await queue_depth(env.url, "tasks.image_processing"):
        assert time.monotonic() < deadline, "the victim never took the task"
    victim.process.send_signal(signal.SIGSTOP)
    rescuer = env.worker("rescuer", types="image_processing")
    wait_ready(rescuer)
    assert not env.collector.results, "the victim finished before it was frozen"
    victim.kill9()
    others = await submit(
        env.url, filter_tasks("after-kill", 20, make_image(env.tmp / "s.png", 64))
    )
    await env.collector.wait_for([slow_id, *others], timeout=120)
    assert_exactly_once(env, [slow_id, *others])
    assert env.collector.results[slow_id][0]["worker_id"] == "rescuer"


async def test_broker_restart_loses_no_confirmed_task(env: Env, broker_node: Any) -> None:
    require_controllable(broker_node)
    image = make_image(env.tmp / "image.png", 200)
    before = await submit(env.url, filter_tasks("before-restart", 100, image))
    await asyncio.to_thread(broker_node.restart)  # confirmed, queued, no worker: must survive
    assert await queue_depth(env.url, "tasks.image_processing") == 100
    workers = [env.worker("r1"), env.worker("r2")]
    wait_ready(*workers)
    during = await submit(env.url, filter_tasks("during-restart", 200, image, radius=5))
    await wait_until(lambda: len(env.collector.results) >= 120, 120, "the run to get going")
    await asyncio.to_thread(broker_node.restart)  # with workers mid-run
    ids = before + during
    await env.collector.wait_for(ids, timeout=240)
    # At-least-once: a restart may duplicate a task whose ack was lost, never lose one.
    assert all(env.collector.results[task_id] for task_id in ids)
    assert all(
        r["status"] == "succeeded" for task_id in ids for r in env.collector.results[task_id]
    )
