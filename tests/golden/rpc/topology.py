# generated from rpc_spec/common.asyncapi.yaml by spectask — do not edit
# spec sha256: c21cdb0608eace005e63ce2cff3aa28572cd5856826d7eadb66c9c07d896343c
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
    TaskPolicy,
    Topology,
)

TOPOLOGY: Final = Topology(
    exchanges=(
        ExchangeSpec(name="rpc", type="direct", durable=True, auto_delete=False),
        ExchangeSpec(name="rpc.dead", type="topic", durable=True, auto_delete=False),
    ),
    queues=(
        QueueSpec(
            name="rpc.dead",
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments=(),
            bindings=(BindingSpec(exchange="rpc.dead", routing_key="#"),),
        ),
        QueueSpec(
            name="rpc.lookup",
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments=(),
            bindings=(BindingSpec(exchange="rpc", routing_key="lookup"),),
        ),
        QueueSpec(
            name="rpc.ping",
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments=(),
            bindings=(BindingSpec(exchange="rpc", routing_key="ping"),),
        ),
    ),
    priorities=(),
    dead_letter_exchange="rpc.dead",
)


class Priority(enum.IntEnum):
    """The spec's priority names (`x-spectask-priorities`); a higher number is served first."""


POLICIES: Final[Mapping[str, TaskPolicy]] = MappingProxyType({})
"""Reliability policy by task type (`x-spectask-policy` of the task type's queue)."""
