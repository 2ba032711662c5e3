# generated from spec/common.asyncapi.yaml by spectask — do not edit
# spec sha256: c1589044804cc869cd898520312d4012b1c0c7add9f994ce18050d4910da88d2
"""The whole broker topology, the priorities and the task policies of the spec.

Every service declares the whole topology when it starts (declaring is idempotent), so any
service can start first and nothing depends on start-up order. Retry tiers (a fanout exchange
and a TTL queue per delay), if any, are derived from the policies and `x-spectask-retry`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from spectask.runtime.topology import (
    BindingSpec,
    ExchangeSpec,
    QueueSpec,
    RetryPolicy,
    RetryTier,
    TaskPolicy,
    Topology,
)

TOPOLOGY: Final = Topology(
    exchanges=(
        ExchangeSpec(name="jobs", type="topic", durable=True, auto_delete=False),
        ExchangeSpec(name="jobs.dead", type="topic", durable=True, auto_delete=False),
        ExchangeSpec(name="jobs.retry.375ms", type="fanout", durable=True, auto_delete=False),
        ExchangeSpec(name="jobs.retry.500ms", type="fanout", durable=True, auto_delete=False),
        ExchangeSpec(name="jobs.retry.625ms", type="fanout", durable=True, auto_delete=False),
        ExchangeSpec(name="replies", type="topic", durable=True, auto_delete=False),
    ),
    queues=(
        QueueSpec(
            name="jobs.dead",
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments=(),
            bindings=(BindingSpec(exchange="jobs.dead", routing_key="#"),),
        ),
        QueueSpec(
            name="jobs.echo",
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments=(
                ("x-delivery-limit", 10),
                ("x-max-priority", 9),
                ("x-queue-type", "classic"),
            ),
            bindings=(BindingSpec(exchange="jobs", routing_key="echo.#"),),
        ),
        QueueSpec(
            name="jobs.retry.375ms",
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments=(
                ("x-dead-letter-exchange", "jobs"),
                ("x-message-ttl", 375),
                ("x-queue-type", "classic"),
            ),
            bindings=(BindingSpec(exchange="jobs.retry.375ms", routing_key=""),),
        ),
        QueueSpec(
            name="jobs.retry.500ms",
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments=(
                ("x-dead-letter-exchange", "jobs"),
                ("x-message-ttl", 500),
                ("x-queue-type", "classic"),
            ),
            bindings=(BindingSpec(exchange="jobs.retry.500ms", routing_key=""),),
        ),
        QueueSpec(
            name="jobs.retry.625ms",
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments=(
                ("x-dead-letter-exchange", "jobs"),
                ("x-message-ttl", 625),
                ("x-queue-type", "classic"),
            ),
            bindings=(BindingSpec(exchange="jobs.retry.625ms", routing_key=""),),
        ),
        QueueSpec(
            name="replies",
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments=(),
            bindings=(BindingSpec(exchange="replies", routing_key="echo.*"),),
        ),
    ),
    priorities=(
        ("high", 9),
        ("low", 1),
    ),
    dead_letter_exchange="jobs.dead",
)


class Priority(enum.IntEnum):
    """The spec's priority names (`x-spectask-priorities`); a higher number is served first."""

    LOW = 1
    HIGH = 9


POLICIES: Final[Mapping[str, TaskPolicy]] = MappingProxyType(
    {
        "echo": TaskPolicy(
            retry=RetryPolicy(
                max_attempts=2,
                initial_delay=0.5,
                multiplier=3.0,
                max_delay=10.0,
                jitter=0.25,
                tiers=(
                    RetryTier(delay_ms=375, exchange="jobs.retry.375ms"),
                    RetryTier(delay_ms=500, exchange="jobs.retry.500ms"),
                    RetryTier(delay_ms=625, exchange="jobs.retry.625ms"),
                ),
            ),
            time_limit=5.0,
            default_priority=1,
        ),
    }
)
"""Reliability policy by task type (`x-spectask-policy` of the task type's queue)."""
