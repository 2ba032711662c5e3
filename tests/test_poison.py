"""Poison a worker must settle (issue 9, items 1-3 and 5): every delivery ends, valid ones run.

Each test publishes its poison the way an attacker would — raw aio-pika (or the in-memory
transport) messages with hand-made headers and bodies, bypassing the typed producer — in
between valid tasks, on a worker already consuming. It then waits for exactly the dead letters
and results it expects (no fixed sleep): every poison message is a dead letter with its reason
and a one-line error, the handler never ran for one, and every valid task ran exactly once.
The results go through the protocol's own TaskResult model, so a result the runtime could not
build (an attempt below 1, say) fails here as it fails in a real worker.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from spectask.protocol.models import TaskResult
from spectask.runtime.broker import Broker
from spectask.runtime.config import RuntimeConfig
from spectask.runtime.context import TaskContext
from tests.runtime_support import (
    InProcessWorkers,
    Names,
    Numbers,
    depth,
    drain,
    make_names,
    publish_raw,
)

pytestmark = pytest.mark.timeout(120)

VALID_TASKS = 40
JSON = {"type": "num.sum", "content_type": "application/json"}


@dataclass(frozen=True)
class Poison:
    """One message that must be dead-lettered: what is sent, and what its dead letter says."""

    task_id: str
    reason: str
    error: Sequence[str]  # fragments of x-spectask-error, in any order
    body: bytes = b'{"values": [1, 2]}'
    properties: dict[str, Any] = field(default_factory=dict)


def total(payload: Numbers, context: TaskContext) -> dict[str, Any]:
    return {"sum": sum(payload.values), "attempt": context.attempt}


async def unserializable(payload: Numbers, context: TaskContext) -> dict[str, Any]:
    """Succeeds, but with a result no JSON can hold when asked to (fail="unserializable")."""
    if payload.fail == "unserializable":
        return {"sum": object()}
    return {"sum": sum(payload.values), "attempt": context.attempt}


def protocol_names() -> Names:
    """The test topology, its results validated by the protocol's TaskResult (attempt >= 1)."""
    names = make_names()
    result, dead = names.send_routes
    return replace(names, send_routes=(replace(result, model=TaskResult), dead))


def valid_headers(index: int) -> dict[str, Any]:
    """What valid producers send: no attempt at all (another client's first submission),
    attempt 1 with the submission time (spectask's producer), or a later attempt copied from
    a retry (valid, but a fresh submit's attempt is ignored: it runs as attempt 1)."""
    if index % 3 == 0:
        return {}
    if index % 3 == 1:
        return {"x-spectask-attempt": 1, "x-spectask-submitted-at": datetime.now(UTC).isoformat()}
    return {
        "x-spectask-attempt": 2,
        "x-spectask-first-failure-at": datetime.now(UTC).isoformat(),
        "x-spectask-last-error": "ValueError: the previous attempt failed",
    }


