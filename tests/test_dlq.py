"""`spectask dlq` on a real broker: list without disturbing, show, replay once, purge carefully."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from spectask import dlq
from spectask.errors import PermanentTaskError
from spectask.protocol.names import ATTEMPT_HEADER, SUBMITTED_AT_HEADER
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.runtime.deadletter import DeadReason, build_dead_letter
from spectask.runtime.producer import TaskPublisher
from spectask.runtime.transport import connect
from spectask.runtime.worker import run_worker
from tests.runtime_support import Names, Numbers, depth, drain, make_names

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
TRACE = 'Traceback (most recent call last):\n  File "h.py", line 3\nValueError: boom'


@pytest.fixture
async def broker(any_url: str) -> AsyncIterator[Broker]:
    config = RuntimeConfig(amqp_url=any_url, prefetch=8, concurrency=4, shutdown_timeout=5)
    async with await Broker.connect(config, name="test-dlq") as connected:
        yield connected


@pytest.fixture
async def real_broker(amqp_url: str) -> AsyncIterator[Broker]:
    """For tests that run the CLI in a subprocess, which an in-memory broker cannot reach."""
    config = RuntimeConfig(amqp_url=amqp_url, prefetch=8, concurrency=4, shutdown_timeout=5)
    async with await Broker.connect(config, name="test-dlq") as connected:
        yield connected


async def dead_letter(
    broker: Broker,
    names: Names,
    task_id: str,
    reason: DeadReason = DeadReason.EXCEPTION,
    *,
    body: bytes = b'{"values": [1, 2]}',
    routing_key: str = "num.sum",
    attempts: int = 3,
    traceback: str = TRACE,
) -> None:
    """Publish one dead letter as the worker would have, confirmed."""
    route = next(r for r in names.send_routes if r.message_type == "spectask.dead_letter")
    message = build_dead_letter(
        route,
        body=body,
        message_id=task_id,
        message_type="num.sum",
        original_headers={ATTEMPT_HEADER: attempts, SUBMITTED_AT_HEADER: "2024-05-01T10:00:00"},
        reason=reason,
        error=f"ValueError: {task_id} failed\nsecond line",
        origin_queue=names.queue,
        origin_exchange=names.tasks,
        origin_routing_key=routing_key,
        attempts=attempts,
        traceback=traceback,
        content_type="application/json",
    )
    await (await broker.publisher()).publish(message)


async def setup(broker: Broker, count: int = 0) -> Names:
    names = make_names()
    await broker.declare(names.topology)
    reasons = [DeadReason.EXCEPTION, DeadReason.SCHEMA_VIOLATION, DeadReason.TIMEOUT]
    for index in range(count):
        await dead_letter(broker, names, f"t{index}", reasons[index % len(reasons)])
    return names


async def cli(amqp_url: str, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run `python -m spectask.cli` with AMQP_URL and no TTY on stdin."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "spectask.cli",
        *args,
        cwd=ROOT,
        env={**os.environ, "AMQP_URL": amqp_url},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"spectask {' '.join(args)} ran past {timeout}s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def without_age(views: list[dlq.DeadLetterView]) -> list[dict[str, Any]]:
    return [{k: v for k, v in view.summary().items() if k != "age_seconds"} for view in views]


async def test_list_decodes_and_leaves_the_queue_as_it_was(broker: Broker, any_url: str) -> None:
    names = await setup(broker, count=5)
    first = await dlq.list_dead_letters(broker, names.dead_queue)
    second = await dlq.list_dead_letters(broker, names.dead_queue)
    assert [view.task_id for view in first] == ["t0", "t1", "t2", "t3", "t4"]
    assert without_age(first) == without_age(second)
    assert await depth(any_url, names.dead_queue) == 5
    view = first[1]
    assert view.summary()["error"] == "ValueError: t1 failed"
    assert (view.message_type, view.reason, view.attempts) == ("num.sum", "schema_violation", 3)
    assert (view.origin_queue, view.origin_exchange, view.origin_routing_key) == (
        names.queue,
        names.tasks,
        "num.sum",
    )
    assert view.first_failure_at is not None and view.last_failure_at is not None
    age = view.age()
    assert age is not None and 0 <= age.total_seconds() < 60
    exceptions = await dlq.list_dead_letters(broker, names.dead_queue, reason="exception")
    assert [v.task_id for v in exceptions] == ["t0", "t3"]
    assert [v.task_id for v in await dlq.list_dead_letters(broker, names.dead_queue, limit=2)] == [
        "t0",
        "t1",
    ]
    assert await depth(any_url, names.dead_queue) == 5


async def test_listing_stops_at_the_starting_count_while_dead_letters_arrive(
    broker: Broker, any_url: str
) -> None:
    names = await setup(broker, count=20)
    stop = asyncio.Event()

    async def keep_failing() -> int:
        sent = 0
        while not stop.is_set():
            await dead_letter(broker, names, f"late{sent}")
            sent += 1
        return sent

    producer = asyncio.create_task(keep_failing())
    try:
        await asyncio.sleep(0.05)
        views = await asyncio.wait_for(dlq.list_dead_letters(broker, names.dead_queue), 30)
    finally:
        stop.set()
        sent = await asyncio.wait_for(producer, 10)
    assert [v.task_id for v in views[:20]] == [f"t{i}" for i in range(20)]
    assert len(views) <= 20 + sent
    assert await depth(any_url, names.dead_queue) == 20 + sent


async def test_cli_list_json(real_broker: Broker, amqp_url: str) -> None:
    names = await setup(real_broker, count=3)
    code, out, err = await cli(amqp_url, "dlq", "list", "--json", "--queue", names.dead_queue)
    assert code == 0, err
    listed = json.loads(out)
    assert [(d["task_id"], d["reason"], d["attempts"]) for d in listed] == [
        ("t0", "exception", 3),
        ("t1", "schema_violation", 3),
        ("t2", "timeout", 3),
    ]
    assert listed[0]["origin_routing_key"] == "num.sum" and listed[0]["error"].endswith("failed")
    assert listed[0]["age_seconds"] >= 0 and listed[0]["message_type"] == "num.sum"
    code, out, err = await cli(amqp_url, "dlq", "list", "--queue", names.dead_queue)
    assert code == 0, err
    assert "3 dead letter(s)" in out and "t2  num.sum  timeout  attempts=3" in out
    assert await depth(amqp_url, names.dead_queue) == 3


async def test_cli_show_prints_traceback_and_body(real_broker: Broker, amqp_url: str) -> None:
    names = await setup(real_broker, count=1)
    await dead_letter(
        real_broker, names, "raw", DeadReason.UNDECODABLE, body=b"\xff{not json", traceback=""
    )
    code, out, err = await cli(amqp_url, "dlq", "show", "t0", "--queue", names.dead_queue)
    assert code == 0, err
    assert TRACE.replace("\n", "\n  ") in out
    assert 'body: 18 bytes, JSON:\n{\n  "values": [\n    1,' in out
    assert "x-spectask-submitted-at" in out and "second line" in out
    code, out, err = await cli(amqp_url, "dlq", "show", "raw", "--queue", names.dead_queue)
    assert code == 0, err
    assert "body: 10 bytes, not JSON:\nb'\\xff{not json'\nhex: ff 7b 6e" in out
    code, out, err = await cli(amqp_url, "dlq", "show", "nope", "--queue", names.dead_queue)
    assert code == 1 and "no dead letter" in err and "nope" in err
    assert await depth(amqp_url, names.dead_queue) == 2


async def test_replayed_message_is_the_original_task_again(broker: Broker, any_url: str) -> None:
    names = await setup(broker, count=3)
    report = await dlq.replay(broker, names.dead_queue, task_ids=["t1"])
    assert [v.task_id for v in report.replayed] == ["t1"] and not report.failed
    [task] = await drain(any_url, names.queue, 1)
    assert (task.message_id, task.type, task.routing_key, task.exchange) == (
        "t1",
        "num.sum",
        "num.sum",
        names.tasks,
    )
    assert task.body == b'{"values": [1, 2]}' and task.content_type == "application/json"
    assert task.headers == {ATTEMPT_HEADER: 1, SUBMITTED_AT_HEADER: "2024-05-01T10:00:00"}
    remaining = await dlq.list_dead_letters(broker, names.dead_queue)
    assert [v.task_id for v in remaining] == ["t0", "t2"]


async def test_replay_completes_a_dead_task_exactly_once(broker: Broker, any_url: str) -> None:
    names = make_names()
    await broker.declare(names.topology)
    calls: list[int] = []

    def flaky(payload: Numbers, context: TaskContext) -> dict[str, Any]:
        calls.append(context.attempt)
        if len(calls) == 1:
            raise PermanentTaskError("bad input, for now")
        return {"sum": sum(payload.values), "attempt": context.attempt}

    publisher = TaskPublisher(await broker.publisher(), names.topology)
    message = publisher.build(names.send, Numbers(values=[2, 3]))
    # attempt 3, as a task back from its delay tier carries it (the broker's x-death record:
    # a fresh submit's attempt would be ignored)
    back = {"count": 1, "reason": "expired", "queue": "retry.1000ms", "exchange": "retry.1000ms"}
    message = replace(message, headers={**message.headers, ATTEMPT_HEADER: 3, "x-death": [back]})
    await (await broker.publisher()).publish(message)

    async def work(send_routes: Any, until: Any) -> Any:
        stop = asyncio.Event()
        worker = asyncio.create_task(
            run_worker(
                broker,
                topology=names.topology,
                routes=(names.receive,),
                handlers={"processSum": flaky},
                send_routes=send_routes,
                worker_id="w-dlq",
                stop=stop,
            )
        )
        try:
            return await until()
        finally:
            stop.set()
            await asyncio.wait_for(worker, 15)

    # Phase 1: a worker that publishes no results, so the failure can only become a dead letter.
    dead_only = tuple(r for r in names.send_routes if r.message_type == "spectask.dead_letter")
    await work(dead_only, lambda: wait_depth(any_url, names.dead_queue, 1))
    [view] = await dlq.list_dead_letters(broker, names.dead_queue)
    assert view.task_id == message.message_id and view.attempts == 3
    assert view.reason in {"permanent", "exception"} and "bad input" in view.error

    # Phase 2: replay, and a worker with results completes it.
    async def replay_and_collect() -> list[Any]:
        report = await dlq.replay(broker, names.dead_queue, task_ids=[message.message_id])
        assert len(report.replayed) == 1 and not report.failed
        return await drain(any_url, names.result_queue, 1)

    [result_message] = await work(names.send_routes, replay_and_collect)
    result = json.loads(result_message.body)
    assert (result["task_id"], result["status"], result["attempt"]) == (
        message.message_id,
        "succeeded",
        1,
    )
    assert result["result"] == {"sum": 5.0, "attempt": 1}
    assert calls == [3, 1]
    assert await depth(any_url, names.dead_queue) == 0
    assert await depth(any_url, names.result_queue) == 0  # exactly one result
    assert await depth(any_url, names.queue) == 0


async def wait_depth(url: str, queue: str, expected: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (current := await depth(url, queue)) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{queue} holds {current}, not {expected}, after {timeout}s")
        await asyncio.sleep(0.05)


async def test_unroutable_replay_keeps_the_dead_letter(real_broker: Broker, amqp_url: str) -> None:
    names = await setup(real_broker, count=1)
    await dead_letter(real_broker, names, "lost", routing_key="nobody.listens")
    report = await dlq.replay(real_broker, names.dead_queue, replay_all=True)
    assert [v.task_id for v in report.replayed] == ["t0"]
    [(view, error)] = report.failed
    assert view.task_id == "lost" and "nobody.listens" in error and "matched no queue" in error
    assert [v.task_id for v in await dlq.list_dead_letters(real_broker, names.dead_queue)] == [
        "lost"
    ]
    code, out, err = await cli(amqp_url, "dlq", "replay", "lost", "--queue", names.dead_queue)
    assert code == 1 and "not replayed lost" in err and "matched no queue" in err
    assert "0 replayed, 1 failed" in out
    assert await depth(amqp_url, names.dead_queue) == 1
    assert await depth(amqp_url, names.queue) == 1  # t0 only


async def test_replay_to_a_missing_exchange_keeps_the_dead_letter(broker: Broker) -> None:
    names = await setup(broker)
    route = next(r for r in names.send_routes if r.message_type == "spectask.dead_letter")
    gone = build_dead_letter(
        route,
        body=b"{}",
        message_id="gone",
        message_type="num.sum",
        original_headers={},
        reason=DeadReason.EXCEPTION,
        error="x",
        origin_queue="q",
        origin_exchange=f"{names.tasks}.deleted",
        origin_routing_key="num.sum",
        attempts=1,
    )
    await (await broker.publisher()).publish(gone)
    report = await dlq.replay(broker, names.dead_queue, replay_all=True)
    [(view, error)] = report.failed
    assert view.task_id == "gone" and "does not exist" in error and not report.replayed
    assert [v.task_id for v in await dlq.list_dead_letters(broker, names.dead_queue)] == ["gone"]


async def test_replay_refuses_when_nothing_matches(broker: Broker, any_url: str) -> None:
    names = await setup(broker, count=2)
    with pytest.raises(dlq.NoMatchingDeadLettersError, match="task id nope"):
        await dlq.replay(broker, names.dead_queue, task_ids=["t0", "nope"])
    with pytest.raises(dlq.NoMatchingDeadLettersError, match="reason 'too_large'"):
        await dlq.replay(broker, names.dead_queue, reason="too_large")
    code, _, err = await cli(any_url, "dlq", "replay", "--queue", names.dead_queue)
    assert code == 1 and "say which dead letters" in err
    assert await depth(any_url, names.dead_queue) == 2 and await depth(any_url, names.queue) == 0


async def test_purge(real_broker: Broker, amqp_url: str) -> None:
    names = await setup(real_broker, count=6)
    code, _, err = await cli(amqp_url, "dlq", "purge", "--queue", names.dead_queue)
    assert code == 1 and "refusing to purge" in err and "--yes" in err
    assert await depth(amqp_url, names.dead_queue) == 6

    assert await dlq.purge(real_broker, names.dead_queue, reason="timeout") == 2
    left = [v.task_id for v in await dlq.list_dead_letters(real_broker, names.dead_queue)]
    assert left == ["t0", "t1", "t3", "t4"]

    async def no(count: int) -> bool:
        assert count == 4
        return False

    assert await dlq.purge(real_broker, names.dead_queue, confirm=no) == 0
    assert await depth(amqp_url, names.dead_queue) == 4

    code, out, err = await cli(
        amqp_url, "dlq", "purge", "--yes", "--reason", "exception", "--queue", names.dead_queue
    )
    assert code == 0 and "deleted 2 dead letter(s)" in out, err
    code, out, err = await cli(amqp_url, "dlq", "purge", "--yes", "--queue", names.dead_queue)
    assert code == 0 and "deleted 2 dead letter(s)" in out, err
    assert await depth(amqp_url, names.dead_queue) == 0


async def purge_on_a_tty(amqp_url: str, queue: str, answer: bytes) -> tuple[int, str]:
    """`dlq purge` with a pseudo-terminal on stdin, answering the prompt with `answer`."""
    controller, terminal = pty.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "spectask.cli",
            "dlq",
            "purge",
            "--queue",
            queue,
            cwd=ROOT,
            env={**os.environ, "AMQP_URL": amqp_url},
            stdin=terminal,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        os.write(controller, answer)  # the terminal buffers it until the prompt reads it
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError("dlq purge on a TTY did not finish in 60s") from None
    finally:
        os.close(controller)
        os.close(terminal)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_purge_asks_on_a_terminal(real_broker: Broker, amqp_url: str) -> None:
    names = await setup(real_broker, count=3)
    code, out = await purge_on_a_tty(amqp_url, names.dead_queue, b"n\n")
    assert code == 0 and f"delete 3 dead letters from {names.dead_queue}? [y/N]" in out
    assert "nothing deleted" in out and await depth(amqp_url, names.dead_queue) == 3
    code, out = await purge_on_a_tty(amqp_url, names.dead_queue, b"y\n")
    assert code == 0 and "deleted 3 dead letter(s)" in out, out
    assert await depth(amqp_url, names.dead_queue) == 0


async def test_missing_queue_is_a_clear_error(broker: Broker, any_url: str) -> None:
    with pytest.raises(dlq.DeadLetterQueueMissingError, match="does not exist"):
        await dlq.list_dead_letters(broker, "no.such.queue.for.dlq")
    code, _, err = await cli(any_url, "dlq", "list", "--queue", "no.such.queue.for.dlq")
    assert code == 1 and "'no.such.queue.for.dlq' does not exist" in err


def test_body_preview_and_age_format() -> None:
    from datetime import timedelta

    from spectask.commands.dlq import format_age

    assert dlq.body_preview(b'{"a": 1}') == '8 bytes, JSON:\n{\n  "a": 1\n}'
    preview = dlq.body_preview(bytes(range(256)) * 3)
    assert preview.startswith("768 bytes, not JSON (first 512 shown):\nb'\\x00\\x01")
    assert preview.endswith(" 3e 3f ...")
    assert [format_age(timedelta(seconds=s)) for s in (5, 75, 3700, 90000)] == [
        "5s",
        "1m15s",
        "1h01m",
        "1d01h",
    ]
    assert format_age(None) == "?"


async def test_aio_pika_headers_survive_decoding(broker: Broker, any_url: str) -> None:
    """Raw headers (bytes, nested tables, x-death) list fine and are stripped on replay."""
    names = await setup(broker)
    connection = await connect(any_url, robust=False)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(names.dead)
        headers: dict[str, Any] = {
            "x-spectask-reason": "timeout",
            "x-spectask-origin-exchange": names.tasks,
            "x-spectask-origin-routing-key": "num.sum",
            "x-spectask-first-failure-at": "not a time",
            "x-death": [{"count": 1, "queue": "somewhere", "reason": "expired"}],
            "x-spectask-last-error": "ValueError: from the retry tier",
            "x-custom": bytearray(b"\x00raw"),
        }
        await exchange.publish(
            aio_pika.Message(b"{}", message_id="raw", type="num.sum", headers=headers), "dead"
        )
    [view] = await dlq.list_dead_letters(broker, names.dead_queue)
    assert view.first_failure_at is None and view.age() is None and view.attempts is None
    assert dlq.plain_headers(view)["x-custom"] == "\x00raw"
    outgoing = view.replay_message()
    assert set(outgoing.headers) == {"x-custom", ATTEMPT_HEADER}
    assert outgoing.headers["x-custom"] == b"\x00raw"  # as stored, not decoded
    report = await dlq.replay(broker, names.dead_queue, replay_all=True)
    assert len(report.replayed) == 1 and not report.failed
    [task] = await drain(any_url, names.queue, 1)
    assert task.headers == {"x-custom": b"\x00raw", ATTEMPT_HEADER: 1}


def test_the_spec_names_the_dead_letter_queue() -> None:
    from spectask.commands.dlq import spec_queue

    queue, topology = spec_queue()
    assert queue == "dead_letter" and any(q.name == queue for q in topology.queues)
