"""`spectask cancel` as a user runs it: a subprocess against a real broker, a real collector
(in-process, on an SQLite store) and, where a task must be taken, a real `main-worker.py`.

The command runs as an asyncio subprocess so the collector, which lives on the test's event
loop, keeps answering its status RPC while the command waits for the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from generated import models
from generated.producer import ProducerClient
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from tests.status_support import (
    collector,
    new_id,
    producer_client,
    publish_results,
    wait_states,
)
from tests.workqueue_support import ROOT, WorkerProcess, wait_ready

pytestmark = pytest.mark.timeout(120)

NOTHING = "nothing to cancel"
REQUESTED = "cancel requested for"


@dataclass(frozen=True)
class Done:
    """How a `spectask` command ended."""

    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


def cli_env(amqp_url: str) -> dict[str, str]:
    return {**os.environ, "AMQP_URL": amqp_url, "PYTHONUNBUFFERED": "1"}


async def start_cli(amqp_url: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "spectask.cli",
        *args,
        cwd=ROOT,
        env=cli_env(amqp_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(process: asyncio.subprocess.Process, head: str = "", timeout: float = 60) -> Done:
    """Wait for the command (killing it at the deadline); `head` is stdout read already."""
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(
            f"the command did not end in {timeout}s; stdout so far:\n{head}"
        ) from None
    assert process.returncode is not None
    return Done(process.returncode, head + out.decode(), err.decode())


async def spectask(amqp_url: str, *args: str, timeout: float = 60) -> Done:
    return await finish(await start_cli(amqp_url, *args), timeout=timeout)


async def read_until(process: asyncio.subprocess.Process, text: str, timeout: float = 30) -> str:
    """Stdout up to the line containing `text` (fail if the command ends or is slow first)."""
    assert process.stdout is not None
    seen = ""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while text not in seen:
        remaining = deadline - loop.time()
        assert remaining > 0, f"no {text!r} in {timeout}s; stdout so far:\n{seen}"
        try:
            line = await asyncio.wait_for(process.stdout.readline(), remaining)
        except TimeoutError:
            continue
        if not line:
            done = await finish(process, seen)
            raise AssertionError(f"the command ended before printing {text!r}:\n{done}")
        seen += line.decode()
    return seen


def final_counts(table: str, message_type: str) -> dict[str, int]:
    """The row of `message_type` in the final-state table, as {state: count}."""
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("task type"))
    states = header.split()[2:]
    row = next(line for line in lines if line.startswith(message_type))
    counts = [int(cell) for cell in row.split()[1:]]
    assert len(counts) == len(states), table
    return dict(zip(states, counts, strict=True))


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """SQLite only: the store backends have their own tests; here the command line matters."""
    return f"sqlite:///{tmp_path / 'tasks.db'}"


@contextlib.asynccontextmanager
async def client_and_collector(amqp_url: str, store_url: str) -> AsyncIterator[ProducerClient]:
    async with await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker:
        client = await producer_client(broker)
        async with collector(amqp_url, store_url):
            yield client


@contextlib.contextmanager
def data_worker(worker_id: str, amqp_url: str, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A real `main-worker.py` serving data_analysis; stopped (and its log shown) at the end."""
    worker = WorkerProcess(worker_id, amqp_url, types="data_analysis", log_dir=tmp_path)
    try:
        yield worker
    except BaseException:
        print(f"--- log of worker {worker_id}\n{worker.log()}")
        raise
    finally:
        worker.stop()


async def submit_queued(client: ProducerClient, *tags: str) -> list[str]:
    """data_analysis.statistics tasks, QUEUED (no worker serves data_analysis yet)."""
    ids = [
        await client.submit_data_statistics(
            models.DataStatistics(values=[1.0, 2.0, 3.0, 4.0]), task_id=new_id(tag)
        )
        for tag in tags
    ]
    await wait_states(client, dict.fromkeys(ids, "QUEUED"))
    return ids


async def test_an_unknown_id_is_refused_and_nothing_is_cancelled(
    amqp_url: str, store_url: str, tmp_path: Path
) -> None:
    """A typo: exit 1, the id is named as unknown, nothing is published; a task given that
    id afterwards runs normally (had a cancellation been published, a worker would skip it)."""
    async with client_and_collector(amqp_url, store_url) as client:
        typo = new_id("typo")
        done = await spectask(amqp_url, "cancel", typo, "--reason", "oops")
        assert done.returncode == 1, done
        assert f"{typo}: unknown (never seen by a collector); not cancelled" in done.stdout, done
        assert REQUESTED not in done.stdout and "Traceback" not in done.stderr, done

        await client.submit_data_statistics(
            models.DataStatistics(values=[1.0, 2.0, 3.0]), task_id=typo
        )
        with data_worker("cancel-typo-w", amqp_url, tmp_path):
            views = await wait_states(client, {typo: "SUCCEEDED"}, timeout=45)
        result = views[typo].result
        assert result is not None and result["mean"] == 2.0, views[typo]