async def run_with_poison(
    url: str,
    workers: InProcessWorkers,
    poison: Sequence[Poison],
    *,
    handler: Any = total,
) -> None:
    """Interleave `poison` with VALID_TASKS valid tasks; check every message's ending."""
    names = protocol_names()
    stream: list[tuple[bytes, dict[str, Any]]] = []
    expected_attempt: dict[str, int] = {}
    every = max(1, VALID_TASKS // (len(poison) + 1))
    pending = list(poison)
    for index in range(VALID_TASKS):
        task_id = f"ok{index:03d}"
        headers = valid_headers(index)
        expected_attempt[task_id] = 1  # published by a client, never back from a delay tier
        body = json.dumps({"values": [index, 1]}).encode()
        stream.append((body, {**JSON, "message_id": task_id, "headers": headers}))
        if (index + 1) % every == 0 and pending:
            bad = pending.pop(0)
            stream.append((bad.body, {**JSON, "message_id": bad.task_id, **bad.properties}))
    for bad in pending:
        stream.append((bad.body, {**JSON, "message_id": bad.task_id, **bad.properties}))
    config = RuntimeConfig(amqp_url=url, prefetch=8, concurrency=2, shutdown_timeout=5)
    async with asyncio.timeout(60), await Broker.connect(config) as broker:
        await broker.declare(names.topology)
        stop = asyncio.Event()
        _, worker = await workers.start(broker, names, handler, stop, consuming=True)
        await publish_raw(url, names.tasks, stream)
        dead = await drain(url, names.dead_queue, len(poison), timeout=30)
        results = await drain(url, names.result_queue, VALID_TASKS, timeout=30)
        assert not worker.done(), "the worker stopped on its own"
        stop.set()
        stats = await worker

    documents = [json.loads(message.body) for message in results]
    assert sorted(d["task_id"] for d in documents) == sorted(expected_attempt)  # each once
    assert all(d["status"] == "succeeded" for d in documents), documents
    assert {d["task_id"]: d["attempt"] for d in documents} == expected_attempt
    assert {d["task_id"]: d["result"]["sum"] for d in documents} == {
        f"ok{index:03d}": float(index + 1) for index in range(VALID_TASKS)
    }

    by_id = {bad.task_id: bad for bad in poison}
    assert sorted(m.message_id or "" for m in dead) == sorted(by_id)  # each exactly once
    for message in dead:
        bad = by_id[message.message_id or ""]
        headers = message.headers
        error = str(headers["x-spectask-error"])
        assert headers["x-spectask-reason"] == bad.reason, (bad.task_id, error)
        for fragment in bad.error:
            assert fragment in error, (bad.task_id, error)
        assert "\n" not in error, error  # one line
        assert message.body == bad.body  # the original bytes, unchanged
        attempts = headers["x-spectask-attempts"]
        assert isinstance(attempts, int) and 0 <= attempts <= 1_000_000  # storable
    # Nothing left behind, nothing unacked: every queue is empty once the worker stopped.
    for queue in (names.queue, names.result_queue, names.dead_queue):
        assert await depth(url, queue) == 0, queue
    assert stats.dead_lettered == len(poison)
    assert stats.succeeded == VALID_TASKS


def bad_attempt(task_id: str, value: Any, detail: str) -> Poison:
    shown = repr(value)
    return Poison(
        task_id,
        "invalid_headers",
        (
            f"header x-spectask-attempt is {shown} ({type(value).__name__})",
            "the protocol wants an integer in 1..1000000",
            detail,
        ),
        properties={"headers": {"x-spectask-attempt": value}},
    )


async def test_an_attempt_of_2_31_or_more_is_dead_lettered(
    any_url: str, workers: InProcessWorkers
) -> None:
    """Item 1, the worker's half: an attempt the store's INTEGER cannot hold never passes."""
    too_big = "less than or equal to 1000000"
    await run_with_poison(
        any_url,
        workers,
        [
            bad_attempt("bad-2-31", 2**31, too_big),
            bad_attempt("bad-2-62", 2**62, too_big),
            bad_attempt("bad-max-plus-1", 1_000_001, too_big),
        ],
    )


async def test_an_attempt_of_zero_or_less_is_dead_lettered_not_left_unacked(
    any_url: str, workers: InProcessWorkers
) -> None:
    """Item 2: attempt <= 0 used to run, then fail building its result and stay unacked."""
    at_least_one = "greater than or equal to 1"
    await run_with_poison(
        any_url,
        workers,
        [
            bad_attempt("bad-zero", 0, at_least_one),
            bad_attempt("bad-negative", -1, at_least_one),
            bad_attempt("bad-very-negative", -(2**40), at_least_one),
        ],
    )


async def test_an_attempt_that_is_not_an_integer_is_dead_lettered(
    any_url: str, workers: InProcessWorkers
) -> None:
    """Item 3: "1", "abc", 1.5, "" and true were taken as attempt 1; no coercion now."""
    not_an_integer = "Input should be a valid integer"
    await run_with_poison(
        any_url,
        workers,
        [
            bad_attempt("bad-string-1", "1", not_an_integer),
            bad_attempt("bad-abc", "abc", not_an_integer),
            bad_attempt("bad-float", 1.5, not_an_integer),
            bad_attempt("bad-empty", "", not_an_integer),
            bad_attempt("bad-bool", True, not_an_integer),
            Poison(
                "bad-submitted-at",
                "invalid_headers",
                ("header x-spectask-submitted-at is 5 (int)", "a date-time string"),
                properties={"headers": {"x-spectask-submitted-at": 5}},
            ),
        ],
    )


async def test_json_payloads_are_strict_and_a_content_type_is_required(
    any_url: str, workers: InProcessWorkers
) -> None:
    """Item 5: a bool is not a number, a string is not a number, and no content type is no JSON."""
    await run_with_poison(
        any_url,
        workers,
        [
            Poison(
                "bad-bools",
                "schema_violation",
                ("values.0: Input should be a valid number",),
                body=b'{"values": [true, false]}',
            ),
            Poison(
                "bad-bool-delay",
                "schema_violation",
                ("delay: Input should be a valid number",),
                body=b'{"values": [1], "delay": true}',
            ),
            Poison(
                "bad-number-string",
                "schema_violation",
                ("values.0: Input should be a valid number",),
                body=b'{"values": ["1", 2]}',
            ),
            Poison(
                "bad-no-content-type",
                "undecodable",
                ("the message has no content type; expected application/json",),
                properties={"content_type": None},
            ),
        ],
    )


async def test_an_outcome_that_cannot_be_built_still_settles_the_delivery(
    any_url: str, workers: InProcessWorkers
) -> None:
    """The delivery loop's last resort: a result that cannot be serialized is a dead letter
    (`exception`, naming what failed), never a delivery that holds its prefetch slot."""
    await run_with_poison(
        any_url,
        workers,
        [
            Poison(
                f"bad-result-{index}",
                "exception",
                ("spectask failed handling it: PydanticSerializationError",),
                body=b'{"values": [1], "fail": "unserializable"}',
            )
            for index in range(3)
        ],
        handler=unserializable,
    )
