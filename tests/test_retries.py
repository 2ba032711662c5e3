"""Retries with backoff, time limits and dead letters: on a real broker, plus the tier arithmetic.

Each broker test builds its own uniquely named topology (tasks, results and dead-letter
exchanges and queues, the retry tiers its policy needs, and a `tap` queue bound to the tasks
exchange that receives a copy of every attempt, so the headers a retried task carries can be
read). Handlers are async: they record when each attempt started, in this process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from spectask.errors import PermanentTaskError
from spectask.protocol.names import FIRST_FAILURE_HEADER, LAST_ERROR_HEADER
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from spectask.runtime.producer import TaskPublisher
from spectask.runtime.retry import (
    MAX_LAST_ERROR_CHARS,
    backoff_delay,
    choose_tier,
    failure_headers,
    tier_delays_ms,
    tier_topology,
    with_tiers,
)
from spectask.runtime.topology import (
    BindingSpec,
    ExchangeSpec,
    QueueSpec,
    ReceiveRoute,
    RetryPolicy,
    RetryTier,
    SendRoute,
    TaskPolicy,
    Topology,
)
from tests.brokers import unique_name
from tests.runtime_support import (
    AnyBody,
    InProcessWorkers,
    Numbers,
    Result,
    broker_now,
    depth,
    drain,
    fast_forward,
    pass_time,
    skipped,
)

pytestmark = pytest.mark.timeout(120)

TOLERANCE = 0.25  # seconds, for each measured gap between attempts


# --- the tier arithmetic ----------------------------------------------------------------------


def test_backoff_grows_by_the_multiplier_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=6, initial_delay=0.5, multiplier=2.0, max_delay=3.0)
    assert [backoff_delay(policy, k) for k in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_tier_delays_without_jitter_are_the_steps() -> None:
    policy = RetryPolicy(max_attempts=6, initial_delay=0.5, multiplier=2.0, max_delay=3.0)
    assert tier_delays_ms(policy) == [500, 1000, 2000, 3000]
    assert tier_delays_ms(RetryPolicy(max_attempts=1)) == []  # never retries: no tiers


def test_tier_delays_with_jitter_spread_each_step() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=1.0, multiplier=2.0, jitter=0.1)
    assert tier_delays_ms(policy) == [900, 1000, 1100, 1800, 2000, 2200]
    assert tier_delays_ms(policy, jitter_tiers=2) == [900, 1100, 1800, 2200]
    assert tier_delays_ms(policy, jitter_tiers=1) == [1000, 2000]


def test_jittered_choice_stays_in_range_and_centres_on_the_step() -> None:
    retry = with_tiers(
        TaskPolicy(retry=RetryPolicy(max_attempts=3, initial_delay=1.0, jitter=0.1)), "r"
    ).retry
    rng = random.Random(7)
    second = [choose_tier(retry, 2, rng) for _ in range(4000)]
    counts = {ms: sum(1 for t in second if t and t.delay_ms == ms) for ms in (1800, 2000, 2200)}
    assert sum(counts.values()) == 4000  # only the tiers of this step's jittered range
    assert 0.2 < counts[1800] / 4000 < 0.3 and 0.45 < counts[2000] / 4000 < 0.55
    assert choose_tier(retry, 2, rng) in retry.tiers
    assert choose_tier(RetryPolicy(max_attempts=3), 1) is None  # no tiers: cannot retry


def test_choice_without_jitter_is_the_step_or_the_nearest_tier() -> None:
    tiers = (RetryTier(400, "a"), RetryTier(1000, "b"))
    policy = RetryPolicy(max_attempts=4, initial_delay=0.5, multiplier=2.0, tiers=tiers)
    assert [choose_tier(policy, k) for k in (1, 2, 3)] == [tiers[0], tiers[1], tiers[1]]


def test_failure_headers_keep_the_first_failure_and_republishable_values() -> None:
    first = datetime(2026, 1, 1, tzinfo=UTC)
    headers = failure_headers({"x-a": b"\xff"}, error="E: " + "x" * 5000, now=first)
    assert headers[FIRST_FAILURE_HEADER] == first.isoformat()
    assert len(headers[LAST_ERROR_HEADER]) == MAX_LAST_ERROR_CHARS
    assert headers["x-a"] == bytearray(b"\xff")  # bytes cannot be published; a bytearray can
    again = failure_headers(headers, error="E: later", now=datetime.now(UTC))
    assert again[FIRST_FAILURE_HEADER] == first.isoformat()
    assert again[LAST_ERROR_HEADER] == "E: later"


# --- on a real broker --------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryNames:
    tasks: str
    queue: str
    tap: str
    result_queue: str
    dead_queue: str
    topology: Topology
    receive: ReceiveRoute
    send: SendRoute
    send_routes: tuple[SendRoute, ...]


def make_retry_names(retry: RetryPolicy, time_limit: float = 30.0) -> RetryNames:
    """A topology like the spec's, tiers included, under names no other test uses."""
    base = unique_name("rty")
    tasks, results, dead = f"{base}.tasks", f"{base}.results", f"{base}.dead"
    queue, tap, result_queue, dead_queue = f"{base}.q", f"{base}.tap", f"{base}.rq", f"{base}.dq"
    policy = with_tiers(TaskPolicy(retry=retry, time_limit=time_limit), f"{base}.retry")
    tier_exchanges, tier_queues = tier_topology(
        f"{base}.retry", tasks, [tier.delay_ms for tier in policy.retry.tiers]
    )
    topology = Topology(
        exchanges=(ExchangeSpec(tasks), ExchangeSpec(results), ExchangeSpec(dead), *tier_exchanges),
        queues=(
            QueueSpec(queue, bindings=(BindingSpec(tasks, "num.#"),)),
            QueueSpec(tap, bindings=(BindingSpec(tasks, "#"),)),
            QueueSpec(result_queue, bindings=(BindingSpec(results, "#"),)),
            QueueSpec(dead_queue, bindings=(BindingSpec(dead, "#"),)),
            *tier_queues,
        ),
    )
    return RetryNames(
        tasks,
        queue,
        tap,
        result_queue,
        dead_queue,
        topology,
        ReceiveRoute("processSum", queue, "num.sum", "num", Numbers, policy),
        SendRoute("submitSum", tasks, "num.sum", "num.sum", "num", Numbers),
        (
            SendRoute("publishResult", results, "result", "spectask.result", "spectask", Result),
            SendRoute(
                "publishDeadLetter", dead, "dead", "spectask.dead_letter", "spectask", AnyBody
            ),
        ),
    )


