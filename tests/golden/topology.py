# generated from spec/common.asyncapi.yaml by spectask — do not edit
# spec sha256: e0719de3c4824cdb73c8206d79f8b771d7d19cc529fdf04c73a53335ad0641b7
"""The whole broker topology, the priorities and the task policies of the spec.

Every service declares the whole topology when it starts (declaring is idempotent), so any
service can start first and nothing depends on start-up order.
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
    TaskPolicy,
    Topology,
)

TOPOLOGY: Final = Topology(
    exchanges=(
        ExchangeSpec(name="jobs", type="topic", durable=True, auto_delete=False),
        ExchangeSpec(name="replies", type="topic", durable=True, auto_delete=False),
    ),
    queues=(
        QueueSpec(
            name="jobs.echo",
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments=(
                ("x-max-priority", 9),
                ("x-queue-type", "classic"),
            ),
            bindings=(BindingSpec(exchange="jobs", routing_key="echo.#"),),
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
            ),
            time_limit=5.0,
            default_priority=1,
        ),
    }
)
"""Reliability policy by task type (`x-spectask-policy` of the task type's queue)."""