async def test_a_queued_task_cancelled_by_the_cli_is_skipped_by_a_worker_started_later(
    amqp_url: str, store_url: str, tmp_path: Path
) -> None:
    """Cancelled while queued (no worker runs); a worker started afterwards reads the stream,
    skips it and it ends CANCELLED with the reason; its neighbour still runs."""
    async with client_and_collector(amqp_url, store_url) as client:
        doomed, kept = await submit_queued(client, "cli-doomed", "cli-kept")
        done = await spectask(amqp_url, "cancel", doomed, "--reason", "wrong input file")
        assert done.returncode == 0, done
        assert f"{REQUESTED} 1 task(s)" in done.stdout, done
        assert "unknown" not in done.stdout and "Traceback" not in done.stderr, done

        with data_worker("cancel-later-w", amqp_url, tmp_path) as worker:
            views = await wait_states(client, {doomed: "CANCELLED", kept: "SUCCEEDED"}, timeout=45)
            assert "consuming" in worker.log()
        error = views[doomed].error
        assert error is not None, views[doomed]
        assert "wrong input file" in error.message, error
        assert views[doomed].result is None
        result = views[kept].result
        assert result is not None and result["mean"] == 2.5, views[kept]


async def test_wait_prints_the_final_table_once_the_task_is_cancelled(
    amqp_url: str, store_url: str, tmp_path: Path
) -> None:
    """`--wait`: the command is still waiting when the worker starts; it prints the final
    table (the task CANCELLED) and exits 0."""
    async with client_and_collector(amqp_url, store_url) as client:
        (doomed,) = await submit_queued(client, "cli-wait")
        process = await start_cli(
            amqp_url, "cancel", doomed, "--reason", "not needed", "--wait", "--timeout", "60"
        )
        head = await read_until(process, REQUESTED)
        assert process.returncode is None, "it should be waiting for the task"
        with data_worker("cancel-wait-w", amqp_url, tmp_path) as worker:
            await asyncio.to_thread(wait_ready, worker)
            done = await finish(process, head, timeout=60)
        assert done.returncode == 0, done
        assert f"{REQUESTED} 1 task(s)" in done.stdout, done
        counts = final_counts(done.stdout, "data_analysis.statistics")
        assert counts == {"SUCCEEDED": 0, "FAILED": 0, "DEAD": 0, "CANCELLED": 1}, done
        assert "latency submit->finish" in done.stdout, done
        assert "finished before the cancellation" not in done.stdout, done
        views = await wait_states(client, {doomed: "CANCELLED"})
        error = views[doomed].error
        assert error is not None and "not needed" in error.message, views[doomed]


async def test_an_already_final_task_is_left_alone(amqp_url: str, store_url: str) -> None:
    """SUCCEEDED already: nothing to cancel, exit 0, it stays SUCCEEDED. `--force --wait`
    publishes anyway and then reports (exit 2) that it finished before the cancellation."""
    async with client_and_collector(amqp_url, store_url) as client:
        finished = new_id("cli-final")
        async with await Broker.connect(RuntimeConfig(amqp_url=amqp_url)) as broker:
            await publish_results(broker, [(finished, "succeeded")])
        await wait_states(client, {finished: "SUCCEEDED"})

        done = await spectask(amqp_url, "cancel", finished)
        assert done.returncode == 0, done
        assert f"{finished}: already SUCCEEDED; {NOTHING}" in done.stdout, done
        assert REQUESTED not in done.stdout and "Traceback" not in done.stderr, done

        forced = await spectask(
            amqp_url, "cancel", finished, "--force", "--wait", "--timeout", "20"
        )
        assert forced.returncode == 2, forced
        assert f"{REQUESTED} 1 task(s)" in forced.stdout, forced
        assert "1 task(s) finished before the cancellation reached them" in forced.stdout, forced
        counts = final_counts(forced.stdout, "data_analysis.statistics")
        assert counts["SUCCEEDED"] == 1 and counts["CANCELLED"] == 0, forced

        views = await wait_states(client, {finished: "SUCCEEDED"})
        assert views[finished].result == {"mean": 2.0}


async def test_without_a_collector_it_times_out_clearly_unless_forced(
    amqp_url: str, store_url: str, tmp_path: Path
) -> None:
    """No collector: the status check fails with a clear error (exit 1, no traceback, nothing
    published); `--force` skips the check and publishes. Then, with a collector and a worker,
    a task given the refused id runs and one given the forced id is skipped."""
    refused, forced_id = new_id("cli-nocoll"), new_id("cli-forced")
    done = await spectask(amqp_url, "cancel", refused, "--reason", "x")
    assert done.returncode == 1, done
    assert "error:" in done.stderr and "no collector answered" in done.stderr, done
    assert "Traceback" not in done.stderr and REQUESTED not in done.stdout, done

    forced = await spectask(amqp_url, "cancel", forced_id, "--force", "--reason", "blind")
    assert forced.returncode == 0, forced
    assert f"{REQUESTED} 1 task(s)" in forced.stdout, forced
    assert "unknown" not in forced.stdout and "Traceback" not in forced.stderr, forced

    async with client_and_collector(amqp_url, store_url) as client:
        for task_id in (refused, forced_id):
            await client.submit_data_statistics(
                models.DataStatistics(values=[5.0]), task_id=task_id
            )
        with data_worker("cancel-force-w", amqp_url, tmp_path):
            views = await wait_states(
                client, {refused: "SUCCEEDED", forced_id: "CANCELLED"}, timeout=45
            )
        error = views[forced_id].error
        assert error is not None and "blind" in error.message, views[forced_id]