@dataclass
class Attempts:
    """What the handler saw: (attempt, redelivered, start time on the broker's clock) per call.

    The broker's clock (`broker_now`) is real time on RabbitMQ; on the in-memory broker it is
    real time plus the retry waits `fast_forward` skipped, so the gaps mean the same on both.
    """

    url: str
    seen: list[tuple[int, bool, float]] = field(default_factory=list)

    def record(self, context: TaskContext) -> int:
        self.seen.append((context.attempt, context.redelivered, broker_now(self.url)))
        return len(self.seen)

    @property
    def numbers(self) -> list[int]:
        return [attempt for attempt, _, _ in self.seen]

    @property
    def gaps(self) -> list[float]:
        starts = [at for _, _, at in self.seen]
        return [later - earlier for earlier, later in itertools.pairwise(starts)]

    async def wait_for(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.seen)} of {count} attempts in {timeout}s")
            await asyncio.sleep(0.02)


HandlerFn = Callable[[Numbers, TaskContext], Awaitable[dict[str, Any]]]


@pytest.fixture
async def broker(any_url: str) -> AsyncIterator[Broker]:
    """A connection; on the in-memory broker each retry tier's wait is skipped, not slept."""
    config = RuntimeConfig(amqp_url=any_url, prefetch=8, concurrency=4, shutdown_timeout=5)
    async with (
        fast_forward(any_url),
        await Broker.connect(config, name="test-retries") as connected,
    ):
        yield connected


async def submit(broker: Broker, names: RetryNames, payload: Numbers) -> str:
    await broker.declare(names.topology)
    publisher = TaskPublisher(await broker.publisher(), names.topology)
    return await publisher.submit(names.send, payload)


def parse_time(value: Any) -> datetime:
    return datetime.fromisoformat(value.decode() if isinstance(value, bytes) else value)


