"""Retries: a failed task waits in a delay tier queue, then returns to its exchange.

A tier is a fanout exchange and a durable queue, both named `<prefix>.<delay>ms`. The queue has
`x-message-ttl` = the delay and `x-dead-letter-exchange` = the tasks exchange, and no dead-letter
routing key, so an expired task goes back with the routing key it was published with: its
original one. Every message in a tier has the same TTL, so they expire in order (per-message
TTLs on one queue would block behind the longest), and no worker holds a task while it waits.

The delay after k failures is `min(initial * multiplier**(k-1), max)` times a uniformly random
factor in [1 - jitter, 1 + jitter]. Tiers are discrete: for each backoff step of a policy the
generator makes `jitter_tiers` tiers spread evenly over the jittered range (only the step's delay
when jitter is 0 or jitter_tiers is 1); the runtime draws the jittered delay and takes the
nearest of the policy's tiers. With 3 tiers, a 2 s step with jitter 0.1 waits 1.8, 2.0 or 2.2 s,
about 1/4, 1/2 and 1/4 of the time. The jittered delay may exceed `max` by the jitter.

This module imports no aio-pika, so the generator derives tiers with the same code the runtime
picks them with.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from spectask.protocol.names import FIRST_FAILURE_HEADER, LAST_ERROR_HEADER
from spectask.runtime.topology import (
    BindingSpec,
    ExchangeSpec,
    QueueSpec,
    RetryPolicy,
    RetryTier,
    TaskPolicy,
)

MAX_LAST_ERROR_CHARS = 1000
DEFAULT_JITTER_TIERS = 3


def backoff_delay(policy: RetryPolicy, failures: int) -> float:
    """The delay (seconds, before jitter) after `failures` failed attempts (1 = the first)."""
    exponent = max(failures, 1) - 1
    return min(policy.initial_delay * policy.multiplier**exponent, policy.max_delay)


def tier_delays_ms(policy: RetryPolicy, jitter_tiers: int = DEFAULT_JITTER_TIERS) -> list[int]:
    """Every tier delay (milliseconds) a policy can use, sorted; none if it never retries."""
    delays: set[int] = set()
    for failures in range(1, policy.max_attempts):
        delay = backoff_delay(policy, failures)
        if policy.jitter == 0 or jitter_tiers == 1:
            delays.add(round(delay * 1000))
            continue
        low, high = delay * (1 - policy.jitter), delay * (1 + policy.jitter)
        step = (high - low) / (jitter_tiers - 1)
        delays.update(round((low + i * step) * 1000) for i in range(jitter_tiers))
    return sorted(delays)


def tier_name(prefix: str, delay_ms: int) -> str:
    """`retry.1500ms`: the name of a tier's exchange and of its queue."""
    return f"{prefix}.{delay_ms}ms"


def tier_topology(
    prefix: str, dead_letter_exchange: str, delays_ms: Iterable[int]
) -> tuple[tuple[ExchangeSpec, ...], tuple[QueueSpec, ...]]:
    """The exchanges and queues of the given tiers (fanout exchange -> TTL queue -> back)."""
    exchanges, queues = [], []
    for delay_ms in sorted(set(delays_ms)):
        name = tier_name(prefix, delay_ms)
        exchanges.append(ExchangeSpec(name, type="fanout"))
        # `x-queue-type: classic` lets the tier follow SPECTASK_QUEUE_TYPE like the task queues:
        # a quorum tier dead-letters at-least-once (`spectask.runtime.broker.queue_arguments`).
        arguments = (
            ("x-dead-letter-exchange", dead_letter_exchange),
            ("x-message-ttl", delay_ms),
            ("x-queue-type", "classic"),
        )
        queues.append(QueueSpec(name, arguments=arguments, bindings=(BindingSpec(name, ""),)))
    return tuple(exchanges), tuple(queues)


def with_tiers(
    policy: TaskPolicy, prefix: str, jitter_tiers: int = DEFAULT_JITTER_TIERS
) -> TaskPolicy:
    """The policy with the tiers its retries use (named with `prefix`)."""
    tiers = tuple(
        RetryTier(delay_ms, tier_name(prefix, delay_ms))
        for delay_ms in tier_delays_ms(policy.retry, jitter_tiers)
    )
    return replace(policy, retry=replace(policy.retry, tiers=tiers))


def choose_tier(
    policy: RetryPolicy, failures: int, rng: random.Random | None = None
) -> RetryTier | None:
    """The tier to wait in after `failures` failed attempts; None if the policy has no tiers."""
    if not policy.tiers:
        return None
    delay = backoff_delay(policy, failures)
    if policy.jitter:
        delay *= (rng or random).uniform(1 - policy.jitter, 1 + policy.jitter)
    target = delay * 1000
    return min(policy.tiers, key=lambda tier: (abs(tier.delay_ms - target), tier.delay_ms))


def failure_headers(original: Mapping[str, Any], *, error: str, now: datetime) -> dict[str, Any]:
    """The task's headers plus when it first failed (kept from then on) and why it last failed.

    The caller sets the next attempt number (`x-spectask-attempt`, owned by the producer).
    """
    headers = portable_headers(original)
    headers.setdefault(FIRST_FAILURE_HEADER, now.isoformat())
    headers[LAST_ERROR_HEADER] = error[:MAX_LAST_ERROR_CHARS]
    return headers


def portable_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of received headers that can be published again, byte for byte.

    aio-pika decodes a header string that is not UTF-8 as `bytes`, which it then refuses to
    encode; as a `bytearray` it goes out as an AMQP byte array.
    """
    return {
        name: bytearray(value) if isinstance(value, bytes) else value
        for name, value in headers.items()
    }
