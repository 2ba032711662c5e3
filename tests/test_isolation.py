"""Sync handlers in handler processes: time limits stop them, crashes fail one task, no leftovers.

The handlers here are module-level functions, so they pickle by reference and the slot
processes import this module to run them.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing.forkserver
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal, cast

import pytest

from generated import models
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.runtime.execution import (
    HandlerCrashedError,
    HandlerRunner,
    TaskTimeoutError,
    to_json_object,
)
from spectask.runtime.isolation import ProcessPool, RemoteHandlerError, RemoteTraceback
from spectask.runtime.producer import TaskPublisher
from spectask.runtime.worker import run_worker
from tests.runtime_support import Numbers, drain, make_names
from tests.workqueue_support import ROOT

pytestmark = pytest.mark.timeout(120)

CONTEXT = TaskContext(
    task_id="task-1",
    message_type="data_analysis.statistics",
    task_type="data_analysis",
    operation="statistics",
    attempt=2,
    worker_id="w-iso",
    routing_key="data_analysis.statistics",
    redelivered=False,
    submitted_at=None,
    priority=5,
)


def describe(payload: models.DataStatistics, context: TaskContext) -> dict[str, Any]:
    return {
        "total": sum(payload.values),
        "task_id": context.task_id,
        "attempt": context.attempt,
        "pid": os.getpid(),
    }


def as_model(payload: models.DataStatistics, context: TaskContext) -> models.ErrorInfo:
    return models.ErrorInfo(type="probe", message=f"{len(payload.values)} values")


def spin(payload: Any, context: TaskContext) -> None:
    while True:  # CPU-bound and never returns: only killing the process stops it
        pass


def exit_hard(payload: Any, context: TaskContext) -> None:
    os._exit(1)


def killed(payload: Any, context: TaskContext) -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does


def fail(payload: Any, context: TaskContext) -> None:
    raise ValueError("disk on fire")


class Unpicklable(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


def fail_oddly(payload: Any, context: TaskContext) -> None:
    raise Unpicklable(7, "cannot be rebuilt from args")


def not_json(payload: Any, context: TaskContext) -> object:
    return 42


def sleepy(payload: Numbers, context: TaskContext) -> dict[str, int]:
    time.sleep(payload.delay)
    return {"pid": os.getpid()}


async def where(payload: Any, context: TaskContext) -> dict[str, int]:
    return {"pid": os.getpid()}


def spin_numbers(payload: Numbers, context: TaskContext) -> dict[str, Any]:
    if payload.fail == "spin":
        spin(payload, context)
    return {"sum": sum(payload.values)}


def alive(pid: int) -> bool:
    """Whether a process exists (a zombie counts: it was not reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def children_of(*parents: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid in parents:
            found.append(int(entry.name))
    return found


@pytest.fixture
def runner() -> Iterator[HandlerRunner]:
    handlers = HandlerRunner(1, "process")
    try:
        yield handlers
    finally:
        handlers.close()


STATS = models.DataStatistics(values=[1.0, 2.5])


async def test_results_round_trip_from_another_process(runner: HandlerRunner) -> None:
    result = await runner.run(describe, STATS, CONTEXT, 30)
    assert result is not None
    assert result == {"total": 3.5, "task_id": "task-1", "attempt": 2, "pid": result["pid"]}
    assert result["pid"] != os.getpid()
    assert await runner.run(as_model, STATS, CONTEXT, 30) == {
        "type": "probe",
        "message": "2 values",
        "traceback": None,
    }
    again = await runner.run(describe, STATS, CONTEXT, 30)
    assert again is not None and again["pid"] == result["pid"], "the slot is reused"


async def test_async_handlers_stay_on_the_loop(runner: HandlerRunner) -> None:
    assert await runner.run(where, STATS, CONTEXT, 30) == {"pid": os.getpid()}


async def test_cpu_loop_is_stopped_at_its_time_limit(runner: HandlerRunner) -> None:
    first = await runner.run(describe, STATS, CONTEXT, 30)
    assert first is not None
    pid = first["pid"]
    started = time.monotonic()
    with pytest.raises(TaskTimeoutError, match=r"time limit of 0\.5s; its process .* was stopped"):
        await runner.run(spin, STATS, CONTEXT, 0.5)
    elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 1.5, f"stopping took {elapsed:.2f}s"
    assert not alive(pid), f"the slot process {pid} survived its time limit"
    after = await runner.run(describe, STATS, CONTEXT, 30)
    assert after is not None and after["total"] == 3.5 and after["pid"] != pid


async def test_os_exit_is_a_clear_error_and_the_pool_recovers(runner: HandlerRunner) -> None:
    with pytest.raises(HandlerCrashedError, match=r"running task task-1: it exited with status 1"):
        await runner.run(exit_hard, STATS, CONTEXT, 30)
    with pytest.raises(HandlerCrashedError, match=r"killed by SIGKILL.*out-of-memory"):
        await runner.run(killed, STATS, CONTEXT, 30)
    result = await runner.run(describe, STATS, CONTEXT, 30)
    assert result is not None and result["total"] == 3.5


async def test_exceptions_come_back_with_the_remote_traceback(runner: HandlerRunner) -> None:
    with pytest.raises(ValueError, match="disk on fire") as caught:
        await runner.run(fail, STATS, CONTEXT, 30)
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert 'raise ValueError("disk on fire")' in cause.text
    with pytest.raises(RemoteHandlerError, match=r"Unpicklable: 7: cannot be rebuilt"):
        await runner.run(fail_oddly, STATS, CONTEXT, 30)
    with pytest.raises(TypeError, match="handler returned int"):
        await runner.run(cast(Any, not_json), STATS, CONTEXT, 30)
    assert await runner.run(describe, STATS, CONTEXT, 30) is not None


async def test_unpicklable_handler_runs_in_a_thread_with_a_warning(
    runner: HandlerRunner, caplog: pytest.LogCaptureFixture
) -> None:
    def local(payload: Any, context: TaskContext) -> dict[str, int]:
        return {"pid": os.getpid()}

    assert await runner.run(local, STATS, CONTEXT, 30) == {"pid": os.getpid()}
    assert "cannot be pickled" in caplog.text


async def test_cancelled_task_kills_its_process(runner: HandlerRunner) -> None:
    first = await runner.run(describe, STATS, CONTEXT, 30)
    assert first is not None
    task = asyncio.create_task(runner.run(sleepy, Numbers(values=[1], delay=30), CONTEXT, 60))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    runner.close()
    assert not alive(first["pid"])


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
async def test_shutdown_leaves_no_child_processes(
    start_method: Literal["forkserver", "spawn"],
) -> None:
    pool = ProcessPool(3, to_json_object, start_method=start_method)
    nap = Numbers(values=[1], delay=0.2)
    results = await asyncio.gather(*(pool.run(sleepy, nap, CONTEXT, 30) for _ in range(3)))
    pids = {cast(dict[str, int], result)["pid"] for result in results}
    assert len(pids) == 3 and set(pool.pids) == pids
    with pytest.raises(TaskTimeoutError):
        await pool.run(spin, STATS, CONTEXT, 0.3)
    pool.close()
    assert pool.pids == []
    assert not [pid for pid in pids if alive(pid)]
    # Slots are children of the fork server (forkserver) or of this process (spawn).
    server = getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)
    if start_method == "forkserver":
        assert server is not None and children_of(server) == []
    leftovers = [pid for pid in children_of(os.getpid()) if pid in pids]
    assert leftovers == []


ORPHAN_SCRIPT = """
import asyncio, sys
from spectask.runtime.execution import HandlerRunner
from tests.test_isolation import CONTEXT, describe, STATS, spin

async def main():
    runner = HandlerRunner(1, "process")
    print((await runner.run(describe, STATS, CONTEXT, 30))["pid"], flush=True)
    await runner.run(spin, STATS, CONTEXT, 600)

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_slot_processes_do_not_outlive_a_killed_worker(tmp_path: Path) -> None:
    script = tmp_path / "victim.py"
    script.write_text(ORPHAN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    victim = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert victim.stdout is not None
        slot = int(victim.stdout.readline())
        time.sleep(0.3)  # the slot is spinning now
        assert alive(slot)
    finally:
        victim.kill()
        victim.wait(timeout=10)
    deadline = time.monotonic() + 5
    while alive(slot) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(slot), f"slot process {slot} outlived its worker"
    if victim.stdout is not None:
        victim.stdout.close()


async def test_process_pool_reuses_its_slots_for_every_task() -> None:
    """1,000 trivial tasks run in the pool's 4 slot processes: no process is spawned per task.

    Spawning per task is what would make the pool slow; this counts processes rather than timing
    them, so it holds on a loaded machine. The rate is printed for information only.
    """
    runner = HandlerRunner(4, "process")
    try:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(runner.run(describe, STATS, CONTEXT, 30) for _ in range(1000))
        )
        rate = 1000 / (time.perf_counter() - started)
    finally:
        runner.close()
    print(f"trivial sync handler through 4 slot processes: {rate:.0f}/s")
    pids = {result["pid"] for result in results if result is not None}
    assert len([result for result in results if result is not None]) == 1000
    assert 1 <= len(pids) <= 4, pids
    assert os.getpid() not in pids


# --- through the worker ----------------------------------------------------------------------


@pytest.fixture
async def broker(amqp_url: str) -> AsyncIterator[Broker]:
    config = RuntimeConfig(
        amqp_url=amqp_url, prefetch=4, concurrency=1, shutdown_timeout=5, isolation="process"
    )
    async with await Broker.connect(config, name="test-isolation") as connected:
        yield connected


async def test_worker_reports_a_timeout_and_keeps_working(broker: Broker, amqp_url: str) -> None:
    names = make_names(time_limit=0.5)
    await broker.declare(names.topology)
    publisher = TaskPublisher(await broker.publisher(), names.topology)
    stuck = await publisher.submit(names.send, Numbers(values=[1], fail="spin"))
    fine = await publisher.submit(names.send, Numbers(values=[2, 3]))
    stop = asyncio.Event()
    worker = asyncio.create_task(
        run_worker(
            broker,
            topology=names.topology,
            routes=(names.receive,),
            handlers={"processSum": spin_numbers},
            send_routes=names.send_routes,
            worker_id="w-iso",
            stop=stop,
        )
    )
    try:
        messages = await drain(amqp_url, names.result_queue, 2, timeout=20)
    finally:
        stop.set()
        stats = await asyncio.wait_for(worker, timeout=15)
    results = {m.message_id: json.loads(m.body) for m in messages}
    assert results[stuck]["status"] == "failed"
    assert results[stuck]["error"]["type"] == "timeout"
    assert "was stopped" in results[stuck]["error"]["message"]
    assert results[fine]["status"] == "succeeded" and results[fine]["result"] == {"sum": 5.0}
    assert stats.failed == 1 and stats.succeeded == 1