async def test_fails_twice_then_succeeds_with_the_policy_delays(
    broker: Broker, any_url: str, workers: InProcessWorkers
) -> None:
    retry = RetryPolicy(max_attempts=3, initial_delay=0.5, multiplier=2.0, max_delay=10.0)
    names = make_retry_names(retry)
    attempts = Attempts(any_url)

    async def flaky(payload: Numbers, context: TaskContext) -> dict[str, Any]:
        if attempts.record(context) < 3:
            raise ValueError(f"boom {context.attempt}")
        return {"sum": sum(payload.values), "attempt": context.attempt}

    task_id = await submit(broker, names, Numbers(values=[1, 2]))
    await workers.start(broker, names, flaky, worker_id="w-retry")
    [message] = await drain(any_url, names.result_queue, 1, timeout=20)
    [stats] = await workers.stop_all()
    result = json.loads(message.body)
    assert (result["task_id"], result["status"], result["attempt"]) == (task_id, "succeeded", 3)
    assert result["result"] == {"sum": 3.0, "attempt": 3}
    assert attempts.numbers == [1, 2, 3]
    expected = [0.5, 1.0]
    print(f"\nretry gaps: expected {expected} s, measured {[round(g, 3) for g in attempts.gaps]} s")
    for gap, want in zip(attempts.gaps, expected, strict=True):
        assert abs(gap - want) <= TOLERANCE, (attempts.gaps, expected)
    assert (stats.processed, stats.retried, stats.succeeded, stats.failed) == (3, 2, 1, 0)
    # Every attempt went through the tasks exchange: the tap saw each with its headers (the
    # submit has none: absent is attempt 1; each retry carries its number).
    copies = await drain(any_url, names.tap, 3)
    assert [m.headers.get("x-spectask-attempt") for m in copies] == [None, 2, 3]
    assert {m.message_id for m in copies} == {task_id}
    assert {m.routing_key for m in copies} == {"num.sum"}
    assert {m.body for m in copies} == {copies[0].body}
    assert FIRST_FAILURE_HEADER not in copies[0].headers
    assert [m.headers[LAST_ERROR_HEADER] for m in copies[1:]] == [
        "ValueError: boom 1",
        "ValueError: boom 2",
    ]
    assert copies[1].headers[FIRST_FAILURE_HEADER] == copies[2].headers[FIRST_FAILURE_HEADER]
    # No result and no dead letter for the failed attempts.
    assert await depth(any_url, names.result_queue) == 0
    assert await depth(any_url, names.dead_queue) == 0


async def test_always_failing_task_is_tried_n_times_then_dead_lettered(
    broker: Broker, any_url: str, workers: InProcessWorkers
) -> None:
    retry = RetryPolicy(max_attempts=3, initial_delay=0.2, multiplier=1.0, max_delay=1.0)
    names = make_retry_names(retry)
    attempts = Attempts(any_url)

    async def broken(payload: Numbers, context: TaskContext) -> dict[str, Any]:
        attempts.record(context)
        raise ValueError("disk on fire")

    body = Numbers(values=[4, 5])
    task_id = await submit(broker, names, body)
    await workers.start(broker, names, broken, worker_id="w-retry")
    [dead] = await drain(any_url, names.dead_queue, 1, timeout=20)
    waits_skipped = skipped(any_url)  # all of it between the first failure and the last
    [message] = await drain(any_url, names.result_queue, 1, timeout=10)
    await pass_time(any_url, 0.6)  # longer than a retry delay: a fourth attempt would be back
    [stats] = await workers.stop_all()
    assert attempts.numbers == [1, 2, 3]
    print(f"\nretry gaps: expected [0.2, 0.2] s, measured {[round(g, 3) for g in attempts.gaps]} s")
    assert all(abs(gap - 0.2) <= TOLERANCE for gap in attempts.gaps), attempts.gaps
    assert (stats.processed, stats.retried, stats.failed, stats.dead_lettered) == (3, 2, 1, 1)
    headers = dead.headers
    assert headers["x-spectask-reason"] == "attempts_exhausted"
    assert headers["x-spectask-error"] == "ValueError: disk on fire"
    assert "Traceback" in headers["x-spectask-traceback"]
    assert "ValueError: disk on fire" in headers["x-spectask-traceback"]
    assert headers["x-spectask-attempts"] == 3
    assert headers["x-spectask-origin-queue"] == names.queue
    assert headers["x-spectask-origin-exchange"] == names.tasks
    assert headers["x-spectask-origin-routing-key"] == "num.sum"
    first = parse_time(headers["x-spectask-first-failure-at"])
    last = parse_time(headers["x-spectask-last-failure-at"])
    assert first.tzinfo is not None and last.tzinfo is not None
    # two 0.2 s waits; the stamps are wall-clock times, which cannot see a skipped wait
    between = (last - first).total_seconds()
    assert between > 0 and 0.3 <= between + waits_skipped <= 0.4 + 2 * TOLERANCE
    assert dead.message_id == task_id and dead.type == "num.sum"
    assert dead.body == body.model_dump_json(exclude_unset=True).encode()  # byte for byte
    result = json.loads(message.body)
    assert (result["task_id"], result["status"], result["attempt"]) == (task_id, "failed", 3)
    assert result["error"]["type"] == "ValueError"
    assert result["error"]["message"] == "disk on fire"
    assert "Traceback" in result["error"]["traceback"]
    for queue in (names.queue, *(q.name for q in names.topology.queues if ".retry." in q.name)):
        assert await depth(any_url, queue) == 0


