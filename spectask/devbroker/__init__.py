"""A RabbitMQ node this project owns, the probes that find brokers, and the `make broker` policy.

`node` starts, stops, kills and restarts an isolated node; `probe` speaks the AMQP handshake;
`ensure` is the policy `make broker` runs (`python -m spectask.devbroker ensure`).
"""

from __future__ import annotations

from spectask.devbroker.ensure import ensure, main
from spectask.devbroker.node import LocalNode, NodeError, find_rabbitmq_script
from spectask.devbroker.probe import (
    AMQP_PROTOCOL_HEADER,
    amqp_port_ready,
    amqp_url_reachable,
    free_port,
    free_ports,
    wait_amqp_ready,
)

__all__ = [
    "AMQP_PROTOCOL_HEADER",
    "LocalNode",
    "NodeError",
    "amqp_port_ready",
    "amqp_url_reachable",
    "ensure",
    "find_rabbitmq_script",
    "free_port",
    "free_ports",
    "main",
    "wait_amqp_ready",
]