async def test_permanent_error_is_dead_lettered_at_once(
    broker: Broker, any_url: str, workers: InProcessWorkers
) -> None:
    names = make_retry_names(RetryPolicy(max_attempts=3, initial_delay=0.2))
    attempts = Attempts(any_url)

    async def refuses(payload: Numbers, context: TaskContext) -> dict[str, Any]:
        attempts.record(context)
        raise PermanentTaskError("negative sizes cannot be fixed by retrying")

    task_id = await submit(broker, names, Numbers(values=[-1]))
    await workers.start(broker, names, refuses, worker_id="w-retry")
    [dead] = await drain(any_url, names.dead_queue, 1, timeout=20)
    [message] = await drain(any_url, names.result_queue, 1, timeout=10)
    await pass_time(any_url, 0.5)  # more than the retry delay: nothing comes back
    [stats] = await workers.stop_all()
    assert attempts.numbers == [1]
    assert (stats.retried, stats.failed) == (0, 1)
    assert dead.headers["x-spectask-reason"] == "permanent"
    assert dead.headers["x-spectask-attempts"] == 1
    assert dead.headers["x-spectask-error"] == (
        "PermanentTaskError: negative sizes cannot be fixed by retrying"
    )
    assert dead.headers["x-spectask-origin-queue"] == names.queue
    result = json.loads(message.body)
    assert (result["task_id"], result["status"], result["attempt"]) == (task_id, "failed", 1)
    assert result["error"]["type"] == "PermanentTaskError"


async def test_time_limit_expiry_is_a_failed_attempt_with_reason_timeout(
    broker: Broker, any_url: str, workers: InProcessWorkers
) -> None:
    names = make_retry_names(RetryPolicy(max_attempts=2, initial_delay=0.2), time_limit=0.3)
    attempts = Attempts(any_url)

    async def sleepy(payload: Numbers, context: TaskContext) -> dict[str, Any]:
        attempts.record(context)
        await asyncio.sleep(5)  # far beyond the 0.3 s limit
        return {"sum": sum(payload.values)}

    task_id = await submit(broker, names, Numbers(values=[1]))
    await workers.start(broker, names, sleepy, worker_id="w-retry")
    [dead] = await drain(any_url, names.dead_queue, 1, timeout=20)
    [message] = await drain(any_url, names.result_queue, 1, timeout=10)
    [stats] = await workers.stop_all()
    assert attempts.numbers == [1, 2]
    # attempt 1 ran 0.3 s, waited 0.2 s in its tier: attempt 2 started about 0.5 s later
    print(f"\ntimeout + retry gap: expected 0.5 s, measured {attempts.gaps[0]:.3f} s")
    assert abs(attempts.gaps[0] - 0.5) <= TOLERANCE, attempts.gaps
    assert (stats.retried, stats.failed) == (1, 1)
    assert dead.headers["x-spectask-reason"] == "timeout"
    assert dead.headers["x-spectask-attempts"] == 2
    assert "time limit of 0.3s" in dead.headers["x-spectask-error"]
    result = json.loads(message.body)
    assert (result["task_id"], result["status"], result["attempt"]) == (task_id, "failed", 2)
    assert result["error"]["type"] == "timeout"
    [_, retried] = await drain(any_url, names.tap, 2)
    assert retried.headers["x-spectask-attempt"] == 2
    assert retried.headers[LAST_ERROR_HEADER].startswith("timeout: ")


async def test_a_redelivered_task_is_not_a_new_attempt(
    broker: Broker, any_url: str, workers: InProcessWorkers
) -> None:
    """A worker that stops before finishing requeues the task: the next run is attempt 1 again."""
    names = make_retry_names(RetryPolicy(max_attempts=2, initial_delay=0.2))
    attempts = Attempts(any_url)

    async def slow_then_broken(payload: Numbers, context: TaskContext) -> dict[str, Any]:
        if attempts.record(context) == 1:
            await asyncio.sleep(30)  # the first worker is stopped while this runs
        raise ValueError("still broken")

    await submit(broker, names, Numbers(values=[1]))
    quick_stop = RuntimeConfig(amqp_url=any_url, shutdown_timeout=0.2)
    async with await Broker.connect(quick_stop, name="test-retries-victim") as victim_broker:
        stop, _ = await workers.start(victim_broker, names, slow_then_broken, worker_id="w-retry")
        await attempts.wait_for(1)
        stop.set()
        [victim_stats] = await workers.stop_all()
    assert victim_stats.requeued == 1
    await workers.start(broker, names, slow_then_broken, worker_id="w-retry")
    [dead] = await drain(any_url, names.dead_queue, 1, timeout=20)
    await workers.stop_all()
    assert [(attempt, redelivered) for attempt, redelivered, _ in attempts.seen] == [
        (1, False),
        (1, True),  # the broker's redelivery: same attempt
        (2, False),  # back from its retry tier
    ]
    assert dead.headers["x-spectask-attempts"] == 2
    assert dead.headers["x-spectask-reason"] == "attempts_exhausted"
